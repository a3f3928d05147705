//! Decompresses a gzip file (every member, as content mode reads it) with the inflater
//! forward-to-stream uses (flate2 on zlib-rs, through a buffered reader as content mode has it)
//! and throws the bytes away: the decode-only line of scripts/bench-forward.sh, what content
//! mode costs beyond splitting and publishing.
//!
//! Usage: inflate-bench FILE. Prints the decompressed bytes.

use std::io::{BufReader, Read};

use flate2::bufread::MultiGzDecoder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: inflate-bench FILE")?;
    let file = std::fs::File::open(path)?;
    let mut decoder = MultiGzDecoder::new(BufReader::with_capacity(64 * 1024, file));
    let mut buffer = vec![0; 256 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = decoder.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    println!("{total}");
    Ok(())
}
