//! The rolling machine: one group's endpoints are drained batch by batch. Phases per batch:
//! `draining` (until the drain has settled) -> `safe_to_upgrade` (until `promote`, or the
//! plan's pause) -> `waiting_healthy` (until every endpoint of the batch has passed `rise`
//! probes that started after the promote; past `health_timeout` the rollout pauses for a
//! person) -> the next batch is drained as this one comes back.

use std::net::IpAddr;

use super::{Context, Due, changed, ms, settled};
use crate::model::{Phase, Pool, Rolling, RollingPlan, Rollout, RolloutState};

/// A rolling update's batches: the group's endpoints in config order, at most `batch` per
/// batch and never more than `max_unavailable` percent of the pool's weight drained at once.
pub(crate) fn batches(rp: &RollingPlan, pool: &Pool) -> Result<Vec<Vec<IpAddr>>, String> {
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
    let mut out: Vec<Vec<IpAddr>> = Vec::new();
    let mut current: Vec<IpAddr> = Vec::new();
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
        current.push(e.address);
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

pub(super) fn start(rp: &RollingPlan, pool: &Pool) -> Result<Rolling, String> {
    Ok(Rolling {
        plan: rp.clone(),
        batches: batches(rp, pool)?,
        batch: 0,
        phase: Phase::Draining,
    })
}

/// Whether draining the current batch can take an address family out of the pool's answers.
pub(super) fn changes_families(rl: &Rolling, pool: &Pool) -> bool {
    let batch = rl.batches.get(rl.batch).map_or(&[][..], Vec::as_slice);
    let families = |keep: &dyn Fn(&IpAddr) -> bool| {
        let (mut v4, mut v6) = (false, false);
        for e in pool.groups.iter().flat_map(|g| &g.endpoints) {
            if keep(&e.address) {
                v4 |= e.address.is_ipv4();
                v6 |= e.address.is_ipv6();
            }
        }
        (v4, v6)
    };
    families(&|_| true) != families(&|a| !batch.contains(a))
}

pub(super) fn tick(r: &Rollout, cx: &Context<'_>) -> Option<Rollout> {
    if r.state != RolloutState::Running {
        return None;
    }
    let mut next = r.clone();
    let rl = next.rolling.as_mut()?;
    match rl.phase.clone() {
        Phase::Draining if settled(r, cx) => {
            rl.phase = Phase::SafeToUpgrade;
            if rl.plan.pause.is_none() {
                next.state = RolloutState::WaitingPromote;
            }
        }
        Phase::SafeToUpgrade => match rl.plan.pause {
            Some(p) if cx.now >= r.settled_at.saturating_add(ms(p)) => {
                rl.phase = Phase::WaitingHealthy { since: cx.now };
            }
            _ => return None,
        },
        Phase::WaitingHealthy { .. } if cx.seen.batch_fresh.is_ok() => {
            rl.batch += 1;
            rl.phase = Phase::Draining;
            if rl.batch >= rl.batches.len() {
                next.state = RolloutState::Done;
            }
            changed(&mut next, r, cx);
        }
        Phase::WaitingHealthy { since }
            if cx.now > since.saturating_add(ms(rl.plan.health_timeout)) =>
        {
            // The batch did not come back: stop for a person to decide (resume retries).
            next.state = RolloutState::Paused;
            next.hold = Some(format!(
                "batch {} not healthy within {}s: {}",
                rl.batch + 1,
                rl.plan.health_timeout,
                cx.seen.batch_fresh.clone().err().unwrap_or_default()
            ));
        }
        _ => return None,
    }
    Some(next)
}

pub(super) fn command(
    r: &Rollout,
    cmd: &super::Command,
    cx: &Context<'_>,
) -> Result<Rollout, String> {
    use super::Command;
    let mut next = r.clone();
    let Some(rl) = next.rolling.as_mut() else {
        return Err("not a rolling update".into());
    };
    match cmd {
        // Only probes that start after this instant count for bringing the batch back.
        Command::Promote { .. } if matches!(rl.phase, Phase::SafeToUpgrade) && super::active(r) => {
            rl.phase = Phase::WaitingHealthy { since: cx.now };
            next.state = RolloutState::Running;
        }
        Command::Promote { .. } => {
            return Err("promote applies once a batch is safe to upgrade".into());
        }
        Command::Resume if r.state == RolloutState::Paused => {
            if let Phase::WaitingHealthy { since } = &mut rl.phase {
                *since = cx.now;
            }
            next.state = RolloutState::Running;
        }
        Command::Undo => {
            return Err("undo does not apply to a rolling update; abort undrains the batch".into());
        }
        _ => return Err(super::does_not_apply(r, cmd)),
    }
    Ok(next)
}

/// The next thing a rolling update waits for, and when.
pub(super) fn next_due(r: &Rollout, rl: &Rolling) -> Due {
    let batch = rl.batch + 1;
    let (what, at) = match (&r.state, &rl.phase) {
        (RolloutState::Paused, _) => ("none while paused; resume continues".into(), None),
        (_, Phase::Draining) => (format!("batch {batch} safe to upgrade"), Some(r.settled_at)),
        (_, Phase::SafeToUpgrade) => match rl.plan.pause {
            Some(p) => (
                format!("batch {batch}: health wait after a pause of {p}s"),
                Some(r.settled_at.saturating_add(ms(p))),
            ),
            None => (format!("batch {batch}: waiting for promote"), None),
        },
        (_, Phase::WaitingHealthy { since }) => (
            format!(
                "batch {batch}: undrain once healthy (pauses at {})",
                since.saturating_add(ms(rl.plan.health_timeout))
            ),
            None,
        ),
    };
    Due { what, at }
}
