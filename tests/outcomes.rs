//! What each function answers under AWS Lambda to each sample in `events/`, as
//! `tests/outcomes.tsv` lists it: the function binaries under the in-process Lambda Runtime
//! API (sidecar-on-create in this process, see [`SidecarInProcess`]), over the environment
//! scripts/e2e.d/10-lambda-local.sh gives cargo lambda's emulator, which checks the same
//! table: one table, kept by `cargo test` as well as by the e2e.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bucketfn::operations::Observer;
use bucketfn::operations::ledger::{LedgerSettings, Recorder};
use bucketfn::operations::metrics::Metrics;
use bucketfn::runtime::{Governor, RuntimeSettings, answer_payload};
use bucketfn::sink::MemoryPublisher;
use bucketfn::storage::S3Store;
use bucketfn::{Env, NewObject, ObjectStore};
use serde_json::Value;
use sidecar_on_create::SidecarOnCreate;

use crate::support::archive_apis::{ArchiveApis, CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME};
use crate::support::ftp_server::FtpServer;
use crate::support::function::{
    CLEANUP_ON_REMOVE, FORWARD_TO_STREAM, FunctionProcess, THUMBNAIL_ON_CREATE, free_port,
};
use crate::support::lambda_api::{Answer, RuntimeApi};
use crate::support::s3_server::S3Server;
use crate::support::{BoxError, TestResult, workspace_root};

/// The table, relative to the workspace root.
const TABLE: &str = "tests/outcomes.tsv";

/// What a pair the table does not name is answered.
const DONE: &str = "done";

/// Every function, in the e2e's order (thumbnails exist before cleanup-on-remove gets the
/// stale removals), with its binary, run under the Lambda Runtime API; sidecar-on-create, which
/// publishes to RabbitMQ where `cargo test` has none, runs in this process instead (see
/// [`SidecarInProcess`]).
const FUNCTIONS: [(&str, Option<&str>); 4] = [
    ("thumbnail-on-create", Some(THUMBNAIL_ON_CREATE)),
    (SIDECAR, None),
    ("cleanup-on-remove", Some(CLEANUP_ON_REMOVE)),
    ("forward-to-stream", Some(FORWARD_TO_STREAM)),
];

const SIDECAR: &str = "sidecar-on-create";

/// One function of [`FUNCTIONS`], started.
enum Started {
    Lambda {
        api: RuntimeApi,
        process: FunctionProcess,
    },
    InProcess(SidecarInProcess),
}

impl Started {
    async fn start(
        function: &str,
        binary: Option<&str>,
        env: &[(&'static str, String)],
        store: &Arc<dyn ObjectStore>,
    ) -> Result<Self, BoxError> {
        let Some(binary) = binary else {
            return Ok(Self::InProcess(SidecarInProcess::start(
                env,
                Arc::clone(store),
            )?));
        };
        let api = RuntimeApi::start().await?;
        let mut env = env.to_vec();
        env.extend([
            ("AWS_LAMBDA_RUNTIME_API", api.address.clone()),
            ("AWS_LAMBDA_FUNCTION_NAME", function.to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512".to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ]);
        let process = FunctionProcess::spawn(binary, &[], &env)?;
        Ok(Self::Lambda { api, process })
    }

    /// The function's answer to `payload`, in the table's words.
    async fn answer(&self, payload: Vec<u8>) -> Result<String, BoxError> {
        match self {
            Self::Lambda { api, process } => {
                let answer = api
                    .invoke_bytes(payload, Duration::from_secs(30))
                    .await
                    .map_err(|e| format!("{e}; logs:\n{}", process.logs()))?;
                Ok(in_words(&answer))
            }
            Self::InProcess(sidecar) => Ok(sidecar.answer(&payload).await),
        }
    }
}

/// Every bucket the samples name, created as a deployment's are.
const BUCKETS: [&str; 8] = [
    "media-uploads",
    "photos",
    "mam-highresvideo",
    "mam-ingest",
    "media-uploads-gcs",
    "cos-media",
    "media-uploads-versioned",
    "mam-collaterals",
];

/// The table: (function, sample) -> outcome, a `*` row spread over `functions`.
fn read_table(
    functions: &BTreeSet<String>,
) -> Result<BTreeMap<(String, String), String>, BoxError> {
    let text = std::fs::read_to_string(workspace_root().join(TABLE))?;
    let mut table = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [sample, function, outcome, _why] = fields[..] else {
            return Err(format!("{TABLE}:{}: not four tab-separated fields", n + 1).into());
        };
        if !workspace_root().join("events").join(sample).is_file() {
            return Err(format!("{TABLE}:{}: no sample events/{sample}", n + 1).into());
        }
        let named: Vec<&String> = functions
            .iter()
            .filter(|f| function == "*" || f.as_str() == function)
            .collect();
        if named.is_empty() || outcome.is_empty() {
            return Err(
                format!("{TABLE}:{}: no function {function:?} or no outcome", n + 1).into(),
            );
        }
        for f in named {
            let pair = (f.clone(), sample.to_owned());
            if table.insert(pair, outcome.to_owned()).is_some() {
                return Err(format!("{TABLE}:{}: {f} {sample} is named twice", n + 1).into());
            }
        }
    }
    Ok(table)
}

/// The workspace's functions, as the e2e finds them (`functions/*/Cargo.toml`).
fn workspace_functions() -> Result<BTreeSet<String>, BoxError> {
    let mut functions = BTreeSet::new();
    for entry in std::fs::read_dir(workspace_root().join("functions"))? {
        let path = entry?.path();
        if path.join("Cargo.toml").is_file() {
            let name = path.file_name().ok_or("a folder without a name")?;
            functions.insert(name.to_string_lossy().into_owned());
        }
    }
    Ok(functions)
}

/// The Lambda samples: every JSON file under `events/` but the binary-mode CloudEvents' bodies
/// (their headers are no part of a Lambda payload), sorted.
fn lambda_samples(dir: &Path) -> Result<Vec<PathBuf>, BoxError> {
    let mut samples = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            samples.extend(lambda_samples(&path)?);
        } else if path.extension().is_some_and(|e| e == "json")
            && !path.with_extension("headers").exists()
        {
            samples.push(path);
        }
    }
    samples.sort();
    Ok(samples)
}

/// An answer in the table's words: `done`, the error type, or `failed:ID,...` (S3 Batch tasks
/// as `RESULTCODE:TASKID`).
fn in_words(answer: &Answer) -> String {
    let response = match answer {
        // lambda_runtime names its own refusal by the type of a reference
        // (`&lambda_runtime::...`), which cargo lambda's emulator shows without the `&`; the
        // table has it as the emulator shows it.
        Answer::Error { error_type, .. } => return error_type.trim_start_matches('&').to_owned(),
        Answer::Response(response) => response,
    };
    let text = |v: &Value, field: &str| v[field].as_str().unwrap_or_default().to_owned();
    let mut failed: Vec<String> = response["batchItemFailures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| text(f, "itemIdentifier"))
        .collect();
    failed.extend(
        response["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["resultCode"] != "Succeeded")
            .map(|r| format!("{}:{}", text(r, "resultCode"), text(r, "taskId"))),
    );
    if failed.is_empty() {
        DONE.to_owned()
    } else {
        format!("failed:{}", failed.join(","))
    }
}

/// sidecar-on-create in this process, as its binary is but for the publisher (in memory, for
/// RabbitMQ), answering through the path its binary's Lambda runtime takes.
struct SidecarInProcess {
    handler: Arc<SidecarOnCreate>,
    governor: Governor,
    observer: Observer,
}

impl SidecarInProcess {
    fn start(env: &[(&str, String)], store: Arc<dyn ObjectStore>) -> Result<Self, BoxError> {
        let mut env = Env::from_pairs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let settings = RuntimeSettings::read(&mut env);
        let config = env.load()?;
        let publisher = Arc::new(MemoryPublisher::new());
        Ok(Self {
            handler: Arc::new(SidecarOnCreate::new(config, store, publisher)?),
            governor: Governor::new(&settings),
            observer: Observer {
                metrics: Arc::new(Metrics::default()),
                recorder: Recorder::start(LedgerSettings::in_memory(100).open(SIDECAR)?),
                instance: "outcomes/1".into(),
            },
        })
    }

    /// As the Lambda runtime answers: a payload that is not JSON is lambda_runtime's own
    /// refusal, before bucketfn sees it; the rest goes the way the binary's Lambda runtime
    /// takes ([`answer_payload`]).
    async fn answer(&self, payload: &[u8]) -> String {
        let Ok(value) = serde_json::from_slice::<Value>(payload) else {
            return "lambda_runtime::deserializer::DeserializeError".to_owned();
        };
        let answered =
            answer_payload(&self.handler, &self.governor, &self.observer, value, None).await;
        in_words(&match answered {
            Ok(response) => Answer::Response(response),
            Err(diagnostic) => Answer::Error {
                error_type: diagnostic.error_type,
                message: diagnostic.error_message,
            },
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sample_to_every_function_is_answered_as_the_table_says() -> TestResult {
    let root = workspace_root();
    let table = read_table(&workspace_functions()?)?;
    let s3 = S3Server::start().await?;
    for bucket in BUCKETS {
        s3.create_bucket(bucket).await?;
    }
    // The objects the samples name: the AWS S3 samples' image, the gateway samples' essence.
    let image = std::fs::read(root.join("demo/photos/samples/lake at dawn.jpg"))?;
    s3.put(
        "media-uploads",
        "photos/2024/summer beach + café ☀.jpg",
        image,
    )
    .await?;
    // With the md5 in its metadata, as meemoo's gateway stores it (the sidecar takes the md5
    // from the object, never from the notification).
    let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(s3.client(1)));
    let essence = NewObject {
        body: b"essence".to_vec().into(),
        content_type: "application/mxf".to_owned(),
        metadata: [(
            "md5sum".to_owned(),
            "77930bf06b236e089a22a255e6b28377".to_owned(),
        )]
        .into(),
    };
    store
        .put("mam-highresvideo", "191213-VAN statement+1.MXF", essence)
        .await?;
    let apis = ArchiveApis::start().await?;
    apis.organisation("OR-rf5kf25", Some("VRT"));
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("ftp/VRT/DISK-SHARE-EVENTS"))?;
    let ftp_port = free_port()?;
    let _ftp = FtpServer::start_on(&dir.path().join("ftp"), ftp_port).await?;
    let mut env = s3.env();
    env.extend([
        ("THUMBNAIL_SIZES", "128,256".to_owned()),
        ("SOURCE_BUCKET", "media-uploads".to_owned()),
        ("SOURCE_BUCKETS", "*".to_owned()),
        ("CLEANUP_TARGETS", "derivatives,mediahaven".to_owned()),
        ("FORWARD_SINK", "file".to_owned()),
        (
            "FORWARD_FILE",
            dir.path().join("claims.jsonl").display().to_string(),
        ),
        ("MEDIAHAVEN_URL", apis.url.clone()),
        ("MEDIAHAVEN_CLIENT_ID", CLIENT_ID.to_owned()),
        ("MEDIAHAVEN_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
        ("MEDIAHAVEN_USERNAME", USERNAME.to_owned()),
        ("MEDIAHAVEN_PASSWORD", PASSWORD.to_owned()),
        ("MEDIAHAVEN_DELETE_DELAY_MS", "10".to_owned()),
        ("PID_SERVICE_URL", apis.pid_url()),
        ("ORGANISATIONS_API_URL", apis.organisations_url()),
        (
            "TENANT_BY_BUCKET",
            "media-uploads=OR-rf5kf25,mam-highresvideo=OR-rf5kf25".to_owned(),
        ),
        ("S3_DOMAIN", "s3.archive.example".to_owned()),
        ("FTP_HOST", format!("127.0.0.1:{ftp_port}")),
        ("FTP_USER", "tra".to_owned()),
        ("FTP_PASSWORD", "tra-password".to_owned()),
        // Read and checked, never connected to: the publisher is in memory.
        (
            "AMQP_URL",
            "amqp://unused:unused@127.0.0.1:1/%2f".to_owned(),
        ),
        ("AMQP_ROUTING_KEY", "filetransfer".to_owned()),
    ]);
    let listed: BTreeSet<String> = FUNCTIONS.iter().map(|(f, _)| (*f).to_owned()).collect();
    assert_eq!(
        listed,
        workspace_functions()?,
        "FUNCTIONS is not the workspace's functions"
    );
    let samples = lambda_samples(&root.join("events"))?;
    let mut mismatches = Vec::new();
    for (function, binary) in FUNCTIONS {
        let started = Started::start(function, binary, &env, &store).await?;
        for sample in &samples {
            let relative = sample.strip_prefix(root.join("events"))?;
            let relative = relative.to_string_lossy().into_owned();
            let answer = started
                .answer(std::fs::read(sample)?)
                .await
                .map_err(|e| format!("{function} {relative}: {e}"))?;
            let pair = (function.to_owned(), relative);
            let expected = table.get(&pair).map_or(DONE, String::as_str);
            if answer != expected {
                mismatches.push(format!(
                    "{function} {}: expected {expected}, got {answer}",
                    pair.1
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(samples.len() >= 50, "only {} Lambda samples", samples.len());
    Ok(())
}
