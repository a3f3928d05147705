//! A function under `serve --storage DIR`, as a laptop runs it: listening on a free loopback
//! port, its operations pages behind [`OPS_TOKEN`], read back as a user reads them.

use std::path::Path;
use std::time::Duration;

use super::BoxError;
use super::function::{FunctionProcess, HttpReply, free_port, request, wait_ready};

/// The operations credential every served function of the tests has.
pub const OPS_TOKEN: &str = "ops-token-for-the-served-tests";

pub struct Served {
    pub url: String,
    pub process: FunctionProcess,
}

impl Served {
    /// Starts `binary serve --storage storage` with `env` on top of the port, the loopback
    /// address and `OPS_TOKEN`, and waits until it answers `/healthz`.
    pub async fn start(
        binary: &str,
        storage: &Path,
        env: &[(&str, String)],
    ) -> Result<Self, BoxError> {
        let port = free_port()?;
        let mut all = vec![
            ("PORT", port.to_string()),
            ("LISTEN_ADDRESS", "127.0.0.1".to_owned()),
            ("OPS_TOKEN", OPS_TOKEN.to_owned()),
        ];
        all.extend(env.iter().cloned());
        let dir = storage.to_string_lossy().into_owned();
        let process = FunctionProcess::spawn(binary, &["serve", "--storage", &dir], &all)?;
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(&format!("{url}/healthz"), &process, Duration::from_secs(20)).await?;
        Ok(Self { url, process })
    }

    /// `method path` with the operations credential (Bearer) and `headers`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Vec<u8>>,
    ) -> Result<HttpReply, BoxError> {
        let bearer = format!("Bearer {OPS_TOKEN}");
        let mut all = vec![("authorization", bearer.as_str())];
        all.extend(headers.iter().copied());
        request(method, &format!("{}{path}", self.url), &all, body.into()).await
    }

    /// Waits (up to 15 s) until the function has made the file `path` in its storage, or
    /// fails with its logs.
    pub async fn file_appears(&self, path: &Path) -> Result<(), BoxError> {
        for _ in 0..600 {
            if path.is_file() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let logs = self.process.logs();
        Err(format!("{} never appeared; logs:\n{logs}", path.display()).into())
    }

    /// An operations page, which must answer 200.
    pub async fn ops(&self, path: &str) -> Result<String, BoxError> {
        let reply = self.call("GET", path, &[], Vec::new()).await?;
        if reply.status != 200 {
            return Err(format!("{path} answered {}", reply.status).into());
        }
        Ok(String::from_utf8_lossy(&reply.body).into_owned())
    }

    /// The rows of `/events/history`, newest first, with `&quot;` read back as `"`.
    pub async fn history(&self) -> Result<Vec<String>, BoxError> {
        let page = self.ops("/events/history").await?;
        Ok(page
            .split("<tr>")
            .skip(1)
            .filter(|row| row.starts_with("<td>"))
            .map(|row| row.replace("&quot;", "\""))
            .collect())
    }
}
