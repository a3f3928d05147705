//! Content mode: an object's records (lines, or the elements of a JSON array; gzip found by its
//! magic bytes) streamed to the sink in batches with dedupe ids `<etag>:<index>` and, with
//! `CONTENT_TIME_FIELD`, their own times, in a share of the process's memory budget reserved
//! before the stream starts, stopping at its deadline, and resuming after the records an earlier
//! attempt had sent.

use std::cell::Cell;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bucketfn::budget::{Stop, Stopped};
use bucketfn::sink::{Message, Publisher, RecordBatch, RecordEvent, RecordStamp};
use bucketfn::storage::{ObjectPath, ObjectReader};
use bucketfn::{HandlerError, Invocation};
use flate2::bufread::MultiGzDecoder;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use crate::config::{ContentConfig, Format};
use crate::record_time::RecordTime;

/// Read-ahead of the object and of the decompressed stream; also how much leading whitespace
/// is looked through to tell JSON from lines.
const BUFFER: usize = 256 * 1024;
/// Decompressed bytes allowed before the ratio check starts: small files that compress very
/// well are harmless.
const RATIO_GRACE: u64 = 16 * 1024 * 1024;
/// What the store's client holds of the body beyond what was read: hyper's read buffer grows
/// to about 400 KiB, plus TLS records.
const STORE_READ_AHEAD: u64 = 512 * 1024;
/// The inflater: zlib's 32 KiB window with its state, and the gzip header's extra, name and
/// comment fields, which flate2 holds up to 64 KiB each.
const INFLATE: u64 = 64 * 1024 + 3 * 64 * 1024;
/// Full batches waiting between the reading thread and the publishing side.
const QUEUED_BATCHES: usize = 2;
/// What the allocator adds to each allocation (its header and rounding): a batch is mostly
/// small strings.
const ALLOCATION_OVERHEAD: u64 = 16;
/// How long a stream waits for its share of the memory budget (never past its deadline)
/// before the event is answered retryable. Shares come back as streams end, and a log file of
/// a few MB streams in well under a second: a short wait rides out a burst, a longer one would
/// only hold a delivery the platform can as well retry.
const BUDGET_WAIT: Duration = Duration::from_secs(5);

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

/// What every record of the object carries besides its body.
fn stamp(origin: &Origin, json: bool) -> RecordStamp {
    RecordStamp {
        message_key: format!("{}/{}", origin.bucket, origin.key),
        etag: origin.etag.clone(),
        cloudevent: origin.cloudevents.then(|| RecordEvent {
            source: format!(
                "s3://{}/{}",
                origin.bucket,
                utf8_percent_encode(&origin.key, SOURCE_PATH)
            ),
            subject: origin.key.clone(),
        }),
        content_type: if json {
            "application/json"
        } else {
            "text/plain"
        },
    }
}

/// The most memory one object's stream holds, from the configuration and the object's names
/// (every record's headers repeat them). [`forward`] reserves it from the process's budget
/// before it reads anything.
pub fn need(config: &ContentConfig, origin: &Origin) -> u64 {
    let buffer = BUFFER as u64;
    let record = config.max_record_bytes as u64;
    let assembling = match config.format {
        // A line that spans two reads is held whole.
        Format::Lines => record,
        // serde_json's raw copy of the element (grown by doubling) and the record made of it;
        // the guard lets an element in progress pass the limit by the read-ahead of two
        // readers before it trips.
        Format::Auto | Format::Json => record.saturating_add(3 * buffer).saturating_mul(3),
    };
    // The store's read-ahead, ours, the inflater, the decompressed read-ahead, and the leading
    // whitespace held while the format is detected.
    let reading = STORE_READ_AHEAD + buffer + INFLATE + buffer + buffer;
    // One batch being filled, the queued ones, one being published and the sink's encoded copy
    // of it (Kafka's records and produce request, the log-ingest request bodies).
    let batches = batch_need(config, origin).saturating_mul(QUEUED_BATCHES as u64 + 3);
    reading.saturating_add(assembling).saturating_add(batches)
}

/// One batch: its records' bodies, and per record the message with its headers that a sink
/// taking messages makes of it ([`RecordBatch::into_messages`]), more than the record takes in
/// its batch.
fn batch_need(config: &ContentConfig, origin: &Origin) -> u64 {
    let mut one = RecordBatch::with_capacity(Arc::new(stamp(origin, true)), 1, 0);
    one.push(u64::MAX, &[], None);
    let per_record = one.into_messages().first().map_or(0, footprint);
    let records = config.batch_records as u64;
    let record = config.max_record_bytes as u64;
    // A batch goes once it reaches CONTENT_BATCH_BYTES, so its last record may take it over.
    let bodies = (config.batch_bytes.saturating_sub(1) as u64)
        .saturating_add(record)
        .min(records.saturating_mul(record));
    records.saturating_mul(per_record).saturating_add(bodies)
}

/// The bytes a message takes, in its batch's vector and on the heap.
fn footprint(message: &Message) -> u64 {
    let headers: usize = message
        .headers
        .iter()
        .map(|(name, value)| size_of::<(String, String)>() + name.capacity() + value.capacity())
        .sum();
    let strings = message.key.as_ref().map_or(0, String::capacity) + message.content_type.len();
    // The key, the content type, the header vector, each header's two strings, the body.
    let allocations = 4 + 2 * message.headers.len() as u64;
    (size_of::<Message>() + headers + strings + message.body.len()) as u64
        + allocations * ALLOCATION_OVERHEAD
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
    #[error("forwarding the records of {}", ObjectPath(bucket, key))]
    Deadline {
        bucket: String,
        key: String,
        #[source]
        source: Stopped,
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
            ContentError::Read { .. }
            | ContentError::Deadline { .. }
            | ContentError::Stopped { .. } => Self::retryable(error),
            // Corrupt gzip, a limit, JSON that is not the shape: about the object the sender
            // named, so the sender may read it.
            _ => Self::permanent(error).for_sender(),
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
enum Halt {
    Limit(Limit),
    /// The deadline passed.
    Stopped,
    Source(std::io::Error),
    Corrupt(std::io::Error),
    Json(String),
    /// The publishing side is gone (it failed or was cancelled).
    Closed,
}

/// Why a reader layer failed on purpose, as the layers above it cannot say.
#[derive(Debug, Clone, Copy)]
enum Trip {
    Limit(Limit),
    Stopped,
    Closed,
}

impl From<Trip> for Halt {
    fn from(trip: Trip) -> Self {
        match trip {
            Trip::Limit(limit) => Self::Limit(limit),
            Trip::Stopped => Self::Stopped,
            Trip::Closed => Self::Closed,
        }
    }
}

/// What the reader layers tell each other: how much was read, what went wrong first, and
/// whether to go on at all.
struct Meter {
    compressed: Cell<u64>,
    since_record: Cell<u64>,
    source_failed: Cell<bool>,
    tripped: Cell<Option<Trip>>,
    stop: Stop,
    /// The publishing side: once it is gone, nothing more read would be published.
    publishing: mpsc::Sender<RecordBatch>,
}

impl Meter {
    fn trip(&self, trip: Trip) -> std::io::Error {
        self.tripped.set(Some(trip));
        std::io::Error::other(match trip {
            Trip::Limit(_) => "over a content limit",
            Trip::Stopped => "stopped at the deadline",
            Trip::Closed => "the publishing side is gone",
        })
    }

    /// Checked before each chunk is read, so that CPU work ends within a chunk of the deadline
    /// or of the publishing side giving up.
    fn check(&self) -> std::io::Result<()> {
        if self.stop.is_stopped() {
            Err(self.trip(Trip::Stopped))
        } else if self.publishing.is_closed() {
            Err(self.trip(Trip::Closed))
        } else {
            Ok(())
        }
    }
}

/// The object's bytes, counted; a failure here is the store's, not the content's.
struct Source<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Checked here too: inflating input that yields no output never reaches the guard.
        self.meter.check()?;
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
        self.meter.check()?;
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
            Some(limit) => Err(meter.trip(Trip::Limit(limit))),
            None => Ok(n),
        }
    }
}

/// Where a stream starts, and how far the sink has acknowledged it.
#[derive(Debug, Clone, Copy)]
pub struct Resume<'a> {
    /// Records an earlier attempt had sent and the sink acknowledged: read past (the stream
    /// has no other way to reach them) and not published again.
    pub skip: u64,
    /// Records acknowledged so far, counted from the object's first: `skip`, then growing
    /// with each batch the sink takes, for the caller to save while and after it streams.
    pub acknowledged: &'a AtomicU64,
}

/// Collects records into batches and hands full batches to the publishing side.
struct Batcher {
    tx: mpsc::Sender<RecordBatch>,
    batch: RecordBatch,
    index: Rc<Cell<u64>>,
    /// Records before this index were sent by an earlier attempt.
    skip: u64,
    stamp: Arc<RecordStamp>,
    time: RecordTime,
    meter: Rc<Meter>,
    config: ContentConfig,
}

impl Batcher {
    fn push(&mut self, record: &[u8]) -> Result<(), Halt> {
        let index = self.index.get();
        if record.len() > self.config.max_record_bytes {
            return Err(Halt::Limit(Limit::Record {
                limit: self.config.max_record_bytes,
                after: index,
            }));
        }
        // Also when it is skipped: the header names the columns of every record after it.
        if index == 0 {
            self.time.header(record);
        }
        self.index.set(index + 1);
        self.meter.since_record.set(0);
        if index < self.skip {
            return Ok(());
        }
        self.batch.push(index, record, self.time.of(record));
        if self.batch.len() >= self.config.batch_records
            || self.batch.body_bytes() >= self.config.batch_bytes
        {
            self.flush()?;
        }
        Ok(())
    }

    /// A line without its line ending; blank lines are not records.
    fn line(&mut self, line: &[u8]) -> Result<(), Halt> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(());
        }
        self.push(line)
    }

    fn flush(&mut self) -> Result<(), Halt> {
        if self.batch.is_empty() {
            return Ok(());
        }
        if self.meter.stop.is_stopped() {
            return Err(Halt::Stopped);
        }
        let next = empty_batch(&self.stamp, &self.config);
        self.tx
            .blocking_send(std::mem::replace(&mut self.batch, next))
            .map_err(|_| Halt::Closed)
    }
}

/// A batch with room for `CONTENT_BATCH_RECORDS` and `CONTENT_BATCH_BYTES`, allocated once
/// as the memory need counts it rather than grown by doubling.
fn empty_batch(stamp: &Arc<RecordStamp>, config: &ContentConfig) -> RecordBatch {
    let bytes = config
        .batch_bytes
        .min(config.batch_records.saturating_mul(config.max_record_bytes));
    RecordBatch::with_capacity(Arc::clone(stamp), config.batch_records, bytes)
}

/// How long to wait for a share of the budget: [`BUDGET_WAIT`], never past the deadline.
fn budget_wait(stop: &Stop) -> Duration {
    stop.deadline().map_or(BUDGET_WAIT, |deadline| {
        BUDGET_WAIT.min(deadline.saturating_duration_since(Instant::now()))
    })
}

/// Forwards the records of `reader` after `resume.skip` to `publisher`, a batch at a time, and
/// returns how many records were published; `resume.acknowledged` follows each batch the sink
/// took, also when the stream fails or stops. The stream's [`need`] is reserved from the
/// invocation's memory budget first (over the whole budget: permanent; taken by other work:
/// retryable). Reading and decompressing run on a blocking thread while the previous batch is
/// being published; both sides stop at the invocation's deadline, and nothing is published
/// after it.
pub async fn forward(
    reader: ObjectReader,
    origin: &Origin,
    config: &ContentConfig,
    publisher: &dyn Publisher,
    invocation: &Invocation,
    resume: Resume<'_>,
) -> Result<u64, HandlerError> {
    resume.acknowledged.store(resume.skip, Ordering::Relaxed);
    let deadline = |source: Stopped| ContentError::Deadline {
        bucket: origin.bucket.clone(),
        key: origin.key.clone(),
        source,
    };
    invocation.stop.check().map_err(deadline)?;
    let what = format!(
        "the content stream of {} (CONTENT_BATCH_BYTES, CONTENT_BATCH_RECORDS, \
         CONTENT_MAX_RECORD_BYTES)",
        ObjectPath(&origin.bucket, &origin.key)
    );
    let reservation = invocation
        .memory
        .reserve(&what, need(config, origin), budget_wait(&invocation.stop))
        .await?;
    // Held by both sides: the reading thread may outlive a cancelled publishing side by a
    // chunk, and the publishing side holds the last batches after the reading thread ended.
    let reservation = Arc::new(reservation);
    let held = Arc::clone(&reservation);
    let (tx, mut rx) = mpsc::channel(QUEUED_BATCHES);
    let runtime = tokio::runtime::Handle::current();
    let (config_copy, origin_copy) = (config.clone(), origin.clone());
    let stop = invocation.stop.clone();
    let skip = resume.skip;
    let reading = tokio::task::spawn_blocking(move || {
        let _held = held;
        split(
            SyncIoBridge::new_with_handle(reader, runtime),
            &origin_copy,
            config_copy,
            stop,
            skip,
            tx,
        )
    });
    let mut published = 0u64;
    while let Some(batch) = rx.recv().await {
        let count = batch.len() as u64;
        // Returning drops the receiver, which stops the reading thread at its next chunk.
        invocation.stop.check().map_err(deadline)?;
        publisher.publish_records(batch).await?;
        published += count;
        resume
            .acknowledged
            .store(resume.skip + published, Ordering::Relaxed);
    }
    let stopped = |reason: String| ContentError::Stopped {
        bucket: origin.bucket.clone(),
        key: origin.key.clone(),
        reason,
    };
    let result = reading.await.map_err(|e| stopped(e.to_string()))?;
    let (bucket, key) = (origin.bucket.clone(), origin.key.clone());
    result.map_err(|halt| match halt {
        Halt::Limit(limit) => ContentError::Limit { bucket, key, limit },
        Halt::Stopped => deadline(Stopped),
        Halt::Source(source) => ContentError::Read {
            bucket,
            key,
            source,
        },
        Halt::Corrupt(source) => ContentError::Corrupt {
            bucket,
            key,
            source,
        },
        Halt::Json(reason) => ContentError::Json {
            bucket,
            key,
            reason,
        },
        Halt::Closed => stopped("the publishing side went away".to_owned()),
    })?;
    Ok(published)
}

/// The reading side: detect gzip, detect the format, split, batch (from record `skip` on).
fn split(
    reader: impl Read,
    origin: &Origin,
    config: ContentConfig,
    stop: Stop,
    skip: u64,
    tx: mpsc::Sender<RecordBatch>,
) -> Result<(), Halt> {
    let meter = Rc::new(Meter {
        compressed: Cell::new(0),
        since_record: Cell::new(0),
        source_failed: Cell::new(false),
        tripped: Cell::new(None),
        stop,
        publishing: tx.clone(),
    });
    let mut source = BufReader::with_capacity(
        BUFFER,
        Source {
            inner: reader,
            meter: Rc::clone(&meter),
        },
    );
    let head = source.fill_buf().map_err(|e| classify(e, &meter))?;
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
    // records yet. Leading whitespace is looked through only so far: it is held until the
    // splitter takes it.
    let mut first = [0u8; 1];
    let mut lead = Vec::new();
    let json = loop {
        if lead.len() >= BUFFER {
            break config.format == Format::Json;
        }
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
    let stamp = Arc::new(stamp(origin, json));
    let mut batcher = Batcher {
        tx,
        batch: empty_batch(&stamp, &config),
        index,
        skip,
        stamp,
        time: RecordTime::new(config.time_field.as_deref(), json),
        meter: Rc::clone(&meter),
        config: config.clone(),
    };
    let stream = BufReader::with_capacity(BUFFER, std::io::Cursor::new(lead).chain(guarded));
    let outcome = if json {
        split_json(stream, &config.json_field, &mut batcher)
    } else {
        split_lines(stream, &mut batcher, config.max_record_bytes)
    };
    // A limit, the deadline or a failing store shows through the readers as an I/O error; say
    // which.
    let outcome = match outcome {
        Err(Halt::Source(e) | Halt::Corrupt(e)) => Err(classify(e, &meter)),
        Err(Halt::Json(reason)) => match (meter.tripped.get(), meter.source_failed.get()) {
            (Some(trip), _) => Err(trip.into()),
            (None, true) => Err(Halt::Source(std::io::Error::other(reason))),
            (None, false) => Err(Halt::Json(reason)),
        },
        other => other,
    };
    outcome?;
    batcher.flush()
}

fn classify(error: std::io::Error, meter: &Meter) -> Halt {
    if let Some(trip) = meter.tripped.get() {
        trip.into()
    } else if meter.source_failed.get() {
        Halt::Source(error)
    } else {
        Halt::Corrupt(error)
    }
}

fn split_lines(
    mut reader: impl BufRead,
    out: &mut Batcher,
    max_record_bytes: usize,
) -> Result<(), Halt> {
    // Holds only a line that spans two reads, never more than one record.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let buf = reader.fill_buf().map_err(Halt::Source)?;
        if buf.is_empty() {
            break;
        }
        let len = buf.len();
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', buf) {
            if pending.is_empty() {
                out.line(&buf[start..end])?;
            } else {
                hold(&mut pending, &buf[start..end], max_record_bytes, out)?;
                out.line(&pending)?;
                pending.clear();
            }
            start = end + 1;
        }
        hold(&mut pending, &buf[start..], max_record_bytes, out)?;
        reader.consume(len);
    }
    if !pending.is_empty() {
        out.line(&pending)?;
    }
    Ok(())
}

/// Adds `part` to the line held across reads, refusing a line longer than a record.
fn hold(
    pending: &mut Vec<u8>,
    part: &[u8],
    max_record_bytes: usize,
    out: &Batcher,
) -> Result<(), Halt> {
    if pending.len() + part.len() > max_record_bytes {
        return Err(Halt::Limit(Limit::Record {
            limit: max_record_bytes,
            after: out.index.get(),
        }));
    }
    // Exactly, so that the held line stays within the record the memory need counts.
    pending.reserve_exact(part.len());
    pending.extend_from_slice(part);
    Ok(())
}

fn split_json(reader: impl Read, field: &str, out: &mut Batcher) -> Result<(), Halt> {
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
        (Err(e), None) => Err(Halt::Json(e.to_string())),
    }
}

/// The whole document: an array of records, or an object holding one in `field`.
struct Document<'a> {
    field: &'a str,
    out: &'a mut Batcher,
    failure: &'a mut Option<Halt>,
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
    failure: &'a mut Option<Halt>,
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
    use bucketfn::budget::MemoryBudget;
    use bucketfn::sink::MemoryPublisher;
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

    async fn run(
        bytes: Vec<u8>,
        config: &ContentConfig,
    ) -> Result<(u64, Vec<Message>), HandlerError> {
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
        async fn publish(
            &self,
            messages: Vec<Message>,
        ) -> Result<(), bucketfn::sink::PublishError> {
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
        async fn publish(
            &self,
            messages: Vec<Message>,
        ) -> Result<(), bucketfn::sink::PublishError> {
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
}
