//! Servers and helpers the integration tests share.

pub mod archive_apis;
pub mod env_files;
pub mod forwarder;
pub mod ftp_server;
pub mod function;
pub mod images;
pub mod kafka_sasl_peer;
pub mod knative_sink;
pub mod lambda_api;
pub mod log_ingest;
pub mod notifications;
pub mod s3_server;
pub mod served;
pub mod summary;

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The workspace root, for `events/` and the shared images beside it.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}
