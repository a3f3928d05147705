//! One binary, three ways to run any [`Function`] (the contract, in [`crate::function`]): the
//! Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is set, otherwise the command line (`invoke`,
//! `decode`, `serve`, `consume`), where `serve` is the Knative / Code Engine service and
//! `consume` takes events from a RabbitMQ queue.

pub mod answer;
pub mod auth;
mod cli;
#[cfg(feature = "consume")]
mod consume;
mod dispatch;
pub mod http;
mod lambda;
mod local_events;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::budget::MemoryBudget;
use crate::config::{Env, FromEnv};
use crate::function::{Function, StartError};
use crate::operations::ledger::{LedgerSettings, Recorder, instance_name};
use crate::operations::metrics::Metrics;
use crate::operations::{Observer, RecordingStore};
use crate::sources::Sources;
use crate::storage::{CheckedStore, LocalStore, ObjectStore, S3Settings, S3Store, StoreError};
use crate::telemetry;

pub use cli::parse_headers;
pub use dispatch::{EventReport, Governor, RecordReport, Report, TooManyRecords, process};
pub use http::GallerySettings;
pub use http::HttpSettings;
pub use lambda::answer_payload;
pub use local_events::LocalEventSettings;

/// Exit code for input or usage that is rejected (bad event, bad header, bad configuration).
const REJECTED: u8 = 2;

/// Ends a command-line run that cannot start or was given what it refuses, saying why.
pub(crate) fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(REJECTED)
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
