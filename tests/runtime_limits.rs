//! What one request may cost, through the real binary: `serve` closes a connection whose
//! headers never finish and refuses bodies and record counts over their limits (413 naming
//! the limit, before any handler runs); under Lambda the same bound on records holds, and
//! Managed Instances' concurrent mode runs invocations side by side in one process.

use std::time::Duration;

use image::ImageFormat;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::function::{
    FunctionProcess, THUMBNAIL_ON_CREATE, free_port, request, wait_ready,
};
use crate::support::images::gradient;
use crate::support::lambda_api::{Answer, ThumbnailLambda};
use crate::support::s3_server::S3Server;
use crate::support::{BoxError, TestResult};

const OPS_TOKEN: &str = "ops-token-for-the-tests-0123";

struct Served {
    url: String,
    port: u16,
    s3: S3Server,
    process: FunctionProcess,
}

/// `thumbnail-on-create serve` over an S3 server with a `photos` bucket.
async fn serve(extra_env: &[(&'static str, &str)]) -> Result<Served, BoxError> {
    let s3 = S3Server::start().await?;
    s3.create_bucket("photos").await?;
    let port = free_port()?;
    let mut env = s3.env();
    env.push(("PORT", port.to_string()));
    env.push(("LISTEN_ADDRESS", "127.0.0.1".to_owned()));
    env.push(("OPS_TOKEN", OPS_TOKEN.to_owned()));
    env.extend(extra_env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let process = FunctionProcess::spawn(THUMBNAIL_ON_CREATE, &["serve"], &env)?;
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{url}/healthz"), &process, Duration::from_secs(20)).await?;
    Ok(Served {
        url,
        port,
        s3,
        process,
    })
}

/// A MinIO webhook notification carrying one record per key.
fn minio_notification(keys: &[&str]) -> String {
    let records: Vec<Value> = keys
        .iter()
        .map(|key| {
            json!({"eventVersion": "2.0", "eventSource": "minio:s3",
                "eventName": "s3:ObjectCreated:Put",
                "s3": {"bucket": {"name": "photos"}, "object": {"key": key, "size": 10}}})
        })
        .collect();
    json!({ "Records": records }).to_string()
}

fn error_of(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_headers_never_finish_is_closed() -> TestResult {
    let svc = serve(&[("HEADER_READ_TIMEOUT_SECS", "1")]).await?;
    let mut stream = TcpStream::connect(("127.0.0.1", svc.port)).await?;
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n")
        .await?;
    // Whatever the server says before closing (a 408, or nothing), the connection must end.
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection is still open; logs:\n{}",
        svc.process.logs()
    );
    let reply = request("GET", &format!("{}/healthz", svc.url), &[], "").await?;
    assert_eq!(reply.status, 200, "other clients are still served");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_max_body_bytes_is_413_naming_the_limit() -> TestResult {
    let svc = serve(&[("MAX_BODY_BYTES", "1024")]).await?;
    let keys: Vec<String> = (0..40).map(|n| format!("photo-{n}.jpg")).collect();
    let body = minio_notification(&keys.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(body.len() > 1024);
    let reply = request(
        "POST",
        &svc.url,
        &[("content-type", "application/json")],
        body,
    )
    .await?;
    assert_eq!(reply.status, 413, "logs:\n{}", svc.process.logs());
    assert_eq!(
        error_of(&reply.body),
        "the request body is over the limit of 1024 bytes (MAX_BODY_BYTES)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_records_are_413_naming_the_limit_and_no_handler_runs() -> TestResult {
    let svc = serve(&[("MAX_RECORDS_PER_REQUEST", "2")]).await?;
    for key in ["a.png", "b.png", "c.png"] {
        svc.s3
            .put("photos", key, gradient(32, 32, ImageFormat::Png)?)
            .await?;
    }
    let reply = request(
        "POST",
        &svc.url,
        &[("content-type", "application/json")],
        minio_notification(&["a.png", "b.png", "c.png"]),
    )
    .await?;
    assert_eq!(reply.status, 413, "logs:\n{}", svc.process.logs());
    assert_eq!(
        error_of(&reply.body),
        "the payload carries 3 records, over the limit of 2 (MAX_RECORDS_PER_REQUEST)"
    );
    for key in ["a.png", "b.png", "c.png"] {
        let thumbnail = format!("thumbnails/{key}/256.jpg");
        assert!(svc.s3.get("photos", &thumbnail).await?.is_none(), "{key}");
    }
    let bearer = format!("Bearer {OPS_TOKEN}");
    let stats = request(
        "GET",
        &format!("{}/events/stats", svc.url),
        &[("authorization", &bearer)],
        "",
    )
    .await?;
    let stats: Value = serde_json::from_slice(&stats.body)?;
    assert_eq!(stats["by_outcome"], json!({}), "{stats}");

    let reply = request(
        "POST",
        &svc.url,
        &[("content-type", "application/json")],
        minio_notification(&["a.png", "b.png"]),
    )
    .await?;
    assert_eq!(reply.status, 202, "logs:\n{}", svc.process.logs());
    Ok(())
}

/// The binary under the Lambda runtime, with the template's memory size.
#[tokio::test(flavor = "multi_thread")]
async fn work_past_the_request_timeout_is_503_naming_the_deadline() -> TestResult {
    let svc = serve(&[("REQUEST_TIMEOUT_SECS", "1")]).await?;
    svc.s3
        .put("photos", "slow.png", gradient(64, 64, ImageFormat::Png)?)
        .await?;
    // Every S3 request now outlasts the request timeout.
    svc.s3.stall(Duration::from_secs(3));
    let reply = request(
        "POST",
        &svc.url,
        &[("content-type", "application/json")],
        minio_notification(&["slow.png"]),
    )
    .await;
    svc.s3.stall(Duration::ZERO);
    let reply = reply?;
    assert_eq!(reply.status, 503, "logs:\n{}", svc.process.logs());
    let body: Value = serde_json::from_slice(&reply.body)?;
    let detail = body["records"][0]["detail"].as_str().unwrap_or_default();
    assert_eq!(
        detail, "photos/slow.png: retryable: not finished before the invocation deadline",
        "{body}"
    );
    Ok(())
}

async fn lambda(extra_env: &[(&'static str, &str)]) -> Result<ThumbnailLambda, BoxError> {
    let env: Vec<(&'static str, String)> = extra_env
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .collect();
    ThumbnailLambda::start(1024, &env).await
}

fn sqs_message(id: &str, key: &str) -> Value {
    json!({"messageId": id, "receiptHandle": "rh", "body": minio_notification(&[key]),
        "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:uploads", "awsRegion": "us-east-1"})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lambda_payload_with_too_many_records_is_a_permanent_error_naming_the_limit() -> TestResult
{
    let f = lambda(&[("MAX_RECORDS_PER_REQUEST", "2")]).await?;
    let batch = json!({"Records": [
        sqs_message("m-1", "a.png"), sqs_message("m-2", "b.png"), sqs_message("m-3", "c.png")]});
    let before = f.s3.requests();
    let answer = f.api.invoke(batch, Duration::from_secs(30)).await?;
    assert_eq!(
        answer,
        Answer::Error {
            error_type: "bucketfn.Permanent".to_owned(),
            message: "the payload carries 3 records, over the limit of 2 (MAX_RECORDS_PER_REQUEST)"
                .to_owned(),
        },
        "logs:\n{}",
        f.process.logs()
    );
    assert_eq!(f.s3.requests(), before, "a handler ran");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_instances_run_invocations_side_by_side_in_one_process() -> TestResult {
    let f = lambda(&[("AWS_LAMBDA_MAX_CONCURRENCY", "2")]).await?;
    f.s3.put("photos", "slow.jpg", gradient(64, 64, ImageFormat::Jpeg)?)
        .await?;
    f.s3.stall(Duration::from_secs(8));
    let stalled = f.api.invoke(
        json!({"Records": [sqs_message("m-slow", "slow.jpg")]}),
        Duration::from_secs(30),
    );
    let quick = f.api.invoke(
        json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "photos"}),
        Duration::from_secs(30),
    );
    let mut stalled = std::pin::pin!(stalled);
    // The stalled invocation is sent first; one at a time, the second would wait for it.
    let quick = tokio::select! {
        biased;
        answer = &mut stalled => {
            return Err(format!("the stalled invocation answered first: {answer:?}; logs:\n{}",
                f.process.logs()).into());
        }
        answer = quick => answer?,
    };
    assert!(matches!(quick, Answer::Response(_)), "{quick:?}");
    f.s3.stall(Duration::ZERO);
    let answer = stalled.await?;
    assert_eq!(
        answer,
        Answer::Response(json!({"batchItemFailures": []})),
        "logs:\n{}",
        f.process.logs()
    );
    Ok(())
}
