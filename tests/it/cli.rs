//! The `weir` binary: help, exit codes, `check` output, and `serve` end to end with SIGHUP
//! reload and SIGTERM shutdown.

use std::process::Command;
use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::support::*;

fn weir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.env_remove("WEIR_CONFIG").env_remove("RUST_LOG");
    c
}

fn root(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn help_and_usage_errors() {
    let out = weir().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("serve") && help.contains("check"), "{help}");
    let out = weir().args(["serve", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
    for args in [&["bogus"][..], &["serve", "--nope"], &[]] {
        let out = weir().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
    }
}

/// `--version` names the allocator the build links (the `jemalloc` feature), which is what
/// an operator checks when memory differs from bench/RESULTS.md.
#[test]
fn version_names_the_allocator() {
    let out = weir().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let version = String::from_utf8_lossy(&out.stdout);
    let allocator = if cfg!(feature = "jemalloc") {
        "jemalloc"
    } else {
        "system"
    };
    assert_eq!(
        version.trim(),
        format!(
            "weir {} (allocator: {allocator})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn check_accepts_the_shipped_config() {
    let out = weir()
        .args(["check", "--config", &root("config/weir.toml")])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 zone"));
}

#[test]
fn check_lists_every_problem_and_exits_78() {
    let (_dir, config, err) = check_refuses(&[
        (
            "a.zone",
            "$TTL 60\n@ SOA ns hm 1 2 3 4 5\nwww A 192.0.2.1\nwww CNAME x\nalias CNAME www\nalias CNAME elsewhere.example.\n",
        ),
        (
            "b.zone",
            "$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\nx A not-an-address\n",
        ),
        (
            "weir.toml",
            "[[zone]]\norigin = \"a.test.\"\nfile = \"a.zone\"\n[[zone]]\norigin = \"b.test.\"\nfile = \"b.zone\"\n[[zone]]\norigin = \"c.test.\"\nfile = \"missing.zone\"\n",
        ),
    ]);
    for want in [
        "5 problems:",
        "a.zone:6: alias.a.test.: more than one CNAME record (the first is at ",
        "a.zone: a.test.: the zone has no NS records at its apex",
        "a.zone:4: www.a.test.: CNAME beside other data (A)",
        "b.zone:5: ",
        "missing.zone: cannot read zone file for `c.test.`",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    std::fs::write(&config, "[dns]\nlisten = [\"nowhere\"]\nudp_max_payload = 9\n[[zone]]\norigin = \"a.test.\"\nfile = \"a.zone\"\n").unwrap();
    let out = weir()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "serve refuses a bad config too"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dns.listen[0]") && err.contains("dns.udp_max_payload"),
        "{err}"
    );
}

/// Issue 12, defect 10: three unknown keys took three runs, a duplicate pool showed only once
/// the other pool problems were fixed, a DNAME hid five other zone problems, and zone content
/// problems named the owner instead of file:line. All at once now, zone problems by line.
#[test]
fn check_reports_unknown_keys_pool_and_zone_problems_in_one_pass() {
    let (dir, config, err) = check_refuses(&[
        (
            "bad.zone",
            "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\n@ NS ns2\nns A 192.0.2.1\nalias CNAME www\nalias A 192.0.2.7\nold DNAME other.example.net.\nsub SOA ns hm 1 2 3 4 60\nout.example.net. A 192.0.2.9\nchaos CH TXT \"x\"\n",
        ),
        (
            "weir.toml",
            "[dns]\nlisten = [\"127.0.0.1:5353\"]\nbogus_one = 1\n[admin]\nbogus_two = 2\n[store]\nbogus_three = 3\n[[zone]]\norigin = \"example.com.\"\nfile = \"bad.zone\"\n[[pool]]\nname = \"app.example.com.\"\nanswers = 0\n[[pool.group]]\nname = \"blue\"\nweight = 0\nendpoints = [{ address = \"192.0.2.10\" }]\n[[pool]]\nname = \"app.example.com.\"\n[[pool.group]]\nname = \"blue\"\nendpoints = [{ address = \"192.0.2.10\" }]\n",
        ),
    ]);
    let lines: Vec<&str> = err.lines().map(str::trim).collect();
    let (toml, zone) = (
        config.display().to_string(),
        dir.path().join("bad.zone").display().to_string(),
    );
    let want = [
        "12 problems:".to_string(),
        format!("{toml}:3: unknown field `bogus_one`"),
        format!("{toml}:5: unknown field `bogus_two`"),
        format!("{toml}:7: unknown field `bogus_three`"),
        format!("{toml}:13: pool[0].answers: 0 is out of range 1..=16"),
        format!("{toml}:11: pool[0]: every group or endpoint weight is 0"),
        format!("{toml}:19: pool[1].name: pool `app.example.com.` is configured twice"),
        format!(
            "{zone}:4: example.com.: NS target `ns2.example.com.` is inside the zone but has no A or AAAA record (missing glue)"
        ),
        format!("{zone}:7: alias.example.com.: CNAME beside other data (A)"),
        format!("{zone}:9: DNAME is not supported"),
        format!("{zone}:10: sub.example.com.: SOA record below the apex"),
        format!("{zone}:11: out.example.net.: A record is outside the zone's origin"),
        format!("{zone}:12: chaos.example.com.: TXT record is not class IN"),
    ];
    assert_eq!(lines.len(), want.len(), "{err}");
    for (line, want) in lines.iter().zip(&want) {
        assert!(
            line.starts_with(want.as_str()),
            "{line:?} should start with {want:?} in:\n{err}"
        );
    }
}

/// The real binary: serve, answer, reload on SIGHUP, keep the old zone when a reload fails,
/// stop cleanly on SIGTERM.
#[tokio::test]
async fn serve_reloads_on_sighup_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("example.com.zone");
    std::fs::write(&zone, ZONE).unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n[[zone]]\norigin = \"example.com.\"\nfile = \"example.com.zone\"\n",
    )
    .unwrap();
    let weir = WeirProcess::start(&config, &[]).unwrap();
    let log = &weir.log;
    let addr = weir.dns;
    // Waits for the log line that says how a reload ended.
    let reload_outcome = || {
        let mut seen = Vec::new();
        for line in log.iter() {
            if line.contains("reloaded") || line.contains("reload failed") {
                return (line.contains("snapshot published"), line);
            }
            seen.push(line);
        }
        panic!(
            "weir exited without a reload outcome; its log:\n{}",
            seen.join("\n")
        );
    };

    let probe = Probe { addr };
    assert_eq!(
        probe.a("www.example.com.").await,
        ["www.example.com. A 192.0.2.80"]
    );

    // A good change is picked up on SIGHUP.
    std::fs::write(&zone, ZONE.replace("192.0.2.80", "192.0.2.81")).unwrap();
    weir.signal(libc::SIGHUP);
    let (ok, line) = reload_outcome();
    assert!(ok, "{line}");
    assert_eq!(log_fields(&line).unwrap()["zones"], 1, "{line}");
    assert_eq!(
        probe.a("www.example.com.").await,
        ["www.example.com. A 192.0.2.81"]
    );

    // A broken zone is rejected, with its problems logged, and the previous snapshot serves on.
    std::fs::write(&zone, "$TTL 60\nwww A 192.0.2.99\n").unwrap();
    weir.signal(libc::SIGHUP);
    let (ok, line) = reload_outcome();
    assert!(!ok && line.contains("the zone has no SOA record"), "{line}");
    assert_eq!(
        probe.a("www.example.com.").await,
        ["www.example.com. A 192.0.2.81"]
    );

    weir.signal(libc::SIGTERM);
    let status = tokio::task::spawn_blocking(move || weir.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
}

struct Probe {
    addr: std::net::SocketAddr,
}

impl Probe {
    async fn a(&self, name: &str) -> Vec<String> {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let q = query(name, RecordType::A).to_vec().unwrap();
        socket.send_to(&q, self.addr).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        lines(
            &hickory_proto::op::Message::from_vec(&buf[..n])
                .unwrap()
                .answers,
        )
    }
}

/// Writes `files` (the config is `weir.toml`) into a new folder, runs `weir check` on them,
/// asserts it refuses with exit code 78, and returns the folder, the config and stderr.
fn check_refuses(files: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let config = dir.path().join("weir.toml");
    let out = weir()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (dir, config, err)
}
