//! What was forwarded, per object version: a small marker object per key and version under
//! `<CHECKPOINT_PREFIX>forwarded/` (content mode; `claimed/` for claim checks), written only
//! once the sink acknowledged, so that events and later passes never send a finished version
//! again and a large object resumes where it stopped.
//!
//! A marker's name holds the key and the version, `forwarded/<key> <version>` for a version
//! forwarded completely and `forwarded/<key> <version> partial` for one under way, so a listing
//! alone says what was forwarded: a pass reads no marker, it lists them beside its own walk.
//! The key is escaped so that marker names sort exactly as the keys do (see [`escape`]).

use std::collections::{BTreeSet, HashMap, VecDeque};

use bucketfn::ObjectPath;
use bucketfn::event::Shard;
use bucketfn::storage::{ListedObject, ObjectInfo};
use bucketfn::{Done, HandlerError, NewObject, ObjectStore, StoreError};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where markers live, under the checkpoint prefix: one folder per mode, because a published
/// claim and forwarded records are different facts (a deployment switched from claims to
/// content must still send the records of objects it announced).
pub fn dir(content: bool) -> &'static str {
    if content { "forwarded/" } else { "claimed/" }
}
/// The last word of a marker that holds the progress of a version under way.
const PARTIAL: &str = "partial";
/// S3's longest key, in bytes.
const MAX_KEY_BYTES: usize = 1024;
/// Markers are a few hundred bytes; anything larger is not one of ours.
const MAX_MARKER_BYTES: u64 = 16 * 1024;
/// Markers listed per request.
const PAGE: usize = 1000;

/// The version of an object that markers and dedupe ids name: the store's etag; without one,
/// size and last-modified time, which still tell versions apart.
pub fn version(etag: Option<&str>, size: u64, modified: Option<DateTime<Utc>>) -> String {
    etag.map_or_else(
        || format!("{size}-{}", modified.map_or(0, |t| t.timestamp_millis())),
        str::to_owned,
    )
}

/// The version of an object as the store describes it.
pub fn version_of(info: &ObjectInfo) -> String {
    version(info.etag.as_deref(), info.size, info.last_modified)
}

/// The version of an object as a listing describes it.
pub fn listed_version(object: &ListedObject) -> String {
    version(object.etag.as_deref(), object.size, object.last_modified)
}

/// Escapes `text` so that escaped texts sort exactly as the texts do (byte order, as S3 lists
/// keys) and hold no byte at or below `!`: the space that ends a key in a marker's name then
/// sorts below anything a longer key continues with, so that the markers of a key come right
/// after it and before the markers of every key it is a prefix of. Each byte up to `!` becomes
/// `!` and the byte plus 0x40; every other byte stays.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match u8::try_from(c) {
            Ok(b) if b <= b'!' => {
                escaped.push('!');
                escaped.push(char::from(b + 0x40));
            }
            _ => escaped.push(c),
        }
    }
    escaped
}

fn unescape(text: &str) -> Option<String> {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '!' {
            let b = u8::try_from(chars.next()?).ok()?.checked_sub(0x40)?;
            (b <= b'!').then_some(())?;
            plain.push(char::from(b));
        } else if c <= '!' {
            return None;
        } else {
            plain.push(c);
        }
    }
    Some(plain)
}

/// One marker, as its name describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The marker object's key.
    pub name: String,
    /// The key of the object it is about.
    pub key: String,
    pub version: String,
    /// The version is under way: the marker holds how many records the sink acknowledged.
    pub partial: bool,
}

impl Marker {
    /// The marker named `name`, or `None` for an object under the prefix that is not one.
    fn parse(base: &str, name: &str) -> Option<Self> {
        let mut words = name.strip_prefix(base)?.split(' ');
        let key = unescape(words.next()?)?;
        let version = unescape(words.next()?)?;
        let partial = match words.next() {
            None => false,
            Some(PARTIAL) => true,
            Some(_) => return None,
        };
        words.next().is_none().then_some(Self {
            name: name.to_owned(),
            key,
            version,
            partial,
        })
    }
}

/// The markers of one key, every version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub markers: Vec<Marker>,
}

impl Found {
    /// The marker that says `version` was forwarded completely.
    pub fn complete(&self, version: &str) -> Option<&Marker> {
        self.markers
            .iter()
            .find(|m| !m.partial && m.version == version)
    }

    pub fn any_complete(&self) -> bool {
        self.markers.iter().any(|m| !m.partial)
    }

    fn partial(&self, version: &str) -> Option<&Marker> {
        self.markers
            .iter()
            .find(|m| m.partial && m.version == version)
    }
}

/// What a marker holds, for people reading the bucket and for a resumed stream.
#[derive(Debug, Serialize, Deserialize)]
struct Content {
    key: String,
    version: String,
    complete: bool,
    /// Content mode: records the sink acknowledged, counted from the object's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    records: Option<u64>,
    updated: DateTime<Utc>,
}

/// A marker name that cannot be written.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} cannot be recorded as forwarded: its marker key would be {len} bytes, over the {MAX_KEY_BYTES} \
     a key may have (a shorter CHECKPOINT_PREFIX leaves more room)",
    ObjectPath(bucket, key)
)]
pub struct TooLong {
    bucket: String,
    key: String,
    len: usize,
}

/// The two markers one version may have, named before anything is sent, so that a version
/// whose markers could not be written is refused before it is forwarded rather than after.
#[derive(Debug, Clone)]
pub struct Target {
    key: String,
    version: String,
    complete: String,
    partial: String,
}

/// The markers of one bucket.
pub struct Markers<'a> {
    store: &'a dyn ObjectStore,
    bucket: &'a str,
    /// `<CHECKPOINT_PREFIX>forwarded/` or `claimed/`.
    base: String,
}

impl<'a> Markers<'a> {
    /// The markers under `<checkpoint_prefix><dir>` (see [`dir`]).
    pub fn new(
        store: &'a dyn ObjectStore,
        bucket: &'a str,
        checkpoint_prefix: &str,
        dir: &str,
    ) -> Self {
        Self {
            store,
            bucket,
            base: format!("{checkpoint_prefix}{dir}"),
        }
    }

    /// Where the markers of keys under `prefix` are listed.
    fn prefix_of(&self, prefix: &str) -> String {
        format!("{}{}", self.base, escape(prefix))
    }

    pub fn target(&self, key: &str, version: &str) -> Result<Target, HandlerError> {
        let complete = format!("{} {}", self.prefix_of(key), escape(version));
        let partial = format!("{complete} {PARTIAL}");
        if partial.len() > MAX_KEY_BYTES {
            return Err(HandlerError::permanent(TooLong {
                bucket: self.bucket.to_owned(),
                key: key.to_owned(),
                len: partial.len(),
            }));
        }
        Ok(Target {
            key: key.to_owned(),
            version: version.to_owned(),
            complete,
            partial,
        })
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<(Vec<Marker>, Option<String>, bool), StoreError> {
        let page = self.store.list(self.bucket, prefix, after, PAGE).await?;
        let last = page.objects.last().map(|o| o.key.clone());
        let markers = page
            .objects
            .iter()
            .filter_map(|o| Marker::parse(&self.base, &o.key))
            .collect();
        Ok((markers, last, page.more))
    }

    /// Every marker of `key`, in one listing (two for more versions than a page holds).
    pub async fn of_key(&self, key: &str) -> Result<Found, HandlerError> {
        // The space ends the key: no other key's markers start so (see `escape`).
        let prefix = format!("{} ", self.prefix_of(key));
        let mut found = Found::default();
        let mut after = None;
        loop {
            let (markers, last, more) = self.list(&prefix, after.as_deref()).await?;
            found
                .markers
                .extend(markers.into_iter().filter(|m| m.key == key));
            if !more || last.is_none() {
                return Ok(found);
            }
            after = last;
        }
    }

    /// How many records of `target`'s version the sink acknowledged, as its partial marker in
    /// `found` says: 0 without one, or with one that cannot be read (then records are sent
    /// again, which at least once allows).
    pub async fn acknowledged(&self, target: &Target, found: &Found) -> Result<u64, HandlerError> {
        let Some(marker) = found.partial(&target.version) else {
            return Ok(0);
        };
        let object = match self
            .store
            .get(self.bucket, &marker.name, MAX_MARKER_BYTES)
            .await
        {
            Ok(object) => object,
            Err(StoreError::NotFound { .. }) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let content: Option<Content> = serde_json::from_slice(&object.body).ok();
        Ok(content.and_then(|c| c.records).unwrap_or(0))
    }

    async fn write(&self, name: &str, content: &Content) -> Result<(), HandlerError> {
        let body = serde_json::to_vec(content).map_err(HandlerError::permanent)?;
        let object = NewObject {
            body: Bytes::from(body),
            content_type: "application/json".to_owned(),
            metadata: Default::default(),
        };
        Ok(self.store.put(self.bucket, name, object).await?)
    }

    /// Records that the sink acknowledged the first `records` records of `target`'s version.
    pub async fn save_progress(&self, target: &Target, records: u64) -> Result<(), HandlerError> {
        let content = Content {
            key: target.key.clone(),
            version: target.version.clone(),
            complete: false,
            records: Some(records),
            updated: Utc::now(),
        };
        self.write(&target.partial, &content).await
    }

    /// Records that `target`'s version was forwarded completely (`records`: how many, in
    /// content mode), and drops the other markers `found` holds (its progress, older versions).
    pub async fn complete(
        &self,
        target: &Target,
        records: Option<u64>,
        found: &Found,
    ) -> Result<(), HandlerError> {
        let content = Content {
            key: target.key.clone(),
            version: target.version.clone(),
            complete: true,
            records,
            updated: Utc::now(),
        };
        self.write(&target.complete, &content).await?;
        self.drop_all(found.markers.iter().filter(|m| m.name != target.complete))
            .await;
        Ok(())
    }

    /// Drops the markers of a version that is not the object's any more (or of a gone object).
    /// Only bookkeeping: a marker that stays costs a listing entry, so a failure is logged.
    pub async fn drop_all(&self, markers: impl Iterator<Item = &Marker>) {
        for marker in markers {
            if let Err(e) = self.store.delete(self.bucket, &marker.name).await {
                tracing::warn!(marker = %marker.name, error = %e, "A stale marker stays.");
                return;
            }
        }
    }

    /// Drops the markers of each of `groups` whose object is gone, asking the store (a HEAD) for
    /// each, until `stop` says time is up.
    pub async fn drop_orphans(&self, groups: Vec<Found>, stop: &bucketfn::budget::Stop) {
        for group in groups {
            let Some(key) = group.markers.first().map(|m| m.key.clone()) else {
                continue;
            };
            if stop.is_stopped() {
                return;
            }
            match self.store.head(self.bucket, &key).await {
                Err(StoreError::NotFound { .. }) => self.drop_all(group.markers.iter()).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "Markers of an object not seen stay.");
                    return;
                }
            }
        }
    }
}

/// The markers of a walk's keys, listed once alongside it: the walk hands out its objects in
/// key order and marker names sort the same way, so each page of markers is listed once and
/// matched with the objects it is about. Markers of keys the walk did not hand out (objects
/// that are gone, or that the walk passed over) come out as orphans, for
/// [`Markers::drop_orphans`] to check.
pub struct Alongside<'a> {
    markers: &'a Markers<'a>,
    prefix: String,
    /// Keys up to this one were handled by earlier runs of the pass.
    after: Option<String>,
    shard: Option<Shard>,
    /// Keys handed to the walk's objects and not looked up yet: registered in key order as the
    /// walk starts them, before any of their lookups runs, so that a lookup that runs ahead
    /// of an earlier one never takes that one's markers for orphans.
    expected: std::sync::Mutex<BTreeSet<String>>,
    listing: tokio::sync::Mutex<Listing>,
}

#[derive(Default)]
struct Listing {
    /// The last marker name listed.
    listed_after: Option<String>,
    more: bool,
    /// Listed, not yet handed out, in name order.
    pending: VecDeque<Marker>,
    /// Handed out to keys that are expected but not looked up yet.
    held: HashMap<String, Found>,
}

impl<'a> Alongside<'a> {
    /// The markers of the keys under `prefix` after `after` (and of `shard`'s keys only).
    pub fn new(
        markers: &'a Markers<'a>,
        prefix: &str,
        after: Option<&str>,
        shard: Option<Shard>,
    ) -> Self {
        let listed_after = after.map(|a| markers.prefix_of(a));
        Self {
            markers,
            prefix: markers.prefix_of(prefix),
            after: after.map(str::to_owned),
            shard,
            expected: std::sync::Mutex::default(),
            listing: tokio::sync::Mutex::new(Listing {
                listed_after,
                more: true,
                ..Listing::default()
            }),
        }
    }

    fn expected(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.expected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Called as the walk hands out `key`, in key order.
    pub fn expect(&self, key: &str) {
        self.expected().insert(key.to_owned());
    }

    /// The markers of `key`, and the orphans found before it.
    pub async fn lookup(&self, key: &str) -> Result<(Found, Vec<Found>), HandlerError> {
        let mut listing = self.listing.lock().await;
        let orphans = self.advance(&mut listing, Some(key)).await?;
        let found = listing.held.remove(key).unwrap_or_default();
        self.expected().remove(key);
        Ok((found, orphans))
    }

    /// The orphans after the last key the walk handed out, once the walk is finished.
    pub async fn rest(&self) -> Result<Vec<Found>, HandlerError> {
        let mut listing = self.listing.lock().await;
        self.advance(&mut listing, None).await
    }

    /// Hands out the markers up to `until`'s (to the end: `None`), listing as far as needed.
    async fn advance(
        &self,
        listing: &mut Listing,
        until: Option<&str>,
    ) -> Result<Vec<Found>, HandlerError> {
        let mut orphans: Vec<Found> = Vec::new();
        loop {
            while let Some(front) = listing.pending.front() {
                if until.is_some_and(|u| front.key.as_str() > u) {
                    return Ok(orphans);
                }
                let Some(marker) = listing.pending.pop_front() else {
                    break;
                };
                if self
                    .after
                    .as_deref()
                    .is_some_and(|a| marker.key.as_str() <= a)
                    || self.shard.is_some_and(|s| !s.owns(&marker.key))
                {
                    continue;
                }
                if self.expected().contains(&marker.key) {
                    let found = listing.held.entry(marker.key.clone()).or_default();
                    found.markers.push(marker);
                } else {
                    match orphans.last_mut() {
                        Some(group) if group.markers[0].key == marker.key => {
                            group.markers.push(marker);
                        }
                        _ => orphans.push(Found {
                            markers: vec![marker],
                        }),
                    }
                }
            }
            if !listing.more {
                return Ok(orphans);
            }
            let (markers, last, more) = self
                .markers
                .list(&self.prefix, listing.listed_after.as_deref())
                .await?;
            listing.pending.extend(markers);
            listing.more = more && last.is_some();
            listing.listed_after = last.or(listing.listed_after.take());
        }
    }
}

/// The answer for an object version that was forwarded already, if it was.
pub(crate) fn already(bucket: &str, key: &str, found: &Found, version: &str) -> Option<Done> {
    found.complete(version).map(|marker| {
        Done::Skipped(format!(
            "{} (version {version:?}) was forwarded already; delete {} to send it again",
            ObjectPath(bucket, key),
            ObjectPath(bucket, &marker.name)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucketfn::storage::MemoryStore;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn escaped_keys_sort_as_the_keys_and_come_back_unchanged() {
        let mut keys = vec![
            "a", "a b", "a!b", "a/b", "a-b", "a\u{1}", "ab", "a\"", "é", "a~", "", " ", "!",
        ];
        keys.sort_unstable();
        let escaped: Vec<String> = keys.iter().map(|k| escape(k)).collect();
        let mut sorted = escaped.clone();
        sorted.sort_unstable();
        assert_eq!(escaped, sorted);
        for (key, escaped) in keys.iter().zip(&escaped) {
            assert!(!escaped.bytes().any(|b| b < b'!'), "{escaped:?}");
            assert_eq!(unescape(escaped).as_deref(), Some(*key));
        }
        // A key's markers sort before those of the keys it is a prefix of.
        let markers = |key: &str| format!("{} v", escape(key));
        assert!(markers("a") < markers("a b") && markers("a b") < markers("a!b"));
        assert!(markers("a") < markers("a\u{1}"));
        assert_eq!(unescape("a b"), None);
        assert_eq!(unescape("a!"), None);
    }

    #[test]
    fn names_say_key_version_and_progress_and_foreign_names_are_not_markers() {
        let base = ".f/forwarded/";
        let parsed = Marker::parse(base, ".f/forwarded/vpc/a!`b.log abc partial");
        assert_eq!(
            parsed.map(|m| (m.key, m.version, m.partial)),
            Some(("vpc/a b.log".to_owned(), "abc".to_owned(), true))
        );
        for foreign in [
            ".f/forwarded/a",
            ".f/forwarded/a v other",
            ".f/forwarded/a v partial x",
            ".f/sweep.json",
        ] {
            assert_eq!(Marker::parse(base, foreign), None, "{foreign}");
        }
    }

    #[tokio::test]
    async fn a_completed_version_drops_its_progress_and_older_versions() -> TestResult {
        let store = MemoryStore::new();
        let markers = Markers::new(&store, "b", ".f/", dir(true));
        let (old, new) = (markers.target("k", "v1")?, markers.target("k", "v2")?);
        markers.complete(&old, None, &Found::default()).await?;
        markers.save_progress(&new, 40).await?;
        // Another key that starts with this one keeps its own.
        markers
            .complete(&markers.target("k2", "v1")?, None, &Found::default())
            .await?;
        let found = markers.of_key("k").await?;
        assert_eq!(found.markers.len(), 2);
        assert!(found.complete("v1").is_some() && found.complete("v2").is_none());
        assert_eq!(markers.acknowledged(&new, &found).await?, 40);
        markers.complete(&new, Some(90), &found).await?;
        let found = markers.of_key("k").await?;
        assert_eq!(found.markers.len(), 1, "{found:?}");
        assert!(found.complete("v2").is_some());
        assert_eq!(markers.of_key("k2").await?.markers.len(), 1);
        Ok(())
    }

    #[test]
    fn a_key_too_long_for_its_marker_is_refused_permanently() -> TestResult {
        let store = MemoryStore::new();
        let markers = Markers::new(&store, "b", ".f/", dir(true));
        let err = markers
            .target(&"k".repeat(1010), "v")
            .err()
            .ok_or("a marker over 1024 bytes")?;
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("over the 1024"), "{err}");
        Ok(())
    }

    #[tokio::test]
    async fn alongside_a_walk_each_key_gets_its_markers_and_the_rest_are_orphans() -> TestResult {
        let store = MemoryStore::new();
        let markers = Markers::new(&store, "b", ".f/", dir(true));
        for key in ["in/a", "in/b", "in/b c", "in/c", "in/d", "out/x"] {
            markers
                .complete(&markers.target(key, "v")?, None, &Found::default())
                .await?;
        }
        let alongside = Alongside::new(&markers, "in/", Some("in/a"), None);
        // The walk hands out b and d; d is looked up first.
        alongside.expect("in/b");
        alongside.expect("in/d");
        let (d, orphans) = alongside.lookup("in/d").await?;
        assert_eq!(d.markers.len(), 1);
        let orphan_keys: Vec<&str> = orphans.iter().map(|g| g.markers[0].key.as_str()).collect();
        assert_eq!(orphan_keys, ["in/b c", "in/c"]);
        let (b, orphans) = alongside.lookup("in/b").await?;
        assert_eq!(b.markers[0].key, "in/b");
        assert!(orphans.is_empty());
        assert!(alongside.rest().await?.is_empty());
        Ok(())
    }
}
