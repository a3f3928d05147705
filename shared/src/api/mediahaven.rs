//! The MediaHaven REST API v2 client the archive functions share: records search, update and
//! delete, authorised with an OAuth2 resource-owner-password (ROPC) token that is reused until
//! shortly before it expires.
//!
//! The contract followed (MediaHaven REST API v2, as meemoo's mediahaven-python client and
//! s3-events-handler use it):
//! - Token: `POST {MEDIAHAVEN_URL}/auth/ropc.php`, form `grant_type=password`, `username`,
//!   `password`, `client_id`, `client_secret` -> `200 {"access_token", "token_type": "Bearer",
//!   "expires_in": seconds, "refresh_token"}`; 400/401 for bad credentials.
//! - Search: `GET {MEDIAHAVEN_URL}/mediahaven-rest-api/v2/records?q=...&startIndex=N&nrOfResults=M`
//!   with `Accept: application/json` -> `200 {"TotalNrOfResults", "NrOfResults", "StartIndex",
//!   "Results": [{"Internal": {"FragmentId", "IsFragment"}, "Dynamic": {"PID",
//!   "dc_identifier_localid", "s3_bucket", "s3_object_key", "CP_id", "md5", "object_use", ...},
//!   "Technical": {"Md5", ...}}]}` (the `Dynamic` fields are the sidecar's `MDProperties`).
//!   The query language is MediaHaven's Lucene-like `q`: `+(field:"value" field:"value")`
//!   matches any of the pairs, `+(a:"x") +(b:"y")` all of them; inside quotes `\` and `"` are
//!   escaped with a backslash. An index may match more loosely than the query reads (case
//!   folded, values split into words), so what a search returns is a candidate: whoever acts
//!   on a record compares its fields first ([`Record::is_of`]).
//! - Update: `POST .../records/{FragmentId}` as `multipart/form-data` with a part `metadata`
//!   (an XML sidecar, `application/xml`) and a field `reason` -> 2xx.
//! - Delete: `DELETE .../records/{FragmentId}` with JSON `{"Reason": "..."}` -> `204`; `404`
//!   when the record is already gone.
//! - Any call: `401` when the token is no longer valid (a new token is fetched and the call
//!   repeated once), `429` / `5xx` when busy.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::{Client, RequestBuilder, StatusCode};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::api::{self, ApiError};
use crate::config::{Env, Secret, redact_url};

const SERVICE: &str = "MediaHaven";
const API_PATH: &str = "mediahaven-rest-api/v2/records";
/// Results asked for per search page.
const PAGE_SIZE: usize = 100;
/// A token is renewed this long before MediaHaven says it expires, so that a request never
/// leaves with a token that runs out on the way.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// Where MediaHaven is and who the functions are there. `Debug` shows no secret.
#[derive(Clone)]
pub struct MediaHavenSettings {
    /// `MEDIAHAVEN_URL`: the base URL (the API and the token endpoint hang below it).
    pub url: String,
    /// `MEDIAHAVEN_CLIENT_ID`, `MEDIAHAVEN_CLIENT_SECRET`: the OAuth2 client.
    pub client_id: String,
    pub client_secret: Secret,
    /// `MEDIAHAVEN_USERNAME`, `MEDIAHAVEN_PASSWORD`: the resource owner (ROPC grant).
    pub username: String,
    pub password: Secret,
    /// `HTTP_TIMEOUT_SECS`: time limit of one request.
    pub timeout: Duration,
}

impl fmt::Debug for MediaHavenSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaHavenSettings")
            .field("url", &redact_url(&self.url))
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl MediaHavenSettings {
    /// Reads the `MEDIAHAVEN_*` variables and `HTTP_TIMEOUT_SECS` (default 30).
    pub fn read(env: &mut Env) -> Option<Self> {
        let url: Option<String> = env.required("MEDIAHAVEN_URL");
        let client_id = env.required("MEDIAHAVEN_CLIENT_ID");
        let client_secret = env.required("MEDIAHAVEN_CLIENT_SECRET");
        let username = env.required("MEDIAHAVEN_USERNAME");
        let password = env.required("MEDIAHAVEN_PASSWORD");
        let timeout = http_timeout(env);
        if let Some(url) = &url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            env.problem("MEDIAHAVEN_URL", format!("{url:?} is not an http(s) URL"));
        }
        Some(Self {
            url: url?.trim_end_matches('/').to_owned(),
            client_id: client_id?,
            client_secret: client_secret?,
            username: username?,
            password: password?,
            timeout,
        })
    }
}

/// `HTTP_TIMEOUT_SECS` (default 30, at least 1): the time limit of one HTTP API request.
pub fn http_timeout(env: &mut Env) -> Duration {
    let secs: u64 = env.or("HTTP_TIMEOUT_SECS", 30);
    if secs == 0 {
        env.problem("HTTP_TIMEOUT_SECS", "must be at least 1");
    }
    Duration::from_secs(secs.max(1))
}

/// A search query in MediaHaven's `q` language, with every value escaped so that a key
/// containing `"`, `:` or `\` stays one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query(String);

impl Query {
    /// Records where any of the pairs matches: `+(a:"x" b:"y")`.
    pub fn any_of(pairs: &[(&str, &str)]) -> Self {
        let terms: Vec<String> = pairs.iter().map(|(f, v)| term(f, v)).collect();
        Self(format!("+({})", terms.join(" ")))
    }

    /// Records where all of the pairs match: `+(a:"x") +(b:"y")`.
    pub fn all_of(pairs: &[(&str, &str)]) -> Self {
        let terms: Vec<String> = pairs
            .iter()
            .map(|(f, v)| format!("+({})", term(f, v)))
            .collect();
        Self(terms.join(" "))
    }

    /// Records matching this query and `other` as well.
    pub fn and(self, other: Query) -> Self {
        Self(format!("{} {}", self.0, other.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn term(field: &str, value: &str) -> String {
    let mut escaped = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        if c == '\\' || c == '"' {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    format!("{field}:\"{escaped}\"")
}

fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// One record of a search result, with the fields the functions use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub fragment_id: String,
    /// A real fragment of an essence (not the essence itself, not a collateral).
    pub is_fragment: bool,
    pub pid: Option<String>,
    pub local_id: Option<String>,
    /// `s3_bucket` and `s3_object_key`: the object the record was ingested from.
    pub s3_bucket: Option<String>,
    pub s3_object_key: Option<String>,
    /// `CP_id`: the tenant (organisation id) the record was archived for.
    pub cp_id: Option<String>,
    /// The file's md5: MediaHaven's own (`Technical.Md5`), else the sidecar's (`md5`).
    pub md5: Option<String>,
    /// `object_use`: `archive_master` for an essence, `subtitle` or `collateral` for what the
    /// archive functions (and the original handler) archive as collaterals.
    pub object_use: Option<String>,
}

impl Record {
    /// Whether the record is of exactly `bucket/key`, byte for byte, whatever the search
    /// matched it by.
    pub fn is_of(&self, bucket: &str, key: &str) -> bool {
        self.s3_bucket.as_deref() == Some(bucket) && self.s3_object_key.as_deref() == Some(key)
    }
}

impl From<RawRecord> for Record {
    fn from(raw: RawRecord) -> Self {
        Self {
            fragment_id: raw.internal.fragment_id,
            is_fragment: raw.internal.is_fragment,
            pid: raw.dynamic.pid,
            local_id: raw.dynamic.dc_identifier_localid,
            s3_bucket: raw.dynamic.s3_bucket,
            s3_object_key: raw.dynamic.s3_object_key,
            cp_id: raw.dynamic.cp_id,
            md5: raw.technical.md5.or(raw.dynamic.md5),
            object_use: raw.dynamic.object_use,
        }
    }
}

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Now,
    /// The record was gone already (404): a retried removal, or someone else's.
    AlreadyGone,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Page {
    total_nr_of_results: usize,
    #[serde(default)]
    results: Vec<RawRecord>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRecord {
    internal: RawInternal,
    #[serde(default)]
    dynamic: RawDynamic,
    #[serde(default)]
    technical: RawTechnical,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawInternal {
    fragment_id: String,
    #[serde(default)]
    is_fragment: bool,
}

#[derive(Deserialize, Default)]
struct RawDynamic {
    #[serde(rename = "PID")]
    pid: Option<String>,
    dc_identifier_localid: Option<String>,
    s3_bucket: Option<String>,
    s3_object_key: Option<String>,
    #[serde(rename = "CP_id")]
    cp_id: Option<String>,
    md5: Option<String>,
    object_use: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawTechnical {
    #[serde(rename = "Md5")]
    md5: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct Token {
    access: String,
    renew_at: Instant,
}

/// The client; one per function instance, so that its token is reused across events.
pub struct MediaHaven {
    http: Client,
    settings: MediaHavenSettings,
    token: Mutex<Option<Token>>,
}

impl MediaHaven {
    pub fn new(settings: MediaHavenSettings) -> Result<Self, crate::outcome::BoxError> {
        Ok(Self {
            http: api::client(settings.timeout)?,
            settings,
            token: Mutex::new(None),
        })
    }

    /// Every record matching `query`, page by page.
    pub async fn search(&self, query: &Query) -> Result<Vec<Record>, ApiError> {
        let url = format!("{}/{API_PATH}", self.settings.url);
        let mut records = Vec::new();
        loop {
            // Encoded by hand: MediaHaven wants spaces in `q` as `%20`, not the `+` of forms.
            let page_url = format!(
                "{url}?q={}&startIndex={}&nrOfResults={PAGE_SIZE}",
                encode(query.as_str()),
                records.len()
            );
            let response = self
                .authorised(|http| http.get(&page_url).header("Accept", "application/json"))
                .await?;
            let page: Page = api::json(SERVICE, response).await?;
            let got = page.results.len();
            records.extend(page.results.into_iter().map(Record::from));
            // An empty page ends the walk even if the total promised more (records deleted
            // while paging), so a changing index cannot loop forever.
            if got == 0 || records.len() >= page.total_nr_of_results {
                return Ok(records);
            }
        }
    }

    /// Updates a record's metadata with an XML sidecar (merged by MediaHaven).
    pub async fn update(
        &self,
        fragment_id: &str,
        metadata_xml: &str,
        reason: &str,
    ) -> Result<(), ApiError> {
        let url = self.record_url(fragment_id);
        self.authorised(|http| {
            let part = reqwest::multipart::Part::text(metadata_xml.to_owned())
                .file_name("metadata")
                .mime_str("application/xml");
            let form = reqwest::multipart::Form::new().text("reason", reason.to_owned());
            // `mime_str` only fails on an unparsable type, and this one is a constant.
            let form = match part {
                Ok(part) => form.part("metadata", part),
                Err(_) => form,
            };
            http.post(&url).multipart(form)
        })
        .await?;
        Ok(())
    }

    /// Deletes a record; a record that is already gone counts as deleted.
    pub async fn delete(&self, fragment_id: &str, reason: &str) -> Result<Deleted, ApiError> {
        let url = self.record_url(fragment_id);
        let body = serde_json::json!({ "Reason": reason });
        match self.authorised(|http| http.delete(&url).json(&body)).await {
            Ok(_) => Ok(Deleted::Now),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(Deleted::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    fn record_url(&self, fragment_id: &str) -> String {
        format!("{}/{API_PATH}/{}", self.settings.url, encode(fragment_id))
    }

    /// Sends a request with the current token; on 401 fetches a new token and sends it once
    /// more (a token revoked or expired early on MediaHaven's side).
    async fn authorised(
        &self,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<reqwest::Response, ApiError> {
        let token = self.token(false).await?;
        match api::send(SERVICE, build(&self.http).bearer_auth(&token)).await {
            Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => {
                let token = self.token(true).await?;
                api::send(SERVICE, build(&self.http).bearer_auth(&token)).await
            }
            other => other,
        }
    }

    /// The cached token, or a new one when there is none, it is about to expire, or `renew`.
    async fn token(&self, renew: bool) -> Result<String, ApiError> {
        // Held across the token request so that concurrent events wait for one new token
        // rather than each asking for their own.
        let mut slot = self.token.lock().await;
        if let Some(token) = slot.as_ref()
            && !renew
            && Instant::now() < token.renew_at
        {
            return Ok(token.access.clone());
        }
        let s = &self.settings;
        let form = [
            ("grant_type", "password"),
            ("username", s.username.as_str()),
            ("password", s.password.expose()),
            ("client_id", s.client_id.as_str()),
            ("client_secret", s.client_secret.expose()),
        ];
        let request = self
            .http
            .post(format!("{}/auth/ropc.php", s.url))
            .form(&form);
        let answer: TokenAnswer = api::json(SERVICE, api::send(SERVICE, request).await?).await?;
        // Without `expires_in` the token is used until MediaHaven answers 401.
        let lifetime = answer
            .expires_in
            .map_or(Duration::from_secs(24 * 3600), Duration::from_secs);
        let token = Token {
            access: answer.access_token,
            renew_at: Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN),
        };
        let access = token.access.clone();
        *slot = Some(token);
        Ok(access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_escape_quotes_and_backslashes_and_keep_colons_inside_values() {
        let q = Query::any_of(&[("s3_object_key", r#"a "b":c\d"#), ("md5", "00ff")]);
        assert_eq!(q.as_str(), r#"+(s3_object_key:"a \"b\":c\\d" md5:"00ff")"#);
        let q = Query::all_of(&[("s3_object_key", "k"), ("s3_bucket", "b")]);
        assert_eq!(q.as_str(), r#"+(s3_object_key:"k") +(s3_bucket:"b")"#);
        let q = Query::any_of(&[("s3_object_key", "k"), ("md5", "00ff")])
            .and(Query::all_of(&[("s3_bucket", "b")]));
        assert_eq!(
            q.as_str(),
            r#"+(s3_object_key:"k" md5:"00ff") +(s3_bucket:"b")"#
        );
    }

    #[test]
    fn records_carry_their_object_tenant_and_md5_and_match_only_exactly()
    -> Result<(), Box<dyn std::error::Error>> {
        let page: Page = serde_json::from_value(serde_json::json!({
            "TotalNrOfResults": 2, "NrOfResults": 2, "StartIndex": 0, "Results": [
                {"Internal": {"FragmentId": "F1", "IsFragment": false},
                 "Dynamic": {"PID": "abcdefghij", "s3_bucket": "media",
                     "s3_object_key": "in/clip.mxf", "CP_id": "OR-rf5kf25", "md5": "sidecar",
                     "object_use": "archive_master"},
                 "Technical": {"Md5": "computed"}},
                {"Internal": {"FragmentId": "F2"}, "Dynamic": {"md5": "sidecar"}}]}))?;
        let records: Vec<Record> = page.results.into_iter().map(Record::from).collect();
        assert_eq!(records[0].cp_id.as_deref(), Some("OR-rf5kf25"));
        assert_eq!(records[0].md5.as_deref(), Some("computed"));
        assert_eq!(records[0].object_use.as_deref(), Some("archive_master"));
        assert_eq!(records[1].object_use, None);
        assert_eq!(records[1].md5.as_deref(), Some("sidecar"));
        assert!(records[0].is_of("media", "in/clip.mxf"));
        for (bucket, key) in [
            ("media2", "in/clip.mxf"),
            ("media", "in/Clip.mxf"),
            ("media", "in/clip.mxf "),
            ("media", "clip.mxf"),
            ("media", "in/clip"),
        ] {
            assert!(!records[0].is_of(bucket, key), "{bucket}/{key}");
        }
        assert!(!records[1].is_of("media", "in/clip.mxf"));
        Ok(())
    }

    #[test]
    fn settings_debug_hides_secrets() -> Result<(), Box<dyn std::error::Error>> {
        let env = Env::from_pairs([
            ("MEDIAHAVEN_URL", "https://mh.example/"),
            ("MEDIAHAVEN_CLIENT_ID", "client"),
            ("MEDIAHAVEN_CLIENT_SECRET", "s3cret-client"),
            ("MEDIAHAVEN_USERNAME", "user"),
            ("MEDIAHAVEN_PASSWORD", "s3cret-password"),
        ]);
        struct Only(MediaHavenSettings);
        impl crate::FromEnv for Only {
            fn read(env: &mut Env) -> Option<Self> {
                MediaHavenSettings::read(env).map(Only)
            }
        }
        let settings = env.load::<Only>()?.0;
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(settings.url, "https://mh.example");
        Ok(())
    }
}
