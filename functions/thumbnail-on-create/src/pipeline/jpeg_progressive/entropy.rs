//! The entropy-coded data of a progressive scan: the bit reader (byte stuffing, restart
//! markers, libjpeg's zero padding at a marker) and the Huffman tables (DHT) it decodes with.

use super::markers::MarkerError;
use super::{PipelineError, corrupt};

/// A Huffman table (DHT) as the decoding procedure of T.81 F.2.2.3 reads it.
#[derive(Clone)]
pub(super) struct Huffman {
    /// Per code length 1..=16: the largest code of that length (or -1), and where its values
    /// start in `values` minus the smallest code.
    pub(super) max_code: [i32; 17],
    pub(super) offset: [i32; 17],
    pub(super) values: Vec<u8>,
    /// For each [`LOOKUP_BITS`]-bit prefix that starts with a code of at most that many bits:
    /// `(length << 8) | value`; 0 where a longer code starts.
    pub(super) lookup: Vec<u16>,
}

impl Huffman {
    pub(super) fn parse(counts: &[u8], values: &[u8]) -> Result<Self, MarkerError> {
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
    pub(super) fn decode(&self, bits: &mut Bits<'_>) -> Result<u8, PipelineError> {
        let entry = self.lookup[bits.peek(LOOKUP_BITS) as usize];
        if entry != 0 {
            bits.consume(u32::from(entry >> 8));
            return Ok(entry as u8);
        }
        self.decode_long(bits)
    }

    #[cold]
    pub(super) fn decode_long(&self, bits: &mut Bits<'_>) -> Result<u8, PipelineError> {
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
pub(super) const LOOKUP_BITS: u32 = 10;

/// The bits of one scan's entropy-coded data: stuffed 0xFF00 read as 0xFF, zeros once a
/// marker is reached (as libjpeg pads), restart markers stepped over between intervals.
pub(super) struct Bits<'a> {
    pub(super) data: &'a [u8],
    pub(super) at: usize,
    pub(super) buffer: u64,
    pub(super) count: u32,
}

impl<'a> Bits<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            at: 0,
            buffer: 0,
            count: 0,
        }
    }

    pub(super) fn fill(&mut self) {
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

    pub(super) fn bit(&mut self) -> u32 {
        self.bits(1)
    }

    /// The next `n` bits (at most 32), without taking them.
    pub(super) fn peek(&mut self, n: u32) -> u32 {
        if self.count < 32 {
            self.fill();
        }
        (self.buffer >> (64 - n)) as u32
    }

    /// Takes `n` bits (at most 32) that [`Bits::peek`] made available.
    pub(super) fn consume(&mut self, n: u32) {
        if self.count < n {
            self.fill();
        }
        self.buffer = self.buffer.checked_shl(n).unwrap_or(0);
        self.count = self.count.saturating_sub(n);
    }

    pub(super) fn bits(&mut self, n: u32) -> u32 {
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
    pub(super) fn restart(&mut self) -> Result<(), MarkerError> {
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
pub(super) fn extend(value: u32, size: u32) -> i32 {
    let value = value as i32;
    if size > 0 && value < 1 << (size - 1) {
        value - (1 << size) + 1
    } else {
        value
    }
}

/// The Huffman tables in force: DC (class 0) and AC (class 1).
#[derive(Default)]
pub(super) struct Tables {
    pub(super) dc: [Option<Huffman>; 4],
    pub(super) ac: [Option<Huffman>; 4],
}

impl Tables {
    /// DHT: keeps the DC tables, and the AC ones when `ac`.
    pub(super) fn read(&mut self, mut payload: &[u8], ac: bool) -> Result<(), MarkerError> {
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
