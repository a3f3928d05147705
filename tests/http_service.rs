//! The function binary as a Knative / Code Engine service (`serve`): CloudEvents in binary and
//! structured mode, raw notifications, status codes by the Knative contract, graceful shutdown,
//! and failure answers that tell the sender the kind of failure, not the upstream's.

use std::time::Duration;

use image::ImageFormat;
use serde_json::{Value, json};

use crate::support::function::{
    FORWARD_TO_STREAM, FunctionProcess, THUMBNAIL_ON_CREATE, free_port, request, wait_ready,
};
use crate::support::images::{dimensions, gradient};
use crate::support::s3_server::S3Server;
use crate::support::{BoxError, TestResult};

struct Service {
    url: String,
    s3: S3Server,
    process: FunctionProcess,
}

async fn start() -> Result<Service, BoxError> {
    let s3 = S3Server::start().await?;
    s3.create_bucket("cos-media").await?;
    let port = free_port()?;
    let mut env = s3.env();
    env.push(("PORT", port.to_string()));
    let process = FunctionProcess::spawn(THUMBNAIL_ON_CREATE, &["serve"], &env)?;
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{url}/healthz"), &process, Duration::from_secs(20)).await?;
    Ok(Service { url, s3, process })
}

fn ibm_cos_write(key: &str) -> Value {
    json!({"bucket": "cos-media", "endpoint": "", "key": key,
        "notification": {"bucket_name": "cos-media", "event_type": "Object:Write", "format": "2.0",
            "object_length": "1000", "object_name": key, "request_id": "r-1",
            "request_time": "2024-11-05T14:22:36.610Z"},
        "operation": "Object:Write"})
}

const BINARY_MODE: [(&str, &str); 5] = [
    ("ce-specversion", "1.0"),
    ("ce-type", "com.ibm.cloud.cos.document.write"),
    (
        "ce-source",
        "https://cloud.ibm.com/catalog/services/cloud-object-storage/cos-media",
    ),
    ("ce-id", "6abc7123-382d-4115-98e8-7568b2cc03f8"),
    ("content-type", "application/json"),
];

#[tokio::test(flavor = "multi_thread")]
async fn binary_mode_cloudevent_makes_a_thumbnail_and_answers_202_without_a_body() -> TestResult {
    let svc = start().await?;
    svc.s3
        .put(
            "cos-media",
            "uploads/Notes & <draft>.jpg",
            gradient(500, 1000, ImageFormat::Jpeg)?,
        )
        .await?;
    let body = ibm_cos_write("uploads/Notes & <draft>.jpg").to_string();
    let reply = request("POST", &format!("{}/", svc.url), &BINARY_MODE, body).await?;
    assert_eq!(reply.status, 202, "logs:\n{}", svc.process.logs());
    assert!(
        reply.body.is_empty(),
        "a 2xx body that is not a CloudEvent makes Knative answer 502"
    );
    let (thumb, _) = svc
        .s3
        .get(
            "cos-media",
            "thumbnails/uploads/Notes & <draft>.jpg/256.jpg",
        )
        .await?
        .ok_or("no thumbnail")?;
    assert_eq!(dimensions(&thumb)?, (128, 256));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn structured_cloudevents_and_raw_minio_webhooks_are_accepted() -> TestResult {
    let svc = start().await?;
    svc.s3
        .put("cos-media", "a b.png", gradient(64, 64, ImageFormat::Png)?)
        .await?;
    let structured = json!({"specversion": "1.0", "type": "com.amazonaws.s3.ObjectCreated:Put",
        "source": "aws:s3.us-east-1.cos-media", "id": "x-1",
        "data": {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "cos-media"}, "object": {"key": "a+b.png", "size": 10}}}});
    let reply = request(
        "POST",
        &svc.url,
        &[("content-type", "application/cloudevents+json")],
        structured.to_string(),
    )
    .await?;
    assert_eq!(reply.status, 202, "logs:\n{}", svc.process.logs());

    let minio = json!({"EventName": "s3:ObjectCreated:Put", "Key": "cos-media/a b.png",
        "Records": [{"eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
            "eventName": "s3:ObjectCreated:Put",
            "s3": {"bucket": {"name": "cos-media"}, "object": {"key": "a+b.png", "size": 10}}}]});
    let reply = request(
        "POST",
        &svc.url,
        &[("content-type", "application/json")],
        minio.to_string(),
    )
    .await?;
    assert_eq!(reply.status, 202);
    assert!(
        svc.s3
            .get("cos-media", "thumbnails/a b.png/256.jpg")
            .await?
            .is_some()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn status_codes_follow_the_knative_contract() -> TestResult {
    let svc = start().await?;
    let reply = request(
        "POST",
        &svc.url,
        &[("content-type", "application/json")],
        "{oops",
    )
    .await?;
    assert_eq!(reply.status, 400);
    let error: Value = serde_json::from_slice(&reply.body)?;
    assert!(
        error["error"]
            .as_str()
            .unwrap_or("")
            .contains("not valid JSON"),
        "{error}"
    );

    svc.s3
        .put("cos-media", "corrupt.jpg", b"\xff\xd8\xff nope".to_vec())
        .await?;
    let reply = request(
        "POST",
        &svc.url,
        &BINARY_MODE,
        ibm_cos_write("corrupt.jpg").to_string(),
    )
    .await?;
    assert_eq!(
        reply.status, 400,
        "permanent failures go to the dead-letter sink"
    );
    let body: Value = serde_json::from_slice(&reply.body)?;
    assert_eq!(body["records"][0]["status"], "permanent");
    let detail = body["records"][0]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("cos-media/corrupt.jpg cannot be thumbnailed"),
        "{detail}"
    );

    svc.s3
        .put(
            "cos-media",
            "later.jpg",
            gradient(50, 50, ImageFormat::Jpeg)?,
        )
        .await?;
    svc.s3.fail_next(1000);
    let reply = request(
        "POST",
        &svc.url,
        &BINARY_MODE,
        ibm_cos_write("later.jpg").to_string(),
    )
    .await?;
    assert_eq!(reply.status, 503, "retryable failures are redelivered");
    svc.s3.fail_next(0);

    let reply = request("GET", &format!("{}/healthz", svc.url), &[], "").await?;
    assert_eq!(reply.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_event_in_flight_finish() -> TestResult {
    let mut svc = start().await?;
    svc.s3
        .put(
            "cos-media",
            "in-flight.jpg",
            gradient(300, 300, ImageFormat::Jpeg)?,
        )
        .await?;
    svc.s3.stall(Duration::from_millis(1500));
    let url = svc.url.clone();
    let in_flight = tokio::spawn(async move {
        request(
            "POST",
            &url,
            &BINARY_MODE,
            ibm_cos_write("in-flight.jpg").to_string(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    svc.process.terminate()?;
    let reply = in_flight.await??;
    assert_eq!(reply.status, 202, "logs:\n{}", svc.process.logs());
    assert_eq!(svc.process.wait(Duration::from_secs(10)).await?, Some(0));
    svc.s3.stall(Duration::ZERO);
    assert!(
        svc.s3
            .get("cos-media", "thumbnails/in-flight.jpg/256.jpg")
            .await?
            .is_some()
    );
    Ok(())
}

/// What the sink behind forward-to-stream answers: a refusal that quotes a path on the sink's
/// side, as real upstreams do.
const UPSTREAM_BODY: &str = "quota exceeded for /srv/ingest/private/tenant-42";

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_answers_its_kind_and_an_incident_while_the_log_has_the_chain() -> TestResult {
    let app = axum::Router::new()
        .fallback(|| async { (axum::http::StatusCode::BAD_REQUEST, UPSTREAM_BODY) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink = listener.local_addr()?;
    let upstream = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let storage = tempfile::tempdir()?;
    std::fs::create_dir_all(storage.path().join("logs"))?;
    std::fs::write(storage.path().join("logs/app.log"), "one line\n")?;
    let port = free_port()?;
    let password = "sink-password-never-shown";
    let env = [
        ("PORT", port.to_string()),
        ("FORWARD_SINK", "k-sink".to_owned()),
        (
            "K_SINK",
            format!("http://ingest:{password}@{sink}/default/objects"),
        ),
        ("K_SINK_MAX_ATTEMPTS", "1".to_owned()),
        ("SOURCE_BUCKETS", "logs".to_owned()),
    ];
    let dir = storage.path().to_string_lossy().into_owned();
    let process = FunctionProcess::spawn(FORWARD_TO_STREAM, &["serve", "--storage", &dir], &env)?;
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{url}/healthz"), &process, Duration::from_secs(20)).await?;

    let notification = json!({"Records": [{"eventSource": "minio:s3",
        "eventName": "s3:ObjectCreated:Put",
        "s3": {"bucket": {"name": "logs"}, "object": {"key": "app.log", "size": 9}}}]});
    let reply = request(
        "POST",
        &url,
        &[("content-type", "application/json")],
        notification.to_string(),
    )
    .await?;
    upstream.abort();
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    assert_eq!(reply.status, 400, "{text}\nlogs:\n{}", process.logs());
    for hidden in [UPSTREAM_BODY, "/srv/ingest", password, &sink.to_string()] {
        assert!(
            !text.contains(hidden),
            "{hidden:?} reached the sender: {text}"
        );
    }
    let body: Value = serde_json::from_slice(&reply.body)?;
    assert_eq!(body["records"][0]["status"], "permanent");
    assert_eq!(
        body["records"][0]["detail"],
        "logs/app.log: permanent: the destination refused the messages; \
         sending it again will not help"
    );
    let incident = body["incident"].as_str().ok_or("no incident id")?;

    let logs = process.logs();
    let tied = logs
        .lines()
        .find(|l| l.contains(incident))
        .ok_or_else(|| format!("incident {incident} is not in the log:\n{logs}"))?;
    assert!(tied.contains(UPSTREAM_BODY), "{tied}");
    assert!(
        !logs.contains(password),
        "the sink's password in the log:\n{logs}"
    );
    Ok(())
}
