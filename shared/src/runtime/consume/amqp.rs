//! The AMQP 0-9-1 [`Source`] (RabbitMQ) on lapin: the queue declared passively unless told
//! otherwise, prefetch from the process budget, and each message settled once: acked, rejected
//! to the queue's dead-letter exchange, parked in a retry queue whose per-message TTL
//! dead-letters it back to the queue, or handed back at shutdown.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use http::HeaderMap;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};

use super::{Incoming, SettleError, Settlement, Source, SourceError, add_header};
use crate::config::{Env, Secret};
use crate::outcome::BoxError;

/// The header that counts the deliveries a message has had before this one. Ours, because a
/// requeued message carries no count on a classic queue and `x-death` counts every queue's
/// dead-lettering (the queue's own DLX included), not only the retries.
pub(crate) const ATTEMPTS_HEADER: &str = "x-bucketfn-attempts";

/// How long connecting, declaring and a confirm of the retry queue may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// How the queue and exchange are declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Declare {
    /// Check that they exist, never change them (the default): an existing topology is never
    /// contradicted, and a missing one is a start-up error.
    Passive,
    /// Declare them on every connection, as the original s3-events-handler does: what a
    /// broker restart took (a non-durable exchange) comes back. An existing one of other
    /// properties is a start-up error (RabbitMQ refuses the declaration).
    Create,
}

impl std::str::FromStr for Declare {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "passive" => Ok(Self::Passive),
            "create" => Ok(Self::Create),
            other => Err(format!("{other:?}: expected passive or create")),
        }
    }
}

/// Where messages come from. `Debug` hides the URL, which carries the password.
#[derive(Clone)]
pub(crate) struct AmqpSettings {
    /// `CONSUME_AMQP_URL`, else `AMQP_URL` (the broker the function publishes to).
    pub url: Secret,
    /// Which variable the URL came from, for messages.
    pub url_variable: &'static str,
    /// `CONSUME_AMQP_CA_FILE` (with `CONSUME_AMQP_URL`), else `AMQP_CA_FILE`.
    pub ca_file: Option<PathBuf>,
    pub ca_variable: &'static str,
    /// `CONSUME_QUEUE`.
    pub queue: String,
    /// `CONSUME_EXCHANGE` and `CONSUME_BINDING_KEY`: an exchange to bind the queue to.
    pub binding: Option<(String, String)>,
    /// `CONSUME_EXCHANGE_TYPE`: the type `create` gives the exchange.
    pub exchange_type: String,
    /// `CONSUME_EXCHANGE_DURABLE`: the durability `create` gives the exchange (the original's
    /// events exchange is not durable).
    pub exchange_durable: bool,
    /// `CONSUME_DECLARE`.
    pub declare: Declare,
    /// `CONSUME_RETRY_QUEUE`: where retryable messages wait (default `<queue>.retry`).
    pub retry_queue: String,
    /// `CONSUME_DEAD_LETTER_EXCHANGE`: with `CONSUME_DECLARE=create`, the dead-letter
    /// exchange the queue is declared with (it must exist).
    pub dead_letter_exchange: Option<String>,
}

impl fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("url_variable", &self.url_variable)
            .field("queue", &self.queue)
            .field("binding", &self.binding)
            .field("declare", &self.declare)
            .field("retry_queue", &self.retry_queue)
            .finish_non_exhaustive()
    }
}

/// AMQP short strings (queue, exchange and key names) hold at most 255 bytes.
const MAX_NAME_BYTES: usize = 255;

impl AmqpSettings {
    pub(crate) fn read(env: &mut Env) -> Option<Self> {
        let own = env
            .raw("CONSUME_AMQP_URL")
            .is_some_and(|v| !v.trim().is_empty());
        let (url_variable, ca_variable) = if own {
            ("CONSUME_AMQP_URL", "CONSUME_AMQP_CA_FILE")
        } else if env.raw("AMQP_URL").is_some_and(|v| !v.trim().is_empty()) {
            ("AMQP_URL", "AMQP_CA_FILE")
        } else {
            env.problem(
                "CONSUME_AMQP_URL",
                "is required by consume (or AMQP_URL, when the queue is on the broker the \
                 function publishes to): amqp://user:password@host:5672/vhost",
            );
            ("CONSUME_AMQP_URL", "CONSUME_AMQP_CA_FILE")
        };
        let url: Option<Secret> = env.optional(url_variable);
        if let Some(url) = &url
            && !(url.expose().starts_with("amqp://") || url.expose().starts_with("amqps://"))
        {
            env.problem(url_variable, "must start with amqp:// or amqps://");
        }
        let ca_file: Option<PathBuf> = env.optional(ca_variable);
        if let Some(path) = &ca_file {
            if url
                .as_ref()
                .is_some_and(|u| !u.expose().starts_with("amqps://"))
            {
                env.problem(
                    ca_variable,
                    format!("is set but {url_variable} is not amqps://"),
                );
            } else if let Err(e) = crate::tls::ca_certificates(ca_variable, path) {
                env.problem(ca_variable, crate::outcome::chain(&e));
            }
        }
        let queue: Option<String> = env.required("CONSUME_QUEUE");
        let exchange: Option<String> = env.optional("CONSUME_EXCHANGE");
        let binding_key: Option<String> = env.optional("CONSUME_BINDING_KEY");
        let binding = match (exchange, binding_key) {
            (Some(exchange), Some(key)) => Some((exchange, key)),
            (Some(_), None) => {
                env.problem(
                    "CONSUME_BINDING_KEY",
                    "is required with CONSUME_EXCHANGE: the routing key (pattern, for a topic \
                     exchange) that binds CONSUME_QUEUE to it",
                );
                None
            }
            (None, Some(_)) => {
                env.problem("CONSUME_BINDING_KEY", "is set but CONSUME_EXCHANGE is not");
                None
            }
            (None, None) => None,
        };
        let exchange_type = env.or("CONSUME_EXCHANGE_TYPE", "topic".to_owned());
        if !["direct", "topic", "fanout", "headers"].contains(&exchange_type.as_str()) {
            env.problem(
                "CONSUME_EXCHANGE_TYPE",
                format!("{exchange_type:?}: expected direct, topic, fanout or headers"),
            );
        }
        let declare = env.or("CONSUME_DECLARE", Declare::Passive);
        let dead_letter_exchange: Option<String> = env.optional("CONSUME_DEAD_LETTER_EXCHANGE");
        let exchange_durable: Option<bool> = env.optional("CONSUME_EXCHANGE_DURABLE");
        if declare == Declare::Passive {
            // A setting nothing declares would be a promise nobody keeps.
            if dead_letter_exchange.is_some() {
                env.problem(
                    "CONSUME_DEAD_LETTER_EXCHANGE",
                    "is only used with CONSUME_DECLARE=create: a queue declared passively \
                     keeps the dead-letter exchange it has",
                );
            }
            if exchange_durable.is_some() {
                env.problem(
                    "CONSUME_EXCHANGE_DURABLE",
                    "is only used with CONSUME_DECLARE=create: an exchange checked passively \
                     keeps the durability it has",
                );
            }
        }
        let retry_queue: Option<String> = env.optional("CONSUME_RETRY_QUEUE");
        let queue = queue?;
        let retry_queue = retry_queue.unwrap_or_else(|| format!("{queue}.retry"));
        if retry_queue == queue {
            env.problem(
                "CONSUME_RETRY_QUEUE",
                "is CONSUME_QUEUE: retries need a queue of their own",
            );
        }
        for (variable, name) in [
            ("CONSUME_QUEUE", Some(queue.as_str())),
            ("CONSUME_RETRY_QUEUE", Some(retry_queue.as_str())),
            ("CONSUME_EXCHANGE", binding.as_ref().map(|b| b.0.as_str())),
            (
                "CONSUME_BINDING_KEY",
                binding.as_ref().map(|b| b.1.as_str()),
            ),
            (
                "CONSUME_DEAD_LETTER_EXCHANGE",
                dead_letter_exchange.as_deref(),
            ),
        ] {
            if name.is_some_and(|n| n.len() > MAX_NAME_BYTES) {
                env.problem(
                    variable,
                    format!("is over {MAX_NAME_BYTES} bytes (AMQP's limit)"),
                );
            }
        }
        Some(Self {
            url: url?,
            url_variable,
            ca_file,
            ca_variable,
            queue,
            binding,
            exchange_type,
            exchange_durable: exchange_durable.unwrap_or(true),
            declare,
            retry_queue,
            dead_letter_exchange,
        })
    }
}

/// What could go wrong talking to the broker, naming what it concerns.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AmqpError {
    #[error("cannot connect to the broker ({variable})")]
    Connect {
        variable: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{what} ({variable}): {advice}")]
    Topology {
        what: String,
        variable: &'static str,
        advice: &'static str,
        #[source]
        source: Box<lapin::Error>,
    },
    #[error("the broker refused the subscription to queue {queue:?}")]
    Subscribe {
        queue: String,
        #[source]
        source: Box<lapin::Error>,
    },
    #[error("the subscription failed")]
    Stream(#[source] Box<lapin::Error>),
    #[error("TLS trust ({variable})")]
    Tls {
        variable: &'static str,
        #[source]
        source: crate::tls::TlsError,
    },
}

/// A live subscription.
struct Link {
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
}

/// Messages of one RabbitMQ queue.
pub(crate) struct AmqpSource {
    settings: AmqpSettings,
    prefetch: u16,
    link: Option<Link>,
}

impl AmqpSource {
    /// A source that holds at most `prefetch` unsettled messages at once (`BATCH_CONCURRENCY`).
    pub(crate) fn new(settings: AmqpSettings, prefetch: u16) -> Self {
        Self {
            settings,
            prefetch: prefetch.max(1),
            link: None,
        }
    }

    fn tls(&self) -> Result<OwnedTLSConfig, AmqpError> {
        let variable = self.settings.ca_variable;
        let cert_chain = match &self.settings.ca_file {
            Some(path) => Some(crate::tls::to_pem(
                &crate::tls::ca_certificates(variable, path)
                    .map_err(|source| AmqpError::Tls { variable, source })?,
            )),
            None => None,
        };
        Ok(OwnedTLSConfig {
            identity: None,
            cert_chain,
        })
    }

    async fn open(&self) -> Result<Link, SourceError> {
        let lost = |e: AmqpError| SourceError::Lost(Box::new(e));
        let connect = async {
            let connection = Connection::connect_with_config(
                self.settings.url.expose(),
                ConnectionProperties::default(),
                self.tls()?,
                lapin::runtime::default_runtime().map_err(|e| AmqpError::Connect {
                    variable: self.settings.url_variable,
                    source: e.into(),
                })?,
            )
            .await
            .map_err(|e| AmqpError::Connect {
                variable: self.settings.url_variable,
                source: e.into(),
            })?;
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| AmqpError::Connect {
                    variable: self.settings.url_variable,
                    source: e.into(),
                })?;
            Ok::<_, AmqpError>((connection, channel))
        };
        let (connection, channel) = tokio::time::timeout(BROKER_TIMEOUT, connect)
            .await
            .map_err(|_| lost(AmqpError::Timeout(BROKER_TIMEOUT)))?
            .map_err(lost)?;
        let declared = tokio::time::timeout(BROKER_TIMEOUT, self.declare(&channel))
            .await
            .map_err(|_| lost(AmqpError::Timeout(BROKER_TIMEOUT)))?;
        if let Err(e) = declared {
            let _ = connection
                .close(200, ShortString::from("topology refused"))
                .await;
            return Err(e);
        }
        let setup = async {
            // Confirms, so that a retry is acknowledged only once the broker holds its copy.
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            channel
                .basic_consume(
                    ShortString::from(self.settings.queue.as_str()),
                    // The broker names the subscription; cancelling uses the name it gave.
                    ShortString::from(""),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
        };
        let consumer = tokio::time::timeout(BROKER_TIMEOUT, setup)
            .await
            .map_err(|_| lost(AmqpError::Timeout(BROKER_TIMEOUT)))?
            .map_err(|source| {
                let error = AmqpError::Subscribe {
                    queue: self.settings.queue.clone(),
                    source: Box::new(source),
                };
                // Refused by the broker (access, exclusive use): no reconnect mends it.
                if matches!(&error, AmqpError::Subscribe { source, .. } if source.is_amqp_error()) {
                    SourceError::Fatal(Box::new(error))
                } else {
                    lost(error)
                }
            })?;
        Ok(Link {
            connection,
            channel,
            consumer,
        })
    }

    /// Checks (or declares) the queue, the exchange and their binding, and declares the retry
    /// queue. A refusal by the broker is fatal; a connection lost on the way is not.
    async fn declare(&self, channel: &Channel) -> Result<(), SourceError> {
        let s = &self.settings;
        let refused = |what: String, variable, advice, source: lapin::Error| {
            let error = Box::new(AmqpError::Topology {
                what,
                variable,
                advice,
                source: Box::new(source),
            });
            if matches!(error.as_ref(), AmqpError::Topology { source, .. } if source.is_amqp_error())
            {
                SourceError::Fatal(error)
            } else {
                SourceError::Lost(error)
            }
        };
        let passive = s.declare == Declare::Passive;
        let advice = if passive {
            "create it as the deployment's topology says (with a dead-letter exchange), or set \
             CONSUME_DECLARE=create to have it declared"
        } else {
            "an existing one of other properties is never redeclared; match \
             CONSUME_EXCHANGE_TYPE, CONSUME_EXCHANGE_DURABLE and CONSUME_DEAD_LETTER_EXCHANGE \
             to it, or use CONSUME_DECLARE=passive"
        };
        // RabbitMQ compares a declaration's arguments with the queue's: a declaration
        // names the dead-letter exchange, so that the queue it finds or makes has that one.
        let mut queue_arguments = FieldTable::default();
        if let (false, Some(exchange)) = (passive, &s.dead_letter_exchange) {
            channel
                .exchange_declare(
                    ShortString::from(exchange.as_str()),
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions {
                        passive: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    refused(
                        format!("dead-letter exchange {exchange:?}"),
                        "CONSUME_DEAD_LETTER_EXCHANGE",
                        "create it (and a queue bound to it) first",
                        e,
                    )
                })?;
            queue_arguments.insert(
                ShortString::from("x-dead-letter-exchange"),
                AMQPValue::LongString(LongString::from(exchange.as_str())),
            );
        }
        channel
            .queue_declare(
                ShortString::from(s.queue.as_str()),
                QueueDeclareOptions {
                    passive,
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                queue_arguments,
            )
            .await
            .map_err(|e| refused(format!("queue {:?}", s.queue), "CONSUME_QUEUE", advice, e))?;
        if let Some((exchange, key)) = &s.binding {
            let kind = match s.exchange_type.as_str() {
                "direct" => ExchangeKind::Direct,
                "fanout" => ExchangeKind::Fanout,
                "headers" => ExchangeKind::Headers,
                _ => ExchangeKind::Topic,
            };
            channel
                .exchange_declare(
                    ShortString::from(exchange.as_str()),
                    kind,
                    ExchangeDeclareOptions {
                        passive,
                        durable: s.exchange_durable,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    refused(
                        format!("exchange {exchange:?}"),
                        "CONSUME_EXCHANGE",
                        advice,
                        e,
                    )
                })?;
            // A binding adds a route and changes nothing that exists; binding twice is a no-op.
            channel
                .queue_bind(
                    ShortString::from(s.queue.as_str()),
                    ShortString::from(exchange.as_str()),
                    ShortString::from(key.as_str()),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    refused(
                        format!("binding of queue {:?} to exchange {exchange:?}", s.queue),
                        "CONSUME_BINDING_KEY",
                        "the credentials need write access to the queue and read access to \
                         the exchange",
                        e,
                    )
                })?;
        }
        // The retry queue is bucketfn's own: a message expires there after its delay and is
        // dead-lettered through the default exchange, which routes by queue name, back to the
        // queue.
        let mut arguments = FieldTable::default();
        arguments.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(LongString::from("")),
        );
        arguments.insert(
            ShortString::from("x-dead-letter-routing-key"),
            AMQPValue::LongString(LongString::from(s.queue.as_str())),
        );
        channel
            .queue_declare(
                ShortString::from(s.retry_queue.as_str()),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .map_err(|e| {
                refused(
                    format!("retry queue {:?}", s.retry_queue),
                    "CONSUME_RETRY_QUEUE",
                    "it must be durable and dead-letter to the default exchange with \
                     CONSUME_QUEUE as routing key; delete it, or name another",
                    e,
                )
            })?;
        Ok(())
    }
}

impl Source for AmqpSource {
    type Message = AmqpMessage;

    fn name(&self) -> String {
        format!("queue {:?}", self.settings.queue)
    }

    async fn connect(&mut self) -> Result<(), SourceError> {
        if let Some(old) = self.link.take() {
            let _ = old
                .connection
                .close(200, ShortString::from("reconnecting"))
                .await;
        }
        self.link = Some(self.open().await?);
        Ok(())
    }

    async fn next(&mut self) -> Option<Result<AmqpMessage, SourceError>> {
        let link = self.link.as_mut()?;
        match link.consumer.next().await? {
            Ok(delivery) => Some(Ok(AmqpMessage {
                attempt: attempts_before(&delivery).saturating_add(1),
                delivery,
                channel: link.channel.clone(),
                queue: self.settings.queue.clone(),
                retry_queue: self.settings.retry_queue.clone(),
            })),
            Err(e) => {
                self.link = None;
                Some(Err(SourceError::Lost(Box::new(AmqpError::Stream(
                    Box::new(e),
                )))))
            }
        }
    }

    async fn stop_taking(&mut self) {
        if let Some(link) = &self.link {
            let tag = link.consumer.tag();
            if let Err(e) = link
                .channel
                .basic_cancel(tag, BasicCancelOptions::default())
                .await
            {
                tracing::warn!(error = %e, "Could not cancel the subscription; closing it.");
            }
        }
    }

    async fn close(&mut self) {
        if let Some(link) = self.link.take() {
            let _ = link
                .connection
                .close(200, ShortString::from("shutting down"))
                .await;
        }
    }
}

/// The deliveries a message had before, from [`ATTEMPTS_HEADER`]; a value that is not a
/// count (a sender's mistake or a forgery) counts as none, which at worst grants the bound
/// again.
fn attempts_before(delivery: &Delivery) -> u32 {
    let Some(headers) = delivery.properties.headers() else {
        return 0;
    };
    match headers.inner().get(ATTEMPTS_HEADER) {
        Some(value) => count(value),
        None => 0,
    }
}

fn count(value: &AMQPValue) -> u32 {
    let n: i128 = match value {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        _ => 0,
    };
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// One delivery of the queue and the channel it must be settled on.
pub(crate) struct AmqpMessage {
    delivery: Delivery,
    channel: Channel,
    attempt: u32,
    queue: String,
    retry_queue: String,
}

impl AmqpMessage {
    /// Parks a copy in the retry queue, expiring after `delay` with the attempts counted, and
    /// acknowledges this delivery once the broker confirmed the copy.
    async fn park(&self, next_attempt: u32, delay: Duration) -> Result<(), BoxError> {
        let mut headers = self
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        headers.insert(
            ShortString::from(ATTEMPTS_HEADER),
            AMQPValue::LongLongInt(i64::from(next_attempt.saturating_sub(1))),
        );
        let properties = self
            .delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_expiration(ShortString::from(delay.as_millis().max(1).to_string()));
        let publish = async {
            let confirm = self
                .channel
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(self.retry_queue.as_str()),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &self.delivery.data,
                    properties,
                )
                .await?;
            confirm.await
        };
        let confirmation = tokio::time::timeout(BROKER_TIMEOUT, publish)
            .await
            .map_err(|_| format!("the broker did not confirm within {BROKER_TIMEOUT:?}"))??;
        if !confirmation.is_ack() {
            return Err("the broker refused the copy for the retry queue (nack)".into());
        }
        if confirmation.take_message().is_some() {
            return Err(
                format!("retry queue {:?} does not exist any more", self.retry_queue).into(),
            );
        }
        Ok(())
    }
}

/// The broker closed the channel before the message could be settled.
fn gone(action: &str) -> SettleError {
    SettleError(format!("the channel closed before the {action}").into())
}

impl Incoming for AmqpMessage {
    fn body(&self) -> &[u8] {
        &self.delivery.data
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let properties = &self.delivery.properties;
        if let Some(content_type) = properties.content_type() {
            add_header(&mut headers, "content-type", content_type.as_str());
        }
        if let Some(table) = properties.headers() {
            for (name, value) in table.inner() {
                let text = match value {
                    AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    AMQPValue::ShortString(s) => s.as_str().to_owned(),
                    _ => continue,
                };
                add_header(&mut headers, name.as_str(), &text);
            }
        }
        headers
    }

    fn correlation_id(&self) -> Option<String> {
        self.delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
    }

    fn attempt(&self) -> u32 {
        self.attempt
    }

    fn label(&self) -> String {
        format!("{}#{}", self.queue, self.delivery.delivery_tag)
    }

    async fn settle(self, settlement: &Settlement) -> Result<(), SettleError> {
        let acker = &self.delivery.acker;
        let settled = match settlement {
            Settlement::Ack => acker.ack(BasicAckOptions::default()).await,
            Settlement::DeadLetter { .. } => {
                acker.reject(BasicRejectOptions { requeue: false }).await
            }
            Settlement::Requeue => {
                acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await
            }
            Settlement::RetryLater {
                next_attempt,
                delay,
                ..
            } => match self.park(*next_attempt, *delay).await {
                Ok(()) => acker.ack(BasicAckOptions::default()).await,
                Err(e) => {
                    // Without its copy in the retry queue the message must not be acked: it
                    // waits out its delay here and goes back as it came (its count unchanged).
                    tracing::warn!(
                        error = %crate::outcome::chain(e.as_ref()),
                        "Could not park the message in the retry queue; requeueing it after \
                         the delay."
                    );
                    tokio::time::sleep(*delay).await;
                    acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await
                }
            },
        };
        match settled {
            Ok(true) => Ok(()),
            Ok(false) => Err(gone("settlement")),
            Err(e) => Err(SettleError(Box::new(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
        crate::config::read_from_pairs(pairs, AmqpSettings::read).1
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let found = problems(&[
            ("CONSUME_EXCHANGE", "s3"),
            ("CONSUME_DECLARE", "eager"),
            ("CONSUME_EXCHANGE_TYPE", "direkt"),
            ("CONSUME_DEAD_LETTER_EXCHANGE", "dlx"),
            ("CONSUME_EXCHANGE_DURABLE", "false"),
        ]);
        for variable in [
            "CONSUME_AMQP_URL",
            "CONSUME_QUEUE",
            "CONSUME_BINDING_KEY",
            "CONSUME_DECLARE",
            "CONSUME_EXCHANGE_TYPE",
            "CONSUME_DEAD_LETTER_EXCHANGE",
            "CONSUME_EXCHANGE_DURABLE",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(variable)),
                "{variable} not in {found:?}"
            );
        }
    }

    #[test]
    fn the_publishers_broker_is_used_unless_consume_names_its_own() -> Result<(), BoxError> {
        let mut env = Env::from_pairs([("AMQP_URL", "amqp://a/%2f"), ("CONSUME_QUEUE", "events")]);
        let settings = AmqpSettings::read(&mut env).ok_or("not read")?;
        env.finish()?;
        assert_eq!(settings.url_variable, "AMQP_URL");
        assert_eq!(settings.retry_queue, "events.retry");
        assert_eq!(settings.declare, Declare::Passive);
        let mut env = Env::from_pairs([
            ("AMQP_URL", "amqp://a/%2f"),
            ("CONSUME_AMQP_URL", "amqp://b/%2f"),
            ("CONSUME_QUEUE", "events"),
        ]);
        let settings = AmqpSettings::read(&mut env).ok_or("not read")?;
        env.finish()?;
        assert_eq!(settings.url.expose(), "amqp://b/%2f");
        Ok(())
    }

    #[test]
    fn the_retry_queue_cannot_be_the_queue() {
        let found = problems(&[
            ("CONSUME_AMQP_URL", "amqp://a/%2f"),
            ("CONSUME_QUEUE", "events"),
            ("CONSUME_RETRY_QUEUE", "events"),
        ]);
        assert!(
            found.iter().any(|p| p.starts_with("CONSUME_RETRY_QUEUE")),
            "{found:?}"
        );
    }

    #[test]
    fn attempts_are_counted_from_any_integer_and_nothing_else() {
        assert_eq!(count(&AMQPValue::LongLongInt(3)), 3);
        assert_eq!(count(&AMQPValue::ShortShortUInt(2)), 2);
        assert_eq!(count(&AMQPValue::LongInt(-4)), 0);
        assert_eq!(count(&AMQPValue::LongLongInt(i64::MAX)), u32::MAX);
        assert_eq!(
            count(&AMQPValue::LongString(LongString::from("7"))),
            0,
            "a string is not a count"
        );
    }
}
