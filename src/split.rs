//! Observed versus intended split. Every window, the share of answers each pool group got since
//! the previous look, beside the share its weights and health give it now, as
//! `weir_pool_group_share{pool,group,kind="observed"|"intended"}`: a dashboard shows at a glance
//! whether weights do what they say. Reads the published snapshot and the answer counters; never
//! on the query path, never writes state.
//!
//! The intended share uses the IPv4 answer set (IPv6 for IPv6-only pools). With `answers > 1`
//! every endpoint in an answer counts, so observed shares follow membership rather than weight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// How long each observation window lasts.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// Updates the share gauges every `window` until `shutdown`.
pub(crate) async fn run(
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    window: Duration,
    shutdown: CancellationToken,
) {
    let mut last: HashMap<(String, String), u64> = HashMap::new();
    let mut ticks = tokio::time::interval(window);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => observe(&snapshot.load(), &metrics, &mut last),
        }
    }
}

fn observe(snapshot: &Snapshot, metrics: &Metrics, last: &mut HashMap<(String, String), u64>) {
    for pool in snapshot.view.pools.iter() {
        let name = pool.name.to_string();
        let Some(status) = snapshot.pool_status(&pool.name) else {
            continue;
        };
        let family = if status.ipv4.outcome == "answer" {
            &status.ipv4
        } else {
            &status.ipv6
        };
        let mut rows = Vec::new();
        for g in &pool.groups {
            let endpoints: Vec<String> =
                g.endpoints.iter().map(|e| e.address.to_string()).collect();
            let intended: f64 = family
                .shares
                .iter()
                .filter(|(addr, _)| endpoints.contains(addr))
                .map(|(_, share)| share)
                .sum();
            let count = metrics.group_answers(&name, &g.name, &endpoints);
            let previous = last.insert((name.clone(), g.name.clone()), count);
            // A counter can only grow; a group first seen now starts its window now.
            let delta = previous.map_or(0, |p| count.saturating_sub(p));
            rows.push((g.name.as_str(), intended, delta));
        }
        let total: u64 = rows.iter().map(|(_, _, d)| d).sum();
        for (group, intended, delta) in rows {
            let observed = (total > 0).then(|| delta as f64 / total as f64);
            metrics.group_share(&name, group, intended, observed);
        }
    }
}
