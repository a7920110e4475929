//! What people read from `weir ctl`: aligned tables and short summaries of the admin API's JSON.
//! Pure functions of that JSON (and of the current time, for "3s ago"), so they are
//! table-tested here. A field the API leaves out shows as `-` rather than failing the command.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

/// Rows of cells, each column padded to its widest cell, two spaces apart.
#[derive(Debug, Default)]
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn with_header(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| (*h).to_string()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A summary's `name  value` row.
    fn field(&mut self, name: &str, value: String) {
        self.row(vec![name.into(), value]);
    }

    fn render(&self, out: &mut String) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                line.push_str(cell);
                let pad = width - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// A JSON value as a cell: strings bare, numbers as written, booleans yes/no, absent as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => yes_no(*b).into(),
        other => other.to_string(),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `{"ipv4": bool, "ipv6": bool}` (either family's `degraded`) as "no", "ipv4", "ipv4,ipv6".
fn degraded(ipv4: &Value, ipv6: &Value) -> String {
    let families: Vec<&str> = [("ipv4", ipv4), ("ipv6", ipv6)]
        .into_iter()
        .filter(|(_, d)| d.as_bool() == Some(true))
        .map(|(name, _)| name)
        .collect();
    if families.is_empty() {
        "no".into()
    } else {
        families.join(",")
    }
}

/// `weir ctl status`.
pub(super) fn status(
    ready: bool,
    readyz: &str,
    zones: &Value,
    pools: &Value,
    nodes: &Value,
) -> String {
    let mut t = Table::default();
    t.row(vec![
        "ready".into(),
        format!("{} ({readyz})", yes_no(ready)),
    ]);
    t.row(vec!["generation".into(), cell(&pools["generation"])]);
    let zone_names: Vec<String> = list(&zones["zones"]).iter().map(cell).collect();
    t.row(vec!["zones".into(), counted(&zone_names)]);
    let pool_list = list(&pools["pools"]);
    let pool_names: Vec<String> = pool_list.iter().map(|p| cell(&p["name"])).collect();
    t.row(vec!["pools".into(), counted(&pool_names)]);
    let degraded_pools: Vec<String> = pool_list
        .iter()
        .filter_map(|p| {
            let d = degraded(&p["degraded"]["ipv4"], &p["degraded"]["ipv6"]);
            (d != "no").then(|| format!("{} ({d})", cell(&p["name"])))
        })
        .collect();
    let shown = if degraded_pools.is_empty() {
        "none".to_string()
    } else {
        degraded_pools.join(", ")
    };
    t.row(vec!["degraded".into(), shown]);
    if nodes["shared"] == true {
        let shown = match nodes["error"].as_str() {
            Some(error) => format!("unknown: {error}"),
            None => list(&nodes["nodes"])
                .iter()
                .map(|n| match n["generation"].as_u64() {
                    Some(g) => format!("{} at {g}", cell(&n["node_id"])),
                    None => format!("{} gone", cell(&n["node_id"])),
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        t.row(vec!["nameservers".into(), shown]);
    }
    let mut out = String::new();
    t.render(&mut out);
    out
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// "2: a., b." or "0".
fn counted(names: &[String]) -> String {
    if names.is_empty() {
        "0".into()
    } else {
        format!("{}: {}", names.len(), names.join(", "))
    }
}

/// `weir ctl pools`.
pub(super) fn pools(body: &Value) -> String {
    let pools = list(&body["pools"]);
    let mut out = String::new();
    if pools.is_empty() {
        out.push_str("no pools\n");
    } else {
        let mut t = Table::with_header(&["POOL", "TTL", "GROUPS", "DEGRADED"]);
        for p in pools {
            let groups: Vec<String> = list(&p["groups"])
                .iter()
                .map(|g| format!("{}={}", cell(&g["name"]), cell(&g["weight"])))
                .collect();
            t.row(vec![
                cell(&p["name"]),
                cell(&p["ttl"]),
                if groups.is_empty() {
                    "-".into()
                } else {
                    groups.join(" ")
                },
                degraded(&p["degraded"]["ipv4"], &p["degraded"]["ipv6"]),
            ]);
        }
        t.render(&mut out);
    }
    out.push_str(&format!("generation {}\n", cell(&body["generation"])));
    out
}

/// A rule's criteria in one cell: `subnets 198.51.100.0/24; countries DE`, or `*`.
fn criteria(rule: &Value) -> String {
    let parts: Vec<String> = ["subnets", "continents", "countries", "subdivisions", "asns"]
        .iter()
        .filter(|k| !list(&rule[**k]).is_empty())
        .map(|k| {
            let items: Vec<String> = list(&rule[*k]).iter().map(cell).collect();
            format!("{k} {}", items.join(" "))
        })
        .collect();
    if parts.is_empty() {
        "*".into()
    } else {
        parts.join("; ")
    }
}

/// One route's rules and pools.
fn route_tables(r: &Value, out: &mut String) {
    out.push_str(&format!(
        "{}
",
        cell(&r["name"])
    ));
    let mut t = Table::with_header(&["RULE", "MATCHES", "POOL", "QUERIES"]);
    for rule in list(&r["rules"]) {
        t.row(vec![
            cell(&rule["rule"]),
            criteria(rule),
            cell(&rule["pool"]),
            cell(&rule["queries"]),
        ]);
    }
    t.render(out);
    let mut t = Table::with_header(&["POOL", "UP", "DEGRADED", "ON ALL DOWN", "QUERIES"]);
    for p in list(&r["pools"]) {
        let status = &p["status"];
        t.row(vec![
            cell(&p["pool"]),
            format!("{}/{}", cell(&p["up"]), cell(&p["endpoints"])),
            degraded(&status["ipv4"]["degraded"], &status["ipv6"]["degraded"]),
            cell(&p["on_all_down"]),
            cell(&p["queries"]),
        ]);
    }
    t.render(out);
}

/// `weir ctl routes`.
pub(super) fn routes(body: &Value) -> String {
    let mut out = String::new();
    let routes = list(&body["routes"]);
    if routes.is_empty() {
        out.push_str("no routes\n");
    }
    for r in routes {
        route_tables(r, &mut out);
        out.push('\n');
    }
    for db in list(&body["databases"]) {
        out.push_str(&format!(
            "{} database {} ({}, built {})\n",
            cell(&db["kind"]),
            cell(&db["path"]),
            cell(&db["type"]),
            time(&db["build_epoch"]),
        ));
    }
    out.push_str(&format!("generation {}\n", cell(&body["generation"])));
    out
}

/// `weir ctl route NAME`.
pub(super) fn route(body: &Value) -> String {
    let mut out = String::new();
    route_tables(body, &mut out);
    out.push_str(&format!("generation {}\n", cell(&body["generation"])));
    out
}

/// `weir ctl route NAME --client/--ecs`.
pub(super) fn route_preview(body: &Value) -> String {
    let mut t = Table::default();
    t.field("name", cell(&body["name"]));
    for key in ["client", "ecs"] {
        if !body[key].is_null() {
            t.field(key, cell(&body[key]));
        }
    }
    t.field("rule", cell(&body["rule"]));
    t.field("pool", cell(&body["pool"]));
    t.field("ecs scope", cell(&body["ecs_scope"]));
    let preview = &body["preview"];
    t.field("outcome", cell(&preview["outcome"]));
    let mut out = String::new();
    t.render(&mut out);
    let mut t = Table::with_header(&["ENDPOINT", "SHARE"]);
    for e in list(&preview["endpoints"]) {
        let share = e[1].as_f64().unwrap_or(0.0);
        t.row(vec![cell(&e[0]), format!("{:.1}%", share * 100.0)]);
    }
    t.render(&mut out);
    out.push_str(&format!("generation {}\n", cell(&body["generation"])));
    out
}

/// `{"configured": .., "effective": .., "source": ..}` as three cells.
fn weights(w: &Value) -> [String; 3] {
    [
        cell(&w["effective"]),
        cell(&w["configured"]),
        cell(&w["source"]),
    ]
}

/// An endpoint's share of answers in one family, from the pool status' `shares` lists.
fn share(status: &Value, address: &str) -> String {
    ["ipv4", "ipv6"]
        .iter()
        .flat_map(|f| list(&status[*f]["shares"]))
        .find(|s| s[0].as_str() == Some(address))
        .and_then(|s| s[1].as_f64())
        .map_or_else(|| "-".into(), |f| format!("{:.1}%", f * 100.0))
}

/// A probe's last result: "ok: HTTP 200 in 4 ms, 3s ago".
fn last(result: &Value, now: u64) -> String {
    if result.is_null() {
        return "-".into();
    }
    let verdict = if result["ok"].as_bool() == Some(true) {
        "ok"
    } else {
        "failed"
    };
    let ago = result["at"]
        .as_u64()
        .map(|at| format!(", {} ago", age(now.saturating_sub(at))))
        .unwrap_or_default();
    let took = result["duration_ms"]
        .as_u64()
        .map(|ms| format!(" in {ms} ms"))
        .unwrap_or_default();
    format!("{verdict}: {}{took}{ago}", cell(&result["reason"]))
}

fn age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Milliseconds as seconds with one decimal: "4.5s".
fn millis(ms: u64) -> String {
    format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
}

/// `weir ctl convergence POOL`: a summary, then the largest silent resolvers.
pub(super) fn convergence(body: &Value) -> String {
    let pool = cell(&body["pool"]);
    if body["tracking"] == false {
        return format!("{pool}: convergence tracking is off ([dns] track_convergence = false)\n");
    }
    let c = &body["change"];
    if c.is_null() {
        return format!("{pool}: its answers have not changed since weir started\n");
    }
    let ago = match (c["changed_at_ms"].as_u64(), body["now_ms"].as_u64()) {
        (Some(at), Some(now)) => format!("{} ago", millis(now.saturating_sub(at))),
        _ => "-".into(),
    };
    let share = c["refetched"]
        .as_f64()
        .map_or("-".into(), |r| format!("{:.1}%", r * 100.0));
    let converged = match c["converged_after_ms"].as_u64() {
        Some(ms) => format!("yes, 99% after {}", millis(ms)),
        None => "no".into(),
    };
    let mut summary = Table::default();
    summary.field("pool", pool);
    summary.field(
        "changed",
        format!("{ago} (generation {})", cell(&c["generation"])),
    );
    summary.field(
        "re-fetched",
        format!(
            "{share} of {} queries; {} of {} resolvers",
            cell(&c["queries_before"]),
            cell(&c["resolvers_refetched"]),
            cell(&c["resolvers_before"])
        ),
    );
    summary.field(
        "window",
        c["window_ms"]
            .as_u64()
            .map_or("-".into(), |ms| format!("{} before the change", millis(ms))),
    );
    summary.field("converged", converged);
    let mut out = String::new();
    summary.render(&mut out);
    let silent = list(&c["silent"]);
    if !silent.is_empty() {
        out.push('\n');
        let mut t = Table::with_header(&["SILENT RESOLVER", "QUERIES BEFORE"]);
        for s in silent {
            t.row(vec![cell(&s["prefix"]), cell(&s["queries"])]);
        }
        t.render(&mut out);
    }
    out
}

/// `weir ctl pool NAME`.
pub(super) fn pool(body: &Value, now: u64) -> String {
    let status = &body["status"];
    let mut out = String::new();
    let mut summary = Table::default();
    summary.field("pool", cell(&body["name"]));
    summary.field("generation", cell(&body["generation"]));
    summary.field(
        "ttl",
        format!(
            "{} (while degraded {})",
            cell(&body["ttl"]),
            cell(&body["degraded_ttl"])
        ),
    );
    summary.field("answers", cell(&body["answers"]));
    summary.field("sticky", cell(&body["sticky"]));
    summary.field("on_all_down", cell(&body["on_all_down"]));
    summary.field("min_healthy", cell(&body["min_healthy"]));
    for family in ["ipv4", "ipv6"] {
        summary.field(family, cell(&status[family]["outcome"]));
    }
    summary.field(
        "degraded",
        degraded(&status["ipv4"]["degraded"], &status["ipv6"]["degraded"]),
    );
    let removed: Vec<String> = list(&body["removed"]).iter().map(cell).collect();
    if !removed.is_empty() {
        summary.field("removed", removed.join(", "));
    }
    summary.render(&mut out);

    let groups = list(&body["groups"]);
    out.push('\n');
    let mut t = Table::with_header(&["GROUP", "WEIGHT", "CONFIGURED", "SOURCE", "ENDPOINTS"]);
    for g in groups {
        let [effective, configured, source] = weights(&g["weight"]);
        let count = list(&g["endpoints"]).len().to_string();
        t.row(vec![cell(&g["name"]), effective, configured, source, count]);
    }
    t.render(&mut out);

    out.push('\n');
    let mut t = Table::with_header(&[
        "GROUP",
        "ENDPOINT",
        "WEIGHT",
        "CONFIGURED",
        "SOURCE",
        "OVERRIDE",
        "UP",
        "SHARE",
        "PROBE",
        "HEALTH",
        "LAST",
    ]);
    for g in groups {
        for e in list(&g["endpoints"]) {
            let address = cell(&e["address"]);
            let [effective, configured, source] = weights(&e["weight"]);
            let probe = &e["probe"];
            let target = if probe.is_null() {
                "-".into()
            } else {
                format!("{} {}", cell(&probe["kind"]), cell(&probe["target"]))
            };
            t.row(vec![
                cell(&g["name"]),
                address.clone(),
                effective,
                configured,
                source,
                cell(&e["override"]),
                cell(&e["up"]),
                share(status, &address),
                target,
                cell(&probe["health"]),
                last(&probe["last"], now),
            ]);
        }
    }
    t.render(&mut out);
    out
}

/// Seconds since the epoch as RFC 3339 UTC.
fn time(v: &Value) -> String {
    v.as_u64().map_or_else(
        || "-".into(),
        |t| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string(),
    )
}

/// `{"k": v, ..}` as "k=v ..".
fn fields(v: &Value) -> String {
    match v.as_object() {
        Some(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(" "),
        None => cell(v),
    }
}

/// What an audit record changed: "weight 10 -> 25", "new: group=g weight=1", "was: ...".
fn change(before: &Value, after: &Value) -> String {
    match (before.as_object(), after.as_object()) {
        (Some(b), Some(a)) if b.keys().eq(a.keys()) => b
            .iter()
            .map(|(k, old)| format!("{k} {} -> {}", cell(old), cell(&a[k])))
            .collect::<Vec<_>>()
            .join(", "),
        _ if before.is_null() => format!("new: {}", fields(after)),
        _ if after.is_null() => format!("was: {}", fields(before)),
        _ => format!("{} -> {}", fields(before), fields(after)),
    }
}

/// `weir ctl audit`: records in the API's order (newest first).
pub(super) fn audit(body: &Value) -> String {
    let records = list(&body["records"]);
    let mut out = String::new();
    if records.is_empty() {
        out.push_str("no audit records\n");
        return out;
    }
    let mut t = Table::with_header(&[
        "GEN", "TIME", "ACTOR", "SOURCE", "POOL", "ACTION", "SUBJECT", "CHANGE", "REASON",
    ]);
    for r in records {
        t.row(vec![
            cell(&r["generation"]),
            time(&r["time"]),
            cell(&r["actor"]),
            cell(&r["source"]),
            cell(&r["pool"]),
            cell(&r["action"]),
            cell(&r["subject"]),
            change(&r["before"], &r["after"]),
            cell(&r["reason"]),
        ]);
    }
    t.render(&mut out);
    out
}

/// A span of seconds as people read it: "83s", "10m", "10m30s", "2h", "2h05m".
fn span(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 && s % 60 == 0 => format!("{}m", s / 60),
        s if s < 7200 => format!("{}m{:02}s", s / 60, s % 60),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// A rollout step as the API shows it (`{"set_weight": 5}`, `{"pause": 60}`, `{"pause": null}`
/// for a manual pause) as "set_weight 5", "pause 60s", "pause manual".
fn step(s: &Value) -> String {
    match (&s["set_weight"], s.get("pause")) {
        (Value::Number(w), _) => format!("set_weight {w}"),
        (_, Some(Value::Null)) => "pause manual".into(),
        (_, Some(p)) => p
            .as_u64()
            .map_or_else(|| cell(p), |p| format!("pause {}", span(p))),
        _ => cell(s),
    }
}

/// A Unix-ms instant as UTC with milliseconds: "2026-12-02T15:25:28.123Z".
fn instant(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// A countdown from the server's `now` to `at` (Unix ms): "in 4.2s", or "passed".
fn countdown(at: u64, now: Option<u64>) -> String {
    match now {
        Some(now) if at > now => {
            let left = at - now;
            if left < 120_000 {
                format!("in {}.{}s", left / 1000, left % 1000 / 100)
            } else {
                format!("in {}", span(left.div_ceil(1000)))
            }
        }
        Some(_) => "passed".into(),
        None => "-".into(),
    }
}

/// The next thing that happens to a rollout and when, as the server says (`next`, `next_at`).
fn next(body: &Value) -> String {
    let what = body["next"].as_str().unwrap_or("-");
    match body["next_at"].as_u64() {
        Some(at) => format!("{what} {}", countdown(at, body["now"].as_u64())),
        None => what.to_string(),
    }
}

/// "12s ago, settles at 2026-...Z (in 4.2s)" (or "settled") from a rollout status.
fn changed(body: &Value) -> String {
    let now = body["now"].as_u64();
    let ago = match (body["changed_at"].as_u64(), now) {
        (Some(at), Some(now)) => format!("{} ago", age(now.saturating_sub(at) / 1000)),
        _ => "-".into(),
    };
    if body["awaiting_sync"] == true {
        return format!("{ago}, settle clock starts once every nameserver serves it");
    }
    let settling = match body["settled_at"].as_u64() {
        Some(at) if now.is_some_and(|n| n >= at) => "settled".into(),
        Some(at) => format!("settles at {} ({})", instant(at), countdown(at, now)),
        None => "-".into(),
    };
    format!("{ago}, {settling}")
}

/// "yes, since 2026-...Z" or "at 2026-...Z (in 3.1s)" for a safe-to-remove/upgrade instant.
fn safe(flag: &Value, at: &Value, now: Option<u64>) -> String {
    match (flag.as_bool(), at.as_u64()) {
        (Some(true), Some(at)) => format!("yes, since {}", instant(at)),
        (Some(true), None) => "yes".into(),
        (_, Some(at)) => format!("not yet: at {} ({})", instant(at), countdown(at, now)),
        _ => "no".into(),
    }
}

/// Measured cache convergence since the rollout's last change: "70.8% re-fetched (gate 99%);
/// silent: 127.0.2.0/24 (5), ..." or None when nothing was measured and nothing waits for it.
fn caches(body: &Value) -> Option<String> {
    let c = &body["convergence"];
    let gate = body["converged"]["share"]
        .as_f64()
        .map(|g| format!(" (gate {:.0}%)", g * 100.0))
        .unwrap_or_default();
    if c.is_null() {
        return (!gate.is_empty()).then(|| format!("not measured yet{gate}"));
    }
    let share = c["refetched"]
        .as_f64()
        .map_or("-".into(), |r| format!("{:.1}%", r * 100.0));
    let mut out = format!("{share} re-fetched{gate}");
    if let Some(ms) = c["converged_after_ms"].as_u64() {
        out.push_str(&format!(", 99% after {}", millis(ms)));
    }
    let silent: Vec<String> = list(&c["silent"])
        .iter()
        .take(3)
        .map(|s| format!("{} ({})", cell(&s["prefix"]), cell(&s["queries"])))
        .collect();
    if !silent.is_empty() {
        out.push_str(&format!("; silent: {}", silent.join(", ")));
    }
    Some(out)
}

/// `weir ctl rollout status POOL`: a summary, then the plan's steps (a rolling update's
/// batches) marked done `[x]`, current `[>]` (the one the rollout waits on) or to come `[ ]`.
/// Times count from the server's `now`.
pub(super) fn rollout(body: &Value) -> String {
    let state = body["state"].as_str().unwrap_or("-");
    let active = matches!(state, "running" | "waiting for promote" | "paused");
    // A rolling update: batches of one group instead of weights between two.
    let rolling = Some(&body["rolling"]).filter(|r| r.is_object());
    let now = body["now"].as_u64();
    let mut t = Table::default();
    t.field("pool", cell(&body["pool"]));
    t.field(
        "rollout",
        format!("{} -> {}", cell(&body["from"]), cell(&body["to"])),
    );
    t.field("state", rollout_state(body, state));
    match rolling {
        Some(rolling) => batch_fields(&mut t, rolling),
        None => t.field("weight", weight_split(body)),
    }
    t.field("changed", changed(body));
    if let Some(caches) = caches(body) {
        t.field("caches", caches);
    }
    match rolling {
        Some(r) => t.field(
            "safe to upgrade",
            safe(&r["safe_to_upgrade"], &r["safe_to_upgrade_at"], now),
        ),
        None if body["weight"] == 100 => t.field(
            "safe to remove",
            format!(
                "{}: {}",
                cell(&body["from"]),
                safe(&body["safe_to_remove"], &body["safe_to_remove_at"], now)
            ),
        ),
        None => {}
    }
    t.field("next", next(body));
    t.field("generation", cell(&body["generation"]));
    match rolling {
        Some(r) => {
            let batches = list(&r["batches"]).iter().map(|b| {
                let addresses: Vec<String> = list(b).iter().map(cell).collect();
                addresses.join(", ")
            });
            // The last batch stays current once the update is done.
            let done = state == "done";
            checklist(&mut t, "batches", batches, batch(r), active, done);
        }
        None => {
            let plan = list(&body["plan"]);
            let current = body["step"]
                .as_u64()
                .map_or(plan.len(), |s| usize::try_from(s).unwrap_or(usize::MAX));
            checklist(
                &mut t,
                "steps",
                plan.iter().map(step),
                current,
                active,
                false,
            );
        }
    }
    let mut out = String::new();
    t.render(&mut out);
    out
}

/// A rollout's state, with why it stopped or is held.
fn rollout_state(body: &Value, state: &str) -> String {
    match (body["reason"].as_str(), body["abort_cause"].as_str()) {
        (Some(reason), Some(cause)) if !reason.is_empty() => {
            format!("{state} ({cause}): {reason}")
        }
        (Some(reason), _) if !reason.is_empty() => format!("{state}: {reason}"),
        _ => match body["hold"].as_str() {
            Some(hold) => format!("{state}: {hold}"),
            None => state.into(),
        },
    }
}

/// A weight shift's split: "5% green, 95% blue", and once `from` gets no traffic at all
/// (`from_drained`: everything is on `to` and that has settled) " (blue drained)".
fn weight_split(body: &Value) -> String {
    let drained = if body["from_drained"].as_bool() == Some(true) {
        format!(" ({} drained)", cell(&body["from"]))
    } else {
        String::new()
    };
    match body["weight"].as_u64() {
        Some(w) => format!(
            "{w}% {}, {}% {}{drained}",
            cell(&body["to"]),
            100u64.saturating_sub(w),
            cell(&body["from"])
        ),
        None => "-".into(),
    }
}

/// The batch a rolling update is working on (the number of batches once done).
fn batch(rolling: &Value) -> usize {
    rolling["batch"].as_u64().unwrap_or(0) as usize
}

/// A rolling update's group, batch and phase, and the endpoints drained so far.
fn batch_fields(t: &mut Table, rolling: &Value) {
    let batches = list(&rolling["batches"]).len();
    let phase = match rolling["phase"].as_str() {
        Some("draining") => "draining (waiting for cached answers to expire)".to_string(),
        Some("safe_to_upgrade") => "safe to upgrade".to_string(),
        _ if rolling["phase"]["waiting_healthy"].is_object() => {
            "upgraded: waiting for health checks to pass".to_string()
        }
        other => other.unwrap_or("-").to_string(),
    };
    t.field("group", cell(&rolling["group"]));
    t.field(
        "batch",
        format!(
            "{} of {batches}: {phase}",
            (batch(rolling) + 1).min(batches)
        ),
    );
    let drained: Vec<String> = list(&rolling["drained"]).iter().map(cell).collect();
    t.field(
        "drained",
        if drained.is_empty() {
            "-".into()
        } else {
            drained.join(", ")
        },
    );
}

/// `items` under `label`, one a row: done `[x]`, `current` `[>]` while the rollout is
/// `active` (`[x]` once it is `done`), to come `[ ]`.
fn checklist(
    t: &mut Table,
    label: &str,
    items: impl Iterator<Item = String>,
    current: usize,
    active: bool,
    done: bool,
) {
    for (i, item) in items.enumerate() {
        let mark = match i.cmp(&current) {
            std::cmp::Ordering::Less => "[x]",
            std::cmp::Ordering::Equal if active => "[>]",
            std::cmp::Ordering::Equal if done => "[x]",
            _ => "[ ]",
        };
        let name = if i == 0 { label } else { "" };
        t.row(vec![name.into(), format!("{mark} {item}")]);
    }
}

/// `weir ctl nodes`: one line per nameserver.
pub(super) fn nodes(body: &Value) -> String {
    let mut t = Table::with_header(&["NODE", "GENERATION", "STATE"]);
    for n in list(&body["nodes"]) {
        let state = if n["generation"].is_u64() {
            "live"
        } else {
            "gone (lease expired)"
        };
        t.row(vec![
            cell(&n["node_id"]),
            cell(&n["generation"]),
            state.into(),
        ]);
    }
    let mut out = String::new();
    t.render(&mut out);
    if body["shared"] == false {
        out.push_str("(local store: this nameserver only)\n");
    }
    out
}

/// `weir ctl updates ZONE`: the serial, each RRset the zone's UPDATE layer replaces (or
/// deletes), and the journal's span.
pub(super) fn updates(body: &Value) -> String {
    let mut out = format!(
        "zone {}: serial {}{}\n",
        cell(&body["zone"]),
        cell(&body["serial"]),
        if body["served"] == false {
            " (not served)"
        } else {
            ""
        }
    );
    let sets = list(&body["rrsets"]);
    if sets.is_empty() {
        out.push_str("no UPDATE changes: the zone file serves as written\n");
    } else {
        let mut t = Table::with_header(&["OWNER", "TYPE", "TTL", "RECORDS"]);
        for set in sets {
            let records: Vec<String> = list(&set["records"])
                .iter()
                .map(|r| {
                    let r = cell(r);
                    // The data after "owner ttl IN TYPE ".
                    r.splitn(5, ' ').nth(4).unwrap_or(&r).to_string()
                })
                .collect();
            let shown = if set["deleted"] == true {
                "(deleted: the file's set is not served)".to_string()
            } else {
                records.join(" | ")
            };
            t.row(vec![
                cell(&set["owner"]),
                cell(&set["type"]),
                cell(&set["ttl"]),
                shown,
            ]);
        }
        t.render(&mut out);
    }
    let journal = list(&body["journal"]);
    if let (Some(first), Some(last)) = (journal.first(), journal.last()) {
        out.push_str(&format!(
            "journal: {} changes, serial {} to {} (IXFR reaches back to {})\n",
            journal.len(),
            cell(&first["from"]),
            cell(&last["to"]),
            cell(&first["from"])
        ));
    }
    out
}

/// `weir ctl dnssec ZONE`: the keys, the DS, the signatures' validity, the latest rollover.
pub(super) fn dnssec(body: &Value) -> String {
    let time = |v: &Value| {
        v.as_u64().map_or_else(
            || "-".to_string(),
            |t| {
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
                )
                .to_string()
            },
        )
    };
    let mut out = format!(
        "zone {}: signatures valid {} to {}, made again at {}\n",
        cell(&body["zone"]),
        time(&body["inception"]),
        time(&body["expiration"]),
        time(&body["renew_at"])
    );
    let mut t = Table::with_header(&["TAG", "ALGORITHM", "ROLE", "PUBLISHED", "SIGNING", "FILE"]);
    for k in list(&body["keys"]) {
        let yes = |v: &Value| if *v == true { "yes" } else { "no" }.to_string();
        t.row(vec![
            cell(&k["tag"]),
            cell(&k["algorithm"]),
            cell(&k["role"]),
            yes(&k["published"]),
            yes(&k["signing"]),
            cell(&k["file"]),
        ]);
    }
    t.render(&mut out);
    out.push_str("DS for the parent zone:\n");
    for ds in list(&body["ds"]) {
        out.push_str(&format!("  {}\n", cell(ds)));
    }
    match body.get("rollover").filter(|r| !r.is_null()) {
        None => out.push_str("no key rollover\n"),
        Some(r) => out.push_str(&format!(
            "rollover to key {} ({}): published {}, signs from {}, old keys {} retire {}\n",
            cell(&r["key"]),
            cell(&r["phase"]),
            time(&r["started"]),
            time(&r["activate_at"]),
            cell(&r["retiring"]),
            time(&r["retire_at"])
        )),
    }
    out
}

/// `weir ctl records ZONE`: the zone's static data as served, in zone-file form.
pub(super) fn records(body: &Value) -> String {
    let mut out = format!(
        "; zone {} as weir serves it (serial {}), managed names left out\n",
        cell(&body["zone"]),
        cell(&body["serial"])
    );
    for set in list(&body["rrsets"]) {
        for r in list(&set["records"]) {
            out.push_str(&cell(r));
            out.push('\n');
        }
    }
    out
}

/// `weir ctl changes`: INSYNC or PENDING, then each node's state.
pub(super) fn change_status(body: &Value) -> String {
    let mut out = format!(
        "generation {}: {}\n",
        cell(&body["generation"]),
        cell(&body["status"])
    );
    let mut t = Table::with_header(&["NODE", "GENERATION", "STATE"]);
    for n in list(&body["nodes"]) {
        t.row(vec![
            cell(&n["node_id"]),
            cell(&n["generation"]),
            cell(&n["state"]),
        ]);
    }
    t.render(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn convergence_summary_and_silent_resolvers() {
        let body = json!({"pool": "app.example.com.", "tracking": true, "now_ms": 10_000, "change": {
            "changed_at_ms": 5_500, "generation": 7, "window_ms": 60_000, "refetched": 0.65,
            "resolvers_before": 4, "resolvers_refetched": 2, "queries_before": 20,
            "silent": [{"prefix": "10.0.1.0/24", "queries": 5}, {"prefix": "2001:db8::/48 ecs 198.51.100.0/24", "queries": 2}],
            "converged_after_ms": null,
        }});
        assert_eq!(
            convergence(&body),
            "pool        app.example.com.\nchanged     4.5s ago (generation 7)\nre-fetched  65.0% of 20 queries; 2 of 4 resolvers\nwindow      60.0s before the change\nconverged   no\n\nSILENT RESOLVER                    QUERIES BEFORE\n10.0.1.0/24                        5\n2001:db8::/48 ecs 198.51.100.0/24  2\n"
        );
        let mut done = body.clone();
        done["change"]["refetched"] = json!(1.0);
        done["change"]["silent"] = json!([]);
        done["change"]["converged_after_ms"] = json!(3_250);
        assert!(convergence(&done).ends_with("converged   yes, 99% after 3.2s\n"));
        let quiet = json!({"pool": "app.example.com.", "tracking": true, "change": null});
        assert_eq!(
            convergence(&quiet),
            "app.example.com.: its answers have not changed since weir started\n"
        );
        let off = json!({"pool": "app.example.com.", "tracking": false, "change": null});
        assert!(convergence(&off).contains("tracking is off"));
    }

    #[test]
    fn nodes_and_change_status() {
        let body = json!({"shared": true, "nodes": [
            {"node_id": "ns1", "generation": 42, "updated": 1},
            {"node_id": "ns2", "generation": null, "updated": 0},
        ]});
        assert_eq!(
            nodes(&body),
            "NODE  GENERATION  STATE\nns1   42          live\nns2   -           gone (lease expired)\n"
        );
        let status = json!({"generation": 42, "status": "PENDING", "nodes": [
            {"node_id": "ns1", "generation": 42, "state": "synced"},
            {"node_id": "ns2", "generation": 40, "state": "lagging"},
        ]});
        assert_eq!(
            change_status(&status),
            "generation 42: PENDING\nNODE  GENERATION  STATE\nns1   42          synced\nns2   40          lagging\n"
        );
    }

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let mut t = Table::with_header(&["A", "LONGER", "C"]);
        t.row(vec!["wide cell".into(), "x".into(), "end".into()]);
        t.row(vec!["é".into(), "".into(), "".into()]);
        let mut out = String::new();
        t.render(&mut out);
        assert_eq!(out, "A          LONGER  C\nwide cell  x       end\né\n");
    }

    #[test]
    fn cells_and_changes() {
        let cases = [
            (json!(null), "-"),
            (json!(""), "-"),
            (json!("blue"), "blue"),
            (json!(25), "25"),
            (json!(true), "yes"),
            (json!([1, 2]), "[1,2]"),
        ];
        for (v, want) in cases {
            assert_eq!(cell(&v), want, "{v}");
        }
        let changes = [
            (
                json!({"weight": 10}),
                json!({"weight": 25}),
                "weight 10 -> 25",
            ),
            (
                json!({"health": "auto"}),
                json!({"health": "down"}),
                "health auto -> down",
            ),
            (
                json!(null),
                json!({"group": "g", "weight": 1}),
                "new: group=g weight=1",
            ),
            (
                json!({"group": "g", "weight": 1}),
                json!(null),
                "was: group=g weight=1",
            ),
            (json!({"a": 1}), json!({"b": 2}), "a=1 -> b=2"),
        ];
        for (before, after, want) in changes {
            assert_eq!(change(&before, &after), want);
        }
    }

    #[test]
    fn pools_table() {
        let body = json!({"generation": 4, "pools": [
            {"name": "app.example.com.", "ttl": 30, "degraded": {"ipv4": false, "ipv6": false},
             "groups": [{"name": "blue", "weight": 90, "endpoints": 2}, {"name": "green", "weight": 10, "endpoints": 1}]},
            {"name": "b.example.com.", "ttl": 300, "degraded": {"ipv4": true, "ipv6": true}, "groups": []},
        ]});
        assert_eq!(
            pools(&body),
            "POOL              TTL  GROUPS            DEGRADED\n\
             app.example.com.  30   blue=90 green=10  no\n\
             b.example.com.    300  -                 ipv4,ipv6\n\
             generation 4\n"
        );
        assert_eq!(
            pools(&json!({"generation": 1, "pools": []})),
            "no pools\ngeneration 1\n"
        );
    }

    #[test]
    fn pool_detail_shows_weights_overrides_and_probes() {
        let body = json!({
            "name": "app.example.com.", "generation": 7, "ttl": 30, "degraded_ttl": 10,
            "answers": 1, "sticky": "none", "on_all_down": "serve-all", "min_healthy": 0.0,
            "status": {"ipv4": {"outcome": "answer", "degraded": false, "shares": [["192.0.2.20", 1.0]]},
                       "ipv6": {"outcome": "nodata", "degraded": false, "shares": []}},
            "removed": ["192.0.2.11"],
            "groups": [{"name": "green", "weight": {"configured": 10, "effective": 25, "source": "override"},
                "endpoints": [{"address": "192.0.2.20", "override": "down", "up": false,
                    "weight": {"configured": 1, "effective": 1, "source": "config"},
                    "probe": {"target": "127.0.0.1:9", "kind": "tcp", "health": "down",
                              "last": {"ok": false, "reason": "connection refused", "duration_ms": 3, "at": 995, "health": "down"}}}]}],
        });
        let out = pool(&body, 1000);
        let want = "pool         app.example.com.\n\
                    generation   7\n\
                    ttl          30 (while degraded 10)\n\
                    answers      1\n\
                    sticky       none\n\
                    on_all_down  serve-all\n\
                    min_healthy  0.0\n\
                    ipv4         answer\n\
                    ipv6         nodata\n\
                    degraded     no\n\
                    removed      192.0.2.11\n\
                    \n\
                    GROUP  WEIGHT  CONFIGURED  SOURCE    ENDPOINTS\n\
                    green  25      10          override  1\n\
                    \n\
                    GROUP  ENDPOINT    WEIGHT  CONFIGURED  SOURCE  OVERRIDE  UP  SHARE   PROBE            HEALTH  LAST\n\
                    green  192.0.2.20  1       1           config  down      no  100.0%  tcp 127.0.0.1:9  down    failed: connection refused in 3 ms, 5s ago\n";
        assert_eq!(out, want);
    }

    #[test]
    fn audit_table() {
        let body = json!({"records": [
            {"generation": 8, "time": 1_767_225_600u64, "actor": "local", "source": "127.0.0.1",
             "action": "remove-endpoint", "pool": "app.example.com.", "subject": "endpoint 192.0.2.30",
             "before": {"group": "green", "weight": 5}, "after": null, "reason": ""},
            {"generation": 7, "time": 1_767_225_540u64, "actor": "ops", "source": "10.0.0.1",
             "action": "set-group-weight", "pool": "app.example.com.", "subject": "group green",
             "before": {"weight": 10}, "after": {"weight": 25}, "reason": "canary to 25%"},
        ]});
        assert_eq!(
            audit(&body),
            "GEN  TIME                  ACTOR  SOURCE     POOL              ACTION            SUBJECT              CHANGE                     REASON\n\
             8    2026-01-01T00:00:00Z  local  127.0.0.1  app.example.com.  remove-endpoint   endpoint 192.0.2.30  was: group=green weight=5  -\n\
             7    2025-12-31T23:59:00Z  ops    10.0.0.1   app.example.com.  set-group-weight  group green          weight 10 -> 25            canary to 25%\n"
        );
        assert_eq!(audit(&json!({"records": []})), "no audit records\n");
    }

    #[test]
    fn status_summary() {
        let zones = json!({"generation": 3, "zones": ["example.com.", "example.net."]});
        let pools = json!({"generation": 3, "pools": [
            {"name": "a.example.com.", "degraded": {"ipv4": false, "ipv6": false}},
            {"name": "b.example.com.", "degraded": {"ipv4": true, "ipv6": false}},
        ]});
        let local = json!({"shared": false, "nodes": [{"node_id": "local", "generation": 3}]});
        assert_eq!(
            status(true, "ready: generation 3, 2 zones", &zones, &pools, &local),
            "ready       yes (ready: generation 3, 2 zones)\n\
             generation  3\n\
             zones       2: example.com., example.net.\n\
             pools       2: a.example.com., b.example.com.\n\
             degraded    b.example.com. (ipv4)\n"
        );
        let shared = json!({"shared": true, "nodes": [
            {"node_id": "ns1", "generation": 3}, {"node_id": "ns2", "generation": null},
        ]});
        assert!(
            status(true, "ready", &zones, &pools, &shared)
                .ends_with("nameservers  ns1 at 3, ns2 gone\n")
        );
        let down = json!({"shared": true, "error": "the shared state store is unavailable"});
        assert!(
            status(true, "ready", &zones, &pools, &down)
                .ends_with("nameservers  unknown: the shared state store is unavailable\n")
        );
    }

    fn plan() -> Value {
        json!([{"set_weight": 5}, {"pause": 60}, {"set_weight": 50}, {"pause": null}, {"set_weight": 100}])
    }

    /// The API's rollout JSON at server time 1000.
    /// A rollout status as the server sends it; times in seconds here, milliseconds on the wire
    /// (`now` = 1000 s, changed 12 s ago).
    fn rollout_at(state: &str, step: u64, weight: u64, settled_at: u64) -> Value {
        json!({
            "pool": "app.example.com.", "generation": 7, "from": "blue", "to": "green",
            "state": state, "reason": null, "weight": weight, "step": step, "steps": 5,
            "plan": plan(), "changed_at": 988_000, "settled_at": settled_at * 1000,
            "next": "-", "next_at": null, "now": 1_000_000,
        })
    }

    fn with_next(mut body: Value, what: &str, at: Option<u64>) -> Value {
        body["next"] = json!(what);
        body["next_at"] = json!(at.map(|s| s * 1000));
        body
    }

    #[test]
    fn rollout_status_during_a_timed_pause() {
        // 5% set at 988, settles at 1023; the 60 s pause ends at 1083.
        let body = with_next(
            rollout_at("running", 1, 5, 1023),
            "set_weight 50",
            Some(1083),
        );
        assert_eq!(
            rollout(&body),
            "pool        app.example.com.\n\
             rollout     blue -> green\n\
             state       running\n\
             weight      5% green, 95% blue\n\
             changed     12s ago, settles at 1970-01-01T00:17:03.000Z (in 23.0s)\n\
             next        set_weight 50 in 83.0s\n\
             generation  7\n\
             steps       [x] set_weight 5\n\
             \x20           [>] pause 60s\n\
             \x20           [ ] set_weight 50\n\
             \x20           [ ] pause manual\n\
             \x20           [ ] set_weight 100\n"
        );
    }

    /// The summary lines of a rollout's status that say where it is and what comes next.
    fn where_and_next(body: &Value) -> Vec<String> {
        rollout(body)
            .lines()
            .filter(|l| {
                ["state", "weight", "changed", "next", "safe to remove"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .map(|l| l.split_once("  ").unwrap().1.trim().to_string())
            .collect()
    }

    #[test]
    fn rollout_status_in_each_state() {
        let mut aborted = rollout_at("aborted", 3, 0, 1030);
        aborted["reason"] = json!("bad build");
        aborted["abort_cause"] = json!("operator");
        let mut done = rollout_at("done", 5, 100, 990);
        done["from_drained"] = json!(true);
        done["safe_to_remove"] = json!(true);
        done["safe_to_remove_at"] = json!(990_000);
        let mut removable_soon = with_next(rollout_at("running", 5, 100, 1035), "done", Some(1035));
        removable_soon["safe_to_remove"] = json!(false);
        removable_soon["safe_to_remove_at"] = json!(1_035_000);
        let mut held = rollout_at("paused", 2, 5, 990);
        held["hold"] = json!("webhook refused: 503");
        let cases: [(Value, &[&str]); 6] = [
            // Just started: 0% settles first, then the first step.
            (
                with_next(
                    rollout_at("running", 0, 0, 1023),
                    "set_weight 5",
                    Some(1023),
                ),
                &[
                    "running",
                    "0% green, 100% blue",
                    "12s ago, settles at 1970-01-01T00:17:03.000Z (in 23.0s)",
                    "set_weight 5 in 23.0s",
                ],
            ),
            (
                with_next(
                    rollout_at("waiting for promote", 3, 50, 990),
                    "waiting for promote, then set_weight 100",
                    None,
                ),
                &[
                    "waiting for promote",
                    "50% green, 50% blue",
                    "12s ago, settled",
                    "waiting for promote, then set_weight 100",
                ],
            ),
            (
                held,
                &[
                    "paused: webhook refused: 503",
                    "5% green, 95% blue",
                    "12s ago, settled",
                    "-",
                ],
            ),
            // At 100%, blue is removable once the change settled.
            (
                removable_soon,
                &[
                    "running",
                    "100% green, 0% blue",
                    "12s ago, settles at 1970-01-01T00:17:15.000Z (in 35.0s)",
                    "blue: not yet: at 1970-01-01T00:17:15.000Z (in 35.0s)",
                    "done in 35.0s",
                ],
            ),
            (
                aborted.clone(),
                &[
                    "aborted (operator): bad build",
                    "0% green, 100% blue",
                    "12s ago, settles at 1970-01-01T00:17:10.000Z (in 30.0s)",
                    "-",
                ],
            ),
            (
                done,
                &[
                    "done",
                    "100% green, 0% blue (blue drained)",
                    "12s ago, settled",
                    "blue: yes, since 1970-01-01T00:16:30.000Z",
                    "-",
                ],
            ),
        ];
        for (body, want) in cases {
            assert_eq!(where_and_next(&body), want, "{body}");
        }
        // Done or aborted: no current step.
        let marks = |body: &Value| -> Vec<String> {
            rollout(body)
                .lines()
                .filter_map(|l| l.find('[').map(|i| l[i..i + 3].to_string()))
                .collect()
        };
        assert_eq!(marks(&aborted), ["[x]", "[x]", "[x]", "[ ]", "[ ]"]);
        assert_eq!(marks(&rollout_at("done", 5, 100, 990)), ["[x]"; 5]);
        assert_eq!(
            marks(&rollout_at("paused", 2, 5, 990)),
            ["[x]", "[x]", "[>]", "[ ]", "[ ]"]
        );
        // Fields the API leaves out show as `-`.
        assert!(
            rollout(&json!({})).starts_with("pool        -\nrollout     - -> -\nstate       -\n")
        );
    }

    /// A rolling update's status: batches of one group instead of weights between two.
    fn rolling_at(state: &str, batch: u64, phase: Value) -> Value {
        let mut body = rollout_at(state, 1, 0, 1023);
        body["plan"] = json!([{"pause": "manual"}]);
        body["rolling"] = json!({
            "group": "web", "batch": batch, "phase": phase,
            "batches": [["192.0.2.1", "192.0.2.2"], ["192.0.2.3"]],
            "drained": ["192.0.2.1", "192.0.2.2"],
            "safe_to_upgrade_at": 1_023_000, "safe_to_upgrade": false,
        });
        body
    }

    #[test]
    fn rolling_status() {
        let mut draining = with_next(
            rolling_at("running", 0, json!("draining")),
            "safe to upgrade",
            Some(1023),
        );
        draining["converged"] = json!({"share": 0.99});
        assert_eq!(
            rollout(&draining),
            "pool             app.example.com.\n\
             rollout          blue -> green\n\
             state            running\n\
             group            web\n\
             batch            1 of 2: draining (waiting for cached answers to expire)\n\
             drained          192.0.2.1, 192.0.2.2\n\
             changed          12s ago, settles at 1970-01-01T00:17:03.000Z (in 23.0s)\n\
             caches           not measured yet (gate 99%)\n\
             safe to upgrade  not yet: at 1970-01-01T00:17:03.000Z (in 23.0s)\n\
             next             safe to upgrade in 23.0s\n\
             generation       7\n\
             batches          [>] 192.0.2.1, 192.0.2.2\n\
             \x20                [ ] 192.0.2.3\n"
        );
        let mut safe = rolling_at("waiting for promote", 1, json!("safe_to_upgrade"));
        safe["rolling"]["safe_to_upgrade"] = json!(true);
        safe["rolling"]["drained"] = json!([]);
        let lines: Vec<String> = rollout(&safe).lines().map(str::to_string).collect();
        assert_eq!(lines[4], "batch            2 of 2: safe to upgrade");
        assert_eq!(lines[5], "drained          -");
        assert_eq!(
            lines[7],
            "safe to upgrade  yes, since 1970-01-01T00:17:03.000Z"
        );
        assert_eq!(
            lines[10..],
            [
                "batches          [x] 192.0.2.1, 192.0.2.2",
                "                 [>] 192.0.2.3"
            ]
        );
        let healthy = rolling_at("running", 1, json!({"waiting_healthy": {"since": 1}}));
        assert!(
            rollout(&healthy)
                .contains("batch            2 of 2: upgraded: waiting for health checks to pass\n")
        );
        // Done: every batch is marked done, the current one (past the last) included.
        for (state, batch, marks) in [
            ("done", 1, ["[x]", "[x]"]),
            ("done", 2, ["[x]", "[x]"]),
            ("aborted", 1, ["[x]", "[ ]"]),
        ] {
            let out = rollout(&rolling_at(state, batch, json!("draining")));
            let found: Vec<&str> = out
                .lines()
                .filter_map(|l| l.find('[').map(|i| &l[i..i + 3]))
                .collect();
            assert_eq!(found, marks, "{state} at batch {batch}");
        }
    }

    #[test]
    fn spans_and_steps() {
        for (s, want) in [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (630, "10m30s"),
            (7200, "2h"),
            (7500, "2h05m"),
        ] {
            assert_eq!(span(s), want);
        }
        let names: Vec<String> = list(&plan()).iter().map(step).collect();
        assert_eq!(
            names,
            [
                "set_weight 5",
                "pause 60s",
                "set_weight 50",
                "pause manual",
                "set_weight 100"
            ]
        );
    }

    #[test]
    fn ages() {
        for (s, want) in [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (7200, "2h"),
            (172_800, "2d"),
        ] {
            assert_eq!(age(s), want);
        }
    }
}
