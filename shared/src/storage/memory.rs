//! An in-memory [`ObjectStore`] for the functions' unit tests (feature `testing`).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Condition, ListPage, ListedObject, NewObject, ObjectInfo, ObjectReader, ObjectStore,
    StoreError, StoredObject,
};

/// Objects by `(bucket, key)`, as they were written.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<(String, String), NewObject>>,
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

    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, String), NewObject>> {
        // A test that panicked while holding the lock has already failed; keep the data usable.
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn found(&self, bucket: &str, key: &str) -> Result<NewObject, StoreError> {
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
        let mut objects = self.lock();
        let slot = (bucket.to_owned(), key.to_owned());
        let holds = match (&condition, objects.get(&slot)) {
            (Condition::Absent, existing) => existing.is_none(),
            (Condition::EtagIs(etag), Some(existing)) => {
                info_of(existing).etag.as_ref() == Some(etag)
            }
            (Condition::EtagIs(_), None) => false,
        };
        if !holds {
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
        self.lock().remove(&(bucket.to_owned(), key.to_owned()));
        Ok(())
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
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
