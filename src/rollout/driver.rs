//! The rollout tasks: the driver looks at the published snapshot every `DRIVER_TICK` and names
//! the pools whose step is due (the writer decides again on its own state, so a stale view can
//! never apply a step twice); before a step that moves traffic it asks the plan's webhook, in a
//! task of its own so a slow webhook never delays another pool. The metric gate runs beside it
//! and records its verdict, which holds back steps that would send `to` more traffic. Gates
//! fail closed: a gate whose client cannot be built pauses the rollout with the reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Command, Context, Who, active, drained, observe, transition, ttls};
use crate::health::LastResults;
use crate::health::metric::{self, MetricClient};
use crate::model::{PoolId, RolloutState};
use crate::snapshot::Snapshot;

/// How often the driver looks for due steps.
pub(crate) const DRIVER_TICK: Duration = Duration::from_millis(500);

/// What the rollout tasks tell the state writer.
#[derive(Clone, Debug, PartialEq)]
pub enum Signal {
    /// A step (or the health gate) is due for this pool: run `Command::Tick`.
    Due(PoolId),
    /// The metric gate failed too often: abort with this reason.
    GateFailed(PoolId, String),
    /// The webhook refused the next step: pause (or abort, if `abort`) with this reason.
    WebhookFailed {
        pool: PoolId,
        reason: String,
        abort: bool,
    },
    /// A gate cannot be evaluated (its client could not be built): pause with this reason.
    Hold(PoolId, String),
}

/// The pool's measured cache convergence since a Unix ms instant (the share of the query volume
/// before the change that has queried again), when measured.
pub(crate) type Refetched = Arc<dyn Fn(&PoolId, u64) -> Option<f64> + Send + Sync>;

/// What the rollout tasks read.
#[derive(Clone)]
pub struct Inputs {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub probes: LastResults,
    pub refetched: Option<Refetched>,
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs").finish_non_exhaustive()
    }
}

impl Inputs {
    /// The convergence of `pool` since `since`, if measured.
    pub fn refetched(&self, pool: &PoolId, since: u64) -> Option<f64> {
        self.refetched.as_ref().and_then(|f| f(pool, since))
    }
}

/// Metric gate verdicts by pool: Err while the last evaluation failed.
type Verdicts = Arc<Mutex<HashMap<PoolId, Result<(), String>>>>;

/// Starts the driver and the metric gates.
pub(crate) fn spawn(inputs: Inputs, due: mpsc::Sender<Signal>, shutdown: CancellationToken) {
    let verdicts = Verdicts::default();
    tokio::spawn(run(
        inputs.clone(),
        verdicts.clone(),
        due.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(run_gates(inputs.snapshot, verdicts, due, shutdown));
}

/// A webhook's answer about one step: (pool, (changed_at, step), result).
type Answer = (PoolId, (u64, usize), Result<(), metric::OutboundError>);

/// The driver: every `DRIVER_TICK`, for each rollout in the published state with something
/// due, sends the pool's name to the writer.
async fn run(
    inputs: Inputs,
    verdicts: Verdicts,
    due: mpsc::Sender<Signal>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(DRIVER_TICK);
    // Steps the webhook approved: (changed_at, step) per pool, so a step is asked about once.
    let mut approved: HashMap<PoolId, (u64, usize)> = HashMap::new();
    let mut asking: HashMap<PoolId, tokio::task::JoinHandle<()>> = HashMap::new();
    let (answers_tx, mut answers) = mpsc::channel::<Answer>(64);
    let client = MetricClient::new(Duration::from_secs(5)).map(Arc::new);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                asking.values().for_each(tokio::task::JoinHandle::abort);
                return;
            }
            Some((pool, step, result)) = answers.recv() => {
                asking.remove(&pool);
                let signal = match result {
                    Ok(()) => {
                        approved.insert(pool.clone(), step);
                        Signal::Due(pool)
                    }
                    Err(reason) => Signal::WebhookFailed {
                        abort: webhook_aborts(&inputs.snapshot.load(), &pool),
                        pool,
                        reason: reason.to_string(),
                    },
                };
                if due.send(signal).await.is_err() {
                    return;
                }
                continue;
            }
            _ = ticks.tick() => {}
        }
        let snap = inputs.snapshot.load();
        let view = &snap.view;
        let now = crate::clock::now_ms();
        for (name, r) in view.overlay.rollouts.iter().filter(|(_, r)| active(r)) {
            let Some(pool) = view.pools.iter().find(|p| p.name == *name) else {
                continue;
            };
            let seen = observe(
                view,
                pool,
                r,
                &inputs.probes,
                inputs.refetched(&pool.name, r.changed_at),
            );
            let cx = Context {
                pool,
                ttls: ttls(&snap, &pool.name),
                now,
                seen: &seen,
            };
            let who = Who {
                actor: "weir",
                source: "",
                reason: "",
            };
            let Ok(Some(outcome)) = transition(Some(r), &Command::Tick, &cx, who) else {
                continue;
            };
            let next = outcome.rollout;
            let aborting = matches!(next.state, RolloutState::Aborted { .. });
            let moves = next.weight != r.weight || drained(&next) != drained(r);
            let raises = next.weight > r.weight || drained(&next) != drained(r);
            // A failing metric gate holds back every step that sends `to` more traffic (its
            // failure limit then aborts).
            let gate = verdicts
                .lock()
                .ok()
                .and_then(|v| v.get(name).cloned())
                .unwrap_or(Ok(()));
            if raises && !aborting && gate.is_err() {
                continue;
            }
            let step = (r.changed_at, r.step);
            let signal = match &r.webhook {
                Some(hook) if moves && !aborting && approved.get(&pool.name) != Some(&step) => {
                    if asking.contains_key(&pool.name) {
                        continue;
                    }
                    let client = match &client {
                        Ok(client) => client.clone(),
                        Err(e) => {
                            let why = format!("webhook client could not be built: {e}");
                            if due
                                .send(Signal::Hold(pool.name.clone(), why))
                                .await
                                .is_err()
                            {
                                return;
                            }
                            continue;
                        }
                    };
                    let body = serde_json::json!({
                        "pool": name, "from": r.from, "to": r.to, "step": r.step,
                        "weight": r.weight, "next_weight": next.weight,
                        "drained": drained(r), "next_drained": drained(&next),
                    });
                    let (url, tx, pool_name) =
                        (hook.url.clone(), answers_tx.clone(), pool.name.clone());
                    let task = tokio::spawn(async move {
                        let result = client.post_json(&url, &body).await;
                        let _ = tx.send((pool_name, step, result)).await;
                    });
                    asking.insert(pool.name.clone(), task);
                    continue;
                }
                _ => Signal::Due(pool.name.clone()),
            };
            if due.send(signal).await.is_err() {
                return;
            }
        }
    }
}

/// Whether the pool's rollout webhook aborts (rather than pauses) on a refusal.
fn webhook_aborts(snap: &Snapshot, pool: &PoolId) -> bool {
    snap.view
        .overlay
        .rollouts
        .get(pool)
        .and_then(|r| r.webhook.as_ref())
        .is_some_and(|h| h.abort_on_failure)
}

/// One gated rollout being watched.
struct Watched {
    /// The rollout's `changed_at` when watching began; a new rollout starts a new watch.
    started: u64,
    client: MetricClient,
    next: tokio::time::Instant,
    failures: u32,
}

/// Metric gates: while a gated rollout sends traffic to `to`, runs its Prometheus query every
/// interval, records the verdict for the driver, and signals `GateFailed` after
/// `failure_limit` failures in a row (a query that cannot be evaluated counts as a failure).
async fn run_gates(
    snapshot: Arc<ArcSwap<Snapshot>>,
    verdicts: Verdicts,
    signals: mpsc::Sender<Signal>,
    shutdown: CancellationToken,
) {
    let mut watched: HashMap<PoolId, Watched> = HashMap::new();
    let mut ticks = tokio::time::interval(DRIVER_TICK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let snap = snapshot.load();
        let gated: Vec<(PoolId, crate::model::Rollout)> = snap
            .view
            .overlay
            .rollouts
            .iter()
            .filter(|(_, r)| active(r) && r.weight > 0 && r.metric_gate.is_some())
            .map(|(p, r)| (p.clone(), r.clone()))
            .collect();
        watched.retain(|pool, _| gated.iter().any(|(p, _)| p == pool));
        if let Ok(mut v) = verdicts.lock() {
            v.retain(|pool, _| gated.iter().any(|(p, _)| p == pool));
        }
        for (pool, r) in gated {
            let Some(gate) = &r.metric_gate else { continue };
            let interval = Duration::from_secs(gate.interval.max(1));
            let w = match watched.get_mut(&pool) {
                Some(w) if w.started <= r.changed_at && w.started != 0 => w,
                _ => {
                    match MetricClient::new(interval.min(Duration::from_secs(10))) {
                        Ok(client) => {
                            watched.insert(
                                pool.clone(),
                                Watched {
                                    started: r.changed_at.max(1),
                                    client,
                                    next: tokio::time::Instant::now() + interval,
                                    failures: 0,
                                },
                            );
                        }
                        Err(e) if r.state != RolloutState::Paused => {
                            let why = format!("metric gate client could not be built: {e}");
                            if signals.send(Signal::Hold(pool.clone(), why)).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => {}
                    }
                    continue;
                }
            };
            if tokio::time::Instant::now() < w.next {
                continue;
            }
            w.next = tokio::time::Instant::now() + interval;
            let verdict = metric::check(&w.client, gate).await;
            let failed = match verdict {
                Ok(true) => None,
                Ok(false) => Some(format!(
                    "`{}` is not {} {}",
                    gate.query, gate.op, gate.value
                )),
                Err(e) => Some(e.to_string()),
            };
            if let Ok(mut v) = verdicts.lock() {
                v.insert(pool.clone(), failed.clone().map_or(Ok(()), Err));
            }
            let Some(why) = failed else {
                w.failures = 0;
                continue;
            };
            w.failures += 1;
            tracing::warn!(%pool, failures = w.failures, %why, "metric gate failed");
            if w.failures >= gate.failure_limit {
                let reason = format!("metric gate failed {} times: {why}", w.failures);
                w.failures = 0;
                if signals
                    .send(Signal::GateFailed(pool.clone(), reason))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}
