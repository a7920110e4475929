//! Measured cache convergence over real sockets: resolvers on distinct loopback addresses (and
//! one sending ECS) query a pool, an admin weight change is published, some resolvers come
//! back; the API, `weir ctl` and the metrics report the volume-weighted share and the silent
//! ones, then 1.0 and a convergence time once the rest return. Every wait polls weir's own
//! status; nothing is timed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, UdpSocket};

use crate::support::*;

const ZONE: &str =
    "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n";
const POOL: &str = "[[pool]]\nname = \"app.example.com.\"\nttl = 30\n[[pool.group]]\nname = \"blue\"\nweight = 90\nendpoints = [{ address = \"192.0.2.10\" }]\n[[pool.group]]\nname = \"green\"\nweight = 10\nendpoints = [{ address = \"192.0.2.20\" }]\n";
const PATH: &str = "/v1/pools/app.example.com./convergence";

/// A resolver: the loopback address it sends from and the ECS subnet it sends, if any.
#[derive(Clone, Copy)]
struct Resolver {
    from: &'static str,
    ecs: Option<&'static str>,
}

const BIG: Resolver = Resolver {
    from: "127.0.1.1",
    ecs: None,
};
const MEDIUM: Resolver = Resolver {
    from: "127.0.2.1",
    ecs: None,
};
const SMALL: Resolver = Resolver {
    from: "127.0.3.1",
    ecs: None,
};
const TINY: Resolver = Resolver {
    from: "127.1.0.1",
    ecs: None,
};
/// Same source /24 as BIG, but on behalf of a client subnet: a resolver of its own.
const ECS: Resolver = Resolver {
    from: "127.0.1.2",
    ecs: Some("198.51.100.0"),
};

fn question(r: Resolver) -> Vec<u8> {
    let mut m = query("app.example.com.", RecordType::A);
    if let Some(subnet) = r.ecs {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                subnet.parse().unwrap(),
                24,
                0,
            )));
        m.set_edns(edns);
    }
    m.to_vec().unwrap()
}

/// `n` queries over UDP from the resolver's address, each answered before the next.
async fn ask_udp(dns: SocketAddr, r: Resolver, n: usize) {
    let from: IpAddr = r.from.parse().unwrap();
    let socket = UdpSocket::bind((from, 0)).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for _ in 0..n {
        socket.send_to(&question(r), dns).await.unwrap();
        let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let reply = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(reply.answers.len(), 1, "{reply:?}");
    }
}

/// One query over TCP from the resolver's address (TCP tasks share one table).
async fn ask_tcp(dns: SocketAddr, r: Resolver) {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(r.from.parse().unwrap(), 0))
        .unwrap();
    let mut stream = socket.connect(dns).await.unwrap();
    let reply = Message::from_vec(&tcp_exchange(&mut stream, &question(r)).await.unwrap()).unwrap();
    assert_eq!(reply.answers.len(), 1, "{reply:?}");
}

async fn convergence(admin: SocketAddr) -> Value {
    let (status, body) = http_maybe(admin, Method::GET, PATH, None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `path` until `done` holds for its body (at most 20 s); returns the body.
async fn poll(admin: SocketAddr, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, body) = http_maybe(admin, Method::GET, path, None).await.unwrap();
        assert_eq!(status, 200, "{body}");
        last = body;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: never happened; last status {last}");
}

/// Polls the API until `done` holds for the pool's change; returns the change.
async fn wait_for(admin: SocketAddr, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let body = poll(admin, PATH, what, |b| {
        !b["change"].is_null() && done(&b["change"])
    })
    .await;
    body["change"].clone()
}

fn silent(change: &Value) -> Vec<(String, u64)> {
    change["silent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["prefix"].as_str().unwrap().to_string(),
                s["queries"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn refetched_share_silent_resolvers_and_convergence_time() {
    let s = Server::serving(ZONE, POOL).await;
    let (dns, admin) = (s.addr, s.admin());

    // Before any change: nothing to report. Unknown pools are 404.
    let body = convergence(admin).await;
    assert_eq!(body["tracking"], true);
    assert_eq!(body["change"], Value::Null);
    let (status, _) = http_maybe(
        admin,
        Method::GET,
        "/v1/pools/nope.example.com./convergence",
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 404);

    // Volumes in the window before the change: 10, 5, 3, 2 and 4 (ECS): 24 queries.
    for (r, n) in [(BIG, 10), (MEDIUM, 5), (SMALL, 3), (TINY, 2), (ECS, 4)] {
        ask_udp(dns, r, n).await;
    }

    let (status, body) = http_maybe(
        admin,
        Method::PUT,
        "/v1/pools/app.example.com./groups/green/weight",
        Some(json!({ "weight": 50 })),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let published = weir::clock::now_ms();

    // BIG and ECS come back over UDP, SMALL over TCP: (10 + 4 + 3) / 24.
    ask_udp(dns, BIG, 1).await;
    ask_udp(dns, ECS, 2).await;
    ask_tcp(dns, SMALL).await;
    let change = wait_for(admin, "three resolvers back", |c| {
        c["resolvers_refetched"] == 3 && c["queries_before"] == 24
    })
    .await;
    assert!(
        (change["refetched"].as_f64().unwrap() - 17.0 / 24.0).abs() < 1e-9,
        "{change}"
    );
    assert_eq!(change["resolvers_before"], 5, "{change}");
    assert_eq!(
        silent(&change),
        [
            ("127.0.2.0/24".to_string(), 5),
            ("127.1.0.0/24".to_string(), 2)
        ]
    );
    assert_eq!(change["converged_after_ms"], Value::Null, "{change}");
    assert_eq!(change["window_ms"], 60_000);
    // The change is dated by its publication, which the admin reply followed.
    let changed_at = change["changed_at_ms"].as_u64().unwrap();
    assert!(changed_at <= published, "{changed_at} > {published}");
    let metrics = s.metrics();
    let ratio = metrics
        .lines()
        .find(|l| l.starts_with("weir_pool_refetched_ratio{pool=\"app.example.com.\"}"))
        .unwrap_or_else(|| panic!("no ratio in\n{metrics}"));
    let value: f64 = ratio.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value < 0.99, "{ratio}");

    let table = crate::ctl::ok(&s, &["convergence", "app.example.com."]).await;
    assert!(
        table.contains("70.8% of 24 queries; 3 of 5 resolvers"),
        "{table}"
    );
    assert!(
        crate::ctl::row(&table, &["127.0.2.0/24", "5"]).is_some(),
        "{table}"
    );

    // The rest come back: converged, with a time.
    ask_udp(dns, MEDIUM, 1).await;
    ask_udp(dns, TINY, 1).await;
    let change = wait_for(admin, "convergence", |c| !c["converged_after_ms"].is_null()).await;
    assert_eq!(change["refetched"], 1.0, "{change}");
    assert_eq!(silent(&change), []);
    assert_eq!(change["changed_at_ms"].as_u64(), Some(changed_at));
    let json: Value = serde_json::from_str(
        &crate::ctl::ok(&s, &["--json", "convergence", "app.example.com."]).await,
    )
    .unwrap();
    assert_eq!(
        json["change"]["converged_after_ms"],
        change["converged_after_ms"]
    );
    let metrics = s.metrics();
    assert!(
        metrics.contains("weir_pool_refetched_ratio{pool=\"app.example.com.\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_pool_convergence_seconds{pool=\"app.example.com.\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_convergence_dropped_total 0\n"),
        "{metrics}"
    );
    s.stop().await;
}

/// A server of `POOL` with `track_convergence = false`.
async fn untracked() -> Server {
    Server::builder()
        .zone("example.com.", ZONE)
        .dns("track_convergence = false")
        .pools(POOL)
        .start()
        .await
}

#[tokio::test]
async fn tracking_can_be_turned_off() {
    let s = untracked().await;
    ask_udp(s.addr, BIG, 1).await;
    let body = convergence(s.admin()).await;
    assert_eq!(body["tracking"], false);
    assert_eq!(body["change"], Value::Null);
    let out = crate::ctl::ok(&s, &["convergence", "app.example.com."]).await;
    assert!(out.contains("tracking is off"), "{out}");
    s.stop().await;
}

const ROLLOUT: &str = "/v1/pools/app.example.com./rollout";

/// Polls the rollout status until `done` holds (at most 20 s).
async fn wait_rollout(admin: SocketAddr, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    poll(admin, ROLLOUT, what, done).await
}

#[tokio::test]
async fn a_rollout_gated_on_convergence_waits_for_resolvers_and_pauses_past_its_timeout() {
    // TTL 1, slack 0: the start settles 2 s after it is published; then the step waits until
    // 99% of the volume came back, and pauses 2 s after settling if it has not.
    let fast = POOL.replace("ttl = 30", "ttl = 1");
    let s = Server::serving(ZONE, &fast).await;
    let (dns, admin) = (s.addr, s.admin());
    let plan = json!({
        "from": "blue", "to": "green", "slack": "0s", "converged": 0.99, "converge_timeout": "2s",
        "steps": [{ "set_weight": 50 }, { "pause": "manual" }],
    });
    let (status, body) = http_maybe(
        admin,
        Method::POST,
        "/v1/pools/app.example.com./rollouts",
        Some(json!({ "converged": 1.5, "from": "blue", "to": "green", "steps": [{ "set_weight": 5 }] })),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "a share above 1 is refused: {body}");
    assert!(body.to_string().contains("converged"), "{body}");

    ask_udp(dns, BIG, 8).await;
    ask_udp(dns, MEDIUM, 2).await;
    let (status, body) = http_maybe(
        admin,
        Method::POST,
        "/v1/pools/app.example.com./rollouts",
        Some(plan),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // Nobody came back: past settling plus the timeout the rollout pauses with the reason, and
    // the status names the silent resolvers.
    let held = wait_rollout(admin, "a pause for convergence", |st| {
        st["state"] == "paused"
    })
    .await;
    assert_eq!(held["weight"], 0, "{held}");
    assert!(
        held["hold"]
            .as_str()
            .is_some_and(|h| h.starts_with("cache convergence: 0.0%")),
        "{held}"
    );
    assert_eq!(held["convergence"]["refetched"], 0.0, "{held}");
    assert_eq!(
        silent(&held["convergence"]),
        [
            ("127.0.1.0/24".to_string(), 8),
            ("127.0.2.0/24".to_string(), 2)
        ]
    );
    let out = crate::ctl::ok(&s, &["rollout", "status", "app.example.com"]).await;
    assert!(
        out.contains(
            "caches      0.0% re-fetched (gate 99%); silent: 127.0.1.0/24 (8), 127.0.2.0/24 (2)"
        ),
        "{out}"
    );
    assert!(
        out.contains("state       paused: cache convergence"),
        "{out}"
    );

    // The big one comes back: 80% is still short of the gate.
    ask_udp(dns, BIG, 1).await;
    wait_rollout(admin, "80% re-fetched", |st| {
        st["convergence"]["refetched"]
            .as_f64()
            .is_some_and(|r| r >= 0.79)
    })
    .await;
    // Everyone is back: resumed, the step runs.
    ask_udp(dns, MEDIUM, 1).await;
    wait_rollout(admin, "100% re-fetched", |st| {
        st["convergence"]["refetched"] == 1.0
    })
    .await;
    let (status, body) = http_maybe(admin, Method::POST, &format!("{ROLLOUT}/resume"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let st = wait_rollout(admin, "the step to 50%", |st| st["weight"] == 50).await;
    assert_eq!(st["hold"], Value::Null, "{st}");
    s.stop().await;
}

#[tokio::test]
async fn a_plan_gated_on_convergence_is_refused_when_tracking_is_off() {
    let s = untracked().await;
    let (status, body) = http_maybe(
        s.admin(),
        Method::POST,
        "/v1/pools/app.example.com./rollouts",
        Some(json!({ "from": "blue", "to": "green", "converged": 0.99, "steps": [{ "set_weight": 5 }] })),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("track_convergence"), "{body}");
    s.stop().await;
}
