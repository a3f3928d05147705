//! Knative Eventing's OIDC tokens checked against their issuer: the discovery document and the
//! JWKS fetched with a time limit and a size limit, kept for a while and fetched again (not too
//! often) when a token names a key that is not among them; only asymmetric algorithms.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{AuthError, OidcSettings};

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

/// Checks Knative Eventing's OIDC tokens against the issuer's published keys, kept for
/// [`KEYS_FRESH_FOR`] and fetched again (at most every [`REFETCH_AFTER`]) when a token names a
/// key that is not among them.
pub(super) struct OidcVerifier {
    settings: OidcSettings,
    client: reqwest::Client,
    keys: Mutex<KeyCache>,
}

#[derive(Default)]
pub(super) struct KeyCache {
    set: Option<JwkSet>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

#[derive(Deserialize)]
pub(super) struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
pub(super) struct Claims {
    #[serde(default)]
    sub: String,
}

impl OidcVerifier {
    pub(super) fn new(settings: OidcSettings) -> Result<Self, String> {
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

    pub(super) async fn verify(&self, token: &str) -> Result<(), AuthError> {
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
