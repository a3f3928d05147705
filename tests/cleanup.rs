//! cleanup-on-remove against MediaHaven as a local HTTP server and thumbnails on a real S3
//! server: collaterals before the essence, 404 as done, busy answers retryable, stale removes
//! deleting nothing.

use std::sync::Arc;

use bucketfn::storage::{LocalStore, S3Store};
use bucketfn::{Done, Env, Handler, Invocation, NewObject, ObjectEvent, ObjectStore};
use cleanup_on_remove::{CleanupOnRemove, Config};
use serde_json::{Value, json};

use crate::support::archive_apis::{
    ArchiveApis, CLIENT_ID, CLIENT_SECRET, Failure, Matching, PASSWORD, Route, StubRecord, USERNAME,
};
use crate::support::notifications::only_event;
use crate::support::s3_server::S3Server;
use crate::support::{BoxError, TestResult, workspace_root};

fn config(apis: &ArchiveApis, targets: &str) -> Result<Config, BoxError> {
    Ok(Env::from_pairs([
        ("CLEANUP_TARGETS", targets.to_owned()),
        ("MEDIAHAVEN_URL", apis.url.clone()),
        ("MEDIAHAVEN_CLIENT_ID", CLIENT_ID.to_owned()),
        ("MEDIAHAVEN_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
        ("MEDIAHAVEN_USERNAME", USERNAME.to_owned()),
        ("MEDIAHAVEN_PASSWORD", PASSWORD.to_owned()),
        ("MEDIAHAVEN_DELETE_DELAY_MS", "5".to_owned()),
        ("HTTP_TIMEOUT_SECS", "2".to_owned()),
    ])
    .load()?)
}

fn removed(bucket: &str, encoded_key: &str) -> Result<ObjectEvent, BoxError> {
    let notification = json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3",
        "eventTime": "2024-11-05T14:22:31.493Z", "eventName": "ObjectRemoved:Delete",
        "s3": {"bucket": {"name": bucket}, "object": {"key": encoded_key,
            "sequencer": "0055AED6DCD90281E5"}}}]});
    only_event(notification)
}

/// An essence of `media/clip.mxf` with one real fragment, a collateral linked to that
/// fragment's local id, and an unrelated record.
fn archive() -> Vec<StubRecord> {
    vec![
        StubRecord::new(
            "ESSENCE",
            false,
            &[("s3_object_key", "in/clip.mxf"), ("s3_bucket", "media")],
        ),
        StubRecord::new(
            "FRAGMENT",
            true,
            &[
                ("s3_object_key", "in/clip.mxf"),
                ("s3_bucket", "media"),
                ("dc_identifier_localid", "M1"),
            ],
        ),
        StubRecord::new("SUBS", false, &[("dc_identifier_localid", "M1")]),
        StubRecord::new(
            "OTHER",
            false,
            &[("s3_object_key", "in/clip.mxf"), ("s3_bucket", "elsewhere")],
        ),
    ]
}

async fn start(
    targets: &str,
) -> Result<(ArchiveApis, tempfile::TempDir, CleanupOnRemove), BoxError> {
    let apis = ArchiveApis::start().await?;
    for record in archive() {
        apis.add_record(record);
    }
    let dir = tempfile::tempdir()?;
    // The bucket exists and the removed object is gone from it.
    std::fs::create_dir(dir.path().join("media"))?;
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().to_path_buf()));
    let handler = CleanupOnRemove::new(config(&apis, targets)?, store)?;
    Ok((apis, dir, handler))
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_collaterals_then_the_essence_naming_bucket_and_key() -> TestResult {
    let (apis, _dir, handler) = start("mediahaven").await?;
    let outcome = handler
        .handle(&removed("media", "in/clip.mxf")?, &Invocation::default())
        .await?;
    assert!(
        matches!(&outcome, Done::Completed(what) if what.contains("essence ESSENCE and 1 collateral")),
        "{outcome}"
    );
    let deletes = apis.seen().deletes;
    let ids: Vec<&str> = deletes.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["SUBS", "ESSENCE"]);
    assert!(
        deletes[1]
            .1
            .contains("bucket \"media\" and key \"in/clip.mxf\""),
        "{}",
        deletes[1].1
    );
    assert!(deletes[0].1.contains("local_id \"M1\""), "{}", deletes[0].1);
    let left: Vec<String> = apis.records().into_iter().map(|r| r.fragment_id).collect();
    assert_eq!(left, ["FRAGMENT", "OTHER"]);
    assert_eq!(
        apis.seen().queries[0],
        "+(s3_object_key:\"in/clip.mxf\") +(s3_bucket:\"media\")"
    );

    // Redelivered: nothing left in MediaHaven for it.
    let again = handler
        .handle(&removed("media", "in/clip.mxf")?, &Invocation::default())
        .await?;
    assert!(matches!(again, Done::Skipped(_)), "{again}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_on_delete_counts_as_done() -> TestResult {
    let (apis, _dir, handler) = start("mediahaven").await?;
    apis.fail_next(Route::Delete, &[Failure::Status(404)]);
    let outcome = handler
        .handle(&removed("media", "in/clip.mxf")?, &Invocation::default())
        .await?;
    assert!(
        matches!(&outcome, Done::Completed(what) if what.contains("0 collateral")),
        "{outcome}"
    );
    let ids: Vec<String> = apis.seen().deletes.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["ESSENCE"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn records_a_loose_search_proposes_for_other_objects_are_left_alone() -> TestResult {
    let (apis, _dir, handler) = start("mediahaven").await?;
    // An index that folds case and matches parts of values proposes all of these for
    // media/in/clip.mxf, and M10's and M2's collaterals for M1.
    apis.set_matching(Matching::Loose);
    for (id, is_fragment, fields) in [
        (
            "BUCKET",
            false,
            &[("s3_bucket", "media-old"), ("s3_object_key", "in/clip.mxf")][..],
        ),
        (
            "CASE",
            false,
            &[("s3_bucket", "media"), ("s3_object_key", "IN/Clip.mxf")],
        ),
        (
            "SPACE",
            false,
            &[("s3_bucket", "media"), ("s3_object_key", "in/clip.mxf ")],
        ),
        (
            "PREFIX",
            false,
            &[("s3_bucket", "media"), ("s3_object_key", "old/in/clip.mxf")],
        ),
        (
            "LOOSE-FRAGMENT",
            true,
            &[
                ("s3_bucket", "media"),
                ("s3_object_key", "in/clip.mxf.bak"),
                ("dc_identifier_localid", "M2"),
            ],
        ),
        ("ITS-SUBS", false, &[("dc_identifier_localid", "M2")]),
        ("NEAR-SUBS", false, &[("dc_identifier_localid", "M10")]),
    ] {
        apis.add_record(StubRecord::new(id, is_fragment, fields));
    }
    let outcome = handler
        .handle(&removed("media", "in/clip.mxf")?, &Invocation::default())
        .await?;
    assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
    let ids: Vec<String> = apis.seen().deletes.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["SUBS", "ESSENCE"]);

    // A key no record has exactly: the loose answer deletes nothing.
    let outcome = handler
        .handle(&removed("media", "in/clip")?, &Invocation::default())
        .await?;
    assert!(matches!(outcome, Done::Skipped(_)), "{outcome}");
    assert_eq!(apis.seen().deletes.len(), 2);
    let left: Vec<String> = apis.records().into_iter().map(|r| r.fragment_id).collect();
    assert_eq!(
        left,
        [
            "FRAGMENT",
            "OTHER",
            "BUCKET",
            "CASE",
            "SPACE",
            "PREFIX",
            "LOOSE-FRAGMENT",
            "ITS-SUBS",
            "NEAR-SUBS"
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_mediahaven_is_retryable_and_a_retry_finishes_the_job() -> TestResult {
    let (apis, _dir, handler) = start("mediahaven").await?;
    // The token first: later calls reuse the one token.
    for failure in [
        (Route::Token, 500),
        (Route::Search, 429),
        (Route::Delete, 503),
    ] {
        apis.fail_next(failure.0, &[Failure::Status(failure.1)]);
        let err = match handler
            .handle(&removed("media", "in/clip.mxf")?, &Invocation::default())
            .await
        {
            Ok(done) => return Err(format!("{failure:?} gave {done}").into()),
            Err(e) => e,
        };
        assert!(err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("removing the MediaHaven records for media/in/clip.mxf failed")
                && text.contains(&format!("MediaHaven answered {}", failure.1)),
            "{text}"
        );
    }
    let outcome = handler
        .handle(&removed("media", "in/clip.mxf")?, &Invocation::default())
        .await?;
    assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
    let ids: Vec<String> = apis.seen().deletes.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["SUBS", "ESSENCE"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remove_older_than_the_object_now_there_deletes_nothing() -> TestResult {
    let (apis, dir, handler) = start("mediahaven,derivatives").await?;
    let store = LocalStore::new(dir.path().to_path_buf());
    // The key was written again after the remove the event reports (event time 2024).
    for key in ["in/clip.mxf", "thumbnails/in/clip.mxf/256.jpg"] {
        store
            .put(
                "media",
                key,
                NewObject {
                    body: b"again".to_vec().into(),
                    content_type: "video/mxf".to_owned(),
                    metadata: Default::default(),
                },
            )
            .await?;
    }
    let outcome = handler
        .handle(&removed("media", "in/clip.mxf")?, &Invocation::default())
        .await?;
    assert!(
        matches!(&outcome, Done::Skipped(why) if why.contains("stale")),
        "{outcome}"
    );
    assert!(apis.seen().deletes.is_empty());
    assert_eq!(apis.seen().tokens_issued, 0);
    assert!(
        store
            .head("media", "thumbnails/in/clip.mxf/256.jpg")
            .await
            .is_ok()
    );
    Ok(())
}

/// A thumbnail bucket of its own holds each source bucket's derivatives under its name.
#[tokio::test(flavor = "multi_thread")]
async fn thumbnails_on_s3_are_removed_by_their_names() -> TestResult {
    let server = S3Server::start().await?;
    server.create_bucket("photos").await?;
    server.create_bucket("thumbs").await?;
    for key in [
        "t/photos/a + b.jpg/256.jpg",
        "t/photos/a + b.jpg/64.webp",
        "t/photos/a + b.jpg/readme.txt",
        "t/photos/a + b.jpg/c.jpg/256.jpg",
    ] {
        server.put("thumbs", key, b"t".to_vec()).await?;
    }
    let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(server.client(1)));
    let config: Config =
        Env::from_pairs([("THUMBNAIL_BUCKET", "thumbs"), ("THUMBNAIL_PREFIX", "t/")]).load()?;
    let handler = CleanupOnRemove::new(config, Arc::clone(&store))?;
    let outcome = handler
        .handle(&removed("photos", "a+%2B+b.jpg")?, &Invocation::default())
        .await?;
    assert!(
        matches!(&outcome, Done::Completed(what) if what.contains("deleted 2 thumbnail(s)")),
        "{outcome}"
    );
    let left: Vec<String> = store
        .list("thumbs", "", None, 10)
        .await?
        .objects
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        left,
        [
            "t/photos/a + b.jpg/c.jpg/256.jpg",
            "t/photos/a + b.jpg/readme.txt"
        ]
    );
    Ok(())
}

/// A sample of meemoo's gateway (`events/viaa/`), with `edit` applied to its one record.
fn viaa_removed(sample: &str, edit: impl FnOnce(&mut Value)) -> Result<ObjectEvent, BoxError> {
    let path = workspace_root().join("events/viaa").join(sample);
    let mut notification: Value = serde_json::from_slice(&std::fs::read(path)?)?;
    edit(&mut notification["Records"][0]);
    only_event(notification)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_removal_takes_the_key_as_sent_and_its_collaterals_first() -> TestResult {
    let apis = ArchiveApis::start().await?;
    let key = "2019+12/clip+1 %2B.MXF";
    let object = [("s3_bucket", "MAM_HighresVideo"), ("s3_object_key", key)];
    apis.add_record(StubRecord::new("ESSENCE", false, &object));
    let mut fragment = StubRecord::new("FRAGMENT", true, &object);
    fragment
        .fields
        .insert("dc_identifier_localid".to_owned(), "MEDIA-0001".to_owned());
    apis.add_record(fragment);
    for (id, collateral_key) in [
        ("OPEN-SUBS", "openOt/MEDIA-0001/subtitles.srt"),
        ("CLOSED-SUBS", "closedOt/MEDIA-0001/subtitles.srt"),
    ] {
        apis.add_record(StubRecord::new(
            id,
            false,
            &[
                ("s3_bucket", "mam-collaterals"),
                ("s3_object_key", collateral_key),
                ("dc_identifier_localid", "MEDIA-0001"),
                ("object_use", "subtitle"),
            ],
        ));
    }
    // What form decoding would have made of the key: another object, left alone.
    apis.add_record(StubRecord::new(
        "FORM-DECODED",
        false,
        &[
            ("s3_bucket", "MAM_HighresVideo"),
            ("s3_object_key", "2019 12/clip 1 +.MXF"),
        ],
    ));
    let dir = tempfile::tempdir()?;
    for bucket in ["MAM_HighresVideo", "mam-collaterals"] {
        std::fs::create_dir(dir.path().join(bucket))?;
    }
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().to_path_buf()));
    let handler = CleanupOnRemove::new(config(&apis, "mediahaven")?, store)?;

    let event = viaa_removed("removed.json", |record| {
        record["s3"]["object"]["key"] = json!(key);
    })?;
    assert_eq!(event.event_name, "ObjectRemoved:*");
    let outcome = handler.handle(&event, &Invocation::default()).await?;
    assert!(
        matches!(&outcome, Done::Completed(what) if what.contains("essence ESSENCE and 2 collateral")),
        "{outcome}"
    );
    let seen = apis.seen();
    assert_eq!(
        seen.queries[0],
        format!("+(s3_object_key:\"{key}\") +(s3_bucket:\"MAM_HighresVideo\")")
    );
    let ids: Vec<&str> = seen.deletes.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["OPEN-SUBS", "CLOSED-SUBS", "ESSENCE"]);
    assert!(
        seen.deletes[2]
            .1
            .contains(&format!("bucket \"MAM_HighresVideo\" and key \"{key}\"")),
        "{}",
        seen.deletes[2].1
    );

    // The original's own sample: a collateral removed from its bucket takes only its record.
    apis.add_record(StubRecord::new(
        "XIF",
        false,
        &[
            ("s3_bucket", "mam-collaterals"),
            ("s3_object_key", "TYPE/MEDIAID/blabla.xif"),
            ("dc_identifier_localid", "MEDIAID"),
        ],
    ));
    let outcome = handler
        .handle(
            &viaa_removed("removed-collateral.json", |_| {})?,
            &Invocation::default(),
        )
        .await?;
    assert!(
        matches!(&outcome, Done::Completed(what) if what.contains("essence XIF and 0 collateral")),
        "{outcome}"
    );
    let left: Vec<String> = apis.records().into_iter().map(|r| r.fragment_id).collect();
    assert_eq!(left, ["FRAGMENT", "FORM-DECODED"]);
    Ok(())
}
