//! The HTTP service for Knative and IBM Code Engine: CloudEvents (binary and structured mode)
//! and raw JSON notifications on `POST /`, status codes by the Knative data-plane contract,
//! limits on what a request may cost (header and body read times, body size, records), graceful
//! shutdown on SIGTERM bounded by the request timeout; every delivery checked against
//! `EVENT_AUTH` before its body is read; `/healthz`; and the operations surface (`/metrics`,
//! `/events/stats`, `/events/history`, `/files`) behind `OPS_TOKEN` or on its own port
//! (`OPS_PORT`), or off. Every answer carries `nosniff` and a CSP that allows nothing but the
//! pages' own images and styles.

mod gallery;

use std::net::{IpAddr, Ipv4Addr};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::Listener;
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;

use super::auth::{AuthError, EventAuthSettings, EventGate, OpsGate};
use super::dispatch::STOP_GRACE;
use super::{Governor, RuntimeSettings, positive, process};
use crate::config::{Env, Secret};
use crate::event::decode;
use crate::function::Handler;
use crate::operations::Observer;
use crate::operations::{self, OpsState};
use crate::outcome::RecordStatus;
use crate::storage::ObjectStore;
pub use gallery::GallerySettings;

/// Beyond the request timeout, how long shutdown waits for the answers of requests whose
/// events were stopped at their deadline to be written.
const ANSWER_MARGIN: Duration = Duration::from_secs(2);

/// How the HTTP service listens and what one request may cost.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `LISTEN_ADDRESS`: the address `serve` binds (all interfaces by default, as a container
    /// needs; `127.0.0.1` keeps it on the machine).
    pub listen_address: IpAddr,
    /// `PORT`: where `serve` listens (Knative and Code Engine set it).
    pub port: u16,
    /// `REQUEST_TIMEOUT_SECS`: how long a request may work before its events are reported
    /// retryable (below Knative's default 300 s request timeout); also how long shutdown
    /// waits for requests in flight.
    pub request_timeout: Duration,
    /// `HEADER_READ_TIMEOUT_SECS`: how long a client may take to send a request's headers, and
    /// how long a kept-alive connection may sit idle.
    pub header_read_timeout: Duration,
    /// `BODY_READ_TIMEOUT_SECS`: how long a client may take to send a request's body.
    pub body_read_timeout: Duration,
    /// `MAX_BODY_BYTES`: the largest request body read.
    pub max_body_bytes: usize,
    /// `EVENT_AUTH` and its variables: how deliveries are checked. `serve` refuses to start
    /// without it.
    pub event_auth: Option<EventAuthSettings>,
    /// `OPS_TOKEN`: the credential of the operations pages and `/metrics`.
    pub ops_token: Option<Secret>,
    /// `OPS_PORT`: serve the operations pages and `/metrics` on this port instead of `PORT`.
    pub ops_port: Option<u16>,
    /// `OPS_PAGES`: `false` turns the operations pages and `/metrics` off.
    pub ops_pages: bool,
    /// What the gallery offers, for a function that has one.
    pub gallery: GallerySettings,
}

/// A notification is a few KiB (an S3 record with the most user metadata S3 allows is under
/// 3 KiB), so this holds `MAX_RECORDS_PER_REQUEST`'s default of them with room to spare.
const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

impl HttpSettings {
    pub fn read(env: &mut Env) -> Self {
        let secs = |env: &mut Env, name: &str, default: u64| {
            Duration::from_secs(positive(env, name, default))
        };
        Self {
            listen_address: env.or("LISTEN_ADDRESS", IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            port: env.or("PORT", 8080),
            request_timeout: secs(env, "REQUEST_TIMEOUT_SECS", 280),
            header_read_timeout: secs(env, "HEADER_READ_TIMEOUT_SECS", 10),
            body_read_timeout: secs(env, "BODY_READ_TIMEOUT_SECS", 10),
            max_body_bytes: positive(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            event_auth: EventAuthSettings::read(env),
            ops_token: env.optional("OPS_TOKEN"),
            ops_port: env.optional("OPS_PORT"),
            ops_pages: env.or("OPS_PAGES", true),
            gallery: GallerySettings::read(env),
        }
    }
}

pub(crate) struct AppState<H> {
    /// What the operations routes and pages read too.
    pub(crate) ops: OpsState<H>,
    pub(crate) governor: Governor,
    pub(crate) settings: Arc<HttpSettings>,
    events: EventGate,
    pub(crate) gallery_sweep: gallery::Running,
}

impl<H> Clone for AppState<H> {
    fn clone(&self) -> Self {
        Self {
            ops: self.ops.clone(),
            governor: self.governor.clone(),
            settings: Arc::clone(&self.settings),
            events: self.events.clone(),
            gallery_sweep: self.gallery_sweep.clone(),
        }
    }
}

/// Everything the service needs, as the runtime started it.
pub struct Service<H> {
    pub name: &'static str,
    pub handler: Arc<H>,
    /// The store the pages read (the function got the same one).
    pub store: Arc<dyn ObjectStore>,
    pub observer: Observer,
    /// The process's memory budget and event bound, shared with every other delivery.
    pub governor: Governor,
}

/// The service's routes, usable without a socket: `events` for `PORT`, and `ops` for
/// `OPS_PORT` when the operations surface has a port of its own.
pub struct Routes {
    pub events: Router,
    pub ops: Option<Router>,
}

/// Why `serve` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "EVENT_AUTH is not set: serve checks every delivery, so say how (token, with \
         EVENT_TOKEN; oidc, with OIDC_ISSUER and OIDC_AUDIENCE; or none, for a listener that \
         nothing untrusted can reach)"
    )]
    NoEventAuth,
    #[error("OPS_PORT is PORT ({0}): the operations pages need a port of their own")]
    SamePort(u16),
    #[error("cannot set up the delivery check: {0}")]
    EventAuth(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Where the operations surface is, from `OPS_PAGES`, `OPS_PORT` and `OPS_TOKEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpsPlace {
    Off,
    /// Not asked to be off, but there is neither a credential nor a port of its own.
    Unprotected,
    OwnPort,
    BehindToken,
}

impl HttpSettings {
    fn ops_place(&self) -> OpsPlace {
        match (self.ops_pages, self.ops_port, &self.ops_token) {
            (false, _, _) => OpsPlace::Off,
            (true, Some(_), _) => OpsPlace::OwnPort,
            (true, None, Some(_)) => OpsPlace::BehindToken,
            (true, None, None) => OpsPlace::Unprotected,
        }
    }
}

pub fn app<H: Handler>(
    service: Service<H>,
    settings: &RuntimeSettings,
) -> Result<Routes, ServeError> {
    let auth = settings
        .http
        .event_auth
        .as_ref()
        .ok_or(ServeError::NoEventAuth)?;
    let events = EventGate::new(auth).map_err(ServeError::EventAuth)?;
    routes(service, settings, Some(events))
}

/// The route that answers `ok` while the process runs, for the probes; `describe` names it,
/// so that the Knative lint checks the manifests' probes against this one.
pub const HEALTH_ROUTE: &str = "/healthz";

/// The routes of a runtime that takes no events over HTTP (`consume`): `/healthz` and the
/// operations surface, placed by `OPS_PAGES`, `OPS_PORT` and `OPS_TOKEN` as for `serve`.
pub fn ops_app<H: Handler>(
    service: Service<H>,
    settings: &RuntimeSettings,
) -> Result<Routes, ServeError> {
    routes(service, settings, None)
}

/// `POST /` is there only with a gate for deliveries.
fn routes<H: Handler>(
    service: Service<H>,
    settings: &RuntimeSettings,
    deliveries: Option<EventGate>,
) -> Result<Routes, ServeError> {
    let http = &settings.http;
    if http.ops_port == Some(http.port) {
        return Err(ServeError::SamePort(http.port));
    }
    let takes_events = deliveries.is_some();
    // Without `POST /` no handler reads the gate; an open one stands in.
    let events = match deliveries {
        Some(gate) => gate,
        None => EventGate::new(&EventAuthSettings::default()).map_err(ServeError::EventAuth)?,
    };
    let state = AppState {
        ops: OpsState {
            name: service.name,
            handler: service.handler,
            store: service.store,
            observer: service.observer,
        },
        governor: service.governor,
        settings: Arc::new(http.clone()),
        events,
        gallery_sweep: gallery::Running::default(),
    };
    let mut ops = operations::routes::router(state.ops.clone());
    if state.ops.handler.gallery() {
        ops = ops.merge(gallery::routes(state.clone()).with_state(state.clone()));
    }
    let ops = ops.route_layer(axum::middleware::from_fn_with_state(
        OpsGate::new(http.ops_token.clone()),
        ops_guard,
    ));
    let mut main = Router::new().route(HEALTH_ROUTE, get(|| async { "ok\n" }));
    if takes_events {
        main = main.route("/", post(receive::<H>));
    }
    let mut main = main.with_state(state);
    let place = http.ops_place();
    if place == OpsPlace::BehindToken {
        main = main.merge(ops.clone());
    }
    let guarded = |router: Router| router.layer(axum::middleware::map_response(protect));
    Ok(Routes {
        events: guarded(main),
        ops: (place == OpsPlace::OwnPort).then(|| guarded(ops)),
    })
}

/// The operations surface answers only with the operations credential; a browser is asked for
/// it (any user name, the token as password).
async fn ops_guard(
    State(gate): State<OpsGate>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if gate.allows(request.headers()) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"bucketfn operations\", charset=\"UTF-8\"",
        )],
        "the operations pages need OPS_TOKEN\n",
    )
        .into_response()
}

/// What a browser may do with any answer: nothing but show the pages' own images and inline
/// styles, never guess a type, never frame it.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    // The gallery's pages set a policy of their own (its script, its forms).
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(header::HeaderValue::from_static(
            "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ));
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Listens on `LISTEN_ADDRESS:PORT` until SIGTERM or Ctrl-C, then lets in-flight requests
/// finish, for at most the request timeout (by then every event in flight has been stopped at
/// its deadline and answered).
pub async fn serve<H: Handler>(
    service: Service<H>,
    settings: &RuntimeSettings,
) -> Result<(), ServeError> {
    let routes = app(service, settings)?;
    let scheme = settings
        .http
        .event_auth
        .as_ref()
        .map_or_else(|| "none".into(), EventAuthSettings::scheme);
    listen(routes, &settings.http, &scheme, shutdown_signal()).await
}

/// Serves `routes` on `LISTEN_ADDRESS:PORT` (and `OPS_PORT`) until `shutdown`, then lets
/// in-flight requests finish, for at most the request timeout.
pub(crate) async fn listen(
    routes: Routes,
    http: &HttpSettings,
    scheme: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut listener = TcpListener::bind((http.listen_address, http.port)).await?;
    let address = listener.local_addr()?;
    match http.ops_place() {
        OpsPlace::Unprotected => tracing::info!(
            %address, event_auth = scheme,
            "Listening; operations pages off (set OPS_TOKEN, or OPS_PORT for a port of their own)."
        ),
        place => tracing::info!(%address, event_auth = scheme, ops = ?place, "Listening."),
    }
    let mut ops_listener = match (http.ops_port, &routes.ops) {
        (Some(port), Some(_)) => {
            let ops = TcpListener::bind((http.listen_address, port)).await?;
            tracing::info!(address = %ops.local_addr()?, "Operations pages listening.");
            Some(ops)
        }
        _ => None,
    };
    let mut connections = hyper::server::conn::http1::Builder::new();
    connections
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut signal = pin!(shutdown);
    loop {
        tokio::select! {
            (stream, peer, to_ops) = next_connection(&mut listener, ops_listener.as_mut()) => {
                let router = match (&routes.ops, to_ops) {
                    (Some(ops), true) => ops.clone(),
                    _ => routes.events.clone(),
                };
                let connection = connections.serve_connection(
                    TokioIo::new(stream),
                    TowerToHyperService::new(router),
                );
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, error = %e, "Connection closed with an error.");
                    }
                });
            }
            () = &mut signal => break,
        }
    }
    drop((listener, ops_listener));
    let waited = http.request_timeout + STOP_GRACE + ANSWER_MARGIN;
    if tokio::time::timeout(waited, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            waited_ms = waited.as_millis() as u64,
            "Requests still open after the request timeout; stopping them."
        );
    }
    Ok(())
}

/// The next connection on `PORT` or, when it has one, the operations port (`true`). Accept
/// errors (out of file descriptors, ...) are retried inside, after a pause.
async fn next_connection(
    events: &mut TcpListener,
    ops: Option<&mut TcpListener>,
) -> (tokio::net::TcpStream, std::net::SocketAddr, bool) {
    match ops {
        None => {
            let (stream, peer) = Listener::accept(events).await;
            (stream, peer, false)
        }
        Some(ops) => tokio::select! {
            (stream, peer) = Listener::accept(events) => (stream, peer, false),
            (stream, peer) = Listener::accept(ops) => (stream, peer, true),
        },
    }
}

/// SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
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

/// A request refused before any handler ran: status and the reason, as `{"error": ...}`.
fn refuse(status: StatusCode, message: String) -> Response {
    tracing::error!(status = status.as_u16(), error = %message, "Request refused.");
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Why a request was refused before any handler ran.
type Refusal = (StatusCode, String);

/// Reads the body, refusing one over `MAX_BODY_BYTES` (without reading it when its length is
/// declared) or one that takes longer than `BODY_READ_TIMEOUT_SECS` to arrive.
async fn read_body(headers: &HeaderMap, body: Body, http: &HttpSettings) -> Result<Bytes, Refusal> {
    let limit = http.max_body_bytes;
    let over = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over the limit of {limit} bytes (MAX_BODY_BYTES)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(over());
    }
    let read = async {
        let mut bytes = Vec::with_capacity(declared.map_or(0, |d| d as usize));
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            })?;
            if bytes.len() + chunk.len() > limit {
                return Err(over());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(bytes))
    };
    let timeout = http.body_read_timeout;
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err((
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s (BODY_READ_TIMEOUT_SECS)",
                    timeout.as_secs()
                ),
            ))
        })
}

async fn receive<H: Handler>(
    State(state): State<AppState<H>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let arrived = Instant::now();
    // Before the body is read: an unauthenticated sender costs a header parse, nothing more.
    if let Err(e) = state.events.check(&headers).await {
        return match e {
            AuthError::Refused(why) => {
                tracing::warn!(reason = %why, "Delivery refused: not authenticated.");
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    axum::Json(
                        json!({ "error": "the delivery is not authenticated (EVENT_AUTH)" }),
                    ),
                )
                    .into_response()
            }
            AuthError::Unavailable(why) => {
                tracing::warn!(reason = %why, "Delivery not checked: the OIDC keys are out of reach.");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(
                        json!({ "error": "the delivery's credential cannot be checked now" }),
                    ),
                )
                    .into_response()
            }
        };
    }
    let body = match read_body(&headers, body, &state.settings).await {
        Ok(body) => body,
        Err((status, message)) => return refuse(status, message),
    };
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
    if let Err(e) = state.governor.admit(&delivery) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
    }
    let invocation = state
        .governor
        .invocation(Some(arrived + state.settings.request_timeout));
    let report = process(
        &state.ops.handler,
        delivery,
        invocation,
        &state.governor,
        &state.ops.observer,
    )
    .await;
    // Knative retries 5xx (and 429, 408, 404) and sends other 4xx to the dead-letter sink. A
    // success carries no body: Knative's broker answers 502 to a non-empty 2xx body that is not
    // a CloudEvent, which would turn every success into a redelivery.
    let status = match report.overall() {
        RecordStatus::Succeeded => return StatusCode::ACCEPTED.into_response(),
        RecordStatus::Retryable(_) => StatusCode::SERVICE_UNAVAILABLE,
        RecordStatus::Permanent(_) => StatusCode::BAD_REQUEST,
    };
    // The sender hears what kind of failure each record had; the full chains, which may quote
    // upstream answers and paths on other services, go to the log under one incident id.
    let incident = crate::outcome::incident_id();
    let records: Vec<_> = report
        .records
        .iter()
        .map(|r| {
            if !r.status.is_success() {
                tracing::warn!(
                    incident, record_id = r.id.as_deref().unwrap_or(""),
                    status = r.status.label(), error = %r.summary(),
                    "Delivery failed; the sender got the reason and the incident id."
                );
            }
            let events = r.events.iter().map(|e| (&e.event, &e.outcome));
            let detail = super::answer::public_summary(&r.status, events);
            json!({ "id": r.id, "status": r.status.label(), "detail": detail })
        })
        .collect();
    let body = json!({ "records": records, "incident": incident });
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ObjectEvent;
    use crate::function::{Derived, Invocation, Location};
    use crate::operations::RecordingStore;
    use crate::operations::ledger::{LedgerSettings, Recorder};
    use crate::operations::metrics::Metrics;
    use crate::outcome::{Done, HandlerError, Outcome};
    use crate::storage::MemoryStore;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Copies `b/<key>` to `b/copies/<key>`; keys starting with `bad` fail permanently.
    struct Copier(Arc<dyn ObjectStore>);

    impl Handler for Copier {
        async fn handle(&self, event: &ObjectEvent, _invocation: &Invocation) -> Outcome {
            if event.key.starts_with("bad") {
                return Err(HandlerError::permanent(format!("{} is bad", event.key)));
            }
            let object = self.0.get(&event.bucket, &event.key, 1024).await?;
            let copy = crate::storage::NewObject {
                body: object.body,
                content_type: "text/plain".into(),
                metadata: Default::default(),
            };
            self.0
                .put(&event.bucket, &format!("copies/{}", event.key), copy)
                .await?;
            Ok(Done::Completed("copied".into()))
        }

        fn inputs(&self) -> Option<Location> {
            Some(Location {
                bucket: "b".into(),
                prefix: String::new(),
                exclude_prefix: Some("copies/".into()),
            })
        }

        fn outputs_of(&self, key: &str) -> Vec<Derived> {
            vec![Derived {
                label: "copy".into(),
                bucket: "b".into(),
                key: format!("copies/{key}"),
                image: true,
            }]
        }
    }

    const OPS_TOKEN: &str = "ops-token-0123456789";

    fn router() -> Result<(Router, Arc<MemoryStore>), Box<dyn std::error::Error>> {
        router_with(&[])
    }

    /// The service with the runtime settings `env` gives.
    fn router_with(
        env: &[(&str, &str)],
    ) -> Result<(Router, Arc<MemoryStore>), Box<dyn std::error::Error>> {
        routes_with(env, app)
    }

    /// The routes `build` (`app` or `ops_app`) makes of the service with `env`'s settings.
    fn routes_with(
        env: &[(&str, &str)],
        build: fn(Service<Copier>, &RuntimeSettings) -> Result<Routes, ServeError>,
    ) -> Result<(Router, Arc<MemoryStore>), Box<dyn std::error::Error>> {
        let store = Arc::new(MemoryStore::new());
        let raw: Arc<dyn ObjectStore> = Arc::clone(&store) as Arc<dyn ObjectStore>;
        let recording: Arc<dyn ObjectStore> = Arc::new(RecordingStore(Arc::clone(&raw)));
        let defaults = [("EVENT_AUTH", "none"), ("OPS_TOKEN", OPS_TOKEN)];
        let mut env = Env::from_pairs(defaults.into_iter().chain(env.iter().copied()));
        let settings = RuntimeSettings::read(&mut env);
        env.finish()?;
        let ledger = LedgerSettings::in_memory(100).open("copier")?;
        let service = Service {
            name: "copier",
            handler: Arc::new(Copier(recording)),
            store: raw,
            observer: Observer {
                metrics: Arc::new(Metrics::default()),
                recorder: Recorder::start(ledger),
                instance: "test/1".into(),
            },
            governor: Governor::new(&settings),
        };
        Ok((build(service, &settings)?.events, store))
    }

    #[tokio::test]
    async fn the_routes_of_consume_take_no_events_and_need_no_event_auth() -> TestResult {
        let (router, store) = routes_with(&[("EVENT_AUTH", "")], ops_app)?;
        let (status, body) = call(&router, "GET", "/healthz", String::new()).await?;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
        store.insert("b", "a.txt", &b"a"[..], "text/plain");
        let (status, _) = call(&router, "POST", "/", notification("a.txt")).await?;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            store.keys(),
            [("b".to_owned(), "a.txt".to_owned())],
            "a POST was handled"
        );
        let (status, _) = call(&router, "GET", "/events/stats", String::new()).await?;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = call_as(&router, "GET", "/metrics", None, String::new()).await?;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "the pages keep their credential"
        );
        Ok(())
    }

    fn notification(key: &str) -> String {
        json!({"Records": [{"eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": {"key": key, "size": 5}}}]})
        .to_string()
    }

    /// A request with the operations credential.
    async fn call(
        router: &Router,
        method: &str,
        uri: &str,
        body: String,
    ) -> Result<(StatusCode, String), Box<dyn std::error::Error>> {
        let bearer = format!("Bearer {OPS_TOKEN}");
        let (status, _, body) = call_as(router, method, uri, Some(&bearer), body).await?;
        Ok((status, body))
    }

    async fn call_as(
        router: &Router,
        method: &str,
        uri: &str,
        authorization: Option<&str>,
        body: String,
    ) -> Result<(StatusCode, HeaderMap, String), Box<dyn std::error::Error>> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::from(body))?)
            .await?;
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
        Ok((
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        ))
    }

    /// Stats as the service reports them, once `expected` events are in.
    async fn stats_after(
        router: &Router,
        expected: u64,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        for _ in 0..100 {
            let (_, body) = call(router, "GET", "/events/stats", String::new()).await?;
            let stats: serde_json::Value = serde_json::from_str(&body)?;
            let seen = stats["object_events"]["succeeded"].as_u64().unwrap_or(0)
                + stats["object_events"]["failed"].as_u64().unwrap_or(0);
            if seen >= expected {
                return Ok(stats);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err("the ledger never caught up".into())
    }

    #[tokio::test]
    async fn stats_metrics_and_history_describe_what_happened() -> TestResult {
        let (router, store) = router()?;
        store.insert(
            "b",
            "<script>alert(1)</script>.txt",
            &b"hello"[..],
            "text/plain",
        );
        for key in ["%3Cscript%3Ealert%281%29%3C%2Fscript%3E.txt", "bad.txt"] {
            call(&router, "POST", "/", notification(key)).await?;
        }
        let stats = stats_after(&router, 2).await?;
        assert_eq!(stats["object_events"], json!({"succeeded": 1, "failed": 1}));
        assert_eq!(stats["by_outcome"], json!({"completed": 1, "permanent": 1}));
        assert_eq!(stats["by_source"], json!({"minio": 2}));

        let (status, metrics) = call(&router, "GET", "/metrics", String::new()).await?;
        assert_eq!(status, StatusCode::OK);
        assert!(
            metrics.contains(
                "bucketfn_events_total{class=\"object\",outcome=\"completed\",source=\"minio\"} 1"
            ),
            "{metrics}"
        );
        assert!(
            metrics.contains("bucketfn_event_duration_seconds_count 2"),
            "{metrics}"
        );

        let (_, history) = call(&router, "GET", "/events/history", String::new()).await?;
        assert!(
            !history.contains("<script>alert"),
            "unescaped key in the page"
        );
        assert!(
            history.contains("b/&lt;script&gt;alert(1)&lt;/script&gt;.txt"),
            "{history}"
        );
        assert!(
            history.contains("written"),
            "the copy is not listed: {history}"
        );
        assert!(history.contains("b/copies/&lt;script&gt;"), "{history}");
        assert!(history.contains("bad.txt is bad"), "{history}");
        Ok(())
    }

    #[tokio::test]
    async fn files_shows_each_input_beside_its_outputs() -> TestResult {
        let (router, store) = router()?;
        store.insert("b", "a.txt", &b"a"[..], "text/plain");
        store.insert("b", "b \"q\".txt", &b"b"[..], "text/plain");
        store.insert("b", "copies/a.txt", PNG, "image/png");
        let (status, page) = call(&router, "GET", "/files", String::new()).await?;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("<th>copy</th>"), "{page}");
        assert!(page.contains("b &quot;q&quot;.txt"), "{page}");
        let present = page.find("a.txt").and_then(|at| page[at..].find("present"));
        assert!(present.is_some(), "{page}");
        assert!(page.contains("missing"), "{page}");
        assert!(
            !page.contains(">copies/a.txt<"),
            "an output listed as an input: {page}"
        );

        let bearer = format!("Bearer {OPS_TOKEN}");
        let uri = "/files/object?input=a.txt&label=copy";
        let (status, headers, body) =
            call_as(&router, "GET", uri, Some(&bearer), String::new()).await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), String::from_utf8_lossy(PNG).len());
        assert_eq!(
            headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"image/png"[..])
        );
        let (status, _) = call(
            &router,
            "GET",
            "/files/object?input=a.txt&label=other",
            String::new(),
        )
        .await?;
        assert_eq!(status, StatusCode::NOT_FOUND);
        Ok(())
    }

    /// The first bytes of a PNG file: enough for the type check.
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[tokio::test]
    async fn a_derived_object_that_is_not_an_image_is_never_served() -> TestResult {
        let (router, store) = router()?;
        store.insert(
            "b",
            "copies/page",
            &b"<script>alert(1)</script>"[..],
            "text/html",
        );
        store.insert("b", "copies/liar", &b"<html>"[..], "image/png");
        store.insert("b", "copies/mislabelled", PNG, "text/html");
        for input in ["page", "liar", "mislabelled"] {
            let uri = format!("/files/object?input={input}&label=copy");
            let (status, body) = call(&router, "GET", &uri, String::new()).await?;
            assert_eq!(status, StatusCode::FORBIDDEN, "{input}: {body}");
            assert!(!body.contains("<"), "{input}: {body}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn deliveries_without_the_event_token_are_401_and_do_nothing() -> TestResult {
        let token = "event-token-0123456789";
        let (router, store) = router_with(&[("EVENT_AUTH", "token"), ("EVENT_TOKEN", token)])?;
        store.insert("b", "a.txt", &b"a"[..], "text/plain");
        for authorization in [None, Some("Bearer wrong-token-0123456789"), Some(token)] {
            let (status, headers, body) =
                call_as(&router, "POST", "/", authorization, notification("a.txt")).await?;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{authorization:?}: {body}"
            );
            assert_eq!(
                headers.get(header::WWW_AUTHENTICATE).map(|v| v.as_bytes()),
                Some(&b"Bearer"[..])
            );
            assert!(!body.contains(token), "{body}");
        }
        assert!(store.object("b", "copies/a.txt").is_none(), "a handler ran");
        let bearer = format!("Bearer {token}");
        let (status, _, body) =
            call_as(&router, "POST", "/", Some(&bearer), notification("a.txt")).await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert!(store.object("b", "copies/a.txt").is_some());
        Ok(())
    }

    #[tokio::test]
    async fn the_operations_pages_need_their_credential_or_are_off() -> TestResult {
        let (router, _) = router()?;
        for uri in [
            "/metrics",
            "/events/stats",
            "/events/history",
            "/files",
            "/files/object?input=a&label=copy",
        ] {
            let (status, headers, _) = call_as(&router, "GET", uri, None, String::new()).await?;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
            assert!(headers.contains_key(header::WWW_AUTHENTICATE), "{uri}");
            let wrong = Some("Bearer not-the-ops-token");
            let (status, _, _) = call_as(&router, "GET", uri, wrong, String::new()).await?;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        }
        let (status, _) = call(&router, "GET", "/metrics", String::new()).await?;
        assert_eq!(status, StatusCode::OK);

        // Without a credential or a port of their own, and when turned off, they do not exist.
        for env in [&[("OPS_TOKEN", "")][..], &[("OPS_PAGES", "false")][..]] {
            let mut settings = vec![("EVENT_AUTH", "none")];
            settings.extend_from_slice(env);
            let (router, _) = router_with(&settings)?;
            let (status, _) = call(&router, "GET", "/metrics", String::new()).await?;
            assert_eq!(status, StatusCode::NOT_FOUND, "{env:?}");
            let (status, _) = call(&router, "GET", "/healthz", String::new()).await?;
            assert_eq!(status, StatusCode::OK, "{env:?}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn every_answer_forbids_sniffing_scripts_and_framing() -> TestResult {
        let (router, _) = router()?;
        for (method, uri) in [
            ("GET", "/healthz"),
            ("GET", "/files"),
            ("GET", "/events/history"),
            ("POST", "/"),
        ] {
            let (_, headers, _) = call_as(&router, method, uri, None, String::new()).await?;
            assert_eq!(
                headers
                    .get(header::X_CONTENT_TYPE_OPTIONS)
                    .map(|v| v.as_bytes()),
                Some(&b"nosniff"[..]),
                "{uri}"
            );
            let csp = headers
                .get(header::CONTENT_SECURITY_POLICY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(
                csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
                "{uri}: {csp}"
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn serve_refuses_to_start_without_an_event_auth_setting() -> TestResult {
        let result = router_with(&[("EVENT_AUTH", "")]);
        let error = result.err().ok_or("started")?.to_string();
        assert!(error.contains("EVENT_AUTH is not set"), "{error}");
        Ok(())
    }

    fn error_of(body: &str) -> String {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413_naming_it_declared_or_not() -> TestResult {
        let (router, _) = router_with(&[("MAX_BODY_BYTES", "64")])?;
        let expected = "the request body is over the limit of 64 bytes (MAX_BODY_BYTES)";
        let (status, body) = call(&router, "POST", "/", notification("a.txt")).await?;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(error_of(&body), expected);

        let declared = Request::builder()
            .method("POST")
            .uri("/")
            .header(header::CONTENT_LENGTH, "1000000")
            .body(Body::from_stream(futures_util::stream::pending::<
                Result<Bytes, std::io::Error>,
            >()))?;
        let response = router.clone().oneshot(declared).await?;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
        assert_eq!(error_of(std::str::from_utf8(&bytes)?), expected);
        Ok(())
    }

    #[tokio::test]
    async fn a_body_that_never_ends_is_408_naming_the_limit() -> TestResult {
        let (router, _) = router_with(&[("BODY_READ_TIMEOUT_SECS", "1")])?;
        let stalled = Request::builder()
            .method("POST")
            .uri("/")
            .body(Body::from_stream(futures_util::stream::pending::<
                Result<Bytes, std::io::Error>,
            >()))?;
        let response = router.clone().oneshot(stalled).await?;
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
        assert_eq!(
            error_of(std::str::from_utf8(&bytes)?),
            "the request body did not arrive within 1 s (BODY_READ_TIMEOUT_SECS)"
        );
        Ok(())
    }

    #[tokio::test]
    async fn too_many_records_are_413_before_any_handler_runs() -> TestResult {
        let (router, store) = router_with(&[("MAX_RECORDS_PER_REQUEST", "2")])?;
        let record = |key: &str| {
            json!({"eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": {"key": key, "size": 1}}})
        };
        for key in ["1.txt", "2.txt", "3.txt"] {
            store.insert("b", key, &b"x"[..], "text/plain");
        }
        let three = json!({"Records": [record("1.txt"), record("2.txt"), record("3.txt")]});
        let (status, body) = call(&router, "POST", "/", three.to_string()).await?;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(
            error_of(&body),
            "the payload carries 3 records, over the limit of 2 (MAX_RECORDS_PER_REQUEST)"
        );
        assert!(store.object("b", "copies/1.txt").is_none(), "a handler ran");

        let two = json!({"Records": [record("1.txt"), record("2.txt")]});
        let (status, body) = call(&router, "POST", "/", two.to_string()).await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        Ok(())
    }
}
