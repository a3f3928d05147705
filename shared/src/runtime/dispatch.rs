//! Runs a handler over every event of a delivery, concurrently up to a bound the whole process
//! shares, and collects one report per record. Each event runs in its own task with its own
//! stop: a slow, failing or panicking event neither stops nor hides the others, and an event
//! past its deadline is stopped, not left running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{Instrument, error, info, info_span, warn};

use super::RuntimeSettings;
use crate::budget::{MemoryBudget, Stop, StopOnDrop};
use crate::event::EventKind;
use crate::event::{DecodeError, Delivery, Envelope, ObjectEvent};
use crate::function::{Handler, Invocation, ObjectReports};
use crate::operations::Observer;
use crate::operations::ledger::{EventEntry, FileLog, collecting};
use crate::outcome::{Done, HandlerError, Outcome, RecordStatus};
use crate::sources::{NotServed, Sources};

/// How long an event past its deadline is given to let go of its stop (its blocking threads
/// noticing the stop and ending) before the outcome is reported anyway. Work that checks its
/// stop per row or per record ends well within it.
pub(crate) const STOP_GRACE: Duration = Duration::from_millis(250);

/// What every delivery of one process shares, whichever runtime brought it (HTTP requests,
/// concurrent Lambda invocations, the command line): one memory budget, one bound on the
/// events handled at once, one bound on the records a delivery may carry, and the buckets
/// its events may be for.
#[derive(Debug, Clone)]
pub struct Governor {
    memory: MemoryBudget,
    events: Arc<Semaphore>,
    concurrency: usize,
    max_records: usize,
    sources: Arc<Sources>,
}

/// A delivery that carries more records than one delivery may.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the payload carries {carried} records, over the limit of {limit} (MAX_RECORDS_PER_REQUEST)"
)]
pub struct TooManyRecords {
    pub carried: usize,
    pub limit: usize,
}

impl Governor {
    /// The governor of a process started with `settings`.
    pub fn new(settings: &RuntimeSettings) -> Self {
        let concurrency = settings.concurrency.max(1);
        Self {
            memory: MemoryBudget::new(settings.max_decode_bytes),
            events: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            max_records: settings.max_records,
            // The runtime does not start against S3 without a list; settings without one
            // are the laptop mode's (`--storage DIR`) or a test's, where any bucket is served.
            sources: Arc::new(settings.sources.clone().unwrap_or(Sources::Any)),
        }
    }

    /// The process-wide memory budget.
    pub fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    /// An invocation of this process that must stop at `deadline`.
    pub fn invocation(&self, deadline: Option<Instant>) -> Invocation {
        Invocation {
            deadline,
            stop: Stop::at(deadline),
            memory: self.memory.clone(),
            ..Invocation::default()
        }
    }

    /// Refuses, before any handler runs, a delivery with more records (object events, or
    /// records that do not decode) than one delivery may carry: each costs a handler run and
    /// its outbound calls.
    pub fn admit(&self, delivery: &Delivery) -> Result<(), TooManyRecords> {
        let carried = delivery
            .records
            .iter()
            .map(|r| r.events.as_ref().map_or(1, Vec::len))
            .sum();
        if carried > self.max_records {
            return Err(TooManyRecords {
                carried,
                limit: self.max_records,
            });
        }
        Ok(())
    }
}

/// Why no handler runs for a record.
enum NotStarted {
    /// It does not decode.
    Invalid(DecodeError),
    /// One of its events is for a bucket, or a part of one, that the function does not serve:
    /// the whole record is refused, as a forged or misrouted message.
    NotServed(NotServed),
}

/// Aborts the events of a delivery that nobody waits for any more (an HTTP client that went
/// away): their stops are set as their tasks are dropped, so their work ends too.
struct AbortUnfinished(Vec<AbortHandle>);

impl Drop for AbortUnfinished {
    fn drop(&mut self) {
        let unfinished: Vec<_> = self.0.iter().filter(|t| !t.is_finished()).collect();
        if !unfinished.is_empty() {
            warn!(
                events = unfinished.len(),
                "The delivery was abandoned before its events finished; they are stopped."
            );
            for task in unfinished {
                task.abort();
            }
        }
    }
}

/// One event and how it ended.
#[derive(Debug)]
pub struct EventReport {
    pub event: ObjectEvent,
    pub outcome: Outcome,
}

/// One record (SQS message, S3 Batch task, CloudEvent, whole payload) and how it ended.
#[derive(Debug)]
pub struct RecordReport {
    pub id: Option<String>,
    pub status: RecordStatus,
    pub events: Vec<EventReport>,
}

impl RecordReport {
    /// The outcomes of its events as one line, for logs, the CLI and response bodies.
    pub fn summary(&self) -> String {
        if let (RecordStatus::Permanent(message), true) = (&self.status, self.events.is_empty()) {
            return message.clone();
        }
        let parts: Vec<String> = self
            .events
            .iter()
            .map(|e| match &e.outcome {
                Ok(done) => done.to_string(),
                Err(error) => error.to_string(),
            })
            .collect();
        if parts.is_empty() {
            "no object events".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// Everything a runtime adapter needs to answer the platform.
#[derive(Debug)]
pub struct Report {
    pub envelope: Envelope,
    pub records: Vec<RecordReport>,
}

impl Report {
    /// The record status that stands for the whole report: retryable beats permanent beats
    /// success, as for the events of one record.
    pub fn overall(&self) -> RecordStatus {
        let mut overall = RecordStatus::Succeeded;
        for record in &self.records {
            overall.merge(&record.status);
        }
        overall
    }
}

/// Handles every event of `delivery`, each under its own stop at `invocation`'s deadline and
/// within the process's bound on events at once, and reports each record. A record with an
/// event outside the function's sources is refused, permanently, before any handler runs.
pub async fn process<H: Handler>(
    handler: &Arc<H>,
    delivery: Delivery,
    invocation: Invocation,
    governor: &Governor,
    observer: &Observer,
) -> Report {
    // Start everything first, then collect in order: the report waits for the slowest event,
    // but no event waits for another beyond the concurrency bound.
    let started: Vec<_> = delivery
        .records
        .into_iter()
        .map(|record| {
            let tasks = record
                .events
                .map_err(NotStarted::Invalid)
                .and_then(|events| start_record(handler, events, &invocation, governor, observer));
            (record.id, tasks)
        })
        .collect();

    let _abandoned = AbortUnfinished(
        started
            .iter()
            .filter_map(|(_, tasks)| tasks.as_ref().ok())
            .flatten()
            .map(|(_, task)| task.abort_handle())
            .collect(),
    );
    let mut records = Vec::with_capacity(started.len());
    for (id, tasks) in started {
        let mut status = RecordStatus::Succeeded;
        let mut events = Vec::new();
        match tasks {
            Err(NotStarted::Invalid(decode_error)) => {
                let message = decode_error.to_string();
                error!(record_id = id.as_deref().unwrap_or(""), error = %message, "Record is not a valid event.");
                status = RecordStatus::Permanent(message);
            }
            Err(NotStarted::NotServed(refused)) => {
                let message = refused.to_string();
                error!(record_id = id.as_deref().unwrap_or(""), error = %message, "Record refused.");
                status = RecordStatus::Permanent(message);
            }
            Ok(tasks) => {
                for (event, task) in tasks {
                    let outcome = task.await.unwrap_or_else(|join_error| {
                        Err(HandlerError::retryable(format!(
                            "the handler stopped abnormally: {join_error}"
                        )))
                    });
                    status.merge(&RecordStatus::of(&outcome));
                    events.push(EventReport { event, outcome });
                }
            }
        }
        records.push(RecordReport { id, status, events });
    }
    Report {
        envelope: delivery.envelope,
        records,
    }
}

/// Spawns the events of one record, or none of them when one is outside the sources.
fn start_record<H: Handler>(
    handler: &Arc<H>,
    events: Vec<ObjectEvent>,
    invocation: &Invocation,
    governor: &Governor,
    observer: &Observer,
) -> Result<Vec<(ObjectEvent, JoinHandle<Outcome>)>, NotStarted> {
    if let Some(refused) = events.iter().find_map(|e| governor.sources.admit(e).err()) {
        return Err(NotStarted::NotServed(refused));
    }
    Ok(events
        .into_iter()
        .map(|event| {
            let task = tokio::spawn(run_one(
                Arc::clone(handler),
                event.clone(),
                invocation.clone(),
                governor.clone(),
                observer.clone(),
            ));
            (event, task)
        })
        .collect())
}

async fn run_one<H: Handler>(
    handler: Arc<H>,
    event: ObjectEvent,
    invocation: Invocation,
    governor: Governor,
    observer: Observer,
) -> Outcome {
    let span = info_span!(
        "event",
        source = %event.source,
        kind = ?event.kind,
        bucket = %event.bucket.escape_debug(),
        key = %event.key.escape_debug(),
        event_id = event.id.as_deref().unwrap_or(""),
    );
    async move {
        let deadline = invocation.deadline;
        // The semaphore is never closed, so acquiring only waits, at most until the deadline.
        let permit = until(deadline, Arc::clone(&governor.events).acquire_owned())
            .await
            .and_then(Result::ok);
        let _in_flight = observer.metrics.started();
        let received = chrono::Utc::now();
        let began = Instant::now();
        let files = FileLog::default();
        let outcome = match permit {
            Some(_permit) => {
                let mut invocation = invocation;
                // A fresh stop per event: one event's deadline never stops another's work.
                invocation.stop = Stop::at(deadline);
                invocation.reports = object_reports(&observer, &event);
                let stop = invocation.stop.on_drop();
                let work = collecting(files.clone(), handle(handler.as_ref(), &event, invocation));
                finish_by(work, deadline, &stop).await
            }
            None => Err(HandlerError::retryable(format!(
                "not started before the invocation deadline: {} events (BATCH_CONCURRENCY) \
                 were already running in this process",
                governor.concurrency
            ))
            .for_sender()),
        };
        let took = began.elapsed();
        let elapsed_ms = took.as_millis() as u64;
        account(&observer, &event, &outcome, received, took, files);
        match &outcome {
            Ok(Done::Completed(what)) => info!(elapsed_ms, outcome = %what, "Event handled."),
            Ok(Done::Skipped(why)) => info!(elapsed_ms, reason = %why, "Event skipped."),
            Err(e @ HandlerError::Retryable(_)) => {
                warn!(elapsed_ms, error = %e, "Event failed; it will be retried.");
            }
            Err(e @ HandlerError::Permanent(_)) => {
                error!(elapsed_ms, error = %e, "Event failed permanently.");
            }
        }
        outcome
    }
    .instrument(span)
    .await
}

/// The handler's work on one event. It owns the invocation, so that dropping the work drops
/// every clone of the event's stop that the work itself holds.
async fn handle<H: Handler>(handler: &H, event: &ObjectEvent, invocation: Invocation) -> Outcome {
    handler.handle(event, &invocation).await
}

/// Runs `work` until `deadline`. At the deadline the work is dropped (nothing of it is written
/// any more), its stop is set, and what it still runs elsewhere (blocking threads, spawned
/// tasks) is given [`STOP_GRACE`] to notice and let go, so that it does not run on into the
/// next invocation while the outcome is reported.
async fn finish_by(
    work: impl Future<Output = Outcome>,
    deadline: Option<Instant>,
    stop: &StopOnDrop,
) -> Outcome {
    let Some(deadline) = deadline else {
        return work.await;
    };
    let finished = tokio::time::timeout_at(deadline.into(), work).await;
    if finished.is_err() && !stop.stop_and_wait(STOP_GRACE).await {
        warn!(
            grace_ms = STOP_GRACE.as_millis() as u64,
            "Work goes on after its deadline; it does not check its stop often enough."
        );
    }
    finished.unwrap_or_else(|_| {
        Err(HandlerError::retryable("not finished before the invocation deadline").for_sender())
    })
}

/// `future`'s output, or `None` if `deadline` comes first.
async fn until<F: Future>(deadline: Option<Instant>, future: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), future).await.ok(),
        None => Some(future.await),
    }
}

/// Each object a sweep reports as failed gets its own history entry (class `object`, kind
/// `swept`, under the sweep's source), so that its reason stays readable however many objects
/// the sweep handled.
fn object_reports(observer: &Observer, event: &ObjectEvent) -> ObjectReports {
    let (recorder, instance) = (observer.recorder.clone(), Arc::clone(&observer.instance));
    let (source, event_name) = (event.source, event.event_name.clone());
    ObjectReports::to(move |bucket, key, error| {
        let outcome = if error.is_retryable() {
            "retryable"
        } else {
            "permanent"
        };
        recorder.record(EventEntry {
            received: chrono::Utc::now(),
            class: "object".to_owned(),
            source: source.as_str().to_owned(),
            kind: "swept".to_owned(),
            event_name: event_name.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            id: None,
            outcome: outcome.to_owned(),
            detail: crate::outcome::chain(error),
            duration_ms: 0,
            files: Vec::new(),
            more_files: 0,
            instance: instance.to_string(),
        });
    })
}

/// Counts the event in the metrics and queues its ledger entry.
fn account(
    observer: &Observer,
    event: &ObjectEvent,
    outcome: &Outcome,
    received: chrono::DateTime<chrono::Utc>,
    took: std::time::Duration,
    files: FileLog,
) {
    let class = if event.kind == EventKind::Sweep {
        "sweep"
    } else {
        "object"
    };
    let (label, detail) = match outcome {
        Ok(Done::Completed(what)) => ("completed", what.clone()),
        Ok(Done::Skipped(why)) => ("skipped", why.clone()),
        Err(e @ HandlerError::Retryable(_)) => ("retryable", e.to_string()),
        Err(e @ HandlerError::Permanent(_)) => ("permanent", e.to_string()),
    };
    observer
        .metrics
        .finished(class, label, event.source.as_str(), took);
    let (files, more_files) = files.take();
    observer.recorder.record(EventEntry {
        received,
        class: class.to_owned(),
        source: event.source.as_str().to_owned(),
        kind: format!("{:?}", event.kind).to_ascii_lowercase(),
        event_name: event.event_name.clone(),
        bucket: event.bucket.clone(),
        key: event.key.clone(),
        id: event.id.clone(),
        outcome: label.to_owned(),
        detail,
        duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        files,
        more_files,
        instance: observer.instance.to_string(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Stopped;
    use crate::config::Env;
    use crate::operations::ledger::{LedgerSettings, Recorder};
    use crate::operations::metrics::Metrics;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio::sync::Notify;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Does what the event's key says, and counts what it saw.
    #[derive(Default)]
    struct Probe {
        running: AtomicUsize,
        most_at_once: AtomicUsize,
        /// Set by blocking work once it saw its stop and returned.
        let_go: Arc<AtomicBool>,
        release: Notify,
        quit: Notify,
    }

    impl Handler for Probe {
        async fn handle(&self, event: &ObjectEvent, invocation: &Invocation) -> Outcome {
            match event.key.as_str() {
                // CPU work on a blocking thread that checks its stop, as a decode does.
                "spin" => {
                    let (stop, let_go) = (invocation.stop.clone(), Arc::clone(&self.let_go));
                    tokio::task::spawn_blocking(move || {
                        while stop.check().is_ok() {
                            std::hint::spin_loop();
                        }
                        let_go.store(true, Ordering::SeqCst);
                        Err::<Done, _>(Stopped.into())
                    })
                    .await
                    .map_err(HandlerError::retryable)?
                }
                "count" => {
                    let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                    self.most_at_once.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    self.running.fetch_sub(1, Ordering::SeqCst);
                    Ok(Done::Completed("counted".into()))
                }
                "hold" => {
                    self.release.notified().await;
                    Ok(Done::Completed("released".into()))
                }
                "quit" => {
                    invocation.stop.stop();
                    self.quit.notify_one();
                    Ok(Done::Completed("stopped itself".into()))
                }
                _ => {
                    self.quit.notified().await;
                    match invocation.stop.check() {
                        Ok(()) => Ok(Done::Completed("not stopped".into())),
                        Err(e) => Err(e.into()),
                    }
                }
            }
        }
    }

    fn observer() -> Result<Observer, Box<dyn std::error::Error>> {
        let ledger = LedgerSettings::in_memory(100).open("probe")?;
        Ok(Observer {
            metrics: Arc::new(Metrics::default()),
            recorder: Recorder::start(ledger),
            instance: "test/1".into(),
        })
    }

    fn governor(concurrency: &str) -> Result<Governor, Box<dyn std::error::Error>> {
        let mut env = Env::from_pairs([("BATCH_CONCURRENCY", concurrency)]);
        let settings = RuntimeSettings::read(&mut env);
        env.finish()?;
        Ok(Governor::new(&settings))
    }

    fn delivery(keys: &[&str]) -> Delivery {
        let events = keys
            .iter()
            .map(|k| ObjectEvent::requested(EventKind::Created, "b", (*k).to_owned()))
            .collect();
        Delivery::single(None, events)
    }

    fn outcomes(report: &Report) -> Vec<String> {
        report.records[0]
            .events
            .iter()
            .map(|e| match &e.outcome {
                Ok(done) => done.to_string(),
                Err(error) => error.to_string(),
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_past_its_deadline_is_stopped_and_reported_retryable() -> TestResult {
        let (probe, governor, observer) = (Arc::new(Probe::default()), governor("2")?, observer()?);
        let invocation = governor.invocation(Some(Instant::now() + Duration::from_millis(100)));
        let report = process(
            &probe,
            delivery(&["spin"]),
            invocation,
            &governor,
            &observer,
        )
        .await;
        // The work may see its deadline before the runtime's timer fires: retryable either way.
        assert!(
            matches!(report.overall(), RecordStatus::Retryable(_)),
            "{:?}",
            report.overall()
        );
        for _ in 0..3000 {
            if probe.let_go.load(Ordering::SeqCst) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err("the blocking work never saw its stop".into())
    }

    #[tokio::test]
    async fn one_events_stop_does_not_stop_another() -> TestResult {
        let (probe, governor, observer) = (Arc::new(Probe::default()), governor("2")?, observer()?);
        let invocation = governor.invocation(Some(Instant::now() + Duration::from_secs(60)));
        let report = process(
            &probe,
            delivery(&["quit", "other"]),
            invocation,
            &governor,
            &observer,
        )
        .await;
        assert_eq!(
            outcomes(&report),
            ["done: stopped itself", "done: not stopped"]
        );
        Ok(())
    }

    #[tokio::test]
    async fn deliveries_handled_at_once_share_one_bound_on_events() -> TestResult {
        let (probe, governor, observer) = (Arc::new(Probe::default()), governor("1")?, observer()?);
        let run = || {
            process(
                &probe,
                delivery(&["count", "count"]),
                governor.invocation(None),
                &governor,
                &observer,
            )
        };
        let reports = futures_util::future::join_all([run(), run(), run()]).await;
        assert!(reports.iter().all(|r| r.overall().is_success()));
        assert_eq!(probe.most_at_once.load(Ordering::SeqCst), 1);
        Ok(())
    }

    #[tokio::test]
    async fn an_event_that_cannot_start_before_its_deadline_is_retryable() -> TestResult {
        let (probe, governor, observer) = (Arc::new(Probe::default()), governor("1")?, observer()?);
        let holding = {
            let (probe, governor, observer) =
                (Arc::clone(&probe), governor.clone(), observer.clone());
            tokio::spawn(async move {
                let invocation = governor.invocation(None);
                process(
                    &probe,
                    delivery(&["hold"]),
                    invocation,
                    &governor,
                    &observer,
                )
                .await
            })
        };
        while governor.events.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let invocation = governor.invocation(Some(Instant::now() + Duration::from_millis(50)));
        let report = process(
            &probe,
            delivery(&["count"]),
            invocation,
            &governor,
            &observer,
        )
        .await;
        let [outcome] = outcomes(&report).try_into().map_err(|_| "one outcome")?;
        assert!(
            outcome.starts_with(
                "not started before the invocation deadline: 1 events (BATCH_CONCURRENCY)"
            ),
            "{outcome}"
        );
        probe.release.notify_one();
        assert!(holding.await?.overall().is_success());
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_delivery_stops_its_work() -> TestResult {
        let (probe, governor, observer) = (Arc::new(Probe::default()), governor("2")?, observer()?);
        let abandoned = {
            let (probe, governor) = (Arc::clone(&probe), governor.clone());
            tokio::spawn(async move {
                let invocation = governor.invocation(None);
                process(
                    &probe,
                    delivery(&["spin"]),
                    invocation,
                    &governor,
                    &observer,
                )
                .await
            })
        };
        while governor.events.available_permits() > 1 {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        for _ in 0..3000 {
            if probe.let_go.load(Ordering::SeqCst) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err("the abandoned work never saw its stop".into())
    }

    #[tokio::test]
    async fn a_record_with_an_event_outside_the_sources_is_refused_before_any_handler_runs()
    -> TestResult {
        let mut env = Env::from_pairs([("SOURCE_BUCKETS", "b")]);
        let governor = Governor::new(&RuntimeSettings::read(&mut env));
        env.finish()?;
        let (probe, observer) = (Arc::new(Probe::default()), observer()?);
        let event =
            |bucket: &str| ObjectEvent::requested(EventKind::Created, bucket, "count".to_owned());
        let foreign = Delivery {
            envelope: Envelope::SqsBatch,
            records: vec![
                crate::event::Record {
                    id: Some("mixed".into()),
                    events: Ok(vec![event("b"), event("elsewhere")]),
                },
                crate::event::Record {
                    id: Some("sweep".into()),
                    events: Ok(vec![ObjectEvent::requested(
                        EventKind::Sweep,
                        "elsewhere",
                        String::new(),
                    )]),
                },
            ],
        };
        let report = process(
            &probe,
            foreign,
            governor.invocation(None),
            &governor,
            &observer,
        )
        .await;
        for record in &report.records {
            assert_eq!(
                record.status,
                RecordStatus::Permanent(
                    "bucket \"elsewhere\" is not one this function serves (SOURCE_BUCKETS)".into()
                ),
                "{:?}",
                record.id
            );
            assert_eq!(record.summary(), record.status.message());
        }
        assert_eq!(probe.most_at_once.load(Ordering::SeqCst), 0);

        let served = process(
            &probe,
            delivery(&["count"]),
            governor.invocation(None),
            &governor,
            &observer,
        )
        .await;
        assert!(served.overall().is_success(), "{:?}", served.overall());
        Ok(())
    }

    #[test]
    fn admit_counts_every_object_event_of_every_record() -> TestResult {
        let mut env = Env::from_pairs([("MAX_RECORDS_PER_REQUEST", "2")]);
        let governor = Governor::new(&RuntimeSettings::read(&mut env));
        env.finish()?;
        assert_eq!(governor.admit(&delivery(&["a", "b"])), Ok(()));
        assert_eq!(
            governor.admit(&delivery(&["a", "b", "c"])),
            Err(TooManyRecords {
                carried: 3,
                limit: 2
            })
        );
        Ok(())
    }
}
