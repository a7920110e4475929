//! Health probes (HTTP, HTTPS, TCP), rise/fall hysteresis, and the `Monitor` that runs one probe
//! task per distinct `ProbeKey`. Probes never touch DNS state: a task sends a
//! a `Flip` on a flip and nothing else (the state writer turns it into `StateEvent::Health`). reqwest is named only in this module.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::model::{CheckKind, Health, ProbeKey};

pub mod metric;
mod probe;
use probe::{Outcome, Prober};

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

/// Runs one task per distinct `ProbeKey`. Dropping the monitor stops every probe.
///
/// Each task probes right away (after a random 0-10% of its interval, so a reload does not fire
/// every probe in the same instant), then every `interval` ± 10%. It keeps its own `Hysteresis`
/// and sends a `Flip` only when health flips; the check's `initial` health is never
/// announced, because the writer already assumes it.
#[derive(Debug)]
pub struct Monitor {
    /// The last result of every probe, for the admin API (never read on the query path).
    last: LastResults,
    events: mpsc::Sender<Flip>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    permits: Arc<Semaphore>,
    probes: HashMap<ProbeKey, Running>,
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
    /// Health after hysteresis.
    pub health: Health,
    /// Successful probes in a row, ending with this one (0 when it failed).
    pub passes: u32,
    /// When the first probe of that run of successes started (Unix ms): rollouts count only
    /// probes that started after a batch was promoted.
    pub passing_since: Option<u64>,
}

/// Shared map of last results, written by probe tasks, read by the admin API.
pub type LastResults = Arc<std::sync::Mutex<HashMap<ProbeKey, LastResult>>>;

/// The monitor's handle on one probe task.
#[derive(Debug)]
struct Running {
    stop: CancellationToken,
    /// Set once the task has produced its first result (and sent its event, if that flipped).
    reported: Arc<AtomicBool>,
}

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
            shutdown,
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            probes: HashMap::new(),
        }
    }

    /// Replaces the set of probes (called at start and after every config reload): keys still
    /// present keep their running task and hysteresis state; removed keys' tasks stop; new keys
    /// start. Duplicate keys are probed once. Must be called inside a tokio runtime.
    ///
    /// A task being stopped may already have handed a flip for its key to the channel, so the
    /// writer should ignore `Health` events for keys it no longer has.
    pub fn set_probes(&mut self, keys: impl IntoIterator<Item = ProbeKey>) {
        let wanted: HashSet<ProbeKey> = keys.into_iter().collect();
        let metrics = &self.metrics;
        self.probes.retain(|key, running| {
            let keep = wanted.contains(key);
            if !keep {
                running.stop.cancel();
                metrics.forget_probe(&key.target.to_string(), kind_label(key.check.kind));
            }
            keep
        });
        if let Ok(mut last) = self.last.lock() {
            last.retain(|key, _| wanted.contains(key));
        }
        for key in wanted {
            if let Entry::Vacant(slot) = self.probes.entry(key) {
                let running = Running {
                    stop: self.shutdown.child_token(),
                    reported: Arc::new(AtomicBool::new(false)),
                };
                let label = slot.key().target.to_string();
                let task = ProbeTask {
                    series: self
                        .metrics
                        .probe_series(&label, kind_label(slot.key().check.kind)),
                    label,
                    key: slot.key().clone(),
                    events: self.events.clone(),
                    metrics: Arc::clone(&self.metrics),
                    permits: Arc::clone(&self.permits),
                    stop: running.stop.clone(),
                    reported: Arc::clone(&running.reported),
                    last: Arc::clone(&self.last),
                };
                slot.insert(running);
                tokio::spawn(task.run());
            }
        }
    }

    /// The last result of every current probe.
    pub fn last_results(&self) -> LastResults {
        Arc::clone(&self.last)
    }

    /// True once every current probe has produced at least one result (used for /readyz). A
    /// first result that flipped health counts only after its event is on the channel.
    pub fn first_round_done(&self) -> bool {
        self.probes
            .values()
            .all(|running| running.reported.load(Ordering::Acquire))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for running in self.probes.values() {
            running.stop.cancel();
        }
    }
}

/// Everything one probe task owns.
struct ProbeTask {
    key: ProbeKey,
    /// `key.target` as text, the metrics label.
    label: String,
    series: crate::metrics::ProbeSeries,
    events: mpsc::Sender<Flip>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
    reported: Arc<AtomicBool>,
    last: LastResults,
}

impl ProbeTask {
    async fn run(self) {
        let check = &self.key.check;
        // Built once per key: for https this loads the system roots, which is too slow per probe.
        let prober = Prober::new(&self.key);
        let mut hysteresis = Hysteresis::new(check.initial, check.rise, check.fall);
        let mut next = Instant::now() + check.interval.mul_f64(fastrand::f64() * 0.1);
        let (mut passes, mut passing_since) = (0u32, None);
        // Whether the current run of unknown results has been logged.
        let mut warned = false;
        loop {
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
            }
            // The schedule runs from probe start to probe start, so a slow target does not
            // stretch its own interval.
            next = Instant::now() + check.interval.mul_f64(0.9 + 0.2 * fastrand::f64());
            let started = crate::clock::now_ms();
            let outcome = tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                outcome = self.probe(&prober) => outcome,
            };
            if outcome.unknown {
                // weir is out of descriptors: the target was never asked. Health, streaks and
                // readiness stay as they are; the admin API shows the reason.
                self.unknown(&outcome, hysteresis.health(), &mut warned);
                continue;
            }
            warned = false;
            let first = !self.reported.load(Ordering::Acquire);
            let flip = hysteresis.observe(outcome.ok);
            if outcome.ok {
                passes = passes.saturating_add(1);
                passing_since.get_or_insert(started);
            } else {
                passes = 0;
                passing_since = None;
            }
            if let Ok(mut last) = self.last.lock() {
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let result = LastResult {
                    ok: outcome.ok,
                    reason: outcome.reason.clone(),
                    at,
                    health: hysteresis.health(),
                    passes,
                    passing_since,
                };
                // In place: no clone of the key once it is there.
                match last.get_mut(&self.key) {
                    Some(slot) => *slot = result,
                    None => {
                        last.insert(self.key.clone(), result);
                    }
                }
            }
            tracing::debug!(
                probe = %self.label,
                ok = outcome.ok,
                reason = %outcome.reason,
                health = ?hysteresis.health(),
                "probe result"
            );
            if first || flip.is_some() {
                self.metrics
                    .probe_health(&self.label, kind_label(check.kind), hysteresis.health());
            }
            if let Some(health) = flip {
                self.metrics.health_transition(&self.label, health);
                tracing::info!(
                    probe = %self.label,
                    kind = kind_label(check.kind),
                    ?health,
                    reason = %outcome.reason,
                    "probe health flipped"
                );
                let event = Flip {
                    key: self.key.clone(),
                    health,
                    at: Instant::now(),
                    reason: outcome.reason,
                };
                // A full channel means the writer is busy: wait for it rather than drop a flip,
                // since a lost flip would leave the served health wrong until the next one.
                tokio::select! {
                    biased;
                    () = self.stop.cancelled() => return,
                    sent = self.events.send(event) => if sent.is_err() {
                        // The writer is gone (shutting down): nobody is left to tell.
                        return;
                    },
                }
            }
            if first {
                self.reported.store(true, Ordering::Release);
            }
        }
    }

    /// Records a probe weir could not make (out of descriptors) without judging the target;
    /// warns once per run of them.
    fn unknown(&self, outcome: &Outcome, health: Health, warned: &mut bool) {
        if let Ok(mut last) = self.last.lock() {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            last.insert(
                self.key.clone(),
                LastResult {
                    ok: false,
                    reason: outcome.reason.clone(),
                    at,
                    health,
                    // Not a pass: a rollout waiting for fresh probes keeps waiting.
                    passes: 0,
                    passing_since: None,
                },
            );
        }
        if !*warned {
            *warned = true;
            tracing::warn!(
                probe = %self.label,
                reason = %outcome.reason,
                "probe result unknown: weir is out of file descriptors; health unchanged"
            );
        }
    }

    /// One probe under the concurrency limit and the check's timeout, recorded in metrics.
    async fn probe(&self, prober: &Prober) -> Outcome {
        let check = &self.key.check;
        let Ok(_permit) = self.permits.acquire().await else {
            return Outcome::failed("setup", "probe limiter closed".into());
        };
        let began = Instant::now();
        let outcome = match tokio::time::timeout(check.timeout, prober.once(check)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::failed(
                "timeout",
                format!(
                    "timeout after {}",
                    humantime::format_duration(check.timeout)
                ),
            ),
        };
        self.metrics.probe_observed(
            &self.series,
            &self.label,
            began.elapsed().as_secs_f64(),
            outcome.failure,
        );
        outcome
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
