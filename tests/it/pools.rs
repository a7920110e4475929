//! Managed names over real sockets: weighted split, distinct answers, stickiness with ECS, the
//! failure policies, and the metrics that show the split.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::*;

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\napp TXT \"managed\"\n";

async fn server(pools: &str) -> Server {
    Server::serving(ZONE, pools).await
}

fn split(blue: u32, green: u32, extra: &str) -> String {
    format!(
        "[[pool]]\nname = \"app.example.com.\"\n{extra}\n[[pool.group]]\nname = \"blue\"\nweight = {blue}\nendpoints = [{{ address = \"192.0.2.10\" }}, {{ address = \"192.0.2.11\" }}]\n[[pool.group]]\nname = \"green\"\nweight = {green}\nendpoints = [{{ address = \"192.0.2.20\" }}]\n"
    )
}

fn addresses(msg: &hickory_proto::op::Message) -> Vec<String> {
    msg.answers.iter().map(|r| r.data.to_string()).collect()
}

#[tokio::test]
async fn split_holds_over_100k_queries_on_the_wire() {
    for (blue, green, tolerance) in [(90u32, 10u32, 0.005), (99, 1, 0.002)] {
        let s = server(&split(blue, green, "")).await;
        let q = query("app.example.com.", RecordType::A).to_vec().unwrap();
        let mut green_answers = 0usize;
        let n = 100_000;
        for chunk in 0..(n / 5000) {
            let replies = tcp_pipeline(s.addr, &vec![q.clone(); 5000]).await;
            for r in &replies {
                assert!(r.metadata.authoritative);
                assert_eq!(r.answers.len(), 1, "chunk {chunk}");
                assert_eq!(r.answers[0].ttl, 30);
                if addresses(r) == ["192.0.2.20"] {
                    green_answers += 1;
                }
            }
        }
        let share = green_answers as f64 / n as f64;
        let want = f64::from(green) / 100.0;
        assert!(
            (share - want).abs() <= tolerance,
            "{blue}/{green}: green share {share}"
        );
        // The observed split is visible in metrics.
        let m = s.metrics();
        let line = format!(
            "weir_pool_answers_total{{endpoint=\"192.0.2.20\",group=\"green\",pool=\"app.example.com.\"}} {green_answers}"
        );
        assert!(m.contains(&line), "{line} not in metrics");
        s.stop().await;
    }
}

#[tokio::test]
async fn static_data_beside_a_pool_and_nodata_for_a_missing_family() {
    let s = server(&split(50, 50, "answers = 2")).await;
    for t in Transport::BOTH {
        let r = s.ask(t, &query("app.example.com.", RecordType::A)).await;
        let a = addresses(&r);
        assert_eq!(a.len(), 2, "{t}");
        assert_ne!(a[0], a[1], "{t}: distinct endpoints");
        let r = s.ask(t, &query("app.example.com.", RecordType::AAAA)).await;
        assert_eq!(rcode(&r), ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(
            r.authorities[0].record_type(),
            RecordType::SOA,
            "NODATA with SOA"
        );
        let r = s.ask(t, &query("app.example.com.", RecordType::TXT)).await;
        assert_eq!(lines(&r.answers), ["app.example.com. TXT managed"]);
    }
    s.stop().await;
}

fn ecs(addr: Ipv4Addr, prefix: u8) -> hickory_proto::op::Message {
    with_ecs(
        query("app.example.com.", RecordType::A),
        &format!("{addr}/{prefix}"),
    )
}

#[tokio::test]
async fn client_subnet_stickiness_and_scope() {
    let s = server(&split(50, 50, "sticky = \"client-subnet\"")).await;
    let mut per_subnet: HashMap<u8, Vec<String>> = HashMap::new();
    for subnet in 0..64u8 {
        for host in [1u8, 77, 254] {
            let r = s.udp(&ecs(Ipv4Addr::new(198, 51, subnet, host), 32)).await;
            assert_eq!(ecs_scope(&r), Some(24), "scope = the /24 actually used");
            let a = addresses(&r);
            let first = per_subnet.entry(subnet).or_insert_with(|| a.clone());
            assert_eq!(*first, a, "same /24, same answer");
        }
    }
    let distinct: std::collections::HashSet<_> = per_subnet.values().collect();
    assert_eq!(distinct.len(), 3, "the subnets spread over all endpoints");
    // Without ECS the resolver's own address is the key: stable too, and no ECS in the reply.
    let plain = with_edns(query("app.example.com.", RecordType::A), 1232);
    let first = s.udp(&plain).await;
    assert_eq!(ecs_scope(&first), None);
    for _ in 0..20 {
        assert_eq!(addresses(&s.udp(&plain).await), addresses(&first));
    }
    s.stop().await;

    // A non-sticky pool (and static data) answers ECS with scope 0.
    let s = server(&split(50, 50, "")).await;
    let r = s.udp(&ecs(Ipv4Addr::new(198, 51, 7, 1), 24)).await;
    assert_eq!(ecs_scope(&r), Some(0));
    s.stop().await;
}

fn checked(policy: &str) -> String {
    // Probes target a closed loopback port and start down, so the pool is down from the start.
    format!(
        "[[pool]]\nname = \"app.example.com.\"\nttl = 60\non_all_down = \"{policy}\"\n[pool.check]\nkind = \"tcp\"\ninitial = \"down\"\n[[pool.group]]\nname = \"g\"\nendpoints = [{{ address = \"192.0.2.1\", probe = \"127.0.0.1:9\" }}]\n[[pool]]\nname = \"backup.example.com.\"\n[[pool.group]]\nname = \"b\"\nendpoints = [{{ address = \"203.0.113.9\" }}]\n"
    )
}

#[tokio::test]
async fn failure_policies_answer_as_configured() {
    let cases: [(&str, ResponseCode, Vec<&str>); 4] = [
        ("serve-all", ResponseCode::NoError, vec!["192.0.2.1"]),
        (
            "fallback:backup.example.com.",
            ResponseCode::NoError,
            vec!["203.0.113.9"],
        ),
        ("nodata", ResponseCode::NoError, vec![]),
        ("servfail", ResponseCode::ServFail, vec![]),
    ];
    for (policy, code, want) in cases {
        let s = server(&checked(policy)).await;
        for t in Transport::BOTH {
            let r = s.ask(t, &query("app.example.com.", RecordType::A)).await;
            assert_eq!(rcode(&r), code, "{policy} {t}");
            assert_eq!(addresses(&r), want, "{policy} {t}");
            if !want.is_empty() {
                assert_eq!(r.answers[0].ttl, 10, "{policy}: TTL capped while degraded");
            }
        }
        let m = s.metrics();
        assert!(
            m.contains("weir_pool_degraded{family=\"ipv4\",pool=\"app.example.com.\"} 1"),
            "{m}"
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn metrics_are_served_over_http() {
    let s = server(&split(90, 10, "")).await;
    s.udp(&query("app.example.com.", RecordType::A)).await;
    let (status, body) = http_get(s.admin(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("weir_dns_responses_total{rcode=\"NOERROR\",transport=\"udp\"} 1"),
        "{body}"
    );
    assert!(body.contains("weir_pool_answers_total"));
    assert!(
        body.contains("weir_dns_queries_total{qtype=\"A\"} 1"),
        "{body}"
    );
    assert_eq!(http_get(s.admin(), "/healthz").await.0, 200);
    assert_eq!(http_get(s.admin(), "/nope").await.0, 404);
    s.stop().await;
}

/// The value of one metric line, e.g. `weir_pool_group_share{group="green",...} 0.1`.
fn gauge(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(start_paused = true)]
async fn observed_split_is_reported_beside_the_intended_one() {
    let s = server(&split(90, 10, "")).await;
    // The first window starts empty: queries after it are what the next window observes.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let q = query("app.example.com.", RecordType::A).to_vec().unwrap();
    tcp_pipeline(s.addr, &vec![q; 5000]).await;
    tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    let m = s.metrics();
    let share = |group: &str, kind: &str| {
        gauge(&m, &format!("weir_pool_group_share{{group=\"{group}\",kind=\"{kind}\",pool=\"app.example.com.\"}}"))
            .unwrap_or_else(|| panic!("no {group} {kind} share in\n{m}"))
    };
    assert!((share("blue", "intended") - 0.9).abs() < 1e-9);
    assert!((share("green", "intended") - 0.1).abs() < 1e-9);
    let observed = share("green", "observed");
    assert!((observed - 0.1).abs() < 0.02, "green observed {observed}");
    assert!((share("blue", "observed") + observed - 1.0).abs() < 1e-9);
    s.stop().await;
}

#[tokio::test]
async fn preview_gives_exact_probabilities_that_sampling_confirms() {
    let s = server(&split(70, 30, "")).await;
    let (status, body) = http_get(s.admin(), "/v1/pools/app.example.com/preview").await;
    assert_eq!(status, 200, "{body}");
    let preview: serde_json::Value = serde_json::from_str(&body).unwrap();
    let p = |addr: &str| {
        preview["preview"]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e[0] == addr)
            .and_then(|e| e[1].as_f64())
            .unwrap()
    };
    assert!(
        (p("192.0.2.20") - 0.30).abs() < 1e-9 && (p("192.0.2.10") - 0.35).abs() < 1e-9,
        "{preview}"
    );
    // Sampling over the wire agrees within the pools issue's bounds.
    let q = query("app.example.com.", RecordType::A).to_vec().unwrap();
    let mut green = 0;
    for _ in 0..20 {
        green += tcp_pipeline(s.addr, &vec![q.clone(); 5000])
            .await
            .iter()
            .filter(|r| addresses(r) == ["192.0.2.20"])
            .count();
    }
    let observed = green as f64 / 100_000.0;
    assert!(
        (observed - p("192.0.2.20")).abs() <= 0.005,
        "sampled {observed}"
    );

    // Hypothetical weights and health change nothing served.
    let (_, body) = http_get(
        s.admin(),
        "/v1/pools/app.example.com/preview?weights=blue:50,green:50&down=192.0.2.10",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let eps = v["preview"]["endpoints"].as_array().unwrap();
    assert!(
        !eps.iter().any(|e| e[0] == "192.0.2.10"),
        "a down endpoint is not answered: {v}"
    );
    assert!(
        eps.iter()
            .any(|e| e[0] == "192.0.2.11" && (e[1].as_f64().unwrap() - 0.5).abs() < 1e-9),
        "{v}"
    );
    assert_eq!(
        http_get(s.admin(), "/v1/pools/app.example.com/preview?weights=red:1")
            .await
            .0,
        404
    );
    assert_eq!(
        http_get(s.admin(), "/v1/pools/app.example.com/preview?down=x")
            .await
            .0,
        400
    );
    s.stop().await;

    // Several answers: every set with its probability; membership sums to `answers`.
    let s = server(&split(70, 30, "answers = 2")).await;
    let (_, body) = http_get(s.admin(), "/v1/pools/app.example.com/preview").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sets: f64 = v["preview"]["answer_sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[1].as_f64().unwrap())
        .sum();
    let members: f64 = v["preview"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[1].as_f64().unwrap())
        .sum();
    assert!(
        (sets - 1.0).abs() < 1e-9 && (members - 2.0).abs() < 1e-9,
        "{v}"
    );
    s.stop().await;

    // Sticky: moving blue 50 -> 25 moves a quarter of the client subnets (all into green).
    let s = server(&split(50, 50, "sticky = \"client-subnet\"")).await;
    let (_, body) = http_get(
        s.admin(),
        "/v1/pools/app.example.com/preview?weights=blue:25,green:75",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let moved = v["preview"]["sticky_moved"].as_f64().unwrap();
    assert!((moved - 0.25).abs() < 0.02, "moved {moved}");
    s.stop().await;
}

/// `n` endpoints 192.0.2.1.. in one group, `answers` per reply.
fn wide(name: &str, n: u8, extra: &str) -> String {
    let endpoints: Vec<String> = (1..=n)
        .map(|i| format!("{{ address = \"198.51.100.{i}\" }}"))
        .collect();
    format!(
        "[[pool]]\nname = \"{name}\"\n{extra}\n[[pool.group]]\nname = \"all\"\nendpoints = [{}]\n",
        endpoints.join(", ")
    )
}

/// Issue 12, defect 6: a sticky pool of 58 endpoints answering 3 took ~5 s per preview on the
/// shared runtime, so DNS over TCP waited behind previews. Now previews run on blocking
/// threads, two at once (a third gets 429), and one past the cost bound gets 422 up front.
#[tokio::test]
async fn previews_run_off_the_runtime_bounded_in_cost_and_number() {
    let pools = format!(
        "{}{}",
        wide(
            "sticky.example.com.",
            58,
            "answers = 3\nsticky = \"client-subnet\""
        ),
        wide("huge.example.com.", 60, "answers = 4")
    );
    let s = server(&pools).await;
    let admin = s.admin();

    // Past the bound: refused before any work, with the numbers.
    let (status, body) = http_get(admin, "/v1/pools/huge.example.com/preview").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("60 endpoints with 4 answers"), "{body}");

    let path = "/v1/pools/sticky.example.com/preview?down=198.51.100.1";
    let first = tokio::spawn(http_get(admin, path));
    let second = tokio::spawn(http_get(admin, path));
    // Both hold a permit once they have started; a third is turned away at once.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let third = http_get(admin, path).await;
    assert_eq!(third.0, 429, "{}", &third.1[..third.1.len().min(200)]);
    assert!(
        third.1.contains("previews are being computed"),
        "{}",
        third.1
    );
    // DNS over TCP (tasks on the same runtime) answers while they compute.
    let reply = s.tcp(&query("app.example.com.", RecordType::TXT)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(
        !(first.is_finished() && second.is_finished()),
        "the DNS answer came only after both previews finished"
    );

    for task in [first, second] {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{}", &body[..body.len().min(200)]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let sets = v["preview"]["answer_sets"].as_array().unwrap();
        // 57 endpoints up, 3 per answer: C(57, 3) sets.
        assert_eq!(sets.len(), 57 * 56 * 55 / 6);
        let total: f64 = sets.iter().map(|s| s[1].as_f64().unwrap()).sum();
        let members: f64 = v["preview"]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[1].as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 1e-6 && (members - 3.0).abs() < 1e-6);
        assert!(v["preview"]["sticky_moved"].as_f64().unwrap() > 0.0);
    }
    // Permits come back: a later preview is computed.
    assert_eq!(http_get(admin, path).await.0, 200);
    s.stop().await;
}
