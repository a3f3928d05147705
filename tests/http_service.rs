//! The function binary as a Knative / Code Engine service (`serve`): CloudEvents in binary and
//! structured mode, raw notifications, status codes by the Knative contract, graceful shutdown.

use std::time::Duration;

use image::ImageFormat;
use serde_json::{Value, json};

use crate::support::function::{
    FunctionProcess, THUMBNAIL_ON_CREATE, free_port, request, wait_ready,
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
    assert!(
        body["records"][0]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("corrupt.jpg")
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
