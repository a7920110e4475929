//! TSIG, transaction signatures (RFC 8945): keys and key files, finding and verifying the TSIG
//! record of a received message, and signing messages weir sends. Pure code over byte slices
//! (no tokio, no sockets); HMAC from `ring`, MACs compared in constant time (`subtle`).
//!
//! How a server uses it (the query path does this in `dns::respond`'s signed branch):
//!
//! 1. `locate(msg)` finds the TSIG record (`Ok(None)`: unsigned; `Err(Malformed)`: a TSIG that
//!    is not the last ADDITIONAL record, or two of them, is FORMERR, RFC 8945 5.1).
//!    `wire::parse_query` does the same walk for queries and records `Query::tsig`.
//! 2. `verify(keyring, msg, offset, now)` → `Verified` (the key, the request's MAC) or a
//!    `Failure` whose `error` says what to answer: `Error::FormErr` (plain FORMERR, no TSIG) or
//!    NOTAUTH carrying BADKEY, BADSIG, BADTIME or BADTRUNC.
//! 3. Write the answer into `out[base..]` as usual, leaving `space(key)` bytes of room, then
//!    `sign_answer(out, base, &verified, now)`: appends the TSIG record as the last ADDITIONAL
//!    record (ARCOUNT + 1) and returns the MAC. A multi-message answer (AXFR) signs each later
//!    message with `sign_next(out, base, key, &previous_mac, now)` (RFC 8945 5.3.1).
//! 4. A failure: write the NOTAUTH answer (no data), then `sign_error(out, base, &failure, now)`
//!    (RFC 8945 5.3.2: BADKEY, BADSIG, BADTRUNC unsigned with an empty MAC; BADTIME signed,
//!    its other data the server's time).
//!
//! A client (an outgoing NOTIFY) writes its request and calls `sign_request(out, base, key,
//! now)`; the returned MAC is what the reply is verified against.
//!
//! Keys come from key files (`read_key_file`): the BIND format `tsig-keygen` writes and the
//! Knot format `keymgr -t` writes. A `Keyring` is cheap to clone (one `Arc`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use ring::hmac;
use subtle::ConstantTimeEq;

use crate::model::{MAX_NAME_LEN, Name};

/// Type code of TSIG (RFC 8945 4.2).
pub const TYPE_TSIG: u16 = 250;
const CLASS_ANY: u16 = 255;
/// Seconds of clock skew allowed between signer and verifier, as BIND, Knot and NSD use.
pub const FUDGE: u16 = 300;
/// Longest MAC of a supported algorithm (HMAC-SHA512).
const MAX_MAC: usize = 64;
/// Pointers followed within one name before it is called malformed.
const MAX_HOPS: usize = 64;

/// The HMAC algorithms weir signs and verifies with (RFC 8945 6: SHA-256 is mandatory; SHA-1
/// and MD5 are not offered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Algorithm {
    /// Every algorithm, in the order problems name them.
    pub const ALL: [Algorithm; 3] = [
        Algorithm::HmacSha256,
        Algorithm::HmacSha384,
        Algorithm::HmacSha512,
    ];

    /// The algorithm `text` names (`hmac-sha256`, case-insensitive, trailing dot optional).
    pub fn from_name(text: &str) -> Option<Algorithm> {
        let text = text.strip_suffix('.').unwrap_or(text);
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(text))
    }

    /// Its name as key files write it: `hmac-sha256`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha384 => "hmac-sha384",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }

    /// Its name in canonical wire form (RFC 8945 6: `hmac-sha256.`).
    pub fn wire(self) -> &'static [u8] {
        match self {
            Algorithm::HmacSha256 => b"\x0bhmac-sha256\x00",
            Algorithm::HmacSha384 => b"\x0bhmac-sha384\x00",
            Algorithm::HmacSha512 => b"\x0bhmac-sha512\x00",
        }
    }

    /// Length of the full MAC in bytes.
    pub fn mac_len(self) -> usize {
        match self {
            Algorithm::HmacSha256 => 32,
            Algorithm::HmacSha384 => 48,
            Algorithm::HmacSha512 => 64,
        }
    }

    fn ring(self) -> hmac::Algorithm {
        match self {
            Algorithm::HmacSha256 => hmac::HMAC_SHA256,
            Algorithm::HmacSha384 => hmac::HMAC_SHA384,
            Algorithm::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    fn from_wire(wire: &[u8]) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.wire() == wire)
    }
}

/// One shared secret: its name (lowercase wire form), algorithm and secret. `Debug` never
/// shows the secret.
#[derive(Clone)]
pub struct Key {
    pub name: Name,
    pub algorithm: Algorithm,
    secret: hmac::Key,
}

impl Key {
    /// A key from its decoded secret.
    pub fn new(name: Name, algorithm: Algorithm, secret: &[u8]) -> Key {
        Key {
            name,
            algorithm,
            secret: hmac::Key::new(algorithm.ring(), secret),
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({} {})", self.name, self.algorithm.name())
    }
}

/// The configured keys (`[tsig] key_files`), looked up by name. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct Keyring(Arc<[Key]>);

impl Keyring {
    pub fn new(keys: Vec<Key>) -> Keyring {
        Keyring(keys.into())
    }

    /// The key named `name` (lowercase wire form). A linear search: a server has a handful.
    pub fn get(&self, name: &[u8]) -> Option<&Key> {
        self.0.iter().find(|k| k.name.wire() == name)
    }

    pub fn keys(&self) -> &[Key] {
        &self.0
    }
}

/// A MAC, kept inline.
#[derive(Clone, Copy)]
pub struct Mac {
    bytes: [u8; MAX_MAC],
    len: u8,
}

impl Mac {
    const EMPTY: Mac = Mac {
        bytes: [0; MAX_MAC],
        len: 0,
    };

    fn from_slice(s: &[u8]) -> Mac {
        let mut m = Mac::EMPTY;
        let n = s.len().min(MAX_MAC);
        m.bytes[..n].copy_from_slice(&s[..n]);
        m.len = n as u8;
        m
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({} bytes)", self.len)
    }
}

/// What is wrong with a signed message: FORMERR (no TSIG in the answer), or a TSIG error
/// (RFC 8945 3) answered with RCODE NOTAUTH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The TSIG record is malformed or misplaced (RFC 8945 5.1, 5.2.2.1).
    FormErr,
    /// 16: the MAC does not verify.
    BadSig,
    /// 17: no key of that name, or the key's algorithm is another.
    BadKey,
    /// 18: the time signed is outside the fudge of the server's clock.
    BadTime,
    /// 22: the MAC is truncated below what RFC 8945 5.2.2.1 allows.
    BadTrunc,
}

impl Error {
    /// The TSIG error code carried in the answer's TSIG record (0 for FORMERR, which has none).
    pub fn code(self) -> u16 {
        match self {
            Error::FormErr => 0,
            Error::BadSig => 16,
            Error::BadKey => 17,
            Error::BadTime => 18,
            Error::BadTrunc => 22,
        }
    }
}

/// The message is not well-formed where TSIG is concerned: answer FORMERR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// A name read from a message: lowercase, uncompressed wire form.
#[derive(Clone, Copy)]
struct NameBuf {
    bytes: [u8; MAX_NAME_LEN],
    len: u8,
}

impl NameBuf {
    fn wire(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The fields of a received TSIG record.
#[derive(Clone, Copy)]
struct Fields {
    name: NameBuf,
    algorithm: NameBuf,
    time_signed: u64,
    fudge: u16,
    mac: Mac,
    /// The MAC size field as sent (may exceed what `mac` holds; then FORMERR).
    mac_size: usize,
    original_id: u16,
    /// Offsets in the message of the time signed (then fudge) and of the error (then other
    /// len and other data, to the end).
    timers_at: usize,
    error_at: usize,
}

/// A request whose TSIG verified: the answer is signed with `key`, chained to `mac`.
#[derive(Clone, Debug)]
pub struct Verified<'k> {
    pub key: &'k Key,
    mac: Mac,
}

/// A request whose TSIG did not verify: what to answer (`error`), and what `sign_error` needs.
#[derive(Clone)]
pub struct Failure<'k> {
    pub error: Error,
    fields: Option<Fields>,
    /// The key, for BADTIME (signed).
    key: Option<&'k Key>,
}

impl fmt::Debug for Failure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("error", &self.error)
            .field("key", &self.key)
            .finish()
    }
}

impl Failure<'_> {
    fn malformed() -> Self {
        Failure {
            error: Error::FormErr,
            fields: None,
            key: None,
        }
    }
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Skips the name at `at`; the offset after it.
fn skip_name(p: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let label = usize::from(*p.get(at)?);
        match label & 0xC0 {
            0x00 if label == 0 => return Some(at + 1),
            0x00 => at += 1 + label,
            0xC0 => return (at + 2 <= p.len()).then_some(at + 2),
            _ => return None,
        }
    }
}

/// Reads the name at `at`, following compression pointers (each to an earlier offset, at most
/// `MAX_HOPS`), lowercased; the name and the offset after it in place.
fn read_name(p: &[u8], mut at: usize) -> Option<(NameBuf, usize)> {
    let mut name = NameBuf {
        bytes: [0; MAX_NAME_LEN],
        len: 0,
    };
    let mut len = 0usize;
    let mut end = None;
    let mut hops = 0;
    loop {
        let label = usize::from(*p.get(at)?);
        match label & 0xC0 {
            0x00 => {
                if len + 1 + label > MAX_NAME_LEN {
                    return None;
                }
                let bytes = p.get(at..at + 1 + label)?;
                name.bytes[len] = label as u8;
                for (d, s) in name.bytes[len + 1..len + 1 + label]
                    .iter_mut()
                    .zip(&bytes[1..])
                {
                    *d = s.to_ascii_lowercase();
                }
                len += 1 + label;
                at += 1 + label;
                if label == 0 {
                    name.len = len as u8;
                    return Some((name, end.unwrap_or(at)));
                }
            }
            0xC0 => {
                let target = usize::from(u16_at(p, at)? & 0x3FFF);
                hops += 1;
                if target >= at || hops > MAX_HOPS {
                    return None;
                }
                end.get_or_insert(at + 2);
                at = target;
            }
            _ => return None,
        }
    }
}

/// Finds the TSIG record of a message: its offset, None if unsigned. A TSIG that is not the
/// last record of ADDITIONAL, or a second one, is malformed (RFC 8945 5.1: FORMERR), as is a
/// message whose records run past its end.
pub fn locate(msg: &[u8]) -> Result<Option<usize>, Malformed> {
    let count = |at| u16_at(msg, at).map(usize::from).ok_or(Malformed);
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(msg, at).ok_or(Malformed)? + 4;
    }
    let total = an + ns + ar;
    let mut found = None;
    for i in 0..total {
        let start = at;
        at = skip_name(msg, at).ok_or(Malformed)?;
        let t = u16_at(msg, at).ok_or(Malformed)?;
        let rdlen = usize::from(u16_at(msg, at + 8).ok_or(Malformed)?);
        at += 10 + rdlen;
        if at > msg.len() {
            return Err(Malformed);
        }
        if t == TYPE_TSIG {
            if i + 1 != total || ar == 0 {
                return Err(Malformed);
            }
            found = Some(start);
        }
    }
    Ok(found)
}

/// Parses the TSIG record at `at` (the last record of `msg`).
fn parse(msg: &[u8], at: usize) -> Option<Fields> {
    let (name, after) = read_name(msg, at)?;
    if u16_at(msg, after)? != TYPE_TSIG || u16_at(msg, after + 2)? != CLASS_ANY {
        return None;
    }
    let rdlen = usize::from(u16_at(msg, after + 8)?);
    let rdata_at = after + 10;
    let end = rdata_at + rdlen;
    if end != msg.len() {
        return None;
    }
    // RFC 8945 4.2: the algorithm name "MUST NOT be compressed"; read leniently all the same.
    let (algorithm, mut r) = read_name(msg, rdata_at)?;
    let timers_at = r;
    let time = msg.get(r..r + 6)?;
    let time_signed = time.iter().fold(0u64, |t, &b| t << 8 | u64::from(b));
    let fudge = u16_at(msg, r + 6)?;
    let mac_size = usize::from(u16_at(msg, r + 8)?);
    r += 10;
    let mac = msg.get(r..r + mac_size)?;
    r += mac_size;
    let original_id = u16_at(msg, r)?;
    let error_at = r + 2;
    let other_len = usize::from(u16_at(msg, r + 4)?);
    r += 6 + other_len;
    if r != end {
        return None;
    }
    Some(Fields {
        name,
        algorithm,
        time_signed,
        fudge,
        mac: Mac::from_slice(mac),
        mac_size,
        original_id,
        timers_at,
        error_at,
    })
}

/// Verifies the TSIG record at `tsig` (from `locate`) of the received `msg` at Unix time `now`
/// (RFC 8945 5.2): the key (BADKEY), the MAC over the message as sent with its original ID and
/// without the TSIG record (BADSIG, BADTRUNC; 4.3.3), then the time (BADTIME).
#[allow(
    clippy::result_large_err,
    reason = "a failure carries the request's names inline so answering it allocates nothing; failures are rare"
)]
pub fn verify<'k>(
    keyring: &'k Keyring,
    msg: &[u8],
    tsig: usize,
    now: u64,
) -> Result<Verified<'k>, Failure<'k>> {
    let Some(fields) = parse(msg, tsig) else {
        return Err(Failure::malformed());
    };
    let Some(key) = keyring.get(fields.name.wire()) else {
        return Err(Failure {
            error: Error::BadKey,
            fields: Some(fields),
            key: None,
        });
    };
    match check(key, msg, tsig, &fields, None, now) {
        Ok(()) => Ok(Verified {
            key,
            mac: fields.mac,
        }),
        Err(error) => Err(Failure {
            error,
            key: (error == Error::BadTime).then_some(key),
            fields: (error != Error::FormErr).then_some(fields),
        }),
    }
}

/// Verifies the signed reply `msg` (TSIG at `tsig`, from `locate`) to a request weir signed
/// with `key` (`sign_request` returned `request_mac`): the client side of RFC 8945 5.3. The
/// reply's MAC, for chaining; or the error (a reply carrying a TSIG error is `Err` with it).
pub fn verify_reply(
    key: &Key,
    msg: &[u8],
    tsig: usize,
    request_mac: &Mac,
    now: u64,
) -> Result<Mac, Error> {
    let fields = parse(msg, tsig).ok_or(Error::FormErr)?;
    if fields.name.wire() != key.name.wire() {
        return Err(Error::BadKey);
    }
    let error = match u16_at(msg, fields.error_at) {
        Some(0) => None,
        Some(16) => Some(Error::BadSig),
        Some(17) => Some(Error::BadKey),
        Some(18) => Some(Error::BadTime),
        Some(22) => Some(Error::BadTrunc),
        _ => Some(Error::FormErr),
    };
    // 5.3.2: errors about the key or the MAC come unsigned (MAC size 0).
    if let Some(error) = error
        && fields.mac_size == 0
    {
        return Err(error);
    }
    check(key, msg, tsig, &fields, Some(request_mac), now)?;
    error.map_or(Ok(fields.mac), Err)
}

/// The checks of RFC 8945 5.2 after the key is found: algorithm, MAC length, MAC, time.
fn check(
    key: &Key,
    msg: &[u8],
    tsig: usize,
    fields: &Fields,
    prior: Option<&Mac>,
    now: u64,
) -> Result<(), Error> {
    if Algorithm::from_wire(fields.algorithm.wire()) != Some(key.algorithm) {
        return Err(Error::BadKey);
    }
    // RFC 8945 5.2.2.1: a MAC longer than the hash is FORMERR; shorter than the larger of 10
    // octets and half the hash is not accepted (BADTRUNC).
    let full = key.algorithm.mac_len();
    if fields.mac_size > full {
        return Err(Error::FormErr);
    }
    if fields.mac_size < full.div_ceil(2).max(10) {
        return Err(Error::BadTrunc);
    }
    let mut h = [0u8; 12];
    h.copy_from_slice(msg.get(..12).ok_or(Error::FormErr)?);
    h[0..2].copy_from_slice(&fields.original_id.to_be_bytes());
    let arcount = u16::from_be_bytes([h[10], h[11]]).wrapping_sub(1);
    h[10..12].copy_from_slice(&arcount.to_be_bytes());
    let mut ctx = hmac::Context::with_key(&key.secret);
    if let Some(prior) = prior {
        ctx.update(&u16::from(prior.len).to_be_bytes());
        ctx.update(prior.as_bytes());
    }
    ctx.update(&h);
    ctx.update(msg.get(12..tsig).ok_or(Error::FormErr)?);
    // The TSIG variables (4.3.3): the names canonical, then the timers, and the error and
    // other data as received.
    ctx.update(fields.name.wire());
    ctx.update(&CLASS_ANY.to_be_bytes());
    ctx.update(&0u32.to_be_bytes());
    ctx.update(key.algorithm.wire());
    ctx.update(&msg[fields.timers_at..fields.timers_at + 8]);
    ctx.update(&msg[fields.error_at..]);
    let computed = ctx.sign();
    let ok: bool = computed.as_ref()[..fields.mac_size]
        .ct_eq(fields.mac.as_bytes())
        .into();
    if !ok {
        return Err(Error::BadSig);
    }
    if now.abs_diff(fields.time_signed) > u64::from(fields.fudge) {
        return Err(Error::BadTime);
    }
    Ok(())
}

/// Bytes the TSIG record of a signed answer adds with `key`: writers keep this much room.
pub fn space(key: &Key) -> usize {
    // Owner, type, class, TTL, rdlength; algorithm, time (6), fudge, MAC size, MAC, original
    // ID, error, other len.
    key.name.wire().len() + 10 + key.algorithm.wire().len() + 10 + key.algorithm.mac_len() + 6
}

/// The largest `space` over a keyring's keys: what a writer reserves before it knows which.
pub fn max_space(keyring: &Keyring) -> usize {
    keyring.keys().iter().map(space).max().unwrap_or(0)
}

/// What goes into a TSIG record besides the MAC.
struct Record<'a> {
    name: &'a [u8],
    algorithm: &'a [u8],
    time_signed: u64,
    fudge: u16,
    error: u16,
    other: &'a [u8],
}

impl Record<'_> {
    fn time(&self) -> [u8; 6] {
        let t = self.time_signed.to_be_bytes();
        [t[2], t[3], t[4], t[5], t[6], t[7]]
    }

    /// The TSIG variables (RFC 8945 4.3.3), into the MAC.
    fn digest_variables(&self, ctx: &mut hmac::Context) {
        ctx.update(self.name);
        ctx.update(&CLASS_ANY.to_be_bytes());
        ctx.update(&0u32.to_be_bytes());
        ctx.update(self.algorithm);
        ctx.update(&self.time());
        ctx.update(&self.fudge.to_be_bytes());
        ctx.update(&self.error.to_be_bytes());
        ctx.update(&(self.other.len() as u16).to_be_bytes());
        ctx.update(self.other);
    }

    /// Appends the record with `mac` to the message at `out[base..]` and counts it in ARCOUNT.
    fn append(&self, out: &mut Vec<u8>, base: usize, mac: &[u8]) {
        let id = [out[base], out[base + 1]];
        out.extend_from_slice(self.name);
        out.extend_from_slice(&TYPE_TSIG.to_be_bytes());
        out.extend_from_slice(&CLASS_ANY.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        let rdlen = self.algorithm.len() + 16 + mac.len() + self.other.len();
        out.extend_from_slice(&(rdlen as u16).to_be_bytes());
        out.extend_from_slice(self.algorithm);
        out.extend_from_slice(&self.time());
        out.extend_from_slice(&self.fudge.to_be_bytes());
        out.extend_from_slice(&(mac.len() as u16).to_be_bytes());
        out.extend_from_slice(mac);
        out.extend_from_slice(&id);
        out.extend_from_slice(&self.error.to_be_bytes());
        out.extend_from_slice(&(self.other.len() as u16).to_be_bytes());
        out.extend_from_slice(self.other);
        let ar = u16::from_be_bytes([out[base + 10], out[base + 11]]).wrapping_add(1);
        out[base + 10..base + 12].copy_from_slice(&ar.to_be_bytes());
    }
}

/// Signs `out[base..]` with `key`: the MAC over `prior` (length-prefixed, when chained), the
/// message, then the variables (or, for a later message of a stream, the timers alone).
fn sign(
    out: &mut Vec<u8>,
    base: usize,
    key: &Key,
    prior: Option<&Mac>,
    record: &Record<'_>,
    timers_only: bool,
) -> Mac {
    let mut ctx = hmac::Context::with_key(&key.secret);
    if let Some(prior) = prior {
        ctx.update(&u16::from(prior.len).to_be_bytes());
        ctx.update(prior.as_bytes());
    }
    ctx.update(&out[base..]);
    if timers_only {
        ctx.update(&record.time());
        ctx.update(&record.fudge.to_be_bytes());
    } else {
        record.digest_variables(&mut ctx);
    }
    let mac = Mac::from_slice(ctx.sign().as_ref());
    record.append(out, base, mac.as_bytes());
    mac
}

fn record_of<'a>(key: &'a Key, now: u64) -> Record<'a> {
    Record {
        name: key.name.wire(),
        algorithm: key.algorithm.wire(),
        time_signed: now,
        fudge: FUDGE,
        error: 0,
        other: &[],
    }
}

/// Signs the answer at `out[base..]` (complete, its ARCOUNT not counting the TSIG record) to a
/// verified request (RFC 8945 4.3.1: the request's MAC, the answer, the variables); appends
/// the TSIG record. Returns the MAC, for `sign_next` when more messages follow.
pub fn sign_answer(out: &mut Vec<u8>, base: usize, request: &Verified<'_>, now: u64) -> Mac {
    let record = record_of(request.key, now);
    sign(out, base, request.key, Some(&request.mac), &record, false)
}

/// Signs a later message of a multi-message answer (AXFR), chained to the MAC of the message
/// before (RFC 8945 5.3.1: prior MAC, the message, time signed and fudge).
pub fn sign_next(out: &mut Vec<u8>, base: usize, key: &Key, prior: &Mac, now: u64) -> Mac {
    let record = record_of(key, now);
    sign(out, base, key, Some(prior), &record, true)
}

/// Signs a request from scratch (an outgoing NOTIFY or query: the message, then the
/// variables); returns its MAC, against which the reply verifies.
pub fn sign_request(out: &mut Vec<u8>, base: usize, key: &Key, now: u64) -> Mac {
    let record = record_of(key, now);
    sign(out, base, key, None, &record, false)
}

/// Appends the TSIG record of an error answer (RFC 8945 5.3.2) to the NOTAUTH message at
/// `out[base..]`: BADKEY, BADSIG and BADTRUNC unsigned (MAC size 0), with the request's key
/// and algorithm names and time; BADTIME signed with the key (chained to the request's MAC),
/// the request's time signed and the server's time in other data. FORMERR adds nothing.
pub fn sign_error(out: &mut Vec<u8>, base: usize, failure: &Failure<'_>, now: u64) {
    let Some(fields) = &failure.fields else {
        return;
    };
    let mut record = Record {
        name: fields.name.wire(),
        algorithm: fields.algorithm.wire(),
        time_signed: fields.time_signed,
        fudge: fields.fudge,
        error: failure.error.code(),
        other: &[],
    };
    match (failure.error, failure.key) {
        (Error::BadTime, Some(key)) => {
            let t = now.to_be_bytes();
            let server_time = [t[2], t[3], t[4], t[5], t[6], t[7]];
            record.other = &server_time;
            sign(out, base, key, Some(&fields.mac), &record, false);
        }
        (Error::FormErr, _) => {}
        _ => record.append(out, base, &[]),
    }
}

/// A problem in a key file: its line (1-based) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyProblem {
    pub line: usize,
    pub message: String,
}

/// Reads a key file: every key, or every problem (`path:line: message` once shown).
pub fn read_key_file(path: &Path) -> Result<Vec<Key>, Vec<KeyProblem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![KeyProblem {
            line: 0,
            message: format!("cannot read key file: {e}"),
        }]
    })?;
    parse_keys(&text)
}

/// Parses key file text: the BIND format (`key "name" { algorithm hmac-sha256; secret
/// "base64"; };`, as `tsig-keygen` writes, `#` and `//` comments) or the Knot format (`key:`
/// then `- id: name`, `algorithm:`, `secret:` lines, as `keymgr -t` writes).
pub fn parse_keys(text: &str) -> Result<Vec<Key>, Vec<KeyProblem>> {
    let knot = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .find(|l| !l.is_empty())
        .is_some_and(|l| l == "key:");
    let mut problems = Vec::new();
    let mut keys = Vec::new();
    let specs = if knot {
        knot_specs(text, &mut problems)
    } else {
        bind_specs(text, &mut problems)
    };
    for spec in specs {
        match spec.into_key() {
            Ok(key) => keys.push(key),
            Err(p) => problems.push(p),
        }
    }
    if keys.is_empty() && problems.is_empty() {
        problems.push(KeyProblem {
            line: 1,
            message: "no key in the file".into(),
        });
    }
    if problems.is_empty() {
        Ok(keys)
    } else {
        Err(problems)
    }
}

/// A key as written, before its fields are checked.
#[derive(Default)]
struct Spec {
    line: usize,
    name: Option<String>,
    algorithm: Option<(usize, String)>,
    secret: Option<(usize, String)>,
}

impl Spec {
    fn into_key(self) -> Result<Key, KeyProblem> {
        let problem = |line, message: String| KeyProblem { line, message };
        let text = self.name.unwrap_or_default();
        let name = Name::parse(&text)
            .map_err(|e| problem(self.line, format!("key name `{text}`: {e}")))?;
        let Some((alg_line, alg)) = self.algorithm else {
            return Err(problem(self.line, format!("key `{name}` has no algorithm")));
        };
        let Some(algorithm) = Algorithm::from_name(&alg) else {
            let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
            return Err(problem(
                alg_line,
                format!(
                    "key `{name}`: algorithm `{alg}` is not supported (supported: {})",
                    names.join(", ")
                ),
            ));
        };
        let Some((secret_line, secret)) = self.secret else {
            return Err(problem(self.line, format!("key `{name}` has no secret")));
        };
        let Some(bytes) = base64_decode(&secret) else {
            return Err(problem(
                secret_line,
                format!("key `{name}`: the secret is not base64"),
            ));
        };
        // RFC 8945 6: keys should be at least as long as the hash output; refuse anything
        // shorter than half of it.
        let min = algorithm.mac_len() / 2;
        if bytes.len() < min {
            return Err(problem(
                secret_line,
                format!(
                    "key `{name}`: the secret is {} bytes; {} needs at least {min} (tsig-keygen makes {})",
                    bytes.len(),
                    algorithm.name(),
                    algorithm.mac_len()
                ),
            ));
        }
        Ok(Key::new(name, algorithm, &bytes))
    }
}

/// Knot's YAML subset: `key:` then list items of `id`, `algorithm`, `secret`.
fn knot_specs(text: &str, problems: &mut Vec<KeyProblem>) -> Vec<Spec> {
    let mut specs: Vec<Spec> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.split('#').next().unwrap_or_default().trim();
        if l.is_empty() || l == "key:" {
            continue;
        }
        let (item, l) = match l.strip_prefix("- ") {
            Some(rest) => (true, rest.trim()),
            None => (false, l),
        };
        let Some((field, value)) = l.split_once(':') else {
            problems.push(KeyProblem {
                line,
                message: format!("`{l}` is not `field: value`"),
            });
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        if item {
            specs.push(Spec {
                line,
                ..Spec::default()
            });
        }
        let Some(spec) = specs.last_mut() else {
            problems.push(KeyProblem {
                line,
                message: "a field before the first `- id:` item".into(),
            });
            continue;
        };
        match field.trim() {
            "id" => spec.name = Some(value),
            "algorithm" => spec.algorithm = Some((line, value)),
            "secret" => spec.secret = Some((line, value)),
            other => problems.push(KeyProblem {
                line,
                message: format!("unknown key field `{other}` (id, algorithm, secret)"),
            }),
        }
    }
    specs
}

/// A token of the BIND format and its line.
#[derive(Debug, PartialEq, Eq)]
enum Token<'t> {
    Word(&'t str),
    Quoted(&'t str),
    Punct(char),
}

fn bind_tokens<'t>(text: &'t str, problems: &mut Vec<KeyProblem>) -> Vec<(usize, Token<'t>)> {
    let mut tokens = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let mut rest = raw;
        loop {
            rest = rest.trim_start();
            if rest.is_empty() || rest.starts_with('#') || rest.starts_with("//") {
                break;
            }
            let c = rest.chars().next().unwrap_or(' ');
            if matches!(c, '{' | '}' | ';') {
                tokens.push((line, Token::Punct(c)));
                rest = &rest[1..];
            } else if c == '"' {
                let Some(end) = rest[1..].find('"') else {
                    problems.push(KeyProblem {
                        line,
                        message: "unterminated quoted string".into(),
                    });
                    break;
                };
                tokens.push((line, Token::Quoted(&rest[1..1 + end])));
                rest = &rest[end + 2..];
            } else {
                let end = rest
                    .find(|c: char| c.is_whitespace() || matches!(c, '{' | '}' | ';' | '"'))
                    .unwrap_or(rest.len());
                tokens.push((line, Token::Word(&rest[..end])));
                rest = &rest[end..];
            }
        }
    }
    tokens
}

/// BIND's `key "name" { algorithm NAME; secret "BASE64"; };` statements.
fn bind_specs(text: &str, problems: &mut Vec<KeyProblem>) -> Vec<Spec> {
    let tokens = bind_tokens(text, problems);
    let mut specs = Vec::new();
    let mut t = tokens.iter().peekable();
    let expected = |line: usize, what: &str| KeyProblem {
        line,
        message: format!("expected {what}"),
    };
    while let Some((line, token)) = t.next() {
        if *token != Token::Word("key") {
            problems.push(expected(*line, "`key \"name\" { ... };`"));
            return specs;
        }
        let name = match t.next() {
            Some((_, Token::Word(n) | Token::Quoted(n))) => n.to_string(),
            _ => {
                problems.push(expected(*line, "a key name after `key`"));
                return specs;
            }
        };
        if !matches!(t.next(), Some((_, Token::Punct('{')))) {
            problems.push(expected(*line, "`{` after the key name"));
            return specs;
        }
        let mut spec = Spec {
            line: *line,
            name: Some(name),
            ..Spec::default()
        };
        loop {
            match t.next() {
                Some((_, Token::Punct('}'))) => break,
                Some((l, Token::Word(field))) => {
                    let value = match t.next() {
                        Some((_, Token::Word(v) | Token::Quoted(v))) => v.to_string(),
                        _ => {
                            problems.push(expected(*l, &format!("a value after `{field}`")));
                            return specs;
                        }
                    };
                    if !matches!(t.next(), Some((_, Token::Punct(';')))) {
                        problems.push(expected(*l, &format!("`;` after `{field} {value}`")));
                        return specs;
                    }
                    match *field {
                        "algorithm" => spec.algorithm = Some((*l, value)),
                        "secret" => spec.secret = Some((*l, value)),
                        other => problems.push(KeyProblem {
                            line: *l,
                            message: format!("unknown key statement `{other}` (algorithm, secret)"),
                        }),
                    }
                }
                Some((l, _)) => {
                    problems.push(expected(*l, "`algorithm`, `secret` or `}`"));
                    return specs;
                }
                None => {
                    problems.push(expected(*line, "`};` closing the key"));
                    return specs;
                }
            }
        }
        if !matches!(t.peek(), Some((_, Token::Punct(';')))) {
            problems.push(expected(*line, "`;` after the key's `}`"));
            return specs;
        }
        t.next();
        specs.push(spec);
    }
    specs
}

/// Standard base64 (RFC 4648 4) with padding; whitespace ignored. None if it is not, or if it
/// is empty.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let packed: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    data_encoding::BASE64
        .decode(&packed)
        .ok()
        .filter(|bytes| !bytes.is_empty())
}

#[cfg(test)]
mod tests;
