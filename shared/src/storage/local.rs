//! A directory tree as object storage (`DIR/<bucket>/<key>`), for `invoke --storage DIR`,
//! `serve --storage DIR` and demos. Keys that would leave the root are refused.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::{NewObject, ObjectStore, Op, StoreError};

/// An [`ObjectStore`] over a local directory.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    temp_counter: AtomicU64,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            temp_counter: AtomicU64::new(0),
        }
    }

    /// The file an object lives in, or why the bucket/key cannot map to one inside the root.
    fn path_of(&self, bucket: &str, key: &str) -> Result<PathBuf, StoreError> {
        let invalid = |reason| StoreError::InvalidKey {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            reason,
        };
        if bucket.is_empty() || bucket.contains(['/', '\\', '\0']) || bucket.starts_with('.') {
            return Err(invalid(
                "the bucket name is not a single plain directory name",
            ));
        }
        if key.contains(['\0', '\\']) {
            return Err(invalid("NUL and backslash cannot appear in a local key"));
        }
        let mut path = self.root.join(bucket);
        for segment in key.split('/') {
            match segment {
                "" => {
                    return Err(invalid(
                        "empty, leading or trailing `/` segments have no local file",
                    ));
                }
                "." | ".." => {
                    return Err(invalid(
                        "`.` and `..` segments would leave the bucket directory",
                    ));
                }
                _ => path.push(segment),
            }
        }
        Ok(path)
    }

    fn io_error(op: Op, bucket: &str, key: &str, error: std::io::Error) -> StoreError {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        match error.kind() {
            ErrorKind::NotFound if op == Op::Get => StoreError::NotFound { bucket, key },
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

    fn temp_path(&self, target: &Path) -> PathBuf {
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        target.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Bytes, StoreError> {
        let path = self.path_of(bucket, key)?;
        let fail = |e| Self::io_error(Op::Get, bucket, key, e);
        let file = tokio::fs::File::open(&path).await.map_err(fail)?;
        let len = file.metadata().await.map_err(fail)?.len();
        if len > max_bytes {
            return Err(StoreError::TooLarge {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                limit: max_bytes,
            });
        }
        let mut body = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(max_bytes)
            .read_to_end(&mut body)
            .await
            .map_err(fail)?;
        Ok(Bytes::from(body))
    }

    async fn put(&self, bucket: &str, key: &str, object: NewObject) -> Result<(), StoreError> {
        let path = self.path_of(bucket, key)?;
        let fail = |e| Self::io_error(Op::Put, bucket, key, e);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(fail)?;
        }
        // Write then rename, so a reader never sees half an object.
        let temp = self.temp_path(&path);
        tokio::fs::write(&temp, &object.body).await.map_err(fail)?;
        tokio::fs::rename(&temp, &path).await.map_err(fail)
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

    #[tokio::test]
    async fn round_trips_unicode_keys() -> TestResult {
        let (_dir, store) = store()?;
        let object = NewObject {
            body: Bytes::from_static(b"hello"),
            content_type: "text/plain".into(),
        };
        store.put("b", "dir/café ☕ <&>.txt", object).await?;
        assert_eq!(store.get("b", "dir/café ☕ <&>.txt", 100).await?, "hello");
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
            let err = store.get("b", key, 10).await.err().ok_or(key)?;
            assert!(matches!(err, StoreError::InvalidKey { .. }), "{key}: {err}");
        }
        for bucket in ["..", "a/b", ""] {
            let err = store.get(bucket, "k", 10).await.err().ok_or(bucket)?;
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
        let object = NewObject {
            body: Bytes::from(vec![0u8; 11]),
            content_type: "application/octet-stream".into(),
        };
        store.put("b", "big", object).await?;
        let err = store.get("b", "big", 10).await.err().ok_or("read")?;
        assert!(
            matches!(err, StoreError::TooLarge { limit: 10, .. }),
            "{err}"
        );
        Ok(())
    }
}
