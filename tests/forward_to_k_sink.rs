//! forward-to-stream publishing to a Knative sink (`FORWARD_SINK=k-sink`): binary-mode
//! CloudEvents over HTTP to an in-process sink that checks them as a broker ingress does.

use std::collections::BTreeSet;
use std::sync::Arc;

use bucketfn::event::EventKind;
use bucketfn::storage::MemoryStore;
use bucketfn::{Done, Handler, Invocation, ObjectEvent, ObjectStore};
use forward_to_stream::Forwarder;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::support::forwarder::forwarder_over;
use crate::support::function::FORWARD_TO_STREAM;
use crate::support::knative_sink::{KnativeSink, ReceivedEvent};
use crate::support::notifications::s3_created;
use crate::support::{BoxError, TestResult};

/// Unicode, spaces, a double quote and a percent sign: everything the HTTP binding encodes.
const HOSTILE_KEY: &str = "vpc/été \"q\" 100%.log";
const LINES: usize = 5;

fn lines() -> String {
    (0..LINES).map(|n| format!("flow {n} ACCEPT\n")).collect()
}

/// An S3 notification for `key`, which S3 sends URL-encoded.
fn created(key: &str) -> Result<ObjectEvent, BoxError> {
    s3_created(
        "logs",
        &utf8_percent_encode(key, NON_ALPHANUMERIC).to_string(),
    )
}

fn forwarder(
    sink: &KnativeSink,
    extra: &[(&str, &str)],
) -> Result<(Arc<MemoryStore>, Forwarder), BoxError> {
    let mut env = sink.env();
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    forwarder_over(env, HOSTILE_KEY, lines())
}

fn attribute<'a>(event: &'a ReceivedEvent, name: &str) -> Option<&'a str> {
    event.attributes.get(name).map(String::as_str)
}

fn ids(events: &[ReceivedEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            let get = |name| attribute(e, name).unwrap_or_default().to_owned();
            (get("source"), get("id"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_arrive_as_binary_mode_cloudevents_with_overrides_through_a_503() -> TestResult {
    let sink = KnativeSink::start().await?;
    let (store, forwarder) = forwarder(
        &sink,
        &[
            ("FORWARD_MODE", "content"),
            (
                "K_CE_OVERRIDES",
                r#"{"extensions": {"cluster": "eu 1 \"é\"", "team": "logs"}}"#,
            ),
        ],
    )?;
    sink.fail_with(&[(503, Some(0))]);
    let done = forwarder
        .handle(&created(HOSTILE_KEY)?, &Invocation::default())
        .await?;
    assert!(matches!(done, Done::Completed(_)), "{done}");
    let etag = store
        .head("logs", HOSTILE_KEY)
        .await?
        .etag
        .ok_or("no etag")?;
    let events = sink.events();
    assert_eq!(events.len(), LINES);
    assert_eq!(sink.requests() as usize, LINES + 1);
    for (n, event) in events.iter().enumerate() {
        assert_eq!(attribute(event, "specversion"), Some("1.0"));
        assert_eq!(attribute(event, "id"), Some(format!("{etag}:{n}").as_str()));
        assert_eq!(attribute(event, "type"), Some(bucketfn::sink::RECORD_TYPE));
        // The source is a URI reference, so the key in it is percent-encoded once for the URI
        // and once more (its `%`) for the header.
        assert_eq!(
            attribute(event, "source"),
            Some("s3://logs/vpc/%C3%A9t%C3%A9%20%22q%22%20100%25.log")
        );
        assert_eq!(
            event.raw.get("source").map(String::as_str),
            Some("s3://logs/vpc/%25C3%25A9t%25C3%25A9%2520%2522q%2522%2520100%2525.log")
        );
        assert_eq!(attribute(event, "subject"), Some(HOSTILE_KEY));
        assert_eq!(
            event.raw.get("subject").map(String::as_str),
            Some("vpc/%C3%A9t%C3%A9%20%22q%22%20100%25.log")
        );
        assert_eq!(attribute(event, "cluster"), Some("eu 1 \"é\""));
        assert_eq!(attribute(event, "team"), Some("logs"));
        // Only attributes travel as ce- headers: no dedupe id, no datacontenttype.
        assert_eq!(event.attributes.len(), 7, "{:?}", event.attributes);
        assert_eq!(event.content_type.as_deref(), Some("text/plain"));
        assert_eq!(event.body, format!("flow {n} ACCEPT").as_bytes());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_check_is_one_cloudevent_after_a_throttled_attempt() -> TestResult {
    let sink = KnativeSink::start().await?;
    let (_store, forwarder) = forwarder(&sink, &[])?;
    sink.fail_with(&[(429, Some(0))]);
    forwarder
        .handle(&created(HOSTILE_KEY)?, &Invocation::default())
        .await?;
    let events = sink.events();
    assert_eq!(events.len(), 1);
    assert_eq!(sink.requests(), 2);
    let event = &events[0];
    assert_eq!(attribute(event, "type"), Some("io.bucketfn.object.created"));
    assert_eq!(attribute(event, "source"), Some("s3://logs"));
    assert_eq!(attribute(event, "subject"), Some(HOSTILE_KEY));
    assert!(attribute(event, "time").is_some());
    assert_eq!(event.content_type.as_deref(), Some("application/json"));
    let data: Value = serde_json::from_slice(&event.body)?;
    assert_eq!(data["uri"], format!("s3://logs/{HOSTILE_KEY}"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_error_is_permanent_and_not_retried() -> TestResult {
    let sink = KnativeSink::start().await?;
    let (_store, forwarder) = forwarder(&sink, &[("FORWARD_MODE", "content")])?;
    sink.fail_with(&[(400, None)]);
    let err = forwarder
        .handle(&created(HOSTILE_KEY)?, &Invocation::default())
        .await
        .err()
        .ok_or("400 reported as success")?;
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("HTTP 400"), "{err}");
    assert_eq!(sink.requests(), 1);
    assert!(sink.events().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_not_found_yet_is_retried_then_retryable() -> TestResult {
    let sink = KnativeSink::start().await?;
    let (_store, forwarder) = forwarder(&sink, &[("K_SINK_MAX_ATTEMPTS", "3")])?;
    sink.fail_with(&[(404, None); 5]);
    let err = forwarder
        .handle(&created(HOSTILE_KEY)?, &Invocation::default())
        .await
        .err()
        .ok_or("404s reported as success")?;
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("3 attempts failed"), "{err}");
    assert!(err.to_string().contains("HTTP 404"), "{err}");
    assert_eq!(sink.requests(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn redeliveries_and_catch_up_do_not_send_a_forwarded_object_again() -> TestResult {
    let sink = KnativeSink::start().await?;
    let (_store, forwarder) = forwarder(
        &sink,
        &[("FORWARD_MODE", "content"), ("SOURCE_BUCKET", "logs")],
    )?;
    let invocation = Invocation::default();
    let first = forwarder
        .handle(&created(HOSTILE_KEY)?, &invocation)
        .await?;
    assert!(matches!(first, Done::Completed(_)), "{first}");
    let repeat = forwarder
        .handle(&created(HOSTILE_KEY)?, &invocation)
        .await?;
    assert!(
        repeat.to_string().contains("was forwarded already"),
        "{repeat}"
    );
    let sweep = ObjectEvent::requested(EventKind::Sweep, "logs", String::new());
    for _ in 0..2 {
        let swept = forwarder.handle(&sweep, &invocation).await?;
        assert!(swept.to_string().contains("0 done, 1 skipped"), "{swept}");
    }
    // One round of events: the repeat and both passes found the version's forwarded marker.
    let events = ids(&sink.events());
    assert_eq!(events.len(), LINES);
    assert_eq!(events.iter().collect::<BTreeSet<_>>().len(), LINES);
    Ok(())
}

#[test]
fn the_service_does_not_start_without_k_sink_and_says_what_else_is_wrong() -> TestResult {
    let out = std::process::Command::new(FORWARD_TO_STREAM)
        .arg("serve")
        .env_clear()
        .env("FORWARD_SINK", "k-sink")
        .env("SOURCE_BUCKETS", "logs")
        .env("K_CE_OVERRIDES", r#"{"extensions": {"id": "x"}}"#)
        .env("K_SINK_MAX_ATTEMPTS", "0")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("3 problems"), "{stderr}");
    for variable in ["K_SINK:", "K_CE_OVERRIDES:", "K_SINK_MAX_ATTEMPTS:"] {
        assert!(stderr.contains(variable), "{variable} in {stderr}");
    }
    Ok(())
}
