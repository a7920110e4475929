//! `[[pool]]` tables: raw TOML shapes and their validation into `model::Pool`. Checks that need
//! the zones (pool inside a zone, no clash with static records) live in `state::load`.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::Collector;
use crate::model::Webhook;
use crate::model::{
    BatchSize, Check, CheckKind, Endpoint, Group, Health, MetricGate, Name, OnAllDown, Override,
    Pool, ProbeKey, RollingPlan, RolloutPlan, Step, Sticky,
};

mod defaults {
    pub(crate) const TTL: i64 = 30;
    pub(crate) const ANSWERS: i64 = 1;
    pub(crate) const DEGRADED_TTL: i64 = 10;
    pub(crate) const INTERVAL: &str = "5s";
    pub(crate) const TIMEOUT: &str = "2s";
    pub(crate) const RISE: i64 = 3;
    pub(crate) const FALL: i64 = 3;
    pub(crate) const WEIGHT: i64 = 1;
}

/// Largest weight accepted for a group or an endpoint.
pub const MAX_WEIGHT: i64 = 1_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    name: String,
    ttl: Option<i64>,
    answers: Option<i64>,
    sticky: Option<String>,
    on_all_down: Option<String>,
    min_healthy: Option<f64>,
    degraded_ttl: Option<i64>,
    check: Option<RawCheck>,
    rollout: Option<RawPlan>,
    #[serde(default)]
    group: Vec<RawGroup>,
}

/// A rollout plan as written in `[pool.rollout]` or sent to `POST /v1/pools/{pool}/rollouts`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    /// "canary" (default), "blue-green" or "rolling".
    pub kind: Option<String>,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    /// Rolling: the group updated in place, `batch` endpoints at a time (a count, or a
    /// percentage of the group like "25%"), never more than `max_unavailable` of the pool's
    /// weight (default "25%"), each batch then `pause` ("manual" by default) and
    /// `health_timeout` (default "10m") to come back healthy.
    pub group: Option<String>,
    pub batch: Option<toml::Value>,
    pub max_unavailable: Option<String>,
    pub pause: Option<String>,
    pub health_timeout: Option<String>,
    /// Canary steps; a blue-green rollout has fixed ones.
    #[serde(default)]
    pub steps: Vec<RawStep>,
    /// Blue-green: a name answered only from `to`, for testing it before the flip (config only).
    pub preview_name: Option<String>,
    /// Added to the pool's TTL before a change counts as settled (default "5s").
    pub slack: Option<String>,
    /// Lower the pool's TTL to `rollout_ttl` for the rollout, restoring it at the end.
    #[serde(default)]
    pub ttl_ramp: bool,
    /// The TTL served during a ramped rollout (default "5s").
    pub rollout_ttl: Option<String>,
    /// Abort when a Prometheus query keeps failing a condition.
    pub metric_gate: Option<RawGate>,
    /// `webhook = { url = "http://ci/approve", on_failure = "pause" | "abort" }`.
    pub webhook: Option<RawWebhook>,
    /// Measured cache convergence gate: steps, "safe to remove" and rolling batches also wait
    /// until this share (0 < x <= 1) of the resolvers' query volume came back after a change.
    pub converged: Option<f64>,
    /// How long past the settle instant to wait for `converged` before pausing (default "5m").
    pub converge_timeout: Option<String>,
}

/// A plan duration: `text` parsed, at most `model::MAX_DURATION_SECS` (so no deadline built
/// from it can overflow), in whole seconds.
fn plan_secs(key: &str, text: &str, problems: &mut Vec<(String, String)>) -> Option<u64> {
    match humantime::parse_duration(text) {
        Ok(d) if d.as_secs() <= crate::model::MAX_DURATION_SECS => Some(d.as_secs()),
        Ok(_) => {
            problems.push((
                key.into(),
                format!(
                    "`{text}` is longer than the maximum of {}",
                    humantime::format_duration(std::time::Duration::from_secs(
                        crate::model::MAX_DURATION_SECS
                    ))
                ),
            ));
            None
        }
        Err(e) => {
            problems.push((key.into(), format!("`{text}` is not a duration: {e}")));
            None
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: String,
    pub on_failure: Option<String>,
}

/// `metric_gate = { url = "http://prometheus:9090", query = "...", condition = "< 0.01",
/// interval = "30s", failure_limit = 3 }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    pub url: String,
    pub query: String,
    pub condition: String,
    pub interval: Option<String>,
    pub failure_limit: Option<i64>,
}

/// `{ set_weight = 25 }` or `{ pause = "10m" }` / `{ pause = "manual" }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub set_weight: Option<i64>,
    pub pause: Option<String>,
}

/// Turns a raw plan into a `RolloutPlan`; every problem as (key suffix, message).
pub fn plan(raw: &RawPlan) -> Result<RolloutPlan, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut steps = Vec::new();
    let (blue_green, rolling) = match raw.kind.as_deref().unwrap_or("canary") {
        "canary" => (false, false),
        "blue-green" => (true, false),
        "rolling" => (false, true),
        other => {
            problems.push((
                "kind".into(),
                format!("`{other}` is not one of \"canary\", \"blue-green\", \"rolling\""),
            ));
            (false, false)
        }
    };
    let mut rolling_plan = None;
    if rolling {
        let percent = |k: &str, text: &str, problems: &mut Vec<(String, String)>| match text
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<u32>().ok())
        {
            Some(p) if (1..=100).contains(&p) => p,
            _ => {
                problems.push((
                    k.into(),
                    format!("`{text}` is not a percentage like \"25%\""),
                ));
                25
            }
        };
        let batch = match &raw.batch {
            None => BatchSize::Count(1),
            Some(toml::Value::Integer(n)) if *n >= 1 => BatchSize::Count(*n as usize),
            Some(toml::Value::String(p)) => BatchSize::Percent(percent("batch", p, &mut problems)),
            Some(other) => {
                problems.push((
                    "batch".into(),
                    format!("`{other}` is not a count >= 1 or a percentage like \"50%\""),
                ));
                BatchSize::Count(1)
            }
        };
        let max_unavailable = percent(
            "max_unavailable",
            raw.max_unavailable.as_deref().unwrap_or("25%"),
            &mut problems,
        );
        let pause = match raw.pause.as_deref().unwrap_or("manual") {
            "manual" => None,
            text => plan_secs("pause", text, &mut problems),
        };
        let health_timeout = plan_secs(
            "health_timeout",
            raw.health_timeout.as_deref().unwrap_or("10m"),
            &mut problems,
        )
        .unwrap_or(600);
        match raw.group.as_deref() {
            Some(group) if !group.is_empty() => {
                rolling_plan = Some(RollingPlan {
                    group: group.to_string(),
                    batch,
                    max_unavailable,
                    pause,
                    health_timeout,
                });
            }
            _ => problems.push((
                "group".into(),
                "a rolling update names the `group` it updates".into(),
            )),
        }
        if !raw.steps.is_empty() || !raw.from.is_empty() || !raw.to.is_empty() {
            problems.push((
                "steps".into(),
                "a rolling update takes `group` and batches, not from/to/steps".into(),
            ));
        }
    } else if raw.group.is_some()
        || raw.batch.is_some()
        || raw.max_unavailable.is_some()
        || raw.pause.is_some()
    {
        problems.push((
            "group".into(),
            "group, batch, max_unavailable and pause are for kind = \"rolling\"".into(),
        ));
    } else if raw.from.is_empty() || raw.to.is_empty() {
        problems.push((
            "from".into(),
            "a canary or blue-green rollout names `from` and `to`".into(),
        ));
    }
    if blue_green {
        if !raw.steps.is_empty() {
            problems.push((
                "steps".into(),
                "a blue-green rollout has fixed steps; leave `steps` out".into(),
            ));
        }
        // Wait (test `to` on the preview name), flip everything, keep `from` warm for a rollback
        // until promoted once more (finalize).
        steps = vec![Step::Pause(None), Step::SetWeight(100), Step::Pause(None)];
    }
    for (i, step) in raw
        .steps
        .iter()
        .enumerate()
        .filter(|_| !blue_green && !rolling)
    {
        let key = format!("steps[{i}]");
        match (step.set_weight, step.pause.as_deref()) {
            (Some(w), None) if (0..=100).contains(&w) => steps.push(Step::SetWeight(w as u32)),
            (Some(w), None) => {
                problems.push((key, format!("set_weight {w} is out of range 0..=100")))
            }
            (None, Some("manual")) => steps.push(Step::Pause(None)),
            (None, Some(text)) if humantime::parse_duration(text).is_err() => problems.push((
                key,
                format!("pause `{text}` is not \"manual\" or a duration like \"10m\""),
            )),
            (None, Some(text)) => {
                if let Some(secs) = plan_secs(&key, text, &mut problems) {
                    steps.push(Step::Pause(Some(secs)));
                }
            }
            _ => problems.push((
                key,
                "a step is either { set_weight = N } or { pause = \"10m\" | \"manual\" }".into(),
            )),
        }
    }
    if raw.steps.is_empty() && !blue_green && !rolling {
        problems.push(("steps".into(), "a rollout needs at least one step".into()));
    }
    if raw.from == raw.to && !rolling {
        problems.push((
            "to".into(),
            "`from` and `to` must be different groups".into(),
        ));
    }
    let slack =
        plan_secs("slack", raw.slack.as_deref().unwrap_or("5s"), &mut problems).unwrap_or(0);
    let converged = match (raw.converged, raw.converge_timeout.as_deref()) {
        (None, None) => None,
        (None, Some(_)) => {
            problems.push((
                "converge_timeout".into(),
                "only applies with `converged`".into(),
            ));
            None
        }
        (Some(share), _) if !(share > 0.0 && share <= 1.0) => {
            problems.push((
                "converged".into(),
                format!("{share} is not a share in (0, 1], like 0.99"),
            ));
            None
        }
        (Some(share), timeout) => {
            plan_secs("converge_timeout", timeout.unwrap_or("5m"), &mut problems)
                .map(|timeout| crate::model::Converged { share, timeout })
        }
    };
    let ramp_ttl = match (raw.ttl_ramp, raw.rollout_ttl.as_deref()) {
        (false, None) => None,
        (false, Some(_)) => {
            problems.push((
                "rollout_ttl".into(),
                "only applies with ttl_ramp = true".into(),
            ));
            None
        }
        (true, text) => plan_secs("rollout_ttl", text.unwrap_or("5s"), &mut problems)
            .map(|secs| u32::try_from(secs).unwrap_or(u32::MAX)),
    };
    let metric_gate = raw.metric_gate.as_ref().and_then(|g| {
        let mut bad = |k: &str, m: String| problems.push((format!("metric_gate.{k}"), m));
        if !(g.url.starts_with("http://") || g.url.starts_with("https://")) {
            bad("url", format!("`{}` is not an http(s) URL", g.url));
        }
        let (op, value) = g.condition.trim().split_at(
            g.condition
                .trim()
                .find(|c: char| !"<>=".contains(c))
                .unwrap_or(0),
        );
        let value = value.trim().parse::<f64>();
        if !["<", "<=", ">", ">="].contains(&op) || value.is_err() {
            bad(
                "condition",
                format!(
                    "`{}` is not like \"< 0.01\" (<, <=, >, >= and a number)",
                    g.condition
                ),
            );
        }
        let interval = humantime::parse_duration(g.interval.as_deref().unwrap_or("30s"));
        if interval.as_ref().map_or(true, |d| {
            d.as_secs() == 0 || d.as_secs() > crate::model::MAX_DURATION_SECS
        }) {
            bad("interval", "must be a duration from 1s to 30 days".into());
        }
        let failure_limit = g.failure_limit.unwrap_or(3);
        if !(1..=1000).contains(&failure_limit) {
            bad(
                "failure_limit",
                format!("{failure_limit} is out of range 1..=1000"),
            );
        }
        Some(MetricGate {
            url: g.url.clone(),
            query: g.query.clone(),
            op: op.to_string(),
            value: value.ok()?,
            interval: interval.ok()?.as_secs(),
            failure_limit: failure_limit as u32,
        })
    });
    let webhook = raw.webhook.as_ref().map(|w| {
        if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
            problems.push((
                "webhook.url".into(),
                format!("`{}` is not an http(s) URL", w.url),
            ));
        }
        let abort_on_failure = match w.on_failure.as_deref().unwrap_or("pause") {
            "pause" => false,
            "abort" => true,
            other => {
                problems.push((
                    "webhook.on_failure".into(),
                    format!("`{other}` is not one of \"pause\", \"abort\""),
                ));
                false
            }
        };
        Webhook {
            url: w.url.clone(),
            abort_on_failure,
        }
    });
    if problems.is_empty() {
        let (from, to) = match &rolling_plan {
            Some(r) => (r.group.clone(), r.group.clone()),
            None => (raw.from.clone(), raw.to.clone()),
        };
        Ok(RolloutPlan {
            from,
            to,
            steps,
            slack,
            ramp_ttl,
            metric_gate,
            rolling: rolling_plan,
            webhook,
            converged,
        })
    } else {
        Err(problems)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    kind: Option<String>,
    port: Option<i64>,
    path: Option<String>,
    host: Option<String>,
    expect: Option<Vec<RawExpect>>,
    body_contains: Option<String>,
    tls_verify: Option<bool>,
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<i64>,
    fall: Option<i64>,
    initial: Option<String>,
}

/// A status written as text: "200", "200-299" or "2xx" (as (low, high), unchecked).
fn expect_text(text: &str) -> Option<(i64, i64)> {
    let text = text.trim();
    if let Some((a, b)) = text.split_once('-') {
        return Some((a.trim().parse().ok()?, b.trim().parse().ok()?));
    }
    if let Some(class) = text.strip_suffix("xx").or_else(|| text.strip_suffix("XX")) {
        let class: i64 = class.parse().ok().filter(|c| (1..=5).contains(c))?;
        return Some((class * 100, class * 100 + 99));
    }
    text.parse().ok().map(|code| (code, code))
}

/// `expect = [200, "204", "200-299", "3xx"]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum RawExpect {
    Code(i64),
    Range(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    weight: Option<i64>,
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    address: String,
    weight: Option<i64>,
    probe: Option<String>,
    check: Option<RawCheck>,
}

impl RawCheck {
    /// Endpoint keys override pool keys, one by one.
    fn over(&self, base: &RawCheck) -> RawCheck {
        RawCheck {
            kind: self.kind.clone().or_else(|| base.kind.clone()),
            port: self.port.or(base.port),
            path: self.path.clone().or_else(|| base.path.clone()),
            host: self.host.clone().or_else(|| base.host.clone()),
            expect: self.expect.clone().or_else(|| base.expect.clone()),
            body_contains: self
                .body_contains
                .clone()
                .or_else(|| base.body_contains.clone()),
            tls_verify: self.tls_verify.or(base.tls_verify),
            interval: self.interval.clone().or_else(|| base.interval.clone()),
            timeout: self.timeout.clone().or_else(|| base.timeout.clone()),
            rise: self.rise.or(base.rise),
            fall: self.fall.or(base.fall),
            initial: self.initial.clone().or_else(|| base.initial.clone()),
        }
    }
}

/// Validates the effective check `raw` (endpoint keys over pool keys); `own` is the table
/// written at `key`, for complaints about keys that table sets itself.
fn check(
    c: &mut Collector<'_>,
    key: &str,
    raw: &RawCheck,
    own: &RawCheck,
    has_probe: bool,
) -> Option<Check> {
    let before = c.problems.len();
    let kind = match raw.kind.as_deref() {
        Some("http") => CheckKind::Http,
        Some("https") => CheckKind::Https,
        Some("tcp") => CheckKind::Tcp,
        Some(other) => {
            c.push(
                &format!("{key}.kind"),
                format!("`{other}` is not one of \"http\", \"https\", \"tcp\""),
            );
            CheckKind::Tcp
        }
        None => {
            c.push(
                &format!("{key}.kind"),
                "is required (\"http\", \"https\" or \"tcp\")",
            );
            CheckKind::Tcp
        }
    };
    let port = match (raw.port, kind) {
        (Some(p), _) => c.int_in(&format!("{key}.port"), p, 1, 65535) as u16,
        (None, CheckKind::Http) => 80,
        (None, CheckKind::Https) => 443,
        (None, CheckKind::Tcp) => {
            if !has_probe {
                c.push(&format!("{key}.port"), "is required for a tcp check");
            }
            0
        }
    };
    let path = raw.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        c.push(
            &format!("{key}.path"),
            format!("`{path}` must start with `/`"),
        );
    }
    let mut expect = Vec::new();
    for (i, e) in raw.expect.iter().flatten().enumerate() {
        let at = format!("{key}.expect[{i}]");
        let range = match e {
            RawExpect::Code(code) => Some((*code, *code)),
            RawExpect::Range(text) => expect_text(text),
        };
        match range {
            Some((lo, hi)) if (100..=599).contains(&lo) && (lo..=599).contains(&hi) => {
                expect.push((lo as u16, hi as u16));
            }
            _ => c.push(
                &at,
                "must be a status code 100..=599 (200 or \"200\"), a range like \"200-299\", or a class like \"2xx\"",
            ),
        }
    }
    if expect.is_empty() {
        expect.push((200, 399));
    }
    let interval = c.duration(
        &format!("{key}.interval"),
        raw.interval.as_deref().unwrap_or(defaults::INTERVAL),
    );
    let timeout = c.duration(
        &format!("{key}.timeout"),
        raw.timeout.as_deref().unwrap_or(defaults::TIMEOUT),
    );
    if timeout >= interval {
        c.push(
            &format!("{key}.timeout"),
            format!("{timeout:?} must be shorter than interval ({interval:?})"),
        );
    }
    let rise = c.int_in(
        &format!("{key}.rise"),
        raw.rise.unwrap_or(defaults::RISE),
        1,
        100,
    ) as u32;
    let fall = c.int_in(
        &format!("{key}.fall"),
        raw.fall.unwrap_or(defaults::FALL),
        1,
        100,
    ) as u32;
    let initial = match raw.initial.as_deref().unwrap_or("up") {
        "up" => Health::Up,
        "down" => Health::Down,
        other => {
            c.push(
                &format!("{key}.initial"),
                format!("`{other}` is not one of \"up\", \"down\""),
            );
            Health::Up
        }
    };
    if kind == CheckKind::Tcp
        && (own.path.is_some() || own.body_contains.is_some() || own.expect.is_some())
    {
        c.push(
            key,
            "path, expect and body_contains apply to http and https checks only",
        );
    }
    (c.problems.len() == before).then(|| Check {
        kind,
        port,
        path,
        host: raw.host.clone(),
        expect,
        body_contains: raw.body_contains.clone(),
        tls_verify: raw.tls_verify.unwrap_or(true),
        interval,
        timeout,
        rise,
        fall,
        initial,
    })
}

pub(super) fn validate(c: &mut Collector<'_>, raw: &[RawPool]) -> Vec<Pool> {
    // (index in the file, pool) so later messages name the right `pool[i]`.
    let mut pools: Vec<(usize, Pool)> = Vec::new();
    // Every pool name seen, valid pool or not: a duplicate is reported even beside a pool
    // that has problems of its own (all in one pass), and a fallback to such a pool is not
    // reported as missing.
    let mut names: Vec<Name> = Vec::new();
    for (i, rp) in raw.iter().enumerate() {
        let key = format!("pool[{i}]");
        let before = c.problems.len();
        let name = match Name::parse(&rp.name) {
            Ok(n) => n,
            Err(e) => {
                c.push(&format!("{key}.name"), format!("`{}`: {e}", rp.name));
                continue;
            }
        };
        let twice = names.contains(&name);
        names.push(name.clone());
        if twice {
            c.push(
                &format!("{key}.name"),
                format!("pool `{name}` is configured twice"),
            );
        }
        let ttl = c.int_in(
            &format!("{key}.ttl"),
            rp.ttl.unwrap_or(defaults::TTL),
            0,
            604_800,
        ) as u32;
        let answers = c.int_in(
            &format!("{key}.answers"),
            rp.answers.unwrap_or(defaults::ANSWERS),
            1,
            16,
        ) as usize;
        let sticky = match rp.sticky.as_deref().unwrap_or("none") {
            "none" => Sticky::None,
            "client-subnet" => Sticky::ClientSubnet,
            other => {
                c.push(
                    &format!("{key}.sticky"),
                    format!("`{other}` is not one of \"none\", \"client-subnet\""),
                );
                Sticky::None
            }
        };
        let on_all_down = match rp.on_all_down.as_deref().unwrap_or("serve-all") {
            "serve-all" => OnAllDown::ServeAll,
            "nodata" => OnAllDown::NoData,
            "servfail" => OnAllDown::ServFail,
            other => match other.strip_prefix("fallback:").map(Name::parse) {
                Some(Ok(target)) => OnAllDown::Fallback(target),
                _ => {
                    c.push(
                        &format!("{key}.on_all_down"),
                        format!("`{other}` is not one of \"serve-all\", \"fallback:<pool name>\", \"nodata\", \"servfail\""),
                    );
                    OnAllDown::ServeAll
                }
            },
        };
        let min_healthy = rp.min_healthy.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&min_healthy) {
            c.push(
                &format!("{key}.min_healthy"),
                format!("{min_healthy} is out of range 0.0..=1.0"),
            );
        }
        let degraded_ttl = c.int_in(
            &format!("{key}.degraded_ttl"),
            rp.degraded_ttl.unwrap_or(defaults::DEGRADED_TTL),
            0,
            604_800,
        ) as u32;

        let pool_check = rp.check.clone();
        let default_check = pool_check
            .as_ref()
            .and_then(|rc| check(c, &format!("{key}.check"), rc, rc, true))
            .map(std::sync::Arc::new);
        let mut groups: Vec<Group> = Vec::new();
        let mut seen = HashSet::new();
        let mut total_weight = 0i64;
        if rp.group.is_empty() {
            c.push(&key, "has no [[pool.group]]: a pool needs endpoints");
        }
        for (g, rg) in rp.group.iter().enumerate() {
            let gkey = format!("{key}.group[{g}]");
            if rg.name.is_empty() || rg.name.contains(['/', ' ']) {
                c.push(
                    &format!("{gkey}.name"),
                    format!("`{}` must be non-empty, without spaces or `/`", rg.name),
                );
            }
            if groups.iter().any(|other| other.name == rg.name) {
                c.push(
                    &format!("{gkey}.name"),
                    format!("group `{}` is configured twice", rg.name),
                );
            }
            let weight = c.int_in(
                &format!("{gkey}.weight"),
                rg.weight.unwrap_or(defaults::WEIGHT),
                0,
                MAX_WEIGHT,
            );
            let mut endpoints = Vec::new();
            let mut group_weight = 0;
            for (e, re) in rg.endpoints.iter().enumerate() {
                let ekey = format!("{gkey}.endpoints[{e}]");
                let Ok(address) = re.address.parse::<IpAddr>() else {
                    c.push(
                        &format!("{ekey}.address"),
                        format!("`{}` is not an IP address", re.address),
                    );
                    continue;
                };
                if let Some(why) = crate::model::unservable(address) {
                    c.push(&format!("{ekey}.address"), why);
                    continue;
                }
                if !seen.insert(address) {
                    c.push(
                        &format!("{ekey}.address"),
                        format!("{address} appears twice in the pool"),
                    );
                }
                let ew = c.int_in(
                    &format!("{ekey}.weight"),
                    re.weight.unwrap_or(defaults::WEIGHT),
                    0,
                    MAX_WEIGHT,
                );
                group_weight += ew;
                let probe_addr = match re.probe.as_deref().map(str::parse::<SocketAddr>) {
                    None => None,
                    Some(Ok(a)) => Some(a),
                    Some(Err(_)) => {
                        c.push(
                            &format!("{ekey}.probe"),
                            format!(
                                "`{}` is not an address with a port, like \"10.0.0.5:8080\"",
                                re.probe.as_deref().unwrap_or("")
                            ),
                        );
                        None
                    }
                };
                let probe = match (&re.check, &default_check) {
                    // The endpoint's own keys over the pool's, validated as one check.
                    (Some(own), _) => {
                        let merged = match &pool_check {
                            Some(base) => own.over(base),
                            None => own.clone(),
                        };
                        check(c, &format!("{ekey}.check"), &merged, own, probe_addr.is_some())
                            .map(std::sync::Arc::new)
                    }
                    (None, Some(pool)) => {
                        if pool.port == 0 && probe_addr.is_none() {
                            c.push(
                                &format!("{ekey}.probe"),
                                "the pool's tcp check has no port: give the check a port or this endpoint a probe address",
                            );
                        }
                        Some(pool.clone())
                    }
                    // No check anywhere (or an invalid pool check, reported once above).
                    (None, None) => None,
                }
                .map(|check| ProbeKey {
                    target: probe_addr.unwrap_or(SocketAddr::new(address, check.port)),
                    check,
                });
                endpoints.push(Endpoint {
                    address,
                    weight: ew as u32,
                    probe,
                    force: Override::Auto,
                });
            }
            if group_weight > 0 {
                total_weight += weight;
            }
            groups.push(Group {
                name: rg.name.clone(),
                weight: weight as u32,
                endpoints,
            });
        }
        if !rp.group.is_empty() && groups.iter().all(|g| g.endpoints.is_empty()) {
            c.push(&key, "has no endpoints");
        } else if !rp.group.is_empty() && total_weight == 0 {
            c.push(
                &key,
                "every group or endpoint weight is 0: the pool would never answer",
            );
        }
        let rollout = rp.rollout.as_ref().and_then(|raw| match plan(raw) {
            Ok(p) => {
                for group in [&p.from, &p.to] {
                    if !groups.iter().any(|g| g.name == *group) {
                        c.push(
                            &format!("{key}.rollout"),
                            format!("no group `{group}` in this pool"),
                        );
                    }
                }
                Some(p)
            }
            Err(problems) => {
                for (k, message) in problems {
                    c.push(&format!("{key}.rollout.{k}"), message);
                }
                None
            }
        });
        if c.problems.len() == before {
            pools.push((
                i,
                Pool {
                    check: default_check.clone(),
                    rollout: rollout.clone(),
                    name,
                    ttl,
                    answers,
                    sticky,
                    on_all_down,
                    min_healthy,
                    degraded_ttl: degraded_ttl.min(ttl),
                    groups,
                },
            ));
        }
    }
    // Fallbacks name existing pools, never themselves, never in a cycle.
    for (i, pool) in &pools {
        let mut seen = vec![&pool.name];
        let mut at = pool;
        while let OnAllDown::Fallback(target) = &at.on_all_down {
            let Some((_, next)) = pools.iter().find(|(_, p)| &p.name == target) else {
                if names.contains(target) {
                    // Configured, with problems of its own (reported there).
                    break;
                }
                c.push(
                    &format!("pool[{i}].on_all_down"),
                    format!("fallback pool `{target}` is not configured"),
                );
                break;
            };
            if seen.contains(&&next.name) {
                let chain: Vec<String> = seen.iter().map(ToString::to_string).collect();
                c.push(
                    &format!("pool[{i}].on_all_down"),
                    format!("fallback cycle: {} -> {}", chain.join(" -> "), next.name),
                );
                break;
            }
            seen.push(&next.name);
            at = next;
        }
    }
    // Blue-green preview names: a pool of their own answering only from the `to` group.
    let mut previews = Vec::new();
    for (i, pool) in &pools {
        let Some(name) = raw[*i]
            .rollout
            .as_ref()
            .and_then(|r| r.preview_name.as_ref())
        else {
            continue;
        };
        let key = format!("pool[{i}].rollout.preview_name");
        let Some(plan) = &pool.rollout else { continue };
        let preview = match Name::parse(name) {
            Ok(n) => n,
            Err(e) => {
                c.push(&key, format!("`{name}`: {e}"));
                continue;
            }
        };
        if pools.iter().any(|(_, p)| p.name == preview) {
            c.push(&key, format!("`{preview}` is also a pool"));
            continue;
        }
        let Some(group) = pool.groups.iter().find(|g| g.name == plan.to) else {
            continue;
        };
        previews.push(Pool {
            name: preview,
            rollout: None,
            groups: vec![Group {
                weight: 1,
                ..group.clone()
            }],
            ..pool.clone()
        });
    }
    pools.into_iter().map(|(_, p)| p).chain(previews).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const ZONE: &str = "[[zone]]\norigin = \"example.com.\"\nfile = \"x\"\n";

    fn problems(pools: &str) -> Vec<String> {
        match super::super::parse(&format!("{ZONE}{pools}"), Path::new("w.toml")) {
            Ok(_) => Vec::new(),
            Err(p) => p.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn full_example_shape_is_accepted() {
        let text = r#"
[[pool]]
name = "app.example.com."
ttl = 30
answers = 1
sticky = "none"
on_all_down = "serve-all"
min_healthy = 0.0
[pool.check]
kind = "http"
port = 8080
path = "/healthz"
expect = [200, "300-302", "204", "5xx"]
interval = "5s"
timeout = "2s"
rise = 3
fall = 3
[[pool.group]]
name = "blue"
weight = 90
endpoints = [ { address = "192.0.2.10" }, { address = "192.0.2.11", weight = 2 } ]
[[pool.group]]
name = "green"
weight = 10
endpoints = [ { address = "2001:db8::20", check = { kind = "tcp", port = 443 } }, { address = "192.0.2.30", probe = "10.0.0.5:8080" } ]
"#;
        let config = super::super::parse(&format!("{ZONE}{text}"), Path::new("w.toml")).unwrap();
        let pool = &config.pools[0];
        let blue = &pool.groups[0].endpoints[1];
        let probe = blue.probe.as_ref().unwrap();
        assert_eq!(probe.target, "192.0.2.11:8080".parse().unwrap());
        assert_eq!(
            probe.check.expect,
            vec![(200, 200), (300, 302), (204, 204), (500, 599)]
        );
        let green = &pool.groups[1].endpoints;
        let tcp = green[0].probe.as_ref().unwrap();
        assert_eq!(tcp.check.kind, crate::model::CheckKind::Tcp);
        assert_eq!(tcp.target, "[2001:db8::20]:443".parse().unwrap());
        assert_eq!(
            tcp.check.interval,
            std::time::Duration::from_secs(5),
            "inherited from the pool"
        );
        assert_eq!(
            green[1].probe.as_ref().unwrap().target,
            "10.0.0.5:8080".parse().unwrap()
        );
    }

    #[test]
    fn each_pool_problem_is_named() {
        let got = problems(
            r#"
[[pool]]
name = "a.example.com."
on_all_down = "fallback:nowhere.example.com."
[pool.check]
kind = "http"
interval = "2s"
timeout = "2s"
[[pool.group]]
name = "g"
weight = 2000000
endpoints = [{ address = "192.0.2.1" }, { address = "192.0.2.1" }, { address = "nope" }]
[[pool]]
name = "b.example.com."
[[pool.group]]
name = "g"
endpoints = []
[[pool]]
name = "c.example.com."
on_all_down = "fallback:d.example.com."
[[pool.group]]
name = "g"
endpoints = [{ address = "192.0.2.3" }]
[[pool]]
name = "d.example.com."
on_all_down = "fallback:c.example.com."
[[pool.group]]
name = "g"
endpoints = [{ address = "192.0.2.4" }]
[[pool]]
name = "e.example.com."
[[pool.group]]
name = "g"
endpoints = [{ address = "192.0.2.5", weight = 0 }]
"#,
        );
        let want = [
            "w.toml: pool[0].group[0].weight: 2000000 is out of range 0..=1000000",
            "w.toml: pool[0].check.timeout: 2s must be shorter than interval (2s)",
            "w.toml: pool[0].group[0].endpoints[1].address: 192.0.2.1 appears twice in the pool",
            "w.toml: pool[0].group[0].endpoints[2].address: `nope` is not an IP address",
            "w.toml: pool[1]: has no endpoints",
            "w.toml: pool[4]: every group or endpoint weight is 0",
            "w.toml: pool[2].on_all_down: fallback cycle: c.example.com. -> d.example.com. -> c.example.com.",
            "w.toml: pool[3].on_all_down: fallback cycle: d.example.com. -> c.example.com. -> d.example.com.",
        ];
        for w in want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w:?} in {got:#?}"
            );
        }
        let got = problems(
            "[[pool]]\nname = \"a.example.com.\"\n[pool.check]\nkind = \"http\"\nexpect = [\"20\", \"6xx\", \"ok\", 99]\n[[pool.group]]\nname = \"g\"\nendpoints = [{ address = \"0.0.0.0\" }, { address = \"255.255.255.255\" }, { address = \"224.0.0.1\" }, { address = \"::\" }, { address = \"ff02::1\" }, { address = \"192.0.2.1\" }]\n",
        );
        let want = [
            "w.toml: pool[0].check.expect[0]: must be a status code",
            "w.toml: pool[0].check.expect[1]: must be a status code",
            "w.toml: pool[0].check.expect[2]: must be a status code",
            "w.toml: pool[0].check.expect[3]: must be a status code",
            "w.toml: pool[0].group[0].endpoints[0].address: 0.0.0.0 is the unspecified address",
            "w.toml: pool[0].group[0].endpoints[1].address: 255.255.255.255 is the broadcast address",
            "w.toml: pool[0].group[0].endpoints[2].address: 224.0.0.1 is a multicast address",
            "w.toml: pool[0].group[0].endpoints[3].address: :: is the unspecified address",
            "w.toml: pool[0].group[0].endpoints[4].address: ff02::1 is a multicast address",
        ];
        for w in want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w:?} in {got:#?}"
            );
        }
        // pool[0] was rejected, so its unknown fallback is not followed; check it alone.
        let got = problems(
            "[[pool]]\nname = \"a.example.com.\"\non_all_down = \"fallback:nowhere.example.com.\"\n[[pool.group]]\nname = \"g\"\nendpoints = [{ address = \"192.0.2.1\" }]\n",
        );
        assert_eq!(
            got,
            ["w.toml: pool[0].on_all_down: fallback pool `nowhere.example.com.` is not configured"]
        );
    }
}
