//! thumbnail-on-create's `/files` through `serve --storage DIR`, as seed 000's files page: every
//! object the function knows with its presence in each bucket involved, so that in move mode
//! (`DELETE_SOURCE`) a processed image stays on the page with its thumbnails and its copy; one
//! column per configured size whatever the first row is; every object on exactly one page.

use std::collections::BTreeMap;
use std::time::Duration;

use image::ImageFormat;

use crate::support::TestResult;
use crate::support::function::THUMBNAIL_ON_CREATE;
use crate::support::images::gradient;
use crate::support::served::Served;

/// One row of `/files`: the key and its cells' text, markup removed.
#[derive(Debug)]
struct Row {
    key: String,
    cells: Vec<String>,
}

fn without_markup(html: &str) -> String {
    let mut text = String::new();
    let mut inside = false;
    for c in html.chars() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            _ if !inside => text.push(c),
            _ => {}
        }
    }
    text.replace("&amp;", "&").trim().to_owned()
}

/// The column headings, the rows and the next page's link of a `/files` page.
fn read_page(page: &str) -> (Vec<String>, Vec<Row>, Option<String>) {
    let head = page
        .split("<thead>")
        .nth(1)
        .and_then(|rest| rest.split("</thead>").next())
        .unwrap_or("");
    let headings = head
        .split("<th>")
        .skip(1)
        .map(|h| without_markup(h.split("</th>").next().unwrap_or("")))
        .collect();
    let rows = page
        .split("<tr><td class=\"key\">")
        .skip(1)
        .map(|row| {
            let row = row.split("</tr>").next().unwrap_or("");
            let mut cells = row.split("</td>").map(without_markup);
            let key = cells.next().unwrap_or_default();
            Row {
                key,
                cells: cells.collect(),
            }
        })
        .collect();
    let next = page
        .split("<a href=\"/files?")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(|query| format!("/files?{}", query.replace("&amp;", "&")));
    (headings, rows, next)
}

#[tokio::test(flavor = "multi_thread")]
async fn in_move_mode_a_moved_image_stays_on_the_files_page_with_its_thumbnails() -> TestResult {
    let scratch = tempfile::tempdir()?;
    let storage = scratch.path();
    std::fs::create_dir_all(storage.join("photos"))?;
    std::fs::create_dir_all(storage.join("thumbs"))?;
    // The first row in key order has no thumbnails at all: its keys would pass S3's limit.
    let long = (0..5)
        .map(|_| "d".repeat(200))
        .collect::<Vec<_>>()
        .join("/");
    std::fs::create_dir_all(storage.join("photos/0").join(&long))?;
    std::fs::write(
        storage.join("photos/0").join(&long).join("x.jpg"),
        b"not read",
    )?;
    std::fs::write(
        storage.join("photos/notes.txt"),
        b"a file that is not an image",
    )?;
    let served = Served::start(
        THUMBNAIL_ON_CREATE,
        storage,
        &[
            ("SOURCE_BUCKET", "photos".to_owned()),
            ("THUMBNAIL_BUCKET", "thumbs".to_owned()),
            ("THUMBNAIL_SIZES", "64,128".to_owned()),
            ("DELETE_SOURCE", "true".to_owned()),
            ("GALLERY_CLEAR", "true".to_owned()),
            ("LOCAL_EVENTS_INTERVAL_MS", "100".to_owned()),
            ("LOCAL_EVENTS_SETTLE_MS", "200".to_owned()),
        ],
    )
    .await?;

    // An image lands while serving: its event makes the thumbnails and moves it.
    std::fs::write(
        storage.join("photos/lake.jpg"),
        gradient(300, 200, ImageFormat::Jpeg)?,
    )?;
    let folder = storage.join("thumbs/thumbnails/photos/lake.jpg");
    served.file_appears(&folder.join("original.jpg")).await?;
    for _ in 0..200 {
        if !storage.join("photos/lake.jpg").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!storage.join("photos/lake.jpg").exists(), "not moved");

    let (headings, rows, next) = read_page(&served.ops("/files").await?);
    assert_eq!(
        headings,
        [
            "Object",
            "In photos/",
            "Modified",
            "64 px",
            "128 px",
            "moved copy"
        ],
        "{rows:?}"
    );
    assert_eq!(next, None);
    let by_key: BTreeMap<&str, &Row> = rows.iter().map(|r| (r.key.as_str(), r)).collect();
    assert_eq!(by_key.len(), 3, "{rows:?}");
    let lake = by_key
        .get("lake.jpg")
        .ok_or("the moved image left the page")?;
    assert!(lake.cells[0].contains("moved away"), "{lake:?}");
    for cell in &lake.cells[2..5] {
        assert!(cell.starts_with("present"), "{lake:?}");
    }
    let notes = by_key.get("notes.txt").ok_or("notes.txt missing")?;
    assert!(notes.cells[0].starts_with("present"), "{notes:?}");
    assert!(
        notes.cells[2..5].iter().all(|c| c == "missing"),
        "{notes:?}"
    );
    let first = &rows[0];
    assert!(first.key.starts_with("0/ddd"), "{rows:?}");
    assert!(first.cells[2..5].iter().all(|c| c == "none"), "{first:?}");
    // The thumbnails of the moved image are served from the page.
    let thumbnail = served
        .call(
            "GET",
            "/files/object?input=lake.jpg&label=64%20px",
            &[],
            Vec::new(),
        )
        .await?;
    assert_eq!(thumbnail.status, 200);

    // The gallery shows the moved image with its thumbnails too, and clearing the bucket
    // takes the moved image's folder with the rest.
    let gallery = served.ops("/gallery").await?;
    assert!(gallery.contains("data-key=\"lake.jpg\""), "{gallery}");
    assert!(gallery.contains("(moved)"), "{gallery}");
    let form = ("content-type", "application/x-www-form-urlencoded");
    let cleared = served
        .call("POST", "/gallery/clear", &[form], "confirm=photos")
        .await?;
    assert_eq!(
        cleared.status,
        303,
        "{}",
        String::from_utf8_lossy(&cleared.body)
    );
    assert!(
        !folder.exists() || std::fs::read_dir(&folder)?.next().is_none(),
        "{folder:?}"
    );
    let (_, rows, _) = read_page(&served.ops("/files").await?);
    assert!(rows.is_empty(), "{rows:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_object_in_place_or_moved_is_on_exactly_one_page() -> TestResult {
    let scratch = tempfile::tempdir()?;
    let storage = scratch.path();
    let folders = storage.join("photos/thumbnails");
    // 30 objects in place and 40 moved ones (their copies and thumbnails in the folders the
    // layout gives them), one of them back in place since: more than a page of each.
    for i in 0..30 {
        std::fs::create_dir_all(storage.join("photos/in"))?;
        std::fs::write(storage.join(format!("photos/in/s{i:02}.txt")), b"text")?;
    }
    for i in 0..40 {
        let folder = folders.join(format!("in/m{i:02}.jpg"));
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join("original.jpg"), b"copy")?;
        std::fs::write(folder.join("256.jpg"), b"thumbnail")?;
    }
    std::fs::write(storage.join("photos/in/m07.jpg"), b"back")?;
    // Not a copy of anything: a thumbnail alone, and a folder outside SOURCE_PREFIX.
    std::fs::create_dir_all(folders.join("in/orphan.jpg"))?;
    std::fs::write(folders.join("in/orphan.jpg/256.jpg"), b"thumbnail")?;
    std::fs::create_dir_all(folders.join("elsewhere/z.jpg"))?;
    std::fs::write(folders.join("elsewhere/z.jpg/original.jpg"), b"copy")?;
    let served = Served::start(
        THUMBNAIL_ON_CREATE,
        storage,
        &[
            ("SOURCE_BUCKET", "photos".to_owned()),
            ("SOURCE_PREFIX", "in/".to_owned()),
            ("DELETE_SOURCE", "true".to_owned()),
        ],
    )
    .await?;

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut path = Some("/files".to_owned());
    let mut pages = 0;
    while let Some(at) = path {
        pages += 1;
        assert!(pages <= 10, "the pages never end");
        let (headings, rows, next) = read_page(&served.ops(&at).await?);
        assert_eq!(headings[3..], ["256 px", "moved copy"], "{at}");
        for row in rows {
            let moved = row.cells[0].contains("moved away");
            assert_eq!(
                moved,
                row.key.contains("/m") && row.key != "in/m07.jpg",
                "{row:?}"
            );
            *seen.entry(row.key).or_default() += 1;
        }
        path = next;
    }
    assert!(pages >= 2, "70 objects on {pages} page(s)");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "on more than one page: {twice:?}");
    let mut expected: Vec<String> = (0..30).map(|i| format!("in/s{i:02}.txt")).collect();
    expected.extend((0..40).map(|i| format!("in/m{i:02}.jpg")));
    expected.sort();
    assert_eq!(seen.into_keys().collect::<Vec<_>>(), expected);
    Ok(())
}
