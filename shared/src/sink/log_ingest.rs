//! A log-ingest HTTP API in the Mezmo (LogDNA) format: `POST /logs/ingest?hostname=...&now=...`
//! with the ingestion key as basic-auth user and `{"lines": [{timestamp, line, app, level,
//! meta}]}`, in requests under the API's 10 MB limit; 429, 5xx and timeouts are retried with
//! backoff, other 4xx refused for good ([`super::http`]).

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;

use super::http::{RetryPolicy, Sender, check_url};
use super::records::Outgoing;
use super::{LogLineSettings, Message, PublishError, Publisher, RecordBatch};
use crate::config::{Env, FromEnv, redact_url};
use crate::outcome::BoxError;

/// The API refuses larger request bodies.
pub const API_MAX_REQUEST_BYTES: usize = 10_000_000;

/// Where and how to send lines, from `LOG_INGEST_*` variables.
#[derive(Clone, PartialEq)]
pub struct LogIngestSettings {
    /// `LOG_INGEST_URL`: the ingest endpoint.
    pub url: String,
    /// `LOG_INGEST_KEY`: the ingestion key (sent as the basic-auth user name).
    pub key: String,
    /// `LOG_INGEST_HOSTNAME`: the source host name the lines are filed under.
    pub hostname: String,
    /// `LOG_INGEST_APP`, `LOG_INGEST_LEVEL`: the app name and level of every line.
    pub line: LogLineSettings,
    /// `LOG_INGEST_TAGS`: comma-separated tags, if any.
    pub tags: Option<String>,
    /// `LOG_INGEST_MAX_BATCH_BYTES`: request bodies stay under this.
    pub max_batch_bytes: usize,
    /// `LOG_INGEST_MAX_ATTEMPTS`, `LOG_INGEST_TIMEOUT_SECS`, `LOG_INGEST_BACKOFF_MS`.
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for LogIngestSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The ingestion key never reaches a log line.
        f.debug_struct("LogIngestSettings")
            .field("url", &redact_url(&self.url))
            .field("hostname", &self.hostname)
            .field("app", &self.line.app)
            .finish_non_exhaustive()
    }
}

impl FromEnv for LogIngestSettings {
    fn read(env: &mut Env) -> Option<Self> {
        let url: String = env.or(
            "LOG_INGEST_URL",
            "https://logs.mezmo.com/logs/ingest".to_owned(),
        );
        check_url(env, "LOG_INGEST_URL", &url);
        let key = env.required("LOG_INGEST_KEY");
        let max_batch_bytes = env.or("LOG_INGEST_MAX_BATCH_BYTES", 2_000_000usize);
        if !(1024..=API_MAX_REQUEST_BYTES).contains(&max_batch_bytes) {
            env.problem(
                "LOG_INGEST_MAX_BATCH_BYTES",
                format!("must be within 1024..={API_MAX_REQUEST_BYTES} (the API's limit)"),
            );
        }
        let retry = RetryPolicy::read(env, "LOG_INGEST");
        let line = LogLineSettings::read(env);
        Some(Self {
            url,
            key: key?,
            hostname: env.or("LOG_INGEST_HOSTNAME", "bucketfn".to_owned()),
            line: line?,
            tags: env.optional("LOG_INGEST_TAGS"),
            max_batch_bytes,
            retry,
        })
    }
}

/// Sends messages as log lines.
pub struct LogIngestPublisher {
    settings: LogIngestSettings,
    sender: Sender,
}

impl std::fmt::Debug for LogIngestPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogIngestPublisher")
            .field("sink", &self.sender.sink())
            .finish_non_exhaustive()
    }
}

impl LogIngestPublisher {
    pub fn new(settings: LogIngestSettings) -> Result<Self, BoxError> {
        let sink = format!("log ingest {}", redact_url(&settings.url));
        let sender = Sender::new(sink, settings.retry.clone())?;
        Ok(Self { settings, sender })
    }

    /// Request bodies (`{"lines":[...]}`), each under the configured size. Each line is
    /// written straight into its body; only a line that crosses into the next body is copied.
    fn bodies(&self, outgoing: &Outgoing) -> Result<Vec<Bytes>, PublishError> {
        const OPEN: &[u8] = b"{\"lines\":[";
        const CLOSE: &[u8] = b"]}";
        let limit = self.settings.max_batch_bytes;
        let now_ms = Utc::now().timestamp_millis();
        let mut bodies = Vec::new();
        let mut body = OPEN.to_vec();
        outgoing.try_for_each(|message| {
            let before = body.len();
            if before > OPEN.len() {
                body.push(b',');
            }
            let start = body.len();
            self.settings.line.write(&mut body, message, now_ms);
            let line = body.len() - start;
            if OPEN.len() + line + CLOSE.len() > limit {
                return Err(PublishError::Rejected {
                    sink: self.sender.sink().to_owned(),
                    source: format!(
                        "a line of {line} bytes does not fit in a request of \
                         LOG_INGEST_MAX_BATCH_BYTES ({limit})"
                    )
                    .into(),
                });
            }
            if body.len() + CLOSE.len() > limit {
                let mut next = OPEN.to_vec();
                next.extend_from_slice(&body[start..]);
                body.truncate(before);
                body.extend_from_slice(CLOSE);
                bodies.push(Bytes::from(std::mem::replace(&mut body, next)));
            }
            Ok(())
        })?;
        if body.len() > OPEN.len() {
            body.extend_from_slice(CLOSE);
            bodies.push(Bytes::from(body));
        }
        Ok(bodies)
    }

    /// Requests go one after another so that lines arrive in order.
    async fn send_all(&self, outgoing: &Outgoing) -> Result<(), PublishError> {
        for body in self.bodies(outgoing)? {
            self.send(&body).await?;
        }
        Ok(())
    }

    /// Sends one body; `now` is the time of each attempt.
    async fn send(&self, body: &Bytes) -> Result<(), PublishError> {
        let settings = &self.settings;
        self.sender
            .send(|client| {
                let mut query = vec![
                    ("hostname", settings.hostname.clone()),
                    ("now", Utc::now().timestamp_millis().to_string()),
                ];
                if let Some(tags) = &settings.tags {
                    query.push(("tags", tags.clone()));
                }
                client
                    .post(&settings.url)
                    .query(&query)
                    .basic_auth(&settings.key, None::<&str>)
                    .header("content-type", "application/json; charset=UTF-8")
                    .body(body.clone())
            })
            .await
    }
}

#[async_trait]
impl Publisher for LogIngestPublisher {
    async fn publish(&self, messages: Vec<Message>) -> Result<(), PublishError> {
        self.send_all(&Outgoing::Messages(messages)).await
    }

    async fn publish_records(&self, batch: RecordBatch) -> Result<(), PublishError> {
        self.send_all(&Outgoing::Records(batch)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use serde_json::Value;
    use std::time::Duration;

    type TestResult = Result<(), BoxError>;

    fn publisher(max_batch_bytes: usize) -> Result<LogIngestPublisher, BoxError> {
        LogIngestPublisher::new(LogIngestSettings {
            url: "http://127.0.0.1:9/logs/ingest".into(),
            key: "k".into(),
            hostname: "h".into(),
            line: LogLineSettings {
                app: "app".into(),
                level: "INFO".into(),
            },
            tags: None,
            max_batch_bytes,
            retry: RetryPolicy {
                prefix: "LOG_INGEST",
                max_attempts: 1,
                timeout: Duration::from_secs(1),
                backoff: Duration::from_millis(1),
            },
        })
    }

    fn message(n: usize) -> Message {
        Message {
            key: Some("b/k".into()),
            headers: vec![("dedupe_id".into(), format!("etag:{n}"))],
            body: Bytes::from(format!("line {n} {}", "x".repeat(100))),
            ..Message::default()
        }
    }

    #[test]
    fn bodies_stay_under_the_limit_and_keep_every_line_in_order() -> TestResult {
        let messages: Vec<Message> = (0..50).map(message).collect();
        let bodies = publisher(1024)?.bodies(&Outgoing::Messages(messages))?;
        assert!(bodies.len() > 1);
        let mut ids = Vec::new();
        for body in &bodies {
            assert!(body.len() <= 1024, "{}", body.len());
            let parsed: Value = serde_json::from_slice(body)?;
            for line in parsed["lines"].as_array().ok_or("no lines")? {
                assert_eq!(line["app"], "app");
                assert_eq!(line["meta"]["key"], "b/k");
                ids.push(line["meta"]["dedupe_id"].as_str().unwrap_or("").to_owned());
            }
        }
        let expected: Vec<String> = (0..50).map(|n| format!("etag:{n}")).collect();
        assert_eq!(ids, expected);
        Ok(())
    }

    #[test]
    fn a_line_has_its_records_own_time_or_the_time_of_sending() -> TestResult {
        let own = DateTime::from_timestamp(1_418_530_010, 0).ok_or("time")?;
        let messages = [
            Message {
                timestamp: Some(own),
                ..message(0)
            },
            message(1),
        ];
        let before = Utc::now().timestamp_millis();
        let bodies = publisher(1 << 20)?.bodies(&Outgoing::Messages(messages.into()))?;
        let parsed: Value = serde_json::from_slice(&bodies[0])?;
        assert_eq!(parsed["lines"][0]["timestamp"], 1_418_530_010_000i64);
        let sent = parsed["lines"][1]["timestamp"].as_i64().ok_or("no time")?;
        assert!(sent >= before, "{sent} < {before}");
        Ok(())
    }

    #[test]
    fn a_line_too_large_for_any_request_is_refused() -> TestResult {
        let big = Message {
            body: Bytes::from(vec![b'x'; 5000]),
            ..Message::default()
        };
        let err = publisher(1024)?
            .bodies(&Outgoing::Messages(vec![big]))
            .err()
            .ok_or("accepted")?;
        assert!(matches!(err, PublishError::Rejected { .. }), "{err}");
        Ok(())
    }

    #[test]
    fn the_key_is_required_and_never_printed() -> TestResult {
        let err = Env::from_pairs([("LOG_INGEST_MAX_BATCH_BYTES", "20000000")])
            .load::<LogIngestSettings>()
            .err()
            .ok_or("accepted")?;
        let vars: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(vars, ["LOG_INGEST_KEY", "LOG_INGEST_MAX_BATCH_BYTES"]);
        let settings: LogIngestSettings = Env::from_pairs([("LOG_INGEST_KEY", "sekrit")]).load()?;
        assert!(!format!("{settings:?}").contains("sekrit"));
        Ok(())
    }
}
