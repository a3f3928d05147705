//! Removes an object's MediaHaven records: the essence found by `s3_object_key` and
//! `s3_bucket`, and first the collaterals linked to its fragments' local ids, paced so as not
//! to hit MediaHaven's rate limit. A record already gone counts as removed.

use std::collections::BTreeMap;
use std::time::Duration;

use bucketfn::api::ApiError;
use bucketfn::mediahaven::{Deleted, MediaHaven, Query};

/// What was removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    pub essence: Option<String>,
    pub collaterals: usize,
}

/// Deletes the collaterals, then the essence, of `bucket/key`. `None` when MediaHaven holds
/// no record of it.
pub async fn remove(
    mediahaven: &MediaHaven,
    bucket: &str,
    key: &str,
    delay: Duration,
) -> Result<Option<Removed>, ApiError> {
    let records = mediahaven
        .search(&Query::all_of(&[
            ("s3_object_key", key),
            ("s3_bucket", bucket),
        ]))
        .await?;
    let Some(essence) = records.iter().find(|r| !r.is_fragment) else {
        return Ok(None);
    };
    // Local id -> fragment id of the essence's real fragments; collaterals carry those ids.
    let fragments: BTreeMap<&str, &str> = records
        .iter()
        .filter(|r| r.is_fragment)
        .filter_map(|r| Some((r.local_id.as_deref()?, r.fragment_id.as_str())))
        .collect();
    let mut removed = Removed::default();
    if !fragments.is_empty() {
        let pairs: Vec<(&str, &str)> = fragments
            .keys()
            .map(|id| ("dc_identifier_localid", *id))
            .collect();
        let linked = mediahaven.search(&Query::any_of(&pairs)).await?;
        for collateral in linked
            .iter()
            .filter(|r| !r.is_fragment && r.fragment_id != essence.fragment_id)
        {
            let local_id = collateral.local_id.as_deref().unwrap_or_default();
            let linked_to = fragments.get(local_id).copied().unwrap_or_default();
            let reason = format!(
                "Deleted collateral with local_id {local_id:?} linked to fragment {linked_to:?}: \
                 its essence was removed by an s3 delete-object for bucket {bucket:?} and key {key:?}"
            );
            if mediahaven.delete(&collateral.fragment_id, &reason).await? == Deleted::Now {
                removed.collaterals += 1;
            }
            tokio::time::sleep(delay).await;
        }
    }
    let reason = format!("s3 delete-object for bucket {bucket:?} and key {key:?}");
    mediahaven.delete(&essence.fragment_id, &reason).await?;
    removed.essence = Some(essence.fragment_id.clone());
    Ok(Some(removed))
}
