//! thumbnail-on-create's configuration, from environment variables.

use bucketfn::{Env, FromEnv};

/// What the function makes and where it writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `THUMBNAIL_SIZE`: the longest side of a thumbnail, in pixels.
    pub size: u32,
    /// `THUMBNAIL_BUCKET`: where thumbnails go; `None` means the source bucket.
    pub bucket: Option<String>,
    /// `THUMBNAIL_PREFIX`: prepended to every output key.
    pub prefix: String,
    /// `THUMBNAIL_QUALITY`: JPEG quality, 1-100.
    pub quality: u8,
    /// `MAX_SOURCE_BYTES`: larger sources are refused without being read.
    pub max_source_bytes: u64,
    /// `MAX_SOURCE_PIXELS`: larger images are refused from their header, before decoding.
    pub max_source_pixels: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            size: 256,
            bucket: None,
            prefix: "thumbnails/".to_owned(),
            quality: 85,
            max_source_bytes: 64 * 1024 * 1024,
            max_source_pixels: 100_000_000,
        }
    }
}

impl FromEnv for Config {
    fn read(env: &mut Env) -> Option<Self> {
        let defaults = Self::default();
        let size = env.or("THUMBNAIL_SIZE", defaults.size);
        if !(1..=8192).contains(&size) {
            env.problem("THUMBNAIL_SIZE", format!("{size} is outside 1..=8192"));
        }
        let quality = env.or("THUMBNAIL_QUALITY", defaults.quality);
        if !(1..=100).contains(&quality) {
            env.problem("THUMBNAIL_QUALITY", format!("{quality} is outside 1..=100"));
        }
        let bucket: Option<String> = env.optional("THUMBNAIL_BUCKET");
        // An empty prefix is meaningful (write at the top of another bucket), so it is not
        // treated as unset.
        let prefix = env
            .raw("THUMBNAIL_PREFIX")
            .map_or(defaults.prefix, str::to_owned);
        if prefix.starts_with('/') {
            env.problem(
                "THUMBNAIL_PREFIX",
                "must not start with `/` (keys are relative)",
            );
        }
        if prefix.is_empty() && bucket.is_none() {
            env.problem(
                "THUMBNAIL_PREFIX",
                "is empty while THUMBNAIL_BUCKET is unset: thumbnails written among the source \
                 images could not be told apart from new images",
            );
        }
        let max_source_bytes = env.or("MAX_SOURCE_BYTES", defaults.max_source_bytes);
        let max_source_pixels = env.or("MAX_SOURCE_PIXELS", defaults.max_source_pixels);
        for (name, value) in [
            ("MAX_SOURCE_BYTES", max_source_bytes),
            ("MAX_SOURCE_PIXELS", max_source_pixels),
        ] {
            if value == 0 {
                env.problem(name, "must be at least 1");
            }
        }
        Some(Self {
            size,
            bucket,
            prefix,
            quality,
            max_source_bytes,
            max_source_pixels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn defaults_need_no_variables() -> TestResult {
        let config: Config = Env::from_pairs(Vec::<(String, String)>::new()).load()?;
        assert_eq!(config, Config::default());
        Ok(())
    }

    #[test]
    fn every_bad_variable_is_reported_at_once() -> TestResult {
        let env = Env::from_pairs([
            ("THUMBNAIL_SIZE", "0"),
            ("THUMBNAIL_QUALITY", "high"),
            ("THUMBNAIL_PREFIX", ""),
            ("MAX_SOURCE_BYTES", "-1"),
        ]);
        let err = env.load::<Config>().err().ok_or("accepted")?;
        let vars: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            vars,
            [
                "THUMBNAIL_SIZE",
                "THUMBNAIL_QUALITY",
                "THUMBNAIL_PREFIX",
                "MAX_SOURCE_BYTES"
            ]
        );
        Ok(())
    }

    #[test]
    fn empty_prefix_is_fine_with_another_bucket() -> TestResult {
        let env = Env::from_pairs([("THUMBNAIL_PREFIX", ""), ("THUMBNAIL_BUCKET", "thumbs")]);
        let config: Config = env.load()?;
        assert_eq!(
            (config.prefix.as_str(), config.bucket.as_deref()),
            ("", Some("thumbs"))
        );
        Ok(())
    }
}
