//! Content mode: an object's records streamed to the sink in batches, in bounded memory
//! whatever the object's size. Gzip is recognised by its magic bytes; records are lines, or
//! the elements of a JSON array (the top-level one, or a field such as IBM's `flow_logs`),
//! read element by element; each record carries the dedupe id `<etag>:<index>`, and, for sinks
//! that carry only CloudEvents, the attributes that make it one.

use std::cell::Cell;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;

use bucketfn::HandlerError;
use bucketfn::sink::{Message, Publisher};
use bucketfn::storage::{ObjectPath, ObjectReader};
use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use crate::config::{ContentConfig, Format};

/// Read-ahead of the object and of the decompressed stream.
const BUFFER: usize = 256 * 1024;
/// Decompressed bytes allowed before the ratio check starts: small files that compress very
/// well are harmless.
const RATIO_GRACE: u64 = 16 * 1024 * 1024;

/// Which object the records come from, as messages name it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub bucket: String,
    pub key: String,
    /// The object version's etag: with the record index, the dedupe id.
    pub etag: String,
    /// Each record is also a CloudEvent in Kafka binary mode (`ce_*` headers), for a sink that
    /// carries nothing else (K_SINK).
    pub cloudevents: bool,
}

/// The type of a record's CloudEvent.
pub const RECORD_TYPE: &str = "io.bucketfn.object.record";

/// What keys keep as they are in a record's `ce_source` (`s3://<bucket>/<key>`): the URL path
/// percent-encode set, plus `%` so that a key's own percent signs stay apart from escapes.
const SOURCE_PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// The CloudEvent attributes all records of one object share. Each record is its own event,
/// not each batch: the record's dedupe id is the event id, so a consumer drops what a
/// redelivery or a catch-up pass sends again exactly as on the other sinks, and a Trigger can
/// filter single records. A batch's bounds move with `CONTENT_BATCH_*`, so its id could not be
/// stable.
#[derive(Debug, Clone)]
struct RecordEvent {
    /// `s3://<bucket>/<key>`: ids (`<etag>:<index>`) are unique only within one object, and
    /// CloudEvents ids are unique within their source.
    source: String,
    subject: String,
}

impl RecordEvent {
    fn of(origin: &Origin) -> Option<Self> {
        origin.cloudevents.then(|| Self {
            source: format!(
                "s3://{}/{}",
                origin.bucket,
                utf8_percent_encode(&origin.key, SOURCE_PATH)
            ),
            subject: origin.key.clone(),
        })
    }

    /// A record's headers: its dedupe id, which is also its CloudEvent id, and the attributes.
    fn headers(&self, id: String) -> Vec<(String, String)> {
        vec![
            ("dedupe_id".to_owned(), id.clone()),
            ("ce_specversion".to_owned(), "1.0".to_owned()),
            ("ce_id".to_owned(), id),
            ("ce_source".to_owned(), self.source.clone()),
            ("ce_type".to_owned(), RECORD_TYPE.to_owned()),
            ("ce_subject".to_owned(), self.subject.clone()),
        ]
    }
}

/// Why an object's content could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("reading {} failed", ObjectPath(bucket, key))]
    Read {
        bucket: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid gzip", ObjectPath(bucket, key))]
    Corrupt {
        bucket: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{} {limit}", ObjectPath(bucket, key))]
    Limit {
        bucket: String,
        key: String,
        limit: Limit,
    },
    #[error(
        "{} is not the JSON expected: {reason} (files of one JSON object per line need CONTENT_FORMAT=lines)",
        ObjectPath(bucket, key)
    )]
    Json {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error(
        "the reader of {} stopped abnormally: {reason}",
        ObjectPath(bucket, key)
    )]
    Stopped {
        bucket: String,
        key: String,
        reason: String,
    },
}

impl From<ContentError> for HandlerError {
    fn from(error: ContentError) -> Self {
        match error {
            ContentError::Read { .. } | ContentError::Stopped { .. } => Self::retryable(error),
            _ => Self::permanent(error),
        }
    }
}

/// A limit that content ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Size(u64),
    Ratio(u64),
    Record { limit: usize, after: u64 },
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Size(limit) => write!(
                f,
                "holds more than {limit} bytes of content (CONTENT_MAX_BYTES)"
            ),
            Self::Ratio(ratio) => write!(
                f,
                "decompresses to more than {ratio} times its compressed size: refused as a \
                 likely gzip bomb (CONTENT_MAX_RATIO)"
            ),
            Self::Record { limit, after } => write!(
                f,
                "has a record longer than {limit} bytes after record {after} \
                 (CONTENT_MAX_RECORD_BYTES)"
            ),
        }
    }
}

/// Why the reading side stopped.
#[derive(Debug)]
enum Stop {
    Limit(Limit),
    Source(std::io::Error),
    Corrupt(std::io::Error),
    Json(String),
    /// The publishing side is gone (it failed or was cancelled).
    Closed,
}

/// What the reader layers tell each other: how much was read, and what went wrong first.
#[derive(Default)]
struct Meter {
    compressed: Cell<u64>,
    since_record: Cell<u64>,
    source_failed: Cell<bool>,
    limit: Cell<Option<Limit>>,
}

/// The object's bytes, counted; a failure here is the store's, not the content's.
struct Source<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                let meter = &self.meter;
                meter.compressed.set(meter.compressed.get() + n as u64);
                Ok(n)
            }
            Err(e) => {
                self.meter.source_failed.set(true);
                Err(e)
            }
        }
    }
}

/// The decompressed bytes, held to the size, ratio and (for JSON) record limits.
struct Guarded<R> {
    inner: R,
    meter: Rc<Meter>,
    out: u64,
    gzip: bool,
    json: bool,
    records: Rc<Cell<u64>>,
    config: ContentConfig,
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        let meter = &self.meter;
        meter.since_record.set(meter.since_record.get() + n as u64);
        let tripped = if self.out > self.config.max_bytes {
            Some(Limit::Size(self.config.max_bytes))
        } else if self.gzip
            && self.out > RATIO_GRACE
            && self.out > meter.compressed.get().saturating_mul(self.config.max_ratio)
        {
            Some(Limit::Ratio(self.config.max_ratio))
        } else if self.json
            && meter.since_record.get() > (self.config.max_record_bytes + BUFFER) as u64
        {
            Some(Limit::Record {
                limit: self.config.max_record_bytes,
                after: self.records.get(),
            })
        } else {
            None
        };
        match tripped {
            Some(limit) => {
                meter.limit.set(Some(limit));
                Err(std::io::Error::other(limit.to_string()))
            }
            None => Ok(n),
        }
    }
}

/// Collects records into batches and hands full batches to the publishing side.
struct Batcher {
    tx: mpsc::Sender<Vec<Message>>,
    batch: Vec<Message>,
    bytes: usize,
    index: Rc<Cell<u64>>,
    message_key: String,
    etag: String,
    cloudevent: Option<RecordEvent>,
    content_type: &'static str,
    meter: Rc<Meter>,
    config: ContentConfig,
}

impl Batcher {
    fn push(&mut self, record: &[u8]) -> Result<(), Stop> {
        let index = self.index.get();
        if record.len() > self.config.max_record_bytes {
            return Err(Stop::Limit(Limit::Record {
                limit: self.config.max_record_bytes,
                after: index,
            }));
        }
        let id = format!("{}:{index}", self.etag);
        let headers = match &self.cloudevent {
            None => vec![("dedupe_id".to_owned(), id)],
            Some(event) => event.headers(id),
        };
        self.batch.push(Message {
            key: Some(self.message_key.clone()),
            headers,
            content_type: self.content_type.to_owned(),
            correlation_id: None,
            body: Bytes::copy_from_slice(record),
        });
        self.index.set(index + 1);
        self.meter.since_record.set(0);
        self.bytes += record.len();
        if self.batch.len() >= self.config.batch_records || self.bytes >= self.config.batch_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// A line without its line ending; blank lines are not records.
    fn line(&mut self, line: &[u8]) -> Result<(), Stop> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(());
        }
        self.push(line)
    }

    fn flush(&mut self) -> Result<(), Stop> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        self.tx
            .blocking_send(std::mem::take(&mut self.batch))
            .map_err(|_| Stop::Closed)
    }
}

/// Forwards every record of `reader` to `publisher`, a batch at a time, and returns how many
/// records were published. Reading and decompressing run on a blocking thread while the
/// previous batch is being published; at most two batches wait in between.
pub async fn forward(
    reader: ObjectReader,
    origin: &Origin,
    config: &ContentConfig,
    publisher: &dyn Publisher,
) -> Result<u64, HandlerError> {
    let (tx, mut rx) = mpsc::channel(2);
    let runtime = tokio::runtime::Handle::current();
    let (config_copy, origin_copy) = (config.clone(), origin.clone());
    let reading = tokio::task::spawn_blocking(move || {
        split(
            SyncIoBridge::new_with_handle(reader, runtime),
            &origin_copy,
            config_copy,
            tx,
        )
    });
    let mut published = 0u64;
    while let Some(batch) = rx.recv().await {
        let count = batch.len() as u64;
        // Returning drops the receiver, which stops the reading thread at its next batch.
        publisher.publish(batch).await?;
        published += count;
    }
    let stopped = |reason: String| ContentError::Stopped {
        bucket: origin.bucket.clone(),
        key: origin.key.clone(),
        reason,
    };
    let result = reading.await.map_err(|e| stopped(e.to_string()))?;
    let (bucket, key) = (origin.bucket.clone(), origin.key.clone());
    result.map_err(|stop| match stop {
        Stop::Limit(limit) => ContentError::Limit { bucket, key, limit },
        Stop::Source(source) => ContentError::Read {
            bucket,
            key,
            source,
        },
        Stop::Corrupt(source) => ContentError::Corrupt {
            bucket,
            key,
            source,
        },
        Stop::Json(reason) => ContentError::Json {
            bucket,
            key,
            reason,
        },
        Stop::Closed => stopped("the publishing side went away".to_owned()),
    })?;
    Ok(published)
}

/// The reading side: detect gzip, detect the format, split, batch.
fn split(
    reader: impl Read,
    origin: &Origin,
    config: ContentConfig,
    tx: mpsc::Sender<Vec<Message>>,
) -> Result<(), Stop> {
    let meter = Rc::new(Meter::default());
    let mut source = BufReader::with_capacity(
        BUFFER,
        Source {
            inner: reader,
            meter: Rc::clone(&meter),
        },
    );
    let head = source.fill_buf().map_err(Stop::Source)?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let decoded: Box<dyn Read> = if gzip {
        Box::new(MultiGzDecoder::new(source))
    } else {
        Box::new(source)
    };
    let index = Rc::new(Cell::new(0));
    let mut guarded = Guarded {
        inner: decoded,
        meter: Rc::clone(&meter),
        out: 0,
        gzip,
        json: false,
        records: Rc::clone(&index),
        config: config.clone(),
    };
    // The format decides how the guard counts, so peek through a guard that does not count
    // records yet.
    let mut first = [0u8; 1];
    let mut lead = Vec::new();
    let json = loop {
        match guarded.read(&mut first) {
            Ok(0) => break false,
            Ok(_) => {
                lead.push(first[0]);
                match first[0] {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    // A UTF-8 byte-order mark.
                    0xef | 0xbb | 0xbf if lead.len() <= 3 => continue,
                    b'[' | b'{' => break config.format != Format::Lines,
                    _ => break config.format == Format::Json,
                }
            }
            Err(e) => return Err(classify(e, &meter)),
        }
    };
    guarded.json = json;
    let mut batcher = Batcher {
        tx,
        batch: Vec::with_capacity(config.batch_records.min(10_000)),
        bytes: 0,
        index,
        message_key: format!("{}/{}", origin.bucket, origin.key),
        etag: origin.etag.clone(),
        cloudevent: RecordEvent::of(origin),
        content_type: if json {
            "application/json"
        } else {
            "text/plain"
        },
        meter: Rc::clone(&meter),
        config: config.clone(),
    };
    let stream = std::io::Cursor::new(lead).chain(guarded);
    let outcome = if json {
        split_json(stream, &config.json_field, &mut batcher)
    } else {
        split_lines(
            BufReader::with_capacity(BUFFER, stream),
            &mut batcher,
            config.max_record_bytes,
        )
    };
    // A limit or a failing store shows through the readers as an I/O error; say which.
    let outcome = match outcome {
        Err(Stop::Source(e) | Stop::Corrupt(e)) => Err(classify(e, &meter)),
        Err(Stop::Json(reason)) => match (meter.limit.get(), meter.source_failed.get()) {
            (Some(limit), _) => Err(Stop::Limit(limit)),
            (None, true) => Err(Stop::Source(std::io::Error::other(reason))),
            (None, false) => Err(Stop::Json(reason)),
        },
        other => other,
    };
    outcome?;
    batcher.flush()
}

fn classify(error: std::io::Error, meter: &Meter) -> Stop {
    if let Some(limit) = meter.limit.get() {
        Stop::Limit(limit)
    } else if meter.source_failed.get() {
        Stop::Source(error)
    } else {
        Stop::Corrupt(error)
    }
}

fn split_lines(
    mut reader: impl BufRead,
    out: &mut Batcher,
    max_record_bytes: usize,
) -> Result<(), Stop> {
    // Holds only a line that spans two reads.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let buf = reader.fill_buf().map_err(Stop::Source)?;
        if buf.is_empty() {
            break;
        }
        let len = buf.len();
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', buf) {
            if pending.is_empty() {
                out.line(&buf[start..end])?;
            } else {
                pending.extend_from_slice(&buf[start..end]);
                out.line(&pending)?;
                pending.clear();
            }
            start = end + 1;
        }
        if pending.len() + (len - start) > max_record_bytes {
            return Err(Stop::Limit(Limit::Record {
                limit: max_record_bytes,
                after: out.index.get(),
            }));
        }
        pending.extend_from_slice(&buf[start..]);
        reader.consume(len);
    }
    if !pending.is_empty() {
        out.line(&pending)?;
    }
    Ok(())
}

fn split_json(reader: impl Read, field: &str, out: &mut Batcher) -> Result<(), Stop> {
    let mut failure = None;
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let document = Document {
        field,
        out,
        failure: &mut failure,
    };
    let parsed = document
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
    match (parsed, failure) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(stop)) => Err(stop),
        (Err(e), None) => Err(Stop::Json(e.to_string())),
    }
}

/// The whole document: an array of records, or an object holding one in `field`.
struct Document<'a> {
    field: &'a str,
    out: &'a mut Batcher,
    failure: &'a mut Option<Stop>,
}

impl<'de> DeserializeSeed<'de> for Document<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Document<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an array of records or an object with a `{}` array",
            self.field
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        Records {
            out: self.out,
            failure: self.failure,
        }
        .visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut found = false;
        while let Some(name) = map.next_key::<String>()? {
            if name == self.field {
                map.next_value_seed(Records {
                    out: &mut *self.out,
                    failure: &mut *self.failure,
                })?;
                found = true;
            } else {
                // Other fields are skipped without being held in memory.
                map.next_value::<IgnoredAny>()?;
            }
        }
        if found {
            Ok(())
        } else {
            Err(A::Error::custom(format!(
                "the top-level object has no `{}` array (CONTENT_JSON_FIELD)",
                self.field
            )))
        }
    }
}

/// The array of records: each element is published as its JSON text.
struct Records<'a> {
    out: &'a mut Batcher,
    failure: &'a mut Option<Stop>,
}

impl<'de> DeserializeSeed<'de> for Records<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Records<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(record) = seq.next_element::<Box<RawValue>>()? {
            if let Err(stop) = self.out.push(record.get().as_bytes()) {
                *self.failure = Some(stop);
                return Err(A::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucketfn::sink::MemoryPublisher;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;
    use std::pin::Pin;
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

    async fn run(
        bytes: Vec<u8>,
        config: &ContentConfig,
    ) -> Result<(u64, Vec<Message>), HandlerError> {
        let publisher = MemoryPublisher::new();
        let count = forward(reader(bytes), &origin(), config, &publisher).await?;
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
    /// generated as it is read, never held.
    struct Repeated {
        member: Vec<u8>,
        times: u64,
        position: usize,
    }

    impl AsyncRead for Repeated {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
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

    #[tokio::test(flavor = "multi_thread")]
    async fn a_gzip_bomb_is_refused_by_ratio_without_holding_it() -> TestResult {
        // 1 MiB of line ends per member (about 1000 times smaller gzipped), 100 000 members:
        // about 100 GB of content, and never a record that could be held.
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(&vec![b'\n'; 1 << 20])?;
        let member = encoder.finish()?;
        let bomb = Repeated {
            member,
            times: 100_000,
            position: 0,
        };
        let publisher = MemoryPublisher::new();
        let err = forward(
            Box::pin(bomb),
            &origin(),
            &ContentConfig::default(),
            &publisher,
        )
        .await
        .err()
        .ok_or("bomb accepted")?;
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("likely gzip bomb"), "{err}");
        assert!(err.to_string().contains("CONTENT_MAX_RATIO"), "{err}");
        Ok(())
    }

    /// Counts what it is given and drops it, like a broker would take it away.
    #[derive(Default)]
    struct Counting {
        records: std::sync::atomic::AtomicU64,
        largest_batch: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Publisher for Counting {
        async fn publish(
            &self,
            messages: Vec<Message>,
        ) -> Result<(), bucketfn::sink::PublishError> {
            use std::sync::atomic::Ordering;
            let bytes: usize = messages.iter().map(|m| m.body.len()).sum();
            self.largest_batch.fetch_max(bytes, Ordering::Relaxed);
            self.records
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_gigabyte_stream_goes_through_in_bounded_memory() -> TestResult {
        use std::sync::atomic::Ordering;
        // 1 MiB of distinct 1 KiB lines per member, 1024 members: 1 GiB of content.
        let mut chunk = Vec::with_capacity(1 << 20);
        for n in 0..1024 {
            let line = format!("{n:06} {}\n", "flow ".repeat(203));
            chunk.extend_from_slice(&line.as_bytes()[..1023]);
            chunk.push(b'\n');
        }
        let member = gzip(&chunk)?;
        let stream = Repeated {
            member,
            times: 1024,
            position: 0,
        };
        let before = peak_rss().ok_or("no /proc/self/status")?;
        let publisher = Counting::default();
        let config = ContentConfig {
            max_ratio: 1000,
            ..ContentConfig::default()
        };
        let count = forward(Box::pin(stream), &origin(), &config, &publisher).await?;
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
}
