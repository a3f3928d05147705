//! An in-memory [`ObjectStore`] for the functions' unit tests (feature `testing`).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Condition, CopyRequest, ListPage, ListedObject, MAX_COPY_BYTES, NewObject, ObjectInfo,
    ObjectReader, ObjectStore, Op, StoreError, StoredObject,
};

/// Objects by `(bucket, key)`, as they were written. Every bucket exists except those
/// [`MemoryStore::remove_bucket`] took away.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<(String, String), NewObject>>,
    missing_buckets: Mutex<BTreeSet<String>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts an object directly, as a test's starting state.
    pub fn insert(&self, bucket: &str, key: &str, body: impl Into<Bytes>, content_type: &str) {
        let object = NewObject {
            body: body.into(),
            content_type: content_type.to_owned(),
            metadata: BTreeMap::new(),
        };
        self.lock()
            .insert((bucket.to_owned(), key.to_owned()), object);
    }

    /// The object at `bucket/key`, if any.
    pub fn object(&self, bucket: &str, key: &str) -> Option<NewObject> {
        self.lock()
            .get(&(bucket.to_owned(), key.to_owned()))
            .cloned()
    }

    /// Every `(bucket, key)` held, in order.
    pub fn keys(&self) -> Vec<(String, String)> {
        self.lock().keys().cloned().collect()
    }

    /// Makes `bucket` and its objects disappear, as a wrong endpoint or a deleted bucket does.
    pub fn remove_bucket(&self, bucket: &str) {
        self.lock().retain(|(b, _), _| b != bucket);
        self.missing_buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(bucket.to_owned());
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, String), NewObject>> {
        // A test that panicked while holding the lock has already failed; keep the data usable.
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bucket_exists(&self, bucket: &str) -> Result<(), StoreError> {
        let missing = self
            .missing_buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match missing.contains(bucket) {
            true => Err(StoreError::NoSuchBucket {
                bucket: bucket.to_owned(),
            }),
            false => Ok(()),
        }
    }

    fn found(&self, bucket: &str, key: &str) -> Result<NewObject, StoreError> {
        self.bucket_exists(bucket)?;
        self.object(bucket, key)
            .ok_or_else(|| StoreError::NotFound {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            })
    }
}

fn info_of(object: &NewObject) -> ObjectInfo {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    object.body.hash(&mut hasher);
    ObjectInfo {
        size: object.body.len() as u64,
        etag: Some(format!("{:016x}", hasher.finish())),
        last_modified: None,
        content_type: Some(object.content_type.clone()),
        metadata: object.metadata.clone(),
        version_id: None,
    }
}

/// Whether the object in `slot` (`None`: no object) satisfies `condition`.
fn holds(condition: &Condition, existing: Option<&NewObject>) -> bool {
    match (condition, existing) {
        (Condition::Absent, existing) => existing.is_none(),
        (Condition::EtagIs(etag), Some(existing)) => info_of(existing).etag.as_ref() == Some(etag),
        // The memory store keeps no versions: no version id names what it holds.
        (Condition::EtagIs(_) | Condition::VersionIs(_), _) => false,
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<StoredObject, StoreError> {
        let object = self.found(bucket, key)?;
        if object.body.len() as u64 > max_bytes {
            return Err(StoreError::TooLarge {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                limit: max_bytes,
            });
        }
        Ok(StoredObject {
            info: info_of(&object),
            body: object.body,
        })
    }

    async fn open(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectInfo, ObjectReader), StoreError> {
        let object = self.found(bucket, key)?;
        Ok((
            info_of(&object),
            Box::pin(std::io::Cursor::new(object.body)),
        ))
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, StoreError> {
        Ok(info_of(&self.found(bucket, key)?))
    }

    async fn put(&self, bucket: &str, key: &str, object: NewObject) -> Result<(), StoreError> {
        self.bucket_exists(bucket)?;
        self.lock()
            .insert((bucket.to_owned(), key.to_owned()), object);
        Ok(())
    }

    async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        object: NewObject,
        condition: Condition,
    ) -> Result<(), StoreError> {
        self.bucket_exists(bucket)?;
        let mut objects = self.lock();
        let slot = (bucket.to_owned(), key.to_owned());
        if !holds(&condition, objects.get(&slot)) {
            return Err(StoreError::ConditionFailed {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                condition,
            });
        }
        objects.insert(slot, object);
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.bucket_exists(bucket)?;
        self.lock().remove(&(bucket.to_owned(), key.to_owned()));
        Ok(())
    }

    async fn delete_if(
        &self,
        bucket: &str,
        key: &str,
        condition: Condition,
    ) -> Result<(), StoreError> {
        self.bucket_exists(bucket)?;
        if condition == Condition::Absent {
            return Err(StoreError::absent_condition_refused(
                Op::Delete,
                bucket,
                key,
            ));
        }
        let mut objects = self.lock();
        let slot = (bucket.to_owned(), key.to_owned());
        match objects.get(&slot) {
            None => Ok(()),
            Some(existing) if holds(&condition, Some(existing)) => {
                objects.remove(&slot);
                Ok(())
            }
            Some(_) => Err(StoreError::ConditionFailed {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                condition,
            }),
        }
    }

    async fn copy(&self, copy: CopyRequest) -> Result<(), StoreError> {
        self.bucket_exists(&copy.to_bucket)?;
        if copy.expected == Condition::Absent {
            return Err(StoreError::absent_condition_refused(
                Op::Copy,
                &copy.from_bucket,
                &copy.from_key,
            ));
        }
        let source = self.found(&copy.from_bucket, &copy.from_key)?;
        if !holds(&copy.expected, Some(&source)) {
            return Err(StoreError::ConditionFailed {
                bucket: copy.from_bucket,
                key: copy.from_key,
                condition: copy.expected,
            });
        }
        if source.body.len() as u64 > MAX_COPY_BYTES {
            return Err(StoreError::TooLarge {
                bucket: copy.from_bucket,
                key: copy.from_key,
                limit: MAX_COPY_BYTES,
            });
        }
        let object = NewObject {
            body: source.body,
            content_type: copy.content_type,
            metadata: copy.metadata,
        };
        self.lock().insert((copy.to_bucket, copy.to_key), object);
        Ok(())
    }

    async fn check_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        self.bucket_exists(bucket)
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.bucket_exists(bucket)?;
        let objects = self.lock();
        let mut matching = objects.iter().filter(|((b, k), _)| {
            b == bucket
                && k.starts_with(prefix)
                && start_after.is_none_or(|after| k.as_str() > after)
        });
        let page: Vec<ListedObject> = matching
            .by_ref()
            .take(limit)
            .map(|((_, key), object)| {
                let info = info_of(object);
                ListedObject {
                    key: key.clone(),
                    size: info.size,
                    etag: info.etag,
                    last_modified: None,
                }
            })
            .collect();
        Ok(ListPage {
            objects: page,
            more: matching.next().is_some(),
        })
    }
}
