//! Object storage as the functions use it: one trait, an S3 implementation for every
//! S3-compatible store, a directory tree for the CLI and demos, and (feature `testing`) memory.

mod local;
#[cfg(any(test, feature = "testing"))]
mod memory;
#[cfg(any(test, feature = "testing"))]
mod pass_through;
mod probe;
mod s3;

use crate::ObjectPath;
use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::event::Source;
use crate::outcome::{BoxError, HandlerError};

pub use local::LocalStore;
#[cfg(any(test, feature = "testing"))]
pub use memory::MemoryStore;
#[cfg(any(test, feature = "testing"))]
pub use pass_through::PassThrough;
pub use probe::CheckedStore;
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
    /// The version id on a versioned bucket (S3 `x-amz-version-id`; not `null`).
    pub version_id: Option<String>,
}

impl ObjectInfo {
    /// The condition that names exactly this version: its version id where the bucket keeps
    /// versions, else its etag. `None` when the store said neither.
    pub fn read_version(&self) -> Option<Condition> {
        match (&self.version_id, &self.etag) {
            (Some(version), _) => Some(Condition::VersionIs(version.clone())),
            (None, Some(etag)) => Some(Condition::EtagIs(etag.clone())),
            (None, None) => None,
        }
    }
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

    /// The first `len` bytes of an object (all of it when it is shorter), to tell what it is
    /// without reading it. S3 asks for that byte range only; this default reads the start of
    /// [`ObjectStore::open`]'s stream and drops the rest.
    async fn read_start(&self, bucket: &str, key: &str, len: usize) -> Result<Bytes, StoreError> {
        let (_, reader) = self.open(bucket, key).await?;
        read_at_most(reader, len, bucket, key).await
    }

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

    /// Deletes the object only if it is still the version `condition` names
    /// ([`Condition::EtagIs`]: S3 `If-Match` on DELETE; [`Condition::VersionIs`]: that version
    /// and no other); [`StoreError::ConditionFailed`] when another version is there. A key
    /// that is already gone succeeds. [`Condition::Absent`] is refused as
    /// [`StoreError::Unsupported`].
    async fn delete_if(
        &self,
        bucket: &str,
        key: &str,
        condition: Condition,
    ) -> Result<(), StoreError>;

    /// Copies an object inside the store (S3 CopyObject: no bytes pass through the
    /// function) only if the source is still the version `copy.expected` names, replacing
    /// its metadata with `copy.metadata`; [`StoreError::ConditionFailed`] otherwise,
    /// [`StoreError::NotFound`] when the source is gone, [`StoreError::TooLarge`] over
    /// [`MAX_COPY_BYTES`].
    async fn copy(&self, copy: CopyRequest) -> Result<(), StoreError>;

    /// Whether `bucket` exists and these credentials may use it:
    /// [`StoreError::NoSuchBucket`] or [`StoreError::Rejected`] when not.
    async fn check_bucket(&self, bucket: &str) -> Result<(), StoreError>;

    /// Lists objects whose keys start with `prefix`, in key order, after `start_after`.
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError>;
}

/// At most `len` bytes from the start of `reader`, the body of `bucket/key`.
pub(crate) async fn read_at_most(
    reader: impl AsyncRead + Unpin,
    len: usize,
    bucket: &str,
    key: &str,
) -> Result<Bytes, StoreError> {
    let mut start = Vec::with_capacity(len);
    match reader.take(len as u64).read_to_end(&mut start).await {
        Ok(_) => Ok(Bytes::from(start)),
        Err(e) => Err(StoreError::Unavailable {
            op: Op::Get,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source: Box::new(e),
        }),
    }
}

/// When a conditional write, delete or copy may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// No object exists under the key (S3 `If-None-Match: *`); writes only.
    Absent,
    /// The object's current etag is this one (S3 `If-Match`).
    EtagIs(String),
    /// This version of the object (S3 `versionId`); deletes and copies only.
    VersionIs(String),
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent => f.write_str("the key is free"),
            Self::EtagIs(etag) => write!(f, "the etag is {etag:?}"),
            Self::VersionIs(version) => write!(f, "version {version:?}"),
        }
    }
}

/// S3's limit for one CopyObject; larger objects would need a multipart copy.
pub const MAX_COPY_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// An object copied inside the store, see [`ObjectStore::copy`].
#[derive(Debug, Clone, PartialEq)]
pub struct CopyRequest {
    pub from_bucket: String,
    pub from_key: String,
    /// The source version that was read: the copy happens only if it is still there.
    pub expected: Condition,
    pub to_bucket: String,
    pub to_key: String,
    pub content_type: String,
    /// The copy's user metadata (replacing the source's).
    pub metadata: BTreeMap<String, String>,
}

/// Which store operation failed, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Head,
    Put,
    Delete,
    List,
    Copy,
    CheckBucket,
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
            Self::Copy => "copying",
            Self::CheckBucket => "checking the bucket",
        })
    }
}

/// A store operation that failed, classified once here so handlers can use `?`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist in a bucket that does; for a source object, the event is stale.
    /// The only "not found" that may make an event a skip.
    #[error("{} does not exist", ObjectPath(bucket, key))]
    NotFound { bucket: String, key: String },
    /// The bucket does not exist where the store was reached (a wrong endpoint, region or
    /// account, or a bucket deleted): permanent, never a skip.
    #[error(
        "bucket {:?} does not exist at this store (check the endpoint, region and bucket name)",
        bucket.escape_debug().to_string()
    )]
    NoSuchBucket { bucket: String },
    /// The store does not do what a feature relies on (found by a probe, or asked of the
    /// wrong kind of condition); permanent, names the capability.
    #[error("bucket {:?}: {capability}; {consequence}", bucket.escape_debug().to_string())]
    Unsupported {
        bucket: String,
        /// What the store does not do, e.g. "the store ignores If-None-Match".
        capability: String,
        /// What is refused because of it.
        consequence: String,
    },
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

impl StoreError {
    /// A delete or copy asked to wait for the key to be free, which only a write can.
    pub(crate) fn absent_condition_refused(op: Op, bucket: &str, key: &str) -> Self {
        Self::Unsupported {
            bucket: bucket.to_owned(),
            capability: format!("{op} {key:?} cannot be conditional on the key being free"),
            consequence: "nothing is changed".to_owned(),
        }
    }

    /// A write asked to be conditional on a version id, which no store offers for writes.
    pub(crate) fn version_condition_on_write(bucket: &str, key: &str) -> Self {
        Self::Unsupported {
            bucket: bucket.to_owned(),
            capability: format!("a write of {key:?} cannot be conditional on a version id"),
            consequence: "the write is refused".to_owned(),
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
