//! What a store can be relied on for: the conditions each operation takes, and (later in this
//! module) the probe that checks a store enforces them before claims, leases or moves use it.

use super::{Op, StoreError};

impl StoreError {
    /// A delete or copy asked to wait for the key to be free, which only a write can.
    pub(crate) fn absent_condition_refused(op: Op, bucket: &str, key: &str) -> Self {
        Self::Unsupported {
            bucket: bucket.to_owned(),
            capability: format!("{op} {key:?} cannot be conditional on the key being free"),
            consequence: "nothing is changed".to_owned(),
        }
    }
}
