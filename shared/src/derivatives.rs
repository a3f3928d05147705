//! Where what is made from a source object lives: the one contract between
//! thumbnail-on-create, which writes there, and cleanup-on-remove, which finds it again.
//!
//! Every derivative of `bucket/key` sits in one folder, `<prefix>[<bucket>/]<key>/`:
//! thumbnails as `<size>.<jpg|jpeg|png|webp>`, and a moved source's unchanged copy as
//! `original` (with the source's extension, if it has one). The source bucket is part of the
//! folder whenever the destination is a bucket of its own, so one thumbnail bucket serves any
//! number of source buckets without two sources ever sharing a key. Deeper keys belong to
//! other sources (`a.jpg/x.jpg/256.jpg` is a thumbnail of `a.jpg/x.jpg`).

use std::collections::BTreeMap;

/// Metadata every derivative carries, naming what it was made from.
pub mod metadata {
    pub const SOURCE_BUCKET: &str = "source-bucket";
    pub const SOURCE_KEY: &str = "source-key";
    /// The source's etag when it was read.
    pub const SOURCE_ETAG: &str = "source-etag";
    /// The source's version id when it was read, on a versioned bucket.
    pub const SOURCE_VERSION: &str = "source-version";
    /// `true` when the source was moved (deleted once its derivatives were safe): the
    /// derivatives are then what is left of it, and its removal must not take them.
    pub const SOURCE_MOVED: &str = "source-moved";
}

/// The name of a moved source's copy in its folder.
const ORIGINAL: &str = "original";
const THUMBNAIL_FORMATS: &[&str] = &["jpg", "jpeg", "png", "webp"];
/// S3's limit on key length, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Why no derivative key can be derived from a source key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "source key {0:?} has a `.` or `..` segment, which some stores resolve as a path; refusing to derive an output key from it"
    )]
    DotSegment(String),
    #[error("the output key for {0:?} would exceed S3's {MAX_KEY_BYTES}-byte key limit")]
    TooLong(String),
}

/// Where the derivatives of every source go (`THUMBNAIL_BUCKET`, `THUMBNAIL_PREFIX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivativesLayout {
    /// A bucket of their own; `None`: each source's own bucket.
    pub bucket: Option<String>,
    /// Prepended to every derivative key.
    pub prefix: String,
}

impl DerivativesLayout {
    /// The bucket the derivatives of a source in `source_bucket` go to.
    pub fn destination<'a>(&'a self, source_bucket: &'a str) -> &'a str {
        self.bucket.as_deref().unwrap_or(source_bucket)
    }

    /// True when `bucket/key` is where derivatives are written, so an event for it is not a
    /// source (the loop guard when sources and derivatives share a bucket).
    pub fn is_derivative(&self, bucket: &str, key: &str) -> bool {
        self.bucket.as_deref().is_none_or(|own| own == bucket) && key.starts_with(&self.prefix)
    }

    /// `<prefix>[<source bucket>/]`: where the folders of `source_bucket`'s objects are.
    pub fn root(&self, source_bucket: &str) -> String {
        match &self.bucket {
            Some(own) if own != source_bucket => format!("{}{source_bucket}/", self.prefix),
            _ => self.prefix.clone(),
        }
    }

    /// `<prefix>[<source bucket>/]<key>/`.
    pub fn folder(&self, source_bucket: &str, key: &str) -> Result<String, LayoutError> {
        if key
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return Err(LayoutError::DotSegment(key.to_owned()));
        }
        Ok(format!("{}{key}/", self.root(source_bucket)))
    }

    /// The source key whose moved copy `key` (in the destination) is: the inverse of
    /// [`DerivativesLayout::original_key`]. `None` for thumbnails and anything else.
    pub fn moved_source(&self, source_bucket: &str, key: &str) -> Option<String> {
        let (source, name) = key
            .strip_prefix(&self.root(source_bucket))?
            .rsplit_once('/')?;
        let original = name == ORIGINAL
            || name
                .split_once('.')
                .is_some_and(|(stem, extension)| stem == ORIGINAL && is_plain_extension(extension));
        let source = (original && !source.is_empty()).then(|| source.to_owned())?;
        // Only what original_key would have made: the extension is the source's own.
        (self.original_key(source_bucket, &source).ok()? == key).then_some(source)
    }

    /// The thumbnail of `size` pixels in format `extension`.
    pub fn thumbnail_key(
        &self,
        source_bucket: &str,
        key: &str,
        size: u32,
        extension: &str,
    ) -> Result<String, LayoutError> {
        let folder = self.folder(source_bucket, key)?;
        within_limit(key, format!("{folder}{size}.{extension}"))
    }

    /// Where a moved source's unchanged copy goes: `original`, with the source's extension.
    pub fn original_key(&self, source_bucket: &str, key: &str) -> Result<String, LayoutError> {
        let folder = self.folder(source_bucket, key)?;
        let name = key.rsplit('/').next().unwrap_or(key);
        let original = match name.rsplit_once('.') {
            Some((stem, extension)) if !stem.is_empty() && is_plain_extension(extension) => {
                format!("{folder}{ORIGINAL}.{extension}")
            }
            _ => format!("{folder}{ORIGINAL}"),
        };
        within_limit(key, original)
    }

    /// Whether `name`, the part of a key after a source's folder, is one of its derivatives.
    pub fn is_derivative_name(name: &str) -> bool {
        if name == ORIGINAL {
            return true;
        }
        name.split_once('.').is_some_and(|(stem, extension)| {
            (stem == ORIGINAL && is_plain_extension(extension))
                || (!stem.is_empty()
                    && stem.chars().all(|c| c.is_ascii_digit())
                    && THUMBNAIL_FORMATS.contains(&extension.to_ascii_lowercase().as_str()))
        })
    }
}

/// What a derivative's metadata says about its source.
pub fn source_metadata(
    bucket: &str,
    key: &str,
    etag: &str,
    version: Option<&str>,
    moved: bool,
) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::from([
        (metadata::SOURCE_BUCKET.to_owned(), bucket.to_owned()),
        (metadata::SOURCE_KEY.to_owned(), key.to_owned()),
        (metadata::SOURCE_ETAG.to_owned(), etag.to_owned()),
    ]);
    if let Some(version) = version {
        fields.insert(metadata::SOURCE_VERSION.to_owned(), version.to_owned());
    }
    if moved {
        fields.insert(metadata::SOURCE_MOVED.to_owned(), "true".to_owned());
    }
    fields
}

/// Whether a derivative's metadata says its source was moved.
pub fn source_was_moved(metadata: &BTreeMap<String, String>) -> bool {
    metadata.get(metadata::SOURCE_MOVED).map(String::as_str) == Some("true")
}

/// An extension short and plain enough to keep on a moved source's copy.
fn is_plain_extension(extension: &str) -> bool {
    (1..=10).contains(&extension.len()) && extension.chars().all(|c| c.is_ascii_alphanumeric())
}

fn within_limit(key: &str, output: String) -> Result<String, LayoutError> {
    match output.len() > MAX_KEY_BYTES {
        true => Err(LayoutError::TooLong(key.to_owned())),
        false => Ok(output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), LayoutError>;

    fn layout(bucket: Option<&str>) -> DerivativesLayout {
        DerivativesLayout {
            bucket: bucket.map(str::to_owned),
            prefix: "thumbnails/".to_owned(),
        }
    }

    #[test]
    fn a_shared_destination_keeps_each_source_bucket_apart() -> TestResult {
        let shared = layout(Some("thumbs"));
        let a = shared.thumbnail_key("photos", "cat.jpg", 256, "jpg")?;
        let b = shared.thumbnail_key("scans", "cat.jpg", 256, "jpg")?;
        assert_eq!(a, "thumbnails/photos/cat.jpg/256.jpg");
        assert_eq!(b, "thumbnails/scans/cat.jpg/256.jpg");
        assert_eq!(
            layout(None).thumbnail_key("photos", "a/cat.png", 64, "webp")?,
            "thumbnails/a/cat.png/64.webp"
        );
        // The destination named as the source too: its own folder, as without a bucket.
        assert_eq!(
            shared.folder("thumbs", "x.jpg")?,
            layout(None).folder("thumbs", "x.jpg")?
        );
        Ok(())
    }

    #[test]
    fn originals_keep_a_plain_extension() -> TestResult {
        let l = layout(None);
        assert_eq!(
            l.original_key("b", "docs/report.pdf")?,
            "thumbnails/docs/report.pdf/original.pdf"
        );
        assert_eq!(l.original_key("b", "dog123")?, "thumbnails/dog123/original");
        assert_eq!(l.original_key("b", ".env")?, "thumbnails/.env/original");
        assert_eq!(
            l.original_key("b", "a.tar.gz?x")?,
            "thumbnails/a.tar.gz?x/original"
        );
        Ok(())
    }

    #[test]
    fn a_moved_copy_names_its_source() -> TestResult {
        for (l, bucket) in [(layout(None), "photos"), (layout(Some("thumbs")), "photos")] {
            for source in [
                "dog123",
                "a/cat.JPG",
                "docs/report.pdf",
                "x.jpg/y.png",
                ".env",
            ] {
                let copy = l.original_key(bucket, source)?;
                assert_eq!(
                    l.moved_source(bucket, &copy).as_deref(),
                    Some(source),
                    "{copy}"
                );
                let thumbnail = l.thumbnail_key(bucket, source, 256, "jpg")?;
                assert_eq!(l.moved_source(bucket, &thumbnail), None, "{thumbnail}");
            }
        }
        let shared = layout(Some("thumbs"));
        // Another source bucket's folder, a copy whose extension is not its source's, and
        // objects outside the layout are no one's copy.
        assert_eq!(
            shared.moved_source("photos", "thumbnails/scans/a.jpg/original.jpg"),
            None
        );
        assert_eq!(
            shared.moved_source("photos", "thumbnails/photos/a.jpg/original.png"),
            None
        );
        assert_eq!(
            shared.moved_source("photos", "thumbnails/photos/original"),
            None
        );
        assert_eq!(
            shared.moved_source("photos", "elsewhere/a.jpg/original.jpg"),
            None
        );
        Ok(())
    }

    #[test]
    fn derivative_names_are_sizes_and_the_original() {
        for name in [
            "256.jpg",
            "64.PNG",
            "1024.webp",
            "8.jpeg",
            "original",
            "original.pdf",
        ] {
            assert!(DerivativesLayout::is_derivative_name(name), "{name}");
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
            "original.",
            "originals",
            "original/256.jpg",
        ] {
            assert!(!DerivativesLayout::is_derivative_name(name), "{name}");
        }
    }

    #[test]
    fn refuses_dot_segments_and_overlong_keys() {
        let l = layout(None);
        assert!(matches!(
            l.thumbnail_key("b", "../etc/x.jpg", 256, "jpg"),
            Err(LayoutError::DotSegment(_))
        ));
        assert!(matches!(
            l.folder("b", "a/./x.jpg"),
            Err(LayoutError::DotSegment(_))
        ));
        let long = format!("{}.jpg", "k".repeat(1020));
        assert!(matches!(
            l.thumbnail_key("b", &long, 256, "jpg"),
            Err(LayoutError::TooLong(_))
        ));
    }

    #[test]
    fn own_outputs_only_in_the_destination() {
        let shared = layout(Some("thumbs"));
        assert!(shared.is_derivative("thumbs", "thumbnails/photos/x.jpg/256.jpg"));
        assert!(!shared.is_derivative("photos", "thumbnails/x.jpg"));
        let same = layout(None);
        assert!(same.is_derivative("photos", "thumbnails/x.jpg/256.jpg"));
        assert!(!same.is_derivative("photos", "photos/x.jpg"));
    }
}
