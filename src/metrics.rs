//! Every metric weir exports, on weir's own Prometheus registry. Label values are resolved once
//! at start-up into plain counter handles, so the query path only does an atomic add.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::{DropReason, Health, Name, Rcode};

mod fleet;
pub use fleet::AnswerCounter;

/// The fleet's series, registered through an `Arc` so that `Metrics` keeps its handle.
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
const RCODES: [(Rcode, &str); 8] = [
    (Rcode::NoError, "NOERROR"),
    (Rcode::FormErr, "FORMERR"),
    (Rcode::ServFail, "SERVFAIL"),
    (Rcode::NxDomain, "NXDOMAIN"),
    (Rcode::NotImp, "NOTIMP"),
    (Rcode::Refused, "REFUSED"),
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

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    responses: Vec<[IntCounter; RCODES.len()]>,
    truncated: [IntCounter; 2],
    dropped: [IntCounter; 2],
    send_failed: [IntCounter; 2],
    tcp_open: IntGauge,
    tcp_refused: IntCounter,
    snapshot_generation: IntGauge,
    /// Health flips per publication, the time to rebuild and publish it, and the time from a
    /// flipping probe result to the publication that serves it.
    health_batch_flips: Histogram,
    health_batch_seconds: Histogram,
    flip_publish_seconds: Histogram,
    reloads: IntCounterVec,
    probe_duration: HistogramVec,
    /// Every per-endpoint and per-target series.
    fleet: Arc<fleet::Fleet>,
    pool_degraded: IntGaugeVec,
    /// Queries by QTYPE: the common types by name, everything else as "other".
    queries: Vec<(u16, IntCounter)>,
    queries_other: IntCounter,
    store_commit: HistogramVec,
    store: StoreGauges,
    group_share: GaugeVec,
    rollout_weight: IntGaugeVec,
    rollout_step: IntGaugeVec,
    rollout_state: IntGaugeVec,
    rollout_aborts: IntCounterVec,
    admin_requests: IntCounterVec,
    /// Answered queries by the zone their name falls in.
    zone_queries: IntCounterVec,
    /// `zone_queries{zone="none"}`, resolved once.
    zone_none: IntCounter,
    /// The zone labels currently exported, so a reload can remove the series of dropped zones.
    zone_labels: Mutex<HashSet<String>>,
    last_reload_success: IntGauge,
    last_reload_timestamp: Gauge,
    query_log_dropped: IntCounter,
    convergence: ConvergenceMetrics,
    /// Rate-limited UDP responses by class (`RRL_CLASSES` order), all and slipped.
    rrl_limited: [IntCounter; RRL_CLASSES.len()],
    rrl_slipped: [IntCounter; RRL_CLASSES.len()],
    /// Queries with a COOKIE option by verdict (`COOKIE_RESULTS` order).
    cookies: [IntCounter; COOKIE_RESULTS.len()],
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

impl Metrics {
    #[allow(
        clippy::expect_used,
        reason = "metric names are constants; a bad one is a bug caught by every test"
    )]
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("weir".into()), None).expect("registry");
        let register = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("unique metric");
        };
        let responses_vec = IntCounterVec::new(
            Opts::new(
                "dns_responses_total",
                "DNS responses sent, by transport and RCODE",
            ),
            &["transport", "rcode"],
        )
        .expect("metric");
        let truncated_vec = IntCounterVec::new(
            Opts::new(
                "dns_truncated_total",
                "Responses sent with TC=1, by transport",
            ),
            &["transport"],
        )
        .expect("metric");
        let dropped_vec = IntCounterVec::new(
            Opts::new(
                "dns_dropped_total",
                "Packets dropped without an answer, by reason",
            ),
            &["reason"],
        )
        .expect("metric");
        let send_failed_vec = IntCounterVec::new(
            Opts::new("dns_send_failed_total", "Responses that could not be sent"),
            &["transport"],
        )
        .expect("metric");
        let tcp_open =
            IntGauge::new("dns_tcp_connections_open", "Open TCP connections").expect("metric");
        let tcp_refused = IntCounter::new(
            "dns_tcp_connections_refused_total",
            "TCP connections closed at once because the connection cap was reached",
        )
        .expect("metric");
        let health_batch_flips = Histogram::with_opts(
            HistogramOpts::new(
                "health_batch_flips",
                "Health flips applied together in one snapshot publication",
            )
            .buckets(vec![1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0]),
        )
        .expect("metric");
        let health_batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "health_batch_seconds",
                "Time to rebuild the pools a batch of health flips touches and publish",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
            ]),
        )
        .expect("metric");
        let flip_publish_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "health_flip_publish_seconds",
                "From the probe result that flips an endpoint to the snapshot that serves it",
            )
            .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
        )
        .expect("metric");
        let snapshot_generation = IntGauge::new(
            "snapshot_generation",
            "Generation of the snapshot being served",
        )
        .expect("metric");
        let reloads = IntCounterVec::new(
            Opts::new("reloads_total", "Config and zone reloads, by result"),
            &["result"],
        )
        .expect("metric");

        let responses = TRANSPORTS
            .iter()
            .map(|(_, t)| RCODES.map(|(_, r)| responses_vec.with_label_values(&[*t, r])))
            .collect();
        let truncated = TRANSPORTS.map(|(_, t)| truncated_vec.with_label_values(&[t]));
        let dropped = DROP_REASONS.map(|(_, r)| dropped_vec.with_label_values(&[r]));
        let send_failed = TRANSPORTS.map(|(_, t)| send_failed_vec.with_label_values(&[t]));
        let probe_duration = HistogramVec::new(
            HistogramOpts::new(
                "probe_duration_seconds",
                "Health probe duration, by kind (one histogram per target cost ~1 KiB of memory per target; a target's last duration is in the admin API)",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["kind"],
        )
        .expect("metric");
        let pool_degraded = IntGaugeVec::new(
            Opts::new(
                "pool_degraded",
                "1 while the pool's up weight is below min_healthy and on_all_down applies",
            ),
            &["pool", "family"],
        )
        .expect("metric");
        let queries_vec = IntCounterVec::new(
            Opts::new(
                "dns_queries_total",
                "Parsed queries, by QTYPE (uncommon types as \"other\")",
            ),
            &["qtype"],
        )
        .expect("metric");
        let queries = COUNTED_QTYPES
            .iter()
            .map(|(code, name)| (*code, queries_vec.with_label_values(&[name])))
            .collect();
        let queries_other = queries_vec.with_label_values(&["other"]);
        let store_commit = HistogramVec::new(
            HistogramOpts::new(
                "store_commit_seconds",
                "Time to store a change durably (flushed), by result",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["result"],
        )
        .expect("metric");
        register(Box::new(store_commit.clone()));
        let store = StoreGauges::new(&registry);
        let group_share = GaugeVec::new(
            Opts::new(
                "pool_group_share",
                "Share of a pool's answers per group: kind=\"intended\" from weights and health now, kind=\"observed\" over the last window",
            ),
            &["pool", "group", "kind"],
        )
        .expect("metric");
        register(Box::new(group_share.clone()));
        let rollout_weight = IntGaugeVec::new(
            Opts::new(
                "rollout_weight",
                "A rollout's `to` share in percent (canary, blue-green)",
            ),
            &["pool"],
        )
        .expect("metric");
        let rollout_step = IntGaugeVec::new(
            Opts::new(
                "rollout_step",
                "Index of a rollout's next step (or batch, for rolling updates)",
            ),
            &["pool"],
        )
        .expect("metric");
        let rollout_state = IntGaugeVec::new(
            Opts::new(
                "rollout_state",
                "1 for the state a pool's rollout is in, 0 for the others",
            ),
            &["pool", "state"],
        )
        .expect("metric");
        let rollout_aborts = IntCounterVec::new(
            Opts::new(
                "rollout_aborts_total",
                "Rollouts aborted, by pool and cause (health, metric, webhook, operator)",
            ),
            &["pool", "cause"],
        )
        .expect("metric");
        register(Box::new(rollout_weight.clone()));
        register(Box::new(rollout_step.clone()));
        register(Box::new(rollout_state.clone()));
        register(Box::new(rollout_aborts.clone()));
        let admin_requests = IntCounterVec::new(
            Opts::new(
                "admin_requests_total",
                "Admin API requests, by route and status",
            ),
            &["route", "status"],
        )
        .expect("metric");
        register(Box::new(admin_requests.clone()));
        let zone_queries = IntCounterVec::new(
            Opts::new(
                "dns_zone_queries_total",
                "Answered queries by the zone that answered them; zone=\"none\" for names outside every zone, classes other than IN, and queries rejected before the lookup (FORMERR, NOTIMP, BADVERS)",
            ),
            &["zone"],
        )
        .expect("metric");
        let zone_none = zone_queries.with_label_values(&[NO_ZONE]);
        register(Box::new(zone_queries.clone()));
        let last_reload_success = IntGauge::new(
            "last_reload_success",
            "1 if the last config and zone load (start-up or reload) succeeded, 0 if it failed",
        )
        .expect("metric");
        let last_reload_timestamp = Gauge::new(
            "last_reload_timestamp_seconds",
            "Unix time of the last config and zone load attempt (start-up or reload)",
        )
        .expect("metric");
        // Metrics are made once the start-up load has succeeded (`app::start`): that load counts
        // as the first successful reload.
        last_reload_success.set(1);
        last_reload_timestamp.set(unix_now());
        register(Box::new(last_reload_success.clone()));
        register(Box::new(last_reload_timestamp.clone()));
        let query_log_dropped = IntCounter::new(
            "query_log_dropped_total",
            "Sampled query log records dropped because the log's queue was full",
        )
        .expect("metric");
        register(Box::new(query_log_dropped.clone()));
        let convergence = ConvergenceMetrics::new(&registry);
        let rrl_limited_vec = IntCounterVec::new(
            Opts::new(
                "dns_rrl_limited_total",
                "UDP responses over their rate limit (dropped or slipped), by response class",
            ),
            &["class"],
        )
        .expect("metric");
        let rrl_slipped_vec = IntCounterVec::new(
            Opts::new(
                "dns_rrl_slipped_total",
                "Rate-limited UDP responses sent as a minimal TC=1 (or BADCOOKIE) reply, by class",
            ),
            &["class"],
        )
        .expect("metric");
        let cookies_vec = IntCounterVec::new(
            Opts::new(
                "dns_cookies_total",
                "Queries with a DNS COOKIE option, by what it proved (client_only, invalid, valid)",
            ),
            &["result"],
        )
        .expect("metric");
        let rrl_limited = RRL_CLASSES.map(|c| rrl_limited_vec.with_label_values(&[c]));
        let rrl_slipped = RRL_CLASSES.map(|c| rrl_slipped_vec.with_label_values(&[c]));
        let cookies = COOKIE_RESULTS.map(|r| cookies_vec.with_label_values(&[r]));
        register(Box::new(rrl_limited_vec));
        register(Box::new(rrl_slipped_vec));
        register(Box::new(cookies_vec));
        register(Box::new(queries_vec));
        for result in ["ok", "failed"] {
            reloads.with_label_values(&[result]);
        }
        register(Box::new(responses_vec));
        register(Box::new(truncated_vec));
        register(Box::new(dropped_vec));
        register(Box::new(send_failed_vec));
        register(Box::new(tcp_open.clone()));
        register(Box::new(tcp_refused.clone()));
        register(Box::new(snapshot_generation.clone()));
        register(Box::new(health_batch_flips.clone()));
        register(Box::new(health_batch_seconds.clone()));
        register(Box::new(flip_publish_seconds.clone()));
        register(Box::new(reloads.clone()));
        register(Box::new(probe_duration.clone()));
        register(Box::new(pool_degraded.clone()));
        let fleet = Arc::new(fleet::Fleet::new());
        register(Box::new(SharedFleet(fleet.clone())));
        Metrics {
            fleet,
            registry,
            responses,
            truncated,
            dropped,
            send_failed,
            tcp_open,
            tcp_refused,
            snapshot_generation,
            health_batch_flips,
            health_batch_seconds,
            flip_publish_seconds,
            reloads,
            probe_duration,
            pool_degraded,
            queries,
            queries_other,
            store_commit,
            store,
            group_share,
            rollout_weight,
            rollout_step,
            rollout_state,
            rollout_aborts,
            admin_requests,
            zone_queries,
            zone_none,
            zone_labels: Mutex::new(HashSet::new()),
            last_reload_success,
            last_reload_timestamp,
            query_log_dropped,
            convergence,
            rrl_limited,
            rrl_slipped,
            cookies,
        }
    }

    /// A UDP response over its rate limit, of class `class` (`RRL_CLASSES` index).
    #[inline]
    pub fn rrl_limited(&self, class: usize, slipped: bool) {
        if let Some(c) = self.rrl_limited.get(class) {
            c.inc();
        }
        if slipped && let Some(c) = self.rrl_slipped.get(class) {
            c.inc();
        }
    }

    /// A query's COOKIE option judged `result` (`COOKIE_RESULTS` index).
    #[inline]
    pub fn cookie(&self, result: usize) {
        if let Some(c) = self.cookies.get(result) {
            c.inc();
        }
    }

    /// The queries counter of each zone in `origins` (same order), resolved once per zone index
    /// so the query path only increments it. Series of zones not in `origins` (dropped by a
    /// reload) are removed; `zone="none"` stays.
    pub fn zone_queries(&self, origins: &[Name]) -> Vec<IntCounter> {
        let labels: HashSet<String> = origins.iter().map(ToString::to_string).collect();
        let mut exported = self
            .zone_labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for gone in exported.difference(&labels) {
            let _ = self.zone_queries.remove_label_values(&[gone]);
        }
        let counters = origins
            .iter()
            .map(|o| self.zone_queries.with_label_values(&[&o.to_string()]))
            .collect();
        *exported = labels;
        counters
    }

    /// The queries counter of `zone="none"`.
    pub fn outside_zones(&self) -> &IntCounter {
        &self.zone_none
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
        self.rollout_weight
            .with_label_values(&[pool])
            .set(i64::from(weight));
        self.rollout_step
            .with_label_values(&[pool])
            .set(step as i64);
        for s in [
            "running",
            "waiting for promote",
            "paused",
            "done",
            "aborted",
        ] {
            self.rollout_state
                .with_label_values(&[pool, s])
                .set(i64::from(s == state));
        }
    }

    /// A rollout aborted; `cause` is "health", "metric", "webhook" or "operator".
    pub fn rollout_aborted(&self, pool: &str, cause: &str) {
        self.rollout_aborts.with_label_values(&[pool, cause]).inc();
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
        self.group_share
            .with_label_values(&[pool, group, "intended"])
            .set(intended);
        if let Some(observed) = observed {
            self.group_share
                .with_label_values(&[pool, group, "observed"])
                .set(observed);
        }
    }

    /// One store commit took `seconds`.
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

    pub fn store_commit(&self, seconds: f64, ok: bool) {
        self.store_commit
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .observe(seconds);
    }

    /// One parsed query of type `qtype`.
    pub fn query(&self, qtype: u16) {
        match self.queries.iter().find(|(code, _)| *code == qtype) {
            Some((_, counter)) => counter.inc(),
            None => self.queries_other.inc(),
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
        let gauge = self.pool_degraded.with_label_values(&[pool, family]);
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
        self.responses[t][rcode_index(rcode)].inc();
        if truncated {
            self.truncated[t].inc();
        }
    }

    pub fn dropped(&self, reason: DropReason) {
        let i = DROP_REASONS
            .iter()
            .position(|(r, _)| *r == reason)
            .unwrap_or(0);
        self.dropped[i].inc();
    }

    pub fn send_failed(&self, transport: Transport) {
        self.send_failed[transport_index(transport)].inc();
    }

    pub fn tcp_open(&self) -> OpenConnection<'_> {
        self.tcp_open.inc();
        OpenConnection(&self.tcp_open)
    }

    pub fn tcp_refused(&self) {
        self.tcp_refused.inc();
    }

    /// A batch of health flips was published: its size, its build time, and each flip's wait.
    pub fn health_batch(
        &self,
        flips: usize,
        took: std::time::Duration,
        arrived: &[tokio::time::Instant],
    ) {
        self.health_batch_flips.observe(flips as f64);
        self.health_batch_seconds.observe(took.as_secs_f64());
        let now = tokio::time::Instant::now();
        for at in arrived {
            self.flip_publish_seconds
                .observe(now.saturating_duration_since(*at).as_secs_f64());
        }
    }

    pub fn published(&self, generation: u64) {
        self.snapshot_generation.set(generation as i64);
    }

    /// A reload finished: counted by result, and the last result and its time are set.
    pub fn reloaded(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
        self.last_reload_success.set(i64::from(ok));
        self.last_reload_timestamp.set(unix_now());
    }

    /// A probe kind's duration series, resolved once by the probe scheduler so that a probe
    /// does no label lookup when it succeeds.
    pub fn probe_series(&self, kind: &str) -> ProbeSeries {
        ProbeSeries {
            duration: self.probe_duration.with_label_values(&[kind]),
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

/// Cache convergence (`convergence`): per pool, the re-fetched share since the last change
/// and the last completed convergence time; records the query path could not keep.
#[derive(Debug)]
struct ConvergenceMetrics {
    refetched: GaugeVec,
    seconds: GaugeVec,
    dropped: IntCounter,
}

impl ConvergenceMetrics {
    #[allow(
        clippy::expect_used,
        reason = "metric names are constants; a bad one is a bug caught by every test"
    )]
    fn new(registry: &Registry) -> Self {
        let refetched = GaugeVec::new(
            Opts::new(
                "pool_refetched_ratio",
                "Share of the pool's queries (by volume in the window before its last change) from resolvers that have queried it again since the change; 1 when nobody had queried",
            ),
            &["pool"],
        )
        .expect("metric");
        let seconds = GaugeVec::new(
            Opts::new(
                "pool_convergence_seconds",
                "Seconds from the pool's last completed change to 99% re-fetched",
            ),
            &["pool"],
        )
        .expect("metric");
        let dropped = IntCounter::new(
            "convergence_dropped_total",
            "Pool queries not counted for convergence because a worker's fixed-size table was full",
        )
        .expect("metric");
        for c in [
            Box::new(refetched.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(seconds.clone()),
            Box::new(dropped.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        ConvergenceMetrics {
            refetched,
            seconds,
            dropped,
        }
    }
}

/// Gauges of the state store as a whole (for several nameservers, the shared store).
#[derive(Debug)]
struct StoreGauges {
    applied: IntGauge,
    healthy: IntGauge,
    connected: IntGauge,
    staleness: prometheus::Gauge,
}

impl StoreGauges {
    #[allow(
        clippy::expect_used,
        reason = "metric names are constants; a bad one is a bug caught by every test"
    )]
    fn new(registry: &Registry) -> Self {
        let applied = IntGauge::new(
            "store_applied_generation",
            "Intent generation this node serves; equal on every node once a change is INSYNC",
        )
        .expect("metric");
        let connected = IntGauge::new(
            "store_connected",
            "1 while the state store answers (always 1 for the local sled store)",
        )
        .expect("metric");
        let healthy = IntGauge::new(
            "store_healthy",
            "1 while the state store can take a change; 0 after a commit failed or while its disk is too full, until a check or commit succeeds",
        )
        .expect("metric");
        let staleness = prometheus::Gauge::new(
            "store_staleness_seconds",
            "Seconds since the shared store last answered; 0 while connected",
        )
        .expect("metric");
        for c in [
            Box::new(applied.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(connected.clone()),
            Box::new(healthy.clone()),
            Box::new(staleness.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        connected.set(1);
        healthy.set(1);
        StoreGauges {
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
