//! Any S3-compatible store through aws-sdk-s3: AWS, MinIO, Ceph RGW, IBM COS, OCI and GCS
//! interoperability endpoints (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, path-style).
//! A missing key is told apart from a missing bucket (HeadBucket where the answer cannot say),
//! and listings ask for url-encoded keys so that any key lists.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{EncodingType, MetadataDirective};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use percent_encoding::{
    AsciiSet, CONTROLS, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode,
};

use super::{
    Condition, CopyRequest, ListPage, ListedObject, MAX_COPY_BYTES, NewObject, ObjectInfo,
    ObjectReader, ObjectStore, Op, StoreError, StoredObject, read_at_most,
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

/// How long a bucket seen to exist is taken to exist: a missing key then costs no HeadBucket,
/// and a bucket deleted meanwhile is noticed within this time.
const BUCKET_CONFIRMED_FOR: Duration = Duration::from_secs(60);

/// An [`ObjectStore`] backed by aws-sdk-s3.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    /// Buckets known to exist (HeadBucket found them, or an object in them was read), and
    /// since when: a HEAD's 404 has no body, and some stores answer a GET in a missing bucket
    /// with `NoSuchKey`, so a key is called missing only in a bucket known to exist.
    confirmed_buckets: Arc<Mutex<HashMap<String, Instant>>>,
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
        Self {
            client,
            confirmed_buckets: Arc::default(),
        }
    }
}

impl S3Store {
    fn put_request(
        &self,
        bucket: &str,
        key: &str,
        object: NewObject,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(object.content_type)
            .set_metadata(Some(encode_metadata(&object.metadata)))
            .body(ByteStream::from(object.body))
    }

    /// GetObject, of `range` (an HTTP `Range`) when given. The info of a ranged read holds
    /// the range's length as its size.
    async fn fetch(
        &self,
        bucket: &str,
        key: &str,
        range: Option<String>,
    ) -> Result<(ObjectInfo, ByteStream), StoreError> {
        let ranged = range.is_some();
        let response = match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_range(range)
            .send()
            .await
        {
            Ok(response) => response,
            // An empty object has no byte in any range: S3 answers 416.
            Err(e) if ranged && status_of(&e) == Some(416) => {
                self.remember_bucket(bucket);
                return Ok((ObjectInfo::default(), ByteStream::from_static(b"")));
            }
            Err(e) => {
                return Err(self
                    .confirm_missing(classify(Op::Get, bucket, key, e))
                    .await);
            }
        };
        self.remember_bucket(bucket);
        let info = object_info(
            response.content_length(),
            response.e_tag(),
            response.last_modified(),
            response.content_type(),
            response.metadata(),
            response.version_id(),
        );
        Ok((info, response.body))
    }

    /// HEAD of the current object, or of one version of it.
    async fn head_version(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<ObjectInfo, StoreError> {
        let request = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned));
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return Err(self
                    .confirm_missing(classify(Op::Head, bucket, key, e))
                    .await);
            }
        };
        self.remember_bucket(bucket);
        Ok(object_info(
            response.content_length(),
            response.e_tag(),
            response.last_modified(),
            response.content_type(),
            response.metadata(),
            response.version_id(),
        ))
    }

    /// A [`StoreError::NotFound`] stands only if its bucket exists; otherwise what HeadBucket
    /// says (no such bucket, refused, or unavailable: never a guess that the key is missing).
    async fn confirm_missing(&self, error: StoreError) -> StoreError {
        let StoreError::NotFound { bucket, key } = error else {
            return error;
        };
        if self.recently_confirmed(&bucket) {
            return StoreError::NotFound { bucket, key };
        }
        match self.check_bucket(&bucket).await {
            Ok(()) => StoreError::NotFound { bucket, key },
            Err(e) => e,
        }
    }

    fn confirmed(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // The map holds only timestamps; a panic elsewhere leaves it valid.
        self.confirmed_buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn recently_confirmed(&self, bucket: &str) -> bool {
        self.confirmed()
            .get(bucket)
            .is_some_and(|at| at.elapsed() < BUCKET_CONFIRMED_FOR)
    }

    fn remember_bucket(&self, bucket: &str) {
        let mut confirmed = self.confirmed();
        confirmed.retain(|_, at| at.elapsed() < BUCKET_CONFIRMED_FOR);
        confirmed.insert(bucket.to_owned(), Instant::now());
    }

    /// What a failed DeleteObject means: a key (or version) already gone is deleted.
    fn deleted<E>(bucket: &str, key: &str, error: SdkError<E>) -> Result<(), StoreError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match error.code() {
            Some("NoSuchKey" | "NoSuchVersion") => Ok(()),
            _ => Err(classify(Op::Delete, bucket, key, error)),
        }
    }
}

fn object_info(
    size: Option<i64>,
    etag: Option<&str>,
    last_modified: Option<&aws_smithy_types::DateTime>,
    content_type: Option<&str>,
    metadata: Option<&HashMap<String, String>>,
    version_id: Option<&str>,
) -> ObjectInfo {
    ObjectInfo {
        size: size.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
        etag: etag.map(|e| e.trim_matches('"').to_owned()),
        last_modified: last_modified.and_then(to_chrono),
        content_type: content_type.map(str::to_owned),
        metadata: decode_metadata(metadata),
        // An unversioned (or suspended) bucket names its one version "null": no version to
        // condition on.
        version_id: version_id.filter(|v| *v != "null").map(str::to_owned),
    }
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

fn status_of<E>(error: &SdkError<E>) -> Option<u16> {
    error.raw_response().map(|r| r.status().as_u16())
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
        let (info, mut body) = self.fetch(bucket, key, None).await?;
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
        let (info, body) = self.fetch(bucket, key, None).await?;
        Ok((info, Box::pin(body.into_async_read())))
    }

    async fn read_start(&self, bucket: &str, key: &str, len: usize) -> Result<Bytes, StoreError> {
        let Some(last) = len.checked_sub(1) else {
            return Ok(Bytes::new());
        };
        let (_, body) = self
            .fetch(bucket, key, Some(format!("bytes=0-{last}")))
            .await?;
        // A store that ignores Range sends the whole object; only `len` bytes are read.
        read_at_most(body.into_async_read(), len, bucket, key).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, StoreError> {
        self.head_version(bucket, key, None).await
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
            Condition::EtagIs(etag) => request.if_match(quoted(etag)),
            Condition::VersionIs(_) => {
                return Err(StoreError::version_condition_on_write(bucket, key));
            }
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(412) => Err(StoreError::ConditionFailed {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                condition,
            }),
            // 409 ConditionalRequestConflict: a concurrent conditional write is in progress;
            // retrying settles it. The classifier treats it as retryable.
            Err(e) => Err(classify(Op::Put, bucket, key, e)),
        }
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        match self
            .client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Self::deleted(bucket, key, e),
        }
    }

    async fn delete_if(
        &self,
        bucket: &str,
        key: &str,
        condition: Condition,
    ) -> Result<(), StoreError> {
        let request = self.client.delete_object().bucket(bucket).key(key);
        let request = match &condition {
            Condition::EtagIs(etag) => request.if_match(quoted(etag)),
            // Deleting one version cannot touch another: exact by nature.
            Condition::VersionIs(version) => request.version_id(version),
            Condition::Absent => {
                return Err(StoreError::absent_condition_refused(
                    Op::Delete,
                    bucket,
                    key,
                ));
            }
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(412) => {
                // HTTP evaluates If-Match as false where nothing is stored, so a store may
                // answer a key already gone with 412; gone is what the caller wanted.
                match self.head(bucket, key).await {
                    Err(StoreError::NotFound { .. }) => Ok(()),
                    _ => Err(StoreError::ConditionFailed {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                        condition,
                    }),
                }
            }
            Err(e) => Self::deleted(bucket, key, e),
        }
    }

    async fn copy(&self, copy: CopyRequest) -> Result<(), StoreError> {
        let CopyRequest {
            from_bucket,
            from_key,
            expected,
            to_bucket,
            to_key,
            content_type,
            metadata,
        } = copy;
        let mut source = format!(
            "{}/{}",
            utf8_percent_encode(&from_bucket, COPY_SOURCE_PATH),
            utf8_percent_encode(&from_key, COPY_SOURCE_PATH)
        );
        let mut version = None;
        let mut source_etag = None;
        match &expected {
            Condition::Absent => {
                return Err(StoreError::absent_condition_refused(
                    Op::Copy,
                    &from_bucket,
                    &from_key,
                ));
            }
            Condition::EtagIs(etag) => source_etag = Some(quoted(etag)),
            Condition::VersionIs(id) => {
                source.push_str("?versionId=");
                source.extend(utf8_percent_encode(id, COPY_SOURCE_VERSION));
                version = Some(id.as_str());
            }
        }
        // One CopyObject copies at most MAX_COPY_BYTES; the store would refuse a larger source
        // only after the request, with a less telling error.
        let source_now = self.head_version(&from_bucket, &from_key, version).await?;
        if source_now.size > MAX_COPY_BYTES {
            return Err(StoreError::TooLarge {
                bucket: from_bucket,
                key: from_key,
                limit: MAX_COPY_BYTES,
            });
        }
        // Some stores ignore x-amz-copy-source-if-match (moto 5.2.1): checked here too, such a
        // store copies another version only if one is written between this HEAD and the copy.
        if let Condition::EtagIs(etag) = &expected
            && source_now.etag.as_ref() != Some(etag)
        {
            return Err(StoreError::ConditionFailed {
                bucket: from_bucket,
                key: from_key,
                condition: expected,
            });
        }
        let request = self
            .client
            .copy_object()
            .copy_source(source)
            .set_copy_source_if_match(source_etag)
            .bucket(&to_bucket)
            .key(&to_key)
            .metadata_directive(MetadataDirective::Replace)
            .content_type(content_type)
            .set_metadata(Some(encode_metadata(&metadata)));
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(412) => Err(StoreError::ConditionFailed {
                bucket: from_bucket,
                key: from_key,
                condition: expected,
            }),
            Err(e) if e.code() == Some("NoSuchKey") => {
                let gone = StoreError::NotFound {
                    bucket: from_bucket,
                    key: from_key,
                };
                Err(self.confirm_missing(gone).await)
            }
            // The HEAD found the source's bucket: a NoSuchBucket now is the destination's.
            Err(e) => Err(classify(Op::Copy, &to_bucket, &to_key, e)),
        }
    }

    async fn check_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => {
                self.remember_bucket(bucket);
                Ok(())
            }
            // HeadBucket has no body: its 404 is the only way it says so.
            Err(e) if status_of(&e) == Some(404) => Err(StoreError::NoSuchBucket {
                bucket: bucket.to_owned(),
            }),
            // HeadBucket needs the permission a listing does (s3:ListBucket on AWS).
            Err(e) => Err(classify(Op::CheckBucket, bucket, "", e)),
        }
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
            // Keys may hold characters XML 1.0 cannot carry; encoded, any key lists.
            .encoding_type(EncodingType::Url)
            // Sent as the key itself: S3 compares it with the stored keys, not encoded ones.
            .set_start_after(start_after.map(str::to_owned))
            .max_keys(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(|e| classify(Op::List, bucket, prefix, e))?;
        // A store that ignores the parameter says nothing and sends raw keys; decoding those
        // would corrupt every key holding `%` or `+`. One store (the s3s-fs server) says it
        // encoded and sends raw keys all the same: a store that encoded its keys encoded the
        // prefix it echoes too, so an echo that does not decode to the prefix asked for
        // unmasks it.
        let encoded = response.encoding_type() == Some(&EncodingType::Url)
            && response
                .prefix()
                .is_none_or(|echo| decode_listed_key(echo).is_ok_and(|echo| echo == prefix));
        let mut objects = Vec::with_capacity(response.contents().len());
        for object in response.contents() {
            let Some(listed) = object.key() else {
                continue;
            };
            let key = match encoded {
                true => decode_listed_key(listed).map_err(|e| StoreError::Rejected {
                    op: Op::List,
                    bucket: bucket.to_owned(),
                    key: prefix.to_owned(),
                    source: Box::new(e),
                })?,
                false => listed.to_owned(),
            };
            objects.push(ListedObject {
                key,
                size: object
                    .size()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                etag: object.e_tag().map(|e| e.trim_matches('"').to_owned()),
                last_modified: object.last_modified().and_then(to_chrono),
            });
        }
        Ok(ListPage {
            objects,
            more: response.is_truncated().unwrap_or(false),
        })
    }
}

fn to_chrono(time: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

/// A listed key that is not the url encoding of a UTF-8 key: the store is broken, and skipping
/// the key would hide an object from every sweep.
#[derive(Debug, thiserror::Error)]
#[error("the store listed {listed:?}, which is not a url-encoded UTF-8 key")]
struct UndecodableKey {
    listed: String,
}

/// S3 encodes listed keys as a form value: a space as `+`, a `+` as `%2B`.
fn decode_listed_key(listed: &str) -> Result<String, UndecodableKey> {
    let spaced = listed.replace('+', " ");
    match percent_decode_str(&spaced).decode_utf8() {
        Ok(key) => Ok(key.into_owned()),
        Err(_) => Err(UndecodableKey {
            listed: listed.to_owned(),
        }),
    }
}

/// `x-amz-copy-source` is `bucket/key`, url-encoded except for the key's `/`.
const COPY_SOURCE_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// A version id after `?versionId=`: its `/` and `+` are data.
const COPY_SOURCE_VERSION: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// HTTP headers carry metadata, so values must be printable ASCII: everything else, and `%`
/// itself, is percent-encoded on the way in and decoded on the way out.
const METADATA_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

fn encode_metadata(metadata: &BTreeMap<String, String>) -> HashMap<String, String> {
    metadata
        .iter()
        .map(|(name, value)| {
            let encoded = utf8_percent_encode(value, METADATA_ESCAPES).to_string();
            (name.clone(), encoded)
        })
        .collect()
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

/// What reads answer for a missing key (`NotFound`: HEAD's 404, which has no body to say more).
const MISSING_KEY_CODES: &[&str] = &["NoSuchKey", "NotFound"];

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

/// A read's [`StoreError::NotFound`] still needs its bucket confirmed
/// ([`S3Store::confirm_missing`]).
fn classify<E>(op: Op, bucket: &str, key: &str, error: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = status_of(&error);
    let code = error.code().map(str::to_owned);
    let code_in = |codes: &[&str]| code.as_deref().is_some_and(|c| codes.contains(&c));
    let (bucket, key) = (bucket.to_owned(), key.to_owned());

    if code.as_deref() == Some("NoSuchBucket") {
        return StoreError::NoSuchBucket { bucket };
    }
    if op.reads() && (status == Some(404) || code_in(MISSING_KEY_CODES)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_keys_decode_as_s3_encodes_them() -> Result<(), UndecodableKey> {
        for (listed, key) in [
            ("a+b.txt", "a b.txt"),
            // moto 5.2.1 encodes a space as `%20`.
            ("a%20b.txt", "a b.txt"),
            ("a%2Bb.txt", "a+b.txt"),
            ("100%25.csv", "100%.csv"),
            ("%ED%95%9C/x.txt", "한/x.txt"),
            ("a%01b.jpg", "a\u{1}b.jpg"),
        ] {
            assert_eq!(decode_listed_key(listed)?, key, "{listed}");
        }
        assert!(decode_listed_key("%FF").is_err());
        Ok(())
    }

    #[test]
    fn the_null_version_of_an_unversioned_bucket_is_no_version() {
        let info = |version| object_info(Some(1), Some("\"e\""), None, None, None, version);
        assert_eq!(info(Some("null")).version_id, None);
        assert_eq!(
            info(Some("3HL4kqtJ")).version_id.as_deref(),
            Some("3HL4kqtJ")
        );
        assert_eq!(info(Some("3HL4kqtJ")).etag.as_deref(), Some("e"));
    }
}
