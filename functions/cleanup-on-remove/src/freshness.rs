//! Whether a remove event still describes the bucket: a remove older than the object now under
//! the key (the key was written again after the delete, and the events arrived out of order)
//! must delete nothing.
//!
//! No S3 API returns the sequencer of the object now under a key, so the rule asks the store:
//! - the key is gone (HEAD 404): the remove is current;
//! - an object is there whose Last-Modified is later than or equal to the event time, or
//!   either time is unknown: it was written after the remove (or that cannot be ruled out):
//!   stale, delete nothing;
//! - an object is there whose Last-Modified is earlier than the event time, and the event
//!   names no version: the store has not caught up with the delete yet (eventually consistent
//!   replicas): the remove is current. With a version id, the remove deleted one older
//!   version and the object there is still current: stale.

use bucketfn::{ObjectEvent, ObjectInfo};

/// What the store's answer means for the remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    Current,
    /// Why the remove is older than what is there.
    Stale(String),
}

/// Applies the rule to the HEAD answer for the event's key (`None`: not found).
pub fn judge(event: &ObjectEvent, now_there: Option<&ObjectInfo>) -> Freshness {
    let Some(info) = now_there else {
        return Freshness::Current;
    };
    if let Some(version) = &event.version_id {
        return Freshness::Stale(format!(
            "the remove deleted version {version}, and another version is current"
        ));
    }
    match (info.last_modified, event.time) {
        (Some(modified), Some(removed)) if modified < removed => Freshness::Current,
        (Some(modified), Some(removed)) => Freshness::Stale(format!(
            "the object there was written at {modified}, after the remove at {removed}"
        )),
        _ => Freshness::Stale(
            "the object is there and its age cannot be compared with the remove".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn removed(
        time: &str,
        version: Option<&str>,
    ) -> Result<ObjectEvent, Box<dyn std::error::Error>> {
        let mut object = serde_json::json!({"key": "k"});
        if let Some(version) = version {
            object["versionId"] = version.into();
        }
        let v = serde_json::json!({"Records": [{"eventSource": "aws:s3",
            "eventName": "ObjectRemoved:Delete", "eventTime": time,
            "s3": {"bucket": {"name": "b"}, "object": object}}]});
        let events = bucketfn::event::decode_value(v)?.into_events()?;
        events.into_iter().next().ok_or_else(|| "no event".into())
    }

    fn info(modified: Option<&str>) -> Result<ObjectInfo, Box<dyn std::error::Error>> {
        Ok(ObjectInfo {
            last_modified: modified.map(|m| m.parse::<DateTime<Utc>>()).transpose()?,
            ..ObjectInfo::default()
        })
    }

    #[test]
    fn a_gone_key_makes_the_remove_current() -> TestResult {
        assert_eq!(
            judge(&removed("2024-05-01T10:00:00Z", None)?, None),
            Freshness::Current
        );
        Ok(())
    }

    #[test]
    fn a_newer_object_makes_the_remove_stale() -> TestResult {
        let event = removed("2024-05-01T10:00:00Z", None)?;
        let newer = info(Some("2024-05-01T10:00:05Z"))?;
        assert!(matches!(judge(&event, Some(&newer)), Freshness::Stale(_)));
        let unknown = info(None)?;
        assert!(matches!(judge(&event, Some(&unknown)), Freshness::Stale(_)));
        Ok(())
    }

    #[test]
    fn an_older_object_still_visible_is_a_lagging_store() -> TestResult {
        let older = info(Some("2024-05-01T09:00:00Z"))?;
        let event = removed("2024-05-01T10:00:00Z", None)?;
        assert_eq!(judge(&event, Some(&older)), Freshness::Current);
        let versioned = removed("2024-05-01T10:00:00Z", Some("v1"))?;
        assert!(matches!(
            judge(&versioned, Some(&older)),
            Freshness::Stale(_)
        ));
        Ok(())
    }
}
