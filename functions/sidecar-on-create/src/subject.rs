//! What the archive needs to know about a created object and the checks it passes: tenant
//! (OR-id) and domain from the configuration, md5 from the object's metadata, owner, collateral
//! type and media id, and file extension from the event.

use std::collections::BTreeMap;
use std::fmt;

use bucketfn::ObjectPath;

/// Object metadata names that may carry the md5 (meemoo's gateway, and plain S3 uploads).
const MD5_NAMES: &[&str] = &["x-md5sum-meta", "md5sum", "x-amz-meta-md5sum"];

/// Why a created object cannot be archived. Always permanent: the event will not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// TENANT_BY_BUCKET names no tenant for the bucket; the event's own, if it named one.
    NoTenant(Option<String>),
    BadTenant(String),
    /// S3_DOMAIN is not set; the event's own, if it named one.
    NoDomain(Option<String>),
    NoOwner,
    BadCollateralKey,
    BadCollateralType(String),
    BadExtension(String),
    BadPid(String),
    BadName(&'static str, String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoTenant(told) => {
                f.write_str("no tenant: TENANT_BY_BUCKET does not name the bucket")?;
                match told {
                    Some(told) => write!(
                        f,
                        " (the event says {told:?}, which nothing the function trusts confirms)"
                    ),
                    None => Ok(()),
                }
            }
            Self::BadTenant(value) => write!(
                f,
                "tenant {value:?} is not an organisation id (a prefix of 1-{MAX_PREFIX} letters or digits such as `OR`, then `-` and 7 letters or digits)"
            ),
            Self::NoDomain(told) => {
                f.write_str("no domain: S3_DOMAIN is not set")?;
                match told {
                    Some(told) => write!(
                        f,
                        " (the event says {told:?}, which nothing the function trusts confirms)"
                    ),
                    None => Ok(()),
                }
            }
            Self::NoOwner => f.write_str("the event names no owner principal"),
            Self::BadCollateralKey => {
                f.write_str("a collateral key must look like `<type>/<media id>[/<file>]`")
            }
            Self::BadCollateralType(value) => write!(
                f,
                "collateral type {value:?} is not letters, digits, `-` or `_`"
            ),
            Self::BadExtension(value) => {
                write!(f, "file extension {value:?} is not 1-16 letters or digits")
            }
            Self::BadPid(value) => write!(f, "PID {value:?} is not 10 lowercase letters or digits"),
            Self::BadName(what, value) => write!(
                f,
                "{what} {value:?} cannot be a path component (empty, `.`, `..`, `/`, `\\` or control characters)"
            ),
        }
    }
}

impl std::error::Error for Problem {}

/// A [`Problem`] with the object it is about.
#[derive(Debug, thiserror::Error)]
#[error("{} cannot be archived: {problem}", ObjectPath(bucket, key))]
pub struct Unfit {
    pub bucket: String,
    pub key: String,
    pub problem: Problem,
}

/// A collateral (subtitles, scripts, ...) of an essence already in MediaHaven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collateral {
    /// The first key segment: `openOt`, `closedOt`, ...
    pub kind: String,
    /// The second key segment: the essence's `dc_identifier_localid`.
    pub media_id: String,
}

impl Collateral {
    /// `<type>/<media_id>`, with or without more segments after it: the original handler takes
    /// the first two segments and ignores the rest (`openOt/MEDIA1` is as good as
    /// `openOt/MEDIA1/subs.srt`). Neither may be empty (a PID `<pid>_` or a search for an empty
    /// media id names nothing), and the type becomes part of a PID and a file name, so it is
    /// checked.
    pub fn from_key(key: &str) -> Result<Self, Problem> {
        let mut parts = key.split('/');
        let (Some(kind), Some(media_id)) = (parts.next(), parts.next()) else {
            return Err(Problem::BadCollateralKey);
        };
        if kind.is_empty() || media_id.is_empty() {
            return Err(Problem::BadCollateralKey);
        }
        if !kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Problem::BadCollateralType(kind.to_owned()));
        }
        Ok(Self {
            kind: kind.to_owned(),
            media_id: media_id.to_owned(),
        })
    }

    /// MediaHaven's object use: subtitles for the open/closed caption types.
    pub fn object_use(&self) -> &'static str {
        match self.kind.as_str() {
            "openOt" | "closedOt" => "subtitle",
            _ => "collateral",
        }
    }
}

/// The longest organisation-id prefix accepted (`OR`, `MM`, ... are two letters).
pub const MAX_PREFIX: usize = 16;

/// An organisation id as the original handler normalizes it: a prefix upper-cased (`OR`, but
/// also `MM` or any other), one `-`, and 7 characters lower-cased (`or-RF5KF25` ->
/// `OR-rf5kf25`, `mm-7p8tc89` -> `MM-7p8tc89`). Stricter than the original in one way: both
/// parts must be ASCII letters or digits (the prefix at most [`MAX_PREFIX`]), because the id is
/// spliced into the organisations API's GraphQL query and compared with MediaHaven's `CP_id`.
pub fn normalize_or_id(raw: &str) -> Result<String, Problem> {
    let bad = || Problem::BadTenant(raw.to_owned());
    let (prefix, noid) = raw.trim().split_once('-').ok_or_else(bad)?;
    let alphanumeric = |part: &str| part.chars().all(|c| c.is_ascii_alphanumeric());
    if prefix.is_empty()
        || prefix.len() > MAX_PREFIX
        || !alphanumeric(prefix)
        || noid.len() != 7
        || !alphanumeric(noid)
    {
        return Err(bad());
    }
    Ok(format!(
        "{}-{}",
        prefix.to_ascii_uppercase(),
        noid.to_ascii_lowercase()
    ))
}

/// A PID from the PID service: exactly 10 lowercase letters or digits.
pub fn check_pid(pid: &str) -> Result<(), Problem> {
    if pid.len() == 10
        && pid
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(Problem::BadPid(pid.to_owned()))
    }
}

/// The md5 from object metadata, when one of the known names holds 32 hex digits.
pub fn md5_of(metadata: &BTreeMap<String, String>) -> Option<String> {
    MD5_NAMES
        .iter()
        .filter_map(|name| metadata.get(*name))
        .map(|value| value.trim())
        .find(|value| value.len() == 32 && value.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// The extension of the key's last segment with its dot (`.mxf`), or empty when there is none;
/// it ends up in a path on the transport server, so only letters and digits pass.
pub fn extension_of(key: &str) -> Result<String, Problem> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return Ok(String::new());
    };
    if stem.is_empty() {
        return Ok(String::new());
    }
    if ext.is_empty() || ext.len() > 16 || !ext.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Problem::BadExtension(ext.to_owned()));
    }
    Ok(format!(".{ext}"))
}

/// Checks a value that becomes one path component on the FTP server.
pub fn path_component(what: &'static str, value: &str) -> Result<(), Problem> {
    let bad = value.is_empty()
        || value == "."
        || value == ".."
        || value.contains(['/', '\\'])
        || value.chars().any(char::is_control);
    if bad {
        Err(Problem::BadName(what, value.to_owned()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn or_ids_are_normalized_and_anything_else_is_named() -> TestResult {
        assert_eq!(normalize_or_id("or-rf5kf25")?, "OR-rf5kf25");
        assert_eq!(normalize_or_id("Or-RF5KF25")?, "OR-rf5kf25");
        // Other prefixes, as the original's tests have them.
        assert_eq!(normalize_or_id("mm-7p8tc89")?, "MM-7p8tc89");
        assert_eq!(normalize_or_id("XR-rf5kf25")?, "XR-rf5kf25");
        for bad in [
            "OR-rf5kf2",
            "OR-rf5kf256",
            "-rf5kf25",
            "OR_rf5kf25",
            "OR-rf5k-25",
            "O R-rf5kf25",
            "OR-rf5kf2\u{e9}",
            "ORGANISATIONIDXYZ-rf5kf25",
            "",
        ] {
            let err = normalize_or_id(bad).err().ok_or(bad)?;
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        Ok(())
    }

    #[test]
    fn md5_only_when_32_hex_digits_under_a_known_name() {
        let meta = |name: &str, value: &str| BTreeMap::from([(name.to_owned(), value.to_owned())]);
        let good = "1234abcd1234abcd1234ABCD1234abcd";
        assert_eq!(md5_of(&meta("md5sum", good)), Some(good.to_owned()));
        assert_eq!(md5_of(&meta("x-md5sum-meta", good)), Some(good.to_owned()));
        assert_eq!(md5_of(&meta("md5sum", "abc")), None);
        assert_eq!(md5_of(&meta("md5sum", &"g".repeat(32))), None);
        assert_eq!(md5_of(&meta("content-md5", good)), None);
    }

    #[test]
    fn collateral_keys_give_type_and_media_id() -> TestResult {
        let c = Collateral::from_key("openOt/MEDIA1/subs.srt")?;
        assert_eq!((c.kind.as_str(), c.media_id.as_str()), ("openOt", "MEDIA1"));
        assert_eq!(c.object_use(), "subtitle");
        assert_eq!(
            Collateral::from_key("script/M/x.pdf")?.object_use(),
            "collateral"
        );
        // Two segments are enough, as the original takes them; what follows does not matter.
        let two = Collateral::from_key("closedOt/MEDIA1")?;
        assert_eq!(
            (two.kind.as_str(), two.media_id.as_str()),
            ("closedOt", "MEDIA1")
        );
        assert_eq!(Collateral::from_key("a/b/")?.media_id, "b");
        for bad in ["x.srt", "/MEDIA1/x.srt", "openOt//x.srt", "openOt/", ""] {
            assert_eq!(
                Collateral::from_key(bad),
                Err(Problem::BadCollateralKey),
                "{bad}"
            );
        }
        assert!(matches!(
            Collateral::from_key("../M/x.srt"),
            Err(Problem::BadCollateralType(_))
        ));
        Ok(())
    }

    #[test]
    fn extensions_and_path_components_are_checked() -> TestResult {
        assert_eq!(extension_of("a/b/clip.MXF")?, ".MXF");
        assert_eq!(extension_of("noext")?, "");
        assert_eq!(extension_of("dir.d/.hidden")?, "");
        assert!(extension_of("a.m/x").is_ok());
        assert!(extension_of("evil.x/../y").is_ok());
        assert!(matches!(
            extension_of("clip.mx f"),
            Err(Problem::BadExtension(_))
        ));
        assert!(matches!(
            extension_of("clip."),
            Err(Problem::BadExtension(_))
        ));
        path_component("CP name", "VRT")?;
        for bad in ["", ".", "..", "a/b", "a\\b", "a\nb"] {
            assert!(path_component("CP name", bad).is_err(), "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn pids_are_ten_lowercase_alphanumerics() {
        assert!(check_pid("j96059k22s").is_ok());
        for bad in ["J96059K22S", "j96059k22", "j96059k22s1", "j96059-22s"] {
            assert!(check_pid(bad).is_err(), "{bad}");
        }
    }
}
