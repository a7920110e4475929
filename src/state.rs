//! The single writer. Every change to what weir serves arrives as a `StateEvent` on one bounded
//! channel; this task applies it, persists intent (through `Store`, flushed before any reply),
//! builds a new `Snapshot` from (config, zones, intent overlay, health) and publishes it with one
//! atomic swap. Start-up and reload share `load()`, so a served snapshot always came through the
//! same checks. A failed load or a refused change publishes nothing: the old snapshot keeps
//! serving.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, Problem, Problems};
use crate::health;
use crate::metrics::Metrics;
use crate::model::{
    AbortCause, AuditRecord, Health, HealthMap, Overlay, Pool, PoolId, ProbeKey, View,
};
use crate::rollout;
use crate::snapshot::{self, Snapshot, ZoneIndex};
use crate::store::{self, Backend, Cluster, Followed, Store, StoreError, Stored};
use crate::zones::{self, Zone};

pub mod change;

use change::{Change, ChangeError, ChangeRequest};

/// Every kind of change weir accepts. Closed on purpose: `grep StateEvent::` finds every writer.
#[derive(Debug)]
pub enum StateEvent {
    /// Re-read config and zones (SIGHUP, POST /v1/reload). The reply carries the new intent
    /// generation or every problem.
    Reload {
        reply: Option<oneshot::Sender<Result<Reloaded, Problems>>>,
    },
    /// A probe's health flipped after hysteresis (`health::Flip`s, forwarded by the writer).
    Health {
        key: ProbeKey,
        health: Health,
        /// Why, for the log: the last probe's result ("HTTP 503", "timeout after 2s", ...).
        reason: String,
        /// When the probe result that flipped it arrived.
        at: tokio::time::Instant,
    },
    /// A rollout command: from an operator (admin API, replied to once stored and published)
    /// or the rollout driver (`Tick`, when a step is due; no reply).
    Rollout {
        pool: PoolId,
        command: rollout::Command,
        actor: String,
        source: String,
        reason: String,
        reply: Option<oneshot::Sender<Result<u64, ChangeError>>>,
    },
    /// An operator's change (admin API). Replied to once stored and published.
    Change {
        request: ChangeRequest,
        reply: oneshot::Sender<Result<u64, ChangeError>>,
    },
    /// A nameserver that is gone for good stops counting for change status
    /// (`DELETE /v1/nodes/{node}`): membership, not intent, so nothing is published. Replies
    /// false when no such member is known (always, without a cluster).
    Forget {
        node_id: String,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// The shared store moved on (another nameserver's change, seen by `Cluster::follow`):
    /// adopted if newer than what this node serves.
    Remote { stored: Stored },
    /// Shared health: another nameserver's probe results changed; the health served is
    /// recomputed (an endpoint is down when most live nodes see it down).
    PeerHealth,
    /// An RFC 2136 UPDATE that passed its signature and policy (`update::Submission`, sent by
    /// the DNS front end on a channel of its own). Replied to once stored and published.
    Update(crate::update::Submission),
}

/// A reload that went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// The intent generation after the reload (higher if it dropped stale overrides).
    pub generation: u64,
    /// Config tables that changed but apply only after a restart ("dns", "admin", "store", "log").
    pub restart_required: Vec<&'static str>,
}

/// Config and zones as read from disk, checked against each other, and indexed for lookups.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub zones: Vec<Zone>,
    pub index: Arc<ZoneIndex>,
}

/// Reads config and zones from disk and checks them together (blocking file I/O).
pub fn load(path: &Path) -> Result<Loaded, Problems> {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(Problems(mut problems)) => {
            // Zone problems too, in the same pass, for the zones the file names.
            if let Err(Problems(more)) = zones::load_each(&config::zone_configs(path)) {
                problems.extend(more);
            }
            return Err(Problems(problems));
        }
    };
    let zones = zones::load_all(&config)?;
    let problems = zones::check_pools(&config, &zones);
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let index = snapshot::index(&zones, &config.pools, &config.routing, &config.keyring);
    Ok(Loaded {
        config,
        zones,
        index,
    })
}

/// The index `loaded` serves with each zone's stored UPDATE layer (`edits`) over its file: an
/// unedited zone is indexed as loaded, not copied. A layer that no longer fits its file (the
/// file changed under it) is left out, that zone served from its file, and named in the
/// problems: a reload refuses them, start-up and a change from another node log them.
/// `fresh`: `loaded.index` is the files' own (just loaded), so with no layer for a served zone
/// it is reused; otherwise it may hold a layer since dropped, and the index is built again.
/// A signed zone with a key rollover in `overlay` is indexed with the rollover's key timing
/// (`ZoneKeys::with_rollover`).
fn index_with_edits(
    loaded: &Loaded,
    overlay: &Overlay,
    fresh: bool,
) -> (Arc<ZoneIndex>, Vec<Problem>) {
    use std::borrow::Cow;
    let edits = &overlay.zones;
    fn rolled<'z>(zone: Cow<'z, Zone>, overlay: &Overlay) -> Cow<'z, Zone> {
        let (Some(keys), Some(rollover)) =
            (zone.dnssec.as_ref(), overlay.rollovers.get(&zone.origin))
        else {
            return zone;
        };
        let keys = Arc::new(keys.with_rollover(rollover));
        let mut zone = zone.into_owned();
        zone.dnssec = Some(keys);
        Cow::Owned(zone)
    }
    let mut problems = Vec::new();
    let served: Vec<Cow<'_, Zone>> = (loaded.zones.iter())
        .map(|file| {
            let Some(layer) = edits.get(&file.origin) else {
                return rolled(Cow::Borrowed(file), overlay);
            };
            let zone = crate::update::served(file, layer).and_then(|zone| {
                match zones::check(&zone).into_iter().next() {
                    Some((name, _, problem)) => Err(format!("{name}: {problem}")),
                    None => Ok(zone),
                }
            });
            match zone {
                Ok(zone) => rolled(Cow::Owned(zone), overlay),
                Err(message) => {
                    problems.push(Problem {
                        location: format!("zone {} (its stored UPDATE changes)", file.origin),
                        message: format!(
                            "{message}; fix the zone file, or discard the changes (weir ctl updates {} --discard)",
                            file.origin
                        ),
                    });
                    Cow::Borrowed(file)
                }
            }
        })
        .collect();
    problems.extend(zones::check_pools(&loaded.config, &served));
    if fresh
        && !(edits.keys().chain(overlay.rollovers.keys()))
            .any(|origin| loaded.zones.iter().any(|z| z.origin == *origin))
    {
        return (loaded.index.clone(), problems);
    }
    let index = snapshot::index(
        &served,
        &loaded.config.pools,
        &loaded.config.routing,
        &loaded.config.keyring,
    );
    (index, problems)
}

/// Why the writer did not apply an UPDATE: refused by its content, or not stored.
enum UpdateError {
    Refused(Box<crate::update::Refusal>),
    Change(ChangeError),
}

/// Every distinct probe of `pools`.
fn probes(pools: &[Pool]) -> HashSet<ProbeKey> {
    pools.iter().flat_map(|p| p.probes()).cloned().collect()
}

/// Builds a snapshot for `loaded` with `overlay` (at `generation`) under `health`.
pub fn build(
    loaded: &Loaded,
    overlay: &Overlay,
    generation: u64,
    health: &HealthMap,
    metrics: &Metrics,
    publication: u64,
) -> Snapshot {
    let view = View {
        generation,
        zones: Arc::new(loaded.zones.iter().map(|z| z.origin.clone()).collect()),
        config_pools: Arc::new(loaded.config.pools.clone()),
        overlay: Arc::new(overlay.clone()),
        pools: Arc::new(change::effective(&loaded.config.pools, overlay)),
        health: health.clone(),
    };
    snapshot::build(&loaded.index, Arc::new(view), metrics, publication)
}

fn flip_event(flip: health::Flip) -> StateEvent {
    StateEvent::Health {
        key: flip.key,
        health: flip.health,
        reason: flip.reason,
        at: flip.at,
    }
}

/// Most flips applied as one batch (one publication); a storm larger than this publishes
/// every this many.
const MAX_BATCH: usize = 16_384;

/// Health flips applied but not yet published.
#[derive(Debug, Default)]
struct PendingHealth {
    /// The probes whose health changed.
    keys: HashSet<ProbeKey>,
    /// When each flip's probe result arrived, for `weir_health_flip_publish_seconds`.
    arrived: Vec<tokio::time::Instant>,
}

/// What a failed commit means to the caller: a conflict is a stale base (412), an unreachable
/// shared store is 503, anything else a storage failure.
fn store_error(e: StoreError) -> ChangeError {
    match e {
        StoreError::Conflict { expected, actual } => ChangeError::Stale { expected, actual },
        StoreError::Unavailable(why) => ChangeError::Unavailable(why),
        e @ StoreError::Full { .. } => ChangeError::Full(e.to_string()),
        e => ChangeError::Store(e.to_string()),
    }
}

/// Whether the local state store can take a change, for `/readyz` and `weir_store_healthy`:
/// set by the writer after each commit and by `app`'s periodic `Store::check`.
#[derive(Clone, Debug)]
pub struct StoreHealth {
    /// The problem, and how many times it was set (a check started before a commit must not
    /// overwrite what that commit found).
    problem: Arc<Mutex<(Option<String>, u64)>>,
    metrics: Arc<Metrics>,
}

impl StoreHealth {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        StoreHealth {
            problem: Arc::new(Mutex::new((None, 0))),
            metrics,
        }
    }

    /// Records the outcome of a commit or check. A conflict or an unreachable shared store
    /// says nothing about this node's disk (etcd has its own gauges), so it changes nothing.
    pub fn record<T>(&self, result: &Result<T, StoreError>) {
        self.record_since(None, result);
    }

    /// `record`, unless something else was recorded since `version` (`version()` taken when
    /// a check started).
    pub fn record_since<T>(&self, version: Option<u64>, result: &Result<T, StoreError>) {
        let problem = match result {
            Ok(_) => None,
            Err(StoreError::Conflict { .. } | StoreError::Unavailable(_)) => return,
            Err(e) => Some(e.to_string()),
        };
        self.set_since(version, problem);
    }

    pub fn set(&self, problem: Option<String>) {
        self.set_since(None, problem);
    }

    fn set_since(&self, version: Option<u64>, problem: Option<String>) {
        let mut current = self.problem.lock().unwrap_or_else(PoisonError::into_inner);
        if version.is_some_and(|v| v != current.1) {
            return;
        }
        match (&current.0, &problem) {
            (None, Some(why)) => tracing::warn!(problem = %why, "the state store is failing"),
            (Some(_), None) => tracing::info!("the state store takes changes again"),
            _ => {}
        }
        self.metrics.store_healthy(problem.is_none());
        *current = (problem, current.1.wrapping_add(1));
    }

    pub fn version(&self) -> u64 {
        self.problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
    }

    /// Why the store cannot take a change now; None while it can.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }
}

/// How long the writer waits for one commit. A store that does not answer (a wedged disk)
/// must not stop health flips, reloads or shutdown, which all go through the writer.
pub const COMMIT_DEADLINE: Duration = Duration::from_secs(10);

/// A commit that passed its deadline and still runs on its blocking thread.
#[derive(Debug)]
struct Stuck {
    task: tokio::task::JoinHandle<Result<u64, StoreError>>,
    /// What it stores, adopted if it completes after all.
    overlay: Overlay,
}

/// The writer's own state.
#[derive(Debug)]
pub struct Writer {
    config_path: PathBuf,
    loaded: Loaded,
    health: HealthMap,
    /// Stored intent and its generation.
    overlay: Overlay,
    generation: u64,
    store: Arc<dyn Store>,
    /// The nameservers sharing the store; None for a local store.
    cluster: Option<Arc<dyn Cluster>>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    /// Runs the probes of the served pools; its flips come back on the writer's channel.
    monitor: health::Monitor,
    /// Set once every probe has reported at least once and its flips are applied (/readyz).
    probes_ready: Arc<AtomicBool>,
    /// What rollout transitions observe (probe results, measured convergence).
    rollout_inputs: rollout::Inputs,
    /// Every probe of the pools as served (kept with the intent, not recomputed per flip).
    served: HashSet<ProbeKey>,
    /// Flips applied since the last publication: published together (coalescing).
    pending: PendingHealth,
    /// Whether the store takes changes (readiness and `weir_store_healthy`).
    store_health: StoreHealth,
    commit_deadline: Duration,
    /// A commit past its deadline; while it runs, later commits are refused at once.
    stuck: Option<Stuck>,
    /// Reloads load config and zones on a thread of their own; the writer only swaps.
    reloads: Reloads,
}

/// Who waits for a reload's result (SIGHUP does not).
type ReloadReply = Option<oneshot::Sender<Result<Reloaded, Problems>>>;

/// Reloads in progress. One load runs at a time, off the writer; reloads asked for while it
/// runs coalesce into one more load after it (the files may have changed after the running
/// load read them), and all of them get that load's result.
#[derive(Debug, Default)]
struct Reloads {
    /// Where a finished load sends its result (set when the writer runs).
    done: Option<mpsc::Sender<Result<Loaded, Problems>>>,
    /// A load is running; these wait for it.
    running: Option<Vec<ReloadReply>>,
    /// Asked for while one ran: these wait for the next load.
    next: Option<Vec<ReloadReply>>,
}

/// How often the writer looks whether a commit past its deadline has ended.
const SETTLE_POLL: Duration = Duration::from_secs(1);

/// How often the writer checks whether the first probe round is complete.
const READY_POLL: Duration = Duration::from_millis(50);
/// How often the writer looks whether signed zones need signing again
/// (`Snapshot::renew_at`: signatures near their refresh time, a key timing event).
const RESIGN_POLL: Duration = Duration::from_secs(1);

impl Writer {
    /// Restores the stored intent (`stored`, as `store` returned it) over `loaded`, drops intent the config no longer backs (with
    /// audit records), and publishes the first snapshot. Start-up is this plus a reload loop.
    pub fn start(
        loaded: Loaded,
        stored: Stored,
        backend: Backend,
        metrics: Arc<Metrics>,
        monitor: health::Monitor,
        probes_ready: Arc<AtomicBool>,
    ) -> Result<Writer, StoreError> {
        let (overlay, dropped) = change::prune(
            &loaded.config.pools,
            &stored.overlay,
            crate::clock::wall_secs(),
        );
        // Shared intent is never pruned by one node: its config may be older or newer than
        // the others'. Intent this node's config does not back is simply not served here.
        let Backend { store, cluster } = backend;
        let (overlay, dropped) = if cluster.is_some() {
            (stored.overlay.clone(), Vec::new())
        } else {
            (overlay, dropped)
        };
        let generation = if dropped.is_empty() {
            stored.generation
        } else {
            tracing::warn!(
                dropped = dropped.len(),
                "stored overrides not backed by the config were dropped"
            );
            store.commit(stored.generation, &overlay, dropped)?
        };
        let mut loaded = loaded;
        let (index, problems) = index_with_edits(&loaded, &overlay, true);
        for p in &problems {
            tracing::error!(problem = %p, "stored UPDATE changes not served; the zone file is");
        }
        loaded.index = index;
        let health = HealthMap::new();
        let first = build(&loaded, &overlay, generation, &health, &metrics, 1);
        metrics.published(first.generation);
        metrics.applied_generation(generation);
        if let Some(cluster) = &cluster {
            cluster.served(&overlay, generation);
        }
        let snapshot = Arc::new(ArcSwap::from_pointee(first));
        let rollout_inputs = rollout::Inputs {
            snapshot: snapshot.clone(),
            probes: monitor.last_results(),
            refetched: None,
        };
        let store_health = StoreHealth::new(metrics.clone());
        Ok(Writer {
            store_health,
            commit_deadline: COMMIT_DEADLINE,
            stuck: None,
            config_path: loaded.config.path.clone(),
            loaded,
            health,
            overlay,
            generation,
            store,
            cluster,
            snapshot,
            metrics,
            monitor,
            probes_ready,
            rollout_inputs,
            served: HashSet::new(),
            pending: PendingHealth::default(),
            reloads: Reloads::default(),
        })
    }

    /// Whether the store takes changes, for readiness and the periodic check.
    pub fn store_health(&self) -> StoreHealth {
        self.store_health.clone()
    }

    /// How long one commit may take before the writer moves on (tests shorten it).
    pub fn set_commit_deadline(&mut self, deadline: Duration) {
        self.commit_deadline = deadline;
    }

    /// The published snapshot, for readers.
    pub fn snapshot(&self) -> Arc<ArcSwap<Snapshot>> {
        self.snapshot.clone()
    }

    /// What the rollout tasks read (the same the writer's transitions observe).
    pub fn rollout_inputs(&self) -> rollout::Inputs {
        self.rollout_inputs.clone()
    }

    /// Measured cache convergence, for rollouts that gate on it.
    pub fn set_refetched(&mut self, refetched: rollout::Refetched) {
        self.rollout_inputs.refetched = Some(refetched);
    }

    /// Applies events (and the monitor's flips, as `StateEvent::Health`) until the event
    /// channel closes or `shutdown` is cancelled.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<StateEvent>,
        mut flips: mpsc::Receiver<health::Flip>,
        mut due: mpsc::Receiver<rollout::Signal>,
        mut remote: mpsc::Receiver<Followed>,
        mut updates: mpsc::Receiver<crate::update::Submission>,
        shutdown: CancellationToken,
    ) {
        self.served = self.served_probes();
        self.report_health(&self.served);
        self.monitor.set_probes(self.served.clone());
        let mut ready_poll = tokio::time::interval(READY_POLL);
        let mut settle_poll = tokio::time::interval(SETTLE_POLL);
        let mut resign_poll = tokio::time::interval(RESIGN_POLL);
        let (done, mut loads) = mpsc::channel(1);
        self.reloads.done = Some(done);
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(loaded) = loads.recv() => {
                    self.reloaded(loaded).await;
                    continue;
                }
                event = events.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
                Some(flip) = flips.recv() => flip_event(flip),
                Some(submission) = updates.recv() => StateEvent::Update(submission),
                Some(followed) = remote.recv() => match followed {
                    Followed::State(stored) => StateEvent::Remote { stored },
                    Followed::PeerHealth => StateEvent::PeerHealth,
                },
                Some(signal) = due.recv() => {
                    let (pool, command, why) = match signal {
                        rollout::Signal::Due(pool) => (pool, rollout::Command::Tick, String::new()),
                        rollout::Signal::GateFailed(pool, reason) => {
                            let cause = AbortCause::Metric;
                            (pool, rollout::Command::Abort { reason, cause }, String::new())
                        }
                        rollout::Signal::WebhookFailed { pool, reason, abort: true } => {
                            let cause = AbortCause::Webhook;
                            (pool, rollout::Command::Abort { reason, cause }, String::new())
                        }
                        rollout::Signal::WebhookFailed { pool, reason, abort: false } => {
                            tracing::warn!(%pool, %reason, "rollout webhook refused the next step; pausing");
                            (pool, rollout::Command::Pause { reason: Some(reason.clone()) }, reason)
                        }
                        rollout::Signal::Hold(pool, reason) => {
                            tracing::warn!(%pool, %reason, "rollout gate cannot be evaluated; pausing");
                            (pool, rollout::Command::Pause { reason: Some(reason.clone()) }, reason)
                        }
                    };
                    StateEvent::Rollout {
                        pool,
                        command,
                        actor: "weir".into(),
                        source: String::new(),
                        reason: why,
                        reply: None,
                    }
                }
                _ = settle_poll.tick(), if self.stuck.is_some() => {
                    self.settle().await;
                    continue;
                }
                _ = resign_poll.tick() => {
                    if self.snapshot.load().renew_at().is_some_and(|at| crate::clock::wall_secs() >= at) {
                        self.resign();
                    }
                    continue;
                }
                _ = ready_poll.tick(), if !self.probes_ready.load(Ordering::Acquire) => {
                    if self.monitor.first_round_done() {
                        // Flips of the first round are already queued: apply them first.
                        while let Ok(flip) = flips.try_recv() {
                            self.apply(flip_event(flip)).await;
                        }
                        self.flush_health();
                        self.probes_ready.store(true, Ordering::Release);
                        tracing::info!("first health probe round complete; ready");
                    }
                    continue;
                }
            };
            // Shutdown never waits for a store that does not answer.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = self.apply(event) => {}
            }
            // Coalescing: every flip already waiting joins this batch, then one publication.
            let mut batch = 1;
            while batch < MAX_BATCH {
                let Ok(flip) = flips.try_recv() else { break };
                self.apply(flip_event(flip)).await;
                batch += 1;
            }
            self.flush_health();
        }
    }

    /// Shared health: publishes this node's view of the `served` probes (a no-op otherwise).
    fn report_health(&self, served: &HashSet<ProbeKey>) {
        // Only a cluster has anyone to tell; the report costs O(probes) to build.
        if let Some(cluster) = &self.cluster {
            cluster.report_health(store::health_report(&self.health, served));
        }
    }

    fn served_probes(&self) -> HashSet<ProbeKey> {
        probes(&self.snapshot.load().view.pools)
    }

    async fn apply(&mut self, event: StateEvent) {
        match event {
            StateEvent::Reload { reply } => match &mut self.reloads.running {
                Some(_) => self.reloads.next.get_or_insert_default().push(reply),
                None => {
                    self.reloads.running = Some(vec![reply]);
                    self.start_load();
                }
            },
            StateEvent::Health {
                key,
                health,
                reason,
                at,
            } => {
                // A probe stopped by a reload or a change may still have had a flip in flight.
                if !self.served.contains(&key) {
                    return;
                }
                tracing::info!(target = %key.target, ?health, %reason, "health changed");
                self.health.insert(key.clone(), health);
                self.pending.keys.insert(key);
                self.pending.arrived.push(at);
            }
            StateEvent::Change { request, reply } => {
                let result = self.change(request).await;
                let _ = reply.send(result);
            }
            StateEvent::Forget { node_id, reply } => self.forget(node_id, reply),
            StateEvent::Update(submission) => {
                let crate::update::Submission {
                    update,
                    key,
                    client,
                    reply,
                } = submission;
                let _ = reply.send(self.update(&update, &key, client).await);
            }
            StateEvent::Remote { stored } => self.remote(stored),
            StateEvent::PeerHealth => {
                self.publish();
            }
            StateEvent::Rollout {
                pool,
                command,
                actor,
                source,
                reason,
                reply,
            } => {
                let result = self.rollout(pool, command, actor, source, reason).await;
                if let Err(e) = &result {
                    tracing::debug!(error = %e, "rollout command refused");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Publishes the flips applied since the last publication as one snapshot, rebuilding only
    /// the pools their probes feed (everything, with shared health, where peers' votes count).
    fn flush_health(&mut self) {
        if self.pending.keys.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        self.report_health(&self.served);
        let started = std::time::Instant::now();
        let prev = self.snapshot.load_full();
        let (rebuilt, publication) = if self.peer_health().is_empty() {
            let view = View {
                generation: self.generation,
                health: self.health.clone(),
                ..(*prev.view).clone()
            };
            let publication = prev.generation + 1;
            let (snapshot, rebuilt) = snapshot::rebuild_health(
                &prev,
                Arc::new(view),
                &batch.keys,
                &self.metrics,
                publication,
            );
            self.snapshot.store(Arc::new(snapshot));
            self.metrics.published(publication);
            (rebuilt, publication)
        } else {
            (self.loaded.config.pools.len(), self.publish())
        };
        let took = started.elapsed();
        self.metrics
            .health_batch(batch.arrived.len(), took, &batch.arrived);
        tracing::info!(
            publication,
            flips = batch.arrived.len(),
            pools_rebuilt = rebuilt,
            micros = took.as_micros() as u64,
            "health batch published"
        );
    }

    /// Shared health: the other live nodes' reports (none without a cluster).
    fn peer_health(&self) -> HashMap<String, store::HealthReport> {
        self.cluster
            .as_ref()
            .map(|c| c.peer_health())
            .unwrap_or_default()
    }

    /// Forgets a member that is gone, on a blocking thread of its own: membership is not
    /// what this node serves, so the writer neither waits for it nor publishes.
    fn forget(&self, node_id: String, reply: oneshot::Sender<Result<bool, StoreError>>) {
        let Some(cluster) = self.cluster.clone() else {
            let _ = reply.send(Ok(false));
            return;
        };
        tokio::task::spawn_blocking(move || {
            let result = cluster.forget(&node_id);
            if let Ok(true) = result {
                tracing::info!(node = %node_id, "nameserver forgotten: it no longer counts for change status");
            }
            let _ = reply.send(result);
        });
    }

    fn publish(&mut self) -> u64 {
        // Whatever health is pending goes out with this publication.
        self.pending = PendingHealth::default();
        for (pool, r) in &self.overlay.rollouts {
            let step = r.rolling.as_ref().map_or(r.step, |rl| rl.batch);
            self.metrics.rollout(
                &pool.to_string(),
                r.weight,
                step,
                rollout::state_name(&r.state),
            );
        }
        let publication = self.snapshot.load().generation + 1;
        let peers = self.peer_health();
        let health = if peers.is_empty() {
            self.health.clone()
        } else {
            let served = probes(&change::effective(&self.loaded.config.pools, &self.overlay));
            store::merged_health(&self.health, &served, &peers)
        };
        let snapshot = build(
            &self.loaded,
            &self.overlay,
            self.generation,
            &health,
            &self.metrics,
            publication,
        );
        self.snapshot.store(Arc::new(snapshot));
        self.metrics.published(publication);
        self.metrics.applied_generation(self.generation);
        // After the swap: a node reports a generation only once it answers with it.
        if let Some(cluster) = &self.cluster {
            cluster.served(&self.overlay, self.generation);
        }
        publication
    }

    /// A newer state from the shared store replaces ours; older or equal ones (our own
    /// commits coming back through the watch, a re-read after a reconnect) change nothing.
    fn remote(&mut self, stored: Stored) {
        if stored.generation > self.generation {
            tracing::info!(
                generation = stored.generation,
                previous = self.generation,
                "applied a change from the shared store"
            );
            self.adopt(stored.overlay, stored.generation);
        } else if stored.generation < self.generation {
            tracing::debug!(
                generation = stored.generation,
                serving = self.generation,
                "ignored an older state from the shared store"
            );
        }
    }

    /// After a conflict: reads the shared store's current state and adopts it if newer.
    async fn catch_up(&mut self) -> Result<(), ChangeError> {
        let store = self.store.clone();
        let stored = tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|e| ChangeError::Store(format!("load task failed: {e}")))?
            .map_err(store_error)?;
        self.remote(stored);
        Ok(())
    }

    /// Stores `overlay` with `records` as the next generation, durably, off the async threads,
    /// waiting at most `commit_deadline`. A commit past it keeps running on its thread (its
    /// result is unknown: the caller hears so); until it ends, later commits are refused at
    /// once, and if it stored its change after all, `settle` adopts it.
    async fn commit(
        &mut self,
        overlay: Overlay,
        records: Vec<AuditRecord>,
    ) -> Result<u64, StoreError> {
        // Callers `settle` before computing their change; one still stuck refuses it.
        if self.stuck.is_some() {
            let result = Err(StoreError::Io {
                path: "store".into(),
                detail: format!(
                    "an earlier commit has not finished after {:?}; nothing was changed",
                    self.commit_deadline
                ),
            });
            self.store_health.record(&result);
            return result;
        }
        let store = self.store.clone();
        let expected = self.generation;
        let started = std::time::Instant::now();
        let kept = overlay.clone();
        let mut task =
            tokio::task::spawn_blocking(move || store.commit(expected, &overlay, records));
        let result = match tokio::time::timeout(self.commit_deadline, &mut task).await {
            Ok(joined) => joined.unwrap_or_else(|e| {
                Err(StoreError::Io {
                    path: "store".into(),
                    detail: format!("commit task failed: {e}"),
                })
            }),
            Err(_) => {
                tracing::error!(deadline = ?self.commit_deadline, "a commit did not finish in time; the state store is not answering");
                self.stuck = Some(Stuck {
                    task,
                    overlay: kept,
                });
                Err(StoreError::Io {
                    path: "store".into(),
                    detail: format!(
                        "the state store did not finish the commit within {:?}; \
                         it is applied only if the store completes it later",
                        self.commit_deadline
                    ),
                })
            }
        };
        self.metrics
            .store_commit(started.elapsed().as_secs_f64(), result.is_ok());
        self.store_health.record(&result);
        result
    }

    /// Collects a commit that passed its deadline once it has ended: if it stored its change
    /// after all, that change is what the store holds, so it serves.
    async fn settle(&mut self) {
        let Some(stuck) = self.stuck.take_if(|s| s.task.is_finished()) else {
            return;
        };
        let result = stuck.task.await.unwrap_or_else(|e| {
            Err(StoreError::Io {
                path: "store".into(),
                detail: format!("commit task failed: {e}"),
            })
        });
        self.store_health.record(&result);
        match result {
            Ok(generation) if generation > self.generation => {
                tracing::warn!(
                    generation,
                    "a commit that passed its deadline completed later; serving it"
                );
                self.adopt(stuck.overlay, generation);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "a commit that passed its deadline failed"),
        }
    }

    /// Signs the signed zones again (new validity window, keys' timing applied) and publishes.
    fn resign(&mut self) {
        let started = std::time::Instant::now();
        let (index, _) = index_with_edits(&self.loaded, &self.overlay, false);
        self.loaded.index = index;
        self.publish();
        tracing::info!(
            took_ms = started.elapsed().as_millis() as u64,
            "signed zones signed again"
        );
    }

    /// Sets a new overlay at a new generation: probes follow, the snapshot is rebuilt.
    fn adopt(&mut self, overlay: Overlay, generation: u64) {
        if overlay.zones != self.overlay.zones || overlay.rollovers != self.overlay.rollovers {
            let (index, problems) = index_with_edits(&self.loaded, &overlay, false);
            for p in &problems {
                tracing::error!(problem = %p, "stored UPDATE changes not served; the zone file is");
            }
            self.loaded.index = index;
        }
        self.overlay = overlay;
        self.generation = generation;
        let served = probes(&change::effective(&self.loaded.config.pools, &self.overlay));
        // Probes that stay keep their hysteresis and health; removed ones are forgotten.
        self.health.retain(|k, _| served.contains(k));
        self.report_health(&served);
        self.monitor.set_probes(served.clone());
        self.served = served;
        self.publish();
    }

    /// Applies an operator's change. With a shared store another node may have committed
    /// first: without If-Match the change is re-applied on the newer state (a few times at
    /// most); with If-Match the caller asked for exactly that state, so it is Stale (412).
    async fn change(&mut self, request: ChangeRequest) -> Result<u64, ChangeError> {
        self.settle().await;
        if let Some(expected) = request.if_match
            && expected > self.generation
            && self.cluster.is_some()
        {
            // The client saw a newer state on another node than the watch brought us yet.
            self.catch_up().await?;
        }
        let mut attempts = 0;
        loop {
            match self.change_once(&request).await {
                Err(ChangeError::Stale { .. })
                    if self.cluster.is_some() && request.if_match.is_none() && attempts < 3 =>
                {
                    attempts += 1;
                    self.catch_up().await?;
                }
                result => return result,
            }
        }
    }

    async fn change_once(&mut self, request: &ChangeRequest) -> Result<u64, ChangeError> {
        if let Some(expected) = request.if_match
            && expected != self.generation
        {
            return Err(ChangeError::Stale {
                expected,
                actual: self.generation,
            });
        }
        let applied = match &request.change {
            Change::DiscardUpdates { zone } => self.discard(zone)?,
            Change::DnssecRollover { zone, key } => self.rollover(zone, *key)?,
            change => change::apply(
                &self.loaded.config.pools,
                &self.overlay,
                change,
                request.force,
            )?,
        };
        let record = AuditRecord {
            generation: 0,
            time: crate::clock::wall_secs(),
            actor: request.actor.clone(),
            source: request.source.clone(),
            action: applied.action.into(),
            pool: applied.pool,
            subject: applied.subject,
            before: applied.before,
            after: applied.after,
            reason: request.reason.clone(),
        };
        let generation = self
            .commit(applied.overlay.clone(), vec![record.clone()])
            .await
            .map_err(store_error)?;
        tracing::info!(
            generation,
            actor = %record.actor,
            action = %record.action,
            pool = %record.pool,
            subject = %record.subject,
            before = %record.before,
            after = %record.after,
            "change applied"
        );
        self.adopt(applied.overlay, generation);
        Ok(generation)
    }

    /// `POST /v1/zones/{zone}/dnssec/rollover`: a pre-publish rollover to `key` (or the zone's
    /// one standby zone-signing key), its phases timed from the DNSKEY TTL, the zone's largest
    /// TTL and `[dnssec] propagation_delay` (`model::KeyRollover`).
    fn rollover(
        &self,
        zone: &crate::model::Name,
        key: Option<u16>,
    ) -> Result<change::Applied, ChangeError> {
        let snapshot = self.snapshot.load();
        let signing = snapshot
            .signing(zone)
            .ok_or_else(|| ChangeError::NotFound(format!("zone {zone} is not signed by weir")))?;
        let now = crate::clock::wall_secs();
        if let Some(running) = self.overlay.rollovers.get(zone)
            && now < running.retire_at
        {
            return Err(ChangeError::Conflict(format!(
                "zone {zone}: the rollover to key {} runs until {} ({}); start another after it",
                running.key,
                crate::dnssec::format_time(running.retire_at),
                running.phase(now)
            )));
        }
        let keys = &signing.keys.keys;
        let standby: Vec<u16> = (keys.iter())
            .filter(|k| {
                !k.key.is_sep() && !k.timing.active(now) && k.timing.delete.is_none_or(|d| d > now)
            })
            .map(|k| k.key.tag)
            .collect();
        let tag = match key {
            Some(tag) => tag,
            None => match standby.as_slice() {
                [one] => *one,
                [] => {
                    return Err(ChangeError::NotFound(format!(
                        "zone {zone} has no standby zone-signing key: make one (weir dnssec keygen {zone} --zsk --standby --dir KEY_DIR), copy it to every node, reload, then roll"
                    )));
                }
                several => {
                    return Err(ChangeError::Invalid(format!(
                        "zone {zone} has several standby zone-signing keys ({several:?}): name one"
                    )));
                }
            },
        };
        let Some(next) = keys.iter().find(|k| k.key.tag == tag) else {
            return Err(ChangeError::NotFound(format!(
                "zone {zone} has no key {tag} (its keys: {:?})",
                keys.iter().map(|k| k.key.tag).collect::<Vec<_>>()
            )));
        };
        if next.key.is_sep() {
            return Err(ChangeError::Invalid(format!(
                "key {tag} is a key-signing key: rolling it changes the DS at the parent, which weir does not drive; roll zone-signing keys (weir dnssec keygen {zone} --zsk --standby)"
            )));
        }
        if next.timing.active(now) {
            return Err(ChangeError::Conflict(format!(
                "key {tag} signs zone {zone} already"
            )));
        }
        let retiring: Vec<u16> = (keys.iter())
            .filter(|k| !k.key.is_sep() && k.timing.active(now))
            .map(|k| k.key.tag)
            .collect();
        let delay = signing.keys.policy.propagation_delay;
        let activate_at = now + u64::from(signing.dnskey_ttl) + delay;
        let retire_at = if retiring.is_empty() {
            activate_at
        } else {
            activate_at + u64::from(signing.max_ttl) + delay
        };
        let rollover = crate::model::KeyRollover {
            key: tag,
            retiring,
            started: now,
            activate_at,
            retire_at,
        };
        let mut overlay = self.overlay.clone();
        overlay.rollovers.insert(zone.clone(), rollover.clone());
        Ok(change::Applied {
            overlay,
            pool: String::new(),
            action: "dnssec-rollover",
            subject: format!("zone {zone}"),
            before: serde_json::json!({ "signing": signing.signing }),
            after: serde_json::to_value(&rollover).unwrap_or_default(),
        })
    }

    /// `DELETE /v1/zones/{zone}/updates`: the zone's file serves again (`update::discard`), or
    /// for a zone no longer served, its layer is simply dropped.
    fn discard(&self, zone: &crate::model::Name) -> Result<change::Applied, ChangeError> {
        let Some(layer) = self.overlay.zones.get(zone) else {
            return Err(ChangeError::NotFound(format!(
                "zone {zone} has no UPDATE changes"
            )));
        };
        let mut overlay = self.overlay.clone();
        let shown = |sets: &[crate::model::StoredSet]| -> serde_json::Value {
            (sets.iter())
                .flat_map(|s| match s.rrset() {
                    Some(set) if !set.rdatas.is_empty() => zones::present(&s.owner, &set),
                    _ => vec![format!(
                        "{} {} (deleted)",
                        s.owner,
                        crate::model::rtype_name(s.rtype)
                    )],
                })
                .collect::<Vec<_>>()
                .into()
        };
        let before = shown(&layer.rrsets);
        match self.loaded.zones.iter().find(|z| z.origin == *zone) {
            None => {
                overlay.zones.remove(zone);
            }
            Some(file) => {
                let served = crate::update::served(file, layer).map_err(ChangeError::Invalid)?;
                let next = crate::update::discard(file, &served, layer)
                    .map_err(|r| ChangeError::Invalid(r.why))?
                    .ok_or_else(|| {
                        ChangeError::NotFound(format!("zone {zone} has no UPDATE changes"))
                    })?;
                overlay.zones.insert(zone.clone(), next.edits);
            }
        }
        Ok(change::Applied {
            overlay,
            pool: String::new(),
            action: "discard-updates",
            subject: format!("zone {zone}"),
            before,
            after: serde_json::Value::Array(Vec::new()),
        })
    }

    /// Applies an UPDATE to its zone's layer (`update::apply` over the zone as served), stores
    /// the layer with an audit record naming the key, then publishes: the new serial, None when
    /// nothing changed, or why not. With a shared store, a commit that lost a race is applied
    /// again on the newer state (a few times at most), as an operator's change is.
    async fn update(
        &mut self,
        update: &crate::update::Update,
        key: &crate::model::Name,
        client: std::net::IpAddr,
    ) -> Result<Option<u32>, crate::update::Refusal> {
        use crate::update::Refusal;
        self.settle().await;
        let mut attempts = 0;
        loop {
            match self.update_once(update, key, client).await {
                Err(UpdateError::Change(ChangeError::Stale { .. }))
                    if self.cluster.is_some() && attempts < 3 =>
                {
                    attempts += 1;
                    if let Err(e) = self.catch_up().await {
                        return Err(Refusal {
                            rcode: crate::model::Rcode::ServFail,
                            why: format!("the change could not be stored: {e}"),
                        });
                    }
                }
                Err(UpdateError::Refused(refusal)) => return Err(*refusal),
                Err(UpdateError::Change(e)) => {
                    return Err(Refusal {
                        rcode: crate::model::Rcode::ServFail,
                        why: format!("the change could not be stored: {e}"),
                    });
                }
                Ok(serial) => return Ok(serial),
            }
        }
    }

    async fn update_once(
        &mut self,
        update: &crate::update::Update,
        key: &crate::model::Name,
        client: std::net::IpAddr,
    ) -> Result<Option<u32>, UpdateError> {
        use crate::update::Refusal;
        let refused = |rcode, why: String| UpdateError::Refused(Box::new(Refusal { rcode, why }));
        let Some(file) = self.loaded.zones.iter().find(|z| z.origin == update.zone) else {
            return Err(refused(
                crate::model::Rcode::NotAuth,
                format!("weir does not serve zone {}", update.zone),
            ));
        };
        let edits = self
            .overlay
            .zones
            .get(&update.zone)
            .cloned()
            .unwrap_or_default();
        let served = crate::update::served(file, &edits)
            .map_err(|why| refused(crate::model::Rcode::ServFail, why))?;
        let config = &self.loaded.config;
        let managed = |name: &crate::model::Name| {
            config
                .pools
                .iter()
                .any(|p| p.name.served_name() == Some(name))
                || config.routing.routes.iter().any(|r| r.name == *name)
        };
        let Some(applied) = crate::update::apply(file, &served, &edits, update, &managed)
            .map_err(|r| UpdateError::Refused(Box::new(r)))?
        else {
            return Ok(None);
        };
        let serial = applied.edits.serial;
        let mut overlay = self.overlay.clone();
        overlay.zones.insert(update.zone.clone(), applied.edits);
        let record = AuditRecord {
            generation: 0,
            time: crate::clock::wall_secs(),
            actor: format!("key {key}"),
            source: client.to_string(),
            action: "update".into(),
            pool: String::new(),
            subject: format!("zone {}", update.zone),
            before: applied.before.into(),
            after: applied.after.into(),
            reason: format!("serial {serial}"),
        };
        let generation = self
            .commit(overlay.clone(), vec![record])
            .await
            .map_err(|e| UpdateError::Change(store_error(e)))?;
        tracing::info!(generation, zone = %update.zone, %key, %client, serial, "UPDATE applied");
        self.adopt(overlay, generation);
        Ok(Some(serial))
    }

    /// Runs a rollout command against the stored rollout of `pool`; a weight change is stored
    /// as the rollout's group weights (from = 100 - w, to = w) in the same commit.
    /// With a shared store, a conflict means another node moved first (typically its driver
    /// ran the same due step): catch up and decide again on the newer state.
    async fn rollout(
        &mut self,
        pool: PoolId,
        command: rollout::Command,
        actor: String,
        source: String,
        reason: String,
    ) -> Result<u64, ChangeError> {
        self.settle().await;
        let mut attempts = 0;
        loop {
            match self
                .rollout_once(&pool, &command, &actor, &source, &reason)
                .await
            {
                Err(ChangeError::Stale { .. }) if self.cluster.is_some() && attempts < 3 => {
                    attempts += 1;
                    self.catch_up().await?;
                }
                result => return result,
            }
        }
    }

    async fn rollout_once(
        &mut self,
        pool: &PoolId,
        command: &rollout::Command,
        actor: &str,
        source: &str,
        reason: &str,
    ) -> Result<u64, ChangeError> {
        if !self.loaded.config.pools.iter().any(|p| p.name == *pool) {
            return Err(ChangeError::NotFound(format!("no pool `{pool}`")));
        }
        let current = self.overlay.rollouts.get(pool);
        let snapshot = self.snapshot.load();
        let view = &snapshot.view;
        let Some(served) = view.pools.iter().find(|p| p.name == *pool) else {
            return Err(ChangeError::NotFound(format!("no pool `{pool}`")));
        };
        let mut seen = match current {
            Some(r) => rollout::observe(
                view,
                served,
                r,
                &self.rollout_inputs.probes,
                self.rollout_inputs.refetched(pool, r.changed_at),
            ),
            None => rollout::Observed::default(),
        };
        seen.shared = self.cluster.is_some();
        seen.untracked = self.rollout_inputs.refetched.is_none();
        seen.unsynced = !self
            .cluster
            .as_ref()
            .is_none_or(|c| c.synced(self.generation));
        let cx = rollout::Context {
            pool: served,
            ttls: rollout::ttls(&snapshot, pool),
            now: crate::clock::now_ms(),
            seen: &seen,
        };
        let who = rollout::Who {
            actor,
            source,
            reason,
        };
        let outcome = match rollout::transition(current, command, &cx, who) {
            Ok(Some(outcome)) => outcome,
            Ok(None) => return Ok(self.generation),
            Err(rollout::Refused::Invalid(e)) => return Err(ChangeError::Invalid(e)),
            Err(rollout::Refused::Conflict(e)) => return Err(ChangeError::Conflict(e)),
            Err(rollout::Refused::Missing(e)) => return Err(ChangeError::NotFound(e)),
        };
        let mut overlay = self.overlay.clone();
        rollout::weights(&outcome.rollout, &mut overlay, pool);
        overlay.rollouts.insert(pool.clone(), outcome.rollout);
        let record = outcome.record;
        let generation = self
            .commit(overlay.clone(), vec![record.clone()])
            .await
            .map_err(store_error)?;
        tracing::info!(
            generation,
            pool = %record.pool,
            action = %record.action,
            after = %record.after,
            reason = %record.reason,
            "rollout"
        );
        if let Some(cause) = outcome.aborted {
            self.metrics.rollout_aborted(&record.pool, cause.label());
            tracing::warn!(pool = %record.pool, cause = %cause.label(), reason = %record.reason, "rollout aborted");
        }
        self.adopt(overlay, generation);
        Ok(generation)
    }

    /// Starts loading config and zones on a thread of its own (not a tokio blocking thread:
    /// a load of a huge zone must not hold up runtime shutdown). Its result comes back on
    /// `reloads.done` and is applied by `reloaded`; meanwhile the writer goes on applying
    /// events.
    fn start_load(&mut self) {
        let path = self.config_path.clone();
        let Some(done) = self.reloads.done.clone() else {
            return;
        };
        let fallback = done.clone();
        let spawned = std::thread::Builder::new()
            .name("weir-reload".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(|| load(&path)).unwrap_or_else(|_| {
                    Err(Problems(vec![Problem {
                        location: "reload".into(),
                        message: "the loader panicked".into(),
                    }]))
                });
                let _ = done.blocking_send(result);
            });
        if let Err(e) = spawned {
            // One load at a time and a channel of one: there is room for this result.
            let _ = fallback.try_send(Err(Problems(vec![Problem {
                location: "reload".into(),
                message: format!("cannot start the loader: {e}"),
            }])));
        }
    }

    /// A load finished: swap it in (or keep serving on failure), answer everyone who waited
    /// for it, and start the next load if reloads were asked for meanwhile.
    async fn reloaded(&mut self, loaded: Result<Loaded, Problems>) {
        let result = self.reload(loaded).await;
        for reply in self.reloads.running.take().into_iter().flatten().flatten() {
            let _ = reply.send(result.clone());
        }
        if let Some(next) = self.reloads.next.take() {
            self.reloads.running = Some(next);
            self.start_load();
        }
    }

    async fn reload(&mut self, loaded: Result<Loaded, Problems>) -> Result<Reloaded, Problems> {
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(problems) => {
                self.metrics.reloaded(false);
                tracing::error!(problems = %problems, "reload failed; still serving the previous snapshot");
                return Err(problems);
            }
        };
        // Intent the new config no longer backs is dropped, with audit records, before the
        // new config serves: all or nothing.
        let (overlay, dropped) = change::prune(
            &loaded.config.pools,
            &self.overlay,
            crate::clock::wall_secs(),
        );
        let generation = if dropped.is_empty() {
            self.generation
        } else {
            match self.commit(overlay.clone(), dropped).await {
                Ok(generation) => generation,
                Err(e) => {
                    self.metrics.reloaded(false);
                    let problems = Problems(vec![Problem {
                        location: "store".into(),
                        message: format!("could not store the overrides this reload drops: {e}"),
                    }]);
                    tracing::error!(problems = %problems, "reload failed; still serving the previous snapshot");
                    return Err(problems);
                }
            }
        };
        let (old, new) = (&self.loaded.config, &loaded.config);
        let restart_required: Vec<&'static str> = [
            ("dns", old.dns != new.dns),
            ("admin", old.admin != new.admin),
            ("store", old.store != new.store),
            ("log", old.log != new.log),
        ]
        .into_iter()
        .filter_map(|(table, changed)| changed.then_some(table))
        .collect();
        if !restart_required.is_empty() {
            tracing::warn!(
                tables = %restart_required.join(","),
                "these config tables changed; they take effect after a restart"
            );
        }
        let mut loaded = loaded;
        let (index, problems) = index_with_edits(&loaded, &overlay, true);
        if !problems.is_empty() {
            self.metrics.reloaded(false);
            let problems = Problems(problems);
            tracing::error!(problems = %problems, "reload failed; still serving the previous snapshot");
            return Err(problems);
        }
        loaded.index = index;
        self.loaded = loaded;
        self.adopt(overlay, generation);
        self.metrics.reloaded(true);
        tracing::info!(
            generation,
            zones = self.loaded.zones.len(),
            "reloaded; snapshot published"
        );
        Ok(Reloaded {
            generation,
            restart_required,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::change::Change;

    /// A store whose first commit blocks until the test lets it go (a wedged disk).
    #[derive(Debug, Default)]
    struct Wedged {
        stored: Mutex<Stored>,
        gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    }

    impl Store for Wedged {
        fn load(&self) -> Result<Stored, StoreError> {
            Ok(self.stored.lock().unwrap().clone())
        }
        fn commit(
            &self,
            expected: u64,
            overlay: &Overlay,
            _audit: Vec<AuditRecord>,
        ) -> Result<u64, StoreError> {
            if let Some(gate) = self.gate.lock().unwrap().take() {
                let _ = gate.recv();
            }
            let mut stored = self.stored.lock().unwrap();
            if stored.generation != expected {
                return Err(StoreError::Conflict {
                    expected,
                    actual: stored.generation,
                });
            }
            *stored = Stored {
                overlay: overlay.clone(),
                generation: expected + 1,
            };
            Ok(expected + 1)
        }
        fn audit(&self, _: Option<&str>, _: usize) -> Result<Vec<AuditRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn changes_page(
            &self,
            _: u64,
            _: Option<&str>,
            _: usize,
        ) -> Result<Vec<AuditRecord>, StoreError> {
            Ok(Vec::new())
        }
    }

    fn weight(weight: u32) -> ChangeRequest {
        ChangeRequest {
            change: Change::GroupWeight {
                pool: PoolId::parse("app.example.com.").unwrap(),
                group: "blue".into(),
                weight,
            },
            actor: "test".into(),
            source: String::new(),
            reason: String::new(),
            if_match: None,
            force: false,
        }
    }

    async fn change(events: &mpsc::Sender<StateEvent>, w: u32) -> Result<u64, ChangeError> {
        let (reply, answer) = oneshot::channel();
        events
            .send(StateEvent::Change {
                request: weight(w),
                reply,
            })
            .await
            .unwrap();
        answer.await.unwrap()
    }

    /// A running writer over the one-pool config `CONFIG` and `store`.
    struct Running {
        events: mpsc::Sender<StateEvent>,
        snapshot: Arc<ArcSwap<Snapshot>>,
        health: StoreHealth,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    /// Starts a writer over `store`, after `prepare` has set it up.
    fn run_writer(store: Arc<Wedged>, prepare: impl FnOnce(&mut Writer)) -> Running {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("z.zone"),
            "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n",
        )
        .unwrap();
        let config = dir.path().join("weir.toml");
        std::fs::write(
            &config,
            "[dns]\nlisten = [\"127.0.0.1:0\"]\n[[zone]]\norigin = \"example.com.\"\nfile = \"z.zone\"\n\
             [[pool]]\nname = \"app.example.com.\"\n[[pool.group]]\nname = \"blue\"\n\
             endpoints = [{ address = \"192.0.2.10\" }]\n",
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let (flips, flips_rx) = mpsc::channel(8);
        let monitor = health::Monitor::new(flips, metrics.clone(), shutdown.clone());
        let mut writer = Writer::start(
            load(&config).unwrap(),
            Stored::default(),
            Backend::local(store),
            metrics,
            monitor,
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        prepare(&mut writer);
        let snapshot = writer.snapshot();
        let health = writer.store_health();
        let (events, rx) = mpsc::channel(8);
        let (_due, due_rx) = mpsc::channel(8);
        let (_remote, remote_rx) = mpsc::channel(8);
        let task = tokio::spawn(writer.run(
            rx,
            flips_rx,
            due_rx,
            remote_rx,
            mpsc::channel(1).1,
            shutdown.clone(),
        ));
        Running {
            events,
            snapshot,
            health,
            shutdown,
            task,
            _dir: dir,
        }
    }

    /// The writer's contract with the API: an accepted change is in the store when its reply
    /// comes and is what the published snapshot serves; a refused one stores and publishes
    /// nothing; forgetting a node without a cluster knows no node and changes nothing.
    #[tokio::test(start_paused = true)]
    async fn a_reply_comes_after_the_commit_and_a_refusal_changes_nothing() {
        let store = Arc::new(Wedged::default());
        let w = run_writer(store.clone(), |_| {});
        let blue = |snapshot: &Snapshot| snapshot.view.pools[0].groups[0].weight;
        let generation = change(&w.events, 7).await.unwrap();
        assert_eq!(generation, 1);
        assert_eq!(
            store.load().unwrap().generation,
            1,
            "stored before the reply"
        );
        let app = PoolId::parse("app.example.com.").unwrap();
        assert_eq!(store.load().unwrap().overlay.group_weights[&app]["blue"], 7);
        let served = w.snapshot.load();
        assert_eq!((served.view.generation, blue(&served)), (1, 7));
        let publication = served.generation;

        // Zero total weight without `force`: 409, and nothing moves.
        let error = change(&w.events, 0).await.unwrap_err();
        assert!(matches!(error, ChangeError::Conflict(_)), "{error:?}");
        assert_eq!(store.load().unwrap().generation, 1);
        let served = w.snapshot.load();
        assert_eq!((served.generation, blue(&served)), (publication, 7));

        let (reply, answer) = oneshot::channel();
        w.events
            .send(StateEvent::Forget {
                node_id: "ns9".into(),
                reply,
            })
            .await
            .unwrap();
        assert!(!answer.await.unwrap().unwrap());
        assert_eq!(w.snapshot.load().generation, publication);
        w.shutdown.cancel();
    }

    /// Issue 12: a commit that never returned wedged the writer (no flips, reloads or
    /// shutdown). Now it answers after the deadline, the writer goes on, and a commit that
    /// completes late is adopted.
    #[tokio::test]
    async fn a_wedged_commit_never_stops_the_writer() {
        let (release, gate) = std::sync::mpsc::channel();
        let store = Arc::new(Wedged {
            gate: Mutex::new(Some(gate)),
            ..Wedged::default()
        });
        let Running {
            events,
            snapshot,
            health,
            shutdown,
            task,
            _dir,
        } = run_writer(store, |w| w.set_commit_deadline(Duration::from_millis(300)));

        let error = change(&events, 5).await.unwrap_err();
        assert!(matches!(error, ChangeError::Store(_)), "{error:?}");
        assert!(error.to_string().contains("did not finish"), "{error}");
        assert!(health.problem().is_some());
        assert_eq!(snapshot.load().view.generation, 0);
        // The next change is refused at once, and a reload still goes through.
        let started = std::time::Instant::now();
        let error = change(&events, 6).await.unwrap_err();
        assert!(error.to_string().contains("has not finished"), "{error}");
        assert!(started.elapsed() < Duration::from_millis(200));
        let (reply, answer) = oneshot::channel();
        events
            .send(StateEvent::Reload { reply: Some(reply) })
            .await
            .unwrap();
        assert_eq!(answer.await.unwrap().unwrap().generation, 0);

        // The store completes the first commit after all: that is what serves, and the next
        // change builds on it.
        release.send(()).unwrap();
        let started = std::time::Instant::now();
        while snapshot.load().view.generation != 1 {
            assert!(started.elapsed() < Duration::from_secs(5), "adopted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(change(&events, 7).await.unwrap(), 2);
        assert_eq!(health.problem(), None);

        // Shutdown is prompt.
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Coalescing and health-only rebuilds (issue 13).
#[cfg(test)]
mod batching {
    use std::fmt::Write as _;

    use super::*;

    /// A writer over `pools` pools of 10 endpoints (127.3.x.y, TCP checks on a port nothing
    /// listens on, an hour apart so no probe runs within the test), with its channels.
    struct Harness {
        snapshot: Arc<ArcSwap<Snapshot>>,
        flips: mpsc::Sender<health::Flip>,
        events: mpsc::Sender<StateEvent>,
        keys: Vec<ProbeKey>,
        shutdown: CancellationToken,
        _dir: tempfile::TempDir,
    }

    fn harness(pools: usize) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let zone =
            "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n";
        std::fs::write(dir.path().join("z"), zone).unwrap();
        let mut config = String::from(
            "[store]\npath = \"state\"\n[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n",
        );
        for p in 0..pools {
            let eps: Vec<String> = (0..10)
                .map(|j| {
                    format!(
                        "{{ address = \"127.3.{}.{}\" }}",
                        p / 25,
                        (p % 25) * 10 + j + 1
                    )
                })
                .collect();
            write!(
                config,
                "[[pool]]\nname = \"p{p}.example.com.\"\non_all_down = \"nodata\"\n[pool.check]\nkind = \"tcp\"\nport = 9\ninterval = \"1h\"\ntimeout = \"1s\"\n[[pool.group]]\nname = \"g\"\nendpoints = [{}]\n",
                eps.join(", ")
            )
            .unwrap();
        }
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, config).unwrap();
        let loaded = load(&path).unwrap();
        let keys: Vec<ProbeKey> = loaded
            .config
            .pools
            .iter()
            .flat_map(|p| p.probes().cloned().collect::<Vec<_>>())
            .collect();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SledStore::open(&dir.path().join("state"), 100).unwrap());
        let stored = store.load().unwrap();
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let (flips_tx, flips) = mpsc::channel(65_536);
        let (probe_flips, _) = mpsc::channel(1);
        let monitor = health::Monitor::new(probe_flips, metrics.clone(), shutdown.clone());
        let writer = Writer::start(
            loaded,
            stored,
            Backend::local(store),
            metrics,
            monitor,
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        let snapshot = writer.snapshot();
        let (events_tx, events) = mpsc::channel(64);
        let (_due, due) = mpsc::channel(1);
        let (_remote, remote) = mpsc::channel(1);
        tokio::spawn(writer.run(
            events,
            flips,
            due,
            remote,
            mpsc::channel(1).1,
            shutdown.clone(),
        ));
        Harness {
            snapshot,
            flips: flips_tx,
            events: events_tx,
            keys,
            shutdown,
            _dir: dir,
        }
    }

    fn down(key: &ProbeKey) -> health::Flip {
        health::Flip {
            key: key.clone(),
            health: Health::Down,
            reason: "test".into(),
            at: tokio::time::Instant::now(),
        }
    }

    /// Probes the snapshot counts as down.
    fn down_count(s: &Snapshot) -> usize {
        s.view
            .health
            .values()
            .filter(|v| **v == Health::Down)
            .count()
    }

    /// Waits (yielding, a millisecond of paused time at a go) until `done` holds.
    async fn until(h: &Harness, done: impl Fn(&Snapshot) -> bool) {
        for _ in 0..100_000 {
            if done(&h.snapshot.load()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("never happened");
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_of_flips_is_published_in_a_few_batches() {
        let h = harness(40);
        let start = h.snapshot.load().generation;
        for key in &h.keys {
            h.flips.send(down(key)).await.unwrap();
        }
        until(&h, |s| down_count(s) == 400).await;
        let publications = h.snapshot.load().generation - start;
        // The sender yields to the runtime every 128 sends (tokio's cooperative budget), so
        // the writer may wake between chunks: a handful of batches, never one per flip.
        assert!(
            publications <= 8,
            "400 flips took {publications} publications"
        );
        // Every pool is out of the answers: all its endpoints are down.
        let snap = h.snapshot.load();
        for p in snap.view.pools.iter() {
            assert!(
                snap.pool_status(&p.name).unwrap().ipv4.degraded,
                "{}",
                p.name
            );
        }
        h.shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_flip_rebuilds_only_the_pools_its_probe_feeds() {
        let h = harness(30);
        let before = h.snapshot.load_full();
        // The first endpoint of pool 7.
        h.flips.send(down(&h.keys[70])).await.unwrap();
        until(&h, |s| s.generation > before.generation).await;
        let after = h.snapshot.load_full();
        let shared: Vec<bool> = (0..30)
            .map(|i| after.shares_pool_view(&before, i))
            .collect();
        assert_eq!(
            shared.iter().filter(|s| !**s).count(),
            1,
            "one pool rebuilt: {shared:?}"
        );
        assert!(!shared[7], "pool 7 is the one rebuilt");
        assert!(
            Arc::ptr_eq(&after.view.pools, &before.view.pools),
            "the pools are shared"
        );
        h.shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn an_admin_write_during_a_storm_is_acknowledged_published_and_stored() {
        let h = harness(40);
        let storm = h.flips.clone();
        let keys = h.keys.clone();
        let flipper = tokio::spawn(async move {
            for key in &keys {
                storm.send(down(key)).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let (reply, answer) = oneshot::channel();
        let request = ChangeRequest {
            change: change::Change::GroupWeight {
                pool: PoolId::parse("p3.example.com.").unwrap(),
                group: "g".into(),
                weight: 40,
            },
            actor: "test".into(),
            source: String::new(),
            reason: "during a storm".into(),
            if_match: None,
            force: true,
        };
        h.events
            .send(StateEvent::Change { request, reply })
            .await
            .unwrap();
        let sent = tokio::time::Instant::now();
        let generation = answer.await.unwrap().unwrap();
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "acknowledged {:?} after it was sent",
            sent.elapsed()
        );
        let snap = h.snapshot.load();
        assert!(
            snap.view.generation >= generation,
            "published before the reply"
        );
        let served = snap
            .view
            .pools
            .iter()
            .find(|p| p.name.to_string() == "p3.example.com.")
            .unwrap();
        assert_eq!(served.groups[0].weight, 40);
        flipper.await.unwrap();
        until(&h, |s| down_count(s) == 400).await;
        h.shutdown.cancel();
    }
}
