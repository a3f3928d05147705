//! The HTTP APIs of the archive flow as local servers that follow their documented contracts
//! (see `bucketfn::api::mediahaven` and `sidecar_on_create::services`): MediaHaven REST v2 with
//! OAuth2 ROPC tokens, the PID service and the organisations GraphQL API; each route can be
//! told to answer an error status or to stall, as a busy service does. Records follow the
//! original handler's data model: an essence ingested from the store, its fragments carrying
//! the media id (`dc_identifier_localid`), and collaterals carrying that media id as well
//! ([`ArchiveApis::ingest_sidecar`] adds what an ingested sidecar becomes).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub const CLIENT_ID: &str = "bucketfn-client";
pub const CLIENT_SECRET: &str = "client-secret-value";
pub const USERNAME: &str = "archivist";
pub const PASSWORD: &str = "archivist-password";

/// The routes failures can be queued for (by scripts as `"token"`, `"pid"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    Token,
    Search,
    Update,
    Delete,
    Pid,
    Organisations,
}

/// What a route does instead of answering normally, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Status(u16),
    Stall(Duration),
}

/// How the search compares a query's values with a record's fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Matching {
    /// Byte for byte.
    #[default]
    Exact,
    /// As a full-text index may: case folded, surrounding spaces ignored, and a value found
    /// anywhere inside the field counts (`media` finds `media-old`, `M1` finds `M10`).
    Loose,
}

impl Matching {
    fn accepts(self, field: &str, value: &str) -> bool {
        match self {
            Self::Exact => field == value,
            Self::Loose => field
                .trim()
                .to_lowercase()
                .contains(&value.trim().to_lowercase()),
        }
    }
}

/// One MediaHaven record: its ids and its metadata fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct StubRecord {
    pub fragment_id: String,
    pub is_fragment: bool,
    pub fields: BTreeMap<String, String>,
}

impl StubRecord {
    pub fn new(fragment_id: &str, is_fragment: bool, fields: &[(&str, &str)]) -> Self {
        Self {
            fragment_id: fragment_id.to_owned(),
            is_fragment,
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }
}

/// Calls as the stub saw them, for assertions (and `GET /_stub/seen` for scripts).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Seen {
    pub tokens_issued: u32,
    pub pids: Vec<String>,
    pub organisation_lookups: u32,
    pub queries: Vec<String>,
    /// `(fragment id, reason, metadata XML)`.
    pub updates: Vec<(String, String, String)>,
    /// `(fragment id, reason)`, in order.
    pub deletes: Vec<(String, String)>,
}

#[derive(Default)]
struct Inner {
    records: Vec<StubRecord>,
    matching: Matching,
    organisations: BTreeMap<String, Option<String>>,
    valid_tokens: BTreeSet<String>,
    token_lifetime: u64,
    next_pid: u32,
    failures: BTreeMap<Route, VecDeque<Failure>>,
    seen: Seen,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a queued failure for `route`, if any: an error response, or a stall.
    async fn failure(&self, route: Route) -> Option<Response> {
        let failure = self.lock().failures.get_mut(&route)?.pop_front()?;
        match failure {
            Failure::Status(code) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                Some((status, format!("injected {code}")).into_response())
            }
            Failure::Stall(d) => {
                tokio::time::sleep(d).await;
                None
            }
        }
    }

    /// See [`ArchiveApis::ingest_sidecar`].
    fn ingest_sidecar(&self, fragment_id: &str, xml: &str) -> Result<(), String> {
        let start = xml
            .find("<MDProperties>")
            .ok_or("the sidecar has no MDProperties")?;
        let end = xml
            .find("</MDProperties>")
            .ok_or("the sidecar's MDProperties is not closed")?;
        let mut fields = BTreeMap::new();
        let mut depth = 0usize;
        for line in xml[start + "<MDProperties>".len()..end].lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('<')
                && let Some((name, after)) = rest.split_once('>')
                && let Some(value) = after.strip_suffix(&format!("</{name}>"))
            {
                if depth == 0 {
                    fields.insert(name.to_owned(), unescape_xml(value));
                }
            } else if line.starts_with("</") {
                depth = depth.saturating_sub(1);
            } else if line.starts_with('<') && !line.ends_with("/>") {
                depth += 1;
            } else {
                return Err(format!("unexpected sidecar line {line:?}"));
            }
        }
        self.lock().records.insert(
            0,
            StubRecord {
                fragment_id: fragment_id.to_owned(),
                is_fragment: false,
                fields,
            },
        );
        Ok(())
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        token.is_some_and(|t| self.lock().valid_tokens.contains(t))
    }
}

/// The running stub; stops when dropped.
pub struct ArchiveApis {
    /// Base URL: MediaHaven's `MEDIAHAVEN_URL`; the PID service is `{url}/pid`, the
    /// organisations API `{url}/organisations`.
    pub url: String,
    shared: Shared,
    task: JoinHandle<()>,
}

impl ArchiveApis {
    pub async fn start() -> Result<Self, BoxError> {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(address: &str) -> Result<Self, BoxError> {
        let shared = Shared::default();
        shared.lock().token_lifetime = 3600;
        let app = Router::new()
            .route("/auth/ropc.php", post(token))
            .route("/mediahaven-rest-api/v2/records", get(search))
            .route(
                "/mediahaven-rest-api/v2/records/{id}",
                post(update).delete(delete),
            )
            .route("/pid", get(pid))
            .route("/organisations", post(organisations))
            .route("/_stub/seen", get(seen))
            .route("/_stub/records", post(seed))
            .route("/_stub/ingest/{id}", post(ingest))
            .route("/_stub/fail", post(fail))
            .with_state(shared.clone());
        let listener = TcpListener::bind(address).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, shared, task })
    }

    pub fn pid_url(&self) -> String {
        format!("{}/pid", self.url)
    }

    pub fn organisations_url(&self) -> String {
        format!("{}/organisations", self.url)
    }

    /// Registers an organisation and its MAM label (`None`: it has none).
    pub fn organisation(&self, or_id: &str, mam_label: Option<&str>) {
        self.shared
            .lock()
            .organisations
            .insert(or_id.to_owned(), mam_label.map(str::to_owned));
    }

    pub fn add_record(&self, record: StubRecord) {
        self.shared.lock().records.push(record);
    }

    /// What MediaHaven holds once it ingested a sidecar (`MediaHAVEN_external_metadata`): a
    /// record that is not a fragment, whose fields are the direct children of `MDProperties`
    /// (nested lists such as `dc_relations` are left out). It is put first, as a search
    /// ranked by ingest date answers the newest record first: a collateral archived after its
    /// essence's fragments then comes before them.
    pub fn ingest_sidecar(&self, fragment_id: &str, xml: &str) -> Result<(), String> {
        self.shared.ingest_sidecar(fragment_id, xml)
    }

    /// How searches match from now on.
    pub fn set_matching(&self, matching: Matching) {
        self.shared.lock().matching = matching;
    }

    pub fn records(&self) -> Vec<StubRecord> {
        self.shared.lock().records.clone()
    }

    /// Queues failures for a route, answered before any normal answer.
    pub fn fail_next(&self, route: Route, failures: &[Failure]) {
        self.shared
            .lock()
            .failures
            .entry(route)
            .or_default()
            .extend(failures.iter().copied());
    }

    /// Revokes every token issued so far (MediaHaven then answers 401).
    pub fn revoke_tokens(&self) {
        self.shared.lock().valid_tokens.clear();
    }

    /// The `expires_in` of tokens issued from now on.
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.shared.lock().token_lifetime = seconds;
    }

    pub fn seen(&self) -> Seen {
        self.shared.lock().seen.clone()
    }
}

impl Drop for ArchiveApis {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The five predefined entities, the only references a sidecar writer emits for text.
fn unescape_xml(value: &str) -> String {
    value
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn form_fields(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode_form(k), decode_form(v)))
        .collect()
}

fn decode_form(value: &str) -> String {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// `POST /auth/ropc.php`: the ROPC grant.
async fn token(State(shared): State<Shared>, body: Bytes) -> Response {
    if let Some(failure) = shared.failure(Route::Token).await {
        return failure;
    }
    let form = form_fields(&body);
    let field = |name: &str| form.get(name).map(String::as_str);
    let valid = field("grant_type") == Some("password")
        && field("username") == Some(USERNAME)
        && field("password") == Some(PASSWORD)
        && field("client_id") == Some(CLIENT_ID)
        && field("client_secret") == Some(CLIENT_SECRET);
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    let mut inner = shared.lock();
    inner.seen.tokens_issued += 1;
    let access = format!("token-{}", inner.seen.tokens_issued);
    inner.valid_tokens.insert(access.clone());
    let lifetime = inner.token_lifetime;
    axum::Json(json!({"access_token": access, "token_type": "Bearer",
        "expires_in": lifetime, "refresh_token": "unused"}))
    .into_response()
}

/// Parses MediaHaven's `q`: groups `+( ... )` that must all match, each holding
/// `field:"value"` terms of which one must match; `\` escapes inside values.
pub fn parse_query(q: &str) -> Result<Vec<Vec<(String, String)>>, String> {
    let mut groups = Vec::new();
    let mut chars = q.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        match (chars.next(), chars.next()) {
            (None, _) => return Ok(groups),
            (Some('+'), Some('(')) => {}
            other => return Err(format!("expected `+(`, found {other:?} in {q:?}")),
        }
        let mut group = Vec::new();
        loop {
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            if chars.peek() == Some(&')') {
                chars.next();
                break;
            }
            let field: String = chars.by_ref().take_while(|c| *c != ':').collect();
            if chars.next() != Some('"') {
                return Err(format!("expected a quoted value after {field:?} in {q:?}"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated value in {q:?}")),
                }
            }
            group.push((field.trim().to_owned(), value));
        }
        groups.push(group);
    }
}

fn matches(record: &StubRecord, groups: &[Vec<(String, String)>], matching: Matching) -> bool {
    groups.iter().all(|group| {
        group.iter().any(|(field, value)| {
            record
                .fields
                .get(field)
                .is_some_and(|found| matching.accepts(found, value))
        })
    })
}

fn record_json(record: &StubRecord) -> Value {
    let mut dynamic = serde_json::Map::new();
    for (k, v) in &record.fields {
        dynamic.insert(k.clone(), Value::String(v.clone()));
    }
    json!({"Internal": {"FragmentId": record.fragment_id, "IsFragment": record.is_fragment},
        "Dynamic": dynamic})
}

/// `GET /mediahaven-rest-api/v2/records?q=&startIndex=&nrOfResults=`.
async fn search(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(failure) = shared.failure(Route::Search).await {
        return failure;
    }
    if !shared.authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let q = params.get("q").cloned().unwrap_or_default();
    let groups = match parse_query(&q) {
        Ok(groups) => groups,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let start: usize = params
        .get("startIndex")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let size: usize = params
        .get("nrOfResults")
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let mut inner = shared.lock();
    inner.seen.queries.push(q);
    let hits: Vec<&StubRecord> = inner
        .records
        .iter()
        .filter(|r| matches(r, &groups, inner.matching))
        .collect();
    let page: Vec<Value> = hits
        .iter()
        .skip(start)
        .take(size)
        .map(|r| record_json(r))
        .collect();
    axum::Json(
        json!({"TotalNrOfResults": hits.len(), "NrOfResults": page.len(),
        "StartIndex": start, "Results": page}),
    )
    .into_response()
}

/// The parts of a `multipart/form-data` body, by name.
fn multipart_parts(headers: &HeaderMap, body: &[u8]) -> Option<BTreeMap<String, String>> {
    let content_type = headers.get("content-type")?.to_str().ok()?;
    let boundary = content_type
        .strip_prefix("multipart/form-data")?
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let text = String::from_utf8_lossy(body);
    let mut parts = BTreeMap::new();
    for part in text.split(&format!("--{boundary}")) {
        let Some((head, content)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let Some(name) = head
            .split("name=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        parts.insert(name.to_owned(), content.trim_end_matches("\r\n").to_owned());
    }
    Some(parts)
}

/// `POST /mediahaven-rest-api/v2/records/{id}`: multipart `metadata` (XML) and `reason`.
async fn update(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(failure) = shared.failure(Route::Update).await {
        return failure;
    }
    if !shared.authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(parts) = multipart_parts(&headers, &body) else {
        return (StatusCode::BAD_REQUEST, "expected multipart/form-data").into_response();
    };
    let (Some(metadata), Some(reason)) = (parts.get("metadata"), parts.get("reason")) else {
        return (StatusCode::BAD_REQUEST, "metadata and reason are required").into_response();
    };
    let mut inner = shared.lock();
    if !inner.records.iter().any(|r| r.fragment_id == id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    inner
        .seen
        .updates
        .push((id, reason.clone(), metadata.clone()));
    StatusCode::NO_CONTENT.into_response()
}

/// `DELETE /mediahaven-rest-api/v2/records/{id}` with `{"Reason": ...}`.
async fn delete(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(failure) = shared.failure(Route::Delete).await {
        return failure;
    }
    if !shared.authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let reason = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("Reason").and_then(Value::as_str).map(str::to_owned));
    let Some(reason) = reason else {
        return (StatusCode::BAD_REQUEST, "a Reason is required").into_response();
    };
    let mut inner = shared.lock();
    let before = inner.records.len();
    inner.records.retain(|r| r.fragment_id != id);
    if inner.records.len() == before {
        return StatusCode::NOT_FOUND.into_response();
    }
    inner.seen.deletes.push((id, reason));
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /_stub/seen`: what the stub saw, for scripts; not part of any service's contract.
async fn seen(State(shared): State<Shared>) -> Response {
    axum::Json(shared.lock().seen.clone()).into_response()
}

/// `POST /_stub/records`: adds records (a JSON list of `{"fragment_id", "is_fragment",
/// "fields"}`), for scripts; not part of any service's contract.
async fn seed(
    State(shared): State<Shared>,
    axum::Json(records): axum::Json<Vec<StubRecord>>,
) -> Response {
    shared.lock().records.extend(records);
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_stub/ingest/{id}`: what MediaHaven holds once it ingested the sidecar in the body,
/// as record `id` ranked first ([`ArchiveApis::ingest_sidecar`]), for scripts.
async fn ingest(State(shared): State<Shared>, Path(id): Path<String>, body: String) -> Response {
    match shared.ingest_sidecar(&id, &body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

/// What `POST /_stub/fail` takes: `{"route": "pid", "status": 503, "times": 2}`, or
/// `"stall_ms": 300` instead of a status (the route answers normally after the wait).
#[derive(serde::Deserialize)]
struct FailRequest {
    route: Route,
    status: Option<u16>,
    stall_ms: Option<u64>,
    #[serde(default = "one")]
    times: u8,
}

fn one() -> u8 {
    1
}

/// `POST /_stub/fail`: the route's next `times` answers are `status` (or wait `stall_ms`, at
/// most a minute), for scripts (as [`ArchiveApis::fail_next`]); at most 255 at once.
async fn fail(
    State(shared): State<Shared>,
    axum::Json(request): axum::Json<FailRequest>,
) -> Response {
    let failure = match (request.status, request.stall_ms) {
        (Some(code), None) => Failure::Status(code),
        (None, Some(ms)) => Failure::Stall(Duration::from_millis(ms.min(60_000))),
        _ => return (StatusCode::BAD_REQUEST, "one of status and stall_ms").into_response(),
    };
    let failures = vec![failure; usize::from(request.times)];
    shared
        .lock()
        .failures
        .entry(request.route)
        .or_default()
        .extend(failures);
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /pid`: `[{"id": "<10 lowercase alphanumerics>", "number": 1}]`.
async fn pid(State(shared): State<Shared>) -> Response {
    if let Some(failure) = shared.failure(Route::Pid).await {
        return failure;
    }
    let mut inner = shared.lock();
    inner.next_pid += 1;
    let id = format!("pid{:07}", inner.next_pid);
    inner.seen.pids.push(id.clone());
    axum::Json(json!([{"id": id, "number": 1}])).into_response()
}

/// `POST /organisations`: GraphQL `{ organizations(id: "OR-...") { mam_label } }`.
async fn organisations(State(shared): State<Shared>, body: Bytes) -> Response {
    if let Some(failure) = shared.failure(Route::Organisations).await {
        return failure;
    }
    let query = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("query").and_then(Value::as_str).map(str::to_owned));
    let Some(query) = query else {
        return (StatusCode::BAD_REQUEST, "a GraphQL query is required").into_response();
    };
    let id = query
        .split("id:")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .unwrap_or_default()
        .to_owned();
    let mut inner = shared.lock();
    inner.seen.organisation_lookups += 1;
    let organizations: Vec<Value> = match inner.organisations.get(&id) {
        Some(label) => vec![json!({"mam_label": label})],
        None => Vec::new(),
    };
    axum::Json(json!({"data": {"organizations": organizations}})).into_response()
}
