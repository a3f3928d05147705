//! What the sender of an event is told of its outcome: the message of a failure written for it
//! (a limit, a deadline, an event that does not decode), else only what kind of failure it was
//! and what the sender can do. The rest of the chain is for the log. The one place that knows
//! which errors are which, so the errors' own modules need not know one another.

use std::error::Error as StdError;

use crate::ObjectPath;
use crate::budget::{BudgetError, Stopped};
use crate::config::redact_urls_in;
use crate::event::{DecodeError, ObjectEvent};
use crate::outcome::{Done, ForSender, HandlerError, Outcome, RecordStatus};
use crate::sink::PublishError;
use crate::storage::StoreError;

/// What the sender of the event may be told: the message of the first error in the chain
/// that is written for it ([`HandlerError::for_sender`], budgets, deadlines, undecodable
/// events), else what kind of failure it was and what the sender can do. The rest of the
/// chain is for the log.
pub fn public_reason(failure: &HandlerError) -> String {
    let (label, error) = match failure {
        HandlerError::Retryable(e) => ("retryable", e.as_ref()),
        HandlerError::Permanent(e) => ("permanent", e.as_ref()),
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
    let class = class.unwrap_or(match failure {
        HandlerError::Retryable(_) => "the function could not finish the event now",
        HandlerError::Permanent(_) => "the function cannot handle the event",
    });
    let advice = match failure {
        HandlerError::Retryable(_) => "sending it again later may succeed",
        HandlerError::Permanent(_) => "sending it again will not help",
    };
    format!("{label}: {class}; {advice}")
}

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

/// A record's outcome as the sender of the delivery may read it: per event its path (which
/// the sender named) and [`public_reason`]; a record refused before any
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
                Err(error) => format!("{path}: {}", public_reason(error)),
            }
        })
        .collect();
    match (status, parts.is_empty()) {
        (RecordStatus::Permanent(message), true) => redact_urls_in(message),
        (_, true) => "no object events".to_owned(),
        (_, false) => parts.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;

    /// An upstream failure as a client reports it: a path on the service, its answer and the
    /// URL it called, password included.
    #[derive(Debug, thiserror::Error)]
    #[error(
        "uploading /private/ingest/x.xml to https://svc:hunter2@ftp.internal/ failed: 550 quota"
    )]
    struct Upstream;

    #[test]
    fn the_public_reason_names_the_class_and_nothing_upstream() {
        let store = StoreError::Unavailable {
            op: crate::storage::Op::Get,
            bucket: "b".into(),
            key: "k".into(),
            source: Box::new(Upstream),
        };
        let reason = public_reason(&HandlerError::from(store));
        assert_eq!(
            reason,
            "retryable: the object store is unavailable; sending it again later may succeed"
        );
        let reason = public_reason(&HandlerError::permanent(Upstream));
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
        let reason = public_reason(&HandlerError::from(busy.clone()));
        assert_eq!(reason, format!("retryable: {busy}"));

        #[derive(Debug, thiserror::Error)]
        #[error("decoding b/k")]
        struct Decoding(#[source] BudgetError);
        let reason = public_reason(&HandlerError::retryable(Decoding(busy.clone())));
        assert_eq!(reason, format!("retryable: {busy}"));

        let refused = HandlerError::permanent("b/k is 90000 pixels, over MAX_SOURCE_PIXELS");
        assert_eq!(
            public_reason(&refused.for_sender()),
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
}
