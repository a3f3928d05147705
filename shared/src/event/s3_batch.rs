//! S3 Batch Operations invocations (schema 1.0 and 2.0): one task per object, each answered
//! with its own result code so the job report says which objects failed and whether to retry.

use std::collections::BTreeMap;

use serde_json::Value;

use super::fields::Fields;
use super::keys::KeyEncoding;
use super::{DecodeError, Delivery, Envelope, EventKind, ObjectEvent, Record, Source};

const FORMAT: &str = "S3 Batch Operations";

/// The invocation a response must echo back.
#[derive(Debug, Clone, PartialEq)]
pub struct S3BatchJob {
    pub schema_version: String,
    pub invocation_id: String,
    pub job_id: Option<String>,
    /// Schema 2.0 `job.userArguments`.
    pub user_arguments: BTreeMap<String, String>,
}

pub(crate) fn decode(value: &Value) -> Result<Delivery, DecodeError> {
    let top = Fields::of(value, FORMAT, "")?;
    let schema_version = top.non_empty("invocationSchemaVersion")?;
    if !matches!(schema_version, "1.0" | "2.0") {
        return Err(top.bad("invocationSchemaVersion", "\"1.0\" or \"2.0\""));
    }
    let job = top.opt_obj("job", "job")?;
    let job = S3BatchJob {
        schema_version: schema_version.to_owned(),
        invocation_id: top.non_empty("invocationId")?.to_owned(),
        job_id: job
            .and_then(|j| j.opt_str("id").ok().flatten())
            .map(str::to_owned),
        user_arguments: job
            .map(|j| j.string_map("userArguments").into_iter().collect())
            .unwrap_or_default(),
    };

    let tasks = top.array("tasks")?;
    let mut records = Vec::with_capacity(tasks.len());
    for (i, task) in tasks.iter().enumerate() {
        let path = format!("tasks[{i}]");
        let fields = Fields::of(task, FORMAT, &path)?;
        let id = fields.non_empty("taskId")?;
        records.push(Record {
            id: Some(id.to_owned()),
            events: decode_task(&fields).map(|mut event| {
                event.id = Some(id.to_owned());
                vec![event]
            }),
        });
    }
    Ok(Delivery {
        envelope: Envelope::S3Batch(job),
        records,
    })
}

/// Keys arrive URL-encoded as in the manifest (AWS documents this for schema 1.0, and its own
/// schema 2.0 examples and Powertools decode them the same way).
const KEYS: KeyEncoding = KeyEncoding::Form;

fn decode_task(task: &Fields<'_>) -> Result<ObjectEvent, DecodeError> {
    let bucket = match task.opt_str("s3Bucket")? {
        Some(bucket) => bucket,
        None => {
            let arn = task.non_empty("s3BucketArn")?;
            arn.split_once(":s3:::")
                .map(|(_, bucket)| bucket)
                .filter(|bucket| !bucket.is_empty())
                .ok_or_else(|| task.bad("s3BucketArn", "an S3 bucket ARN (arn:aws:s3:::NAME)"))?
        }
    };
    let raw_key = task.non_empty("s3Key")?;
    let key = KEYS.decode_in(FORMAT, raw_key)?;
    let mut event = ObjectEvent::new(
        EventKind::Created,
        Source::S3Batch,
        bucket,
        key,
        "S3BatchOperations:Task",
    );
    event.version_id = task.opt_str("s3VersionId")?.map(str::to_owned);
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn schema_1_takes_bucket_from_arn_and_decodes_keys() -> TestResult {
        let v = json!({"invocationSchemaVersion": "1.0", "invocationId": "inv",
            "job": {"id": "job-1"},
            "tasks": [{"taskId": "t1", "s3Key": "a+b%2Bc.jpg", "s3VersionId": null,
                "s3BucketArn": "arn:aws-cn:s3:::photos"}]});
        let delivery = decode(&v)?;
        let Envelope::S3Batch(job) = &delivery.envelope else {
            return Err("not an S3 batch envelope".into());
        };
        assert_eq!(job.job_id.as_deref(), Some("job-1"));
        let events = delivery.into_events()?;
        assert_eq!(events[0].bucket, "photos");
        assert_eq!(events[0].key, "a b+c.jpg");
        assert_eq!(events[0].id.as_deref(), Some("t1"));
        Ok(())
    }

    #[test]
    fn schema_2_takes_bucket_name_and_user_arguments() -> TestResult {
        let v = json!({"invocationSchemaVersion": "2.0", "invocationId": "inv",
            "job": {"id": "job-2", "userArguments": {"size": "128"}},
            "tasks": [{"taskId": "t1", "s3Key": "a+b%2B.jpg", "s3Bucket": "photos"}]});
        let delivery = decode(&v)?;
        let Envelope::S3Batch(job) = &delivery.envelope else {
            return Err("not an S3 batch envelope".into());
        };
        assert_eq!(
            job.user_arguments.get("size").map(String::as_str),
            Some("128")
        );
        let events = delivery.into_events()?;
        assert_eq!(
            (events[0].bucket.as_str(), events[0].key.as_str()),
            ("photos", "a b+.jpg")
        );
        Ok(())
    }

    #[test]
    fn unknown_schema_version_is_named() -> TestResult {
        let v = json!({"invocationSchemaVersion": "3.0", "invocationId": "i", "tasks": []});
        let msg = decode(&v).err().ok_or("accepted")?.to_string();
        assert!(msg.contains("\"3.0\""), "{msg}");
        Ok(())
    }
}
