//! bucketfn's S3 store against a real S3 protocol server: metadata with any Unicode, listing
//! in pages after a key (with `+` and non-ASCII keys), idempotent deletes, streaming reads.

use std::collections::BTreeMap;

use bucketfn::storage::{Condition, S3Store, StoreError};
use bucketfn::{NewObject, ObjectStore};
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::support::TestResult;
use crate::support::s3_server::S3Server;

fn object(body: &'static [u8]) -> NewObject {
    NewObject {
        body: Bytes::from_static(body),
        content_type: "text/plain".to_owned(),
        metadata: BTreeMap::from([
            (
                "source-key".to_owned(),
                "photos/café +1 100%.jpg".to_owned(),
            ),
            ("source-etag".to_owned(), "abc123".to_owned()),
        ]),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_round_trips_through_ascii_headers() -> TestResult {
    let server = S3Server::start().await?;
    server.create_bucket("bucket-b").await?;
    let store = S3Store::new(server.client(1));
    store.put("bucket-b", "k", object(b"hello")).await?;
    let info = store.head("bucket-b", "k").await?;
    assert_eq!(info.size, 5);
    assert_eq!(info.content_type.as_deref(), Some("text/plain"));
    assert_eq!(info.metadata, object(b"").metadata);
    assert!(info.etag.as_deref().is_some_and(|e| !e.contains('"')));
    let stored = store.get("bucket-b", "k", 5).await?;
    assert_eq!((stored.body.as_ref(), stored.info), (&b"hello"[..], info));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_pages_after_a_key_including_plus_and_unicode_keys() -> TestResult {
    let server = S3Server::start().await?;
    server.create_bucket("bucket-b").await?;
    let store = S3Store::new(server.client(1));
    let keys = ["p/a+b.jpg", "p/a b.jpg", "p/é.png", "p/z", "q/other"];
    for key in keys {
        store.put("bucket-b", key, object(b"x")).await?;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list("bucket-b", "p/", after.as_deref(), 2).await?;
        seen.extend(page.objects.iter().map(|o| o.key.clone()));
        after = page.objects.last().map(|o| o.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, ["p/a b.jpg", "p/a+b.jpg", "p/z", "p/é.png"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_is_idempotent_and_head_of_a_missing_object_is_not_found() -> TestResult {
    let server = S3Server::start().await?;
    server.create_bucket("bucket-b").await?;
    let store = S3Store::new(server.client(1));
    store.put("bucket-b", "gone soon", object(b"x")).await?;
    store.delete("bucket-b", "gone soon").await?;
    store.delete("bucket-b", "gone soon").await?;
    let err = store
        .head("bucket-b", "gone soon")
        .await
        .err()
        .ok_or("still there")?;
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn open_streams_the_body() -> TestResult {
    let server = S3Server::start().await?;
    server.create_bucket("bucket-b").await?;
    let store = S3Store::new(server.client(1));
    let body: Vec<u8> = (0..200_000u32).flat_map(|n| n.to_le_bytes()).collect();
    server.put("bucket-b", "big.bin", body.clone()).await?;
    let (info, mut reader) = store.open("bucket-b", "big.bin").await?;
    assert_eq!(info.size, body.len() as u64);
    let mut read = Vec::new();
    reader.read_to_end(&mut read).await?;
    assert_eq!(read, body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_writes_refuse_a_taken_key_and_a_stale_etag() -> TestResult {
    let server = S3Server::start().await?;
    server.create_bucket("bucket-b").await?;
    let store = S3Store::new(server.client(1));
    store
        .put_if("bucket-b", "claim", object(b"first"), Condition::Absent)
        .await?;
    let err = store
        .put_if("bucket-b", "claim", object(b"second"), Condition::Absent)
        .await
        .err()
        .ok_or("second claim won")?;
    assert!(matches!(err, StoreError::ConditionFailed { .. }), "{err}");
    let etag = store
        .head("bucket-b", "claim")
        .await?
        .etag
        .ok_or("no etag")?;
    let stale = Condition::EtagIs("0123456789abcdef0123456789abcdef".to_owned());
    let err = store
        .put_if("bucket-b", "claim", object(b"third"), stale)
        .await
        .err()
        .ok_or("stale etag won")?;
    assert!(matches!(err, StoreError::ConditionFailed { .. }), "{err}");
    store
        .put_if(
            "bucket-b",
            "claim",
            object(b"fourth"),
            Condition::EtagIs(etag),
        )
        .await?;
    assert_eq!(
        store.get("bucket-b", "claim", 100).await?.body.as_ref(),
        b"fourth"
    );
    Ok(())
}
