//! The command line as a user runs it: `decode` and `invoke --storage DIR`.

use std::process::{Command, Output};

use image::ImageFormat;

use crate::support::function::THUMBNAIL_ON_CREATE;
use crate::support::images::{dimensions, gradient};
use crate::support::served::Served;
use crate::support::{BoxError, TestResult, workspace_root};

fn run(args: &[&str], env: &[(&str, &str)]) -> std::io::Result<Output> {
    Command::new(THUMBNAIL_ON_CREATE)
        .args(args)
        .current_dir(workspace_root())
        .env_clear()
        .envs(env.iter().copied())
        .output()
}

#[test]
fn decode_prints_normalized_events_with_headers_from_a_file() -> TestResult {
    let out = run(
        &[
            "decode",
            "events/ibm-cos/write.json",
            "-H",
            "@events/ibm-cos/write.headers",
        ],
        &[],
    )?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(events[0]["source"], "ibm-cos");
    assert_eq!(events[0]["key"], "uploads/Notes & <draft>.rtf");
    assert_eq!(events[0]["id"], "6abc7123-382d-4115-98e8-7568b2cc03f8");
    let fields: Vec<&String> = events[0]
        .as_object()
        .ok_or("not an object")?
        .keys()
        .collect();
    assert_eq!(fields.len(), 11, "{fields:?}");
    Ok(())
}

#[test]
fn decode_rejects_bad_input_with_exit_2_and_a_message() -> TestResult {
    let out = run(
        &["decode", "events/invalid/documentation-placeholder.json"],
        &[],
    )?;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`Records[0].s3.object.size` is \"object-size in bytes\""),
        "{stderr}"
    );

    let out = run(&["decode", "events/does-not-exist.json"], &[])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read events/does-not-exist.json")
    );
    Ok(())
}

/// A store directory holding the object `events/sqs/s3-created.json` announces, and its path.
fn scan_in_media_uploads() -> Result<(tempfile::TempDir, String), BoxError> {
    let storage = tempfile::tempdir()?;
    let photos = storage.path().join("media-uploads/incoming");
    std::fs::create_dir_all(&photos)?;
    std::fs::write(
        photos.join("scan 0001.tif"),
        gradient(1024, 512, ImageFormat::Tiff)?,
    )?;
    let dir = storage.path().to_string_lossy().into_owned();
    Ok((storage, dir))
}

#[test]
fn invoke_with_a_local_directory_writes_the_thumbnail_and_reports_each_record() -> TestResult {
    let (storage, dir) = scan_in_media_uploads()?;

    let out = run(
        &["invoke", "events/sqs/s3-created.json", "--storage", &dir],
        &[],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("succeeded\t059f36b4-87a3-44ab-83d2-661975830a7d\tdone: wrote"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("succeeded\t2e1424d4-f796-459a-8184-9c92662be6da\tno object events"),
        "{stdout}"
    );
    let thumb = std::fs::read(
        storage
            .path()
            .join("media-uploads/thumbnails/incoming/scan 0001.tif/256.jpg"),
    )?;
    assert_eq!(dimensions(&thumb)?, (256, 128));
    Ok(())
}

#[test]
fn invoke_exits_non_zero_when_a_record_fails() -> TestResult {
    let storage = tempfile::tempdir()?;
    let incoming = storage.path().join("media-uploads/incoming");
    std::fs::create_dir_all(&incoming)?;
    std::fs::write(incoming.join("scan 0001.tif"), b"II*\0 truncated tiff")?;
    let dir = storage.path().to_string_lossy().into_owned();
    let out = run(
        &["invoke", "events/sqs/s3-created.json", "--storage", &dir],
        &[],
    )?;
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("permanent\t059f36b4"), "{stdout}");
    Ok(())
}

#[test]
fn invoke_reports_every_configuration_problem_at_once() -> TestResult {
    let out = run(
        &["invoke", "events/aws-s3/created.json", "--storage", "."],
        &[
            ("THUMBNAIL_PREFIX", ""),
            ("THUMBNAIL_QUALITY", "0"),
            ("PORT", "http"),
        ],
    )?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid configuration (3 problems)"),
        "{stderr}"
    );
    for variable in ["THUMBNAIL_PREFIX", "THUMBNAIL_QUALITY", "PORT"] {
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
    Ok(())
}

#[test]
fn sweep_catches_up_on_a_local_bucket_and_prints_a_summary() -> TestResult {
    let storage = tempfile::tempdir()?;
    let bucket = storage.path().join("photos");
    std::fs::create_dir_all(bucket.join("2024"))?;
    for name in ["2024/a.png", "2024/b c.png", "2024/d.png"] {
        std::fs::write(bucket.join(name), gradient(300, 200, ImageFormat::Png)?)?;
    }
    std::fs::write(bucket.join("2024/broken.png"), b"\x89PNG\r\n\x1a\n nope")?;
    std::fs::write(bucket.join("2024/notes.txt"), b"not an image")?;
    let dir = storage.path().to_string_lossy().into_owned();

    let args = [
        "sweep",
        "--bucket",
        "photos",
        "--prefix",
        "2024/",
        "--storage",
        &dir,
    ];
    let out = run(&args, &[("THUMBNAIL_SIZES", "64,128")])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A failed object fails the sweep, so that it shows.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("permanent\t") && stdout.contains("sweep: 3 done, 1 skipped, 1 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"2024/broken.png\": photos/2024/broken.png cannot be thumbnailed"),
        "{stdout}"
    );
    assert!(stdout.contains("finished"), "{stdout}");
    let thumb = std::fs::read(bucket.join("thumbnails/2024/b c.png/128.jpg"))?;
    assert_eq!(dimensions(&thumb)?, (128, 85));

    // Nothing is made twice, and the broken image stays listed without being tried again.
    let again = run(&args, &[("THUMBNAIL_SIZES", "64,128")])?;
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("0 done, 4 skipped, 0 failed; 1 object(s) failing"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(permanent; listed until the object changes"),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn invoke_refuses_events_for_buckets_outside_source_buckets() -> TestResult {
    let (storage, dir) = scan_in_media_uploads()?;
    // The served buckets exist: a missing one would stop the start instead (checked at start-up).
    for bucket in ["photos", "archive"] {
        std::fs::create_dir_all(storage.path().join(bucket))?;
    }
    let args = ["invoke", "events/sqs/s3-created.json", "--storage", &dir];

    for sources in [
        ("SOURCE_BUCKETS", "photos,archive/media-uploads"),
        ("SOURCE_BUCKET", "photos"),
    ] {
        let out = run(&args, &[sources])?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{sources:?}: {stdout}");
        let variable = sources.0;
        assert!(
            stdout.starts_with(&format!(
                "permanent\t059f36b4-87a3-44ab-83d2-661975830a7d\tbucket \"media-uploads\" is not \
                 one this function serves ({variable})\n"
            )),
            "{stdout}"
        );
    }
    // Only the prefix is served: a key outside it is refused too.
    let out = run(&args, &[("SOURCE_BUCKETS", "media-uploads/originals/")])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "\"incoming/scan 0001.tif\" in bucket \"media-uploads\" is not under a prefix this \
             function serves there (SOURCE_BUCKETS)"
        ),
        "{stdout}"
    );
    assert!(!storage.path().join("media-uploads/thumbnails").exists());

    let out = run(&args, &[("SOURCE_BUCKETS", "media-uploads/incoming/")])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

#[test]
fn against_s3_without_source_buckets_nothing_starts() -> TestResult {
    let out = run(&["invoke", "events/aws-s3/created.json"], &[])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SOURCE_BUCKETS: is required against S3"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn a_sweep_of_a_bucket_outside_the_sources_is_refused() -> TestResult {
    let storage = tempfile::tempdir()?;
    let other = storage.path().join("other");
    std::fs::create_dir_all(&other)?;
    std::fs::write(other.join("a.png"), gradient(300, 200, ImageFormat::Png)?)?;
    std::fs::create_dir_all(storage.path().join("photos"))?;
    let dir = storage.path().to_string_lossy().into_owned();
    let out = run(
        &["sweep", "--bucket", "other", "--storage", &dir],
        &[("SOURCE_BUCKET", "photos")],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("bucket \"other\" is not one this function serves (SOURCE_BUCKET)"),
        "{stdout}"
    );
    assert!(!other.join("thumbnails").exists());
    Ok(())
}

/// `describe` names what the Knative lint checks the manifests against: every CloudEvent type
/// it lists is read by its own decoder (a structured event of it is not refused as of an
/// unknown type), a type it does not list is, and its health route answers.
#[tokio::test(flavor = "multi_thread")]
async fn describe_lists_the_types_the_decoder_reads_and_the_health_route() -> TestResult {
    let out = run(&["describe"], &[])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let description: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let listed = |field: &str| -> Result<Vec<String>, BoxError> {
        let names = description["cloudevent_types"][field]
            .as_array()
            .ok_or_else(|| format!("no cloudevent_types.{field} in {description}"))?;
        Ok(names
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect())
    };
    let (exact, prefixes) = (listed("exact")?, listed("prefixes")?);
    assert!(!exact.is_empty() && !prefixes.is_empty(), "{description}");
    let dir = tempfile::tempdir()?;
    let decodes_by_name = |ty: &str| -> Result<bool, BoxError> {
        let file = dir.path().join("event.json");
        let event = serde_json::json!({"specversion": "1.0", "type": ty, "id": "1",
            "source": "/describe", "data": {}});
        std::fs::write(&file, event.to_string())?;
        let out = run(&["decode", &file.to_string_lossy()], &[])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        Ok(!stderr.contains("whose data is not a bucket notification"))
    };
    let types = exact
        .iter()
        .cloned()
        .chain(prefixes.iter().map(|p| format!("{p}Anything")));
    for ty in types {
        assert!(
            decodes_by_name(&ty)?,
            "{ty} is listed, but refused as unknown"
        );
    }
    assert!(
        !decodes_by_name("com.example.order.placed")?,
        "an unlisted type was read by name"
    );

    let route = description["health_route"]
        .as_str()
        .ok_or("no health_route")?;
    let storage = tempfile::tempdir()?;
    let served = Served::start(THUMBNAIL_ON_CREATE, storage.path(), &[]).await?;
    let reply = served.call("GET", route, &[], Vec::new()).await?;
    assert_eq!(reply.status, 200, "GET {route}");
    Ok(())
}
