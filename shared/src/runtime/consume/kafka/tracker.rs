//! Which offsets of each partition are settled, so that the committed offset never passes an
//! unsettled message; which keys have a message in flight, so that the next message of a key
//! waits for it; and which partitions wait out a retry.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// What became of a message on arrival.
pub(super) enum Arrival<T> {
    /// It can be handled now.
    Go(T),
    /// It waits behind an unsettled message of its key; [`Tracker::settle`] hands it out.
    Held,
}

/// One assigned partition as this consumer has taken from it.
struct Partition<T> {
    /// Tells a message of this assignment from one of an earlier assignment of the partition.
    generation: u64,
    /// Offsets taken and not settled.
    pending: BTreeSet<i64>,
    /// One past the highest offset taken.
    next: i64,
    /// The offset last handed out to be committed.
    stored: i64,
    /// Keys with a message in flight, and the messages of the key waiting behind it.
    keys: HashMap<Vec<u8>, VecDeque<T>>,
    /// Messages waiting out a retry delay; the partition is paused while there are any.
    retrying: usize,
}

/// The partitions of one consumer.
pub(super) struct Tracker<T> {
    partitions: HashMap<i32, Partition<T>>,
    generations: u64,
}

impl<T> Default for Tracker<T> {
    fn default() -> Self {
        Self {
            partitions: HashMap::new(),
            generations: 0,
        }
    }
}

impl<T> Tracker<T> {
    /// A message taken at `offset` of `partition`; `make` builds it with the generation it
    /// settles under.
    pub(super) fn arrive(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        make: impl FnOnce(u64) -> T,
    ) -> Arrival<T> {
        let generations = &mut self.generations;
        let state = self.partitions.entry(partition).or_insert_with(|| {
            *generations += 1;
            Partition {
                generation: *generations,
                pending: BTreeSet::new(),
                next: offset,
                stored: offset,
                keys: HashMap::new(),
                retrying: 0,
            }
        });
        state.pending.insert(offset);
        state.next = state.next.max(offset.saturating_add(1));
        let item = make(state.generation);
        match key {
            None => Arrival::Go(item),
            Some(key) => match state.keys.entry(key) {
                Entry::Occupied(mut waiting) => {
                    waiting.get_mut().push_back(item);
                    Arrival::Held
                }
                Entry::Vacant(free) => {
                    free.insert(VecDeque::new());
                    Arrival::Go(item)
                }
            },
        }
    }

    /// The live state of `partition` if `generation` is its assignment's.
    fn current(&mut self, partition: i32, generation: u64) -> Option<&mut Partition<T>> {
        self.partitions
            .get_mut(&partition)
            .filter(|state| state.generation == generation)
    }

    /// The message at `offset` settled. Gives the offset to commit if it moved on (the lowest
    /// unsettled one, or one past the highest taken), and the next message of its key.
    pub(super) fn settle(
        &mut self,
        partition: i32,
        generation: u64,
        offset: i64,
        key: Option<&[u8]>,
    ) -> (Option<i64>, Option<T>) {
        let Some(state) = self.current(partition, generation) else {
            return (None, None);
        };
        if !state.pending.remove(&offset) {
            return (None, None);
        }
        let successor = key.and_then(|key| {
            let waiting = state.keys.get_mut(key)?;
            let next = waiting.pop_front();
            if next.is_none() {
                state.keys.remove(key);
            }
            next
        });
        let committable = state.pending.first().copied().unwrap_or(state.next);
        let commit = (committable > state.stored).then(|| {
            state.stored = committable;
            committable
        });
        (commit, successor)
    }

    /// A message of `partition` waits out a retry; true if the partition is to be paused now.
    pub(super) fn retrying(&mut self, partition: i32, generation: u64) -> bool {
        self.current(partition, generation).is_some_and(|state| {
            state.retrying += 1;
            state.retrying == 1
        })
    }

    /// Its delay is over: `None` if the partition was revoked meanwhile (the message is
    /// dropped; its next owner reads it again), else whether to resume the partition now.
    pub(super) fn retried(&mut self, partition: i32, generation: u64) -> Option<bool> {
        let state = self.current(partition, generation)?;
        state.retrying = state.retrying.saturating_sub(1);
        Some(state.retrying == 0)
    }

    /// Forgets revoked partitions, and the messages waiting in them.
    pub(super) fn revoke(&mut self, partitions: &[i32]) {
        for partition in partitions {
            self.partitions.remove(partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Takes `offset` and says whether it can go, the generation as its item.
    fn take(tracker: &mut Tracker<u64>, offset: i64, key: Option<&str>) -> Option<u64> {
        match tracker.arrive(0, offset, key.map(|k| k.as_bytes().to_vec()), |g| g) {
            Arrival::Go(generation) => Some(generation),
            Arrival::Held => None,
        }
    }

    #[test]
    fn the_commit_waits_for_the_lowest_unsettled_offset() -> TestResult {
        let mut tracker = Tracker::default();
        let g = take(&mut tracker, 10, None).ok_or("held")?;
        take(&mut tracker, 11, None).ok_or("held")?;
        take(&mut tracker, 12, None).ok_or("held")?;
        // 11 and 12 settle first: 10 is unfinished, so nothing is committed.
        assert_eq!(tracker.settle(0, g, 12, None), (None, None));
        assert_eq!(tracker.settle(0, g, 11, None), (None, None));
        // Then 10: everything taken is settled, the commit is one past the highest.
        assert_eq!(tracker.settle(0, g, 10, None), (Some(13), None));
        // A second settlement of the same offset changes nothing.
        assert_eq!(tracker.settle(0, g, 10, None), (None, None));
        Ok(())
    }

    #[test]
    fn a_key_is_handled_in_order_one_message_at_a_time() -> TestResult {
        let mut tracker: Tracker<i64> = Tracker::default();
        let mut offered = |offset: i64, key: &str| match tracker.arrive(
            0,
            offset,
            Some(key.as_bytes().to_vec()),
            |_| offset,
        ) {
            Arrival::Go(o) => Some(o),
            Arrival::Held => None,
        };
        assert_eq!(offered(1, "photos/a.jpg"), Some(1));
        assert_eq!(
            offered(2, "photos/b.jpg"),
            Some(2),
            "another key is not held"
        );
        assert_eq!(offered(3, "photos/a.jpg"), None, "behind offset 1");
        assert_eq!(offered(4, "photos/a.jpg"), None, "behind offset 3");
        let g = tracker.partitions.get(&0).ok_or("no partition")?.generation;
        assert_eq!(
            tracker.settle(0, g, 1, Some(b"photos/a.jpg")),
            (Some(2), Some(3)),
            "the commit stops at unsettled 2; 3 goes next"
        );
        assert_eq!(
            tracker.settle(0, g, 2, Some(b"photos/b.jpg")),
            (Some(3), None)
        );
        assert_eq!(
            tracker.settle(0, g, 3, Some(b"photos/a.jpg")),
            (Some(4), Some(4))
        );
        assert_eq!(
            tracker.settle(0, g, 4, Some(b"photos/a.jpg")),
            (Some(5), None)
        );
        assert!(
            tracker
                .partitions
                .get(&0)
                .is_some_and(|p| p.keys.is_empty())
        );
        Ok(())
    }

    #[test]
    fn a_revoked_partition_forgets_its_messages_and_ignores_their_settling() -> TestResult {
        let mut tracker = Tracker::default();
        let old = take(&mut tracker, 5, Some("k")).ok_or("held")?;
        assert!(take(&mut tracker, 6, Some("k")).is_none());
        assert!(tracker.retrying(0, old), "the first retry pauses");
        tracker.revoke(&[0]);
        // Assigned again: offset 5 is read again, under a new generation.
        let new = take(&mut tracker, 5, Some("k")).ok_or("held")?;
        assert_ne!(old, new);
        assert_eq!(tracker.settle(0, old, 5, Some(b"k")), (None, None));
        assert_eq!(tracker.retried(0, old), None, "a stale retry is dropped");
        assert_eq!(tracker.settle(0, new, 5, Some(b"k")), (Some(6), None));
        Ok(())
    }

    #[test]
    fn the_partition_resumes_when_its_last_retry_is_due() -> TestResult {
        let mut tracker = Tracker::default();
        let g = take(&mut tracker, 1, None).ok_or("held")?;
        take(&mut tracker, 2, None).ok_or("held")?;
        assert!(tracker.retrying(0, g));
        assert!(!tracker.retrying(0, g), "already paused");
        assert_eq!(tracker.retried(0, g), Some(false));
        assert_eq!(tracker.retried(0, g), Some(true));
        Ok(())
    }

    #[test]
    fn in_any_settling_order_the_commit_never_passes_an_unsettled_offset() {
        // A small deterministic shuffle of 200 offsets over a few keys.
        let mut noise = crate::testing::Noise(0x2545_f491_4f6c_dd1d);
        let mut random = move |n: usize| usize::try_from(noise.next_u64() % n as u64).unwrap_or(0);
        for _ in 0..50 {
            let mut tracker: Tracker<i64> = Tracker::default();
            let mut running = Vec::new();
            let mut committed = 0;
            let mut settled = BTreeSet::new();
            for offset in 0..200 {
                let key = format!("k{}", random(7)).into_bytes();
                if let Arrival::Go(o) = tracker.arrive(0, offset, Some(key.clone()), |_| offset) {
                    running.push((o, key));
                }
                while !running.is_empty() && random(3) == 0 {
                    let (o, key) = running.swap_remove(random(running.len()));
                    let (commit, next) = tracker.settle(0, 1, o, Some(&key));
                    settled.insert(o);
                    if let Some(c) = commit {
                        assert!(c > committed);
                        assert!((0..c).all(|x| settled.contains(&x)), "{c} passes one");
                        committed = c;
                    }
                    if let Some(n) = next {
                        running.push((n, key));
                    }
                }
            }
            while let Some((o, key)) = running.pop() {
                let (commit, next) = tracker.settle(0, 1, o, Some(&key));
                settled.insert(o);
                if let Some(c) = commit {
                    assert!((0..c).all(|x| settled.contains(&x)));
                    committed = c;
                }
                if let Some(n) = next {
                    running.push((n, key));
                }
            }
            assert_eq!(committed, 200, "everything settled is committed");
        }
    }
}
