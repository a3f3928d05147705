//! Azure Blob Storage events, in the Event Grid schema and the CloudEvents 1.0 schema: the
//! container is the bucket and the blob path comes from `subject`
//! (`/blobServices/default/containers/C/blobs/PATH`). Decoded only; no Azure store exists.

use serde_json::Value;

use super::cloudevent::CloudEvent;
use super::fields::Fields;
use super::{DecodeError, EventKind, ObjectEvent, Source, bare_etag};

const FORMAT: &str = "Azure Blob Storage";

/// One element of an Event Grid array.
pub(crate) fn decode_event_grid(value: &Value) -> Result<Vec<ObjectEvent>, DecodeError> {
    let top = Fields::of(value, FORMAT, "")?;
    let event_type = top.non_empty("eventType")?;
    let subject = top.non_empty("subject")?;
    let mut event = blob_event(event_type, subject, top.get("data"))?;
    event.id = top.opt_str("id")?.map(str::to_owned);
    event.time = top.opt_time("eventTime")?;
    Ok(vec![event])
}

pub(crate) fn decode_cloudevent(ce: &CloudEvent) -> Result<ObjectEvent, DecodeError> {
    let subject = ce.subject.as_deref().ok_or_else(|| DecodeError::BadField {
        format: FORMAT,
        path: "subject".to_owned(),
        found: "missing".to_owned(),
        expected: "/blobServices/default/containers/CONTAINER/blobs/PATH",
    })?;
    let mut event = blob_event(&ce.ty, subject, Some(&ce.data))?;
    event.id = Some(ce.id.clone());
    event.time = ce.time;
    Ok(event)
}

fn blob_event(
    event_type: &str,
    subject: &str,
    data: Option<&Value>,
) -> Result<ObjectEvent, DecodeError> {
    let (container, blob) = subject
        .strip_prefix("/blobServices/default/containers/")
        .and_then(|rest| rest.split_once("/blobs/"))
        .filter(|(container, blob)| !container.is_empty() && !blob.is_empty())
        .ok_or_else(|| DecodeError::BadField {
            format: FORMAT,
            path: "subject".to_owned(),
            found: format!("{subject:?}"),
            expected: "/blobServices/default/containers/CONTAINER/blobs/PATH",
        })?;
    let kind = match event_type {
        "Microsoft.Storage.BlobCreated" => EventKind::Created,
        "Microsoft.Storage.BlobDeleted" => EventKind::Removed,
        _ => EventKind::Other,
    };
    let mut event = ObjectEvent::new(kind, Source::Azure, container, blob.to_owned(), event_type);
    if let Some(data) = data.filter(|d| d.is_object()) {
        let data = Fields::of(data, FORMAT, "data")?;
        event.size = data.opt_u64("contentLength")?;
        event.etag = bare_etag(data.opt_str("eTag")?);
        event.sequencer = data.opt_str("sequencer")?.map(str::to_owned);
    }
    Ok(event)
}
