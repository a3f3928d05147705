//! Which sink a function publishes to, as `FORWARD_SINK` chooses (with each sink's own
//! variables), and the publisher that choice makes. A sink this build was made without is a
//! configuration problem that names the Cargo feature.

use std::path::PathBuf;
use std::sync::Arc;

use super::{FileFormat, FilePublisher, LogLineSettings, Publisher};
#[cfg(feature = "k-sink")]
use super::{KSinkPublisher, KSinkSettings};
#[cfg(feature = "kafka")]
use super::{KafkaPublisher, KafkaSettings};
#[cfg(feature = "log-ingest")]
use super::{LogIngestPublisher, LogIngestSettings};
use crate::config::{Env, FromEnv};
use crate::function::StartError;

/// Where messages go.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    #[cfg(feature = "kafka")]
    Kafka(KafkaSettings),
    #[cfg(feature = "log-ingest")]
    LogIngest(LogIngestSettings),
    /// CloudEvents over HTTP to `K_SINK` (Knative SinkBinding, ContainerSource).
    #[cfg(feature = "k-sink")]
    KSink(KSinkSettings),
    /// JSON lines appended to a file (`-`: standard output): `FORWARD_FILE`,
    /// `FORWARD_FILE_FORMAT`.
    File { path: PathBuf, format: FileFormat },
}

impl SinkConfig {
    /// `FORWARD_SINK` (`kafka` when unset: the stream is what the function is for) and the
    /// chosen sink's variables; `None` after reporting a problem to `env`.
    pub fn read(env: &mut Env) -> Option<Self> {
        let sink: String = env.or("FORWARD_SINK", "kafka".to_owned());
        match sink.as_str() {
            #[cfg(feature = "kafka")]
            "kafka" => KafkaSettings::read(env).map(Self::Kafka),
            #[cfg(feature = "log-ingest")]
            "log-ingest" => LogIngestSettings::read(env).map(Self::LogIngest),
            #[cfg(feature = "k-sink")]
            "k-sink" => KSinkSettings::read(env).map(Self::KSink),
            "file" => {
                let path = env.or("FORWARD_FILE", PathBuf::from("-"));
                let format: String = env.or("FORWARD_FILE_FORMAT", "messages".to_owned());
                let format = match format.as_str() {
                    "messages" => FileFormat::Messages,
                    "log-ingest" => FileFormat::LogIngest(LogLineSettings::read(env)?),
                    other => {
                        env.problem(
                            "FORWARD_FILE_FORMAT",
                            format!("{other:?} is not messages or log-ingest"),
                        );
                        return None;
                    }
                };
                Some(Self::File { path, format })
            }
            // Reached only in a build without some sink's feature.
            built_without if ["kafka", "log-ingest", "k-sink"].contains(&built_without) => {
                env.problem(
                    "FORWARD_SINK",
                    format!(
                        "this build has no {built_without} sink (Cargo feature {built_without})"
                    ),
                );
                None
            }
            other => {
                env.problem(
                    "FORWARD_SINK",
                    format!("{other:?} is not kafka, log-ingest, k-sink or file"),
                );
                None
            }
        }
    }

    /// The sink carries nothing but CloudEvents, so records must be CloudEvents too.
    pub fn carries_only_cloudevents(&self) -> bool {
        #[cfg(feature = "k-sink")]
        if matches!(self, Self::KSink(_)) {
            return true;
        }
        false
    }

    /// Builds the sink this names.
    pub fn publisher(&self) -> Result<Arc<dyn Publisher>, StartError> {
        Ok(match self {
            #[cfg(feature = "kafka")]
            Self::Kafka(settings) => {
                Arc::new(KafkaPublisher::new(settings.clone()).map_err(StartError::Failed)?)
            }
            #[cfg(feature = "log-ingest")]
            Self::LogIngest(settings) => {
                Arc::new(LogIngestPublisher::new(settings.clone()).map_err(StartError::Failed)?)
            }
            #[cfg(feature = "k-sink")]
            Self::KSink(settings) => {
                Arc::new(KSinkPublisher::new(settings.clone()).map_err(StartError::Failed)?)
            }
            Self::File { path, format } => {
                Arc::new(FilePublisher::open(path, format.clone()).map_err(|e| {
                    StartError::Failed(format!("FORWARD_FILE {}: {e}", path.display()).into())
                })?)
            }
        })
    }
}
