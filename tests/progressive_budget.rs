//! A progressive JPEG's memory need as the command line meets it: a 100-megapixel CMYK file
//! whose thumbnail needs at most an eighth of it comes from its DC scans within a 64 MiB
//! budget; for a size over that eighth it needs 16 coefficients of every block (at half
//! scale), and for one over a quarter libjpeg's whole coefficient buffer, and the run refuses
//! both naming the need and the budget. A 1600 px progressive photo, whose 256 px thumbnail
//! needs more than an eighth of it, is decoded at half scale to about the thumbnail of the same
//! photo stored baseline.

use crate::support::TestResult;
use crate::support::images::{jpeg_segment as segment, mozjpeg, psnr, scene};
use crate::support::summary::{Photos, counts, streams};

/// A progressive CMYK JPEG of `side` x `side`: one Huffman code per table (DC difference 0,
/// AC end of band), one interleaved DC scan with a bit per block, one AC scan.
fn progressive_cmyk(side: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    out.extend(segment(0xDB, &[[0].as_slice(), &[1; 64]].concat()));
    let mut frame = vec![8];
    frame.extend_from_slice(&side.to_be_bytes());
    frame.extend_from_slice(&side.to_be_bytes());
    frame.push(4);
    for id in 1..=4 {
        frame.extend_from_slice(&[id, 0x11, 0]);
    }
    out.extend(segment(0xC2, &frame));
    for (class, symbol) in [(0x00, 0x00), (0x10, 0xE0)] {
        let mut table = vec![class, 1];
        table.extend_from_slice(&[0; 15]);
        table.push(symbol);
        out.extend(segment(0xC4, &table));
    }
    out.extend(segment(0xDA, &[4, 1, 0, 2, 0, 3, 0, 4, 0, 0, 0, 0]));
    let blocks = (usize::from(side) / 8).pow(2) * 4;
    out.extend(std::iter::repeat_n(0, blocks / 8));
    out.extend(segment(0xDA, &[1, 1, 0, 1, 63, 0]));
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

#[test]
fn a_progressive_jpeg_needs_its_dc_scans_for_an_eighth_and_more_of_each_block_beyond() -> TestResult
{
    for (sizes, refusal) in [
        ("256", None),
        (
            "2048",
            Some("the progressive (half scale) CMYK JPEG 10000x10000, needs 4"),
        ),
        (
            "4096",
            Some("the progressive CMYK JPEG 10000x10000, needs 1"),
        ),
    ] {
        let photos = Photos::holding(&[("big.jpg", &progressive_cmyk(10000))])?;
        let out = photos.sweep(&[
            ("THUMBNAIL_SIZES", sizes),
            ("MAX_SOURCE_PIXELS", "100000000"),
            ("MAX_DECODE_BYTES", "67108864"),
        ])?;
        let (stdout, both) = streams(&out);
        let thumbnail = photos
            .bucket
            .join(format!("thumbnails/big.jpg/{sizes}.jpg"));
        match refusal {
            None => {
                assert_eq!(out.status.code(), Some(0), "{both}");
                assert_eq!(counts(&stdout)?, [1, 0, 0], "{both}");
                assert!(thumbnail.is_file(), "{both}");
            }
            Some(refusal) => {
                assert_eq!(out.status.code(), Some(1), "{both}");
                assert_eq!(counts(&stdout)?, [0, 0, 1], "{both}");
                assert!(stdout.contains(refusal), "{both}");
                assert!(
                    stdout.contains(" MiB, over the memory budget of 64.0 MiB (MAX_DECODE_BYTES)"),
                    "{both}"
                );
                assert!(!thumbnail.exists(), "{both}");
            }
        }
    }
    Ok(())
}

#[test]
fn a_progressive_photo_at_half_scale_gets_the_thumbnail_of_its_baseline_twin() -> TestResult {
    // 1600 px across: an eighth (200 px) is too small for 256 px, a half (800 px) is enough.
    let photo = scene(1600, 1067);
    let stored = mozjpeg(&photo, true)?;
    assert!(
        stored.windows(2).any(|w| w == [0xFF, 0xC2]),
        "not progressive"
    );
    let twins = Photos::holding(&[
        ("baseline.jpg", &mozjpeg(&photo, false)?),
        ("progressive.jpg", &stored),
    ])?;
    let out = twins.sweep(&[])?;
    let (stdout, both) = streams(&out);
    assert_eq!(out.status.code(), Some(0), "{both}");
    assert_eq!(counts(&stdout)?, [2, 0, 0], "{both}");
    let thumbnail = |name: &str| twins.thumbnail(&format!("{name}.jpg"), 256);
    let (baseline, progressive) = (thumbnail("baseline")?, thumbnail("progressive")?);
    assert_eq!(progressive.dimensions(), (256, 171));
    assert_eq!(baseline.dimensions(), progressive.dimensions());
    // 59.5 dB when this was written: the scene is smooth.
    let quality = psnr(&baseline, &progressive);
    assert!(quality >= 35.0, "{quality:.1} dB");

    // The decode that made it is the half-scale one: under a budget too small for it, that is
    // the need the refusal names.
    let alone = Photos::holding(&[("progressive.jpg", &stored)])?;
    let out = alone.sweep(&[("MAX_DECODE_BYTES", "1048576")])?;
    let (stdout, both) = streams(&out);
    assert_eq!(counts(&stdout)?, [0, 0, 1], "{both}");
    assert!(
        stdout.contains("the progressive (half scale)") && stdout.contains("1600x1067"),
        "{both}"
    );
    Ok(())
}
