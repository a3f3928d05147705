//! The one event model: every provider payload, envelope and CloudEvent is decoded into
//! [`ObjectEvent`]s grouped in [`Record`]s, the unit the platform wants an outcome for.

mod azure;
mod cloudevent;
mod eventbridge;
mod fields;
mod gcs;
mod ibm_cos;
mod keys;
mod oci;
mod s3_batch;
mod s3_records;
mod shard;
mod sqs_sns;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

pub use cloudevent::{CloudEventType, cloudevent_types};
pub use keys::KeyDecodeError;
pub use s3_batch::S3BatchJob;
pub use shard::{Shard, ShardError};

use fields::describe;

/// What happened to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Created,
    Removed,
    /// A schedule asking the function to catch up on a whole bucket.
    Sweep,
    /// Anything else a provider reports (tagging, ACL, restore, replication, ...).
    Other,
}

/// Where the event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    AwsS3,
    Minio,
    Ceph,
    /// meemoo's S3-compatible gateway, whose records say `"eventSource": "viaa:s3"`.
    Viaa,
    IbmCos,
    Oci,
    Gcs,
    Azure,
    Schedule,
    S3Batch,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwsS3 => "aws-s3",
            Self::Minio => "minio",
            Self::Ceph => "ceph",
            Self::Viaa => "viaa",
            Self::IbmCos => "ibm-cos",
            Self::Oci => "oci",
            Self::Gcs => "gcs",
            Self::Azure => "azure",
            Self::Schedule => "schedule",
            Self::S3Batch => "s3-batch",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened to one object (or, for [`EventKind::Sweep`], to no object in
/// particular: bucket and key are then empty).
///
/// Serializes to the `decode` command's output: exactly the fields a user compares across
/// providers; metadata, principal and region stay out of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectEvent {
    pub kind: EventKind,
    pub source: Source,
    #[serde(serialize_with = "empty_as_null")]
    pub bucket: String,
    /// The object key, decoded exactly once by the source's rules.
    #[serde(serialize_with = "empty_as_null")]
    pub key: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    /// Orders events of one key (hex, compare after left-padding); absent for most non-AWS sources.
    pub sequencer: Option<String>,
    pub time: Option<DateTime<Utc>>,
    /// The provider's own name for what happened (`ObjectCreated:Put`, `Object:Write`, ...).
    pub event_name: String,
    /// The id the runtime reports this event's outcome under (SQS messageId, S3 Batch taskId,
    /// CloudEvent id).
    pub id: Option<String>,
    /// User metadata the notification carried, keys lower-cased without `x-amz-meta-`.
    #[serde(skip)]
    pub metadata: BTreeMap<String, String>,
    /// Who caused the event, where the provider says.
    #[serde(skip)]
    pub principal: Option<String>,
    /// Region or namespace of the bucket, where the provider says.
    #[serde(skip)]
    pub region: Option<String>,
    /// The storage domain the notification names (`s3.domain.name`, sent by gateways that
    /// serve several domains, such as meemoo's).
    #[serde(skip)]
    pub domain: Option<String>,
    /// Bucket metadata the notification carried (`s3.bucket.metadata`, e.g. the tenant of a
    /// multi-tenant gateway), names lower-cased.
    #[serde(skip)]
    pub bucket_metadata: BTreeMap<String, String>,
    /// What a [`EventKind::Sweep`] asks for beyond its bucket and prefix.
    #[serde(skip_serializing_if = "SweepRequest::is_plain")]
    pub sweep: SweepRequest,
    /// The correlation id of the message that carried this event, so what a handler sends on
    /// (a file-transfer message, a log line) can be traced back to it. Decoders leave it
    /// `None`: a notification body has no such field; a runtime that reads from a broker sets
    /// it from the delivery's properties on every event of that message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// The options of a sweep: which worker of a job array this run is, and whether only the
/// newest objects are wanted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// Only the `latest` most recently modified objects (seed 004's `--latest N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<usize>,
}

impl SweepRequest {
    fn is_plain(&self) -> bool {
        *self == Self::default()
    }
}

fn empty_as_null<S: Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
    if value.is_empty() {
        serializer.serialize_none()
    } else {
        serializer.serialize_str(value)
    }
}

impl ObjectEvent {
    /// What an operator asks for rather than what a store reports: a catch-up
    /// [`EventKind::Sweep`] over `bucket` below the prefix `key`, or one object to redo.
    pub fn requested(kind: EventKind, bucket: &str, key: String) -> Self {
        Self::new(kind, Source::Schedule, bucket, key, "requested")
    }

    /// An event with only the identifying fields set; decoders fill in the rest.
    pub(crate) fn new(
        kind: EventKind,
        source: Source,
        bucket: &str,
        key: String,
        event_name: &str,
    ) -> Self {
        Self {
            kind,
            source,
            bucket: bucket.to_owned(),
            key,
            size: None,
            etag: None,
            version_id: None,
            sequencer: None,
            time: None,
            event_name: event_name.to_owned(),
            id: None,
            metadata: BTreeMap::new(),
            principal: None,
            region: None,
            domain: None,
            bucket_metadata: BTreeMap::new(),
            sweep: SweepRequest::default(),
            correlation_id: None,
        }
    }

    pub(crate) fn with_metadata(
        mut self,
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        for (name, value) in pairs {
            let name = name.to_ascii_lowercase();
            let name = name.strip_prefix("x-amz-meta-").unwrap_or(&name).to_owned();
            self.metadata.insert(name, value);
        }
        self
    }
}

/// Etags arrive quoted by some providers (`"abc"`) and bare by others; compare them bare.
pub(crate) fn bare_etag(etag: Option<&str>) -> Option<String> {
    etag.map(|e| e.trim_matches('"').to_owned())
        .filter(|e| !e.is_empty())
}

/// How the platform wants outcomes reported.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope {
    /// One invocation / request: it succeeds or fails as a whole.
    Single,
    /// An SQS batch: failures are listed by messageId (`batchItemFailures`).
    SqsBatch,
    /// An S3 Batch Operations invocation: each task gets a result code.
    S3Batch(S3BatchJob),
}

/// The unit the platform wants an outcome for: an SQS message, an S3 Batch task, a
/// CloudEvent, or the whole payload. A record that could not be decoded keeps its error, so
/// that one bad record is reported without hiding the others.
#[derive(Debug)]
pub struct Record {
    pub id: Option<String>,
    pub events: Result<Vec<ObjectEvent>, DecodeError>,
}

/// A decoded payload.
#[derive(Debug)]
pub struct Delivery {
    pub envelope: Envelope,
    pub records: Vec<Record>,
}

impl Delivery {
    /// One record holding `events`, reported as a whole.
    pub(crate) fn single(id: Option<String>, events: Vec<ObjectEvent>) -> Self {
        Self {
            envelope: Envelope::Single,
            records: vec![Record {
                id,
                events: Ok(events),
            }],
        }
    }

    /// All events, or the first record's decode error (for `decode`, which shows one or the other).
    pub fn into_events(self) -> Result<Vec<ObjectEvent>, DecodeError> {
        let mut all = Vec::new();
        for record in self.records {
            let events = record.events.map_err(|e| match record.id {
                Some(id) => DecodeError::InRecord {
                    id,
                    source: Box::new(e),
                },
                None => e,
            })?;
            all.extend(events);
        }
        Ok(all)
    }
}

/// Why a payload is not a bucket event we understand. Always permanent: the same bytes will
/// not decode better next time.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "input is not valid JSON: {reason} (expected a bucket notification, an SQS/SNS/EventBridge envelope or a CloudEvent)"
    )]
    NotJson { reason: String },
    #[error("unrecognised event: found {found}; expected {expected}")]
    UnknownShape { found: String, expected: String },
    #[error("{format} event: `{path}` is {found}; expected {expected}")]
    BadField {
        format: &'static str,
        path: String,
        found: String,
        expected: &'static str,
    },
    #[error("{format} event: key {key:?} {problem}")]
    BadKey {
        format: &'static str,
        key: String,
        problem: KeyDecodeError,
    },
    #[error("record {id}: {source}")]
    InRecord {
        id: String,
        #[source]
        source: Box<DecodeError>,
    },
}

impl DecodeError {
    pub(crate) fn field(
        format: &'static str,
        path: &str,
        found: Option<&Value>,
        expected: &'static str,
    ) -> Self {
        Self::BadField {
            format,
            path: path.to_owned(),
            found: describe(found),
            expected,
        }
    }

    pub(crate) fn unknown(found: impl Into<String>, expected: impl Into<String>) -> Self {
        Self::UnknownShape {
            found: found.into(),
            expected: expected.into(),
        }
    }
}

/// What the top level of a payload may be, for the message when it is none of them.
const EXPECTED_TOP: &str = "an S3-style notification (`Records`), an SQS or SNS envelope, an \
EventBridge event, an S3 Batch Operations job, an s3:TestEvent, a CloudEvent (structured, or \
binary with ce-* headers), an OCI or GCS event, or Azure Event Grid events";

/// Decodes a payload as it arrived: body bytes plus the HTTP headers that came with it (empty
/// for Lambda and files). Binary-mode CloudEvents are recognised by their `ce-*` headers.
pub fn decode(body: &[u8], headers: &HeaderMap) -> Result<Delivery, DecodeError> {
    if let Some(ce) = cloudevent::from_binary_mode(headers, body)? {
        return cloudevent::decode(ce);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError::NotJson {
        reason: e.to_string(),
    })?;
    decode_value(value)
}

/// Decodes a payload that is already JSON (the Lambda runtime hands over a `Value`).
pub fn decode_value(value: Value) -> Result<Delivery, DecodeError> {
    match &value {
        Value::Array(items) => decode_array(items),
        Value::Object(map) if map.contains_key("specversion") => {
            cloudevent::decode(cloudevent::from_structured(&value)?)
        }
        Value::Object(map) if is_sqs_batch(map) => sqs_sns::decode_sqs_batch(&value),
        Value::Object(map) if map.contains_key("invocationSchemaVersion") => {
            s3_batch::decode(&value)
        }
        Value::Object(_) => Ok(Delivery::single(None, decode_notification(&value)?)),
        other => Err(DecodeError::unknown(describe(Some(other)), EXPECTED_TOP)),
    }
}

fn is_sqs_batch(map: &serde_json::Map<String, Value>) -> bool {
    map.get("Records")
        .and_then(|r| r.get(0))
        .and_then(|r| r.get("eventSource"))
        .and_then(Value::as_str)
        == Some("aws:sqs")
}

/// A JSON array is a batch of CloudEvents or Azure Event Grid events: each element is a record.
fn decode_array(items: &[Value]) -> Result<Delivery, DecodeError> {
    let mut records = Vec::with_capacity(items.len());
    for item in items {
        let id = item.get("id").and_then(Value::as_str).map(str::to_owned);
        let events = if item.get("specversion").is_some() {
            cloudevent::from_structured(item).and_then(cloudevent::decode_events)
        } else if item.get("eventType").is_some() && item.get("subject").is_some() {
            azure::decode_event_grid(item)
        } else {
            Err(DecodeError::unknown(
                format!("an array element that is {}", describe(Some(item))),
                "CloudEvents (with `specversion`) or Azure Event Grid events (with `eventType` and `subject`)",
            ))
        };
        records.push(Record { id, events });
    }
    Ok(Delivery {
        envelope: Envelope::Single,
        records,
    })
}

/// Decodes one notification that is not a batch envelope: what an SQS body or SNS message may
/// hold, and what arrives directly from S3, MinIO, Ceph, EventBridge, OCI or GCS.
pub(crate) fn decode_notification(value: &Value) -> Result<Vec<ObjectEvent>, DecodeError> {
    let Value::Object(map) = value else {
        return Err(DecodeError::unknown(describe(Some(value)), EXPECTED_TOP));
    };
    let has = |k: &str| map.contains_key(k);
    if has("Records") {
        let first_source = map
            .get("Records")
            .and_then(|r| r.get(0))
            .and_then(|r| r.get("EventSource"))
            .and_then(Value::as_str);
        if first_source == Some("aws:sns") {
            sqs_sns::decode_sns_records(value)
        } else {
            s3_records::decode(value)
        }
    } else if map.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        Ok(Vec::new())
    } else if has("detail-type") {
        eventbridge::decode(value)
    } else if map.get("Type").and_then(Value::as_str) == Some("Notification") && has("Message") {
        sqs_sns::decode_sns_message(value)
    } else if has("specversion") {
        cloudevent::from_structured(value).and_then(cloudevent::decode_events)
    } else if has("cloudEventsVersion") {
        oci::decode(value)
    } else if has("context") && has("data") {
        gcs::decode_legacy(value)
    } else if has("notification") && has("operation") {
        ibm_cos::decode_one(value, None).map(|e| vec![e])
    } else {
        let keys: Vec<&str> = map.keys().take(10).map(String::as_str).collect();
        Err(DecodeError::unknown(
            format!("an object with keys [{}]", keys.join(", ")),
            EXPECTED_TOP,
        ))
    }
}

/// Sets the reporting id on events that have none of their own.
fn with_id(mut events: Vec<ObjectEvent>, id: Option<&str>) -> Vec<ObjectEvent> {
    if let Some(id) = id {
        for event in &mut events {
            event.id = Some(id.to_owned());
        }
    }
    events
}

impl From<DecodeError> for crate::HandlerError {
    fn from(error: DecodeError) -> Self {
        Self::permanent(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn not_json_names_the_problem() -> TestResult {
        let err = decode(b"{\"Records\": [", &HeaderMap::new())
            .err()
            .ok_or("accepted")?;
        let msg = err.to_string();
        assert!(msg.starts_with("input is not valid JSON"), "{msg}");
        assert!(msg.contains("expected a bucket notification"), "{msg}");
        Ok(())
    }

    #[test]
    fn unknown_object_lists_its_keys() -> TestResult {
        let err = decode(br#"{"hello": "world"}"#, &HeaderMap::new())
            .err()
            .ok_or("accepted")?;
        let msg = err.to_string();
        assert!(msg.contains("keys [hello]"), "{msg}");
        assert!(msg.contains("expected an S3-style notification"), "{msg}");
        Ok(())
    }

    #[test]
    fn scalars_and_empty_input_are_rejected() {
        for body in [&b"42"[..], b"\"x\"", b"null", b""] {
            assert!(decode(body, &HeaderMap::new()).is_err(), "{body:?}");
        }
    }

    #[test]
    fn test_event_decodes_to_nothing() -> TestResult {
        let body = br#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-01-01T00:00:00.000Z","Bucket":"b","RequestId":"r","HostId":"h"}"#;
        let events = decode(body, &HeaderMap::new())?.into_events()?;
        assert!(events.is_empty());
        Ok(())
    }
}
