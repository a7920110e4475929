//! Local test backends for health checks, on 127.0.0.1 port 0 (or a given address): a
//! hand-rolled HTTP/1.1 server whose behaviour can change at runtime (a status and body,
//! alternating statuses, or a blackhole that accepts and never replies), the same over TLS with
//! a self-signed certificate, and a plain TCP listener. Each can be stopped (its port closed) and
//! started again on the same port. They run as tasks of the test's own runtime, so a paused
//! tokio clock only advances when both the probe and the backend are idle.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// What an HTTP backend does with each request.
#[derive(Clone, Debug)]
pub(crate) enum Behavior {
    /// Answers every request with this status and body (a 3xx also gets `Location: /moved`).
    Respond { status: u16, body: String },
    /// Answers `good`, then `bad`, then `good`... one status per request.
    Alternate { good: u16, bad: u16 },
    /// Reads the request and never answers; the connection stays open until the backend stops.
    Blackhole,
}

/// One request as the backend saw it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) host: Option<String>,
    /// The TLS server name the client sent (https only).
    pub(crate) sni: Option<String>,
    /// The status answered; None when blackholed.
    pub(crate) status: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Tcp,
    Http,
    Https,
}

#[derive(Debug)]
struct State {
    behavior: Behavior,
    seen: Vec<Seen>,
    /// TCP: connections accepted. HTTP(S): requests read.
    accepted: usize,
    tls_failures: usize,
}

/// A local backend. Dropping it stops it.
pub(crate) struct Backend {
    addr: SocketAddr,
    protocol: Protocol,
    tls: Option<TlsAcceptor>,
    state: Arc<Mutex<State>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("addr", &self.addr)
            .field("protocol", &self.protocol)
            .field("running", &self.task.is_some())
            .finish()
    }
}

impl Backend {
    /// An HTTP/1.1 backend answering 200 "ok".
    pub(crate) async fn http() -> Backend {
        Backend::bind(Protocol::Http, None).await
    }

    /// An HTTPS backend answering 200 "ok", with a self-signed certificate for `names` (DNS
    /// names or IP addresses) that no system trusts.
    pub(crate) async fn https(names: &[&str]) -> Backend {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = certified.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        // The provider is passed explicitly so the backend does not depend on (or set) the
        // process-wide default that the probes install.
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        Backend::bind(Protocol::Https, Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    /// A plain TCP listener that accepts and closes each connection.
    pub(crate) async fn tcp() -> Backend {
        Backend::bind(Protocol::Tcp, None).await
    }

    /// An HTTP/1.1 backend on a given address (another loopback address than 127.0.0.1, or a
    /// port other backends share), answering 200 `body`.
    pub(crate) async fn http_at(addr: SocketAddr, body: &str) -> Backend {
        let backend = Backend::bind_at(addr, Protocol::Http, None).await;
        backend.respond(200, body);
        backend
    }

    async fn bind(protocol: Protocol, tls: Option<TlsAcceptor>) -> Backend {
        Backend::bind_at("127.0.0.1:0".parse().unwrap(), protocol, tls).await
    }

    async fn bind_at(addr: SocketAddr, protocol: Protocol, tls: Option<TlsAcceptor>) -> Backend {
        let state = State {
            behavior: Behavior::Respond {
                status: 200,
                body: "ok".into(),
            },
            seen: Vec::new(),
            accepted: 0,
            tls_failures: 0,
        };
        let listener = listen(addr);
        let mut backend = Backend {
            addr: listener.local_addr().unwrap(),
            protocol,
            tls,
            state: Arc::new(Mutex::new(state)),
            task: None,
        };
        backend.serve(listener);
        backend
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn set(&self, behavior: Behavior) {
        self.state.lock().unwrap().behavior = behavior;
    }

    pub(crate) fn respond(&self, status: u16, body: &str) {
        self.set(Behavior::Respond {
            status,
            body: body.into(),
        });
    }

    /// TCP: connections accepted; HTTP(S): requests read (answered or not).
    pub(crate) fn requests(&self) -> usize {
        self.state.lock().unwrap().accepted
    }

    /// Responses sent with `status`.
    pub(crate) fn served(&self, status: u16) -> usize {
        let state = self.state.lock().unwrap();
        state
            .seen
            .iter()
            .filter(|s| s.status == Some(status))
            .count()
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// HTTPS: handshakes that failed (for instance because the client rejected the certificate).
    pub(crate) fn tls_failures(&self) -> usize {
        self.state.lock().unwrap().tls_failures
    }

    /// Closes the listening socket and every open connection: new connections are refused.
    /// Waits until the listener is really closed, so the port can be bound again at once.
    pub(crate) async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub(crate) async fn start(&mut self) {
        self.stop().await;
        let listener = listen(self.addr);
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let protocol = self.protocol;
        let tls = self.tls.clone();
        let state = Arc::clone(&self.state);
        self.task = Some(tokio::spawn(async move {
            // Connections live in this set, so aborting the accept task closes them all.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let state = Arc::clone(&state);
                match protocol {
                    Protocol::Tcp => {
                        state.lock().unwrap().accepted += 1;
                        drop(stream);
                    }
                    Protocol::Http => {
                        connections.spawn(exchange(stream, None, state));
                    }
                    Protocol::Https => {
                        let Some(tls) = tls.clone() else { continue };
                        connections.spawn(async move {
                            match tls.accept(stream).await {
                                Ok(stream) => {
                                    let sni = stream.get_ref().1.server_name().map(String::from);
                                    exchange(stream, sni, state).await;
                                }
                                Err(_) => state.lock().unwrap().tls_failures += 1,
                            }
                        });
                    }
                }
            }
        }));
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A listener with SO_REUSEADDR, so a stopped backend can take its port back while the old
/// connections sit in TIME_WAIT.
fn listen(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(64).unwrap()
}

/// Reads one request's head and answers it as the current behaviour says, then closes.
async fn exchange<S>(mut stream: S, sni: Option<String>, state: Arc<Mutex<State>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or_default()
        .to_string();
    let host = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("host")
            .then(|| value.trim().to_string())
    });
    let reply = {
        let mut state = state.lock().unwrap();
        let reply = match &state.behavior {
            Behavior::Respond { status, body } => Some((*status, body.clone())),
            Behavior::Alternate { good, bad } => {
                let status = if state.accepted.is_multiple_of(2) {
                    *good
                } else {
                    *bad
                };
                Some((status, String::new()))
            }
            Behavior::Blackhole => None,
        };
        state.accepted += 1;
        state.seen.push(Seen {
            path,
            host,
            sni,
            status: reply.as_ref().map(|(status, _)| *status),
        });
        reply
    };
    let Some((status, body)) = reply else {
        // Hold the connection open without a word until the backend stops.
        std::future::pending::<()>().await;
        return;
    };
    let location = if (300..400).contains(&status) {
        "Location: /moved\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {status} Status\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         {location}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Opens and closes a plain connection: for checking a stopped backend really refuses.
pub(crate) async fn connects(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_ok()
}
