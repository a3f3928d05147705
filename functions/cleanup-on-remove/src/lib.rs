//! cleanup-on-remove: when an object is removed from a bucket, remove what was made from it:
//! its thumbnails (`derivatives`) and its MediaHaven essence and collaterals (`mediahaven`),
//! unless the remove is older than the object now under the key.

pub mod archive;
mod config;
pub mod derivatives;
pub mod freshness;

use std::sync::Arc;

use bucketfn::mediahaven::MediaHaven;
use bucketfn::outcome::BoxError;
use bucketfn::storage::{ObjectPath, ensure_readable};
use bucketfn::{
    Done, EventKind, Function, Handler, Invocation, ObjectEvent, ObjectStore, Outcome, StartError,
    StoreError,
};

pub use config::Config;
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

    async fn clean(&self, event: &ObjectEvent) -> Outcome {
        let (bucket, key) = (event.bucket.as_str(), event.key.as_str());
        let thumbnails = self.config.thumbnail_bucket.as_deref().unwrap_or(bucket);
        if self.config.derivatives
            && bucket == thumbnails
            && key.starts_with(&self.config.thumbnail_prefix)
        {
            return Ok(Done::Skipped(format!(
                "{} is a thumbnail (under {:?})",
                ObjectPath(bucket, key),
                self.config.thumbnail_prefix
            )));
        }
        ensure_readable(event.source, bucket, key)?;
        let now_there = match self.store.head(bucket, key).await {
            Ok(info) => Some(info),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        if let Freshness::Stale(why) = freshness::judge(event, now_there.as_ref()) {
            return Ok(Done::Skipped(format!(
                "the remove of {} is stale: {why}",
                ObjectPath(bucket, key)
            )));
        }

        let mut did = Vec::new();
        if self.config.derivatives {
            let deleted = derivatives::remove(
                self.store.as_ref(),
                thumbnails,
                &self.config.thumbnail_prefix,
                key,
            )
            .await?;
            if !deleted.is_empty() {
                did.push(format!("deleted {} thumbnail(s)", deleted.len()));
            }
        }
        if let Some(mediahaven) = &self.mediahaven {
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
    async fn handle(&self, event: &ObjectEvent, _invocation: &Invocation) -> Outcome {
        match event.kind {
            EventKind::Removed => self.clean(event).await,
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
    use bucketfn::storage::MemoryStore;

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
