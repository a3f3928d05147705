//! Oracle Cloud Infrastructure Object Storage events: CloudEvents 0.1 (`cloudEventsVersion`,
//! `eventType`, `eventID`) with the object under `data.resourceName` and the bucket under
//! `data.additionalDetails`; the same data also arrives in CloudEvents 1.0 envelopes.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::fields::Fields;
use super::{DecodeError, EventKind, ObjectEvent, Source, bare_etag};

const FORMAT: &str = "OCI Object Storage";

/// A CloudEvents 0.1 envelope as OCI Events delivers it.
pub(crate) fn decode(value: &Value) -> Result<Vec<ObjectEvent>, DecodeError> {
    let top = Fields::of(value, FORMAT, "")?;
    let event_type = top.non_empty("eventType")?;
    let data = top
        .get("data")
        .ok_or_else(|| top.bad("data", "an object"))?;
    let event = decode_data(
        data,
        event_type,
        top.opt_str("eventID")?,
        top.opt_time("eventTime")?,
    )?;
    Ok(vec![event])
}

pub(crate) fn decode_data(
    data: &Value,
    event_type: &str,
    id: Option<&str>,
    time: Option<DateTime<Utc>>,
) -> Result<ObjectEvent, DecodeError> {
    let kind = match event_type.rsplit('.').next() {
        Some("createobject" | "updateobject") => EventKind::Created,
        Some("deleteobject") => EventKind::Removed,
        _ => EventKind::Other,
    };
    let data = Fields::of(data, FORMAT, "data")?;
    let details = data.obj("additionalDetails", "data.additionalDetails")?;
    // Bucket events (`createbucket`, `updatebucket`, `deletebucket`) name the bucket as their
    // resource and concern no object: their key stays empty, never the bucket's name.
    let (bucket, key) = if event_type.ends_with("bucket") {
        let bucket = match details.opt_str("bucketName")? {
            Some(name) if !name.is_empty() => name,
            _ => data.non_empty("resourceName")?,
        };
        (bucket, "")
    } else {
        (
            details.non_empty("bucketName")?,
            data.non_empty("resourceName")?,
        )
    };
    let mut event = ObjectEvent::new(kind, Source::Oci, bucket, key.to_owned(), event_type);
    // A bucket's own eTag says nothing about any object.
    if !key.is_empty() {
        event.etag = bare_etag(details.opt_str("eTag")?);
    }
    event.region = details.opt_str("namespace")?.map(str::to_owned);
    event.id = id.map(str::to_owned);
    event.time = time;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn bucket_events_concern_no_object() -> TestResult {
        let deleted = serde_json::json!({
            "eventType": "com.oraclecloud.objectstorage.deletebucket",
            "cloudEventsVersion": "0.1",
            "eventID": "e1",
            "data": {
                "resourceName": "old-photos",
                "additionalDetails": {"namespace": "ns", "eTag": "bucket-etag"}
            }
        });
        let events = decode(&deleted)?;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Other);
        assert_eq!(events[0].bucket, "old-photos");
        assert_eq!(events[0].key, "");
        assert_eq!(events[0].etag, None);
        Ok(())
    }
}
