//! forward-to-stream against a log-ingest API that follows the Mezmo contract (including 429,
//! 500 and a stalled server), its content limits, budget and deadline, and the binary as a
//! service and on the command line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bucketfn::budget::{MemoryBudget, Stop};
use bucketfn::storage::{LocalStore, MemoryStore};
use bucketfn::{Done, Handler, Invocation, ObjectEvent, ObjectStore};
use forward_to_stream::Forwarder;
use serde_json::{Value, json};

use crate::support::forwarder::forwarder_over;
use crate::support::function::{
    FORWARD_TO_STREAM, FunctionProcess, free_port, request, wait_ready,
};
use crate::support::log_ingest::LogIngestApi;
use crate::support::notifications::s3_created;
use crate::support::{BoxError, TestResult};

const LINES: usize = 60;

fn flow_logs() -> String {
    (0..LINES)
        .map(|n| format!("2 123456789010 eni-{n} 10.0.1.5 10.0.0.220 39812 80 6 20 4249 1418530010 1418530070 ACCEPT OK\n"))
        .collect()
}

fn created(key: &str) -> Result<ObjectEvent, BoxError> {
    s3_created("logs", key)
}

fn content_forwarder(
    api: &LogIngestApi,
    extra: &[(&str, &str)],
) -> Result<(Arc<MemoryStore>, Forwarder), BoxError> {
    let mut env = api.env();
    env.push(("FORWARD_MODE", "content".to_owned()));
    env.push(("LOG_INGEST_MAX_BATCH_BYTES", "4096".to_owned()));
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    forwarder_over(env, "vpc/a.log", flow_logs())
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_arrive_in_order_with_dedupe_ids_through_429_and_500() -> TestResult {
    let api = LogIngestApi::start().await?;
    let (store, forwarder) = content_forwarder(&api, &[])?;
    api.fail_with(&[429, 500, 503]);
    let done = forwarder
        .handle(&created("vpc/a.log")?, &Invocation::default())
        .await?;
    assert!(matches!(done, Done::Completed(_)), "{done}");
    let lines = api.lines();
    assert_eq!(lines.len(), LINES);
    let etag = store
        .head("logs", "vpc/a.log")
        .await?
        .etag
        .ok_or("no etag")?;
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(line["meta"]["dedupe_id"], format!("{etag}:{n}"));
        assert!(
            line["line"]
                .as_str()
                .is_some_and(|l| l.contains(&format!("eni-{n} "))),
            "{line}"
        );
        assert_eq!(line["meta"]["key"], "logs/vpc/a.log");
        assert_eq!(line["app"], "bucketfn");
    }
    // Three refused, then several requests under the 4096-byte limit.
    assert!(api.requests() > 3 + 2, "{}", api.requests());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_keeps_failing_makes_the_event_retryable() -> TestResult {
    let api = LogIngestApi::start().await?;
    let (_store, forwarder) = content_forwarder(&api, &[("LOG_INGEST_MAX_ATTEMPTS", "3")])?;
    api.fail_with(&[500; 10]);
    let err = forwarder
        .handle(&created("vpc/a.log")?, &Invocation::default())
        .await
        .err()
        .ok_or("500s reported as success")?;
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("3 attempts"), "{err}");
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_error_is_permanent_and_not_retried() -> TestResult {
    let api = LogIngestApi::start().await?;
    let (_store, forwarder) = content_forwarder(&api, &[])?;
    api.fail_with(&[400]);
    let err = forwarder
        .handle(&created("vpc/a.log")?, &Invocation::default())
        .await
        .err()
        .ok_or("400 reported as success")?;
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("HTTP 400"), "{err}");
    assert_eq!(api.requests(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_server_is_a_retryable_timeout() -> TestResult {
    let api = LogIngestApi::start().await?;
    let (_store, forwarder) = content_forwarder(
        &api,
        &[
            ("LOG_INGEST_TIMEOUT_SECS", "1"),
            ("LOG_INGEST_MAX_ATTEMPTS", "2"),
        ],
    )?;
    api.stall(Duration::from_secs(3));
    let err = forwarder
        .handle(&created("vpc/a.log")?, &Invocation::default())
        .await
        .err()
        .ok_or("a stalled server reported as success")?;
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("no answer within 1 s"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn content_past_its_deadline_is_retryable_and_never_reaches_the_api() -> TestResult {
    let api = LogIngestApi::start().await?;
    let (_store, forwarder) = content_forwarder(&api, &[])?;
    let past = Invocation {
        stop: Stop::at(Some(Instant::now())),
        ..Invocation::default()
    };
    let err = forwarder
        .handle(&created("vpc/a.log")?, &past)
        .await
        .err()
        .ok_or("forwarded after the deadline")?;
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("stopped at the deadline"), "{err}");
    assert_eq!(api.requests(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn content_that_needs_more_than_the_memory_budget_is_permanent() -> TestResult {
    let api = LogIngestApi::start().await?;
    let (_store, forwarder) = content_forwarder(&api, &[("CONTENT_BATCH_BYTES", "67108864")])?;
    let small = Invocation {
        memory: MemoryBudget::new(64 << 20),
        ..Invocation::default()
    };
    let err = forwarder
        .handle(&created("vpc/a.log")?, &small)
        .await
        .err()
        .ok_or("forwarded over the budget")?;
    assert!(!err.is_retryable(), "{err}");
    let text = err.to_string();
    for part in [
        "the content stream of logs/vpc/a.log",
        "CONTENT_BATCH_BYTES",
        "over the memory budget of 64.0 MiB (MAX_DECODE_BYTES)",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    assert_eq!(api.requests(), 0);
    // The same stream with the default batches fits.
    let (_store, forwarder) = content_forwarder(&api, &[])?;
    forwarder.handle(&created("vpc/a.log")?, &small).await?;
    assert_eq!(api.lines().len(), LINES);
    Ok(())
}

fn read_jsonl(path: &std::path::Path) -> Result<Vec<Value>, BoxError> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    Ok(text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// An IBM COS write of `bucket/key` that says the object's etag is `etag`.
fn cos_write(bucket: &str, key: &str, etag: &str) -> Value {
    json!({"bucket": bucket, "endpoint": "", "key": key,
        "notification": {"bucket_name": bucket, "event_type": "Object:Write", "format": "2.0",
            "object_length": "1000", "object_name": key, "object_etag": etag,
            "request_id": "r-1", "request_time": "2024-11-05T14:22:36.610Z"},
        "operation": "Object:Write"})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_publishes_the_stores_claim_and_refuses_other_buckets() -> TestResult {
    let dir = tempfile::tempdir()?;
    let storage = dir.path().join("storage");
    std::fs::create_dir_all(storage.join("cos-logs/flows"))?;
    std::fs::write(storage.join("cos-logs/flows/a b.json.gz"), b"{}")?;
    // Readable with these credentials, but not this function's to announce.
    std::fs::create_dir_all(storage.join("payroll"))?;
    std::fs::write(storage.join("payroll/2024.csv"), b"salaries")?;
    let out = dir.path().join("out.jsonl");
    let port = free_port()?;
    let env = [
        ("PORT", port.to_string()),
        ("FORWARD_SINK", "file".to_owned()),
        ("FORWARD_FILE", out.to_string_lossy().into_owned()),
        ("SOURCE_BUCKETS", "cos-logs".to_owned()),
    ];
    let storage_arg = storage.to_string_lossy().into_owned();
    let process = FunctionProcess::spawn(
        FORWARD_TO_STREAM,
        &["serve", "--storage", &storage_arg],
        &env,
    )?;
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{url}/healthz"), &process, Duration::from_secs(20)).await?;
    let headers = |bucket: &str| {
        [
            ("ce-specversion", "1.0".to_owned()),
            ("ce-type", "com.ibm.cloud.cos.document.write".to_owned()),
            (
                "ce-source",
                format!("https://cloud.ibm.com/catalog/services/cloud-object-storage/{bucket}"),
            ),
            ("ce-id", "6abc7123".to_owned()),
            ("content-type", "application/json".to_owned()),
        ]
    };
    let post = |bucket: &'static str, key: &'static str| {
        let (url, headers) = (url.clone(), headers(bucket));
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            // The event's etag is made up: the claim must carry the store's.
            let body = cos_write(bucket, key, "forged").to_string();
            request("POST", &url, &headers, body).await
        }
    };

    let reply = post("cos-logs", "flows/a b.json.gz").await?;
    assert_eq!(reply.status, 202, "logs:\n{}", process.logs());
    let messages = read_jsonl(&out)?;
    assert_eq!(messages.len(), 1, "logs:\n{}", process.logs());
    let message = &messages[0];
    assert_eq!(message["key"], "cos-logs/flows/a b.json.gz");
    assert_eq!(message["headers"]["ce_type"], "io.bucketfn.object.created");
    assert_eq!(message["headers"]["ce_subject"], "flows/a b.json.gz");
    let data: Value = serde_json::from_str(message["body"].as_str().ok_or("no body")?)?;
    assert_eq!(data["uri"], "s3://cos-logs/flows/a b.json.gz");
    assert_eq!(data["source"], "ibm-cos");
    let stored = LocalStore::new(storage.clone())
        .head("cos-logs", "flows/a b.json.gz")
        .await?;
    assert_eq!(data["etag"], stored.etag.ok_or("no etag")?.as_str());
    assert_eq!(data["size"], 2);

    let refused = post("payroll", "2024.csv").await?;
    assert_eq!(refused.status, 400, "logs:\n{}", process.logs());
    let body: Value = serde_json::from_slice(&refused.body)?;
    assert_eq!(
        body["records"][0]["detail"],
        "bucket \"payroll\" is not one this function serves (SOURCE_BUCKETS)"
    );
    assert_eq!(
        read_jsonl(&out)?.len(),
        1,
        "a claim for another bucket went out"
    );
    Ok(())
}

#[test]
fn the_command_line_sweeps_a_bucket_once_and_forwards_one_object_by_key() -> TestResult {
    let storage = tempfile::tempdir()?;
    let bucket = storage.path().join("logs");
    std::fs::create_dir_all(bucket.join("vpc"))?;
    for n in 0..5 {
        std::fs::write(bucket.join(format!("vpc/{n}.log")), format!("line {n}\n"))?;
    }
    let out = storage.path().join("out.jsonl");
    let dir = storage.path().to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        std::process::Command::new(FORWARD_TO_STREAM)
            .args(args)
            .env_clear()
            .env("FORWARD_SINK", "file")
            .env("FORWARD_FILE", &out)
            .env("FORWARD_MODE", "content")
            .output()
    };
    let first = run(&["sweep", "--bucket", "logs", "--storage", &dir])?;
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout.contains("5 done") && stdout.contains("finished"),
        "{stdout}"
    );
    assert_eq!(read_jsonl(&out)?.len(), 5);
    // A second sweep finds nothing new to forward, however recent the objects are.
    let again = run(&["sweep", "--bucket", "logs", "--storage", &dir])?;
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 done, 5 skipped"));
    assert_eq!(read_jsonl(&out)?.len(), 5);
    // One object, on demand: a version already forwarded is not sent again, and the outcome
    // names the marker to delete to send it anyway; a new version is sent.
    let one = [
        "sweep",
        "--bucket",
        "logs",
        "--key",
        "vpc/3.log",
        "--storage",
        &dir,
    ];
    let same = run(&one)?;
    let said = String::from_utf8_lossy(&same.stdout);
    assert_eq!(same.status.code(), Some(0), "{said}");
    assert!(
        said.contains("was forwarded already; delete logs/.forward-to-stream/forwarded/vpc/3.log "),
        "{said}"
    );
    assert_eq!(read_jsonl(&out)?.len(), 5);
    std::fs::write(bucket.join("vpc/3.log"), "line 3, rewritten\n")?;
    let rewritten = run(&one)?;
    assert_eq!(rewritten.status.code(), Some(0));
    let messages = read_jsonl(&out)?;
    assert_eq!(messages.len(), 6);
    assert_eq!(messages[5]["body"], "line 3, rewritten");
    Ok(())
}

#[test]
fn content_over_its_limits_is_a_permanent_failure_on_the_command_line() -> TestResult {
    let storage = tempfile::tempdir()?;
    let bucket = storage.path().join("logs");
    std::fs::create_dir_all(&bucket)?;
    // 2 MiB of flow logs.
    let text = flow_logs().repeat((2 << 20) / flow_logs().len() + 1);
    std::fs::write(bucket.join("big.log"), &text)?;
    let dir = storage.path().to_string_lossy().into_owned();
    for (n, (variable, value, expected)) in [
        (
            "CONTENT_MAX_BYTES",
            "1048576",
            "logs/big.log holds more than 1048576 bytes of content (CONTENT_MAX_BYTES)",
        ),
        (
            "MAX_DECODE_BYTES",
            "1048576",
            "over the memory budget of 1.0 MiB (MAX_DECODE_BYTES)",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let out = storage.path().join(format!("out-{n}.jsonl"));
        let run = std::process::Command::new(FORWARD_TO_STREAM)
            .args([
                "sweep",
                "--bucket",
                "logs",
                "--key",
                "big.log",
                "--storage",
                &dir,
            ])
            .env_clear()
            .env("FORWARD_SINK", "file")
            .env("FORWARD_FILE", &out)
            .env("FORWARD_MODE", "content")
            .env(variable, value)
            .output()?;
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert_eq!(run.status.code(), Some(1), "{variable}: {stdout}");
        assert!(stdout.starts_with("permanent"), "{variable}: {stdout}");
        assert!(stdout.contains(expected), "{variable}: {stdout}");
        // What went out before the limit is at most the first mebibyte's records.
        let sent = read_jsonl(&out)?.len();
        assert!(sent < text.lines().count() / 2, "{variable}: {sent}");
    }
    Ok(())
}
