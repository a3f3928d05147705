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

/// The runtime loop with a source in memory: what each message was settled as, by key.
mod runtime_loop {
    use super::*;
    use crate::event::ObjectEvent;
    use crate::function::Invocation;
    use crate::operations::ledger::{LedgerSettings, Recorder};
    use crate::operations::metrics::Metrics;
    use crate::outcome::{Done, HandlerError, Outcome};
    use crate::runtime::RuntimeSettings;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    type Settled = Arc<Mutex<Vec<(String, Settlement)>>>;

    /// Done for most keys, retryable for `flaky`; `hold` never finishes.
    struct Keys;

    impl Handler for Keys {
        async fn handle(&self, event: &ObjectEvent, _: &Invocation) -> Outcome {
            match event.key.as_str() {
                "hold" => std::future::pending().await,
                "flaky" => Err(HandlerError::retryable("store down")),
                _ => Ok(Done::Completed("done".into())),
            }
        }
    }

    /// A message of one S3 created record for `b/<key>`.
    struct Message {
        key: &'static str,
        body: Vec<u8>,
        attempt: u32,
        settled: Settled,
    }

    impl Incoming for Message {
        fn body(&self) -> &[u8] {
            &self.body
        }
        fn headers(&self) -> HeaderMap {
            HeaderMap::new()
        }
        fn correlation_id(&self) -> Option<String> {
            None
        }
        fn attempt(&self) -> u32 {
            self.attempt
        }
        fn label(&self) -> String {
            self.key.to_owned()
        }
        async fn settle(self, settlement: &Settlement) -> Result<(), SettleError> {
            let mut settled = self
                .settled
                .lock()
                .map_err(|e| SettleError(e.to_string().into()))?;
            settled.push((self.key.to_owned(), settlement.clone()));
            Ok(())
        }
    }

    /// What `next` hands out, in order; after the last step the subscription stays idle.
    enum Step {
        Message(&'static str, u32),
        Lost,
    }

    struct Script {
        steps: VecDeque<Step>,
        settled: Settled,
        connects: Arc<Mutex<u32>>,
    }

    impl Source for Script {
        type Message = Message;
        fn name(&self) -> String {
            "script".into()
        }
        async fn connect(&mut self) -> Result<(), SourceError> {
            if let Ok(mut n) = self.connects.lock() {
                *n += 1;
            }
            Ok(())
        }
        async fn next(&mut self) -> Option<Result<Message, SourceError>> {
            match self.steps.pop_front() {
                Some(Step::Message(key, attempt)) => Some(Ok(Message {
                    key,
                    body: s3_records(&[key]),
                    attempt,
                    settled: Arc::clone(&self.settled),
                })),
                Some(Step::Lost) => Some(Err(SourceError::Lost("connection reset".into()))),
                None => std::future::pending().await,
            }
        }
        async fn stop_taking(&mut self) {}
        async fn close(&mut self) {}
    }

    fn context() -> Result<Arc<Context<Keys>>, Box<dyn std::error::Error>> {
        let mut env = Env::from_pairs([("BATCH_CONCURRENCY", "4")]);
        let settings = RuntimeSettings::read(&mut env);
        env.finish()?;
        let ledger = LedgerSettings::in_memory(100).open("keys")?;
        Ok(Arc::new(Context {
            handler: Arc::new(Keys),
            governor: Governor::new(&settings),
            observer: Observer {
                metrics: Arc::new(Metrics::default()),
                recorder: Recorder::start(ledger),
                instance: "test/1".into(),
            },
            retry: RETRY,
            timeout: Duration::from_secs(60),
            max_bytes: 1 << 20,
        }))
    }

    /// Runs the loop over `steps` until `settled` holds `count` settlements, then stops it
    /// as SIGTERM would; returns the settlements, sorted by key, the connects and the metrics.
    async fn run(
        steps: Vec<Step>,
        count: usize,
    ) -> Result<(Vec<(String, Settlement)>, u32, String), Box<dyn std::error::Error>> {
        let settled: Settled = Arc::default();
        let connects = Arc::new(Mutex::new(0));
        let source = Script {
            steps: steps.into(),
            settled: Arc::clone(&settled),
            connects: Arc::clone(&connects),
        };
        let (stop_tx, stop) = watch::channel(false);
        let context = context()?;
        let metrics = Arc::clone(&context.observer.metrics);
        let running = tokio::spawn(consume(source, context, Duration::from_millis(300), stop));
        for _ in 0..500 {
            if settled.lock().map_err(|e| e.to_string())?.len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send(true)?;
        tokio::time::timeout(Duration::from_secs(10), running).await???;
        let mut settled = settled.lock().map_err(|e| e.to_string())?.clone();
        settled.sort_by(|a, b| a.0.cmp(&b.0));
        let connects = *connects.lock().map_err(|e| e.to_string())?;
        Ok((settled, connects, metrics.render(0)))
    }

    #[tokio::test]
    async fn each_message_is_settled_by_its_outcome_and_unfinished_ones_go_back_at_shutdown()
    -> TestResult {
        let (settled, _, metrics) = run(
            vec![
                Step::Message("ok", 1),
                Step::Message("flaky", 1),
                Step::Message("hold", 1),
            ],
            2,
        )
        .await?;
        assert_eq!(
            settled,
            [
                (
                    "flaky".to_owned(),
                    Settlement::RetryLater {
                        next_attempt: 2,
                        delay: RETRY.delay,
                        reason: "store down".into()
                    }
                ),
                ("hold".to_owned(), Settlement::Requeue),
                ("ok".to_owned(), Settlement::Ack),
            ]
        );
        for settlement in ["ack", "retry_later", "requeue"] {
            let line = format!("bucketfn_messages_total{{settlement=\"{settlement}\"}} 1");
            assert!(metrics.contains(&line), "{line} in {metrics}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_lost_connection_is_rebuilt_and_consuming_goes_on() -> TestResult {
        let (settled, connects, _) = run(
            vec![
                Step::Message("first", 1),
                Step::Lost,
                Step::Message("second", 1),
            ],
            2,
        )
        .await?;
        assert_eq!(connects, 2);
        assert_eq!(
            settled,
            [
                ("first".to_owned(), Settlement::Ack),
                ("second".to_owned(), Settlement::Ack),
            ]
        );
        Ok(())
    }
}

#[test]
fn one_source_is_read_a_topic_or_a_queue() {
    let (_, problems) = crate::config::read_from_pairs(
        &[
            ("KAFKA_BROKERS", "k:9092"),
            ("CONSUME_TOPIC", "events"),
            ("CONSUME_GROUP", "g"),
            ("CONSUME_QUEUE", "events"),
        ],
        SourceSettings::read,
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("CONSUME_TOPIC: and CONSUME_QUEUE are both set")),
        "{problems:?}"
    );
}
