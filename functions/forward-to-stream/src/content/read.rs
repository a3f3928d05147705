//! Reading an object's content: its bytes counted as they come from the store, gzip found by
//! its magic bytes and inflated, the result held to the size, ratio and record limits and to
//! the deadline a chunk at a time, and whether it is JSON or lines.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Chain, Cursor, Read};
use std::rc::Rc;

use bucketfn::budget::{Stop, Stopped};
use bucketfn::sink::RecordBatch;
use flate2::bufread::MultiGzDecoder;
use tokio::sync::mpsc;

use super::Origin;
use super::error::{ContentError, Limit};
use crate::config::{ContentConfig, Format};

/// Read-ahead of the object and of the decompressed stream; also how much leading whitespace
/// is looked through to tell JSON from lines.
pub(super) const BUFFER: usize = 256 * 1024;
/// Decompressed bytes allowed before the ratio check starts: small files that compress very
/// well are harmless.
pub(super) const RATIO_GRACE: u64 = 16 * 1024 * 1024;

/// What the reader layers and the batcher share: how much was read, and whether to go on.
pub(super) struct Meter {
    pub(super) origin: Origin,
    compressed: Cell<u64>,
    /// Decompressed bytes since the last record ended.
    since_record: Cell<u64>,
    /// Records found so far.
    records: Cell<u64>,
    pub(super) stop: Stop,
    /// The publishing side: once it is gone, nothing more read would be published.
    publishing: mpsc::Sender<RecordBatch>,
}

impl Meter {
    pub(super) fn new(origin: Origin, stop: Stop, publishing: mpsc::Sender<RecordBatch>) -> Self {
        Self {
            origin,
            compressed: Cell::new(0),
            since_record: Cell::new(0),
            records: Cell::new(0),
            stop,
            publishing,
        }
    }

    /// Checked before each chunk is read, so that CPU work ends within a chunk of the deadline
    /// or of the publishing side giving up.
    pub(super) fn check(&self) -> Result<(), ContentError> {
        if self.stop.is_stopped() {
            Err(ContentError::deadline(&self.origin, Stopped))
        } else if self.publishing.is_closed() {
            Err(ContentError::closed(&self.origin))
        } else {
            Ok(())
        }
    }

    /// The records found so far: the index of the next one.
    pub(super) fn records(&self) -> u64 {
        self.records.get()
    }

    /// A record ended: the next one starts counting its bytes.
    pub(super) fn record_ended(&self) {
        self.records.set(self.records.get() + 1);
        self.since_record.set(0);
    }

    pub(super) fn over(&self, limit: Limit) -> ContentError {
        ContentError::limit(&self.origin, limit)
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
        self.meter.check().map_err(ContentError::into_io)?;
        let n = self
            .inner
            .read(buf)
            .map_err(|e| ContentError::read(&self.meter.origin, e).into_io())?;
        let meter = &self.meter;
        meter.compressed.set(meter.compressed.get() + n as u64);
        Ok(n)
    }
}

/// The decompressed bytes, held to the size, ratio and (for JSON) record limits.
pub(super) struct Guarded<R> {
    inner: R,
    meter: Rc<Meter>,
    out: u64,
    gzip: bool,
    json: bool,
    config: ContentConfig,
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.meter.check().map_err(ContentError::into_io)?;
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
                after: meter.records(),
            })
        } else {
            None
        };
        match tripped {
            Some(limit) => Err(meter.over(limit).into_io()),
            None => Ok(n),
        }
    }
}

/// The content of an object, decompressed and guarded: the whitespace read to find its format,
/// then the rest.
pub(super) type Stream<'a> = BufReader<Chain<Cursor<Vec<u8>>, Guarded<Box<dyn Read + 'a>>>>;

/// The content of an object, and its format.
pub(super) struct Content<'a> {
    pub(super) stream: Stream<'a>,
    /// JSON (else lines), by `CONTENT_FORMAT` and, for `auto`, by the first byte that is not
    /// whitespace.
    pub(super) json: bool,
}

/// Opens `reader`'s content: gzip found by its magic bytes, the format by its first bytes.
pub(super) fn open<'a>(
    reader: impl Read + 'a,
    meter: &Rc<Meter>,
    config: &ContentConfig,
) -> Result<Content<'a>, ContentError> {
    let mut source = BufReader::with_capacity(
        BUFFER,
        Source {
            inner: reader,
            meter: Rc::clone(meter),
        },
    );
    let head = source
        .fill_buf()
        .map_err(|e| ContentError::from_io(e, &meter.origin))?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let decoded: Box<dyn Read + 'a> = if gzip {
        Box::new(MultiGzDecoder::new(source))
    } else {
        Box::new(source)
    };
    let mut guarded = Guarded {
        inner: decoded,
        meter: Rc::clone(meter),
        out: 0,
        gzip,
        json: false,
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
            Err(e) => return Err(ContentError::from_io(e, &meter.origin)),
        }
    };
    guarded.json = json;
    Ok(Content {
        stream: BufReader::with_capacity(BUFFER, Cursor::new(lead).chain(guarded)),
        json,
    })
}
