//! Records into batches: each record numbered (its dedupe id `<etag>:<index>`), the records an
//! earlier attempt sent passed over, its time read when `CONTENT_TIME_FIELD` names one, and
//! each full batch handed to the publishing side.

use std::rc::Rc;
use std::sync::Arc;

use bucketfn::budget::Stopped;
use bucketfn::sink::{RecordBatch, RecordEvent, RecordStamp};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use tokio::sync::mpsc;

use super::Origin;
use super::error::{ContentError, Limit};
use super::read::Meter;
use crate::config::ContentConfig;
use crate::record_time::RecordTime;

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
pub(super) fn stamp(origin: &Origin, json: bool) -> RecordStamp {
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

/// Collects records into batches and hands full batches to the publishing side.
pub(super) struct Batcher {
    tx: mpsc::Sender<RecordBatch>,
    batch: RecordBatch,
    /// Records before this index were sent by an earlier attempt.
    skip: u64,
    stamp: Arc<RecordStamp>,
    time: RecordTime,
    meter: Rc<Meter>,
    config: ContentConfig,
}

impl Batcher {
    pub(super) fn new(
        tx: mpsc::Sender<RecordBatch>,
        json: bool,
        skip: u64,
        meter: &Rc<Meter>,
        config: &ContentConfig,
    ) -> Self {
        let stamp = Arc::new(stamp(&meter.origin, json));
        Self {
            tx,
            batch: empty_batch(&stamp, config),
            skip,
            stamp,
            time: RecordTime::new(config.time_field.as_deref(), json),
            meter: Rc::clone(meter),
            config: config.clone(),
        }
    }

    pub(super) fn meter(&self) -> &Meter {
        &self.meter
    }

    pub(super) fn push(&mut self, record: &[u8]) -> Result<(), ContentError> {
        let index = self.meter.records();
        if record.len() > self.config.max_record_bytes {
            return Err(self.meter.over(Limit::Record {
                limit: self.config.max_record_bytes,
                after: index,
            }));
        }
        // Also when it is skipped: the header names the columns of every record after it.
        if index == 0 {
            self.time.header(record);
        }
        self.meter.record_ended();
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
    pub(super) fn line(&mut self, line: &[u8]) -> Result<(), ContentError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(());
        }
        self.push(line)
    }

    pub(super) fn flush(&mut self) -> Result<(), ContentError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        if self.meter.stop.is_stopped() {
            return Err(ContentError::deadline(&self.meter.origin, Stopped));
        }
        let next = empty_batch(&self.stamp, &self.config);
        self.tx
            .blocking_send(std::mem::replace(&mut self.batch, next))
            .map_err(|_| ContentError::closed(&self.meter.origin))
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
