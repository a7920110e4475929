//! The AF_XDP fast path (feature `xdp`, `[[dns.xdp]]`): UDP queries to the listen addresses
//! arriving on the named interfaces are taken before the kernel's network stack, answered by
//! the same `dns::respond` as on sockets (RRL, cookies, metrics, query log alike), and sent
//! back on the same queue. Everything else (TCP, other ports and addresses, ARP, ICMP,
//! fragments, IP options, UPDATEs) stays the kernel's: the XDP program (`program`) passes it.
//!
//! Per interface: one program (assembled in `program`, attached as a `bpf_link` so it goes
//! away with the process, however it ends), one XSKMAP, and per served receive queue one
//! AF_XDP socket with its own UMEM (`sys`, where every `unsafe` lives) and one worker thread.
//! A worker takes a batch of frames off its RX ring, reads each with `frame::parse`, answers
//! with `respond`, writes the reply frame with `frame::reply` into the query's own UMEM frame
//! and queues it on the TX ring; frames it does not answer go straight back to the fill ring.
//! No allocation per packet: the two buffers are the worker's.

pub mod program;
mod sys;

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{self, Verdict};
use super::{Context, ListenerDied, respond};
use crate::config::XdpConfig;
use crate::metrics::{Transport, XdpCounters};

/// How long an idle worker waits for frames before it looks at the shutdown token.
const POLL: Duration = Duration::from_millis(200);
/// Frames taken off the RX ring at once (copy-mode transmission sends 32 per system call).
const BATCH: u32 = 32;
const ETH_IPV4_UDP: usize = 14 + 20 + 8;
const ETH_IPV6_UDP: usize = 14 + 40 + 8;

/// One interface taken over: the program's link and map (`Keep`) and its sockets.
pub struct Attached {
    pub interface: String,
    /// Served queues, each with its socket (moved into its worker by `spawn`).
    sockets: Vec<(u32, sys::Socket)>,
    /// The bound addresses the program takes queries for (the workers check them again).
    listen: Vec<SocketAddr>,
    /// The largest DNS payload a reply frame may carry on this interface (its MTU).
    max_payload: u16,
    /// "native" or "generic", and whether every socket runs zero-copy (for the metrics).
    mode: &'static str,
    zero_copy: bool,
    keep: Keep,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("interface", &self.interface)
            .field(
                "queues",
                &self.sockets.iter().map(|s| s.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why the AF_XDP path could not start, naming the interface and the step.
fn failed(interface: &str, step: &str, e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            " (needs root, or CAP_NET_ADMIN, CAP_BPF and CAP_NET_RAW)"
        }
        Some(libc::EBUSY | libc::EEXIST) => {
            " (another XDP program is attached: `ip link show dev IF` names it; `ip link set dev IF xdp off` removes one attached by `ip`)"
        }
        Some(libc::EOPNOTSUPP | libc::EINVAL) if step == "attaching the XDP program" => {
            " (the driver may lack native XDP: set mode = \"generic\")"
        }
        _ => "",
    };
    io::Error::new(
        e.kind(),
        format!(
            "AF_XDP on {interface}: {step}: {e}{}",
            hint.replace("IF", interface)
        ),
    )
}

/// Takes over `config.interface`'s queues for UDP queries to `listen` (the bound addresses):
/// loads and attaches the program, opens a socket per queue and puts it in the map.
pub fn attach(config: &XdpConfig, listen: &[SocketAddr]) -> io::Result<Attached> {
    let name = config.interface.as_str();
    let ifindex = sys::ifindex(name).map_err(|e| failed(name, "finding the interface", e))?;
    let queues = if config.queues.is_empty() {
        let count = crate::config::receive_queues(name).unwrap_or(1).max(1);
        (0..count as u32).collect()
    } else {
        config.queues.clone()
    };
    let entries = queues.iter().max().map_or(1, |q| q + 1);
    let map = sys::xsk_map(entries).map_err(|e| failed(name, "creating the XSKMAP", e))?;
    let insns = program::build(listen, map_fd(&map), program::XDP_PASS, sys::RX_ROOM as u16);
    let prog = sys::load(&insns).map_err(|e| failed(name, "loading the XDP program", e))?;
    let flags = if config.generic {
        sys::XDP_FLAGS_SKB_MODE
    } else {
        sys::XDP_FLAGS_DRV_MODE
    };
    // Sockets first, so the program finds them when its first frame arrives.
    let mut sockets = Vec::new();
    for &q in &queues {
        let socket = sys::Socket::open(ifindex, q)
            .map_err(|e| failed(name, &format!("opening the AF_XDP socket of queue {q}"), e))?;
        sys::map_set(&map, q, &socket)
            .map_err(|e| failed(name, &format!("adding queue {q}'s socket to the map"), e))?;
        sockets.push((q, socket));
    }
    let link = sys::attach(&prog, ifindex, flags)
        .map_err(|e| failed(name, "attaching the XDP program", e))?;
    let mtu = std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(1500);
    // The frame holds Ethernet + IP + UDP + DNS; the IP packet must fit the MTU (the reply
    // frame is never fragmented: a larger answer is truncated, and the client retries on TCP).
    let ip_room = mtu.min(sys::FRAME as usize - 14);
    let v6 = listen.iter().any(SocketAddr::is_ipv6);
    let headers = if v6 { ETH_IPV6_UDP } else { ETH_IPV4_UDP } - 14;
    let max_payload = u16::try_from(ip_room.saturating_sub(headers)).unwrap_or(u16::MAX);
    let mode = if config.generic { "generic" } else { "native" };
    let zero_copy = sockets.iter().all(|(_, s)| s.zero_copy);
    tracing::info!(
        interface = name,
        queues = ?queues,
        mode,
        zero_copy,
        max_payload,
        "AF_XDP attached"
    );
    Ok(Attached {
        interface: config.interface.clone(),
        sockets,
        listen: listen.to_vec(),
        max_payload,
        mode,
        zero_copy,
        keep: Keep {
            _link: link,
            _map: map,
            _program: prog,
        },
    })
}

fn map_fd(map: &OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    map.as_raw_fd()
}

/// Starts one worker thread per socket of `attached`.
pub fn spawn(
    attached: Attached,
    ctx: &Context,
    shutdown: &CancellationToken,
    died: &mpsc::Sender<ListenerDied>,
) -> io::Result<(Vec<JoinHandle<()>>, Keep)> {
    let Attached {
        interface,
        sockets,
        listen,
        max_payload,
        mode,
        zero_copy,
        keep,
    } = attached;
    ctx.metrics
        .xdp_attached(&interface, mode, zero_copy, sockets.len());
    let mut threads = Vec::new();
    for (queue, socket) in sockets {
        let mut ctx = Context {
            rrl: ctx.rrl.for_worker(),
            ..ctx.clone()
        };
        ctx.config.udp_max_payload = ctx.config.udp_max_payload.min(max_payload);
        let counters = ctx.metrics.xdp(&interface);
        let (shutdown, died) = (shutdown.clone(), died.clone());
        let listen = listen.clone();
        let name = format!("{interface} queue {queue}");
        threads.push(
            std::thread::Builder::new()
                .name(format!("weir-xdp-{queue}"))
                .spawn(move || {
                    let mut worker = Worker {
                        socket,
                        ctx,
                        listen,
                        counters,
                        answer: Vec::with_capacity(sys::FRAME as usize),
                        reply: Vec::with_capacity(sys::FRAME as usize),
                        kernel_drops: 0,
                    };
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        worker.serve(&shutdown)
                    }));
                    if result.is_err() {
                        let _ = died.blocking_send(ListenerDied {
                            transport: "AF_XDP",
                            addr: name,
                            source: io::Error::other("worker panicked"),
                        });
                    }
                })?,
        );
    }
    Ok((threads, keep))
}

/// What keeps an interface attached while its workers run; dropping it detaches (the link
/// first, then the map and program).
#[allow(missing_debug_implementations, reason = "file descriptors only")]
pub struct Keep {
    _link: OwnedFd,
    _map: OwnedFd,
    _program: OwnedFd,
}

struct Worker {
    socket: sys::Socket,
    ctx: Context,
    listen: Vec<SocketAddr>,
    counters: XdpCounters,
    /// The DNS answer, then the frame around it.
    answer: Vec<u8>,
    reply: Vec<u8>,
    /// The kernel's drop count last read (`kernel_drops` is cumulative).
    kernel_drops: u64,
}

impl Worker {
    fn serve(&mut self, shutdown: &CancellationToken) {
        let mut idle_rounds = 0u32;
        while !shutdown.is_cancelled() {
            let n = self.socket.waiting().min(BATCH);
            if n == 0 {
                self.socket.flush();
                idle_rounds += 1;
                // Reading the kernel's counters is a system call: only when idle, and not on
                // every idle turn.
                if idle_rounds % 16 == 1 {
                    self.count_kernel_drops();
                }
                if !self.socket.sending() {
                    self.socket.wait(POLL);
                }
                continue;
            }
            idle_rounds = 0;
            for i in 0..n {
                self.handle(i);
            }
            self.socket.release(n);
            self.socket.flush();
        }
        self.count_kernel_drops();
    }

    fn count_kernel_drops(&mut self) {
        let now = self.socket.kernel_drops();
        if now > self.kernel_drops {
            self.counters.kernel.inc_by(now - self.kernel_drops);
            self.kernel_drops = now;
        }
    }

    /// Answers the `i`th waiting frame, or gives its frame back.
    fn handle(&mut self, i: u32) {
        let (base, bytes) = self.socket.received(i);
        let taken = bytes.and_then(|b| Some((taken(&self.listen, b)?, b)));
        let Some((d, bytes)) = taken else {
            self.counters.frame.inc();
            self.socket.recycle(base);
            return;
        };
        let payload = &bytes[d.payload.clone()];
        self.answer.clear();
        if !respond(
            &self.ctx,
            payload,
            Transport::Udp,
            d.src.ip(),
            &mut self.answer,
        ) {
            self.counters.query.inc();
            self.socket.recycle(base);
            return;
        }
        if frame::reply(bytes, &d, &self.answer, &mut self.reply).is_none() {
            self.counters.reply.inc();
            return self.socket.recycle(base);
        }
        // `send` gives the frame back itself when the reply does not fit.
        if !self.socket.send(base, &self.reply) {
            self.counters.reply.inc();
            return;
        }
        self.counters.answered.inc();
    }
}

/// The datagram in `frame` weir answers here: a UDP datagram to a listen address
/// (`frame::parse`) that is not an UPDATE (those are the kernel's socket's, as the program
/// decides; one that gets here anyway is dropped).
fn taken(listen: &[SocketAddr], frame: &[u8]) -> Option<frame::Datagram> {
    match frame::parse(frame, |dst| ours(listen, dst)) {
        Verdict::Dns(d) if !super::updates::is_update(&frame[d.payload.clone()]) => Some(d),
        _ => None,
    }
}

/// Whether `dst` is one of the bound addresses (an unspecified address: any of its family).
fn ours(listen: &[SocketAddr], dst: SocketAddr) -> bool {
    listen.iter().any(|l| {
        l.port() == dst.port()
            && (l.ip() == dst.ip() || (l.ip().is_unspecified() && l.is_ipv6() == dst.is_ipv6()))
    })
}

#[cfg(test)]
mod tests;
