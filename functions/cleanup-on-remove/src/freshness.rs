//! Whether a remove may take what was made from the object: only when the store says the
//! object is gone. An object that exists is never cleaned up, whatever the event's times say
//! (a forged remove, a clock-skewed producer, or a remove older than a rewrite, delivered out
//! of order), and the clock is never used to overrule the store:
//! - HEAD finds no such key: the remove is current;
//! - the event names a version and the store's current version is another: that version was
//!   removed, only what was made from it may go;
//! - the object there looks older than the remove (its Last-Modified, to the second HEAD
//!   gives, before the remove's time, and the remove not dated in the future): a store that
//!   has not caught up with the delete yet, or a remove that raced a rewrite. The store is
//!   asked again a few times within the invocation, then the remove is retryable, so the
//!   platform asks again later; nothing is deleted meanwhile;
//! - otherwise (written at or after the remove, times unknown, a remove dated in the future):
//!   the remove is stale, nothing is deleted.

use std::time::{Duration, Instant};

use bucketfn::ObjectPath;
use bucketfn::{HandlerError, Invocation, ObjectEvent, ObjectInfo, ObjectStore, StoreError};
use chrono::{DateTime, Utc};

/// Pauses before asking a store that may lag again; the deadline cuts them short.
const LAG_PAUSES: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];
/// HEAD's Last-Modified is whole seconds; an object written within the remove's second may
/// show a time before it.
const LAST_MODIFIED_PRECISION: chrono::Duration = chrono::Duration::seconds(1);
/// How far ahead of this clock a remove may be dated before it counts as dated in the future.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

/// What the store's answers mean for the remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// The object is gone: what was made from it may go.
    Gone,
    /// The event's version was removed and another is current: only what was made from that
    /// version may go.
    VersionRemoved(String),
    /// The object is there: why nothing is deleted.
    Stale(String),
}

/// The rule for one HEAD answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Settled(Freshness),
    /// The object there is older than the remove: ask again.
    MayLag {
        modified: DateTime<Utc>,
        removed: DateTime<Utc>,
    },
}

fn judge(event: &ObjectEvent, there: &ObjectInfo, now: DateTime<Utc>) -> Answer {
    if let (Some(removed), Some(current)) = (&event.version_id, &there.version_id)
        && removed != current
    {
        return Answer::Settled(Freshness::VersionRemoved(removed.clone()));
    }
    match (there.last_modified, event.time) {
        (_, Some(removed)) if removed > now + CLOCK_SKEW => Answer::Settled(Freshness::Stale(
            format!("the remove is dated {removed}, in the future, and the object is there"),
        )),
        (Some(modified), Some(removed)) if modified + LAST_MODIFIED_PRECISION <= removed => {
            Answer::MayLag { modified, removed }
        }
        (Some(modified), Some(removed)) => Answer::Settled(Freshness::Stale(format!(
            "the object there was written at {modified}, not before the remove at {removed}"
        ))),
        _ => Answer::Settled(Freshness::Stale(
            "the object is there and its age cannot be compared with the remove".to_owned(),
        )),
    }
}

/// Asks the store about the event's key until its answer settles, within the deadline.
pub async fn check(
    store: &dyn ObjectStore,
    event: &ObjectEvent,
    invocation: &Invocation,
) -> Result<Freshness, HandlerError> {
    let (bucket, key) = (event.bucket.as_str(), event.key.as_str());
    let began = Instant::now();
    let mut pauses = LAG_PAUSES.iter();
    loop {
        let there = match store.head(bucket, key).await {
            Ok(info) => info,
            Err(StoreError::NotFound { .. }) => return Ok(Freshness::Gone),
            Err(e) => return Err(e.into()),
        };
        let (modified, removed) = match judge(event, &there, Utc::now()) {
            Answer::Settled(freshness) => return Ok(freshness),
            Answer::MayLag { modified, removed } => (modified, removed),
        };
        let pause = pauses.next().copied().filter(|pause| {
            invocation
                .stop
                .deadline()
                .is_none_or(|deadline| Instant::now() + *pause < deadline)
        });
        match pause {
            Some(pause) => tokio::time::sleep(pause).await,
            None => {
                return Err(HandlerError::retryable(format!(
                    "{} still exists {:.1} s after its remove dated {removed} was first looked \
                     at (written at {modified}); the store may not have caught up, so nothing \
                     was deleted",
                    ObjectPath(bucket, key),
                    began.elapsed().as_secs_f64()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn there(
        modified: Option<&str>,
        version: Option<&str>,
    ) -> Result<ObjectInfo, Box<dyn std::error::Error>> {
        Ok(ObjectInfo {
            last_modified: modified.map(str::parse::<DateTime<Utc>>).transpose()?,
            version_id: version.map(str::to_owned),
            ..ObjectInfo::default()
        })
    }

    fn now() -> Result<DateTime<Utc>, chrono::ParseError> {
        "2024-05-01T12:00:00Z".parse()
    }

    #[test]
    fn an_object_written_at_or_after_the_remove_makes_it_stale() -> TestResult {
        let event = removed("2024-05-01T10:00:00.900Z", None)?;
        // Written in the same second as the remove: HEAD shows 10:00:00, before 10:00:00.900.
        for modified in [
            Some("2024-05-01T10:00:00Z"),
            Some("2024-05-01T10:00:05Z"),
            None,
        ] {
            let answer = judge(&event, &there(modified, None)?, now()?);
            assert!(
                matches!(answer, Answer::Settled(Freshness::Stale(_))),
                "{modified:?}: {answer:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_remove_dated_in_the_future_never_makes_a_live_object_gone() -> TestResult {
        let event = removed("2099-01-01T00:00:00Z", None)?;
        let answer = judge(&event, &there(Some("2024-05-01T09:00:00Z"), None)?, now()?);
        assert!(
            matches!(&answer, Answer::Settled(Freshness::Stale(why)) if why.contains("in the future")),
            "{answer:?}"
        );
        Ok(())
    }

    #[test]
    fn an_older_object_still_there_is_asked_about_again() -> TestResult {
        let event = removed("2024-05-01T10:00:00Z", None)?;
        let answer = judge(&event, &there(Some("2024-05-01T09:00:00Z"), None)?, now()?);
        assert!(matches!(answer, Answer::MayLag { .. }), "{answer:?}");
        Ok(())
    }

    #[test]
    fn a_removed_version_that_is_not_current_frees_only_its_own() -> TestResult {
        let event = removed("2024-05-01T10:00:00Z", Some("v1"))?;
        let current = there(Some("2024-05-01T09:00:00Z"), Some("v2"))?;
        assert_eq!(
            judge(&event, &current, now()?),
            Answer::Settled(Freshness::VersionRemoved("v1".to_owned()))
        );
        // The removed version still current: the store has not caught up.
        let same = there(Some("2024-05-01T09:00:00Z"), Some("v1"))?;
        assert!(matches!(
            judge(&event, &same, now()?),
            Answer::MayLag { .. }
        ));
        Ok(())
    }
}
