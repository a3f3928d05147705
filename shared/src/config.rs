//! Typed configuration from environment variables. Every read records what is missing or
//! malformed, and [`Env::finish`] reports all of it at once, so a deploy fails once, not once
//! per variable.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A value that must never be printed (passwords, client secrets, URLs with credentials):
/// `Debug` and `Display` show `***`, and the value is reached only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// One variable that is missing or does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub variable: String,
    pub message: String,
}

/// Every configuration problem found at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problem", self.problems.len())?;
        if self.problems.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str(")")?;
        for problem in &self.problems {
            write!(f, "\n  {}: {}", problem.variable, problem.message)?;
        }
        Ok(())
    }
}

/// A snapshot of the environment that collects problems while values are read.
#[derive(Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    problems: Vec<ConfigProblem>,
}

/// A configuration that can be read from an [`Env`]. `read` returns `None` only after
/// recording at least one problem.
pub trait FromEnv: Sized {
    fn read(env: &mut Env) -> Option<Self>;

    /// Reads the process environment, reporting every problem at once.
    fn from_env() -> Result<Self, ConfigError> {
        Env::from_process().load()
    }
}

impl Env {
    /// The process environment (variables that are not UTF-8 are left out).
    pub fn from_process() -> Self {
        Self::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            problems: Vec::new(),
        }
    }

    /// The raw value, empty or not.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// A value that may be absent; an empty value counts as absent.
    pub fn optional<T: FromStr>(&mut self, name: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        let raw = self
            .vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())?;
        match raw.parse() {
            Ok(value) => Some(value),
            Err(e) => {
                let message = format!("{raw:?} is not valid: {e}");
                self.problem(name, message);
                None
            }
        }
    }

    /// A value with a default for when it is absent or empty.
    pub fn or<T: FromStr>(&mut self, name: &str, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        self.optional(name).unwrap_or(default)
    }

    /// A value that must be set.
    pub fn required<T: FromStr>(&mut self, name: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        let present = self.vars.get(name).is_some_and(|v| !v.trim().is_empty());
        if !present {
            self.problem(name, "is required but not set");
            return None;
        }
        self.optional(name)
    }

    /// Records a problem found by a check across values.
    pub fn problem(&mut self, name: &str, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            variable: name.to_owned(),
            message: message.into(),
        });
    }

    /// Reads `T` and reports every problem recorded so far, this read's included.
    pub fn load<T: FromEnv>(mut self) -> Result<T, ConfigError> {
        let value = T::read(&mut self);
        self.finish()?;
        value.ok_or_else(|| ConfigError {
            problems: vec![ConfigProblem {
                variable: std::any::type_name::<T>().to_owned(),
                message: "could not be read (no problem was recorded)".to_owned(),
            }],
        })
    }

    /// `Ok` when nothing was missing or malformed.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Sample {
        port: u16,
        name: String,
        size: u32,
    }

    impl FromEnv for Sample {
        fn read(env: &mut Env) -> Option<Self> {
            let port = env.or("PORT", 8080);
            let name = env.required("NAME");
            let size = env.required("SIZE");
            Some(Self {
                port,
                name: name?,
                size: size?,
            })
        }
    }

    #[test]
    fn reports_every_problem_at_once() -> Result<(), Box<dyn std::error::Error>> {
        let env = Env::from_pairs([("PORT", "eighty"), ("SIZE", "")]);
        let err = env.load::<Sample>().err().ok_or("accepted")?;
        let vars: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(vars, ["PORT", "NAME", "SIZE"]);
        let text = err.to_string();
        assert!(
            text.starts_with("invalid configuration (3 problems)"),
            "{text}"
        );
        assert!(text.contains("PORT: \"eighty\" is not valid"), "{text}");
        assert!(text.contains("NAME: is required but not set"), "{text}");
        Ok(())
    }

    #[test]
    fn secrets_never_print() -> Result<(), Box<dyn std::error::Error>> {
        let mut env = Env::from_pairs([("PASSWORD", "hunter2")]);
        let secret: Secret = env.required("PASSWORD").ok_or("missing")?;
        assert_eq!(format!("{secret:?} {secret}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2");
        Ok(())
    }

    #[test]
    fn defaults_apply_and_values_parse() -> Result<(), Box<dyn std::error::Error>> {
        let env = Env::from_pairs([("NAME", "x"), ("SIZE", " 12 ")]);
        let sample: Sample = env.load()?;
        assert_eq!(
            (sample.port, sample.name.as_str(), sample.size),
            (8080, "x", 12)
        );
        Ok(())
    }
}
