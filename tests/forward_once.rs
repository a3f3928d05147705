//! forward-to-stream sends each record once, through the binary and a log-ingest API that keeps
//! every repeat (as Mezmo does): events, their repeats and catch-up passes skip what was
//! forwarded; a large object goes through over budgeted runs and after a crash; a permanent
//! failure stays listed and reported until its object is replaced.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::function::FORWARD_TO_STREAM;
use crate::support::log_ingest::LogIngestApi;
use crate::support::{BoxError, TestResult};

/// A storage directory holding the bucket `logs`.
struct Storage {
    dir: tempfile::TempDir,
}

impl Storage {
    fn new() -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("storage/logs"))?;
        Ok(Self { dir })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn write(&self, key: &str, bytes: impl AsRef<[u8]>) -> Result<(), BoxError> {
        let path = self.root().join("logs").join(key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        Ok(std::fs::write(path, bytes)?)
    }

    fn checkpoint(&self) -> Result<Value, BoxError> {
        let path = self.root().join("logs/.forward-to-stream/sweep.json");
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }

    /// An S3 notification that `logs/<key>` was written, saved beside the storage.
    fn created_event(&self, key: &str) -> Result<PathBuf, BoxError> {
        let notification = json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put", "eventTime": "2024-11-05T14:22:31.493Z",
            "s3": {"bucket": {"name": "logs"}, "object": {"key": key, "size": 1}}}]});
        let path = self.dir.path().join("event.json");
        std::fs::write(&path, notification.to_string())?;
        Ok(path)
    }

    /// The binary in content mode, sending to `api`, on this storage.
    fn command(&self, api: &LogIngestApi, extra: &[(&str, &str)], args: &[&str]) -> Command {
        let mut command = Command::new(FORWARD_TO_STREAM);
        command
            .args(args)
            .arg("--storage")
            .arg(self.root())
            .env_clear()
            .envs(api.env())
            .env("FORWARD_MODE", "content")
            .env("SOURCE_BUCKET", "logs")
            .env("LOG_FORMAT", "text")
            .envs(extra.iter().copied());
        command
    }
}

/// Runs the process off the async workers, which serve the log-ingest API meanwhile.
async fn run(mut command: Command) -> Result<Output, BoxError> {
    Ok(tokio::task::spawn_blocking(move || command.output()).await??)
}

fn stdout(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `n` lines of VPC flow logs, distinct by the interface name.
fn flow_logs(tag: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("2 123456789010 eni-{tag}{i} 10.0.1.5 10.0.0.220 39812 80 6 20 4249 1418530010 1418530070 ACCEPT OK\n"))
        .collect()
}

/// Every record that arrived more than once.
fn repeats(counts: &BTreeMap<(String, String), usize>) -> Vec<(&(String, String), &usize)> {
    counts.iter().filter(|(_, n)| **n > 1).collect()
}

/// Runs `sweep` until a run says it finished (each run must succeed); how many runs it took.
async fn sweep_until_finished(
    storage: &Storage,
    api: &LogIngestApi,
    extra: &[(&str, &str)],
    budget: &str,
) -> Result<usize, BoxError> {
    for runs in 1..=20 {
        let args = ["sweep", "--bucket", "logs", "--budget", budget];
        let out = run(storage.command(api, extra, &args)).await?;
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "run {runs}: {text}");
        if text.contains("; finished") {
            return Ok(runs);
        }
        assert!(text.contains("; continues "), "run {runs}: {text}");
    }
    Err("not finished after 20 runs".into())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_its_repeat_and_two_passes_send_each_record_once() -> TestResult {
    let api = LogIngestApi::start().await?;
    let storage = Storage::new()?;
    storage.write("vpc/a.log", flow_logs("a", 60))?;
    // Only the passes find this one: no event announced it.
    storage.write("vpc/b.log", flow_logs("b", 40))?;
    let event = storage.created_event("vpc/a.log")?;
    let event = event.to_string_lossy();
    for attempt in ["first", "repeated"] {
        let out = run(storage.command(&api, &[], &["invoke", &event])).await?;
        assert_eq!(out.status.code(), Some(0), "{attempt}: {}", stdout(&out));
        if attempt == "repeated" {
            assert!(
                stdout(&out).contains("logs/vpc/a.log (version "),
                "{}",
                stdout(&out)
            );
            assert!(
                stdout(&out).contains("was forwarded already"),
                "{}",
                stdout(&out)
            );
        }
    }
    for (pass, expected) in [(1, "1 done, 1 skipped"), (2, "0 done, 2 skipped")] {
        let out = run(storage.command(&api, &[], &["sweep", "--bucket", "logs"])).await?;
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "pass {pass}: {text}");
        assert!(text.contains(expected), "pass {pass}: {text}");
    }
    let counts = api.dedupe_counts();
    assert_eq!(counts.len(), 100);
    assert!(repeats(&counts).is_empty(), "{:?}", repeats(&counts));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_object_stays_listed_and_reported_by_every_pass_until_replaced() -> TestResult {
    let api = LogIngestApi::start().await?;
    let storage = Storage::new()?;
    storage.write("good.log", flow_logs("g", 20))?;
    // A gzip header, then a deflate block of the reserved type: corrupt from its first byte.
    let corrupt = [
        0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 0x07, 0x55, 0x55, 0x55,
    ];
    storage.write("bad.log.gz", corrupt)?;
    let sweep = ["sweep", "--bucket", "logs"];
    for pass in 1..=2 {
        let out = run(storage.command(&api, &[], &sweep)).await?;
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "pass {pass}: {text}");
        assert!(
            text.contains("\"bad.log.gz\": logs/bad.log.gz is not valid gzip"),
            "pass {pass}: {text}"
        );
        assert!(
            text.contains("(permanent; listed until"),
            "pass {pass}: {text}"
        );
        let checkpoint = storage.checkpoint()?;
        let failures = checkpoint["failures"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(failures.len(), 1, "pass {pass}: {checkpoint}");
        assert_eq!(failures[0]["key"], "bad.log.gz");
        assert_eq!(failures[0]["permanent"], true);
        // Not tried again while it stays the same.
        assert_eq!(failures[0]["attempts"], 1, "pass {pass}: {checkpoint}");
        assert_eq!(api.lines().len(), 20, "pass {pass}");
    }
    // Replaced (plain text now: the format is found from the content, not the name).
    storage.write("bad.log.gz", flow_logs("f", 30))?;
    let out = run(storage.command(&api, &[], &sweep)).await?;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("1 done, 1 skipped"), "{text}");
    assert!(storage.checkpoint()?.get("failures").is_none());
    let counts = api.dedupe_counts();
    assert_eq!(counts.len(), 50);
    assert!(repeats(&counts).is_empty(), "{:?}", repeats(&counts));
    Ok(())
}

/// Sink requests take this long, so that a short budget ends while records are on their way.
const SLOW_SINK: Duration = Duration::from_millis(100);
/// Ten records a publish: one request each.
const SMALL_BATCHES: (&str, &str) = ("CONTENT_BATCH_RECORDS", "10");

#[tokio::test(flavor = "multi_thread")]
async fn a_large_object_goes_through_over_budgeted_runs_each_record_once() -> TestResult {
    let api = LogIngestApi::start().await?;
    api.stall(SLOW_SINK);
    let storage = Storage::new()?;
    // 40 requests of 100 ms: more than one 3 s budget holds.
    storage.write("big.log", flow_logs("x", 400))?;
    let runs = sweep_until_finished(&storage, &api, &[SMALL_BATCHES], "3").await?;
    assert!(
        runs >= 2,
        "finished in {runs} run(s): the object was never cut off"
    );
    let counts = api.dedupe_counts();
    assert_eq!(counts.len(), 400);
    assert!(repeats(&counts).is_empty(), "{:?}", repeats(&counts));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_that_ends_mid_way_keeps_what_reached_the_sink_and_resends_nothing() -> TestResult
{
    // The run: with `--budget 4`, 52 objects reached the sink, yet it reported 0 done
    // and the next run started from the beginning.
    let api = LogIngestApi::start().await?;
    api.stall(SLOW_SINK);
    let storage = Storage::new()?;
    for n in 0..100 {
        storage.write(&format!("vpc/{n:03}.log"), flow_logs(&n.to_string(), 10))?;
    }
    let batches = ("CONTENT_BATCH_RECORDS", "5");
    let args = ["sweep", "--bucket", "logs", "--budget", "3"];
    let out = run(storage.command(&api, &[batches], &args)).await?;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("; continues after \"vpc/"), "{text}");
    let done: u64 = text
        .split(" done")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no count of done objects: {text}"))?;
    assert!(done > 0, "{text}");
    assert!(api.lines().len() >= 10 * done as usize, "{text}");
    let checkpoint = storage.checkpoint()?;
    assert!(
        checkpoint["resume_after"]
            .as_str()
            .is_some_and(|k| k.starts_with("vpc/")),
        "{checkpoint}"
    );
    sweep_until_finished(&storage, &api, &[batches], "3").await?;
    let counts = api.dedupe_counts();
    assert_eq!(counts.len(), 1000);
    assert!(repeats(&counts).is_empty(), "{:?}", repeats(&counts));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_crash_mid_object_the_next_attempt_sends_only_what_was_not_saved() -> TestResult {
    let api = LogIngestApi::start().await?;
    api.stall(SLOW_SINK);
    let storage = Storage::new()?;
    storage.write("big.log", flow_logs("c", 400))?;
    let every_second = ("SWEEP_CHECKPOINT_SECS", "1");
    let lease = ("SWEEP_LEASE_SECS", "3");
    let args = ["sweep", "--bucket", "logs", "--key", "big.log"];
    let mut child = storage
        .command(&api, &[SMALL_BATCHES, every_second, lease], &args)
        .spawn()?;
    // Past a second and a half of streaming, so that progress was saved at least once.
    let waited = tokio::time::Instant::now();
    while api.lines().len() < 150 {
        if waited.elapsed() > Duration::from_secs(60) || child.try_wait()?.is_some() {
            return Err(format!("only {} lines arrived", api.lines().len()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill()?;
    child.wait()?;
    let before_crash = api.lines().len();
    assert!(before_crash < 400, "finished before the crash");

    let out = run(storage.command(&api, &[SMALL_BATCHES, every_second, lease], &args)).await?;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("an earlier attempt sent"), "{text}");
    let counts = api.dedupe_counts();
    assert_eq!(counts.len(), 400, "at least once");
    let resent: usize = counts.values().map(|n| n - 1).sum();
    assert!(
        resent < before_crash,
        "{resent} of the {before_crash} records sent before the crash were sent again"
    );
    Ok(())
}
