//! An AMQP 0-9-1 [`Publisher`] (RabbitMQ) on lapin: persistent messages, publisher confirms,
//! and `mandatory` so that a message no queue would take is refused rather than dropped. The
//! topology is checked (passively, by default) before the first event, so a missing or
//! differently declared exchange or queue stops start-up instead of failing every publish.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
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
    /// `AMQP_QUEUE`: the queue the messages must reach; checked (or declared, see
    /// [`Declare`]) on connecting. Unset: only the exchange is checked.
    pub queue: Option<String>,
    /// `AMQP_DECLARE`, `AMQP_QUEUE_DURABLE`, `AMQP_EXCHANGE_DURABLE`: how the topology is made
    /// sure of.
    pub declare: Declare,
    /// `AMQP_TIMEOUT_SECS`: limit for connecting and for the broker's confirm.
    pub timeout: Duration,
}

impl fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("queue", &self.queue)
            .field("declare", &self.declare)
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
        let queue: Option<String> = env.optional("AMQP_QUEUE");
        let declare = Declare::read(env, queue.is_some());
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
            declare,
            timeout: Duration::from_secs(secs.max(1)),
        })
    }
}

/// How the publisher makes sure its exchange and queue are there. Declaring is never allowed
/// to contradict a topology that exists: RabbitMQ refuses a declaration whose properties
/// differ from the existing entity's (406 PRECONDITION_FAILED) and closes the channel, which
/// would fail every publish after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declare {
    /// `AMQP_DECLARE=passive` (the default): only check that the exchange and queue exist;
    /// whoever owns the topology made them, with whatever properties they chose.
    Passive,
    /// `AMQP_DECLARE=create`: declare the queue (durable per `AMQP_QUEUE_DURABLE`, default
    /// `true`) and the direct exchange (durable per `AMQP_EXCHANGE_DURABLE`, default `true`),
    /// and bind them by the routing key. An existing one must have these properties.
    Create {
        queue_durable: bool,
        exchange_durable: bool,
    },
}

impl Declare {
    fn read(env: &mut Env, has_queue: bool) -> Self {
        let queue_durable = env.optional::<bool>("AMQP_QUEUE_DURABLE");
        let exchange_durable = env.optional::<bool>("AMQP_EXCHANGE_DURABLE");
        match env.raw("AMQP_DECLARE").map(str::trim).unwrap_or("") {
            "" | "passive" => {
                // A durability that nothing declares would be a promise nobody keeps.
                for (name, set) in [
                    ("AMQP_QUEUE_DURABLE", queue_durable.is_some()),
                    ("AMQP_EXCHANGE_DURABLE", exchange_durable.is_some()),
                ] {
                    if set {
                        env.problem(name, "is only used with AMQP_DECLARE=create");
                    }
                }
                Self::Passive
            }
            "create" => {
                if !has_queue {
                    env.problem(
                        "AMQP_DECLARE",
                        "`create` needs AMQP_QUEUE: the queue to declare and bind",
                    );
                }
                Self::Create {
                    queue_durable: queue_durable.unwrap_or(true),
                    exchange_durable: exchange_durable.unwrap_or(true),
                }
            }
            other => {
                env.problem(
                    "AMQP_DECLARE",
                    format!("{other:?} is neither `passive` nor `create`"),
                );
                Self::Passive
            }
        }
    }
}

/// The broker refused the topology the settings describe: nothing can be published until an
/// operator changes the settings or the broker.
#[derive(Debug, thiserror::Error)]
#[error("{entity}: {problem}")]
pub struct TopologyError {
    /// `AMQP exchange "filetransfer"`, `AMQP queue "filetransfer"`, ...
    pub entity: String,
    /// What is wrong and which variable changes it, with the broker's own reply.
    pub problem: String,
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

    /// Connects, with a confirm-mode channel, and makes sure of the topology.
    async fn open(&self) -> Result<(Connection, Channel), OpenError> {
        let tls = self.tls().map_err(OpenError::Unreachable)?;
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
            Ok::<_, lapin::Error>((connection, channel))
        };
        let timed_out = || {
            OpenError::Unreachable(
                self.unavailable(format!("no connection within {:?}", self.settings.timeout)),
            )
        };
        let (connection, channel) = match tokio::time::timeout(self.settings.timeout, connect).await
        {
            Ok(Ok(link)) => link,
            Ok(Err(e)) => return Err(OpenError::Unreachable(self.unavailable(e))),
            Err(_) => return Err(timed_out()),
        };
        match tokio::time::timeout(self.settings.timeout, self.ensure_topology(&channel)).await {
            Ok(Ok(())) => Ok((connection, channel)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(timed_out()),
        }
    }

    /// Connects and checks the topology once, before the first event: a missing or
    /// differently declared exchange or queue is an error here, for start-up to report,
    /// instead of a failure of every publish after it. A broker that cannot be reached now is
    /// only logged: the link is opened again on the first publish, and a broker that is down
    /// for a moment must not keep the function from starting.
    pub async fn check_topology(&self) -> Result<(), TopologyError> {
        match self.open().await {
            Ok(link) => {
                *self.link.lock().await = Some(link);
                Ok(())
            }
            Err(OpenError::Topology(e)) => Err(e),
            Err(OpenError::Unreachable(e)) => {
                tracing::warn!(
                    error = %crate::outcome::chain(&e),
                    "The AMQP broker cannot be reached at start-up; its topology is checked on the first publish."
                );
                Ok(())
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

    /// Checks (passive) or declares (create) the queue and the exchange, and in create mode
    /// binds them. Each step is its own round trip, so that a refusal names its entity.
    async fn ensure_topology(&self, channel: &Channel) -> Result<(), OpenError> {
        let exchange = self.settings.exchange.as_str();
        let queue = self.settings.queue.as_deref();
        let (passive, queue_durable, exchange_durable) = match self.settings.declare {
            Declare::Passive => (true, false, false),
            Declare::Create {
                queue_durable,
                exchange_durable,
            } => (false, queue_durable, exchange_durable),
        };
        if let Some(queue) = queue {
            let options = QueueDeclareOptions {
                passive,
                durable: queue_durable,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(ShortString::from(queue), options, FieldTable::default())
                .await
                .map_err(|e| self.refused(Entity::Queue(queue), queue_durable, e))?;
        }
        // The default exchange always exists and cannot be declared.
        if exchange.is_empty() {
            return Ok(());
        }
        let options = ExchangeDeclareOptions {
            passive,
            durable: exchange_durable,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                ShortString::from(exchange),
                ExchangeKind::Direct,
                options,
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.refused(Entity::Exchange(exchange), exchange_durable, e))?;
        // A binding cannot be checked over AMQP; in passive mode `mandatory` publishing tells
        // a missing one (the message comes back, and the event is permanent, naming the key).
        if let (false, Some(queue)) = (passive, queue) {
            channel
                .queue_bind(
                    ShortString::from(queue),
                    ShortString::from(exchange),
                    ShortString::from(self.settings.routing_key.as_str()),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| self.refused(Entity::Binding { queue, exchange }, false, e))?;
        }
        Ok(())
    }

    /// What a failed declaration means: the broker's channel-level refusals (not found,
    /// inequivalent properties, access refused) are about the topology and will not pass by
    /// retrying; anything else is the connection's.
    fn refused(&self, entity: Entity<'_>, durable: bool, error: lapin::Error) -> OpenError {
        let lapin::ErrorKind::ProtocolError(amqp) = error.kind() else {
            return OpenError::Unreachable(self.unavailable(error));
        };
        let AMQPErrorKind::Soft(soft) = amqp.kind() else {
            return OpenError::Unreachable(self.unavailable(error));
        };
        let reply = amqp.get_message().as_str();
        let create = matches!(self.settings.declare, Declare::Create { .. });
        let problem = match (soft, create) {
            (AMQPSoftError::NOTFOUND, false) => format!(
                "does not exist ({reply}); AMQP_DECLARE=passive (the default) declares nothing: \
                 create it, or set AMQP_DECLARE=create"
            ),
            (AMQPSoftError::PRECONDITIONFAILED, true) => {
                let properties = match entity {
                    Entity::Queue(_) => format!("durable={durable} (AMQP_QUEUE_DURABLE)"),
                    Entity::Exchange(_) => {
                        format!("type direct, durable={durable} (AMQP_EXCHANGE_DURABLE)")
                    }
                    Entity::Binding { .. } => String::new(),
                };
                format!(
                    "exists with other properties than AMQP_DECLARE=create declares \
                     ({properties}): {reply}; make the variable match it, or set \
                     AMQP_DECLARE=passive to use it as it is"
                )
            }
            (AMQPSoftError::ACCESSREFUSED, _) => format!(
                "the AMQP user may not {} it ({reply})",
                if create { "declare" } else { "use" }
            ),
            _ => format!("refused by the broker ({reply})"),
        };
        OpenError::Topology(TopologyError {
            entity: entity.to_string(),
            problem,
        })
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

/// Why a link could not be opened.
enum OpenError {
    /// The broker could not be reached or answered out of protocol: retried.
    Unreachable(PublishError),
    /// The broker refused the exchange, queue or binding.
    Topology(TopologyError),
}

/// What a declaration was about, for messages.
#[derive(Clone, Copy)]
enum Entity<'a> {
    Queue(&'a str),
    Exchange(&'a str),
    Binding { queue: &'a str, exchange: &'a str },
}

impl fmt::Display for Entity<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Queue(name) => write!(f, "AMQP queue {name:?}"),
            Self::Exchange(name) => write!(f, "AMQP exchange {name:?}"),
            Self::Binding { queue, exchange } => {
                write!(
                    f,
                    "AMQP binding of queue {queue:?} to exchange {exchange:?}"
                )
            }
        }
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
            *link = Some(self.open().await.map_err(|e| match e {
                OpenError::Unreachable(e) => e,
                // Checked at start-up; the broker's topology changed since. Retrying is right
                // (an operator may restore it), but it must not look like a network blip.
                OpenError::Topology(e) => {
                    tracing::error!(
                        error = %e,
                        "The AMQP topology is not as configured; nothing is published until it is."
                    );
                    self.unavailable(e)
                }
            })?);
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
        crate::config::read_from_pairs(pairs, AmqpSettings::read).1
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

    fn declare(pairs: &[(&str, &str)]) -> (Option<Declare>, Vec<String>) {
        let mut all = vec![("AMQP_URL", "amqp://h/%2f"), ("AMQP_ROUTING_KEY", "q")];
        all.extend_from_slice(pairs);
        let (settings, problems) = crate::config::read_from_pairs(&all, AmqpSettings::read);
        (settings.map(|s| s.declare), problems)
    }

    #[test]
    fn the_topology_is_only_checked_unless_declaring_is_asked_for() {
        assert_eq!(declare(&[("AMQP_QUEUE", "q")]).0, Some(Declare::Passive));
        assert_eq!(
            declare(&[("AMQP_QUEUE", "q"), ("AMQP_DECLARE", "create")]).0,
            Some(Declare::Create {
                queue_durable: true,
                exchange_durable: true
            })
        );
        // The original s3-events-handler's exchange, as pika declares it by default.
        assert_eq!(
            declare(&[
                ("AMQP_QUEUE", "q"),
                ("AMQP_DECLARE", "create"),
                ("AMQP_EXCHANGE_DURABLE", "false"),
            ])
            .0,
            Some(Declare::Create {
                queue_durable: true,
                exchange_durable: false
            })
        );
    }

    #[test]
    fn durability_without_declaring_and_declaring_without_a_queue_are_refused() {
        let (_, problems) = declare(&[("AMQP_EXCHANGE_DURABLE", "false")]);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("AMQP_EXCHANGE_DURABLE") && p.contains("AMQP_DECLARE=create")),
            "{problems:?}"
        );
        let (_, problems) = declare(&[("AMQP_DECLARE", "create")]);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("AMQP_DECLARE") && p.contains("AMQP_QUEUE")),
            "{problems:?}"
        );
        let (_, problems) = declare(&[("AMQP_DECLARE", "yes"), ("AMQP_QUEUE", "q")]);
        assert!(
            problems.iter().any(|p| p.contains("\"yes\"")),
            "{problems:?}"
        );
    }
}
