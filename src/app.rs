//! The one wiring place: load, first snapshot, bind, spawn the DNS front end and the state
//! writer, wait for signals, drain. Owns no domain logic.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::dns;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::state::{self, HealthMap, Loaded, StateEvent};

/// A running server. Dropping it does not stop it; call `shutdown`.
#[derive(Debug)]
pub struct Running {
    /// The bound DNS addresses (UDP and TCP on each).
    pub dns_addrs: Vec<SocketAddr>,
    pub events: mpsc::Sender<StateEvent>,
    pub metrics: Arc<Metrics>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    shutdown: CancellationToken,
    dns: JoinHandle<Result<(), dns::ListenerDied>>,
    writer: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets in-flight exchanges finish, and returns how the DNS side ended.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.finish().await
    }

    async fn finish(self) -> anyhow::Result<()> {
        let dns = self.dns.await.context("DNS task")?;
        self.shutdown.cancel();
        let _ = self.writer.await;
        dns.map_err(Into::into)
    }
}

/// Binds the configured addresses and starts serving what `loaded` describes.
pub fn start(loaded: Loaded) -> anyhow::Result<Running> {
    let config = &loaded.config;
    let health = HealthMap::new();
    let metrics = Arc::new(Metrics::new());
    let snapshot = state::build(&loaded, &health, &metrics, 1);
    metrics.published(snapshot.generation);
    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
    let listeners = dns::bind(&config.dns).context("binding DNS listeners")?;
    let dns_addrs = listeners.local_addrs();
    let shutdown = CancellationToken::new();
    let ctx = dns::Context {
        snapshot: snapshot.clone(),
        metrics: metrics.clone(),
        config: config.dns.clone(),
    };
    let dns = tokio::spawn(dns::run(listeners, ctx, shutdown.clone()));
    let (events, rx) = mpsc::channel(64);
    let writer = state::Writer {
        config_path: config.path.clone(),
        loaded: loaded.clone(),
        health,
        snapshot: snapshot.clone(),
        metrics: metrics.clone(),
    };
    let writer = tokio::spawn(writer.run(rx, shutdown.clone()));
    Ok(Running {
        dns_addrs,
        events,
        metrics,
        snapshot,
        shutdown,
        dns,
        writer,
    })
}

/// `weir serve`: runs until SIGTERM or SIGINT; SIGHUP reloads config and zones.
pub async fn serve(loaded: Loaded) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let zones = loaded.zones.len();
    let config_path = loaded.config.path.clone();
    let running = start(loaded)?;
    let addrs: Vec<String> = running.dns_addrs.iter().map(ToString::to_string).collect();
    tracing::info!(
        listen = %addrs.join(","),
        zones,
        config = %config_path.display(),
        "weir serving DNS over UDP and TCP"
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let dns_done = running.shutdown.clone();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = dns_done.cancelled() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading config and zones");
                let _ = running.events.send(StateEvent::Reload { reply: None }).await;
            }
        }
    }
    tracing::info!("shutting down");
    running.shutdown().await
}

/// `weir check`: loads config and zones exactly as `serve` would.
pub fn check(path: &Path) -> Result<String, crate::config::Problems> {
    let Loaded { config, zones } = state::load(path)?;
    let snapshot = state::build(
        &Loaded {
            config: config.clone(),
            zones,
        },
        &HealthMap::new(),
        &Metrics::new(),
        0,
    );
    Ok(format!(
        "{}: ok ({} zone{}, listening on {})",
        config.path.display(),
        snapshot.zone_count(),
        if snapshot.zone_count() == 1 { "" } else { "s" },
        config
            .dns
            .listen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
