//! Health probes (HTTP, HTTPS, TCP), rise/fall hysteresis, and the `Monitor` that probes every
//! distinct `ProbeKey` from one scheduler task. Probes never touch DNS state: the scheduler
//! sends a `Flip` on a flip and nothing else (the state writer turns it into
//! `StateEvent::Health`). reqwest is named only in this module.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::model::{CheckKind, Health, ProbeKey};

pub mod metric;
mod probe;
mod scheduler;

/// Probes in flight at once, across all targets. Probes beyond it wait for a permit; the wait is
/// not part of the probe's timeout, so a burst of probes cannot make healthy targets look slow.
pub const MAX_IN_FLIGHT: usize = 256;

/// Rise/fall hysteresis over consecutive probe results (like pingora's `health_threshold` and
/// gdnsd's anti-flap counters): health flips only after `fall` failures in a row while Up, or
/// `rise` successes in a row while Down. One result of the other kind resets the streak, so a
/// target that alternates good and bad keeps the health it has.
///
/// With `initial = Down`, `rise` consecutive successes are needed before the first Up; with
/// `initial = Up`, `fall` consecutive failures before the first Down. A `rise` or `fall` of 0 is
/// treated as 1 (config validation rejects it anyway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hysteresis {
    health: Health,
    rise: u32,
    fall: u32,
    /// Consecutive results that disagree with `health`.
    streak: u32,
}

impl Hysteresis {
    pub fn new(initial: Health, rise: u32, fall: u32) -> Self {
        Hysteresis {
            health: initial,
            rise: rise.max(1),
            fall: fall.max(1),
            streak: 0,
        }
    }

    /// Feeds one probe result; returns Some(new health) only when the health flips.
    pub fn observe(&mut self, ok: bool) -> Option<Health> {
        let (agrees, threshold, flipped) = match self.health {
            Health::Up => (ok, self.fall, Health::Down),
            Health::Down => (!ok, self.rise, Health::Up),
        };
        if agrees {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak < threshold {
            return None;
        }
        self.streak = 0;
        self.health = flipped;
        Some(flipped)
    }

    pub fn health(&self) -> Health {
        self.health
    }
}

/// When one probe task probes: the first time soon after it starts (within the first 10% of its
/// interval, so weir is ready quickly while a reload does not fire every probe in one instant),
/// then every interval on a grid of its own (`origin + k × interval`, a random phase), each probe
/// jittered by ±5% of the interval around its grid point. The phases spread thousands of targets
/// evenly over the interval and keep them spread (jitter that accumulates would let them drift
/// into bunches); the jitter keeps two weir nodes or two targets from probing in lockstep.
///
/// Successive probes are always 0.9-1.1 intervals apart, from start to start, so a slow target
/// does not stretch its own interval and `fall × interval × 1.1 + timeout` bounds detection even
/// right after start: a task walks onto its grid by at most 0.1 interval per probe (5 probes
/// at most) rather than jumping there.
///
/// Probe starts are rounded up to `TICK`s counted from one epoch shared by every task, so the
/// runtime wakes once per tick for all the probes due in it (~40 per tick for 10,000 targets
/// every 5 s) rather than once per probe: evenly spread probes otherwise cost half again as
/// much CPU in wake-ups as the probes themselves (bench/RESULTS.md, issue 13).
#[derive(Clone, Copy, Debug)]
struct Schedule {
    interval: std::time::Duration,
    epoch: Instant,
    /// A point of this task's grid, not after its start.
    origin: Instant,
    /// When the next probe starts.
    next: Instant,
}

impl Schedule {
    /// `random` returns uniform values in [0, 1); `epoch` is the same for every task and not
    /// after `now`.
    fn new(
        epoch: Instant,
        now: Instant,
        interval: std::time::Duration,
        mut random: impl FnMut() -> f64,
    ) -> Self {
        let first = now + interval.mul_f64(0.1 * random());
        Schedule {
            interval,
            epoch,
            origin: now - interval.mul_f64(random()),
            next: on_tick(epoch, first),
        }
    }

    /// Moves to the probe after the one starting at `now`.
    fn advance(&mut self, now: Instant, mut random: impl FnMut() -> f64) {
        let interval = self.interval.as_secs_f64();
        let plain = now + self.interval;
        // Signed distance from `plain` to the nearest grid point, in [-interval/2, interval/2).
        let past = plain.duration_since(self.origin).as_secs_f64() % interval;
        let to_grid = if past >= interval / 2.0 {
            interval - past
        } else {
            -past
        };
        let jitter = (2.0 * random() - 1.0) * 0.05 * interval;
        // Rounding up to a tick adds up to one tick: keep room for it within ±10%.
        let room = (0.1 * interval - TICK.as_secs_f64()).max(0.0);
        let shift = (to_grid + jitter).clamp(-room, room);
        let next = if shift >= 0.0 {
            plain + std::time::Duration::from_secs_f64(shift)
        } else {
            plain - std::time::Duration::from_secs_f64(-shift)
        };
        self.next = on_tick(self.epoch, next);
    }
}

/// The granularity of probe start times (see `Schedule`).
const TICK: std::time::Duration = std::time::Duration::from_millis(20);

/// `at` rounded up to a whole number of `TICK`s after `epoch`.
fn on_tick(epoch: Instant, at: Instant) -> Instant {
    let ticks = at
        .saturating_duration_since(epoch)
        .as_nanos()
        .div_ceil(TICK.as_nanos());
    epoch + TICK * u32::try_from(ticks).unwrap_or(u32::MAX)
}

/// Probes every distinct `ProbeKey` (one scheduler task for all of them, `scheduler.rs`).
/// Dropping the monitor stops every probe.
///
/// Each key probes on its own `Schedule` and keeps its own `Hysteresis`; a `Flip` is sent only
/// when health flips. The check's `initial` health is never announced, because the writer
/// already assumes it.
#[derive(Debug)]
pub struct Monitor {
    /// The last result of every probe, for the admin API (never read on the query path).
    last: LastResults,
    events: mpsc::Sender<Flip>,
    metrics: Arc<Metrics>,
    /// Stops the scheduler and every probe in flight; a child of the shutdown token.
    stop: CancellationToken,
    shared: Arc<scheduler::Shared>,
    /// The scheduler task runs (started by the first `set_probes`, inside the runtime).
    started: bool,
    /// Where every probe schedule counts its ticks from.
    epoch: Instant,
}

/// A probe's health flipped after hysteresis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flip {
    pub key: ProbeKey,
    pub health: Health,
    /// Why, for the log: the last probe's result ("HTTP 503", "timeout after 2s", ...).
    pub reason: String,
    /// When the probe result that flipped it arrived (`weir_health_flip_publish_seconds`).
    pub at: Instant,
}

/// A probe's most recent result.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LastResult {
    pub ok: bool,
    /// "HTTP 200", "connect: connection refused", ...
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// How long the probe took, in milliseconds (`weir_probe_duration_seconds` is by kind only).
    pub duration_ms: u64,
    /// Health after hysteresis.
    pub health: Health,
    /// Successful probes in a row, ending with this one (0 when it failed).
    pub passes: u32,
    /// When the first probe of that run of successes started (Unix ms): rollouts count only
    /// probes that started after a batch was promoted.
    pub passing_since: Option<u64>,
}

/// Shared map of last results, written by the scheduler, read by the admin API and rollouts.
pub type LastResults = Arc<std::sync::Mutex<HashMap<ProbeKey, LastResult>>>;

impl Monitor {
    pub fn new(
        events: mpsc::Sender<Flip>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Monitor {
            last: LastResults::default(),
            events,
            metrics,
            stop: shutdown.child_token(),
            shared: Arc::default(),
            started: false,
            epoch: Instant::now(),
        }
    }

    /// Replaces the set of probes (called at start and after every config reload): keys still
    /// present keep their schedule and hysteresis state; removed keys stop (a probe of theirs
    /// in flight is aborted); new keys start. Duplicate keys are probed once. Must be called
    /// inside a tokio runtime.
    ///
    /// A removed key may already have handed a flip to the channel, so the writer should
    /// ignore `Health` events for keys it no longer has.
    pub fn set_probes(&mut self, keys: impl IntoIterator<Item = ProbeKey>) {
        let wanted: HashSet<ProbeKey> = keys.into_iter().collect();
        for target in self.shared.set(wanted, self.epoch, &self.last) {
            self.metrics.forget_probe(&target);
        }
        if !self.started {
            self.started = true;
            let scheduler = scheduler::Scheduler::new(
                Arc::clone(&self.shared),
                self.events.clone(),
                Arc::clone(&self.metrics),
                Arc::clone(&self.last),
                self.stop.clone(),
            );
            tokio::spawn(scheduler.run());
        }
    }

    /// The last result of every current probe.
    pub fn last_results(&self) -> LastResults {
        Arc::clone(&self.last)
    }

    /// True once every current probe has produced at least one result (used for /readyz). A
    /// first result that flipped health counts only after its event is on the channel.
    pub fn first_round_done(&self) -> bool {
        self.shared.all_reported()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn kind_label(kind: CheckKind) -> &'static str {
    match kind {
        CheckKind::Http => "http",
        CheckKind::Https => "https",
        CheckKind::Tcp => "tcp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::{Down, Up};

    /// Feeds `results` ('+' ok, '-' failed) and returns the flips as (index, new health).
    fn flips(initial: Health, rise: u32, fall: u32, results: &str) -> Vec<(usize, Health)> {
        let mut h = Hysteresis::new(initial, rise, fall);
        results
            .chars()
            .enumerate()
            .filter_map(|(i, c)| h.observe(c == '+').map(|to| (i, to)))
            .collect()
    }

    /// Name, initial health, rise, fall, results, expected flips.
    type Case = (
        &'static str,
        Health,
        u32,
        u32,
        &'static str,
        &'static [(usize, Health)],
    );

    #[test]
    fn hysteresis_table() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("up stays up on success", Up, 2, 3, "++++", &[]),
            ("fall failures take it down", Up, 2, 3, "---", &[(2, Down)]),
            ("two failures are not enough", Up, 2, 3, "--+--+", &[]),
            ("a success resets the fall streak", Up, 2, 3, "--+---", &[(5, Down)]),
            ("rise successes bring it up", Up, 2, 3, "---++", &[(2, Down), (4, Up)]),
            ("initial down needs rise successes", Down, 3, 2, "++", &[]),
            ("initial down, rise reached", Down, 3, 2, "+++", &[(2, Up)]),
            ("initial down, failures are silent", Down, 3, 2, "----", &[]),
            ("rise=1 and fall=1 follow every change", Down, 1, 1, "+-+", &[(0, Up), (1, Down), (2, Up)]),
            ("flapping never rises", Down, 3, 3, "+-+-+-+-+-+-", &[]),
            ("flapping never falls", Up, 3, 3, "-+-+-+-+-+-+", &[]),
            ("flapping with pairs stays down", Down, 3, 3, "++--++--++--", &[]),
            ("zero thresholds act as one", Up, 0, 0, "-+", &[(0, Down), (1, Up)]),
            ("streak restarts after a flip", Up, 2, 2, "--+-++", &[(1, Down), (5, Up)]),
        ];
        for (name, initial, rise, fall, results, want) in cases {
            assert_eq!(
                flips(*initial, *rise, *fall, results),
                *want,
                "{name}: {results}"
            );
        }
    }

    /// 10,000 targets at a 5 s interval: the first probes come within the first 10%, every
    /// gap between two probes of one target is 0.9-1.1 intervals, and after 5 probes the
    /// targets are spread evenly over the interval and stay spread.
    #[test]
    fn schedules_spread_targets_evenly_and_keep_them_spread() {
        use std::time::Duration;
        let interval = Duration::from_secs(5);
        let start = Instant::now();
        let mut rng = fastrand::Rng::with_seed(13);
        let phase = |at: Instant| ((at - start).as_secs_f64() / 5.0).fract();
        let (mut sixth, mut hundredth) = ([0u32; 10], [0u32; 10]);
        for _ in 0..10_000 {
            let mut schedule = Schedule::new(start, start, interval, || rng.f64());
            assert!(schedule.next - start <= interval / 10);
            let mut last = schedule.next;
            for round in 1..=100 {
                schedule.advance(schedule.next, || rng.f64());
                let gap = (schedule.next - last).as_secs_f64() / 5.0;
                assert!((0.9..=1.1).contains(&gap), "round {round}: gap {gap}");
                last = schedule.next;
                if round == 5 {
                    sixth[(phase(last) * 10.0) as usize] += 1;
                }
            }
            hundredth[(phase(last) * 10.0) as usize] += 1;
        }
        for buckets in [sixth, hundredth] {
            assert!(
                buckets.iter().all(|&n| (850..=1150).contains(&n)),
                "{buckets:?}"
            );
        }
    }

    /// A probe that starts late (a stalled runtime) is followed by one an interval later, not
    /// by the ones it missed.
    #[test]
    fn a_late_probe_does_not_fire_the_missed_ones() {
        use std::time::Duration;
        let interval = Duration::from_secs(5);
        let start = Instant::now();
        let mut schedule = Schedule::new(start, start, interval, || 0.5);
        let late = start + Duration::from_secs(60);
        schedule.advance(late, || 0.5);
        let gap = (schedule.next - late).as_secs_f64();
        assert!((4.5..=5.5).contains(&gap), "{gap}");
    }

    /// Every start is on a tick of the shared epoch, whatever the task's own start time.
    #[test]
    fn probe_starts_fall_on_shared_ticks() {
        use std::time::Duration;
        let epoch = Instant::now();
        let mut rng = fastrand::Rng::with_seed(5);
        for offset in [0, 1, 7, 19, 20, 1234] {
            let start = epoch + Duration::from_millis(offset);
            let mut schedule = Schedule::new(epoch, start, Duration::from_secs(5), || rng.f64());
            for _ in 0..10 {
                let since = (schedule.next - epoch).as_nanos();
                assert_eq!(since % TICK.as_nanos(), 0, "{since}");
                schedule.advance(schedule.next, || rng.f64());
            }
        }
    }

    #[test]
    fn hysteresis_reports_current_health() {
        let mut h = Hysteresis::new(Down, 2, 2);
        assert_eq!(h.health(), Down);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.health(), Down);
        assert_eq!(h.observe(true), Some(Up));
        assert_eq!(h.health(), Up);
        assert_eq!(h.observe(true), None, "no event without a flip");
    }
}
