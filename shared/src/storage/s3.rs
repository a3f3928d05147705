//! Any S3-compatible store through aws-sdk-s3: AWS, MinIO, Ceph RGW, IBM COS, OCI and GCS
//! interoperability endpoints (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, path-style).

use std::time::Duration;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::{Bytes, BytesMut};

use super::{NewObject, ObjectStore, Op, StoreError};
use crate::config::Env;

/// How to reach the store, read from the environment at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Settings {
    /// `bucket` in the path instead of the host name: what MinIO, Ceph and most
    /// self-hosted stores need. Defaults to on when an endpoint URL is configured.
    pub force_path_style: bool,
    pub max_attempts: u32,
    pub attempt_timeout: Duration,
    /// Used only when the environment names no region, so that a store reached through an
    /// endpoint URL never waits on an instance-metadata probe.
    pub fallback_region: Option<&'static str>,
}

impl S3Settings {
    pub fn read(env: &mut Env) -> Self {
        let endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .any(|name| env.raw(name).is_some_and(|v| !v.is_empty()));
        let has_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .any(|name| env.raw(name).is_some_and(|v| !v.is_empty()));
        let max_attempts = env.or("S3_MAX_ATTEMPTS", 3u32);
        if max_attempts == 0 {
            env.problem("S3_MAX_ATTEMPTS", "must be at least 1");
        }
        Self {
            force_path_style: env.or("S3_FORCE_PATH_STYLE", endpoint),
            max_attempts: max_attempts.max(1),
            attempt_timeout: Duration::from_secs(env.or("S3_ATTEMPT_TIMEOUT_SECS", 30u64)),
            fallback_region: (endpoint && !has_region).then_some("us-east-1"),
        }
    }
}

/// An [`ObjectStore`] backed by aws-sdk-s3.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
}

impl S3Store {
    /// Builds a client from the standard AWS configuration chain plus `settings`.
    /// Credentials are resolved lazily, on the first request.
    pub async fn connect(settings: &S3Settings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = settings.fallback_region {
            loader = loader.region(Region::from_static(region));
        }
        let shared = loader.load().await;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.force_path_style)
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(settings.attempt_timeout)
                    .build(),
            )
            .build();
        Self::new(Client::from_conf(config))
    }

    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Bytes, StoreError> {
        let too_large = || StoreError::TooLarge {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            limit: max_bytes,
        };
        let response = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(Op::Get, bucket, key, e))?;
        let announced = response
            .content_length()
            .and_then(|n| u64::try_from(n).ok());
        if announced.is_some_and(|n| n > max_bytes) {
            return Err(too_large());
        }
        let capacity = announced.unwrap_or(0).min(max_bytes);
        let mut buffer = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
        let mut body: ByteStream = response.body;
        // The length header can be absent (chunked) or wrong; the limit holds either way.
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::Unavailable {
                op: Op::Get,
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                source: Box::new(e),
            })?;
            if (buffer.len() + chunk.len()) as u64 > max_bytes {
                return Err(too_large());
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(buffer.freeze())
    }

    async fn put(&self, bucket: &str, key: &str, object: NewObject) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(object.content_type)
            .body(ByteStream::from(object.body))
            .send()
            .await
            .map_err(|e| classify(Op::Put, bucket, key, e))?;
        Ok(())
    }
}

/// Error codes that S3-compatible stores use for "try again later".
const RETRYABLE_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
];

const NOT_FOUND_CODES: &[&str] = &["NoSuchKey", "NoSuchBucket", "NotFound"];

fn classify<E>(op: Op, bucket: &str, key: &str, error: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = error.code().map(str::to_owned);
    let code_in = |codes: &[&str]| code.as_deref().is_some_and(|c| codes.contains(&c));
    let (bucket, key) = (bucket.to_owned(), key.to_owned());

    if op == Op::Get && (status == Some(404) || code_in(NOT_FOUND_CODES)) {
        return StoreError::NotFound { bucket, key };
    }
    let retryable = match &error {
        SdkError::ConstructionFailure(_) => false,
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        SdkError::ServiceError(_) => {
            status.is_some_and(|s| s >= 500 || s == 429 || s == 408) || code_in(RETRYABLE_CODES)
        }
        _ => true,
    };
    let source = Box::new(error);
    if retryable {
        StoreError::Unavailable {
            op,
            bucket,
            key,
            source,
        }
    } else {
        StoreError::Rejected {
            op,
            bucket,
            key,
            source,
        }
    }
}
