//! Which keys are images, by their extension. Where their thumbnails go is
//! `bucketfn::derivatives`, the layout cleanup-on-remove reads too.

/// Extensions of files treated as images. HEIC and AVIF are included so that they fail with a
/// message naming the format rather than being skipped silently.
const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "jpe", "jfif", "png", "gif", "webp", "bmp", "tif", "tiff", "heic", "heif",
    "avif",
];

pub fn is_image_key(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty() && IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
