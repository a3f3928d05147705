//! The structure of a JPEG from its markers alone, before libjpeg sees it: the frame (size,
//! components, sampling, coding), where each scan starts and how many bytes of entropy-coded
//! data it carries, and whether the stream reaches its end (EOI). One pass over the bytes, no
//! decoding; strict where libjpeg only warns and pads with grey.

/// One component of the frame, with its sampling factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    pub id: u8,
    pub h: u8,
    pub v: u8,
    /// The quantisation table it uses (Tq).
    pub quant: u8,
}

/// How the frame's coefficients are coded (the SOF marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// SOF0 / SOF1: one scan per component set, Huffman coded.
    Sequential,
    /// SOF2: the coefficients spread over many Huffman-coded scans.
    Progressive,
    /// SOF9: sequential, arithmetic coded.
    ArithmeticSequential,
    /// SOF10: progressive, arithmetic coded.
    ArithmeticProgressive,
}

impl Coding {
    pub fn is_progressive(self) -> bool {
        matches!(self, Self::Progressive | Self::ArithmeticProgressive)
    }
}

/// The frame header (SOF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub coding: Coding,
    /// Bits per sample (P): 8, or 12 for the rare extended files.
    pub precision: u8,
    pub width: u32,
    pub height: u32,
    pub components: Vec<Component>,
}

/// One scan (SOS) and the entropy-coded data after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Where its SOS marker starts in the file.
    pub start: usize,
    /// Indices into [`Frame::components`].
    pub components: Vec<usize>,
    /// Ss: 0 for a DC scan (or a sequential one).
    pub spectral_start: u8,
    /// Bytes of entropy-coded data up to the next marker (stuffing and restarts included).
    pub data: usize,
    /// Restart markers within that data.
    pub restarts: u64,
    /// The restart interval (DRI) in force for this scan, in MCUs; 0 for none.
    pub restart_interval: u16,
}

/// A JPEG's frame and scans, from a stream that reaches its EOI marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure {
    pub frame: Frame,
    pub scans: Vec<Scan>,
    /// Bytes of application segments (APPn: EXIF, ICC profiles, Adobe), which a decoder that
    /// keeps them copies.
    pub application_bytes: u64,
    /// Where the Multi-Picture Format header (after an APP2 segment's "MPF\0") lies: the
    /// index of the images stored after this one, whose offsets count from its start.
    pub multi_picture: Option<std::ops::Range<usize>>,
}

/// Why the markers do not describe a whole image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerError {
    /// The data ends before the end-of-image marker.
    Truncated,
    /// More scans than `limit`.
    TooManyScans {
        limit: usize,
    },
    /// A scan carries too little data for the blocks it covers.
    ScanTruncated {
        scan: usize,
        detail: String,
    },
    Corrupt(String),
    Unsupported(&'static str),
}

/// What an APP2 segment holding a Multi-Picture Format index (CIPA DC-007) starts with.
const MPF: &[u8] = b"MPF\0";
/// The sample block side (DCTSIZE).
const BLOCK: u64 = 8;
/// The longest end-of-band run a progressive AC scan can code with one symbol (EOB14).
const MAX_END_OF_BAND_RUN: u64 = 32767;

impl Frame {
    fn max_sampling(&self) -> (u64, u64) {
        self.components.iter().fold((1, 1), |(h, v), c| {
            (h.max(u64::from(c.h)), v.max(u64::from(c.v)))
        })
    }

    /// The blocks of component `index` (libjpeg's width_in_blocks x height_in_blocks).
    pub fn blocks_of(&self, index: usize) -> (u64, u64) {
        let (h_max, v_max) = self.max_sampling();
        let Some(c) = self.components.get(index) else {
            return (0, 0);
        };
        (
            (u64::from(self.width) * u64::from(c.h)).div_ceil(h_max * BLOCK),
            (u64::from(self.height) * u64::from(c.v)).div_ceil(v_max * BLOCK),
        )
    }

    /// Bytes of libjpeg's whole-image coefficient buffer, which it allocates for progressive
    /// and multi-scan files: every block of every component, padded to its sampling factors,
    /// 64 coefficients of 2 bytes.
    pub fn coefficient_bytes(&self) -> u64 {
        (0..self.components.len())
            .map(|index| {
                let (across, down) = self.blocks_of(index);
                let c = self.components[index];
                across.next_multiple_of(u64::from(c.h))
                    * down.next_multiple_of(u64::from(c.v))
                    * BLOCK
                    * BLOCK
                    * 2
            })
            .sum()
    }

    /// The MCUs of a scan over `components`: one block each when the scan holds one component,
    /// else the interleaved MCU grid.
    fn mcus(&self, components: &[usize]) -> u64 {
        match components {
            [one] => {
                let (across, down) = self.blocks_of(*one);
                across * down
            }
            _ => {
                let (h_max, v_max) = self.max_sampling();
                u64::from(self.width).div_ceil(h_max * BLOCK)
                    * u64::from(self.height).div_ceil(v_max * BLOCK)
            }
        }
    }
}

impl Structure {
    /// Whether libjpeg buffers the whole image's coefficients: progressive files, and
    /// sequential ones whose first scan does not hold every component.
    pub fn is_multi_scan(&self) -> bool {
        self.frame.coding.is_progressive()
            || self
                .scans
                .first()
                .is_some_and(|scan| scan.components.len() < self.frame.components.len())
    }

    /// Checks that every scan carries at least the data its blocks cannot do without, and
    /// every restart marker its intervals need: libjpeg meets a missing rest as a marker in
    /// the middle of a scan, pads the image with grey and only warns.
    pub fn check_scans(&self) -> Result<(), MarkerError> {
        for (number, scan) in self.scans.iter().enumerate() {
            let blocks: u64 = scan
                .components
                .iter()
                .map(|&c| {
                    let (across, down) = self.frame.blocks_of(c);
                    across * down
                })
                .sum();
            // Every Huffman code is at least one bit: a sequential block codes its DC and at
            // least one AC symbol, a DC scan one code (or, refining, one raw bit) per block, an
            // AC scan at least one end-of-band run. Arithmetic coding has no such floor.
            let bits = match (self.frame.coding, scan.spectral_start) {
                (Coding::Sequential, _) => 2 * blocks,
                (Coding::Progressive, 0) => blocks,
                (Coding::Progressive, _) => blocks.div_ceil(MAX_END_OF_BAND_RUN),
                (Coding::ArithmeticSequential | Coding::ArithmeticProgressive, _) => 0,
            };
            let needed = bits.div_ceil(8);
            if (scan.data as u64) < needed {
                return Err(MarkerError::ScanTruncated {
                    scan: number + 1,
                    detail: format!(
                        "has {} bytes of data, fewer than the {needed} its {blocks} blocks need",
                        scan.data
                    ),
                });
            }
            if scan.restart_interval > 0 {
                let intervals = self
                    .frame
                    .mcus(&scan.components)
                    .div_ceil(u64::from(scan.restart_interval));
                let expected = intervals.saturating_sub(1);
                if scan.restarts < expected {
                    return Err(MarkerError::ScanTruncated {
                        scan: number + 1,
                        detail: format!(
                            "has {} restart markers where its {intervals} restart intervals need {expected}",
                            scan.restarts
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// One marker segment, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The marker code (the byte after 0xFF).
    pub marker: u8,
    /// Where its 0xFF starts in the file.
    pub start: usize,
    /// Its payload, after the length; empty for SOI's second coming and EOI.
    pub payload: std::ops::Range<usize>,
    /// For a scan (SOS): its entropy-coded data up to the next marker, and the restart
    /// markers within it.
    pub data: Option<(std::ops::Range<usize>, u64)>,
}

/// The segments of a stream after its SOI, up to and including EOI; a stream that ends
/// before EOI ends with [`MarkerError::Truncated`]. Standalone restart markers and TEM are
/// skipped, as libjpeg skips them.
pub struct Segments<'a> {
    source: &'a [u8],
    at: usize,
    done: bool,
    /// The scans an earlier walk found, whose data need not be searched for its end again.
    walked: &'a [Scan],
    scans: usize,
}

impl<'a> Segments<'a> {
    /// The segments of `source`, which must start with SOI.
    pub fn of(source: &'a [u8]) -> Result<Self, MarkerError> {
        if !source.starts_with(&[0xFF, 0xD8]) {
            return Err(MarkerError::Corrupt(
                "it does not start with a start-of-image marker".into(),
            ));
        }
        Ok(Self {
            source,
            at: 2,
            done: false,
            walked: &[],
            scans: 0,
        })
    }

    /// The segments of `source` again, after [`walk`] made `structure` of it: each scan's
    /// data is stepped over by the length the walk found, not searched byte by byte.
    pub fn walked(source: &'a [u8], structure: &'a Structure) -> Result<Self, MarkerError> {
        Ok(Self {
            walked: &structure.scans,
            ..Self::of(source)?
        })
    }

    fn read(&mut self) -> Result<Segment, MarkerError> {
        let source = self.source;
        loop {
            let (marker, start, after) =
                next_marker(source, self.at).ok_or(MarkerError::Truncated)?;
            match marker {
                0xD9 | 0xD8 => {
                    self.done = marker == 0xD9;
                    self.at = after;
                    return Ok(Segment {
                        marker,
                        start,
                        payload: after..after,
                        data: None,
                    });
                }
                0xD0..=0xD7 | 0x01 => {
                    self.at = after;
                    continue;
                }
                _ => {}
            }
            let length = source
                .get(after..after + 2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                .ok_or(MarkerError::Truncated)?;
            if length < 2 {
                return Err(MarkerError::Corrupt(format!(
                    "marker {marker:02X} has a length of {length}"
                )));
            }
            let payload = after + 2..after + length;
            if payload.end > source.len() {
                return Err(MarkerError::Truncated);
            }
            self.at = payload.end;
            let data = match marker {
                0xDA => {
                    let known = self
                        .walked
                        .get(self.scans)
                        .filter(|scan| scan.start == start);
                    self.scans += 1;
                    let (end, restarts) = match known {
                        Some(scan) => ((self.at + scan.data).min(source.len()), scan.restarts),
                        None => entropy_coded(source, self.at).ok_or(MarkerError::Truncated)?,
                    };
                    let data = self.at..end;
                    self.at = end;
                    Some((data, restarts))
                }
                _ => None,
            };
            return Ok(Segment {
                marker,
                start,
                payload,
                data,
            });
        }
    }
}

impl Iterator for Segments<'_> {
    type Item = Result<Segment, MarkerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let segment = self.read();
        // After an error there is nothing more to read.
        self.done |= segment.is_err();
        Some(segment)
    }
}

/// Walks the markers from SOI to EOI, refusing more than `max_scans` scans as soon as the
/// next one starts.
pub fn walk(source: &[u8], max_scans: usize) -> Result<Structure, MarkerError> {
    let mut frame: Option<Frame> = None;
    let mut scans: Vec<Scan> = Vec::new();
    let mut restart_interval = 0;
    let mut application_bytes = 0;
    let mut multi_picture = None;
    for segment in Segments::of(source)? {
        let segment = segment?;
        let payload = &source[segment.payload.clone()];
        match segment.marker {
            0xD9 => break,
            0xD8 => {
                return Err(MarkerError::Corrupt(
                    "a second start-of-image marker".into(),
                ));
            }
            0xC0 | 0xC1 | 0xC2 | 0xC9 | 0xCA => {
                if frame.is_some() {
                    return Err(MarkerError::Corrupt("two frame headers (SOF)".into()));
                }
                frame = Some(parse_frame(segment.marker, payload)?);
            }
            0xC3 | 0xC5..=0xC7 | 0xCB | 0xCD..=0xCF => {
                return Err(MarkerError::Unsupported("lossless and hierarchical JPEG"));
            }
            0xE0..=0xEF => {
                application_bytes += payload.len() as u64;
                if segment.marker == 0xE2 && multi_picture.is_none() && payload.starts_with(MPF) {
                    multi_picture = Some(segment.payload.start + MPF.len()..segment.payload.end);
                }
            }
            0xDD => restart_interval = parse_restart_interval(payload)?,
            0xDA => {
                let frame = frame.as_ref().ok_or_else(|| {
                    MarkerError::Corrupt("a scan (SOS) before the frame header (SOF)".into())
                })?;
                if scans.len() == max_scans {
                    return Err(MarkerError::TooManyScans { limit: max_scans });
                }
                let header = parse_scan(payload, frame)?;
                let (data, restarts) = segment.data.unwrap_or_default();
                scans.push(Scan {
                    start: segment.start,
                    components: header.components.iter().map(|c| c.index).collect(),
                    spectral_start: header.spectral_start,
                    data: data.len(),
                    restarts,
                    restart_interval,
                });
            }
            _ => {}
        }
    }
    let frame = frame.ok_or_else(|| {
        MarkerError::Corrupt("the image ends before its frame header (SOF)".into())
    })?;
    if scans.is_empty() {
        return Err(MarkerError::Corrupt(
            "the image ends before its first scan (SOS)".into(),
        ));
    }
    Ok(Structure {
        frame,
        scans,
        application_bytes,
        multi_picture,
    })
}

/// A restart interval (DRI) in MCUs.
pub fn parse_restart_interval(payload: &[u8]) -> Result<u16, MarkerError> {
    match payload {
        [high, low] => Ok(u16::from_be_bytes([*high, *low])),
        _ => Err(MarkerError::Corrupt(
            "a restart interval (DRI) that is not 2 bytes".into(),
        )),
    }
}

/// The next marker at or after `at`, as libjpeg finds it: bytes before an 0xFF are skipped
/// (libjpeg warns of "extraneous bytes"), fill 0xFFs too, and FF00 is no marker. Returns the
/// marker code, where its 0xFF starts, and the position after the code.
fn next_marker(source: &[u8], mut at: usize) -> Option<(u8, usize, usize)> {
    loop {
        let start = at + memchr::memchr(0xFF, source.get(at..)?)?;
        let mut code_at = start + 1;
        while *source.get(code_at)? == 0xFF {
            code_at += 1;
        }
        let code = source[code_at];
        if code != 0 {
            return Some((code, start, code_at + 1));
        }
        at = code_at + 1;
    }
}

/// Where the entropy-coded data starting at `at` ends (the 0xFF of the next marker that is
/// neither stuffing nor a restart), and how many restart markers it holds; `None` when the
/// data runs to the end of the file.
fn entropy_coded(source: &[u8], mut at: usize) -> Option<(usize, u64)> {
    let mut restarts = 0;
    loop {
        let start = at + memchr::memchr(0xFF, source.get(at..)?)?;
        let mut code_at = start + 1;
        while *source.get(code_at)? == 0xFF {
            code_at += 1;
        }
        match source[code_at] {
            0x00 => {}
            0xD0..=0xD7 => restarts += 1,
            _ => return Some((start, restarts)),
        }
        at = code_at + 1;
    }
}

fn parse_frame(marker: u8, segment: &[u8]) -> Result<Frame, MarkerError> {
    let corrupt = |what: &str| MarkerError::Corrupt(format!("the frame header (SOF) {what}"));
    let [precision, h1, h0, w1, w0, count, rest @ ..] = segment else {
        return Err(corrupt("is too short"));
    };
    // libjpeg's MAX_COMPONENTS.
    if !(1..=10).contains(count) || rest.len() != 3 * usize::from(*count) {
        return Err(corrupt(&format!(
            "declares {count} components in {} bytes",
            segment.len()
        )));
    }
    let mut components = Vec::with_capacity(usize::from(*count));
    for spec in rest.chunks_exact(3) {
        let (h, v) = (spec[1] >> 4, spec[1] & 0x0F);
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
            return Err(corrupt(&format!("has sampling factors {h}x{v}")));
        }
        components.push(Component {
            id: spec[0],
            h,
            v,
            quant: spec[2],
        });
    }
    let coding = match marker {
        0xC2 => Coding::Progressive,
        0xC9 => Coding::ArithmeticSequential,
        0xCA => Coding::ArithmeticProgressive,
        _ => Coding::Sequential,
    };
    Ok(Frame {
        coding,
        precision: *precision,
        width: u32::from(u16::from_be_bytes([*w1, *w0])),
        height: u32::from(u16::from_be_bytes([*h1, *h0])),
        components,
    })
}

/// One component of a scan: the frame's component and its Huffman tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanComponent {
    /// Index into [`Frame::components`].
    pub index: usize,
    /// The DC table (Td) and the AC table (Ta).
    pub dc_table: u8,
    pub ac_table: u8,
}

/// A scan header (SOS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanHeader {
    pub components: Vec<ScanComponent>,
    /// Ss and Se: the band of coefficients, in zig-zag order.
    pub spectral_start: u8,
    pub spectral_end: u8,
    /// Ah and Al: successive approximation, the bit position before and in this scan.
    pub high: u8,
    pub low: u8,
}

pub fn parse_scan(segment: &[u8], frame: &Frame) -> Result<ScanHeader, MarkerError> {
    let corrupt = |what: String| MarkerError::Corrupt(format!("a scan header (SOS) {what}"));
    let [count, rest @ ..] = segment else {
        return Err(corrupt("is empty".into()));
    };
    let count = usize::from(*count);
    if !(1..=4).contains(&count) || rest.len() != 2 * count + 3 {
        return Err(corrupt(format!(
            "declares {count} components in {} bytes",
            segment.len()
        )));
    }
    let mut components: Vec<ScanComponent> = Vec::with_capacity(count);
    for spec in rest[..2 * count].chunks_exact(2) {
        let index = frame
            .components
            .iter()
            .position(|c| c.id == spec[0])
            .ok_or_else(|| corrupt(format!("names component {} the frame lacks", spec[0])))?;
        if components.iter().any(|c| c.index == index) {
            return Err(corrupt(format!("names component {} twice", spec[0])));
        }
        components.push(ScanComponent {
            index,
            dc_table: spec[1] >> 4,
            ac_table: spec[1] & 0x0F,
        });
    }
    let [spectral_start, spectral_end, approximation] = rest[2 * count..] else {
        return Err(corrupt("is too short".into()));
    };
    Ok(ScanHeader {
        components,
        spectral_start,
        spectral_end,
        high: approximation >> 4,
        low: approximation & 0x0F,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn segment(marker: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0xFF, marker];
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A grey JPEG's markers: `sof` frame of `width`x`height`, then one scan per entry of
    /// `scans` (Ss, data bytes), then EOI.
    fn grey(sof: u8, width: u16, height: u16, scans: &[(u8, usize)]) -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8];
        let mut frame = vec![8];
        frame.extend_from_slice(&height.to_be_bytes());
        frame.extend_from_slice(&width.to_be_bytes());
        frame.extend_from_slice(&[1, 1, 0x11, 0]);
        out.extend(segment(sof, &frame));
        for &(ss, data) in scans {
            out.extend(segment(0xDA, &[1, 1, 0, ss, 63, 0]));
            out.extend(std::iter::repeat_n(0x55, data));
        }
        out.extend_from_slice(&[0xFF, 0xD9]);
        out
    }

    #[test]
    fn a_whole_stream_gives_its_frame_and_scans() -> TestResult {
        let source = grey(0xC2, 64, 32, &[(0, 4), (1, 3)]);
        let structure = walk(&source, 100).map_err(|e| format!("{e:?}"))?;
        assert_eq!(structure.frame.coding, Coding::Progressive);
        assert_eq!((structure.frame.width, structure.frame.height), (64, 32));
        assert_eq!(structure.scans.len(), 2);
        assert_eq!(structure.scans[0].data, 4);
        assert_eq!(source[structure.scans[1].start..][..2], [0xFF, 0xDA]);
        assert!(structure.is_multi_scan());
        // 8x4 blocks need 32 bits of DC codes: exactly what the first scan has.
        assert_eq!(structure.check_scans(), Ok(()));
        Ok(())
    }

    #[test]
    fn segments_after_a_walk_step_over_scans_as_the_search_found_them() -> TestResult {
        let mut source = grey(0xC2, 64, 32, &[(0, 4), (1, 3)]);
        // Stuffing and a restart marker in the second scan's data.
        let end = source.len() - 2;
        source.splice(end..end, [0x12, 0xFF, 0x00, 0xFF, 0xD0, 0x34]);
        let structure = walk(&source, 100).map_err(|e| format!("{e:?}"))?;
        let searched: Vec<Segment> = Segments::of(&source)
            .map_err(|e| format!("{e:?}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{e:?}"))?;
        let stepped: Vec<Segment> = Segments::walked(&source, &structure)
            .map_err(|e| format!("{e:?}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{e:?}"))?;
        assert_eq!(searched, stepped);
        assert_eq!(stepped.iter().filter(|s| s.data.is_some()).count(), 2);
        Ok(())
    }

    #[test]
    fn stuffing_restarts_and_fill_bytes_stay_inside_a_scan() -> TestResult {
        let mut source = grey(0xC0, 8, 8, &[]);
        source.truncate(source.len() - 2);
        source.extend(segment(0xDD, &[0, 1]));
        source.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
        source.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0xD9]);
        let structure = walk(&source, 100).map_err(|e| format!("{e:?}"))?;
        assert_eq!(structure.scans[0].data, 7);
        assert_eq!(structure.scans[0].restarts, 1);
        assert_eq!(structure.scans[0].restart_interval, 1);
        Ok(())
    }

    #[test]
    fn a_stream_without_its_end_is_truncated() {
        let mut source = grey(0xC0, 64, 64, &[(0, 100)]);
        source.truncate(source.len() - 2);
        assert_eq!(walk(&source, 100), Err(MarkerError::Truncated));
        source.truncate(30);
        assert_eq!(walk(&source, 100), Err(MarkerError::Truncated));
    }

    #[test]
    fn a_scan_short_of_its_blocks_is_truncated() -> TestResult {
        // 1000x1000 sequential: 15625 blocks need at least 31250 bits.
        let source = grey(0xC0, 1000, 1000, &[(0, 3906)]);
        let structure = walk(&source, 100).map_err(|e| format!("{e:?}"))?;
        assert_eq!(
            structure.check_scans(),
            Err(MarkerError::ScanTruncated {
                scan: 1,
                detail: "has 3906 bytes of data, fewer than the 3907 its 15625 blocks need".into()
            })
        );
        let enough = grey(0xC0, 1000, 1000, &[(0, 3907)]);
        let structure = walk(&enough, 100).map_err(|e| format!("{e:?}"))?;
        assert_eq!(structure.check_scans(), Ok(()));
        Ok(())
    }

    #[test]
    fn missing_restart_markers_are_truncation() -> TestResult {
        let mut source = grey(0xC0, 64, 64, &[]);
        source.truncate(source.len() - 2);
        source.extend(segment(0xDD, &[0, 16]));
        source.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
        source.extend(std::iter::repeat_n(0x55, 40));
        source.extend_from_slice(&[0xFF, 0xD0, 0x55, 0xFF, 0xD9]);
        let structure = walk(&source, 100).map_err(|e| format!("{e:?}"))?;
        let Err(MarkerError::ScanTruncated { detail, .. }) = structure.check_scans() else {
            return Err("accepted".into());
        };
        assert_eq!(
            detail,
            "has 1 restart markers where its 4 restart intervals need 3"
        );
        Ok(())
    }

    #[test]
    fn scans_beyond_the_limit_are_refused_when_they_start() {
        let source = grey(0xC2, 8, 8, &[(1, 1); 6]);
        assert!(walk(&source, 6).is_ok());
        assert_eq!(
            walk(&source, 5),
            Err(MarkerError::TooManyScans { limit: 5 })
        );
    }

    #[test]
    fn frames_and_scans_that_do_not_add_up_are_corrupt() {
        let mut two_frames = grey(0xC0, 8, 8, &[]);
        two_frames.truncate(two_frames.len() - 2);
        two_frames.extend(grey(0xC0, 8, 8, &[(0, 2)])[2..].iter());
        assert!(matches!(
            walk(&two_frames, 10),
            Err(MarkerError::Corrupt(_))
        ));

        let mut foreign = vec![0xFF, 0xD8];
        foreign.extend(segment(0xC0, &[8, 0, 8, 0, 8, 1, 1, 0x11, 0]));
        foreign.extend(segment(0xDA, &[1, 7, 0, 0, 63, 0]));
        foreign.extend_from_slice(&[0, 0, 0xFF, 0xD9]);
        assert!(
            matches!(walk(&foreign, 10), Err(MarkerError::Corrupt(m)) if m.contains("component 7"))
        );

        let lossless = grey(0xC3, 8, 8, &[(0, 2)]);
        assert!(matches!(
            walk(&lossless, 10),
            Err(MarkerError::Unsupported(_))
        ));
        assert!(matches!(
            walk(&[0xFF, 0xD8, 0xFF, 0xD9], 10),
            Err(MarkerError::Corrupt(_))
        ));
    }

    #[test]
    fn coefficients_follow_libjpeg_padding() {
        // 4:2:0 100x100: luma 13x13 blocks padded to 14x14, chroma 7x7 each.
        let frame = Frame {
            coding: Coding::Progressive,
            precision: 8,
            width: 100,
            height: 100,
            components: vec![
                Component {
                    id: 1,
                    h: 2,
                    v: 2,
                    quant: 0,
                },
                Component {
                    id: 2,
                    h: 1,
                    v: 1,
                    quant: 1,
                },
                Component {
                    id: 3,
                    h: 1,
                    v: 1,
                    quant: 1,
                },
            ],
        };
        assert_eq!(frame.blocks_of(0), (13, 13));
        assert_eq!(frame.blocks_of(1), (7, 7));
        assert_eq!(frame.coefficient_bytes(), (14 * 14 + 2 * 49) * 128);
    }
}
