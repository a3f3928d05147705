//! The Kafka [`Source`] on librdkafka: a consumer group on `CONSUME_TOPIC`. Offsets are
//! committed in order and never past a message that is not settled; a permanent failure is
//! copied to the dead-letter topic before its offset moves on; a retryable one is held (its
//! partition paused) and handled again after the delay; messages of one key (MinIO and
//! Ceph key them by object) are handled one after another, in the order of the partition.

mod tracker;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::HeaderMap;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::{Incoming, RetryPolicy, SettleError, Settlement, Source, SourceError, add_header};
use crate::config::Env;
use crate::kafka_cluster::KafkaCluster;
use crate::outcome::BoxError;
use tracker::{Arrival, Tracker};

/// How long the metadata check and a copy to the dead-letter topic may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka's limit on topic names.
const MAX_TOPIC_BYTES: usize = 249;

/// Where a new consumer group starts (`CONSUME_OFFSET_RESET`, Kafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OffsetReset {
    /// The oldest message the topic keeps (the default): nothing published before the group
    /// first started is lost.
    Earliest,
    /// Only messages published from now on.
    Latest,
}

impl std::str::FromStr for OffsetReset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            other => Err(format!("{other:?}: expected earliest or latest")),
        }
    }
}

/// Where messages come from.
#[derive(Debug, Clone)]
pub(crate) struct KafkaSourceSettings {
    /// `CONSUME_KAFKA_BROKERS` and the security settings beside it (`CONSUME_KAFKA_*`), else
    /// `KAFKA_BROKERS` and its settings (the cluster the function publishes to).
    pub cluster: KafkaCluster,
    /// `CONSUME_TOPIC`.
    pub topic: String,
    /// `CONSUME_GROUP`: the consumer group; its committed offsets are where a restart goes on.
    pub group: String,
    /// `CONSUME_DEAD_LETTER_TOPIC`: where permanent failures go (default
    /// `<topic>.dead-letter`); it must exist.
    pub dead_letter_topic: String,
    /// `CONSUME_OFFSET_RESET`.
    pub offset_reset: OffsetReset,
}

impl KafkaSourceSettings {
    pub(crate) fn read(env: &mut Env) -> Option<Self> {
        // Its own cluster if named, else the one the function publishes to.
        let own = env
            .raw("CONSUME_KAFKA_BROKERS")
            .is_some_and(|v| !v.trim().is_empty());
        let cluster = KafkaCluster::read_as(env, if own { "CONSUME_KAFKA_" } else { "KAFKA_" });
        let topic: Option<String> = env.required("CONSUME_TOPIC");
        let group: Option<String> = env.required("CONSUME_GROUP");
        let dead_letter_topic: Option<String> = env.optional("CONSUME_DEAD_LETTER_TOPIC");
        let offset_reset = env.or("CONSUME_OFFSET_RESET", OffsetReset::Earliest);
        let topic = topic?;
        let dead_letter_topic = dead_letter_topic.unwrap_or_else(|| format!("{topic}.dead-letter"));
        if dead_letter_topic == topic {
            env.problem(
                "CONSUME_DEAD_LETTER_TOPIC",
                "is CONSUME_TOPIC: dead letters need a topic of their own",
            );
        }
        for (variable, name) in [
            ("CONSUME_TOPIC", topic.as_str()),
            ("CONSUME_DEAD_LETTER_TOPIC", dead_letter_topic.as_str()),
        ] {
            let legal = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if name.is_empty() || name.len() > MAX_TOPIC_BYTES || !legal {
                env.problem(
                    variable,
                    format!(
                        "{name:?} is not a Kafka topic name (1 to {MAX_TOPIC_BYTES} of \
                         a-z, A-Z, 0-9, '.', '_' and '-')"
                    ),
                );
            }
        }
        Some(Self {
            cluster: cluster?,
            topic,
            group: group?,
            dead_letter_topic,
            offset_reset,
        })
    }
}

/// What could go wrong talking to the cluster, naming what it concerns.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KafkaSourceError {
    #[error("librdkafka refused the configuration")]
    Config(#[source] KafkaError),
    #[error("cannot read the cluster's topics (KAFKA_BROKERS)")]
    Metadata(#[source] KafkaError),
    #[error("topic {topic:?} ({variable}) does not exist: {advice}")]
    NoTopic {
        topic: String,
        variable: &'static str,
        advice: &'static str,
    },
    #[error("the subscription to topic {topic:?} was refused")]
    Subscribe {
        topic: String,
        #[source]
        source: KafkaError,
    },
}

/// A message taken from the topic and not settled, with what it needs to come back.
struct Held {
    message: OwnedMessage,
    attempt: u32,
    generation: u64,
    /// Its slot of `BATCH_CONCURRENCY`, given back when the message is dropped.
    _slot: OwnedSemaphorePermit,
}

/// Forgets a rebalance's revoked partitions: what was taken from them and not settled is
/// read again by their next owner, from the offset committed for them.
struct Rebalancing {
    tracker: Arc<Mutex<Tracker<Held>>>,
}

impl ClientContext for Rebalancing {}

impl ConsumerContext for Rebalancing {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let revoked: Vec<i32> = partitions
                .elements()
                .iter()
                .map(|p| p.partition())
                .collect();
            tracing::info!(?revoked, "Partitions revoked.");
            lock(&self.tracker).revoke(&revoked);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The tracker's state stays consistent between its methods, so a panic elsewhere while
    // it was held leaves nothing half-done.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A live consumer and what its messages settle with.
struct Link {
    consumer: StreamConsumer<Rebalancing>,
    producer: FutureProducer,
    tracker: Arc<Mutex<Tracker<Held>>>,
    /// Held messages whose turn came (their predecessor of the same key settled, or their
    /// retry delay ended).
    ready: mpsc::UnboundedSender<Held>,
    /// Turns true at `close`: messages waiting out a delay are dropped (unsettled) then.
    closed: watch::Receiver<bool>,
    topic: String,
    dead_letter_topic: String,
    retry_delay: Duration,
}

/// The messages of one topic for one consumer group.
pub(crate) struct KafkaSource {
    settings: KafkaSourceSettings,
    retry: RetryPolicy,
    timeout: Duration,
    permits: Arc<Semaphore>,
    capacity: usize,
    link: Option<Arc<Link>>,
    ready: mpsc::UnboundedReceiver<Held>,
    ready_tx: mpsc::UnboundedSender<Held>,
    close_tx: watch::Sender<bool>,
}

impl KafkaSource {
    /// A source that holds at most `capacity` unsettled messages at once
    /// (`BATCH_CONCURRENCY`), each working for at most `timeout` per attempt.
    pub(crate) fn new(
        settings: KafkaSourceSettings,
        capacity: usize,
        retry: RetryPolicy,
        timeout: Duration,
    ) -> Self {
        let capacity = capacity.max(1);
        let (ready_tx, ready) = mpsc::unbounded_channel();
        let (close_tx, _) = watch::channel(false);
        Self {
            settings,
            retry,
            timeout,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            link: None,
            ready,
            ready_tx,
            close_tx,
        }
    }

    /// librdkafka's configuration for the consumer and the dead-letter producer.
    fn client_config(&self) -> ClientConfig {
        let s = &self.settings;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", s.cluster.brokers.join(","))
            .set("security.protocol", s.cluster.security_protocol())
            .set("client.id", "bucketfn")
            .set("reconnect.backoff.ms", "1000")
            .set("reconnect.backoff.max.ms", "30000");
        if let Some(sasl) = &s.cluster.sasl {
            config
                .set("sasl.mechanism", &sasl.mechanism)
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
        if let Some(ca) = &s.cluster.tls_ca_file {
            config.set("ssl.ca.location", ca.display().to_string());
        }
        config
    }

    fn consumer_config(&self) -> ClientConfig {
        let s = &self.settings;
        let mut config = self.client_config();
        // While every slot is taken nothing is polled: the group must not take that for a
        // dead consumer. A slot frees within the attempts of one message, each its timeout
        // and delay long.
        let attempt = self.timeout + self.retry.delay;
        let busiest = attempt
            .saturating_mul(self.retry.max_attempts)
            .saturating_add(Duration::from_secs(60));
        let poll_ms = busiest.as_millis().clamp(300_000, 86_400_000);
        config
            .set("group.id", &s.group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            // Offsets are stored only as messages settle, in order.
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match s.offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                },
            )
            .set("max.poll.interval.ms", poll_ms.to_string())
            // What librdkafka fetches ahead stays near what the slots can take.
            .set("queued.min.messages", (self.capacity * 2).to_string())
            .set("queued.max.messages.kbytes", "16384");
        config
    }

    /// Checks that both topics exist (librdkafka would otherwise wait for them silently).
    async fn check_topics(&self, producer: &FutureProducer) -> Result<(), SourceError> {
        let client = producer.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            client.client().fetch_metadata(None, BROKER_TIMEOUT)
        })
        .await
        .map_err(|e| SourceError::Lost(Box::new(e)))?
        .map_err(|e| SourceError::Lost(Box::new(KafkaSourceError::Metadata(e))))?;
        let exists = |name: &str| {
            metadata
                .topics()
                .iter()
                .any(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
        };
        for (topic, variable, advice) in [
            (
                &self.settings.topic,
                "CONSUME_TOPIC",
                "create it, and point the bucket's notifications at it",
            ),
            (
                &self.settings.dead_letter_topic,
                "CONSUME_DEAD_LETTER_TOPIC",
                "create it (permanent failures are kept there), or name another",
            ),
        ] {
            if !exists(topic) {
                return Err(SourceError::Fatal(Box::new(KafkaSourceError::NoTopic {
                    topic: topic.clone(),
                    variable,
                    advice,
                })));
            }
        }
        Ok(())
    }
}

impl Source for KafkaSource {
    type Message = KafkaMessage;

    fn name(&self) -> String {
        format!(
            "topic {:?} (group {:?})",
            self.settings.topic, self.settings.group
        )
    }

    async fn connect(&mut self) -> Result<(), SourceError> {
        let fatal = |e| SourceError::Fatal(Box::new(KafkaSourceError::Config(e)));
        let producer: FutureProducer = self
            .client_config()
            .set("acks", "all")
            .set("message.timeout.ms", BROKER_TIMEOUT.as_millis().to_string())
            .create()
            .map_err(fatal)?;
        self.check_topics(&producer).await?;
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let consumer: StreamConsumer<Rebalancing> = self
            .consumer_config()
            .create_with_context(Rebalancing {
                tracker: Arc::clone(&tracker),
            })
            .map_err(fatal)?;
        consumer
            .subscribe(&[self.settings.topic.as_str()])
            .map_err(|source| {
                SourceError::Fatal(Box::new(KafkaSourceError::Subscribe {
                    topic: self.settings.topic.clone(),
                    source,
                }))
            })?;
        self.link = Some(Arc::new(Link {
            consumer,
            producer,
            tracker,
            ready: self.ready_tx.clone(),
            closed: self.close_tx.subscribe(),
            topic: self.settings.topic.clone(),
            dead_letter_topic: self.settings.dead_letter_topic.clone(),
            retry_delay: self.retry.delay,
        }));
        Ok(())
    }

    async fn next(&mut self) -> Option<Result<KafkaMessage, SourceError>> {
        let link = Arc::clone(self.link.as_ref()?);
        loop {
            // Cancel-safe: a message is taken from librdkafka or the ready queue only in a
            // step that finishes without waiting.
            let received = tokio::select! {
                biased;
                Some(held) = self.ready.recv() => {
                    return Some(Ok(KafkaMessage::new(&link, held)));
                }
                taken = async {
                    let permit = Arc::clone(&self.permits).acquire_owned().await.ok()?;
                    Some((permit, link.consumer.recv().await.map(|m| m.detach())))
                } => taken,
            };
            match received {
                Some((permit, Ok(message))) => {
                    let key = message.key().map(<[u8]>::to_vec);
                    let (partition, offset) = (message.partition(), message.offset());
                    let arrival =
                        lock(&link.tracker).arrive(partition, offset, key, |generation| Held {
                            message,
                            attempt: 1,
                            generation,
                            _slot: permit,
                        });
                    match arrival {
                        Arrival::Go(held) => return Some(Ok(KafkaMessage::new(&link, held))),
                        // Behind an unsettled message of the same key: it comes from the
                        // ready queue once that one settled.
                        Arrival::Held => {}
                    }
                }
                // No more slots: consuming stops.
                None => return None,
                Some((_, Err(e))) => {
                    // librdkafka reconnects by itself (with backoff); a failed poll is told
                    // and paced, not a reason to leave the group.
                    tracing::warn!(
                        source = %self.name(),
                        error = %e,
                        "Kafka consumer error; librdkafka retries."
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn stop_taking(&mut self) {
        // Nothing more is fetched; what is in flight can still be settled (its offsets
        // stored while the partitions are still assigned).
        if let Some(link) = &self.link
            && let Ok(assignment) = link.consumer.assignment()
            && let Err(e) = link.consumer.pause(&assignment)
        {
            tracing::warn!(error = %e, "Could not pause the partitions.");
        }
        self.permits.close();
    }

    async fn close(&mut self) {
        let _ = self.close_tx.send(true);
        let Some(link) = self.link.take() else {
            return;
        };
        // The offsets of what settled, committed before the group is left.
        let closing = tokio::task::spawn_blocking(move || {
            if let Err(e) = link.consumer.commit_consumer_state(CommitMode::Sync)
                && !matches!(
                    e,
                    KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)
                )
            {
                tracing::warn!(error = %e, "Could not commit the last offsets.");
            }
            drop(link);
        });
        let _ = closing.await;
    }
}

/// One message of the topic, not yet settled.
pub(crate) struct KafkaMessage {
    held: Held,
    link: Arc<Link>,
}

impl KafkaMessage {
    fn new(link: &Arc<Link>, held: Held) -> Self {
        Self {
            held,
            link: Arc::clone(link),
        }
    }

    fn partition_list(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.link.topic, self.held.message.partition());
        list
    }

    /// Settled: its offset is no longer held back, and the next of its key may go.
    fn finish(self) {
        let message = &self.held.message;
        let (commit, successor) = lock(&self.link.tracker).settle(
            message.partition(),
            self.held.generation,
            message.offset(),
            message.key(),
        );
        if let Some(next) = commit {
            let mut offsets = TopicPartitionList::new();
            if let Err(e) = offsets
                .add_partition_offset(&self.link.topic, message.partition(), Offset::Offset(next))
                .and_then(|()| self.link.consumer.store_offsets(&offsets))
            {
                // Not stored, so read again after a restart: at least once still holds.
                tracing::warn!(error = %e, offset = next, "Could not store the offset.");
            }
        }
        if let Some(successor) = successor {
            let _ = self.link.ready.send(successor);
        }
    }

    /// Waits out `delay` with its partition paused, then comes back as `attempt`.
    fn come_back(self, attempt: u32, delay: Duration) {
        let partition = self.held.message.partition();
        if lock(&self.link.tracker).retrying(partition, self.held.generation)
            && let Err(e) = self.link.consumer.pause(&self.partition_list())
        {
            tracing::warn!(error = %e, partition, "Could not pause the partition.");
        }
        let mut closed = self.link.closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                // Dropped unsettled: its offset was never committed past.
                _ = closed.wait_for(|closed| *closed) => return,
            }
            let Some(resume) = lock(&self.link.tracker).retried(partition, self.held.generation)
            else {
                // Revoked meanwhile: its next owner reads it again.
                return;
            };
            if resume && let Err(e) = self.link.consumer.resume(&self.partition_list()) {
                tracing::warn!(error = %e, partition, "Could not resume the partition.");
            }
            let mut held = self.held;
            held.attempt = attempt;
            let _ = self.link.ready.send(held);
        });
    }

    /// Copies the message to the dead-letter topic with why it is there, and waits for the
    /// cluster to hold the copy.
    async fn copy_to_dead_letter(&self, reason: &str) -> Result<(), BoxError> {
        let message = &self.held.message;
        let mut headers = message
            .headers()
            .map(|h| {
                h.iter().fold(OwnedHeaders::new(), |all, header| {
                    all.insert(Header {
                        key: header.key,
                        value: header.value,
                    })
                })
            })
            .unwrap_or_default();
        let origin = format!(
            "{}/{}@{}",
            self.link.topic,
            message.partition(),
            message.offset()
        );
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        headers = headers
            .insert(Header {
                key: "x-bucketfn-reason",
                value: Some(reason.as_str()),
            })
            .insert(Header {
                key: "x-bucketfn-origin",
                value: Some(origin.as_str()),
            });
        let payload = message.payload().unwrap_or_default();
        let mut record = FutureRecord::to(&self.link.dead_letter_topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        self.link
            .producer
            .send(record, BROKER_TIMEOUT)
            .await
            .map_err(|(e, _)| -> BoxError {
                format!(
                    "cannot copy it to dead-letter topic {:?}: {e}",
                    self.link.dead_letter_topic
                )
                .into()
            })?;
        Ok(())
    }
}

/// A Kafka header's name as the decoder knows it: CloudEvents' Kafka binding names attributes
/// `ce_<name>`, which the HTTP binding calls `ce-<name>`.
fn header_name(key: &str) -> String {
    match key.get(..3) {
        Some(prefix) if prefix.eq_ignore_ascii_case("ce_") => format!("ce-{}", &key[3..]),
        _ => key.to_owned(),
    }
}

/// The longest reason a dead letter carries in its header.
const MAX_REASON_CHARS: usize = 2000;

impl Incoming for KafkaMessage {
    fn body(&self) -> &[u8] {
        self.held.message.payload().unwrap_or_default()
    }

    fn headers(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let Some(headers) = self.held.message.headers() {
            for header in headers.iter() {
                let Some(value) = header.value.and_then(|v| std::str::from_utf8(v).ok()) else {
                    continue;
                };
                add_header(&mut map, &header_name(header.key), value);
            }
        }
        map
    }

    fn correlation_id(&self) -> Option<String> {
        let headers = self.held.message.headers()?;
        headers.iter().find_map(|h| {
            ["correlation-id", "correlation_id", "x-correlation-id"]
                .iter()
                .any(|n| h.key.eq_ignore_ascii_case(n))
                .then(|| h.value.and_then(|v| std::str::from_utf8(v).ok()))
                .flatten()
                .map(str::to_owned)
        })
    }

    fn attempt(&self) -> u32 {
        self.held.attempt
    }

    fn label(&self) -> String {
        format!(
            "{}/{}@{}",
            self.link.topic,
            self.held.message.partition(),
            self.held.message.offset()
        )
    }

    async fn settle(self, settlement: &Settlement) -> Result<(), SettleError> {
        match settlement {
            Settlement::Ack => {
                self.finish();
                Ok(())
            }
            Settlement::DeadLetter { reason } => match self.copy_to_dead_letter(reason).await {
                Ok(()) => {
                    self.finish();
                    Ok(())
                }
                Err(e) => {
                    // Its offset must not move on without the copy: it comes back later and
                    // is handled (and dead-lettered) again.
                    let (attempt, delay) = (self.held.attempt, self.link.retry_delay);
                    self.come_back(attempt, delay);
                    Err(SettleError(e))
                }
            },
            Settlement::RetryLater {
                next_attempt,
                delay,
                ..
            } => {
                self.come_back(*next_attempt, *delay);
                Ok(())
            }
            // Unsettled: the next owner of its partition reads it again.
            Settlement::Requeue => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), BoxError>;

    fn read(pairs: &[(&str, &str)]) -> (Option<KafkaSourceSettings>, Vec<String>) {
        crate::config::read_from_pairs(pairs, KafkaSourceSettings::read)
    }

    fn has(problems: &[String], variable: &str) -> bool {
        problems
            .iter()
            .any(|p| p.starts_with(&format!("{variable}:")))
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let (_, problems) = read(&[
            ("CONSUME_TOPIC", "bucket events!"),
            ("CONSUME_OFFSET_RESET", "oldest"),
        ]);
        for variable in [
            "KAFKA_BROKERS",
            "CONSUME_GROUP",
            "CONSUME_OFFSET_RESET",
            "CONSUME_TOPIC",
            "CONSUME_DEAD_LETTER_TOPIC",
        ] {
            assert!(has(&problems, variable), "{variable} not in {problems:?}");
        }
    }

    #[test]
    fn the_published_to_cluster_is_used_unless_consume_names_its_own() -> TestResult {
        let base = [
            ("KAFKA_BROKERS", "sink:9092"),
            ("CONSUME_TOPIC", "bucket-events"),
            ("CONSUME_GROUP", "thumbnails"),
        ];
        let (settings, problems) = read(&base);
        let settings = settings.ok_or("not read")?;
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(settings.cluster.brokers, ["sink:9092"]);
        assert_eq!(settings.dead_letter_topic, "bucket-events.dead-letter");
        assert_eq!(settings.offset_reset, OffsetReset::Earliest);
        // Its own cluster, with its own security settings.
        let mut own = base.to_vec();
        own.extend([
            ("CONSUME_KAFKA_BROKERS", "events-1:9093,events-2:9093"),
            ("CONSUME_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        ]);
        let (_, problems) = read(&own);
        assert!(
            has(&problems, "CONSUME_KAFKA_SASL_USERNAME"),
            "{problems:?}"
        );
        own.extend([
            ("CONSUME_KAFKA_SASL_USERNAME", "u"),
            ("CONSUME_KAFKA_SASL_PASSWORD", "p"),
        ]);
        let (settings, problems) = read(&own);
        let settings = settings.ok_or("not read")?;
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(settings.cluster.brokers, ["events-1:9093", "events-2:9093"]);
        assert_eq!(settings.cluster.security_protocol(), "SASL_SSL");
        Ok(())
    }

    #[test]
    fn the_dead_letter_topic_cannot_be_the_topic() {
        let (_, problems) = read(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("CONSUME_TOPIC", "events"),
            ("CONSUME_GROUP", "g"),
            ("CONSUME_DEAD_LETTER_TOPIC", "events"),
        ]);
        assert!(has(&problems, "CONSUME_DEAD_LETTER_TOPIC"), "{problems:?}");
    }

    #[test]
    fn cloudevents_kafka_headers_reach_the_decoder_as_http_ones() {
        assert_eq!(header_name("ce_type"), "ce-type");
        assert_eq!(header_name("CE_specversion"), "ce-specversion");
        assert_eq!(header_name("content-type"), "content-type");
        assert_eq!(header_name("ce"), "ce");
    }
}
