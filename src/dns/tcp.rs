//! TCP front end (RFC 7766): two-byte length framing, several queries per connection answered
//! in order (pipelining), an idle timeout between queries, an I/O timeout for a message once it
//! has started, and a cap on concurrent connections (over the cap, new connections are closed
//! at once). A slow or half-sent message costs only its own connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::{Context, ListenerDied, respond};
use crate::metrics::Transport;

pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

pub(crate) struct Listener {
    listener: TcpListener,
    addr: String,
    connections: Arc<Semaphore>,
    ctx: Context,
}

impl Listener {
    pub(crate) fn new(
        listener: std::net::TcpListener,
        connections: Arc<Semaphore>,
        ctx: Context,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?.to_string();
        Ok(Listener {
            listener: TcpListener::from_std(listener)?,
            addr,
            connections,
            ctx,
        })
    }

    pub(crate) async fn run(self, shutdown: CancellationToken) -> Result<(), ListenerDied> {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) if per_connection(&e) => continue,
                Err(e) if out_of_descriptors(&e) => {
                    // Back off instead of spinning; connections in flight free descriptors.
                    tracing::warn!(addr = %self.addr, error = %e, "TCP accept failed, backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(source) => {
                    return Err(ListenerDied {
                        transport: "TCP",
                        addr: self.addr.clone(),
                        source,
                    });
                }
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                self.ctx.metrics.tcp_refused();
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(
                stream,
                peer.ip(),
                permit,
                self.ctx.clone(),
                shutdown.clone(),
            ));
        }
    }
}

/// Errors that concern one incoming connection only (the peer went away before accept).
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

async fn connection(
    stream: TcpStream,
    client: std::net::IpAddr,
    _permit: OwnedSemaphorePermit,
    ctx: Context,
    shutdown: CancellationToken,
) {
    let _open = ctx.metrics.tcp_open();
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut writer = BufWriter::new(write);
    let (idle, io_timeout) = (ctx.config.tcp_idle_timeout, ctx.config.tcp_io_timeout);
    let mut packet = Vec::new();
    let mut out = Vec::new();
    loop {
        // Answers to pipelined queries go out together once no more input is buffered.
        if reader.buffer().is_empty() && timeout(io_timeout, writer.flush()).await.is_err() {
            return;
        }
        let mut len = [0u8; 2];
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            first = timeout(idle, reader.read_exact(&mut len[..1])) => first,
        };
        if !matches!(first, Ok(Ok(_))) {
            return;
        }
        if !matches!(
            timeout(io_timeout, reader.read_exact(&mut len[1..])).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let n = usize::from(u16::from_be_bytes(len));
        if n == 0 {
            return;
        }
        packet.resize(n, 0);
        if !matches!(
            timeout(io_timeout, reader.read_exact(&mut packet)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        if super::xfr::is_transfer(&packet) {
            // A transfer may be megabytes: the I/O timeout applies per message-sized chunk.
            let messages = super::xfr::serve(&ctx, &packet, client).await;
            for chunk in messages.bytes.chunks(2 + super::wire::TCP_LIMIT) {
                if !matches!(
                    timeout(io_timeout, writer.write_all(chunk)).await,
                    Ok(Ok(_))
                ) {
                    return;
                }
            }
            continue;
        }
        out.clear();
        out.extend_from_slice(&[0, 0]);
        let answered = if super::updates::is_update(&packet) {
            super::updates::answer_tcp(&ctx, &packet, client, &mut out).await
        } else {
            respond(&ctx, &packet, Transport::Tcp, client, &mut out)
        };
        if !answered {
            continue;
        }
        let body = (out.len() - 2) as u16;
        out[..2].copy_from_slice(&body.to_be_bytes());
        if !matches!(timeout(io_timeout, writer.write_all(&out)).await, Ok(Ok(_))) {
            return;
        }
    }
}
