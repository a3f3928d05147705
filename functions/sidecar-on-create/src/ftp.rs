//! Puts a sidecar on the MediaHaven transport server over FTP (passive mode, optionally
//! upgraded to TLS with `AUTH TLS`): by default under a temporary name renamed into place, so
//! that the server's watcher never picks up half a file; or, for accounts without the right to
//! rename, directly under its name, as the original s3-events-handler does.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bucketfn::ObjectPath;
use bucketfn::config::{Env, Secret, redact_url};
use bucketfn::outcome::{BoxError, HandlerError};
use rustls::ClientConfig;
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode};

/// The transport server. `Debug` hides the password.
#[derive(Clone)]
pub struct FtpSettings {
    /// `FTP_HOST`: `host` or `host:port` (port 21 by default).
    pub host: String,
    /// `FTP_USER`, `FTP_PASSWORD`.
    pub user: String,
    pub password: Secret,
    /// `FTP_TLS`: `true` upgrades the control and data connections with `AUTH TLS`.
    pub tls: bool,
    /// `FTP_CA_FILE`: PEM certificates trusted besides the system's (an internal CA).
    pub ca_file: Option<PathBuf>,
    /// `FTP_TIMEOUT_SECS`: limit for the whole upload (connect, login, transfer, rename).
    pub timeout: Duration,
    /// `FTP_UPLOAD`: how the file reaches its name.
    pub upload: UploadMode,
}

/// How a sidecar reaches its name on the transport server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    /// `FTP_UPLOAD=rename` (the default): stored as `.<name>.part`, then renamed to `<name>`.
    /// The name only ever holds a whole file; the account needs the right to rename (and
    /// the watchfolder must ignore dot-files, or at least `*.part`).
    Rename,
    /// `FTP_UPLOAD=direct`: stored as `<name>` with one `STOR`, as the original does. Needs
    /// only the right to write; while the transfer runs the name holds part of the file, so
    /// the watchfolder must wait for a file to be complete (closed, or its size stable).
    Direct,
}

impl UploadMode {
    fn read(env: &mut Env) -> Self {
        match env.raw("FTP_UPLOAD").map(str::trim).unwrap_or("") {
            "" | "rename" => Self::Rename,
            "direct" => Self::Direct,
            other => {
                env.problem(
                    "FTP_UPLOAD",
                    format!("{other:?} is neither `rename` nor `direct`"),
                );
                Self::Rename
            }
        }
    }
}

impl fmt::Debug for FtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FtpSettings")
            .field("host", &redact_url(&self.host))
            .field("user", &self.user)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("upload", &self.upload)
            .finish_non_exhaustive()
    }
}

impl FtpSettings {
    pub fn read(env: &mut Env) -> Option<Self> {
        let host = env.required("FTP_HOST");
        let user = env.required("FTP_USER");
        let password = env.required("FTP_PASSWORD");
        let tls = env.or("FTP_TLS", false);
        let ca_file: Option<PathBuf> = env.optional("FTP_CA_FILE");
        if ca_file.is_some() && !tls {
            env.problem("FTP_CA_FILE", "is set while FTP_TLS is not `true`");
        }
        let secs: u64 = env.or("FTP_TIMEOUT_SECS", 60);
        if secs == 0 {
            env.problem("FTP_TIMEOUT_SECS", "must be at least 1");
        }
        let upload = UploadMode::read(env);
        Some(Self {
            host: host?,
            user: user?,
            password: password?,
            tls,
            ca_file,
            timeout: Duration::from_secs(secs.max(1)),
            upload,
        })
    }

    /// The host name without the port (what the file-transfer message names).
    pub fn host_name(&self) -> &str {
        match self.host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => &self.host,
        }
    }

    fn address(&self) -> String {
        if self.host_name() == self.host {
            format!("{}:21", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// An upload that failed, with the object it was for.
#[derive(Debug, thiserror::Error)]
#[error(
    "putting the sidecar of {} on {host} as {path} failed",
    ObjectPath(bucket, key)
)]
pub struct UploadError {
    pub bucket: String,
    pub key: String,
    pub host: String,
    pub path: String,
    retryable: bool,
    #[source]
    source: BoxError,
}

impl From<UploadError> for HandlerError {
    fn from(error: UploadError) -> Self {
        if error.retryable {
            Self::retryable(error)
        } else {
            Self::permanent(error)
        }
    }
}

/// What went wrong on the wire, and where.
#[derive(Debug, thiserror::Error)]
enum TransferError {
    #[error(transparent)]
    Ftp(#[from] FtpError),
    /// The server took the temporary file but would not rename it: most often an account
    /// without the rename right, which no retry gives it.
    #[error(
        "the server refused to rename {partial} to {name}: FTP_UPLOAD=rename (the default) \
         needs an account that may rename; FTP_UPLOAD=direct stores the file under its name \
         instead, for a watchfolder that waits for complete files"
    )]
    RenameRefused {
        partial: String,
        name: String,
        #[source]
        source: FtpError,
    },
}

impl TransferError {
    fn retryable(&self) -> bool {
        match self {
            Self::Ftp(e) | Self::RenameRefused { source: e, .. } => retryable(e),
        }
    }
}

/// 4xx replies are transient by definition (RFC 959); 5xx replies (login refused, destination
/// folder missing, permission denied) will not change by retrying. Anything on the wire
/// (refused, reset, timed out, TLS) may pass.
fn retryable(error: &FtpError) -> bool {
    match error {
        FtpError::UnexpectedResponse(response) => {
            let code = response.status.code();
            (400..500).contains(&code)
        }
        _ => true,
    }
}

/// The FTP client, one per function instance.
pub struct Uploader {
    settings: FtpSettings,
    tls: Option<Arc<ClientConfig>>,
}

impl Uploader {
    pub fn new(settings: FtpSettings) -> Result<Self, BoxError> {
        let tls = if settings.tls {
            Some(bucketfn::tls::client_config(
                "FTP_CA_FILE",
                settings.ca_file.as_deref(),
            )?)
        } else {
            None
        };
        Ok(Self { settings, tls })
    }

    pub fn host_name(&self) -> &str {
        self.settings.host_name()
    }

    /// Writes `body` as `<dir>/<name>`, replacing a file of that name (a retried event writes
    /// the same bytes under the same name).
    pub async fn upload(
        &self,
        (bucket, key): (&str, &str),
        dir: &str,
        name: &str,
        body: &[u8],
    ) -> Result<(), UploadError> {
        let path = format!("{dir}/{name}");
        let fail = |retryable: bool, source: BoxError| UploadError {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            host: self.settings.host.clone(),
            path: path.clone(),
            retryable,
            source,
        };
        match tokio::time::timeout(self.settings.timeout, self.transfer(dir, name, body)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(fail(e.retryable(), Box::new(e))),
            Err(_) => Err(fail(
                true,
                format!("no answer within {:?}", self.settings.timeout).into(),
            )),
        }
    }

    async fn transfer(&self, dir: &str, name: &str, body: &[u8]) -> Result<(), TransferError> {
        let mut ftp = AsyncRustlsFtpStream::connect(self.settings.address()).await?;
        if let Some(config) = &self.tls {
            let connector =
                AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(Arc::clone(config)));
            ftp = ftp.into_secure(connector, self.host_name()).await?;
        }
        ftp.set_mode(Mode::Passive);
        ftp.login(self.settings.user.as_str(), self.settings.password.expose())
            .await?;
        ftp.transfer_type(FileType::Binary).await?;
        ftp.cwd(dir).await?;
        let mut reader = body;
        match self.settings.upload {
            UploadMode::Direct => {
                // A retried event writes the same bytes under the same name again.
                ftp.put_file(name, &mut reader).await?;
            }
            UploadMode::Rename => {
                let partial = format!(".{name}.part");
                ftp.put_file(&partial, &mut reader).await?;
                if let Err(source) = ftp.rename(partial.as_str(), name).await {
                    // Leave no stray temporary file where a delete is allowed; where it is
                    // not, the next attempt overwrites it.
                    let _ = ftp.rm(partial.as_str()).await;
                    return Err(TransferError::RenameRefused {
                        partial: format!("{dir}/{partial}"),
                        name: format!("{dir}/{name}"),
                        source,
                    });
                }
            }
        }
        // The file is in place; a failed goodbye changes nothing.
        let _ = ftp.quit().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(host: &str) -> FtpSettings {
        FtpSettings {
            host: host.to_owned(),
            user: "u".to_owned(),
            password: Secret::new("p"),
            tls: false,
            ca_file: None,
            timeout: Duration::from_secs(1),
            upload: UploadMode::Rename,
        }
    }

    fn upload_mode(value: Option<&str>) -> (UploadMode, Vec<String>) {
        let mut pairs = vec![("FTP_HOST", "h"), ("FTP_USER", "u"), ("FTP_PASSWORD", "p")];
        pairs.extend(value.map(|v| ("FTP_UPLOAD", v)));
        let (settings, problems) = bucketfn::config::read_from_pairs(&pairs, FtpSettings::read);
        (settings.map_or(UploadMode::Rename, |s| s.upload), problems)
    }

    #[test]
    fn uploads_rename_into_place_unless_direct_is_asked_for() {
        assert_eq!(upload_mode(None), (UploadMode::Rename, vec![]));
        assert_eq!(upload_mode(Some("rename")), (UploadMode::Rename, vec![]));
        assert_eq!(upload_mode(Some(" direct ")), (UploadMode::Direct, vec![]));
        let (_, problems) = upload_mode(Some("atomic"));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("FTP_UPLOAD") && p.contains("\"atomic\"")),
            "{problems:?}"
        );
    }

    #[test]
    fn host_names_drop_the_port_and_port_21_is_the_default() {
        assert_eq!(settings("tra.example:2121").host_name(), "tra.example");
        assert_eq!(settings("tra.example:2121").address(), "tra.example:2121");
        assert_eq!(settings("tra.example").address(), "tra.example:21");
    }

    #[test]
    fn debug_hides_the_password() {
        let mut s = settings("h");
        s.password = Secret::new("ftp-s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
