//! `archive-stubs`: the archive API stubs (MediaHaven, PID service, organisations API) and the
//! FTP server of the integration tests as one process, for the end-to-end script.
//!
//! Usage: `archive-stubs --http ADDR --ftp-port PORT --ftp-root DIR [--organisation OR-ID=LABEL]...`;
//! MediaHaven records are added with `POST /_stub/records` (a JSON list) or
//! `POST /_stub/ingest/<fragment id>` (a sidecar, as MediaHaven ingests it), a route's next
//! answers made errors or stalls with `POST /_stub/fail` (`{"route": "pid", "status": 503,
//! "times": 2}`, `"stall_ms": 300`), and what the stubs saw is at `GET /_stub/seen`. Prints
//! `ready` when both listen; stops on SIGTERM or Ctrl-C.

// The tests use the inspection helpers of these modules; this binary only serves.
#[allow(dead_code)]
#[path = "support/archive_apis.rs"]
mod archive_apis;
#[allow(dead_code)]
#[path = "support/ftp_server.rs"]
mod ftp_server;

use std::path::PathBuf;
use std::process::ExitCode;

use archive_apis::ArchiveApis;
use ftp_server::FtpServer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Default)]
struct Args {
    http: String,
    ftp_port: u16,
    ftp_root: PathBuf,
    organisations: Vec<(String, String)>,
}

fn args() -> Result<Args, BoxError> {
    let mut args = Args::default();
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let value = raw.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--http" => args.http = value,
            "--ftp-port" => args.ftp_port = value.parse()?,
            "--ftp-root" => args.ftp_root = value.into(),
            "--organisation" => {
                let (id, label) = value
                    .split_once('=')
                    .ok_or("--organisation takes OR-ID=LABEL")?;
                args.organisations.push((id.to_owned(), label.to_owned()));
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if args.http.is_empty() || args.ftp_port == 0 || args.ftp_root.as_os_str().is_empty() {
        return Err("--http, --ftp-port and --ftp-root are required".into());
    }
    Ok(args)
}

async fn run() -> Result<(), BoxError> {
    let args = args()?;
    let apis = ArchiveApis::start_on(&args.http).await?;
    for (id, label) in &args.organisations {
        apis.organisation(id, Some(label));
    }
    let _ftp = FtpServer::start_on(&args.ftp_root, args.ftp_port).await?;
    println!("ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archive-stubs: {e}");
            ExitCode::FAILURE
        }
    }
}
