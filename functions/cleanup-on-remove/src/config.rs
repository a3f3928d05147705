//! cleanup-on-remove's configuration, from environment variables. The thumbnail variables are
//! the ones thumbnail-on-create reads, so one configuration serves both functions.

use std::time::Duration;

use bucketfn::api::mediahaven::MediaHavenSettings;
use bucketfn::derivatives::DerivativesLayout;
use bucketfn::{Env, FromEnv};

/// What the function removes and where it looks.
#[derive(Debug, Clone)]
pub struct Config {
    /// `CLEANUP_TARGETS` contains `derivatives`.
    pub derivatives: bool,
    /// `THUMBNAIL_BUCKET` and `THUMBNAIL_PREFIX`: where thumbnail-on-create put what it made.
    pub layout: DerivativesLayout,
    /// Set when `CLEANUP_TARGETS` contains `mediahaven`.
    pub mediahaven: Option<MediaHavenSettings>,
    /// `MEDIAHAVEN_DELETE_DELAY_MS`: pause after each collateral delete (MediaHaven's rate limit).
    pub delete_delay: Duration,
}

impl Config {
    /// Derivatives only, with thumbnail-on-create's defaults (for tests and the demo).
    pub fn derivatives_only() -> Self {
        Self {
            derivatives: true,
            layout: DerivativesLayout {
                bucket: None,
                prefix: "thumbnails/".to_owned(),
            },
            mediahaven: None,
            delete_delay: Duration::from_millis(100),
        }
    }
}

impl FromEnv for Config {
    fn read(env: &mut Env) -> Option<Self> {
        let defaults = Self::derivatives_only();
        let targets = env
            .raw("CLEANUP_TARGETS")
            .filter(|t| !t.trim().is_empty())
            .unwrap_or("derivatives")
            .to_owned();
        let (mut derivatives, mut mediahaven) = (false, false);
        for target in targets.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match target {
                "derivatives" => derivatives = true,
                "mediahaven" => mediahaven = true,
                other => env.problem(
                    "CLEANUP_TARGETS",
                    format!("{other:?} is not a target (`derivatives`, `mediahaven`)"),
                ),
            }
        }
        if !derivatives && !mediahaven {
            env.problem("CLEANUP_TARGETS", "names no target");
        }
        let thumbnail_bucket = env.optional("THUMBNAIL_BUCKET");
        // Empty is meaningful with THUMBNAIL_BUCKET (thumbnails at the top of their bucket).
        let thumbnail_prefix = env
            .raw("THUMBNAIL_PREFIX")
            .map_or(defaults.layout.prefix, str::to_owned);
        if derivatives && thumbnail_prefix.is_empty() && thumbnail_bucket.is_none() {
            env.problem(
                "THUMBNAIL_PREFIX",
                "is empty while THUMBNAIL_BUCKET is unset: thumbnails could not be told apart from sources",
            );
        }
        let delete_delay = Duration::from_millis(env.or("MEDIAHAVEN_DELETE_DELAY_MS", 100));
        let settings = if mediahaven {
            Some(MediaHavenSettings::read(env)?)
        } else {
            None
        };
        Some(Self {
            derivatives,
            layout: DerivativesLayout {
                bucket: thumbnail_bucket,
                prefix: thumbnail_prefix,
            },
            mediahaven: settings,
            delete_delay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn derivatives_is_the_default_target() -> TestResult {
        let config: Config = Env::from_pairs(Vec::<(String, String)>::new()).load()?;
        assert!(config.derivatives && config.mediahaven.is_none());
        assert_eq!(config.layout.prefix, "thumbnails/");
        Ok(())
    }

    #[test]
    fn mediahaven_needs_its_variables_and_unknown_targets_are_named() -> TestResult {
        let env = Env::from_pairs([("CLEANUP_TARGETS", "mediahaven,thumbs")]);
        let text = env.load::<Config>().err().ok_or("accepted")?.to_string();
        assert!(text.contains("\"thumbs\" is not a target"), "{text}");
        assert!(text.contains("MEDIAHAVEN_URL: is required"), "{text}");
        Ok(())
    }
}
