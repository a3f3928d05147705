//! What an object is, from its first bytes: names lie, magic numbers do not. One reading for
//! every place that decides by content (thumbnail-on-create's sources without an image
//! extension, the gallery's uploads, the pages that serve thumbnails).

/// Bytes of an object's start that [`image_kind`] needs (a BMP's header is the longest, 18).
pub const SIGNATURE_BYTES: usize = 32;

/// The image formats thumbnail-on-create reads or names in its refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
    Gif,
    Webp,
    Bmp,
    Tiff,
    Heif,
    Avif,
}

impl ImageKind {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
            Self::Bmp => "image/bmp",
            Self::Tiff => "image/tiff",
            Self::Heif => "image/heif",
            Self::Avif => "image/avif",
        }
    }

    /// The formats the functions write (thumbnails), the only ones a page serves back.
    pub fn is_written(self) -> bool {
        matches!(self, Self::Jpeg | Self::Png | Self::Webp)
    }
}

/// The image format `start` (an object's first bytes, at least [`SIGNATURE_BYTES`] of them
/// when the object has as many) begins as, if any. Strict on purpose: for an object without an
/// extension these bytes are all there is, and a text file must stay a text file. So BMP's
/// two letters `BM` count only with the header's reserved zeros and a known header size, and an
/// ISO-BMFF box (MP4, MOV, HEIC and AVIF alike) only with an image brand.
pub fn image_kind(start: &[u8]) -> Option<ImageKind> {
    let at = |offset: usize, bytes: &[u8]| start.get(offset..offset + bytes.len()) == Some(bytes);
    if at(0, &[0xFF, 0xD8, 0xFF]) {
        Some(ImageKind::Jpeg)
    } else if at(0, b"\x89PNG\r\n\x1a\n") {
        Some(ImageKind::Png)
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        Some(ImageKind::Gif)
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        Some(ImageKind::Webp)
    } else if at(0, b"II*\0") || at(0, b"MM\0*") {
        Some(ImageKind::Tiff)
    } else if at(0, b"BM") && is_bmp_header(start) {
        Some(ImageKind::Bmp)
    } else if at(4, b"ftyp") {
        match start.get(8..12)? {
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"mif1" | b"msf1" => Some(ImageKind::Heif),
            b"avif" | b"avis" => Some(ImageKind::Avif),
            _ => None,
        }
    } else {
        None
    }
}

/// After `BM`: the file size, four reserved zero bytes, the pixel offset, then a DIB header
/// whose first field is its own length, one of the versions Windows and OS/2 defined.
fn is_bmp_header(start: &[u8]) -> bool {
    let dib_size = start
        .get(14..18)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes);
    start.get(6..10) == Some(&[0, 0, 0, 0])
        && dib_size.is_some_and(|n| matches!(n, 12 | 16 | 40 | 52 | 56 | 64 | 108 | 124))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_told_by_their_first_bytes_and_look_alike_text_is_not() {
        let mut bmp = b"BM\x46\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0".to_vec();
        bmp.resize(SIGNATURE_BYTES, 0);
        let images: [(&[u8], ImageKind); 8] = [
            (b"\xFF\xD8\xFF\xE0\0\x10JFIF", ImageKind::Jpeg),
            (b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", ImageKind::Png),
            (b"GIF89a\x01\0\x01\0", ImageKind::Gif),
            (b"RIFF\x10\0\0\0WEBPVP8 ", ImageKind::Webp),
            (b"II*\0\x08\0\0\0", ImageKind::Tiff),
            (&bmp, ImageKind::Bmp),
            (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", ImageKind::Heif),
            (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1", ImageKind::Avif),
        ];
        for (start, kind) in images {
            assert_eq!(image_kind(start), Some(kind), "{start:?}");
        }
        let not_images: [&[u8]; 7] = [
            b"BM sales up 4%, costs flat",
            b"P3 plan: ship it",
            b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2",
            b"",
            b"\xFF\xD8",
            b"{\"Records\": []}",
            b"RIFF\x10\0\0\0WAVEfmt ",
        ];
        for start in not_images {
            assert_eq!(image_kind(start), None, "{start:?}");
        }
    }
}
