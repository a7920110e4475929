//! Measured cache convergence: for each pool, after every publication that changes its
//! answers, which resolvers that queried it in the window before the change have queried it
//! again since, weighted by their query volume in that window. Only the authoritative server
//! sees resolvers come back, so this is the direct measure of "old answers are gone from
//! caches" that a TTL-based settle time can only predict.
//!
//! The query path writes (pool, resolver, snapshot generation) counts into per-worker tables
//! (`dns::track`); this module's task drains them every `TICK`, reads the published snapshot,
//! and keeps per pool:
//!
//! - a sliding **window** of resolvers and their query volume over the last `window_ms`
//!   = 2 × the pool's TTL clamped to 10 s..10 min (a resolver that honours TTLs and asked
//!   longer ago than one TTL no longer holds the answer; twice covers stretchers). Volume is
//!   the usual two-bucket sliding-window estimate.
//! - the last **change**: the snapshot generation and wall-clock instant (`Snapshot::
//!   published_ms`) where the pool's fingerprint (`Snapshot::pool_fingerprint`: endpoints ×
//!   weights × health × TTL) changed; the window's resolvers at that instant (top `BEFORE_CAP`
//!   by volume); queries answered from earlier generations that arrive late add to that set,
//!   queries answered from the change's generation or later mark a resolver as re-fetched.
//!   Attribution is by the generation each query was answered from, not by arrival time, so
//!   the table's drain delay never counts a stale answer as fresh. Several publications between
//!   two ticks are seen as one change at the newest: conservative (a resolver that re-fetched
//!   in between counts as silent until it asks again).
//!
//! Convergence is reached at `CONVERGED` (99%) of the before volume; `converged_after_ms` is
//! the time from the change to the drain that brought the last needed resolver back (accurate
//! to a `TICK` or two). Memory is bounded: at most `WINDOW_CAP` resolvers per pool in the window
//! (the lowest volumes go first) and `BEFORE_CAP` per change, ~48 bytes each: under 250 KiB per
//! pool however many resolvers ask; the query-path tables are bounded in `dns::track`.
//!
//! Reads go through `Convergence` (cheap to clone): the task publishes a fresh report per tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::dns::track::{Resolver, Sample, Tables};
use crate::metrics::Metrics;
use crate::model::PoolId;
use crate::snapshot::Snapshot;

/// How often the tables are drained and the snapshot looked at.
pub(crate) const TICK: Duration = Duration::from_millis(200);
/// Ticks after a change before convergence can be declared: queries answered before the change
/// may still sit in a table half for up to two ticks.
const GRACE_TICKS: u32 = 2;
/// The window before a change: 2 × TTL, within these bounds.
pub(crate) const MIN_WINDOW_MS: u64 = 10_000;
pub(crate) const MAX_WINDOW_MS: u64 = 600_000;
/// Resolvers kept per pool in the window; past this, the lowest volumes are forgotten.
pub(crate) const WINDOW_CAP: usize = 4096;
/// Resolvers kept per change (the top by volume in the window).
pub(crate) const BEFORE_CAP: usize = 1024;
/// Silent resolvers listed in a report, largest first.
pub(crate) const SILENT_SHOWN: usize = 10;
/// The re-fetched share at which a change counts as converged.
pub(crate) const CONVERGED: f64 = 0.99;
/// Windows are pruned every this many ticks.
const PRUNE_EVERY: u32 = 5;

/// Where a pool's caches stand since its last change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolConvergence {
    /// When weir published the change: Unix time in milliseconds (wall clock).
    pub changed_at_ms: u64,
    /// The snapshot generation that first served it.
    pub generation: u64,
    /// How far back "before the change" reached (2 × the TTL served before it, 10 s..10 min).
    pub window_ms: u64,
    /// Share of the before volume whose resolvers have queried again since (0..=1); 1 when
    /// nobody had queried in the window.
    pub refetched: f64,
    /// Resolvers that had queried in the window (at most `BEFORE_CAP`, the largest).
    pub resolvers_before: usize,
    /// Of those, how many have queried again.
    pub resolvers_refetched: usize,
    /// Their queries in the window.
    pub queries_before: u64,
    /// The largest resolvers that have not queried again (at most `SILENT_SHOWN`): they may
    /// still serve the old answer (after the settle time: likely TTL stretchers).
    pub silent: Vec<Silent>,
    /// Milliseconds from the change until 99% had re-fetched; None until then.
    pub converged_after_ms: Option<u64>,
}

/// A resolver that has not queried since the change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Silent {
    /// `192.0.2.0/24`, `2001:db8:1::/48`, or with ECS `192.0.2.0/24 ecs 198.51.100.0/24`.
    pub prefix: String,
    /// Its queries in the window before the change.
    pub queries: u64,
}

type Report = HashMap<PoolId, PoolConvergence>;

/// The read side, for the admin API and the rollout engine. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Convergence {
    report: Option<Arc<ArcSwap<Report>>>,
}

impl Convergence {
    /// Tracking off (`[dns] track_convergence = false`): every pool reads None.
    pub fn off() -> Convergence {
        Convergence::default()
    }

    pub fn is_on(&self) -> bool {
        self.report.is_some()
    }

    /// The pool's convergence since its last change; None when tracking is off, the pool is
    /// unknown, or its answers have not changed since weir started.
    pub fn pool(&self, pool: &PoolId) -> Option<PoolConvergence> {
        self.report.as_ref()?.load().get(pool).cloned()
    }

    /// The pool's convergence if its last change was published at or after `since_ms` (Unix
    /// ms), e.g. a rollout step's change time: None while weir has not yet seen a change that
    /// recent (or tracking is off).
    pub fn since(&self, pool: &PoolId, since_ms: u64) -> Option<PoolConvergence> {
        self.pool(pool).filter(|p| p.changed_at_ms >= since_ms)
    }
}

impl PoolConvergence {
    /// True once at least `threshold` (0..=1, e.g. 0.99) of the before volume has re-fetched.
    pub fn reached(&self, threshold: f64) -> bool {
        self.refetched >= threshold
    }
}

/// Starts the aggregation task (it ends with `shutdown`) and returns its read side. Must be
/// called inside a tokio runtime.
pub(crate) fn start(
    tables: Arc<Tables>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Convergence {
    let report = Arc::new(ArcSwap::from_pointee(Report::new()));
    tokio::spawn(run(tables, snapshot, metrics, report.clone(), shutdown));
    Convergence {
        report: Some(report),
    }
}

async fn run(
    tables: Arc<Tables>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    report: Arc<ArcSwap<Report>>,
    shutdown: CancellationToken,
) {
    let mut tracker = Tracker::default();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    // When writers left the halves that the next drain reads.
    let mut left_ms = now_ms();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        samples.clear();
        let mut dropped = 0;
        for table in tables.iter() {
            table.drain(|s| samples.push(s));
            dropped += table.take_dropped();
        }
        if dropped > 0 {
            metrics.convergence_dropped(dropped);
        }
        let now = now_ms();
        let batch_ms = std::mem::replace(&mut left_ms, now);
        // Drained first, loaded second: no drained query is newer than this snapshot.
        let snap = snapshot.load();
        if tracker.generation != Some(snap.generation) {
            for gone in tracker.observe(&Observed::of(&snap)) {
                metrics.forget_pool_convergence(&gone.to_string());
            }
        }
        tracker.apply(&mut samples, batch_ms);
        tracker.settle(now);
        let fresh = tracker.report();
        for (name, p) in &fresh {
            let seconds = p.converged_after_ms.map(|ms| ms as f64 / 1000.0);
            metrics.pool_convergence(&name.to_string(), p.refetched, seconds);
        }
        report.store(Arc::new(fresh));
    }
}

/// What the tracker needs from a snapshot.
#[derive(Clone, Debug)]
struct Observed {
    generation: u64,
    published_ms: u64,
    /// In snapshot order (the pool index the query path records).
    pools: Vec<ObservedPool>,
}

#[derive(Clone, Debug)]
struct ObservedPool {
    name: PoolId,
    fingerprint: u64,
    ttl: u32,
}

impl Observed {
    fn of(snapshot: &Snapshot) -> Observed {
        Observed {
            generation: snapshot.generation,
            published_ms: snapshot.published_ms,
            pools: snapshot
                .view
                .pools
                .iter()
                .enumerate()
                .map(|(i, p)| ObservedPool {
                    name: p.name.clone(),
                    fingerprint: snapshot.pool_fingerprint(i).unwrap_or_default(),
                    ttl: p.ttl,
                })
                .collect(),
        }
    }
}

/// The window before a change for a pool served with `ttl` seconds.
fn window_of(ttl: u32) -> u64 {
    (2 * u64::from(ttl) * 1000).clamp(MIN_WINDOW_MS, MAX_WINDOW_MS)
}

/// One resolver's queries in a pool's window: the two-bucket sliding-window estimate.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    /// The bucket width these counts were kept with (the pool's window when they started).
    width: u64,
    /// Index of the current bucket (time / width).
    bucket: u64,
    cur: u64,
    prev: u64,
    last_ms: u64,
}

impl Seen {
    fn add(&mut self, n: u64, at_ms: u64, width: u64) {
        let width = width.max(1);
        if self.width != width {
            // The TTL changed: carry the total into a bucket of the new width.
            *self = Seen {
                width,
                bucket: at_ms / width,
                cur: self.cur + self.prev,
                prev: 0,
                last_ms: self.last_ms,
            };
        }
        let b = at_ms / width;
        if b <= self.bucket {
            self.cur += n;
        } else if b == self.bucket + 1 {
            self.prev = self.cur;
            self.cur = n;
            self.bucket = b;
        } else {
            self.prev = 0;
            self.cur = n;
            self.bucket = b;
        }
        self.last_ms = self.last_ms.max(at_ms);
    }

    /// Estimated queries in the `width` before `now_ms`.
    fn volume(&self, now_ms: u64) -> f64 {
        let width = self.width.max(1);
        let b = now_ms / width;
        let left = 1.0 - (now_ms % width) as f64 / width as f64;
        if b <= self.bucket {
            self.cur as f64 + self.prev as f64 * left
        } else if b == self.bucket + 1 {
            self.cur as f64 * left
        } else {
            0.0
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Before {
    queries: u64,
    returned: bool,
}

#[derive(Debug)]
struct Change {
    generation: u64,
    at_ms: u64,
    window_ms: u64,
    before: HashMap<Resolver, Before>,
    volume: u64,
    returned: u64,
    last_return_ms: Option<u64>,
    ticks: u32,
    converged_after_ms: Option<u64>,
}

impl Change {
    fn refetched(&self) -> f64 {
        if self.volume == 0 {
            1.0
        } else {
            self.returned as f64 / self.volume as f64
        }
    }
}

#[derive(Debug)]
struct PoolTrack {
    fingerprint: u64,
    window_ms: u64,
    window: HashMap<Resolver, Seen>,
    change: Option<Change>,
}

impl PoolTrack {
    /// The window's resolvers at `at_ms` with their volumes (at least 1 each), largest first,
    /// at most `cap`.
    fn top(&self, at_ms: u64, cap: usize) -> Vec<(Resolver, u64)> {
        let mut out: Vec<(Resolver, u64)> = self
            .window
            .iter()
            .filter(|(_, s)| s.last_ms.saturating_add(self.window_ms) >= at_ms)
            .map(|(r, s)| (*r, (s.volume(at_ms).ceil() as u64).max(1)))
            .collect();
        out.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(cap);
        out
    }
}

/// The aggregation state, apart from tasks and clocks so it is tested as a pure machine.
#[derive(Debug, Default)]
struct Tracker {
    /// The last snapshot generation observed.
    generation: Option<u64>,
    pools: HashMap<PoolId, PoolTrack>,
    /// Pool names by snapshot index since generation `names_since`, and before it.
    names: Vec<PoolId>,
    names_since: u64,
    previous_names: Vec<PoolId>,
    ticks: u32,
}

impl Tracker {
    /// Takes in a new snapshot: a pool whose fingerprint changed starts a change. Returns the
    /// pools no longer served.
    fn observe(&mut self, obs: &Observed) -> Vec<PoolId> {
        self.generation = Some(obs.generation);
        let names: Vec<PoolId> = obs.pools.iter().map(|p| p.name.clone()).collect();
        if names != self.names {
            self.previous_names = std::mem::replace(&mut self.names, names);
            self.names_since = obs.generation;
        }
        for p in &obs.pools {
            let Some(t) = self.pools.get_mut(&p.name) else {
                self.pools.insert(
                    p.name.clone(),
                    PoolTrack {
                        fingerprint: p.fingerprint,
                        window_ms: window_of(p.ttl),
                        window: HashMap::new(),
                        change: None,
                    },
                );
                continue;
            };
            if t.fingerprint != p.fingerprint {
                let before: HashMap<Resolver, Before> = t
                    .top(obs.published_ms, BEFORE_CAP)
                    .into_iter()
                    .map(|(r, queries)| {
                        let b = Before {
                            queries,
                            returned: false,
                        };
                        (r, b)
                    })
                    .collect();
                t.change = Some(Change {
                    generation: obs.generation,
                    at_ms: obs.published_ms,
                    window_ms: t.window_ms,
                    volume: before.values().map(|b| b.queries).sum(),
                    before,
                    returned: 0,
                    last_return_ms: None,
                    ticks: 0,
                    converged_after_ms: None,
                });
                t.fingerprint = p.fingerprint;
            }
            // After the change: its window was the one of the TTL served before it.
            t.window_ms = window_of(p.ttl);
        }
        let mut gone = Vec::new();
        self.pools.retain(|name, _| {
            let keep = obs.pools.iter().any(|p| p.name == *name);
            if !keep {
                gone.push(name.clone());
            }
            keep
        });
        gone
    }

    /// Counts drained samples whose queries were made by `at_ms`. Older generations go first:
    /// a resolver's query from before a change must join the before set before its query from
    /// after the change can mark it re-fetched (one drain can hold both, from two tables).
    fn apply(&mut self, samples: &mut [Sample], at_ms: u64) {
        samples.sort_by_key(|s| s.generation);
        for s in samples.iter() {
            // The pool a sample names is its index in the snapshot that answered it.
            let names = if s.generation >= self.names_since {
                &self.names
            } else {
                &self.previous_names
            };
            let Some(name) = names.get(s.pool) else {
                continue;
            };
            let Some(t) = self.pools.get_mut(name) else {
                continue;
            };
            t.window
                .entry(s.resolver)
                .or_default()
                .add(s.count, at_ms, t.window_ms);
            let Some(c) = &mut t.change else { continue };
            if s.generation < c.generation {
                // Answered before the change (drained late): this resolver may hold the old
                // answer.
                let len = c.before.len();
                match c.before.get_mut(&s.resolver) {
                    Some(b) => {
                        b.queries += s.count;
                        c.volume += s.count;
                        if b.returned {
                            c.returned += s.count;
                        }
                    }
                    None if len < BEFORE_CAP => {
                        c.before.insert(
                            s.resolver,
                            Before {
                                queries: s.count,
                                returned: false,
                            },
                        );
                        c.volume += s.count;
                    }
                    None => {}
                }
            } else if let Some(b) = c.before.get_mut(&s.resolver)
                && !b.returned
            {
                b.returned = true;
                c.returned += b.queries;
                c.last_return_ms = Some(c.last_return_ms.unwrap_or(0).max(at_ms));
            }
        }
    }

    /// Once per tick after `apply`: declares convergence, prunes windows.
    fn settle(&mut self, now_ms: u64) {
        self.ticks = self.ticks.wrapping_add(1);
        let prune = self.ticks.is_multiple_of(PRUNE_EVERY);
        for t in self.pools.values_mut() {
            if let Some(c) = &mut t.change {
                c.ticks = c.ticks.saturating_add(1);
                if c.ticks >= GRACE_TICKS
                    && c.converged_after_ms.is_none()
                    && c.refetched() >= CONVERGED
                {
                    c.converged_after_ms =
                        Some(c.last_return_ms.map_or(0, |at| at.saturating_sub(c.at_ms)));
                }
            }
            if prune {
                let window = t.window_ms;
                t.window
                    .retain(|_, s| s.last_ms.saturating_add(window) >= now_ms);
                if t.window.len() > WINDOW_CAP {
                    let keep: HashMap<Resolver, Seen> = t
                        .top(now_ms, WINDOW_CAP)
                        .into_iter()
                        .filter_map(|(r, _)| t.window.get(&r).map(|s| (r, *s)))
                        .collect();
                    t.window = keep;
                }
            }
        }
    }

    /// Every pool with a change, as readers see it.
    fn report(&self) -> Report {
        self.pools
            .iter()
            .filter_map(|(name, t)| {
                let c = t.change.as_ref()?;
                let mut silent: Vec<(&Resolver, u64)> = c
                    .before
                    .iter()
                    .filter(|(_, b)| !b.returned)
                    .map(|(r, b)| (r, b.queries))
                    .collect();
                silent.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                let p = PoolConvergence {
                    changed_at_ms: c.at_ms,
                    generation: c.generation,
                    window_ms: c.window_ms,
                    refetched: c.refetched(),
                    resolvers_before: c.before.len(),
                    resolvers_refetched: c.before.values().filter(|b| b.returned).count(),
                    queries_before: c.volume,
                    silent: silent
                        .into_iter()
                        .take(SILENT_SHOWN)
                        .map(|(r, queries)| Silent {
                            prefix: r.to_string(),
                            queries,
                        })
                        .collect(),
                    converged_after_ms: c.converged_after_ms,
                };
                Some((name.clone(), p))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::snapshot::Client;

    fn resolver(addr: &str) -> Resolver {
        Resolver::of(&Client {
            addr: addr.parse::<IpAddr>().unwrap(),
            ecs: None,
        })
    }

    fn name(n: &str) -> PoolId {
        PoolId::parse(n).unwrap()
    }

    fn observed(generation: u64, at: u64, pools: &[(&str, u64, u32)]) -> Observed {
        Observed {
            generation,
            published_ms: at,
            pools: pools
                .iter()
                .map(|(n, fingerprint, ttl)| ObservedPool {
                    name: name(n),
                    fingerprint: *fingerprint,
                    ttl: *ttl,
                })
                .collect(),
        }
    }

    fn sample(pool: usize, addr: &str, generation: u64, count: u64) -> Sample {
        Sample {
            pool,
            resolver: resolver(addr),
            generation,
            count,
        }
    }

    /// A pool with resolvers of volume 10, 5, 3 and 2 before a change at 100 s.
    fn changed() -> Tracker {
        let mut t = Tracker::default();
        t.observe(&observed(1, 0, &[("app.example.com", 7, 30)]));
        t.apply(
            &mut [
                sample(0, "10.0.0.1", 1, 10),
                sample(0, "10.0.1.1", 1, 5),
                sample(0, "10.0.2.1", 1, 3),
                sample(0, "10.0.3.1", 1, 2),
            ],
            95_000,
        );
        t.settle(95_000);
        t.observe(&observed(2, 100_000, &[("app.example.com", 8, 30)]));
        t
    }

    fn report(t: &Tracker) -> PoolConvergence {
        t.report().remove(&name("app.example.com")).unwrap()
    }

    #[test]
    fn no_change_no_report() {
        let mut t = Tracker::default();
        t.observe(&observed(1, 0, &[("app.example.com", 7, 30)]));
        t.apply(&mut [sample(0, "10.0.0.1", 1, 10)], 1000);
        // A publication for something else: same fingerprint.
        t.observe(&observed(2, 2000, &[("app.example.com", 7, 30)]));
        t.settle(2000);
        assert!(t.report().is_empty());
    }

    /// Table-driven: which resolvers come back (and from which generation) → share, silent
    /// list, convergence.
    #[test]
    fn shares_are_weighted_by_volume() {
        type Case = (
            &'static str,
            Vec<Sample>,
            f64,
            Vec<(&'static str, u64)>,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "nobody back",
                vec![],
                0.0,
                vec![
                    ("10.0.0.0/24", 10),
                    ("10.0.1.0/24", 5),
                    ("10.0.2.0/24", 3),
                    ("10.0.3.0/24", 2),
                ],
                false,
            ),
            (
                "largest and third",
                vec![sample(0, "10.0.0.9", 2, 1), sample(0, "10.0.2.9", 3, 4)],
                0.65,
                vec![("10.0.1.0/24", 5), ("10.0.3.0/24", 2)],
                false,
            ),
            (
                "an old-generation answer is not a re-fetch",
                vec![sample(0, "10.0.0.9", 1, 1)],
                0.0,
                vec![
                    ("10.0.0.0/24", 11),
                    ("10.0.1.0/24", 5),
                    ("10.0.2.0/24", 3),
                    ("10.0.3.0/24", 2),
                ],
                false,
            ),
            (
                "a newcomer changes nothing",
                vec![sample(0, "172.16.0.1", 2, 50), sample(0, "10.0.1.1", 2, 1)],
                0.25,
                vec![("10.0.0.0/24", 10), ("10.0.2.0/24", 3), ("10.0.3.0/24", 2)],
                false,
            ),
            (
                "everyone back",
                vec![
                    sample(0, "10.0.0.1", 2, 1),
                    sample(0, "10.0.1.1", 2, 1),
                    sample(0, "10.0.2.1", 2, 1),
                    sample(0, "10.0.3.1", 2, 1),
                ],
                1.0,
                vec![],
                true,
            ),
        ];
        for (what, samples, share, silent, converged) in cases {
            let mut t = changed();
            t.apply(&mut samples.clone(), 101_000);
            for _ in 0..GRACE_TICKS {
                t.settle(101_000);
            }
            let r = report(&t);
            assert!(
                (r.refetched - share).abs() < 1e-9,
                "{what}: {}",
                r.refetched
            );
            let got: Vec<(String, u64)> = r
                .silent
                .iter()
                .map(|s| (s.prefix.clone(), s.queries))
                .collect();
            let want: Vec<(String, u64)> =
                silent.iter().map(|(p, q)| (p.to_string(), *q)).collect();
            assert_eq!(got, want, "{what}");
            assert_eq!(r.converged_after_ms.is_some(), converged, "{what}");
            assert_eq!(r.changed_at_ms, 100_000);
            assert_eq!(r.generation, 2);
            assert_eq!(r.window_ms, 60_000);
        }
    }

    #[test]
    fn convergence_time_is_when_the_last_needed_resolver_came_back() {
        let mut t = changed();
        t.apply(
            &mut [sample(0, "10.0.0.1", 2, 1), sample(0, "10.0.1.1", 2, 1)],
            101_000,
        );
        t.settle(101_000);
        t.settle(101_200);
        assert_eq!(report(&t).converged_after_ms, None);
        t.apply(
            &mut [sample(0, "10.0.2.1", 2, 1), sample(0, "10.0.3.1", 2, 1)],
            104_500,
        );
        t.settle(104_500);
        let r = report(&t);
        assert_eq!(r.converged_after_ms, Some(4_500));
        assert_eq!(r.refetched, 1.0);
        assert_eq!(r.resolvers_refetched, 4);
        // It stays what it was.
        t.settle(120_000);
        assert_eq!(report(&t).converged_after_ms, Some(4_500));
    }

    #[test]
    fn late_samples_from_before_the_change_join_the_before_set() {
        let mut t = changed();
        // Drained after the change was seen, answered by generation 1: before the change.
        t.apply(&mut [sample(0, "192.0.2.1", 1, 20)], 100_200);
        t.settle(100_200);
        t.settle(100_400);
        let r = report(&t);
        assert_eq!(r.resolvers_before, 5);
        assert_eq!(r.queries_before, 40);
        assert_eq!(
            r.silent[0],
            Silent {
                prefix: "192.0.2.0/24".into(),
                queries: 20
            }
        );
        assert_eq!(r.converged_after_ms, None);
    }

    #[test]
    fn one_drain_with_both_sides_of_a_change() {
        let mut t = Tracker::default();
        t.observe(&observed(1, 0, &[("app.example.com", 7, 30)]));
        // The change is seen before anything was drained; then one drain brings the TCP
        // table's re-fetch ahead of the UDP table's earlier queries.
        t.observe(&observed(2, 1_000, &[("app.example.com", 8, 30)]));
        t.apply(
            &mut [
                sample(0, "10.0.0.1", 2, 1),
                sample(0, "10.0.0.1", 1, 3),
                sample(0, "10.0.1.1", 1, 1),
            ],
            1_200,
        );
        t.settle(1_200);
        t.settle(1_400);
        let r = report(&t);
        assert_eq!(
            (r.resolvers_before, r.resolvers_refetched, r.queries_before),
            (2, 1, 4)
        );
        assert_eq!(r.refetched, 0.75);
    }

    #[test]
    fn nobody_before_means_converged_at_once() {
        let mut t = Tracker::default();
        t.observe(&observed(1, 0, &[("app.example.com", 7, 30)]));
        t.observe(&observed(2, 5_000, &[("app.example.com", 8, 30)]));
        t.settle(5_000);
        assert_eq!(
            report(&t).converged_after_ms,
            None,
            "not during the grace ticks"
        );
        t.settle(5_200);
        let r = report(&t);
        assert_eq!(
            (r.refetched, r.resolvers_before, r.converged_after_ms),
            (1.0, 0, Some(0))
        );
    }

    #[test]
    fn the_window_is_twice_the_ttl_and_forgets_older_resolvers() {
        let mut t = Tracker::default();
        t.observe(&observed(1, 0, &[("app.example.com", 7, 10)]));
        t.apply(&mut [sample(0, "10.0.0.1", 1, 4)], 10_000);
        t.apply(&mut [sample(0, "10.0.1.1", 1, 4)], 35_000);
        // 20 s window at 40 s: the first resolver (10 s) is out.
        t.observe(&observed(2, 40_000, &[("app.example.com", 8, 10)]));
        let r = report(&t);
        assert_eq!(r.window_ms, 20_000);
        assert_eq!(r.resolvers_before, 1);
        assert_eq!(r.silent[0].prefix, "10.0.1.0/24");
        assert_eq!(window_of(0), MIN_WINDOW_MS);
        assert_eq!(window_of(86_400), MAX_WINDOW_MS);
    }

    #[test]
    fn a_new_change_restarts_and_reindexed_pools_keep_their_samples() {
        let mut t = changed();
        t.apply(&mut [sample(0, "10.0.0.1", 2, 1)], 101_000);
        // A reload puts another pool first and changes app again.
        t.observe(&observed(
            3,
            102_000,
            &[("other.example.com", 1, 30), ("app.example.com", 9, 30)],
        ));
        // Index 0 of generation 2 is still app; index 1 of generation 3 too.
        t.apply(
            &mut [sample(0, "10.0.1.1", 2, 1), sample(1, "10.0.0.1", 3, 1)],
            102_200,
        );
        t.settle(102_200);
        let r = report(&t);
        assert_eq!(r.generation, 3);
        assert_eq!(r.changed_at_ms, 102_000);
        // Before the second change: 10.0.0.x (11) and 10.0.1.x (6 = 5 + 1 late) and the rest.
        assert!(r.resolvers_before >= 2, "{r:?}");
        assert!(!r.silent.iter().any(|s| s.prefix == "10.0.0.0/24"), "{r:?}");
        assert!(!t.report().contains_key(&name("other.example.com")));
        // A pool dropped by a reload is forgotten.
        let gone = t.observe(&observed(4, 103_000, &[("other.example.com", 1, 30)]));
        assert_eq!(gone, vec![name("app.example.com")]);
        assert!(t.report().is_empty());
    }

    #[test]
    fn windows_stay_bounded() {
        let mut t = Tracker::default();
        t.observe(&observed(1, 0, &[("app.example.com", 7, 30)]));
        let samples: Vec<Sample> = (0..WINDOW_CAP + 500)
            .map(|i| {
                sample(
                    0,
                    &format!("10.{}.{}.1", i >> 8, i & 255),
                    1,
                    1 + (i % 3) as u64,
                )
            })
            .collect();
        t.apply(&mut samples.clone(), 1_000);
        for k in 1..=PRUNE_EVERY {
            t.settle(1_000 + u64::from(k));
        }
        let pool = t.pools.get(&name("app.example.com")).unwrap();
        assert_eq!(pool.window.len(), WINDOW_CAP);
        t.observe(&observed(2, 2_000, &[("app.example.com", 8, 30)]));
        assert_eq!(report(&t).resolvers_before, BEFORE_CAP);
        // The largest were kept.
        assert!(report(&t).silent.iter().all(|s| s.queries == 3));
    }

    #[test]
    fn sliding_window_volume() {
        let mut s = Seen::default();
        s.add(6, 1_000, 10_000);
        assert_eq!(s.volume(5_000), 6.0);
        s.add(4, 12_000, 10_000);
        // At 15 s: all of the current bucket, half of the previous one.
        assert_eq!(s.volume(15_000), 4.0 + 3.0);
        assert_eq!(s.volume(25_000), 2.0);
        assert_eq!(s.volume(35_000), 0.0);
    }

    #[test]
    fn convergence_off_reads_nothing() {
        let c = Convergence::off();
        assert!(!c.is_on());
        assert_eq!(c.pool(&name("app.example.com")), None);
        assert_eq!(c.since(&name("app.example.com"), 0), None);
    }

    #[test]
    fn readers_filter_by_change_time() {
        let t = changed();
        let c = Convergence {
            report: Some(Arc::new(ArcSwap::from_pointee(t.report()))),
        };
        let app = name("app.example.com");
        assert_eq!(c.pool(&app).map(|p| p.changed_at_ms), Some(100_000));
        assert!(c.since(&app, 100_000).is_some());
        assert!(
            c.since(&app, 100_001).is_none(),
            "an older change is not the step's"
        );
        let p = c.pool(&app).unwrap();
        assert!(!p.reached(0.99) && p.reached(0.0));
    }
}
