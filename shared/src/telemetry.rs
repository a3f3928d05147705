//! Log set-up: JSON lines on stderr by default (what Lambda, Knative and log shippers want),
//! readable text in a terminal, Lambda's own log-level and log-format controls honoured, and
//! levels above `info` kept to bucketfn's own crates unless a dependency is named.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{Directive, LevelFilter};

/// The crates whose logs a bare level such as `RUST_LOG=debug` is about. Dependencies log
/// their frames, requests and connection details at debug and trace (the AMQP client its
/// credentials), so they get more than `info` only when a directive names them.
const OWN_CRATES: [&str; 5] = [
    "bucketfn",
    "cleanup_on_remove",
    "forward_to_stream",
    "sidecar_on_create",
    "thumbnail_on_create",
];

/// Installs the global subscriber. `RUST_LOG` wins over `AWS_LAMBDA_LOG_LEVEL`; the format is
/// `AWS_LAMBDA_LOG_FORMAT` in Lambda, else `LOG_FORMAT` (`json` | `text`), else text for a
/// terminal and JSON otherwise. Directives that do not parse are left out and logged.
pub fn init(in_lambda: bool) {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let filter = Filter::new(
        var("RUST_LOG").as_deref(),
        var("AWS_LAMBDA_LOG_LEVEL").as_deref(),
    );
    let format = if in_lambda {
        var("AWS_LAMBDA_LOG_FORMAT")
    } else {
        var("LOG_FORMAT")
    };
    let json = match format.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("json") => true,
        Some(_) => false,
        None => in_lambda || !std::io::stderr().is_terminal(),
    };
    // Every directive was parsed one by one already; the whole cannot fail to parse.
    let env_filter =
        EnvFilter::try_new(filter.directives.join(",")).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    // A subscriber may already be installed (tests); keeping it is right.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    for problem in &filter.problems {
        // ERROR, so that the report gets through whatever level the filter settled on.
        tracing::error!(
            variable = problem.variable,
            directive = %problem.directive,
            error = %problem.error,
            "Log filter directive ignored."
        );
    }
}

/// The directives the subscriber filters with, and what was left out.
#[derive(Debug, Default, PartialEq, Eq)]
struct Filter {
    directives: Vec<String>,
    problems: Vec<FilterProblem>,
}

/// A directive of `RUST_LOG` or `AWS_LAMBDA_LOG_LEVEL` that does not parse.
#[derive(Debug, PartialEq, Eq)]
struct FilterProblem {
    variable: &'static str,
    directive: String,
    error: String,
}

impl Filter {
    /// The filter for `RUST_LOG` (comma-separated directives) and `AWS_LAMBDA_LOG_LEVEL` (one
    /// level, `FATAL` included). A bare level `L` becomes `min(L, info)` for everything plus
    /// `L` for each of our crates that no directive names; directives that name a target or a
    /// span are kept as written. Without a bare level in `RUST_LOG`, the level is
    /// `AWS_LAMBDA_LOG_LEVEL`'s, else `info`, so that `RUST_LOG=lapin=trace` adds to the usual
    /// logs instead of silencing them.
    fn new(rust_log: Option<&str>, lambda_level: Option<&str>) -> Self {
        let mut filter = Self::default();
        let mut level = None;
        let mut kept = Vec::new();
        for part in rust_log
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            // The last bare level wins, as it does in an EnvFilter.
            if let Ok(bare) = part.parse::<LevelFilter>() {
                level = Some(bare);
                continue;
            }
            match part.parse::<Directive>() {
                Ok(_) => kept.push(part.to_owned()),
                Err(e) => filter.problem("RUST_LOG", part, &e),
            }
        }
        let level = level
            .or_else(|| {
                let lambda = lambda_level?.trim();
                // Lambda's levels are TRACE, DEBUG, INFO, WARN, ERROR and FATAL.
                let parsed = if lambda.eq_ignore_ascii_case("fatal") {
                    Ok(LevelFilter::ERROR)
                } else {
                    lambda.parse::<LevelFilter>()
                };
                parsed
                    .map_err(|e| filter.problem("AWS_LAMBDA_LOG_LEVEL", lambda, &e))
                    .ok()
            })
            .unwrap_or(LevelFilter::INFO);
        filter
            .directives
            .push(level.min(LevelFilter::INFO).to_string());
        if level > LevelFilter::INFO {
            let named = |own: &str| kept.iter().any(|d| target_of(d) == Some(own));
            for own in OWN_CRATES.iter().filter(|own| !named(own)) {
                filter.directives.push(format!("{own}={level}"));
            }
        }
        filter.directives.extend(kept);
        filter
    }

    fn problem(&mut self, variable: &'static str, directive: &str, error: &dyn std::fmt::Display) {
        self.problems.push(FilterProblem {
            variable,
            directive: directive.to_owned(),
            error: error.to_string(),
        });
    }
}

/// The target a directive names (`lapin` of `lapin=trace`, `bucketfn` of `bucketfn[event]`).
fn target_of(directive: &str) -> Option<&str> {
    let end = directive.find(['=', '[']).unwrap_or(directive.len());
    Some(directive[..end].trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directives(rust_log: Option<&str>, lambda: Option<&str>) -> Vec<String> {
        Filter::new(rust_log, lambda).directives
    }

    fn own_at(level: &str) -> Vec<String> {
        OWN_CRATES.iter().map(|c| format!("{c}={level}")).collect()
    }

    #[test]
    fn a_bare_debug_is_debug_for_our_crates_and_info_for_the_rest() {
        let mut expected = vec!["info".to_owned()];
        expected.extend(own_at("debug"));
        assert_eq!(directives(Some("debug"), None), expected);
    }

    #[test]
    fn a_named_dependency_gets_the_level_it_is_given() {
        let mut expected = vec!["info".to_owned()];
        expected.extend(own_at("debug"));
        expected.push("lapin=trace".to_owned());
        assert_eq!(directives(Some("debug,lapin=trace"), None), expected);
    }

    #[test]
    fn a_bare_level_at_or_below_info_applies_to_everything() {
        assert_eq!(directives(Some("warn"), None), ["warn"]);
        assert_eq!(directives(Some("info"), None), ["info"]);
        assert_eq!(directives(Some("off"), None), ["off"]);
    }

    #[test]
    fn an_own_crate_named_explicitly_keeps_its_own_level() {
        let filter = directives(
            Some("trace,bucketfn=warn,thumbnail_on_create::pipeline=debug"),
            None,
        );
        assert!(filter.contains(&"bucketfn=warn".to_owned()), "{filter:?}");
        assert!(!filter.contains(&"bucketfn=trace".to_owned()), "{filter:?}");
        // A module is not the crate: the crate still gets the bare level.
        assert!(
            filter.contains(&"thumbnail_on_create=trace".to_owned()),
            "{filter:?}"
        );
        assert_eq!(filter[0], "info");
    }

    #[test]
    fn targeted_directives_alone_add_to_the_default_level() {
        assert_eq!(
            directives(Some("hyper=debug,[event]=trace"), None),
            ["info", "hyper=debug", "[event]=trace"]
        );
    }

    #[test]
    fn lambdas_log_level_is_a_bare_level_and_rust_log_wins() {
        let mut expected = vec!["info".to_owned()];
        expected.extend(own_at("trace"));
        assert_eq!(directives(None, Some("TRACE")), expected);
        assert_eq!(directives(None, Some("FATAL")), ["error"]);
        assert_eq!(directives(Some("warn"), Some("DEBUG")), ["warn"]);
        assert_eq!(directives(None, None), ["info"]);
    }

    #[test]
    fn invalid_directives_are_reported_and_left_out() {
        let filter = Filter::new(Some("debug,lapin=loud,^^"), Some("chatty"));
        let mut expected = vec!["info".to_owned()];
        expected.extend(own_at("debug"));
        assert_eq!(filter.directives, expected);
        let reported: Vec<(&str, &str)> = filter
            .problems
            .iter()
            .map(|p| (p.variable, p.directive.as_str()))
            .collect();
        // RUST_LOG has a level, so AWS_LAMBDA_LOG_LEVEL is not even read.
        assert_eq!(reported, [("RUST_LOG", "lapin=loud"), ("RUST_LOG", "^^")]);

        let filter = Filter::new(None, Some("chatty"));
        assert_eq!(filter.directives, ["info"]);
        assert_eq!(filter.problems.len(), 1);
        assert_eq!(filter.problems[0].variable, "AWS_LAMBDA_LOG_LEVEL");
    }

    #[test]
    fn every_rewritten_filter_parses() -> Result<(), Box<dyn std::error::Error>> {
        for spec in [
            "debug,lapin=trace",
            "trace,bucketfn=warn",
            "warn",
            "[event]=trace",
        ] {
            EnvFilter::try_new(Filter::new(Some(spec), None).directives.join(","))?;
        }
        Ok(())
    }
}
