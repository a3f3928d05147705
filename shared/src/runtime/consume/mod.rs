//! The `consume` runtime: bucket events from a broker (a RabbitMQ queue or a Kafka topic), each
//! message handled by the same dispatcher as `serve` and settled only after its outcome; the
//! operations pages and `/healthz` on `PORT` meanwhile. Each broker is a [`Source`] of messages
//! for the one runtime loop.

mod amqp;
#[cfg(feature = "consume-kafka")]
mod kafka;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, info_span, warn};

use super::http as http_runtime;
use super::{Governor, positive, process, start_with};
use crate::config::{Env, FromEnv};
use crate::event::{DecodeError, Delivery, Envelope, Record, decode};
use crate::function::{Function, Handler};
use crate::operations::Observer;
use crate::outcome::{BoxError, RecordStatus};

pub(crate) use amqp::{AmqpSettings, AmqpSource};
#[cfg(feature = "consume-kafka")]
pub(crate) use kafka::{KafkaSource, KafkaSourceSettings};

/// Which broker `consume` reads: a Kafka topic when `CONSUME_TOPIC` is set, else a queue.
#[derive(Debug, Clone)]
pub(crate) enum SourceSettings {
    Amqp(AmqpSettings),
    #[cfg(feature = "consume-kafka")]
    Kafka(KafkaSourceSettings),
}

impl SourceSettings {
    fn read(env: &mut Env) -> Option<Self> {
        let set = |env: &Env, name| env.raw(name).is_some_and(|v| !v.trim().is_empty());
        if !set(env, "CONSUME_TOPIC") {
            return AmqpSettings::read(env).map(Self::Amqp);
        }
        if set(env, "CONSUME_QUEUE") {
            env.problem(
                "CONSUME_TOPIC",
                "and CONSUME_QUEUE are both set: consume reads one source, a Kafka topic or a \
                 RabbitMQ queue",
            );
        }
        #[cfg(feature = "consume-kafka")]
        {
            KafkaSourceSettings::read(env).map(Self::Kafka)
        }
        #[cfg(not(feature = "consume-kafka"))]
        {
            env.problem(
                "CONSUME_TOPIC",
                "is set, but this build consumes no Kafka (built without the kafka-consume \
                 feature, as the Lambda builds are)",
            );
            None
        }
    }
}

/// How retryable messages come back, and how often at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// `CONSUME_RETRY_DELAY_SECS`: how long a retryable message waits before it is delivered
    /// again.
    pub delay: Duration,
    /// `CONSUME_MAX_ATTEMPTS`: deliveries a message gets before a retryable failure sends it
    /// to the dead-letter path as a permanent one would.
    pub max_attempts: u32,
}

/// What the runtime reads besides the function's configuration.
#[derive(Debug, Clone)]
pub(crate) struct ConsumeSettings {
    pub source: SourceSettings,
    pub retry: RetryPolicy,
    /// `CONSUME_TIMEOUT_SECS`: how long one message's events may work; events still running
    /// then are stopped and the message is retried (RabbitMQ closes the channel of a consumer
    /// that holds a message for its `consumer_timeout`, 30 minutes by default).
    pub timeout: Duration,
    /// `CONSUME_SHUTDOWN_SECS`: after SIGTERM, how long messages in flight may finish before
    /// they are handed back to the queue unfinished.
    pub shutdown: Duration,
}

impl FromEnv for ConsumeSettings {
    fn read(env: &mut Env) -> Option<Self> {
        let source = SourceSettings::read(env);
        let delay = positive(env, "CONSUME_RETRY_DELAY_SECS", 30u64);
        let max_attempts = positive(env, "CONSUME_MAX_ATTEMPTS", 5u32);
        let timeout = positive(env, "CONSUME_TIMEOUT_SECS", 300u64);
        if timeout > MAX_TIMEOUT_SECS {
            env.problem(
                "CONSUME_TIMEOUT_SECS",
                format!(
                    "is {timeout}, over {MAX_TIMEOUT_SECS} (RabbitMQ's default consumer_timeout \
                     of 30 minutes would close the channel first)"
                ),
            );
        }
        let shutdown = positive(env, "CONSUME_SHUTDOWN_SECS", 20u64);
        Some(Self {
            source: source?,
            retry: RetryPolicy {
                delay: Duration::from_secs(delay),
                max_attempts,
            },
            timeout: Duration::from_secs(timeout),
            shutdown: Duration::from_secs(shutdown),
        })
    }
}

/// The longest `CONSUME_TIMEOUT_SECS`: below RabbitMQ's default `consumer_timeout` (30 min).
const MAX_TIMEOUT_SECS: u64 = 25 * 60;

/// What happens to a message once its outcome is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settlement {
    /// Done or skipped: acknowledged, gone from the queue.
    Ack,
    /// Permanent, or retryable too often: to the queue's dead-letter path, never requeued.
    DeadLetter { reason: String },
    /// Retryable within the bound: delivered again after `delay`, as attempt `next_attempt`.
    RetryLater {
        next_attempt: u32,
        delay: Duration,
        reason: String,
    },
    /// Not finished when the runtime stopped: handed back to the queue as it came.
    Requeue,
}

impl Settlement {
    /// Its name in the metrics.
    fn label(&self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::DeadLetter { .. } => "dead_letter",
            Self::RetryLater { .. } => "retry_later",
            Self::Requeue => "requeue",
        }
    }
}

/// The settlement of a message whose records ended as `status` on delivery `attempt` (from 1).
pub(crate) fn settlement(status: &RecordStatus, attempt: u32, retry: &RetryPolicy) -> Settlement {
    match status {
        RecordStatus::Succeeded => Settlement::Ack,
        RecordStatus::Permanent(message) => Settlement::DeadLetter {
            reason: message.clone(),
        },
        RecordStatus::Retryable(message) if attempt >= retry.max_attempts => {
            Settlement::DeadLetter {
                reason: format!(
                    "still failing after {attempt} attempts (CONSUME_MAX_ATTEMPTS is {}): \
                     {message}",
                    retry.max_attempts
                ),
            }
        }
        RecordStatus::Retryable(message) => Settlement::RetryLater {
            next_attempt: attempt.saturating_add(1),
            delay: retry.delay,
            reason: message.clone(),
        },
    }
}

/// Why a source cannot go on: `Fatal` ends the runtime (a topology that contradicts the
/// configuration: no retry mends it), `Lost` is retried with a new connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error("{0}")]
    Fatal(#[source] BoxError),
    #[error("{0}")]
    Lost(#[source] BoxError),
}

/// A message that could not be settled: the broker hands it out again by itself once the
/// channel it came on closes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SettleError(#[source] pub BoxError);

/// A broker's stream of messages.
pub(crate) trait Source: Send + 'static {
    type Message: Incoming;

    /// What the logs call it (`queue "events"`).
    fn name(&self) -> String;

    /// Connects (again) and subscribes, checking the topology the configuration names.
    fn connect(&mut self) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// The next message; `None` when the subscription ended (the connection was lost, the
    /// broker cancelled it, or [`Source::stop_taking`] was called).
    fn next(&mut self) -> impl Future<Output = Option<Result<Self::Message, SourceError>>> + Send;

    /// Takes no more messages; those in flight can still be settled.
    fn stop_taking(&mut self) -> impl Future<Output = ()> + Send;

    /// Closes the connection; what is still unsettled goes back to the queue.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// One message taken from a [`Source`], not yet settled.
pub(crate) trait Incoming: Send + 'static {
    fn body(&self) -> &[u8];
    /// The message's properties as HTTP-style headers for the decoder (`content-type`, a
    /// binary-mode CloudEvent's `ce-*`).
    fn headers(&self) -> HeaderMap;
    /// The id the message was sent under for tracing, carried into every event of it.
    fn correlation_id(&self) -> Option<String>;
    /// Which delivery of this message this is, from 1.
    fn attempt(&self) -> u32;
    /// For the logs: where it came from and its tag or offset.
    fn label(&self) -> String;
    fn settle(
        self,
        settlement: &Settlement,
    ) -> impl Future<Output = Result<(), SettleError>> + Send;
}

/// Maps AMQP-style header names to the decoder's: CloudEvents' AMQP binding names attributes
/// `cloudEvents:<name>` (or `cloudEvents_<name>`), which the HTTP binding calls `ce-<name>`.
pub(crate) fn header_name(name: &str) -> Option<HeaderName> {
    let lower = name.to_ascii_lowercase();
    let mapped = match lower
        .strip_prefix("cloudevents:")
        .or_else(|| lower.strip_prefix("cloudevents_"))
    {
        Some(attribute) => format!("ce-{attribute}"),
        None => lower,
    };
    HeaderName::from_bytes(mapped.as_bytes()).ok()
}

/// Adds `name: value` to `headers` when both are valid HTTP; others are not the decoder's.
pub(crate) fn add_header(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Some(name), Ok(value)) = (header_name(name), HeaderValue::from_str(value)) {
        headers.append(name, value);
    }
}

/// A message over `MAX_BODY_BYTES`.
#[derive(Debug, thiserror::Error)]
#[error("the message is {size} bytes, over the limit of {limit} (MAX_BODY_BYTES)")]
struct TooLarge {
    size: usize,
    limit: usize,
}

/// The message as a delivery of events, each carrying the message's correlation id; a message
/// that does not decode is one record that failed to decode (permanent).
fn delivery_of(message: &impl Incoming, max_bytes: usize) -> Result<Delivery, TooLarge> {
    let body = message.body();
    if body.len() > max_bytes {
        return Err(TooLarge {
            size: body.len(),
            limit: max_bytes,
        });
    }
    let mut delivery = decode(body, &message.headers()).unwrap_or_else(|e: DecodeError| Delivery {
        envelope: Envelope::Single,
        records: vec![Record {
            id: None,
            events: Err(e),
        }],
    });
    let correlation_id = message.correlation_id();
    for record in &mut delivery.records {
        if let Ok(events) = &mut record.events {
            for event in events {
                event.correlation_id.clone_from(&correlation_id);
            }
        }
    }
    Ok(delivery)
}

/// What every message's task needs.
struct Context<H> {
    handler: Arc<H>,
    governor: Governor,
    observer: Observer,
    retry: RetryPolicy,
    timeout: Duration,
    max_bytes: usize,
}

/// Handles one message and settles it; `abandon` turning true (shutdown past its deadline)
/// stops its events and hands it back.
async fn handle<H: Handler, M: Incoming>(
    context: Arc<Context<H>>,
    message: M,
    mut abandon: watch::Receiver<bool>,
) {
    let attempt = message.attempt();
    let span = info_span!(
        "message",
        delivery = %message.label(),
        attempt,
        correlation_id = message.correlation_id().unwrap_or_default(),
    );
    async move {
        let settlement = match delivery_of(&message, context.max_bytes) {
            Err(too_large) => Settlement::DeadLetter {
                reason: too_large.to_string(),
            },
            Ok(delivery) => match context.governor.admit(&delivery) {
                Err(too_many) => Settlement::DeadLetter {
                    reason: too_many.to_string(),
                },
                Ok(()) => {
                    let invocation = context
                        .governor
                        .invocation(Some(Instant::now() + context.timeout));
                    let work = process(
                        &context.handler,
                        delivery,
                        invocation,
                        &context.governor,
                        &context.observer,
                    );
                    // Dropping the work stops its events (the dispatcher aborts what it
                    // started), so nothing of it runs on once the message is handed back.
                    tokio::select! {
                        report = work => settlement(&report.overall(), attempt, &context.retry),
                        () = abandoned(&mut abandon) => Settlement::Requeue,
                    }
                }
            },
        };
        match &settlement {
            Settlement::Ack => info!("Message handled; acknowledged."),
            Settlement::DeadLetter { reason } => error!(
                reason = %reason,
                "Message failed permanently; rejected to the queue's dead-letter exchange (a \
                 queue without one drops it)."
            ),
            Settlement::RetryLater {
                next_attempt,
                delay,
                reason,
            } => warn!(
                reason = %reason,
                next_attempt,
                delay_s = delay.as_secs(),
                "Message failed; it will be delivered again."
            ),
            Settlement::Requeue => {
                warn!("Message not finished at shutdown; handed back to the queue.");
            }
        }
        let settled = match message.settle(&settlement).await {
            Ok(()) => settlement.label(),
            Err(e) => {
                warn!(
                    error = %crate::outcome::chain(&e),
                    "Message could not be settled; the broker delivers it again."
                );
                "unsettled"
            }
        };
        context.observer.metrics.settled(settled);
    }
    .instrument(span)
    .await;
}

/// Resolves once `abandon` is true, or never if its sender is gone without saying so.
async fn abandoned(abandon: &mut watch::Receiver<bool>) {
    if abandon.wait_for(|now| *now).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The first pause before connecting again, doubled after each failure up to the longest.
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_LONGEST: Duration = Duration::from_secs(30);

/// Takes messages from `source` until `stop` turns true, each handled in its own task; then
/// takes no more, lets those in flight finish for `shutdown` and hands back the rest.
async fn consume<H: Handler, S: Source>(
    mut source: S,
    context: Arc<Context<H>>,
    shutdown: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let (abandon_tx, abandon) = watch::channel(false);
    let mut in_flight = JoinSet::new();
    let mut pause = RECONNECT_FIRST;
    let mut connected = false;
    let mut lost = false;
    'run: loop {
        if lost {
            lost = false;
            // A broker that ends every subscription at once must not make a busy loop.
            tokio::select! {
                () = tokio::time::sleep(RECONNECT_FIRST) => {}
                () = abandoned(&mut stop) => break 'run,
            }
        }
        if !connected {
            tokio::select! {
                result = source.connect() => match result {
                    Ok(()) => {
                        connected = true;
                        pause = RECONNECT_FIRST;
                        info!(source = %source.name(), "Consuming.");
                    }
                    Err(SourceError::Fatal(e)) => return Err(SourceError::Fatal(e)),
                    Err(SourceError::Lost(e)) => {
                        warn!(
                            source = %source.name(),
                            error = %crate::outcome::chain(e.as_ref()),
                            retry_in_s = pause.as_secs(),
                            "Cannot reach the broker; trying again."
                        );
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = abandoned(&mut stop) => break 'run,
                        }
                        pause = (pause * 2).min(RECONNECT_LONGEST);
                        continue;
                    }
                },
                () = abandoned(&mut stop) => break 'run,
            }
        }
        tokio::select! {
            next = source.next() => match next {
                Some(Ok(message)) => {
                    in_flight.spawn(handle(Arc::clone(&context), message, abandon.clone()));
                }
                Some(Err(SourceError::Fatal(e))) => return Err(SourceError::Fatal(e)),
                Some(Err(SourceError::Lost(e))) => {
                    // Unsettled messages of the lost channel come back by themselves; their
                    // tasks finish, and their settling fails harmlessly.
                    warn!(
                        source = %source.name(),
                        error = %crate::outcome::chain(e.as_ref()),
                        "Lost the broker; connecting again."
                    );
                    connected = false;
                    lost = true;
                }
                None => {
                    warn!(source = %source.name(), "The subscription ended; connecting again.");
                    connected = false;
                    lost = true;
                }
            },
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            () = abandoned(&mut stop) => break 'run,
        }
    }
    source.stop_taking().await;
    let deadline = tokio::time::Instant::now() + shutdown;
    info!(
        messages = in_flight.len(),
        grace_s = shutdown.as_secs(),
        "Stopped taking messages; letting those in flight finish."
    );
    while !in_flight.is_empty() {
        match tokio::time::timeout_at(deadline, in_flight.join_next()).await {
            Ok(_) => {}
            Err(_) => {
                warn!(
                    messages = in_flight.len(),
                    "Shutdown deadline reached; handing the unfinished messages back."
                );
                let _ = abandon_tx.send(true);
                // Each hands its message back at once; the grace bounds a broker that does
                // not answer.
                let handing_back = async { while in_flight.join_next().await.is_some() {} };
                if tokio::time::timeout(HAND_BACK_GRACE, handing_back)
                    .await
                    .is_err()
                {
                    in_flight.abort_all();
                }
                break;
            }
        }
    }
    source.close().await;
    Ok(())
}

/// How long unfinished messages are given to be handed back before the connection is closed
/// anyway (which hands them back too).
const HAND_BACK_GRACE: Duration = Duration::from_secs(5);

/// `consume`: starts the function, serves the operations routes and consumes until SIGTERM.
pub(crate) async fn run<F: Function>(storage: Option<PathBuf>) -> ExitCode {
    let (started, settings) = match start_with::<F, ConsumeSettings>(storage).await {
        Ok(started) => started,
        Err(e) => return super::fail(e),
    };
    let service = http_runtime::Service {
        name: F::NAME,
        handler: Arc::clone(&started.function),
        store: started.store,
        observer: started.observer.clone(),
        governor: started.governor.clone(),
    };
    let routes = match http_runtime::ops_app(service, &started.settings) {
        Ok(routes) => routes,
        Err(e) => return super::fail(format!("{}: {e}", F::NAME)),
    };
    // SIGTERM stops consuming; so does the operations listener failing (its port taken), as
    // `serve` would not start either.
    let (stop_tx, stop) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let on_signal = Arc::clone(&stop_tx);
    tokio::spawn(async move {
        http_runtime::shutdown_signal().await;
        let _ = on_signal.send(true);
    });
    let http = started.settings.http.clone();
    let mut ops_stop = stop.clone();
    let ops = tokio::spawn(async move {
        let result = http_runtime::listen(routes, &http, "off (consume)", async move {
            abandoned(&mut ops_stop).await;
        })
        .await;
        if let Err(e) = &result {
            error!(error = %e, "The operations routes cannot be served; stopping.");
            let _ = stop_tx.send(true);
        }
        result
    });
    let capacity = started.settings.concurrency;
    let context = Arc::new(Context {
        handler: started.function,
        governor: started.governor,
        observer: started.observer,
        retry: settings.retry,
        timeout: settings.timeout,
        max_bytes: started.settings.http.max_body_bytes,
    });
    let consumed = match settings.source {
        SourceSettings::Amqp(amqp) => {
            let prefetch = u16::try_from(capacity).unwrap_or(u16::MAX);
            let source = AmqpSource::new(amqp, prefetch);
            consume(source, context, settings.shutdown, stop).await
        }
        #[cfg(feature = "consume-kafka")]
        SourceSettings::Kafka(kafka) => {
            let source = KafkaSource::new(kafka, capacity, settings.retry, settings.timeout);
            consume(source, context, settings.shutdown, stop).await
        }
    };
    if let Err(e) = consumed {
        error!(error = %crate::outcome::chain(&e), "Cannot consume.");
        ops.abort();
        return super::fail(format!("{}: {}", F::NAME, crate::outcome::chain(&e)));
    }
    match ops.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("{}: {e}", F::NAME);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{}: the operations routes stopped abnormally: {e}", F::NAME);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
