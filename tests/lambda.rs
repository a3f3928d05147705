//! The function binary under the Lambda runtime, driven through an in-process Lambda Runtime
//! API: SQS partial batch failures, S3 Batch result codes, invocation errors, deadlines.

use std::time::{Duration, Instant};

use image::ImageFormat;
use serde_json::{Value, json};

use crate::support::images::{dimensions, gradient};
use crate::support::lambda_api::{Answer, ThumbnailLambda};
use crate::support::{BoxError, TestResult};

async fn start(extra_env: &[(&'static str, String)]) -> Result<ThumbnailLambda, BoxError> {
    ThumbnailLambda::start(128, extra_env).await
}

fn s3_notification(bucket: &str, encoded_key: &str) -> Value {
    json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2024-11-05T14:22:31.493Z", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": encoded_key, "size": 1}}}]})
}

fn sqs_message(id: &str, body: String) -> Value {
    json!({"messageId": id, "receiptHandle": "rh", "body": body, "attributes": {},
        "messageAttributes": {}, "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:uploads", "awsRegion": "us-east-1"})
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_batch_reports_only_the_failed_messages() -> TestResult {
    let f = start(&[]).await?;
    f.s3.put(
        "photos",
        "ok one.jpg",
        gradient(640, 480, ImageFormat::Jpeg)?,
    )
    .await?;
    f.s3.put(
        "photos",
        "corrupt.jpg",
        b"\xff\xd8\xff\xe0 not really a jpeg".to_vec(),
    )
    .await?;
    let batch = json!({"Records": [
        sqs_message("m-ok", s3_notification("photos", "ok+one.jpg").to_string()),
        sqs_message("m-corrupt", s3_notification("photos", "corrupt.jpg").to_string()),
        sqs_message("m-garbage", "not json at all".to_owned()),
        sqs_message("m-gone", s3_notification("photos", "never-uploaded.jpg").to_string()),
    ]});
    let answer = f.invoke(batch).await?;
    assert_eq!(
        answer,
        Answer::Response(json!({"batchItemFailures": [
            {"itemIdentifier": "m-corrupt"}, {"itemIdentifier": "m-garbage"}]})),
        "logs:\n{}",
        f.process.logs()
    );
    let (thumb, _) =
        f.s3.get("photos", "thumbnails/ok one.jpg/256.jpg")
            .await?
            .ok_or("no thumbnail")?;
    assert_eq!(dimensions(&thumb)?, (256, 192));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_batch_answers_a_result_code_per_task() -> TestResult {
    let f = start(&[]).await?;
    f.s3.put(
        "photos",
        "backfill/a b.png",
        gradient(300, 200, ImageFormat::Png)?,
    )
    .await?;
    f.s3.put(
        "photos",
        "backfill/bad.png",
        b"\x89PNG\r\n\x1a\n broken".to_vec(),
    )
    .await?;
    let job = json!({"invocationSchemaVersion": "2.0", "invocationId": "inv-1",
        "job": {"id": "job-1", "userArguments": {}},
        "tasks": [
            {"taskId": "t-ok", "s3Key": "backfill/a+b.png", "s3VersionId": null, "s3Bucket": "photos"},
            {"taskId": "t-bad", "s3Key": "backfill/bad.png", "s3VersionId": null, "s3Bucket": "photos"}]});
    let Answer::Response(response) = f.invoke(job).await? else {
        return Err(format!("invocation failed; logs:\n{}", f.process.logs()).into());
    };
    assert_eq!(response["invocationSchemaVersion"], "2.0");
    assert_eq!(response["invocationId"], "inv-1");
    assert_eq!(response["treatMissingKeysAs"], "PermanentFailure");
    let results = response["results"].as_array().ok_or("no results")?;
    let codes: Vec<(&str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["taskId"].as_str().unwrap_or(""),
                r["resultCode"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [("t-ok", "Succeeded"), ("t-bad", "PermanentFailure")]
    );
    assert!(
        results[1]["resultString"]
            .as_str()
            .unwrap_or("")
            .contains("backfill/bad.png")
    );

    f.s3.fail_next(1000);
    let job = json!({"invocationSchemaVersion": "1.0", "invocationId": "inv-2", "job": {"id": "job-1"},
        "tasks": [{"taskId": "t-later", "s3Key": "backfill/a+b.png", "s3VersionId": null,
            "s3BucketArn": "arn:aws:s3:::photos"}]});
    let Answer::Response(response) = f.invoke(job).await? else {
        return Err("invocation failed".into());
    };
    assert_eq!(response["results"][0]["resultCode"], "TemporaryFailure");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_invocations_fail_with_a_classified_error() -> TestResult {
    let f = start(&[]).await?;
    f.s3.put("photos", "bad.jpg", b"\xff\xd8\xff garbage".to_vec())
        .await?;
    let answer = f.invoke(s3_notification("photos", "bad.jpg")).await?;
    let Answer::Error {
        error_type,
        message,
    } = answer
    else {
        return Err(format!("corrupt image reported as success: {answer:?}").into());
    };
    assert_eq!(error_type, "bucketfn.Permanent");
    assert!(
        message.contains("photos/bad.jpg cannot be thumbnailed"),
        "{message}"
    );

    let answer = f.invoke(json!({"hello": "world"})).await?;
    let Answer::Error {
        error_type,
        message,
    } = answer
    else {
        return Err("unknown payload reported as success".into());
    };
    assert_eq!(error_type, "bucketfn.InvalidEvent");
    assert!(message.contains("keys [hello]"), "{message}");

    f.s3.put("photos", "fine.jpg", gradient(100, 100, ImageFormat::Jpeg)?)
        .await?;
    f.s3.fail_next(1000);
    let answer = f.invoke(s3_notification("photos", "fine.jpg")).await?;
    assert!(
        matches!(&answer, Answer::Error { error_type, .. } if error_type == "bucketfn.Retryable"),
        "{answer:?}"
    );

    f.s3.fail_next(0);
    let answer = f.invoke(s3_notification("photos", "fine.jpg")).await?;
    assert!(matches!(answer, Answer::Response(_)), "{answer:?}");
    let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "photos"});
    assert!(matches!(f.invoke(test_event).await?, Answer::Response(_)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn events_still_running_at_the_deadline_are_reported_retryable() -> TestResult {
    let f = start(&[]).await?;
    f.s3.put("photos", "slow.jpg", gradient(100, 100, ImageFormat::Jpeg)?)
        .await?;
    f.s3.stall(Duration::from_secs(10));
    let batch = json!({"Records": [sqs_message("m-slow", s3_notification("photos", "slow.jpg").to_string())]});
    let began = Instant::now();
    let answer = f.api.invoke(batch, Duration::from_millis(2500)).await?;
    let took = began.elapsed();
    f.s3.stall(Duration::ZERO);
    assert_eq!(
        answer,
        Answer::Response(json!({"batchItemFailures": [{"itemIdentifier": "m-slow"}]}))
    );
    assert!(
        took < Duration::from_millis(2500),
        "answered after the deadline: {took:?}"
    );
    assert!(
        f.process
            .logs()
            .contains("not finished before the invocation deadline")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_stops_start_up_naming_every_variable() -> TestResult {
    let mut f = start(&[
        ("THUMBNAIL_SIZES", "huge".to_owned()),
        ("MAX_SOURCE_PIXELS", "0".to_owned()),
        ("BATCH_CONCURRENCY", "-2".to_owned()),
    ])
    .await?;
    let code = f.process.wait(Duration::from_secs(10)).await?;
    assert_eq!(code, Some(2));
    let logs = f.process.logs();
    for variable in ["THUMBNAIL_SIZES", "MAX_SOURCE_PIXELS", "BATCH_CONCURRENCY"] {
        assert!(logs.contains(variable), "{variable} not named in:\n{logs}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn events_for_buckets_the_function_does_not_serve_are_refused_permanently() -> TestResult {
    let f = start(&[("SOURCE_BUCKETS", "photos".to_owned())]).await?;
    // The object exists and the credentials reach it: only the sources keep it out.
    f.s3.create_bucket("payroll").await?;
    f.s3.put(
        "payroll",
        "scan.jpg",
        gradient(100, 100, ImageFormat::Jpeg)?,
    )
    .await?;
    f.s3.put("photos", "ok.jpg", gradient(100, 100, ImageFormat::Jpeg)?)
        .await?;
    let answer = f.invoke(s3_notification("payroll", "scan.jpg")).await?;
    assert_eq!(
        answer,
        Answer::Error {
            error_type: "bucketfn.Permanent".to_owned(),
            message: "bucket \"payroll\" is not one this function serves (SOURCE_BUCKETS)"
                .to_owned(),
        },
        "logs:\n{}",
        f.process.logs()
    );
    let batch = json!({"Records": [
        sqs_message("m-ok", s3_notification("photos", "ok.jpg").to_string()),
        sqs_message("m-foreign", s3_notification("payroll", "scan.jpg").to_string()),
    ]});
    let answer = f.invoke(batch).await?;
    assert_eq!(
        answer,
        Answer::Response(json!({"batchItemFailures": [{"itemIdentifier": "m-foreign"}]}))
    );
    assert!(
        f.s3.get("photos", "thumbnails/ok.jpg/256.jpg")
            .await?
            .is_some()
    );
    assert_eq!(
        f.s3.get("payroll", "thumbnails/scan.jpg/256.jpg").await?,
        None,
        "a thumbnail was made in a bucket the function does not serve"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn without_source_buckets_the_function_does_not_start_under_lambda() -> TestResult {
    // An empty value is no value: neither SOURCE_BUCKETS nor SOURCE_BUCKET names a bucket.
    let mut f = start(&[("SOURCE_BUCKETS", String::new())]).await?;
    let code = f.process.wait(Duration::from_secs(10)).await?;
    assert_eq!(code, Some(2));
    let logs = f.process.logs();
    assert!(
        logs.contains("SOURCE_BUCKETS: is required against S3"),
        "{logs}"
    );
    Ok(())
}
