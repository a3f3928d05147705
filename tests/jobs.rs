//! Sweeps on a distributed engine, through the binaries as the platforms start them: the
//! workers of a Code Engine array job (`JOB_INDEX` of `JOB_ARRAY_SIZE`) or a Kubernetes
//! Indexed Job (`JOB_COMPLETION_INDEX`) share one bucket, each object done by exactly one of
//! them, each worker with a cursor of its own that it resumes from after a budget stops it; a
//! job that a Code Engine COS subscription starts reads its event from `CE_*` variables; and
//! each invocation of a Lambda fan-out sweeps the share its Scheduled Event's detail names.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bucketfn::event::Shard;
use image::ImageFormat;
use serde_json::{Value, json};

use crate::support::function::THUMBNAIL_ON_CREATE;
use crate::support::images::gradient;
use crate::support::lambda_api::ThumbnailLambda;
use crate::support::summary::{continues_after, counts, lambda_outcome, streams};
use crate::support::{BoxError, TestResult, workspace_root};

/// One object at a time, so that how far a budgeted run gets depends on the work.
const ONE_AT_A_TIME: (&str, &str) = ("SWEEP_CONCURRENCY", "1");
/// Runs a budgeted worker is allowed for its share: far more than a loaded machine needs.
const MOST_RUNS: usize = 40;

fn photo_key(n: usize) -> String {
    format!("{n:03}.jpg")
}

/// A directory store (`DIR/<bucket>/<key>`) whose bucket `photos` holds `keys`, each `photo`.
fn store_with(keys: &[String], photo: &[u8]) -> Result<tempfile::TempDir, BoxError> {
    let storage = tempfile::tempdir()?;
    let bucket = storage.path().join("photos");
    std::fs::create_dir_all(&bucket)?;
    for key in keys {
        let path = bucket.join(key);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)?;
        }
        std::fs::write(path, photo)?;
    }
    Ok(storage)
}

/// A small image: milliseconds of thumbnailing.
fn small_photo() -> Result<Vec<u8>, BoxError> {
    Ok(gradient(300, 200, ImageFormat::Jpeg)?)
}

/// Whether the thumbnails of `key` are in the store (thumbnail-on-create's default layout).
fn has_thumbnails(storage: &Path, key: &str) -> bool {
    std::fs::read_dir(storage.join("photos/thumbnails").join(key))
        .is_ok_and(|mut entries| entries.next().is_some())
}

/// The cursor thumbnail-on-create keeps for worker `shard` of a sweep of all of `photos`.
fn cursor_of(storage: &Path, shard: Shard) -> PathBuf {
    storage
        .join("photos")
        .join(shard.progress_key("thumbnails/.sweep/photos/cursor.json"))
}

fn saved(path: &Path) -> Result<Option<Value>, BoxError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// thumbnail-on-create with `args` and only `env` (and `SOURCE_BUCKET=photos`), as a job's
/// container starts it.
fn thumbnail(args: &[&str], env: &[(&str, String)]) -> std::io::Result<Output> {
    Command::new(THUMBNAIL_ON_CREATE)
        .args(args)
        .env_clear()
        .env("SOURCE_BUCKET", "photos")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
}

fn shards(count: u32) -> Result<Vec<Shard>, BoxError> {
    Ok((0..count)
        .map(|index| Shard::new(index, count))
        .collect::<Result<_, _>>()?)
}

fn owned_by(shard: Shard, keys: &[String]) -> usize {
    keys.iter().filter(|k| shard.owns(k)).count()
}

/// The variables Code Engine gives instance `index` of an array job of `count`.
fn code_engine_worker(index: u32, count: u32) -> Vec<(&'static str, String)> {
    vec![
        ("CE_JOB", "thumbnail-sweep".to_owned()),
        ("CE_JOBRUN", "thumbnail-sweep-jobrun-f5kxz".to_owned()),
        ("CE_REGION", "eu-de".to_owned()),
        ("JOB_INDEX", index.to_string()),
        ("JOB_ARRAY_SIZE", count.to_string()),
        ("JOB_MODE", "task".to_owned()),
    ]
}

/// Two workers of a Code Engine array job over one bucket: worker 0 under a budget that
/// stops it part-way, worker 1 all at once in between. Every object is done exactly once
/// between them (the done counts add up to the bucket and nothing is ever skipped as already
/// done), each worker keeps its own cursor and leaves the other's alone, and worker 0 resumes
/// from its own after each stop until its share is finished.
#[test]
fn two_workers_of_an_array_job_do_each_object_once_and_resume_on_their_own() -> TestResult {
    const PHOTOS: usize = 80;
    let keys: Vec<String> = (0..PHOTOS).map(photo_key).collect();
    // A 1500x1000 JPEG: tens of milliseconds of thumbnailing in a debug build.
    let storage = store_with(&keys, &gradient(1500, 1000, ImageFormat::Jpeg)?)?;
    let dir = storage.path().to_string_lossy().into_owned();
    let [first, second] = <[Shard; 2]>::try_from(shards(2)?).map_err(|_| "two shards")?;
    let worker = |shard: Shard, budget: Option<&str>| -> Result<String, BoxError> {
        let mut args = vec!["job", "--storage", &dir];
        if let Some(budget) = budget {
            args.extend(["--budget", budget]);
        }
        let mut env = code_engine_worker(shard.index, shard.count);
        env.push((ONE_AT_A_TIME.0, ONE_AT_A_TIME.1.to_owned()));
        let out = thumbnail(&args, &env)?;
        let text = streams(&out).1;
        assert_eq!(out.status.code(), Some(0), "worker {shard}: {text}");
        assert!(text.starts_with("succeeded\t"), "worker {shard}: {text}");
        Ok(text)
    };

    let mut done = [0; 2];
    let mut runs = 0;
    let mut finished = false;
    while !finished {
        runs += 1;
        assert!(
            runs <= MOST_RUNS,
            "worker 0 not finished after {MOST_RUNS} runs"
        );
        let summary = worker(first, Some("1"))?;
        let [made, skipped, failed] = counts(&summary)?;
        assert_eq!(
            (skipped, failed),
            (0, 0),
            "run {runs}: redid work: {summary}"
        );
        done[0] += made;
        finished = summary.contains("; finished");
        let cursor = saved(&cursor_of(storage.path(), first))?;
        if finished {
            assert!(
                runs > 1,
                "the budget was to stop the first run part-way: {summary}"
            );
            assert_eq!(cursor, None, "a finished share keeps no cursor: {summary}");
        } else {
            assert!(
                summary.contains("stopped a margin before the deadline"),
                "{summary}"
            );
            let after = continues_after(&summary).ok_or_else(|| format!("no key: {summary}"))?;
            let cursor = cursor.ok_or_else(|| format!("run {runs} kept no cursor: {summary}"))?;
            assert_eq!(cursor["resume_after"], after, "{summary}");
        }
        if runs == 1 {
            // Worker 1 runs its whole share while worker 0 is part-way through its own.
            let before = std::fs::read(cursor_of(storage.path(), first))?;
            let summary = worker(second, None)?;
            let [made, skipped, failed] = counts(&summary)?;
            assert_eq!((skipped, failed), (0, 0), "{summary}");
            assert!(summary.contains("; finished"), "{summary}");
            done[1] = made;
            assert_eq!(
                std::fs::read(cursor_of(storage.path(), first))?,
                before,
                "worker 1 touched worker 0's cursor"
            );
            assert_eq!(saved(&cursor_of(storage.path(), second))?, None);
        }
    }
    assert_eq!(done, [owned_by(first, &keys), owned_by(second, &keys)]);
    assert_eq!(done[0] + done[1], PHOTOS);
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !has_thumbnails(storage.path(), k))
        .collect();
    assert!(missing.is_empty(), "no thumbnails for {missing:?}");
    // No cursor of an unsplit sweep was ever written: the workers kept only their own.
    let unsplit = storage
        .path()
        .join("photos/thumbnails/.sweep/photos/cursor.json");
    assert!(!unsplit.exists());
    Ok(())
}

/// The pods of a Kubernetes Indexed Job: `sweep` without `--shard` takes the worker from
/// `JOB_COMPLETION_INDEX` and the count from `JOB_ARRAY_SIZE`, which the manifest sets; the
/// three together do every object once.
#[test]
fn the_pods_of_an_indexed_job_split_a_sweep_by_their_completion_index() -> TestResult {
    let keys: Vec<String> = (0..24).map(|n| format!("2024/{n:02}.jpg")).collect();
    let storage = store_with(&keys, &small_photo()?)?;
    let dir = storage.path().to_string_lossy().into_owned();
    let mut total = 0;
    for shard in shards(3)? {
        let env = [
            ("JOB_COMPLETION_INDEX", shard.index.to_string()),
            ("JOB_ARRAY_SIZE", "3".to_owned()),
            ("THUMBNAIL_SIZES", "64".to_owned()),
        ];
        let out = thumbnail(&["sweep", "--prefix", "2024/", "--storage", &dir], &env)?;
        let text = streams(&out).1;
        assert_eq!(out.status.code(), Some(0), "{text}");
        let [made, skipped, failed] = counts(&text)?;
        assert_eq!(
            (made, skipped, failed),
            (owned_by(shard, &keys), 0, 0),
            "{text}"
        );
        total += made;
    }
    assert_eq!(total, keys.len());
    assert!(keys.iter().all(|k| has_thumbnails(storage.path(), k)));

    // A pod of a Job that is not Indexed, or a manifest without the count, is refused by name
    // before anything is done.
    let out = thumbnail(
        &["sweep", "--storage", &dir],
        &[("JOB_COMPLETION_INDEX", "1".to_owned())],
    )?;
    let text = streams(&out).1;
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("JOB_ARRAY_SIZE: is not set, but JOB_COMPLETION_INDEX is 1"),
        "{text}"
    );
    Ok(())
}

/// A worker whose index is not below the array's size (a Code Engine rerun of chosen indexes
/// without `--array-size-var-override`) is refused by name: the split would change under the
/// cursors.
#[test]
fn a_worker_outside_its_array_is_refused_by_name() -> TestResult {
    let storage = store_with(&[photo_key(0)], &small_photo()?)?;
    let dir = storage.path().to_string_lossy().into_owned();
    let out = thumbnail(&["job", "--storage", &dir], &code_engine_worker(2, 2))?;
    let text = streams(&out).1;
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("JOB_INDEX: shard index 2 is not below the worker count 2"),
        "{text}"
    );
    assert!(text.contains("--array-size-var-override"), "{text}");
    assert!(!has_thumbnails(storage.path(), &photo_key(0)));
    Ok(())
}

/// The variables a Code Engine COS subscription gives the job it runs for a write of `key`
/// (IBM's "Environment variables for events delivered to jobs"), on top of a job's own.
fn cos_write_event(key: &str, index: u32, count: u32) -> Vec<(&'static str, String)> {
    let data = json!({
        "bucket": "photos", "endpoint": "", "key": key, "operation": "Object:Write",
        "notification": {"bucket_name": "photos", "content_type": "image/jpeg",
            "event_type": "Object:Write", "format": "2.0", "object_length": "4642",
            "object_name": key, "request_id": "b59727ee-9c4e-446a-9261-5616f6d1283b",
            "request_time": "2024-11-05T14:22:36.610Z"}
    });
    let mut env = code_engine_worker(index, count);
    env.extend([
        ("CE_DATA", data.to_string()),
        ("CE_ID", "b59727ee-9c4e-446a-9261-5616f6d1283b".to_owned()),
        (
            "CE_SOURCE",
            "https://cloud.ibm.com/catalog/services/cloud-object-storage/photos".to_owned(),
        ),
        ("CE_SPECVERSION", "1.0".to_owned()),
        ("CE_TIME", "2024-11-05T14:22:36.610Z".to_owned()),
        ("CE_TYPE", "com.ibm.cloud.cos.document.write".to_owned()),
        ("CONTENT_TYPE", "application/json".to_owned()),
        ("THUMBNAIL_SIZES", "64".to_owned()),
    ]);
    env
}

/// Seed 001's thumbnail job, started by a COS subscription: `job` decodes the `CE_*`
/// variables as the binary-mode CloudEvent they stand for and makes the thumbnail of that
/// object only (the other object of the bucket is no part of the event).
#[test]
fn a_job_started_by_a_cos_subscription_makes_the_thumbnail_its_event_names() -> TestResult {
    let keys = ["new photo.jpg".to_owned(), "older.jpg".to_owned()];
    let storage = store_with(&keys, &small_photo()?)?;
    let dir = storage.path().to_string_lossy().into_owned();
    let out = thumbnail(
        &["job", "--storage", &dir],
        &cos_write_event(&keys[0], 0, 1),
    )?;
    let text = streams(&out).1;
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("succeeded\tb59727ee-9c4e-446a-9261-5616f6d1283b\tdone: "),
        "{text}"
    );
    assert!(has_thumbnails(storage.path(), &keys[0]), "{text}");
    assert!(!has_thumbnails(storage.path(), &keys[1]), "{text}");

    // An event that does not decode is rejected (exit 2), saying where it came from.
    let mut broken = cos_write_event(&keys[1], 0, 1);
    broken.retain(|(name, _)| *name != "CE_DATA");
    broken.push(("CE_DATA", "{\"order\": 7}".to_owned()));
    let out = thumbnail(&["job", "--storage", &dir], &broken)?;
    let text = streams(&out).1;
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("the event in the CE_* variables: IBM COS event"),
        "{text}"
    );
    assert!(!has_thumbnails(storage.path(), &keys[1]), "{text}");
    Ok(())
}

/// A subscription starts every instance of an array job for one event: the worker the key
/// falls to makes its thumbnail, the others pass it over as a success and do nothing.
#[test]
fn an_event_for_an_array_job_is_handled_by_its_keys_worker_alone() -> TestResult {
    let key = "upload.jpg".to_owned();
    let storage = store_with(std::slice::from_ref(&key), &small_photo()?)?;
    let dir = storage.path().to_string_lossy().into_owned();
    let workers = shards(3)?;
    let (owner, others): (Vec<Shard>, Vec<Shard>) = workers.iter().partition(|s| s.owns(&key));
    for shard in others {
        let out = thumbnail(
            &["job", "--storage", &dir],
            &cos_write_event(&key, shard.index, 3),
        )?;
        let text = streams(&out).1;
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(
            text.contains("skipped: photos/upload.jpg falls to another worker of the job array"),
            "{text}"
        );
        assert!(
            !has_thumbnails(storage.path(), &key),
            "worker {shard}: {text}"
        );
    }
    let [owner] = owner.as_slice() else {
        return Err(format!("owners of {key}: {owner:?}").into());
    };
    let out = thumbnail(
        &["job", "--storage", &dir],
        &cos_write_event(&key, owner.index, 3),
    )?;
    let text = streams(&out).1;
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(has_thumbnails(storage.path(), &key), "{text}");
    Ok(())
}

/// The saved fan-out sample (`events/eventbridge/scheduled-shard.json`) as worker `index` of
/// `count`.
fn fan_out_event(index: u32, count: u32) -> Result<Value, BoxError> {
    let path = workspace_root().join("events/eventbridge/scheduled-shard.json");
    let mut event: Value = serde_json::from_slice(&std::fs::read(path)?)?;
    event["detail"]["shard"] = json!(format!("{index}/{count}"));
    Ok(event)
}

/// A Lambda fan-out (one schedule per worker, or a Step Functions Map): each invocation's
/// Scheduled Event names bucket, prefix and shard in its detail, and sweeps only its share, so
/// that the four together make every thumbnail once; a second round finds nothing to do.
#[tokio::test(flavor = "multi_thread")]
async fn each_invocation_of_a_lambda_fan_out_sweeps_the_share_its_detail_names() -> TestResult {
    let env = [
        ("SOURCE_BUCKET", "photos".to_owned()),
        ("THUMBNAIL_SIZES", "64".to_owned()),
    ];
    let f = ThumbnailLambda::start(1024, &env).await?;
    let keys: Vec<String> = (0..16).map(|n| format!("2024/{n:02}.jpg")).collect();
    let photo = small_photo()?;
    for key in &keys {
        f.s3.put("photos", key, photo.clone()).await?;
    }
    // Outside the detail's prefix: no worker touches it.
    f.s3.put("photos", "2023/old.jpg", photo.clone()).await?;
    let mut made = 0;
    for shard in shards(4)? {
        let outcome = lambda_outcome(&f.invoke(fan_out_event(shard.index, 4)?).await?)?;
        let counts = counts(&outcome)?;
        assert_eq!(
            counts,
            [owned_by(shard, &keys), 0, 0],
            "worker {shard}: {outcome}"
        );
        assert!(outcome.contains("; finished"), "{outcome}");
        made += counts[0];
    }
    assert_eq!(made, keys.len());
    for shard in shards(4)? {
        let outcome = lambda_outcome(&f.invoke(fan_out_event(shard.index, 4)?).await?)?;
        assert_eq!(
            counts(&outcome)?,
            [0, owned_by(shard, &keys), 0],
            "{outcome}"
        );
    }
    assert!(
        f.s3.get("photos", "thumbnails/2024/00.jpg/64.jpg")
            .await?
            .is_some()
    );
    assert_eq!(
        f.s3.get("photos", "thumbnails/2023/old.jpg/64.jpg").await?,
        None
    );
    Ok(())
}
