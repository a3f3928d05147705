//! What a handler says about one event, and the per-record report the runtimes translate into
//! platform semantics (SQS `batchItemFailures`, S3 Batch result codes, HTTP status codes).

use std::error::Error as StdError;
use std::fmt;

use crate::event::EventKind;

/// Any error, boxed, as it travels inside a [`HandlerError`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A handler finished with the event and nothing is to be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// The work was done; the text says what (for logs and the CLI).
    Completed(String),
    /// The event is not this function's business (wrong kind, its own output, gone object).
    Skipped(String),
}

impl Done {
    /// Skipped: events of `kind` are not what `function` handles.
    pub fn not_handled(function: &str, kind: EventKind) -> Self {
        Self::Skipped(format!("{kind:?} events are not {function}'s business"))
    }
}

impl fmt::Display for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Completed(what) => write!(f, "done: {what}"),
            Self::Skipped(why) => write!(f, "skipped: {why}"),
        }
    }
}

/// A handler could not finish; the variant decides whether the platform retries.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// May succeed later (network, throttling, 5xx, broker down): report as failed so that
    /// the platform redelivers.
    #[error("{}", chain(.0.as_ref()))]
    Retryable(BoxError),
    /// Will fail the same way every time (corrupt input, invalid event, a 4xx that will not
    /// change): send to the dead-letter path, never report as success.
    #[error("{}", chain(.0.as_ref()))]
    Permanent(BoxError),
}

impl HandlerError {
    pub fn retryable(error: impl Into<BoxError>) -> Self {
        Self::Retryable(error.into())
    }

    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self::Permanent(error.into())
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

impl From<crate::event::DecodeError> for HandlerError {
    fn from(error: crate::event::DecodeError) -> Self {
        Self::permanent(error)
    }
}

/// An error and its sources as one line: `writing s3://b/k: dispatch failure: connection refused`.
pub fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        // Some SDK errors repeat their source in their own message; say it once.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// A handler's answer for one event.
pub type Outcome = Result<Done, HandlerError>;

/// How a whole record (SQS message, S3 Batch task, CloudEvent) ended: the worst of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordStatus {
    Succeeded,
    Retryable(String),
    Permanent(String),
}

impl RecordStatus {
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Succeeded)
    }

    /// `succeeded`, `retryable` or `permanent`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retryable(_) => "retryable",
            Self::Permanent(_) => "permanent",
        }
    }

    /// The failure message; empty for success.
    pub fn message(&self) -> &str {
        match self {
            Self::Succeeded => "",
            Self::Retryable(message) | Self::Permanent(message) => message,
        }
    }

    /// The status of a single outcome.
    pub fn of(outcome: &Outcome) -> Self {
        match outcome {
            Ok(_) => Self::Succeeded,
            Err(e @ HandlerError::Retryable(_)) => Self::Retryable(e.to_string()),
            Err(e @ HandlerError::Permanent(_)) => Self::Permanent(e.to_string()),
        }
    }

    /// Folds another status in, keeping the worse: any retryable failure makes the whole
    /// retryable (a retry may also clear the permanent ones it was batched with, and
    /// redelivery is harmless), otherwise any permanent failure makes it permanent. The first
    /// failure of the winning kind keeps its message.
    pub fn merge(&mut self, other: &Self) {
        if other.severity() > self.severity() {
            *self = other.clone();
        }
    }

    fn severity(&self) -> u8 {
        match self {
            Self::Succeeded => 0,
            Self::Permanent(_) => 1,
            Self::Retryable(_) => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_wins_over_permanent_in_a_record() {
        let mut status = RecordStatus::Succeeded;
        status.merge(&RecordStatus::of(&Ok(Done::Completed("a".into()))));
        assert_eq!(status, RecordStatus::Succeeded);
        status.merge(&RecordStatus::of(&Err(HandlerError::permanent("corrupt"))));
        assert_eq!(status, RecordStatus::Permanent("corrupt".into()));
        status.merge(&RecordStatus::of(&Err(HandlerError::retryable("503"))));
        assert_eq!(status, RecordStatus::Retryable("503".into()));
        status.merge(&RecordStatus::of(&Err(HandlerError::permanent("other"))));
        assert_eq!(status, RecordStatus::Retryable("503".into()));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("reading s3://b/k")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_joins_sources() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(chain(&e), "reading s3://b/k: connection refused");
        let h = HandlerError::retryable(e);
        assert_eq!(h.to_string(), "reading s3://b/k: connection refused");
    }
}
