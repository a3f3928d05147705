//! Idempotency: small claim objects in the store, written with atomic conditional writes, so
//! that a duplicated, redelivered or concurrent create event yields one PID, one sidecar and
//! one message.
//!
//! For each object version (bucket, key, etag) a folder `<CLAIM_PREFIX><sha-256>/` holds:
//! - `lease`: who is archiving it and until when (`put_if` absent; taken over with `put_if`
//!   etag once expired, so a crashed worker's claim frees itself);
//! - `pid`: the PID, written once (`put_if` absent) before it is used anywhere, so every retry
//!   after a partial failure (FTP or broker down) reuses it;
//! - `done`: written after the broker confirmed the message; its presence makes later
//!   deliveries skip.
//!
//! The one window left: a crash after the broker confirmed and before `done` is written makes
//! the retry publish the same request again (same PID, destination and correlation id, so the
//! file-transfer service writes the same file twice).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bucketfn::config::Env;
use bucketfn::{Condition, NewObject, ObjectStore, StoreError};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Claims are tiny; anything larger is not ours.
const MAX_CLAIM_BYTES: u64 = 64 * 1024;

/// Where claims live and how long a lease holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimSettings {
    /// `CLAIM_BUCKET`: the bucket of the claims; the event's bucket when unset.
    pub bucket: Option<String>,
    /// `CLAIM_PREFIX`: the key prefix of the claims; events for keys under it are skipped.
    pub prefix: String,
    /// `CLAIM_LEASE_SECS`: how long a claim stays another delivery's before it may be taken
    /// over; longer than one event takes (FTP and broker time limits together).
    pub lease: Duration,
}

impl ClaimSettings {
    pub fn read(env: &mut Env) -> Self {
        let bucket = env.optional("CLAIM_BUCKET");
        let prefix: String = env.or(
            "CLAIM_PREFIX",
            ".bucketfn-claims/sidecar-on-create/".to_owned(),
        );
        if prefix.starts_with('/') || !prefix.ends_with('/') {
            env.problem(
                "CLAIM_PREFIX",
                "must not start with `/` and must end with `/`",
            );
        }
        let secs: u64 = env.or("CLAIM_LEASE_SECS", 300);
        if secs == 0 {
            env.problem("CLAIM_LEASE_SECS", "must be at least 1");
        }
        Self {
            bucket,
            prefix,
            lease: Duration::from_secs(secs.max(1)),
        }
    }
}

/// The claim folder of one object version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    bucket: String,
    dir: String,
}

impl Claim {
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.dir)
    }

    /// A stable id of the object version, for correlation when the event has none.
    pub fn id(&self) -> &str {
        self.dir
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(&self.dir)
    }
}

/// What the `done` marker records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub bucket: String,
    pub key: String,
    pub pid: String,
    pub sidecar: String,
    pub at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct Lease {
    owner: String,
    until: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct Pid {
    pid: String,
}

/// The outcome of asking for the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Mine,
    /// Another delivery holds it until then.
    Busy(DateTime<Utc>),
}

/// The claim store.
pub struct Claims {
    store: Arc<dyn ObjectStore>,
    settings: ClaimSettings,
}

impl Claims {
    pub fn new(store: Arc<dyn ObjectStore>, settings: ClaimSettings) -> Self {
        Self { store, settings }
    }

    /// True for the claims themselves (the loop guard: never archive a claim).
    pub fn is_claim(&self, bucket: &str, key: &str) -> bool {
        self.settings.bucket.as_deref().is_none_or(|b| b == bucket)
            && key.starts_with(&self.settings.prefix)
    }

    pub fn locate(&self, bucket: &str, key: &str, etag: Option<&str>) -> Claim {
        let mut hash = Sha256::new();
        for part in [bucket, key, etag.unwrap_or("")] {
            // Length-prefixed so that no two (bucket, key, etag) triples hash alike.
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Claim {
            bucket: self
                .settings
                .bucket
                .clone()
                .unwrap_or_else(|| bucket.to_owned()),
            dir: format!("{}{hex}/", self.settings.prefix),
        }
    }

    /// The `done` marker, if an earlier delivery finished.
    pub async fn done(&self, claim: &Claim) -> Result<Option<Done>, StoreError> {
        self.read(claim, "done").await
    }

    /// Takes the lease, or takes it over from a delivery whose lease ran out.
    pub async fn acquire(&self, claim: &Claim) -> Result<Acquired, StoreError> {
        let key = claim.key("lease");
        // Twice: a lease released between our failed write and our read is simply free.
        for _ in 0..2 {
            let lease = self.lease_object()?;
            match self
                .store
                .put_if(&claim.bucket, &key, lease, Condition::Absent)
                .await
            {
                Ok(()) => return Ok(Acquired::Mine),
                Err(StoreError::ConditionFailed { .. }) => {}
                Err(e) => return Err(e),
            }
            let current = match self.store.get(&claim.bucket, &key, MAX_CLAIM_BYTES).await {
                Ok(current) => current,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            // An unreadable lease is treated as expired rather than blocking forever.
            let until = serde_json::from_slice::<Lease>(&current.body).map(|l| l.until);
            if let Ok(until) = until
                && until > Utc::now()
            {
                return Ok(Acquired::Busy(until));
            }
            let Some(etag) = current.info.etag else {
                return Ok(Acquired::Busy(Utc::now()));
            };
            let lease = self.lease_object()?;
            return match self
                .store
                .put_if(&claim.bucket, &key, lease, Condition::EtagIs(etag))
                .await
            {
                Ok(()) => Ok(Acquired::Mine),
                Err(StoreError::ConditionFailed { .. }) => Ok(Acquired::Busy(Utc::now())),
                Err(e) => Err(e),
            };
        }
        Ok(Acquired::Busy(Utc::now()))
    }

    /// The PID an earlier attempt recorded.
    pub async fn pid(&self, claim: &Claim) -> Result<Option<String>, StoreError> {
        Ok(self.read::<Pid>(claim, "pid").await?.map(|p| p.pid))
    }

    /// Records the PID before it is used; if one is there already, that one wins.
    pub async fn keep_pid(&self, claim: &Claim, pid: &str) -> Result<String, StoreError> {
        let object = json_object(&Pid {
            pid: pid.to_owned(),
        })?;
        let key = claim.key("pid");
        match self
            .store
            .put_if(&claim.bucket, &key, object, Condition::Absent)
            .await
        {
            Ok(()) => Ok(pid.to_owned()),
            Err(StoreError::ConditionFailed { .. }) => match self.pid(claim).await? {
                Some(existing) => Ok(existing),
                None => Err(StoreError::NotFound {
                    bucket: claim.bucket.clone(),
                    key,
                }),
            },
            Err(e) => Err(e),
        }
    }

    /// Marks the object archived, then frees the lease (in that order, so that a delivery
    /// that takes the freed lease sees the marker).
    pub async fn finish(&self, claim: &Claim, done: &Done) -> Result<(), StoreError> {
        self.store
            .put(&claim.bucket, &claim.key("done"), json_object(done)?)
            .await?;
        self.release(claim).await
    }

    /// Frees the lease so that a retry need not wait for it to expire.
    pub async fn release(&self, claim: &Claim) -> Result<(), StoreError> {
        self.store.delete(&claim.bucket, &claim.key("lease")).await
    }

    fn lease_object(&self) -> Result<NewObject, StoreError> {
        let lease_for = chrono::Duration::from_std(self.settings.lease)
            .unwrap_or_else(|_| chrono::Duration::minutes(5));
        json_object(&Lease {
            owner: owner_id(),
            until: Utc::now() + lease_for,
        })
    }

    async fn read<T: for<'de> Deserialize<'de>>(
        &self,
        claim: &Claim,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        let key = claim.key(name);
        match self.store.get(&claim.bucket, &key, MAX_CLAIM_BYTES).await {
            Ok(object) => {
                serde_json::from_slice(&object.body)
                    .map(Some)
                    .map_err(|e| StoreError::Rejected {
                        op: bucketfn::storage::Op::Get,
                        bucket: claim.bucket.clone(),
                        key,
                        source: format!("the claim is not valid JSON: {e}").into(),
                    })
            }
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn json_object<T: Serialize>(value: &T) -> Result<NewObject, StoreError> {
    let body = serde_json::to_vec(value).map_err(|e| StoreError::Rejected {
        op: bucketfn::storage::Op::Put,
        bucket: String::new(),
        key: String::new(),
        source: Box::new(e),
    })?;
    Ok(NewObject {
        body: Bytes::from(body),
        content_type: "application/json".to_owned(),
        metadata: Default::default(),
    })
}

/// Who holds a lease, for people reading it: process and a per-process counter.
fn owner_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "pid {} #{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucketfn::storage::MemoryStore;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn claims_with(lease: Duration) -> (Arc<MemoryStore>, Claims) {
        let store = Arc::new(MemoryStore::new());
        let settings = ClaimSettings {
            bucket: None,
            prefix: "claims/".to_owned(),
            lease,
        };
        (store.clone(), Claims::new(store, settings))
    }

    #[tokio::test]
    async fn a_held_lease_is_busy_and_an_expired_one_is_taken_over() -> TestResult {
        let (_, claims) = claims_with(Duration::from_secs(60));
        let claim = claims.locate("b", "k", Some("e1"));
        assert_eq!(claims.acquire(&claim).await?, Acquired::Mine);
        assert!(matches!(claims.acquire(&claim).await?, Acquired::Busy(_)));

        let (store, short) = claims_with(Duration::from_millis(1));
        let claim = short.locate("b", "k", Some("e1"));
        assert_eq!(short.acquire(&claim).await?, Acquired::Mine);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(short.acquire(&claim).await?, Acquired::Mine);
        assert_eq!(store.keys().len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn the_first_recorded_pid_wins() -> TestResult {
        let (_, claims) = claims_with(Duration::from_secs(60));
        let claim = claims.locate("b", "k", None);
        assert_eq!(claims.pid(&claim).await?, None);
        assert_eq!(claims.keep_pid(&claim, "aaaaaaaaaa").await?, "aaaaaaaaaa");
        assert_eq!(claims.keep_pid(&claim, "bbbbbbbbbb").await?, "aaaaaaaaaa");
        assert_eq!(claims.pid(&claim).await?.as_deref(), Some("aaaaaaaaaa"));
        Ok(())
    }

    #[tokio::test]
    async fn finishing_leaves_the_marker_and_frees_the_lease() -> TestResult {
        let (store, claims) = claims_with(Duration::from_secs(60));
        let claim = claims.locate("b", "k", Some("e"));
        claims.acquire(&claim).await?;
        let done = Done {
            bucket: "b".into(),
            key: "k".into(),
            pid: "aaaaaaaaaa".into(),
            sidecar: "/CP/F/aaaaaaaaaa.xml".into(),
            at: Utc::now(),
        };
        claims.finish(&claim, &done).await?;
        assert_eq!(claims.done(&claim).await?, Some(done));
        let keys: Vec<String> = store.keys().into_iter().map(|(_, k)| k).collect();
        assert_eq!(keys, [format!("{}done", claim.dir)]);
        Ok(())
    }

    #[test]
    fn versions_and_buckets_get_their_own_claims_and_claims_are_recognised() {
        let (_, claims) = claims_with(Duration::from_secs(60));
        let a = claims.locate("b", "k", Some("e1"));
        assert_ne!(a, claims.locate("b", "k", Some("e2")));
        assert_ne!(
            claims.locate("b", "k/x", None),
            claims.locate("b/k", "x", None)
        );
        assert!(claims.is_claim("b", &a.key("lease")));
        assert!(!claims.is_claim("b", "k"));
    }
}
