//! Walking a bucket prefix for catch-up work: objects in key order, handled concurrently up
//! to a bound, stopping by the one deadline rule ([`StopPlan`]) with what was finished kept,
//! objects that fail listed (and retried with backoff) instead of forgotten, and a cursor the
//! next run continues from, wherever it runs. Keys are settled in order, so "everything up to
//! the resume key is done" holds however many run at once; the few that finished ahead of a
//! slower one when a run stopped are kept too, so a clean stop never redoes finished work.

mod plan;
mod position;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;

use crate::event::Shard;
use crate::function::Invocation;
use crate::outcome::{Done, HandlerError, Outcome};
use crate::storage::{ListedObject, ObjectStore};

pub use plan::StopPlan;
pub use position::{Failure, Position};

/// What to walk.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    pub bucket: &'a str,
    pub prefix: &'a str,
    /// Keys under this prefix are passed over (a function's own outputs, its checkpoints).
    pub exclude_prefix: Option<&'a str>,
    /// Where progress is kept between runs, as `(bucket, key)`: read at the start, written
    /// whenever there is something to keep (a pass under way, objects failing), removed when
    /// there is not. A shard keeps its own, beside it.
    pub cursor: Option<(&'a str, String)>,
    /// Only the keys of this worker of a job array.
    pub shard: Option<Shard>,
    /// Only the `n` most recently modified objects the scope wants (seed 004's `--latest N`):
    /// a one-off run that neither reads nor moves the cursor.
    pub latest: Option<usize>,
}

impl Scope<'_> {
    fn wants(&self, key: &str) -> bool {
        self.exclude_prefix.is_none_or(|p| !key.starts_with(p))
            && self.shard.is_none_or(|s| s.owns(key))
    }

    /// When the listing has reached the excluded prefix (thumbnails beside their images, several
    /// per image), the key to list after so that the rest of it is not listed page by page:
    /// the prefix followed by the greatest character sorts after every key under it but one
    /// made of that character, which the filter still passes over.
    fn past_excluded(&self, listed_after: Option<&str>) -> Option<String> {
        let excluded = self.exclude_prefix?;
        let past = format!("{excluded}{}", char::MAX);
        listed_after
            .is_some_and(|last| last.starts_with(excluded) && *last < *past)
            .then_some(past)
    }
}

/// Why a walk ended before the end of its prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// The deadline rule: the run continues on the next one.
    Deadline,
    /// The store or a service failed object after object (or the listing failed): the run
    /// stops rather than list every object as failing, and is retried.
    Outage(String),
}

/// How a sweep went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepSummary {
    pub completed: u64,
    pub skipped: u64,
    /// Objects that failed in this run.
    pub failed: u64,
    /// Objects that were listed as failing and were not due to be tried again.
    pub still_failing: u64,
    /// Where the next run continues, and every failure not yet resolved.
    pub position: Position,
    /// Every object under the prefix was handled (or listed as failing).
    pub finished: bool,
    pub stopped: Option<Stopped>,
}

/// How many failures the summary spells out.
const FAILURES_SHOWN: usize = 10;

impl fmt::Display for SweepSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} done, {} skipped, {} failed",
            self.completed, self.skipped, self.failed
        )?;
        let failures = &self.position.failures;
        if !failures.is_empty() {
            write!(f, "; {} object(s) failing", failures.len())?;
            for failure in failures.iter().take(FAILURES_SHOWN) {
                write!(f, "; {}", failure.describe())?;
            }
            if failures.len() > FAILURES_SHOWN {
                write!(f, "; and {} more", failures.len() - FAILURES_SHOWN)?;
            }
        }
        match &self.stopped {
            Some(Stopped::Deadline) => f.write_str("; stopped a margin before the deadline")?,
            Some(Stopped::Outage(error)) => {
                write!(f, "; stopped by repeated retryable failures: {error}")?;
            }
            None => {}
        }
        match (&self.position.resume_after, self.finished) {
            (_, true) => f.write_str("; finished"),
            (Some(key), false) => write!(f, "; continues after {key:?} on the next run"),
            (None, false) => f.write_str("; continues from the beginning on the next run"),
        }
    }
}

impl SweepSummary {
    /// The sweep as a handler outcome. A stop by the deadline rule is a success (the next
    /// run continues; a schedule must not retry it at once). Objects failing make it
    /// permanent, so that the failure shows (exit 1, the failed count, the history) without
    /// the platform retrying the whole sweep: the sweep itself retries them on later passes.
    /// An outage is retryable.
    pub fn into_outcome(self) -> Outcome {
        match (&self.stopped, self.position.failures.is_empty()) {
            (Some(Stopped::Outage(_)), _) => Err(HandlerError::retryable(format!("sweep: {self}"))),
            (_, false) => Err(HandlerError::permanent(format!("sweep: {self}"))),
            (_, true) => Ok(Done::Completed(format!("sweep: {self}"))),
        }
    }
}

const PAGE: usize = 1000;
/// The most objects a `latest` run picks: it holds them all while it lists the prefix.
pub const MAX_LATEST: usize = 10_000;
/// Retryable failures in a row that make a run stop as an outage.
const OUTAGE_RUN: u32 = 3;

/// Handles every object in `scope` with `handle`, at most `concurrency` at a time, under the
/// deadline rule of the invocation's deadline, continuing from the cursor when there is one
/// and saving it before it returns.
pub async fn sweep<F, Fut>(
    store: &dyn ObjectStore,
    mut scope: Scope<'_>,
    invocation: &Invocation,
    concurrency: usize,
    handle: F,
) -> Result<SweepSummary, HandlerError>
where
    F: FnMut(ListedObject, Invocation) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let plan = StopPlan::before(invocation.deadline);
    if let Some(n) = scope.latest {
        let picked = latest(store, &scope, n, &plan).await?;
        let from = Position::default();
        return walk_over(
            store,
            &scope,
            Some(picked),
            from,
            plan,
            invocation,
            concurrency,
            handle,
        )
        .await;
    }
    if let (Some((_, key)), Some(shard)) = (scope.cursor.as_mut(), scope.shard) {
        *key = shard.progress_key(key);
    }
    let Some((bucket, key)) = scope.cursor.clone() else {
        return walk(
            store,
            &scope,
            Position::default(),
            plan,
            invocation,
            concurrency,
            handle,
        )
        .await;
    };
    let saved = position::load_cursor(store, bucket, &key).await?;
    let from = saved
        .as_ref()
        .map(|s| s.position.clone())
        .unwrap_or_default();
    let summary = walk(store, &scope, from, plan, invocation, concurrency, handle).await?;
    let mut keep = summary.position.clone();
    if summary.finished {
        keep.next_pass();
    }
    position::save_cursor(store, (bucket, &key), saved.as_ref(), &keep).await?;
    Ok(summary)
}

/// Where an object of the walk stands.
enum State {
    Running,
    Handled(Outcome),
    /// Finished by an earlier run that stopped: passed over.
    AlreadyDone,
    /// Listed as failing and not due again: passed over, still listed.
    StillFailing,
}

/// An object the walk reached, in key order.
struct Reached {
    key: String,
    etag: Option<String>,
    state: State,
}

/// The `n` most recently modified objects `scope` wants, in key order. The whole prefix is
/// listed, holding `n` at a time; a listing that outlasts the time for starting work is
/// refused rather than left half-read.
async fn latest(
    store: &dyn ObjectStore,
    scope: &Scope<'_>,
    n: usize,
    plan: &StopPlan,
) -> Result<Vec<ListedObject>, HandlerError> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    if !(1..=MAX_LATEST).contains(&n) {
        return Err(HandlerError::permanent(format!(
            "latest {n}: a run picks 1 to {MAX_LATEST} objects (MAX_LATEST), as it holds them all \
             while it lists"
        )));
    }
    let where_ = crate::ObjectPath(scope.bucket, scope.prefix);
    // The oldest picked so far on top: a newer object replaces it. Ties go by key, so two
    // runs over the same listing pick the same objects.
    let mut newest = BinaryHeap::with_capacity(n + 1);
    let (mut after, mut listed) = (None::<String>, 0u64);
    loop {
        if !plan.may_start_now() {
            return Err(HandlerError::permanent(format!(
                "the latest {n} of {where_}: {listed} objects listed and the listing was not \
                 finished before the time for starting work ran out; name a narrower prefix or \
                 give the run more time"
            )));
        }
        let page = list_page(store, scope, after.as_deref())
            .await
            .map_err(HandlerError::from)?;
        listed += page.keys.len() as u64;
        for object in page.wanted {
            newest.push(Reverse(Newest(object)));
            if newest.len() > n {
                newest.pop();
            }
        }
        if !page.more || page.last.is_none() {
            break;
        }
        after = page.last;
    }
    let mut picked: Vec<ListedObject> = newest.into_iter().map(|Reverse(Newest(o))| o).collect();
    picked.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Ok(picked)
}

/// A listed object ordered by when it was last modified (unknown counts as oldest), then key.
struct Newest(ListedObject);

impl Newest {
    fn rank(&self) -> (Option<chrono::DateTime<chrono::Utc>>, &str) {
        (self.0.last_modified, &self.0.key)
    }
}

impl PartialEq for Newest {
    fn eq(&self, other: &Self) -> bool {
        self.rank() == other.rank()
    }
}

impl Eq for Newest {}

impl PartialOrd for Newest {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Newest {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// Walks `scope` from `from` until its end or `plan` says stop, and returns how far it came.
/// The caller keeps the position (a cursor, a checkpoint).
pub async fn walk<F, Fut>(
    store: &dyn ObjectStore,
    scope: &Scope<'_>,
    from: Position,
    plan: StopPlan,
    invocation: &Invocation,
    concurrency: usize,
    handle: F,
) -> Result<SweepSummary, HandlerError>
where
    F: FnMut(ListedObject, Invocation) -> Fut,
    Fut: Future<Output = Outcome>,
{
    walk_over(
        store,
        scope,
        None,
        from,
        plan,
        invocation,
        concurrency,
        handle,
    )
    .await
}

/// [`walk`] over the store's listing, or over `picked` objects (in key order) instead.
#[allow(clippy::too_many_arguments)]
async fn walk_over<F, Fut>(
    store: &dyn ObjectStore,
    scope: &Scope<'_>,
    mut picked: Option<Vec<ListedObject>>,
    from: Position,
    plan: StopPlan,
    invocation: &Invocation,
    concurrency: usize,
    mut handle: F,
) -> Result<SweepSummary, HandlerError>
where
    F: FnMut(ListedObject, Invocation) -> Fut,
    Fut: Future<Output = Outcome>,
{
    // Each object is told to stop a little before the walk gives up on it, to wrap up.
    let per_object = Invocation {
        deadline: plan.objects_stop.or(invocation.deadline),
        stop: invocation.stop.sooner(plan.objects_stop),
        ..invocation.clone()
    };
    let mut walk = Walk {
        scope,
        plan,
        invocation,
        summary: SweepSummary {
            position: from,
            ..SweepSummary::default()
        },
        reached: VecDeque::new(),
        retryable_run: 0,
        before_run: None,
        last_error: None,
    };
    let mut listed_after = walk.summary.position.resume_after.clone();
    let mut more = true;
    let mut queue: VecDeque<ListedObject> = VecDeque::new();
    let mut running = FuturesUnordered::new();
    let abandon = async {
        match plan.abandon {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    let mut abandon = std::pin::pin!(abandon);
    loop {
        walk.settle();
        while running.len() < concurrency.max(1) && walk.may_start() {
            if queue.is_empty() && more {
                if let Some(picked) = picked.take() {
                    queue.extend(picked);
                    more = false;
                    continue;
                }
                let listed = list_page(store, scope, listed_after.as_deref()).await;
                match listed {
                    Ok(page) => {
                        walk.forget_vanished(listed_after.as_deref(), &page);
                        listed_after = page.last.or(listed_after);
                        more = page.more;
                        if let Some(past) = scope.past_excluded(listed_after.as_deref())
                            && more
                        {
                            listed_after = Some(past);
                        }
                        queue.extend(page.wanted);
                    }
                    Err(e) => walk.summary.stopped = Some(Stopped::Outage(e.to_string())),
                }
                continue;
            }
            let Some(object) = queue.pop_front() else {
                break;
            };
            let (key, etag) = (object.key.clone(), object.etag.clone());
            let position = &mut walk.summary.position;
            let state = if let Some(at) = position.done_ahead.iter().position(|k| *k == key) {
                position.done_ahead.remove(at);
                State::AlreadyDone
            } else if position
                .failure(&key)
                .is_some_and(|f| !f.is_due(etag.as_deref(), chrono::Utc::now()))
            {
                State::StillFailing
            } else {
                let work = handle(object, per_object.clone());
                let key = key.clone();
                running.push(async move { (key, work.await) });
                State::Running
            };
            walk.reached.push_back(Reached { key, etag, state });
        }
        if running.is_empty() {
            walk.settle();
            if walk.reached.is_empty()
                && queue.is_empty()
                && !more
                && walk.summary.stopped.is_none()
            {
                walk.summary.finished = true;
                // Keys passed over at the end (excluded, other shards') count as passed.
                if listed_after > walk.summary.position.resume_after {
                    walk.summary.position.resume_after = listed_after;
                }
                return Ok(walk.summary);
            }
            if !walk.may_start() {
                return Ok(walk.stop());
            }
            continue;
        }
        tokio::select! {
            Some((key, outcome)) = running.next() => walk.finished(&key, outcome),
            () = &mut abandon => {
                drop(running);
                walk.settle();
                return Ok(walk.stop());
            }
        }
    }
}

/// A page of the listing, reduced to the objects the scope wants.
struct Page {
    wanted: Vec<ListedObject>,
    /// Every key listed, wanted or not, for telling which failures are gone.
    keys: std::collections::HashSet<String>,
    last: Option<String>,
    more: bool,
}

async fn list_page(
    store: &dyn ObjectStore,
    scope: &Scope<'_>,
    after: Option<&str>,
) -> Result<Page, crate::storage::StoreError> {
    let page = store.list(scope.bucket, scope.prefix, after, PAGE).await?;
    let keys = page.objects.iter().map(|o| o.key.clone()).collect();
    let last = page.objects.last().map(|o| o.key.clone());
    let wanted = page
        .objects
        .into_iter()
        .filter(|o| scope.wants(&o.key))
        .collect();
    Ok(Page {
        wanted,
        keys,
        last,
        more: page.more,
    })
}

/// The state of one walk.
struct Walk<'s, 'a> {
    scope: &'s Scope<'a>,
    plan: StopPlan,
    invocation: &'s Invocation,
    summary: SweepSummary,
    /// Objects reached and not yet settled, in key order.
    reached: VecDeque<Reached>,
    retryable_run: u32,
    /// The position before the first of the retryable failures in a row: an outage puts it
    /// back, so that the objects it failed are neither listed nor passed.
    before_run: Option<(Option<String>, Vec<Failure>)>,
    last_error: Option<String>,
}

impl Walk<'_, '_> {
    fn may_start(&self) -> bool {
        self.summary.stopped.is_none()
            && self.plan.may_start(Instant::now())
            && !self.invocation.stop.is_stopped()
    }

    fn finished(&mut self, key: &str, outcome: Outcome) {
        let reached = self
            .reached
            .iter_mut()
            .find(|r| r.key == key && matches!(r.state, State::Running));
        if let Some(reached) = reached {
            reached.state = State::Handled(outcome);
        }
    }

    /// Failures listed between `after` and the end of `page` whose keys the page does not
    /// have: their objects are gone, so nothing is left to fail.
    fn forget_vanished(&mut self, after: Option<&str>, page: &Page) {
        let until = if page.more {
            page.last.as_deref()
        } else {
            None
        };
        self.summary.position.failures.retain(|f| {
            let in_range = after.is_none_or(|a| f.key.as_str() > a)
                && until.is_none_or(|u| f.key.as_str() <= u)
                && f.key.starts_with(self.scope.prefix);
            !in_range || page.keys.contains(&f.key)
        });
    }

    /// Whether the object's outcome is that the plan or the runtime stopped it: it is not
    /// finished, and the next run does it.
    fn cut_off(&self, outcome: &Outcome) -> bool {
        matches!(outcome, Err(e) if e.is_retryable())
            && (self.plan.objects_stopped(Instant::now()) || self.invocation.stop.is_stopped())
    }

    /// Settles the objects at the front that have an outcome: the resume key moves on.
    fn settle(&mut self) {
        while let Some(front) = self.reached.front() {
            let settled = match &front.state {
                State::Running => false,
                State::Handled(outcome) => !self.cut_off(outcome),
                State::AlreadyDone | State::StillFailing => true,
            };
            if !settled {
                break;
            }
            if self.is_outage() {
                return;
            }
            if let Some(reached) = self.reached.pop_front() {
                self.account(&reached);
                self.invocation.progress.advance(&reached.key);
                self.summary.position.resume_after = Some(reached.key);
            }
            if self.retryable_run >= OUTAGE_RUN {
                let error = self.last_error.take().unwrap_or_default();
                if let Some((resume_after, failures)) = self.before_run.take() {
                    self.summary.position.resume_after = resume_after;
                    self.summary.position.failures = failures;
                }
                self.summary.stopped = Some(Stopped::Outage(error));
            }
        }
    }

    fn is_outage(&self) -> bool {
        matches!(self.summary.stopped, Some(Stopped::Outage(_)))
    }

    fn account(&mut self, reached: &Reached) {
        let State::Handled(outcome) = &reached.state else {
            if matches!(reached.state, State::StillFailing) {
                self.summary.still_failing += 1;
            }
            return;
        };
        let position = &mut self.summary.position;
        match outcome {
            Ok(done) => {
                match done {
                    Done::Completed(_) => self.summary.completed += 1,
                    Done::Skipped(_) => self.summary.skipped += 1,
                }
                position.resolve(&reached.key);
                self.retryable_run = 0;
                self.before_run = None;
            }
            Err(error) => {
                self.summary.failed += 1;
                if !error.is_retryable() {
                    self.before_run = None;
                } else if self.retryable_run == 0 {
                    self.before_run =
                        Some((position.resume_after.clone(), position.failures.clone()));
                }
                self.last_error = Some(crate::outcome::chain(error));
                position.fail(&reached.key, reached.etag.as_deref(), error);
                self.invocation
                    .reports
                    .failed(self.scope.bucket, &reached.key, error);
                self.retryable_run = match error.is_retryable() {
                    true => self.retryable_run + 1,
                    false => 0,
                };
            }
        }
    }

    /// Ends the walk early: what finished behind an unfinished object is kept as done ahead,
    /// so that the next run does not do it again.
    fn stop(mut self) -> SweepSummary {
        self.summary.stopped.get_or_insert(Stopped::Deadline);
        for reached in std::mem::take(&mut self.reached) {
            // After an outage only successes are kept: what failed behind it is done again.
            let finished = match &reached.state {
                State::Running => false,
                State::Handled(outcome @ Ok(_)) => !self.cut_off(outcome),
                State::Handled(outcome) => !self.is_outage() && !self.cut_off(outcome),
                State::AlreadyDone | State::StillFailing => true,
            };
            if finished {
                self.account(&reached);
                self.summary.position.done_ahead.push(reached.key);
            }
        }
        self.summary
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

    fn scope() -> Scope<'static> {
        Scope {
            bucket: "b",
            prefix: "in/",
            exclude_prefix: Some("in/out/"),
            cursor: None,
            shard: None,
            latest: None,
        }
    }

    fn with_cursor() -> Scope<'static> {
        Scope {
            cursor: Some(("b", "in/out/cursor".to_owned())),
            ..scope()
        }
    }

    fn done() -> Outcome {
        Ok(Done::Completed(String::new()))
    }

    async fn cursor(store: &MemoryStore) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let object = store.object("b", "in/out/cursor").ok_or("no cursor")?;
        Ok(serde_json::from_slice(&object.body)?)
    }

    #[tokio::test]
    async fn handles_everything_in_order_except_the_excluded_prefix() -> TestResult {
        let store = store(&["in/c", "in/a", "in/out/x", "in/b", "other/z"]);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let summary = sweep(&store, scope(), &Invocation::default(), 3, |o, _| {
            let seen = Arc::clone(&seen);
            async move {
                // Later keys finish first; the resume key must not run ahead.
                let delay = if o.key == "in/a" { 30 } else { 1 };
                tokio::time::sleep(Duration::from_millis(delay)).await;
                seen.lock()
                    .map_err(|_| HandlerError::permanent("poisoned"))?
                    .push(o.key);
                done()
            }
        })
        .await?;
        assert_eq!(summary.completed, 3);
        assert!(summary.finished);
        assert_eq!(summary.position.resume_after.as_deref(), Some("in/out/x"));
        let mut seen = seen.lock().map_err(|_| "poisoned")?.clone();
        seen.sort();
        assert_eq!(seen, ["in/a", "in/b", "in/c"]);
        Ok(())
    }

    #[tokio::test]
    async fn an_excluded_prefix_of_many_pages_is_passed_over_to_the_keys_after_it() -> TestResult {
        let mut keys = vec!["in/a".to_owned(), "in/z".to_owned()];
        keys.extend((0..2 * PAGE).map(|n| format!("in/out/{n:05}")));
        keys.push(format!("in/out/{}", char::MAX));
        let store = store(&keys.iter().map(String::as_str).collect::<Vec<_>>());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let summary = sweep(&store, scope(), &Invocation::default(), 1, |o, _| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock()
                    .map_err(|_| HandlerError::permanent("poisoned"))?
                    .push(o.key);
                done()
            }
        })
        .await?;
        assert!(summary.finished, "{summary}");
        assert_eq!(*seen.lock().map_err(|_| "poisoned")?, ["in/a", "in/z"]);
        Ok(())
    }

    #[tokio::test]
    async fn failures_are_listed_and_make_the_sweep_fail_without_stopping_it() -> TestResult {
        let store = store(&["in/1", "in/2", "in/3", "in/4"]);
        let summary = sweep(
            &store,
            with_cursor(),
            &Invocation::default(),
            1,
            |o, _| async move {
                match o.key.as_str() {
                    "in/2" => Err(HandlerError::permanent("corrupt")),
                    "in/3" => Err(HandlerError::retryable("503 SlowDown")),
                    _ => Ok(Done::Skipped("fresh".into())),
                }
            },
        )
        .await?;
        assert!(summary.finished);
        assert_eq!((summary.skipped, summary.failed), (2, 2));
        let text = summary.to_string();
        assert!(text.contains("\"in/2\": corrupt (permanent"), "{text}");
        assert!(
            text.contains("\"in/3\": 503 SlowDown (retryable; tried again after"),
            "{text}"
        );
        // Kept for the next pass, which starts from the beginning.
        let saved = cursor(&store).await?;
        assert_eq!(saved["failures"].as_array().map(Vec::len), Some(2));
        assert!(saved["resume_after"].is_null(), "{saved}");
        assert!(matches!(
            summary.into_outcome(),
            Err(HandlerError::Permanent(_))
        ));
        Ok(())
    }

    #[tokio::test]
    async fn a_listed_failure_is_tried_again_only_when_due_and_resolved_by_success() -> TestResult {
        let store = store(&["in/1", "in/2"]);
        let tries = AtomicUsize::new(0);
        let failing = |o: ListedObject, _| {
            if o.key == "in/2" {
                tries.fetch_add(1, Ordering::SeqCst);
            }
            async move {
                match o.key.as_str() {
                    "in/2" => Err(HandlerError::permanent("corrupt")),
                    _ => done(),
                }
            }
        };
        sweep(&store, with_cursor(), &Invocation::default(), 1, failing).await?;
        let again = sweep(&store, with_cursor(), &Invocation::default(), 1, failing).await?;
        assert_eq!(
            tries.load(Ordering::SeqCst),
            1,
            "a permanent failure is not retried"
        );
        assert_eq!((again.still_failing, again.failed), (1, 0));
        assert!(again.clone().into_outcome().is_err(), "{again}");
        // A new version of the object is tried at once, and its success resolves it.
        store.insert("b", "in/2", &b"fixed"[..], "text/plain");
        let fixed = sweep(
            &store,
            with_cursor(),
            &Invocation::default(),
            1,
            |_, _| async { done() },
        )
        .await?;
        assert!(fixed.position.failures.is_empty(), "{fixed}");
        assert!(fixed.into_outcome().is_ok());
        assert!(store.object("b", "in/out/cursor").is_none());
        Ok(())
    }

    #[tokio::test]
    async fn a_failing_object_that_is_removed_is_no_longer_listed() -> TestResult {
        let store = store(&["in/1", "in/2", "in/3"]);
        sweep(
            &store,
            with_cursor(),
            &Invocation::default(),
            1,
            |o, _| async move {
                match o.key.as_str() {
                    "in/2" => Err(HandlerError::permanent("corrupt")),
                    _ => done(),
                }
            },
        )
        .await?;
        store.delete("b", "in/2").await?;
        let next = sweep(
            &store,
            with_cursor(),
            &Invocation::default(),
            1,
            |_, _| async { done() },
        )
        .await?;
        assert!(next.position.failures.is_empty(), "{next}");
        Ok(())
    }

    #[tokio::test]
    async fn failures_in_a_row_stop_the_run_as_an_outage_that_is_retried() -> TestResult {
        let store = store(&["in/1", "in/2", "in/3", "in/4", "in/5", "in/6"]);
        let summary = sweep(
            &store,
            with_cursor(),
            &Invocation::default(),
            1,
            |o, _| async move {
                match o.key.as_str() {
                    "in/1" => done(),
                    _ => Err(HandlerError::retryable("connection refused")),
                }
            },
        )
        .await?;
        assert!(
            matches!(summary.stopped, Some(Stopped::Outage(_))),
            "{summary}"
        );
        // The objects the outage failed are done again by the next run, not listed.
        assert_eq!(summary.position.resume_after.as_deref(), Some("in/1"));
        assert!(summary.position.failures.is_empty(), "{summary}");
        assert!(matches!(
            summary.into_outcome(),
            Err(HandlerError::Retryable(_))
        ));
        Ok(())
    }

    #[tokio::test]
    async fn a_cursor_another_run_wrote_meanwhile_outlives_this_runs_end() -> TestResult {
        let store = store(&["in/1", "in/2", "in/3"]);
        let deadline = Instant::now() + Duration::from_millis(200);
        let hurried = Invocation {
            deadline: Some(deadline),
            ..Invocation::default()
        };
        let stopped = sweep(&store, with_cursor(), &hurried, 1, |o, _| async move {
            if o.key != "in/1" {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            done()
        })
        .await?;
        assert_eq!(stopped.position.resume_after.as_deref(), Some("in/1"));
        // While this run walks, another one saves its own progress.
        let other = br#"{"resume_after": "in/2", "updated": "2024-11-05T14:22:31Z"}"#;
        let finished = sweep(&store, with_cursor(), &Invocation::default(), 1, |_, _| {
            store.insert("b", "in/out/cursor", &other[..], "application/json");
            async { done() }
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
    async fn a_deadline_stops_the_sweep_before_it_and_the_next_run_resumes() -> TestResult {
        let keys: Vec<String> = (0..40).map(|n| format!("in/{n:02}")).collect();
        let store = store(&keys.iter().map(String::as_str).collect::<Vec<_>>());
        let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
        let deadline = Instant::now() + Duration::from_millis(300);
        let invocation = Invocation {
            deadline: Some(deadline),
            ..Invocation::default()
        };
        let slow = |o: ListedObject, _| {
            let handled = Arc::clone(&handled);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                handled
                    .lock()
                    .map_err(|_| HandlerError::permanent("poisoned"))?
                    .push(o.key);
                done()
            }
        };
        let first = sweep(&store, with_cursor(), &invocation, 2, slow).await?;
        // Back before the deadline, with the cursor saved.
        assert!(Instant::now() < deadline, "{first}");
        assert!(
            !first.finished && first.stopped == Some(Stopped::Deadline),
            "{first}"
        );
        assert!(first.completed >= 2 && first.completed < 40, "{first}");
        let resume = first.position.resume_after.clone().ok_or("no resume key")?;
        assert!(
            first
                .to_string()
                .contains(&format!("continues after {resume:?}"))
        );
        assert_eq!(cursor(&store).await?["resume_after"], resume.as_str());
        assert!(first.clone().into_outcome().is_ok(), "{first}");

        let second = sweep(&store, with_cursor(), &Invocation::default(), 4, slow).await?;
        assert!(second.finished);
        let mut handled = handled.lock().map_err(|_| "poisoned")?.clone();
        assert_eq!(handled.len(), 40, "each object once: {handled:?}");
        handled.sort();
        handled.dedup();
        assert_eq!(handled.len(), 40);
        Ok(())
    }

    #[tokio::test]
    async fn what_finished_ahead_of_a_slow_object_is_not_done_again() -> TestResult {
        let store = store(&["in/a", "in/b", "in/c", "in/d"]);
        let invocation = Invocation {
            deadline: Some(Instant::now() + Duration::from_millis(300)),
            ..Invocation::default()
        };
        // "in/a" outlasts the run; the others finish behind it.
        let first = sweep(
            &store,
            with_cursor(),
            &invocation,
            4,
            |o, object_run: Invocation| async move {
                if o.key == "in/a" {
                    while object_run.stop.check().is_ok() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    return Err(HandlerError::from(crate::budget::Stopped));
                }
                done()
            },
        )
        .await?;
        assert_eq!(first.position.resume_after, None, "{first}");
        assert_eq!(first.position.done_ahead, ["in/b", "in/c", "in/d"]);
        assert!(
            first.position.failures.is_empty(),
            "a stopped object is no failure"
        );
        assert!(first.into_outcome().is_ok());

        let seen = std::sync::Mutex::new(Vec::new());
        let second = sweep(&store, with_cursor(), &Invocation::default(), 1, |o, _| {
            if let Ok(mut seen) = seen.lock() {
                seen.push(o.key);
            }
            async { done() }
        })
        .await?;
        assert!(second.finished);
        assert_eq!(*seen.lock().map_err(|_| "poisoned")?, ["in/a"]);
        Ok(())
    }

    #[tokio::test]
    async fn two_shards_handle_every_object_once_between_them() -> TestResult {
        let keys: Vec<String> = (0..50).map(|n| format!("in/{n:02}")).collect();
        let store = store(&keys.iter().map(String::as_str).collect::<Vec<_>>());
        let seen = std::sync::Mutex::new(Vec::new());
        for index in 0..2 {
            let scope = Scope {
                shard: Some(Shard::new(index, 2)?),
                ..with_cursor()
            };
            let summary = sweep(&store, scope, &Invocation::default(), 2, |o, _| {
                if let Ok(mut seen) = seen.lock() {
                    seen.push(o.key);
                }
                async { done() }
            })
            .await?;
            assert!(summary.finished && summary.completed > 10, "{summary}");
        }
        let mut seen = seen.lock().map_err(|_| "poisoned")?.clone();
        seen.sort();
        assert_eq!(seen, keys);
        Ok(())
    }
}
