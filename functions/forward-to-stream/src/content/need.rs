//! What one object's stream costs in memory, counted from the configuration and the object's
//! names before anything is read, so that the stream's share of the process's budget is
//! reserved first.

use std::sync::Arc;

use bucketfn::sink::{Message, RecordBatch};

use super::Origin;
use super::QUEUED_BATCHES;
use super::batch::stamp;
use super::read::BUFFER;
use crate::config::{ContentConfig, Format};

/// What the store's client holds of the body beyond what was read: hyper's read buffer grows
/// to about 400 KiB, plus TLS records.
const STORE_READ_AHEAD: u64 = 512 * 1024;
/// The inflater: zlib's 32 KiB window with its state, and the gzip header's extra, name and
/// comment fields, which flate2 holds up to 64 KiB each.
const INFLATE: u64 = 64 * 1024 + 3 * 64 * 1024;
/// What the allocator adds to each allocation (its header and rounding): a batch is mostly
/// small strings.
const ALLOCATION_OVERHEAD: u64 = 16;
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
