//! One task drives every probe. Each probe key is a plain `Slot` in a table (its schedule,
//! hysteresis and streaks) and a heap orders the slots by their next start; a due probe runs in
//! a short task of its own that lives only while it probes and reports back on a channel. An
//! idle target costs its slot (~200 bytes) rather than a task, a timer and a cancellation token
//! of its own (~1.9 KiB with 10,000 targets; bench/RESULTS.md, issue 13), and the runtime wakes
//! once per due tick for all the probes in it.
//!
//! The monitor changes the table (`set_probes`) under its lock and rings `wake`; the scheduler
//! takes the lock only to move slots between probes, never across an await.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::probe::{Outcome, Prober};
use super::{Flip, Hysteresis, LastResult, LastResults, MAX_IN_FLIGHT, Schedule, kind_label};
use crate::metrics::{Metrics, ProbeSeries};
use crate::model::{CheckKind, ProbeKey};

/// What the monitor and the scheduler task share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    table: Mutex<Table>,
    /// Rung when probes were added: the scheduler looks at the heap again.
    wake: Notify,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the set of probes: slots of keys still present keep their state, the others go
    /// (a probe of theirs in flight is aborted), new keys get a slot whose first probe comes
    /// within the first 10% of its interval, and `last` keeps only current keys' results (under
    /// the table's lock, which the scheduler holds while it records one, so none of a removed
    /// key can land after). Returns the targets no remaining key probes.
    pub(super) fn set(
        &self,
        wanted: HashSet<ProbeKey>,
        epoch: Instant,
        last: &LastResults,
    ) -> Vec<String> {
        let now = Instant::now();
        let mut table = self.table();
        let gone: Vec<ProbeKey> = table
            .index
            .keys()
            .filter(|key| !wanted.contains(*key))
            .cloned()
            .collect();
        let targets: HashSet<std::net::SocketAddr> = wanted.iter().map(|k| k.target).collect();
        let mut forget: Vec<String> = Vec::new();
        for key in gone {
            table.remove(&key);
            // Series are by target: keep them while another check still probes it.
            if !targets.contains(&key.target) {
                forget.push(key.target.to_string());
            }
        }
        if let Ok(mut last) = last.lock() {
            last.retain(|key, _| wanted.contains(key));
        }
        for key in wanted {
            if !table.index.contains_key(&key) {
                table.insert(key, epoch, now);
            }
        }
        drop(table);
        self.wake.notify_one();
        forget.sort();
        forget.dedup();
        forget
    }

    /// Every current probe has produced a first result (and its flip is on the channel).
    pub(super) fn all_reported(&self) -> bool {
        self.table().unreported == 0
    }
}

/// Every probe key's slot, and when each probes next.
#[derive(Debug, Default)]
struct Table {
    slots: Vec<Option<Slot>>,
    /// Indexes of empty slots, reused before the table grows.
    free: Vec<u32>,
    index: HashMap<ProbeKey, u32>,
    /// (start, slot, generation), soonest first. Entries of removed slots stay until they come
    /// up and are skipped then (their generation no longer matches).
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Counts slots ever made: a slot's generation tells a reused index from its old key.
    made: u32,
    /// Current slots without a first result yet.
    unreported: usize,
}

/// One probe key's state between probes.
#[derive(Debug)]
struct Slot {
    key: ProbeKey,
    generation: u32,
    /// Built by the first probe (for HTTPS it loads the system roots: too slow for the
    /// writer that calls `set_probes`, and too slow to repeat per probe).
    prober: Option<Prober>,
    hysteresis: Hysteresis,
    schedule: Schedule,
    passes: u32,
    /// When the first probe of the current run of successes started (Unix ms).
    passing_since: Option<u64>,
    /// A probe is running or waiting for a permit.
    busy: Option<Busy>,
    /// Its next start came while it was busy: probe again as soon as it reports.
    overdue: bool,
    /// It has had a result that judged the target.
    judged: bool,
    /// That first result counts for readiness: it flipped nothing, or its flip is on the
    /// writer's channel.
    reported: bool,
    /// The current run of unknown results has been logged.
    warned: bool,
}

#[derive(Debug)]
enum Busy {
    /// Waiting for one of the `MAX_IN_FLIGHT` permits.
    Queued,
    /// Probing; aborted if the key goes away.
    Running(tokio::task::AbortHandle),
}

impl Table {
    fn insert(&mut self, key: ProbeKey, epoch: Instant, now: Instant) {
        self.made = self.made.wrapping_add(1);
        let check = &key.check;
        let slot = Slot {
            generation: self.made,
            prober: None,
            hysteresis: Hysteresis::new(check.initial, check.rise, check.fall),
            schedule: Schedule::new(epoch, now, check.interval, fastrand::f64),
            passes: 0,
            passing_since: None,
            busy: None,
            overdue: false,
            judged: false,
            reported: false,
            warned: false,
            key,
        };
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(None);
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.heap
            .push(Reverse((slot.schedule.next, index, slot.generation)));
        self.index.insert(slot.key.clone(), index);
        self.unreported += 1;
        if let Some(place) = self.slots.get_mut(index as usize) {
            *place = Some(slot);
        }
    }

    fn remove(&mut self, key: &ProbeKey) {
        let Some(index) = self.index.remove(key) else {
            return;
        };
        if let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::take) {
            if !slot.reported {
                self.unreported -= 1;
            }
            if let Some(Busy::Running(probe)) = slot.busy {
                probe.abort();
            }
        }
        self.free.push(index);
    }

    /// The slot at `index` if it still holds the key of `generation`.
    fn live(&mut self, index: u32, generation: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(index as usize)?
            .as_mut()
            .filter(|slot| slot.generation == generation)
    }

    fn mark_reported(&mut self, index: u32, generation: u32) {
        if let Some(slot) = self.live(index, generation)
            && !slot.reported
        {
            slot.reported = true;
            self.unreported -= 1;
        }
    }
}

/// A probe's result, sent back by its task.
struct Done {
    index: u32,
    generation: u32,
    /// Present when this probe built the slot's prober.
    prober: Option<Prober>,
    outcome: Outcome,
    /// When it started (Unix ms) and how long it took.
    started: u64,
    took: Duration,
}

/// The scheduler task's own state.
pub(super) struct Scheduler {
    shared: Arc<Shared>,
    events: mpsc::Sender<Flip>,
    metrics: Arc<Metrics>,
    last: LastResults,
    stop: CancellationToken,
    /// Duration series by kind: http, https, tcp.
    series: [ProbeSeries; 3],
    permits: Arc<Semaphore>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// Due while every permit was taken: started in order as probes finish.
    waiting: VecDeque<(u32, u32)>,
    /// Flips the writer's channel has not taken yet, in order, each with the slot whose first
    /// result it was (that slot counts as reported once its flip is on the channel).
    pending: VecDeque<(Flip, Option<(u32, u32)>)>,
}

fn series_index(kind: CheckKind) -> usize {
    match kind {
        CheckKind::Http => 0,
        CheckKind::Https => 1,
        CheckKind::Tcp => 2,
    }
}

impl Scheduler {
    pub(super) fn new(
        shared: Arc<Shared>,
        events: mpsc::Sender<Flip>,
        metrics: Arc<Metrics>,
        last: LastResults,
        stop: CancellationToken,
    ) -> Self {
        let series = [CheckKind::Http, CheckKind::Https, CheckKind::Tcp]
            .map(|kind| metrics.probe_series(kind_label(kind)));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Scheduler {
            shared,
            events,
            metrics,
            last,
            stop,
            series,
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            done_tx,
            done_rx,
            waiting: VecDeque::new(),
            pending: VecDeque::new(),
        }
    }

    pub(super) async fn run(mut self) {
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        loop {
            let next = self.shared.table().heap.peek().map(|Reverse((at, ..))| *at);
            if let Some(at) = next
                && sleep.deadline() != at
            {
                sleep.as_mut().reset(at);
            }
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                Some(done) = self.done_rx.recv() => self.finished(done),
                permit = self.events.clone().reserve_owned(), if !self.pending.is_empty() => {
                    // The writer is gone (shutting down): nobody is left to tell.
                    let Ok(permit) = permit else { return };
                    let shared = Arc::clone(&self.shared);
                    self.send_one(&mut shared.table(), permit);
                }
                () = &mut sleep, if next.is_some() => self.start_due(),
                () = self.shared.wake.notified() => {}
            }
        }
    }

    /// Starts (or queues) every probe whose time has come.
    fn start_due(&mut self) {
        let now = Instant::now();
        let shared = Arc::clone(&self.shared);
        let mut table = shared.table();
        while let Some(&Reverse((at, index, generation))) = table.heap.peek() {
            if at > now {
                break;
            }
            table.heap.pop();
            self.due(&mut table, index, generation, now);
        }
    }

    /// The probe of slot `index` is due at `now`: its next start is scheduled and it runs, or
    /// waits for a permit, or (still busy with the last one) runs as soon as that reports.
    fn due(&mut self, table: &mut Table, index: u32, generation: u32, now: Instant) {
        let Some(slot) = table.live(index, generation) else {
            return;
        };
        if slot.busy.is_some() {
            slot.overdue = true;
            return;
        }
        slot.schedule.advance(now, fastrand::f64);
        let next = slot.schedule.next;
        table.heap.push(Reverse((next, index, generation)));
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => self.spawn(table, index, generation, permit),
            Err(_) => {
                if let Some(slot) = table.live(index, generation) {
                    slot.busy = Some(Busy::Queued);
                }
                self.waiting.push_back((index, generation));
            }
        }
    }

    /// Runs one probe of slot `index` in a task of its own.
    fn spawn(&self, table: &mut Table, index: u32, generation: u32, permit: OwnedSemaphorePermit) {
        let Some(slot) = table.live(index, generation) else {
            return;
        };
        let key = slot.key.clone();
        let prober = slot.prober.clone();
        let done = self.done_tx.clone();
        let stop = self.stop.clone();
        let probe = tokio::spawn(async move {
            let _permit = permit;
            let built = prober.is_none();
            let prober = prober.unwrap_or_else(|| Prober::new(&key));
            let started = crate::clock::now_ms();
            let began = Instant::now();
            let outcome = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                outcome = prober.within(&key.check) => outcome,
            };
            let _ = done.send(Done {
                index,
                generation,
                prober: built.then_some(prober),
                outcome,
                started,
                took: began.elapsed(),
            });
        });
        slot.busy = Some(Busy::Running(probe.abort_handle()));
    }

    /// A probe reported: its result goes through hysteresis into the last results, the
    /// metrics and, on a flip, the writer's channel; queued and overdue probes start.
    fn finished(&mut self, done: Done) {
        let shared = Arc::clone(&self.shared);
        let mut table = shared.table();
        self.record(&mut table, done);
        while let Some(&(index, generation)) = self.waiting.front() {
            let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
                break;
            };
            self.waiting.pop_front();
            self.spawn(&mut table, index, generation, permit);
        }
    }

    fn record(&mut self, table: &mut Table, done: Done) {
        let Done {
            index,
            generation,
            prober,
            outcome,
            started,
            took,
        } = done;
        let Some(slot) = table.live(index, generation) else {
            return;
        };
        slot.busy = None;
        if prober.is_some() {
            slot.prober = prober;
        }
        let kind = slot.key.check.kind;
        self.series[series_index(kind)].observe(took.as_secs_f64());
        let target = slot.key.target;
        let label = || target.to_string();
        if let Some(reason) = outcome.failure {
            self.metrics.probe_failed(&label(), reason);
        }
        let duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        let first = !slot.judged && !outcome.unknown;
        let mut flip = None;
        if outcome.unknown {
            // weir is out of descriptors: the target was never asked. Health, streaks and
            // readiness stay as they are; the admin API shows the reason.
            if !slot.warned {
                slot.warned = true;
                tracing::warn!(
                    probe = %slot.key.target,
                    reason = %outcome.reason,
                    "probe result unknown: weir is out of file descriptors; health unchanged"
                );
            }
        } else {
            slot.warned = false;
            slot.judged = true;
            flip = slot.hysteresis.observe(outcome.ok);
            if outcome.ok {
                slot.passes = slot.passes.saturating_add(1);
                slot.passing_since.get_or_insert(started);
            } else {
                slot.passes = 0;
                slot.passing_since = None;
            }
            tracing::debug!(
                probe = %slot.key.target,
                ok = outcome.ok,
                reason = %outcome.reason,
                health = ?slot.hysteresis.health(),
                "probe result"
            );
            if first || flip.is_some() {
                self.metrics
                    .probe_health(&label(), kind_label(kind), slot.hysteresis.health());
            }
        }
        // Not a pass when unknown: a rollout waiting for fresh probes keeps waiting.
        let (passes, passing_since) = match outcome.unknown {
            true => (0, None),
            false => (slot.passes, slot.passing_since),
        };
        let result = LastResult {
            ok: outcome.ok,
            reason: outcome.reason.clone(),
            at: crate::clock::wall_secs(),
            duration_ms,
            health: slot.hysteresis.health(),
            passes,
            passing_since,
        };
        self.remember(&slot.key, result);
        if let Some(health) = flip {
            self.metrics.health_transition(&label(), health);
            tracing::info!(
                probe = %slot.key.target,
                kind = kind_label(kind),
                ?health,
                reason = %outcome.reason,
                "probe health flipped"
            );
            let event = Flip {
                key: slot.key.clone(),
                health,
                at: Instant::now(),
                reason: outcome.reason,
            };
            // A full channel means the writer is busy: the flip waits here rather than be
            // dropped, since a lost flip would leave the served health wrong until the next.
            let marker = first.then_some((index, generation));
            self.pending.push_back((event, marker));
            self.flush(table);
        } else if first {
            table.mark_reported(index, generation);
        }
        if let Some(slot) = table.live(index, generation)
            && std::mem::take(&mut slot.overdue)
        {
            self.due(table, index, generation, Instant::now());
        }
    }

    /// Writes a key's latest result where the admin API and rollouts read it.
    fn remember(&self, key: &ProbeKey, result: LastResult) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        // In place: no clone of the key once it is there.
        match last.get_mut(key) {
            Some(place) => *place = result,
            None => {
                last.insert(key.clone(), result);
            }
        }
    }

    /// Hands waiting flips to the writer's channel while it has room.
    fn flush(&mut self, table: &mut Table) {
        while !self.pending.is_empty() {
            let Ok(permit) = self.events.clone().try_reserve_owned() else {
                return;
            };
            self.send_one(table, permit);
        }
    }

    fn send_one(&mut self, table: &mut Table, permit: mpsc::OwnedPermit<Flip>) {
        let Some((flip, marker)) = self.pending.pop_front() else {
            return;
        };
        permit.send(flip);
        if let Some((index, generation)) = marker {
            table.mark_reported(index, generation);
        }
    }
}
