//! Who may make `serve` act, through the real binary: deliveries without the shared token or
//! with a forged, expired or misdirected OIDC token get 401 and make nothing; the operations
//! pages live on their own port behind their credential; a derived object that is not an
//! image is never served; and without an `EVENT_AUTH` setting the service does not start.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use base64::Engine;
use bucketfn::runtime::auth::testing::Issuer;
use image::ImageFormat;
use serde_json::json;

use crate::support::function::{
    FunctionProcess, HttpReply, THUMBNAIL_ON_CREATE, free_port, request, wait_ready,
};
use crate::support::images::gradient;
use crate::support::s3_server::S3Server;
use crate::support::{BoxError, TestResult};

const EVENT_TOKEN: &str = "event-token-for-the-tests-0123";
const OPS_TOKEN: &str = "ops-token-for-the-tests-0123";
const AUDIENCE: &str = "serving.knative.dev/service/bucketfn/thumbnail-on-create";

struct Secured {
    url: String,
    ops_url: String,
    s3: S3Server,
    issuer: Issuer,
    process: FunctionProcess,
}

/// thumbnail-on-create serving `photos`, taking the shared token and the test issuer's OIDC
/// tokens, with its operations pages on a port of their own.
async fn serve() -> Result<Secured, BoxError> {
    let s3 = S3Server::start().await?;
    s3.create_bucket("photos").await?;
    let issuer = Issuer::start().await?;
    let (port, ops_port) = (free_port()?, free_port()?);
    let mut env = s3.env();
    env.extend([
        ("PORT", port.to_string()),
        ("OPS_PORT", ops_port.to_string()),
        ("LISTEN_ADDRESS", "127.0.0.1".to_owned()),
        ("SOURCE_BUCKET", "photos".to_owned()),
        ("EVENT_AUTH", "oidc,token".to_owned()),
        ("EVENT_TOKEN", EVENT_TOKEN.to_owned()),
        ("OIDC_ISSUER", issuer.url.clone()),
        ("OIDC_AUDIENCE", AUDIENCE.to_owned()),
        ("OPS_TOKEN", OPS_TOKEN.to_owned()),
    ]);
    let process = FunctionProcess::spawn(THUMBNAIL_ON_CREATE, &["serve"], &env)?;
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{url}/healthz"), &process, Duration::from_secs(20)).await?;
    Ok(Secured {
        url,
        ops_url: format!("http://127.0.0.1:{ops_port}"),
        s3,
        issuer,
        process,
    })
}

fn created(key: &str) -> String {
    json!({"Records": [{"eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put",
        "s3": {"bucket": {"name": "photos"}, "object": {"key": key, "size": 1000}}}]})
    .to_string()
}

async fn deliver(
    svc: &Secured,
    authorization: Option<&str>,
    key: &str,
) -> Result<HttpReply, BoxError> {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    request("POST", &svc.url, &headers, created(key)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn only_authenticated_deliveries_make_thumbnails() -> TestResult {
    let svc = serve().await?;
    svc.s3
        .put("photos", "a.jpg", gradient(400, 300, ImageFormat::Jpeg)?)
        .await?;
    let stranger = Issuer::start().await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let forged = [
        ("no credential", None),
        (
            "a wrong token",
            Some("Bearer event-token-for-the-tests-0124".to_owned()),
        ),
        ("the token as Basic", Some(format!("Basic {EVENT_TOKEN}"))),
        (
            "a JWT signed by another key",
            Some(format!(
                "Bearer {}",
                stranger.token(
                    json!({"iss": svc.issuer.url, "aud": AUDIENCE, "exp": now + 600}),
                    "k1"
                )?
            )),
        ),
        (
            "a JWT for another audience",
            Some(format!(
                "Bearer {}",
                svc.issuer.token_for("cleanup-on-remove")?
            )),
        ),
        (
            "an expired JWT",
            Some(format!(
                "Bearer {}",
                svc.issuer.token(
                    json!({"iss": svc.issuer.url, "aud": AUDIENCE, "exp": now - 600}),
                    "k1"
                )?
            )),
        ),
    ];
    for (what, authorization) in &forged {
        let reply = deliver(&svc, authorization.as_deref(), "a.jpg").await?;
        assert_eq!(reply.status, 401, "{what}: logs:\n{}", svc.process.logs());
        let body = String::from_utf8_lossy(&reply.body);
        assert!(!body.contains(EVENT_TOKEN), "{what}: {body}");
    }
    let thumbnail = "thumbnails/a.jpg/256.jpg";
    assert!(
        svc.s3.get("photos", thumbnail).await?.is_none(),
        "a forged delivery acted"
    );

    let oidc = format!("Bearer {}", svc.issuer.token_for(AUDIENCE)?);
    let reply = deliver(&svc, Some(&oidc), "a.jpg").await?;
    assert_eq!(reply.status, 202, "logs:\n{}", svc.process.logs());
    assert!(svc.s3.get("photos", thumbnail).await?.is_some());

    svc.s3
        .put("photos", "b.jpg", gradient(400, 300, ImageFormat::Jpeg)?)
        .await?;
    let reply = deliver(&svc, Some(&format!("Bearer {EVENT_TOKEN}")), "b.jpg").await?;
    assert_eq!(reply.status, 202, "logs:\n{}", svc.process.logs());
    assert!(
        svc.s3
            .get("photos", "thumbnails/b.jpg/256.jpg")
            .await?
            .is_some()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operations_pages_are_on_their_own_port_behind_their_credential() -> TestResult {
    let svc = serve().await?;
    for path in ["/metrics", "/events/stats", "/files"] {
        let on_events_port = request("GET", &format!("{}{path}", svc.url), &[], "").await?;
        assert_eq!(on_events_port.status, 404, "{path} on PORT");
        let anonymous = request("GET", &format!("{}{path}", svc.ops_url), &[], "").await?;
        assert_eq!(anonymous.status, 401, "{path} without OPS_TOKEN");
        let event_token = format!("Bearer {EVENT_TOKEN}");
        let wrong = [("authorization", event_token.as_str())];
        let reply = request("GET", &format!("{}{path}", svc.ops_url), &wrong, "").await?;
        assert_eq!(reply.status, 401, "{path} with the event token");
    }
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ops:{OPS_TOKEN}"))
    );
    let reply = request(
        "GET",
        &format!("{}/metrics", svc.ops_url),
        &[("authorization", &basic)],
        "",
    )
    .await?;
    assert_eq!(reply.status, 200);
    assert!(String::from_utf8_lossy(&reply.body).contains("bucketfn_"));

    // An object stored as HTML where a thumbnail would be is not served.
    svc.s3
        .client(1)
        .put_object()
        .bucket("photos")
        .key("thumbnails/c.jpg/256.jpg")
        .content_type("text/html")
        .body(ByteStream::from_static(
            b"<script>alert(document.cookie)</script>",
        ))
        .send()
        .await?;
    let uri = format!("{}/files/object?input=c.jpg&label=256%20px", svc.ops_url);
    let reply = request("GET", &uri, &[("authorization", &basic)], "").await?;
    assert_eq!(
        reply.status,
        403,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(!String::from_utf8_lossy(&reply.body).contains("<script"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_cannot_be_checked_now_is_503_and_does_nothing() -> TestResult {
    let s3 = S3Server::start().await?;
    s3.create_bucket("photos").await?;
    s3.put("photos", "a.jpg", gradient(400, 300, ImageFormat::Jpeg)?)
        .await?;
    let issuer = Issuer::start().await?;
    let port = free_port()?;
    let mut env = s3.env();
    env.extend([
        ("PORT", port.to_string()),
        ("LISTEN_ADDRESS", "127.0.0.1".to_owned()),
        ("SOURCE_BUCKET", "photos".to_owned()),
        ("EVENT_AUTH", "oidc".to_owned()),
        ("OIDC_ISSUER", issuer.url.clone()),
        ("OIDC_AUDIENCE", AUDIENCE.to_owned()),
        // Nothing listens there: the issuer's keys are out of reach.
        (
            "OIDC_JWKS_URL",
            format!("http://127.0.0.1:{}/keys", free_port()?),
        ),
    ]);
    let process = FunctionProcess::spawn(THUMBNAIL_ON_CREATE, &["serve"], &env)?;
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{url}/healthz"), &process, Duration::from_secs(20)).await?;
    let bearer = format!("Bearer {}", issuer.token_for(AUDIENCE)?);
    let headers = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];
    let reply = request("POST", &url, &headers, created("a.jpg")).await?;
    assert_eq!(reply.status, 503, "logs:\n{}", process.logs());
    assert!(
        s3.get("photos", "thumbnails/a.jpg/256.jpg")
            .await?
            .is_none()
    );
    Ok(())
}

#[test]
fn serve_does_not_start_without_an_event_auth_setting() -> TestResult {
    let out = std::process::Command::new(THUMBNAIL_ON_CREATE)
        .args(["serve", "--storage", "."])
        .env_clear()
        .env("PORT", free_port()?.to_string())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("EVENT_AUTH is not set"), "{stderr}");
    Ok(())
}
