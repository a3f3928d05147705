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
use bytes::BytesMut;
use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use std::collections::{BTreeMap, HashMap};

use super::{
    Condition, ListPage, ListedObject, NewObject, ObjectInfo, ObjectReader, ObjectStore, Op,
    StoreError, StoredObject,
};
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

impl S3Store {
    fn put_request(
        &self,
        bucket: &str,
        key: &str,
        object: NewObject,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        let metadata = object
            .metadata
            .iter()
            .map(|(name, value)| (name.clone(), encode_metadata_value(value)))
            .collect();
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(object.content_type)
            .set_metadata(Some(metadata))
            .body(ByteStream::from(object.body))
    }

    async fn fetch(&self, bucket: &str, key: &str) -> Result<(ObjectInfo, ByteStream), StoreError> {
        let response = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(Op::Get, bucket, key, e))?;
        let info = object_info(
            response.content_length(),
            response.e_tag(),
            response.last_modified(),
            response.content_type(),
            response.metadata(),
        );
        Ok((info, response.body))
    }
}

fn object_info(
    size: Option<i64>,
    etag: Option<&str>,
    last_modified: Option<&aws_smithy_types::DateTime>,
    content_type: Option<&str>,
    metadata: Option<&HashMap<String, String>>,
) -> ObjectInfo {
    ObjectInfo {
        size: size.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
        etag: etag.map(|e| e.trim_matches('"').to_owned()),
        last_modified: last_modified.and_then(to_chrono),
        content_type: content_type.map(str::to_owned),
        metadata: decode_metadata(metadata),
        version_id: None,
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<StoredObject, StoreError> {
        let too_large = || StoreError::TooLarge {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            limit: max_bytes,
        };
        let (info, mut body) = self.fetch(bucket, key).await?;
        if info.size > max_bytes {
            return Err(too_large());
        }
        let mut buffer = BytesMut::with_capacity(usize::try_from(info.size).unwrap_or(0));
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
        Ok(StoredObject {
            body: buffer.freeze(),
            info,
        })
    }

    async fn open(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectInfo, ObjectReader), StoreError> {
        let (info, body) = self.fetch(bucket, key).await?;
        Ok((info, Box::pin(body.into_async_read())))
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, StoreError> {
        let response = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(Op::Head, bucket, key, e))?;
        Ok(object_info(
            response.content_length(),
            response.e_tag(),
            response.last_modified(),
            response.content_type(),
            response.metadata(),
        ))
    }

    async fn put(&self, bucket: &str, key: &str, object: NewObject) -> Result<(), StoreError> {
        self.put_request(bucket, key, object)
            .send()
            .await
            .map_err(|e| classify(Op::Put, bucket, key, e))?;
        Ok(())
    }

    async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        object: NewObject,
        condition: Condition,
    ) -> Result<(), StoreError> {
        let request = self.put_request(bucket, key, object);
        let request = match &condition {
            Condition::Absent => request.if_none_match("*"),
            Condition::EtagIs(etag) => request.if_match(format!("\"{etag}\"")),
            Condition::VersionIs(_) => {
                return Err(StoreError::version_condition_on_write(bucket, key));
            }
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                Err(StoreError::ConditionFailed {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    condition,
                })
            }
            // 409 ConditionalRequestConflict: a concurrent conditional write is in progress;
            // retrying settles it. The classifier treats it as retryable.
            Err(e) => Err(classify(Op::Put, bucket, key, e)),
        }
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(Op::Delete, bucket, key, e))?;
        Ok(())
    }

    async fn delete_if(
        &self,
        bucket: &str,
        key: &str,
        _condition: Condition,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unsupported {
            bucket: bucket.to_owned(),
            capability: format!("conditional deletes are not implemented yet (key {key:?})"),
            consequence: "nothing is deleted".to_owned(),
        })
    }

    async fn copy(&self, copy: super::CopyRequest) -> Result<(), StoreError> {
        Err(StoreError::Unsupported {
            bucket: copy.from_bucket,
            capability: "copies are not implemented yet".to_owned(),
            consequence: "nothing is copied".to_owned(),
        })
    }

    async fn check_bucket(&self, _bucket: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let response = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_owned))
            .max_keys(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(|e| classify(Op::List, bucket, prefix, e))?;
        let objects = response
            .contents()
            .iter()
            .filter_map(|object| {
                Some(ListedObject {
                    key: object.key()?.to_owned(),
                    size: object
                        .size()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0),
                    etag: object.e_tag().map(|e| e.trim_matches('"').to_owned()),
                    last_modified: object.last_modified().and_then(to_chrono),
                })
            })
            .collect();
        Ok(ListPage {
            objects,
            more: response.is_truncated().unwrap_or(false),
        })
    }
}

fn to_chrono(time: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

/// HTTP headers carry metadata, so values must be printable ASCII: everything else, and `%`
/// itself, is percent-encoded on the way in and decoded on the way out.
const METADATA_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

fn encode_metadata_value(value: &str) -> String {
    utf8_percent_encode(value, METADATA_ESCAPES).to_string()
}

fn decode_metadata(metadata: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    metadata
        .into_iter()
        .flatten()
        .map(|(name, value)| {
            let decoded = percent_decode_str(value).decode_utf8_lossy().into_owned();
            (name.to_ascii_lowercase(), decoded)
        })
        .collect()
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

/// What S3 answered, up front in messages: HEAD errors have no body, so the SDK's own text
/// is often just "unhandled error".
#[derive(Debug, thiserror::Error)]
#[error("{}", match (.status, .code.as_deref()) {
    (Some(status), Some(code)) => format!("HTTP {status} {code}"),
    (Some(status), None) => format!("HTTP {status}"),
    (None, _) => "no response".to_owned(),
})]
struct S3Failure {
    status: Option<u16>,
    code: Option<String>,
    #[source]
    source: crate::outcome::BoxError,
}

fn classify<E>(op: Op, bucket: &str, key: &str, error: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = error.code().map(str::to_owned);
    let code_in = |codes: &[&str]| code.as_deref().is_some_and(|c| codes.contains(&c));
    let (bucket, key) = (bucket.to_owned(), key.to_owned());

    if op.reads() && (status == Some(404) || code_in(NOT_FOUND_CODES)) {
        return StoreError::NotFound { bucket, key };
    }
    let retryable = match &error {
        SdkError::ConstructionFailure(_) => false,
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        SdkError::ServiceError(_) => {
            status.is_some_and(|s| s >= 500 || s == 429 || s == 408 || s == 409)
                || code_in(RETRYABLE_CODES)
        }
        _ => true,
    };
    let source = Box::new(S3Failure {
        status,
        code,
        source: Box::new(error),
    });
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
