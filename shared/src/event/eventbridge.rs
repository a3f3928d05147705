//! Amazon EventBridge events: S3 object events (`source: aws.s3`) and scheduled rules
//! (`Scheduled Event`), which ask for a sweep.

use serde_json::Value;

use super::fields::Fields;
use super::keys::KeyEncoding;
use super::{DecodeError, EventKind, ObjectEvent, Source, bare_etag};

const FORMAT: &str = "EventBridge";

pub(crate) fn decode(value: &Value) -> Result<Vec<ObjectEvent>, DecodeError> {
    let top = Fields::of(value, FORMAT, "")?;
    let detail_type = top.str("detail-type")?;
    let source = top.str("source")?;
    let id = top.opt_str("id")?;
    let time = top.opt_time("time")?;
    let region = top.opt_str("region")?.map(str::to_owned);

    if detail_type == "Scheduled Event" {
        let mut event = ObjectEvent::new(
            EventKind::Sweep,
            Source::Schedule,
            "",
            String::new(),
            detail_type,
        );
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
