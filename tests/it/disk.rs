//! The state store on a full disk (issue 12), with the real binary and a 2 MiB tmpfs mounted
//! by the test (tests run as root). Before the fix a write never answered, the writer stopped
//! applying health flips, `/readyz` said 200, SIGTERM did nothing, and after space came back
//! every write got 412 until a restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::json;

use crate::backends::Backend;
use crate::support::*;

const ZONE: &str =
    "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n";

/// A tmpfs of `size` mounted on a fresh folder, unmounted when dropped (a failing test too).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Bytes free on it.
    fn free(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily, so a weir still holding files there does not keep it mounted.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// Fills the tmpfs with a file, leaving about `leave` bytes free.
fn fill(disk: &Tmpfs, leave: u64) -> PathBuf {
    let filler = disk.path().join("filler");
    let size = disk.free().saturating_sub(leave);
    std::fs::write(&filler, vec![0u8; size as usize]).unwrap();
    filler
}

async fn set_weight(admin: std::net::SocketAddr, weight: u32, reason: &str) -> (u16, String) {
    let (status, body) = http_maybe(
        admin,
        Method::PUT,
        "/v1/pools/app.example.com./groups/blue/weight",
        Some(json!({ "weight": weight, "reason": reason })),
    )
    .await
    .expect("the admin API answers within 10 s");
    (status, body.to_string())
}

async fn answers(dns: std::net::SocketAddr) -> Vec<String> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let msg = query("app.example.com.", RecordType::A);
    socket.send_to(&msg.to_vec().unwrap(), dns).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await {
        Ok(Ok(n)) => lines(
            &hickory_proto::op::Message::from_vec(&buf[..n])
                .unwrap()
                .answers,
        ),
        _ => Vec::new(),
    }
}

/// Writes until one fails; returns its status and body, and how many went through.
async fn write_until_refused(admin: std::net::SocketAddr) -> (u16, String, u32) {
    let reason = "r".repeat(1000);
    for i in 0..5000 {
        let (status, body) = set_weight(admin, i % 50 + 1, &reason).await;
        if status != 200 {
            return (status, body, i);
        }
    }
    panic!("5000 writes of 1 KB on a 2 MiB disk all succeeded");
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_and_nothing_else_stops() {
    let disk = Tmpfs::mount("2m");
    let mut down = Backend::tcp().await;
    let up = Backend::tcp().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("example.com.zone"), ZONE).unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{store}\"\n[log]\nformat = \"json\"\n\
             [[zone]]\norigin = \"example.com.\"\nfile = \"example.com.zone\"\n\
             [[pool]]\nname = \"app.example.com.\"\nanswers = 2\n\
             [pool.check]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n\
             [[pool.group]]\nname = \"blue\"\nendpoints = [{{ address = \"192.0.2.10\", probe = \"{a}\" }}, {{ address = \"192.0.2.11\", probe = \"{b}\" }}]\n",
            store = disk.path().join("state").display(),
            a = down.addr(),
            b = up.addr(),
        ),
    )
    .unwrap();
    let weir = WeirProcess::start(&config, &[]).unwrap_or_else(|log| panic!("{log}"));
    let admin = weir.admin.unwrap();
    eventually("both endpoints come up", async || {
        answers(weir.dns).await.len() == 2
    })
    .await;

    // A reason is a sentence: 30 KB ones (what filled sled's blobs/ in the issue) are refused.
    let (status, body) = set_weight(admin, 5, &"x".repeat(30_000)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 1024"), "{body}");

    // Leave the store 1.5 MiB, then write until the disk is too full for the next change.
    let filler = fill(&disk, 1536 << 10);
    let (status, body, written) = write_until_refused(admin).await;
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("no space left on the state store"), "{body}");
    assert!(written > 0, "some writes fit first");
    let (_, before) = http_get(admin, "/v1/pools/app.example.com.").await;

    // Reads, readiness and the metric say so; the served state is the last committed one.
    let (status, ready) = http_get(admin, "/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready.contains("no space left on the state store"),
        "{ready}"
    );
    let (_, metrics) = http_get(admin, "/metrics").await;
    assert!(metrics.contains("\nweir_store_healthy 0\n"), "{metrics}");
    let (status, audit) = http_get(admin, "/v1/audit?since=0").await;
    assert_eq!(status, 200, "{audit}");
    let (_, after) = http_get(admin, "/v1/pools/app.example.com.").await;
    assert_eq!(intent(&before), intent(&after));

    // Health flips are still applied: a backend going down leaves DNS answers.
    down.stop().await;
    eventually("the dead endpoint leaves the answers", async || {
        let now = answers(weir.dns).await;
        now.len() == 1 && now[0].contains("192.0.2.11")
    })
    .await;

    // Space comes back: the next write succeeds (no stale 412), without a restart.
    std::fs::remove_file(&filler).unwrap();
    let (status, body) = set_weight(admin, 7, "after the disk was freed").await;
    assert_eq!(status, 200, "{body}");
    eventually("ready again", async || {
        http_get(admin, "/readyz").await.0 == 200
    })
    .await;
    let (_, metrics) = http_get(admin, "/metrics").await;
    assert!(metrics.contains("\nweir_store_healthy 1\n"), "{metrics}");

    // Full again: SIGTERM stops the process promptly all the same.
    let _filler = fill(&disk, 4096);
    let (status, body) = set_weight(admin, 9, "full again").await;
    assert_eq!(status, 507, "{body}");
    let stopping = Instant::now();
    weir.signal(libc::SIGTERM);
    let exited = weir.wait();
    assert!(exited.success(), "{exited:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "took {:?}",
        stopping.elapsed()
    );
}

/// A store of 3000 changes to the pool's blue group, written through the library.
fn write_store(path: &Path) {
    use weir::store::Store;
    let store = weir::store::SledStore::open(path, 1000).unwrap();
    let mut generation = 0;
    for i in 0..3000u32 {
        let mut overlay = weir::model::Overlay::default();
        overlay
            .group_weights
            .entry(weir::model::PoolId::parse("app.example.com.").unwrap())
            .or_default()
            .insert("blue".into(), i % 50 + 1);
        let record = weir::model::AuditRecord {
            generation: 0,
            time: 1_700_000_000,
            actor: "test".into(),
            source: "127.0.0.1".into(),
            action: "set-group-weight".into(),
            pool: "app.example.com.".into(),
            subject: "group blue".into(),
            before: json!(1),
            after: json!(i % 50 + 1),
            reason: "r".repeat((i as usize * 37) % 900),
        };
        generation = store.commit(generation, &overlay, vec![record]).unwrap();
    }
}

/// Issue 12: of 67 random corruptions of the store's `db`, 35 started, then answered
/// `GET /v1/audit?since=0` with 500. Now weir either starts with everything readable or
/// refuses with the store's path and `--reset-state`.
#[tokio::test]
async fn a_damaged_store_either_reads_completely_or_stops_start_up() {
    // A tmpfs: the 3000 fsyncs of the store cost nothing there.
    let disk = Tmpfs::mount("64m");
    std::fs::write(disk.path().join("example.com.zone"), ZONE).unwrap();
    let config = disk.path().join("weir.toml");
    std::fs::write(
        &config,
        "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"state\"\naudit_retention = 1000\n\
         [log]\nformat = \"json\"\n\
         [[zone]]\norigin = \"example.com.\"\nfile = \"example.com.zone\"\n\
         [[pool]]\nname = \"app.example.com.\"\n\
         [[pool.group]]\nname = \"blue\"\nendpoints = [{ address = \"192.0.2.10\" }]\n\
         [[pool.group]]\nname = \"green\"\nendpoints = [{ address = \"192.0.2.11\" }]\n",
    )
    .unwrap();
    let pristine = disk.path().join("pristine");
    write_store(&pristine);
    let db = std::fs::read(pristine.join("db")).unwrap();
    let store = disk.path().join("state");

    let (mut started, mut refused) = (0, 0);
    for seed in 0..16u64 {
        let _ = std::fs::remove_dir_all(&store);
        std::fs::create_dir(&store).unwrap();
        for entry in std::fs::read_dir(&pristine).unwrap() {
            let entry = entry.unwrap();
            if entry.path().is_file() {
                std::fs::copy(entry.path(), store.join(entry.file_name())).unwrap();
            }
        }
        let mut bytes = db.clone();
        let at = fastrand::Rng::with_seed(seed).usize(0..bytes.len());
        bytes[at] ^= 0xff;
        std::fs::write(store.join("db"), bytes).unwrap();
        match WeirProcess::start(&config, &[]) {
            Ok(weir) => {
                started += 1;
                let admin = weir.admin.unwrap();
                for path in ["/v1/audit?since=0", "/v1/audit?limit=1000"] {
                    let (status, body) = http_get(admin, path).await;
                    assert_eq!(status, 200, "seed {seed} {path}: {body}");
                }
                let (status, body) = set_weight(admin, 3, "after the damage").await;
                assert_eq!(status, 200, "seed {seed}: {body}");
                let (status, body) = http_get(admin, "/v1/audit?since=0").await;
                assert_eq!(status, 200, "seed {seed}: {body}");
            }
            Err(log) => {
                refused += 1;
                let says = format!("the state store {} is corrupt", store.display());
                assert!(
                    log.contains(&says) && log.contains("--reset-state"),
                    "seed {seed}: {log}"
                );
            }
        }
    }
    eprintln!("damaged stores: {started} started and read completely, {refused} refused");
}

/// A pool as the admin API shows it, without the probes' last results (probes go on running,
/// so those change between two reads while the intent does not).
fn intent(pool: &str) -> serde_json::Value {
    let mut pool: serde_json::Value = serde_json::from_str(pool).unwrap();
    for group in pool["groups"].as_array_mut().unwrap() {
        for endpoint in group["endpoints"].as_array_mut().unwrap() {
            if let Some(probe) = endpoint["probe"].as_object_mut() {
                probe.remove("last");
            }
        }
    }
    pool
}
