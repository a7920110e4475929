//! Rollouts behind a real resolver (issue 11, "Proof in the suite"): unbound from the Debian
//! package, with a stub zone pointing at a real `weir serve` process; HTTP backends on
//! 127.0.1.x answering their version; a client that every 50 ms resolves the pool's name
//! through unbound and fetches one of the answered addresses over HTTP.
//!
//! Each change is made in the worst case on purpose: just before the action that causes it (and
//! just after a whole second of the wall clock, unbound's time unit), the test flushes the name
//! from unbound (`unbound-control flush`) and asks again, so unbound holds an answer from before
//! the change for as long as it ever does. The settle contract says when such an
//! answer is gone from every resolver that honours TTLs: `t_change + ttl_before + 1 s + slack`
//! (the extra second: unbound keeps serving an answer during the second its TTL reads 0).
//!
//! The clocks are real (unbound is), everything is on loopback, every process is stopped by its
//! PID when its handle drops, and the tests wait on weir's own rollout status, polled every
//! `POLL`. What they read from that status is in the accessor functions below
//! (`safe_to_remove`, `safe_to_upgrade`, `aborted`): issue 11 reshapes those fields, and only
//! those functions change with it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backends::Backend;
use crate::support::{
    Method, WeirProcess, find_program, free_port, http_maybe, http_request, query, send,
};

/// The pool every scenario rolls out.
const POOL: &str = "app.example.com.";
/// The pool's TTL (seconds in the config).
const TTL_MS: u64 = 2_000;
/// The plans' `slack` (seconds in the config).
const SLACK_MS: u64 = 1_000;
/// How long an answer served just before a change may live on in a resolver's cache:
/// `ttl_before + 1 s + slack`, the settle contract of issue 11.
const SETTLE_MS: u64 = TTL_MS + 1_000 + SLACK_MS;
/// How often the tests look at weir's status (and how long they ever sleep at once).
const POLL: Duration = Duration::from_millis(100);
/// The client's period: 20 requests a second.
const CLIENT_PERIOD: Duration = Duration::from_millis(50);
/// What a client request may take (resolution, then the HTTP exchange) before it counts as
/// failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

const ZONE: &str = "$ORIGIN example.com.\n$TTL 2\n@ SOA ns hostmaster 1 3600 600 86400 2\n@ NS ns\nns A 127.0.0.1\n";

/// Wall-clock Unix milliseconds, the unit of the contract's instants.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ---------------------------------------------------------------------------------------------
// What the tests read from `GET /v1/pools/{pool}/rollout`. Issue 11 reshapes these fields; only
// these functions change with it.

/// Blue-green: once weir says `from` is safe to remove, the instant (Unix ms) it gives for it.
fn safe_to_remove(st: &Value) -> Option<u64> {
    if st["safe_to_remove"].as_bool()? {
        st["safe_to_remove_at"].as_u64()
    } else {
        None
    }
}

/// Rolling: once weir says the current batch is safe to upgrade, its addresses and the instant
/// (Unix ms) weir gives for that; None before.
fn safe_to_upgrade(st: &Value) -> Option<(Vec<IpAddr>, u64)> {
    let rolling = &st["rolling"];
    if !rolling["safe_to_upgrade"].as_bool()? {
        return None;
    }
    let batch = rolling["batches"][rolling["batch"].as_u64()? as usize]
        .as_array()?
        .iter()
        .map(|a| a.as_str().unwrap().parse().unwrap())
        .collect();
    Some((batch, rolling["safe_to_upgrade_at"].as_u64()?))
}

/// An aborted rollout: its typed cause ("health", "metric", "webhook", "operator") and the
/// instant (Unix ms) of the abort; None while it is not aborted.
fn aborted(st: &Value) -> Option<(String, u64)> {
    if st["state"].as_str()? != "aborted" {
        return None;
    }
    Some((
        st["abort_cause"].as_str()?.to_string(),
        st["changed_at"].as_u64()?,
    ))
}

/// Rolling: the index of the batch being worked on (the number of batches once done).
///
/// Today: `rolling.batch`.
fn rolling_batch(st: &Value) -> Option<u64> {
    st["rolling"]["batch"].as_u64()
}

/// `to`'s share of the answers, in percent.
fn weight(st: &Value) -> Option<u64> {
    st["weight"].as_u64()
}

/// "running", "waiting for promote", "paused", "done", "aborted".
fn state(st: &Value) -> &str {
    st["state"].as_str().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// unbound

/// A real unbound with a stub zone to weir, killed by its PID when dropped.
struct Unbound {
    child: std::process::Child,
    addr: SocketAddr,
    config: PathBuf,
    control: PathBuf,
    dir: tempfile::TempDir,
}

impl Unbound {
    /// Starts unbound on a free loopback port, with `zone` stubbed to `weir`, and waits until it
    /// answers for the zone. Fails the test, with its log, if it does not.
    async fn start(zone: &str, weir: SocketAddr) -> Unbound {
        Unbound::start_with(zone, weir, "iterator", "").await
    }

    /// With unbound's subnetcache module: EDNS Client Subnet sent to weir, answers cached per
    /// the scope weir returns.
    async fn start_subnetcache(zone: &str, weir: SocketAddr) -> Unbound {
        let ecs = format!(
            "    send-client-subnet: {}\n    max-client-subnet-ipv4: 24\n    client-subnet-always-forward: yes\n",
            weir.ip()
        );
        Unbound::start_with(zone, weir, "subnetcache iterator", &ecs).await
    }

    /// `modules` is unbound's module-config; `extra` more `server:` lines.
    async fn start_with(zone: &str, weir: SocketAddr, modules: &str, extra: &str) -> Unbound {
        let binary = find_program("unbound").unwrap_or_else(|| {
            panic!(
                "unbound is not installed: these tests run a real resolver in front of weir \
                 (Debian: apt-get install unbound; .ci/test installs it)"
            )
        });
        let control = find_program("unbound-control")
            .unwrap_or_else(|| panic!("unbound-control is not installed (Debian package unbound)"));
        let mut last_log = String::new();
        // A port picked free may be taken before unbound binds it: try a few.
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let (port, control_port) = (free_port(), free_port());
            let config = dir.path().join("unbound.conf");
            std::fs::write(
                &config,
                unbound_config(dir.path(), port, control_port, zone, weir, modules, extra),
            )
            .unwrap();
            let child = crate::support::spawn_logged(
                &binary,
                &["-c".as_ref(), config.as_os_str()],
                &dir.path().join("unbound.log"),
            );
            let mut unbound = Unbound {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                config,
                control: control.clone(),
                dir,
            };
            let deadline = unix_ms() + 10_000;
            while unix_ms() < deadline {
                if let Ok(Some(_)) = unbound.child.try_wait() {
                    break;
                }
                let soa = resolve(unbound.addr, zone, RecordType::SOA, POLL).await;
                if soa.is_ok_and(|answers| !answers.is_empty()) {
                    return unbound;
                }
                tokio::time::sleep(POLL).await;
            }
            last_log = unbound.log();
        }
        panic!("unbound did not start or does not answer for {zone}:\n{last_log}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }

    /// The worst case on purpose, right before a change: waits for the next whole second of the
    /// wall clock, then `refetch`es. unbound counts time in whole seconds, so an answer fetched
    /// just after a second begins lives longest in its cache: its TTL, then the second during
    /// which its TTL reads 0.
    async fn refetch_worst(&self, name: &str) -> Vec<IpAddr> {
        run_until(unix_ms() / 1000 * 1000 + 1_005).await;
        self.refetch(name).await
    }

    /// Drops `name` from unbound's cache and asks for it again, so unbound holds a brand-new
    /// answer (full TTL). Returns that answer.
    async fn refetch(&self, name: &str) -> Vec<IpAddr> {
        let out = tokio::process::Command::new(&self.control)
            .arg("-c")
            .arg(&self.config)
            .args(["flush", name])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "unbound-control flush {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        resolve(self.addr, name, RecordType::A, REQUEST_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{name} through unbound: {e}"))
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// unbound.conf for the test (`modules` as module-config, `extra` server lines): foreground, no chroot or user switch, everything in `dir`, a
/// remote-control port without certificates (for `flush`), no DNSSEC validation, no prefetch
/// or serving of expired answers, no TTL floor, and the zone stubbed to weir.
fn unbound_config(
    dir: &Path,
    port: u16,
    control_port: u16,
    zone: &str,
    weir: SocketAddr,
    modules: &str,
    extra: &str,
) -> String {
    let dir = dir.display();
    format!(
        r#"server:
    interface: 127.0.0.1@{port}
    port: {port}
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    logfile: ""
    use-syslog: no
    verbosity: 1
    num-threads: 1
    so-reuseport: no
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "{modules}"
{extra}    prefetch: no
    serve-expired: no
    cache-min-ttl: 0
    qname-minimisation: no
remote-control:
    control-enable: yes
    control-interface: 127.0.0.1
    control-port: {control_port}
    control-use-cert: no
stub-zone:
    name: "{zone}"
    stub-addr: {ip}@{weir_port}
"#,
        ip = weir.ip(),
        weir_port = weir.port(),
    )
}

/// One UDP query (RD set) to `server`: the addresses of the answer's `rtype` records (for SOA,
/// the zone's own address stands in, only to say "answered"). Err on timeout or a non-NOERROR
/// rcode.
async fn resolve(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Vec<IpAddr>, String> {
    let exchange = async {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let mut msg = query(name, rtype);
        msg.metadata.recursion_desired = true;
        msg.metadata.id = fastrand::u16(..);
        socket
            .send_to(&msg.to_vec().unwrap(), server)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
            let Ok(reply) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if reply.metadata.id != msg.metadata.id {
                continue;
            }
            if reply.metadata.response_code != ResponseCode::NoError {
                return Err(format!("rcode {}", reply.metadata.response_code));
            }
            return Ok(reply
                .answers
                .iter()
                .filter(|r| r.record_type() == rtype)
                .map(|r| {
                    r.data
                        .to_string()
                        .parse()
                        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
                })
                .collect());
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

// ---------------------------------------------------------------------------------------------
// weir, the backends, the client

/// A real `weir serve` process serving example.com. with `pools`, its admin API on loopback.
struct Weir {
    process: WeirProcess,
    _dir: tempfile::TempDir,
}

impl Weir {
    async fn start(pools: String) -> Weir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("example.com.zone"), ZONE).unwrap();
        let config = dir.path().join("weir.toml");
        std::fs::write(
            &config,
            format!(
                "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n[[zone]]\norigin = \"example.com.\"\nfile = \"example.com.zone\"\n{pools}"
            ),
        )
        .unwrap();
        let process = tokio::task::spawn_blocking(move || WeirProcess::start(&config, &[]))
            .await
            .unwrap()
            .unwrap_or_else(|log| panic!("weir did not start:\n{log}"));
        Weir { process, _dir: dir }
    }

    fn admin(&self) -> SocketAddr {
        self.process.admin.unwrap()
    }

    async fn status(&self) -> Value {
        let path = format!("/v1/pools/{POOL}/rollout");
        match http_maybe(self.admin(), Method::GET, &path, None).await {
            Some((200, body)) => body,
            other => panic!("GET {path}: {other:?}"),
        }
    }

    /// POSTs `/v1/pools/{POOL}/{what}`; returns (sent, acknowledged) in Unix ms.
    async fn post(&self, what: &str) -> (u64, u64) {
        let path = format!("/v1/pools/{POOL}/{what}");
        let sent = unix_ms();
        let reply = http_maybe(self.admin(), Method::POST, &path, None).await;
        let acked = unix_ms();
        assert!(matches!(reply, Some((200, _))), "POST {path}: {reply:?}");
        (sent, acked)
    }

    /// Polls the rollout status every `POLL` until `f` says yes; returns its value and when
    /// (Unix ms) the test saw it.
    async fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        f: impl Fn(&Value) -> Option<T>,
    ) -> (T, u64) {
        let deadline = unix_ms() + limit.as_millis() as u64;
        loop {
            let st = self.status().await;
            if let Some(value) = f(&st) {
                return (value, unix_ms());
            }
            assert!(
                unix_ms() < deadline,
                "weir's rollout status never said {what} within {limit:?}: {st}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// weir's own answer for `name` (bypassing unbound), 20 times over: every address seen.
    async fn answers(&self, name: &str) -> Vec<IpAddr> {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let reply = resolve(self.process.dns, name, RecordType::A, REQUEST_TIMEOUT)
                .await
                .unwrap_or_else(|e| panic!("{name} from weir: {e}"));
            seen.extend(reply);
        }
        seen.sort();
        seen.dedup();
        seen
    }
}

/// HTTP backends answering their version, all on one port (picked free on the first address)
/// at distinct 127.0.1.x addresses.
struct Backends {
    port: u16,
    all: Vec<(IpAddr, Backend)>,
}

impl Backends {
    async fn start(versions: &[(&str, &str)]) -> Backends {
        let mut all = Vec::new();
        let mut port = 0;
        for (address, version) in versions {
            let ip: IpAddr = address.parse().unwrap();
            let backend = Backend::http_at(SocketAddr::new(ip, port), version).await;
            port = backend.addr().port();
            all.push((ip, backend));
        }
        Backends { port, all }
    }

    fn get(&mut self, ip: IpAddr) -> &mut Backend {
        &mut self.all.iter_mut().find(|(a, _)| *a == ip).unwrap().1
    }

    /// `check` for the pool: HTTP on the backends' port, twice a second, down after two
    /// failures, up after two successes.
    fn check(&self) -> String {
        format!(
            "[pool.check]\nkind = \"http\"\nport = {}\npath = \"/\"\ninterval = \"500ms\"\ntimeout = \"300ms\"\nrise = 2\nfall = 2\n",
            self.port
        )
    }
}

/// One client request: when it started (Unix ms), the address it fetched, and the version it
/// got or why it failed.
#[derive(Clone, Debug)]
struct Sample {
    at: u64,
    addr: Option<IpAddr>,
    outcome: Result<String, String>,
}

/// Every `CLIENT_PERIOD`, resolves `POOL` through the resolver, fetches one of the answered
/// addresses (in turn, so every address of a multi-address answer gets used) and records what
/// happened. Each request runs as its own task so a slow one does not lower the rate.
struct Client {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Client {
    fn start(resolver: SocketAddr, port: u16) -> Client {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let samples = Arc::clone(&samples);
            let stop = stop.clone();
            async move {
                let mut ticks = tokio::time::interval(CLIENT_PERIOD);
                let mut requests = JoinSet::new();
                for n in 0usize.. {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = ticks.tick() => {}
                    }
                    let samples = Arc::clone(&samples);
                    requests.spawn(async move {
                        let sample = request(resolver, port, n).await;
                        samples.lock().unwrap().push(sample);
                    });
                    while requests.try_join_next().is_some() {}
                }
                while requests.join_next().await.is_some() {}
            }
        });
        Client {
            samples,
            stop,
            task: Some(task),
        }
    }

    fn samples(&self) -> Vec<Sample> {
        let mut samples = self.samples.lock().unwrap().clone();
        samples.sort_by_key(|s| s.at);
        samples
    }

    /// Stops sending, lets the requests in flight finish, returns every sample in time order.
    async fn stop(mut self) -> Vec<Sample> {
        self.stop.cancel();
        self.task.take().unwrap().await.unwrap();
        self.samples()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn request(resolver: SocketAddr, port: u16, n: usize) -> Sample {
    let at = unix_ms();
    let addrs = match resolve(resolver, POOL, RecordType::A, REQUEST_TIMEOUT).await {
        Ok(addrs) if !addrs.is_empty() => addrs,
        Ok(_) => {
            return Sample {
                at,
                addr: None,
                outcome: Err("resolution: no address".into()),
            };
        }
        Err(e) => {
            return Sample {
                at,
                addr: None,
                outcome: Err(format!("resolution: {e}")),
            };
        }
    };
    let addr = addrs[n % addrs.len()];
    let outcome = tokio::time::timeout(REQUEST_TIMEOUT, fetch(SocketAddr::new(addr, port)))
        .await
        .unwrap_or_else(|_| Err(format!("HTTP: no answer within {REQUEST_TIMEOUT:?}")));
    Sample {
        at,
        addr: Some(addr),
        outcome,
    }
}

/// GET / and the body of a 200; anything else is a failure.
async fn fetch(addr: SocketAddr) -> Result<String, String> {
    match send(http_request(addr, Method::GET, "/", &[], None)).await {
        Ok((200, body)) => Ok(body),
        Ok((status, _)) => Err(format!("HTTP {status}")),
        Err(e) => {
            // reqwest's own message repeats the URL; the cause is at the bottom of the chain.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            Err(format!("HTTP: {cause}"))
        }
    }
}

/// Keeps the client running until `until` (Unix ms), a poll at a time.
async fn run_until(until: u64) {
    while unix_ms() < until {
        tokio::time::sleep(POLL.min(Duration::from_millis(until.saturating_sub(unix_ms())))).await;
    }
}

/// The failed samples, one line each, times relative to `t0`.
fn failures(samples: &[Sample], t0: u64) -> Vec<String> {
    samples
        .iter()
        .filter(|s| s.outcome.is_err())
        .map(|s| describe(s, t0))
        .collect()
}

fn describe(s: &Sample, t0: u64) -> String {
    format!(
        "{:+}ms {} {:?}",
        s.at as i64 - t0 as i64,
        s.addr.map_or("-".into(), |a| a.to_string()),
        s.outcome
    )
}

/// The problems of a run: failed requests, and a client slower than 20 requests a second
/// (allowing for a loaded machine: 18).
fn check_client(samples: &[Sample], t0: u64, problems: &mut Vec<String>) {
    let failed = failures(samples, t0);
    if !failed.is_empty() {
        problems.push(format!(
            "{} of {} requests failed:\n  {}",
            failed.len(),
            samples.len(),
            failed.join("\n  ")
        ));
    }
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        let seconds = (last.at - first.at) as f64 / 1000.0;
        let rate = samples.len() as f64 / seconds.max(0.001);
        if rate < 18.0 {
            problems.push(format!("the client made {rate:.1} requests/s, not 20"));
        }
    }
}

fn finish(name: &str, timeline: &[String], problems: &[String]) {
    let report = format!("{name}:\n  {}", timeline.join("\n  "));
    println!("{report}");
    assert!(
        problems.is_empty(),
        "{report}\nproblems:\n- {}",
        problems.join("\n- ")
    );
}

// ---------------------------------------------------------------------------------------------
// The scenarios

const BLUE: &str = "127.0.1.1";
const GREEN: &str = "127.0.1.2";

/// Blue-green: the preview name answers green only; promote; once weir says blue is safe to
/// remove, kill blue. Not one request fails, the instant weir gave honours the contract, and
/// after the kill the client only ever gets green.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_behind_unbound_loses_no_request() {
    let mut backends = Backends::start(&[(BLUE, "blue"), (GREEN, "green")]).await;
    let weir = Weir::start(format!(
        "[[pool]]\nname = \"{POOL}\"\nttl = 2\n{}[pool.rollout]\nkind = \"blue-green\"\nfrom = \"blue\"\nto = \"green\"\npreview_name = \"preview.{POOL}\"\nslack = \"1s\"\n[[pool.group]]\nname = \"blue\"\nendpoints = [{{ address = \"{BLUE}\" }}]\n[[pool.group]]\nname = \"green\"\nweight = 0\nendpoints = [{{ address = \"{GREEN}\" }}]\n",
        backends.check()
    ))
    .await;
    let unbound = Unbound::start("example.com.", weir.process.dns).await;
    let (blue, green): (IpAddr, IpAddr) = (BLUE.parse().unwrap(), GREEN.parse().unwrap());
    let t0 = unix_ms();
    let client = Client::start(unbound.addr, backends.port);
    let mut timeline = Vec::new();
    let mut problems = Vec::new();

    let preview = format!("preview.{POOL}");
    assert_eq!(
        unbound.refetch(&preview).await,
        [green],
        "preview through unbound"
    );
    assert_eq!(weir.answers(&preview).await, [green], "preview from weir");
    assert_eq!(weir.answers(POOL).await, [blue]);

    weir.post("rollouts").await;
    weir.wait_for("waiting for promote", Duration::from_secs(20), |st| {
        (state(st) == "waiting for promote").then_some(())
    })
    .await;
    assert_eq!(
        unbound.refetch_worst(POOL).await,
        [blue],
        "the worst case: a fresh blue answer"
    );
    let (sent, acked) = weir.post("rollout/promote").await;
    timeline.push(format!(
        "promote sent {:+}ms, acknowledged {:+}ms",
        sent - t0,
        acked - t0
    ));
    assert_eq!(weir.answers(POOL).await, [green]);
    let (safe_at, seen) = weir
        .wait_for(
            "blue is safe to remove",
            Duration::from_secs(20),
            safe_to_remove,
        )
        .await;
    backends.get(blue).stop().await;
    let killed = unix_ms();
    timeline.push(format!(
        "safe to remove at {:+}ms (weir's instant), seen {:+}ms; blue killed {:+}ms",
        safe_at as i64 - t0 as i64,
        seen - t0,
        killed - t0
    ));
    run_until(killed + SETTLE_MS + 2_000).await;
    let samples = client.stop().await;
    timeline.push(format!("{} requests", samples.len()));

    check_client(&samples, t0, &mut problems);
    // The contract counts from when the change was served, which is between the promote's
    // sending and its acknowledgement: the instant can be no earlier than sent + settle.
    let contract = sent + SETTLE_MS;
    if safe_at < contract {
        problems.push(format!(
            "weir said blue is safe to remove at {:+}ms, before the contract's promote + TTL 2s + 1s + slack 1s = {:+}ms ({} ms early; {} ms early counted from the acknowledgement)",
            safe_at as i64 - t0 as i64,
            contract - t0,
            contract - safe_at,
            (acked + SETTLE_MS) as i64 - safe_at as i64
        ));
    }
    if seen < safe_at {
        problems.push(format!(
            "weir's status said safe to remove at {:+}ms, before its own instant {:+}ms",
            seen - t0,
            safe_at - t0
        ));
    }
    let not_green: Vec<String> = samples
        .iter()
        .filter(|s| s.at >= killed && s.outcome.as_deref() != Ok("green"))
        .map(|s| describe(s, t0))
        .collect();
    if !not_green.is_empty() {
        problems.push(format!(
            "after blue was killed, {} requests did not get green:\n  {}",
            not_green.len(),
            not_green.join("\n  ")
        ));
    }
    finish("blue-green", &timeline, &problems);
}

/// Rolling, 4 endpoints in batches of 2: at "safe to upgrade" the batch's backends stop, the
/// operator promotes before they listen again, and they come back as v2 2 s later. Not one
/// request fails, and at the end every answer is v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_behind_unbound_loses_no_request() {
    let web = ["127.0.1.11", "127.0.1.12", "127.0.1.13", "127.0.1.14"];
    let mut backends = Backends::start(&web.map(|a| (a, "v1"))).await;
    let endpoints = web
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect::<Vec<_>>()
        .join(", ");
    let weir = Weir::start(format!(
        "[[pool]]\nname = \"{POOL}\"\nttl = 2\nanswers = 4\n{}[pool.rollout]\nkind = \"rolling\"\ngroup = \"web\"\nbatch = 2\nmax_unavailable = \"50%\"\nslack = \"1s\"\n[[pool.group]]\nname = \"web\"\nendpoints = [{endpoints}]\n",
        backends.check()
    ))
    .await;
    let unbound = Unbound::start("example.com.", weir.process.dns).await;
    let t0 = unix_ms();
    let client = Client::start(unbound.addr, backends.port);
    let mut timeline = Vec::new();
    let mut problems = Vec::new();

    unbound.refetch_worst(POOL).await;
    let (sent, _) = weir.post("rollouts").await;
    timeline.push(format!("rollout started {:+}ms", sent - t0));
    let mut upgraded = Vec::new();
    for round in 0..2 {
        let ((batch, safe_at), seen) = weir
            .wait_for(
                "the batch is safe to upgrade",
                Duration::from_secs(20),
                safe_to_upgrade,
            )
            .await;
        timeline.push(format!(
            "batch {round} {batch:?}: safe to upgrade at {:+}ms (weir's instant), seen {:+}ms",
            safe_at as i64 - t0 as i64,
            seen - t0
        ));
        if seen < safe_at {
            problems.push(format!(
                "batch {round}: status said safe to upgrade before its own instant"
            ));
        }
        // The first batch was drained by the start: the contract bounds its instant.
        if round == 0 && safe_at < sent + SETTLE_MS {
            problems.push(format!(
                "batch 0: safe to upgrade at {:+}ms, before the contract's start + TTL 2s + 1s + slack 1s = {:+}ms",
                safe_at as i64 - t0 as i64,
                sent + SETTLE_MS - t0
            ));
        }
        for ip in &batch {
            let backend = backends.get(*ip);
            backend.stop().await;
            backend.respond(200, "v2");
        }
        timeline.push(format!("batch {round} stopped {:+}ms", unix_ms() - t0));
        unbound.refetch_worst(POOL).await;
        let (_, acked) = weir.post("rollout/promote").await;
        timeline.push(format!("batch {round} promoted {:+}ms", acked - t0));
        // Promoted before the upgraded backends listen: they come back 2 s later. Meanwhile,
        // watch for the change that serves the batch again.
        let restart_at = acked + 2_000;
        let (mut listening, mut back) = (None, None);
        while listening.is_none() || back.is_none() {
            if listening.is_none() && unix_ms() >= restart_at {
                for ip in &batch {
                    backends.get(*ip).start().await;
                }
                let at = unix_ms();
                listening = Some(at);
                timeline.push(format!("batch {round} listening as v2 {:+}ms", at - t0));
                // With fresh health, the change that serves this batch again (and drains the
                // next) comes once its probes pass: the worst case for the next batch is an
                // answer fetched just before that.
                if round == 0 && back.is_none() {
                    unbound.refetch_worst(POOL).await;
                }
            }
            if back.is_none() {
                let st = weir.status().await;
                if rolling_batch(&st).is_some_and(|b| b > round) {
                    let at = unix_ms();
                    back = Some(at);
                    timeline.push(format!("batch {round} served again, seen {:+}ms", at - t0));
                    // The worst case for an undrain: a resolver fetches the answer right after
                    // it and hands it out for TTL + 1 s, whatever it names.
                    if round == 1 {
                        unbound.refetch(POOL).await;
                    }
                }
            }
            assert!(
                unix_ms() < acked + 20_000,
                "batch {round} never came back: {}",
                weir.status().await
            );
            tokio::time::sleep(POLL).await;
        }
        if let (Some(listening), Some(back)) = (listening, back)
            && back < listening
        {
            problems.push(format!(
                "batch {round} was served again (seen {:+}ms) before its backends listened ({:+}ms)",
                back - t0,
                listening - t0
            ));
        }
        upgraded.extend(batch);
    }
    let ((), done) = weir
        .wait_for("done", Duration::from_secs(20), |st| {
            (state(st) == "done").then_some(())
        })
        .await;
    timeline.push(format!("done, seen {:+}ms", done - t0));
    run_until(done + SETTLE_MS + 2_000).await;
    let samples = client.stop().await;
    timeline.push(format!("{} requests", samples.len()));

    check_client(&samples, t0, &mut problems);
    upgraded.sort();
    let all: Vec<IpAddr> = web.iter().map(|a| a.parse().unwrap()).collect();
    if upgraded != all {
        problems.push(format!("upgraded {upgraded:?}, not every endpoint"));
    }
    let answers = weir.answers(POOL).await;
    if answers != all {
        problems.push(format!("at the end weir answers {answers:?}"));
    }
    for ip in answers {
        let version = fetch(SocketAddr::new(ip, backends.port)).await;
        if version.as_deref() != Ok("v2") {
            problems.push(format!("at the end {ip} answers {version:?}"));
        }
    }
    let late: Vec<String> = samples
        .iter()
        .filter(|s| s.at >= done + SETTLE_MS && s.outcome.as_deref() != Ok("v2"))
        .map(|s| describe(s, t0))
        .collect();
    if !late.is_empty() {
        problems.push(format!(
            "after the rollout was done and settled, {} requests did not get v2:\n  {}",
            late.len(),
            late.join("\n  ")
        ));
    }
    finish("rolling", &timeline, &problems);
}

const STABLE: &str = "127.0.1.21";
const CANARY: &str = "127.0.1.22";

/// Canary whose new group starts failing its health checks while it takes half the traffic: the
/// rollout aborts with the health cause, and within the settle time of the abort the client
/// only gets the old version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_behind_unbound_aborts_and_clients_return_within_settle_time() {
    let mut backends = Backends::start(&[(STABLE, "v1"), (CANARY, "v2")]).await;
    let weir = Weir::start(format!(
        "[[pool]]\nname = \"{POOL}\"\nttl = 2\n{}[pool.rollout]\nfrom = \"blue\"\nto = \"green\"\nsteps = [{{ set_weight = 50 }}, {{ pause = \"manual\" }}, {{ set_weight = 100 }}]\nslack = \"1s\"\n[[pool.group]]\nname = \"blue\"\nendpoints = [{{ address = \"{STABLE}\" }}]\n[[pool.group]]\nname = \"green\"\nweight = 0\nendpoints = [{{ address = \"{CANARY}\" }}]\n",
        backends.check()
    ))
    .await;
    let unbound = Unbound::start("example.com.", weir.process.dns).await;
    let canary: IpAddr = CANARY.parse().unwrap();
    let t0 = unix_ms();
    let client = Client::start(unbound.addr, backends.port);
    let mut timeline = Vec::new();
    let mut problems = Vec::new();

    unbound.refetch_worst(POOL).await;
    weir.post("rollouts").await;
    let (_, at_50) = weir
        .wait_for("weight 50", Duration::from_secs(20), |st| {
            (weight(st) == Some(50)).then_some(())
        })
        .await;
    timeline.push(format!("green at 50%, seen {:+}ms", at_50 - t0));
    // Green takes traffic through the resolver: the client has fetched v2.
    let deadline = unix_ms() + 20_000;
    while !client
        .samples()
        .iter()
        .any(|s| s.at >= at_50 && s.outcome.as_deref() == Ok("v2"))
    {
        assert!(unix_ms() < deadline, "the client never got v2 at 50%");
        tokio::time::sleep(POLL).await;
    }
    backends.get(canary).respond(500, "v2 failing");
    let failing = unix_ms();
    timeline.push(format!("green answers 500 from {:+}ms", failing - t0));
    // The worst case for the abort: until weir aborts, keep unbound holding a green answer
    // fetched a moment ago, so the last one before the abort lives on for TTL + 1 s after it.
    let mut last_green = None;
    let deadline = unix_ms() + 20_000;
    let ((cause, abort_at), seen) = loop {
        let st = weir.status().await;
        if let Some(abort) = aborted(&st) {
            break (abort, unix_ms());
        }
        assert!(unix_ms() < deadline, "the rollout never aborted: {st}");
        for _ in 0..10 {
            if unbound.refetch(POOL).await == [canary] {
                last_green = Some(unix_ms());
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    };
    if let Some(at) = last_green {
        timeline.push(format!(
            "unbound's last green answer before the abort fetched {:+}ms",
            at - t0
        ));
    }
    if abort_at < failing {
        problems.push(format!(
            "weir's abort instant {:+}ms is before green started failing ({:+}ms)",
            abort_at as i64 - t0 as i64,
            failing - t0
        ));
    }
    let settled = abort_at + SETTLE_MS;
    timeline.push(format!(
        "aborted ({cause}) at {:+}ms (weir's instant), seen {:+}ms; settled by {:+}ms",
        abort_at as i64 - t0 as i64,
        seen - t0,
        settled as i64 - t0 as i64
    ));
    run_until(settled.max(seen) + 3_000).await;
    let samples = client.stop().await;
    timeline.push(format!("{} requests", samples.len()));

    if cause != "health" {
        problems.push(format!("abort cause {cause:?}, not \"health\""));
    }
    let before: Vec<String> = samples
        .iter()
        .filter(|s| s.at < settled && s.outcome.is_err())
        .map(|s| describe(s, t0))
        .collect();
    timeline.push(format!(
        "{} requests failed before the abort settled (green failing: expected)",
        before.len()
    ));
    let late: Vec<String> = samples
        .iter()
        .filter(|s| s.at >= settled && s.outcome.as_deref() != Ok("v1"))
        .map(|s| describe(s, t0))
        .collect();
    if !late.is_empty() {
        problems.push(format!(
            "after the abort + TTL 2s + 1s + slack 1s, {} requests did not get v1:\n  {}",
            late.len(),
            late.join("\n  ")
        ));
    }
    let seconds = (samples.last().unwrap().at - samples[0].at) as f64 / 1000.0;
    if (samples.len() as f64) < 18.0 * seconds {
        problems.push(format!(
            "the client made {:.1} requests/s, not 20",
            samples.len() as f64 / seconds
        ));
    }
    finish("canary abort", &timeline, &problems);
}

/// One query (RD set) to `server` carrying an ECS option for `subnet` (`198.51.100.0/24`), as
/// a client of a resolver would send it: the addresses answered.
async fn resolve_for(server: SocketAddr, name: &str, subnet: &str) -> Vec<IpAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut msg = crate::support::with_ecs(query(name, RecordType::A), subnet);
    msg.metadata.recursion_desired = true;
    msg.metadata.id = fastrand::u16(..);
    socket
        .send_to(&msg.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(REQUEST_TIMEOUT, socket.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{name} for {subnet}: no answer"))
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NoError,
        "{name} for {subnet}"
    );
    reply
        .answers
        .iter()
        .filter_map(|r| r.data.ip_addr())
        .collect()
}

/// The queries weir's route counted so far, per rule (1 = eu, 2 = us).
async fn route_queries(weir: &Weir) -> [u64; 2] {
    let (_, text) = crate::support::http_get(weir.admin(), "/metrics").await;
    let count = |rule: &str, pool: &str| {
        let prefix = format!(
            "weir_route_queries_total{{name=\"www.example.com.\",pool=\"{pool}@www.example.com.\",rule=\"{rule}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0, |n| n.parse().unwrap())
    };
    [count("1", "eu"), count("2", "us")]
}

/// Behind unbound with its subnetcache module: clients of different subnets get their region's
/// pool, and unbound caches each answer for exactly the scope weir returned: a client inside
/// that scope is served from the cache, and a client outside it is not given another region's
/// answer.
#[tokio::test]
async fn routing_behind_unbound_follows_the_ecs_scope() {
    let weir = Weir::start(
        r#"[[route]]
name = "www.example.com."
[[route.rule]]
pool = "eu"
subnets = ["198.51.100.0/24"]
[[route.rule]]
pool = "us"
[[route.pool]]
name = "eu"
ttl = 300
[[route.pool.group]]
name = "main"
endpoints = [{ address = "192.0.2.10" }]
[[route.pool]]
name = "us"
ttl = 300
[[route.pool.group]]
name = "main"
endpoints = [{ address = "192.0.2.20" }]
"#
        .to_string(),
    )
    .await;
    let unbound = Unbound::start_subnetcache("example.com.", weir.process.dns).await;
    let (eu, us) = (IpAddr::from([192, 0, 2, 10]), IpAddr::from([192, 0, 2, 20]));
    let name = "www.example.com.";
    assert_eq!(
        resolve_for(unbound.addr, name, "198.51.100.0/24").await,
        [eu],
        "{}",
        unbound.log()
    );
    assert_eq!(
        route_queries(&weir).await,
        [1, 0],
        "weir saw the eu client's subnet"
    );
    // Cached for the /24 weir scoped it to.
    assert_eq!(
        resolve_for(unbound.addr, name, "198.51.100.0/24").await,
        [eu]
    );
    assert_eq!(
        route_queries(&weir).await,
        [1, 0],
        "served from unbound's cache"
    );
    // Another region: weir is asked, and answers us with the scope of the whole block around
    // 203.0.113.0 that holds no rule's subnet (200.0.0.0/5).
    assert_eq!(
        resolve_for(unbound.addr, name, "203.0.113.0/24").await,
        [us]
    );
    assert_eq!(route_queries(&weir).await, [1, 1]);
    // A client elsewhere in that /5 gets the cached us answer without a query to weir...
    assert_eq!(resolve_for(unbound.addr, name, "204.1.2.0/24").await, [us]);
    assert_eq!(
        route_queries(&weir).await,
        [1, 1],
        "inside the scope: from the cache"
    );
    // ...and one outside it is asked for, never handed another region's answer.
    assert_eq!(resolve_for(unbound.addr, name, "100.64.0.0/24").await, [us]);
    assert_eq!(
        route_queries(&weir).await,
        [1, 2],
        "outside the scope: asked again"
    );
    assert_eq!(
        resolve_for(unbound.addr, name, "198.51.100.0/24").await,
        [eu]
    );
    drop(unbound);
}
