//! A signed zone's signatures (docs/dnssec.md): what the index signs when it is built (every
//! authoritative RRset, DNSKEY/CDS/CDNSKEY at the apex, each managed name's single-address
//! sets), and what the query path signs on demand (denial: compact answers of RFC 9824, NODATA
//! NSECs, the NSEC proving a wildcard's query name absent; managed answers of several
//! addresses), kept in a bounded cache per thread.
//!
//! The cache: `SLOTS` entries per thread (UDP workers, tokio workers), direct-mapped by a hash
//! of the key, a new entry replacing the slot's old one: no lock (each thread its own), fixed
//! memory (~1.5 MiB per thread at most), and a hit allocates nothing. A key starts with the
//! signer's epoch (one per index build: new keys or a new validity window), so a rebuilt
//! index never reads an older one's signatures, while health flips and admin writes, which
//! keep the index, keep the cache.

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::{FxHashMap, FxHasher};
use smallvec::SmallVec;

use crate::dnssec::{self, SigningKey, Window, ZoneKeys, types};
use crate::model::{Name, RRset, Rdata};

/// Cache slots per thread.
const SLOTS: usize = 4096;

/// Records made on demand, written after the section's entries: an NSEC (or nothing, for a
/// managed answer's signature) and its RRSIGs.
#[derive(Debug)]
pub struct SignedSet {
    /// The owner when it is neither the question nor a name of the snapshot (the owner of the
    /// NSEC covering a wildcard's query name).
    pub owner: Option<Box<[u8]>>,
    pub records: Option<RRset>,
    pub sig: RRset,
}

/// A signed set as an answer holds it: borrowed from the snapshot (signed at build: no
/// reference count touched, so workers do not contend on one) or shared from this thread's
/// cache.
#[derive(Clone, Debug)]
pub enum SetRef<'a> {
    Borrowed(&'a SignedSet),
    Shared(Arc<SignedSet>),
}

impl std::ops::Deref for SetRef<'_> {
    type Target = SignedSet;

    fn deref(&self) -> &SignedSet {
        match self {
            SetRef::Borrowed(set) => set,
            SetRef::Shared(set) => set,
        }
    }
}

/// A zone's signing state, made with the index.
#[derive(Debug)]
pub(super) struct Signer {
    origin: Name,
    keys: Arc<ZoneKeys>,
    /// Indexes into `keys.keys`: the keys signing DNSKEY, CDS and CDNSKEY (KSKs, or every
    /// active key when none is one) and the keys signing the rest (ZSKs, or the KSKs: a CSK).
    ksk: SmallVec<[usize; 2]>,
    zsk: SmallVec<[usize; 2]>,
    window: Window,
    epoch: u64,
    /// The TTL of NSECs (RFC 9824 3: the negative TTL, as the SOA in the same answer).
    pub(super) nsec_ttl: u32,
    /// Every name of the zone in canonical order, kept only when the zone has a wildcard (the
    /// NSEC covering a query name starts after the name before it).
    names: Vec<Box<[u8]>>,
    /// Managed names' single-address sets, signed at build: key `owner | type | rdata`.
    presigned: FxHashMap<Box<[u8]>, SignedSet>,
    /// The original TTL of each managed name's signatures: the highest TTL of the pools that
    /// may answer it (a served TTL at or below it validates as served).
    managed_ttl: FxHashMap<Box<[u8]>, u32>,
    /// When these signatures need making again (Unix seconds): `refresh` before expiration,
    /// or the next key timing event, whichever is first.
    pub(super) renew_at: u64,
    /// When these signatures were made (Unix seconds).
    pub(super) built_at: u64,
}

impl Signer {
    /// The signer of zone `origin` with `keys` at `now` (Unix seconds); None when no key is
    /// active then (the zone is served unsigned; a config whose keys leave a zone so is
    /// refused, `config::zone_keys`).
    pub(super) fn new(
        origin: &Name,
        keys: &Arc<ZoneKeys>,
        now: u64,
        nsec_ttl: u32,
    ) -> Option<Self> {
        static EPOCH: AtomicU64 = AtomicU64::new(1);
        let active: SmallVec<[usize; 4]> = (keys.keys.iter().enumerate())
            .filter(|(_, k)| k.timing.active(now))
            .map(|(i, _)| i)
            .collect();
        let sep = |want: bool| -> SmallVec<[usize; 2]> {
            (active.iter().copied())
                .filter(|&i| keys.keys[i].key.is_sep() == want)
                .collect()
        };
        let (mut ksk, mut zsk) = (sep(true), sep(false));
        if ksk.is_empty() {
            ksk.clone_from(&zsk);
        }
        if zsk.is_empty() {
            zsk.clone_from(&ksk);
        }
        if ksk.is_empty() {
            return None;
        }
        let p = keys.policy;
        let window = Window::starting(now, p.inception_skew, p.validity);
        let timing = (keys.keys.iter())
            .filter_map(|k| k.timing.next_change(now))
            .min();
        let renew_at = (now + p.validity - p.refresh).min(timing.unwrap_or(u64::MAX));
        Some(Signer {
            origin: origin.clone(),
            keys: keys.clone(),
            ksk,
            zsk,
            window,
            epoch: EPOCH.fetch_add(1, Ordering::Relaxed),
            nsec_ttl,
            names: Vec::new(),
            presigned: FxHashMap::default(),
            managed_ttl: FxHashMap::default(),
            renew_at,
            built_at: now,
        })
    }

    pub(super) fn keys(&self) -> &Arc<ZoneKeys> {
        &self.keys
    }

    pub(super) fn origin(&self) -> &Name {
        &self.origin
    }

    pub(super) fn window(&self) -> Window {
        self.window
    }

    /// The tags of the keys that sign (KSK and ZSK roles), in key order, once each.
    pub(super) fn signing_tags(&self) -> Vec<u16> {
        let mut at: Vec<usize> = self.ksk.iter().chain(&self.zsk).copied().collect();
        at.sort_unstable();
        at.dedup();
        at.into_iter().map(|i| self.keys.keys[i].key.tag).collect()
    }

    /// The tags of the keys in the DNSKEY set at `now` (`built_at`: the set served).
    pub(super) fn published_tags(&self, now: u64) -> Vec<u16> {
        (self.keys.keys.iter())
            .filter(|k| k.timing.published(now))
            .map(|k| k.key.tag)
            .collect()
    }

    /// The largest original TTL of managed names' signatures.
    pub(super) fn max_managed_ttl(&self) -> u32 {
        self.managed_ttl.values().copied().max().unwrap_or(0)
    }

    /// The published DNSKEY set and the apex's CDS and CDNSKEY (RFC 7344, RFC 8078: the
    /// SEP keys, for parents that read them), all with `ttl`.
    pub(super) fn apex_sets(&self, now: u64, ttl: u32) -> [RRset; 3] {
        let published: Vec<&SigningKey> = (self.keys.keys.iter())
            .filter(|k| k.timing.published(now))
            .map(|k| &*k.key)
            .collect();
        let set = |t: u16, rdatas: Vec<Rdata>| RRset {
            rtype: t,
            ttl,
            rdatas,
        };
        let opaque = |bytes: &[u8]| Rdata::Opaque(bytes.into());
        let seps = (self.ksk.iter()).map(|&i| &*self.keys.keys[i].key);
        [
            set(
                types::DNSKEY,
                published.iter().map(|k| opaque(k.dnskey())).collect(),
            ),
            set(
                types::CDS,
                seps.clone().map(|k| opaque(&k.ds(&self.origin))).collect(),
            ),
            set(types::CDNSKEY, seps.map(|k| opaque(k.dnskey())).collect()),
        ]
    }

    /// The RRSIGs of `set` at `owner` (lowercase wire form), by the keys that sign its type.
    pub(super) fn sign(&self, owner: &[u8], set: &RRset) -> RRset {
        let mut wire: SmallVec<[Vec<u8>; 4]> = SmallVec::new();
        for rd in &set.rdatas {
            let mut bytes = Vec::new();
            rd.to_wire(&mut bytes);
            wire.push(bytes);
        }
        self.sign_wire(owner, set.rtype, set.ttl, wire.iter().map(Vec::as_slice))
    }

    fn sign_wire<'r>(
        &self,
        owner: &[u8],
        t: u16,
        ttl: u32,
        rdatas: impl Iterator<Item = &'r [u8]> + Clone,
    ) -> RRset {
        let signers = match t {
            types::DNSKEY | types::CDS | types::CDNSKEY => &self.ksk,
            _ => &self.zsk,
        };
        let rdatas = (signers.iter())
            .filter_map(|&i| {
                let key = &self.keys.keys[i].key;
                dnssec::sign(
                    key,
                    &self.origin,
                    owner,
                    t,
                    ttl,
                    rdatas.clone(),
                    self.window,
                )
                .ok()
            })
            .map(|sig| Rdata::Opaque(sig.into()))
            .collect();
        RRset {
            rtype: types::RRSIG,
            ttl,
            rdatas,
        }
    }

    /// Keeps the zone's names in canonical order (for `wildcard_proof`).
    pub(super) fn set_names(&mut self, mut names: Vec<Box<[u8]>>) {
        names.sort_by_cached_key(|n| canonical_key(n));
        self.names = names;
    }

    /// Signs each address of a managed name's possible answers alone (`answers = 1` pools
    /// answer with one of these), with `ttl` the original TTL of its signatures.
    pub(super) fn presign_managed(&mut self, owner: &[u8], sets: &[RRset], ttl: u32) {
        self.managed_ttl.insert(owner.into(), ttl);
        for set in sets {
            for rd in &set.rdatas {
                let mut bytes = Vec::new();
                rd.to_wire(&mut bytes);
                let sig = self.sign_wire(owner, set.rtype, ttl, std::iter::once(&bytes[..]));
                let key = managed_key(owner, set.rtype, std::iter::once(&bytes[..]));
                let signed = SignedSet {
                    owner: None,
                    records: None,
                    sig,
                };
                self.presigned.insert(key.into_vec().into(), signed);
            }
        }
    }

    /// The RRSIGs of a managed answer: the addresses in `rdatas` (raw, in any order) of type
    /// `t` at `owner`. Presigned when it is one configured address; otherwise from this
    /// thread's cache, signed on first use.
    pub(super) fn managed<'r>(
        &self,
        owner: &[u8],
        t: u16,
        rdatas: impl Iterator<Item = &'r [u8]> + Clone,
    ) -> Option<SetRef<'_>> {
        let mut sorted: SmallVec<[&[u8]; 8]> = rdatas.collect();
        sorted.sort_unstable();
        let key = managed_key(owner, t, sorted.iter().copied());
        if let Some(found) = self.presigned.get(&key[..]) {
            return Some(SetRef::Borrowed(found));
        }
        self.cached(b'M', &key, || {
            let ttl = self.managed_ttl.get(owner).copied().unwrap_or(0);
            Some(SignedSet {
                owner: None,
                records: None,
                sig: self.sign_wire(owner, t, ttl, sorted.iter().copied()),
            })
        })
    }

    /// The NSEC at `owner` (lowercase wire form) listing `present` (RRSIG and NSEC added),
    /// next name its immediate successor (RFC 9824 3: the minimally covering NSEC of a compact
    /// answer; with `NXNAME` in `present`, of a name that does not exist), signed.
    pub(super) fn nsec_at(&self, owner: &[u8], present: &[u16]) -> Option<SetRef<'_>> {
        let mut key: SmallVec<[u8; 320]> = SmallVec::new();
        key.extend_from_slice(owner);
        for t in present {
            key.extend_from_slice(&t.to_be_bytes());
        }
        self.cached(b'N', &key, || Some(self.nsec_of(owner, present)))
    }

    /// The NSEC proving that `name`, answered from the wildcard of its closest encloser (the
    /// last `encloser` bytes of it), does not exist itself (RFC 4035 3.1.3.3): it covers the
    /// next closer name (the encloser's child on the way to `name`) and everything below it,
    /// from just after the zone's name before it to that name's sibling successor (RFC 4470's
    /// minimally covering NSEC), so validators find the same closest encloser as the RRSIG's
    /// label count says. None when those names would be too long.
    pub(super) fn wildcard_proof(&self, name: &[u8], encloser: usize) -> Option<SetRef<'_>> {
        let at = crate::model::label_starts(name)
            .take_while(|&at| name.len() - at > encloser)
            .last()?;
        let closer = &name[at..];
        // The search for the name before runs only on a cache miss.
        self.cached(b'W', closer, || {
            let before = (self.names)
                .partition_point(|n| dnssec::canonical_cmp(n, closer) == std::cmp::Ordering::Less);
            let before = self.names.get(before.checked_sub(1)?)?;
            let owner = dnssec::successor(before)?;
            if owner[..] == *closer {
                return None;
            }
            let next = dnssec::sibling_successor(closer)?;
            Some(self.nsec(Some(owner.to_vec().into()), &owner, &next, &[]))
        })
    }

    /// The NSEC at `name` of a compact answer: next name `\000.name`, its immediate
    /// successor (the zone's apex when that is too long), types `present`.
    fn nsec_of(&self, name: &[u8], present: &[u16]) -> SignedSet {
        let next = dnssec::successor(name);
        self.nsec(
            None,
            name,
            next.as_deref().unwrap_or(self.origin.wire()),
            present,
        )
    }

    /// An NSEC at `at` (written under `owner` when Some, else under the entry's owner) with
    /// next name `next` and the types `present`, RRSIG and NSEC; signed.
    fn nsec(&self, owner: Option<Box<[u8]>>, at: &[u8], next: &[u8], present: &[u16]) -> SignedSet {
        let mut bitmap: SmallVec<[u16; 16]> = present.iter().copied().collect();
        bitmap.extend_from_slice(&[types::RRSIG, types::NSEC]);
        let rdata = dnssec::nsec(next, &bitmap);
        let sig = self.sign_wire(at, types::NSEC, self.nsec_ttl, std::iter::once(&rdata[..]));
        SignedSet {
            owner,
            records: Some(RRset {
                rtype: types::NSEC,
                ttl: self.nsec_ttl,
                rdatas: vec![Rdata::Opaque(rdata.into())],
            }),
            sig,
        }
    }

    /// This thread's cached set for `kind` and `key`, made by `make` when missing (None, and
    /// nothing stored, when `make` cannot make it).
    fn cached(
        &self,
        kind: u8,
        key: &[u8],
        make: impl FnOnce() -> Option<SignedSet>,
    ) -> Option<SetRef<'static>> {
        let mut full: SmallVec<[u8; 512]> = SmallVec::new();
        full.extend_from_slice(&self.epoch.to_be_bytes());
        full.push(kind);
        full.extend_from_slice(key);
        let mut h = FxHasher::default();
        full.hash(&mut h);
        let slot = (h.finish() as usize) % SLOTS;
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.is_empty() {
                cache.resize_with(SLOTS, || None);
            }
            if let Some((k, v)) = &cache[slot]
                && k[..] == full[..]
            {
                return Some(SetRef::Shared(v.clone()));
            }
            let made = Arc::new(make()?);
            crate::dnssec::note_signed_on_demand();
            cache[slot] = Some((full.to_vec().into(), made.clone()));
            Some(SetRef::Shared(made))
        })
    }
}

/// A cache slot: the full key (epoch, kind, key) and the set.
type Slot = Option<(Box<[u8]>, Arc<SignedSet>)>;

thread_local! {
    static CACHE: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

fn managed_key<'r>(
    owner: &[u8],
    t: u16,
    rdatas: impl Iterator<Item = &'r [u8]>,
) -> SmallVec<[u8; 320]> {
    let mut key: SmallVec<[u8; 320]> = SmallVec::new();
    key.extend_from_slice(owner);
    key.extend_from_slice(&t.to_be_bytes());
    for rd in rdatas {
        key.push(rd.len() as u8);
        key.extend_from_slice(rd);
    }
    key
}

/// A name's labels from the right: sorting by it is canonical order (RFC 4034 6.1).
fn canonical_key(name: &[u8]) -> Vec<Vec<u8>> {
    let mut labels: Vec<Vec<u8>> = crate::model::label_starts(name)
        .filter(|&at| name[at] != 0)
        .map(|at| name[at + 1..at + 1 + name[at] as usize].to_vec())
        .collect();
    labels.reverse();
    labels
}

/// The types at a name as its NSEC lists them: its RRsets', and A/AAAA a managed name answers.
pub(super) fn present(rrsets: &[RRset], managed: &[RRset]) -> SmallVec<[u16; 16]> {
    let mut out: SmallVec<[u16; 16]> = rrsets.iter().map(|s| s.rtype).collect();
    out.extend(managed.iter().map(|s| s.rtype));
    out
}

/// Whether `t` is what a signed zone makes itself (never read from a file, never transferred).
pub(super) fn generated(t: u16) -> bool {
    matches!(
        t,
        types::DNSKEY | types::CDS | types::CDNSKEY | types::RRSIG | types::NSEC
    )
}
