//! The weight-shift machine (canary and blue-green): group `to` takes `weight`% of the pool
//! and `from` the rest, moved through the plan's steps. Each weight change waits for the one
//! before it to settle; a timed pause counts from the settle instant; a manual pause waits for
//! `promote`. While `to` takes traffic, any of its endpoints down aborts (the health gate).

use super::{Context, Due, Observed, Plan, changed, ms, settled};
use crate::model::{AbortCause, Pool, Rollout, RolloutState, Step};

pub(super) fn validate(plan: &Plan) -> Result<(), String> {
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

/// Whether moving weight between `from` and `to` can change which address families the pool
/// answers with data (so a NODATA with the zone's negative TTL may be cached on one side).
pub(super) fn changes_families(r: &Rollout, pool: &Pool) -> bool {
    let families = |group: &str| {
        let mut v4 = false;
        let mut v6 = false;
        for e in pool
            .groups
            .iter()
            .filter(|g| g.name == group)
            .flat_map(|g| &g.endpoints)
        {
            v4 |= e.address.is_ipv4();
            v6 |= e.address.is_ipv6();
        }
        (v4, v6)
    };
    families(&r.from) != families(&r.to)
}

fn set_weight(next: &mut Rollout, before: &Rollout, weight: u32, cx: &Context<'_>) {
    next.weight = weight;
    changed(next, before, cx);
}

pub(super) fn tick(r: &Rollout, cx: &Context<'_>) -> Option<Rollout> {
    let mut next = r.clone();
    if let Some(endpoint) = cx.seen.to_down.as_deref()
        && super::active(r)
        && r.weight > 0
    {
        next.state = RolloutState::Aborted {
            reason: format!(
                "health gate: endpoint {endpoint} of group `{}` is down",
                r.to
            ),
            cause: AbortCause::Health,
        };
        set_weight(&mut next, r, 0, cx);
        return Some(next);
    }
    if r.state != RolloutState::Running || !settled(r, cx) {
        return None;
    }
    match r.steps.get(r.step) {
        None => next.state = RolloutState::Done,
        Some(Step::SetWeight(w)) => {
            set_weight(&mut next, r, *w, cx);
            next.step += 1;
        }
        Some(Step::Pause(Some(secs))) if cx.now >= r.settled_at.saturating_add(ms(*secs)) => {
            next.step += 1;
        }
        // A manual pause, too, starts once the last change has settled.
        Some(Step::Pause(None)) => next.state = RolloutState::WaitingPromote,
        Some(Step::Pause(Some(_))) => return None,
    }
    Some(next)
}

/// `to` must be ready before a promote sends it traffic.
fn ready(seen: &Observed) -> Result<(), String> {
    seen.to_ready
        .clone()
        .map_err(|why| format!("promote refused: {why}"))
}

pub(super) fn command(
    r: &Rollout,
    cmd: &super::Command,
    cx: &Context<'_>,
) -> Result<Rollout, String> {
    use super::Command;
    let mut next = r.clone();
    let state = &r.state;
    let active = super::active(r);
    match cmd {
        Command::Promote { full: true } if active => {
            if r.weight < 100 {
                ready(cx.seen)?;
            }
            set_weight(&mut next, r, 100, cx);
            next.step = r.steps.len();
            next.state = RolloutState::Running;
        }
        Command::Promote { full: false } if active => {
            next.state = RolloutState::Running;
            // Past a pause if we are at one, then the next weight change, now.
            if matches!(r.steps.get(next.step), Some(Step::Pause(_))) {
                next.step += 1;
            }
            if let Some(Step::SetWeight(w)) = r.steps.get(next.step) {
                if *w > r.weight {
                    ready(cx.seen)?;
                }
                set_weight(&mut next, r, *w, cx);
                next.step += 1;
            }
        }
        Command::Resume if *state == RolloutState::Paused => next.state = RolloutState::Running,
        Command::Undo if active => {
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
            let previous = executed
                .len()
                .checked_sub(2)
                .and_then(|i| executed.get(i))
                .map_or(0, |e| e.1);
            set_weight(&mut next, r, previous, cx);
            next.step = at;
            next.state = RolloutState::Paused;
        }
        _ => return Err(super::does_not_apply(r, cmd)),
    }
    Ok(next)
}

/// The next step of a weight shift and when it is due.
pub(super) fn next_due(r: &Rollout) -> Due {
    let upcoming = |at: usize| match r.steps.get(at) {
        Some(Step::SetWeight(w)) => format!("set_weight {w}"),
        Some(Step::Pause(Some(secs))) => format!("pause {secs}s"),
        Some(Step::Pause(None)) => "waiting for promote".into(),
        None => "done".into(),
    };
    let (what, at) = match (&r.state, r.steps.get(r.step)) {
        // A timed pause ends its length after the last change settled; then the step after it.
        (RolloutState::Running, Some(Step::Pause(Some(secs)))) => (
            upcoming(r.step + 1),
            Some(r.settled_at.saturating_add(ms(*secs))),
        ),
        (RolloutState::Running, _) => (upcoming(r.step), Some(r.settled_at)),
        (RolloutState::WaitingPromote, _) => match r.steps.get(r.step + 1) {
            Some(Step::SetWeight(_)) => (
                format!("waiting for promote, then {}", upcoming(r.step + 1)),
                None,
            ),
            _ => ("waiting for promote".into(), None),
        },
        _ => (
            format!(
                "none while paused; resume continues with {}",
                upcoming(r.step)
            ),
            None,
        ),
    };
    Due { what, at }
}
