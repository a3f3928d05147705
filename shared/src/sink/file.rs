//! A local sink: messages appended to a file (or standard output) as JSON lines, for trying a
//! function out without a broker, for demos and for benchmarks; or as the bare lines the
//! log-ingest API takes, for a file that log shippers or a later upload read as they are.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use base64::Engine;
use chrono::Utc;
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::{LogLineSettings, Message, PublishError, Publisher};

/// What each line of the file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFormat {
    /// The whole message: `key`, `headers` (an object), `content_type` and `body` (text) or
    /// `body_base64` (when the body is not UTF-8).
    Messages,
    /// The log-ingest API's line object ([`super::LogLine`]): `timestamp` (the message's own
    /// time or the time of writing), `line`, `app`, `level`, `meta`.
    LogIngest(LogLineSettings),
}

/// Appends one JSON object per message, in its [`FileFormat`].
pub struct FilePublisher {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
    format: Arc<FileFormat>,
    sink: String,
}

impl std::fmt::Debug for FilePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilePublisher")
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

impl FilePublisher {
    /// Opens `path` for appending (created if missing); `-` is standard output.
    pub fn open(path: &Path, format: FileFormat) -> std::io::Result<Self> {
        let (out, sink): (Box<dyn Write + Send>, String) = if path == Path::new("-") {
            (Box::new(std::io::stdout()), "standard output".to_owned())
        } else {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            (
                Box::new(BufWriter::with_capacity(1 << 20, file)),
                format!("file {}", PathBuf::from(path).display()),
            )
        };
        Ok(Self {
            out: Arc::new(Mutex::new(out)),
            format: Arc::new(format),
            sink,
        })
    }
}

/// A message as its JSON line: written straight from the message, no intermediate tree.
struct Line<'a>(&'a Message);

/// Headers as a JSON object, in their order.
struct Headers<'a>(&'a [(String, String)]);

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl Serialize for Line<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let message = self.0;
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("key", &message.key)?;
        map.serialize_entry("headers", &Headers(&message.headers))?;
        map.serialize_entry("content_type", &message.content_type)?;
        match std::str::from_utf8(&message.body) {
            Ok(text) => map.serialize_entry("body", text)?,
            Err(_) => map.serialize_entry(
                "body_base64",
                &base64::engine::general_purpose::STANDARD.encode(&message.body),
            )?,
        }
        map.end()
    }
}

#[async_trait]
impl Publisher for FilePublisher {
    /// Returns once the lines are handed to the operating system (flushed, not fsynced).
    async fn publish(&self, messages: Vec<Message>) -> Result<(), PublishError> {
        let (out, format) = (Arc::clone(&self.out), Arc::clone(&self.format));
        let now_ms = Utc::now().timestamp_millis();
        let written = tokio::task::spawn_blocking(move || {
            let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
            for message in &messages {
                match &*format {
                    FileFormat::Messages => serde_json::to_writer(&mut *out, &Line(message)),
                    FileFormat::LogIngest(settings) => {
                        serde_json::to_writer(&mut *out, &settings.line(message, now_ms))
                    }
                }?;
                out.write_all(b"\n")?;
            }
            out.flush()
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        written.map_err(|e| PublishError::Unavailable {
            sink: self.sink.clone(),
            source: Box::new(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::Value;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[tokio::test]
    async fn appends_json_lines_and_keeps_binary_bodies_intact() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("out.jsonl");
        let publisher = FilePublisher::open(&path, FileFormat::Messages)?;
        publisher
            .publish(vec![
                Message {
                    key: Some("b/k".into()),
                    headers: vec![("dedupe_id".into(), "e:0".into())],
                    content_type: "text/plain".into(),
                    body: Bytes::from_static(b"line \"one\""),
                    ..Message::default()
                },
                Message {
                    body: Bytes::from_static(&[0xff, 0x00]),
                    ..Message::default()
                },
            ])
            .await?;
        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        assert_eq!(lines[0]["body"], "line \"one\"");
        assert_eq!(lines[0]["headers"]["dedupe_id"], "e:0");
        assert_eq!(lines[1]["body_base64"], "/wA=");
        Ok(())
    }

    #[tokio::test]
    async fn the_log_ingest_format_writes_bare_lines_with_the_records_time() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("lines.jsonl");
        let settings = LogLineSettings {
            app: "flows".into(),
            level: "INFO".into(),
        };
        let publisher = FilePublisher::open(&path, FileFormat::LogIngest(settings))?;
        let before = Utc::now().timestamp_millis();
        publisher
            .publish(vec![
                Message {
                    key: Some("logs/a.log".into()),
                    headers: vec![("dedupe_id".into(), "e:0".into())],
                    body: Bytes::from_static(b"2 123456789010 eni-1 ACCEPT OK"),
                    timestamp: chrono::DateTime::from_timestamp(1_418_530_010, 0),
                    ..Message::default()
                },
                Message {
                    body: Bytes::from_static(b"no time of its own"),
                    ..Message::default()
                },
            ])
            .await?;
        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["timestamp"], 1_418_530_010_000i64);
        assert_eq!(lines[0]["line"], "2 123456789010 eni-1 ACCEPT OK");
        assert_eq!(lines[0]["app"], "flows");
        assert_eq!(lines[0]["meta"]["dedupe_id"], "e:0");
        assert_eq!(lines[0]["meta"]["key"], "logs/a.log");
        assert!(lines[0].get("lines").is_none() && lines[0].get("body").is_none());
        let now = lines[1]["timestamp"].as_i64().ok_or("no timestamp")?;
        assert!(now >= before, "{now} < {before}");
        Ok(())
    }
}
