//! Content mode through [`forward`]: records, resumption, times, gzip, JSON, limits, bombs,
//! deadlines and the memory budget.

use super::read::{BUFFER, RATIO_GRACE};
use super::*;
use crate::config::Format;
use bucketfn::budget::MemoryBudget;
use bucketfn::sink::MemoryPublisher;
use bucketfn::sink::Message;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn origin() -> Origin {
    Origin {
        bucket: "logs".into(),
        key: "vpc/a.log.gz".into(),
        etag: "e1".into(),
        cloudevents: false,
    }
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data)?;
    encoder.finish()
}

fn reader(bytes: Vec<u8>) -> ObjectReader {
    Box::pin(std::io::Cursor::new(bytes))
}

/// Every record, from the first.
async fn forward_all(
    reader: ObjectReader,
    origin: &Origin,
    config: &ContentConfig,
    publisher: &dyn Publisher,
    invocation: &Invocation,
) -> Result<u64, HandlerError> {
    let acknowledged = AtomicU64::new(0);
    let resume = Resume {
        skip: 0,
        acknowledged: &acknowledged,
    };
    forward(reader, origin, config, publisher, invocation, resume).await
}

async fn run(bytes: Vec<u8>, config: &ContentConfig) -> Result<(u64, Vec<Message>), HandlerError> {
    let publisher = MemoryPublisher::new();
    let count = forward_all(
        reader(bytes),
        &origin(),
        config,
        &publisher,
        &Invocation::default(),
    )
    .await?;
    Ok((count, publisher.published()))
}

fn bodies(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

const FLOW_LOGS: &str = "2 123456789010 eni-1 10.0.1.5 10.0.0.220 39812 80 6 20 4249 1418530010 1418530070 ACCEPT OK\r\n\
    \n\
    2 123456789010 eni-1 10.0.0.220 10.0.1.5 80 39812 6 20 4249 1418530010 1418530070 ACCEPT OK\n\
    2 123456789010 eni-2 10.0.0.1 10.0.0.2 22 5000 6 1 40 1418530010 1418530070 REJECT OK";

#[tokio::test]
async fn text_lines_become_records_with_dedupe_ids_gzip_or_not() -> TestResult {
    let config = ContentConfig {
        batch_records: 2,
        ..ContentConfig::default()
    };
    for bytes in [FLOW_LOGS.as_bytes().to_vec(), gzip(FLOW_LOGS.as_bytes())?] {
        let (count, messages) = run(bytes, &config).await?;
        assert_eq!(count, 3);
        assert_eq!(bodies(&messages)[1].split(' ').nth(3), Some("10.0.0.220"));
        assert!(!bodies(&messages)[0].ends_with('\r'));
        let ids: Vec<&str> = messages.iter().map(|m| m.headers[0].1.as_str()).collect();
        assert_eq!(ids, ["e1:0", "e1:1", "e1:2"]);
        assert_eq!(messages[0].key.as_deref(), Some("logs/vpc/a.log.gz"));
        assert_eq!(messages[0].content_type, "text/plain");
    }
    Ok(())
}

#[tokio::test]
async fn a_resumed_stream_publishes_only_what_follows_the_acknowledged_records() -> TestResult {
    let config = ContentConfig {
        batch_records: 2,
        ..ContentConfig::default()
    };
    let publisher = MemoryPublisher::new();
    let acknowledged = AtomicU64::new(0);
    let resume = Resume {
        skip: 2,
        acknowledged: &acknowledged,
    };
    let bytes = gzip(FLOW_LOGS.as_bytes())?;
    let inv = Invocation::default();
    let count = forward(reader(bytes), &origin(), &config, &publisher, &inv, resume).await?;
    assert_eq!((count, acknowledged.load(Ordering::Relaxed)), (1, 3));
    let published = publisher.published();
    assert_eq!(published[0].headers[0].1, "e1:2");
    assert_eq!(bodies(&published)[0].split(' ').nth(2), Some("eni-2"));

    // Stopped after one batch: what the sink took is acknowledged, and no more.
    let stop = Stop::at(None);
    let stopping = StopsAfterOneBatch {
        stop: stop.clone(),
        records: AtomicU64::new(0),
        batches: AtomicU64::new(0),
    };
    let invocation = Invocation {
        stop,
        ..Invocation::default()
    };
    let records = br#"[{"a":0},{"a":1},{"a":2},{"a":3},{"a":4},{"a":5}]"#.to_vec();
    let resume = Resume {
        skip: 1,
        acknowledged: &acknowledged,
    };
    let err = forward(
        reader(records),
        &origin(),
        &config,
        &stopping,
        &invocation,
        resume,
    )
    .await
    .err()
    .ok_or("finished although stopped")?;
    assert!(err.is_retryable(), "{err}");
    assert_eq!(stopping.records.load(Ordering::Relaxed), 2);
    assert_eq!(acknowledged.load(Ordering::Relaxed), 3);
    Ok(())
}

const AWS_HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport \
    protocol packets bytes start end action log-status\n";

fn times(messages: &[Message]) -> Vec<Option<i64>> {
    messages
        .iter()
        .map(|m| m.timestamp.map(|t| t.timestamp_millis()))
        .collect()
}

#[tokio::test]
async fn line_records_carry_the_time_of_the_header_column_named() -> TestResult {
    let config = ContentConfig {
        time_field: Some("start".into()),
        batch_records: 2,
        ..ContentConfig::default()
    };
    let text = format!("{AWS_HEADER}{FLOW_LOGS}\n2 1 eni-3 - - - - - - - - - NODATA\n");
    let (count, messages) = run(gzip(text.as_bytes())?, &config).await?;
    // The header is record 0, as without CONTENT_TIME_FIELD: the ids stay as they were.
    assert_eq!(count, 5);
    assert_eq!(messages[0].body, AWS_HEADER.trim_end());
    assert_eq!(messages[4].headers[0].1, "e1:4");
    let start = Some(1_418_530_010_000);
    assert_eq!(times(&messages), [None, start, start, start, None]);

    // A resumed stream reads the header it skips.
    let publisher = MemoryPublisher::new();
    let acknowledged = AtomicU64::new(0);
    let resume = Resume {
        skip: 3,
        acknowledged: &acknowledged,
    };
    let inv = Invocation::default();
    let bytes = reader(text.into_bytes());
    forward(bytes, &origin(), &config, &publisher, &inv, resume).await?;
    assert_eq!(times(&publisher.published()), [start, None]);

    // Without a header naming the column, records go without their time.
    let (count, messages) = run(FLOW_LOGS.as_bytes().to_vec(), &config).await?;
    assert_eq!((count, times(&messages)), (3, vec![None; 3]));
    let (_, messages) = run(
        format!("{AWS_HEADER}{FLOW_LOGS}").into_bytes(),
        &ContentConfig::default(),
    )
    .await?;
    assert_eq!(times(&messages), [None; 4]);
    Ok(())
}

#[tokio::test]
async fn json_records_carry_the_time_of_their_field() -> TestResult {
    let config = ContentConfig {
        time_field: Some("start_time".into()),
        ..ContentConfig::default()
    };
    let document = br#"{"flow_logs": [{"start_time": "2024-01-01T00:00:01Z", "a": 1},
        {"a": 2}, {"start_time": "soon"}, [1], {"start_time": 1704067202}]}"#;
    let (count, messages) = run(document.to_vec(), &config).await?;
    assert_eq!(count, 5);
    assert_eq!(
        times(&messages),
        [
            Some(1_704_067_201_000),
            None,
            None,
            None,
            Some(1_704_067_202_000)
        ]
    );
    Ok(())
}

#[tokio::test]
async fn concatenated_gzip_members_are_read_to_the_end() -> TestResult {
    let mut bytes = gzip(b"one\ntwo\n")?;
    bytes.extend(gzip(b"three\n")?);
    let (count, messages) = run(bytes, &ContentConfig::default()).await?;
    assert_eq!(count, 3);
    assert_eq!(bodies(&messages), ["one", "two", "three"]);
    Ok(())
}

#[tokio::test]
async fn ibm_flow_logs_are_split_into_their_flow_records() -> TestResult {
    let document = serde_json::json!({
        "version": "0.0.1", "collector_crn": "crn:v1:x", "number_of_flow_logs": 2,
        "big_unrelated": {"nested": [1, 2, {"x": "]}"}]},
        "flow_logs": [
            {"start_time": "2024-01-01T00:00:00Z", "initiator_ip": "10.0.0.1", "action": "accepted"},
            {"start_time": "2024-01-01T00:00:01Z", "initiator_ip": "10.0.0.2", "action": "rejected"}
        ],
        "after": true
    });
    let text = serde_json::to_vec_pretty(&document)?;
    let (count, messages) = run(gzip(&text)?, &ContentConfig::default()).await?;
    assert_eq!(count, 2);
    let second: serde_json::Value = serde_json::from_slice(&messages[1].body)?;
    assert_eq!(second["initiator_ip"], "10.0.0.2");
    assert_eq!(messages[1].content_type, "application/json");
    assert_eq!(messages[1].headers[0].1, "e1:1");

    let (count, _) = run(
        br#" [{"a":1},{"a":2},{"a":3}]"#.to_vec(),
        &ContentConfig::default(),
    )
    .await?;
    assert_eq!(count, 3);
    Ok(())
}

#[tokio::test]
async fn json_without_the_field_or_json_lines_are_permanent_with_a_hint() -> TestResult {
    for (text, expected) in [
        (&br#"{"records": []}"#[..], "no `flow_logs` array"),
        (&b"{\"a\":1}\n{\"a\":2}\n"[..], "CONTENT_FORMAT=lines"),
    ] {
        let err = run(text.to_vec(), &ContentConfig::default())
            .await
            .err()
            .ok_or("accepted")?;
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
    let lines = ContentConfig {
        format: Format::Lines,
        ..ContentConfig::default()
    };
    let (count, _) = run(b"{\"a\":1}\n{\"a\":2}\n".to_vec(), &lines).await?;
    assert_eq!(count, 2);
    Ok(())
}

#[tokio::test]
async fn corrupt_gzip_is_permanent() -> TestResult {
    let mut bytes = gzip(FLOW_LOGS.as_bytes())?;
    let middle = bytes.len() / 2;
    bytes[middle..].fill(0x55);
    let err = run(bytes, &ContentConfig::default())
        .await
        .err()
        .ok_or("accepted")?;
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("logs/vpc/a.log.gz is not valid gzip"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn an_endless_line_is_refused_at_the_record_limit() -> TestResult {
    let config = ContentConfig {
        max_record_bytes: 1000,
        ..ContentConfig::default()
    };
    let mut text = b"short\n".to_vec();
    text.extend(vec![b'x'; 5000]);
    let err = run(text, &config).await.err().ok_or("accepted")?;
    assert!(!err.is_retryable());
    assert!(
        err.to_string()
            .contains("longer than 1000 bytes after record 1"),
        "{err}"
    );
    Ok(())
}

/// A gzip stream made of one member repeated: gigabytes of content from a few kilobytes,
/// generated as it is read, never held; it counts what was read of it.
struct Repeated {
    member: Vec<u8>,
    times: u64,
    position: usize,
    served: Arc<AtomicU64>,
}

impl Repeated {
    fn new(member: Vec<u8>, times: u64) -> (Self, Arc<AtomicU64>) {
        let served = Arc::new(AtomicU64::new(0));
        let stream = Self {
            member,
            times,
            position: 0,
            served: Arc::clone(&served),
        };
        (stream, served)
    }

    /// The whole stream's length.
    fn len(&self) -> u64 {
        self.member.len() as u64 * self.times
    }
}

impl AsyncRead for Repeated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        while buf.remaining() > 0 && self.times > 0 {
            let take = (self.member.len() - self.position).min(buf.remaining());
            let start = self.position;
            buf.put_slice(&self.member[start..start + take]);
            self.position += take;
            if self.position == self.member.len() {
                self.position = 0;
                self.times -= 1;
            }
        }
        let read = (buf.filled().len() - before) as u64;
        self.served.fetch_add(read, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

/// Peak resident memory of this process, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// 1 GiB of one byte, gzipped as members of 1 MiB (about 1000 times smaller each): about
/// 1 MB to read.
fn bomb(byte: u8) -> std::io::Result<Repeated> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(&vec![byte; 1 << 20])?;
    Ok(Repeated::new(encoder.finish()?, 1024).0)
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_bombs_are_refused_permanently_having_read_a_bounded_part() -> TestResult {
    let no_ratio = ContentConfig {
        max_ratio: 1 << 20,
        max_bytes: 64 << 20,
        ..ContentConfig::default()
    };
    for (byte, config, limit) in [
        // Blank lines: no record is ever held, only the ratio stops it.
        (b'\n', ContentConfig::default(), "CONTENT_MAX_RATIO"),
        // Without the ratio check, the size limit.
        (b'\n', no_ratio, "CONTENT_MAX_BYTES"),
        // Zeros are one endless line: the record limit comes first.
        (0, ContentConfig::default(), "CONTENT_MAX_RECORD_BYTES"),
    ] {
        let stream = bomb(byte)?;
        let (whole, served) = (stream.len(), Arc::clone(&stream.served));
        let publisher = MemoryPublisher::new();
        let err = forward_all(
            Box::pin(stream),
            &origin(),
            &config,
            &publisher,
            &Invocation::default(),
        )
        .await
        .err()
        .ok_or("bomb accepted")?;
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("logs/vpc/a.log.gz"), "{err}");
        assert!(err.to_string().contains(limit), "{err}");
        let read = served.load(Ordering::Relaxed);
        assert!(
            read <= 2 * BUFFER as u64 && read < whole,
            "read {read} of {whole} bytes"
        );
        assert!(publisher.published().is_empty());
    }
    Ok(())
}

#[tokio::test]
async fn content_over_the_size_limit_is_permanent_and_names_it() -> TestResult {
    let config = ContentConfig {
        max_bytes: 1 << 20,
        ..ContentConfig::default()
    };
    let text = FLOW_LOGS.repeat((2 << 20) / FLOW_LOGS.len());
    for bytes in [text.as_bytes().to_vec(), gzip(text.as_bytes())?] {
        let err = run(bytes, &config).await.err().ok_or("accepted")?;
        assert!(!err.is_retryable(), "{err}");
        assert!(
            err.to_string()
                .contains("holds more than 1048576 bytes of content (CONTENT_MAX_BYTES)"),
            "{err}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_loops_log_the_most_compressible_real_log_is_not_a_bomb() -> TestResult {
    // The same stack trace again and again, only the time changing: about 150 times
    // smaller gzipped, past the ratio check's grace.
    let trace: String = (0..30)
        .map(|n| {
            format!(
                "\tat com.example.service.Module{n}.call(Module{n}.java:{})\n",
                40 + n
            )
        })
        .collect();
    let mut log = String::new();
    let mut entries = 0u64;
    while log.len() < 2 * RATIO_GRACE as usize {
        let ms = entries * 7;
        log.push_str(&format!(
            "2024-11-05T10:{:02}:{:02}.{:03}Z ERROR [main] request failed\n\
             java.lang.IllegalStateException: Connection pool shut down\n{trace}",
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        ));
        entries += 1;
    }
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(log.as_bytes())?;
    let gzipped = encoder.finish()?;
    assert!(
        log.len() > 100 * gzipped.len(),
        "{}",
        log.len() / gzipped.len()
    );
    let publisher = Counting::default();
    let count = forward_all(
        reader(gzipped),
        &origin(),
        &ContentConfig::default(),
        &publisher,
        &Invocation::default(),
    )
    .await?;
    assert_eq!(count, entries * 32);
    Ok(())
}

/// Counts what it is given and drops it, like a broker would take it away.
#[derive(Default)]
struct Counting {
    records: AtomicU64,
    largest_batch: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Publisher for Counting {
    async fn publish(&self, messages: Vec<Message>) -> Result<(), bucketfn::sink::PublishError> {
        let bytes: usize = messages.iter().map(|m| m.body.len()).sum();
        self.largest_batch.fetch_max(bytes, Ordering::Relaxed);
        self.records
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gigabyte_stream_goes_through_in_bounded_memory() -> TestResult {
    // 1 MiB of distinct 1 KiB lines per member, 1024 members: 1 GiB of content.
    let mut chunk = Vec::with_capacity(1 << 20);
    for n in 0..1024 {
        let line = format!("{n:06} {}\n", "flow ".repeat(203));
        chunk.extend_from_slice(&line.as_bytes()[..1023]);
        chunk.push(b'\n');
    }
    let (stream, _) = Repeated::new(gzip(&chunk)?, 1024);
    let before = peak_rss().ok_or("no /proc/self/status")?;
    let publisher = Counting::default();
    let config = ContentConfig {
        max_ratio: 1000,
        ..ContentConfig::default()
    };
    let count = forward_all(
        Box::pin(stream),
        &origin(),
        &config,
        &publisher,
        &Invocation::default(),
    )
    .await?;
    assert_eq!(count, 1024 * 1024);
    assert_eq!(publisher.records.load(Ordering::Relaxed), 1024 * 1024);
    assert!(publisher.largest_batch.load(Ordering::Relaxed) <= config.batch_bytes + 1024);
    let growth = peak_rss()
        .ok_or("no /proc/self/status")?
        .saturating_sub(before);
    assert!(
        growth < 256 << 20,
        "peak memory grew by {} MiB for a 1 GiB stream",
        growth >> 20
    );
    Ok(())
}

fn stopped_at(deadline: Instant) -> Invocation {
    Invocation {
        stop: Stop::at(Some(deadline)),
        ..Invocation::default()
    }
}

#[tokio::test]
async fn a_stream_past_its_deadline_is_retryable_and_publishes_nothing() -> TestResult {
    let publisher = MemoryPublisher::new();
    let err = forward_all(
        reader(FLOW_LOGS.as_bytes().to_vec()),
        &origin(),
        &ContentConfig::default(),
        &publisher,
        &stopped_at(Instant::now()),
    )
    .await
    .err()
    .ok_or("forwarded after the deadline")?;
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        err.to_string(),
        "forwarding the records of logs/vpc/a.log.gz: stopped at the deadline before the \
         work was finished"
    );
    assert!(publisher.published().is_empty());
    Ok(())
}

/// Takes what it is given, and tells the stream to stop after its first batch.
struct StopsAfterOneBatch {
    stop: Stop,
    records: AtomicU64,
    batches: AtomicU64,
}

#[async_trait::async_trait]
impl Publisher for StopsAfterOneBatch {
    async fn publish(&self, messages: Vec<Message>) -> Result<(), bucketfn::sink::PublishError> {
        self.records
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.stop.stop();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_stopped_half_way_ends_promptly_and_publishes_no_more() -> TestResult {
    // 1 GiB of distinct-enough lines: far more than is read before the stop is seen.
    let lines = FLOW_LOGS.repeat((1 << 20) / FLOW_LOGS.len());
    let (stream, served) = Repeated::new(gzip(lines.as_bytes())?, 1024);
    let whole = stream.len();
    let stop = Stop::at(None);
    let publisher = StopsAfterOneBatch {
        stop: stop.clone(),
        records: AtomicU64::new(0),
        batches: AtomicU64::new(0),
    };
    let invocation = Invocation {
        stop,
        ..Invocation::default()
    };
    let err = forward_all(
        Box::pin(stream),
        &origin(),
        &ContentConfig::default(),
        &publisher,
        &invocation,
    )
    .await
    .err()
    .ok_or("finished although stopped")?;
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("stopped at the deadline"), "{err}");
    assert_eq!(publisher.batches.load(Ordering::Relaxed), 1);
    assert_eq!(
        publisher.records.load(Ordering::Relaxed),
        ContentConfig::default().batch_records as u64
    );
    // Read on for at most the batches queued behind the first, not to the end.
    let read = served.load(Ordering::Relaxed);
    assert!(
        read <= 2 * BUFFER as u64 && read < whole,
        "read {read} of {whole} bytes"
    );
    Ok(())
}

#[tokio::test]
async fn a_stream_that_needs_more_than_the_whole_budget_is_permanent() -> TestResult {
    let config = ContentConfig::default();
    let need = need(&config, &origin());
    let invocation = Invocation {
        memory: MemoryBudget::new(need / 2),
        ..Invocation::default()
    };
    let publisher = MemoryPublisher::new();
    let err = forward_all(
        reader(FLOW_LOGS.as_bytes().to_vec()),
        &origin(),
        &config,
        &publisher,
        &invocation,
    )
    .await
    .err()
    .ok_or("forwarded over the budget")?;
    assert!(!err.is_retryable(), "{err}");
    let text = err.to_string();
    for part in [
        "the content stream of logs/vpc/a.log.gz",
        "CONTENT_BATCH_BYTES",
        "over the memory budget",
        "(MAX_DECODE_BYTES)",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    assert!(publisher.published().is_empty());
    Ok(())
}

#[test]
fn the_need_follows_the_batch_and_record_settings() {
    let defaults = ContentConfig::default();
    let base = need(&defaults, &origin());
    // The defaults' stream fits many times in the default budget.
    assert!(base < 32 << 20, "{base}");
    assert!(base * 8 < MemoryBudget::DEFAULT_BYTES, "{base}");
    let bigger_batches = ContentConfig {
        batch_bytes: 8 << 20,
        batch_records: 100_000,
        ..defaults.clone()
    };
    assert!(need(&bigger_batches, &origin()) > base + 5 * (7 << 20));
    let lines = ContentConfig {
        format: Format::Lines,
        ..defaults.clone()
    };
    assert!(need(&lines, &origin()) < base);
    let cloudevents = Origin {
        cloudevents: true,
        ..origin()
    };
    assert!(need(&defaults, &cloudevents) > base);
    let absurd = ContentConfig {
        batch_records: usize::MAX,
        max_record_bytes: usize::MAX,
        ..defaults
    };
    assert_eq!(need(&absurd, &origin()), u64::MAX);
}

/// Holds every publish until opened, saying when the first one arrived.
struct Gate {
    open: tokio::sync::Semaphore,
    entered: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Publisher for Gate {
    async fn publish(&self, _: Vec<Message>) -> Result<(), bucketfn::sink::PublishError> {
        self.entered.notify_one();
        let _pass = self.open.acquire().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_streams_that_do_not_fit_together_never_run_at_once() -> TestResult {
    let config = ContentConfig::default();
    let need = need(&config, &origin());
    let memory = MemoryBudget::new(need + need / 2);
    let gate = Arc::new(Gate {
        open: tokio::sync::Semaphore::new(0),
        entered: tokio::sync::Notify::new(),
    });
    let start = |publisher: Arc<dyn Publisher>, invocation: Invocation| {
        let config = config.clone();
        tokio::spawn(async move {
            forward_all(
                reader(FLOW_LOGS.as_bytes().to_vec()),
                &origin(),
                &config,
                publisher.as_ref(),
                &invocation,
            )
            .await
        })
    };
    let shared = Invocation {
        memory: memory.clone(),
        ..Invocation::default()
    };
    let first = start(Arc::clone(&gate) as Arc<dyn Publisher>, shared.clone());
    gate.entered.notified().await;
    assert!(memory.available() < need);

    // A second stream whose deadline comes before the budget frees up: retryable.
    let second = Arc::new(MemoryPublisher::new());
    let soon = Invocation {
        stop: Stop::at(Some(Instant::now() + Duration::from_millis(50))),
        ..shared.clone()
    };
    let err = start(Arc::clone(&second) as Arc<dyn Publisher>, soon)
        .await?
        .err()
        .ok_or("both streams ran at once")?;
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("taken by other work"), "{err}");
    assert!(second.published().is_empty());

    // One that may wait gets its share once the first stream is done.
    let third = Arc::new(MemoryPublisher::new());
    let waiting = start(Arc::clone(&third) as Arc<dyn Publisher>, shared);
    tokio::task::yield_now().await;
    assert!(third.published().is_empty());
    gate.open.add_permits(usize::MAX >> 4);
    assert_eq!(first.await??, 3);
    assert_eq!(waiting.await??, 3);
    assert_eq!(third.published().len(), 3);
    assert_eq!(memory.available(), memory.limit().div_ceil(1024) * 1024);
    Ok(())
}

/// The object's bytes, then a failure of the store's connection.
struct BreaksAfter(std::io::Cursor<Vec<u8>>);

impl AsyncRead for BreaksAfter {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before => Poll::Ready(Err(
                std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset"),
            )),
            other => other,
        }
    }
}

#[tokio::test]
async fn a_store_failing_mid_stream_is_retryable_whatever_the_content() -> TestResult {
    let lines: Vec<u8> = (0..50_000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let json: Vec<u8> = format!(
        "[{}",
        (0..50_000)
            .map(|i| format!("{{\"n\": {i}}}"))
            .collect::<Vec<_>>()
            .join(",")
    )
    .into_bytes();
    for (what, bytes) in [
        ("lines", lines.clone()),
        ("gzip lines", gzip(&lines)?),
        ("a JSON array", json.clone()),
        ("a gzip JSON array", gzip(&json)?),
    ] {
        let publisher = MemoryPublisher::new();
        let err = forward_all(
            Box::pin(BreaksAfter(std::io::Cursor::new(bytes))),
            &origin(),
            &ContentConfig::default(),
            &publisher,
            &Invocation::default(),
        )
        .await
        .err()
        .ok_or(format!("{what}: a broken stream succeeded"))?;
        assert!(err.is_retryable(), "{what}: {err}");
        let message = bucketfn::outcome::chain(&err);
        assert!(
            message.contains("reading logs/vpc/a.log.gz failed")
                && message.contains("connection reset"),
            "{what}: {message}"
        );
    }
    Ok(())
}
