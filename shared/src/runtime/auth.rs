//! Who may make a function act over HTTP. Event deliveries on `POST /` are checked against
//! `EVENT_AUTH`: a shared bearer token (`token`, what MinIO's webhook `auth_token` and any
//! sender that can set a header use), Knative Eventing's OIDC tokens (`oidc`: a JWT whose
//! issuer, signature, audience and expiry are checked, with keys from the issuer's JWKS), or
//! nothing (`none`, which must be said explicitly). The operations pages have their own
//! credential, `OPS_TOKEN`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::{Env, Secret};

/// Bytes of a shared token below which it is refused at start-up: a guessable token is no
/// authentication.
const MIN_TOKEN_BYTES: usize = 16;
/// How long fetched signing keys are used before they are fetched again.
const KEYS_FRESH_FOR: Duration = Duration::from_secs(600);
/// The least time between two fetches of the keys, so that tokens naming unknown keys cannot
/// make the service hammer the issuer.
const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// How long a discovery document or JWKS may take to arrive.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest discovery document or JWKS read (a JWKS of a few keys is a few KiB).
const MAX_KEYS_BYTES: usize = 256 * 1024;
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// Signature algorithms taken from an issuer's keys: asymmetric only, so a key published in
/// the JWKS can never be used as an HMAC secret.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// `EVENT_AUTH` and the variables of the schemes it names: `none`, or one or both of `token`
/// and `oidc` (`oidc,token`: a Knative Broker's deliveries and a MinIO webhook's reach the same
/// Service; a delivery is let in when either check passes).
#[derive(Debug, Clone, Default)]
pub struct EventAuthSettings {
    /// `token`: `Authorization: Bearer <EVENT_TOKEN>`.
    pub token: Option<Secret>,
    /// `oidc`: a JWT from `OIDC_ISSUER` for `OIDC_AUDIENCE`.
    pub oidc: Option<OidcSettings>,
}

/// Where OIDC tokens come from and whom they must be for.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// `OIDC_ISSUER`: the `iss` every token must carry, and where discovery starts.
    pub issuer: String,
    /// `OIDC_AUDIENCE`: a value the token's `aud` must hold.
    pub audience: String,
    /// `OIDC_SUBJECT_PREFIX`: when set, the token's `sub` must start with it (for Knative,
    /// `system:serviceaccount:<namespace>:`, the namespace of the Triggers' service accounts),
    /// so that a token some other workload obtained for the audience is not enough.
    pub subject_prefix: Option<String>,
    /// `OIDC_JWKS_URL`: the keys, when discovery (`<issuer>/.well-known/openid-configuration`)
    /// is not to be used.
    pub jwks_url: Option<String>,
    /// `OIDC_CA_FILE`: PEM certificates trusted for the key fetches, beside the platform's.
    pub ca_file: Option<PathBuf>,
    /// `OIDC_JWKS_TOKEN_FILE`: a bearer token read from this file (at each fetch: Kubernetes
    /// rotates it) and sent with the fetch of `OIDC_JWKS_URL`, and nowhere else.
    pub jwks_token_file: Option<PathBuf>,
}

impl EventAuthSettings {
    /// The schemes, as `EVENT_AUTH` spells them.
    pub fn scheme(&self) -> String {
        let names: Vec<&str> = [
            self.oidc.as_ref().map(|_| "oidc"),
            self.token.as_ref().map(|_| "token"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(",")
        }
    }

    /// `None` when `EVENT_AUTH` is not set: `serve` refuses to start then.
    pub fn read(env: &mut Env) -> Option<Self> {
        let schemes: String = env.optional("EVENT_AUTH")?;
        let schemes: Vec<String> = schemes
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .collect();
        let mut settings = Self::default();
        if schemes == ["none"] {
            return Some(settings);
        }
        for scheme in &schemes {
            match scheme.as_str() {
                "token" => settings.token = read_token(env),
                "oidc" => settings.oidc = read_oidc(env),
                other => env.problem(
                    "EVENT_AUTH",
                    format!("{other:?} is not token or oidc (or none alone)"),
                ),
            }
        }
        Some(settings)
    }
}

fn read_token(env: &mut Env) -> Option<Secret> {
    let token: Secret = env.required("EVENT_TOKEN")?;
    if token.expose().len() < MIN_TOKEN_BYTES {
        env.problem(
            "EVENT_TOKEN",
            format!("must be at least {MIN_TOKEN_BYTES} bytes"),
        );
    }
    Some(token)
}

fn read_oidc(env: &mut Env) -> Option<OidcSettings> {
    let issuer: Option<String> = env.required("OIDC_ISSUER");
    let audience: Option<String> = env.required("OIDC_AUDIENCE");
    let jwks_url: Option<String> = env.optional("OIDC_JWKS_URL");
    let jwks_token_file: Option<PathBuf> = env.optional("OIDC_JWKS_TOKEN_FILE");
    if jwks_token_file.is_some() && jwks_url.is_none() {
        env.problem(
            "OIDC_JWKS_TOKEN_FILE",
            "needs OIDC_JWKS_URL: the token is sent to that address only",
        );
    }
    Some(OidcSettings {
        issuer: issuer?,
        audience: audience?,
        subject_prefix: env.optional("OIDC_SUBJECT_PREFIX"),
        jwks_url,
        ca_file: env.optional("OIDC_CA_FILE"),
        jwks_token_file,
    })
}

/// Why a delivery was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No usable credential, or one that does not check out: 401, and nothing happens.
    #[error("{0}")]
    Refused(String),
    /// The credential could not be checked now (the issuer's keys are out of reach): 503, so
    /// the sender tries again.
    #[error("{0}")]
    Unavailable(String),
}

/// The check every event delivery passes before its body is read.
#[derive(Clone)]
pub struct EventGate(Arc<Gate>);

struct Gate {
    token: Option<Secret>,
    oidc: Option<OidcVerifier>,
}

impl EventGate {
    pub fn new(settings: &EventAuthSettings) -> Result<Self, String> {
        let oidc = settings.oidc.clone().map(OidcVerifier::new).transpose()?;
        Ok(Self(Arc::new(Gate {
            token: settings.token.clone(),
            oidc,
        })))
    }

    pub async fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let gate = &*self.0;
        if gate.token.is_none() && gate.oidc.is_none() {
            return Ok(());
        }
        let given = bearer(headers)?;
        if let Some(token) = &gate.token
            && same(given.as_bytes(), token.expose().as_bytes())
        {
            return Ok(());
        }
        match &gate.oidc {
            Some(verifier) => verifier.verify(given).await,
            None => Err(AuthError::Refused(
                "the bearer token is not the one configured".into(),
            )),
        }
    }
}

/// The operations credential: `Authorization: Bearer <OPS_TOKEN>`, or Basic with any user name
/// and the token as password (what a browser asks for).
#[derive(Clone)]
pub struct OpsGate(Option<Secret>);

impl OpsGate {
    pub fn new(token: Option<Secret>) -> Self {
        Self(token)
    }

    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.0 else {
            return true;
        };
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let (scheme, credential) = value.trim().split_once(' ').unwrap_or((value, ""));
        let credential = credential.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return same(credential.as_bytes(), token.expose().as_bytes());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credential) else {
                return false;
            };
            let password = decoded
                .iter()
                .position(|b| *b == b':')
                .map_or(&[][..], |at| &decoded[at + 1..]);
            return same(password, token.expose().as_bytes());
        }
        false
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| AuthError::Refused("no Authorization header".into()))?
        .to_str()
        .map_err(|_| AuthError::Refused("the Authorization header is not text".into()))?;
    match value.trim().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(token.trim())
        }
        _ => Err(AuthError::Refused(
            "the Authorization header is not `Bearer <token>`".into(),
        )),
    }
}

/// Compares in time that depends only on the lengths, so a caller cannot find the token byte
/// by byte from response times.
fn same(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Checks Knative Eventing's OIDC tokens against the issuer's published keys, kept for
/// [`KEYS_FRESH_FOR`] and fetched again (at most every [`REFETCH_AFTER`]) when a token names a
/// key that is not among them.
struct OidcVerifier {
    settings: OidcSettings,
    client: reqwest::Client,
    keys: Mutex<KeyCache>,
}

#[derive(Default)]
struct KeyCache {
    set: Option<JwkSet>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
}

impl OidcVerifier {
    fn new(settings: OidcSettings) -> Result<Self, String> {
        let mut client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &settings.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("OIDC_CA_FILE {}: {e}", path.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("OIDC_CA_FILE {}: {e}", path.display()))?;
            if certificates.is_empty() {
                return Err(format!(
                    "OIDC_CA_FILE {}: no PEM certificate in it",
                    path.display()
                ));
            }
            for certificate in certificates {
                client = client.add_root_certificate(certificate);
            }
        }
        let client = client
            .build()
            .map_err(|e| format!("cannot build the HTTP client for the OIDC keys: {e}"))?;
        Ok(Self {
            settings,
            client,
            keys: Mutex::new(KeyCache::default()),
        })
    }

    async fn verify(&self, token: &str) -> Result<(), AuthError> {
        let refused = |why: String| AuthError::Refused(why);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refused(format!("the bearer token is not a JWT: {e}")))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(refused(format!(
                "the token is signed with {:?}, not an asymmetric algorithm",
                header.alg
            )));
        }
        let jwk = self.key(header.kid.as_deref()).await?;
        if let Some(alg) = jwk.common.key_algorithm
            && alg.to_string() != format!("{:?}", header.alg)
        {
            return Err(refused(format!(
                "the token is signed with {:?}, its key is for {alg}",
                header.alg
            )));
        }
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| refused(format!("the issuer's key cannot check the token: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| refused(format!("the token does not check out: {e}")))?
            .claims;
        match &self.settings.subject_prefix {
            Some(prefix) if !claims.sub.starts_with(prefix.as_str()) => Err(refused(format!(
                "the token's subject {:?} is not under OIDC_SUBJECT_PREFIX",
                claims.sub
            ))),
            _ => Ok(()),
        }
    }

    /// The key a token names (or the only key, for a token that names none).
    async fn key(&self, kid: Option<&str>) -> Result<Jwk, AuthError> {
        let mut cache = self.keys.lock().await;
        let now = Instant::now();
        let fresh = cache
            .fetched
            .is_some_and(|at| now.duration_since(at) < KEYS_FRESH_FOR);
        let found = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        if fresh && let Some(jwk) = cache.set.as_ref().and_then(found) {
            return Ok(jwk);
        }
        let may_fetch = cache
            .attempted
            .is_none_or(|at| now.duration_since(at) >= REFETCH_AFTER);
        if may_fetch || cache.set.is_none() {
            cache.attempted = Some(now);
            match self.fetch().await {
                Ok(set) => {
                    cache.set = Some(set);
                    cache.fetched = Some(now);
                }
                Err(e) if cache.set.is_none() => return Err(AuthError::Unavailable(e)),
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot refresh the OIDC keys; using the last ones.")
                }
            }
        }
        cache.set.as_ref().and_then(found).ok_or_else(|| {
            AuthError::Refused(match kid {
                Some(kid) => format!("the issuer publishes no key {kid:?}"),
                None => "the token names no key and the issuer publishes several".into(),
            })
        })
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let jwks_url = match &self.settings.jwks_url {
            Some(url) => url.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.settings.issuer.trim_end_matches('/')
                );
                let discovery: Discovery = self.get_json(&url).await?;
                if discovery.issuer != self.settings.issuer {
                    return Err(format!(
                        "the discovery document at {url} is for issuer {:?}, not OIDC_ISSUER",
                        discovery.issuer
                    ));
                }
                discovery.jwks_uri
            }
        };
        let set: JwkSet = self.get_json(&jwks_url).await?;
        tracing::info!(keys = set.keys.len(), url = %jwks_url, "OIDC keys fetched.");
        Ok(set)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let mut request = self.client.get(url);
        let to_jwks_url = self.settings.jwks_url.as_deref() == Some(url);
        if let Some(path) = self
            .settings
            .jwks_token_file
            .as_ref()
            .filter(|_| to_jwks_url)
        {
            let token = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("OIDC_JWKS_TOKEN_FILE {}: {e}", path.display()))?;
            request = request.bearer_auth(token.trim());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| format!("cannot fetch {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("cannot read {url}: {e}"))?
        {
            if body.len() + chunk.len() > MAX_KEYS_BYTES {
                return Err(format!("{url} sent more than {MAX_KEYS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url} is not what OIDC says: {e}"))
    }
}

/// An OIDC issuer on loopback for tests: a P-256 key pair, its discovery document and its
/// JWKS, and tokens signed with it.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::routing::get;
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::{EventAuthSettings, EventGate, OidcSettings};

    pub struct Issuer {
        /// The issuer's URL (`iss`), where its discovery document is.
        pub url: String,
        signing: EncodingKey,
        /// How many times the JWKS was fetched.
        pub fetches: Arc<AtomicUsize>,
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    impl Issuer {
        /// Starts serving; its key is published as `k1`.
        pub async fn start() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let point = pair.public_key_raw();
            // Uncompressed SEC1: 0x04, then x and y of 32 bytes each.
            let (x, y) = point.get(1..33).zip(point.get(33..65)).ok_or("short key")?;
            let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                "use": "sig", "x": b64(x), "y": b64(y)}]});
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/keys")});
            let fetches = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&fetches);
            let app = Router::new()
                .route(
                    "/.well-known/openid-configuration",
                    get(move || async move { axum::Json(discovery) }),
                )
                .route(
                    "/keys",
                    get(move || {
                        counted.fetch_add(1, Ordering::SeqCst);
                        async move { axum::Json(jwks) }
                    }),
                );
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            Ok(Self {
                url,
                signing: EncodingKey::from_ec_der(&pair.serialize_der()),
                fetches,
            })
        }

        /// `claims` signed with the issuer's key, naming key `kid`.
        pub fn token(
            &self,
            claims: serde_json::Value,
            kid: &str,
        ) -> Result<String, jsonwebtoken::errors::Error> {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(kid.into());
            jsonwebtoken::encode(&header, &claims, &self.signing)
        }

        /// A token for `audience` from this issuer, valid for an hour.
        pub fn token_for(&self, audience: &str) -> Result<String, jsonwebtoken::errors::Error> {
            let exp = chrono::Utc::now().timestamp() + 3600;
            self.token(json!({"iss": self.url, "aud": audience, "exp": exp}), "k1")
        }

        pub fn settings(&self, audience: &str) -> OidcSettings {
            OidcSettings {
                issuer: self.url.clone(),
                audience: audience.into(),
                subject_prefix: None,
                jwks_url: None,
                ca_file: None,
                jwks_token_file: None,
            }
        }

        pub fn gate(&self, audience: &str) -> Result<EventGate, String> {
            EventGate::new(&EventAuthSettings {
                oidc: Some(self.settings(audience)),
                token: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Issuer;
    use super::*;
    use axum::http::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::sync::atomic::Ordering;

    type TestResult = Result<(), crate::BoxError>;

    fn with_authorization(value: &str) -> Result<HeaderMap, crate::BoxError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value)?);
        Ok(headers)
    }

    fn in_an_hour() -> i64 {
        chrono::Utc::now().timestamp() + 3600
    }

    #[tokio::test]
    async fn a_token_from_the_issuer_for_the_audience_is_let_in() -> TestResult {
        let issuer = Issuer::start().await?;
        let gate = issuer.gate("thumbnail-on-create")?;
        let claims = json!({"iss": issuer.url, "aud": ["thumbnail-on-create"], "exp": in_an_hour(),
            "sub": "system:serviceaccount:default:oidc-broker"});
        let token = issuer.token(claims, "k1")?;
        for _ in 0..3 {
            gate.check(&with_authorization(&format!("Bearer {token}"))?)
                .await?;
        }
        assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1, "keys are cached");
        // Tokens naming keys the issuer does not publish are refused without a fetch each:
        // the keys were fetched less than REFETCH_AFTER ago.
        let forged = json!({"iss": issuer.url, "aud": "thumbnail-on-create", "exp": in_an_hour()});
        for kid in ["k2", "k3", "k4"] {
            let token = issuer.token(forged.clone(), kid)?;
            let verdict = gate
                .check(&with_authorization(&format!("Bearer {token}"))?)
                .await;
            assert!(matches!(verdict, Err(AuthError::Refused(_))), "{verdict:?}");
        }
        assert_eq!(
            issuer.fetches.load(Ordering::SeqCst),
            1,
            "a fetch per unknown key"
        );
        Ok(())
    }

    #[tokio::test]
    async fn forged_expired_foreign_and_misdirected_tokens_are_refused() -> TestResult {
        let issuer = Issuer::start().await?;
        let other = Issuer::start().await?;
        let gate = issuer.gate("thumbnail-on-create")?;
        let good = json!({"iss": issuer.url, "aud": "thumbnail-on-create", "exp": in_an_hour()});
        let (aud, now) = ("thumbnail-on-create", chrono::Utc::now().timestamp());
        let claims = |iss: &str, aud: &str, exp: Option<i64>| match exp {
            Some(exp) => json!({"iss": iss, "aud": aud, "exp": exp}),
            None => json!({"iss": iss, "aud": aud}),
        };
        let mut cases = vec![
            ("signed by another key", other.token(good.clone(), "k1")?),
            (
                "expired",
                issuer.token(claims(&issuer.url, aud, Some(now - 600)), "k1")?,
            ),
            (
                "for another audience",
                issuer.token(
                    claims(&issuer.url, "cleanup-on-remove", Some(in_an_hour())),
                    "k1",
                )?,
            ),
            (
                "from another issuer",
                issuer.token(claims(&other.url, aud, Some(in_an_hour())), "k1")?,
            ),
            (
                "with no expiry",
                issuer.token(claims(&issuer.url, aud, None), "k1")?,
            ),
            ("naming an unknown key", issuer.token(good.clone(), "k2")?),
        ];
        // The same claims, signed with HMAC using the published key's bytes as the secret.
        let hmac = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(b"k1")?,
        )?;
        cases.push(("signed with HMAC", hmac));
        for (what, token) in cases {
            let verdict = gate
                .check(&with_authorization(&format!("Bearer {token}"))?)
                .await;
            assert!(
                matches!(verdict, Err(AuthError::Refused(_))),
                "a token {what} was not refused: {verdict:?}"
            );
        }
        let missing = gate.check(&HeaderMap::new()).await;
        assert!(matches!(missing, Err(AuthError::Refused(_))), "{missing:?}");
        Ok(())
    }

    #[tokio::test]
    async fn a_subject_prefix_ties_tokens_to_the_triggers_accounts() -> TestResult {
        let issuer = Issuer::start().await?;
        let mut settings = issuer.settings("a");
        settings.subject_prefix = Some("system:serviceaccount:bucketfn:".into());
        let gate = EventGate::new(&EventAuthSettings {
            oidc: Some(settings),
            token: Some(Secret::new("0123456789abcdef")),
        })?;
        let token = |sub: &str| {
            issuer.token(
                json!({"iss": issuer.url, "aud": "a", "exp": in_an_hour(), "sub": sub}),
                "k1",
            )
        };
        let bearer = |t: &str| with_authorization(&format!("Bearer {t}"));
        let trigger =
            token("system:serviceaccount:bucketfn:photos-oidc-eventing.knative.dev-trigger")?;
        gate.check(&bearer(&trigger)?).await?;
        // With both schemes, the shared token is let in as well.
        gate.check(&bearer("0123456789abcdef")?).await?;
        let stranger = token("system:serviceaccount:default:curious")?;
        let verdict = gate.check(&bearer(&stranger)?).await;
        assert!(matches!(verdict, Err(AuthError::Refused(_))), "{verdict:?}");
        Ok(())
    }

    #[tokio::test]
    async fn keys_out_of_reach_are_unavailable_not_refused() -> TestResult {
        let issuer = Issuer::start().await?;
        let mut unreachable = issuer.settings("a");
        unreachable.issuer = "http://127.0.0.1:9".into();
        let gate = EventGate::new(&EventAuthSettings {
            oidc: Some(unreachable),
            token: None,
        })?;
        let token = issuer.token(
            json!({"iss": "http://127.0.0.1:9", "aud": "a", "exp": in_an_hour()}),
            "k1",
        )?;
        let verdict = gate
            .check(&with_authorization(&format!("Bearer {token}"))?)
            .await;
        assert!(
            matches!(verdict, Err(AuthError::Unavailable(_))),
            "{verdict:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn the_shared_token_must_match_exactly() -> TestResult {
        let gate = EventGate::new(&EventAuthSettings {
            token: Some(Secret::new("0123456789abcdef")),
            oidc: None,
        })?;
        gate.check(&with_authorization("Bearer 0123456789abcdef")?)
            .await?;
        for value in [
            "Bearer 0123456789abcdeF",
            "Bearer 0123456789abcde",
            "Basic MDEyMzQ1Njc4OWFiY2RlZg==",
            "0123456789abcdef",
        ] {
            let verdict = gate.check(&with_authorization(value)?).await;
            assert!(matches!(verdict, Err(AuthError::Refused(_))), "{value}");
        }
        Ok(())
    }

    #[test]
    fn the_ops_token_is_taken_as_bearer_or_as_a_basic_password() -> TestResult {
        let gate = OpsGate::new(Some(Secret::new("s3cret-s3cret-s3")));
        let basic = |credential: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credential)
            )
        };
        assert!(gate.allows(&with_authorization("Bearer s3cret-s3cret-s3")?));
        assert!(gate.allows(&with_authorization(&basic("ops:s3cret-s3cret-s3"))?));
        assert!(!gate.allows(&with_authorization(&basic("s3cret-s3cret-s3:x"))?));
        assert!(!gate.allows(&with_authorization("Bearer nope")?));
        assert!(!gate.allows(&HeaderMap::new()));
        assert!(OpsGate::new(None).allows(&HeaderMap::new()));
        Ok(())
    }

    #[test]
    fn the_scheme_must_be_named_and_a_short_token_is_refused() {
        let read = |pairs: &[(&str, &str)]| {
            let mut env = Env::from_pairs(pairs.iter().copied());
            let settings = EventAuthSettings::read(&mut env);
            (settings, env.finish())
        };
        assert!(matches!(read(&[]), (None, Ok(()))));
        let (none, ok) = read(&[("EVENT_AUTH", "none")]);
        assert_eq!(
            (none.map(|s| s.scheme()), ok),
            (Some("none".into()), Ok(()))
        );
        let (both, ok) = read(&[
            ("EVENT_AUTH", "oidc, token"),
            ("EVENT_TOKEN", "0123456789abcdef"),
            ("OIDC_ISSUER", "https://i"),
            ("OIDC_AUDIENCE", "a"),
        ]);
        assert_eq!(
            (both.map(|s| s.scheme()), ok),
            (Some("oidc,token".into()), Ok(()))
        );
        let (_, mixed) = read(&[
            ("EVENT_AUTH", "none,token"),
            ("EVENT_TOKEN", "0123456789abcdef"),
        ]);
        assert!(mixed.is_err_and(|e| e.to_string().contains("EVENT_AUTH")));
        let (_, leaky) = read(&[
            ("EVENT_AUTH", "oidc"),
            ("OIDC_ISSUER", "https://i"),
            ("OIDC_AUDIENCE", "a"),
            ("OIDC_JWKS_TOKEN_FILE", "/token"),
        ]);
        assert!(leaky.is_err_and(|e| e.to_string().contains("needs OIDC_JWKS_URL")));
        let (_, short) = read(&[("EVENT_AUTH", "token"), ("EVENT_TOKEN", "short")]);
        assert!(short.is_err_and(|e| e.to_string().contains("EVENT_TOKEN: must be at least 16")));
        let (_, unknown) = read(&[("EVENT_AUTH", "basic")]);
        assert!(unknown.is_err_and(|e| e.to_string().contains("EVENT_AUTH")));
        let (_, missing) = read(&[("EVENT_AUTH", "oidc"), ("OIDC_ISSUER", "https://i")]);
        assert!(missing.is_err_and(|e| e.to_string().contains("OIDC_AUDIENCE")));
    }
}
