//! weir out of file descriptors (the real binary under a low RLIMIT_NOFILE): a probe that
//! cannot open its socket is "unknown", so health stays as it was and DNS keeps answering with
//! the endpoint, instead of every endpoint being failed over for weir's own trouble.

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use tokio::net::TcpStream;

use crate::support::*;

const ZONE: &str =
    "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n";

/// One UDP query to `dns`; None without a reply within 2 s.
async fn udp_to(
    dns: std::net::SocketAddr,
    msg: &hickory_proto::op::Message,
) -> Option<hickory_proto::op::Message> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&msg.to_vec().unwrap(), dns).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    hickory_proto::op::Message::from_vec(&buf[..n]).ok()
}

/// Descriptors the process holds now.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn probes_failing_for_want_of_descriptors_never_turn_an_endpoint_down() {
    // A backend that accepts and closes: the probe target is healthy throughout.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = backend.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = backend.accept().await {
            drop(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("example.com.zone"), ZONE).unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\ntcp_idle_timeout = \"60s\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"state\"\n[log]\nformat = \"json\"\n\
             [[zone]]\norigin = \"example.com.\"\nfile = \"example.com.zone\"\n\
             [[pool]]\nname = \"app.example.com.\"\non_all_down = \"nodata\"\n\
             [pool.check]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n\
             [[pool.group]]\nname = \"g\"\nendpoints = [{{ address = \"192.0.2.10\", probe = \"{target}\" }}]\n"
        ),
    )
    .unwrap();
    let limit = 64;
    let weir = WeirProcess::start_limited(&config, &[], Some((limit, limit)))
        .unwrap_or_else(|log| panic!("{log}"));
    assert!(
        weir.startup_log
            .iter()
            .any(|l| l.contains("file descriptor limit is below")),
        "weir warns that 64 descriptors are too few: {:#?}",
        weir.startup_log
    );
    let started = Instant::now();
    let ask = || async {
        udp_to(weir.dns, &query("app.example.com.", RecordType::A))
            .await
            .is_some_and(|reply| {
                lines(&reply.answers)
                    .iter()
                    .any(|l| l.contains("192.0.2.10"))
            })
    };
    while !ask().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the endpoint comes up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Fill weir's descriptor table with idle DNS TCP connections.
    let mut held = Vec::new();
    while open_fds(weir.pid()) < limit as usize && held.len() < 200 {
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(weir.dns)).await
        {
            held.push(c);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        open_fds(weir.pid()),
        limit as usize,
        "weir is out of descriptors"
    );
    // A few more wait in the listen backlog, so any descriptor weir frees is taken at once.
    for _ in 0..8 {
        held.push(TcpStream::connect(weir.dns).await.unwrap());
    }

    // Many probe intervals later the endpoint is still served, and weir said why it held.
    let mut unknown = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        while let Ok(line) = weir.log.try_recv() {
            assert!(!line.contains("probe health flipped"), "{line}");
            unknown |= line.contains("probe result unknown");
        }
        assert!(ask().await, "the endpoint stays in answers");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(unknown, "weir logs that its probes could not run");
    drop(held);
}

#[tokio::test]
async fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("example.com.zone"), ZONE).unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"state\"\n[log]\nformat = \"json\"\n[[zone]]\norigin = \"example.com.\"\nfile = \"example.com.zone\"\n",
    )
    .unwrap();
    let weir = WeirProcess::start_limited(&config, &[], Some((256, 4096)))
        .unwrap_or_else(|log| panic!("{log}"));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", weir.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{line}");
    assert!(
        weir.startup_log
            .iter()
            .any(|l| l.contains("file descriptor limit raised")),
        "{:#?}",
        weir.startup_log
    );
    assert!(
        !weir
            .startup_log
            .iter()
            .any(|l| l.contains("file descriptor limit is below")),
        "4096 is enough for the defaults"
    );
}
