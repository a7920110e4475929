//! UDP front end: a fixed set of worker threads per listen address, each blocking on its own
//! SO_REUSEPORT socket (the kernel spreads datagrams across them). No task per datagram and no
//! queue of our own: under overload the kernel's bounded receive buffer drops, memory stays flat
//! and the answers that are sent keep flowing.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Context, ListenerDied, respond};
use crate::metrics::Transport;

/// How often an idle worker looks at the shutdown token.
const POLL: Duration = Duration::from_millis(200);
/// Largest query datagram read; a larger one arrives cut and gets FORMERR.
const MAX_QUERY: usize = 4096;
/// Kernel receive buffer asked for: room for bursts, bounded.
const RECV_BUFFER: usize = 4 << 20;

pub(crate) fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(POLL))?;
    Ok(socket.into())
}

/// Reports the worker's death if it ends by panic, so the process never loses UDP silently.
struct DeathWatch {
    addr: String,
    died: mpsc::Sender<ListenerDied>,
}

impl Drop for DeathWatch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.died.try_send(ListenerDied {
                transport: "UDP",
                addr: self.addr.clone(),
                source: io::Error::other("worker panicked"),
            });
        }
    }
}

pub(crate) fn spawn(
    socket: UdpSocket,
    index: usize,
    ctx: Context,
    shutdown: CancellationToken,
    died: mpsc::Sender<ListenerDied>,
) -> io::Result<JoinHandle<()>> {
    let addr = socket.local_addr()?.to_string();
    std::thread::Builder::new()
        .name(format!("weir-udp-{index}"))
        .spawn(move || {
            let watch = DeathWatch { addr, died };
            if let Err(source) = serve(&socket, &ctx, &shutdown) {
                tracing::error!(addr = %watch.addr, error = %source, "UDP worker stopped");
                let _ = watch.died.blocking_send(ListenerDied {
                    transport: "UDP",
                    addr: watch.addr.clone(),
                    source,
                });
            }
        })
}

fn serve(socket: &UdpSocket, ctx: &Context, shutdown: &CancellationToken) -> io::Result<()> {
    let mut packet = [0u8; MAX_QUERY];
    let mut out = Vec::with_capacity(MAX_QUERY);
    while !shutdown.is_cancelled() {
        let (n, peer) = match socket.recv_from(&mut packet) {
            Ok(got) => got,
            Err(e) if transient(&e) => continue,
            Err(e) => return Err(e),
        };
        out.clear();
        if !respond(ctx, &packet[..n], Transport::Udp, &mut out) {
            continue;
        }
        // A full send buffer or an unreachable client loses this answer only.
        if socket.send_to(&out, peer).is_err() {
            ctx.metrics.send_failed(Transport::Udp);
        }
    }
    Ok(())
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}
