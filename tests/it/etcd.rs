//! Several nameservers, one truth: real etcd 3-member clusters on loopback ports (Debian's etcd,
//! started and stopped by each test) and real `weir serve` processes built with `--features
//! etcd`. Members are stopped with SIGKILL/SIGSTOP as a crash or a partition would; weir nodes
//! with SIGSTOP/SIGCONT and restarts. Every test has its own cluster, ports and key prefix.
//!
//! Needs `etcd` and `etcdctl` on PATH (`.ci/test` installs Debian's etcd-server and
//! etcd-client); a missing binary fails the test with that hint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use tokio::net::UdpSocket;

use crate::support::{Method, WeirProcess, http, http_maybe, log_fields, query};

const ZONE: &str =
    "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n";
/// Two endpoints, both in every answer: forcing 192.0.2.10 down shows as a one-address answer.
const POOL: &str = "[[pool]]\nname = \"app.example.com.\"\nttl = 5\nanswers = 2\n[[pool.group]]\nname = \"blue\"\nweight = 1\nendpoints = [{ address = \"192.0.2.10\" }, { address = \"192.0.2.11\" }]\n";
const PATH_OVERRIDE: &str = "/v1/pools/app.example.com./endpoints/192.0.2.10/override";
const PATH_WEIGHT: &str = "/v1/pools/app.example.com./endpoints/192.0.2.11/weight";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tool(name: &str) -> &str {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{name}` is not installed: apt-get install etcd-server etcd-client (.ci/test does)"
    );
    name
}

/// One etcd member: its ports, data folder and process.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A 3-member etcd cluster on 127.0.0.1.
struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    /// Clients must use TLS and a client certificate (`start_tls`).
    tls: bool,
    /// One cluster at a time: several 3-member clusters and their weir nodes on CI's two
    /// cores would make etcd's deadlines, not weir, decide the outcome.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Etcd {
    fn start() -> Etcd {
        Etcd::launch(false)
    }

    /// Client URLs over TLS: the members present `server.pem` (self-signed for 127.0.0.1) and
    /// accept only clients presenting `client.pem`; both files are in `dir`.
    fn start_tls() -> Etcd {
        Etcd::launch(true)
    }

    fn launch(tls: bool) -> Etcd {
        let guard = ONE_CLUSTER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tool("etcd");
        tool("etcdctl");
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (1..=3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        if tls {
            for (name, san) in [("server", "127.0.0.1"), ("client", "weir")] {
                let cert = rcgen::generate_simple_self_signed(vec![san.to_string()]).unwrap();
                std::fs::write(dir.path().join(format!("{name}.pem")), cert.cert.pem()).unwrap();
                let key = dir.path().join(format!("{name}.key"));
                std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
            }
        }
        let mut etcd = Etcd {
            dir,
            members,
            tls,
            _one_at_a_time: guard,
        };
        for i in 0..3 {
            etcd.spawn(i, "new");
        }
        etcd.wait_healthy(Duration::from_secs(20));
        etcd
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let m = &self.members[i];
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name))).unwrap();
        let scheme = self.scheme();
        let mut tls = Vec::new();
        if self.tls {
            let file = |name: &str| self.dir.path().join(name).display().to_string();
            tls = vec![
                "--cert-file".to_string(),
                file("server.pem"),
                "--key-file".into(),
                file("server.key"),
                "--trusted-ca-file".into(),
                file("client.pem"),
                "--client-cert-auth".into(),
            ];
        }
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(&m.name))
            .args([
                "--listen-client-urls",
                &format!("{scheme}://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("{scheme}://127.0.0.1:{}", m.client),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-cluster",
                &cluster.join(","),
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                "weir-test",
                // Fast elections, so a killed leader is replaced within about a second.
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .args(&tls)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.members[i].child = Some(child);
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client))
            .collect()
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let mut tls = Vec::new();
        if self.tls {
            tls = vec![
                format!("--cacert={}", self.file("server.pem")),
                format!("--cert={}", self.file("client.pem")),
                format!("--key={}", self.file("client.key")),
            ];
        }
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(&tls)
            .args([
                "--endpoints",
                &self.endpoints().join(","),
                "--command-timeout=3s",
            ])
            .args(args)
            .output()
            .unwrap()
    }

    fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self
                .etcdctl(&["put", "/health-check", "ok"])
                .status
                .success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the current leader.
    fn leader(&self) -> usize {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        status
            .as_array()
            .unwrap()
            .iter()
            .find_map(|s| {
                let me = &s["Status"]["header"]["member_id"];
                let leader = &s["Status"]["leader"];
                (me == leader).then(|| {
                    let endpoint = s["Endpoint"].as_str().unwrap();
                    self.endpoints().iter().position(|e| e == endpoint).unwrap()
                })
            })
            .expect("a leader")
    }

    fn signal(&self, i: usize, signal: i32) {
        let pid = self.members[i].child.as_ref().unwrap().id() as i32;
        unsafe { libc::kill(pid, signal) };
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Compacts the history up to the current revision.
    fn compact(&self) {
        let out = self.etcdctl(&["get", "/health-check", "-w", "json"]);
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        let revision = got["header"]["revision"].as_u64().unwrap();
        let out = self.etcdctl(&["compact", &revision.to_string()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.signal_if_running(i, libc::SIGCONT);
            self.kill(i);
        }
    }
}

impl Etcd {
    fn signal_if_running(&self, i: usize, signal: i32) {
        if self.members[i].child.is_some() {
            self.signal(i, signal);
        }
    }
}

/// A weir node's folder: config, zone and its local cache.
fn node_dir(root: &Path, id: &str, etcd: &Etcd, prefix: &str, extra: &str, pool: &str) -> PathBuf {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("example.com.zone"), ZONE).unwrap();
    let endpoints: Vec<String> = etcd
        .endpoints()
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect();
    let config = format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\
         [store]\nbackend = \"etcd\"\npath = \"state\"\n[store.etcd]\nendpoints = [{}]\nprefix = \"{prefix}\"\nnode_id = \"{id}\"\nlease_ttl = \"2s\"\ntimeout = \"2s\"\n{extra}\n\
         [[zone]]\norigin = \"example.com.\"\nfile = \"example.com.zone\"\n{pool}",
        endpoints.join(", ")
    );
    std::fs::write(dir.join("weir.toml"), config).unwrap();
    dir
}

fn start(dir: &Path) -> WeirProcess {
    WeirProcess::start(&dir.join("weir.toml"), &[]).unwrap_or_else(|log| panic!("{log}"))
}

async fn put(addr: SocketAddr, path: &str, body: Value) -> Option<(u16, Value)> {
    http_maybe(addr, Method::PUT, path, Some(body)).await
}

async fn get(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http_maybe(addr, Method::GET, path, None)
        .await
        .expect("an answer");
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The sorted A answers of app.example.com from `dns` over UDP (None: no answer in 1 s).
async fn answer(dns: SocketAddr) -> Option<Vec<String>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let q = query("app.example.com.", RecordType::A).to_vec().unwrap();
    socket.send_to(&q, dns).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    let reply = Message::from_vec(&buf[..n]).ok()?;
    if reply.metadata.response_code != ResponseCode::NoError {
        return None;
    }
    let mut seen: Vec<String> = reply.answers.iter().map(|a| a.data.to_string()).collect();
    seen.sort();
    Some(seen)
}

fn both() -> Vec<String> {
    vec!["192.0.2.10".into(), "192.0.2.11".into()]
}

fn only_11() -> Vec<String> {
    vec!["192.0.2.11".into()]
}

/// Polls `check` every 10 ms until it holds; panics with `what` after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `admin`'s node lists two live nodes (both have joined).
async fn both_listed(admin: SocketAddr) {
    eventually(Duration::from_secs(10), "both nodes listed", || async {
        get(admin, "/v1/nodes").await["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["generation"].is_u64())
            .count()
            == 2
    })
    .await;
}

async fn generation(admin: SocketAddr) -> u64 {
    get(admin, "/v1/pools/app.example.com.").await["generation"]
        .as_u64()
        .unwrap()
}

/// 100 changes on node 1, each answered by node 2 over DNS: p99 under 500 ms, and INSYNC is
/// never reported before node 2 answers the new way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_is_answered_by_the_other() {
    let etcd = Etcd::start();
    let root = tempfile::tempdir().unwrap();
    let n1 = start(&node_dir(root.path(), "ns1", &etcd, "/t1/", "", POOL));
    let n2 = start(&node_dir(root.path(), "ns2", &etcd, "/t1/", "", POOL));
    let (a1, dns2) = (n1.admin.unwrap(), n2.dns);
    // Both nodes have joined before the first change counts.
    both_listed(a1).await;

    let mut latencies = Vec::new();
    for i in 0..100 {
        let (health, expect) = if i % 2 == 0 {
            ("down", only_11())
        } else {
            ("auto", both())
        };
        let sent = Instant::now();
        let (status, body) = put(a1, PATH_OVERRIDE, json!({ "health": health }))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let g = body["generation"].as_u64().unwrap();
        if i % 2 == 0 {
            // Latency: until node 2 answers the new way.
            eventually(
                Duration::from_secs(5),
                "node 2 answers the change",
                || async { answer(dns2).await.as_ref() == Some(&expect) },
            )
            .await;
            latencies.push(sent.elapsed());
        }
        // Change status: once INSYNC, node 2 must already answer the new way.
        eventually(Duration::from_secs(5), "INSYNC", || async {
            let status = get(a1, &format!("/v1/changes/{g}")).await;
            if status["status"] == "INSYNC" {
                assert_eq!(
                    answer(dns2).await,
                    Some(expect.clone()),
                    "INSYNC for generation {g} but node 2 still answers the old way"
                );
                true
            } else {
                assert_eq!(status["status"], "PENDING", "{status}");
                false
            }
        })
        .await;
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "node 1 write -> node 2 answers: p50 {p50:?}, p99 {p99:?}, max {:?}",
        latencies.last().unwrap()
    );
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
}

/// SIGKILL the etcd leader in the middle of a stream of writes: every acknowledged write is
/// in the audit log with its value, writes resume, and both nodes end on the same generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_etcd_leader_loses_no_acknowledged_write() {
    let mut etcd = Etcd::start();
    let root = tempfile::tempdir().unwrap();
    let n1 = start(&node_dir(root.path(), "ns1", &etcd, "/t2/", "", POOL));
    let n2 = start(&node_dir(root.path(), "ns2", &etcd, "/t2/", "", POOL));
    let (a1, a2) = (n1.admin.unwrap(), n2.admin.unwrap());

    let mut acked: Vec<(u64, u64)> = Vec::new(); // (generation, weight)
    let mut refused = 0;
    let mut after_kill = 0;
    let mut killed = false;
    for weight in 1..=200u64 {
        if weight == 60 {
            let leader = etcd.leader();
            etcd.kill(leader);
            killed = true;
        }
        match put(a1, PATH_WEIGHT, json!({ "weight": weight })).await {
            Some((200, body)) => {
                acked.push((body["generation"].as_u64().unwrap(), weight));
                if killed {
                    after_kill += 1;
                }
            }
            Some((503, body)) => {
                if refused == 0 || weight % 20 == 0 {
                    eprintln!("503 at {weight}: {body}");
                }
                refused += 1;
            }
            None => refused += 1,
            Some((status, body)) => panic!("unexpected {status}: {body}"),
        }
    }
    eprintln!(
        "{} acknowledged, {refused} refused (503) while the cluster elected",
        acked.len()
    );
    assert!(
        after_kill >= 100,
        "writes resumed after the kill: {after_kill}"
    );

    // Every acknowledged write is in the log, from either node, with its value.
    let audit = get(a2, "/v1/audit?limit=1000").await;
    let records = audit["records"].as_array().unwrap();
    for (generation, weight) in &acked {
        let found = records.iter().any(|r| {
            r["generation"].as_u64() == Some(*generation) && r["after"]["weight"] == *weight
        });
        assert!(
            found,
            "acknowledged write weight={weight} at generation {generation} is missing"
        );
    }
    // Generations only grow in acknowledgement order.
    assert!(acked.windows(2).all(|w| w[0].0 < w[1].0));
    // The change feed from the first acknowledged write on, oldest first, holds them all.
    let first = acked[0].0;
    let feed = get(a1, &format!("/v1/audit?since={}&limit=1000", first - 1)).await;
    let feed: Vec<u64> = feed["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["generation"].as_u64().unwrap())
        .collect();
    assert!(
        feed.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {feed:?}"
    );
    assert!(acked.iter().all(|(g, _)| feed.contains(g)));
    // Small pages (read forward from the commit at `since`, only what they return) chain
    // into the same feed (issue 12); each write here is one record, so pages end on commits.
    let mut paged = Vec::new();
    let mut after = first - 1;
    loop {
        let page = get(a1, &format!("/v1/audit?since={after}&limit=7")).await;
        let generations: Vec<u64> = page["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["generation"].as_u64().unwrap())
            .collect();
        assert!(generations.len() <= 7);
        let Some(&last) = generations.last() else {
            break;
        };
        after = last;
        paged.extend(generations);
    }
    assert_eq!(paged, feed);
    // Both nodes serve the last acknowledged state.
    let last = acked.last().unwrap().0;
    eventually(
        Duration::from_secs(5),
        "both nodes on the last generation",
        || async { generation(a1).await == generation(a2).await && generation(a2).await >= last },
    )
    .await;
}

/// Two of three members stopped: admin writes get 503 within 5 s, every DNS query is still
/// answered from the last state, and after quorum returns both nodes converge within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_writes_fail_fast_and_dns_keeps_answering() {
    let etcd = Etcd::start();
    let root = tempfile::tempdir().unwrap();
    let n1 = start(&node_dir(root.path(), "ns1", &etcd, "/t3/", "", POOL));
    let n2 = start(&node_dir(root.path(), "ns2", &etcd, "/t3/", "", POOL));
    let (a1, a2) = (n1.admin.unwrap(), n2.admin.unwrap());
    let (status, _) = put(a1, PATH_OVERRIDE, json!({ "health": "down" }))
        .await
        .unwrap();
    assert_eq!(status, 200);
    eventually(Duration::from_secs(5), "node 2 follows", || async {
        answer(n2.dns).await == Some(only_11())
    })
    .await;

    etcd.signal(1, libc::SIGSTOP);
    etcd.signal(2, libc::SIGSTOP);
    let sent = Instant::now();
    let (status, body) = put(a1, PATH_OVERRIDE, json!({ "health": "auto" }))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
    assert!(
        body["error"].as_str().unwrap().contains("unavailable"),
        "{body}"
    );

    // 100% of queries to both nodes answered, the way they were before.
    for dns in [n1.dns, n2.dns] {
        for _ in 0..500 {
            assert_eq!(answer(dns).await, Some(only_11()));
        }
    }
    eventually(
        Duration::from_secs(10),
        "the disconnection shows in the metrics",
        || async {
            let (_, text) = crate::support::http_get(a2, "/metrics").await;
            text.contains("weir_store_connected 0")
        },
    )
    .await;

    etcd.signal(1, libc::SIGCONT);
    etcd.signal(2, libc::SIGCONT);
    let back = Instant::now();
    eventually(
        Duration::from_secs(5),
        "a write goes through again",
        || async {
            matches!(
                put(a1, PATH_OVERRIDE, json!({ "health": "auto" })).await,
                Some((200, _))
            )
        },
    )
    .await;
    eventually(Duration::from_secs(5), "node 2 converges", || async {
        answer(n2.dns).await == Some(both())
    })
    .await;
    eprintln!(
        "quorum back -> both nodes converged in {:?}",
        back.elapsed()
    );
}

/// A node frozen while 1,000 changes are made and the history is compacted: it is never
/// INSYNC meanwhile, then re-reads everything and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_never_insync_and_catches_up_after_compaction() {
    let etcd = Etcd::start();
    let root = tempfile::tempdir().unwrap();
    let n1 = start(&node_dir(root.path(), "ns1", &etcd, "/t4/", "", POOL));
    let n2 = start(&node_dir(root.path(), "ns2", &etcd, "/t4/", "", POOL));
    let (a1, a2) = (n1.admin.unwrap(), n2.admin.unwrap());
    both_listed(a1).await;

    n2.signal(libc::SIGSTOP);
    let mut last = 0;
    for weight in 1..=1000u64 {
        let (status, body) = put(a1, PATH_WEIGHT, json!({ "weight": weight }))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        last = body["generation"].as_u64().unwrap();
        if weight % 100 == 0 {
            let status = get(a1, &format!("/v1/changes/{last}")).await;
            assert_eq!(status["status"], "PENDING", "{status}");
            let ns2 = status["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["node_id"] == "ns2")
                .expect("ns2 listed while frozen");
            assert!(
                ns2["state"] == "lagging" || ns2["state"] == "gone",
                "{status}"
            );
        }
    }
    // Past the lease: ns2 is gone, and still the change is not INSYNC.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = get(a1, &format!("/v1/changes/{last}")).await;
    assert_eq!(status["status"], "PENDING", "{status}");
    etcd.compact();

    n2.signal(libc::SIGCONT);
    let resumed = Instant::now();
    eventually(Duration::from_secs(15), "node 2 converges", || async {
        generation(a2).await == last
    })
    .await;
    eventually(Duration::from_secs(10), "INSYNC", || async {
        get(a1, &format!("/v1/changes/{last}")).await["status"] == "INSYNC"
    })
    .await;
    let pool = get(a2, "/v1/pools/app.example.com.").await;
    let e11 = &pool["groups"][0]["endpoints"][1];
    assert_eq!(e11["address"], "192.0.2.11", "{pool}");
    assert_eq!(e11["weight"]["effective"], 1000, "{pool}");
    eprintln!("node 2 converged {:?} after SIGCONT", resumed.elapsed());
}

/// Two clients race with If-Match on one pool through both nodes: one winner per generation,
/// every winner in the audit log, nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_if_match_writers_get_one_winner_per_generation() {
    let etcd = Etcd::start();
    let root = tempfile::tempdir().unwrap();
    let n1 = start(&node_dir(root.path(), "ns1", &etcd, "/t5/", "", POOL));
    let n2 = start(&node_dir(root.path(), "ns2", &etcd, "/t5/", "", POOL));
    let race = |admin: SocketAddr, client: u64| async move {
        let mut won = Vec::new();
        for i in 0..60u64 {
            let base = generation(admin).await;
            let weight = client * 1000 + i;
            let body = json!({ "weight": weight }).to_string();
            let if_match = format!("\"{base}\"");
            let (status, reply) = http(
                admin,
                Method::PUT,
                PATH_WEIGHT,
                &[("If-Match", &if_match)],
                Some(&body),
            )
            .await;
            match status {
                200 => {
                    won.push((base, reply["generation"].as_u64().unwrap(), weight));
                }
                412 => {}
                other => panic!("unexpected {other} (base {base}): {reply}"),
            }
        }
        won
    };
    let (w1, w2) = tokio::join!(race(n1.admin.unwrap(), 1), race(n2.admin.unwrap(), 2));
    let mut won: Vec<(u64, u64, u64)> = w1.into_iter().chain(w2).collect();
    assert!(won.len() >= 20, "some writes win: {}", won.len());
    won.sort();
    // One winner per base generation, and every new generation distinct.
    assert!(
        won.windows(2).all(|w| w[0].0 != w[1].0),
        "two winners on one base: {won:?}"
    );
    let mut generations: Vec<u64> = won.iter().map(|w| w.1).collect();
    generations.dedup();
    assert_eq!(generations.len(), won.len());
    // The audit log holds exactly the winners.
    let audit = get(n1.admin.unwrap(), "/v1/audit?limit=1000").await;
    let records: Vec<(u64, u64)> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["generation"].as_u64().unwrap(),
                r["after"]["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(records.len(), won.len());
    for (_, generation, weight) in &won {
        assert!(
            records.contains(&(*generation, *weight)),
            "winner {weight} missing"
        );
    }
}

/// With etcd down, a restarted node serves its cached state within 2 s; a node with nothing
/// cached does not serve made-up answers: it waits for etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_while_etcd_is_down_answers_from_its_cache() {
    let etcd = Etcd::start();
    let root = tempfile::tempdir().unwrap();
    let d1 = node_dir(root.path(), "ns1", &etcd, "/t6/", "", POOL);
    let n1 = start(&d1);
    let (status, body) = put(
        n1.admin.unwrap(),
        PATH_OVERRIDE,
        json!({ "health": "down" }),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let g = body["generation"].as_u64().unwrap();
    // The cache is written once the change is served; give it a moment to be flushed.
    eventually(Duration::from_secs(5), "INSYNC", || async {
        get(n1.admin.unwrap(), &format!("/v1/changes/{g}")).await["status"] == "INSYNC"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    n1.signal(libc::SIGTERM);
    assert!(n1.wait().success());

    for i in 0..3 {
        etcd.signal(i, libc::SIGSTOP);
    }
    let started = Instant::now();
    let n1 = start(&d1);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "started in {took:?}");
    assert_eq!(answer(n1.dns).await, Some(only_11()), "the cached state");
    eprintln!("restart with etcd down: serving the cache after {took:?}");

    // A node that never reached etcd has nothing safe to serve: no DNS, and an admin API
    // that is alive (/healthz) but not ready, saying why.
    let d3 = node_dir(root.path(), "ns3", &etcd, "/t6/", "", POOL);
    let (mut child, log) = spawn_logged(&d3);
    let line = wait_for_line(&log, "waiting for the shared state store").await;
    let admin: SocketAddr = log_fields(&line).unwrap()["admin"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (status, _) = http_maybe(admin, Method::GET, "/healthz", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, body) = http_maybe(admin, Method::GET, "/readyz", None)
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert!(
        body.to_string()
            .contains("waiting for the shared state store"),
        "{body}"
    );
    let (status, _) = http_maybe(admin, Method::GET, "/v1/pools", None)
        .await
        .unwrap();
    assert_eq!(status, 503);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(child.try_wait().unwrap().is_none(), "it keeps waiting");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("weir serving DNS"), "{text}");

    // etcd back: it starts serving by itself (the config's admin port is 0, so the real API
    // gets a port of its own).
    for i in 0..3 {
        etcd.signal(i, libc::SIGCONT);
    }
    let line = wait_for_line(&log, "weir serving DNS").await;
    let fields = log_fields(&line).unwrap();
    let admin: SocketAddr = fields["admin"].as_str().unwrap().parse().unwrap();
    let dns: SocketAddr = fields["listen"].as_str().unwrap().parse().unwrap();
    eventually(Duration::from_secs(5), "ready", || async {
        matches!(
            http_maybe(admin, Method::GET, "/readyz", None).await,
            Some((200, _))
        )
    })
    .await;
    assert_eq!(answer(dns).await, Some(only_11()), "the state from etcd");
    let _ = child.kill();
    let _ = child.wait();
}

/// `weir serve` in `dir` with its log in `dir/stderr.log`, without waiting for anything.
fn spawn_logged(dir: &Path) -> (Child, PathBuf) {
    let log = dir.join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--config"])
        .arg(dir.join("weir.toml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

/// The first line of `log` containing `text`, waiting up to 15 s for it.
async fn wait_for_line(log: &Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = all.lines().find(|l| l.contains(text)) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no `{text}` in the log:\n{all}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `health = "shared"`: one node alone seeing an endpoint down does not remove it (here node 1
/// checks for a word the backend does not say, as a node cut off from the backend would);
/// once both see it down, both nodes take it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_health_needs_a_majority_to_take_an_endpoint_out() {
    let backend = crate::backends::Backend::http().await;
    backend.respond(200, "ok v2");
    let etcd = Etcd::start();
    let root = tempfile::tempdir().unwrap();
    let pool = |word: &str| {
        format!(
            "[[pool]]\nname = \"app.example.com.\"\nttl = 5\nanswers = 2\n\
             [pool.check]\nkind = \"http\"\npath = \"/\"\nbody_contains = \"{word}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\n\
             [[pool.group]]\nname = \"blue\"\nendpoints = [{{ address = \"192.0.2.10\", probe = \"{addr}\" }}, {{ address = \"192.0.2.11\", probe = \"{addr}\", check = {{ kind = \"tcp\" }} }}]\n",
            addr = backend.addr()
        )
    };
    let shared = "health = \"shared\"";
    let n1 = start(&node_dir(
        root.path(),
        "ns1",
        &etcd,
        "/t7/",
        shared,
        &pool("v3"),
    ));
    let n2 = start(&node_dir(
        root.path(),
        "ns2",
        &etcd,
        "/t7/",
        shared,
        &pool("ok"),
    ));
    let a1 = n1.admin.unwrap();
    let local_down = || async {
        let pool = get(a1, "/v1/pools/app.example.com.").await;
        pool["groups"][0]["endpoints"][0]["probe"]["last"]["health"] == "down"
    };
    eventually(
        Duration::from_secs(10),
        "node 1's own probe says down",
        local_down,
    )
    .await;
    // Long enough for node 1's report to reach node 2 and back, several times over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for dns in [n1.dns, n2.dns] {
        assert_eq!(
            answer(dns).await,
            Some(both()),
            "one node alone cannot take it out"
        );
    }

    backend.respond(200, "gone");
    for dns in [n1.dns, n2.dns] {
        eventually(
            Duration::from_secs(10),
            "both see it down: it leaves",
            || async { answer(dns).await == Some(only_11()) },
        )
        .await;
    }
}

/// A rollout started on node 1 runs the same in shared mode: both nodes' drivers tick, the
/// store lets one step through per change, each step waits for INSYNC, and node 2 ends up
/// answering only the new group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_runs_once_across_two_nodes() {
    let etcd = Etcd::start();
    let root = tempfile::tempdir().unwrap();
    let pool = "[[pool]]\nname = \"app.example.com.\"\nttl = 1\n[[pool.group]]\nname = \"blue\"\nweight = 100\nendpoints = [{ address = \"192.0.2.10\" }]\n[[pool.group]]\nname = \"green\"\nweight = 0\nendpoints = [{ address = \"192.0.2.20\" }]\n";
    let n1 = start(&node_dir(root.path(), "ns1", &etcd, "/t8/", "", pool));
    let n2 = start(&node_dir(root.path(), "ns2", &etcd, "/t8/", "", pool));
    let (a1, a2) = (n1.admin.unwrap(), n2.admin.unwrap());
    both_listed(a1).await;
    let plan = json!({"from": "blue", "to": "green", "steps": [{"set_weight": 50}, {"set_weight": 100}], "slack": "0s"});
    let (status, body) = http_maybe(
        a1,
        Method::POST,
        "/v1/pools/app.example.com./rollouts",
        Some(plan),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let mut saw_awaiting = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // 404 until node 2 has seen the start.
        let (_, r) = http_maybe(a2, Method::GET, "/v1/pools/app.example.com./rollout", None)
            .await
            .unwrap();
        saw_awaiting |= r["awaiting_sync"] == true;
        if r["state"] == "done" {
            break;
        }
        assert!(Instant::now() < deadline, "the rollout did not finish: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_awaiting, "steps waited for every node");
    eventually(
        Duration::from_secs(5),
        "node 2 answers green only",
        || async { answer(n2.dns).await == Some(vec!["192.0.2.20".to_string()]) },
    )
    .await;
    // One record per step, though two drivers ticked.
    let audit = get(a1, "/v1/audit?pool=app.example.com.&limit=100").await;
    let weights: Vec<u64> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "rollout-step")
        .filter(|r| r["before"]["weight"] != r["after"]["weight"])
        .map(|r| r["after"]["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, vec![100, 50], "{audit}");
}

/// TLS to etcd with a client certificate: a node with `ca_file`, `cert_file` and `key_file`
/// writes and reports through it; one without the client certificate is refused by etcd and,
/// having nothing cached, waits instead of serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let etcd = Etcd::start_tls();
    let root = tempfile::tempdir().unwrap();
    let tls = format!(
        "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
        etcd.file("server.pem"),
        etcd.file("client.pem"),
        etcd.file("client.key")
    );
    let n1 = start(&node_dir(root.path(), "ns1", &etcd, "/t9/", &tls, POOL));
    let a1 = n1.admin.unwrap();
    let (status, body) = put(a1, PATH_OVERRIDE, json!({ "health": "down" }))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let g = body["generation"].as_u64().unwrap();
    eventually(Duration::from_secs(5), "INSYNC over TLS", || async {
        get(a1, &format!("/v1/changes/{g}")).await["status"] == "INSYNC"
    })
    .await;
    let stored = etcd.etcdctl(&["get", "/t9/state", "--print-value-only"]);
    assert!(
        String::from_utf8_lossy(&stored.stdout).contains("192.0.2.10"),
        "the change is in etcd: {}",
        String::from_utf8_lossy(&stored.stderr)
    );

    let no_cert = format!("ca_file = \"{}\"", etcd.file("server.pem"));
    let d2 = node_dir(root.path(), "ns2", &etcd, "/t9/", &no_cert, POOL);
    let (mut child, log) = spawn_logged(&d2);
    wait_for_line(&log, "waiting for the shared state store").await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("weir serving DNS"), "{text}");
}
