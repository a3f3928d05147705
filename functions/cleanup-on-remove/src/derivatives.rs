//! The derivatives thumbnail-on-create made of a removed source, found where
//! `bucketfn::derivatives` puts them, and which of them may go: what a move wrote stays (it is
//! what is left of the moved object), and when only one version of the source was removed,
//! only what was made from that version goes.

use bucketfn::ObjectPath;
use bucketfn::derivatives::{DerivativesLayout, metadata, source_was_moved};
use bucketfn::{HandlerError, ObjectStore, StoreError};

/// Objects listed per page.
const PAGE: usize = 1000;

/// Which derivatives of the source may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal<'a> {
    /// The source is gone: all of them, except what a move wrote.
    All,
    /// Only this version of the source was removed: what was made from it.
    Version(&'a str),
}

/// What was done with the derivatives found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub deleted: Vec<String>,
    /// Derivatives of a moved source, kept.
    pub kept_moved: usize,
}

/// Deletes the derivatives of `bucket/key` that `removal` allows; already gone is fine.
pub async fn remove(
    store: &dyn ObjectStore,
    layout: &DerivativesLayout,
    bucket: &str,
    key: &str,
    removal: Removal<'_>,
) -> Result<Cleaned, HandlerError> {
    let destination = layout.destination(bucket);
    // A key no derivative can have been made from (a `..` segment) has none.
    let folder = layout
        .folder(bucket, key)
        .map_err(HandlerError::permanent)?;
    let mut cleaned = Cleaned::default();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list(destination, &folder, after.as_deref(), PAGE)
            .await?;
        after = page.objects.last().map(|o| o.key.clone());
        for object in page.objects {
            let is_ours = object
                .key
                .strip_prefix(&folder)
                .is_some_and(DerivativesLayout::is_derivative_name);
            if !is_ours {
                continue;
            }
            // Listings carry no metadata: whether the source was moved, and from which
            // version this was made, is in the derivative's own.
            let info = match store.head(destination, &object.key).await {
                Ok(info) => info,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            if source_was_moved(&info.metadata) {
                cleaned.kept_moved += 1;
                continue;
            }
            let made_from_removed = match removal {
                Removal::All => true,
                Removal::Version(version) => {
                    info.metadata
                        .get(metadata::SOURCE_VERSION)
                        .map(String::as_str)
                        == Some(version)
                }
            };
            if made_from_removed {
                store.delete(destination, &object.key).await?;
                tracing::debug!(derivative = %ObjectPath(destination, &object.key), "Derivative deleted.");
                cleaned.deleted.push(object.key);
            }
        }
        if !page.more || after.is_none() {
            return Ok(cleaned);
        }
    }
}
