//! `weir ctl rollout`: the real binary against a real server started in-process (helpers from
//! `ctl.rs`). The child process cannot follow a paused tokio clock, so these tests check what
//! each command does at once and what the status view says about the deadlines; the timed walk
//! through the steps is in `rollouts.rs`, on the paused clock.

use serde_json::Value;

use crate::ctl::{Out, ctl, ctl_at, generation, ok, row};
use crate::support::*;

const ZONE: &str =
    "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n";

/// app.example.com.: blue 100 / green 0 with a [pool.rollout] (TTL 30 + slack 5: every change
/// settles 35 s later). other.example.com.: two groups and no [pool.rollout].
const POOLS: &str = r#"[[pool]]
name = "app.example.com."
ttl = 30
[pool.rollout]
from = "blue"
to = "green"
slack = "5s"
steps = [{ set_weight = 5 }, { pause = "60s" }, { set_weight = 50 }, { pause = "manual" }, { set_weight = 100 }]
[[pool.group]]
name = "blue"
weight = 100
endpoints = [{ address = "192.0.2.10" }]
[[pool.group]]
name = "green"
weight = 0
endpoints = [{ address = "192.0.2.20" }]

[[pool]]
name = "other.example.com."
ttl = 60
[[pool.group]]
name = "a"
weight = 1
endpoints = [{ address = "192.0.2.30" }]
[[pool.group]]
name = "b"
weight = 0
endpoints = [{ address = "192.0.2.31" }]
"#;

const POOL: &str = "app.example.com.";

async fn server() -> Server {
    Server::serving(ZONE, POOLS).await
}

/// `rollout status POOL` as text.
async fn status(s: &Server, pool: &str) -> String {
    ok(s, &["rollout", "status", pool]).await
}

/// The value of a summary line of the status view ("state", "weight", "next"...).
fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .filter(|rest| rest.starts_with(' '))
                .map(|rest| rest.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {name} in\n{status}"))
}

/// The step list: "[x] set_weight 5", "[>] pause 60s", ...
fn steps(status: &str) -> Vec<String> {
    status
        .lines()
        .filter_map(|l| l.find('[').map(|i| l[i..].to_string()))
        .collect()
}

/// The number in "... in 33s" at the end of `text`. Checks allow 10 s for a slow machine
/// between the command and the status.
fn seconds_in(text: &str) -> u64 {
    text.rsplit_once("in ")
        .map(|(_, s)| s.trim_end_matches(')'))
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse::<f64>().ok())
        .map(|s| s as u64)
        .unwrap_or_else(|| panic!("no \"in Ns\" at the end of {text:?}"))
}

/// A command that must be refused: exit 1, nothing on stdout, exactly `stderr`.
fn refused(out: &Out, stderr: &str) {
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (1, "", stderr),
        "{out:?}"
    );
}

#[tokio::test]
async fn start_then_status_shows_running_at_0_with_a_settle_countdown() {
    let s = server().await;
    let line = ok(&s, &["rollout", "start", POOL, "--reason", "v2"]).await;
    let g = generation(&line);
    assert_eq!(
        line,
        format!("app.example.com.: rollout started (plan from [pool.rollout]) (generation {g})\n")
    );
    // The pool name is accepted without the final dot and in any case.
    let st = status(&s, "App.Example.com").await;
    assert_eq!(field(&st, "pool"), POOL);
    assert_eq!(field(&st, "rollout"), "blue -> green");
    assert_eq!(field(&st, "state"), "running");
    assert_eq!(field(&st, "weight"), "0% green, 100% blue");
    assert_eq!(field(&st, "generation"), g.to_string());
    // 0% settles 36 s after the start (TTL 30 + 1 s + slack 5); the first step comes then.
    let changed = field(&st, "changed");
    assert!(changed.contains("ago, settles at "), "{st}");
    let settles = seconds_in(&changed);
    assert!((26..=36).contains(&settles), "{st}");
    let next = field(&st, "next");
    assert!(next.starts_with("set_weight 5 in "), "{st}");
    assert!((26..=36).contains(&seconds_in(&next)), "{st}");
    assert_eq!(
        steps(&st),
        [
            "[>] set_weight 5",
            "[ ] pause 60s",
            "[ ] set_weight 50",
            "[ ] pause manual",
            "[ ] set_weight 100",
        ],
        "{st}"
    );
    // The rollout's weights are the pool's.
    let pool = ok(&s, &["pool", POOL]).await;
    assert_eq!(row(&pool, &["green"]).unwrap()[1], "0", "{pool}");
    assert_eq!(row(&pool, &["blue"]).unwrap()[1], "100", "{pool}");
    s.stop().await;
}

#[tokio::test]
async fn pause_resume_then_promote_full() {
    let s = server().await;
    ok(&s, &["rollout", "start", POOL]).await;
    let line = ok(&s, &["rollout", "pause", POOL, "--reason", "error rate"]).await;
    assert_eq!(
        line,
        format!(
            "app.example.com.: rollout paused (generation {})\n",
            generation(&line)
        )
    );
    let st = status(&s, POOL).await;
    assert_eq!(field(&st, "state"), "paused");
    assert_eq!(
        field(&st, "next"),
        "none while paused; resume continues with set_weight 5"
    );
    assert_eq!(steps(&st)[0], "[>] set_weight 5");

    let line = ok(&s, &["rollout", "resume", POOL]).await;
    assert!(
        line.starts_with("app.example.com.: rollout resumed (generation "),
        "{line}"
    );
    assert_eq!(field(&status(&s, POOL).await, "state"), "running");

    let line = ok(&s, &["rollout", "promote", POOL, "--full"]).await;
    assert!(
        line.starts_with("app.example.com.: rollout promoted to 100% (generation "),
        "{line}"
    );
    let st = status(&s, POOL).await;
    assert_eq!(field(&st, "state"), "running");
    assert_eq!(field(&st, "weight"), "100% green, 0% blue");
    assert!(field(&st, "next").starts_with("done in "), "{st}");
    assert!(steps(&st).iter().all(|l| l.starts_with("[x] ")), "{st}");

    // Each command is audited with its reason.
    let audit = ok(&s, &["audit", "--pool", POOL]).await;
    let actions: Vec<String> = audit
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(5).unwrap().to_string())
        .collect();
    assert_eq!(
        actions,
        [
            "rollout-promote",
            "rollout-resume",
            "rollout-pause",
            "rollout-start"
        ],
        "{audit}"
    );
    assert!(
        audit.lines().nth(3).unwrap().ends_with("error rate"),
        "{audit}"
    );
    s.stop().await;
}

#[tokio::test]
async fn promote_runs_the_next_weight_now_and_undo_takes_it_back() {
    let s = server().await;
    ok(&s, &["rollout", "start", POOL]).await;
    let line = ok(&s, &["rollout", "promote", POOL]).await;
    assert!(
        line.starts_with("app.example.com.: rollout promoted (generation "),
        "{line}"
    );
    let st = status(&s, POOL).await;
    assert_eq!(field(&st, "weight"), "5% green, 95% blue");
    assert_eq!(
        steps(&st)[..3],
        ["[x] set_weight 5", "[>] pause 60s", "[ ] set_weight 50"]
    );
    // 5% settles in 36 s, then the 60 s pause: 50% in 96 s.
    let next = field(&st, "next");
    assert!(next.starts_with("set_weight 50 in "), "{st}");
    assert!((86..=96).contains(&seconds_in(&next)), "{st}");
    let pool = ok(&s, &["pool", POOL]).await;
    assert_eq!(row(&pool, &["green"]).unwrap()[1], "5", "{pool}");

    let line = ok(&s, &["rollout", "undo", POOL, "--reason", "too early"]).await;
    assert!(
        line.starts_with(
            "app.example.com.: rollout undone to the previous weight (paused) (generation "
        ),
        "{line}"
    );
    let st = status(&s, POOL).await;
    assert_eq!(field(&st, "state"), "paused");
    assert_eq!(field(&st, "weight"), "0% green, 100% blue");
    assert_eq!(steps(&st)[0], "[>] set_weight 5");
    s.stop().await;
}

#[tokio::test]
async fn abort_with_a_reason_shows_in_the_status() {
    let s = server().await;
    ok(&s, &["rollout", "start", POOL]).await;
    ok(&s, &["rollout", "promote", POOL]).await;
    let line = ok(&s, &["rollout", "abort", POOL, "--reason", "bad build"]).await;
    assert!(
        line.starts_with("app.example.com.: rollout aborted (generation "),
        "{line}"
    );
    let st = status(&s, POOL).await;
    assert_eq!(field(&st, "state"), "aborted (operator): bad build");
    assert_eq!(field(&st, "weight"), "0% green, 100% blue");
    assert_eq!(field(&st, "next"), "-");
    assert!(steps(&st).iter().all(|l| !l.starts_with("[>]")), "{st}");
    let audit = ok(&s, &["audit", "--limit", "1"]).await;
    assert!(audit.contains("rollout-abort"), "{audit}");
    assert!(audit.trim_end().ends_with("bad build"), "{audit}");

    // An aborted rollout takes no more commands, and a new one can start.
    let out = ctl(&s, &["rollout", "resume", POOL]).await;
    refused(
        &out,
        "weir ctl: 409 Conflict: the rollout is aborted; `rollout-resume` does not apply\n",
    );
    ok(&s, &["rollout", "start", POOL]).await;
    assert_eq!(field(&status(&s, POOL).await, "state"), "running");
    s.stop().await;
}

#[tokio::test]
async fn refusals_exit_1_with_the_apis_message() {
    let s = server().await;
    let out = ctl(&s, &["rollout", "status", POOL]).await;
    refused(
        &out,
        "weir ctl: 404 Not Found: no rollout for pool `app.example.com.`\n",
    );
    let out = ctl(&s, &["rollout", "promote", POOL]).await;
    refused(
        &out,
        "weir ctl: 404 Not Found: no rollout for pool `app.example.com.`\n",
    );

    ok(&s, &["rollout", "start", POOL]).await;
    let out = ctl(&s, &["rollout", "undo", POOL]).await;
    refused(
        &out,
        "weir ctl: 409 Conflict: nothing to undo: no weight has been set yet\n",
    );
    let out = ctl(&s, &["rollout", "start", POOL]).await;
    refused(
        &out,
        "weir ctl: 409 Conflict: a rollout of `app.example.com.` is already running; abort it or let it finish first\n",
    );
    let out = ctl(&s, &["rollout", "resume", POOL]).await;
    refused(
        &out,
        "weir ctl: 409 Conflict: the rollout is running; `rollout-resume` does not apply\n",
    );

    let out = ctl(&s, &["rollout", "start", "other.example.com."]).await;
    refused(
        &out,
        "weir ctl: 400 Bad Request: pool `other.example.com.` has no [pool.rollout]; send a plan\n",
    );
    let out = ctl(&s, &["rollout", "start", "nope.example.com."]).await;
    refused(
        &out,
        "weir ctl: 404 Not Found: no pool `nope.example.com.`\n",
    );
    s.stop().await;
}

#[tokio::test]
async fn start_with_a_plan_file() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    let file = path.to_str().unwrap();

    // The API checks the plan: an unknown field or group is its 400.
    std::fs::write(
        &path,
        r#"{"from": "a", "to": "b", "steps": [{"set_weight": 5}], "slak": "1s"}"#,
    )
    .unwrap();
    let out = ctl(
        &s,
        &["rollout", "start", "other.example.com.", "--plan", file],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .starts_with("weir ctl: 400 Bad Request: bad rollout plan: unknown field `slak`"),
        "{out:?}"
    );
    std::fs::write(
        &path,
        r#"{"from": "a", "to": "c", "steps": [{"set_weight": 5}]}"#,
    )
    .unwrap();
    let out = ctl(
        &s,
        &["rollout", "start", "other.example.com.", "--plan", file],
    )
    .await;
    refused(
        &out,
        "weir ctl: 400 Bad Request: no group `c` in pool `other.example.com.`\n",
    );

    std::fs::write(
        &path,
        r#"{"from": "a", "to": "b", "steps": [{"set_weight": 50}, {"pause": "10m"}, {"pause": "manual"}, {"set_weight": 100}], "slack": "0s"}"#,
    )
    .unwrap();
    let line = ok(
        &s,
        &[
            "rollout",
            "start",
            "other.example.com.",
            "--plan",
            file,
            "--reason",
            "v2 on b",
        ],
    )
    .await;
    assert_eq!(
        line,
        format!(
            "other.example.com.: rollout a -> b started (generation {})\n",
            generation(&line)
        )
    );
    let st = status(&s, "other.example.com.").await;
    assert_eq!(field(&st, "rollout"), "a -> b");
    assert_eq!(field(&st, "weight"), "0% b, 100% a");
    // TTL 60 + 1 s + slack 0.
    assert!(
        (51..=61).contains(&seconds_in(&field(&st, "changed"))),
        "{st}"
    );
    assert_eq!(
        steps(&st),
        [
            "[>] set_weight 50",
            "[ ] pause 10m",
            "[ ] pause manual",
            "[ ] set_weight 100"
        ]
    );
    // A plan file overrides [pool.rollout] too.
    std::fs::write(
        &path,
        r#"{"from": "green", "to": "blue", "steps": [{"set_weight": 0}]}"#,
    )
    .unwrap();
    ok(&s, &["rollout", "start", POOL, "--plan", file]).await;
    let st = status(&s, POOL).await;
    assert_eq!(field(&st, "rollout"), "green -> blue");
    assert_eq!(steps(&st), ["[>] set_weight 0"]);
    s.stop().await;
}

#[tokio::test]
async fn json_status_and_changes_are_the_apis_json() {
    let s = server().await;
    let parse = |text: &str| -> Value { serde_json::from_str(text).unwrap() };
    let started = parse(&ok(&s, &["rollout", "start", POOL, "--json"]).await);
    let g = started["generation"].as_u64().unwrap();
    // --json is global: before the subcommand works too.
    let st = parse(&ok(&s, &["--json", "rollout", "status", POOL]).await);
    assert_eq!(st["pool"], POOL);
    assert_eq!(st["state"], "running");
    assert_eq!(st["weight"], 0);
    assert_eq!(st["generation"].as_u64(), Some(g));
    assert_eq!(st["plan"][0]["set_weight"], 5);
    assert!(
        st["settles_in_ms"].as_u64().is_some_and(|t| t <= 36_000),
        "{st}"
    );
    let paused = parse(&ok(&s, &["rollout", "pause", POOL, "--json"]).await);
    assert_eq!(paused["generation"].as_u64(), Some(g + 1));
    let st = parse(&ok(&s, &["rollout", "status", POOL, "--json"]).await);
    assert_eq!(st["state"], "paused");
    s.stop().await;
}

#[tokio::test]
async fn bad_usage_exits_64_and_no_server_exits_2() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let out = ctl_at(&url, &[], &["rollout", "status", POOL]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.starts_with(&format!(
            "weir ctl: no answer from {url}/v1/pools/app.example.com./rollout: "
        )),
        "{out:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let missing = missing.to_str().unwrap();
    let toml = dir.path().join("plan.toml");
    std::fs::write(&toml, "from = \"blue\"\n").unwrap();
    let toml = toml.to_str().unwrap();
    // Without from/to/steps the API would read "no plan" and run [pool.rollout] instead.
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "{}").unwrap();
    let empty = empty.to_str().unwrap();
    let typo = dir.path().join("typo.json");
    std::fs::write(
        &typo,
        r#"{"from": "blue", "to": "green", "step": [{"set_weight": 5}]}"#,
    )
    .unwrap();
    let typo = typo.to_str().unwrap();
    for args in [
        &["rollout"][..],
        &["rollout", "frobnicate", POOL],
        &["rollout", "start"],
        &["rollout", "status", POOL, "extra"],
        &["rollout", "promote", POOL, "--force"],
        &["rollout", "pause", POOL, "--if-match", "3"],
        &["rollout", "start", POOL, "--plan", missing],
        &["rollout", "start", POOL, "--plan", toml],
        &["rollout", "start", POOL, "--plan", empty],
        &["rollout", "start", POOL, "--plan", typo],
    ] {
        let out = ctl_at(&url, &[], args).await;
        assert_eq!(out.code, 64, "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
    let out = ctl_at(&url, &[], &["rollout", "start", POOL, "--plan", missing]).await;
    assert!(out.stderr.contains("cannot read "), "{out:?}");
    let out = ctl_at(&url, &[], &["rollout", "start", POOL, "--plan", typo]).await;
    assert!(out.stderr.contains("missing \"steps\""), "{out:?}");
}

#[tokio::test]
async fn finalize_is_promote() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "ctl",
            "--url",
            "http://127.0.0.1:9",
            "rollout",
            "finalize",
            "app.example.com",
        ])
        .output()
        .await
        .unwrap();
    // Parsed as a command (so it gets as far as the network: 2 = unreachable, not 64 = usage).
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
