//! RFC 2136 UPDATE messages from clients (nsupdate, knsupdate, cert-manager, external-dns):
//! the TSIG signature (`tsig::verify`), the message (`update::parse`), the zone's grants for
//! the key (`update::permitted`), then the writer (`update::Submission`), which applies,
//! stores and publishes before it replies; the answer is signed with the request's key.
//! Never on the query path: a UDP worker hands an UPDATE datagram to one queue (bounded; a
//! full queue drops it, the client retries) served by one task, which answers from a copy of
//! the worker's socket; a TCP connection awaits its answer in place.
//!
//! Answers carry the zone section, the RCODE, and, when the client sent EDNS, an extended DNS
//! error (RFC 8914) whose text says why a refusal happened; every refusal is also logged.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Context;
use crate::metrics::Transport;
use crate::model::{Name, Rcode, rtype};
use crate::tsig;
use crate::update::{self, OPCODE_UPDATE, Submission};

/// Refusals logged per second, about (racing tasks may log a few more): a flood of bad UPDATEs must not flood the log (the
/// metric counts every one).
const LOG_PER_SECOND: u64 = 20;

/// The second of the last refusal logged (high 32 bits) and how many were logged in it.
static LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether another refusal may be logged in this second.
fn may_log() -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let now = crate::clock::wall_secs() & 0xFFFF_FFFF;
    let seen = LOGGED.load(Relaxed);
    let (second, count) = (seen >> 32, seen & 0xFFFF_FFFF);
    let next = if second == now { count + 1 } else { 1 };
    LOGGED.store(now << 32 | next, Relaxed);
    next <= LOG_PER_SECOND
}

/// UPDATE datagrams waiting for the task that answers them.
const UDP_QUEUE: usize = 64;
/// The longest an UPDATE waits for the writer (a store that does not answer: SERVFAIL).
const WRITER_WAIT: Duration = Duration::from_secs(30);
/// EDNS option code of an extended DNS error (RFC 8914 2).
const OPTION_EDE: u16 = 15;
/// RFC 8914 4: info codes used here.
const EDE_OTHER: u16 = 0;
const EDE_PROHIBITED: u16 = 18;
const EDE_NOT_AUTHORITATIVE: u16 = 20;

/// Where UPDATEs go: the writer, and (UDP) the queue of the answering task.
#[derive(Clone, Debug, Default)]
pub struct Updates {
    writer: Option<mpsc::Sender<Submission>>,
    udp: Option<mpsc::Sender<Queued>>,
}

impl Updates {
    /// UPDATEs go to the writer on `writer`.
    pub fn new(writer: mpsc::Sender<Submission>) -> Updates {
        Updates {
            writer: Some(writer),
            udp: None,
        }
    }

    /// No writer: UPDATE is answered NOTIMP (tests and fuzzing of the query path).
    pub fn off() -> Updates {
        Updates::default()
    }
}

/// An UPDATE datagram, with the socket it came in on to answer from.
#[derive(Debug)]
pub(super) struct Queued {
    packet: Vec<u8>,
    peer: SocketAddr,
    socket: std::net::UdpSocket,
}

/// True for a request with opcode UPDATE (QR clear): the UDP and TCP front ends hand it here.
#[inline]
pub(super) fn is_update(packet: &[u8]) -> bool {
    packet.len() >= 12 && packet[2] & 0xF8 == OPCODE_UPDATE << 3
}

/// Starts the task that answers UPDATE datagrams; `ctx` (and the workers' copies made after
/// this) queue them with `queue_udp`.
pub(super) fn start_udp(ctx: &mut Context) {
    if ctx.updates.writer.is_none() {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Queued>(UDP_QUEUE);
    ctx.updates.udp = Some(tx);
    let ctx = ctx.clone();
    tokio::spawn(async move {
        while let Some(q) = rx.recv().await {
            if let Some(reply) = answer(&ctx, &q.packet, q.peer.ip(), Transport::Udp).await
                && let Err(e) = q.socket.send_to(&reply, q.peer)
            {
                tracing::debug!(peer = %q.peer, error = %e, "UPDATE answer not sent");
                ctx.metrics.send_failed(Transport::Udp);
            }
        }
    });
}

/// From a UDP worker: queues the datagram for the answering task, or answers NOTIMP in `out`
/// (no writer). False: nothing to send now (queued, or dropped on a full queue).
#[cold]
#[inline(never)]
pub(super) fn queue_udp(
    ctx: &Context,
    packet: &[u8],
    peer: SocketAddr,
    socket: &std::net::UdpSocket,
    out: &mut Vec<u8>,
) -> bool {
    let Some(queue) = &ctx.updates.udp else {
        return not_implemented(ctx, packet, Transport::Udp, out);
    };
    let Ok(socket) = socket.try_clone() else {
        return false;
    };
    let queued = Queued {
        packet: packet.to_vec(),
        peer,
        socket,
    };
    if queue.try_send(queued).is_err() {
        // Counted, not logged: a flood of UPDATE datagrams must not become a flood of lines.
        tracing::debug!(%peer, "UPDATE dropped: {UDP_QUEUE} already waiting");
        ctx.metrics.update_dropped();
    }
    false
}

/// Over TCP: the answer to write, if any.
pub(super) async fn answer_tcp(
    ctx: &Context,
    packet: &[u8],
    client: IpAddr,
    out: &mut Vec<u8>,
) -> bool {
    if ctx.updates.writer.is_none() {
        return not_implemented(ctx, packet, Transport::Tcp, out);
    }
    match answer(ctx, packet, client, Transport::Tcp).await {
        Some(reply) => {
            out.extend_from_slice(&reply);
            true
        }
        None => false,
    }
}

fn not_implemented(ctx: &Context, packet: &[u8], transport: Transport, out: &mut Vec<u8>) -> bool {
    let rd = packet[2] & 1 != 0;
    super::wire::write_reject(
        out,
        u16::from_be_bytes([packet[0], packet[1]]),
        OPCODE_UPDATE,
        rd,
        Rcode::NotImp,
    );
    ctx.metrics.answered(transport, Rcode::NotImp, false);
    true
}

/// What an UPDATE gets: its RCODE and, for refusals, why.
struct Outcome {
    rcode: Rcode,
    ede: Option<(u16, String)>,
}

impl Outcome {
    fn ok() -> Outcome {
        Outcome {
            rcode: Rcode::NoError,
            ede: None,
        }
    }

    fn refused(rcode: Rcode, code: u16, why: impl Into<String>) -> Outcome {
        Outcome {
            rcode,
            ede: Some((code, why.into())),
        }
    }
}

/// Answers one UPDATE message from `client`; None: drop it (a response, or shorter than a
/// header).
async fn answer(
    ctx: &Context,
    packet: &[u8],
    client: IpAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    let snapshot = ctx.snapshot.load_full();
    let now = crate::clock::wall_secs();
    let mut out = Vec::with_capacity(512);
    let header = Header::of(packet);
    let tsig_at = match tsig::locate(packet) {
        Ok(at) => at,
        Err(tsig::Malformed) => {
            header.write(&mut out, Rcode::FormErr, None);
            return Some(finish(ctx, out, transport, Rcode::FormErr));
        }
    };
    let verified = match tsig_at {
        None => None,
        Some(at) => match tsig::verify(snapshot.keyring(), packet, at, now) {
            Ok(verified) => Some(verified),
            Err(failure) => {
                let rcode = match failure.error {
                    tsig::Error::FormErr => Rcode::FormErr,
                    _ => Rcode::NotAuth,
                };
                if may_log() {
                    tracing::warn!(%client, error = ?failure.error, "UPDATE with a TSIG that does not verify");
                }
                header.write(&mut out, rcode, None);
                tsig::sign_error(&mut out, 0, &failure, now);
                return Some(finish(ctx, out, transport, rcode));
            }
        },
    };
    let outcome = match update::parse(packet, tsig_at) {
        Err(rcode) => Outcome { rcode, ede: None },
        Ok(parsed) => {
            decide(
                ctx,
                &snapshot,
                parsed,
                verified.as_ref().map(|v| &v.key.name),
                client,
            )
            .await
        }
    };
    if let Some((_, why)) = outcome.ede.as_ref().filter(|_| may_log()) {
        tracing::warn!(%client, rcode = crate::metrics::rcode_name(outcome.rcode), why = %why, "UPDATE refused");
    }
    let ede = outcome.ede.as_ref().filter(|_| header.edns);
    header.write(&mut out, outcome.rcode, ede);
    if let Some(verified) = &verified {
        tsig::sign_answer(&mut out, 0, verified, now);
    }
    Some(finish(ctx, out, transport, outcome.rcode))
}

fn finish(ctx: &Context, out: Vec<u8>, transport: Transport, rcode: Rcode) -> Vec<u8> {
    ctx.metrics.answered(transport, rcode, false);
    ctx.metrics.update(rcode);
    out
}

/// The zone, the key and its grants, then the writer.
async fn decide(
    ctx: &Context,
    snapshot: &crate::snapshot::Snapshot,
    parsed: update::Update,
    key: Option<&Name>,
    client: IpAddr,
) -> Outcome {
    let Some(grants) = snapshot.update_grants(&parsed.zone) else {
        return Outcome::refused(
            Rcode::NotAuth,
            EDE_NOT_AUTHORITATIVE,
            format!("weir does not serve zone {}", parsed.zone),
        );
    };
    let Some(key) = key else {
        return Outcome::refused(
            Rcode::NotAuth,
            EDE_PROHIBITED,
            format!(
                "UPDATE of {} must be signed with a TSIG key its [[zone.update]] grants name",
                parsed.zone
            ),
        );
    };
    if let Err(why) = update::permitted(grants, key, &parsed) {
        return Outcome::refused(Rcode::Refused, EDE_PROHIBITED, why);
    }
    let Some(writer) = &ctx.updates.writer else {
        return Outcome::refused(Rcode::NotImp, EDE_OTHER, "UPDATE is not enabled here");
    };
    let (reply, answered) = oneshot::channel();
    let submission = Submission {
        update: parsed,
        key: key.clone(),
        client,
        reply,
    };
    if writer.send(submission).await.is_err() {
        return Outcome::refused(Rcode::ServFail, EDE_OTHER, "weir is shutting down");
    }
    match tokio::time::timeout(WRITER_WAIT, answered).await {
        Ok(Ok(Ok(_))) => Outcome::ok(),
        Ok(Ok(Err(refusal))) => {
            let code = match refusal.rcode {
                Rcode::Refused => EDE_PROHIBITED,
                Rcode::NotAuth => EDE_NOT_AUTHORITATIVE,
                _ => EDE_OTHER,
            };
            Outcome::refused(refusal.rcode, code, refusal.why)
        }
        Ok(Err(_)) => Outcome::refused(Rcode::ServFail, EDE_OTHER, "weir is shutting down"),
        Err(_) => Outcome::refused(
            Rcode::ServFail,
            EDE_OTHER,
            format!("the change was not stored within {WRITER_WAIT:?}; it may still be applied"),
        ),
    }
}

/// What an answer copies from the request: id, the zone section, whether it had EDNS.
struct Header<'p> {
    id: [u8; 2],
    /// The zone section as sent (one name, type, class), if it parsed.
    zone: Option<&'p [u8]>,
    edns: bool,
}

impl<'p> Header<'p> {
    fn of(packet: &'p [u8]) -> Header<'p> {
        let zocount = u16::from_be_bytes([packet[4], packet[5]]);
        let zone = (zocount == 1).then(|| zone_section(packet)).flatten();
        Header {
            id: [packet[0], packet[1]],
            zone,
            edns: has_opt(packet),
        }
    }

    /// Writes the answer: header (QR, opcode UPDATE, `rcode`), the zone section, and an OPT
    /// with the extended error when the request had EDNS.
    fn write(&self, out: &mut Vec<u8>, rcode: Rcode, ede: Option<&(u16, String)>) {
        let flags: u16 = 0x8000 | u16::from(OPCODE_UPDATE) << 11 | (rcode as u16 & 0xF);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&u16::from(self.zone.is_some()).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&u16::from(self.edns).to_be_bytes());
        if let Some(zone) = self.zone {
            out.extend_from_slice(zone);
        }
        if self.edns {
            // OPT: root owner, payload 1232, extended RCODE bits, version 0.
            out.push(0);
            out.extend_from_slice(&rtype::OPT.to_be_bytes());
            out.extend_from_slice(&1232u16.to_be_bytes());
            out.extend_from_slice(&[(rcode as u16 >> 4) as u8, 0, 0, 0]);
            match ede {
                Some((code, text)) => {
                    let text = &text.as_bytes()[..text.len().min(400)];
                    let len = 2 + text.len() as u16;
                    out.extend_from_slice(&(4 + len).to_be_bytes());
                    out.extend_from_slice(&OPTION_EDE.to_be_bytes());
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&code.to_be_bytes());
                    out.extend_from_slice(text);
                }
                None => out.extend_from_slice(&[0, 0]),
            }
        }
    }
}

/// The zone section of a request, if well formed and uncompressed (the first name of a
/// message cannot point anywhere).
fn zone_section(packet: &[u8]) -> Option<&[u8]> {
    let mut at = 12;
    loop {
        let len = *packet.get(at)? as usize;
        if len & 0xC0 != 0 {
            return None;
        }
        at += 1 + len;
        if len == 0 || at > 12 + crate::model::MAX_NAME_LEN {
            break;
        }
    }
    packet.get(12..at + 4)
}

/// Whether the request's ADDITIONAL section holds an OPT (found by walking every record).
fn has_opt(packet: &[u8]) -> bool {
    let count = |at: usize| usize::from(u16::from_be_bytes([packet[at], packet[at + 1]]));
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let mut at = 12;
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *packet.get(at)? as usize;
            match len & 0xC0 {
                0 if len == 0 => return Some(at + 1),
                0 => at += 1 + len,
                0xC0 => return Some(at + 2),
                _ => return None,
            }
        }
    };
    for _ in 0..qd {
        let Some(next) = skip_name(at) else {
            return false;
        };
        at = next + 4;
    }
    for i in 0..an + ns + ar {
        let Some(next) = skip_name(at) else {
            return false;
        };
        let Some(t) = packet.get(next..next + 2) else {
            return false;
        };
        let Some(len) = packet.get(next + 8..next + 10) else {
            return false;
        };
        if i >= an + ns && u16::from_be_bytes([t[0], t[1]]) == rtype::OPT {
            return true;
        }
        at = next + 10 + usize::from(u16::from_be_bytes([len[0], len[1]]));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_a_bounded_number_of_times_per_second() {
        // 100 calls take far less than a second: at most two seconds' worth pass.
        let logged = (0..100).filter(|_| may_log()).count() as u64;
        assert!(
            (LOG_PER_SECOND..=2 * LOG_PER_SECOND).contains(&logged),
            "{logged}"
        );
    }
}
