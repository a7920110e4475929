//! DNSSEC signing (RFC 4033-4035) over our own bytes, on `ring`: signing keys (ECDSA P-256 with
//! SHA-256, algorithm 13; Ed25519, algorithm 15), their DNSKEY, key tag (RFC 4034 B) and DS
//! (SHA-256, RFC 4509), key files in the BIND format (`K<zone>+<alg>+<tag>.key` and
//! `.private`, as `dnssec-keygen` and `weir dnssec keygen` write them), RRSIGs over an RRset in
//! canonical form (RFC 4034 3.1.8.1, 6), and NSEC rdata with its type bitmap (RFC 4034 4.1).
//!
//! Why our own code and not hickory-proto's DNSSEC feature: the records we sign are our own
//! `model` types already in canonical (lowercase, uncompressed) wire form, and the query path
//! signs denial records on demand (compact denial, RFC 9824) from bytes it holds; hickory's
//! signer takes its own `Record`/`RRSet` types, so each signature would first build those
//! (allocations per record) only to serialize them back to the bytes we have. What is easy
//! to get subtly wrong (canonical order, the wildcard label count, the key tag) is tested
//! here against RFC examples and, end to end, by real validators (`delv`, unbound, BIND;
//! tests/it/dnssec.rs).
//!
//! Nothing here touches the clock or sockets: callers pass the validity window.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use data_encoding::{BASE64, HEXUPPER};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};

use crate::model::{Name, label_starts};

/// RRSIG, NSEC, DNSKEY, CDS and CDNSKEY type codes (RFC 4034, RFC 7344), and NXNAME, the
/// meta-type of compact denial (RFC 9824 2).
pub mod types {
    pub const RRSIG: u16 = 46;
    pub const NSEC: u16 = 47;
    pub const DNSKEY: u16 = 48;
    pub const CDS: u16 = 59;
    pub const CDNSKEY: u16 = 60;
    pub const NXNAME: u16 = 128;
}

/// Signatures made on the query path (cache misses: `note_signed_on_demand`), since start;
/// the metrics read it when scraped (`weir_dnssec_signed_on_demand_total`).
static SIGNED_ON_DEMAND: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts one set signed on the query path.
pub fn note_signed_on_demand() {
    SIGNED_ON_DEMAND.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Sets signed on the query path since start.
pub fn signed_on_demand() -> u64 {
    SIGNED_ON_DEMAND.load(std::sync::atomic::Ordering::Relaxed)
}

/// DNSKEY flags: Zone Key (bit 7) and Secure Entry Point (bit 15, a KSK or CSK).
pub const FLAGS_ZSK: u16 = 256;
pub const FLAGS_KSK: u16 = 257;

/// A signing algorithm weir supports (RFC 8624 "MUST" and "RECOMMENDED" for signing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// 13, ECDSAP256SHA256 (RFC 6605): the default, as Knot and BIND.
    EcdsaP256Sha256,
    /// 15, ED25519 (RFC 8080).
    Ed25519,
}

impl Algorithm {
    pub fn number(self) -> u8 {
        match self {
            Algorithm::EcdsaP256Sha256 => 13,
            Algorithm::Ed25519 => 15,
        }
    }

    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            13 => Some(Algorithm::EcdsaP256Sha256),
            15 => Some(Algorithm::Ed25519),
            _ => None,
        }
    }

    /// The mnemonic of the IANA registry, as BIND's key files write it.
    pub fn mnemonic(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256Sha256 => "ECDSAP256SHA256",
            Algorithm::Ed25519 => "ED25519",
        }
    }

    /// Accepts the number or the mnemonic (any case), and `ecdsa`/`ed25519` for short.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.to_ascii_lowercase();
        match t.as_str() {
            "13" | "ecdsap256sha256" | "ecdsa" | "ecdsa-p256" => Some(Algorithm::EcdsaP256Sha256),
            "15" | "ed25519" => Some(Algorithm::Ed25519),
            _ => None,
        }
    }
}

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A zone's signing key: its DNSKEY rdata, tag, and the private half (never shown).
pub struct SigningKey {
    pub algorithm: Algorithm,
    /// `FLAGS_ZSK` or `FLAGS_KSK`.
    pub flags: u16,
    pub tag: u16,
    dnskey: Box<[u8]>,
    pair: Pair,
    /// The private key as the BIND format holds it (the P-256 scalar, or the Ed25519 seed).
    private: Box<[u8]>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("flags", &self.flags)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key from the system's random source.
    pub fn generate(algorithm: Algorithm, flags: u16) -> Result<SigningKey, String> {
        let rng = SystemRandom::new();
        // ring hands a new key out only as PKCS#8; the private key sits at a fixed place in
        // the document ring writes (after the ECPrivateKey version, or the CurvePrivateKey
        // octet string), found here by its DER prefix.
        let (doc, prefix) = match algorithm {
            Algorithm::EcdsaP256Sha256 => (
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng),
                &[0x02, 0x01, 0x01, 0x04, 0x20][..],
            ),
            Algorithm::Ed25519 => (
                Ed25519KeyPair::generate_pkcs8(&rng),
                &[0x04, 0x22, 0x04, 0x20][..],
            ),
        };
        let doc = doc.map_err(|_| "the system's random source failed".to_string())?;
        let der = doc.as_ref();
        let at = (der.windows(prefix.len()).position(|w| w == prefix))
            .ok_or("unexpected PKCS#8 layout from ring")?
            + prefix.len();
        let private = der.get(at..at + 32).ok_or("short PKCS#8 document")?;
        let public = match algorithm {
            Algorithm::EcdsaP256Sha256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                    .map_err(|e| e.to_string())?;
                pair.public_key().as_ref()[1..].to_vec()
            }
            Algorithm::Ed25519 => {
                let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|e| e.to_string())?;
                pair.public_key().as_ref().to_vec()
            }
        };
        SigningKey::from_parts(algorithm, flags, private, &public)
    }

    /// A key from its private half and the public key as DNSKEY holds it (P-256: x | y,
    /// 64 bytes; Ed25519: 32 bytes). Err if they do not belong together.
    pub fn from_parts(
        algorithm: Algorithm,
        flags: u16,
        private: &[u8],
        public: &[u8],
    ) -> Result<SigningKey, String> {
        let pair = match algorithm {
            Algorithm::EcdsaP256Sha256 => {
                if public.len() != 64 {
                    return Err(format!(
                        "an ECDSA P-256 public key has 64 bytes, not {}",
                        public.len()
                    ));
                }
                let mut uncompressed = [0u8; 65];
                uncompressed[0] = 4;
                uncompressed[1..].copy_from_slice(public);
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    private,
                    &uncompressed,
                    &SystemRandom::new(),
                )
                .map_err(|e| format!("the private key does not match the public key ({e})"))?;
                Pair::Ecdsa(pair)
            }
            Algorithm::Ed25519 => {
                let pair = Ed25519KeyPair::from_seed_and_public_key(private, public)
                    .map_err(|e| format!("the private key does not match the public key ({e})"))?;
                Pair::Ed25519(pair)
            }
        };
        let mut dnskey = Vec::with_capacity(4 + public.len());
        dnskey.extend_from_slice(&flags.to_be_bytes());
        dnskey.push(3);
        dnskey.push(algorithm.number());
        dnskey.extend_from_slice(public);
        Ok(SigningKey {
            algorithm,
            flags,
            tag: key_tag(&dnskey),
            dnskey: dnskey.into(),
            pair,
            private: private.into(),
        })
    }

    /// A KSK or CSK: the Secure Entry Point flag, what a DS at the parent points at.
    pub fn is_sep(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The DNSKEY rdata.
    pub fn dnskey(&self) -> &[u8] {
        &self.dnskey
    }

    /// The DS rdata for this key at `owner` (`ds_rdata`).
    pub fn ds(&self, owner: &Name) -> Vec<u8> {
        ds_rdata(owner, &self.dnskey)
    }

    /// A signature over `data`: 64 bytes for both algorithms (ECDSA r | s, RFC 6605 4).
    fn signature(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        match &self.pair {
            Pair::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), data)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ECDSA signing failed".to_string()),
            Pair::Ed25519(pair) => Ok(pair.sign(data).as_ref().to_vec()),
        }
    }

    /// The file name stem BIND gives this key for `zone`: `K<zone>+<alg>+<tag>`.
    pub fn file_stem(&self, zone: &Name) -> String {
        format!("K{zone}+{:03}+{:05}", self.algorithm.number(), self.tag)
    }

    /// The `.key` file text: a comment and the DNSKEY record.
    pub fn key_file(&self, zone: &Name, ttl: u32) -> String {
        let kind = if self.is_sep() {
            "key-signing"
        } else {
            "zone-signing"
        };
        format!(
            "; This is a {kind} key, keyid {}, for {zone}\n{zone} {ttl} IN DNSKEY {}\n",
            self.tag,
            dnskey_text(&self.dnskey)
        )
    }

    /// The `.private` file text (BIND's "Private-key-format: v1.3"), with `created` as the
    /// Created and Publish times (`YYYYMMDDHHMMSS`), and as the Activate time unless the key
    /// is a `standby` (published, signing only once a rollover activates it).
    pub fn private_file(&self, created: &str, standby: bool) -> String {
        let activate = if standby {
            String::new()
        } else {
            format!("Activate: {created}\n")
        };
        format!(
            "Private-key-format: v1.3\nAlgorithm: {} ({})\nPrivateKey: {}\nCreated: {created}\nPublish: {created}\n{activate}",
            self.algorithm.number(),
            self.algorithm.mnemonic(),
            BASE64.encode(&self.private)
        )
    }
}

/// The DS rdata of the DNSKEY rdata `dnskey` at `owner`: digest type 2, SHA-256 (RFC 4509).
pub fn ds_rdata(owner: &Name, dnskey: &[u8]) -> Vec<u8> {
    let mut data = owner.wire().to_vec();
    data.extend_from_slice(dnskey);
    let digest = ring::digest::digest(&ring::digest::SHA256, &data);
    let mut ds = Vec::with_capacity(4 + 32);
    ds.extend_from_slice(&key_tag(dnskey).to_be_bytes());
    ds.push(dnskey.get(3).copied().unwrap_or(0));
    ds.push(2);
    ds.extend_from_slice(digest.as_ref());
    ds
}

/// DNSKEY rdata in presentation form after the type: `flags 3 alg base64`.
pub fn dnskey_text(rdata: &[u8]) -> String {
    match rdata {
        [f0, f1, proto, alg, key @ ..] => format!(
            "{} {proto} {alg} {}",
            u16::from_be_bytes([*f0, *f1]),
            BASE64.encode(key)
        ),
        _ => String::new(),
    }
}

/// DS rdata in presentation form after the type: `tag alg digest-type HEX`.
pub fn ds_text(rdata: &[u8]) -> String {
    match rdata {
        [t0, t1, alg, dt, digest @ ..] => format!(
            "{} {alg} {dt} {}",
            u16::from_be_bytes([*t0, *t1]),
            HEXUPPER.encode(digest)
        ),
        _ => String::new(),
    }
}

/// The key tag of a DNSKEY rdata (RFC 4034 appendix B; algorithm 1 is not supported).
pub fn key_tag(dnskey: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for (i, b) in dnskey.iter().enumerate() {
        acc += if i & 1 == 0 {
            u32::from(*b) << 8
        } else {
            u32::from(*b)
        };
    }
    acc += (acc >> 16) & 0xFFFF;
    (acc & 0xFFFF) as u16
}

/// The validity of signatures made together: inception and expiration in Unix seconds
/// (RRSIG fields are serial-number arithmetic on 32 bits, RFC 4034 3.1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub inception: u32,
    pub expiration: u32,
}

impl Window {
    /// From `now` (Unix seconds): inception `skew` before it, expiration `validity` after.
    pub fn starting(now: u64, skew: u64, validity: u64) -> Window {
        Window {
            inception: now.saturating_sub(skew) as u32,
            expiration: now.saturating_add(validity) as u32,
        }
    }
}

/// The RRSIG Labels field for `owner` (lowercase wire form): its labels, the root and a
/// leading `*` not counted (RFC 4034 3.1.3, RFC 4035 5.3.2: a wildcard's signature covers
/// every name it stands for).
pub fn labels(owner: &[u8]) -> u8 {
    let count = label_starts(owner).filter(|&at| owner[at] != 0).count();
    let wildcard = owner.starts_with(&[1, b'*']);
    (count - usize::from(wildcard)) as u8
}

/// The RRSIG rdata signing the RRset `owner`/`rtype` (class IN) with `original_ttl` and the
/// records `rdatas` (each in canonical wire form: names lowercase and uncompressed) by `key`
/// of zone `signer`: the records are put in canonical order and duplicates dropped
/// (RFC 4034 6.3); a wildcard owner (`*.…`) is signed as such, with its Labels field one
/// less. Err only if the key's signing fails.
pub fn sign<'r>(
    key: &SigningKey,
    signer: &Name,
    owner: &[u8],
    rtype: u16,
    original_ttl: u32,
    rdatas: impl IntoIterator<Item = &'r [u8]>,
    window: Window,
) -> Result<Vec<u8>, String> {
    let mut sorted: smallvec::SmallVec<[&[u8]; 8]> = rdatas.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut rrsig = Vec::with_capacity(18 + signer.wire().len() + 64);
    rrsig.extend_from_slice(&rtype.to_be_bytes());
    rrsig.push(key.algorithm.number());
    rrsig.push(labels(owner));
    rrsig.extend_from_slice(&original_ttl.to_be_bytes());
    rrsig.extend_from_slice(&window.expiration.to_be_bytes());
    rrsig.extend_from_slice(&window.inception.to_be_bytes());
    rrsig.extend_from_slice(&key.tag.to_be_bytes());
    rrsig.extend_from_slice(signer.wire());
    let mut data = rrsig.clone();
    for rd in sorted {
        data.extend_from_slice(owner);
        data.extend_from_slice(&rtype.to_be_bytes());
        data.extend_from_slice(&crate::model::CLASS_IN.to_be_bytes());
        data.extend_from_slice(&original_ttl.to_be_bytes());
        data.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        data.extend_from_slice(rd);
    }
    rrsig.extend_from_slice(&key.signature(&data)?);
    Ok(rrsig)
}

/// NSEC rdata (RFC 4034 4.1): `next` (lowercase wire form) and the type bitmap of `types`
/// (any order; duplicates ignored).
pub fn nsec(next: &[u8], types: &[u16]) -> Vec<u8> {
    let mut sorted: smallvec::SmallVec<[u16; 16]> = types.iter().copied().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = next.to_vec();
    let mut i = 0;
    while let Some(&first) = sorted.get(i) {
        let window = first >> 8;
        let mut bitmap = [0u8; 32];
        let mut len = 0;
        while let Some(&t) = sorted.get(i).filter(|t| *t >> 8 == window) {
            let low = (t & 0xFF) as usize;
            bitmap[low / 8] |= 0x80 >> (low % 8);
            len = low / 8 + 1;
            i += 1;
        }
        out.push(window as u8);
        out.push(len as u8);
        out.extend_from_slice(&bitmap[..len]);
    }
    out
}

/// The immediate successor of `name` in canonical order (RFC 4471 3.1.2): `\000.name`;
/// None if that is longer than a name may be.
pub fn successor(name: &[u8]) -> Option<smallvec::SmallVec<[u8; 64]>> {
    if name.len() + 2 > crate::model::MAX_NAME_LEN {
        return None;
    }
    let mut out = smallvec::SmallVec::new();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(name);
    Some(out)
}

/// The smallest name after `name` and all names below it (RFC 4470 3.1.1: its first label
/// with a zero octet appended, `c\000.example.` after `c.example.`): the next name of an
/// NSEC proving `name` absent must not lie below it, or validators take `name` for an
/// empty non-terminal. None when the label or the name would be too long.
pub fn sibling_successor(name: &[u8]) -> Option<smallvec::SmallVec<[u8; 64]>> {
    let first = *name.first()? as usize;
    if first == 0 || first >= 63 || name.len() + 1 > crate::model::MAX_NAME_LEN {
        return None;
    }
    let mut out = smallvec::SmallVec::new();
    out.push(first as u8 + 1);
    out.extend_from_slice(name.get(1..1 + first)?);
    out.push(0);
    out.extend_from_slice(name.get(1 + first..)?);
    Some(out)
}

/// Canonical DNS name order (RFC 4034 6.1) of two lowercase wire names: label by label from
/// the right, each as unsigned bytes, a missing label first.
pub fn canonical_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let mut la: smallvec::SmallVec<[usize; 16]> = label_starts(a).collect();
    let mut lb: smallvec::SmallVec<[usize; 16]> = label_starts(b).collect();
    // The root label (last) is common to both.
    la.pop();
    lb.pop();
    fn label(n: &[u8], at: usize) -> &[u8] {
        let len = n[at] as usize;
        n.get(at + 1..at + 1 + len).unwrap_or(&[])
    }
    loop {
        match (la.pop(), lb.pop()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => match label(a, x).cmp(label(b, y)) {
                std::cmp::Ordering::Equal => continue,
                other => return other,
            },
        }
    }
}

/// When a key is published and signs (BIND's key timing metadata in the `.private` file,
/// Unix seconds): absent Publish or Activate mean "since always", absent Inactive or Delete
/// "never". A key with Publish but no Activate (`weir dnssec keygen --standby`, or
/// `dnssec-keygen -A none`) is published and never signs until a rollover activates it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub publish: Option<u64>,
    pub activate: Option<u64>,
    /// Activate was absent while Publish was set: a standby key.
    pub standby: bool,
    pub inactive: Option<u64>,
    pub delete: Option<u64>,
}

impl Timing {
    pub fn published(&self, now: u64) -> bool {
        self.publish.is_none_or(|t| t <= now) && self.delete.is_none_or(|t| t > now)
    }

    pub fn active(&self, now: u64) -> bool {
        self.published(now)
            && !self.standby
            && self.activate.is_none_or(|t| t <= now)
            && self.inactive.is_none_or(|t| t > now)
    }

    /// The next instant after `now` at which `published` or `active` changes.
    pub fn next_change(&self, now: u64) -> Option<u64> {
        [self.publish, self.activate, self.inactive, self.delete]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min()
    }
}

/// A key as read from its files.
#[derive(Clone, Debug)]
pub struct KeyFile {
    pub key: std::sync::Arc<SigningKey>,
    /// The file stem (`…/K<zone>+<alg>+<tag>`).
    pub stem: PathBuf,
    pub timing: Timing,
}

/// How long signatures hold and when they are made again (`[dnssec]`), in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// From the signing time to expiration.
    pub validity: u64,
    /// Signatures are made again when less than this is left of their validity.
    pub refresh: u64,
    /// Inception this long before the signing time (clocks of validators that lag).
    pub inception_skew: u64,
    /// A rollover's margin beyond TTLs: how long until every nameserver of the zone serves
    /// what weir publishes (other nodes, secondaries) and slack for clocks.
    pub propagation_delay: u64,
}

/// A signed zone's keys and policy (`[[zone]] dnssec = true`), read at each load.
#[derive(Clone, Debug)]
pub struct ZoneKeys {
    pub keys: Vec<KeyFile>,
    pub policy: Policy,
}

impl PartialEq for ZoneKeys {
    fn eq(&self, other: &Self) -> bool {
        self.policy == other.policy
            && self.keys.len() == other.keys.len()
            && (self.keys.iter().zip(&other.keys)).all(|(a, b)| {
                a.key.dnskey() == b.key.dnskey() && a.timing == b.timing && a.stem == b.stem
            })
    }
}

impl Eq for ZoneKeys {}

impl ZoneKeys {
    /// The keys with `rollover` applied over their files' timing: its key published from its
    /// start and signing from `activate_at` (a standby key too); the retiring keys signing
    /// until then (a standby key a previous rollover activated too) and published until
    /// `retire_at`. Tags it names that are no key here change
    /// nothing.
    pub fn with_rollover(&self, rollover: &crate::model::KeyRollover) -> ZoneKeys {
        let mut keys = self.clone();
        for k in &mut keys.keys {
            if k.key.tag == rollover.key {
                k.timing.publish = Some(
                    k.timing
                        .publish
                        .map_or(rollover.started, |t| t.min(rollover.started)),
                );
                k.timing.activate = Some(rollover.activate_at);
                k.timing.standby = false;
            } else if rollover.retiring.contains(&k.key.tag) {
                // It signed when the rollover started (perhaps activated by the rollover
                // before this one, its file still saying standby): it signs until activate_at.
                k.timing.standby = false;
                k.timing.activate =
                    Some((k.timing.activate).map_or(rollover.started, |t| t.min(rollover.started)));
                k.timing.inactive = Some(
                    k.timing
                        .inactive
                        .map_or(rollover.activate_at, |t| t.min(rollover.activate_at)),
                );
                k.timing.delete = Some(
                    k.timing
                        .delete
                        .map_or(rollover.retire_at, |t| t.min(rollover.retire_at)),
                );
            }
        }
        keys
    }
}

/// "YYYYMMDDHHMMSS" (UTC, BIND's key timing format) as Unix seconds.
pub fn parse_time(text: &str) -> Option<u64> {
    let t = text.trim();
    if t.len() != 14 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &t[0..4],
        &t[4..6],
        &t[6..8],
        &t[8..10],
        &t[10..12],
        &t[12..14]
    );
    let at = humantime::parse_rfc3339(&rfc3339).ok()?;
    Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

/// Unix seconds as "YYYYMMDDHHMMSS" (UTC).
pub fn format_time(secs: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let text = humantime::format_rfc3339_seconds(at).to_string();
    text.chars().filter(char::is_ascii_digit).collect()
}

/// The key files of `zone` in `dir`: every `K<zone>+<alg>+<tag>.key` with its `.private`.
/// Err: every problem, each naming its file.
pub fn read_keys(dir: &Path, zone: &Name) -> Result<Vec<KeyFile>, Vec<String>> {
    let prefix = format!("k{zone}+");
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![format!(
            "cannot read the DNSSEC key directory {}: {e}",
            dir.display()
        )]
    })?;
    let mut stems: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "key")
                && (p.file_name().and_then(|n| n.to_str()))
                    .is_some_and(|n| n.to_ascii_lowercase().starts_with(&prefix))
        })
        .map(|p| p.with_extension(""))
        .filter(|p| path_with_suffix(p, ".key").exists())
        .collect();
    stems.sort();
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    for stem in stems {
        match read_key(&stem, zone) {
            Ok((key, timing)) => keys.push(KeyFile {
                key: key.into(),
                stem,
                timing,
            }),
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(keys)
    } else {
        Err(problems)
    }
}

/// One key from `<stem>.key` and `<stem>.private` (BIND's formats), checked: the DNSKEY's
/// owner is `zone`, the algorithm is one weir signs with, the private key is private
/// (mode 0600 or stricter) and matches the public key.
pub fn read_key(stem: &Path, zone: &Name) -> Result<(SigningKey, Timing), String> {
    let public_path = path_with_suffix(stem, ".key");
    let private_path = path_with_suffix(stem, ".private");
    let shown = |p: &Path| p.display().to_string();
    let public_text = std::fs::read_to_string(&public_path)
        .map_err(|e| format!("{}: {e}", shown(&public_path)))?;
    let (flags, algorithm, public) =
        parse_public(&public_text, zone).map_err(|e| format!("{}: {e}", shown(&public_path)))?;
    let meta =
        std::fs::metadata(&private_path).map_err(|e| format!("{}: {e}", shown(&private_path)))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{}: a private key must be readable by its owner only (mode {mode:o}; chmod 600 it)",
                shown(&private_path)
            ));
        }
    }
    let private_text = std::fs::read_to_string(&private_path)
        .map_err(|e| format!("{}: {e}", shown(&private_path)))?;
    let (private, timing) = parse_private(&private_text, algorithm)
        .map_err(|e| format!("{}: {e}", shown(&private_path)))?;
    let key = SigningKey::from_parts(algorithm, flags, &private, &public)
        .map_err(|e| format!("{}: {e}", shown(&private_path)))?;
    Ok((key, timing))
}

fn path_with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The DNSKEY record of a `.key` file: (flags, algorithm, public key).
fn parse_public(text: &str, zone: &Name) -> Result<(u16, Algorithm, Vec<u8>), String> {
    let line = (text.lines())
        .map(|l| l.split(';').next().unwrap_or("").trim())
        .find(|l| !l.is_empty())
        .ok_or("no DNSKEY record")?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = (words.iter().position(|w| w.eq_ignore_ascii_case("DNSKEY")))
        .ok_or("the record is not a DNSKEY")?;
    let owner = Name::parse(words[0]).map_err(|e| format!("owner `{}`: {e}", words[0]))?;
    if owner != *zone {
        return Err(format!("the key is for {owner}, not {zone}"));
    }
    let field = |i: usize, what: &str| {
        words
            .get(at + i)
            .copied()
            .ok_or_else(|| format!("the DNSKEY has no {what}"))
    };
    let flags: u16 =
        (field(1, "flags")?.parse()).map_err(|_| "the DNSKEY flags are not a number")?;
    if flags != FLAGS_ZSK && flags != FLAGS_KSK {
        return Err(format!(
            "DNSKEY flags {flags}: weir signs with zone keys, 256 (ZSK) or 257 (KSK/CSK)"
        ));
    }
    if field(2, "protocol")? != "3" {
        return Err("the DNSKEY protocol is not 3".into());
    }
    let alg_text = field(3, "algorithm")?;
    let algorithm = (alg_text.parse::<u8>().ok())
        .and_then(Algorithm::from_number)
        .ok_or_else(|| {
            format!("algorithm {alg_text}: weir signs with 13 (ECDSAP256SHA256) or 15 (ED25519)")
        })?;
    let key_text: String = words[at + 4..].concat();
    let public = BASE64
        .decode(key_text.as_bytes())
        .map_err(|_| "the DNSKEY public key is not base64")?;
    Ok((flags, algorithm, public))
}

/// The private key and timing of a `.private` file, for the algorithm its `.key` file names.
fn parse_private(text: &str, algorithm: Algorithm) -> Result<(Vec<u8>, Timing), String> {
    let field = |name: &str| {
        (text.lines())
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    if !field("Private-key-format").is_some_and(|v| v.starts_with("v1.")) {
        return Err("not a BIND private key file (no `Private-key-format: v1.x`)".into());
    }
    let number = field("Algorithm")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse::<u8>().ok());
    if number != Some(algorithm.number()) {
        return Err(format!(
            "the private key's algorithm is not {} ({}) as in the .key file",
            algorithm.number(),
            algorithm.mnemonic()
        ));
    }
    let key = field("PrivateKey").ok_or("no `PrivateKey:` line")?;
    let private = BASE64
        .decode(key.as_bytes())
        .map_err(|_| "the private key is not base64".to_string())?;
    let time = |name: &str| match field(name) {
        None => Ok(None),
        Some(text) => parse_time(text)
            .map(Some)
            .ok_or_else(|| format!("`{name}: {text}` is not a time like 20261203120000")),
    };
    let publish = time("Publish")?;
    let activate = time("Activate")?;
    let timing = Timing {
        publish,
        activate,
        standby: publish.is_some() && activate.is_none(),
        inactive: time("Inactive")?,
        delete: time("Delete")?,
    };
    Ok((private, timing))
}

/// Writes a new key of `zone` into `dir` as BIND's files (`.private` with mode 0600, created
/// exclusively), `created` its timestamp (`YYYYMMDDHHMMSS`); returns the file stem.
pub fn write_key(
    dir: &Path,
    zone: &Name,
    key: &SigningKey,
    ttl: u32,
    created: &str,
    standby: bool,
) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let stem = dir.join(key.file_stem(zone));
    let mut private = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path_with_suffix(&stem, ".private"))?;
    private.write_all(key.private_file(created, standby).as_bytes())?;
    private.sync_all()?;
    std::fs::write(path_with_suffix(&stem, ".key"), key.key_file(zone, ttl))?;
    Ok(stem)
}

/// The DS records of `zone`'s SEP keys in presentation form, one line each.
pub fn ds_lines<'k>(zone: &Name, keys: impl IntoIterator<Item = &'k SigningKey>) -> String {
    let mut out = String::new();
    for key in keys.into_iter().filter(|k| k.is_sep()) {
        let _ = writeln!(out, "{zone} IN DS {}", ds_text(&key.ds(zone)));
    }
    out
}

pub mod cli;
#[cfg(test)]
mod tests;
