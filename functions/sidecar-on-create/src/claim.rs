//! Idempotency: small claim objects in the store, written with atomic conditional writes, so
//! that a duplicated, redelivered or concurrent create event yields one PID, one sidecar and
//! one message.
//!
//! For each object version (bucket, key, etag) a folder `<CLAIM_PREFIX><sha-256>/` holds:
//! - `lease`: who is archiving it and until when, a [`bucketfn::lease`]: taken over once
//!   expired, so a crashed worker's claim frees itself, and released only while it is still
//!   the one its holder wrote, so a delivery whose lease expired and was taken over never
//!   frees the lease of the one that took it;
//! - `pid`: the PID, written once (`put_if` absent) before it is used anywhere, so every retry
//!   after a partial failure (FTP or broker down) reuses it;
//! - `done`: written after the broker confirmed the message; its presence makes later
//!   deliveries skip.
//!
//! The one window left: a crash after the broker confirmed and before `done` is written makes
//! the retry publish the same request again (same PID, destination and correlation id, so the
//! file-transfer service writes the same file twice).

use std::sync::Arc;
use std::time::Duration;

use bucketfn::ObjectPath;
use bucketfn::config::Env;
use bucketfn::lease::{Lease, LeaseError, Leased, LeasedObject, Taken, Unreadable, new_holder};
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

/// The `lease` object: nothing but the lease, so an unreadable one counts as expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimLease(Option<Lease>);

impl Leased for ClaimLease {
    fn lease(&self) -> Option<&Lease> {
        self.0.as_ref()
    }
    fn set_lease(&mut self, lease: Option<Lease>) {
        self.0 = lease;
    }
}

/// A lease this delivery wrote: what a release must find.
pub type Held = bucketfn::lease::Held<ClaimLease>;

#[derive(Serialize, Deserialize)]
struct Pid {
    pid: String,
}

/// The outcome of asking for the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Mine(Held),
    /// Another delivery holds it (`None`: took it first, or freed it in between).
    Busy(Option<Lease>),
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
    pub async fn acquire(&self, claim: &Claim) -> Result<Acquired, LeaseError> {
        let taken = self
            .lease(claim)
            .acquire(&new_holder(), |_| ClaimLease(None))
            .await?;
        Ok(match taken {
            Taken::Held(held) => Acquired::Mine(held),
            Taken::Busy(lease) => Acquired::Busy(lease),
        })
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

    /// Marks the object archived; the lease is released after it, so that a delivery that
    /// takes the freed lease sees the marker.
    pub async fn finish(&self, claim: &Claim, done: &Done) -> Result<(), StoreError> {
        self.store
            .put(&claim.bucket, &claim.key("done"), json_object(done)?)
            .await
    }

    /// Frees the lease so that a retry need not wait for it to expire, only while it is still
    /// the one `held` names: a lease taken over since is the new holder's and stays.
    pub async fn release(&self, claim: &Claim, held: &Held) -> Result<(), LeaseError> {
        let lease = self.lease(claim);
        if !lease.remove(held).await? {
            tracing::info!(
                lease = %ObjectPath(&claim.bucket, &lease.key),
                "Lease left alone: another delivery has taken it over."
            );
        }
        Ok(())
    }

    fn lease<'a>(&'a self, claim: &'a Claim) -> LeasedObject<'a> {
        LeasedObject {
            store: self.store.as_ref(),
            bucket: &claim.bucket,
            key: claim.key("lease"),
            term: self.settings.lease,
            what: "claim lease",
            unreadable: Unreadable::Expired,
        }
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
        assert!(matches!(claims.acquire(&claim).await?, Acquired::Mine(_)));
        assert!(matches!(claims.acquire(&claim).await?, Acquired::Busy(_)));

        let (store, short) = claims_with(Duration::from_millis(1));
        let claim = short.locate("b", "k", Some("e1"));
        assert!(matches!(short.acquire(&claim).await?, Acquired::Mine(_)));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(matches!(short.acquire(&claim).await?, Acquired::Mine(_)));
        assert_eq!(store.keys().len(), 1);
        Ok(())
    }

    fn mine(acquired: Acquired) -> Result<Held, Box<dyn std::error::Error>> {
        match acquired {
            Acquired::Mine(held) => Ok(held),
            Acquired::Busy(lease) => Err(format!("busy: {lease:?}").into()),
        }
    }

    #[tokio::test]
    async fn a_lease_taken_over_is_not_released_by_its_first_holder() -> TestResult {
        let store = Arc::new(MemoryStore::new());
        let holder = |lease_ms: u64| {
            let settings = ClaimSettings {
                bucket: None,
                prefix: "claims/".to_owned(),
                lease: Duration::from_millis(lease_ms),
            };
            Claims::new(Arc::clone(&store) as Arc<dyn ObjectStore>, settings)
        };
        let (first, second) = (holder(20), holder(60_000));
        let claim = first.locate("b", "k", Some("e1"));
        let first_held = mine(first.acquire(&claim).await?)?;
        // The first delivery stalls past its lease; the second takes the lease over.
        tokio::time::sleep(Duration::from_millis(40)).await;
        let second_held = mine(second.acquire(&claim).await?)?;
        assert_ne!(first_held, second_held);

        let lease_key = claim.key("lease");
        let lease_now = || store.object("b", &lease_key).map(|o| o.body);
        let taken_over = lease_now().ok_or("no lease")?;
        first.release(&claim, &first_held).await?;
        assert_eq!(lease_now(), Some(taken_over));
        assert!(matches!(first.acquire(&claim).await?, Acquired::Busy(_)));

        second.release(&claim, &second_held).await?;
        assert_eq!(lease_now(), None);
        // Releasing a lease that is gone already is no error.
        second.release(&claim, &second_held).await?;
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_claim_bucket_is_an_error_not_an_absent_claim() -> TestResult {
        let (store, claims) = claims_with(Duration::from_secs(60));
        let claim = claims.locate("b", "k", Some("e1"));
        let held = mine(claims.acquire(&claim).await?)?;
        store.remove_bucket("b");
        for result in [
            claims
                .done(&claim)
                .await
                .map(|_| ())
                .map_err(LeaseError::from),
            claims
                .pid(&claim)
                .await
                .map(|_| ())
                .map_err(LeaseError::from),
            claims.acquire(&claim).await.map(|_| ()),
            claims.release(&claim, &held).await,
        ] {
            assert!(
                matches!(
                    result,
                    Err(LeaseError::Store(StoreError::NoSuchBucket { ref bucket })) if bucket == "b"
                ),
                "{result:?}"
            );
        }
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
    async fn finishing_then_releasing_leaves_only_the_marker() -> TestResult {
        let (store, claims) = claims_with(Duration::from_secs(60));
        let claim = claims.locate("b", "k", Some("e"));
        let held = mine(claims.acquire(&claim).await?)?;
        let done = Done {
            bucket: "b".into(),
            key: "k".into(),
            pid: "aaaaaaaaaa".into(),
            sidecar: "/CP/F/aaaaaaaaaa.xml".into(),
            at: Utc::now(),
        };
        claims.finish(&claim, &done).await?;
        claims.release(&claim, &held).await?;
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
