//! `[[pool]]` tables: raw TOML shapes and their validation into `model::Pool`, and rollout plans
//! (`[pool.rollout]`, or a plan sent to the admin API) into `model::RolloutPlan`. Checks that
//! need the zones (pool inside a zone, no clash with static records) live in `state::load`.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Deserialize;

use super::{Collector, Problems};
use crate::model::Webhook;
use crate::model::{
    BatchSize, Check, CheckKind, Endpoint, Group, Health, MetricGate, Name, OnAllDown, Override,
    Pool, PoolId, ProbeKey, RollingPlan, RolloutPlan, Step, Sticky,
};

/// Defaults of the keys below, written once here; config/weir.toml shows them.
mod defaults {
    pub(crate) const TTL: i64 = 30;
    pub(crate) const ANSWERS: i64 = 1;
    pub(crate) const STICKY: &str = "none";
    pub(crate) const ON_ALL_DOWN: &str = "serve-all";
    pub(crate) const MIN_HEALTHY: f64 = 0.0;
    pub(crate) const DEGRADED_TTL: i64 = 10;
    pub(crate) const WEIGHT: i64 = 1;

    // [pool.check]
    pub(crate) const HTTP_PORT: u16 = 80;
    pub(crate) const HTTPS_PORT: u16 = 443;
    pub(crate) const PATH: &str = "/";
    pub(crate) const EXPECT: (u16, u16) = (200, 399);
    pub(crate) const TLS_VERIFY: bool = true;
    pub(crate) const INTERVAL: &str = "5s";
    pub(crate) const TIMEOUT: &str = "2s";
    pub(crate) const RISE: i64 = 3;
    pub(crate) const FALL: i64 = 3;
    pub(crate) const INITIAL: &str = "up";

    // [pool.rollout]
    pub(crate) const KIND: &str = "canary";
    pub(crate) const BATCH: usize = 1;
    pub(crate) const MAX_UNAVAILABLE: &str = "25%";
    pub(crate) const PAUSE: &str = "manual";
    pub(crate) const HEALTH_TIMEOUT: &str = "10m";
    pub(crate) const SLACK: &str = "5s";
    pub(crate) const CONVERGE_TIMEOUT: &str = "5m";
    pub(crate) const ROLLOUT_TTL: &str = "5s";
    pub(crate) const GATE_INTERVAL: &str = "30s";
    pub(crate) const GATE_FAILURE_LIMIT: i64 = 3;
    pub(crate) const WEBHOOK_ON_FAILURE: &str = "pause";
}

/// Largest weight accepted for a group or an endpoint.
pub const MAX_WEIGHT: i64 = 1_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) name: String,
    ttl: Option<i64>,
    answers: Option<i64>,
    sticky: Option<String>,
    pub(super) on_all_down: Option<String>,
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
fn plan_secs(c: &mut Collector<'_>, key: &str, text: &str) -> Option<u64> {
    match humantime::parse_duration(text) {
        Ok(d) if d.as_secs() <= crate::model::MAX_DURATION_SECS => Some(d.as_secs()),
        Ok(_) => {
            c.push(
                key,
                format!(
                    "`{text}` is longer than the maximum of {}",
                    humantime::format_duration(std::time::Duration::from_secs(
                        crate::model::MAX_DURATION_SECS
                    ))
                ),
            );
            None
        }
        Err(e) => {
            c.push(key, format!("`{text}` is not a duration: {e}"));
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

/// Turns a raw plan sent to the admin API into a `RolloutPlan`; each problem's location is its
/// key in the plan (`steps[0]`, `webhook.url`).
pub fn plan(raw: &RawPlan) -> Result<RolloutPlan, Problems> {
    let mut c = Collector::standalone();
    let plan = rollout_plan(&mut c, "", raw);
    c.finish(plan)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Canary,
    BlueGreen,
    Rolling,
}

/// Checks a raw plan, every problem at `{at}{key}` (`at` is "pool[0].rollout." in a config
/// file, "" in an API request). The plan means something only if no problem was found.
fn rollout_plan(c: &mut Collector<'_>, at: &str, raw: &RawPlan) -> RolloutPlan {
    let key = |k: &str| format!("{at}{k}");
    let kinds = [
        ("canary", Kind::Canary),
        ("blue-green", Kind::BlueGreen),
        ("rolling", Kind::Rolling),
    ];
    let kind = c
        .choice(
            &key("kind"),
            raw.kind.as_deref().unwrap_or(defaults::KIND),
            &kinds,
        )
        .unwrap_or(Kind::Canary);
    let (rolling, steps) = match kind {
        Kind::Rolling => (rolling(c, at, raw), Vec::new()),
        Kind::Canary => (None, shift(c, at, raw, false)),
        Kind::BlueGreen => (None, shift(c, at, raw, true)),
    };
    // Where a duration has a problem, the plan is rejected: the value put in its place is unused.
    let slack = plan_secs(
        c,
        &key("slack"),
        raw.slack.as_deref().unwrap_or(defaults::SLACK),
    )
    .unwrap_or_default();
    let converged = converged(c, at, raw);
    let ramp_ttl = ramp_ttl(c, at, raw);
    let metric_gate = raw
        .metric_gate
        .as_ref()
        .and_then(|g| metric_gate(c, &key("metric_gate."), g));
    let webhook = raw
        .webhook
        .as_ref()
        .map(|w| webhook(c, &key("webhook."), w));
    let (from, to) = match &rolling {
        Some(r) => (r.group.clone(), r.group.clone()),
        None => (raw.from.clone(), raw.to.clone()),
    };
    RolloutPlan {
        from,
        to,
        steps,
        slack,
        ramp_ttl,
        metric_gate,
        rolling,
        webhook,
        converged,
    }
}

/// A canary or blue-green rollout: traffic shifts from `from` to `to` in steps (a blue-green
/// rollout's are fixed).
fn shift(c: &mut Collector<'_>, at: &str, raw: &RawPlan, blue_green: bool) -> Vec<Step> {
    let key = |k: &str| format!("{at}{k}");
    if raw.group.is_some()
        || raw.batch.is_some()
        || raw.max_unavailable.is_some()
        || raw.pause.is_some()
    {
        c.push(
            &key("group"),
            "group, batch, max_unavailable and pause are for kind = \"rolling\"",
        );
    } else if raw.from.is_empty() || raw.to.is_empty() {
        c.push(
            &key("from"),
            "a canary or blue-green rollout names `from` and `to`",
        );
    }
    let steps = if blue_green {
        if !raw.steps.is_empty() {
            c.push(
                &key("steps"),
                "a blue-green rollout has fixed steps; leave `steps` out",
            );
        }
        // Wait (test `to` on the preview name), flip everything, keep `from` warm for a
        // rollback until promoted once more (finalize).
        vec![Step::Pause(None), Step::SetWeight(100), Step::Pause(None)]
    } else {
        canary_steps(c, at, &raw.steps)
    };
    if raw.from == raw.to {
        c.push(&key("to"), "`from` and `to` must be different groups");
    }
    steps
}

/// `kind = "rolling"`: the group updated in place and how fast; None without a group.
fn rolling(c: &mut Collector<'_>, at: &str, raw: &RawPlan) -> Option<RollingPlan> {
    let key = |k: &str| format!("{at}{k}");
    let batch = match &raw.batch {
        None => BatchSize::Count(defaults::BATCH),
        Some(toml::Value::Integer(n)) if *n >= 1 => BatchSize::Count(*n as usize),
        Some(toml::Value::String(p)) => BatchSize::Percent(percent(c, &key("batch"), p)),
        Some(other) => {
            c.push(
                &key("batch"),
                format!("`{other}` is not a count >= 1 or a percentage like \"50%\""),
            );
            BatchSize::Count(defaults::BATCH)
        }
    };
    let max_unavailable = percent(
        c,
        &key("max_unavailable"),
        raw.max_unavailable
            .as_deref()
            .unwrap_or(defaults::MAX_UNAVAILABLE),
    );
    let pause = match raw.pause.as_deref().unwrap_or(defaults::PAUSE) {
        "manual" => None,
        text => plan_secs(c, &key("pause"), text),
    };
    let health_timeout = plan_secs(
        c,
        &key("health_timeout"),
        raw.health_timeout
            .as_deref()
            .unwrap_or(defaults::HEALTH_TIMEOUT),
    )
    .unwrap_or_default();
    let group = raw.group.as_deref().filter(|g| !g.is_empty());
    if group.is_none() {
        c.push(
            &key("group"),
            "a rolling update names the `group` it updates",
        );
    }
    if !raw.steps.is_empty() || !raw.from.is_empty() || !raw.to.is_empty() {
        c.push(
            &key("steps"),
            "a rolling update takes `group` and batches, not from/to/steps",
        );
    }
    group.map(|group| RollingPlan {
        group: group.to_string(),
        batch,
        max_unavailable,
        pause,
        health_timeout,
    })
}

/// A percentage of 1 to 100 written like "25%"; 0 for anything else (reported, so the plan is
/// rejected and the 0 unused).
fn percent(c: &mut Collector<'_>, key: &str, text: &str) -> u32 {
    match text
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<u32>().ok())
    {
        Some(p) if (1..=100).contains(&p) => p,
        _ => {
            c.push(key, format!("`{text}` is not a percentage like \"25%\""));
            0
        }
    }
}

/// A canary's steps: at least one, each a weight or a pause.
fn canary_steps(c: &mut Collector<'_>, at: &str, raw: &[RawStep]) -> Vec<Step> {
    let mut steps = Vec::new();
    for (i, step) in raw.iter().enumerate() {
        let key = format!("{at}steps[{i}]");
        match (step.set_weight, step.pause.as_deref()) {
            (Some(w), None) if (0..=100).contains(&w) => steps.push(Step::SetWeight(w as u32)),
            (Some(w), None) => c.push(&key, format!("set_weight {w} is out of range 0..=100")),
            (None, Some("manual")) => steps.push(Step::Pause(None)),
            (None, Some(text)) if humantime::parse_duration(text).is_err() => c.push(
                &key,
                format!("pause `{text}` is not \"manual\" or a duration like \"10m\""),
            ),
            (None, Some(text)) => {
                if let Some(secs) = plan_secs(c, &key, text) {
                    steps.push(Step::Pause(Some(secs)));
                }
            }
            _ => c.push(
                &key,
                "a step is either { set_weight = N } or { pause = \"10m\" | \"manual\" }",
            ),
        }
    }
    if raw.is_empty() {
        c.push(&format!("{at}steps"), "a rollout needs at least one step");
    }
    steps
}

/// `converged` and `converge_timeout`: the measured convergence gate, if asked for.
fn converged(c: &mut Collector<'_>, at: &str, raw: &RawPlan) -> Option<crate::model::Converged> {
    let key = |k: &str| format!("{at}{k}");
    match (raw.converged, raw.converge_timeout.as_deref()) {
        (None, None) => None,
        (None, Some(_)) => {
            c.push(&key("converge_timeout"), "only applies with `converged`");
            None
        }
        (Some(share), _) if !(share > 0.0 && share <= 1.0) => {
            c.push(
                &key("converged"),
                format!("{share} is not a share in (0, 1], like 0.99"),
            );
            None
        }
        (Some(share), timeout) => plan_secs(
            c,
            &key("converge_timeout"),
            timeout.unwrap_or(defaults::CONVERGE_TIMEOUT),
        )
        .map(|timeout| crate::model::Converged { share, timeout }),
    }
}

/// `ttl_ramp` and `rollout_ttl`: the TTL served during the rollout, if ramped.
fn ramp_ttl(c: &mut Collector<'_>, at: &str, raw: &RawPlan) -> Option<u32> {
    let key = format!("{at}rollout_ttl");
    match (raw.ttl_ramp, raw.rollout_ttl.as_deref()) {
        (false, None) => None,
        (false, Some(_)) => {
            c.push(&key, "only applies with ttl_ramp = true");
            None
        }
        (true, text) => plan_secs(c, &key, text.unwrap_or(defaults::ROLLOUT_TTL))
            .map(|secs| u32::try_from(secs).unwrap_or(u32::MAX)),
    }
}

/// `metric_gate`, its keys at `{at}{key}`; None if it has problems.
fn metric_gate(c: &mut Collector<'_>, at: &str, g: &RawGate) -> Option<MetricGate> {
    let key = |k: &str| format!("{at}{k}");
    if !is_http_url(&g.url) {
        c.push(&key("url"), format!("`{}` is not an http(s) URL", g.url));
    }
    let (op, value) = g.condition.trim().split_at(
        g.condition
            .trim()
            .find(|c: char| !"<>=".contains(c))
            .unwrap_or(0),
    );
    let value = value.trim().parse::<f64>();
    if !["<", "<=", ">", ">="].contains(&op) || value.is_err() {
        c.push(
            &key("condition"),
            format!(
                "`{}` is not like \"< 0.01\" (<, <=, >, >= and a number)",
                g.condition
            ),
        );
    }
    let interval =
        humantime::parse_duration(g.interval.as_deref().unwrap_or(defaults::GATE_INTERVAL));
    if interval.as_ref().map_or(true, |d| {
        d.as_secs() == 0 || d.as_secs() > crate::model::MAX_DURATION_SECS
    }) {
        c.push(&key("interval"), "must be a duration from 1s to 30 days");
    }
    let failure_limit = g.failure_limit.unwrap_or(defaults::GATE_FAILURE_LIMIT);
    if !(1..=1000).contains(&failure_limit) {
        c.push(
            &key("failure_limit"),
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
}

/// `webhook`, its keys at `{at}{key}`.
fn webhook(c: &mut Collector<'_>, at: &str, w: &RawWebhook) -> Webhook {
    let key = |k: &str| format!("{at}{k}");
    if !is_http_url(&w.url) {
        c.push(&key("url"), format!("`{}` is not an http(s) URL", w.url));
    }
    let abort_on_failure = c
        .choice(
            &key("on_failure"),
            w.on_failure
                .as_deref()
                .unwrap_or(defaults::WEBHOOK_ON_FAILURE),
            &[("pause", false), ("abort", true)],
        )
        .unwrap_or(false);
    Webhook {
        url: w.url.clone(),
        abort_on_failure,
    }
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
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
    let at = |k: &str| format!("{key}.{k}");
    let before = c.found();
    let kinds = [
        ("http", CheckKind::Http),
        ("https", CheckKind::Https),
        ("tcp", CheckKind::Tcp),
    ];
    let kind = match raw.kind.as_deref() {
        Some(text) => c.choice(&at("kind"), text, &kinds),
        None => {
            c.push(&at("kind"), "is required (\"http\", \"https\" or \"tcp\")");
            None
        }
    }
    .unwrap_or(CheckKind::Tcp);
    let port = match (raw.port, kind) {
        (Some(p), _) => c.int_in(&at("port"), p, 1, 65535) as u16,
        (None, CheckKind::Http) => defaults::HTTP_PORT,
        (None, CheckKind::Https) => defaults::HTTPS_PORT,
        (None, CheckKind::Tcp) => {
            if !has_probe {
                c.push(&at("port"), "is required for a tcp check");
            }
            0
        }
    };
    let path = raw.path.clone().unwrap_or_else(|| defaults::PATH.into());
    if !path.starts_with('/') {
        c.push(&at("path"), format!("`{path}` must start with `/`"));
    }
    let expect = expect(c, key, raw.expect.as_deref().unwrap_or_default());
    let interval = c.duration(
        &at("interval"),
        raw.interval.as_deref().unwrap_or(defaults::INTERVAL),
    );
    let timeout = c.duration(
        &at("timeout"),
        raw.timeout.as_deref().unwrap_or(defaults::TIMEOUT),
    );
    if timeout >= interval {
        c.push(
            &at("timeout"),
            format!("{timeout:?} must be shorter than interval ({interval:?})"),
        );
    }
    let rise = c.int_in(&at("rise"), raw.rise.unwrap_or(defaults::RISE), 1, 100) as u32;
    let fall = c.int_in(&at("fall"), raw.fall.unwrap_or(defaults::FALL), 1, 100) as u32;
    let initial = c
        .choice(
            &at("initial"),
            raw.initial.as_deref().unwrap_or(defaults::INITIAL),
            &[("up", Health::Up), ("down", Health::Down)],
        )
        .unwrap_or(Health::Up);
    if kind == CheckKind::Tcp
        && (own.path.is_some() || own.body_contains.is_some() || own.expect.is_some())
    {
        c.push(
            key,
            "path, expect and body_contains apply to http and https checks only",
        );
    }
    (c.found() == before).then(|| Check {
        kind,
        port,
        path,
        host: raw.host.clone(),
        expect,
        body_contains: raw.body_contains.clone(),
        tls_verify: raw.tls_verify.unwrap_or(defaults::TLS_VERIFY),
        interval,
        timeout,
        rise,
        fall,
        initial,
    })
}

/// A check's `expect` list as (low, high) status ranges; the default range if it is empty.
fn expect(c: &mut Collector<'_>, key: &str, raw: &[RawExpect]) -> Vec<(u16, u16)> {
    let mut expect = Vec::new();
    for (i, e) in raw.iter().enumerate() {
        let range = match e {
            RawExpect::Code(code) => Some((*code, *code)),
            RawExpect::Range(text) => expect_text(text),
        };
        match range {
            Some((lo, hi)) if (100..=599).contains(&lo) && (lo..=599).contains(&hi) => {
                expect.push((lo as u16, hi as u16));
            }
            _ => c.push(
                &format!("{key}.expect[{i}]"),
                "must be a status code 100..=599 (200 or \"200\"), a range like \"200-299\", or a class like \"2xx\"",
            ),
        }
    }
    if expect.is_empty() {
        expect.push(defaults::EXPECT);
    }
    expect
}

pub(super) fn validate(c: &mut Collector<'_>, placed: &[Placed<'_>]) -> Vec<Pool> {
    // (where it is written, pool) so later messages name the right `pool[i]`.
    let mut pools: Vec<(&Placed<'_>, Pool)> = Vec::new();
    // Every pool name seen, valid pool or not: a duplicate is reported even beside a pool
    // that has problems of its own (all in one pass), and a fallback to such a pool is not
    // reported as missing.
    let mut names: Vec<PoolId> = Vec::new();
    for at in placed {
        if let Some(p) = pool(c, at, &mut names) {
            pools.push((at, p));
        }
    }
    check_fallbacks(c, &pools, &names);
    let previews = previews(c, &pools);
    pools.into_iter().map(|(_, p)| p).chain(previews).collect()
}

/// A `[[pool]]` (`route: None`, its name served) or a `[[route.pool]]` (its name a label
/// inside the route's name), and the key path it is written at.
#[derive(Debug)]
pub(super) struct Placed<'a> {
    pub(super) key: String,
    pub(super) raw: &'a RawPool,
    pub(super) route: Option<&'a Name>,
}

/// A pool's identity from where it is written.
fn pool_id(at: &Placed<'_>) -> Result<PoolId, String> {
    let text = &at.raw.name;
    match at.route {
        Some(route) => PoolId::inside(route.clone(), text).map_err(|e| e.to_string()),
        None if text.contains('@') => Err(format!(
            "`{text}`: `@` is not allowed in a pool name (`label@name` is a pool inside a [[route]])"
        )),
        None => Name::parse(text)
            .map(PoolId::served)
            .map_err(|e| format!("`{text}`: {e}")),
    }
}

/// The pool at `at`; None if it has problems (each reported). Its name, once it parses, joins
/// `names`.
fn pool(c: &mut Collector<'_>, placed: &Placed<'_>, names: &mut Vec<PoolId>) -> Option<Pool> {
    let (key, rp) = (&placed.key, placed.raw);
    let at = |k: &str| format!("{key}.{k}");
    let before = c.found();
    let name = match pool_id(placed) {
        Ok(n) => n,
        Err(e) => {
            c.push(&at("name"), e);
            return None;
        }
    };
    if names.contains(&name) {
        c.push(&at("name"), format!("pool `{name}` is configured twice"));
    }
    names.push(name.clone());
    let ttl = c.int_in(&at("ttl"), rp.ttl.unwrap_or(defaults::TTL), 0, 604_800) as u32;
    let answers = c.int_in(
        &at("answers"),
        rp.answers.unwrap_or(defaults::ANSWERS),
        1,
        16,
    );
    let sticky = c
        .choice(
            &at("sticky"),
            rp.sticky.as_deref().unwrap_or(defaults::STICKY),
            &[
                ("none", Sticky::None),
                ("client-subnet", Sticky::ClientSubnet),
            ],
        )
        .unwrap_or(Sticky::None);
    let on_all_down = on_all_down(
        c,
        &at("on_all_down"),
        rp.on_all_down.as_deref().unwrap_or(defaults::ON_ALL_DOWN),
        placed.route,
    );
    let min_healthy = rp.min_healthy.unwrap_or(defaults::MIN_HEALTHY);
    if !(0.0..=1.0).contains(&min_healthy) {
        c.push(
            &at("min_healthy"),
            format!("{min_healthy} is out of range 0.0..=1.0"),
        );
    }
    let degraded_ttl = c.int_in(
        &at("degraded_ttl"),
        rp.degraded_ttl.unwrap_or(defaults::DEGRADED_TTL),
        0,
        604_800,
    ) as u32;
    let check = rp
        .check
        .as_ref()
        .and_then(|rc| check(c, &at("check"), rc, rc, true))
        .map(Arc::new);
    let groups = groups(c, key, rp, check.as_ref());
    let rollout = rp
        .rollout
        .as_ref()
        .and_then(|raw| pool_rollout(c, key, raw, &groups));
    (c.found() == before).then(|| Pool {
        check,
        rollout,
        name,
        ttl,
        answers: answers as usize,
        sticky,
        on_all_down,
        min_healthy,
        degraded_ttl: degraded_ttl.min(ttl),
        groups,
    })
}

/// `on_all_down`: what a pool answers when too little of it is up. Inside a route, a fallback
/// may name a sibling by its label alone (`fallback:us`).
fn on_all_down(c: &mut Collector<'_>, key: &str, text: &str, route: Option<&Name>) -> OnAllDown {
    let target = |t: &str| match route {
        Some(route) if !t.contains(['@', '.']) => PoolId::inside(route.clone(), t).ok(),
        _ => PoolId::parse(t).ok(),
    };
    match text {
        "serve-all" => OnAllDown::ServeAll,
        "nodata" => OnAllDown::NoData,
        "servfail" => OnAllDown::ServFail,
        other => match other.strip_prefix("fallback:").and_then(target) {
            Some(target) => OnAllDown::Fallback(target),
            None => {
                c.push(
                    key,
                    format!("`{other}` is not one of \"serve-all\", \"fallback:<pool name>\", \"nodata\", \"servfail\""),
                );
                OnAllDown::ServeAll
            }
        },
    }
}

/// A pool's `[[pool.group]]`s: named once each, every address once in the pool, some weight
/// that answers. `check` is the pool's own valid check, if any.
fn groups(
    c: &mut Collector<'_>,
    key: &str,
    rp: &RawPool,
    check: Option<&Arc<Check>>,
) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut seen = HashSet::new();
    let mut total_weight = 0i64;
    if rp.group.is_empty() {
        c.push(key, "has no [[pool.group]]: a pool needs endpoints");
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
        for (e, re) in rg.endpoints.iter().enumerate() {
            let ekey = format!("{gkey}.endpoints[{e}]");
            if let Some(endpoint) = endpoint(c, &ekey, re, rp.check.as_ref(), check, &mut seen) {
                endpoints.push(endpoint);
            }
        }
        if endpoints.iter().any(|e| e.weight > 0) {
            total_weight += weight;
        }
        groups.push(Group {
            name: rg.name.clone(),
            weight: weight as u32,
            endpoints,
        });
    }
    if !rp.group.is_empty() && groups.iter().all(|g| g.endpoints.is_empty()) {
        c.push(key, "has no endpoints");
    } else if !rp.group.is_empty() && total_weight == 0 {
        c.push(
            key,
            "every group or endpoint weight is 0: the pool would never answer",
        );
    }
    groups
}

/// One endpoint at `key`; None if its address is not one to serve. `seen`: the addresses of the
/// pool so far; `pool_raw` and `pool_check` as for `probe`.
fn endpoint(
    c: &mut Collector<'_>,
    key: &str,
    re: &RawEndpoint,
    pool_raw: Option<&RawCheck>,
    pool_check: Option<&Arc<Check>>,
    seen: &mut HashSet<IpAddr>,
) -> Option<Endpoint> {
    let Ok(address) = re.address.parse::<IpAddr>() else {
        c.push(
            &format!("{key}.address"),
            format!("`{}` is not an IP address", re.address),
        );
        return None;
    };
    if let Some(why) = crate::model::unservable(address) {
        c.push(&format!("{key}.address"), why);
        return None;
    }
    if !seen.insert(address) {
        c.push(
            &format!("{key}.address"),
            format!("{address} appears twice in the pool"),
        );
    }
    let weight = c.int_in(
        &format!("{key}.weight"),
        re.weight.unwrap_or(defaults::WEIGHT),
        0,
        MAX_WEIGHT,
    );
    let probe = probe(c, key, re, address, pool_raw, pool_check);
    Some(Endpoint {
        address,
        weight: weight as u32,
        probe,
        force: Override::Auto,
    })
}

/// What probes the endpoint at `key` (serving `address`), and where: its own check keys over the
/// pool's, else the pool's check; at its `probe` address, else at `address`. `pool_raw` and
/// `pool_check`: the pool's check as written and as validated.
fn probe(
    c: &mut Collector<'_>,
    key: &str,
    re: &RawEndpoint,
    address: IpAddr,
    pool_raw: Option<&RawCheck>,
    pool_check: Option<&Arc<Check>>,
) -> Option<ProbeKey> {
    let probe_addr = match re.probe.as_deref().map(str::parse::<SocketAddr>) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => {
            c.push(
                &format!("{key}.probe"),
                format!(
                    "`{}` is not an address with a port, like \"10.0.0.5:8080\"",
                    re.probe.as_deref().unwrap_or("")
                ),
            );
            None
        }
    };
    let check = match (&re.check, pool_check) {
        // The endpoint's own keys over the pool's, validated as one check.
        (Some(own), _) => {
            let merged = match pool_raw {
                Some(base) => own.over(base),
                None => own.clone(),
            };
            check(
                c,
                &format!("{key}.check"),
                &merged,
                own,
                probe_addr.is_some(),
            )
            .map(Arc::new)
        }
        (None, Some(pool)) => {
            if pool.port == 0 && probe_addr.is_none() {
                c.push(
                    &format!("{key}.probe"),
                    "the pool's tcp check has no port: give the check a port or this endpoint a probe address",
                );
            }
            Some(pool.clone())
        }
        // No check anywhere (or an invalid pool check, reported once above).
        (None, None) => None,
    };
    check.map(|check| ProbeKey {
        target: probe_addr.unwrap_or(SocketAddr::new(address, check.port)),
        check,
    })
}

/// `[pool.rollout]` at `key`.rollout: a plan whose groups are in this pool; None if it has
/// problems (each reported).
fn pool_rollout(
    c: &mut Collector<'_>,
    key: &str,
    raw: &RawPlan,
    groups: &[Group],
) -> Option<RolloutPlan> {
    let before = c.found();
    let plan = rollout_plan(c, &format!("{key}.rollout."), raw);
    if c.found() != before {
        return None;
    }
    for group in [&plan.from, &plan.to] {
        if !groups.iter().any(|g| g.name == *group) {
            c.push(
                &format!("{key}.rollout"),
                format!("no group `{group}` in this pool"),
            );
        }
    }
    Some(plan)
}

/// Fallbacks name existing pools, never themselves, never in a cycle.
fn check_fallbacks(c: &mut Collector<'_>, pools: &[(&Placed<'_>, Pool)], names: &[PoolId]) {
    for (placed, pool) in pools {
        let key = format!("{}.on_all_down", placed.key);
        let mut seen = vec![&pool.name];
        let mut at = pool;
        while let OnAllDown::Fallback(target) = &at.on_all_down {
            let Some((_, next)) = pools.iter().find(|(_, p)| &p.name == target) else {
                if names.contains(target) {
                    // Configured, with problems of its own (reported there).
                    break;
                }
                c.push(&key, format!("fallback pool `{target}` is not configured"));
                break;
            };
            if seen.contains(&&next.name) {
                let chain: Vec<String> = seen.iter().map(ToString::to_string).collect();
                c.push(
                    &key,
                    format!("fallback cycle: {} -> {}", chain.join(" -> "), next.name),
                );
                break;
            }
            seen.push(&next.name);
            at = next;
        }
    }
}

/// Blue-green preview names: a pool of their own answering only from the `to` group.
fn previews(c: &mut Collector<'_>, pools: &[(&Placed<'_>, Pool)]) -> Vec<Pool> {
    let mut previews = Vec::new();
    for (placed, pool) in pools {
        let Some(name) = (placed.raw.rollout.as_ref()).and_then(|r| r.preview_name.as_ref()) else {
            continue;
        };
        let key = format!("{}.rollout.preview_name", placed.key);
        let Some(plan) = &pool.rollout else { continue };
        let preview = match Name::parse(name) {
            Ok(n) => PoolId::served(n),
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
    previews
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const ZONE: &str = "[[zone]]\norigin = \"example.com.\"\nfile = \"x\"\n";

    /// Every problem of `want` starts one of `got`.
    fn assert_found(got: &[String], want: &[&str]) {
        for w in want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w:?} in {got:#?}"
            );
        }
    }

    /// Every problem as `w.toml: key.path: message`: the line each is at is checked by the
    /// config tests (`every_semantic_problem_is_reported_with_its_line_and_key_path`), and
    /// would only make these expectations harder to read.
    fn problems(pools: &str) -> Vec<String> {
        match super::super::parse(&format!("{ZONE}{pools}"), Path::new("w.toml")) {
            Ok(_) => Vec::new(),
            Err(p) => p.0.iter().map(|p| without_line(&p.to_string())).collect(),
        }
    }

    fn without_line(problem: &str) -> String {
        match problem
            .strip_prefix("w.toml:")
            .and_then(|rest| rest.split_once(':'))
        {
            Some((line, rest)) if line.parse::<usize>().is_ok() => format!("w.toml:{rest}"),
            _ => problem.to_string(),
        }
    }

    #[test]
    fn a_plan_from_the_api_names_each_problem_by_its_key_alone() {
        let raw: super::RawPlan = toml::from_str(
            "kind = \"linear\"\nfrom = \"a\"\nto = \"a\"\nsteps = [{ set_weight = 1 }]\nwebhook = { url = \"ftp://x\" }\n",
        )
        .unwrap();
        let got: Vec<(String, String)> = super::plan(&raw)
            .unwrap_err()
            .iter()
            .map(|(k, m)| (k.to_string(), m.to_string()))
            .collect();
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["kind", "to", "webhook.url"], "{got:?}");

        let raw: super::RawPlan =
            toml::from_str("kind = \"rolling\"\ngroup = \"g\"\nttl_ramp = true\nconverged = 0.5\n")
                .unwrap();
        let plan = super::plan(&raw).unwrap();
        let rolling = plan.rolling.as_ref().unwrap();
        assert_eq!((plan.from.as_str(), plan.to.as_str()), ("g", "g"));
        assert_eq!(rolling.batch, crate::model::BatchSize::Count(1));
        assert_eq!(
            (
                rolling.max_unavailable,
                rolling.pause,
                rolling.health_timeout
            ),
            (25, None, 600)
        );
        assert_eq!((plan.slack, plan.ramp_ttl), (5, Some(5)));
        assert_eq!(plan.converged.unwrap().timeout, 300);
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
        assert_found(&got, &want);
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
        assert_found(&got, &want);
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
