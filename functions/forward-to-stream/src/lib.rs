//! forward-to-stream: when an object lands, publish a claim-check CloudEvent that points at it
//! (or, in content mode, its log records) to a Kafka-compatible stream, a log-ingest API or a
//! Knative sink, once per object version;
//! on a schedule, catch up on every object not forwarded yet, resumably.

mod catch_up;
pub mod checkpoint;
pub mod claim;
mod config;
pub mod content;
pub mod forwarded;
mod record_time;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bucketfn::ObjectPath;
use bucketfn::function::Location;
use bucketfn::sink::Publisher;
use bucketfn::storage::{ListedObject, ensure_readable};
use bucketfn::{
    Done, EventKind, Function, Handler, HandlerError, Invocation, ObjectEvent, ObjectStore,
    Outcome, StartError, StoreError,
};

pub use config::{Config, ContentConfig, Format, Mode, SweepConfig};
use forwarded::{Found, Markers, Target, already};

/// The handler: configuration, the store objects are read from, the sink.
pub struct Forwarder {
    config: Config,
    store: Arc<dyn ObjectStore>,
    publisher: Arc<dyn Publisher>,
}

impl Forwarder {
    pub fn new(config: Config, store: Arc<dyn ObjectStore>, publisher: Arc<dyn Publisher>) -> Self {
        Self {
            config,
            store,
            publisher,
        }
    }

    /// Why a key is not forwarded, if it is not.
    fn not_input(&self, key: &str) -> Option<String> {
        if key.starts_with(&self.config.sweep.checkpoint_prefix) {
            Some(format!(
                "{key:?} is a checkpoint (under {:?})",
                self.config.sweep.checkpoint_prefix
            ))
        } else if !key.starts_with(&self.config.prefix) {
            Some(format!(
                "{key:?} is not under SOURCE_PREFIX {:?}",
                self.config.prefix
            ))
        } else {
            None
        }
    }

    /// The markers of what was forwarded from `bucket`.
    fn markers<'a>(&'a self, bucket: &'a str) -> Markers<'a> {
        Markers::new(
            self.store.as_ref(),
            bucket,
            &self.config.sweep.checkpoint_prefix,
            forwarded::dir(self.config.mode == Mode::Content),
        )
    }

    async fn forward_event(&self, event: &ObjectEvent, invocation: &Invocation) -> Outcome {
        if let Some(why) = self.not_input(&event.key) {
            return Ok(Done::Skipped(why));
        }
        match self.config.mode {
            Mode::ClaimCheck => self.forward_claim(event).await,
            Mode::Content => self.forward_content_event(event, invocation).await,
        }
    }

    /// The records of the object an event names, unless its version was forwarded already (a
    /// repeated delivery, or a pass got there first): then a HEAD answers it, without a stream.
    async fn forward_content_event(&self, event: &ObjectEvent, invocation: &Invocation) -> Outcome {
        let (bucket, key) = (event.bucket.as_str(), event.key.as_str());
        ensure_readable(event.source, bucket, key)?;
        let found = self.markers(bucket).of_key(key).await?;
        if found.any_complete() {
            match self.store.head(bucket, key).await {
                Ok(info) => {
                    if let Some(done) = already(bucket, key, &found, &forwarded::version_of(&info))
                    {
                        return Ok(done);
                    }
                }
                Err(StoreError::NotFound { .. }) => return Ok(Done::gone(bucket, key)),
                Err(e) => return Err(e.into()),
            }
        }
        self.forward_content(bucket, key, found, invocation).await
    }

    /// A claim for the object as the store has it: always a HEAD first, so that a claim
    /// points only at an object that exists, with the store's etag and size (what consumers
    /// fetch and dedupe by), never only the event's word.
    async fn forward_claim(&self, event: &ObjectEvent) -> Outcome {
        let (bucket, key) = (event.bucket.as_str(), event.key.as_str());
        ensure_readable(event.source, bucket, key)?;
        let mut claim = claim::Claim::of_event(event);
        let head = self.store.head(bucket, key).await;
        if event.kind == EventKind::Removed {
            // A removal is announced only once the store agrees that the object is gone.
            return match head {
                Err(StoreError::NotFound { .. }) => self.publish_claim(claim, bucket).await,
                Ok(_) => Ok(Done::Skipped(format!(
                    "{} still exists; its removal is not announced",
                    ObjectPath(bucket, key)
                ))),
                Err(e) => Err(e.into()),
            };
        }
        let info = match head {
            Ok(info) => info,
            Err(StoreError::NotFound { .. }) => return Ok(Done::gone(bucket, key)),
            Err(e) => return Err(e.into()),
        };
        let version = forwarded::version_of(&info);
        let found = self.markers(bucket).of_key(key).await?;
        if let Some(done) = already(bucket, key, &found, &version) {
            return Ok(done);
        }
        let Some(told) = claim.confirm(&info) else {
            return self
                .publish_marked_claim(claim, bucket, &version, &found)
                .await;
        };
        let stored = claim.etag.clone().unwrap_or_default();
        tracing::info!(
            event_etag = %told,
            store_etag = %stored,
            "The event's etag is not the store's; the claim carries the store's."
        );
        match self
            .publish_marked_claim(claim, bucket, &version, &found)
            .await?
        {
            Done::Completed(what) => Ok(Done::Completed(format!(
                "{what} with the store's etag {stored:?}, not the event's {told:?}"
            ))),
            skipped => Ok(skipped),
        }
    }

    /// Publishes the claim of object version `version` and records that it was, so that no
    /// later pass or repeated event publishes it again.
    async fn publish_marked_claim(
        &self,
        claim: claim::Claim,
        bucket: &str,
        version: &str,
        found: &Found,
    ) -> Outcome {
        let markers = self.markers(bucket);
        let target = markers.target(&claim.key, version)?;
        let done = self.publish_claim(claim, bucket).await?;
        markers.complete(&target, None, found).await?;
        Ok(done)
    }

    async fn publish_claim(&self, claim: claim::Claim, bucket: &str) -> Outcome {
        let message = claim.to_message().map_err(|e| {
            HandlerError::permanent(format!(
                "cannot describe {}: {e}",
                ObjectPath(bucket, &claim.key)
            ))
        })?;
        self.publisher.publish(vec![message]).await?;
        Ok(Done::Completed(format!(
            "published a claim check for {}",
            ObjectPath(bucket, &claim.key)
        )))
    }

    /// Streams the records of the object as it is now, from the first record the sink has not
    /// acknowledged yet (`found`: the key's markers), saving how far it came every
    /// `SWEEP_CHECKPOINT_SECS` and whenever it stops, and marks the version forwarded at the end.
    async fn forward_content(
        &self,
        bucket: &str,
        key: &str,
        found: Found,
        invocation: &Invocation,
    ) -> Outcome {
        let (info, reader) = match self.store.open(bucket, key).await {
            Ok(opened) => opened,
            Err(StoreError::NotFound { .. }) => return Ok(Done::gone(bucket, key)),
            Err(e) => return Err(e.into()),
        };
        let version = forwarded::version_of(&info);
        if let Some(done) = already(bucket, key, &found, &version) {
            return Ok(done);
        }
        let markers = self.markers(bucket);
        let target = markers.target(key, &version)?;
        let skip = markers.acknowledged(&target, &found).await?;
        let origin = content::Origin {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            etag: version,
            cloudevents: self.config.sink.carries_only_cloudevents(),
        };
        let acknowledged = AtomicU64::new(skip);
        let resume = content::Resume {
            skip,
            acknowledged: &acknowledged,
        };
        let stream = content::forward(
            reader,
            &origin,
            &self.config.content,
            self.publisher.as_ref(),
            invocation,
            resume,
        );
        let every = self.config.sweep.checkpoint_every;
        let (streamed, saved) =
            saving_progress(&markers, &target, &acknowledged, every, stream).await;
        let records = acknowledged.load(Ordering::Relaxed);
        if let Err(e) = streamed {
            // What the sink took is kept, so that the next attempt sends only the rest.
            if records > saved
                && let Err(save) = markers.save_progress(&target, records).await
            {
                tracing::warn!(error = %save, records, "Progress not saved; the next attempt sends these again.");
            }
            return Err(e);
        }
        markers.complete(&target, Some(records), &found).await?;
        let resumed = match skip {
            0 => String::new(),
            n => format!(", resumed after the {n} an earlier attempt sent"),
        };
        Ok(Done::Completed(format!(
            "forwarded {} records of {} ({} bytes){resumed}",
            records - skip,
            ObjectPath(bucket, key),
            info.size
        )))
    }
}

/// Runs `stream`, saving the records acknowledged so far in `target`'s progress marker every
/// `every`; returns its outcome and the count saved last.
async fn saving_progress(
    markers: &Markers<'_>,
    target: &Target,
    acknowledged: &AtomicU64,
    every: Duration,
    stream: impl Future<Output = Result<u64, HandlerError>>,
) -> (Result<u64, HandlerError>, u64) {
    let mut stream = std::pin::pin!(stream);
    let mut saved = acknowledged.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            outcome = &mut stream => return (outcome, saved),
            () = tokio::time::sleep(every) => {
                let records = acknowledged.load(Ordering::Relaxed);
                if records > saved {
                    match markers.save_progress(target, records).await {
                        Ok(()) => saved = records,
                        Err(e) => tracing::warn!(error = %e, records, "Progress not saved yet."),
                    }
                }
            }
        }
    }
}

impl catch_up::Forwarding for Forwarder {
    fn store(&self) -> &dyn ObjectStore {
        self.store.as_ref()
    }

    fn settings(&self) -> &SweepConfig {
        &self.config.sweep
    }

    fn prefix(&self) -> &str {
        &self.config.prefix
    }

    fn markers<'a>(&'a self, bucket: &'a str) -> Markers<'a> {
        Forwarder::markers(self, bucket)
    }

    fn forward_event(
        &self,
        event: &ObjectEvent,
        invocation: &Invocation,
    ) -> impl Future<Output = Outcome> + Send {
        Forwarder::forward_event(self, event, invocation)
    }

    async fn forward_listed(
        &self,
        bucket: &str,
        object: ListedObject,
        version: &str,
        found: Found,
        invocation: &Invocation,
    ) -> Outcome {
        match self.config.mode {
            Mode::ClaimCheck => {
                let claim = claim::Claim::of_listed(bucket, &object);
                self.publish_marked_claim(claim, bucket, version, &found)
                    .await
            }
            Mode::Content => {
                self.forward_content(bucket, &object.key, found, invocation)
                    .await
            }
        }
    }
}

impl Handler for Forwarder {
    /// `FORWARD_KINDS`.
    fn handles(&self, kind: EventKind) -> bool {
        self.config.kinds.contains(&kind)
    }

    /// The swept bucket, which holds the checkpoint.
    fn buckets(&self) -> Vec<String> {
        self.config.sweep.bucket.iter().cloned().collect()
    }

    fn inputs(&self) -> Option<Location> {
        Some(Location {
            bucket: self.config.sweep.bucket.clone()?,
            prefix: self.config.prefix.clone(),
            exclude_prefix: Some(self.config.sweep.checkpoint_prefix.clone()),
        })
    }

    async fn handle(&self, event: &ObjectEvent, invocation: &Invocation) -> Outcome {
        match event.kind {
            EventKind::Sweep => catch_up::run(self, event, invocation).await,
            kind if self.config.kinds.contains(&kind) => {
                self.forward_event(event, invocation).await
            }
            kind => Ok(Done::Skipped(format!(
                "{kind:?} events are not forwarded (FORWARD_KINDS)"
            ))),
        }
    }
}

impl Function for Forwarder {
    const NAME: &'static str = "forward-to-stream";
    const ABOUT: &'static str = "Publishes a claim-check reference (or the log records) of every \
        object that lands in a bucket to a Kafka-compatible stream, a log-ingest API or a Knative \
        sink (CloudEvents over HTTP)";

    type Config = Config;

    async fn start(config: Config, store: Arc<dyn ObjectStore>) -> Result<Self, StartError> {
        let publisher = config.sink.publisher()?;
        Ok(Self::new(config, store, publisher))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucketfn::budget::Stop;
    use bucketfn::sink::{FileFormat, MemoryPublisher, Message, PublishError, SinkConfig};
    use bucketfn::storage::MemoryStore;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    pub(crate) fn event(
        kind: &str,
        bucket: &str,
        key: &str,
    ) -> Result<ObjectEvent, Box<dyn std::error::Error>> {
        let notification = serde_json::json!({"Records": [{"eventVersion": "2.1",
            "eventSource": "aws:s3", "eventName": kind, "eventTime": "2024-11-05T14:22:31.493Z",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 5, "eTag": "e"}}}]});
        let events = bucketfn::event::decode_value(notification)?.into_events()?;
        events.into_iter().next().ok_or_else(|| "no event".into())
    }

    pub(crate) fn forwarder(config: Config) -> (Arc<MemoryStore>, Arc<MemoryPublisher>, Forwarder) {
        let store = Arc::new(MemoryStore::new());
        let publisher = Arc::new(MemoryPublisher::new());
        let forwarder = Forwarder::new(
            config,
            Arc::clone(&store) as Arc<dyn ObjectStore>,
            Arc::clone(&publisher) as Arc<dyn Publisher>,
        );
        (store, publisher, forwarder)
    }

    pub(crate) fn file_config() -> Config {
        Config::with_sink(SinkConfig::File {
            path: "-".into(),
            format: FileFormat::Messages,
        })
    }

    /// A memory sink that tells the invocation to stop once it holds `after` messages, as a
    /// deadline passing while an object is forwarded would.
    pub(crate) struct StopsAfter {
        pub(crate) inner: MemoryPublisher,
        pub(crate) stop: Stop,
        pub(crate) after: usize,
    }

    #[async_trait::async_trait]
    impl Publisher for StopsAfter {
        async fn publish(&self, messages: Vec<Message>) -> Result<(), PublishError> {
            self.inner.publish(messages).await?;
            if self.inner.published().len() >= self.after {
                self.stop.stop();
            }
            Ok(())
        }
    }

    /// A forwarder over `store` whose sink stops the invocation returned with it once it holds
    /// `after` messages.
    pub(crate) fn stopping_after(
        config: Config,
        store: &Arc<MemoryStore>,
        after: usize,
    ) -> (Forwarder, Arc<StopsAfter>, Invocation) {
        let stop = Stop::at(None);
        let publisher = Arc::new(StopsAfter {
            inner: MemoryPublisher::new(),
            stop: stop.clone(),
            after,
        });
        let handler = Forwarder::new(
            config,
            Arc::clone(store) as Arc<dyn ObjectStore>,
            Arc::clone(&publisher) as Arc<dyn Publisher>,
        );
        let stopping = Invocation {
            stop,
            ..Invocation::default()
        };
        (handler, publisher, stopping)
    }

    #[tokio::test]
    async fn records_of_an_object_announced_by_claim_are_still_forwarded_in_content_mode()
    -> TestResult {
        let (store, claims, announcing) = forwarder(file_config());
        store.insert("b", "vpc/x.log", &b"one\ntwo\n"[..], "text/plain");
        let created = event("ObjectCreated:Put", "b", "vpc/x.log")?;
        let invocation = Invocation::default();
        announcing.handle(&created, &invocation).await?;
        assert_eq!(claims.published().len(), 1);
        let mut config = file_config();
        config.mode = Mode::Content;
        let records = Arc::new(MemoryPublisher::new());
        let forwarding = Forwarder::new(
            config,
            Arc::clone(&store) as Arc<dyn ObjectStore>,
            Arc::clone(&records) as Arc<dyn Publisher>,
        );
        let done = forwarding.handle(&created, &invocation).await?;
        assert!(matches!(done, Done::Completed(_)), "{done}");
        assert_eq!(records.published().len(), 2);
        // Each mode's repeat is still turned away by its own marker.
        for (handler, sent) in [(&announcing, &claims), (&forwarding, &records)] {
            let before = sent.published().len();
            let repeat = handler.handle(&created, &invocation).await?;
            assert!(repeat.to_string().contains("forwarded already"), "{repeat}");
            assert_eq!(sent.published().len(), before);
        }
        Ok(())
    }

    #[test]
    fn the_swept_bucket_is_checked_at_start_up() {
        assert!(forwarder(file_config()).2.buckets().is_empty());
        let mut config = file_config();
        config.sweep.bucket = Some("logs".to_owned());
        assert_eq!(forwarder(config).2.buckets(), ["logs"]);
    }

    #[tokio::test]
    async fn created_objects_are_announced_and_removals_only_when_asked() -> TestResult {
        let (store, publisher, handler) = forwarder(file_config());
        store.insert("b", "a.csv", &b"a,b\n"[..], "text/csv");
        let inv = Invocation::default();
        let done = handler
            .handle(&event("ObjectCreated:Put", "b", "a.csv")?, &inv)
            .await?;
        assert!(matches!(done, Done::Completed(_)), "{done}");
        let removed = event("ObjectRemoved:Delete", "b", "a.csv")?;
        assert!(matches!(
            handler.handle(&removed, &inv).await?,
            Done::Skipped(_)
        ));
        assert_eq!(publisher.published().len(), 1);

        let mut config = file_config();
        config.kinds = vec![EventKind::Created, EventKind::Removed];
        let (store, publisher, handler) = forwarder(config);
        handler.handle(&removed, &inv).await?;
        let published = publisher.published();
        let ce_type = published[0].headers.iter().find(|(n, _)| n == "ce_type");
        assert_eq!(
            ce_type.map(|(_, v)| v.as_str()),
            Some("io.bucketfn.object.removed")
        );
        // A removal the store does not confirm (the object is there) is not announced.
        store.insert("b", "a.csv", &b"a,b\n"[..], "text/csv");
        let still_there = handler.handle(&removed, &inv).await?;
        assert!(
            matches!(&still_there, Done::Skipped(why) if why.contains("still exists")),
            "{still_there}"
        );
        assert_eq!(publisher.published().len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_claim_carries_the_stores_etag_and_size_not_the_events() -> TestResult {
        let (store, publisher, handler) = forwarder(file_config());
        store.insert("b", "a.csv", &b"a,b\n"[..], "text/csv");
        let stored = store.head("b", "a.csv").await?.etag.ok_or("no etag")?;
        let inv = Invocation::default();
        // The event says etag "e" and size 5; the store knows better.
        let done = handler
            .handle(&event("ObjectCreated:Put", "b", "a.csv")?, &inv)
            .await?;
        assert_eq!(
            done,
            Done::Completed(format!(
                "published a claim check for b/a.csv with the store's etag {stored:?}, not the \
                 event's \"e\""
            ))
        );
        let published = publisher.published();
        let data: serde_json::Value = serde_json::from_slice(&published[0].body)?;
        assert_eq!(
            (&data["etag"], &data["size"]),
            (&stored.clone().into(), &4.into())
        );
        // An object the event names but the store does not hold is not claimed at all.
        let gone = handler
            .handle(&event("ObjectCreated:Put", "b", "forged.csv")?, &inv)
            .await?;
        assert!(
            matches!(&gone, Done::Skipped(why) if why.contains("no longer exists")),
            "{gone}"
        );
        assert_eq!(publisher.published().len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_broker_that_is_down_makes_the_event_retryable() -> TestResult {
        let (store, publisher, handler) = forwarder(file_config());
        store.insert("b", "a.csv", &b"a,b\n"[..], "text/csv");
        publisher.set_unavailable(true);
        let err = handler
            .handle(
                &event("ObjectCreated:Put", "b", "a.csv")?,
                &Invocation::default(),
            )
            .await
            .err()
            .ok_or("acknowledged without the broker")?;
        assert!(err.is_retryable(), "{err}");
        Ok(())
    }

    #[tokio::test]
    async fn checkpoints_and_keys_outside_the_prefix_are_never_forwarded() -> TestResult {
        let mut config = file_config();
        config.prefix = "logs/".into();
        let (_store, publisher, handler) = forwarder(config);
        let inv = Invocation::default();
        for key in [".forward-to-stream/sweeps/logs.json", "other/x.gz"] {
            let done = handler
                .handle(&event("ObjectCreated:Put", "b", key)?, &inv)
                .await?;
            assert!(matches!(done, Done::Skipped(_)), "{key}: {done}");
        }
        assert!(publisher.published().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn content_mode_forwards_records_and_skips_gone_objects() -> TestResult {
        let mut config = file_config();
        config.mode = Mode::Content;
        let (store, publisher, handler) = forwarder(config);
        store.insert("b", "vpc/x.log", &b"r1\nr2\n"[..], "text/plain");
        let inv = Invocation::default();
        let done = handler
            .handle(&event("ObjectCreated:Put", "b", "vpc/x.log")?, &inv)
            .await?;
        assert_eq!(
            done,
            Done::Completed("forwarded 2 records of b/vpc/x.log (6 bytes)".into())
        );
        let etag = store.head("b", "vpc/x.log").await?.etag.ok_or("no etag")?;
        let ids: Vec<String> = publisher
            .published()
            .iter()
            .map(|m| m.headers[0].1.clone())
            .collect();
        assert_eq!(ids, [format!("{etag}:0"), format!("{etag}:1")]);
        let gone = handler
            .handle(&event("ObjectCreated:Put", "b", "vpc/gone.log")?, &inv)
            .await?;
        assert!(matches!(gone, Done::Skipped(_)), "{gone}");
        Ok(())
    }

    #[tokio::test]
    async fn a_content_event_cut_off_resumes_on_redelivery_and_a_repeat_is_skipped() -> TestResult {
        let mut config = file_config();
        config.mode = Mode::Content;
        config.content.batch_records = 3;
        let store = Arc::new(MemoryStore::new());
        let lines: String = (0..10).map(|n| format!("r{n}\n")).collect();
        store.insert("b", "vpc/x.log", lines, "text/plain");
        let (handler, publisher, cut_off) = stopping_after(config, &store, 3);
        let created = event("ObjectCreated:Put", "b", "vpc/x.log")?;
        let err = handler
            .handle(&created, &cut_off)
            .await
            .err()
            .ok_or("finished although stopped")?;
        assert!(err.is_retryable(), "{err}");
        // The platform delivers the event again.
        let inv = Invocation::default();
        let done = handler.handle(&created, &inv).await?;
        assert_eq!(
            done,
            Done::Completed(
                "forwarded 7 records of b/vpc/x.log (30 bytes), resumed after the 3 an earlier \
                 attempt sent"
                    .into()
            )
        );
        let repeat = handler.handle(&created, &inv).await?;
        assert!(
            matches!(&repeat, Done::Skipped(why) if why.contains("was forwarded already; delete b/.forward-to-stream/forwarded/vpc/x.log ")),
            "{repeat}"
        );
        let bodies: Vec<String> = publisher
            .inner
            .published()
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect();
        let expected: Vec<String> = (0..10).map(|n| format!("r{n}")).collect();
        assert_eq!(bodies, expected);
        Ok(())
    }

    #[tokio::test]
    async fn content_records_are_cloudevents_when_the_sink_carries_nothing_else() -> TestResult {
        let settings = bucketfn::Env::from_pairs([("K_SINK", "http://127.0.0.1:9/")]).load()?;
        let mut config = Config::with_sink(SinkConfig::KSink(settings));
        config.mode = Mode::Content;
        let (store, publisher, handler) = forwarder(config);
        store.insert("b", "vpc/été #1.log", &b"r1\nr2\n"[..], "text/plain");
        handler
            .handle(
                &event("ObjectCreated:Put", "b", "vpc/été #1.log")?,
                &Invocation::default(),
            )
            .await?;
        let etag = store
            .head("b", "vpc/été #1.log")
            .await?
            .etag
            .ok_or("no etag")?;
        let published = publisher.published();
        assert_eq!(published.len(), 2);
        for (n, message) in published.iter().enumerate() {
            let header = |name: &str| {
                message
                    .headers
                    .iter()
                    .find(|(h, _)| h == name)
                    .map(|(_, v)| v.as_str())
            };
            let id = format!("{etag}:{n}");
            assert_eq!(header("dedupe_id"), Some(id.as_str()));
            assert_eq!(header("ce_id"), Some(id.as_str()));
            assert_eq!(header("ce_specversion"), Some("1.0"));
            assert_eq!(
                header("ce_source"),
                Some("s3://b/vpc/%C3%A9t%C3%A9%20%231.log")
            );
            assert_eq!(header("ce_type"), Some(bucketfn::sink::RECORD_TYPE));
            assert_eq!(header("ce_subject"), Some("vpc/été #1.log"));
            assert_eq!(message.content_type, "text/plain");
        }
        Ok(())
    }
}
