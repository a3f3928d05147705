//! An in-memory [`Publisher`] for unit tests (feature `testing`): keeps what it was given and
//! can be told to fail, as a broker that is down would.

use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::{Message, PublishError, Publisher};

#[derive(Debug, Default)]
struct State {
    published: Vec<Message>,
    unavailable: bool,
}

/// Records published messages in order.
#[derive(Debug, Default)]
pub struct MemoryPublisher {
    state: Mutex<State>,
}

impl MemoryPublisher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything published so far.
    pub fn published(&self) -> Vec<Message> {
        self.lock().published.clone()
    }

    /// While set, every publish fails as retryable and nothing is kept.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Publisher for MemoryPublisher {
    async fn publish(&self, messages: Vec<Message>) -> Result<(), PublishError> {
        let mut state = self.lock();
        if state.unavailable {
            return Err(PublishError::Unavailable {
                sink: "memory".to_owned(),
                source: "the in-memory publisher is set to be unavailable".into(),
            });
        }
        state.published.extend(messages);
        Ok(())
    }
}
