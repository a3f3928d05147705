//! sidecar-on-create against a real FTP server, the archive APIs as local HTTP servers and a
//! real S3 server: the whole flow, duplicates (sequential and concurrent), partial failures
//! that are retried without a second PID, and how each service's failures are classified.

use std::sync::Arc;
use std::time::Duration;

use bucketfn::sink::MemoryPublisher;
use bucketfn::storage::{LocalStore, MemoryStore, S3Store};
use bucketfn::{Done, Env, Handler, HandlerError, Invocation, NewObject, ObjectEvent, ObjectStore};
use serde_json::{Value, json};
use sidecar_on_create::claim::Claims;
use sidecar_on_create::{Config, SidecarOnCreate};

use crate::support::archive_apis::{
    ArchiveApis, CLIENT_ID, CLIENT_SECRET, Failure, Matching, PASSWORD, Route, StubRecord, USERNAME,
};
use crate::support::ftp_server::FtpServer;
use crate::support::function::free_port;
use crate::support::notifications::only_event;
use crate::support::s3_server::S3Server;
use crate::support::{BoxError, TestResult, workspace_root};

const KEY: &str = "191213-VAN statement.MXF";
const MD5: &str = "1234abcd1234abcd1234abcd1234abcd";

/// The services of one test, and a way to make handlers against them.
struct Rig {
    apis: ArchiveApis,
    ftp_root: tempfile::TempDir,
    ftp_port: u16,
    ftp: Option<FtpServer>,
    publisher: Arc<MemoryPublisher>,
    /// The source buckets: an event is only archived while its object exists.
    media: Arc<MemoryStore>,
}

impl Rig {
    async fn start() -> Result<Self, BoxError> {
        let mut rig = Self::without_ftp().await?;
        rig.start_ftp().await?;
        Ok(rig)
    }

    /// Everything but the FTP server, whose port stays closed until [`Rig::start_ftp`].
    async fn without_ftp() -> Result<Self, BoxError> {
        let apis = ArchiveApis::start().await?;
        apis.organisation("OR-rf5kf25", Some("VRT"));
        let ftp_root = tempfile::tempdir()?;
        for dir in ["VRT/DISK-SHARE-EVENTS", "VRT/COLLATERALS"] {
            std::fs::create_dir_all(ftp_root.path().join(dir))?;
        }
        Ok(Self {
            apis,
            ftp_root,
            ftp_port: free_port()?,
            ftp: None,
            publisher: Arc::new(MemoryPublisher::new()),
            media: Arc::new(MemoryStore::new()),
        })
    }

    async fn start_ftp(&mut self) -> Result<(), BoxError> {
        self.ftp = Some(FtpServer::start_on(self.ftp_root.path(), self.ftp_port).await?);
        Ok(())
    }

    fn ftp(&self) -> Result<&FtpServer, BoxError> {
        self.ftp
            .as_ref()
            .ok_or_else(|| "the FTP server is not running".into())
    }

    fn config(&self, extra: &[(&str, &str)]) -> Result<Config, BoxError> {
        let mut pairs: Vec<(String, String)> = [
            ("MEDIAHAVEN_URL", self.apis.url.clone()),
            ("MEDIAHAVEN_CLIENT_ID", CLIENT_ID.to_owned()),
            ("MEDIAHAVEN_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
            ("MEDIAHAVEN_USERNAME", USERNAME.to_owned()),
            ("MEDIAHAVEN_PASSWORD", PASSWORD.to_owned()),
            ("PID_SERVICE_URL", self.apis.pid_url()),
            ("ORGANISATIONS_API_URL", self.apis.organisations_url()),
            ("FTP_HOST", format!("127.0.0.1:{}", self.ftp_port)),
            ("FTP_USER", "tra".to_owned()),
            ("FTP_PASSWORD", "tra-password".to_owned()),
            ("FTP_TIMEOUT_SECS", "10".to_owned()),
            (
                "AMQP_URL",
                "amqp://unused:unused@127.0.0.1:1/%2f".to_owned(),
            ),
            ("AMQP_ROUTING_KEY", "filetransfer".to_owned()),
            ("HTTP_TIMEOUT_SECS", "2".to_owned()),
            ("COLLATERAL_BUCKETS", "mam-collaterals".to_owned()),
            ("APP_ENVIRONMENT", "qas".to_owned()),
            (
                "SIDECAR_DESTINATIONS",
                "qas/VRT/collateral=COLLATERALS".to_owned(),
            ),
            // Tenant and domain come from here, whatever the events say.
            (
                "TENANT_BY_BUCKET",
                "MAM_HighresVideo=OR-rf5kf25,mam-collaterals=OR-rf5kf25".to_owned(),
            ),
            ("S3_DOMAIN", "s3.meemoo.test".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        pairs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Ok(Env::from_pairs(pairs).load()?)
    }

    fn handler(
        &self,
        store: Arc<dyn ObjectStore>,
        extra: &[(&str, &str)],
    ) -> Result<SidecarOnCreate, BoxError> {
        let publisher = Arc::clone(&self.publisher) as Arc<dyn bucketfn::sink::Publisher>;
        SidecarOnCreate::new(self.config(extra)?, store, publisher)
    }

    fn media(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.media) as Arc<dyn ObjectStore>
    }

    /// Puts an object (with its md5 in its metadata, as the gateway stores it) in the source
    /// buckets and returns the gateway's event for it, which names `tenant`.
    async fn upload(&self, bucket: &str, key: &str, tenant: &str) -> Result<ObjectEvent, BoxError> {
        let event = gateway_event(bucket, key, tenant)?;
        let essence = NewObject {
            body: b"essence".to_vec().into(),
            content_type: "application/mxf".to_owned(),
            metadata: [("md5sum".to_owned(), MD5.to_owned())].into(),
        };
        self.media.put(&event.bucket, &event.key, essence).await?;
        Ok(event)
    }
}

/// A created event as meemoo's gateway sends it: domain, tenant in the bucket metadata, md5
/// in the object metadata.
fn gateway_event(bucket: &str, key: &str, tenant: &str) -> Result<ObjectEvent, BoxError> {
    let notification = json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3",
        "eventTime": "2019-12-12T00:39:15.049Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "Object Owner CN+OR-id"},
        "s3": {"domain": {"name": "s3.meemoo.test"},
            "bucket": {"name": bucket, "metadata": {"tenant": tenant}},
            "object": {"key": key, "size": 4248725, "eTag": "77930bf06b236e089a22a255e6b28377",
                "metadata": {"md5sum": MD5}}}}]});
    only_event(notification)
}

/// A created event as AWS S3 sends it: no domain, no metadata.
fn aws_event(bucket: &str, key: &str) -> Result<ObjectEvent, BoxError> {
    let notification = json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3",
        "eventTime": "2024-11-05T14:22:31.493Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 5}}}]});
    only_event(notification)
}

async fn expect_err(
    handler: &SidecarOnCreate,
    event: &ObjectEvent,
) -> Result<HandlerError, BoxError> {
    match handler.handle(event, &Invocation::default()).await {
        Ok(done) => Err(format!("expected a failure, got {done}").into()),
        Err(e) => Ok(e),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn archives_an_essence_once_however_often_it_is_delivered() -> TestResult {
    let rig = Rig::start().await?;
    let handler = rig.handler(rig.media(), &[])?;
    let mut event = rig
        .upload("MAM_HighresVideo", "191213-VAN+statement.MXF", "or-rf5kf25")
        .await?;
    // The correlation id of the message the event came in, as a broker runtime sets it.
    event.correlation_id = Some("a1b2c3".to_owned());

    let outcome = handler.handle(&event, &Invocation::default()).await?;
    assert!(
        matches!(&outcome, Done::Completed(what) if what.contains("pid0000001")),
        "{outcome}"
    );
    let again = handler.handle(&event, &Invocation::default()).await?;
    assert!(
        matches!(&again, Done::Skipped(why) if why.contains("archived already")),
        "{again}"
    );

    let seen = rig.apis.seen();
    assert_eq!(seen.pids, ["pid0000001"]);
    assert_eq!(
        rig.ftp()?.files(),
        ["/VRT/DISK-SHARE-EVENTS/pid0000001.xml"]
    );
    let xml = String::from_utf8(
        rig.ftp()?
            .file("/VRT/DISK-SHARE-EVENTS/pid0000001.xml")
            .ok_or("no sidecar")?,
    )?;
    for part in [
        "<PID>pid0000001</PID>",
        "<CP>VRT</CP>",
        "<CP_id>OR-rf5kf25</CP_id>",
        "<s3_domain>s3.meemoo.test</s3_domain>",
        &format!("<s3_object_key>{KEY}</s3_object_key>"),
        &format!("<md5>{MD5}</md5>"),
    ] {
        assert!(xml.contains(part), "{part} missing in\n{xml}");
    }

    let published = rig.publisher.published();
    assert_eq!(published.len(), 1);
    let message = &published[0];
    assert_eq!(message.content_type, "application/json");
    assert_eq!(message.correlation_id.as_deref(), Some("a1b2c3"));
    let body: Value = serde_json::from_slice(&message.body)?;
    assert_eq!(
        body,
        json!({"source": {"domain": {"name": "s3.meemoo.test"},
                "bucket": {"name": "MAM_HighresVideo"}, "object": {"key": KEY}},
            "destination": {"path": "/mnt/STORAGE/INGEST/SIDECAR/VRT/DISK-SHARE-EVENTS/pid0000001.MXF",
                "host": format!("ftp://127.0.0.1:{}", rig.ftp_port)}})
    );
    // The md5 took part in the search for an earlier ingest in this bucket, and the key was
    // quoted.
    assert_eq!(
        seen.queries,
        [format!(
            "+(s3_object_key:\"{KEY}\" md5:\"{MD5}\") +(s3_bucket:\"MAM_HighresVideo\")"
        )]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_deleted_before_its_event_arrives_is_not_archived() -> TestResult {
    let rig = Rig::start().await?;
    let handler = rig.handler(rig.media(), &[])?;
    // The gateway's event carries metadata and an etag, so only the store can tell.
    let event = gateway_event("MAM_HighresVideo", "gone.mxf", "OR-rf5kf25")?;
    let outcome = handler.handle(&event, &Invocation::default()).await?;
    assert!(
        matches!(&outcome, Done::Skipped(why) if why.contains("no longer exists")),
        "{outcome}"
    );
    let seen = rig.apis.seen();
    assert!(seen.pids.is_empty(), "{:?}", seen.pids);
    assert!(rig.ftp()?.files().is_empty());
    assert!(rig.publisher.published().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_bucket_is_a_bucket_checked_at_start_up() -> TestResult {
    let rig = Rig::start().await?;
    assert!(rig.handler(rig.media(), &[])?.buckets().is_empty());
    let handler = rig.handler(rig.media(), &[("CLAIM_BUCKET", "archive-claims")])?;
    assert_eq!(handler.buckets(), ["archive-claims"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_the_store_does_not_have_is_a_permanent_error_not_a_skip() -> TestResult {
    let rig = Rig::start().await?;
    let handler = rig.handler(rig.media(), &[])?;
    let event = rig
        .upload("MAM_HighresVideo", "clip.mxf", "OR-rf5kf25")
        .await?;
    rig.media.remove_bucket("MAM_HighresVideo");
    let err = expect_err(&handler, &event).await?;
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("MAM_HighresVideo"), "{err}");
    assert!(rig.apis.seen().pids.is_empty());
    assert!(rig.publisher.published().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_domain_tenant_etag_and_md5_do_not_reach_the_sidecar_or_the_request() -> TestResult
{
    let rig = Rig::start().await?;
    rig.apis.organisation("OR-attack1", Some("ATTACKER"));
    let handler = rig.handler(rig.media(), &[])?;
    let mut event = rig
        .upload("MAM_HighresVideo", "clip.mxf", "OR-attack1")
        .await?;
    event.domain = Some("s3.attacker.example".to_owned());
    event.etag = Some("forged".to_owned());
    event.metadata.insert(
        "md5sum".to_owned(),
        "ffffffffffffffffffffffffffffffff".to_owned(),
    );
    let outcome = handler.handle(&event, &Invocation::default()).await?;
    assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
    let xml = String::from_utf8(
        rig.ftp()?
            .file("/VRT/DISK-SHARE-EVENTS/pid0000001.xml")
            .ok_or("no sidecar under the configured tenant's CP")?,
    )?;
    for part in [
        "<CP>VRT</CP>",
        "<CP_id>OR-rf5kf25</CP_id>",
        "<s3_domain>s3.meemoo.test</s3_domain>",
        &format!("<md5>{MD5}</md5>"),
    ] {
        assert!(xml.contains(part), "{part} missing in\n{xml}");
    }
    for forged in ["attack", "ATTACKER", "ffffffff"] {
        assert!(!xml.contains(forged), "{forged} in\n{xml}");
    }
    let published = rig.publisher.published();
    let body: Value = serde_json::from_slice(&published[0].body)?;
    assert_eq!(body["source"]["domain"]["name"], "s3.meemoo.test");
    // The claim is kept under the store's etag, not the event's: its folder is the one of
    // the stored version, and the same object with its true etag is done.
    let stored_etag = rig.media.head("MAM_HighresVideo", "clip.mxf").await?.etag;
    let claims = Claims::new(rig.media(), rig.config(&[])?.claims);
    let expected = claims.locate("MAM_HighresVideo", "clip.mxf", stored_etag.as_deref());
    let forged = claims.locate("MAM_HighresVideo", "clip.mxf", Some("forged"));
    let claim_keys: Vec<String> = rig.media.keys().into_iter().map(|(_, k)| k).collect();
    assert!(
        claim_keys.iter().any(|k| k.contains(expected.id())),
        "{claim_keys:?}"
    );
    assert!(
        !claim_keys.iter().any(|k| k.contains(forged.id())),
        "{claim_keys:?}"
    );
    let mut honest = event.clone();
    honest.etag = stored_etag;
    let again = handler.handle(&honest, &Invocation::default()).await?;
    assert!(
        matches!(&again, Done::Skipped(why) if why.contains("archived already")),
        "{again}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn without_s3_domain_no_domain_the_event_names_is_used() -> TestResult {
    let rig = Rig::start().await?;
    let handler = rig.handler(rig.media(), &[("S3_DOMAIN", "")])?;
    let event = rig
        .upload("MAM_HighresVideo", "clip.mxf", "OR-rf5kf25")
        .await?;
    let err = expect_err(&handler, &event).await?;
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("no domain: S3_DOMAIN is not set (the event says \"s3.meemoo.test\""),
        "{err}"
    );
    assert!(rig.apis.seen().pids.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_duplicates_archive_once() -> TestResult {
    let rig = Rig::start().await?;
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().to_path_buf()));
    let event = gateway_event("MAM_HighresVideo", "clip.mxf", "OR-rf5kf25")?;
    let essence = NewObject {
        body: b"essence".to_vec().into(),
        content_type: "application/mxf".to_owned(),
        metadata: Default::default(),
    };
    store.put(&event.bucket, &event.key, essence).await?;
    let handler = Arc::new(rig.handler(store, &[])?);
    // A slow PID service keeps the first delivery inside its claim while the second arrives.
    rig.apis
        .fail_next(Route::Pid, &[Failure::Stall(Duration::from_millis(400))]);
    let deliveries: Vec<_> = (0..2)
        .map(|_| {
            let (handler, event) = (Arc::clone(&handler), event.clone());
            tokio::spawn(async move { handler.handle(&event, &Invocation::default()).await })
        })
        .collect();
    let mut completed = 0;
    let mut retry_later = 0;
    for delivery in deliveries {
        match delivery.await? {
            Ok(Done::Completed(_)) => completed += 1,
            Err(e) if e.is_retryable() && e.to_string().contains("another delivery") => {
                retry_later += 1
            }
            other => return Err(format!("unexpected outcome {other:?}").into()),
        }
    }
    assert_eq!((completed, retry_later), (1, 1));
    // The platform redelivers the one that was told to retry: nothing more happens.
    let redelivered = handler.handle(&event, &Invocation::default()).await?;
    assert!(matches!(redelivered, Done::Skipped(_)), "{redelivered}");
    assert_eq!(rig.apis.seen().pids.len(), 1);
    assert_eq!(rig.publisher.published().len(), 1);
    assert_eq!(rig.ftp()?.files().len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_on_s3_reads_metadata_by_head_and_archives_once() -> TestResult {
    let rig = Rig::start().await?;
    let server = S3Server::start().await?;
    server.create_bucket("media").await?;
    server
        .put("media", "in/clip one.mp4", b"video".to_vec())
        .await?;
    let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(server.client(1)));
    let handler = rig.handler(
        Arc::clone(&store),
        &[
            ("TENANT_BY_BUCKET", "media=OR-rf5kf25"),
            ("S3_DOMAIN", "s3.test"),
        ],
    )?;
    let event = aws_event("media", "in/clip+one.mp4")?;
    let first = handler.handle(&event, &Invocation::default()).await?;
    assert!(matches!(first, Done::Completed(_)), "{first}");
    let second = handler.handle(&event, &Invocation::default()).await?;
    assert!(matches!(second, Done::Skipped(_)), "{second}");
    assert_eq!(rig.apis.seen().pids.len(), 1);
    assert_eq!(rig.publisher.published().len(), 1);
    // The claim lives in the store under its prefix; an event for it is not archived.
    let claims = store.list("media", ".bucketfn-claims/", None, 10).await?;
    let claim = claims.objects.first().ok_or("no claim")?.key.clone();
    assert!(claim.ends_with("/done"), "{claim}");
    let own = handler
        .handle(&aws_event("media", &claim)?, &Invocation::default())
        .await?;
    assert!(
        matches!(&own, Done::Skipped(why) if why.contains("claims")),
        "{own}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ftp_down_then_up_completes_with_the_same_pid() -> TestResult {
    let mut rig = Rig::without_ftp().await?;
    let handler = rig.handler(rig.media(), &[])?;
    let event = rig
        .upload("MAM_HighresVideo", "clip.mxf", "OR-rf5kf25")
        .await?;
    let err = expect_err(&handler, &event).await?;
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("putting the sidecar of MAM_HighresVideo/clip.mxf"),
        "{err}"
    );
    assert!(rig.publisher.published().is_empty());

    rig.start_ftp().await?;
    let outcome = handler.handle(&event, &Invocation::default()).await?;
    assert!(
        matches!(&outcome, Done::Completed(what) if what.contains("pid0000001")),
        "{outcome}"
    );
    assert_eq!(rig.apis.seen().pids, ["pid0000001"]);
    assert_eq!(rig.publisher.published().len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_down_then_up_publishes_once_with_the_same_pid() -> TestResult {
    let rig = Rig::start().await?;
    let handler = rig.handler(rig.media(), &[])?;
    let event = rig
        .upload("MAM_HighresVideo", "clip.mxf", "OR-rf5kf25")
        .await?;
    rig.publisher.set_unavailable(true);
    let err = expect_err(&handler, &event).await?;
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("publishing the file-transfer request for MAM_HighresVideo/clip.mxf"),
        "{err}"
    );
    assert_eq!(
        rig.ftp()?.files(),
        ["/VRT/DISK-SHARE-EVENTS/pid0000001.xml"]
    );

    rig.publisher.set_unavailable(false);
    let outcome = handler.handle(&event, &Invocation::default()).await?;
    assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
    assert_eq!(rig.apis.seen().pids.len(), 1);
    assert_eq!(rig.publisher.published().len(), 1);
    assert_eq!(
        rig.ftp()?.files(),
        ["/VRT/DISK-SHARE-EVENTS/pid0000001.xml"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn items_already_in_mediahaven_are_skipped_with_quoted_keys() -> TestResult {
    let rig = Rig::start().await?;
    let handler = rig.handler(rig.media(), &[])?;
    let hostile = "a \"quoted\" key: with colon.mxf";
    rig.apis
        .add_record(ingested("F1", &[("s3_object_key", hostile)]));
    let event = rig
        .upload(
            "MAM_HighresVideo",
            "a+%22quoted%22+key%3A+with+colon.mxf",
            "OR-rf5kf25",
        )
        .await?;
    let outcome = handler.handle(&event, &Invocation::default()).await?;
    assert!(
        matches!(&outcome, Done::Skipped(why) if why.contains("in MediaHaven already")),
        "{outcome}"
    );
    // A key that differs only by what escaping protects does not match.
    let near = rig
        .upload("MAM_HighresVideo", "a+%22quoted%22+key.mxf", "OR-rf5kf25")
        .await?;
    assert!(matches!(
        handler.handle(&near, &Invocation::default()).await?,
        Done::Completed(_)
    ));
    assert_eq!(rig.apis.seen().pids.len(), 1);
    Ok(())
}

/// An essence record as an earlier ingest from `MAM_HighresVideo` for `OR-rf5kf25` left it,
/// with `fields` added or replacing those.
fn ingested(fragment_id: &str, fields: &[(&str, &str)]) -> StubRecord {
    let mut record = StubRecord::new(
        fragment_id,
        false,
        &[("s3_bucket", "MAM_HighresVideo"), ("CP_id", "OR-rf5kf25")],
    );
    for (name, value) in fields {
        record
            .fields
            .insert((*name).to_owned(), (*value).to_owned());
    }
    record
}

#[tokio::test(flavor = "multi_thread")]
async fn an_earlier_ingest_counts_only_from_the_same_bucket_and_tenant() -> TestResult {
    let rig = Rig::start().await?;
    // An index that folds case and matches parts of values proposes all of these.
    rig.apis.set_matching(Matching::Loose);
    for record in [
        ingested(
            "OTHER-BUCKET",
            &[
                ("s3_bucket", "MAM_HighresVideo-old"),
                ("s3_object_key", "clip.mxf"),
            ],
        ),
        ingested(
            "OTHER-TENANT",
            &[("CP_id", "OR-zz99zz9"), ("s3_object_key", "clip.mxf")],
        ),
        StubRecord::new(
            "NO-TENANT",
            false,
            &[
                ("s3_bucket", "MAM_HighresVideo"),
                ("s3_object_key", "clip.mxf"),
            ],
        ),
        ingested(
            "OTHER-BUCKET-MD5",
            &[("s3_bucket", "elsewhere MAM_HighresVideo"), ("md5", MD5)],
        ),
        ingested("OTHER-TENANT-MD5", &[("CP_id", "OR-zz99zz9"), ("md5", MD5)]),
        ingested("CASE", &[("s3_object_key", "CLIP.mxf")]),
        ingested("SPACE", &[("s3_object_key", " clip.mxf")]),
        ingested("PREFIX", &[("s3_object_key", "old/clip.mxf")]),
    ] {
        rig.apis.add_record(record);
    }
    if let Some(record) = rig
        .apis
        .records()
        .iter()
        .find(|r| r.fragment_id == "NO-TENANT")
    {
        let mut without = record.clone();
        without.fields.remove("CP_id");
        without.fragment_id = "NO-TENANT-AT-ALL".to_owned();
        rig.apis.add_record(without);
    }
    let handler = rig.handler(rig.media(), &[])?;
    let event = rig
        .upload("MAM_HighresVideo", "clip.mxf", "OR-rf5kf25")
        .await?;
    let outcome = handler.handle(&event, &Invocation::default()).await?;
    assert!(matches!(outcome, Done::Completed(_)), "{outcome}");

    // The same object from an earlier ingest for this tenant (whatever case its id was
    // written in) is the one that makes a later one skip.
    rig.apis.add_record(ingested(
        "SAME",
        &[("s3_object_key", "again.mxf"), ("CP_id", "or-RF5KF25")],
    ));
    let again = rig
        .upload("MAM_HighresVideo", "again.mxf", "OR-rf5kf25")
        .await?;
    let outcome = handler.handle(&again, &Invocation::default()).await?;
    assert!(
        matches!(&outcome, Done::Skipped(why) if why.contains("in MediaHaven already")),
        "{outcome}"
    );
    assert_eq!(rig.apis.seen().pids.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn md5_matches_unless_the_tenant_is_md5_exempt() -> TestResult {
    let rig = Rig::start().await?;
    rig.apis.add_record(ingested("F1", &[("md5", MD5)]));
    let event = rig
        .upload("MAM_HighresVideo", "renamed.mxf", "OR-rf5kf25")
        .await?;
    let strict = rig.handler(rig.media(), &[])?;
    assert!(matches!(
        strict.handle(&event, &Invocation::default()).await?,
        Done::Skipped(_)
    ));
    let exempt = rig.handler(rig.media(), &[("MD5_EXEMPT_TENANT", "vrt")])?;
    assert!(matches!(
        exempt.handle(&event, &Invocation::default()).await?,
        Done::Completed(_)
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collateral_is_linked_to_its_essence() -> TestResult {
    let rig = Rig::start().await?;
    let handler = rig.handler(rig.media(), &[])?;
    rig.apis.add_record(StubRecord::new(
        "ESSENCE-F",
        false,
        &[("dc_identifier_localid", "MEDIA1"), ("PID", "abcdefghij")],
    ));
    let event = rig
        .upload("mam-collaterals", "openOt/MEDIA1/subs.srt", "OR-rf5kf25")
        .await?;
    let outcome = handler.handle(&event, &Invocation::default()).await?;
    assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
    assert!(rig.apis.seen().pids.is_empty());
    let path = "/VRT/COLLATERALS/abcdefghij_openOt.xml";
    let xml = String::from_utf8(rig.ftp()?.file(path).ok_or(path)?)?;
    assert!(xml.contains("<object_use>subtitle</object_use>"), "{xml}");
    assert!(
        xml.contains("<is_verwant_aan>abcdefghij</is_verwant_aan>"),
        "{xml}"
    );
    let updates = rig.apis.seen().updates;
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].0, "ESSENCE-F");
    assert!(
        updates[0]
            .2
            .contains("<is_verwant_aan>abcdefghij_openOt</is_verwant_aan>")
    );

    let orphan = rig
        .upload("mam-collaterals", "closedOt/NOPE/subs.srt", "OR-rf5kf25")
        .await?;
    let err = expect_err(&handler, &orphan).await?;
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("no essence has dc_identifier_localid \"NOPE\""),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_or_failing_services_are_retryable_and_refusals_permanent() -> TestResult {
    let rig = Rig::start().await?;
    let handler = rig.handler(rig.media(), &[])?;
    let event = rig
        .upload("MAM_HighresVideo", "clip.mxf", "OR-rf5kf25")
        .await?;
    // The MAM label and the token first: later events reuse them.
    for (route, failure, service) in [
        (
            Route::Organisations,
            Failure::Status(500),
            "organisations API answered 500",
        ),
        (
            Route::Token,
            Failure::Status(502),
            "MediaHaven answered 502",
        ),
        (Route::Pid, Failure::Status(500), "PID service answered 500"),
        (Route::Pid, Failure::Status(429), "PID service answered 429"),
        (
            Route::Pid,
            Failure::Stall(Duration::from_secs(4)),
            "PID service could not be reached",
        ),
        (
            Route::Search,
            Failure::Status(503),
            "MediaHaven answered 503",
        ),
    ] {
        rig.apis.fail_next(route, &[failure]);
        let err = expect_err(&handler, &event)
            .await
            .map_err(|e| format!("{route:?} {failure:?}: {e}"))?;
        assert!(err.is_retryable(), "{route:?} {failure:?}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(service) && text.contains("MAM_HighresVideo/clip.mxf"),
            "{text}"
        );
    }
    rig.apis.fail_next(Route::Search, &[Failure::Status(400)]);
    let err = expect_err(&handler, &event).await?;
    assert!(!err.is_retryable(), "{err}");

    rig.apis.organisation("OR-nolabel", None);
    for (tenant, why) in [
        ("OR-unknown", "unknown tenant OR-unknown"),
        ("OR-nolabel", "tenant OR-nolabel has no MAM label"),
    ] {
        let mapped = format!("MAM_HighresVideo={tenant}");
        let other = rig.handler(rig.media(), &[("TENANT_BY_BUCKET", &mapped)])?;
        let event = rig.upload("MAM_HighresVideo", "x.mxf", tenant).await?;
        let err = expect_err(&other, &event).await?;
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains(why), "{err}");
    }
    // A tenant that only the event names is no tenant.
    let err = expect_err(
        &handler,
        &rig.upload("unmapped", "x.mxf", "OR-rf5kf25").await?,
    )
    .await?;
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains(
            "no tenant: TENANT_BY_BUCKET does not name the bucket (the event says \"OR-rf5kf25\""
        ),
        "{err}"
    );
    // After all that, one clean delivery mints exactly one PID.
    assert!(matches!(
        handler.handle(&event, &Invocation::default()).await?,
        Done::Completed(_)
    ));
    assert_eq!(rig.apis.seen().pids.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_is_reused_renewed_before_expiry_and_after_a_401() -> TestResult {
    let rig = Rig::start().await?;
    let handler = rig.handler(rig.media(), &[])?;
    for key in ["a.mxf", "b.mxf"] {
        handler
            .handle(
                &rig.upload("MAM_HighresVideo", key, "OR-rf5kf25").await?,
                &Invocation::default(),
            )
            .await?;
    }
    assert_eq!(rig.apis.seen().tokens_issued, 1);

    rig.apis.revoke_tokens();
    handler
        .handle(
            &rig.upload("MAM_HighresVideo", "c.mxf", "OR-rf5kf25")
                .await?,
            &Invocation::default(),
        )
        .await?;
    assert_eq!(rig.apis.seen().tokens_issued, 2);

    // A token that expires within the safety margin is renewed before each use.
    let fresh = rig.handler(rig.media(), &[])?;
    rig.apis.set_token_lifetime(20);
    for key in ["d.mxf", "e.mxf"] {
        fresh
            .handle(
                &rig.upload("MAM_HighresVideo", key, "OR-rf5kf25").await?,
                &Invocation::default(),
            )
            .await?;
    }
    assert_eq!(rig.apis.seen().tokens_issued, 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_over_explicit_tls_to_a_server_that_requires_it() -> TestResult {
    let mut rig = Rig::without_ftp().await?;
    let certs = tempfile::tempdir()?;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key, certified.signing_key.serialize_pem())?;
    rig.ftp = Some(FtpServer::start_tls_on(rig.ftp_root.path(), rig.ftp_port, &cert, &key).await?);
    let host = format!("localhost:{}", rig.ftp_port);
    let event = rig
        .upload("MAM_HighresVideo", "clip.mxf", "OR-rf5kf25")
        .await?;

    // Plain FTP is refused by the server (a 5xx: permanent), an untrusted certificate by the
    // client.
    let cert_path = cert.display().to_string();
    for (settings, why) in [
        (vec![("FTP_HOST", host.as_str())], "534"),
        (
            vec![("FTP_HOST", host.as_str()), ("FTP_TLS", "true")],
            "UnknownIssuer",
        ),
    ] {
        let handler = rig.handler(rig.media(), &settings)?;
        let err = expect_err(&handler, &event).await?;
        let text = err.to_string();
        assert!(
            text.contains("putting the sidecar") && text.contains(why),
            "{text}"
        );
        assert_eq!(err.is_retryable(), why != "534", "{text}");
    }
    assert!(rig.ftp()?.files().is_empty());

    let handler = rig.handler(
        rig.media(),
        &[
            ("FTP_HOST", host.as_str()),
            ("FTP_TLS", "true"),
            ("FTP_CA_FILE", cert_path.as_str()),
        ],
    )?;
    let outcome = handler.handle(&event, &Invocation::default()).await?;
    assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
    let files = rig.ftp()?.files();
    assert_eq!(files.len(), 1, "{files:?}");
    Ok(())
}

// The original handler's records, for the gateway's own events (`events/viaa/`): what a
// MediaHaven ingest receives must be what the original sends for the same event.

const ESSENCE_PID: &str = "abcdefghij";

/// A sample of meemoo's gateway, with `edit` applied to its one record.
fn viaa_event(sample: &str, edit: impl FnOnce(&mut Value)) -> Result<ObjectEvent, BoxError> {
    let path = workspace_root().join("events/viaa").join(sample);
    let mut notification: Value = serde_json::from_slice(&std::fs::read(path)?)?;
    edit(&mut notification["Records"][0]);
    only_event(notification)
}

/// The sidecar the original handler writes (its `construct_*_sidecar`), with our XML
/// declaration's quotes; `collateral` is `(media id, object use)`.
fn original_sidecar(
    title: &str,
    description: &str,
    pid: &str,
    bucket: &str,
    key: &str,
    md5: &str,
    collateral: Option<(&str, &str, &str)>,
) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaHAVEN_external_metadata>\n  \
         <title>{title}</title>\n  <description>{description}:\n    - filename: {key}\n    \
         - CP: VRT\n    </description>\n  <MDProperties>\n    <CP>VRT</CP>\n    \
         <CP_id>OR-rf5kf25</CP_id>\n    <sp_name>s3</sp_name>\n    <PID>{pid}</PID>\n    \
         <s3_domain>s3</s3_domain>\n    <s3_bucket>{bucket}</s3_bucket>\n    \
         <s3_object_key>{key}</s3_object_key>\n    \
         <s3_object_owner>Object Owner CN+OR-id</s3_object_owner>\n"
    );
    if let Some((media_id, _, _)) = collateral {
        xml.push_str(&format!(
            "    <dc_identifier_localid>{media_id}</dc_identifier_localid>\n"
        ));
    }
    let object_use = collateral.map_or("archive_master", |(_, object_use, _)| object_use);
    xml.push_str(&format!(
        "    <object_level>file</object_level>\n    <object_use>{object_use}</object_use>\n    \
         <ie_type>n/a</ie_type>\n    <dc_identifier_localids>\n      \
         <Bestandsnaam>{key}</Bestandsnaam>\n    </dc_identifier_localids>\n    \
         <md5>{md5}</md5>\n"
    ));
    if let Some((_, _, related)) = collateral {
        xml.push_str(&format!(
            "    <dc_relations>\n      <is_verwant_aan>{related}</is_verwant_aan>\n    \
             </dc_relations>\n"
        ));
    }
    xml.push_str("  </MDProperties>\n</MediaHAVEN_external_metadata>\n");
    xml
}

impl Rig {
    /// Stores the object an event names, with `md5` in its metadata as the gateway keeps it.
    async fn store(&self, event: &ObjectEvent, md5: &str) -> Result<(), BoxError> {
        let object = NewObject {
            body: b"content".to_vec().into(),
            content_type: "application/octet-stream".to_owned(),
            metadata: [("md5sum".to_owned(), md5.to_owned())].into(),
        };
        self.media.put(&event.bucket, &event.key, object).await?;
        Ok(())
    }

    /// An essence ingested from `MAM_HighresVideo` as the original's data model has it: the
    /// record of the file, and a fragment of it that carries the media id.
    fn essence_with_fragment(&self, media_id: &str) {
        let object = [
            ("s3_bucket", "MAM_HighresVideo"),
            ("s3_object_key", "essence.MXF"),
            ("CP_id", "OR-rf5kf25"),
            ("PID", ESSENCE_PID),
        ];
        let mut essence = StubRecord::new("ESSENCE", false, &object);
        essence
            .fields
            .insert("object_use".to_owned(), "archive_master".to_owned());
        self.apis.add_record(essence);
        let mut fragment = StubRecord::new(&format!("FRAGMENT-{media_id}"), true, &object);
        fragment
            .fields
            .insert("dc_identifier_localid".to_owned(), media_id.to_owned());
        self.apis.add_record(fragment);
    }

    fn sidecar(&self, path: &str) -> Result<String, BoxError> {
        Ok(String::from_utf8(
            self.ftp()?.file(path).ok_or(path.to_owned())?,
        )?)
    }
}

/// The original's file-transfer request for `bucket/key`, sent as `<dir>/<pid><ext>`.
fn original_request(bucket: &str, key: &str, destination: &str, ftp_port: u16) -> Value {
    json!({"source": {"domain": {"name": "s3"}, "bucket": {"name": bucket},
            "object": {"key": key}},
        "destination": {"path": format!("/mnt/STORAGE/INGEST/SIDECAR{destination}"),
            "host": format!("ftp://127.0.0.1:{ftp_port}")}})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_essence_with_plus_in_its_key_gets_the_originals_sidecar_and_request()
-> TestResult {
    let rig = Rig::start().await?;
    let handler = rig.handler(rig.media(), &[("S3_DOMAIN", "s3")])?;
    let mut event = viaa_event("created-plus-key.json", |_| {})?;
    // As the consume runtime sets it from the delivery's properties.
    event.correlation_id = Some("a1b2c3".to_owned());
    let key = "2019+12/clip+1 %2B.MXF";
    assert_eq!(event.key, key);
    rig.store(&event, MD5).await?;
    let outcome = handler.handle(&event, &Invocation::default()).await?;
    assert!(matches!(outcome, Done::Completed(_)), "{outcome}");

    let expected = original_sidecar(
        "Essence: pid: pid0000001",
        "Main fragment for essence",
        "pid0000001",
        "MAM_HighresVideo",
        key,
        MD5,
        None,
    );
    assert_eq!(
        rig.sidecar("/VRT/DISK-SHARE-EVENTS/pid0000001.xml")?,
        expected
    );
    let published = rig.publisher.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].correlation_id.as_deref(), Some("a1b2c3"));
    let body: Value = serde_json::from_slice(&published[0].body)?;
    assert_eq!(
        body,
        original_request(
            "MAM_HighresVideo",
            key,
            "/VRT/DISK-SHARE-EVENTS/pid0000001.MXF",
            rig.ftp_port
        )
    );
    // The key as it arrived is what MediaHaven was asked about.
    assert_eq!(
        rig.apis.seen().queries,
        [format!(
            "+(s3_object_key:\"{key}\" md5:\"{MD5}\") +(s3_bucket:\"MAM_HighresVideo\")"
        )]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_second_collateral_of_a_media_id_finds_the_essence_not_the_first_collateral()
-> TestResult {
    let rig = Rig::start().await?;
    rig.essence_with_fragment("MEDIA-0001");
    let handler = rig.handler(rig.media(), &[("S3_DOMAIN", "s3")])?;

    let first = viaa_event("created-collateral.json", |_| {})?;
    let first_md5 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    rig.store(&first, first_md5).await?;
    let outcome = handler.handle(&first, &Invocation::default()).await?;
    assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
    let first_path = "/VRT/COLLATERALS/abcdefghij_openOt.xml";
    let first_xml = rig.sidecar(first_path)?;
    assert_eq!(
        first_xml,
        original_sidecar(
            "Collateral: pid: abcdefghij",
            "Subtitles for essence",
            "abcdefghij_openOt",
            "mam-collaterals",
            "openOt/MEDIA-0001/subtitles.srt",
            first_md5,
            Some(("MEDIA-0001", "subtitle", ESSENCE_PID)),
        )
    );
    // MediaHaven ingests it: a record with the media id that now answers first.
    rig.apis.ingest_sidecar("COLLATERAL-1", &first_xml)?;

    let second = viaa_event("created-collateral.json", |record| {
        record["s3"]["object"]["key"] = json!("closedOt/MEDIA-0001/subtitles.srt");
    })?;
    let second_md5 = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    rig.store(&second, second_md5).await?;
    let outcome = handler.handle(&second, &Invocation::default()).await?;
    assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
    assert_eq!(
        rig.sidecar("/VRT/COLLATERALS/abcdefghij_closedOt.xml")?,
        original_sidecar(
            "Collateral: pid: abcdefghij",
            "Subtitles for essence",
            "abcdefghij_closedOt",
            "mam-collaterals",
            "closedOt/MEDIA-0001/subtitles.srt",
            second_md5,
            Some(("MEDIA-0001", "subtitle", ESSENCE_PID)),
        )
    );
    // Both relations went onto the fragment, never onto the first collateral.
    let updates = rig.apis.seen().updates;
    let targets: Vec<(&str, bool, bool)> = updates
        .iter()
        .map(|(id, _, xml)| {
            (
                id.as_str(),
                xml.contains("<is_verwant_aan>abcdefghij_openOt</is_verwant_aan>"),
                xml.contains("<is_verwant_aan>abcdefghij_closedOt</is_verwant_aan>"),
            )
        })
        .collect();
    assert_eq!(
        targets,
        [
            ("FRAGMENT-MEDIA-0001", true, false),
            ("FRAGMENT-MEDIA-0001", false, true)
        ]
    );
    let requests: Vec<Value> = rig
        .publisher
        .published()
        .iter()
        .map(|m| serde_json::from_slice(&m.body))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        requests[1],
        original_request(
            "mam-collaterals",
            "closedOt/MEDIA-0001/subtitles.srt",
            "/VRT/COLLATERALS/abcdefghij_closedOt.srt",
            rig.ftp_port
        )
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_media_id_only_earlier_collaterals_carry_is_refused_not_linked_to_them() -> TestResult {
    let rig = Rig::start().await?;
    // A collateral as the original archived it (its PID is the essence's), whose essence has
    // no fragment with this media id.
    rig.apis.add_record(StubRecord::new(
        "ORIGINALS-COLLATERAL",
        false,
        &[
            ("dc_identifier_localid", "MEDIA-0002"),
            ("PID", ESSENCE_PID),
            ("s3_bucket", "mam-collaterals"),
            ("object_use", "subtitle"),
        ],
    ));
    let handler = rig.handler(rig.media(), &[("S3_DOMAIN", "s3")])?;
    let event = viaa_event("created-collateral.json", |record| {
        record["s3"]["object"]["key"] = json!("closedOt/MEDIA-0002/subtitles.srt");
    })?;
    rig.store(&event, MD5).await?;
    let err = expect_err(&handler, &event).await?;
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("no essence has dc_identifier_localid \"MEDIA-0002\""),
        "{err}"
    );
    assert!(rig.apis.seen().updates.is_empty());
    assert!(rig.ftp()?.files().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_segment_collateral_key_is_archived_as_the_original_does() -> TestResult {
    let rig = Rig::start().await?;
    rig.essence_with_fragment("MEDIA-0001");
    let handler = rig.handler(rig.media(), &[("S3_DOMAIN", "s3")])?;
    let event = viaa_event("created-collateral.json", |record| {
        record["s3"]["object"]["key"] = json!("script/MEDIA-0001");
    })?;
    rig.store(&event, MD5).await?;
    let outcome = handler.handle(&event, &Invocation::default()).await?;
    assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
    assert_eq!(
        rig.sidecar("/VRT/COLLATERALS/abcdefghij_script.xml")?,
        original_sidecar(
            "Collateral: pid: abcdefghij",
            "Subtitles for essence",
            "abcdefghij_script",
            "mam-collaterals",
            "script/MEDIA-0001",
            MD5,
            Some(("MEDIA-0001", "collateral", ESSENCE_PID)),
        )
    );
    // No extension in the key, none in the destination.
    let body: Value = serde_json::from_slice(&rig.publisher.published()[0].body)?;
    assert_eq!(
        body["destination"]["path"],
        "/mnt/STORAGE/INGEST/SIDECAR/VRT/COLLATERALS/abcdefghij_script"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_whose_id_does_not_start_with_or_is_archived() -> TestResult {
    let rig = Rig::start().await?;
    rig.apis.organisation("MM-7p8tc89", Some("TESTBEELD"));
    std::fs::create_dir_all(rig.ftp_root.path().join("TESTBEELD/DISK-SHARE-EVENTS"))?;
    let handler = rig.handler(
        rig.media(),
        &[
            ("S3_DOMAIN", "s3"),
            ("TENANT_BY_BUCKET", "MAM_HighresVideo=mm-7p8tc89"),
        ],
    )?;
    let event = viaa_event("created.json", |record| {
        record["s3"]["bucket"]["metadata"]["tenant"] = json!("mm-7P8TC89");
    })?;
    rig.store(&event, MD5).await?;
    let outcome = handler.handle(&event, &Invocation::default()).await?;
    assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
    let xml = rig.sidecar("/TESTBEELD/DISK-SHARE-EVENTS/pid0000001.xml")?;
    for part in ["<CP>TESTBEELD</CP>", "<CP_id>MM-7p8tc89</CP_id>"] {
        assert!(xml.contains(part), "{part} missing in\n{xml}");
    }
    assert_eq!(rig.apis.seen().organisation_lookups, 1);
    Ok(())
}
