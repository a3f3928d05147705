//! One lease on one object in the store: a JSON object that says who holds it and until when.
//! It is created only where absent and changed only by compare-and-swap on the etag read before,
//! and read back after every write, so two holders never both believe they hold it, and a
//! crashed holder's lease is taken over once it has expired. sidecar-on-create's claims and
//! forward-to-stream's catch-up checkpoint both hold theirs through this.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ObjectPath;
use crate::{Condition, HandlerError, NewObject, ObjectStore, StoreError};

/// Leased objects are small; anything larger is not one of ours.
const MAX_LEASED_BYTES: u64 = 64 * 1024;

/// Who holds a lease, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Read under its earlier name too: sidecar-on-create's claims wrote `owner`.
    #[serde(alias = "owner")]
    pub holder: String,
    /// Read under its earlier name too: sidecar-on-create's claims wrote `until`.
    #[serde(alias = "until")]
    pub expires: DateTime<Utc>,
}

/// The content of a leased object: what it keeps, and the lease it carries.
pub trait Leased: Serialize + DeserializeOwned + Clone + PartialEq {
    fn lease(&self) -> Option<&Lease>;
    fn set_lease(&mut self, lease: Option<Lease>);
}

/// What an unreadable object (not the JSON of its type) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// It is kept, and taking the lease fails permanently, naming it: it holds state that must
    /// not be lost by being overwritten.
    Refuse,
    /// It counts as an expired lease and is taken over: it holds nothing but the lease.
    Expired,
}

/// A lease this process holds: the content it wrote, and the etag the next write must find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held<T> {
    pub state: T,
    etag: String,
    holder: String,
}

/// What an attempt to take the lease found.
#[derive(Debug)]
pub enum Taken<T> {
    Held(Held<T>),
    /// Another holder's lease has not expired (`None`: another took it first, or freed it in
    /// between).
    Busy(Option<Lease>),
}

/// A leased object that cannot be used as one.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} {} is not usable: {reason}", ObjectPath(bucket, key))]
    Unusable {
        what: &'static str,
        bucket: String,
        key: String,
        reason: String,
    },
}

impl From<LeaseError> for HandlerError {
    fn from(error: LeaseError) -> Self {
        match error {
            LeaseError::Store(e) => e.into(),
            unusable @ LeaseError::Unusable { .. } => Self::permanent(unusable),
        }
    }
}

/// A holder name unique to this process and call: host, process id, time, counter.
pub fn new_holder() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Read once: a claim takes a holder name per event.
    static HOST: LazyLock<String> = LazyLock::new(|| {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").ok())
            .unwrap_or_else(|| "local".to_owned())
    });
    format!(
        "{}/{}/{}/{}",
        *HOST,
        std::process::id(),
        Utc::now().timestamp_micros(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The object as found: its content (the reason when unreadable) and etag.
struct Found<T> {
    state: Result<T, String>,
    etag: Option<String>,
}

/// One leased object in the store.
pub struct LeasedObject<'a> {
    pub store: &'a dyn ObjectStore,
    pub bucket: &'a str,
    pub key: String,
    /// How long a lease holds before another may take it over.
    pub term: Duration,
    /// What the object is, for messages: `checkpoint`, `claim lease`.
    pub what: &'static str,
    pub unreadable: Unreadable,
}

impl LeasedObject<'_> {
    fn unusable(&self, reason: impl Into<String>) -> LeaseError {
        LeaseError::Unusable {
            what: self.what,
            bucket: self.bucket.to_owned(),
            key: self.key.clone(),
            reason: reason.into(),
        }
    }

    /// The content and its etag, or `None` when there is none yet; unreadable content is an
    /// error whatever [`Unreadable`] says.
    pub async fn read<T: Leased>(&self) -> Result<Option<(T, String)>, LeaseError> {
        let Some(found) = self.find::<T>().await? else {
            return Ok(None);
        };
        let state = found
            .state
            .map_err(|reason| self.unusable(format!("{reason} (delete it to start afresh)")))?;
        let etag = found
            .etag
            .ok_or_else(|| self.unusable("the store gave it no etag"))?;
        Ok(Some((state, etag)))
    }

    /// Takes the lease if there is none, if it is ours, or if it has expired. `next` makes the
    /// content to write from the current one (`None` when there is none, or it is unreadable
    /// and counts as expired); the lease is set on it.
    pub async fn acquire<T: Leased>(
        &self,
        holder: &str,
        next: impl FnOnce(Option<T>) -> T,
    ) -> Result<Taken<T>, LeaseError> {
        let now = Utc::now();
        let (current, condition) = match self.find::<T>().await? {
            None => (None, Condition::Absent),
            Some(found) => {
                let etag = found
                    .etag
                    .ok_or_else(|| self.unusable("the store gave it no etag"))?;
                match found.state {
                    Ok(state) => {
                        if let Some(lease) = state.lease()
                            && lease.holder != holder
                            && lease.expires > now
                        {
                            return Ok(Taken::Busy(Some(lease.clone())));
                        }
                        (Some(state), Condition::EtagIs(etag))
                    }
                    Err(reason) => match self.unreadable {
                        Unreadable::Expired => (None, Condition::EtagIs(etag)),
                        Unreadable::Refuse => {
                            return Err(
                                self.unusable(format!("{reason} (delete it to start afresh)"))
                            );
                        }
                    },
                }
            }
        };
        let mut state = next(current);
        state.set_lease(Some(Lease {
            holder: holder.to_owned(),
            expires: now + self.term,
        }));
        match self.write(&state, condition).await? {
            Some(etag) => Ok(Taken::Held(Held {
                state,
                etag,
                holder: holder.to_owned(),
            })),
            None => Ok(Taken::Busy(
                self.find::<T>()
                    .await?
                    .and_then(|found| found.state.ok())
                    .and_then(|state| state.lease().cloned()),
            )),
        }
    }

    /// Saves `update` of the content and renews the lease, or gives it up (`keep: false`).
    /// `false` when the lease was lost to another holder, whose content then stays.
    pub async fn save<T: Leased>(
        &self,
        held: &mut Held<T>,
        update: impl FnOnce(&mut T),
        keep: bool,
    ) -> Result<bool, LeaseError> {
        let mut next = held.state.clone();
        update(&mut next);
        next.set_lease(keep.then(|| Lease {
            holder: held.holder.clone(),
            expires: Utc::now() + self.term,
        }));
        match self
            .write(&next, Condition::EtagIs(held.etag.clone()))
            .await?
        {
            Some(etag) => {
                held.state = next;
                held.etag = etag;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Deletes the object while it is still the one `held` wrote, so that a holder whose lease
    /// expired and was taken over never frees the new holder's. `false` when it was left alone;
    /// an object already gone is removed.
    pub async fn remove<T: Leased>(&self, held: &Held<T>) -> Result<bool, LeaseError> {
        let Some(found) = self.find::<T>().await? else {
            return Ok(true);
        };
        if found.state.as_ref().ok() != Some(&held.state)
            || found.etag.as_deref() != Some(held.etag.as_str())
        {
            return Ok(false);
        }
        match self
            .store
            .delete_if(self.bucket, &self.key, Condition::EtagIs(held.etag.clone()))
            .await
        {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes under `condition`; the new etag, or `None` when the condition failed. The etag is
    /// read back with the content, and the content must be ours: a writer that slipped in
    /// between means the lease is not ours either.
    async fn write<T: Leased>(
        &self,
        state: &T,
        condition: Condition,
    ) -> Result<Option<String>, LeaseError> {
        let body = serde_json::to_vec_pretty(state)
            .map_err(|e| self.unusable(format!("cannot serialize: {e}")))?;
        let object = NewObject {
            body: Bytes::from(body),
            content_type: "application/json".to_owned(),
            metadata: Default::default(),
        };
        match self
            .store
            .put_if(self.bucket, &self.key, object, condition)
            .await
        {
            Ok(()) => {}
            Err(StoreError::ConditionFailed { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        Ok(match self.find::<T>().await? {
            Some(Found {
                state: Ok(stored),
                etag: Some(etag),
            }) if stored == *state => Some(etag),
            _ => None,
        })
    }

    async fn find<T: Leased>(&self) -> Result<Option<Found<T>>, LeaseError> {
        match self
            .store
            .get(self.bucket, &self.key, MAX_LEASED_BYTES)
            .await
        {
            Ok(object) => Ok(Some(Found {
                state: serde_json::from_slice(&object.body).map_err(|e| e.to_string()),
                etag: object.info.etag,
            })),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// An object that is only a lease, as a claim's is.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Bare(Option<Lease>);

    impl Leased for Bare {
        fn lease(&self) -> Option<&Lease> {
            self.0.as_ref()
        }
        fn set_lease(&mut self, lease: Option<Lease>) {
            self.0 = lease;
        }
    }

    fn object(store: &MemoryStore, unreadable: Unreadable) -> LeasedObject<'_> {
        LeasedObject {
            store,
            bucket: "b",
            key: "lease".into(),
            term: Duration::from_secs(60),
            what: "test lease",
            unreadable,
        }
    }

    #[tokio::test]
    async fn unreadable_content_is_refused_or_taken_over_as_the_object_says() -> TestResult {
        let store = MemoryStore::new();
        store.insert("b", "lease", &b"garbage"[..], "text/plain");
        let err = object(&store, Unreadable::Refuse)
            .acquire("a", |_| Bare(None))
            .await
            .err()
            .ok_or("garbage was overwritten")?;
        assert!(
            err.to_string()
                .starts_with("test lease b/lease is not usable"),
            "{err}"
        );
        assert!(!HandlerError::from(err).is_retryable());
        assert_eq!(
            store.object("b", "lease").map(|o| o.body),
            Some(Bytes::from_static(b"garbage"))
        );

        let Taken::Held(held) = object(&store, Unreadable::Expired)
            .acquire("a", |_| Bare(None))
            .await?
        else {
            return Err("an unreadable lease was not taken over".into());
        };
        assert_eq!(held.state.lease().map(|l| l.holder.as_str()), Some("a"));
        Ok(())
    }

    #[tokio::test]
    async fn a_lease_in_the_claims_earlier_form_is_read() -> TestResult {
        let store = MemoryStore::new();
        let until = Utc::now() + chrono::Duration::minutes(5);
        let earlier = format!(
            r#"{{"owner": "pid 7 #0", "until": "{}"}}"#,
            until.to_rfc3339()
        );
        store.insert("b", "lease", earlier.into_bytes(), "application/json");
        let Taken::Busy(Some(lease)) = object(&store, Unreadable::Expired)
            .acquire("a", |_| Bare(None))
            .await?
        else {
            return Err("a live lease in the earlier form was taken".into());
        };
        assert_eq!((lease.holder.as_str(), lease.expires), ("pid 7 #0", until));
        Ok(())
    }
}
