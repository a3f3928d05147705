//! The operations routes: `/metrics` (Prometheus), `/events/stats` (JSON), `/events/history`
//! and `/files` (HTML), and `/files/object` (a derived image). The runtime mounts them where
//! `OPS_PAGES`, `OPS_PORT` and `OPS_TOKEN` say, behind the operations credential.

use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::files::{PageCursor, input_page};
use super::{Observer, OpsState, pages};
use crate::function::Handler;
use crate::sniff::{ImageKind, image_kind};
use crate::storage::StoreError;

/// Events to a page of `/events/history`.
const HISTORY_PAGE: u64 = 25;
/// Source objects to a page of `/files`.
const FILES_PAGE: usize = 25;
/// Derived objects served by `/files/object` are thumbnails, not archives.
const SERVED_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// How long a page waits for the ledger before saying it is unavailable.
const LEDGER_READ_TIMEOUT: Duration = Duration::from_secs(3);

/// The routes, on `state`.
pub(crate) fn router<H: Handler>(state: OpsState<H>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<H>))
        .route("/events/stats", get(stats::<H>))
        .route("/events/history", get(history::<H>))
        .route("/files", get(files::<H>))
        .route("/files/object", get(derived_object::<H>))
        .with_state(state)
}

async fn metrics<H: Handler>(State(state): State<OpsState<H>>) -> Response {
    let text = state
        .observer
        .metrics
        .render(state.observer.recorder.errors());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// A ledger read with a time limit; failures are counted like failed writes.
async fn read_ledger<T, F>(observer: &Observer, read: F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, super::ledger::LedgerError>>,
{
    match tokio::time::timeout(LEDGER_READ_TIMEOUT, read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            observer.recorder.count_error();
            Err(crate::outcome::chain(&e))
        }
        Err(_) => {
            observer.recorder.count_error();
            Err(format!(
                "the event ledger did not answer within {LEDGER_READ_TIMEOUT:?}"
            ))
        }
    }
}

async fn stats<H: Handler>(State(state): State<OpsState<H>>) -> Response {
    let ledger = state.observer.recorder.ledger();
    match read_ledger(&state.observer, ledger.stats()).await {
        Ok(stats) => axum::Json(json!({
            "function": state.name,
            "object_events": stats.object_events,
            "sweep_events": stats.sweep_events,
            "by_outcome": stats.by_outcome,
            "by_source": stats.by_source,
            "ledger_errors": state.observer.recorder.errors(),
        }))
        .into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": error })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    #[serde(default)]
    page: u64,
}

async fn history<H: Handler>(
    State(state): State<OpsState<H>>,
    Query(query): Query<HistoryQuery>,
) -> Response {
    let ledger = state.observer.recorder.ledger();
    let offset = query.page.saturating_mul(HISTORY_PAGE);
    let page = read_ledger(&state.observer, ledger.history(offset, HISTORY_PAGE)).await;
    let stats = read_ledger(&state.observer, ledger.stats()).await.ok();
    match page {
        Ok(page) => Html(pages::history(
            &state.site(),
            stats.as_ref(),
            &page,
            query.page,
            HISTORY_PAGE,
        ))
        .into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error).into_response(),
    }
}

async fn files<H: Handler>(
    State(state): State<OpsState<H>>,
    Query(cursor): Query<PageCursor>,
) -> Response {
    let Some(location) = state.handler.inputs() else {
        return Html(pages::files(&state.site(), None, &[], None)).into_response();
    };
    match input_page(&state, &location, &cursor, FILES_PAGE).await {
        Ok(page) => Html(pages::files(
            &state.site(),
            Some(&location),
            &page.rows,
            page.next.as_ref().map(PageCursor::query).as_deref(),
        ))
        .into_response(),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
struct ObjectQuery {
    input: String,
    label: String,
}

/// Serves one derived object (a thumbnail on the files page). Only objects the function
/// derives from an input key can be asked for, so the route reads nothing else; and only
/// images it wrote are served, as the type their bytes show, so an object stored under a
/// derived key with another type (`text/html`, say) is never handed to a browser.
async fn derived_object<H: Handler>(
    State(state): State<OpsState<H>>,
    Query(query): Query<ObjectQuery>,
) -> Response {
    let Some(derived) = state
        .handler
        .outputs_of(&query.input)
        .into_iter()
        .find(|d| d.label == query.label && d.image)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match state
        .store
        .get(&derived.bucket, &derived.key, SERVED_MAX_BYTES)
        .await
    {
        Ok(object) => {
            let stored = object.info.content_type.as_deref().unwrap_or("");
            match image_kind(&object.body)
                .filter(|kind| kind.is_written())
                .map(ImageKind::content_type)
            {
                Some(sniffed) if sniffed == stored => (
                    [
                        (header::CONTENT_TYPE, sniffed),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    object.body,
                )
                    .into_response(),
                _ => {
                    tracing::warn!(
                        bucket = %derived.bucket, key = %derived.key, content_type = stored,
                        "Not serving a derived object that is not an image this function writes."
                    );
                    (StatusCode::FORBIDDEN, "not an image this function writes\n").into_response()
                }
            }
        }
        Err(StoreError::NotFound { .. }) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            let reason = crate::outcome::incident("the object store cannot serve the object", &e);
            (StatusCode::BAD_GATEWAY, reason).into_response()
        }
    }
}
