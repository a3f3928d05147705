//! Which Kafka cluster, and how to reach it (`KAFKA_BROKERS`, `KAFKA_SECURITY_PROTOCOL`, SASL
//! and TLS): one reading for the stream sink (rskafka) and the `consume` source (librdkafka),
//! which may name its own cluster (`CONSUME_KAFKA_BROKERS`, …).

use std::path::PathBuf;

use crate::config::{Env, redact_url};

/// SASL mechanism and credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Sasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log line.
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The cluster. `Debug` hides the SASL password and credentials in broker addresses.
#[derive(Clone, PartialEq)]
pub struct KafkaCluster {
    /// `KAFKA_BROKERS`: bootstrap brokers, `host:port` separated by commas.
    pub brokers: Vec<String>,
    /// From `KAFKA_SECURITY_PROTOCOL` (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`).
    pub tls: bool,
    /// `KAFKA_SASL_MECHANISM`, `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`.
    pub sasl: Option<Sasl>,
    /// `KAFKA_TLS_CA_FILE`: PEM certificates to trust.
    pub tls_ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for KafkaCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let brokers: Vec<String> = self.brokers.iter().map(|b| redact_url(b)).collect();
        f.debug_struct("KafkaCluster")
            .field("brokers", &brokers)
            .field("tls", &self.tls)
            .field("sasl", &self.sasl)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

impl KafkaCluster {
    /// A plaintext cluster without SASL at `brokers`.
    pub fn plaintext(brokers: Vec<String>) -> Self {
        Self {
            brokers,
            tls: false,
            sasl: None,
            tls_ca_file: None,
        }
    }

    /// The `security.protocol` Kafka's clients call this.
    pub fn security_protocol(&self) -> &'static str {
        match (self.tls, self.sasl.is_some()) {
            (false, false) => "PLAINTEXT",
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        }
    }

    /// From `KAFKA_BROKERS`, `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*` and `KAFKA_TLS_CA_FILE`.
    pub fn read(env: &mut Env) -> Option<Self> {
        Self::read_as(env, "KAFKA_")
    }

    /// From the same variables named with `prefix` for `KAFKA_` (`CONSUME_KAFKA_BROKERS`, …).
    pub fn read_as(env: &mut Env, prefix: &str) -> Option<Self> {
        let name = |suffix: &str| format!("{prefix}{suffix}");
        let brokers: Option<String> = env.required(&name("BROKERS"));
        let protocol: String = env.or(&name("SECURITY_PROTOCOL"), "PLAINTEXT".to_owned());
        let (tls, sasl_on) = match protocol.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            other => {
                env.problem(
                    &name("SECURITY_PROTOCOL"),
                    format!("{other:?} is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
                );
                (false, false)
            }
        };
        let sasl = if sasl_on {
            let mechanism: String = env.or(&name("SASL_MECHANISM"), "PLAIN".to_owned());
            let mechanism = mechanism.to_ascii_uppercase();
            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&mechanism.as_str()) {
                env.problem(
                    &name("SASL_MECHANISM"),
                    format!("{mechanism:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                );
            }
            let username = env.required(&name("SASL_USERNAME"));
            let password = env.required(&name("SASL_PASSWORD"));
            Some(Sasl {
                mechanism,
                username: username?,
                password: password?,
            })
        } else {
            None
        };
        let brokers: Vec<String> = brokers?
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(str::to_owned)
            .collect();
        if brokers.is_empty() {
            env.problem(&name("BROKERS"), "names no broker");
        }
        Some(Self {
            brokers,
            tls,
            sasl,
            tls_ca_file: env.optional(&name("TLS_CA_FILE")),
        })
    }
}
