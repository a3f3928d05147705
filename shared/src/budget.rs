//! What work may cost: one memory budget shared by everything a process runs at once, and the
//! cooperative stop that ends CPU work at its deadline.
//!
//! Memory-heavy work (an image decode, a content-mode stream) states what it will need before
//! it allocates, and holds a [`Reservation`] while it runs. A need larger than the whole budget
//! can never be met (permanent); a need that does not fit beside the work already running may
//! fit later (retryable, so the platform redelivers instead of the process being OOM-killed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::outcome::HandlerError;

/// The budget is counted in KiB: the semaphore counts in `u32` per acquisition.
const UNIT: u64 = 1024;

/// The process-wide memory budget. Cheap to clone; every clone shares the same budget.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    limit: u64,
    units: Arc<Semaphore>,
}

/// A share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    bytes: u64,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// The bytes this reservation holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Why a reservation was not given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// More than the whole budget: waiting cannot help.
    #[error("{what} needs {} MiB, over the memory budget of {} MiB (MAX_DECODE_BYTES)", mib(*.need), mib(*.limit))]
    OverBudget { what: String, need: u64, limit: u64 },
    /// The budget is taken by other work running in this process; the same work may fit later.
    #[error("{what} needs {} MiB and the memory budget of {} MiB is taken by other work; try again later", mib(*.need), mib(*.limit))]
    Busy { what: String, need: u64, limit: u64 },
}

impl From<BudgetError> for HandlerError {
    fn from(error: BudgetError) -> Self {
        match error {
            BudgetError::OverBudget { .. } => Self::permanent(error),
            BudgetError::Busy { .. } => Self::retryable(error),
        }
    }
}

fn mib(bytes: u64) -> String {
    let tenths = bytes.saturating_mul(10).div_ceil(1024 * 1024);
    format!("{}.{}", tenths / 10, tenths % 10)
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::new(Self::DEFAULT_BYTES)
    }
}

impl MemoryBudget {
    /// The budget when `MAX_DECODE_BYTES` is not set.
    pub const DEFAULT_BYTES: u64 = 256 * 1024 * 1024;

    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        let units = limit.div_ceil(UNIT).min(Semaphore::MAX_PERMITS as u64) as usize;
        Self {
            limit,
            units: Arc::new(Semaphore::new(units)),
        }
    }

    /// The whole budget, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The bytes not reserved right now.
    pub fn available(&self) -> u64 {
        (self.units.available_permits() as u64).saturating_mul(UNIT)
    }

    /// Reserves `need` bytes for `what`, waiting at most `wait` for other work to give back
    /// its share.
    pub async fn reserve(
        &self,
        what: &str,
        need: u64,
        wait: Duration,
    ) -> Result<Reservation, BudgetError> {
        let units = self.units_for(what, need)?;
        if units == 0 {
            return Ok(Reservation {
                bytes: need,
                _permit: None,
            });
        }
        match tokio::time::timeout(wait, Arc::clone(&self.units).acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(Reservation {
                bytes: need,
                _permit: Some(permit),
            }),
            // The semaphore is never closed; a timeout means the budget stayed taken.
            Ok(Err(_)) | Err(_) => Err(self.busy(what, need)),
        }
    }

    /// Reserves `need` bytes for `what` if they are free now.
    pub fn try_reserve(&self, what: &str, need: u64) -> Result<Reservation, BudgetError> {
        let units = self.units_for(what, need)?;
        if units == 0 {
            return Ok(Reservation {
                bytes: need,
                _permit: None,
            });
        }
        Arc::clone(&self.units)
            .try_acquire_many_owned(units)
            .map(|permit| Reservation {
                bytes: need,
                _permit: Some(permit),
            })
            .map_err(|_| self.busy(what, need))
    }

    fn units_for(&self, what: &str, need: u64) -> Result<u32, BudgetError> {
        if need > self.limit {
            return Err(BudgetError::OverBudget {
                what: what.to_owned(),
                need,
                limit: self.limit,
            });
        }
        u32::try_from(need.div_ceil(UNIT)).map_err(|_| BudgetError::OverBudget {
            what: what.to_owned(),
            need,
            limit: self.limit,
        })
    }

    fn busy(&self, what: &str, need: u64) -> BudgetError {
        BudgetError::Busy {
            what: what.to_owned(),
            need,
            limit: self.limit,
        }
    }
}

/// Tells long CPU work to stop: at a deadline, or when whoever waits for it gives up. Checked
/// in the decode, resize and content loops; cheap enough to check per row or per record.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    deadline: Option<Instant>,
    flag: Arc<AtomicBool>,
}

/// The work was told to stop before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped at the deadline before the work was finished")]
pub struct Stopped;

impl From<Stopped> for HandlerError {
    fn from(error: Stopped) -> Self {
        Self::retryable(error)
    }
}

impl Stop {
    /// Stops at `deadline` (if any), or earlier when [`Stop::stop`] is called.
    pub fn at(deadline: Option<Instant>) -> Self {
        Self {
            deadline,
            flag: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Tells the work (and every clone of this `Stop`) to stop now.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// Whether the work should stop.
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// `Err(Stopped)` once the work should stop, for `?` in loops.
    pub fn check(&self) -> Result<(), Stopped> {
        if self.is_stopped() {
            Err(Stopped)
        } else {
            Ok(())
        }
    }

    /// The deadline, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// A stop for part of this work that must end by `deadline`: it stops at the earlier of
    /// the two deadlines, and whenever this one is stopped. It shares this stop's flag, so
    /// whoever waits for this work to let go waits for the part too.
    pub fn sooner(&self, deadline: Option<Instant>) -> Self {
        Self {
            deadline: match (self.deadline, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            flag: Arc::clone(&self.flag),
        }
    }

    /// A guard that stops the work when dropped: held by the async side that waits for
    /// blocking work, so that a timed-out or abandoned wait ends the work too.
    pub fn on_drop(&self) -> StopOnDrop {
        StopOnDrop(self.clone())
    }
}

/// Calls [`Stop::stop`] when dropped.
#[derive(Debug)]
pub struct StopOnDrop(Stop);

/// How often [`StopOnDrop::stop_and_wait`] looks whether the work has let go of its `Stop`.
const RELEASE_POLL: Duration = Duration::from_millis(5);

impl StopOnDrop {
    /// Stops the work now and waits, at most `within`, until nothing but this guard holds a
    /// clone of its `Stop`. Work that checks its stop holds a clone for as long as it runs
    /// (a blocking thread, a spawned task), so this is the moment its threads are free and
    /// its memory is given back. Returns whether that happened in time.
    ///
    /// Whoever calls this must hold no other clone, or it always waits the whole `within`.
    pub async fn stop_and_wait(&self, within: Duration) -> bool {
        self.0.stop();
        let until = Instant::now() + within;
        while Arc::strong_count(&self.0.flag) > 1 {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(RELEASE_POLL).await;
        }
        true
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[tokio::test]
    async fn a_need_over_the_whole_budget_is_permanent_and_names_it() {
        let budget = MemoryBudget::new(64 * 1024 * 1024);
        let err = budget
            .reserve("the JPEG 10000x10000", 500 * 1024 * 1024, Duration::ZERO)
            .await
            .err();
        let Some(err) = err else {
            panic!("reserved more than the budget");
        };
        assert_eq!(
            err.to_string(),
            "the JPEG 10000x10000 needs 500.0 MiB, over the memory budget of 64.0 MiB (MAX_DECODE_BYTES)"
        );
        assert!(!HandlerError::from(err).is_retryable());
    }

    #[tokio::test]
    async fn a_taken_budget_is_retryable_and_given_back_on_drop() -> TestResult {
        let budget = MemoryBudget::new(10 * 1024 * 1024);
        let first = budget.try_reserve("one", 8 * 1024 * 1024)?;
        assert_eq!(first.bytes(), 8 * 1024 * 1024);
        let err = budget
            .reserve("two", 4 * 1024 * 1024, Duration::from_millis(10))
            .await
            .err()
            .ok_or("both fit")?;
        assert!(matches!(err, BudgetError::Busy { .. }), "{err}");
        assert!(HandlerError::from(err).is_retryable());
        drop(first);
        let second = budget.try_reserve("two", 4 * 1024 * 1024)?;
        assert_eq!(budget.available(), 6 * 1024 * 1024);
        drop(second);
        assert_eq!(budget.available(), 10 * 1024 * 1024);
        Ok(())
    }

    #[tokio::test]
    async fn a_waiting_reservation_gets_what_is_given_back() -> TestResult {
        let budget = MemoryBudget::new(1024 * 1024);
        let held = budget.try_reserve("first", 1024 * 1024)?;
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                budget
                    .reserve("second", 512 * 1024, Duration::from_secs(10))
                    .await
                    .map(|r| r.bytes())
            })
        };
        tokio::task::yield_now().await;
        drop(held);
        assert_eq!(waiter.await??, 512 * 1024);
        Ok(())
    }

    #[test]
    fn stop_is_shared_by_clones_and_by_the_drop_guard() {
        let stop = Stop::at(None);
        let seen_by_work = stop.clone();
        assert!(seen_by_work.check().is_ok());
        drop(stop.on_drop());
        assert_eq!(seen_by_work.check(), Err(Stopped));
    }

    #[tokio::test]
    async fn stop_and_wait_returns_once_the_work_has_let_go() -> TestResult {
        let stop = Stop::at(None);
        let guard = stop.on_drop();
        let work = std::thread::spawn(move || {
            while stop.check().is_ok() {
                std::thread::yield_now();
            }
        });
        assert!(guard.stop_and_wait(Duration::from_secs(30)).await);
        work.join().map_err(|_| "the work panicked")?;
        Ok(())
    }

    #[tokio::test]
    async fn stop_and_wait_gives_up_on_work_that_never_checks() {
        let stop = Stop::at(None);
        let guard = stop.on_drop();
        let _held_by_stubborn_work = stop;
        assert!(!guard.stop_and_wait(Duration::from_millis(20)).await);
    }

    #[test]
    fn stop_follows_its_deadline() {
        let passed = Stop::at(Some(Instant::now()));
        assert!(passed.is_stopped());
        let later = Stop::at(Some(Instant::now() + Duration::from_secs(3600)));
        assert!(!later.is_stopped());
    }
}
