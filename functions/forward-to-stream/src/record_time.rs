//! A record's own time (`CONTENT_TIME_FIELD`): a column of the header line of line records
//! (AWS VPC flow logs' `start`), or a top-level field of JSON records (IBM flow logs'
//! `start_time`), as RFC 3339, unix seconds or unix milliseconds.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};

/// Longer text is no time in any of the forms taken (RFC 3339 with nanoseconds and an offset
/// is 35 bytes), and is refused before it is parsed.
const MAX_TIME_TEXT: usize = 64;

/// Unix times below this are seconds, from it on milliseconds: 10^11 seconds is the year 5138,
/// and 10^11 milliseconds is March 1973, so neither reading of a log record's time is mistaken
/// for the other.
const MILLISECONDS_FROM: f64 = 1e11;
/// Milliseconds end here (the year 5138 again): larger numbers are micro- or nanoseconds, or no
/// time at all.
const MILLISECONDS_UNTIL: f64 = 1e14;

/// Where one object's records keep their time.
#[derive(Debug)]
pub enum RecordTime {
    /// No `CONTENT_TIME_FIELD`: records are stamped when sent.
    Off,
    /// The named top-level field of each JSON record.
    Field(String),
    /// The column of the header line (the object's first record) with this name; `column` is
    /// known once the header was seen, `None` after it if the header has no such column.
    Column { name: String, column: Option<usize> },
}

impl RecordTime {
    pub fn new(field: Option<&str>, json: bool) -> Self {
        match field {
            None => Self::Off,
            Some(name) if json => Self::Field(name.to_owned()),
            Some(name) => Self::Column {
                name: name.to_owned(),
                column: None,
            },
        }
    }

    /// Takes the object's first record, which names the columns of line records.
    pub fn header(&mut self, record: &[u8]) {
        if let Self::Column { name, column } = self {
            *column = fields(record).position(|field| field == name.as_bytes());
        }
    }

    /// The time of `record`, if it has a readable one.
    pub fn of(&self, record: &[u8]) -> Option<DateTime<Utc>> {
        match self {
            Self::Off => None,
            Self::Field(name) => in_json(record, name),
            Self::Column { column, .. } => {
                let text = fields(record).nth((*column)?)?;
                parse(std::str::from_utf8(text).ok()?)
            }
        }
    }
}

/// The space-separated fields of a line, without allocating.
fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(u8::is_ascii_whitespace)
        .filter(|field| !field.is_empty())
}

/// RFC 3339 (`2024-01-01T00:00:00Z`, any offset, any fraction), or unix seconds or
/// milliseconds, whole or decimal.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    if text.len() > MAX_TIME_TEXT {
        return None;
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if !whole.is_empty() && digits(whole) && digits(fraction) {
        from_unix(text.parse().ok()?)
    } else {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|time| time.to_utc())
    }
}

/// Unix seconds or milliseconds, told apart by magnitude ([`MILLISECONDS_FROM`]); negative
/// times and larger units are no time.
fn from_unix(value: f64) -> Option<DateTime<Utc>> {
    // NaN is in no range.
    if !(0.0..MILLISECONDS_UNTIL).contains(&value) {
        return None;
    }
    let milliseconds = if value < MILLISECONDS_FROM {
        value * 1000.0
    } else {
        value
    };
    // Under 2^53 after the range check: the conversion is exact to the millisecond.
    DateTime::from_timestamp_millis(milliseconds.round() as i64)
}

/// The time in the top-level field `name` of the JSON record, read up to that field only:
/// other fields are skipped without being held, and a record that is no object, lacks the
/// field or holds no time there has none.
fn in_json(record: &[u8], name: &str) -> Option<DateTime<Utc>> {
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_slice(record);
    // The search ends with an error once the field is read, whatever follows it.
    let _ = deserializer.deserialize_map(FieldSearch {
        name,
        found: &mut found,
    });
    found.flatten()
}

/// Looks through an object's fields for one name; `found` is set once it is read (to `None`
/// if its value is no time).
struct FieldSearch<'a> {
    name: &'a str,
    found: &'a mut Option<Option<DateTime<Utc>>>,
}

impl<'de> Visitor<'de> for FieldSearch<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object with a `{}` field", self.name)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(matches) = map.next_key_seed(IsName(self.name))? {
            if matches {
                *self.found = Some(map.next_value_seed(TimeValue)?);
                return Err(A::Error::custom("found"));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Whether a key is the name looked for, compared in place.
struct IsName<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for IsName<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for IsName<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// A field's value as a time: text in any form [`parse`] takes, or a number of unix seconds or
/// milliseconds. Other values are no time.
struct TimeValue;

impl<'de> DeserializeSeed<'de> for TimeValue {
    type Value = Option<DateTime<Utc>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TimeValue {
    type Value = Option<DateTime<Utc>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a time")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(parse(text))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
        // Exact for every value from_unix takes (all below 2^53).
        Ok(from_unix(value as f64))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(from_unix(value as f64))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(from_unix(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(ms)
    }

    #[test]
    fn rfc3339_seconds_and_milliseconds_are_times() {
        for (text, ms) in [
            ("2024-01-01T00:00:01Z", 1_704_067_201_000),
            ("2024-01-01T01:00:01.25+01:00", 1_704_067_201_250),
            ("2024-01-01t00:00:01.123456789z", 1_704_067_201_123),
            ("1418530010", 1_418_530_010_000),
            ("1418530010.5", 1_418_530_010_500),
            ("1418530010500", 1_418_530_010_500),
            ("1418530010500.4", 1_418_530_010_500),
            // The smallest milliseconds and the largest seconds either side of the rule.
            ("100000000000", 100_000_000_000),
            ("99999999999", 99_999_999_999_000),
            ("0", 0),
        ] {
            // To the millisecond, as sinks take them.
            let parsed = parse(text).map(|time| time.timestamp_millis());
            assert_eq!(parsed, Some(ms), "{text}");
        }
    }

    #[test]
    fn anything_else_is_no_time() {
        let digits = "9".repeat(100);
        // Valid RFC 3339, but longer than any time needs: refused before parsing.
        let long = format!("2024-01-01T00:00:00.{}Z", "0".repeat(60));
        for text in [
            "",
            "start",
            "-",
            "NODATA",
            "-1418530010",
            ".5",
            "1418530010.5.1",
            "1e9",
            "NaN",
            "inf",
            "1418530010500000",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "2024-01-01 00:00:00",
            digits.as_str(),
            long.as_str(),
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    const HEADER: &[u8] = b"version account-id interface-id srcaddr dstaddr srcport dstport \
        protocol packets bytes start end action log-status";

    #[test]
    fn line_records_take_the_column_the_header_names() {
        let mut time = RecordTime::new(Some("start"), false);
        time.header(HEADER);
        // The header's own value in that column is its name: no time.
        assert_eq!(time.of(HEADER), None);
        let record = b"2 123456789010 eni-1 10.0.1.5 10.0.0.220 39812 80 6 20 4249 1418530010 1418530070 ACCEPT OK";
        assert_eq!(time.of(record), at(1_418_530_010_000));
        let mut end = RecordTime::new(Some("end"), false);
        end.header(HEADER);
        assert_eq!(end.of(record), at(1_418_530_070_000));
        // Too short, a dash, a record in other columns: forwarded without a time.
        for record in [
            &b"2 123456789010 eni-1"[..],
            b"2 123456789010 eni-1 - - - - - - - - - - NODATA",
            b"\xff\xfe 1 2 3 4 5 6 7 8 9 \xff 11",
        ] {
            assert_eq!(time.of(record), None);
        }
    }

    #[test]
    fn a_header_without_the_column_gives_no_times() {
        let mut time = RecordTime::new(Some("begin"), false);
        time.header(HEADER);
        assert_eq!(
            time.of(b"2 1 eni 1 2 3 4 6 1 1 1418530010 1418530070 ACCEPT OK"),
            None
        );
        let mut off = RecordTime::new(None, false);
        off.header(HEADER);
        assert_eq!(
            off.of(b"2 1 eni 1 2 3 4 6 1 1 1418530010 1418530070 ACCEPT OK"),
            None
        );
    }

    #[test]
    fn json_records_take_the_top_level_field() {
        let time = RecordTime::new(Some("start_time"), true);
        for (record, expected) in [
            (
                &br#"{"initiator_ip":"10.0.0.1","start_time":"2024-01-01T00:00:01Z","x":[1]}"#[..],
                at(1_704_067_201_000),
            ),
            (br#"{"start_time": 1418530010}"#, at(1_418_530_010_000)),
            (br#"{"start_time": 1418530010500}"#, at(1_418_530_010_500)),
            (br#"{"start_time": 1418530010.25}"#, at(1_418_530_010_250)),
            (br#"{"start_time": "1418530010"}"#, at(1_418_530_010_000)),
            // An escaped key is still the name.
            (br#"{"start\u005ftime": 1418530010}"#, at(1_418_530_010_000)),
            // The first of two wins, and what follows the field is never read.
            (
                br#"{"start_time": 1418530010, "start_time": 1, "rest": tru"#,
                at(1_418_530_010_000),
            ),
            // Nested fields of that name are not the record's.
            (br#"{"inner": {"start_time": 1418530010}}"#, None),
            (br#"{"start_time": null}"#, None),
            (br#"{"start_time": {"s": 1}}"#, None),
            (br#"{"start_time": -5}"#, None),
            (br#"{"start_time": "yesterday"}"#, None),
            (br#"[1418530010]"#, None),
            (br#""start_time""#, None),
            (br#"{"start_time""#, None),
            (b"\xff{", None),
            (b"", None),
        ] {
            assert_eq!(
                time.of(record),
                expected,
                "{}",
                String::from_utf8_lossy(record)
            );
        }
    }
}
