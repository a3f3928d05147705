//! Hostile inputs made byte for byte in the tests (those of `mkbombs.py` and a few more), and
//! what the pipeline answers them: refused from the header, permanently, naming the limit; and
//! property tests of the header checks over generated and mutated streams.

use bucketfn::budget::{BudgetError, MemoryBudget, Stop, Stopped};

use super::markers::{self, MarkerError};
use super::{OutputFormat, PipelineError, Spec, decode_need, make_thumbnails};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const MIB: u64 = 1024 * 1024;

/// The default configuration's: 256 px JPEG at quality 85, at most 100 megapixels.
pub fn spec() -> Spec {
    Spec::from(&crate::Config::default())
}

/// A JPEG marker segment.
pub fn segment(marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0xFF, marker];
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `mkbombs.py`'s progressive JPEG: quantisation and Huffman tables, a progressive frame of
/// `components` (1x1 sampling), one interleaved DC scan with `dc_data` zero bytes, then
/// `ac_scans` AC scans of 8 zero bytes each, then EOI.
pub fn progressive_jpeg(
    width: u16,
    height: u16,
    components: u8,
    dc_data: usize,
    ac_scans: usize,
) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    out.extend(segment(0xDB, &[[0].as_slice(), &[1; 64]].concat()));
    let mut frame = vec![8];
    frame.extend_from_slice(&height.to_be_bytes());
    frame.extend_from_slice(&width.to_be_bytes());
    frame.push(components);
    for id in 1..=components {
        frame.extend_from_slice(&[id, 0x11, 0]);
    }
    out.extend(segment(0xC2, &frame));
    let one_code = |class: u8, symbol: u8| {
        let mut table = vec![class, 1];
        table.extend_from_slice(&[0; 15]);
        table.push(symbol);
        table
    };
    out.extend(segment(0xC4, &one_code(0x00, 0x00)));
    out.extend(segment(0xC4, &one_code(0x10, 0xE0)));
    let mut scan = vec![components];
    for id in 1..=components {
        scan.extend_from_slice(&[id, 0]);
    }
    scan.extend_from_slice(&[0, 0, 0]);
    out.extend(segment(0xDA, &scan));
    out.extend(std::iter::repeat_n(0, dc_data));
    for s in 0..ac_scans {
        let id = (s % usize::from(components)) as u8 + 1;
        out.extend(segment(0xDA, &[1, id, 0, 1, 63, 0]));
        out.extend_from_slice(&[0; 8]);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// A real baseline colour JPEG of a noisy scene (so its scan carries real data).
pub fn photo_jpeg(width: u32, height: u32, progressive: bool) -> Result<Vec<u8>, std::io::Error> {
    let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    for y in 0..height {
        for x in 0..width {
            let n = (noise.next() % 48) as u8;
            pixels.extend_from_slice(&[
                (x * 200 / width) as u8 + n,
                (y * 180 / height) as u8 + n,
                120 + n,
            ]);
        }
    }
    let mut compress = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    compress.set_fastest_defaults();
    if progressive {
        compress.set_progressive_mode();
    }
    compress.set_size(width as usize, height as usize);
    compress.set_quality(90.0);
    let mut started = compress.start_compress(Vec::new())?;
    started.write_scanlines(&pixels)?;
    started.finish()
}

/// Where the first scan's entropy-coded data starts.
fn first_scan_data(jpeg: &[u8]) -> Option<usize> {
    let structure = markers::walk(jpeg, 100).ok()?;
    let start = structure.scans.first()?.start;
    let length = usize::from(u16::from_be_bytes([jpeg[start + 2], jpeg[start + 3]]));
    Some(start + 2 + length)
}

/// xorshift64*: reproducible cases for the property tests.
pub struct Noise(pub u64);

impl Noise {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A zlib stream of stored (uncompressed) blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut blocks = data.chunks(65535).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let length = block.len() as u16;
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&(!length).to_le_bytes());
        out.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[kind.as_slice(), data].concat()).to_be_bytes());
    out
}

/// A PNG of 8-bit `colour` type whose image data is `idat` (already zlib-compressed).
pub fn png_file(width: u32, height: u32, colour: u8, interlaced: bool, idat: &[u8]) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, colour, 0, 0, u8::from(interlaced)]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    out.extend(png_chunk(b"IDAT", idat));
    out.extend(png_chunk(b"IEND", b""));
    out
}

/// The rows of an RGBA image as a PNG stores them (filter 0), in Adam7 pass order when
/// `interlaced`.
fn png_rows(
    width: u32,
    height: u32,
    interlaced: bool,
    pixel: impl Fn(u32, u32) -> [u8; 4],
) -> Vec<u8> {
    let passes: &[(u32, u32, u32, u32)] = if interlaced {
        &[
            (0, 0, 8, 8),
            (4, 0, 8, 8),
            (0, 4, 4, 8),
            (2, 0, 4, 4),
            (0, 2, 2, 4),
            (1, 0, 2, 2),
            (0, 1, 1, 2),
        ]
    } else {
        &[(0, 0, 1, 1)]
    };
    let mut rows = Vec::new();
    for &(x0, y0, dx, dy) in passes {
        if x0 >= width || y0 >= height {
            continue;
        }
        for y in (y0..height).step_by(dy as usize) {
            rows.push(0);
            for x in (x0..width).step_by(dx as usize) {
                rows.extend_from_slice(&pixel(x, y));
            }
        }
    }
    rows
}

fn pattern(x: u32, y: u32) -> [u8; 4] {
    [
        (x * 7) as u8,
        (y * 5) as u8,
        ((x + y) * 3) as u8,
        255 - (x % 64) as u8,
    ]
}

/// A little-endian TIFF that declares a `width`x`height` strip of uncompressed RGB(A)
/// samples of `bits` each, and holds none of it.
pub fn tiff_header(width: u32, height: u32, bits: u16, samples: u16) -> Vec<u8> {
    let count: u16 = if samples == 4 { 10 } else { 9 };
    let ifd_end = 8 + 2 + 12 * u32::from(count) + 4;
    let mut entries: Vec<(u16, u16, u32, u32)> = vec![
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, u32::from(samples), ifd_end),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, ifd_end + 2 * u32::from(samples)),
        (277, 3, 1, u32::from(samples)),
        (278, 4, 1, height),
        (
            279,
            4,
            1,
            width
                .saturating_mul(height)
                .saturating_mul(u32::from(samples * bits / 8)),
        ),
    ];
    if samples == 4 {
        entries.push((338, 3, 1, 2));
    }
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for (tag, kind, n, value) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    for _ in 0..samples {
        out.extend_from_slice(&bits.to_le_bytes());
    }
    out
}

fn refused(source: &[u8]) -> Result<PipelineError, Box<dyn std::error::Error>> {
    let err = decode_need(source, &spec())
        .err()
        .ok_or("decode_need accepted it")?;
    let again = make_thumbnails(source, &spec(), &Stop::default())
        .err()
        .ok_or("make_thumbnails accepted it")?;
    assert_eq!(err.to_string(), again.to_string());
    assert!(!matches!(err, PipelineError::Stopped(_)), "{err}");
    Ok(err)
}

fn fails(source: &[u8]) -> Result<PipelineError, Box<dyn std::error::Error>> {
    let err = make_thumbnails(source, &spec(), &Stop::default())
        .err()
        .ok_or("make_thumbnails accepted it")?;
    assert!(!matches!(err, PipelineError::Stopped(_)), "{err}");
    Ok(err)
}

/// What decoding `source` for a thumbnail of `size` needs, when it is over `budget`.
fn over_budget(
    source: &[u8],
    size: u32,
    budget: u64,
) -> Result<(String, u64, String), Box<dyn std::error::Error>> {
    let spec = Spec {
        sizes: vec![size],
        ..spec()
    };
    let need = decode_need(source, &spec).map_err(|e| e.to_string())?;
    let Err(err) = MemoryBudget::new(budget).try_reserve(&need.what, need.bytes) else {
        return Err(format!("{} fits {budget} bytes", need.bytes).into());
    };
    assert!(matches!(err, BudgetError::OverBudget { .. }), "{err}");
    Ok((need.what, need.bytes, err.to_string()))
}

#[test]
fn a_header_only_progressive_cmyk_jpeg_is_truncated() -> TestResult {
    for (side, blocks) in [(10000u16, 6_250_000u64), (7745, 3_755_844)] {
        let source = progressive_jpeg(side, side, 4, 64, 0);
        assert_eq!(source.len(), 219);
        assert_eq!(
            refused(&source)?.to_string(),
            format!(
                "the JPEG data is truncated: scan 1 has 64 bytes of data, fewer than the {} its {blocks} blocks need",
                blocks.div_ceil(8)
            )
        );
    }
    Ok(())
}

#[test]
fn a_progressive_cmyk_jpeg_whose_coefficients_exceed_the_budget_is_refused() -> TestResult {
    // With enough scan data to pass for whole, four components of 1250x1250 blocks. For a
    // thumbnail that needs the full scale libjpeg buffers every coefficient (128 bytes a
    // block: 800 MB) and the output (400 MB); at half scale the kept coefficients, their
    // samples and a mask (56 bytes a block: 350 MB) and the output at 1/2 (100 MB).
    let source = progressive_jpeg(10000, 10000, 4, 781_250, 0);
    for (size, kind, least) in [
        (4096, "progressive", 1_200_000_000),
        (2048, "progressive (half scale)", 450_000_000),
    ] {
        let (what, need, message) = over_budget(&source, size, MemoryBudget::DEFAULT_BYTES)?;
        assert_eq!(what, format!("the {kind} CMYK JPEG 10000x10000"));
        assert!(need > least && need < least + least / 4, "{size}: {need}");
        assert!(message.starts_with(&format!("{what} needs ")), "{message}");
        assert!(
            message.ends_with(" MiB, over the memory budget of 256.0 MiB (MAX_DECODE_BYTES)"),
            "{message}"
        );
    }
    // Under the template's 60-megapixel cap: 969x969 blocks per component, at full scale.
    let source = progressive_jpeg(7745, 7745, 4, 469_481, 0);
    let (_, need, _) = over_budget(&source, 4096, MemoryBudget::DEFAULT_BYTES)?;
    assert!(need > 4 * 969 * 969 * 128, "{need}");
    Ok(())
}

#[test]
fn an_eighth_of_a_progressive_jpeg_needs_its_dc_coefficients_only() -> TestResult {
    // The same 100-megapixel CMYK file for a 256 px thumbnail: a value (two bytes) and a sample
    // per block of each component (4 x 1250 x 1250 x 3 bytes) and the output, not 800 MB.
    let source = progressive_jpeg(10000, 10000, 4, 781_250, 0);
    let need = decode_need(&source, &spec()).map_err(|e| e.to_string())?;
    assert_eq!(
        need.what,
        "the progressive (DC scans) CMYK JPEG 10000x10000"
    );
    let dc = 4 * 1250 * 1250 * 3;
    let output = 1250 * 1250 * 4;
    assert!(
        need.bytes >= dc + output && need.bytes < dc + output + 64 * MIB,
        "{}",
        need.bytes
    );
    Ok(())
}

#[test]
fn scan_spam_is_refused_before_libjpeg_runs() -> TestResult {
    let source = progressive_jpeg(7745, 7745, 1, 64, 5000);
    assert!(source.len() > 90_000);
    assert_eq!(
        refused(&source)?.to_string(),
        "the JPEG has more than 100 scans, the most a JPEG may have (each scan is a pass over the whole image)"
    );
    // One DC scan and 99 AC scans are within the limit; one more is not.
    assert!(decode_need(&progressive_jpeg(64, 64, 1, 64, 99), &spec()).is_ok());
    let err = refused(&progressive_jpeg(64, 64, 1, 64, 100))?;
    assert!(
        matches!(err, PipelineError::TooManyScans { limit: 100 }),
        "{err}"
    );
    Ok(())
}

#[test]
fn scan_data_that_ends_early_is_truncated_even_before_an_end_marker() -> TestResult {
    let photo = photo_jpeg(640, 480, false)?;
    let data = first_scan_data(&photo).ok_or("no scan")?;
    // 4:2:0: 80x60 luma blocks and 40x30 of each chroma. Almost no scan data, then an
    // end-of-image marker: the old check (an FFD9 in the last
    // 4 KiB) let this through, and libjpeg pads it with grey.
    let hollow = [&photo[..data + 100], &[0xFF, 0xD9][..]].concat();
    assert_eq!(
        refused(&hollow)?.to_string(),
        "the JPEG data is truncated: scan 1 has 100 bytes of data, fewer than the 1800 its 7200 blocks need"
    );
    // An upload cut off: no end marker.
    let cut = &photo[..photo.len() / 2];
    assert_eq!(refused(cut)?.to_string(), "the JPEG data is truncated");
    // The whole file still makes its thumbnail.
    let made = make_thumbnails(&photo, &spec(), &Stop::default())?;
    assert_eq!((made[0].width, made[0].height), (256, 192));
    Ok(())
}

#[test]
fn an_interlaced_png_counts_its_whole_frame_and_is_refused_over_the_budget() -> TestResult {
    // mkbombs.py's Adam7 RGBA 7745x7745; the header is what counts, so the rows are left out.
    let source = png_file(7745, 7745, 6, true, &zlib_stored(&[0; 1000]));
    let (what, need, message) = over_budget(&source, 256, 128 * MIB)?;
    assert_eq!(what, "the interlaced RGBA PNG 7745x7745");
    assert!(need > 7745 * 7745 * 4, "{need}");
    assert!(
        message.starts_with("the interlaced RGBA PNG 7745x7745 needs 2"),
        "{message}"
    );
    assert!(
        message.ends_with(" MiB, over the memory budget of 128.0 MiB (MAX_DECODE_BYTES)"),
        "{message}"
    );
    // The same image without interlacing needs rows, not the frame.
    let rows = decode_need(
        &png_file(7745, 7745, 6, false, &zlib_stored(&[0; 1000])),
        &spec(),
    )?;
    assert!(rows.bytes < 32 * MIB, "{}", rows.bytes);
    Ok(())
}

#[test]
fn an_interlaced_png_comes_out_as_its_plain_twin() -> TestResult {
    let (width, height) = (67, 45);
    let png = |interlaced| {
        png_file(
            width,
            height,
            6,
            interlaced,
            &zlib_stored(&png_rows(width, height, interlaced, pattern)),
        )
    };
    let as_png = Spec {
        format: OutputFormat::Png,
        ..spec()
    };
    let plain = make_thumbnails(&png(false), &as_png, &Stop::default())?;
    let interlaced = make_thumbnails(&png(true), &as_png, &Stop::default())?;
    assert_eq!(plain, interlaced);
    let decoded = image::load_from_memory(&plain[0].bytes)?.to_rgba8();
    assert_eq!(decoded.get_pixel(10, 20).0, pattern(10, 20));
    Ok(())
}

#[test]
fn png_data_that_ends_early_is_truncated() -> TestResult {
    for interlaced in [false, true] {
        let rows = png_rows(300, 200, interlaced, pattern);
        // Image data that stops at a third, the file still ending properly.
        let short = png_file(
            300,
            200,
            6,
            interlaced,
            &zlib_stored(&rows[..rows.len() / 3]),
        );
        assert_eq!(fails(&short)?.to_string(), "the PNG data is truncated");
        // A file cut off in the middle of its image data.
        let whole = png_file(300, 200, 6, interlaced, &zlib_stored(&rows));
        assert_eq!(
            fails(&whole[..whole.len() / 2])?.to_string(),
            "the PNG data is truncated"
        );
    }
    Ok(())
}

#[test]
fn metadata_is_counted_or_refused() -> TestResult {
    // libjpeg keeps the application segments it saves, and the ICC profile is gathered and
    // joined from them: 20 segments of 60000 bytes count three times over.
    let photo = photo_jpeg(64, 48, false)?;
    let app2 = segment(
        0xE2,
        &[b"ICC_PROFILE\0".as_slice(), &[1, 1], &[0; 59986]].concat(),
    );
    let heavy = [&photo[..2], &app2.repeat(20), &photo[2..]].concat();
    let need = decode_need(&heavy, &spec())?;
    assert!(
        need.bytes >= heavy.len() as u64 + 3 * 20 * 60000,
        "{} for {} bytes",
        need.bytes,
        heavy.len()
    );

    // An ICC profile that inflates from a few KiB to 32 MiB: the png crate inflates it up to
    // the 16 MiB it is allowed, which is counted, and drops it.
    let mut info = png::Info::with_size(1, 1);
    info.icc_profile = Some(vec![0; 32 * 1024 * 1024].into());
    let mut bomb = Vec::new();
    let mut writer = png::Encoder::with_info(&mut bomb, info)?.write_header()?;
    writer.write_image_data(&[0])?;
    writer.finish()?;
    assert!(bomb.len() < 1024 * 1024, "{}", bomb.len());
    let need = decode_need(&bomb, &spec())?;
    assert!(need.bytes >= 16 * MIB, "{}", need.bytes);
    let made = make_thumbnails(&bomb, &spec(), &Stop::default())?;
    assert_eq!((made[0].width, made[0].height), (1, 1));
    Ok(())
}

#[test]
fn whole_image_formats_count_their_real_bit_depth() -> TestResult {
    // A 16-bit RGBA TIFF at the template's pixel cap: 8 bytes per pixel decoded, and as much
    // again in the tiff crate's own buffer.
    let tiff = tiff_header(7745, 7745, 16, 4);
    let (what, need, message) = over_budget(&tiff, 256, MemoryBudget::DEFAULT_BYTES)?;
    assert_eq!(what, "the 16-bit RGBA TIFF 7745x7745");
    assert!(need > 2 * 7745 * 7745 * 8, "{need}");
    assert!(
        message.contains("over the memory budget of 256.0 MiB"),
        "{message}"
    );
    let eight = decode_need(&tiff_header(7745, 7745, 8, 3), &spec())?;
    assert_eq!(eight.what, "the RGB TIFF 7745x7745");
    assert!(eight.bytes < need / 2, "{} vs {need}", eight.bytes);
    Ok(())
}

#[test]
fn sixteen_bit_tiff_is_narrowed_in_place_to_the_same_thumbnail() -> TestResult {
    let (width, height) = (40, 30);
    let wide = image::ImageBuffer::from_fn(width, height, |x, y| {
        image::Rgba(pattern(x, y).map(|v| u16::from(v) * 257))
    });
    let mut tiff = Vec::new();
    image::DynamicImage::ImageRgba16(wide).write_to(
        &mut std::io::Cursor::new(&mut tiff),
        image::ImageFormat::Tiff,
    )?;
    let as_png = Spec {
        format: OutputFormat::Png,
        ..spec()
    };
    let made = make_thumbnails(&tiff, &as_png, &Stop::default())?;
    let decoded = image::load_from_memory(&made[0].bytes)?.to_rgba8();
    assert_eq!(decoded.dimensions(), (width, height));
    assert_eq!(decoded.get_pixel(13, 17).0, pattern(13, 17));
    Ok(())
}

#[test]
fn an_already_stopped_decode_returns_the_stop() -> TestResult {
    let stopped = Stop::at(Some(std::time::Instant::now()));
    let sources = [
        photo_jpeg(64, 48, false)?,
        photo_jpeg(64, 48, true)?,
        png_file(
            30,
            20,
            6,
            true,
            &zlib_stored(&png_rows(30, 20, true, pattern)),
        ),
    ];
    for source in sources {
        let err = make_thumbnails(&source, &spec(), &stopped)
            .err()
            .ok_or("made")?;
        assert!(matches!(err, PipelineError::Stopped(Stopped)), "{err}");
        assert_eq!(
            err.to_string(),
            "stopped at the deadline before the work was finished"
        );
    }
    Ok(())
}

#[test]
fn a_deadline_that_passes_during_a_decode_stops_it() -> TestResult {
    let source = photo_jpeg(2048, 1536, true)?;
    // Whichever look at the stop sees it first (a read libjpeg asks for, a batch of rows,
    // a step of the resize), the answer is the stop.
    let soon = Stop::at(Some(
        std::time::Instant::now() + std::time::Duration::from_millis(2),
    ));
    let err = make_thumbnails(&source, &spec(), &soon)
        .err()
        .ok_or("made")?;
    assert!(matches!(err, PipelineError::Stopped(_)), "{err}");
    Ok(())
}

/// A random stream of markers in the shape of a JPEG: a frame of random size, components
/// and sampling, then scans with enough data for their blocks.
fn random_jpeg(noise: &mut Noise) -> Vec<u8> {
    let progressive = noise.below(2) == 1;
    let (width, height) = (1 + noise.below(300) as u16, 1 + noise.below(300) as u16);
    let count = [1u8, 3, 4][noise.below(3) as usize];
    let sampling: Vec<u8> = (0..count)
        .map(|_| ((1 + noise.below(2) as u8) << 4) | (1 + noise.below(2) as u8))
        .collect();
    let mut out = vec![0xFF, 0xD8];
    out.extend(segment(0xE1, &vec![0xFF; noise.below(40) as usize]));
    let mut frame = vec![8];
    frame.extend_from_slice(&height.to_be_bytes());
    frame.extend_from_slice(&width.to_be_bytes());
    frame.push(count);
    for (id, hv) in (1..=count).zip(&sampling) {
        frame.extend_from_slice(&[id, *hv, 0]);
    }
    out.extend(segment(if progressive { 0xC2 } else { 0xC0 }, &frame));
    let (h_max, v_max) = sampling
        .iter()
        .fold((1, 1), |(h, v), s| (h.max(s >> 4), v.max(s & 15)));
    let blocks = |hv: u8| {
        (u64::from(width) * u64::from(hv >> 4)).div_ceil(u64::from(h_max) * 8)
            * (u64::from(height) * u64::from(hv & 15)).div_ceil(u64::from(v_max) * 8)
    };
    let all: u64 = sampling.iter().map(|&hv| blocks(hv)).sum();
    let mut scan = vec![count];
    for id in 1..=count {
        scan.extend_from_slice(&[id, 0]);
    }
    scan.extend_from_slice(&[0, if progressive { 0 } else { 63 }, 0]);
    out.extend(segment(0xDA, &scan));
    // Entropy-coded data with stuffing, never a marker.
    for _ in 0..(2 * all).div_ceil(8) + noise.below(50) {
        let byte = noise.next() as u8;
        out.push(byte);
        if byte == 0xFF {
            out.push(0);
        }
    }
    if progressive {
        for _ in 0..noise.below(8) {
            let id = 1 + noise.below(u64::from(count)) as u8;
            out.extend(segment(0xDA, &[1, id, 0, 1, 63, 0]));
            out.extend_from_slice(&[0x12; 4]);
        }
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

#[test]
fn property_every_whole_stream_walks_and_every_prefix_is_truncated() -> TestResult {
    let mut noise = Noise(7);
    for case in 0..300 {
        let source = random_jpeg(&mut noise);
        let structure = markers::walk(&source, 100).map_err(|e| format!("case {case}: {e:?}"))?;
        assert_eq!(structure.check_scans(), Ok(()), "case {case}");
        for cut in 2..source.len() {
            assert_eq!(
                markers::walk(&source[..cut], 100),
                Err(MarkerError::Truncated),
                "case {case}, cut at {cut} of {}",
                source.len()
            );
        }
    }
    Ok(())
}

#[test]
fn property_coefficients_cover_every_sample_twice_over() {
    let mut noise = Noise(11);
    for _ in 0..2000 {
        let source = random_jpeg(&mut noise);
        let Ok(structure) = markers::walk(&source, 100) else {
            continue;
        };
        let frame = &structure.frame;
        let samples: u64 = (0..frame.components.len())
            .map(|c| {
                let (across, down) = frame.blocks_of(c);
                across * down * 64
            })
            .sum();
        // Two bytes per coefficient, padding at most a sampling factor's blocks each way.
        let bytes = frame.coefficient_bytes();
        assert!(bytes >= 2 * samples, "{bytes} < 2 x {samples}");
        assert!(bytes <= 2 * samples * 4 * 4, "{bytes}");
    }
}

#[test]
fn property_mutated_images_never_panic_and_the_need_and_the_decode_agree() -> TestResult {
    let seeds = [
        photo_jpeg(96, 64, false)?,
        photo_jpeg(96, 64, true)?,
        png_file(
            40,
            30,
            6,
            true,
            &zlib_stored(&png_rows(40, 30, true, pattern)),
        ),
        tiff_header(40, 30, 8, 3),
    ];
    let mut noise = Noise(3);
    for case in 0..400 {
        let seed = &seeds[case % seeds.len()];
        let mut source = seed.clone();
        for _ in 0..1 + noise.below(4) {
            if source.is_empty() {
                break;
            }
            match noise.below(3) {
                0 => {
                    let at = noise.below(source.len() as u64) as usize;
                    source[at] = noise.next() as u8;
                }
                1 => source.truncate(noise.below(source.len() as u64) as usize),
                _ => {
                    let at = noise.below(source.len() as u64) as usize;
                    source.insert(at, [0xFF, 0xD9, 0xDA, 0x00][noise.below(4) as usize]);
                }
            }
        }
        let need = decode_need(&source, &spec());
        let made = make_thumbnails(&source, &spec(), &Stop::default());
        if let Err(refused) = &need {
            let made = made.err().ok_or(format!(
                "case {case}: decoded what the header check refused: {refused}"
            ))?;
            assert_eq!(made.to_string(), refused.to_string(), "case {case}");
        }
    }
    Ok(())
}
