//! The immutable `Snapshot` the query path reads, `build()` that makes one from loaded zones, and
//! `answer()`: the authoritative lookup (RFC 1034 4.3.2, RFC 4592 wildcards, RFC 2308 negative
//! answers, RFC 8020 empty non-terminals, RFC 8482 ANY). `answer()` never blocks, never locks
//! and allocates only when an answer has more sections than the inline capacity below.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use prometheus::IntCounter;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::metrics::Metrics;
use crate::model::{
    CLASS_ANY, CLASS_IN, MAX_NAME_LEN, Name, Pool, PoolId, ProbeKey, RRset, Rcode, Rdata, View,
    label_starts, rtype,
};
use crate::zones::Zone;

mod pool;
mod route;
mod signed;
pub use pool::{Client, FamilyStatus, PoolStatus, Preview, PreviewError, Subnet};
pub use route::Decision;
pub use signed::{SetRef, SignedSet};

/// Longest CNAME chain followed inside a zone before answering with what we have (as Knot).
const MAX_CNAME_CHAIN: usize = 8;

/// What `answer()` is asked: the question with its name lowercased in wire form.
#[derive(Clone, Copy, Debug)]
pub struct Question<'q> {
    pub name: &'q [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub client: Client,
    /// The DO bit (RFC 3225): DNSSEC records wanted, from a signed zone.
    pub dnssec: bool,
    /// The CO bit (RFC 9824 4, "Compact Answers OK"): a name that does not exist may be
    /// answered NXDOMAIN beside its compact NSEC.
    pub compact_ok: bool,
}

/// A routed name as the admin API shows it.
#[derive(Debug)]
pub struct RouteStatus<'a> {
    pub route: &'a crate::model::Route,
    /// Per rule, the pool it selects.
    pub selects: &'a [PoolId],
    /// Per rule, the queries it matched since start.
    pub queries: Vec<u64>,
}

/// Whose name a record is written under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner<'a> {
    /// The question's name, written as a pointer to the question so its case is echoed.
    Query,
    /// A name from the snapshot (CNAME targets, the apex, delegation points, glue).
    Name(&'a [u8]),
}

/// A section of the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Answer,
    Authority,
}

/// Records signed on demand (`SignedSet`), written after the entries of `section` with `ttl`,
/// under `owner` unless the set names its own. `answer()` only says what to sign
/// (`Deferred`); `Answer::sign` signs it, once the answer is known to go out (after response
/// rate limiting: a limited answer costs no signature).
#[derive(Clone, Debug)]
pub struct Synth<'a> {
    pub section: Section,
    pub owner: Owner<'a>,
    pub ttl: u32,
    pub set: Deferred<'a>,
}

/// What a `Synth` holds: the signed set, or what to sign.
#[derive(Clone, Debug)]
pub struct Deferred<'a>(Deferral<'a>);

#[derive(Clone, Debug)]
enum Deferral<'a> {
    Ready(SetRef<'a>),
    /// `Signer::nsec_at(name, present)`.
    Nsec {
        signer: &'a signed::Signer,
        name: &'a [u8],
        present: SmallVec<[u16; 16]>,
    },
    /// `Signer::wildcard_proof(name, encloser)`.
    Wildcard {
        signer: &'a signed::Signer,
        name: &'a [u8],
        encloser: usize,
    },
    /// `Signer::managed` over the addresses of `Answer::answer[from..]`.
    Managed {
        signer: &'a signed::Signer,
        name: &'a [u8],
        from: usize,
    },
}

impl Deferred<'_> {
    /// The signed set; None until `Answer::sign` made it.
    pub fn ready(&self) -> Option<&SignedSet> {
        match &self.0 {
            Deferral::Ready(set) => Some(set),
            _ => None,
        }
    }
}

/// One RRset to write into a section.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub owner: Owner<'a>,
    pub rrset: &'a RRset,
    /// Additional-section data the answer is incomplete without (in-domain glue of a referral,
    /// RFC 9471): if it does not fit, the response is truncated instead of silently shortened.
    pub required: bool,
}

/// How a zone is signed (`Snapshot::signing`).
#[derive(Debug)]
pub struct Signing {
    /// Its keys, with a running rollover's timing applied.
    pub keys: Arc<crate::dnssec::ZoneKeys>,
    /// The tags of the keys whose signatures it serves, and of the keys in its DNSKEY set.
    pub signing: Vec<u16>,
    pub published: Vec<u16>,
    pub window: crate::dnssec::Window,
    /// When its signatures are made again (Unix seconds).
    pub renew_at: u64,
    /// When the signatures served were made (Unix seconds): a rollover's phase as served is
    /// its phase then.
    pub built_at: u64,
    pub dnskey_ttl: u32,
    /// The largest TTL it serves (static sets, managed names, negative answers).
    pub max_ttl: u32,
}

/// Why `Snapshot::transfer` sends no zone: the RCODE to answer with, and the zone to count
/// the question under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoTransfer {
    pub rcode: Rcode,
    pub zone: Option<usize>,
}

/// A zone's served SOA and UPDATE journal, what an IXFR answers from
/// (`Snapshot::transfer_journal`).
#[derive(Debug)]
pub struct Journal<'a> {
    /// The apex, lowercase wire form.
    pub apex: &'a [u8],
    pub soa: &'a RRset,
    /// The served SOA's serial.
    pub serial: u32,
    pub entries: &'a [crate::model::JournalEntry],
}

/// The computed answer, independent of the wire.
#[derive(Debug)]
pub struct Answer<'a> {
    pub rcode: Rcode,
    pub authoritative: bool,
    pub answer: SmallVec<[Entry<'a>; 4]>,
    pub authority: SmallVec<[Entry<'a>; 1]>,
    pub additional: SmallVec<[Entry<'a>; 4]>,
    /// ECS SCOPE PREFIX-LENGTH for the response (RFC 7871 7.2.1): the prefix a sticky pool
    /// used or a route's rule decided over (the longer), 0 for answers that do not depend on
    /// the client's subnet.
    pub ecs_scope: u8,
    /// The zone whose data answered (`Snapshot::zone_origin`); None when no zone was looked
    /// up (a name outside every zone, a class other than IN).
    pub zone: Option<usize>,
    /// The managed pool asked for (its index in the snapshot, `Snapshot::pool_fingerprint`):
    /// an A, AAAA or ANY question that reached a pool's name, whatever the pool's outcome.
    /// Convergence tracking counts it like the zone counter counts `zone`.
    pub pool: Option<usize>,
    /// The data was synthesized from a wildcard (RFC 4592): response rate limiting counts
    /// such answers per zone, not per name.
    pub wildcard: bool,
    /// Records signed on demand (DO queries to a signed zone): denial NSECs, managed answers'
    /// RRSIGs.
    pub synth: SmallVec<[Synth<'a>; 1]>,
    /// A name that does not exist answered NOERROR with a compact NSEC (RFC 9824): rate
    /// limiting counts it as NXDOMAIN.
    pub compact_nxdomain: bool,
}

impl<'a> Answer<'a> {
    fn new(rcode: Rcode, authoritative: bool) -> Self {
        Answer {
            rcode,
            authoritative,
            answer: SmallVec::new(),
            authority: SmallVec::new(),
            additional: SmallVec::new(),
            ecs_scope: 0,
            zone: None,
            pool: None,
            wildcard: false,
            synth: SmallVec::new(),
            compact_nxdomain: false,
        }
    }

    pub fn refused() -> Self {
        Answer::new(Rcode::Refused, false)
    }
}

#[derive(Debug, Default)]
struct Node {
    /// Sorted by type; empty for an empty non-terminal.
    rrsets: Vec<RRset>,
    /// In a signed zone, the RRSIGs of each of `rrsets` (same order; empty RRSIG sets for
    /// what is not authoritative: NS at a cut, glue); empty otherwise.
    sigs: Vec<RRset>,
    /// A delegation point: NS records below the apex (RFC 1034 4.2.1 zone cut).
    cut: bool,
    /// A managed name: A and AAAA come from a pool, or from the pool a route's rules choose.
    serves: Option<Serves>,
}

/// What answers a managed name's A and AAAA questions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Serves {
    /// `Snapshot::pools[i]`.
    Pool(usize),
    /// `ZoneIndex::routes[r]`.
    Route(usize),
}

impl Node {
    fn get(&self, t: u16) -> Option<&RRset> {
        self.rrsets.iter().find(|s| s.rtype == t)
    }

    /// The RRset of type `t` and its RRSIGs (None in an unsigned zone).
    fn get_signed(&self, t: u16) -> Option<(&RRset, Option<&RRset>)> {
        let i = self.rrsets.iter().position(|s| s.rtype == t)?;
        Some((&self.rrsets[i], self.sigs.get(i)))
    }
}

#[derive(Debug)]
struct ZoneData {
    /// Position in `ZoneIndex::origins` (config order).
    id: usize,
    origin: Name,
    /// The apex SOA with TTL = min(SOA TTL, SOA MINIMUM), for negative answers (RFC 2308 3).
    negative_soa: RRset,
    nodes: FxHashMap<Box<[u8]>, Node>,
    has_cuts: bool,
    /// Who may transfer the zone (`[[zone]] allow_transfer`).
    allow_transfer: Vec<crate::model::TransferAllow>,
    /// Secondaries to NOTIFY (`[[zone]] notify`).
    notify: Vec<crate::model::NotifyTarget>,
    /// Who may change what by UPDATE (`[[zone.update]]`).
    grants: Vec<crate::model::Grant>,
    /// Managed names' A and AAAA as a zone transfer carries them (`transfer_addresses`), by
    /// owner: kept beside `nodes`, not in them, so the query path's nodes stay small.
    transfer_addresses: FxHashMap<Box<[u8]>, Vec<RRset>>,
    /// Signatures, when the zone is signed (`[[zone]] dnssec = true` with an active key).
    signer: Option<signed::Signer>,
    /// The RRSIGs of the apex SOA (signed zones), sent with `negative_soa`.
    negative_sig: Option<RRset>,
}

/// The zones' lookup structure, built once per load and shared by every snapshot until the
/// next load: a health flip rebuilds only the pool views, never the zones.
#[derive(Debug)]
pub struct ZoneIndex {
    zones: FxHashMap<Box<[u8]>, ZoneData>,
    /// Every zone's origin, by zone id.
    origins: Vec<Name>,
    /// `weir_dns_zone_queries_total` per zone id, resolved by the first `build` with this index
    /// (one `Metrics` per process), so health flips do not resolve them again.
    queries: OnceLock<Arc<[IntCounter]>>,
    /// Routed names, in config order: rules only change with a load, so they live here.
    routes: Vec<route::RouteNode>,
    /// The routes and databases this index was built from (admin API).
    routing: crate::config::Routing,
    /// `weir_dnssec_signatures_expire_timestamp_seconds` set, by the first `build`.
    expiry_reported: OnceLock<()>,
    /// `weir_route_queries_total` per route and rule, resolved like `queries`.
    route_queries: OnceLock<Arc<[Box<[IntCounter]>]>>,
    /// The TSIG keys (`[tsig] key_files`) signed requests verify with: a reload re-reads them.
    keyring: crate::tsig::Keyring,
    /// When the signed zones' signatures need making again (Unix seconds; `Signer::renew_at`,
    /// the earliest): the writer builds the index again then. None: nothing is signed.
    renew_at: Option<u64>,
}

/// Everything the query path needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    /// Counts publications (reloads, changes, health flips).
    pub generation: u64,
    /// When this snapshot was built, just before it is published: Unix time in milliseconds
    /// (wall clock). Convergence tracking dates a pool's change by it.
    pub published_ms: u64,
    index: Arc<ZoneIndex>,
    /// Pool views, in config order; nodes refer to them by index. A health-only rebuild
    /// (`rebuild_health`) shares the views it does not touch with the snapshot before.
    pools: Vec<Arc<pool::PoolNode>>,
    /// Which pools each probe's health feeds (its own endpoints, and pools that fall back to
    /// them), shared by every health-only rebuild until the pools change.
    dependents: Arc<HashMap<ProbeKey, Vec<usize>>>,
    /// The state this snapshot was built from, for the admin API.
    pub view: Arc<View>,
    /// Answered queries per zone id (shared with the index), and outside every zone: the
    /// query path increments them without a label lookup.
    zone_queries: Arc<[IntCounter]>,
    outside_zones: IntCounter,
    /// Per route, per rule (shared with the index).
    route_queries: Arc<[Box<[IntCounter]>]>,
}

/// Indexes checked zones (`zones::load_all` guarantees an apex SOA and NS) with a node for each
/// served pool's name and each routed name (`zones::check_pools` guarantees each lies in a zone,
/// clear of static data and cuts). `pools` must be the list later given to `build`; every pool a
/// route names is in it (config guarantees). `keyring` verifies signed requests.
pub fn index<Z: std::borrow::Borrow<Zone>>(
    zones: &[Z],
    pools: &[Pool],
    routing: &crate::config::Routing,
    keyring: &crate::tsig::Keyring,
) -> Arc<ZoneIndex> {
    let mut map: FxHashMap<Box<[u8]>, ZoneData> = FxHashMap::default();
    for (id, zone) in zones.iter().map(Z::borrow).enumerate() {
        map.insert(zone.origin.wire().into(), build_zone(id, zone));
    }
    let served = pools
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((p.name.served_name()?, Serves::Pool(i))));
    let routed =
        (routing.routes.iter().enumerate()).map(|(r, route)| (&route.name, Serves::Route(r)));
    for (name, serves) in served.chain(routed) {
        let wire = name.wire();
        let Some(at) = label_starts(wire).find(|&at| map.contains_key(&wire[at..])) else {
            continue;
        };
        let Some(zone) = map.get_mut(&wire[at..]) else {
            continue;
        };
        let origin = zone.origin.clone();
        let mut up = name.parent();
        while let Some(parent) = up.filter(|n| n.is_at_or_below(&origin)) {
            zone.nodes.entry(parent.wire().into()).or_default();
            up = parent.parent();
        }
        zone.nodes.entry(wire.into()).or_default().serves = Some(serves);
    }
    let routes = route::nodes(routing, pools);
    for zone in map.values_mut() {
        let managed = (zone.nodes.iter()).filter_map(|(owner, node)| {
            let sets = transfer_addresses(node.serves?, pools, &routes);
            Some((owner.clone(), sets))
        });
        zone.transfer_addresses = managed.collect();
        if let Some(signer) = &mut zone.signer {
            for (owner, node) in &zone.nodes {
                let (Some(serves), Some(sets)) = (node.serves, zone.transfer_addresses.get(owner))
                else {
                    continue;
                };
                let ttl = serving(serves, pools, &routes).iter().map(|p| p.ttl).max();
                signer.presign_managed(owner, sets, ttl.unwrap_or(0));
            }
        }
    }
    let renew_at = (map.values())
        .filter_map(|z| Some(z.signer.as_ref()?.renew_at))
        .min();
    Arc::new(ZoneIndex {
        zones: map,
        origins: zones.iter().map(|z| z.borrow().origin.clone()).collect(),
        queries: OnceLock::new(),
        expiry_reported: OnceLock::new(),
        routes,
        route_queries: OnceLock::new(),
        routing: routing.clone(),
        keyring: keyring.clone(),
        renew_at,
    })
}

/// The config pools that may answer a managed name: its pool, or its route's rules' pools.
fn serving<'p>(serves: Serves, pools: &'p [Pool], routes: &[route::RouteNode]) -> Vec<&'p Pool> {
    match serves {
        Serves::Pool(i) => pools.get(i).into_iter().collect(),
        Serves::Route(r) => routes
            .get(r)
            .into_iter()
            .flat_map(|node| &node.selects)
            .filter_map(|id| pools.iter().find(|p| p.name == *id))
            .collect(),
    }
}

/// What a zone transfer carries for a managed name (docs/design.md "Zone transfers"): the
/// configured endpoints of weight > 0 (group and endpoint), whatever their health, as plain A
/// and AAAA RRsets with the pool's TTL; for a routed name, the union of its rules' pools, with
/// the lowest of their TTLs. A secondary then answers the name (never NXDOMAIN) with every
/// address the primary may hand out. Built from the config's pools once per load, so the
/// transfer changes with a reload, like the zone file, never with health or admin writes.
fn transfer_addresses(serves: Serves, pools: &[Pool], routes: &[route::RouteNode]) -> Vec<RRset> {
    let chosen = serving(serves, pools, routes);
    let Some(ttl) = chosen.iter().map(|p| p.ttl).min() else {
        return Vec::new();
    };
    let mut addresses: Vec<std::net::IpAddr> = chosen
        .iter()
        .flat_map(|p| &p.groups)
        .filter(|g| g.weight > 0)
        .flat_map(|g| &g.endpoints)
        .filter(|e| e.weight > 0)
        .map(|e| e.address)
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    let mut sets = Vec::new();
    for (t, v4) in [(rtype::A, true), (rtype::AAAA, false)] {
        let rdatas: Vec<Rdata> = (addresses.iter())
            .filter(|a| a.is_ipv4() == v4)
            .map(|a| match a {
                std::net::IpAddr::V4(v4) => Rdata::Opaque(v4.octets().to_vec().into()),
                std::net::IpAddr::V6(v6) => Rdata::Opaque(v6.octets().to_vec().into()),
            })
            .collect();
        if !rdatas.is_empty() {
            sets.push(RRset {
                rtype: t,
                ttl,
                rdatas,
            });
        }
    }
    sets
}

/// Builds a snapshot: the shared zone index plus pool views under `health`. A probe missing
/// from `health` has its check's initial health.
pub fn build(
    index: &Arc<ZoneIndex>,
    view: Arc<View>,
    metrics: &Metrics,
    generation: u64,
) -> Snapshot {
    let pools = &view.pools;
    let by_name: HashMap<&PoolId, &Pool> = pools.iter().map(|p| (&p.name, p)).collect();
    let health_of = |k: &ProbeKey| view.probe_health(k);
    let nodes = pools
        .iter()
        .map(|p| Arc::new(pool::build(p, &by_name, &health_of, metrics)))
        .collect();
    let dependents = Arc::new(dependents(pools));
    assemble(index, view, nodes, dependents, metrics, generation)
}

/// Rebuilds `prev` under the new health in `view` (same config, same intent: only health
/// changed, for the probes in `changed`): only the pools those probes feed are built again, the
/// rest are shared with `prev`. Returns the snapshot and how many pools it rebuilt.
pub fn rebuild_health(
    prev: &Snapshot,
    view: Arc<View>,
    changed: &HashSet<ProbeKey>,
    metrics: &Metrics,
    generation: u64,
) -> (Snapshot, usize) {
    let mut touched: Vec<usize> = changed
        .iter()
        .filter_map(|k| prev.dependents.get(k))
        .flatten()
        .copied()
        .collect();
    touched.sort_unstable();
    touched.dedup();
    let pools = &view.pools;
    let by_name: HashMap<&PoolId, &Pool> = pools.iter().map(|p| (&p.name, p)).collect();
    let health_of = |k: &ProbeKey| view.probe_health(k);
    let mut nodes = prev.pools.clone();
    for &i in &touched {
        if let (Some(node), Some(p)) = (nodes.get_mut(i), pools.get(i)) {
            *node = Arc::new(pool::build(p, &by_name, &health_of, metrics));
        }
    }
    let snapshot = assemble(
        &prev.index,
        view.clone(),
        nodes,
        prev.dependents.clone(),
        metrics,
        generation,
    );
    (snapshot, touched.len())
}

/// For every probe, the pools whose view depends on its health: the pools with an endpoint it
/// checks, and, following `fallback:` chains backwards, every pool that may answer from them.
fn dependents(pools: &[Pool]) -> HashMap<ProbeKey, Vec<usize>> {
    let index: HashMap<&PoolId, usize> = pools
        .iter()
        .enumerate()
        .map(|(i, p)| (&p.name, i))
        .collect();
    // fallers[j]: the pools that fall back to pool j.
    let mut fallers: Vec<Vec<usize>> = vec![Vec::new(); pools.len()];
    for (i, p) in pools.iter().enumerate() {
        if let crate::model::OnAllDown::Fallback(to) = &p.on_all_down
            && let Some(&j) = index.get(to)
        {
            fallers[j].push(i);
        }
    }
    let mut out: HashMap<ProbeKey, Vec<usize>> = HashMap::new();
    for (j, p) in pools.iter().enumerate() {
        // j and every pool that reaches j through fallbacks (cycles are refused by config;
        // `seen` bounds the walk regardless).
        let mut reach = vec![j];
        let mut at = 0;
        while let Some(&k) = reach.get(at) {
            at += 1;
            for &f in &fallers[k] {
                if !reach.contains(&f) {
                    reach.push(f);
                }
            }
        }
        for key in p.probes() {
            let list = out.entry(key.clone()).or_default();
            list.extend(&reach);
        }
    }
    for list in out.values_mut() {
        list.sort_unstable();
        list.dedup();
    }
    out
}

fn assemble(
    index: &Arc<ZoneIndex>,
    view: Arc<View>,
    pools: Vec<Arc<pool::PoolNode>>,
    dependents: Arc<HashMap<ProbeKey, Vec<usize>>>,
    metrics: &Metrics,
    generation: u64,
) -> Snapshot {
    let zone_queries = index
        .queries
        .get_or_init(|| metrics.zone_queries(&index.origins).into())
        .clone();
    index.expiry_reported.get_or_init(|| {
        let signed: Vec<(Name, u64)> = (index.zones.values())
            .filter_map(|z| z.signer.as_ref())
            .map(|s| (s.origin().clone(), u64::from(s.window().expiration)))
            .collect();
        metrics.dnssec_expiry(&signed);
    });
    let route_queries = index
        .route_queries
        .get_or_init(|| route::counters(&index.routing, &index.routes, metrics).into())
        .clone();
    Snapshot {
        generation,
        published_ms: crate::clock::now_ms(),
        index: index.clone(),
        pools,
        dependents,
        view,
        zone_queries,
        outside_zones: metrics.outside_zones().clone(),
        route_queries,
    }
}

fn build_zone(id: usize, zone: &Zone) -> ZoneData {
    let mut nodes: FxHashMap<Box<[u8]>, Node> = FxHashMap::default();
    for (owner, sets) in &zone.rrsets {
        // Every name between an owner and the apex exists, with or without data (RFC 8020).
        let mut up = owner.parent();
        while let Some(p) = up.filter(|p| p.is_at_or_below(&zone.origin)) {
            nodes.entry(p.wire().into()).or_default();
            up = p.parent();
        }
        let node = nodes.entry(owner.wire().into()).or_default();
        node.rrsets = sets.clone();
        node.cut = *owner != zone.origin && sets.iter().any(|s| s.rtype == rtype::NS);
    }
    let has_cuts = nodes.values().any(|n| n.cut);
    let negative_soa = match zone.get(&zone.origin, rtype::SOA) {
        Some(soa) => {
            let minimum = match soa.rdatas.first() {
                Some(Rdata::Soa(s)) => s.minimum,
                _ => soa.ttl,
            };
            RRset {
                ttl: soa.ttl.min(minimum),
                ..soa.clone()
            }
        }
        None => RRset {
            rtype: rtype::SOA,
            ttl: 0,
            rdatas: Vec::new(),
        },
    };
    let signer = (zone.dnssec.as_ref()).and_then(|keys| {
        let now = crate::clock::wall_secs();
        let mut signer = signed::Signer::new(&zone.origin, keys, now, negative_soa.ttl)?;
        sign_nodes(&signer, zone, &mut nodes, now);
        if nodes.keys().any(|n| n.starts_with(&[1, b'*'])) {
            signer.set_names(nodes.keys().cloned().collect());
        }
        Some(signer)
    });
    let negative_sig = signer.as_ref().and_then(|_| {
        let apex = nodes.get(zone.origin.wire())?;
        apex.get_signed(rtype::SOA)?.1.cloned()
    });
    ZoneData {
        id,
        origin: zone.origin.clone(),
        negative_soa,
        nodes,
        has_cuts,
        allow_transfer: zone.allow_transfer.clone(),
        notify: zone.notify.clone(),
        grants: zone.update.clone(),
        transfer_addresses: FxHashMap::default(),
        signer,
        negative_sig,
    }
}

/// Signs a zone's nodes: the apex gets the DNSKEY set (and CDS, CDNSKEY), every
/// authoritative RRset its RRSIGs; NS at a cut and everything below one (glue) are not the
/// zone's data and stay unsigned, but a DS at a cut is (RFC 4035 2.2).
fn sign_nodes(
    signer: &signed::Signer,
    zone: &Zone,
    nodes: &mut FxHashMap<Box<[u8]>, Node>,
    now: u64,
) {
    let apex = zone.origin.wire();
    let soa_ttl = zone.get(&zone.origin, rtype::SOA).map_or(3600, |s| s.ttl);
    if let Some(node) = nodes.get_mut(apex) {
        for set in signer.apex_sets(now, soa_ttl) {
            if !set.rdatas.is_empty() && node.get(set.rtype).is_none() {
                node.rrsets.push(set);
            }
        }
        node.rrsets.sort_by_key(|s| s.rtype);
    }
    let cuts: HashSet<Box<[u8]>> = (nodes.iter())
        .filter(|(_, n)| n.cut)
        .map(|(name, _)| name.clone())
        .collect();
    for (owner, node) in nodes.iter_mut() {
        let occluded = label_starts(owner)
            .skip(1)
            .map(|at| &owner[at..])
            .take_while(|s| s.len() > apex.len())
            .any(|s| cuts.contains(s));
        node.sigs = (node.rrsets.iter())
            .map(|set| {
                if occluded || (node.cut && set.rtype != rtype::DS) {
                    RRset {
                        rtype: crate::dnssec::types::RRSIG,
                        ttl: set.ttl,
                        rdatas: Vec::new(),
                    }
                } else {
                    signer.sign(owner, set)
                }
            })
            .collect();
    }
}

impl Snapshot {
    /// The zone a name falls in: the longest configured origin that is a suffix of it.
    fn zone_for(&self, name: &[u8]) -> Option<&ZoneData> {
        label_starts(name).find_map(|at| self.index.zones.get(&name[at..]))
    }

    /// The negative TTL (RFC 2308: min of the SOA's TTL and MINIMUM) of the zone `name` lies
    /// in; 0 outside every zone.
    pub fn negative_ttl(&self, name: &Name) -> u32 {
        self.zone_for(name.wire()).map_or(0, |z| z.negative_soa.ttl)
    }

    /// Whether pool `i`'s view is the very one `other` serves (shared, not rebuilt).
    pub fn shares_pool_view(&self, other: &Snapshot, i: usize) -> bool {
        match (self.pools.get(i), other.pools.get(i)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The id of the zone `name` (lowercase wire form) lies in.
    pub fn zone_of(&self, name: &[u8]) -> Option<usize> {
        self.zone_for(name).map(|z| z.id)
    }

    pub fn zone_count(&self) -> usize {
        self.index.zones.len()
    }

    /// The origin of zone `id`.
    pub fn zone_origin(&self, id: usize) -> Option<&Name> {
        self.index.origins.get(id)
    }

    /// Counts one answered query under its zone (`Answer::zone`), or under "none". An atomic
    /// add on a counter resolved at build time: no lookup, no lock.
    #[inline]
    pub fn count_query(&self, zone: Option<usize>) {
        match zone.and_then(|z| self.zone_queries.get(z)) {
            Some(counter) => counter.inc(),
            None => self.outside_zones.inc(),
        }
    }

    /// What `proposed` (a served pool with hypothetical weights or health) would answer for
    /// `qtype` (A or AAAA), compared with how the pool answers now (admin preview).
    pub fn pool_preview(&self, proposed: &Pool, qtype: u16) -> Result<Preview, PreviewError> {
        let by_name: HashMap<&PoolId, &Pool> =
            self.view.pools.iter().map(|p| (&p.name, p)).collect();
        let health_of = |k: &ProbeKey| self.view.probe_health(k);
        let current = self
            .view
            .pools
            .iter()
            .position(|p| p.name == proposed.name)
            .and_then(|i| self.pools.get(i))
            .map(|p| &**p);
        pool::preview(proposed, current, &by_name, &health_of, qtype)
    }

    /// A hash of everything that decides pool `i`'s answers (per family: outcome, candidates,
    /// their weights and TTLs; answer count, stickiness). Two snapshots whose fingerprints
    /// differ for a pool answer it differently: a weight change and a health flip both change
    /// it, a publication for another pool does not. None past the last pool.
    pub fn pool_fingerprint(&self, i: usize) -> Option<u64> {
        self.pools.get(i).map(|p| p.fingerprint())
    }

    /// The pool answering a managed name's question: its own, or the one its route's rules
    /// choose for `client` (counted under the rule, with the rule's ECS scope in `ans`).
    #[inline]
    fn pool_for(&self, serves: Serves, client: &Client, ans: &mut Answer<'_>) -> Option<usize> {
        match serves {
            Serves::Pool(i) => Some(i),
            Serves::Route(r) => {
                let counters = self.route_queries.get(r).map(|c| &**c);
                self.index.routes.get(r)?.choose(client, counters, ans)
            }
        }
    }

    /// Every routed name, in config order, with its rules' query counts (admin API).
    pub fn routes(&self) -> impl Iterator<Item = RouteStatus<'_>> {
        let routes = self.index.routing.routes.iter().zip(&self.index.routes);
        routes.enumerate().map(|(r, (route, node))| RouteStatus {
            route,
            selects: &node.selects,
            queries: (self.route_queries.get(r).into_iter().flatten())
                .map(IntCounter::get)
                .collect(),
        })
    }

    /// The rule of routed name `name` that `client` matches, the ECS scope an answer would
    /// carry (the rule's, or a sticky pool's when longer), and the pool it selects. None if
    /// `name` is not routed.
    pub fn route_decision(&self, name: &Name, client: &Client) -> Option<(Decision, &PoolId)> {
        let r = (self.index.routing.routes.iter()).position(|route| route.name == *name)?;
        let node = self.index.routes.get(r)?;
        let (mut d, pool) = node.decide(client);
        if pool
            .and_then(|i| self.pools.get(i))
            .is_some_and(|p| p.is_sticky())
        {
            d.scope = d.scope.max(pool::sticky_key(client).1);
        }
        Some((d, node.selects.get(d.rule)?))
    }

    /// The databases routing rules read: (what, database) for `[geo] database` and
    /// `asn_database` when set.
    pub fn databases(&self) -> impl Iterator<Item = (&'static str, &crate::geo::GeoDb)> {
        let r = &self.index.routing;
        (r.geo.iter().map(|d| ("geography", d))).chain(r.asn.iter().map(|d| ("asn", d)))
    }

    /// The static data of the zone whose origin is `zone`, as served (its file with its UPDATE
    /// layer): the SOA serial and every RRset by owner (apex first, then in wire order),
    /// managed names left out. For the admin API; allocates.
    pub fn zone_rrsets(&self, zone: &Name) -> Option<(u32, Vec<(Name, &RRset)>)> {
        let data = self.index.zones.get(zone.wire())?;
        let Some(Rdata::Soa(soa)) = data.negative_soa.rdatas.first() else {
            return None;
        };
        let apex = zone.wire();
        let mut owners: Vec<(&Box<[u8]>, &Node)> = data.nodes.iter().collect();
        owners.sort_unstable_by(|a, b| (&**a.0 != apex, a.0).cmp(&(&**b.0 != apex, b.0)));
        let sets = owners.into_iter().flat_map(|(owner, node)| {
            let name = Name::from_lower_wire(owner);
            let sets = node.rrsets.iter().filter(|s| !data.generated(s.rtype));
            sets.map(move |set| (name.clone(), set))
        });
        Some((soa.serial, sets.collect()))
    }

    /// The `[[zone.update]]` grants of the zone whose origin is `zone`; None when weir does
    /// not serve it.
    pub fn update_grants(&self, zone: &Name) -> Option<&[crate::model::Grant]> {
        Some(self.index.zones.get(zone.wire())?.grants.as_slice())
    }

    /// Each zone that has `[[zone]] notify` targets: its origin, current SOA serial and the
    /// targets (the NOTIFY task compares serials with the ones it announced).
    pub fn notify_targets(
        &self,
    ) -> impl Iterator<Item = (&Name, u32, &[crate::model::NotifyTarget])> {
        self.index
            .zones
            .values()
            .filter(|z| !z.notify.is_empty())
            .filter_map(|z| {
                let Some(Rdata::Soa(soa)) = z.negative_soa.rdatas.first() else {
                    return None;
                };
                Some((&z.origin, soa.serial, z.notify.as_slice()))
            })
    }

    /// How the zone whose origin is `zone` is signed, None when it is not (admin API, and the
    /// writer timing a rollover). Off the query path: walks the zone for its largest TTL.
    pub fn signing(&self, zone: &Name) -> Option<Signing> {
        let data = self.index.zones.get(zone.wire())?;
        let signer = data.signer.as_ref()?;
        let apex = data.nodes.get(zone.wire())?;
        let dnskey_ttl = apex.get(crate::dnssec::types::DNSKEY).map_or(0, |s| s.ttl);
        let static_ttls = data.nodes.values().flat_map(|n| &n.rrsets).map(|s| s.ttl);
        let managed_ttls = (data.transfer_addresses.values()).flatten().map(|s| s.ttl);
        let max_ttl = (static_ttls.chain(managed_ttls))
            .chain(std::iter::once(signer.nsec_ttl))
            .max()
            .unwrap_or(0)
            .max(signer.max_managed_ttl());
        Some(Signing {
            built_at: signer.built_at,
            keys: signer.keys().clone(),
            signing: signer.signing_tags(),
            published: signer.published_tags(signer.built_at),
            window: signer.window(),
            renew_at: signer.renew_at,
            dnskey_ttl,
            max_ttl,
        })
    }

    /// When the signed zones need signing again (Unix seconds): their signatures' refresh
    /// time or a key's next timing event, the earliest. None when no zone is signed.
    pub fn renew_at(&self) -> Option<u64> {
        self.index.renew_at
    }

    /// The TSIG keys signed requests verify with.
    pub fn keyring(&self) -> &crate::tsig::Keyring {
        &self.index.keyring
    }

    /// Whether `client` may transfer the zone whose apex is `name` (lowercase wire form) in
    /// class `qclass`, its request `signed_by` the key its TSIG verified with (None: unsigned):
    /// the zone's id, or what to answer instead (REFUSED: a name that is no zone's apex, a
    /// class other than IN and ANY, a request no `allow_transfer` entry admits). No
    /// allocation: checked before a transfer takes one of the few slots.
    pub fn may_transfer(
        &self,
        name: &[u8],
        qclass: u16,
        client: std::net::IpAddr,
        signed_by: Option<&Name>,
    ) -> Result<usize, NoTransfer> {
        self.transfer_zone(name, qclass, client, signed_by)
            .map(|z| z.id)
    }

    /// An IXFR over UDP whose request is `signed_by` a key (the signed twin of what `answer`
    /// gives an unsigned one): the apex SOA when an `allow_transfer` entry admits it (RFC 1995
    /// 2, 4), else REFUSED.
    pub fn ixfr_soa<'s>(&'s self, q: Question<'s>, signed_by: Option<&Name>) -> Answer<'s> {
        if q.qclass != CLASS_IN && q.qclass != CLASS_ANY {
            return Answer::refused();
        }
        // Only the apex may be transferred: a direct lookup, not `zone_for`.
        match self.index.zones.get(q.name) {
            Some(zone) => zone.ixfr_over_udp(q, signed_by),
            None => Answer::refused(),
        }
    }

    fn transfer_zone(
        &self,
        name: &[u8],
        qclass: u16,
        client: std::net::IpAddr,
        signed_by: Option<&Name>,
    ) -> Result<&ZoneData, NoTransfer> {
        let zone = match self.index.zones.get(name) {
            Some(zone) if qclass == CLASS_IN || qclass == CLASS_ANY => zone,
            _ => {
                return Err(NoTransfer {
                    rcode: Rcode::Refused,
                    zone: self.zone_for(name).map(|z| z.id),
                });
            }
        };
        if !zone.transfer_allowed(client, signed_by) {
            return Err(NoTransfer {
                rcode: Rcode::Refused,
                zone: Some(zone.id),
            });
        }
        Ok(zone)
    }

    /// What an IXFR (RFC 1995) of the zone whose apex is `name` (lowercase wire form) to
    /// `client` answers from: the apex, its served SOA and serial, and the journal UPDATE keeps
    /// for it (`model::ZoneEdits::journal`, oldest first; empty without one). Err: what to
    /// answer instead (as `may_transfer`; SERVFAIL without an apex SOA, as `transfer`).
    pub fn transfer_journal(
        &self,
        name: &[u8],
        qclass: u16,
        client: std::net::IpAddr,
        signed_by: Option<&Name>,
    ) -> Result<Journal<'_>, NoTransfer> {
        let zone = self.transfer_zone(name, qclass, client, signed_by)?;
        let apex = zone.origin.wire();
        let soa = zone.nodes.get(apex).and_then(|n| n.get(rtype::SOA));
        let Some((soa, Rdata::Soa(rdata))) = soa.and_then(|s| Some((s, s.rdatas.first()?))) else {
            return Err(NoTransfer {
                rcode: Rcode::ServFail,
                zone: Some(zone.id),
            });
        };
        let entries = (self.view.overlay.zones.get(&zone.origin))
            .map_or(&[][..], |edits| edits.journal.as_slice());
        Ok(Journal {
            apex,
            soa,
            serial: rdata.serial,
            entries,
        })
    }

    /// The records of a transfer (AXFR, RFC 5936 2.2; an IXFR the journal cannot answer, in
    /// AXFR form, RFC 1995 4)
    /// of the zone whose apex is `name` (lowercase wire form) to `client`: the SOA, every other
    /// RRset of the zone (delegations and glue included, nothing outside it; empty
    /// non-terminals have none), managed names as `transfer_addresses`, then the SOA again.
    /// A pure function of the snapshot (static data and config pools, not health), in a
    /// stable order. Off the query path: it allocates. Err: what to answer instead (as
    /// `may_transfer`).
    pub fn transfer(
        &self,
        name: &[u8],
        qclass: u16,
        client: std::net::IpAddr,
        signed_by: Option<&Name>,
    ) -> Result<Vec<Entry<'_>>, NoTransfer> {
        let zone = self.transfer_zone(name, qclass, client, signed_by)?;
        let apex = zone.origin.wire();
        let Some(soa) = zone.nodes.get(apex).and_then(|n| n.get(rtype::SOA)) else {
            return Err(NoTransfer {
                rcode: Rcode::ServFail,
                zone: Some(zone.id),
            });
        };
        let mut owners: Vec<(&Box<[u8]>, &Node)> = zone.nodes.iter().collect();
        // The apex first, then the rest in a stable order (by wire form).
        owners.sort_unstable_by(|a, b| (&**a.0 != apex, a.0).cmp(&(&**b.0 != apex, b.0)));
        let mut out = vec![transfer_entry(apex, soa)];
        for (owner, node) in owners {
            let managed = zone.transfer_addresses.get(owner).into_iter().flatten();
            let sets = node.rrsets.iter().chain(managed);
            let sets = sets.filter(|s| s.rtype != rtype::SOA && !zone.generated(s.rtype));
            out.extend(sets.map(|s| transfer_entry(owner, s)));
        }
        out.push(transfer_entry(apex, soa));
        Ok(out)
    }

    /// How a pool answers right now, per family (for the admin API).
    pub fn pool_status(&self, name: &PoolId) -> Option<PoolStatus> {
        let i = self.view.pools.iter().position(|p| p.name == *name)?;
        self.pools.get(i).map(|p| p.status())
    }
}

fn transfer_entry<'a>(owner: &'a [u8], rrset: &'a RRset) -> Entry<'a> {
    Entry {
        owner: Owner::Name(owner),
        rrset,
        required: false,
    }
}

/// Answers one question from the snapshot.
pub fn answer<'a>(snapshot: &'a Snapshot, q: Question<'a>) -> Answer<'a> {
    // Only IN data exists here. QCLASS ANY ("*", RFC 1035 3.2.5: any class) matches it and is
    // answered as IN, as Knot and NSD do; CH/HS/NONE and unknown classes get REFUSED, never
    // IN data.
    if q.qclass != CLASS_IN && q.qclass != CLASS_ANY {
        return Answer::refused();
    }
    let Some(zone) = snapshot.zone_for(q.name) else {
        return Answer::refused();
    };
    // Zone transfers over TCP from allowed sources are `Snapshot::transfer`'s (dns/xfr.rs);
    // here they are refused (AXFR: never over UDP), except an allowed IXFR for the apex, which
    // gets the current SOA alone over UDP (RFC 1995 2, 4) so the secondary retries over TCP.
    if q.qtype == rtype::AXFR || q.qtype == rtype::IXFR {
        return zone.ixfr_over_udp(q, None);
    }
    let mut ans = Answer::new(Rcode::NoError, true);
    ans.zone = Some(zone.id);
    // DNSSEC records only for a DO query to a signed zone (RFC 3225 3, RFC 4035 3.1).
    let signer = zone.signer.as_ref().filter(|_| q.dnssec);
    let mut name: &[u8] = q.name;
    let mut owner = Owner::Query;
    for _ in 0..MAX_CNAME_CHAIN {
        if let Some((cut_name, cut)) = zone.cut_above(name, q.qtype) {
            zone.referral(cut_name, cut, &mut ans);
            if let Some(signer) = signer {
                zone.prove_delegation(signer, cut_name, cut, &mut ans);
            }
            return ans;
        }
        // The length of the closest encloser when the data comes from its wildcard.
        let mut encloser = None;
        let node = match zone.nodes.get(name) {
            Some(node) => node,
            None => match zone.wildcard_for(name) {
                Some((len, node)) => {
                    ans.wildcard = true;
                    encloser = Some(len);
                    node
                }
                None => {
                    if let Some(signer) = signer {
                        zone.deny_name(signer, name, owner, q.compact_ok, &mut ans);
                        return ans;
                    }
                    // RFC 6604 2.1: after a CNAME, the RCODE is the last target's.
                    ans.rcode = Rcode::NxDomain;
                    ans.authority.push(zone.negative());
                    return ans;
                }
            },
        };
        if let Some(serves) = node.serves
            && matches!(q.qtype, rtype::A | rtype::AAAA | rtype::ANY)
            && let Some(i) = snapshot.pool_for(serves, &q.client, &mut ans)
            && let Some(pool) = snapshot.pools.get(i)
        {
            ans.pool = Some(i);
            let before = ans.answer.len();
            if pool.answer(q.qtype, owner, &q.client, &mut ans) {
                if let Some(signer) = signer {
                    sign_managed(signer, name, owner, before, &mut ans);
                }
                return ans;
            }
        }
        let wanted = match q.qtype {
            // RFC 8482 4.1: answer ANY with one RRset, the first by type, not all of them;
            // an RRSIG question likewise gets the signatures of one RRset.
            rtype::ANY => node.rrsets.first().map(|s| (s, node.sigs.first())),
            crate::dnssec::types::RRSIG if signer.is_some() => (node.sigs.iter())
                .find(|s| !s.rdatas.is_empty())
                .map(|s| (s, None)),
            t => node.get_signed(t),
        };
        if let Some((set, sig)) = wanted {
            ans.answer.push(Entry {
                owner,
                rrset: set,
                required: false,
            });
            if let Some(signer) = signer {
                push_sig(&mut ans.answer, owner, sig);
                if let Some(encloser) = encloser {
                    ans.synth.push(Synth {
                        section: Section::Authority,
                        owner,
                        ttl: signer.nsec_ttl,
                        set: Deferred(Deferral::Wildcard {
                            signer,
                            name,
                            encloser,
                        }),
                    });
                }
            }
            zone.add_additional(set, &mut ans);
            return ans;
        }
        let Some((cname, sig)) = node.get_signed(rtype::CNAME) else {
            zone.negative_signed(signer, &mut ans);
            if let Some(signer) = signer {
                zone.deny_type(signer, name, owner, node, q.qtype, &mut ans);
            }
            return ans;
        };
        ans.answer.push(Entry {
            owner,
            rrset: cname,
            required: false,
        });
        if signer.is_some() {
            push_sig(&mut ans.answer, owner, sig);
        }
        let Some(Rdata::Name(target)) = cname.rdatas.first() else {
            return ans;
        };
        let target = target.wire();
        // Chase inside this zone only; a loop ends the chase with what was collected.
        let looped = ans
            .answer
            .iter()
            .any(|e| matches!(e.owner, Owner::Name(n) if n == target));
        if looped || target == q.name || !crate::model::is_suffix(target, zone.origin.wire()) {
            return ans;
        }
        name = target;
        owner = Owner::Name(target);
    }
    ans
}

/// Pushes an RRset's RRSIGs (when it has any) after it.
fn push_sig<'a, const N: usize>(
    section: &mut SmallVec<[Entry<'a>; N]>,
    owner: Owner<'a>,
    sig: Option<&'a RRset>,
) where
    [Entry<'a>; N]: smallvec::Array<Item = Entry<'a>>,
{
    if let Some(sig) = sig.filter(|s| !s.rdatas.is_empty()) {
        section.push(Entry {
            owner,
            rrset: sig,
            required: false,
        });
    }
}

/// The RRSIGs of the managed answer just written (`ans.answer[from..]`, one address each),
/// deferred to `Answer::sign`.
#[cold]
fn sign_managed<'a>(
    signer: &'a signed::Signer,
    name: &'a [u8],
    owner: Owner<'a>,
    from: usize,
    ans: &mut Answer<'a>,
) {
    let Some(first) = ans.answer.get(from) else {
        return;
    };
    ans.synth.push(Synth {
        section: Section::Answer,
        owner,
        ttl: first.rrset.ttl,
        set: Deferred(Deferral::Managed { signer, name, from }),
    });
}

/// The NSEC at `name` listing `present`, into `section` under `owner`, to sign in
/// `Answer::sign`.
fn defer_nsec<'a>(
    ans: &mut Answer<'a>,
    section: Section,
    owner: Owner<'a>,
    signer: &'a signed::Signer,
    name: &'a [u8],
    present: SmallVec<[u16; 16]>,
) {
    ans.synth.push(Synth {
        section,
        owner,
        ttl: signer.nsec_ttl,
        set: Deferred(Deferral::Nsec {
            signer,
            name,
            present,
        }),
    });
}

impl<'a> Answer<'a> {
    /// Signs what `answer()` deferred (denial NSECs, wildcard proofs, managed answers: from
    /// the snapshot or this thread's cache, signed on a miss). Call it once the answer is
    /// known to be sent; what cannot be signed is left out.
    pub fn sign(&mut self) {
        if self.synth.is_empty() {
            return;
        }
        let mut synth = std::mem::take(&mut self.synth);
        synth.retain_mut(|s| {
            let set = match &s.set.0 {
                Deferral::Ready(_) => return true,
                Deferral::Nsec {
                    signer,
                    name,
                    present,
                } => signer.nsec_at(name, present),
                Deferral::Wildcard {
                    signer,
                    name,
                    encloser,
                } => signer.wildcard_proof(name, *encloser),
                Deferral::Managed { signer, name, from } => {
                    let Some(first) = self.answer.get(*from) else {
                        return false;
                    };
                    let t = first.rrset.rtype;
                    let rdatas = (self.answer[*from..].iter()).filter_map(|e| {
                        match e.rrset.rdatas.first() {
                            Some(Rdata::Opaque(bytes)) => Some(&bytes[..]),
                            _ => None,
                        }
                    });
                    signer.managed(name, t, rdatas)
                }
            };
            match set {
                Some(set) => {
                    s.set = Deferred(Deferral::Ready(set));
                    true
                }
                None => false,
            }
        });
        self.synth = synth;
    }
}

impl ZoneData {
    /// Whether records of type `t` are made by signing (DNSKEY, CDS, CDNSKEY of a signed
    /// zone): zone transfers and the admin API's records leave them out, they are not the
    /// zone's data (docs/dnssec.md: secondaries of a signed zone are weir nodes with the keys).
    fn generated(&self, t: u16) -> bool {
        self.signer.is_some() && signed::generated(t)
    }

    /// The negative SOA into AUTHORITY, with its RRSIGs when `signer` (a DO query, signed).
    fn negative_signed<'s>(&'s self, signer: Option<&signed::Signer>, ans: &mut Answer<'s>) {
        ans.authority.push(self.negative());
        if signer.is_some() {
            push_sig(
                &mut ans.authority,
                Owner::Name(self.origin.wire()),
                self.negative_sig.as_ref(),
            );
        }
    }

    /// A name that does not exist, in a signed zone: a compact answer (RFC 9824 3.1), NOERROR
    /// with the negative SOA and an NSEC at the name listing NXNAME; NXDOMAIN when the client
    /// said it takes that (the CO bit, RFC 9824 4).
    #[cold]
    fn deny_name<'s>(
        &'s self,
        signer: &'s signed::Signer,
        name: &'s [u8],
        owner: Owner<'s>,
        compact_ok: bool,
        ans: &mut Answer<'s>,
    ) {
        ans.compact_nxdomain = true;
        if compact_ok {
            ans.rcode = Rcode::NxDomain;
        }
        self.negative_signed(Some(signer), ans);
        let mut present = SmallVec::new();
        present.push(crate::dnssec::types::NXNAME);
        defer_nsec(ans, Section::Authority, owner, signer, name, present);
    }

    /// NODATA at `node` (the name, or the wildcard that stands for it), signed: the NSEC at the
    /// name listing the types it has (RFC 4035 3.1.3.1; for a wildcard's name, RFC 9824 3.3).
    /// An NSEC question gets that NSEC as its answer.
    #[cold]
    fn deny_type<'s>(
        &'s self,
        signer: &'s signed::Signer,
        name: &'s [u8],
        owner: Owner<'s>,
        node: &Node,
        qtype: u16,
        ans: &mut Answer<'s>,
    ) {
        let managed = (node.serves.is_some())
            .then(|| self.transfer_addresses.get(name))
            .flatten();
        let mut present = signed::present(&node.rrsets, managed.map_or(&[], Vec::as_slice));
        // Never list the type denied: a managed name whose pool answers NODATA for it (every
        // endpoint down with `on_all_down = "nodata"`) still has it configured.
        present.retain(|t| *t != qtype);
        let section = if qtype == crate::dnssec::types::NSEC {
            ans.authority.clear();
            Section::Answer
        } else {
            Section::Authority
        };
        defer_nsec(ans, section, owner, signer, name, present);
    }

    /// A referral from a signed zone: the DS set and its RRSIGs, or the NSEC at the cut proving
    /// there is none (an insecure delegation, RFC 4035 3.1.4).
    #[cold]
    fn prove_delegation<'s>(
        &'s self,
        signer: &'s signed::Signer,
        cut_name: &'s [u8],
        cut: &'s Node,
        ans: &mut Answer<'s>,
    ) {
        let owner = Owner::Name(cut_name);
        if let Some((ds, sig)) = cut.get_signed(rtype::DS) {
            ans.authority.push(Entry {
                owner,
                rrset: ds,
                required: false,
            });
            push_sig(&mut ans.authority, owner, sig);
        } else {
            let present = signed::present(&cut.rrsets, &[]);
            defer_nsec(ans, Section::Authority, owner, signer, cut_name, present);
        }
    }

    /// Whether an `allow_transfer` entry admits `client`, its request `signed_by` a key.
    fn transfer_allowed(&self, client: std::net::IpAddr, signed_by: Option<&Name>) -> bool {
        self.allow_transfer
            .iter()
            .any(|a| a.allows(client, signed_by))
    }

    /// A transfer question reaching `answer` (UDP), its request `signed_by` a key or not: the
    /// apex SOA for an allowed IXFR, REFUSED otherwise.
    #[cold]
    fn ixfr_over_udp<'s>(&'s self, q: Question<'s>, signed_by: Option<&Name>) -> Answer<'s> {
        let mut ans = Answer {
            zone: Some(self.id),
            ..Answer::refused()
        };
        let soa = (self.nodes.get(self.origin.wire())).and_then(|n| n.get(rtype::SOA));
        if q.qtype == rtype::IXFR
            && q.name == self.origin.wire()
            && self.transfer_allowed(q.client.addr, signed_by)
            && let Some(soa) = soa
        {
            ans.rcode = Rcode::NoError;
            ans.authoritative = true;
            ans.answer.push(Entry {
                owner: Owner::Query,
                rrset: soa,
                required: false,
            });
        }
        ans
    }

    fn negative(&self) -> Entry<'_> {
        Entry {
            owner: Owner::Name(self.origin.wire()),
            rrset: &self.negative_soa,
            required: false,
        }
    }

    /// The topmost delegation point at or above `name` and below the apex. A DS query at the cut
    /// itself is the parent's to answer (RFC 4035 3.1.4.1), so it does not refer.
    fn cut_above<'s>(&'s self, name: &'s [u8], qtype: u16) -> Option<(&'s [u8], &'s Node)> {
        if !self.has_cuts {
            return None;
        }
        let origin_len = self.origin.wire().len();
        let mut starts = [0u8; MAX_NAME_LEN / 2 + 1];
        let mut n = 0;
        for at in label_starts(name) {
            if name.len() - at <= origin_len {
                break;
            }
            starts[n] = at as u8;
            n += 1;
        }
        // Walk from just below the apex down to the name itself.
        for &at in starts[..n].iter().rev() {
            let at = at as usize;
            if let Some(node) = self.nodes.get(&name[at..])
                && node.cut
                && !(at == 0 && qtype == rtype::DS)
            {
                return Some((&name[at..], node));
            }
        }
        None
    }

    /// RFC 4592 3.3.1: the wildcard `*.<closest encloser>` if the closest encloser has one,
    /// with the length of the closest encloser.
    fn wildcard_for(&self, name: &[u8]) -> Option<(usize, &Node)> {
        let encloser = label_starts(name)
            .skip(1)
            .map(|at| &name[at..])
            .find(|suffix| self.nodes.contains_key(*suffix))?;
        let mut wild = [0u8; MAX_NAME_LEN + 2];
        wild[0] = 1;
        wild[1] = b'*';
        let len = 2 + encloser.len();
        if len > MAX_NAME_LEN {
            return None;
        }
        wild[2..len].copy_from_slice(encloser);
        Some((encloser.len(), self.nodes.get(&wild[..len])?))
    }

    fn referral<'s>(&'s self, cut_name: &'s [u8], cut: &'s Node, ans: &mut Answer<'s>) {
        let Some(ns) = cut.get(rtype::NS) else { return };
        ans.authoritative = !ans.answer.is_empty();
        ans.authority.push(Entry {
            owner: Owner::Name(cut_name),
            rrset: ns,
            required: false,
        });
        for rd in &ns.rdatas {
            if let Rdata::Name(target) = rd {
                // Glue below the cut is required (RFC 9471 "in-domain"); other in-zone addresses
                // are sent when they fit.
                let required = crate::model::is_suffix(target.wire(), cut_name);
                self.push_addresses(target.wire(), required, ans);
            }
        }
    }

    /// Additional-section processing for NS, MX and SRV targets inside this zone (RFC 1035 3.3).
    fn add_additional<'s>(&'s self, set: &'s RRset, ans: &mut Answer<'s>) {
        for rd in &set.rdatas {
            let target = match (set.rtype, rd) {
                (rtype::NS, Rdata::Name(t)) => t,
                (rtype::MX, Rdata::Mx { exchange, .. }) => exchange,
                (rtype::SRV, Rdata::Srv { target, .. }) => target,
                _ => continue,
            };
            self.push_addresses(target.wire(), false, ans);
        }
    }

    fn push_addresses<'s>(&'s self, target: &'s [u8], required: bool, ans: &mut Answer<'s>) {
        let Some(node) = self.nodes.get(target) else {
            return;
        };
        for t in [rtype::A, rtype::AAAA] {
            if let Some(set) = node.get(t)
                && !ans.additional.iter().any(|e| std::ptr::eq(e.rrset, set))
            {
                ans.additional.push(Entry {
                    owner: Owner::Name(target),
                    rrset: set,
                    required,
                });
            }
        }
    }
}
