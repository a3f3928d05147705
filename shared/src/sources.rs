//! The buckets (and parts of buckets) a function serves, from `SOURCE_BUCKETS`: the runtime
//! refuses every event outside them before a handler sees it, so that a forged or misrouted
//! event cannot make a function read, publish or archive objects of a bucket it does not serve.

use std::fmt;

use crate::config::Env;
use crate::event::{EventKind, ObjectEvent};

/// The variable that lists the sources.
pub const VARIABLE: &str = "SOURCE_BUCKETS";
/// The one bucket that stands for the list when [`VARIABLE`] is not set.
const FALLBACK: &str = "SOURCE_BUCKET";

/// Where the events a function accepts may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sources {
    /// Any bucket: `SOURCE_BUCKETS=*`, or the laptop mode (`--storage DIR`) with no list.
    Any,
    /// Only these buckets and prefixes; `variable` is the one they were read from, for the
    /// messages.
    Only {
        entries: Vec<Entry>,
        variable: &'static str,
    },
}

/// One `bucket` or `bucket/prefix` of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub bucket: String,
    /// Empty for the whole bucket.
    pub prefix: String,
}

impl Entry {
    fn covers(&self, bucket: &str, key: &str) -> bool {
        self.bucket == bucket && key.starts_with(&self.prefix)
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            f.write_str(&self.bucket)
        } else {
            write!(f, "{}/{}", self.bucket, self.prefix)
        }
    }
}

/// An event for a bucket, or a part of one, that the function does not serve. Permanent: the
/// same event is refused every time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotServed {
    #[error("bucket {bucket:?} is not one this function serves ({variable})")]
    Bucket {
        bucket: String,
        variable: &'static str,
    },
    #[error(
        "{key:?} in bucket {bucket:?} is not under a prefix this function serves there ({variable})"
    )]
    Prefix {
        bucket: String,
        key: String,
        variable: &'static str,
    },
}

impl Sources {
    /// `SOURCE_BUCKETS` (comma-separated `bucket` or `bucket/prefix`, or `*` for any bucket),
    /// else the one bucket `SOURCE_BUCKET` names; `None` when neither is set, which the runtime
    /// decides on (any bucket with `--storage DIR`, no start against S3). A `SOURCE_BUCKET`
    /// outside the list is a problem: its scheduled sweeps would be refused.
    pub fn read(env: &mut Env) -> Option<Self> {
        let fallback = env.optional::<String>(FALLBACK);
        let Some(raw) = env.optional::<String>(VARIABLE) else {
            return fallback.map(|bucket| Self::Only {
                entries: vec![Entry {
                    bucket,
                    prefix: String::new(),
                }],
                variable: FALLBACK,
            });
        };
        let items: Vec<&str> = raw
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .collect();
        if items == ["*"] {
            return Some(Self::Any);
        }
        let mut entries = Vec::with_capacity(items.len());
        for item in items {
            let (bucket, prefix) = item.split_once('/').unwrap_or((item, ""));
            if bucket.is_empty() || bucket == "*" || bucket.contains(char::is_whitespace) {
                env.problem(
                    VARIABLE,
                    format!(
                        "{item:?} is not `bucket` or `bucket/prefix` (`*` alone stands for any \
                         bucket)"
                    ),
                );
                continue;
            }
            entries.push(Entry {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if let Some(bucket) = fallback
            && !entries.is_empty()
            && !entries.iter().any(|e| e.bucket == bucket)
        {
            env.problem(
                FALLBACK,
                format!(
                    "bucket {bucket:?} is not in {VARIABLE}, so the sweeps it is for would be \
                     refused"
                ),
            );
        }
        Some(Self::Only {
            entries,
            variable: VARIABLE,
        })
    }

    /// Whether the function may act on `event`. Object events must lie in a listed bucket and
    /// under the entry's prefix. A sweep names its bucket only on the command line (schedules
    /// name none, and then the function sweeps its configured `SOURCE_BUCKET`, which is
    /// checked at start-up); its prefix must lie under the entry's, unless it gives none.
    /// Bucket-level events (no key) pass: no function acts on them.
    pub fn admit(&self, event: &ObjectEvent) -> Result<(), NotServed> {
        let Self::Only { entries, variable } = self else {
            return Ok(());
        };
        let (bucket, key) = (event.bucket.as_str(), event.key.as_str());
        let admitted = match event.kind {
            EventKind::Sweep if bucket.is_empty() => true,
            EventKind::Sweep => entries
                .iter()
                .any(|e| e.bucket == bucket && (key.is_empty() || key.starts_with(&e.prefix))),
            EventKind::Other if key.is_empty() => true,
            _ => entries.iter().any(|e| e.covers(bucket, key)),
        };
        if admitted {
            return Ok(());
        }
        let variable = *variable;
        if entries.iter().any(|e| e.bucket == bucket) {
            Err(NotServed::Prefix {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                variable,
            })
        } else {
            Err(NotServed::Bucket {
                bucket: bucket.to_owned(),
                variable,
            })
        }
    }
}

impl fmt::Display for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Only { entries, .. } => {
                let shown: Vec<String> = entries.iter().map(Entry::to_string).collect();
                f.write_str(&shown.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<Sources>, crate::config::ConfigError> {
        let mut env = Env::from_pairs(pairs.iter().copied());
        let sources = Sources::read(&mut env);
        env.finish()?;
        Ok(sources)
    }

    fn created(bucket: &str, key: &str) -> ObjectEvent {
        ObjectEvent::requested(EventKind::Created, bucket, key.to_owned())
    }

    #[test]
    fn buckets_and_prefixes_are_listed_and_star_is_any() -> TestResult {
        let sources = read(&[("SOURCE_BUCKETS", " media, logs/vpc/ ,")])?.ok_or("unset")?;
        assert_eq!(sources.to_string(), "media,logs/vpc/");
        assert_eq!(read(&[("SOURCE_BUCKETS", "*")])?, Some(Sources::Any));
        // A trailing slash with nothing after it is the whole bucket (a template's empty prefix).
        let whole = read(&[("SOURCE_BUCKETS", "media/")])?.ok_or("unset")?;
        assert_eq!(whole.admit(&created("media", "any/key")), Ok(()));
        Ok(())
    }

    #[test]
    fn source_bucket_stands_for_the_list_and_neither_is_none() -> TestResult {
        let sources = read(&[("SOURCE_BUCKET", "photos")])?.ok_or("unset")?;
        assert_eq!(sources.admit(&created("photos", "a.png")), Ok(()));
        let err = sources
            .admit(&created("other", "a.png"))
            .err()
            .ok_or("admitted")?;
        assert_eq!(
            err.to_string(),
            "bucket \"other\" is not one this function serves (SOURCE_BUCKET)"
        );
        assert_eq!(read(&[])?, None);
        assert_eq!(read(&[("SOURCE_BUCKETS", " ")])?, None);
        Ok(())
    }

    #[test]
    fn bad_entries_and_a_source_bucket_outside_the_list_are_problems() -> TestResult {
        let err = read(&[
            ("SOURCE_BUCKETS", "media,*,/x,my bucket"),
            ("SOURCE_BUCKET", "photos"),
        ])
        .err()
        .ok_or("accepted")?;
        let vars: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            vars,
            [
                "SOURCE_BUCKETS",
                "SOURCE_BUCKETS",
                "SOURCE_BUCKETS",
                "SOURCE_BUCKET"
            ]
        );
        assert!(
            err.to_string()
                .contains("\"photos\" is not in SOURCE_BUCKETS"),
            "{err}"
        );
        read(&[("SOURCE_BUCKETS", "media/in/"), ("SOURCE_BUCKET", "media")])?;
        Ok(())
    }

    #[test]
    fn object_events_outside_the_buckets_or_prefixes_are_refused_naming_them() -> TestResult {
        let sources = read(&[("SOURCE_BUCKETS", "media/in/,logs")])?.ok_or("unset")?;
        assert_eq!(sources.admit(&created("media", "in/a.png")), Ok(()));
        assert_eq!(sources.admit(&created("logs", "anything")), Ok(()));
        let mut removed = created("logs", "x");
        removed.kind = EventKind::Removed;
        assert_eq!(sources.admit(&removed), Ok(()));
        let foreign = sources
            .admit(&created("elsewhere", "in/a.png"))
            .err()
            .ok_or("admitted")?;
        assert_eq!(
            foreign.to_string(),
            "bucket \"elsewhere\" is not one this function serves (SOURCE_BUCKETS)"
        );
        let outside = sources
            .admit(&created("media", "out/a.png"))
            .err()
            .ok_or("admitted")?;
        assert_eq!(
            outside.to_string(),
            "\"out/a.png\" in bucket \"media\" is not under a prefix this function serves \
             there (SOURCE_BUCKETS)"
        );
        // No object, no action: bucket-level events are the handler's to skip.
        let bucket_level = ObjectEvent::requested(EventKind::Other, "elsewhere", String::new());
        assert_eq!(sources.admit(&bucket_level), Ok(()));
        assert_eq!(Sources::Any.admit(&created("elsewhere", "k")), Ok(()));
        Ok(())
    }

    #[test]
    fn sweeps_are_refused_for_other_buckets_and_other_prefixes() -> TestResult {
        let sources = read(&[("SOURCE_BUCKETS", "media/in/")])?.ok_or("unset")?;
        let sweep = |bucket: &str, prefix: &str| {
            sources.admit(&ObjectEvent::requested(
                EventKind::Sweep,
                bucket,
                prefix.to_owned(),
            ))
        };
        // A schedule names no bucket: the function sweeps its own SOURCE_BUCKET.
        assert_eq!(sweep("", ""), Ok(()));
        assert_eq!(sweep("media", ""), Ok(()));
        assert_eq!(sweep("media", "in/2024/"), Ok(()));
        for outside in ["out/", "i"] {
            assert!(
                matches!(sweep("media", outside), Err(NotServed::Prefix { .. })),
                "{outside}"
            );
        }
        assert!(matches!(sweep("other", ""), Err(NotServed::Bucket { .. })));
        Ok(())
    }
}
