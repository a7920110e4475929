//! The single writer. Every change to what weir serves arrives as a `StateEvent` on one bounded
//! channel; this task applies it, builds a new `Snapshot` from (config, zones, health) and
//! publishes it with one atomic swap. Start-up and reload share `load()`, so a served snapshot
//! always came through the same checks. A failed load publishes nothing: the old snapshot keeps
//! serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, Problem, Problems};
use crate::health;
use crate::metrics::Metrics;
use crate::model::{Health, ProbeKey};
use crate::snapshot::{self, Snapshot, ZoneIndex};
use crate::zones::{self, Zone};

/// Every kind of change weir accepts. Closed on purpose: `grep StateEvent::` finds every writer.
#[derive(Debug)]
pub enum StateEvent {
    /// Re-read config and zones (SIGHUP). The reply carries the new generation or every problem.
    Reload {
        reply: Option<oneshot::Sender<Result<u64, Problems>>>,
    },
    /// A probe's health flipped after hysteresis (sent by `health` on flips only).
    Health {
        key: ProbeKey,
        health: Health,
        /// Why, for the log: the last probe's result ("HTTP 503", "timeout after 2s", ...).
        reason: String,
    },
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

/// Every distinct probe of the loaded pools.
fn probes(loaded: &Loaded) -> impl Iterator<Item = &ProbeKey> {
    loaded.config.pools.iter().flat_map(|p| p.probes())
}

/// Health of every probe; a probe with no result yet has its check's `initial` health.
pub type HealthMap = HashMap<ProbeKey, Health>;

/// Builds the snapshot for `loaded` under `health`.
pub fn build(loaded: &Loaded, health: &HealthMap, metrics: &Metrics, generation: u64) -> Snapshot {
    snapshot::build(
        &loaded.index,
        &loaded.config.pools,
        health,
        metrics,
        generation,
    )
}

/// The writer's own state.
#[derive(Debug)]
pub struct Writer {
    pub config_path: PathBuf,
    pub loaded: Loaded,
    pub health: HealthMap,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    /// Runs the probes of the loaded pools; its flips come back on the writer's channel.
    pub monitor: health::Monitor,
    /// Set once every probe has reported at least once and its flips are applied (/readyz).
    pub probes_ready: Arc<AtomicBool>,
}

/// How often the writer checks whether the first probe round is complete.
const READY_POLL: Duration = Duration::from_millis(50);

impl Writer {
    /// Applies events until the channel closes or `shutdown` is cancelled.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<StateEvent>,
        shutdown: CancellationToken,
    ) {
        self.monitor.set_probes(probes(&self.loaded).cloned());
        let mut ready_poll = tokio::time::interval(READY_POLL);
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
                _ = ready_poll.tick(), if !self.probes_ready.load(Ordering::Acquire) => {
                    if self.monitor.first_round_done() {
                        // Flips of the first round are already queued: apply them first.
                        while let Ok(event) = events.try_recv() {
                            self.apply(event).await;
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
                // A probe stopped by a reload may still have had a flip in flight.
                if !probes(&self.loaded).any(|k| *k == key) {
                    return;
                }
                tracing::info!(target = %key.target, ?health, %reason, "health changed");
                self.health.insert(key, health);
                self.publish();
            }
        }
    }

    fn publish(&self) -> u64 {
        let generation = self.snapshot.load().generation + 1;
        let snapshot = build(&self.loaded, &self.health, &self.metrics, generation);
        self.snapshot.store(Arc::new(snapshot));
        self.metrics.published(generation);
        generation
    }

    async fn reload(&mut self) -> Result<u64, Problems> {
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&path))
            .await
            .unwrap_or_else(|e| {
                Err(Problems(vec![Problem {
                    location: "reload".into(),
                    message: format!("loader failed: {e}"),
                }]))
            });
        match loaded {
            Ok(loaded) => {
                if loaded.config.dns != self.loaded.config.dns {
                    tracing::warn!("[dns] settings changed; they take effect after a restart");
                }
                self.loaded = loaded;
                // Probes that stay keep their hysteresis and health; removed ones are forgotten.
                let current: std::collections::HashSet<ProbeKey> =
                    probes(&self.loaded).cloned().collect();
                self.health.retain(|k, _| current.contains(k));
                self.monitor.set_probes(current);
                let generation = self.publish();
                self.metrics.reloaded(true);
                tracing::info!(
                    generation,
                    zones = self.loaded.zones.len(),
                    "reloaded; snapshot published"
                );
                Ok(generation)
            }
            Err(problems) => {
                self.metrics.reloaded(false);
                tracing::error!(problems = %problems, "reload failed; still serving the previous snapshot");
                Err(problems)
            }
        }
    }
}
