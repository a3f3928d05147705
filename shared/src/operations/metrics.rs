//! This instance's metrics in the Prometheus text format: events by class, outcome and
//! source, a processing-duration histogram, events in flight, queue messages by how they were
//! settled (`consume`), and ledger errors.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds of the duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
pub struct Metrics {
    events: Mutex<BTreeMap<(String, String, String), u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    in_flight: AtomicU64,
    /// Queue messages by settlement (`ack`, `dead_letter`, `retry_later`, `requeue`, or
    /// `unsettled` when the broker did not take the settlement).
    messages: Mutex<BTreeMap<&'static str, u64>>,
}

/// Counts an event in flight until dropped.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn started(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn finished(&self, class: &str, outcome: &str, source: &str, took: Duration) {
        let key = (class.to_owned(), outcome.to_owned(), source.to_owned());
        *self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default() += 1;
        let seconds = took.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts a queue message settled `how`.
    pub fn settled(&self, how: &'static str) {
        *self
            .messages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(how)
            .or_default() += 1;
    }

    /// The text exposition format, version 0.0.4.
    pub fn render(&self, ledger_errors: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP bucketfn_events_total Events handled, by class (object or sweep), outcome and source."
        );
        let _ = writeln!(out, "# TYPE bucketfn_events_total counter");
        for ((class, outcome, source), count) in self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "bucketfn_events_total{{class=\"{}\",outcome=\"{}\",source=\"{}\"}} {count}",
                label(class),
                label(outcome),
                label(source)
            );
        }
        let _ = writeln!(
            out,
            "# HELP bucketfn_event_duration_seconds Time from an event's start to its outcome."
        );
        let _ = writeln!(out, "# TYPE bucketfn_event_duration_seconds histogram");
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "bucketfn_event_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "bucketfn_event_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "bucketfn_event_duration_seconds_sum {sum}");
        let _ = writeln!(out, "bucketfn_event_duration_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP bucketfn_events_in_flight Events being handled now."
        );
        let _ = writeln!(out, "# TYPE bucketfn_events_in_flight gauge");
        let _ = writeln!(
            out,
            "bucketfn_events_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let messages = self.messages.lock().unwrap_or_else(PoisonError::into_inner);
        // Only a runtime that takes messages from a queue has any.
        if !messages.is_empty() {
            let _ = writeln!(
                out,
                "# HELP bucketfn_messages_total Queue messages, by how they were settled."
            );
            let _ = writeln!(out, "# TYPE bucketfn_messages_total counter");
            for (how, count) in messages.iter() {
                let _ = writeln!(
                    out,
                    "bucketfn_messages_total{{settlement=\"{how}\"}} {count}"
                );
            }
        }
        drop(messages);
        let _ = writeln!(
            out,
            "# HELP bucketfn_ledger_errors_total Ledger writes and reads that failed."
        );
        let _ = writeln!(out, "# TYPE bucketfn_ledger_errors_total counter");
        let _ = writeln!(out, "bucketfn_ledger_errors_total {ledger_errors}");
        out
    }
}

/// Label values escape backslash, quote and newline.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let metrics = Metrics::default();
        let flying = metrics.started();
        metrics.finished("object", "completed", "aws-s3", Duration::from_millis(30));
        metrics.finished("object", "completed", "aws-s3", Duration::from_millis(300));
        metrics.finished("sweep", "retryable", "sched\"ule", Duration::from_secs(40));
        let text = metrics.render(2);
        assert!(
            text.contains(
                "bucketfn_events_total{class=\"object\",outcome=\"completed\",source=\"aws-s3\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("source=\"sched\\\"ule\"} 1"), "{text}");
        assert!(
            text.contains("bucketfn_event_duration_seconds_bucket{le=\"0.05\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bucketfn_event_duration_seconds_bucket{le=\"0.5\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("bucketfn_event_duration_seconds_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(text.contains("bucketfn_events_in_flight 1"), "{text}");
        assert!(text.contains("bucketfn_ledger_errors_total 2"), "{text}");
        assert!(!text.contains("bucketfn_messages_total"), "{text}");
        drop(flying);
        assert!(metrics.render(0).contains("bucketfn_events_in_flight 0"));
        metrics.settled("ack");
        metrics.settled("ack");
        metrics.settled("dead_letter");
        let text = metrics.render(0);
        assert!(
            text.contains("bucketfn_messages_total{settlement=\"ack\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("bucketfn_messages_total{settlement=\"dead_letter\"} 1"),
            "{text}"
        );
    }
}
