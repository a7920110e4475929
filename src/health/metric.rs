//! Metric gates and rollout webhooks. Metric gates: a Prometheus instant query (`GET {url}/api/v1/query?query=...`) whose single
//! value is compared with a condition such as `< 0.01`. Used by rollouts to abort when the new
//! version's error rate climbs; lives here because outbound HTTP is this module's concern.

use std::time::Duration;

use crate::model::MetricGate;

/// A client for metric queries (one per gate; built once).
#[derive(Clone, Debug)]
pub struct MetricClient(reqwest::Client);

impl MetricClient {
    pub fn new(timeout: Duration) -> Result<MetricClient, String> {
        super::probe::install_crypto_provider();
        reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .map(MetricClient)
            .map_err(|e| e.to_string())
    }
}

impl MetricClient {
    /// POSTs `body` as JSON; Ok only for a 2xx answer.
    pub async fn post_json(&self, url: &str, body: &serde_json::Value) -> Result<(), String> {
        let response = self
            .0
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("webhook: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered HTTP {}", response.status()))
        }
    }
}

/// Runs the gate's query once: Ok(true) when the condition holds, Ok(false) when it does not,
/// Err when there is no single numeric answer (which counts as a failure too).
pub async fn check(client: &MetricClient, gate: &MetricGate) -> Result<bool, String> {
    let client = &client.0;
    let mut url = reqwest::Url::parse(&gate.url).map_err(|e| format!("url: {e}"))?;
    url.set_path(&format!(
        "{}/api/v1/query",
        url.path().trim_end_matches('/')
    ));
    url.query_pairs_mut().append_pair("query", &gate.query);
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("query: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("query: {e}"))?;
    if !status.is_success() {
        return Err(format!("query: HTTP {status}"));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("query: {e}"))?;
    // An instant vector with one sample, or a scalar: [timestamp, "value"].
    let sample = match json["data"]["resultType"].as_str() {
        Some("vector") => match json["data"]["result"].as_array().map(Vec::as_slice) {
            Some([one]) => &one["value"],
            Some(more) => return Err(format!("query returned {} series, not 1", more.len())),
            None => return Err("query returned no result".into()),
        },
        Some("scalar") => &json["data"]["result"],
        other => return Err(format!("unexpected result type {other:?}")),
    };
    let value: f64 = sample[1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no numeric value in {sample}"))?;
    Ok(gate.holds(value))
}
