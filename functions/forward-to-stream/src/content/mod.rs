//! Content mode: an object's records (lines, or the elements of a JSON array; gzip found by its
//! magic bytes) streamed to the sink in batches with dedupe ids `<etag>:<index>` and, with
//! `CONTENT_TIME_FIELD`, their own times, in a share of the process's memory budget reserved
//! before the stream starts, stopping at its deadline, and resuming after the records an earlier
//! attempt had sent.
//!
//! One concern a file: [`read`] (the store's bytes, gzip, the limits, the format), [`split`]
//! (lines or JSON elements into records), [`batch`] (records into numbered batches), [`need`]
//! (what a stream costs, reserved first), and here the publishing side; every failure is one
//! [`ContentError`].

mod batch;
mod error;
mod need;
mod read;
mod split;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bucketfn::ObjectPath;
use bucketfn::budget::{Stop, Stopped};
use bucketfn::sink::Publisher;
use bucketfn::storage::ObjectReader;
use bucketfn::{HandlerError, Invocation};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use crate::config::ContentConfig;
pub use error::{ContentError, Limit};
pub use need::need;

/// Full batches waiting between the reading thread and the publishing side.
const QUEUED_BATCHES: usize = 2;
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
    let deadline = |source: Stopped| ContentError::deadline(origin, source);
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
        split::split(
            SyncIoBridge::new_with_handle(reader, runtime),
            &origin_copy,
            &config_copy,
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
    reading
        .await
        .map_err(|e| ContentError::stopped(origin, e.to_string()))??;
    Ok(published)
}

#[cfg(test)]
mod tests;
