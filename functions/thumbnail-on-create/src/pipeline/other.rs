//! GIF (first frame), BMP and TIFF through the `image` crate: dimensions checked from the
//! header before any pixel buffer exists, then a full decode (these formats have no
//! shrink-on-load) into one buffer at the file's own colour type and bit depth, brought down
//! to 8 bits in place rather than through a second copy.

use std::io::Cursor;

use bucketfn::budget::Stop;
use image::{ColorType, ExtendedColorType, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::raster::{Layout, Raster};
use super::{Decoded, Inspected, PipelineError, Shape, check_pixels};

/// TIFF compression methods whose chunks are read whole and decoded into a buffer of their
/// own (old-style and modern JPEG-in-TIFF).
const JPEG_COMPRESSIONS: [u16; 2] = [6, 7];

/// What a decode will allocate besides its output, and the most the decoder may allocate
/// itself (the `image` crate's allocation limit), from the header.
struct Costs {
    /// The decoder's output, at its own colour type and bit depth.
    output: u64,
    /// What the decoder allocates besides the output.
    internal: u64,
    /// The allocation limit handed to the decoder, so it cannot allocate more than counted.
    max_alloc: u64,
}

fn open<'a>(
    source: &'a [u8],
    format: ImageFormat,
    name: &'static str,
    max_pixels: u64,
    max_alloc: Option<u64>,
) -> Result<impl ImageDecoder + 'a, PipelineError> {
    let corrupt = |e: image::ImageError| PipelineError::corrupt(name, e);
    let mut reader = ImageReader::with_format(Cursor::new(source), format);
    let mut limits = Limits::default();
    if let Some(max_alloc) = max_alloc {
        limits.max_alloc = Some(max_alloc);
    }
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, max_pixels)?;
    Ok(decoder)
}

fn costs(source: &[u8], format: ImageFormat, decoder: &impl ImageDecoder) -> Costs {
    let output = decoder.total_bytes();
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    match format {
        ImageFormat::Tiff => {
            // The tiff crate decodes into a buffer of its own (CMYK keeps its four samples
            // there) that is copied into ours at the end.
            let own = output.max(
                pixels * u64::from(decoder.original_color_type().bits_per_pixel()).div_ceil(8),
            );
            let jpeg = tiff::decoder::Decoder::new(Cursor::new(source))
                .and_then(|mut tiff| tiff.find_tag_unsigned::<u16>(tiff::tags::Tag::Compression))
                .ok()
                .flatten()
                .is_some_and(|method| JPEG_COMPRESSIONS.contains(&method));
            // A JPEG-compressed chunk is read whole and decoded whole before it is copied in.
            let chunks = if jpeg { source.len() as u64 + own } else { 0 };
            Costs {
                output,
                internal: own + chunks,
                // The image crate gives the tiff crate this much for its buffer and the rest
                // for any one compressed chunk, which the file bounds.
                max_alloc: own + source.len() as u64,
            }
        }
        // A first frame that does not span the screen's width is decoded into a frame buffer
        // of its own, then placed.
        ImageFormat::Gif => Costs {
            output,
            internal: output,
            max_alloc: output,
        },
        _ => Costs {
            output,
            internal: 0,
            max_alloc: output,
        },
    }
}

fn colour_name(decoder: &impl ImageDecoder) -> String {
    let depth = match decoder.color_type() {
        ColorType::L16 | ColorType::La16 | ColorType::Rgb16 | ColorType::Rgba16 => "16-bit ",
        ColorType::Rgb32F | ColorType::Rgba32F => "32-bit float ",
        _ => "",
    };
    let colour = match decoder.original_color_type() {
        ExtendedColorType::Cmyk8 | ExtendedColorType::Cmyk16 => "CMYK",
        ExtendedColorType::L1 => "bilevel",
        _ => match decoder.color_type() {
            ColorType::L8 | ColorType::L16 => "grey",
            ColorType::La8 | ColorType::La16 => "grey and alpha",
            ColorType::Rgba8 | ColorType::Rgba16 | ColorType::Rgba32F => "RGBA",
            _ => "RGB",
        },
    };
    format!("{depth}{colour}")
}

/// The need of a decode, and the allocation limit to hand the decoder.
pub fn inspect(
    source: &[u8],
    format: ImageFormat,
    name: &'static str,
    max_pixels: u64,
) -> Result<(Inspected, u64), PipelineError> {
    let decoder = open(source, format, name, max_pixels, None)?;
    let (width, height) = decoder.dimensions();
    let costs = costs(source, format, &decoder);
    let layout = layout_of(decoder.color_type(), name)?;
    let colour = colour_name(&decoder);
    let inspected = Inspected {
        what: format!("the {colour} {name} {width}x{height}"),
        // The 8-bit raster takes the output's place.
        decoder: costs.output + costs.internal,
        raster: Shape {
            width: u64::from(width),
            height: u64::from(height),
            channels: layout.channels() as u64,
            alpha: layout.has_alpha(),
        },
        full_size: (width, height),
    };
    Ok((inspected, costs.max_alloc))
}

pub fn decode(
    source: &[u8],
    format: ImageFormat,
    name: &'static str,
    max_pixels: u64,
    max_alloc: u64,
    stop: &Stop,
) -> Result<Decoded, PipelineError> {
    let corrupt = |e: image::ImageError| PipelineError::corrupt(name, e);
    let mut decoder = open(source, format, name, max_pixels, Some(max_alloc))?;
    let (width, height) = decoder.dimensions();
    let color = decoder.color_type();
    let layout = layout_of(color, name)?;
    let icc = decoder.icc_profile().map_err(corrupt)?;
    let orientation = decoder.orientation().map_err(corrupt)?;
    let size =
        usize::try_from(decoder.total_bytes()).map_err(|_| PipelineError::TooManyPixels {
            width,
            height,
            limit: max_pixels,
        })?;
    stop.check()?;
    let mut pixels = vec![0; size];
    // One call decodes the whole image: the stop is looked at around it.
    decoder.read_image(&mut pixels).map_err(corrupt)?;
    stop.check()?;
    let pixels = to_eight_bits(pixels, color);
    Ok(Decoded {
        raster: Raster::new(width, height, layout, pixels),
        full_size: (width, height),
        icc,
        orientation,
    })
}

fn layout_of(color: ColorType, name: &'static str) -> Result<Layout, PipelineError> {
    match color {
        ColorType::L8 | ColorType::L16 => Ok(Layout::Gray),
        ColorType::La8 | ColorType::La16 => Ok(Layout::GrayAlpha),
        ColorType::Rgb8 | ColorType::Rgb16 | ColorType::Rgb32F => Ok(Layout::Rgb),
        ColorType::Rgba8 | ColorType::Rgba16 | ColorType::Rgba32F => Ok(Layout::Rgba),
        other => Err(PipelineError::Unsupported(format!(
            "{name} with {other:?} pixels"
        ))),
    }
}

/// Samples of `color` (native byte order) as 8-bit samples, in the same buffer: sample `i`
/// is written at `i`, never ahead of where samples are still to be read.
fn to_eight_bits(mut pixels: Vec<u8>, color: ColorType) -> Vec<u8> {
    let width = usize::from(color.bytes_per_pixel() / color.channel_count());
    if width == 1 {
        return pixels;
    }
    let samples = pixels.len() / width;
    for i in 0..samples {
        let bytes = &pixels[i * width..(i + 1) * width];
        let value = match bytes {
            // As the image crate rounds: v / 65535 * 255 = v / 257.
            [a, b] => ((u32::from(u16::from_ne_bytes([*a, *b])) + 128) / 257) as u8,
            [a, b, c, d] => {
                (f32::from_ne_bytes([*a, *b, *c, *d]).clamp(0.0, 1.0) * 255.0).round() as u8
            }
            _ => 0,
        };
        pixels[i] = value;
    }
    pixels.truncate(samples);
    pixels.shrink_to_fit();
    pixels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_and_float_samples_narrow_in_place_as_the_image_crate_rounds() {
        let sixteen: Vec<u8> = [0u16, 128, 129, 65535, 32896]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        assert_eq!(to_eight_bits(sixteen, ColorType::L16), [0, 0, 1, 255, 128]);
        let float: Vec<u8> = [-1.0f32, 0.5, 2.0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        assert_eq!(to_eight_bits(float, ColorType::Rgb32F), [0, 128, 255]);
        assert_eq!(to_eight_bits(vec![7, 8, 9], ColorType::Rgb8), [7, 8, 9]);
    }
}
