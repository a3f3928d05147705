//! thumbnail-on-create's gallery through `serve --storage DIR`, as a browser and a script use
//! it: uploads stored under safe keys (never over an image that is there) and thumbnailed by
//! the folder's own events; the upload limits and the content check, each naming its limit;
//! "try one" answers a thumbnail and stores nothing; the job button runs a sweep the history
//! shows; "Clear bucket" only when configured and confirmed; the credential on every page and
//! action, and a browser's Basic credential only from the gallery's own origin.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use image::ImageFormat;

use crate::support::function::{HttpReply, THUMBNAIL_ON_CREATE, request};
use crate::support::images::{dimensions, gradient};
use crate::support::served::{OPS_TOKEN, Served};
use crate::support::{BoxError, TestResult};

const BOUNDARY: &str = "bucketfn-test-boundary-7MA4YWxkTrZu0gW";

/// A multipart/form-data body with one file part per `(field, file name, bytes)`.
fn form(files: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"{field}\"; \
                 filename=\"{name}\"\r\ncontent-type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

const MULTIPART: (&str, &str) = (
    "content-type",
    "multipart/form-data; boundary=bucketfn-test-boundary-7MA4YWxkTrZu0gW",
);

async fn gallery(storage: &Path, extra: &[(&'static str, &str)]) -> Result<Served, BoxError> {
    let mut env = vec![
        ("SOURCE_BUCKET", "photos".to_owned()),
        ("LOCAL_EVENTS_INTERVAL_MS", "100".to_owned()),
        ("LOCAL_EVENTS_SETTLE_MS", "200".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    std::fs::create_dir_all(storage.join("photos"))?;
    Served::start(THUMBNAIL_ON_CREATE, storage, &env).await
}

fn location(reply: &HttpReply) -> String {
    reply
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn text(reply: &HttpReply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_stored_under_safe_keys_and_get_their_thumbnails_by_the_folders_events()
-> TestResult {
    let storage = tempfile::tempdir()?;
    let served = gallery(storage.path(), &[]).await?;
    let jpeg = gradient(600, 400, ImageFormat::Jpeg)?;
    let png = gradient(300, 300, ImageFormat::Png)?;
    let body = form(&[
        ("images", "../Lake at Dawn.JPG", &jpeg),
        ("images", "dog12345", &png),
    ]);
    let reply = served
        .call("POST", "/gallery/upload", &[MULTIPART], body)
        .await?;
    assert_eq!(reply.status, 303, "{}", text(&reply));
    assert!(location(&reply).starts_with("/gallery?done=uploaded"));
    let photos = storage.path().join("photos");
    assert_eq!(std::fs::read(photos.join("Lake-at-Dawn.jpg"))?, jpeg);
    assert_eq!(std::fs::read(photos.join("dog12345"))?, png);
    for key in ["Lake-at-Dawn.jpg", "dog12345"] {
        served
            .file_appears(&photos.join(format!("thumbnails/{key}/256.jpg")))
            .await?;
    }
    let state = served.ops("/gallery/state").await?;
    let state: serde_json::Value = serde_json::from_str(&state)?;
    for image in state["images"].as_array().ok_or("no images")? {
        assert_eq!(image["made"], serde_json::json!(["256 px"]), "{state}");
    }
    let page = served.ops("/gallery").await?;
    assert_eq!(
        page.matches("<img alt=\"256 px thumbnail of").count(),
        2,
        "{page}"
    );

    // The same name again is stored beside it, never over it.
    let again = form(&[("images", "Lake at Dawn.JPG", &png)]);
    let reply = served
        .call("POST", "/gallery/upload", &[MULTIPART], again)
        .await?;
    assert_eq!(reply.status, 303, "{}", text(&reply));
    assert_eq!(std::fs::read(photos.join("Lake-at-Dawn.jpg"))?, jpeg);
    assert_eq!(std::fs::read(photos.join("Lake-at-Dawn-2.jpg"))?, png);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_over_a_limit_or_that_are_not_images_are_refused_naming_why() -> TestResult {
    let storage = tempfile::tempdir()?;
    let limits = [
        ("GALLERY_MAX_UPLOAD_BYTES", "5000"),
        ("GALLERY_MAX_FILES", "2"),
    ];
    let served = gallery(storage.path(), &limits).await?;
    let small = gradient(16, 16, ImageFormat::Png)?;
    let large = gradient(800, 800, ImageFormat::Jpeg)?;
    assert!(small.len() < 5000 && large.len() > 5000);
    let cases: [(Vec<u8>, u16, &str); 4] = [
        (
            form(&[("images", "big.png", &large)]),
            413,
            "GALLERY_MAX_UPLOAD_BYTES",
        ),
        (
            form(&[
                ("images", "a.png", &small),
                ("images", "b.png", &small),
                ("images", "c.png", &small),
            ]),
            413,
            "GALLERY_MAX_FILES",
        ),
        (
            form(&[("images", "notes.png", b"BM but only text")]),
            415,
            "not an image (by its first bytes)",
        ),
        (form(&[]), 400, "no image in the form"),
    ];
    for (body, status, names) in cases {
        let reply = served
            .call("POST", "/gallery/upload", &[MULTIPART], body)
            .await?;
        assert_eq!(reply.status, status, "{}", text(&reply));
        assert!(text(&reply).contains(names), "{}", text(&reply));
    }
    // Only the two images before the third of the too-many upload were stored.
    let mut stored: Vec<_> = std::fs::read_dir(storage.path().join("photos"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    stored.sort();
    assert_eq!(stored, ["a.png", "b.png"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn trying_one_answers_its_thumbnail_and_stores_nothing() -> TestResult {
    let storage = tempfile::tempdir()?;
    let served = gallery(storage.path(), &[]).await?;
    let body = form(&[(
        "image",
        "holiday.jpg",
        &gradient(800, 600, ImageFormat::Jpeg)?,
    )]);
    let reply = served
        .call("POST", "/gallery/try", &[MULTIPART], body)
        .await?;
    assert_eq!(reply.status, 200, "{}", text(&reply));
    assert_eq!(reply.headers["content-type"], "image/jpeg");
    assert_eq!(dimensions(&reply.body)?, (256, 192));
    let corrupt = form(&[(
        "image",
        "broken.jpg",
        &b"\xFF\xD8\xFF\xE0 and then nothing"[..],
    )]);
    let reply = served
        .call("POST", "/gallery/try", &[MULTIPART], corrupt)
        .await?;
    assert_eq!(reply.status, 422, "{}", text(&reply));
    assert!(text(&reply).contains("broken.jpg"), "{}", text(&reply));
    assert_eq!(std::fs::read_dir(storage.path().join("photos"))?.count(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_button_runs_a_sweep_that_the_history_shows_and_hide_button_hides_it() -> TestResult
{
    let storage = tempfile::tempdir()?;
    let photos = storage.path().join("photos");
    std::fs::create_dir_all(&photos)?;
    // There before serving: no event makes its thumbnail, the job does.
    std::fs::write(
        photos.join("old.jpg"),
        gradient(300, 200, ImageFormat::Jpeg)?,
    )?;
    let served = gallery(storage.path(), &[]).await?;
    // Without script, a page with a thumbnail still missing reloads itself; once all are
    // made it stays.
    const RELOAD: &str = "<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>";
    let page = served.ops("/gallery").await?;
    assert!(page.contains("Thumbnails Job Runner"), "{page}");
    assert!(page.contains(RELOAD), "{page}");
    let reply = served.call("POST", "/gallery/sweep", &[], "").await?;
    assert_eq!(reply.status, 303, "{}", text(&reply));
    served
        .file_appears(&photos.join("thumbnails/old.jpg/256.jpg"))
        .await?;
    let mut swept = false;
    for _ in 0..100 {
        swept = served
            .history()
            .await?
            .iter()
            .any(|row| row.contains("<td>sweep<br>") && row.contains("1 done"));
        if swept {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(swept, "{:#?}", served.history().await?);
    let page = served.ops("/gallery").await?;
    assert!(!page.contains(RELOAD), "{page}");

    let hidden = tempfile::tempdir()?;
    let served = gallery(hidden.path(), &[("HIDE_BUTTON", "true")]).await?;
    assert!(
        !served
            .ops("/gallery")
            .await?
            .contains("Thumbnails Job Runner")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn clearing_the_bucket_needs_the_setting_and_the_buckets_name() -> TestResult {
    let storage = tempfile::tempdir()?;
    let photos = storage.path().join("photos");
    std::fs::create_dir_all(photos.join("thumbnails/a.jpg"))?;
    std::fs::write(photos.join("a.jpg"), gradient(64, 64, ImageFormat::Jpeg)?)?;
    std::fs::write(photos.join("thumbnails/a.jpg/256.jpg"), b"thumbnail")?;
    let form_of = |name: &str| format!("confirm={name}");
    let urlencoded = ("content-type", "application/x-www-form-urlencoded");

    let off = gallery(storage.path(), &[]).await?;
    assert!(!off.ops("/gallery").await?.contains("Clear bucket"));
    let reply = off
        .call("POST", "/gallery/clear", &[urlencoded], form_of("photos"))
        .await?;
    assert_eq!(reply.status, 403, "{}", text(&reply));
    assert!(text(&reply).contains("GALLERY_CLEAR"));
    drop(off);

    let on = gallery(storage.path(), &[("GALLERY_CLEAR", "true")]).await?;
    assert!(on.ops("/gallery").await?.contains("Clear bucket"));
    let reply = on
        .call("POST", "/gallery/clear", &[urlencoded], form_of("photo"))
        .await?;
    assert_eq!(reply.status, 400, "{}", text(&reply));
    assert!(photos.join("a.jpg").is_file());
    let reply = on
        .call("POST", "/gallery/clear", &[urlencoded], form_of("photos"))
        .await?;
    assert_eq!(reply.status, 303, "{}", text(&reply));
    assert!(
        location(&reply).contains("deleted%202%20object"),
        "{}",
        location(&reply)
    );
    assert!(!photos.join("a.jpg").exists() && !photos.join("thumbnails/a.jpg/256.jpg").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_and_action_needs_the_credential_and_a_browser_acts_only_from_the_gallery()
-> TestResult {
    let storage = tempfile::tempdir()?;
    let served = gallery(storage.path(), &[("GALLERY_CLEAR", "true")]).await?;
    let url = |path: &str| format!("{}{path}", served.url);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("me:{OPS_TOKEN}"))
    );
    let png = gradient(16, 16, ImageFormat::Png)?;
    let upload = || form(&[("images", "a.png", &png)]);
    for (method, path) in [
        ("GET", "/gallery"),
        ("GET", "/gallery/state"),
        ("GET", "/gallery/image?key=a.png"),
        ("POST", "/gallery/upload"),
        ("POST", "/gallery/try"),
        ("POST", "/gallery/sweep"),
        ("POST", "/gallery/clear"),
    ] {
        let reply = request(method, &url(path), &[MULTIPART], upload()).await?;
        assert_eq!(reply.status, 401, "{method} {path} without the credential");
    }
    // A browser's Basic credential: only from the gallery's own pages.
    let host = served.url.trim_start_matches("http://").to_owned();
    let elsewhere = [
        vec![("authorization", basic.as_str())],
        vec![
            ("authorization", basic.as_str()),
            ("sec-fetch-site", "cross-site"),
        ],
        vec![
            ("authorization", basic.as_str()),
            ("origin", "http://evil.example"),
        ],
    ];
    for headers in elsewhere {
        let mut headers = headers.clone();
        headers.push(MULTIPART);
        let reply = request("POST", &url("/gallery/upload"), &headers, upload()).await?;
        assert_eq!(reply.status, 403, "{headers:?}: {}", text(&reply));
    }
    assert_eq!(std::fs::read_dir(storage.path().join("photos"))?.count(), 0);
    let origin = format!("http://{host}");
    let from_the_page = [
        vec![
            ("authorization", basic.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
        vec![
            ("authorization", basic.as_str()),
            ("origin", origin.as_str()),
        ],
    ];
    for headers in from_the_page {
        let mut headers = headers.clone();
        headers.push(MULTIPART);
        let reply = request("POST", &url("/gallery/upload"), &headers, upload()).await?;
        assert_eq!(reply.status, 303, "{headers:?}: {}", text(&reply));
    }
    // The page itself allows its own script and forms, nothing else.
    let page = served.call("GET", "/gallery", &[], "").await?;
    let policy = page.headers["content-security-policy"].to_str()?;
    assert!(policy.contains("script-src 'self'") && policy.contains("form-action 'self'"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn without_ops_token_the_gallery_is_read_only() -> TestResult {
    let storage = tempfile::tempdir()?;
    std::fs::create_dir_all(storage.path().join("photos"))?;
    let ops_port = crate::support::function::free_port()?;
    let port = crate::support::function::free_port()?;
    let env = [
        ("SOURCE_BUCKET", "photos".to_owned()),
        ("PORT", port.to_string()),
        ("OPS_PORT", ops_port.to_string()),
        ("LISTEN_ADDRESS", "127.0.0.1".to_owned()),
    ];
    let dir = storage.path().to_string_lossy().into_owned();
    let process = crate::support::function::FunctionProcess::spawn(
        THUMBNAIL_ON_CREATE,
        &["serve", "--storage", &dir],
        &env,
    )?;
    let ops = format!("http://127.0.0.1:{ops_port}");
    crate::support::function::wait_ready(
        &format!("{ops}/gallery"),
        &process,
        Duration::from_secs(20),
    )
    .await?;
    let png = gradient(16, 16, ImageFormat::Png)?;
    let body = form(&[("images", "a.png", &png)]);
    let headers = [MULTIPART, ("sec-fetch-site", "same-origin")];
    let reply = request("POST", &format!("{ops}/gallery/upload"), &headers, body).await?;
    assert_eq!(reply.status, 403, "{}", text(&reply));
    assert!(text(&reply).contains("OPS_TOKEN"));
    assert_eq!(std::fs::read_dir(storage.path().join("photos"))?.count(), 0);
    Ok(())
}
