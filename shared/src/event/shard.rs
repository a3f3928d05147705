//! Splitting one sweep across the workers of a job array (a Code Engine array job, a
//! Kubernetes Indexed Job, a Lambda fan-out): each worker walks the whole listing but handles
//! only the keys whose hash falls to it, and keeps its own cursor, so that every object is
//! handled by exactly one worker and each resumes on its own.

use std::fmt;
use std::str::FromStr;

/// Worker `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// A shard that cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("{0:?} is not a shard: write INDEX/COUNT, e.g. 0/4")]
    Malformed(String),
    #[error("shard index {index} is not below the worker count {count}")]
    OutOfRange { index: u32, count: u32 },
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        if count == 0 || index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Self { index, count })
    }

    /// Whether `key` is this worker's. FNV-1a, because the split must not change between
    /// builds or machines (std's hasher may), and keys need no protection from collisions
    /// here: a skewed split only makes one worker slower.
    pub fn owns(&self, key: &str) -> bool {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash % u64::from(self.count) == u64::from(self.index)
    }

    /// The name of this worker's cursor or checkpoint beside `key` (`cursor.json` becomes
    /// `cursor.shard-1-of-4.json`), so that workers never share progress.
    pub fn progress_key(&self, key: &str) -> String {
        let tag = format!("shard-{}-of-{}", self.index, self.count);
        match key.rsplit_once('.') {
            Some((stem, ext)) if !ext.contains('/') => format!("{stem}.{tag}.{ext}"),
            _ => format!("{key}.{tag}"),
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || ShardError::Malformed(text.to_owned());
        let (index, count) = text.trim().split_once('/').ok_or_else(malformed)?;
        let index = index.trim().parse().map_err(|_| malformed())?;
        let count = count.trim().parse().map_err(|_| malformed())?;
        Self::new(index, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_belongs_to_exactly_one_worker_and_the_split_is_even() -> Result<(), ShardError> {
        let workers: Vec<Shard> = (0..4).map(|i| Shard::new(i, 4)).collect::<Result<_, _>>()?;
        let mut per_worker = [0usize; 4];
        for n in 0..4000 {
            let key = format!("photos/2024/{n:05}.jpg");
            let owners: Vec<&Shard> = workers.iter().filter(|w| w.owns(&key)).collect();
            assert_eq!(owners.len(), 1, "{key}");
            per_worker[owners[0].index as usize] += 1;
        }
        assert!(
            per_worker.iter().all(|n| (800..1200).contains(n)),
            "{per_worker:?}"
        );
        Ok(())
    }

    #[test]
    fn shards_parse_and_bad_ones_are_named() {
        assert_eq!("1/3".parse(), Ok(Shard { index: 1, count: 3 }));
        assert_eq!(
            "3/3".parse::<Shard>(),
            Err(ShardError::OutOfRange { index: 3, count: 3 })
        );
        assert!(matches!(
            "x".parse::<Shard>(),
            Err(ShardError::Malformed(_))
        ));
        assert!(matches!(
            "0/0".parse::<Shard>(),
            Err(ShardError::OutOfRange { .. })
        ));
    }

    #[test]
    fn each_worker_keeps_its_own_progress() -> Result<(), ShardError> {
        let shard = Shard::new(1, 4)?;
        assert_eq!(
            shard.progress_key("t/.sweep/b/cursor.json"),
            "t/.sweep/b/cursor.shard-1-of-4.json"
        );
        assert_eq!(
            shard.progress_key("t/.sweep/cursor"),
            "t/.sweep/cursor.shard-1-of-4"
        );
        Ok(())
    }
}
