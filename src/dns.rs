//! The DNS protocol edge: sockets (UDP worker threads, TCP tasks), the wire format and the
//! zone-file reader. The only module that names hickory types. Reads the published snapshot once
//! per query; never locks, never awaits anything but socket I/O, never writes state.

pub mod tcp;
pub mod udp;
pub mod wire;
pub mod zonefile;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::DnsConfig;
use crate::metrics::{Metrics, Transport};
use crate::snapshot::{self, Client, Question, Snapshot};
use wire::{CLASSIC_UDP_LIMIT, Reject};

/// Largest DNS message over TCP (RFC 1035 4.2.2: two-byte length).
const TCP_LIMIT: usize = 65535;

/// Everything a DNS worker shares with the rest of the process.
#[derive(Clone, Debug)]
pub struct Context {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub config: DnsConfig,
}

/// Answers one packet from `client` into `out` (appending). Returns false when the packet is
/// dropped.
pub fn respond(
    ctx: &Context,
    packet: &[u8],
    transport: Transport,
    client: IpAddr,
    out: &mut Vec<u8>,
) -> bool {
    let q = match wire::parse_query(packet) {
        Ok(q) => q,
        Err(Reject::Drop(reason)) => {
            ctx.metrics.dropped(reason);
            return false;
        }
        Err(Reject::Header {
            id,
            opcode,
            rd,
            rcode,
        }) => {
            wire::write_reject(out, id, opcode, rd, rcode);
            ctx.metrics.answered(transport, rcode, false);
            return true;
        }
    };
    ctx.metrics.query(q.qtype);
    let udp_payload = ctx.config.udp_max_payload;
    let limit = match (transport, q.edns) {
        (Transport::Tcp, _) => TCP_LIMIT,
        (Transport::Udp, None) => CLASSIC_UDP_LIMIT,
        // min(client buffer, our cap): answers never need IP fragmentation (DNS Flag Day 2020).
        (Transport::Udp, Some(edns)) => usize::from(edns.payload.min(udp_payload)),
    };
    let snapshot = ctx.snapshot.load();
    let answer = match q.edns {
        // RFC 6891 6.1.3: a version we do not implement gets BADVERS and no data.
        Some(edns) if edns.version > 0 => snapshot::Answer {
            rcode: crate::model::Rcode::BadVers,
            ..snapshot::Answer::refused()
        },
        _ => snapshot::answer(
            &snapshot,
            Question {
                name: q.qname(),
                qtype: q.qtype,
                qclass: q.qclass,
                client: Client {
                    addr: client,
                    ecs: q.ecs,
                },
            },
        ),
    };
    let written = wire::write_response(out, &q, &answer, limit, udp_payload);
    ctx.metrics
        .answered(transport, written.rcode, written.truncated);
    true
}

/// Bound sockets, ready to serve. Binding happens before `run` so the caller learns the real
/// ports (tests bind port 0) and bind errors surface before anything starts.
#[derive(Debug)]
pub struct Listeners {
    /// Per listen address, one SO_REUSEPORT socket per UDP worker.
    pub udp: Vec<Vec<std::net::UdpSocket>>,
    pub tcp: Vec<std::net::TcpListener>,
}

impl Listeners {
    /// The bound addresses (UDP and TCP share each).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

/// Binds every configured address for UDP and TCP on the same port. With port 0 the UDP port is
/// chosen first and TCP follows it, retrying a few times if that port is taken for TCP.
pub fn bind(config: &DnsConfig) -> io::Result<Listeners> {
    let workers = match config.udp_workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for &addr in &config.listen {
        let mut attempt = 0;
        let (sockets, listener) = loop {
            attempt += 1;
            let first = udp::bind(addr)?;
            let port_addr = first.local_addr()?;
            let listener = match tcp::bind(port_addr) {
                Ok(l) => l,
                Err(e) if addr.port() == 0 && attempt < 8 => {
                    tracing::debug!(error = %e, "TCP port taken, choosing another");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut sockets = vec![first];
            for _ in 1..workers {
                sockets.push(udp::bind(port_addr)?);
            }
            break (sockets, listener);
        };
        udp.push(sockets);
        tcp.push(listener);
    }
    Ok(Listeners { udp, tcp })
}

/// Serves until `shutdown` is cancelled. Returns an error if a listener dies, so the process
/// goes down loudly instead of silently losing a transport.
pub async fn run(
    listeners: Listeners,
    ctx: Context,
    shutdown: CancellationToken,
) -> Result<(), ListenerDied> {
    let (died_tx, mut died_rx) = tokio::sync::mpsc::channel::<ListenerDied>(16);
    let mut threads = Vec::new();
    for sockets in listeners.udp {
        for (i, socket) in sockets.into_iter().enumerate() {
            threads.push(udp::spawn(
                socket,
                i,
                ctx.clone(),
                shutdown.clone(),
                died_tx.clone(),
            )?);
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(ctx.config.tcp_max_connections));
    for listener in listeners.tcp {
        let listener = tcp::Listener::new(listener, connections.clone(), ctx.clone())?;
        let (shutdown, died_tx) = (shutdown.clone(), died_tx.clone());
        tasks.spawn(async move {
            if let Err(e) = listener.run(shutdown).await {
                let _ = died_tx.send(e).await;
            }
        });
    }
    drop(died_tx);
    let result = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        Some(died) = died_rx.recv() => Err(died),
    };
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    // UDP workers notice the cancellation within their receive timeout.
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await
    .ok();
    // Wait for open TCP connections to finish their current exchange.
    let _ = connections
        .acquire_many(ctx.config.tcp_max_connections as u32)
        .await;
    result
}

/// A listener that stopped for good.
#[derive(Debug, thiserror::Error)]
#[error("{transport} listener on {addr} died: {source}")]
pub struct ListenerDied {
    pub transport: &'static str,
    pub addr: String,
    #[source]
    pub source: io::Error,
}

impl From<io::Error> for ListenerDied {
    fn from(source: io::Error) -> Self {
        ListenerDied {
            transport: "DNS",
            addr: "?".into(),
            source,
        }
    }
}
