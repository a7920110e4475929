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
pub(super) fn status(ready: bool, readyz: &str, zones: &Value, pools: &Value) -> String {
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

/// A probe's last result: "ok: HTTP 200, 3s ago".
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
    format!("{verdict}: {}{ago}", cell(&result["reason"]))
}

fn age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `weir ctl pool NAME`.
pub(super) fn pool(body: &Value, now: u64) -> String {
    let status = &body["status"];
    let mut out = String::new();
    let mut summary = Table::default();
    let mut field = |name: &str, value: String| summary.row(vec![name.into(), value]);
    field("pool", cell(&body["name"]));
    field("generation", cell(&body["generation"]));
    field(
        "ttl",
        format!(
            "{} (while degraded {})",
            cell(&body["ttl"]),
            cell(&body["degraded_ttl"])
        ),
    );
    field("answers", cell(&body["answers"]));
    field("sticky", cell(&body["sticky"]));
    field("on_all_down", cell(&body["on_all_down"]));
    field("min_healthy", cell(&body["min_healthy"]));
    for family in ["ipv4", "ipv6"] {
        field(family, cell(&status[family]["outcome"]));
    }
    field(
        "degraded",
        degraded(&status["ipv4"]["degraded"], &status["ipv6"]["degraded"]),
    );
    let removed: Vec<String> = list(&body["removed"]).iter().map(cell).collect();
    if !removed.is_empty() {
        field("removed", removed.join(", "));
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
                              "last": {"ok": false, "reason": "connection refused", "at": 995, "health": "down"}}}]}],
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
                    green  192.0.2.20  1       1           config  down      no  100.0%  tcp 127.0.0.1:9  down    failed: connection refused, 5s ago\n";
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
        assert_eq!(
            status(true, "ready: generation 3, 2 zones", &zones, &pools),
            "ready       yes (ready: generation 3, 2 zones)\n\
             generation  3\n\
             zones       2: example.com., example.net.\n\
             pools       2: a.example.com., b.example.com.\n\
             degraded    b.example.com. (ipv4)\n"
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
