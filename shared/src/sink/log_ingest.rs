//! A log-ingest HTTP API in the Mezmo (LogDNA) format: `POST /logs/ingest?hostname=...&now=...`
//! with the ingestion key as basic-auth user and `{"lines": [{timestamp, line, app, level,
//! meta}]}`, in requests under the API's 10 MB limit; 429, 5xx and timeouts are retried with
//! backoff, other 4xx refused for good.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::{Message, PublishError, Publisher};
use crate::config::{Env, FromEnv};
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
    /// `LOG_INGEST_APP`: the app name of every line.
    pub app: String,
    /// `LOG_INGEST_LEVEL`: the level of every line.
    pub level: String,
    /// `LOG_INGEST_TAGS`: comma-separated tags, if any.
    pub tags: Option<String>,
    /// `LOG_INGEST_MAX_BATCH_BYTES`: request bodies stay under this.
    pub max_batch_bytes: usize,
    /// `LOG_INGEST_MAX_ATTEMPTS`: tries per request before the publish counts as failed.
    pub max_attempts: u32,
    /// `LOG_INGEST_TIMEOUT_SECS`: time limit of one request.
    pub timeout: Duration,
    /// `LOG_INGEST_BACKOFF_MS`: the first wait before a retry; it doubles each time.
    pub backoff: Duration,
}

impl std::fmt::Debug for LogIngestSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The ingestion key never reaches a log line.
        f.debug_struct("LogIngestSettings")
            .field("url", &self.url)
            .field("hostname", &self.hostname)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl FromEnv for LogIngestSettings {
    fn read(env: &mut Env) -> Option<Self> {
        let url: String = env.or(
            "LOG_INGEST_URL",
            "https://logs.mezmo.com/logs/ingest".to_owned(),
        );
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            env.problem("LOG_INGEST_URL", "must be an http:// or https:// URL");
        }
        let key = env.required("LOG_INGEST_KEY");
        let max_batch_bytes = env.or("LOG_INGEST_MAX_BATCH_BYTES", 2_000_000usize);
        if !(1024..=API_MAX_REQUEST_BYTES).contains(&max_batch_bytes) {
            env.problem(
                "LOG_INGEST_MAX_BATCH_BYTES",
                format!("must be within 1024..={API_MAX_REQUEST_BYTES} (the API's limit)"),
            );
        }
        let max_attempts = env.or("LOG_INGEST_MAX_ATTEMPTS", 4u32);
        if max_attempts == 0 {
            env.problem("LOG_INGEST_MAX_ATTEMPTS", "must be at least 1");
        }
        Some(Self {
            url,
            key: key?,
            hostname: env.or("LOG_INGEST_HOSTNAME", "bucketfn".to_owned()),
            app: env.or("LOG_INGEST_APP", "bucketfn".to_owned()),
            level: env.or("LOG_INGEST_LEVEL", "INFO".to_owned()),
            tags: env.optional("LOG_INGEST_TAGS"),
            max_batch_bytes,
            max_attempts: max_attempts.max(1),
            timeout: Duration::from_secs(env.or("LOG_INGEST_TIMEOUT_SECS", 30u64).max(1)),
            backoff: Duration::from_millis(env.or("LOG_INGEST_BACKOFF_MS", 500u64)),
        })
    }
}

/// What one request attempt ended with.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("no answer within {0} s (LOG_INGEST_TIMEOUT_SECS)")]
    Timeout(u64),
    #[error(transparent)]
    Http(reqwest::Error),
}

impl AttemptError {
    fn retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 429 || *status == 408 || *status >= 500,
            Self::Timeout(_) => true,
            // Connection refused, reset, DNS: the service may come back.
            Self::Http(e) => !e.is_builder(),
        }
    }
}

/// Sends messages as log lines.
pub struct LogIngestPublisher {
    settings: LogIngestSettings,
    client: reqwest::Client,
    sink: String,
}

impl std::fmt::Debug for LogIngestPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogIngestPublisher")
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

impl LogIngestPublisher {
    pub fn new(settings: LogIngestSettings) -> Result<Self, BoxError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent("bucketfn")
            .build()?;
        let sink = format!("log ingest {}", settings.url);
        Ok(Self {
            settings,
            client,
            sink,
        })
    }

    /// The API's line for a message: the body is the text, headers and key go to `meta`.
    fn line(&self, message: &Message, now_ms: i64) -> Value {
        let mut meta: Map<String, Value> = message
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect();
        if let Some(key) = &message.key {
            meta.insert("key".to_owned(), Value::String(key.clone()));
        }
        json!({
            "timestamp": now_ms,
            // The API takes text; a non-UTF-8 byte is replaced rather than the line refused.
            "line": String::from_utf8_lossy(&message.body),
            "app": self.settings.app,
            "level": self.settings.level,
            "meta": meta,
        })
    }

    /// Request bodies (`{"lines":[...]}`), each under the configured size.
    fn bodies(&self, messages: &[Message]) -> Result<Vec<String>, PublishError> {
        const OPEN: &str = "{\"lines\":[";
        const CLOSE: &str = "]}";
        let limit = self.settings.max_batch_bytes;
        let now_ms = Utc::now().timestamp_millis();
        let mut bodies = Vec::new();
        let mut body = String::from(OPEN);
        for message in messages {
            let line = self.line(message, now_ms).to_string();
            if OPEN.len() + line.len() + CLOSE.len() > limit {
                return Err(PublishError::Rejected {
                    sink: self.sink.clone(),
                    source: format!(
                        "a line of {} bytes does not fit in a request of LOG_INGEST_MAX_BATCH_BYTES ({limit})",
                        line.len()
                    )
                    .into(),
                });
            }
            if body.len() > OPEN.len() && body.len() + 1 + line.len() + CLOSE.len() > limit {
                body.push_str(CLOSE);
                bodies.push(std::mem::replace(&mut body, String::from(OPEN)));
            }
            if body.len() > OPEN.len() {
                body.push(',');
            }
            body.push_str(&line);
        }
        if body.len() > OPEN.len() {
            body.push_str(CLOSE);
            bodies.push(body);
        }
        Ok(bodies)
    }

    async fn attempt(&self, body: &str) -> Result<(), (AttemptError, Option<Duration>)> {
        let mut query = vec![
            ("hostname", self.settings.hostname.clone()),
            ("now", Utc::now().timestamp_millis().to_string()),
        ];
        if let Some(tags) = &self.settings.tags {
            query.push(("tags", tags.clone()));
        }
        let request = self
            .client
            .post(&self.settings.url)
            .query(&query)
            .basic_auth(&self.settings.key, None::<&str>)
            .header("content-type", "application/json; charset=UTF-8")
            .body(body.to_owned());
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return Err((AttemptError::Timeout(self.settings.timeout.as_secs()), None));
            }
            Err(e) => return Err((AttemptError::Http(e), None)),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        let body: String = text.chars().take(300).collect();
        Err((
            AttemptError::Status {
                status: status.as_u16(),
                body,
            },
            retry_after,
        ))
    }

    /// Sends one body, retrying what may clear with exponential backoff (or the server's
    /// `Retry-After`, capped at 30 s).
    async fn send(&self, body: &str) -> Result<(), PublishError> {
        let mut wait = self.settings.backoff;
        let mut attempt = 1;
        loop {
            let (error, retry_after) = match self.attempt(body).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if !error.retryable() {
                return Err(PublishError::Rejected {
                    sink: self.sink.clone(),
                    source: Box::new(error),
                });
            }
            if attempt >= self.settings.max_attempts {
                return Err(PublishError::Unavailable {
                    sink: self.sink.clone(),
                    source: format!("{attempt} attempts; the last: {error}").into(),
                });
            }
            let pause = retry_after.unwrap_or(wait).min(Duration::from_secs(30));
            tracing::warn!(attempt, error = %error, wait_ms = pause.as_millis() as u64, "Log ingest failed; retrying.");
            tokio::time::sleep(pause).await;
            wait = wait.saturating_mul(2);
            attempt += 1;
        }
    }
}

#[async_trait]
impl Publisher for LogIngestPublisher {
    async fn publish(&self, messages: Vec<Message>) -> Result<(), PublishError> {
        // Requests go one after another so that lines arrive in order.
        for body in self.bodies(&messages)? {
            self.send(&body).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    type TestResult = Result<(), BoxError>;

    fn publisher(max_batch_bytes: usize) -> Result<LogIngestPublisher, BoxError> {
        LogIngestPublisher::new(LogIngestSettings {
            url: "http://127.0.0.1:9/logs/ingest".into(),
            key: "k".into(),
            hostname: "h".into(),
            app: "app".into(),
            level: "INFO".into(),
            tags: None,
            max_batch_bytes,
            max_attempts: 1,
            timeout: Duration::from_secs(1),
            backoff: Duration::from_millis(1),
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
        let bodies = publisher(1024)?.bodies(&messages)?;
        assert!(bodies.len() > 1);
        let mut ids = Vec::new();
        for body in &bodies {
            assert!(body.len() <= 1024, "{}", body.len());
            let parsed: Value = serde_json::from_str(body)?;
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
    fn a_line_too_large_for_any_request_is_refused() -> TestResult {
        let big = Message {
            body: Bytes::from(vec![b'x'; 5000]),
            ..Message::default()
        };
        let err = publisher(1024)?.bodies(&[big]).err().ok_or("accepted")?;
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
