//! Progress of long work (sweeps) on a terminal: a counter and the current key, shown only
//! when a person is watching; everywhere else the calls cost nothing.

use std::fmt;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A handle functions report progress through; cheap to clone.
#[derive(Clone, Default)]
pub struct Progress(Option<ProgressBar>);

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(shown)"
        } else {
            "Progress(hidden)"
        })
    }
}

impl Progress {
    /// A spinner with a count on stderr when stderr is a terminal; hidden otherwise.
    pub fn on_terminal(label: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::default();
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{spinner} {prefix}: {pos} objects [{elapsed}] {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_prefix(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self(Some(bar))
    }

    /// One more object done; `key` is shown as the current position.
    pub fn advance(&self, key: &str) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
            bar.set_message(key.escape_debug().to_string());
        }
    }

    /// Leaves the final count on screen with a closing message.
    pub fn finish(&self, message: &str) {
        if let Some(bar) = &self.0 {
            bar.finish_with_message(message.to_owned());
        }
    }
}
