//! JPEG through libjpeg (mozjpeg): decoded already shrunk by DCT scaling, so a 24-megapixel
//! photo never exists at full size in memory; EXIF orientation and the ICC profile come from
//! the APP1 / APP2 markers, and Adobe's inverted CMYK is turned the right way up.

use image::metadata::Orientation;
use mozjpeg::{ColorSpace, Decompress, Marker};

use super::raster::{Layout, Raster};
use super::{Decoded, PipelineError, check_pixels, shrink_on_load};

const MARKERS: &[Marker] = &[Marker::APP(1), Marker::APP(2), Marker::APP(14)];
const ICC_SIGNATURE: &[u8] = b"ICC_PROFILE\0";
const EXIF_SIGNATURE: &[u8] = b"Exif\0\0";

/// Decodes `source` for thumbnails whose longest side is at most `target`.
pub fn decode(source: &[u8], target: u32, max_pixels: u64) -> Result<Decoded, PipelineError> {
    // libjpeg pads a truncated stream with grey and only warns; a thumbnail of half an upload
    // is worse than a clear error.
    if !has_end_of_image(source) {
        return Err(PipelineError::Truncated("JPEG"));
    }
    let corrupt = |e: std::io::Error| PipelineError::corrupt("JPEG", e);
    let mut decompress = Decompress::builder()
        .with_markers(MARKERS)
        .from_mem(source)
        .map_err(corrupt)?;
    let (width, height) = (decompress.width() as u32, decompress.height() as u32);
    check_pixels(width, height, max_pixels)?;

    let mut icc_chunks: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut orientation = Orientation::NoTransforms;
    let mut adobe = false;
    for marker in decompress.markers() {
        match marker.marker {
            Marker::APP(1) => {
                if let Some(exif) = marker.data.strip_prefix(EXIF_SIGNATURE) {
                    orientation = Orientation::from_exif_chunk(exif).unwrap_or(orientation);
                }
            }
            Marker::APP(2) => {
                // ICC profiles larger than a marker are split: sequence number, count, data.
                if let Some(rest) = marker.data.strip_prefix(ICC_SIGNATURE)
                    && let [sequence, _count, data @ ..] = rest
                {
                    icc_chunks.push((*sequence, data.to_vec()));
                }
            }
            Marker::APP(14) => adobe |= marker.data.starts_with(b"Adobe"),
            _ => {}
        }
    }
    icc_chunks.sort_by_key(|(sequence, _)| *sequence);
    let icc: Vec<u8> = icc_chunks.into_iter().flat_map(|(_, data)| data).collect();

    // DCT scaling by 1/2, 1/4 or 1/8, keeping at least twice the target for the final resize.
    let denominator = shrink_on_load(width.max(height), target).min(8);
    decompress.scale((8 / denominator) as u8);
    let (layout, output) = match decompress.color_space() {
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => (Layout::Cmyk, ColorSpace::JCS_CMYK),
        ColorSpace::JCS_GRAYSCALE => (Layout::Gray, ColorSpace::JCS_GRAYSCALE),
        _ => (Layout::Rgb, ColorSpace::JCS_RGB),
    };
    let mut started = decompress.to_colorspace(output).map_err(corrupt)?;
    let (out_width, out_height) = (started.width() as u32, started.height() as u32);
    let mut pixels: Vec<u8> = started.read_scanlines().map_err(corrupt)?;
    started.finish().map_err(corrupt)?;
    if layout == Layout::Cmyk && adobe {
        for value in &mut pixels {
            *value = 255 - *value;
        }
    }
    Ok(Decoded {
        raster: Raster::new(out_width, out_height, layout, pixels),
        full_size: (width, height),
        icc: (!icc.is_empty()).then_some(icc),
        orientation,
    })
}

/// A JPEG ends with the EOI marker, possibly followed by padding.
fn has_end_of_image(source: &[u8]) -> bool {
    let tail = &source[source.len().saturating_sub(4096)..];
    tail.windows(2).any(|pair| pair == [0xFF, 0xD9])
}
