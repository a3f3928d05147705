//! CloudEvents in binary mode (`ce-*` headers, body = data) and structured mode (one JSON
//! document), dispatched by `type` to the provider decoders.

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::Value;

use super::fields::{Fields, parse_time};
use super::{
    DecodeError, Delivery, EventKind, ObjectEvent, Source, azure, decode_notification, gcs,
    ibm_cos, oci, s3_records, with_id,
};

const FORMAT: &str = "CloudEvent";

/// The context attributes decoders use, plus the data.
#[derive(Debug)]
pub(crate) struct CloudEvent {
    pub(crate) ty: String,
    pub(crate) id: String,
    pub(crate) subject: Option<String>,
    pub(crate) time: Option<DateTime<Utc>>,
    pub(crate) data: Value,
}

/// A binary-mode CloudEvent, when the headers say so (`ce-specversion`; header names are
/// case-insensitive).
pub(crate) fn from_binary_mode(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<CloudEvent>, DecodeError> {
    if !headers.contains_key("ce-specversion") {
        return Ok(None);
    }
    let header = |name: &str| -> Option<String> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .filter(|v| !v.is_empty())
    };
    let required = |name: &'static str| {
        header(name).ok_or_else(|| DecodeError::BadField {
            format: "binary-mode CloudEvent",
            path: format!("{name} header"),
            found: "missing".to_owned(),
            expected: "a non-empty value",
        })
    };
    let time = match header("ce-time") {
        None => None,
        Some(t) => Some(parse_time(&t).ok_or_else(|| DecodeError::BadField {
            format: "binary-mode CloudEvent",
            path: "ce-time header".to_owned(),
            found: format!("{t:?}"),
            expected: "an RFC 3339 time",
        })?),
    };
    let ty = required("ce-type")?;
    let id = required("ce-id")?;
    required("ce-source")?;
    Ok(Some(CloudEvent {
        data: binary_data(header("content-type").as_deref(), body, &ty)?,
        ty,
        id,
        subject: header("ce-subject"),
        time,
    }))
}

/// The body of a binary-mode event: JSON when the content type says so (or says nothing and
/// the body parses), text otherwise (PingSource sends whatever its spec holds).
fn binary_data(content_type: Option<&str>, body: &[u8], ty: &str) -> Result<Value, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    let media_type =
        content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_ascii_lowercase());
    let declared_json = media_type
        .as_deref()
        .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
    match serde_json::from_slice(body) {
        Ok(value) => Ok(value),
        Err(e) if declared_json => Err(DecodeError::NotJson {
            reason: format!("data of binary-mode CloudEvent {ty:?}: {e}"),
        }),
        Err(_) => Ok(Value::String(String::from_utf8_lossy(body).into_owned())),
    }
}

/// A structured-mode CloudEvent (`application/cloudevents+json`).
pub(crate) fn from_structured(value: &Value) -> Result<CloudEvent, DecodeError> {
    let fields = Fields::of(value, FORMAT, "")?;
    fields.non_empty("specversion")?;
    fields.non_empty("source")?;
    if fields.has("data_base64") {
        return Err(fields.bad("data_base64", "JSON `data` (bucket events are JSON)"));
    }
    Ok(CloudEvent {
        ty: fields.non_empty("type")?.to_owned(),
        id: fields.non_empty("id")?.to_owned(),
        subject: fields.opt_str("subject")?.map(str::to_owned),
        time: fields.opt_time("time")?,
        data: value.get("data").cloned().unwrap_or(Value::Null),
    })
}

pub(crate) fn decode(ce: CloudEvent) -> Result<Delivery, DecodeError> {
    let id = ce.id.clone();
    Ok(Delivery::single(Some(id), decode_events(ce)?))
}

const KNOWN_TYPES: &str = "com.amazonaws.s3.*, com.ibm.cloud.cos.document.write|delete, \
com.oraclecloud.objectstorage.*, google.cloud.storage.object.v1.*, Microsoft.Storage.Blob*, \
dev.knative.sources.ping, or any type whose data is a bucket notification";

/// A CloudEvent type the decoder reads by name: this type, or every type that starts so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudEventType {
    Exact(&'static str),
    Prefix(&'static str),
}

impl CloudEventType {
    fn matches(self, ty: &str) -> bool {
        match self {
            Self::Exact(name) => ty == name,
            Self::Prefix(start) => ty.starts_with(start),
        }
    }
}

/// How the data of a type in [`BY_TYPE`] is read.
#[derive(Debug, Clone, Copy)]
enum Reader {
    AwsS3,
    IbmCos,
    Oci,
    Gcs,
    Azure,
    Ping,
}

/// The types the decoder reads by name, tried in this order; any other type decodes only if
/// its data is a bucket notification. One table for the decoder and for what the binaries
/// list ([`cloudevent_types`], `describe`), so that the list cannot promise another set.
const BY_TYPE: [(CloudEventType, Reader); 6] = [
    (CloudEventType::Prefix("com.amazonaws.s3."), Reader::AwsS3),
    (CloudEventType::Prefix("com.ibm.cloud.cos."), Reader::IbmCos),
    (
        CloudEventType::Prefix("com.oraclecloud.objectstorage."),
        Reader::Oci,
    ),
    (
        CloudEventType::Prefix("google.cloud.storage.object."),
        Reader::Gcs,
    ),
    (CloudEventType::Prefix("Microsoft.Storage."), Reader::Azure),
    (
        CloudEventType::Exact("dev.knative.sources.ping"),
        Reader::Ping,
    ),
];

/// The CloudEvent types the decoder reads by name (the table `BY_TYPE` that decoding reads too).
pub fn cloudevent_types() -> impl Iterator<Item = CloudEventType> {
    BY_TYPE.iter().map(|(ty, _)| *ty)
}

pub(crate) fn decode_events(ce: CloudEvent) -> Result<Vec<ObjectEvent>, DecodeError> {
    let ty = ce.ty.as_str();
    let reader = BY_TYPE
        .iter()
        .find(|(known, _)| known.matches(ty))
        .map(|(_, reader)| *reader);
    let mut events = match reader {
        Some(Reader::AwsS3) if ce.data.get("Records").is_some() => decode_notification(&ce.data)?,
        Some(Reader::AwsS3) => vec![s3_records::decode_aws_record(&ce.data, "data")?],
        Some(Reader::IbmCos) => vec![ibm_cos::decode_one(&ce.data, Some(&ce))?],
        Some(Reader::Oci) => vec![oci::decode_data(&ce.data, ty, Some(&ce.id), ce.time)?],
        Some(Reader::Gcs) => vec![gcs::decode_cloudevent(&ce)?],
        Some(Reader::Azure) => vec![azure::decode_cloudevent(&ce)?],
        Some(Reader::Ping) => {
            let mut event =
                ObjectEvent::new(EventKind::Sweep, Source::Schedule, "", String::new(), ty);
            event.time = ce.time;
            vec![event]
        }
        // Bridges (Knative sources, webhooks relayed by hand) often wrap a provider's own
        // notification under a type of their choosing; its shape still says what it is.
        None => decode_notification(&ce.data).map_err(|inner| {
            DecodeError::unknown(
                format!("CloudEvent type {ty:?} whose data is not a bucket notification ({inner})"),
                KNOWN_TYPES,
            )
        })?,
    };
    for event in &mut events {
        if event.time.is_none() {
            event.time = ce.time;
        }
    }
    Ok(with_id(events, Some(&ce.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn binary_mode_headers_are_case_insensitive() -> TestResult {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("CE-SpecVersion", "1.0"),
            ("Ce-Type", "dev.knative.sources.ping"),
            ("ce-ID", "ping-1"),
            ("ce-source", "/apis/v1/namespaces/default/pingsources/sweep"),
            ("ce-time", "2024-05-01T10:00:00Z"),
        ] {
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_static(value),
            );
        }
        let ce = from_binary_mode(&headers, b"{}")?.ok_or("not recognised")?;
        let events = decode(ce)?.into_events()?;
        assert_eq!(events[0].kind, EventKind::Sweep);
        assert_eq!(events[0].id.as_deref(), Some("ping-1"));
        Ok(())
    }

    #[test]
    fn ping_with_text_data_is_a_sweep() -> TestResult {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-type", "dev.knative.sources.ping"),
            ("ce-id", "p"),
            ("ce-source", "/apis/v1/namespaces/n/pingsources/s"),
            ("content-type", "application/text"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        let ce = from_binary_mode(&headers, b"1 minute ping data")?.ok_or("not recognised")?;
        assert_eq!(decode(ce)?.into_events()?[0].kind, EventKind::Sweep);
        Ok(())
    }

    #[test]
    fn binary_mode_json_that_does_not_parse_is_named() -> TestResult {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-type", "com.ibm.cloud.cos.document.write"),
            ("ce-id", "p"),
            ("ce-source", "/s"),
            ("content-type", "application/json; charset=utf-8"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        let err = from_binary_mode(&headers, b"{nope")
            .err()
            .ok_or("accepted")?;
        assert!(
            err.to_string().contains("com.ibm.cloud.cos.document.write"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn binary_mode_without_type_names_the_header() -> TestResult {
        let mut headers = HeaderMap::new();
        headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
        headers.insert("ce-id", HeaderValue::from_static("x"));
        let err = from_binary_mode(&headers, b"{}").err().ok_or("accepted")?;
        assert!(err.to_string().contains("ce-type header"), "{err}");
        Ok(())
    }

    #[test]
    fn unknown_type_with_foreign_data_is_named() -> TestResult {
        let v = json!({"specversion": "1.0", "type": "com.example.order.placed", "id": "1",
            "source": "/shop", "data": {"order": 7}});
        let err = from_structured(&v)
            .and_then(decode)
            .err()
            .ok_or("accepted")?;
        let msg = err.to_string();
        assert!(msg.contains("com.example.order.placed"), "{msg}");
        assert!(msg.contains("com.amazonaws.s3.*"), "{msg}");
        Ok(())
    }

    #[test]
    fn data_base64_is_refused_by_name() -> TestResult {
        let v = json!({"specversion": "1.0", "type": "t", "id": "1", "source": "/s",
            "data_base64": "e30="});
        let err = from_structured(&v).err().ok_or("accepted")?;
        assert!(err.to_string().contains("data_base64"), "{err}");
        Ok(())
    }
}
