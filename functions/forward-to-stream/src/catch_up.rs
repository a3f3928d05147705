//! Catch-up sweeps (schedules, PingSource, `sweep` on the command line): every object under the
//! prefix that no earlier pass forwarded, in key order, with progress saved in the checkpoint
//! and the lease renewed while work runs, stopping cleanly before the time budget runs out.

use std::future::Future;
use std::time::Instant;

use bucketfn::storage::ListedObject;
use bucketfn::sweep::{Scope, StopPlan, Stopped, SweepSummary, walk};
use bucketfn::{Done, HandlerError, Invocation, ObjectEvent, Outcome, Source};
use chrono::{DateTime, Utc};

use crate::checkpoint::{Checkpoints, Claim, Held, Status, new_holder};
use crate::{Forwarder, Mode, claim};

/// Objects modified this close before the last finished pass began are forwarded again:
/// the store's clock and ours may disagree.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// The checkpoint key for a sweep of `prefix`.
pub fn checkpoint_key(checkpoint_prefix: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("{checkpoint_prefix}sweep.json")
    } else {
        // The prefix becomes one path segment, so that sweeps of nested prefixes keep apart.
        let escaped = prefix.replace('%', "%25").replace('/', "%2F");
        format!("{checkpoint_prefix}sweep-{escaped}.json")
    }
}

/// How one slice of the walk ended.
enum Walk {
    Done(Result<SweepSummary, HandlerError>),
    LeaseLost,
}

pub(crate) async fn run(
    forwarder: &Forwarder,
    event: &ObjectEvent,
    invocation: &Invocation,
) -> Outcome {
    let settings = &forwarder.config.sweep;
    let bucket = match (event.bucket.as_str(), &settings.bucket) {
        ("", Some(configured)) => configured.clone(),
        ("", None) => {
            return Err(HandlerError::permanent(
                "a sweep needs a bucket: set SOURCE_BUCKET (or pass --bucket)",
            ));
        }
        (given, _) => given.to_owned(),
    };
    let prefix = if event.key.is_empty() {
        forwarder.config.prefix.clone()
    } else {
        event.key.clone()
    };
    let key = checkpoint_key(&settings.checkpoint_prefix, &prefix);
    let checkpoints = Checkpoints {
        store: forwarder.store.as_ref(),
        bucket: &bucket,
        key: event
            .sweep
            .shard
            .map_or_else(|| key.clone(), |s| s.progress_key(&key)),
        lease: settings.lease,
    };
    let mut held = match checkpoints.acquire(&prefix, &new_holder()).await? {
        Claim::Held(held) => held,
        Claim::Busy(Some(lease)) => {
            return Ok(Done::Skipped(format!(
                "another sweep ({}) holds the lease until {}",
                lease.holder,
                lease.expires.to_rfc3339()
            )));
        }
        Claim::Busy(None) => {
            return Ok(Done::Skipped(
                "another sweep took the lease first".to_owned(),
            ));
        }
    };
    tracing::info!(
        checkpoint = %checkpoints.key,
        resume_after = held.checkpoint.position.resume_after.as_deref().unwrap_or(""),
        "Sweep started."
    );
    let plan = StopPlan::before(invocation.deadline);
    let mut total = SweepSummary {
        position: held.checkpoint.position.clone(),
        ..SweepSummary::default()
    };
    let scope = Scope {
        bucket: &bucket,
        prefix: &prefix,
        exclude_prefix: Some(&settings.checkpoint_prefix),
        // The checkpoint object keeps progress (with its lease); no separate cursor.
        cursor: None,
        shard: event.sweep.shard,
    };
    loop {
        // Each slice saves its progress and renews the lease before the next one starts.
        let slice = plan.starting_until(Instant::now() + settings.checkpoint_every);
        let covered_before = held.checkpoint.covered_before;
        let walk = walk(
            forwarder.store.as_ref(),
            &scope,
            held.checkpoint.position.clone(),
            slice,
            invocation,
            settings.concurrency,
            |object, invocation| {
                forward_listed(forwarder, &bucket, object, covered_before, invocation)
            },
        );
        let summary = match keep_alive(&checkpoints, &mut held, walk).await? {
            Walk::Done(Ok(summary)) => summary,
            Walk::Done(Err(e)) => {
                checkpoints.save(&mut held, |_| {}, true).await?;
                return Err(e);
            }
            Walk::LeaseLost => return Ok(lease_lost(total)),
        };
        total.completed += summary.completed;
        total.skipped += summary.skipped;
        total.failed += summary.failed;
        total.still_failing += summary.still_failing;
        total.position.clone_from(&summary.position);
        total.finished = summary.finished;
        total.stopped.clone_from(&summary.stopped);
        // A slice that ended only because the slice did goes on after the save.
        let goes_on = summary.stopped == Some(Stopped::Deadline)
            && plan.may_start_now()
            && !invocation.stop.is_stopped();
        if goes_on {
            total.stopped = None;
        }
        let (position, done, finished) = (summary.position, summary.completed, summary.finished);
        let saved = checkpoints
            .save(
                &mut held,
                |c| {
                    c.position = position;
                    c.forwarded += done;
                    if finished {
                        c.status = Status::Finished;
                    }
                },
                !goes_on,
            )
            .await?;
        if !saved {
            return Ok(lease_lost(total));
        }
        if !goes_on {
            return total.into_outcome();
        }
    }
}

/// Runs `work` while renewing the lease every third of its duration.
async fn keep_alive(
    checkpoints: &Checkpoints<'_>,
    held: &mut Held,
    work: impl Future<Output = Result<SweepSummary, HandlerError>>,
) -> Result<Walk, HandlerError> {
    let mut work = std::pin::pin!(work);
    let renew_every = checkpoints.lease / 3;
    loop {
        tokio::select! {
            summary = &mut work => return Ok(Walk::Done(summary)),
            () = tokio::time::sleep(renew_every) => {
                // Outside the select's futures, so a renewal is never cut off half-way.
                if !checkpoints.save(held, |_| {}, false).await? {
                    return Ok(Walk::LeaseLost);
                }
            }
        }
    }
}

fn lease_lost(total: SweepSummary) -> Done {
    Done::Completed(format!(
        "sweep: {total}; stopped: another sweep took over the lease"
    ))
}

async fn forward_listed(
    forwarder: &Forwarder,
    bucket: &str,
    object: ListedObject,
    covered_before: Option<DateTime<Utc>>,
    invocation: Invocation,
) -> Outcome {
    if let (Some(covered), Some(modified)) = (covered_before, object.last_modified)
        && modified < covered - CLOCK_SKEW
    {
        return Ok(Done::Skipped(format!(
            "{:?} was forwarded by an earlier pass",
            object.key
        )));
    }
    match forwarder.config.mode {
        Mode::ClaimCheck => {
            forwarder
                .publish_claim(claim::Claim::of_listed(bucket, &object), bucket)
                .await
        }
        Mode::Content => {
            forwarder
                .forward_content(Source::Schedule, bucket, &object.key, &invocation)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::tests::{file_config, forwarder};
    use bucketfn::budget::Stop;
    use bucketfn::sink::{MemoryPublisher, Message, PublishError, Publisher};
    use bucketfn::storage::MemoryStore;
    use bucketfn::sweep::Position;
    use bucketfn::{Handler, ObjectStore};
    use std::sync::Arc;
    use std::time::Duration;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn sweep_event(bucket: &str) -> ObjectEvent {
        ObjectEvent::requested(bucketfn::event::EventKind::Sweep, bucket, String::new())
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("logs/{i:03}.log")).collect()
    }

    async fn checkpoint(store: &dyn ObjectStore) -> Result<Checkpoint, Box<dyn std::error::Error>> {
        let object = store
            .get("b", ".forward-to-stream/sweep.json", 1 << 16)
            .await?;
        Ok(serde_json::from_slice(&object.body)?)
    }

    #[tokio::test]
    async fn a_sweep_forwards_everything_once_and_the_next_pass_only_what_is_new() -> TestResult {
        let (store, publisher, handler) = forwarder(file_config());
        for key in keys(30) {
            store.insert("b", &key, &b"x"[..], "text/plain");
        }
        let done = handler
            .handle(&sweep_event("b"), &Invocation::default())
            .await?;
        assert!(done.to_string().contains("30 done"), "{done}");
        assert!(done.to_string().contains("finished"), "{done}");
        assert_eq!(publisher.published().len(), 30);
        let saved = checkpoint(store.as_ref()).await?;
        assert_eq!(saved.status, Status::Finished);
        assert!(saved.lease.is_none());
        // The checkpoint itself was never forwarded.
        assert!(publisher.published().iter().all(|m| {
            !m.key
                .as_deref()
                .unwrap_or("")
                .contains(".forward-to-stream")
        }));
        Ok(())
    }

    #[tokio::test]
    async fn a_sweep_out_of_time_stops_cleanly_and_the_next_continues() -> TestResult {
        let mut config = file_config();
        config.sweep.concurrency = 1;
        let (store, publisher, handler) = forwarder(config);
        for key in keys(40) {
            store.insert("b", &key, &b"x"[..], "text/plain");
        }
        // Already past its budget: the sweep stops before forwarding anything.
        let spent = Invocation {
            deadline: Some(Instant::now()),
            ..Invocation::default()
        };
        let done = handler.handle(&sweep_event("b"), &spent).await?;
        assert!(
            done.to_string()
                .contains("stopped a margin before the deadline"),
            "{done}"
        );
        assert!(publisher.published().is_empty());
        let saved = checkpoint(store.as_ref()).await?;
        assert!(saved.lease.is_none(), "a clean stop gives the lease up");
        assert_eq!(saved.status, Status::Running);

        let done = handler
            .handle(&sweep_event("b"), &Invocation::default())
            .await?;
        assert!(done.to_string().contains("finished"), "{done}");
        assert_eq!(publisher.published().len(), 40);
        Ok(())
    }

    /// A memory sink that tells the invocation to stop once it holds `after` messages, as a
    /// deadline passing while an object is forwarded would.
    struct StopsAfter {
        inner: MemoryPublisher,
        stop: Stop,
        after: usize,
    }

    #[async_trait::async_trait]
    impl Publisher for StopsAfter {
        async fn publish(&self, messages: Vec<Message>) -> Result<(), PublishError> {
            self.inner.publish(messages).await?;
            if self.inner.published().len() >= self.after {
                self.stop.stop();
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn content_cut_off_by_the_deadline_stops_the_sweep_and_the_next_continues() -> TestResult
    {
        let mut config = file_config();
        config.mode = Mode::Content;
        config.sweep.concurrency = 1;
        let store = Arc::new(MemoryStore::new());
        for key in keys(10) {
            store.insert("b", &key, &b"one\ntwo\n"[..], "text/plain");
        }
        let stop = Stop::at(None);
        let publisher = Arc::new(StopsAfter {
            inner: MemoryPublisher::new(),
            stop: stop.clone(),
            after: 6,
        });
        let handler = Forwarder::new(
            config,
            Arc::clone(&store) as Arc<dyn ObjectStore>,
            Arc::clone(&publisher) as Arc<dyn Publisher>,
        );
        let stopping = Invocation {
            stop,
            ..Invocation::default()
        };
        let done = handler.handle(&sweep_event("b"), &stopping).await?;
        let text = done.to_string();
        assert!(text.contains("3 done"), "{done}");
        assert!(
            text.contains("stopped a margin before the deadline"),
            "{done}"
        );
        assert!(text.contains("continues after \"logs/002.log\""), "{done}");
        assert_eq!(publisher.inner.published().len(), 6);
        let saved = checkpoint(store.as_ref()).await?;
        assert_eq!(saved.position.resume_after.as_deref(), Some("logs/002.log"));
        assert!(saved.lease.is_none(), "a clean stop gives the lease up");

        let done = handler
            .handle(&sweep_event("b"), &Invocation::default())
            .await?;
        assert!(done.to_string().contains("7 done"), "{done}");
        assert!(done.to_string().contains("finished"), "{done}");
        assert_eq!(publisher.inner.published().len(), 20);
        Ok(())
    }

    #[tokio::test]
    async fn a_deadline_shorter_than_the_margin_still_gets_work_done() -> TestResult {
        // The default margin is 10 s; Lambda's default timeout is 3 s.
        let (store, publisher, handler) = forwarder(file_config());
        for key in keys(5) {
            store.insert("b", &key, &b"x"[..], "text/plain");
        }
        let short = Invocation {
            deadline: Some(Instant::now() + Duration::from_secs(3)),
            ..Invocation::default()
        };
        let done = handler.handle(&sweep_event("b"), &short).await?;
        assert!(done.to_string().contains("finished"), "{done}");
        assert_eq!(publisher.published().len(), 5);
        Ok(())
    }

    #[tokio::test]
    async fn a_crashed_sweep_is_resumed_after_its_lease_expires() -> TestResult {
        let mut config = file_config();
        config.sweep.lease = Duration::from_millis(300);
        let (store, publisher, handler) = forwarder(config);
        for key in keys(20) {
            store.insert("b", &key, &b"x"[..], "text/plain");
        }
        // A sweep that got to logs/009.log and crashed, holding a lease.
        let crashed = Checkpoint {
            status: Status::Running,
            prefix: String::new(),
            position: Position {
                resume_after: Some("logs/009.log".into()),
                ..Position::default()
            },
            pass_started: Utc::now(),
            covered_before: None,
            forwarded: 10,
            lease: Some(crate::checkpoint::Lease {
                holder: "crashed".into(),
                expires: Utc::now() + chrono::Duration::milliseconds(300),
            }),
            updated: Utc::now(),
        };
        store.insert(
            "b",
            ".forward-to-stream/sweep.json",
            serde_json::to_vec(&crashed)?,
            "application/json",
        );
        let busy = handler
            .handle(&sweep_event("b"), &Invocation::default())
            .await?;
        assert!(
            matches!(&busy, Done::Skipped(why) if why.contains("crashed")),
            "{busy}"
        );
        assert!(publisher.published().is_empty());

        tokio::time::sleep(Duration::from_millis(400)).await;
        let done = handler
            .handle(&sweep_event("b"), &Invocation::default())
            .await?;
        assert!(done.to_string().contains("10 done"), "{done}");
        let first = publisher.published().first().and_then(|m| m.key.clone());
        assert_eq!(first.as_deref(), Some("b/logs/010.log"));
        assert_eq!(checkpoint(store.as_ref()).await?.forwarded, 20);
        Ok(())
    }

    #[tokio::test]
    async fn a_broker_outage_stops_the_sweep_as_retryable_keeping_progress() -> TestResult {
        let (store, publisher, handler) = forwarder(file_config());
        for key in keys(5) {
            store.insert("b", &key, &b"x"[..], "text/plain");
        }
        publisher.set_unavailable(true);
        let err = handler
            .handle(&sweep_event("b"), &Invocation::default())
            .await
            .err()
            .ok_or("outage reported as success")?;
        assert!(err.is_retryable(), "{err}");
        assert!(checkpoint(store.as_ref()).await?.lease.is_none());
        publisher.set_unavailable(false);
        handler
            .handle(&sweep_event("b"), &Invocation::default())
            .await?;
        assert_eq!(publisher.published().len(), 5);
        Ok(())
    }

    #[tokio::test]
    async fn a_schedule_without_a_bucket_needs_forward_bucket() -> TestResult {
        let (store, publisher, handler) = forwarder(file_config());
        let err = handler
            .handle(&sweep_event(""), &Invocation::default())
            .await
            .err()
            .ok_or("accepted")?;
        assert!(err.to_string().contains("SOURCE_BUCKET"), "{err}");

        let mut config = file_config();
        config.sweep.bucket = Some("b".into());
        let (store2, publisher2, handler2) = forwarder(config);
        store2.insert("b", "x.log", &b"x"[..], "text/plain");
        handler2
            .handle(&sweep_event(""), &Invocation::default())
            .await?;
        assert_eq!(publisher2.published().len(), 1);
        drop((store, publisher, handler));
        Ok(())
    }

    #[test]
    fn checkpoint_keys_keep_nested_prefixes_apart() {
        assert_eq!(checkpoint_key("c/", ""), "c/sweep.json");
        assert_eq!(checkpoint_key("c/", "logs/"), "c/sweep-logs%2F.json");
        assert_ne!(checkpoint_key("c/", "a/b"), checkpoint_key("c/", "a%2Fb"));
    }
}
