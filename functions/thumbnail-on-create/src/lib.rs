//! thumbnail-on-create: when an image lands in a bucket, write its thumbnails (one per
//! configured size, in the configured format) under deterministic keys; catch up on a whole
//! bucket on a schedule; optionally move rather than copy (delete the source once safe).

mod config;
pub mod keys;
pub mod pipeline;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bucketfn::budget::{Stop, Stopped};
use bucketfn::runtime::{Derived, Location};
use bucketfn::storage::{ObjectPath, ensure_readable};
use bucketfn::sweep::{Scope, sweep};
use bucketfn::{
    Done, EventKind, Function, Handler, HandlerError, Invocation, NewObject, ObjectEvent,
    ObjectStore, Outcome, StartError, StoreError,
};
use bytes::Bytes;
use futures_util::future::try_join_all;

pub use config::Config;
use pipeline::{PipelineError, Spec, Thumbnail};

/// Metadata every thumbnail carries, naming what it was made from.
const SOURCE_BUCKET: &str = "source-bucket";
const SOURCE_KEY: &str = "source-key";
const SOURCE_ETAG: &str = "source-etag";

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

/// Where one source's thumbnails go.
struct Outputs {
    bucket: String,
    /// `(size, key)` per configured size.
    keys: Vec<(u32, String)>,
}

impl Thumbnailer {
    pub fn new(config: Config, store: Arc<dyn ObjectStore>) -> Self {
        let spec = Spec {
            sizes: config.sizes.clone(),
            format: config.format,
            quality: config.quality,
            background: config.background,
            upscale: config.upscale,
            max_pixels: config.max_source_pixels,
        };
        Self {
            config,
            spec,
            store,
        }
    }

    /// Makes sure `bucket/key` has current thumbnails. `etag` is what the event or listing
    /// said the source's etag is, when it said.
    async fn refresh(
        &self,
        bucket: &str,
        key: &str,
        etag: Option<&str>,
        invocation: &Invocation,
    ) -> Outcome {
        let destination = self.config.bucket.as_deref().unwrap_or(bucket);
        if keys::is_own_output(destination, &self.config.prefix, bucket, key) {
            return Ok(Done::Skipped(format!(
                "{} is a thumbnail (under {:?})",
                ObjectPath(bucket, key),
                self.config.prefix
            )));
        }
        if !keys::is_image_key(key) {
            return Ok(Done::Skipped(format!(
                "{} is not an image (by its extension)",
                ObjectPath(bucket, key)
            )));
        }
        let outputs = self.outputs(destination, key)?;

        // A redelivered event, or a sweep over done work, costs HEADs and no download.
        let known_etag = match etag {
            Some(etag) => Some(etag.to_owned()),
            None => match self.store.head(bucket, key).await {
                Ok(info) => info.etag,
                Err(StoreError::NotFound { .. }) => return Ok(gone(bucket, key)),
                Err(e) => return Err(e.into()),
            },
        };
        if let Some(etag) = &known_etag
            && self.outputs_made_from(&outputs, etag).await?
        {
            return match self.config.delete_source {
                true => {
                    self.delete_source(bucket, key, etag, "thumbnails were up to date")
                        .await
                }
                false => Ok(Done::Skipped(format!(
                    "the thumbnails of {} are up to date",
                    ObjectPath(bucket, key)
                ))),
            };
        }

        let source = match self
            .store
            .get(bucket, key, self.config.max_source_bytes)
            .await
        {
            Ok(object) => object,
            // The object was deleted (or replaced and deleted) after the event was sent.
            Err(StoreError::NotFound { .. }) => return Ok(gone(bucket, key)),
            Err(e) => return Err(e.into()),
        };
        let stamp = source.info.etag.clone().or(known_etag).unwrap_or_default();
        let thumbnails = self.make(bucket, key, source.body, invocation).await?;

        let metadata = BTreeMap::from([
            (SOURCE_BUCKET.to_owned(), bucket.to_owned()),
            (SOURCE_KEY.to_owned(), key.to_owned()),
            (SOURCE_ETAG.to_owned(), stamp.clone()),
        ]);
        let writes = thumbnails
            .iter()
            .zip(&outputs.keys)
            .map(|(thumbnail, (_, output))| {
                let object = NewObject {
                    body: Bytes::from(thumbnail.bytes.clone()),
                    content_type: self.config.format.content_type().to_owned(),
                    metadata: metadata.clone(),
                };
                self.store.put(&outputs.bucket, output, object)
            });
        try_join_all(writes).await?;
        let written: Vec<String> = thumbnails
            .iter()
            .zip(&outputs.keys)
            .map(|(t, (_, output))| {
                format!(
                    "{} ({}x{}, {} bytes)",
                    ObjectPath(&outputs.bucket, output),
                    t.width,
                    t.height,
                    t.bytes.len()
                )
            })
            .collect();
        let made = format!("wrote {}", written.join(", "));

        if self.config.delete_source {
            // Move semantics: the source goes only once every output is readable and stamped
            // with the version that was read.
            if !self.outputs_made_from(&outputs, &stamp).await? {
                return Err(HandlerError::retryable(format!(
                    "the thumbnails of {} could not be verified after writing; the source is kept",
                    ObjectPath(bucket, key)
                )));
            }
            return self.delete_source(bucket, key, &stamp, &made).await;
        }
        Ok(Done::Completed(made))
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

    fn outputs(&self, destination: &str, key: &str) -> Result<Outputs, HandlerError> {
        let extension = self.config.format.extension();
        let keys = self
            .config
            .sizes
            .iter()
            .map(|&size| {
                keys::output_key(&self.config.prefix, key, size, extension).map(|k| (size, k))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(HandlerError::permanent)?;
        Ok(Outputs {
            bucket: destination.to_owned(),
            keys,
        })
    }

    /// True when every output exists and was made from the source version `etag`.
    async fn outputs_made_from(&self, outputs: &Outputs, etag: &str) -> Result<bool, HandlerError> {
        let heads = outputs.keys.iter().map(|(_, key)| async move {
            match self.store.head(&outputs.bucket, key).await {
                Ok(info) => Ok(info.metadata.get(SOURCE_ETAG).map(String::as_str) == Some(etag)),
                Err(StoreError::NotFound { .. }) => Ok(false),
                Err(e) => Err(HandlerError::from(e)),
            }
        });
        Ok(try_join_all(heads)
            .await?
            .into_iter()
            .all(|current| current))
    }

    /// Deletes the source if it is still the version its thumbnails were made from.
    async fn delete_source(&self, bucket: &str, key: &str, etag: &str, made: &str) -> Outcome {
        match self.store.head(bucket, key).await {
            Ok(info) if info.etag.as_deref() == Some(etag) => {
                self.store.delete(bucket, key).await?;
                Ok(Done::Completed(format!(
                    "{made}; deleted the source {}",
                    ObjectPath(bucket, key)
                )))
            }
            Ok(_) => Ok(Done::Completed(format!(
                "{made}; kept the source {}: it changed after it was read",
                ObjectPath(bucket, key)
            ))),
            Err(StoreError::NotFound { .. }) => Ok(Done::Completed(made.to_owned())),
            Err(e) => Err(e.into()),
        }
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
        let destination = self.config.bucket.as_deref().unwrap_or(bucket);
        let scope = Scope {
            bucket,
            prefix,
            start_after: None,
            exclude_prefix: (destination == bucket).then_some(self.config.prefix.as_str()),
            cursor: Some((
                destination,
                format!("{}.sweep/{bucket}/{prefix}cursor.json", self.config.prefix),
            )),
        };
        let summary = sweep(
            self.store.as_ref(),
            scope,
            invocation,
            self.config.sweep_concurrency,
            |object| async move {
                self.refresh(bucket, &object.key, object.etag.as_deref(), invocation)
                    .await
            },
        )
        .await?;
        summary.into_outcome()
    }
}

fn gone(bucket: &str, key: &str) -> Done {
    Done::Skipped(format!("{} no longer exists", ObjectPath(bucket, key)))
}

impl Handler for Thumbnailer {
    fn inputs(&self) -> Option<Location> {
        let bucket = self.config.source_bucket.clone()?;
        let destination = self.config.bucket.as_deref().unwrap_or(&bucket);
        Some(Location {
            exclude_prefix: (destination == bucket).then(|| self.config.prefix.clone()),
            bucket,
            prefix: self.config.source_prefix.clone(),
        })
    }

    fn outputs_of(&self, key: &str) -> Vec<Derived> {
        let Some(bucket) = self.config.source_bucket.as_deref() else {
            return Vec::new();
        };
        if !keys::is_image_key(key) {
            return Vec::new();
        }
        let destination = self.config.bucket.as_deref().unwrap_or(bucket);
        self.outputs(destination, key)
            .map(|outputs| {
                outputs
                    .keys
                    .into_iter()
                    .map(|(size, key)| Derived {
                        label: format!("{size} px"),
                        bucket: outputs.bucket.clone(),
                        key,
                        image: true,
                    })
                    .collect()
            })
            .unwrap_or_default()
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
    use bucketfn::budget::MemoryBudget;
    use bucketfn::storage::MemoryStore;
    use bucketfn::{Source, StoredObject};
    use image::{DynamicImage, ImageBuffer, ImageFormat};
    use pipeline::OutputFormat;
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

    #[tokio::test]
    async fn moving_deletes_the_source_only_once_its_thumbnails_are_safe() -> TestResult {
        let config = Config {
            delete_source: true,
            ..Config::default()
        };
        let (store, handler) = thumbnailer(config);
        store.insert("b", "in/ok.png", png(300, 300)?, "image/png");
        store.insert(
            "b",
            "in/bad.png",
            &b"\x89PNG\r\n\x1a\n broken"[..],
            "image/png",
        );

        let outcome = handler
            .handle(&created("b", "in/ok.png", None)?, &Invocation::default())
            .await?;
        assert!(
            matches!(&outcome, Done::Completed(what) if what.contains("deleted the source")),
            "{outcome}"
        );
        assert!(store.object("b", "in/ok.png").is_none());
        assert!(store.object("b", "thumbnails/in/ok.png/256.jpg").is_some());

        let err = handler
            .handle(&created("b", "in/bad.png", None)?, &Invocation::default())
            .await
            .err()
            .ok_or("bad accepted")?;
        assert!(!err.is_retryable());
        assert!(
            store.object("b", "in/bad.png").is_some(),
            "a source without thumbnails was deleted"
        );

        // A retry after a crash between writing and deleting finishes the move.
        store.insert("b", "in/again.png", png(40, 40)?, "image/png");
        let moved = Config {
            delete_source: false,
            ..Config::default()
        };
        Thumbnailer::new(moved, Arc::clone(&store) as Arc<dyn ObjectStore>)
            .handle(&created("b", "in/again.png", None)?, &Invocation::default())
            .await?;
        let retried = handler
            .handle(&created("b", "in/again.png", None)?, &Invocation::default())
            .await?;
        assert!(
            matches!(&retried, Done::Completed(what) if what.contains("deleted the source")),
            "{retried}"
        );
        assert!(store.object("b", "in/again.png").is_none());
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
        for n in 0..12 {
            store.insert("b", &format!("img-{n:02}.png"), png(400, 400)?, "image/png");
        }
        let hurried = Invocation {
            deadline: Some(Instant::now() + Duration::from_millis(30)),
            ..Invocation::default()
        };
        let first = handler.handle(&sweep_event("b"), &hurried).await?;
        assert!(
            first.to_string().contains("the next run continues after"),
            "{first}"
        );
        assert!(
            store
                .object("b", "thumbnails/.sweep/b/cursor.json")
                .is_some()
        );

        let second = handler
            .handle(&sweep_event("b"), &Invocation::default())
            .await?;
        assert!(second.to_string().contains("finished"), "{second}");
        assert!(
            !second.to_string().contains(" 12 done"),
            "the second run started over: {second}"
        );
        for n in 0..12 {
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
        let (store, handler) = thumbnailer(Config::default());
        // A progressive CMYK JPEG under the template's pixel cap, whose coefficients alone
        // take 459 MiB.
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
            message.starts_with("b/big.jpg, the progressive CMYK JPEG 7745x7745, needs 4"),
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
