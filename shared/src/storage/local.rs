//! A directory tree as object storage (`DIR/<bucket>/<key>`), for `invoke --storage DIR`,
//! `serve --storage DIR` and demos. Keys that would leave the root are refused. Content type
//! and metadata live in `DIR/.bucketfn/meta/<bucket>/<key>` (JSON), and writes go through
//! `DIR/.bucketfn/tmp/` so that a reader never sees half an object. Conditional writes hold a
//! lock file, so compare-and-swap holds across processes too.

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
use tokio::io::AsyncReadExt;

use super::{
    Condition, ListPage, ListedObject, NewObject, ObjectInfo, ObjectReader, ObjectStore, Op,
    StoreError, StoredObject,
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

    fn check_bucket(bucket: &str) -> Result<(), &'static str> {
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
        Self::check_bucket(bucket).map_err(invalid)?;
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

    async fn info(&self, op: Op, bucket: &str, key: &str) -> Result<ObjectInfo, StoreError> {
        let (content, meta) = self.paths_of(bucket, key)?;
        let fail = |e| Self::io_error(op, bucket, key, e);
        let stat = tokio::fs::metadata(&content).await.map_err(fail)?;
        if !stat.is_file() {
            return Err(fail(ErrorKind::NotFound.into()));
        }
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

    /// A new temporary file holding `bytes`, and the target's directory created.
    async fn stage(&self, target: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let temp_dir = self.root.join(STATE_DIR).join("tmp");
        tokio::fs::create_dir_all(&temp_dir).await?;
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let temp = temp_dir.join(format!("{}-{n}", std::process::id()));
        tokio::fs::write(&temp, bytes).await?;
        Ok(temp)
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

    /// Records content type, metadata and the etag of the content just written to `content`.
    async fn write_sidecar(
        &self,
        meta: &Path,
        content: &Path,
        object: &NewObject,
    ) -> std::io::Result<()> {
        let stat = tokio::fs::metadata(content).await?;
        let modified = stat.modified().ok().map(DateTime::<Utc>::from);
        let sidecar = Sidecar {
            content_type: Some(object.content_type.clone()),
            metadata: object.metadata.clone(),
            written: nanos(modified).map(|modified_ns| Written {
                md5: Md5::digest(&object.body)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                size: stat.len(),
                modified_ns,
            }),
        };
        let bytes = serde_json::to_vec(&sidecar).map_err(std::io::Error::other)?;
        self.write_atomically(meta, &bytes).await
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
        self.write_sidecar(&meta, &content, &object)
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
        let _serialised = self.conditional.lock().await;
        let _locked = self.lock_file().await.map_err(fail)?;
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
        self.write_sidecar(&meta, &content, &object)
            .await
            .map_err(fail)
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let (content, meta) = self.paths_of(bucket, key)?;
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
        Self::check_bucket(bucket).map_err(|reason| StoreError::InvalidKey {
            bucket: bucket.to_owned(),
            key: prefix.to_owned(),
            reason,
        })?;
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
        let err = store.get("b", "nope", 10).await.err().ok_or("found")?;
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        store.put("b", "big", object(b"eleven byte")).await?;
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
}
