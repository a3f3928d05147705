//! What the functions rely on a store for, checked the way they meet it: the conditional-write
//! and conditional-delete probe against stores that enforce the conditions and stores that
//! ignore them, and buckets that do not exist, at start-up and in events.

use std::collections::BTreeMap;
use std::sync::Arc;

use bucketfn::storage::{CheckedStore, Condition, S3Store, StoreError};
use bucketfn::{NewObject, ObjectStore};
use bytes::Bytes;

use crate::support::TestResult;
use crate::support::s3_server::S3Server;

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
