//! The HTTP side of `weir ctl`: one reqwest client (rustls on ring, 10 s per request, no proxy)
//! against the admin API's base URL, bearer auth, `If-Match`, and the error kinds with their
//! exit codes: a non-2xx answer is a refusal carrying the API's `error` message.

use std::time::Duration;

use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value};

use super::{ChangeArgs, raw};

/// Whole-request limit: connect, send, and read the answer.
const TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_REFUSED: u8 = 1;
const EXIT_UNREACHABLE: u8 = 2;

/// Why a command failed; `exit_code` maps each kind to the process exit code.
#[derive(Debug, thiserror::Error)]
pub(super) enum CtlError {
    /// The API answered with a status other than 2xx.
    #[error("{status}: {message}")]
    Refused {
        status: StatusCode,
        message: String,
        /// A failed reload's problems, one per line.
        problems: Vec<String>,
    },
    /// The API answered 2xx with something that is not the JSON it documents.
    #[error("unexpected answer from {url}: {reason}")]
    Unreadable { url: String, reason: String },
    /// No answer: connection refused, timed out, TLS failed...
    #[error("no answer from {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The token could not be read or used.
    #[error("{0}")]
    Token(String),
}

impl CtlError {
    pub(super) fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused { .. } | CtlError::Unreadable { .. } => EXIT_REFUSED,
            CtlError::Unreachable { .. } | CtlError::Token(_) => EXIT_UNREACHABLE,
        }
    }
}

/// The `generation` of a change's or reload's answer.
pub(super) fn generation(body: &Value, url: &Url) -> Result<u64, CtlError> {
    body["generation"]
        .as_u64()
        .ok_or_else(|| CtlError::Unreadable {
            url: url.to_string(),
            reason: "no generation in the answer".into(),
        })
}

/// What went wrong at the bottom of an error's chain: reqwest's own message ("error sending
/// request for url (...)") repeats the URL and hides the cause ("Connection refused").
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// See `health::probe::install_crypto_provider`: reqwest is built without a rustls provider,
/// and building a client without one panics. Another one installed first is kept.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The admin API at one base URL, with an optional bearer token.
#[derive(Debug)]
pub(super) struct Client {
    http: reqwest::Client,
    base: Url,
    authorization: Option<HeaderValue>,
}

impl Client {
    /// `ca_file`: a PEM certificate to trust for an https admin URL (a self-signed admin
    /// certificate), besides the system's roots.
    pub(super) fn new(
        base: Url,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Client, CtlError> {
        install_crypto_provider();
        let authorization = match token {
            Some(t) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    CtlError::Token("the token has characters an HTTP header cannot carry".into())
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        // No proxy: the admin API is usually on loopback, which an HTTP_PROXY from the
        // environment would otherwise capture.
        let mut builder = reqwest::Client::builder().timeout(TIMEOUT).no_proxy();
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| CtlError::Token(format!("cannot read {}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                CtlError::Token(format!("{}: not a PEM certificate: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| CtlError::Unreachable {
            url: base.to_string(),
            reason: root_cause(&e),
        })?;
        Ok(Client {
            http,
            base,
            authorization,
        })
    }

    /// The base URL plus `segments`, each percent-encoded as one path segment.
    pub(super) fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        // `parse_url` rejected cannot-be-a-base URLs, the only ones without path segments.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// Sends one request and returns the status and body, whatever the status.
    pub(super) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<(StatusCode, String), CtlError> {
        let unreachable = |e: reqwest::Error| CtlError::Unreachable {
            url: url.to_string(),
            reason: if e.is_timeout() {
                format!("timed out after {}s", TIMEOUT.as_secs())
            } else {
                root_cause(&e)
            },
        };
        let mut request = self.http.request(method, url.clone());
        if let Some(auth) = &self.authorization {
            request = request.header(header::AUTHORIZATION, auth.clone());
        }
        if let Some(generation) = if_match {
            request = request.header(header::IF_MATCH, format!("\"{generation}\""));
        }
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        Ok((status, text))
    }

    /// Sends one request; a 2xx answer is returned as text and parsed JSON, anything else is a
    /// refusal carrying the API's `error` message.
    pub(super) async fn expect_ok(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<(String, Value), CtlError> {
        let (status, text) = self.send(method, url.clone(), body, if_match).await?;
        if !status.is_success() {
            return Err(refusal(status, &text));
        }
        let value = serde_json::from_str(&text).map_err(|e| CtlError::Unreadable {
            url: url.to_string(),
            reason: format!("not JSON: {e}"),
        })?;
        Ok((text, value))
    }

    pub(super) async fn read(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<(String, Value), CtlError> {
        self.expect_ok(Method::GET, self.url(segments, query), None, None)
            .await
    }

    /// Sends a change and returns the confirmation line `what (generation N)`, or the API's
    /// JSON with `json`. PUT/POST carry reason and force in the body; DELETE, which has no
    /// body, as query parameters.
    pub(super) async fn change(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
        args: &ChangeArgs,
        json: bool,
        what: &str,
    ) -> Result<String, CtlError> {
        let (url, body) = match body {
            Some(Value::Object(mut fields)) => {
                with_meta(&mut fields, args);
                (self.url(segments, &[]), Some(Value::Object(fields)))
            }
            _ => {
                let mut query = Vec::new();
                if let Some(reason) = &args.reason {
                    query.push(("reason", reason.clone()));
                }
                if args.force {
                    query.push(("force", "true".to_string()));
                }
                (self.url(segments, &query), None)
            }
        };
        let (text, answer) = self
            .expect_ok(method, url.clone(), body.as_ref(), args.if_match)
            .await?;
        let generation = generation(&answer, &url)?;
        let mut out = if json {
            raw(text)
        } else {
            format!("{what} (generation {generation})\n")
        };
        if args.wait.wait {
            let status = self.wait_insync(generation, args.wait.wait_timeout).await?;
            if !json {
                out.push_str(&super::table::change_status(&status));
            }
        }
        Ok(out)
    }

    /// Polls `GET /v1/changes/{generation}` until INSYNC (the status's JSON), or fails once
    /// `timeout` has passed with the nodes still pending. 503 and 404 (the shared store
    /// briefly unreachable, no node has reported the generation yet) are retried.
    pub(super) async fn wait_insync(
        &self,
        generation: u64,
        timeout: std::time::Duration,
    ) -> Result<Value, CtlError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let segments = ["v1", "changes", &generation.to_string()];
        loop {
            let last = match self.read(&segments, &[]).await {
                Ok((_, body)) if body["status"] == "INSYNC" => return Ok(body),
                Ok((_, body)) => {
                    let pending: Vec<String> = body["pending"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect();
                    format!("still PENDING on {}", pending.join(", "))
                }
                Err(CtlError::Refused {
                    status, message, ..
                }) if status == StatusCode::SERVICE_UNAVAILABLE
                    || status == StatusCode::NOT_FOUND =>
                {
                    format!("{status}: {message}")
                }
                Err(e) => return Err(e),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(CtlError::Refused {
                    status: StatusCode::REQUEST_TIMEOUT,
                    message: format!(
                        "generation {generation} is not INSYNC after {}: {last}",
                        humantime::format_duration(timeout)
                    ),
                    problems: Vec::new(),
                });
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }
}

/// How often `--wait` asks for a change's status.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Adds `reason` and `force` to a change's body, leaving out what is at its default.
fn with_meta(fields: &mut Map<String, Value>, args: &ChangeArgs) {
    if let Some(reason) = &args.reason {
        fields.insert("reason".into(), Value::String(reason.clone()));
    }
    if args.force {
        fields.insert("force".into(), Value::Bool(true));
    }
}

/// A non-2xx answer: the API's `{"error": ..., "problems": [...]}` when it sent one.
fn refusal(status: StatusCode, text: &str) -> CtlError {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let message = match body["error"].as_str() {
        Some(m) => m.to_string(),
        None if !text.trim().is_empty() && !body.is_object() => text.trim().to_string(),
        None => "(no message)".to_string(),
    };
    let problems = body["problems"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_default();
    CtlError::Refused {
        status,
        message,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_url;
    use super::*;

    #[test]
    fn refusals_carry_the_api_message_and_problems() {
        let cases: [(u16, &str, &str, &[&str]); 4] = [
            (
                404,
                r#"{"error":"no pool `x.`"}"#,
                "404 Not Found: no pool `x.`",
                &[],
            ),
            (
                422,
                r#"{"error":"reload failed","problems":["a: b","c"]}"#,
                "422 Unprocessable Entity: reload failed",
                &["a: b", "c"],
            ),
            (405, "", "405 Method Not Allowed: (no message)", &[]),
            (502, "bad gateway\n", "502 Bad Gateway: bad gateway", &[]),
        ];
        for (code, body, shown, want) in cases {
            let e = refusal(StatusCode::from_u16(code).unwrap(), body);
            assert_eq!(e.to_string(), shown);
            assert_eq!(e.exit_code(), 1);
            let CtlError::Refused { problems, .. } = e else {
                panic!("a refusal")
            };
            assert_eq!(problems, want);
        }
    }

    #[test]
    fn urls_encode_each_segment_and_keep_a_base_path() {
        let cases = [
            (
                "http://127.0.0.1:8053",
                "http://127.0.0.1:8053/v1/pools/app.example.com./endpoints/2001:db8::1",
            ),
            (
                "http://h/admin/",
                "http://h/admin/v1/pools/app.example.com./endpoints/2001:db8::1",
            ),
            (
                "http://h/admin?x=1#f",
                "http://h/admin/v1/pools/app.example.com./endpoints/2001:db8::1",
            ),
        ];
        for (base, want) in cases {
            let client = Client::new(parse_url(base).unwrap(), None, None).unwrap();
            let url = client.url(
                &[
                    "v1",
                    "pools",
                    "app.example.com.",
                    "endpoints",
                    "2001:db8::1",
                ],
                &[],
            );
            assert_eq!(url.as_str(), want, "{base}");
        }
        let client = Client::new(parse_url("http://h").unwrap(), None, None).unwrap();
        let url = client.url(&["v1", "pools", "a/b c"], &[("reason", "why not?".into())]);
        assert_eq!(
            url.as_str(),
            "http://h/v1/pools/a%2Fb%20c?reason=why+not%3F"
        );
    }
}
