//! Runs a handler over every event of a delivery, concurrently up to a bound, and collects one
//! report per record. Each event runs in its own task: a slow, failing or panicking event
//! neither stops nor hides the others.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{Instrument, error, info, info_span, warn};

use super::{Handler, Invocation, Observer};
use crate::event::EventKind;
use crate::event::{Delivery, Envelope, ObjectEvent};
use crate::ledger::{EventEntry, FileLog, collecting};
use crate::outcome::{Done, HandlerError, Outcome, RecordStatus};

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

/// Handles every event of `delivery` and reports each record.
pub async fn process<H: Handler>(
    handler: &Arc<H>,
    delivery: Delivery,
    invocation: Invocation,
    concurrency: usize,
    observer: &Observer,
) -> Report {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    // Start everything first, then collect in order: the report waits for the slowest event,
    // but no event waits for another beyond the concurrency bound.
    let started: Vec<_> = delivery
        .records
        .into_iter()
        .map(|record| {
            let tasks = record.events.map(|events| {
                events
                    .into_iter()
                    .map(|event| {
                        let task = tokio::spawn(run_one(
                            Arc::clone(handler),
                            event.clone(),
                            invocation.clone(),
                            Arc::clone(&permits),
                            observer.clone(),
                        ));
                        (event, task)
                    })
                    .collect::<Vec<(ObjectEvent, JoinHandle<Outcome>)>>()
            });
            (record.id, tasks)
        })
        .collect();

    let mut records = Vec::with_capacity(started.len());
    for (id, tasks) in started {
        let mut status = RecordStatus::Succeeded;
        let mut events = Vec::new();
        match tasks {
            Err(decode_error) => {
                let message = decode_error.to_string();
                error!(record_id = id.as_deref().unwrap_or(""), error = %message, "Record is not a valid event.");
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

async fn run_one<H: Handler>(
    handler: Arc<H>,
    event: ObjectEvent,
    invocation: Invocation,
    permits: Arc<Semaphore>,
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
        // The semaphore is never closed, so acquiring only waits.
        let _permit = permits.acquire_owned().await.ok();
        let _in_flight = observer.metrics.started();
        let received = chrono::Utc::now();
        let began = Instant::now();
        let files = FileLog::default();
        let work = collecting(files.clone(), handler.handle(&event, &invocation));
        let outcome = match invocation.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), work)
                .await
                .unwrap_or_else(|_| {
                    Err(HandlerError::retryable(
                        "not finished before the invocation deadline",
                    ))
                }),
            None => work.await,
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
