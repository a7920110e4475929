//! deploy/: the files on-call engineers run and watch weir with, checked against the real thing.
//! The Grafana dashboard and the Prometheus alerts may only name metrics a running weir exports
//! (after it has served queries, a routed name's among them, probed, stored a change and aborted a
//! rollout); the container, Kubernetes and systemd configs must pass the real `weir check` with
//! their files laid out where the Containerfile, the StatefulSet's mounts and the unit put them;
//! the canary workflow may only use `weir ctl` commands, flags and JSON fields the real binary
//! has.
//!
//! YAML is read line by line for the few things checked (there is no YAML crate); TOML and JSON
//! with the crates weir itself uses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::backends::Backend;
use crate::support::*;

/// Metric names the dashboard or the alerts may use although a single-node test server does
/// not export them (say, series set only by one store backend), each with the reason. They are
/// checked against src/metrics.rs's source text instead, where names are registered without
/// the `weir_` prefix. Empty today: the store gauges the multi-node alerts use
/// (weir_store_connected, weir_store_staleness_seconds, weir_store_applied_generation) are
/// exported with the sled store too, and the test server produces every situational series
/// (probe histograms, health flips, a store commit, a rollout and its abort, a route's rule
/// counters).
const NOT_EXPORTED_HERE: &[(&str, &str)] = &[];

/// The alerts on-call engineers are promised (docs/operations.md has a section for each).
const ALERTS: [&str; 11] = [
    "WeirDown",
    "WeirEndpointDown",
    "WeirPoolDegraded",
    "WeirRolloutAborted",
    "WeirSplitDrift",
    "WeirReloadFailed",
    "WeirSignaturesExpiring",
    "WeirStoreFailing",
    "WeirStoreDisconnected",
    "WeirStateStale",
    "WeirNodesOutOfSync",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Grafana and Prometheus

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/weir.json")).expect("the dashboard is JSON")
}

/// Every panel's targets' expressions, with the panel's title.
fn dashboard_exprs(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default().to_string();
            out.push((panel["title"].as_str().unwrap_or("?").to_string(), expr));
        }
    }
    for annotation in dash["annotations"]["list"].as_array().unwrap() {
        if let Some(expr) = annotation["expr"].as_str() {
            out.push((format!("annotation {}", annotation["name"]), expr.into()));
        }
    }
    out
}

/// Every `weir_...` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("weir_").map(|i| i + from) {
        let starts_word =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        let end = text[at..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |i| i + at);
        if starts_word {
            names.insert(text[at..end].to_string());
        }
        from = end;
    }
    names
}

/// The names in a Prometheus text exposition: samples (histograms as `_bucket`, `_sum`,
/// `_count`) and the `# TYPE` lines (histograms by their base name).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|line| match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split_whitespace().next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        })
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_dashboard_is_importable_and_every_panel_queries_prometheus() {
    let dash = dashboard();
    assert!(
        dash["schemaVersion"].as_u64().unwrap() >= 36,
        "schemaVersion {}",
        dash["schemaVersion"]
    );
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let variables = dash["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name);
    let ds = variable("DS_PROMETHEUS").expect("a DS_PROMETHEUS variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let instance = variable("instance").expect("an instance variable");
    assert_eq!(instance["type"], "query");
    assert!(instance["query"].as_str().unwrap().contains("instance"));

    let datasource = serde_json::json!({ "type": "prometheus", "uid": "${DS_PROMETHEUS}" });
    let mut ids = BTreeSet::new();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 20, "{} panels", panels.len());
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "id of {title} reused"
        );
        for k in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        if panel["type"] == "row" {
            assert!(panel.get("targets").is_none(), "row {title} has targets");
            continue;
        }
        assert_eq!(panel["datasource"], datasource, "{title}");
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: a target without expr");
            assert_eq!(t["datasource"], datasource, "{title}: {expr}");
            // The instance selector applies everywhere.
            assert!(
                expr.contains("$instance"),
                "{title}: {expr} ignores $instance"
            );
        }
    }
    // Every variable an expression names exists (or is one of Grafana's own).
    let defined: BTreeSet<&str> = variables
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for (title, expr) in dashboard_exprs(&dash) {
        for part in expr.split('$').skip(1) {
            let name: String = part
                .trim_start_matches('{')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                name.starts_with("__") || defined.contains(name.as_str()),
                "{title}: ${name} is not a variable"
            );
        }
    }
    // The panels the briefs of issues 4 and 15 ask for are there.
    let text = read("deploy/grafana/weir.json");
    for needed in [
        "weir_dns_responses_total",
        "weir_dns_queries_total",
        "weir_dns_zone_queries_total",
        "weir_dns_dropped_total",
        "weir_dns_truncated_total",
        "weir_dns_tcp_connections_open",
        "weir_dns_tcp_connections_refused_total",
        "weir_pool_answers_total",
        "sum by (name, rule, pool) (rate(weir_route_queries_total",
        "sum by (pool) (rate(weir_route_queries_total",
        "kind=\\\"intended\\\"",
        "kind=\\\"observed\\\"",
        "weir_endpoint_up",
        "histogram_quantile(0.99, sum by (le, kind) (rate(weir_probe_duration_seconds_bucket",
        "weir_pool_degraded",
        "weir_rollout_step",
        "weir_rollout_weight",
        "weir_rollout_state",
        "weir_rollout_aborts_total",
        "weir_snapshot_generation",
        "weir_last_reload_success",
        "weir_last_reload_timestamp_seconds",
        "weir_store_commit_seconds_bucket",
        "weir_admin_requests_total",
        "weir_store_connected",
        "weir_store_staleness_seconds",
        "weir_store_applied_generation",
    ] {
        assert!(
            text.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
}

/// Each alert by name: its lines in alerts.yml.
fn alert_rules() -> BTreeMap<String, String> {
    let text = read("deploy/prometheus/alerts.yml");
    let mut rules = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert:") {
            if let Some((n, body)) = current.take() {
                rules.insert(n, body);
            }
            current = Some((name.trim().to_string(), String::new()));
        } else if let Some((_, body)) = current.as_mut()
            && !line.trim_start().starts_with('#')
        {
            body.push_str(line);
            body.push('\n');
        }
    }
    rules.extend(current);
    rules
}

#[test]
fn every_promised_alert_has_a_severity_a_summary_and_its_runbook_anchor() {
    let rules = alert_rules();
    let names: BTreeSet<&str> = rules.keys().map(String::as_str).collect();
    assert_eq!(names, ALERTS.into_iter().collect::<BTreeSet<_>>());
    for (name, body) in &rules {
        assert!(body.contains("expr:"), "{name}: no expr");
        assert!(
            body.contains("severity: critical") || body.contains("severity: warning"),
            "{name}: no severity"
        );
        assert!(body.contains("summary:"), "{name}: no summary");
        let runbook = format!(
            "runbook_url: \"docs/operations.md#{}\"",
            name.to_lowercase()
        );
        assert!(body.contains(&runbook), "{name}: no `{runbook}`");
    }
    // The scrape config loads exactly these rules, for the job the alerts select.
    let prometheus = read("deploy/prometheus/prometheus.yml");
    assert!(prometheus.contains("rule_files:\n  - alerts.yml"));
    assert!(prometheus.contains("job_name: weir"));
    assert!(rules["WeirDown"].contains("up{job=\"weir\"}"));
    for ns in ["ns1", "ns2"] {
        assert!(prometheus.contains(&format!("\"{ns}.example.com:8053\"")));
    }
}

/// Runs promtool when it is installed (.ci/test installs it; CI=true makes it required).
fn promtool(args: &[&str]) -> Option<std::process::Output> {
    match std::process::Command::new("promtool").args(args).output() {
        Ok(out) => Some(out),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool not run ({e}); .ci/test installs it");
            None
        }
        Err(e) => panic!("promtool: {e}"),
    }
}

#[test]
fn every_dashboard_expression_is_valid_promql() {
    // promtool parses recording rules: each expression becomes one, with Grafana's variables
    // replaced by values of their kind.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in dashboard_exprs(&dashboard()).iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "1m")
            .replace("$__range", "1h")
            .replace("$instance", ".*")
            .replace("$pool", "app.example.com.");
        rules.push_str(&format!(
            "      - record: dashboard_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let path = dir.path().join("dashboard.rules.yml");
    std::fs::write(&path, rules).unwrap();
    if let Some(out) = promtool(&["check", "rules", path.to_str().unwrap()]) {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A real server that has done everything the dashboard shows

const ZONE: &str = "$ORIGIN example.com.
$TTL 300
@ SOA ns1 hm 1 7200 3600 1209600 300
@ NS ns1
ns1 A 192.0.2.53
www A 192.0.2.80
";

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A routed name (`[[route]]`, no databases needed): the query source 127.0.0.1 matches its
/// subnet rule, so `weir_route_queries_total` has series, and counts.
const ROUTED: &str = "routed.example.com.";

/// A server whose pool `pool` has one healthy and one dead endpoint (a health flip, probe
/// failures), and a routed name, that has answered over UDP and TCP, stored a weight change (a store commit) and
/// had a rollout started and aborted. The backend must live as long as the server.
async fn busy_server(pool: &str) -> (Server, Backend) {
    let up = Backend::http().await;
    let pools = format!(
        r#"
[[pool]]
name = "{pool}"
ttl = 30
[pool.check]
kind = "http"
interval = "1s"
timeout = "500ms"
rise = 1
fall = 1
[pool.rollout]
from = "blue"
to = "green"
steps = [{{ set_weight = 50 }}, {{ pause = "manual" }}, {{ set_weight = 100 }}]
[[pool.group]]
name = "blue"
weight = 100
endpoints = [{{ address = "192.0.2.10", probe = "{up}" }}, {{ address = "192.0.2.11", probe = "{dead}" }}]
[[pool.group]]
name = "green"
weight = 0
endpoints = [{{ address = "192.0.2.20", probe = "{up}" }}]
[[route]]
name = "{ROUTED}"
[[route.rule]]
pool = "lab"
subnets = ["127.0.0.0/8"]
[[route.rule]]
pool = "rest"
[[route.pool]]
name = "lab"
[[route.pool.group]]
name = "main"
endpoints = [{{ address = "192.0.2.30" }}]
[[route.pool]]
name = "rest"
[[route.pool.group]]
name = "main"
endpoints = [{{ address = "192.0.2.40" }}]
"#,
        up = up.addr(),
        dead = closed_port(),
    );
    // Signed, so the DNSSEC series are exported too.
    let keys = tempfile::tempdir().unwrap();
    let zone = weir::model::Name::parse("example.com.").unwrap();
    let csk = weir::dnssec::SigningKey::generate(
        weir::dnssec::Algorithm::EcdsaP256Sha256,
        weir::dnssec::FLAGS_KSK,
    )
    .unwrap();
    weir::dnssec::write_key(keys.path(), &zone, &csk, 3600, "20261203000000", false).unwrap();
    let s = Server::builder()
        .zone("example.com.", ZONE)
        .zone_keys("dnssec = true")
        .pools(&pools)
        .tables(&format!(
            "[dnssec]\nkey_dir = \"{}\"",
            keys.path().display()
        ))
        .start()
        .await;
    for (name, rtype) in [
        (pool, RecordType::A),
        (ROUTED, RecordType::A),
        ("example.com.", RecordType::SOA),
        ("www.example.com.", RecordType::A),
        ("nothing.example.com.", RecordType::A),
    ] {
        s.udp(&query(name, rtype)).await;
        s.tcp(&query(name, rtype)).await;
    }
    let path = format!("/v1/pools/{pool}");
    let (code, body) = http(
        s.admin(),
        Method::PUT,
        &format!("{path}/groups/blue/weight"),
        &[],
        Some(r#"{"weight": 90, "reason": "deploy test"}"#),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(
        s.admin(),
        Method::POST,
        &format!("{path}/rollouts"),
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(
        s.admin(),
        Method::POST,
        &format!("{path}/rollout/abort"),
        &[],
        Some(r#"{"reason": "deploy test"}"#),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // Every probe has a first result, the dead endpoint has flipped down, probes were timed.
    for _ in 0..100 {
        let (ready, _) = http_get(s.admin(), "/readyz").await;
        let (_, metrics) = http_get(s.admin(), "/metrics").await;
        if ready == 200
            && metrics.contains("weir_health_transitions_total{")
            && metrics.contains("weir_probe_duration_seconds_bucket{")
        {
            return (s, up);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("probes never reported:\n{}", s.metrics());
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let (s, _backend) = busy_server("app.example.com.").await;
    let (code, exposition) = http_get(s.admin(), "/metrics").await;
    assert_eq!(code, 200);
    let exported = exported_names(&exposition);

    let metrics_rs = read("src/metrics.rs");
    let allowed: BTreeMap<&str, &str> = NOT_EXPORTED_HERE.iter().copied().collect();
    let mut used = BTreeSet::new();
    for file in [
        "deploy/grafana/weir.json",
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts.test.yml",
    ] {
        for name in metric_names(&read(file)) {
            used.insert(name.clone());
            if exported.contains(&name) {
                continue;
            }
            let Some(reason) = allowed.get(name.as_str()) else {
                panic!(
                    "{file} uses {name}, which weir does not export; it exports:\n{exported:#?}"
                );
            };
            // Registered in metrics.rs without the prefix; histograms by their base name.
            let base = name.strip_prefix("weir_").unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| base.strip_suffix(s))
                .unwrap_or(base);
            assert!(
                metrics_rs.contains(&format!("\"{base}\"")),
                "{file} uses {name} ({reason}), which src/metrics.rs does not register"
            );
        }
    }
    for name in allowed.keys() {
        assert!(used.contains(*name), "{name} is allowed but no longer used");
        assert!(
            !exported.contains(*name),
            "{name} is exported: take it off NOT_EXPORTED_HERE"
        );
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Configs checked with the real `weir check`, in the layout they are deployed in

/// Lays a config out under `root` as if `root` were `/`: writes it at `root/<config_path>` with
/// the absolute paths it names (admin files, store) moved under `root`, and creates the admin
/// secrets it names (a token file of mode 0600, a self-signed certificate and key) where nothing
/// is yet. Then runs `weir check` on it and returns its stdout; panics with stderr if it fails.
fn weir_check(root: &Path, config_path: &str, config: &str) -> String {
    let table: toml::Table = config.parse().expect("the config is TOML");
    let admin = table.get("admin").and_then(|a| a.as_table());
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let key = |k: &str| admin.and_then(|a| a.get(k)).and_then(|v| v.as_str());
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    for (k, content) in [
        (
            "token_file",
            "ci write 0123456789abcdef0123456789\n".to_string(),
        ),
        ("tls_cert", certified.cert.pem()),
        ("tls_key", certified.signing_key.serialize_pem()),
    ] {
        let Some(path) = key(k).filter(|p| p.starts_with('/')) else {
            continue;
        };
        let file = at(path);
        if !file.exists() {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            write_secret(&file, &content);
        }
    }
    let mut moved = config.to_string();
    for (_, path) in absolute_paths(config) {
        moved = moved.replace(
            &format!("\"{path}\""),
            &format!("\"{}\"", at(&path).display()),
        );
    }
    let file = at(config_path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, moved).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .env_remove("WEIR_CONFIG")
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "weir check {config_path}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The absolute paths a config names: the admin files and the store.
fn absolute_paths(config: &str) -> Vec<(String, String)> {
    let table: toml::Table = config.parse().unwrap();
    let mut out = Vec::new();
    for (section, key) in [
        ("admin", "token_file"),
        ("admin", "tls_cert"),
        ("admin", "tls_key"),
        ("store", "path"),
    ] {
        if let Some(p) = table
            .get(section)
            .and_then(|t| t.get(key))
            .and_then(|v| v.as_str())
            .filter(|p| p.starts_with('/'))
        {
            out.push((format!("{section}.{key}"), p.to_string()));
        }
    }
    out
}

fn store_path(config: &str) -> String {
    let table: toml::Table = config.parse().unwrap();
    table["store"]["path"].as_str().unwrap().to_string()
}

/// `path` lies strictly inside `dir`.
fn inside(path: &str, dir: &str) -> bool {
    Path::new(path).starts_with(dir) && Path::new(path) != Path::new(dir)
}

/// Dockerfile lines with their continuations joined, comments left out.
fn containerfile_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    lines.push(current.trim().to_string());
                }
                current.clear();
            }
        }
    }
    lines
}

#[test]
fn the_container_image_layout_holds_a_config_that_weir_check_accepts() {
    let lines = containerfile_lines(&read("deploy/container/Containerfile"));
    let instruction = |name: &str| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("{name} ")))
            .map(str::to_string)
            .collect()
    };
    let stages = instruction("FROM");
    assert!(
        stages.iter().any(|f| f.contains("rust:1-bookworm")),
        "{stages:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cargo build --release --locked")),
        "no release build"
    );
    let last_stage = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();

    // Every COPY from the build context names files of this repository; those of the last stage
    // make up the image's /etc/weir.
    let root = tempfile::tempdir().unwrap();
    for (i, line) in lines.iter().enumerate() {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        if args.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        let (dest, sources) = words.split_last().unwrap();
        for source in sources {
            let from = repo().join(source);
            assert!(from.exists(), "COPY {source}: not in the repository");
            if i > last_stage {
                assert!(dest.starts_with('/'), "COPY {source} {dest}: relative");
                let to = root.path().join(dest.trim_start_matches('/'));
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(&from, &to).unwrap();
            }
        }
    }

    // ENTRYPOINT + CMD run `weir serve --config <a file the image has>`.
    let exec_form = |name: &str| -> Vec<String> {
        let v = instruction(name)
            .pop()
            .unwrap_or_else(|| panic!("no {name}"));
        serde_json::from_str(&v).unwrap_or_else(|_| panic!("{name} {v}: not the exec form"))
    };
    let entrypoint = exec_form("ENTRYPOINT");
    let cmd = exec_form("CMD");
    assert_eq!(entrypoint, ["/usr/local/bin/weir"]);
    assert_eq!(cmd[..2], ["serve", "--config"]);
    let config_path = &cmd[2];
    let config = std::fs::read_to_string(root.path().join(config_path.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{config_path} is not COPYed into the image: {e}"));

    // The store is on a volume; the ports served are exposed.
    let volumes = instruction("VOLUME");
    let store = store_path(&config);
    assert!(
        volumes.iter().any(|v| inside(&store, v)),
        "store {store} is not inside a VOLUME {volumes:?}"
    );
    let exposed: Vec<String> = instruction("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    for port in ["53/udp", "53/tcp", "8053/tcp"] {
        let bare = port.trim_end_matches("/tcp");
        assert!(
            exposed.iter().any(|e| e == port || e == bare),
            "{port} not exposed: {exposed:?}"
        );
    }
    let table: toml::Table = config.parse().unwrap();
    for listen in table["dns"]["listen"].as_array().unwrap() {
        assert!(listen.as_str().unwrap().ends_with(":53"), "{listen}");
    }
    assert!(
        table["admin"]["listen"]
            .as_str()
            .unwrap()
            .ends_with(":8053")
    );
    assert!(
        instruction("USER")
            .iter()
            .all(|u| !u.starts_with('0') && u != "root")
    );

    let out = weir_check(root.path(), config_path, &config);
    assert!(out.contains(": ok ("), "{out}");
}

/// The items of the YAML list under `key:` (line-based: `key:` on a line of its own, then
/// `- item` lines indented deeper).
fn yaml_list(text: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut indent = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let depth = line.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match indent {
            None if trimmed == format!("{key}:") => indent = Some(depth),
            Some(d) if depth > d || (depth == d && trimmed.starts_with("- ")) => {
                if let Some(item) = trimmed.strip_prefix("- ") {
                    out.push(item.trim().trim_matches('"').to_string());
                }
            }
            Some(_) => indent = None,
            None => {}
        }
    }
    out
}

/// `value` of the first `key: value` line after a line containing `after`.
fn yaml_after(text: &str, after: &str, key: &str) -> Option<String> {
    let start = text.find(after)?;
    text[start..].lines().find_map(|l| {
        l.trim()
            .trim_start_matches("- ")
            .strip_prefix(&format!("{key}:"))
            .map(|v| v.trim().trim_matches('"').to_string())
    })
}

/// The name of the pod volume whose source is `source` (`secret:`, `configMap:`...).
fn volume_of(statefulset: &str, source: &str) -> String {
    let mut name = None;
    for line in statefulset.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("- name: ") {
            name = Some(n.to_string());
        } else if line == source {
            return name.unwrap();
        }
    }
    panic!("no volume from {source}");
}

#[test]
fn the_kubernetes_config_map_passes_weir_check_with_the_pods_mounts() {
    let dir = "deploy/kubernetes";
    let kustomization = read(&format!("{dir}/kustomization.yaml"));
    for resource in yaml_list(&kustomization, "resources") {
        assert!(
            repo().join(dir).join(&resource).exists(),
            "resource {resource} missing"
        );
    }
    let files = yaml_list(&kustomization, "files");
    assert!(files.contains(&"weir.toml".to_string()), "{files:?}");
    let statefulset = read(&format!("{dir}/statefulset.yaml"));
    let services = read(&format!("{dir}/services.yaml"));
    let secret = read(&format!("{dir}/secret.yaml"));

    // Volume mounts by name; the ConfigMap generated from `files` is the config volume.
    let mut mounts = BTreeMap::new();
    let lines: Vec<&str> = statefulset.lines().map(str::trim).collect();
    for pair in lines.windows(2) {
        if let (Some(name), Some(path)) = (
            pair[0].strip_prefix("- name: "),
            pair[1].strip_prefix("mountPath: "),
        ) {
            mounts.insert(name.to_string(), path.to_string());
        }
    }
    let generated = yaml_after(&kustomization, "configMapGenerator:", "name").unwrap();
    assert_eq!(
        yaml_after(&statefulset, "configMap:", "name"),
        Some(generated)
    );
    let config_dir = &mounts[&volume_of(&statefulset, "configMap:")];
    let config_path = format!("{config_dir}/weir.toml");
    assert!(
        statefulset.contains(&format!(
            "args: [\"serve\", \"--config\", \"{config_path}\"]"
        )),
        "the container does not serve {config_path}"
    );
    let config = read(&format!("{dir}/weir.toml"));

    // Every file the config names outside the config folder is on a volume: the store on the
    // claim template, admin files on the Secret (by key) or written there by the init container.
    let secret_dir = &mounts[&volume_of(&statefulset, "secret:")];
    let secret_keys: Vec<String> = secret
        .lines()
        .skip_while(|l| !l.starts_with("stringData:"))
        .skip(1)
        .filter_map(|l| {
            l.strip_prefix("  ")?
                .split_once(':')
                .map(|(k, _)| k.to_string())
        })
        .filter(|k| !k.starts_with(' '))
        .collect();
    for (key, path) in absolute_paths(&config) {
        let (volume, mount) = mounts
            .iter()
            .find(|(_, m)| inside(&path, m))
            .unwrap_or_else(|| panic!("{key} = {path}: on no volume of {mounts:?}"));
        if key == "store.path" {
            let template = yaml_after(&statefulset, "volumeClaimTemplates:", "name").unwrap();
            assert_eq!(volume, &template, "the store is not on the claim template");
        } else if mount == secret_dir {
            let name = Path::new(&path).file_name().unwrap().to_str().unwrap();
            assert!(
                secret_keys.iter().any(|k| k == name),
                "{key}: no Secret key {name}"
            );
        } else {
            // Copied by the init container from the Secret.
            let name = Path::new(&path).file_name().unwrap().to_str().unwrap();
            assert!(
                statefulset.contains(&format!("{secret_dir}/{name} {path}")),
                "{key} = {path}: nothing puts it there"
            );
            assert!(
                secret_keys.iter().any(|k| k == name),
                "{key}: no Secret key {name}"
            );
        }
    }

    // Probes on the admin API, over HTTPS since it has TLS; DNS on 53 as configured.
    let table: toml::Table = config.parse().unwrap();
    let admin_port = table["admin"]["listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    assert_eq!(
        yaml_after(&statefulset, "- name: admin\n", "containerPort").as_deref(),
        Some(admin_port)
    );
    for (probe, path) in [
        ("readinessProbe:", "/readyz"),
        ("livenessProbe:", "/healthz"),
    ] {
        assert_eq!(
            yaml_after(&statefulset, probe, "path").as_deref(),
            Some(path)
        );
        assert_eq!(
            yaml_after(&statefulset, probe, "port").as_deref(),
            Some("admin")
        );
        assert_eq!(
            yaml_after(&statefulset, probe, "scheme").as_deref(),
            Some("HTTPS")
        );
    }
    for listen in table["dns"]["listen"].as_array().unwrap() {
        assert!(listen.as_str().unwrap().ends_with(":53"), "{listen}");
    }
    assert!(statefulset.contains("replicas: 2"));
    assert!(statefulset.contains("runAsNonRoot: true"));
    assert!(statefulset.contains("add: [\"NET_BIND_SERVICE\"]"));
    for pod in ["weir-0", "weir-1"] {
        assert!(services.contains(&format!("statefulset.kubernetes.io/pod-name: {pod}")));
    }
    assert!(services.contains("protocol: UDP") && services.contains("protocol: TCP"));

    let root = tempfile::tempdir().unwrap();
    for file in &files {
        let to = root
            .path()
            .join(config_dir.trim_start_matches('/'))
            .join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo().join(dir).join(file), &to).unwrap();
    }
    let out = weir_check(root.path(), &config_path, &config);
    assert!(out.contains(": ok (1 zone, 1 pool"), "{out}");
}

/// `Key=value` lines of a systemd unit.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_systemd_unit_serves_a_config_whose_paths_it_provides() {
    let unit = read("deploy/systemd/weir.service");
    let one = |key: &str| -> String {
        let v = unit_values(&unit, key);
        assert_eq!(v.len(), 1, "{key}: {v:?}");
        v[0].clone()
    };
    let exec = one("ExecStart");
    let config_path = exec
        .strip_prefix("/usr/local/bin/weir serve --config ")
        .unwrap_or_else(|| panic!("ExecStart={exec}"))
        .to_string();
    assert_eq!(
        one("ExecStartPre"),
        format!("/usr/local/bin/weir check --config {config_path}")
    );
    assert!(one("ExecReload").contains("-HUP $MAINPID"));
    assert_eq!(one("AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    assert_eq!(one("CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");

    // The config the unit's comment installs at that path.
    assert!(
        unit.contains(&format!("deploy/systemd/weir.toml {config_path}")),
        "the unit does not say to install deploy/systemd/weir.toml as {config_path}"
    );
    let config = read("deploy/systemd/weir.toml");
    let state_dir = format!("/var/lib/{}", one("StateDirectory"));
    let store = store_path(&config);
    assert!(
        inside(&store, &state_dir),
        "[store] path {store} is not inside StateDirectory {state_dir}"
    );
    // The service reads its config folder (read-only) and writes only its StateDirectory; the
    // token file is installed owned by the service's user, mode 0600, as weir demands.
    let config_dir = one("ReadOnlyPaths");
    assert!(
        inside(&config_path, &config_dir),
        "{config_path} not in {config_dir}"
    );
    for (key, path) in absolute_paths(&config) {
        let wanted = if key == "store.path" {
            &state_dir
        } else {
            &config_dir
        };
        assert!(inside(&path, wanted), "{key} = {path}: not inside {wanted}");
    }
    let user = one("User");
    let token_file = absolute_paths(&config)
        .into_iter()
        .find(|(key, _)| key == "admin.token_file")
        .map(|(_, path)| path)
        .unwrap();
    assert!(
        unit.lines()
            .any(|l| l.contains(&format!("install -m 0600 -o {user} "))
                && l.contains(&format!(" {token_file} "))),
        "the unit does not say to install {token_file} as 0600 owned by {user}"
    );
    let root = tempfile::tempdir().unwrap();
    let zones = root.path().join("etc/weir/zones");
    std::fs::create_dir_all(&zones).unwrap();
    std::fs::copy(
        repo().join("zones/example.com.zone"),
        zones.join("example.com.zone"),
    )
    .unwrap();
    assert!(unit.contains("install -m 0644 zones/example.com.zone /etc/weir/zones/"));
    let out = weir_check(root.path(), &config_path, &config);
    assert!(out.contains(": ok ("), "{out}");
}

// ---------------------------------------------------------------------------------------------
// The canary workflow and `weir ctl`

/// One shell word: its text, and whether it was quoted (a value, never a subcommand).
struct Word {
    text: String,
    quoted: bool,
}

/// The words after each `weir ctl` in `script`, up to the end of that command.
fn ctl_invocations(script: &str) -> Vec<Vec<Word>> {
    let joined = script.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(at) = rest.find("weir ctl ") {
            rest = &rest[at + "weir ctl ".len()..];
            let mut words = Vec::new();
            let mut chars = rest.chars().peekable();
            'words: loop {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                let mut text = String::new();
                let mut quoted = false;
                while let Some(&c) = chars.peek() {
                    match c {
                        '"' | '\'' => {
                            quoted = true;
                            chars.next();
                            for q in chars.by_ref() {
                                if q == c {
                                    break;
                                }
                                text.push(q);
                            }
                        }
                        c if c.is_whitespace() => break,
                        // A shell operator ends the word, and the command if it starts a word.
                        '|' | ';' | '&' | '>' | '<' | ')' if text.is_empty() && !quoted => {
                            break 'words;
                        }
                        '|' | ';' | '&' | '>' | '<' | ')' => break,
                        c => {
                            text.push(c);
                            chars.next();
                        }
                    }
                }
                if text.is_empty() && !quoted {
                    break;
                }
                words.push(Word { text, quoted });
            }
            out.push(words);
        }
    }
    out
}

/// `weir ctl <path> --help`, which must succeed.
fn ctl_help(path: &[String]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("ctl")
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "weir ctl {} is not a command: {}",
        path.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Whether `help` lists `--flag`, and whether it takes a value.
fn flag_in(help: &str, flag: &str) -> Option<bool> {
    let needle = format!("--{flag}");
    help.match_indices(&needle).find_map(|(at, _)| {
        let after = &help[at + needle.len()..];
        match after.chars().next() {
            Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_' => None,
            _ => Some(after.starts_with(" <")),
        }
    })
}

#[tokio::test]
async fn the_canary_workflow_uses_real_ctl_commands_flags_and_json_fields() {
    let workflow = read("deploy/ci/canary.yml");
    let pool = workflow
        .lines()
        .find_map(|l| l.trim().strip_prefix("POOL:"))
        .expect("a POOL in the workflow's env")
        .trim()
        .to_string();
    // The pool the workflow rolls out is one the Kubernetes config defines, with a plan.
    let k8s: toml::Table = read("deploy/kubernetes/weir.toml").parse().unwrap();
    let k8s_pool = k8s["pool"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(pool.as_str()))
        .unwrap_or_else(|| panic!("{pool} is not a pool of deploy/kubernetes/weir.toml"));
    assert!(
        k8s_pool.get("rollout").is_some(),
        "{pool} has no [pool.rollout]"
    );

    // Every `weir ctl` command and flag is one the binary accepts.
    let mut commands = BTreeSet::new();
    for words in ctl_invocations(&workflow) {
        let mut path: Vec<String> = Vec::new();
        let mut help = ctl_help(&path);
        let mut flags = Vec::new();
        let mut positional = false;
        let mut iter = words.iter();
        while let Some(w) = iter.next() {
            if let Some(flag) = w.text.strip_prefix("--").filter(|_| !w.quoted) {
                let name = flag.split('=').next().unwrap().to_string();
                let takes_value = flag_in(&help, &name)
                    .unwrap_or_else(|| panic!("weir ctl {}: no flag --{name}", path.join(" ")));
                if takes_value && !flag.contains('=') {
                    iter.next();
                }
                flags.push(name);
            } else if !w.quoted
                && !positional
                && w.text.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            {
                path.push(w.text.clone());
                help = ctl_help(&path);
            } else {
                positional = true;
            }
        }
        assert!(!path.is_empty(), "`weir ctl` without a command");
        for flag in &flags {
            assert!(
                flag_in(&help, flag).is_some(),
                "weir ctl {}: no flag --{flag}",
                path.join(" ")
            );
        }
        if path == ["rollout", "status"] {
            assert!(
                flags.contains(&"json".to_string()),
                "rollout status without --json"
            );
        }
        commands.insert(path.join(" "));
    }
    for needed in ["rollout start", "rollout status", "rollout abort"] {
        assert!(
            commands.contains(needed),
            "no `weir ctl {needed}`: {commands:?}"
        );
    }

    // The JSON fields it reads are in what `weir ctl --json` prints for a real rollout, and the
    // states it tells apart are weir's.
    let (s, _backend) = busy_server(&pool).await;
    let url = format!("http://{}", s.admin());
    let ctl_json = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .env_remove("WEIR_TOKEN")
            .arg("ctl")
            .args(&args)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let rollout = ctl_json(words(&format!("--url {url} --json rollout status {pool}"))).await;
    let status = ctl_json(words(&format!("--url {url} --json status"))).await;
    assert_eq!(rollout["state"], "aborted");
    for (at, _) in workflow.match_indices("jq ") {
        let filter = workflow[at..].split('\'').nth(1).unwrap_or_default();
        let field: String = filter
            .trim_start_matches('.')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            rollout.get(&field).is_some() || status.get(&field).is_some(),
            "the workflow reads .{field}, which weir ctl --json does not print"
        );
    }
    let (_, exposition) = http_get(s.admin(), "/metrics").await;
    let states: BTreeSet<String> = exposition
        .lines()
        .filter(|l| l.starts_with("weir_rollout_state{"))
        .filter_map(|l| l.split("state=\"").nth(1)?.split('"').next())
        .map(str::to_string)
        .collect();
    let arms: Vec<String> = workflow
        .lines()
        .filter_map(|l| l.trim().split_once(')'))
        .map(|(arm, _)| arm.trim_matches('"').to_string())
        .filter(|arm| !arm.is_empty() && arm.chars().all(|c| c.is_ascii_lowercase() || c == ' '))
        .collect();
    for arm in &arms {
        assert!(
            states.contains(arm),
            "state `{arm}` is not one of {states:?}"
        );
    }
    // An aborted rollout fails the job.
    let aborted = workflow.find("aborted)").expect("no case for aborted");
    let arm = &workflow[aborted..];
    assert!(arm[..arm.find(";;").unwrap()].contains("exit 1"));
    assert!(arms.contains(&"done".to_string()));
    s.stop().await;
}
