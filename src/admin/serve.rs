//! The admin API's transport: the accept loop, connection caps (global and per source, with
//! the connection idle longest evicted when the global cap is reached), TLS handshakes (rustls
//! on ring) in per-connection tasks with a deadline, HTTP/1.1 with a header-read deadline, a
//! deadline on stalled writes, and the client address (`Peer`) each request carries into the
//! audit log. Nothing a client does (or does not do) on one connection can stop the accept
//! loop. Connections in the middle of a request are bounded by the deadlines in `admin`
//! (body 10 s, request 60 s), not evicted.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The client's address, for the audit log (works for plain and TLS listeners).
#[derive(Clone, Copy, Debug)]
pub(super) struct Peer(pub(super) SocketAddr);

/// Loads a PEM certificate chain and private key into a TLS acceptor.
pub(crate) fn tls_acceptor(
    files: &crate::config::TlsFiles,
) -> Result<tokio_rustls::TlsAcceptor, String> {
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

/// Connections held open at once, all sources together. At the cap, the connection that has
/// been idle longest (connected or answered, and no request since) is closed to make room, so
/// idle or silent connections can never lock out a prober; a connection in the middle of a
/// request is never evicted.
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// Connections held open at once from one source (an IPv4 address or an IPv6 /64): one
/// client cannot evict everyone else's connections. Beyond it a connection is closed at once.
pub(super) const MAX_PER_SOURCE: usize = 64;
/// How long a client has to send a complete request head (from connect, or after the last
/// response on a kept-alive connection). Slowloris and idle connections end here.
pub(super) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TLS handshake may take, from accept.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write may stall (a client that does not read its answers) before the
/// connection is closed.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish their request at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Counts connections globally and per source and orders the idle ones (the eviction
/// candidates) by how long they have been idle.
#[derive(Debug)]
struct Tracker {
    max_total: usize,
    max_per_source: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Connection ids and idle stamps, from one counter.
    next: u64,
    /// Every admitted connection still counted, by id.
    live: HashMap<u64, Conn>,
    per_source: HashMap<IpAddr, usize>,
    /// Idle connections by the stamp taken when they went idle, oldest first.
    idle: BTreeMap<u64, u64>,
}

#[derive(Debug)]
struct Conn {
    source: IpAddr,
    /// Cancelled to evict the connection.
    close: CancellationToken,
    /// Its key in `idle` while idle.
    idle_since: Option<u64>,
}

/// Why a connection was turned away.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    PerSource,
    Full,
}

impl Inner {
    fn stamp(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Stops counting `id` (no-op when it is no longer counted).
    fn forget(&mut self, id: u64) {
        let Some(conn) = self.live.remove(&id) else {
            return;
        };
        if let Some(stamp) = conn.idle_since {
            self.idle.remove(&stamp);
        }
        if let Some(n) = self.per_source.get_mut(&conn.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&conn.source);
            }
        }
    }

    fn set_idle(&mut self, id: u64, idle: bool) {
        let stamp = if idle { Some(self.stamp()) } else { None };
        let Some(conn) = self.live.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut conn.idle_since, stamp);
        if let Some(old) = old {
            self.idle.remove(&old);
        }
        if let Some(stamp) = stamp {
            self.idle.insert(stamp, id);
        }
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

    /// Admits a connection from `ip` (idle until its first request), evicting the longest
    /// idle one at the global cap.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let source = source(ip);
        let mut inner = self.lock();
        if inner.per_source.get(&source).copied().unwrap_or(0) >= self.max_per_source {
            return Err(Refused::PerSource);
        }
        if inner.live.len() >= self.max_total {
            let Some((_, &oldest)) = inner.idle.first_key_value() else {
                return Err(Refused::Full);
            };
            if let Some(conn) = inner.live.get(&oldest) {
                conn.close.cancel();
            }
            inner.forget(oldest);
        }
        let id = inner.stamp();
        let close = CancellationToken::new();
        inner.live.insert(
            id,
            Conn {
                source,
                close: close.clone(),
                idle_since: None,
            },
        );
        *inner.per_source.entry(source).or_insert(0) += 1;
        inner.set_idle(id, true);
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
    /// A request arrived (`false`: not evictable) or was answered (`true`: evictable again).
    fn idle(&self, idle: bool) {
        self.tracker.lock().set_idle(self.id, idle);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.tracker.lock().forget(self.id);
    }
}

/// A connection's I/O with a deadline on stalled writes: a client that stops reading its
/// answers gets the connection closed after `WRITE_TIMEOUT` instead of holding it forever.
struct Stall<I> {
    io: I,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Whether `deadline` runs (a write is waiting).
    armed: bool,
}

impl<I> Stall<I> {
    fn new(io: I) -> Self {
        Stall {
            io,
            deadline: Box::pin(tokio::time::sleep(WRITE_TIMEOUT)),
            armed: false,
        }
    }

    /// Turns a pending write into an error once it has waited `WRITE_TIMEOUT`.
    fn stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.armed = false;
            return polled;
        }
        if !self.armed {
            self.armed = true;
            self.deadline
                .as_mut()
                .reset(tokio::time::Instant::now() + WRITE_TIMEOUT);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Stall<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Stall<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.stalled(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.stalled(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.stalled(cx, polled)
    }
}

/// Niceness of the admin API's own thread (accepting, TLS, HTTP, JSON, refusals): under CPU
/// contention the scheduler gives it about a tenth of the weight of DNS workers, the writer and
/// probes (CFS weights 110 and 1024), enough that `/healthz` answers during a DNS flood.
const ADMIN_NICE: libc::c_int = 10;

/// Puts the admin API's thread at `ADMIN_NICE`. Failure leaves it at normal priority, which is
/// only less polite.
pub(crate) fn lower_this_thread() {
    // SAFETY: gettid and setpriority on this thread's own id; no memory is involved.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, ADMIN_NICE);
    }
}

/// Puts the calling thread in SCHED_IDLE: it runs only on CPU nothing else wants, and a DNS
/// worker that wakes takes the CPU from it at once (a nice level only lowers its share, and a
/// DNS worker woken behind a long-running preview still waits for its slice). For admin work
/// that may take seconds of CPU: previews and audit pages (bench/admin-hammer.py). Failure
/// falls back to `lower_this_thread`.
pub(crate) fn idle_this_thread() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        lower_this_thread();
    }
}

/// Where the admin API runs. The binary gives it a thread of its own; tests that drive weir
/// in-process on tokio's paused clock keep it on their runtime so that it sees their clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On the caller's runtime, at normal priority.
    Shared,
    /// On a single-threaded runtime in a thread of its own at `ADMIN_NICE`: accepting, TLS,
    /// HTTP parsing, JSON and refusals over the caps then take CPU from DNS workers, the writer
    /// and probes only when they leave it idle (bench/admin-hammer.py).
    OwnThread,
}

/// `run` where `placement` says; the handle ends when the server does.
pub(crate) fn spawn(
    placement: Placement,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    shutdown: CancellationToken,
) -> io::Result<tokio::task::JoinHandle<io::Result<()>>> {
    if placement == Placement::Shared {
        return Ok(tokio::spawn(run(listener, tls, router, shutdown)));
    }
    // A listener belongs to the runtime that registered it; the admin runtime registers it anew.
    let listener = listener.into_std()?;
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("weir-admin".into())
        .spawn(move || {
            lower_this_thread();
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|runtime| {
                    let result = runtime.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        run(listener, tls, router, shutdown).await
                    });
                    // Requests still running past DRAIN (a stuck write) must not hold shutdown.
                    runtime.shutdown_timeout(DRAIN);
                    result
                });
            let _ = done.send(result);
        })?;
    Ok(tokio::spawn(async move {
        finished
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the admin thread panicked")))
    }))
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown`, with the default caps.
pub(crate) async fn run(
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
    let stream = Stall::new(stream);
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
        slot.idle(false);
        request.extensions_mut().insert(ConnectInfo(Peer(peer)));
        let mut router = router.clone();
        let slot = slot.clone();
        async move {
            let response =
                tower::Service::call(&mut router, request.map(axum::body::Body::new)).await;
            // The body may still be on its way out; at the cap that is worth less than a
            // new client (and the write deadline bounds it anyway).
            slot.idle(true);
            response
        }
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
    fn global_cap_evicts_the_connection_idle_longest() {
        let t = Tracker::new(3, 10);
        let first = t.admit(ip("192.0.2.1")).unwrap();
        let second = t.admit(ip("192.0.2.2")).unwrap();
        let third = t.admit(ip("192.0.2.3")).unwrap();
        first.idle(false);
        let fourth = t.admit(ip("192.0.2.4")).unwrap();
        assert!(
            !first.close.is_cancelled(),
            "a connection in a request stays"
        );
        assert!(second.close.is_cancelled(), "the longest idle one goes");
        assert!(!third.close.is_cancelled());
        assert_eq!(t.count(), 3);
        drop(second); // its task ends later; it must not be uncounted twice
        assert_eq!(t.count(), 3);
        third.idle(false);
        fourth.idle(false);
        assert_eq!(t.admit(ip("192.0.2.5")).unwrap_err(), Refused::Full);
        // Answered: idle again, ordered from the answer on.
        fourth.idle(true);
        first.idle(true);
        let _fifth = t.admit(ip("192.0.2.5")).unwrap();
        assert!(fourth.close.is_cancelled());
        assert!(!first.close.is_cancelled());
        drop(first);
        assert!(t.admit(ip("192.0.2.6")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_fails_after_the_deadline() {
        use tokio::io::AsyncWriteExt;
        let (client, server) = tokio::io::duplex(64);
        let mut stalled = Stall::new(server);
        let started = tokio::time::Instant::now();
        let err = stalled.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), WRITE_TIMEOUT);
        drop(client);
    }
}
