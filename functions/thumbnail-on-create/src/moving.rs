//! Move semantics (`DELETE_SOURCE`): a source is copied beside its thumbnails, and deleted only
//! once its copy and thumbnails are verified, conditional on the version that was read, so a
//! source that changed meanwhile, or cannot be versioned, is never lost.

use bucketfn::storage::{CopyRequest, MAX_COPY_BYTES};
use bucketfn::{
    Condition, Done, HandlerError, Invocation, ObjectInfo, ObjectPath, Outcome, StoreError,
};

use crate::{Read, Thumbnailer, UNKNOWN_CONTENT_TYPE};

/// Why a source cannot be moved; nothing was written or deleted.
#[derive(Debug, thiserror::Error)]
pub enum Unmovable {
    #[error(
        "{} is {size} bytes, over the {MAX_COPY_BYTES}-byte limit of one server-side copy (S3 CopyObject); it is not moved and nothing was deleted",
        ObjectPath(bucket, key)
    )]
    TooLarge {
        bucket: String,
        key: String,
        size: u64,
    },
    #[error(
        "the store gave neither an etag nor a version id for {}, so its delete could not be conditional on what was copied; it is not moved",
        ObjectPath(bucket, key)
    )]
    Unversioned { bucket: String, key: String },
}

impl Thumbnailer {
    /// Moves `bucket/key`: copies it unchanged to its `original` (server-side, only if it is
    /// still the version read), writes its thumbnails when it is an image, verifies every
    /// output, and only then deletes it, conditional on that version. A redelivery after a
    /// crash finds the outputs made and only deletes.
    pub(crate) async fn move_source(
        &self,
        bucket: &str,
        key: &str,
        invocation: &Invocation,
    ) -> Outcome {
        let layout = &self.config.layout;
        let destination = layout.destination(bucket);
        let info = match self.store.head(bucket, key).await {
            Ok(info) => info,
            Err(StoreError::NotFound { .. }) => return Ok(Done::gone(bucket, key)),
            Err(e) => return Err(e.into()),
        };
        if info.size > MAX_COPY_BYTES {
            return Err(HandlerError::permanent(Unmovable::TooLarge {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                size: info.size,
            })
            .for_sender());
        }
        let original = layout
            .original_key(bucket, key)
            .map_err(HandlerError::permanent)?;
        let Some(image) = self.is_image(bucket, key).await? else {
            return Ok(Done::gone(bucket, key));
        };
        let thumbnails = match image {
            true => self.thumbnail_keys(bucket, key)?,
            false => Vec::new(),
        };
        let outputs: Vec<&str> = thumbnails
            .iter()
            .map(|(_, k)| k.as_str())
            .chain([original.as_str()])
            .collect();

        let (read, condition) = read_version(bucket, key, &info)?;
        if self.made_from(destination, &outputs, &read, true).await? {
            return self
                .delete_source(bucket, key, condition, "found its outputs already made")
                .await;
        }

        // An image is read and thumbnailed before anything is written, so that one that
        // cannot be thumbnailed is neither copied nor deleted.
        let (info, read, condition, made) = match image {
            true => {
                let Some(source) = self.read(bucket, key).await? else {
                    return Ok(Done::gone(bucket, key));
                };
                let (read, condition) = read_version(bucket, key, &source.info)?;
                let made = self.make(bucket, key, source.body, invocation).await?;
                (source.info, read, condition, made)
            }
            false => (info, read, condition, Vec::new()),
        };
        let copy = CopyRequest {
            from_bucket: bucket.to_owned(),
            from_key: key.to_owned(),
            expected: condition.clone(),
            to_bucket: destination.to_owned(),
            to_key: original.clone(),
            content_type: info
                .content_type
                .unwrap_or_else(|| UNKNOWN_CONTENT_TYPE.to_owned()),
            metadata: read.stamp(bucket, key, true),
        };
        match self.store.copy(copy).await {
            Ok(()) => {}
            Err(StoreError::ConditionFailed { .. }) => {
                return Ok(Done::Skipped(format!(
                    "{} changed after it was read; nothing was moved (the new version's own event moves it)",
                    ObjectPath(bucket, key)
                )));
            }
            Err(StoreError::NotFound { .. }) => return Ok(Done::gone(bucket, key)),
            Err(e) => return Err(e.into()),
        }
        let mut did = format!("copied it to {}", ObjectPath(destination, &original));
        if !made.is_empty() {
            let wrote = self
                .write_thumbnails(
                    destination,
                    &thumbnails,
                    &made,
                    read.stamp(bucket, key, true),
                )
                .await?;
            did = format!("{did}, {wrote}");
        }

        if !self.made_from(destination, &outputs, &read, true).await? {
            return Err(HandlerError::retryable(format!(
                "the copy and thumbnails of {} could not be verified after writing; the source is kept",
                ObjectPath(bucket, key)
            )));
        }
        self.delete_source(bucket, key, condition, &did).await
    }

    /// Deletes the source if it is still the version `condition` names, atomically at the
    /// store: a version written since it was read is kept, and its own event moves it.
    async fn delete_source(
        &self,
        bucket: &str,
        key: &str,
        condition: Condition,
        did: &str,
    ) -> Outcome {
        match self.store.delete_if(bucket, key, condition).await {
            Ok(()) => Ok(Done::Completed(format!(
                "{did}; deleted the source {}",
                ObjectPath(bucket, key)
            ))),
            Err(StoreError::ConditionFailed { .. }) => Ok(Done::Completed(format!(
                "{did}; kept the source {}: it changed after it was read",
                ObjectPath(bucket, key)
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

/// The version `info` names, and the condition that holds only while it is current.
fn read_version(
    bucket: &str,
    key: &str,
    info: &ObjectInfo,
) -> Result<(Read, Condition), HandlerError> {
    match info.read_version() {
        Some(condition) => Ok((Read::of(info), condition)),
        None => Err(HandlerError::permanent(Unmovable::Unversioned {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })),
    }
}
