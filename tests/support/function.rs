//! The function binary as a child process: under the Lambda runtime or as an HTTP service.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::BoxError;

pub const CLEANUP_ON_REMOVE: &str = env!("CARGO_BIN_EXE_tested-cleanup-on-remove");
pub const FORWARD_TO_STREAM: &str = env!("CARGO_BIN_EXE_tested-forward-to-stream");
pub const THUMBNAIL_ON_CREATE: &str = env!("CARGO_BIN_EXE_tested-thumbnail-on-create");

/// What a test process gets unless its environment names one of the variables before it, so
/// that tests about other things need not list their buckets or authenticate their requests:
/// `SOURCE_BUCKETS=*` (the tests of the sources set `SOURCE_BUCKETS` or `SOURCE_BUCKET`, empty
/// for none at all) and `EVENT_AUTH=none` (the tests of authentication set it).
const TEST_DEFAULTS: &[(&[&str], &str, &str)] = &[
    (&["SOURCE_BUCKETS", "SOURCE_BUCKET"], "SOURCE_BUCKETS", "*"),
    (&["EVENT_AUTH"], "EVENT_AUTH", "none"),
];

/// A running function process, killed when dropped. Its stderr (the logs) goes to a file so
/// that a failing test can show it.
pub struct FunctionProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl FunctionProcess {
    /// Starts `binary` with `args` and only the environment given (nothing of the caller's
    /// AWS configuration leaks in), plus the [`TEST_DEFAULTS`] it does not name.
    pub fn spawn(binary: &str, args: &[&str], env: &[(&str, String)]) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("stderr.log");
        let defaults = TEST_DEFAULTS
            .iter()
            .filter(|(names, _, _)| !env.iter().any(|(k, _)| names.contains(k)))
            .map(|(_, name, value)| (*name, *value));
        let child = Command::new(binary)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(defaults)
            .env("LOG_FORMAT", "text")
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Self {
            child,
            log,
            _dir: dir,
        })
    }

    /// What the process has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM, as Knative and Lambda do before stopping an instance.
    pub fn terminate(&self) -> Result<(), BoxError> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -TERM failed: {status}").into())
        }
    }

    /// Waits up to `timeout` for the process to exit and returns its exit code.
    pub async fn wait(&mut self, timeout: Duration) -> Result<Option<i32>, BoxError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("process still running; logs:\n{}", self.logs()).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> Result<u16, BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// An HTTP response as the tests look at it.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Sends one HTTP/1.1 request to the function.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<HttpReply, BoxError> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = client
        .request(builder.body(Full::new(body.into()))?)
        .await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(HttpReply {
        status,
        headers,
        body,
    })
}

/// Waits until `GET url` answers 200, or fails after `timeout` with the process logs.
pub async fn wait_ready(
    url: &str,
    process: &FunctionProcess,
    timeout: Duration,
) -> Result<(), BoxError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(reply) = request("GET", url, &[], Bytes::new()).await
            && reply.status == 200
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{url} not ready; logs:\n{}", process.logs()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
