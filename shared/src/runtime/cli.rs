//! The command line: `invoke FILE` runs the handler on saved events, `decode FILE` shows how
//! they decode, `sweep` catches up on a bucket, `job` is one worker of a batch job, `serve`
//! runs the HTTP service, `consume` takes events from a broker's queue, `describe` says what
//! the binary accepts (for checks of deployment descriptions).

mod job;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use http::{HeaderMap, HeaderName, HeaderValue};

use std::time::{Duration, Instant};

use super::local_events::{Dispatch, LocalEvents};
use super::{Report, fail, http as http_runtime, process, start};
use crate::ObjectPath;
use crate::config::Env;
use crate::event::{
    CloudEventType, Delivery, EventKind, ObjectEvent, Shard, SweepRequest, cloudevent_types, decode,
};
use crate::function::{Function, Invocation};
use crate::progress::Progress;
use job::{JobWork, Worker};

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the handler on every event in FILE and print one line per record outcome.
    Invoke {
        #[command(flatten)]
        input: Input,
        /// Use DIR as the object store (DIR/<bucket>/<key>) instead of S3.
        #[arg(long, value_name = "DIR")]
        storage: Option<PathBuf>,
    },
    /// Print the events in FILE as the function sees them, as a JSON array.
    Decode {
        #[command(flatten)]
        input: Input,
    },
    /// Print what the binary accepts, as JSON: the CloudEvent types its decoder reads by name
    /// (`cloudevent_types`: `exact` and `prefixes`) and the route of its health probe
    /// (`health_route`).
    Describe,
    /// Catch up on a whole bucket, as a scheduled event would, with progress on a terminal;
    /// or, with --key, handle one object.
    Sweep {
        /// The bucket to sweep (default: the function's configured source bucket).
        #[arg(long)]
        bucket: Option<String>,
        /// Only keys under this prefix (default: the function's configured prefix).
        #[arg(long, default_value = "", conflicts_with = "key")]
        prefix: String,
        /// Just this one object, handled as if it had just been created (needs --bucket).
        #[arg(long, requires = "bucket")]
        key: Option<String>,
        /// Stop cleanly after this many seconds; the summary says where to continue.
        #[arg(long, value_name = "SECONDS")]
        budget: Option<u64>,
        /// Be worker INDEX of COUNT of a job array: only the keys that fall to it, with a
        /// cursor of its own. Without it, a job array's variables say which worker this is
        /// (JOB_INDEX or JOB_COMPLETION_INDEX, of JOB_ARRAY_SIZE).
        #[arg(long, value_name = "INDEX/COUNT", conflicts_with = "key")]
        shard: Option<Shard>,
        /// Only the N most recently modified objects (at most 10000): a one-off run beside
        /// the passes, which neither reads nor moves the cursor.
        #[arg(long, value_name = "N", conflicts_with = "key")]
        latest: Option<usize>,
        /// Use DIR as the object store (DIR/<bucket>/<key>) instead of S3.
        #[arg(long, value_name = "DIR")]
        storage: Option<PathBuf>,
    },
    /// Be one worker of a batch job (a Code Engine job, a Kubernetes Indexed Job): handle the
    /// event a Code Engine subscription passed in CE_* variables, or else sweep the configured
    /// bucket, only this worker's keys when JOB_INDEX or JOB_COMPLETION_INDEX (of
    /// JOB_ARRAY_SIZE) say it is one of several.
    Job {
        /// Stop cleanly after this many seconds: set it below the job's maximum execution
        /// time, so that the cursor is saved; the next run continues from it.
        #[arg(long, value_name = "SECONDS")]
        budget: Option<u64>,
        /// Use DIR as the object store (DIR/<bucket>/<key>) instead of S3.
        #[arg(long, value_name = "DIR")]
        storage: Option<PathBuf>,
    },
    /// Serve HTTP on $LISTEN_ADDRESS:$PORT (default 0.0.0.0:8080): CloudEvents and raw
    /// notifications on POST /.
    Serve {
        /// Use DIR as the object store (DIR/<bucket>/<key>) instead of S3.
        #[arg(long, value_name = "DIR")]
        storage: Option<PathBuf>,
    },
    /// Take bucket events from the RabbitMQ queue $CONSUME_QUEUE, acknowledging each message
    /// once it is handled; operations pages and /healthz on $PORT.
    #[cfg(feature = "consume")]
    Consume {
        /// Use DIR as the object store (DIR/<bucket>/<key>) instead of S3.
        #[arg(long, value_name = "DIR")]
        storage: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct Input {
    /// A saved event ("-" for standard input).
    file: PathBuf,
    /// An HTTP header that came with the event, for binary-mode CloudEvents ('ce-type: ...'),
    /// or @FILE for a file of such lines (as curl takes them).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE | @FILE")]
    headers: Vec<String>,
}

impl Input {
    fn read(&self) -> Result<Delivery, String> {
        let body = if self.file.as_os_str() == "-" {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            body
        } else {
            std::fs::read(&self.file)
                .map_err(|e| format!("cannot read {}: {e}", self.file.display()))?
        };
        let mut lines = Vec::new();
        for header in &self.headers {
            match header.strip_prefix('@') {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read headers from {path}: {e}"))?;
                    lines.extend(
                        text.lines()
                            .filter(|l| !l.trim().is_empty())
                            .map(str::to_owned),
                    );
                }
                None => lines.push(header.clone()),
            }
        }
        let headers = parse_headers(&lines)?;
        decode(&body, &headers).map_err(|e| format!("{}: {e}", self.file.display()))
    }
}

/// Parses `name: value` lines into headers.
pub fn parse_headers(lines: &[String]) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header {line:?} is not of the form 'name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| format!("header name in {line:?}: {e}"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|e| format!("header value in {line:?}: {e}"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

pub(crate) async fn run<F: Function>() -> ExitCode {
    let command = Cli::command().name(F::NAME).about(F::ABOUT);
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Decode { input } => decode_command(&input),
        Command::Describe => describe(),
        Command::Invoke { input, storage } => invoke::<F>(&input, storage).await,
        Command::Sweep {
            bucket,
            prefix,
            key,
            budget,
            shard,
            latest,
            storage,
        } => {
            // One object is a created event for it; a prefix is a catch-up sweep.
            let event = match key {
                Some(key) => ObjectEvent::requested(
                    EventKind::Created,
                    bucket.as_deref().unwrap_or_default(),
                    key,
                ),
                None => {
                    let shard = match shard {
                        Some(shard) => Some(shard),
                        None => match Env::from_process().load::<Worker>() {
                            Ok(Worker(shard)) => shard,
                            Err(e) => return fail(e),
                        },
                    };
                    let mut event = ObjectEvent::requested(
                        EventKind::Sweep,
                        bucket.as_deref().unwrap_or_default(),
                        prefix,
                    );
                    event.sweep = SweepRequest { shard, latest };
                    event
                }
            };
            run_once::<F>(Delivery::single(None, vec![event]), budget, storage).await
        }
        Command::Job { budget, storage } => job::<F>(budget, storage).await,
        Command::Serve { storage } => serve::<F>(storage).await,
        #[cfg(feature = "consume")]
        Command::Consume { storage } => super::consume::run::<F>(storage).await,
    }
}

fn decode_command(input: &Input) -> ExitCode {
    let events = match input
        .read()
        .and_then(|d| d.into_events().map_err(|e| e.to_string()))
    {
        Ok(events) => events,
        Err(e) => return fail(e),
    };
    match serde_json::to_string_pretty(&events) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("cannot print the events: {e}")),
    }
}

/// What `describe` prints: read from the tables the decoder and the HTTP router use.
fn describe() -> ExitCode {
    let (mut exact, mut prefixes) = (Vec::new(), Vec::new());
    for ty in cloudevent_types() {
        match ty {
            CloudEventType::Exact(name) => exact.push(name),
            CloudEventType::Prefix(start) => prefixes.push(start),
        }
    }
    let description = serde_json::json!({
        "cloudevent_types": {"exact": exact, "prefixes": prefixes},
        "health_route": http_runtime::HEALTH_ROUTE,
    });
    match serde_json::to_string_pretty(&description) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("cannot print the description: {e}")),
    }
}

async fn invoke<F: Function>(input: &Input, storage: Option<PathBuf>) -> ExitCode {
    let delivery = match input.read() {
        Ok(delivery) => delivery,
        Err(e) => return fail(e),
    };
    let started = match start::<F>(storage).await {
        Ok(started) => started,
        Err(e) => return fail(e),
    };
    let report = process(
        &started.function,
        delivery,
        started.governor.invocation(None),
        &started.governor,
        &started.observer,
    )
    .await;
    print_report(&report)
}

/// One line per record: status, id (or position), what happened; exit 1 if any failed.
fn print_report(report: &Report) -> ExitCode {
    let mut failed = false;
    for (n, record) in report.records.iter().enumerate() {
        let label = record
            .id
            .clone()
            .unwrap_or_else(|| format!("record {}", n + 1));
        failed |= !record.status.is_success();
        println!("{}\t{label}\t{}", record.status.label(), record.summary());
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Handles `delivery` once, within `budget` seconds, with progress on a terminal.
async fn run_once<F: Function>(
    delivery: Delivery,
    budget: Option<u64>,
    storage: Option<PathBuf>,
) -> ExitCode {
    let started = match start::<F>(storage).await {
        Ok(started) => started,
        Err(e) => return fail(e),
    };
    let invocation = Invocation {
        progress: Progress::on_terminal(F::NAME),
        ..started
            .governor
            .invocation(budget.map(|secs| Instant::now() + Duration::from_secs(secs)))
    };
    let progress = invocation.progress.clone();
    let report = process(
        &started.function,
        delivery,
        invocation,
        &started.governor,
        &started.observer,
    )
    .await;
    progress.finish("");
    print_report(&report)
}

/// One worker of a batch job: its event, or its share of the sweep. An event whose key is
/// another worker's is passed over as a success, so that the job run succeeds as a whole.
async fn job<F: Function>(budget: Option<u64>, storage: Option<PathBuf>) -> ExitCode {
    let work = match JobWork::from_env(Env::from_process()) {
        Ok(work) => work,
        Err(e) => return fail(e),
    };
    if let Some(worker) = work.worker {
        for event in &work.passed {
            println!(
                "succeeded\t{}\tskipped: {} falls to another worker of the job array (this is \
                 worker {worker})",
                event.id.as_deref().unwrap_or("record 1"),
                ObjectPath(&event.bucket, &event.key),
            );
        }
    }
    if work.delivery.records.is_empty() {
        return ExitCode::SUCCESS;
    }
    run_once::<F>(work.delivery, budget, storage).await
}

async fn serve<F: Function>(storage: Option<PathBuf>) -> ExitCode {
    let started = match start::<F>(storage.clone()).await {
        Ok(started) => started,
        Err(e) => return fail(e),
    };
    let settings = &started.settings;
    // A directory as the bucket sends the events a bucket's notifications would.
    let local_events = storage
        .filter(|_| settings.local_events.enabled)
        .map(|dir| {
            let dispatch = Dispatch {
                handler: Arc::clone(&started.function),
                store: Arc::clone(&started.store),
                governor: started.governor.clone(),
                observer: started.observer.clone(),
                timeout: settings.http.request_timeout,
            };
            let sources = settings.sources.as_ref();
            LocalEvents::start(dir, sources, settings.local_events.clone(), dispatch)
        });
    let service = http_runtime::Service {
        name: F::NAME,
        handler: started.function,
        store: started.store,
        observer: started.observer,
        governor: started.governor,
    };
    let served = http_runtime::serve(service, settings).await;
    if let Some(watcher) = local_events {
        watcher.stop().await;
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(http_runtime::ServeError::Io(e)) => {
            tracing::error!(error = %e, "HTTP service stopped.");
            eprintln!("{}: {e}", F::NAME);
            ExitCode::FAILURE
        }
        Err(e) => fail(format!("{}: {e}", F::NAME)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_bad_ones_are_named() -> Result<(), Box<dyn std::error::Error>> {
        let headers = parse_headers(&["Ce-Type: a.b".into(), "ce-id:1".into()])?;
        assert_eq!(
            headers.get("ce-type").map(HeaderValue::as_bytes),
            Some(&b"a.b"[..])
        );
        let err = parse_headers(&["no colon".into()])
            .err()
            .ok_or("accepted")?;
        assert!(err.contains("\"no colon\""), "{err}");
        Ok(())
    }
}
