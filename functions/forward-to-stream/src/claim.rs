//! Claim-check messages: a CloudEvent in Kafka binary content mode (`ce_*` headers) whose data
//! points at the object instead of carrying it.

use bucketfn::sink::Message;
use bucketfn::storage::{ListedObject, ObjectInfo};
use bucketfn::{EventKind, ObjectEvent};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What a claim says about the object: the JSON data of the CloudEvent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Claim {
    pub bucket: String,
    pub key: String,
    /// `s3://bucket/key`.
    pub uri: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub sequencer: Option<String>,
    pub event_time: Option<DateTime<Utc>>,
    pub event_name: String,
    /// Where the event came from (`aws-s3`, `minio`, ...; `sweep` for catch-up).
    pub source: String,
    /// Region or namespace of the bucket, where known.
    pub region: Option<String>,
    #[serde(skip)]
    kind: EventKind,
}

impl Claim {
    pub fn of_event(event: &ObjectEvent) -> Self {
        Self {
            bucket: event.bucket.clone(),
            key: event.key.clone(),
            uri: uri(&event.bucket, &event.key),
            size: event.size,
            etag: event.etag.clone(),
            version_id: event.version_id.clone(),
            sequencer: event.sequencer.clone(),
            event_time: event.time,
            event_name: event.event_name.clone(),
            source: event.source.to_string(),
            region: event.region.clone(),
            kind: event.kind,
        }
    }

    /// Replaces what the event said about the object with what the store says (its HEAD):
    /// a consumer fetches by these values, so an event must not choose them. Returns the
    /// event's etag when it was another (a forged event, or a version since overwritten).
    pub fn confirm(&mut self, info: &ObjectInfo) -> Option<String> {
        let told = self
            .etag
            .take()
            .filter(|told| info.etag.as_ref() != Some(told));
        self.etag = info.etag.clone();
        self.size = Some(info.size);
        if info.last_modified.is_some() {
            self.event_time = info.last_modified;
        }
        told
    }

    /// A claim for an object found by a catch-up sweep, as if it had just been created.
    pub fn of_listed(bucket: &str, object: &ListedObject) -> Self {
        Self {
            bucket: bucket.to_owned(),
            key: object.key.clone(),
            uri: uri(bucket, &object.key),
            size: Some(object.size),
            etag: object.etag.clone(),
            version_id: None,
            sequencer: None,
            event_time: object.last_modified,
            event_name: "sweep".to_owned(),
            source: "sweep".to_owned(),
            region: None,
            kind: EventKind::Created,
        }
    }

    /// A stable id: the same object version and kind always give the same id, so a consumer
    /// can drop redeliveries, including a sweep's claim for an object an event already
    /// announced (when the store is not versioned: sweeps see no version ids).
    pub fn id(&self) -> String {
        let mut hash = Sha256::new();
        for part in [
            kind_name(self.kind),
            &self.bucket,
            &self.key,
            self.version_id.as_deref().unwrap_or(""),
            self.etag.as_deref().unwrap_or(""),
        ] {
            hash.update(part.as_bytes());
            // A separator that cannot occur in the parts keeps ("a","bc") apart from ("ab","c").
            hash.update([0u8]);
        }
        let digest = hash.finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The Kafka message: key `bucket/key` (one object's events stay in one partition),
    /// CloudEvents binary-mode headers, JSON data.
    pub fn to_message(&self) -> Result<Message, serde_json::Error> {
        let time = self.event_time.unwrap_or_else(Utc::now);
        let headers = vec![
            ("ce_specversion".to_owned(), "1.0".to_owned()),
            ("ce_id".to_owned(), self.id()),
            ("ce_source".to_owned(), format!("s3://{}", self.bucket)),
            (
                "ce_type".to_owned(),
                format!("io.bucketfn.object.{}", kind_name(self.kind)),
            ),
            (
                "ce_time".to_owned(),
                time.to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
            ("ce_subject".to_owned(), self.key.clone()),
        ];
        Ok(Message {
            key: Some(format!("{}/{}", self.bucket, self.key)),
            headers,
            content_type: "application/json".to_owned(),
            correlation_id: None,
            body: Bytes::from(serde_json::to_vec(self)?),
            // A claim announces an object, whose time is `ce_time`: the sink stamps the message
            // with the time of sending, as it always has.
            timestamp: None,
        })
    }
}

fn uri(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Created => "created",
        EventKind::Removed => "removed",
        EventKind::Sweep => "sweep",
        EventKind::Other => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn event() -> Result<ObjectEvent, Box<dyn std::error::Error>> {
        let notification = serde_json::json!({"Records": [{"eventVersion": "2.1",
            "eventSource": "aws:s3", "awsRegion": "eu-west-1",
            "eventTime": "2024-11-05T14:22:31.493Z", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "logs"}, "object": {"key": "vpc/2024/a+b.log.gz",
                "size": 42, "eTag": "abc", "versionId": "v1", "sequencer": "0055AED6DCD90281E5"}}}]});
        let events = bucketfn::event::decode_value(notification)?.into_events()?;
        events.into_iter().next().ok_or_else(|| "no event".into())
    }

    fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
        message
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_claim_is_a_binary_mode_cloudevent_keyed_by_object() -> TestResult {
        let message = Claim::of_event(&event()?).to_message()?;
        assert_eq!(message.key.as_deref(), Some("logs/vpc/2024/a b.log.gz"));
        assert_eq!(header(&message, "ce_specversion"), Some("1.0"));
        assert_eq!(header(&message, "ce_source"), Some("s3://logs"));
        assert_eq!(
            header(&message, "ce_type"),
            Some("io.bucketfn.object.created")
        );
        assert_eq!(header(&message, "ce_subject"), Some("vpc/2024/a b.log.gz"));
        assert_eq!(
            header(&message, "ce_time"),
            Some("2024-11-05T14:22:31.493Z")
        );
        assert_eq!(message.content_type, "application/json");
        let data: serde_json::Value = serde_json::from_slice(&message.body)?;
        assert_eq!(data["uri"], "s3://logs/vpc/2024/a b.log.gz");
        assert_eq!(data["size"], 42);
        assert_eq!(data["etag"], "abc");
        assert_eq!(data["version_id"], "v1");
        assert_eq!(data["sequencer"], "0055AED6DCD90281E5");
        assert_eq!(data["source"], "aws-s3");
        assert_eq!(data["region"], "eu-west-1");
        Ok(())
    }

    #[test]
    fn ids_are_stable_per_object_version_and_kind() -> TestResult {
        let created = Claim::of_event(&event()?);
        assert_eq!(created.id(), Claim::of_event(&event()?).id());
        assert_eq!(created.id().len(), 32);
        let mut removed = event()?;
        removed.kind = EventKind::Removed;
        assert_ne!(created.id(), Claim::of_event(&removed).id());
        let mut rewritten = event()?;
        rewritten.etag = Some("def".into());
        assert_ne!(created.id(), Claim::of_event(&rewritten).id());
        Ok(())
    }

    #[test]
    fn the_stores_etag_size_and_time_replace_the_events() -> TestResult {
        let stored = ObjectInfo {
            size: 7,
            etag: Some("stored".into()),
            last_modified: Some("2024-11-05T14:22:35Z".parse()?),
            content_type: None,
            metadata: Default::default(),
            version_id: None,
        };
        let mut claim = Claim::of_event(&event()?);
        assert_eq!(claim.confirm(&stored), Some("abc".to_owned()));
        assert_eq!(
            (claim.etag.as_deref(), claim.size, claim.event_time),
            (Some("stored"), Some(7), stored.last_modified)
        );
        let mut same = event()?;
        same.etag = Some("stored".into());
        assert_eq!(Claim::of_event(&same).confirm(&stored), None);
        Ok(())
    }

    #[test]
    fn a_sweep_claim_matches_the_event_claim_of_an_unversioned_object() -> TestResult {
        let mut live = event()?;
        live.version_id = None;
        let listed = ListedObject {
            key: live.key.clone(),
            size: 42,
            etag: Some("abc".into()),
            last_modified: None,
        };
        assert_eq!(
            Claim::of_event(&live).id(),
            Claim::of_listed("logs", &listed).id()
        );
        Ok(())
    }
}
