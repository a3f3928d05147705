//! sidecar-on-create: when a media file lands in a bucket, archive it in MediaHaven: a PID, an
//! XML sidecar put on the transport server over FTP, and a file-transfer request published
//! over AMQP, once per object version however often the event arrives.

pub mod claim;
mod config;
pub mod ftp;
pub mod services;
pub mod sidecar;
pub mod subject;

use std::sync::Arc;

use bucketfn::ObjectPath;
use bucketfn::api::ApiError;
use bucketfn::api::mediahaven::{MediaHaven, Query, Record};
use bucketfn::outcome::BoxError;
use bucketfn::sink::amqp::AmqpPublisher;
use bucketfn::sink::{Message, Publisher};
use bucketfn::storage::ensure_readable;
use bucketfn::{
    Done, EventKind, Function, Handler, HandlerError, Invocation, ObjectEvent, ObjectStore,
    Outcome, StartError, StoreError,
};
use bytes::Bytes;

use claim::{Acquired, Claim, Claims};
pub use config::{Config, DEFAULT_FOLDER, Destinations};
use ftp::Uploader;
use services::{Organisations, PidService};
use sidecar::{CollateralOf, Sidecar};
use subject::{Collateral, Problem, Unfit};

/// Where the transport server mounts the sidecar folders (the file-transfer destination).
const INGEST_ROOT: &str = "/mnt/STORAGE/INGEST/SIDECAR";

/// The handler and the clients it keeps for the life of the instance.
pub struct SidecarOnCreate {
    config: Config,
    store: Arc<dyn ObjectStore>,
    claims: Claims,
    mediahaven: MediaHaven,
    pids: PidService,
    organisations: Organisations,
    ftp: Uploader,
    publisher: Arc<dyn Publisher>,
}

/// What the configuration, the store and the event say about the object, checked.
struct Subject<'a> {
    bucket: &'a str,
    key: &'a str,
    etag: Option<String>,
    tenant: String,
    domain: String,
    owner: String,
    md5: Option<String>,
    extension: String,
    collateral: Option<Collateral>,
}

impl SidecarOnCreate {
    /// The handler with its publisher given (AMQP in production, memory in tests).
    pub fn new(
        config: Config,
        store: Arc<dyn ObjectStore>,
        publisher: Arc<dyn Publisher>,
    ) -> Result<Self, BoxError> {
        let http = bucketfn::api::client(config.http_timeout)?;
        Ok(Self {
            claims: Claims::new(Arc::clone(&store), config.claims.clone()),
            mediahaven: MediaHaven::new(config.mediahaven.clone())?,
            pids: PidService::new(http.clone(), config.pid_service_url.clone()),
            organisations: Organisations::new(http, config.organisations_url.clone()),
            ftp: Uploader::new(config.ftp.clone())?,
            store,
            publisher,
            config,
        })
    }

    async fn archive(&self, event: &ObjectEvent) -> Outcome {
        let (bucket, key) = (event.bucket.as_str(), event.key.as_str());
        if self.claims.is_claim(bucket, key) {
            return Ok(Done::Skipped(format!(
                "{} is one of sidecar-on-create's claims",
                ObjectPath(bucket, key)
            )));
        }
        ensure_readable(event.source, bucket, key)?;
        let Some(subject) = self.subject(event).await? else {
            return Ok(Done::gone(bucket, key));
        };
        let claim = self.claims.locate(bucket, key, subject.etag.as_deref());
        if let Some(done) = self.claims.done(&claim).await? {
            return Ok(Done::Skipped(format!(
                "{} was archived already as PID {}",
                ObjectPath(bucket, key),
                done.pid
            )));
        }
        let cp_name = self
            .organisations
            .cp_name(&subject.tenant)
            .await
            .map_err(|e| e.about("looking up the tenant's MAM label", bucket, key))?;
        subject::path_component("CP name", &cp_name).map_err(|p| unfit(bucket, key, p))?;
        if self.in_mediahaven(&subject, &cp_name).await? {
            return Ok(Done::Skipped(format!(
                "{} is in MediaHaven already",
                ObjectPath(bucket, key)
            )));
        }

        let held = match self.claims.acquire(&claim).await? {
            Acquired::Mine(held) => held,
            Acquired::Busy(lease) => {
                let until = lease.map_or_else(
                    || "it took the claim first".to_owned(),
                    |lease| format!("its claim holds until {}", lease.expires),
                );
                return Err(HandlerError::retryable(format!(
                    "{} is being archived by another delivery ({until})",
                    ObjectPath(bucket, key)
                )));
            }
        };
        // The marker may have been written between the first look and taking the lease.
        let outcome = match self.claims.done(&claim).await {
            Ok(Some(done)) => Ok(Done::Skipped(format!(
                "{} was archived already as PID {}",
                ObjectPath(bucket, key),
                done.pid
            ))),
            Ok(None) => {
                self.archive_claimed(event, &subject, &cp_name, &claim)
                    .await
            }
            Err(e) => Err(e.into()),
        };
        // Whatever the outcome (the `done` marker, if any, is written by now): a redelivery
        // need not wait for the lease to expire. A lease that cannot be freed expires by
        // itself, so this never undoes an archiving that happened.
        if let Err(e) = self.claims.release(&claim, &held).await {
            tracing::warn!(error = %e, "Claim not released.");
        }
        outcome
    }

    /// Reads and checks the fields; `None` when the object is gone. What decides where the
    /// transfer service fetches from and for whom the item is archived comes from the
    /// configuration (tenant, domain) and the store (etag, md5), never from the event alone:
    /// where the event says otherwise, it is logged and overruled.
    async fn subject<'a>(
        &self,
        event: &'a ObjectEvent,
    ) -> Result<Option<Subject<'a>>, HandlerError> {
        let (bucket, key) = (event.bucket.as_str(), event.key.as_str());
        let fail = |problem| unfit(bucket, key, problem);
        let told_tenant = event.bucket_metadata.get("tenant").map(String::as_str);
        let tenant = self
            .config
            .tenants
            .get(bucket)
            .ok_or_else(|| fail(Problem::NoTenant(told_tenant.map(str::to_owned))))?
            .clone();
        if let Some(told) = told_tenant
            && subject::normalize_or_id(told).as_deref() != Ok(tenant.as_str())
        {
            // Either TENANT_BY_BUCKET is wrong or someone else sends events: an operator looks.
            tracing::error!(
                event_tenant = %told.escape_debug(), tenant = %tenant,
                "The event's tenant is not TENANT_BY_BUCKET's; the configured one is used."
            );
        }
        let domain = self
            .config
            .domain
            .clone()
            .ok_or_else(|| fail(Problem::NoDomain(event.domain.clone())))?;
        if let Some(told) = event.domain.as_deref().filter(|told| *told != domain) {
            tracing::error!(
                event_domain = %told.escape_debug(), domain = %domain,
                "The event's domain is not S3_DOMAIN; S3_DOMAIN is used."
            );
        }
        // Who wrote the object only the event says (a HEAD does not), and it is only
        // recorded in the sidecar: it chooses neither a place nor a tenant.
        let owner = event
            .principal
            .clone()
            .ok_or_else(|| fail(Problem::NoOwner))?;
        let extension = subject::extension_of(key).map_err(fail)?;
        let collateral = if self.config.collateral_buckets.contains(bucket) {
            Some(Collateral::from_key(key).map_err(fail)?)
        } else {
            None
        };
        // The event is judged before the store is asked, so an unfit one is refused even
        // when its object is gone. The store then says whether the object exists (archiving
        // one deleted since would mint a PID and request a transfer of nothing), which version
        // it is (the etag the claim is kept under) and its md5 (its own metadata: AWS S3
        // notifications carry none, and a notification's word could hide it from the search
        // for an earlier ingest).
        let info = match self.store.head(bucket, key).await {
            Ok(info) => info,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if let Some(told) = event
            .etag
            .as_deref()
            .filter(|told| info.etag.as_deref() != Some(*told))
        {
            tracing::info!(
                event_etag = %told.escape_debug(), store_etag = info.etag.as_deref().unwrap_or(""),
                "The event's etag is not the store's; the object as stored is archived."
            );
        }
        Ok(Some(Subject {
            bucket,
            key,
            etag: info.etag,
            tenant,
            domain,
            owner,
            md5: subject::md5_of(&info.metadata),
            extension,
            collateral,
        }))
    }

    /// Whether MediaHaven holds the item for this bucket and tenant: a record of the same key,
    /// or of the same md5 where there is one (not for the md5-exempt tenant's essences, whose
    /// files come back with new content). The search only proposes records; each one's own
    /// bucket, tenant and key or md5 decide, so that a record of another bucket or tenant, or
    /// one a loose index matched, does not keep this object from being archived.
    async fn in_mediahaven(&self, s: &Subject<'_>, cp_name: &str) -> Result<bool, HandlerError> {
        let exempt =
            self.config.md5_exempt_tenant.as_deref().is_some_and(|t| {
                t.eq_ignore_ascii_case(cp_name) || t.eq_ignore_ascii_case(&s.tenant)
            });
        let md5 = s
            .md5
            .as_deref()
            .filter(|_| s.collateral.is_some() || !exempt);
        let mut pairs = vec![("s3_object_key", s.key)];
        pairs.extend(md5.map(|md5| ("md5", md5)));
        let query = Query::any_of(&pairs).and(Query::all_of(&[("s3_bucket", s.bucket)]));
        let found = self
            .mediahaven
            .search(&query)
            .await
            .map_err(|e| e.about("looking for an earlier ingest", s.bucket, s.key))?;
        Ok(found.iter().any(|record| {
            let same_file = record.s3_object_key.as_deref() == Some(s.key)
                || md5.is_some_and(|md5| {
                    record
                        .md5
                        .as_deref()
                        .is_some_and(|theirs| theirs.eq_ignore_ascii_case(md5))
                });
            let same_tenant = record
                .cp_id
                .as_deref()
                .is_some_and(|id| subject::normalize_or_id(id).is_ok_and(|id| id == s.tenant));
            record.s3_bucket.as_deref() == Some(s.bucket) && same_tenant && same_file
        }))
    }

    async fn archive_claimed(
        &self,
        event: &ObjectEvent,
        s: &Subject<'_>,
        cp_name: &str,
        claim: &Claim,
    ) -> Outcome {
        let (bucket, key) = (s.bucket, s.key);
        let (pid, essence_pid, kind) = match &s.collateral {
            None => (self.essence_pid(s, claim).await?, None, "essence"),
            Some(c) => {
                let (essence_pid, pid) = self.collateral_pid(s, c).await?;
                (pid, Some(essence_pid), "collateral")
            }
        };
        let folder = self.config.destinations.folder(cp_name, &s.tenant, kind);
        let dir = format!("/{cp_name}/{folder}");
        let name = format!("{pid}.xml");
        let xml = sidecar::render(&Sidecar {
            pid: &pid,
            cp_name,
            tenant: &s.tenant,
            domain: &s.domain,
            bucket,
            key,
            owner: &s.owner,
            md5: s.md5.as_deref(),
            collateral: match (&s.collateral, &essence_pid) {
                (Some(c), Some(essence_pid)) => Some(CollateralOf {
                    essence_pid,
                    media_id: &c.media_id,
                    object_use: c.object_use(),
                }),
                _ => None,
            },
        })
        .map_err(|e| HandlerError::permanent(format!("writing the sidecar failed: {e}")))?;
        self.ftp.upload((bucket, key), &dir, &name, &xml).await?;
        tracing::info!(pid = %pid, sidecar = %format!("{dir}/{name}"), "Sidecar delivered.");

        let request = serde_json::json!({
            "source": {
                "domain": {"name": s.domain},
                "bucket": {"name": bucket},
                "object": {"key": key},
            },
            "destination": {
                "path": format!("{INGEST_ROOT}{dir}/{pid}{}", s.extension),
                "host": self.transfer_host(),
            },
        });
        // The correlation id of the message the event came in (the original passes it on as
        // it is); outside a broker the event's id, else a stable id of the object version, so
        // that a repeated request can still be matched with the first.
        let correlation_id = event
            .correlation_id
            .clone()
            .or_else(|| event.id.clone())
            .unwrap_or_else(|| claim.id().to_owned());
        let message = Message {
            key: None,
            headers: vec![("pid".to_owned(), pid.clone())],
            content_type: "application/json".to_owned(),
            correlation_id: Some(correlation_id),
            body: Bytes::from(request.to_string()),
            timestamp: None,
        };
        self.publisher.publish(vec![message]).await.map_err(|e| {
            HandlerError::from(e).context(format!(
                "publishing the file-transfer request for {} failed",
                ObjectPath(bucket, key)
            ))
        })?;
        let sidecar = format!("{dir}/{name}");
        let done = claim::Done {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            pid: pid.clone(),
            sidecar: sidecar.clone(),
            at: chrono::Utc::now(),
        };
        self.claims.finish(claim, &done).await?;
        Ok(Done::Completed(format!(
            "PID {pid}: sidecar {sidecar} delivered, file transfer requested"
        )))
    }

    /// The transport server as the original's file-transfer request names it: its configured
    /// URL (`ftp://host`, with the port when `FTP_HOST` has one), not the bare host name.
    fn transfer_host(&self) -> String {
        format!("ftp://{}", self.config.ftp.host)
    }

    /// The PID recorded by an earlier attempt, or a new one recorded before it is used.
    async fn essence_pid(&self, s: &Subject<'_>, claim: &Claim) -> Result<String, HandlerError> {
        if let Some(pid) = self.claims.pid(claim).await? {
            return Ok(pid);
        }
        let minted = self
            .pids
            .mint()
            .await
            .map_err(|e| e.about("minting a PID", s.bucket, s.key))?;
        Ok(self.claims.keep_pid(claim, &minted).await?)
    }

    /// The essence's PID and the collateral's (`<essence pid>_<type>`), after linking the
    /// collateral to the essence in MediaHaven (an update that is the same on every retry).
    ///
    /// In the original's data model the media id sits on the essence's fragments (an essence
    /// ingested from the store has none of its own), and every collateral archived for that
    /// media id carries it too, so a search by media id answers fragments and earlier
    /// collaterals in whatever order MediaHaven ranks them. The record the collateral belongs
    /// to is a fragment; only where there is none, a non-fragment that is no collateral (not
    /// from a collateral bucket, object use neither `subtitle` nor `collateral`). An earlier
    /// collateral is never taken, where the original takes the first answer.
    async fn collateral_pid(
        &self,
        s: &Subject<'_>,
        c: &Collateral,
    ) -> Result<(String, String), HandlerError> {
        let (bucket, key) = (s.bucket, s.key);
        let records = self
            .mediahaven
            .search(&Query::any_of(&[("dc_identifier_localid", &c.media_id)]))
            .await
            .map_err(|e| e.about("looking up the essence", bucket, key))?;
        // Only records of exactly this media id: the search may match loosely.
        let exact: Vec<&Record> = records
            .iter()
            .filter(|r| r.local_id.as_deref() == Some(c.media_id.as_str()))
            .collect();
        let is_collateral = |r: &Record| {
            r.s3_bucket
                .as_deref()
                .is_some_and(|b| self.config.collateral_buckets.contains(b))
                || matches!(r.object_use.as_deref(), Some("subtitle" | "collateral"))
        };
        let essence = exact
            .iter()
            .find(|r| r.is_fragment)
            .or_else(|| exact.iter().find(|r| !r.is_fragment && !is_collateral(r)))
            .ok_or_else(|| {
                ApiError::refused(
                    "MediaHaven",
                    format!(
                        "no essence has dc_identifier_localid {:?} (no fragment of one, and \
                         no record that is not a collateral; {} collateral(s) have it)",
                        c.media_id,
                        exact.len()
                    ),
                )
                .about("looking up the essence", bucket, key)
            })?;
        let essence_pid = essence.pid.clone().ok_or_else(|| {
            ApiError::refused(
                "MediaHaven",
                format!("essence {} has no PID", essence.fragment_id),
            )
            .about("looking up the essence", bucket, key)
        })?;
        subject::check_pid(&essence_pid).map_err(|p| unfit(bucket, key, p))?;
        let pid = format!("{essence_pid}_{}", c.kind);
        let update = sidecar::relation_update(&pid)
            .map_err(|e| HandlerError::permanent(format!("writing the update failed: {e}")))?;
        let update = String::from_utf8_lossy(&update);
        self.mediahaven
            .update(
                &essence.fragment_id,
                &update,
                &format!("[sidecar-on-create] add relation of {}", c.object_use()),
            )
            .await
            .map_err(|e| e.about("linking the collateral to its essence", bucket, key))?;
        Ok((essence_pid, pid))
    }
}

fn unfit(bucket: &str, key: &str, problem: Problem) -> HandlerError {
    HandlerError::permanent(Unfit {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        problem,
    })
}

impl Handler for SidecarOnCreate {
    /// `CLAIM_BUCKET`, when the claims are not kept in the event's bucket.
    fn buckets(&self) -> Vec<String> {
        self.config.claims.bucket.iter().cloned().collect()
    }

    async fn handle(&self, event: &ObjectEvent, _invocation: &Invocation) -> Outcome {
        match event.kind {
            EventKind::Created => self.archive(event).await,
            EventKind::Removed | EventKind::Sweep | EventKind::Other => {
                Ok(Done::not_handled(Self::NAME, event.kind))
            }
        }
    }
}

impl Function for SidecarOnCreate {
    const NAME: &'static str = "sidecar-on-create";
    const ABOUT: &'static str = "Archives media files in MediaHaven: PID, XML sidecar over FTP, file-transfer request over AMQP";

    type Config = Config;

    async fn start(config: Config, store: Arc<dyn ObjectStore>) -> Result<Self, StartError> {
        let publisher = Arc::new(AmqpPublisher::new(config.amqp.clone()));
        // A topology the broker refuses would fail every event's publish: refuse to start.
        publisher
            .check_topology()
            .await
            .map_err(|e| StartError::Failed(e.into()))?;
        Self::new(config, store, publisher).map_err(StartError::Failed)
    }
}
