//! A real FTP server (libunftp over a temporary directory) on a loopback port, as the
//! MediaHaven transport server, in plain FTP or requiring FTPS; any user name and password
//! log in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use libunftp::ServerBuilder;
use libunftp::options::FtpsRequired;
use tokio::task::JoinHandle;
use unftp_sbe_fs::Filesystem;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running server; stops when dropped.
pub struct FtpServer {
    root: PathBuf,
    task: JoinHandle<()>,
}

impl FtpServer {
    /// Serves `root` on `port`; passive data connections use ports from 50000 up.
    pub async fn start_on(root: &Path, port: u16) -> Result<Self, BoxError> {
        Self::start(root, port, None).await
    }

    /// Serves `root` on `port` and refuses anything but FTPS (`AUTH TLS`, `PROT P`) with this
    /// PEM certificate chain and key.
    pub async fn start_tls_on(
        root: &Path,
        port: u16,
        cert: &Path,
        key: &Path,
    ) -> Result<Self, BoxError> {
        Self::start(root, port, Some((cert, key))).await
    }

    async fn start(root: &Path, port: u16, tls: Option<(&Path, &Path)>) -> Result<Self, BoxError> {
        Filesystem::new(root)?;
        let served = root.to_path_buf();
        let mut builder = ServerBuilder::new(Box::new(move || {
            // Checked just above; the directory only goes away with the test that owns it.
            #[allow(clippy::expect_used)]
            Filesystem::new(served.clone()).expect("the FTP root is readable")
        }))
        .greeting("bucketfn test transport server")
        .passive_ports(50000..=65000);
        if let Some((cert, key)) = tls {
            builder = builder
                .ftps(cert.to_path_buf(), key.to_path_buf())
                .ftps_required(FtpsRequired::All, FtpsRequired::All);
        }
        let server = builder.build()?;
        let address = format!("127.0.0.1:{port}");
        let bind = address.clone();
        let task = tokio::spawn(async move {
            let _ = server.listen(bind).await;
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("the FTP server did not listen on {address}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            root: root.to_path_buf(),
            task,
        })
    }

    /// The file at `path` (absolute on the server), if it was stored.
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.join(path.trim_start_matches('/'))).ok()
    }

    /// Every file under the root, as server paths, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(relative) = path.strip_prefix(&self.root) {
                    found.push(format!("/{}", relative.display()));
                }
            }
        }
        found.sort();
        found
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
