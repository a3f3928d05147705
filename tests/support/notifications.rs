//! Bucket notifications built in tests, decoded by the same code that decodes real ones.

use bucketfn::ObjectEvent;
use serde_json::{Value, json};

use super::BoxError;

/// The one event a notification decodes to.
pub fn only_event(notification: Value) -> Result<ObjectEvent, BoxError> {
    let events = bucketfn::event::decode_value(notification)?.into_events()?;
    events.into_iter().next().ok_or_else(|| "no event".into())
}

/// An AWS S3 `ObjectCreated:Put` notification for `encoded_key`, the key as S3 sends it
/// (form-encoded).
pub fn s3_created(bucket: &str, encoded_key: &str) -> Result<ObjectEvent, BoxError> {
    only_event(
        json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put", "eventTime": "2024-11-05T14:22:31.493Z",
        "s3": {"bucket": {"name": bucket}, "object": {"key": encoded_key, "size": 1}}}]}),
    )
}
