//! Output encoders, none of which carries the source's metadata: JPEG (mozjpeg, alpha
//! flattened onto the configured background), PNG and WebP (alpha kept).

use std::io::Cursor;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ImageEncoder, RgbImage};
use mozjpeg::{ColorSpace, Compress};

use super::{OutputFormat, PipelineError};

pub fn encode(
    image: &DynamicImage,
    format: OutputFormat,
    quality: u8,
    background: [u8; 3],
) -> Result<Vec<u8>, PipelineError> {
    match format {
        OutputFormat::Jpeg => jpeg(&flatten(image, background), quality),
        OutputFormat::Png => png(image),
        OutputFormat::Webp => webp(image, quality),
    }
}

/// Composites onto `background` with alpha in linear proportion, so edges blend into the
/// background colour instead of a light or dark fringe.
fn flatten(image: &DynamicImage, background: [u8; 3]) -> RgbImage {
    let DynamicImage::ImageRgba8(rgba) = image else {
        return image.to_rgb8();
    };
    let mut rgb = RgbImage::new(rgba.width(), rgba.height());
    for (out, px) in rgb.pixels_mut().zip(rgba.pixels()) {
        let alpha = u32::from(px[3]);
        for c in 0..3 {
            let blended =
                (u32::from(px[c]) * alpha + u32::from(background[c]) * (255 - alpha) + 127) / 255;
            out[c] = blended as u8;
        }
    }
    rgb
}

fn jpeg(image: &RgbImage, quality: u8) -> Result<Vec<u8>, PipelineError> {
    let failed = |e: std::io::Error| PipelineError::Encode("JPEG", e.to_string());
    let mut compress = Compress::new(ColorSpace::JCS_RGB);
    // Baseline with optimised Huffman tables: mozjpeg's default trellis and progressive scans
    // cost more time than the whole decode of a small source and save only a few percent.
    compress.set_fastest_defaults();
    compress.set_optimize_coding(true);
    compress.set_size(image.width() as usize, image.height() as usize);
    compress.set_quality(f32::from(quality));
    // As libvips does: at high quality, keep colour at full resolution (4:4:4), or saturated
    // edges bleed.
    if quality >= 90 {
        compress.set_chroma_sampling_pixel_sizes((1, 1), (1, 1));
    }
    let mut started = compress.start_compress(Vec::new()).map_err(failed)?;
    started.write_scanlines(image.as_raw()).map_err(failed)?;
    started.finish().map_err(failed)
}

fn png(image: &DynamicImage) -> Result<Vec<u8>, PipelineError> {
    let mut bytes = Vec::new();
    let encoder = PngEncoder::new_with_quality(
        Cursor::new(&mut bytes),
        CompressionType::Default,
        FilterType::Adaptive,
    );
    encoder
        .write_image(
            image.as_bytes(),
            image.width(),
            image.height(),
            image.color().into(),
        )
        .map_err(|e| PipelineError::Encode("PNG", e.to_string()))?;
    Ok(bytes)
}

fn webp(image: &DynamicImage, quality: u8) -> Result<Vec<u8>, PipelineError> {
    let (width, height) = (image.width(), image.height());
    let encoder = match image {
        DynamicImage::ImageRgba8(rgba) => webpx::Encoder::new_rgba(rgba.as_raw(), width, height),
        other => webpx::Encoder::new_rgb(other.as_bytes(), width, height),
    };
    encoder
        .quality(f32::from(quality))
        .encode(webpx::Unstoppable)
        .map_err(|e| PipelineError::Encode("WebP", e.error().to_string()))
}
