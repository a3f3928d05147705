//! SQS and SNS envelopes around bucket notifications: S3 -> SQS, S3 -> SNS, S3 -> SNS -> SQS
//! (a JSON string inside a JSON string), raw SNS delivery and EventBridge -> SQS.

use serde_json::Value;

use super::fields::Fields;
use super::{DecodeError, Delivery, Envelope, ObjectEvent, Record, decode_notification, with_id};

/// An SQS batch: each message is a record of its own, reported by messageId, so a message whose
/// body is garbage fails alone.
pub(crate) fn decode_sqs_batch(value: &Value) -> Result<Delivery, DecodeError> {
    let top = Fields::of(value, "SQS", "")?;
    let messages = top.array("Records")?;
    let mut records = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let path = format!("Records[{i}]");
        let fields = Fields::of(message, "SQS", &path)?;
        let id = fields.non_empty("messageId")?;
        let events = fields
            .str("body")
            .and_then(|body| decode_embedded(body, "SQS message body"))
            .map(|events| with_id(events, Some(id)));
        records.push(Record {
            id: Some(id.to_owned()),
            events,
        });
    }
    Ok(Delivery {
        envelope: Envelope::SqsBatch,
        records,
    })
}

/// SNS as Lambda delivers it: `{"Records": [{"EventSource": "aws:sns", "Sns": {...}}]}`.
pub(crate) fn decode_sns_records(value: &Value) -> Result<Vec<ObjectEvent>, DecodeError> {
    let top = Fields::of(value, "SNS", "")?;
    let mut events = Vec::new();
    for (i, record) in top.array("Records")?.iter().enumerate() {
        let path = format!("Records[{i}]");
        let sns_path = format!("{path}.Sns");
        let sns = Fields::of(record, "SNS", &path)?.obj("Sns", &sns_path)?;
        events.extend(message_events(&sns)?);
    }
    Ok(events)
}

/// An SNS notification as SNS posts it, or as it sits in an SQS body without raw delivery.
pub(crate) fn decode_sns_message(value: &Value) -> Result<Vec<ObjectEvent>, DecodeError> {
    message_events(&Fields::of(value, "SNS", "")?)
}

fn message_events(sns: &Fields<'_>) -> Result<Vec<ObjectEvent>, DecodeError> {
    let events = decode_embedded(sns.str("Message")?, "SNS Message")?;
    Ok(with_id(events, sns.opt_str("MessageId")?))
}

/// Envelopes carry the notification as a JSON document inside a string.
fn decode_embedded(text: &str, what: &str) -> Result<Vec<ObjectEvent>, DecodeError> {
    let inner: Value = serde_json::from_str(text).map_err(|e| DecodeError::NotJson {
        reason: format!("{what}: {e}"),
    })?;
    decode_notification(&inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn s3_notification(key: &str) -> String {
        json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": {"key": key, "size": 3}}}]})
        .to_string()
    }

    #[test]
    fn one_bad_message_does_not_hide_the_others() -> TestResult {
        let batch = json!({"Records": [
            {"messageId": "m1", "eventSource": "aws:sqs", "body": s3_notification("a+b.jpg")},
            {"messageId": "m2", "eventSource": "aws:sqs", "body": "not json"},
        ]});
        let delivery = decode_sqs_batch(&batch)?;
        assert_eq!(delivery.envelope, Envelope::SqsBatch);
        let first = delivery.records[0]
            .events
            .as_ref()
            .map_err(|e| e.to_string())?;
        assert_eq!(first[0].key, "a b.jpg");
        assert_eq!(first[0].id.as_deref(), Some("m1"));
        let second = delivery.records[1]
            .events
            .as_ref()
            .err()
            .ok_or("garbage accepted")?;
        assert!(second.to_string().contains("SQS message body"), "{second}");
        Ok(())
    }

    #[test]
    fn sns_inside_sqs_is_decoded_twice_but_the_key_once() -> TestResult {
        let sns = json!({"Type": "Notification", "MessageId": "sns-1",
            "Message": s3_notification("100%25+sure.jpg")});
        let batch = json!({"Records": [
            {"messageId": "m1", "eventSource": "aws:sqs", "body": sns.to_string()}]});
        let events = decode_sqs_batch(&batch)?.into_events()?;
        assert_eq!(events[0].key, "100% sure.jpg");
        assert_eq!(events[0].id.as_deref(), Some("m1"));
        Ok(())
    }
}
