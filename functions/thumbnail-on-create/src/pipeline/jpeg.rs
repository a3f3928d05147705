//! JPEG through libjpeg (mozjpeg): decoded already shrunk by DCT scaling, so a 24-megapixel
//! photo never exists at full size in memory; EXIF orientation and the ICC profile come from
//! the APP1 / APP2 markers, and Adobe's inverted CMYK is turned the right way up. The marker
//! walk decides first whether the stream is whole and what libjpeg will allocate for it. A
//! progressive JPEG whose thumbnail needs at most a quarter of its size skips libjpeg: its DC
//! scans alone give an eighth, the low frequencies of each block a half
//! ([`super::jpeg_progressive`]). Where allowed, a camera's embedded preview stands in for its
//! photo ([`super::embedded_preview`]).

use std::cell::Cell;
use std::io::{self, BufRead, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};

use bucketfn::budget::{Stop, Stopped};
use image::metadata::Orientation;
use mozjpeg::{ColorSpace, Decompress, Marker};

use super::embedded_preview::{self, Preview};
use super::jpeg_progressive::{self, ColourModel};
use super::markers::{self, MarkerError, Structure};
use super::raster::{Layout, Raster};
use super::{Decoded, Inspected, PipelineError, Shape, check_pixels, shrink_on_load};

/// The most scans a JPEG may have. Every scan is a pass over the blocks of its components
/// (about 5 ms for a 60-megapixel grey image, so 5000 scans cost 23 s of CPU); libjpeg's
/// standard progression writes 6 to 10 scans, mozjpeg's scan optimisation a few dozen at most,
/// and libjpeg-turbo's own guard against this attack (TJFLAG_LIMITSCANS) stops at 500. A
/// hundred leaves ample room for any encoder and bounds the scan work to about half a second.
pub const MAX_SCANS: usize = 100;

const MARKERS: &[Marker] = &[Marker::APP(1), Marker::APP(2), Marker::APP(14)];
const ICC_SIGNATURE: &[u8] = b"ICC_PROFILE\0";
const EXIF_SIGNATURE: &[u8] = b"Exif\0\0";

/// Rows decoded between two looks at the stop.
const ROWS_PER_CHECK: usize = 16;
/// The most libjpeg is handed at once. libjpeg-turbo's fast Huffman path needs a few KiB in
/// its buffer; more only delays the next look at the stop.
const CHUNK: usize = 64 * 1024;

/// A JPEG as the marker walk found it, and the embedded preview its thumbnails come from when
/// one is allowed and suits.
pub struct Walked {
    primary: Structure,
    preview: Option<Preview>,
}

/// Walks the markers and computes what libjpeg will need for a decode towards `target`; with
/// `previews`, from the embedded preview where one suits.
pub fn inspect(
    source: &[u8],
    target: u32,
    max_pixels: u64,
    previews: bool,
) -> Result<(Walked, Inspected), PipelineError> {
    let primary = markers::walk(source, MAX_SCANS).map_err(refused)?;
    check_pixels(primary.frame.width, primary.frame.height, max_pixels)?;
    primary.check_scans().map_err(refused)?;
    let mut inspected = need(&primary, target);
    let preview = previews
        .then(|| embedded_preview::find(source, &primary, target))
        .flatten();
    if let Some(preview) = &preview {
        let of_preview = need(&preview.structure, target);
        let (width, height) = of_preview.full_size;
        inspected = Inspected {
            what: format!(
                "{}, from its embedded {width}x{height} preview",
                inspected.what
            ),
            // The photo itself is decoded if its preview turns out corrupt.
            decoder: inspected.decoder.max(of_preview.decoder),
            raster: match inspected.raster.bytes() >= of_preview.raster.bytes() {
                true => inspected.raster,
                false => of_preview.raster,
            },
            full_size: inspected.full_size,
        };
    }
    Ok((Walked { primary, preview }, inspected))
}

/// What libjpeg (or the progressive decoder here) will need to decode `structure` towards
/// `target`.
fn need(structure: &Structure, target: u32) -> Inspected {
    let frame = &structure.frame;
    let (width, height) = (frame.width, frame.height);

    // Decoded here: a few coefficients per block, no buffers at full scale.
    let own = own_side(structure, target);
    let denominator = match own {
        Some(side) => 8 / side as u64,
        None => u64::from(scale_denominator(width, height, target)),
    };
    let (out_width, out_height) = (
        u64::from(width).div_ceil(denominator),
        u64::from(height).div_ceil(denominator),
    );
    let components = frame.components.len() as u64;
    let channels: u64 = match components {
        1 => 1,
        3 => 3,
        _ => 4,
    };
    let coefficients = if let Some(side) = own {
        jpeg_progressive::memory(frame, side)
    } else if structure.is_multi_scan() {
        frame.coefficient_bytes()
    } else {
        0
    };
    // libjpeg's main buffer (a few block rows of every component, with context rows for fancy
    // upsampling) and the upsampler's row groups, bounded at full scale: 24 rows of the padded
    // width per component and vertical sampling step.
    let v_max = frame
        .components
        .iter()
        .map(|c| u64::from(c.v))
        .max()
        .unwrap_or(1);
    let rows = match own {
        Some(_) => 0,
        None => 24 * v_max * u64::from(width).next_multiple_of(32) * components,
    };
    let kind = if own == Some(1) {
        "progressive (DC scans)"
    } else if own.is_some() {
        "progressive (half scale)"
    } else if frame.coding.is_progressive() {
        "progressive"
    } else if structure.is_multi_scan() {
        "multi-scan"
    } else {
        "baseline"
    };
    let colour = match components {
        1 => "grey".to_owned(),
        3 => "colour".to_owned(),
        4 => "CMYK".to_owned(),
        n => format!("{n}-component"),
    };
    // libjpeg keeps the saved markers; the ICC profile is gathered from them, then joined.
    let markers = 3 * structure.application_bytes;
    Inspected {
        what: format!("the {kind} {colour} JPEG {width}x{height}"),
        decoder: coefficients + rows + markers + out_width * out_height * channels,
        raster: Shape {
            width: out_width,
            height: out_height,
            channels,
            alpha: false,
        },
        full_size: (width, height),
    }
}

impl From<MarkerError> for PipelineError {
    fn from(error: MarkerError) -> Self {
        refused(error)
    }
}

fn refused(error: MarkerError) -> PipelineError {
    match error {
        MarkerError::Truncated => PipelineError::Truncated("JPEG"),
        MarkerError::TooManyScans { limit } => PipelineError::TooManyScans { limit },
        MarkerError::ScanTruncated { scan, detail } => {
            PipelineError::TruncatedScan { scan, detail }
        }
        MarkerError::Corrupt(message) => PipelineError::Corrupt {
            format: "JPEG",
            message,
        },
        MarkerError::Unsupported(what) => PipelineError::UnsupportedFormat(what),
    }
}

/// DCT scaling by 1/2, 1/4 or 1/8, keeping at least twice the target for the final resize.
fn scale_denominator(width: u32, height: u32, target: u32) -> u32 {
    shrink_on_load(width.max(height), target).min(8)
}

/// How many samples per block side this crate's own progressive decoder makes for
/// `structure`, if it decodes it: 1, from the DC scans alone, where the image's eighth is at
/// least the largest size (not twice it, as libjpeg's scaling keeps: a DC value is its block's
/// mean, an area average that leaves no sharpness for the resize to take back); else 4 where
/// libjpeg would decode at 1/2. At 1/1 every coefficient is read, and libjpeg does that.
fn own_side(structure: &Structure, target: u32) -> Option<usize> {
    let frame = &structure.frame;
    let side = match frame.width.max(frame.height).div_ceil(8) >= target {
        true => 1,
        false => 8 / scale_denominator(frame.width, frame.height, target) as usize,
    };
    (side < 8 && jpeg_progressive::applies(structure, side)).then_some(side)
}

impl Walked {
    /// Decodes the image for thumbnails whose longest side is at most `target`: its preview
    /// if it has one that suits, with the photo's orientation, profile and size, else itself.
    pub fn decode(
        &self,
        source: &[u8],
        target: u32,
        stop: &Stop,
    ) -> Result<Decoded, PipelineError> {
        if let Some(preview) = &self.preview {
            let stream = &source[preview.range.clone()];
            // libjpeg reports a corrupt stream by unwinding.
            let decoded = catch_unwind(AssertUnwindSafe(|| {
                decode(stream, &preview.structure, target, stop)
            }));
            match decoded {
                Ok(Ok(mut decoded)) => {
                    let mut photo = Application::of(source, &self.primary);
                    decoded.icc = photo.profile();
                    decoded.orientation = photo.orientation.unwrap_or(Orientation::NoTransforms);
                    decoded.full_size = (self.primary.frame.width, self.primary.frame.height);
                    return Ok(decoded);
                }
                _ if stop.is_stopped() => return Err(PipelineError::Stopped(Stopped)),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "the embedded preview does not decode; decoding the photo");
                }
                Err(_) => tracing::warn!("the embedded preview is corrupt; decoding the photo"),
            }
        }
        decode(source, &self.primary, target, stop)
    }
}

/// Decodes the `structure` walked from `source` for thumbnails whose longest side is at most
/// `target`.
pub fn decode(
    source: &[u8],
    structure: &Structure,
    target: u32,
    stop: &Stop,
) -> Result<Decoded, PipelineError> {
    let (width, height) = (structure.frame.width, structure.frame.height);
    if let Some(side) = own_side(structure, target) {
        let mut application = Application::default();
        let image = jpeg_progressive::decode(source, structure, side, stop, |marker, data| {
            application.read(marker, data)
        })?;
        let raster = image.to_raster(application.model(&structure.frame));
        return Ok(application.finish(raster, (width, height)));
    }
    libjpeg(source, structure, target, stop)
}

/// Decodes through libjpeg, scaled by its IDCT.
pub(super) fn libjpeg(
    source: &[u8],
    structure: &Structure,
    target: u32,
    stop: &Stop,
) -> Result<Decoded, PipelineError> {
    let (width, height) = (structure.frame.width, structure.frame.height);
    let ran_out = Cell::new(false);
    let scan_starts: Vec<usize> = structure.scans.iter().map(|scan| scan.start).collect();
    let feed = Feed {
        source,
        at: 0,
        scan_starts: &scan_starts,
        stop,
        ran_out: &ran_out,
    };
    let failed = |e: io::Error| {
        if stop.is_stopped() {
            PipelineError::Stopped(Stopped)
        } else {
            PipelineError::corrupt("JPEG", e)
        }
    };
    let mut decompress = Decompress::builder()
        .with_markers(MARKERS)
        .from_reader(feed)
        .map_err(failed)?;

    let mut application = Application::default();
    for marker in decompress.markers() {
        if let Marker::APP(n) = marker.marker {
            application.read(0xE0 + n, marker.data);
        }
    }

    decompress.scale((8 / scale_denominator(width, height, target)) as u8);
    let (layout, output) = match decompress.color_space() {
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => (Layout::Cmyk, ColorSpace::JCS_CMYK),
        ColorSpace::JCS_GRAYSCALE => (Layout::Gray, ColorSpace::JCS_GRAYSCALE),
        _ => (Layout::Rgb, ColorSpace::JCS_RGB),
    };
    stop.check()?;
    // For progressive and multi-scan files this reads every scan (each one a look at the stop).
    let mut started = decompress.to_colorspace(output).map_err(failed)?;
    let (out_width, out_height) = (started.width() as u32, started.height() as u32);
    let line = out_width as usize * layout.channels();
    let mut pixels = vec![0; line * out_height as usize];
    for rows in pixels.chunks_mut(line * ROWS_PER_CHECK) {
        stop.check()?;
        started.read_scanlines_into(rows).map_err(failed)?;
    }
    started.finish().map_err(failed)?;
    // libjpeg meets the end of the data with a fake end-of-image marker and grey padding.
    if ran_out.get() {
        return Err(PipelineError::Truncated("JPEG"));
    }
    let raster = Raster::new(out_width, out_height, layout, pixels);
    Ok(application.finish(raster, (width, height)))
}

/// What the application markers say: the EXIF orientation, the ICC profile (in chunks), and
/// the JFIF and Adobe markers that decide how the components make colours.
#[derive(Default)]
struct Application {
    icc_chunks: Vec<(u8, Vec<u8>)>,
    orientation: Option<Orientation>,
    jfif: bool,
    /// The Adobe marker's colour transform.
    adobe: Option<u8>,
}

impl Application {
    /// What the application markers before the first scan of `structure` say, as libjpeg
    /// reads them (it saves markers until the first scan).
    fn of(source: &[u8], structure: &Structure) -> Self {
        let mut application = Self::default();
        let segments = markers::Segments::walked(source, structure)
            .into_iter()
            .flatten();
        for segment in segments.map_while(Result::ok) {
            match segment.marker {
                0xDA => break,
                0xE0..=0xEF => application.read(segment.marker, &source[segment.payload]),
                _ => {}
            }
        }
        application
    }

    /// The ICC profile, its chunks in order and joined.
    fn profile(&mut self) -> Option<Vec<u8>> {
        self.icc_chunks.sort_by_key(|(sequence, _)| *sequence);
        let icc: Vec<u8> = std::mem::take(&mut self.icc_chunks)
            .into_iter()
            .flat_map(|(_, d)| d)
            .collect();
        (!icc.is_empty()).then_some(icc)
    }

    fn read(&mut self, marker: u8, data: &[u8]) {
        match marker {
            0xE0 => self.jfif |= data.starts_with(b"JFIF\0"),
            0xE1 => {
                if let Some(exif) = data.strip_prefix(EXIF_SIGNATURE) {
                    self.orientation = Orientation::from_exif_chunk(exif).or(self.orientation);
                }
            }
            0xE2 => {
                // ICC profiles larger than a marker are split: sequence number, count, data.
                if let Some(rest) = data.strip_prefix(ICC_SIGNATURE)
                    && let [sequence, _count, data @ ..] = rest
                {
                    self.icc_chunks.push((*sequence, data.to_vec()));
                }
            }
            // "Adobe", version, two flag words, then the transform.
            0xEE if data.starts_with(b"Adobe") => {
                self.adobe = Some(data.get(11).copied().unwrap_or(1));
            }
            _ => {}
        }
    }

    /// How the components make colours, as libjpeg decides it (jdapimin.c).
    fn model(&self, frame: &markers::Frame) -> ColourModel {
        let ids: Vec<u8> = frame.components.iter().map(|c| c.id).collect();
        match (ids.len(), self.adobe) {
            (1, _) => ColourModel::Grey,
            (3, _) if self.jfif => ColourModel::YCbCr,
            (3, Some(0)) => ColourModel::Rgb,
            (3, Some(_)) => ColourModel::YCbCr,
            (3, None) if ids == [b'R', b'G', b'B'] => ColourModel::Rgb,
            (3, None) => ColourModel::YCbCr,
            (_, Some(0) | None) => ColourModel::Cmyk,
            (_, Some(_)) => ColourModel::Ycck,
        }
    }

    /// The decoded image with what the markers say of it; Adobe's inverted CMYK turned the
    /// right way up.
    fn finish(mut self, mut raster: Raster, full_size: (u32, u32)) -> Decoded {
        if raster.layout == Layout::Cmyk && self.adobe.is_some() {
            for value in &mut raster.pixels {
                *value = 255 - *value;
            }
        }
        Decoded {
            raster,
            full_size,
            icc: self.profile(),
            orientation: self.orientation.unwrap_or(Orientation::NoTransforms),
        }
    }
}

/// The source as libjpeg reads it: in chunks that also end where each scan starts, so that
/// the stop is looked at between scans (libjpeg reads all scans of a progressive file within
/// one call), noting whether libjpeg asked for more than there is.
struct Feed<'a> {
    source: &'a [u8],
    at: usize,
    scan_starts: &'a [usize],
    stop: &'a Stop,
    ran_out: &'a Cell<bool>,
}

impl Read for Feed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Feed<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        // libjpeg turns a read error into a fatal error, which unwinds out of the decode.
        if self.stop.is_stopped() {
            return Err(io::Error::other(Stopped));
        }
        if self.at >= self.source.len() {
            self.ran_out.set(true);
            return Ok(&[]);
        }
        let next_scan = self
            .scan_starts
            .iter()
            .copied()
            .find(|&start| start > self.at)
            .unwrap_or(usize::MAX);
        let end = self.source.len().min(self.at + CHUNK).min(next_scan);
        Ok(&self.source[self.at..end])
    }

    fn consume(&mut self, amount: usize) {
        self.at = (self.at + amount).min(self.source.len());
    }
}
