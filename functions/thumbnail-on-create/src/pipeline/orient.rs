//! EXIF orientation applied to the finished thumbnail, where turning it is cheapest.

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage, RgbaImage};

use super::PipelineError;
use super::raster::{Layout, Raster};

/// An sRGB raster (RGB or RGBA) as an `image` buffer, turned upright.
pub fn upright(raster: Raster, orientation: Orientation) -> Result<DynamicImage, PipelineError> {
    let (width, height) = (raster.width, raster.height);
    let mismatch = || PipelineError::Resize(format!("a {width}x{height} buffer of the wrong size"));
    let mut image = match raster.layout {
        Layout::Rgba => DynamicImage::ImageRgba8(
            RgbaImage::from_raw(width, height, raster.pixels).ok_or_else(mismatch)?,
        ),
        _ => DynamicImage::ImageRgb8(
            RgbImage::from_raw(width, height, raster.pixels).ok_or_else(mismatch)?,
        ),
    };
    image.apply_orientation(orientation);
    Ok(image)
}
