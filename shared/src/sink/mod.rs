//! Where functions send messages: one trait for brokers and ingest APIs, with errors already
//! classified for retry decisions: Kafka (feature `kafka`), a log-ingest API (feature
//! `log-ingest`), a Knative sink of CloudEvents over HTTP (feature `k-sink`), a local file (as
//! messages or as log-ingest lines), and (feature `testing`) memory; and which of them a
//! function's configuration chooses ([`SinkConfig`]).

#[cfg(feature = "amqp")]
pub mod amqp;
mod choice;
mod file;
#[cfg(any(feature = "k-sink", feature = "log-ingest"))]
pub mod http;
mod json_text;
#[cfg(feature = "k-sink")]
pub mod k_sink;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "log-ingest")]
pub mod log_ingest;
mod log_line;
#[cfg(any(test, feature = "testing"))]
mod memory;
mod records;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::outcome::{BoxError, HandlerError};

pub use choice::SinkConfig;
pub use file::{FileFormat, FilePublisher};
#[cfg(feature = "k-sink")]
pub use k_sink::{KSinkPublisher, KSinkSettings};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaPublisher, KafkaSettings};
#[cfg(feature = "log-ingest")]
pub use log_ingest::{LogIngestPublisher, LogIngestSettings};
pub use log_line::LogLineSettings;
#[cfg(any(test, feature = "testing"))]
pub use memory::MemoryPublisher;
pub use records::{
    Body, Headers, MessageParts, RECORD_TYPE, RecordBatch, RecordEvent, RecordStamp,
};

/// One message, as brokers carry it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    /// Partition key (Kafka) or routing key (AMQP), where the sink uses one.
    pub key: Option<String>,
    /// Headers (Kafka record headers, AMQP message headers), e.g. CloudEvents `ce_*`.
    pub headers: Vec<(String, String)>,
    pub content_type: String,
    /// AMQP correlation id; ignored by sinks without one.
    pub correlation_id: Option<String>,
    pub body: Bytes,
    /// When what the message carries happened (a log record's own time), if known: the Kafka
    /// record's timestamp and the log-ingest line's; sinks without one use the time of sending.
    pub timestamp: Option<DateTime<Utc>>,
}

/// A destination that acknowledges what it accepted.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `messages` in order and returns only once the sink has acknowledged all of
    /// them (publisher confirms, acks from all in-sync replicas, a 2xx): an event is never
    /// reported done before its messages are safe.
    async fn publish(&self, messages: Vec<Message>) -> Result<(), PublishError>;

    /// Publishes one object's records as [`publish`](Self::publish) publishes messages. A sink
    /// that encodes each record itself overrides it to read them in place, without making a
    /// message of each.
    async fn publish_records(&self, batch: RecordBatch) -> Result<(), PublishError> {
        self.publish(batch.into_messages()).await
    }
}

/// A publish that failed, classified once here.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The sink could not be reached, timed out, or asked to slow down.
    #[error("publishing to {sink} failed")]
    Unavailable {
        sink: String,
        #[source]
        source: BoxError,
    },
    /// The sink refused the messages in a way retrying will not change.
    #[error("{sink} refused the messages")]
    Rejected {
        sink: String,
        #[source]
        source: BoxError,
    },
}

impl From<PublishError> for HandlerError {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::Unavailable { .. } => Self::retryable(error),
            PublishError::Rejected { .. } => Self::permanent(error),
        }
    }
}
