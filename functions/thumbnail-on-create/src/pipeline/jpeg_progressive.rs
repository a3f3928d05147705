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

/// MCUs (one block each in a single-component scan) decoded between two looks at the stop.
const MCUS_PER_CHECK: usize = 4096;

/// libjpeg's jpeg_natural_order: the position in the 8x8 block of each zig-zag index.
const NATURAL: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];
/// A zig-zag index whose coefficient is not kept.
const NOT_KEPT: u8 = u8::MAX;

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

/// What is kept per component: for every padded block its kept coefficients (the top left
/// `side` x `side` of the 8x8, row by row) and at sides over 1 which of its 64 are non-zero,
/// and the quantisation table its first scan found in force.
struct Plane {
    coefficients: Vec<i16>,
    nonzero: Vec<u64>,
    across: usize,
    side: usize,
    /// For each zig-zag index, where its coefficient is kept in a block, or [`NOT_KEPT`].
    slots: [u8; 64],
    /// The zig-zag indices whose coefficients are kept, as bits.
    kept: u64,
    /// In natural order.
    quantisers: Option<[u16; 64]>,
}

impl Plane {
    fn new(frame: &Frame, index: usize, side: usize) -> Self {
        let (across, down) = padded_blocks(frame, index);
        let own = component_side(frame, index, side);
        let mut slots = [NOT_KEPT; 64];
        for (slot, &natural) in slots.iter_mut().zip(&NATURAL) {
            let (row, column) = (usize::from(natural / 8), usize::from(natural % 8));
            if row < own && column < own {
                *slot = (row * own + column) as u8;
            }
        }
        let kept = (0..64)
            .filter(|&k| slots[k] != NOT_KEPT)
            .fold(0u64, |kept, k| kept | 1 << k);
        Self {
            coefficients: vec![0; across * down * own * own],
            nonzero: match side {
                1 => Vec::new(),
                _ => vec![0; across * down],
            },
            across,
            side: own,
            slots,
            kept,
            quantisers: None,
        }
    }

    /// The samples of this component's blocks (`blocks` across and down), cut to `size`.
    fn samples(&self, blocks: (usize, usize), (width, height): (usize, usize)) -> Vec<u8> {
        let quantisers = self.quantisers.unwrap_or([1; 64]);
        let mut out = vec![0u8; width * height];
        match self.side {
            1 => {
                for (row, line) in out.chunks_mut(width.max(1)).enumerate() {
                    let blocks = &self.coefficients[row * self.across..][..width];
                    for (sample, &coefficient) in line.iter_mut().zip(blocks) {
                        // libjpeg's 1x1 IDCT: the dequantised DC over 8, rounded, centred on
                        // 128. Two bytes times two bytes cannot overflow.
                        let mean = (i32::from(coefficient) * i32::from(quantisers[0]) + 4) >> 3;
                        *sample = (mean + 128).clamp(0, 255) as u8;
                    }
                }
            }
            4 => self.idct::<4>(blocks, (width, height), &quantisers, &mut out),
            _ => self.idct::<8>(blocks, (width, height), &quantisers, &mut out),
        }
        out
    }

    /// The samples of `blocks` through an N x N IDCT, into `out` (`width` x `height`).
    fn idct<const N: usize>(
        &self,
        blocks: (usize, usize),
        (width, height): (usize, usize),
        quantisers: &[u16; 64],
        out: &mut [u8],
    ) {
        let idct = Idct::<N>::new(quantisers);
        let mut block = [[0u8; N]; N];
        for y in 0..blocks.1 {
            for x in 0..blocks.0 {
                let at = (y * self.across + x) * N * N;
                idct.run(&self.coefficients[at..][..N * N], &mut block);
                for (row, samples) in block.iter().enumerate() {
                    let (out_y, out_x) = (y * N + row, x * N);
                    if out_y >= height || out_x >= width {
                        continue;
                    }
                    let take = N.min(width - out_x);
                    out[out_y * width + out_x..][..take].copy_from_slice(&samples[..take]);
                }
            }
        }
    }
}

/// The IDCT of the N x N lowest frequencies of a block to N x N samples: the block's
/// continuous reconstruction from those frequencies, each sample the mean over the 8/N x 8/N
/// full-size samples it stands for, scaled so that the DC alone gives its mean (as libjpeg's
/// 1x1).
struct Idct<const N: usize> {
    /// `basis[x][u]`: c(u) cos((2x + 1) u pi / 2N) times the mean of frequency u's cosine
    /// over the full-size samples; c(0) = 1, else sqrt 2.
    basis: [[f32; N]; N],
    /// The quantisers of the kept coefficients, row by row, over 8.
    scale: [[f32; N]; N],
}

impl<const N: usize> Idct<N> {
    fn new(quantisers: &[u16; 64]) -> Self {
        use std::f64::consts::{PI, SQRT_2};
        let m = (8 / N) as f64;
        let mut basis = [[0f32; N]; N];
        for (x, row) in basis.iter_mut().enumerate() {
            for (u, value) in row.iter_mut().enumerate() {
                let (c, mean) = match u {
                    0 => (1.0, 1.0),
                    _ => {
                        let half = u as f64 * PI / 16.0;
                        (SQRT_2, (m * half).sin() / (m * half.sin()))
                    }
                };
                let angle = ((2 * x + 1) * u) as f64 * PI / (2 * N) as f64;
                *value = (c * mean * angle.cos()) as f32;
            }
        }
        let mut scale = [[0f32; N]; N];
        for (v, row) in scale.iter_mut().enumerate() {
            for (u, value) in row.iter_mut().enumerate() {
                *value = f32::from(quantisers[v * 8 + u]) / 8.0;
            }
        }
        Self { basis, scale }
    }

    fn run(&self, coefficients: &[i16], out: &mut [[u8; N]; N]) {
        // Rows first: for each kept row of frequencies v, its values across the grid.
        let mut rows = [[0f32; N]; N];
        for (v, across) in rows.iter_mut().enumerate() {
            let frequencies = &coefficients[v * N..][..N];
            if frequencies.iter().all(|&f| f == 0) {
                continue;
            }
            let mut dequantised = [0f32; N];
            for (d, (&f, &q)) in dequantised
                .iter_mut()
                .zip(frequencies.iter().zip(&self.scale[v]))
            {
                *d = f32::from(f) * q;
            }
            for (value, basis) in across.iter_mut().zip(&self.basis) {
                *value = dequantised.iter().zip(basis).map(|(d, b)| d * b).sum();
            }
        }
        for (samples, basis) in out.iter_mut().zip(&self.basis) {
            for (x, sample) in samples.iter_mut().enumerate() {
                let sum: f32 = rows.iter().zip(basis).map(|(row, b)| row[x] * b).sum();
                *sample = (sum + 128.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
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

/// The Huffman tables in force: DC (class 0) and AC (class 1).
#[derive(Default)]
struct Tables {
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
}

impl Tables {
    /// DHT: keeps the DC tables, and the AC ones when `ac`.
    fn read(&mut self, mut payload: &[u8], ac: bool) -> Result<(), MarkerError> {
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
            match (class, ac) {
                (0, _) => self.dc[id] = Some(Huffman::parse(counts, values)?),
                (_, true) => self.ac[id] = Some(Huffman::parse(counts, values)?),
                _ => {}
            }
            payload = &rest[16 + total..];
        }
        Ok(())
    }
}

/// One scan. A DC scan's first pass (Ah = 0) codes each block's difference from the previous
/// block of its component, shifted up by Al, and a refinement adds bit Al of every block. An
/// AC scan holds one component and a band of its coefficients, the same way.
struct Scan<'a> {
    frame: &'a Frame,
    header: &'a ScanHeader,
    tables: &'a Tables,
    restart_interval: usize,
}

impl Scan<'_> {
    fn decode_dc(
        &self,
        data: &[u8],
        planes: &mut [Plane],
        stop: &Stop,
    ) -> Result<(), PipelineError> {
        let header = self.header;
        let first = header.high == 0;
        let low = u32::from(header.low.min(13));
        let tables: Vec<&Huffman> = match first {
            true => header
                .components
                .iter()
                .map(|c| {
                    self.tables.dc[usize::from(c.dc_table & 3)]
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
        let mut cadence = Cadence::new(self.restart_interval);
        for y in 0..down {
            for x in 0..across {
                if cadence.next(&mut bits, stop)? {
                    predictions.iter_mut().for_each(|p| *p = 0);
                }
                for (k, &(h_blocks, v_blocks, index)) in members.iter().enumerate() {
                    let plane = &mut planes[index];
                    let stride = plane.side * plane.side;
                    for v in 0..v_blocks {
                        let row = (y * v_blocks + v) * plane.across + x * h_blocks;
                        for h in 0..h_blocks {
                            block(
                                &mut bits,
                                tables.get(k).copied(),
                                low,
                                &mut predictions[k],
                                plane.coefficients.get_mut((row + h) * stride),
                            )?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// An AC scan: its component's own blocks, row by row; an end-of-band run carries over
    /// blocks until a restart.
    fn decode_ac(
        &self,
        data: &[u8],
        planes: &mut [Plane],
        stop: &Stop,
    ) -> Result<(), PipelineError> {
        let header = self.header;
        let [component] = header.components.as_slice() else {
            return Err(corrupt("an AC scan of more than one component").into());
        };
        let band = Band {
            start: usize::from(header.spectral_start),
            end: usize::from(header.spectral_end),
            low: u32::from(header.low.min(13)),
        };
        if band.start > band.end || band.end > 63 {
            return Err(corrupt("an AC scan whose band is not within 1-63").into());
        }
        let table = self.tables.ac[usize::from(component.ac_table & 3)]
            .as_ref()
            .ok_or_else(|| corrupt("an AC scan whose Huffman table is not defined"))?;
        let plane = &mut planes[component.index];
        let stride = plane.side * plane.side;
        let (across, down) = self.units();
        let mut bits = Bits::new(data);
        let mut run = 0u32;
        let mut cadence = Cadence::new(self.restart_interval);
        for y in 0..down {
            for x in 0..across {
                if cadence.next(&mut bits, stop)? {
                    run = 0;
                }
                let at = y * plane.across + x;
                let mut block = Block {
                    coefficients: &mut plane.coefficients[at * stride..][..stride],
                    nonzero: &mut plane.nonzero[at],
                    slots: &plane.slots,
                    kept: plane.kept,
                };
                match header.high {
                    0 => band.first(&mut bits, table, &mut run, &mut block)?,
                    _ => band.refine(&mut bits, table, &mut run, &mut block)?,
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

/// Where a scan is among its restart intervals, and when it next looks at the stop.
struct Cadence {
    /// MCUs per restart interval; 0 without restarts.
    interval: usize,
    /// MCUs left before the next restart marker.
    until_restart: usize,
    decoded: usize,
}

impl Cadence {
    fn new(interval: usize) -> Self {
        Self {
            interval,
            until_restart: interval,
            decoded: 0,
        }
    }

    /// Before each MCU: steps over the restart marker that ends an interval (then `true`:
    /// what the entropy coding carries from one MCU to the next starts again), and looks at
    /// the stop every [`MCUS_PER_CHECK`] MCUs.
    fn next(&mut self, bits: &mut Bits<'_>, stop: &Stop) -> Result<bool, PipelineError> {
        let mut restarted = false;
        if self.interval > 0 {
            if self.until_restart == 0 {
                bits.restart()?;
                restarted = true;
                self.until_restart = self.interval;
            }
            self.until_restart -= 1;
        }
        if self.decoded.is_multiple_of(MCUS_PER_CHECK) {
            stop.check()?;
        }
        self.decoded += 1;
        Ok(restarted)
    }
}

/// One block's kept coefficients and mask of non-zero ones, as an AC scan reaches it.
struct Block<'a> {
    coefficients: &'a mut [i16],
    nonzero: &'a mut u64,
    slots: &'a [u8; 64],
    kept: u64,
}

impl Block<'_> {
    fn set(&mut self, k: usize, value: i32) {
        *self.nonzero |= 1 << k;
        if let Some(kept) = self.kept(k) {
            // In range for any valid file; a damaged one saturates.
            *kept = value.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        }
    }

    fn kept(&mut self, k: usize) -> Option<&mut i16> {
        match self.slots[k] {
            NOT_KEPT => None,
            slot => self.coefficients.get_mut(usize::from(slot)),
        }
    }

    /// The correction bits of the non-zero coefficients in `passed`, lowest index first; only
    /// the kept ones are corrected, the others' bits are read and dropped.
    fn correct_all(&mut self, bits: &mut Bits<'_>, passed: u64, one: i32) {
        let mut rest = passed;
        while rest != 0 {
            let k = rest.trailing_zeros();
            if bits.bit() == 1 && (self.kept >> k) & 1 == 1 {
                self.correct(k as usize, one);
            }
            rest &= rest - 1;
        }
    }

    /// A refinement's correction of the non-zero coefficient `k`: bit `one` joins its
    /// magnitude (T.81 G.1.2.3).
    fn correct(&mut self, k: usize, one: i32) {
        if let Some(kept) = self.kept(k) {
            let value = i32::from(*kept);
            if value & one == 0 {
                let corrected = if value >= 0 { value + one } else { value - one };
                *kept = corrected.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
            }
        }
    }
}

/// An AC scan's band of zig-zag indices and the bit position its values start at.
struct Band {
    start: usize,
    end: usize,
    low: u32,
}

impl Band {
    /// A first pass over the band (T.81 G.1.2.2): run-length coded values, or an end-of-band
    /// run that skips this block and `run` more.
    fn first(
        &self,
        bits: &mut Bits<'_>,
        table: &Huffman,
        run: &mut u32,
        block: &mut Block<'_>,
    ) -> Result<(), PipelineError> {
        if *run > 0 {
            *run -= 1;
            return Ok(());
        }
        let mut k = self.start;
        while k <= self.end {
            let symbol = table.decode(bits)?;
            let (zeros, size) = (usize::from(symbol >> 4), u32::from(symbol & 15));
            if size == 0 {
                if zeros < 15 {
                    *run = (1 << zeros) - 1 + bits.bits(zeros as u32);
                    break;
                }
                k += 16;
                continue;
            }
            k += zeros;
            if k > self.end {
                return Err(corrupt("an AC coefficient past the end of its band").into());
            }
            block.set(k, extend(bits.bits(size), size).wrapping_shl(self.low));
            k += 1;
        }
        Ok(())
    }

    /// A refinement pass (T.81 G.1.2.3): a correction bit for every coefficient already
    /// non-zero in the band, and new coefficients of magnitude 1 placed among the zero ones.
    fn refine(
        &self,
        bits: &mut Bits<'_>,
        table: &Huffman,
        run: &mut u32,
        block: &mut Block<'_>,
    ) -> Result<(), PipelineError> {
        let one = 1i32 << self.low;
        let band = below(self.end + 1) & (!0u64 << self.start);
        let mut k = self.start;
        if *run == 0 {
            while k <= self.end {
                let symbol = table.decode(bits)?;
                let (zeros, size) = (u32::from(symbol >> 4), symbol & 15);
                let mut value = 0;
                if size != 0 {
                    // The size is 1 in any valid file; libjpeg takes any other as 1 too.
                    value = if bits.bit() == 1 { one } else { -one };
                } else if zeros != 15 {
                    *run = (1 << zeros) + bits.bits(zeros);
                    break;
                }
                // Step over `zeros` coefficients that are still zero, correcting the non-zero
                // ones on the way; a new value goes to the zero one after them (a run of 16
                // zeros ends on the sixteenth).
                let ahead = band & (!0u64 << k);
                let mut zero = !*block.nonzero & ahead;
                for _ in 0..zeros {
                    zero &= zero.wrapping_sub(1);
                }
                let target = match zero {
                    0 => self.end + 1,
                    _ => zero.trailing_zeros() as usize,
                };
                block.correct_all(bits, *block.nonzero & ahead & below(target), one);
                k = target;
                if value != 0 {
                    if k > self.end {
                        return Err(corrupt("an AC coefficient past the end of its band").into());
                    }
                    block.set(k, value);
                }
                k += 1;
            }
        }
        if *run > 0 {
            if k <= self.end {
                block.correct_all(bits, *block.nonzero & band & (!0u64 << k), one);
            }
            *run -= 1;
        }
        Ok(())
    }
}

/// The bits of the indices below `end` (at most 64).
fn below(end: usize) -> u64 {
    match end {
        64.. => u64::MAX,
        _ => (1 << end) - 1,
    }
}

/// The samples of every component at `side` / 8 scale, upsampled to the luma grid, then
/// converted.
fn to_raster(frame: &Frame, planes: &[Plane], side: usize, model: ColourModel) -> Raster {
    let (width, height) = (scaled(frame.width, side), scaled(frame.height, side));
    let (h_max, v_max) = max_sampling(frame);
    let samples: Vec<Vec<u8>> = planes
        .iter()
        .enumerate()
        .map(|(index, plane)| {
            let c = frame.components[index];
            // The component's own size (libjpeg's downsampled_width and _height) at its side.
            let own = (
                scaled(
                    (u64::from(frame.width) * u64::from(c.h)).div_ceil(u64::from(h_max)) as u32,
                    plane.side,
                ) as usize,
                scaled(
                    (u64::from(frame.height) * u64::from(c.v)).div_ceil(u64::from(v_max)) as u32,
                    plane.side,
                ) as usize,
            );
            let blocks = frame.blocks_of(index);
            let own_samples = plane.samples((blocks.0 as usize, blocks.1 as usize), own);
            upsample(
                own_samples,
                own,
                enlargement(frame, index, side).unwrap_or((1, 1)),
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
    own: Vec<u8>,
    (across, down): (usize, usize),
    factor: (usize, usize),
    (width, height): (usize, usize),
) -> Vec<u8> {
    // Full-resolution planes (luma, unsubsampled chroma) are already the image.
    if factor == (1, 1) && (across, down) == (width, height) {
        return own;
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
