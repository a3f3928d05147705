//! PNG (8 and 16 bit, palette, alpha, APNG's default image) decoded row by row into the
//! shrinker, so memory follows the thumbnail's size rather than the source's; an interlaced
//! (Adam7) PNG needs its whole frame, which its need counts.

use std::io::{Cursor, ErrorKind};

use bucketfn::budget::Stop;
use image::metadata::Orientation;
use png::{BitDepth, ColorType, DecodingError, InterlaceInfo, Reader, Transformations};

use super::raster::Layout;
use super::shrink::RowShrinker;
use super::{Decoded, Inspected, PipelineError, Shape, check_pixels, shrink_on_load};

/// What the inflater and the unfiltering buffer hold besides rows: the 32 KiB deflate window
/// and fdeflate's tables.
const INFLATE_BYTES: u64 = 64 * 1024;

/// What the png crate may allocate besides the image rows: the chunks it keeps, an ICC
/// profile as it inflates (one that would inflate beyond this is dropped; at the crate's
/// default a few KiB could take 64 MiB), its output row. No real profile comes near it.
const ANCILLARY_BYTES: usize = 16 * 1024 * 1024;

/// Reads the header and the chunks before the image data, refusing too many pixels first.
fn open(source: &[u8], max_pixels: u64) -> Result<Reader<Cursor<&[u8]>>, PipelineError> {
    let limits = png::Limits {
        bytes: ANCILLARY_BYTES,
    };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(source), limits);
    // Text is never used; skipped, it neither takes memory nor counts against the limit.
    decoder.set_ignore_text_chunk(true);
    // Palette and low bit depths expand to 8 bits; 16-bit channels keep their high byte.
    decoder.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    let header = decoder.read_header_info().map_err(failed)?;
    check_pixels(header.width, header.height, max_pixels)?;
    decoder.read_info().map_err(failed)
}

fn layout_of(reader: &Reader<Cursor<&[u8]>>) -> Result<Layout, PipelineError> {
    match reader.output_color_type() {
        (ColorType::Grayscale, BitDepth::Eight) => Ok(Layout::Gray),
        (ColorType::GrayscaleAlpha, BitDepth::Eight) => Ok(Layout::GrayAlpha),
        (ColorType::Rgb, BitDepth::Eight) => Ok(Layout::Rgb),
        (ColorType::Rgba, BitDepth::Eight) => Ok(Layout::Rgba),
        (color, depth) => Err(PipelineError::Unsupported(format!(
            "PNG with {color:?} {depth:?} output"
        ))),
    }
}

/// The need of a decode towards `target`: rows at the file's own bit depth, the whole frame
/// when interlaced, the shrinker's sums and its output.
pub fn inspect(source: &[u8], target: u32, max_pixels: u64) -> Result<Inspected, PipelineError> {
    let reader = open(source, max_pixels)?;
    let layout = layout_of(&reader)?;
    let info = reader.info();
    let (width, height) = (info.width, info.height);
    let too_large = || PipelineError::TooManyPixels {
        width,
        height,
        limit: max_pixels,
    };
    let raw_row = info.raw_row_length() as u64;
    let out_line = reader.output_line_size(width).ok_or_else(too_large)? as u64;
    let frame = if info.interlaced {
        reader.output_buffer_size().ok_or_else(too_large)? as u64
    } else {
        0
    };
    let factor = u64::from(shrink_on_load(width.max(height), target));
    let channels = layout.channels() as u64;
    let shape = Shape {
        width: u64::from(width).div_ceil(factor),
        height: u64::from(height).div_ceil(factor),
        channels,
        alpha: layout.has_alpha(),
    };
    let sums = shape.width * channels * 8;
    let depth = if info.bit_depth == BitDepth::Sixteen {
        "16-bit "
    } else {
        ""
    };
    let colour = match info.color_type {
        ColorType::Grayscale => "grey",
        ColorType::GrayscaleAlpha => "grey and alpha",
        ColorType::Rgb => "RGB",
        ColorType::Rgba => "RGBA",
        ColorType::Indexed => "palette",
    };
    let interlaced = if info.interlaced { "interlaced " } else { "" };
    // The png crate inflates a profile up to its limit (dropping one that would exceed it),
    // then holds it, and we copy it.
    let icc = if has_profile(source) {
        ANCILLARY_BYTES as u64 + 2 * info.icc_profile.as_ref().map_or(0, |p| p.len() as u64)
    } else {
        0
    };
    Ok(Inspected {
        what: format!("the {interlaced}{depth}{colour} PNG {width}x{height}"),
        // Current and previous row, and what the unfiltering buffer reads ahead.
        decoder: 4 * raw_row + INFLATE_BYTES + out_line + icc + frame + sums + shape.bytes(),
        raster: shape,
        full_size: (width, height),
    })
}

pub fn decode(
    source: &[u8],
    target: u32,
    max_pixels: u64,
    stop: &Stop,
) -> Result<Decoded, PipelineError> {
    let mut reader = open(source, max_pixels)?;
    let layout = layout_of(&reader)?;
    let info = reader.info();
    let (width, height) = (info.width, info.height);
    let icc = info.icc_profile.as_ref().map(|p| p.to_vec());
    let orientation = info
        .exif_metadata
        .as_ref()
        .and_then(|exif| Orientation::from_exif_chunk(exif))
        .unwrap_or(Orientation::NoTransforms);
    let interlaced = info.interlaced;
    let mut shrinker = RowShrinker::new(width, shrink_on_load(width.max(height), target), layout);
    if interlaced {
        // Adam7 rows arrive pass by pass; only the whole frame puts them in order.
        let too_large = || PipelineError::TooManyPixels {
            width,
            height,
            limit: max_pixels,
        };
        let stride = reader.output_line_size(width).ok_or_else(too_large)?;
        let mut frame = vec![0; reader.output_buffer_size().ok_or_else(too_large)?];
        let bits_per_pixel = (layout.channels() * 8) as u8;
        while let Some(row) = reader.next_interlaced_row().map_err(failed)? {
            stop.check()?;
            if let InterlaceInfo::Adam7(pass) = row.interlace() {
                png::expand_interlaced_row(&mut frame, stride, row.data(), pass, bits_per_pixel);
            }
        }
        for row in frame.chunks_exact(stride).take(height as usize) {
            stop.check()?;
            shrinker.push_row(row);
        }
    } else {
        while let Some(row) = reader.next_row().map_err(failed)? {
            stop.check()?;
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

/// Whether an ICC profile (iCCP) comes before the image data: chunks are length, type, data
/// and CRC after the 8-byte signature.
fn has_profile(source: &[u8]) -> bool {
    let mut at = 8;
    while let Some(header) = source.get(at..at + 8) {
        match &header[4..] {
            b"iCCP" => return true,
            b"IDAT" => return false,
            _ => {}
        }
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        at = at.saturating_add(12).saturating_add(length as usize);
    }
    false
}

/// Data that ends before the last row is truncation; the png crate says so either as the end
/// of the file or as image data (IDAT) that runs out before the image is complete. Its limit
/// is named.
fn failed(error: DecodingError) -> PipelineError {
    if matches!(error, DecodingError::LimitsExceeded) {
        return PipelineError::Unsupported(format!(
            "PNG that needs more than {} MiB besides its image rows (a metadata chunk or a row that large)",
            ANCILLARY_BYTES >> 20
        ));
    }
    let truncated = match &error {
        DecodingError::IoError(e) => e.kind() == ErrorKind::UnexpectedEof,
        DecodingError::Format(e) => e.to_string().contains("not have enough data"),
        _ => false,
    };
    if truncated {
        PipelineError::Truncated("PNG")
    } else {
        PipelineError::corrupt("PNG", error)
    }
}
