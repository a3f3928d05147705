//! A directory tree as object storage (`DIR/<bucket>/<key>`), for `invoke --storage DIR`,
//! `serve --storage DIR` and demos. Keys that would leave the root are refused. Content type
//! and metadata live in `DIR/.bucketfn/meta/<bucket>/<key>` (JSON), and writes go through
//! `DIR/.bucketfn/tmp/` so that a reader never sees half an object. Conditional writes,
//! conditional deletes and copies hold a lock file, so compare-and-swap holds across processes
//! too. A bucket is a directory: reading, listing or deleting in one that does not exist is
//! [`StoreError::NoSuchBucket`], as on S3, but a write creates it (a laptop convenience, so that
//! `--storage DIR` needs no set-up for the buckets a function writes to). There are no versions:
//! a condition on a version id never holds.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    Condition, CopyRequest, ListPage, ListedObject, MAX_COPY_BYTES, NewObject, ObjectInfo,
    ObjectReader, ObjectStore, Op, StoreError, StoredObject,
};

/// Where the store keeps what a plain file cannot hold; bucket names may not start with `.`.
const STATE_DIR: &str = ".bucketfn";

/// An [`ObjectStore`] over a local directory.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    temp_counter: AtomicU64,
    /// Serialises conditional writes within this process, so that compare-and-swap holds.
    conditional: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Sidecar {
    content_type: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// The MD5 of the content this store wrote, with the size and modification time the file
    /// had then: valid only while the file still has both (someone may replace it by hand).
    #[serde(default)]
    written: Option<Written>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Written {
    md5: String,
    size: u64,
    modified_ns: i64,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            temp_counter: AtomicU64::new(0),
            conditional: tokio::sync::Mutex::new(()),
        }
    }

    fn valid_bucket_name(bucket: &str) -> Result<(), &'static str> {
        if bucket.is_empty() || bucket.contains(['/', '\\', '\0']) || bucket.starts_with('.') {
            return Err("the bucket name is not a single plain directory name");
        }
        Ok(())
    }

    /// `base/<key>`, or why the key cannot map to a path inside `base`.
    fn join_key(base: PathBuf, key: &str) -> Result<PathBuf, &'static str> {
        if key.contains(['\0', '\\']) {
            return Err("NUL and backslash cannot appear in a local key");
        }
        let mut path = base;
        for segment in key.split('/') {
            match segment {
                "" => return Err("empty, leading or trailing `/` segments have no local file"),
                "." | ".." => return Err("`.` and `..` segments would leave the bucket directory"),
                _ => path.push(segment),
            }
        }
        Ok(path)
    }

    /// The content file and the metadata file of an object.
    fn paths_of(&self, bucket: &str, key: &str) -> Result<(PathBuf, PathBuf), StoreError> {
        let invalid = |reason| StoreError::InvalidKey {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            reason,
        };
        Self::valid_bucket_name(bucket).map_err(invalid)?;
        let content = Self::join_key(self.root.join(bucket), key).map_err(invalid)?;
        let meta = Self::join_key(self.root.join(STATE_DIR).join("meta").join(bucket), key)
            .map_err(invalid)?;
        Ok((content, meta))
    }

    fn io_error(op: Op, bucket: &str, key: &str, error: std::io::Error) -> StoreError {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        match error.kind() {
            ErrorKind::NotFound if op.reads() => StoreError::NotFound { bucket, key },
            // A full disk or an interrupted call may clear; a permission error will not.
            ErrorKind::PermissionDenied | ErrorKind::NotADirectory | ErrorKind::IsADirectory => {
                StoreError::Rejected {
                    op,
                    bucket,
                    key,
                    source: Box::new(error),
                }
            }
            _ => StoreError::Unavailable {
                op,
                bucket,
                key,
                source: Box::new(error),
            },
        }
    }

    /// Whether the bucket's directory is there: [`StoreError::NoSuchBucket`] when not.
    async fn bucket_exists(&self, op: Op, bucket: &str) -> Result<(), StoreError> {
        let no_such_bucket = || StoreError::NoSuchBucket {
            bucket: bucket.to_owned(),
        };
        match tokio::fs::metadata(self.root.join(bucket)).await {
            Ok(stat) if stat.is_dir() => Ok(()),
            Ok(_) => Err(no_such_bucket()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(no_such_bucket()),
            Err(e) => Err(Self::io_error(op, bucket, "", e)),
        }
    }

    /// What a key with no file means: [`StoreError::NotFound`] only where the bucket exists.
    async fn missing(&self, op: Op, bucket: &str, key: &str) -> StoreError {
        match self.bucket_exists(op, bucket).await {
            Ok(()) => StoreError::NotFound {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            },
            Err(e) => e,
        }
    }

    async fn info(&self, op: Op, bucket: &str, key: &str) -> Result<ObjectInfo, StoreError> {
        let (content, meta) = self.paths_of(bucket, key)?;
        let stat = match tokio::fs::metadata(&content).await {
            Ok(stat) if stat.is_file() => stat,
            // A directory is no object, and `a/b` under a file `a` is a key that is not there.
            Ok(_) => return Err(self.missing(op, bucket, key).await),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Err(self.missing(op, bucket, key).await);
            }
            Err(e) => return Err(Self::io_error(op, bucket, key, e)),
        };
        let sidecar: Sidecar = match tokio::fs::read(&meta).await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => Sidecar::default(),
        };
        let modified = stat.modified().ok().map(DateTime::<Utc>::from);
        // Size and time alone can repeat across two quick writes of the same length, which
        // would let a stale compare-and-swap through; the content hash cannot.
        let etag = match &sidecar.written {
            Some(w) if w.size == stat.len() && Some(w.modified_ns) == nanos(modified) => {
                w.md5.clone()
            }
            _ => weak_etag(stat.len(), modified),
        };
        Ok(ObjectInfo {
            size: stat.len(),
            etag: Some(etag),
            last_modified: modified,
            content_type: sidecar.content_type,
            metadata: sidecar.metadata,
            version_id: None,
        })
    }

    /// A fresh temporary path for content bound for `target`, whose directory is created.
    async fn temp_for(&self, target: &Path) -> std::io::Result<PathBuf> {
        let temp_dir = self.root.join(STATE_DIR).join("tmp");
        tokio::fs::create_dir_all(&temp_dir).await?;
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        Ok(temp_dir.join(format!("{}-{n}", std::process::id())))
    }

    /// A new temporary file holding `bytes`, and the target's directory created.
    async fn stage(&self, target: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let temp = self.temp_for(target).await?;
        tokio::fs::write(&temp, bytes).await?;
        Ok(temp)
    }

    /// Copies `from` to `target` through a temporary file and a rename; the MD5 of what was
    /// copied, read as it is copied.
    async fn copy_atomically(&self, from: &Path, target: &Path) -> std::io::Result<String> {
        let temp = self.temp_for(target).await?;
        let mut source = tokio::fs::File::open(from).await?;
        let mut copy = tokio::fs::File::create(&temp).await?;
        let mut hash = Md5::new();
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let n = source.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            hash.update(&buffer[..n]);
            copy.write_all(&buffer[..n]).await?;
        }
        copy.flush().await?;
        drop(copy);
        tokio::fs::rename(&temp, target).await?;
        Ok(hex(&hash.finalize()))
    }

    /// Writes `bytes` to `target` through a temporary file and a rename.
    async fn write_atomically(&self, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let temp = self.stage(target, bytes).await?;
        tokio::fs::rename(&temp, target).await
    }

    /// Writes `bytes` to `target` only if nothing is there: a hard link fails atomically when
    /// the target exists, which a rename would not.
    async fn write_new(&self, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let temp = self.stage(target, bytes).await?;
        let linked = tokio::fs::hard_link(&temp, target).await;
        let _ = tokio::fs::remove_file(&temp).await;
        linked
    }

    /// Records content type, metadata and the MD5 of the content just written to `content`.
    async fn write_sidecar(
        &self,
        meta: &Path,
        content: &Path,
        content_type: &str,
        metadata: &BTreeMap<String, String>,
        md5: String,
    ) -> std::io::Result<()> {
        let stat = tokio::fs::metadata(content).await?;
        let modified = stat.modified().ok().map(DateTime::<Utc>::from);
        let sidecar = Sidecar {
            content_type: Some(content_type.to_owned()),
            metadata: metadata.clone(),
            written: nanos(modified).map(|modified_ns| Written {
                md5,
                size: stat.len(),
                modified_ns,
            }),
        };
        let bytes = serde_json::to_vec(&sidecar).map_err(std::io::Error::other)?;
        self.write_atomically(meta, &bytes).await
    }

    /// Records what `put` and `put_if` wrote.
    async fn write_sidecar_of(
        &self,
        meta: &Path,
        content: &Path,
        object: &NewObject,
    ) -> std::io::Result<()> {
        let md5 = hex(&Md5::digest(&object.body));
        self.write_sidecar(meta, content, &object.content_type, &object.metadata, md5)
            .await
    }

    /// Both locks that conditional writes, conditional deletes and copies hold: this
    /// process's, then the lock file that other processes on the same directory wait for.
    async fn lock_conditional(
        &self,
        op: Op,
        bucket: &str,
        key: &str,
    ) -> Result<(tokio::sync::MutexGuard<'_, ()>, std::fs::File), StoreError> {
        let serialised = self.conditional.lock().await;
        let locked = self
            .lock_file()
            .await
            .map_err(|e| Self::io_error(op, bucket, key, e))?;
        Ok((serialised, locked))
    }

    /// An exclusive lock on `DIR/.bucketfn/lock`, held until the file is dropped: conditional
    /// writes of other processes on the same directory wait for it.
    async fn lock_file(&self) -> std::io::Result<std::fs::File> {
        let dir = self.root.join(STATE_DIR);
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join("lock"))?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Removes now-empty directories from `path` up to (not including) `stop`.
    async fn prune_empty_dirs(path: &Path, stop: &Path) {
        let mut dir = path.parent();
        while let Some(current) = dir {
            if current == stop || tokio::fs::remove_dir(current).await.is_err() {
                break;
            }
            dir = current.parent();
        }
    }
}

/// For files this store did not write: size and modification time stand in for a content
/// hash.
fn weak_etag(size: u64, modified: Option<DateTime<Utc>>) -> String {
    let nanos = nanos(modified).unwrap_or(0);
    format!("{size:x}-{nanos:x}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether what is stored (`info`) is the version `condition` names; there are no versions.
fn is_version(condition: &Condition, info: &ObjectInfo) -> bool {
    match condition {
        Condition::EtagIs(etag) => info.etag.as_ref() == Some(etag),
        Condition::VersionIs(_) | Condition::Absent => false,
    }
}

fn nanos(time: Option<DateTime<Utc>>) -> Option<i64> {
    time.and_then(|t| t.timestamp_nanos_opt())
}

/// Every key under `dir`, relative to it, with `/` separators.
fn walk(dir: &Path, prefix: &str, keys: &mut Vec<String>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let key = format!("{prefix}{name}");
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &format!("{key}/"), keys)?;
        } else {
            keys.push(key);
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<StoredObject, StoreError> {
        let info = self.info(Op::Get, bucket, key).await?;
        if info.size > max_bytes {
            return Err(StoreError::TooLarge {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                limit: max_bytes,
            });
        }
        let (content, _) = self.paths_of(bucket, key)?;
        let fail = |e| Self::io_error(Op::Get, bucket, key, e);
        let file = tokio::fs::File::open(&content).await.map_err(fail)?;
        let mut body = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0));
        file.take(max_bytes)
            .read_to_end(&mut body)
            .await
            .map_err(fail)?;
        Ok(StoredObject {
            body: Bytes::from(body),
            info,
        })
    }

    async fn open(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectInfo, ObjectReader), StoreError> {
        let info = self.info(Op::Get, bucket, key).await?;
        let (content, _) = self.paths_of(bucket, key)?;
        let file = tokio::fs::File::open(&content)
            .await
            .map_err(|e| Self::io_error(Op::Get, bucket, key, e))?;
        Ok((info, Box::pin(file)))
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, StoreError> {
        self.info(Op::Head, bucket, key).await
    }

    async fn put(&self, bucket: &str, key: &str, object: NewObject) -> Result<(), StoreError> {
        let (content, meta) = self.paths_of(bucket, key)?;
        let fail = |e| Self::io_error(Op::Put, bucket, key, e);
        self.write_atomically(&content, &object.body)
            .await
            .map_err(fail)?;
        self.write_sidecar_of(&meta, &content, &object)
            .await
            .map_err(fail)
    }

    async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        object: NewObject,
        condition: Condition,
    ) -> Result<(), StoreError> {
        let (content, meta) = self.paths_of(bucket, key)?;
        let fail = |e| Self::io_error(Op::Put, bucket, key, e);
        let refused = |condition| StoreError::ConditionFailed {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            condition,
        };
        let _locked = self.lock_conditional(Op::Put, bucket, key).await?;
        match &condition {
            Condition::VersionIs(_) => {
                return Err(StoreError::version_condition_on_write(bucket, key));
            }
            Condition::Absent => match self.write_new(&content, &object.body).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(refused(condition)),
                Err(e) => return Err(fail(e)),
            },
            Condition::EtagIs(expected) => {
                let current = match self.info(Op::Head, bucket, key).await {
                    Ok(info) => info.etag,
                    Err(StoreError::NotFound { .. }) => None,
                    Err(e) => return Err(e),
                };
                if current.as_deref() != Some(expected.as_str()) {
                    return Err(refused(condition));
                }
                self.write_atomically(&content, &object.body)
                    .await
                    .map_err(fail)?;
            }
        }
        self.write_sidecar_of(&meta, &content, &object)
            .await
            .map_err(fail)
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let (content, meta) = self.paths_of(bucket, key)?;
        self.bucket_exists(Op::Delete, bucket).await?;
        for (path, stop) in [
            (content, self.root.join(bucket)),
            (meta, self.root.join(STATE_DIR).join("meta").join(bucket)),
        ] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Self::prune_empty_dirs(&path, &stop).await,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Self::io_error(Op::Delete, bucket, key, e)),
            }
        }
        Ok(())
    }

    async fn delete_if(
        &self,
        bucket: &str,
        key: &str,
        condition: Condition,
    ) -> Result<(), StoreError> {
        if condition == Condition::Absent {
            return Err(StoreError::absent_condition_refused(
                Op::Delete,
                bucket,
                key,
            ));
        }
        let _locked = self.lock_conditional(Op::Delete, bucket, key).await?;
        let current = match self.info(Op::Head, bucket, key).await {
            Ok(info) => info,
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !is_version(&condition, &current) {
            return Err(StoreError::ConditionFailed {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                condition,
            });
        }
        self.delete(bucket, key).await
    }

    async fn copy(&self, copy: CopyRequest) -> Result<(), StoreError> {
        let (from_bucket, from_key) = (copy.from_bucket.as_str(), copy.from_key.as_str());
        if copy.expected == Condition::Absent {
            return Err(StoreError::absent_condition_refused(
                Op::Copy,
                from_bucket,
                from_key,
            ));
        }
        let (from, _) = self.paths_of(from_bucket, from_key)?;
        let (to, to_meta) = self.paths_of(&copy.to_bucket, &copy.to_key)?;
        let _locked = self
            .lock_conditional(Op::Copy, from_bucket, from_key)
            .await?;
        let source = self.info(Op::Copy, from_bucket, from_key).await?;
        if !is_version(&copy.expected, &source) {
            return Err(StoreError::ConditionFailed {
                bucket: copy.from_bucket,
                key: copy.from_key,
                condition: copy.expected,
            });
        }
        if source.size > MAX_COPY_BYTES {
            return Err(StoreError::TooLarge {
                bucket: copy.from_bucket,
                key: copy.from_key,
                limit: MAX_COPY_BYTES,
            });
        }
        let fail = |e| Self::io_error(Op::Copy, &copy.to_bucket, &copy.to_key, e);
        let md5 = self.copy_atomically(&from, &to).await.map_err(fail)?;
        self.write_sidecar(&to_meta, &to, &copy.content_type, &copy.metadata, md5)
            .await
            .map_err(fail)
    }

    async fn check_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        Self::valid_bucket_name(bucket).map_err(|reason| StoreError::InvalidKey {
            bucket: bucket.to_owned(),
            key: String::new(),
            reason,
        })?;
        self.bucket_exists(Op::List, bucket).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        Self::valid_bucket_name(bucket).map_err(|reason| StoreError::InvalidKey {
            bucket: bucket.to_owned(),
            key: prefix.to_owned(),
            reason,
        })?;
        self.bucket_exists(Op::List, bucket).await?;
        let dir = self.root.join(bucket);
        let mut keys = tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            walk(&dir, "", &mut keys).map(|()| keys)
        })
        .await
        .map_err(|e| Self::io_error(Op::List, bucket, prefix, std::io::Error::other(e)))?
        .map_err(|e| Self::io_error(Op::List, bucket, prefix, e))?;
        keys.retain(|k| {
            k.starts_with(prefix) && start_after.is_none_or(|after| k.as_str() > after)
        });
        keys.sort();
        let more = keys.len() > limit;
        let mut objects = Vec::with_capacity(limit.min(keys.len()));
        for key in keys.into_iter().take(limit) {
            // A file removed between the walk and now is simply not listed.
            if let Ok(info) = self.info(Op::List, bucket, &key).await {
                objects.push(ListedObject {
                    key,
                    size: info.size,
                    etag: info.etag,
                    last_modified: info.last_modified,
                });
            }
        }
        Ok(ListPage { objects, more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn store() -> Result<(tempfile::TempDir, LocalStore), std::io::Error> {
        let dir = tempfile::tempdir()?;
        let store = LocalStore::new(dir.path());
        Ok((dir, store))
    }

    fn object(body: &'static [u8]) -> NewObject {
        NewObject {
            body: Bytes::from_static(body),
            content_type: "text/plain".into(),
            metadata: BTreeMap::from([("source-key".to_owned(), "café ☕".to_owned())]),
        }
    }

    #[tokio::test]
    async fn round_trips_unicode_keys_with_metadata() -> TestResult {
        let (_dir, store) = store()?;
        store
            .put("b", "dir/café ☕ <&>.txt", object(b"hello"))
            .await?;
        let stored = store.get("b", "dir/café ☕ <&>.txt", 100).await?;
        assert_eq!(stored.body, "hello");
        assert_eq!(stored.info.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            stored.info.metadata.get("source-key").map(String::as_str),
            Some("café ☕")
        );
        assert_eq!(stored.info, store.head("b", "dir/café ☕ <&>.txt").await?);
        Ok(())
    }

    #[tokio::test]
    async fn refuses_keys_that_escape_the_root() -> TestResult {
        let (_dir, store) = store()?;
        for key in [
            "../etc/passwd",
            "a/../../x",
            "/abs",
            "a//b",
            "./a",
            "a\\..\\b",
        ] {
            let err = store.head("b", key).await.err().ok_or(key)?;
            assert!(matches!(err, StoreError::InvalidKey { .. }), "{key}: {err}");
        }
        for bucket in ["..", "a/b", "", ".bucketfn"] {
            let err = store.head(bucket, "k").await.err().ok_or(bucket)?;
            assert!(
                matches!(err, StoreError::InvalidKey { .. }),
                "{bucket}: {err}"
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn missing_is_not_found_and_large_is_refused() -> TestResult {
        let (_dir, store) = store()?;
        store.put("b", "big", object(b"eleven byte")).await?;
        let err = store.get("b", "nope", 10).await.err().ok_or("found")?;
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        let err = store.get("b", "big", 10).await.err().ok_or("read")?;
        assert!(
            matches!(err, StoreError::TooLarge { limit: 10, .. }),
            "{err}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn lists_in_key_order_after_a_key_and_in_pages() -> TestResult {
        let (_dir, store) = store()?;
        for key in ["p/b", "p/a/2", "p/a/1", "q/x", "p/c"] {
            store.put("b", key, object(b"x")).await?;
        }
        let page = store.list("b", "p/", None, 2).await?;
        let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!((keys, page.more), (vec!["p/a/1", "p/a/2"], true));
        let page = store.list("b", "p/", Some("p/a/2"), 2).await?;
        let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!((keys, page.more), (vec!["p/b", "p/c"], false));
        Ok(())
    }

    #[tokio::test]
    async fn delete_is_idempotent_and_leaves_no_empty_directories() -> TestResult {
        let (dir, store) = store()?;
        store.put("b", "x/y/z", object(b"x")).await?;
        store.delete("b", "x/y/z").await?;
        store.delete("b", "x/y/z").await?;
        assert!(!dir.path().join("b/x").exists());
        assert!(store.list("b", "", None, 10).await?.objects.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn conditional_writes_compare_and_swap() -> TestResult {
        let (_dir, store) = store()?;
        store
            .put_if("b", "lease", object(b"one"), Condition::Absent)
            .await?;
        let err = store
            .put_if("b", "lease", object(b"two"), Condition::Absent)
            .await
            .err()
            .ok_or("second create won")?;
        assert!(matches!(err, StoreError::ConditionFailed { .. }), "{err}");
        let etag = store.head("b", "lease").await?.etag.ok_or("no etag")?;
        let stale = Condition::EtagIs("stale".into());
        assert!(
            store
                .put_if("b", "lease", object(b"three"), stale)
                .await
                .is_err()
        );
        store
            .put_if("b", "lease", object(b"four"), Condition::EtagIs(etag))
            .await?;
        assert_eq!(store.get("b", "lease", 10).await?.body, "four");
        Ok(())
    }

    #[tokio::test]
    async fn a_stale_etag_never_wins_even_for_same_size_writes_in_one_instant() -> TestResult {
        let (dir, store) = store()?;
        store.put("b", "lease", object(b"holder=a")).await?;
        let stale = store.head("b", "lease").await?.etag.ok_or("no etag")?;
        // Same length, written at once: size and time alone could not tell the two apart.
        store
            .put_if(
                "b",
                "lease",
                object(b"holder=b"),
                Condition::EtagIs(stale.clone()),
            )
            .await?;
        let err = store
            .put_if("b", "lease", object(b"holder=c"), Condition::EtagIs(stale))
            .await
            .err()
            .ok_or("a stale etag won")?;
        assert!(matches!(err, StoreError::ConditionFailed { .. }), "{err}");
        // A second store on the same directory (another process) sees the same etags.
        let other = LocalStore::new(dir.path());
        assert_eq!(
            other.head("b", "lease").await?.etag,
            store.head("b", "lease").await?.etag
        );
        Ok(())
    }

    #[tokio::test]
    async fn streams_and_changes_etag_on_rewrite() -> TestResult {
        let (_dir, store) = store()?;
        store.put("b", "k", object(b"first")).await?;
        let (info, mut reader) = store.open("b", "k").await?;
        let mut text = String::new();
        reader.read_to_string(&mut text).await?;
        assert_eq!(text, "first");
        store.put("b", "k", object(b"second")).await?;
        assert_ne!(store.head("b", "k").await?.etag, info.etag);
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_bucket_directory_is_no_such_bucket_but_a_write_creates_it() -> TestResult {
        let (dir, store) = store()?;
        let missing = [
            store.head("b", "k").await.err(),
            store.get("b", "k", 10).await.err(),
            store.open("b", "k").await.err(),
            store.list("b", "", None, 10).await.err(),
            store.delete("b", "k").await.err(),
            store
                .delete_if("b", "k", Condition::EtagIs("e".into()))
                .await
                .err(),
            store.check_bucket("b").await.err(),
        ];
        for err in missing {
            let err = err.ok_or("a missing bucket was found")?;
            assert!(
                matches!(&err, StoreError::NoSuchBucket { bucket } if bucket == "b"),
                "{err}"
            );
        }
        store.put("b", "k", object(b"x")).await?;
        store.check_bucket("b").await?;
        let err = store.head("b", "other").await.err().ok_or("found")?;
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        // Under a file, a key is missing, not refused.
        let err = store.head("b", "k/under").await.err().ok_or("found")?;
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        std::fs::write(dir.path().join("file"), b"not a bucket")?;
        let err = store.check_bucket("file").await.err();
        assert!(
            matches!(err, Some(StoreError::NoSuchBucket { .. })),
            "{err:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_conditional_delete_keeps_an_object_whose_etag_changed() -> TestResult {
        let (_dir, store) = store()?;
        store.put("b", "k", object(b"first")).await?;
        let read = store
            .head("b", "k")
            .await?
            .read_version()
            .ok_or("no etag")?;
        store.put("b", "k", object(b"second")).await?;
        for condition in [read, Condition::VersionIs("v1".into())] {
            let err = store.delete_if("b", "k", condition).await.err();
            assert!(
                matches!(err, Some(StoreError::ConditionFailed { .. })),
                "{err:?}"
            );
        }
        assert_eq!(store.get("b", "k", 10).await?.body, "second");
        let current = store
            .head("b", "k")
            .await?
            .read_version()
            .ok_or("no etag")?;
        store.delete_if("b", "k", current.clone()).await?;
        assert!(store.list("b", "", None, 10).await?.objects.is_empty());
        store.delete_if("b", "k", current).await?;
        let err = store.delete_if("b", "k", Condition::Absent).await.err();
        assert!(
            matches!(err, Some(StoreError::Unsupported { .. })),
            "{err:?}"
        );
        Ok(())
    }

    fn copy_of(expected: Condition) -> CopyRequest {
        CopyRequest {
            from_bucket: "b".to_owned(),
            from_key: "in/a.jpg".to_owned(),
            expected,
            to_bucket: "c".to_owned(),
            to_key: "moved/a.jpg".to_owned(),
            content_type: "image/jpeg".to_owned(),
            metadata: BTreeMap::from([("moved-from".to_owned(), "b/in ☀".to_owned())]),
        }
    }

    #[tokio::test]
    async fn a_copy_happens_only_from_the_version_that_was_read() -> TestResult {
        let (_dir, store) = store()?;
        store.put("b", "in/a.jpg", object(b"first")).await?;
        let read = store.head("b", "in/a.jpg").await?.read_version();
        store.put("b", "in/a.jpg", object(b"second")).await?;
        let err = store.copy(copy_of(read.ok_or("no etag")?)).await.err();
        assert!(
            matches!(err, Some(StoreError::ConditionFailed { .. })),
            "{err:?}"
        );
        assert!(store.head("c", "moved/a.jpg").await.is_err());

        let source = store.head("b", "in/a.jpg").await?;
        let current = source.read_version().ok_or("no etag")?;
        store.copy(copy_of(current.clone())).await?;
        let copied = store.get("c", "moved/a.jpg", 100).await?;
        assert_eq!(copied.body, "second");
        assert_eq!(copied.info.content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(copied.info.metadata, copy_of(current.clone()).metadata);
        // The same content, the same etag: the copy's sidecar holds its content hash.
        assert_eq!(copied.info.etag, source.etag);
        assert_eq!(
            store.head("b", "in/a.jpg").await?.metadata,
            object(b"").metadata
        );

        let mut gone = copy_of(current.clone());
        gone.from_key = "in/gone.jpg".to_owned();
        let err = store.copy(gone).await.err();
        assert!(matches!(err, Some(StoreError::NotFound { .. })), "{err:?}");
        let mut no_bucket = copy_of(current);
        no_bucket.from_bucket = "nope".to_owned();
        let err = store.copy(no_bucket).await.err();
        assert!(
            matches!(err, Some(StoreError::NoSuchBucket { .. })),
            "{err:?}"
        );
        Ok(())
    }
}
