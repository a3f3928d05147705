//! What a handler says about one event, and the per-record report the runtimes translate into
//! platform semantics (SQS `batchItemFailures`, S3 Batch result codes, HTTP status codes). What
//! of a failure the sender may be told is the runtime's (`runtime::answer`).

use std::error::Error as StdError;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ObjectPath;
use crate::config::redact_urls_in;

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
    pub fn not_handled(function: &str, kind: impl fmt::Debug) -> Self {
        Self::Skipped(format!("{kind:?} events are not {function}'s business"))
    }

    /// Skipped: the object an event names no longer exists (a later event says what became of
    /// it), so there is nothing to make from it.
    pub fn gone(bucket: &str, key: &str) -> Self {
        Self::Skipped(format!("{} no longer exists", ObjectPath(bucket, key)))
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

    /// The same failure, retryable or permanent as it was, its message led by `what` was
    /// being done (and for which object).
    pub fn context(self, what: impl fmt::Display) -> Self {
        let within = |source| -> BoxError {
            Box::new(Context {
                what: what.to_string(),
                source,
            })
        };
        match self {
            Self::Retryable(e) => Self::Retryable(within(e)),
            Self::Permanent(e) => Self::Permanent(within(e)),
        }
    }

    /// The same failure, its message marked as written for the event's sender: a limit the
    /// event or its object went over, what is wrong with the event. Only for messages that
    /// carry nothing of the services behind the function (no upstream answer, no path of
    /// another service, no credential).
    pub fn for_sender(self) -> Self {
        match self {
            Self::Retryable(e) => Self::Retryable(Box::new(ForSender(e))),
            Self::Permanent(e) => Self::Permanent(Box::new(ForSender(e))),
        }
    }
}

/// What was being done when a failure happened ([`HandlerError::context`]).
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
struct Context {
    what: String,
    #[source]
    source: BoxError,
}

/// A failure whose message is written for the event's sender ([`HandlerError::for_sender`]).
#[derive(Debug, thiserror::Error)]
#[error("{}", chain(.0.as_ref()))]
pub struct ForSender(BoxError);

/// A short id that ties an answer to a caller to the log lines with its full errors.
pub fn incident_id() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    // A fresh random hasher per call: unguessable enough that ids of one process do not
    // collide with another's, without a random-number crate.
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let hash = std::collections::hash_map::RandomState::new().hash_one((n, std::process::id()));
    format!("{hash:016x}")
}

/// Logs `error`'s whole chain under a new incident id and returns what a caller is told
/// instead: `reason`, which names no service and quotes no answer, and the id.
pub fn incident(reason: &str, error: &(dyn StdError + 'static)) -> String {
    let id = incident_id();
    tracing::warn!(
        incident = %id, reason, error = %chain(error),
        "Request failed; the caller got the reason and the incident id."
    );
    format!("{reason} (incident {id} in the function's log)\n")
}

/// An error and its sources as one line: `writing s3://b/k: dispatch failure: connection refused`.
/// Credentials in URLs that clients quote in their errors are redacted.
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
    redact_urls_in(&text)
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
    use crate::sink::PublishError;

    #[test]
    fn context_leads_the_message_and_keeps_the_class() {
        for (error, retryable) in [
            (
                PublishError::Unavailable {
                    sink: "kafka".into(),
                    source: "timed out".into(),
                },
                true,
            ),
            (
                PublishError::Rejected {
                    sink: "kafka".into(),
                    source: "too large".into(),
                },
                false,
            ),
        ] {
            let error = HandlerError::from(error).context("publishing for b/k failed");
            assert_eq!(error.is_retryable(), retryable);
            let message = error.to_string();
            assert!(
                message.starts_with("publishing for b/k failed: "),
                "{message}"
            );
            // What the sender is told still comes from the class, not the context.
            let told = crate::runtime::answer::public_reason(&error);
            assert!(told.contains("the destination"), "{told}");
        }
    }

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
    fn chain_redacts_credentials_in_urls() {
        let text = chain(&Outer(std::io::Error::other(
            "error sending request for url (https://u:hunter2@sink/)",
        )));
        assert_eq!(
            text,
            "reading s3://b/k: error sending request for url (https://***@sink/)"
        );
    }

    #[test]
    fn incident_ids_differ() {
        assert_ne!(incident_id(), incident_id());
        assert_eq!(incident_id().len(), 16);
    }

    #[test]
    fn chain_joins_sources() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(chain(&e), "reading s3://b/k: connection refused");
        let h = HandlerError::retryable(e);
        assert_eq!(h.to_string(), "reading s3://b/k: connection refused");
    }
}
