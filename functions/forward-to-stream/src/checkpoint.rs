//! The catch-up checkpoint: one JSON object in the swept bucket that records a sweep's progress
//! (status, where the pass stands and what fails, when the pass began) and carries its lease
//! (a [`bucketfn::lease`]), so two sweeps can never both hold it, and a crashed sweep's lease
//! is taken over once it has expired.

use std::time::Duration;

use bucketfn::ObjectStore;
use bucketfn::lease::{LeaseError, Leased, LeasedObject, Taken, Unreadable};
use bucketfn::sweep::Position;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use bucketfn::lease::{Lease, new_holder};

/// Where a pass stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A pass is under way (or stopped at a deadline and continues next time).
    Running,
    /// The last pass reached the end of the prefix.
    Finished,
}

/// The checkpoint object's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub status: Status,
    pub prefix: String,
    /// How far the current pass has come, and the objects listed as failing.
    #[serde(flatten)]
    pub position: Position,
    pub pass_started: DateTime<Utc>,
    /// What passes forward is recorded in markers (`forwarded/`). A checkpoint without it was
    /// written before they were kept: what its passes forwarded is known only by time.
    #[serde(default)]
    pub markers: bool,
    /// Objects last modified before this (and a clock-skew allowance) were forwarded by passes
    /// that kept no markers. Set once, when a checkpoint from before markers is taken over, so
    /// that an upgrade does not forward the whole prefix again; never for newer checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_before: Option<DateTime<Utc>>,
    /// Objects forwarded in the current pass.
    pub forwarded: u64,
    pub lease: Option<Lease>,
    pub updated: DateTime<Utc>,
}

impl Leased for Checkpoint {
    fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }
    fn set_lease(&mut self, lease: Option<Lease>) {
        self.lease = lease;
    }
}

/// The checkpoint of a sweep that holds its lease.
pub type Held = bucketfn::lease::Held<Checkpoint>;

/// Reads and writes one checkpoint object.
pub struct Checkpoints<'a> {
    pub store: &'a dyn ObjectStore,
    pub bucket: &'a str,
    pub key: String,
    pub lease: Duration,
}

impl Checkpoints<'_> {
    fn object(&self) -> LeasedObject<'_> {
        LeasedObject {
            store: self.store,
            bucket: self.bucket,
            key: self.key.clone(),
            term: self.lease,
            what: "checkpoint",
            // It holds a pass's progress and what fails: never overwritten unread.
            unreadable: Unreadable::Refuse,
        }
    }

    /// The checkpoint and its etag, or `None` when there is none yet.
    pub async fn read(&self) -> Result<Option<(Checkpoint, String)>, LeaseError> {
        self.object().read().await
    }

    /// Takes the lease if it is free or expired. A finished pass makes this the start of a new
    /// one, from the beginning (markers say what it need not forward again).
    pub async fn acquire(
        &self,
        prefix: &str,
        holder: &str,
    ) -> Result<Taken<Checkpoint>, LeaseError> {
        let now = Utc::now();
        self.object()
            .acquire(holder, |current: Option<Checkpoint>| {
                let Some(current) = current else {
                    return Checkpoint {
                        status: Status::Running,
                        prefix: prefix.to_owned(),
                        position: Position::default(),
                        pass_started: now,
                        markers: true,
                        covered_before: None,
                        forwarded: 0,
                        lease: None,
                        updated: now,
                    };
                };
                let mut next = current.clone();
                if !current.markers {
                    // As passes before markers did: a finished pass covered what was there
                    // when it began; an unfinished one as much as the pass before it.
                    if current.status == Status::Finished {
                        next.covered_before = Some(current.pass_started);
                    }
                    next.markers = true;
                }
                if current.status == Status::Finished {
                    next.status = Status::Running;
                    next.pass_started = now;
                    next.position.next_pass();
                    next.forwarded = 0;
                }
                next.updated = now;
                next
            })
            .await
    }

    /// Saves progress and extends the lease (`release`: gives it up instead). `false` when the
    /// lease was lost to another sweep, which then owns the checkpoint.
    pub async fn save(
        &self,
        held: &mut Held,
        update: impl FnOnce(&mut Checkpoint),
        release: bool,
    ) -> Result<bool, LeaseError> {
        self.object()
            .save(
                held,
                |next| {
                    update(next);
                    next.updated = Utc::now();
                },
                !release,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucketfn::storage::{LocalStore, MemoryStore};
    use bucketfn::{Condition, HandlerError, NewObject};
    use bytes::Bytes;
    use std::sync::Arc;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn checkpoints(store: &dyn ObjectStore, lease: Duration) -> Checkpoints<'_> {
        Checkpoints {
            store,
            bucket: "b",
            key: ".forward-to-stream/sweep.json".into(),
            lease,
        }
    }

    async fn race(store: Arc<dyn ObjectStore>, contenders: usize) -> Result<usize, HandlerError> {
        let tasks: Vec<_> = (0..contenders)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let checkpoints = checkpoints(store.as_ref(), Duration::from_secs(60));
                    checkpoints.acquire("in/", &new_holder()).await
                })
            })
            .collect();
        let mut held = 0;
        for task in tasks {
            let claim = task
                .await
                .map_err(|e| HandlerError::permanent(e.to_string()))??;
            held += usize::from(matches!(claim, Taken::Held(_)));
        }
        Ok(held)
    }

    /// Exactly one of many concurrent sweeps gets the lease: when none exists yet, and when
    /// they all take over the same expired one.
    async fn exclusive(store: Arc<dyn ObjectStore>) -> TestResult {
        assert_eq!(race(Arc::clone(&store), 16).await?, 1);
        let checkpoints = checkpoints(store.as_ref(), Duration::from_secs(60));
        for _ in 0..5 {
            // The holder crashes: its lease expires, and everyone rushes to take it over.
            let (mut current, etag) = checkpoints.read().await?.ok_or("no checkpoint")?;
            current.lease = Some(Lease {
                holder: "crashed".into(),
                expires: Utc::now() - chrono::Duration::seconds(1),
            });
            let body = Bytes::from(serde_json::to_vec(&current)?);
            let object = NewObject {
                body,
                content_type: "application/json".to_owned(),
                metadata: Default::default(),
            };
            store
                .put_if("b", &checkpoints.key, object, Condition::EtagIs(etag))
                .await?;
            assert_eq!(race(Arc::clone(&store), 16).await?, 1);
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_lease_is_exclusive_in_memory() -> TestResult {
        exclusive(Arc::new(MemoryStore::new())).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_lease_is_exclusive_on_a_local_directory_shared_by_two_stores() -> TestResult {
        // The swept bucket exists (a missing one is an error, not a missing checkpoint).
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("b"))?;
        // Two store instances stand for two processes on one directory.
        let one: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
        let two: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
        let (a, b) = tokio::join!(race(one, 8), race(two, 8));
        assert_eq!(a? + b?, 1);
        let fresh = tempfile::tempdir()?;
        std::fs::create_dir(fresh.path().join("b"))?;
        exclusive(Arc::new(LocalStore::new(fresh.path()))).await
    }

    #[tokio::test]
    async fn a_live_lease_keeps_others_out_and_an_expired_one_is_taken_over() -> TestResult {
        let store = MemoryStore::new();
        let short = checkpoints(&store, Duration::from_millis(200));
        let Taken::Held(mut first) = short.acquire("in/", "first").await? else {
            return Err("first sweep did not get the lease".into());
        };
        assert!(
            short
                .save(
                    &mut first,
                    |c| c.position.resume_after = Some("in/05".into()),
                    false
                )
                .await?
        );
        let Taken::Busy(Some(lease)) = short.acquire("in/", "second").await? else {
            return Err("a live lease was taken".into());
        };
        assert_eq!(lease.holder, "first");
        // The first sweep crashes: it never renews.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Taken::Held(second) = short.acquire("in/", "second").await? else {
            return Err("the expired lease was not taken over".into());
        };
        assert_eq!(second.state.position.resume_after.as_deref(), Some("in/05"));
        // The crashed sweep, come back, has lost its lease and can neither write nor give
        // up the second's lease.
        assert!(!short.save(&mut first, |c| c.forwarded = 99, false).await?);
        assert!(!short.save(&mut first, |c| c.forwarded = 99, true).await?);
        let (now, _) = short.read().await?.ok_or("no checkpoint")?;
        assert_eq!(now.lease.map(|l| l.holder).as_deref(), Some("second"));
        assert_eq!(now.forwarded, second.state.forwarded);
        Ok(())
    }

    #[tokio::test]
    async fn a_finished_pass_starts_a_new_one_from_the_beginning() -> TestResult {
        let store = MemoryStore::new();
        let checkpoints = checkpoints(&store, Duration::from_secs(60));
        let Taken::Held(mut held) = checkpoints.acquire("in/", "a").await? else {
            return Err("no lease".into());
        };
        checkpoints
            .save(
                &mut held,
                |c| {
                    c.status = Status::Finished;
                    c.position.resume_after = Some("in/z".into());
                },
                true,
            )
            .await?;
        let Taken::Held(next) = checkpoints.acquire("in/", "b").await? else {
            return Err("released lease not free".into());
        };
        assert_eq!(next.state.status, Status::Running);
        assert_eq!(next.state.position.resume_after, None);
        // Markers say what was forwarded; time says nothing.
        assert_eq!(next.state.covered_before, None);
        Ok(())
    }

    #[tokio::test]
    async fn a_checkpoint_from_before_markers_keeps_what_its_passes_covered_once() -> TestResult {
        let store = MemoryStore::new();
        // As the passes before markers wrote it, after one finished pass.
        let legacy = br#"{"status": "finished", "prefix": "in/", "last_key": "in/z",
            "pass_started": "2024-11-05T10:00:00Z", "covered_before": null, "forwarded": 7,
            "lease": null, "updated": "2024-11-05T10:05:00Z"}"#;
        store.insert(
            "b",
            ".forward-to-stream/sweep.json",
            &legacy[..],
            "application/json",
        );
        let checkpoints = checkpoints(&store, Duration::from_secs(60));
        let Taken::Held(mut held) = checkpoints.acquire("in/", "a").await? else {
            return Err("no lease".into());
        };
        let covered = Some("2024-11-05T10:00:00Z".parse()?);
        assert_eq!(held.state.covered_before, covered);
        assert!(held.state.markers);
        checkpoints
            .save(&mut held, |c| c.status = Status::Finished, true)
            .await?;
        let Taken::Held(next) = checkpoints.acquire("in/", "b").await? else {
            return Err("released lease not free".into());
        };
        assert_eq!(next.state.covered_before, covered, "set once, never moved");
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_bucket_is_an_error_not_a_missing_checkpoint() -> TestResult {
        let store = MemoryStore::new();
        store.remove_bucket("b");
        let err = checkpoints(&store, Duration::from_secs(60))
            .acquire("in/", "a")
            .await
            .err()
            .ok_or("a checkpoint was started in a bucket that is not there")?;
        assert!(!HandlerError::from(err).is_retryable());
        Ok(())
    }

    #[tokio::test]
    async fn a_checkpoint_that_is_not_json_is_a_permanent_error_naming_it() -> TestResult {
        let store = MemoryStore::new();
        store.insert(
            "b",
            ".forward-to-stream/sweep.json",
            &b"garbage"[..],
            "text/plain",
        );
        let err = checkpoints(&store, Duration::from_secs(60))
            .acquire("in/", "a")
            .await
            .err()
            .ok_or("accepted")?;
        assert!(
            err.to_string()
                .contains("checkpoint b/.forward-to-stream/sweep.json is not usable"),
            "{err}"
        );
        assert!(!HandlerError::from(err).is_retryable());
        Ok(())
    }
}
