//! Which keys are images, which are this function's own outputs, and the deterministic output
//! key of a thumbnail: `<prefix><source key>/<size>.<jpg|png|webp>`, so that a redelivered
//! event rewrites the same objects and every derivative of a source sits under one prefix.

/// Extensions of files treated as images. HEIC and AVIF are included so that they fail with a
/// message naming the format rather than being skipped silently.
const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "jpe", "jfif", "png", "gif", "webp", "bmp", "tif", "tiff", "heic", "heif",
    "avif",
];

/// S3's limit on key length, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// Why no output key can be derived from a source key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputKeyError {
    #[error(
        "source key {0:?} has a `.` or `..` segment, which some stores resolve as a path; refusing to derive an output key from it"
    )]
    DotSegment(String),
    #[error("the output key for {0:?} would exceed S3's {MAX_KEY_BYTES}-byte key limit")]
    TooLong(String),
}

pub fn is_image_key(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty() && IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
    })
}

/// True when `bucket/key` is where this function writes, so an event for it must be ignored
/// (the loop guard for a function whose outputs land in its own source bucket).
pub fn is_own_output(destination_bucket: &str, prefix: &str, bucket: &str, key: &str) -> bool {
    bucket == destination_bucket && key.starts_with(prefix)
}

pub fn output_key(
    prefix: &str,
    key: &str,
    size: u32,
    extension: &str,
) -> Result<String, OutputKeyError> {
    if key
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(OutputKeyError::DotSegment(key.to_owned()));
    }
    let output = format!("{prefix}{key}/{size}.{extension}");
    if output.len() > MAX_KEY_BYTES {
        return Err(OutputKeyError::TooLong(key.to_owned()));
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn recognises_image_extensions_in_any_case() {
        for key in [
            "a.jpg",
            "dir/b.JPEG",
            "c d.png",
            "x/y/z.WebP",
            "e.heic",
            "f.tiff",
        ] {
            assert!(is_image_key(key), "{key}");
        }
        for key in [
            "a.txt",
            "jpg",
            "dir.jpg/readme",
            ".jpg",
            "photos/",
            "a.jpg.gz",
        ] {
            assert!(!is_image_key(key), "{key}");
        }
    }

    #[test]
    fn output_keys_are_deterministic_and_keep_the_source_name() -> TestResult {
        assert_eq!(
            output_key("thumbnails/", "a/cat.png", 256, "jpg")?,
            "thumbnails/a/cat.png/256.jpg"
        );
        assert_eq!(
            output_key("", "café +1.jpg", 64, "webp")?,
            "café +1.jpg/64.webp"
        );
        Ok(())
    }

    #[test]
    fn refuses_dot_segments_and_overlong_keys() {
        assert!(matches!(
            output_key("t/", "../etc/x.jpg", 256, "jpg"),
            Err(OutputKeyError::DotSegment(_))
        ));
        assert!(matches!(
            output_key("t/", "a/./x.jpg", 256, "jpg"),
            Err(OutputKeyError::DotSegment(_))
        ));
        let long = format!("{}.jpg", "k".repeat(1020));
        assert!(matches!(
            output_key("t/", &long, 256, "jpg"),
            Err(OutputKeyError::TooLong(_))
        ));
    }

    #[test]
    fn own_outputs_only_in_the_destination_bucket() {
        assert!(is_own_output(
            "b",
            "thumbnails/",
            "b",
            "thumbnails/x.jpg/256.jpg"
        ));
        assert!(!is_own_output(
            "b",
            "thumbnails/",
            "other",
            "thumbnails/x.jpg"
        ));
        assert!(!is_own_output("b", "thumbnails/", "b", "photos/x.jpg"));
    }
}
