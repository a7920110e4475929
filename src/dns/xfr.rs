//! Zone transfers over TCP (AXFR, RFC 5936; IXFR answered in AXFR form, RFC 1995 4, as weir
//! keeps no journal) for sources a zone's `allow_transfer` lists. The TCP task hands every
//! AXFR/IXFR question here; the content is `Snapshot::transfer` (a pure function of the
//! snapshot), written by `wire::write_transfer` on a blocking thread, at most
//! `MAX_TRANSFERS` at once (beyond: REFUSED). Transfers allocate: they are rare, allow-listed
//! and off the query path. Over UDP they never come here (`snapshot::answer` refuses AXFR and
//! answers an allowed IXFR with the SOA alone).

use std::net::IpAddr;

use tokio::sync::{Semaphore, SemaphorePermit};

use super::{Context, wire};
use crate::metrics::Transport;
use crate::model::{Rcode, rtype};
use crate::snapshot;

/// Transfers in flight at once, process-wide; one more is REFUSED.
pub const MAX_TRANSFERS: usize = 4;

pub(super) static TRANSFERS: Semaphore = Semaphore::const_new(MAX_TRANSFERS);

/// True when `packet` is a well-formed AXFR or IXFR question (EDNS version 0 or none: a
/// higher version gets BADVERS from `respond`).
pub fn is_transfer(packet: &[u8]) -> bool {
    wire::parse_query(packet).is_ok_and(|q| {
        matches!(q.qtype, rtype::AXFR | rtype::IXFR) && q.edns.is_none_or(|e| e.version == 0)
    })
}

/// A transfer's framed messages, holding its slot until they are sent.
#[derive(Debug)]
pub struct Transfer {
    pub bytes: Vec<u8>,
    _slot: Option<SemaphorePermit<'static>>,
}

/// Answers a transfer question (`is_transfer`) from `client`: every message of the transfer,
/// each with its TCP length in front, or one refusal (framed likewise). A refused source never
/// takes a slot; an allowed one holds it until the caller has sent the messages.
pub async fn serve(ctx: &Context, packet: &[u8], client: IpAddr) -> Transfer {
    let refused = |rcode| Transfer {
        bytes: refusal(ctx, packet, rcode),
        _slot: None,
    };
    let Ok(q) = wire::parse_query(packet) else {
        return refused(Rcode::FormErr);
    };
    ctx.metrics.query(q.qtype);
    let snapshot = ctx.snapshot.load_full();
    if let Err(no) = snapshot.may_transfer(q.qname(), q.qclass, client) {
        snapshot.count_query(no.zone);
        return refused(no.rcode);
    }
    let Ok(slot) = TRANSFERS.try_acquire() else {
        tracing::warn!(%client, "zone transfer refused: {MAX_TRANSFERS} already in flight");
        return refused(Rcode::Refused);
    };
    let owned = packet.to_vec();
    let udp_payload = ctx.config.udp_max_payload;
    let built =
        tokio::task::spawn_blocking(move || build(&snapshot, &owned, client, udp_payload)).await;
    match built {
        Ok(Some(Built {
            out,
            rcode,
            messages,
            records,
        })) => {
            ctx.metrics.answered(Transport::Tcp, rcode, false);
            if rcode == Rcode::NoError {
                tracing::info!(%client, messages, records, bytes = out.len(), "zone transfer");
            }
            Transfer {
                bytes: out,
                _slot: Some(slot),
            }
        }
        // A record too large for any message (or a failed task): SERVFAIL, nothing sent.
        _ => refused(Rcode::ServFail),
    }
}

/// A transfer's framed messages and what to count.
pub(super) struct Built {
    pub(super) out: Vec<u8>,
    pub(super) rcode: Rcode,
    pub(super) messages: usize,
    pub(super) records: usize,
}

/// The transfer answering `packet` (a transfer question) from `client`, framed.
pub(super) fn build(
    snapshot: &snapshot::Snapshot,
    packet: &[u8],
    client: IpAddr,
    udp_payload: u16,
) -> Option<Built> {
    let q = wire::parse_query(packet).ok()?;
    let mut out = Vec::new();
    match snapshot.transfer(q.qname(), q.qclass, client) {
        Ok(records) => {
            let messages = wire::write_transfer(&mut out, &q, &records, udp_payload)?;
            snapshot.count_query(snapshot.zone_of(q.qname()));
            let records = records.iter().map(|e| e.rrset.rdatas.len()).sum();
            Some(Built {
                out,
                rcode: Rcode::NoError,
                messages,
                records,
            })
        }
        Err(no) => {
            let answer = snapshot::Answer {
                rcode: no.rcode,
                zone: no.zone,
                ..snapshot::Answer::refused()
            };
            out.extend_from_slice(&[0, 0]);
            let written =
                wire::write_response(&mut out, &q, &answer, wire::TCP_LIMIT, udp_payload, None);
            frame(&mut out);
            snapshot.count_query(answer.zone);
            Some(Built {
                out,
                rcode: written.rcode,
                messages: 1,
                records: 0,
            })
        }
    }
}

/// A header-only answer with `rcode` (the question echoed when it parses), framed.
fn refusal(ctx: &Context, packet: &[u8], rcode: Rcode) -> Vec<u8> {
    let mut out = vec![0, 0];
    if let Ok(q) = wire::parse_query(packet) {
        let answer = snapshot::Answer {
            rcode,
            ..snapshot::Answer::refused()
        };
        wire::write_response(
            &mut out,
            &q,
            &answer,
            wire::TCP_LIMIT,
            ctx.config.udp_max_payload,
            None,
        );
    }
    frame(&mut out);
    ctx.metrics.answered(Transport::Tcp, rcode, false);
    out
}

/// Sets the two-byte TCP length in front of the one message in `out`.
fn frame(out: &mut [u8]) {
    let len = (out.len() - 2) as u16;
    out[..2].copy_from_slice(&len.to_be_bytes());
}
