//! What a store can be relied on for. Claims, leases and checkpoints need writes that the store
//! refuses when their condition is false, and a move needs deletes that are; some
//! S3-compatible stores accept the headers and ignore them. [`CheckedStore`] finds out once
//! per bucket, with a probe object, before the first conditional write or delete there.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::OnceCell;

use super::{
    Condition, CopyRequest, ListPage, NewObject, ObjectInfo, ObjectReader, ObjectStore, StoreError,
    StoredObject,
};

/// What the probe found a bucket's store to enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Capabilities {
    /// `If-None-Match: *` and `If-Match` on writes.
    conditional_writes: bool,
    /// `If-Match` on DELETE.
    conditional_deletes: bool,
}

/// A store whose conditional writes and etag-conditional deletes happen only where a probe
/// showed that the store enforces them; elsewhere they are refused as
/// [`StoreError::Unsupported`], naming what the store lacks. Everything else passes through.
pub struct CheckedStore {
    inner: Arc<dyn ObjectStore>,
    /// One probe per bucket: concurrent first callers wait for the same one. A probe that
    /// failed leaves its cell empty, so the next caller probes again.
    probes: Mutex<HashMap<String, Arc<OnceCell<Capabilities>>>>,
}

impl CheckedStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            probes: Mutex::default(),
        }
    }

    /// What the store does in `bucket`, probed next to `key` the first time.
    async fn capabilities(&self, bucket: &str, key: &str) -> Result<Capabilities, StoreError> {
        let cell = {
            // The map only ever gains cells; a panic elsewhere leaves it valid.
            let mut probes = self.probes.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(probes.entry(bucket.to_owned()).or_default())
        };
        cell.get_or_try_init(|| self.probe(bucket, key))
            .await
            .copied()
    }

    /// Writes a probe object beside `key` (inside the prefix the caller already writes, so
    /// no permission beyond its own is needed), tries the conditions that must fail, and
    /// deletes it again.
    async fn probe(&self, bucket: &str, key: &str) -> Result<Capabilities, StoreError> {
        let probe_key = format!("{key}.bucketfn-probe-{}", unique_suffix());
        self.inner
            .put_if(bucket, &probe_key, probe_object(), Condition::Absent)
            .await?;
        let found = self.try_false_conditions(bucket, &probe_key).await;
        if let Err(e) = self.inner.delete(bucket, &probe_key).await {
            tracing::warn!(
                bucket,
                key = probe_key,
                error = crate::outcome::chain(&e),
                "The store probe's object could not be deleted."
            );
        }
        let found = found?;
        tracing::info!(
            bucket,
            conditional_writes = found.conditional_writes,
            conditional_deletes = found.conditional_deletes,
            "Probed which conditions the store enforces."
        );
        Ok(found)
    }

    async fn try_false_conditions(
        &self,
        bucket: &str,
        probe_key: &str,
    ) -> Result<Capabilities, StoreError> {
        let wrong_etag = || Condition::EtagIs("bucketfn-probe-wrong-etag".to_owned());
        let taken_refused = refused(
            self.inner
                .put_if(bucket, probe_key, probe_object(), Condition::Absent)
                .await,
        )?;
        let stale_refused = refused(
            self.inner
                .put_if(bucket, probe_key, probe_object(), wrong_etag())
                .await,
        )?;
        let delete_refused = refused(self.inner.delete_if(bucket, probe_key, wrong_etag()).await)?;
        let kept = match self.inner.head(bucket, probe_key).await {
            Ok(_) => true,
            Err(StoreError::NotFound { .. }) => false,
            Err(e) => return Err(e),
        };
        Ok(Capabilities {
            conditional_writes: taken_refused && stale_refused,
            conditional_deletes: delete_refused && kept,
        })
    }
}

/// Whether the store refused a request whose condition was false; other failures are the
/// probe's.
fn refused(result: Result<(), StoreError>) -> Result<bool, StoreError> {
    match result {
        Ok(()) => Ok(false),
        Err(StoreError::ConditionFailed { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}

fn probe_object() -> NewObject {
    NewObject {
        body: Bytes::from_static(b"bucketfn store probe; deleted right after it is written\n"),
        content_type: "text/plain".to_owned(),
        metadata: Default::default(),
    }
}

/// Unique within this process (a counter) and across processes (a randomly keyed hash of it).
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

#[async_trait]
impl ObjectStore for CheckedStore {
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<StoredObject, StoreError> {
        self.inner.get(bucket, key, max_bytes).await
    }

    async fn open(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectInfo, ObjectReader), StoreError> {
        self.inner.open(bucket, key).await
    }

    async fn read_start(&self, bucket: &str, key: &str, len: usize) -> Result<Bytes, StoreError> {
        self.inner.read_start(bucket, key, len).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, StoreError> {
        self.inner.head(bucket, key).await
    }

    async fn put(&self, bucket: &str, key: &str, object: NewObject) -> Result<(), StoreError> {
        self.inner.put(bucket, key, object).await
    }

    async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        object: NewObject,
        condition: Condition,
    ) -> Result<(), StoreError> {
        // A version condition is refused by every store for writes, without a probe.
        if !matches!(condition, Condition::VersionIs(_))
            && !self.capabilities(bucket, key).await?.conditional_writes
        {
            return Err(StoreError::Unsupported {
                bucket: bucket.to_owned(),
                capability: "the store ignores If-None-Match / If-Match on writes (a probe \
                             object written twice was accepted twice)"
                    .to_owned(),
                consequence: format!(
                    "claims, leases and checkpoints cannot be kept here, so the conditional \
                     write of {key:?} is refused"
                ),
            });
        }
        self.inner.put_if(bucket, key, object, condition).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.inner.delete(bucket, key).await
    }

    async fn delete_if(
        &self,
        bucket: &str,
        key: &str,
        condition: Condition,
    ) -> Result<(), StoreError> {
        // Deleting one version is exact by nature: only etag conditions need the probe.
        if matches!(condition, Condition::EtagIs(_))
            && !self.capabilities(bucket, key).await?.conditional_deletes
        {
            return Err(StoreError::Unsupported {
                bucket: bucket.to_owned(),
                capability: "the store ignores If-Match on DELETE (a probe object was deleted \
                             under a wrong etag)"
                    .to_owned(),
                consequence: format!(
                    "a move cannot delete its source safely, nor a holder release only its own \
                     lease or checkpoint, so the conditional delete of {key:?} is refused"
                ),
            });
        }
        self.inner.delete_if(bucket, key, condition).await
    }

    async fn copy(&self, copy: CopyRequest) -> Result<(), StoreError> {
        self.inner.copy(copy).await
    }

    async fn check_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        self.inner.check_bucket(bucket).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.inner.list(bucket, prefix, start_after, limit).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use super::*;
    use crate::storage::{MemoryStore, PassThrough};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A memory store that can be told to ignore conditions, as some S3-compatible stores
    /// do, or to be unreachable; counts the conditional writes it is asked for.
    #[derive(Default)]
    struct Lax {
        objects: MemoryStore,
        ignores_write_conditions: bool,
        ignores_delete_conditions: bool,
        unavailable: AtomicBool,
        conditional_writes: AtomicUsize,
    }

    impl Lax {
        fn reachable(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
            match self.unavailable.load(Ordering::SeqCst) {
                true => Err(StoreError::Unavailable {
                    op: crate::storage::Op::Put,
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    source: "connection refused".into(),
                }),
                false => Ok(()),
            }
        }
    }

    #[async_trait]
    impl PassThrough for Lax {
        fn inner(&self) -> &dyn ObjectStore {
            &self.objects
        }

        async fn put_if(
            &self,
            b: &str,
            k: &str,
            object: NewObject,
            condition: Condition,
        ) -> Result<(), StoreError> {
            self.conditional_writes.fetch_add(1, Ordering::SeqCst);
            self.reachable(b, k)?;
            match self.ignores_write_conditions {
                true => self.objects.put(b, k, object).await,
                false => self.objects.put_if(b, k, object, condition).await,
            }
        }

        async fn delete_if(&self, b: &str, k: &str, c: Condition) -> Result<(), StoreError> {
            match self.ignores_delete_conditions {
                true => self.objects.delete(b, k).await,
                false => self.objects.delete_if(b, k, c).await,
            }
        }
    }

    fn claim() -> NewObject {
        NewObject {
            body: Bytes::from_static(b"holder=a"),
            content_type: "text/plain".to_owned(),
            metadata: Default::default(),
        }
    }

    fn checked(lax: Lax) -> (Arc<Lax>, CheckedStore) {
        let lax = Arc::new(lax);
        let store = CheckedStore::new(Arc::clone(&lax) as Arc<dyn ObjectStore>);
        (lax, store)
    }

    #[tokio::test]
    async fn a_store_that_ignores_write_conditions_gets_no_claim_and_keeps_no_probe() -> TestResult
    {
        let (lax, store) = checked(Lax {
            ignores_write_conditions: true,
            ..Lax::default()
        });
        let err = store
            .put_if("b", "claims/x", claim(), Condition::Absent)
            .await
            .err()
            .ok_or("a claim was written where conditions are ignored")?;
        let text = err.to_string();
        assert!(matches!(err, StoreError::Unsupported { .. }), "{text}");
        assert!(
            text.contains("the store ignores If-None-Match / If-Match on writes"),
            "{text}"
        );
        assert!(text.contains("\"claims/x\" is refused"), "{text}");
        assert_eq!(lax.objects.keys(), Vec::<(String, String)>::new());
        // Deletes are conditional there: a move may still delete on an etag.
        store.put("b", "photo.jpg", claim()).await?;
        let etag = store.head("b", "photo.jpg").await?.read_version();
        store
            .delete_if("b", "photo.jpg", etag.ok_or("no etag")?)
            .await?;
        Ok(())
    }

    #[tokio::test]
    async fn a_store_whose_deletes_ignore_if_match_deletes_only_by_version() -> TestResult {
        let (lax, store) = checked(Lax {
            ignores_delete_conditions: true,
            ..Lax::default()
        });
        store.put("b", "photo.jpg", claim()).await?;
        let etag = store.head("b", "photo.jpg").await?.read_version();
        let err = store
            .delete_if("b", "photo.jpg", etag.ok_or("no etag")?)
            .await
            .err()
            .ok_or("an unconditional delete passed for a conditional one")?;
        assert!(
            err.to_string()
                .contains("the store ignores If-Match on DELETE"),
            "{err}"
        );
        assert!(lax.objects.object("b", "photo.jpg").is_some());
        // A version names exactly what is deleted, without a probe of its own.
        let version = Condition::VersionIs("v1".to_owned());
        assert!(store.delete_if("b", "photo.jpg", version).await.is_ok());
        // Writes are conditional there.
        store
            .put_if("b", "claims/x", claim(), Condition::Absent)
            .await?;
        let keys: Vec<String> = lax.objects.keys().into_iter().map(|(_, k)| k).collect();
        assert_eq!(keys, ["claims/x"]);
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_first_writers_wait_for_one_probe_per_bucket() -> TestResult {
        let (lax, store) = checked(Lax::default());
        let store = Arc::new(store);
        let writers: Vec<_> = (0..8)
            .map(|n| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let key = format!("claims/{n}");
                    store.put_if("b", &key, claim(), Condition::Absent).await
                })
            })
            .collect();
        for writer in writers {
            writer.await??;
        }
        // The probe's three writes, then the eight claims.
        assert_eq!(lax.conditional_writes.load(Ordering::SeqCst), 3 + 8);
        store
            .put_if("other", "claims/0", claim(), Condition::Absent)
            .await?;
        assert_eq!(lax.conditional_writes.load(Ordering::SeqCst), 3 + 8 + 3 + 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_probe_the_store_could_not_answer_is_tried_again() -> TestResult {
        let (lax, store) = checked(Lax::default());
        lax.unavailable.store(true, Ordering::SeqCst);
        let err = store
            .put_if("b", "claims/x", claim(), Condition::Absent)
            .await
            .err()
            .ok_or("written while unavailable")?;
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        lax.unavailable.store(false, Ordering::SeqCst);
        store
            .put_if("b", "claims/x", claim(), Condition::Absent)
            .await?;
        Ok(())
    }
}
