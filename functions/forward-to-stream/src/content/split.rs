//! Splitting the content into records: lines (without their line endings; blank lines are not
//! records), or the elements of a JSON array (the document itself, or the array in
//! `CONTENT_JSON_FIELD` of an object), each handed to the batcher as it is found.

use std::fmt;
use std::io::{BufRead, Read};
use std::rc::Rc;

use bucketfn::budget::Stop;
use bucketfn::sink::RecordBatch;

use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::Origin;
use super::batch::Batcher;
use super::error::{ContentError, Limit};
use super::read::{self, Meter};
use crate::config::ContentConfig;

/// The reading side: open the content, split it into records and batch them (from record
/// `skip` on), handing each full batch to `tx`.
pub(super) fn split(
    reader: impl Read,
    origin: &Origin,
    config: &ContentConfig,
    stop: Stop,
    skip: u64,
    tx: mpsc::Sender<RecordBatch>,
) -> Result<(), ContentError> {
    let meter = Rc::new(Meter::new(origin.clone(), stop, tx.clone()));
    let content = read::open(reader, &meter, config)?;
    let mut batcher = Batcher::new(tx, content.json, skip, &meter, config);
    if content.json {
        split_json(content.stream, &config.json_field, &mut batcher)?;
    } else {
        split_lines(content.stream, &mut batcher, config.max_record_bytes)?;
    }
    batcher.flush()
}

fn split_lines(
    mut reader: impl BufRead,
    out: &mut Batcher,
    max_record_bytes: usize,
) -> Result<(), ContentError> {
    // Holds only a line that spans two reads, never more than one record.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let buf = reader
            .fill_buf()
            .map_err(|e| ContentError::from_io(e, &out.meter().origin))?;
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
) -> Result<(), ContentError> {
    if pending.len() + part.len() > max_record_bytes {
        return Err(out.meter().over(Limit::Record {
            limit: max_record_bytes,
            after: out.meter().records(),
        }));
    }
    // Exactly, so that the held line stays within the record the memory need counts.
    pending.reserve_exact(part.len());
    pending.extend_from_slice(part);
    Ok(())
}

fn split_json(reader: impl Read, field: &str, out: &mut Batcher) -> Result<(), ContentError> {
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
        // The batcher's failure, which serde could carry only as a message.
        (Err(_), Some(failure)) => Err(failure),
        // A reader layer's failure (a limit, the deadline, the store), as it went in.
        (Err(e), None) if e.is_io() => Err(ContentError::from_io(e.into(), &out.meter().origin)),
        (Err(e), None) => Err(ContentError::json(&out.meter().origin, e.to_string())),
    }
}

/// The whole document: an array of records, or an object holding one in `field`.
struct Document<'a> {
    field: &'a str,
    out: &'a mut Batcher,
    failure: &'a mut Option<ContentError>,
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
    failure: &'a mut Option<ContentError>,
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
