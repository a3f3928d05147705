//! Fuzz target: thumbnail-on-create's header checks, which tell from the header alone whether
//! an image may be decoded and what the decode will need in memory, under a few configurations.

use thumbnail_on_create::pipeline::{OutputFormat, Spec, decode_need};

fn main() {
    let specs = specs();
    afl::fuzz!(|data: &[u8]| {
        for spec in &specs {
            match decode_need(data, spec) {
                // The need counts the source itself, so anything less is a miscount (or an
                // arithmetic overflow in a release build).
                Ok(need) => assert!(
                    need.bytes >= data.len() as u64,
                    "{} needs {} bytes, less than its {} source bytes",
                    need.what,
                    need.bytes,
                    data.len()
                ),
                Err(error) => {
                    std::hint::black_box(error.to_string());
                }
            }
        }
    });
}

/// The default configuration, the widest one the configuration accepts (every size up to
/// 8192 with upscaling, no pixel cap), and the narrowest.
fn specs() -> [Spec; 3] {
    let spec = |sizes: Vec<u32>, upscale, max_pixels| Spec {
        sizes,
        format: OutputFormat::Jpeg,
        quality: 85,
        background: [255, 255, 255],
        upscale,
        max_pixels,
    };
    [
        spec(vec![256], false, 100_000_000),
        spec(vec![1, 256, 8192], true, u64::MAX),
        spec(vec![1], false, 1),
    ]
}
