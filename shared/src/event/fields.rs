//! Typed reads of JSON fields whose errors name the format, the field path, what was found and
//! what was expected, so that a bad notification is diagnosable from the message alone.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};

use super::DecodeError;

/// A JSON object being read as part of one event format.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
    format: &'static str,
}

/// What a field's value looks like, for error messages; strings are quoted and shortened.
pub(crate) fn describe(value: Option<&Value>) -> String {
    match value {
        None => "missing".to_owned(),
        Some(Value::Null) => "null".to_owned(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => {
            let short: String = s.chars().take(60).collect();
            if short.len() < s.len() {
                format!("{short:?}...")
            } else {
                format!("{short:?}")
            }
        }
        Some(Value::Array(_)) => "an array".to_owned(),
        Some(Value::Object(map)) => {
            let keys: Vec<&str> = map.keys().take(8).map(String::as_str).collect();
            format!("an object with keys [{}]", keys.join(", "))
        }
    }
}

impl<'a> Fields<'a> {
    /// Reads `value` as the object at `path` of a `format` event.
    pub(crate) fn of(
        value: &'a Value,
        format: &'static str,
        path: &'a str,
    ) -> Result<Self, DecodeError> {
        match value {
            Value::Object(map) => Ok(Self { map, path, format }),
            other => Err(DecodeError::field(format, path, Some(other), "an object")),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The full path of a child field, for messages.
    pub(crate) fn path_of(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    pub(crate) fn bad(&self, name: &str, expected: &'static str) -> DecodeError {
        DecodeError::field(
            self.format,
            &self.path_of(name),
            self.map.get(name),
            expected,
        )
    }

    /// A required nested object; `path` is where it sits, used in later messages.
    pub(crate) fn obj(&self, name: &str, path: &'a str) -> Result<Fields<'a>, DecodeError> {
        match self.get(name) {
            Some(Value::Object(map)) => Ok(Fields {
                map,
                path,
                format: self.format,
            }),
            _ => Err(self.bad(name, "an object")),
        }
    }

    pub(crate) fn opt_obj(
        &self,
        name: &str,
        path: &'a str,
    ) -> Result<Option<Fields<'a>>, DecodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.obj(name, path).map(Some),
        }
    }

    pub(crate) fn str(&self, name: &str) -> Result<&'a str, DecodeError> {
        match self.get(name) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(self.bad(name, "a string")),
        }
    }

    /// A string that must be present and non-empty (bucket names, keys).
    pub(crate) fn non_empty(&self, name: &str) -> Result<&'a str, DecodeError> {
        match self.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            _ => Err(self.bad(name, "a non-empty string")),
        }
    }

    pub(crate) fn opt_str(&self, name: &str) -> Result<Option<&'a str>, DecodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.bad(name, "a string")),
        }
    }

    /// The first of several spellings that is present (`eTag` / `etag`).
    pub(crate) fn opt_str_any(&self, names: &[&str]) -> Result<Option<&'a str>, DecodeError> {
        for name in names {
            if let Some(s) = self.opt_str(name)? {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// A size: a JSON number or a string of digits (Ceph, GCS and IBM COS send strings).
    pub(crate) fn opt_u64(&self, name: &str) -> Result<Option<u64>, DecodeError> {
        let expected = "a non-negative integer (number or string of digits)";
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| self.bad(name, expected)),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .parse::<u64>()
                .map(Some)
                .map_err(|_| self.bad(name, expected)),
            Some(_) => Err(self.bad(name, expected)),
        }
    }

    pub(crate) fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, DecodeError> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(s) => parse_time(s)
                .map(Some)
                .ok_or_else(|| self.bad(name, "an RFC 3339 time")),
        }
    }

    pub(crate) fn array(&self, name: &str) -> Result<&'a [Value], DecodeError> {
        match self.get(name) {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(self.bad(name, "an array")),
        }
    }

    /// String values of a flat JSON object (user metadata maps); other values are skipped.
    pub(crate) fn string_map(&self, name: &str) -> Vec<(String, String)> {
        match self.get(name) {
            Some(Value::Object(map)) => map
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Parses the time spellings providers use: RFC 3339, and Ceph's `2021-02-19 02:03:08.330496Z`.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let naive = s.strip_suffix('Z').unwrap_or(s);
    NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn parses_rfc3339_and_ceph_times() -> TestResult {
        let aws = parse_time("2019-09-03T19:37:27.192Z").ok_or("aws time")?;
        assert_eq!(aws.to_rfc3339(), "2019-09-03T19:37:27.192+00:00");
        let ceph = parse_time("2021-02-19 02:03:08.330496Z").ok_or("ceph time")?;
        assert_eq!(ceph.timestamp_subsec_micros(), 330_496);
        assert!(parse_time("The time, in ISO-8601 format").is_none());
        Ok(())
    }

    #[test]
    fn size_placeholder_names_field_and_value() -> TestResult {
        let v = serde_json::json!({"size": "object-size"});
        let fields = Fields::of(&v, "AWS S3", "Records[0].s3.object")?;
        let err = fields.opt_u64("size").err().ok_or("placeholder accepted")?;
        let msg = err.to_string();
        assert!(msg.contains("Records[0].s3.object.size"), "{msg}");
        assert!(msg.contains("\"object-size\""), "{msg}");
        assert!(msg.contains("non-negative integer"), "{msg}");
        Ok(())
    }

    #[test]
    fn size_accepts_numbers_and_digit_strings() -> TestResult {
        let v = serde_json::json!({"a": 12, "b": "34", "c": null});
        let fields = Fields::of(&v, "test", "")?;
        assert_eq!(fields.opt_u64("a")?, Some(12));
        assert_eq!(fields.opt_u64("b")?, Some(34));
        assert_eq!(fields.opt_u64("c")?, None);
        assert_eq!(fields.opt_u64("d")?, None);
        Ok(())
    }
}
