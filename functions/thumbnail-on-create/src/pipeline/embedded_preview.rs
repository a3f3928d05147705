//! The preview a camera stores beside its photo. Cameras that write the Multi-Picture Format
//! (CIPA DC-007) put a "large thumbnail" of the same exposure, about 1600x1080 or 1920x1280,
//! after the primary image's end and list it in an APP2 "MPF" index. Decoding that instead of
//! a 12-24 megapixel photo costs a small fraction of the CPU, so it is offered, opted into
//! with `THUMBNAIL_EMBEDDED_PREVIEW`, for previews at least twice the largest thumbnail and of
//! the photo's shape. Opt-in because the preview is the camera's own rendering, which nothing
//! proves shows the same picture as the photo (an edited photo keeps its old preview).
//!
//! Gain maps (Ultra HDR), stereo pairs and panorama frames use the same index with other
//! types and are never taken for a preview.

use std::ops::Range;

use super::jpeg::MAX_SCANS;
use super::markers::{self, Structure};

/// MP Type codes (DC-007 5.2.3.3.1) of a large thumbnail: class 1 (VGA) and class 2 (full HD).
const LARGE_THUMBNAILS: [u32; 2] = [0x01_0001, 0x01_0002];
/// The MP Index IFD's tag listing the images (type UNDEFINED, 16 bytes per image).
const MP_ENTRY: u16 = 0xB002;
const UNDEFINED: u16 = 7;
/// The most index entries and listed images looked at; cameras list two or three images.
const MAX_ENTRIES: usize = 64;
const MAX_IMAGES: usize = 16;
/// How far a preview's shape may be from the photo's, as a fraction of its width: cameras
/// write a 3:2 preview for a 3:2.008 sensor (a 0.2% stretch no one sees); a letterboxed or
/// cropped preview is further off.
const SHAPE_TOLERANCE: u64 = 100;

/// A stored preview that thumbnails up to some size can come from.
#[derive(Debug)]
pub struct Preview {
    /// Where its JPEG stream lies in the file.
    pub range: Range<usize>,
    pub structure: Structure,
}

/// The smallest preview of `primary` (walked from `source`) whose longest side is at least
/// twice `target`; anything the index says that does not check out is no preview.
pub fn find(source: &[u8], primary: &Structure, target: u32) -> Option<Preview> {
    let header = primary.multi_picture.clone()?;
    let index = Index::read(source.get(header.clone())?)?;
    index
        .images()
        .filter_map(|image| candidate(source, header.start, image, primary, target))
        .min_by_key(|preview| {
            let frame = &preview.structure.frame;
            u64::from(frame.width) * u64::from(frame.height)
        })
}

/// One image the index lists: its attribute word, size and offset from the MP header.
#[derive(Debug, Clone, Copy)]
struct Listed {
    attribute: u32,
    size: u32,
    offset: u32,
}

fn candidate(
    source: &[u8],
    header: usize,
    listed: Listed,
    primary: &Structure,
    target: u32,
) -> Option<Preview> {
    // Bits 24-26: the image data format, 0 for JPEG; bits 0-23 the type.
    let jpeg = (listed.attribute >> 24) & 0x7 == 0;
    if !jpeg || !LARGE_THUMBNAILS.contains(&(listed.attribute & 0xFF_FFFF)) || listed.offset == 0 {
        return None;
    }
    let start = header.checked_add(listed.offset as usize)?;
    let range = start..start.checked_add(listed.size as usize)?;
    let structure = markers::walk(source.get(range.clone())?, MAX_SCANS).ok()?;
    structure.check_scans().ok()?;
    let (width, height) = (
        u64::from(structure.frame.width),
        u64::from(structure.frame.height),
    );
    let (full_width, full_height) = (
        u64::from(primary.frame.width),
        u64::from(primary.frame.height),
    );
    let large_enough = width.max(height) >= 2 * u64::from(target);
    let smaller = width < full_width && height < full_height;
    let same_shape = (width * full_height).abs_diff(full_width * height) * SHAPE_TOLERANCE
        <= full_width * height;
    (large_enough && smaller && same_shape).then_some(Preview { range, structure })
}

/// A Multi-Picture Format header: a TIFF header, then the MP Index IFD.
struct Index<'a> {
    header: &'a [u8],
    big_endian: bool,
    /// Where the list of images starts, and how many it holds.
    images: usize,
    count: usize,
}

impl<'a> Index<'a> {
    fn read(header: &'a [u8]) -> Option<Self> {
        let big_endian = match header.get(..4)? {
            b"MM\0*" => true,
            b"II*\0" => false,
            _ => return None,
        };
        let mut index = Self {
            header,
            big_endian,
            images: 0,
            count: 0,
        };
        let ifd = index.u32(4)? as usize;
        let entries = usize::from(index.u16(ifd)?).min(MAX_ENTRIES);
        let entry = (0..entries)
            .map(|i| ifd + 2 + 12 * i)
            .find(|&at| index.u16(at) == Some(MP_ENTRY))?;
        if index.u16(entry + 2)? != UNDEFINED {
            return None;
        }
        index.count = (index.u32(entry + 4)? as usize / 16).min(MAX_IMAGES);
        index.images = index.u32(entry + 8)? as usize;
        Some(index)
    }

    fn images(&self) -> impl Iterator<Item = Listed> + '_ {
        (0..self.count).map_while(|i| {
            let at = self.images + 16 * i;
            Some(Listed {
                attribute: self.u32(at)?,
                size: self.u32(at + 4)?,
                offset: self.u32(at + 8)?,
            })
        })
    }

    fn u16(&self, at: usize) -> Option<u16> {
        let bytes = self.header.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(match self.big_endian {
            true => u16::from_be_bytes(bytes),
            false => u16::from_le_bytes(bytes),
        })
    }

    fn u32(&self, at: usize) -> Option<u32> {
        let bytes = self.header.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(match self.big_endian {
            true => u32::from_be_bytes(bytes),
            false => u32::from_le_bytes(bytes),
        })
    }
}
