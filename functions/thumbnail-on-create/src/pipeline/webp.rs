//! WebP through libwebp (webpx): decoded directly at the reduced size libwebp's scaler
//! produces, first frame of an animation, ICC profile and EXIF orientation kept.

use bucketfn::budget::Stop;
use image::metadata::Orientation;
use webpx::BitstreamFormat;

use super::raster::{Layout, Raster};
use super::{Decoded, Inspected, PipelineError, Shape, check_pixels, shrink_on_load};

/// libwebp's lossy decoder keeps a cache of macroblock rows (up to three with its threads,
/// plus filter context) and per-macroblock coefficients: about 300 bytes per column of the
/// source; counted generously.
const LOSSY_BYTES_PER_COLUMN: u64 = 384;
/// A lossless (VP8L) decode holds the whole image as 32-bit ARGB plus 17 rows of caches, with
/// or without scaling.
const LOSSLESS_BYTES_PER_PIXEL: u64 = 4;
const LOSSLESS_CACHE_ROWS: u64 = 17;
/// The scaler's work rows: two 32-bit rows per channel of the output.
const SCALER_BYTES_PER_COLUMN: u64 = 2 * 4 * 4;

/// What libwebp holds for a frame of `width`x`height` coded as `format`: lossy keeps row
/// caches, its alpha plane (VP8L-coded, which may need ARGB-sized buffers) is whole-frame;
/// lossless keeps the whole frame as ARGB.
fn frame_bytes(width: u64, height: u64, format: BitstreamFormat, alpha: bool) -> u64 {
    let lossy = LOSSY_BYTES_PER_COLUMN * width
        + if alpha {
            (1 + LOSSLESS_BYTES_PER_PIXEL) * width * height
                + LOSSLESS_BYTES_PER_PIXEL * LOSSLESS_CACHE_ROWS * width
        } else {
            0
        };
    let lossless = LOSSLESS_BYTES_PER_PIXEL * (width * height + LOSSLESS_CACHE_ROWS * width);
    match format {
        BitstreamFormat::Lossy => lossy,
        BitstreamFormat::Lossless => lossless,
        _ => lossy.max(lossless),
    }
}

pub fn inspect(source: &[u8], target: u32, max_pixels: u64) -> Result<Inspected, PipelineError> {
    let corrupt = |e: webpx::At<webpx::Error>| PipelineError::corrupt("WebP", e.error());
    let info = webpx::ImageInfo::from_webp(source).map_err(corrupt)?;
    let (width, height) = (info.width, info.height);
    check_pixels(width, height, max_pixels)?;
    let (w, h) = (u64::from(width), u64::from(height));
    let channels = if info.has_alpha { 4 } else { 3 };
    let (shape, decoder, kind) = if info.has_animation {
        let shape = Shape {
            width: w,
            height: h,
            channels,
            alpha: info.has_alpha,
        };
        // The animation decoder's canvas and previous canvas, the frame it hands out, and the
        // frame's own decode (any coding, any alpha).
        let decoder =
            3 * 4 * w * h + frame_bytes(w, h, BitstreamFormat::Undefined, true) + shape.bytes();
        (shape, decoder, "animated")
    } else {
        let factor = u64::from(shrink_on_load(width.max(height), target));
        let shape = Shape {
            width: w.div_ceil(factor),
            height: h.div_ceil(factor),
            channels,
            alpha: info.has_alpha,
        };
        let decoder = frame_bytes(w, h, info.format, info.has_alpha)
            + SCALER_BYTES_PER_COLUMN * shape.width
            + shape.bytes();
        let kind = match info.format {
            BitstreamFormat::Lossless => "lossless",
            _ => "lossy",
        };
        (shape, decoder, kind)
    };
    let alpha = if info.has_alpha { " with alpha" } else { "" };
    Ok(Inspected {
        what: format!("the {kind} WebP{alpha} {width}x{height}"),
        decoder,
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
    let corrupt = |e: webpx::At<webpx::Error>| PipelineError::corrupt("WebP", e.error());
    let decoder = webpx::Decoder::new(source).map_err(corrupt)?;
    let info = decoder.info().clone();
    let (width, height) = (info.width, info.height);
    check_pixels(width, height, max_pixels)?;
    let icc = webpx::get_icc_profile(source).ok().flatten();
    let orientation = info
        .orientation
        .and_then(|o| Orientation::from_exif(o as u8))
        .unwrap_or(Orientation::NoTransforms);

    let layout = if info.has_alpha {
        Layout::Rgba
    } else {
        Layout::Rgb
    };
    // libwebp decodes in one call: the stop is looked at around it.
    stop.check()?;
    let (pixels, out_width, out_height) = if info.has_animation {
        // libwebp's scaler does not apply to animations; their frames are small anyway.
        let mut frames = webpx::AnimationDecoder::new(source).map_err(corrupt)?;
        let frame = frames
            .next_frame()
            .map_err(corrupt)?
            .ok_or(PipelineError::Truncated("animated WebP"))?;
        stop.check()?;
        let pixels = match layout {
            Layout::Rgba => frame.data,
            _ => frame
                .data
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect(),
        };
        (pixels, frame.width, frame.height)
    } else {
        let factor = shrink_on_load(width.max(height), target);
        // The deblocking filter and fancy chroma upsampling refine detail that the final
        // resize by two or more averages away; skipping them is most of libwebp's time.
        let config = webpx::DecoderConfig::new()
            .bypass_filtering(true)
            .no_fancy_upsampling(true)
            .scale(width.div_ceil(factor), height.div_ceil(factor));
        let decoder = decoder.config(config);
        match layout {
            Layout::Rgba => decoder.decode_rgba_raw(),
            _ => decoder.decode_rgb_raw(),
        }
        .map_err(corrupt)?
    };
    stop.check()?;
    Ok(Decoded {
        raster: Raster::new(out_width, out_height, layout, pixels),
        full_size: (width, height),
        icc,
        orientation,
    })
}
