//! RFC 2136 UPDATE over a zone's static data: the message (`parse`: zone, prerequisites and
//! updates, names decompressed, every RFC 2136 3.x FORMERR and NOTZONE case), the policy
//! (`permitted`: `[[zone.update]]` grants per TSIG key) and the change itself (`apply`: the
//! prerequisites against the zone as served, then the updates on a copy, checked as a zone
//! file is). An accepted change is a new `ZoneEdits` layer: the RRsets that differ from the
//! file, the serial one past the one served, and a journal entry (what IXFR sends). `served`
//! puts a layer over its file, at load and after each change.
//!
//! Where the RFC says to ignore an update silently, weir refuses the whole message instead
//! (REFUSED, with the reason as extended DNS error text) when the update would break the zone
//! or cannot mean what its sender wants: deleting the apex SOA or the last apex NS, a CNAME
//! beside other data, a change to the SOA (the file owns it and weir sets its serial), data
//! below a delegation, A/AAAA/CNAME at a managed name. A refused message changes nothing.

use std::collections::BTreeMap;

use crate::model::{
    CLASS_ANY, CLASS_IN, JOURNAL_MAX, JournalEntry, MAX_NAME_LEN, Name, RRset, Rcode, Rdata,
    Record, Soa, StoredSet, ZoneEdits, rtype, rtype_name,
};
use crate::zones::{self, Zone};

/// DNS opcode UPDATE (RFC 2136 1).
pub const OPCODE_UPDATE: u8 = 5;
/// Class NONE (RFC 2136 2.4: "RRset does not exist", "delete an RR from an RRset").
const CLASS_NONE: u16 = 254;

/// An UPDATE that passed its TSIG and policy checks, for the writer to apply; the reply is
/// the new serial (None: the prerequisites held and nothing changed) or why not.
#[derive(Debug)]
pub struct Submission {
    pub update: Update,
    /// The TSIG key that signed it (the audit record's actor).
    pub key: Name,
    pub client: std::net::IpAddr,
    pub reply: tokio::sync::oneshot::Sender<Result<Option<u32>, Refusal>>,
}

/// One UPDATE message, as parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub id: u16,
    pub zone: Name,
    pub prereqs: Vec<Prereq>,
    pub ops: Vec<Op>,
}

/// RFC 2136 2.4 prerequisites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prereq {
    /// Class ANY, type ANY: some RR at the name.
    NameInUse(Name),
    /// Class NONE, type ANY: no RR at the name.
    NameNotInUse(Name),
    /// Class ANY: the RRset exists (value independent).
    Exists(Name, u16),
    /// Class NONE: the RRset does not exist.
    NotExists(Name, u16),
    /// Zone class: the RRset is exactly these records (value dependent, gathered per set).
    Equals(Name, u16, Vec<Rdata>),
}

/// RFC 2136 2.5 updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Add(Record),
    /// Class ANY, type ANY.
    DeleteName(Name),
    /// Class ANY.
    DeleteRRset(Name, u16),
    /// Class NONE: one record.
    Delete(Name, u16, Rdata),
}

impl Op {
    /// The name and type this update changes (ANY for a whole name).
    pub fn target(&self) -> (&Name, u16) {
        match self {
            Op::Add(r) => (&r.owner, r.rtype),
            Op::DeleteName(n) => (n, rtype::ANY),
            Op::DeleteRRset(n, t) | Op::Delete(n, t, _) => (n, *t),
        }
    }
}

/// Why an UPDATE changes nothing: the RCODE and, for a refusal, what to tell the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub rcode: Rcode,
    pub why: String,
}

impl Refusal {
    fn new(rcode: Rcode, why: impl Into<String>) -> Refusal {
        Refusal {
            rcode,
            why: why.into(),
        }
    }
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// A possibly compressed name at `at`: the name and where it ends in the message. Pointers
/// must point backwards (so there are no loops); at most 255 octets.
fn name_at(msg: &[u8], at: usize) -> Option<(Name, usize)> {
    let mut wire = Vec::with_capacity(64);
    let mut pos = at;
    let mut end = None;
    loop {
        let len = *msg.get(pos)? as usize;
        match len & 0xC0 {
            0x00 => {
                wire.extend_from_slice(msg.get(pos..pos + 1 + len)?);
                if wire.len() > MAX_NAME_LEN {
                    return None;
                }
                pos += 1 + len;
                if len == 0 {
                    break;
                }
            }
            0xC0 => {
                let target = (u16_at(msg, pos)? & 0x3FFF) as usize;
                if target >= pos {
                    return None;
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return None,
        }
    }
    let (name, _) = Name::read(&wire, 0)?;
    Some((name, end.unwrap_or(pos)))
}

/// Rdata at `msg[at..at + len]`, names decompressed (RFC 3597 4 lets senders compress those
/// of NS, CNAME, PTR, MX and SOA; SRV targets are decompressed too, as BIND does).
fn rdata_at(msg: &[u8], rtype: u16, at: usize, len: usize) -> Option<Rdata> {
    let end = at + len;
    let bytes = msg.get(at..end)?;
    let fixed = |n: usize| -> Option<(&[u8], Name)> {
        let (name, name_end) = name_at(msg, at + n)?;
        (name_end == end).then_some((bytes.get(..n)?, name))
    };
    let mut wire = Vec::with_capacity(len + 32);
    match rtype {
        rtype::NS | rtype::CNAME | rtype::PTR | rtype::DNAME => {
            let (_, name) = fixed(0)?;
            wire.extend_from_slice(name.wire());
        }
        rtype::MX | rtype::SRV => {
            let (head, name) = fixed(if rtype == rtype::MX { 2 } else { 6 })?;
            wire.extend_from_slice(head);
            wire.extend_from_slice(name.wire());
        }
        rtype::SOA => {
            let (mname, next) = name_at(msg, at)?;
            let (rname, next) = name_at(msg, next)?;
            if next + 20 != end {
                return None;
            }
            wire.extend_from_slice(mname.wire());
            wire.extend_from_slice(rname.wire());
            wire.extend_from_slice(&msg[next..end]);
        }
        _ => wire.extend_from_slice(bytes),
    }
    let rdata = Rdata::from_wire(rtype, &wire)?;
    zones::valid_rdata(rtype, &rdata).then_some(rdata)
}

/// Meta and query-only types, which no record has (RFC 2136 3.4.1.2).
fn is_meta(t: u16) -> bool {
    matches!(
        t,
        rtype::OPT | rtype::TSIG | rtype::IXFR | rtype::AXFR | 253 | 254 | rtype::ANY
    )
}

/// Parses an UPDATE message (opcode 5, QR clear). `tsig_at`: where its TSIG record starts,
/// which ends the records read (and is not counted in ARCOUNT). Errors are FORMERR, NOTAUTH
/// (a zone class weir does not serve) and NOTZONE (a name outside the zone), RFC 2136 3.
pub fn parse(msg: &[u8], tsig_at: Option<usize>) -> Result<Update, Rcode> {
    let formerr = Rcode::FormErr;
    let count = |at| u16_at(msg, at).ok_or(formerr);
    let id = count(0)?;
    let (zocount, prcount, upcount, adcount) = (count(4)?, count(6)?, count(8)?, count(10)?);
    if zocount != 1 {
        return Err(formerr);
    }
    let (zone, at) = name_at(msg, 12).ok_or(formerr)?;
    let (ztype, zclass) = (count(at)?, count(at + 2)?);
    if ztype != rtype::SOA {
        return Err(formerr);
    }
    if zclass != CLASS_IN {
        return Err(Rcode::NotAuth);
    }
    let ar = u32::from(adcount).saturating_sub(u32::from(tsig_at.is_some()));
    let end = tsig_at.unwrap_or(msg.len());
    let mut at = at + 4;
    let mut prereqs = Vec::new();
    let mut equals: Vec<(Name, u16, Vec<Rdata>)> = Vec::new();
    let mut ops = Vec::new();
    let total = u32::from(prcount) + u32::from(upcount) + ar;
    for i in 0..total {
        let (owner, next) = name_at(msg, at).ok_or(formerr)?;
        let t = count(next)?;
        let class = count(next + 2)?;
        let ttl = u32::from(count(next + 4)?) << 16 | u32::from(count(next + 6)?);
        let rdlen = count(next + 8)? as usize;
        let rd = next + 10;
        if rd + rdlen > end {
            return Err(formerr);
        }
        at = rd + rdlen;
        if i >= u32::from(prcount) + u32::from(upcount) {
            // ADDITIONAL (an OPT, say): RFC 2136 3.5 lets a server ignore it.
            continue;
        }
        let read = || rdata_at(msg, t, rd, rdlen).ok_or(formerr);
        let in_zone = owner.is_at_or_below(&zone);
        if i < u32::from(prcount) {
            // RFC 2136 3.2.
            if ttl != 0 {
                return Err(formerr);
            }
            if !in_zone {
                return Err(Rcode::NotZone);
            }
            match (class, t) {
                (CLASS_ANY | CLASS_NONE, _) if rdlen != 0 => return Err(formerr),
                (CLASS_ANY, rtype::ANY) => prereqs.push(Prereq::NameInUse(owner)),
                (CLASS_ANY, t) => prereqs.push(Prereq::Exists(owner, t)),
                (CLASS_NONE, rtype::ANY) => prereqs.push(Prereq::NameNotInUse(owner)),
                (CLASS_NONE, t) => prereqs.push(Prereq::NotExists(owner, t)),
                (CLASS_IN, t) if !is_meta(t) => {
                    let rdata = read()?;
                    match equals.iter_mut().find(|(n, et, _)| *n == owner && *et == t) {
                        Some((_, _, set)) => set.push(rdata),
                        None => equals.push((owner, t, vec![rdata])),
                    }
                }
                _ => return Err(formerr),
            }
            continue;
        }
        // RFC 2136 3.4.1: the prescan.
        if !in_zone {
            return Err(Rcode::NotZone);
        }
        let op = match class {
            CLASS_IN if !is_meta(t) => Op::Add(Record {
                owner,
                rtype: t,
                ttl,
                rdata: read()?,
            }),
            CLASS_ANY if ttl != 0 || rdlen != 0 => return Err(formerr),
            CLASS_ANY if t == rtype::ANY => Op::DeleteName(owner),
            CLASS_ANY if !is_meta(t) => Op::DeleteRRset(owner, t),
            CLASS_NONE if ttl == 0 && !is_meta(t) => Op::Delete(owner, t, read()?),
            _ => return Err(formerr),
        };
        ops.push(op);
    }
    if at != end {
        return Err(formerr);
    }
    prereqs.extend(
        equals
            .into_iter()
            .map(|(n, t, set)| Prereq::Equals(n, t, set)),
    );
    Ok(Update {
        id,
        zone,
        prereqs,
        ops,
    })
}

/// Whether `key` may make every change of `update` under `grants` (`[[zone.update]]`); the
/// first change it may not make, in words, otherwise. Prerequisites only read.
pub fn permitted(
    grants: &[crate::model::Grant],
    key: &Name,
    update: &Update,
) -> Result<(), String> {
    let own: Vec<_> = grants.iter().filter(|g| g.key == *key).collect();
    if own.is_empty() {
        return Err(format!("key {key} may not update zone {}", update.zone));
    }
    for op in &update.ops {
        let (name, t) = op.target();
        if !own.iter().any(|g| g.permits(name, t)) {
            let what = if t == rtype::ANY {
                "every type".to_string()
            } else {
                rtype_name(t)
            };
            return Err(format!("key {key} may not change {what} at {name}"));
        }
    }
    Ok(())
}

/// An accepted change: the zone's new layer and what changed, for the audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub edits: ZoneEdits,
    /// The changed RRsets before and after, in zone-file form.
    pub before: Vec<String>,
    pub after: Vec<String>,
}

/// RFC 1982: `a` is newer than `b`.
pub fn serial_newer(a: u32, b: u32) -> bool {
    a != b && (a.wrapping_sub(b) as i32) > 0
}

fn soa_of(zone: &Zone) -> Option<&Soa> {
    match zone.get(&zone.origin, rtype::SOA)?.rdatas.first()? {
        Rdata::Soa(soa) => Some(soa),
        _ => None,
    }
}

fn put(zone: &mut Zone, owner: &Name, set: Option<RRset>, rtype: u16) {
    let sets = zone.rrsets.entry(owner.clone()).or_default();
    sets.retain(|s| s.rtype != rtype);
    if let Some(set) = set.filter(|s| !s.rdatas.is_empty()) {
        let at = sets.partition_point(|s| s.rtype < set.rtype);
        sets.insert(at, set);
    }
    if sets.is_empty() {
        zone.rrsets.remove(owner);
    }
}

/// `file` as served with `edits` over it: each stored RRset replaces the file's, and the
/// layer's serial is served when it is newer than the file's. Err: a stored set that does not
/// decode (a corrupt store).
pub fn served(file: &Zone, edits: &ZoneEdits) -> Result<Zone, String> {
    let mut zone = file.clone();
    for stored in &edits.rrsets {
        let set = stored.rrset().ok_or_else(|| {
            format!(
                "the stored update of {} {} in zone {} does not decode",
                stored.owner,
                rtype_name(stored.rtype),
                file.origin
            )
        })?;
        put(&mut zone, &stored.owner, Some(set), stored.rtype);
    }
    let origin = zone.origin.clone();
    if let Some(set) = zone
        .rrsets
        .get_mut(&origin)
        .and_then(|sets| sets.iter_mut().find(|s| s.rtype == rtype::SOA))
        && let Some(Rdata::Soa(soa)) = set.rdatas.first_mut()
        && serial_newer(edits.serial, soa.serial)
    {
        soa.serial = edits.serial;
    }
    Ok(zone)
}

/// Same records, whatever their order.
fn same(a: Option<&RRset>, b: Option<&RRset>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.ttl == b.ttl
                && a.rdatas.len() == b.rdatas.len()
                && a.rdatas.iter().all(|r| b.rdatas.contains(r))
        }
        _ => false,
    }
}

/// The records of `a` not in `b` (all of `a` when the TTL changed: IXFR carries records with
/// their TTL), as a stored set; None when there are none.
fn minus(owner: &Name, a: Option<&RRset>, b: Option<&RRset>) -> Option<StoredSet> {
    let a = a?;
    let rdatas: Vec<Rdata> = match b {
        Some(b) if b.ttl == a.ttl => a
            .rdatas
            .iter()
            .filter(|r| !b.rdatas.contains(r))
            .cloned()
            .collect(),
        _ => a.rdatas.clone(),
    };
    (!rdatas.is_empty()).then(|| {
        StoredSet::new(
            owner,
            &RRset {
                rdatas,
                ..a.clone()
            },
        )
    })
}

/// The working copy of the RRsets an update touches, over the zone as served.
struct Work<'z> {
    served: &'z Zone,
    changed: BTreeMap<(Name, u16), Option<RRset>>,
}

impl Work<'_> {
    fn get(&self, name: &Name, t: u16) -> Option<&RRset> {
        match self.changed.get(&(name.clone(), t)) {
            Some(set) => set.as_ref(),
            None => self.served.get(name, t),
        }
    }

    /// The types at `name` now.
    fn types(&self, name: &Name) -> Vec<u16> {
        let mut types: Vec<u16> = (self.served.rrsets.get(name).into_iter().flatten())
            .map(|s| s.rtype)
            .chain(
                (self.changed.iter())
                    .filter(|((n, _), _)| n == name)
                    .map(|((_, t), _)| *t),
            )
            .collect();
        types.sort_unstable();
        types.dedup();
        types.retain(|&t| self.get(name, t).is_some());
        types
    }

    fn set(&mut self, name: &Name, t: u16, set: Option<RRset>) {
        let set = set.filter(|s| !s.rdatas.is_empty());
        self.changed.insert((name.clone(), t), set);
    }

    /// The delegation `name` is strictly below, if any (an NS set below the apex).
    fn cut_above(&self, name: &Name) -> Option<Name> {
        let origin = &self.served.origin;
        let mut up = name.parent();
        while let Some(n) = up.filter(|n| n != origin && n.is_at_or_below(origin)) {
            if self.get(&n, rtype::NS).is_some() {
                return Some(n);
            }
            up = n.parent();
        }
        None
    }
}

/// Applies `update` to zone `file` (served as `served`, with `edits` over it): the
/// prerequisites against `served`, then every update, then the zone checks a file gets.
/// `managed(name)`: a pool or routed name, whose A/AAAA/CNAME weir computes. Ok(None): the
/// prerequisites held and nothing changed (NOERROR, no new serial).
pub fn apply(
    file: &Zone,
    served: &Zone,
    edits: &ZoneEdits,
    update: &Update,
    managed: &dyn Fn(&Name) -> bool,
) -> Result<Option<Applied>, Refusal> {
    let in_use = |name: &Name| served.rrsets.contains_key(name) || managed(name);
    let exists = |name: &Name, t: u16| {
        served.get(name, t).is_some() || (managed(name) && matches!(t, rtype::A | rtype::AAAA))
    };
    // RFC 2136 3.2.
    for p in &update.prereqs {
        let failed = match p {
            Prereq::NameInUse(n) => (!in_use(n)).then_some((Rcode::NxDomain, n, rtype::ANY)),
            Prereq::NameNotInUse(n) => in_use(n).then_some((Rcode::YxDomain, n, rtype::ANY)),
            Prereq::Exists(n, t) => (!exists(n, *t)).then_some((Rcode::NxRrset, n, *t)),
            Prereq::NotExists(n, t) => exists(n, *t).then_some((Rcode::YxRrset, n, *t)),
            Prereq::Equals(n, t, rdatas) => {
                // RFC 2136 3.2.3: the same records, TTLs aside (and repeats are one).
                let held = served.get(n, *t).is_some_and(|s| {
                    rdatas.iter().all(|r| s.rdatas.contains(r))
                        && s.rdatas.iter().all(|r| rdatas.contains(r))
                });
                (!held).then_some((Rcode::NxRrset, n, *t))
            }
        };
        if let Some((rcode, name, t)) = failed {
            let what = if t == rtype::ANY {
                String::new()
            } else {
                format!(" {}", rtype_name(t))
            };
            return Err(Refusal::new(
                rcode,
                format!("prerequisite failed at {name}{what}"),
            ));
        }
    }
    let origin = &served.origin;
    let refused = |why: String| Err(Refusal::new(Rcode::Refused, why));
    let mut work = Work {
        served,
        changed: BTreeMap::new(),
    };
    // RFC 2136 3.4.2, in message order.
    for op in &update.ops {
        let (name, t) = op.target();
        if t == rtype::SOA {
            return refused(format!(
                "the SOA of {origin} is the zone file's; weir sets its serial"
            ));
        }
        if managed(name) && matches!(t, rtype::A | rtype::AAAA | rtype::CNAME) {
            return refused(format!(
                "{name} is a managed name: its addresses come from its pool (change them with the admin API or weir ctl)"
            ));
        }
        if let Some(cut) = work.cut_above(name) {
            return refused(format!(
                "{name} is below the delegation at {cut}; its data is the child zone's"
            ));
        }
        match op {
            Op::Add(r) => {
                let types = work.types(name);
                if t == rtype::CNAME && types.iter().any(|&o| o != rtype::CNAME) {
                    return refused(format!(
                        "{name} has other data; a CNAME cannot be beside it"
                    ));
                }
                if t != rtype::CNAME && types.contains(&rtype::CNAME) {
                    return refused(format!("{name} is a CNAME; no other data can be beside it"));
                }
                let mut set = match work.get(name, t) {
                    // A CNAME is a single record: a new one replaces it.
                    Some(set) if t != rtype::CNAME => set.clone(),
                    _ => RRset {
                        rtype: t,
                        ttl: r.ttl,
                        rdatas: Vec::new(),
                    },
                };
                // RFC 2181 5.2: one TTL per set; the newest record's.
                set.ttl = r.ttl;
                if !set.rdatas.contains(&r.rdata) {
                    set.rdatas.push(r.rdata.clone());
                }
                work.set(name, t, Some(set));
            }
            Op::DeleteName(_) => {
                for t in work.types(name) {
                    if name == origin && matches!(t, rtype::SOA | rtype::NS) {
                        continue;
                    }
                    work.set(name, t, None);
                }
            }
            Op::DeleteRRset(..) if name == origin && t == rtype::NS => {
                return refused(format!(
                    "deleting every NS of {origin} would break the zone"
                ));
            }
            Op::DeleteRRset(..) => work.set(name, t, None),
            Op::Delete(_, _, rdata) => {
                let Some(mut set) = work.get(name, t).cloned() else {
                    continue;
                };
                set.rdatas.retain(|r| r != rdata);
                if set.rdatas.is_empty() && name == origin && t == rtype::NS {
                    return refused(format!(
                        "deleting the last NS of {origin} would break the zone"
                    ));
                }
                work.set(name, t, Some(set));
            }
        }
    }
    let changed: Vec<(Name, u16)> = (work.changed.iter())
        .filter(|((n, t), set)| !same(served.get(n, *t), set.as_ref()))
        .map(|(key, _)| key.clone())
        .collect();
    if changed.is_empty() {
        return Ok(None);
    }
    let mut next = served.clone();
    for (name, t) in &changed {
        put(&mut next, name, work.get(name, *t).cloned(), *t);
    }
    if let Some((name, _, problem)) = zones::check(&next).into_iter().next() {
        return refused(format!("the zone would be broken: {name}: {problem}"));
    }

    Ok(Some(next_layer(file, served, edits, &changed, &|n, t| {
        work.get(n, t)
    })?))
}

/// Drops the layer `edits` of zone `file` (served as `served`): the file's RRsets serve again,
/// one serial later, with a journal entry for the change (so IXFR still reaches across it).
/// A layer the file already holds (folded into it) goes without a new serial: nothing served
/// changes. None when the layer is empty.
pub fn discard(file: &Zone, served: &Zone, edits: &ZoneEdits) -> Result<Option<Applied>, Refusal> {
    if edits.rrsets.is_empty() {
        return Ok(None);
    }
    let changed: Vec<(Name, u16)> = (edits.rrsets.iter())
        .map(|s| (s.owner.clone(), s.rtype))
        .filter(|(n, t)| !same(served.get(n, *t), file.get(n, *t)))
        .collect();
    if changed.is_empty() {
        return Ok(Some(Applied {
            edits: ZoneEdits {
                rrsets: Vec::new(),
                ..edits.clone()
            },
            before: Vec::new(),
            after: Vec::new(),
        }));
    }
    next_layer(file, served, edits, &changed, &|n, t| file.get(n, t)).map(Some)
}

/// The layer after the RRsets `changed` (owner, type) of `served` became `new_of(owner, type)`:
/// entries equal to the file's dropped, the serial one past `served`'s, a journal entry.
fn next_layer<'r>(
    file: &Zone,
    served: &Zone,
    edits: &ZoneEdits,
    changed: &[(Name, u16)],
    new_of: &dyn Fn(&Name, u16) -> Option<&'r RRset>,
) -> Result<Applied, Refusal> {
    let origin = &served.origin;
    let Some(soa) = soa_of(served) else {
        return Err(Refusal::new(Rcode::ServFail, "the zone has no SOA"));
    };
    let serial = soa.serial.wrapping_add(1);
    let soa_set = served.get(origin, rtype::SOA).cloned();
    let new_soa_set = soa_set.clone().map(|mut set| {
        if let Some(Rdata::Soa(soa)) = set.rdatas.first_mut() {
            soa.serial = serial;
        }
        set
    });
    let mut layer: BTreeMap<(Name, u16), StoredSet> = (edits.rrsets.iter())
        .map(|s| ((s.owner.clone(), s.rtype), s.clone()))
        .collect();
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    removed.extend(soa_set.as_ref().map(|s| StoredSet::new(origin, s)));
    added.extend(new_soa_set.as_ref().map(|s| StoredSet::new(origin, s)));
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for (name, t) in changed {
        let (old, new) = (served.get(name, *t), new_of(name, *t));
        before.extend(old.map(|s| zones::present(name, s)).unwrap_or_default());
        after.extend(new.map(|s| zones::present(name, s)).unwrap_or_default());
        removed.extend(minus(name, old, new));
        added.extend(minus(name, new, old));
        if same(file.get(name, *t), new) {
            layer.remove(&(name.clone(), *t));
        } else {
            let empty = RRset {
                rtype: *t,
                ttl: 0,
                rdatas: Vec::new(),
            };
            layer.insert(
                (name.clone(), *t),
                StoredSet::new(name, new.unwrap_or(&empty)),
            );
        }
    }
    let mut journal = edits.journal.clone();
    journal.push(JournalEntry {
        from: soa.serial,
        to: serial,
        removed,
        added,
    });
    if journal.len() > JOURNAL_MAX {
        journal.drain(..journal.len() - JOURNAL_MAX);
    }
    Ok(Applied {
        edits: ZoneEdits {
            serial,
            rrsets: layer.into_values().collect(),
            journal,
        },
        before,
        after,
    })
}

#[cfg(test)]
mod tests;
