//! Removes an object's MediaHaven records: the essence found by `s3_object_key` and
//! `s3_bucket`, and first the collaterals linked to its fragments' local ids, paced so as not
//! to hit MediaHaven's rate limit. A record already gone counts as removed. A search only
//! proposes records (MediaHaven may match more loosely than the query reads): only those
//! whose bucket and key are exactly the event's, and collaterals whose local id is exactly
//! one of their fragments', are deleted.

use std::collections::BTreeMap;
use std::time::Duration;

use bucketfn::api::ApiError;
use bucketfn::api::mediahaven::{Deleted, MediaHaven, Query, Record};

/// What was removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    pub essence: Option<String>,
    pub collaterals: usize,
}

/// The records of exactly one object: its essence, and its real fragments by local id.
struct Archived<'a> {
    essence: &'a Record,
    /// Local id -> fragment id; collaterals carry those ids.
    fragments: BTreeMap<&'a str, &'a str>,
}

impl<'a> Archived<'a> {
    /// The records of `bucket/key` among `found`; `None` when there is no essence of it.
    fn of(found: &'a [Record], bucket: &str, key: &str) -> Option<Self> {
        let exact = || found.iter().filter(|r| r.is_of(bucket, key));
        let essence = exact().find(|r| !r.is_fragment)?;
        let fragments = exact()
            .filter(|r| r.is_fragment)
            .filter_map(|r| Some((r.local_id.as_deref()?, r.fragment_id.as_str())))
            .collect();
        Some(Self { essence, fragments })
    }

    /// The collaterals among `linked`, with the local id and fragment that link them.
    fn collaterals<'l>(&self, linked: &'l [Record]) -> Vec<(&'l Record, &'l str, &'a str)> {
        linked
            .iter()
            .filter(|r| !r.is_fragment && r.fragment_id != self.essence.fragment_id)
            .filter_map(|r| {
                let local_id = r.local_id.as_deref()?;
                Some((r, local_id, *self.fragments.get(local_id)?))
            })
            .collect()
    }
}

/// Deletes the collaterals, then the essence, of `bucket/key`. `None` when MediaHaven holds
/// no record of it.
pub async fn remove(
    mediahaven: &MediaHaven,
    bucket: &str,
    key: &str,
    delay: Duration,
) -> Result<Option<Removed>, ApiError> {
    let found = mediahaven
        .search(&Query::all_of(&[
            ("s3_object_key", key),
            ("s3_bucket", bucket),
        ]))
        .await?;
    let Some(archived) = Archived::of(&found, bucket, key) else {
        return Ok(None);
    };
    let mut removed = Removed::default();
    if !archived.fragments.is_empty() {
        let pairs: Vec<(&str, &str)> = archived
            .fragments
            .keys()
            .map(|id| ("dc_identifier_localid", *id))
            .collect();
        let linked = mediahaven.search(&Query::any_of(&pairs)).await?;
        for (collateral, local_id, linked_to) in archived.collaterals(&linked) {
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
    let essence = &archived.essence.fragment_id;
    let reason = format!("s3 delete-object for bucket {bucket:?} and key {key:?}");
    mediahaven.delete(essence, &reason).await?;
    removed.essence = Some(essence.clone());
    Ok(Some(removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn record(id: &str, is_fragment: bool, object: Option<(&str, &str)>, local: &str) -> Record {
        Record {
            fragment_id: id.to_owned(),
            is_fragment,
            pid: None,
            local_id: (!local.is_empty()).then(|| local.to_owned()),
            s3_bucket: object.map(|(b, _)| b.to_owned()),
            s3_object_key: object.map(|(_, k)| k.to_owned()),
            cp_id: None,
            md5: None,
            object_use: None,
        }
    }

    #[test]
    fn only_records_of_exactly_the_bucket_and_key_are_the_objects() -> TestResult {
        let this = Some(("media", "in/clip.mxf"));
        // What a loose index may answer for bucket "media" and key "in/clip.mxf".
        let found = [
            record(
                "OTHER-BUCKET",
                false,
                Some(("media-old", "in/clip.mxf")),
                "",
            ),
            record("CASE", false, Some(("media", "in/CLIP.mxf")), ""),
            record("SPACE", false, Some(("media", " in/clip.mxf")), ""),
            record("PREFIX", false, Some(("media", "in/clip")), ""),
            record("NO-FIELDS", false, None, ""),
            record(
                "LOOSE-FRAGMENT",
                true,
                Some(("media", "in/clip.mxf.bak")),
                "M9",
            ),
            record("FRAGMENT", true, this, "M1"),
            record("ESSENCE", false, this, ""),
        ];
        let archived =
            Archived::of(&found, "media", "in/clip.mxf").ok_or("the exact essence is missed")?;
        assert_eq!(archived.essence.fragment_id, "ESSENCE");
        assert_eq!(
            archived.fragments.into_iter().collect::<Vec<_>>(),
            [("M1", "FRAGMENT")]
        );
        assert!(Archived::of(&found[..6], "media", "in/clip.mxf").is_none());
        Ok(())
    }

    #[test]
    fn collaterals_are_those_whose_local_id_is_exactly_a_fragments() -> TestResult {
        let this = Some(("media", "in/clip.mxf"));
        let found = [
            record("ESSENCE", false, this, ""),
            record("FRAGMENT", true, this, "M1"),
        ];
        let archived =
            Archived::of(&found, "media", "in/clip.mxf").ok_or("the exact essence is missed")?;
        let linked = [
            record("SUBS", false, Some(("collaterals", "M1/subs.srt")), "M1"),
            record("NEAR", false, Some(("collaterals", "M10/subs.srt")), "M10"),
            record("CASE", false, Some(("collaterals", "m1/subs.srt")), "m1"),
            record("NO-ID", false, None, ""),
            record("FRAGMENT", true, this, "M1"),
            record("ESSENCE", false, this, "M1"),
        ];
        let ids: Vec<(&str, &str, &str)> = archived
            .collaterals(&linked)
            .into_iter()
            .map(|(r, local, fragment)| (r.fragment_id.as_str(), local, fragment))
            .collect();
        assert_eq!(ids, [("SUBS", "M1", "FRAGMENT")]);
        Ok(())
    }
}
