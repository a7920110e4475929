//! Health checks against real local backends: `Monitor` is driven directly with a channel, and
//! each test asserts on the `Flip`s it receives. Every test runs on a paused
//! tokio clock: probe intervals and timeouts pass in virtual time, which tokio advances only when
//! the runtime is idle, and the backends live in the same runtime, so a probe's loopback I/O
//! always completes before time moves.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use weir::health::Flip;
use weir::health::Monitor;
use weir::metrics::Metrics;
use weir::model::{Check, CheckKind, Health, ProbeKey};

use crate::backends::{Backend, Behavior, connects};

const INTERVAL: Duration = Duration::from_secs(10);

fn check(kind: CheckKind, initial: Health, rise: u32, fall: u32) -> Check {
    Check {
        kind,
        // Deliberately not the backend's port: a probe goes to its key's target.
        port: 1,
        path: "/health".into(),
        host: None,
        expect: vec![(200, 399)],
        body_contains: None,
        tls_verify: true,
        interval: INTERVAL,
        timeout: Duration::from_secs(2),
        rise,
        fall,
        initial,
    }
}

fn key(backend: &Backend, check: Check) -> ProbeKey {
    ProbeKey {
        target: backend.addr(),
        check: check.into(),
    }
}

/// A monitor wired to a channel and its own metrics.
/// Flips in arrival order; `of` finds one key's (health, reason).
struct Flips(Vec<Flip>);

impl Flips {
    fn of(&self, key: &ProbeKey) -> (Health, &str) {
        let flip = self
            .0
            .iter()
            .find(|f| &f.key == key)
            .unwrap_or_else(|| panic!("no flip of {key:?}"));
        (flip.health, flip.reason.as_str())
    }
}

struct Harness {
    monitor: Monitor,
    events: mpsc::Receiver<Flip>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl Harness {
    fn new() -> Harness {
        let (tx, events) = mpsc::channel(16);
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let monitor = Monitor::new(tx, Arc::clone(&metrics), shutdown.clone());
        Harness {
            monitor,
            events,
            metrics,
            shutdown,
        }
    }

    /// The next flip, within ten minutes of virtual time.
    async fn next(&mut self) -> Flip {
        match timeout(Duration::from_secs(600), self.events.recv()).await {
            Ok(Some(flip)) => flip,
            other => panic!("expected a health flip, got {other:?}"),
        }
    }

    /// The next `n` flips, to be looked up by key (`of`).
    async fn flips(&mut self, n: usize) -> Flips {
        let mut flips = Vec::new();
        for _ in 0..n {
            flips.push(self.next().await);
        }
        Flips(flips)
    }

    /// Asserts that no event arrives for `period` of virtual time.
    async fn quiet_for(&mut self, period: Duration) {
        if let Ok(event) = timeout(period, self.events.recv()).await {
            panic!("expected no event, got {event:?}");
        }
    }

    /// The value of the sample line that starts with `series` (name and labels), if present.
    fn metric(&self, series: &str) -> Option<f64> {
        self.metrics.render().lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.parse().ok()
        })
    }
}

/// Polls `done` every 100 ms of virtual time, for at most 1000 s of it.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting for {what}");
}

#[tokio::test(start_paused = true)]
async fn http_503_goes_down_after_fall_failures_and_up_after_rise_successes() {
    let backend = Backend::http().await;
    let mut h = Harness::new();
    let k = key(&backend, check(CheckKind::Http, Health::Up, 2, 3));
    let target = k.target.to_string();
    h.monitor.set_probes([k.clone()]);

    // Up is the initial health: successes announce nothing.
    until("three good probes", || backend.served(200) >= 3).await;
    assert!(
        h.events.try_recv().is_err(),
        "initial health is never announced"
    );
    assert_eq!(
        h.metric(&format!(
            "weir_probe_up{{kind=\"http\",target=\"{target}\"}}"
        )),
        Some(1.0)
    );

    backend.respond(503, "unavailable");
    let flip = h.next().await;
    assert_eq!((flip.key, flip.health), (k.clone(), Health::Down));
    assert_eq!(flip.reason, "HTTP 503");
    assert_eq!(backend.served(503), 3, "down after exactly `fall` failures");

    let good_before = backend.served(200);
    backend.respond(200, "ok");
    let flip = h.next().await;
    assert_eq!((flip.key, flip.health), (k, Health::Up));
    assert_eq!(flip.reason, "HTTP 200");
    assert_eq!(
        backend.served(200) - good_before,
        2,
        "up after exactly `rise` successes"
    );

    let transitions = |to: &str| {
        h.metric(&format!(
            "weir_health_transitions_total{{target=\"{target}\",to=\"{to}\"}}"
        ))
    };
    assert_eq!(transitions("down"), Some(1.0));
    assert_eq!(transitions("up"), Some(1.0));
    assert_eq!(
        h.metric(&format!(
            "weir_probe_failures_total{{reason=\"status\",target=\"{target}\"}}"
        )),
        Some(3.0)
    );
    assert_eq!(
        h.metric(&format!(
            "weir_probe_up{{kind=\"http\",target=\"{target}\"}}"
        )),
        Some(1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn stopped_http_backend_goes_down_and_comes_back_up() {
    let mut backend = Backend::http().await;
    let mut h = Harness::new();
    let k = key(&backend, check(CheckKind::Http, Health::Up, 2, 3));
    let refused = format!(
        "weir_probe_failures_total{{reason=\"connect\",target=\"{}\"}}",
        k.target
    );
    h.monitor.set_probes([k.clone()]);
    until("a first result", || h.monitor.first_round_done()).await;

    backend.stop().await;
    assert!(!connects(backend.addr()).await, "a stopped backend refuses");
    let flip = h.next().await;
    assert_eq!((&flip.key, flip.health), (&k, Health::Down));
    assert_eq!(flip.reason, "connect: connection refused");
    assert_eq!(
        h.metric(&refused),
        Some(3.0),
        "down after exactly `fall` failures"
    );

    backend.start().await;
    let before = backend.served(200);
    let flip = h.next().await;
    assert_eq!((&flip.key, flip.health), (&k, Health::Up));
    assert_eq!(backend.served(200) - before, 2);
    assert_eq!(h.metric(&refused), Some(3.0));
}

#[tokio::test(start_paused = true)]
async fn tcp_check_follows_a_listener_that_stops_and_restarts() {
    let mut backend = Backend::tcp().await;
    let mut h = Harness::new();
    let k = key(&backend, check(CheckKind::Tcp, Health::Down, 2, 2));
    // Counted from the probe's side: a TCP connect completes before the backend's accept runs.
    // Durations are by kind only; this harness probes one target.
    let probes = "weir_probe_duration_seconds_count{kind=\"tcp\"}".to_string();
    let refused = format!(
        "weir_probe_failures_total{{reason=\"connect\",target=\"{}\"}}",
        k.target
    );
    h.monitor.set_probes([k.clone()]);

    // Initial Down: `rise` connections are needed before the first Up.
    let flip = h.next().await;
    assert_eq!((&flip.key, flip.health), (&k, Health::Up));
    assert_eq!(flip.reason, "connected");
    assert_eq!(h.metric(&probes), Some(2.0));
    until("the backend to accept", || backend.requests() == 2).await;

    backend.stop().await;
    let flip = h.next().await;
    assert_eq!(flip.health, Health::Down);
    assert_eq!(flip.reason, "connect: connection refused");
    assert_eq!(h.metric(&refused), Some(2.0));
    assert_eq!(h.metric(&probes), Some(4.0));

    backend.start().await;
    let flip = h.next().await;
    assert_eq!(flip.health, Health::Up);
    assert_eq!(h.metric(&probes), Some(6.0));
    assert_eq!(h.metric(&refused), Some(2.0));
    until("the backend to accept again", || backend.requests() == 4).await;
}

#[tokio::test(start_paused = true)]
async fn flapping_backend_keeps_its_health() {
    // Alternating good/bad with rise = fall = 3 never builds a streak of 3.
    let down = Backend::http().await;
    let up = Backend::http().await;
    for backend in [&down, &up] {
        backend.set(Behavior::Alternate {
            good: 200,
            bad: 503,
        });
    }
    let mut h = Harness::new();
    h.monitor.set_probes([
        key(&down, check(CheckKind::Http, Health::Down, 3, 3)),
        key(&up, check(CheckKind::Http, Health::Up, 3, 3)),
    ]);
    until("30 probes each", || {
        down.requests() >= 30 && up.requests() >= 30
    })
    .await;
    assert!(down.served(200) >= 15 && down.served(503) >= 14);
    assert!(
        h.events.try_recv().is_err(),
        "a flapping target must not flip"
    );
}

#[tokio::test(start_paused = true)]
async fn blackholed_backend_fails_by_timeout() {
    let backend = Backend::http().await;
    backend.set(Behavior::Blackhole);
    let mut h = Harness::new();
    let k = key(&backend, check(CheckKind::Http, Health::Up, 2, 2));
    h.monitor.set_probes([k.clone()]);

    let started = Instant::now();
    let flip = h.next().await;
    assert_eq!((&flip.key, flip.health), (&k, Health::Down));
    assert_eq!(flip.reason, "timeout after 2s");
    assert_eq!(backend.requests(), 2, "the requests reached the backend");
    // First probe at 0-1 s, the second one interval ± 10% later, each failing after 2 s.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(11) && elapsed <= Duration::from_secs(14),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn body_must_contain_the_text_within_64_kib() {
    let small = Backend::http().await;
    small.respond(200, "status: ok");
    let large = Backend::http().await;
    large.respond(200, &format!("{}ok", "x".repeat(70 * 1024)));
    let mut h = Harness::new();
    let with_body = |backend: &Backend, initial: Health, text: &str| {
        let mut c = check(CheckKind::Http, initial, 1, 1);
        c.body_contains = Some(text.into());
        key(backend, c)
    };
    let small_ok = with_body(&small, Health::Down, "ok");
    let small_missing = with_body(&small, Health::Up, "healthy");
    let large_ok = with_body(&large, Health::Up, "ok");
    let large_early = with_body(&large, Health::Down, "xxx");
    h.monitor.set_probes([
        small_ok.clone(),
        small_missing.clone(),
        large_ok.clone(),
        large_early.clone(),
    ]);

    let flips = h.flips(4).await;
    assert_eq!(flips.of(&small_ok), (Health::Up, "HTTP 200"));
    assert_eq!(
        flips.of(&small_missing),
        (Health::Down, "body does not contain \"healthy\"")
    );
    assert_eq!(
        flips.of(&large_ok),
        (
            Health::Down,
            "body does not contain \"ok\" in its first 64 KiB"
        )
    );
    assert_eq!(flips.of(&large_early), (Health::Up, "HTTP 200"));
}

#[tokio::test(start_paused = true)]
async fn expect_ranges_judge_the_status_and_redirects_are_not_followed() {
    let moved = Backend::http().await;
    moved.respond(302, "");
    let busy = Backend::http().await;
    busy.respond(503, "");
    let mut h = Harness::new();
    let with_expect = |backend: &Backend, initial: Health, expect: Vec<(u16, u16)>| {
        let mut c = check(CheckKind::Http, initial, 1, 1);
        c.expect = expect;
        key(backend, c)
    };
    let default_range = with_expect(&moved, Health::Down, vec![(200, 399)]);
    let empty_means_default = with_expect(&moved, Health::Down, vec![]);
    let only_2xx = with_expect(&moved, Health::Up, vec![(200, 299)]);
    let accepts_503 = with_expect(&busy, Health::Down, vec![(200, 200), (500, 503)]);
    h.monitor.set_probes([
        default_range.clone(),
        empty_means_default.clone(),
        only_2xx.clone(),
        accepts_503.clone(),
    ]);

    let flips = h.flips(4).await;
    assert_eq!(flips.of(&default_range), (Health::Up, "HTTP 302"));
    assert_eq!(flips.of(&empty_means_default), (Health::Up, "HTTP 302"));
    assert_eq!(flips.of(&only_2xx), (Health::Down, "HTTP 302"));
    assert_eq!(flips.of(&accepts_503), (Health::Up, "HTTP 503"));
    let seen = moved.seen();
    assert_eq!(seen.len(), 3, "one request per probe: {seen:?}");
    assert!(seen.iter().all(|s| s.path == "/health"), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn https_verifies_certificates_unless_told_not_to() {
    let backend = Backend::https(&["weir.test", "127.0.0.1"]).await;
    let port = backend.addr().port();
    let mut h = Harness::new();
    let https = |host: Option<&str>, verify: bool, initial: Health| {
        let mut c = check(CheckKind::Https, initial, 1, 1);
        c.host = host.map(String::from);
        c.tls_verify = verify;
        key(&backend, c)
    };
    let unverified_named = https(Some("weir.test"), false, Health::Down);
    let unverified_ip = https(None, false, Health::Down);
    let verified = https(Some("weir.test"), true, Health::Up);
    h.monitor.set_probes([
        unverified_named.clone(),
        unverified_ip.clone(),
        verified.clone(),
    ]);

    let flips = h.flips(3).await;
    assert_eq!(flips.of(&unverified_named), (Health::Up, "HTTP 200"));
    assert_eq!(flips.of(&unverified_ip), (Health::Up, "HTTP 200"));
    let (health, reason) = flips.of(&verified);
    assert_eq!(health, Health::Down);
    assert!(
        reason.starts_with("tls: ") && reason.contains("UnknownIssuer"),
        "{reason}"
    );
    // The backend sees the client's alert once it next runs.
    until("the backend to see the rejected handshake", || {
        backend.tls_failures() >= 1
    })
    .await;

    // The name is the SNI and the Host header, the IP-only probe sends no SNI, and the
    // connection went to the target without any DNS lookup of `weir.test`.
    let seen = backend.seen();
    let named = format!("weir.test:{port}");
    assert!(
        seen.iter()
            .any(|s| s.sni.as_deref() == Some("weir.test") && s.host.as_deref() == Some(&named)),
        "{seen:?}"
    );
    let by_ip = backend.addr().to_string();
    assert!(
        seen.iter()
            .any(|s| s.sni.is_none() && s.host.as_deref() == Some(&by_ip)),
        "{seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn probe_goes_to_its_target_whatever_the_host() {
    let backend = Backend::http().await;
    let port = backend.addr().port();
    let mut h = Harness::new();
    let with_host = |host: &str| {
        let mut c = check(CheckKind::Http, Health::Down, 1, 1);
        c.host = Some(host.into());
        // `check.port` (1) differs from the target's port: the target wins.
        key(&backend, c)
    };
    // Neither name resolves, and nothing listens on 127.0.0.2: a probe that looked the name up
    // or connected to an IP-literal host would fail.
    let by_name = with_host("Pool.Example.Invalid");
    let by_ip = with_host("127.0.0.2");
    h.monitor.set_probes([by_name.clone(), by_ip.clone()]);

    for _ in 0..2 {
        let flip = h.next().await;
        assert_eq!(flip.health, Health::Up, "{flip:?}");
    }
    let hosts: Vec<_> = backend.seen().into_iter().filter_map(|s| s.host).collect();
    assert!(
        hosts.contains(&format!("pool.example.invalid:{port}")),
        "{hosts:?}"
    );
    assert!(hosts.contains(&format!("127.0.0.2:{port}")), "{hosts:?}");
}

#[tokio::test(start_paused = true)]
async fn identical_keys_share_one_probe_and_survive_set_probes() {
    let backend = Backend::http().await;
    let mut h = Harness::new();
    let k = key(&backend, check(CheckKind::Http, Health::Down, 1, 1));
    h.monitor.set_probes([k.clone(), k.clone()]);

    let flip = h.next().await;
    assert_eq!((&flip.key, flip.health), (&k, Health::Up));
    let after_first = backend.requests();
    assert_eq!(after_first, 1);
    // Ten intervals of one probe are 9 to 12 probes; two probes would make about 20.
    h.quiet_for(INTERVAL * 10).await;
    let probes = backend.requests() - after_first;
    assert!(
        (9..=12).contains(&probes),
        "{probes} probes in ten intervals"
    );

    // Setting the same key again keeps its task and its Up state: a new task would start
    // from the initial Down and announce Up again.
    h.monitor.set_probes([k.clone()]);
    h.monitor.set_probes([k]);
    let before = backend.requests();
    h.quiet_for(INTERVAL * 5).await;
    let probes = backend.requests() - before;
    assert!(
        (4..=6).contains(&probes),
        "{probes} probes in five intervals"
    );
}

#[tokio::test(start_paused = true)]
async fn removed_keys_stop_probing() {
    let kept = Backend::http().await;
    let removed = Backend::http().await;
    let mut h = Harness::new();
    let kept_key = key(&kept, check(CheckKind::Http, Health::Up, 1, 1));
    let removed_key = key(&removed, check(CheckKind::Http, Health::Up, 1, 1));
    h.monitor.set_probes([kept_key.clone(), removed_key]);
    until("a first result from each", || h.monitor.first_round_done()).await;

    let series = |b: &Backend| format!("weir_probe_up{{kind=\"http\",target=\"{}\"}}", b.addr());
    assert!(h.metrics.render().contains(&series(&removed)));
    h.monitor.set_probes([kept_key]);
    let rendered = h.metrics.render();
    assert!(
        !rendered.contains(&series(&removed)),
        "a removed probe's series is dropped"
    );
    assert!(rendered.contains(&series(&kept)));
    let (kept_before, removed_before) = (kept.requests(), removed.requests());
    sleep(INTERVAL * 10).await;
    assert_eq!(
        removed.requests(),
        removed_before,
        "a removed key is not probed"
    );
    assert!(kept.requests() - kept_before >= 9, "the other key still is");

    // The shutdown token stops the rest.
    h.shutdown.cancel();
    let kept_before = kept.requests();
    sleep(INTERVAL * 10).await;
    assert_eq!(kept.requests(), kept_before);
}

#[tokio::test(start_paused = true)]
async fn first_round_done_waits_for_every_current_probe() {
    let mut h = Harness::new();
    assert!(
        h.monitor.first_round_done(),
        "no probes: nothing to wait for"
    );

    let slow = Backend::http().await;
    slow.set(Behavior::Blackhole);
    let slow_key = key(&slow, check(CheckKind::Http, Health::Up, 1, 1));
    h.monitor.set_probes([slow_key.clone()]);
    assert!(!h.monitor.first_round_done());
    // The first probe starts within 1 s and times out 2 s later.
    sleep(Duration::from_millis(1900)).await;
    assert!(
        !h.monitor.first_round_done(),
        "still waiting for the timeout"
    );
    until("the blackholed probe's first result", || {
        h.monitor.first_round_done()
    })
    .await;
    // Its first result flipped it, and the flip was on the channel before it counted as done.
    let flip = h
        .events
        .try_recv()
        .expect("flip sent before first_round_done");
    assert_eq!(flip.health, Health::Down);

    let fresh = Backend::http().await;
    h.monitor.set_probes([
        slow_key,
        key(&fresh, check(CheckKind::Http, Health::Up, 1, 1)),
    ]);
    assert!(!h.monitor.first_round_done(), "a new key has no result yet");
    until("the new probe's first result", || {
        h.monitor.first_round_done()
    })
    .await;
    assert!(fresh.requests() >= 1);
}

/// More probes due at once than `MAX_IN_FLIGHT`: that many run, the rest wait for a permit
/// (the wait is not part of their timeout) and still run, and every key gets its result.
#[tokio::test(start_paused = true)]
async fn probes_beyond_the_in_flight_limit_wait_their_turn() {
    let backend = Backend::http().await;
    backend.set(Behavior::Blackhole);
    let mut h = Harness::new();
    let keys: Vec<ProbeKey> = (0..weir::health::MAX_IN_FLIGHT + 44)
        .map(|i| {
            let mut check = check(CheckKind::Http, Health::Up, 1, 1);
            check.path = format!("/health/{i}");
            key(&backend, check)
        })
        .collect();
    h.monitor.set_probes(keys.clone());
    // Every first probe is due within 1 s (10% of the interval); none times out before 2 s.
    sleep(Duration::from_millis(1950)).await;
    assert_eq!(backend.requests(), weir::health::MAX_IN_FLIGHT);
    // The channel holds 16 flips: take them as they come, as the writer does.
    let mut down = std::collections::HashSet::new();
    while !h.monitor.first_round_done() {
        let flip = h.next().await;
        assert_eq!(flip.health, Health::Down);
        assert!(down.insert(flip.key), "one flip per key");
    }
    while let Ok(flip) = h.events.try_recv() {
        assert!(down.insert(flip.key), "one flip per key");
    }
    assert_eq!(down.len(), keys.len());
    assert_eq!(
        backend.requests(),
        keys.len(),
        "one probe each, within the interval"
    );
}

/// A target slower than its interval is probed again as soon as its last probe ends: no
/// probes pile up on it, and none are skipped beyond the ones it was too slow for.
#[tokio::test(start_paused = true)]
async fn a_probe_slower_than_its_interval_runs_back_to_back() {
    let backend = Backend::http().await;
    backend.set(Behavior::Blackhole);
    let mut h = Harness::new();
    let mut check = check(CheckKind::Http, Health::Up, 1, 1);
    check.interval = Duration::from_secs(1);
    check.timeout = Duration::from_secs(3);
    h.monitor.set_probes([key(&backend, check)]);
    until("the first result", || h.monitor.first_round_done()).await;
    let before = backend.requests();
    sleep(Duration::from_secs(30)).await;
    let probes = backend.requests() - before;
    assert!((9..=11).contains(&probes), "{probes} probes in 30 s");
}
