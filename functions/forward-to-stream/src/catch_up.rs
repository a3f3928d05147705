//! Catch-up sweeps (schedules, PingSource, `sweep` on the command line): every object under the
//! prefix whose version was not forwarded yet (by an event or an earlier pass: its marker says
//! so), in key order, with progress saved in the checkpoint and the lease renewed while work
//! runs, stopping cleanly before the time budget runs out.

use std::future::Future;
use std::time::Instant;

use bucketfn::event::EventKind;
use bucketfn::storage::ListedObject;
use bucketfn::sweep::{Scope, StopPlan, Stopped, SweepSummary, sweep, walk};
use bucketfn::{Done, HandlerError, Invocation, ObjectEvent, ObjectStore, Outcome};
use chrono::{DateTime, Utc};

use crate::checkpoint::{Checkpoints, Held, Status, new_holder};
use crate::config::SweepConfig;
use crate::forwarded::{self, Alongside, Found, Markers, already};
use bucketfn::lease::Taken;

/// How much earlier than the store's time of the pass an object of a checkpoint from before
/// markers must be to count as forwarded by it: the store's clock and ours may disagree.
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

/// What a catch-up pass needs of the function: where it reads, how it sweeps, the markers of
/// what was forwarded, and how it forwards one object.
pub(crate) trait Forwarding: Sync {
    fn store(&self) -> &dyn ObjectStore;
    fn settings(&self) -> &SweepConfig;
    /// `SOURCE_PREFIX`: what a sweep that names none walks.
    fn prefix(&self) -> &str;
    fn markers<'a>(&'a self, bucket: &'a str) -> Markers<'a>;
    /// Forwards the object `event` names, as the event itself would be.
    fn forward_event(
        &self,
        event: &ObjectEvent,
        invocation: &Invocation,
    ) -> impl Future<Output = Outcome> + Send;
    /// Forwards version `version` of the listed `object`, whose markers (`found`) say it was
    /// not forwarded yet.
    fn forward_listed(
        &self,
        bucket: &str,
        object: ListedObject,
        version: &str,
        found: Found,
        invocation: &Invocation,
    ) -> impl Future<Output = Outcome> + Send;
}

/// How one slice of the walk ended.
enum Walk {
    Done(Result<SweepSummary, HandlerError>),
    LeaseLost,
}

pub(crate) async fn run(
    forwarder: &impl Forwarding,
    event: &ObjectEvent,
    invocation: &Invocation,
) -> Outcome {
    let settings = forwarder.settings();
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
        forwarder.prefix().to_owned()
    } else {
        event.key.clone()
    };
    if let Some(n) = event.sweep.latest {
        return latest(forwarder, &bucket, &prefix, n, event, invocation).await;
    }
    let key = checkpoint_key(&settings.checkpoint_prefix, &prefix);
    let checkpoints = Checkpoints {
        store: forwarder.store(),
        bucket: &bucket,
        key: event
            .sweep
            .shard
            .map_or_else(|| key.clone(), |s| s.progress_key(&key)),
        lease: settings.lease,
    };
    let mut held = match checkpoints.acquire(&prefix, &new_holder()).await? {
        Taken::Held(held) => held,
        Taken::Busy(Some(lease)) => {
            return Ok(Done::Skipped(format!(
                "another sweep ({}) holds the lease until {}",
                lease.holder,
                lease.expires.to_rfc3339()
            )));
        }
        Taken::Busy(None) => {
            return Ok(Done::Skipped(
                "another sweep took the lease first".to_owned(),
            ));
        }
    };
    tracing::info!(
        checkpoint = %checkpoints.key,
        resume_after = held.state.position.resume_after.as_deref().unwrap_or(""),
        "Sweep started."
    );
    let plan = StopPlan::before(invocation.deadline);
    let mut total = SweepSummary {
        position: held.state.position.clone(),
        ..SweepSummary::default()
    };
    let scope = Scope {
        bucket: &bucket,
        prefix: &prefix,
        exclude_prefix: Some(&settings.checkpoint_prefix),
        // The checkpoint object keeps progress (with its lease); no separate cursor.
        cursor: None,
        shard: event.sweep.shard,
        latest: None,
    };
    let markers = forwarder.markers(&bucket);
    loop {
        // Each slice saves its progress and renews the lease before the next one starts.
        let slice = plan.starting_until(Instant::now() + settings.checkpoint_every);
        let from = held.state.position.clone();
        let alongside = Alongside::new(
            &markers,
            &prefix,
            from.resume_after.as_deref(),
            event.sweep.shard,
        );
        let pass = Pass {
            forwarder,
            bucket: &bucket,
            markers: &markers,
            alongside: &alongside,
            covered_before: held.state.covered_before,
        };
        let walk = walk(
            forwarder.store(),
            &scope,
            from,
            slice,
            invocation,
            settings.concurrency,
            |object, invocation| {
                alongside.expect(&object.key);
                pass.forward(object, invocation)
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
        if summary.finished {
            pass.drop_orphans_at_the_end(&plan, invocation).await;
        }
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

/// The `n` most recently modified objects under `prefix`, each forwarded as an event for it
/// would be (a version forwarded already is skipped by its marker): a one-off run beside the
/// passes, which keeps no checkpoint and takes no lease.
async fn latest(
    forwarder: &impl Forwarding,
    bucket: &str,
    prefix: &str,
    n: usize,
    event: &ObjectEvent,
    invocation: &Invocation,
) -> Outcome {
    let settings = forwarder.settings();
    let scope = Scope {
        bucket,
        prefix,
        exclude_prefix: Some(&settings.checkpoint_prefix),
        cursor: None,
        shard: event.sweep.shard,
        latest: Some(n),
    };
    let summary = sweep(
        forwarder.store(),
        scope,
        invocation,
        settings.concurrency,
        |object, invocation| async move {
            let created = ObjectEvent::requested(EventKind::Created, bucket, object.key);
            forwarder.forward_event(&created, &invocation).await
        },
    )
    .await?;
    summary.into_outcome()
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

/// What one slice of a pass forwards with.
struct Pass<'a, F> {
    forwarder: &'a F,
    bucket: &'a str,
    markers: &'a Markers<'a>,
    alongside: &'a Alongside<'a>,
    /// From a checkpoint older than markers: what its passes had covered.
    covered_before: Option<DateTime<Utc>>,
}

impl<F: Forwarding> Pass<'_, F> {
    /// Forwards the listed object unless its version was forwarded already, then drops the
    /// markers of gone objects that the listing of markers passed on the way.
    async fn forward(&self, object: ListedObject, invocation: Invocation) -> Outcome {
        let (found, orphans) = self.alongside.lookup(&object.key).await?;
        let outcome = self.forward_unless_done(object, found, &invocation).await;
        self.markers.drop_orphans(orphans, &invocation.stop).await;
        outcome
    }

    async fn forward_unless_done(
        &self,
        object: ListedObject,
        found: forwarded::Found,
        invocation: &Invocation,
    ) -> Outcome {
        let (forwarder, bucket) = (self.forwarder, self.bucket);
        let version = forwarded::listed_version(&object);
        if let Some(done) = already(bucket, &object.key, &found, &version) {
            // Markers of other versions are left over from before (a crash, a rewrite).
            if found.markers.len() > 1 {
                let stale = found.markers.iter().filter(|m| m.version != version);
                self.markers.drop_all(stale).await;
            }
            return Ok(done);
        }
        if let (Some(covered), Some(modified)) = (self.covered_before, object.last_modified)
            && modified < covered - CLOCK_SKEW
        {
            return Ok(Done::Skipped(format!(
                "{:?} was forwarded by a pass before markers were kept",
                object.key
            )));
        }
        forwarder
            .forward_listed(bucket, object, &version, found, invocation)
            .await
    }

    /// The markers after the last object of a finished pass whose objects are gone, while the
    /// plan allows work to start.
    async fn drop_orphans_at_the_end(&self, plan: &StopPlan, invocation: &Invocation) {
        if !plan.may_start_now() || invocation.stop.is_stopped() {
            return;
        }
        match self.alongside.rest().await {
            Ok(orphans) => {
                let stop = invocation.stop.sooner(plan.objects_stop);
                self.markers.drop_orphans(orphans, &stop).await;
            }
            Err(e) => tracing::warn!(error = %e, "Markers after the last object not checked."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // Through the whole function, as a sweep meets it.
    use crate::checkpoint::Checkpoint;
    use crate::tests::{file_config, forwarder, stopping_after};
    use crate::{Forwarder, Mode};
    use bucketfn::sink::{MemoryPublisher, Publisher};
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
        let (handler, publisher, stopping) = stopping_after(config, &store, 6);
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

    fn dedupe_ids(publisher: &MemoryPublisher) -> Vec<String> {
        publisher
            .published()
            .iter()
            .filter_map(|m| {
                let id = m
                    .headers
                    .iter()
                    .find(|(n, _)| n == "dedupe_id" || n == "ce_id");
                id.map(|(_, v)| v.clone())
            })
            .collect()
    }

    fn markers(store: &MemoryStore) -> Vec<String> {
        store
            .keys()
            .into_iter()
            .filter(|(_, k)| {
                [true, false].iter().any(|&content| {
                    k.starts_with(&format!(".forward-to-stream/{}", forwarded::dir(content)))
                })
            })
            .map(|(_, k)| k)
            .collect()
    }

    #[tokio::test]
    async fn what_events_and_earlier_passes_forwarded_is_not_forwarded_again() -> TestResult {
        for mode in [Mode::ClaimCheck, Mode::Content] {
            let mut config = file_config();
            config.mode = mode;
            let (store, publisher, handler) = forwarder(config);
            for (n, key) in keys(6).iter().enumerate() {
                store.insert("b", key, format!("line {n}\n"), "text/plain");
            }
            let inv = Invocation::default();
            let created = crate::tests::event("ObjectCreated:Put", "b", "logs/002.log")?;
            handler.handle(&created, &inv).await?;
            // The same event again, as a queue may deliver it.
            let again = handler.handle(&created, &inv).await?;
            assert!(
                again.to_string().contains("was forwarded already"),
                "{mode:?}: {again}"
            );
            let first = handler.handle(&sweep_event("b"), &inv).await?;
            assert!(
                first.to_string().contains("5 done, 1 skipped"),
                "{mode:?}: {first}"
            );
            let second = handler.handle(&sweep_event("b"), &inv).await?;
            assert!(
                second.to_string().contains("0 done, 6 skipped"),
                "{mode:?}: {second}"
            );
            let mut ids = dedupe_ids(&publisher);
            assert_eq!(ids.len(), 6, "{mode:?}: {ids:?}");
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 6, "{mode:?}: each once");

            // A new version is forwarded by the next pass, and the old one's marker goes.
            store.insert("b", "logs/004.log", &b"rewritten\n"[..], "text/plain");
            let third = handler.handle(&sweep_event("b"), &inv).await?;
            assert!(
                third.to_string().contains("1 done, 5 skipped"),
                "{mode:?}: {third}"
            );
            assert_eq!(publisher.published().len(), 7);
            assert_eq!(markers(&store).len(), 6, "{:?}", markers(&store));
        }
        Ok(())
    }

    #[tokio::test]
    async fn markers_of_removed_objects_are_dropped_by_a_finished_pass() -> TestResult {
        let (store, _publisher, handler) = forwarder(file_config());
        for key in keys(5) {
            store.insert("b", &key, &b"x"[..], "text/plain");
        }
        let inv = Invocation::default();
        handler.handle(&sweep_event("b"), &inv).await?;
        assert_eq!(markers(&store).len(), 5);
        // One from the middle, and the last: the listing of markers passes the first on the
        // way to the next object, and the other only once the walk is over.
        store.delete("b", "logs/001.log").await?;
        store.delete("b", "logs/004.log").await?;
        let done = handler.handle(&sweep_event("b"), &inv).await?;
        assert!(done.to_string().contains("0 done, 3 skipped"), "{done}");
        let left = markers(&store);
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(
            left.iter()
                .all(|m| !m.contains("001") && !m.contains("004")),
            "{left:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_large_object_cut_off_resumes_after_its_last_acknowledged_batch() -> TestResult {
        let mut config = file_config();
        config.mode = Mode::Content;
        config.content.batch_records = 2;
        let store = Arc::new(MemoryStore::new());
        let lines: String = (0..10).map(|n| format!("record {n}\n")).collect();
        store.insert("b", "logs/big.log", lines, "text/plain");
        let (handler, publisher, stopping) = stopping_after(config, &store, 4);
        let first = handler.handle(&sweep_event("b"), &stopping).await?;
        assert!(first.to_string().contains("0 done"), "{first}");
        assert!(
            first.to_string().contains("continues from the beginning"),
            "{first}"
        );
        assert_eq!(publisher.inner.published().len(), 4);
        assert!(
            markers(&store).iter().any(|m| m.ends_with(" partial")),
            "{:?}",
            markers(&store)
        );

        let second = handler
            .handle(&sweep_event("b"), &Invocation::default())
            .await?;
        assert!(second.to_string().contains("1 done"), "{second}");
        let etag = store
            .head("b", "logs/big.log")
            .await?
            .etag
            .ok_or("no etag")?;
        let ids = dedupe_ids(&publisher.inner);
        let expected: Vec<String> = (0..10).map(|n| format!("{etag}:{n}")).collect();
        assert_eq!(ids, expected, "each record once, in order");
        let left = markers(&store);
        assert!(
            left.len() == 1 && !left[0].ends_with(" partial"),
            "{left:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_checkpoint_from_before_markers_passes_over_what_its_passes_covered() -> TestResult {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("b/logs"))?;
        std::fs::create_dir_all(dir.path().join("b/.forward-to-stream"))?;
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for key in ["logs/old.log", "logs/new.log"] {
            let path = dir.path().join("b").join(key);
            std::fs::write(&path, b"x\n")?;
            if key == "logs/old.log" {
                std::fs::File::options()
                    .write(true)
                    .open(&path)?
                    .set_modified(hour_ago)?;
            }
        }
        let began = (Utc::now() - chrono::Duration::minutes(30)).to_rfc3339();
        let legacy = format!(
            r#"{{"status": "finished", "prefix": "", "last_key": "logs/old.log",
            "pass_started": "{began}", "covered_before": null, "forwarded": 1,
            "lease": null, "updated": "{began}"}}"#
        );
        std::fs::write(dir.path().join("b/.forward-to-stream/sweep.json"), legacy)?;
        let store = Arc::new(bucketfn::storage::LocalStore::new(dir.path()));
        let publisher = Arc::new(MemoryPublisher::new());
        let handler = Forwarder::new(
            file_config(),
            Arc::clone(&store) as Arc<dyn ObjectStore>,
            Arc::clone(&publisher) as Arc<dyn Publisher>,
        );
        let done = handler
            .handle(&sweep_event("b"), &Invocation::default())
            .await?;
        assert!(done.to_string().contains("1 done, 1 skipped"), "{done}");
        let sent = publisher.published();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].key.as_deref(), Some("b/logs/new.log"));
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
            markers: true,
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
