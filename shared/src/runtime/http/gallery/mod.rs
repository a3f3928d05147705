//! The gallery of `serve` (seed 001's web app), for a function that offers it
//! ([`Handler::gallery`]): upload images into the function's inputs, see each beside its
//! outputs (updating by itself while they are made), run the sweep as the seed's job runner
//! did, clear the bucket, and try one image without storing it. Behind the operations
//! credential like the other pages; the actions need `OPS_TOKEN` itself (a port of its own
//! without a token is read-only) and, when the browser authenticated by Basic, a request from
//! the page's own origin, so that another site cannot make a logged-in browser act.

mod page;
mod upload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::AppState;
use crate::ObjectPath;
use crate::config::Env;
use crate::event::{Delivery, EventKind, ObjectEvent};
use crate::function::{Handler, Location};
use crate::operations::files::{InputPage, PageCursor, input_page};
use crate::sniff::{ImageKind, image_kind};
use crate::storage::StoreError;

/// `HIDE_BUTTON`, `GALLERY_CLEAR`, `GALLERY_MAX_UPLOAD_BYTES` and `GALLERY_MAX_FILES`.
#[derive(Debug, Clone)]
pub struct GallerySettings {
    /// Seed 001's `HIDE_BUTTON`: set (to anything) once events make the thumbnails, so the
    /// job runner's button is not offered.
    pub hide_button: bool,
    /// Whether "Clear bucket" is offered: it deletes everything under the inputs' prefix.
    pub clear: bool,
    /// The largest image one upload may carry.
    pub max_upload_bytes: u64,
    /// Images one upload may carry.
    pub max_files: usize,
}

impl GallerySettings {
    pub fn read(env: &mut Env) -> Self {
        let hide: Option<String> = env.optional("HIDE_BUTTON");
        Self {
            hide_button: hide.is_some_and(|v| !v.is_empty() && v != "false"),
            clear: env.or("GALLERY_CLEAR", false),
            max_upload_bytes: env.or("GALLERY_MAX_UPLOAD_BYTES", 20 * 1024 * 1024),
            max_files: env.or("GALLERY_MAX_FILES", 10),
        }
    }
}

/// Images a gallery page shows.
const PAGE: usize = 48;
/// Objects one "Clear bucket" deletes at most; a larger bucket takes more clicks.
const CLEAR_MAX: usize = 10_000;
/// The page's script: polling for thumbnails and dropping an image to try it.
const SCRIPT: &str = include_str!("gallery.js");

/// What a gallery page may do in a browser: its own script, images (and those it made in
/// memory), requests and forms to itself.
const CSP: &str = "default-src 'none'; img-src 'self' blob:; style-src 'unsafe-inline'; \
                   script-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; \
                   frame-ancestors 'none'";

/// Whether a sweep the gallery started is still running (one at a time per process).
#[derive(Clone, Default)]
pub(crate) struct Running(Arc<AtomicBool>);

/// The gallery's routes, to be put behind the operations credential.
pub(crate) fn routes<H: Handler>(state: AppState<H>) -> Router<AppState<H>> {
    let gallery = &state.settings.gallery;
    // The multipart framing around the files is small; this bounds the body before the
    // per-file limits are checked while reading.
    let upload_limit = usize::try_from(gallery.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_mul(gallery.max_files)
        .saturating_add(64 * 1024);
    let actions = Router::new()
        .route("/gallery/upload", post(upload::<H>))
        .route("/gallery/try", post(try_one::<H>))
        .route("/gallery/sweep", post(sweep::<H>))
        .route("/gallery/clear", post(clear::<H>))
        .layer(DefaultBodyLimit::max(upload_limit))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            action_guard::<H>,
        ));
    Router::new()
        .route("/gallery", get(show::<H>))
        .route("/gallery/state", get(progress::<H>))
        .route("/gallery/gallery.js", get(script))
        .route("/gallery/image", get(image::<H>))
        .merge(actions)
        .layer(axum::middleware::map_response(gallery_policy))
}

async fn gallery_policy(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

/// An action changes the bucket: it needs `OPS_TOKEN` configured, and a browser's Basic
/// credential counts only from the gallery's own origin (a cross-site form would carry it).
async fn action_guard<H: Handler>(
    State(state): State<AppState<H>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if state.settings.ops_token.is_none() {
        return refused(
            StatusCode::FORBIDDEN,
            "the gallery's actions need OPS_TOKEN: without it the pages are read-only",
        );
    }
    if !by_bearer(request.headers()) && !same_origin(request.headers()) {
        return refused(
            StatusCode::FORBIDDEN,
            "an action from another site's page is refused (send the operations token as a \
             Bearer token, or use the gallery page)",
        );
    }
    next.run(request).await
}

fn by_bearer(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
}

/// The browser says the request comes from a page of this origin: `Sec-Fetch-Site`, or
/// where a browser does not send it, an `Origin` naming the `Host` the request went to.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        return site == "same-origin";
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some(origin), Some(host)) => {
            origin.strip_prefix("http://") == Some(host)
                || origin.strip_prefix("https://") == Some(host)
        }
        _ => false,
    }
}

fn refused(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

/// Where uploads go and what the page lists: the function's inputs.
fn location<H: Handler>(state: &AppState<H>) -> Result<Location, NoInputs> {
    state.ops.handler.inputs().ok_or(NoInputs)
}

/// The function has no [`Handler::inputs`]: `SOURCE_BUCKET` is not set.
struct NoInputs;

impl IntoResponse for NoInputs {
    fn into_response(self) -> Response {
        refused(
            StatusCode::CONFLICT,
            "the gallery needs SOURCE_BUCKET (and, optionally, SOURCE_PREFIX): where images go",
        )
    }
}

#[derive(Deserialize, Default)]
struct ShowQuery {
    #[serde(flatten)]
    cursor: PageCursor,
    /// What the last action did, for the notice at the top.
    done: Option<String>,
}

async fn show<H: Handler>(
    State(state): State<AppState<H>>,
    Query(query): Query<ShowQuery>,
) -> Response {
    let (location, listed) = match listed(&state, &query.cursor).await {
        Ok(listed) => listed,
        Err(response) => return response,
    };
    let view = page::View {
        function: state.ops.name,
        location: &location,
        listed: &listed,
        settings: &state.settings.gallery,
        notice: query.done.as_deref(),
        sweeping: state.gallery_sweep.0.load(Ordering::Relaxed),
    };
    axum::response::Html(page::render(&view)).into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// The images of a page and which of their outputs exist, for the page's script.
async fn progress<H: Handler>(
    State(state): State<AppState<H>>,
    Query(query): Query<ShowQuery>,
) -> Response {
    match listed(&state, &query.cursor).await {
        Ok((_, listed)) => axum::Json(page::progress(&listed)).into_response(),
        Err(response) => response,
    }
}

/// The gallery's images from `cursor` on, with where they are.
async fn listed<H: Handler>(
    state: &AppState<H>,
    cursor: &PageCursor,
) -> Result<(Location, InputPage), Response> {
    let location = location(state).map_err(IntoResponse::into_response)?;
    let listed = input_page(&state.ops, &location, cursor, PAGE).await?;
    Ok((location, listed))
}

#[derive(Deserialize)]
struct ImageQuery {
    key: String,
}

/// Serves one input image, as the type its bytes show: only keys under the inputs (never the
/// function's own prefix), only images a browser shows, at most a page's worth of bytes.
async fn image<H: Handler>(
    State(state): State<AppState<H>>,
    Query(query): Query<ImageQuery>,
) -> Response {
    let location = match location(&state) {
        Ok(location) => location,
        Err(none) => return none.into_response(),
    };
    let own = location
        .exclude_prefix
        .as_deref()
        .is_some_and(|p| query.key.starts_with(p));
    if !query.key.starts_with(&location.prefix) || own {
        return StatusCode::NOT_FOUND.into_response();
    }
    match state
        .ops
        .store
        .get(
            &location.bucket,
            &query.key,
            state.settings.gallery.max_upload_bytes,
        )
        .await
    {
        Ok(object) => match image_kind(&object.body).filter(|k| shown_by_browsers(*k)) {
            Some(kind) => (
                [
                    (header::CONTENT_TYPE, kind.content_type()),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                object.body,
            )
                .into_response(),
            None => refused(StatusCode::FORBIDDEN, "not an image a browser shows"),
        },
        Err(StoreError::NotFound { .. }) => StatusCode::NOT_FOUND.into_response(),
        Err(StoreError::TooLarge { .. }) => refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than GALLERY_MAX_UPLOAD_BYTES: not shown",
        ),
        Err(e) => {
            let reason = crate::outcome::incident("the object store cannot serve the image", &e);
            (StatusCode::BAD_GATEWAY, reason).into_response()
        }
    }
}

fn shown_by_browsers(kind: ImageKind) -> bool {
    matches!(
        kind,
        ImageKind::Jpeg | ImageKind::Png | ImageKind::Gif | ImageKind::Webp | ImageKind::Bmp
    )
}

/// "Upload Image": stores each image of the form under the inputs' prefix with a safe key.
/// Against a store with notifications (and under `serve --storage DIR`, its local events) the
/// bucket's event makes the thumbnails.
async fn upload<H: Handler>(State(state): State<AppState<H>>, multipart: Multipart) -> Response {
    let location = match location(&state) {
        Ok(location) => location,
        Err(none) => return none.into_response(),
    };
    let deadline = Instant::now() + state.settings.request_timeout;
    let stored = upload::store_all(&state, &location, multipart, deadline).await;
    match stored {
        Ok(keys) => {
            tracing::info!(bucket = %location.bucket, count = keys.len(), "Images uploaded.");
            let done = format!("uploaded {}", keys.join(", "));
            Redirect::to(&format!(
                "/gallery?done={}",
                crate::operations::pages::query(&done)
            ))
            .into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// Seed 001's first stage: one image in, its thumbnail out, nothing stored.
async fn try_one<H: Handler>(State(state): State<AppState<H>>, multipart: Multipart) -> Response {
    let deadline = Instant::now() + state.settings.request_timeout;
    let (name, body) = match upload::read_one(&state, multipart, deadline).await {
        Ok(image) => image,
        Err(refusal) => return refusal.into_response(),
    };
    let invocation = state.governor.invocation(Some(deadline));
    match state.ops.handler.preview(&name, body, &invocation).await {
        Some(Ok(preview)) => (
            [
                (header::CONTENT_TYPE, preview.content_type),
                (header::CACHE_CONTROL, "no-store"),
            ],
            preview.bytes,
        )
            .into_response(),
        Some(Err(e)) => {
            let status = if e.is_retryable() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            (status, format!("{e}\n")).into_response()
        }
        None => refused(StatusCode::NOT_FOUND, "this function makes no images"),
    }
}

/// The seed's "Thumbnails Job Runner": a sweep of the inputs, handled like a scheduled one
/// (cursor, deadline, history), in the background; one at a time.
async fn sweep<H: Handler>(State(state): State<AppState<H>>) -> Response {
    let location = match location(&state) {
        Ok(location) => location,
        Err(none) => return none.into_response(),
    };
    let running = state.gallery_sweep.clone();
    if running.0.swap(true, Ordering::AcqRel) {
        return refused(
            StatusCode::CONFLICT,
            "a sweep started from the gallery is still running",
        );
    }
    let event = ObjectEvent::requested(EventKind::Sweep, &location.bucket, location.prefix);
    let invocation = state
        .governor
        .invocation(Some(Instant::now() + state.settings.request_timeout));
    tokio::spawn(async move {
        let delivery = Delivery::single(None, vec![event]);
        let report = crate::runtime::process(
            &state.ops.handler,
            delivery,
            invocation,
            &state.governor,
            &state.ops.observer,
        )
        .await;
        tracing::info!(
            status = report.overall().label(),
            "The gallery's sweep ended."
        );
        running.0.store(false, Ordering::Release);
    });
    Redirect::to("/gallery?done=the%20thumbnails%20job%20started").into_response()
}

#[derive(Deserialize)]
struct ClearForm {
    /// The bucket's name, typed by the user.
    confirm: String,
}

/// "Clear bucket": deletes every object under the inputs' prefix (the images, and the
/// thumbnails and cursor kept there), each image's outputs elsewhere, and the folders of
/// images that were moved. Only with
/// `GALLERY_CLEAR=true` and the bucket's name typed as confirmation.
async fn clear<H: Handler>(
    State(state): State<AppState<H>>,
    axum::Form(form): axum::Form<ClearForm>,
) -> Response {
    if !state.settings.gallery.clear {
        return refused(
            StatusCode::FORBIDDEN,
            "clearing the bucket is off (GALLERY_CLEAR)",
        );
    }
    let location = match location(&state) {
        Ok(location) => location,
        Err(none) => return none.into_response(),
    };
    if form.confirm != location.bucket {
        return refused(
            StatusCode::BAD_REQUEST,
            "type the bucket's name to confirm; nothing was deleted",
        );
    }
    match clear_all(&state, &location).await {
        Ok((deleted, more)) => {
            let path = ObjectPath(&location.bucket, &location.prefix);
            tracing::warn!(bucket = %location.bucket, prefix = %location.prefix, deleted, "Bucket cleared from the gallery.");
            let more = if more {
                "; more remain, clear again"
            } else {
                ""
            };
            let done = format!("deleted {deleted} object(s) under {path}{more}");
            Redirect::to(&format!(
                "/gallery?done={}",
                crate::operations::pages::query(&done)
            ))
            .into_response()
        }
        Err(e) => {
            let reason = crate::outcome::incident("the bucket could not be cleared", &e);
            (StatusCode::BAD_GATEWAY, reason).into_response()
        }
    }
}

/// Clears the inputs with their outputs and, for a function that moves its inputs, the
/// folders the moved ones live in (under the inputs' prefix), up to [`CLEAR_MAX`] objects in
/// all; says how many, and whether more remain.
async fn clear_all<H: Handler>(
    state: &AppState<H>,
    location: &Location,
) -> Result<(usize, bool), StoreError> {
    let (mut deleted, more) = clear_location(state, location, true, CLEAR_MAX).await?;
    if more {
        return Ok((deleted, true));
    }
    let Some(moved) = state.ops.handler.moved_inputs() else {
        return Ok((deleted, false));
    };
    let folders = Location {
        prefix: format!("{}{}", moved.prefix, location.prefix),
        ..moved
    };
    let (more_deleted, more) =
        clear_location(state, &folders, false, CLEAR_MAX.saturating_sub(deleted)).await?;
    deleted += more_deleted;
    Ok((deleted, more))
}

/// Deletes up to `most` objects of `location` (rounded up to a listing page), with each
/// input's outputs when `with_outputs`; says how many, and whether more remain.
async fn clear_location<H: Handler>(
    state: &AppState<H>,
    location: &Location,
    with_outputs: bool,
    most: usize,
) -> Result<(usize, bool), StoreError> {
    use futures_util::{StreamExt, TryStreamExt};
    let mut deleted = 0;
    let mut after: Option<String> = None;
    loop {
        let page = state
            .ops
            .store
            .list(&location.bucket, &location.prefix, after.as_deref(), 1000)
            .await?;
        let Some(last) = page.objects.last() else {
            return Ok((deleted, false));
        };
        after = Some(last.key.clone());
        let mut targets = Vec::new();
        for object in &page.objects {
            let input = with_outputs
                && location
                    .exclude_prefix
                    .as_deref()
                    .is_none_or(|p| !object.key.starts_with(p));
            if input {
                for derived in state.ops.handler.outputs_of(&object.key) {
                    targets.push((derived.bucket, derived.key));
                }
            }
            targets.push((location.bucket.clone(), object.key.clone()));
        }
        let store = &state.ops.store;
        futures_util::stream::iter(targets)
            .map(|(bucket, key)| async move { store.delete(&bucket, &key).await })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        deleted += page.objects.len();
        if !page.more {
            return Ok((deleted, false));
        }
        if deleted >= most {
            return Ok((deleted, true));
        }
    }
}
