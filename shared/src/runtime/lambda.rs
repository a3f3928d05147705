//! The AWS Lambda adapter: SQS batches answer with `batchItemFailures`, S3 Batch Operations
//! with a result code per task, anything else with success or an error naming the failure.
//! Under Lambda Managed Instances (`AWS_LAMBDA_MAX_CONCURRENCY` above 1) several invocations
//! run at once in one process and share its memory budget and event bound.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::s3::batch_job::{S3BatchJobResponse, S3BatchJobResult};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::{Value, json};

use super::dispatch::STOP_GRACE;
use super::{Governor, Report, process, start};
use crate::event::{Envelope, S3BatchJob, decode_value};
use crate::function::{Function, Handler};
use crate::operations::Observer;
use crate::outcome::RecordStatus;

/// Time kept back from the invocation deadline to stop the work still running and send the
/// report.
const REPORT_MARGIN: Duration = Duration::from_millis(500);
const _: () = assert!(
    STOP_GRACE.as_millis() < REPORT_MARGIN.as_millis(),
    "the report margin must leave time to send the report after stopping the work"
);

pub(crate) async fn run<F: Function>() -> ExitCode {
    let started = match start::<F>(None).await {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(error = %e, "Function cannot start.");
            eprintln!("{}: {e}", F::NAME);
            return ExitCode::from(2);
        }
    };
    let function = started.function;
    let governor = started.governor;
    let observer = started.observer;
    let service = service_fn(move |event: LambdaEvent<Value>| {
        let (function, governor, observer) =
            (Arc::clone(&function), governor.clone(), observer.clone());
        async move { respond(&function, &governor, &observer, event).await }
    });
    // Polls once at a time unless AWS_LAMBDA_MAX_CONCURRENCY says more (Managed Instances).
    match lambda_runtime::run_concurrent(service).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "Lambda runtime stopped.");
            ExitCode::FAILURE
        }
    }
}

async fn respond<H: Handler>(
    handler: &Arc<H>,
    governor: &Governor,
    observer: &Observer,
    event: LambdaEvent<Value>,
) -> Result<Value, Diagnostic> {
    let deadline = stop_by(event.context.deadline, SystemTime::now());
    answer_payload(handler, governor, observer, event.payload, deadline).await
}

/// What the Lambda runtime answers to an invocation's `payload` (JSON the runtime has parsed)
/// that must be reported by `deadline`: the response, or the diagnostic with its error type.
/// Public so that a test can put a function whose clients it replaces (a publisher in memory)
/// through the path its binary takes under Lambda.
pub async fn answer_payload<H: Handler>(
    handler: &Arc<H>,
    governor: &Governor,
    observer: &Observer,
    payload: Value,
    deadline: Option<Instant>,
) -> Result<Value, Diagnostic> {
    let invocation = governor.invocation(deadline);
    let delivery = decode_value(payload).map_err(|e| Diagnostic {
        error_type: "bucketfn.InvalidEvent".to_owned(),
        error_message: e.to_string(),
    })?;
    // A batch from an event source is bounded by its batch size; a direct invocation is not.
    governor.admit(&delivery).map_err(|e| {
        tracing::error!(error = %e, "Invocation refused.");
        Diagnostic {
            error_type: "bucketfn.Permanent".to_owned(),
            error_message: e.to_string(),
        }
    })?;
    let report = process(handler, delivery, invocation, governor, observer).await;
    answer(report)
}

/// Converts the Lambda deadline (milliseconds since the epoch) into the instant work must stop.
///
/// Local emulators do not all follow the contract: `cargo lambda watch` sends a fixed
/// `600000`, ten minutes after 1970. A deadline more than a day gone cannot be a real
/// one, so the invocation runs without a deadline rather than failing every record at once.
fn stop_by(deadline_ms: u64, now: SystemTime) -> Option<Instant> {
    const IMPLAUSIBLY_PAST: Duration = Duration::from_secs(24 * 3600);
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let deadline = Duration::from_millis(deadline_ms);
    if deadline + IMPLAUSIBLY_PAST < now {
        tracing::warn!(
            deadline_ms,
            "The runtime's deadline is not a time since the epoch; running without a deadline."
        );
        return None;
    }
    let remaining = deadline.saturating_sub(now);
    Some(Instant::now() + remaining.saturating_sub(REPORT_MARGIN))
}

/// The platform's view of a report.
pub(crate) fn answer(report: Report) -> Result<Value, Diagnostic> {
    match &report.envelope {
        Envelope::SqsBatch => {
            let mut response = SqsBatchResponse::default();
            for record in &report.records {
                if !record.status.is_success() {
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = record.id.clone().unwrap_or_default();
                    response.batch_item_failures.push(failure);
                }
            }
            to_value(&response)
        }
        Envelope::S3Batch(job) => to_value(&s3_batch_response(job, &report)),
        Envelope::Single => match report.overall() {
            RecordStatus::Succeeded => Ok(json!({
                "outcomes": report.records.iter().map(|r| r.summary()).collect::<Vec<_>>()
            })),
            RecordStatus::Retryable(message) => Err(Diagnostic {
                error_type: "bucketfn.Retryable".to_owned(),
                error_message: message,
            }),
            RecordStatus::Permanent(message) => Err(Diagnostic {
                error_type: "bucketfn.Permanent".to_owned(),
                error_message: message,
            }),
        },
    }
}

fn s3_batch_response(job: &S3BatchJob, report: &Report) -> S3BatchJobResponse {
    let mut response = S3BatchJobResponse::default();
    response.invocation_schema_version = Some(job.schema_version.clone());
    response.invocation_id = Some(job.invocation_id.clone());
    response.treat_missing_keys_as = Some("PermanentFailure".to_owned());
    for record in &report.records {
        let (code, text) = match &record.status {
            RecordStatus::Succeeded => ("Succeeded", record.summary()),
            RecordStatus::Retryable(m) => ("TemporaryFailure", m.clone()),
            RecordStatus::Permanent(m) => ("PermanentFailure", m.clone()),
        };
        let mut result = S3BatchJobResult::default();
        result.task_id = record.id.clone();
        result.result_code = Some(code.to_owned());
        result.result_string = Some(text);
        response.results.push(result);
    }
    response
}

fn to_value(response: &impl serde::Serialize) -> Result<Value, Diagnostic> {
    serde_json::to_value(response).map_err(|e| Diagnostic {
        error_type: "bucketfn.Internal".to_owned(),
        error_message: format!("cannot serialize the response: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_795_000_000_000;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn a_real_deadline_keeps_the_report_margin() {
        let stop = stop_by(NOW_MS + 3_000, at(NOW_MS));
        let left = stop.map(|s| s.saturating_duration_since(Instant::now()));
        assert!(
            left.is_some_and(
                |l| l <= Duration::from_millis(2_500) && l > Duration::from_millis(2_000)
            ),
            "{left:?}"
        );
    }

    #[test]
    fn a_deadline_just_past_stops_at_once() {
        let stop = stop_by(NOW_MS - 1_000, at(NOW_MS));
        assert!(stop.is_some_and(|s| s <= Instant::now()), "{stop:?}");
    }

    #[test]
    fn an_emulators_relative_deadline_is_no_deadline() {
        assert_eq!(stop_by(600_000, at(NOW_MS)), None);
    }
}
