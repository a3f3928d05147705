//! thumbnail-on-create: when an image lands in a bucket, write its thumbnails (one per
//! configured size, in the configured format) under deterministic keys; catch up on a whole
//! bucket on a schedule; optionally move every object rather than copy (its unchanged copy and
//! thumbnails first, then a delete conditional on the version that was read).

mod config;
pub mod keys;
mod moving;
pub mod pipeline;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bucketfn::ObjectPath;
use bucketfn::budget::{Stop, Stopped};
use bucketfn::derivatives::{self, metadata};
use bucketfn::function::{Derived, Location, Preview};
use bucketfn::sniff;
use bucketfn::storage::{StoredObject, ensure_readable};
use bucketfn::sweep::{Scope, sweep};
use bucketfn::{
    Done, EventKind, Function, Handler, HandlerError, Invocation, NewObject, ObjectEvent,
    ObjectInfo, ObjectStore, Outcome, StartError, StoreError,
};
use bytes::Bytes;
use futures_util::future::try_join_all;

pub use config::Config;
pub use moving::Unmovable;
use pipeline::{PipelineError, Spec, Thumbnail};

/// The handler: configuration plus the store it reads from and writes to.
pub struct Thumbnailer {
    config: Config,
    spec: Spec,
    store: Arc<dyn ObjectStore>,
}

/// A source that cannot become a thumbnail, with the object it came from.
#[derive(Debug, thiserror::Error)]
#[error("{} cannot be thumbnailed", ObjectPath(bucket, key))]
pub struct ImageError {
    bucket: String,
    key: String,
    #[source]
    source: PipelineError,
}

/// The thumbnails of an object were not finished by the deadline; the next delivery may.
#[derive(Debug, thiserror::Error)]
#[error("the thumbnails of {} were not finished", ObjectPath(bucket, key))]
pub struct Unfinished {
    bucket: String,
    key: String,
    #[source]
    source: Stopped,
}

/// Stops the work when dropped while still holding the stop.
struct StopIfAbandoned<'a>(Option<&'a Stop>);

impl Drop for StopIfAbandoned<'_> {
    fn drop(&mut self) {
        if let Some(stop) = self.0 {
            stop.stop();
        }
    }
}

/// How long an image waits for its share of the memory budget before the event is answered
/// retryable (never past the deadline): long enough for a decode or two to finish.
const BUDGET_WAIT: Duration = Duration::from_secs(5);

/// The content type of a moved source's copy when the store named none.
const UNKNOWN_CONTENT_TYPE: &str = "application/octet-stream";

/// The version of a source that derivatives are made from, as their metadata records it.
#[derive(Debug, Clone)]
struct Read {
    etag: String,
    version_id: Option<String>,
}

impl Read {
    fn of(info: &ObjectInfo) -> Self {
        Self {
            etag: info.etag.clone().unwrap_or_default(),
            version_id: info.version_id.clone(),
        }
    }

    /// The metadata a derivative of `bucket/key` made from this version carries.
    fn stamp(&self, bucket: &str, key: &str, moved: bool) -> BTreeMap<String, String> {
        derivatives::source_metadata(bucket, key, &self.etag, self.version_id.as_deref(), moved)
    }

    /// Whether a derivative's metadata says it was made from this version (and, for a move,
    /// that its source was moved: only then does cleanup-on-remove keep it).
    fn made(&self, stamp: &BTreeMap<String, String>, moved: bool) -> bool {
        stamp.get(metadata::SOURCE_ETAG) == Some(&self.etag)
            && self
                .version_id
                .as_ref()
                .is_none_or(|version| stamp.get(metadata::SOURCE_VERSION) == Some(version))
            && (!moved || derivatives::source_was_moved(stamp))
    }
}

impl Thumbnailer {
    pub fn new(config: Config, store: Arc<dyn ObjectStore>) -> Self {
        let spec = Spec::from(&config);
        Self {
            config,
            spec,
            store,
        }
    }

    /// Makes sure `bucket/key` has current thumbnails, and moves it when `DELETE_SOURCE` says
    /// so. `etag` is what the event or listing said the source's etag is, when it said.
    async fn refresh(
        &self,
        bucket: &str,
        key: &str,
        etag: Option<&str>,
        invocation: &Invocation,
    ) -> Outcome {
        let layout = &self.config.layout;
        // The loop guard: what this function writes is never a source.
        if layout.is_derivative(bucket, key) {
            return Ok(Done::Skipped(format!(
                "{} is a derivative (under {:?})",
                ObjectPath(bucket, key),
                layout.prefix
            )));
        }
        if self.config.delete_source {
            return self.move_source(bucket, key, invocation).await;
        }
        match self.is_image(bucket, key).await? {
            Some(true) => self.thumbnail(bucket, key, etag, invocation).await,
            Some(false) => Ok(Done::Skipped(format!(
                "{} is not an image (neither its extension nor its first bytes)",
                ObjectPath(bucket, key)
            ))),
            None => Ok(Done::gone(bucket, key)),
        }
    }

    /// An image extension says so; without one (`dog12345`, a `.dat` that is a JPEG) the
    /// object's first bytes do, read alone, so a non-image costs one small ranged read.
    /// `None` when the object is gone.
    async fn is_image(&self, bucket: &str, key: &str) -> Result<Option<bool>, HandlerError> {
        if keys::is_image_key(key) {
            return Ok(Some(true));
        }
        match self
            .store
            .read_start(bucket, key, sniff::SIGNATURE_BYTES)
            .await
        {
            Ok(start) => Ok(Some(sniff::image_kind(&start).is_some())),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the thumbnails of `bucket/key` unless those there were made from its version.
    async fn thumbnail(
        &self,
        bucket: &str,
        key: &str,
        etag: Option<&str>,
        invocation: &Invocation,
    ) -> Outcome {
        let destination = self.config.layout.destination(bucket);
        let outputs = self.thumbnail_keys(bucket, key)?;
        let output_keys: Vec<&str> = outputs.iter().map(|(_, k)| k.as_str()).collect();

        // A redelivered event, or a sweep over done work, costs HEADs and no download.
        let known = match etag {
            Some(etag) => Read {
                etag: etag.to_owned(),
                version_id: None,
            },
            None => match self.store.head(bucket, key).await {
                Ok(info) => Read::of(&info),
                Err(StoreError::NotFound { .. }) => return Ok(Done::gone(bucket, key)),
                Err(e) => return Err(e.into()),
            },
        };
        if self
            .made_from(destination, &output_keys, &known, false)
            .await?
        {
            return Ok(Done::Skipped(format!(
                "the thumbnails of {} are up to date",
                ObjectPath(bucket, key)
            )));
        }
        let Some(source) = self.read(bucket, key).await? else {
            return Ok(Done::gone(bucket, key));
        };
        let mut read = Read::of(&source.info);
        if read.etag.is_empty() {
            read.etag = known.etag;
        }
        let thumbnails = self.make(bucket, key, source.body, invocation).await?;
        let wrote = self
            .write_thumbnails(
                destination,
                &outputs,
                &thumbnails,
                read.stamp(bucket, key, false),
            )
            .await?;
        Ok(Done::Completed(wrote))
    }

    /// The whole source, or `None` when it is gone.
    async fn read(&self, bucket: &str, key: &str) -> Result<Option<StoredObject>, HandlerError> {
        match self
            .store
            .get(bucket, key, self.config.max_source_bytes)
            .await
        {
            Ok(object) => Ok(Some(object)),
            // The object was deleted (or replaced and deleted) after the event was sent.
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs the pipeline on `body` once its need is reserved from the process's memory
    /// budget, off the async workers (decoding is CPU-bound), stopping at the deadline or
    /// when this future is dropped.
    async fn make(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        invocation: &Invocation,
    ) -> Result<Vec<Thumbnail>, HandlerError> {
        // What is wrong with the object the sender named: the sender may read it.
        let image_error = |source| {
            HandlerError::permanent(ImageError {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                source,
            })
            .for_sender()
        };
        let unfinished = || {
            HandlerError::retryable(Unfinished {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                source: Stopped,
            })
        };
        // The invocation's stop carries its deadline: CPU work ends there.
        if invocation.stop.is_stopped() {
            return Err(unfinished());
        }
        let need = pipeline::decode_need(&body, &self.spec).map_err(image_error)?;
        let wait = invocation.stop.deadline().map_or(BUDGET_WAIT, |d| {
            BUDGET_WAIT.min(d.saturating_duration_since(Instant::now()))
        });
        let what = format!("{}, {},", ObjectPath(bucket, key), need.what);
        let reservation = invocation.memory.reserve(&what, need.bytes, wait).await?;
        tracing::debug!(
            need = need.bytes,
            image = %need.what,
            available = invocation.memory.available(),
            "Memory reserved for the decode."
        );

        // Dropped with this future when a runtime stops waiting for it (a timeout): the
        // blocking decode is told to stop too. Disarmed once the decode is over, so that a
        // finished image does not stop the invocation's other work (a sweep's other images).
        let mut abandoned = StopIfAbandoned(Some(&invocation.stop));
        let stop = invocation.stop.clone();
        let spec = self.spec.clone();
        let made = tokio::task::spawn_blocking(move || {
            let made = pipeline::make_thumbnails(&body, &spec, &stop);
            // The reservation lasts as long as the decode's memory does, even when nobody
            // waits for it any more.
            drop(body);
            drop(reservation);
            made
        })
        .await;
        abandoned.0 = None;
        let made = made.map_err(|e| {
            HandlerError::permanent(format!(
                "the image pipeline crashed on {}: {e}",
                ObjectPath(bucket, key)
            ))
        })?;
        match made {
            // Thumbnails finished after the deadline are not written: the event is reported
            // retryable by then.
            Ok(_) if invocation.stop.is_stopped() => Err(unfinished()),
            Ok(thumbnails) => Ok(thumbnails),
            Err(PipelineError::Stopped(_)) => Err(unfinished()),
            Err(source) => Err(image_error(source)),
        }
    }

    /// Writes each thumbnail to its key with `stamp` as its metadata; says what was written.
    async fn write_thumbnails(
        &self,
        destination: &str,
        outputs: &[(u32, String)],
        thumbnails: &[Thumbnail],
        stamp: BTreeMap<String, String>,
    ) -> Result<String, HandlerError> {
        let writes = thumbnails
            .iter()
            .zip(outputs)
            .map(|(thumbnail, (_, output))| {
                let object = NewObject {
                    body: Bytes::from(thumbnail.bytes.clone()),
                    content_type: self.config.format.content_type().to_owned(),
                    metadata: stamp.clone(),
                };
                self.store.put(destination, output, object)
            });
        try_join_all(writes).await?;
        let written: Vec<String> = thumbnails
            .iter()
            .zip(outputs)
            .map(|(t, (_, output))| {
                format!(
                    "{} ({}x{}, {} bytes)",
                    ObjectPath(destination, output),
                    t.width,
                    t.height,
                    t.bytes.len()
                )
            })
            .collect();
        Ok(format!("wrote {}", written.join(", ")))
    }

    /// `(size, key)` of each configured size's thumbnail of `bucket/key`.
    fn thumbnail_keys(&self, bucket: &str, key: &str) -> Result<Vec<(u32, String)>, HandlerError> {
        let extension = self.config.format.extension();
        self.config
            .sizes
            .iter()
            .map(|&size| {
                self.config
                    .layout
                    .thumbnail_key(bucket, key, size, extension)
                    .map(|k| (size, k))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(HandlerError::permanent)
    }

    /// True when every output exists and its metadata says it was made from `read` (and,
    /// with `moved`, that its source was moved).
    async fn made_from(
        &self,
        destination: &str,
        outputs: &[&str],
        read: &Read,
        moved: bool,
    ) -> Result<bool, HandlerError> {
        let heads = outputs.iter().map(|key| async move {
            match self.store.head(destination, key).await {
                Ok(info) => Ok(read.made(&info.metadata, moved)),
                Err(StoreError::NotFound { .. }) => Ok(false),
                Err(e) => Err(HandlerError::from(e)),
            }
        });
        Ok(try_join_all(heads)
            .await?
            .into_iter()
            .all(|current| current))
    }

    /// Catches up on a bucket: every image whose thumbnails are missing or stale.
    async fn sweep(&self, event: &ObjectEvent, invocation: &Invocation) -> Outcome {
        let bucket = match (event.bucket.as_str(), self.config.source_bucket.as_deref()) {
            ("", Some(configured)) => configured,
            ("", None) => {
                return Err(HandlerError::permanent(
                    "a sweep needs a bucket: set SOURCE_BUCKET (schedules name none)",
                ));
            }
            (named, _) => named,
        };
        let prefix = if event.key.is_empty() {
            self.config.source_prefix.as_str()
        } else {
            event.key.as_str()
        };
        let layout = &self.config.layout;
        let destination = layout.destination(bucket);
        let scope = Scope {
            bucket,
            prefix,
            exclude_prefix: (destination == bucket).then_some(layout.prefix.as_str()),
            cursor: Some((
                destination,
                format!("{}.sweep/{bucket}/{prefix}cursor.json", layout.prefix),
            )),
            shard: event.sweep.shard,
            latest: event.sweep.latest,
        };
        let summary = sweep(
            self.store.as_ref(),
            scope,
            invocation,
            self.config.sweep_concurrency,
            |object, invocation| async move {
                self.refresh(bucket, &object.key, object.etag.as_deref(), &invocation)
                    .await
            },
        )
        .await?;
        summary.into_outcome()
    }
}

/// What messages about an image tried in the gallery call its bucket: it is in none.
const UPLOAD: &str = "(upload)";
/// The `/files` column of a moved source's copy.
const MOVED_COPY: &str = "moved copy";

impl Handler for Thumbnailer {
    /// `THUMBNAIL_BUCKET` and the bucket the scheduled sweeps walk (`SOURCE_BUCKET`).
    fn buckets(&self) -> Vec<String> {
        let mut buckets: Vec<String> = [&self.config.layout.bucket, &self.config.source_bucket]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        buckets.dedup();
        buckets
    }

    fn inputs(&self) -> Option<Location> {
        let bucket = self.config.source_bucket.clone()?;
        let layout = &self.config.layout;
        Some(Location {
            exclude_prefix: (layout.destination(&bucket) == bucket).then(|| layout.prefix.clone()),
            bucket,
            prefix: self.config.source_prefix.clone(),
        })
    }

    fn outputs_of(&self, key: &str) -> Vec<Derived> {
        let Some(bucket) = self.config.source_bucket.as_deref() else {
            return Vec::new();
        };
        let layout = &self.config.layout;
        let destination = layout.destination(bucket);
        let Ok(thumbnails) = self.thumbnail_keys(bucket, key) else {
            return Vec::new();
        };
        let mut outputs: Vec<Derived> = thumbnails
            .into_iter()
            .map(|(size, key)| Derived {
                label: format!("{size} px"),
                bucket: destination.to_owned(),
                key,
                image: true,
            })
            .collect();
        let copy = self
            .config
            .delete_source
            .then(|| layout.original_key(bucket, key));
        if let Some(Ok(copy)) = copy {
            outputs.push(Derived {
                label: MOVED_COPY.to_owned(),
                bucket: destination.to_owned(),
                key: copy,
                image: false,
            });
        }
        outputs
    }

    /// With `DELETE_SOURCE`, the sources' folders in the destination, where each moved
    /// source's copy sits beside its thumbnails.
    fn moved_inputs(&self) -> Option<Location> {
        let bucket = self.config.source_bucket.as_deref()?;
        let layout = &self.config.layout;
        self.config.delete_source.then(|| Location {
            bucket: layout.destination(bucket).to_owned(),
            prefix: layout.root(bucket),
            exclude_prefix: None,
        })
    }

    fn moved_input(&self, key: &str) -> Option<String> {
        let bucket = self.config.source_bucket.as_deref()?;
        self.config.layout.moved_source(bucket, key)
    }

    fn gallery(&self) -> bool {
        true
    }

    /// The first of `THUMBNAIL_SIZES`, made as an event's would be (same limits, same memory
    /// budget, same deadline).
    async fn preview(
        &self,
        name: &str,
        body: Bytes,
        invocation: &Invocation,
    ) -> Option<Result<Preview, HandlerError>> {
        let limit = self.config.max_source_bytes;
        if body.len() as u64 > limit {
            return Some(Err(HandlerError::permanent(format!(
                "{name:?} is over {limit} bytes (MAX_SOURCE_BYTES)"
            ))));
        }
        let made = self.make(UPLOAD, name, body, invocation).await;
        Some(made.and_then(|thumbnails| {
            let first = thumbnails
                .into_iter()
                .next()
                .ok_or_else(|| HandlerError::permanent("no thumbnail size is configured"))?;
            Ok(Preview {
                content_type: self.config.format.content_type(),
                bytes: Bytes::from(first.bytes),
            })
        }))
    }

    async fn handle(&self, event: &ObjectEvent, invocation: &Invocation) -> Outcome {
        match event.kind {
            EventKind::Created => {
                ensure_readable(event.source, &event.bucket, &event.key)?;
                self.refresh(&event.bucket, &event.key, event.etag.as_deref(), invocation)
                    .await
            }
            EventKind::Sweep => self.sweep(event, invocation).await,
            EventKind::Removed | EventKind::Other => Ok(Done::not_handled(Self::NAME, event.kind)),
        }
    }
}

impl Function for Thumbnailer {
    const NAME: &'static str = "thumbnail-on-create";
    const ABOUT: &'static str = "Writes thumbnails of every image that lands in a bucket";

    type Config = Config;

    async fn start(config: Config, store: Arc<dyn ObjectStore>) -> Result<Self, StartError> {
        Ok(Self::new(config, store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucketfn::Source;
    use bucketfn::budget::MemoryBudget;
    use bucketfn::derivatives::DerivativesLayout;
    use bucketfn::storage::MemoryStore;
    use bucketfn::storage::{Condition, CopyRequest, MAX_COPY_BYTES};
    use image::{DynamicImage, ImageBuffer, ImageFormat};
    use pipeline::OutputFormat;
    use std::sync::{Mutex, PoisonError};
    use std::time::{Duration, Instant};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn png(width: u32, height: u32) -> Result<Vec<u8>, image::ImageError> {
        let image = DynamicImage::ImageRgb8(ImageBuffer::from_fn(width, height, |x, _| {
            image::Rgb([x as u8, 100, 200])
        }));
        let mut bytes = Vec::new();
        image.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)?;
        Ok(bytes)
    }

    fn created(
        bucket: &str,
        key: &str,
        etag: Option<&str>,
    ) -> Result<ObjectEvent, Box<dyn std::error::Error>> {
        let mut object = serde_json::json!({"key": key});
        if let Some(etag) = etag {
            object["eTag"] = etag.into();
        }
        let notification = serde_json::json!({"Records": [{"eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": object}}]});
        let events = bucketfn::event::decode_value(notification)?.into_events()?;
        events.into_iter().next().ok_or_else(|| "no event".into())
    }

    fn thumbnailer(config: Config) -> (Arc<MemoryStore>, Thumbnailer) {
        let store = Arc::new(MemoryStore::new());
        let handler = Thumbnailer::new(config, Arc::clone(&store) as Arc<dyn ObjectStore>);
        (store, handler)
    }

    async fn etag_of(
        store: &MemoryStore,
        bucket: &str,
        key: &str,
    ) -> Result<String, Box<dyn std::error::Error>> {
        Ok(store.head(bucket, key).await?.etag.ok_or("no etag")?)
    }

    fn sweep_event(bucket: &str) -> ObjectEvent {
        ObjectEvent::requested(bucketfn::event::EventKind::Sweep, bucket, String::new())
    }

    #[tokio::test]
    async fn writes_every_size_with_its_source_in_metadata() -> TestResult {
        let config = Config {
            sizes: vec![64, 128],
            format: OutputFormat::Png,
            ..Config::default()
        };
        let (store, handler) = thumbnailer(config);
        store.insert("photos", "2024/a cat.png", png(600, 300)?, "image/png");
        let etag = etag_of(&store, "photos", "2024/a cat.png").await?;
        let outcome = handler
            .handle(
                &created("photos", "2024/a+cat.png", None)?,
                &Invocation::default(),
            )
            .await?;
        assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
        for (size, height) in [(64, 32), (128, 64)] {
            let key = format!("thumbnails/2024/a cat.png/{size}.png");
            let thumb = store.object("photos", &key).ok_or(key)?;
            assert_eq!(thumb.content_type, "image/png");
            assert_eq!(
                thumb.metadata.get("source-key").map(String::as_str),
                Some("2024/a cat.png")
            );
            assert_eq!(thumb.metadata.get("source-etag"), Some(&etag));
            let decoded = image::load_from_memory_with_format(&thumb.body, ImageFormat::Png)?;
            assert_eq!((decoded.width(), decoded.height()), (size, height));
        }
        Ok(())
    }

    #[tokio::test]
    async fn an_unchanged_etag_is_skipped_without_downloading() -> TestResult {
        let (store, handler) = thumbnailer(Config::default());
        store.insert("b", "x.png", png(300, 300)?, "image/png");
        let etag = etag_of(&store, "b", "x.png").await?;
        let event = created("b", "x.png", Some(&etag))?;
        handler.handle(&event, &Invocation::default()).await?;
        // Were the source downloaded again, this garbage would fail the event.
        store.insert("b", "x.png", &b"not an image any more"[..], "image/png");
        let again = handler.handle(&event, &Invocation::default()).await?;
        assert!(
            matches!(&again, Done::Skipped(why) if why.contains("up to date")),
            "{again}"
        );

        let changed = created("b", "x.png", Some("another-etag"))?;
        let err = handler
            .handle(&changed, &Invocation::default())
            .await
            .err()
            .ok_or("stale")?;
        assert!(err.to_string().contains("cannot be thumbnailed"), "{err}");
        Ok(())
    }

    fn mover(layout_bucket: Option<&str>) -> Config {
        Config {
            sizes: vec![64, 128],
            layout: DerivativesLayout {
                bucket: layout_bucket.map(str::to_owned),
                prefix: "thumbnails/".to_owned(),
            },
            delete_source: true,
            ..Config::default()
        }
    }

    type Hook = Box<dyn FnOnce(&MemoryStore) -> Result<(), StoreError> + Send>;

    /// A memory store that notes every call, may claim a larger size on HEAD, and runs a hook
    /// before the next conditional delete: a writer racing the move, or a crash.
    #[derive(Default)]
    struct Watched {
        store: MemoryStore,
        calls: Mutex<Vec<&'static str>>,
        before_delete: Mutex<Option<Hook>>,
        claimed_size: Option<u64>,
    }

    impl Watched {
        fn note(&self, call: &'static str) {
            self.calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(call);
        }

        fn take_calls(&self) -> Vec<&'static str> {
            std::mem::take(&mut *self.calls.lock().unwrap_or_else(PoisonError::into_inner))
        }

        fn before_next_delete(&self, hook: Hook) {
            *self
                .before_delete
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(hook);
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Watched {
        async fn get(&self, b: &str, k: &str, max: u64) -> Result<StoredObject, StoreError> {
            self.note("get");
            self.store.get(b, k, max).await
        }

        async fn open(
            &self,
            b: &str,
            k: &str,
        ) -> Result<(ObjectInfo, bucketfn::storage::ObjectReader), StoreError> {
            self.note("open");
            self.store.open(b, k).await
        }

        async fn head(&self, b: &str, k: &str) -> Result<ObjectInfo, StoreError> {
            self.note("head");
            let mut info = self.store.head(b, k).await?;
            info.size = self.claimed_size.unwrap_or(info.size);
            Ok(info)
        }

        async fn put(&self, b: &str, k: &str, object: NewObject) -> Result<(), StoreError> {
            self.note("put");
            self.store.put(b, k, object).await
        }

        async fn put_if(
            &self,
            b: &str,
            k: &str,
            object: NewObject,
            condition: Condition,
        ) -> Result<(), StoreError> {
            self.note("put_if");
            self.store.put_if(b, k, object, condition).await
        }

        async fn delete(&self, b: &str, k: &str) -> Result<(), StoreError> {
            self.note("delete");
            self.store.delete(b, k).await
        }

        async fn delete_if(
            &self,
            b: &str,
            k: &str,
            condition: Condition,
        ) -> Result<(), StoreError> {
            self.note("delete_if");
            let hook = self
                .before_delete
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(hook) = hook {
                hook(&self.store)?;
            }
            self.store.delete_if(b, k, condition).await
        }

        async fn copy(&self, copy: CopyRequest) -> Result<(), StoreError> {
            self.note("copy");
            self.store.copy(copy).await
        }

        async fn check_bucket(&self, b: &str) -> Result<(), StoreError> {
            self.store.check_bucket(b).await
        }

        async fn list(
            &self,
            b: &str,
            prefix: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<bucketfn::storage::ListPage, StoreError> {
            self.note("list");
            self.store.list(b, prefix, after, limit).await
        }
    }

    fn watched(config: Config, store: Watched) -> (Arc<Watched>, Thumbnailer) {
        let store = Arc::new(store);
        let handler = Thumbnailer::new(config, Arc::clone(&store) as Arc<dyn ObjectStore>);
        (store, handler)
    }

    #[tokio::test]
    async fn moving_copies_every_object_and_stamps_its_outputs_before_a_conditional_delete()
    -> TestResult {
        let (watched, handler) = watched(mover(None), Watched::default());
        let store = &watched.store;
        let photo = png(300, 300)?;
        store.insert("b", "in/ok.png", photo.clone(), "image/png");
        store.insert("b", "docs/report.pdf", &b"%PDF-1.7"[..], "application/pdf");
        let etag = etag_of(store, "b", "in/ok.png").await?;

        let outcome = handler
            .handle(&created("b", "in/ok.png", None)?, &Invocation::default())
            .await?;
        let Done::Completed(what) = &outcome else {
            return Err(format!("moving an image: {outcome}").into());
        };
        assert!(
            what.starts_with("copied it to b/thumbnails/in/ok.png/original.png, wrote ")
                && what.ends_with("; deleted the source b/in/ok.png"),
            "{what}"
        );
        assert!(store.object("b", "in/ok.png").is_none());
        let original = store
            .object("b", "thumbnails/in/ok.png/original.png")
            .ok_or("no original")?;
        assert_eq!(original.body, photo);
        assert_eq!(original.content_type, "image/png");
        let stamped = derivatives::source_metadata("b", "in/ok.png", &etag, None, true);
        assert_eq!(original.metadata, stamped);
        for size in [64, 128] {
            let key = format!("thumbnails/in/ok.png/{size}.jpg");
            assert_eq!(store.object("b", &key).ok_or(key)?.metadata, stamped);
        }
        let calls = watched.take_calls();
        assert!(
            !calls.contains(&"delete"),
            "an unconditional delete: {calls:?}"
        );
        assert_eq!(calls.last(), Some(&"delete_if"), "{calls:?}");

        // Non-images are moved too, unchanged, with no thumbnails.
        let outcome = handler
            .handle(
                &created("b", "docs/report.pdf", None)?,
                &Invocation::default(),
            )
            .await?;
        assert!(
            matches!(&outcome, Done::Completed(what) if what
                == "copied it to b/thumbnails/docs/report.pdf/original.pdf; deleted the source b/docs/report.pdf"),
            "{outcome}"
        );
        let copy = store
            .object("b", "thumbnails/docs/report.pdf/original.pdf")
            .ok_or("no copy")?;
        assert_eq!(
            (&copy.body[..], copy.content_type.as_str()),
            (&b"%PDF-1.7"[..], "application/pdf")
        );
        assert!(derivatives::source_was_moved(&copy.metadata));
        let left: Vec<String> = store.keys().into_iter().map(|(_, k)| k).collect();
        assert_eq!(
            left,
            [
                "thumbnails/docs/report.pdf/original.pdf",
                "thumbnails/in/ok.png/128.jpg",
                "thumbnails/in/ok.png/64.jpg",
                "thumbnails/in/ok.png/original.png",
            ]
        );
        Ok(())
    }

    #[tokio::test]
    async fn an_image_that_cannot_be_thumbnailed_is_neither_copied_nor_deleted() -> TestResult {
        let (store, handler) = thumbnailer(mover(None));
        let broken = &b"\x89PNG\r\n\x1a\n broken"[..];
        store.insert("b", "in/bad.png", broken, "image/png");
        let err = handler
            .handle(&created("b", "in/bad.png", None)?, &Invocation::default())
            .await
            .err()
            .ok_or("bad accepted")?;
        assert!(!err.is_retryable(), "{err}");
        assert_eq!(store.keys(), [("b".to_owned(), "in/bad.png".to_owned())]);
        Ok(())
    }

    #[tokio::test]
    async fn a_source_rewritten_before_its_delete_is_kept() -> TestResult {
        let (watched, handler) = watched(mover(None), Watched::default());
        watched
            .store
            .insert("b", "x.txt", &b"first"[..], "text/plain");
        watched.before_next_delete(Box::new(|store| {
            store.insert("b", "x.txt", &b"second"[..], "text/plain");
            Ok(())
        }));
        let outcome = handler
            .handle(&created("b", "x.txt", None)?, &Invocation::default())
            .await?;
        assert!(
            matches!(&outcome, Done::Completed(what)
                if what.ends_with("; kept the source b/x.txt: it changed after it was read")),
            "{outcome}"
        );
        let source = watched.store.object("b", "x.txt").ok_or("source deleted")?;
        assert_eq!(&source.body[..], b"second");
        let copy = watched
            .store
            .object("b", "thumbnails/x.txt/original.txt")
            .ok_or("no copy")?;
        assert_eq!(&copy.body[..], b"first");
        Ok(())
    }

    #[tokio::test]
    async fn a_redelivery_after_a_crash_before_the_delete_only_deletes() -> TestResult {
        let (watched, handler) = watched(mover(None), Watched::default());
        watched
            .store
            .insert("b", "in/again.png", png(40, 40)?, "image/png");
        watched.before_next_delete(Box::new(|_| {
            Err(StoreError::Unavailable {
                op: bucketfn::storage::Op::Delete,
                bucket: "b".to_owned(),
                key: "in/again.png".to_owned(),
                source: "the connection dropped".into(),
            })
        }));
        let event = created("b", "in/again.png", None)?;
        let err = handler
            .handle(&event, &Invocation::default())
            .await
            .err()
            .ok_or("the failed delete was reported as success")?;
        assert!(err.is_retryable(), "{err}");
        assert!(watched.store.object("b", "in/again.png").is_some());
        watched.take_calls();

        let retried = handler.handle(&event, &Invocation::default()).await?;
        assert!(
            matches!(&retried, Done::Completed(what)
                if what == "found its outputs already made; deleted the source b/in/again.png"),
            "{retried}"
        );
        assert!(watched.store.object("b", "in/again.png").is_none());
        // The source's HEAD, one per output, and the delete: nothing read, copied or written.
        assert_eq!(
            watched.take_calls(),
            ["head", "head", "head", "head", "delete_if"]
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_source_over_the_copy_limit_is_permanent_and_kept() -> TestResult {
        let oversize = Watched {
            claimed_size: Some(MAX_COPY_BYTES + 1),
            ..Watched::default()
        };
        let (watched, handler) = watched(mover(None), oversize);
        watched
            .store
            .insert("b", "huge.mxf", &b"x"[..], "video/mxf");
        let err = handler
            .handle(&created("b", "huge.mxf", None)?, &Invocation::default())
            .await
            .err()
            .ok_or("moved")?;
        assert!(!err.is_retryable(), "{err}");
        assert_eq!(
            err.to_string(),
            "b/huge.mxf is 5368709121 bytes, over the 5368709120-byte limit of one server-side \
             copy (S3 CopyObject); it is not moved and nothing was deleted"
        );
        assert_eq!(watched.store.keys().len(), 1);
        assert_eq!(watched.take_calls(), ["head"]);
        Ok(())
    }

    #[tokio::test]
    async fn a_shared_destination_keeps_the_thumbnails_of_each_source_bucket() -> TestResult {
        let config = Config {
            layout: DerivativesLayout {
                bucket: Some("thumbs".to_owned()),
                prefix: "thumbnails/".to_owned(),
            },
            ..Config::default()
        };
        let (store, handler) = thumbnailer(config);
        let inv = Invocation::default();
        store.insert("photos", "cat.png", png(300, 300)?, "image/png");
        store.insert("scans", "cat.png", png(400, 200)?, "image/png");
        // Under the prefix, but in a source bucket: a source like any other.
        store.insert("photos", "thumbnails/x.png", png(50, 50)?, "image/png");
        for (bucket, key) in [
            ("photos", "cat.png"),
            ("scans", "cat.png"),
            ("photos", "thumbnails/x.png"),
        ] {
            let outcome = handler.handle(&created(bucket, key, None)?, &inv).await?;
            assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
        }
        for bucket in ["photos", "scans"] {
            let key = format!("thumbnails/{bucket}/cat.png/256.jpg");
            let thumb = store.object("thumbs", &key).ok_or(key)?;
            assert_eq!(
                thumb
                    .metadata
                    .get(metadata::SOURCE_BUCKET)
                    .map(String::as_str),
                Some(bucket)
            );
        }
        assert!(
            store
                .object("thumbs", "thumbnails/photos/thumbnails/x.png/256.jpg")
                .is_some()
        );
        // What lands in the destination is never a source.
        let outcome = handler
            .handle(
                &created("thumbs", "thumbnails/photos/cat.png/256.jpg", None)?,
                &inv,
            )
            .await?;
        assert!(
            matches!(&outcome, Done::Skipped(why) if why.contains("is a derivative")),
            "{outcome}"
        );
        Ok(())
    }

    /// The event fails permanently, naming the missing bucket, instead of being a skip.
    async fn refused_for_missing(
        handler: &Thumbnailer,
        event: &ObjectEvent,
        bucket: &str,
    ) -> TestResult {
        let err = handler
            .handle(event, &Invocation::default())
            .await
            .err()
            .ok_or("a missing bucket was a skip")?;
        assert!(!err.is_retryable(), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("bucket \"{bucket}\" does not exist")),
            "{err}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_bucket_is_permanent_and_never_a_gone_object() -> TestResult {
        for delete_source in [false, true] {
            let (store, handler) = thumbnailer(Config {
                delete_source,
                ..Config::default()
            });
            store.remove_bucket("b");
            refused_for_missing(&handler, &created("b", "x.png", None)?, "b").await?;
        }
        // A destination that is not there: nothing is deleted.
        let (store, handler) = thumbnailer(mover(Some("thumbs")));
        store.insert("photos", "x.png", png(50, 50)?, "image/png");
        store.remove_bucket("thumbs");
        refused_for_missing(&handler, &created("photos", "x.png", None)?, "thumbs").await?;
        assert!(store.object("photos", "x.png").is_some());
        Ok(())
    }

    #[tokio::test]
    async fn skips_own_outputs_non_images_removals_and_gone_objects() -> TestResult {
        let (store, handler) = thumbnailer(Config::default());
        let inv = Invocation::default();
        for key in ["thumbnails/x.png/256.jpg", "notes.txt", "gone.png"] {
            let outcome = handler.handle(&created("b", key, None)?, &inv).await?;
            assert!(matches!(outcome, Done::Skipped(_)), "{key}: {outcome}");
        }
        let mut removed = created("b", "x.png", None)?;
        removed.kind = EventKind::Removed;
        assert!(matches!(
            handler.handle(&removed, &inv).await?,
            Done::Skipped(_)
        ));
        assert!(store.keys().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn an_image_without_an_image_extension_is_known_by_its_first_bytes() -> TestResult {
        let (store, handler) = thumbnailer(Config::default());
        let inv = Invocation::default();
        store.insert("b", "dog12345", png(300, 200)?, "application/octet-stream");
        store.insert("b", "scan.dat", png(300, 200)?, "application/octet-stream");
        // Text that begins as BMP's and PNM's signatures do, and an MP4 (an ISO-BMFF box like
        // HEIC's, of another brand).
        store.insert(
            "b",
            "BMW-report",
            &b"BM sales up 4%, costs flat\n"[..],
            "text/plain",
        );
        store.insert("b", "P3-notes", &b"P3 plan: ship it\n"[..], "text/plain");
        store.insert(
            "b",
            "clip",
            &b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2"[..],
            "video/mp4",
        );
        for key in ["dog12345", "scan.dat"] {
            let outcome = handler.handle(&created("b", key, None)?, &inv).await?;
            assert!(matches!(outcome, Done::Completed(_)), "{key}: {outcome}");
            let thumbnail = format!("thumbnails/{key}/256.jpg");
            assert!(store.head("b", &thumbnail).await.is_ok(), "{thumbnail}");
        }
        for key in ["BMW-report", "P3-notes", "clip"] {
            let outcome = handler.handle(&created("b", key, None)?, &inv).await?;
            assert!(
                matches!(&outcome, Done::Skipped(why) if why.contains("not an image")),
                "{key}: {outcome}"
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn hostile_keys_and_azure_sources_are_permanent() -> TestResult {
        let (_store, handler) = thumbnailer(Config::default());
        let err = handler
            .handle(
                &created("b", "..%2F..%2Fetc%2Fx.jpg", None)?,
                &Invocation::default(),
            )
            .await
            .err()
            .ok_or("dot segments accepted")?;
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("`..` segment"), "{err}");

        let mut azure = created("container", "x.png", None)?;
        azure.source = Source::Azure;
        let err = handler
            .handle(&azure, &Invocation::default())
            .await
            .err()
            .ok_or("azure accepted")?;
        assert!(
            err.to_string().contains("azure has no storage backend"),
            "{err}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_sweep_makes_what_is_missing_or_stale_and_skips_the_rest() -> TestResult {
        let (store, handler) = thumbnailer(Config::default());
        store.insert("b", "fresh.png", png(50, 50)?, "image/png");
        handler
            .handle(&created("b", "fresh.png", None)?, &Invocation::default())
            .await?;
        store.insert("b", "missing.png", png(50, 50)?, "image/png");
        store.insert("b", "stale.png", png(50, 50)?, "image/png");
        handler
            .handle(&created("b", "stale.png", None)?, &Invocation::default())
            .await?;
        store.insert("b", "stale.png", png(60, 60)?, "image/png");
        store.insert("b", "notes.txt", &b"hello"[..], "text/plain");

        let outcome = handler
            .handle(&sweep_event("b"), &Invocation::default())
            .await?;
        let Done::Completed(summary) = outcome else {
            return Err(format!("sweep outcome {outcome}").into());
        };
        assert!(summary.contains("2 done, 2 skipped, 0 failed"), "{summary}");
        assert!(summary.contains("finished"), "{summary}");
        let StoredObject { info, .. } = store
            .get("b", "thumbnails/stale.png/256.jpg", 1 << 20)
            .await?;
        assert_eq!(
            info.metadata.get("source-etag"),
            Some(&etag_of(&store, "b", "stale.png").await?)
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_sweep_stopped_by_its_deadline_is_continued_by_the_next() -> TestResult {
        let (store, handler) = thumbnailer(Config {
            sweep_concurrency: 1,
            ..Config::default()
        });
        for n in 0..40 {
            store.insert("b", &format!("img-{n:02}.png"), png(400, 400)?, "image/png");
        }
        // Runs of 400 ms until the pass is finished: the first stops part-way (forty decodes
        // take seconds in a test build) and keeps its cursor, and no run redoes what an
        // earlier one did. How far each run gets depends on the machine, so only the sum is
        // checked.
        let mut done = 0;
        for run in 1.. {
            let hurried = Invocation {
                deadline: Some(Instant::now() + Duration::from_millis(400)),
                ..Invocation::default()
            };
            let summary = handler
                .handle(&sweep_event("b"), &hurried)
                .await?
                .to_string();
            done += summary
                .split_once("sweep: ")
                .and_then(|(_, counts)| counts.split(' ').next())
                .ok_or_else(|| format!("no counts in {summary}"))?
                .parse::<usize>()?;
            if summary.contains("; finished") {
                assert!(run > 1, "the first run was to stop part-way: {summary}");
                break;
            }
            assert!(
                summary.contains("stopped a margin before the deadline"),
                "{summary}"
            );
            // Nothing to keep until an image is done (a loaded machine may need a few runs).
            let kept = store.object("b", "thumbnails/.sweep/b/cursor.json");
            assert!(
                done == 0 || kept.is_some(),
                "run {run} kept no cursor: {summary}"
            );
            assert!(run < 400, "not finished after {run} runs: {summary}");
        }
        assert_eq!(done, 40, "every image made once");
        for n in 0..40 {
            assert!(
                store
                    .object("b", &format!("thumbnails/img-{n:02}.png/256.jpg"))
                    .is_some(),
                "img-{n:02}"
            );
        }
        assert!(
            store
                .object("b", "thumbnails/.sweep/b/cursor.json")
                .is_none()
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_scheduled_sweep_needs_a_bucket() -> TestResult {
        let (_store, handler) = thumbnailer(Config::default());
        let err = handler
            .handle(&sweep_event(""), &Invocation::default())
            .await
            .err()
            .ok_or("no bucket accepted")?;
        assert!(err.to_string().contains("SOURCE_BUCKET"), "{err}");
        let configured = Config {
            source_bucket: Some("b".into()),
            ..Config::default()
        };
        let (_store, handler) = thumbnailer(configured);
        assert!(
            handler
                .handle(&sweep_event(""), &Invocation::default())
                .await
                .is_ok()
        );
        Ok(())
    }

    /// The thumbnails written, by key.
    fn thumbnails_in(store: &MemoryStore) -> Vec<String> {
        store
            .keys()
            .into_iter()
            .filter(|(_, key)| key.starts_with("thumbnails/"))
            .map(|(_, key)| key)
            .collect()
    }

    #[tokio::test]
    async fn an_image_over_the_memory_budget_is_permanent_and_names_it() -> TestResult {
        let (store, handler) = thumbnailer(Config {
            sizes: vec![1024],
            ..Config::default()
        });
        // A progressive CMYK JPEG under the template's pixel cap, whose kept coefficients
        // take 200 MiB for a thumbnail of more than an eighth of its size (262 MiB in all).
        let bomb = pipeline::hostile::progressive_jpeg(7745, 7745, 4, 469_481, 0);
        store.insert("b", "big.jpg", bomb, "image/jpeg");
        let invocation = Invocation {
            memory: MemoryBudget::new(64 * 1024 * 1024),
            ..Invocation::default()
        };
        let err = handler
            .handle(&created("b", "big.jpg", None)?, &invocation)
            .await
            .err()
            .ok_or("decoded")?;
        assert!(!err.is_retryable(), "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with(
                "b/big.jpg, the progressive (half scale) CMYK JPEG 7745x7745, needs 262.3 MiB"
            ),
            "{message}"
        );
        assert!(
            message.ends_with(" MiB, over the memory budget of 64.0 MiB (MAX_DECODE_BYTES)"),
            "{message}"
        );
        assert!(thumbnails_in(&store).is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_memory_budget_taken_by_other_work_is_retryable() -> TestResult {
        let (store, handler) = thumbnailer(Config::default());
        store.insert("b", "x.png", png(300, 300)?, "image/png");
        let memory = MemoryBudget::new(64 * 1024 * 1024);
        let _taken = memory.try_reserve("another image", memory.limit())?;
        // The wait for the budget ends at the deadline.
        let invocation = Invocation {
            memory,
            stop: Stop::at(Some(Instant::now() + Duration::from_secs(1))),
            ..Invocation::default()
        };
        let err = handler
            .handle(&created("b", "x.png", None)?, &invocation)
            .await
            .err()
            .ok_or("made")?;
        assert!(err.is_retryable(), "{err}");
        assert!(
            err.to_string()
                .contains("the memory budget of 64.0 MiB is taken by other work; try again later"),
            "{err}"
        );
        assert!(thumbnails_in(&store).is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_deadline_in_the_past_stops_the_work_and_writes_nothing() -> TestResult {
        let (store, handler) = thumbnailer(Config::default());
        store.insert("b", "x.png", png(300, 300)?, "image/png");
        let now = Instant::now();
        let late = Invocation {
            deadline: Some(now),
            stop: Stop::at(Some(now)),
            ..Invocation::default()
        };
        let err = handler
            .handle(&created("b", "x.png", None)?, &late)
            .await
            .err()
            .ok_or("made")?;
        assert!(err.is_retryable(), "{err}");
        assert_eq!(
            err.to_string(),
            "the thumbnails of b/x.png were not finished: stopped at the deadline before the work was finished"
        );
        assert!(thumbnails_in(&store).is_empty());
        assert_eq!(late.memory.available(), late.memory.limit());
        Ok(())
    }

    #[tokio::test]
    async fn an_abandoned_decode_stops_and_gives_its_memory_back() -> TestResult {
        let (store, handler) = thumbnailer(Config::default());
        let photo = pipeline::hostile::photo_jpeg(3000, 2000, true)?;
        store.insert("b", "big.jpg", photo, "image/jpeg");
        let invocation = Invocation::default();
        let event = created("b", "big.jpg", None)?;
        // A runtime that stops waiting drops the handler's future; the decode runs on a
        // blocking thread of its own.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(1),
            handler.handle(&event, &invocation),
        )
        .await;
        assert!(abandoned.is_err(), "the decode finished within the timeout");
        assert!(invocation.stop.is_stopped());
        let given_back = async {
            while invocation.memory.available() < invocation.memory.limit() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), given_back)
            .await
            .map_err(|_| "the abandoned decode kept its memory")?;
        assert!(thumbnails_in(&store).is_empty());
        Ok(())
    }
}
