//! What one worker of a batch job does, from its environment: which worker of a job array it
//! is (Code Engine's `JOB_INDEX` of `JOB_ARRAY_SIZE`, a Kubernetes Indexed Job's
//! `JOB_COMPLETION_INDEX`), and the event a Code Engine subscription started the job for,
//! which Code Engine passes as `CE_*` variables instead of a request.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{ConfigError, Env, FromEnv};
use crate::event::Shard;
use crate::event::{DecodeError, Delivery, EventKind, ObjectEvent, decode};

/// Code Engine's index of this instance of an array job, from 0.
const JOB_INDEX: &str = "JOB_INDEX";
/// A Kubernetes Indexed Job's index of this pod, from 0.
const JOB_COMPLETION_INDEX: &str = "JOB_COMPLETION_INDEX";
/// How many workers share the sweep. Code Engine sets it; a Kubernetes pod's environment does
/// not carry its Job's `spec.completions`, so the manifest sets it to that.
const JOB_ARRAY_SIZE: &str = "JOB_ARRAY_SIZE";

/// Which worker of a job array this process is: `None` outside an array, and in an array of
/// one (every Code Engine job is one), whose worker keeps the cursor of an unsplit sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Worker(pub(super) Option<Shard>);

impl FromEnv for Worker {
    fn read(env: &mut Env) -> Option<Self> {
        let code_engine: Option<u32> = env.optional(JOB_INDEX);
        let kubernetes: Option<u32> = env.optional(JOB_COMPLETION_INDEX);
        let count: Option<u32> = env.optional(JOB_ARRAY_SIZE);
        let malformed = [
            (JOB_INDEX, code_engine),
            (JOB_COMPLETION_INDEX, kubernetes),
            (JOB_ARRAY_SIZE, count),
        ]
        .iter()
        .any(|(name, value)| value.is_none() && is_set(env, name));
        if malformed {
            return None;
        }
        let index = match (code_engine, kubernetes) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                env.problem(
                    JOB_COMPLETION_INDEX,
                    format!("is {theirs}, but {JOB_INDEX} is {ours}: which worker is this?"),
                );
                return None;
            }
            (Some(index), _) => Some((JOB_INDEX, index)),
            (None, index) => index.map(|index| (JOB_COMPLETION_INDEX, index)),
        };
        match (index, count) {
            (None, None) => Some(Self(None)),
            (None, Some(count)) => {
                env.problem(
                    JOB_ARRAY_SIZE,
                    format!(
                        "is {count}, but neither {JOB_INDEX} nor {JOB_COMPLETION_INDEX} says \
                         which worker this is (a Kubernetes Job needs completionMode: Indexed)"
                    ),
                );
                None
            }
            (Some((name, index)), None) => {
                env.problem(
                    JOB_ARRAY_SIZE,
                    format!(
                        "is not set, but {name} is {index}: set it to the number of workers \
                         (a Kubernetes Indexed Job's spec.completions)"
                    ),
                );
                None
            }
            (Some((name, index)), Some(count)) => match Shard::new(index, count) {
                Ok(_) if count == 1 => Some(Self(None)),
                Ok(shard) => Some(Self(Some(shard))),
                Err(e) => {
                    // Resubmitting some indexes of a Code Engine array sets the size to how
                    // many were chosen, unless it is kept: the split would change under them.
                    env.problem(
                        name,
                        format!(
                            "{e} ({JOB_ARRAY_SIZE}={count}); a Code Engine run of chosen \
                             indexes keeps the array's size with --array-size-var-override"
                        ),
                    );
                    None
                }
            },
        }
    }
}

fn is_set(env: &Env, name: &str) -> bool {
    env.raw(name).is_some_and(|v| !v.trim().is_empty())
}

/// The variables of a subscription's event and the binary-mode headers they stand for:
/// `CE_<NAME>` is the CloudEvent attribute `<name>` (`ce-<name>` over HTTP), and Code Engine
/// sets `CONTENT_TYPE` as the content type of `CE_DATA`.
const EVENT_VARIABLES: [(&str, &str); 7] = [
    ("CE_SPECVERSION", "ce-specversion"),
    ("CE_TYPE", "ce-type"),
    ("CE_SOURCE", "ce-source"),
    ("CE_ID", "ce-id"),
    ("CE_TIME", "ce-time"),
    ("CE_SUBJECT", "ce-subject"),
    ("CONTENT_TYPE", "content-type"),
];
/// The attributes every CloudEvent has.
const REQUIRED: [&str; 4] = ["CE_SPECVERSION", "CE_TYPE", "CE_SOURCE", "CE_ID"];
/// The event's data, the body of a binary-mode CloudEvent.
const CE_DATA: &str = "CE_DATA";

/// The binary-mode headers of the event a subscription started this job for; `None` for a
/// job started otherwise. Only the event's own variables say there is one: Code Engine sets
/// `CE_JOB`, `CE_JOBRUN`, `CE_REGION`, ... in every job.
fn event_headers(env: &mut Env) -> Option<HeaderMap> {
    let has_event = EVENT_VARIABLES
        .iter()
        .filter(|(name, _)| name.starts_with("CE_"))
        .any(|(name, _)| is_set(env, name))
        || is_set(env, CE_DATA);
    if !has_event {
        return None;
    }
    for name in REQUIRED {
        if !is_set(env, name) {
            env.problem(
                name,
                "is not set, but other CE_* variables of an event are: a subscription sets \
                 every attribute of its event",
            );
        }
    }
    let mut headers = HeaderMap::new();
    for (name, header) in EVENT_VARIABLES {
        let Some(value) = env.raw(name).filter(|v| !v.is_empty()) else {
            continue;
        };
        // Bytes, not a string: a subject may name a key outside ASCII.
        match HeaderValue::from_bytes(value.trim().as_bytes()) {
            Ok(value) => {
                headers.insert(HeaderName::from_static(header), value);
            }
            Err(_) => env.problem(name, "holds a control character, which no attribute may"),
        }
    }
    Some(headers)
}

/// Why a job cannot start its work.
#[derive(Debug, thiserror::Error)]
pub(super) enum JobError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the event in the CE_* variables: {0}")]
    Event(#[from] DecodeError),
}

/// What this worker of a job is to do.
#[derive(Debug)]
pub(super) struct JobWork {
    /// The subscription's event, or else a sweep of the configured bucket and prefix; sweeps
    /// are this worker's share.
    pub(super) delivery: Delivery,
    /// Object events whose key falls to another worker of the array: a subscription starts
    /// every instance of its job for one event, and only the key's worker handles it.
    pub(super) passed: Vec<ObjectEvent>,
    pub(super) worker: Option<Shard>,
}

impl JobWork {
    /// Reads the worker and the event from `env`, reporting every problem of both at once.
    pub(super) fn from_env(mut env: Env) -> Result<Self, JobError> {
        let worker = Worker::read(&mut env);
        let headers = event_headers(&mut env);
        let data = env.raw(CE_DATA).unwrap_or_default().as_bytes().to_vec();
        env.finish()?;
        let worker = worker.and_then(|w| w.0);
        let delivery = match headers {
            Some(headers) => decode(&data, &headers)?,
            None => Delivery::single(
                None,
                vec![ObjectEvent::requested(EventKind::Sweep, "", String::new())],
            ),
        };
        Ok(Self::assign(delivery, worker))
    }

    /// Gives sweeps `worker`'s shard and takes out the object events of other workers;
    /// records left without events go too, so that nothing is reported for them.
    fn assign(mut delivery: Delivery, worker: Option<Shard>) -> Self {
        let mut passed = Vec::new();
        if let Some(shard) = worker {
            delivery.records.retain_mut(|record| {
                let Ok(events) = &mut record.events else {
                    return true;
                };
                let had_events = !events.is_empty();
                passed.extend(
                    events.extract_if(.., |e| e.kind != EventKind::Sweep && !shard.owns(&e.key)),
                );
                for event in events.iter_mut() {
                    if event.kind == EventKind::Sweep {
                        event.sweep.shard.get_or_insert(shard);
                    }
                }
                !(had_events && events.is_empty())
            });
        }
        Self {
            delivery,
            passed,
            worker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn worker(pairs: &[(&str, &str)]) -> Result<Option<Shard>, ConfigError> {
        Ok(Env::from_pairs(pairs.iter().copied()).load::<Worker>()?.0)
    }

    fn refusal(pairs: &[(&str, &str)]) -> Result<String, Box<dyn std::error::Error>> {
        let err = worker(pairs).err().ok_or("accepted")?;
        Ok(err.to_string())
    }

    #[test]
    fn code_engine_and_kubernetes_name_the_worker() -> TestResult {
        let shard = Shard::new(2, 4)?;
        assert_eq!(
            worker(&[("JOB_INDEX", "2"), ("JOB_ARRAY_SIZE", "4")])?,
            Some(shard)
        );
        assert_eq!(
            worker(&[("JOB_COMPLETION_INDEX", "2"), ("JOB_ARRAY_SIZE", "4")])?,
            Some(shard)
        );
        // An Indexed Job running on Code Engine's nodes may carry both.
        let both = [
            ("JOB_INDEX", "2"),
            ("JOB_COMPLETION_INDEX", "2"),
            ("JOB_ARRAY_SIZE", "4"),
        ];
        assert_eq!(worker(&both)?, Some(shard));
        Ok(())
    }

    #[test]
    fn outside_an_array_or_in_an_array_of_one_there_is_no_shard() -> TestResult {
        assert_eq!(worker(&[])?, None);
        // What every Code Engine job run gets, array or not.
        assert_eq!(
            worker(&[("JOB_INDEX", "0"), ("JOB_ARRAY_SIZE", "1")])?,
            None
        );
        assert_eq!(worker(&[("JOB_INDEX", ""), ("JOB_ARRAY_SIZE", " ")])?, None);
        Ok(())
    }

    #[test]
    fn an_index_without_a_count_names_the_count() -> TestResult {
        let message = refusal(&[("JOB_COMPLETION_INDEX", "1")])?;
        assert!(
            message.contains("JOB_ARRAY_SIZE: is not set, but JOB_COMPLETION_INDEX is 1"),
            "{message}"
        );
        assert!(message.contains("spec.completions"), "{message}");
        Ok(())
    }

    #[test]
    fn a_count_without_an_index_says_the_job_is_not_indexed() -> TestResult {
        let message = refusal(&[("JOB_ARRAY_SIZE", "3")])?;
        assert!(
            message.contains("JOB_ARRAY_SIZE: is 3, but neither"),
            "{message}"
        );
        assert!(message.contains("completionMode: Indexed"), "{message}");
        Ok(())
    }

    #[test]
    fn an_index_out_of_range_names_both_variables() -> TestResult {
        let message = refusal(&[("JOB_INDEX", "7"), ("JOB_ARRAY_SIZE", "3")])?;
        assert!(message.contains("JOB_INDEX: shard index 7"), "{message}");
        assert!(message.contains("JOB_ARRAY_SIZE=3"), "{message}");
        assert!(message.contains("--array-size-var-override"), "{message}");
        let message = refusal(&[("JOB_COMPLETION_INDEX", "0"), ("JOB_ARRAY_SIZE", "0")])?;
        assert!(message.contains("JOB_COMPLETION_INDEX:"), "{message}");
        Ok(())
    }

    #[test]
    fn malformed_or_disagreeing_indexes_are_named_once() -> TestResult {
        let message = refusal(&[("JOB_INDEX", "first"), ("JOB_ARRAY_SIZE", "2")])?;
        assert!(
            message.starts_with("invalid configuration (1 problem)"),
            "{message}"
        );
        assert!(
            message.contains("JOB_INDEX: \"first\" is not valid"),
            "{message}"
        );
        let message = refusal(&[
            ("JOB_INDEX", "0"),
            ("JOB_COMPLETION_INDEX", "1"),
            ("JOB_ARRAY_SIZE", "2"),
        ])?;
        assert!(
            message.contains("JOB_COMPLETION_INDEX: is 1, but JOB_INDEX is 0"),
            "{message}"
        );
        Ok(())
    }

    /// The variables a Code Engine COS subscription passes the job it runs (IBM's "Environment
    /// variables for events delivered to jobs"), and the ones every job run gets.
    fn cos_write(key: &str) -> Vec<(&'static str, String)> {
        let data = serde_json::json!({
            "bucket": "photos", "endpoint": "", "key": key, "operation": "Object:Write",
            "notification": {"bucket_name": "photos", "event_type": "Object:Write",
                "format": "2.0", "object_length": "4642", "object_name": key,
                "request_time": "2024-11-05T14:22:36.610Z"}
        });
        vec![
            ("CE_DATA", data.to_string()),
            ("CE_ID", "6abc7123-382d-4115-98e8-7568b2cc03f8".to_owned()),
            (
                "CE_SOURCE",
                "https://cloud.ibm.com/catalog/services/cloud-object-storage/photos".to_owned(),
            ),
            ("CE_SPECVERSION", "1.0".to_owned()),
            ("CE_TIME", "2024-11-05T14:22:36.610Z".to_owned()),
            ("CE_TYPE", "com.ibm.cloud.cos.document.write".to_owned()),
            ("CONTENT_TYPE", "application/json".to_owned()),
            ("CE_JOB", "thumbnail-sweep".to_owned()),
            ("CE_JOBRUN", "thumbnail-sweep-jobrun-f5kxz".to_owned()),
            ("CE_REGION", "eu-de".to_owned()),
            ("JOB_INDEX", "0".to_owned()),
            ("JOB_ARRAY_SIZE", "1".to_owned()),
        ]
    }

    fn work(pairs: &[(&str, String)]) -> Result<JobWork, JobError> {
        JobWork::from_env(Env::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str()))))
    }

    #[test]
    fn a_cos_subscription_event_decodes_as_over_http() -> TestResult {
        let job = work(&cos_write("2024/café.jpg"))?;
        assert!(job.passed.is_empty());
        let events = job.delivery.into_events()?;
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.kind, EventKind::Created);
        assert_eq!(
            (event.bucket.as_str(), event.key.as_str()),
            ("photos", "2024/café.jpg")
        );
        assert_eq!(
            event.id.as_deref(),
            Some("6abc7123-382d-4115-98e8-7568b2cc03f8")
        );
        Ok(())
    }

    #[test]
    fn without_an_event_a_worker_sweeps_its_share() -> TestResult {
        let env = [
            ("CE_JOB", "thumbnail-sweep".to_owned()),
            ("CE_REGION", "eu-de".to_owned()),
            ("JOB_INDEX", "1".to_owned()),
            ("JOB_ARRAY_SIZE", "3".to_owned()),
        ];
        let events = work(&env)?.delivery.into_events()?;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Sweep);
        assert_eq!(
            (events[0].bucket.as_str(), events[0].key.as_str()),
            ("", "")
        );
        assert_eq!(events[0].sweep.shard, Some(Shard::new(1, 3)?));
        Ok(())
    }

    #[test]
    fn a_cron_subscription_of_an_array_job_sweeps_each_share() -> TestResult {
        let env = [
            ("CE_SPECVERSION", "1.0".to_owned()),
            ("CE_TYPE", "dev.knative.sources.ping".to_owned()),
            ("CE_ID", "ping-1".to_owned()),
            (
                "CE_SOURCE",
                "/apis/v1/namespaces/1234abcd1a2/pingsources/thumbnail-sweep".to_owned(),
            ),
            ("CE_DATA", "{}".to_owned()),
            ("CONTENT_TYPE", "application/json".to_owned()),
            ("JOB_INDEX", "0".to_owned()),
            ("JOB_ARRAY_SIZE", "2".to_owned()),
        ];
        let events = work(&env)?.delivery.into_events()?;
        assert_eq!(events[0].kind, EventKind::Sweep);
        assert_eq!(events[0].sweep.shard, Some(Shard::new(0, 2)?));
        Ok(())
    }

    #[test]
    fn an_event_for_an_array_is_handled_by_its_keys_worker_only() -> TestResult {
        let key = "2024/a.jpg";
        let owner = (0..2)
            .map(|i| Shard::new(i, 2))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .find(|s| s.owns(key))
            .ok_or("no worker owns the key")?;
        for index in 0..2 {
            let mut env = cos_write(key);
            env.retain(|(name, _)| !name.starts_with("JOB_"));
            env.push(("JOB_INDEX", index.to_string()));
            env.push(("JOB_ARRAY_SIZE", "2".to_owned()));
            let job = work(&env)?;
            if index == owner.index {
                assert!(job.passed.is_empty());
                assert_eq!(job.delivery.into_events()?.len(), 1);
            } else {
                assert_eq!(job.passed.len(), 1);
                assert!(job.delivery.records.is_empty());
            }
        }
        Ok(())
    }

    #[test]
    fn an_incomplete_event_names_what_is_missing() -> TestResult {
        let mut env = cos_write("a.jpg");
        env.retain(|(name, _)| !matches!(*name, "CE_SPECVERSION" | "CE_ID"));
        let message = work(&env).err().ok_or("accepted")?.to_string();
        assert!(
            message.contains("invalid configuration (2 problems)"),
            "{message}"
        );
        assert!(message.contains("CE_SPECVERSION: is not set"), "{message}");
        assert!(message.contains("CE_ID: is not set"), "{message}");
        Ok(())
    }

    #[test]
    fn an_event_that_does_not_decode_says_where_it_came_from() -> TestResult {
        let mut env = cos_write("a.jpg");
        for (name, value) in &mut env {
            if *name == "CE_DATA" {
                *value = "{\"order\": 7}".to_owned();
            }
        }
        let message = work(&env).err().ok_or("accepted")?.to_string();
        assert!(
            message.starts_with("the event in the CE_* variables: IBM COS event"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn a_control_character_in_an_attribute_is_refused_by_name() -> TestResult {
        let mut env = cos_write("a.jpg");
        env.push(("CE_SUBJECT", "a\nb".to_owned()));
        let message = work(&env).err().ok_or("accepted")?.to_string();
        assert!(
            message.contains("CE_SUBJECT: holds a control character"),
            "{message}"
        );
        Ok(())
    }
}
