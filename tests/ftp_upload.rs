//! sidecar-on-create's FTP upload against a real FTP server: the default stores a temporary
//! file and renames it into place, so the name never holds part of a sidecar; `FTP_UPLOAD=direct`
//! stores under the final name for accounts that may not rename; and a default upload to such
//! an account fails permanently, saying which variable to change.

use std::sync::Arc;

use bucketfn::{Env, HandlerError};
use sidecar_on_create::ftp::{FtpSettings, Uploader};

use crate::support::ftp_server::{Account, FtpServer, Operation};
use crate::support::function::free_port;
use crate::support::{BoxError, TestResult};

const DIR: &str = "/VRT/DISK-SHARE-EVENTS";
const NAME: &str = "pid0000001.xml";
const FINAL: &str = "/VRT/DISK-SHARE-EVENTS/pid0000001.xml";
const PARTIAL: &str = "/VRT/DISK-SHARE-EVENTS/.pid0000001.xml.part";
const OBJECT: (&str, &str) = ("mam-highresvideo", "191213-VAN statement.MXF");

/// A transport server for one account, its folder made, and an uploader configured from
/// these extra variables as the function reads them.
async fn transport(
    account: Account,
    extra: &[(&str, &str)],
) -> Result<(tempfile::TempDir, FtpServer, Uploader), BoxError> {
    let root = tempfile::tempdir()?;
    std::fs::create_dir_all(root.path().join(DIR.trim_start_matches('/')))?;
    let port = free_port()?;
    let server = FtpServer::start_for(root.path(), port, account).await?;
    let host = format!("127.0.0.1:{port}");
    let mut pairs = vec![
        ("FTP_HOST", host.as_str()),
        ("FTP_USER", "tra"),
        ("FTP_PASSWORD", "tra-password"),
        ("FTP_TIMEOUT_SECS", "10"),
    ];
    pairs.extend_from_slice(extra);
    let mut env = Env::from_pairs(pairs);
    let settings = FtpSettings::read(&mut env);
    env.finish()?;
    let uploader = Uploader::new(settings.ok_or("no FTP settings")?)?;
    Ok((root, server, uploader))
}

/// A sidecar-sized body that still takes several reads to store.
fn body() -> Vec<u8> {
    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        .iter()
        .copied()
        .cycle()
        .take(4 << 20)
        .collect()
}

#[tokio::test]
async fn a_direct_upload_stores_the_file_under_its_name_without_renaming() -> TestResult {
    let (_root, server, uploader) =
        transport(Account { may_rename: false }, &[("FTP_UPLOAD", "direct")]).await?;
    let body = body();
    uploader.upload(OBJECT, DIR, NAME, &body).await?;
    assert_eq!(server.file(FINAL).as_deref(), Some(body.as_slice()));
    assert_eq!(
        server.operations(),
        vec![Operation::Stored {
            path: FINAL.to_owned(),
            bytes: body.len() as u64
        }]
    );
    // A retried event writes the same bytes under the same name again.
    uploader.upload(OBJECT, DIR, NAME, &body).await?;
    assert_eq!(server.files(), vec![FINAL.to_owned()]);
    Ok(())
}

#[tokio::test]
async fn the_default_upload_never_shows_part_of_a_file_under_its_name() -> TestResult {
    let (root, server, uploader) = transport(Account::default(), &[]).await?;
    let body = Arc::new(body());
    let upload = {
        let body = Arc::clone(&body);
        tokio::spawn(async move { uploader.upload(OBJECT, DIR, NAME, &body).await })
    };
    // Look at the name as a watchfolder would, for as long as the upload runs: whenever the
    // name exists it holds the whole file.
    let watched = root.path().join(FINAL.trim_start_matches('/'));
    let mut looks = 0_u32;
    while !upload.is_finished() {
        if let Ok(seen) = std::fs::read(&watched) {
            assert_eq!(seen.len(), body.len(), "part of the file under its name");
        }
        looks += 1;
        tokio::task::yield_now().await;
    }
    upload.await??;
    assert!(looks > 0);
    assert_eq!(server.file(FINAL).as_deref(), Some(body.as_slice()));
    // Stored whole under the temporary name, then renamed; never stored under the name.
    assert_eq!(
        server.operations(),
        vec![
            Operation::Stored {
                path: PARTIAL.to_owned(),
                bytes: body.len() as u64
            },
            Operation::Renamed {
                from: PARTIAL.to_owned(),
                to: FINAL.to_owned()
            },
        ]
    );
    assert_eq!(server.files(), vec![FINAL.to_owned()]);
    Ok(())
}

#[tokio::test]
async fn an_account_that_may_not_rename_fails_the_default_upload_naming_ftp_upload() -> TestResult {
    let (_root, server, uploader) = transport(Account { may_rename: false }, &[]).await?;
    let Err(error) = uploader.upload(OBJECT, DIR, NAME, b"<sidecar/>").await else {
        return Err("uploaded without the right to rename".into());
    };
    let error = HandlerError::from(error);
    let text = error.to_string();
    // 550: retrying gives the account no right, so the event goes to the dead-letter path.
    assert!(matches!(error, HandlerError::Permanent(_)), "{text}");
    for needle in [
        "FTP_UPLOAD=direct",
        "refused to rename",
        PARTIAL,
        FINAL,
        "mam-highresvideo/191213-VAN statement.MXF",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    // Nothing under the name, and the temporary file deleted where the account may.
    assert_eq!(server.file(FINAL), None);
    assert_eq!(server.files(), Vec::<String>::new());
    Ok(())
}
