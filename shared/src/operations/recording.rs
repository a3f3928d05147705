//! A store that notes every object an event reads, writes or deletes in the event's ledger
//! entry, so functions get the "files touched" of the history without saying so themselves.

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;

use super::ledger::note;
use crate::ObjectPath;
use crate::storage::{
    Condition, CopyRequest, ListPage, NewObject, ObjectInfo, ObjectReader, ObjectStore, StoreError,
    StoredObject,
};

pub struct RecordingStore(pub Arc<dyn ObjectStore>);

fn noted<T>(
    bucket: &str,
    key: &str,
    action: &str,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    let status = match &result {
        Ok(_) => "ok".to_owned(),
        Err(StoreError::NotFound { .. }) => "missing".to_owned(),
        Err(e) => crate::outcome::chain(e),
    };
    note(ObjectPath(bucket, key).to_string(), action, status);
    result
}

#[async_trait]
impl ObjectStore for RecordingStore {
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<StoredObject, StoreError> {
        noted(
            bucket,
            key,
            "read",
            self.0.get(bucket, key, max_bytes).await,
        )
    }

    async fn open(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectInfo, ObjectReader), StoreError> {
        noted(bucket, key, "read", self.0.open(bucket, key).await)
    }

    async fn read_start(&self, bucket: &str, key: &str, len: usize) -> Result<Bytes, StoreError> {
        // Telling what a file is, like a lookup, is not work on it.
        self.0.read_start(bucket, key, len).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, StoreError> {
        // Lookups are bookkeeping, not work on the file.
        self.0.head(bucket, key).await
    }

    async fn put(&self, bucket: &str, key: &str, object: NewObject) -> Result<(), StoreError> {
        noted(
            bucket,
            key,
            "written",
            self.0.put(bucket, key, object).await,
        )
    }

    async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        object: NewObject,
        condition: Condition,
    ) -> Result<(), StoreError> {
        noted(
            bucket,
            key,
            "written",
            self.0.put_if(bucket, key, object, condition).await,
        )
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        noted(bucket, key, "deleted", self.0.delete(bucket, key).await)
    }

    async fn delete_if(
        &self,
        bucket: &str,
        key: &str,
        condition: Condition,
    ) -> Result<(), StoreError> {
        noted(
            bucket,
            key,
            "deleted",
            self.0.delete_if(bucket, key, condition).await,
        )
    }

    async fn copy(&self, copy: CopyRequest) -> Result<(), StoreError> {
        let (bucket, key) = (copy.to_bucket.clone(), copy.to_key.clone());
        noted(&bucket, &key, "written", self.0.copy(copy).await)
    }

    async fn check_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        self.0.check_bucket(bucket).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.0.list(bucket, prefix, start_after, limit).await
    }
}
