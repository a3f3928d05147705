//! thumbnail-on-create: when an image lands in a bucket, write a JPEG thumbnail of it to the
//! destination bucket / prefix under a deterministic key.

mod config;
pub mod keys;
pub mod pipeline;

use std::sync::Arc;

use bucketfn::storage::{ObjectPath, ensure_readable};
use bucketfn::{
    Done, EventKind, Function, Handler, HandlerError, Invocation, NewObject, ObjectEvent,
    ObjectStore, Outcome, StartError, StoreError,
};
use bytes::Bytes;

pub use config::Config;
use pipeline::{PipelineError, Spec};

/// The handler: configuration plus the store it reads from and writes to.
pub struct Thumbnailer {
    config: Config,
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

impl Thumbnailer {
    pub fn new(config: Config, store: Arc<dyn ObjectStore>) -> Self {
        Self { config, store }
    }

    async fn thumbnail(&self, event: &ObjectEvent) -> Outcome {
        let (bucket, key) = (event.bucket.as_str(), event.key.as_str());
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
        ensure_readable(event.source, bucket, key)?;
        let output_key = keys::output_key(&self.config.prefix, key, self.config.size)
            .map_err(HandlerError::permanent)?;

        let source = match self
            .store
            .get(bucket, key, self.config.max_source_bytes)
            .await
        {
            Ok(object) => object.body,
            // The object was deleted (or replaced and deleted) after the event was sent.
            Err(StoreError::NotFound { .. }) => {
                return Ok(Done::Skipped(format!(
                    "{} no longer exists",
                    ObjectPath(bucket, key)
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let spec = Spec {
            size: self.config.size,
            quality: self.config.quality,
            max_pixels: self.config.max_source_pixels,
        };
        // Decoding is CPU-bound: keep it off the async workers that serve other events.
        let thumbnail =
            tokio::task::spawn_blocking(move || pipeline::make_thumbnail(&source, spec))
                .await
                .map_err(|e| {
                    HandlerError::permanent(format!(
                        "the image decoder crashed on {}: {e}",
                        ObjectPath(bucket, key)
                    ))
                })?
                .map_err(|source| {
                    HandlerError::permanent(ImageError {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                        source,
                    })
                })?;

        let (width, height, bytes) = (thumbnail.width, thumbnail.height, thumbnail.jpeg.len());
        let object = NewObject {
            body: Bytes::from(thumbnail.jpeg),
            content_type: "image/jpeg".to_owned(),
            metadata: Default::default(),
        };
        self.store.put(destination, &output_key, object).await?;
        Ok(Done::Completed(format!(
            "wrote {} ({width}x{height}, {bytes} bytes)",
            ObjectPath(destination, &output_key)
        )))
    }
}

impl Handler for Thumbnailer {
    async fn handle(&self, event: &ObjectEvent, _invocation: &Invocation) -> Outcome {
        match event.kind {
            EventKind::Created => self.thumbnail(event).await,
            EventKind::Removed | EventKind::Sweep | EventKind::Other => Ok(Done::Skipped(format!(
                "{:?} events are not thumbnail-on-create's business",
                event.kind
            ))),
        }
    }
}

impl Function for Thumbnailer {
    const NAME: &'static str = "thumbnail-on-create";
    const ABOUT: &'static str = "Writes a JPEG thumbnail of every image that lands in a bucket";

    type Config = Config;

    async fn start(config: Config, store: Arc<dyn ObjectStore>) -> Result<Self, StartError> {
        Ok(Self::new(config, store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucketfn::Source;
    use bucketfn::storage::MemoryStore;
    use image::{DynamicImage, ImageBuffer, ImageFormat};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn png(width: u32, height: u32) -> Result<Vec<u8>, image::ImageError> {
        let image = DynamicImage::ImageRgb8(ImageBuffer::from_fn(width, height, |x, _| {
            image::Rgb([x as u8, 100, 200])
        }));
        let mut bytes = Vec::new();
        image.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)?;
        Ok(bytes)
    }

    fn created(bucket: &str, key: &str) -> Result<ObjectEvent, Box<dyn std::error::Error>> {
        let notification = serde_json::json!({"Records": [{"eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]});
        let events = bucketfn::event::decode_value(notification)?.into_events()?;
        events.into_iter().next().ok_or_else(|| "no event".into())
    }

    fn thumbnailer(config: Config) -> (Arc<MemoryStore>, Thumbnailer) {
        let store = Arc::new(MemoryStore::new());
        let handler = Thumbnailer::new(config, Arc::clone(&store) as Arc<dyn ObjectStore>);
        (store, handler)
    }

    #[tokio::test]
    async fn writes_a_jpeg_under_the_prefix() -> TestResult {
        let (store, handler) = thumbnailer(Config::default());
        store.insert("photos", "2024/a cat.png", png(600, 300)?, "image/png");
        let outcome = handler
            .handle(
                &created("photos", "2024/a+cat.png")?,
                &Invocation::default(),
            )
            .await?;
        assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
        let thumb = store
            .object("photos", "thumbnails/2024/a cat.png/256.jpg")
            .ok_or("no thumbnail")?;
        assert_eq!(thumb.content_type, "image/jpeg");
        let decoded = image::load_from_memory_with_format(&thumb.body, ImageFormat::Jpeg)?;
        assert_eq!((decoded.width(), decoded.height()), (256, 128));
        Ok(())
    }

    #[tokio::test]
    async fn redelivery_rewrites_the_same_key() -> TestResult {
        let (store, handler) = thumbnailer(Config::default());
        store.insert("b", "x.png", png(50, 50)?, "image/png");
        let event = created("b", "x.png")?;
        handler.handle(&event, &Invocation::default()).await?;
        handler.handle(&event, &Invocation::default()).await?;
        assert_eq!(store.keys().len(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn skips_own_outputs_non_images_removals_and_gone_objects() -> TestResult {
        let (store, handler) = thumbnailer(Config::default());
        let inv = Invocation::default();
        for key in ["thumbnails/x.png/256.jpg", "notes.txt", "gone.png"] {
            let outcome = handler.handle(&created("b", key)?, &inv).await?;
            assert!(matches!(outcome, Done::Skipped(_)), "{key}: {outcome}");
        }
        let mut removed = created("b", "x.png")?;
        removed.kind = EventKind::Removed;
        assert!(matches!(
            handler.handle(&removed, &inv).await?,
            Done::Skipped(_)
        ));
        assert!(store.keys().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn outputs_in_another_bucket_are_not_mistaken_for_own() -> TestResult {
        let config = Config {
            bucket: Some("thumbs".into()),
            prefix: String::new(),
            ..Config::default()
        };
        let (store, handler) = thumbnailer(config);
        store.insert("photos", "thumbs-like.png", png(10, 10)?, "image/png");
        let outcome = handler
            .handle(
                &created("photos", "thumbs-like.png")?,
                &Invocation::default(),
            )
            .await?;
        assert!(matches!(outcome, Done::Completed(_)), "{outcome}");
        assert!(store.object("thumbs", "thumbs-like.png/256.jpg").is_some());
        let own = handler
            .handle(
                &created("thumbs", "thumbs-like.png/256.jpg")?,
                &Invocation::default(),
            )
            .await?;
        assert!(matches!(own, Done::Skipped(_)), "{own}");
        Ok(())
    }

    #[tokio::test]
    async fn corrupt_images_and_hostile_keys_are_permanent() -> TestResult {
        let (store, handler) = thumbnailer(Config::default());
        store.insert(
            "b",
            "bad.jpg",
            &b"\xff\xd8\xff\xe0 truncated"[..],
            "image/jpeg",
        );
        let err = handler
            .handle(&created("b", "bad.jpg")?, &Invocation::default())
            .await
            .err()
            .ok_or("corrupt accepted")?;
        assert!(!err.is_retryable());
        assert!(
            err.to_string().contains("b/bad.jpg cannot be thumbnailed"),
            "{err}"
        );

        let err = handler
            .handle(
                &created("b", "..%2F..%2Fetc%2Fx.jpg")?,
                &Invocation::default(),
            )
            .await
            .err()
            .ok_or("dot segments accepted")?;
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("`..` segment"), "{err}");
        Ok(())
    }

    #[tokio::test]
    async fn azure_events_fail_permanently_naming_the_gap() -> TestResult {
        let (_store, handler) = thumbnailer(Config::default());
        let mut event = created("container", "x.png")?;
        event.source = Source::Azure;
        let err = handler
            .handle(&event, &Invocation::default())
            .await
            .err()
            .ok_or("azure accepted")?;
        assert!(!err.is_retryable());
        assert!(
            err.to_string().contains("azure has no storage backend"),
            "{err}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn oversized_sources_are_refused_without_decoding() -> TestResult {
        let config = Config {
            max_source_bytes: 100,
            ..Config::default()
        };
        let (store, handler) = thumbnailer(config);
        store.insert("b", "big.png", png(100, 100)?, "image/png");
        let err = handler
            .handle(&created("b", "big.png")?, &Invocation::default())
            .await
            .err()
            .ok_or("accepted")?;
        assert!(
            err.to_string()
                .contains("larger than the limit of 100 bytes"),
            "{err}"
        );
        Ok(())
    }
}
