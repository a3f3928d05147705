//! What the functions rely on a store for, checked the way they meet it: the conditional-write
//! and conditional-delete probe against stores that enforce the conditions and stores that
//! ignore them, and buckets that do not exist, at start-up and in events.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bucketfn::storage::{CheckedStore, Condition, S3Store, StoreError};
use bucketfn::{NewObject, ObjectStore};
use bytes::Bytes;

use crate::support::function::{FunctionProcess, THUMBNAIL_ON_CREATE, free_port, wait_ready};
use crate::support::s3_server::S3Server;
use crate::support::{TestResult, workspace_root};

fn claim() -> NewObject {
    NewObject {
        body: Bytes::from_static(b"holder=a"),
        content_type: "text/plain".to_owned(),
        metadata: BTreeMap::new(),
    }
}

/// Every key in `bucket`, as the store lists them.
async fn all_keys(store: &S3Store, bucket: &str) -> Result<Vec<String>, StoreError> {
    let page = store.list(bucket, "", None, 1000).await?;
    Ok(page.objects.into_iter().map(|o| o.key).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_ignores_write_conditions_is_found_out_and_keeps_no_probe() -> TestResult {
    let server = S3Server::start().await?;
    server.create_bucket("bucket-b").await?;
    server.ignore_conditions(true);
    let s3 = S3Store::new(server.client(1));
    let store = CheckedStore::new(Arc::new(s3.clone()));
    let err = store
        .put_if("bucket-b", "claims/x.json", claim(), Condition::Absent)
        .await
        .err()
        .ok_or("a claim was written where conditions are ignored")?;
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unsupported { .. }), "{text}");
    assert!(
        text.contains(
            "bucket \"bucket-b\": the store ignores If-None-Match / If-Match on writes (a probe \
             object written twice was accepted twice); claims, leases and checkpoints cannot be \
             kept here, so the conditional write of \"claims/x.json\" is refused"
        ),
        "{text}"
    );
    assert_eq!(all_keys(&s3, "bucket-b").await?, Vec::<String>::new());
    // The same server enforcing them: the claim is written, once.
    server.ignore_conditions(false);
    let store = CheckedStore::new(Arc::new(s3.clone()));
    store
        .put_if("bucket-b", "claims/x.json", claim(), Condition::Absent)
        .await?;
    let again = store
        .put_if("bucket-b", "claims/x.json", claim(), Condition::Absent)
        .await
        .err();
    assert!(
        matches!(again, Some(StoreError::ConditionFailed { .. })),
        "{again:?}"
    );
    assert_eq!(all_keys(&s3, "bucket-b").await?, ["claims/x.json"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_on_an_etag_happen_only_where_the_store_makes_them_conditional() -> TestResult {
    // s3s-fs 0.14.1 deletes whatever If-Match says: the probe must notice.
    let server = S3Server::start().await?;
    server.create_bucket("bucket-b").await?;
    let s3 = S3Store::new(server.client(1));
    let store = CheckedStore::new(Arc::new(s3.clone()));
    store.put("bucket-b", "in/photo.jpg", claim()).await?;
    let read = store.head("bucket-b", "in/photo.jpg").await?.read_version();
    let read = read.ok_or("no etag")?;
    let err = store
        .delete_if("bucket-b", "in/photo.jpg", read.clone())
        .await
        .err()
        .ok_or("an unconditional delete passed for a conditional one")?;
    let text = err.to_string();
    assert!(
        text.contains(
            "the store ignores If-Match on DELETE (a probe object was deleted under a wrong \
             etag); a move cannot delete its source safely"
        ),
        "{text}"
    );
    assert_eq!(all_keys(&s3, "bucket-b").await?, ["in/photo.jpg"]);

    // A store that does as S3 documents: the wrong etag keeps the object, the right one deletes.
    let server = S3Server::start().await?;
    server.conditional_deletes(true);
    server.create_bucket("bucket-b").await?;
    let s3 = S3Store::new(server.client(1));
    let store = CheckedStore::new(Arc::new(s3.clone()));
    store.put("bucket-b", "in/photo.jpg", claim()).await?;
    let stale = Condition::EtagIs("0123456789abcdef0123456789abcdef".to_owned());
    let err = store
        .delete_if("bucket-b", "in/photo.jpg", stale)
        .await
        .err();
    assert!(
        matches!(err, Some(StoreError::ConditionFailed { .. })),
        "{err:?}"
    );
    assert_eq!(all_keys(&s3, "bucket-b").await?, ["in/photo.jpg"]);
    let read = store.head("bucket-b", "in/photo.jpg").await?.read_version();
    store
        .delete_if("bucket-b", "in/photo.jpg", read.ok_or("no etag")?)
        .await?;
    assert_eq!(all_keys(&s3, "bucket-b").await?, Vec::<String>::new());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_bucket_the_store_lacks_stops_the_start_naming_it() -> TestResult {
    let server = S3Server::start().await?;
    server.create_bucket("photos").await?;
    let mut env = server.env();
    env.push(("PORT", free_port()?.to_string()));
    env.push(("SOURCE_BUCKETS", "photos,no-such-bucket/in/".to_owned()));
    let mut process = FunctionProcess::spawn(THUMBNAIL_ON_CREATE, &["serve"], &env)?;
    let code = process.wait(Duration::from_secs(20)).await?;
    let logs = process.logs();
    assert_eq!(code, Some(2), "{logs}");
    assert!(
        logs.contains(
            "start-up failed: SOURCE_BUCKETS names bucket \"no-such-bucket\", which cannot be \
             used: bucket \"no-such-bucket\" does not exist at this store"
        ),
        "{logs}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_cannot_answer_at_start_up_is_warned_about_and_the_start_goes_on() -> TestResult
{
    let server = S3Server::start().await?;
    server.create_bucket("photos").await?;
    server.fail_next_of(http::Method::HEAD, 1000);
    let port = free_port()?;
    let mut env = server.env();
    env.push(("PORT", port.to_string()));
    env.push(("SOURCE_BUCKETS", "photos".to_owned()));
    let process = FunctionProcess::spawn(THUMBNAIL_ON_CREATE, &["serve"], &env)?;
    let ready = format!("http://127.0.0.1:{port}/healthz");
    wait_ready(&ready, &process, Duration::from_secs(20)).await?;
    let logs = process.logs();
    assert!(
        logs.contains("The store could not confirm a configured bucket"),
        "{logs}"
    );
    assert!(logs.contains("HTTP 503"), "{logs}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_for_a_bucket_the_store_lacks_is_permanent_not_skipped() -> TestResult {
    let server = S3Server::start().await?;
    let home = tempfile::tempdir()?;
    let mut command = Command::new(THUMBNAIL_ON_CREATE);
    command
        .args(["invoke", "events/aws-s3/created.json"])
        .current_dir(workspace_root())
        .env_clear()
        .envs(server.env())
        .env("HOME", home.path())
        .env("SOURCE_BUCKETS", "*");
    let out = tokio::task::spawn_blocking(move || command.output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("permanent\t"), "{stdout}");
    assert!(
        stdout.contains("bucket \"media-uploads\" does not exist at this store"),
        "{stdout}"
    );
    Ok(())
}
