//! Zone transfers over TCP (AXFR, RFC 5936; IXFR, RFC 1995) for sources a zone's
//! `allow_transfer` lists, or requests signed (TSIG) with a key it names; every message to a
//! signed request is signed. The TCP task hands every AXFR/IXFR question here. An IXFR is
//! answered from the journal RFC 2136 UPDATEs keep (`model::ZoneEdits::journal`, in the
//! snapshot's overlay): from the secondary's serial (its AUTHORITY SOA, read by
//! `ixfr_serial`) the chain of changes to the served serial (`chain`), or the SOA alone when
//! it is up to date; when the journal does not reach its serial (trimmed, a reload with a new
//! file serial, no journal) it gets the whole zone in AXFR form (RFC 1995 4), as does an IXFR
//! without an SOA. The content is `Snapshot::transfer` or the journal's decoded records
//! (`incremental`), written by `wire::write_transfer` on a blocking thread, at most
//! `MAX_TRANSFERS` at once (beyond: REFUSED). Transfers allocate: they are rare, allow-listed
//! and off the query path. Over UDP they never come here (`snapshot::answer` refuses AXFR and
//! answers an allowed IXFR with the SOA alone, and the secondary retries over TCP).

use std::net::IpAddr;

use tokio::sync::{Semaphore, SemaphorePermit};

use super::{Context, wire};
use crate::metrics::Transport;
use crate::model::{JournalEntry, RRset, Rcode, rtype};
use crate::snapshot::{self, Entry, Owner};
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
            form,
        })) => {
            ctx.metrics.answered(Transport::Tcp, rcode, false);
            if rcode == Rcode::NoError {
                tracing::info!(%client, messages, records, bytes = out.len(), key, form, "zone transfer");
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
    /// What was sent, for the log: "whole" (the zone, AXFR form), "incremental" (journal
    /// differences), "up to date" (an IXFR's SOA alone), "none" (an error).
    pub(super) form: &'static str,
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
        return Some(header_only(
            snapshot,
            &q,
            packet,
            Rcode::NotAuth,
            udp_payload,
            now,
        ));
    }
    // RFC 1995 3: an IXFR carries the secondary's SOA in AUTHORITY; without one it gets the
    // whole zone, as an AXFR.
    let Ok(since) = ixfr_serial(packet, &q) else {
        snapshot.count_query(snapshot.zone_of(q.qname()));
        return Some(header_only(
            snapshot,
            &q,
            packet,
            Rcode::FormErr,
            udp_payload,
            now,
        ));
    };
    // The journal's records, decoded, which an incremental answer borrows.
    let decoded;
    let mut form = "whole";
    let content = match since {
        None => snapshot.transfer(q.qname(), q.qclass, client, signed_by),
        Some(since) => match snapshot.transfer_journal(q.qname(), q.qclass, client, signed_by) {
            Err(no) => Err(no),
            Ok(journal) => match chain(journal.entries, since, journal.serial).and_then(decode) {
                Some(sets) => {
                    decoded = sets;
                    form = if decoded.is_empty() {
                        "up to date"
                    } else {
                        "incremental"
                    };
                    Ok(incremental(&journal, &decoded))
                }
                // Not in the journal (trimmed, reloaded, none): the whole zone.
                None => snapshot.transfer(q.qname(), q.qclass, client, signed_by),
            },
        },
    };
    match content {
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
                form,
            })
        }
        Err(no) => {
            snapshot.count_query(no.zone);
            Some(header_only(
                snapshot,
                &q,
                packet,
                no.rcode,
                udp_payload,
                now,
            ))
        }
    }
}

/// The serial of an IXFR question's AUTHORITY SOA (RFC 1995 3), the version the secondary
/// holds: None for an AXFR or an IXFR without one; Err for an SOA whose rdata is malformed
/// (FORMERR). `wire::parse_query` has checked the record's framing and type; this reads its
/// rdata: two names (each ending in the root label or a pointer) and exactly five numbers.
fn ixfr_serial(packet: &[u8], q: &wire::Query<'_>) -> Result<Option<u32>, ()> {
    let nscount = packet
        .get(8..10)
        .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
    if q.qtype != rtype::IXFR || nscount == 0 {
        return Ok(None);
    }
    let owner = 12 + q.question.len();
    let fixed = skip_name(packet, owner, packet.len()).ok_or(())?;
    let rdlen = packet.get(fixed + 8..fixed + 10).ok_or(())?;
    let start = fixed + 10;
    let end = start + usize::from(u16::from_be_bytes([rdlen[0], rdlen[1]]));
    if end > packet.len() {
        return Err(());
    }
    let mname_end = skip_name(packet, start, end).ok_or(())?;
    let numbers = skip_name(packet, mname_end, end).ok_or(())?;
    match packet.get(numbers..end) {
        Some(&[a, b, c, d, ..]) if end - numbers == 20 => {
            Ok(Some(u32::from_be_bytes([a, b, c, d])))
        }
        _ => Err(()),
    }
}

/// Where the name at `at` ends, reading no further than `end`: after its root label or its
/// pointer (not followed: only its length matters here); None past `end`, for a reserved
/// label type, or a name longer than 255 octets.
fn skip_name(packet: &[u8], mut at: usize, end: usize) -> Option<usize> {
    let start = at;
    loop {
        if at >= end || at - start > crate::model::MAX_NAME_LEN {
            return None;
        }
        let label = usize::from(*packet.get(at)?);
        match label & 0xC0 {
            0x00 if label == 0 => return Some(at + 1),
            0x00 => at += 1 + label,
            0xC0 if at + 2 <= end => return Some(at + 2),
            _ => return None,
        }
    }
}

/// The journal entries that take a secondary from serial `since` to `served`, oldest first
/// (RFC 1995 4's differences): consecutive entries, each one's `from` the `to` of the one
/// before, the first from `since`, the last to `served`. Empty when `since` is `served` or
/// newer (RFC 1982): the secondary is up to date and gets the SOA alone. None when no such
/// chain is kept (trimmed, a gap where the zone file was reloaded with a new serial, no
/// journal): the whole zone then. Serials are compared for equality, so wrapping past 2^32
/// is followed like any step.
fn chain(journal: &[JournalEntry], since: u32, served: u32) -> Option<&[JournalEntry]> {
    if since == served || crate::update::serial_newer(since, served) {
        return Some(&[]);
    }
    // The newest entry reaching the served serial, then back while the chain holds.
    let end = journal.iter().rposition(|e| e.to == served)?;
    let mut start = end;
    loop {
        let entry = journal.get(start)?;
        if entry.from == since {
            return journal.get(start..=end);
        }
        let before = journal.get(start.checked_sub(1)?)?;
        if before.to != entry.from {
            return None;
        }
        start -= 1;
    }
}

/// Each entry's removed sets (the old SOA first), then its added ones (the new SOA first),
/// decoded, with their owners' wire form; None when a stored set does not decode.
fn decode(chain: &[JournalEntry]) -> Option<Vec<(&[u8], RRset)>> {
    (chain.iter())
        .flat_map(|e| e.removed.iter().chain(&e.added))
        .map(|set| Some((set.owner.wire(), set.rrset()?)))
        .collect()
}

/// The records of an incremental transfer (RFC 1995 4): the served SOA, the differences
/// (`decode`), the served SOA again. With no differences, the SOA alone (RFC 1995 2: up to
/// date).
fn incremental<'a>(
    journal: &snapshot::Journal<'a>,
    sets: &'a [(&'a [u8], RRset)],
) -> Vec<Entry<'a>> {
    let soa = Entry {
        owner: Owner::Name(journal.apex),
        rrset: journal.soa,
        required: false,
    };
    let mut out = vec![soa];
    out.extend(sets.iter().map(|(owner, rrset)| Entry {
        owner: Owner::Name(owner),
        rrset,
        required: false,
    }));
    if !sets.is_empty() {
        out.push(soa);
    }
    out
}

/// A transfer answered with one header-only message: `rcode`, no records.
fn header_only(
    snapshot: &snapshot::Snapshot,
    q: &wire::Query<'_>,
    packet: &[u8],
    rcode: Rcode,
    udp_payload: u16,
    now: u64,
) -> Built {
    let (out, rcode) = header_answer(snapshot, q, packet, rcode, udp_payload, now);
    Built {
        out,
        rcode,
        messages: 1,
        records: 0,
        form: "none",
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::rdata::SOA;
    use hickory_proto::rr::{Name as HName, RData, Record, RecordType};

    use super::*;
    use crate::model::{Name, Overlay, Rdata, Soa, StoredSet, View, ZoneEdits};

    fn entry(from: u32, to: u32) -> JournalEntry {
        JournalEntry {
            from,
            to,
            removed: Vec::new(),
            added: Vec::new(),
        }
    }

    fn spans(chain: Option<&[JournalEntry]>) -> Option<Vec<(u32, u32)>> {
        chain.map(|c| c.iter().map(|e| (e.from, e.to)).collect())
    }

    #[test]
    fn the_chain_runs_from_the_secondary_serial_to_the_served_one() {
        let journal = [entry(1, 2), entry(2, 3), entry(3, 4)];
        assert_eq!(
            spans(chain(&journal, 1, 4)),
            Some(vec![(1, 2), (2, 3), (3, 4)])
        );
        assert_eq!(spans(chain(&journal, 2, 4)), Some(vec![(2, 3), (3, 4)]));
        assert_eq!(spans(chain(&journal, 3, 4)), Some(vec![(3, 4)]));
        // Up to date, or newer than served (RFC 1995 2): the SOA alone.
        assert_eq!(spans(chain(&journal, 4, 4)), Some(vec![]));
        assert_eq!(spans(chain(&journal, 5, 4)), Some(vec![]));
        assert_eq!(spans(chain(&[], 7, 7)), Some(vec![]));
        // Older than the journal (trimmed), or a serial it never held: the whole zone.
        assert_eq!(spans(chain(&journal, 0, 4)), None);
        assert_eq!(spans(chain(&[], 3, 4)), None);
        // The served serial is not the journal's last (the file was reloaded with a newer one).
        assert_eq!(spans(chain(&journal, 1, 10)), None);
    }

    #[test]
    fn a_gap_in_the_journal_breaks_the_chain() {
        // 1 -> 2, then the file was reloaded at 10, then updates 10 -> 11 -> 12.
        let journal = [entry(1, 2), entry(10, 11), entry(11, 12)];
        assert_eq!(
            spans(chain(&journal, 10, 12)),
            Some(vec![(10, 11), (11, 12)])
        );
        assert_eq!(spans(chain(&journal, 11, 12)), Some(vec![(11, 12)]));
        assert_eq!(spans(chain(&journal, 1, 12)), None);
        assert_eq!(spans(chain(&journal, 2, 12)), None);
    }

    #[test]
    fn serials_wrap_past_two_to_the_32() {
        let journal = [
            entry(u32::MAX - 1, u32::MAX),
            entry(u32::MAX, 0),
            entry(0, 1),
        ];
        assert_eq!(
            spans(chain(&journal, u32::MAX - 1, 1)),
            Some(vec![(u32::MAX - 1, u32::MAX), (u32::MAX, 0), (0, 1)])
        );
        assert_eq!(
            spans(chain(&journal, u32::MAX, 1)),
            Some(vec![(u32::MAX, 0), (0, 1)])
        );
        // u32::MAX is older than 1 (RFC 1982), 1 is up to date, 2 newer.
        assert_eq!(spans(chain(&journal, 1, 1)), Some(vec![]));
        assert_eq!(spans(chain(&journal, 2, 1)), Some(vec![]));
    }

    #[test]
    fn the_newest_path_to_the_served_serial_is_taken() {
        // Serial 5 was served twice (an operator moved the file back): the chain starts at
        // the later 5.
        let journal = [entry(5, 6), entry(6, 7), entry(5, 6), entry(6, 7)];
        let found = chain(&journal, 5, 7).unwrap();
        assert_eq!(found.len(), 2);
        assert!(std::ptr::eq(&found[0], &journal[2]));
    }

    fn ixfr(serial: Option<u32>) -> Vec<u8> {
        let mut q = Message::query();
        q.add_query(Query::query(
            HName::from_ascii("example.com.").unwrap(),
            RecordType::IXFR,
        ));
        if let Some(serial) = serial {
            let soa = SOA::new(
                HName::from_ascii("ns.example.com.").unwrap(),
                HName::from_ascii("hm.example.com.").unwrap(),
                serial,
                2,
                3,
                4,
                60,
            );
            let name = HName::from_ascii("example.com.").unwrap();
            q.add_authority(Record::from_rdata(name, 0, RData::SOA(soa)));
        }
        q.to_vec().unwrap()
    }

    fn serial_of(packet: &[u8]) -> Result<Option<u32>, ()> {
        let q = wire::parse_query(packet).map_err(|_| ())?;
        ixfr_serial(packet, &q)
    }

    #[test]
    fn the_secondary_serial_is_read_from_authority() {
        // hickory compresses the SOA's names (pointers into the question).
        assert_eq!(serial_of(&ixfr(Some(2026112301))), Ok(Some(2026112301)));
        assert_eq!(serial_of(&ixfr(Some(u32::MAX))), Ok(Some(u32::MAX)));
        assert_eq!(serial_of(&ixfr(None)), Ok(None));
        // Uncompressed, by hand: owner pointer to the question, then root names.
        let mut packet = ixfr(None);
        packet[9] = 1; // NSCOUNT
        packet.extend_from_slice(&[0xC0, 12, 0, 6, 0, 1, 0, 0, 0, 0, 0, 22, 0, 0]);
        packet.extend_from_slice(&7u32.to_be_bytes());
        packet.extend_from_slice(&[0; 16]);
        assert_eq!(serial_of(&packet), Ok(Some(7)));
        // Malformed rdata: too short, too long, a reserved label type, a name past its end.
        let rdata_at = packet.len() - 22;
        let with = |rdata: &[u8]| {
            let mut p = packet[..rdata_at - 2].to_vec();
            p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            p.extend_from_slice(rdata);
            p
        };
        assert_eq!(serial_of(&with(&[0, 0, 1, 2, 3])), Err(()));
        assert_eq!(serial_of(&with(&[0; 23])), Err(()));
        let mut reserved = vec![0x40, 0];
        reserved.extend_from_slice(&[0; 20]);
        assert_eq!(serial_of(&with(&reserved)), Err(()));
        assert_eq!(serial_of(&with(&[3, b'a', b'b'])), Err(()));
        assert_eq!(serial_of(&with(&[0, 0xC0])), Err(()));
        assert_eq!(serial_of(&with(&[0; 22])), Ok(Some(0)));
    }

    fn name(text: &str) -> Name {
        Name::parse(text).unwrap()
    }

    fn soa_set(serial: u32) -> StoredSet {
        let soa = Soa {
            mname: name("ns.example.com"),
            rname: name("hm.example.com"),
            serial,
            refresh: 2,
            retry: 3,
            expire: 4,
            minimum: 60,
        };
        let set = RRset {
            rtype: rtype::SOA,
            ttl: 300,
            rdatas: vec![Rdata::Soa(Box::new(soa))],
        };
        StoredSet::new(&name("example.com"), &set)
    }

    fn txt_set(owner: &str, text: &str) -> StoredSet {
        let mut wire = vec![text.len() as u8];
        wire.extend_from_slice(text.as_bytes());
        let set = RRset {
            rtype: rtype::TXT,
            ttl: 60,
            rdatas: vec![Rdata::Opaque(wire.into())],
        };
        StoredSet::new(&name(owner), &set)
    }

    /// example.com at serial 3 (its file's), allowing 192.0.2.0/24, with a journal 1 -> 2
    /// (adds a.example.com TXT "one") -> 3 (deletes it, adds b.example.com TXT "two").
    fn journaled() -> snapshot::Snapshot {
        let zone = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 3 2 3 4 60\n@ NS ns\nns A 192.0.2.1\nb 60 TXT two\n";
        let config = "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\nallow_transfer = [\"192.0.2.0/24\"]\n";
        let config = crate::config::parse(config, Path::new("w.toml")).unwrap();
        let origin = name("example.com");
        let mut zones = vec![crate::zones::from_text(zone, Path::new("z"), &origin).unwrap()];
        zones[0]
            .allow_transfer
            .clone_from(&config.zones[0].allow_transfer);
        let index = snapshot::index(&zones, &config.pools, &config.routing, &config.keyring);
        let journal = vec![
            JournalEntry {
                from: 1,
                to: 2,
                removed: vec![soa_set(1)],
                added: vec![soa_set(2), txt_set("a.example.com", "one")],
            },
            JournalEntry {
                from: 2,
                to: 3,
                removed: vec![soa_set(2), txt_set("a.example.com", "one")],
                added: vec![soa_set(3), txt_set("b.example.com", "two")],
            },
        ];
        let mut overlay = Overlay::default();
        overlay.zones.insert(
            origin,
            ZoneEdits {
                serial: 3,
                rrsets: Vec::new(),
                journal,
            },
        );
        let view = View {
            overlay: Arc::new(overlay),
            ..Default::default()
        };
        snapshot::build(&index, Arc::new(view), &crate::metrics::Metrics::new(), 1)
    }

    /// The records of a built transfer as `owner type rdata`, and its RCODE.
    fn answers(snapshot: &snapshot::Snapshot, packet: &[u8]) -> (Rcode, Vec<String>) {
        let built = build(snapshot, packet, "192.0.2.9".parse().unwrap(), 1232, 0).unwrap();
        let len = usize::from(u16::from_be_bytes([built.out[0], built.out[1]]));
        assert_eq!(built.out.len(), 2 + len, "one message");
        let message = Message::from_vec(&built.out[2..]).unwrap();
        let records = (message.answers.iter())
            .map(|r| match &r.data {
                RData::SOA(soa) => format!("{} SOA {}", r.name, soa.serial),
                data => format!("{} {} {}", r.name, r.record_type(), data),
            })
            .collect();
        (built.rcode, records)
    }

    #[test]
    fn an_ixfr_in_the_journal_gets_the_differences() {
        let snapshot = journaled();
        let (rcode, got) = answers(&snapshot, &ixfr(Some(1)));
        assert_eq!(rcode, Rcode::NoError);
        assert_eq!(
            got,
            [
                "example.com. SOA 3",
                "example.com. SOA 1",
                "example.com. SOA 2",
                "a.example.com. TXT one",
                "example.com. SOA 2",
                "a.example.com. TXT one",
                "example.com. SOA 3",
                "b.example.com. TXT two",
                "example.com. SOA 3",
            ]
        );
        let (_, got) = answers(&snapshot, &ixfr(Some(2)));
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got[1], "example.com. SOA 2");
        // Up to date: the SOA alone.
        assert_eq!(answers(&snapshot, &ixfr(Some(3))).1, ["example.com. SOA 3"]);
        // Not in the journal, or no AUTHORITY SOA: the whole zone (AXFR form).
        for packet in [ixfr(Some(0)), ixfr(None)] {
            let (rcode, got) = answers(&snapshot, &packet);
            assert_eq!(rcode, Rcode::NoError);
            assert_eq!(
                got,
                [
                    "example.com. SOA 3",
                    "example.com. NS ns.example.com.",
                    "b.example.com. TXT two",
                    "ns.example.com. A 192.0.2.1",
                    "example.com. SOA 3",
                ]
            );
        }
        // A malformed SOA is FORMERR; a refused source gets no journal either.
        // (An SOA rdata of two root names and no numbers.)
        let mut bad = ixfr(None);
        bad[9] = 1;
        bad.extend_from_slice(&[0xC0, 12, 0, 6, 0, 1, 0, 0, 0, 0, 0, 2, 0, 0]);
        assert_eq!(answers(&snapshot, &bad), (Rcode::FormErr, Vec::new()));
        let form = |packet: &[u8]| {
            let client = "192.0.2.9".parse().unwrap();
            build(&snapshot, packet, client, 1232, 0).unwrap().form
        };
        assert_eq!(form(&ixfr(Some(1))), "incremental");
        assert_eq!(form(&ixfr(Some(3))), "up to date");
        assert_eq!(form(&ixfr(Some(0))), "whole");
        assert_eq!(form(&bad), "none");
        let refused = build(
            &snapshot,
            &ixfr(Some(1)),
            "198.51.100.1".parse().unwrap(),
            1232,
            0,
        );
        assert_eq!(refused.unwrap().rcode, Rcode::Refused);
    }
}
