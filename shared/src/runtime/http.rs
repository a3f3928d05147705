//! The HTTP service for Knative and IBM Code Engine: CloudEvents (binary and structured mode)
//! and raw JSON notifications on `POST /`, status codes by the Knative data-plane contract,
//! graceful shutdown on SIGTERM so in-flight events finish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;

use super::{Handler, Invocation, RuntimeSettings, process};
use crate::event::decode;
use crate::outcome::RecordStatus;

struct AppState<H> {
    handler: Arc<H>,
    concurrency: usize,
    request_timeout: Duration,
}

impl<H> Clone for AppState<H> {
    fn clone(&self) -> Self {
        Self {
            handler: Arc::clone(&self.handler),
            concurrency: self.concurrency,
            request_timeout: self.request_timeout,
        }
    }
}

/// The service's routes, usable without a socket.
pub fn app<H: Handler>(handler: Arc<H>, settings: &RuntimeSettings) -> Router {
    Router::new()
        .route("/", post(receive::<H>))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(AppState {
            handler,
            concurrency: settings.concurrency,
            request_timeout: settings.request_timeout,
        })
}

/// Listens on `settings.port` on all interfaces until SIGTERM or Ctrl-C, then lets in-flight
/// requests finish.
pub async fn serve<H: Handler>(handler: Arc<H>, settings: &RuntimeSettings) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", settings.port)).await?;
    tracing::info!(port = settings.port, "Listening.");
    axum::serve(listener, app(handler, settings))
        .with_graceful_shutdown(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("Shutting down; waiting for in-flight events.");
}

async fn receive<H: Handler>(
    State(state): State<AppState<H>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delivery = match decode(&body, &headers) {
        Ok(delivery) => delivery,
        Err(e) => {
            tracing::error!(error = %e, "Request is not a valid event.");
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": e.to_string() })),
            )
                .into_response();
        }
    };
    let invocation = Invocation {
        deadline: Some(Instant::now() + state.request_timeout),
        ..Invocation::default()
    };
    let report = process(&state.handler, delivery, invocation, state.concurrency).await;
    // Knative retries 5xx (and 429, 408, 404) and sends other 4xx to the dead-letter sink. A
    // success carries no body: Knative's broker answers 502 to a non-empty 2xx body that is not
    // a CloudEvent, which would turn every success into a redelivery.
    let status = match report.overall() {
        RecordStatus::Succeeded => return StatusCode::ACCEPTED.into_response(),
        RecordStatus::Retryable(_) => StatusCode::SERVICE_UNAVAILABLE,
        RecordStatus::Permanent(_) => StatusCode::BAD_REQUEST,
    };
    let records: Vec<_> = report
        .records
        .iter()
        .map(|r| json!({ "id": r.id, "status": r.status.label(), "detail": r.summary() }))
        .collect();
    (status, axum::Json(json!({ "records": records }))).into_response()
}
