//! The single writer. Every change to what weir serves arrives as a `StateEvent` on one bounded
//! channel; this task applies it, builds a new `Snapshot` and publishes it with one atomic swap.
//! Start-up and reload share `load()`, so a served snapshot always came through the same checks.
//! A failed load publishes nothing: the old snapshot keeps serving.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, DnsConfig, Problem, Problems};
use crate::metrics::Metrics;
use crate::snapshot::{self, Snapshot};
use crate::zones;

/// Every kind of change weir accepts. Closed on purpose: `grep StateEvent::` finds every writer.
#[derive(Debug)]
pub enum StateEvent {
    /// Re-read config and zones (SIGHUP). The reply carries the new generation or every problem.
    Reload {
        reply: Option<oneshot::Sender<Result<u64, Problems>>>,
    },
}

/// Reads config and zones from disk and builds a snapshot (blocking file I/O).
pub fn load(path: &std::path::Path, generation: u64) -> Result<(Config, Snapshot), Problems> {
    let config = config::load(path)?;
    let zones = zones::load_all(&config)?;
    let snapshot = snapshot::build(&zones, generation);
    Ok((config, snapshot))
}

/// The writer's own state.
#[derive(Debug)]
pub struct Writer {
    pub config_path: PathBuf,
    /// The socket settings in force; they change only with a restart.
    pub dns: DnsConfig,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
}

impl Writer {
    /// Applies events until the channel closes or `shutdown` is cancelled.
    pub async fn run(self, mut events: mpsc::Receiver<StateEvent>, shutdown: CancellationToken) {
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
            };
            match event {
                StateEvent::Reload { reply } => {
                    let result = self.reload().await;
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                }
            }
        }
    }

    async fn reload(&self) -> Result<u64, Problems> {
        let generation = self.snapshot.load().generation + 1;
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&path, generation))
            .await
            .unwrap_or_else(|e| {
                Err(Problems(vec![Problem {
                    location: "reload".into(),
                    message: format!("loader failed: {e}"),
                }]))
            });
        match loaded {
            Ok((config, snapshot)) => {
                if config.dns != self.dns {
                    tracing::warn!("[dns] settings changed; they take effect after a restart");
                }
                let zones = snapshot.zone_count();
                self.snapshot.store(Arc::new(snapshot));
                self.metrics.published(generation);
                self.metrics.reloaded(true);
                tracing::info!(generation, zones, "reloaded; snapshot published");
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
