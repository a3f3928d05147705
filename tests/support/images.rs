//! Images made in the test, so that no test depends on files it cannot see.

use std::io::Cursor;

use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb, RgbImage};

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

/// Gradients across and down with a disc off centre: the same picture at any size.
pub fn scene(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (
            f64::from(x) / f64::from(width),
            f64::from(y) / f64::from(height),
        );
        if (fx - 0.7).hypot(fy - 0.6) < 0.15 {
            return Rgb([30, 40, 200]);
        }
        Rgb([(fx * 200.0) as u8 + 30, 60, (fy * 180.0) as u8 + 40])
    })
}

/// The peak signal-to-noise ratio of `b` against `a`, in dB.
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let squares: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let mse = squares / a.as_raw().len() as f64;
    10.0 * (255.0f64.powi(2) / mse).log10()
}

/// `image` as a JPEG of quality 92 from mozjpeg (libjpeg's scan script when `progressive`).
pub fn mozjpeg(image: &RgbImage, progressive: bool) -> Result<Vec<u8>, crate::support::BoxError> {
    let mut compress = ::mozjpeg::Compress::new(::mozjpeg::ColorSpace::JCS_RGB);
    compress.set_fastest_defaults();
    if progressive {
        compress.set_progressive_mode();
    }
    compress.set_size(image.width() as usize, image.height() as usize);
    compress.set_quality(92.0);
    let mut started = compress.start_compress(Vec::new())?;
    started.write_scanlines(image.as_raw())?;
    Ok(started.finish()?)
}
