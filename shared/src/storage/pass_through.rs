//! (feature `testing`) A store that passes every call on to another, for tests that change one
//! behaviour of a store (a lagging replica, a store that ignores conditions, a writer racing a
//! delete): implement [`PassThrough::inner`] and override only the calls that differ.

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Condition, CopyRequest, ListPage, NewObject, ObjectInfo, ObjectReader, ObjectStore, StoreError,
    StoredObject,
};

#[async_trait]
pub trait PassThrough: Send + Sync + 'static {
    /// The store every call not overridden goes to.
    fn inner(&self) -> &dyn ObjectStore;

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<StoredObject, StoreError> {
        self.inner().get(bucket, key, max_bytes).await
    }

    async fn open(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectInfo, ObjectReader), StoreError> {
        self.inner().open(bucket, key).await
    }

    async fn read_start(&self, bucket: &str, key: &str, len: usize) -> Result<Bytes, StoreError> {
        self.inner().read_start(bucket, key, len).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, StoreError> {
        self.inner().head(bucket, key).await
    }

    async fn put(&self, bucket: &str, key: &str, object: NewObject) -> Result<(), StoreError> {
        self.inner().put(bucket, key, object).await
    }

    async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        object: NewObject,
        condition: Condition,
    ) -> Result<(), StoreError> {
        self.inner().put_if(bucket, key, object, condition).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.inner().delete(bucket, key).await
    }

    async fn delete_if(
        &self,
        bucket: &str,
        key: &str,
        condition: Condition,
    ) -> Result<(), StoreError> {
        self.inner().delete_if(bucket, key, condition).await
    }

    async fn copy(&self, copy: CopyRequest) -> Result<(), StoreError> {
        self.inner().copy(copy).await
    }

    async fn check_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        self.inner().check_bucket(bucket).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.inner().list(bucket, prefix, start_after, limit).await
    }
}

#[async_trait]
impl<T: PassThrough> ObjectStore for T {
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<StoredObject, StoreError> {
        PassThrough::get(self, bucket, key, max_bytes).await
    }

    async fn open(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectInfo, ObjectReader), StoreError> {
        PassThrough::open(self, bucket, key).await
    }

    async fn read_start(&self, bucket: &str, key: &str, len: usize) -> Result<Bytes, StoreError> {
        PassThrough::read_start(self, bucket, key, len).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, StoreError> {
        PassThrough::head(self, bucket, key).await
    }

    async fn put(&self, bucket: &str, key: &str, object: NewObject) -> Result<(), StoreError> {
        PassThrough::put(self, bucket, key, object).await
    }

    async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        object: NewObject,
        condition: Condition,
    ) -> Result<(), StoreError> {
        PassThrough::put_if(self, bucket, key, object, condition).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        PassThrough::delete(self, bucket, key).await
    }

    async fn delete_if(
        &self,
        bucket: &str,
        key: &str,
        condition: Condition,
    ) -> Result<(), StoreError> {
        PassThrough::delete_if(self, bucket, key, condition).await
    }

    async fn copy(&self, copy: CopyRequest) -> Result<(), StoreError> {
        PassThrough::copy(self, copy).await
    }

    async fn check_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        PassThrough::check_bucket(self, bucket).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        PassThrough::list(self, bucket, prefix, start_after, limit).await
    }
}
