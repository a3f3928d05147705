//! Who may make a function act over HTTP. Event deliveries on `POST /` are checked against
//! `EVENT_AUTH`: a shared bearer token (`token`, what MinIO's webhook `auth_token` and any
//! sender that can set a header use), Knative Eventing's OIDC tokens (`oidc`: a JWT whose
//! issuer, signature, audience and expiry are checked, with keys from the issuer's JWKS), or
//! nothing (`none`, which must be said explicitly). The operations pages have their own
//! credential, `OPS_TOKEN`.

mod oidc;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use base64::Engine;

use crate::config::{Env, Secret};
use oidc::OidcVerifier;

/// Bytes of a shared token below which it is refused at start-up: a guessable token is no
/// authentication.
const MIN_TOKEN_BYTES: usize = 16;
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

#[cfg(test)]
mod tests {
    use super::testing::Issuer;
    use super::*;
    use axum::http::HeaderValue;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
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
