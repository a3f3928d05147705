//! The default ledger: this instance's events in memory, oldest dropped first.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use super::{EventEntry, HistoryPage, Ledger, LedgerError, Stats};

pub struct MemoryLedger {
    capacity: u64,
    state: Mutex<(Stats, VecDeque<EventEntry>)>,
}

impl MemoryLedger {
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            state: Mutex::new((Stats::default(), VecDeque::new())),
        }
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn record(&self, entry: &EventEntry) -> Result<(), LedgerError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0.add(entry);
        state.1.push_front(entry.clone());
        state
            .1
            .truncate(usize::try_from(self.capacity).unwrap_or(usize::MAX));
        Ok(())
    }

    async fn stats(&self) -> Result<Stats, LedgerError> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone())
    }

    async fn history(&self, offset: u64, limit: u64) -> Result<HistoryPage, LedgerError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(HistoryPage {
            entries: state.1.iter().skip(skip).take(take).cloned().collect(),
            total: state.1.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::entry;
    use super::*;

    #[tokio::test]
    async fn keeps_the_newest_first_and_drops_the_oldest() -> Result<(), LedgerError> {
        let ledger = MemoryLedger::new(3);
        for key in ["a", "b", "c", "d"] {
            ledger
                .record(&entry("object", "completed", "aws-s3", key))
                .await?;
        }
        let page = ledger.history(0, 2).await?;
        let keys: Vec<&str> = page.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!((keys, page.total), (vec!["d", "c"], 3));
        assert_eq!(ledger.history(2, 2).await?.entries[0].key, "b");
        assert_eq!(ledger.stats().await?.object_events.succeeded, 4);
        Ok(())
    }
}
