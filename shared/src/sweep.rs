//! Walking a bucket prefix for catch-up work: objects in key order, handled concurrently up
//! to a bound, stopping cleanly at the invocation deadline or at the first retryable failure,
//! with the key the next run continues after. Keys are handled in order, so "everything up to
//! the resume key is done" holds however many run at once. With a cursor object, a run that
//! stopped early is continued by the next one, wherever it runs.

use std::fmt;
use std::future::Future;
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream;
use serde::Serialize;

use crate::outcome::{Done, HandlerError};
use crate::runtime::Invocation;
use crate::storage::{Condition, ListedObject, NewObject, ObjectStore, StoreError};

/// What to walk.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    pub bucket: &'a str,
    pub prefix: &'a str,
    /// Continue after this key (a previous run's [`SweepSummary::resume_after`]).
    pub start_after: Option<String>,
    /// Keys under this prefix are passed over (a function's own outputs, its checkpoints).
    pub exclude_prefix: Option<&'a str>,
    /// Where progress is kept between runs, as `(bucket, key)`: read at the start, written
    /// whenever the sweep stops early, removed when it finishes.
    pub cursor: Option<(&'a str, String)>,
}

/// What the cursor object holds.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Cursor {
    resume_after: String,
    updated: chrono::DateTime<chrono::Utc>,
}

const CURSOR_MAX_BYTES: u64 = 64 * 1024;

/// The cursor as a sweep found it at its start.
struct Saved {
    /// `None` when it could not be read: that only costs a walk from the start.
    resume_after: Option<String>,
    etag: Option<String>,
}

async fn load_cursor(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
) -> Result<Option<Saved>, HandlerError> {
    match store.get(bucket, key, CURSOR_MAX_BYTES).await {
        Ok(object) => {
            let cursor: Option<Cursor> = serde_json::from_slice(&object.body).ok();
            Ok(Some(Saved {
                resume_after: cursor.map(|c| c.resume_after),
                etag: object.info.etag,
            }))
        }
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn save_cursor(
    store: &dyn ObjectStore,
    cursor: Option<&(&str, String)>,
    saved: Option<&Saved>,
    summary: &SweepSummary,
) -> Result<(), HandlerError> {
    let Some((bucket, key)) = cursor else {
        return Ok(());
    };
    match (&summary.resume_after, summary.finished) {
        // Only the cursor this run started from is removed: one written since by another run
        // holds that run's progress.
        (_, true) => match saved.map(|s| s.etag.clone()) {
            Some(Some(etag)) => match store.delete_if(bucket, key, Condition::EtagIs(etag)).await {
                Ok(()) | Err(StoreError::ConditionFailed { .. }) => {}
                // A store that ignores If-Match on DELETE (MinIO): the cursor is the sweep's
                // own bookkeeping, and the worst an unconditional delete does is make another
                // run walk from the start, so the sweep does not fail over it.
                Err(StoreError::Unsupported { .. }) => store.delete(bucket, key).await?,
                Err(e) => return Err(e.into()),
            },
            // A store that gives no etags cannot be asked; the cursor must not outlive the pass.
            Some(None) => store.delete(bucket, key).await?,
            None => {}
        },
        (Some(resume_after), false) => {
            let body = serde_json::to_vec(&Cursor {
                resume_after: resume_after.clone(),
                updated: chrono::Utc::now(),
            })
            .map_err(HandlerError::permanent)?;
            let object = NewObject {
                body: body.into(),
                content_type: "application/json".to_owned(),
                metadata: Default::default(),
            };
            store.put(bucket, key, object).await?;
        }
        (None, false) => {}
    }
    Ok(())
}

/// One object that failed permanently during a sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub key: String,
    pub error: String,
}

/// How a sweep went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepSummary {
    pub completed: u64,
    pub skipped: u64,
    pub failed: Vec<Failure>,
    /// The last key handled: everything up to it is done. `None` before the first key.
    pub resume_after: Option<String>,
    /// Every object under the prefix was handled.
    pub finished: bool,
    /// The retryable failure the sweep stopped at, if any.
    pub interrupted: Option<String>,
}

impl fmt::Display for SweepSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} done, {} skipped, {} failed",
            self.completed,
            self.skipped,
            self.failed.len()
        )?;
        for failure in self.failed.iter().take(10) {
            write!(f, "; {:?}: {}", failure.key, failure.error)?;
        }
        if self.failed.len() > 10 {
            write!(f, "; and {} more failures", self.failed.len() - 10)?;
        }
        if let Some(error) = &self.interrupted {
            write!(f, "; stopped by a retryable failure: {error}")?;
        }
        match (&self.resume_after, self.finished) {
            (_, true) => f.write_str("; finished"),
            (Some(key), false) => write!(f, "; the next run continues after {key:?}"),
            (None, false) => f.write_str("; the next run starts from the beginning"),
        }
    }
}

impl SweepSummary {
    /// The sweep as a handler outcome: retryable when it stopped at a retryable failure (the
    /// platform runs it again), done otherwise; permanent failures are in the summary.
    pub fn into_outcome(self) -> Result<Done, HandlerError> {
        if self.interrupted.is_some() {
            Err(HandlerError::retryable(self.to_string()))
        } else {
            Ok(Done::Completed(format!("sweep: {self}")))
        }
    }
}

const PAGE: usize = 1000;

/// Handles every object in `scope` with `handle`, at most `concurrency` at a time, continuing
/// from the cursor when there is one.
pub async fn sweep<F, Fut>(
    store: &dyn ObjectStore,
    mut scope: Scope<'_>,
    invocation: &Invocation,
    concurrency: usize,
    handle: F,
) -> Result<SweepSummary, HandlerError>
where
    F: FnMut(ListedObject) -> Fut,
    Fut: Future<Output = Result<Done, HandlerError>>,
{
    let saved = match &scope.cursor {
        Some((bucket, key)) => load_cursor(store, bucket, key).await?,
        None => None,
    };
    if let Some(resume_after) = saved.as_ref().and_then(|s| s.resume_after.clone()) {
        scope.start_after = scope.start_after.max(Some(resume_after));
    }
    let cursor = scope.cursor.clone();
    let summary = walk(store, scope, invocation, concurrency, handle).await?;
    save_cursor(store, cursor.as_ref(), saved.as_ref(), &summary).await?;
    Ok(summary)
}

async fn walk<F, Fut>(
    store: &dyn ObjectStore,
    scope: Scope<'_>,
    invocation: &Invocation,
    concurrency: usize,
    mut handle: F,
) -> Result<SweepSummary, HandlerError>
where
    F: FnMut(ListedObject) -> Fut,
    Fut: Future<Output = Result<Done, HandlerError>>,
{
    let past_deadline = || invocation.deadline.is_some_and(|d| Instant::now() >= d);
    let mut summary = SweepSummary {
        resume_after: scope.start_after.clone(),
        ..SweepSummary::default()
    };
    loop {
        if past_deadline() {
            return Ok(summary);
        }
        let page = store
            .list(
                scope.bucket,
                scope.prefix,
                summary.resume_after.as_deref(),
                PAGE,
            )
            .await?;
        let last_listed = page.objects.last().map(|o| o.key.clone());
        let wanted = page
            .objects
            .into_iter()
            .filter(|o| scope.exclude_prefix.is_none_or(|p| !o.key.starts_with(p)))
            .map(|object| {
                let key = object.key.clone();
                let work = handle(object);
                async move { (key, work.await) }
            });
        // `buffered` runs up to `concurrency` at once but yields in key order, which keeps
        // the resume key honest.
        let mut results = stream::iter(wanted).buffered(concurrency.max(1));
        while let Some((key, outcome)) = results.next().await {
            match outcome {
                Ok(Done::Completed(_)) => summary.completed += 1,
                Ok(Done::Skipped(_)) => summary.skipped += 1,
                Err(HandlerError::Permanent(e)) => summary.failed.push(Failure {
                    key: key.clone(),
                    error: crate::outcome::chain(e.as_ref()),
                }),
                // An object stopped by the sweep's own deadline is where the next run
                // continues, not a failure of the sweep.
                Err(HandlerError::Retryable(_)) if past_deadline() => return Ok(summary),
                Err(e @ HandlerError::Retryable(_)) => {
                    summary.interrupted = Some(e.to_string());
                    return Ok(summary);
                }
            }
            invocation.progress.advance(&key);
            summary.resume_after = Some(key);
            if past_deadline() {
                return Ok(summary);
            }
        }
        // Excluded keys at the end of a page still count as passed.
        if last_listed > summary.resume_after {
            summary.resume_after = last_listed;
        }
        if !page.more {
            summary.finished = true;
            return Ok(summary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn store(keys: &[&str]) -> MemoryStore {
        let store = MemoryStore::new();
        for key in keys {
            store.insert("b", key, &b"x"[..], "text/plain");
        }
        store
    }

    fn scope(start_after: Option<&str>) -> Scope<'static> {
        Scope {
            bucket: "b",
            prefix: "in/",
            start_after: start_after.map(str::to_owned),
            exclude_prefix: Some("in/out/"),
            cursor: None,
        }
    }

    #[tokio::test]
    async fn handles_everything_in_order_except_the_excluded_prefix() -> TestResult {
        let store = store(&["in/c", "in/a", "in/out/x", "in/b", "other/z"]);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let summary = sweep(&store, scope(None), &Invocation::default(), 3, |o| {
            let seen = Arc::clone(&seen);
            async move {
                // Later keys finish first; the resume key must not run ahead.
                let delay = if o.key == "in/a" { 30 } else { 1 };
                tokio::time::sleep(Duration::from_millis(delay)).await;
                seen.lock()
                    .map_err(|_| HandlerError::permanent("poisoned"))?
                    .push(o.key);
                Ok(Done::Completed(String::new()))
            }
        })
        .await?;
        assert_eq!(summary.completed, 3);
        assert!(summary.finished);
        assert_eq!(summary.resume_after.as_deref(), Some("in/out/x"));
        let mut seen = seen.lock().map_err(|_| "poisoned")?.clone();
        seen.sort();
        assert_eq!(seen, ["in/a", "in/b", "in/c"]);
        Ok(())
    }

    #[tokio::test]
    async fn stops_before_a_retryable_failure_and_records_permanent_ones() -> TestResult {
        let store = store(&["in/1", "in/2", "in/3", "in/4"]);
        let summary = sweep(
            &store,
            scope(None),
            &Invocation::default(),
            1,
            |o| async move {
                match o.key.as_str() {
                    "in/2" => Err(HandlerError::permanent("corrupt")),
                    "in/3" => Err(HandlerError::retryable("503 SlowDown")),
                    _ => Ok(Done::Skipped("fresh".into())),
                }
            },
        )
        .await?;
        assert_eq!((summary.skipped, summary.failed.len()), (1, 1));
        assert_eq!(summary.failed[0].key, "in/2");
        assert_eq!(summary.resume_after.as_deref(), Some("in/2"));
        assert!(!summary.finished);
        let text = summary.to_string();
        assert!(
            text.contains("stopped by a retryable failure: 503 SlowDown"),
            "{text}"
        );
        assert!(summary.into_outcome().is_err());
        Ok(())
    }

    #[tokio::test]
    async fn a_cursor_carries_progress_to_the_next_run_and_is_removed_at_the_end() -> TestResult {
        let store = store(&["in/1", "in/2", "in/3"]);
        let with_cursor = || Scope {
            cursor: Some(("b", "in/out/cursor".to_owned())),
            ..scope(None)
        };
        let first = sweep(
            &store,
            with_cursor(),
            &Invocation::default(),
            1,
            |o| async move {
                if o.key == "in/2" {
                    Err(HandlerError::retryable("store down"))
                } else {
                    Ok(Done::Completed(String::new()))
                }
            },
        )
        .await?;
        assert_eq!(first.resume_after.as_deref(), Some("in/1"));
        assert!(store.object("b", "in/out/cursor").is_some());

        let seen = std::sync::Mutex::new(Vec::new());
        let second = sweep(&store, with_cursor(), &Invocation::default(), 1, |o| {
            if let Ok(mut seen) = seen.lock() {
                seen.push(o.key);
            }
            async { Ok(Done::Completed(String::new())) }
        })
        .await?;
        assert!(second.finished);
        assert_eq!(*seen.lock().map_err(|_| "poisoned")?, ["in/2", "in/3"]);
        assert!(store.object("b", "in/out/cursor").is_none());
        Ok(())
    }

    #[tokio::test]
    async fn a_cursor_another_run_wrote_meanwhile_outlives_this_runs_end() -> TestResult {
        let store = store(&["in/1", "in/2", "in/3"]);
        let with_cursor = || Scope {
            cursor: Some(("b", "in/out/cursor".to_owned())),
            ..scope(None)
        };
        let stopped = sweep(&store, with_cursor(), &Invocation::default(), 1, |o| {
            let stop = o.key == "in/2";
            async move {
                match stop {
                    true => Err(HandlerError::retryable("store down")),
                    false => Ok(Done::Completed(String::new())),
                }
            }
        })
        .await?;
        assert_eq!(stopped.resume_after.as_deref(), Some("in/1"));
        // While this run walks, another one saves its own progress.
        let other = br#"{"resume_after": "in/2", "updated": "2024-11-05T14:22:31Z"}"#;
        let finished = sweep(&store, with_cursor(), &Invocation::default(), 1, |_| {
            store.insert("b", "in/out/cursor", &other[..], "application/json");
            async { Ok(Done::Completed(String::new())) }
        })
        .await?;
        assert!(finished.finished);
        let left = store
            .object("b", "in/out/cursor")
            .ok_or("the cursor was removed")?;
        assert_eq!(left.body.as_ref(), &other[..]);
        Ok(())
    }

    #[tokio::test]
    async fn a_deadline_stops_the_sweep_and_the_next_run_resumes() -> TestResult {
        let keys: Vec<String> = (0..20).map(|n| format!("in/{n:02}")).collect();
        let store = store(&keys.iter().map(String::as_str).collect::<Vec<_>>());
        let handled = AtomicUsize::new(0);
        let invocation = Invocation {
            deadline: Some(Instant::now() + Duration::from_millis(60)),
            ..Invocation::default()
        };
        let slow = |_: ListedObject| {
            handled.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(Done::Completed(String::new()))
            }
        };
        let first = sweep(&store, scope(None), &invocation, 1, slow).await?;
        assert!(!first.finished);
        let resume = first.resume_after.clone().ok_or("no resume key")?;
        assert!(first.completed >= 1 && first.completed < 20, "{first}");
        assert!(
            first
                .to_string()
                .contains(&format!("continues after {resume:?}"))
        );

        let second = sweep(
            &store,
            scope(Some(&resume)),
            &Invocation::default(),
            4,
            |_| async { Ok(Done::Completed(String::new())) },
        )
        .await?;
        assert!(second.finished);
        assert_eq!(first.completed + second.completed, 20);
        Ok(())
    }

    #[tokio::test]
    async fn an_object_stopped_by_the_deadline_is_continued_not_a_failure() -> TestResult {
        let store = store(&["in/a", "in/b", "in/c"]);
        let invocation = Invocation {
            deadline: Some(Instant::now() + Duration::from_millis(50)),
            ..Invocation::default()
        };
        // The second object's work is what the deadline stops (as a decode checking its
        // stop would): retryable, reported once the deadline has passed.
        let stopped_at_b = |object: ListedObject| async move {
            if object.key == "in/b" {
                tokio::time::sleep(Duration::from_millis(80)).await;
                return Err(HandlerError::from(crate::budget::Stopped));
            }
            Ok(Done::Completed(String::new()))
        };
        let first = sweep(&store, scope(None), &invocation, 1, stopped_at_b).await?;
        assert!(first.interrupted.is_none(), "{first}");
        assert_eq!(first.resume_after.as_deref(), Some("in/a"));
        assert!(first.clone().into_outcome().is_ok(), "{first}");
        Ok(())
    }
}
