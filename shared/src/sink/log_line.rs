//! A message as the line object the log-ingest API takes (`{timestamp, line, app, level,
//! meta}`): the one builder behind the log-ingest publisher's request bodies and the file sink's
//! `log-ingest` format, outside the `log-ingest` feature so the file sink works without it.

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::Message;
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
    /// The line of `message`, stamped with the message's own time or else `now_ms`.
    pub fn line<'a>(&'a self, message: &'a Message, now_ms: i64) -> LogLine<'a> {
        LogLine {
            settings: self,
            message,
            now_ms,
        }
    }
}

/// One message as the API's line, serialized straight from the message (no intermediate
/// tree): `timestamp` in unix milliseconds, `line` the body as text, `meta` the headers and the
/// message key.
pub struct LogLine<'a> {
    settings: &'a LogLineSettings,
    message: &'a Message,
    now_ms: i64,
}

/// The headers and the key as one JSON object.
struct Meta<'a>(&'a Message);

impl Serialize for Meta<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let message = self.0;
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in &message.headers {
            // The message key is `meta.key`; a header of that name would make it ambiguous.
            if name == "key" && message.key.is_some() {
                continue;
            }
            map.serialize_entry(name, value)?;
        }
        if let Some(key) = &message.key {
            map.serialize_entry("key", key)?;
        }
        map.end()
    }
}

impl Serialize for LogLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let message = self.message;
        let timestamp = message
            .timestamp
            .map_or(self.now_ms, |time| time.timestamp_millis());
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("timestamp", &timestamp)?;
        // The API takes text; a non-UTF-8 byte is replaced rather than the line refused.
        map.serialize_entry("line", &String::from_utf8_lossy(&message.body))?;
        map.serialize_entry("app", &self.settings.app)?;
        map.serialize_entry("level", &self.settings.level)?;
        map.serialize_entry("meta", &Meta(message))?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::DateTime;
    use serde_json::{Value, json};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

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
        let line: Value = serde_json::to_value(settings.line(&message, 7))?;
        assert_eq!(
            line,
            json!({"timestamp": 7, "line": "2 123 eni-1 \u{fffd}", "app": "vpc",
                "level": "DEBUG", "meta": {"dedupe_id": "e:1", "key": "logs/a.log"}})
        );
        message.timestamp = DateTime::from_timestamp_millis(1_418_530_010_500);
        let line: Value = serde_json::to_value(settings.line(&message, 7))?;
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
