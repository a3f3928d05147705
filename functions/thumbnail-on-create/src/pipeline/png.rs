//! PNG (8 and 16 bit, palette, alpha, APNG's default image) decoded row by row into the
//! shrinker, so memory follows the thumbnail's size rather than the source's.

use std::io::Cursor;

use image::metadata::Orientation;
use png::{BitDepth, ColorType, Transformations};

use super::raster::Layout;
use super::shrink::RowShrinker;
use super::{Decoded, PipelineError, check_pixels, shrink_on_load};

pub fn decode(source: &[u8], target: u32, max_pixels: u64) -> Result<Decoded, PipelineError> {
    let corrupt = |e: png::DecodingError| PipelineError::corrupt("PNG", e);
    let mut decoder = png::Decoder::new(Cursor::new(source));
    // Palette and low bit depths expand to 8 bits; 16-bit channels keep their high byte.
    decoder.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    let header = decoder.read_header_info().map_err(corrupt)?;
    let (width, height) = (header.width, header.height);
    check_pixels(width, height, max_pixels)?;

    let mut reader = decoder.read_info().map_err(corrupt)?;
    let info = reader.info();
    let icc = info.icc_profile.as_ref().map(|p| p.to_vec());
    let orientation = info
        .exif_metadata
        .as_ref()
        .and_then(|exif| Orientation::from_exif_chunk(exif))
        .unwrap_or(Orientation::NoTransforms);
    let interlaced = info.interlaced;
    let layout = match reader.output_color_type() {
        (ColorType::Grayscale, BitDepth::Eight) => Layout::Gray,
        (ColorType::GrayscaleAlpha, BitDepth::Eight) => Layout::GrayAlpha,
        (ColorType::Rgb, BitDepth::Eight) => Layout::Rgb,
        (ColorType::Rgba, BitDepth::Eight) => Layout::Rgba,
        (color, depth) => {
            return Err(PipelineError::Unsupported(format!(
                "PNG with {color:?} {depth:?} output"
            )));
        }
    };
    let mut shrinker = RowShrinker::new(width, shrink_on_load(width.max(height), target), layout);
    if interlaced {
        // Adam7 rows arrive pass by pass; only the whole frame puts them in order.
        let size = reader
            .output_buffer_size()
            .ok_or(PipelineError::TooManyPixels {
                width,
                height,
                limit: max_pixels,
            })?;
        let mut frame = vec![0; size];
        let output = reader.next_frame(&mut frame).map_err(corrupt)?;
        for row in frame.chunks_exact(output.line_size).take(height as usize) {
            shrinker.push_row(row);
        }
    } else {
        while let Some(row) = reader.next_row().map_err(corrupt)? {
            shrinker.push_row(row.data());
        }
    }
    Ok(Decoded {
        raster: shrinker.finish(),
        full_size: (width, height),
        icc,
        orientation,
    })
}
