//! Every metric weir exports, on weir's own Prometheus registry, made family by family (DNS,
//! zones, health, reloads, pools, rollouts, convergence, store; the per-endpoint series in
//! `fleet`). Label values are resolved once at start-up into plain counter handles, so the query
//! path only does an atomic add.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::{DropReason, Health, Name, PoolId, Rcode};

mod fleet;
pub use fleet::AnswerCounter;

/// The fleet's series, registered through an `Arc` so that `Metrics` keeps its handle.
#[derive(Clone)]
struct SharedFleet(Arc<fleet::Fleet>);

impl prometheus::core::Collector for SharedFleet {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// The label value ("udp", "tcp").
    pub fn name(self) -> &'static str {
        TRANSPORTS[transport_index(self)].1
    }
}

const TRANSPORTS: [(Transport, &str); 2] = [(Transport::Udp, "udp"), (Transport::Tcp, "tcp")];
const RCODES: [(Rcode, &str); 13] = [
    (Rcode::NoError, "NOERROR"),
    (Rcode::FormErr, "FORMERR"),
    (Rcode::ServFail, "SERVFAIL"),
    (Rcode::NxDomain, "NXDOMAIN"),
    (Rcode::NotImp, "NOTIMP"),
    (Rcode::Refused, "REFUSED"),
    (Rcode::YxDomain, "YXDOMAIN"),
    (Rcode::YxRrset, "YXRRSET"),
    (Rcode::NxRrset, "NXRRSET"),
    (Rcode::NotAuth, "NOTAUTH"),
    (Rcode::NotZone, "NOTZONE"),
    (Rcode::BadVers, "BADVERS"),
    (Rcode::BadCookie, "BADCOOKIE"),
];
const DROP_REASONS: [(DropReason, &str); 2] = [
    (DropReason::Short, "short"),
    (DropReason::Response, "qr_set"),
];

fn rcode_index(rcode: Rcode) -> usize {
    RCODES.iter().position(|(r, _)| *r == rcode).unwrap_or(0)
}

/// The label value of an RCODE ("NOERROR", "NXDOMAIN", ...).
pub fn rcode_name(rcode: Rcode) -> &'static str {
    RCODES[rcode_index(rcode)].1
}

/// The label value of a QTYPE weir counts by name ("A", "MX", ...); None for the others.
pub fn qtype_name(qtype: u16) -> Option<&'static str> {
    COUNTED_QTYPES
        .iter()
        .find(|(code, _)| *code == qtype)
        .map(|(_, name)| *name)
}

/// The `zone` label of queries no zone answered: outside every zone, or rejected before the
/// lookup.
pub const NO_ZONE: &str = "none";

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    }
}

/// The `class` label values of the rate-limiting counters, in `dns::rrl::Class` order.
pub const RRL_CLASSES: [&str; 6] = [
    "answer", "wildcard", "nxdomain", "nodata", "referral", "error",
];
/// The `result` label values of `weir_dns_cookies_total`, in `dns::cookie::Verdict` order.
pub const COOKIE_RESULTS: [&str; 3] = ["client_only", "invalid", "valid"];

/// Seconds since the Unix epoch, now, to the millisecond.
fn unix_now() -> f64 {
    crate::clock::wall_ms() as f64 / 1000.0
}

/// QTYPEs counted under their own label; others count as "other" so labels stay bounded.
const COUNTED_QTYPES: [(u16, &str); 14] = [
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (43, "DS"),
    (48, "DNSKEY"),
    (65, "HTTPS"),
    (252, "AXFR"),
    (255, "ANY"),
];

/// Decrements the open-connections gauge when a TCP connection ends.
#[derive(Debug)]
pub struct OpenConnection<'m>(&'m IntGauge);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    dns: DnsMetrics,
    zones: ZoneMetrics,
    routes: RouteMetrics,
    health: HealthMetrics,
    reload: ReloadMetrics,
    pools: PoolMetrics,
    /// Every per-endpoint and per-target series.
    fleet: Arc<fleet::Fleet>,
    store: StoreMetrics,
    rollout: RolloutMetrics,
    convergence: ConvergenceMetrics,
    admin_requests: IntCounterVec,
    query_log_dropped: IntCounter,
    notify: IntCounterVec,
    updates: IntCounterVec,
    dnssec: DnssecMetrics,
    xdp: XdpMetrics,
}

/// The AF_XDP path (`[[dns.xdp]]`), per interface: frames answered, and frames taken that
/// were not answered, by reason.
#[derive(Debug)]
struct XdpMetrics {
    queries: IntCounterVec,
    dropped: IntCounterVec,
    queues: IntGaugeVec,
}

/// One XDP worker's counters, resolved once (counting is an atomic add): answered, and
/// `weir_xdp_dropped_total` by reason.
#[derive(Clone, Debug)]
pub struct XdpCounters {
    pub answered: IntCounter,
    /// A frame `dns::frame` refused.
    pub frame: IntCounter,
    /// A query `respond` dropped, as the socket path would (malformed, rate limited).
    pub query: IntCounter,
    /// A reply that did not fit a frame.
    pub reply: IntCounter,
    /// The kernel's own drops on the socket (RX ring full, no free frame).
    pub kernel: IntCounter,
}

/// Signed zones: when their signatures expire, and what the query path signed.
#[derive(Debug)]
struct DnssecMetrics {
    expires: IntGaugeVec,
    /// The zone labels exported, so a reload can remove dropped zones' series.
    labels: Mutex<HashSet<String>>,
    on_demand: IntCounter,
}

impl Metrics {
    #[allow(
        clippy::expect_used,
        reason = "metric names are constants; a bad one is a bug caught by every test"
    )]
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("weir".into()), None).expect("registry");
        let r = Registrar(&registry);
        let fleet = r.add(SharedFleet(Arc::new(fleet::Fleet::new()))).0;
        Metrics {
            dns: DnsMetrics::new(&r),
            zones: ZoneMetrics::new(&r),
            routes: RouteMetrics::new(&r),
            health: HealthMetrics::new(&r),
            reload: ReloadMetrics::new(&r),
            pools: PoolMetrics::new(&r),
            fleet,
            store: StoreMetrics::new(&r),
            rollout: RolloutMetrics::new(&r),
            convergence: ConvergenceMetrics::new(&r),
            admin_requests: r.counter_vec(
                "admin_requests_total",
                "Admin API requests, by route and status",
                &["route", "status"],
            ),
            query_log_dropped: r.counter(
                "query_log_dropped_total",
                "Sampled query log records dropped because the log's queue was full",
            ),
            notify: r.counter_vec(
                "notify_total",
                "NOTIFY messages to secondaries, by zone and result (acked: answered NOERROR; failed: refused or unanswered after every retry)",
                &["zone", "result"],
            ),
            updates: r.counter_vec(
                "dns_updates_total",
                "RFC 2136 UPDATE messages answered, by RCODE (NOERROR: applied or unchanged; NOTAUTH: unsigned, a bad signature or a zone not served; REFUSED: not granted or would break the zone), or dropped unanswered (UDP queue full)",
                &["rcode"],
            ),
            xdp: XdpMetrics {
                queries: r.counter_vec(
                    "xdp_queries_total",
                    "DNS queries answered through AF_XDP ([[dns.xdp]]), by interface; these are also in weir_dns_responses_total{transport=\"udp\"}",
                    &["interface"],
                ),
                dropped: r.counter_vec(
                    "xdp_dropped_total",
                    "Frames the XDP program handed to weir that got no answer, by interface and reason (frame: not a well-formed UDP datagram to a listen address; query: dropped as on sockets, malformed or rate limited; reply: larger than a frame; kernel: dropped by the kernel before weir saw them, RX ring full or no free frame)",
                    &["interface", "reason"],
                ),
                queues: r.gauge_vec(
                    "xdp_queues",
                    "Receive queues served through AF_XDP, by interface, attach mode (native: in the driver; generic: after it, slower) and zero_copy (true: the driver hands frames to weir without a copy; false: copy mode)",
                    &["interface", "mode", "zero_copy"],
                ),
            },
            dnssec: DnssecMetrics {
                expires: r.gauge_vec(
                    "dnssec_signatures_expire_timestamp_seconds",
                    "When the signatures a signed zone serves expire (Unix seconds); weir signs again well before (signature_refresh), so alert when this comes within days",
                    &["zone"],
                ),
                labels: Mutex::new(HashSet::new()),
                on_demand: r.counter(
                    "dnssec_signed_on_demand_total",
                    "Sets the query path signed because no cache held them: compact denials of new names, NSECs, managed answers of several addresses first seen (a random-subdomain flood shows here)",
                ),
            },
            registry,
        }
    }

    /// The signatures' expiration of each signed zone (origin, Unix seconds); series of zones
    /// not listed (unsigned, or dropped by a reload) are removed. Once per zone index.
    pub fn dnssec_expiry(&self, zones: &[(Name, u64)]) {
        let labels: HashSet<String> = zones.iter().map(|(z, _)| z.to_string()).collect();
        let mut exported = (self.dnssec.labels.lock()).unwrap_or_else(PoisonError::into_inner);
        for gone in exported.difference(&labels) {
            let _ = self.dnssec.expires.remove_label_values(&[gone]);
        }
        for (zone, at) in zones {
            let at = i64::try_from(*at).unwrap_or(i64::MAX);
            self.dnssec
                .expires
                .with_label_values(&[&zone.to_string()])
                .set(at);
        }
        *exported = labels;
    }

    /// A UDP response over its rate limit, of class `class` (`RRL_CLASSES` index).
    #[inline]
    pub fn rrl_limited(&self, class: usize, slipped: bool) {
        if let Some(c) = self.dns.rrl_limited.get(class) {
            c.inc();
        }
        if slipped && let Some(c) = self.dns.rrl_slipped.get(class) {
            c.inc();
        }
    }

    /// A query's COOKIE option judged `result` (`COOKIE_RESULTS` index).
    #[inline]
    pub fn cookie(&self, result: usize) {
        if let Some(c) = self.dns.cookies.get(result) {
            c.inc();
        }
    }

    /// The queries counter of each zone in `origins` (same order), resolved once per zone index
    /// so the query path only increments it. Series of zones not in `origins` (dropped by a
    /// reload) are removed; `zone="none"` stays.
    pub fn zone_queries(&self, origins: &[Name]) -> Vec<IntCounter> {
        let labels: HashSet<String> = origins.iter().map(ToString::to_string).collect();
        let mut exported = self
            .zones
            .labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for gone in exported.difference(&labels) {
            let _ = self.zones.queries.remove_label_values(&[gone]);
        }
        let counters = origins
            .iter()
            .map(|o| self.zones.queries.with_label_values(&[&o.to_string()]))
            .collect();
        *exported = labels;
        counters
    }

    /// The queries counter of each rule of each routed name: `routes[r][i]` is rule `i` of route
    /// `r`, selecting pool `routes[r][i].1`. Resolved once per load so the query path only
    /// increments; series of rules a reload dropped are removed.
    pub fn route_queries(&self, routes: &[(&Name, Vec<&PoolId>)]) -> Vec<Vec<IntCounter>> {
        let labels: HashSet<[String; 3]> = routes
            .iter()
            .flat_map(|(name, pools)| {
                pools
                    .iter()
                    .enumerate()
                    .map(move |(i, pool)| [name.to_string(), (i + 1).to_string(), pool.to_string()])
            })
            .collect();
        let mut exported = self
            .routes
            .labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for gone in exported.difference(&labels) {
            let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
            let _ = self.routes.queries.remove_label_values(&gone);
        }
        let counters = routes
            .iter()
            .map(|(name, pools)| {
                let name = name.to_string();
                (pools.iter().enumerate())
                    .map(|(i, pool)| {
                        let rule = (i + 1).to_string();
                        (self.routes.queries).with_label_values(&[&name, &rule, &pool.to_string()])
                    })
                    .collect()
            })
            .collect();
        *exported = labels;
        counters
    }

    /// The queries counter of `zone="none"`.
    pub fn outside_zones(&self) -> &IntCounter {
        &self.zones.none
    }

    /// The counters of one XDP worker on `interface`.
    pub fn xdp(&self, interface: &str) -> XdpCounters {
        let dropped = |reason: &str| self.xdp.dropped.with_label_values(&[interface, reason]);
        XdpCounters {
            answered: self.xdp.queries.with_label_values(&[interface]),
            frame: dropped("frame"),
            query: dropped("query"),
            reply: dropped("reply"),
            kernel: dropped("kernel"),
        }
    }

    /// `interface` is taken over: `queues` receive queues, attached in `mode`, zero-copy or not.
    pub fn xdp_attached(&self, interface: &str, mode: &str, zero_copy: bool, queues: usize) {
        let zero_copy = if zero_copy { "true" } else { "false" };
        self.xdp
            .queues
            .with_label_values(&[interface, mode, zero_copy])
            .set(queues as i64);
    }

    /// An UPDATE was answered with `rcode`.
    pub fn update(&self, rcode: Rcode) {
        self.updates.with_label_values(&[rcode_name(rcode)]).inc();
    }

    /// An UPDATE datagram was dropped unanswered: its queue was full.
    pub fn update_dropped(&self) {
        self.updates.with_label_values(&["dropped"]).inc();
    }

    /// A NOTIFY for `zone` was acknowledged, or failed for good.
    pub fn notify(&self, zone: &str, acked: bool) {
        let result = if acked { "acked" } else { "failed" };
        self.notify.with_label_values(&[zone, result]).inc();
    }

    /// A sampled query log record was dropped (queue full).
    pub fn query_log_dropped(&self) {
        self.query_log_dropped.inc();
    }

    /// `n` convergence records found their worker's table full (or the pool untracked).
    pub fn convergence_dropped(&self, n: u64) {
        self.convergence.dropped.inc_by(n);
    }

    /// A pool's re-fetched share since its last change, and how long its last completed
    /// convergence took (None: not converged yet).
    pub fn pool_convergence(&self, pool: &str, refetched: f64, converged_seconds: Option<f64>) {
        self.convergence
            .refetched
            .with_label_values(&[pool])
            .set(refetched);
        if let Some(seconds) = converged_seconds {
            self.convergence
                .seconds
                .with_label_values(&[pool])
                .set(seconds);
        }
    }

    /// A pool is no longer served (reload): its convergence series go.
    pub fn forget_pool_convergence(&self, pool: &str) {
        let _ = self.convergence.refetched.remove_label_values(&[pool]);
        let _ = self.convergence.seconds.remove_label_values(&[pool]);
    }

    /// One admin request on `route` (the matched pattern, or "unmatched") answered `status`.
    pub fn admin_request(&self, route: &str, status: u16) {
        self.admin_requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
    }

    /// A pool's rollout as published: weight, step and state.
    pub fn rollout(&self, pool: &str, weight: u32, step: usize, state: &str) {
        self.rollout
            .weight
            .with_label_values(&[pool])
            .set(i64::from(weight));
        self.rollout
            .step
            .with_label_values(&[pool])
            .set(step as i64);
        for s in [
            "running",
            "waiting for promote",
            "paused",
            "done",
            "aborted",
        ] {
            self.rollout
                .state
                .with_label_values(&[pool, s])
                .set(i64::from(s == state));
        }
    }

    /// A rollout aborted; `cause` is "health", "metric", "webhook" or "operator".
    pub fn rollout_aborted(&self, pool: &str, cause: &str) {
        self.rollout.aborts.with_label_values(&[pool, cause]).inc();
    }

    /// Answers counted so far for `endpoints` of one pool group.
    pub fn group_answers(&self, pool: &str, group: &str, endpoints: &[String]) -> u64 {
        endpoints
            .iter()
            .map(|e| self.fleet.answered_so_far(pool, group, e))
            .sum()
    }

    /// A group's intended share, and its observed share when the window saw answers.
    pub fn group_share(&self, pool: &str, group: &str, intended: f64, observed: Option<f64>) {
        self.pools
            .group_share
            .with_label_values(&[pool, group, "intended"])
            .set(intended);
        if let Some(observed) = observed {
            self.pools
                .group_share
                .with_label_values(&[pool, group, "observed"])
                .set(observed);
        }
    }

    /// The intent generation this node serves (comparable across nodes sharing a store).
    pub fn applied_generation(&self, generation: u64) {
        self.store.applied.set(generation as i64);
    }

    /// The link to a shared store: connected or not, and for how long this node's state may
    /// have been stale (seconds since a quorum last answered; 0 while connected).
    pub fn store_link(&self, connected: bool, staleness_seconds: f64) {
        self.store.connected.set(i64::from(connected));
        self.store.staleness.set(staleness_seconds);
    }

    /// Whether the state store can take a change (`weir_store_healthy`).
    pub fn store_healthy(&self, healthy: bool) {
        self.store.healthy.set(i64::from(healthy));
    }

    /// One store commit took `seconds`.
    pub fn store_commit(&self, seconds: f64, ok: bool) {
        self.store
            .commit
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .observe(seconds);
    }

    /// One parsed query of type `qtype`.
    pub fn query(&self, qtype: u16) {
        match self.dns.queries.iter().find(|(code, _)| *code == qtype) {
            Some((_, counter)) => counter.inc(),
            None => self.dns.queries_other.inc(),
        }
    }

    /// Drops the series of a probe target that no longer exists (after a reload removed it).
    pub fn forget_probe(&self, target: &str) {
        self.fleet.forget_target(target);
    }

    /// The answers counter of one endpoint, resolved once per snapshot build so the query path
    /// only increments it.
    pub fn endpoint_answers(&self, pool: &str, group: &str, endpoint: &str) -> AnswerCounter {
        self.fleet.answers(pool, group, endpoint)
    }

    pub fn endpoint_health(&self, pool: &str, group: &str, endpoint: &str, up: bool) {
        self.fleet.endpoint_up(pool, group, endpoint, up);
    }

    pub fn pool_degraded(&self, pool: &str, family: &str, degraded: bool) {
        let gauge = self.pools.degraded.with_label_values(&[pool, family]);
        if (gauge.get() == 1) != degraded {
            if degraded {
                tracing::warn!(pool, family, "pool degraded: on_all_down applies");
            } else if gauge.get() == 1 {
                tracing::info!(pool, family, "pool recovered");
            }
        }
        gauge.set(i64::from(degraded));
    }

    pub fn answered(&self, transport: Transport, rcode: Rcode, truncated: bool) {
        let t = transport_index(transport);
        self.dns.responses[t][rcode_index(rcode)].inc();
        if truncated {
            self.dns.truncated[t].inc();
        }
    }

    pub fn dropped(&self, reason: DropReason) {
        let i = DROP_REASONS
            .iter()
            .position(|(r, _)| *r == reason)
            .unwrap_or(0);
        self.dns.dropped[i].inc();
    }

    pub fn send_failed(&self, transport: Transport) {
        self.dns.send_failed[transport_index(transport)].inc();
    }

    pub fn tcp_open(&self) -> OpenConnection<'_> {
        self.dns.tcp_open.inc();
        OpenConnection(&self.dns.tcp_open)
    }

    pub fn tcp_refused(&self) {
        self.dns.tcp_refused.inc();
    }

    /// A batch of health flips was published: its size, its build time, and each flip's wait.
    pub fn health_batch(
        &self,
        flips: usize,
        took: std::time::Duration,
        arrived: &[tokio::time::Instant],
    ) {
        self.health.batch_flips.observe(flips as f64);
        self.health.batch_seconds.observe(took.as_secs_f64());
        let now = tokio::time::Instant::now();
        for at in arrived {
            self.health
                .flip_publish_seconds
                .observe(now.saturating_duration_since(*at).as_secs_f64());
        }
    }

    pub fn published(&self, generation: u64) {
        self.reload.snapshot_generation.set(generation as i64);
    }

    /// A reload finished: counted by result, and the last result and its time are set.
    pub fn reloaded(&self, ok: bool) {
        self.reload
            .reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
        self.reload.last_success.set(i64::from(ok));
        self.reload.last_timestamp.set(unix_now());
    }

    /// A probe kind's duration series, resolved once by the probe scheduler so that a probe
    /// does no label lookup when it succeeds.
    pub fn probe_series(&self, kind: &str) -> ProbeSeries {
        ProbeSeries {
            duration: self.health.probe_duration.with_label_values(&[kind]),
        }
    }

    /// A failed probe of `target` ("ip:port"), by a short reason label such as "timeout",
    /// "connect", "status", "body", "tls".
    pub fn probe_failed(&self, target: &str, reason: &'static str) {
        self.fleet.probe_failed(target, reason);
    }

    /// A probe target's health, set at its first result and on every flip.
    pub fn probe_health(&self, target: &str, kind: &'static str, health: Health) {
        self.fleet.probe_up(target, kind, health == Health::Up);
    }

    /// A health flip after hysteresis.
    pub fn health_transition(&self, target: &str, to: Health) {
        let to = match to {
            Health::Up => "up",
            Health::Down => "down",
        };
        self.fleet.transition(target, to);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let signed = crate::dnssec::signed_on_demand();
        let counted = self.dnssec.on_demand.get();
        self.dnssec.on_demand.inc_by(signed.saturating_sub(counted));
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Makes each metric and registers it on weir's registry (which adds the `weir_` prefix).
struct Registrar<'r>(&'r Registry);

#[allow(
    clippy::expect_used,
    reason = "metric names are constants; a bad one is a bug caught by every test"
)]
impl Registrar<'_> {
    /// Registers `metric` and hands it back (a handle shares the registered series).
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        self.0
            .register(Box::new(metric.clone()))
            .expect("unique metric");
        metric
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("metric"))
    }

    /// A counter per value of one label, resolved here so that counting is an atomic add.
    fn counters<const N: usize>(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: [&str; N],
    ) -> [IntCounter; N] {
        let family = self.counter_vec(name, help, &[label]);
        values.map(|value| family.with_label_values(&[value]))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("metric"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("metric"))
    }

    fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help).expect("metric"))
    }

    fn float_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels).expect("metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts).expect("metric"))
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("metric"))
    }
}

/// What the DNS listeners count: responses by transport and RCODE, drops, TCP connections,
/// queries by QTYPE, rate limiting and cookies. Label values are resolved here, once.
#[derive(Debug)]
struct DnsMetrics {
    responses: Vec<[IntCounter; RCODES.len()]>,
    truncated: [IntCounter; 2],
    dropped: [IntCounter; 2],
    send_failed: [IntCounter; 2],
    tcp_open: IntGauge,
    tcp_refused: IntCounter,
    /// Queries by QTYPE: the common types by name, everything else as "other".
    queries: Vec<(u16, IntCounter)>,
    queries_other: IntCounter,
    /// Rate-limited UDP responses by class (`RRL_CLASSES` order), all and slipped.
    rrl_limited: [IntCounter; RRL_CLASSES.len()],
    rrl_slipped: [IntCounter; RRL_CLASSES.len()],
    /// Queries with a COOKIE option by verdict (`COOKIE_RESULTS` order).
    cookies: [IntCounter; COOKIE_RESULTS.len()],
}

impl DnsMetrics {
    fn new(r: &Registrar<'_>) -> Self {
        let transports = TRANSPORTS.map(|(_, t)| t);
        let responses = r.counter_vec(
            "dns_responses_total",
            "DNS responses sent, by transport and RCODE",
            &["transport", "rcode"],
        );
        let queries = r.counter_vec(
            "dns_queries_total",
            "Parsed queries, by QTYPE (uncommon types as \"other\")",
            &["qtype"],
        );
        DnsMetrics {
            responses: transports
                .iter()
                .map(|t| RCODES.map(|(_, rc)| responses.with_label_values(&[*t, rc])))
                .collect(),
            truncated: r.counters(
                "dns_truncated_total",
                "Responses sent with TC=1, by transport",
                "transport",
                transports,
            ),
            dropped: r.counters(
                "dns_dropped_total",
                "Packets dropped without an answer, by reason",
                "reason",
                DROP_REASONS.map(|(_, reason)| reason),
            ),
            send_failed: r.counters(
                "dns_send_failed_total",
                "Responses that could not be sent",
                "transport",
                transports,
            ),
            tcp_open: r.gauge("dns_tcp_connections_open", "Open TCP connections"),
            tcp_refused: r.counter(
                "dns_tcp_connections_refused_total",
                "TCP connections closed at once because the connection cap was reached",
            ),
            queries: COUNTED_QTYPES
                .iter()
                .map(|(code, name)| (*code, queries.with_label_values(&[name])))
                .collect(),
            queries_other: queries.with_label_values(&["other"]),
            rrl_limited: r.counters(
                "dns_rrl_limited_total",
                "UDP responses over their rate limit (dropped or slipped), by response class",
                "class",
                RRL_CLASSES,
            ),
            rrl_slipped: r.counters(
                "dns_rrl_slipped_total",
                "Rate-limited UDP responses sent as a minimal TC=1 (or BADCOOKIE) reply, by class",
                "class",
                RRL_CLASSES,
            ),
            cookies: r.counters(
                "dns_cookies_total",
                "Queries with a DNS COOKIE option, by what it proved (client_only, invalid, valid)",
                "result",
                COOKIE_RESULTS,
            ),
        }
    }
}

/// Answered queries by the zone their name falls in.
#[derive(Debug)]
struct ZoneMetrics {
    queries: IntCounterVec,
    /// `queries{zone="none"}`, resolved once.
    none: IntCounter,
    /// The zone labels currently exported, so a reload can remove the series of dropped zones.
    labels: Mutex<HashSet<String>>,
}

impl ZoneMetrics {
    fn new(r: &Registrar<'_>) -> Self {
        let queries = r.counter_vec(
            "dns_zone_queries_total",
            "Answered queries by the zone that answered them; zone=\"none\" for names outside every zone, classes other than IN, and queries rejected before the lookup (FORMERR, NOTIMP, BADVERS)",
            &["zone"],
        );
        ZoneMetrics {
            none: queries.with_label_values(&[NO_ZONE]),
            queries,
            labels: Mutex::new(HashSet::new()),
        }
    }
}

/// Queries of routed names by the rule that matched (rules are numbered from 1 in config
/// order) and the pool it selected.
#[derive(Debug)]
struct RouteMetrics {
    queries: IntCounterVec,
    /// The (name, rule, pool) label sets currently exported.
    labels: Mutex<HashSet<[String; 3]>>,
}

impl RouteMetrics {
    fn new(r: &Registrar<'_>) -> Self {
        RouteMetrics {
            queries: r.counter_vec(
                "route_queries_total",
                "A and AAAA queries of routed names, by the rule that matched (numbered from 1 in config order) and the pool it selected (before any fallback)",
                &["name", "rule", "pool"],
            ),
            labels: Mutex::new(HashSet::new()),
        }
    }
}

/// Health probes and the publication of health flips: flips per publication, the time to
/// rebuild and publish it, and the time from a flipping probe result to the publication that
/// serves it. (The per-target series are in `fleet`.)
#[derive(Debug)]
struct HealthMetrics {
    batch_flips: Histogram,
    batch_seconds: Histogram,
    flip_publish_seconds: Histogram,
    probe_duration: HistogramVec,
}

impl HealthMetrics {
    fn new(r: &Registrar<'_>) -> Self {
        HealthMetrics {
            batch_flips: r.histogram(
                "health_batch_flips",
                "Health flips applied together in one snapshot publication",
                &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0],
            ),
            batch_seconds: r.histogram(
                "health_batch_seconds",
                "Time to rebuild the pools a batch of health flips touches and publish",
                &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0],
            ),
            flip_publish_seconds: r.histogram(
                "health_flip_publish_seconds",
                "From the probe result that flips an endpoint to the snapshot that serves it",
                &[0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
            ),
            probe_duration: r.histogram_vec(
                "probe_duration_seconds",
                "Health probe duration, by kind (one histogram per target cost ~1 KiB of memory per target; a target's last duration is in the admin API)",
                &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                &["kind"],
            ),
        }
    }
}

/// The snapshot served and the loads that made it.
#[derive(Debug)]
struct ReloadMetrics {
    snapshot_generation: IntGauge,
    reloads: IntCounterVec,
    last_success: IntGauge,
    last_timestamp: Gauge,
}

impl ReloadMetrics {
    fn new(r: &Registrar<'_>) -> Self {
        let reloads = r.counter_vec(
            "reloads_total",
            "Config and zone reloads, by result",
            &["result"],
        );
        for result in ["ok", "failed"] {
            reloads.with_label_values(&[result]);
        }
        let last_success = r.gauge(
            "last_reload_success",
            "1 if the last config and zone load (start-up or reload) succeeded, 0 if it failed",
        );
        let last_timestamp = r.float_gauge(
            "last_reload_timestamp_seconds",
            "Unix time of the last config and zone load attempt (start-up or reload)",
        );
        // Metrics are made once the start-up load has succeeded (`app::start`): that load counts
        // as the first successful reload.
        last_success.set(1);
        last_timestamp.set(unix_now());
        ReloadMetrics {
            snapshot_generation: r.gauge(
                "snapshot_generation",
                "Generation of the snapshot being served",
            ),
            reloads,
            last_success,
            last_timestamp,
        }
    }
}

/// What a pool serves as a whole: degraded or not, and each group's share of the answers.
#[derive(Debug)]
struct PoolMetrics {
    degraded: IntGaugeVec,
    group_share: GaugeVec,
}

impl PoolMetrics {
    fn new(r: &Registrar<'_>) -> Self {
        PoolMetrics {
            degraded: r.gauge_vec(
                "pool_degraded",
                "1 while the pool's up weight is below min_healthy and on_all_down applies",
                &["pool", "family"],
            ),
            group_share: r.float_gauge_vec(
                "pool_group_share",
                "Share of a pool's answers per group: kind=\"intended\" from weights and health now, kind=\"observed\" over the last window",
                &["pool", "group", "kind"],
            ),
        }
    }
}

/// Each pool's rollout: where it stands, and why it aborted.
#[derive(Debug)]
struct RolloutMetrics {
    weight: IntGaugeVec,
    step: IntGaugeVec,
    state: IntGaugeVec,
    aborts: IntCounterVec,
}

impl RolloutMetrics {
    fn new(r: &Registrar<'_>) -> Self {
        RolloutMetrics {
            weight: r.gauge_vec(
                "rollout_weight",
                "A rollout's `to` share in percent (canary, blue-green)",
                &["pool"],
            ),
            step: r.gauge_vec(
                "rollout_step",
                "Index of a rollout's next step (or batch, for rolling updates)",
                &["pool"],
            ),
            state: r.gauge_vec(
                "rollout_state",
                "1 for the state a pool's rollout is in, 0 for the others",
                &["pool", "state"],
            ),
            aborts: r.counter_vec(
                "rollout_aborts_total",
                "Rollouts aborted, by pool and cause (health, metric, webhook, operator)",
                &["pool", "cause"],
            ),
        }
    }
}

/// Cache convergence (`convergence`): per pool, the re-fetched share since the last change
/// and the last completed convergence time; records the query path could not keep.
#[derive(Debug)]
struct ConvergenceMetrics {
    refetched: GaugeVec,
    seconds: GaugeVec,
    dropped: IntCounter,
}

impl ConvergenceMetrics {
    fn new(r: &Registrar<'_>) -> Self {
        ConvergenceMetrics {
            refetched: r.float_gauge_vec(
                "pool_refetched_ratio",
                "Share of the pool's queries (by volume in the window before its last change) from resolvers that have queried it again since the change; 1 when nobody had queried",
                &["pool"],
            ),
            seconds: r.float_gauge_vec(
                "pool_convergence_seconds",
                "Seconds from the pool's last completed change to 99% re-fetched",
                &["pool"],
            ),
            dropped: r.counter(
                "convergence_dropped_total",
                "Pool queries not counted for convergence because a worker's fixed-size table was full",
            ),
        }
    }
}

/// The state store as a whole (for several nameservers, the shared store): commit times and
/// its link and health gauges.
#[derive(Debug)]
struct StoreMetrics {
    commit: HistogramVec,
    applied: IntGauge,
    healthy: IntGauge,
    connected: IntGauge,
    staleness: Gauge,
}

impl StoreMetrics {
    fn new(r: &Registrar<'_>) -> Self {
        let commit = r.histogram_vec(
            "store_commit_seconds",
            "Time to store a change durably (flushed), by result",
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ],
            &["result"],
        );
        let applied = r.gauge(
            "store_applied_generation",
            "Intent generation this node serves; equal on every node once a change is INSYNC",
        );
        let connected = r.gauge(
            "store_connected",
            "1 while the state store answers (always 1 for the local sled store)",
        );
        let healthy = r.gauge(
            "store_healthy",
            "1 while the state store can take a change; 0 after a commit failed or while its disk is too full, until a check or commit succeeds",
        );
        let staleness = r.float_gauge(
            "store_staleness_seconds",
            "Seconds since the shared store last answered; 0 while connected",
        );
        connected.set(1);
        healthy.set(1);
        StoreMetrics {
            commit,
            applied,
            healthy,
            connected,
            staleness,
        }
    }
}

/// One probe kind's resolved duration series (`Metrics::probe_series`).
#[derive(Clone, Debug)]
pub struct ProbeSeries {
    duration: Histogram,
}

impl ProbeSeries {
    /// One probe took `seconds`.
    pub fn observe(&self, seconds: f64) {
        self.duration.observe(seconds);
    }
}
