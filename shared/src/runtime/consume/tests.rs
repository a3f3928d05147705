//! How `consume` settles a message for each outcome, and what it hands the decoder.

use super::*;
use crate::event::EventKind;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const RETRY: RetryPolicy = RetryPolicy {
    delay: Duration::from_secs(30),
    max_attempts: 3,
};

#[test]
fn done_and_skipped_are_acked() {
    assert_eq!(
        settlement(&RecordStatus::Succeeded, 1, &RETRY),
        Settlement::Ack
    );
    // However often it came before.
    assert_eq!(
        settlement(&RecordStatus::Succeeded, 9, &RETRY),
        Settlement::Ack
    );
}

#[test]
fn permanent_is_dead_lettered_at_once_with_its_reason() {
    assert_eq!(
        settlement(&RecordStatus::Permanent("corrupt".into()), 1, &RETRY),
        Settlement::DeadLetter {
            reason: "corrupt".into()
        }
    );
}

#[test]
fn retryable_comes_back_after_the_delay_until_the_bound() -> TestResult {
    let failing = RecordStatus::Retryable("store down".into());
    assert_eq!(
        settlement(&failing, 1, &RETRY),
        Settlement::RetryLater {
            next_attempt: 2,
            delay: Duration::from_secs(30),
            reason: "store down".into()
        }
    );
    assert!(matches!(
        settlement(&failing, 2, &RETRY),
        Settlement::RetryLater {
            next_attempt: 3,
            ..
        }
    ));
    let Settlement::DeadLetter { reason } = settlement(&failing, 3, &RETRY) else {
        return Err("the last attempt is not dead-lettered".into());
    };
    assert_eq!(
        reason,
        "still failing after 3 attempts (CONSUME_MAX_ATTEMPTS is 3): store down"
    );
    // A count past the bound (a message from before the bound was lowered) is not retried.
    assert!(matches!(
        settlement(&failing, 7, &RETRY),
        Settlement::DeadLetter { .. }
    ));
    Ok(())
}

#[test]
fn one_attempt_means_no_retry() {
    let once = RetryPolicy {
        max_attempts: 1,
        ..RETRY
    };
    assert!(matches!(
        settlement(&RecordStatus::Retryable("x".into()), 1, &once),
        Settlement::DeadLetter { .. }
    ));
}

/// A message as a source would hand it over.
struct Sample {
    body: Vec<u8>,
    headers: Vec<(&'static str, &'static str)>,
    correlation_id: Option<String>,
}

impl Incoming for Sample {
    fn body(&self) -> &[u8] {
        &self.body
    }
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            add_header(&mut headers, name, value);
        }
        headers
    }
    fn correlation_id(&self) -> Option<String> {
        self.correlation_id.clone()
    }
    fn attempt(&self) -> u32 {
        1
    }
    fn label(&self) -> String {
        "sample".into()
    }
    async fn settle(self, _: &Settlement) -> Result<(), SettleError> {
        Ok(())
    }
}

fn s3_records(keys: &[&str]) -> Vec<u8> {
    let records: Vec<_> = keys
        .iter()
        .map(|key| {
            serde_json::json!({
                "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                "eventTime": "2024-05-01T10:00:00.000Z", "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": {"key": key, "size": 3}}
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
        .to_string()
        .into_bytes()
}

#[test]
fn every_event_of_a_message_carries_its_correlation_id() -> TestResult {
    let message = Sample {
        body: s3_records(&["a.txt", "b.txt"]),
        headers: vec![("content-type", "application/json")],
        correlation_id: Some("corr-1".into()),
    };
    let delivery = delivery_of(&message, 1 << 20)?;
    let events = delivery.into_events()?;
    assert_eq!(events.len(), 2);
    for event in &events {
        assert_eq!(event.kind, EventKind::Created);
        assert_eq!(event.correlation_id.as_deref(), Some("corr-1"));
    }
    Ok(())
}

#[test]
fn a_message_that_does_not_decode_is_one_record_that_failed() -> TestResult {
    let message = Sample {
        body: b"not json".to_vec(),
        headers: Vec::new(),
        correlation_id: None,
    };
    let delivery = delivery_of(&message, 1 << 20)?;
    assert_eq!(delivery.records.len(), 1);
    assert!(delivery.records[0].events.is_err());
    Ok(())
}

#[test]
fn a_message_over_the_limit_is_refused_naming_it() {
    let message = Sample {
        body: vec![b' '; 65],
        headers: Vec::new(),
        correlation_id: None,
    };
    let refused = delivery_of(&message, 64).err().map(|e| e.to_string());
    assert_eq!(
        refused.as_deref(),
        Some("the message is 65 bytes, over the limit of 64 (MAX_BODY_BYTES)")
    );
}

#[test]
fn cloudevent_attributes_of_the_amqp_binding_reach_the_decoder() -> TestResult {
    let message = Sample {
        body: br#"{"bucket":"b","name":"photo.jpg","size":"3"}"#.to_vec(),
        headers: vec![
            ("cloudEvents:specversion", "1.0"),
            (
                "cloudEvents:type",
                "google.cloud.storage.object.v1.finalized",
            ),
            (
                "cloudEvents:source",
                "//storage.googleapis.com/projects/_/buckets/b",
            ),
            ("cloudEvents_id", "ce-1"),
            ("content-type", "application/json"),
        ],
        correlation_id: None,
    };
    let events = delivery_of(&message, 1 << 20)?.into_events()?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].key, "photo.jpg");
    assert_eq!(events[0].id.as_deref(), Some("ce-1"));
    Ok(())
}

#[test]
fn header_names_that_are_not_http_are_left_out() {
    assert_eq!(
        header_name("cloudEvents:type").map(|n| n.to_string()),
        Some("ce-type".to_owned())
    );
    assert!(header_name("bad name").is_none());
}
