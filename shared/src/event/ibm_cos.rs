//! IBM Cloud Object Storage events as IBM Code Engine delivers them: binary-mode CloudEvents of
//! type `com.ibm.cloud.cos.document.write` / `.delete` whose body names bucket, key and
//! operation, with the raw notification under `notification`.

use serde_json::Value;

use super::cloudevent::CloudEvent;
use super::fields::Fields;
use super::{DecodeError, EventKind, ObjectEvent, Source, bare_etag};

const FORMAT: &str = "IBM COS";

/// Decodes one event body; `ce` supplies the id, type and time when it came as a CloudEvent.
pub(crate) fn decode_one(
    data: &Value,
    ce: Option<&CloudEvent>,
) -> Result<ObjectEvent, DecodeError> {
    let body = Fields::of(data, FORMAT, "data")?;
    let notification = body.opt_obj("notification", "data.notification")?;
    let bucket = match body.opt_str("bucket")? {
        Some(bucket) => bucket,
        None => notification
            .ok_or_else(|| body.bad("bucket", "a non-empty string"))?
            .non_empty("bucket_name")?,
    };
    let key = match body.opt_str("key")? {
        Some(key) => key,
        None => notification
            .ok_or_else(|| body.bad("key", "a non-empty string"))?
            .non_empty("object_name")?,
    };
    let operation = match body.opt_str("operation")? {
        Some(op) => op.to_owned(),
        None => notification
            .map(|n| n.opt_str("event_type"))
            .transpose()?
            .flatten()
            .map(str::to_owned)
            .or_else(|| ce.map(|ce| ce.ty.clone()))
            .ok_or_else(|| body.bad("operation", "\"Object:Write\" or \"Object:Delete\""))?,
    };
    let kind = match operation.as_str() {
        "Object:Write" | "com.ibm.cloud.cos.document.write" => EventKind::Created,
        "Object:Delete" | "com.ibm.cloud.cos.document.delete" => EventKind::Removed,
        _ => EventKind::Other,
    };
    let mut event = ObjectEvent::new(kind, Source::IbmCos, bucket, key.to_owned(), &operation);
    if let Some(n) = notification {
        event.size = n.opt_u64("object_length")?;
        event.etag = bare_etag(n.opt_str("object_etag")?);
        event.time = n.opt_time("request_time")?;
        event.version_id = n.opt_str("object_version")?.map(str::to_owned);
    }
    if let Some(ce) = ce {
        event.id = Some(ce.id.clone());
        event.time = event.time.or(ce.time);
    }
    Ok(event)
}
