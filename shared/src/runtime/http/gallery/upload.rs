//! The gallery's uploads: multipart forms read under their limits (`GALLERY_MAX_FILES` images
//! of at most `GALLERY_MAX_UPLOAD_BYTES` each, by the request's deadline), each image known by
//! its first bytes, stored under a key made safe from its file name, never over an object
//! that is there.

use std::time::Instant;

use axum::extract::Multipart;
use axum::extract::multipart::Field;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};

use super::super::AppState;
use crate::function::{Handler, Location};
use crate::sniff::image_kind;
use crate::storage::{Condition, NewObject, StoreError};

/// Why an upload was refused, with the status it is answered with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("{name:?} is over {limit} bytes (GALLERY_MAX_UPLOAD_BYTES); nothing of it was stored")]
    TooLarge { name: String, limit: u64 },
    #[error("more than {0} images in one upload (GALLERY_MAX_FILES); the rest were not stored")]
    TooMany(usize),
    #[error("{0:?} is not an image (by its first bytes); it was not stored")]
    NotAnImage(String),
    #[error("no image in the form (a file field named images, or image to try one)")]
    Empty,
    #[error("the upload was not finished by the request's deadline (REQUEST_TIMEOUT_SECS)")]
    TooSlow,
    #[error("the form cannot be read: {0}")]
    Malformed(String),
    #[error("the image could not be stored: {0}")]
    Store(#[from] StoreError),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::TooLarge { .. } | Self::TooMany(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotAnImage(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Empty | Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::TooSlow => StatusCode::REQUEST_TIMEOUT,
            Self::Store(StoreError::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) => StatusCode::BAD_GATEWAY,
        };
        let text = match &self {
            Self::Store(e) => crate::outcome::incident("the image could not be stored", e),
            _ => format!("{self}\n"),
        };
        (status, text).into_response()
    }
}

/// One image of a form: its file name as sent, and its bytes, known to be an image.
struct Image {
    name: String,
    body: Bytes,
    content_type: &'static str,
}

/// The next image of the form, or `None` at its end; fields that are not files are skipped.
async fn next_image(
    multipart: &mut Multipart,
    limit: u64,
    deadline: Instant,
) -> Result<Option<Image>, Refusal> {
    let next = tokio::time::timeout_at(deadline.into(), async {
        loop {
            let Some(field) = multipart
                .next_field()
                .await
                .map_err(|e| Refusal::Malformed(e.body_text()))?
            else {
                return Ok(None);
            };
            let Some(name) = field.file_name().map(str::to_owned) else {
                continue;
            };
            let body = read_field(field, &name, limit).await?;
            if body.is_empty() && name.is_empty() {
                // A file input left empty.
                continue;
            }
            let kind = image_kind(&body).ok_or_else(|| Refusal::NotAnImage(name.clone()))?;
            return Ok(Some(Image {
                name,
                body,
                content_type: kind.content_type(),
            }));
        }
    });
    next.await.map_err(|_| Refusal::TooSlow)?
}

/// A field's bytes, refused as soon as they pass `limit`.
async fn read_field(mut field: Field<'_>, name: &str, limit: u64) -> Result<Bytes, Refusal> {
    let mut body = BytesMut::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| Refusal::Malformed(e.body_text()))?
    {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(Refusal::TooLarge {
                name: name.to_owned(),
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Stores every image of the form under `location`; the keys written, in order. Refused
/// images stop the upload there (those before are stored; the answer says which).
pub(crate) async fn store_all<H: Handler>(
    state: &AppState<H>,
    location: &Location,
    mut multipart: Multipart,
    deadline: Instant,
) -> Result<Vec<String>, Refusal> {
    let settings = &state.settings.gallery;
    let mut keys = Vec::new();
    while let Some(image) = next_image(&mut multipart, settings.max_upload_bytes, deadline).await? {
        if keys.len() == settings.max_files {
            return Err(Refusal::TooMany(settings.max_files));
        }
        keys.push(store_one(state, location, image).await?);
    }
    if keys.is_empty() {
        return Err(Refusal::Empty);
    }
    Ok(keys)
}

/// The one image of a "try one" form.
pub(crate) async fn read_one<H: Handler>(
    state: &AppState<H>,
    mut multipart: Multipart,
    deadline: Instant,
) -> Result<(String, Bytes), Refusal> {
    let limit = state.settings.gallery.max_upload_bytes;
    let image = next_image(&mut multipart, limit, deadline)
        .await?
        .ok_or(Refusal::Empty)?;
    Ok((image.name, image.body))
}

/// Tries the safe key of the image's name, then `-2`, `-3`, ... before its extension, each
/// only if the key is free, so that an upload never replaces an image.
async fn store_one<H: Handler>(
    state: &AppState<H>,
    location: &Location,
    image: Image,
) -> Result<String, Refusal> {
    let (stem, extension) = safe_name(&image.name);
    for n in 1..=20u32 {
        let name = match n {
            1 => format!("{stem}{extension}"),
            n => format!("{stem}-{n}{extension}"),
        };
        let key = format!("{}{name}", location.prefix);
        let object = NewObject {
            body: image.body.clone(),
            content_type: image.content_type.to_owned(),
            metadata: Default::default(),
        };
        match state
            .ops
            .store
            .put_if(&location.bucket, &key, object, Condition::Absent)
            .await
        {
            Ok(()) => return Ok(key),
            Err(StoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Unavailable {
        op: crate::storage::Op::Put,
        bucket: location.bucket.clone(),
        key: format!("{}{stem}{extension}", location.prefix),
        source: "twenty images of this name are there already".into(),
    }
    .into())
}

/// Longest name kept from an upload (bytes of the stem).
const MAX_STEM: usize = 80;

/// A file name made safe as the last part of a key: the part after any path, letters and
/// digits of any script, `-` and `_` kept, everything else (spaces, dots inside, `%`, `+`,
/// control characters) one `-`; the extension, when it is letters and digits, kept in lower
/// case. Never empty, never hidden (a leading `.`), never a folder.
fn safe_name(given: &str) -> (String, String) {
    let base = given.rsplit(['/', '\\']).next().unwrap_or(given);
    let (stem, extension) = match base.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty()
                && (1..=8).contains(&ext.len())
                && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            (stem, format!(".{}", ext.to_ascii_lowercase()))
        }
        _ => (base, String::new()),
    };
    let mut safe = String::new();
    for c in stem.chars() {
        let keep = c.is_alphanumeric() || c == '-' || c == '_';
        match keep {
            true => safe.push(c),
            false if !safe.ends_with('-') => safe.push('-'),
            false => {}
        }
    }
    let mut safe = safe.trim_matches('-').to_owned();
    if safe.len() > MAX_STEM {
        let mut cut = MAX_STEM;
        while !safe.is_char_boundary(cut) {
            cut -= 1;
        }
        safe.truncate(cut);
    }
    if safe.is_empty() {
        safe = "image".to_owned();
    }
    (safe, extension)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_safe_keys_that_keep_what_a_person_recognises() {
        let cases = [
            ("dog12345", ("dog12345", "")),
            ("Lake at Dawn.JPG", ("Lake-at-Dawn", ".jpg")),
            // A climb out with both separators (written so, the literal is no path of ours).
            ("..\\../etc/passwd", ("passwd", "")),
            ("C:\\Users\\me\\cat.png", ("cat", ".png")),
            (".hidden.jpg", ("hidden", ".jpg")),
            // After the last `/`, as a path's file name.
            ("<script>alert(1)</script>.gif", ("script", ".gif")),
            (
                "<img src=x onerror=alert(1)>.gif",
                ("img-src-x-onerror-alert-1", ".gif"),
            ),
            ("100% + café.webp", ("100-café", ".webp")),
            ("a\u{1}b\nc.jpg", ("a-b-c", ".jpg")),
            ("...", ("image", "")),
            ("", ("image", "")),
            ("photo.tar.gz", ("photo-tar", ".gz")),
            ("x.not an extension", ("x-not-an-extension", "")),
        ];
        for (given, (stem, extension)) in cases {
            let (s, e) = safe_name(given);
            assert_eq!((s.as_str(), e.as_str()), (stem, extension), "{given:?}");
        }
        let (long, _) = safe_name(&"é".repeat(100));
        assert!(
            long.len() <= MAX_STEM && long.chars().all(|c| c == 'é'),
            "{long}"
        );
    }
}
