//! One object's records as content mode publishes them: their bodies in one buffer and what
//! they share (message key, etag, content type, CloudEvent attributes) held once, so that a
//! batch of a thousand records is a handful of allocations instead of several per record.
//! Sinks that encode each record anyway (the file and log-ingest sinks) read the records in
//! place through [`MessageParts`], as they read a [`Message`]; the others take
//! [`RecordBatch::into_messages`].

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::Message;

/// The type of a record's CloudEvent.
pub const RECORD_TYPE: &str = "io.bucketfn.object.record";

/// The CloudEvent attributes all records of one object share. Each record is its own event,
/// not each batch: the record's dedupe id is the event id, so a consumer drops what a
/// redelivery or a catch-up pass sends again exactly as on the other sinks, and a Trigger can
/// filter single records. A batch's bounds move with the batch settings, so its id could not
/// be stable.
#[derive(Debug, Clone)]
pub struct RecordEvent {
    /// `s3://<bucket>/<key>`: ids (`<etag>:<index>`) are unique only within one object, and
    /// CloudEvents ids are unique within their source.
    pub source: String,
    pub subject: String,
}

/// What every record of one object carries besides its body.
#[derive(Debug)]
pub struct RecordStamp {
    /// The partition or routing key of every record.
    pub message_key: String,
    /// The object version's etag: with the record's index, its dedupe id.
    pub etag: String,
    /// Set when each record is also a CloudEvent in Kafka binary mode (`ce_*` headers).
    pub cloudevent: Option<RecordEvent>,
    pub content_type: &'static str,
}

impl RecordStamp {
    /// The dedupe id of record `index`, written into `id` (cleared first) so that one buffer
    /// serves a whole batch.
    fn write_id(&self, index: u64, id: &mut String) {
        id.clear();
        id.push_str(&self.etag);
        id.push(':');
        id.push_str(itoa::Buffer::new().format(index));
    }
}

/// Message headers, as a message lists them or as a record's stamp makes them.
#[derive(Debug, Clone, Copy)]
pub enum Headers<'a> {
    Listed(&'a [(String, String)]),
    /// A record's: its dedupe id (also its CloudEvent id) and its object's attributes.
    Record {
        id: &'a str,
        stamp: &'a RecordStamp,
    },
}

impl<'a> Headers<'a> {
    /// The headers as name and value, in their order.
    pub fn iter(self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let (listed, record): (&[(String, String)], _) = match self {
            Self::Listed(headers) => (headers, None),
            Self::Record { id, stamp } => (&[], Some((id, stamp))),
        };
        let listed = listed
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()));
        let record = record.into_iter().flat_map(|(id, stamp)| {
            let event = stamp
                .cloudevent
                .as_ref()
                .into_iter()
                .flat_map(move |event| {
                    [
                        ("ce_specversion", "1.0"),
                        ("ce_id", id),
                        ("ce_source", event.source.as_str()),
                        ("ce_type", RECORD_TYPE),
                        ("ce_subject", event.subject.as_str()),
                    ]
                });
            std::iter::once(("dedupe_id", id)).chain(event)
        });
        listed.chain(record)
    }
}

/// A message's body, as text where it is UTF-8 (checked once).
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

impl<'a> Body<'a> {
    fn of(bytes: &'a [u8]) -> Self {
        std::str::from_utf8(bytes).map_or(Self::Binary(bytes), Self::Text)
    }

    pub fn as_bytes(self) -> &'a [u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Binary(bytes) => bytes,
        }
    }
}

/// A message's parts, borrowed: what an encoder reads, the same from a [`Message`] and from a
/// record in its batch's buffer.
#[derive(Debug, Clone, Copy)]
pub struct MessageParts<'a> {
    pub key: Option<&'a str>,
    pub headers: Headers<'a>,
    pub content_type: &'a str,
    pub body: Body<'a>,
    pub timestamp: Option<DateTime<Utc>>,
    /// A message's AMQP correlation id; records have none.
    pub correlation_id: Option<&'a str>,
}

impl Message {
    /// The message's parts, for the encoders that also read records in place.
    pub fn parts(&self) -> MessageParts<'_> {
        MessageParts {
            key: self.key.as_deref(),
            headers: Headers::Listed(&self.headers),
            content_type: &self.content_type,
            body: Body::of(&self.body),
            timestamp: self.timestamp,
            correlation_id: self.correlation_id.as_deref(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where the record's body ends in the buffer; it starts where the one before ends.
    end: usize,
    index: u64,
    timestamp: Option<DateTime<Utc>>,
}

/// Records of one object, in the order read, with their bodies in one buffer.
#[derive(Debug)]
pub struct RecordBatch {
    stamp: Arc<RecordStamp>,
    bodies: Vec<u8>,
    entries: Vec<Entry>,
}

impl RecordBatch {
    /// An empty batch with room for `records` records of `bytes` bytes together, allocated
    /// once.
    pub fn with_capacity(stamp: Arc<RecordStamp>, records: usize, bytes: usize) -> Self {
        Self {
            stamp,
            bodies: Vec::with_capacity(bytes),
            entries: Vec::with_capacity(records),
        }
    }

    /// Adds record `index` of the object. A body that does not fit the room left grows the
    /// buffer by exactly that body, not by doubling, so that a batch stays within what its
    /// capacity and one record make.
    pub fn push(&mut self, index: u64, body: &[u8], timestamp: Option<DateTime<Utc>>) {
        self.bodies.reserve_exact(body.len());
        self.bodies.extend_from_slice(body);
        self.entries.push(Entry {
            end: self.bodies.len(),
            index,
            timestamp,
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bytes of the records' bodies together.
    pub fn body_bytes(&self) -> usize {
        self.bodies.len()
    }

    /// Calls `each` with every record's parts in order, until it fails.
    pub fn try_for_each<E>(
        &self,
        mut each: impl FnMut(MessageParts<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        // Checked once for the batch rather than for each record: where the whole buffer is
        // text, so is every record in it whose bounds are character bounds.
        let text = std::str::from_utf8(&self.bodies).ok();
        let mut id = String::new();
        let mut start = 0;
        for entry in &self.entries {
            self.stamp.write_id(entry.index, &mut id);
            let body = match text.and_then(|text| text.get(start..entry.end)) {
                Some(text) => Body::Text(text),
                None => Body::of(&self.bodies[start..entry.end]),
            };
            each(MessageParts {
                key: Some(&self.stamp.message_key),
                headers: Headers::Record {
                    id: &id,
                    stamp: &self.stamp,
                },
                content_type: self.stamp.content_type,
                body,
                timestamp: entry.timestamp,
                correlation_id: None,
            })?;
            start = entry.end;
        }
        Ok(())
    }

    /// The records as messages, for sinks that take messages: each body a view into the
    /// batch's one buffer, not a copy.
    pub fn into_messages(self) -> Vec<Message> {
        let stamp = self.stamp;
        let bodies = Bytes::from(self.bodies);
        let mut id = String::new();
        let mut start = 0;
        self.entries
            .iter()
            .map(|entry| {
                stamp.write_id(entry.index, &mut id);
                let headers = Headers::Record {
                    id: &id,
                    stamp: &stamp,
                }
                .iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect();
                let body = bodies.slice(start..entry.end);
                start = entry.end;
                Message {
                    key: Some(stamp.message_key.clone()),
                    headers,
                    content_type: stamp.content_type.to_owned(),
                    correlation_id: None,
                    body,
                    timestamp: entry.timestamp,
                }
            })
            .collect()
    }
}

/// What one publish hands a sink that encodes each message itself (file, log-ingest, Kafka):
/// messages, or one object's records to read in place.
pub(super) enum Outgoing {
    Messages(Vec<Message>),
    Records(RecordBatch),
}

impl Outgoing {
    /// Calls `each` with every message's or record's parts in order.
    pub(super) fn for_each(&self, mut each: impl FnMut(MessageParts<'_>)) {
        self.try_for_each(|parts| {
            each(parts);
            Ok::<_, Infallible>(())
        })
        .unwrap_or_else(|never| match never {});
    }

    /// About how many bytes the messages take encoded as JSON: their bodies and a couple of
    /// hundred bytes for each one's names, so that an encoder's buffer is seldom grown.
    pub(super) fn encoded_estimate(&self) -> usize {
        const PER_MESSAGE: usize = 256;
        match self {
            Self::Messages(messages) => messages
                .iter()
                .map(|message| message.body.len() + PER_MESSAGE)
                .sum(),
            Self::Records(batch) => batch.body_bytes() + batch.len() * PER_MESSAGE,
        }
    }

    pub(super) fn try_for_each<E>(
        &self,
        each: impl FnMut(MessageParts<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            Self::Messages(messages) => messages.iter().map(Message::parts).try_for_each(each),
            Self::Records(batch) => batch.try_for_each(each),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(cloudevent: bool) -> Arc<RecordStamp> {
        Arc::new(RecordStamp {
            message_key: "logs/a.log".into(),
            etag: "e1".into(),
            cloudevent: cloudevent.then(|| RecordEvent {
                source: "s3://logs/a.log".into(),
                subject: "a.log".into(),
            }),
            content_type: "text/plain",
        })
    }

    fn owned(parts: MessageParts<'_>) -> Message {
        Message {
            key: parts.key.map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            content_type: parts.content_type.to_owned(),
            correlation_id: parts.correlation_id.map(str::to_owned),
            body: Bytes::copy_from_slice(parts.body.as_bytes()),
            timestamp: parts.timestamp,
        }
    }

    #[test]
    fn records_read_in_place_are_the_messages_they_become() -> Result<(), String> {
        for cloudevent in [false, true] {
            let mut batch = RecordBatch::with_capacity(stamp(cloudevent), 2, 4);
            let time = DateTime::from_timestamp(1_418_530_010, 0);
            batch.push(7, b"first", time);
            batch.push(8, b"", None);
            batch.push(9, b"third \xff", None);
            assert_eq!((batch.len(), batch.body_bytes()), (3, 12));
            let mut read = Vec::new();
            batch.try_for_each(|parts| {
                read.push(owned(parts));
                Ok::<_, String>(())
            })?;
            let messages = batch.into_messages();
            assert_eq!(read, messages);
            assert!(matches!(messages[0].parts().body, Body::Text("first")));
            assert!(matches!(
                messages[2].parts().body,
                Body::Binary(b"third \xff")
            ));
            assert_eq!(messages[2].body.as_ref(), b"third \xff");
            assert_eq!(messages[0].timestamp, time);
            let headers: Vec<(&str, &str)> = messages[2]
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let expected = if cloudevent {
                vec![
                    ("dedupe_id", "e1:9"),
                    ("ce_specversion", "1.0"),
                    ("ce_id", "e1:9"),
                    ("ce_source", "s3://logs/a.log"),
                    ("ce_type", RECORD_TYPE),
                    ("ce_subject", "a.log"),
                ]
            } else {
                vec![("dedupe_id", "e1:9")]
            };
            assert_eq!(headers, expected);
        }
        Ok(())
    }
}
