//! Runs the thumbnail pipeline over image files in one process, single-threaded, and prints
//! per file the process CPU time and the peak resident memory of that file's run (Linux: the
//! peak is reset between files through /proc/self/clear_refs). Used by
//! scripts/bench-thumbnail.sh.
//!
//! Usage: pipeline-bench [--size N] [--format jpeg|png|webp] [--repeat N] [--out DIR]
//! [--embedded-previews] FILE...
//! Prints `file<TAB>best CPU milliseconds<TAB>peak MiB<TAB>WxH` per file (or `error` and why).

use std::path::PathBuf;

use bucketfn::budget::Stop;
use thumbnail_on_create::Config;
use thumbnail_on_create::pipeline::{Spec, make_thumbnails};

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn reset_peak_rss() {
    // "5" resets the peak resident set size (VmHWM) to the current one.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    // The default configuration's 256 px JPEG at quality 85, for images up to 300 MP.
    let mut spec = Spec {
        max_pixels: 300_000_000,
        ..Spec::from(&Config::default())
    };
    let mut out: Option<PathBuf> = None;
    let mut repeat = 1;
    let mut files = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--size" => spec.sizes = vec![args.next().ok_or("--size N")?.parse()?],
            "--format" => spec.format = args.next().ok_or("--format F")?.parse()?,
            "--out" => out = Some(args.next().ok_or("--out DIR")?.into()),
            "--repeat" => repeat = args.next().ok_or("--repeat N")?.parse()?,
            "--embedded-previews" => spec.embedded_previews = true,
            _ => files.push(PathBuf::from(arg)),
        }
    }
    for file in &files {
        let source = std::fs::read(file)?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (mut best, mut peak) = (f64::MAX, 0.0_f64);
        let mut result = None;
        for _ in 0..repeat.max(1) {
            reset_peak_rss();
            let began = cpu_time::ProcessTime::now();
            let run = make_thumbnails(&source, &spec, &Stop::default());
            best = best.min(began.elapsed().as_secs_f64() * 1000.0);
            peak = peak.max(peak_rss_kib().unwrap_or(0) as f64 / 1024.0);
            result = Some(run);
        }
        match result.ok_or("no run")? {
            Ok(thumbnails) => {
                let t = &thumbnails[0];
                println!("{name}\t{best:.2}\t{peak:.1}\t{}x{}", t.width, t.height);
                if let Some(dir) = &out {
                    let path = dir.join(format!("{name}.{}", spec.format.extension()));
                    std::fs::write(path, &t.bytes)?;
                }
            }
            Err(e) => println!("{name}\terror\t{peak:.1}\t{e}"),
        }
    }
    Ok(())
}
