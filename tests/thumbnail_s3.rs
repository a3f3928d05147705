//! thumbnail-on-create through aws-sdk-s3 against a real S3 protocol server: hostile keys,
//! missing objects, corrupt images, images known by their first bytes, and a store answering
//! 503.

use std::sync::Arc;

use bucketfn::storage::S3Store;
use bucketfn::{Done, Handler, Invocation, ObjectStore};
use image::ImageFormat;
use thumbnail_on_create::{Config, Thumbnailer};

use crate::support::TestResult;
use crate::support::images::{dimensions, gradient};
use crate::support::notifications::s3_created;
use crate::support::s3_server::S3Server;

fn thumbnailer(server: &S3Server, max_attempts: u32) -> Thumbnailer {
    let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(server.client(max_attempts)));
    Thumbnailer::new(Config::default(), store)
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_thumbnails_for_hostile_keys() -> TestResult {
    let server = S3Server::start().await?;
    server.create_bucket("photos").await?;
    let handler = thumbnailer(&server, 1);
    let jpeg = gradient(800, 600, ImageFormat::Jpeg)?;
    for (stored, encoded) in [
        (
            "2024/summer beach + café ☀.jpg",
            "2024/summer+beach+%2B+caf%C3%A9+%E2%98%80.jpg",
        ),
        (
            "<script>alert(1)</script> & \"quotes\".png",
            "%3Cscript%3Ealert%281%29%3C%2Fscript%3E+%26+%22quotes%22.png",
        ),
        ("100%25 literal.jpg", "100%2525+literal.jpg"),
    ] {
        server.put("photos", stored, jpeg.clone()).await?;
        let outcome = handler
            .handle(&s3_created("photos", encoded)?, &Invocation::default())
            .await?;
        assert!(matches!(outcome, Done::Completed(_)), "{stored}: {outcome}");
        let output = format!("thumbnails/{stored}/256.jpg");
        let (body, content_type) = server.get("photos", &output).await?.ok_or(output)?;
        assert_eq!(content_type, "image/jpeg");
        assert_eq!(dimensions(&body)?, (256, 192));
    }
    Ok(())
}

/// The IBM Cloud tutorial's upload, `ibmcloud cos object-put --key dog$RANDOM`, has no
/// extension: its first bytes make it an image. A large log without one is skipped.
#[tokio::test(flavor = "multi_thread")]
async fn an_image_without_an_extension_is_thumbnailed_and_other_objects_are_skipped() -> TestResult
{
    let server = S3Server::start().await?;
    server.create_bucket("photos").await?;
    let handler = thumbnailer(&server, 1);
    server
        .put("photos", "dog12345", gradient(800, 600, ImageFormat::Jpeg)?)
        .await?;
    server
        .put(
            "photos",
            "app-log",
            "GET /index.html 200\n".repeat(50_000).into_bytes(),
        )
        .await?;
    let outcome = handler
        .handle(&s3_created("photos", "dog12345")?, &Invocation::default())
        .await?;
    assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
    let (body, _) = server
        .get("photos", "thumbnails/dog12345/256.jpg")
        .await?
        .ok_or("no thumbnail of dog12345")?;
    assert_eq!(dimensions(&body)?, (256, 192));
    let outcome = handler
        .handle(&s3_created("photos", "app-log")?, &Invocation::default())
        .await?;
    assert!(
        matches!(&outcome, Done::Skipped(why) if why.contains("not an image")),
        "{outcome}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_object_is_skipped() -> TestResult {
    let server = S3Server::start().await?;
    server.create_bucket("photos").await?;
    let outcome = thumbnailer(&server, 1)
        .handle(&s3_created("photos", "gone.jpg")?, &Invocation::default())
        .await?;
    assert!(
        matches!(&outcome, Done::Skipped(why) if why.contains("no longer exists")),
        "{outcome}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_image_is_permanent() -> TestResult {
    let server = S3Server::start().await?;
    server.create_bucket("photos").await?;
    let mut jpeg = gradient(400, 300, ImageFormat::Jpeg)?;
    jpeg.truncate(600);
    server.put("photos", "broken.jpg", jpeg).await?;
    let err = thumbnailer(&server, 1)
        .handle(&s3_created("photos", "broken.jpg")?, &Invocation::default())
        .await
        .err()
        .ok_or("corrupt image accepted")?;
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("photos/broken.jpg cannot be thumbnailed"),
        "{err}"
    );
    assert!(
        server
            .get("photos", "thumbnails/broken.jpg/256.jpg")
            .await?
            .is_none()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_answering_503_is_retryable() -> TestResult {
    let server = S3Server::start().await?;
    server.create_bucket("photos").await?;
    server
        .put("photos", "a.png", gradient(300, 300, ImageFormat::Png)?)
        .await?;
    server.fail_next(100);
    let err = thumbnailer(&server, 2)
        .handle(&s3_created("photos", "a.png")?, &Invocation::default())
        .await
        .err()
        .ok_or("503 reported as success")?;
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("looking up photos/a.png failed: HTTP 503"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_slow_down_is_absorbed_by_sdk_retries() -> TestResult {
    let server = S3Server::start().await?;
    server.create_bucket("photos").await?;
    server
        .put("photos", "a.png", gradient(300, 300, ImageFormat::Png)?)
        .await?;
    let before = server.requests();
    server.fail_next(1);
    let outcome = thumbnailer(&server, 3)
        .handle(&s3_created("photos", "a.png")?, &Invocation::default())
        .await?;
    assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
    // The source's HEAD (refused, then retried), the thumbnail's HEAD, the GET, the PUT.
    assert_eq!(server.requests() - before, 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn moving_keeps_the_source_when_a_thumbnail_cannot_be_written() -> TestResult {
    let server = S3Server::start().await?;
    server.create_bucket("photos").await?;
    server
        .put(
            "photos",
            "move me.jpg",
            gradient(640, 480, ImageFormat::Jpeg)?,
        )
        .await?;
    let config = Config {
        sizes: vec![128, 256],
        delete_source: true,
        ..Config::default()
    };
    let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(server.client(1)));
    let mover = Thumbnailer::new(config, store);

    server.fail_next_of(http::Method::PUT, 1);
    let err = mover
        .handle(
            &s3_created("photos", "move+me.jpg")?,
            &Invocation::default(),
        )
        .await
        .err()
        .ok_or("a failed write reported as success")?;
    assert!(err.is_retryable(), "{err}");
    assert!(
        server.get("photos", "move me.jpg").await?.is_some(),
        "source deleted"
    );

    // The redelivery completes the move.
    let outcome = mover
        .handle(
            &s3_created("photos", "move+me.jpg")?,
            &Invocation::default(),
        )
        .await?;
    assert!(
        matches!(&outcome, Done::Completed(what) if what.contains("deleted the source")),
        "{outcome}"
    );
    assert!(server.get("photos", "move me.jpg").await?.is_none());
    for size in [128, 256] {
        let key = format!("thumbnails/move me.jpg/{size}.jpg");
        assert!(server.get("photos", &key).await?.is_some(), "{key}");
    }
    Ok(())
}
