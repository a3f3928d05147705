//! Progressive JPEGs at an eighth or a half of their size from the coefficients those scales
//! read. A block's DC coefficient is its mean, so the DC scans (with their refinements) give
//! the image at 1/8 scale exactly as an 8x8 IDCT scaled to 1x1 would; the AC scans, most of a
//! progressive file's bytes and nearly all of its decoding work, are then stepped over by the
//! positions the marker walk found, without entropy decoding. Memory is one value per block
//! instead of 64.
//!
//! At 1/2 scale each block becomes 4x4 samples, from the 4x4 lowest frequencies of its
//! coefficients. The AC scans must then be entropy-decoded, all of them: the usual scripts
//! (libjpeg's, mozjpeg's) refine the whole band 1-63 in their later scans, and a refinement
//! scan carries a correction bit for every coefficient already non-zero in its band, so no
//! scan can be stepped over without losing the place in the ones after it. What is saved is
//! the rest: a block keeps 16 coefficients and a mask of which of its 64 are non-zero (40 bytes
//! where libjpeg keeps 128), and the 4x4 IDCT reads only what it keeps. A subsampled chroma
//! block covers twice the area, so it is kept whole and decoded at 8x8 (as libjpeg sizes it).
//!
//! Baseline files stay with libjpeg: their AC coefficients sit between the DC ones and must be
//! entropy-decoded to be stepped over, which libjpeg-turbo already does without storing them
//! at 1/8 scale. Stepping over them here, two coefficients per table look, took 0.85-1.12 of
//! libjpeg's CPU at the scale libjpeg would use, and saved more only by taking 1/8 where
//! libvips keeps 1/4, 9 dB of PSNR against libvips's thumbnail.
//!
//! At 1/8, luma is what libjpeg's 1/8 decode gives; subsampled chroma is upsampled from its DC
//! (libjpeg enlarges it with a 2x2 IDCT that reads three AC coefficients too). At 1/2, the 4x4
//! IDCT keeps the frequencies a 4x4 grid can show, where libjpeg's reduced IDCT also folds in
//! the higher ones it cannot. Both differences are small and stated in the tests.

mod entropy;
mod output;
mod planes;
mod scan;

use bucketfn::budget::Stop;

use super::PipelineError;
use super::markers::{self, Frame, MarkerError, Segments, Structure};
use super::raster::Raster;
use entropy::Tables;
use output::to_raster;
use planes::{NATURAL, Plane};
use scan::Scan;

/// How a JPEG's components make colours, as libjpeg reads it from the markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColourModel {
    Grey,
    YCbCr,
    Rgb,
    Cmyk,
    Ycck,
}

/// Whether this module can decode `structure` to `side` samples per block side (1: the DC
/// scans alone, or 4): Huffman-coded progressive, 8-bit, sampling factors that divide the
/// largest, and at side 4 a whole number of output samples per chroma sample.
pub fn applies(structure: &Structure, side: usize) -> bool {
    let frame = &structure.frame;
    let (h_max, v_max) = max_sampling(frame);
    frame.coding == markers::Coding::Progressive
        && frame.precision == 8
        && matches!(frame.components.len(), 1 | 3 | 4)
        && matches!(side, 1 | 4)
        && frame
            .components
            .iter()
            .all(|c| h_max % c.h == 0 && v_max % c.v == 0)
        && (0..frame.components.len()).all(|index| enlargement(frame, index, side).is_some())
}

/// Samples per block side component `index` is decoded to at `side`: chroma subsampled by
/// two or four is decoded at twice or four times the side (up to 8), as libjpeg sizes its
/// IDCT, except from the DC scans alone.
fn component_side(frame: &Frame, index: usize, side: usize) -> usize {
    let (h_max, v_max) = max_sampling(frame);
    let c = frame.components[index];
    let mut own = side;
    while side > 1
        && own < 8
        && usize::from(c.h) * own * 2 <= usize::from(h_max) * side
        && usize::from(c.v) * own * 2 <= usize::from(v_max) * side
    {
        own *= 2;
    }
    own
}

/// How many output samples each of component `index`'s samples becomes, across and down;
/// `None` where that is not a whole number (libjpeg refuses such files at that scale too).
fn enlargement(frame: &Frame, index: usize, side: usize) -> Option<(usize, usize)> {
    let (h_max, v_max) = max_sampling(frame);
    let c = frame.components[index];
    let own = component_side(frame, index, side);
    let across = usize::from(h_max) * side;
    let down = usize::from(v_max) * side;
    let (h, v) = (usize::from(c.h) * own, usize::from(c.v) * own);
    (across.is_multiple_of(h) && down.is_multiple_of(v)).then_some((across / h, down / v))
}

/// Bytes the decode holds besides the source and its output, for `side` samples per block
/// side: per padded block of each component its kept coefficients (two bytes each), at side 4
/// its mask of non-zero ones, and its samples; for a component that is enlarged, its samples
/// at the output's size.
pub fn memory(frame: &Frame, side: usize) -> u64 {
    let output = u64::from(scaled(frame.width, side)) * u64::from(scaled(frame.height, side));
    (0..frame.components.len())
        .map(|index| {
            let (across, down) = padded_blocks(frame, index);
            let own = component_side(frame, index, side) as u64;
            let mask = if side > 1 { 8 } else { 0 };
            let enlarged = match enlargement(frame, index, side) {
                Some((1, 1)) => 0,
                _ => output,
            };
            (across * down) as u64 * (own * own * 3 + mask) + enlarged
        })
        .sum()
}

/// An image side at `side` samples per block side, as libjpeg rounds it.
pub fn scaled(length: u32, side: usize) -> u32 {
    (u64::from(length) * side as u64).div_ceil(8) as u32
}

fn max_sampling(frame: &Frame) -> (u8, u8) {
    frame
        .components
        .iter()
        .fold((1, 1), |(h, v), c| (h.max(c.h), v.max(c.v)))
}

/// The blocks of component `index` padded to whole MCUs, as interleaved scans code them.
fn padded_blocks(frame: &Frame, index: usize) -> (usize, usize) {
    let (h_max, v_max) = max_sampling(frame);
    let c = frame.components[index];
    let mcus_across = frame.width.div_ceil(8 * u32::from(h_max)) as usize;
    let mcus_down = frame.height.div_ceil(8 * u32::from(v_max)) as usize;
    (mcus_across * usize::from(c.h), mcus_down * usize::from(c.v))
}

fn corrupt(what: &str) -> MarkerError {
    MarkerError::Corrupt(what.to_owned())
}

/// The kept coefficients of every component, decoded; [`Coefficients::to_raster`] makes the
/// image.
pub struct Coefficients<'a> {
    frame: &'a Frame,
    side: usize,
    planes: Vec<Plane>,
}

impl Coefficients<'_> {
    /// The image at `side` / 8 of its size (each side rounded up), in `model`'s layout.
    pub fn to_raster(&self, model: ColourModel) -> Raster {
        to_raster(self.frame, &self.planes, self.side, model)
    }
}

/// Decodes the scans of `source` (walked into `structure`, for which [`applies`] holds at
/// `side`) that `side` samples per block side read, handing each application segment (APPn
/// marker and payload) to `application` on the way, so that the file is read once.
pub fn decode<'a>(
    source: &[u8],
    structure: &'a Structure,
    side: usize,
    stop: &Stop,
    mut application: impl FnMut(u8, &[u8]),
) -> Result<Coefficients<'a>, PipelineError> {
    let frame = &structure.frame;
    let mut planes: Vec<Plane> = (0..frame.components.len())
        .map(|index| Plane::new(frame, index, side))
        .collect();
    let mut quantisers: [Option<[u16; 64]>; 4] = [None; 4];
    let mut tables = Tables::default();
    let mut restart_interval = 0u16;
    for segment in Segments::walked(source, structure)? {
        let segment = segment?;
        let payload = &source[segment.payload.clone()];
        match segment.marker {
            0xD9 => break,
            0xE0..=0xEF => application(segment.marker, payload),
            0xDB => read_quantisers(payload, &mut quantisers)?,
            // From the DC scans alone, the AC tables are never read.
            0xC4 => tables.read(payload, side > 1)?,
            0xDD => restart_interval = markers::parse_restart_interval(payload)?,
            0xDA => {
                let header = markers::parse_scan(payload, frame)?;
                // From the DC scans alone, AC scans are stepped over: the walk found where
                // their data ends.
                if header.spectral_start != 0 && side == 1 {
                    continue;
                }
                let (data, _) = segment.data.unwrap_or_default();
                for c in &header.components {
                    let plane = &mut planes[c.index];
                    let table = frame.components[c.index].quant;
                    if plane.quantisers.is_none() {
                        plane.quantisers = quantisers.get(usize::from(table)).copied().flatten();
                    }
                }
                let scan = Scan {
                    frame,
                    header: &header,
                    tables: &tables,
                    restart_interval: usize::from(restart_interval),
                };
                match header.spectral_start {
                    0 => scan.decode_dc(&source[data], &mut planes, stop)?,
                    _ => scan.decode_ac(&source[data], &mut planes, stop)?,
                }
            }
            _ => {}
        }
    }
    stop.check()?;
    Ok(Coefficients {
        frame,
        side,
        planes,
    })
}

/// DQT: 8-bit or 16-bit tables, in zig-zag order in the file, kept in natural order.
fn read_quantisers(
    mut payload: &[u8],
    into: &mut [Option<[u16; 64]>; 4],
) -> Result<(), MarkerError> {
    while let [spec, rest @ ..] = payload {
        let (sixteen, id) = (spec >> 4 != 0, usize::from(spec & 0x0F));
        let size = if sixteen { 128 } else { 64 };
        if id > 3 || rest.len() < size {
            return Err(corrupt("a quantisation table (DQT) that does not fit"));
        }
        let mut table = [0u16; 64];
        for (k, &natural) in NATURAL.iter().enumerate() {
            table[usize::from(natural)] = match sixteen {
                true => u16::from_be_bytes([rest[2 * k], rest[2 * k + 1]]),
                false => u16::from(rest[k]),
            };
        }
        into[id] = Some(table);
        payload = &rest[size..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{jpeg, resize};
    use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const WIDTH: u16 = 1003;
    const HEIGHT: u16 = 757;

    /// A photo-like scene in `channels` bytes per pixel: gradients, a disc, fine stripes.
    fn scene(channels: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::from(WIDTH) * usize::from(HEIGHT) * channels);
        for y in 0..usize::from(HEIGHT) {
            for x in 0..usize::from(WIDTH) {
                let (fx, fy) = (x as f64 / f64::from(WIDTH), y as f64 / f64::from(HEIGHT));
                let disc = (fx - 0.6).hypot(fy - 0.4) < 0.2;
                let stripes = ((x / 3 + y / 5) % 2) as f64 * 40.0;
                let values = [
                    if disc { 200.0 } else { fx * 230.0 },
                    fy * 200.0 + stripes,
                    if disc { 40.0 } else { 255.0 - fx * 180.0 },
                    (fx + fy) * 100.0,
                ];
                out.extend(values[..channels].iter().map(|v| v.clamp(0.0, 255.0) as u8));
            }
        }
        out
    }

    /// Progressive through jpeg-encoder, which can ask for restart intervals and any sampling.
    fn encoded(colour: ColorType, sampling: SamplingFactor, restart: u16) -> Vec<u8> {
        let channels = match colour {
            ColorType::Luma => 1,
            ColorType::Rgb => 3,
            _ => 4,
        };
        let mut out = Vec::new();
        let mut encoder = Encoder::new(&mut out, 90);
        encoder.set_progressive(true);
        encoder.set_sampling_factor(sampling);
        encoder.set_restart_interval(restart);
        encoder
            .encode(&scene(channels), WIDTH, HEIGHT, colour)
            .map(|()| out)
            .unwrap_or_default()
    }

    /// Progressive through libjpeg (mozjpeg): `fastest` is libjpeg-turbo's standard script (an
    /// interleaved DC scan at Al 1, then its refinement); otherwise mozjpeg's own search over
    /// scan scripts (a DC scan per component, successive approximation where it pays).
    fn libjpeg_progressive(
        colour: mozjpeg::ColorSpace,
        fastest: bool,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let channels = if colour == mozjpeg::ColorSpace::JCS_GRAYSCALE {
            1
        } else {
            3
        };
        let mut compress = mozjpeg::Compress::new(colour);
        if fastest {
            compress.set_fastest_defaults();
        }
        compress.set_progressive_mode();
        compress.set_size(usize::from(WIDTH), usize::from(HEIGHT));
        compress.set_quality(90.0);
        let mut started = compress.start_compress(Vec::new())?;
        started.write_scanlines(&scene(channels))?;
        Ok(started.finish()?)
    }

    /// A target that asks for an eighth of the size, and one for which libjpeg decodes at 1/2.
    const EIGHTH: u32 = WIDTH as u32 / 16;
    const HALF: u32 = 200;

    /// This module's image and libjpeg's own decode of `source` at the scale `target` asks
    /// for.
    fn both(source: &[u8], target: u32) -> Result<(Raster, Raster), Box<dyn std::error::Error>> {
        let structure = markers::walk(source, 100).map_err(|e| format!("{e:?}"))?;
        let side = if target == EIGHTH { 1 } else { 4 };
        assert!(applies(&structure, side), "{:?}", structure.frame);
        let stop = Stop::default();
        let ours = jpeg::decode(source, &structure, target, &stop)?.raster;
        let theirs = jpeg::libjpeg(source, &structure, target, &stop)?.raster;
        assert_eq!(
            (ours.width, ours.height, ours.layout),
            (theirs.width, theirs.height, theirs.layout)
        );
        let expected = if side == 1 { (126, 95) } else { (502, 379) };
        assert_eq!((ours.width, ours.height), expected);
        Ok((ours, theirs))
    }

    /// The largest difference of a sample, and the PSNR in dB.
    fn difference(a: &Raster, b: &Raster) -> (u8, f64) {
        let (mut largest, mut squares) = (0u8, 0f64);
        for (x, y) in a.pixels.iter().zip(&b.pixels) {
            let d = x.abs_diff(*y);
            largest = largest.max(d);
            squares += f64::from(d) * f64::from(d);
        }
        let mse = squares / a.pixels.len() as f64;
        let psnr = if mse == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (255.0 * 255.0 / mse).log10()
        };
        (largest, psnr)
    }

    /// A file to decode, and what the assertions call it.
    type Case = (&'static str, Vec<u8>);

    /// Grey, 4:4:4, CMYK and YCCK files, with libjpeg's and mozjpeg's scripts and restarts.
    fn without_subsampled_chroma() -> Result<Vec<Case>, Box<dyn std::error::Error>> {
        Ok(vec![
            (
                "grey, libjpeg's script",
                libjpeg_progressive(mozjpeg::ColorSpace::JCS_GRAYSCALE, true)?,
            ),
            (
                "grey, mozjpeg's scans",
                libjpeg_progressive(mozjpeg::ColorSpace::JCS_GRAYSCALE, false)?,
            ),
            (
                "grey, restart every 7 blocks",
                encoded(ColorType::Luma, SamplingFactor::F_1_1, 7),
            ),
            (
                "4:4:4, restart every 5 MCUs",
                encoded(ColorType::Rgb, SamplingFactor::F_1_1, 5),
            ),
            ("CMYK", encoded(ColorType::Cmyk, SamplingFactor::F_1_1, 0)),
            (
                "YCCK",
                encoded(ColorType::CmykAsYcck, SamplingFactor::F_1_1, 3),
            ),
        ])
    }

    /// Colour files with subsampled chroma: 4:2:0 with both scripts and restarts, 4:2:2,
    /// 4:4:0, 4:1:1.
    fn with_subsampled_chroma() -> Result<Vec<Case>, Box<dyn std::error::Error>> {
        Ok(vec![
            (
                "4:2:0, libjpeg's script",
                libjpeg_progressive(mozjpeg::ColorSpace::JCS_RGB, true)?,
            ),
            (
                "4:2:0, mozjpeg's scans",
                libjpeg_progressive(mozjpeg::ColorSpace::JCS_RGB, false)?,
            ),
            (
                "4:2:0, restart every MCU",
                encoded(ColorType::Rgb, SamplingFactor::F_2_2, 1),
            ),
            ("4:2:2", encoded(ColorType::Rgb, SamplingFactor::F_2_1, 0)),
            ("4:4:0", encoded(ColorType::Rgb, SamplingFactor::F_1_2, 0)),
            ("4:1:1", encoded(ColorType::Rgb, SamplingFactor::F_4_1, 0)),
        ])
    }

    #[test]
    fn without_subsampled_chroma_the_dc_scans_give_libjpegs_eighth() -> TestResult {
        let cases = without_subsampled_chroma()?;
        for (name, source) in cases {
            assert!(!source.is_empty(), "{name}: not encoded");
            let (ours, theirs) = both(&source, EIGHTH)?;
            let (largest, psnr) = difference(&ours, &theirs);
            // Only the colour conversion's rounding may differ (libjpeg-turbo's SIMD).
            assert!(largest <= 1, "{name}: {largest} ({psnr:.1} dB)");
        }
        Ok(())
    }

    #[test]
    fn damaged_files_are_decoded_or_refused_never_a_panic() -> TestResult {
        // Every byte after the headers of three progressive files is fair game: scan data,
        // restart markers, tables between scans. Whatever a change makes of the file, the
        // decode answers (an image or an error) within its loops.
        let sources = [
            libjpeg_progressive(mozjpeg::ColorSpace::JCS_RGB, true)?,
            encoded(ColorType::Rgb, SamplingFactor::F_2_2, 2),
            encoded(ColorType::CmykAsYcck, SamplingFactor::F_1_1, 0),
        ];
        let mut noise = bucketfn::testing::Noise(0x9E37_79B9_7F4A_7C15);
        let mut next = move || noise.next_u64();
        let (mut decoded, mut refused) = (0, 0);
        for round in 0..600 {
            let mut source = sources[round % sources.len()].clone();
            let start = source
                .windows(2)
                .position(|w| w == [0xFF, 0xDA])
                .unwrap_or(0);
            for _ in 0..1 + next() % 8 {
                let at = start + (next() as usize) % (source.len() - start);
                source[at] = match next() % 4 {
                    0 => 0xFF,
                    1 => 0x00,
                    _ => next() as u8,
                };
            }
            let Ok(structure) = markers::walk(&source, 100) else {
                continue;
            };
            // Every other round at 1/2, where the AC scans are decoded too.
            let (side, target) = match round % 2 {
                0 => (1, EIGHTH),
                _ => (4, HALF),
            };
            if !applies(&structure, side) {
                continue;
            }
            match jpeg::decode(&source, &structure, target, &Stop::default()) {
                Ok(_) => decoded += 1,
                Err(_) => refused += 1,
            }
        }
        // Both answers occur: the damage reached the decoder, not only the walk.
        assert!(
            decoded > 50 && refused > 5,
            "{decoded} decoded, {refused} refused"
        );
        Ok(())
    }

    #[test]
    fn subsampled_chroma_stays_within_the_stated_difference() -> TestResult {
        let cases = with_subsampled_chroma()?;
        for (name, source) in cases {
            assert!(!source.is_empty(), "{name}: not encoded");
            let (ours, theirs) = both(&source, EIGHTH)?;
            let (largest, psnr) = difference(&ours, &theirs);
            eprintln!("{name}: largest {largest}, {psnr:.1} dB");
            assert!(psnr >= 35.0, "{name}: {psnr:.1} dB (largest {largest})");
        }
        Ok(())
    }

    #[test]
    fn at_half_scale_the_kept_coefficients_stay_within_the_stated_difference() -> TestResult {
        let cases = [without_subsampled_chroma()?, with_subsampled_chroma()?].concat();
        for (name, source) in cases {
            assert!(!source.is_empty(), "{name}: not encoded");
            let (ours, theirs) = both(&source, HALF)?;
            let (largest, psnr) = difference(&ours, &theirs);
            assert!(psnr >= 34.0, "{name}: {psnr:.1} dB (largest {largest})");
            // The thumbnails from both halves, against the one from the full decode.
            let structure = markers::walk(&source, 100).map_err(|e| format!("{e:?}"))?;
            let full = jpeg::libjpeg(&source, &structure, u32::from(WIDTH), &Stop::default())?;
            assert_eq!(full.raster.width, u32::from(WIDTH));
            let thumbnail = |raster: &Raster| resize::resize(raster, HALF, 151);
            let reference = thumbnail(&full.raster)?;
            let (_, from_ours) = difference(&thumbnail(&ours)?, &reference);
            let (_, from_libjpeg) = difference(&thumbnail(&theirs)?, &reference);
            eprintln!(
                "{name}: {psnr:.1} dB from libjpeg's half; thumbnails {from_ours:.1} dB from the full decode's (libjpeg's half: {from_libjpeg:.1})"
            );
            assert!(
                from_ours >= 35.0 && from_ours >= from_libjpeg - 0.5,
                "{name}: {from_ours:.1} dB (libjpeg's half {from_libjpeg:.1})"
            );
        }
        Ok(())
    }
}
