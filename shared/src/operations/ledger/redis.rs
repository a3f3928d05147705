//! The shared ledger: counters in a Redis hash and the history in a capped Redis list, so that
//! every instance of a function behind one route shows the same view.

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, TlsCertificates};
use rustls_pki_types::CertificateDer;
use tokio::sync::OnceCell;

use super::{EventEntry, HistoryPage, Ledger, LedgerError, Stats};

const BACKEND: &str = "redis";

pub struct RedisLedger {
    client: redis::Client,
    /// Connected on first use; the manager reconnects by itself after that.
    connection: OnceCell<ConnectionManager>,
    stats_key: String,
    history_key: String,
    capacity: u64,
}

fn failed(error: impl std::error::Error + Send + Sync + 'static) -> LedgerError {
    LedgerError {
        backend: BACKEND,
        source: Box::new(error),
    }
}

impl RedisLedger {
    /// A ledger at `url`; `rediss://` trusts the system's roots (the OS store, or
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` when set) and `ca_certificates`.
    pub fn new(
        url: &str,
        prefix: String,
        capacity: u64,
        ca_certificates: &[CertificateDer<'static>],
    ) -> Result<Self, LedgerError> {
        let client = if url.starts_with("rediss://") {
            // redis builds its TLS configuration from rustls's process default.
            crate::tls::install_default_provider();
            if ca_certificates.is_empty() {
                redis::Client::open(url)
            } else {
                // redis trusts only the roots it is given then, so the system's go too.
                let mut roots = rustls_native_certs::load_native_certs().certs;
                roots.extend_from_slice(ca_certificates);
                let certificates = TlsCertificates {
                    client_tls: None,
                    root_cert: Some(crate::tls::to_pem(&roots).into_bytes()),
                };
                redis::Client::build_with_tls(url, certificates)
            }
        } else {
            redis::Client::open(url)
        };
        Ok(Self {
            client: client.map_err(failed)?,
            connection: OnceCell::new(),
            stats_key: format!("{prefix}:stats"),
            history_key: format!("{prefix}:history"),
            capacity,
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, LedgerError> {
        self.connection
            .get_or_try_init(|| {
                // Few retries, so that a connection that cannot be made (refused, a certificate
                // not trusted) reports its own error within the ledger's write timeout (2 s)
                // rather than that timeout; the next write tries again.
                let config = ConnectionManagerConfig::new().set_number_of_retries(2);
                ConnectionManager::new_with_config(self.client.clone(), config)
            })
            .await
            .cloned()
            .map_err(failed)
    }
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn record(&self, entry: &EventEntry) -> Result<(), LedgerError> {
        let mut connection = self.connection().await?;
        let json = serde_json::to_string(entry).map_err(failed)?;
        let tally = format!(
            "{}:{}",
            entry.class,
            if entry.succeeded() {
                "succeeded"
            } else {
                "failed"
            }
        );
        redis::pipe()
            .atomic()
            .hincr(&self.stats_key, tally, 1)
            .hincr(&self.stats_key, format!("outcome:{}", entry.outcome), 1)
            .hincr(&self.stats_key, format!("source:{}", entry.source), 1)
            .lpush(&self.history_key, json)
            .ltrim(
                &self.history_key,
                0,
                isize::try_from(self.capacity).unwrap_or(isize::MAX) - 1,
            )
            .query_async::<()>(&mut connection)
            .await
            .map_err(failed)
    }

    async fn stats(&self) -> Result<Stats, LedgerError> {
        let mut connection = self.connection().await?;
        let fields: Vec<(String, u64)> =
            connection.hgetall(&self.stats_key).await.map_err(failed)?;
        let mut stats = Stats::default();
        for (field, count) in fields {
            match field.split_once(':') {
                Some(("object", "succeeded")) => stats.object_events.succeeded = count,
                Some(("object", "failed")) => stats.object_events.failed = count,
                Some(("sweep", "succeeded")) => stats.sweep_events.succeeded = count,
                Some(("sweep", "failed")) => stats.sweep_events.failed = count,
                Some(("outcome", outcome)) => {
                    stats.by_outcome.insert(outcome.to_owned(), count);
                }
                Some(("source", source)) => {
                    stats.by_source.insert(source.to_owned(), count);
                }
                _ => {}
            }
        }
        Ok(stats)
    }

    async fn history(&self, offset: u64, limit: u64) -> Result<HistoryPage, LedgerError> {
        let mut connection = self.connection().await?;
        let start = isize::try_from(offset).unwrap_or(isize::MAX);
        let stop = start.saturating_add(isize::try_from(limit).unwrap_or(isize::MAX)) - 1;
        let (items, total): (Vec<String>, u64) = redis::pipe()
            .lrange(&self.history_key, start, stop)
            .llen(&self.history_key)
            .query_async(&mut connection)
            .await
            .map_err(failed)?;
        // An entry another version wrote in a shape this one cannot read is left out.
        let entries = items
            .iter()
            .filter_map(|item| serde_json::from_str(item).ok())
            .collect();
        Ok(HistoryPage { entries, total })
    }
}
