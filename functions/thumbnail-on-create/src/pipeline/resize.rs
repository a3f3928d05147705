//! The final resize: Lanczos3 with SIMD (fast_image_resize), alpha premultiplied on the way.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::PipelineError;
use super::raster::{Layout, Raster};

pub fn resize(raster: &Raster, width: u32, height: u32) -> Result<Raster, PipelineError> {
    if (raster.width, raster.height) == (width, height) {
        return Ok(raster.clone());
    }
    let pixel_type = match raster.layout {
        Layout::Gray => PixelType::U8,
        Layout::GrayAlpha => PixelType::U8x2,
        Layout::Rgb => PixelType::U8x3,
        Layout::Rgba | Layout::Cmyk => PixelType::U8x4,
    };
    let failed = |e: &dyn std::fmt::Display| PipelineError::Resize(e.to_string());
    let source = ImageRef::new(raster.width, raster.height, &raster.pixels, pixel_type)
        .map_err(|e| failed(&e))?;
    let mut target = Image::new(width, height, pixel_type);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        // CMYK's fourth channel is black ink, not alpha.
        .use_alpha(raster.layout.has_alpha());
    Resizer::new()
        .resize(&source, &mut target, &options)
        .map_err(|e| failed(&e))?;
    Ok(Raster::new(width, height, raster.layout, target.into_vec()))
}
