//! The contract a function implements and the runtimes call: [`Function`] (how it starts from
//! its configuration), [`Handler`] (what it does with one event, and what it shows on the
//! operations pages and the gallery) and [`Invocation`] (what the runtime tells it about the
//! invocation: deadline, stop, memory budget, progress). Nothing here knows a platform.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::budget::{MemoryBudget, Stop};
use crate::config::{ConfigError, FromEnv};
use crate::event::{EventKind, ObjectEvent};
use crate::outcome::{BoxError, HandlerError, Outcome};
use crate::progress::Progress;
use crate::storage::ObjectStore;

/// What the runtime knows about the invocation an event arrived in.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// When work must stop so that the outcome can still be reported (Lambda: the invocation
    /// deadline minus a margin; HTTP: `REQUEST_TIMEOUT_SECS`). Events still running then are
    /// reported as retryable; sweeps stop cleanly before it.
    pub deadline: Option<Instant>,
    /// Where long work reports progress (a terminal progress bar for `sweep`, else nothing).
    pub progress: Progress,
    /// Tells this event's CPU work to stop: at the deadline, or when the runtime stops
    /// waiting for it.
    pub stop: Stop,
    /// The process-wide memory budget that memory-heavy work reserves its share of.
    pub memory: MemoryBudget,
    /// Where work over many objects (a sweep) reports each object that failed, so that the
    /// history and the metrics show it on its own.
    pub reports: ObjectReports,
}

/// How an object report reaches the runtime: bucket, key and the error.
type ReportFailure = dyn Fn(&str, &str, &HandlerError) + Send + Sync;

/// Reports of single objects inside one event's work (a sweep's failures); nothing is
/// reported where the runtime does not listen (a handler called directly).
#[derive(Clone, Default)]
pub struct ObjectReports(Option<Arc<ReportFailure>>);

impl std::fmt::Debug for ObjectReports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ObjectReports(listening)"
        } else {
            "ObjectReports(none)"
        })
    }
}

impl ObjectReports {
    pub(crate) fn to(report: impl Fn(&str, &str, &HandlerError) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(report)))
    }

    /// Object `key` of `bucket` failed with `error`.
    pub fn failed(&self, bucket: &str, key: &str, error: &HandlerError) {
        if let Some(report) = &self.0 {
            report(bucket, key, error);
        }
    }
}

/// Handles one event. Decides the outcome; never how the platform hears of it.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        event: &ObjectEvent,
        invocation: &Invocation,
    ) -> impl Future<Output = Outcome> + Send;

    /// Where the objects the function works on are, for the `/files` page; `None` for a
    /// function that keeps no files.
    fn inputs(&self) -> Option<Location> {
        None
    }

    /// What the function makes of the input object `key`, labelled, for the `/files` page.
    fn outputs_of(&self, _key: &str) -> Vec<Derived> {
        Vec::new()
    }

    /// Where a function that moves its inputs keeps them beside what it made of them, listed
    /// by the `/files` page and the gallery so that a moved input stays on them; `None` for a
    /// function that leaves its inputs where they are.
    fn moved_inputs(&self) -> Option<Location> {
        None
    }

    /// The input whose moved copy is `key` under [`Handler::moved_inputs`]; `None` for any
    /// other object kept there.
    fn moved_input(&self, _key: &str) -> Option<String> {
        None
    }

    /// Buckets the configuration names, checked at start-up (as `SOURCE_BUCKETS` is): one
    /// that does not exist, or that the credentials may not use, stops the start.
    fn buckets(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the function acts on events of `kind` (others are skipped as not handled), so
    /// that a runtime that makes events itself (`serve --storage DIR`) sends only these, as a
    /// bucket's notification configuration would.
    fn handles(&self, kind: EventKind) -> bool {
        kind == EventKind::Created
    }

    /// Whether `serve` offers the gallery: upload images into [`Handler::inputs`], see them
    /// beside their [`Handler::outputs_of`], run a sweep, try [`Handler::preview`].
    fn gallery(&self) -> bool {
        false
    }

    /// What the function would make of the image `body` (the gallery's "try one"), made
    /// without reading or writing the store; `name` is what messages call it. `None` for a
    /// function that makes no images.
    fn preview(
        &self,
        _name: &str,
        _body: Bytes,
        _invocation: &Invocation,
    ) -> impl Future<Output = Option<Result<Preview, HandlerError>>> + Send {
        async { None }
    }
}

/// An image a function made for [`Handler::preview`].
#[derive(Debug, Clone)]
pub struct Preview {
    pub content_type: &'static str,
    pub bytes: Bytes,
}

/// A part of a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    pub prefix: String,
    /// Keys under this prefix are not inputs (the function's own outputs or state).
    pub exclude_prefix: Option<String>,
}

/// An object a function derives from an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// Column heading, e.g. `256 px`.
    pub label: String,
    pub bucket: String,
    pub key: String,
    /// Whether the page may show it as an image.
    pub image: bool,
}

/// A deployable function: a handler plus how to build it from configuration.
pub trait Function: Handler + Sized {
    /// The binary's name, for `--help`.
    const NAME: &'static str;
    /// One line on what the function does, for `--help`.
    const ABOUT: &'static str;

    type Config: FromEnv + Send + 'static;

    /// Builds the function; `store` is S3 (from the environment) or the `--storage` directory.
    fn start(
        config: Self::Config,
        store: Arc<dyn ObjectStore>,
    ) -> impl Future<Output = Result<Self, StartError>> + Send;
}

/// Why a function could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("start-up failed: {}", crate::outcome::chain(.0.as_ref()))]
    Failed(BoxError),
}
