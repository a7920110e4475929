//! The series with one member per endpoint or probe target (`weir_pool_answers_total`,
//! `weir_endpoint_up`, `weir_probe_up`, `weir_probe_failures_total`,
//! `weir_health_transitions_total`), kept as plain values in maps and turned into Prometheus
//! families only while a scrape runs. The prometheus crate's own vectors keep a whole metric
//! object per series (its description with the help text, its label pairs): ~1.5 KiB each, and
//! 10,000 endpoints made ~40,000 of them (issue 13). Names, labels and values are the same as
//! the crate would print.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

/// One endpoint's answers counter, resolved once per snapshot build: the query path only adds.
#[derive(Clone, Debug, Default)]
pub struct AnswerCounter(Arc<AtomicU64>);

impl AnswerCounter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// (pool, group, endpoint address).
type EndpointKey = (Box<str>, Box<str>, Box<str>);

/// (probe target "ip:port", a static label value: kind, failure reason or new state).
type TargetKey = (Box<str>, &'static str);

/// Every per-endpoint and per-target series.
#[derive(Debug)]
pub(super) struct Fleet {
    descs: [Desc; 5],
    answers: Mutex<HashMap<EndpointKey, AnswerCounter>>,
    endpoint_up: Mutex<HashMap<EndpointKey, bool>>,
    probe_up: Mutex<HashMap<TargetKey, bool>>,
    probe_failures: Mutex<HashMap<TargetKey, u64>>,
    transitions: Mutex<HashMap<TargetKey, u64>>,
}

/// Name (the registry adds `weir_`), help, label names in the order keys hold them.
const FAMILIES: [(&str, &str, [&str; 3]); 5] = [
    (
        "pool_answers_total",
        "Times an endpoint was put in an answer, by pool, group and endpoint",
        ["pool", "group", "endpoint"],
    ),
    (
        "endpoint_up",
        "1 if the endpoint counts as up in the served snapshot, else 0",
        ["pool", "group", "endpoint"],
    ),
    (
        "probe_up",
        "1 if the probe target is up after hysteresis, else 0",
        ["target", "kind", ""],
    ),
    (
        "probe_failures_total",
        "Failed health probes, by target and reason",
        ["target", "reason", ""],
    ),
    (
        "health_transitions_total",
        "Health flips after hysteresis, by target and new state",
        ["target", "to", ""],
    ),
];

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn endpoint_key(pool: &str, group: &str, endpoint: &str) -> EndpointKey {
    (pool.into(), group.into(), endpoint.into())
}

impl Fleet {
    /// The names are prefixed with `weir_` by the registry, as every other metric's.
    #[allow(
        clippy::expect_used,
        reason = "the names and labels are constants; a bad one is a bug caught by every test"
    )]
    pub(super) fn new() -> Fleet {
        let descs = FAMILIES.map(|(name, help, labels)| {
            Desc::new(
                name.to_string(),
                help.into(),
                labels
                    .iter()
                    .filter(|l| !l.is_empty())
                    .map(|l| l.to_string())
                    .collect(),
                HashMap::new(),
            )
            .expect("metric description")
        });
        Fleet {
            descs,
            answers: Mutex::default(),
            endpoint_up: Mutex::default(),
            probe_up: Mutex::default(),
            probe_failures: Mutex::default(),
            transitions: Mutex::default(),
        }
    }

    pub(super) fn answers(&self, pool: &str, group: &str, endpoint: &str) -> AnswerCounter {
        lock(&self.answers)
            .entry(endpoint_key(pool, group, endpoint))
            .or_default()
            .clone()
    }

    pub(super) fn answered_so_far(&self, pool: &str, group: &str, endpoint: &str) -> u64 {
        lock(&self.answers)
            .get(&endpoint_key(pool, group, endpoint))
            .map_or(0, AnswerCounter::get)
    }

    pub(super) fn endpoint_up(&self, pool: &str, group: &str, endpoint: &str, up: bool) {
        let mut map = lock(&self.endpoint_up);
        let key = endpoint_key(pool, group, endpoint);
        match map.get_mut(&key) {
            Some(slot) => *slot = up,
            None => {
                map.insert(key, up);
            }
        }
    }

    pub(super) fn probe_up(&self, target: &str, kind: &'static str, up: bool) {
        lock(&self.probe_up).insert((target.into(), kind), up);
    }

    pub(super) fn probe_failed(&self, target: &str, reason: &'static str) {
        *lock(&self.probe_failures)
            .entry((target.into(), reason))
            .or_default() += 1;
    }

    pub(super) fn transition(&self, target: &str, to: &'static str) {
        *lock(&self.transitions)
            .entry((target.into(), to))
            .or_default() += 1;
    }

    /// Drops every series of a probe target.
    pub(super) fn forget_target(&self, target: &str) {
        lock(&self.probe_up).retain(|(t, _), _| &**t != target);
        lock(&self.probe_failures).retain(|(t, _), _| &**t != target);
        lock(&self.transitions).retain(|(t, _), _| &**t != target);
    }
}

/// An endpoint's label values, in `FAMILIES` order.
fn by_endpoint((pool, group, endpoint): &EndpointKey) -> Vec<&str> {
    vec![pool, group, endpoint]
}

/// A label pair for the exposition.
fn pair(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

/// One family from `(label values, value)` rows, labels and rows sorted as the prometheus
/// crate sorts them.
fn family<'a>(
    desc: &Desc,
    kind: MetricType,
    rows: impl Iterator<Item = (Vec<&'a str>, f64)>,
) -> MetricFamily {
    let mut metrics: Vec<proto::Metric> = rows
        .map(|(values, value)| {
            let mut labels: Vec<proto::LabelPair> = desc
                .variable_labels
                .iter()
                .zip(values)
                .map(|(name, value)| pair(name, value))
                .collect();
            labels.sort();
            let mut metric = proto::Metric::from_label(labels);
            if kind == MetricType::COUNTER {
                let mut counter = proto::Counter::default();
                counter.set_value(value);
                metric.set_counter(counter);
            } else {
                let mut gauge = proto::Gauge::default();
                gauge.set_value(value);
                metric.set_gauge(gauge);
            }
            metric
        })
        .collect();
    metrics.sort_by(|a, b| a.get_label().cmp(b.get_label()));
    let mut family = MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

impl Collector for Fleet {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let [answers, endpoint_up, probe_up, failures, transitions] = &self.descs;
        let flag = |up: bool| if up { 1.0 } else { 0.0 };
        let families = [
            family(
                answers,
                MetricType::COUNTER,
                lock(&self.answers)
                    .iter()
                    .map(|(k, c)| (by_endpoint(k), c.get() as f64)),
            ),
            family(
                endpoint_up,
                MetricType::GAUGE,
                lock(&self.endpoint_up)
                    .iter()
                    .map(|(k, up)| (by_endpoint(k), flag(*up))),
            ),
            family(
                probe_up,
                MetricType::GAUGE,
                lock(&self.probe_up)
                    .iter()
                    .map(|((t, kind), up)| (vec![&**t, *kind], flag(*up))),
            ),
            family(
                failures,
                MetricType::COUNTER,
                lock(&self.probe_failures)
                    .iter()
                    .map(|((t, reason), n)| (vec![&**t, *reason], *n as f64)),
            ),
            family(
                transitions,
                MetricType::COUNTER,
                lock(&self.transitions)
                    .iter()
                    .map(|((t, to), n)| (vec![&**t, *to], *n as f64)),
            ),
        ];
        // Families without a series are left out, as the crate's empty vectors are.
        families
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition is what the prometheus crate's own vectors printed for the same calls.
    #[test]
    fn prints_what_the_crate_printed() {
        let fleet = Fleet::new();
        let counter = fleet.answers("app.example.com.", "blue", "192.0.2.10");
        counter.inc();
        counter.inc();
        fleet.endpoint_up("app.example.com.", "blue", "192.0.2.10", true);
        fleet.endpoint_up("app.example.com.", "blue", "192.0.2.10", false);
        fleet.probe_up("192.0.2.10:80", "tcp", true);
        fleet.probe_failed("192.0.2.10:80", "connect");
        fleet.transition("192.0.2.10:80", "down");
        let registry = prometheus::Registry::new_custom(Some("weir".into()), None).unwrap();
        registry.register(Box::new(fleet)).unwrap();
        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut text,
        )
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        for line in [
            "# TYPE weir_pool_answers_total counter",
            "weir_pool_answers_total{endpoint=\"192.0.2.10\",group=\"blue\",pool=\"app.example.com.\"} 2",
            "# TYPE weir_endpoint_up gauge",
            "weir_endpoint_up{endpoint=\"192.0.2.10\",group=\"blue\",pool=\"app.example.com.\"} 0",
            "weir_probe_up{kind=\"tcp\",target=\"192.0.2.10:80\"} 1",
            "weir_probe_failures_total{reason=\"connect\",target=\"192.0.2.10:80\"} 1",
            "weir_health_transitions_total{target=\"192.0.2.10:80\",to=\"down\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }

    #[test]
    fn forgetting_a_target_drops_its_series() {
        let fleet = Fleet::new();
        for target in ["192.0.2.10:80", "192.0.2.11:80"] {
            fleet.probe_up(target, "tcp", true);
            fleet.probe_failed(target, "timeout");
            fleet.transition(target, "up");
        }
        fleet.forget_target("192.0.2.10:80");
        let text: Vec<String> = fleet
            .collect()
            .iter()
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| format!("{:?}", m.get_label()))
            })
            .collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text.iter().all(|t| t.contains("192.0.2.11:80")), "{text:?}");
    }
}
