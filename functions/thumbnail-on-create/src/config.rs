//! thumbnail-on-create's configuration, from environment variables.

use std::str::FromStr;

use bucketfn::derivatives::DerivativesLayout;
use bucketfn::{Env, FromEnv};

use crate::pipeline::{OutputFormat, Spec};

/// What the function makes, where it writes it, and what it sweeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `THUMBNAIL_SIZES`: the longest side of each thumbnail, ascending, without repeats.
    pub sizes: Vec<u32>,
    /// `THUMBNAIL_FORMAT`: jpeg, png or webp.
    pub format: OutputFormat,
    /// `THUMBNAIL_QUALITY`: JPEG / WebP quality, 1-100.
    pub quality: u8,
    /// `THUMBNAIL_BACKGROUND`: what transparency becomes in a JPEG.
    pub background: [u8; 3],
    /// `THUMBNAIL_UPSCALE`: enlarge images smaller than a size.
    pub upscale: bool,
    /// `THUMBNAIL_EMBEDDED_PREVIEW`: make a camera JPEG's thumbnails from the preview it
    /// carries when that is at least twice the largest size.
    pub embedded_preview: bool,
    /// `THUMBNAIL_BUCKET` (`None`: the source's bucket) and `THUMBNAIL_PREFIX`: where the
    /// thumbnails, and a moved source's copy, go.
    pub layout: DerivativesLayout,
    /// `DELETE_SOURCE`: move every object (images and others): the source is deleted once
    /// its unchanged copy and its thumbnails are safe.
    pub delete_source: bool,
    /// `SOURCE_BUCKET`: what a scheduled sweep walks (schedules name no bucket).
    pub source_bucket: Option<String>,
    /// `SOURCE_PREFIX`: the part of the source bucket a sweep walks.
    pub source_prefix: String,
    /// `SWEEP_CONCURRENCY`: images a sweep works on at once.
    pub sweep_concurrency: usize,
    /// `MAX_SOURCE_BYTES`: larger sources are refused without being read.
    pub max_source_bytes: u64,
    /// `MAX_SOURCE_PIXELS`: larger images are refused from their header, before decoding.
    pub max_source_pixels: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sizes: vec![256],
            format: OutputFormat::Jpeg,
            quality: 85,
            background: [255, 255, 255],
            upscale: false,
            embedded_preview: false,
            layout: DerivativesLayout {
                bucket: None,
                prefix: "thumbnails/".to_owned(),
            },
            delete_source: false,
            source_bucket: None,
            source_prefix: String::new(),
            sweep_concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            max_source_bytes: 64 * 1024 * 1024,
            max_source_pixels: 100_000_000,
        }
    }
}

/// What the configuration asks each image's thumbnails to be.
impl From<&Config> for Spec {
    fn from(config: &Config) -> Self {
        Self {
            sizes: config.sizes.clone(),
            format: config.format,
            quality: config.quality,
            background: config.background,
            upscale: config.upscale,
            max_pixels: config.max_source_pixels,
            embedded_previews: config.embedded_preview,
        }
    }
}

/// `128,256,512`: sizes from 1 to 8192.
struct Sizes(Vec<u32>);

impl FromStr for Sizes {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut sizes = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let size: u32 = part
                .parse()
                .map_err(|_| format!("{part:?} is not a whole number of pixels"))?;
            if !(1..=8192).contains(&size) {
                return Err(format!("{size} is outside 1..=8192"));
            }
            sizes.push(size);
        }
        if sizes.is_empty() {
            return Err("no sizes given".to_owned());
        }
        sizes.sort_unstable();
        sizes.dedup();
        Ok(Self(sizes))
    }
}

/// `#rrggbb` or `rrggbb`.
struct Colour([u8; 3]);

impl FromStr for Colour {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text.strip_prefix('#').unwrap_or(text);
        let channel = |i: usize| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        };
        match (hex.len(), channel(0), channel(2), channel(4)) {
            (6, Some(r), Some(g), Some(b)) => Ok(Self([r, g, b])),
            _ => Err("expected a colour as #rrggbb".to_owned()),
        }
    }
}

impl FromEnv for Config {
    fn read(env: &mut Env) -> Option<Self> {
        let defaults = Self::default();
        let sizes = env
            .optional::<Sizes>("THUMBNAIL_SIZES")
            .map_or(defaults.sizes, |s| s.0);
        let format = env.or("THUMBNAIL_FORMAT", defaults.format);
        let quality = env.or("THUMBNAIL_QUALITY", defaults.quality);
        if !(1..=100).contains(&quality) {
            env.problem("THUMBNAIL_QUALITY", format!("{quality} is outside 1..=100"));
        }
        let background = env
            .optional::<Colour>("THUMBNAIL_BACKGROUND")
            .map_or(defaults.background, |c| c.0);
        let bucket: Option<String> = env.optional("THUMBNAIL_BUCKET");
        // An empty prefix is meaningful (write at the top of another bucket), so it is not
        // treated as unset.
        let prefix = env
            .raw("THUMBNAIL_PREFIX")
            .map_or(defaults.layout.prefix, str::to_owned);
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
        let sweep_concurrency = env.or("SWEEP_CONCURRENCY", defaults.sweep_concurrency);
        if sweep_concurrency == 0 {
            env.problem("SWEEP_CONCURRENCY", "must be at least 1");
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
            sizes,
            format,
            quality,
            background,
            upscale: env.or("THUMBNAIL_UPSCALE", defaults.upscale),
            embedded_preview: env.or("THUMBNAIL_EMBEDDED_PREVIEW", defaults.embedded_preview),
            layout: DerivativesLayout { bucket, prefix },
            delete_source: env.or("DELETE_SOURCE", defaults.delete_source),
            source_bucket: env.optional("SOURCE_BUCKET"),
            source_prefix: env.raw("SOURCE_PREFIX").unwrap_or_default().to_owned(),
            sweep_concurrency,
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
    fn lists_formats_and_colours_parse() -> TestResult {
        let env = Env::from_pairs([
            ("THUMBNAIL_SIZES", "512, 128,256,128"),
            ("THUMBNAIL_FORMAT", "WebP"),
            ("THUMBNAIL_BACKGROUND", "#10a0Ff"),
            ("DELETE_SOURCE", "true"),
        ]);
        let config: Config = env.load()?;
        assert_eq!(config.sizes, [128, 256, 512]);
        assert_eq!(config.format, OutputFormat::Webp);
        assert_eq!(config.background, [0x10, 0xa0, 0xff]);
        assert!(config.delete_source);
        Ok(())
    }

    #[test]
    fn every_bad_variable_is_reported_at_once() -> TestResult {
        let env = Env::from_pairs([
            ("THUMBNAIL_SIZES", "128,0"),
            ("THUMBNAIL_FORMAT", "gif"),
            ("THUMBNAIL_QUALITY", "high"),
            ("THUMBNAIL_BACKGROUND", "white"),
            ("THUMBNAIL_PREFIX", ""),
            ("DELETE_SOURCE", "yes please"),
            ("MAX_SOURCE_BYTES", "-1"),
        ]);
        let err = env.load::<Config>().err().ok_or("accepted")?;
        let vars: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            vars,
            [
                "THUMBNAIL_SIZES",
                "THUMBNAIL_FORMAT",
                "THUMBNAIL_QUALITY",
                "THUMBNAIL_BACKGROUND",
                "THUMBNAIL_PREFIX",
                "MAX_SOURCE_BYTES",
                "DELETE_SOURCE",
            ]
        );
        assert!(
            err.to_string()
                .contains("\"128,0\" is not valid: 0 is outside 1..=8192"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn empty_prefix_is_fine_with_another_bucket() -> TestResult {
        let env = Env::from_pairs([("THUMBNAIL_PREFIX", ""), ("THUMBNAIL_BUCKET", "thumbs")]);
        let config: Config = env.load()?;
        assert_eq!(
            (
                config.layout.prefix.as_str(),
                config.layout.bucket.as_deref()
            ),
            ("", Some("thumbs"))
        );
        Ok(())
    }
}
