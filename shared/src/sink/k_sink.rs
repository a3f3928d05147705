//! CloudEvents over HTTP to the sink Knative injects as `K_SINK` (SinkBinding,
//! ContainerSource): each message is POSTed as one event in binary content mode, its `ce_*`
//! headers (Kafka binary mode) as `ce-*` HTTP headers with the `K_CE_OVERRIDES` extensions on
//! top, its content type as `content-type`, its body as the data. Retries: [`super::http`];
//! 404 and 409 are retried too, as Knative's contract asks.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use bytes::Bytes;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::StatusCode;
use reqwest::header::{
    CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, InvalidHeaderName, InvalidHeaderValue,
};
use serde::Deserialize;

use super::http::{RetryPolicy, Sender, check_url};
use super::{Message, PublishError, Publisher};
use crate::config::{Env, FromEnv, redact_url};
use crate::outcome::BoxError;

/// The attributes every CloudEvent has (CloudEvents 1.0, "Required Attributes").
const REQUIRED: [&str; 4] = ["id", "source", "type", "specversion"];
/// Attributes the specification defines: `K_CE_OVERRIDES` sets extensions, never these.
const CORE: [&str; 9] = [
    "id",
    "source",
    "type",
    "specversion",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
];
/// What a header value percent-encodes besides every byte outside ASCII (HTTP protocol binding
/// 3.1.3.2): space, double quote and percent, and the controls, as the binding recommends.
const HEADER_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// `K_CE_OVERRIDES`, as Knative injects it: `{"extensions": {"name": "value", ...}}`, the
/// extension attributes set on every event sent (replacing a message's own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CeOverrides {
    /// Extension name (lower-case letters and digits) to value.
    pub extensions: BTreeMap<String, String>,
}

impl FromStr for CeOverrides {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            extensions: BTreeMap<String, String>,
        }
        let raw: Raw = serde_json::from_str(s).map_err(|e| {
            format!("expected {{\"extensions\": {{\"name\": \"value\", ...}}}} ({e})")
        })?;
        for name in raw.extensions.keys() {
            if CORE.contains(&name.as_str()) {
                return Err(format!(
                    "{name:?} is a CloudEvents core attribute, not an extension"
                ));
            }
            if !is_attribute_name(name) {
                return Err(format!(
                    "{name:?} is not an extension name (lower-case letters and digits)"
                ));
            }
        }
        Ok(Self {
            extensions: raw.extensions,
        })
    }
}

/// Where and how to send events, from `K_SINK` and `K_SINK_*`. `Debug` hides credentials in
/// the URL.
#[derive(Clone, PartialEq)]
pub struct KSinkSettings {
    /// `K_SINK`: the sink's URL (a broker, a channel, a service).
    pub url: String,
    /// `K_CE_OVERRIDES`.
    pub overrides: CeOverrides,
    /// `K_SINK_MAX_ATTEMPTS`, `K_SINK_TIMEOUT_SECS`, `K_SINK_BACKOFF_MS`.
    pub retry: RetryPolicy,
}

impl fmt::Debug for KSinkSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KSinkSettings")
            .field("url", &redact_url(&self.url))
            .field("overrides", &self.overrides)
            .field("retry", &self.retry)
            .finish()
    }
}

impl FromEnv for KSinkSettings {
    fn read(env: &mut Env) -> Option<Self> {
        let url: Option<String> = env.required("K_SINK");
        if let Some(url) = &url {
            check_url(env, "K_SINK", url);
        }
        let overrides = env.optional("K_CE_OVERRIDES").unwrap_or_default();
        let retry = RetryPolicy::read(env, "K_SINK");
        Some(Self {
            url: url?,
            overrides,
            retry,
        })
    }
}

/// Sends each message as one binary-mode CloudEvent.
pub struct KSinkPublisher {
    url: String,
    overrides: Vec<(HeaderName, HeaderValue)>,
    sender: Sender,
}

impl fmt::Debug for KSinkPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KSinkPublisher")
            .field("sink", &self.sender.sink())
            .finish_non_exhaustive()
    }
}

impl KSinkPublisher {
    /// Fails only if the HTTP client cannot be built: the settings were checked when read.
    pub fn new(settings: KSinkSettings) -> Result<Self, BoxError> {
        let overrides = settings
            .overrides
            .extensions
            .iter()
            .map(|(name, value)| Ok((attribute_header(name)?, header_value(value)?)))
            .collect::<Result<_, BoxError>>()?;
        // Knative's data-plane contract has senders retry 404 and 409 too: a broker or channel
        // ingress answers them while it is being created or reconciled.
        let sender = Sender::new(
            format!("Knative sink {}", redact_url(&settings.url)),
            settings.retry,
        )?
        .also_retrying(&[StatusCode::NOT_FOUND, StatusCode::CONFLICT]);
        Ok(Self {
            url: settings.url,
            overrides,
            sender,
        })
    }

    /// The request headers of one message: its `ce_<name>` headers as `ce-<name>` (other
    /// headers are not CloudEvents attributes and stay behind), the overrides, the content type.
    fn headers(&self, message: &Message) -> Result<HeaderMap, NotAnEvent> {
        let mut headers = HeaderMap::new();
        let mut content_type = message.content_type.as_str();
        for (name, value) in &message.headers {
            let Some(attribute) = name.strip_prefix("ce_") else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            // In HTTP binary mode the content type is the `content-type` header, never a
            // `ce-datacontenttype` one.
            if attribute == "datacontenttype" {
                if content_type.is_empty() {
                    content_type = value;
                }
                continue;
            }
            if !is_attribute_name(attribute) {
                return Err(NotAnEvent::AttributeName(name.clone()));
            }
            headers.insert(attribute_header(attribute)?, header_value(value)?);
        }
        let missing: Vec<&str> = REQUIRED
            .into_iter()
            .filter(|attribute| !headers.contains_key(format!("ce-{attribute}")))
            .collect();
        if !missing.is_empty() {
            return Err(NotAnEvent::Missing(missing.join(", ")));
        }
        for (name, value) in &self.overrides {
            headers.insert(name.clone(), value.clone());
        }
        if !content_type.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type)?);
        }
        Ok(headers)
    }
}

/// Why a message is not a CloudEvent. The functions build every attribute themselves, so each
/// of these is a bug in the code that made the message, never something an event can cause.
#[derive(Debug, thiserror::Error)]
enum NotAnEvent {
    #[error("its header {0:?} names no CloudEvents attribute (lower-case letters and digits)")]
    AttributeName(String),
    #[error("it lacks the required CloudEvents attributes {0}")]
    Missing(String),
    #[error("it has a header that HTTP cannot carry")]
    Header(#[from] reqwest::header::InvalidHeaderName),
    #[error("it has a header value that HTTP cannot carry")]
    Value(#[from] reqwest::header::InvalidHeaderValue),
}

/// A message [`KSinkPublisher`] refused to send.
#[derive(Debug, thiserror::Error)]
#[error("the message for {key} cannot be sent as a CloudEvent")]
struct Refused {
    key: String,
    #[source]
    reason: NotAnEvent,
}

#[async_trait]
impl Publisher for KSinkPublisher {
    async fn publish(&self, messages: Vec<Message>) -> Result<(), PublishError> {
        // Every message is checked before the first is sent: a refused one sends none.
        let events = messages
            .into_iter()
            .map(|message| match self.headers(&message) {
                Ok(headers) => Ok((headers, message.body)),
                Err(reason) => Err(PublishError::Rejected {
                    sink: self.sender.sink().to_owned(),
                    source: Box::new(Refused {
                        key: message.key.unwrap_or_else(|| "(no key)".to_owned()),
                        reason,
                    }),
                }),
            })
            .collect::<Result<Vec<(HeaderMap, Bytes)>, _>>()?;
        // One request per event and one after another: the publisher contract keeps order,
        // and a sink acknowledges events one by one. A sink may answer with a reply event; a
        // SinkBinding has nowhere to send it, so it is not read.
        for (headers, body) in events {
            self.sender
                .send(|client| {
                    client
                        .post(&self.url)
                        .headers(headers.clone())
                        .body(body.clone())
                })
                .await?;
        }
        Ok(())
    }
}

/// Attribute names are lower-case ASCII letters and digits (CloudEvents 1.0, "Attribute
/// Naming Convention").
fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn attribute_header(attribute: &str) -> Result<HeaderName, InvalidHeaderName> {
    HeaderName::from_bytes(format!("ce-{attribute}").as_bytes())
}

/// An attribute value as a header value: UTF-8, percent-encoded where HTTP headers cannot
/// carry the character as it is (HTTP protocol binding, 3.1.3.2).
fn header_value(value: &str) -> Result<HeaderValue, InvalidHeaderValue> {
    HeaderValue::try_from(utf8_percent_encode(value, HEADER_VALUE).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), BoxError>;

    fn settings(overrides: &str) -> Result<KSinkSettings, BoxError> {
        Ok(Env::from_pairs([
            ("K_SINK", "http://127.0.0.1:9/"),
            ("K_CE_OVERRIDES", overrides),
        ])
        .load()?)
    }

    fn claim() -> Message {
        Message {
            key: Some("logs/a.log".into()),
            headers: vec![
                ("ce_specversion".into(), "1.0".into()),
                ("ce_id".into(), "abc".into()),
                ("ce_source".into(), "s3://logs".into()),
                ("ce_type".into(), "io.bucketfn.object.created".into()),
                ("ce_subject".into(), "été/a b.log".into()),
                ("ce_traceparent".into(), "from-the-message".into()),
                ("dedupe_id".into(), "e:0".into()),
            ],
            content_type: "application/json".into(),
            ..Message::default()
        }
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn header_values_are_percent_encoded_as_the_http_binding_says() -> TestResult {
        // The binding's own example, then the three printable characters it encodes.
        assert_eq!(
            header_value("Euro \u{20AC} \u{1F600}")?,
            "Euro%20%E2%82%AC%20%F0%9F%98%80"
        );
        assert_eq!(header_value("a\"b%c d")?, "a%22b%25c%20d");
        assert_eq!(header_value("tab\there\u{7f}")?, "tab%09here%7F");
        let printable: String = (0x21u8..=0x7e)
            .map(char::from)
            .filter(|c| !matches!(c, '"' | '%'))
            .collect();
        assert_eq!(header_value(&printable)?, printable.as_str());
        Ok(())
    }

    #[test]
    fn ce_headers_become_http_headers_with_overrides_on_top() -> TestResult {
        let publisher = KSinkPublisher::new(settings(
            r#"{"extensions": {"traceparent": "override", "cluster": "eu 1"}}"#,
        )?)?;
        let headers = publisher.headers(&claim())?;
        assert_eq!(header(&headers, "ce-id"), Some("abc"));
        assert_eq!(header(&headers, "ce-specversion"), Some("1.0"));
        assert_eq!(
            header(&headers, "ce-subject"),
            Some("%C3%A9t%C3%A9/a%20b.log")
        );
        assert_eq!(header(&headers, "ce-traceparent"), Some("override"));
        assert_eq!(header(&headers, "ce-cluster"), Some("eu%201"));
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        assert!(!headers.keys().any(|name| name.as_str().contains("dedupe")));
        assert_eq!(headers.len(), 8);
        Ok(())
    }

    #[test]
    fn a_message_without_the_required_attributes_is_rejected_before_anything_is_sent() -> TestResult
    {
        let publisher = KSinkPublisher::new(settings("")?)?;
        let mut message = claim();
        message
            .headers
            .retain(|(name, _)| name != "ce_id" && name != "ce_type");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // The URL answers nothing: reaching the network would be Unavailable, not Rejected.
        let err = runtime
            .block_on(publisher.publish(vec![claim(), message]))
            .err()
            .ok_or("accepted")?;
        assert!(matches!(err, PublishError::Rejected { .. }), "{err}");
        let refused = std::error::Error::source(&err).ok_or("no cause")?;
        assert_eq!(
            refused.to_string(),
            "the message for logs/a.log cannot be sent as a CloudEvent"
        );
        let reason = std::error::Error::source(refused).ok_or("no reason")?;
        assert_eq!(
            reason.to_string(),
            "it lacks the required CloudEvents attributes id, type"
        );
        Ok(())
    }

    #[test]
    fn overrides_must_be_extensions_and_every_problem_is_reported() -> TestResult {
        for (overrides, expected) in [
            (r#"{"extensions": {"id": "x"}}"#, "core attribute"),
            (r#"{"extensions": {"Team": "x"}}"#, "not an extension name"),
            (r#"{"extensions": {"n": 1}}"#, "expected {\"extensions\""),
            ("extensions=x", "expected {\"extensions\""),
        ] {
            let err =
                Env::from_pairs([("K_CE_OVERRIDES", overrides), ("K_SINK_MAX_ATTEMPTS", "0")])
                    .load::<KSinkSettings>()
                    .err()
                    .ok_or("accepted")?;
            let vars: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
            assert_eq!(
                vars,
                ["K_SINK", "K_CE_OVERRIDES", "K_SINK_MAX_ATTEMPTS"],
                "{overrides}"
            );
            assert!(err.problems[1].message.contains(expected), "{err}");
        }
        let settings = settings(r#"{"extensions": {"team": "a"}, "future": true}"#)?;
        assert_eq!(settings.overrides.extensions["team"], "a");
        assert_eq!(settings.retry.max_attempts, 4);
        Ok(())
    }

    #[test]
    fn k_sink_must_be_an_http_url() -> TestResult {
        let err = Env::from_pairs([("K_SINK", "broker-ingress.knative-eventing")])
            .load::<KSinkSettings>()
            .err()
            .ok_or("accepted")?;
        assert_eq!(err.problems[0].variable, "K_SINK");
        Ok(())
    }
}
