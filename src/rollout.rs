//! Every rollout rule, in one place. A rollout moves a pool's traffic in steps, either as a
//! weight shift between two groups (canary, blue-green: `shift.rs`) or as a rolling update of
//! one group, batch by batch (`rolling.rs`). Both machines sit behind one entry point,
//! `transition`: a pure function of (the rollout, the pool, a command, the time, what was
//! observed) that returns the new rollout, the audit record and the abort cause; `weights` says
//! what it serves. The state writer only dispatches and commits. `next_due` is the one answer
//! to "what happens next, and when", served by the admin API and printed by `weir ctl`.
//! `driver.rs` holds the tasks that watch the published snapshot (due steps, webhook and
//! metric gates) and tell the writer through `Signal`s.
//!
//! **The settle contract.** A change has settled when no resolver that honours TTLs can still
//! hold an answer from before it: `settle_at = t_change + ttl_before + 1 s + slack`, in Unix
//! milliseconds, where `t_change` is when every nameserver serves the change (with a shared
//! store: when it is INSYNC), `ttl_before` the largest TTL an answer served before it could
//! carry (`ttl_before`), and the extra second covers resolvers (unbound, Knot Resolver) that
//! keep serving an answer during the second in which its TTL reads 0. Times follow tokio's
//! clock (`clock::now_ms`) so paused-clock tests drive them; every sum saturates instead of wrapping.

use crate::model::{
    AbortCause, AuditRecord, Endpoint, Overlay, Phase, Pool, PoolId, Rollout, RolloutState, View,
};

mod driver;
mod rolling;
mod shift;

pub(crate) use driver::{Inputs, Refetched, Signal, spawn};
pub(crate) use rolling::batches;

/// The extra second of the settle contract: resolvers serve an answer whose TTL reads 0 for up
/// to one more second.
const TTL_ZERO_GRACE_MS: u64 = 1000;

/// Seconds to milliseconds, saturating.
pub(crate) fn ms(secs: u64) -> u64 {
    secs.saturating_mul(1000)
}

/// The instant a change made at `changed` (Unix ms) has settled: see the contract above.
pub(crate) fn settle_at(changed: u64, ttl_before: u32, slack_secs: u64) -> u64 {
    changed
        .saturating_add(ms(u64::from(ttl_before)))
        .saturating_add(TTL_ZERO_GRACE_MS)
        .saturating_add(ms(slack_secs))
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
    /// Stop where it is; `reason` says why when weir itself pauses (a webhook refusal, a gate
    /// that cannot be evaluated).
    Pause {
        reason: Option<String>,
    },
    Resume,
    Abort {
        reason: String,
        cause: AbortCause,
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
            Command::Pause { .. } => "rollout-pause",
            Command::Resume => "rollout-resume",
            Command::Abort { .. } => "rollout-abort",
            Command::Undo => "rollout-undo",
        }
    }
}

/// A rollout plan (`model::RolloutPlan`).
pub(crate) type Plan = crate::model::RolloutPlan;

/// Why a command does not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// The plan does not fit the pool (400).
    #[error("{0}")]
    Invalid(String),
    /// Not in the rollout's current state (409), or no rollout (404 via `Missing`).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Missing(String),
}

/// What the transitions know about the world, gathered by `observe`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Observed {
    /// Shift: the first endpoint of `to` that is down.
    pub to_down: Option<String>,
    /// Shift: why `to` is not ready to take traffic on promote (an endpoint whose last probe
    /// failed, or that is down); Ok when every endpoint passed its latest probe.
    pub to_ready: Result<(), String>,
    /// Rolling: Ok when every endpoint of the current batch has passed `rise` probes in a row
    /// that all started after the batch was promoted; else which one is not back yet.
    pub batch_fresh: Result<(), String>,
    /// Shared store: some nameserver does not serve the current generation yet (see
    /// `Rollout::awaiting_sync`). Always false with a local store.
    pub unsynced: bool,
    /// Measured cache convergence of the pool since the rollout's last change: the share of
    /// the query volume before it that has queried again. None when not measured.
    pub refetched: Option<f64>,
    /// Whether changes must wait for every nameserver (a shared store).
    pub shared: bool,
    /// Convergence is not measured here (`[dns] track_convergence = false`): a plan that
    /// gates on it is refused.
    pub untracked: bool,
}

impl Default for Observed {
    fn default() -> Self {
        Observed {
            to_down: None,
            to_ready: Ok(()),
            batch_fresh: Ok(()),
            unsynced: false,
            refetched: None,
            shared: false,
            untracked: false,
        }
    }
}

/// The TTLs a change settles under, from the pool's zone and config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ttls {
    /// The pool's configured TTL (seconds).
    pub pool: u32,
    /// The zone's negative TTL (min of SOA TTL and MINIMUM, RFC 2308), for changes that turn
    /// NODATA into data or back.
    pub negative: u32,
}

/// The TTLs a change to `pool` settles under, from the published snapshot: the pool's
/// configured TTL and its zone's negative TTL.
pub(crate) fn ttls(snapshot: &crate::snapshot::Snapshot, pool: &crate::model::PoolId) -> Ttls {
    Ttls {
        pool: snapshot
            .view
            .config_pools
            .iter()
            .find(|p| p.name == *pool)
            .map_or(0, |p| p.ttl),
        negative: snapshot.negative_ttl(&pool.name),
    }
}

/// Who asked, for the audit record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Who<'a> {
    pub actor: &'a str,
    pub source: &'a str,
    pub reason: &'a str,
}

/// A transition that changes the rollout.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Outcome {
    pub rollout: Rollout,
    /// What to audit (its generation is set by the store).
    pub record: AuditRecord,
    /// Set when this transition aborted the rollout.
    pub aborted: Option<AbortCause>,
}

/// Everything a transition needs besides the rollout and the command.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Context<'a> {
    /// The pool as served (config with intent applied).
    pub pool: &'a Pool,
    pub ttls: Ttls,
    /// Unix milliseconds (`clock::now_ms`).
    pub now: u64,
    pub seen: &'a Observed,
}

/// Runs `cmd` against `current` (the pool's stored rollout, if any). Ok(None): nothing is due.
pub(crate) fn transition(
    current: Option<&Rollout>,
    cmd: &Command,
    cx: &Context<'_>,
    who: Who<'_>,
) -> Result<Option<Outcome>, Refused> {
    let next = match (cmd, current) {
        (Command::Start(_), Some(r)) if active(r) => {
            return Err(Refused::Conflict(format!(
                "a rollout of `{}` is already {}; abort it or let it finish first",
                cx.pool.name,
                state_name(&r.state)
            )));
        }
        (Command::Start(plan), _) => {
            validate(plan, cx.pool).map_err(Refused::Invalid)?;
            if plan.converged.is_some() && cx.seen.untracked {
                return Err(Refused::Invalid(
                    "the plan gates on `converged`, but convergence is not measured here \
                     ([dns] track_convergence = false)"
                        .into(),
                ));
            }
            start(plan, cx)?
        }
        (_, None) => {
            return Err(Refused::Missing(format!(
                "no rollout for pool `{}`",
                cx.pool.name
            )));
        }
        (Command::Tick, Some(r)) => match tick(r, cx) {
            Some(next) => next,
            None => return Ok(None),
        },
        (cmd, Some(r)) => command(r, cmd, cx).map_err(Refused::Conflict)?,
    };
    let mut next = next;
    // Several nameservers: a change settles from when all of them serve it.
    let moved = current.is_none_or(|c| c.changed_at != next.changed_at && !c.awaiting_sync);
    if cx.seen.shared && active(&next) && moved {
        next.awaiting_sync = true;
    }
    let aborted = match (&next.state, current.map(|c| &c.state)) {
        (RolloutState::Aborted { .. }, Some(RolloutState::Aborted { .. })) => None,
        (RolloutState::Aborted { cause, .. }, _) => Some(*cause),
        _ => None,
    };
    let reason = match (&next.state, who.reason.is_empty()) {
        (RolloutState::Aborted { reason, .. }, true) => reason.clone(),
        _ => match (&next.hold, who.reason.is_empty()) {
            (Some(hold), true) if current.is_none_or(|c| c.hold != next.hold) => hold.clone(),
            _ => who.reason.to_string(),
        },
    };
    let record = AuditRecord {
        generation: 0,
        time: cx.now / 1000,
        actor: who.actor.to_string(),
        source: who.source.to_string(),
        action: cmd.action().into(),
        pool: cx.pool.name.to_string(),
        subject: format!("rollout {} -> {}", next.from, next.to),
        before: summary(current),
        after: summary(Some(&next)),
        reason,
    };
    Ok(Some(Outcome {
        rollout: next,
        record,
        aborted,
    }))
}

fn summary(r: Option<&Rollout>) -> serde_json::Value {
    r.map_or(serde_json::Value::Null, |r| {
        serde_json::json!({ "step": r.step, "weight": r.weight, "state": state_name(&r.state) })
    })
}

/// Checks a plan against the pool.
pub(crate) fn validate(plan: &Plan, pool: &Pool) -> Result<(), String> {
    for group in [&plan.from, &plan.to] {
        if !pool.groups.iter().any(|g| g.name == *group) {
            return Err(format!("no group `{group}` in pool `{}`", pool.name));
        }
    }
    match &plan.rolling {
        Some(rp) => batches(rp, pool).map(|_| ()),
        None => shift::validate(plan),
    }
}

fn start(plan: &Plan, cx: &Context<'_>) -> Result<Rollout, Refused> {
    // Nothing is ramped yet: answers before the start carry the pool's own TTL.
    let ttl = cx.ttls.pool;
    let mut r = Rollout {
        from: plan.from.clone(),
        to: plan.to.clone(),
        steps: plan.steps.clone(),
        slack: plan.slack,
        step: 0,
        state: RolloutState::Running,
        weight: 0,
        changed_at: cx.now,
        settled_at: settle_at(cx.now, ttl, plan.slack),
        ramp_ttl: plan.ramp_ttl,
        metric_gate: plan.metric_gate.clone(),
        rolling: None,
        webhook: plan.webhook.clone(),
        awaiting_sync: false,
        settle_ttl: ttl,
        converged: plan.converged,
        hold: None,
    };
    if let Some(rp) = &plan.rolling {
        r.rolling = Some(rolling::start(rp, cx.pool).map_err(Refused::Invalid)?);
    }
    // Sending `to` to 0% (or draining the first batch) may take a family out of the answers.
    r.settle_ttl = ttl_before(&r, cx.pool, cx.ttls, ttl);
    r.settled_at = settle_at(cx.now, r.settle_ttl, r.slack);
    Ok(r)
}

/// The largest TTL an answer served before a change of `r` could carry: `served` (the TTL
/// answers carried), or the zone's negative TTL when the change can turn NODATA into data or
/// back (the groups involved do not cover the same address families). The degraded TTL is
/// never above the pool's (config caps it), so it needs no term of its own.
fn ttl_before(r: &Rollout, pool: &Pool, ttls: Ttls, served: u32) -> u32 {
    let flips_nodata = match &r.rolling {
        Some(rl) => rolling::changes_families(rl, pool),
        None => shift::changes_families(r, pool),
    };
    if flips_nodata {
        served.max(ttls.negative)
    } else {
        served
    }
}

/// Records a weight change made at `now` that settles under the TTL served before it.
fn changed(next: &mut Rollout, before: &Rollout, cx: &Context<'_>) {
    let served = served_ttl(Some(before), cx.ttls.pool);
    next.changed_at = cx.now;
    next.settle_ttl = ttl_before(next, cx.pool, cx.ttls, served);
    next.settled_at = settle_at(cx.now, next.settle_ttl, next.slack);
}

/// The TTL answers of the pool carry while `r` stands as it is: the ramp TTL until the rollout
/// is done or aborted, else the pool's.
pub(crate) fn served_ttl(r: Option<&Rollout>, pool_ttl: u32) -> u32 {
    match r {
        Some(r) if active(r) => r.ramp_ttl.map_or(pool_ttl, |t| t.min(pool_ttl)),
        _ => pool_ttl,
    }
}

/// Running, waiting for promote, or paused: not finished.
pub(crate) fn active(r: &Rollout) -> bool {
    matches!(
        r.state,
        RolloutState::Running | RolloutState::WaitingPromote | RolloutState::Paused
    )
}

/// Whether the last change has settled at `now`: its settle instant has passed and, when the
/// plan gates on measured convergence, enough of the resolvers came back.
fn settled(r: &Rollout, cx: &Context<'_>) -> bool {
    !r.awaiting_sync && cx.now >= r.settled_at && converged(r, cx.seen.refetched)
}

fn converged(r: &Rollout, refetched: Option<f64>) -> bool {
    match r.converged {
        None => true,
        Some(c) => refetched.is_some_and(|share| share >= c.share),
    }
}

/// Past the settle instant plus the convergence timeout without converging: why to pause.
fn convergence_overdue(r: &Rollout, cx: &Context<'_>) -> Option<String> {
    let c = r.converged?;
    let deadline = r.settled_at.saturating_add(ms(c.timeout));
    (!r.awaiting_sync && cx.now >= deadline && !converged(r, cx.seen.refetched)).then(|| {
        format!(
            "cache convergence: {} of the query volume came back within {}s of settling, below {}",
            cx.seen
                .refetched
                .map_or("none".to_string(), |s| format!("{:.1}%", s * 100.0)),
            c.timeout,
            c.share
        )
    })
}

/// What is due at `cx.now`, if anything. None when nothing changes.
fn tick(r: &Rollout, cx: &Context<'_>) -> Option<Rollout> {
    let mut next = r.clone();
    // Several nameservers: a change's settle clock starts only once every one of them serves
    // it (INSYNC), so resolvers asking any of them have had the full TTL to see it. The health
    // gate still acts meanwhile.
    let gate = r.rolling.is_none() && cx.seen.to_down.is_some() && r.weight > 0;
    if r.awaiting_sync && active(r) && !gate {
        if cx.seen.unsynced {
            return None;
        }
        next.awaiting_sync = false;
        next.changed_at = cx.now;
        next.settled_at = settle_at(cx.now, r.settle_ttl, r.slack);
        return Some(next);
    }
    // Only while the rollout waits for its last change to settle: a weight shift always, a
    // rolling update while its batch drains (later publications, such as the upgraded batch's
    // health coming back, must not stop it).
    let settling = r
        .rolling
        .as_ref()
        .is_none_or(|rl| rl.phase == Phase::Draining);
    if r.state == RolloutState::Running
        && settling
        && let Some(why) = convergence_overdue(r, cx)
    {
        next.state = RolloutState::Paused;
        next.hold = Some(why);
        return Some(next);
    }
    match r.rolling {
        Some(_) => rolling::tick(r, cx),
        None => shift::tick(r, cx),
    }
}

/// Applies an operator command (Start and Tick go through `start` and `tick`). Err says why it
/// does not apply in the rollout's state.
fn command(r: &Rollout, cmd: &Command, cx: &Context<'_>) -> Result<Rollout, String> {
    let mut next = match cmd {
        Command::Start(_) | Command::Tick => return Err("not an operator command".into()),
        Command::Pause { reason }
            if matches!(
                r.state,
                RolloutState::Running | RolloutState::WaitingPromote
            ) =>
        {
            let mut next = r.clone();
            next.state = RolloutState::Paused;
            next.hold.clone_from(reason);
            return Ok(next);
        }
        Command::Abort { reason, cause } if active(r) => {
            let mut next = r.clone();
            next.state = RolloutState::Aborted {
                reason: if reason.is_empty() {
                    "aborted by an operator".into()
                } else {
                    reason.clone()
                },
                cause: *cause,
            };
            // A weight shift goes back to `from`; a rolling update undrains its batch
            // (`drained` is empty once it is not active).
            if next.rolling.is_none() {
                next.weight = 0;
            }
            changed(&mut next, r, cx);
            return Ok(next);
        }
        _ => match r.rolling {
            Some(_) => rolling::command(r, cmd, cx)?,
            None => shift::command(r, cmd, cx)?,
        },
    };
    next.hold = None;
    Ok(next)
}

/// Why `cmd` is refused in `r`'s state.
fn does_not_apply(r: &Rollout, cmd: &Command) -> String {
    format!(
        "the rollout is {}; `{}` does not apply",
        state_name(&r.state),
        cmd.action()
    )
}

pub(crate) fn state_name(state: &RolloutState) -> &'static str {
    match state {
        RolloutState::Running => "running",
        RolloutState::WaitingPromote => "waiting for promote",
        RolloutState::Paused => "paused",
        RolloutState::Done => "done",
        RolloutState::Aborted { .. } => "aborted",
    }
}

/// The addresses a rolling update keeps drained right now.
pub(crate) fn drained(r: &Rollout) -> &[std::net::IpAddr] {
    match &r.rolling {
        Some(rl) if active(r) => rl.batches.get(rl.batch).map_or(&[], Vec::as_slice),
        _ => &[],
    }
}

/// Writes the weights `r` serves into `overlay` (pool `pool`): a weight shift as the two
/// groups' weights (`from` = 100 - w, `to` = w), a rolling update as its drained batch
/// (endpoint weight 0) and nothing else in the group.
pub(crate) fn weights(r: &Rollout, overlay: &mut Overlay, pool: &PoolId) {
    match &r.rolling {
        Some(rl) => {
            let drained = drained(r);
            let weights = overlay.endpoint_weights.entry(pool.clone()).or_default();
            for addr in rl.batches.iter().flatten() {
                if drained.contains(addr) {
                    weights.insert(*addr, 0);
                } else {
                    weights.remove(addr);
                }
            }
            if weights.is_empty() {
                overlay.endpoint_weights.remove(pool);
            }
        }
        None => {
            let weights = overlay.group_weights.entry(pool.clone()).or_default();
            weights.insert(r.from.clone(), 100u32.saturating_sub(r.weight));
            weights.insert(r.to.clone(), r.weight);
        }
    }
}

/// What happens next to a rollout and when (Unix ms; None when it waits for a person, a
/// nameserver, health or convergence rather than a time).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Due {
    pub what: String,
    pub at: Option<u64>,
}

/// The one place that says when a rollout's next step is due.
pub(crate) fn next_due(r: &Rollout) -> Due {
    let due = |what: String, at: Option<u64>| Due { what, at };
    if !active(r) {
        return due("-".into(), None);
    }
    if r.awaiting_sync {
        return due(
            "the settle clock starts once every nameserver serves the change".into(),
            None,
        );
    }
    match &r.rolling {
        Some(rl) => rolling::next_due(r, rl),
        None => shift::next_due(r),
    }
}

/// The instant the rollout's old side gets no traffic any more, even from caches: a shift at
/// 100% (`from` safe to remove) or a rolling batch drained (safe to upgrade). None otherwise.
pub(crate) fn safe_at(r: &Rollout) -> Option<u64> {
    if r.awaiting_sync {
        return None;
    }
    match &r.rolling {
        Some(rl) if active(r) && !matches!(rl.phase, Phase::WaitingHealthy { .. }) => {
            Some(r.settled_at)
        }
        Some(_) => None,
        None => (r.weight == 100).then_some(r.settled_at),
    }
}

/// Whether the old side is safe to remove or upgrade at `now`: `safe_at` has passed and, with
/// a convergence gate, the resolvers came back.
pub(crate) fn safe(r: &Rollout, now: u64, refetched: Option<f64>) -> bool {
    safe_at(r).is_some_and(|at| now >= at) && converged(r, refetched)
}

/// Gathers what `tick` and `command` need about `r`'s pool in `view`, with the probes' last
/// results (`last`) for freshness and `refetched` from the convergence tracker.
pub(crate) fn observe(
    view: &View,
    pool: &Pool,
    r: &Rollout,
    last: &crate::health::LastResults,
    refetched: Option<f64>,
) -> Observed {
    // Held only while this pool's few probes are looked up (probe tasks write it once per
    // result; never the query path).
    let empty = std::collections::HashMap::new();
    let guard = last.lock();
    let results = guard.as_deref().unwrap_or(&empty);
    let to_ready = pool
        .groups
        .iter()
        .filter(|g| g.name == r.to)
        .flat_map(|g| &g.endpoints)
        .try_for_each(|e| {
            if !view.endpoint_up(e) {
                return Err(format!("endpoint {} of `{}` is down", e.address, r.to));
            }
            match e.probe.as_ref().and_then(|k| results.get(k)) {
                Some(last) if !last.ok => Err(format!(
                    "endpoint {} of `{}` failed its last probe ({})",
                    e.address, r.to, last.reason
                )),
                _ => Ok(()),
            }
        });
    let batch_fresh = match r.rolling.as_ref().map(|rl| &rl.phase) {
        Some(Phase::WaitingHealthy { since }) => {
            let batch = drained(r);
            pool.groups
                .iter()
                .flat_map(|g| &g.endpoints)
                .filter(|e| batch.contains(&e.address))
                .try_for_each(|e| fresh(view, e, results, *since))
        }
        _ => Ok(()),
    };
    Observed {
        to_down: to_down(view, pool, &r.to),
        to_ready,
        batch_fresh,
        unsynced: false,
        refetched,
        shared: false,
        untracked: false,
    }
}

/// An endpoint upgraded in a rolling batch is back once it has passed `rise` probes in a row
/// that all started after `since` (the promote): a result from before the restart proves
/// nothing. Forced up counts as back; forced down never does; no check, nothing to wait for.
fn fresh(
    view: &View,
    e: &Endpoint,
    results: &std::collections::HashMap<crate::model::ProbeKey, crate::health::LastResult>,
    since: u64,
) -> Result<(), String> {
    use crate::model::Override;
    match (e.force, &e.probe) {
        (Override::Up, _) | (Override::Auto, None) => return Ok(()),
        (Override::Down, _) => return Err(format!("{} is forced down", e.address)),
        (Override::Auto, Some(_)) => {}
    }
    let Some(key) = &e.probe else { return Ok(()) };
    let rise = key.check.rise.max(1);
    let passes = results
        .get(key)
        .and_then(|last| {
            last.passing_since
                .filter(|at| *at >= since)
                .map(|_| last.passes)
        })
        .unwrap_or(0);
    if passes >= rise && view.endpoint_up(e) {
        Ok(())
    } else {
        Err(format!(
            "{}: {} of {rise} passing probes since the promote",
            e.address,
            passes.min(rise)
        ))
    }
}

/// The first endpoint of group `to` that counts as down in `view`, if any.
pub(crate) fn to_down(view: &View, pool: &Pool, to: &str) -> Option<String> {
    let group = pool.groups.iter().find(|g| g.name == to)?;
    group
        .endpoints
        .iter()
        .find(|e| !view.endpoint_up(e))
        .map(|e| e.address.to_string())
}

#[cfg(test)]
mod tests;
