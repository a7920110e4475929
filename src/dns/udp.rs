//! UDP front end: a fixed set of worker threads per listen address, each blocking on its own
//! SO_REUSEPORT socket (the kernel spreads datagrams across them). No task per datagram and no
//! queue of our own (each worker batches with recvmmsg/sendmmsg): under overload the kernel's bounded receive buffer drops, memory stays flat
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

/// Datagrams moved per system call: `recvmmsg` returns up to this many waiting queries at once
/// and `sendmmsg` sends their answers together (as gdnsd does). Profiling showed ~90% of a
/// worker's time in the kernel, so system calls per packet are the cost that matters.
const BATCH: usize = 32;

/// The buffers of one worker, allocated once.
struct Batch {
    packets: Box<[[u8; MAX_QUERY]; BATCH]>,
    peers: [libc::sockaddr_storage; BATCH],
    iovecs: [libc::iovec; BATCH],
    headers: [libc::mmsghdr; BATCH],
    answers: Vec<Vec<u8>>,
    /// For each answer to send, the index of the datagram it answers.
    reply_to: Vec<usize>,
}

impl Batch {
    fn new() -> Box<Self> {
        // SAFETY: all-zero is a valid value for these plain C structs (null pointers, zero lengths).
        let zeroed = unsafe { std::mem::zeroed::<[libc::mmsghdr; BATCH]>() };
        Box::new(Batch {
            packets: Box::new([[0; MAX_QUERY]; BATCH]),
            // SAFETY: as above.
            peers: unsafe { std::mem::zeroed() },
            iovecs: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH],
            headers: zeroed,
            answers: (0..BATCH).map(|_| Vec::with_capacity(MAX_QUERY)).collect(),
            reply_to: Vec::with_capacity(BATCH),
        })
    }

    /// Blocks until at least one datagram arrives (or the socket's receive timeout passes) and
    /// takes every datagram already waiting, up to `BATCH`.
    fn receive(&mut self, fd: libc::c_int) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec {
                iov_base: self.packets[i].as_mut_ptr().cast(),
                iov_len: MAX_QUERY,
            };
            let h = &mut self.headers[i].msg_hdr;
            h.msg_name = (&raw mut self.peers[i]).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &raw mut self.iovecs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` that outlive the call, with
        // their true lengths; the kernel writes at most those lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn packet(&self, i: usize) -> &[u8] {
        let len = (self.headers[i].msg_len as usize).min(MAX_QUERY);
        &self.packets[i][..len]
    }

    fn peer(&self, i: usize) -> Option<SocketAddr> {
        let storage = &self.peers[i];
        match i32::from(storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in; storage is larger
                // and suitably aligned for it.
                let a = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for sockaddr_in6.
                let a = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::from((ip, u16::from_be(a.sin6_port))))
            }
            _ => None,
        }
    }

    /// Sends `count` answers, each to the peer of the datagram it answers. Returns how many
    /// could not be sent.
    fn send(&mut self, fd: libc::c_int, count: usize) -> usize {
        for k in 0..count {
            let i = self.reply_to[k];
            self.iovecs[k] = libc::iovec {
                iov_base: self.answers[k].as_mut_ptr().cast(),
                iov_len: self.answers[k].len(),
            };
            let namelen = self.headers[i].msg_hdr.msg_namelen;
            let h = &mut self.headers[k].msg_hdr;
            h.msg_name = (&raw mut self.peers[i]).cast();
            h.msg_namelen = namelen;
            h.msg_iov = &raw mut self.iovecs[k];
            h.msg_iovlen = 1;
        }
        let mut sent = 0;
        let mut failed = 0;
        while sent < count {
            // SAFETY: headers[sent..count] point at live answer buffers and peer addresses.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.headers[sent..].as_mut_ptr(),
                    (count - sent) as libc::c_uint,
                    0,
                )
            };
            if n <= 0 {
                // The first unsent answer cannot go out (full buffer, unreachable peer): skip it.
                failed += 1;
                sent += 1;
            } else {
                sent += n as usize;
            }
        }
        failed
    }
}

fn serve(socket: &UdpSocket, ctx: &Context, shutdown: &CancellationToken) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let mut batch = Batch::new();
    while !shutdown.is_cancelled() {
        // Note: receive() rewrites the headers that send() reused for the previous batch.
        let n = match batch.receive(fd) {
            Ok(n) => n,
            Err(e) if transient(&e) => continue,
            Err(e) => return Err(e),
        };
        batch.reply_to.clear();
        let mut count = 0;
        for i in 0..n {
            let Some(peer) = batch.peer(i) else {
                continue;
            };
            let mut out = std::mem::take(&mut batch.answers[count]);
            out.clear();
            let packet = batch.packet(i);
            let answered = if super::updates::is_update(packet) {
                super::updates::queue_udp(ctx, packet, peer, socket, &mut out)
            } else {
                respond(ctx, packet, Transport::Udp, peer.ip(), &mut out)
            };
            batch.answers[count] = out;
            if answered {
                batch.reply_to.push(i);
                count += 1;
            }
        }
        // Answers are compacted to the front, so headers[k] for k < count never overlaps a
        // datagram header still needed: reply_to[k] >= k.
        for _ in 0..batch.send(fd, count) {
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
