//! Zone transfers over TCP (AXFR, RFC 5936; IXFR answered in AXFR form, RFC 1995 4, as weir
//! keeps no journal) for sources a zone's `allow_transfer` lists, or requests signed (TSIG)
//! with a key it names; every message to a signed request is signed. The TCP task hands every
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
use crate::tsig;

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
/// takes a slot; an allowed one holds it until the caller has sent the messages. A signed
/// request (RFC 8945) is verified first: a bad signature gets NOTAUTH with the TSIG error and
/// no data; a good one may be what `allow_transfer` admits (`key:NAME`), and then every
/// message of the answer, refusals included, is signed.
pub async fn serve(ctx: &Context, packet: &[u8], client: IpAddr) -> Transfer {
    let udp_payload = ctx.config.udp_max_payload;
    let Ok(q) = wire::parse_query(packet) else {
        let mut out = vec![0, 0];
        frame(&mut out);
        ctx.metrics.answered(Transport::Tcp, Rcode::FormErr, false);
        return Transfer {
            bytes: out,
            _slot: None,
        };
    };
    ctx.metrics.query(q.qtype);
    let snapshot = ctx.snapshot.load_full();
    let now = crate::clock::wall_secs();
    let refused = |rcode| {
        let (bytes, rcode) = header_answer(&snapshot, &q, packet, rcode, udp_payload, now);
        ctx.metrics.answered(Transport::Tcp, rcode, false);
        Transfer { bytes, _slot: None }
    };
    let signed_by = match q.tsig {
        None => None,
        Some(at) => match tsig::verify(snapshot.keyring(), packet, usize::from(at), now) {
            Ok(verified) => Some(verified.key),
            Err(failure) => {
                tracing::info!(%client, error = ?failure.error, "zone transfer with a bad signature");
                snapshot.count_query(None);
                return refused(Rcode::NotAuth);
            }
        },
    };
    let signed_name = signed_by.map(|k| &k.name);
    if let Err(no) = snapshot.may_transfer(q.qname(), q.qclass, client, signed_name) {
        snapshot.count_query(no.zone);
        return refused(no.rcode);
    }
    let Ok(slot) = TRANSFERS.try_acquire() else {
        tracing::warn!(%client, "zone transfer refused: {MAX_TRANSFERS} already in flight");
        return refused(Rcode::Refused);
    };
    let owned = packet.to_vec();
    let key = signed_by.map(|k| k.name.to_string());
    let snapshot = snapshot.clone();
    let built =
        tokio::task::spawn_blocking(move || build(&snapshot, &owned, client, udp_payload, now))
            .await;
    match built {
        Ok(Some(Built {
            out,
            rcode,
            messages,
            records,
        })) => {
            ctx.metrics.answered(Transport::Tcp, rcode, false);
            if rcode == Rcode::NoError {
                tracing::info!(%client, messages, records, bytes = out.len(), key, "zone transfer");
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

/// The transfer answering `packet` (a transfer question) from `client` at Unix time `now`,
/// framed; signed when the request is.
pub(super) fn build(
    snapshot: &snapshot::Snapshot,
    packet: &[u8],
    client: IpAddr,
    udp_payload: u16,
    now: u64,
) -> Option<Built> {
    let q = wire::parse_query(packet).ok()?;
    let verified = match q.tsig {
        None => None,
        Some(at) => tsig::verify(snapshot.keyring(), packet, usize::from(at), now).ok(),
    };
    let signed_by = verified.as_ref().map(|v| &v.key.name);
    if q.tsig.is_some() && verified.is_none() {
        let (out, rcode) = header_answer(snapshot, &q, packet, Rcode::NotAuth, udp_payload, now);
        return Some(Built {
            out,
            rcode,
            messages: 1,
            records: 0,
        });
    }
    match snapshot.transfer(q.qname(), q.qclass, client, signed_by) {
        Ok(records) => {
            let mut out = Vec::new();
            let signed = verified.as_ref().map(|v| (v, now));
            let messages = wire::write_transfer(&mut out, &q, &records, udp_payload, signed)?;
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
            let (out, rcode) = header_answer(snapshot, &q, packet, no.rcode, udp_payload, now);
            snapshot.count_query(no.zone);
            Some(Built {
                out,
                rcode,
                messages: 1,
                records: 0,
            })
        }
    }
}

/// An answer with `rcode`, the question echoed and no data, framed, and the RCODE sent. A
/// signed request's answer is signed (RFC 8945 5.3); one whose signature fails gets NOTAUTH
/// with the TSIG error instead (5.3.2; FORMERR for a malformed TSIG).
#[allow(
    clippy::result_large_err,
    reason = "tsig::verify's failure, inline by design (see there)"
)]
fn header_answer(
    snapshot: &snapshot::Snapshot,
    q: &wire::Query<'_>,
    packet: &[u8],
    rcode: Rcode,
    udp_payload: u16,
    now: u64,
) -> (Vec<u8>, Rcode) {
    let mut out = vec![0, 0];
    let verified = q
        .tsig
        .map(|at| tsig::verify(snapshot.keyring(), packet, usize::from(at), now));
    let rcode = match &verified {
        Some(Err(failure)) if failure.error == tsig::Error::FormErr => Rcode::FormErr,
        Some(Err(_)) => Rcode::NotAuth,
        _ => rcode,
    };
    let answer = snapshot::Answer {
        rcode,
        ..snapshot::Answer::refused()
    };
    let room = wire::TCP_LIMIT - tsig::max_space(snapshot.keyring());
    wire::write_response(&mut out, q, &answer, room, udp_payload, None);
    match &verified {
        Some(Ok(v)) => {
            tsig::sign_answer(&mut out, 2, v, now);
        }
        Some(Err(failure)) => tsig::sign_error(&mut out, 2, failure, now),
        None => {}
    }
    frame(&mut out);
    (out, rcode)
}

/// Sets the two-byte TCP length in front of the one message in `out`.
fn frame(out: &mut [u8]) {
    let len = (out.len() - 2) as u16;
    out[..2].copy_from_slice(&len.to_be_bytes());
}
