//! `serve --storage DIR` sends the bucket events a store would: a file written into the
//! directory while serving (copied in slowly, as a person's `cp` may) becomes one created
//! event and its thumbnail, shown in the history; what was there at start-up, the function's
//! own outputs and hidden state are not announced; a removed file is cleanup-on-remove's
//! event; `LOCAL_EVENTS=false` turns it off.

use std::io::Write;
use std::time::Duration;

use image::ImageFormat;

use crate::support::TestResult;
use crate::support::function::{CLEANUP_ON_REMOVE, THUMBNAIL_ON_CREATE};
use crate::support::images::{dimensions, gradient};
use crate::support::served::Served;

fn env(extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("SOURCE_BUCKETS", "photos".to_owned()),
        ("SOURCE_BUCKET", "photos".to_owned()),
        ("LOCAL_EVENTS_INTERVAL_MS", "100".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_while_serving_is_one_event_and_its_thumbnail() -> TestResult {
    let storage = tempfile::tempdir()?;
    let photos = storage.path().join("photos");
    std::fs::create_dir_all(&photos)?;
    let jpeg = gradient(600, 400, ImageFormat::Jpeg)?;
    std::fs::write(photos.join("before.jpg"), &jpeg)?;
    let served = Served::start(THUMBNAIL_ON_CREATE, storage.path(), &env(&[])).await?;

    // Written in pieces over a few looks, as a slow copy: announced once, complete.
    let mut file = std::fs::File::create(photos.join("dog12345"))?;
    for piece in jpeg.chunks(jpeg.len() / 4 + 1) {
        file.write_all(piece)?;
        file.flush()?;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    drop(file);
    let thumbnail = photos.join("thumbnails/dog12345/256.jpg");
    served.file_appears(&thumbnail).await?;
    assert_eq!(dimensions(&std::fs::read(&thumbnail)?)?, (256, 171));

    // The history is written behind; give it and a few more looks time.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let history = served.history().await?;
    let about = |key: &str| history.iter().filter(|r| r.contains(key)).count();
    assert_eq!(about("photos/dog12345"), 1, "{history:#?}");
    assert!(
        history[0].contains("wrote photos/thumbnails/dog12345/256.jpg"),
        "{history:#?}"
    );
    // Neither what was there before nor the function's own thumbnail is an event.
    assert_eq!(about("before.jpg"), 0, "{history:#?}");
    assert_eq!(history.len(), 1, "{history:#?}");
    assert!(!photos.join("thumbnails/before.jpg").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_file_is_cleanup_on_removes_event() -> TestResult {
    let storage = tempfile::tempdir()?;
    let photos = storage.path().join("photos");
    let folder = photos.join("thumbnails/a cat.jpg");
    std::fs::create_dir_all(&folder)?;
    std::fs::write(
        photos.join("a cat.jpg"),
        gradient(64, 64, ImageFormat::Jpeg)?,
    )?;
    std::fs::write(folder.join("256.jpg"), gradient(32, 32, ImageFormat::Jpeg)?)?;
    let served = Served::start(CLEANUP_ON_REMOVE, storage.path(), &env(&[])).await?;
    // Give the watcher its first look before the removal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_file(photos.join("a cat.jpg"))?;
    for _ in 0..400 {
        if !folder.join("256.jpg").exists() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("the thumbnail stayed; logs:\n{}", served.process.logs()).into())
}

#[tokio::test(flavor = "multi_thread")]
async fn with_local_events_off_a_written_file_is_left_to_the_sweep() -> TestResult {
    let storage = tempfile::tempdir()?;
    let photos = storage.path().join("photos");
    std::fs::create_dir_all(&photos)?;
    let served = Served::start(
        THUMBNAIL_ON_CREATE,
        storage.path(),
        &env(&[("LOCAL_EVENTS", "false")]),
    )
    .await?;
    std::fs::write(photos.join("a.jpg"), gradient(64, 64, ImageFormat::Jpeg)?)?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(served.history().await?.is_empty());
    assert!(!photos.join("thumbnails").exists());
    Ok(())
}
