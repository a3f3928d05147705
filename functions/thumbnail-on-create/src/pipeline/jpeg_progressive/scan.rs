//! Decoding one scan into the planes: DC first passes and refinements, AC first passes and
//! refinements with their end-of-band runs, restart intervals, and a look at the stop every
//! few thousand blocks.

use bucketfn::budget::Stop;

use super::PipelineError;
use super::entropy::{Bits, Huffman, Tables, extend};
use super::markers::{Frame, ScanHeader};
use super::planes::{NOT_KEPT, Plane};
use super::{corrupt, max_sampling};

/// MCUs (one block each in a single-component scan) decoded between two looks at the stop.
pub(super) const MCUS_PER_CHECK: usize = 4096;

/// One block of a DC scan: a first scan (`table`) decodes its difference from the previous
/// block of its component and stores the sum shifted up by `low`; a refinement adds bit `low`.
pub(super) fn block(
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

/// One scan. A DC scan's first pass (Ah = 0) codes each block's difference from the previous
/// block of its component, shifted up by Al, and a refinement adds bit Al of every block. An
/// AC scan holds one component and a band of its coefficients, the same way.
pub(super) struct Scan<'a> {
    pub(super) frame: &'a Frame,
    pub(super) header: &'a ScanHeader,
    pub(super) tables: &'a Tables,
    pub(super) restart_interval: usize,
}

impl Scan<'_> {
    pub(super) fn decode_dc(
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
    pub(super) fn decode_ac(
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
    pub(super) fn units(&self) -> (usize, usize) {
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
pub(super) struct Cadence {
    /// MCUs per restart interval; 0 without restarts.
    pub(super) interval: usize,
    /// MCUs left before the next restart marker.
    pub(super) until_restart: usize,
    pub(super) decoded: usize,
}

impl Cadence {
    pub(super) fn new(interval: usize) -> Self {
        Self {
            interval,
            until_restart: interval,
            decoded: 0,
        }
    }

    /// Before each MCU: steps over the restart marker that ends an interval (then `true`:
    /// what the entropy coding carries from one MCU to the next starts again), and looks at
    /// the stop every [`MCUS_PER_CHECK`] MCUs.
    pub(super) fn next(&mut self, bits: &mut Bits<'_>, stop: &Stop) -> Result<bool, PipelineError> {
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
pub(super) struct Block<'a> {
    pub(super) coefficients: &'a mut [i16],
    pub(super) nonzero: &'a mut u64,
    pub(super) slots: &'a [u8; 64],
    pub(super) kept: u64,
}

impl Block<'_> {
    pub(super) fn set(&mut self, k: usize, value: i32) {
        *self.nonzero |= 1 << k;
        if let Some(kept) = self.kept(k) {
            // In range for any valid file; a damaged one saturates.
            *kept = value.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        }
    }

    pub(super) fn kept(&mut self, k: usize) -> Option<&mut i16> {
        match self.slots[k] {
            NOT_KEPT => None,
            slot => self.coefficients.get_mut(usize::from(slot)),
        }
    }

    /// The correction bits of the non-zero coefficients in `passed`, lowest index first; only
    /// the kept ones are corrected, the others' bits are read and dropped.
    pub(super) fn correct_all(&mut self, bits: &mut Bits<'_>, passed: u64, one: i32) {
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
    pub(super) fn correct(&mut self, k: usize, one: i32) {
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
pub(super) struct Band {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) low: u32,
}

impl Band {
    /// A first pass over the band (T.81 G.1.2.2): run-length coded values, or an end-of-band
    /// run that skips this block and `run` more.
    pub(super) fn first(
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
    pub(super) fn refine(
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
pub(super) fn below(end: usize) -> u64 {
    match end {
        64.. => u64::MAX,
        _ => (1 << end) - 1,
    }
}
