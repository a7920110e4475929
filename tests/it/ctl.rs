//! `weir ctl`: the real binary against a real server started in-process. The binary runs as a
//! child process awaited on tokio, so the test's runtime keeps serving the admin API meanwhile.

use std::collections::HashSet;

use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::support::*;

const ZONE: &str =
    "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n";

/// blue 90 (two endpoints), green 10 (one), no probes: every endpoint is up.
const POOLS: &str = "[[pool]]\nname = \"app.example.com.\"\nttl = 30\n[[pool.group]]\nname = \"blue\"\nweight = 90\nendpoints = [{ address = \"192.0.2.10\" }, { address = \"192.0.2.11\" }]\n[[pool.group]]\nname = \"green\"\nweight = 10\nendpoints = [{ address = \"192.0.2.20\" }]\n";

const READ_TOKEN: &str = "reader-token-0123456789";
const WRITE_TOKEN: &str = "writer-token-0123456789";

async fn server() -> Server {
    Server::serving(ZONE, POOLS).await
}

#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `weir ctl <args>` against `url`, with only `env` of weir's variables set.
pub(crate) async fn ctl_at(url: &str, env: &[(&str, &str)], args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .env_remove("WEIR_ADMIN_URL")
        .env_remove("WEIR_TOKEN")
        .envs(env.iter().copied())
        .args(["ctl", "--url", url])
        .args(args)
        .output()
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

pub(crate) async fn ctl(s: &Server, args: &[&str]) -> Out {
    ctl_at(&format!("http://{}", s.admin()), &[], args).await
}

/// Runs a command that must succeed and returns its stdout.
pub(crate) async fn ok(s: &Server, args: &[&str]) -> String {
    let out = ctl(s, args).await;
    assert_eq!(out.code, 0, "weir ctl {args:?}: {out:?}");
    assert!(out.stderr.is_empty(), "weir ctl {args:?}: {out:?}");
    out.stdout
}

/// The cells of the first table line that starts with `prefix`.
pub(crate) fn row(table: &str, prefix: &[&str]) -> Option<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.len() >= prefix.len() && cells[..prefix.len()] == *prefix)
}

/// The generation in a confirmation line "... (generation N)".
pub(crate) fn generation(line: &str) -> u64 {
    line.trim_end()
        .strip_suffix(')')
        .and_then(|l| l.rsplit_once("(generation "))
        .and_then(|(_, g)| g.parse().ok())
        .unwrap_or_else(|| panic!("no generation in {line:?}"))
}

/// The distinct addresses answered for app.example.com. A over `n` TCP queries.
async fn answered(s: &Server, n: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        let r = s.tcp(&query("app.example.com.", RecordType::A)).await;
        seen.extend(r.answers.iter().map(|a| a.data.to_string()));
    }
    seen
}

fn set(addresses: &[&str]) -> HashSet<String> {
    addresses.iter().map(|a| a.to_string()).collect()
}

#[tokio::test]
async fn status_pools_and_pool_show_names_and_weights() {
    let s = server().await;
    let status = ok(&s, &["status"]).await;
    assert_eq!(row(&status, &["ready"]).unwrap()[1], "yes", "{status}");
    assert!(status.contains("zones       1: example.com."), "{status}");
    assert!(
        status.contains("pools       1: app.example.com."),
        "{status}"
    );
    assert!(status.contains("degraded    none"), "{status}");

    let pools = ok(&s, &["pools"]).await;
    assert_eq!(
        row(&pools, &["POOL"]).unwrap(),
        ["POOL", "TTL", "GROUPS", "DEGRADED"]
    );
    assert_eq!(
        row(&pools, &["app.example.com."]).unwrap(),
        ["app.example.com.", "30", "blue=90", "green=10", "no"],
        "{pools}"
    );

    // The name is accepted without the final dot and in any case.
    let pool = ok(&s, &["pool", "App.Example.com"]).await;
    assert_eq!(row(&pool, &["pool"]).unwrap()[1], "app.example.com.");
    assert_eq!(
        row(&pool, &["blue"]).unwrap(),
        ["blue", "90", "90", "config", "2"],
        "{pool}"
    );
    assert_eq!(
        row(&pool, &["green"]).unwrap(),
        ["green", "10", "10", "config", "1"]
    );
    let endpoint = row(&pool, &["green", "192.0.2.20"]).unwrap();
    // weight, configured, source, override, up, share (one answer: green's 10%), probe, health, last
    assert_eq!(
        endpoint[2..],
        ["1", "1", "config", "auto", "yes", "10.0%", "-", "-", "-"],
        "{pool}"
    );
    s.stop().await;
}

#[tokio::test]
async fn set_weight_shows_in_the_pool_and_in_answers() {
    let s = server().await;
    // 90/10: blue answers at least once in 50 queries (all green: 1e-50).
    let seen = answered(&s, 50).await;
    assert!(
        seen.contains("192.0.2.10") || seen.contains("192.0.2.11"),
        "{seen:?}"
    );

    let line = ok(
        &s,
        &[
            "set-weight",
            "app.example.com.",
            "blue",
            "0",
            "--reason",
            "all to green",
        ],
    )
    .await;
    let g = generation(&line);
    assert_eq!(
        line,
        format!("app.example.com.: group blue weight -> 0 (generation {g})\n")
    );
    let pool = ok(&s, &["pool", "app.example.com."]).await;
    assert_eq!(
        row(&pool, &["blue"]).unwrap(),
        ["blue", "0", "90", "override", "2"],
        "{pool}"
    );
    assert_eq!(row(&pool, &["generation"]).unwrap()[1], g.to_string());
    assert_eq!(answered(&s, 30).await, set(&["192.0.2.20"]));

    // Back to the configured weight: the source says config again.
    let line = ok(&s, &["set-weight", "app.example.com.", "blue", "90"]).await;
    assert_eq!(generation(&line), g + 1);
    let pools = ok(&s, &["pools"]).await;
    assert!(pools.contains("blue=90 green=10"), "{pools}");
    let pool = ok(&s, &["pool", "app.example.com."]).await;
    assert_eq!(
        row(&pool, &["blue"]).unwrap(),
        ["blue", "90", "90", "config", "2"]
    );
    s.stop().await;
}

#[tokio::test]
async fn drain_and_undrain() {
    let s = server().await;
    for address in ["192.0.2.10", "192.0.2.11"] {
        let line = ok(&s, &["drain", "app.example.com.", address]).await;
        assert!(
            line.starts_with(&format!(
                "app.example.com.: endpoint {address} weight -> 0 (drained) (generation "
            )),
            "{line}"
        );
    }
    let pool = ok(&s, &["pool", "app.example.com."]).await;
    assert_eq!(
        row(&pool, &["blue", "192.0.2.10"]).unwrap()[2..5],
        ["0", "1", "override"],
        "{pool}"
    );
    // Blue has no weight left inside it, so only green answers.
    assert_eq!(answered(&s, 30).await, set(&["192.0.2.20"]));

    let line = ok(&s, &["undrain", "app.example.com.", "192.0.2.10"]).await;
    assert!(
        line.starts_with(
            "app.example.com.: endpoint 192.0.2.10 weight -> as configured (generation "
        ),
        "{line}"
    );
    let pool = ok(&s, &["pool", "app.example.com."]).await;
    assert_eq!(
        row(&pool, &["blue", "192.0.2.10"]).unwrap()[2..5],
        ["1", "1", "config"]
    );
    assert_eq!(
        row(&pool, &["blue", "192.0.2.11"]).unwrap()[2..5],
        ["0", "1", "override"]
    );
    assert!(answered(&s, 50).await.contains("192.0.2.10"));
    s.stop().await;
}

#[tokio::test]
async fn force_down_then_auto() {
    let s = server().await;
    let line = ok(&s, &["force", "app.example.com.", "192.0.2.20", "down"]).await;
    assert!(
        line.starts_with("app.example.com.: endpoint 192.0.2.20 override -> down (generation "),
        "{line}"
    );
    let pool = ok(&s, &["pool", "app.example.com."]).await;
    // override, up, share
    assert_eq!(
        row(&pool, &["green", "192.0.2.20"]).unwrap()[5..8],
        ["down", "no", "-"],
        "{pool}"
    );
    assert!(!answered(&s, 50).await.contains("192.0.2.20"));

    ok(&s, &["force", "app.example.com.", "192.0.2.20", "auto"]).await;
    let pool = ok(&s, &["pool", "app.example.com."]).await;
    assert_eq!(
        row(&pool, &["green", "192.0.2.20"]).unwrap()[5..8],
        ["auto", "yes", "10.0%"]
    );
    s.stop().await;
}

#[tokio::test]
async fn add_and_remove_endpoints() {
    let s = server().await;
    let line = ok(
        &s,
        &[
            "add",
            "app.example.com.",
            "green",
            "192.0.2.21",
            "--weight",
            "5",
        ],
    )
    .await;
    assert!(
        line.starts_with(
            "app.example.com.: endpoint 192.0.2.21 added to group green with weight 5 (generation "
        ),
        "{line}"
    );
    let pool = ok(&s, &["pool", "app.example.com."]).await;
    assert_eq!(
        row(&pool, &["green", "192.0.2.21"]).unwrap()[2..7],
        ["5", "-", "runtime", "auto", "yes"],
        "{pool}"
    );
    assert_eq!(
        row(&pool, &["green"]).unwrap(),
        ["green", "10", "10", "config", "2"]
    );

    let line = ok(&s, &["remove", "app.example.com.", "192.0.2.21"]).await;
    assert!(
        line.starts_with("app.example.com.: endpoint 192.0.2.21 removed (generation "),
        "{line}"
    );
    // A configured endpoint removed is listed as removed.
    ok(
        &s,
        &[
            "remove",
            "app.example.com.",
            "192.0.2.11",
            "--reason",
            "decommissioned",
        ],
    )
    .await;
    let pool = ok(&s, &["pool", "app.example.com."]).await;
    assert!(row(&pool, &["green", "192.0.2.21"]).is_none(), "{pool}");
    assert!(row(&pool, &["blue", "192.0.2.11"]).is_none(), "{pool}");
    assert_eq!(row(&pool, &["removed"]).unwrap(), ["removed", "192.0.2.11"]);
    assert!(!answered(&s, 50).await.contains("192.0.2.11"));
    s.stop().await;
}

#[tokio::test]
async fn audit_lists_changes_newest_first() {
    let s = server().await;
    let first = ok(
        &s,
        &[
            "set-weight",
            "app.example.com.",
            "green",
            "20",
            "--reason",
            "canary",
        ],
    )
    .await;
    let second = ok(
        &s,
        &[
            "drain",
            "app.example.com.",
            "192.0.2.10",
            "--reason",
            "kernel update",
        ],
    )
    .await;
    let audit = ok(&s, &["audit"]).await;
    let lines: Vec<&str> = audit.lines().collect();
    assert_eq!(lines.len(), 3, "{audit}");
    assert!(lines[0].starts_with("GEN "), "{audit}");
    assert!(
        lines[1].starts_with(&generation(&second).to_string()),
        "{audit}"
    );
    assert!(
        lines[2].starts_with(&generation(&first).to_string()),
        "{audit}"
    );
    for (line, want) in [
        (
            lines[1],
            [
                "set-endpoint-weight",
                "endpoint 192.0.2.10",
                "weight 1 -> 0",
                "kernel update",
            ],
        ),
        (
            lines[2],
            [
                "set-group-weight",
                "group green",
                "weight 10 -> 20",
                "canary",
            ],
        ),
    ] {
        assert!(
            line.contains("  local  127.0.0.1  app.example.com.  "),
            "{line}"
        );
        for w in want {
            assert!(line.contains(w), "{w} not in {line}");
        }
    }
    let limited = ok(&s, &["audit", "--pool", "app.example.com", "--limit", "1"]).await;
    assert_eq!(limited.lines().count(), 2, "{limited}");
    assert!(limited.contains("kernel update"), "{limited}");
    let other = ok(&s, &["audit", "--pool", "other.example.com."]).await;
    assert_eq!(other, "no audit records\n");
    s.stop().await;
}

#[tokio::test]
async fn json_output_is_the_apis_json() {
    let s = server().await;
    let parse = |text: &str| -> Value { serde_json::from_str(text).unwrap() };
    let pools = parse(&ok(&s, &["pools", "--json"]).await);
    assert_eq!(pools["pools"][0]["name"], "app.example.com.");
    assert_eq!(pools["pools"][0]["groups"][0]["weight"], 90);
    let start = pools["generation"].as_u64().unwrap();

    // --json is global: before the subcommand works too.
    let changed = parse(
        &ok(
            &s,
            &["--json", "set-weight", "app.example.com.", "green", "30"],
        )
        .await,
    );
    assert_eq!(changed["generation"].as_u64(), Some(start + 1));

    let pool = parse(&ok(&s, &["pool", "app.example.com.", "--json"]).await);
    assert_eq!(pool["groups"][1]["weight"]["effective"], 30);
    assert_eq!(pool["groups"][1]["weight"]["source"], "override");
    let audit = parse(&ok(&s, &["audit", "--json"]).await);
    assert_eq!(audit["records"][0]["action"], "set-group-weight");
    let status = parse(&ok(&s, &["status", "--json"]).await);
    assert_eq!(status["ready"], true);
    assert_eq!(status["zones"]["zones"][0], "example.com.");
    assert_eq!(status["pools"]["generation"].as_u64(), Some(start + 1));
    let reload = parse(&ok(&s, &["reload", "--json"]).await);
    assert!(reload["generation"].as_u64().is_some());
    s.stop().await;
}

#[tokio::test]
async fn reload_and_a_failed_reload_with_its_problems() {
    let s = server().await;
    let line = ok(&s, &["reload"]).await;
    assert_eq!(
        line,
        format!("reloaded (generation {})\n", generation(&line))
    );

    let path = s.config_path();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("bogus_key = 1\n{good}")).unwrap();
    let out = ctl(&s, &["reload"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let mut lines = out.stderr.lines();
    assert_eq!(
        lines.next(),
        Some(
            "weir ctl: 422 Unprocessable Entity: reload failed; the previous config keeps serving"
        )
    );
    let problems: Vec<&str> = lines.collect();
    assert!(!problems.is_empty(), "{out:?}");
    assert!(problems.iter().all(|p| p.starts_with("  - ")), "{out:?}");
    assert!(problems.iter().any(|p| p.contains("bogus_key")), "{out:?}");
    // The old config keeps serving.
    assert_eq!(answered(&s, 1).await.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn refusals_exit_1_with_the_apis_message() {
    let s = server().await;
    let out = ctl(&s, &["pool", "nope.example.com."]).await;
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (
            1,
            "",
            "weir ctl: 404 Not Found: no pool `nope.example.com.`\n"
        )
    );
    let out = ctl(&s, &["set-weight", "app.example.com.", "purple", "5"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "weir ctl: 404 Not Found: no group `purple` in pool `app.example.com.`\n"
    );
    // Zero total weight needs --force.
    ok(&s, &["set-weight", "app.example.com.", "green", "0"]).await;
    let out = ctl(&s, &["set-weight", "app.example.com.", "blue", "0"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("weir ctl: 409 Conflict: this would leave pool"),
        "{out:?}"
    );
    ok(
        &s,
        &["set-weight", "app.example.com.", "blue", "0", "--force"],
    )
    .await;

    // If-Match: a stale generation is refused, the current one goes through.
    let generation: u64 = row(
        &ok(&s, &["pool", "app.example.com."]).await,
        &["generation"],
    )
    .unwrap()[1]
        .parse()
        .unwrap();
    let stale = (generation - 1).to_string();
    let out = ctl(
        &s,
        &[
            "set-weight",
            "app.example.com.",
            "blue",
            "50",
            "--if-match",
            &stale,
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr,
        format!(
            "weir ctl: 412 Precondition Failed: the state is at generation {generation}, the change was based on {stale}\n"
        )
    );
    let current = generation.to_string();
    ok(
        &s,
        &[
            "set-weight",
            "app.example.com.",
            "blue",
            "50",
            "--if-match",
            &current,
        ],
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn no_server_exits_2_and_bad_usage_exits_64() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    // The URL from the environment, as in a shell profile.
    let url = format!("http://127.0.0.1:{port}");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .env("WEIR_ADMIN_URL", &url)
        .env_remove("WEIR_TOKEN")
        .args(["ctl", "pools"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("weir ctl: no answer from {url}/v1/pools: ")),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");

    for args in [
        &["set-weight", "app.example.com.", "blue", "heavy"][..],
        &["drain", "app.example.com.", "192.0.2.300"],
        &["force", "app.example.com.", "192.0.2.10", "sideways"],
        &["frobnicate"],
        &[],
    ] {
        let out = ctl_at(&url, &[], args).await;
        assert_eq!(out.code, 64, "{args:?}: {out:?}");
    }
    let out = ctl_at("not a url", &[], &["pools"]).await;
    assert_eq!(out.code, 64, "{out:?}");
}

#[tokio::test]
async fn tokens_401_without_and_403_for_read_scope() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    write_secret(
        &tokens,
        &format!("reader read {READ_TOKEN}\nwriter write {WRITE_TOKEN}\n"),
    );
    let s = Server::builder()
        .zone("example.com.", ZONE)
        .admin_tokens(&tokens)
        .pools(POOLS)
        .start()
        .await;
    let url = format!("http://{}", s.admin());
    let reader_file = dir.path().join("reader");
    std::fs::write(&reader_file, format!("{READ_TOKEN}\n")).unwrap();
    let reader_file = reader_file.to_str().unwrap();

    let out = ctl_at(&url, &[], &["pools"]).await;
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            1,
            "weir ctl: 401 Unauthorized: missing or invalid bearer token\n"
        )
    );
    let out = ctl_at(
        &url,
        &[],
        &["--token", "not-the-right-token-at-all", "pools"],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("401 Unauthorized"), "{out:?}");

    // A read token reads, and is refused a write.
    let out = ctl_at(&url, &[], &["pools", "--token-file", reader_file]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("blue=90 green=10"), "{out:?}");
    let args = [
        "set-weight",
        "app.example.com.",
        "blue",
        "5",
        "--token-file",
        reader_file,
    ];
    let out = ctl_at(&url, &[], &args).await;
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            1,
            "weir ctl: 403 Forbidden: token `reader` has read scope; this request needs write\n"
        )
    );

    // A write token from the environment; the audit log names it.
    let env = [("WEIR_TOKEN", WRITE_TOKEN)];
    let out = ctl_at(&url, &env, &["set-weight", "app.example.com.", "blue", "5"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = ctl_at(&url, &env, &["audit"]).await;
    assert_eq!(row(&out.stdout, &["GEN"]).unwrap()[2], "ACTOR");
    assert!(
        out.stdout.lines().nth(1).unwrap().contains("  writer  "),
        "{out:?}"
    );
    // --token and --token-file together are a usage error.
    let out = ctl_at(
        &url,
        &[],
        &["pools", "--token", WRITE_TOKEN, "--token-file", reader_file],
    )
    .await;
    assert_eq!(out.code, 64, "{out:?}");
    s.stop().await;
}

/// A routed name: eu for 198.51.100.0/24, us for everyone else.
const ROUTE: &str = "[[route]]\nname = \"www.example.com.\"\n[[route.rule]]\npool = \"eu\"\nsubnets = [\"198.51.100.0/24\"]\n[[route.rule]]\npool = \"us\"\n[[route.pool]]\nname = \"eu\"\n[[route.pool.group]]\nname = \"main\"\nendpoints = [{ address = \"192.0.2.10\" }]\n[[route.pool]]\nname = \"us\"\n[[route.pool.group]]\nname = \"main\"\nendpoints = [{ address = \"192.0.2.20\" }, { address = \"192.0.2.21\" }]\n";

#[tokio::test]
async fn routes_route_and_a_clients_preview() {
    let s = Server::serving(ZONE, ROUTE).await;
    s.udp(&query("www.example.com.", RecordType::A)).await;
    let out = ok(&s, &["routes"]).await;
    assert!(out.starts_with("www.example.com.\n"), "{out}");
    assert_eq!(
        row(&out, &["1"]).unwrap(),
        [
            "1",
            "subnets",
            "198.51.100.0/24",
            "eu@www.example.com.",
            "0"
        ],
        "{out}"
    );
    assert_eq!(
        row(&out, &["2"]).unwrap(),
        ["2", "*", "us@www.example.com.", "1"],
        "{out}"
    );
    assert_eq!(
        row(&out, &["us@www.example.com."]).unwrap(),
        ["us@www.example.com.", "2/2", "no", "serve-all", "1"],
        "{out}"
    );
    let out = ok(
        &s,
        &["route", "www.example.com.", "--ecs", "198.51.100.0/24"],
    )
    .await;
    assert_eq!(row(&out, &["rule"]).unwrap(), ["rule", "1"], "{out}");
    assert_eq!(
        row(&out, &["pool"]).unwrap(),
        ["pool", "eu@www.example.com."],
        "{out}"
    );
    assert_eq!(
        row(&out, &["ecs", "scope"]).unwrap(),
        ["ecs", "scope", "24"],
        "{out}"
    );
    assert_eq!(
        row(&out, &["192.0.2.10"]).unwrap(),
        ["192.0.2.10", "100.0%"],
        "{out}"
    );
    let out = ok(
        &s,
        &["route", "www.example.com.", "--client", "203.0.113.7"],
    )
    .await;
    assert_eq!(
        row(&out, &["pool"]).unwrap(),
        ["pool", "us@www.example.com."],
        "{out}"
    );
    assert_eq!(
        row(&out, &["192.0.2.21"]).unwrap(),
        ["192.0.2.21", "50.0%"],
        "{out}"
    );
    // A pool inside the route takes changes by its label@name.
    let out = ok(&s, &["set-weight", "us@www.example.com.", "main", "5"]).await;
    assert!(out.contains("us@www.example.com."), "{out}");
    let out = ctl(&s, &["route", "nope.example.com."]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("no route `nope.example.com.`"),
        "{out:?}"
    );
    s.stop().await;
}
