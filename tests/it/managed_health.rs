//! Health checks end to end: real local backends, the real server, answers over DNS. Timing on
//! tokio's paused clock; DNS over TCP because its tasks run inside the test runtime (UDP workers
//! are threads the paused clock cannot see).

use std::time::Duration;

use hickory_proto::rr::RecordType;
use tokio::time::Instant;

use crate::backends::{Backend, Behavior};
use crate::support::*;

const ZONE: &str =
    "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n";
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(500);
const FALL: u32 = 2;
const RISE: u32 = 2;

fn pool(http: &Backend, tcp: &Backend) -> String {
    format!(
        "[[pool]]\nname = \"app.example.com.\"\nanswers = 2\n[pool.check]\nkind = \"http\"\npath = \"/healthz\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = {RISE}\nfall = {FALL}\n[[pool.group]]\nname = \"g\"\nendpoints = [{{ address = \"192.0.2.10\", probe = \"{}\" }}, {{ address = \"192.0.2.20\", probe = \"{}\", check = {{ kind = \"tcp\" }} }}]\n",
        http.addr(),
        tcp.addr()
    )
}

async fn answered(s: &Server) -> Vec<String> {
    let r = s.tcp(&query("app.example.com.", RecordType::A)).await;
    let mut a: Vec<String> = r.answers.iter().map(|r| r.data.to_string()).collect();
    a.sort();
    a
}

/// Steps the paused clock until `answered` equals `want`; returns the time it took.
async fn until(s: &Server, want: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    while answered(s).await != want {
        assert!(
            start.elapsed() <= limit,
            "still {:?} after {limit:?}, want {want:?}",
            answered(s).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn dead_backends_leave_the_answers_and_come_back() {
    let mut http = Backend::http().await;
    http.respond(200, "ok");
    let mut tcp = Backend::tcp().await;
    let s = Server::serving(ZONE, &pool(&http, &tcp)).await;
    let both = ["192.0.2.10", "192.0.2.20"];
    assert_eq!(
        answered(&s).await,
        both,
        "up before the first probe (initial = up)"
    );

    // Ready once every probe has a result.
    let start = Instant::now();
    while http_get(s.admin(), "/readyz").await.0 != 200 {
        assert!(
            start.elapsed() < INTERVAL,
            "ready within the first interval"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Bound from the issue: fall x interval (+10% jitter) + timeout.
    let bound = INTERVAL.mul_f64(1.1) * FALL + TIMEOUT;
    http.stop().await;
    let took = until(&s, &["192.0.2.20"], bound).await;
    assert!(
        took >= INTERVAL,
        "not before {FALL} failed probes ({took:?})"
    );
    assert!(s.metrics().contains(
        "weir_endpoint_up{endpoint=\"192.0.2.10\",group=\"g\",pool=\"app.example.com.\"} 0"
    ));

    http.start().await;
    until(&s, &both, INTERVAL.mul_f64(1.1) * RISE + TIMEOUT).await;

    // An HTTP 503 is a failure like a refused connection; the TCP endpoint leaves when closed.
    http.respond(503, "down");
    tcp.stop().await;
    let degraded = "weir_pool_degraded{family=\"ipv4\",pool=\"app.example.com.\"} 1";
    let start = Instant::now();
    while !s.metrics().contains(degraded) {
        assert!(start.elapsed() <= bound, "not degraded after {bound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything down: serve-all answers both again, with the degraded TTL.
    let r = s.tcp(&query("app.example.com.", RecordType::A)).await;
    assert_eq!(r.answers.len(), 2);
    assert_eq!(r.answers[0].ttl, 10);
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_flapping_backend_stays_out() {
    let http = Backend::http().await;
    http.set(Behavior::Alternate {
        good: 200,
        bad: 500,
    });
    let tcp = Backend::tcp().await;
    let s = Server::serving(ZONE, &pool(&http, &tcp)).await;
    tokio::time::sleep(INTERVAL * 3).await;
    // Alternating results never give `fall` failures in a row: still up, as hysteresis intends.
    assert_eq!(answered(&s).await, ["192.0.2.10", "192.0.2.20"]);
    s.stop().await;
}
