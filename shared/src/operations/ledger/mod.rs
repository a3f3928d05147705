//! What a function has done: one entry per event (source, kind, time received, the files it
//! touched with a status and time each, outcome, duration) and counters over all of them, in
//! memory (bounded) or in Redis so that every instance behind one route shares one view.
//! Recording happens off the event's path: a ledger that is slow or down never fails or
//! delays an event; it is logged and counted.

mod memory;
mod redis;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::Env;
use crate::outcome::BoxError;

pub use memory::MemoryLedger;
pub use redis::RedisLedger;

/// One file an event touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// `bucket/key`, or a path on another service (`ftp://…`, `amqp://…`).
    pub target: String,
    /// `read`, `written`, `deleted`, `uploaded`, `published`, …
    pub action: String,
    /// `ok`, `missing` or the error.
    pub status: String,
    pub at: DateTime<Utc>,
}

/// One event, as the history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEntry {
    pub received: DateTime<Utc>,
    /// `object` or `sweep`.
    pub class: String,
    pub source: String,
    pub kind: String,
    pub event_name: String,
    pub bucket: String,
    pub key: String,
    pub id: Option<String>,
    /// `completed`, `skipped`, `retryable` or `permanent`.
    pub outcome: String,
    pub detail: String,
    pub duration_ms: u64,
    pub files: Vec<FileEntry>,
    /// Files touched beyond those listed (sweeps touch thousands).
    pub more_files: u64,
    /// Which instance handled it.
    pub instance: String,
}

impl EventEntry {
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome.as_str(), "completed" | "skipped")
    }
}

/// Counters over every event recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub object_events: Tally,
    pub sweep_events: Tally,
    /// By outcome: completed, skipped, retryable, permanent.
    pub by_outcome: BTreeMap<String, u64>,
    /// By event source: aws-s3, minio, schedule, …
    pub by_source: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub succeeded: u64,
    pub failed: u64,
}

impl Stats {
    /// Counts one more event.
    pub fn add(&mut self, entry: &EventEntry) {
        let tally = if entry.class == "sweep" {
            &mut self.sweep_events
        } else {
            &mut self.object_events
        };
        if entry.succeeded() {
            tally.succeeded += 1;
        } else {
            tally.failed += 1;
        }
        *self.by_outcome.entry(entry.outcome.clone()).or_default() += 1;
        *self.by_source.entry(entry.source.clone()).or_default() += 1;
    }
}

/// A page of history, newest first, and how many entries there are in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryPage {
    pub entries: Vec<EventEntry>,
    pub total: u64,
}

/// A ledger backend failed.
#[derive(Debug, thiserror::Error)]
#[error("the event ledger ({backend}) failed")]
pub struct LedgerError {
    pub backend: &'static str,
    #[source]
    pub source: BoxError,
}

/// Where entries are kept.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    async fn record(&self, entry: &EventEntry) -> Result<(), LedgerError>;
    async fn stats(&self) -> Result<Stats, LedgerError>;
    /// Entries newest first, skipping `offset`.
    async fn history(&self, offset: u64, limit: u64) -> Result<HistoryPage, LedgerError>;
}

/// Which ledger to use, from `LEDGER_URL` (`memory`, the default, or `redis://…`),
/// `LEDGER_CAPACITY` (entries kept), `LEDGER_PREFIX` (Redis key prefix) and `LEDGER_CA_FILE`
/// (PEM certificates a `rediss://` ledger trusts besides the system's). `Debug` hides the
/// password a Redis URL may carry.
#[derive(Clone, PartialEq, Eq)]
pub struct LedgerSettings {
    pub url: Option<String>,
    pub capacity: u64,
    pub prefix: Option<String>,
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for LedgerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerSettings")
            .field("url", &self.url.as_deref().map(crate::config::redact_url))
            .field("capacity", &self.capacity)
            .field("prefix", &self.prefix)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl LedgerSettings {
    /// This instance's own history of `capacity` events, as `LEDGER_URL` unset gives: for the
    /// tests of what records into it.
    #[cfg(any(test, feature = "testing"))]
    pub fn in_memory(capacity: u64) -> Self {
        Self {
            url: None,
            capacity,
            prefix: None,
            ca_file: None,
        }
    }

    pub fn read(env: &mut Env) -> Self {
        let url: Option<String> = env.optional("LEDGER_URL");
        if let Some(url) = &url
            && url != "memory"
            && !url.starts_with("redis://")
            && !url.starts_with("rediss://")
        {
            env.problem(
                "LEDGER_URL",
                format!("{url:?} is neither `memory` nor a redis:// URL"),
            );
        }
        let capacity = env.or("LEDGER_CAPACITY", 1000u64);
        if capacity == 0 {
            env.problem("LEDGER_CAPACITY", "must be at least 1");
        }
        let ca_file: Option<PathBuf> = env.optional("LEDGER_CA_FILE");
        if ca_file.is_some() && !url.as_deref().is_some_and(|u| u.starts_with("rediss://")) {
            // A CA file beside a ledger without TLS means the operator expects TLS that is off.
            env.problem(
                "LEDGER_CA_FILE",
                "is set but LEDGER_URL is not a rediss:// URL",
            );
        }
        Self {
            url: url.filter(|u| u != "memory"),
            capacity: capacity.max(1),
            prefix: env.optional("LEDGER_PREFIX"),
            ca_file,
        }
    }

    /// The ledger these settings name; Redis connects lazily, so a Redis that is down at
    /// start-up costs only ledger errors, not the function. `LEDGER_CA_FILE` is read now, so
    /// that a bad file stops the start-up.
    pub fn open(&self, function: &str) -> Result<Arc<dyn Ledger>, LedgerError> {
        match &self.url {
            None => Ok(Arc::new(MemoryLedger::new(self.capacity))),
            Some(url) => {
                let prefix = self
                    .prefix
                    .clone()
                    .unwrap_or_else(|| format!("bucketfn:{function}"));
                let ca_certificates =
                    match &self.ca_file {
                        Some(path) => crate::tls::ca_certificates("LEDGER_CA_FILE", path).map_err(
                            |source| LedgerError {
                                backend: "redis",
                                source: Box::new(source),
                            },
                        )?,
                        None => Vec::new(),
                    };
                Ok(Arc::new(RedisLedger::new(
                    url,
                    prefix,
                    self.capacity,
                    &ca_certificates,
                )?))
            }
        }
    }
}

/// How long one write may take before it counts as a ledger error.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Entries waiting to be written; beyond this they are dropped and counted.
const QUEUE: usize = 1024;

/// Writes entries in the background and counts what could not be written.
#[derive(Clone)]
pub struct Recorder {
    ledger: Arc<dyn Ledger>,
    queue: mpsc::Sender<EventEntry>,
    errors: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts the background writer on the current Tokio runtime.
    pub fn start(ledger: Arc<dyn Ledger>) -> Self {
        let (queue, mut entries) = mpsc::channel::<EventEntry>(QUEUE);
        let errors = Arc::new(AtomicU64::new(0));
        let (writer, counted) = (Arc::clone(&ledger), Arc::clone(&errors));
        tokio::spawn(async move {
            while let Some(entry) = entries.recv().await {
                let failure = match tokio::time::timeout(WRITE_TIMEOUT, writer.record(&entry)).await
                {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => crate::outcome::chain(&e),
                    Err(_) => format!("writing took longer than {WRITE_TIMEOUT:?}"),
                };
                counted.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %failure, "Event not recorded in the ledger.");
            }
        });
        Self {
            ledger,
            queue,
            errors,
        }
    }

    /// Queues an entry; never waits.
    pub fn record(&self, entry: EventEntry) {
        if self.queue.try_send(entry).is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("Event not recorded: the ledger queue is full.");
        }
    }

    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// Entries this instance could not record.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Counts a failed read of the ledger (pages, stats).
    pub fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Files listed per event; sweeps touch far more.
const FILES_PER_EVENT: usize = 200;

/// The files one event touched, collected while it runs.
#[derive(Debug, Clone, Default)]
pub struct FileLog(Arc<Mutex<(Vec<FileEntry>, u64)>>);

impl FileLog {
    fn push(&self, entry: FileEntry) {
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if log.0.len() < FILES_PER_EVENT {
            log.0.push(entry);
        } else {
            log.1 += 1;
        }
    }

    /// The files listed and how many more there were.
    pub fn take(&self) -> (Vec<FileEntry>, u64) {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

tokio::task_local! {
    static CURRENT: FileLog;
}

/// Runs `work` with `log` collecting the files it touches (through [`note`]).
pub async fn collecting<F: std::future::Future>(log: FileLog, work: F) -> F::Output {
    CURRENT.scope(log, work).await
}

/// Notes that the running event touched `target`; does nothing outside an event.
pub fn note(target: impl Into<String>, action: &str, status: impl Into<String>) {
    let entry = FileEntry {
        target: target.into(),
        action: action.to_owned(),
        status: status.into(),
        at: Utc::now(),
    };
    let _ = CURRENT.try_with(|log| log.push(entry));
}

/// A name for this instance in the history: the host (container, Lambda sandbox) and process.
pub fn instance_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_owned());
    format!("{host}/{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn entry(class: &str, outcome: &str, source: &str, key: &str) -> EventEntry {
        EventEntry {
            received: Utc::now(),
            class: class.to_owned(),
            source: source.to_owned(),
            kind: "created".to_owned(),
            event_name: "ObjectCreated:Put".to_owned(),
            bucket: "b".to_owned(),
            key: key.to_owned(),
            id: None,
            outcome: outcome.to_owned(),
            detail: String::new(),
            duration_ms: 3,
            files: Vec::new(),
            more_files: 0,
            instance: "test".to_owned(),
        }
    }

    #[test]
    fn stats_count_by_class_outcome_and_source() {
        let mut stats = Stats::default();
        stats.add(&entry("object", "completed", "aws-s3", "a"));
        stats.add(&entry("object", "skipped", "minio", "b"));
        stats.add(&entry("object", "permanent", "aws-s3", "c"));
        stats.add(&entry("sweep", "retryable", "schedule", ""));
        assert_eq!(
            stats.object_events,
            Tally {
                succeeded: 2,
                failed: 1
            }
        );
        assert_eq!(
            stats.sweep_events,
            Tally {
                succeeded: 0,
                failed: 1
            }
        );
        assert_eq!(stats.by_source.get("aws-s3"), Some(&2));
        assert_eq!(stats.by_outcome.get("retryable"), Some(&1));
    }

    #[tokio::test]
    async fn notes_are_collected_per_event_and_capped() {
        let log = FileLog::default();
        collecting(log.clone(), async {
            for n in 0..FILES_PER_EVENT + 5 {
                note(format!("b/{n}"), "written", "ok");
            }
        })
        .await;
        note("b/outside", "written", "ok");
        let (files, more) = log.take();
        assert_eq!((files.len(), more), (FILES_PER_EVENT, 5));
        assert_eq!(files[0].target, "b/0");
    }

    #[test]
    fn a_ledger_ca_file_is_for_rediss_and_a_bad_one_stops_the_start()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut env = Env::from_pairs([
            ("LEDGER_URL", "redis://127.0.0.1:1/"),
            ("LEDGER_CA_FILE", "/nowhere/ca.pem"),
        ]);
        LedgerSettings::read(&mut env);
        let err = env.finish().err().ok_or("accepted a CA file without TLS")?;
        assert_eq!(err.problems[0].variable, "LEDGER_CA_FILE");

        let mut env = Env::from_pairs([
            ("LEDGER_URL", "rediss://127.0.0.1:1/"),
            ("LEDGER_CA_FILE", "/nowhere/ca.pem"),
        ]);
        let settings = LedgerSettings::read(&mut env);
        env.finish()?;
        let err = settings
            .open("test")
            .err()
            .ok_or("opened with no CA file")?;
        let text = crate::outcome::chain(&err);
        assert!(text.contains("LEDGER_CA_FILE /nowhere/ca.pem"), "{text}");
        Ok(())
    }

    #[tokio::test]
    async fn a_failing_ledger_is_counted_not_awaited() -> Result<(), Box<dyn std::error::Error>> {
        let unreachable = LedgerSettings {
            url: Some("redis://127.0.0.1:1/".to_owned()),
            capacity: 10,
            prefix: None,
            ca_file: None,
        };
        let recorder = Recorder::start(unreachable.open("test")?);
        let began = std::time::Instant::now();
        recorder.record(entry("object", "completed", "aws-s3", "a"));
        assert!(
            began.elapsed() < Duration::from_millis(50),
            "recording waited"
        );
        for _ in 0..100 {
            if recorder.errors() > 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("the failure was never counted".into())
    }
}
