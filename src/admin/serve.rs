//! The admin API's transport: the accept loop, connection caps (global and per source, with
//! the oldest connection that has not yet sent a request evicted when the global cap is
//! reached), TLS handshakes (rustls on ring) in per-connection tasks with a deadline, HTTP/1.1
//! with a header-read deadline, and the client address (`Peer`) each request carries into the
//! audit log. Nothing a client does (or does not do) on one connection can stop the accept loop.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The client's address, for the audit log (works for plain and TLS listeners).
#[derive(Clone, Copy, Debug)]
pub(super) struct Peer(pub(super) SocketAddr);

/// Loads a PEM certificate chain and private key into a TLS acceptor.
pub fn tls_acceptor(files: &crate::config::TlsFiles) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: {e}", files.key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("{}: {e}", files.key.display()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Connections held open at once, all sources together. At the cap, the oldest connection
/// that has not sent a request yet is closed to make room, so idle or silent connections
/// can never lock out a prober; connections that have sent a request are never evicted.
pub(super) const MAX_CONNECTIONS: usize = 1024;
/// Connections held open at once from one source (an IPv4 address or an IPv6 /64): one
/// client cannot evict everyone else's connections. Beyond it a connection is closed at once.
pub(super) const MAX_PER_SOURCE: usize = 64;
/// How long a client has to send a complete request head (from connect, or after the last
/// response on a kept-alive connection). Slowloris and idle connections end here.
pub(super) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TLS handshake may take, from accept.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long open connections get to finish their request at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Counts connections globally and per source and remembers which ones have not yet sent a
/// request (the eviction candidates, oldest first).
#[derive(Debug)]
struct Tracker {
    max_total: usize,
    max_per_source: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    /// Every admitted connection still counted, by id.
    live: HashMap<u64, IpAddr>,
    per_source: HashMap<IpAddr, usize>,
    /// Connections with no request yet, oldest first, with the token that closes them.
    fresh: BTreeMap<u64, CancellationToken>,
}

/// Why a connection was turned away.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    PerSource,
    Full,
}

impl Inner {
    /// Stops counting `id`; true when it was still counted.
    fn forget(&mut self, id: u64) -> bool {
        self.fresh.remove(&id);
        let Some(source) = self.live.remove(&id) else {
            return false;
        };
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
        true
    }
}

/// What a per-source cap counts: IPv4 addresses, IPv6 /64s (one host usually holds a
/// whole /64), IPv4-mapped IPv6 as IPv4.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

impl Tracker {
    fn new(max_total: usize, max_per_source: usize) -> Arc<Tracker> {
        Arc::new(Tracker {
            max_total,
            max_per_source,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a connection from `ip`, evicting the oldest request-less one at the global cap.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let source = source(ip);
        let mut inner = self.lock();
        if inner.per_source.get(&source).copied().unwrap_or(0) >= self.max_per_source {
            return Err(Refused::PerSource);
        }
        if inner.live.len() >= self.max_total {
            let Some((&oldest, _)) = inner.fresh.first_key_value() else {
                return Err(Refused::Full);
            };
            if let Some(token) = inner.fresh.get(&oldest) {
                token.cancel();
            }
            inner.forget(oldest);
        }
        let id = inner.next;
        inner.next += 1;
        let close = CancellationToken::new();
        inner.live.insert(id, source);
        *inner.per_source.entry(source).or_insert(0) += 1;
        inner.fresh.insert(id, close.clone());
        Ok(Slot {
            id,
            close,
            tracker: self.clone(),
        })
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.lock().live.len()
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
struct Slot {
    id: u64,
    /// Cancelled when the connection is evicted.
    close: CancellationToken,
    tracker: Arc<Tracker>,
}

impl Slot {
    /// The connection sent a request: it is no longer an eviction candidate.
    fn requested(&self) {
        self.tracker.lock().fresh.remove(&self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.tracker.lock().forget(self.id);
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown`, with the default caps.
pub async fn run(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tracker = Tracker::new(MAX_CONNECTIONS, MAX_PER_SOURCE);
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a connection reset before accept:
                // back off briefly rather than spin, and keep accepting.
                tracing::debug!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match tracker.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(%peer, ?why, "admin connection refused");
                drop(stream);
                continue;
            }
        };
        let (tls, router, shutdown) = (tls.clone(), router.clone(), shutdown.clone());
        tasks.spawn(connection(stream, peer, tls, router, slot, shutdown));
    }
    drop(listener);
    // Connections finish the request they are in (idle ones close at once), within DRAIN.
    let _ = tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    Ok(())
}

/// One connection: the TLS handshake (if any) within its deadline, then HTTP/1.1, until the
/// client is done, the connection is evicted, or shutdown.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    slot: Slot,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let slot = Arc::new(slot);
    match tls {
        None => http(stream, peer, router, slot, shutdown).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let stream = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    _ => return,
                },
                () = slot.close.cancelled() => return,
                () = shutdown.cancelled() => return,
            };
            http(stream, peer, router, slot, shutdown).await;
        }
    }
}

async fn http<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    slot: Arc<Slot>,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let close = slot.close.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        slot.requested();
        request.extensions_mut().insert(ConnectInfo(Peer(peer)));
        let mut router = router.clone();
        async move { tower::Service::call(&mut router, request.map(axum::body::Body::new)).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = close.cancelled() => {}
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, conn).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn per_source_cap_counts_v4_addresses_and_v6_prefixes() {
        let t = Tracker::new(100, 2);
        let a = t.admit(ip("192.0.2.1")).unwrap();
        let _b = t.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(t.admit(ip("192.0.2.1")).unwrap_err(), Refused::PerSource);
        assert!(t.admit(ip("192.0.2.2")).is_ok());
        drop(a);
        assert!(t.admit(ip("192.0.2.1")).is_ok());
        let _c = t.admit(ip("2001:db8::1")).unwrap();
        let _d = t.admit(ip("2001:db8::ffff:2")).unwrap();
        assert_eq!(t.admit(ip("2001:db8::3")).unwrap_err(), Refused::PerSource);
        assert!(t.admit(ip("2001:db8:0:1::1")).is_ok());
    }

    #[test]
    fn global_cap_evicts_the_oldest_connection_without_a_request() {
        let t = Tracker::new(3, 10);
        let first = t.admit(ip("192.0.2.1")).unwrap();
        let second = t.admit(ip("192.0.2.2")).unwrap();
        let third = t.admit(ip("192.0.2.3")).unwrap();
        first.requested();
        let fourth = t.admit(ip("192.0.2.4")).unwrap();
        assert!(
            !first.close.is_cancelled(),
            "a connection that sent a request stays"
        );
        assert!(
            second.close.is_cancelled(),
            "the oldest request-less one goes"
        );
        assert!(!third.close.is_cancelled());
        assert_eq!(t.count(), 3);
        drop(second); // its task ends later; it must not be uncounted twice
        assert_eq!(t.count(), 3);
        third.requested();
        fourth.requested();
        assert_eq!(t.admit(ip("192.0.2.5")).unwrap_err(), Refused::Full);
        drop(first);
        assert!(t.admit(ip("192.0.2.5")).is_ok());
    }
}
