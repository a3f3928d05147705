//! The bucket notifications a store would send, for a directory. Under `serve --storage DIR`
//! a file that appears, changes or goes in a served bucket becomes the S3 notification a
//! bucket sends (`ObjectCreated:Put`, `ObjectRemoved:Delete`), decoded and handled through the
//! same dispatch as a delivery, so a laptop shows upload, event, outputs and history without a
//! cloud account.
//!
//! The directory is polled rather than watched through the platform's file-change API: it
//! behaves the same on every system and on network mounts, and a demo folder is small. A file
//! counts once its size and modification time held still for `LOCAL_EVENTS_SETTLE_MS`, so a
//! copy in progress is not announced half-written. What is there at start-up is not announced (a sweep
//! covers it), nor are the functions' own files: hidden paths (`.bucketfn/`,
//! `.forward-to-stream/`, claim and cursor folders) and what the function says are not its
//! inputs (`Location::exclude_prefix`, its thumbnails).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::dispatch::{Governor, process};
use crate::config::Env;
use crate::event::{EventKind, decode_value};
use crate::function::Handler;
use crate::operations::Observer;
use crate::sources::Sources;
use crate::storage::ObjectStore;

/// `LOCAL_EVENTS`, `LOCAL_EVENTS_INTERVAL_MS`, `LOCAL_EVENTS_SETTLE_MS` and
/// `LOCAL_EVENTS_MAX_FILES`.
#[derive(Debug, Clone)]
pub struct LocalEventSettings {
    /// Whether `serve --storage DIR` sends the directory's events (default on).
    pub enabled: bool,
    /// How often the directory is looked at.
    pub interval: Duration,
    /// How long a file's size and time must hold still before it is announced.
    pub settle: Duration,
    /// More files than this in the watched buckets stop the watching, with a warning: each
    /// look reads every file's size and time.
    pub max_files: usize,
}

impl LocalEventSettings {
    pub fn read(env: &mut Env) -> Self {
        let interval = env.or("LOCAL_EVENTS_INTERVAL_MS", 500u64);
        if interval == 0 {
            env.problem("LOCAL_EVENTS_INTERVAL_MS", "must be at least 1");
        }
        Self {
            enabled: env.or("LOCAL_EVENTS", true),
            interval: Duration::from_millis(interval.max(1)),
            settle: Duration::from_millis(env.or("LOCAL_EVENTS_SETTLE_MS", 1000u64)),
            max_files: env.or("LOCAL_EVENTS_MAX_FILES", 100_000usize),
        }
    }
}

/// Which files of the directory are announced.
#[derive(Debug, Clone)]
struct Scope {
    /// `(bucket, prefix)` pairs; `None`: every bucket directory.
    buckets: Option<Vec<(String, String)>>,
    /// `(bucket, prefix)` of keys that are the function's own.
    excluded: Option<(String, String)>,
}

impl Scope {
    fn of<H: Handler>(sources: Option<&Sources>, handler: &H) -> Self {
        let buckets = match sources {
            Some(Sources::Only { entries, .. }) => Some(
                entries
                    .iter()
                    .map(|e| (e.bucket.clone(), e.prefix.clone()))
                    .collect(),
            ),
            Some(Sources::Any) | None => None,
        };
        let excluded = handler
            .inputs()
            .and_then(|l| l.exclude_prefix.map(|prefix| (l.bucket, prefix)));
        Self { buckets, excluded }
    }

    fn announces(&self, bucket: &str, key: &str) -> bool {
        let hidden = key.split('/').any(|segment| segment.starts_with('.'));
        let own = self
            .excluded
            .as_ref()
            .is_some_and(|(b, prefix)| b == bucket && key.starts_with(prefix.as_str()));
        let served = self.buckets.as_ref().is_none_or(|buckets| {
            buckets
                .iter()
                .any(|(b, prefix)| b == bucket && key.starts_with(prefix.as_str()))
        });
        !hidden && !own && served
    }
}

/// A file's size and modification time: what changes when it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    modified: SystemTime,
}

type Files = BTreeMap<(String, String), Stamp>;

#[derive(Debug, thiserror::Error)]
enum ScanError {
    #[error("the watched buckets hold more than {0} files (LOCAL_EVENTS_MAX_FILES)")]
    TooMany(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The files of `root` that `scope` announces.
fn scan(root: &Path, scope: &Scope, max_files: usize) -> Result<Files, ScanError> {
    let buckets: Vec<String> = match &scope.buckets {
        Some(buckets) => buckets.iter().map(|(b, _)| b.clone()).collect(),
        None => std::fs::read_dir(root)?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .collect(),
    };
    let mut files = Files::new();
    for bucket in buckets {
        walk(&root.join(&bucket), "", &mut |key, stamp| {
            if scope.announces(&bucket, &key) {
                if files.len() >= max_files {
                    return Err(ScanError::TooMany(max_files));
                }
                files.insert((bucket.clone(), key), stamp);
            }
            Ok(())
        })?;
    }
    Ok(files)
}

/// Calls `found` with the key (`/`-separated, relative to `dir`) and stamp of every file
/// under `dir`; hidden folders are not entered.
fn walk(
    dir: &Path,
    prefix: &str,
    found: &mut dyn FnMut(String, Stamp) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // A bucket that is not there (yet), or a folder removed while walking.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in entries.filter_map(Result::ok) {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let key = format!("{prefix}{name}");
        if meta.is_dir() {
            if !name.starts_with('.') {
                walk(&entry.path(), &format!("{key}/"), found)?;
            }
        } else if meta.is_file() {
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            found(
                key,
                Stamp {
                    size: meta.len(),
                    modified,
                },
            )?;
        }
    }
    Ok(())
}

/// Since when each file has had the stamp it has.
type Settling = BTreeMap<(String, String), (Stamp, Instant)>;

/// What changed at the look at `at` that found `now`: files to announce as created (their
/// stamp unchanged for `settle`, and not announced with it) and as removed (announced, and
/// gone now). `settling` and `announced` are brought up to date.
fn changes(
    announced: &mut Files,
    settling: &mut Settling,
    now: &Files,
    at: Instant,
    settle: Duration,
) -> Vec<(EventKind, (String, String), Stamp)> {
    settling.retain(|id, _| now.contains_key(id));
    let mut out = Vec::new();
    for (id, stamp) in now {
        let since = match settling.get(id) {
            Some((seen, since)) if seen == stamp => *since,
            _ => {
                settling.insert(id.clone(), (*stamp, at));
                at
            }
        };
        if at.duration_since(since) >= settle && announced.get(id) != Some(stamp) {
            announced.insert(id.clone(), *stamp);
            out.push((EventKind::Created, id.clone(), *stamp));
        }
    }
    let gone: Vec<_> = announced
        .iter()
        .filter(|(id, _)| !now.contains_key(*id))
        .map(|(id, stamp)| (id.clone(), *stamp))
        .collect();
    for (id, stamp) in gone {
        announced.remove(&id);
        out.push((EventKind::Removed, id, stamp));
    }
    out
}

/// S3 encodes keys in notifications as form data: `%XX`, and `+` for a space.
const KEY_ENCODING: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/')
    .remove(b' ');

/// The S3 notification a bucket sends for `kind` of `bucket/key`.
fn notification(
    kind: EventKind,
    bucket: &str,
    key: &str,
    size: u64,
    etag: Option<String>,
    sequencer: u64,
) -> serde_json::Value {
    let encoded = utf8_percent_encode(key, KEY_ENCODING)
        .to_string()
        .replace(' ', "+");
    let mut object = json!({ "key": encoded, "sequencer": format!("{sequencer:016X}") });
    let name = match kind {
        EventKind::Removed => "ObjectRemoved:Delete",
        _ => {
            object["size"] = size.into();
            if let Some(etag) = etag {
                object["eTag"] = etag.into();
            }
            "ObjectCreated:Put"
        }
    };
    json!({ "Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "local",
        "eventTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "eventName": name,
        "userIdentity": { "principalId": "bucketfn-local-events" },
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": { "name": bucket, "arn": format!("arn:aws:s3:::{bucket}") },
            "object": object,
        },
    }]})
}

/// The watcher of a `serve --storage DIR`, until [`LocalEvents::stop`].
pub(crate) struct LocalEvents {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// What the watcher hands each event to.
pub(crate) struct Dispatch<H> {
    pub(crate) handler: Arc<H>,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) governor: Governor,
    pub(crate) observer: Observer,
    /// Each event's deadline, as a request's (`REQUEST_TIMEOUT_SECS`).
    pub(crate) timeout: Duration,
}

impl LocalEvents {
    /// Starts watching `root` for the buckets `sources` names (all with none or `*`).
    pub(crate) fn start<H: Handler>(
        root: PathBuf,
        sources: Option<&Sources>,
        settings: LocalEventSettings,
        dispatch: Dispatch<H>,
    ) -> Self {
        let scope = Scope::of(sources, dispatch.handler.as_ref());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(watch_dir(root, scope, settings, dispatch, stopped));
        Self { stop, task }
    }

    /// Stops looking, and waits for the events already handed over (each ends by its deadline).
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "The local events watcher failed.");
        }
    }
}

async fn watch_dir<H: Handler>(
    root: PathBuf,
    scope: Scope,
    settings: LocalEventSettings,
    dispatch: Dispatch<H>,
    mut stopped: watch::Receiver<bool>,
) {
    let dispatch = Arc::new(dispatch);
    let look = {
        let (root, scope, max) = (root.clone(), scope.clone(), settings.max_files);
        move || {
            let (root, scope) = (root.clone(), scope.clone());
            tokio::task::spawn_blocking(move || scan(&root, &scope, max))
        }
    };
    let mut announced = match look().await {
        Ok(Ok(files)) => files,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Local events are off: cannot look at the directory.");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "Local events are off.");
            return;
        }
    };
    tracing::info!(
        dir = %root.display(), files = announced.len(),
        interval_ms = settings.interval.as_millis() as u64,
        "Sending the directory's bucket events (LOCAL_EVENTS)."
    );
    let mut settling = Settling::new();
    let sequencer = AtomicU64::new(0);
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            () = tokio::time::sleep(settings.interval) => {}
        }
        let now = match look().await {
            Ok(Ok(files)) => files,
            Ok(Err(e @ ScanError::TooMany(_))) => {
                tracing::warn!(error = %e, "Local events stop.");
                break;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Cannot look at the directory; trying again.");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "Local events stop.");
                break;
            }
        };
        let found = changes(
            &mut announced,
            &mut settling,
            &now,
            Instant::now(),
            settings.settle,
        );
        for (kind, (bucket, key), stamp) in found {
            if !dispatch.handler.handles(kind) {
                continue;
            }
            let n = sequencer.fetch_add(1, Ordering::Relaxed);
            let dispatch = Arc::clone(&dispatch);
            in_flight
                .spawn(async move { announce(&dispatch, kind, &bucket, &key, stamp, n).await });
        }
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

async fn announce<H: Handler>(
    dispatch: &Dispatch<H>,
    kind: EventKind,
    bucket: &str,
    key: &str,
    stamp: Stamp,
    sequence: u64,
) {
    let etag = match kind {
        EventKind::Removed => None,
        _ => match dispatch.store.head(bucket, key).await {
            Ok(info) => info.etag,
            // Gone again already: its removal is the next look's.
            Err(_) => return,
        },
    };
    let nanos = stamp
        .modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let sequencer = nanos.wrapping_add(sequence);
    let value = notification(kind, bucket, key, stamp.size, etag, sequencer);
    let delivery = match decode_value(value) {
        Ok(delivery) => delivery,
        Err(e) => {
            tracing::error!(bucket, key, error = %e, "A local event does not decode.");
            return;
        }
    };
    let invocation = dispatch
        .governor
        .invocation(Some(Instant::now() + dispatch.timeout));
    process(
        &dispatch.handler,
        delivery,
        invocation,
        &dispatch.governor,
        &dispatch.observer,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(size: u64, secs: u64) -> Stamp {
        Stamp {
            size,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    fn id(key: &str) -> (String, String) {
        ("photos".to_owned(), key.to_owned())
    }

    #[test]
    fn a_file_is_announced_once_it_held_still_and_again_when_it_changes_or_goes() {
        let settle = Duration::from_secs(1);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut announced = Files::from([(id("old.jpg"), stamp(1, 1))]);
        let mut settling = Settling::new();
        let mut look = |announced: &mut Files, files: &Files, ms: u64| {
            changes(announced, &mut settling, files, at(ms), settle)
        };
        let growing = Files::from([(id("old.jpg"), stamp(1, 1)), (id("new.jpg"), stamp(10, 2))]);
        assert!(look(&mut announced, &growing, 0).is_empty());
        assert!(look(&mut announced, &growing, 900).is_empty());
        // Written again just before it would have settled: it starts over.
        let grown = Files::from([(id("old.jpg"), stamp(1, 1)), (id("new.jpg"), stamp(20, 3))]);
        assert!(look(&mut announced, &grown, 950).is_empty());
        assert!(look(&mut announced, &grown, 1900).is_empty());
        let created = look(&mut announced, &grown, 1950);
        assert_eq!(created, [(EventKind::Created, id("new.jpg"), stamp(20, 3))]);
        assert!(look(&mut announced, &grown, 3000).is_empty());
        let removed = Files::from([(id("new.jpg"), stamp(20, 3))]);
        let gone = look(&mut announced, &removed, 3100);
        assert_eq!(gone, [(EventKind::Removed, id("old.jpg"), stamp(1, 1))]);
        let rewritten = Files::from([(id("new.jpg"), stamp(5, 9))]);
        assert!(look(&mut announced, &rewritten, 3200).is_empty());
        let again = look(&mut announced, &rewritten, 4200);
        assert_eq!(again, [(EventKind::Created, id("new.jpg"), stamp(5, 9))]);
    }

    #[test]
    fn the_functions_own_and_hidden_files_and_other_buckets_are_not_announced() {
        let scope = Scope {
            buckets: Some(vec![("photos".to_owned(), "in/".to_owned())]),
            excluded: Some(("photos".to_owned(), "in/thumbnails/".to_owned())),
        };
        assert!(scope.announces("photos", "in/a cat.jpg"));
        assert!(scope.announces("photos", "in/2024/dog12345"));
        for (bucket, key) in [
            ("photos", "in/thumbnails/a.jpg/256.jpg"),
            ("photos", "in/.sweep/cursor.json"),
            ("photos", "out/a.jpg"),
            ("other", "in/a.jpg"),
        ] {
            assert!(!scope.announces(bucket, key), "{bucket}/{key}");
        }
    }

    #[test]
    fn the_notification_is_the_one_s3_sends_and_decodes_to_the_key()
    -> Result<(), Box<dyn std::error::Error>> {
        for key in ["a cat+dog 100%.jpg", "2024/é/dog12345", "x&y=z?.png"] {
            let value = notification(EventKind::Created, "photos", key, 7, Some("e1".into()), 1);
            let events = decode_value(value)?.into_events()?;
            let event = events.first().ok_or("no event")?;
            assert_eq!((event.kind, event.key.as_str()), (EventKind::Created, key));
            assert_eq!((event.size, event.etag.as_deref()), (Some(7), Some("e1")));
            let value = notification(EventKind::Removed, "photos", key, 0, None, 2);
            let events = decode_value(value)?.into_events()?;
            let event = events.first().ok_or("no event")?;
            assert_eq!((event.kind, event.key.as_str()), (EventKind::Removed, key));
        }
        Ok(())
    }
}
