//! A real S3 protocol server (s3s over a directory) on a loopback port, with switches that
//! make it answer `503 SlowDown` or stall, as an overloaded store does, or behave as other
//! S3-compatible stores do: deletes conditional on `If-Match`, write conditions ignored,
//! listings that ignore `encoding-type=url`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use s3s::access::S3Access;
use s3s::auth::SimpleAuth;
use s3s::dto::{DeleteObjectInput, ETagCondition, HeadObjectInput, PutObjectInput};
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3ErrorCode, S3Request, S3Result, s3_error};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::BoxError;

pub const ACCESS_KEY: &str = "bucketfn-test-access";
pub const SECRET_KEY: &str = "bucketfn-test-secret";
pub const REGION: &str = "us-east-1";

/// A running server; stops when dropped.
pub struct S3Server {
    pub endpoint: String,
    control: Arc<Control>,
    task: JoinHandle<()>,
    _root: tempfile::TempDir,
}

const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
<Message>Please reduce your request rate.</Message><RequestId>test</RequestId></Error>";

/// What the tests switch while the server runs.
#[derive(Debug, Default)]
struct Control {
    failures: Mutex<Failures>,
    stall_ms: AtomicU64,
    requests: AtomicU32,
    quirks: Quirks,
}

/// Ways the server departs from plain s3s-fs, each as some store does.
#[derive(Debug, Default)]
struct Quirks {
    /// `If-Match` on DELETE compared with the current etag, `412 PreconditionFailed` when it
    /// differs, as S3 documents it: s3s-fs 0.14.1 deletes whatever the header says.
    conditional_deletes: AtomicBool,
    /// `If-None-Match` and `If-Match` on PUT and DELETE ignored, as a store without
    /// conditional writes does.
    ignore_conditions: AtomicBool,
    /// Listings asked for `encoding-type=url` answered with raw keys and no `EncodingType`,
    /// as a store that does not know the parameter does.
    raw_listings: AtomicBool,
    /// Listings as s3s-fs 0.14 itself answers `encoding-type=url`: `EncodingType` echoed,
    /// yet every key (and the echoed prefix) raw.
    s3s_fs_listings: AtomicBool,
}

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

/// The quirks that act on a request's decoded input. They run after the signature check: a
/// header dropped from the HTTP request would break SigV4, since the client signed it.
struct Conditions {
    control: Arc<Control>,
    /// The same directory as the server's, for the current etag a conditional delete needs.
    fs: s3s_fs::FileSystem,
}

type AccessFuture<'a> = Pin<Box<dyn Future<Output = S3Result<()>> + Send + 'a>>;

// Written out rather than through `#[async_trait]`, which this crate does not depend on.
impl S3Access for Conditions {
    fn put_object<'a, 'b, 'c>(&'a self, req: &'b mut S3Request<PutObjectInput>) -> AccessFuture<'c>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        if self.control.quirks.ignore_conditions.load(Ordering::SeqCst) {
            req.input.if_none_match = None;
            req.input.if_match = None;
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn delete_object<'a, 'b, 'c>(
        &'a self,
        req: &'b mut S3Request<DeleteObjectInput>,
    ) -> AccessFuture<'c>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            let quirks = &self.control.quirks;
            let Some(condition) = req.input.if_match.take() else {
                return Ok(());
            };
            if quirks.ignore_conditions.load(Ordering::SeqCst)
                || !quirks.conditional_deletes.load(Ordering::SeqCst)
            {
                return Ok(());
            }
            let head = HeadObjectInput {
                bucket: req.input.bucket.clone(),
                key: req.input.key.clone(),
                ..HeadObjectInput::default()
            };
            let current = match self.fs.head_object(req.clone().map_input(|_| head)).await {
                Ok(response) => response.output.e_tag,
                // Nothing to delete: the delete goes on and answers 204, as S3 does.
                Err(e) if *e.code() == S3ErrorCode::NoSuchKey => return Ok(()),
                Err(e) => return Err(e),
            };
            let matches = match (&condition, &current) {
                (ETagCondition::Any, Some(_)) => true,
                (ETagCondition::ETag(expected), Some(current)) => current.strong_cmp(expected),
                (_, None) => false,
            };
            if matches {
                Ok(())
            } else {
                Err(s3_error!(PreconditionFailed))
            }
        })
    }
}

impl S3Server {
    pub async fn start() -> Result<Self, BoxError> {
        let root = tempfile::tempdir()?;
        let fs = |root: &std::path::Path| {
            s3s_fs::FileSystem::new(root).map_err(|e| format!("s3s-fs: {e:?}"))
        };
        let control = Arc::new(Control::default());
        let mut builder = S3ServiceBuilder::new(fs(root.path())?);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        builder.set_access(Conditions {
            control: Arc::clone(&control),
            fs: fs(root.path())?,
        });
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let shared = Arc::clone(&control);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (service, control) = (service.clone(), Arc::clone(&shared));
                tokio::spawn(async move {
                    let handler = hyper::service::service_fn(move |req| {
                        let (service, control) = (service.clone(), Arc::clone(&control));
                        async move {
                            control.requests.fetch_add(1, Ordering::SeqCst);
                            let stall = control.stall_ms.load(Ordering::SeqCst);
                            if stall > 0 {
                                tokio::time::sleep(Duration::from_millis(stall)).await;
                            }
                            let fail = control
                                .failures
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
                            let listing = asks_url_encoded_listing(&req);
                            let response = service.call(req.map(s3s::Body::from)).await?;
                            let native = control.quirks.s3s_fs_listings.load(Ordering::SeqCst);
                            if !listing || native || response.status() != http::StatusCode::OK {
                                return Ok(response);
                            }
                            let raw = control.quirks.raw_listings.load(Ordering::SeqCst);
                            rewrite_listing(response, raw).await
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
            control,
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
        *self
            .control
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Failures { remaining, method };
    }

    /// Every request waits this long before being served (0 to stop).
    pub fn stall(&self, duration: Duration) {
        self.control
            .stall_ms
            .store(duration.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn requests(&self) -> u32 {
        self.control.requests.load(Ordering::SeqCst)
    }

    /// DELETE honours `If-Match` as S3 documents it (412 when the etag differs); off, it
    /// deletes whatever the header says, as s3s-fs 0.14.1 does.
    pub fn conditional_deletes(&self, on: bool) {
        let quirks = &self.control.quirks;
        quirks.conditional_deletes.store(on, Ordering::SeqCst);
    }

    /// `If-None-Match` and `If-Match` are ignored on PUT and DELETE, as by a store without
    /// conditional writes.
    pub fn ignore_conditions(&self, on: bool) {
        let quirks = &self.control.quirks;
        quirks.ignore_conditions.store(on, Ordering::SeqCst);
    }

    /// Listings ignore `encoding-type=url`: raw keys, no `EncodingType` in the answer.
    pub fn raw_listings(&self, on: bool) {
        let quirks = &self.control.quirks;
        quirks.raw_listings.store(on, Ordering::SeqCst);
    }

    /// Listings answered as s3s-fs answers them, claiming an encoding they do not have.
    pub fn s3s_fs_listings(&self, on: bool) {
        let quirks = &self.control.quirks;
        quirks.s3s_fs_listings.store(on, Ordering::SeqCst);
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

/// A listing (ListObjects, ListObjectsV2) that asks for url-encoded keys.
fn asks_url_encoded_listing<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::GET
        && req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair == "encoding-type=url"))
}

/// The elements S3 url-encodes in a listing asked for `encoding-type=url`, and the
/// continuation tokens: S3's are opaque base64, s3s-fs sends the last key raw (bucketfn pages
/// with `StartAfter` and never sends a token back).
const ENCODED_ELEMENTS: &[&str] = &[
    "Key",
    "Prefix",
    "StartAfter",
    "Delimiter",
    "ContinuationToken",
    "NextContinuationToken",
];

/// s3s-fs echoes `EncodingType` but sends the keys raw, which no store does: the answer is
/// made what S3 sends (or, for `raw`, what a store that ignores the parameter sends).
async fn rewrite_listing(
    response: http::Response<s3s::Body>,
    raw: bool,
) -> Result<http::Response<s3s::Body>, s3s::HttpError> {
    let (mut parts, mut body) = response.into_parts();
    let bytes = body
        .store_all_limited(16 * 1024 * 1024)
        .await
        .map_err(s3s::HttpError::new)?;
    let xml = String::from_utf8_lossy(&bytes);
    let rewritten = if raw {
        xml.replace("<EncodingType>url</EncodingType>", "")
    } else {
        ENCODED_ELEMENTS
            .iter()
            .fold(xml.into_owned(), |xml, element| {
                url_encode_element(&xml, element)
            })
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Ok(http::Response::from_parts(
        parts,
        s3s::Body::from(rewritten),
    ))
}

/// Every `<element>text</element>` with its text url-encoded as S3 does.
fn url_encode_element(xml: &str, element: &str) -> String {
    let (open, close) = (format!("<{element}>"), format!("</{element}>"));
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let text_start = start + open.len();
        let Some(length) = rest[text_start..].find(&close) else {
            break;
        };
        out.push_str(&rest[..text_start]);
        out.push_str(&s3_url_encode(&xml_unescape(
            &rest[text_start..text_start + length],
        )));
        rest = &rest[text_start + length..];
    }
    out.push_str(rest);
    out
}

fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// What S3 leaves as it is in an encoded key; a space becomes `+` (as measured on AWS: `a b`
/// lists as `a+b`, `a+b` as `a%2Bb`).
const S3_KEEPS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/')
    .remove(b' ');

fn s3_url_encode(text: &str) -> String {
    utf8_percent_encode(text, S3_KEEPS)
        .to_string()
        .replace(' ', "+")
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
