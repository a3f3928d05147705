//! Fuzz target: the whole pipeline (decode, resize, colour, orientation, encode) on what the
//! header checks let through, with a small pixel cap and memory budget so each run stays short.

use std::time::{Duration, Instant};

use bucketfn::budget::{MemoryBudget, Stop};
use thumbnail_on_create::pipeline::{OutputFormat, Spec, decode_need, make_thumbnails};

/// Images over a megapixel are refused from their header.
const MAX_PIXELS: u64 = 1 << 20;
/// What the handler would reserve from the process's budget for one image.
const BUDGET_BYTES: u64 = 64 * 1024 * 1024;
/// Work past this is stopped, as the runtime stops it at an event's deadline; a run that takes
/// much longer is a loop that does not look at its stop, which afl-fuzz reports as a hang.
const DEADLINE: Duration = Duration::from_secs(1);

const FORMATS: [OutputFormat; 3] = [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp];

fn main() {
    let budget = MemoryBudget::new(BUDGET_BYTES);
    // The decoders report corrupt input by unwinding, which make_thumbnails catches; only a
    // panic that escapes it is a crash.
    afl::fuzz_nohook!(|data: &[u8]| {
        // The input's length picks the encoder and the upscaling, so the seeds stay plain images.
        let spec = Spec {
            sizes: vec![16, 48],
            format: FORMATS[data.len() % FORMATS.len()],
            quality: 80,
            background: [255, 255, 255],
            upscale: data.len() % 2 == 0,
            max_pixels: MAX_PIXELS,
        };
        let Ok(need) = decode_need(data, &spec) else {
            return;
        };
        let Ok(_reservation) = budget.try_reserve(&need.what, need.bytes) else {
            return;
        };
        let stop = Stop::at(Some(Instant::now() + DEADLINE));
        match make_thumbnails(data, &spec, &stop) {
            Ok(thumbnails) => {
                assert_eq!(thumbnails.len(), spec.sizes.len(), "one thumbnail per size");
                for thumbnail in &thumbnails {
                    let longest = thumbnail.width.max(thumbnail.height);
                    assert!(
                        thumbnail.width > 0 && thumbnail.height > 0 && longest <= thumbnail.size,
                        "a {}x{} thumbnail for size {}",
                        thumbnail.width,
                        thumbnail.height,
                        thumbnail.size
                    );
                    assert!(!thumbnail.bytes.is_empty(), "an empty thumbnail");
                }
            }
            Err(error) => {
                std::hint::black_box(error.to_string());
            }
        }
    });
}
