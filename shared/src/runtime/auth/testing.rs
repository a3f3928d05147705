//! An OIDC issuer on loopback for tests: a P-256 key pair, its discovery document and its
//! JWKS, and tokens signed with it.

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
