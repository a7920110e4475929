//! Managed names in the snapshot: each pool's A and AAAA candidates, precomputed at build time
//! from weights, health and the failure policy, and the per-query choice among them.
//!
//! Weights: a group's weight is shared among its *up* endpoints of the asked family in
//! proportion to their own weights, so one dead instance does not shift traffic between groups
//! (blue/green keeps its split); a group with no endpoint up drops out. `min_healthy` compares
//! the up share of the configured weight (per family) with the threshold.

use std::collections::HashMap;
use std::net::IpAddr;

use smallvec::SmallVec;

use super::{Answer, Entry, Owner};
use crate::metrics::Metrics;
use crate::model::{
    Endpoint, Health, OnAllDown, Pool, ProbeKey, RRset, Rcode, Rdata, Sticky, rtype,
};

/// Longest fallback chain followed (config rejects cycles; this bounds the work regardless).
const MAX_FALLBACK_DEPTH: usize = 8;

/// An EDNS Client Subnet option from a query (RFC 7871 6), validated by the wire parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// 1 = IPv4, 2 = IPv6.
    pub family: u16,
    pub source_prefix: u8,
    /// The address, zero beyond `source_prefix`.
    pub addr: [u8; 16],
}

/// Who is asking: the resolver's address and the subnet it sent on behalf of its client.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    pub addr: IpAddr,
    pub ecs: Option<Subnet>,
}

/// Sticky keys use the client's /24 (IPv4) or /56 (IPv6).
const STICKY_V4: u8 = 24;
const STICKY_V6: u8 = 56;

#[derive(Debug)]
struct Candidate {
    /// One A or AAAA record with the outcome's TTL.
    rrset: RRset,
    weight: f64,
    /// Stable per-address hash for rendezvous.
    seed: u64,
    /// None in a preview, which counts nothing.
    answered: Option<crate::metrics::AnswerCounter>,
}

#[derive(Debug)]
struct Span {
    /// Cumulative share of the family's total weight where this group ends, in (0, 1].
    end: f64,
    range: std::ops::Range<usize>,
}

/// How one address family of a pool answers (admin API).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FamilyStatus {
    /// "answer", "nodata" or "servfail".
    pub outcome: &'static str,
    /// The up weight fell below `min_healthy` and `on_all_down` applies.
    pub degraded: bool,
    /// Each answerable endpoint's share of answers (0..=1), for a one-answer pool.
    pub shares: Vec<(String, f64)>,
}

/// Both families of a pool.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PoolStatus {
    pub ipv4: FamilyStatus,
    pub ipv6: FamilyStatus,
}

#[derive(Debug)]
enum Outcome {
    /// No endpoint of this family at all, or the policy says NODATA.
    NoData,
    ServFail,
    Answer {
        /// Ordered by group; `spans` index into it.
        candidates: Vec<Candidate>,
        total: f64,
        spans: Vec<Span>,
    },
}

/// A pool as the query path sees it.
#[derive(Debug)]
pub(super) struct PoolNode {
    answers: usize,
    sticky: bool,
    v4: Outcome,
    v6: Outcome,
    /// Degraded per family (v4, v6).
    degraded: (bool, bool),
    /// `Snapshot::pool_fingerprint`, computed once at build.
    fingerprint: u64,
}

type HealthOf<'a> = &'a dyn Fn(&ProbeKey) -> Health;

/// Precomputes a pool for the snapshot. `pools` holds every pool by name, for fallbacks.
pub(super) fn build(
    pool: &Pool,
    pools: &HashMap<&crate::model::PoolId, &Pool>,
    health: HealthOf<'_>,
    metrics: &Metrics,
) -> PoolNode {
    let (v4, d4) = family(pool, rtype::A, pools, health, Some(metrics), 0);
    let (v6, d6) = family(pool, rtype::AAAA, pools, health, Some(metrics), 0);
    let sticky = pool.sticky == Sticky::ClientSubnet;
    let mut h = mix(pool.answers as u64 ^ u64::from(sticky) << 32);
    for outcome in [&v4, &v6] {
        h = outcome.fingerprint(h);
    }
    PoolNode {
        answers: pool.answers,
        sticky,
        v4,
        v6,
        degraded: (d4, d6),
        fingerprint: h,
    }
}

fn of_family(addr: &IpAddr, t: u16) -> bool {
    matches!(
        (addr, t),
        (IpAddr::V4(_), rtype::A) | (IpAddr::V6(_), rtype::AAAA)
    )
}

fn family(
    pool: &Pool,
    t: u16,
    pools: &HashMap<&crate::model::PoolId, &Pool>,
    health: HealthOf<'_>,
    metrics: Option<&Metrics>,
    depth: usize,
) -> (Outcome, bool) {
    let family_name = if t == rtype::A { "ipv4" } else { "ipv6" };
    let up = |e: &Endpoint| e.up(health);
    // Configured weight of the family, and the part of it that is up.
    let (mut configured, mut up_weight) = (0.0, 0.0);
    let mut any = false;
    for g in &pool.groups {
        let eps = g.endpoints.iter().filter(|e| of_family(&e.address, t));
        let all: f64 = eps.clone().map(|e| f64::from(e.weight)).sum();
        let alive: f64 = eps
            .clone()
            .filter(|e| up(e))
            .map(|e| f64::from(e.weight))
            .sum();
        any |= eps.count() > 0;
        if all > 0.0 {
            configured += f64::from(g.weight);
            up_weight += f64::from(g.weight) * alive / all;
        }
        if let Some(metrics) = metrics {
            for e in g.endpoints.iter().filter(|e| of_family(&e.address, t)) {
                let (name, addr) = (pool.name.to_string(), e.address.to_string());
                metrics.endpoint_health(&name, &g.name, &addr, up(e));
            }
        }
    }
    if !any {
        if let Some(metrics) = metrics {
            metrics.pool_degraded(&pool.name.to_string(), family_name, false);
        }
        return (Outcome::NoData, false);
    }
    let degraded =
        up_weight <= 0.0 || (configured > 0.0 && up_weight / configured < pool.min_healthy);
    if let Some(metrics) = metrics {
        metrics.pool_degraded(&pool.name.to_string(), family_name, degraded);
    }
    if !degraded {
        return (candidates(pool, t, pool.ttl, &up, metrics), false);
    }
    let ttl = pool.ttl.min(pool.degraded_ttl);
    let outcome = match &pool.on_all_down {
        OnAllDown::ServeAll => candidates(pool, t, ttl, &|_| true, metrics),
        OnAllDown::NoData => Outcome::NoData,
        OnAllDown::ServFail => Outcome::ServFail,
        OnAllDown::Fallback(name) => match pools.get(name) {
            Some(next) if depth < MAX_FALLBACK_DEPTH => {
                cap_ttl(family(next, t, pools, health, metrics, depth + 1).0, ttl)
            }
            _ => Outcome::ServFail,
        },
    };
    (outcome, true)
}

fn cap_ttl(mut outcome: Outcome, ttl: u32) -> Outcome {
    if let Outcome::Answer { candidates, .. } = &mut outcome {
        for c in candidates {
            c.rrset.ttl = c.rrset.ttl.min(ttl);
        }
    }
    outcome
}

/// Candidates of family `t` among endpoints that `include` admits, weighted by group weight
/// shared within each group. If every admitted weight is 0 (all drained while serving all),
/// admitted endpoints get equal weights rather than nothing.
fn candidates(
    pool: &Pool,
    t: u16,
    ttl: u32,
    include: &dyn Fn(&Endpoint) -> bool,
    metrics: Option<&Metrics>,
) -> Outcome {
    let mut out = Vec::new();
    let mut spans = Vec::new();
    let mut total = 0.0;
    for g in &pool.groups {
        let eps: Vec<_> = g
            .endpoints
            .iter()
            .filter(|e| of_family(&e.address, t) && include(e))
            .collect();
        let sum: f64 = eps.iter().map(|e| f64::from(e.weight)).sum();
        let start = out.len();
        for e in eps {
            let weight = if sum > 0.0 {
                f64::from(g.weight) * f64::from(e.weight) / sum
            } else {
                0.0
            };
            let bytes: Box<[u8]> = match e.address {
                IpAddr::V4(a) => a.octets().into(),
                IpAddr::V6(a) => a.octets().into(),
            };
            out.push(Candidate {
                seed: hash_bytes(&bytes, 0),
                rrset: RRset {
                    rtype: t,
                    ttl,
                    rdatas: vec![Rdata::Opaque(bytes)],
                },
                weight,
                answered: metrics.map(|m| {
                    m.endpoint_answers(&pool.name.to_string(), &g.name, &e.address.to_string())
                }),
            });
            total += weight;
        }
        spans.push((total, start..out.len()));
    }
    if total <= 0.0 {
        // Nothing has weight (everything drained): serve what is admitted, equally.
        if out.is_empty() {
            return Outcome::NoData;
        }
        total = out.len() as f64;
        for c in &mut out {
            c.weight = 1.0;
        }
        spans = vec![(total, 0..out.len())];
    }
    Outcome::Answer {
        candidates: out,
        total,
        spans: spans
            .into_iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(end, range)| Span {
                end: end / total,
                range,
            })
            .collect(),
    }
}

/// SplitMix64's finalizer: a stable, well-mixed 64-bit hash (stable across builds and hosts,
/// so every nameserver of a zone gives a client the same sticky answer).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hash_bytes(bytes: &[u8], salt: u64) -> u64 {
    let mut h = mix(salt ^ bytes.len() as u64);
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = mix(h ^ u64::from_le_bytes(word));
    }
    h
}

/// A hash in [0, 1).
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The sticky key of a client and the ECS scope prefix it implies (0 without ECS).
pub(super) fn sticky_key(client: &Client) -> (u64, u8) {
    let (family, prefix, mut addr, ecs) = match client.ecs {
        Some(s) => {
            let cap = if s.family == 1 { STICKY_V4 } else { STICKY_V6 };
            (s.family, s.source_prefix.min(cap), s.addr, true)
        }
        None => match client.addr {
            IpAddr::V4(a) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a.octets());
                (1, STICKY_V4, b, false)
            }
            IpAddr::V6(a) => (2, STICKY_V6, a.octets(), false),
        },
    };
    // Zero everything past the prefix.
    for (i, byte) in addr.iter_mut().enumerate() {
        let keep = (i32::from(prefix) - 8 * i as i32).clamp(0, 8) as u32;
        *byte &= (0xFFu16 << (8 - keep)) as u8;
    }
    let key = hash_bytes(&addr, u64::from(family) << 8 | u64::from(prefix));
    (key, if ecs { prefix } else { 0 })
}

/// The exact answer distribution a pool would have (admin preview).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Preview {
    /// "answer", "nodata" or "servfail".
    pub outcome: &'static str,
    pub degraded: bool,
    /// Each endpoint's probability of being in an answer.
    pub endpoints: Vec<(String, f64)>,
    /// Each possible answer (sorted addresses) and its probability.
    pub answer_sets: Vec<(Vec<String>, f64)>,
    /// Sticky pools: the share of client subnets whose answer would change.
    pub sticky_moved: Option<f64>,
}

/// Ordered draws enumerated at most; beyond that a preview is refused.
const PREVIEW_MAX_SEQUENCES: usize = 200_000;
/// Client subnets sampled to estimate how many sticky clients move.
const PREVIEW_STICKY_SAMPLES: u64 = 65_536;

fn address(c: &Candidate) -> String {
    match &c.rrset.rdatas[..] {
        [Rdata::Opaque(b)] if b.len() == 4 => {
            IpAddr::from(<[u8; 4]>::try_from(&b[..]).unwrap_or_default()).to_string()
        }
        [Rdata::Opaque(b)] if b.len() == 16 => {
            IpAddr::from(<[u8; 16]>::try_from(&b[..]).unwrap_or_default()).to_string()
        }
        _ => String::new(),
    }
}

/// Probability of every ordered draw of `k` distinct candidates by weight, summed per set
/// (each set sorted). Sets are merged through a map: one lookup per ordering, so the work is
/// linear in the orderings `preview` bounds beforehand.
fn enumerate(cands: &[Candidate], total: f64, k: usize) -> Vec<(Vec<usize>, f64)> {
    fn walk(
        cands: &[Candidate],
        k: usize,
        chosen: &mut Vec<usize>,
        p: f64,
        left: f64,
        out: &mut Vec<(Vec<usize>, f64)>,
        seen: &mut HashMap<Vec<usize>, usize>,
    ) {
        if chosen.len() == k || left <= 0.0 {
            let mut set = chosen.clone();
            set.sort_unstable();
            match seen.get(&set) {
                Some(&at) => out[at].1 += p,
                None => {
                    seen.insert(set.clone(), out.len());
                    out.push((set, p));
                }
            }
            return;
        }
        for i in 0..cands.len() {
            let w = cands[i].weight;
            if w <= 0.0 || chosen.contains(&i) {
                continue;
            }
            chosen.push(i);
            walk(cands, k, chosen, p * w / left, left - w, out, seen);
            chosen.pop();
        }
    }
    let mut out = Vec::new();
    walk(
        cands,
        k,
        &mut Vec::new(),
        1.0,
        total,
        &mut out,
        &mut HashMap::new(),
    );
    out
}

/// Why a preview was refused before any work was done.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// More ordered draws than `PREVIEW_MAX_SEQUENCES` (the admin API answers 422).
    #[error(
        "{positive} endpoints with {answers} answers make {sequences} orderings to enumerate; a preview enumerates at most {max}: lower `answers` or preview with fewer endpoints up"
    )]
    TooCostly {
        positive: usize,
        answers: usize,
        sequences: usize,
        max: usize,
    },
}

/// Previews `proposed` (a pool with hypothetical weights and health) for family `t`, against
/// the pool as it answers now (`current`, for how many sticky clients would move).
pub(super) fn preview(
    proposed: &Pool,
    current: Option<&PoolNode>,
    pools: &HashMap<&crate::model::PoolId, &Pool>,
    health: HealthOf<'_>,
    t: u16,
) -> Result<Preview, PreviewError> {
    let (outcome, degraded) = family(proposed, t, pools, health, None, 0);
    let (cands, total, spans) = match &outcome {
        Outcome::Answer {
            candidates,
            total,
            spans,
        } => (candidates, *total, spans),
        other => {
            return Ok(Preview {
                outcome: if matches!(other, Outcome::ServFail) {
                    "servfail"
                } else {
                    "nodata"
                },
                degraded,
                endpoints: Vec::new(),
                answer_sets: Vec::new(),
                sticky_moved: None,
            });
        }
    };
    let k = proposed.answers.min(cands.len());
    let positive = cands.iter().filter(|c| c.weight > 0.0).count();
    // The cost bound, from the counts alone: how many ordered draws the enumeration visits.
    let sequences = (0..k).try_fold(1usize, |n, i| {
        n.checked_mul(positive.saturating_sub(i).max(1))
    });
    match sequences {
        Some(sequences) if sequences <= PREVIEW_MAX_SEQUENCES => {}
        _ => {
            return Err(PreviewError::TooCostly {
                positive,
                answers: k,
                sequences: sequences.unwrap_or(usize::MAX),
                max: PREVIEW_MAX_SEQUENCES,
            });
        }
    }
    let sets = enumerate(cands, total, k);
    // One pass over the sets: each endpoint's probability of being in an answer.
    let mut member = vec![0.0; cands.len()];
    for (set, p) in &sets {
        for &i in set {
            member[i] += p;
        }
    }
    let endpoints = cands
        .iter()
        .zip(member)
        .map(|(c, p)| (address(c), p))
        .collect();
    let mut answer_sets: Vec<(Vec<String>, f64)> = sets
        .iter()
        .map(|(set, p)| {
            let mut addrs: Vec<String> = set.iter().map(|&i| address(&cands[i])).collect();
            addrs.sort();
            (addrs, *p)
        })
        .collect();
    answer_sets.sort_by(|a, b| b.1.total_cmp(&a.1));
    let sticky_moved = match (proposed.sticky, current) {
        (Sticky::ClientSubnet, Some(now)) => {
            let now_outcome = if t == rtype::AAAA { &now.v6 } else { &now.v4 };
            let Outcome::Answer {
                candidates: now_cands,
                spans: now_spans,
                ..
            } = now_outcome
            else {
                return Ok(Preview {
                    outcome: "answer",
                    degraded,
                    endpoints,
                    answer_sets,
                    sticky_moved: None,
                });
            };
            // Addresses once per candidate, not once per sample.
            let now_addrs: Vec<String> = now_cands.iter().map(address).collect();
            let addrs: Vec<String> = cands.iter().map(address).collect();
            let moved = (0..PREVIEW_STICKY_SAMPLES)
                .filter(|i| {
                    let key = mix(*i ^ 0x5EED);
                    let (mut a, mut b) = (SmallVec::new(), SmallVec::new());
                    sticky_pick(now_cands, now_spans, key, k.min(now_cands.len()), &mut a);
                    sticky_pick(cands, spans, key, k, &mut b);
                    let mut x: SmallVec<[&str; 8]> = a.iter().map(|&i| &*now_addrs[i]).collect();
                    let mut y: SmallVec<[&str; 8]> = b.iter().map(|&i| &*addrs[i]).collect();
                    x.sort_unstable();
                    y.sort_unstable();
                    x != y
                })
                .count();
            Some(moved as f64 / PREVIEW_STICKY_SAMPLES as f64)
        }
        _ => None,
    };
    Ok(Preview {
        outcome: "answer",
        degraded,
        endpoints,
        answer_sets,
        sticky_moved,
    })
}

impl Outcome {
    /// Folds what decides this family's answers into `h`: the outcome, and for answers each
    /// candidate's address, weight and TTL and the group boundaries.
    fn fingerprint(&self, h: u64) -> u64 {
        match self {
            Outcome::NoData => mix(h ^ 1),
            Outcome::ServFail => mix(h ^ 2),
            Outcome::Answer {
                candidates, spans, ..
            } => {
                let mut h = mix(h ^ 3);
                for c in candidates {
                    h = mix(h ^ c.seed);
                    h = mix(h ^ c.weight.to_bits());
                    h = mix(h ^ u64::from(c.rrset.ttl));
                }
                for s in spans {
                    h = mix(h ^ s.end.to_bits() ^ (s.range.start as u64) << 48);
                }
                h
            }
        }
    }

    fn status(&self, degraded: bool) -> FamilyStatus {
        let (outcome, shares) = match self {
            Outcome::NoData => ("nodata", Vec::new()),
            Outcome::ServFail => ("servfail", Vec::new()),
            Outcome::Answer {
                candidates, total, ..
            } => (
                "answer",
                candidates
                    .iter()
                    .map(|c| {
                        let addr = address(c);
                        (addr, c.weight / total)
                    })
                    .collect(),
            ),
        };
        FamilyStatus {
            outcome,
            degraded,
            shares,
        }
    }
}

impl PoolNode {
    pub(super) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub(super) fn status(&self) -> PoolStatus {
        PoolStatus {
            ipv4: self.v4.status(self.degraded.0),
            ipv6: self.v6.status(self.degraded.1),
        }
    }

    /// Writes the pool's answer for A or AAAA (ANY: A if there is any, else AAAA).
    pub(super) fn is_sticky(&self) -> bool {
        self.sticky
    }

    pub(super) fn answer<'a>(
        &'a self,
        qtype: u16,
        owner: Owner<'a>,
        client: &Client,
        ans: &mut Answer<'a>,
    ) -> bool {
        let outcome = match qtype {
            rtype::AAAA => &self.v6,
            rtype::ANY if matches!(self.v4, Outcome::NoData) => &self.v6,
            _ => &self.v4,
        };
        let (candidates, total, spans) = match outcome {
            Outcome::NoData => return false,
            Outcome::ServFail => {
                ans.rcode = Rcode::ServFail;
                ans.authoritative = false;
                return true;
            }
            Outcome::Answer {
                candidates,
                total,
                spans,
            } => (candidates, *total, spans),
        };
        let k = self.answers.min(candidates.len());
        let mut chosen: SmallVec<[usize; 8]> = SmallVec::new();
        if self.sticky {
            let (key, scope) = sticky_key(client);
            // A route may have set a longer scope already: the longer one holds.
            ans.ecs_scope = ans.ecs_scope.max(scope);
            sticky_pick(candidates, spans, key, k, &mut chosen);
        } else {
            weighted_pick(candidates, total, k, &mut chosen);
        }
        for i in chosen {
            let c = &candidates[i];
            if let Some(counter) = &c.answered {
                counter.inc();
            }
            ans.answer.push(Entry {
                owner,
                rrset: &c.rrset,
                required: false,
            });
        }
        true
    }
}

/// Weighted sampling without replacement: each draw picks among the remaining candidates in
/// proportion to weight, so weights decide membership, not only order.
fn weighted_pick(cands: &[Candidate], total: f64, k: usize, chosen: &mut SmallVec<[usize; 8]>) {
    let mut remaining = total;
    while chosen.len() < k && remaining > 0.0 {
        let mut r = fastrand::f64() * remaining;
        let mut pick = None;
        for (i, c) in cands.iter().enumerate() {
            if c.weight <= 0.0 || chosen.contains(&i) {
                continue;
            }
            pick = Some(i);
            if r < c.weight {
                break;
            }
            r -= c.weight;
        }
        // `pick` ends on the last positive candidate if rounding left r past every weight.
        let Some(i) = pick else { break };
        chosen.push(i);
        remaining -= cands[i].weight;
    }
}

/// Sticky choice: the key's point in [0, 1) selects a group by cumulative weight (so raising a
/// group's weight only moves keys into it), then weighted rendezvous hashing picks inside the
/// group; further answers come from the best-scoring others.
fn sticky_pick(
    cands: &[Candidate],
    spans: &[Span],
    key: u64,
    k: usize,
    chosen: &mut SmallVec<[usize; 8]>,
) {
    let point = unit(mix(key));
    let Some(span) = spans.iter().find(|s| point < s.end).or(spans.last()) else {
        return;
    };
    let score = |i: usize| {
        let c = &cands[i];
        if c.weight <= 0.0 {
            return f64::NEG_INFINITY;
        }
        // Weighted rendezvous: -w / ln(u) with u in (0, 1).
        let u = (unit(mix(key ^ c.seed)) + f64::EPSILON).min(1.0 - f64::EPSILON);
        -c.weight / u.ln()
    };
    for pool in [span.range.clone(), 0..cands.len()] {
        while chosen.len() < k {
            let best = pool
                .clone()
                .filter(|i| !chosen.contains(i))
                .map(|i| (score(i), i))
                .filter(|(s, _)| s.is_finite())
                .max_by(|a, b| a.0.total_cmp(&b.0));
            match best {
                Some((_, i)) => chosen.push(i),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;

    use super::*;
    use crate::model::{Name, Rdata, rtype};
    use crate::snapshot::{Question, Snapshot, answer};

    const ZONE: &str =
        "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n";

    fn snapshot_with(pools: &str, health: &HashMap<ProbeKey, Health>) -> (Snapshot, Vec<Pool>) {
        let text = format!("[[zone]]\norigin = \"example.com.\"\nfile = \"x\"\n{pools}");
        let config = crate::config::parse(&text, Path::new("weir.toml")).unwrap();
        let zone =
            crate::zones::from_text(ZONE, Path::new("x"), &Name::parse("example.com").unwrap())
                .unwrap();
        let metrics = Metrics::new();
        let index =
            crate::snapshot::index(&[zone], &config.pools, &config.routing, &config.keyring);
        let view = crate::model::View {
            pools: config.pools.clone().into(),
            health: health.clone(),
            ..Default::default()
        };
        let snap = crate::snapshot::build(&index, std::sync::Arc::new(view), &metrics, 1);
        (snap, config.pools)
    }

    fn snapshot(pools: &str) -> Snapshot {
        snapshot_with(pools, &HashMap::new()).0
    }

    fn client(addr: [u8; 4]) -> Client {
        Client {
            addr: IpAddr::V4(Ipv4Addr::from(addr)),
            ecs: None,
        }
    }

    /// The addresses answered (in order), the rcode and the TTL of the first record.
    fn ask(snap: &Snapshot, qtype: u16, c: Client) -> (Vec<String>, Rcode, u32) {
        let name = Name::parse("app.example.com").unwrap();
        let ans = answer(
            snap,
            Question {
                name: name.wire(),
                qtype,
                qclass: 1,
                client: c,
                dnssec: false,
                compact_ok: false,
            },
        );
        let addrs = ans
            .answer
            .iter()
            .map(|e| match &e.rrset.rdatas[0] {
                Rdata::Opaque(b) if b.len() == 4 => {
                    Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()
                }
                Rdata::Opaque(b) => {
                    let a: [u8; 16] = (**b).try_into().unwrap();
                    std::net::Ipv6Addr::from(a).to_string()
                }
                other => format!("{other:?}"),
            })
            .collect();
        let ttl = ans.answer.first().map_or(0, |e| e.rrset.ttl);
        (addrs, ans.rcode, ttl)
    }

    fn split(blue: u32, green: u32, extra: &str) -> String {
        format!(
            "[[pool]]\nname = \"app.example.com.\"\n{extra}\n[[pool.group]]\nname = \"blue\"\nweight = {blue}\nendpoints = [{{ address = \"192.0.2.10\" }}, {{ address = \"192.0.2.11\" }}]\n[[pool.group]]\nname = \"green\"\nweight = {green}\nendpoints = [{{ address = \"192.0.2.20\" }}, {{ address = \"2001:db8::20\" }}]\n"
        )
    }

    fn share_of_green(snap: &Snapshot, n: usize) -> f64 {
        let green = (0..n)
            .filter(|i| {
                let c = client([10, (i >> 16) as u8, (i >> 8) as u8, *i as u8]);
                ask(snap, rtype::A, c).0 == ["192.0.2.20"]
            })
            .count();
        green as f64 / n as f64
    }

    #[test]
    fn weights_hold_over_100k_queries() {
        for (blue, green, tolerance) in [(90, 10, 0.005), (99, 1, 0.002)] {
            let snap = snapshot(&split(blue, green, ""));
            let got = share_of_green(&snap, 100_000);
            let want = f64::from(green) / 100.0;
            assert!(
                (got - want).abs() <= tolerance,
                "{blue}/{green}: green got {got}"
            );
        }
    }

    #[test]
    fn several_answers_are_distinct_and_drained_never_appear() {
        let pools = "[[pool]]\nname = \"app.example.com.\"\nanswers = 2\n[[pool.group]]\nname = \"g\"\nendpoints = [{ address = \"192.0.2.1\" }, { address = \"192.0.2.2\", weight = 3 }, { address = \"192.0.2.3\", weight = 0 }, { address = \"192.0.2.4\" }]\n";
        let snap = snapshot(pools);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for i in 0..20_000u32 {
            let (addrs, rcode, ttl) = ask(&snap, rtype::A, client(i.to_be_bytes()));
            assert_eq!((rcode, ttl), (Rcode::NoError, 30));
            assert_eq!(addrs.len(), 2);
            assert_ne!(addrs[0], addrs[1], "an endpoint is never repeated");
            assert!(!addrs.contains(&"192.0.2.3".to_string()), "drained");
            for a in addrs {
                *counts.entry(a).or_default() += 1;
            }
        }
        // Membership follows weight: the weight-3 endpoint is in far more answers.
        assert!(
            counts["192.0.2.2"] > counts["192.0.2.1"] + 4000,
            "{counts:?}"
        );
    }

    #[test]
    fn a_family_without_endpoints_is_nodata() {
        let snap = snapshot(
            "[[pool]]\nname = \"app.example.com.\"\n[[pool.group]]\nname = \"g\"\nendpoints = [{ address = \"192.0.2.1\" }]\n",
        );
        let (addrs, rcode, _) = ask(&snap, rtype::AAAA, client([1, 2, 3, 4]));
        assert!(addrs.is_empty());
        assert_eq!(rcode, Rcode::NoError);
        let (addrs, _, _) = ask(&snap, rtype::ANY, client([1, 2, 3, 4]));
        assert_eq!(addrs, ["192.0.2.1"]);
    }

    #[test]
    fn sticky_is_stable_per_subnet_and_monotone_when_a_weight_rises() {
        let extra = "sticky = \"client-subnet\"";
        let keys = 20_000u32;
        let mut previous: Option<Vec<bool>> = None;
        for green in [5, 25, 50, 100] {
            let snap = snapshot(&split(100 - green.min(99), green, extra));
            let in_green: Vec<bool> = (0..keys)
                .map(|k| {
                    let c = client([10, (k >> 8) as u8, k as u8, 1]);
                    let first = ask(&snap, rtype::A, c).0;
                    // Same /24, another host: same answer.
                    let again = ask(&snap, rtype::A, client([10, (k >> 8) as u8, k as u8, 200])).0;
                    assert_eq!(first, again);
                    first == ["192.0.2.20"]
                })
                .collect();
            let share = in_green.iter().filter(|g| **g).count() as f64 / f64::from(keys);
            let want = f64::from(green) / f64::from(100 - green.min(99) + green);
            assert!(
                (share - want).abs() < 0.02,
                "green {green}: {share} vs {want}"
            );
            if let Some(prev) = &previous {
                let left = prev
                    .iter()
                    .zip(&in_green)
                    .filter(|(was, is)| **was && !**is)
                    .count();
                assert_eq!(
                    left, 0,
                    "raising green's weight moved {left} keys out of green"
                );
            }
            previous = Some(in_green);
        }
    }

    #[test]
    fn sticky_uses_ecs_and_reports_its_scope() {
        let snap = snapshot(&split(50, 50, "sticky = \"client-subnet\""));
        let name = Name::parse("app.example.com").unwrap();
        let ask_ecs = |source_prefix: u8, last: u8| {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&[198, 51, 100, last]);
            let ans = answer(
                &snap,
                Question {
                    name: name.wire(),
                    qtype: rtype::A,
                    qclass: 1,
                    client: Client {
                        addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
                        ecs: Some(Subnet {
                            family: 1,
                            source_prefix,
                            addr,
                        }),
                    },
                    dnssec: false,
                    compact_ok: false,
                },
            );
            (ans.answer[0].rrset.rdatas.clone(), ans.ecs_scope)
        };
        assert_eq!(ask_ecs(32, 7).1, 24);
        assert_eq!(ask_ecs(20, 0).1, 20);
        assert_eq!(ask_ecs(32, 7).0, ask_ecs(32, 99).0, "same /24, same answer");
        // Non-sticky pools answer scope 0.
        let plain = snapshot(&split(50, 50, ""));
        let ans = answer(
            &plain,
            Question {
                name: name.wire(),
                qtype: rtype::A,
                qclass: 1,
                client: Client {
                    addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    ecs: Some(Subnet {
                        family: 1,
                        source_prefix: 24,
                        addr: [198, 51, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    }),
                },
                dnssec: false,
                compact_ok: false,
            },
        );
        assert_eq!(ans.ecs_scope, 0);
    }

    fn checked(policy: &str, min_healthy: f64) -> String {
        format!(
            "[[pool]]\nname = \"app.example.com.\"\nttl = 60\non_all_down = \"{policy}\"\nmin_healthy = {min_healthy}\n[pool.check]\nkind = \"tcp\"\nport = 80\n[[pool.group]]\nname = \"g\"\nendpoints = [{{ address = \"192.0.2.1\" }}, {{ address = \"192.0.2.2\" }}]\n[[pool]]\nname = \"backup.example.com.\"\n[[pool.group]]\nname = \"b\"\nendpoints = [{{ address = \"203.0.113.9\" }}]\n"
        )
    }

    fn down(pools: &[Pool], addrs: &[&str]) -> HashMap<ProbeKey, Health> {
        pools[0]
            .probes()
            .map(|k| {
                let dead = addrs.contains(&k.target.ip().to_string().as_str());
                (k.clone(), if dead { Health::Down } else { Health::Up })
            })
            .collect()
    }

    #[test]
    fn down_endpoints_leave_and_each_failure_policy_applies() {
        let c = client([1, 1, 1, 1]);
        // One of two down: the other takes everything, full TTL.
        let (_, pools) = snapshot_with(&checked("serve-all", 0.0), &HashMap::new());
        let (snap, _) = snapshot_with(&checked("serve-all", 0.0), &down(&pools, &["192.0.2.1"]));
        for _ in 0..200 {
            assert_eq!(
                ask(&snap, rtype::A, c),
                (vec!["192.0.2.2".to_string()], Rcode::NoError, 60)
            );
        }
        // All down.
        let all = ["192.0.2.1", "192.0.2.2"];
        let (snap, _) = snapshot_with(&checked("serve-all", 0.0), &down(&pools, &all));
        let (addrs, rcode, ttl) = ask(&snap, rtype::A, c);
        assert_eq!(
            (addrs.len(), rcode, ttl),
            (1, Rcode::NoError, 10),
            "serve-all, degraded TTL cap"
        );
        let (snap, _) = snapshot_with(
            &checked("fallback:backup.example.com.", 0.0),
            &down(&pools, &all),
        );
        assert_eq!(
            ask(&snap, rtype::A, c),
            (vec!["203.0.113.9".to_string()], Rcode::NoError, 10)
        );
        let (snap, _) = snapshot_with(&checked("nodata", 0.0), &down(&pools, &all));
        assert_eq!(ask(&snap, rtype::A, c), (vec![], Rcode::NoError, 0));
        let (snap, _) = snapshot_with(&checked("servfail", 0.0), &down(&pools, &all));
        assert_eq!(ask(&snap, rtype::A, c).1, Rcode::ServFail);
        // min_healthy: half the weight up is below 0.75, so the policy applies already.
        let (snap, _) = snapshot_with(&checked("servfail", 0.75), &down(&pools, &["192.0.2.1"]));
        assert_eq!(ask(&snap, rtype::A, c).1, Rcode::ServFail);
        let (snap, _) = snapshot_with(&checked("servfail", 0.5), &down(&pools, &["192.0.2.1"]));
        assert_eq!(ask(&snap, rtype::A, c).1, Rcode::NoError);
    }

    #[test]
    fn initial_health_counts_before_the_first_probe() {
        let snap = snapshot(
            &checked("servfail", 0.0).replace("port = 80", "port = 80\ninitial = \"down\""),
        );
        assert_eq!(
            ask(&snap, rtype::A, client([1, 1, 1, 1])).1,
            Rcode::ServFail
        );
        let snap = snapshot(&checked("servfail", 0.0));
        assert_eq!(ask(&snap, rtype::A, client([1, 1, 1, 1])).1, Rcode::NoError);
    }
    /// The fingerprint changes exactly when the pool's answers do: weights, health, TTL;
    /// not when another pool changes.
    #[test]
    fn fingerprints_follow_what_the_pool_answers() {
        let other = "[[pool]]\nname = \"other.example.com.\"\n[[pool.group]]\nname = \"o\"\nweight = {w}\nendpoints = [{ address = \"203.0.113.1\" }, { address = \"203.0.113.2\" }]\n";
        let fp = |pools: &str, health: &HashMap<ProbeKey, Health>| {
            snapshot_with(pools, health).0.pool_fingerprint(0).unwrap()
        };
        let none = HashMap::new();
        let base = fp(&split(90, 10, ""), &none);
        let cases = [
            (split(90, 10, ""), false, "same config"),
            (
                format!("{}{}", split(90, 10, ""), other.replace("{w}", "5")),
                false,
                "another pool added",
            ),
            (split(80, 20, ""), true, "group weights"),
            (split(90, 10, "ttl = 5"), true, "TTL"),
            (split(90, 10, "answers = 2"), true, "answer count"),
            (
                split(90, 10, "sticky = \"client-subnet\""),
                true,
                "stickiness",
            ),
        ];
        for (pools, changed, what) in cases {
            assert_eq!(fp(&pools, &none) != base, changed, "{what}");
        }
        // A health flip of one endpoint changes the answers.
        let (_, pools) = snapshot_with(&checked("serve-all", 0.0), &none);
        let up = fp(&checked("serve-all", 0.0), &down(&pools, &[]));
        let flipped = fp(&checked("serve-all", 0.0), &down(&pools, &["192.0.2.1"]));
        assert_ne!(up, flipped);
        assert_eq!(up, fp(&checked("serve-all", 0.0), &down(&pools, &[])));
    }
}
