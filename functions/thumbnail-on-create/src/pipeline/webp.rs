//! WebP through libwebp (webpx): decoded directly at the reduced size libwebp's scaler
//! produces, first frame of an animation, ICC profile and EXIF orientation kept.

use image::metadata::Orientation;

use super::raster::{Layout, Raster};
use super::{Decoded, PipelineError, check_pixels, shrink_on_load};

pub fn decode(source: &[u8], target: u32, max_pixels: u64) -> Result<Decoded, PipelineError> {
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
    let (pixels, out_width, out_height) = if info.has_animation {
        // libwebp's scaler does not apply to animations; their frames are small anyway.
        let mut frames = webpx::AnimationDecoder::new(source).map_err(corrupt)?;
        let frame = frames
            .next_frame()
            .map_err(corrupt)?
            .ok_or(PipelineError::Truncated("animated WebP"))?;
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
    Ok(Decoded {
        raster: Raster::new(out_width, out_height, layout, pixels),
        full_size: (width, height),
        icc,
        orientation,
    })
}
