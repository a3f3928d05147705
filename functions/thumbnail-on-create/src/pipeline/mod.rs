//! The image pipeline, pure and synchronous: sniff the format; from the header alone, check
//! the pixel count and the structure and compute what the decode will need in memory
//! ([`decode_need`]), before any pixel buffer exists; decode already shrunk where the format
//! allows (JPEG DCT scaling, WebP scaled decoding, PNG row-by-row box shrinking), leaving at
//! least twice the largest thumbnail for the final Lanczos3 resize; then per size: resize,
//! convert to sRGB, turn upright, encode. Long loops look at a [`Stop`] and end early.

mod color;
mod embedded_preview;
mod encode;
#[cfg(test)]
pub(crate) mod hostile;
mod jpeg;
mod jpeg_progressive;
mod markers;
mod orient;
mod other;
mod png;
mod raster;
mod resize;
mod shrink;
mod webp;

use std::panic::{AssertUnwindSafe, catch_unwind};

use bucketfn::budget::{Stop, Stopped};
use image::ImageFormat;
use image::metadata::Orientation;

pub use jpeg::MAX_SCANS;
use raster::Raster;

/// A thumbnail file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Jpeg,
    Png,
    Webp,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::Webp => "webp",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
        }
    }
}

impl std::str::FromStr for OutputFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Ok(Self::Jpeg),
            "png" => Ok(Self::Png),
            "webp" => Ok(Self::Webp),
            _ => Err("expected jpeg, png or webp".to_owned()),
        }
    }
}

/// What to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Longest side of each thumbnail, in pixels.
    pub sizes: Vec<u32>,
    pub format: OutputFormat,
    /// JPEG and WebP quality, 1-100.
    pub quality: u8,
    /// What transparency becomes in a JPEG.
    pub background: [u8; 3],
    /// Whether images smaller than a size are enlarged to it.
    pub upscale: bool,
    /// Images with more pixels are refused from their header.
    pub max_pixels: u64,
    /// Whether a camera JPEG's embedded preview may stand in for the photo.
    pub embedded_previews: bool,
}

/// One finished thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// The size it was made for (its longest side, unless the source was smaller).
    pub size: u32,
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
}

/// What making the thumbnails of an image will hold in memory at its peak, computed from the
/// header before any pixel buffer exists: the source, fixed state, and the larger of the
/// decode (the decoder's buffers and its output) and the resize (the decoded raster and the
/// working set of the largest thumbnail, plus the encoded bytes of all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The image as a person would name it: "the progressive CMYK JPEG 10000x10000".
    pub what: String,
    /// Bytes at the peak.
    pub bytes: u64,
}

/// Why an input cannot become a thumbnail. All but [`PipelineError::Stopped`] are properties
/// of the bytes (or of this build), so none of those is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("not an image format bucketfn can read (the data starts with {0})")]
    UnknownFormat(String),
    #[error("{0} images are not supported")]
    UnsupportedFormat(&'static str),
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("the image is {width}x{height} = {pixels} pixels, over the limit of {limit}", pixels = u64::from(*.width) * u64::from(*.height))]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("the {0} data is truncated")]
    Truncated(&'static str),
    /// A scan whose data ends before its blocks do; libjpeg would pad it with grey.
    #[error("the JPEG data is truncated: scan {scan} {detail}")]
    TruncatedScan { scan: usize, detail: String },
    /// Each scan of a progressive JPEG is a pass over the whole image.
    #[error(
        "the JPEG has more than {limit} scans, the most a JPEG may have (each scan is a pass over the whole image)"
    )]
    TooManyScans { limit: usize },
    #[error("the {format} image is corrupt: {message}")]
    Corrupt {
        format: &'static str,
        message: String,
    },
    #[error("resizing failed: {0}")]
    Resize(String),
    #[error("colour conversion failed: {0}")]
    Colour(String),
    #[error("encoding the {0} thumbnail failed: {1}")]
    Encode(&'static str, String),
    /// The deadline passed, or whoever waited gave up: the same work may finish next time.
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

impl PipelineError {
    fn corrupt(format: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Corrupt {
            format,
            message: error.to_string(),
        }
    }
}

/// What a decoder hands on: pixels (possibly already shrunk), the source's full size, its
/// colour profile and its orientation.
struct Decoded {
    raster: Raster,
    full_size: (u32, u32),
    icc: Option<Vec<u8>>,
    orientation: Orientation,
}

/// The size of a raster a decoder will hand on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    width: u64,
    height: u64,
    channels: u64,
    alpha: bool,
}

impl Shape {
    fn bytes(self) -> u64 {
        self.width * self.height * self.channels
    }
}

/// What a decoder tells from the header: the image's name, the bytes it will hold at its peak
/// (its output included), the raster it hands on and the image's full size.
struct Inspected {
    what: String,
    decoder: u64,
    raster: Shape,
    full_size: (u32, u32),
}

/// What the decode of one format needs to know from the inspection.
enum Header {
    Jpeg(jpeg::Walked),
    Png,
    Webp,
    /// GIF, BMP, TIFF through the `image` crate, with the allocation limit for its decoder.
    Other {
        format: ImageFormat,
        name: &'static str,
        max_alloc: u64,
    },
}

/// Decoder tables and pools, the encoders' fixed state, and colour transforms (a CMYK
/// profile's tables take a few MiB while they are built).
const FIXED_BYTES: u64 = 4 * 1024 * 1024;
/// Per thumbnail pixel after the resize: the sRGB copy, the turned copy, the flattened copy for
/// JPEG, the encoder's working memory (libjpeg's coefficients with optimised Huffman tables,
/// libwebp's YUV planes and alpha coder), the encoded bytes.
const THUMBNAIL_BYTES_PER_PIXEL: u64 = 32;
/// The encoded bytes of a thumbnail kept until all sizes are made: at most its raw pixels.
const KEPT_BYTES_PER_PIXEL: u64 = 4;

/// What making the thumbnails of `source` for `spec` will need in memory, from its header
/// alone; refuses, from the header too, what cannot be decoded (too many pixels or scans,
/// truncated, corrupt).
pub fn decode_need(source: &[u8], spec: &Spec) -> Result<Need, PipelineError> {
    inspect(source, spec).map(|(_, need)| need)
}

fn inspect(source: &[u8], spec: &Spec) -> Result<(Header, Need), PipelineError> {
    let target = target(spec);
    let max_pixels = spec.max_pixels;
    let (header, inspected) = match sniff(source)? {
        ImageFormat::Jpeg => {
            let (walked, inspected) =
                jpeg::inspect(source, target, max_pixels, spec.embedded_previews)?;
            (Header::Jpeg(walked), inspected)
        }
        ImageFormat::Png => (Header::Png, png::inspect(source, target, max_pixels)?),
        ImageFormat::WebP => (Header::Webp, webp::inspect(source, target, max_pixels)?),
        format @ (ImageFormat::Gif | ImageFormat::Bmp | ImageFormat::Tiff) => {
            let name = format_name(format);
            let (inspected, max_alloc) = other::inspect(source, format, name, max_pixels)?;
            let header = Header::Other {
                format,
                name,
                max_alloc,
            };
            (header, inspected)
        }
        other => return Err(PipelineError::UnsupportedFormat(format_name(other))),
    };
    // The decoder's buffers are gone by the time the resize starts; the source stays.
    let resize =
        inspected.raster.bytes() + thumbnail_bytes(inspected.raster, inspected.full_size, spec);
    let bytes = source.len() as u64 + FIXED_BYTES + inspected.decoder.max(resize);
    let need = Need {
        what: inspected.what,
        bytes,
    };
    Ok((header, need))
}

/// The resize and encode working set: sizes are made one after another, so the largest one
/// counts, plus the encoded bytes of all of them.
fn thumbnail_bytes(raster: Shape, full: (u32, u32), spec: &Spec) -> u64 {
    let (mut peak, mut kept) = (0, 0);
    for &size in &spec.sizes {
        let (width, height) = fit(full, size, spec.upscale);
        let (width, height) = (u64::from(width), u64::from(height));
        let resize = if (raster.width, raster.height) == (width, height) {
            raster.bytes()
        } else {
            // The output, the convolution's intermediate (one pass done), and with alpha a
            // premultiplied copy of the source raster.
            let intermediate = (width * raster.height).max(raster.width * height);
            let premultiplied = if raster.alpha { raster.bytes() } else { 0 };
            (width * height + intermediate) * raster.channels + premultiplied
        };
        peak = u64::max(peak, resize + width * height * THUMBNAIL_BYTES_PER_PIXEL);
        kept += width * height * KEPT_BYTES_PER_PIXEL;
    }
    peak + kept
}

fn target(spec: &Spec) -> u32 {
    spec.sizes.iter().copied().max().unwrap_or(1)
}

/// Makes one thumbnail per size in `spec`, from a single decode, unless `stop` says to stop
/// first (then [`PipelineError::Stopped`], and nothing is made).
pub fn make_thumbnails(
    source: &[u8],
    spec: &Spec,
    stop: &Stop,
) -> Result<Vec<Thumbnail>, PipelineError> {
    // libjpeg reports fatal errors by unwinding (mozjpeg turns them into panics with a
    // message); they are corrupt input, not bugs, or the stop, which a read refuses.
    catch_unwind(AssertUnwindSafe(|| make(source, spec, stop))).unwrap_or_else(|panic| {
        if stop.is_stopped() {
            return Err(PipelineError::Stopped(Stopped));
        }
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "the decoder stopped".to_owned());
        Err(PipelineError::Corrupt {
            format: "image",
            message,
        })
    })
}

fn make(source: &[u8], spec: &Spec, stop: &Stop) -> Result<Vec<Thumbnail>, PipelineError> {
    stop.check()?;
    let (header, _) = inspect(source, spec)?;
    let target = target(spec);
    let max_pixels = spec.max_pixels;
    let decoded = match &header {
        Header::Jpeg(walked) => walked.decode(source, target, stop)?,
        Header::Png => png::decode(source, target, max_pixels, stop)?,
        Header::Webp => webp::decode(source, target, max_pixels, stop)?,
        Header::Other {
            format,
            name,
            max_alloc,
        } => other::decode(source, *format, name, max_pixels, *max_alloc, stop)?,
    };
    let mut thumbnails = Vec::with_capacity(spec.sizes.len());
    for &size in &spec.sizes {
        stop.check()?;
        let (width, height) = fit(decoded.full_size, size, spec.upscale);
        let resized = resize::resize(&decoded.raster, width, height)?;
        stop.check()?;
        let srgb = color::to_srgb(resized, decoded.icc.as_deref())?;
        let image = orient::upright(srgb, decoded.orientation)?;
        stop.check()?;
        let bytes = encode::encode(&image, spec.format, spec.quality, spec.background)?;
        thumbnails.push(Thumbnail {
            size,
            width: image.width(),
            height: image.height(),
            bytes,
        });
    }
    Ok(thumbnails)
}

/// The size of the thumbnail of a `full` image for `size`: the longest side becomes `size`
/// (rotation does not change which side that is), or stays as it is when smaller and
/// `upscale` is off.
fn fit(full: (u32, u32), size: u32, upscale: bool) -> (u32, u32) {
    let (width, height) = full;
    let longest = width.max(height);
    if longest <= size && !upscale {
        return (width, height);
    }
    let scale = f64::from(size) / f64::from(longest);
    let side = |n: u32| ((f64::from(n) * scale).round() as u32).max(1);
    (side(width), side(height))
}

/// By how much a decoder may shrink while loading: as much as leaves at least twice the
/// target for the final resize (what libvips does), never less than 1.
fn shrink_on_load(longest: u32, target: u32) -> u32 {
    let factor = longest / target.saturating_mul(2).max(1);
    if factor < 2 {
        return 1;
    }
    // Powers of two keep JPEG's 1/2, 1/4, 1/8 and the box shrinker's blocks aligned.
    1 << factor.ilog2()
}

fn check_pixels(width: u32, height: u32, limit: u64) -> Result<(), PipelineError> {
    if width == 0 || height == 0 {
        return Err(PipelineError::Corrupt {
            format: "image",
            message: format!("the header claims {width}x{height} pixels"),
        });
    }
    if u64::from(width) * u64::from(height) > limit {
        return Err(PipelineError::TooManyPixels {
            width,
            height,
            limit,
        });
    }
    Ok(())
}

/// The format from the first bytes, never from the key: names lie, magic numbers do not.
fn sniff(source: &[u8]) -> Result<ImageFormat, PipelineError> {
    if is_heif(source) {
        return Err(PipelineError::UnsupportedFormat("HEIC/HEIF"));
    }
    image::guess_format(source).map_err(|_| PipelineError::UnknownFormat(signature(source)))
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
        ImageFormat::Gif => "GIF",
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

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, GenericImageView, Rgb, RgbImage, Rgba, RgbaImage};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A CMYK JPEG with an embedded SWOP profile, committed with its source and licence in
    /// `fixtures/NOTICE.md`: no crate here writes such a LUT-based profile.
    const CMYK_SWOP: &[u8] = include_bytes!("../../fixtures/cmyk_swop_profile_500x333.jpg");

    /// The pipeline as the handler runs it; every test goes through here.
    fn thumbnails(source: &[u8], spec: &Spec) -> Result<Vec<Thumbnail>, PipelineError> {
        make_thumbnails(source, spec, &Stop::default())
    }

    /// A photo-like image with content in every direction: a red block at the top left,
    /// gradients across and down, and a disc off centre, so that any turn or mirror shows.
    fn scene(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            let (fx, fy) = (x as f64 / width as f64, y as f64 / height as f64);
            if fx < 0.2 && fy < 0.25 {
                return Rgb([220, 30, 30]);
            }
            let (dx, dy) = (fx - 0.7, fy - 0.6);
            if dx.hypot(dy) < 0.15 {
                return Rgb([30, 40, 200]);
            }
            Rgb([(fx * 200.0) as u8 + 30, (fy * 180.0) as u8 + 40, 120])
        })
    }

    /// Encodes with libjpeg (mozjpeg): baseline unless `progressive`, with extra markers.
    fn jpeg(
        pixels: &[u8],
        (width, height): (u32, u32),
        colour: mozjpeg::ColorSpace,
        progressive: bool,
        markers: &[(mozjpeg::Marker, Vec<u8>)],
        icc: Option<&[u8]>,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let mut compress = mozjpeg::Compress::new(colour);
        compress.set_fastest_defaults();
        if progressive {
            compress.set_progressive_mode();
        }
        compress.set_size(width as usize, height as usize);
        compress.set_quality(92.0);
        let mut started = compress.start_compress(Vec::new())?;
        for (marker, data) in markers {
            started.write_marker(*marker, data);
        }
        if let Some(profile) = icc {
            started.write_icc_profile(profile);
        }
        started.write_scanlines(pixels)?;
        Ok(started.finish()?)
    }

    fn rgb_jpeg(image: &RgbImage) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        jpeg(
            image.as_raw(),
            image.dimensions(),
            mozjpeg::ColorSpace::JCS_RGB,
            false,
            &[],
            None,
        )
    }

    /// An EXIF APP1 payload holding only the orientation tag (TIFF, big-endian, one IFD entry
    /// of type SHORT), as cameras write it.
    fn exif_orientation(value: u8) -> Vec<u8> {
        let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
        exif.extend_from_slice(&[0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, value, 0, 0]);
        exif.extend_from_slice(&[0, 0, 0, 0]);
        exif
    }

    /// What a camera stores for the upright `view` under EXIF orientation `n`: the TIFF 6.0
    /// definition of tag 274 says where the stored row 0 and column 0 are in the view (1: top,
    /// left; 2: top, right; 3: bottom, right; 4: bottom, left; 5: left, top; 6: right, top;
    /// 7: right, bottom; 8: left, bottom). Written out pixel by pixel, independently of the
    /// pipeline's own orientation code.
    fn stored_for_orientation(view: &RgbImage, n: u8) -> RgbImage {
        let (w, h) = view.dimensions();
        let at = |x: u32, y: u32| *view.get_pixel(x, y);
        match n {
            2 => RgbImage::from_fn(w, h, |x, y| at(w - 1 - x, y)),
            3 => RgbImage::from_fn(w, h, |x, y| at(w - 1 - x, h - 1 - y)),
            4 => RgbImage::from_fn(w, h, |x, y| at(x, h - 1 - y)),
            5 => RgbImage::from_fn(h, w, |x, y| at(y, x)),
            6 => RgbImage::from_fn(h, w, |x, y| at(w - 1 - y, x)),
            7 => RgbImage::from_fn(h, w, |x, y| at(w - 1 - y, h - 1 - x)),
            8 => RgbImage::from_fn(h, w, |x, y| at(y, h - 1 - x)),
            _ => view.clone(),
        }
    }

    /// A header that declares `width`x`height`, on a real 8x8 JPEG: what a decompression bomb
    /// looks like to a header check.
    fn jpeg_declaring(
        width: u16,
        height: u16,
        colour: mozjpeg::ColorSpace,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let channels = if colour == mozjpeg::ColorSpace::JCS_GRAYSCALE {
            1
        } else {
            3
        };
        let mut bytes = jpeg(&vec![128; 64 * channels], (8, 8), colour, false, &[], None)?;
        let sof = bytes
            .windows(2)
            .position(|pair| pair == [0xFF, 0xC0])
            .ok_or("no SOF0 marker")?;
        // SOF0: marker, length (2), precision (1), height (2), width (2).
        bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        Ok(bytes)
    }

    fn spec(sizes: &[u32], format: OutputFormat) -> Spec {
        Spec {
            sizes: sizes.to_vec(),
            format,
            quality: 90,
            ..Spec::from(&crate::Config::default())
        }
    }

    fn one(source: &[u8]) -> Result<DynamicImage, Box<dyn std::error::Error>> {
        let thumbnails = thumbnails(source, &spec(&[256], OutputFormat::Jpeg))?;
        Ok(image::load_from_memory(&thumbnails[0].bytes)?)
    }

    /// Mean sRGB of each cell of a 4x4 grid.
    fn grid(image: &DynamicImage) -> Vec<[f64; 3]> {
        let rgb = image.to_rgb8();
        let (w, h) = rgb.dimensions();
        let mut cells = Vec::new();
        for gy in 0..4 {
            for gx in 0..4 {
                let (x0, x1, y0, y1) = (gx * w / 4, (gx + 1) * w / 4, gy * h / 4, (gy + 1) * h / 4);
                let mut sum = [0.0; 3];
                for y in y0..y1 {
                    for x in x0..x1 {
                        for (c, s) in sum.iter_mut().enumerate() {
                            *s += f64::from(rgb.get_pixel(x, y)[c]);
                        }
                    }
                }
                let n = f64::from((x1 - x0) * (y1 - y0));
                cells.push(sum.map(|s| s / n));
            }
        }
        cells
    }

    /// CIE L*a*b* (D65) of an sRGB colour.
    fn lab([r, g, b]: [f64; 3]) -> [f64; 3] {
        let linear = |c: f64| {
            let c = c / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        let (r, g, b) = (linear(r), linear(g), linear(b));
        let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
        let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
        let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
        let f = |t: f64| {
            if t > 0.008856 {
                t.cbrt()
            } else {
                7.787 * t + 16.0 / 116.0
            }
        };
        [
            116.0 * f(y) - 16.0,
            500.0 * (f(x) - f(y)),
            200.0 * (f(y) - f(z)),
        ]
    }

    /// Mean CIE76 colour difference between two grids.
    fn mean_delta_e(a: &[[f64; 3]], b: &[[f64; 3]]) -> f64 {
        let total: f64 = a
            .iter()
            .zip(b)
            .map(|(p, q)| {
                let (p, q) = (lab(*p), lab(*q));
                ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt()
            })
            .sum();
        total / a.len() as f64
    }

    /// The JPEG without its ICC profile (APP2 segments), as a tool that strips metadata makes.
    fn without_icc(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut at = 2;
        while at + 4 <= jpeg.len() && jpeg[at] == 0xFF && jpeg[at + 1] != 0xDA {
            let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
            if jpeg[at + 1] != 0xE2 {
                out.extend_from_slice(&jpeg[at..at + 2 + length]);
            }
            at += 2 + length;
        }
        out.extend_from_slice(&jpeg[at..]);
        out
    }

    // Reference: the 4x4 grid means of libvips 8.14's `thumbnail(file, 256,
    // export_profile="srgb")` of the committed CMYK fixture (LittleCMS 2 importing the
    // embedded profile, exporting sRGB), computed with pyvips in November 2026. LUT-based CMYK
    // profiles differ between engines (moxcms here, LittleCMS there; we measured a mean CIE76
    // difference of 3.2, at most 5.1 in one cell), so CMYK is held to a mean under 5.
    const VIPS_CMYK_SWOP: [[f64; 3]; 16] = [
        [114.5, 112.5, 115.1],
        [123.2, 121.3, 122.7],
        [108.5, 108.5, 111.3],
        [122.7, 124.5, 128.7],
        [110.4, 106.8, 100.6],
        [106.3, 106.0, 102.0],
        [93.2, 93.2, 95.5],
        [109.2, 106.3, 100.8],
        [113.9, 129.2, 82.0],
        [113.8, 127.7, 90.9],
        [106.5, 104.5, 99.1],
        [162.5, 165.6, 148.2],
        [117.4, 119.2, 103.8],
        [119.8, 124.6, 123.8],
        [134.5, 134.1, 138.2],
        [171.1, 168.6, 170.3],
    ];

    #[test]
    fn cmyk_with_its_profile_matches_the_reference() -> TestResult {
        let image = one(CMYK_SWOP)?;
        assert_eq!(image.dimensions(), (256, 170));
        let delta = mean_delta_e(&grid(&image), &VIPS_CMYK_SWOP);
        assert!(delta < 5.0, "mean ΔE {delta:.2}");
        Ok(())
    }

    #[test]
    fn cmyk_without_a_profile_goes_through_the_standard_press_profile() -> TestResult {
        let image = one(&without_icc(CMYK_SWOP))?;
        // FOGRA39 is not SWOP, but both describe coated offset printing.
        let delta = mean_delta_e(&grid(&image), &VIPS_CMYK_SWOP);
        assert!(delta < 8.0, "mean ΔE {delta:.2}");
        Ok(())
    }

    /// An sRGB colour, 0-255 per channel.
    type Colour = [f64; 3];

    /// The matrix from linear RGB to CIE XYZ of RGB primaries with a D65 white point, by the
    /// construction in SMPTE RP 177: scale the primaries' XYZ so that (1, 1, 1) is the white.
    fn rgb_to_xyz(primaries: [(f64, f64); 3]) -> [[f64; 3]; 3] {
        let (wx, wy) = (0.3127, 0.3290);
        let white = [wx / wy, 1.0, (1.0 - wx - wy) / wy];
        let columns = primaries.map(|(x, y)| [x / y, 1.0, (1.0 - x - y) / y]);
        let p = [
            [columns[0][0], columns[1][0], columns[2][0]],
            [columns[0][1], columns[1][1], columns[2][1]],
            [columns[0][2], columns[1][2], columns[2][2]],
        ];
        let s = solve(p, white);
        p.map(|row| [row[0] * s[0], row[1] * s[1], row[2] * s[2]])
    }

    /// `m x = v` by Cramer's rule (3x3 is all this needs).
    fn solve(m: [[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
        let det = |m: [[f64; 3]; 3]| {
            m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
        };
        let d = det(m);
        [0, 1, 2].map(|c| {
            let mut replaced = m;
            for (row, value) in replaced.iter_mut().zip(v) {
                row[c] = value;
            }
            det(replaced) / d
        })
    }

    /// The sRGB transfer function (IEC 61966-2-1), which Display P3 shares.
    fn to_linear(c: f64) -> f64 {
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    }

    fn from_linear(c: f64) -> f64 {
        if c <= 0.0031308 {
            c * 12.92
        } else {
            1.055 * c.powf(1.0 / 2.4) - 0.055
        }
    }

    /// Sixteen saturated sRGB colours (inside sRGB, so inside P3), as a 4x4 grid of patches
    /// encoded in Display P3 with its ICC profile. Returns the JPEG and the sRGB colours, which
    /// are the reference: the P3 values come from the published primaries (sRGB: IEC
    /// 61966-2-1; Display P3: SMPTE EG 432-1 primaries, D65 white, sRGB transfer), not from a
    /// colour engine.
    fn display_p3_patches() -> Result<(Vec<u8>, Vec<Colour>), Box<dyn std::error::Error>> {
        let srgb = rgb_to_xyz([(0.64, 0.33), (0.30, 0.60), (0.15, 0.06)]);
        let p3 = rgb_to_xyz([(0.680, 0.320), (0.265, 0.690), (0.150, 0.060)]);
        let colours: Vec<Colour> = (0..16)
            .map(|i| {
                let hue = f64::from(i) / 16.0 * std::f64::consts::TAU;
                let channel = |shift: f64| 128.0 + 110.0 * (hue + shift).cos();
                [channel(0.0), channel(2.1), channel(4.2)].map(f64::round)
            })
            .collect();
        let encoded: Vec<[u8; 3]> = colours
            .iter()
            .map(|c| {
                let linear = c.map(|v| to_linear(v / 255.0));
                let xyz = [0, 1, 2].map(|r| (0..3).map(|k| srgb[r][k] * linear[k]).sum::<f64>());
                solve(p3, xyz).map(|v| (from_linear(v.clamp(0.0, 1.0)) * 255.0).round() as u8)
            })
            .collect();
        let image = RgbImage::from_fn(512, 512, |x, y| {
            Rgb(encoded[(y / 128 * 4 + x / 128) as usize])
        });
        let profile = moxcms::ColorProfile::new_display_p3().encode()?;
        let bytes = jpeg(
            image.as_raw(),
            image.dimensions(),
            mozjpeg::ColorSpace::JCS_RGB,
            false,
            &[],
            Some(&profile),
        )?;
        Ok((bytes, colours))
    }

    #[test]
    fn display_p3_is_converted_and_ignoring_the_profile_would_show() -> TestResult {
        let (source, reference) = display_p3_patches()?;
        // A matrix profile converts alike in any colour engine: a mean CIE76 difference under
        // 3 is at the threshold of what people notice side by side.
        let converted = mean_delta_e(&grid(&one(&source)?), &reference);
        let ignored = mean_delta_e(&grid(&one(&without_icc(&source))?), &reference);
        assert!(converted < 3.0, "mean ΔE {converted:.2}");
        assert!(
            ignored > converted + 3.0,
            "the reference cannot tell: ignored {ignored:.2}, converted {converted:.2}"
        );
        Ok(())
    }

    #[test]
    fn every_exif_orientation_comes_out_upright_and_identical() -> TestResult {
        let view = scene(900, 600);
        let upright = one(&rgb_jpeg(&view)?)?.to_rgb8();
        assert_eq!(upright.dimensions(), (256, 171));
        // The red block stays at the top left.
        let corner = upright.get_pixel(10, 10);
        assert!(corner[0] > 180 && corner[1] < 80, "top left is {corner:?}");
        for n in 1..=8 {
            let stored = stored_for_orientation(&view, n);
            let source = jpeg(
                stored.as_raw(),
                stored.dimensions(),
                mozjpeg::ColorSpace::JCS_RGB,
                false,
                &[(mozjpeg::Marker::APP(1), exif_orientation(n))],
                None,
            )?;
            let image = one(&source)?.to_rgb8();
            assert_eq!(image.dimensions(), (256, 171), "orientation {n}");
            let diff: f64 = image
                .as_raw()
                .iter()
                .zip(upright.as_raw())
                .map(|(a, b)| f64::from(a.abs_diff(*b)))
                .sum::<f64>()
                / image.as_raw().len() as f64;
            assert!(
                diff < 4.0,
                "orientation {n} differs from the upright image by {diff:.2} per channel"
            );
        }
        Ok(())
    }

    /// Whether an image has content: its cells differ in lightness.
    fn assert_not_flat(image: &DynamicImage) {
        let cells = grid(image);
        let spread = cells.iter().map(|c| c[0]).fold(0.0, f64::max)
            - cells.iter().map(|c| c[0]).fold(255.0, f64::min);
        assert!(spread > 20.0, "a flat image came out: {cells:?}");
    }

    #[test]
    fn progressive_jpeg_and_lossy_webp_decode_shrunk() -> TestResult {
        let photo = scene(2816, 1584);
        let progressive = jpeg(
            photo.as_raw(),
            photo.dimensions(),
            mozjpeg::ColorSpace::JCS_RGB,
            true,
            &[],
            None,
        )?;
        let image = one(&progressive)?;
        assert_eq!(image.dimensions(), (256, 144));
        assert_not_flat(&image);

        let square = scene(1024, 1024);
        let webp = webpx::Encoder::new_rgb(square.as_raw(), 1024, 1024)
            .quality(80.0)
            .encode(webpx::Unstoppable)
            .map_err(|e| e.to_string())?;
        let image = one(&webp)?;
        assert_eq!(image.dimensions(), (256, 256));
        assert_not_flat(&image);
        Ok(())
    }

    #[test]
    fn animated_gif_gives_its_first_frame() -> TestResult {
        // Two frames with transparency: a red square on nothing, then a blue one.
        let frame = |colour: [u8; 4]| {
            RgbaImage::from_fn(80, 80, |x, y| {
                if (20..60).contains(&x) && (20..60).contains(&y) {
                    Rgba(colour)
                } else {
                    Rgba([0, 0, 0, 0])
                }
            })
        };
        let mut source = Vec::new();
        {
            let mut encoder = image::codecs::gif::GifEncoder::new(&mut source);
            encoder.set_repeat(image::codecs::gif::Repeat::Infinite)?;
            encoder.encode_frames(
                [[220, 20, 20, 255], [20, 20, 220, 255]].map(|c| image::Frame::new(frame(c))),
            )?;
        }
        let thumbnails = thumbnails(&source, &spec(&[256], OutputFormat::Png))?;
        let ours = image::load_from_memory(&thumbnails[0].bytes)?.to_rgba8();
        let first = image::load_from_memory_with_format(&source, ImageFormat::Gif)?.to_rgba8();
        assert_eq!(ours.dimensions(), (80, 80), "no upscaling");
        assert_eq!(ours, first);
        assert_eq!(ours.get_pixel(40, 40).0, [220, 20, 20, 255]);
        Ok(())
    }

    #[test]
    fn animated_webp_gives_its_first_frame() -> TestResult {
        let (red, blue) = ([220u8, 20, 20, 255], [20u8, 20, 220, 255]);
        let mut animation =
            webpx::AnimationEncoder::new(64, 48).map_err(|e| e.error().to_string())?;
        animation.set_lossless(true);
        for (colour, at) in [(red, 0), (blue, 100)] {
            let frame: Vec<u8> = colour.repeat(64 * 48);
            animation
                .add_frame_rgba(&frame, at)
                .map_err(|e| e.error().to_string())?;
        }
        let source = animation.finish(200).map_err(|e| e.error().to_string())?;
        let thumbnails = thumbnails(&source, &spec(&[256], OutputFormat::Png))?;
        let image = image::load_from_memory(&thumbnails[0].bytes)?.to_rgba8();
        assert_eq!(image.dimensions(), (64, 48));
        assert_eq!(image.get_pixel(10, 10).0, red);
        Ok(())
    }

    /// A 109x96 16-bit grey + alpha PNG: a diagonal ramp whose alpha fades out to the right,
    /// with low bytes that differ from the high ones (so a byte-order slip would show).
    fn grey_alpha_16_bit_png() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let (width, height) = (109u32, 96u32);
        let mut data = Vec::with_capacity((width * height * 4) as usize);
        for y in 0..height {
            for x in 0..width {
                let grey = ((x + y) * 65535 / (width + height)) as u16;
                let alpha = (65535 - x * 60000 / width) as u16;
                data.extend_from_slice(&grey.to_be_bytes());
                data.extend_from_slice(&alpha.to_be_bytes());
            }
        }
        let mut out = Vec::new();
        let mut encoder = ::png::Encoder::new(&mut out, width, height);
        encoder.set_color(::png::ColorType::GrayscaleAlpha);
        encoder.set_depth(::png::BitDepth::Sixteen);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&data)?;
        writer.finish()?;
        Ok(out)
    }

    #[test]
    fn sixteen_bit_grey_alpha_png_stays_grey_and_keeps_alpha() -> TestResult {
        let source = grey_alpha_16_bit_png()?;
        let thumbnails = thumbnails(&source, &spec(&[256], OutputFormat::Png))?;
        let image = image::load_from_memory(&thumbnails[0].bytes)?.to_rgba8();
        assert_eq!(image.dimensions(), (109, 96));
        assert!(
            image.pixels().all(|p| p[0] == p[1] && p[1] == p[2]),
            "not grey"
        );
        assert!(image.pixels().any(|p| p[3] < 255), "alpha lost");
        Ok(())
    }

    #[test]
    fn transparency_is_flattened_without_a_fringe() -> TestResult {
        // A black disc on a transparent background whose hidden colour is bright green: any
        // resampling that ignores alpha drags that green into the edge.
        // TIFF, and small enough that the final resize does all the work (no shrink-on-load,
        // which treats alpha right by its own means).
        let disc = RgbaImage::from_fn(180, 180, |x, y| {
            let (dx, dy) = (f64::from(x) - 90.0, f64::from(y) - 90.0);
            if dx.hypot(dy) < 67.0 {
                Rgba([0, 0, 0, 255])
            } else {
                Rgba([0, 255, 0, 0])
            }
        });
        let mut tiff = Vec::new();
        DynamicImage::ImageRgba8(disc)
            .write_to(&mut std::io::Cursor::new(&mut tiff), ImageFormat::Tiff)?;
        let magenta = Spec {
            background: [255, 0, 255],
            format: OutputFormat::Png,
            ..spec(&[100], OutputFormat::Jpeg)
        };
        let flattened = thumbnails(
            &tiff,
            &Spec {
                format: OutputFormat::Jpeg,
                ..magenta.clone()
            },
        )?;
        let jpeg = image::load_from_memory(&flattened[0].bytes)?.to_rgb8();
        assert_eq!(jpeg.dimensions(), (100, 100));
        let corner = jpeg.get_pixel(2, 2);
        assert!(
            corner[0] > 230 && corner[1] < 30 && corner[2] > 230,
            "background {corner:?}"
        );
        // Black and magenta have no green; the hidden green leaking into the edges would.
        let greenest = jpeg.pixels().map(|p| p[1]).max().unwrap_or(0);
        assert!(greenest < 24, "fringe: green up to {greenest}");

        let kept = thumbnails(&tiff, &magenta)?;
        let png = image::load_from_memory(&kept[0].bytes)?;
        assert!(png.color().has_alpha());
        assert_eq!(png.to_rgba8().get_pixel(2, 2)[3], 0);
        Ok(())
    }

    #[test]
    fn several_sizes_and_formats_from_one_decode() -> TestResult {
        let source = rgb_jpeg(&scene(2725, 2225))?;
        for (format, magic) in [
            (OutputFormat::Jpeg, &b"\xff\xd8\xff"[..]),
            (OutputFormat::Png, &b"\x89PNG"[..]),
            (OutputFormat::Webp, &b"RIFF"[..]),
        ] {
            let thumbnails = thumbnails(&source, &spec(&[64, 128, 512], format))?;
            let sizes: Vec<(u32, u32, u32)> = thumbnails
                .iter()
                .map(|t| (t.size, t.width, t.height))
                .collect();
            assert_eq!(
                sizes,
                [(64, 64, 52), (128, 128, 105), (512, 512, 418)],
                "{format:?}"
            );
            for thumbnail in &thumbnails {
                assert!(thumbnail.bytes.starts_with(magic), "{format:?}");
                let decoded = image::load_from_memory(&thumbnail.bytes)?;
                assert_eq!(
                    (decoded.width(), decoded.height()),
                    (thumbnail.width, thumbnail.height)
                );
            }
        }
        Ok(())
    }

    #[test]
    fn small_images_are_enlarged_only_when_asked() -> TestResult {
        let source = grey_alpha_16_bit_png()?;
        let kept = thumbnails(&source, &spec(&[256], OutputFormat::Png))?;
        assert_eq!((kept[0].width, kept[0].height), (109, 96));
        let upscale = Spec {
            upscale: true,
            ..spec(&[218], OutputFormat::Png)
        };
        let enlarged = thumbnails(&source, &upscale)?;
        assert_eq!((enlarged[0].width, enlarged[0].height), (218, 192));
        Ok(())
    }

    #[test]
    fn the_bomb_is_refused_from_its_header() -> TestResult {
        // A PNG that declares 50000x50000 and carries no image data at all.
        let mut source = Vec::new();
        {
            let mut encoder = ::png::Encoder::new(&mut source, 50000, 50000);
            encoder.set_color(::png::ColorType::Rgb);
            encoder.write_header()?;
        }
        let err = thumbnails(&source, &spec(&[256], OutputFormat::Jpeg))
            .err()
            .ok_or("accepted")?;
        assert!(
            matches!(
                err,
                PipelineError::TooManyPixels {
                    width: 50000,
                    height: 50000,
                    ..
                }
            ),
            "{err}"
        );
        let giant = jpeg_declaring(20000, 14000, mozjpeg::ColorSpace::JCS_GRAYSCALE)?;
        let err = thumbnails(&giant, &spec(&[256], OutputFormat::Jpeg))
            .err()
            .ok_or("accepted")?;
        assert_eq!(
            err.to_string(),
            "the image is 20000x14000 = 280000000 pixels, over the limit of 100000000"
        );
        Ok(())
    }

    #[test]
    fn truncated_corrupt_and_foreign_inputs_are_named() -> TestResult {
        let mut jpeg = rgb_jpeg(&scene(2725, 2225))?;
        jpeg.truncate(jpeg.len() / 2);
        let err = thumbnails(&jpeg, &spec(&[256], OutputFormat::Jpeg))
            .err()
            .ok_or("truncated")?;
        assert_eq!(err.to_string(), "the JPEG data is truncated");

        let garbage = [
            &b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"[..],
            &[0x55; 64],
            b"\xff\xd9",
        ]
        .concat();
        let err = thumbnails(&garbage, &spec(&[256], OutputFormat::Jpeg))
            .err()
            .ok_or("garbage")?;
        assert!(matches!(err, PipelineError::Corrupt { .. }), "{err}");

        let heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic";
        let err = thumbnails(heic, &spec(&[256], OutputFormat::Jpeg))
            .err()
            .ok_or("heic")?;
        assert_eq!(err.to_string(), "HEIC/HEIF images are not supported");

        let err = thumbnails(b"%PDF-1.7", &spec(&[256], OutputFormat::Jpeg))
            .err()
            .ok_or("pdf")?;
        assert!(err.to_string().contains("25 50 44 46"), "{err}");
        Ok(())
    }

    #[test]
    fn fit_and_shrink_on_load_follow_libvips() {
        assert_eq!(fit((6000, 4000), 256, false), (256, 171));
        assert_eq!(fit((3036, 4048), 256, false), (192, 256));
        assert_eq!(fit((100, 50), 256, false), (100, 50));
        assert_eq!(fit((100, 50), 256, true), (256, 128));
        assert_eq!(shrink_on_load(6000, 256), 8);
        assert_eq!(shrink_on_load(4048, 256), 4);
        assert_eq!(shrink_on_load(1000, 256), 1);
        assert_eq!(shrink_on_load(100, 256), 1);
    }
}
