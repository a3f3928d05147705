//! No event destroys live data, through the command line as a user runs the functions, on a
//! directory store and on the S3 server: a move followed by the cleanup its own delete
//! triggers, one thumbnail bucket for two source buckets, a remove dated in the future for a
//! live object, and a move on a store that ignores `If-Match` on DELETE.

use std::path::Path;
use std::process::{Command, Output};

use bucketfn::ObjectStore;
use bucketfn::derivatives::source_was_moved;
use bucketfn::storage::S3Store;
use image::ImageFormat;
use serde_json::json;

use crate::support::function::{CLEANUP_ON_REMOVE, THUMBNAIL_ON_CREATE};
use crate::support::images::gradient;
use crate::support::s3_server::S3Server;
use crate::support::{BoxError, TestResult};

/// Where a function process keeps its objects.
enum Store<'a> {
    /// `--storage DIR`.
    Directory(&'a Path),
    /// The S3 server, reached as a deployment reaches S3 (the endpoint variables).
    S3(&'a S3Server),
}

/// `binary invoke EVENT` against `store`, with only `env` and the S3 variables set.
fn invoke(binary: &str, event: &Path, store: &Store<'_>, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("invoke")
        .arg(event)
        .env_clear()
        .env("SOURCE_BUCKETS", "*");
    match store {
        Store::Directory(storage) => {
            command.arg("--storage").arg(storage);
        }
        Store::S3(server) => {
            command.envs(server.env());
        }
    }
    command.envs(env.iter().copied());
    command
}

fn run(
    binary: &str,
    event: &Path,
    storage: &Path,
    env: &[(&str, &str)],
) -> std::io::Result<Output> {
    invoke(binary, event, &Store::Directory(storage), env).output()
}

/// Runs the process off the async workers, which serve the in-process S3 server meanwhile.
async fn run_on_s3(
    binary: &str,
    event: &Path,
    server: &S3Server,
    env: &[(&str, &str)],
) -> Result<Output, BoxError> {
    let mut command = invoke(binary, event, &Store::S3(server), env);
    Ok(tokio::task::spawn_blocking(move || command.output()).await??)
}

/// An S3 notification of `name` (`ObjectCreated:Put`, `ObjectRemoved:Delete`) for
/// `bucket/key` (key as S3 encodes it) at `time`, saved in `dir`.
fn event(
    dir: &Path,
    name: &str,
    bucket: &str,
    key: &str,
    time: &str,
) -> Result<std::path::PathBuf, BoxError> {
    let body = json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3",
        "eventTime": time, "eventName": name,
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 1}}}]});
    let path = dir.join(format!("{}-{bucket}.json", name.replace(':', "-")));
    std::fs::write(&path, serde_json::to_vec(&body)?)?;
    Ok(path)
}

/// The created event of every test: its time only has to come before the removes'.
fn created(dir: &Path, bucket: &str, key: &str) -> Result<std::path::PathBuf, BoxError> {
    event(
        dir,
        "ObjectCreated:Put",
        bucket,
        key,
        "2026-01-01T10:00:00.000Z",
    )
}

fn removed(
    dir: &Path,
    bucket: &str,
    key: &str,
    time: &str,
) -> Result<std::path::PathBuf, BoxError> {
    event(dir, "ObjectRemoved:Delete", bucket, key, time)
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
    let created = created(scratch.path(), "photos", "in/lake.jpg")?;
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
    let removed = removed(
        scratch.path(),
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
        let created = created(scratch.path(), bucket, "same.jpg")?;
        let out = run(THUMBNAIL_ON_CREATE, &created, &storage, &shared)?;
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    }
    let thumbnail =
        |bucket: &str| storage.join(format!("thumbs/thumbnails/{bucket}/same.jpg/256.jpg"));
    assert!(thumbnail("photos").is_file() && thumbnail("scans").is_file());

    // One source's removal takes its own set and nothing of the other's.
    std::fs::remove_file(storage.join("scans/same.jpg"))?;
    let removed = removed(
        scratch.path(),
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
    let created = created(scratch.path(), "photos", "live.jpg")?;
    let out = run(THUMBNAIL_ON_CREATE, &created, &storage, &[])?;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let forged = removed(
        scratch.path(),
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

/// `THUMBNAIL_SIZES` of the S3 tests, and the keys a move of `key` leaves in its folder.
const SIZES: (&str, [&str; 3]) = ("128,256", ["128.jpg", "256.jpg", "original.jpg"]);

#[tokio::test(flavor = "multi_thread")]
async fn on_s3_a_move_and_the_cleanup_its_delete_triggers_keep_the_thumbnails_and_the_copy()
-> TestResult {
    let server = S3Server::start().await?;
    server.conditional_deletes(true);
    server.create_bucket("photos").await?;
    let photo = gradient(640, 480, ImageFormat::Jpeg)?;
    server
        .put("photos", "in/lake + sky.jpg", photo.clone())
        .await?;
    let scratch = tempfile::tempdir()?;
    let created = created(scratch.path(), "photos", "in/lake+%2B+sky.jpg")?;
    let env = [("DELETE_SOURCE", "true"), ("THUMBNAIL_SIZES", SIZES.0)];
    let moved = run_on_s3(THUMBNAIL_ON_CREATE, &created, &server, &env).await?;
    assert_eq!(moved.status.code(), Some(0), "{}", stdout(&moved));
    assert!(server.get("photos", "in/lake + sky.jpg").await?.is_none());
    let store = S3Store::new(server.client(1));
    let (original, _) = server
        .get("photos", "thumbnails/in/lake + sky.jpg/original.jpg")
        .await?
        .ok_or("no copy of the source")?;
    assert_eq!(original, photo);

    let removed = removed(
        scratch.path(),
        "photos",
        "in/lake+%2B+sky.jpg",
        "2026-01-01T10:00:01.000Z",
    )?;
    let cleaned = run_on_s3(CLEANUP_ON_REMOVE, &removed, &server, &[]).await?;
    let text = stdout(&cleaned);
    assert_eq!(cleaned.status.code(), Some(0), "{text}");
    assert!(
        text.contains("kept 3 derivative(s) of a moved source"),
        "{text}"
    );
    for name in SIZES.1 {
        let key = format!("thumbnails/in/lake + sky.jpg/{name}");
        let info = store.head("photos", &key).await?;
        assert!(source_was_moved(&info.metadata), "{key}: {info:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn on_s3_one_thumbnail_bucket_for_two_source_buckets_keeps_each_set_apart() -> TestResult {
    let server = S3Server::start().await?;
    server.conditional_deletes(true);
    let scratch = tempfile::tempdir()?;
    let env = [("THUMBNAIL_BUCKET", "thumbs"), ("THUMBNAIL_SIZES", SIZES.0)];
    server.create_bucket("thumbs").await?;
    for (bucket, width) in [("photos", 640), ("scans", 320)] {
        server.create_bucket(bucket).await?;
        server
            .put(bucket, "same.jpg", gradient(width, 240, ImageFormat::Jpeg)?)
            .await?;
        let created = created(scratch.path(), bucket, "same.jpg")?;
        let out = run_on_s3(THUMBNAIL_ON_CREATE, &created, &server, &env).await?;
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    }
    let thumbnail = |bucket: &str| format!("thumbnails/{bucket}/same.jpg/256.jpg");
    for bucket in ["photos", "scans"] {
        assert!(server.get("thumbs", &thumbnail(bucket)).await?.is_some());
    }

    S3Store::new(server.client(1))
        .delete("scans", "same.jpg")
        .await?;
    let removed = removed(
        scratch.path(),
        "scans",
        "same.jpg",
        "2026-01-01T11:00:00.000Z",
    )?;
    let out = run_on_s3(CLEANUP_ON_REMOVE, &removed, &server, &env).await?;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("deleted 2 thumbnail(s)"), "{text}");
    assert!(server.get("thumbs", &thumbnail("scans")).await?.is_none());
    assert!(server.get("thumbs", &thumbnail("photos")).await?.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_store_that_ignores_if_match_on_delete_a_move_keeps_its_source() -> TestResult {
    let server = S3Server::start().await?;
    // As s3s-fs itself: DELETE deletes whatever If-Match says.
    server.conditional_deletes(false);
    server.create_bucket("photos").await?;
    server
        .put("photos", "notes.txt", b"keep me".to_vec())
        .await?;
    let scratch = tempfile::tempdir()?;
    let created = created(scratch.path(), "photos", "notes.txt")?;
    let out = run_on_s3(
        THUMBNAIL_ON_CREATE,
        &created,
        &server,
        &[("DELETE_SOURCE", "true")],
    )
    .await?;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("the store ignores If-Match on DELETE"),
        "{text}"
    );
    let (body, _) = server
        .get("photos", "notes.txt")
        .await?
        .ok_or("the source was deleted")?;
    assert_eq!(body, b"keep me");
    Ok(())
}
