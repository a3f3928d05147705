//! A progressive JPEG's memory need as the command line meets it: a 100-megapixel CMYK file
//! whose thumbnail needs at most an eighth of it comes from its DC scans within a 64 MiB
//! budget; for a size over that eighth it needs 16 coefficients of every block (at half
//! scale), and for one over a quarter libjpeg's whole coefficient buffer, and the run refuses
//! both naming the need and the budget.

use crate::support::TestResult;
use crate::support::function::THUMBNAIL_ON_CREATE;
use crate::support::images::jpeg_segment as segment;
use crate::support::summary::{counts, run_cli, streams};

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
        let scratch = tempfile::tempdir()?;
        std::fs::create_dir_all(scratch.path().join("photos"))?;
        std::fs::write(
            scratch.path().join("photos/big.jpg"),
            progressive_cmyk(10000),
        )?;
        let storage = scratch.path().to_string_lossy().into_owned();
        let out = run_cli(
            THUMBNAIL_ON_CREATE,
            &["sweep", "--bucket", "photos", "--storage", &storage],
            &[
                ("THUMBNAIL_SIZES", sizes),
                ("MAX_SOURCE_PIXELS", "100000000"),
                ("MAX_DECODE_BYTES", "67108864"),
            ],
        )?;
        let (stdout, both) = streams(&out);
        let thumbnail = scratch
            .path()
            .join(format!("photos/thumbnails/big.jpg/{sizes}.jpg"));
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
