//! The outputs thumbnail-on-create made for a source: every object directly under
//! `<THUMBNAIL_PREFIX><source key>/` named `<size>.<jpg|jpeg|png|webp>`. Deeper keys belong to
//! other sources (`a.jpg/x.jpg/256.jpg` is a thumbnail of `a.jpg/x.jpg`) and stay.

use bucketfn::storage::ObjectPath;
use bucketfn::{ObjectStore, StoreError};

const FORMATS: &[&str] = &["jpg", "jpeg", "png", "webp"];
/// Objects listed per page.
const PAGE: usize = 1000;

/// Whether `name` (the part after the source's prefix) is a thumbnail: `<digits>.<format>`.
pub fn is_thumbnail_name(name: &str) -> bool {
    name.split_once('.').is_some_and(|(size, ext)| {
        !size.is_empty()
            && size.chars().all(|c| c.is_ascii_digit())
            && FORMATS.contains(&ext.to_ascii_lowercase().as_str())
    })
}

/// Deletes the thumbnails of `bucket/key`; returns the keys deleted. Already-gone is fine.
pub async fn remove(
    store: &dyn ObjectStore,
    destination: &str,
    prefix: &str,
    key: &str,
) -> Result<Vec<String>, StoreError> {
    let folder = format!("{prefix}{key}/");
    let mut deleted = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list(destination, &folder, after.as_deref(), PAGE)
            .await?;
        after = page.objects.last().map(|o| o.key.clone());
        for object in page.objects {
            let Some(name) = object.key.strip_prefix(&folder) else {
                continue;
            };
            if is_thumbnail_name(name) {
                store.delete(destination, &object.key).await?;
                tracing::debug!(thumbnail = %ObjectPath(destination, &object.key), "Thumbnail deleted.");
                deleted.push(object.key);
            }
        }
        if !page.more || after.is_none() {
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_size_dot_format_names_directly_under_the_folder() {
        for name in ["256.jpg", "64.PNG", "1024.webp", "8.jpeg"] {
            assert!(is_thumbnail_name(name), "{name}");
        }
        for name in [
            "x.jpg",
            "256.gif",
            "256",
            ".jpg",
            "256.jpg.bak",
            "a/256.jpg",
            "256.jpg/1.jpg",
            "-1.jpg",
        ] {
            assert!(!is_thumbnail_name(name), "{name}");
        }
    }
}
