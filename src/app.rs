//! The one wiring place: load, first snapshot, bind, spawn the DNS front end and the state
//! writer, wait for signals, drain. Owns no domain logic.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::dns;
use crate::health;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::state::{self, HealthMap, Loaded, StateEvent};

/// Capacity of the state writer's event channel; senders wait when it is full.
const EVENT_QUEUE: usize = 1024;

/// A running server. Dropping it does not stop it; call `shutdown`.
#[derive(Debug)]
pub struct Running {
    /// The bound DNS addresses (UDP and TCP on each).
    pub dns_addrs: Vec<SocketAddr>,
    /// The admin API's address, if enabled.
    pub admin_addr: Option<SocketAddr>,
    pub events: mpsc::Sender<StateEvent>,
    pub metrics: Arc<Metrics>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    shutdown: CancellationToken,
    dns: JoinHandle<Result<(), dns::ListenerDied>>,
    writer: JoinHandle<()>,
    admin: Option<JoinHandle<std::io::Result<()>>>,
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
        if let Some(admin) = self.admin {
            admin.await.context("admin task")?.context("admin server")?;
        }
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
    let admin_listener = match config.admin.listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("binding the admin API on {addr}"))?;
            l.set_nonblocking(true)?;
            Some(tokio::net::TcpListener::from_std(l)?)
        }
        None => None,
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let probes_ready = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();
    let ctx = dns::Context {
        snapshot: snapshot.clone(),
        metrics: metrics.clone(),
        config: config.dns.clone(),
    };
    let dns = tokio::spawn(dns::run(listeners, ctx, shutdown.clone()));
    let (events, rx) = mpsc::channel(EVENT_QUEUE);
    let writer = state::Writer {
        config_path: config.path.clone(),
        loaded: loaded.clone(),
        health,
        snapshot: snapshot.clone(),
        metrics: metrics.clone(),
        monitor: health::Monitor::new(events.clone(), metrics.clone(), shutdown.clone()),
        probes_ready: probes_ready.clone(),
    };
    let writer = tokio::spawn(writer.run(rx, shutdown.clone()));
    let admin = admin_listener.map(|listener| {
        let router = admin::router(admin::AdminContext {
            metrics: metrics.clone(),
            snapshot: snapshot.clone(),
            probes_ready,
        });
        tokio::spawn(admin::run(listener, router, shutdown.clone()))
    });
    Ok(Running {
        dns_addrs,
        admin_addr,
        events,
        metrics,
        snapshot,
        shutdown,
        dns,
        writer,
        admin,
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
        admin = %running.admin_addr.map_or("off".to_string(), |a| a.to_string()),
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
    let loaded = state::load(path)?;
    let snapshot = state::build(&loaded, &HealthMap::new(), &Metrics::new(), 0);
    let config = loaded.config;
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
