//! forward-to-stream's Kafka sink over SASL_SSL against an in-process peer that insists on the
//! login: PLAIN and both SCRAMs deliver the claim check only after it; a wrong password and an
//! untrusted certificate fail, retryably, saying why and never saying the password.

use std::time::{Duration, Instant};

use bucketfn::{Done, Handler, Invocation, ObjectEvent, ObjectStore};
use forward_to_stream::Forwarder;

use crate::support::forwarder::{BUCKET, forwarder_over};
use crate::support::function::FORWARD_TO_STREAM;
use crate::support::kafka_sasl_peer::KafkaSaslPeer;
use crate::support::notifications::s3_created;
use crate::support::{BoxError, TestResult};

const USER: &str = "forwarder";
const PASSWORD: &str = "pa55-w0rd,=with=commas";
const WRONG: &str = "not-the-pa55word";
const TOPIC: &str = "objects";
const KEY: &str = "vpc/a.log";
const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];
/// KAFKA_TIMEOUT_SECS: a failure must say why well within it. rskafka retries a refused login
/// for half of it before giving the cause; 20 s leaves the other half for the TLS and SCRAM
/// handshakes of a debug build on a machine busy with the whole test suite (at 10 s one run
/// was cut off there, reporting no cause).
const TIMEOUT_SECS: u64 = 20;

/// forward-to-stream's variables for `peer`, logging in with `mechanism` and `password` and
/// trusting `ca_file`.
fn kafka_env(
    peer: &KafkaSaslPeer,
    protocol: &str,
    mechanism: &str,
    password: &str,
    ca_file: String,
) -> Vec<(&'static str, String)> {
    vec![
        ("FORWARD_SINK", "kafka".to_owned()),
        ("KAFKA_BROKERS", peer.broker()),
        ("KAFKA_TOPIC", TOPIC.to_owned()),
        ("KAFKA_SECURITY_PROTOCOL", protocol.to_owned()),
        ("KAFKA_SASL_MECHANISM", mechanism.to_owned()),
        ("KAFKA_SASL_USERNAME", USER.to_owned()),
        ("KAFKA_SASL_PASSWORD", password.to_owned()),
        ("KAFKA_TLS_CA_FILE", ca_file),
        ("KAFKA_TIMEOUT_SECS", TIMEOUT_SECS.to_string()),
    ]
}

fn forwarder(env: Vec<(&'static str, String)>) -> Result<Forwarder, BoxError> {
    Ok(forwarder_over(env, KEY, "one line\n".to_owned())?.1)
}

fn created() -> Result<ObjectEvent, BoxError> {
    s3_created(BUCKET, KEY)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_claim_check_arrives_after_each_sasl_login_over_tls() -> TestResult {
    for mechanism in MECHANISMS {
        let peer = KafkaSaslPeer::start(USER, PASSWORD, TOPIC).await?;
        let env = kafka_env(&peer, "SASL_SSL", mechanism, PASSWORD, peer.ca_file());
        let (store, forwarder) = forwarder_over(env, KEY, "one line\n".to_owned())?;
        // An event that claims another version: the store's etag is what reaches Kafka.
        let mut event = created()?;
        event.etag = Some("forged-etag".into());
        let done = forwarder.handle(&event, &Invocation::default()).await?;
        assert!(matches!(done, Done::Completed(_)), "{mechanism}: {done}");
        let records = peer.records();
        assert_eq!(records.len(), 1, "{mechanism}: {records:?}");
        let record = &records[0];
        // Sent on a connection that logged in with this mechanism as this user.
        assert_eq!(
            (record.mechanism.as_str(), record.user.as_str()),
            (mechanism, USER)
        );
        assert_eq!(
            record.key.as_deref(),
            Some(format!("{BUCKET}/{KEY}").as_bytes())
        );
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(
            header("ce_type").as_deref(),
            Some("io.bucketfn.object.created")
        );
        assert_eq!(header("ce_subject").as_deref(), Some(KEY));
        let value: serde_json::Value =
            serde_json::from_slice(record.value.as_deref().ok_or("no value")?)?;
        assert_eq!(value["uri"], format!("s3://{BUCKET}/{KEY}"));
        let stored = store.head(BUCKET, KEY).await?.etag;
        assert_eq!(value["etag"].as_str(), stored.as_deref(), "{value}");
        let sent = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
        assert!(!sent.contains("forged"), "{sent}");
        // rskafka logs in on the bootstrap connection and again on the leader's.
        let logins = peer.logins();
        assert!(!logins.is_empty(), "{mechanism}");
        assert!(
            logins
                .iter()
                .all(|(m, u, ok)| m == mechanism && u == USER && *ok),
            "{logins:?}"
        );
        assert_eq!(peer.refused(), Vec::<i16>::new());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_retryable_names_mechanism_and_user_but_not_the_password() -> TestResult
{
    for mechanism in MECHANISMS {
        let peer = KafkaSaslPeer::start(USER, PASSWORD, TOPIC).await?;
        let env = kafka_env(&peer, "SASL_SSL", mechanism, WRONG, peer.ca_file());
        let began = Instant::now();
        let err = forwarder(env)?
            .handle(&created()?, &Invocation::default())
            .await
            .err()
            .ok_or("published with a wrong password")?;
        let text = err.to_string();
        assert!(err.is_retryable(), "{text}");
        assert!(
            text.contains(&format!(
                "refused the SASL {mechanism} login of user \"{USER}\""
            )),
            "{text}"
        );
        assert!(text.contains("SaslAuthenticationFailed"), "{text}");
        assert!(!text.contains(WRONG) && !text.contains(PASSWORD), "{text}");
        // rskafka's own retries end first, so the cause arrives, not the publish timeout.
        assert!(!text.contains("KAFKA_TIMEOUT_SECS"), "{text}");
        assert!(
            began.elapsed() < Duration::from_secs(TIMEOUT_SECS),
            "{:?}",
            began.elapsed()
        );
        assert!(peer.records().is_empty());
        let logins = peer.logins();
        assert!(
            !logins.is_empty()
                && logins
                    .iter()
                    .all(|l| *l == (mechanism.to_owned(), USER.to_owned(), false)),
            "{logins:?}"
        );
    }
    Ok(())
}

#[test]
fn the_command_line_reports_a_refused_login_as_retryable_without_the_password() -> TestResult {
    let runtime = tokio::runtime::Runtime::new()?;
    let peer = runtime.block_on(KafkaSaslPeer::start(USER, PASSWORD, TOPIC))?;
    let storage = tempfile::tempdir()?;
    std::fs::create_dir_all(storage.path().join(BUCKET).join("vpc"))?;
    std::fs::write(storage.path().join(BUCKET).join(KEY), "one line\n")?;
    let dir = storage.path().to_string_lossy().into_owned();
    let out = std::process::Command::new(FORWARD_TO_STREAM)
        .args(["sweep", "--bucket", BUCKET, "--key", KEY, "--storage", &dir])
        .env_clear()
        .envs(kafka_env(
            &peer,
            "SASL_SSL",
            "SCRAM-SHA-512",
            WRONG,
            peer.ca_file(),
        ))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.starts_with("retryable"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "refused the SASL SCRAM-SHA-512 login of user \"{USER}\""
        )),
        "{stdout}"
    );
    assert!(
        !stdout.contains(WRONG) && !stderr.contains(WRONG),
        "{stdout}{stderr}"
    );
    assert!(peer.records().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_an_untrusted_ca_is_a_tls_error_naming_the_ca_variable() -> TestResult {
    let peer = KafkaSaslPeer::start(USER, PASSWORD, TOPIC).await?;
    let stranger = KafkaSaslPeer::start(USER, PASSWORD, TOPIC).await?;
    let env = kafka_env(&peer, "SASL_SSL", "PLAIN", PASSWORD, stranger.ca_file());
    let err = forwarder(env)?
        .handle(&created()?, &Invocation::default())
        .await
        .err()
        .ok_or("published to a broker it should not trust")?;
    let text = err.to_string();
    assert!(err.is_retryable(), "{text}");
    assert!(
        text.contains(&format!(
            "not trusted by the system's roots or KAFKA_TLS_CA_FILE ({})",
            stranger.ca_file()
        )),
        "{text}"
    );
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(peer.logins().is_empty() && peer.records().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_peer_refuses_metadata_on_a_connection_that_has_not_logged_in() -> TestResult {
    let peer = KafkaSaslPeer::start(USER, PASSWORD, TOPIC).await?;
    // TLS without SASL: rskafka goes straight to Metadata.
    let env = kafka_env(&peer, "SSL", "PLAIN", PASSWORD, peer.ca_file());
    let err = forwarder(env)?
        .handle(&created()?, &Invocation::default())
        .await
        .err()
        .ok_or("published without logging in")?;
    assert!(err.is_retryable(), "{err}");
    assert!(peer.refused().contains(&3), "{:?}", peer.refused());
    assert!(peer.logins().is_empty() && peer.records().is_empty());
    Ok(())
}
