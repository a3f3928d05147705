//! What a handler says about one event, and the per-record report the runtimes translate into
//! platform semantics (SQS `batchItemFailures`, S3 Batch result codes, HTTP status codes); and
//! what of a failure the sender of an event may be told.

use std::error::Error as StdError;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::budget::{BudgetError, Stopped};
use crate::config::redact_urls_in;
use crate::event::{DecodeError, EventKind, ObjectEvent};
use crate::sink::PublishError;
use crate::storage::{ObjectPath, StoreError};

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

    /// What the sender of the event may be told: the message of the first error in the chain
    /// that is written for it ([`HandlerError::for_sender`], budgets, deadlines, undecodable
    /// events), else what kind of failure it was and what the sender can do. The rest of the
    /// chain is for the log.
    pub fn public_reason(&self) -> String {
        let (label, error) = match self {
            Self::Retryable(e) => ("retryable", e.as_ref()),
            Self::Permanent(e) => ("permanent", e.as_ref()),
        };
        let mut class = None;
        let mut next: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(e) = next {
            if let Some(shown) = sender_message(e) {
                return format!("{label}: {shown}");
            }
            class = class.or_else(|| failure_class(e));
            next = e.source();
        }
        let class = class.unwrap_or(match self {
            Self::Retryable(_) => "the function could not finish the event now",
            Self::Permanent(_) => "the function cannot handle the event",
        });
        let advice = match self {
            Self::Retryable(_) => "sending it again later may succeed",
            Self::Permanent(_) => "sending it again will not help",
        };
        format!("{label}: {class}; {advice}")
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

/// The message of `error` when it is one that the sender of an event may read: it names a
/// limit or says what is wrong with the event itself.
fn sender_message(error: &(dyn StdError + 'static)) -> Option<String> {
    if error.is::<ForSender>()
        || error.is::<BudgetError>()
        || error.is::<Stopped>()
        || error.is::<DecodeError>()
    {
        return Some(redact_urls_in(&error.to_string()));
    }
    None
}

/// What kind of failure `error` is, in words that name no path of a service and no answer.
fn failure_class(error: &(dyn StdError + 'static)) -> Option<&'static str> {
    if let Some(store) = error.downcast_ref::<StoreError>() {
        return Some(match store {
            StoreError::Unavailable { .. } => "the object store is unavailable",
            StoreError::NotFound { .. } => "an object the event needs does not exist",
            StoreError::TooLarge { .. } => "an object is over the size the function reads",
            StoreError::Rejected { .. } => "the object store refused the function's request",
            StoreError::NoSuchBucket { .. } => "a bucket the function needs does not exist",
            StoreError::Unsupported { .. } => {
                "the object store lacks a capability the function relies on"
            }
            _ => "the object store cannot hold what the function needs",
        });
    }
    if let Some(publish) = error.downcast_ref::<PublishError>() {
        return Some(match publish {
            PublishError::Unavailable { .. } => "the destination of the messages is unavailable",
            PublishError::Rejected { .. } => "the destination refused the messages",
        });
    }
    None
}

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

/// A record's outcome as the sender of the delivery may read it: per event its path (which
/// the sender named) and [`HandlerError::public_reason`]; a record refused before any
/// handler ran (it does not decode, or names a bucket the function does not serve) keeps its
/// refusal, which is about the record itself.
pub fn public_summary<'a>(
    status: &RecordStatus,
    events: impl IntoIterator<Item = (&'a ObjectEvent, &'a Outcome)>,
) -> String {
    let parts: Vec<String> = events
        .into_iter()
        .map(|(event, outcome)| {
            let path = ObjectPath(&event.bucket, &event.key);
            match outcome {
                Ok(Done::Completed(_)) => format!("{path}: done"),
                Ok(Done::Skipped(_)) => format!("{path}: skipped"),
                Err(error) => format!("{path}: {}", error.public_reason()),
            }
        })
        .collect();
    match (status, parts.is_empty()) {
        (RecordStatus::Permanent(message), true) => redact_urls_in(message),
        (_, true) => "no object events".to_owned(),
        (_, false) => parts.join("; "),
    }
}

impl From<crate::event::DecodeError> for HandlerError {
    fn from(error: crate::event::DecodeError) -> Self {
        Self::permanent(error)
    }
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
            assert!(
                error.public_reason().contains("the destination"),
                "{}",
                error.public_reason()
            );
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

    /// An upstream failure as a client reports it: a path on the service, its answer and the
    /// URL it called, password included.
    #[derive(Debug, thiserror::Error)]
    #[error(
        "uploading /private/ingest/x.xml to https://svc:hunter2@ftp.internal/ failed: 550 quota"
    )]
    struct Upstream;

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
    fn the_public_reason_names_the_class_and_nothing_upstream() {
        let store = StoreError::Unavailable {
            op: crate::storage::Op::Get,
            bucket: "b".into(),
            key: "k".into(),
            source: Box::new(Upstream),
        };
        let reason = HandlerError::from(store).public_reason();
        assert_eq!(
            reason,
            "retryable: the object store is unavailable; sending it again later may succeed"
        );
        let reason = HandlerError::permanent(Upstream).public_reason();
        assert_eq!(
            reason,
            "permanent: the function cannot handle the event; sending it again will not help"
        );
    }

    #[test]
    fn messages_for_the_sender_are_shown_wherever_they_are_in_the_chain() {
        let busy = BudgetError::Busy {
            what: "b/k, a 10 MP JPEG,".into(),
            need: 40 << 20,
            limit: 64 << 20,
        };
        let reason = HandlerError::from(busy.clone()).public_reason();
        assert_eq!(reason, format!("retryable: {busy}"));

        #[derive(Debug, thiserror::Error)]
        #[error("decoding b/k")]
        struct Decoding(#[source] BudgetError);
        let reason = HandlerError::retryable(Decoding(busy.clone())).public_reason();
        assert_eq!(reason, format!("retryable: {busy}"));

        let refused = HandlerError::permanent("b/k is 90000 pixels, over MAX_SOURCE_PIXELS");
        assert_eq!(
            refused.for_sender().public_reason(),
            "permanent: b/k is 90000 pixels, over MAX_SOURCE_PIXELS"
        );
    }

    #[test]
    fn a_public_summary_has_the_events_paths_and_reasons_only() {
        let event = ObjectEvent::requested(EventKind::Created, "photos", "a.jpg".to_owned());
        let done: Outcome = Ok(Done::Completed("wrote s3://internal/x".into()));
        let failed: Outcome = Err(HandlerError::permanent(Upstream));
        let mut status = RecordStatus::of(&done);
        status.merge(&RecordStatus::of(&failed));
        let summary = public_summary(&status, [(&event, &done), (&event, &failed)]);
        assert_eq!(
            summary,
            "photos/a.jpg: done; photos/a.jpg: permanent: the function cannot handle the event; \
             sending it again will not help"
        );
        let refused =
            RecordStatus::Permanent("bucket other is not one this function serves".into());
        assert_eq!(
            public_summary(&refused, []),
            "bucket other is not one this function serves"
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
