//! An in-process log-ingest API following the Mezmo (LogDNA) contract: `POST /logs/ingest`
//! with `hostname` required, the ingestion key as basic-auth user, a JSON body of `lines` each
//! with a `line`, at most 10 MB. It can be told to answer 429 or 500, or to stall, and counts
//! how often each record (by its `dedupe_id`) arrived, since Mezmo itself drops no repeats.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::BoxError;

pub const INGESTION_KEY: &str = "test-ingestion-key";

#[derive(Default)]
struct Behaviour {
    /// Answers to give before accepting again (429, 500, ...), in order.
    failures: Vec<u16>,
    stall: Duration,
    lines: Vec<Value>,
    requests: u32,
}

pub struct LogIngestApi {
    pub url: String,
    state: Arc<Mutex<Behaviour>>,
    task: JoinHandle<()>,
}

type Shared = Arc<Mutex<Behaviour>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, Behaviour> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LogIngestApi {
    pub async fn start() -> Result<Self, BoxError> {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/logs/ingest", post(ingest))
            .with_state(Arc::clone(&state));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/logs/ingest", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, state, task })
    }

    /// The next requests get these statuses, one each.
    pub fn fail_with(&self, statuses: &[u16]) {
        lock(&self.state).failures = statuses.to_vec();
    }

    /// Every request waits this long before it is answered.
    pub fn stall(&self, duration: Duration) {
        lock(&self.state).stall = duration;
    }

    /// Every line accepted so far, in order.
    pub fn lines(&self) -> Vec<Value> {
        lock(&self.state).lines.clone()
    }

    /// How many times each record arrived, by object (`meta.key`) and `dedupe_id` (unique
    /// only within one object).
    pub fn dedupe_counts(&self) -> BTreeMap<(String, String), usize> {
        let mut counts = BTreeMap::new();
        for line in &lock(&self.state).lines {
            let meta = |name: &str| line["meta"][name].as_str().unwrap_or_default().to_owned();
            *counts.entry((meta("key"), meta("dedupe_id"))).or_default() += 1;
        }
        counts
    }

    pub fn requests(&self) -> u32 {
        lock(&self.state).requests
    }

    /// The environment a function needs to send here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FORWARD_SINK", "log-ingest".to_owned()),
            ("LOG_INGEST_URL", self.url.clone()),
            ("LOG_INGEST_KEY", INGESTION_KEY.to_owned()),
            ("LOG_INGEST_BACKOFF_MS", "10".to_owned()),
        ]
    }
}

impl Drop for LogIngestApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `Basic base64("<key>:")`, as the API expects the ingestion key.
fn authorised(headers: &HeaderMap) -> bool {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{INGESTION_KEY}:"))
    );
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

async fn ingest(
    State(state): State<Shared>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let (stall, failure) = {
        let mut behaviour = lock(&state);
        behaviour.requests += 1;
        let failure = (!behaviour.failures.is_empty()).then(|| behaviour.failures.remove(0));
        (behaviour.stall, failure)
    };
    tokio::time::sleep(stall).await;
    if let Some(status) = failure {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, "{\"error\":\"told to fail\"}".to_owned());
    }
    if !authorised(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            "{\"error\":\"bad key\"}".to_owned(),
        );
    }
    if query.get("hostname").is_none_or(String::is_empty) {
        return (
            StatusCode::BAD_REQUEST,
            "{\"error\":\"hostname is required\"}".to_owned(),
        );
    }
    if body.len() > 10_000_000 {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "{\"error\":\"too large\"}".to_owned(),
        );
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{{\"error\":\"{e}\"}}")),
    };
    let Some(lines) = parsed.get("lines").and_then(Value::as_array) else {
        return (
            StatusCode::BAD_REQUEST,
            "{\"error\":\"no lines\"}".to_owned(),
        );
    };
    if lines
        .iter()
        .any(|l| !l.get("line").is_some_and(Value::is_string))
    {
        return (
            StatusCode::BAD_REQUEST,
            "{\"error\":\"a line has no text\"}".to_owned(),
        );
    }
    lock(&state).lines.extend(lines.iter().cloned());
    (
        StatusCode::OK,
        "{\"status\":\"ok\",\"batchID\":\"test\"}".to_owned(),
    )
}
