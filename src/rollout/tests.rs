//! The transitions, table-driven: times are Unix milliseconds, TTL 30 s, slack 5 s, so every
//! change settles 36 s later (30 s + the 1 s TTL-0 grace + 5 s).

use super::*;
use crate::model::{Phase, RolloutPlan, Step};

fn plan() -> Plan {
    RolloutPlan {
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
        converged: None,
    }
}

fn pool_from(text: &str) -> Pool {
    crate::config::parse(text, std::path::Path::new("w.toml"))
        .unwrap()
        .pools
        .remove(0)
}

fn pool() -> Pool {
    pool_from(
        "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n[[pool]]\nname = \"app.example.com.\"\n[[pool.group]]\nname = \"blue\"\nendpoints = [{ address = \"192.0.2.10\" }]\n[[pool.group]]\nname = \"green\"\nendpoints = [{ address = \"192.0.2.20\" }]\n",
    )
}

const TTLS: Ttls = Ttls {
    pool: 30,
    negative: 60,
};

const S: u64 = 1000;

fn who() -> Who<'static> {
    Who {
        actor: "test",
        source: "",
        reason: "",
    }
}

fn run(
    r: Option<&Rollout>,
    cmd: &Command,
    pool: &Pool,
    now: u64,
    seen: &Observed,
) -> Result<Option<Rollout>, Refused> {
    let cx = Context {
        pool,
        ttls: TTLS,
        now,
        seen,
    };
    transition(r, cmd, &cx, who()).map(|o| o.map(|o| o.rollout))
}

fn start(plan: &Plan, pool: &Pool, now: u64) -> Rollout {
    run(
        None,
        &Command::Start(Box::new(plan.clone())),
        pool,
        now,
        &Observed::default(),
    )
    .unwrap()
    .unwrap()
}

fn tick(r: &Rollout, now: u64, seen: &Observed) -> Option<Rollout> {
    run(Some(r), &Command::Tick, &pool(), now, seen).unwrap()
}

fn cmd(r: &Rollout, c: Command, now: u64) -> Result<Rollout, Refused> {
    run(Some(r), &c, &pool(), now, &Observed::default()).map(|o| o.unwrap())
}

/// Runs ticks every 100 ms from `from` to `to` (ms), returning (ms, weight, state) at each
/// change.
fn walk(mut r: Rollout, from: u64, to: u64) -> (Rollout, Vec<(u64, u32, &'static str)>) {
    let mut changes = Vec::new();
    for t in (from..=to).step_by(100) {
        while let Some(next) = tick(&r, t, &Observed::default()) {
            r = next;
            changes.push((t, r.weight, state_name(&r.state)));
        }
    }
    (r, changes)
}

#[test]
fn the_settle_instant_is_ttl_plus_one_second_plus_slack_to_the_millisecond() {
    let cases = [
        // (changed, ttl, slack, settled)
        (1_000_123, 30, 5, 1_000_123 + 36_000),
        (0, 0, 0, 1_000),
        (5, 2, 0, 3_005),
        (u64::MAX - 10, 30, 5, u64::MAX),
        (0, u32::MAX, u64::MAX, u64::MAX),
    ];
    for (changed, ttl, slack, want) in cases {
        assert_eq!(
            settle_at(changed, ttl, slack),
            want,
            "{changed} {ttl} {slack}"
        );
    }
}

#[test]
fn steps_wait_for_settling_and_pauses_count_from_it() {
    let r = start(&plan(), &pool(), 1000 * S + 250);
    assert_eq!((r.weight, r.settled_at), (0, 1036 * S + 250));
    let (r, changes) = walk(r, 1000 * S, 2000 * S);
    assert_eq!(
        changes,
        vec![
            (1036 * S + 300, 5, "running"),  // first step once 0% settled
            (1132 * S + 300, 5, "running"),  // pause: 60 s after settling at 1072.3
            (1132 * S + 300, 50, "running"), // next weight at once (already settled)
            (1168 * S + 300, 50, "waiting for promote"), // manual pause once 50% settled
        ]
    );
    let r = cmd(&r, Command::Promote { full: false }, 3000 * S).unwrap();
    assert_eq!((r.weight, r.settled_at), (100, 3036 * S));
    let (r, changes) = walk(r, 3000 * S, 4000 * S);
    assert_eq!(changes, vec![(3036 * S, 100, "done")]);
    assert!(
        cmd(&r, Command::Pause { reason: None }, 4000 * S).is_err(),
        "done is done"
    );
}

#[test]
fn a_change_between_families_settles_under_the_negative_ttl_too() {
    // green is IPv6 only: moving weight to it turns AAAA NODATA into data (and A into NODATA).
    let pool = pool_from(
        "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n[[pool]]\nname = \"app.example.com.\"\n[[pool.group]]\nname = \"blue\"\nendpoints = [{ address = \"192.0.2.10\" }]\n[[pool.group]]\nname = \"green\"\nendpoints = [{ address = \"2001:db8::20\" }]\n",
    );
    let r = start(&plan(), &pool, 0);
    assert_eq!((r.settle_ttl, r.settled_at), (60, 66 * S));
}

#[test]
fn a_ramped_rollout_settles_its_first_step_on_the_old_ttl_and_later_ones_on_the_ramp() {
    let mut p = plan();
    p.ramp_ttl = Some(5);
    let r = start(&p, &pool(), 0);
    assert_eq!(r.settled_at, 36 * S, "answers from before carry TTL 30");
    let r = tick(&r, 36 * S, &Observed::default()).unwrap();
    assert_eq!(
        (r.weight, r.settle_ttl, r.settled_at),
        (5, 5, 36 * S + 11 * S)
    );
}

#[test]
fn plan_durations_cannot_overflow_deadlines() {
    let mut p = plan();
    p.steps = vec![Step::SetWeight(5), Step::Pause(Some(u64::MAX))];
    p.slack = u64::MAX;
    let r = start(&p, &pool(), 1000 * S);
    assert_eq!(r.settled_at, u64::MAX);
    assert_eq!(tick(&r, u64::MAX - 1, &Observed::default()), None);
    let r = tick(&r, u64::MAX, &Observed::default()).unwrap();
    assert_eq!(r.weight, 5);
    assert_eq!(
        tick(&r, u64::MAX, &Observed::default()).map(|r| r.step),
        Some(2)
    );
}

#[test]
fn with_several_nameservers_settling_starts_once_all_serve_the_change() {
    let shared = Observed {
        shared: true,
        ..Observed::default()
    };
    let r = run(
        None,
        &Command::Start(Box::new(plan())),
        &pool(),
        1000 * S,
        &shared,
    )
    .unwrap()
    .unwrap();
    assert!(r.awaiting_sync, "a shared store waits for every nameserver");
    assert_eq!(safe_at(&r), None);
    let unsynced = Observed {
        unsynced: true,
        shared: true,
        ..Observed::default()
    };
    assert_eq!(
        tick(&r, 1100 * S, &unsynced),
        None,
        "nothing moves before INSYNC"
    );
    let synced = tick(&r, 1200 * S, &shared).unwrap();
    assert!(!synced.awaiting_sync);
    assert_eq!(
        (synced.weight, synced.settled_at),
        (0, 1236 * S),
        "the clock starts at 1200"
    );
    assert_eq!(tick(&synced, 1236 * S - 1, &shared), None);
    let taking = run(Some(&synced), &Command::Tick, &pool(), 1236 * S, &shared)
        .unwrap()
        .unwrap();
    assert_eq!(taking.weight, 5);
    assert!(taking.awaiting_sync);
    // The health gate does not wait for anyone.
    let down = Observed {
        to_down: Some("192.0.2.20".into()),
        unsynced: true,
        shared: true,
        ..Observed::default()
    };
    let aborted = tick(&taking, 1237 * S, &down).unwrap();
    assert!(matches!(
        aborted.state,
        RolloutState::Aborted {
            cause: AbortCause::Health,
            ..
        }
    ));
}

#[test]
fn health_gate_aborts_only_while_to_takes_traffic_with_a_typed_cause() {
    let r = start(&plan(), &pool(), 0);
    let down = Observed {
        to_down: Some("192.0.2.20".into()),
        ..Observed::default()
    };
    assert_eq!(tick(&r, S, &down), None, "0% to: nothing to protect yet");
    let r = tick(&r, 36 * S, &Observed::default()).unwrap();
    let cx = Context {
        pool: &pool(),
        ttls: TTLS,
        now: 37 * S,
        seen: &down,
    };
    let outcome = transition(Some(&r), &Command::Tick, &cx, who())
        .unwrap()
        .unwrap();
    assert_eq!(outcome.aborted, Some(AbortCause::Health));
    assert!(
        outcome.record.reason.contains("192.0.2.20"),
        "{:?}",
        outcome.record
    );
    let aborted = outcome.rollout;
    assert_eq!((aborted.weight, aborted.settled_at), (0, 73 * S));
    assert_eq!(tick(&aborted, 99 * S, &down), None);
}

#[test]
fn promote_refuses_while_to_is_not_ready() {
    let mut p = plan();
    p.steps = vec![Step::Pause(None), Step::SetWeight(100), Step::Pause(None)];
    let r = start(&p, &pool(), 0);
    let r = tick(&r, 36 * S, &Observed::default()).unwrap();
    assert_eq!(r.state, RolloutState::WaitingPromote);
    let failing = Observed {
        to_ready: Err("endpoint 192.0.2.20 of `green` failed its last probe (HTTP 503)".into()),
        ..Observed::default()
    };
    let refused = run(
        Some(&r),
        &Command::Promote { full: false },
        &pool(),
        40 * S,
        &failing,
    );
    assert!(
        matches!(&refused, Err(Refused::Conflict(m)) if m.contains("HTTP 503")),
        "{refused:?}"
    );
    let promoted = cmd(&r, Command::Promote { full: false }, 40 * S).unwrap();
    assert_eq!((promoted.weight, safe_at(&promoted)), (100, Some(76 * S)));
    assert!(!safe(&promoted, 76 * S - 1, None));
    assert!(safe(&promoted, 76 * S, None));
}

#[test]
fn operator_commands() {
    let r = start(&plan(), &pool(), 0);
    let (r, _) = walk(r, 0, 1200 * S);
    assert_eq!(r.weight, 50);
    let paused = cmd(&r, Command::Pause { reason: None }, 1300 * S).unwrap();
    assert_eq!(
        walk(paused.clone(), 1300 * S, 2000 * S).1,
        vec![],
        "paused stays put"
    );
    let undone = cmd(&paused, Command::Undo, 1400 * S).unwrap();
    assert_eq!(
        (undone.weight, undone.step, state_name(&undone.state)),
        (5, 2, "paused")
    );
    let resumed = cmd(&undone, Command::Resume, 1500 * S).unwrap();
    let (again, _) = walk(resumed, 1500 * S, 1600 * S);
    assert_eq!(
        again.weight, 50,
        "resuming redoes the undone step once settled"
    );
    let full = cmd(&again, Command::Promote { full: true }, 1700 * S).unwrap();
    assert_eq!(full.weight, 100);
    let aborted = cmd(
        &again,
        Command::Abort {
            reason: String::new(),
            cause: AbortCause::Operator,
        },
        1700 * S,
    )
    .unwrap();
    assert_eq!(aborted.weight, 0);
    assert!(matches!(
        aborted.state,
        RolloutState::Aborted {
            cause: AbortCause::Operator,
            ..
        }
    ));
    assert!(cmd(&aborted, Command::Resume, 1800 * S).is_err());
    let fresh = start(&plan(), &pool(), 0);
    assert!(cmd(&fresh, Command::Undo, S).is_err(), "nothing to undo");
}

#[test]
fn next_due_is_what_the_rollout_waits_for() {
    let r = start(&plan(), &pool(), 0);
    let cases: Vec<(Rollout, &str, Option<u64>)> = vec![
        (r.clone(), "set_weight 5", Some(36 * S)),
        (
            {
                let mut r = tick(&r, 36 * S, &Observed::default()).unwrap();
                r.settled_at = 72 * S;
                r
            },
            "set_weight 50",
            Some(132 * S),
        ),
        (
            cmd(&r, Command::Pause { reason: None }, S).unwrap(),
            "none while paused; resume continues with set_weight 5",
            None,
        ),
        (
            {
                let mut r = r.clone();
                r.awaiting_sync = true;
                r
            },
            "the settle clock starts once every nameserver serves the change",
            None,
        ),
    ];
    for (r, what, at) in cases {
        assert_eq!(
            next_due(&r),
            Due {
                what: what.into(),
                at
            },
            "{r:?}"
        );
    }
}

#[test]
fn convergence_gates_steps_and_pauses_past_its_timeout() {
    let mut p = plan();
    p.converged = Some(crate::model::Converged {
        share: 0.99,
        timeout: 60,
    });
    let r = start(&p, &pool(), 0);
    let partly = Observed {
        refetched: Some(0.5),
        ..Observed::default()
    };
    assert_eq!(tick(&r, 40 * S, &partly), None, "settled but not converged");
    let all = Observed {
        refetched: Some(1.0),
        ..Observed::default()
    };
    assert_eq!(tick(&r, 40 * S, &all).unwrap().weight, 5);
    assert_eq!(tick(&r, 96 * S - 1, &partly), None);
    let held = tick(&r, 96 * S, &partly).unwrap();
    assert_eq!(held.state, RolloutState::Paused);
    assert!(
        held.hold.as_deref().unwrap().contains("50.0%"),
        "{:?}",
        held.hold
    );
    let resumed = cmd(&held, Command::Resume, 97 * S).unwrap();
    assert_eq!(resumed.hold, None, "an operator command clears the hold");
}

fn rolling_pool(pause: &str) -> Pool {
    pool_from(&format!(
        "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n[[pool]]\nname = \"app.example.com.\"\n[pool.rollout]\nkind = \"rolling\"\ngroup = \"web\"\nmax_unavailable = \"50%\"\npause = \"{pause}\"\nhealth_timeout = \"60s\"\nslack = \"0s\"\n[[pool.group]]\nname = \"web\"\nendpoints = [{{ address = \"192.0.2.1\" }}, {{ address = \"192.0.2.2\" }}]\n"
    ))
}

fn rtick(r: &Rollout, pool: &Pool, now: u64, seen: &Observed) -> Option<Rollout> {
    run(Some(r), &Command::Tick, pool, now, seen).unwrap()
}

#[test]
fn a_batch_that_does_not_come_back_stops_the_rollout_for_a_person() {
    let pool = rolling_pool("10s");
    let plan = pool.rollout.clone().unwrap();
    let r = start(&plan, &pool, 0);
    assert_eq!(drained(&r), [ip("192.0.2.1")]);
    assert_eq!(safe_at(&r), Some(31 * S));
    let sick = Observed {
        batch_fresh: Err("192.0.2.1: 0 of 1 passing probes since the promote".into()),
        ..Observed::default()
    };
    // Settled at 31 s, paused 10 s (no promote needed), then waiting for health.
    let r = rtick(&r, &pool, 31 * S, &sick).unwrap();
    assert_eq!(rtick(&r, &pool, 41 * S - 1, &sick), None);
    let r = rtick(&r, &pool, 41 * S, &sick).unwrap();
    assert_eq!(
        r.rolling.as_ref().unwrap().phase,
        Phase::WaitingHealthy { since: 41 * S }
    );
    assert_eq!(
        rtick(&r, &pool, 101 * S, &sick),
        None,
        "within the health timeout"
    );
    let stopped = rtick(&r, &pool, 101 * S + 1, &sick).unwrap();
    assert_eq!(stopped.state, RolloutState::Paused);
    assert!(
        stopped.hold.as_deref().unwrap().contains("0 of 1 passing"),
        "{:?}",
        stopped.hold
    );
    assert_eq!(
        drained(&stopped),
        [ip("192.0.2.1")],
        "still drained while a person decides"
    );
    // Resume gives it another health timeout; back, the next batch is drained.
    let resumed = run(Some(&stopped), &Command::Resume, &pool, 200 * S, &sick)
        .unwrap()
        .unwrap();
    let next = rtick(&resumed, &pool, 201 * S, &Observed::default()).unwrap();
    assert_eq!(drained(&next), [ip("192.0.2.2")]);
}

#[test]
fn a_promoted_batch_waits_for_probes_that_started_after_the_promote() {
    let pool = rolling_pool("manual");
    let plan = pool.rollout.clone().unwrap();
    let r = start(&plan, &pool, 0);
    let r = rtick(&r, &pool, 31 * S, &Observed::default()).unwrap();
    assert_eq!(r.state, RolloutState::WaitingPromote);
    let r = run(
        Some(&r),
        &Command::Promote { full: false },
        &pool,
        40 * S,
        &Observed::default(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        r.rolling.as_ref().unwrap().phase,
        Phase::WaitingHealthy { since: 40 * S }
    );
    let stale = Observed {
        batch_fresh: Err("192.0.2.1: 0 of 2 passing probes since the promote".into()),
        ..Observed::default()
    };
    assert_eq!(rtick(&r, &pool, 41 * S, &stale), None, "stays drained");
    assert_eq!(
        rtick(&r, &pool, 42 * S, &Observed::default()).map(|r| r.rolling.unwrap().batch),
        Some(1)
    );
}

#[test]
fn batches_follow_batch_size_and_max_unavailable() {
    let text = |batch: &str, max: &str| {
        format!(
            "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n[[pool]]\nname = \"app.example.com.\"\n[pool.rollout]\nkind = \"rolling\"\ngroup = \"web\"\nbatch = {batch}\nmax_unavailable = \"{max}\"\n[[pool.group]]\nname = \"web\"\nendpoints = [{{ address = \"192.0.2.1\" }}, {{ address = \"192.0.2.2\" }}, {{ address = \"192.0.2.3\" }}, {{ address = \"192.0.2.4\" }}]\n"
        )
    };
    let plan_of = |batch: &str, max: &str| {
        let pool = pool_from(&text(batch, max));
        let rp = pool.rollout.clone().unwrap().rolling.unwrap();
        batches(&rp, &pool)
    };
    let n = |b: Vec<Vec<std::net::IpAddr>>| b.iter().map(Vec::len).collect::<Vec<_>>();
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

#[test]
fn stored_second_times_are_read_as_milliseconds() {
    let mut r = start(&plan(), &pool(), 1_700_000_000_000);
    let mut json = serde_json::to_value(&r).unwrap();
    json["changed_at"] = 1_700_000_000u64.into();
    json["settled_at"] = 1_700_000_035u64.into();
    let old: Rollout = serde_json::from_value(json).unwrap();
    r.settled_at = 1_700_000_035_000;
    assert_eq!(old, r);
}

#[test]
fn a_rolling_batch_waits_for_convergence_only_while_it_drains() {
    let pool = rolling_pool("manual");
    let mut plan = pool.rollout.clone().unwrap();
    plan.converged = Some(crate::model::Converged {
        share: 0.99,
        timeout: 10,
    });
    let r = start(&plan, &pool, 0);
    let silent = Observed {
        refetched: Some(0.2),
        ..Observed::default()
    };
    assert_eq!(
        rtick(&r, &pool, 31 * S, &silent),
        None,
        "drained but not converged"
    );
    let held = rtick(&r, &pool, 41 * S, &silent).unwrap();
    assert_eq!(
        held.state,
        RolloutState::Paused,
        "past settling plus the timeout"
    );
    // Converged, the batch is safe to upgrade; once promoted, a low share (the upgraded batch's
    // own publications) does not stop it.
    let back = Observed {
        refetched: Some(1.0),
        ..Observed::default()
    };
    let safe = rtick(&r, &pool, 31 * S, &back).unwrap();
    let promoted = run(
        Some(&safe),
        &Command::Promote { full: false },
        &pool,
        100 * S,
        &back,
    )
    .unwrap()
    .unwrap();
    let waiting = Observed {
        refetched: Some(0.0),
        batch_fresh: Err("192.0.2.1: 0 of 1 passing probes since the promote".into()),
        ..Observed::default()
    };
    assert_eq!(rtick(&promoted, &pool, 120 * S, &waiting), None);
}

fn ip(text: &str) -> std::net::IpAddr {
    text.parse().unwrap()
}
