//! An in-process implementation of the AWS Lambda Runtime API (the HTTP protocol a custom
//! runtime polls), so a function binary runs exactly as it would in Lambda.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::BoxError;

/// How the function answered one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Response(Value),
    Error { error_type: String, message: String },
}

struct Pending {
    id: String,
    /// The invocation's body: JSON, or (for a test of what the runtime refuses) anything.
    payload: Vec<u8>,
    deadline_ms: u64,
}

struct Shared {
    queue: Mutex<mpsc::Receiver<Pending>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
}

pub struct RuntimeApi {
    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    sender: mpsc::Sender<Pending>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    task: JoinHandle<()>,
}

const BASE: &str = "/2018-06-01/runtime";

impl RuntimeApi {
    pub async fn start() -> Result<Self, BoxError> {
        let (sender, receiver) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            queue: Mutex::new(receiver),
            waiting: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route(&format!("{BASE}/invocation/next"), get(next))
            .route(
                &format!("{BASE}/invocation/{{id}}/response"),
                post(response),
            )
            .route(&format!("{BASE}/invocation/{{id}}/error"), post(error))
            .with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            sender,
            shared,
            next_id: AtomicU64::new(1),
            task,
        })
    }

    /// Invokes the function with `payload` and a deadline `timeout` from now; waits for its
    /// answer (up to 60 s).
    pub async fn invoke(&self, payload: Value, timeout: Duration) -> Result<Answer, BoxError> {
        self.invoke_bytes(serde_json::to_vec(&payload)?, timeout)
            .await
    }

    /// [`RuntimeApi::invoke`] with a body as it is, JSON or not, as a Lambda payload file.
    pub async fn invoke_bytes(
        &self,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, BoxError> {
        let id = format!("req-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let (tx, rx) = oneshot::channel();
        self.shared.waiting.lock().await.insert(id.clone(), tx);
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let deadline_ms = (now + timeout).as_millis() as u64;
        self.sender
            .send(Pending {
                id,
                payload,
                deadline_ms,
            })
            .await?;
        Ok(tokio::time::timeout(Duration::from_secs(60), rx).await??)
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let Some(pending) = shared.queue.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let mut headers = HeaderMap::new();
    let pairs = [
        ("lambda-runtime-aws-request-id", pending.id),
        (
            "lambda-runtime-deadline-ms",
            pending.deadline_ms.to_string(),
        ),
        (
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:thumbnail-on-create".to_owned(),
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-5e1b4151-5ac6c58f5b5dbd6a2c0c1d5e".to_owned(),
        ),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    (StatusCode::OK, headers, pending.payload).into_response()
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    answer(&shared, &id, Answer::Response(value)).await
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let answer_value = Answer::Error {
        error_type: field("errorType"),
        message: field("errorMessage"),
    };
    answer(&shared, &id, answer_value).await
}

async fn answer(shared: &Shared, id: &str, value: Answer) -> StatusCode {
    match shared.waiting.lock().await.remove(id) {
        Some(sender) => {
            let _ = sender.send(value);
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

/// thumbnail-on-create's binary under the Lambda runtime, over an S3 server with a `photos`
/// bucket, with `memory_mb` as the function's memory size and `extra_env` on top.
pub struct ThumbnailLambda {
    pub api: RuntimeApi,
    pub s3: super::s3_server::S3Server,
    pub process: super::function::FunctionProcess,
}

impl ThumbnailLambda {
    pub async fn start(
        memory_mb: u32,
        extra_env: &[(&'static str, String)],
    ) -> Result<Self, BoxError> {
        let s3 = super::s3_server::S3Server::start().await?;
        s3.create_bucket("photos").await?;
        let api = RuntimeApi::start().await?;
        let mut env = s3.env();
        env.extend([
            ("AWS_LAMBDA_RUNTIME_API", api.address.clone()),
            ("AWS_LAMBDA_FUNCTION_NAME", "thumbnail-on-create".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ]);
        env.extend(extra_env.iter().cloned());
        let process = super::function::FunctionProcess::spawn(
            super::function::THUMBNAIL_ON_CREATE,
            &[],
            &env,
        )?;
        Ok(Self { api, s3, process })
    }

    /// One invocation with a generous deadline; a failure to answer shows the function's logs.
    pub async fn invoke(&self, payload: Value) -> Result<Answer, BoxError> {
        self.api
            .invoke(payload, Duration::from_secs(30))
            .await
            .map_err(|e| format!("{e}; function logs:\n{}", self.process.logs()).into())
    }
}
