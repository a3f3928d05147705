//! What HTTP sinks share: one POST, retried while the failure may clear and classified once.
//! A 2xx is accepted; the statuses [`transient_status`] names (plus any the sink's contract
//! adds), timeouts and connection failures are retried with exponential backoff (or the
//! server's `Retry-After`, capped) and then unavailable; any other status is rejected for good.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{Client, RequestBuilder, StatusCode};

use super::PublishError;
use crate::api::{excerpt, transient_status};
use crate::config::Env;
use crate::outcome::BoxError;

/// The longest pause between two attempts, whatever `Retry-After` asks for.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// How an HTTP sink retries, from `<PREFIX>_MAX_ATTEMPTS`, `<PREFIX>_TIMEOUT_SECS` and
/// `<PREFIX>_BACKOFF_MS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The variables' prefix (`LOG_INGEST`, `K_SINK`), so that messages name what to change.
    pub prefix: &'static str,
    /// Tries per request before the publish counts as failed.
    pub max_attempts: u32,
    /// Time limit of one request.
    pub timeout: Duration,
    /// The first wait before a retry; it doubles each time.
    pub backoff: Duration,
}

impl RetryPolicy {
    /// Reads the policy's three variables (defaults: 4 attempts, 30 s, 500 ms).
    pub fn read(env: &mut Env, prefix: &'static str) -> Self {
        let attempts_variable = format!("{prefix}_MAX_ATTEMPTS");
        let max_attempts = env.or(&attempts_variable, 4u32);
        if max_attempts == 0 {
            env.problem(&attempts_variable, "must be at least 1");
        }
        Self {
            prefix,
            max_attempts: max_attempts.max(1),
            timeout: Duration::from_secs(env.or(&format!("{prefix}_TIMEOUT_SECS"), 30u64).max(1)),
            backoff: Duration::from_millis(env.or(&format!("{prefix}_BACKOFF_MS"), 500u64)),
        }
    }
}

/// Records a problem unless `url`, the value of `variable`, is an http:// or https:// URL.
pub fn check_url(env: &mut Env, variable: &str, url: &str) {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        env.problem(variable, "must be an http:// or https:// URL");
    }
}

/// What one attempt ended with.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("HTTP {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("no answer within {secs} s ({prefix}_TIMEOUT_SECS)")]
    Timeout { secs: u64, prefix: &'static str },
    #[error(transparent)]
    Http(reqwest::Error),
}

/// Every attempt failed with something that may clear: the platform should redeliver later.
#[derive(Debug, thiserror::Error)]
#[error("{attempts} attempts failed ({prefix}_MAX_ATTEMPTS); the last")]
struct Exhausted {
    attempts: u32,
    prefix: &'static str,
    #[source]
    last: AttemptError,
}

/// Sends requests to one HTTP sink under one retry policy.
#[derive(Debug)]
pub struct Sender {
    client: Client,
    policy: RetryPolicy,
    sink: String,
    also_transient: &'static [StatusCode],
}

impl Sender {
    /// `sink` names the destination in errors and logs (never put a secret in it).
    pub fn new(sink: String, policy: RetryPolicy) -> Result<Self, BoxError> {
        let client = Client::builder()
            .timeout(policy.timeout)
            .user_agent("bucketfn")
            .build()?;
        Ok(Self {
            client,
            policy,
            sink,
            also_transient: &[],
        })
    }

    /// Statuses the sink's own contract says to retry, besides those of
    /// [`transient_status`].
    pub fn also_retrying(mut self, statuses: &'static [StatusCode]) -> Self {
        self.also_transient = statuses;
        self
    }

    /// The destination, as errors name it.
    pub fn sink(&self) -> &str {
        &self.sink
    }

    fn transient(&self, error: &AttemptError) -> bool {
        match error {
            AttemptError::Status { status, .. } => {
                transient_status(*status) || self.also_transient.contains(status)
            }
            AttemptError::Timeout { .. } => true,
            // Connection refused, reset, DNS: the server may come back. A request that cannot
            // even be built (a malformed URL) will not.
            AttemptError::Http(e) => !e.is_builder(),
        }
    }

    /// Sends the request `build` makes (once per attempt, so that it can carry the time of
    /// the attempt), retrying what may clear.
    pub async fn send(
        &self,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<(), PublishError> {
        let mut wait = self.policy.backoff;
        let mut attempt = 1;
        loop {
            let (error, retry_after) = match self.attempt(build(&self.client)).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if !self.transient(&error) {
                return Err(PublishError::Rejected {
                    sink: self.sink.clone(),
                    source: Box::new(error),
                });
            }
            if attempt >= self.policy.max_attempts {
                return Err(PublishError::Unavailable {
                    sink: self.sink.clone(),
                    source: Box::new(Exhausted {
                        attempts: attempt,
                        prefix: self.policy.prefix,
                        last: error,
                    }),
                });
            }
            let pause = retry_after.unwrap_or(wait).min(MAX_PAUSE);
            tracing::warn!(
                sink = %self.sink,
                attempt,
                error = %error,
                wait_ms = pause.as_millis() as u64,
                "Publishing failed; retrying."
            );
            tokio::time::sleep(pause).await;
            wait = wait.saturating_mul(2);
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        request: RequestBuilder,
    ) -> Result<(), (AttemptError, Option<Duration>)> {
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                let timeout = AttemptError::Timeout {
                    secs: self.policy.timeout.as_secs(),
                    prefix: self.policy.prefix,
                };
                return Err((timeout, None));
            }
            Err(e) => return Err((AttemptError::Http(e), None)),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = excerpt(response).await;
        Err((AttemptError::Status { status, body }, retry_after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), BoxError>;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            prefix: "K_SINK",
            max_attempts: 2,
            timeout: Duration::from_secs(3),
            backoff: Duration::from_millis(1),
        }
    }

    #[test]
    fn throttling_timeouts_and_server_errors_are_retried_other_statuses_are_not() -> TestResult {
        let sender = Sender::new("test".into(), policy())?;
        let knative = Sender::new("test".into(), policy())?
            .also_retrying(&[StatusCode::NOT_FOUND, StatusCode::CONFLICT]);
        let status = |code| -> Result<AttemptError, BoxError> {
            Ok(AttemptError::Status {
                status: StatusCode::from_u16(code)?,
                body: String::new(),
            })
        };
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(sender.transient(&status(code)?), "{code}");
            assert!(knative.transient(&status(code)?), "{code}");
        }
        for code in [400, 401, 403, 413, 422] {
            assert!(!sender.transient(&status(code)?), "{code}");
            assert!(!knative.transient(&status(code)?), "{code}");
        }
        for code in [404, 409] {
            assert!(!sender.transient(&status(code)?), "{code}");
            assert!(knative.transient(&status(code)?), "{code}");
        }
        let timeout = AttemptError::Timeout {
            secs: 3,
            prefix: "K_SINK",
        };
        assert!(sender.transient(&timeout));
        assert_eq!(
            timeout.to_string(),
            "no answer within 3 s (K_SINK_TIMEOUT_SECS)"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_sink_that_cannot_be_reached_is_unavailable_after_the_attempts() -> TestResult {
        // Port 9 (discard) on the loopback: nothing listens, the connection is refused.
        let sender = Sender::new("test sink".into(), policy())?;
        let err = sender
            .send(|client| client.post("http://127.0.0.1:9/"))
            .await
            .err()
            .ok_or("sent to nowhere")?;
        assert!(matches!(err, PublishError::Unavailable { .. }), "{err}");
        let exhausted = std::error::Error::source(&err).ok_or("no cause")?;
        assert_eq!(
            exhausted.to_string(),
            "2 attempts failed (K_SINK_MAX_ATTEMPTS); the last"
        );
        assert!(std::error::Error::source(exhausted).is_some());
        Ok(())
    }

    #[test]
    fn the_policy_names_its_own_variables() -> TestResult {
        let mut env = Env::from_pairs([
            ("K_SINK_MAX_ATTEMPTS", "0"),
            ("K_SINK_TIMEOUT_SECS", "5"),
            ("K_SINK_BACKOFF_MS", "20"),
            ("LOG_INGEST_MAX_ATTEMPTS", "9"),
        ]);
        let policy = RetryPolicy::read(&mut env, "K_SINK");
        assert_eq!(policy.timeout, Duration::from_secs(5));
        assert_eq!(policy.backoff, Duration::from_millis(20));
        let err = env.finish().err().ok_or("0 attempts accepted")?;
        let vars: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(vars, ["K_SINK_MAX_ATTEMPTS"]);
        Ok(())
    }
}
