//! Canary rollouts: a pool's traffic moves from group `from` to group `to` in steps. The
//! transitions are pure functions of (rollout, now, settle time, health) (`start`, `tick`,
//! `command`), applied by the state writer like any other change (persisted, audited); `run` is
//! the driver, a task that only looks at the published snapshot and names the pools whose step
//! is due; the writer turns that into `StateEvent::Rollout` and checks again.
//!
//! TTL-aware settling: answers live on in resolver caches for their TTL, so every weight change
//! records `settled_at = changed_at + pool TTL + slack`. The next weight change waits for it, and
//! a timed pause counts from it. Times are wall-clock Unix seconds so that a restart resumes the
//! same deadlines; `now()` follows tokio's clock so tests can pause it.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::{
    Health, Name, Override, Phase, Pool, Rolling, RollingPlan, Rollout, RolloutState, Step, View,
};
use crate::snapshot::Snapshot;

/// How often the driver looks for due steps.
pub const DRIVER_TICK: Duration = Duration::from_millis(500);

/// Wall-clock Unix seconds, advancing with tokio's clock (so a paused test clock drives it).
pub fn now() -> u64 {
    static BASE: OnceLock<(u64, tokio::time::Instant)> = OnceLock::new();
    let (wall, at) = BASE.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        (wall, tokio::time::Instant::now())
    });
    wall + tokio::time::Instant::now()
        .saturating_duration_since(*at)
        .as_secs()
}

/// What an operator (or the driver) asks of a pool's rollout.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Start(Box<Plan>),
    /// The driver: run whatever is due now.
    Tick,
    /// Run the next step now; `full` jumps to 100%.
    Promote {
        full: bool,
    },
    Pause,
    Resume,
    Abort {
        reason: String,
    },
    /// Go back to the previous weight and pause there.
    Undo,
}

impl Command {
    /// The audit action name.
    pub fn action(&self) -> &'static str {
        match self {
            Command::Start(_) => "rollout-start",
            Command::Tick => "rollout-step",
            Command::Promote { .. } => "rollout-promote",
            Command::Pause => "rollout-pause",
            Command::Resume => "rollout-resume",
            Command::Abort { .. } => "rollout-abort",
            Command::Undo => "rollout-undo",
        }
    }
}

/// A rollout plan (`model::RolloutPlan`).
pub type Plan = crate::model::RolloutPlan;

/// Checks a plan against the pool.
pub fn validate(plan: &Plan, pool: &Pool) -> Result<(), String> {
    for group in [&plan.from, &plan.to] {
        if !pool.groups.iter().any(|g| g.name == *group) {
            return Err(format!("no group `{group}` in pool `{}`", pool.name));
        }
    }
    if let Some(rp) = &plan.rolling {
        return batches(rp, pool).map(|_| ());
    }
    if plan.from == plan.to {
        return Err("`from` and `to` must be different groups".into());
    }
    if plan.steps.is_empty() {
        return Err("a rollout needs at least one step".into());
    }
    if let Some(w) = plan.steps.iter().find_map(|s| match s {
        Step::SetWeight(w) if *w > 100 => Some(w),
        _ => None,
    }) {
        return Err(format!("set_weight {w} is above 100"));
    }
    Ok(())
}

/// A rolling update's batches: the group's endpoints in config order, at most `batch` per
/// batch and never more than `max_unavailable` percent of the pool's weight drained at once.
pub fn batches(rp: &RollingPlan, pool: &Pool) -> Result<Vec<Vec<String>>, String> {
    let group = pool
        .groups
        .iter()
        .find(|g| g.name == rp.group)
        .ok_or_else(|| format!("no group `{}` in pool `{}`", rp.group, pool.name))?;
    let pool_weight: f64 = pool
        .groups
        .iter()
        .filter(|g| g.endpoints.iter().any(|e| e.weight > 0))
        .map(|g| f64::from(g.weight))
        .sum();
    let group_endpoint_weight: f64 = group.endpoints.iter().map(|e| f64::from(e.weight)).sum();
    let allowed = f64::from(rp.max_unavailable) / 100.0;
    let per_batch = rp.batch.of(group.endpoints.len());
    let share = |w: u32| {
        if pool_weight <= 0.0 || group_endpoint_weight <= 0.0 {
            0.0
        } else {
            f64::from(group.weight) * f64::from(w) / group_endpoint_weight / pool_weight
        }
    };
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut drained = 0.0;
    for e in &group.endpoints {
        let s = share(e.weight);
        if s > allowed + 1e-9 {
            return Err(format!(
                "endpoint {} alone carries {:.0}% of the pool, more than max_unavailable {}%",
                e.address,
                s * 100.0,
                rp.max_unavailable
            ));
        }
        if current.len() >= per_batch || drained + s > allowed + 1e-9 {
            out.push(std::mem::take(&mut current));
            drained = 0.0;
        }
        current.push(e.address.to_string());
        drained += s;
    }
    if !current.is_empty() {
        out.push(current);
    }
    if out.is_empty() {
        return Err(format!("group `{}` has no endpoints", rp.group));
    }
    Ok(out)
}

/// The addresses a rolling update keeps drained right now.
pub fn drained(r: &Rollout) -> &[String] {
    match &r.rolling {
        Some(rl) if active(r) => rl.batches.get(rl.batch).map_or(&[], Vec::as_slice),
        _ => &[],
    }
}

/// What the transitions need to know about health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Canary/blue-green: the first endpoint of `to` that is down.
    pub to_down: Option<String>,
    /// Rolling: every endpoint of the current batch is up.
    pub batch_up: bool,
    /// Shared store: some nameserver does not serve the current generation yet (see
    /// `Rollout::awaiting_sync`). Always false with a local store.
    pub unsynced: bool,
}

/// A new rollout: `to` goes to 0% at once (or the first batch is drained); the first step waits
/// for that to settle under the pool's TTL `ttl` (with a TTL ramp, that is also the wait for the
/// old TTL to expire).
pub fn start(plan: &Plan, now: u64, ttl: u32, pool: &Pool) -> Result<Rollout, String> {
    let rolling = match &plan.rolling {
        Some(rp) => Some(Rolling {
            plan: rp.clone(),
            batches: batches(rp, pool)?,
            batch: 0,
            phase: Phase::Draining,
        }),
        None => None,
    };
    Ok(Rollout {
        from: plan.from.clone(),
        to: plan.to.clone(),
        steps: plan.steps.clone(),
        slack: plan.slack,
        step: 0,
        state: RolloutState::Running,
        weight: 0,
        changed_at: now,
        settled_at: now + u64::from(ttl) + plan.slack,
        ramp_ttl: plan.ramp_ttl,
        metric_gate: plan.metric_gate.clone(),
        rolling,
        webhook: plan.webhook.clone(),
        awaiting_sync: false,
    })
}

/// The TTL answers of the pool carry while `r` stands as it is: the ramp TTL until the rollout
/// is done or aborted, else the pool's.
pub fn served_ttl(r: Option<&Rollout>, pool_ttl: u32) -> u32 {
    match r {
        Some(r) if active(r) => r.ramp_ttl.map_or(pool_ttl, |t| t.min(pool_ttl)),
        _ => pool_ttl,
    }
}

fn set_weight(r: &mut Rollout, weight: u32, now: u64, ttl: u32) {
    r.weight = weight;
    r.changed_at = now;
    r.settled_at = now + u64::from(ttl) + r.slack;
}

/// Running, waiting for promote, or paused: not finished.
pub fn active(r: &Rollout) -> bool {
    matches!(
        r.state,
        RolloutState::Running | RolloutState::WaitingPromote | RolloutState::Paused
    )
}

/// What is due at `now`, if anything: the health gate (an endpoint of `to` down while it takes
/// traffic aborts), then the next step once its time has come. None when nothing changes.
pub fn tick(r: &Rollout, now: u64, ttl: u32, seen: &Observed) -> Option<Rollout> {
    let mut next = r.clone();
    // Several nameservers: a change's settle clock starts only once every one of them serves
    // it (INSYNC), so resolvers asking any of them have had the full TTL to see it. The health
    // gate still acts meanwhile.
    let gate = r.rolling.is_none() && seen.to_down.is_some() && r.weight > 0;
    if r.awaiting_sync && active(r) && !gate {
        if seen.unsynced {
            return None;
        }
        next.awaiting_sync = false;
        next.changed_at = now;
        next.settled_at = now + u64::from(ttl) + r.slack;
        return Some(next);
    }
    if r.rolling.is_some() {
        return tick_rolling(r, now, ttl, seen.batch_up);
    }
    if let Some(endpoint) = seen.to_down.as_deref()
        && active(r)
        && r.weight > 0
    {
        next.state = RolloutState::Aborted {
            reason: format!(
                "health gate: endpoint {endpoint} of group `{}` is down",
                r.to
            ),
        };
        set_weight(&mut next, 0, now, ttl);
        return Some(next);
    }
    if r.state != RolloutState::Running {
        return None;
    }
    match r.steps.get(r.step) {
        None if now >= r.settled_at => next.state = RolloutState::Done,
        None => return None,
        Some(Step::SetWeight(w)) if now >= r.settled_at => {
            set_weight(&mut next, *w, now, ttl);
            next.step += 1;
        }
        Some(Step::Pause(Some(secs))) if now >= r.settled_at + secs => next.step += 1,
        // A manual pause, too, starts once the last change has settled.
        Some(Step::Pause(None)) if now >= r.settled_at => next.state = RolloutState::WaitingPromote,
        Some(_) => return None,
    }
    Some(next)
}

/// A rolling update: drain a batch, let it settle (safe to upgrade), wait for promote or the
/// pause, wait for its health checks to pass, undrain and drain the next.
fn tick_rolling(r: &Rollout, now: u64, ttl: u32, batch_up: bool) -> Option<Rollout> {
    if r.state != RolloutState::Running {
        return None;
    }
    let mut next = r.clone();
    let rl = next.rolling.as_mut()?;
    match rl.phase.clone() {
        Phase::Draining if now >= r.settled_at => {
            rl.phase = Phase::SafeToUpgrade;
            if rl.plan.pause.is_none() {
                next.state = RolloutState::WaitingPromote;
            }
        }
        Phase::SafeToUpgrade => match rl.plan.pause {
            Some(p) if now >= r.settled_at + p => rl.phase = Phase::WaitingHealthy { since: now },
            _ => return None,
        },
        Phase::WaitingHealthy { .. } if batch_up => {
            rl.batch += 1;
            rl.phase = Phase::Draining;
            if rl.batch >= rl.batches.len() {
                next.state = RolloutState::Done;
            }
            next.changed_at = now;
            next.settled_at = now + u64::from(ttl) + next.slack;
        }
        Phase::WaitingHealthy { since } if now > since + rl.plan.health_timeout => {
            // The batch did not come back: stop for a person to decide (resume retries).
            next.state = RolloutState::Paused;
        }
        _ => return None,
    }
    Some(next)
}

/// Applies an operator command (Start and Tick go through `start` and `tick`). Err says why it
/// does not apply in the rollout's state.
pub fn command(r: &Rollout, cmd: &Command, now: u64, ttl: u32) -> Result<Rollout, String> {
    let mut next = r.clone();
    let state = &r.state;
    if let Some(rl) = next.rolling.as_mut() {
        match cmd {
            Command::Promote { .. } if matches!(rl.phase, Phase::SafeToUpgrade) && active(r) => {
                rl.phase = Phase::WaitingHealthy { since: now };
                next.state = RolloutState::Running;
                return Ok(next);
            }
            Command::Promote { .. } => {
                return Err("promote applies once a batch is safe to upgrade".into());
            }
            Command::Resume if *state == RolloutState::Paused => {
                if let Phase::WaitingHealthy { since } = &mut rl.phase {
                    *since = now;
                }
                next.state = RolloutState::Running;
                return Ok(next);
            }
            Command::Undo => {
                return Err(
                    "undo does not apply to a rolling update; abort undrains the batch".into(),
                );
            }
            _ => {}
        }
    }
    match cmd {
        Command::Start(_) | Command::Tick => return Err("not an operator command".into()),
        Command::Promote { full: true } if active(r) => {
            set_weight(&mut next, 100, now, ttl);
            next.step = r.steps.len();
            next.state = RolloutState::Running;
        }
        Command::Promote { full: false } if active(r) => {
            next.state = RolloutState::Running;
            // Past a pause if we are at one, then the next weight change, now.
            if matches!(r.steps.get(next.step), Some(Step::Pause(_))) {
                next.step += 1;
            }
            if let Some(Step::SetWeight(w)) = r.steps.get(next.step) {
                set_weight(&mut next, *w, now, ttl);
                next.step += 1;
            }
        }
        Command::Pause if matches!(state, RolloutState::Running | RolloutState::WaitingPromote) => {
            next.state = RolloutState::Paused;
        }
        Command::Resume if *state == RolloutState::Paused => next.state = RolloutState::Running,
        Command::Abort { reason } if active(r) => {
            next.state = RolloutState::Aborted {
                reason: if reason.is_empty() {
                    "aborted by an operator".into()
                } else {
                    reason.clone()
                },
            };
            set_weight(&mut next, 0, now, ttl);
        }
        Command::Undo if active(r) => {
            // The step that set the current weight, and the weight before it.
            let executed = r.steps[..r.step.min(r.steps.len())]
                .iter()
                .enumerate()
                .filter_map(|(i, s)| match s {
                    Step::SetWeight(w) => Some((i, *w)),
                    Step::Pause(_) => None,
                })
                .collect::<Vec<_>>();
            let Some(&(at, _)) = executed.last() else {
                return Err("nothing to undo: no weight has been set yet".into());
            };
            let previous = executed.len().checked_sub(2).map_or(0, |i| executed[i].1);
            set_weight(&mut next, previous, now, ttl);
            next.step = at;
            next.state = RolloutState::Paused;
        }
        _ => {
            return Err(format!(
                "the rollout is {}; `{}` does not apply",
                state_name(state),
                cmd.action()
            ));
        }
    }
    Ok(next)
}

pub fn state_name(state: &RolloutState) -> &'static str {
    match state {
        RolloutState::Running => "running",
        RolloutState::WaitingPromote => "waiting for promote",
        RolloutState::Paused => "paused",
        RolloutState::Done => "done",
        RolloutState::Aborted { .. } => "aborted",
    }
}

/// What `tick` needs to know about `r`'s pool in `view`.
pub fn observe(view: &View, pool: &Pool, r: &Rollout) -> Observed {
    let up = |e: &crate::model::Endpoint| match e.force {
        Override::Down => false,
        Override::Up => true,
        Override::Auto => e
            .probe
            .as_ref()
            .is_none_or(|k| view.health.get(k).copied().unwrap_or(k.check.initial) == Health::Up),
    };
    let batch = drained(r);
    Observed {
        unsynced: false,
        to_down: to_down(view, pool, &r.to),
        batch_up: pool
            .groups
            .iter()
            .flat_map(|g| &g.endpoints)
            .filter(|e| batch.contains(&e.address.to_string()))
            .all(up),
    }
}

/// The first endpoint of group `to` that counts as down in `view`, if any.
pub fn to_down(view: &View, pool: &Pool, to: &str) -> Option<String> {
    let group = pool.groups.iter().find(|g| g.name == to)?;
    group
        .endpoints
        .iter()
        .find(|e| match e.force {
            Override::Down => true,
            Override::Up => false,
            Override::Auto => e.probe.as_ref().is_some_and(|k| {
                view.health.get(k).copied().unwrap_or(k.check.initial) == Health::Down
            }),
        })
        .map(|e| e.address.to_string())
}

/// What the rollout tasks tell the state writer.
#[derive(Clone, Debug, PartialEq)]
pub enum Signal {
    /// A step (or the health gate) is due for this pool: run `Command::Tick`.
    Due(Name),
    /// The metric gate failed too often: abort with this reason.
    GateFailed(Name, String),
    /// The webhook refused the next step: pause (or abort, if `abort`) with this reason.
    WebhookFailed {
        pool: Name,
        reason: String,
        abort: bool,
    },
}

/// The driver: every `DRIVER_TICK`, for each rollout in the published state with a step due,
/// sends the pool's name to the writer (which checks again against its own state).
pub async fn run(
    snapshot: std::sync::Arc<ArcSwap<Snapshot>>,
    due: mpsc::Sender<Signal>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(DRIVER_TICK);
    // Steps the webhook approved: (pool, changed_at, step), so a step is asked about once.
    let mut approved: std::collections::HashMap<String, (u64, usize)> = Default::default();
    let client = crate::health::metric::MetricClient::new(Duration::from_secs(5)).ok();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let snap = snapshot.load();
        let view = &snap.view;
        let now = now();
        for (name, r) in &view.overlay.rollouts {
            let Some(pool) = view.pools.iter().find(|p| p.name.to_string() == *name) else {
                continue;
            };
            let Some(next) = tick(r, now, pool.ttl, &observe(view, pool, r)) else {
                continue;
            };
            // Before a step that moves traffic (never before an abort), ask the webhook.
            let moves = next.weight != r.weight || drained(&next) != drained(r);
            let aborting = matches!(next.state, RolloutState::Aborted { .. });
            let signal = match (&r.webhook, &client) {
                (Some(hook), Some(client))
                    if moves
                        && !aborting
                        && approved.get(name) != Some(&(r.changed_at, r.step)) =>
                {
                    let body = serde_json::json!({
                        "pool": name, "from": r.from, "to": r.to, "step": r.step,
                        "weight": r.weight, "next_weight": next.weight,
                        "drained": drained(r), "next_drained": drained(&next),
                    });
                    match client.post_json(&hook.url, &body).await {
                        Ok(()) => {
                            approved.insert(name.clone(), (r.changed_at, r.step));
                            Signal::Due(pool.name.clone())
                        }
                        Err(reason) => Signal::WebhookFailed {
                            pool: pool.name.clone(),
                            reason,
                            abort: hook.abort_on_failure,
                        },
                    }
                }
                _ => Signal::Due(pool.name.clone()),
            };
            if due.send(signal).await.is_err() {
                return;
            }
        }
    }
}

/// One gated rollout being watched.
struct Watched {
    /// The rollout's `changed_at` when watching began; a new rollout starts a new watch.
    started: u64,
    client: crate::health::metric::MetricClient,
    next: tokio::time::Instant,
    failures: u32,
}

/// Metric gates: while a gated rollout sends traffic to `to`, runs its Prometheus query every
/// interval and signals `GateFailed` after `failure_limit` failures in a row.
pub async fn run_gates(
    snapshot: std::sync::Arc<ArcSwap<Snapshot>>,
    signals: mpsc::Sender<Signal>,
    shutdown: CancellationToken,
) {
    let mut watched: std::collections::HashMap<String, Watched> = std::collections::HashMap::new();
    let mut ticks = tokio::time::interval(DRIVER_TICK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let snap = snapshot.load();
        let gated: Vec<(String, Rollout)> = snap
            .view
            .overlay
            .rollouts
            .iter()
            .filter(|(_, r)| active(r) && r.weight > 0 && r.metric_gate.is_some())
            .map(|(p, r)| (p.clone(), r.clone()))
            .collect();
        watched.retain(|pool, _| gated.iter().any(|(p, _)| p == pool));
        for (pool, r) in gated {
            let Some(gate) = &r.metric_gate else { continue };
            let interval = Duration::from_secs(gate.interval.max(1));
            let w = match watched.get_mut(&pool) {
                Some(w) if w.started <= r.changed_at && w.started != 0 => w,
                _ => {
                    let Ok(client) = crate::health::metric::MetricClient::new(
                        interval.min(Duration::from_secs(10)),
                    ) else {
                        continue;
                    };
                    watched.insert(
                        pool.clone(),
                        Watched {
                            started: r.changed_at.max(1),
                            client,
                            next: tokio::time::Instant::now() + interval,
                            failures: 0,
                        },
                    );
                    continue;
                }
            };
            if tokio::time::Instant::now() < w.next {
                continue;
            }
            w.next = tokio::time::Instant::now() + interval;
            let verdict = crate::health::metric::check(&w.client, gate).await;
            match verdict {
                Ok(true) => w.failures = 0,
                failed => {
                    w.failures += 1;
                    tracing::warn!(%pool, failures = w.failures, result = ?failed, "metric gate failed");
                    if w.failures >= gate.failure_limit {
                        let why = match failed {
                            Ok(_) => format!("`{}` is not {} {}", gate.query, gate.op, gate.value),
                            Err(e) => e,
                        };
                        let reason = format!("metric gate failed {} times: {why}", w.failures);
                        let Ok(name) = Name::parse(&pool) else {
                            continue;
                        };
                        w.failures = 0;
                        if signals
                            .send(Signal::GateFailed(name, reason))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            from: "blue".into(),
            to: "green".into(),
            steps: vec![
                Step::SetWeight(5),
                Step::Pause(Some(60)),
                Step::SetWeight(50),
                Step::Pause(None),
                Step::SetWeight(100),
            ],
            slack: 5,
            ramp_ttl: None,
            metric_gate: None,
            rolling: None,
            webhook: None,
        }
    }

    fn pool() -> Pool {
        let text = "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n[[pool]]\nname = \"app.example.com.\"\n[[pool.group]]\nname = \"blue\"\nendpoints = [{ address = \"192.0.2.10\" }]\n[[pool.group]]\nname = \"green\"\nendpoints = [{ address = \"192.0.2.20\" }]\n";
        crate::config::parse(text, std::path::Path::new("w.toml"))
            .unwrap()
            .pools
            .remove(0)
    }

    /// Runs ticks second by second from `from` to `to`, returning (second, weight, state) at
    /// each change.
    fn walk(mut r: Rollout, from: u64, to: u64) -> (Rollout, Vec<(u64, u32, &'static str)>) {
        let mut changes = Vec::new();
        for t in from..=to {
            while let Some(next) = tick(&r, t, 30, &Observed::default()) {
                r = next;
                changes.push((t, r.weight, state_name(&r.state)));
            }
        }
        (r, changes)
    }

    #[test]
    fn steps_wait_for_settling_and_pauses_count_from_it() {
        // TTL 30 + slack 5: every change settles 35 s later.
        let r = start(&plan(), 1000, 30, &pool()).unwrap();
        assert_eq!((r.weight, r.settled_at), (0, 1035));
        let (r, changes) = walk(r, 1000, 2000);
        assert_eq!(
            changes,
            vec![
                (1035, 5, "running"),              // first step once 0% settled
                (1130, 5, "running"),              // pause: 60 s after settling at 1070
                (1130, 50, "running"),             // next weight at once (already settled)
                (1165, 50, "waiting for promote"), // manual pause once 50% settled
            ]
        );
        let r = command(&r, &Command::Promote { full: false }, 3000, 30).unwrap();
        assert_eq!((r.weight, r.settled_at), (100, 3035));
        let (r, changes) = walk(r, 3000, 4000);
        assert_eq!(changes, vec![(3035, 100, "done")]);
        assert!(
            command(&r, &Command::Pause, 4000, 30).is_err(),
            "done is done"
        );
    }

    #[test]
    fn with_several_nameservers_settling_starts_once_all_serve_the_change() {
        let mut r = start(&plan(), 1000, 30, &pool()).unwrap();
        r.awaiting_sync = true; // what the writer sets with a shared store
        let unsynced = Observed {
            unsynced: true,
            ..Observed::default()
        };
        assert_eq!(
            tick(&r, 1100, 30, &unsynced),
            None,
            "nothing moves before INSYNC"
        );
        let synced = tick(&r, 1200, 30, &Observed::default()).unwrap();
        assert!(!synced.awaiting_sync);
        assert_eq!(
            (synced.weight, synced.settled_at),
            (0, 1235),
            "the clock starts at 1200"
        );
        assert_eq!(tick(&synced, 1234, 30, &Observed::default()), None);
        assert_eq!(
            tick(&synced, 1235, 30, &Observed::default())
                .unwrap()
                .weight,
            5
        );
        // The health gate does not wait for anyone.
        let mut taking = tick(&synced, 1235, 30, &Observed::default()).unwrap();
        taking.awaiting_sync = true;
        let down = Observed {
            to_down: Some("192.0.2.20".into()),
            unsynced: true,
            ..Observed::default()
        };
        let aborted = tick(&taking, 1236, 30, &down).unwrap();
        assert!(matches!(aborted.state, RolloutState::Aborted { .. }));
    }

    #[test]
    fn health_gate_aborts_only_while_to_takes_traffic() {
        let r = start(&plan(), 0, 30, &pool()).unwrap();
        let down = Observed {
            to_down: Some("192.0.2.20".into()),
            ..Observed::default()
        };
        assert_eq!(
            tick(&r, 1, 30, &down),
            None,
            "0% to: nothing to protect yet"
        );
        let r = tick(&r, 35, 30, &Observed::default()).unwrap();
        let aborted = tick(&r, 36, 30, &down).unwrap();
        assert_eq!(aborted.weight, 0);
        assert!(
            matches!(&aborted.state, RolloutState::Aborted { reason } if reason.contains("192.0.2.20"))
        );
        assert_eq!(tick(&aborted, 99, 30, &down), None);
    }

    #[test]
    fn operator_commands() {
        let r = start(&plan(), 0, 30, &pool()).unwrap();
        let (r, _) = walk(r, 0, 1200);
        assert_eq!(r.weight, 50);
        let paused = command(&r, &Command::Pause, 1300, 30).unwrap();
        assert_eq!(
            walk(paused.clone(), 1300, 2000).1,
            vec![],
            "paused stays put"
        );
        let undone = command(&paused, &Command::Undo, 1400, 30).unwrap();
        assert_eq!(
            (undone.weight, undone.step, state_name(&undone.state)),
            (5, 2, "paused")
        );
        let resumed = command(&undone, &Command::Resume, 1500, 30).unwrap();
        let (again, _) = walk(resumed, 1500, 1600);
        assert_eq!(
            again.weight, 50,
            "resuming redoes the undone step once settled"
        );
        let full = command(&again, &Command::Promote { full: true }, 1700, 30).unwrap();
        assert_eq!(full.weight, 100);
        let aborted = command(
            &again,
            &Command::Abort {
                reason: String::new(),
            },
            1700,
            30,
        )
        .unwrap();
        assert_eq!(aborted.weight, 0);
        assert!(command(&aborted, &Command::Resume, 1800, 30).is_err());
        let fresh = start(&plan(), 0, 30, &pool()).unwrap();
        assert!(
            command(&fresh, &Command::Undo, 1, 30).is_err(),
            "nothing to undo"
        );
    }

    #[test]
    fn a_batch_that_does_not_come_back_stops_the_rollout_for_a_person() {
        let text = "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n[[pool]]\nname = \"app.example.com.\"\n[pool.rollout]\nkind = \"rolling\"\ngroup = \"web\"\nmax_unavailable = \"50%\"\npause = \"10s\"\nhealth_timeout = \"60s\"\nslack = \"0s\"\n[[pool.group]]\nname = \"web\"\nendpoints = [{ address = \"192.0.2.1\" }, { address = \"192.0.2.2\" }]\n";
        let pool = crate::config::parse(text, std::path::Path::new("w.toml"))
            .unwrap()
            .pools
            .remove(0);
        let plan = pool.rollout.clone().unwrap();
        let r = start(&plan, 0, 30, &pool).unwrap();
        assert_eq!(drained(&r), ["192.0.2.1"]);
        let sick = Observed::default();
        // Settled at 30, paused 10 s (no promote needed), then waiting for health.
        let r = tick(&r, 30, 30, &sick).unwrap();
        assert_eq!(tick(&r, 39, 30, &sick), None);
        let r = tick(&r, 40, 30, &sick).unwrap();
        assert_eq!(
            r.rolling.as_ref().unwrap().phase,
            Phase::WaitingHealthy { since: 40 }
        );
        assert_eq!(tick(&r, 100, 30, &sick), None, "within the health timeout");
        let stopped = tick(&r, 101, 30, &sick).unwrap();
        assert_eq!(stopped.state, RolloutState::Paused);
        assert_eq!(
            drained(&stopped),
            ["192.0.2.1"],
            "still drained while a person decides"
        );
        // Resume gives it another health timeout; healthy, the next batch is drained.
        let resumed = command(&stopped, &Command::Resume, 200, 30).unwrap();
        let healthy = Observed {
            batch_up: true,
            ..Observed::default()
        };
        let next = tick(&resumed, 201, 30, &healthy).unwrap();
        assert_eq!(drained(&next), ["192.0.2.2"]);
    }

    #[test]
    fn batches_follow_batch_size_and_max_unavailable() {
        let text = |batch: &str, max: &str| {
            format!(
                "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n[[pool]]\nname = \"app.example.com.\"\n[pool.rollout]\nkind = \"rolling\"\ngroup = \"web\"\nbatch = {batch}\nmax_unavailable = \"{max}\"\n[[pool.group]]\nname = \"web\"\nendpoints = [{{ address = \"192.0.2.1\" }}, {{ address = \"192.0.2.2\" }}, {{ address = \"192.0.2.3\" }}, {{ address = \"192.0.2.4\" }}]\n"
            )
        };
        let plan_of = |batch: &str, max: &str| {
            let pool = crate::config::parse(&text(batch, max), std::path::Path::new("w.toml"))
                .unwrap()
                .pools
                .remove(0);
            let rp = pool.rollout.clone().unwrap().rolling.unwrap();
            batches(&rp, &pool)
        };
        let n = |b: Vec<Vec<String>>| b.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(
            n(plan_of("\"50%\"", "50%").unwrap()),
            [2, 2],
            "four instances, two at a time"
        );
        assert_eq!(
            n(plan_of("2", "25%").unwrap()),
            [1, 1, 1, 1],
            "max_unavailable caps the batch"
        );
        assert_eq!(n(plan_of("3", "100%").unwrap()), [3, 1]);
        assert!(
            plan_of("1", "10%")
                .unwrap_err()
                .contains("more than max_unavailable")
        );
    }
}
