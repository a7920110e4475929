//! What operators watch, over real sockets: queries by zone, the last reload's result, and the
//! sampled query log (through the real binary, read from its JSON log on stderr).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Edns, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::support::*;

const COM: &str = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\nwww A 192.0.2.80\n";
const NET: &str = "$ORIGIN example.net.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.2\nwww A 192.0.2.81\n";

/// The value of one series in a Prometheus text exposition, if present.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

fn zone_queries(metrics: &str, zone: &str) -> Option<f64> {
    value(
        metrics,
        &format!("weir_dns_zone_queries_total{{zone=\"{zone}\"}}"),
    )
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// POST /v1/reload on the admin API; the status code.
async fn reload(admin: SocketAddr) -> u16 {
    http(admin, Method::POST, "/v1/reload", &[], None).await.0
}

#[tokio::test]
async fn every_answered_query_counts_once_under_its_zone() {
    let s = Server::builder()
        .zone("example.com.", COM)
        .zone("example.net.", NET)
        .start()
        .await;
    let m = s.metrics();
    assert_eq!(zone_queries(&m, "example.com."), Some(0.0), "{m}");
    assert_eq!(zone_queries(&m, "example.net."), Some(0.0));
    assert_eq!(zone_queries(&m, "none"), Some(0.0));

    // example.com.: 5 over UDP, 4 over TCP, answers and negative answers alike (0x20 case too).
    for name in ["www.example.com.", "WwW.ExAmPlE.cOm.", "nope.example.com."] {
        s.udp(&query(name, RecordType::A)).await;
    }
    s.udp(&query("example.com.", RecordType::SOA)).await;
    s.udp(&query("www.example.com.", RecordType::AAAA)).await;
    let com = query("www.example.com.", RecordType::A).to_vec().unwrap();
    let replies = tcp_pipeline(s.addr, &vec![com; 3]).await;
    assert!(replies.iter().all(|r| rcode(r) == ResponseCode::NoError));
    // A zone transfer is refused, but the question still fell in the zone.
    let r = s.tcp(&query("example.com.", RecordType::AXFR)).await;
    assert_eq!(rcode(&r), ResponseCode::Refused);
    // example.net.: 2 over UDP, 1 over TCP.
    s.udp(&query("www.example.net.", RecordType::A)).await;
    s.udp(&query("example.net.", RecordType::NS)).await;
    s.tcp(&query("www.example.net.", RecordType::A)).await;
    // Outside every zone: 3 REFUSED, plus queries rejected before the lookup.
    for (t, name) in [
        (Transport::Udp, "www.example.org."),
        (Transport::Tcp, "com."),
        (Transport::Udp, "."),
    ] {
        let r = s.ask(t, &query(name, RecordType::A)).await;
        assert_eq!(rcode(&r), ResponseCode::Refused, "{name}");
    }
    // An EDNS version weir does not speak gets BADVERS without a lookup: "none" as well.
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_version(1);
    let mut badvers = query("www.example.com.", RecordType::A);
    badvers.set_edns(edns);
    let r = s.udp(&badvers).await;
    assert_eq!(u16::from(rcode(&r)), 16, "BADVERS");
    let status_opcode = 2 << 11;
    let reply = s
        .udp_raw(&raw(7, status_opcode, [0; 4], &[]))
        .await
        .unwrap();
    assert_eq!(header(&reply).1 & RCODE_MASK, 4, "NOTIMP");
    // A dropped packet (QR set) is no answer and counts nowhere.
    assert!(s.udp_dropped(&raw(8, 0x8000, [0; 4], &[])).await);

    let m = s.metrics();
    // udp_dropped's own good query is one more for example.com.
    assert_eq!(zone_queries(&m, "example.com."), Some(10.0), "{m}");
    assert_eq!(zone_queries(&m, "example.net."), Some(3.0));
    assert_eq!(zone_queries(&m, "none"), Some(5.0));
    // Every response sent is counted under exactly one zone.
    let responses: f64 = m
        .lines()
        .filter(|l| l.starts_with("weir_dns_responses_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(responses, 18.0, "{m}");
    s.stop().await;
}

#[tokio::test]
async fn reloads_drop_the_series_of_removed_zones_and_report_their_result() {
    let started = unix_now();
    let s = Server::builder()
        .zone("example.com.", COM)
        .zone("example.net.", NET)
        .start()
        .await;
    let admin = s.admin();
    let m = s.metrics();
    // Start-up counts as a successful load.
    assert_eq!(value(&m, "weir_last_reload_success"), Some(1.0), "{m}");
    let at_start = value(&m, "weir_last_reload_timestamp_seconds").unwrap();
    assert!(
        at_start >= started - 1.0 && at_start <= unix_now(),
        "{at_start}"
    );
    for name in ["www.example.com.", "www.example.net."] {
        s.udp(&query(name, RecordType::A)).await;
    }
    let m = s.metrics();
    assert_eq!(zone_queries(&m, "example.net."), Some(1.0));

    // A good reload without example.net.: its series is gone, example.com.'s keeps counting.
    let path = s.config_path();
    let config = std::fs::read_to_string(&path).unwrap();
    let without_net = config.replace(
        "[[zone]]\norigin = \"example.net.\"\nfile = \"zone1.zone\"\n",
        "",
    );
    assert_ne!(without_net, config, "the config names zone1.zone");
    std::fs::write(&path, &without_net).unwrap();
    assert_eq!(reload(admin).await, 200);
    let m = s.metrics();
    assert_eq!(zone_queries(&m, "example.net."), None, "{m}");
    assert!(!m.contains("example.net."), "{m}");
    assert_eq!(zone_queries(&m, "example.com."), Some(1.0));
    assert_eq!(value(&m, "weir_last_reload_success"), Some(1.0));
    let after_good = value(&m, "weir_last_reload_timestamp_seconds").unwrap();
    assert!(after_good >= at_start, "{after_good} < {at_start}");
    let r = s.udp(&query("www.example.net.", RecordType::A)).await;
    assert_eq!(rcode(&r), ResponseCode::Refused);
    s.udp(&query("www.example.com.", RecordType::A)).await;
    let m = s.metrics();
    assert_eq!(zone_queries(&m, "example.com."), Some(2.0));
    assert_eq!(zone_queries(&m, "none"), Some(1.0));

    // A failed reload: success drops to 0 with a new timestamp, and the zones serve on.
    std::fs::write(
        &path,
        without_net.replace("[admin]", "[log]\nquery_sample = 2\n[admin]"),
    )
    .unwrap();
    assert_eq!(reload(admin).await, 422);
    let m = s.metrics();
    assert_eq!(value(&m, "weir_last_reload_success"), Some(0.0), "{m}");
    let after_failed = value(&m, "weir_last_reload_timestamp_seconds").unwrap();
    assert!(after_failed >= after_good, "{after_failed} < {after_good}");
    assert!(value(&m, "weir_reloads_total{result=\"failed\"}") == Some(1.0));
    s.udp(&query("www.example.com.", RecordType::A)).await;
    assert_eq!(zone_queries(&s.metrics(), "example.com."), Some(3.0));

    // Putting example.net. back brings its series back, from zero.
    std::fs::write(&path, &config).unwrap();
    assert_eq!(reload(admin).await, 200);
    let m = s.metrics();
    assert_eq!(value(&m, "weir_last_reload_success"), Some(1.0));
    assert_eq!(zone_queries(&m, "example.net."), Some(0.0), "{m}");
    assert_eq!(zone_queries(&m, "example.com."), Some(3.0));
    s.stop().await;
}

/// Writes a config for the real binary (JSON logs) serving example.com. and starts it.
fn weir_with_log(dir: &std::path::Path, log: &str) -> WeirProcess {
    std::fs::write(dir.join("example.com.zone"), COM).unwrap();
    let config = dir.join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n{log}\n[[zone]]\norigin = \"example.com.\"\nfile = \"example.com.zone\"\n"
        ),
    )
    .unwrap();
    WeirProcess::start(&config, &[]).unwrap()
}

#[tokio::test]
async fn the_query_log_at_full_sample_logs_each_query_with_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let weir = weir_with_log(dir.path(), "query_sample = 1.0");
    let dns = weir.dns;
    let udp = |name: &str, t: RecordType| {
        let q = query(name, t).to_vec().unwrap();
        async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            socket.send_to(&q, dns).await.unwrap();
            let mut buf = vec![0u8; 4096];
            tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
        }
    };
    udp("WWW.Example.COM.", RecordType::A).await;
    udp("nope.example.com.", RecordType::from(65280)).await;
    let refused = query("www.example.org.", RecordType::MX).to_vec().unwrap();
    let replies = tcp_pipeline(dns, &[refused]).await;
    assert_eq!(rcode(&replies[0]), ResponseCode::Refused);

    let (lines, weir) =
        tokio::task::spawn_blocking(move || (query_lines(&weir, 3, Duration::from_secs(5)), weir))
            .await
            .unwrap();
    let field = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let got: Vec<[String; 6]> = lines
        .iter()
        .map(|v| {
            assert_eq!(v["message"], "query", "{v}");
            ["client", "qname", "qtype", "rcode", "transport", "zone"].map(|k| field(v, k))
        })
        .collect();
    let want = [
        [
            "127.0.0.1",
            "www.example.com.",
            "A",
            "NOERROR",
            "udp",
            "example.com.",
        ],
        [
            "127.0.0.1",
            "nope.example.com.",
            "TYPE65280",
            "NXDOMAIN",
            "udp",
            "example.com.",
        ],
        [
            "127.0.0.1",
            "www.example.org.",
            "MX",
            "REFUSED",
            "tcp",
            "none",
        ],
    ]
    .map(|row| row.map(String::from));
    assert_eq!(got, want);

    let (status, metrics) = http_get(weir.admin.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(value(&metrics, "weir_query_log_dropped_total"), Some(0.0));
}

#[tokio::test]
async fn the_query_log_logs_the_configured_fraction_and_nothing_when_off() {
    let dir = tempfile::tempdir().unwrap();
    let weir = weir_with_log(dir.path(), "query_sample = 0.25");
    let n = 4000;
    let q = query("www.example.com.", RecordType::A).to_vec().unwrap();
    let replies = tcp_pipeline(weir.dns, &vec![q.clone(); n]).await;
    assert_eq!(replies.len(), n);
    let lines = tokio::task::spawn_blocking(move || query_lines(&weir, n, Duration::from_secs(2)))
        .await
        .unwrap();
    // Expected 1000 with a standard deviation of ~27.
    assert!((850..=1150).contains(&lines.len()), "{} lines", lines.len());

    // Off (the default): queries, then a reload, whose log line comes after anything the
    // queries could have logged.
    let dir = tempfile::tempdir().unwrap();
    let weir = weir_with_log(dir.path(), "");
    tcp_pipeline(weir.dns, &vec![q; 100]).await;
    weir.signal(libc::SIGHUP);
    let seen = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in weir.log.iter() {
            let reloaded = line.contains("reloaded");
            seen.push(line);
            if reloaded {
                break;
            }
        }
        seen
    })
    .await
    .unwrap();
    assert!(seen.last().unwrap().contains("reloaded"), "{seen:?}");
    assert!(!seen.iter().any(|l| l.contains("weir::query")), "{seen:#?}");
}

#[test]
fn query_sample_out_of_range_is_refused_at_its_line_and_key_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("example.com.zone"), COM).unwrap();
    for (value, shown) in [("1.5", "1.5"), ("-0.5", "-0.5")] {
        let config = dir.path().join("weir.toml");
        std::fs::write(
            &config,
            format!("[log]\nquery_sample = {value}\n[[zone]]\norigin = \"example.com.\"\nfile = \"example.com.zone\"\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .env_remove("WEIR_CONFIG")
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{err}");
        let want = format!(
            "{}:2: log.query_sample: {shown} is out of range 0.0..=1.0",
            config.display()
        );
        assert!(err.contains(&want), "{err}");
    }
}
