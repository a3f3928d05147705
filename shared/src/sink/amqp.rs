//! An AMQP 0-9-1 [`Publisher`] (RabbitMQ) on lapin: persistent messages, publisher confirms,
//! and `mandatory` so that a message no queue would take is refused rather than dropped.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use super::{Message, PublishError, Publisher};
use crate::config::{Env, Secret};
use crate::outcome::BoxError;

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// Where messages go. `Debug` hides the URL, which carries the password.
#[derive(Clone)]
pub struct AmqpSettings {
    /// `AMQP_URL`: `amqp://user:password@host:5672/vhost` (the vhost `/` is `%2f`), or
    /// `amqps://…:5671/…` for TLS.
    pub url: Secret,
    /// `AMQP_CA_FILE`: PEM certificates an `amqps://` connection trusts besides the system's.
    pub ca_file: Option<PathBuf>,
    /// `AMQP_EXCHANGE`: the exchange; empty (the default) means RabbitMQ's default exchange,
    /// which routes by queue name.
    pub exchange: String,
    /// `AMQP_ROUTING_KEY`: the routing key (the queue name with the default exchange), used
    /// when a message has no key of its own.
    pub routing_key: String,
    /// `AMQP_QUEUE`: when set, the publisher declares this durable queue (and, with an
    /// exchange, a durable direct exchange bound to it by the routing key) on connecting, as
    /// the original s3-events-handler did; when unset, the topology is someone else's.
    pub queue: Option<String>,
    /// `AMQP_TIMEOUT_SECS`: limit for connecting and for the broker's confirm.
    pub timeout: Duration,
}

impl fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("queue", &self.queue)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AmqpSettings {
    pub fn read(env: &mut Env) -> Option<Self> {
        let url: Option<Secret> = env.required("AMQP_URL");
        if let Some(url) = &url
            && !(url.expose().starts_with("amqp://") || url.expose().starts_with("amqps://"))
        {
            env.problem("AMQP_URL", "must start with amqp:// or amqps://");
        }
        let ca_file: Option<PathBuf> = env.optional("AMQP_CA_FILE");
        if let Some(path) = &ca_file {
            if url
                .as_ref()
                .is_some_and(|u| !u.expose().starts_with("amqps://"))
            {
                env.problem("AMQP_CA_FILE", "is set but AMQP_URL is not amqps://");
            } else if let Err(e) = crate::tls::ca_certificates("AMQP_CA_FILE", path) {
                env.problem("AMQP_CA_FILE", crate::outcome::chain(&e));
            }
        }
        let exchange = env.raw("AMQP_EXCHANGE").unwrap_or_default().to_owned();
        let routing_key = env.required("AMQP_ROUTING_KEY");
        let queue = env.optional("AMQP_QUEUE");
        let secs: u64 = env.or("AMQP_TIMEOUT_SECS", 10);
        if secs == 0 {
            env.problem("AMQP_TIMEOUT_SECS", "must be at least 1");
        }
        Some(Self {
            url: url?,
            ca_file,
            exchange,
            routing_key: routing_key?,
            queue,
            timeout: Duration::from_secs(secs.max(1)),
        })
    }
}

/// One connection and confirm-mode channel, opened on first use and again after a failure.
pub struct AmqpPublisher {
    settings: AmqpSettings,
    link: Mutex<Option<(Connection, Channel)>>,
}

impl AmqpPublisher {
    pub fn new(settings: AmqpSettings) -> Self {
        Self {
            settings,
            link: Mutex::new(None),
        }
    }

    fn sink(&self) -> String {
        let exchange = if self.settings.exchange.is_empty() {
            "(default)"
        } else {
            &self.settings.exchange
        };
        format!("AMQP exchange {exchange}")
    }

    fn unavailable(&self, source: impl Into<BoxError>) -> PublishError {
        PublishError::Unavailable {
            sink: self.sink(),
            source: source.into(),
        }
    }

    async fn open(&self) -> Result<(Connection, Channel), PublishError> {
        let tls = self.tls()?;
        let connect = async {
            let connection = Connection::connect_with_config(
                self.settings.url.expose(),
                ConnectionProperties::default(),
                tls,
                lapin::runtime::default_runtime()?,
            )
            .await?;
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            if let Some(queue) = &self.settings.queue {
                self.declare(&channel, queue).await?;
            }
            Ok::<_, lapin::Error>((connection, channel))
        };
        match tokio::time::timeout(self.settings.timeout, connect).await {
            Ok(Ok(link)) => Ok(link),
            Ok(Err(e)) => Err(self.unavailable(e)),
            Err(_) => {
                Err(self.unavailable(format!("no connection within {:?}", self.settings.timeout)))
            }
        }
    }

    /// The extra trust for `amqps://`: lapin trusts the system's roots itself and adds these.
    /// Read again on every connection, so that a renewed CA file needs no restart; start-up
    /// has checked it once already.
    fn tls(&self) -> Result<OwnedTLSConfig, PublishError> {
        let cert_chain = match &self.settings.ca_file {
            Some(path) => Some(crate::tls::to_pem(
                &crate::tls::ca_certificates("AMQP_CA_FILE", path)
                    .map_err(|e| self.unavailable(e))?,
            )),
            None => None,
        };
        Ok(OwnedTLSConfig {
            identity: None,
            cert_chain,
        })
    }

    /// Declares the queue, and the exchange bound to it, idempotently (a declare with the
    /// same properties is a no-op for RabbitMQ).
    async fn declare(&self, channel: &Channel, queue: &str) -> Result<(), lapin::Error> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(ShortString::from(queue), durable, FieldTable::default())
            .await?;
        let exchange = self.settings.exchange.as_str();
        if !exchange.is_empty() {
            let durable = ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    ShortString::from(exchange),
                    ExchangeKind::Direct,
                    durable,
                    FieldTable::default(),
                )
                .await?;
            channel
                .queue_bind(
                    ShortString::from(queue),
                    ShortString::from(exchange),
                    ShortString::from(self.settings.routing_key.as_str()),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    async fn send(&self, channel: &Channel, messages: &[Message]) -> Result<(), PublishError> {
        let mut confirms = Vec::with_capacity(messages.len());
        for message in messages {
            let routing_key = message.key.as_deref().unwrap_or(&self.settings.routing_key);
            let confirm = channel
                .basic_publish(
                    ShortString::from(self.settings.exchange.as_str()),
                    ShortString::from(routing_key),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &message.body,
                    properties(message),
                )
                .await
                .map_err(|e| self.unavailable(e))?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirmation = tokio::time::timeout(self.settings.timeout, confirm)
                .await
                .map_err(|_| {
                    self.unavailable(format!(
                        "the broker did not confirm within {:?}",
                        self.settings.timeout
                    ))
                })?
                .map_err(|e| self.unavailable(e))?;
            if confirmation.is_nack() {
                return Err(self.unavailable("the broker refused to take the message (nack)"));
            }
            if !confirmation.is_ack() {
                return Err(self.unavailable("the channel is not in confirm mode"));
            }
            if let Some(returned) = confirmation.take_message() {
                return Err(PublishError::Rejected {
                    sink: self.sink(),
                    source: format!(
                        "no queue is bound for routing key {:?} ({} {})",
                        returned.delivery.routing_key.as_str(),
                        returned.reply_code,
                        returned.reply_text
                    )
                    .into(),
                });
            }
        }
        Ok(())
    }
}

fn properties(message: &Message) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in &message.headers {
        headers.insert(
            ShortString::from(name.as_str()),
            AMQPValue::LongString(LongString::from(value.as_str())),
        );
    }
    let mut properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(ShortString::from(message.content_type.as_str()))
        .with_headers(headers);
    if let Some(id) = &message.correlation_id {
        properties = properties.with_correlation_id(ShortString::from(id.as_str()));
    }
    properties
}

#[async_trait]
impl Publisher for AmqpPublisher {
    async fn publish(&self, messages: Vec<Message>) -> Result<(), PublishError> {
        let mut link = self.link.lock().await;
        if link.as_ref().is_none_or(|(connection, channel)| {
            !connection.status().connected() || !channel.status().connected()
        }) {
            *link = Some(self.open().await?);
        }
        let Some((_, channel)) = link.as_ref() else {
            return Err(self.unavailable("no channel"));
        };
        let result = self.send(channel, &messages).await;
        if matches!(result, Err(PublishError::Unavailable { .. })) {
            // A failed channel is closed by the broker; start afresh next time.
            *link = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
        let mut env = Env::from_pairs(pairs.iter().copied());
        let _ = AmqpSettings::read(&mut env);
        env.finish()
            .err()
            .map(|e| {
                e.problems
                    .iter()
                    .map(|p| format!("{}: {}", p.variable, p.message))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_ca_file_needs_amqps_and_a_certificate() {
        let base = [
            ("AMQP_ROUTING_KEY", "q"),
            ("AMQP_CA_FILE", "/nonexistent/ca.pem"),
        ];
        let plain = problems(&[base[0], base[1], ("AMQP_URL", "amqp://h/%2f")]);
        assert!(
            plain
                .iter()
                .any(|p| p.contains("AMQP_CA_FILE") && p.contains("amqps://")),
            "{plain:?}"
        );
        let unreadable = problems(&[base[0], base[1], ("AMQP_URL", "amqps://h/%2f")]);
        assert!(
            unreadable
                .iter()
                .any(|p| p.contains("AMQP_CA_FILE") && p.contains("/nonexistent/ca.pem")),
            "{unreadable:?}"
        );
        assert!(problems(&[base[0], ("AMQP_URL", "amqps://h/%2f")]).is_empty());
    }
}
