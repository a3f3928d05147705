//! JPEG through libjpeg (mozjpeg): decoded already shrunk by DCT scaling, so a 24-megapixel
//! photo never exists at full size in memory; EXIF orientation and the ICC profile come from
//! the APP1 / APP2 markers, and Adobe's inverted CMYK is turned the right way up. The marker
//! walk decides first whether the stream is whole and what libjpeg will allocate for it.

use std::cell::Cell;
use std::io::{self, BufRead, Read};

use bucketfn::budget::{Stop, Stopped};
use image::metadata::Orientation;
use mozjpeg::{ColorSpace, Decompress, Marker};

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

/// Walks the markers and computes what libjpeg will need for a decode towards `target`.
pub fn inspect(
    source: &[u8],
    target: u32,
    max_pixels: u64,
) -> Result<(Structure, Inspected), PipelineError> {
    let structure = markers::walk(source, MAX_SCANS).map_err(refused)?;
    let frame = &structure.frame;
    let (width, height) = (frame.width, frame.height);
    check_pixels(width, height, max_pixels)?;
    structure.check_scans().map_err(refused)?;

    let denominator = u64::from(scale_denominator(width, height, target));
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
    let coefficients = if structure.is_multi_scan() {
        frame.coefficient_bytes()
    } else {
        0
    };
    // The main buffer (a few block rows of every component, with context rows for fancy
    // upsampling) and the upsampler's row groups, bounded at full scale: 24 rows of the padded
    // width per component and vertical sampling step.
    let v_max = frame
        .components
        .iter()
        .map(|c| u64::from(c.v))
        .max()
        .unwrap_or(1);
    let rows = 24 * v_max * u64::from(width).next_multiple_of(32) * components;
    let kind = if frame.coding.is_progressive() {
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
    let inspected = Inspected {
        what: format!("the {kind} {colour} JPEG {width}x{height}"),
        decoder: coefficients + rows + markers + out_width * out_height * channels,
        raster: Shape {
            width: out_width,
            height: out_height,
            channels,
            alpha: false,
        },
        full_size: (width, height),
    };
    Ok((structure, inspected))
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

/// Decodes the `structure` walked from `source` for thumbnails whose longest side is at most
/// `target`.
pub fn decode(
    source: &[u8],
    structure: &Structure,
    target: u32,
    stop: &Stop,
) -> Result<Decoded, PipelineError> {
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
    let (width, height) = (structure.frame.width, structure.frame.height);

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
