//! A real S3 protocol server (s3s over a directory) on a loopback port, with a switch that
//! makes it answer `503 SlowDown` or stall, as an overloaded store does.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::BoxError;

pub const ACCESS_KEY: &str = "bucketfn-test-access";
pub const SECRET_KEY: &str = "bucketfn-test-secret";
pub const REGION: &str = "us-east-1";

/// A running server; stops when dropped.
pub struct S3Server {
    pub endpoint: String,
    failures: Arc<Mutex<Failures>>,
    stall_ms: Arc<AtomicU64>,
    requests: Arc<AtomicU32>,
    task: JoinHandle<()>,
    _root: tempfile::TempDir,
}

const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
<Message>Please reduce your request rate.</Message><RequestId>test</RequestId></Error>";

/// Requests still to be refused, optionally only those of one method.
#[derive(Debug, Default)]
struct Failures {
    remaining: u32,
    method: Option<http::Method>,
}

impl Failures {
    /// Whether this request is one to refuse (and counts it).
    fn take(&mut self, method: &http::Method) -> bool {
        let applies = self.method.as_ref().is_none_or(|m| m == method);
        if applies && self.remaining > 0 {
            self.remaining -= 1;
            true
        } else {
            false
        }
    }
}

impl S3Server {
    pub async fn start() -> Result<Self, BoxError> {
        let root = tempfile::tempdir()?;
        let fs = s3s_fs::FileSystem::new(root.path()).map_err(|e| format!("s3s-fs: {e:?}"))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let failures = Arc::new(Mutex::new(Failures::default()));
        let stall_ms = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU32::new(0));
        let (f, s, r) = (failures.clone(), stall_ms.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (service, failures, stall_ms, requests) =
                    (service.clone(), f.clone(), s.clone(), r.clone());
                tokio::spawn(async move {
                    let handler = hyper::service::service_fn(move |req| {
                        let (service, failures, stall_ms, requests) = (
                            service.clone(),
                            failures.clone(),
                            stall_ms.clone(),
                            requests.clone(),
                        );
                        async move {
                            requests.fetch_add(1, Ordering::SeqCst);
                            let stall = stall_ms.load(Ordering::SeqCst);
                            if stall > 0 {
                                tokio::time::sleep(Duration::from_millis(stall)).await;
                            }
                            let fail = failures
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .take(req.method());
                            if fail {
                                return http::Response::builder()
                                    .status(503)
                                    .header("content-type", "application/xml")
                                    .body(s3s::Body::from(SLOW_DOWN.to_owned()))
                                    .map_err(|e| s3s::HttpError::new(Box::new(e)));
                            }
                            service.call(req.map(s3s::Body::from)).await
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), handler)
                        .await;
                });
            }
        });
        Ok(Self {
            endpoint,
            failures,
            stall_ms,
            requests,
            task,
            _root: root,
        })
    }

    /// The next `n` requests get `503 SlowDown`.
    pub fn fail_next(&self, n: u32) {
        self.set_failures(n, None);
    }

    /// The next `n` requests of `method` get `503 SlowDown`; others are served.
    pub fn fail_next_of(&self, method: http::Method, n: u32) {
        self.set_failures(n, Some(method));
    }

    fn set_failures(&self, remaining: u32, method: Option<http::Method>) {
        *self.failures.lock().unwrap_or_else(PoisonError::into_inner) =
            Failures { remaining, method };
    }

    /// Every request waits this long before being served (0 to stop).
    pub fn stall(&self, duration: Duration) {
        self.stall_ms
            .store(duration.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }

    /// A client as a function would build one for this server, with `max_attempts` tries.
    pub fn client(&self, max_attempts: u32) -> Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .retry_config(
                aws_sdk_s3::config::retry::RetryConfig::standard()
                    .with_max_attempts(max_attempts)
                    .with_initial_backoff(Duration::from_millis(10)),
            )
            .build();
        Client::from_conf(config)
    }

    /// The environment a function process needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL_S3", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("S3_MAX_ATTEMPTS", "1".to_owned()),
        ]
    }

    pub async fn create_bucket(&self, bucket: &str) -> Result<(), BoxError> {
        self.client(1).create_bucket().bucket(bucket).send().await?;
        Ok(())
    }

    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), BoxError> {
        self.client(1)
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await?;
        Ok(())
    }

    /// The object's body and content type, or `None` when it does not exist.
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, String)>, BoxError> {
        match self
            .client(1)
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => {
                let content_type = output.content_type().unwrap_or_default().to_owned();
                let body = output.body.collect().await?.into_bytes().to_vec();
                Ok(Some((body, content_type)))
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
