//! The objects a function knows, a page at a time, for `/files` and the gallery: its inputs,
//! and, for a function that moves them ([`Handler::moved_inputs`]), the inputs that now live
//! only as a copy beside what was made of them, so a moved file stays on the page.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;

use super::OpsState;
use super::pages::{FileRow, Listed, query};
use crate::function::{Handler, Location};
use crate::storage::{ListPage, StoreError};

/// Where a page starts: a cursor in each listing. Both listings walk in key order; a page takes
/// up to its size from each, so every object appears on exactly one page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct PageCursor {
    /// The last input listed.
    after: Option<String>,
    /// The last object listed where moved inputs are kept.
    moved_after: Option<String>,
    /// `inputs` or `moved`: that listing has nothing more.
    end: Option<String>,
}

const INPUTS_END: &str = "inputs";
const MOVED_END: &str = "moved";

impl PageCursor {
    /// The query string (without `?`) that asks for the page this cursor starts.
    pub(crate) fn query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(after) = &self.after {
            parts.push(format!("after={}", query(after)));
        }
        if let Some(after) = &self.moved_after {
            parts.push(format!("moved_after={}", query(after)));
        }
        if let Some(end) = &self.end {
            parts.push(format!("end={}", query(end)));
        }
        parts.join("&")
    }

    fn ended(&self, listing: &str) -> bool {
        self.end.as_deref() == Some(listing)
    }
}

/// A page of the objects a function knows, each beside its outputs and whether they exist.
pub(crate) struct InputPage {
    /// In key order.
    pub(crate) rows: Vec<FileRow>,
    /// Where the next page starts, when there is one.
    pub(crate) next: Option<PageCursor>,
}

/// Lists up to `limit` inputs of `location` after the cursor (leaving out the function's own
/// prefix) and, for a function that moves its inputs, up to `limit` objects where it keeps them,
/// each moved copy a row of its own unless its input is back in place (then the input's row
/// shows it). HEADs each row's outputs, a few at a time. A store that fails is the answer: 503
/// when it is unavailable, else 502.
pub(crate) async fn input_page<H: Handler>(
    state: &OpsState<H>,
    location: &Location,
    cursor: &PageCursor,
    limit: usize,
) -> Result<InputPage, Response> {
    let moved = state.handler.moved_inputs();
    let inputs = match cursor.ended(INPUTS_END) {
        true => ListPage::default(),
        false => list(state, location, cursor.after.as_deref(), limit).await?,
    };
    let kept = match (&moved, cursor.ended(MOVED_END)) {
        (Some(moved), false) => list(state, moved, cursor.moved_after.as_deref(), limit).await?,
        _ => ListPage::default(),
    };
    let next = next_cursor(cursor, &inputs, &kept, moved.is_some());

    let in_place = inputs.objects.into_iter().filter(|o| {
        location
            .exclude_prefix
            .as_deref()
            .is_none_or(|p| !o.key.starts_with(p))
    });
    let in_place: Vec<(String, Option<Listed>)> = in_place
        .map(|o| {
            let listed = Listed {
                size: o.size,
                modified: o.last_modified,
            };
            (o.key, Some(listed))
        })
        .collect();
    let moved_away = moved_away(state, location, kept).await;

    let mut keys: Vec<(String, Option<Listed>)> = in_place.into_iter().chain(moved_away).collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys.dedup_by(|a, b| a.0 == b.0);
    let rows = futures_util::stream::iter(keys)
        .map(|(key, listed)| {
            let (store, handler) = (Arc::clone(&state.store), Arc::clone(&state.handler));
            async move {
                let mut outputs = Vec::new();
                for derived in handler.outputs_of(&key) {
                    let size = store
                        .head(&derived.bucket, &derived.key)
                        .await
                        .ok()
                        .map(|i| i.size);
                    outputs.push((derived, size));
                }
                FileRow {
                    key,
                    listed,
                    outputs,
                }
            }
        })
        .buffered(8)
        .collect()
        .await;
    Ok(InputPage { rows, next })
}

/// The inputs whose moved copies are among `kept` and that are not in place: a HEAD of each
/// says so, since an input listed in place is on its own page already.
async fn moved_away<H: Handler>(
    state: &OpsState<H>,
    location: &Location,
    kept: ListPage,
) -> Vec<(String, Option<Listed>)> {
    let handler = &state.handler;
    let mut keys: Vec<String> = kept
        .objects
        .iter()
        .filter_map(|o| handler.moved_input(&o.key))
        .filter(|key| key.starts_with(&location.prefix))
        .collect();
    keys.dedup();
    futures_util::stream::iter(keys)
        .map(|key| {
            let store = Arc::clone(&state.store);
            async move {
                let present = store.head(&location.bucket, &key).await.is_ok();
                (!present).then_some((key, None))
            }
        })
        .buffered(8)
        .filter_map(|row| async move { row })
        .collect()
        .await
}

fn next_cursor(
    cursor: &PageCursor,
    inputs: &ListPage,
    kept: &ListPage,
    moves: bool,
) -> Option<PageCursor> {
    let last = |page: &ListPage| page.objects.last().map(|o| o.key.clone());
    let inputs_more = !cursor.ended(INPUTS_END) && inputs.more;
    let kept_more = moves && !cursor.ended(MOVED_END) && kept.more;
    let end = match (inputs_more, kept_more) {
        (false, false) => return None,
        (true, true) => None,
        (false, true) => Some(INPUTS_END.to_owned()),
        (true, false) => Some(MOVED_END.to_owned()),
    };
    Some(PageCursor {
        after: last(inputs).or_else(|| cursor.after.clone()),
        moved_after: last(kept).or_else(|| cursor.moved_after.clone()),
        end,
    })
}

async fn list<H: Handler>(
    state: &OpsState<H>,
    location: &Location,
    after: Option<&str>,
    limit: usize,
) -> Result<ListPage, Response> {
    state
        .store
        .list(&location.bucket, &location.prefix, after, limit)
        .await
        .map_err(|e| {
            let status = match e {
                StoreError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            let reason = crate::outcome::incident("the object store cannot list the files", &e);
            (status, reason).into_response()
        })
}
