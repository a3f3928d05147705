//! An in-memory [`ObjectStore`] for the functions' unit tests (feature `testing`).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;

use super::{NewObject, ObjectStore, StoreError};

/// Objects by `(bucket, key)`, with the content type they were written with.
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
        self.lock().insert(
            (bucket.to_owned(), key.to_owned()),
            NewObject {
                body: body.into(),
                content_type: content_type.to_owned(),
            },
        );
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

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), NewObject>> {
        // A test that panicked while holding the lock has already failed; keep the data usable.
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Bytes, StoreError> {
        let object = self
            .object(bucket, key)
            .ok_or_else(|| StoreError::NotFound {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            })?;
        if object.body.len() as u64 > max_bytes {
            return Err(StoreError::TooLarge {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                limit: max_bytes,
            });
        }
        Ok(object.body)
    }

    async fn put(&self, bucket: &str, key: &str, object: NewObject) -> Result<(), StoreError> {
        self.lock()
            .insert((bucket.to_owned(), key.to_owned()), object);
        Ok(())
    }
}
