//! Metric gates and rollout webhooks. Metric gates: a Prometheus instant query (`GET {url}/api/v1/query?query=...`) whose single
//! value is compared with a condition such as `< 0.01`. Used by rollouts to abort when the new
//! version's error rate climbs; lives here because outbound HTTP is this module's concern.

use std::time::Duration;

use crate::model::MetricGate;

/// Why a metric query or a webhook gave no usable answer; its text is the reason a rollout
/// records when it holds or aborts.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The HTTP client could not be built (its text says why).
    #[error("{0}")]
    Client(String),
    #[error("webhook: {0}")]
    Webhook(String),
    #[error("webhook answered HTTP {0}")]
    WebhookStatus(reqwest::StatusCode),
    #[error("url: {0}")]
    Url(String),
    #[error("query: {0}")]
    Query(String),
    #[error("query: HTTP {0}")]
    QueryStatus(reqwest::StatusCode),
    #[error("query returned {0} series, not 1")]
    Series(usize),
    #[error("query returned no result")]
    NoResult,
    #[error("unexpected result type {0:?}")]
    ResultType(Option<String>),
    #[error("no numeric value in {0}")]
    NotNumeric(String),
}

/// A client for metric queries (one per gate; built once).
#[derive(Clone, Debug)]
pub struct MetricClient(reqwest::Client);

impl MetricClient {
    pub fn new(timeout: Duration) -> Result<MetricClient, OutboundError> {
        super::probe::install_crypto_provider();
        reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .map(MetricClient)
            .map_err(|e| OutboundError::Client(e.to_string()))
    }
}

impl MetricClient {
    /// POSTs `body` as JSON; Ok only for a 2xx answer.
    pub async fn post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<(), OutboundError> {
        let response = self
            .0
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| OutboundError::Webhook(e.to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(OutboundError::WebhookStatus(response.status()))
        }
    }
}

/// Runs the gate's query once: Ok(true) when the condition holds, Ok(false) when it does not,
/// Err when there is no single numeric answer (which counts as a failure too).
pub async fn check(client: &MetricClient, gate: &MetricGate) -> Result<bool, OutboundError> {
    let client = &client.0;
    let query = |e: reqwest::Error| OutboundError::Query(e.to_string());
    let mut url = reqwest::Url::parse(&gate.url).map_err(|e| OutboundError::Url(e.to_string()))?;
    url.set_path(&format!(
        "{}/api/v1/query",
        url.path().trim_end_matches('/')
    ));
    url.query_pairs_mut().append_pair("query", &gate.query);
    let response = client.get(url).send().await.map_err(query)?;
    let status = response.status();
    let body = response.bytes().await.map_err(query)?;
    if !status.is_success() {
        return Err(OutboundError::QueryStatus(status));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| OutboundError::Query(e.to_string()))?;
    // An instant vector with one sample, or a scalar: [timestamp, "value"].
    let sample = match json["data"]["resultType"].as_str() {
        Some("vector") => match json["data"]["result"].as_array().map(Vec::as_slice) {
            Some([one]) => &one["value"],
            Some(more) => return Err(OutboundError::Series(more.len())),
            None => return Err(OutboundError::NoResult),
        },
        Some("scalar") => &json["data"]["result"],
        other => return Err(OutboundError::ResultType(other.map(str::to_string))),
    };
    let value: f64 = sample[1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| OutboundError::NotNumeric(sample.to_string()))?;
    Ok(gate.holds(value))
}
