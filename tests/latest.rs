//! Seed 004's `--latest N` through the binaries: only the N most recently modified objects of
//! the prefix are handled, whatever their keys' order; the run keeps no cursor or checkpoint,
//! so the next pass still covers everything; a forwarded version is not forwarded again.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, SystemTime};

use image::ImageFormat;

use crate::support::function::{FORWARD_TO_STREAM, THUMBNAIL_ON_CREATE};
use crate::support::images::gradient;
use crate::support::summary::{run_cli, streams};
use crate::support::{BoxError, TestResult};

/// Keys in key order, each with the minutes after the first write it was last modified: the
/// two newest are neither the first nor the last keys.
const OBJECTS: [(&str, u64); 5] = [("a", 10), ("b", 40), ("c", 20), ("d", 50), ("e", 0)];
const NEWEST: [&str; 2] = ["b", "d"];

/// Writes `body` as each of [`OBJECTS`] (`<key><extension>`) in `DIR/<bucket>/`, modified at
/// its time.
fn bucket_of(
    storage: &Path,
    bucket: &str,
    extension: &str,
    body: &[u8],
) -> Result<std::path::PathBuf, BoxError> {
    let folder = storage.join(bucket);
    std::fs::create_dir_all(&folder)?;
    let start = SystemTime::now() - Duration::from_secs(3600);
    for (key, minutes) in OBJECTS {
        let path = folder.join(format!("{key}{extension}"));
        std::fs::write(&path, body)?;
        File::options()
            .write(true)
            .open(&path)?
            .set_modified(start + Duration::from_secs(60 * minutes))?;
    }
    Ok(folder)
}

/// The keys under `folder` (recursively) as paths relative to it.
fn files_under(folder: &Path) -> Result<Vec<String>, BoxError> {
    let mut found = Vec::new();
    let mut folders = vec![folder.to_path_buf()];
    while let Some(current) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                found.push(path.strip_prefix(folder)?.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    Ok(found)
}

#[test]
fn a_thumbnail_sweep_of_the_latest_two_makes_only_theirs_and_keeps_no_cursor() -> TestResult {
    let storage = tempfile::tempdir()?;
    let photo = gradient(600, 400, ImageFormat::Jpeg)?;
    let bucket = bucket_of(storage.path(), "photos", ".jpg", &photo)?;
    let dir = storage.path().to_string_lossy().into_owned();
    let args = [
        "sweep",
        "--bucket",
        "photos",
        "--latest",
        "2",
        "--storage",
        &dir,
    ];
    let out = run_cli(THUMBNAIL_ON_CREATE, &args, &[])?;
    let (stdout, both) = streams(&out);
    assert_eq!(out.status.code(), Some(0), "{both}");
    assert!(stdout.contains("2 done, 0 skipped, 0 failed"), "{stdout}");
    let made = files_under(&bucket.join("thumbnails"))?;
    assert!(!made.is_empty(), "{both}");
    for file in &made {
        let of = NEWEST
            .iter()
            .any(|k| file.starts_with(&format!("{k}.jpg/")));
        assert!(of, "{file} is not a thumbnail of {NEWEST:?}: {made:?}");
    }
    for key in NEWEST {
        assert!(
            made.iter().any(|f| f.starts_with(&format!("{key}.jpg/"))),
            "{made:?}"
        );
    }
    assert!(
        !made.iter().any(|f| f.starts_with(".sweep/")),
        "a latest run keeps no cursor: {made:?}"
    );
    // The next full pass still covers every photo.
    let out = run_cli(
        THUMBNAIL_ON_CREATE,
        &["sweep", "--bucket", "photos", "--storage", &dir],
        &[],
    )?;
    let (stdout, both) = streams(&out);
    assert_eq!(out.status.code(), Some(0), "{both}");
    assert!(stdout.contains("3 done, 2 skipped, 0 failed"), "{stdout}");
    Ok(())
}

#[test]
fn a_latest_count_over_the_limit_is_refused_naming_it() -> TestResult {
    let storage = tempfile::tempdir()?;
    bucket_of(storage.path(), "photos", ".jpg", b"not read")?;
    let dir = storage.path().to_string_lossy().into_owned();
    let args = [
        "sweep",
        "--bucket",
        "photos",
        "--latest",
        "10001",
        "--storage",
        &dir,
    ];
    let out = run_cli(THUMBNAIL_ON_CREATE, &args, &[])?;
    let (_, both) = streams(&out);
    assert_eq!(out.status.code(), Some(1), "{both}");
    assert!(both.contains("1 to 10000 objects (MAX_LATEST)"), "{both}");
    Ok(())
}

#[test]
fn forwarding_the_latest_two_sends_their_records_once() -> TestResult {
    let storage = tempfile::tempdir()?;
    bucket_of(storage.path(), "logs", ".log", b"one\ntwo\n")?;
    let dir = storage.path().to_string_lossy().into_owned();
    let out_dir = tempfile::tempdir()?;
    let sink = out_dir.path().join("sink.jsonl");
    let sink_text = sink.to_string_lossy().into_owned();
    let env = [
        ("FORWARD_MODE", "content"),
        ("CONTENT_FORMAT", "lines"),
        ("FORWARD_SINK", "file"),
        ("FORWARD_FILE", sink_text.as_str()),
    ];
    let args = [
        "sweep",
        "--bucket",
        "logs",
        "--latest",
        "2",
        "--storage",
        &dir,
    ];
    let out = run_cli(FORWARD_TO_STREAM, &args, &env)?;
    let (stdout, both) = streams(&out);
    assert_eq!(out.status.code(), Some(0), "{both}");
    assert!(stdout.contains("2 done, 0 skipped, 0 failed"), "{stdout}");
    // Again: both versions carry their forwarded marker.
    let out = run_cli(FORWARD_TO_STREAM, &args, &env)?;
    let (stdout, both) = streams(&out);
    assert_eq!(out.status.code(), Some(0), "{both}");
    assert!(stdout.contains("0 done, 2 skipped, 0 failed"), "{stdout}");
    let mut keys = Vec::new();
    for line in std::fs::read_to_string(&sink)?.lines() {
        let message: serde_json::Value = serde_json::from_str(line)?;
        keys.push(message["key"].as_str().unwrap_or_default().to_owned());
    }
    // Objects go concurrently: records of one object are in order, the objects in any.
    keys.sort();
    assert_eq!(
        keys,
        ["logs/b.log", "logs/b.log", "logs/d.log", "logs/d.log"]
    );
    assert!(
        !storage
            .path()
            .join("logs/.forward-to-stream/sweep.json")
            .exists(),
        "a latest run keeps no checkpoint"
    );
    Ok(())
}
