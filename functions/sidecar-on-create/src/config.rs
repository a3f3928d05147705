//! sidecar-on-create's configuration, from environment variables. Secrets are [`Secret`]s, so
//! `Debug` of the whole configuration prints none of them.
//!
//! [`Secret`]: bucketfn::Secret

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bucketfn::api::mediahaven::{MediaHavenSettings, http_timeout};
use bucketfn::config::redact_url;
use bucketfn::sink::amqp::AmqpSettings;
use bucketfn::{Env, FromEnv};

use crate::claim::ClaimSettings;
use crate::ftp::FtpSettings;
use crate::subject::{normalize_or_id, path_component};

/// The folder on the transport server when the destination map names none.
pub const DEFAULT_FOLDER: &str = "DISK-SHARE-EVENTS";

/// Everything the function needs. `Debug` hides credentials in the service URLs.
#[derive(Clone)]
pub struct Config {
    pub mediahaven: MediaHavenSettings,
    /// `PID_SERVICE_URL`.
    pub pid_service_url: String,
    /// `ORGANISATIONS_API_URL`.
    pub organisations_url: String,
    pub ftp: FtpSettings,
    pub amqp: AmqpSettings,
    pub destinations: Destinations,
    /// `COLLATERAL_BUCKETS`: buckets whose objects are collaterals (`<type>/<media id>/...`).
    pub collateral_buckets: BTreeSet<String>,
    /// `MD5_EXEMPT_TENANT`: OR-id or CP name whose essences are not matched by md5 when
    /// looking for an earlier ingest (its files are re-delivered with new content).
    pub md5_exempt_tenant: Option<String>,
    /// `TENANT_BY_BUCKET`: `bucket=<organisation id>,...` (`OR-rf5kf25`, or any other prefix
    /// the original accepts, such as `MM-7p8tc89`), normalized; the event's bucket metadata is
    /// only compared with it.
    pub tenants: BTreeMap<String, String>,
    /// `S3_DOMAIN`: the domain for notifications that name none.
    pub domain: Option<String>,
    pub claims: ClaimSettings,
    /// `HTTP_TIMEOUT_SECS`.
    pub http_timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("mediahaven", &self.mediahaven)
            .field("pid_service_url", &redact_url(&self.pid_service_url))
            .field("organisations_url", &redact_url(&self.organisations_url))
            .field("ftp", &self.ftp)
            .field("amqp", &self.amqp)
            .field("destinations", &self.destinations)
            .field("collateral_buckets", &self.collateral_buckets)
            .field("md5_exempt_tenant", &self.md5_exempt_tenant)
            .field("tenants", &self.tenants)
            .field("domain", &self.domain)
            .field("claims", &self.claims)
            .field("http_timeout", &self.http_timeout)
            .finish_non_exhaustive()
    }
}

/// Folder on the transport server per environment, tenant and type, from
/// `SIDECAR_DESTINATIONS` (`<environment>/<tenant>/<essence|collateral>=<folder>,...`, where
/// the tenant is a CP name or an OR-id) and `APP_ENVIRONMENT` (default `production`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Destinations {
    pub environment: String,
    /// `(environment, tenant lower-cased, type)` -> folder.
    pub folders: BTreeMap<(String, String, String), String>,
}

impl Destinations {
    /// The folder for this tenant (CP name or OR-id) and type in this environment.
    pub fn folder(&self, cp_name: &str, or_id: &str, kind: &str) -> &str {
        [cp_name, or_id]
            .iter()
            .find_map(|tenant| {
                self.folders.get(&(
                    self.environment.clone(),
                    tenant.to_lowercase(),
                    kind.to_owned(),
                ))
            })
            .map_or(DEFAULT_FOLDER, String::as_str)
    }

    fn read(env: &mut Env) -> Self {
        let environment = env.or("APP_ENVIRONMENT", "production".to_owned());
        let mut folders = BTreeMap::new();
        let raw = env
            .raw("SIDECAR_DESTINATIONS")
            .unwrap_or_default()
            .to_owned();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry.split_once('=').and_then(|(scope, folder)| {
                let mut parts = scope.split('/');
                let (Some(e), Some(t), Some(k), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return None;
                };
                Some((e.trim(), t.trim(), k.trim(), folder.trim()))
            });
            let Some((e, tenant, kind, folder)) = parsed else {
                env.problem(
                    "SIDECAR_DESTINATIONS",
                    format!("{entry:?} is not `<environment>/<tenant>/<type>=<folder>`"),
                );
                continue;
            };
            if kind != "essence" && kind != "collateral" {
                env.problem(
                    "SIDECAR_DESTINATIONS",
                    format!("{entry:?}: the type must be `essence` or `collateral`"),
                );
            }
            if let Err(problem) = path_component("folder", folder) {
                env.problem("SIDECAR_DESTINATIONS", format!("{entry:?}: {problem}"));
            }
            folders.insert(
                (e.to_owned(), tenant.to_lowercase(), kind.to_owned()),
                folder.to_owned(),
            );
        }
        Self {
            environment,
            folders,
        }
    }
}

fn list(env: &Env, name: &str) -> impl Iterator<Item = String> {
    env.raw(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .into_iter()
}

fn url(env: &mut Env, name: &str) -> Option<String> {
    let value: String = env.required(name)?;
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        env.problem(name, format!("{value:?} is not an http(s) URL"));
    }
    Some(value)
}

impl FromEnv for Config {
    fn read(env: &mut Env) -> Option<Self> {
        let mediahaven = MediaHavenSettings::read(env);
        let pid_service_url = url(env, "PID_SERVICE_URL");
        let organisations_url = url(env, "ORGANISATIONS_API_URL");
        let ftp = FtpSettings::read(env);
        let amqp = AmqpSettings::read(env);
        let destinations = Destinations::read(env);
        let collateral_buckets = list(env, "COLLATERAL_BUCKETS").collect();
        let md5_exempt_tenant = env.optional("MD5_EXEMPT_TENANT");
        let mut tenants = BTreeMap::new();
        for entry in list(env, "TENANT_BY_BUCKET").collect::<Vec<_>>() {
            match entry.split_once('=') {
                Some((bucket, tenant)) => match normalize_or_id(tenant) {
                    Ok(or_id) => {
                        tenants.insert(bucket.trim().to_owned(), or_id);
                    }
                    Err(problem) => {
                        env.problem("TENANT_BY_BUCKET", format!("{entry:?}: {problem}"))
                    }
                },
                None => env.problem(
                    "TENANT_BY_BUCKET",
                    format!("{entry:?} is not `<bucket>=<organisation id>`"),
                ),
            }
        }
        let domain = env.optional("S3_DOMAIN");
        let claims = ClaimSettings::read(env);
        let http_timeout = http_timeout(env);
        Some(Self {
            mediahaven: mediahaven?,
            pid_service_url: pid_service_url?,
            organisations_url: organisations_url?,
            ftp: ftp?,
            amqp: amqp?,
            destinations,
            collateral_buckets,
            md5_exempt_tenant,
            tenants,
            domain,
            claims,
            http_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn complete() -> Vec<(&'static str, &'static str)> {
        vec![
            ("MEDIAHAVEN_URL", "http://mh.test"),
            ("MEDIAHAVEN_CLIENT_ID", "c"),
            ("MEDIAHAVEN_CLIENT_SECRET", "client-s3cret"),
            ("MEDIAHAVEN_USERNAME", "u"),
            ("MEDIAHAVEN_PASSWORD", "mh-s3cret"),
            ("PID_SERVICE_URL", "http://pid.test/"),
            ("ORGANISATIONS_API_URL", "http://org.test/"),
            ("FTP_HOST", "tra.test:2121"),
            ("FTP_USER", "ftp"),
            ("FTP_PASSWORD", "ftp-s3cret"),
            ("AMQP_URL", "amqp://guest:amqp-s3cret@localhost:5672/%2f"),
            ("AMQP_ROUTING_KEY", "filetransfer"),
            ("APP_ENVIRONMENT", "qas"),
            (
                "SIDECAR_DESTINATIONS",
                "production/VRT/essence=TAPE-SHARE-EVENTS, qas/vrt/essence=DISK-SHARE-EVENTS,qas/OR-rf5kf25/collateral=COLL",
            ),
            ("COLLATERAL_BUCKETS", "mam-collaterals, other"),
            ("TENANT_BY_BUCKET", "photos=or-abc1234, clips=mm-7P8TC89"),
        ]
    }

    #[test]
    fn reads_everything_and_prints_no_secret() -> TestResult {
        let config: Config = Env::from_pairs(complete()).load()?;
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            config.tenants.get("photos").map(String::as_str),
            Some("OR-abc1234")
        );
        assert_eq!(
            config.tenants.get("clips").map(String::as_str),
            Some("MM-7p8tc89")
        );
        assert!(config.collateral_buckets.contains("other"));
        let d = &config.destinations;
        assert_eq!(d.folder("VRT", "OR-x", "essence"), "DISK-SHARE-EVENTS");
        assert_eq!(d.folder("VRT", "OR-rf5kf25", "collateral"), "COLL");
        assert_eq!(d.folder("Other", "OR-y", "essence"), DEFAULT_FOLDER);
        Ok(())
    }

    #[test]
    fn every_missing_or_bad_variable_is_reported() -> TestResult {
        let mut pairs = complete();
        pairs.retain(|(k, _)| !k.starts_with("FTP_"));
        pairs.push(("SIDECAR_DESTINATIONS", "qas/x/essence=../up,bad"));
        pairs.push(("TENANT_BY_BUCKET", "b=OR-1"));
        pairs.push(("AMQP_URL", "http://no"));
        let err = Env::from_pairs(pairs)
            .load::<Config>()
            .err()
            .ok_or("accepted")?;
        let text = err.to_string();
        for needle in [
            "FTP_HOST",
            "FTP_USER",
            "FTP_PASSWORD",
            "../up",
            "\"bad\"",
            "\"b=OR-1\": tenant \"OR-1\" is not an organisation id",
            "AMQP_URL",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        Ok(())
    }
}
