//! What is kept of each component: per block the coefficients a scale reads and which of its
//! 64 are non-zero, and the reduced IDCT that makes them samples.

use super::markers::Frame;
use super::{component_side, padded_blocks};

/// libjpeg's jpeg_natural_order: the position in the 8x8 block of each zig-zag index.
pub(super) const NATURAL: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];
/// A zig-zag index whose coefficient is not kept.
pub(super) const NOT_KEPT: u8 = u8::MAX;

/// What is kept per component: for every padded block its kept coefficients (the top left
/// `side` x `side` of the 8x8, row by row) and at sides over 1 which of its 64 are non-zero,
/// and the quantisation table its first scan found in force.
pub(super) struct Plane {
    pub(super) coefficients: Vec<i16>,
    pub(super) nonzero: Vec<u64>,
    pub(super) across: usize,
    pub(super) side: usize,
    /// For each zig-zag index, where its coefficient is kept in a block, or [`NOT_KEPT`].
    pub(super) slots: [u8; 64],
    /// The zig-zag indices whose coefficients are kept, as bits.
    pub(super) kept: u64,
    /// In natural order.
    pub(super) quantisers: Option<[u16; 64]>,
}

impl Plane {
    pub(super) fn new(frame: &Frame, index: usize, side: usize) -> Self {
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
    pub(super) fn samples(
        &self,
        blocks: (usize, usize),
        (width, height): (usize, usize),
    ) -> Vec<u8> {
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
    pub(super) fn idct<const N: usize>(
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
pub(super) struct Idct<const N: usize> {
    /// `basis[x][u]`: c(u) cos((2x + 1) u pi / 2N) times the mean of frequency u's cosine
    /// over the full-size samples; c(0) = 1, else sqrt 2.
    pub(super) basis: [[f32; N]; N],
    /// The quantisers of the kept coefficients, row by row, over 8.
    pub(super) scale: [[f32; N]; N],
}

impl<const N: usize> Idct<N> {
    pub(super) fn new(quantisers: &[u16; 64]) -> Self {
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

    pub(super) fn run(&self, coefficients: &[i16], out: &mut [[u8; N]; N]) {
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
