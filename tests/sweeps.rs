//! Issue 15 through the runtimes, as a schedule meets them: a sweep or catch-up that runs out of
//! time stops a margin before the deadline, keeps where it got to and reports a success that
//! continues (`sweep --budget` exit 0, `serve` 202, Lambda success), and the next run goes on
//! from there without redoing anything; a sweep whose objects failed fails visibly (exit 1,
//! 400, the failed count, a history entry per object) and keeps them listed until they change.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::ImageFormat;
use serde_json::Value;

use crate::support::function::{FORWARD_TO_STREAM, HttpReply, THUMBNAIL_ON_CREATE, request};
use crate::support::images::gradient;
use crate::support::lambda_api::{Answer, ThumbnailLambda};
use crate::support::served::Served;
use crate::support::summary::{continues_after, counts, lambda_outcome, run_cli, streams};
use crate::support::{BoxError, TestResult, workspace_root};

/// Photos in a bucket: several runs' worth at the budgets below, one object at a time.
const PHOTOS: usize = 80;
/// One object at a time, so that how far a run gets depends on the work, not on the cores.
const ONE_AT_A_TIME: (&str, &str) = ("SWEEP_CONCURRENCY", "1");
/// Runs allowed to finish a pass: far more than a loaded machine needs.
const MOST_RUNS: usize = 40;
/// The cursor thumbnail-on-create keeps for a sweep of all of `photos`.
const CURSOR_KEY: &str = "thumbnails/.sweep/photos/cursor.json";

/// A 1500x1000 JPEG: tens of milliseconds of thumbnailing in a debug build.
fn photo() -> Result<Vec<u8>, BoxError> {
    Ok(gradient(1500, 1000, ImageFormat::Jpeg)?)
}

fn photo_key(n: usize) -> String {
    format!("{n:03}.jpg")
}

/// A directory store (`DIR/<bucket>/<key>`) whose bucket `photos` holds [`PHOTOS`] photos.
fn photo_store() -> Result<tempfile::TempDir, BoxError> {
    let storage = tempfile::tempdir()?;
    let bucket = storage.path().join("photos");
    std::fs::create_dir_all(&bucket)?;
    let photo = photo()?;
    for n in 0..PHOTOS {
        std::fs::write(bucket.join(photo_key(n)), &photo)?;
    }
    Ok(storage)
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The JSON object at `path`, or `None` when there is none.
fn saved(path: &Path) -> Result<Option<Value>, BoxError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Thumbnails under `thumbnails/` of the directory store's `photos` bucket (not the cursor).
fn thumbnails(storage: &Path) -> Result<usize, BoxError> {
    let mut count = 0;
    let mut folders = vec![storage.join("photos/thumbnails")];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "jpg") {
                count += 1;
            }
        }
    }
    Ok(count)
}

/// The runs of one pass over a prefix, checked one after another.
struct Pass {
    objects: usize,
    done: usize,
    runs: usize,
}

impl Pass {
    fn of(objects: usize) -> Self {
        Self {
            objects,
            done: 0,
            runs: 0,
        }
    }

    /// Checks one run's summary against the progress it kept (`resume_after` of the cursor or
    /// checkpoint): it stopped cleanly and continues after the key it kept, or it finished;
    /// it redid nothing an earlier run did; the first run stops part-way. Returns whether the
    /// pass is finished.
    fn record(&mut self, summary: &str, kept: Option<&Value>) -> Result<bool, BoxError> {
        self.runs += 1;
        let [done, skipped, failed] = counts(summary)?;
        assert!(
            !summary.contains("not finished before"),
            "run {}: cut off by the runtime: {summary}",
            self.runs
        );
        assert_eq!(
            (skipped, failed),
            (0, 0),
            "run {}: every object is new and none fails, so nothing is skipped unless it \
             is redone: {summary}",
            self.runs
        );
        self.done += done;
        assert!(
            self.done <= self.objects,
            "run {}: {} done of {}: {summary}",
            self.runs,
            self.done,
            self.objects
        );
        if summary.contains("; finished") {
            assert!(
                self.runs > 1,
                "the first run was to stop part-way: {summary}"
            );
            assert_eq!(self.done, self.objects, "{summary}");
            return Ok(true);
        }
        assert!(
            summary.contains("stopped a margin before the deadline"),
            "run {}: {summary}",
            self.runs
        );
        if self.runs == 1 {
            assert!(done > 0, "the first run did nothing: {summary}");
        }
        let after = continues_after(summary).ok_or_else(|| format!("no resume key: {summary}"))?;
        let kept = kept.ok_or_else(|| format!("run {}: nothing kept: {summary}", self.runs))?;
        assert_eq!(kept["resume_after"], after, "{summary}\n{kept}");
        assert!(
            self.runs < MOST_RUNS,
            "still not finished after {} runs",
            self.runs
        );
        Ok(false)
    }
}

/// The measurement, smaller: `sweep --budget` that runs out part-way exits 0 with a
/// summary that continues, its cursor saved; each next run goes on from there; once finished,
/// every photo has its thumbnail, each made once, and the cursor is gone.
#[test]
fn a_cli_sweep_out_of_budget_exits_0_and_the_next_runs_continue_to_the_end() -> TestResult {
    let storage = photo_store()?;
    let dir = path_arg(storage.path());
    let cursor = storage.path().join("photos").join(CURSOR_KEY);
    let args = [
        "sweep",
        "--bucket",
        "photos",
        "--budget",
        "2",
        "--storage",
        &dir,
    ];
    let mut pass = Pass::of(PHOTOS);
    loop {
        let out = run_cli(THUMBNAIL_ON_CREATE, &args, &[ONE_AT_A_TIME])?;
        let (stdout, both) = streams(&out);
        assert_eq!(out.status.code(), Some(0), "{both}");
        assert!(stdout.starts_with("succeeded\t"), "{stdout}");
        let finished = pass.record(&stdout, saved(&cursor)?.as_ref())?;
        assert_eq!(thumbnails(storage.path())?, pass.done, "{stdout}");
        if finished {
            break;
        }
    }
    assert_eq!(
        saved(&cursor)?,
        None,
        "a finished pass with nothing failing keeps no cursor"
    );
    Ok(())
}

/// `thumbnail-on-create serve --storage DIR` with `SOURCE_BUCKET=photos` and `extra_env`.
async fn serve(storage: &Path, extra_env: &[(&'static str, &str)]) -> Result<Served, BoxError> {
    let mut env = vec![("SOURCE_BUCKET", "photos".to_owned())];
    env.extend(extra_env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    Served::start(THUMBNAIL_ON_CREATE, storage, &env).await
}

impl Served {
    /// Sends the PingSource CloudEvent of `events/cloudevents/` in binary mode: a sweep of
    /// `SOURCE_BUCKET`.
    async fn ping(&self) -> Result<HttpReply, BoxError> {
        let events = workspace_root().join("events/cloudevents");
        let headers = std::fs::read_to_string(events.join("ping.headers"))?;
        let headers: Vec<(&str, &str)> = headers
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim(), value.trim()))
            .collect();
        let body = std::fs::read(events.join("ping.txt"))?;
        request("POST", &self.url, &headers, body).await
    }

    /// `/events/stats` once the ledger holds `sweeps` sweep events (it is written behind).
    async fn stats_after(&self, sweeps: u64) -> Result<Value, BoxError> {
        for _ in 0..200 {
            let stats: Value = serde_json::from_str(&self.ops("/events/stats").await?)?;
            let tally = &stats["sweep_events"];
            let seen =
                tally["succeeded"].as_u64().unwrap_or(0) + tally["failed"].as_u64().unwrap_or(0);
            if seen >= sweeps {
                return Ok(stats);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "the ledger never held {sweeps} sweeps; logs:\n{}",
            self.process.logs()
        )
        .into())
    }
}

/// The newest row of a history page that is a sweep (not an object it reported).
fn newest_sweep(rows: &[String]) -> Result<&str, BoxError> {
    rows.iter()
        .find(|r| r.contains("<td>sweep<br>"))
        .map(String::as_str)
        .ok_or_else(|| format!("no sweep in the history: {rows:#?}").into())
}

/// A scheduled sweep under `serve` whose request would outlast `REQUEST_TIMEOUT_SECS` answers
/// 202 before it with its cursor saved, and each next request continues from there.
#[tokio::test(flavor = "multi_thread")]
async fn a_served_sweep_answers_202_before_the_request_timeout_and_the_next_continues() -> TestResult
{
    const TIMEOUT: Duration = Duration::from_secs(3);
    let storage = photo_store()?;
    let svc = serve(
        storage.path(),
        &[("REQUEST_TIMEOUT_SECS", "3"), ONE_AT_A_TIME],
    )
    .await?;
    let cursor = storage.path().join("photos").join(CURSOR_KEY);
    let mut pass = Pass::of(PHOTOS);
    for run in 1.. {
        let sent = Instant::now();
        let reply = svc.ping().await?;
        let took = sent.elapsed();
        assert_eq!(
            reply.status,
            202,
            "run {run}; logs:\n{}",
            svc.process.logs()
        );
        // The request timeout counts from the request's arrival; the slack is for a loaded
        // machine, not for the sweep.
        assert!(
            took < TIMEOUT + Duration::from_secs(2),
            "run {run} took {took:?}"
        );
        let stats = svc.stats_after(run).await?;
        assert_eq!(stats["sweep_events"]["succeeded"], run, "{stats}");
        let history = svc.history().await?;
        let finished = pass.record(newest_sweep(&history)?, saved(&cursor)?.as_ref())?;
        assert_eq!(thumbnails(storage.path())?, pass.done);
        if finished {
            break;
        }
    }
    assert_eq!(saved(&cursor)?, None);
    Ok(())
}

/// The Scheduled Event of `events/eventbridge/`.
fn scheduled_event() -> Result<Value, BoxError> {
    let path = workspace_root().join("events/eventbridge/scheduled.json");
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

/// Under the Lambda Runtime API, a scheduled sweep with a short deadline answers success whose
/// outcome continues, its cursor in the bucket; each next invocation continues from there.
#[tokio::test(flavor = "multi_thread")]
async fn a_lambda_sweep_with_a_short_deadline_succeeds_and_the_next_invocation_continues()
-> TestResult {
    const DEADLINE: Duration = Duration::from_secs(3);
    let env = [
        ("SOURCE_BUCKET", "photos".to_owned()),
        (ONE_AT_A_TIME.0, ONE_AT_A_TIME.1.to_owned()),
    ];
    let f = ThumbnailLambda::start(1024, &env).await?;
    let photo = photo()?;
    for n in 0..PHOTOS {
        f.s3.put("photos", &photo_key(n), photo.clone()).await?;
    }
    let mut pass = Pass::of(PHOTOS);
    loop {
        let sent = Instant::now();
        let answer = f.api.invoke(scheduled_event()?, DEADLINE).await?;
        let took = sent.elapsed();
        let outcome =
            lambda_outcome(&answer).map_err(|e| format!("{e}; logs:\n{}", f.process.logs()))?;
        assert!(took < DEADLINE + Duration::from_secs(2), "took {took:?}");
        let cursor = match f.s3.get("photos", CURSOR_KEY).await? {
            Some((body, _)) => Some(serde_json::from_slice::<Value>(&body)?),
            None => None,
        };
        if pass.record(&outcome, cursor.as_ref())? {
            assert_eq!(cursor, None, "{outcome}");
            break;
        }
    }
    Ok(())
}

/// Log objects for forward-to-stream: enough records that a pass takes several runs.
const LOG_OBJECTS: usize = 240;
const LINES_PER_OBJECT: usize = 800;

/// forward-to-stream's catch-up in content mode, `--budget 1` at a time: each run forwards
/// whole objects and reports them done, continuing after the last in its checkpoint; no run
/// sends a record again, and after the last every record is in the sink once.
#[test]
fn a_cli_catch_up_out_of_budget_keeps_its_checkpoint_and_never_resends() -> TestResult {
    let storage = tempfile::tempdir()?;
    let bucket = storage.path().join("logs");
    std::fs::create_dir_all(&bucket)?;
    let body: String = (0..LINES_PER_OBJECT).map(|n| format!("{n}\n")).collect();
    for n in 0..LOG_OBJECTS {
        std::fs::write(bucket.join(format!("{n:03}.log")), &body)?;
    }
    let out_dir = tempfile::tempdir()?;
    let sink = out_dir.path().join("sink.jsonl");
    let sink_text = path_arg(&sink);
    let env = [
        ("FORWARD_MODE", "content"),
        ("CONTENT_FORMAT", "lines"),
        ("FORWARD_SINK", "file"),
        ("FORWARD_FILE", sink_text.as_str()),
        ONE_AT_A_TIME,
    ];
    let dir = path_arg(storage.path());
    let args = [
        "sweep",
        "--bucket",
        "logs",
        "--budget",
        "1",
        "--storage",
        &dir,
    ];
    let checkpoint = bucket.join(".forward-to-stream/sweep.json");
    let mut pass = Pass::of(LOG_OBJECTS);
    loop {
        let out = run_cli(FORWARD_TO_STREAM, &args, &env)?;
        let (stdout, both) = streams(&out);
        assert_eq!(out.status.code(), Some(0), "{both}");
        assert!(stdout.starts_with("succeeded\t"), "{stdout}");
        let kept = saved(&checkpoint)?;
        let finished = pass.record(&stdout, kept.as_ref())?;
        let kept = kept.ok_or("no checkpoint")?;
        assert_eq!(kept["forwarded"], pass.done, "{kept}");
        assert_eq!(
            kept["lease"],
            Value::Null,
            "a clean stop gives the lease up: {kept}"
        );
        let lines = std::fs::read_to_string(&sink)?;
        let sent = lines.lines().count();
        // Every object reported done is in the sink whole; at most the one in flight at the
        // stop is there in part.
        assert!(
            sent >= pass.done * LINES_PER_OBJECT && sent < (pass.done + 1) * LINES_PER_OBJECT,
            "{sent} records in the sink for {} objects done: {stdout}",
            pass.done
        );
        if finished {
            assert_eq!(kept["status"], "finished", "{kept}");
            break;
        }
    }
    // A dedupe id is unique within its object (the etag and the record's index), so with the
    // message key within the sink.
    let lines = std::fs::read_to_string(&sink)?;
    let mut ids = lines
        .lines()
        .map(|line| {
            let message: Value = serde_json::from_str(line)?;
            match (
                message["key"].as_str(),
                message["headers"]["dedupe_id"].as_str(),
            ) {
                (Some(key), Some(id)) => Ok(format!("{key} {id}")),
                _ => Err(BoxError::from(format!("no key or dedupe_id in {line}"))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        LOG_OBJECTS * LINES_PER_OBJECT,
        "each record once"
    );
    Ok(())
}

/// A truncated PNG among good photos in a directory store.
fn store_with_a_broken_photo() -> Result<(tempfile::TempDir, PathBuf), BoxError> {
    let storage = tempfile::tempdir()?;
    let bucket = storage.path().join("photos");
    std::fs::create_dir_all(&bucket)?;
    let good = gradient(300, 200, ImageFormat::Png)?;
    for name in ["a.png", "c.png"] {
        std::fs::write(bucket.join(name), &good)?;
    }
    std::fs::write(bucket.join("b.png"), &good[..good.len() / 3])?;
    Ok((storage, bucket))
}

/// Under `serve`, a sweep with a broken object answers 400, counts as a failed sweep and has a
/// history entry for the object with its reason; the next pass keeps it listed without trying
/// it again; once rewritten it is thumbnailed and the sweep succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_served_sweep_with_a_broken_object_fails_visibly_until_the_object_is_fixed() -> TestResult
{
    let (storage, bucket) = store_with_a_broken_photo()?;
    let svc = serve(storage.path(), &[]).await?;
    let cursor = bucket.join(CURSOR_KEY);

    let reply = svc.ping().await?;
    assert_eq!(reply.status, 400, "logs:\n{}", svc.process.logs());
    let body: Value = serde_json::from_slice(&reply.body)?;
    assert_eq!(body["records"][0]["status"], "permanent", "{body}");
    let stats = svc.stats_after(1).await?;
    assert_eq!(stats["sweep_events"]["failed"], 1, "{stats}");
    let history = svc.history().await?;
    let reported: Vec<&String> = history
        .iter()
        .filter(|r| r.contains("<td>object<br>") && r.contains("photos/b.png"))
        .collect();
    assert_eq!(reported.len(), 1, "{history:#?}");
    assert!(
        reported[0].contains("permanent") && reported[0].contains("cannot be thumbnailed"),
        "{}",
        reported[0]
    );
    let sweep = newest_sweep(&history)?;
    assert_eq!(counts(sweep)?, [2, 0, 1], "{sweep}");
    assert!(
        sweep.contains("\"b.png\": photos/b.png cannot be thumbnailed"),
        "{sweep}"
    );
    let listed = saved(&cursor)?.ok_or("no cursor keeps the failure")?;
    let etag = listed["failures"][0]["etag"].clone();
    assert_eq!(listed["failures"][0]["key"], "b.png", "{listed}");

    // The same object again: still failing, not tried again, not reported again.
    let reply = svc.ping().await?;
    assert_eq!(reply.status, 400);
    let stats = svc.stats_after(2).await?;
    assert_eq!(stats["sweep_events"]["failed"], 2, "{stats}");
    let history = svc.history().await?;
    let sweep = newest_sweep(&history)?;
    assert!(
        sweep.contains("0 done, 2 skipped, 0 failed; 1 object(s) failing")
            && sweep.contains("(permanent; listed until the object changes"),
        "{sweep}"
    );
    let objects = history
        .iter()
        .filter(|r| r.contains("<td>object<br>"))
        .count();
    assert_eq!(objects, 1, "the failure was reported again: {history:#?}");
    let listed = saved(&cursor)?.ok_or("the failure is no longer listed")?;
    assert_eq!(listed["failures"][0]["etag"], etag, "{listed}");
    assert_eq!(listed["failures"][0]["attempts"], 1, "{listed}");

    // Rewritten whole, it is a new version: thumbnailed, and nothing is listed any more.
    std::fs::write(bucket.join("b.png"), gradient(300, 200, ImageFormat::Png)?)?;
    let reply = svc.ping().await?;
    assert_eq!(reply.status, 202, "logs:\n{}", svc.process.logs());
    let stats = svc.stats_after(3).await?;
    assert_eq!(stats["sweep_events"]["succeeded"], 1, "{stats}");
    assert!(bucket.join("thumbnails/b.png/256.jpg").exists());
    assert_eq!(saved(&cursor)?, None);
    Ok(())
}

/// Under Lambda a sweep with a broken object is an error naming it, not a success the
/// schedule would forget.
#[tokio::test(flavor = "multi_thread")]
async fn a_lambda_sweep_with_a_broken_object_is_a_permanent_error_naming_it() -> TestResult {
    let f = ThumbnailLambda::start(1024, &[("SOURCE_BUCKET", "photos".to_owned())]).await?;
    let good = gradient(300, 200, ImageFormat::Png)?;
    f.s3.put("photos", "a.png", good.clone()).await?;
    f.s3.put("photos", "b.png", good[..good.len() / 3].to_vec())
        .await?;
    let answer = f.invoke(scheduled_event()?).await?;
    let Answer::Error {
        error_type,
        message,
    } = answer
    else {
        return Err(format!("a failing sweep answered success: {answer:?}").into());
    };
    assert_eq!(error_type, "bucketfn.Permanent", "{message}");
    assert!(
        message.contains("1 done, 0 skipped, 1 failed")
            && message.contains("\"b.png\": photos/b.png cannot be thumbnailed"),
        "{message}"
    );
    Ok(())
}
