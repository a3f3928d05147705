//! No secret in what a function prints: `Debug` of every settings type built from
//! credential-bearing variables, and the real binary's log at `RUST_LOG=trace`, where
//! dependencies stay at `info` unless named.

use std::process::Command;

use bucketfn::Env;
use bucketfn::api::mediahaven::MediaHavenSettings;
use bucketfn::operations::ledger::LedgerSettings;
use bucketfn::runtime::RuntimeSettings;
use bucketfn::sink::amqp::AmqpSettings;
use bucketfn::sink::{KSinkSettings, KafkaSettings, LogIngestSettings};
use image::ImageFormat;
use serde_json::Value;

use crate::support::function::THUMBNAIL_ON_CREATE;
use crate::support::images::gradient;
use crate::support::s3_server::{S3Server, SECRET_KEY};
use crate::support::{BoxError, TestResult};

/// Every secret below contains this, so one search finds any of them.
const MARK: &str = "s3cr3t-mark";

fn assert_hidden(shown: &str) {
    assert!(!shown.contains(MARK), "a secret is shown: {shown}");
}

#[test]
fn debug_of_every_settings_type_hides_credentials() -> TestResult {
    let with = |pairs: &[(&str, &str)]| Env::from_pairs(pairs.iter().copied());
    let secret = |prefix: &str| format!("{prefix}-{MARK}");
    let (password, token, key) = (secret("pw"), secret("tok"), secret("key"));

    let ledger_url = format!("redis://ledger:{password}@redis.internal:6379/0");
    let mut env = with(&[("LEDGER_URL", &ledger_url)]);
    let ledger = LedgerSettings::read(&mut env);
    let runtime = RuntimeSettings::read(&mut env);
    env.finish()?;
    assert!(format!("{ledger:?}").contains("redis://***@redis.internal:6379/0"));
    assert_hidden(&format!("{ledger:?} {runtime:?}"));

    let sink_url = format!("https://sink:{password}@broker.example/default/b?token={token}");
    let k_sink: KSinkSettings = with(&[("K_SINK", &sink_url)]).load()?;
    assert_hidden(&format!("{k_sink:?}"));

    let broker = format!("kafka-user:{password}@kafka-1:9093");
    let kafka: KafkaSettings = with(&[
        ("KAFKA_BROKERS", &broker),
        ("KAFKA_TOPIC", "t"),
        ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        ("KAFKA_SASL_USERNAME", "u"),
        ("KAFKA_SASL_PASSWORD", &password),
    ])
    .load()?;
    assert_hidden(&format!("{kafka:?}"));

    let ingest_url = format!("https://logs.example/logs/ingest?apikey={key}");
    let ingest: LogIngestSettings =
        with(&[("LOG_INGEST_URL", &ingest_url), ("LOG_INGEST_KEY", &key)]).load()?;
    assert_hidden(&format!("{ingest:?}"));

    let amqp_url = format!("amqp://guest:{password}@rabbit:5672/%2f");
    let mh_url = format!("https://mh:{password}@mediahaven.example");
    let mediahaven = [
        ("MEDIAHAVEN_URL", mh_url.as_str()),
        ("MEDIAHAVEN_CLIENT_ID", "c"),
        ("MEDIAHAVEN_CLIENT_SECRET", &key),
        ("MEDIAHAVEN_USERNAME", "u"),
        ("MEDIAHAVEN_PASSWORD", &password),
    ];
    let mut env = with(&mediahaven);
    let mh = MediaHavenSettings::read(&mut env).ok_or("no MediaHaven settings")?;
    env.finish()?;
    let mut env = with(&[("AMQP_URL", &amqp_url), ("AMQP_ROUTING_KEY", "r")]);
    let amqp = AmqpSettings::read(&mut env).ok_or("no AMQP settings")?;
    env.finish()?;
    assert_hidden(&format!("{mh:?} {amqp:?}"));

    let pid_url = format!("https://pid.example/mint?token={token}");
    let org_url = format!("https://org:{password}@org.example/");
    let ftp_host = format!("ftp-user:{password}@tra.example:2121");
    let mut sidecar = mediahaven.to_vec();
    sidecar.extend([
        ("PID_SERVICE_URL", pid_url.as_str()),
        ("ORGANISATIONS_API_URL", &org_url),
        ("FTP_HOST", &ftp_host),
        ("FTP_USER", "ftp"),
        ("FTP_PASSWORD", &password),
        ("AMQP_URL", &amqp_url),
        ("AMQP_ROUTING_KEY", "filetransfer"),
    ]);
    let sidecar: sidecar_on_create::Config = with(&sidecar).load()?;
    assert_hidden(&format!("{sidecar:?}"));

    let mut cleanup = mediahaven.to_vec();
    cleanup.push(("CLEANUP_TARGETS", "derivatives,mediahaven"));
    let cleanup: cleanup_on_remove::Config = with(&cleanup).load()?;
    assert_hidden(&format!("{cleanup:?}"));

    for sink in [
        vec![("FORWARD_SINK", "k-sink"), ("K_SINK", sink_url.as_str())],
        vec![
            ("FORWARD_SINK", "kafka"),
            ("KAFKA_BROKERS", &broker),
            ("KAFKA_TOPIC", "t"),
        ],
        vec![
            ("FORWARD_SINK", "log-ingest"),
            ("LOG_INGEST_URL", &ingest_url),
            ("LOG_INGEST_KEY", &key),
        ],
    ] {
        let forward: forward_to_stream::Config = with(&sink).load()?;
        assert_hidden(&format!("{forward:?}"));
    }

    // The environment itself, and a malformed URL that is quoted in a problem.
    let malformed = format!("redi://ledger:{password}@redis.internal/");
    let env = with(&[("LEDGER_URL", &malformed), ("AMQP_URL", &amqp_url)]);
    assert_hidden(&format!("{env:?}"));
    let mut env = env;
    let _ = LedgerSettings::read(&mut env);
    let problems = env
        .finish()
        .err()
        .ok_or("a malformed LEDGER_URL was accepted")?;
    assert!(problems.to_string().contains("LEDGER_URL"), "{problems}");
    assert_hidden(&problems.to_string());
    Ok(())
}

/// `invoke` over S3 with a Redis ledger that is down, everything at `trace`: our crates log
/// at debug and trace, the dependencies (the S3 client's HTTP stack, TLS, the Redis client)
/// at info at most, and no credential appears.
#[tokio::test(flavor = "multi_thread")]
async fn trace_logging_shows_our_debug_and_no_secret_or_dependency_chatter() -> TestResult {
    let s3 = S3Server::start().await?;
    s3.create_bucket("photos").await?;
    s3.put("photos", "a.png", gradient(64, 48, ImageFormat::Png)?)
        .await?;
    let dir = tempfile::tempdir()?;
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        serde_json::json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "photos"}, "object": {"key": "a.png", "size": 100}}}]})
        .to_string(),
    )?;
    let closed = crate::support::function::free_port()?;
    let ledger_url = format!("redis://ledger:pw-{MARK}@127.0.0.1:{closed}/");
    let event_path = event.to_string_lossy().into_owned();
    let mut command = Command::new(THUMBNAIL_ON_CREATE);
    command
        .args(["invoke", &event_path])
        .env_clear()
        .envs(s3.env())
        .env("HOME", dir.path())
        .env("SOURCE_BUCKETS", "photos")
        .env("LEDGER_URL", &ledger_url)
        .env("RUST_LOG", "trace")
        .env("LOG_FORMAT", "json");
    let out = tokio::task::spawn_blocking(move || command.output()).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains(MARK), "a secret in the log:\n{stderr}");
    assert!(
        !stderr.contains(SECRET_KEY),
        "the S3 secret key in the log:\n{stderr}"
    );

    let lines = log_lines(&stderr)?;
    let mut ours_below_info = 0;
    for line in &lines {
        let target = line["target"].as_str().unwrap_or_default();
        let level = line["level"].as_str().unwrap_or_default();
        let own = ["bucketfn", "thumbnail_on_create"]
            .iter()
            .any(|c| target == *c || target.starts_with(&format!("{c}::")));
        if matches!(level, "DEBUG" | "TRACE") {
            assert!(own, "a dependency logs at {level}: {line}");
            ours_below_info += 1;
        }
    }
    assert!(
        ours_below_info > 0,
        "RUST_LOG=trace shows nothing of ours:\n{stderr}"
    );
    Ok(())
}

/// Every line of a JSON log; a line that is not JSON fails the test (it would break shippers).
fn log_lines(stderr: &str) -> Result<Vec<Value>, BoxError> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("not JSON ({e}): {l}").into()))
        .collect()
}
