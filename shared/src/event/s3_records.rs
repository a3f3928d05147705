//! S3-style `Records` notifications: AWS S3, MinIO (webhook and queue targets), Ceph RGW and
//! meemoo's gateway (`viaa:s3`), which share the layout but differ in key escaping, field
//! spellings and metadata shape.

use serde_json::Value;

use super::fields::Fields;
use super::keys::KeyEncoding;
use super::{DecodeError, EventKind, ObjectEvent, Source, bare_etag};

/// Maps an S3-family event name (with or without the `s3:` prefix) to what functions act on.
pub(crate) fn kind_of(event_name: &str) -> EventKind {
    let name = event_name.strip_prefix("s3:").unwrap_or(event_name);
    if name.starts_with("ObjectCreated:") {
        EventKind::Created
    } else if name.starts_with("ObjectRemoved:")
        || name.starts_with("LifecycleExpiration:")
        || name.starts_with("ObjectLifecycle:Expiration")
    {
        EventKind::Removed
    } else {
        EventKind::Other
    }
}

/// Events about a bucket itself rather than an object in it.
fn is_bucket_event(event_name: &str) -> bool {
    let name = event_name.strip_prefix("s3:").unwrap_or(event_name);
    name.starts_with("BucketCreated") || name.starts_with("BucketRemoved")
}

struct Flavour {
    source: Source,
    format: &'static str,
    keys: KeyEncoding,
}

const AWS: Flavour = Flavour {
    source: Source::AwsS3,
    format: "AWS S3",
    keys: KeyEncoding::Form,
};
const MINIO: Flavour = Flavour {
    source: Source::Minio,
    format: "MinIO",
    keys: KeyEncoding::Form,
};
const CEPH: Flavour = Flavour {
    source: Source::Ceph,
    format: "Ceph RGW",
    keys: KeyEncoding::Raw,
};
/// meemoo's gateway sends the key as stored: the archive handler it feeds uses the key as it
/// arrives (sidecar, file-transfer request and later removal all name it), so a `+` in it is a
/// `+` and `%2B` is three characters, never an escape.
const VIAA: Flavour = Flavour {
    source: Source::Viaa,
    format: "viaa:s3",
    keys: KeyEncoding::Raw,
};

/// Decodes every record of a `{"Records": [...]}` notification; MinIO webhooks add a top-level
/// `EventName` and `Key`.
pub(crate) fn decode(value: &Value) -> Result<Vec<ObjectEvent>, DecodeError> {
    let top = Fields::of(value, "S3 notification", "")?;
    // Older MinIO servers spell the top-level name `EventType`.
    let minio_webhook = (top.has("EventName") || top.has("EventType")) && top.has("Key");
    let records = top.array("Records")?;
    let mut events = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        let path = format!("Records[{i}]");
        let flavour = flavour_of(record, &path, minio_webhook)?;
        events.push(decode_record(record, &path, &flavour)?);
    }
    Ok(events)
}

/// Decodes one AWS S3 record on its own (the data of a CloudEvents AWS-S3 adapter event).
pub(crate) fn decode_aws_record(record: &Value, path: &str) -> Result<ObjectEvent, DecodeError> {
    decode_record(record, path, &AWS)
}

fn flavour_of(record: &Value, path: &str, minio_webhook: bool) -> Result<Flavour, DecodeError> {
    let source = record.get("eventSource").and_then(Value::as_str);
    match source {
        Some("aws:s3") => Ok(AWS),
        Some("minio:s3") => Ok(MINIO),
        Some("ceph:s3") => Ok(CEPH),
        Some("viaa:s3") => Ok(VIAA),
        None if minio_webhook => Ok(MINIO),
        _ => Err(DecodeError::field(
            "S3 notification",
            &format!("{path}.eventSource"),
            record.get("eventSource"),
            "\"aws:s3\", \"minio:s3\", \"ceph:s3\" or \"viaa:s3\"",
        )),
    }
}

fn decode_record(
    record: &Value,
    path: &str,
    flavour: &Flavour,
) -> Result<ObjectEvent, DecodeError> {
    let rec = Fields::of(record, flavour.format, path)?;
    let s3_path = format!("{path}.s3");
    let s3 = rec.obj("s3", &s3_path)?;
    let bucket_path = format!("{s3_path}.bucket");
    let bucket_fields = s3.obj("bucket", &bucket_path)?;
    let bucket = bucket_fields.non_empty("name")?;
    let event_name = rec.non_empty("eventName")?;
    let object_path = format!("{s3_path}.object");
    // MinIO's `s3:BucketCreated` / `s3:BucketRemoved` concern no object: no key, whatever
    // the record's object part holds.
    if is_bucket_event(event_name) {
        let mut event = ObjectEvent::new(
            EventKind::Other,
            flavour.source,
            bucket,
            String::new(),
            event_name,
        );
        event.time = rec.opt_time("eventTime")?;
        return Ok(event);
    }
    let object = s3.obj("object", &object_path)?;

    let raw_key = object.non_empty("key")?;
    let key = flavour.keys.decode_in(flavour.format, raw_key)?;
    let mut event = ObjectEvent::new(kind_of(event_name), flavour.source, bucket, key, event_name)
        .with_metadata(object.string_map("userMetadata"))
        .with_metadata(object.string_map("userDefined"))
        .with_metadata(object.string_map("metadata"))
        .with_metadata(key_val_list(object.get("metadata")));
    event.size = object.opt_u64("size")?;
    // MinIO omits a zero size (Go `omitempty`): an object it reports as created is empty.
    if flavour.source == Source::Minio && event.kind == EventKind::Created {
        event.size = event.size.or(Some(0));
    }
    event.etag = bare_etag(object.opt_str_any(&["eTag", "etag"])?);
    event.version_id = object.opt_str("versionId")?.map(str::to_owned);
    event.sequencer = object.opt_str("sequencer")?.map(str::to_owned);
    event.time = rec.opt_time("eventTime")?;
    event.region = rec.opt_str("awsRegion")?.map(str::to_owned);
    let domain_path = format!("{s3_path}.domain");
    if let Some(domain) = s3.opt_obj("domain", &domain_path)? {
        event.domain = domain.opt_str("name")?.map(str::to_owned);
    }
    event.bucket_metadata = bucket_fields
        .string_map("metadata")
        .into_iter()
        .chain(key_val_list(bucket_fields.get("metadata")))
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect();
    let identity_path = format!("{path}.userIdentity");
    if let Some(identity) = rec.opt_obj("userIdentity", &identity_path)? {
        event.principal = identity.opt_str("principalId")?.map(str::to_owned);
    }
    Ok(event)
}

/// Ceph sends metadata and tags as `[{"key": "x-amz-meta-a", "val": "b"}]`.
fn key_val_list(value: Option<&Value>) -> Vec<(String, String)> {
    let Some(Value::Array(items)) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let key = item.get("key")?.as_str()?;
            let val = item.get("val")?.as_str()?;
            Some((key.to_owned(), val.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn event_names_map_to_kinds() {
        for (name, kind) in [
            ("ObjectCreated:Put", EventKind::Created),
            (
                "s3:ObjectCreated:CompleteMultipartUpload",
                EventKind::Created,
            ),
            ("ObjectRemoved:DeleteMarkerCreated", EventKind::Removed),
            ("LifecycleExpiration:Delete", EventKind::Removed),
            ("ObjectLifecycle:Expiration:Current", EventKind::Removed),
            ("ObjectRestore:Completed", EventKind::Other),
            ("ObjectTagging:Put", EventKind::Other),
            ("ObjectAcl:Put", EventKind::Other),
            ("Replication:OperationFailedReplication", EventKind::Other),
            ("LifecycleTransition", EventKind::Other),
            ("IntelligentTiering", EventKind::Other),
            ("s3:ObjectAccessed:Get", EventKind::Other),
        ] {
            assert_eq!(kind_of(name), kind, "{name}");
        }
    }

    #[test]
    fn unknown_event_source_is_named() -> TestResult {
        let v = json!({"Records": [{"eventSource": "wasabi:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}}]});
        let msg = decode(&v).err().ok_or("accepted")?.to_string();
        assert!(msg.contains("Records[0].eventSource"), "{msg}");
        assert!(msg.contains("\"wasabi:s3\""), "{msg}");
        Ok(())
    }

    #[test]
    fn missing_key_names_the_path() -> TestResult {
        let v = json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": {"size": 1}}}]});
        let msg = decode(&v).err().ok_or("accepted")?.to_string();
        assert_eq!(
            msg,
            "AWS S3 event: `Records[0].s3.object.key` is missing; expected a non-empty string"
        );
        Ok(())
    }

    #[test]
    fn gateway_domain_and_bucket_metadata_are_kept() -> TestResult {
        let v = json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"domain": {"name": "s3.example"},
                "bucket": {"name": "b", "metadata": {"Tenant": "or-rf5kf25", "kind": "ingest"}},
                "object": {"key": "k", "metadata": {"md5sum": "0123"}}}}]});
        let events = decode(&v)?;
        assert_eq!(events[0].domain.as_deref(), Some("s3.example"));
        assert_eq!(
            events[0].metadata.get("md5sum").map(String::as_str),
            Some("0123")
        );
        assert_eq!(
            events[0].bucket_metadata.get("tenant").map(String::as_str),
            Some("or-rf5kf25")
        );
        Ok(())
    }

    #[test]
    fn viaa_gateway_keys_are_taken_as_they_arrive() -> TestResult {
        let record = |name: &str, key: &str| {
            json!({"Records": [{"eventVersion": "0.1", "eventSource": "viaa:s3",
                "eventTime": "2019-12-12T00:39:15.049Z", "eventName": name,
                "userIdentity": {"principalId": "Object Owner CN+OR-id"},
                "s3": {"domain": {"name": "s3"},
                    "bucket": {"name": "MAM_HighresVideo", "metadata": {"tenant": "or-rf5kf25"}},
                    "object": {"key": key, "size": 5, "metadata": {"md5sum": "0123"}}}}]})
        };
        let events = decode(&record("ObjectCreated:Put", "a+b %2B c%zz.MXF"))?;
        let event = &events[0];
        assert_eq!(event.source, Source::Viaa);
        assert_eq!(event.kind, EventKind::Created);
        // Neither form decoding nor percent escapes: not even a broken one is an error.
        assert_eq!(event.key, "a+b %2B c%zz.MXF");
        assert_eq!(event.domain.as_deref(), Some("s3"));
        assert_eq!(event.principal.as_deref(), Some("Object Owner CN+OR-id"));
        assert_eq!(
            event.bucket_metadata.get("tenant").map(String::as_str),
            Some("or-rf5kf25")
        );
        assert_eq!(
            event.metadata.get("md5sum").map(String::as_str),
            Some("0123")
        );
        // The original's wildcard name for removals, and what it refuses as unknown.
        assert_eq!(
            decode(&record("ObjectRemoved:*", "k"))?[0].kind,
            EventKind::Removed
        );
        assert_eq!(
            decode(&record("ObjectRestore:Post", "k"))?[0].kind,
            EventKind::Other
        );
        Ok(())
    }

    #[test]
    fn ceph_metadata_list_and_string_size() -> TestResult {
        let v = json!({"Records": [{"eventSource": "ceph:s3", "eventName": "ObjectCreated:Put",
            "eventTime": "2021-02-19 02:03:08.330496Z",
            "s3": {"bucket": {"name": "b"}, "object": {"key": "a+b c.jpg", "size": "1024",
                "etag": "abc", "metadata": [{"key": "x-amz-meta-tenant", "val": "OR-abc1234"}]}}}]});
        let events = decode(&v)?;
        assert_eq!(events[0].key, "a+b c.jpg");
        assert_eq!(events[0].size, Some(1024));
        assert_eq!(
            events[0].metadata.get("tenant").map(String::as_str),
            Some("OR-abc1234")
        );
        Ok(())
    }
}
