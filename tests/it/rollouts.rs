//! Canary rollouts end to end: the real server, its admin API, answers over DNS (TCP, inside the
//! paused-clock runtime), real backends for the health gate.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::support::*;

const ZONE: &str =
    "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n";

fn pool(check: &str, green: &str) -> String {
    format!(
        "[[pool]]\nname = \"app.example.com.\"\nttl = 30\n{check}\n[pool.rollout]\nfrom = \"blue\"\nto = \"green\"\nslack = \"5s\"\nsteps = [{{ set_weight = 5 }}, {{ pause = \"60s\" }}, {{ set_weight = 50 }}, {{ pause = \"manual\" }}, {{ set_weight = 100 }}]\n[[pool.group]]\nname = \"blue\"\nweight = 100\nendpoints = [{{ address = \"192.0.2.10\" }}]\n[[pool.group]]\nname = \"green\"\nweight = 0\nendpoints = [{{ address = \"192.0.2.20\"{green} }}]\n"
    )
}

/// A request to `s`'s admin API: (status, body as JSON or a string).
async fn api(s: &Server, method: Method, path: &str, body: Option<&str>) -> (u16, Value) {
    http(s.admin(), method, path, &[], body).await
}

/// `POST .../rollout/{action}` without a body: the status code.
async fn command(s: &Server, action: &str) -> u16 {
    let path = format!("/v1/pools/app.example.com/rollout/{action}");
    api(s, Method::POST, &path, None).await.0
}

/// `POST .../rollouts` without a body (the pool's own `[pool.rollout]`): the status code.
async fn start_rollout(s: &Server) -> u16 {
    api(s, Method::POST, "/v1/pools/app.example.com/rollouts", None)
        .await
        .0
}

async fn status(s: &Server) -> Value {
    let (code, body) = api(s, Method::GET, "/v1/pools/app.example.com/rollout", None).await;
    assert_eq!(code, 200, "{body}");
    body
}

/// Share of 400 answers that went to green.
async fn green_share(s: &Server) -> f64 {
    let q = query("app.example.com.", RecordType::A).to_vec().unwrap();
    let replies = tcp_pipeline(s.addr, &vec![q; 400]).await;
    let green = replies
        .iter()
        .filter(|r| r.answers[0].data.to_string() == "192.0.2.20")
        .count();
    green as f64 / 400.0
}

/// Steps the paused clock a second at a time until the rollout's weight is `weight`; returns
/// the seconds it took.
async fn until_weight(s: &Server, weight: u64, limit: u64) -> u64 {
    for waited in 0..=limit {
        if status(s).await["weight"] == weight {
            return waited;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!(
        "weight never reached {weight} within {limit}s: {}",
        status(s).await
    );
}

/// A server for the example zone with `pools`.
async fn serve(pools: &str) -> Server {
    Server::serving(ZONE, pools).await
}

/// `GET /v1/audit?{query}` with the clock running. Audit pages are built on a SCHED_IDLE
/// thread; with the clock paused, tokio jumps to the request deadline whenever the runtime
/// idles while that thread waits for a core on a busy host, and the read fails spuriously.
async fn audit_page(s: &Server, query: &str) -> Value {
    tokio::time::resume();
    let (code, audit) = api(s, Method::GET, &format!("/v1/audit?{query}"), None).await;
    tokio::time::pause();
    assert_eq!(code, 200, "{audit}");
    audit
}

#[tokio::test(start_paused = true)]
async fn a_canary_walks_its_steps_honouring_settle_times_and_pauses() {
    let s = serve(&pool("", "")).await;
    assert_eq!(green_share(&s).await, 0.0);
    let (code, body) = api(&s, Method::POST, "/v1/pools/app.example.com/rollouts", None).await;
    assert_eq!(code, 200, "{body}");
    let st = status(&s).await;
    assert_eq!(
        (
            st["state"].clone(),
            st["weight"].clone(),
            st["settles_in_ms"].clone()
        ),
        (json!("running"), json!(0), json!(36_000))
    );
    assert_eq!(st["next"], "set_weight 5");

    // 5% once the 0% change has settled (TTL 30 + 1 s + slack 5).
    let took = until_weight(&s, 5, 40).await;
    assert!((35..=37).contains(&took), "5% after {took}s");
    let share = green_share(&s).await;
    assert!(share > 0.0 && share < 0.15, "green share {share}");
    // The 60 s pause counts from when 5% settled: 36 + 60 = 96 s later.
    let took = until_weight(&s, 50, 100).await;
    assert!((95..=97).contains(&took), "50% after {took}s");
    let share = green_share(&s).await;
    assert!((0.35..0.65).contains(&share), "green share {share}");
    // A manual pause waits for promote, however long.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let st = status(&s).await;
    assert_eq!(
        (st["state"].clone(), st["weight"].clone()),
        (json!("waiting for promote"), json!(50))
    );
    let (code, _) = api(
        &s,
        Method::POST,
        "/v1/pools/app.example.com/rollout/promote",
        Some("{}"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(status(&s).await["weight"], 100);
    assert_eq!(green_share(&s).await, 1.0);
    tokio::time::sleep(Duration::from_secs(37)).await;
    assert_eq!(status(&s).await["state"], "done");

    let audit = audit_page(&s, "pool=app.example.com").await;
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "rollout-step",
            "rollout-promote",
            "rollout-step",
            "rollout-step",
            "rollout-step",
            "rollout-step",
            "rollout-start"
        ]
    );
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_down_canary_endpoint_aborts_and_traffic_returns() {
    let mut backend = Backend::tcp().await;
    let green = format!(
        ", probe = \"{}\", check = {{ kind = \"tcp\", interval = \"1s\", timeout = \"500ms\", rise = 1, fall = 2 }}",
        backend.addr()
    );
    let s = serve(&pool("", &green)).await;
    let plan = r#"{"from": "blue", "to": "green", "steps": [{"set_weight": 50}, {"pause": "manual"}], "slack": "0s", "reason": "v2"}"#;
    let (code, body) = api(
        &s,
        Method::POST,
        "/v1/pools/app.example.com/rollouts",
        Some(plan),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    until_weight(&s, 50, 40).await;
    assert!(green_share(&s).await > 0.3);

    backend.stop().await;
    until_weight(&s, 0, 10).await;
    let st = status(&s).await;
    assert_eq!(st["state"], "aborted");
    assert!(
        st["reason"].as_str().unwrap().contains("192.0.2.20"),
        "{st}"
    );
    assert_eq!(green_share(&s).await, 0.0, "traffic is back on blue");
    let m = s.metrics();
    assert!(
        m.contains("weir_rollout_aborts_total{cause=\"health\",pool=\"app.example.com.\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("weir_rollout_state{pool=\"app.example.com.\",state=\"aborted\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("weir_rollout_weight{pool=\"app.example.com.\"} 0"),
        "{m}"
    );
    let audit = audit_page(&s, "limit=1").await;
    assert_eq!(audit["records"][0]["action"], "rollout-step");
    assert!(
        audit["records"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("health gate")
    );
    s.stop().await;
}

#[tokio::test]
async fn rollout_requests_are_checked() {
    let s = serve(&pool("", "")).await;
    let cases: [(Method, &str, Option<&str>, u16); 10] = [
        (
            Method::POST,
            "/v1/pools/app.example.com/rollout/promote",
            None,
            404,
        ),
        // Durations past the 30-day maximum: no deadline may wrap.
        (
            Method::POST,
            "/v1/pools/app.example.com/rollouts",
            Some(
                r#"{"from": "blue", "to": "green", "steps": [{"set_weight": 5}, {"pause": "18446744073709551615s"}]}"#,
            ),
            400,
        ),
        (
            Method::POST,
            "/v1/pools/app.example.com/rollouts",
            Some(r#"{"from": "blue", "to": "green", "steps": [{"pause": "31days"}]}"#),
            400,
        ),
        (
            Method::POST,
            "/v1/pools/app.example.com/rollouts",
            Some(
                r#"{"from": "blue", "to": "green", "slack": "100y", "steps": [{"set_weight": 5}]}"#,
            ),
            400,
        ),
        (Method::GET, "/v1/pools/app.example.com/rollout", None, 404),
        (
            Method::POST,
            "/v1/pools/app.example.com/rollouts",
            Some(r#"{"from": "blue", "to": "red", "steps": [{"set_weight": 5}]}"#),
            400,
        ),
        (
            Method::POST,
            "/v1/pools/app.example.com/rollouts",
            Some(r#"{"from": "blue", "to": "green", "steps": [{"set_weight": 500}]}"#),
            400,
        ),
        (
            Method::POST,
            "/v1/pools/app.example.com/rollouts",
            Some(r#"{"from": "blue", "to": "green", "steps": []}"#),
            400,
        ),
        (
            Method::POST,
            "/v1/pools/nope.example.com/rollouts",
            None,
            404,
        ),
        (
            Method::POST,
            "/v1/pools/app.example.com/rollouts",
            Some(r#"{"from": "blue"}"#),
            400,
        ),
    ];
    for (method, path, body, want) in cases {
        let (code, reply) = api(&s, method.clone(), path, body).await;
        assert_eq!(code, want, "{method} {path} {body:?}: {reply}");
    }
    assert_eq!(start_rollout(&s).await, 200);
    let (code, reply) = api(&s, Method::POST, "/v1/pools/app.example.com/rollouts", None).await;
    assert_eq!(code, 409, "{reply}");
    assert_eq!(command(&s, "sideways").await, 404);
    assert_eq!(command(&s, "resume").await, 409, "not paused");
    assert_eq!(
        api(
            &s,
            Method::POST,
            "/v1/pools/app.example.com/rollout/abort",
            Some(r#"{"reason": "bad build"}"#)
        )
        .await
        .0,
        200
    );
    assert_eq!(status(&s).await["reason"], "bad build");
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn blue_green_previews_flips_keeps_from_warm_and_finalizes() {
    let pool = "[[pool]]\nname = \"app.example.com.\"\nttl = 30\n[pool.rollout]\nkind = \"blue-green\"\nfrom = \"blue\"\nto = \"green\"\npreview_name = \"preview.app.example.com.\"\n[[pool.group]]\nname = \"blue\"\nendpoints = [{ address = \"192.0.2.10\" }]\n[[pool.group]]\nname = \"green\"\nweight = 0\nendpoints = [{ address = \"192.0.2.20\" }]\n";
    let s = serve(pool).await;
    assert_eq!(
        answered(s.addr, "app.example.com.", 100).await,
        ["192.0.2.10"]
    );
    assert_eq!(
        answered(s.addr, "preview.app.example.com.", 100).await,
        ["192.0.2.20"],
        "the preview name answers only `to`"
    );

    assert_eq!(start_rollout(&s).await, 200);
    tokio::time::sleep(Duration::from_secs(37)).await;
    assert_eq!(status(&s).await["state"], "waiting for promote");
    // The flip: everything at once; `from` counts as drained only once that has settled.
    assert_eq!(command(&s, "promote").await, 200);
    assert_eq!(
        answered(s.addr, "app.example.com.", 100).await,
        ["192.0.2.20"]
    );
    assert_eq!(status(&s).await["from_drained"], false);
    tokio::time::sleep(Duration::from_secs(37)).await;
    let st = status(&s).await;
    assert_eq!(
        (st["from_drained"].clone(), st["state"].clone()),
        (json!(true), json!("waiting for promote"))
    );
    // Rollback window: undo goes back to `from`.
    assert_eq!(command(&s, "undo").await, 200);
    assert_eq!(
        answered(s.addr, "app.example.com.", 100).await,
        ["192.0.2.10"]
    );
    assert_eq!(command(&s, "resume").await, 200);
    until_weight(&s, 100, 40).await;
    tokio::time::sleep(Duration::from_secs(36)).await;
    // Finalize.
    assert_eq!(command(&s, "promote").await, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status(&s).await["state"], "done");
    assert_eq!(
        answered(s.addr, "app.example.com.", 100).await,
        ["192.0.2.20"]
    );
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_ttl_ramp_lowers_the_ttl_waits_for_the_old_one_and_restores_it() {
    let pool = "[[pool]]\nname = \"app.example.com.\"\nttl = 300\n[pool.rollout]\nfrom = \"blue\"\nto = \"green\"\nslack = \"0s\"\nttl_ramp = true\nrollout_ttl = \"5s\"\nsteps = [{ set_weight = 50 }, { pause = \"10s\" }, { set_weight = 100 }]\n[[pool.group]]\nname = \"blue\"\nendpoints = [{ address = \"192.0.2.10\" }]\n[[pool.group]]\nname = \"green\"\nweight = 0\nendpoints = [{ address = \"192.0.2.20\" }]\n";
    let s = serve(pool).await;
    let answer_ttl = async |s: &Server| {
        s.tcp(&query("app.example.com.", RecordType::A))
            .await
            .answers[0]
            .ttl
    };
    assert_eq!(answer_ttl(&s).await, 300);
    assert_eq!(start_rollout(&s).await, 200);
    assert_eq!(answer_ttl(&s).await, 5, "the short TTL from the start");
    // The first step waits until answers cached with the old 300 s TTL have expired.
    let took = until_weight(&s, 50, 310).await;
    assert!((300..=302).contains(&took), "first step after {took}s");
    // Later steps settle on the short TTL: 5 s + 1 s settle, then the 10 s pause.
    let took = until_weight(&s, 100, 30).await;
    assert!((15..=17).contains(&took), "second step after {took}s");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(status(&s).await["state"], "done");
    assert_eq!(answer_ttl(&s).await, 300, "restored at the end");
    s.stop().await;
}

/// A Prometheus instant-query answer with one sample.
fn prometheus(value: &str) -> String {
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000,"{value}"]}}]}}}}"#
    )
}

#[tokio::test(start_paused = true)]
async fn a_failing_metric_gate_aborts_after_its_failure_limit() {
    let prom = Backend::http().await;
    prom.respond(200, &prometheus("0.001"));
    let s = serve(&pool("", "")).await;
    let plan = format!(
        r#"{{"from": "blue", "to": "green", "steps": [{{"set_weight": 50}}, {{"pause": "manual"}}], "slack": "0s",
            "metric_gate": {{"url": "http://{}", "query": "rate(errors[1m])", "condition": "< 0.01", "interval": "2s", "failure_limit": 3}}}}"#,
        prom.addr()
    );
    let (code, body) = api(
        &s,
        Method::POST,
        "/v1/pools/app.example.com/rollouts",
        Some(&plan),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    until_weight(&s, 50, 40).await;
    // A healthy metric keeps the rollout going (the manual pause starts once 50% settled).
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(status(&s).await["state"], "waiting for promote");
    let seen = prom.seen();
    assert!(seen.len() >= 5, "queried every 2 s: {}", seen.len());
    assert!(
        seen[0].path.starts_with("/api/v1/query?query=rate"),
        "{}",
        seen[0].path
    );

    // Errors climb: three failed queries in a row abort, and traffic returns to blue.
    prom.respond(200, &prometheus("0.5"));
    let start = tokio::time::Instant::now();
    until_weight(&s, 0, 20).await;
    let took = start.elapsed().as_secs();
    assert!((4..=9).contains(&took), "aborted after {took}s");
    let st = status(&s).await;
    assert_eq!(st["state"], "aborted");
    assert!(
        st["reason"]
            .as_str()
            .unwrap()
            .contains("metric gate failed 3 times"),
        "{st}"
    );
    assert_eq!(green_share(&s).await, 0.0);
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rolling_update_walks_every_batch_within_max_unavailable() {
    let pool = "[[pool]]\nname = \"app.example.com.\"\nttl = 10\nanswers = 4\n[pool.rollout]\nkind = \"rolling\"\ngroup = \"web\"\nbatch = \"50%\"\nmax_unavailable = \"25%\"\nslack = \"0s\"\n[[pool.group]]\nname = \"web\"\nendpoints = [{ address = \"192.0.2.1\" }, { address = \"192.0.2.2\" }, { address = \"192.0.2.3\" }, { address = \"192.0.2.4\" }]\n";
    let s = serve(pool).await;
    let all = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"];
    assert_eq!(answered(s.addr, "app.example.com.", 100).await, all);
    assert_eq!(start_rollout(&s).await, 200);
    let st = status(&s).await;
    // 25% of the pool is one endpoint: batches of one despite batch = 50% (two of four).
    assert_eq!(
        st["rolling"]["batches"],
        json!([["192.0.2.1"], ["192.0.2.2"], ["192.0.2.3"], ["192.0.2.4"]])
    );
    for (i, drained) in all.iter().enumerate() {
        // Drained at once, never more than one endpoint missing from the answers.
        let seen = answered(s.addr, "app.example.com.", 100).await;
        let expected: Vec<&str> = all.iter().copied().filter(|a| a != drained).collect();
        assert_eq!(seen, expected, "batch {i}");
        assert_eq!(
            status(&s).await["rolling"]["safe_to_upgrade"],
            false,
            "batch {i}: cached answers may still name it"
        );
        tokio::time::sleep(Duration::from_secs(12)).await;
        let st = status(&s).await;
        assert_eq!(
            (
                st["state"].as_str(),
                st["rolling"]["safe_to_upgrade"].as_bool()
            ),
            (Some("waiting for promote"), Some(true)),
            "batch {i}: {st}"
        );
        // The operator (or a CI job) upgrades the batch, then promotes; healthy, it comes back.
        assert_eq!(command(&s, "promote").await, 200);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(status(&s).await["state"], "done");
    assert_eq!(answered(s.addr, "app.example.com.", 100).await, all);
    assert_eq!(command(&s, "undo").await, 409);
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn sticky_clients_only_move_from_stable_to_canary_as_a_rollout_advances() {
    let pool = "[[pool]]\nname = \"app.example.com.\"\nttl = 1\nsticky = \"client-subnet\"\n[pool.rollout]\nfrom = \"blue\"\nto = \"green\"\nslack = \"0s\"\nsteps = [{ set_weight = 5 }, { pause = \"manual\" }, { set_weight = 25 }, { pause = \"manual\" }, { set_weight = 50 }, { pause = \"manual\" }, { set_weight = 100 }]\n[[pool.group]]\nname = \"blue\"\nendpoints = [{ address = \"192.0.2.10\" }, { address = \"192.0.2.11\" }]\n[[pool.group]]\nname = \"green\"\nweight = 0\nendpoints = [{ address = \"192.0.2.20\" }, { address = \"192.0.2.21\" }]\n";
    let s = serve(pool).await;
    let queries: Vec<Vec<u8>> = (0..500u32)
        .map(|i| {
            let subnet = std::net::Ipv4Addr::new(10, (i >> 8) as u8, i as u8, 0);
            with_ecs(
                query("app.example.com.", RecordType::A),
                &format!("{subnet}/24"),
            )
            .to_vec()
            .unwrap()
        })
        .collect();
    let on_green = async |s: &Server| -> Vec<bool> {
        tcp_pipeline(s.addr, &queries)
            .await
            .iter()
            .map(|r| r.answers[0].data.to_string().starts_with("192.0.2.2"))
            .collect()
    };
    assert_eq!(start_rollout(&s).await, 200);
    let mut previous = on_green(&s).await;
    assert!(previous.iter().all(|g| !g));
    for weight in [5, 25, 50, 100] {
        until_weight(&s, weight, 5).await;
        let now = on_green(&s).await;
        let back = previous
            .iter()
            .zip(&now)
            .filter(|(was, is)| **was && !**is)
            .count();
        assert_eq!(
            back, 0,
            "at {weight}%: {back} clients moved back from canary to stable"
        );
        let share = now.iter().filter(|g| **g).count() as f64 / now.len() as f64;
        assert!(
            (share - weight as f64 / 100.0).abs() < 0.08,
            "at {weight}%: {share}"
        );
        previous = now;
        if weight < 100 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(command(&s, "promote").await, 200);
        }
    }
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_webhook_is_asked_before_each_step_and_a_refusal_pauses() {
    let hook = Backend::http().await;
    hook.respond(500, "not yet");
    let s = serve(&pool("", "")).await;
    let plan = format!(
        r#"{{"from": "blue", "to": "green", "steps": [{{"set_weight": 50}}, {{"pause": "manual"}}], "slack": "0s", "webhook": {{"url": "http://{}/approve"}}}}"#,
        hook.addr()
    );
    assert_eq!(
        api(
            &s,
            Method::POST,
            "/v1/pools/app.example.com/rollouts",
            Some(&plan)
        )
        .await
        .0,
        200
    );
    // Due after 30 s: the webhook says no, so the rollout pauses at 0%.
    tokio::time::sleep(Duration::from_secs(32)).await;
    let st = status(&s).await;
    assert_eq!(
        (st["state"].as_str(), st["weight"].as_u64()),
        (Some("paused"), Some(0)),
        "{st}"
    );
    assert_eq!(hook.seen()[0].path, "/approve");
    let audit = audit_page(&s, "limit=1").await;
    assert!(
        audit["records"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 500"),
        "{audit}"
    );
    // Approved, the step goes through after resume.
    hook.respond(200, "ok");
    assert_eq!(command(&s, "resume").await, 200);
    until_weight(&s, 50, 5).await;
    let asked = hook.requests();
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(hook.requests(), asked, "a manual pause asks nothing");
    s.stop().await;
}
