//! Object storage as the functions use it: one trait, an S3 implementation for every
//! S3-compatible store, a directory tree for the CLI and demos, and (feature `testing`) memory.

mod local;
#[cfg(any(test, feature = "testing"))]
mod memory;
mod recording;
mod s3;

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;

use crate::event::Source;
use crate::outcome::{BoxError, HandlerError};

pub use local::LocalStore;
#[cfg(any(test, feature = "testing"))]
pub use memory::MemoryStore;
pub use recording::RecordingStore;
pub use s3::{S3Settings, S3Store};

/// What a store is asked to write.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewObject {
    pub body: Bytes,
    pub content_type: String,
    /// User metadata (S3 `x-amz-meta-*`), names lower-case; values may be any Unicode.
    pub metadata: BTreeMap<String, String>,
}

/// What a store knows about an object without reading its body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectInfo {
    pub size: u64,
    /// Without quotes. Changes whenever the content does.
    pub etag: Option<String>,
    pub last_modified: Option<DateTime<Utc>>,
    pub content_type: Option<String>,
    /// User metadata, names lower-case without `x-amz-meta-`.
    pub metadata: BTreeMap<String, String>,
}

/// A whole object, read into memory.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub body: Bytes,
    pub info: ObjectInfo,
}

/// An object's body as a stream, for objects too large to hold in memory.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<DateTime<Utc>>,
}

/// Up to `limit` objects in key order, and whether more follow.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListPage {
    pub objects: Vec<ListedObject>,
    pub more: bool,
}

/// The operations the functions need, with errors already classified for retry decisions.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Reads a whole object, refusing one larger than `max_bytes` without reading past the limit.
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<StoredObject, StoreError>;

    /// Opens an object for streaming, whatever its size.
    async fn open(&self, bucket: &str, key: &str)
    -> Result<(ObjectInfo, ObjectReader), StoreError>;

    /// Size, etag and metadata of an object; [`StoreError::NotFound`] when it does not exist.
    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, StoreError>;

    /// Writes an object, replacing any object of the same key.
    async fn put(&self, bucket: &str, key: &str, object: NewObject) -> Result<(), StoreError>;

    /// Writes an object only if `condition` holds at the store, atomically there;
    /// [`StoreError::ConditionFailed`] otherwise. The basis of claims, leases and
    /// compare-and-swap checkpoints.
    async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        object: NewObject,
        condition: Condition,
    ) -> Result<(), StoreError>;

    /// Deletes an object; deleting one that does not exist succeeds.
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError>;

    /// Lists objects whose keys start with `prefix`, in key order, after `start_after`.
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError>;
}

/// When a conditional write may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// No object exists under the key (S3 `If-None-Match: *`).
    Absent,
    /// The object's current etag is this one (S3 `If-Match`).
    EtagIs(String),
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent => f.write_str("the key is free"),
            Self::EtagIs(etag) => write!(f, "the etag is {etag:?}"),
        }
    }
}

/// Which store operation failed, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Head,
    Put,
    Delete,
    List,
}

impl Op {
    /// Reads report a missing object as [`StoreError::NotFound`]; writes as a refusal.
    fn reads(self) -> bool {
        matches!(self, Self::Get | Self::Head)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Get => "reading",
            Self::Head => "looking up",
            Self::Put => "writing",
            Self::Delete => "deleting",
            Self::List => "listing",
        })
    }
}

/// `bucket/key` for messages, with control characters in hostile keys made visible.
pub struct ObjectPath<'a>(pub &'a str, pub &'a str);

impl fmt::Display for ObjectPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.escape_debug(), self.1.escape_debug())
    }
}

/// A store operation that failed, classified once here so handlers can use `?`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object (or its bucket) does not exist; for a source object, the event is stale.
    #[error("{} does not exist", ObjectPath(bucket, key))]
    NotFound { bucket: String, key: String },
    #[error(
        "{} is larger than the limit of {limit} bytes",
        ObjectPath(bucket, key)
    )]
    TooLarge {
        bucket: String,
        key: String,
        limit: u64,
    },
    /// A conditional write found the condition false (someone else wrote first).
    #[error("{} was not written: expected {condition}", ObjectPath(bucket, key))]
    ConditionFailed {
        bucket: String,
        key: String,
        condition: Condition,
    },
    #[error("{} cannot be stored here: {reason}", ObjectPath(bucket, key))]
    InvalidKey {
        bucket: String,
        key: String,
        reason: &'static str,
    },
    #[error(
        "{source_kind} has no storage backend in bucketfn; cannot read {}",
        ObjectPath(bucket, key)
    )]
    UnsupportedSource {
        source_kind: Source,
        bucket: String,
        key: String,
    },
    /// The store refused in a way that will not change by retrying (403, 400, bad config).
    #[error("{op} {} was refused", ObjectPath(bucket, key))]
    Rejected {
        op: Op,
        bucket: String,
        key: String,
        #[source]
        source: BoxError,
    },
    /// The store could not be reached or asked to slow down (5xx, throttling, timeouts).
    #[error("{op} {} failed", ObjectPath(bucket, key))]
    Unavailable {
        op: Op,
        bucket: String,
        key: String,
        #[source]
        source: BoxError,
    },
}

impl From<StoreError> for HandlerError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable { .. } => Self::retryable(error),
            _ => Self::permanent(error),
        }
    }
}

/// Refuses events from providers whose objects no backend can read (Azure Blob Storage is
/// decoded, but there is no Azure store yet).
pub fn ensure_readable(source: Source, bucket: &str, key: &str) -> Result<(), StoreError> {
    match source {
        Source::Azure => Err(StoreError::UnsupportedSource {
            source_kind: source,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        }),
        _ => Ok(()),
    }
}
