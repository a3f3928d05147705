//! A local sink: messages appended to a file (or standard output) as JSON lines, for trying a
//! function out without a broker, for demos and for benchmarks.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use base64::Engine;
use serde_json::{Map, Value};

use super::{Message, PublishError, Publisher};

/// Appends one JSON object per message: `key`, `headers` (an object), `content_type` and
/// `body` (text) or `body_base64` (when the body is not UTF-8).
pub struct FilePublisher {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
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
    pub fn open(path: &Path) -> std::io::Result<Self> {
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
            sink,
        })
    }
}

/// One message as a JSON line.
fn to_json_line(message: &Message) -> String {
    let mut object = Map::new();
    object.insert(
        "key".to_owned(),
        message.key.clone().map_or(Value::Null, Value::String),
    );
    let headers: Map<String, Value> = message
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    object.insert("headers".to_owned(), Value::Object(headers));
    object.insert(
        "content_type".to_owned(),
        Value::String(message.content_type.clone()),
    );
    match std::str::from_utf8(&message.body) {
        Ok(text) => object.insert("body".to_owned(), Value::String(text.to_owned())),
        Err(_) => object.insert(
            "body_base64".to_owned(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(&message.body)),
        ),
    };
    let mut line = Value::Object(object).to_string();
    line.push('\n');
    line
}

#[async_trait]
impl Publisher for FilePublisher {
    /// Returns once the lines are handed to the operating system (flushed, not fsynced).
    async fn publish(&self, messages: Vec<Message>) -> Result<(), PublishError> {
        let out = Arc::clone(&self.out);
        let written = tokio::task::spawn_blocking(move || {
            let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
            for message in &messages {
                out.write_all(to_json_line(message).as_bytes())?;
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

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[tokio::test]
    async fn appends_json_lines_and_keeps_binary_bodies_intact() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("out.jsonl");
        let publisher = FilePublisher::open(&path)?;
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
}
