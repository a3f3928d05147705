//! GIF (first frame), BMP and TIFF through the `image` crate: dimensions checked from the
//! header before any pixel buffer exists, then a full decode (these formats have no
//! shrink-on-load, and their sizes in practice are modest).

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::raster::{Layout, Raster};
use super::{Decoded, PipelineError, check_pixels};

pub fn decode(
    source: &[u8],
    format: ImageFormat,
    name: &'static str,
    max_pixels: u64,
) -> Result<Decoded, PipelineError> {
    let corrupt = |e: image::ImageError| PipelineError::corrupt(name, e);
    let mut decoder = ImageReader::with_format(Cursor::new(source), format)
        .into_decoder()
        .map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, max_pixels)?;
    let icc = decoder.icc_profile().map_err(corrupt)?;
    let orientation = decoder.orientation().map_err(corrupt)?;
    let image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    let raster = if image.color().has_alpha() {
        let rgba = image.into_rgba8();
        Raster::new(width, height, Layout::Rgba, rgba.into_raw())
    } else {
        let rgb = image.into_rgb8();
        Raster::new(width, height, Layout::Rgb, rgb.into_raw())
    };
    Ok(Decoded {
        raster,
        full_size: (width, height),
        icc,
        orientation,
    })
}
