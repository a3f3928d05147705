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

/// Query parameters whose values are credentials when their name contains one of these
/// (case-insensitive): `token`, `api_key`, `X-Amz-Signature`, `X-Amz-Credential`, ...
const SECRET_PARAMETERS: [&str; 8] = [
    "token",
    "key",
    "pass",
    "pwd",
    "secret",
    "sig",
    "auth",
    "credential",
];

/// `url` fit for a log line or a `Debug`: the userinfo (`user:password@`) becomes `***@` and
/// the values of query parameters that look like credentials become `***`. Works on anything
/// URL-like, `host:port` lists and scheme-less `user:password@host` included.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |at| at + 3);
    let (head, rest) = url.split_at(start);
    let hier_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let (hier, tail) = rest.split_at(hier_end);
    let authority = &hier[..hier.find('/').unwrap_or(hier.len())];
    // A password with an unencoded `/` puts the `@` past the first `/`: hiding a path
    // segment too is the lesser harm.
    let userinfo_end = authority.rfind('@').or_else(|| hier.rfind('@'));
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    match userinfo_end {
        Some(at) => {
            out.push_str("***");
            out.push_str(&hier[at..]);
        }
        None => out.push_str(hier),
    }
    let (query, fragment) = match tail.find('#') {
        Some(at) => tail.split_at(at),
        None => (tail, ""),
    };
    if let Some(query) = query.strip_prefix('?') {
        out.push('?');
        for (n, pair) in query.split('&').enumerate() {
            if n > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if is_secret_parameter(name) => {
                    out.push_str(name);
                    out.push_str("=***");
                }
                _ => out.push_str(pair),
            }
        }
    }
    out.push_str(fragment);
    out
}

fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMETERS.iter().any(|word| name.contains(word))
}

/// `text` (an error chain, a message) with every `scheme://...` URL in it passed through
/// [`redact_url`]: client errors quote the URL they failed on, credentials included.
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let scheme_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '(' | ')' | '`')
            })
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&redact_url(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
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
#[derive(Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    problems: Vec<ConfigProblem>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The names only: the environment holds every secret the function has.
        f.debug_struct("Env")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("problems", &self.problems)
            .finish()
    }
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
                // The value may be a URL with a password in it: the message is printed.
                let message = format!("{:?} is not valid: {e}", redact_url(raw));
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

    /// Records a problem found by a check across values. Checks quote the values they
    /// refuse, and a malformed URL may still carry a password: URLs in the message are
    /// redacted.
    pub fn problem(&mut self, name: &str, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            variable: name.to_owned(),
            message: redact_urls_in(&message.into()),
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

/// What `read` makes of the variables `pairs` alone, and the problems it reports, as
/// `VARIABLE: message` lines: for the tests of each settings type.
#[cfg(any(test, feature = "testing"))]
pub fn read_from_pairs<T>(
    pairs: &[(&str, &str)],
    read: impl FnOnce(&mut Env) -> Option<T>,
) -> (Option<T>, Vec<String>) {
    let mut env = Env::from_pairs(pairs.iter().copied());
    let read = read(&mut env);
    let problems = env
        .finish()
        .err()
        .map(|e| {
            e.problems
                .iter()
                .map(|p| format!("{}: {}", p.variable, p.message))
                .collect()
        })
        .unwrap_or_default();
    (read, problems)
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
    fn redact_url_hides_userinfo_and_secret_parameters() {
        let cases = [
            (
                "redis://ledger:hunter2@redis.internal:6379/0",
                "redis://***@redis.internal:6379/0",
            ),
            ("rediss://:hunter2@r:6380", "rediss://***@r:6380"),
            ("https://u:p/w@host/path", "https://***@host/path"),
            ("sasl-user:hunter2@kafka-1:9093", "***@kafka-1:9093"),
            (
                "https://api.example/x?token=hunter2&page=2&X-Amz-Signature=abc#top",
                "https://api.example/x?token=***&page=2&X-Amz-Signature=***#top",
            ),
            (
                "https://api.example/x?apiKey=hunter2",
                "https://api.example/x?apiKey=***",
            ),
            (
                "http://broker-ingress.knative/default",
                "http://broker-ingress.knative/default",
            ),
            ("kafka-1:9092", "kafka-1:9092"),
            ("ftp.example:2121", "ftp.example:2121"),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    #[test]
    fn redact_urls_in_finds_every_url_of_a_message() {
        let text = "error sending request for url (https://u:hunter2@sink.example/e?sig=s3cr3t): \
                    connection refused; retried redis://:pw2@r:6379";
        let redacted = redact_urls_in(text);
        assert_eq!(
            redacted,
            "error sending request for url (https://***@sink.example/e?sig=***): \
             connection refused; retried redis://***@r:6379"
        );
        assert_eq!(redact_urls_in("no url: a://"), "no url: a://");
        assert_eq!(redact_urls_in("plain text"), "plain text");
    }

    #[test]
    fn neither_a_malformed_value_nor_the_environment_prints_a_password()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut env = Env::from_pairs([("PORT", "http://admin:hunter2@host/")]);
        let port: Option<u16> = env.optional("PORT");
        assert_eq!(port, None);
        assert!(!format!("{env:?}").contains("hunter2"), "{env:?}");
        let err = env.finish().err().ok_or("accepted")?;
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("http://***@host/"), "{err}");
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
