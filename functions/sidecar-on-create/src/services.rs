//! Clients of meemoo's PID service and organisations API, with the contracts they follow.

use std::collections::HashMap;

use bucketfn::api::{self, ApiError};
use reqwest::Client;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::subject::check_pid;

const PID_SERVICE: &str = "PID service";
const ORGANISATIONS: &str = "organisations API";

/// The PID service (meemoo's pid_webservice).
///
/// Contract: `GET {PID_SERVICE_URL}` -> `200 [{"id": "j96059k22s", "number": 1}]`: one new PID
/// per call, 10 lowercase letters or digits. 5xx / 429 when busy.
pub struct PidService {
    http: Client,
    url: String,
}

#[derive(Deserialize)]
struct MintedPid {
    id: String,
}

impl PidService {
    pub fn new(http: Client, url: String) -> Self {
        Self { http, url }
    }

    /// A new PID. An answer without a well-formed PID is the service's fault (retryable).
    pub async fn mint(&self) -> Result<String, ApiError> {
        let response = api::send(PID_SERVICE, self.http.get(&self.url)).await?;
        let minted: Vec<MintedPid> = api::json(PID_SERVICE, response).await?;
        let pid = minted
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::malformed(PID_SERVICE, "an empty list"))?
            .id;
        check_pid(&pid).map_err(|problem| ApiError::malformed(PID_SERVICE, problem.to_string()))?;
        Ok(pid)
    }
}

/// The organisations API (GraphQL), asked for a tenant's MAM label: the content partner's
/// name in MediaHaven. Answers are kept for the life of the instance.
///
/// Contract: `POST {ORGANISATIONS_API_URL}` with JSON `{"query": "{ organizations(id:
/// \"OR-rf5kf25\") { mam_label } }"}` -> `200 {"data": {"organizations": [{"mam_label":
/// "VRT"}]}}`; an unknown OR-id gives an empty list, an organisation without a label
/// `"mam_label": null`. The id is spliced into the query only after it was normalized to a
/// prefix of letters or digits (`OR`, `MM`, ...), `-` and 7 letters or digits, so it cannot
/// change the query.
pub struct Organisations {
    http: Client,
    url: String,
    labels: Mutex<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct GraphQl {
    data: Option<OrgData>,
}

#[derive(Deserialize)]
struct OrgData {
    #[serde(default)]
    organizations: Vec<Organisation>,
}

#[derive(Deserialize)]
struct Organisation {
    mam_label: Option<String>,
}

impl Organisations {
    pub fn new(http: Client, url: String) -> Self {
        Self {
            http,
            url,
            labels: Mutex::new(HashMap::new()),
        }
    }

    /// The MAM label of a normalized organisation id; an unknown tenant or one without a label is a
    /// refusal (permanent).
    pub async fn cp_name(&self, or_id: &str) -> Result<String, ApiError> {
        if let Some(label) = self.labels.lock().await.get(or_id) {
            return Ok(label.clone());
        }
        let query = format!("{{ organizations(id: \"{or_id}\") {{ mam_label }} }}");
        let request = self
            .http
            .post(&self.url)
            .json(&serde_json::json!({ "query": query }));
        let answer: GraphQl =
            api::json(ORGANISATIONS, api::send(ORGANISATIONS, request).await?).await?;
        let data = answer
            .data
            .ok_or_else(|| ApiError::malformed(ORGANISATIONS, "no `data`"))?;
        let organisation =
            data.organizations.into_iter().next().ok_or_else(|| {
                ApiError::refused(ORGANISATIONS, format!("unknown tenant {or_id}"))
            })?;
        let label = organisation
            .mam_label
            .filter(|label| !label.trim().is_empty())
            .ok_or_else(|| {
                ApiError::refused(ORGANISATIONS, format!("tenant {or_id} has no MAM label"))
            })?;
        self.labels
            .lock()
            .await
            .insert(or_id.to_owned(), label.clone());
        Ok(label)
    }
}
