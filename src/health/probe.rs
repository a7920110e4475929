//! How one probe is made: HTTP(S) through reqwest (rustls on the ring provider, a resolver that
//! always answers with the probe target so no DNS lookup happens), TCP through a plain connect,
//! and the short human reason each outcome carries.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::model::{Check, CheckKind, ProbeKey};

/// Status ranges accepted when a check lists none.
const DEFAULT_EXPECT: (u16, u16) = (200, 399);

/// Most of a response body read to look for `body_contains`: a health page is small, and a
/// target that streams forever must not hold a probe (or our memory) hostage.
const BODY_LIMIT: usize = 64 * 1024;

/// The result of one probe.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) ok: bool,
    /// Short and human, for the flip's log line: "HTTP 503", "connect: connection refused".
    pub(super) reason: String,
    /// The `probe_failures_total` reason label; None on success.
    pub(super) failure: Option<&'static str>,
    /// weir itself could not make the probe (out of file descriptors): the result says
    /// nothing about the target, so it never counts towards a flip.
    pub(super) unknown: bool,
}

impl Outcome {
    pub(super) fn passed(reason: String) -> Self {
        Outcome {
            ok: true,
            reason,
            failure: None,
            unknown: false,
        }
    }

    pub(super) fn failed(label: &'static str, reason: String) -> Self {
        Outcome {
            ok: false,
            reason,
            failure: Some(label),
            unknown: false,
        }
    }

    /// A probe weir could not make because weir itself is out of file descriptors.
    pub(super) fn unknown(err: &std::io::Error) -> Self {
        Outcome {
            ok: false,
            reason: format!("unknown: weir cannot open a socket ({err})"),
            failure: Some("local"),
            unknown: true,
        }
    }
}

/// EMFILE (this process is at its descriptor limit) or ENFILE (the system is): the socket
/// could not even be created, so the target was never asked.
fn out_of_descriptors(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The descriptor-exhaustion error anywhere in `err`'s chain, if there is one.
fn exhaustion<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    chain(err)
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .find(|io| out_of_descriptors(io))
}

/// A failed TCP connect: the target's fault, unless weir could not create the socket.
fn connect_failed(err: &std::io::Error) -> Outcome {
    match exhaustion(err) {
        Some(local) => Outcome::unknown(local),
        None => Outcome::failed("connect", format!("connect: {}", io_detail(err))),
    }
}

/// How one key is probed, prepared once; cheap to clone into each probe's task.
#[derive(Clone, Debug)]
pub(super) enum Prober {
    Tcp(SocketAddr),
    Http(Arc<HttpProber>),
    /// The client could not be built; every probe fails with this reason.
    Broken(Arc<str>),
}

#[derive(Debug)]
pub(super) struct HttpProber {
    client: reqwest::Client,
    url: reqwest::Url,
    /// Set when `host` is an IP literal: the URL then names the target (so the connection
    /// still goes there) and the header carries the configured host.
    host_header: Option<String>,
}

impl Prober {
    pub(super) fn new(key: &ProbeKey) -> Self {
        let scheme = match key.check.kind {
            CheckKind::Tcp => return Prober::Tcp(key.target),
            CheckKind::Http => "http",
            CheckKind::Https => "https",
        };
        match http_prober(key, scheme) {
            Ok(prober) => prober,
            Err(reason) => {
                tracing::warn!(probe = %key.target, %reason, "probe cannot run");
                Prober::Broken(reason.into())
            }
        }
    }

    /// One probe within the check's timeout.
    pub(super) async fn within(&self, check: &Check) -> Outcome {
        match tokio::time::timeout(check.timeout, self.once(check)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::failed(
                "timeout",
                format!(
                    "timeout after {}",
                    humantime::format_duration(check.timeout)
                ),
            ),
        }
    }

    async fn once(&self, check: &Check) -> Outcome {
        match self {
            Prober::Tcp(target) => match tokio::net::TcpStream::connect(*target).await {
                Ok(stream) => {
                    // Closed with a reset, as HAProxy closes its TCP checks: no FIN exchange
                    // and no TIME_WAIT socket left behind per probe (10,000 targets every 5 s
                    // would otherwise keep ~120,000 of them), about a third less kernel work.
                    let _ = stream.set_zero_linger();
                    Outcome::passed("connected".into())
                }
                Err(e) => connect_failed(&e),
            },
            Prober::Http(http) => {
                http_once(&http.client, &http.url, http.host_header.as_deref(), check).await
            }
            Prober::Broken(reason) => Outcome::failed("setup", reason.to_string()),
        }
    }
}

pub(super) fn http_prober(key: &ProbeKey, scheme: &str) -> Result<Prober, String> {
    let port = key.target.port();
    let path = &key.check.path;
    let host = key.check.host.as_deref();
    // The probe always connects to `key.target`. A DNS name in `host` goes into the URL (so it
    // is the Host header and the TLS SNI) and the client's resolver maps every name to the
    // target: no DNS query is ever made, and the name's case or IDNA form cannot make a lookup
    // miss and fall through to the system resolver. An IP literal in `host` cannot go into the
    // URL, because the client would connect to it instead of the target.
    let (url, host_header) = match host {
        Some(host) if host.parse::<IpAddr>().is_err() => {
            (format!("{scheme}://{host}:{port}{path}"), None)
        }
        Some(ip) => (
            format!("{scheme}://{}{path}", key.target),
            Some(authority(ip, port, scheme)),
        ),
        None => (format!("{scheme}://{}{path}", key.target), None),
    };
    let url = reqwest::Url::parse(&url).map_err(|e| format!("bad probe url `{url}`: {e}"))?;
    install_crypto_provider();
    let client = reqwest::Client::builder()
        // A probe measures the target itself: no proxy from the environment, no redirects (a
        // 3xx is judged like any other status), no retries, and a fresh connection each time
        // (a pooled one would hide a target that stopped accepting connections).
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .pool_max_idle_per_host(0)
        .dns_resolver(Arc::new(ToTarget(key.target)))
        .tls_danger_accept_invalid_certs(!key.check.tls_verify)
        .user_agent(concat!("weir-health/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("setup: {}", innermost(&e)))?;
    Ok(Prober::Http(Arc::new(HttpProber {
        client,
        url,
        host_header,
    })))
}

/// `ip[:port]` as a Host header, with the port left out when it is the scheme's default.
pub(super) fn authority(ip: &str, port: u16, scheme: &str) -> String {
    let ip = match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => ip.to_string(),
    };
    let default = if scheme == "https" { 443 } else { 80 };
    if port == default {
        ip
    } else {
        format!("{ip}:{port}")
    }
}

/// reqwest is built with `rustls-no-provider` so that the TLS stack is rustls over ring: the
/// default provider, aws-lc-rs, needs a C and cmake build. Without a process-wide provider
/// reqwest panics when it builds a client, so ring is installed once here; if some other part of
/// the process installed a provider first, that one is kept and used.
pub(super) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A resolver that answers every name with the probe target (see `http_prober`).
pub(super) struct ToTarget(SocketAddr);

impl reqwest::dns::Resolve for ToTarget {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addrs: reqwest::dns::Addrs = Box::new(std::iter::once(self.0));
        Box::pin(std::future::ready(Ok(addrs)))
    }
}

pub(super) async fn http_once(
    client: &reqwest::Client,
    url: &reqwest::Url,
    host_header: Option<&str>,
    check: &Check,
) -> Outcome {
    let mut request = client.get(url.clone());
    if let Some(host) = host_header {
        request = request.header(reqwest::header::HOST, host);
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => return describe(&e),
    };
    let status = response.status().as_u16();
    let accepted = if check.expect.is_empty() {
        &[DEFAULT_EXPECT][..]
    } else {
        &check.expect[..]
    };
    if !accepted
        .iter()
        .any(|&(low, high)| (low..=high).contains(&status))
    {
        return Outcome::failed("status", format!("HTTP {status}"));
    }
    let Some(needle) = check.body_contains.as_deref() else {
        return Outcome::passed(format!("HTTP {status}"));
    };
    let mut body: Vec<u8> = Vec::new();
    while !contains(&body, needle.as_bytes()) {
        if body.len() >= BODY_LIMIT {
            return Outcome::failed(
                "body",
                format!("body does not contain {needle:?} in its first 64 KiB"),
            );
        }
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = BODY_LIMIT - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => {
                return Outcome::failed("body", format!("body does not contain {needle:?}"));
            }
            Err(e) => return describe(&e),
        }
    }
    Outcome::passed(format!("HTTP {status}"))
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Turns a reqwest error into a short reason: descriptor exhaustion on our side is unknown,
/// then a TLS error anywhere in the chain wins, else the
/// deepest socket error, else the deepest message.
pub(super) fn describe(err: &reqwest::Error) -> Outcome {
    if let Some(local) = exhaustion(err) {
        return Outcome::unknown(local);
    }
    let errors: Vec<&(dyn std::error::Error + 'static)> = chain(err).collect();
    if let Some(tls) = errors
        .iter()
        .find_map(|e| e.downcast_ref::<rustls::Error>())
    {
        return Outcome::failed("tls", format!("tls: {tls}"));
    }
    let detail = match errors
        .iter()
        .rev()
        .find_map(|e| e.downcast_ref::<std::io::Error>())
    {
        Some(io) => io_detail(io),
        None => innermost(err),
    };
    if err.is_connect() {
        Outcome::failed("connect", format!("connect: {detail}"))
    } else {
        Outcome::failed("http", format!("http: {detail}"))
    }
}

/// Every error in `err`'s chain. An io::Error is opened with `get_ref()`, because its own
/// `source()` skips the error it wraps, and the interesting errors hide there: a certificate
/// error arrives as io::Error(io::Error(rustls::Error)) (hyper-rustls wraps tokio-rustls's).
pub(super) fn chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| {
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        }
    })
}

/// The kind of common socket errors in plain words ("connection refused"), else the message.
pub(super) fn io_detail(err: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match err.kind() {
        kind @ (ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected
        | AddrNotAvailable | HostUnreachable | NetworkUnreachable | BrokenPipe
        | TimedOut | UnexpectedEof) => kind.to_string(),
        _ => err.to_string(),
    }
}

/// The message of the deepest error in a chain: the most specific one.
pub(super) fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    chain(err).last().unwrap_or(err).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_for_ip_literals() {
        assert_eq!(authority("10.0.0.1", 80, "http"), "10.0.0.1");
        assert_eq!(authority("10.0.0.1", 8080, "http"), "10.0.0.1:8080");
        assert_eq!(authority("::1", 443, "https"), "[::1]");
        assert_eq!(authority("::1", 80, "https"), "[::1]:80");
    }

    #[test]
    fn out_of_descriptors_is_unknown_not_a_failure() {
        use std::io::Error;
        for errno in [libc::EMFILE, libc::ENFILE] {
            let outcome = connect_failed(&Error::from_raw_os_error(errno));
            assert!(outcome.unknown && !outcome.ok, "{}", outcome.reason);
            assert_eq!(outcome.failure, Some("local"));
            // Wrapped, as hyper's connector wraps the socket error.
            let wrapped = Error::other(Error::from_raw_os_error(errno));
            assert!(exhaustion(&wrapped).is_some());
        }
        for failure in [
            Error::from_raw_os_error(libc::ECONNREFUSED),
            Error::from_raw_os_error(libc::ETIMEDOUT),
            Error::from_raw_os_error(libc::EHOSTUNREACH),
            Error::other("broken"),
        ] {
            let outcome = connect_failed(&failure);
            assert!(!outcome.unknown && !outcome.ok, "{}", outcome.reason);
            assert_eq!(outcome.failure, Some("connect"));
        }
    }

    #[test]
    fn body_search() {
        assert!(contains(b"all ok", b"ok"));
        assert!(contains(b"", b""));
        assert!(!contains(b"o", b"ok"));
        assert!(!contains(b"degraded", b"ok"));
    }
}
