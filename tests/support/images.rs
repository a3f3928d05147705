//! Images made in the test, so that no test depends on files it cannot see.

use std::io::Cursor;

use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};

/// A `width`x`height` gradient encoded as `format`.
pub fn gradient(
    width: u32,
    height: u32,
    format: ImageFormat,
) -> Result<Vec<u8>, image::ImageError> {
    let image = DynamicImage::ImageRgb8(ImageBuffer::from_fn(width, height, |x, y| {
        Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 160])
    }));
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), format)?;
    Ok(bytes)
}

/// Width and height of an encoded image.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), image::ImageError> {
    let image = image::load_from_memory(bytes)?;
    Ok((image.width(), image.height()))
}

/// A JPEG marker segment: the marker, the length, the payload.
pub fn jpeg_segment(marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0xFF, marker];
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}
