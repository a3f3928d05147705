//! Amazon EventBridge events: S3 object events (`source: aws.s3`) and scheduled rules
//! (`Scheduled Event`), which ask for a sweep: of the function's configured bucket, or of what
//! their `detail` names, which is how each worker of a Lambda fan-out gets its share.

use serde_json::Value;

use super::fields::Fields;
use super::keys::KeyEncoding;
use super::{DecodeError, EventKind, ObjectEvent, Source, SweepRequest, bare_etag};
use crate::event::Shard;

const FORMAT: &str = "EventBridge";

pub(crate) fn decode(value: &Value) -> Result<Vec<ObjectEvent>, DecodeError> {
    let top = Fields::of(value, FORMAT, "")?;
    let detail_type = top.str("detail-type")?;
    let source = top.str("source")?;
    let id = top.opt_str("id")?;
    let time = top.opt_time("time")?;
    let region = top.opt_str("region")?.map(str::to_owned);

    if detail_type == "Scheduled Event" {
        let asked = SweepDetail::read(value.get("detail"))?;
        let mut event = ObjectEvent::new(
            EventKind::Sweep,
            Source::Schedule,
            &asked.bucket,
            asked.prefix,
            detail_type,
        );
        event.sweep = asked.request;
        event.id = id.map(str::to_owned);
        event.time = time;
        event.region = region;
        return Ok(vec![event]);
    }
    if source != "aws.s3" {
        return Err(top.bad(
            "source",
            "\"aws.s3\" (S3 object events) or a \"Scheduled Event\"",
        ));
    }

    let detail = top.obj("detail", "detail")?;
    let bucket = detail.obj("bucket", "detail.bucket")?.non_empty("name")?;
    let object = detail.obj("object", "detail.object")?;
    let raw_key = object.non_empty("key")?;
    let key = KEYS.decode_in(FORMAT, raw_key)?;
    let kind = match detail_type {
        "Object Created" => EventKind::Created,
        "Object Deleted" => EventKind::Removed,
        _ => EventKind::Other,
    };
    let mut event = ObjectEvent::new(kind, Source::AwsS3, bucket, key, detail_type);
    event.size = object.opt_u64("size")?;
    event.etag = bare_etag(object.opt_str("etag")?);
    event.version_id = object.opt_str("version-id")?.map(str::to_owned);
    event.sequencer = object.opt_str("sequencer")?.map(str::to_owned);
    event.time = time;
    event.id = id.map(str::to_owned);
    event.principal = detail.opt_str("requester")?.map(str::to_owned);
    event.region = region;
    Ok(vec![event])
}

/// EventBridge S3 events escape keys like S3 notifications do.
const KEYS: KeyEncoding = KeyEncoding::Form;

/// What a Scheduled Event's `detail` asks of its sweep. Every field is optional:
/// `{"bucket": "photos", "prefix": "2024/", "shard": "1/4", "latest": 100}`, where `shard` may
/// also be `{"index": 1, "count": 4}` (what a Step Functions Map builds from its item index).
/// EventBridge rules send `{}`, and EventBridge Scheduler may send the detail as a JSON string.
#[derive(Debug, Default)]
struct SweepDetail {
    /// Empty: the function's configured bucket.
    bucket: String,
    /// Empty: the function's configured prefix.
    prefix: String,
    request: SweepRequest,
}

const DETAIL_FIELDS: [&str; 4] = ["bucket", "prefix", "shard", "latest"];
const EXPECTED_DETAIL: &str = "an object (or a JSON object in a string) with any of bucket, \
prefix, shard and latest";
const EXPECTED_SHARD: &str =
    "\"INDEX/COUNT\" or {\"index\": INDEX, \"count\": COUNT}, INDEX below COUNT (e.g. \"1/4\")";

impl SweepDetail {
    fn read(detail: Option<&Value>) -> Result<Self, DecodeError> {
        let parsed: Value;
        let detail = match detail {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::String(text)) if text.trim().is_empty() => return Ok(Self::default()),
            Some(Value::String(text)) => {
                parsed = serde_json::from_str(text)
                    .map_err(|_| DecodeError::field(FORMAT, "detail", detail, EXPECTED_DETAIL))?;
                &parsed
            }
            Some(other) => other,
        };
        let Value::Object(map) = detail else {
            return Err(DecodeError::field(
                FORMAT,
                "detail",
                Some(detail),
                EXPECTED_DETAIL,
            ));
        };
        let fields = Fields::of(detail, FORMAT, "detail")?;
        // A misspelt field would sweep everything, in every worker of a fan-out: refuse it.
        if let Some(unknown) = map.keys().find(|k| !DETAIL_FIELDS.contains(&k.as_str())) {
            return Err(fields.bad(
                unknown,
                "absent: a Scheduled Event's detail may name only bucket, prefix, shard and latest",
            ));
        }
        let latest = match fields.opt_u64("latest")? {
            None => None,
            Some(n) => Some(
                usize::try_from(n)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| fields.bad("latest", "a count of objects, at least 1"))?,
            ),
        };
        Ok(Self {
            bucket: fields.opt_str("bucket")?.unwrap_or_default().to_owned(),
            prefix: fields.opt_str("prefix")?.unwrap_or_default().to_owned(),
            request: SweepRequest {
                shard: shard(&fields)?,
                latest,
            },
        })
    }
}

fn shard(detail: &Fields<'_>) -> Result<Option<Shard>, DecodeError> {
    let (index, count) = match detail.get("shard") {
        None => return Ok(None),
        Some(Value::String(text)) => {
            return text
                .parse()
                .map(Some)
                .map_err(|_| detail.bad("shard", EXPECTED_SHARD));
        }
        Some(Value::Object(_)) => {
            let shard = detail.obj("shard", "detail.shard")?;
            let number = |name: &str| {
                shard
                    .opt_u64(name)?
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| shard.bad(name, "a whole number below 2^32"))
            };
            (number("index")?, number("count")?)
        }
        Some(_) => return Err(detail.bad("shard", EXPECTED_SHARD)),
    };
    Shard::new(index, count)
        .map(Some)
        .map_err(|_| DecodeError::BadField {
            format: FORMAT,
            path: detail.path_of("shard"),
            found: format!("{index}/{count}"),
            expected: EXPECTED_SHARD,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn scheduled(detail: Value) -> Value {
        json!({"version": "0", "id": "e-1", "detail-type": "Scheduled Event",
            "source": "aws.events", "time": "2024-11-06T02:00:00Z", "detail": detail})
    }

    fn sweep_of(detail: Value) -> Result<ObjectEvent, DecodeError> {
        let mut events = decode(&scheduled(detail))?;
        Ok(events.remove(0))
    }

    fn refusal(detail: Value) -> Result<String, Box<dyn std::error::Error>> {
        Ok(sweep_of(detail).err().ok_or("accepted")?.to_string())
    }

    #[test]
    fn an_empty_detail_sweeps_what_the_function_is_configured_for() -> TestResult {
        for detail in [json!({}), json!("{}"), json!(""), Value::Null] {
            let event = sweep_of(detail)?;
            assert_eq!(event.kind, EventKind::Sweep);
            assert_eq!((event.bucket.as_str(), event.key.as_str()), ("", ""));
            assert_eq!(event.sweep, SweepRequest::default());
        }
        Ok(())
    }

    #[test]
    fn a_fan_out_detail_names_bucket_prefix_and_shard() -> TestResult {
        let event = sweep_of(json!({"bucket": "photos", "prefix": "2024/", "shard": "1/4"}))?;
        assert_eq!(
            (event.bucket.as_str(), event.key.as_str()),
            ("photos", "2024/")
        );
        assert_eq!(event.sweep.shard, Some(Shard::new(1, 4)?));
        assert_eq!(event.id.as_deref(), Some("e-1"));
        Ok(())
    }

    #[test]
    fn a_step_functions_map_item_names_the_shard_as_numbers() -> TestResult {
        let event = sweep_of(json!({"shard": {"index": 3, "count": 4}, "latest": 50}))?;
        assert_eq!(event.sweep.shard, Some(Shard::new(3, 4)?));
        assert_eq!(event.sweep.latest, Some(50));
        // EventBridge Scheduler's string detail carries the same.
        let event = sweep_of(json!("{\"shard\": \"0/2\"}"))?;
        assert_eq!(event.sweep.shard, Some(Shard::new(0, 2)?));
        Ok(())
    }

    #[test]
    fn a_shard_that_is_none_is_refused_with_the_value() -> TestResult {
        for (shard, found) in [
            (json!("4/4"), "\"4/4\""),
            (json!("one of four"), "\"one of four\""),
            (json!({"index": 4, "count": 4}), "4/4"),
            (json!({"index": 0, "count": 0}), "0/0"),
            (json!(7), "7"),
        ] {
            let message = refusal(json!({ "shard": shard }))?;
            assert!(message.contains("`detail.shard` is "), "{message}");
            assert!(message.contains(found), "{found}: {message}");
            assert!(message.contains("INDEX/COUNT"), "{message}");
        }
        let message = refusal(json!({"shard": {"index": 1}}))?;
        assert!(
            message.contains("`detail.shard.count` is missing"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn a_misspelt_or_foreign_detail_is_refused_by_name() -> TestResult {
        let message = refusal(json!({"shards": "1/4"}))?;
        assert!(message.contains("`detail.shards` is \"1/4\""), "{message}");
        assert!(
            message.contains("only bucket, prefix, shard and latest"),
            "{message}"
        );
        let message = refusal(json!("not json"))?;
        assert!(message.contains("`detail` is \"not json\""), "{message}");
        let message = refusal(json!([1]))?;
        assert!(message.contains("`detail` is an array"), "{message}");
        let message = refusal(json!({"latest": 0}))?;
        assert!(message.contains("`detail.latest` is 0"), "{message}");
        Ok(())
    }
}
