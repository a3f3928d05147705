//! A message as the line object the log-ingest API takes (`{timestamp, line, app, level,
//! meta}`): the one encoder behind the log-ingest publisher's request bodies and the file sink's
//! `log-ingest` format, outside the `log-ingest` feature so the file sink works without it.

use super::{Body, MessageParts, json_text};
use crate::config::{Env, FromEnv};

/// The `app` and `level` of every line, from `LOG_INGEST_APP` and `LOG_INGEST_LEVEL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLineSettings {
    /// `LOG_INGEST_APP`: the app name of every line.
    pub app: String,
    /// `LOG_INGEST_LEVEL`: the level of every line.
    pub level: String,
}

impl Default for LogLineSettings {
    fn default() -> Self {
        Self {
            app: "bucketfn".to_owned(),
            level: "INFO".to_owned(),
        }
    }
}

impl FromEnv for LogLineSettings {
    fn read(env: &mut Env) -> Option<Self> {
        let defaults = Self::default();
        Some(Self {
            app: env.or("LOG_INGEST_APP", defaults.app),
            level: env.or("LOG_INGEST_LEVEL", defaults.level),
        })
    }
}

impl LogLineSettings {
    /// The line of a message or record (`{timestamp, line, app, level, meta}`), stamped with
    /// its own time or else `now_ms`: `timestamp` in unix milliseconds, `line` the body as text
    /// (a non-UTF-8 byte is replaced rather than the line refused: the API takes text), `meta`
    /// the headers and the message key.
    pub fn write(&self, out: &mut Vec<u8>, message: MessageParts<'_>, now_ms: i64) {
        let timestamp = message
            .timestamp
            .map_or(now_ms, |time| time.timestamp_millis());
        // The member names are written as they are: they need no escape.
        out.extend_from_slice(br#"{"timestamp":"#);
        json_text::integer(out, timestamp);
        out.extend_from_slice(br#","line":"#);
        match message.body {
            Body::Text(text) => json_text::string(out, text),
            Body::Binary(bytes) => json_text::string(out, &String::from_utf8_lossy(bytes)),
        }
        out.extend_from_slice(br#","app":"#);
        json_text::string(out, &self.app);
        out.extend_from_slice(br#","level":"#);
        json_text::string(out, &self.level);
        out.extend_from_slice(br#","meta":"#);
        // The message key is `meta.key`; a header of that name would make it ambiguous.
        let headers = message
            .headers
            .iter()
            .filter(|(name, _)| !(*name == "key" && message.key.is_some()));
        json_text::object(out, headers.chain(message.key.map(|key| ("key", key))));
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Message;
    use bytes::Bytes;
    use chrono::DateTime;
    use serde_json::{Value, json};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn encoded(settings: &LogLineSettings, message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        settings.write(&mut out, message.parts(), 7);
        out
    }

    #[test]
    fn a_line_carries_the_records_own_time_or_else_now() -> TestResult {
        let settings = LogLineSettings {
            app: "vpc".into(),
            level: "DEBUG".into(),
        };
        let mut message = Message {
            key: Some("logs/a.log".into()),
            headers: vec![
                ("dedupe_id".into(), "e:1".into()),
                ("key".into(), "not the key".into()),
            ],
            body: Bytes::from_static(b"2 123 eni-1 \xff"),
            ..Message::default()
        };
        let line: Value = serde_json::from_slice(&encoded(&settings, &message))?;
        assert_eq!(
            line,
            json!({"timestamp": 7, "line": "2 123 eni-1 \u{fffd}", "app": "vpc",
                "level": "DEBUG", "meta": {"dedupe_id": "e:1", "key": "logs/a.log"}})
        );
        message.timestamp = DateTime::from_timestamp_millis(1_418_530_010_500);
        let line: Value = serde_json::from_slice(&encoded(&settings, &message))?;
        assert_eq!(line["timestamp"], 1_418_530_010_500i64);
        Ok(())
    }

    #[test]
    fn app_and_level_come_from_the_log_ingest_variables_without_a_key() -> TestResult {
        let settings: LogLineSettings = Env::from_pairs([("LOG_INGEST_APP", "flows")]).load()?;
        assert_eq!(
            (settings.app.as_str(), settings.level.as_str()),
            ("flows", "INFO")
        );
        Ok(())
    }
}
