//! One binary, three ways to run: the Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is set,
//! otherwise the command line (`invoke`, `decode`, `serve`, `consume`), where `serve` is the
//! Knative / Code Engine service and `consume` takes events from a RabbitMQ queue.

pub mod answer;
pub mod auth;
mod cli;
#[cfg(feature = "consume")]
mod consume;
mod dispatch;
mod files;
mod gallery;
pub mod http;
mod lambda;
mod local_events;
pub mod metrics;
mod pages;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::budget::{MemoryBudget, Stop};
use crate::config::{ConfigError, Env, FromEnv};
use crate::event::{EventKind, ObjectEvent};
use crate::ledger::{LedgerSettings, Recorder, instance_name};
use crate::outcome::{BoxError, HandlerError, Outcome};
use crate::progress::Progress;
use crate::sources::Sources;
use crate::storage::{
    CheckedStore, LocalStore, ObjectStore, RecordingStore, S3Settings, S3Store, StoreError,
};
use crate::telemetry;
use metrics::Metrics;

pub use cli::parse_headers;
pub use dispatch::{EventReport, Governor, RecordReport, Report, TooManyRecords, process};
pub use gallery::GallerySettings;
pub use http::HttpSettings;
pub use local_events::LocalEventSettings;

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
type ReportFailure = dyn Fn(&str, &str, &crate::outcome::HandlerError) + Send + Sync;

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
    pub(crate) fn to(
        report: impl Fn(&str, &str, &crate::outcome::HandlerError) + Send + Sync + 'static,
    ) -> Self {
        Self(Some(Arc::new(report)))
    }

    /// Object `key` of `bucket` failed with `error`.
    pub fn failed(&self, bucket: &str, key: &str, error: &crate::outcome::HandlerError) {
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

/// What the runtime keeps about the events it handles: metrics and the ledger.
#[derive(Clone)]
pub struct Observer {
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// This instance's name in the history.
    pub instance: Arc<str>,
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

/// Settings of the runtime itself, read together with the function's configuration.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// `BATCH_CONCURRENCY`: events the whole process handles at the same time, whatever
    /// delivered them (one request or several, concurrent Lambda invocations).
    pub concurrency: usize,
    /// `MAX_RECORDS_PER_REQUEST`: records one request or invocation may carry.
    pub max_records: usize,
    /// `MAX_DECODE_BYTES`: the process-wide memory budget that memory-heavy work (decodes,
    /// content-mode streams) reserves its share of.
    pub max_decode_bytes: u64,
    pub http: HttpSettings,
    pub s3: S3Settings,
    pub ledger: LedgerSettings,
    /// The events `serve --storage DIR` makes of the directory's changes.
    pub local_events: LocalEventSettings,
    /// `SOURCE_BUCKETS` (else `SOURCE_BUCKET`): the buckets whose events the function acts
    /// on; `None` when neither is set, which only `--storage DIR` accepts (as any bucket).
    pub sources: Option<Sources>,
}

/// Records a delivery carries when `MAX_RECORDS_PER_REQUEST` is not set: ten times the largest
/// SQS batch of the template (10), and a Knative request carries one.
const DEFAULT_MAX_RECORDS: usize = 100;

impl RuntimeSettings {
    pub fn read(env: &mut Env) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let max_decode_bytes = default_decode_bytes(env);
        Self {
            concurrency: positive(env, "BATCH_CONCURRENCY", cores),
            max_records: positive(env, "MAX_RECORDS_PER_REQUEST", DEFAULT_MAX_RECORDS),
            max_decode_bytes: positive(env, "MAX_DECODE_BYTES", max_decode_bytes),
            http: HttpSettings::read(env),
            s3: S3Settings::read(env),
            ledger: LedgerSettings::read(env),
            local_events: LocalEventSettings::read(env),
            sources: Sources::read(env),
        }
    }
}

/// The memory budget when `MAX_DECODE_BYTES` is not set. Lambda says how much memory the
/// function has (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, in MB): half of it, so that a smaller
/// memory size is never promised more than it has; the other half holds what the budget does
/// not count (the runtime and its clients, source bytes and request bodies in flight,
/// encoded outputs, the allocator's slack). Elsewhere [`MemoryBudget::DEFAULT_BYTES`].
fn default_decode_bytes(env: &Env) -> u64 {
    env.raw("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        .and_then(|mb| mb.trim().parse::<u64>().ok())
        .filter(|mb| *mb > 0)
        .map_or(MemoryBudget::DEFAULT_BYTES, |mb| mb * 1024 * 1024 / 2)
}

/// A count, size or number of seconds that must be at least 1.
pub(crate) fn positive<T>(env: &mut Env, name: &str, default: T) -> T
where
    T: std::str::FromStr + Default + PartialEq,
    T::Err: std::fmt::Display,
{
    let value = env.or(name, default);
    if value == T::default() {
        env.problem(name, "must be at least 1");
    }
    value
}

/// A started function and the runtime settings it runs with.
pub(crate) struct Started<F> {
    pub(crate) function: Arc<F>,
    pub(crate) settings: RuntimeSettings,
    pub(crate) observer: Observer,
    /// The one memory budget and event bound of this process, shared by every delivery.
    pub(crate) governor: Governor,
    /// The store as configured, its conditions checked (without the ledger's recording), for
    /// the pages.
    pub(crate) store: Arc<dyn ObjectStore>,
}

/// Reads all configuration (reporting every problem at once), picks the store and starts the
/// function.
pub(crate) async fn start<F: Function>(storage: Option<PathBuf>) -> Result<Started<F>, StartError> {
    let (started, NoSettings) = start_with::<F, NoSettings>(storage).await?;
    Ok(started)
}

/// What a runtime without settings of its own reads.
struct NoSettings;

impl FromEnv for NoSettings {
    fn read(_: &mut Env) -> Option<Self> {
        Some(Self)
    }
}

/// [`start`], reading the runtime's own settings `R` (`consume`'s broker) with the rest, so
/// that every problem is reported at once.
pub(crate) async fn start_with<F: Function, R: FromEnv>(
    storage: Option<PathBuf>,
) -> Result<(Started<F>, R), StartError> {
    let began = Instant::now();
    let mut env = Env::from_process();
    let settings = RuntimeSettings::read(&mut env);
    let runtime = R::read(&mut env);
    if settings.sources.is_none() && storage.is_none() {
        // Against S3 the credentials reach more than the function serves: an event must not
        // choose the bucket.
        env.problem(
            crate::sources::VARIABLE,
            "is required against S3 (SOURCE_BUCKET is not set either): the buckets this \
             function serves, `bucket` or `bucket/prefix`, comma-separated, or `*` for any",
        );
    }
    let config = F::Config::read(&mut env);
    env.finish()?;
    let config = config.ok_or_else(|| StartError::Failed("configuration was not read".into()))?;
    let runtime =
        runtime.ok_or_else(|| StartError::Failed("runtime settings were not read".into()))?;
    let configured: Arc<dyn ObjectStore> = match storage {
        Some(dir) => Arc::new(LocalStore::new(dir)),
        None => Arc::new(S3Store::connect(&settings.s3).await),
    };
    let store: Arc<dyn ObjectStore> = Arc::new(CheckedStore::new(configured));
    let ledger = settings
        .ledger
        .open(F::NAME)
        .map_err(|e| StartError::Failed(Box::new(e)))?;
    let observer = Observer {
        metrics: Arc::new(Metrics::default()),
        recorder: Recorder::start(ledger),
        instance: instance_name().into(),
    };
    let recording: Arc<dyn ObjectStore> = Arc::new(RecordingStore(Arc::clone(&store)));
    let function = Arc::new(F::start(config, recording).await?);
    check_buckets(
        store.as_ref(),
        settings.sources.as_ref(),
        function.buckets(),
    )
    .await?;
    let governor = Governor::new(&settings);
    tracing::info!(
        startup_us = began.elapsed().as_micros() as u64,
        memory_budget = settings.max_decode_bytes,
        concurrency = settings.concurrency,
        "Function started."
    );
    Ok((
        Started {
            function,
            settings,
            observer,
            governor,
            store,
        },
        runtime,
    ))
}

/// How long the start-up bucket checks may take together: Lambda gives the whole start 10 s,
/// and a store that does not answer is only warned about.
const BUCKET_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// A bucket the configuration names that the store says cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{named_by} names bucket {:?}, which cannot be used", bucket.escape_debug().to_string())]
struct UnusableBucket {
    bucket: String,
    /// The variable, or "the function's configuration".
    named_by: &'static str,
    #[source]
    source: StoreError,
}

/// Checks every bucket that `SOURCE_BUCKETS` (not `*`) and the function name, so that a wrong
/// endpoint, region or bucket name stops the start instead of failing every event. A store
/// that does not answer now is warned about: its events then fail as retryable.
async fn check_buckets(
    store: &dyn ObjectStore,
    sources: Option<&Sources>,
    function_buckets: Vec<String>,
) -> Result<(), StartError> {
    let mut named: Vec<(String, &'static str)> = Vec::new();
    if let Some(Sources::Only { entries, variable }) = sources {
        named.extend(entries.iter().map(|e| (e.bucket.clone(), *variable)));
    }
    named.extend(
        function_buckets
            .into_iter()
            .map(|bucket| (bucket, "the function's configuration")),
    );
    let mut seen = std::collections::HashSet::new();
    named.retain(|(bucket, _)| seen.insert(bucket.clone()));
    let checks = named.iter().map(|(bucket, _)| store.check_bucket(bucket));
    let answers =
        tokio::time::timeout(BUCKET_CHECK_TIMEOUT, futures_util::future::join_all(checks)).await;
    let Ok(answers) = answers else {
        let buckets: Vec<&str> = named.iter().map(|(b, _)| b.as_str()).collect();
        tracing::warn!(
            buckets = ?buckets,
            timeout_s = BUCKET_CHECK_TIMEOUT.as_secs(),
            "The store did not confirm the configured buckets in time; events for a bucket \
             it lacks will fail."
        );
        return Ok(());
    };
    for ((bucket, named_by), answer) in named.into_iter().zip(answers) {
        match answer {
            Ok(()) => {}
            Err(e @ StoreError::Unavailable { .. }) => tracing::warn!(
                bucket,
                named_by,
                error = crate::outcome::chain(&e),
                "The store could not confirm a configured bucket; its events fail as \
                 retryable until it answers."
            ),
            Err(source) => {
                return Err(StartError::Failed(Box::new(UnusableBucket {
                    bucket,
                    named_by,
                    source,
                })));
            }
        }
    }
    Ok(())
}

/// The whole of a function binary's `main`.
pub fn main<F: Function>() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", F::NAME);
            return ExitCode::from(70);
        }
    };
    let code = runtime.block_on(async {
        let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
        telemetry::init(in_lambda);
        if in_lambda {
            lambda::run::<F>().await
        } else {
            cli::run::<F>().await
        }
    });
    // Dropping the runtime waits for blocking threads without limit. Shutting it down drops
    // every task still running, whose events' stops are then set, and gives their blocking
    // work a moment to notice before the process exits anyway.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    code
}

/// How long the process waits at exit for blocking work that was told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
