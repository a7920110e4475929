//! Routing rules (issue 15) against a real server: `.mmdb` databases written by the test
//! (`mmdb.rs`, documentation prefixes only), queries with and without ECS over real sockets,
//! failover to a fallback pool against a real TCP backend, a canary inside one region, the
//! admin API's view and preview, and reloads that swap rules and databases.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use reqwest::Method;
use serde_json::Value;

use crate::backends::Backend;
use crate::mmdb::{Value as Db, build};
use crate::support::*;

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 300\n@ NS ns1\nns1 A 192.0.2.53\n";

/// The geography database of these tests: documentation prefixes in four places.
fn geo_db() -> Vec<u8> {
    let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
    build(
        "GeoLite2-City",
        &[
            (v4("198.51.100.0"), 24, Db::geo("EU", "DE", Some("BE"))),
            (v4("203.0.113.0"), 24, Db::geo("NA", "US", Some("CA"))),
            (v4("192.0.2.0"), 24, Db::geo("OC", "AU", None)),
            (v4("2001:db8::"), 32, Db::geo("EU", "FR", None)),
        ],
    )
}

/// The ASN database: one network.
fn asn_db() -> Vec<u8> {
    build(
        "GeoLite2-ASN",
        &[(
            "192.0.2.128".parse().unwrap(),
            25,
            Db::asn(64501, "Example Transit"),
        )],
    )
}

/// Writes both databases into `dir` and returns the `[geo]` table naming them.
fn databases(dir: &Path) -> String {
    std::fs::write(dir.join("geo.mmdb"), geo_db()).unwrap();
    std::fs::write(dir.join("asn.mmdb"), asn_db()).unwrap();
    format!(
        "[geo]\ndatabase = {:?}\nasn_database = {:?}\n",
        dir.join("geo.mmdb").display().to_string(),
        dir.join("asn.mmdb").display().to_string()
    )
}

/// A pool `label` of www.example.com. with one endpoint and its own extra keys.
fn pool(label: &str, address: &str, extra: &str) -> String {
    format!(
        "[[route.pool]]\nname = \"{label}\"\nttl = 30\n{extra}\n[[route.pool.group]]\nname = \"main\"\nendpoints = [{{ address = \"{address}\" }}]\n"
    )
}

/// Every rule kind, in order: a subnet table with a nested /25, an ASN, a subdivision, a
/// continent, a country, the source address 127.0.0.2, and the catch-all.
fn every_kind(dir: &Path) -> String {
    format!(
        r#"{geo}
[[route]]
name = "www.example.com."
[[route.rule]]
pool = "eu"
subnets = ["198.51.100.0/24", "127.0.0.2/32"]
countries = ["DE"]
[[route.rule]]
pool = "us"
subnets = ["198.51.100.128/25"]
[[route.rule]]
pool = "transit"
asns = [64501]
[[route.rule]]
pool = "ca"
subdivisions = ["US-CA"]
[[route.rule]]
pool = "oc"
continents = ["OC"]
[[route.rule]]
pool = "fr"
countries = ["FR"]
[[route.rule]]
pool = "us"
{eu}{us}{transit}{ca}{oc}{fr}"#,
        geo = databases(dir),
        eu = pool("eu", "192.0.2.10", ""),
        us = pool("us", "192.0.2.20", ""),
        transit = pool("transit", "192.0.2.30", ""),
        ca = pool("ca", "192.0.2.40", ""),
        oc = pool("oc", "192.0.2.50", ""),
        fr = pool("fr", "2001:db8::60", ""),
    )
}

/// The addresses answered and the ECS scope echoed, for `subnet`.
async fn ask(s: &Server, rtype: RecordType, subnet: &str) -> (Vec<String>, Option<u8>) {
    let r = s
        .udp(&with_ecs(query("www.example.com.", rtype), subnet))
        .await;
    assert_eq!(
        rcode(&r),
        hickory_proto::op::ResponseCode::NoError,
        "{subnet}"
    );
    let addrs = r
        .answers
        .iter()
        .filter_map(|a| a.data.ip_addr())
        .map(|a| a.to_string())
        .collect();
    (addrs, ecs_scope(&r))
}

/// One UDP query for www.example.com. A from `source` (no ECS): the addresses answered and
/// whether the reply carried an ECS option.
async fn ask_from(s: &Server, source: Ipv4Addr) -> (Vec<String>, bool) {
    let socket = tokio::net::UdpSocket::bind((source, 0)).await.unwrap();
    let q = with_edns(query("www.example.com.", RecordType::A), 1232);
    socket.send_to(&q.to_vec().unwrap(), s.addr).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let r = Message::from_vec(&buf[..n]).unwrap();
    let addrs = r
        .answers
        .iter()
        .filter_map(|a| a.data.ip_addr())
        .map(|a| a.to_string())
        .collect();
    (addrs, ecs_scope(&r).is_some())
}

async fn api(s: &Server, path: &str) -> Value {
    let (code, body) = http(s.admin(), Method::GET, path, &[], None).await;
    assert_eq!(code, 200, "{path}: {body}");
    body
}

#[tokio::test]
async fn each_rule_kind_selects_its_pool_with_the_deciding_prefix_as_scope() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::serving(ZONE, &every_kind(dir.path())).await;
    // (ECS subnet, answer, scope). The subnet table decides first, longest prefix winning; the
    // scope is the prefix over which the answer holds: the /24 query gets eu, but only the
    // lower /25 is eu, so the scope is 25.
    let cases = [
        ("198.51.100.0/24", "192.0.2.10", 25),
        ("198.51.100.0/25", "192.0.2.10", 25),
        ("198.51.100.128/25", "192.0.2.20", 25),
        ("198.51.100.200/32", "192.0.2.20", 25),
        // ASN 64501 covers 192.0.2.128/25 only; the rest of 192.0.2.0/24 is Oceania. The
        // ASN database's network (the /25) is the finer one, so both scopes are 25.
        ("192.0.2.128/25", "192.0.2.30", 25),
        ("192.0.2.0/24", "192.0.2.50", 25),
        // US-CA from the geography database: its network is the /24.
        ("203.0.113.0/24", "192.0.2.40", 24),
    ];
    for (subnet, want, scope) in cases {
        let (addrs, got_scope) = ask(&s, RecordType::A, subnet).await;
        assert_eq!(addrs, [want], "{subnet}");
        assert_eq!(got_scope, Some(scope), "scope for {subnet}");
    }
    // IPv6: France, by country, through the IPv6 side of the same database.
    let (addrs, scope) = ask(&s, RecordType::AAAA, "2001:db8:1::/48").await;
    assert_eq!(addrs, ["2001:db8::60"]);
    assert_eq!(scope, Some(32), "the database's /32 decides");
    // Matching nothing: the catch-all (us).
    let (addrs, _) = ask(&s, RecordType::A, "100.64.0.0/24").await;
    assert_eq!(addrs, ["192.0.2.20"]);

    // Without ECS the source address decides, and no ECS option is echoed.
    assert_eq!(
        ask_from(&s, Ipv4Addr::new(127, 0, 0, 2)).await,
        (vec!["192.0.2.10".to_string()], false)
    );
    assert_eq!(
        ask_from(&s, Ipv4Addr::new(127, 0, 0, 1)).await,
        (vec!["192.0.2.20".to_string()], false)
    );

    // Every rule's queries are counted, under the pool it selected.
    let m = s.metrics();
    for (rule, pool, n) in [
        (1, "eu", 3),
        (2, "us", 2),
        (3, "transit", 1),
        (4, "ca", 1),
        (5, "oc", 1),
        (6, "fr", 1),
        (7, "us", 2),
    ] {
        let line = format!(
            "weir_route_queries_total{{name=\"www.example.com.\",pool=\"{pool}@www.example.com.\",rule=\"{rule}\"}} {n}"
        );
        assert!(m.contains(&line), "missing {line} in\n{m}");
    }
    let routes = api(&s, "/v1/routes").await;
    let route = &routes["routes"][0];
    assert_eq!(route["name"], "www.example.com.");
    assert_eq!(
        route["rules"][0]["subnets"],
        serde_json::json!(["198.51.100.0/24", "127.0.0.2/32"])
    );
    assert_eq!(route["rules"][0]["countries"], serde_json::json!(["DE"]));
    assert_eq!(route["rules"][0]["queries"], 3);
    assert_eq!(route["rules"][6]["catch_all"], true);
    let us = route["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == "us@www.example.com.")
        .unwrap();
    assert_eq!(us["queries"], 4, "rules 2 and 7 select us: {us}");
    assert_eq!(routes["databases"][0]["type"], "GeoLite2-City");
    assert_eq!(routes["databases"][1]["type"], "GeoLite2-ASN");
    s.stop().await;
}

#[tokio::test]
async fn preview_names_the_rule_pool_scope_and_answer_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::serving(ZONE, &every_kind(dir.path())).await;
    let p = api(
        &s,
        "/v1/routes/www.example.com./preview?ecs=198.51.100.0/24",
    )
    .await;
    assert_eq!(
        (
            p["rule"].as_u64(),
            p["pool"].as_str(),
            p["ecs_scope"].as_u64()
        ),
        (Some(1), Some("eu@www.example.com."), Some(25)),
        "{p}"
    );
    assert_eq!(
        p["preview"]["endpoints"],
        serde_json::json!([["192.0.2.10", 1.0]])
    );
    let p = api(&s, "/v1/routes/www.example.com./preview?client=203.0.113.7").await;
    assert_eq!(
        (p["rule"].as_u64(), p["pool"].as_str()),
        (Some(4), Some("ca@www.example.com.")),
        "{p}"
    );
    // A proposed failure of the chosen pool's only endpoint: its on_all_down (serve-all).
    let p = api(
        &s,
        "/v1/routes/www.example.com./preview?client=203.0.113.7&down=192.0.2.40",
    )
    .await;
    assert_eq!(p["preview"]["degraded"], true, "{p}");
    for (query, code) in [
        ("", 400),
        ("?client=nope", 400),
        ("?ecs=198.51.100.1/24", 400),
    ] {
        let path = format!("/v1/routes/www.example.com./preview{query}");
        let (got, body) = http(s.admin(), Method::GET, &path, &[], None).await;
        assert_eq!(got, code, "{path}: {body}");
    }
    let (code, _) = http(
        s.admin(),
        Method::GET,
        "/v1/routes/app.example.com./preview?client=192.0.2.1",
        &[],
        None,
    )
    .await;
    assert_eq!(code, 404);
    s.stop().await;
}

/// Two regions: eu (checked against a real TCP backend, falling back to us; a 1 s TTL, so a
/// rollout's first step settles in 2 s) and us.
fn two_regions(backend: SocketAddr, eu_groups: &str) -> String {
    format!(
        r#"[[route]]
name = "www.example.com."
[[route.rule]]
pool = "eu"
subnets = ["198.51.100.0/24"]
[[route.rule]]
pool = "us"
[[route.pool]]
name = "eu"
ttl = 1
on_all_down = "fallback:us"
[route.pool.check]
kind = "tcp"
interval = "200ms"
timeout = "100ms"
rise = 2
fall = 1
{eu_groups}
[[route.pool]]
name = "us"
ttl = 30
[[route.pool.group]]
name = "main"
endpoints = [{{ address = "192.0.2.20" }}]
"#,
    )
    .replace("PROBE", &backend.to_string())
}

/// Polls until `subnet`'s clients get `want` (one query a try), for at most 10 s.
async fn until(s: &Server, subnet: &str, want: &[&str]) {
    for _ in 0..200 {
        if ask(s, RecordType::A, subnet).await.0 == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{subnet} never got {want:?}; last {:?}",
        ask(s, RecordType::A, subnet).await
    );
}

#[tokio::test]
async fn a_region_all_down_falls_back_and_returns() {
    let mut backend = Backend::tcp().await;
    let eu = "[[route.pool.group]]\nname = \"main\"\nendpoints = [{ address = \"192.0.2.10\", probe = \"PROBE\" }]\n";
    let s = Server::serving(ZONE, &two_regions(backend.addr(), eu)).await;
    until(&s, "198.51.100.0/24", &["192.0.2.10"]).await;
    backend.stop().await;
    // eu has nothing up: its fallback, us, answers eu's clients (with the degraded TTL).
    until(&s, "198.51.100.0/24", &["192.0.2.20"]).await;
    let route = api(&s, "/v1/routes/www.example.com.").await;
    let eu = &route["pools"][0];
    assert_eq!(
        (eu["pool"].as_str(), eu["up"].as_u64()),
        (Some("eu@www.example.com."), Some(0)),
        "{route}"
    );
    assert_eq!(eu["status"]["ipv4"]["degraded"], true);
    backend.start().await;
    until(&s, "198.51.100.0/24", &["192.0.2.10"]).await;
    // us clients never moved.
    assert_eq!(
        ask(&s, RecordType::A, "203.0.113.0/24").await.0,
        ["192.0.2.20"]
    );
    s.stop().await;
}

#[tokio::test]
async fn a_canary_inside_one_region_moves_only_that_region() {
    let backend = Backend::tcp().await;
    let eu = "[[route.pool.group]]\nname = \"stable\"\nweight = 100\nendpoints = [{ address = \"192.0.2.10\", probe = \"PROBE\" }]\n[[route.pool.group]]\nname = \"canary\"\nweight = 0\nendpoints = [{ address = \"192.0.2.11\", probe = \"PROBE\" }]\n";
    let s = Server::serving(ZONE, &two_regions(backend.addr(), eu)).await;
    let plan = r#"{"from": "stable", "to": "canary", "steps": [{"set_weight": 100}], "slack": "0s", "reason": "eu canary"}"#;
    let (code, body) = http(
        s.admin(),
        Method::POST,
        "/v1/pools/eu@www.example.com./rollouts",
        &[],
        Some(plan),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    until(&s, "198.51.100.0/24", &["192.0.2.11"]).await;
    assert_eq!(
        ask(&s, RecordType::A, "203.0.113.0/24").await.0,
        ["192.0.2.20"],
        "us is untouched"
    );
    let (code, st) = http(
        s.admin(),
        Method::GET,
        "/v1/pools/eu@www.example.com./rollout",
        &[],
        None,
    )
    .await;
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["pool"], "eu@www.example.com.");
    let audit = api(&s, "/v1/audit?pool=eu@www.example.com.&limit=5").await;
    assert!(
        audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["pool"] == "eu@www.example.com."),
        "{audit}"
    );
    // A weight change addresses the pool inside the name the same way.
    let (code, body) = http(
        s.admin(),
        Method::PUT,
        "/v1/pools/us@www.example.com./groups/main/weight",
        &[],
        Some(r#"{"weight": 0}"#),
    )
    .await;
    assert_eq!(code, 409, "the only group of us cannot go to 0: {body}");
    s.stop().await;
}

#[tokio::test]
async fn a_reload_swaps_rules_and_databases_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::serving(ZONE, &every_kind(dir.path())).await;
    assert_eq!(
        ask(&s, RecordType::A, "203.0.113.0/24").await.0,
        ["192.0.2.40"]
    );
    // New data in the geography database (203.0.113.0/24 is now Oceania), and a new rule
    // order, in one reload.
    let moved = build(
        "GeoLite2-City",
        &[(
            "203.0.113.0".parse().unwrap(),
            24,
            Db::geo("OC", "NZ", None),
        )],
    );
    std::fs::write(dir.path().join("geo.mmdb.new"), moved).unwrap();
    std::fs::rename(dir.path().join("geo.mmdb.new"), dir.path().join("geo.mmdb")).unwrap();
    let (code, body) = http(s.admin(), Method::POST, "/v1/reload", &[], None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        ask(&s, RecordType::A, "203.0.113.0/24").await.0,
        ["192.0.2.50"],
        "now Oceania"
    );
    // A database that disappears fails the reload, and the old rules and data keep serving.
    std::fs::remove_file(dir.path().join("asn.mmdb")).unwrap();
    let (code, body) = http(s.admin(), Method::POST, "/v1/reload", &[], None).await;
    assert_ne!(code, 200, "{body}");
    assert!(body.to_string().contains("asn.mmdb"), "{body}");
    assert_eq!(
        ask(&s, RecordType::A, "192.0.2.128/25").await.0,
        ["192.0.2.30"],
        "the old ASN data serves"
    );
    s.stop().await;
}

#[test]
fn weir_check_names_each_routing_mistake_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("z.zone"), ZONE).unwrap();
    std::fs::write(dir.path().join("asn.mmdb"), asn_db()).unwrap();
    let config = r#"[[zone]]
origin = "example.com."
file = "z.zone"
[geo]
database = "missing.mmdb"
asn_database = "asn.mmdb"
[[route]]
name = "www.example.com."
[[route.rule]]
pool = "eu"
countries = ["XX", "DE"]
subnets = ["198.51.100.0/24"]
[[route.rule]]
pool = "us"
subnets = ["198.51.100.0/24"]
countries = ["DE"]
[[route.rule]]
pool = "asia"
[[route.pool]]
name = "eu"
[[route.pool.group]]
name = "main"
endpoints = [{ address = "192.0.2.10" }]
[[route.pool]]
name = "us"
[[route.pool.group]]
name = "main"
endpoints = [{ address = "192.0.2.20" }]
"#;
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display();
    for want in [
        format!("{file}:5: geo.database: "),
        format!("{file}:11: route[0].rule[0].countries: `XX` is not an ISO 3166-1 country code"),
        format!("{file}:15: route[0].rule[1].subnets: 198.51.100.0/24 is already in rule[0]"),
        format!("{file}:16: route[0].rule[1].countries: DE is already in rule[0]"),
        format!(
            "{file}:18: route[0].rule[2].pool: pool `asia` is not one of this route's [[route.pool]]s"
        ),
    ] {
        assert!(err.contains(&want), "missing {want:?} in\n{err}");
    }
    assert!(err.contains("missing.mmdb"), "{err}");
}
