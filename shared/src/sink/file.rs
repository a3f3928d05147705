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

use super::records::Outgoing;
use super::{
    Body, LogLineSettings, Message, MessageParts, PublishError, Publisher, RecordBatch, json_text,
};

/// What each line of the file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFormat {
    /// The whole message: `key`, `headers` (an object), `content_type` and `body` (text) or
    /// `body_base64` (when the body is not UTF-8).
    Messages,
    /// The log-ingest API's line object ([`LogLineSettings::write`]): `timestamp` (the message's own
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

/// A message as its JSON line (without the line ending): `key`, `headers` (an object, in
/// their order), `content_type`, and `body` (text) or `body_base64`.
fn write_line(out: &mut Vec<u8>, message: MessageParts<'_>) {
    // The member names are written as they are: they need no escape.
    out.extend_from_slice(br#"{"key":"#);
    match message.key {
        Some(key) => json_text::string(out, key),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","headers":"#);
    json_text::object(out, message.headers.iter());
    out.extend_from_slice(br#","content_type":"#);
    json_text::string(out, message.content_type);
    match message.body {
        Body::Text(text) => {
            out.extend_from_slice(br#","body":"#);
            json_text::string(out, text);
        }
        Body::Binary(bytes) => {
            out.extend_from_slice(br#","body_base64":""#);
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .as_bytes(),
            );
            out.push(b'"');
        }
    }
    out.push(b'}');
}

impl FilePublisher {
    /// Returns once the lines are handed to the operating system (flushed, not fsynced).
    async fn write(&self, lines: Outgoing) -> Result<(), PublishError> {
        let (out, format) = (Arc::clone(&self.out), Arc::clone(&self.format));
        let now_ms = Utc::now().timestamp_millis();
        let written = tokio::task::spawn_blocking(move || {
            // Encoded first into one buffer, then written with one call rather than in many
            // small writes, each through the writer's dynamic dispatch.
            let mut encoded = Vec::with_capacity(lines.encoded_estimate());
            lines.for_each(|message| {
                match &*format {
                    FileFormat::Messages => write_line(&mut encoded, message),
                    FileFormat::LogIngest(settings) => {
                        settings.write(&mut encoded, message, now_ms)
                    }
                }
                encoded.push(b'\n');
            });
            let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
            out.write_all(&encoded)?;
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

#[async_trait]
impl Publisher for FilePublisher {
    async fn publish(&self, messages: Vec<Message>) -> Result<(), PublishError> {
        self.write(Outgoing::Messages(messages)).await
    }

    async fn publish_records(&self, batch: RecordBatch) -> Result<(), PublishError> {
        self.write(Outgoing::Records(batch)).await
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

    fn batch() -> RecordBatch {
        let stamp = std::sync::Arc::new(crate::sink::RecordStamp {
            message_key: "logs/\"odd\"\tkey\u{1}é".into(),
            etag: "e\\1".into(),
            cloudevent: Some(crate::sink::RecordEvent {
                source: "s3://logs/odd".into(),
                subject: "odd €".into(),
            }),
            content_type: "text/plain",
        });
        // Each with a time of its own: lines without one carry the time of writing.
        let time = chrono::DateTime::from_timestamp(1_418_530_010, 0);
        let mut batch = RecordBatch::with_capacity(stamp, 4, 64);
        batch.push(0, b"plain line", time);
        let odd = "quotes \" back\\slash \u{7f} \u{1f} tab\t 😀";
        batch.push(1, odd.as_bytes(), time);
        batch.push(2, b"not text \xff\xfe", time);
        batch
    }

    /// Both formats: what a batch of records writes read in place is what its messages write,
    /// and each line is the message as JSON.
    #[tokio::test]
    async fn records_written_in_place_are_the_lines_of_their_messages() -> TestResult {
        let dir = tempfile::tempdir()?;
        let formats = [
            FileFormat::Messages,
            FileFormat::LogIngest(LogLineSettings::default()),
        ];
        for (n, format) in formats.into_iter().enumerate() {
            let (in_place, messages) = (
                dir.path().join(format!("{n}a")),
                dir.path().join(format!("{n}b")),
            );
            FilePublisher::open(&in_place, format.clone())?
                .publish_records(batch())
                .await?;
            FilePublisher::open(&messages, format.clone())?
                .publish(batch().into_messages())
                .await?;
            let written = std::fs::read_to_string(&in_place)?;
            assert_eq!(written, std::fs::read_to_string(&messages)?);
            let lines: Vec<Value> = written
                .lines()
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()?;
            assert_eq!(lines.len(), 3);
            if format == FileFormat::Messages {
                assert_eq!(
                    lines[1],
                    serde_json::json!({
                        "key": "logs/\"odd\"\tkey\u{1}é",
                        "headers": {"dedupe_id": "e\\1:1", "ce_specversion": "1.0",
                            "ce_id": "e\\1:1", "ce_source": "s3://logs/odd",
                            "ce_type": crate::sink::RECORD_TYPE, "ce_subject": "odd €"},
                        "content_type": "text/plain",
                        "body": "quotes \" back\\slash \u{7f} \u{1f} tab\t 😀",
                    })
                );
                assert_eq!(lines[2]["body_base64"], "bm90IHRleHQg//4=");
            } else {
                assert_eq!(lines[0]["timestamp"], 1_418_530_010_000i64);
                assert_eq!(
                    lines[1]["line"],
                    "quotes \" back\\slash \u{7f} \u{1f} tab\t 😀"
                );
                assert_eq!(lines[2]["line"], "not text \u{fffd}\u{fffd}");
                assert_eq!(lines[1]["meta"]["key"], "logs/\"odd\"\tkey\u{1}é");
                assert_eq!(lines[1]["meta"]["ce_subject"], "odd €");
            }
        }
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
