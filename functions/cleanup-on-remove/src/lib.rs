//! cleanup-on-remove: when an object is removed from a bucket, remove what was made from it:
//! its thumbnails (`derivatives`) and its MediaHaven essence and collaterals (`mediahaven`),
//! unless the remove is older than the object now under the key.

pub mod archive;
mod config;
pub mod derivatives;
pub mod freshness;

use std::sync::Arc;

use bucketfn::ObjectPath;
use bucketfn::api::mediahaven::MediaHaven;
use bucketfn::outcome::BoxError;
use bucketfn::storage::ensure_readable;
use bucketfn::{
    Done, EventKind, Function, Handler, Invocation, ObjectEvent, ObjectStore, Outcome, StartError,
};

pub use config::Config;
use derivatives::Removal;
use freshness::Freshness;

/// The handler: configuration, the store, and MediaHaven when that target is on.
pub struct CleanupOnRemove {
    config: Config,
    store: Arc<dyn ObjectStore>,
    mediahaven: Option<MediaHaven>,
}

impl CleanupOnRemove {
    pub fn new(config: Config, store: Arc<dyn ObjectStore>) -> Result<Self, BoxError> {
        let mediahaven = match &config.mediahaven {
            Some(settings) => Some(MediaHaven::new(settings.clone())?),
            None => None,
        };
        Ok(Self {
            config,
            store,
            mediahaven,
        })
    }

    async fn clean(&self, event: &ObjectEvent, invocation: &Invocation) -> Outcome {
        let (bucket, key) = (event.bucket.as_str(), event.key.as_str());
        let layout = &self.config.layout;
        if self.config.derivatives && layout.is_derivative(bucket, key) {
            return Ok(Done::Skipped(format!(
                "{} is a thumbnail (under {:?})",
                ObjectPath(bucket, key),
                layout.prefix
            )));
        }
        ensure_readable(event.source, bucket, key)?;
        let freshness = freshness::check(self.store.as_ref(), event, invocation).await?;
        let removal = match &freshness {
            Freshness::Gone => Removal::All,
            Freshness::VersionRemoved(version) => Removal::Version(version),
            Freshness::Stale(why) => {
                return Ok(Done::Skipped(format!(
                    "the remove of {} is stale: {why}",
                    ObjectPath(bucket, key)
                )));
            }
        };

        let mut did = Vec::new();
        if self.config.derivatives {
            let cleaned =
                derivatives::remove(self.store.as_ref(), layout, bucket, key, removal).await?;
            if !cleaned.deleted.is_empty() {
                did.push(format!("deleted {} thumbnail(s)", cleaned.deleted.len()));
            }
            if cleaned.kept_moved > 0 {
                did.push(format!(
                    "kept {} derivative(s) of a moved source",
                    cleaned.kept_moved
                ));
            }
        }
        // Archive records describe the object, not one version of it: they go only with the
        // object.
        if let (Some(mediahaven), Removal::All) = (&self.mediahaven, removal) {
            let removed = archive::remove(mediahaven, bucket, key, self.config.delete_delay)
                .await
                .map_err(|e| e.about("removing the MediaHaven records", bucket, key))?;
            if let Some(removed) = removed {
                did.push(format!(
                    "deleted MediaHaven essence {} and {} collateral(s)",
                    removed.essence.unwrap_or_default(),
                    removed.collaterals
                ));
            }
        }
        if did.is_empty() {
            Ok(Done::Skipped(format!(
                "nothing was made from {}",
                ObjectPath(bucket, key)
            )))
        } else {
            Ok(Done::Completed(format!(
                "{}: {}",
                ObjectPath(bucket, key),
                did.join(", ")
            )))
        }
    }
}

impl Handler for CleanupOnRemove {
    fn handles(&self, kind: EventKind) -> bool {
        kind == EventKind::Removed
    }

    /// `THUMBNAIL_BUCKET`, when the derivatives are not in the source's bucket.
    fn buckets(&self) -> Vec<String> {
        match self.config.derivatives {
            true => self.config.layout.bucket.iter().cloned().collect(),
            false => Vec::new(),
        }
    }

    async fn handle(&self, event: &ObjectEvent, invocation: &Invocation) -> Outcome {
        match event.kind {
            EventKind::Removed => self.clean(event, invocation).await,
            EventKind::Created | EventKind::Sweep | EventKind::Other => {
                Ok(Done::not_handled(Self::NAME, event.kind))
            }
        }
    }
}

impl Function for CleanupOnRemove {
    const NAME: &'static str = "cleanup-on-remove";
    const ABOUT: &'static str =
        "Removes the thumbnails and MediaHaven records of every object removed from a bucket";

    type Config = Config;

    async fn start(config: Config, store: Arc<dyn ObjectStore>) -> Result<Self, StartError> {
        Self::new(config, store).map_err(StartError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucketfn::budget::Stop;
    use bucketfn::storage::{MemoryStore, PassThrough};
    use bucketfn::{NewObject, ObjectInfo, StoreError};
    use chrono::{DateTime, Utc};
    use std::time::{Duration, Instant};

    type TestResult = Result<(), BoxError>;

    fn removed(bucket: &str, key: &str) -> Result<ObjectEvent, BoxError> {
        let v = serde_json::json!({"Records": [{"eventSource": "aws:s3",
            "eventName": "ObjectRemoved:Delete", "eventTime": "2024-05-01T10:00:00Z",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]});
        let events = bucketfn::event::decode_value(v)?.into_events()?;
        events.into_iter().next().ok_or_else(|| "no event".into())
    }

    fn handler() -> Result<(Arc<MemoryStore>, CleanupOnRemove), BoxError> {
        let store = Arc::new(MemoryStore::new());
        let handler = CleanupOnRemove::new(Config::derivatives_only(), store.clone())?;
        Ok((store, handler))
    }

    #[tokio::test]
    async fn removes_every_size_and_format_and_nothing_else() -> TestResult {
        let (store, handler) = handler()?;
        for key in [
            "thumbnails/a b.jpg/256.jpg",
            "thumbnails/a b.jpg/64.webp",
            "thumbnails/a b.jpg/1024.png",
            "thumbnails/a b.jpg/notes.txt",
            "thumbnails/a b.jpg/x.jpg/256.jpg",
            "thumbnails/a b.jpg2/256.jpg",
            "a b.jpg2",
        ] {
            store.insert("photos", key, &b"x"[..], "image/jpeg");
        }
        let outcome = handler
            .handle(&removed("photos", "a+b.jpg")?, &Invocation::default())
            .await?;
        assert!(
            matches!(&outcome, Done::Completed(what) if what.contains("deleted 3 thumbnail(s)")),
            "{outcome}"
        );
        let left: Vec<String> = store.keys().into_iter().map(|(_, k)| k).collect();
        assert_eq!(
            left,
            [
                "a b.jpg2",
                "thumbnails/a b.jpg/notes.txt",
                "thumbnails/a b.jpg/x.jpg/256.jpg",
                "thumbnails/a b.jpg2/256.jpg",
            ]
        );
        // A redelivery finds nothing left to do.
        let again = handler
            .handle(&removed("photos", "a+b.jpg")?, &Invocation::default())
            .await?;
        assert!(matches!(again, Done::Skipped(_)), "{again}");
        Ok(())
    }

    #[tokio::test]
    async fn a_stale_remove_deletes_nothing() -> TestResult {
        let (store, handler) = handler()?;
        store.insert("photos", "a.jpg", &b"new"[..], "image/jpeg");
        store.insert(
            "photos",
            "thumbnails/a.jpg/256.jpg",
            &b"t"[..],
            "image/jpeg",
        );
        let outcome = handler
            .handle(&removed("photos", "a.jpg")?, &Invocation::default())
            .await?;
        assert!(
            matches!(&outcome, Done::Skipped(why) if why.contains("stale")),
            "{outcome}"
        );
        assert_eq!(store.keys().len(), 2);
        Ok(())
    }

    /// The memory store as S3 reports objects: with a Last-Modified, and a current version.
    struct AsS3 {
        inner: MemoryStore,
        modified: Option<DateTime<Utc>>,
        version: Option<String>,
    }

    #[async_trait::async_trait]
    impl PassThrough for AsS3 {
        fn inner(&self) -> &dyn ObjectStore {
            &self.inner
        }

        async fn head(&self, b: &str, k: &str) -> Result<ObjectInfo, StoreError> {
            let mut info = self.inner.head(b, k).await?;
            info.last_modified = self.modified;
            info.version_id.clone_from(&self.version);
            Ok(info)
        }
    }

    fn as_s3(
        modified: &str,
        version: Option<&str>,
    ) -> Result<(Arc<AsS3>, CleanupOnRemove), BoxError> {
        let store = Arc::new(AsS3 {
            inner: MemoryStore::new(),
            modified: Some(modified.parse()?),
            version: version.map(str::to_owned),
        });
        let handler = CleanupOnRemove::new(Config::derivatives_only(), store.clone())?;
        Ok((store, handler))
    }

    async fn derivative(
        store: &dyn ObjectStore,
        key: &str,
        metadata: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        let object = NewObject {
            body: b"t".to_vec().into(),
            content_type: "image/jpeg".to_owned(),
            metadata: metadata
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        };
        store.put("photos", key, object).await
    }

    fn removed_at(time: &str, version: Option<&str>) -> Result<ObjectEvent, BoxError> {
        let mut event = removed("photos", "a.jpg")?;
        event.time = Some(time.parse()?);
        event.version_id = version.map(str::to_owned);
        Ok(event)
    }

    #[tokio::test]
    async fn a_remove_dated_in_the_future_for_a_live_object_deletes_nothing() -> TestResult {
        let (store, handler) = as_s3("2024-05-01T09:00:00Z", None)?;
        store
            .inner
            .insert("photos", "a.jpg", &b"live"[..], "image/jpeg");
        derivative(store.as_ref(), "thumbnails/a.jpg/256.jpg", &[]).await?;
        let outcome = handler
            .handle(
                &removed_at("2099-01-01T00:00:00Z", None)?,
                &Invocation::default(),
            )
            .await?;
        assert!(
            matches!(&outcome, Done::Skipped(why) if why.contains("in the future")),
            "{outcome}"
        );
        assert_eq!(store.inner.keys().len(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn a_live_object_older_than_its_remove_is_asked_again_then_retried() -> TestResult {
        let (store, handler) = as_s3("2024-05-01T09:00:00Z", None)?;
        store
            .inner
            .insert("photos", "a.jpg", &b"live"[..], "image/jpeg");
        derivative(store.as_ref(), "thumbnails/a.jpg/256.jpg", &[]).await?;
        let deadline = Instant::now() + Duration::from_millis(1800);
        let invocation = Invocation {
            deadline: Some(deadline),
            stop: Stop::at(Some(deadline)),
            ..Invocation::default()
        };
        let err = match handler
            .handle(&removed_at("2024-05-01T10:00:00Z", None)?, &invocation)
            .await
        {
            Ok(done) => return Err(format!("a live object's remove gave {done}").into()),
            Err(e) => e,
        };
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("nothing was deleted"), "{err}");
        // Asked again within the deadline, and not past it.
        assert!(
            Instant::now() < deadline,
            "the pauses ran past the deadline"
        );
        assert_eq!(store.inner.keys().len(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn a_gone_source_keeps_what_a_move_wrote() -> TestResult {
        let (store, handler) = handler()?;
        let moved = [("source-moved", "true")];
        derivative(store.as_ref(), "thumbnails/a.jpg/256.jpg", &moved).await?;
        derivative(store.as_ref(), "thumbnails/a.jpg/original.jpg", &moved).await?;
        derivative(store.as_ref(), "thumbnails/a.jpg/64.jpg", &[]).await?;
        let outcome = handler
            .handle(&removed("photos", "a.jpg")?, &Invocation::default())
            .await?;
        assert!(
            matches!(&outcome, Done::Completed(what)
                if what.contains("deleted 1 thumbnail(s)")
                    && what.contains("kept 2 derivative(s) of a moved source")),
            "{outcome}"
        );
        let left: Vec<String> = store.keys().into_iter().map(|(_, k)| k).collect();
        assert_eq!(
            left,
            ["thumbnails/a.jpg/256.jpg", "thumbnails/a.jpg/original.jpg"]
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_removed_old_version_takes_only_what_was_made_from_it() -> TestResult {
        let (store, handler) = as_s3("2024-05-01T09:00:00Z", Some("v2"))?;
        store
            .inner
            .insert("photos", "a.jpg", &b"v2"[..], "image/jpeg");
        let from = |version| [("source-version", version)];
        derivative(store.as_ref(), "thumbnails/a.jpg/64.jpg", &from("v1")).await?;
        derivative(store.as_ref(), "thumbnails/a.jpg/256.jpg", &from("v2")).await?;
        let outcome = handler
            .handle(
                &removed_at("2024-05-01T10:00:00Z", Some("v1"))?,
                &Invocation::default(),
            )
            .await?;
        assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
        let left: Vec<String> = store.inner.keys().into_iter().map(|(_, k)| k).collect();
        assert_eq!(left, ["a.jpg", "thumbnails/a.jpg/256.jpg"]);
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_bucket_is_permanent_never_a_gone_object() -> TestResult {
        let (store, handler) = handler()?;
        store.remove_bucket("photos");
        let err = match handler
            .handle(&removed("photos", "a.jpg")?, &Invocation::default())
            .await
        {
            Ok(done) => return Err(format!("a missing bucket gave {done}").into()),
            Err(e) => e,
        };
        assert!(!err.is_retryable(), "{err}");
        assert!(
            err.to_string().contains("bucket \"photos\" does not exist"),
            "{err}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn thumbnail_removals_and_creations_are_skipped() -> TestResult {
        let (store, handler) = handler()?;
        store.insert(
            "photos",
            "thumbnails/a.jpg/256.jpg/1.jpg",
            &b"t"[..],
            "image/jpeg",
        );
        let outcome = handler
            .handle(
                &removed("photos", "thumbnails/a.jpg/256.jpg")?,
                &Invocation::default(),
            )
            .await?;
        assert!(matches!(outcome, Done::Skipped(_)), "{outcome}");
        let mut created = removed("photos", "a.jpg")?;
        created.kind = EventKind::Created;
        let outcome = handler.handle(&created, &Invocation::default()).await?;
        assert!(matches!(outcome, Done::Skipped(_)), "{outcome}");
        assert_eq!(store.keys().len(), 1);
        Ok(())
    }
}
