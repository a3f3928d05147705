//! Log set-up: JSON lines on stderr by default (what Lambda, Knative and log shippers want),
//! readable text in a terminal, and Lambda's own log-level and log-format controls honoured.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` wins over `AWS_LAMBDA_LOG_LEVEL`; the format is
/// `AWS_LAMBDA_LOG_FORMAT` in Lambda, else `LOG_FORMAT` (`json` | `text`), else text for a
/// terminal and JSON otherwise.
pub fn init(in_lambda: bool) {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let level = var("AWS_LAMBDA_LOG_LEVEL")
        .map(|l| l.to_ascii_lowercase())
        .unwrap_or_else(|| "info".to_owned());
    let filter = var("RUST_LOG")
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(level));
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
}
