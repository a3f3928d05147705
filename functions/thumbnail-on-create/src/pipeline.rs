//! The image pipeline, pure and synchronous: sniff the format, check the pixel count from the
//! header before any pixel buffer exists, decode, orient, shrink to fit, flatten alpha onto
//! white, encode JPEG.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

/// What the pipeline makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The longest side of the output; smaller images are not enlarged.
    pub size: u32,
    pub quality: u8,
    /// Images with more pixels than this are refused before decoding.
    pub max_pixels: u64,
}

/// A finished thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Why an input cannot become a thumbnail. All of these are properties of the bytes, so none
/// is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("not an image format bucketfn can read (the data starts with {0})")]
    UnknownFormat(String),
    #[error("{0} images are not supported")]
    UnsupportedFormat(&'static str),
    #[error("the image is {width}x{height} = {pixels} pixels, over the limit of {limit}", pixels = u64::from(*.width) * u64::from(*.height))]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("the {format} image is corrupt or truncated")]
    Corrupt {
        format: &'static str,
        #[source]
        source: image::ImageError,
    },
    #[error("encoding the thumbnail failed")]
    Encode(#[source] image::ImageError),
}

pub fn make_thumbnail(source: &[u8], spec: Spec) -> Result<Thumbnail, PipelineError> {
    let format = sniff(source)?;
    let corrupt = |source| PipelineError::Corrupt {
        format: format_name(format),
        source,
    };
    let reader = ImageReader::with_format(Cursor::new(source), format);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > spec.max_pixels {
        return Err(PipelineError::TooManyPixels {
            width,
            height,
            limit: spec.max_pixels,
        });
    }
    let orientation = decoder.orientation().map_err(corrupt)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);

    if image.width() > spec.size || image.height() > spec.size {
        image = image.thumbnail(spec.size, spec.size);
    }
    let rgb = flatten_onto_white(image);
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, spec.quality)
        .encode_image(&rgb)
        .map_err(PipelineError::Encode)?;
    Ok(Thumbnail {
        jpeg,
        width: rgb.width(),
        height: rgb.height(),
    })
}

/// The format from the first bytes, never from the key: names lie, magic numbers do not.
fn sniff(source: &[u8]) -> Result<ImageFormat, PipelineError> {
    if is_heif(source) {
        return Err(PipelineError::UnsupportedFormat("HEIC/HEIF"));
    }
    match image::guess_format(source) {
        Ok(format) if format.reading_enabled() => Ok(format),
        Ok(format) => Err(PipelineError::UnsupportedFormat(format_name(format))),
        Err(_) => Err(PipelineError::UnknownFormat(signature(source))),
    }
}

/// HEIF files are ISO-BMFF boxes whose `ftyp` brand names the codec.
fn is_heif(source: &[u8]) -> bool {
    source.get(4..8) == Some(b"ftyp")
        && source.get(8..12).is_some_and(|brand| {
            matches!(
                brand,
                b"heic" | b"heix" | b"hevc" | b"hevx" | b"mif1" | b"msf1"
            )
        })
}

fn signature(source: &[u8]) -> String {
    if source.is_empty() {
        return "nothing: the object is empty".to_owned();
    }
    let hex: Vec<String> = source.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("bytes {}", hex.join(" "))
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::Gif => "GIF",
        ImageFormat::WebP => "WebP",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Avif => "AVIF",
        ImageFormat::Ico => "ICO",
        ImageFormat::Tga => "TGA",
        ImageFormat::Dds => "DDS",
        ImageFormat::Hdr => "Radiance HDR",
        ImageFormat::OpenExr => "OpenEXR",
        ImageFormat::Pnm => "PNM",
        ImageFormat::Farbfeld => "Farbfeld",
        ImageFormat::Qoi => "QOI",
        _ => "this kind of",
    }
}

/// JPEG has no alpha: composite onto white so transparent areas do not turn black.
fn flatten_onto_white(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    let mut rgb = RgbImage::new(width, height);
    for (out, px) in rgb.pixels_mut().zip(rgba.pixels()) {
        let alpha = u32::from(px[3]);
        for c in 0..3 {
            let blended = (u32::from(px[c]) * alpha + 255 * (255 - alpha) + 127) / 255;
            out[c] = blended as u8;
        }
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgba, RgbaImage};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const SPEC: Spec = Spec {
        size: 64,
        quality: 85,
        max_pixels: 10_000_000,
    };

    fn encode(image: &DynamicImage, format: ImageFormat) -> Result<Vec<u8>, image::ImageError> {
        let mut bytes = Vec::new();
        image.write_to(&mut Cursor::new(&mut bytes), format)?;
        Ok(bytes)
    }

    fn gradient(width: u32, height: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(ImageBuffer::from_fn(width, height, |x, y| {
            image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
        }))
    }

    #[test]
    fn fits_the_longest_side_and_keeps_the_aspect_ratio() -> TestResult {
        let png = encode(&gradient(400, 200), ImageFormat::Png)?;
        let thumb = make_thumbnail(&png, SPEC)?;
        assert_eq!((thumb.width, thumb.height), (64, 32));
        let decoded = image::load_from_memory_with_format(&thumb.jpeg, ImageFormat::Jpeg)?;
        assert_eq!((decoded.width(), decoded.height()), (64, 32));
        Ok(())
    }

    #[test]
    fn small_images_are_not_enlarged() -> TestResult {
        let gif = encode(&gradient(20, 10), ImageFormat::Gif)?;
        let thumb = make_thumbnail(&gif, SPEC)?;
        assert_eq!((thumb.width, thumb.height), (20, 10));
        Ok(())
    }

    #[test]
    fn transparency_becomes_white_not_black() -> TestResult {
        let clear: RgbaImage = ImageBuffer::from_pixel(8, 8, Rgba([0, 0, 0, 0]));
        let png = encode(&DynamicImage::ImageRgba8(clear), ImageFormat::Png)?;
        let thumb = make_thumbnail(&png, SPEC)?;
        let decoded = image::load_from_memory(&thumb.jpeg)?.into_rgb8();
        assert!(
            decoded.pixels().all(|p| p.0.iter().all(|&c| c > 245)),
            "not white"
        );
        Ok(())
    }

    #[test]
    fn pixel_limit_is_checked_from_the_header() -> TestResult {
        let png = encode(&gradient(200, 100), ImageFormat::Png)?;
        let spec = Spec {
            max_pixels: 19_999,
            ..SPEC
        };
        let err = make_thumbnail(&png, spec).err().ok_or("accepted")?;
        assert_eq!(
            err.to_string(),
            "the image is 200x100 = 20000 pixels, over the limit of 19999"
        );
        Ok(())
    }

    #[test]
    fn corrupt_and_foreign_inputs_are_named() -> TestResult {
        let mut png = encode(&gradient(100, 100), ImageFormat::Png)?;
        png.truncate(png.len() / 2);
        let err = make_thumbnail(&png, SPEC)
            .err()
            .ok_or("truncated accepted")?;
        assert!(err.to_string().contains("PNG image is corrupt"), "{err}");

        let err = make_thumbnail(b"%PDF-1.7 ...", SPEC)
            .err()
            .ok_or("pdf accepted")?;
        assert!(err.to_string().contains("25 50 44 46"), "{err}");

        let heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic";
        let err = make_thumbnail(heic, SPEC).err().ok_or("heic accepted")?;
        assert_eq!(err.to_string(), "HEIC/HEIF images are not supported");

        let err = make_thumbnail(b"", SPEC).err().ok_or("empty accepted")?;
        assert!(err.to_string().contains("the object is empty"), "{err}");
        Ok(())
    }
}
