//! Zone transfers (issue 16) against real tools: `kdig` (knot-dnsutils) asks for AXFR and IXFR
//! from allowed and refused sources, over TCP and UDP; NSD (`/usr/sbin/nsd`) runs as a real
//! secondary of weir's zone, transfers it and serves it. Both are Debian packages `.ci/test`
//! installs; a missing one fails the test with the reason, never skips it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Server, ZONE, find_program, free_port, query, rcode};

/// A managed name with endpoints of weight > 0 (shown to a secondary), one of weight 0 and a
/// drained group (both left out). Every probe fails (TCP port 1) and starts down: a transfer
/// does not depend on health.
pub(crate) const POOLS: &str = r#"
[[pool]]
name = "app.example.com."
ttl = 30
[pool.check]
kind = "tcp"
port = 1
initial = "down"
[[pool.group]]
name = "blue"
weight = 100
endpoints = [{ address = "192.0.2.10" }, { address = "192.0.2.11" }, { address = "2001:db8::10" }, { address = "192.0.2.12", weight = 0 }]
[[pool.group]]
name = "green"
weight = 0
endpoints = [{ address = "192.0.2.20" }]
"#;

/// Every record of `ZONE` (and the pool's transfer form) as kdig prints them, SOA aside.
pub(crate) const EXPECTED: &[&str] = &[
    "example.com. 3600 IN NS ns1.example.com.",
    "example.com. 3600 IN NS ns2.example.com.",
    "example.com. 3600 IN MX 10 mail.example.com.",
    "example.com. 3600 IN A 192.0.2.1",
    "ns1.example.com. 3600 IN A 192.0.2.53",
    "ns2.example.com. 3600 IN A 192.0.2.54",
    "ns2.example.com. 3600 IN AAAA 2001:db8::54",
    "mail.example.com. 3600 IN A 192.0.2.25",
    "www.example.com. 60 IN A 192.0.2.80",
    "www.example.com. 60 IN AAAA 2001:db8::80",
    "web.example.com. 3600 IN CNAME www.example.com.",
    "alias.example.com. 3600 IN CNAME web.example.com.",
    "loop1.example.com. 3600 IN CNAME loop2.example.com.",
    "loop2.example.com. 3600 IN CNAME loop1.example.com.",
    "out.example.com. 3600 IN CNAME www.example.net.",
    "gone.example.com. 3600 IN CNAME nothing.example.com.",
    "info.example.com. 3600 IN TXT \"first string\" \"second string\"",
    "_sip._tcp.example.com. 3600 IN SRV 10 60 5060 sip.example.com.",
    "sip.example.com. 3600 IN A 192.0.2.60",
    "a.b.c.example.com. 3600 IN A 192.0.2.3",
    "*.wild.example.com. 3600 IN A 192.0.2.99",
    "*.wild.example.com. 3600 IN TXT \"wildcard\"",
    "sub.example.com. 3600 IN NS ns1.sub.example.com.",
    "sub.example.com. 3600 IN NS ns.example.net.",
    "ns1.sub.example.com. 3600 IN A 192.0.2.153",
    "app.example.com. 30 IN A 192.0.2.10",
    "app.example.com. 30 IN A 192.0.2.11",
    "app.example.com. 30 IN AAAA 2001:db8::10",
];

pub(crate) const SOA: &str = "example.com. 3600 IN SOA ns1.example.com. hostmaster.example.com. 2026112301 7200 3600 1209600 300";

/// How many TXT records the big zone holds: several messages' worth.
pub(crate) const BIG: usize = 5_000;

pub(crate) fn big_zone() -> String {
    let mut zone = String::from(
        "$ORIGIN big.test.\n$TTL 300\n@ SOA ns hm 7 3600 600 86400 60\n@ NS ns\nns A 192.0.2.7\n",
    );
    for i in 0..BIG {
        zone.push_str(&format!(
            "t{i} TXT \"record {i} of a zone large enough for several messages\"\n"
        ));
    }
    zone
}

/// weir serving example.com (transfers allowed to 127.0.0.1 only) and big.test.
async fn server() -> Server {
    Server::builder()
        .zone("example.com.", ZONE)
        .zone_keys("allow_transfer = [\"127.0.0.1/32\"]")
        .zone("big.test.", &big_zone())
        .zone_keys("allow_transfer = [\"127.0.0.0/8\"]")
        .pools(POOLS)
        .start()
        .await
}

pub(crate) fn kdig_program() -> PathBuf {
    find_program("kdig").unwrap_or_else(|| {
        panic!(
            "kdig is not installed: the transfer tests ask weir with it \
             (Debian: apt-get install knot-dnsutils; .ci/test installs it)"
        )
    })
}

/// Runs kdig against `server` with `args`; its standard output and error.
async fn kdig(server: &Server, args: &[&str]) -> String {
    kdig_at(server.addr, args).await
}

pub(crate) async fn kdig_at(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let port = addr.port().to_string();
    let out = tokio::process::Command::new(kdig_program())
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &port, "+timeout=5", "+retry=0"])
        .args(args)
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The records in kdig's output, one per line with single spaces.
pub(crate) fn records(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// kdig's "(N messages, M records)" of a transfer.
pub(crate) fn counts(output: &str) -> (usize, usize) {
    let line = output
        .lines()
        .find(|l| l.contains(" messages, "))
        .unwrap_or_else(|| panic!("no transfer summary in {output}"));
    let inner = line.split('(').nth(1).unwrap().trim_end_matches(')');
    let mut numbers = inner
        .split(", ")
        .map(|part| part.split_whitespace().next().unwrap().parse().unwrap());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

/// A whole transfer of example.com: SOA first and last, every record once between them.
fn assert_whole_zone(output: &str) {
    assert_whole_zone_with(output, SOA, &[]);
}

/// A whole transfer of example.com with the SOA `soa`: every record of `EXPECTED` and `more`
/// once between its two copies (a signed transfer's TSIG records aside).
pub(crate) fn assert_whole_zone_with(output: &str, soa: &str, more: &[&str]) {
    let got: Vec<String> = (records(output).into_iter())
        .filter(|l| !l.contains(" TSIG "))
        .collect();
    assert!(got.len() > 2, "{output}");
    assert_eq!(got.first().map(String::as_str), Some(soa), "{output}");
    assert_eq!(got.last().map(String::as_str), Some(soa), "{output}");
    let mut middle = got[1..got.len() - 1].to_vec();
    middle.sort();
    let mut want: Vec<String> = (EXPECTED.iter().chain(more))
        .map(|s| s.to_string())
        .collect();
    want.sort();
    assert_eq!(middle, want, "{output}");
}

#[tokio::test]
async fn axfr_from_an_allowed_source_gets_every_record() {
    let server = server().await;
    let out = kdig(&server, &["example.com.", "AXFR"]).await;
    assert_whole_zone(&out);
    assert_eq!(counts(&out), (1, EXPECTED.len() + 2), "{out}");
    // Managed names are plain data there, whatever their health; answers still follow it.
    let app = server.udp(&query("app.example.com.", RecordType::A)).await;
    assert_eq!(rcode(&app), ResponseCode::NoError);
    server.stop().await;
}

#[tokio::test]
async fn a_large_zone_goes_in_several_messages() {
    let server = server().await;
    let out = kdig(&server, &["big.test.", "AXFR"]).await;
    let (messages, total) = counts(&out);
    assert!(messages > 1, "{messages} messages: {out:.300}");
    assert_eq!(total, BIG + 4, "SOA twice, NS, A and every TXT");
    let got = records(&out);
    assert!(got[0].contains(" SOA ") && got[got.len() - 1].contains(" SOA "));
    let txt: std::collections::HashSet<&str> = got
        .iter()
        .filter(|l| l.contains(" TXT "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(txt.len(), BIG);
    assert!(txt.contains("t4999.big.test."));
    server.stop().await;
}

#[tokio::test]
async fn transfers_are_refused_to_other_sources_and_over_udp() {
    let server = server().await;
    // 127.0.0.2 is not in example.com's allow_transfer (127.0.0.1/32).
    let out = kdig(&server, &["-b", "127.0.0.2", "example.com.", "AXFR"]).await;
    assert!(out.contains("REFUSED"), "{out}");
    assert!(records(&out).is_empty(), "{out}");
    // It is in big.test's (127.0.0.0/8).
    let out = kdig(&server, &["-b", "127.0.0.2", "big.test.", "AXFR"]).await;
    assert_eq!(counts(&out).1, BIG + 4, "{out:.300}");
    // A name that is no zone's apex; a zone not served.
    for name in ["www.example.com.", "example.net."] {
        let out = kdig(&server, &[name, "AXFR"]).await;
        assert!(out.contains("REFUSED"), "{name}: {out}");
    }
    // Never over UDP, allowed or not.
    let reply = server.udp(&query("example.com.", RecordType::AXFR)).await;
    assert_eq!(rcode(&reply), ResponseCode::Refused);
    assert!(reply.answers.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn ixfr_gets_the_whole_zone_over_tcp_and_the_soa_over_udp() {
    let server = server().await;
    let out = kdig(&server, &["example.com.", "IXFR=2026112300"]).await;
    assert_whole_zone(&out);
    let out = kdig(&server, &["+notcp", "example.com.", "IXFR=2026112300"]).await;
    assert_eq!(records(&out), vec![SOA.to_string()], "{out}");
    let reply = server.udp(&query("example.com.", RecordType::IXFR)).await;
    assert_eq!(rcode(&reply), ResponseCode::NoError);
    assert!(
        reply.metadata.authoritative && reply.answers.len() == 1,
        "{reply:?}"
    );
    let out = kdig(
        &server,
        &[
            "+notcp",
            "-b",
            "127.0.0.2",
            "example.com.",
            "IXFR=2026112300",
        ],
    )
    .await;
    assert!(out.contains("REFUSED"), "{out}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// NSD as a real secondary

/// NSD serving weir's example.com as a secondary, killed by its PID when dropped.
pub(crate) struct Nsd {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nsd {
    /// Starts NSD on a free loopback port as a secondary of `zone` at `primary`, with its own
    /// config, pid file, database and zones folder in a temp folder, in the foreground.
    fn start(zone: &str, primary: std::net::SocketAddr) -> Nsd {
        Nsd::start_on(free_port(), zone, primary, None)
    }

    /// As `start`, with NSD signing its SOA queries and transfer requests with the TSIG key
    /// `(name, algorithm, base64 secret)` and checking weir's signed replies.
    pub(crate) fn start_keyed(
        zone: &str,
        primary: std::net::SocketAddr,
        key: Option<(&str, &str, &str)>,
    ) -> Nsd {
        Nsd::start_on(free_port(), zone, primary, key)
    }

    /// As `start_keyed`, on `port` (known before weir starts when weir is to NOTIFY it).
    pub(crate) fn start_on(
        port: u16,
        zone: &str,
        primary: std::net::SocketAddr,
        key: Option<(&str, &str, &str)>,
    ) -> Nsd {
        Nsd::start_with(port, zone, primary, key, "")
    }

    /// As `start_on`, with more lines (indented) in NSD's `zone:` clause.
    pub(crate) fn start_with(
        port: u16,
        zone: &str,
        primary: std::net::SocketAddr,
        key: Option<(&str, &str, &str)>,
        more: &str,
    ) -> Nsd {
        let binary = find_program("nsd").unwrap_or_else(|| {
            panic!(
                "NSD is not installed: this test runs it as a real secondary of weir \
                 (Debian: apt-get install nsd; .ci/test installs it)"
            )
        });
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("nsd.conf");
        std::fs::write(
            &config,
            nsd_config(dir.path(), port, zone, primary, key) + more,
        )
        .unwrap();
        let args = ["-d".as_ref(), "-c".as_ref(), config.as_os_str()];
        let child = crate::support::spawn_logged(&binary, &args, &dir.path().join("nsd.out"));
        Nsd { child, port, dir }
    }

    /// Where NSD answers.
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub(crate) fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("nsd.out"), read("nsd.log"))
    }

    /// Asks NSD over UDP.
    pub(crate) async fn ask(
        &self,
        name: &str,
        rtype: RecordType,
    ) -> Option<hickory_proto::op::Message> {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
        let packet = query(name, rtype).to_vec().ok()?;
        socket
            .send_to(&packet, ("127.0.0.1", self.port))
            .await
            .ok()?;
        let mut buf = vec![0u8; 65535];
        let n = tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        hickory_proto::op::Message::from_vec(&buf[..n]).ok()
    }

    /// The answer records NSD gives, as kdig prints them (`owner ttl IN type rdata`), sorted.
    pub(crate) async fn answers(&self, name: &str, rtype: RecordType) -> Vec<String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let out = kdig_at(addr, &["+noall", "+answer", name, &rtype.to_string()]).await;
        let mut lines = records(&out);
        lines.sort();
        lines
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn nsd_config(
    dir: &Path,
    port: u16,
    zone: &str,
    primary: std::net::SocketAddr,
    key: Option<(&str, &str, &str)>,
) -> String {
    let d = dir.display();
    let primary_ip = primary.ip();
    let primary_port = primary.port();
    let (key_clause, key_name) = match key {
        Some((name, algorithm, secret)) => (
            format!(
                "key:\n    name: \"{name}\"\n    algorithm: {algorithm}\n    secret: \"{secret}\"\n\n"
            ),
            name,
        ),
        None => (String::new(), "NOKEY"),
    };
    // No `AXFR` in request-xfr: NSD asks by IXFR over TCP once it holds the zone, and weir
    // answers from its journal when it can (else in AXFR form).
    format!(
        "server:\n    ip-address: 127.0.0.1@{port}\n    port: {port}\n    username: \"\"\n    chroot: \"\"\n    zonesdir: \"{d}\"\n    pidfile: \"{d}/nsd.pid\"\n    database: \"\"\n    xfrdfile: \"{d}/xfrd.state\"\n    zonelistfile: \"{d}/zone.list\"\n    xfrdir: \"{d}\"\n    logfile: \"{d}/nsd.log\"\n    verbosity: 2\n    server-count: 1\n\nremote-control:\n    control-enable: no\n\n{key_clause}zone:\n    name: \"{zone}\"\n    zonefile: \"{d}/secondary.zone\"\n    request-xfr: {primary_ip}@{primary_port} {key_name}\n    allow-notify: {primary_ip} {key_name}\n"
    )
}

/// Waits until NSD answers `name` `rtype` with `want` (sorted, as kdig prints), or fails
/// after `within` with NSD's log.
pub(crate) async fn nsd_serves(
    nsd: &Nsd,
    name: &str,
    rtype: RecordType,
    want: &[&str],
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let got = nsd.answers(name, rtype).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "NSD answered {name} {rtype} with {got:?}, not {want:?}, for {within:?}:\n{}",
            nsd.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// NSD, a secondary of `server`'s example.com with weir notifying it, serves the zone; then a
/// reload of the zone file with a new serial and record reaches it within 10 s (the zone's
/// refresh is 7200 s: only the NOTIFY explains it).
pub(crate) async fn a_new_serial_reaches(server: &Server, nsd: &Nsd) {
    nsd_serves(
        nsd,
        "example.com.",
        RecordType::SOA,
        &[SOA],
        Duration::from_secs(20),
    )
    .await;
    let edited = ZONE.replace("2026112301", "2026112302") + "late A 192.0.2.177\n";
    std::fs::write(server.zone_path(0), edited).unwrap();
    let (status, reply) = server.reload().await;
    assert_eq!(status, 200, "{reply}");
    let late = ["late.example.com. 3600 IN A 192.0.2.177"];
    nsd_serves(
        nsd,
        "late.example.com.",
        RecordType::A,
        &late,
        Duration::from_secs(10),
    )
    .await;
    let soa = SOA.replace("2026112301", "2026112302");
    nsd_serves(
        nsd,
        "example.com.",
        RecordType::SOA,
        &[&soa],
        Duration::from_secs(1),
    )
    .await;
}

/// `[[zone]] notify`: a new serial (a reload of an edited zone file) reaches NSD at once by
/// NOTIFY. The zone's refresh is 7200 s, so nothing else makes NSD ask within the test.
#[tokio::test]
async fn nsd_is_notified_of_a_new_serial_and_transfers_it() {
    let port = free_port();
    let server = Server::builder()
        .zone("example.com.", ZONE)
        .zone_keys(&format!(
            "allow_transfer = [\"127.0.0.1/32\"]\nnotify = [\"127.0.0.1:{port}\"]"
        ))
        .start()
        .await;
    let nsd = Nsd::start_on(port, "example.com", server.addr, None);
    a_new_serial_reaches(&server, &nsd).await;
    let acked = "weir_notify_total{result=\"acked\",zone=\"example.com.\"}";
    let metrics = server.metrics();
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix(acked))
        .unwrap_or_else(|| panic!("no {acked} in\n{metrics}"));
    assert!(count.trim().parse::<f64>().unwrap() >= 2.0, "{count}");
    drop(nsd);
    server.stop().await;
}

#[tokio::test]
async fn nsd_transfers_the_zone_and_serves_it() {
    let server = server().await;
    let nsd = Nsd::start("example.com", server.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let soa = nsd.ask("example.com.", RecordType::SOA).await;
        let www = nsd.ask("www.example.com.", RecordType::A).await;
        let served = |m: &Option<hickory_proto::op::Message>| {
            m.as_ref()
                .is_some_and(|m| rcode(m) == ResponseCode::NoError && !m.answers.is_empty())
        };
        if served(&soa) && served(&www) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "NSD did not serve example.com from weir within 20 s:\n{}",
            nsd.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, rtype) in [
        ("www.example.com.", RecordType::A),
        ("www.example.com.", RecordType::AAAA),
        ("info.example.com.", RecordType::TXT),
        ("*.wild.example.com.", RecordType::TXT),
        ("app.example.com.", RecordType::A),
        ("app.example.com.", RecordType::AAAA),
    ] {
        let want: Vec<String> = {
            let kind = format!(" IN {rtype} ");
            let mut lines: Vec<String> = EXPECTED
                .iter()
                .filter(|l| l.starts_with(name) && l.contains(&kind))
                .map(|s| s.to_string())
                .collect();
            lines.sort();
            lines
        };
        assert!(!want.is_empty());
        assert_eq!(nsd.answers(name, rtype).await, want, "{name} {rtype}");
    }
    // The SOA is weir's (same serial).
    let soa = nsd.answers("example.com.", RecordType::SOA).await;
    assert_eq!(soa, vec![SOA.to_string()]);
    drop(nsd);
    server.stop().await;
}
