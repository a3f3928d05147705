//! forward-to-stream's configuration, from environment variables.

use std::str::FromStr;
use std::time::Duration;

use bucketfn::sink::SinkConfig;
use bucketfn::{Env, EventKind, FromEnv};

/// What is published for an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A CloudEvent that points at the object (the default).
    ClaimCheck,
    /// The object's log records.
    Content,
}

impl FromStr for Mode {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "claim-check" => Ok(Self::ClaimCheck),
            "content" => Ok(Self::Content),
            _ => Err("expected claim-check or content"),
        }
    }
}

/// How an object's content is split into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON when the content starts with `[` or `{`, lines otherwise.
    Auto,
    /// One record per line.
    Lines,
    /// One record per element of the top-level array, or of the array field
    /// `CONTENT_JSON_FIELD` of the top-level object.
    Json,
}

impl FromStr for Format {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "lines" => Ok(Self::Lines),
            "json" => Ok(Self::Json),
            _ => Err("expected auto, lines or json"),
        }
    }
}

/// Content-mode limits and batching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentConfig {
    /// `CONTENT_FORMAT`.
    pub format: Format,
    /// `CONTENT_JSON_FIELD`: the array of records inside a JSON document.
    pub json_field: String,
    /// `CONTENT_TIME_FIELD`: where a record keeps its own time (the header line's column of
    /// that name, or the JSON record's top-level field); unset, records are stamped when sent.
    pub time_field: Option<String>,
    /// `CONTENT_BATCH_RECORDS`: records per publish, at most.
    pub batch_records: usize,
    /// `CONTENT_BATCH_BYTES`: record bytes per publish, at most (one larger record goes alone).
    pub batch_bytes: usize,
    /// `CONTENT_MAX_RECORD_BYTES`: a longer record is a permanent error.
    pub max_record_bytes: usize,
    /// `CONTENT_MAX_BYTES`: more decompressed content than this is a permanent error.
    pub max_bytes: u64,
    /// `CONTENT_MAX_RATIO`: decompressed bytes per compressed byte beyond which gzip content is
    /// taken for a bomb.
    pub max_ratio: u64,
}

impl ContentConfig {
    /// `CONTENT_MAX_BYTES` when unset: 1 GiB of decompressed content per object.
    ///
    /// A stream stopped by its deadline resumes after its last acknowledged batch, but it gets
    /// there by reading (and gunzipping) the object again from the start, so an object should
    /// still fit in about one invocation. Measured (`scripts/bench-content-limits.sh`, release
    /// build, one x86 core): content mode forwards gzipped VPC flow logs to the file sink at
    /// 83-102 MB of content per CPU-second (zcat alone: 250-290); gzip -6 of the records, the
    /// work that `KAFKA_COMPRESSION=gzip` adds as the template sets it, runs at 37 MB/s, so
    /// 26 MB/s in all. The template gives forward-to-stream 512 MB, which Lambda pairs with
    /// 0.29 of a vCPU, and 900 s: 7.4 MB/s. Four objects of 1 GiB at once
    /// (`SWEEP_CONCURRENCY`, `BATCH_CONCURRENCY`: 4) then take about 580 s of the 900 s; 2 GiB
    /// would take 1160 s. The largest log files AWS writes, VPC flow-log files of at most 75 MB
    /// gzipped, hold about 500 MB at the 6.6x measured for a busy VPC: half the limit.
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

    /// `CONTENT_MAX_RATIO` when unset: 300 decompressed bytes per gzipped byte, checked past the
    /// first 16 MiB.
    ///
    /// Measured with gzip -6 and -9 on generated logs (`scripts/bench-content-limits.sh`): busy
    /// VPC flow logs (the v2 format) compress 6.6-7x, access logs 7-7.5x, JSON-lines
    /// application logs 7x, CloudTrail 11x, an idle VPC's NODATA records 20x, chatty debug JSON
    /// 27-30x, load-balancer health checks 38x, and the most repetitive real log found, a crash
    /// loop writing the same stack trace with only the time changing, up to 151x. A run of one
    /// byte reaches deflate's ceiling, 1030x.
    /// 300 is twice the crash loop and under a third of the ceiling: a classic bomb is refused
    /// after about 75 MiB (300 times the first 256 KiB read of it), and content crafted to stay
    /// under the ratio still ends at `CONTENT_MAX_BYTES`.
    pub const DEFAULT_MAX_RATIO: u64 = 300;
}

impl Default for ContentConfig {
    fn default() -> Self {
        Self {
            format: Format::Auto,
            json_field: "flow_logs".to_owned(),
            time_field: None,
            batch_records: 1000,
            batch_bytes: 1 << 20,
            max_record_bytes: 1 << 20,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_ratio: Self::DEFAULT_MAX_RATIO,
        }
    }
}

/// Catch-up sweeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepConfig {
    /// `SOURCE_BUCKET`: the bucket a schedule sweeps (a CLI `--bucket` wins).
    pub bucket: Option<String>,
    /// `CHECKPOINT_PREFIX`: where checkpoints live; keys under it are never forwarded.
    pub checkpoint_prefix: String,
    /// `SWEEP_LEASE_SECS`: how long a sweep's claim lasts without renewal.
    pub lease: Duration,
    /// `SWEEP_CHECKPOINT_SECS`: how often progress is saved: a sweep's checkpoint (and its
    /// lease renewed), and the records acknowledged of an object being streamed.
    pub checkpoint_every: Duration,
    /// `SWEEP_CONCURRENCY`: objects forwarded at once.
    pub concurrency: usize,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            bucket: None,
            checkpoint_prefix: ".forward-to-stream/".to_owned(),
            lease: Duration::from_secs(120),
            checkpoint_every: Duration::from_secs(20),
            concurrency: 4,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `FORWARD_MODE`.
    pub mode: Mode,
    /// `FORWARD_KINDS`: which events are forwarded (`created`, `removed`).
    pub kinds: Vec<EventKind>,
    /// `SOURCE_PREFIX`: only keys under it are forwarded; what a sweep walks by default.
    pub prefix: String,
    /// `FORWARD_SINK` and the sink's own variables.
    pub sink: SinkConfig,
    pub content: ContentConfig,
    pub sweep: SweepConfig,
}

impl Config {
    /// A configuration with defaults and the given sink, for tests and tools.
    pub fn with_sink(sink: SinkConfig) -> Self {
        Self {
            mode: Mode::ClaimCheck,
            kinds: vec![EventKind::Created],
            prefix: String::new(),
            sink,
            content: ContentConfig::default(),
            sweep: SweepConfig::default(),
        }
    }
}

fn read_kinds(env: &mut Env) -> Vec<EventKind> {
    let raw: String = env.or("FORWARD_KINDS", "created".to_owned());
    let mut kinds = Vec::new();
    for word in raw.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "created" => kinds.push(EventKind::Created),
            "removed" => kinds.push(EventKind::Removed),
            other => env.problem(
                "FORWARD_KINDS",
                format!("{other:?} is not created or removed"),
            ),
        }
    }
    if kinds.is_empty() {
        env.problem("FORWARD_KINDS", "names no kind of event");
    }
    kinds
}

fn read_content(env: &mut Env) -> ContentConfig {
    let defaults = ContentConfig::default();
    let content = ContentConfig {
        format: env.or("CONTENT_FORMAT", defaults.format),
        json_field: env.or("CONTENT_JSON_FIELD", defaults.json_field),
        time_field: read_time_field(env),
        batch_records: env.or("CONTENT_BATCH_RECORDS", defaults.batch_records),
        batch_bytes: env.or("CONTENT_BATCH_BYTES", defaults.batch_bytes),
        max_record_bytes: env.or("CONTENT_MAX_RECORD_BYTES", defaults.max_record_bytes),
        max_bytes: env.or("CONTENT_MAX_BYTES", defaults.max_bytes),
        max_ratio: env.or("CONTENT_MAX_RATIO", defaults.max_ratio),
    };
    // Line records' columns are split at whitespace, so such a name is no column.
    if content.format == Format::Lines
        && let Some(field) = &content.time_field
        && field.contains(char::is_whitespace)
    {
        env.problem(
            "CONTENT_TIME_FIELD",
            format!("{field:?} holds a space: no column of a header line can be named so"),
        );
    }
    for (name, value) in [
        ("CONTENT_BATCH_RECORDS", content.batch_records as u64),
        ("CONTENT_BATCH_BYTES", content.batch_bytes as u64),
        ("CONTENT_MAX_RECORD_BYTES", content.max_record_bytes as u64),
        ("CONTENT_MAX_BYTES", content.max_bytes),
        ("CONTENT_MAX_RATIO", content.max_ratio),
    ] {
        if value == 0 {
            env.problem(name, "must be at least 1");
        }
    }
    content
}

/// `CONTENT_TIME_FIELD`. Unlike other variables, set but empty is a mistake rather than unset:
/// an empty name would silently stamp every record with the time of sending.
fn read_time_field(env: &mut Env) -> Option<String> {
    const NAME: &str = "CONTENT_TIME_FIELD";
    let raw = env.raw(NAME)?;
    if raw.trim().is_empty() {
        env.problem(
            NAME,
            "is set but empty: name the column or JSON field that holds each record's time, or              leave it unset",
        );
        return None;
    }
    env.optional(NAME)
}

fn read_sweep(env: &mut Env) -> SweepConfig {
    let defaults = SweepConfig::default();
    let checkpoint_prefix: String = env.or("CHECKPOINT_PREFIX", defaults.checkpoint_prefix);
    if checkpoint_prefix.is_empty() || !checkpoint_prefix.ends_with('/') {
        env.problem(
            "CHECKPOINT_PREFIX",
            "must be a non-empty prefix ending in `/` (keys under it are never forwarded)",
        );
    }
    let lease: u64 = env.or("SWEEP_LEASE_SECS", defaults.lease.as_secs());
    let every: u64 = env.or("SWEEP_CHECKPOINT_SECS", defaults.checkpoint_every.as_secs());
    if lease < 3 {
        env.problem("SWEEP_LEASE_SECS", "must be at least 3");
    }
    if every == 0 || every.saturating_mul(2) > lease {
        env.problem(
            "SWEEP_CHECKPOINT_SECS",
            format!(
                "must be at least 1 and at most half of SWEEP_LEASE_SECS ({lease}), so that \
                 the lease is renewed before it runs out"
            ),
        );
    }
    let concurrency = env.or("SWEEP_CONCURRENCY", defaults.concurrency);
    if concurrency == 0 {
        env.problem("SWEEP_CONCURRENCY", "must be at least 1");
    }
    SweepConfig {
        bucket: env.optional("SOURCE_BUCKET"),
        checkpoint_prefix,
        lease: Duration::from_secs(lease),
        checkpoint_every: Duration::from_secs(every),
        concurrency,
    }
}

impl FromEnv for Config {
    fn read(env: &mut Env) -> Option<Self> {
        let mode = env.or("FORWARD_MODE", Mode::ClaimCheck);
        let kinds = read_kinds(env);
        let prefix = env.raw("SOURCE_PREFIX").unwrap_or_default().to_owned();
        let sink = SinkConfig::read(env);
        let content = read_content(env);
        let sweep = read_sweep(env);
        if mode == Mode::Content && kinds.contains(&EventKind::Removed) {
            env.problem(
                "FORWARD_KINDS",
                "removed objects have no content to forward in FORWARD_MODE=content",
            );
        }
        if !sweep.checkpoint_prefix.is_empty() && prefix.starts_with(&sweep.checkpoint_prefix) {
            env.problem(
                "SOURCE_PREFIX",
                "lies under CHECKPOINT_PREFIX, whose keys are never forwarded",
            );
        }
        Some(Self {
            mode,
            kinds,
            prefix,
            sink: sink?,
            content,
            sweep,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucketfn::sink::{FileFormat, LogLineSettings};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn defaults_need_only_the_sink() -> TestResult {
        let config: Config =
            Env::from_pairs([("KAFKA_BROKERS", "k:9092"), ("KAFKA_TOPIC", "objects")]).load()?;
        assert_eq!(config.mode, Mode::ClaimCheck);
        assert_eq!(config.kinds, [EventKind::Created]);
        assert!(matches!(config.sink, SinkConfig::Kafka(ref k) if k.topic == "objects"));
        Ok(())
    }

    #[test]
    fn every_bad_variable_is_reported_at_once() -> TestResult {
        let err = Env::from_pairs([
            ("FORWARD_MODE", "content"),
            ("FORWARD_KINDS", "created,removed,tagged"),
            ("FORWARD_SINK", "log-ingest"),
            ("CONTENT_FORMAT", "xml"),
            ("SWEEP_LEASE_SECS", "10"),
            ("SWEEP_CHECKPOINT_SECS", "9"),
            ("CHECKPOINT_PREFIX", "state"),
        ])
        .load::<Config>()
        .err()
        .ok_or("accepted")?;
        let vars: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            vars,
            [
                "FORWARD_KINDS",
                "LOG_INGEST_KEY",
                "CONTENT_FORMAT",
                "CHECKPOINT_PREFIX",
                "SWEEP_CHECKPOINT_SECS",
                "FORWARD_KINDS"
            ]
        );
        Ok(())
    }

    #[test]
    fn the_knative_sink_reports_its_missing_url_with_every_other_problem() -> TestResult {
        let err = Env::from_pairs([
            ("FORWARD_SINK", "k-sink"),
            (
                "K_CE_OVERRIDES",
                r#"{"extensions": {"source": "elsewhere"}}"#,
            ),
            ("K_SINK_MAX_ATTEMPTS", "0"),
            ("FORWARD_KINDS", "tagged"),
            ("SWEEP_CONCURRENCY", "0"),
        ])
        .load::<Config>()
        .err()
        .ok_or("accepted")?;
        let vars: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            vars,
            [
                "FORWARD_KINDS",
                "FORWARD_KINDS",
                "K_SINK",
                "K_CE_OVERRIDES",
                "K_SINK_MAX_ATTEMPTS",
                "SWEEP_CONCURRENCY"
            ]
        );
        let config: Config = Env::from_pairs([
            ("FORWARD_SINK", "k-sink"),
            (
                "K_SINK",
                "http://broker-ingress.knative-eventing.svc/ns/default",
            ),
            ("FORWARD_MODE", "content"),
        ])
        .load()?;
        assert!(config.sink.carries_only_cloudevents());
        assert!(matches!(config.sink, SinkConfig::KSink(ref k) if k.url.ends_with("/default")));
        Ok(())
    }

    #[test]
    fn the_file_sink_needs_no_broker() -> TestResult {
        let config: Config = Env::from_pairs([
            ("FORWARD_SINK", "file"),
            ("FORWARD_FILE", "/tmp/out.jsonl"),
            ("FORWARD_KINDS", "created, removed"),
        ])
        .load()?;
        assert_eq!(
            config.sink,
            SinkConfig::File {
                path: "/tmp/out.jsonl".into(),
                format: FileFormat::Messages
            }
        );
        assert_eq!(config.kinds, [EventKind::Created, EventKind::Removed]);
        assert_eq!(config.content.time_field, None);
        Ok(())
    }

    #[test]
    fn the_file_sink_writes_log_ingest_lines_without_an_ingestion_key() -> TestResult {
        let config: Config = Env::from_pairs([
            ("FORWARD_SINK", "file"),
            ("FORWARD_FILE_FORMAT", "log-ingest"),
            ("LOG_INGEST_APP", "vpc-flows"),
            ("FORWARD_MODE", "content"),
            ("CONTENT_TIME_FIELD", "start"),
        ])
        .load()?;
        let expected = LogLineSettings {
            app: "vpc-flows".into(),
            level: "INFO".into(),
        };
        assert_eq!(
            config.sink,
            SinkConfig::File {
                path: "-".into(),
                format: FileFormat::LogIngest(expected)
            }
        );
        assert_eq!(config.content.time_field.as_deref(), Some("start"));
        Ok(())
    }

    #[test]
    fn a_bad_file_format_or_time_field_is_reported_at_start_up() -> TestResult {
        for (pairs, expected) in [
            (
                &[
                    ("FORWARD_FILE_FORMAT", "mezmo"),
                    ("CONTENT_TIME_FIELD", " "),
                ][..],
                &["FORWARD_FILE_FORMAT", "CONTENT_TIME_FIELD"][..],
            ),
            (
                &[
                    ("CONTENT_FORMAT", "lines"),
                    ("CONTENT_TIME_FIELD", "start time"),
                ],
                &["CONTENT_TIME_FIELD"],
            ),
        ] {
            let err = Env::from_pairs([("FORWARD_SINK", "file")].iter().chain(pairs).copied())
                .load::<Config>()
                .err()
                .ok_or("accepted")?;
            let vars: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
            assert_eq!(vars, expected, "{err}");
        }
        // In JSON records a field may be named so.
        let config: Config = Env::from_pairs([
            ("FORWARD_SINK", "file"),
            ("CONTENT_TIME_FIELD", "start time"),
        ])
        .load()?;
        assert_eq!(config.content.time_field.as_deref(), Some("start time"));
        Ok(())
    }
}
