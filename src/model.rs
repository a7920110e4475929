//! Plain data shared by the loader, the snapshot and the wire code: domain names, record types,
//! records. No I/O, no tokio, no hickory types: everything here is built once at load time and
//! read by the query path.

use std::fmt;

/// Record type codes weir treats specially (RFC 1035 3.2.2, RFC 3596, RFC 2782, RFC 6891,
/// RFC 1995, RFC 5936, RFC 8482). Any other type is served opaquely from its wire rdata.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const DNAME: u16 = 39;
    pub const OPT: u16 = 41;
    pub const DS: u16 = 43;
    pub const TSIG: u16 = 250;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
}

/// Response codes weir sends (RFC 1035 4.1.1, RFC 6891 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
    /// RFC 2136 2.2 (UPDATE): a name that should not exist does.
    YxDomain = 6,
    /// An RRset that should not exist does.
    YxRrset = 7,
    /// An RRset that should exist does not.
    NxRrset = 8,
    /// RFC 8945 (TSIG) and RFC 2136: not authorized, or not authoritative for the zone.
    NotAuth = 9,
    /// A name outside the zone of the UPDATE.
    NotZone = 10,
    BadVers = 16,
    /// RFC 7873 8: a server cookie is required (sent with a fresh one); extended, in the OPT.
    BadCookie = 23,
}

/// Why a packet got no answer at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Fewer than 12 bytes: not even a header to answer.
    Short,
    /// QR=1: answering responses invites reflection loops.
    Response,
}

/// Class IN (RFC 1035 3.2.4); the only class weir serves.
pub const CLASS_IN: u16 = 1;
/// QCLASS `*` (RFC 1035 3.2.5: "any class"); weir, like Knot and NSD, answers it as IN.
pub const CLASS_ANY: u16 = 255;

/// Longest domain name in wire form (RFC 1035 2.3.4: "names - 255 octets or less").
pub const MAX_NAME_LEN: usize = 255;

/// Why text is not a domain name (`Name::parse`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("`{0}` has an empty label")]
    EmptyLabel(String),
    #[error("label `{0}` is longer than 63 octets")]
    LongLabel(String),
    #[error("label `{0}` has a character not allowed here")]
    Character(String),
    #[error("`{0}` is longer than 255 octets")]
    Long(String),
}

/// An absolute domain name in uncompressed wire form, lowercased, ending with the root label.
/// Lowercasing once at load time lets the query path compare names with plain byte equality.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Box<[u8]>);

impl Name {
    /// The root name, `.`.
    pub fn root() -> Self {
        Name(Box::new([0]))
    }

    /// Wraps wire bytes that the caller has already validated and lowercased.
    pub(crate) fn from_lower_wire(wire: &[u8]) -> Self {
        Name(wire.into())
    }

    /// Parses presentation form (`www.example.com.` or relative to nothing: the trailing dot is
    /// optional). Backslash escapes are not needed for the names of a config file and are rejected.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let text = text.strip_suffix('.').unwrap_or(text);
        let mut wire = Vec::with_capacity(text.len() + 2);
        if !text.is_empty() {
            for label in text.split('.') {
                if label.is_empty() {
                    return Err(NameError::EmptyLabel(text.into()));
                }
                if label.len() > 63 {
                    return Err(NameError::LongLabel(label.into()));
                }
                if label.contains(['\\', ' ', '"', ';', '(', ')']) {
                    return Err(NameError::Character(label.into()));
                }
                wire.push(label.len() as u8);
                wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
            }
        }
        wire.push(0);
        if wire.len() > MAX_NAME_LEN {
            return Err(NameError::Long(text.into()));
        }
        Ok(Name(wire.into()))
    }

    pub fn wire(&self) -> &[u8] {
        &self.0
    }

    pub fn label_count(&self) -> usize {
        label_starts(&self.0).count()
    }

    /// True when `self` equals `other` or lies below it.
    pub fn is_at_or_below(&self, other: &Name) -> bool {
        is_suffix(&self.0, &other.0)
    }

    /// The name one label up, or `None` for the root.
    pub fn parent(&self) -> Option<Name> {
        let first = *self.0.first()? as usize;
        if first == 0 {
            return None;
        }
        Some(Name(self.0[1 + first..].into()))
    }

    /// Reads an uncompressed wire name at `at` of `bytes` (lowercased): the name and where it
    /// ends; None for a pointer, a reserved label type, a truncated or too long name.
    pub fn read(bytes: &[u8], at: usize) -> Option<(Name, usize)> {
        let mut end = at;
        loop {
            let len = *bytes.get(end)? as usize;
            if len > 63 {
                return None;
            }
            end += 1 + len;
            if end - at > MAX_NAME_LEN || end > bytes.len() {
                return None;
            }
            if len == 0 {
                break;
            }
        }
        let wire: Vec<u8> = bytes[at..end].iter().map(u8::to_ascii_lowercase).collect();
        Some((Name(wire.into()), end))
    }

    /// True for a name whose first label is `*` (RFC 4592 2.1.1).
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with(&[1, b'*'])
    }
}

/// A pool's identity. A served pool is its name (`app.example.com.`); a pool inside a routed
/// name is `label@name` (`eu@www.example.com.`), chosen by the name's rules. Stored, shown,
/// labelled in metrics and addressed in the admin API as that text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId {
    pub name: Name,
    /// The pool's label inside a routed name; None for a served pool.
    pub label: Option<Box<str>>,
}

/// Why text is not a pool (`PoolId::parse`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolIdError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("pool label `{0}` must be 1 to 63 of a-z, 0-9, `-` and `_`")]
    Label(String),
}

impl PoolId {
    /// The pool serving `name` itself.
    pub fn served(name: Name) -> Self {
        PoolId { name, label: None }
    }

    /// Pool `label` of routed name `name`.
    pub fn inside(name: Name, label: &str) -> Result<Self, PoolIdError> {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(PoolIdError::Label(label.into()));
        }
        Ok(PoolId {
            name,
            label: Some(label.into()),
        })
    }

    /// `app.example.com.` or `eu@www.example.com.`.
    pub fn parse(text: &str) -> Result<Self, PoolIdError> {
        match text.split_once('@') {
            Some((label, name)) => PoolId::inside(Name::parse(name)?, label),
            None => Ok(PoolId::served(Name::parse(text)?)),
        }
    }

    /// The name this pool answers for directly: a served pool's name; None inside a route.
    pub fn served_name(&self) -> Option<&Name> {
        self.label.is_none().then_some(&self.name)
    }
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            Some(label) => write!(f, "{label}@{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

impl fmt::Debug for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PoolId({self})")
    }
}

impl serde::Serialize for PoolId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PoolId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        PoolId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Offsets of every label start in a wire name, from the first label to the root label.
pub fn label_starts(wire: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = Some(0usize);
    std::iter::from_fn(move || {
        let here = at?;
        let len = *wire.get(here)? as usize;
        at = if len == 0 { None } else { Some(here + 1 + len) };
        Some(here)
    })
}

/// True when wire name `name` equals `suffix` or ends with it on a label boundary.
pub fn is_suffix(name: &[u8], suffix: &[u8]) -> bool {
    name.len() >= suffix.len()
        && label_starts(name).any(|at| name.len() - at == suffix.len() && name[at..] == *suffix)
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() == 1 {
            return f.write_str(".");
        }
        for at in label_starts(&self.0) {
            let len = self.0[at] as usize;
            if len == 0 {
                break;
            }
            for &b in &self.0[at + 1..at + 1 + len] {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    write!(f, "{}", b as char)?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
            f.write_str(".")?;
        }
        Ok(())
    }
}

/// Stored and sent in presentation form (`app.example.com.`), so stored intent reads well.
impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Name::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

/// A secondary to NOTIFY (`[[zone]] notify`): its address, and the TSIG key to sign with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyTarget {
    pub addr: std::net::SocketAddr,
    pub key: Option<Name>,
}

impl fmt::Display for NotifyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "key:{key}@{}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// Which names and types one TSIG key may change by UPDATE in a zone (`[[zone.update]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub key: Name,
    pub names: Vec<NamePattern>,
    /// The types it may change; empty: every type but SOA (the SOA is the zone file's).
    pub types: Vec<u16>,
}

impl Grant {
    /// Whether this grant lets its key change `rtype` (ANY: every type) at `name`.
    pub fn permits(&self, name: &Name, rtype: u16) -> bool {
        let typed = match rtype {
            rtype::ANY => self.types.is_empty(),
            rtype::SOA => false,
            t => self.types.is_empty() || self.types.contains(&t),
        };
        typed && self.names.iter().any(|p| p.matches(name))
    }
}

/// A name pattern of a grant: labels where `*` stands for exactly one label and `**` for any
/// number (none included), kept absolute; shown as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamePattern {
    pub text: String,
    labels: Vec<Box<[u8]>>,
}

impl NamePattern {
    /// `text` relative to `origin` (`_acme-challenge`, `_acme-challenge.**`, `@` for the
    /// apex, `**` for the whole zone) or absolute with its trailing dot, inside `origin`.
    pub fn parse(text: &str, origin: &Name) -> Result<NamePattern, String> {
        let absolute = text.ends_with('.') && text != ".";
        let body = text.strip_suffix('.').unwrap_or(text);
        let mut labels: Vec<Box<[u8]>> = Vec::new();
        if body != "@" && !body.is_empty() {
            for label in body.split('.') {
                if label == "*" || label == "**" {
                    labels.push(label.as_bytes().into());
                    continue;
                }
                let one = Name::parse(label).map_err(|e| format!("`{text}`: {e}"))?;
                labels.push(one.wire()[1..one.wire().len() - 1].into());
            }
        }
        let origin_labels: Vec<Box<[u8]>> = label_starts(origin.wire())
            .filter(|&at| origin.wire()[at] != 0)
            .map(|at| origin.wire()[at + 1..at + 1 + origin.wire()[at] as usize].into())
            .collect();
        if absolute {
            if !labels.ends_with(&origin_labels) {
                return Err(format!("`{text}` is not inside the zone `{origin}`"));
            }
        } else {
            labels.extend(origin_labels);
        }
        Ok(NamePattern {
            text: text.into(),
            labels,
        })
    }

    pub fn matches(&self, name: &Name) -> bool {
        let wire = name.wire();
        let labels: Vec<&[u8]> = label_starts(wire)
            .filter(|&at| wire[at] != 0)
            .map(|at| &wire[at + 1..at + 1 + wire[at] as usize])
            .collect();
        glob(&self.labels, &labels)
    }
}

/// Label-wise glob: `*` one label, `**` any number of labels.
fn glob(pattern: &[Box<[u8]>], labels: &[&[u8]]) -> bool {
    match pattern.split_first() {
        None => labels.is_empty(),
        Some((p, rest)) if **p == *b"**" => {
            (0..=labels.len()).any(|skip| glob(rest, &labels[skip..]))
        }
        Some((p, rest)) => labels
            .split_first()
            .is_some_and(|(l, more)| (**p == *b"*" || **p == **l) && glob(rest, more)),
    }
}

/// Record data. Types whose rdata holds names that RFC 3597 4 lets a server compress
/// (NS, CNAME, PTR, MX, SOA) keep their names so the writer can compress them; SRV keeps its
/// target for additional-section processing but is written uncompressed (RFC 2782); every other
/// type is kept as its wire rdata.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Rdata {
    /// NS, CNAME, PTR, DNAME: a single name.
    Name(Name),
    Mx {
        preference: u16,
        exchange: Name,
    },
    Soa(Box<Soa>),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: Name,
    },
    /// Uncompressed wire rdata (A, AAAA, TXT, CAA, ...).
    Opaque(Box<[u8]>),
}

impl Rdata {
    /// The uncompressed wire form (RFC 3597: what a transfer or a store carries).
    pub fn to_wire(&self, out: &mut Vec<u8>) {
        match self {
            Rdata::Name(n) => out.extend_from_slice(n.wire()),
            Rdata::Mx {
                preference,
                exchange,
            } => {
                out.extend_from_slice(&preference.to_be_bytes());
                out.extend_from_slice(exchange.wire());
            }
            Rdata::Soa(soa) => {
                out.extend_from_slice(soa.mname.wire());
                out.extend_from_slice(soa.rname.wire());
                for v in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Rdata::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                for v in [priority, weight, port] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
                out.extend_from_slice(target.wire());
            }
            Rdata::Opaque(bytes) => out.extend_from_slice(bytes),
        }
    }

    /// Reads uncompressed wire rdata of type `rtype` (names lowercased, as the zone loader
    /// keeps them); None when it does not have that type's shape.
    pub fn from_wire(rtype: u16, bytes: &[u8]) -> Option<Rdata> {
        let u16_at = |at: usize| Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
        let u32_at = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
        let rdata = match rtype {
            rtype::NS | rtype::CNAME | rtype::PTR | rtype::DNAME => {
                let (name, end) = Name::read(bytes, 0)?;
                (end == bytes.len()).then_some(Rdata::Name(name))?
            }
            rtype::MX => {
                let (exchange, end) = Name::read(bytes, 2)?;
                (end == bytes.len()).then_some(Rdata::Mx {
                    preference: u16_at(0)?,
                    exchange,
                })?
            }
            rtype::SOA => {
                let (mname, at) = Name::read(bytes, 0)?;
                let (rname, at) = Name::read(bytes, at)?;
                (at + 20 == bytes.len()).then_some(Rdata::Soa(Box::new(Soa {
                    mname,
                    rname,
                    serial: u32_at(at)?,
                    refresh: u32_at(at + 4)?,
                    retry: u32_at(at + 8)?,
                    expire: u32_at(at + 12)?,
                    minimum: u32_at(at + 16)?,
                })))?
            }
            rtype::SRV => {
                let (target, end) = Name::read(bytes, 6)?;
                (end == bytes.len()).then_some(Rdata::Srv {
                    priority: u16_at(0)?,
                    weight: u16_at(2)?,
                    port: u16_at(4)?,
                    target,
                })?
            }
            rtype::A if bytes.len() != 4 => return None,
            rtype::AAAA if bytes.len() != 16 => return None,
            _ => Rdata::Opaque(bytes.into()),
        };
        Some(rdata)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Soa {
    pub mname: Name,
    pub rname: Name,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

/// One resource record as loaded from a zone file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub owner: Name,
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: Rdata,
}

/// All records of one owner and type. RFC 2181 5.2: the TTLs of an RRset must match, so the
/// loader keeps the smallest one for the whole set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RRset {
    pub rtype: u16,
    pub ttl: u32,
    pub rdatas: Vec<Rdata>,
}

/// A record type's mnemonic, for messages and logs.
/// Type mnemonics weir names in messages, configs and the admin API; any other type is
/// `TYPEnnn` (RFC 3597 5) both ways.
const RTYPE_NAMES: &[(u16, &str)] = &[
    (rtype::A, "A"),
    (rtype::NS, "NS"),
    (rtype::CNAME, "CNAME"),
    (rtype::SOA, "SOA"),
    (rtype::PTR, "PTR"),
    (13, "HINFO"),
    (rtype::MX, "MX"),
    (rtype::TXT, "TXT"),
    (17, "RP"),
    (rtype::AAAA, "AAAA"),
    (29, "LOC"),
    (rtype::SRV, "SRV"),
    (35, "NAPTR"),
    (rtype::DNAME, "DNAME"),
    (rtype::DS, "DS"),
    (44, "SSHFP"),
    (46, "RRSIG"),
    (47, "NSEC"),
    (48, "DNSKEY"),
    (52, "TLSA"),
    (53, "SMIMEA"),
    (59, "CDS"),
    (60, "CDNSKEY"),
    (61, "OPENPGPKEY"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (99, "SPF"),
    (rtype::TSIG, "TSIG"),
    (rtype::IXFR, "IXFR"),
    (rtype::AXFR, "AXFR"),
    (rtype::ANY, "ANY"),
    (256, "URI"),
    (257, "CAA"),
];

pub fn rtype_name(rtype: u16) -> String {
    match RTYPE_NAMES.iter().find(|(t, _)| *t == rtype) {
        Some((_, name)) => (*name).into(),
        None => format!("TYPE{rtype}"),
    }
}

/// The type a mnemonic (any case) or `TYPEnnn` names.
pub fn rtype_from_name(text: &str) -> Option<u16> {
    let upper = text.to_ascii_uppercase();
    if let Some((t, _)) = RTYPE_NAMES.iter().find(|(_, name)| *name == upper) {
        return Some(*t);
    }
    upper.strip_prefix("TYPE")?.parse().ok()
}

/// Health of a probed target after rise/fall hysteresis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    Down,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckKind {
    Http,
    Https,
    Tcp,
}

/// How one endpoint is probed. Two endpoints with equal `ProbeKey`s share one probe.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Check {
    pub kind: CheckKind,
    /// Port probed when the endpoint has no explicit `probe` address.
    pub port: u16,
    /// http(s): request path, starting with `/`.
    pub path: String,
    /// http(s): Host header and TLS SNI; default: the probed IP address.
    pub host: Option<String>,
    /// http(s): accepted status ranges, inclusive; default 200..=399.
    pub expect: Vec<(u16, u16)>,
    /// http(s): the body must contain this text.
    pub body_contains: Option<String>,
    /// https: verify the certificate chain and name (default true).
    pub tls_verify: bool,
    pub interval: std::time::Duration,
    /// Always shorter than `interval` (config validation guarantees it).
    pub timeout: std::time::Duration,
    /// Consecutive successes to go Down -> Up.
    pub rise: u32,
    /// Consecutive failures to go Up -> Down.
    pub fall: u32,
    /// Health before the first result.
    pub initial: Health,
}

/// One probe: where and how. The unit of probing, health state and de-duplication.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    pub target: std::net::SocketAddr,
    /// Shared by every endpoint of a pool that uses the pool's check.
    pub check: std::sync::Arc<Check>,
}

/// How a pool picks answers for a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sticky {
    /// Independent weighted draw per query.
    None,
    /// The same client subnet (ECS or resolver address, /24 or /56) gets the same answer while
    /// weights and health stay the same.
    ClientSubnet,
}

/// What a pool answers when too little of its weight is up (`min_healthy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnAllDown {
    /// Answer as if every endpoint were up (the Route 53 / gdnsd default).
    ServeAll,
    /// Answer from another pool.
    Fallback(PoolId),
    NoData,
    ServFail,
}

/// As written in the config: "none", "client-subnet".
impl fmt::Display for Sticky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sticky::None => "none",
            Sticky::ClientSubnet => "client-subnet",
        })
    }
}

/// As written in the config: "serve-all", "fallback:<pool>", "nodata", "servfail".
impl fmt::Display for OnAllDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnAllDown::ServeAll => f.write_str("serve-all"),
            OnAllDown::Fallback(pool) => write!(f, "fallback:{pool}"),
            OnAllDown::NoData => f.write_str("nodata"),
            OnAllDown::ServFail => f.write_str("servfail"),
        }
    }
}

/// A managed name: its A and AAAA answers come from weighted endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub name: PoolId,
    pub ttl: u32,
    /// Distinct endpoints per answer.
    pub answers: usize,
    pub sticky: Sticky,
    pub on_all_down: OnAllDown,
    /// Fraction of the pool's weight (per address family) that must be up.
    pub min_healthy: f64,
    /// TTL cap while degraded.
    pub degraded_ttl: u32,
    /// The pool's `[pool.check]`, used for endpoints added at runtime.
    pub check: Option<std::sync::Arc<Check>>,
    /// The pool's `[pool.rollout]`, started with `POST /v1/pools/{pool}/rollouts`.
    pub rollout: Option<RolloutPlan>,
    pub groups: Vec<Group>,
}

/// Endpoints that move together (blue/green, stable/canary).
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub name: String,
    /// 0 = drained.
    pub weight: u32,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub address: std::net::IpAddr,
    /// Share inside the group; 0 = drained.
    pub weight: u32,
    /// How it is probed; None = not checked, always up.
    pub probe: Option<ProbeKey>,
    /// An operator's override of the probes' verdict.
    pub force: Override,
}

/// Why `address` cannot be an endpoint (an A/AAAA answer no client could use), if it cannot:
/// the unspecified address (0.0.0.0, ::), the IPv4 broadcast address, multicast.
pub fn unservable(address: std::net::IpAddr) -> Option<String> {
    let why = if address.is_unspecified() {
        "the unspecified address"
    } else if address.is_multicast() {
        "a multicast address"
    } else if matches!(address, std::net::IpAddr::V4(v4) if v4.is_broadcast()) {
        "the broadcast address"
    } else {
        return None;
    };
    Some(format!(
        "{address} is {why}: clients cannot reach it, so it cannot be an endpoint"
    ))
}

/// An address prefix (`192.0.2.0/24`, `2001:db8::/32`): response rate limiting's exempt list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The network address, the bits past `len` zero.
    pub addr: std::net::IpAddr,
    pub len: u8,
}

impl Prefix {
    /// Parses `addr/len` (or a bare address: a host prefix). None if it is neither, or if bits
    /// are set past the prefix length (a likely typo: `192.0.2.1/24`).
    pub fn parse(text: &str) -> Option<Prefix> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (
                a.parse::<std::net::IpAddr>().ok()?,
                Some(l.parse::<u8>().ok()?),
            ),
            None => (text.parse::<std::net::IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        let prefix = Prefix { addr, len };
        (len <= max && prefix.mask(addr) == addr).then_some(prefix)
    }

    /// `a` with the bits past this prefix's length cleared.
    fn mask(&self, a: std::net::IpAddr) -> std::net::IpAddr {
        use std::net::IpAddr;
        match a {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let keep = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4((bits & keep).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let keep = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6((bits & keep).into())
            }
        }
    }

    /// True if `a` lies inside the prefix (same family).
    #[inline]
    pub fn contains(&self, a: std::net::IpAddr) -> bool {
        a.is_ipv4() == self.addr.is_ipv4() && self.mask(a) == self.addr
    }
}

/// One `[[zone]] allow_transfer` entry: who may transfer a zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferAllow {
    /// A source prefix (`"192.0.2.0/24"`): unsigned or signed, from inside it.
    Source(Prefix),
    /// `"key:NAME"` (from anywhere) or `"key:NAME@PREFIX"` (from inside the prefix): the
    /// request's TSIG verified with the key named `key` (lowercase wire form).
    Key { key: Name, source: Option<Prefix> },
}

impl TransferAllow {
    /// Whether this entry lets `client` transfer, `signed_by` the key its TSIG verified with
    /// (None: unsigned).
    pub fn allows(&self, client: std::net::IpAddr, signed_by: Option<&Name>) -> bool {
        match self {
            TransferAllow::Source(p) => p.contains(client),
            TransferAllow::Key { key, source } => {
                signed_by == Some(key) && source.is_none_or(|p| p.contains(client))
            }
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A two-letter code as the databases write it (ISO 3166-1 country, or one of the seven
/// continent codes AF AN AS EU NA OC SA), upper case.
pub type Code = [u8; 2];

/// An ISO 3166-2 subdivision, `US-CA`: its country and its code (1 to 3 characters, upper
/// case, padded with zero bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subdivision {
    pub country: Code,
    pub code: [u8; 3],
}

impl fmt::Display for Subdivision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self.code.iter().position(|&b| b == 0).unwrap_or(3);
        let code = std::str::from_utf8(&self.code[..end]).unwrap_or("?");
        let country = std::str::from_utf8(&self.country).unwrap_or("??");
        write!(f, "{country}-{code}")
    }
}

/// One rule of a routed name: the clients it matches and the pool it selects. A rule with no
/// criteria is the catch-all (config puts exactly one, last).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rule {
    /// The selected pool's label inside the name (`eu` of `eu@www.example.com.`).
    pub pool: String,
    /// Client subnets: across all rules of a name, the longest prefix holding the client
    /// decides, before any geography.
    pub subnets: Vec<Prefix>,
    pub continents: Vec<Code>,
    pub countries: Vec<Code>,
    pub subdivisions: Vec<Subdivision>,
    /// Autonomous system numbers (from the ASN database).
    pub asns: Vec<u32>,
}

impl Rule {
    /// Matches every client.
    pub fn is_catch_all(&self) -> bool {
        self.subnets.is_empty()
            && self.continents.is_empty()
            && self.countries.is_empty()
            && self.subdivisions.is_empty()
            && self.asns.is_empty()
    }

    /// Needs the geography database (continent, country or subdivision criteria).
    pub fn uses_geography(&self) -> bool {
        !(self.continents.is_empty() && self.countries.is_empty() && self.subdivisions.is_empty())
    }
}

/// A routed name: ordered rules selecting among the name's pools.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub name: Name,
    pub rules: Vec<Rule>,
}

/// The DNS cookie secrets (RFC 9018): server cookies are made with `current` and accepted when
/// made with `current` or `previous` (a rotation in progress). Debug never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct CookieSecrets {
    pub current: [u8; 16],
    pub previous: Option<[u8; 16]>,
}

impl fmt::Debug for CookieSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.previous.is_some() {
            "CookieSecrets(<current>, <previous>)"
        } else {
            "CookieSecrets(<current>)"
        })
    }
}

impl Pool {
    /// Every distinct probe of the pool.
    pub fn probes(&self) -> impl Iterator<Item = &ProbeKey> {
        self.groups
            .iter()
            .flat_map(|g| &g.endpoints)
            .filter_map(|e| e.probe.as_ref())
    }
}

/// An operator's health override for one endpoint; `Auto` follows the probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Override {
    Auto,
    Up,
    Down,
}

/// Per pool, per endpoint address: how the overlay keys what it holds about endpoints.
pub type ByEndpoint<V> =
    std::collections::BTreeMap<PoolId, std::collections::BTreeMap<std::net::IpAddr, V>>;

/// Runtime intent: what operators changed through the admin API, stored as a layer over the
/// config (never health). Keyed by typed pool names and addresses; stored in presentation
/// form (`app.example.com.`, `192.0.2.10`), so the stored form reads well and survives config
/// edits, and a key that does not parse makes the stored state corrupt, never skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Overlay {
    /// pool -> group -> weight.
    #[serde(default)]
    pub group_weights: std::collections::BTreeMap<PoolId, std::collections::BTreeMap<String, u32>>,
    /// pool -> endpoint address -> weight.
    #[serde(default)]
    pub endpoint_weights: ByEndpoint<u32>,
    /// pool -> endpoint address -> forced health (Auto is never stored).
    #[serde(default)]
    pub overrides: ByEndpoint<Override>,
    /// pool -> endpoint address -> endpoint added at runtime.
    #[serde(default)]
    pub added: ByEndpoint<AddedEndpoint>,
    /// pool -> config endpoint addresses removed at runtime.
    #[serde(default)]
    pub removed: std::collections::BTreeMap<PoolId, std::collections::BTreeSet<std::net::IpAddr>>,
    /// pool -> its rollout (running or finished; the latest one is kept).
    #[serde(default)]
    pub rollouts: std::collections::BTreeMap<PoolId, Rollout>,
    /// zone origin -> the records RFC 2136 UPDATEs changed there (a layer over its file).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub zones: std::collections::BTreeMap<Name, ZoneEdits>,
    /// zone origin -> its latest DNSSEC key rollover (running or done).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rollovers: std::collections::BTreeMap<Name, KeyRollover>,
}

/// A zone-signing key's pre-publish rollover (RFC 6781 4.1.1.1), started by an operator
/// (`weir ctl dnssec ZONE --rollover`): `key` is published from `started`, signs from
/// `activate_at` (every cache then holds a DNSKEY set with it: its TTL and the propagation
/// delay have passed), and the `retiring` keys stop signing then and leave the DNSKEY set at
/// `retire_at` (no cache holds a signature of theirs any more: the zone's largest TTL and the
/// delay have passed again). Unix seconds, fixed when it starts, so every node and every
/// restart computes the same phase from the clock alone.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRollover {
    pub key: u16,
    pub retiring: Vec<u16>,
    pub started: u64,
    pub activate_at: u64,
    pub retire_at: u64,
}

impl KeyRollover {
    /// "publishing", "active" (the new key signs, the old ones still published) or "done".
    pub fn phase(&self, now: u64) -> &'static str {
        if now < self.activate_at {
            "publishing"
        } else if now < self.retire_at {
            "active"
        } else {
            "done"
        }
    }
}

/// What RFC 2136 UPDATEs changed in one zone: a layer over its zone file that replaces whole
/// RRsets (an empty set deletes the file's), kept across restarts and reloads like weight
/// overrides over the config, and the journal IXFR answers from.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ZoneEdits {
    /// The serial served while this layer applies, unless the file's is newer (RFC 1982): each
    /// accepted update sets it one past the serial served before it.
    pub serial: u32,
    /// The RRsets that replace the file's, by owner then type.
    #[serde(default)]
    pub rrsets: Vec<StoredSet>,
    /// The newest changes, oldest first (at most `JOURNAL_MAX`): each one's records removed
    /// and added, the old and new SOA first among them.
    #[serde(default)]
    pub journal: Vec<JournalEntry>,
}

/// The most changes a zone's journal keeps; an IXFR from an older serial gets the whole zone.
pub const JOURNAL_MAX: usize = 100;

/// One change of a zone (RFC 1995 IXFR's unit): the SOA and records before, and after.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournalEntry {
    pub from: u32,
    pub to: u32,
    pub removed: Vec<StoredSet>,
    pub added: Vec<StoredSet>,
}

/// An RRset as stored: its type by mnemonic and each record's rdata as uncompressed wire
/// form in hex (RFC 3597's generic form, readable by any tool and exact for every type).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredSet {
    pub owner: Name,
    #[serde(rename = "type", with = "rtype_text")]
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: Vec<String>,
}

impl StoredSet {
    pub fn new(owner: &Name, set: &RRset) -> StoredSet {
        let rdata = set
            .rdatas
            .iter()
            .map(|r| {
                let mut wire = Vec::new();
                r.to_wire(&mut wire);
                wire.iter().map(|b| format!("{b:02x}")).collect()
            })
            .collect();
        StoredSet {
            owner: owner.clone(),
            rtype: set.rtype,
            ttl: set.ttl,
            rdata,
        }
    }

    /// The set, or None when a stored rdata is not hex of its type's shape (corrupt).
    pub fn rrset(&self) -> Option<RRset> {
        let rdatas = self
            .rdata
            .iter()
            .map(|hex| {
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?;
                Rdata::from_wire(self.rtype, &bytes)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(RRset {
            rtype: self.rtype,
            ttl: self.ttl,
            rdatas,
        })
    }
}

/// A type stored as its mnemonic (`TXT`, `TYPE65280`).
mod rtype_text {
    pub(super) fn serialize<S: serde::Serializer>(t: &u16, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::rtype_name(*t))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        super::rtype_from_name(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a record type")))
    }
}

/// An endpoint added through the admin API; it uses its pool's check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AddedEndpoint {
    pub group: String,
    pub weight: u32,
}

/// One acknowledged change, as recorded in the audit log.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// The state generation this change produced.
    pub generation: u64,
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// Name of the admin token used ("local" without token auth, "weir" for automatic changes).
    pub actor: String,
    /// Client address of the admin request, empty for automatic changes.
    pub source: String,
    /// e.g. "set-group-weight", "set-endpoint-weight", "override", "add-endpoint",
    /// "remove-endpoint", "drop-stale-override".
    pub action: String,
    /// The pool's name, empty when the change is not about one pool.
    pub pool: String,
    /// What was changed inside the pool: "group blue", "endpoint 192.0.2.10".
    pub subject: String,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
    pub reason: String,
}

/// One step of a canary rollout.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The `to` group's share of the pool's weight, in percent.
    SetWeight(u32),
    /// Wait this many seconds once the previous change has settled; None waits for `promote`.
    Pause(Option<u64>),
}

/// The longest duration a plan may name (pauses, slack, health timeout, TTLs): 30 days.
/// Longer values are refused (400 from the API, a config error), so no deadline can overflow.
pub const MAX_DURATION_SECS: u64 = 30 * 24 * 3600;

/// A rollout plan, from `[pool.rollout]` or the API.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RolloutPlan {
    pub from: String,
    pub to: String,
    pub steps: Vec<Step>,
    /// Seconds added to the pool's TTL before a change counts as settled.
    pub slack: u64,
    /// TTL ramp: serve this TTL while the rollout runs, so steps settle fast.
    #[serde(default)]
    pub ramp_ttl: Option<u32>,
    /// Abort when a Prometheus query keeps failing its condition.
    #[serde(default)]
    pub metric_gate: Option<MetricGate>,
    /// A rolling update of one group instead of a move between groups.
    #[serde(default)]
    pub rolling: Option<RollingPlan>,
    /// Asked before each step; a non-2xx answer pauses or aborts.
    #[serde(default)]
    pub webhook: Option<Webhook>,
    /// Measured cache convergence gate: a step, "safe to remove" and rolling batches also
    /// wait until this share of the resolvers' query volume has come back since the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converged: Option<Converged>,
}

/// `converged = 0.99` with `converge_timeout`: past the timeout the rollout pauses for a
/// person instead of moving on.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Converged {
    /// Share (0..=1) of the query volume before a change that must have queried again.
    pub share: f64,
    /// Seconds past the settle instant before the rollout pauses.
    pub timeout: u64,
}

impl Eq for Converged {}

/// A URL that gets the rollout's state (JSON POST) before each step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Webhook {
    pub url: String,
    /// Abort (true) or pause (false) when it answers other than 2xx or not at all.
    pub abort_on_failure: bool,
}

/// A rolling in-place update: the group's endpoints are drained batch by batch.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RollingPlan {
    pub group: String,
    /// Endpoints per batch, at most.
    pub batch: BatchSize,
    /// Largest share of the pool's weight drained at once, in percent.
    pub max_unavailable: u32,
    /// Seconds to wait after a batch is safe to upgrade; None waits for `promote`.
    pub pause: Option<u64>,
    /// Seconds a batch may take to come back healthy before the rollout stops for a person.
    pub health_timeout: u64,
}

/// A rolling batch: a number of endpoints, or a percentage of the group's (rounded up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchSize {
    Count(usize),
    Percent(u32),
}

impl BatchSize {
    /// Endpoints per batch in a group of `n`.
    pub fn of(self, n: usize) -> usize {
        match self {
            BatchSize::Count(c) => c.max(1),
            BatchSize::Percent(p) => (n * p as usize).div_ceil(100).max(1),
        }
    }
}

/// Where a rolling update's current batch is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Drained; waiting for cached answers that name it to expire.
    Draining,
    /// Gets no traffic any more: safe to upgrade; waiting for promote or the pause.
    SafeToUpgrade,
    /// Upgraded: waiting for its health checks to pass before undraining. `since` is when the
    /// batch was promoted (Unix ms): only probes that started after it count.
    WaitingHealthy {
        #[serde(deserialize_with = "unix_ms")]
        since: u64,
    },
}

/// A rolling update's progress, stored in its `Rollout`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rolling {
    pub plan: RollingPlan,
    /// Endpoint addresses per batch, decided at the start.
    pub batches: Vec<Vec<std::net::IpAddr>>,
    /// The batch being worked on.
    pub batch: usize,
    pub phase: Phase,
}

/// A Prometheus instant query that must keep satisfying `op value` while a rollout runs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricGate {
    /// Prometheus base URL, e.g. `http://prometheus:9090`.
    pub url: String,
    pub query: String,
    /// One of `<`, `<=`, `>`, `>=`.
    pub op: String,
    pub value: f64,
    /// Seconds between queries.
    pub interval: u64,
    /// Consecutive failures (condition false, or no answer) that abort the rollout.
    pub failure_limit: u32,
}

impl MetricGate {
    pub fn holds(&self, v: f64) -> bool {
        match self.op.as_str() {
            "<" => v < self.value,
            "<=" => v <= self.value,
            ">" => v > self.value,
            ">=" => v >= self.value,
            _ => false,
        }
    }
}

impl Eq for MetricGate {}

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RolloutState {
    Running,
    /// At a manual pause step, waiting for `promote`.
    WaitingPromote,
    /// Paused by an operator; `resume` continues.
    Paused,
    Done,
    Aborted {
        reason: String,
        /// What aborted it (`unknown` for rollouts stored before causes were recorded).
        #[serde(default)]
        cause: AbortCause,
    },
}

/// Why a rollout was aborted: the label of `weir_rollout_aborts_total{cause}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortCause {
    /// An operator's `abort`.
    Operator,
    /// An endpoint of the group taking traffic went down.
    Health,
    /// The metric gate failed `failure_limit` times in a row.
    Metric,
    /// The webhook refused a step with `on_failure = "abort"`.
    Webhook,
    #[default]
    Unknown,
}

impl AbortCause {
    pub fn label(self) -> &'static str {
        match self {
            AbortCause::Operator => "operator",
            AbortCause::Health => "health",
            AbortCause::Metric => "metric",
            AbortCause::Webhook => "webhook",
            AbortCause::Unknown => "unknown",
        }
    }
}

/// Reads a Unix time in milliseconds; a value below 10^11 (which as milliseconds would be
/// 1973) was stored in seconds by an earlier version and is converted.
fn unix_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = <u64 as serde::Deserialize>::deserialize(d)?;
    Ok(if v < 100_000_000_000 {
        v.saturating_mul(1000)
    } else {
        v
    })
}

/// A canary rollout of one pool from group `from` to group `to`, as stored with the intent.
/// Times are Unix seconds (wall clock), so a restart resumes the same deadlines.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rollout {
    pub from: String,
    pub to: String,
    pub steps: Vec<Step>,
    /// Added to the largest served TTL to decide when a change has settled in caches.
    pub slack: u64,
    /// Index of the next step to run.
    pub step: usize,
    pub state: RolloutState,
    /// The `to` group's current share in percent.
    pub weight: u32,
    /// When the weights last changed (served by every nameserver), and when no resolver that
    /// honours TTLs can still hold an answer from before: `changed_at + ttl_before + 1 s +
    /// slack` (`rollout::settle_at`). Unix milliseconds.
    #[serde(deserialize_with = "unix_ms")]
    pub changed_at: u64,
    #[serde(deserialize_with = "unix_ms")]
    pub settled_at: u64,
    /// TTL ramp: the TTL served while the rollout is not finished.
    #[serde(default)]
    pub ramp_ttl: Option<u32>,
    #[serde(default)]
    pub metric_gate: Option<MetricGate>,
    /// Set for a rolling update (then `from` = `to` = the group and `weight` is unused).
    #[serde(default)]
    pub rolling: Option<Rolling>,
    #[serde(default)]
    pub webhook: Option<Webhook>,
    /// Shared store: the last change is stored but not yet served by every nameserver; its
    /// settle clock starts when it is (`rollout::tick`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_sync: bool,
    /// The TTL (seconds) the last change settles under (`rollout::ttl_before`), for status.
    #[serde(default)]
    pub settle_ttl: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converged: Option<Converged>,
    /// Why weir stopped the rollout by itself (a batch that did not come back, convergence
    /// that did not come, a webhook refusal); cleared by the next operator command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
}

/// What the admin API shows, published inside each snapshot so readers see one consistent
/// state: the intent generation, the config's pools, the overlay, the pools as served, health.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Generation of the stored intent (what `If-Match` compares against).
    pub generation: u64,
    /// The parts below change only with a reload or an intent change: a health-only
    /// publication shares them with the snapshot before it.
    pub zones: std::sync::Arc<Vec<Name>>,
    pub config_pools: std::sync::Arc<Vec<Pool>>,
    pub overlay: std::sync::Arc<Overlay>,
    /// Config with the overlay applied.
    pub pools: std::sync::Arc<Vec<Pool>>,
    pub health: std::collections::HashMap<ProbeKey, Health>,
}

/// Health of every probe; a probe with no result yet has its check's `initial` health.
pub type HealthMap = std::collections::HashMap<ProbeKey, Health>;

impl View {
    /// A probe's health in this view (see `probe_health`).
    pub fn probe_health(&self, key: &ProbeKey) -> Health {
        probe_health(&self.health, key)
    }

    /// Whether `e` counts as up in this view (see `Endpoint::up`).
    pub fn endpoint_up(&self, e: &Endpoint) -> bool {
        e.up(|k| self.probe_health(k))
    }
}

/// A probe's health in `health`: its last flip, or its check's `initial` until it has one.
pub fn probe_health(health: &HealthMap, key: &ProbeKey) -> Health {
    health.get(key).copied().unwrap_or(key.check.initial)
}

impl Endpoint {
    /// Whether this endpoint counts as up, given each probe's health: an operator's override
    /// wins, else its probe's health; an endpoint without a check is up. The one definition
    /// of "up" that answers, previews, rollouts and the admin API share.
    pub fn up(&self, health: impl Fn(&ProbeKey) -> Health) -> bool {
        match self.force {
            Override::Down => false,
            Override::Up => true,
            Override::Auto => self.probe.as_ref().is_none_or(|k| health(k) == Health::Up),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Intent is stored keyed by presentation text (what earlier versions wrote, and what an
    /// operator reads in a dump) and read back typed; a key that is no name or address is an
    /// error (the store reports it corrupt), never a silently skipped entry.
    #[test]
    fn overlay_keys_are_typed_and_stored_as_text() {
        let stored = r#"{"group_weights":{"App.Example.com.":{"blue":3}},
            "endpoint_weights":{"app.example.com.":{"2001:db8::1":0}},
            "overrides":{"app.example.com.":{"192.0.2.10":"down"}},
            "removed":{"app.example.com.":["192.0.2.11"]}}"#;
        let overlay: Overlay = serde_json::from_str(stored).unwrap();
        let app = PoolId::parse("app.example.com").unwrap();
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(overlay.group_weights[&app]["blue"], 3);
        assert_eq!(overlay.endpoint_weights[&app][&v6], 0);
        let text = serde_json::to_string(&overlay).unwrap();
        assert!(
            text.contains(r#""overrides":{"app.example.com.":{"192.0.2.10":"down"}}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Overlay>(&text).unwrap(), overlay);
        for bad in [
            r#"{"overrides":{"app.example.com.":{"192.0.2.300":"down"}}}"#,
            r#"{"removed":{"app..example.com.":["192.0.2.11"]}}"#,
        ] {
            assert!(serde_json::from_str::<Overlay>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parse_lowercases_and_round_trips() {
        let n = Name::parse("WWW.Example.COM.").unwrap();
        assert_eq!(n.wire(), b"\x03www\x07example\x03com\x00");
        assert_eq!(n.to_string(), "www.example.com.");
        assert_eq!(n.label_count(), 4);
        assert_eq!(Name::parse(".").unwrap(), Name::root());
        assert_eq!(Name::root().to_string(), ".");
    }

    #[test]
    fn parse_rejects_bad_names() {
        assert_eq!(
            Name::parse("a..b"),
            Err(NameError::EmptyLabel("a..b".into()))
        );
        assert!(Name::parse(&"x".repeat(64)).is_err());
        let long = vec!["abcdefghi"; 30].join(".");
        assert!(Name::parse(&long).is_err());
    }

    #[test]
    fn suffix_is_label_aligned() {
        let www = Name::parse("www.example.com").unwrap();
        let apex = Name::parse("example.com").unwrap();
        let other = Name::parse("ample.com").unwrap();
        assert!(www.is_at_or_below(&apex));
        assert!(apex.is_at_or_below(&apex));
        assert!(!www.is_at_or_below(&other));
        assert!(!apex.is_at_or_below(&www));
        assert_eq!(www.parent().unwrap(), apex);
        assert_eq!(Name::root().parent(), None);
    }

    #[test]
    fn wildcard_detection() {
        assert!(Name::parse("*.example.com").unwrap().is_wildcard());
        assert!(!Name::parse("x*.example.com").unwrap().is_wildcard());
    }
}
