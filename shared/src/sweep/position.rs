//! Where a sweep stands between runs, and the objects it keeps listed as failing: kept in a
//! cursor object (thumbnail-on-create) or inside a caller's checkpoint (forward-to-stream).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::outcome::HandlerError;
use crate::storage::{Condition, NewObject, ObjectStore, StoreError};

/// How far the current pass has come, and what failed in this or earlier passes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Every key up to this one is handled in the current pass; `None` before the first.
    /// (`last_key` in forward-to-stream's checkpoints before failures were kept.)
    #[serde(alias = "last_key")]
    pub resume_after: Option<String>,
    /// Keys after `resume_after` that were already handled when the run stopped (they
    /// finished ahead of a slower one): the next run passes over them instead of redoing them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done_ahead: Vec<String>,
    /// Objects that failed, listed until they succeed, change or are gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
}

/// One object that failed, as the sweep keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub key: String,
    /// The version that failed (its etag, where the listing gives one): another version of
    /// the key is tried at once.
    pub etag: Option<String>,
    /// The error, with its causes.
    pub error: String,
    /// A permanent failure is not tried again while the object stays the same.
    pub permanent: bool,
    pub attempts: u32,
    /// A retryable failure is tried again by the first pass that reaches it after this.
    pub retry_after: Option<DateTime<Utc>>,
    pub first_failed: DateTime<Utc>,
}

/// The wait before a retryable failure is tried again: a minute, doubling with each attempt,
/// at most a day, so that an object that keeps failing costs a pass little.
fn backoff(attempts: u32) -> chrono::Duration {
    let minutes = 1i64 << attempts.saturating_sub(1).min(11);
    chrono::Duration::minutes(minutes.min(24 * 60))
}

impl Failure {
    /// Whether the object listed with `etag` is to be tried again now.
    pub(crate) fn is_due(&self, etag: Option<&str>, now: DateTime<Utc>) -> bool {
        if self.etag.as_deref() != etag {
            return true;
        }
        !self.permanent && self.retry_after.is_none_or(|at| at <= now)
    }

    pub(crate) fn describe(&self) -> String {
        let what = match (self.permanent, self.retry_after) {
            (true, _) => "permanent; listed until the object changes or is removed".to_owned(),
            (false, Some(at)) => format!(
                "retryable; tried again after {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            (false, None) => "retryable; tried again on the next pass".to_owned(),
        };
        let attempts = match self.attempts {
            1 => String::new(),
            n => format!(", {n} attempts"),
        };
        format!("{:?}: {} ({what}{attempts})", self.key, self.error)
    }
}

impl Position {
    /// Records that `key` (version `etag`) failed with `error` now.
    pub(crate) fn fail(&mut self, key: &str, etag: Option<&str>, error: &HandlerError) {
        let now = Utc::now();
        let permanent = !error.is_retryable();
        let text = crate::outcome::chain(error);
        match self.failures.iter_mut().find(|f| f.key == key) {
            Some(failure) => {
                let same_version = failure.etag.as_deref() == etag;
                failure.attempts = if same_version {
                    failure.attempts + 1
                } else {
                    1
                };
                failure.etag = etag.map(str::to_owned);
                failure.error = text;
                failure.permanent = permanent;
                failure.retry_after = (!permanent).then(|| now + backoff(failure.attempts));
                if !same_version {
                    failure.first_failed = now;
                }
            }
            None => {
                let at = self.failures.partition_point(|f| f.key.as_str() < key);
                self.failures.insert(
                    at,
                    Failure {
                        key: key.to_owned(),
                        etag: etag.map(str::to_owned),
                        error: text,
                        permanent,
                        attempts: 1,
                        retry_after: (!permanent).then(|| now + backoff(1)),
                        first_failed: now,
                    },
                );
            }
        }
    }

    /// `key` succeeded (or is no longer anything to do): it is no longer listed.
    pub(crate) fn resolve(&mut self, key: &str) {
        self.failures.retain(|f| f.key != key);
    }

    pub(crate) fn failure(&self, key: &str) -> Option<&Failure> {
        self.failures.iter().find(|f| f.key == key)
    }

    /// The start of the next pass: from the beginning, with the failures still listed.
    pub fn next_pass(&mut self) {
        self.resume_after = None;
        self.done_ahead.clear();
    }

    /// Nothing is worth keeping: no pass under way, nothing failing.
    pub fn is_empty(&self) -> bool {
        self.resume_after.is_none() && self.done_ahead.is_empty() && self.failures.is_empty()
    }
}

/// What the cursor object holds.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    #[serde(flatten)]
    position: Position,
    updated: DateTime<Utc>,
}

/// Cursors are small (a key, at most a batch of keys, the failures); anything larger is not
/// one of ours.
const CURSOR_MAX_BYTES: u64 = 1024 * 1024;

/// The cursor as a sweep found it at its start.
pub(crate) struct Saved {
    pub(crate) position: Position,
    etag: Option<String>,
}

pub(crate) async fn load_cursor(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
) -> Result<Option<Saved>, HandlerError> {
    match store.get(bucket, key, CURSOR_MAX_BYTES).await {
        Ok(object) => {
            // One that cannot be read only costs a walk from the start.
            let cursor: Option<Cursor> = serde_json::from_slice(&object.body).ok();
            Ok(Some(Saved {
                position: cursor.map(|c| c.position).unwrap_or_default(),
                etag: object.info.etag,
            }))
        }
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes `position` to the cursor, or removes the cursor this run started from when there is
/// nothing left to keep.
pub(crate) async fn save_cursor(
    store: &dyn ObjectStore,
    (bucket, key): (&str, &str),
    saved: Option<&Saved>,
    position: &Position,
) -> Result<(), HandlerError> {
    if !position.is_empty() {
        let body = serde_json::to_vec(&Cursor {
            position: position.clone(),
            updated: Utc::now(),
        })
        .map_err(HandlerError::permanent)?;
        let object = NewObject {
            body: body.into(),
            content_type: "application/json".to_owned(),
            metadata: Default::default(),
        };
        store.put(bucket, key, object).await?;
        return Ok(());
    }
    // Only the cursor this run started from is removed: one written since by another run
    // holds that run's progress.
    match saved.map(|s| s.etag.clone()) {
        Some(Some(etag)) => match store.delete_if(bucket, key, Condition::EtagIs(etag)).await {
            Ok(()) | Err(StoreError::ConditionFailed { .. }) => {}
            // A store that ignores If-Match on DELETE (MinIO): the cursor is the sweep's own
            // bookkeeping, and the worst an unconditional delete does is make another run walk
            // from the start, so the sweep does not fail over it.
            Err(StoreError::Unsupported { .. }) => store.delete(bucket, key).await?,
            Err(e) => return Err(e.into()),
        },
        // A store that gives no etags cannot be asked; the cursor must not outlive the pass.
        Some(None) => store.delete(bucket, key).await?,
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retryable_failure_waits_longer_each_time_and_a_new_version_is_tried_at_once() {
        let mut position = Position::default();
        let error = HandlerError::retryable("503 SlowDown");
        position.fail("k", Some("e1"), &error);
        position.fail("k", Some("e1"), &error);
        let failure = position.failure("k").cloned();
        let now = Utc::now();
        assert!(failure.as_ref().is_some_and(|f| f.attempts == 2));
        assert!(failure.as_ref().is_some_and(|f| !f.is_due(Some("e1"), now)));
        assert!(
            failure
                .as_ref()
                .is_some_and(|f| f.is_due(Some("e1"), now + backoff(2)))
        );
        assert!(failure.as_ref().is_some_and(|f| f.is_due(Some("e2"), now)));
        assert!(backoff(30) == chrono::Duration::days(1));
    }

    #[test]
    fn a_permanent_failure_is_kept_until_the_object_changes() {
        let mut position = Position::default();
        position.fail("b", None, &HandlerError::permanent("corrupt"));
        position.fail("a", Some("x"), &HandlerError::permanent("corrupt"));
        assert_eq!(position.failures[0].key, "a", "kept in key order");
        let far = Utc::now() + chrono::Duration::days(365);
        assert!(
            position
                .failure("a")
                .is_some_and(|f| !f.is_due(Some("x"), far))
        );
        assert!(
            position
                .failure("a")
                .is_some_and(|f| f.is_due(Some("y"), far))
        );
        position.resolve("a");
        assert!(position.failure("a").is_none());
        position.next_pass();
        assert!(!position.is_empty(), "failures outlive the pass");
    }
}
