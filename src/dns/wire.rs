//! DNS wire format on the query path, written by hand because it is the hot path: a strict query
//! parser that never allocates, and a response writer with name compression (RFC 1035 4.1.4)
//! that writes into a caller-owned buffer. hickory-proto is used for everything off this path.

use smallvec::SmallVec;

use crate::model::{DropReason, Rcode};
use crate::model::{MAX_NAME_LEN, RRset, Rdata, label_starts, rtype};
use crate::snapshot::{Answer, Entry, Owner, Section, Subnet, Synth};

use super::cookie::{self, Cookie};
use crate::tsig;

pub const HEADER_LEN: usize = 12;
/// Size of the OPT record weir appends: root name, type, class, TTL, empty rdata.
const OPT_LEN: usize = 11;
/// DNS message limit without EDNS (RFC 1035 4.2.1).
pub const CLASSIC_UDP_LIMIT: usize = 512;

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_CD: u16 = 0x0010;
pub const OPCODE_QUERY: u8 = 0;
pub const OPCODE_NOTIFY: u8 = 4;

/// EDNS(0) data of a query (RFC 6891 6.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    /// "Compact Answers OK" (RFC 9824 4), the EDNS flag after DO.
    pub compact_ok: bool,
}

/// A query weir will answer: its header fields, the raw question section (echoed byte for byte,
/// so 0x20 case survives) and the question name lowercased for lookups.
#[derive(Debug)]
pub struct Query<'p> {
    pub id: u16,
    pub opcode: u8,
    pub rd: bool,
    pub cd: bool,
    pub question: &'p [u8],
    qname: [u8; MAX_NAME_LEN],
    qname_len: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
    /// EDNS Client Subnet, if the query carried one (RFC 7871).
    pub ecs: Option<Subnet>,
    /// The DNS COOKIE option, if the query carried a well-formed one (RFC 7873).
    pub cookie: Option<Cookie>,
    /// Where the TSIG record starts, if the query is signed (RFC 8945; the last ADDITIONAL
    /// record, else FORMERR): `tsig::verify` reads it.
    pub tsig: Option<u16>,
}

/// EDNS option code of Client Subnet (RFC 7871 6).
const OPTION_ECS: u16 = 8;
/// EDNS option code of COOKIE (RFC 7873 4).
const OPTION_COOKIE: u16 = 10;

/// Parses an ECS option body; None if it breaks RFC 7871 7.1.2 (FORMERR).
fn parse_ecs(data: &[u8]) -> Option<Subnet> {
    let family = u16_at(data, 0)?;
    let source_prefix = *data.get(2)?;
    let scope = *data.get(3)?;
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    let addr_bytes = &data[4..];
    // "SCOPE PREFIX-LENGTH ... MUST be set to 0 in queries"; the address holds exactly
    // ceil(SOURCE PREFIX-LENGTH / 8) octets with the bits past the prefix zero.
    if scope != 0
        || source_prefix > max
        || addr_bytes.len() != usize::from(source_prefix).div_ceil(8)
    {
        return None;
    }
    if let Some(&last) = addr_bytes.last() {
        let used = source_prefix % 8;
        if used != 0 && last & (0xFF >> used) != 0 {
            return None;
        }
    }
    let mut addr = [0u8; 16];
    addr[..addr_bytes.len()].copy_from_slice(addr_bytes);
    Some(Subnet {
        family,
        source_prefix,
        addr,
    })
}

impl Query<'_> {
    /// The question name in lowercase wire form.
    pub fn qname(&self) -> &[u8] {
        &self.qname[..self.qname_len]
    }
}

/// What to send when a packet cannot be answered normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    Drop(DropReason),
    /// A header-only error response keeping the query's id, opcode and RD bit.
    Header {
        id: u16,
        opcode: u8,
        rd: bool,
        rcode: Rcode,
    },
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Parses a query. QR=1 and short packets are dropped; anything else malformed gets FORMERR
/// (PROTOCOL.md "Bad input"), and opcodes other than QUERY get NOTIMP (NOTIFY: REFUSED).
pub fn parse_query(p: &[u8]) -> Result<Query<'_>, Reject> {
    if p.len() < HEADER_LEN {
        return Err(Reject::Drop(DropReason::Short));
    }
    let id = u16::from_be_bytes([p[0], p[1]]);
    let flags = u16::from_be_bytes([p[2], p[3]]);
    if flags & FLAG_QR != 0 {
        return Err(Reject::Drop(DropReason::Response));
    }
    let opcode = ((flags >> 11) & 0xF) as u8;
    let rd = flags & FLAG_RD != 0;
    let cd = flags & FLAG_CD != 0;
    let reject = |rcode| Reject::Header {
        id,
        opcode,
        rd,
        rcode,
    };
    if opcode != OPCODE_QUERY {
        let rcode = if opcode == OPCODE_NOTIFY {
            Rcode::Refused
        } else {
            Rcode::NotImp
        };
        return Err(reject(rcode));
    }
    let formerr = reject(Rcode::FormErr);
    let count = |at| u16::from_be_bytes([p[at], p[at + 1]]);
    let (qdcount, ancount, nscount, arcount) = (count(4), count(6), count(8), count(10));
    // A query carries exactly one question and nothing in ANSWER or AUTHORITY (but an IXFR
    // query, which carries the secondary's SOA in AUTHORITY, RFC 1995 3; checked below).
    if qdcount != 1 || ancount != 0 || nscount > 1 {
        return Err(formerr);
    }

    let mut qname = [0u8; MAX_NAME_LEN];
    let mut at = HEADER_LEN;
    let mut len = 0;
    loop {
        let label = *p.get(at).ok_or(formerr)? as usize;
        // Pointers (and the reserved 01/10 label types) cannot appear in a question: the only
        // earlier bytes are the header, so any pointer here is forward or bogus.
        if label & 0xC0 != 0 {
            return Err(formerr);
        }
        if len + 1 + label > MAX_NAME_LEN {
            return Err(formerr);
        }
        let bytes = p.get(at..at + 1 + label).ok_or(formerr)?;
        qname[len] = label as u8;
        for (dst, &b) in qname[len + 1..len + 1 + label].iter_mut().zip(&bytes[1..]) {
            *dst = b.to_ascii_lowercase();
        }
        len += 1 + label;
        at += 1 + label;
        if label == 0 {
            break;
        }
    }
    let qtype = u16_at(p, at).ok_or(formerr)?;
    let qclass = u16_at(p, at + 2).ok_or(formerr)?;
    at += 4;
    let question = &p[HEADER_LEN..at];
    if nscount != 0 && qtype != rtype::IXFR {
        return Err(formerr);
    }

    let mut edns = None;
    let mut ecs = None;
    let mut cookie = None;
    let mut tsig_at = None;
    // In u32: an IXFR's one AUTHORITY record plus 65,535 ADDITIONAL ones does not fit a u16.
    for record in 0..u32::from(nscount) + u32::from(arcount) {
        let name_start = at;
        // Owner name: labels ending in the root label or a backward pointer.
        loop {
            let label = *p.get(at).ok_or(formerr)? as usize;
            match label & 0xC0 {
                0x00 => {
                    at += 1 + label;
                    if label == 0 {
                        break;
                    }
                }
                0xC0 => {
                    let target = (u16_at(p, at).ok_or(formerr)? & 0x3FFF) as usize;
                    if target >= name_start {
                        return Err(formerr);
                    }
                    at += 2;
                    break;
                }
                _ => return Err(formerr),
            }
            if at - name_start > MAX_NAME_LEN {
                return Err(formerr);
            }
        }
        let t = u16_at(p, at).ok_or(formerr)?;
        let class = u16_at(p, at + 2).ok_or(formerr)?;
        let ttl_hi = u16_at(p, at + 4).ok_or(formerr)?;
        let ttl_lo = u16_at(p, at + 6).ok_or(formerr)?;
        let rdlen = u16_at(p, at + 8).ok_or(formerr)? as usize;
        at += 10;
        let rdata = p.get(at..at + rdlen).ok_or(formerr)?;
        at += rdlen;
        if record < u32::from(nscount) {
            // IXFR's AUTHORITY: the secondary's SOA. Its rdata is read only by a transfer
            // over TCP (`xfr::ixfr_serial`), off the query path; UDP answers the SOA alone.
            if t != rtype::SOA {
                return Err(formerr);
            }
            continue;
        }
        if t != rtype::OPT {
            // RFC 8945 5.1: the TSIG record is the last of ADDITIONAL, and only one; where it
            // starts fits a u16 (a message is at most 65,535 bytes). Other signatures (SIG(0))
            // are not supported: such a query is answered unsigned.
            if t == tsig::TYPE_TSIG {
                if record + 1 != u32::from(nscount) + u32::from(arcount) {
                    return Err(formerr);
                }
                tsig_at = Some(name_start as u16);
            }
            continue;
        }
        // RFC 6891 6.1.1: one OPT, owned by the root.
        if edns.is_some() || at - rdlen - 10 - name_start != 1 {
            return Err(formerr);
        }
        let mut o = 0;
        while o < rdata.len() {
            let code = u16_at(rdata, o).ok_or(formerr)?;
            let olen = u16_at(rdata, o + 2).ok_or(formerr)? as usize;
            let data = rdata.get(o + 4..o + 4 + olen).ok_or(formerr)?;
            if code == OPTION_ECS {
                ecs = Some(parse_ecs(data).ok_or(formerr)?);
            } else if code == OPTION_COOKIE {
                // RFC 7873 5.2.2: "If the COOKIE option is too short to contain a Client
                // Cookie, ... or is too long ... a FORMERR response MUST be returned."
                cookie = Some(Cookie::parse(data).ok_or(formerr)?);
            }
            o += 4 + olen;
        }
        edns = Some(Edns {
            // RFC 6891 6.2.5: values below 512 are treated as 512.
            payload: class.max(CLASSIC_UDP_LIMIT as u16),
            version: (ttl_hi & 0xFF) as u8,
            dnssec_ok: ttl_lo & 0x8000 != 0,
            compact_ok: ttl_lo & 0x4000 != 0,
        });
    }

    Ok(Query {
        id,
        opcode,
        rd,
        cd,
        question,
        qname,
        qname_len: len,
        qtype,
        qclass,
        edns,
        ecs,
        cookie,
        tsig: tsig_at,
    })
}

/// Sets TC=1 on the response that starts at `base` (a rate-limited reply sent as a slip).
pub fn set_truncated(out: &mut [u8], base: usize) {
    if let Some(flags) = out.get_mut(base + 2) {
        *flags |= (FLAG_TC >> 8) as u8;
    }
}

/// Writes a header-only error response for a rejected packet.
pub fn write_reject(out: &mut Vec<u8>, id: u16, opcode: u8, rd: bool, rcode: Rcode) {
    let mut flags = FLAG_QR | (u16::from(opcode) << 11) | (rcode as u16 & 0xF);
    if rd {
        flags |= FLAG_RD;
    }
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

/// What the writer did, for counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub rcode: Rcode,
    pub truncated: bool,
}

/// Response writer over `out[base..]`: offsets for compression are relative to `base`, so TCP
/// can keep its two-byte length prefix in front.
struct Writer<'a, 'o> {
    out: &'o mut Vec<u8>,
    base: usize,
    /// Names already in the packet (lowercase wire suffix, offset) for compression.
    names: SmallVec<[(&'a [u8], u16); 24]>,
}

impl<'a> Writer<'a, '_> {
    fn len(&self) -> usize {
        self.out.len() - self.base
    }

    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a name, pointing at the longest suffix already written.
    fn name(&mut self, name: &'a [u8]) {
        for at in label_starts(name) {
            let suffix = &name[at..];
            if suffix.len() == 1 {
                break;
            }
            if let Some(&(_, offset)) = self.names.iter().find(|(n, _)| *n == suffix) {
                self.u16(0xC000 | offset);
                return;
            }
            let here = self.len();
            if here < 0x3FFF {
                self.names.push((suffix, here as u16));
            }
            let label = name[at] as usize;
            self.out.extend_from_slice(&name[at..at + 1 + label]);
        }
        self.out.push(0);
    }

    fn rrset(&mut self, owner: Owner<'a>, set: &'a RRset) {
        for rd in &set.rdatas {
            self.record(owner, set.rtype, set.ttl, rd);
        }
    }

    /// Writes the records of `synth` that belong in `section` (an NSEC and RRSIGs made on
    /// demand), counting them into `count`; false (nothing undone) past `limit`.
    fn synths(
        &mut self,
        synth: &'a [Synth<'_>],
        section: Section,
        limit: usize,
        count: &mut u16,
    ) -> bool {
        for s in synth.iter().filter(|s| s.section == section) {
            // Unsigned (`Answer::sign` not called, or it could not sign): nothing to write.
            let Some(signed) = s.set.ready() else {
                continue;
            };
            let owner = match &signed.owner {
                Some(name) => Owner::Name(name),
                None => s.owner,
            };
            for set in signed.records.iter().chain(std::iter::once(&signed.sig)) {
                for rd in &set.rdatas {
                    self.record(owner, set.rtype, s.ttl, rd);
                    *count += 1;
                }
            }
            if self.len() > limit {
                return false;
            }
        }
        true
    }

    fn record(&mut self, owner: Owner<'a>, rtype: u16, ttl: u32, rd: &'a Rdata) {
        match owner {
            Owner::Query => self.u16(0xC000 | HEADER_LEN as u16),
            Owner::Name(n) => self.name(n),
        }
        self.u16(rtype);
        self.u16(crate::model::CLASS_IN);
        self.u32(ttl);
        let len_at = self.out.len();
        self.u16(0);
        match rd {
            Rdata::Name(n) => self.name(n.wire()),
            Rdata::Mx {
                preference,
                exchange,
            } => {
                self.u16(*preference);
                self.name(exchange.wire());
            }
            Rdata::Soa(soa) => {
                self.name(soa.mname.wire());
                self.name(soa.rname.wire());
                for v in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
                    self.u32(v);
                }
            }
            Rdata::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                self.u16(*priority);
                self.u16(*weight);
                self.u16(*port);
                // RFC 2782: "name compression is not to be used for this field".
                self.out.extend_from_slice(target.wire());
            }
            Rdata::Opaque(bytes) => self.out.extend_from_slice(bytes),
        }
        let rdlen = (self.out.len() - len_at - 2) as u16;
        self.out[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    }

    /// Writes a section's entries; false (with everything since the checkpoint undone) when
    /// they would pass `limit`.
    fn section(&mut self, entries: &[Entry<'a>], limit: usize) -> bool {
        for e in entries {
            self.rrset(e.owner, e.rrset);
            if self.len() > limit {
                return false;
            }
        }
        true
    }

    fn rewind(&mut self, len: usize, names: usize) {
        self.out.truncate(self.base + len);
        self.names.truncate(names);
    }
}

fn count(entries: &[Entry<'_>]) -> u16 {
    entries.iter().map(|e| e.rrset.rdatas.len() as u16).sum()
}

/// Writes the response to `q` into `out` (appending), within `limit` bytes. Answer and
/// authority that do not fit set TC=1 and go out empty; additional data that does not fit is
/// left out unless it is required glue (RFC 2181 9, RFC 9471). `udp_payload` is the EDNS size
/// advertised in our OPT; `cookie` the COOKIE option to send (client and server cookie).
pub fn write_response(
    out: &mut Vec<u8>,
    q: &Query<'_>,
    ans: &Answer<'_>,
    limit: usize,
    udp_payload: u16,
    cookie: Option<&[u8; cookie::OPTION_LEN]>,
) -> Written {
    let base = out.len();
    let mut w = Writer {
        out,
        base,
        names: SmallVec::new(),
    };
    w.out.extend_from_slice(&[0; HEADER_LEN]);
    w.out.extend_from_slice(q.question);
    let qname = q.qname();
    for at in label_starts(qname) {
        if qname.len() - at > 1 {
            w.names.push((&qname[at..], (HEADER_LEN + at) as u16));
        }
    }
    let after_question = (w.len(), w.names.len());
    let ecs_len = q
        .ecs
        .map_or(0, |s| 8 + usize::from(s.source_prefix).div_ceil(8));
    let cookie_len = cookie.map_or(0, |c| 4 + c.len());
    let room = limit.saturating_sub(if q.edns.is_some() {
        OPT_LEN + ecs_len + cookie_len
    } else {
        0
    });

    let mut truncated = false;
    let (mut an, mut ns, mut ar) = (0, 0, 0);
    if w.section(&ans.answer, room)
        && w.synths(&ans.synth, Section::Answer, room, &mut an)
        && w.section(&ans.authority, room)
        && w.synths(&ans.synth, Section::Authority, room, &mut ns)
    {
        an += count(&ans.answer);
        ns += count(&ans.authority);
        for e in &ans.additional {
            let mark = (w.len(), w.names.len());
            w.rrset(e.owner, e.rrset);
            if w.len() > room {
                w.rewind(mark.0, mark.1);
                truncated = e.required;
                if truncated {
                    break;
                }
                continue;
            }
            ar += e.rrset.rdatas.len() as u16;
        }
    } else {
        truncated = true;
    }
    if truncated {
        w.rewind(after_question.0, after_question.1);
        (an, ns, ar) = (0, 0, 0);
    }
    if let Some(edns) = q.edns {
        // RFC 6891 6.1.3: extended RCODE in the OPT TTL; version 0; DO echoed (RFC 3225 3);
        // no options echoed but COOKIE (with our server cookie) and ECS, which RFC 7871 7.2.1
        // requires back with our scope.
        w.out.push(0);
        w.u16(rtype::OPT);
        w.u16(udp_payload);
        let ext = ((ans.rcode as u32) >> 4) << 24;
        // CO is echoed too (RFC 9824 4).
        let flags =
            if edns.dnssec_ok { 0x8000 } else { 0 } | if edns.compact_ok { 0x4000 } else { 0 };
        w.u32(ext | flags);
        w.u16((ecs_len + cookie_len) as u16);
        if let Some(c) = cookie {
            // RFC 7873 5.2.3-5.2.5: the client cookie echoed with our server cookie.
            w.u16(OPTION_COOKIE);
            w.u16(c.len() as u16);
            w.out.extend_from_slice(c);
        }
        if let Some(subnet) = q.ecs {
            let addr_len = usize::from(subnet.source_prefix).div_ceil(8);
            w.u16(OPTION_ECS);
            w.u16((4 + addr_len) as u16);
            w.u16(subnet.family);
            w.out.push(subnet.source_prefix);
            // May be longer than the source prefix: a routed name whose answer differs inside
            // the client's prefix says so (RFC 7871 7.3.1: resolvers then ask with the longer
            // prefix). A sticky pool's scope never exceeds the source prefix.
            w.out.push(ans.ecs_scope);
            w.out.extend_from_slice(&subnet.addr[..addr_len]);
        }
        ar += 1;
    }

    let mut flags = FLAG_QR | (u16::from(q.opcode) << 11) | (ans.rcode as u16 & 0xF);
    if ans.authoritative {
        flags |= FLAG_AA;
    }
    if truncated {
        flags |= FLAG_TC;
    }
    if q.rd {
        flags |= FLAG_RD;
    }
    if q.cd {
        flags |= FLAG_CD;
    }
    let header = &mut w.out[base..base + HEADER_LEN];
    header[0..2].copy_from_slice(&q.id.to_be_bytes());
    header[2..4].copy_from_slice(&flags.to_be_bytes());
    header[4..6].copy_from_slice(&1u16.to_be_bytes());
    header[6..8].copy_from_slice(&an.to_be_bytes());
    header[8..10].copy_from_slice(&ns.to_be_bytes());
    header[10..12].copy_from_slice(&ar.to_be_bytes());
    Written {
        rcode: ans.rcode,
        truncated,
    }
}

/// Largest DNS message over TCP (RFC 1035 4.2.2: two-byte length).
pub const TCP_LIMIT: usize = 65535;

/// Writes a zone transfer (RFC 5936 2.2) answering `q` into `out` (appending): `records` in
/// order, packed greedily by RRset into as few messages as fit `TCP_LIMIT` each (an RRset
/// larger than a message is split between messages by record), every message with its TCP
/// two-byte length in front, names compressed within each message, AA set. The question goes
/// in the first message only (RFC 5936 2.2.1 allows it there or in all): every message after
/// it is then pure data, and clients (kdig, NSD, Knot, BIND) accept both forms. With EDNS in
/// the query, each message carries an OPT (`udp_payload`, no options). Returns how many
/// messages it wrote; None (with nothing written) if one record alone cannot fit a message.
/// `signed`: the verified request of a signed transfer and the time; each message then ends
/// with a TSIG record (room kept for it), the first chained to the request's MAC, every later
/// one to the message before (RFC 8945 5.3.1).
pub fn write_transfer(
    out: &mut Vec<u8>,
    q: &Query<'_>,
    records: &[Entry<'_>],
    udp_payload: u16,
    signed: Option<(&tsig::Verified<'_>, u64)>,
) -> Option<usize> {
    let start = out.len();
    // The next record to write: (entry, record within its RRset).
    let mut at = (0usize, 0usize);
    let mut messages = 0usize;
    let mut prior: Option<tsig::Mac> = None;
    let room = TCP_LIMIT
        - if q.edns.is_some() { OPT_LEN } else { 0 }
        - signed.map_or(0, |(v, _)| tsig::space(v.key));
    loop {
        let frame = out.len();
        out.extend_from_slice(&[0, 0]);
        let base = out.len();
        let mut w = Writer {
            out: &mut *out,
            base,
            names: SmallVec::new(),
        };
        w.out.extend_from_slice(&[0; HEADER_LEN]);
        let first = messages == 0;
        if first {
            w.out.extend_from_slice(q.question);
            let qname = q.qname();
            for i in label_starts(qname) {
                if qname.len() - i > 1 {
                    w.names.push((&qname[i..], (HEADER_LEN + i) as u16));
                }
            }
        }
        let mut an: u16 = 0;
        while let Some(e) = records.get(at.0) {
            let rest = e.rrset.rdatas.get(at.1..).unwrap_or_default();
            let mark = (w.len(), w.names.len());
            for rd in rest {
                w.record(e.owner, e.rrset.rtype, e.rrset.ttl, rd);
            }
            if w.len() <= room {
                an += rest.len() as u16;
                at = (at.0 + 1, 0);
                continue;
            }
            w.rewind(mark.0, mark.1);
            if an > 0 {
                break;
            }
            // Alone in a message and still too big: as many of its records as fit.
            for rd in rest {
                let mark = (w.len(), w.names.len());
                w.record(e.owner, e.rrset.rtype, e.rrset.ttl, rd);
                if w.len() > room {
                    w.rewind(mark.0, mark.1);
                    break;
                }
                an += 1;
                at.1 += 1;
            }
            if an == 0 {
                out.truncate(start);
                return None;
            }
            break;
        }
        let mut ar = 0u16;
        if let Some(edns) = q.edns {
            w.out.push(0);
            w.u16(rtype::OPT);
            w.u16(udp_payload);
            w.u32(if edns.dnssec_ok { 0x8000 } else { 0 });
            w.u16(0);
            ar = 1;
        }
        let mut flags = FLAG_QR | FLAG_AA | (u16::from(q.opcode) << 11);
        if q.rd {
            flags |= FLAG_RD;
        }
        if q.cd {
            flags |= FLAG_CD;
        }
        let header = &mut out[base..base + HEADER_LEN];
        header[0..2].copy_from_slice(&q.id.to_be_bytes());
        header[2..4].copy_from_slice(&flags.to_be_bytes());
        header[4..6].copy_from_slice(&u16::from(first).to_be_bytes());
        header[6..8].copy_from_slice(&an.to_be_bytes());
        header[10..12].copy_from_slice(&ar.to_be_bytes());
        if let Some((request, now)) = signed {
            prior = Some(match &prior {
                None => tsig::sign_answer(out, base, request, now),
                Some(mac) => tsig::sign_next(out, base, request.key, mac, now),
            });
        }
        let len = (out.len() - base) as u16;
        out[frame..frame + 2].copy_from_slice(&len.to_be_bytes());
        messages += 1;
        if at.0 >= records.len() {
            return Some(messages);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, arcount: u16, extra: &[u8]) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(&arcount.to_be_bytes());
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(extra);
        p
    }

    const OPT: &[u8] = &[0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0];

    #[test]
    fn parses_question_lowercase_and_keeps_raw_case() {
        let p = query(b"\x03WwW\x07example\x03com\x00", 1, 1, OPT);
        let q = parse_query(&p).unwrap();
        assert_eq!(q.id, 0x1234);
        assert!(q.rd);
        assert_eq!(q.qname(), b"\x03www\x07example\x03com\x00");
        assert_eq!(&q.question[..4], b"\x03WwW");
        assert_eq!(
            q.edns,
            Some(Edns {
                payload: 4096,
                version: 0,
                dnssec_ok: true,
                compact_ok: false,
            })
        );
    }

    /// An IXFR query carries the secondary's SOA in AUTHORITY (RFC 1995 3); no other query
    /// may carry anything there, and nothing but a SOA may be there.
    #[test]
    fn ixfr_may_carry_one_soa_in_authority() {
        // Root-owned SOA: type 6, class IN, TTL 0, rdata of two root names and five numbers.
        let mut soa = vec![0, 0, 6, 0, 1, 0, 0, 0, 0, 0, 22, 0, 0];
        soa.extend_from_slice(&[0; 20]);
        let with_authority = |qtype: u16, record: &[u8]| {
            let mut p = query(b"\x00", qtype, 0, record);
            p[9] = 1;
            p
        };
        let ixfr = with_authority(rtype::IXFR, &soa);
        assert_eq!(parse_query(&ixfr).unwrap().qtype, rtype::IXFR);
        let mut not_soa = soa.clone();
        not_soa[2] = 1;
        for bad in [
            with_authority(rtype::IXFR, &not_soa),
            with_authority(rtype::AXFR, &soa),
            with_authority(1, &soa),
        ] {
            assert!(matches!(
                parse_query(&bad),
                Err(Reject::Header {
                    rcode: Rcode::FormErr,
                    ..
                })
            ));
        }
    }

    /// Found by the `wire` fuzz target: an IXFR with one AUTHORITY record and ARCOUNT 65,535
    /// overflowed the record count.
    #[test]
    fn an_ixfr_with_the_largest_additional_count_is_formerr_not_a_panic() {
        for crash in [
            &b"\x12\x35\x01\x00\x00\x01\x00\x00\x00\x01\xff\xff\x00\x00\xfb\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x70\x6f\x6d\x00\x00\x0d\xb8\x00\x81"[..],
            &b"\xf2\x34\x01\x00\x00\x01\x00\x00\x00\x01\xff\xff\x00\x00\xfb\xff\x42\x08"[..],
        ] {
            assert!(parse_query(crash).is_err());
        }
    }

    #[test]
    fn bad_input_table() {
        let formerr = Err(Reject::Header {
            id: 0x1234,
            opcode: 0,
            rd: true,
            rcode: Rcode::FormErr,
        });
        assert_eq!(
            parse_query(&[0; 11]).unwrap_err(),
            Reject::Drop(DropReason::Short)
        );
        let mut response = query(b"\x00", 1, 0, &[]);
        response[2] |= 0x80;
        assert_eq!(
            parse_query(&response).unwrap_err(),
            Reject::Drop(DropReason::Response)
        );
        // Truncated question, pointer in question, label type 01, name too long.
        assert_eq!(
            parse_query(&query(b"\x03ww", 1, 0, &[])[..15]).map(|_| ()),
            formerr.map(|_: ()| ())
        );
        for name in [&b"\xc0\x0c"[..], b"\x40abc\x00"] {
            assert_eq!(
                parse_query(&query(name, 1, 0, &[])).map(|_| ()),
                formerr.map(|_: ()| ())
            );
        }
        let mut long = Vec::new();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.push(0);
        assert_eq!(
            parse_query(&query(&long, 1, 0, &[])).map(|_| ()),
            formerr.map(|_: ()| ())
        );
        // Two OPTs; OPT with a non-root owner; OPT option overrunning its rdata.
        let two = [OPT, OPT].concat();
        assert_eq!(
            parse_query(&query(b"\x00", 1, 2, &two)).map(|_| ()),
            formerr.map(|_: ()| ())
        );
        let named = [&b"\x01a\x00"[..], &OPT[1..]].concat();
        assert_eq!(
            parse_query(&query(b"\x00", 1, 1, &named)).map(|_| ()),
            formerr.map(|_: ()| ())
        );
        let overrun = [0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 4, 0, 8, 0, 9];
        assert_eq!(
            parse_query(&query(b"\x00", 1, 1, &overrun)).map(|_| ()),
            formerr.map(|_: ()| ())
        );
        // Forward pointer in an additional record's owner.
        let fwd = [0xC0, 0xFF, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            parse_query(&query(b"\x00", 1, 1, &fwd)).map(|_| ()),
            formerr.map(|_: ()| ())
        );
        // Records in ANSWER.
        let mut p = query(b"\x00", 1, 0, &[]);
        p[7] = 1;
        assert_eq!(parse_query(&p).map(|_| ()), formerr.map(|_: ()| ()));
        // Opcodes.
        let mut p = query(b"\x00", 1, 0, &[]);
        p[2] = 0x01 | (2 << 3);
        assert!(matches!(
            parse_query(&p),
            Err(Reject::Header {
                rcode: Rcode::NotImp,
                opcode: 2,
                ..
            })
        ));
        p[2] = 0x01 | (4 << 3);
        assert!(matches!(
            parse_query(&p),
            Err(Reject::Header {
                rcode: Rcode::Refused,
                opcode: 4,
                ..
            })
        ));
    }
}
