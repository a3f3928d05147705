//! A real FTP server (libunftp over a temporary directory) on a loopback port, as the
//! MediaHaven transport server, in plain FTP or requiring FTPS; any user name and password
//! log in. It records what its storage did (stores and renames, in order), and can serve an
//! account without the right to rename, as some transport servers do.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libunftp::ServerBuilder;
use libunftp::options::FtpsRequired;
use tokio::task::JoinHandle;
use unftp_core::auth::DefaultUser;
use unftp_core::storage::{self, Fileinfo, StorageBackend};
use unftp_sbe_fs::Filesystem;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running server; stops when dropped.
pub struct FtpServer {
    root: PathBuf,
    task: JoinHandle<()>,
    operations: Arc<Mutex<Vec<Operation>>>,
}

/// A change the server's storage made, with server paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// A file written (`STOR`) with this many bytes.
    Stored { path: String, bytes: u64 },
    /// A file renamed (`RNFR` + `RNTO`).
    Renamed { from: String, to: String },
}

/// What the FTP account may do.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    /// `false`: `RNTO` is answered `550 Permission denied`.
    pub may_rename: bool,
}

impl Default for Account {
    fn default() -> Self {
        Self { may_rename: true }
    }
}

impl FtpServer {
    /// Serves `root` on `port`; passive data connections use ports from 50000 up.
    pub async fn start_on(root: &Path, port: u16) -> Result<Self, BoxError> {
        Self::start(root, port, None, Account::default()).await
    }

    /// Serves `root` on `port` to an account with these rights.
    pub async fn start_for(root: &Path, port: u16, account: Account) -> Result<Self, BoxError> {
        Self::start(root, port, None, account).await
    }

    /// Serves `root` on `port` and refuses anything but FTPS (`AUTH TLS`, `PROT P`) with this
    /// PEM certificate chain and key.
    pub async fn start_tls_on(
        root: &Path,
        port: u16,
        cert: &Path,
        key: &Path,
    ) -> Result<Self, BoxError> {
        Self::start(root, port, Some((cert, key)), Account::default()).await
    }

    async fn start(
        root: &Path,
        port: u16,
        tls: Option<(&Path, &Path)>,
        account: Account,
    ) -> Result<Self, BoxError> {
        Filesystem::new(root)?;
        let served = root.to_path_buf();
        let operations = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&operations);
        let mut builder = ServerBuilder::new(Box::new(move || Recorded {
            // Checked just above; the directory only goes away with the test that owns it.
            #[allow(clippy::expect_used)]
            inner: Filesystem::new(served.clone()).expect("the FTP root is readable"),
            account,
            operations: Arc::clone(&recorded),
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
            operations,
        })
    }

    /// What the storage did so far, in order.
    pub fn operations(&self) -> Vec<Operation> {
        self.operations
            .lock()
            .map(|ops| ops.clone())
            .unwrap_or_default()
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

/// The directory backend with the account's rights applied and every change recorded.
#[derive(Debug)]
struct Recorded {
    inner: Filesystem,
    account: Account,
    operations: Arc<Mutex<Vec<Operation>>>,
}

impl Recorded {
    fn record(&self, operation: Operation) {
        if let Ok(mut ops) = self.operations.lock() {
            ops.push(operation);
        }
    }
}

type Meta = <Filesystem as StorageBackend<DefaultUser>>::Metadata;

fn shown(path: &Path) -> String {
    format!("/{}", path.display().to_string().trim_start_matches('/'))
}

#[async_trait::async_trait]
impl StorageBackend<DefaultUser> for Recorded {
    type Metadata = Meta;

    fn enter(&mut self, user: &DefaultUser) -> std::io::Result<()> {
        self.inner.enter(user)
    }

    fn supported_features(&self) -> u32 {
        StorageBackend::<DefaultUser>::supported_features(&self.inner)
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        path: P,
    ) -> storage::Result<Meta> {
        self.inner.metadata(user, path).await
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        path: P,
    ) -> storage::Result<Vec<Fileinfo<PathBuf, Meta>>> {
        self.inner.list(user, path).await
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        path: P,
        start_pos: u64,
    ) -> storage::Result<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>> {
        self.inner.get(user, path, start_pos).await
    }

    async fn put<
        P: AsRef<Path> + Send + Debug,
        R: tokio::io::AsyncRead + Send + Sync + Unpin + 'static,
    >(
        &self,
        user: &DefaultUser,
        input: R,
        path: P,
        start_pos: u64,
    ) -> storage::Result<u64> {
        let at = shown(path.as_ref());
        let bytes = self.inner.put(user, input, path, start_pos).await?;
        self.record(Operation::Stored { path: at, bytes });
        Ok(bytes)
    }

    async fn del<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        path: P,
    ) -> storage::Result<()> {
        self.inner.del(user, path).await
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        path: P,
    ) -> storage::Result<()> {
        self.inner.mkd(user, path).await
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        from: P,
        to: P,
    ) -> storage::Result<()> {
        if !self.account.may_rename {
            return Err(storage::ErrorKind::PermissionDenied.into());
        }
        let (shown_from, shown_to) = (shown(from.as_ref()), shown(to.as_ref()));
        self.inner.rename(user, from, to).await?;
        self.record(Operation::Renamed {
            from: shown_from,
            to: shown_to,
        });
        Ok(())
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        path: P,
    ) -> storage::Result<()> {
        self.inner.rmd(user, path).await
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &DefaultUser,
        path: P,
    ) -> storage::Result<()> {
        self.inner.cwd(user, path).await
    }
}
