//! No event destroys live data, through the command line as a user runs the functions on a
//! directory store: a move followed by the cleanup its own delete triggers, one thumbnail
//! bucket for two source buckets, and a remove dated in the future for a live object.

use std::path::Path;
use std::process::{Command, Output};

use image::ImageFormat;
use serde_json::json;

use crate::support::function::{CLEANUP_ON_REMOVE, THUMBNAIL_ON_CREATE};
use crate::support::images::gradient;
use crate::support::{BoxError, TestResult};

fn run(
    binary: &str,
    event: &Path,
    storage: &Path,
    env: &[(&str, &str)],
) -> std::io::Result<Output> {
    Command::new(binary)
        .arg("invoke")
        .arg(event)
        .arg("--storage")
        .arg(storage)
        .env_clear()
        .env("SOURCE_BUCKETS", "*")
        .envs(env.iter().copied())
        .output()
}

/// An S3 notification for `bucket/key` (key as S3 encodes it) at `time`, saved in `dir`.
fn event(
    dir: &Path,
    name: &str,
    bucket: &str,
    key: &str,
    time: &str,
) -> Result<std::path::PathBuf, BoxError> {
    let event_name = match name {
        "removed" => "ObjectRemoved:Delete",
        _ => "ObjectCreated:Put",
    };
    let body = json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3",
        "eventTime": time, "eventName": event_name,
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 1}}}]});
    let path = dir.join(format!("{name}-{bucket}.json"));
    std::fs::write(&path, serde_json::to_vec(&body)?)?;
    Ok(path)
}

fn stdout(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn image_in(storage: &Path, bucket: &str, key: &str) -> TestResult {
    let path = storage.join(bucket).join(key);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, gradient(640, 480, ImageFormat::Jpeg)?)?;
    Ok(())
}

#[test]
fn a_move_and_the_cleanup_its_own_delete_triggers_keep_the_thumbnails_and_the_copy() -> TestResult {
    let scratch = tempfile::tempdir()?;
    let storage = scratch.path().join("store");
    image_in(&storage, "photos", "in/lake.jpg")?;
    let created = event(
        scratch.path(),
        "created",
        "photos",
        "in/lake.jpg",
        "2026-01-01T10:00:00.000Z",
    )?;
    let moved = run(
        THUMBNAIL_ON_CREATE,
        &created,
        &storage,
        &[("DELETE_SOURCE", "true")],
    )?;
    assert_eq!(moved.status.code(), Some(0), "{}", stdout(&moved));
    let folder = storage.join("photos/thumbnails/in/lake.jpg");
    assert!(
        !storage.join("photos/in/lake.jpg").exists(),
        "the source was not moved"
    );
    assert!(folder.join("256.jpg").is_file() && folder.join("original.jpg").is_file());

    // The move's own delete reaches cleanup-on-remove: what the move wrote stays.
    let removed = event(
        scratch.path(),
        "removed",
        "photos",
        "in/lake.jpg",
        "2026-01-01T10:00:01.000Z",
    )?;
    let cleaned = run(CLEANUP_ON_REMOVE, &removed, &storage, &[])?;
    let text = stdout(&cleaned);
    assert_eq!(cleaned.status.code(), Some(0), "{text}");
    assert!(
        text.contains("kept 2 derivative(s) of a moved source"),
        "{text}"
    );
    assert!(folder.join("256.jpg").is_file() && folder.join("original.jpg").is_file());
    Ok(())
}

#[test]
fn one_thumbnail_bucket_for_two_source_buckets_keeps_each_set_apart() -> TestResult {
    let scratch = tempfile::tempdir()?;
    let storage = scratch.path().join("store");
    std::fs::create_dir_all(storage.join("thumbs"))?;
    let shared = [("THUMBNAIL_BUCKET", "thumbs")];
    for bucket in ["photos", "scans"] {
        image_in(&storage, bucket, "same.jpg")?;
        let created = event(
            scratch.path(),
            "created",
            bucket,
            "same.jpg",
            "2026-01-01T10:00:00.000Z",
        )?;
        let out = run(THUMBNAIL_ON_CREATE, &created, &storage, &shared)?;
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    }
    let thumbnail =
        |bucket: &str| storage.join(format!("thumbs/thumbnails/{bucket}/same.jpg/256.jpg"));
    assert!(thumbnail("photos").is_file() && thumbnail("scans").is_file());

    // One source's removal takes its own set and nothing of the other's.
    std::fs::remove_file(storage.join("scans/same.jpg"))?;
    let removed = event(
        scratch.path(),
        "removed",
        "scans",
        "same.jpg",
        "2026-01-01T11:00:00.000Z",
    )?;
    let out = run(CLEANUP_ON_REMOVE, &removed, &storage, &shared)?;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(!thumbnail("scans").exists(), "{}", stdout(&out));
    assert!(thumbnail("photos").is_file());
    Ok(())
}

#[test]
fn a_remove_dated_in_the_future_for_a_live_object_deletes_nothing() -> TestResult {
    let scratch = tempfile::tempdir()?;
    let storage = scratch.path().join("store");
    image_in(&storage, "photos", "live.jpg")?;
    let created = event(
        scratch.path(),
        "created",
        "photos",
        "live.jpg",
        "2026-01-01T10:00:00.000Z",
    )?;
    let out = run(THUMBNAIL_ON_CREATE, &created, &storage, &[])?;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let forged = event(
        scratch.path(),
        "removed",
        "photos",
        "live.jpg",
        "2099-01-01T00:00:00.000Z",
    )?;
    let out = run(CLEANUP_ON_REMOVE, &forged, &storage, &[])?;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("stale") && text.contains("in the future"),
        "{text}"
    );
    assert!(storage.join("photos/thumbnails/live.jpg/256.jpg").is_file());
    Ok(())
}
