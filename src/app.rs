//! The one wiring place: load, open the store, restore intent, first snapshot, bind, spawn the
//! DNS front end, the state writer and the admin API, wait for signals, drain. Owns no domain
//! logic.

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
use crate::convergence::Convergence;
use crate::dns;
use crate::health;
use crate::metrics::Metrics;
use crate::model::HealthMap;
use crate::snapshot::Snapshot;
use crate::state::{self, Loaded, StateEvent};
use crate::store::{Backend, Cluster, SledStore, Store, StoreError, StoreView, Stored};

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
    /// Per-pool cache convergence (`Convergence::off()` with `track_convergence = false`).
    pub convergence: Convergence,
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

/// Opens the configured store; `reset` first moves an existing (local) one aside. With
/// `backend = "etcd"` the sled store becomes this node's cache under an `EtcdStore`.
pub fn open_store(loaded: &Loaded, reset: bool) -> anyhow::Result<Backend> {
    let config = &loaded.config.store;
    let path = &config.path;
    if reset && let Some(moved) = SledStore::reset(path)? {
        tracing::warn!(from = %path.display(), to = %moved.display(), "state store moved aside (--reset-state)");
    }
    let local = SledStore::open(path, config.audit_retention)?;
    match &config.etcd {
        None => Ok(Backend::local(Arc::new(local))),
        #[cfg(feature = "etcd")]
        Some(etcd) => Ok(Backend::shared(Arc::new(crate::store::EtcdStore::open(
            etcd,
            local,
            config.audit_retention,
        )?))),
        #[cfg(not(feature = "etcd"))]
        Some(_) => anyhow::bail!("this weir was built without etcd support (--features etcd)"),
    }
}

/// How often start-up retries a shared store that is unreachable while no state is cached.
const STATE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Restores stored intent, binds the configured addresses and starts serving.
pub fn start(loaded: Loaded, backend: Backend) -> anyhow::Result<Running> {
    let stored = backend.store.load().context("restoring the stored state")?;
    start_with(loaded, backend, stored, admin::Placement::Shared)
}

/// `start` with the stored state already read and the admin API placed as `placement` says.
pub fn start_with(
    loaded: Loaded,
    backend: Backend,
    stored: Stored,
    placement: admin::Placement,
) -> anyhow::Result<Running> {
    raise_nofile_once();
    let config = loaded.config.clone();
    check_descriptor_budget(&config);
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let probes_ready = Arc::new(AtomicBool::new(false));
    let (events, rx) = mpsc::channel(EVENT_QUEUE);
    let (flips, flips_rx) = mpsc::channel(EVENT_QUEUE);
    let (due, due_rx) = mpsc::channel(EVENT_QUEUE);
    let (updates, updates_rx) = mpsc::channel(EVENT_QUEUE);
    let monitor = health::Monitor::new(flips, metrics.clone(), shutdown.clone());
    let probe_results = monitor.last_results();
    let mut writer = state::Writer::start(
        loaded,
        stored,
        backend.clone(),
        metrics.clone(),
        monitor,
        probes_ready.clone(),
    )
    .context("restoring the stored state")?;
    let snapshot = writer.snapshot();
    let store_health = writer.store_health();

    let listeners = dns::bind(&config.dns).context("binding DNS listeners")?;
    let dns_addrs = listeners.local_addrs();
    let (admin_listener, admin_tls) = bind_admin(&config.admin)?;
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

    // Convergence tracking: one fixed table per UDP worker plus one for TCP, drained by a task.
    let (recorder, convergence) = if config.dns.track_convergence {
        let tables = dns::track::Tables::new(listeners.udp_workers());
        let convergence = crate::convergence::start(
            tables.clone(),
            snapshot.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        (dns::track::Recorder::new(tables), convergence)
    } else {
        (dns::track::Recorder::off(), Convergence::off())
    };
    // Rollouts gated on convergence read the share measured since their last change.
    if convergence.is_on() {
        let measured = convergence.clone();
        writer.set_refetched(Arc::new(move |pool, since| {
            measured.since(pool, since).map(|c| c.refetched)
        }));
    }
    let ctx = dns::Context {
        snapshot: snapshot.clone(),
        metrics: metrics.clone(),
        config: config.dns.clone(),
        query_log: dns::QueryLog::start(config.log.query_sample)
            .context("starting the query log")?,
        recorder,
        rrl: dns::rrl::Limiter::new(&config.dns.rrl),
        cookies: match &config.dns.cookie_secrets {
            Some(secrets) => dns::cookie::Cookies::new(secrets.clone()),
            None => dns::cookie::Cookies::random(),
        },
        updates: dns::updates::Updates::new(updates),
    };
    let dns = tokio::spawn(dns::run(listeners, ctx, shutdown.clone()));
    let (remote, remote_rx) = mpsc::channel(EVENT_QUEUE);
    match &backend.cluster {
        Some(cluster) => {
            cluster.follow(remote);
            tokio::spawn(watch_link(
                cluster.clone(),
                metrics.clone(),
                shutdown.clone(),
            ));
        }
        // A local store is always there: connected, never stale.
        None => metrics.store_link(true, 0.0),
    }
    let writer_inputs = writer.rollout_inputs();
    let writer = tokio::spawn(writer.run(
        rx,
        flips_rx,
        due_rx,
        remote_rx,
        updates_rx,
        shutdown.clone(),
    ));
    tokio::spawn(watch_store(
        backend.store.clone(),
        store_health.clone(),
        shutdown.clone(),
    ));
    crate::rollout::spawn(writer_inputs, due, shutdown.clone());
    tokio::spawn(crate::split::run(
        snapshot.clone(),
        metrics.clone(),
        crate::split::WINDOW,
        shutdown.clone(),
    ));
    tokio::spawn(crate::notify::run(
        snapshot.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let admin = admin_listener
        .map(|listener| {
            let (previews, audit_reads) = admin::AdminContext::read_limits();
            let router = admin::router(admin::AdminContext {
                metrics: metrics.clone(),
                snapshot: snapshot.clone(),
                probes_ready,
                store_health,
                events: events.clone(),
                audit: StoreView::new(backend),
                probes: probe_results,
                tokens: Arc::new(config.admin.tokens.clone()),
                convergence: convergence.clone(),
                previews,
                audit_reads,
            });
            admin::spawn(placement, listener, admin_tls, router, shutdown.clone())
        })
        .transpose()
        .context("starting the admin API")?;
    Ok(Running {
        dns_addrs,
        admin_addr,
        events,
        metrics,
        snapshot,
        convergence,
        shutdown,
        dns,
        writer,
        admin,
    })
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, once per process. The soft limit is
/// often 1024 while the hard one is far higher; every DNS TCP connection, admin connection and
/// probe needs a descriptor, and running out turns into timeouts everywhere at once.
fn raise_nofile_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| match raise_nofile() {
        Ok((before, after)) if before != after => {
            tracing::info!(from = before, to = after, "file descriptor limit raised");
        }
        Ok((limit, _)) => tracing::debug!(limit, "file descriptor limit already at its maximum"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    });
}

/// Descriptors kept for everything that is not a connection or a probe: the store's files,
/// the runtime, listeners, logs.
const FD_RESERVE: u64 = 128;

/// Warns when the descriptor limit is below what weir may hold at once: every DNS TCP
/// connection, every admin connection and every probe in flight, plus a reserve. Running out
/// costs DNS over TCP and the admin API, never health (probes that cannot run are unknown).
fn check_descriptor_budget(config: &crate::config::Config) {
    let admin = if config.admin.listen.is_some() {
        admin::MAX_CONNECTIONS
    } else {
        0
    };
    let needed =
        (config.dns.tcp_max_connections + admin + health::MAX_IN_FLIGHT) as u64 + FD_RESERVE;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 && limit.rlim_cur < needed {
        tracing::warn!(
            limit = limit.rlim_cur,
            needed,
            "the file descriptor limit is below what DNS TCP (dns.tcp_max_connections), the admin API and probes may hold at once; raise LimitNOFILE / ulimit -n"
        );
    }
}

/// Sets the soft RLIMIT_NOFILE to the hard one; returns (old soft, new soft).
pub fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one rlimit through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

/// The admin API's listener (None when disabled) and its TLS acceptor (None for plain HTTP).
fn bind_admin(
    config: &crate::config::AdminConfig,
) -> anyhow::Result<(
    Option<tokio::net::TcpListener>,
    Option<tokio_rustls::TlsAcceptor>,
)> {
    let listener = match config.listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("binding the admin API on {addr}"))?;
            l.set_nonblocking(true)?;
            Some(tokio::net::TcpListener::from_std(l)?)
        }
        None => None,
    };
    let tls = match &config.tls {
        Some(files) => {
            Some(admin::tls_acceptor(files).map_err(|e| anyhow::anyhow!("admin TLS: {e}"))?)
        }
        None => None,
    };
    Ok((listener, tls))
}

/// `weir serve`: runs until SIGTERM or SIGINT; SIGHUP reloads config and zones.
pub async fn serve(loaded: Loaded, backend: Backend) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    raise_nofile_once();
    let zones = loaded.zones.len();
    let config_path = loaded.config.path.clone();
    let store_path = loaded.config.store.path.clone();
    // Handlers first: once the startup line is out, a SIGHUP must reload, never kill.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let stored = tokio::select! {
        stored = wait_for_state(backend.store.clone(), &loaded.config.admin) => stored?,
        _ = term.recv() => return Ok(()),
        _ = int.recv() => return Ok(()),
    };
    let cluster = backend.cluster.clone();
    let running = start_with(loaded, backend, stored, admin::Placement::OwnThread)?;
    let addrs: Vec<String> = running.dns_addrs.iter().map(ToString::to_string).collect();
    tracing::info!(
        listen = %addrs.join(","),
        admin = %running.admin_addr.map_or("off".to_string(), |a| a.to_string()),
        zones,
        generation = running.snapshot.load().view.generation,
        config = %config_path.display(),
        store = %store_path.display(),
        "weir serving DNS over UDP and TCP"
    );
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
    let result = running.shutdown().await;
    if let Some(cluster) = cluster {
        let _ = tokio::task::spawn_blocking(move || cluster.leave()).await;
    }
    result
}

/// The stored state to start from. A shared store that is unreachable while nothing is
/// cached locally leaves nothing safe to serve: weir waits and retries rather than answer from
/// the config alone. Meanwhile DNS does not listen, and the admin API answers `/healthz` (the
/// process is alive) and 503 to everything else, `/readyz` included, saying why.
async fn wait_for_state(
    store: Arc<dyn Store>,
    admin: &crate::config::AdminConfig,
) -> anyhow::Result<Stored> {
    // Set once the first attempt failed: stops the waiting admin API (if one listens).
    let mut waiting: Option<(CancellationToken, Option<JoinHandle<std::io::Result<()>>>)> = None;
    let stored = loop {
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.load()).await? {
            Ok(stored) => break stored,
            Err(StoreError::Unavailable(why)) => {
                if waiting.is_none() {
                    let (listener, tls) = bind_admin(admin)?;
                    let addr = listener.as_ref().and_then(|l| l.local_addr().ok());
                    tracing::warn!(
                        error = %why,
                        admin = %addr.map_or("off".to_string(), |a| a.to_string()),
                        "waiting for the shared state store before serving"
                    );
                    let stop = CancellationToken::new();
                    let task = listener.map(|l| {
                        let router = admin::waiting_router(why.into());
                        tokio::spawn(admin::run(l, tls, router, stop.clone()))
                    });
                    waiting = Some((stop, task));
                }
                tokio::time::sleep(STATE_RETRY).await;
            }
            Err(e) => return Err(e).context("restoring the stored state"),
        }
    };
    if let Some((stop, task)) = waiting {
        stop.cancel();
        // The real admin API binds the same address next.
        if let Some(task) = task {
            task.await?.context("the admin API while waiting")?;
        }
        tracing::info!("the shared state store answered; starting");
    }
    Ok(stored)
}

/// Every second: the shared store's link into `weir_store_connected` and
/// `weir_store_staleness_seconds`.
async fn watch_link(cluster: Arc<dyn Cluster>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let started = crate::clock::wall_ms();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let link = cluster.link();
        let staleness = if link.connected {
            0.0
        } else {
            let since = if link.last_contact_ms == 0 {
                started
            } else {
                link.last_contact_ms
            };
            crate::clock::wall_ms().saturating_sub(since) as f64 / 1000.0
        };
        metrics.store_link(link.connected, staleness);
    }
}

/// How often `watch_store` checks the store, and how long a check may run before the store
/// counts as not answering.
const STORE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);
const STORE_CHECK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Every second: `Store::check` (free space, and a store a failed write closed reopened) into
/// `StoreHealth`, so readiness follows the disk without waiting for a write. One check at a
/// time, on a blocking thread: a store that does not answer shows as failing, and never
/// piles up threads or stops anything else.
async fn watch_store(
    store: Arc<dyn Store>,
    health: state::StoreHealth,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(STORE_CHECK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let version = health.version();
        let s = store.clone();
        let mut task = tokio::task::spawn_blocking(move || s.check());
        let joined = tokio::select! {
            _ = shutdown.cancelled() => return,
            joined = tokio::time::timeout(STORE_CHECK_PATIENCE, &mut task) => joined,
        };
        match joined {
            Ok(Ok(result)) => health.record_since(Some(version), &result),
            Ok(Err(e)) => health.set(Some(format!("the store check failed: {e}"))),
            Err(_) => {
                health.set(Some(format!(
                    "the state store has not answered a check for {} s",
                    STORE_CHECK_PATIENCE.as_secs()
                )));
                // One check at a time: never pile up threads on a store that hangs.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut task => {}
                }
            }
        }
    }
}

/// `weir check`: loads config and zones exactly as `serve` would (the store is not opened).
pub fn check(path: &Path) -> Result<String, crate::config::Problems> {
    let loaded = state::load(path)?;
    let snapshot = state::build(
        &loaded,
        &Default::default(),
        0,
        &HealthMap::new(),
        &Metrics::new(),
        0,
    );
    let config = loaded.config;
    Ok(format!(
        "{}: ok ({} zone{}, {} pool{}, listening on {})",
        config.path.display(),
        snapshot.zone_count(),
        if snapshot.zone_count() == 1 { "" } else { "s" },
        config.pools.len(),
        if config.pools.len() == 1 { "" } else { "s" },
        config
            .dns
            .listen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
