//! Kafka-compatible streams (Apache Kafka, Amazon MSK, Confluent, Redpanda, OCI Streaming)
//! through rskafka, a pure-Rust client: acks from all in-sync replicas, SASL PLAIN / SCRAM,
//! TLS, optional compression, records partitioned by key as Kafka's own producers do.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures_util::future::try_join_all;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use rskafka::{BackoffConfig, BackoffError, ConnectionError, SaslError};
use tokio::sync::Mutex;

use super::records::Outgoing;
use super::{Message, MessageParts, PublishError, Publisher, RecordBatch};
use crate::config::{Env, FromEnv};
pub use crate::kafka_cluster::{KafkaCluster, Sasl};
use crate::outcome::BoxError;

/// How records are compressed on the wire (`KAFKA_COMPRESSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaCompression {
    None,
    Gzip,
    Snappy,
}

impl std::str::FromStr for KafkaCompression {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            "snappy" => Ok(Self::Snappy),
            _ => Err("expected none, gzip or snappy"),
        }
    }
}

/// Where and how to publish, from `KAFKA_*` variables. `Debug` hides the SASL password and
/// credentials in broker addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSettings {
    /// The cluster (`KAFKA_BROKERS`, security protocol, SASL, TLS).
    pub cluster: KafkaCluster,
    /// `KAFKA_TOPIC`.
    pub topic: String,
    /// `KAFKA_COMPRESSION`.
    pub compression: KafkaCompression,
    /// `KAFKA_TIMEOUT_SECS`: how long one publish may take, connection included, before it
    /// counts as failed (and the event as retryable).
    pub timeout: Duration,
    /// `KAFKA_MAX_REQUEST_BYTES`: records per produce request stay under this (the broker's
    /// `message.max.bytes` is 1 MiB by default).
    pub max_request_bytes: usize,
}

impl FromEnv for KafkaSettings {
    fn read(env: &mut Env) -> Option<Self> {
        let cluster = KafkaCluster::read(env);
        let topic: Option<String> = env.required("KAFKA_TOPIC");
        let compression = env.or("KAFKA_COMPRESSION", KafkaCompression::None);
        let timeout = env.or("KAFKA_TIMEOUT_SECS", 30u64);
        let max_request_bytes = env.or("KAFKA_MAX_REQUEST_BYTES", 1_000_000usize);
        if timeout == 0 {
            env.problem("KAFKA_TIMEOUT_SECS", "must be at least 1");
        }
        if max_request_bytes < 1024 {
            env.problem("KAFKA_MAX_REQUEST_BYTES", "must be at least 1024");
        }
        Some(Self {
            cluster: cluster?,
            topic: topic?,
            compression,
            timeout: Duration::from_secs(timeout),
            max_request_bytes,
        })
    }
}

/// A connected client and one partition client per partition of the topic.
struct Connected {
    partitions: Vec<PartitionClient>,
    // Kept alive for the partition clients' shared broker connections.
    _client: Client,
}

/// Publishes to one topic. Connects on first use and again after any failure, so a broker
/// that restarts is picked up by the next event.
pub struct KafkaPublisher {
    settings: KafkaSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    connected: Mutex<Option<Arc<Connected>>>,
    /// Spreads key-less messages over the partitions.
    next_partition: AtomicUsize,
    sink: String,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// Prepares the publisher (TLS trust is read now, so a bad CA file stops the start-up);
    /// nothing connects until the first publish.
    pub fn new(settings: KafkaSettings) -> Result<Self, BoxError> {
        let tls = if settings.cluster.tls {
            Some(crate::tls::client_config(
                "KAFKA_TLS_CA_FILE",
                settings.cluster.tls_ca_file.as_deref(),
            )?)
        } else {
            None
        };
        let sink = format!("Kafka topic {:?}", settings.topic);
        Ok(Self {
            settings,
            tls,
            connected: Mutex::new(None),
            next_partition: AtomicUsize::new(0),
            sink,
        })
    }

    async fn connection(&self) -> Result<Arc<Connected>, PublishError> {
        let mut slot = self.connected.lock().await;
        if let Some(connected) = slot.as_ref() {
            return Ok(Arc::clone(connected));
        }
        let mut builder = ClientBuilder::new(self.settings.cluster.brokers.clone())
            .client_id("bucketfn")
            .max_message_size(self.settings.max_request_bytes.max(1 << 20) * 2)
            .backoff_config(retries_within(self.settings.timeout));
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(Arc::clone(tls));
        }
        if let Some(sasl) = &self.settings.cluster.sasl {
            let credentials = Credentials::new(sasl.username.clone(), sasl.password.clone());
            builder = builder.sasl_config(match sasl.mechanism.as_str() {
                "SCRAM-SHA-256" => SaslConfig::ScramSha256(credentials),
                "SCRAM-SHA-512" => SaslConfig::ScramSha512(credentials),
                _ => SaslConfig::Plain(credentials),
            });
        }
        let client = builder.build().await.map_err(|e| self.classify(e))?;
        let topics = client.list_topics().await.map_err(|e| self.classify(e))?;
        let Some(topic) = topics.into_iter().find(|t| t.name == self.settings.topic) else {
            return Err(PublishError::Rejected {
                sink: self.sink.clone(),
                source: "the topic does not exist".into(),
            });
        };
        let mut ids: Vec<i32> = topic.partitions.into_iter().collect();
        ids.sort_unstable();
        let mut partitions = Vec::with_capacity(ids.len());
        for id in ids {
            let partition = client
                .partition_client(self.settings.topic.clone(), id, UnknownTopicHandling::Retry)
                .await
                .map_err(|e| self.classify(e))?;
            partitions.push(partition);
        }
        if partitions.is_empty() {
            return Err(PublishError::Rejected {
                sink: self.sink.clone(),
                source: "the topic has no partitions".into(),
            });
        }
        let connected = Arc::new(Connected {
            partitions,
            _client: client,
        });
        *slot = Some(Arc::clone(&connected));
        Ok(connected)
    }

    /// Sends within KAFKA_TIMEOUT_SECS; a failure drops the connections.
    async fn publish_in_time(&self, outgoing: Outgoing) -> Result<(), PublishError> {
        let mut records = Vec::new();
        outgoing.for_each(|message| records.push(to_record(message)));
        // The records own copies: the batch's buffer need not wait for the broker.
        drop(outgoing);
        if records.is_empty() {
            return Ok(());
        }
        let result = tokio::time::timeout(self.settings.timeout, self.send(records))
            .await
            .unwrap_or_else(|_| {
                Err(PublishError::Unavailable {
                    sink: self.sink.clone(),
                    source: format!(
                        "no acknowledgement within {} s (KAFKA_TIMEOUT_SECS)",
                        self.settings.timeout.as_secs()
                    )
                    .into(),
                })
            });
        if result.is_err() {
            // A broker that restarted or moved leaves stale connections behind; start afresh.
            *self.connected.lock().await = None;
        }
        result
    }

    async fn send(&self, records: Vec<Record>) -> Result<(), PublishError> {
        let connected = self.connection().await?;
        let count = connected.partitions.len();
        let mut by_partition: BTreeMap<usize, Vec<Record>> = BTreeMap::new();
        for record in records {
            let partition = match &record.key {
                Some(key) => partition_for(key, count),
                None => self.next_partition.fetch_add(1, Ordering::Relaxed) % count,
            };
            if record.approximate_size() > self.settings.max_request_bytes {
                return Err(PublishError::Rejected {
                    sink: self.sink.clone(),
                    source: format!(
                        "a message of {} bytes is larger than KAFKA_MAX_REQUEST_BYTES ({})",
                        record.approximate_size(),
                        self.settings.max_request_bytes
                    )
                    .into(),
                });
            }
            by_partition.entry(partition).or_default().push(record);
        }
        let compression = match self.settings.compression {
            KafkaCompression::None => Compression::NoCompression,
            KafkaCompression::Gzip => Compression::Gzip,
            KafkaCompression::Snappy => Compression::Snappy,
        };
        // Partitions are written concurrently; within one partition, requests go in order so
        // that the records of one object keep their order.
        try_join_all(by_partition.into_iter().map(|(partition, records)| {
            let client = &connected.partitions[partition];
            async move {
                for chunk in chunks_under(records, self.settings.max_request_bytes) {
                    client
                        .produce(chunk, compression)
                        .await
                        .map_err(|e| self.classify(e))?;
                }
                Ok::<(), PublishError>(())
            }
        }))
        .await?;
        Ok(())
    }

    fn classify(&self, error: KafkaError) -> PublishError {
        let sink = self.sink.clone();
        // A refused login or an untrusted certificate is retryable: an operator fixes the
        // secret or the CA file, and the event should still be there when they have.
        let refused = match (connect_cause(&error), &self.settings.cluster.sasl) {
            (Some(Cause::Login), Some(sasl)) => ConnectError::Login {
                mechanism: sasl.mechanism.clone(),
                username: sasl.username.clone(),
                source: error,
            },
            (Some(Cause::Trust), _) => ConnectError::Trust {
                ca_file: self.settings.cluster.tls_ca_file.clone(),
                source: error,
            },
            _ => {
                let permanent = matches!(
                    &error,
                    KafkaError::ServerError {
                        protocol_error: ProtocolError::MessageTooLarge
                            | ProtocolError::RecordListTooLarge
                            | ProtocolError::InvalidTopicException
                            | ProtocolError::TopicAuthorizationFailed
                            | ProtocolError::ClusterAuthorizationFailed
                            | ProtocolError::InvalidRecord
                            | ProtocolError::UnsupportedCompressionType
                            | ProtocolError::PolicyViolation
                            | ProtocolError::InvalidRequiredAcks,
                        ..
                    }
                );
                let source = Box::new(error);
                return if permanent {
                    PublishError::Rejected { sink, source }
                } else {
                    PublishError::Unavailable { sink, source }
                };
            }
        };
        PublishError::Unavailable {
            sink,
            source: Box::new(refused),
        }
    }
}

/// A connection the broker or our trust refused, named for the operator who must fix it.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(
        "the broker refused the SASL {mechanism} login of user {username:?} (KAFKA_SASL_MECHANISM, \
         KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD)"
    )]
    Login {
        mechanism: String,
        username: String,
        #[source]
        source: KafkaError,
    },
    #[error(
        "the broker's TLS certificate is not trusted by the system's roots or KAFKA_TLS_CA_FILE \
         ({})",
        ca_file.as_ref().map_or("unset".into(), |path| path.display().to_string())
    )]
    Trust {
        ca_file: Option<PathBuf>,
        #[source]
        source: KafkaError,
    },
}

/// Why connecting failed, where rskafka's error says.
#[derive(Debug, PartialEq, Eq)]
enum Cause {
    Login,
    Trust,
}

/// rskafka's words for a failed SASL exchange (`ConnectionError::SaslFailed`), and for the
/// one kind of it that is not the broker's answer but a broken connection.
const SASL_FAILED: &str = "Sasl handshake failed: ";
const SASL_BROKEN: &str = "Request error";
/// rustls's words for a certificate it does not accept.
const UNTRUSTED: &str = "invalid peer certificate";

fn connect_cause(error: &KafkaError) -> Option<Cause> {
    let text = match error {
        KafkaError::Connection(ConnectionError::SaslFailed(SaslError::RequestError(_))) => {
            return None;
        }
        KafkaError::Connection(ConnectionError::SaslFailed(_)) => return Some(Cause::Login),
        // rskafka retries a failed connection until its backoff deadline and then reports the
        // last error of each broker in one list, a private type without `source`: its text is
        // all there is to go by. The tests pin these words to rskafka's and rustls's own.
        KafkaError::Connection(ConnectionError::RetryFailed(BackoffError::DeadlineExceded {
            source,
            ..
        }))
        | KafkaError::RetryFailed(BackoffError::DeadlineExceded { source, .. }) => {
            source.to_string()
        }
        KafkaError::Connection(ConnectionError::Transport { error, .. }) => error.to_string(),
        _ => return None,
    };
    let login = text
        .match_indices(SASL_FAILED)
        .any(|(at, found)| !text[at + found.len()..].starts_with(SASL_BROKEN));
    if login {
        Some(Cause::Login)
    } else if text.contains(UNTRUSTED) {
        Some(Cause::Trust)
    } else {
        None
    }
}

/// rskafka's retries within one call: its pauses add up to half of `timeout` at most, so that
/// it gives up with the real cause (a refused login, an untrusted certificate, a refused
/// connection) while the publish still has time to report it, instead of being cut off at
/// `KAFKA_TIMEOUT_SECS` with no cause at all.
fn retries_within(timeout: Duration) -> BackoffConfig {
    let init_backoff = Duration::from_millis(100);
    BackoffConfig {
        init_backoff,
        max_backoff: (timeout / 4).clamp(init_backoff, Duration::from_secs(2)),
        base: 2.0,
        deadline: Some(timeout / 2),
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    async fn publish(&self, messages: Vec<Message>) -> Result<(), PublishError> {
        self.publish_in_time(Outgoing::Messages(messages)).await
    }

    /// Records straight from the batch's buffer, without a message of each first.
    async fn publish_records(&self, batch: RecordBatch) -> Result<(), PublishError> {
        self.publish_in_time(Outgoing::Records(batch)).await
    }
}

/// A message or a record in its batch as a Kafka record: its headers, plus `content-type` and
/// `correlation_id` where given and not already a header.
fn to_record(message: MessageParts<'_>) -> Record {
    let mut headers: BTreeMap<String, Vec<u8>> = message
        .headers
        .iter()
        .map(|(name, value)| (name.to_owned(), value.as_bytes().to_vec()))
        .collect();
    if !message.content_type.is_empty() {
        headers
            .entry("content-type".to_owned())
            .or_insert_with(|| message.content_type.as_bytes().to_vec());
    }
    if let Some(id) = message.correlation_id {
        headers
            .entry("correlation_id".to_owned())
            .or_insert_with(|| id.as_bytes().to_vec());
    }
    Record {
        key: message.key.map(|key| key.as_bytes().to_vec()),
        value: Some(message.body.as_bytes().to_vec()),
        headers,
        timestamp: message.timestamp.unwrap_or_else(Utc::now),
    }
}

/// Splits records, in order, into groups whose approximate size stays under `limit`.
fn chunks_under(records: Vec<Record>, limit: usize) -> Vec<Vec<Record>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for record in records {
        // Each record also carries a few dozen bytes of framing.
        let cost = record.approximate_size() + 64;
        if !current.is_empty() && size + cost > limit {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
        size += cost;
        current.push(record);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The partition Kafka's default partitioner picks for `key` (murmur2, made positive), so
/// that our records share partitions with those of Java, librdkafka (`murmur2_random`) and
/// other clients for the same key.
pub fn partition_for(key: &[u8], partitions: usize) -> usize {
    (murmur2(key) & 0x7fff_ffff) as usize % partitions.max(1)
}

/// MurmurHash2 as Kafka's `Utils.murmur2` computes it (seed 0x9747b28c).
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in chunks.by_ref() {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(&first) = rest.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn kafka_record(message: Message) -> Record {
        to_record(message.parts())
    }

    type TestResult = Result<(), BoxError>;

    #[test]
    fn murmur2_matches_kafkas_reference_values() {
        // From Kafka's UtilsTest.testMurmur2.
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()) as i32, expected, "{key}");
        }
    }

    #[test]
    fn one_key_always_lands_in_one_partition() {
        let first = partition_for(b"logs/2024/a.gz", 6);
        assert!(first < 6);
        for _ in 0..10 {
            assert_eq!(partition_for(b"logs/2024/a.gz", 6), first);
        }
    }

    #[test]
    fn records_are_chunked_in_order_under_the_limit() {
        let records: Vec<Record> = (0..10)
            .map(|n| {
                kafka_record(Message {
                    key: Some(format!("k{n}")),
                    body: Bytes::from(vec![b'x'; 300]),
                    ..Message::default()
                })
            })
            .collect();
        let chunks = chunks_under(records, 1000);
        assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= 2));
        let keys: Vec<Vec<u8>> = chunks.into_iter().flatten().filter_map(|r| r.key).collect();
        let expected: Vec<Vec<u8>> = (0..10).map(|n| format!("k{n}").into_bytes()).collect();
        assert_eq!(keys, expected);
    }

    #[test]
    fn content_type_becomes_a_header_without_replacing_one() {
        let record = kafka_record(Message {
            key: Some("b/k".into()),
            headers: vec![("ce_id".into(), "1".into())],
            content_type: "application/json".into(),
            ..Message::default()
        });
        assert_eq!(
            record.headers.get("content-type").map(Vec::as_slice),
            Some(&b"application/json"[..])
        );
        assert_eq!(record.key.as_deref(), Some(&b"b/k"[..]));
    }

    #[test]
    fn a_record_has_its_messages_own_time_or_the_time_of_sending() {
        let own = chrono::DateTime::from_timestamp(1_418_530_010, 0);
        let record = kafka_record(Message {
            timestamp: own,
            ..Message::default()
        });
        assert_eq!(Some(record.timestamp), own);
        let before = Utc::now();
        assert!(kafka_record(Message::default()).timestamp >= before);
    }

    #[test]
    fn settings_need_brokers_topic_and_complete_sasl() -> TestResult {
        let err = Env::from_pairs([
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_MECHANISM", "GSSAPI"),
        ])
        .load::<KafkaSettings>()
        .err()
        .ok_or("accepted")?;
        let vars: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            vars,
            [
                "KAFKA_BROKERS",
                "KAFKA_SASL_MECHANISM",
                "KAFKA_SASL_USERNAME",
                "KAFKA_SASL_PASSWORD",
                "KAFKA_TOPIC"
            ]
        );
        let settings: KafkaSettings = Env::from_pairs([
            ("KAFKA_BROKERS", "a:9092, b:9092"),
            ("KAFKA_TOPIC", "t"),
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("KAFKA_SASL_USERNAME", "u"),
            ("KAFKA_SASL_PASSWORD", "secret"),
        ])
        .load()?;
        assert_eq!(settings.cluster.brokers, ["a:9092", "b:9092"]);
        assert!(settings.cluster.tls);
        assert_eq!(settings.cluster.security_protocol(), "SASL_SSL");
        let sasl = settings.cluster.sasl.ok_or("no sasl")?;
        assert_eq!(sasl.mechanism, "SCRAM-SHA-512");
        assert!(!format!("{sasl:?}").contains("secret"));
        Ok(())
    }

    fn sasl_publisher() -> Result<KafkaPublisher, BoxError> {
        KafkaPublisher::new(KafkaSettings {
            cluster: KafkaCluster {
                sasl: Some(Sasl {
                    mechanism: "SCRAM-SHA-256".into(),
                    username: "alice".into(),
                    password: "hunter2".into(),
                }),
                ..KafkaCluster::plaintext(vec!["127.0.0.1:9".into()])
            },
            topic: "t".into(),
            compression: KafkaCompression::None,
            timeout: Duration::from_secs(1),
            max_request_bytes: 1 << 20,
        })
    }

    /// What rskafka reports once its retries of a connection are over.
    fn after_retries(last: impl std::error::Error + Send + Sync + 'static) -> KafkaError {
        KafkaError::Connection(ConnectionError::RetryFailed(
            BackoffError::DeadlineExceded {
                deadline: Duration::from_secs(1),
                source: Box::new(last),
            },
        ))
    }

    #[test]
    fn the_markers_are_rskafkas_and_rustls_own_words() {
        let refused = ConnectionError::SaslFailed(SaslError::ApiError(
            ProtocolError::SaslAuthenticationFailed,
        ));
        assert!(refused.to_string().starts_with(SASL_FAILED), "{refused}");
        let broken = ConnectionError::SaslFailed(SaslError::RequestError(
            rskafka::client::error::RequestError::IO(std::io::ErrorKind::BrokenPipe.into()),
        ));
        assert!(
            broken
                .to_string()
                .starts_with(&format!("{SASL_FAILED}{SASL_BROKEN}")),
            "{broken}"
        );
        let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(untrusted.to_string().starts_with(UNTRUSTED), "{untrusted}");
    }

    #[test]
    fn a_refused_login_after_retries_is_retryable_and_names_mechanism_and_user() -> TestResult {
        let publisher = sasl_publisher()?;
        let error = after_retries(ConnectionError::SaslFailed(SaslError::ApiError(
            ProtocolError::SaslAuthenticationFailed,
        )));
        let error = publisher.classify(error);
        assert!(matches!(error, PublishError::Unavailable { .. }), "{error}");
        let text = crate::outcome::chain(&error);
        assert!(
            text.contains("SASL SCRAM-SHA-256 login of user \"alice\""),
            "{text}"
        );
        assert!(text.contains("SaslAuthenticationFailed"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        Ok(())
    }

    #[test]
    fn a_connection_lost_during_the_login_is_not_called_a_refusal() -> TestResult {
        let publisher = sasl_publisher()?;
        let error = after_retries(ConnectionError::SaslFailed(SaslError::RequestError(
            rskafka::client::error::RequestError::IO(std::io::ErrorKind::BrokenPipe.into()),
        )));
        let text = crate::outcome::chain(&publisher.classify(error));
        assert!(!text.contains("login"), "{text}");
        Ok(())
    }

    #[test]
    fn an_untrusted_certificate_names_the_ca_variable() -> TestResult {
        let publisher = sasl_publisher()?;
        let error = after_retries(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        let error = publisher.classify(error);
        assert!(matches!(error, PublishError::Unavailable { .. }), "{error}");
        let text = crate::outcome::chain(&error);
        assert!(text.contains("KAFKA_TLS_CA_FILE (unset)"), "{text}");
        assert!(text.contains("UnknownIssuer"), "{text}");
        Ok(())
    }

    #[test]
    fn rskafkas_pauses_end_well_before_the_publish_timeout() {
        for secs in [1, 5, 30] {
            let timeout = Duration::from_secs(secs);
            let config = retries_within(timeout);
            assert!(config.deadline.is_some_and(|d| d <= timeout / 2));
            assert!(config.max_backoff >= config.init_backoff);
            assert!(config.max_backoff <= timeout / 4 || config.max_backoff == config.init_backoff);
        }
    }

    #[tokio::test]
    async fn a_broker_that_is_not_there_is_retryable_within_the_timeout() -> TestResult {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let publisher = KafkaPublisher::new(KafkaSettings {
            cluster: KafkaCluster::plaintext(vec![format!("127.0.0.1:{port}")]),
            topic: "t".into(),
            compression: KafkaCompression::None,
            timeout: Duration::from_secs(1),
            max_request_bytes: 1 << 20,
        })?;
        let began = std::time::Instant::now();
        let err = publisher
            .publish(vec![Message::default()])
            .await
            .err()
            .ok_or("published to nothing")?;
        assert!(matches!(err, PublishError::Unavailable { .. }), "{err}");
        assert!(began.elapsed() < Duration::from_secs(5));
        Ok(())
    }
}
