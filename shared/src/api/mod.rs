//! Clients of the HTTP APIs the functions call, and what they share: one error type that
//! names the service and classifies the failure once for retry decisions (the HTTP sinks,
//! [`crate::sink::http`], judge statuses and quote bodies by the same rules). The MediaHaven
//! client is here (`mediahaven`); a client only one function calls stays in that function
//! (sidecar-on-create's PID service and organisations API).

#[cfg(feature = "mediahaven")]
pub mod mediahaven;

use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::ObjectPath;
use crate::outcome::{BoxError, HandlerError};

/// How much of an error body is kept for messages: enough to read the service's reason.
const BODY_EXCERPT: usize = 300;

/// A call to an HTTP API that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer: connection refused or reset, DNS, or the request timed out.
    #[error("{service} could not be reached")]
    Unreachable {
        service: &'static str,
        #[source]
        source: BoxError,
    },
    /// An answer with an error status; `body` is the start of what the service said.
    #[error("{service} answered {status}: {body}")]
    Status {
        service: &'static str,
        status: StatusCode,
        body: String,
    },
    /// A success status with a body that does not follow the service's contract.
    #[error("{service} answered with an unexpected body: {reason}")]
    Malformed {
        service: &'static str,
        reason: String,
    },
    /// The service answered, and the answer means this event cannot be handled.
    #[error("{service}: {reason}")]
    Refused {
        service: &'static str,
        reason: String,
    },
}

impl ApiError {
    /// Connection failures, timeouts, 5xx, 429 and 408 may pass; so may a malformed answer,
    /// which is the service's fault (an error page from a proxy), not the event's. A 4xx or a
    /// refusal will be the same next time.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Malformed { .. } => true,
            Self::Status { status, .. } => transient_status(*status),
            Self::Refused { .. } => false,
        }
    }

    /// The status the service answered, if it answered with an error status.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// This error as the failure of one step for one object, for the handler's outcome.
    pub fn about(self, step: &'static str, bucket: &str, key: &str) -> ObjectApiError {
        ObjectApiError {
            step,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source: self,
        }
    }

    pub fn malformed(service: &'static str, reason: impl Into<String>) -> Self {
        Self::Malformed {
            service,
            reason: reason.into(),
        }
    }

    pub fn refused(service: &'static str, reason: impl Into<String>) -> Self {
        Self::Refused {
            service,
            reason: reason.into(),
        }
    }
}

/// An API failure while handling one object: names the step, the object and the service.
#[derive(Debug, thiserror::Error)]
#[error("{step} for {} failed", ObjectPath(bucket, key))]
pub struct ObjectApiError {
    pub step: &'static str,
    pub bucket: String,
    pub key: String,
    #[source]
    pub source: ApiError,
}

impl From<ObjectApiError> for HandlerError {
    fn from(error: ObjectApiError) -> Self {
        if error.source.is_retryable() {
            Self::retryable(error)
        } else {
            Self::permanent(error)
        }
    }
}

/// Whether an error status may pass on its own: 5xx (the server's trouble), 429 and 408 (it
/// asks the client to slow down or come back). Any other 4xx will be the same next time.
pub fn transient_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// The start of an error answer's body, for messages: enough to read the service's reason.
pub async fn excerpt(response: Response) -> String {
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(BODY_EXCERPT).collect();
    if body.trim().is_empty() {
        "(empty body)".to_owned()
    } else {
        body
    }
}

/// An HTTP client with a time limit on every request (connect, send and read together).
pub fn client(timeout: Duration) -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()?)
}

/// Sends a request; an error status becomes [`ApiError::Status`] with the start of the body.
pub async fn send(service: &'static str, request: RequestBuilder) -> Result<Response, ApiError> {
    let response = request.send().await.map_err(|e| unreachable(service, e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    Err(ApiError::Status {
        service,
        status,
        body: excerpt(response).await,
    })
}

/// Reads a success body as JSON of the contract's shape.
pub async fn json<T: DeserializeOwned>(
    service: &'static str,
    response: Response,
) -> Result<T, ApiError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| unreachable(service, e))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::malformed(service, e.to_string()))
}

fn unreachable(service: &'static str, error: reqwest::Error) -> ApiError {
    ApiError::Unreachable {
        service,
        source: Box::new(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_retryable_other_4xx_are_not() {
        let status = |code: u16| ApiError::Status {
            service: "svc",
            status: StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT),
            body: String::new(),
        };
        for code in [500, 502, 503, 429, 408] {
            assert!(status(code).is_retryable(), "{code}");
        }
        for code in [400, 403, 404, 409, 422] {
            assert!(!status(code).is_retryable(), "{code}");
        }
        assert!(!ApiError::refused("svc", "no").is_retryable());
        assert!(ApiError::malformed("svc", "html").is_retryable());
    }

    #[test]
    fn object_errors_name_step_object_and_service() {
        let error = ApiError::refused("PID service", "no PID").about("minting a PID", "b", "k\n");
        let handler = HandlerError::from(error);
        assert!(!handler.is_retryable());
        assert_eq!(
            handler.to_string(),
            "minting a PID for b/k\\n failed: PID service: no PID"
        );
    }
}
