//! An in-process Knative sink (what a broker ingress does with a binary-mode CloudEvent):
//! `POST` with `ce-specversion: 1.0` and non-empty `ce-id`, `ce-source`, `ce-type`, header
//! values percent-decoded once into UTF-8 (HTTP protocol binding 3.1.3.2), `202 Accepted`.
//! It can be told to answer other statuses first (429 with a `Retry-After`, 500, 400, ...).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use percent_encoding::percent_decode_str;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::BoxError;

/// The path events are posted to, as a broker's ingress serves `/<namespace>/<broker>`.
const PATH: &str = "/default/objects";

/// One event the sink accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    /// Every `ce-*` header, name without the prefix, value decoded.
    pub attributes: BTreeMap<String, String>,
    /// The same headers as they came over the wire.
    pub raw: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Bytes,
}

#[derive(Default)]
struct Behaviour {
    /// Answers to give before accepting again, in order, with a `Retry-After` (seconds) each.
    failures: Vec<(u16, Option<u64>)>,
    events: Vec<ReceivedEvent>,
    requests: u32,
}

type Shared = Arc<Mutex<Behaviour>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, Behaviour> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct KnativeSink {
    pub url: String,
    state: Shared,
    task: JoinHandle<()>,
}

impl KnativeSink {
    pub async fn start() -> Result<Self, BoxError> {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route(PATH, post(receive))
            .with_state(Arc::clone(&state));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}{PATH}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, state, task })
    }

    /// The next requests get these statuses (and `Retry-After` seconds), one each.
    pub fn fail_with(&self, answers: &[(u16, Option<u64>)]) {
        lock(&self.state).failures = answers.to_vec();
    }

    /// Every event accepted so far, in order.
    pub fn events(&self) -> Vec<ReceivedEvent> {
        lock(&self.state).events.clone()
    }

    pub fn requests(&self) -> u32 {
        lock(&self.state).requests
    }

    /// What a SinkBinding injects (plus a short backoff, so that retries are quick).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FORWARD_SINK", "k-sink".to_owned()),
            ("K_SINK", self.url.clone()),
            ("K_SINK_BACKOFF_MS", "10".to_owned()),
        ]
    }
}

impl Drop for KnativeSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn refuse(reason: String) -> Response {
    (StatusCode::BAD_REQUEST, reason).into_response()
}

/// The event in the request, or why it is not a binary-mode CloudEvent.
fn event(headers: &HeaderMap, body: Bytes) -> Result<ReceivedEvent, String> {
    let mut attributes = BTreeMap::new();
    let mut raw = BTreeMap::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|_| format!("{name} is not printable ASCII"))?;
        let decoded = percent_decode_str(value)
            .decode_utf8()
            .map_err(|e| format!("{name} does not decode to UTF-8: {e}"))?;
        raw.insert(attribute.to_owned(), value.to_owned());
        attributes.insert(attribute.to_owned(), decoded.into_owned());
    }
    if attributes.get("specversion").map(String::as_str) != Some("1.0") {
        return Err("ce-specversion must be 1.0".to_owned());
    }
    for required in ["id", "source", "type"] {
        if attributes.get(required).is_none_or(String::is_empty) {
            return Err(format!("ce-{required} is required"));
        }
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(ReceivedEvent {
        attributes,
        raw,
        content_type,
        body,
    })
}

async fn receive(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut behaviour = lock(&state);
    behaviour.requests += 1;
    if !behaviour.failures.is_empty() {
        let (status, retry_after) = behaviour.failures.remove(0);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, "told to fail").into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert("retry-after", seconds.into());
        }
        return response;
    }
    match event(&headers, body) {
        Ok(event) => {
            behaviour.events.push(event);
            StatusCode::ACCEPTED.into_response()
        }
        Err(reason) => refuse(reason),
    }
}
