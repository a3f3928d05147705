//! Progressive JPEGs at an eighth of their size from their DC coefficients alone. A block's DC
//! coefficient is its mean, so the DC scans (with their refinements) give the image at 1/8
//! scale exactly as an 8x8 IDCT scaled to 1x1 would; the AC scans, most of a progressive
//! file's bytes and nearly all of its decoding work, are stepped over by the positions the
//! marker walk found, without entropy decoding. Memory is one value per block instead of 64.
//!
//! Baseline files stay with libjpeg: their AC coefficients sit between the DC ones and must be
//! entropy-decoded to be stepped over, which libjpeg-turbo already does without storing them
//! at 1/8 scale. Stepping over them here, two coefficients per table look, took 0.85-1.12 of
//! libjpeg's CPU at the scale libjpeg would use, and saved more only by taking 1/8 where
//! libvips keeps 1/4, 9 dB of PSNR against libvips's thumbnail.
//!
//! Luma is what libjpeg's 1/8 decode gives; subsampled chroma is upsampled from its DC
//! (libjpeg enlarges it with a 2x2 IDCT that reads three AC coefficients too), the one place
//! the two differ, by a small stated amount measured in the tests.

use bucketfn::budget::Stop;

use super::PipelineError;
use super::markers::{self, Frame, MarkerError, ScanHeader, Segments, Structure};
use super::raster::{Layout, Raster};

/// How a JPEG's components make colours, as libjpeg reads it from the markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColourModel {
    Grey,
    YCbCr,
    Rgb,
    Cmyk,
    Ycck,
}

/// MCUs decoded between two looks at the stop.
const MCUS_PER_CHECK: usize = 4096;

/// Whether the DC path can decode `structure` (Huffman-coded progressive, 8-bit, sampling
/// factors that divide the largest): then a 1/8 decode needs no more than this module.
pub fn applies(structure: &Structure) -> bool {
    let frame = &structure.frame;
    let (h_max, v_max) = max_sampling(frame);
    frame.coding == markers::Coding::Progressive
        && frame.precision == 8
        && matches!(frame.components.len(), 1 | 3 | 4)
        && frame
            .components
            .iter()
            .all(|c| h_max % c.h == 0 && v_max % c.v == 0)
}

/// Bytes the DC path holds besides the source and its output: a coefficient (two bytes) and a
/// sample per padded block of each component, and for a subsampled component its samples
/// enlarged to the image's eighth.
pub fn memory(frame: &Frame) -> u64 {
    let (h_max, v_max) = max_sampling(frame);
    let eighth = u64::from(frame.width.div_ceil(8)) * u64::from(frame.height.div_ceil(8));
    (0..frame.components.len())
        .map(|index| {
            let (across, down) = padded_blocks(frame, index);
            let c = frame.components[index];
            let enlarged = if (c.h, c.v) == (h_max, v_max) {
                0
            } else {
                eighth
            };
            (across * down) as u64 * (2 + 1) + enlarged
        })
        .sum()
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

/// A Huffman table (DHT) as the decoding procedure of T.81 F.2.2.3 reads it.
#[derive(Clone)]
struct Huffman {
    /// Per code length 1..=16: the largest code of that length (or -1), and where its values
    /// start in `values` minus the smallest code.
    max_code: [i32; 17],
    offset: [i32; 17],
    values: Vec<u8>,
    /// For each [`LOOKUP_BITS`]-bit prefix that starts with a code of at most that many bits:
    /// `(length << 8) | value`; 0 where a longer code starts.
    lookup: Vec<u16>,
}

impl Huffman {
    fn parse(counts: &[u8], values: &[u8]) -> Result<Self, MarkerError> {
        let mut max_code = [-1; 17];
        let mut offset = [0; 17];
        let (mut code, mut index) = (0i32, 0i32);
        for length in 1..=16 {
            let count = i32::from(counts[length - 1]);
            offset[length] = index - code;
            code += count;
            index += count;
            if count > 0 {
                max_code[length] = code - 1;
            }
            // More codes than this length holds: no prefix code.
            if code > 1 << length {
                return Err(corrupt("a Huffman table (DHT) with more codes than fit"));
            }
            code <<= 1;
        }
        let mut lookup = vec![0u16; 1 << LOOKUP_BITS];
        let (mut code, mut index) = (0usize, 0usize);
        for length in 1..=LOOKUP_BITS {
            for _ in 0..counts[length as usize - 1] {
                let value = values.get(index).copied().unwrap_or(0);
                // Every prefix that starts with this code.
                let first = code << (LOOKUP_BITS - length);
                let span = 1 << (LOOKUP_BITS - length);
                if let Some(slots) = lookup.get_mut(first..first + span) {
                    slots.fill(((length as u16) << 8) | u16::from(value));
                }
                code += 1;
                index += 1;
            }
            code <<= 1;
        }
        Ok(Self {
            max_code,
            offset,
            values: values.to_vec(),
            lookup,
        })
    }

    /// The next value: through the lookup, or bit by bit for a longer code.
    #[inline(always)]
    fn decode(&self, bits: &mut Bits<'_>) -> Result<u8, PipelineError> {
        let entry = self.lookup[bits.peek(LOOKUP_BITS) as usize];
        if entry != 0 {
            bits.consume(u32::from(entry >> 8));
            return Ok(entry as u8);
        }
        self.decode_long(bits)
    }

    #[cold]
    fn decode_long(&self, bits: &mut Bits<'_>) -> Result<u8, PipelineError> {
        let mut code = 0i32;
        for length in 1..=16 {
            code = (code << 1) | bits.bit() as i32;
            if code <= self.max_code[length] {
                let at = (self.offset[length] + code) as usize;
                return self
                    .values
                    .get(at)
                    .copied()
                    .ok_or_else(|| corrupt("a Huffman code without a value").into());
            }
        }
        Err(corrupt("a Huffman code longer than 16 bits").into())
    }
}

/// Bits of the Huffman tables' lookups: codes up to this long (nearly all of them) are read
/// with one look.
const LOOKUP_BITS: u32 = 10;

fn corrupt(what: &str) -> MarkerError {
    MarkerError::Corrupt(what.to_owned())
}

/// One block of a DC scan: a first scan (`table`) decodes its difference from the previous
/// block of its component and stores the sum shifted up by `low`; a refinement adds bit `low`.
fn block(
    bits: &mut Bits<'_>,
    table: Option<&Huffman>,
    low: u32,
    prediction: &mut i32,
    value: Option<&mut i16>,
) -> Result<(), PipelineError> {
    match table {
        Some(table) => {
            let size = u32::from(table.decode(bits)?);
            if size > 11 {
                return Err(corrupt("a DC difference of more than 11 bits").into());
            }
            *prediction = prediction.wrapping_add(extend(bits.bits(size), size));
            if let Some(value) = value {
                // In range for any valid file (11 bits and a sign); a damaged one saturates.
                *value = prediction
                    .wrapping_shl(low)
                    .clamp(i32::from(i16::MIN), i32::from(i16::MAX))
                    as i16;
            }
        }
        None => {
            if bits.bit() == 1
                && let Some(value) = value
            {
                *value |= 1 << low;
            }
        }
    }
    Ok(())
}

/// The bits of one scan's entropy-coded data: stuffed 0xFF00 read as 0xFF, zeros once a
/// marker is reached (as libjpeg pads), restart markers stepped over between intervals.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
    buffer: u64,
    count: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            at: 0,
            buffer: 0,
            count: 0,
        }
    }

    fn fill(&mut self) {
        // As many whole bytes as fit at once, while none of the next eight is 0xFF (a stuffed
        // byte or a marker).
        if let Some(next) = self.data.get(self.at..self.at + 8) {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(next);
            let word = u64::from_be_bytes(eight);
            let inverted = !word;
            let has_ff =
                inverted.wrapping_sub(0x0101_0101_0101_0101) & !inverted & 0x8080_8080_8080_8080;
            if has_ff == 0 && self.count <= 56 {
                let take = (63 - self.count) / 8;
                self.buffer |= (word >> (64 - 8 * take)) << (64 - self.count - 8 * take);
                self.at += take as usize;
                self.count += 8 * take;
                return;
            }
        }
        while self.count <= 56 {
            let byte = match self.data.get(self.at) {
                Some(0xFF) if self.data.get(self.at + 1) == Some(&0) => {
                    self.at += 2;
                    0xFF
                }
                // A marker (or the end): zeros from here on, the position stays at it.
                Some(0xFF) | None => 0,
                Some(&byte) => {
                    self.at += 1;
                    byte
                }
            };
            self.buffer |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    fn bit(&mut self) -> u32 {
        self.bits(1)
    }

    /// The next `n` bits (at most 32), without taking them.
    fn peek(&mut self, n: u32) -> u32 {
        if self.count < 32 {
            self.fill();
        }
        (self.buffer >> (64 - n)) as u32
    }

    /// Takes `n` bits (at most 32) that [`Bits::peek`] made available.
    fn consume(&mut self, n: u32) {
        if self.count < n {
            self.fill();
        }
        self.buffer = self.buffer.checked_shl(n).unwrap_or(0);
        self.count = self.count.saturating_sub(n);
    }

    fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        if self.count < n {
            self.fill();
        }
        let value = (self.buffer >> (64 - n)) as u32;
        self.buffer <<= n;
        self.count -= n;
        value
    }

    /// Drops the rest of the byte and steps over the restart marker that must follow.
    fn restart(&mut self) -> Result<(), MarkerError> {
        self.buffer = 0;
        self.count = 0;
        let rest = &self.data[self.at.min(self.data.len())..];
        let found = rest
            .windows(2)
            .position(|pair| pair[0] == 0xFF && (0xD0..=0xD7).contains(&pair[1]))
            .ok_or_else(|| corrupt("a restart interval without its restart marker"))?;
        self.at += found + 2;
        Ok(())
    }
}

/// A signed value of `size` bits as T.81's EXTEND reads it.
fn extend(value: u32, size: u32) -> i32 {
    let value = value as i32;
    if size > 0 && value < 1 << (size - 1) {
        value - (1 << size) + 1
    } else {
        value
    }
}

/// What is kept per component: the DC coefficient of every padded block, and the DC
/// quantiser its first scan found in force.
struct Plane {
    coefficients: Vec<i16>,
    across: usize,
    quantiser: Option<u16>,
}

/// The DC coefficients of every component, decoded; [`DcImage::to_raster`] makes the image.
pub struct DcImage<'a> {
    frame: &'a Frame,
    planes: Vec<Plane>,
}

impl DcImage<'_> {
    /// The image at 1/8 of its size (each side rounded up), in `model`'s layout.
    pub fn to_raster(&self, model: ColourModel) -> Raster {
        to_raster(self.frame, &self.planes, model)
    }
}

/// Decodes the DC scans of `source` (walked into `structure`, for which [`applies`] holds),
/// handing each application segment (APPn marker and payload) to `application` on the way, so
/// that the file is read once.
pub fn decode<'a>(
    source: &[u8],
    structure: &'a Structure,
    stop: &Stop,
    mut application: impl FnMut(u8, &[u8]),
) -> Result<DcImage<'a>, PipelineError> {
    let frame = &structure.frame;
    let mut planes: Vec<Plane> = (0..frame.components.len())
        .map(|index| {
            let (across, down) = padded_blocks(frame, index);
            Plane {
                coefficients: vec![0; across * down],
                across,
                quantiser: None,
            }
        })
        .collect();
    let mut quantisers: [Option<u16>; 4] = [None; 4];
    let mut tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut restart_interval = 0u16;
    for segment in Segments::walked(source, structure)? {
        let segment = segment?;
        let payload = &source[segment.payload.clone()];
        match segment.marker {
            0xD9 => break,
            0xE0..=0xEF => application(segment.marker, payload),
            0xDB => read_quantisers(payload, &mut quantisers)?,
            0xC4 => read_dc_tables(payload, &mut tables)?,
            0xDD => restart_interval = markers::parse_restart_interval(payload)?,
            0xDA => {
                let header = markers::parse_scan(payload, frame)?;
                // AC scans are stepped over: the walk found where their data ends.
                if header.spectral_start != 0 {
                    continue;
                }
                let (data, _) = segment.data.unwrap_or_default();
                for c in &header.components {
                    let plane = &mut planes[c.index];
                    let table = frame.components[c.index].quant;
                    if plane.quantiser.is_none() {
                        plane.quantiser = quantisers.get(usize::from(table)).copied().flatten();
                    }
                }
                let scan = DcScan {
                    frame,
                    header: &header,
                    tables: &tables,
                    restart_interval: usize::from(restart_interval),
                };
                scan.decode(&source[data], &mut planes, stop)?;
            }
            _ => {}
        }
    }
    stop.check()?;
    Ok(DcImage { frame, planes })
}

/// DQT: 8-bit or 16-bit tables; the DC quantiser is each table's first entry.
fn read_quantisers(mut payload: &[u8], into: &mut [Option<u16>; 4]) -> Result<(), MarkerError> {
    while let [spec, rest @ ..] = payload {
        let (sixteen, id) = (spec >> 4 != 0, usize::from(spec & 0x0F));
        let size = if sixteen { 128 } else { 64 };
        if id > 3 || rest.len() < size {
            return Err(corrupt("a quantisation table (DQT) that does not fit"));
        }
        into[id] = Some(match sixteen {
            true => u16::from_be_bytes([rest[0], rest[1]]),
            false => u16::from(rest[0]),
        });
        payload = &rest[size..];
    }
    Ok(())
}

/// DHT: keeps the DC tables (class 0), steps over the AC ones.
fn read_dc_tables(mut payload: &[u8], into: &mut [Option<Huffman>; 4]) -> Result<(), MarkerError> {
    while let [spec, rest @ ..] = payload {
        let (class, id) = (spec >> 4, usize::from(spec & 0x0F));
        let counts = rest
            .get(..16)
            .ok_or_else(|| corrupt("a Huffman table (DHT) that is cut short"))?;
        let total: usize = counts.iter().map(|&n| usize::from(n)).sum();
        let values = rest
            .get(16..16 + total)
            .ok_or_else(|| corrupt("a Huffman table (DHT) that is cut short"))?;
        if class > 1 || id > 3 {
            return Err(corrupt("a Huffman table (DHT) of no class or place"));
        }
        if class == 0 {
            into[id] = Some(Huffman::parse(counts, values)?);
        }
        payload = &rest[16 + total..];
    }
    Ok(())
}

/// One DC scan: a first one (Ah = 0) codes each block's difference from the previous block of
/// its component, shifted up by Al; a refinement adds bit Al of every block.
struct DcScan<'a> {
    frame: &'a Frame,
    header: &'a ScanHeader,
    tables: &'a [Option<Huffman>; 4],
    restart_interval: usize,
}

impl DcScan<'_> {
    fn decode(&self, data: &[u8], planes: &mut [Plane], stop: &Stop) -> Result<(), PipelineError> {
        let header = self.header;
        let first = header.high == 0;
        let low = u32::from(header.low.min(13));
        let tables: Vec<&Huffman> = match first {
            true => header
                .components
                .iter()
                .map(|c| {
                    self.tables[usize::from(c.dc_table & 3)]
                        .as_ref()
                        .ok_or_else(|| corrupt("a DC scan whose Huffman table is not defined"))
                })
                .collect::<Result<_, _>>()?,
            false => Vec::new(),
        };
        // Per component of the scan, found once: its blocks per MCU and its plane.
        let single = header.components.len() == 1;
        let members: Vec<(usize, usize, usize)> = header
            .components
            .iter()
            .map(|c| {
                let sampling = self.frame.components[c.index];
                match single {
                    true => (1, 1, c.index),
                    false => (usize::from(sampling.h), usize::from(sampling.v), c.index),
                }
            })
            .collect();
        let mut bits = Bits::new(data);
        let mut predictions = vec![0i32; header.components.len()];
        let (across, down) = self.units();
        let mut number = 0usize;
        // MCUs left before the next restart marker.
        let mut until_restart = self.restart_interval;
        for y in 0..down {
            for x in 0..across {
                if self.restart_interval > 0 {
                    if until_restart == 0 {
                        bits.restart()?;
                        predictions.iter_mut().for_each(|p| *p = 0);
                        until_restart = self.restart_interval;
                    }
                    until_restart -= 1;
                }
                if number.is_multiple_of(MCUS_PER_CHECK) {
                    stop.check()?;
                }
                number += 1;
                for (k, &(h_blocks, v_blocks, index)) in members.iter().enumerate() {
                    let plane = &mut planes[index];
                    for v in 0..v_blocks {
                        let row = (y * v_blocks + v) * plane.across + x * h_blocks;
                        for h in 0..h_blocks {
                            block(
                                &mut bits,
                                tables.get(k).copied(),
                                low,
                                &mut predictions[k],
                                plane.coefficients.get_mut(row + h),
                            )?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The MCUs of the scan across and down: the component's own blocks when the scan holds
    /// one component, else the interleaved MCU grid.
    fn units(&self) -> (usize, usize) {
        let (across, down) = match self.header.components.as_slice() {
            [one] => {
                let (a, d) = self.frame.blocks_of(one.index);
                (a as usize, d as usize)
            }
            _ => {
                let (h_max, v_max) = max_sampling(self.frame);
                (
                    self.frame.width.div_ceil(8 * u32::from(h_max)) as usize,
                    self.frame.height.div_ceil(8 * u32::from(v_max)) as usize,
                )
            }
        };
        (across, down)
    }
}

/// The samples of every component at 1/8 scale, upsampled to the luma grid, then converted.
fn to_raster(frame: &Frame, planes: &[Plane], model: ColourModel) -> Raster {
    let (width, height) = (frame.width.div_ceil(8), frame.height.div_ceil(8));
    let (h_max, v_max) = max_sampling(frame);
    let samples: Vec<Vec<u8>> = planes
        .iter()
        .enumerate()
        .map(|(index, plane)| {
            let c = frame.components[index];
            let (across, down) = frame.blocks_of(index);
            let quantiser = i32::from(plane.quantiser.unwrap_or(1));
            let (across, down) = (across as usize, down as usize);
            let mut own = Vec::with_capacity(across * down);
            for row in plane.coefficients.chunks(plane.across).take(down) {
                own.extend(row.iter().take(across).map(|&coefficient| {
                    // libjpeg's 1x1 IDCT: the dequantised DC over 8, rounded, centred on 128.
                    // Two bytes times two bytes cannot overflow.
                    let mean = (i32::from(coefficient) * quantiser + 4) >> 3;
                    (mean + 128).clamp(0, 255) as u8
                }));
            }
            upsample(
                &own,
                (across, down),
                (usize::from(h_max / c.h), usize::from(v_max / c.v)),
                (width as usize, height as usize),
            )
        })
        .collect();
    let pixels = (width * height) as usize;
    match (model, samples.as_slice()) {
        (ColourModel::Grey, [grey, ..]) => Raster::new(width, height, Layout::Gray, grey.clone()),
        (ColourModel::Rgb | ColourModel::YCbCr, [a, b, c, ..]) => {
            let mut out = Vec::with_capacity(pixels * 3);
            for ((&a, &b), &c) in a.iter().zip(b).zip(c) {
                let rgb = match model {
                    ColourModel::YCbCr => ycc_to_rgb(a, b, c),
                    _ => [a, b, c],
                };
                out.extend_from_slice(&rgb);
            }
            Raster::new(width, height, Layout::Rgb, out)
        }
        (_, [a, b, c, k, ..]) => {
            let mut out = Vec::with_capacity(pixels * 4);
            for (((&a, &b), &c), &k) in a.iter().zip(b).zip(c).zip(k) {
                let cmy = match model {
                    // libjpeg's YCCK to CMYK: the YCC part as RGB, inverted.
                    ColourModel::Ycck => ycc_to_rgb(a, b, c).map(|v| 255 - v),
                    _ => [a, b, c],
                };
                out.extend_from_slice(&[cmy[0], cmy[1], cmy[2], k]);
            }
            Raster::new(width, height, Layout::Cmyk, out)
        }
        // `applies` admits 1, 3 or 4 components, and the model follows their number.
        (_, planes) => Raster::new(
            width,
            height,
            Layout::Gray,
            planes.first().cloned().unwrap_or_else(|| vec![128; pixels]),
        ),
    }
}

/// JFIF's YCbCr to RGB (libjpeg's coefficients, 16-bit fixed point, rounded).
fn ycc_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    const ONE: i32 = 1 << 16;
    const HALF: i32 = 1 << 15;
    let (y, cb, cr) = (
        i32::from(y) * ONE + HALF,
        i32::from(cb) - 128,
        i32::from(cr) - 128,
    );
    let r = y + 91_881 * cr;
    let g = y - 22_554 * cb - 46_802 * cr;
    let b = y + 116_130 * cb;
    [r, g, b].map(|v| (v >> 16).clamp(0, 255) as u8)
}

/// A plane of `own` samples enlarged by whole `factor`s and cut to `size`: linear
/// interpolation between sample centres for a factor of 2 (as libjpeg's fancy upsampling),
/// repetition otherwise.
fn upsample(
    own: &[u8],
    (across, down): (usize, usize),
    factor: (usize, usize),
    (width, height): (usize, usize),
) -> Vec<u8> {
    // Full-resolution planes (luma, unsubsampled chroma) are already the image.
    if factor == (1, 1) && (across, down) == (width, height) {
        return own.to_vec();
    }
    // The weights of the two nearest samples along one axis, in quarters.
    // Past the last sample (the image's padding), both taps are the last one.
    let taps = |position: usize, f: usize, n: usize| -> (usize, usize, i32) {
        let own = position / f;
        if f != 2 {
            return (own.min(n - 1), own.min(n - 1), 4);
        }
        let neighbour = match position % 2 {
            0 => own.saturating_sub(1),
            _ => own + 1,
        };
        (own.min(n - 1), neighbour.min(n - 1), 3)
    };
    // The taps of each column, found once for all rows.
    let columns: Vec<(usize, usize, i32)> = (0..width).map(|x| taps(x, factor.0, across)).collect();
    let mut out = Vec::with_capacity(width * height);
    for y in 0..height {
        let (y0, y1, wy) = taps(y, factor.1, down);
        let (row0, row1) = (&own[y0 * across..][..across], &own[y1 * across..][..across]);
        out.extend(columns.iter().map(|&(x0, x1, wx)| {
            let near = wx * i32::from(row0[x0]) + (4 - wx) * i32::from(row0[x1]);
            let far = wx * i32::from(row1[x0]) + (4 - wx) * i32::from(row1[x1]);
            ((wy * near + (4 - wy) * far + 8) >> 4) as u8
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::jpeg;
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

    /// The DC path's image and libjpeg's own 1/8 decode of `source`.
    fn both(source: &[u8]) -> Result<(Raster, Raster), Box<dyn std::error::Error>> {
        let structure = markers::walk(source, 100).map_err(|e| format!("{e:?}"))?;
        assert!(applies(&structure), "{:?}", structure.frame);
        // A target that asks for an eighth of the size.
        let target = u32::from(WIDTH) / 16;
        let stop = Stop::default();
        let ours = jpeg::decode(source, &structure, target, &stop)?.raster;
        let theirs = jpeg::libjpeg(source, &structure, target, &stop)?.raster;
        assert_eq!(
            (ours.width, ours.height, ours.layout),
            (theirs.width, theirs.height, theirs.layout)
        );
        assert_eq!((ours.width, ours.height), (126, 95));
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

    #[test]
    fn without_subsampled_chroma_the_dc_scans_give_libjpegs_eighth() -> TestResult {
        let cases = [
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
        ];
        for (name, source) in cases {
            assert!(!source.is_empty(), "{name}: not encoded");
            let (ours, theirs) = both(&source)?;
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
            if !applies(&structure) {
                continue;
            }
            match jpeg::decode(&source, &structure, 62, &Stop::default()) {
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
        let cases = [
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
        ];
        for (name, source) in cases {
            assert!(!source.is_empty(), "{name}: not encoded");
            let (ours, theirs) = both(&source)?;
            let (largest, psnr) = difference(&ours, &theirs);
            eprintln!("{name}: largest {largest}, {psnr:.1} dB");
            assert!(psnr >= 35.0, "{name}: {psnr:.1} dB (largest {largest})");
        }
        Ok(())
    }
}
