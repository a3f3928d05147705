//! Google Cloud Storage: CloudEvents `google.cloud.storage.object.v1.*` (Eventarc) and the
//! legacy background-function format (`context` + `data`), both carrying a StorageObjectData.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::cloudevent::CloudEvent;
use super::fields::Fields;
use super::{DecodeError, EventKind, ObjectEvent, Source, bare_etag};

const FORMAT: &str = "Google Cloud Storage";

pub(crate) fn decode_cloudevent(ce: &CloudEvent) -> Result<ObjectEvent, DecodeError> {
    let kind = match ce.ty.rsplit('.').next() {
        Some("finalized") => EventKind::Created,
        Some("deleted") => EventKind::Removed,
        _ => EventKind::Other,
    };
    object_event(&ce.data, kind, &ce.ty, Some(&ce.id), ce.time)
}

/// `{"context": {"eventId", "timestamp", "eventType": "google.storage.object.finalize", ...},
/// "data": {...}}`.
pub(crate) fn decode_legacy(value: &Value) -> Result<Vec<ObjectEvent>, DecodeError> {
    let top = Fields::of(value, FORMAT, "")?;
    let context = top.obj("context", "context")?;
    let event_type = context.non_empty("eventType")?;
    let kind = match event_type {
        "google.storage.object.finalize" => EventKind::Created,
        "google.storage.object.delete" => EventKind::Removed,
        t if t.starts_with("google.storage.object.") => EventKind::Other,
        _ => {
            return Err(context.bad("eventType", "a google.storage.object.* event type"));
        }
    };
    let data = top
        .get("data")
        .ok_or_else(|| top.bad("data", "an object"))?;
    let event = object_event(
        data,
        kind,
        event_type,
        context.opt_str("eventId")?,
        context.opt_time("timestamp")?,
    )?;
    Ok(vec![event])
}

fn object_event(
    data: &Value,
    kind: EventKind,
    event_name: &str,
    id: Option<&str>,
    time: Option<DateTime<Utc>>,
) -> Result<ObjectEvent, DecodeError> {
    let object = Fields::of(data, FORMAT, "data")?;
    let bucket = object.non_empty("bucket")?;
    let key = object.non_empty("name")?;
    let mut event = ObjectEvent::new(kind, Source::Gcs, bucket, key.to_owned(), event_name)
        .with_metadata(object.string_map("metadata"));
    event.size = object.opt_u64("size")?;
    event.etag = bare_etag(object.opt_str("etag")?);
    event.version_id = object.opt_str("generation")?.map(str::to_owned);
    event.time = match time {
        Some(t) => Some(t),
        None => object.opt_time("updated")?,
    };
    event.id = id.map(str::to_owned);
    Ok(event)
}
