//! The one form a content failure takes, from the reader layer or splitter where it happens to
//! the handler: a [`ContentError`] that names the object. Where a `Read` must return an
//! `io::Error`, it travels inside one and comes out as it went in ([`ContentError::from_io`]).

use std::fmt;
use std::io;

use bucketfn::HandlerError;
use bucketfn::ObjectPath;
use bucketfn::budget::Stopped;

use super::Origin;

/// Why an object's content could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("reading {} failed", ObjectPath(bucket, key))]
    Read {
        bucket: String,
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("{} is not valid gzip", ObjectPath(bucket, key))]
    Corrupt {
        bucket: String,
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("{} {limit}", ObjectPath(bucket, key))]
    Limit {
        bucket: String,
        key: String,
        limit: Limit,
    },
    #[error(
        "{} is not the JSON expected: {reason} (files of one JSON object per line need CONTENT_FORMAT=lines)",
        ObjectPath(bucket, key)
    )]
    Json {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("forwarding the records of {}", ObjectPath(bucket, key))]
    Deadline {
        bucket: String,
        key: String,
        #[source]
        source: Stopped,
    },
    #[error(
        "the reader of {} stopped abnormally: {reason}",
        ObjectPath(bucket, key)
    )]
    Stopped {
        bucket: String,
        key: String,
        reason: String,
    },
}

impl ContentError {
    pub(super) fn read(origin: &Origin, source: io::Error) -> Self {
        Self::Read {
            bucket: origin.bucket.clone(),
            key: origin.key.clone(),
            source,
        }
    }

    pub(super) fn limit(origin: &Origin, limit: Limit) -> Self {
        Self::Limit {
            bucket: origin.bucket.clone(),
            key: origin.key.clone(),
            limit,
        }
    }

    pub(super) fn json(origin: &Origin, reason: String) -> Self {
        Self::Json {
            bucket: origin.bucket.clone(),
            key: origin.key.clone(),
            reason,
        }
    }

    pub(super) fn deadline(origin: &Origin, source: Stopped) -> Self {
        Self::Deadline {
            bucket: origin.bucket.clone(),
            key: origin.key.clone(),
            source,
        }
    }

    pub(super) fn stopped(origin: &Origin, reason: impl Into<String>) -> Self {
        Self::Stopped {
            bucket: origin.bucket.clone(),
            key: origin.key.clone(),
            reason: reason.into(),
        }
    }

    /// The publishing side is gone (it failed, or was cancelled): nothing more read would be
    /// published.
    pub(super) fn closed(origin: &Origin) -> Self {
        Self::stopped(origin, "the publishing side went away")
    }

    /// Into an `io::Error`, to pass through reader layers that pass only those.
    pub(super) fn into_io(self) -> io::Error {
        io::Error::other(self)
    }

    /// Out of an `io::Error` that came up through the reader layers: ours as it went in; any
    /// other is the decompressor's own, about the bytes it was given.
    pub(super) fn from_io(error: io::Error, origin: &Origin) -> Self {
        error
            .downcast::<Self>()
            .unwrap_or_else(|source| Self::Corrupt {
                bucket: origin.bucket.clone(),
                key: origin.key.clone(),
                source,
            })
    }
}

impl From<ContentError> for HandlerError {
    fn from(error: ContentError) -> Self {
        match error {
            ContentError::Read { .. }
            | ContentError::Deadline { .. }
            | ContentError::Stopped { .. } => Self::retryable(error),
            // Corrupt gzip, a limit, JSON that is not the shape: about the object the sender
            // named, so the sender may read it.
            _ => Self::permanent(error).for_sender(),
        }
    }
}

/// A limit that content ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Size(u64),
    Ratio(u64),
    Record { limit: usize, after: u64 },
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Size(limit) => write!(
                f,
                "holds more than {limit} bytes of content (CONTENT_MAX_BYTES)"
            ),
            Self::Ratio(ratio) => write!(
                f,
                "decompresses to more than {ratio} times its compressed size: refused as a \
                 likely gzip bomb (CONTENT_MAX_RATIO)"
            ),
            Self::Record { limit, after } => write!(
                f,
                "has a record longer than {limit} bytes after record {after} \
                 (CONTENT_MAX_RECORD_BYTES)"
            ),
        }
    }
}
