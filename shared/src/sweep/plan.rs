//! The one deadline rule of every sweep and catch-up: when to stop starting objects, when to
//! tell the objects in flight to stop, and when to give up on them, so that what was
//! finished is saved and the run still reports before the platform's deadline.

use std::time::{Duration, Instant};

/// When a walk stops, derived from the invocation's deadline (`None`: it never has to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StopPlan {
    /// No object is started after this.
    pub start_until: Option<Instant>,
    /// Objects still running are told to stop (their own deadline): work that saves its own
    /// progress (content mode) does so then.
    pub objects_stop: Option<Instant>,
    /// Objects that have not answered by now are dropped, and the walk returns what it has:
    /// the rest of the time is the saving of the cursor or checkpoint and the report.
    pub abandon: Option<Instant>,
}

/// Kept back for the cursor write and the report, at most.
const SAVE_TIME: Duration = Duration::from_secs(2);
/// Given to objects told to stop to wrap up (finish a batch, save progress), at most.
const WRAP_UP_TIME: Duration = Duration::from_secs(1);
/// Given to the objects in flight to finish after the last one started: at least this, and a
/// tenth of the time (at most [`MAX_DRAIN`]), so that an object that was started usually ends.
const MIN_DRAIN: Duration = Duration::from_secs(1);
const MAX_DRAIN: Duration = Duration::from_secs(30);

impl StopPlan {
    /// The plan for work that must have reported by `deadline`, starting now.
    ///
    /// Under a short deadline every part shrinks in proportion (Lambda's default timeout is
    /// 3 s): 3 s give 1.5 s of starting objects, 0.6 s to finish them, 0.3 s to wrap up and
    /// 0.6 s to save; 280 s (the HTTP default) give 249 s, 28 s, 1 s and 2 s.
    pub fn before(deadline: Option<Instant>) -> Self {
        let Some(deadline) = deadline else {
            return Self::default();
        };
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        let save = SAVE_TIME.min(left / 5);
        let wrap_up = WRAP_UP_TIME.min(left / 10);
        let drain = (left / 10).clamp(MIN_DRAIN, MAX_DRAIN).min(left / 5);
        let abandon = deadline - save;
        let objects_stop = abandon - wrap_up;
        Self {
            start_until: Some(objects_stop - drain),
            objects_stop: Some(objects_stop),
            abandon: Some(abandon),
        }
    }

    /// The same plan, starting no object after `at` (a slice of a longer run, which saves
    /// its progress in between).
    pub fn starting_until(self, at: Instant) -> Self {
        Self {
            start_until: Some(self.start_until.map_or(at, |s| s.min(at))),
            ..self
        }
    }

    /// Whether an object may still be started now.
    pub fn may_start_now(&self) -> bool {
        self.may_start(Instant::now())
    }

    pub(crate) fn may_start(&self, now: Instant) -> bool {
        self.start_until.is_none_or(|s| now < s)
    }

    pub(crate) fn objects_stopped(&self, now: Instant) -> bool {
        self.objects_stop.is_some_and(|s| now >= s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(plan: StopPlan, from: Instant) -> Option<[u128; 3]> {
        let ms = |at: Option<Instant>| at.map(|a| a.saturating_duration_since(from).as_millis());
        Some([
            ms(plan.start_until)?,
            ms(plan.objects_stop)?,
            ms(plan.abandon)?,
        ])
    }

    #[test]
    fn every_stop_comes_before_the_deadline_in_order() -> Result<(), String> {
        for secs in [1, 3, 15, 60, 280, 900] {
            let from = Instant::now();
            let deadline = from + Duration::from_secs(secs);
            let [start, stop, abandon] =
                offsets(StopPlan::before(Some(deadline)), from).ok_or("no plan")?;
            let total = u128::from(secs) * 1000;
            assert!(
                start < stop && stop < abandon && abandon < total,
                "{secs} s"
            );
            // Most of the time goes to work, whatever the deadline.
            assert!(
                start * 10 >= total * 5,
                "{secs} s: starts end at {start} ms"
            );
        }
        Ok(())
    }

    #[test]
    fn no_deadline_never_stops_and_a_slice_only_stops_starting() {
        assert_eq!(StopPlan::before(None), StopPlan::default());
        let at = Instant::now() + Duration::from_secs(5);
        let sliced = StopPlan::before(None).starting_until(at);
        assert_eq!(sliced.start_until, Some(at));
        assert_eq!(sliced.abandon, None);
    }
}
