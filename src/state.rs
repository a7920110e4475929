//! The single writer. Every change to what weir serves arrives as a `StateEvent` on one bounded
//! channel; this task applies it, persists intent (through `Store`, flushed before any reply),
//! builds a new `Snapshot` from (config, zones, intent overlay, health) and publishes it with one
//! atomic swap. Start-up and reload share `load()`, so a served snapshot always came through the
//! same checks. A failed load or a refused change publishes nothing: the old snapshot keeps
//! serving.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, Problem, Problems};
use crate::health;
use crate::metrics::Metrics;
use crate::model::{AuditRecord, Health, Name, Overlay, Pool, ProbeKey, Rollout, View};
use crate::rollout;
use crate::snapshot::{self, Snapshot, ZoneIndex};
use crate::store::{Store, StoreError};
use crate::zones::{self, Zone};

pub mod change;

use change::{ChangeError, ChangeRequest};

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
    },
    /// A rollout command: from an operator (admin API, replied to once stored and published)
    /// or the rollout driver (`Tick`, when a step is due; no reply).
    Rollout {
        pool: Name,
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
}

/// A reload that went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// The intent generation after the reload (higher if it dropped stale overrides).
    pub generation: u64,
    /// Config tables that changed but apply only after a restart ("dns", "admin", "store").
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
    let config = config::load(path)?;
    let zones = zones::load_all(&config)?;
    let problems = zones::check_pools(&config, &zones);
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let index = snapshot::index(&zones, &config.pools);
    Ok(Loaded {
        config,
        zones,
        index,
    })
}

/// Health of every probe; a probe with no result yet has its check's `initial` health.
pub type HealthMap = HashMap<ProbeKey, Health>;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
        zones: loaded.zones.iter().map(|z| z.origin.clone()).collect(),
        config_pools: loaded.config.pools.clone(),
        overlay: overlay.clone(),
        pools: change::effective(&loaded.config.pools, overlay),
        health: health.clone(),
    };
    snapshot::build(&loaded.index, Arc::new(view), metrics, publication)
}

fn record_state(overlay: &Overlay, pool: &str) -> crate::model::RolloutState {
    overlay
        .rollouts
        .get(pool)
        .map_or(crate::model::RolloutState::Done, |r| r.state.clone())
}

fn flip_event(flip: health::Flip) -> StateEvent {
    StateEvent::Health {
        key: flip.key,
        health: flip.health,
        reason: flip.reason,
    }
}

/// Read access to the audit log for the admin API; writing goes through `StateEvent`s only.
#[derive(Clone, Debug)]
pub struct AuditLog(Arc<dyn Store>);

impl AuditLog {
    pub fn new(store: Arc<dyn Store>) -> Self {
        AuditLog(store)
    }

    /// Newest first, only `pool`'s if given, at most `limit`.
    pub fn read(&self, pool: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.0.audit(pool, limit)
    }
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
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    /// Runs the probes of the served pools; its flips come back on the writer's channel.
    monitor: health::Monitor,
    /// Set once every probe has reported at least once and its flips are applied (/readyz).
    probes_ready: Arc<AtomicBool>,
}

/// How often the writer checks whether the first probe round is complete.
const READY_POLL: Duration = Duration::from_millis(50);

impl Writer {
    /// Restores the stored intent over `loaded`, drops intent the config no longer backs (with
    /// audit records), and publishes the first snapshot. Start-up is this plus a reload loop.
    pub fn start(
        loaded: Loaded,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        monitor: health::Monitor,
        probes_ready: Arc<AtomicBool>,
    ) -> Result<Writer, StoreError> {
        let stored = store.load()?;
        let (overlay, dropped) = change::prune(&loaded.config.pools, &stored.overlay, now());
        let generation = if dropped.is_empty() {
            stored.generation
        } else {
            tracing::warn!(
                dropped = dropped.len(),
                "stored overrides not backed by the config were dropped"
            );
            store.commit(stored.generation, &overlay, dropped)?
        };
        let health = HealthMap::new();
        let first = build(&loaded, &overlay, generation, &health, &metrics, 1);
        metrics.published(first.generation);
        Ok(Writer {
            config_path: loaded.config.path.clone(),
            loaded,
            health,
            overlay,
            generation,
            store,
            snapshot: Arc::new(ArcSwap::from_pointee(first)),
            metrics,
            monitor,
            probes_ready,
        })
    }

    /// The published snapshot, for readers.
    pub fn snapshot(&self) -> Arc<ArcSwap<Snapshot>> {
        self.snapshot.clone()
    }

    /// Applies events (and the monitor's flips, as `StateEvent::Health`) until the event
    /// channel closes or `shutdown` is cancelled.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<StateEvent>,
        mut flips: mpsc::Receiver<health::Flip>,
        mut due: mpsc::Receiver<rollout::Signal>,
        shutdown: CancellationToken,
    ) {
        self.monitor.set_probes(self.served_probes());
        let mut ready_poll = tokio::time::interval(READY_POLL);
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
                Some(flip) = flips.recv() => flip_event(flip),
                Some(signal) = due.recv() => {
                    let (pool, command, why) = match signal {
                        rollout::Signal::Due(pool) => (pool, rollout::Command::Tick, String::new()),
                        rollout::Signal::GateFailed(pool, reason) => {
                            (pool, rollout::Command::Abort { reason }, String::new())
                        }
                        rollout::Signal::WebhookFailed { pool, reason, abort: true } => {
                            (pool, rollout::Command::Abort { reason }, String::new())
                        }
                        rollout::Signal::WebhookFailed { pool, reason, abort: false } => {
                            tracing::warn!(%pool, %reason, "rollout webhook refused the next step; pausing");
                            (pool, rollout::Command::Pause, reason)
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
                _ = ready_poll.tick(), if !self.probes_ready.load(Ordering::Acquire) => {
                    if self.monitor.first_round_done() {
                        // Flips of the first round are already queued: apply them first.
                        while let Ok(flip) = flips.try_recv() {
                            self.apply(flip_event(flip)).await;
                        }
                        self.probes_ready.store(true, Ordering::Release);
                        tracing::info!("first health probe round complete; ready");
                    }
                    continue;
                }
            };
            self.apply(event).await;
        }
    }

    fn served_probes(&self) -> HashSet<ProbeKey> {
        probes(&self.snapshot.load().view.pools)
    }

    async fn apply(&mut self, event: StateEvent) {
        match event {
            StateEvent::Reload { reply } => {
                let result = self.reload().await;
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            StateEvent::Health {
                key,
                health,
                reason,
            } => {
                // A probe stopped by a reload or a change may still have had a flip in flight.
                if !self.served_probes().contains(&key) {
                    return;
                }
                tracing::info!(target = %key.target, ?health, %reason, "health changed");
                self.health.insert(key, health);
                self.publish();
            }
            StateEvent::Change { request, reply } => {
                let result = self.change(request).await;
                let _ = reply.send(result);
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

    fn publish(&self) -> u64 {
        for (pool, r) in &self.overlay.rollouts {
            let step = r.rolling.as_ref().map_or(r.step, |rl| rl.batch);
            self.metrics
                .rollout(pool, r.weight, step, rollout::state_name(&r.state));
        }
        let publication = self.snapshot.load().generation + 1;
        let snapshot = build(
            &self.loaded,
            &self.overlay,
            self.generation,
            &self.health,
            &self.metrics,
            publication,
        );
        self.snapshot.store(Arc::new(snapshot));
        self.metrics.published(publication);
        publication
    }

    /// Stores `overlay` with `records` as the next generation, durably, off the async threads.
    async fn commit(&self, overlay: Overlay, records: Vec<AuditRecord>) -> Result<u64, StoreError> {
        let store = self.store.clone();
        let expected = self.generation;
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || store.commit(expected, &overlay, records))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Io {
                    path: "store".into(),
                    detail: format!("commit task failed: {e}"),
                })
            });
        self.metrics
            .store_commit(started.elapsed().as_secs_f64(), result.is_ok());
        result
    }

    /// Sets a new overlay at a new generation: probes follow, the snapshot is rebuilt.
    fn adopt(&mut self, overlay: Overlay, generation: u64) {
        self.overlay = overlay;
        self.generation = generation;
        let served = probes(&change::effective(&self.loaded.config.pools, &self.overlay));
        // Probes that stay keep their hysteresis and health; removed ones are forgotten.
        self.health.retain(|k, _| served.contains(k));
        self.monitor.set_probes(served);
        self.publish();
    }

    async fn change(&mut self, request: ChangeRequest) -> Result<u64, ChangeError> {
        if let Some(expected) = request.if_match
            && expected != self.generation
        {
            return Err(ChangeError::Stale {
                expected,
                actual: self.generation,
            });
        }
        let applied = change::apply(
            &self.loaded.config.pools,
            &self.overlay,
            &request.change,
            request.force,
        )?;
        let record = AuditRecord {
            generation: 0,
            time: now(),
            actor: request.actor,
            source: request.source,
            action: applied.action.into(),
            pool: applied.pool,
            subject: applied.subject,
            before: applied.before,
            after: applied.after,
            reason: request.reason,
        };
        let generation = match self
            .commit(applied.overlay.clone(), vec![record.clone()])
            .await
        {
            Ok(generation) => generation,
            Err(StoreError::Conflict { expected, actual }) => {
                return Err(ChangeError::Stale { expected, actual });
            }
            Err(e) => return Err(ChangeError::Store(e.to_string())),
        };
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

    /// Runs a rollout command against the stored rollout of `pool`; a weight change is stored
    /// as the rollout's group weights (from = 100 - w, to = w) in the same commit.
    async fn rollout(
        &mut self,
        pool: Name,
        command: rollout::Command,
        actor: String,
        source: String,
        reason: String,
    ) -> Result<u64, ChangeError> {
        let config = self
            .loaded
            .config
            .pools
            .iter()
            .find(|p| p.name == pool)
            .ok_or_else(|| ChangeError::NotFound(format!("no pool `{pool}`")))?;
        let key = pool.to_string();
        let current = self.overlay.rollouts.get(&key);
        let current_state = current.map(|r| r.state.clone());
        let now = rollout::now();
        // Changes settle under the TTL served before them (the ramp TTL once a ramp is on).
        let ttl = rollout::served_ttl(current, config.ttl);
        let next: Rollout = match (&command, current) {
            (rollout::Command::Start(_), Some(r)) if rollout::active(r) => {
                return Err(ChangeError::Conflict(format!(
                    "a rollout of `{key}` is already {}; abort it or let it finish first",
                    rollout::state_name(&r.state)
                )));
            }
            (rollout::Command::Start(plan), _) => {
                rollout::validate(plan, config).map_err(ChangeError::Invalid)?;
                let served = self
                    .snapshot
                    .load()
                    .view
                    .pools
                    .iter()
                    .find(|p| p.name == pool)
                    .cloned();
                rollout::start(plan, now, ttl, served.as_ref().unwrap_or(config))
                    .map_err(ChangeError::Invalid)?
            }
            (_, None) => {
                return Err(ChangeError::NotFound(format!(
                    "no rollout for pool `{key}`"
                )));
            }
            (rollout::Command::Tick, Some(r)) => {
                let view = self.snapshot.load().view.clone();
                let seen = view
                    .pools
                    .iter()
                    .find(|p| p.name == pool)
                    .map(|served| rollout::observe(&view, served, r))
                    .unwrap_or_default();
                match rollout::tick(r, now, ttl, &seen) {
                    Some(next) => next,
                    None => return Ok(self.generation),
                }
            }
            (command, Some(r)) => {
                rollout::command(r, command, now, ttl).map_err(ChangeError::Conflict)?
            }
        };
        let summary = |r: Option<&Rollout>| {
            r.map_or(serde_json::Value::Null, |r| {
                serde_json::json!({ "step": r.step, "weight": r.weight, "state": rollout::state_name(&r.state) })
            })
        };
        let reason = match &next.state {
            crate::model::RolloutState::Aborted { reason: why } if reason.is_empty() => why.clone(),
            _ => reason,
        };
        let record = AuditRecord {
            generation: 0,
            time: now,
            actor,
            source,
            action: command.action().into(),
            pool: key.clone(),
            subject: format!("rollout {} -> {}", next.from, next.to),
            before: summary(current),
            after: summary(Some(&next)),
            reason,
        };
        let mut overlay = self.overlay.clone();
        match &next.rolling {
            // A rolling update drains its current batch and nothing else in the group.
            Some(rl) => {
                let drained = rollout::drained(&next);
                let weights = overlay.endpoint_weights.entry(key.clone()).or_default();
                for addr in rl.batches.iter().flatten() {
                    if drained.contains(addr) {
                        weights.insert(addr.clone(), 0);
                    } else {
                        weights.remove(addr);
                    }
                }
                if weights.is_empty() {
                    overlay.endpoint_weights.remove(&key);
                }
            }
            None => {
                let weights = overlay.group_weights.entry(key.clone()).or_default();
                weights.insert(next.from.clone(), 100 - next.weight);
                weights.insert(next.to.clone(), next.weight);
            }
        }
        overlay.rollouts.insert(key, next);
        let generation = match self.commit(overlay.clone(), vec![record.clone()]).await {
            Ok(generation) => generation,
            Err(StoreError::Conflict { expected, actual }) => {
                return Err(ChangeError::Stale { expected, actual });
            }
            Err(e) => return Err(ChangeError::Store(e.to_string())),
        };
        tracing::info!(
            generation,
            pool = %record.pool,
            action = %record.action,
            after = %record.after,
            reason = %record.reason,
            "rollout"
        );
        if let crate::model::RolloutState::Aborted { reason } =
            &record_state(&overlay, &record.pool)
        {
            let cause = if record.actor != "weir" {
                "operator"
            } else if reason.starts_with("metric gate") {
                "metric"
            } else {
                "health"
            };
            if !matches!(
                current_state,
                Some(crate::model::RolloutState::Aborted { .. })
            ) {
                self.metrics.rollout_aborted(&record.pool, cause);
                tracing::warn!(pool = %record.pool, %cause, %reason, "rollout aborted");
            }
        }
        self.adopt(overlay, generation);
        Ok(generation)
    }

    async fn reload(&mut self) -> Result<Reloaded, Problems> {
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&path))
            .await
            .unwrap_or_else(|e| {
                Err(Problems(vec![Problem {
                    location: "reload".into(),
                    message: format!("loader failed: {e}"),
                }]))
            });
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
        let (overlay, dropped) = change::prune(&loaded.config.pools, &self.overlay, now());
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
