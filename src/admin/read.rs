//! The admin API's read side: readiness, metrics, zones, pools (config and live state side by
//! side, from the published snapshot's view), cache convergence and the audit log.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    AUDIT_DEFAULT, AUDIT_MAX, AdminContext, ApiError, MAX_PREVIEWS, bad_request, pool_name,
};
use crate::model::{Override, Pool, PoolId};

pub(super) async fn readyz(State(ctx): State<AdminContext>) -> impl IntoResponse {
    let snapshot = ctx.snapshot.load();
    if !ctx.probes_ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first health probe results\n".to_string(),
        );
    }
    if let Some(problem) = ctx.store_health.problem() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the state store is failing: {problem}\n"),
        );
    }
    (
        StatusCode::OK,
        format!(
            "ready: generation {}, {} zones\n",
            snapshot.view.generation,
            snapshot.zone_count()
        ),
    )
}

pub(super) async fn metrics(State(ctx): State<AdminContext>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.metrics.render(),
    )
}

/// A JSON body with the generation as ETag, so a client can send it back as If-Match.
pub(super) fn with_generation(generation: u64, body: Value) -> Response {
    let mut response = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{generation}\"")) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

pub(super) async fn zones(State(ctx): State<AdminContext>) -> Response {
    let snapshot = ctx.snapshot.load();
    let view = &snapshot.view;
    let zones: Vec<String> = view.zones.iter().map(ToString::to_string).collect();
    with_generation(
        view.generation,
        json!({ "generation": view.generation, "zones": zones }),
    )
}

fn zone_name(text: &str) -> Result<crate::model::Name, ApiError> {
    crate::model::Name::parse(text).map_err(|e| bad_request(format!("zone name `{text}`: {e}")))
}

/// One RRset as the admin API shows it: owner, type, TTL, its records in zone-file form.
fn rrset_json(owner: &crate::model::Name, set: &crate::model::RRset) -> Value {
    json!({
        "owner": owner.to_string(),
        "type": crate::model::rtype_name(set.rtype),
        "ttl": set.ttl,
        "records": crate::zones::present(owner, set),
    })
}

/// A stored RRset (a layer's, a journal entry's) as `rrset_json`; `deleted` when empty.
fn stored_json(stored: &crate::model::StoredSet) -> Value {
    match stored.rrset() {
        Some(set) => {
            let mut v = rrset_json(&stored.owner, &set);
            v["deleted"] = json!(set.rdatas.is_empty());
            v
        }
        None => {
            json!({ "owner": stored.owner.to_string(), "type": crate::model::rtype_name(stored.rtype), "corrupt": true })
        }
    }
}

/// `GET /v1/zones/{zone}/records`: the zone's static data as served (its file with the
/// UPDATE layer over it; managed names left out) and its serial: what to save as the zone file
/// when folding updates back (`weir ctl records ZONE`).
pub(super) async fn zone_records(
    State(ctx): State<AdminContext>,
    Path(zone): Path<String>,
) -> Result<Response, ApiError> {
    let zone = zone_name(&zone)?;
    let snapshot = ctx.snapshot.load();
    let (serial, sets) = (snapshot.zone_rrsets(&zone))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no zone `{zone}`")))?;
    let rrsets: Vec<Value> = sets
        .iter()
        .map(|(owner, set)| rrset_json(owner, set))
        .collect();
    let generation = snapshot.view.generation;
    Ok(with_generation(
        generation,
        json!({ "generation": generation, "zone": zone.to_string(), "serial": serial, "rrsets": rrsets }),
    ))
}

/// `GET /v1/zones/{zone}/dnssec`: how the zone is signed: its keys (tag, algorithm, role,
/// whether published and signing, file), the DS for the parent, the signatures' validity and
/// next signing, and the latest key rollover with its phase. 404 for a zone weir does not sign.
pub(super) async fn zone_dnssec(
    State(ctx): State<AdminContext>,
    Path(zone): Path<String>,
) -> Result<Response, ApiError> {
    let zone = zone_name(&zone)?;
    let snapshot = ctx.snapshot.load();
    let signing = snapshot.signing(&zone).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("zone `{zone}` is not signed by weir"),
        )
    })?;
    let keys: Vec<Value> = (signing.keys.keys.iter())
        .map(|k| {
            let role = match (
                k.key.is_sep(),
                signing.keys.keys.iter().any(|o| !o.key.is_sep()),
            ) {
                (true, true) => "ksk",
                (true, false) => "csk",
                (false, _) => "zsk",
            };
            json!({
                "tag": k.key.tag,
                "algorithm": k.key.algorithm.mnemonic(),
                "role": role,
                "published": signing.published.contains(&k.key.tag),
                "signing": signing.signing.contains(&k.key.tag),
                "file": k.stem.display().to_string(),
            })
        })
        .collect();
    let ds: Vec<String> = crate::dnssec::ds_lines(&zone, signing.keys.keys.iter().map(|k| &*k.key))
        .lines()
        .map(str::to_string)
        .collect();
    // The phase as served: the one at the time the served signatures were made (the writer
    // signs again within a second of a phase's start).
    let now = signing.built_at;
    let rollover = snapshot.view.overlay.rollovers.get(&zone).map(|r| {
        json!({
            "key": r.key,
            "retiring": r.retiring,
            "started": r.started,
            "activate_at": r.activate_at,
            "retire_at": r.retire_at,
            "phase": r.phase(now),
        })
    });
    let generation = snapshot.view.generation;
    Ok(with_generation(
        generation,
        json!({
            "generation": generation,
            "zone": zone.to_string(),
            "keys": keys,
            "ds": ds,
            "dnskey_ttl": signing.dnskey_ttl,
            "max_ttl": signing.max_ttl,
            "inception": signing.window.inception,
            "expiration": signing.window.expiration,
            "renew_at": signing.renew_at,
            "rollover": rollover,
        }),
    ))
}

/// `GET /v1/zones/{zone}/updates`: the zone's UPDATE layer: the RRsets that differ from its
/// file (`deleted`: the file's set is removed), the layer's serial beside the one served, and
/// the journal (each change's records removed and added), newest last.
pub(super) async fn zone_updates(
    State(ctx): State<AdminContext>,
    Path(zone): Path<String>,
) -> Result<Response, ApiError> {
    let zone = zone_name(&zone)?;
    let snapshot = ctx.snapshot.load();
    let served = snapshot.zone_rrsets(&zone).map(|(serial, _)| serial);
    let layer = snapshot.view.overlay.zones.get(&zone);
    if served.is_none() && layer.is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no zone `{zone}`")));
    }
    let empty = crate::model::ZoneEdits::default();
    let layer = layer.unwrap_or(&empty);
    let journal: Vec<Value> = (layer.journal.iter())
        .map(|e| {
            json!({
                "from": e.from,
                "to": e.to,
                "removed": e.removed.iter().map(stored_json).collect::<Vec<_>>(),
                "added": e.added.iter().map(stored_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    let generation = snapshot.view.generation;
    Ok(with_generation(
        generation,
        json!({
            "generation": generation,
            "zone": zone.to_string(),
            "served": served.is_some(),
            "serial": served,
            "layer_serial": (layer.serial != 0).then_some(layer.serial),
            "rrsets": layer.rrsets.iter().map(stored_json).collect::<Vec<_>>(),
            "journal": journal,
        }),
    ))
}

pub(super) async fn pools(State(ctx): State<AdminContext>) -> Response {
    let snapshot = ctx.snapshot.load();
    let view = &snapshot.view;
    let pools: Vec<Value> = view
        .pools
        .iter()
        .map(|p| {
            let status = snapshot.pool_status(&p.name);
            json!({
                "name": p.name.to_string(),
                "ttl": p.ttl,
                "groups": p.groups.iter().map(|g| json!({ "name": g.name, "weight": g.weight, "endpoints": g.endpoints.len() })).collect::<Vec<_>>(),
                "degraded": status.map(|s| json!({ "ipv4": s.ipv4.degraded, "ipv6": s.ipv6.degraded })),
            })
        })
        .collect();
    with_generation(
        view.generation,
        json!({ "generation": view.generation, "pools": pools }),
    )
}

fn find_pool<'a>(pools: &'a [Pool], name: &str) -> Result<&'a Pool, ApiError> {
    let parsed =
        PoolId::parse(name).map_err(|e| bad_request(format!("pool name `{name}`: {e}")))?;
    pools
        .iter()
        .find(|p| p.name == parsed)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no pool `{parsed}`")))
}

fn source(configured: Option<u32>, effective: u32) -> &'static str {
    match configured {
        None => "runtime",
        Some(c) if c == effective => "config",
        Some(_) => "override",
    }
}

pub(super) async fn pool(
    State(ctx): State<AdminContext>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let snapshot = ctx.snapshot.load();
    let view = &snapshot.view;
    let served = find_pool(&view.pools, &name)?;
    let config = find_pool(&view.config_pools, &name)?;
    let last = ctx.probes.lock().map(|m| m.clone()).unwrap_or_default();
    let groups: Vec<Value> = served
        .groups
        .iter()
        .map(|g| {
            let cg = config.groups.iter().find(|c| c.name == g.name);
            let endpoints: Vec<Value> = g
                .endpoints
                .iter()
                .map(|e| {
                    let ce = cg.and_then(|cg| cg.endpoints.iter().find(|c| c.address == e.address));
                    let probe = e.probe.as_ref().map(|k| {
                        let health = view.probe_health(k);
                        json!({
                            "target": k.target.to_string(),
                            "kind": format!("{:?}", k.check.kind).to_lowercase(),
                            "health": health,
                            "last": last.get(k),
                        })
                    });
                    let up = view.endpoint_up(e);
                    json!({
                        "address": e.address.to_string(),
                        "weight": {
                            "configured": ce.map(|c| c.weight),
                            "effective": e.weight,
                            "source": source(ce.map(|c| c.weight), e.weight),
                        },
                        "override": e.force,
                        "probe": probe,
                        "up": up,
                    })
                })
                .collect();
            json!({
                "name": g.name,
                "weight": {
                    "configured": cg.map(|c| c.weight),
                    "effective": g.weight,
                    "source": source(cg.map(|c| c.weight), g.weight),
                },
                "endpoints": endpoints,
            })
        })
        .collect();
    let removed: Vec<&std::net::IpAddr> = view
        .overlay
        .removed
        .get(&served.name)
        .into_iter()
        .flatten()
        .collect();
    let body = json!({
        "name": served.name.to_string(),
        "generation": view.generation,
        "ttl": served.ttl,
        "answers": served.answers,
        "sticky": served.sticky.to_string(),
        "on_all_down": served.on_all_down.to_string(),
        "min_healthy": served.min_healthy,
        "degraded_ttl": served.degraded_ttl,
        "status": snapshot.pool_status(&served.name),
        "groups": groups,
        "removed": removed,
    });
    Ok(with_generation(view.generation, body))
}

/// `GET /v1/pools/{pool}/rollout`: the stored rollout plus what it waits for.
pub(super) async fn rollout(
    State(ctx): State<AdminContext>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let snapshot = ctx.snapshot.load();
    let view = &snapshot.view;
    let pool = find_pool(&view.pools, &name)?;
    let r = view.overlay.rollouts.get(&pool.name).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no rollout for pool `{}`", pool.name),
        )
    })?;
    let now = crate::clock::now_ms();
    let due = crate::rollout::next_due(r);
    let safe_at = crate::rollout::safe_at(r);
    // Measured cache convergence since the rollout's last change (this nameserver's resolvers).
    let measured = ctx.convergence.since(&pool.name, r.changed_at);
    let safe = crate::rollout::safe(r, now, measured.as_ref().map(|c| c.refetched));
    let (reason, cause) = match &r.state {
        crate::model::RolloutState::Aborted { reason, cause } => {
            (Some(reason), Some(cause.label()))
        }
        _ => (None, None),
    };
    let body = json!({
        "pool": pool.name.to_string(),
        "generation": view.generation,
        "from": r.from,
        "to": r.to,
        "state": crate::rollout::state_name(&r.state),
        "reason": reason,
        "abort_cause": cause,
        // Why weir stopped the rollout by itself, if it did.
        "hold": r.hold,
        "weight": r.weight,
        "step": r.step,
        "steps": r.steps.len(),
        "plan": r.steps,
        // Unix milliseconds. `settled_at` = changed_at + settle_ttl + 1 s + slack: no resolver
        // that honours TTLs can hold an answer from before the change past it.
        "changed_at": r.changed_at,
        "settled_at": r.settled_at,
        "settle_ttl": r.settle_ttl,
        "slack": r.slack,
        "settles_in_ms": r.settled_at.saturating_sub(now),
        // Several nameservers: the last change is not yet served by all of them; its settle
        // clock starts when it is.
        "awaiting_sync": r.awaiting_sync,
        "next": due.what,
        "next_at": due.at,
        // A weight shift at 100%: `from` gets no traffic any more, even from caches, from
        // `safe_to_remove_at` on.
        "safe_to_remove_at": if r.rolling.is_none() { safe_at } else { None },
        "safe_to_remove": r.rolling.is_none() && safe,
        "from_drained": r.rolling.is_none() && safe,
        "ramp_ttl": r.ramp_ttl,
        "converged": r.converged,
        // What resolvers did since the last change: `refetched`, `silent`, `converged_after_ms`
        // (null until the change is seen in answers, or with tracking off).
        "convergence": measured,
        "rolling": r.rolling.as_ref().map(|rl| json!({
            "group": rl.plan.group,
            "batch": rl.batch,
            "batches": rl.batches,
            "phase": rl.phase,
            "drained": crate::rollout::drained(r),
            // The current batch gets no traffic any more, even from caches.
            "safe_to_upgrade_at": safe_at,
            "safe_to_upgrade": matches!(rl.phase, crate::model::Phase::SafeToUpgrade),
        })),
        "metric_gate": r.metric_gate,
        "now": now,
    });
    Ok(with_generation(view.generation, body))
}

/// `GET /v1/pools/{pool}/preview?weights=blue:50,green:50&down=192.0.2.10&family=ipv4`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PreviewQuery {
    /// `group:weight` pairs, comma separated.
    weights: Option<String>,
    /// Endpoint addresses to treat as down, comma separated.
    down: Option<String>,
    /// "ipv4" (default) or "ipv6".
    family: Option<String>,
    /// Route previews: the resolver's address (the client itself without `ecs`).
    client: Option<String>,
    /// Route previews: an ECS prefix, `198.51.100.0/24`.
    ecs: Option<String>,
}

/// The exact probability of each endpoint and answer set under proposed weights and a
/// hypothetical set of down endpoints; for sticky pools, the share of clients that would move.
/// Changes nothing. The work runs on a blocking thread under one of `MAX_PREVIEWS` permits
/// (none free: 429), after the cost bound (past it: 422).
pub(super) async fn preview(
    State(ctx): State<AdminContext>,
    Path(name): Path<String>,
    query: Result<Query<PreviewQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| bad_request(e.body_text()))?;
    let snapshot = ctx.snapshot.load();
    let proposed = propose(find_pool(&snapshot.view.pools, &name)?.clone(), &q)?;
    let extra = json!({ "pool": proposed.name.to_string() });
    compute_preview(&ctx, proposed, qtype(&q)?, extra).await
}

/// `GET /v1/routes/{name}/preview?client=ADDR&ecs=PREFIX&weights=..&down=..&family=..`:
/// which rule a client matches, the pool it selects and the ECS scope, then that pool's
/// preview under the proposed weights and health.
pub(super) async fn route_preview(
    State(ctx): State<AdminContext>,
    Path(name): Path<String>,
    query: Result<Query<PreviewQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| bad_request(e.body_text()))?;
    let name = route_name(&name)?;
    let client = preview_client(&q)?;
    let snapshot = ctx.snapshot.load();
    let (decision, pool) = snapshot
        .route_decision(&name, &client)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no route `{name}`")))?;
    let pool = snapshot
        .view
        .pools
        .iter()
        .find(|p| p.name == *pool)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no pool `{pool}`")))?;
    let proposed = propose(pool.clone(), &q)?;
    let extra = json!({
        "name": name.to_string(),
        "client": q.client,
        "ecs": q.ecs,
        "rule": decision.rule + 1,
        "pool": proposed.name.to_string(),
        "ecs_scope": decision.scope,
    });
    compute_preview(&ctx, proposed, qtype(&q)?, extra).await
}

/// The client a route preview asks for: `ecs` (a prefix, as a resolver would send it) and/or
/// `client` (the resolver's address; without `ecs`, the client itself).
fn preview_client(q: &PreviewQuery) -> Result<crate::snapshot::Client, ApiError> {
    let addr = match &q.client {
        Some(text) => text
            .parse()
            .map_err(|_| bad_request(format!("client: `{text}` is not an IP address")))?,
        None => std::net::IpAddr::from([0, 0, 0, 0]),
    };
    let ecs = match &q.ecs {
        Some(text) => {
            let p = crate::model::Prefix::parse(text).ok_or_else(|| {
                bad_request(format!(
                    "ecs: `{text}` is not an address prefix (198.51.100.0/24; no bits set past the length)"
                ))
            })?;
            let (family, addr) = match p.addr {
                std::net::IpAddr::V4(a) => {
                    let mut b = [0; 16];
                    b[..4].copy_from_slice(&a.octets());
                    (1, b)
                }
                std::net::IpAddr::V6(a) => (2, a.octets()),
            };
            Some(crate::snapshot::Subnet {
                family,
                source_prefix: p.len,
                addr,
            })
        }
        None => None,
    };
    if q.client.is_none() && ecs.is_none() {
        return Err(bad_request(
            "a route preview needs client=ADDRESS or ecs=PREFIX",
        ));
    }
    Ok(crate::snapshot::Client { addr, ecs })
}

/// `pool` with the preview's proposed weights and down endpoints.
fn propose(mut proposed: Pool, q: &PreviewQuery) -> Result<Pool, ApiError> {
    for pair in q
        .weights
        .iter()
        .flat_map(|w| w.split(','))
        .filter(|p| !p.is_empty())
    {
        let (group, weight) = pair
            .split_once(':')
            .and_then(|(g, w)| Some((g, w.trim().parse::<u32>().ok()?)))
            .ok_or_else(|| bad_request(format!("weights: `{pair}` is not `group:weight`")))?;
        let g = proposed
            .groups
            .iter_mut()
            .find(|g| g.name == group)
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no group `{group}`")))?;
        g.weight = weight;
    }
    for addr in q
        .down
        .iter()
        .flat_map(|d| d.split(','))
        .filter(|a| !a.is_empty())
    {
        let address: std::net::IpAddr = addr
            .parse()
            .map_err(|_| bad_request(format!("down: `{addr}` is not an IP address")))?;
        let e = proposed
            .groups
            .iter_mut()
            .flat_map(|g| g.endpoints.iter_mut())
            .find(|e| e.address == address)
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no endpoint {address}")))?;
        e.force = Override::Down;
    }
    Ok(proposed)
}

fn qtype(q: &PreviewQuery) -> Result<u16, ApiError> {
    match q.family.as_deref().unwrap_or("ipv4") {
        "ipv4" => Ok(crate::model::rtype::A),
        "ipv6" => Ok(crate::model::rtype::AAAA),
        other => Err(bad_request(format!("family `{other}` is not ipv4 or ipv6"))),
    }
}

/// Runs a preview of `proposed` on the preview workers; the body is `extra` plus the
/// generation and the preview.
async fn compute_preview(
    ctx: &AdminContext,
    proposed: Pool,
    qtype: u16,
    extra: Value,
) -> Result<Response, ApiError> {
    // Held by the blocking task, so a client that hangs up does not free its slot early.
    let Ok(permit) = ctx.previews.clone().try_acquire_owned() else {
        let error = format!("{MAX_PREVIEWS} previews are being computed; retry in a moment");
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [(axum::http::header::RETRY_AFTER, "1")],
            Json(json!({ "error": error })),
        )
            .into_response());
    };
    let snapshot = ctx.snapshot.load_full();
    static PREVIEWS: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    let body = on_workers(&PREVIEWS, "weir-preview", MAX_PREVIEWS, move || {
        let _permit = permit;
        let preview = snapshot.pool_preview(&proposed, qtype)?;
        let mut body = extra;
        body["generation"] = json!(snapshot.view.generation);
        body["preview"] = json!(preview);
        // Serialized here too: a large preview's JSON is work of its own.
        Ok::<_, crate::snapshot::PreviewError>(body.to_string())
    })
    .await?
    .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

fn route_name(text: &str) -> Result<crate::model::Name, ApiError> {
    crate::model::Name::parse(text).map_err(|e| bad_request(format!("route name `{text}`: {e}")))
}

/// One routed name for the admin API: its rules (criteria, pool, queries matched) and its
/// pools (how each answers now, its fallback, queries selected).
fn route_json(snapshot: &crate::snapshot::Snapshot, r: &crate::snapshot::RouteStatus<'_>) -> Value {
    let codes = |codes: &[crate::model::Code]| -> Vec<String> {
        codes
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect()
    };
    let rules: Vec<Value> = (r.route.rules.iter().zip(r.selects).enumerate())
        .map(|(i, (rule, pool))| {
            json!({
                "rule": i + 1,
                "pool": pool.to_string(),
                "catch_all": rule.is_catch_all(),
                "subnets": rule.subnets.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "continents": codes(&rule.continents),
                "countries": codes(&rule.countries),
                "subdivisions": rule.subdivisions.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "asns": rule.asns,
                "queries": r.queries.get(i).copied().unwrap_or(0),
            })
        })
        .collect();
    let view = &snapshot.view;
    let pools: Vec<Value> = (view.pools.iter())
        .filter(|p| p.name.label.is_some() && p.name.name == r.route.name)
        .map(|p| {
            let endpoints = p.groups.iter().flat_map(|g| &g.endpoints);
            let selected: u64 = (r.selects.iter().zip(&r.queries))
                .filter(|(s, _)| **s == p.name)
                .map(|(_, q)| q)
                .sum();
            json!({
                "pool": p.name.to_string(),
                "on_all_down": p.on_all_down.to_string(),
                "endpoints": endpoints.clone().count(),
                "up": endpoints.filter(|e| view.endpoint_up(e)).count(),
                "status": snapshot.pool_status(&p.name),
                "queries": selected,
            })
        })
        .collect();
    json!({ "name": r.route.name.to_string(), "rules": rules, "pools": pools })
}

/// `GET /v1/routes`: every routed name, and the databases their rules read.
pub(super) async fn routes(State(ctx): State<AdminContext>) -> Response {
    let snapshot = ctx.snapshot.load();
    let routes: Vec<Value> = snapshot
        .routes()
        .map(|r| route_json(&snapshot, &r))
        .collect();
    let databases: Vec<Value> = snapshot
        .databases()
        .map(|(kind, db)| {
            json!({
                "kind": kind,
                "path": db.path().display().to_string(),
                "type": db.database_type(),
                "build_epoch": db.build_epoch(),
            })
        })
        .collect();
    let generation = snapshot.view.generation;
    with_generation(
        generation,
        json!({ "generation": generation, "routes": routes, "databases": databases }),
    )
}

/// `GET /v1/routes/{name}`.
pub(super) async fn route(
    State(ctx): State<AdminContext>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = route_name(&name)?;
    let snapshot = ctx.snapshot.load();
    let r = (snapshot.routes())
        .find(|r| r.route.name == name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no route `{name}`")))?;
    let mut body = route_json(&snapshot, &r);
    let generation = snapshot.view.generation;
    body["generation"] = json!(generation);
    Ok(with_generation(generation, body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    pool: Option<String>,
    limit: Option<usize>,
    /// The change feed: records of generations after this one, oldest first.
    since: Option<u64>,
}

/// `GET /v1/audit?pool=&limit=`: newest first. `?since=G`: the change feed, every record
/// after generation G oldest first (then `pool` filters, `limit` caps from the oldest).
pub(super) async fn audit(
    State(ctx): State<AdminContext>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| bad_request(e.body_text()))?;
    let pool = match q.pool.as_deref() {
        Some(p) => Some(pool_name(p)?.to_string()),
        None => None,
    };
    let limit = q.limit.unwrap_or(AUDIT_DEFAULT).min(AUDIT_MAX);
    let log = ctx.audit.clone();
    // Waits (does not refuse) for one of a few permits: a page is held in memory only while
    // it is read and encoded, and only `MAX_AUDIT_READS` at once.
    let permit = ctx
        .audit_reads
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let body = on_audit_thread(move || {
        let records = match q.since {
            None => log.read(pool.as_deref(), limit),
            Some(after) => log.since(after, pool.as_deref(), limit),
        }
        .map_err(store_error)?;
        // Encoded straight from the records (no intermediate JSON tree), then dropped.
        #[derive(Serialize)]
        struct Page<'a> {
            records: &'a [crate::model::AuditRecord],
        }
        // Sized up front (reason plus ~400 bytes of fields per record), so the buffer does
        // not double past what the page needs while it is written.
        let guess: usize = records.iter().map(|r| r.reason.len() + 400).sum();
        let mut out = Vec::with_capacity(guess + 16);
        serde_json::to_writer(&mut out, &Page { records: &records })
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Ok::<_, ApiError>(out)
    })
    .await??;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::new(PermitBody {
            bytes: body.into(),
            permit: Some(permit),
        }),
    )
        .into_response())
}

/// A job for an admin worker thread.
type Job = Box<dyn FnOnce() + Send>;

/// Threads named `name` that run admin jobs one at a time each, in SCHED_IDLE
/// (`serve::idle_this_thread`). None when no thread could be started (the caller then uses the
/// blocking pool).
fn workers(name: &str, threads: usize) -> Option<std::sync::mpsc::Sender<Job>> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let mut started = false;
    for _ in 0..threads {
        let rx = rx.clone();
        started |= std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                super::serve::idle_this_thread();
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // A job that panics loses its reply (a 500), not the thread.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .is_ok();
    }
    started.then_some(tx)
}

/// Runs `job` on `queue`'s worker threads (started on first use).
async fn on_workers<T: Send + 'static>(
    queue: &'static std::sync::OnceLock<Option<std::sync::mpsc::Sender<Job>>>,
    name: &str,
    threads: usize,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let queue = queue.get_or_init(|| workers(name, threads));
    let failed = |e: String| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e);
    let Some(queue) = queue else {
        return tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| failed(e.to_string()));
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    queue
        .send(Box::new(move || {
            let _ = tx.send(job());
        }))
        .map_err(|_| failed(format!("the {name} thread stopped")))?;
    rx.await
        .map_err(|_| failed(format!("the {name} job failed")))
}

/// Runs `job` on the one `weir-audit` thread. Pages are built one after another on one thread,
/// so their memory comes from and returns to one allocator arena: on blocking-pool threads each
/// page could land in an arena of its own and stay resident there (measured: +30 MB over 64
/// largest pages).
async fn on_audit_thread<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    static QUEUE: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    on_workers(&QUEUE, "weir-audit", 1, job).await
}

/// Slices of a finished body handed to hyper as it writes.
const SLICE: usize = 64 * 1024;

/// A finished response body sent in slices that holds its permit until the last slice is
/// taken, so a page's bytes count against `MAX_AUDIT_READS` until hyper has nearly written
/// them, not only while they are built.
struct PermitBody {
    bytes: axum::body::Bytes,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl hyper::body::Body for PermitBody {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if self.bytes.is_empty() {
            self.permit = None;
            return std::task::Poll::Ready(None);
        }
        let n = self.bytes.len().min(SLICE);
        let slice = self.bytes.split_to(n);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(slice))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.bytes.len() as u64)
    }
}

/// A store failure as an API error: 503 when the shared store is unreachable.
pub(super) fn store_error(e: crate::store::StoreError) -> ApiError {
    let status = match e {
        crate::store::StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError(status, e.to_string())
}

async fn read_nodes(ctx: &AdminContext) -> Result<Vec<crate::store::Node>, ApiError> {
    let store = ctx.audit.clone();
    let served = ctx.snapshot.load().view.generation;
    tokio::task::spawn_blocking(move || store.nodes(served))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(store_error)
}

/// `GET /v1/nodes`: every nameserver sharing the state, the generation each serves, and
/// members whose lease expired (`generation: null`, gone).
pub(super) async fn nodes(State(ctx): State<AdminContext>) -> Result<Response, ApiError> {
    let nodes = read_nodes(&ctx).await?;
    Ok(Json(json!({
        "generation": ctx.snapshot.load().view.generation,
        "shared": ctx.audit.shared(),
        "nodes": nodes,
    }))
    .into_response())
}

/// `GET /v1/changes/{generation}`: INSYNC when every known nameserver serves at least that
/// generation, else PENDING with the nodes that lag or are gone. A member that stopped
/// without leaving (crash, SIGSTOP, partition) keeps changes PENDING until it is back or
/// forgotten (`DELETE /v1/nodes/{node}`): "live everywhere" cannot be claimed for a
/// nameserver nobody can see. 404 for a generation no node has reached.
pub(super) async fn change_status(
    State(ctx): State<AdminContext>,
    Path(generation): Path<String>,
) -> Result<Response, ApiError> {
    let generation: u64 = generation.parse().map_err(|_| {
        bad_request(format!(
            "`{generation}` is not a generation (the whole number a write replies with, or the ETag of a read)"
        ))
    })?;
    let nodes = read_nodes(&ctx).await?;
    let local = ctx.snapshot.load().view.generation;
    let newest = nodes
        .iter()
        .filter_map(|n| n.generation)
        .chain([local])
        .max()
        .unwrap_or(local);
    if generation > newest {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no nameserver serves generation {generation} or later yet (newest: {newest})"),
        ));
    }
    let state = |n: &crate::store::Node| match n.generation {
        None => "gone",
        Some(g) if g >= generation => "synced",
        Some(_) => "lagging",
    };
    let pending: Vec<&str> = nodes
        .iter()
        .filter(|n| state(n) != "synced")
        .map(|n| n.node_id.as_str())
        .collect();
    let insync = pending.is_empty() && !nodes.is_empty();
    Ok(Json(json!({
        "generation": generation,
        "status": if insync { "INSYNC" } else { "PENDING" },
        "pending": pending,
        "nodes": nodes.iter().map(|n| json!({
            "node_id": n.node_id,
            "generation": n.generation,
            "updated": n.updated,
            "state": state(n),
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `GET /v1/pools/{pool}/convergence`: where resolvers' caches stand since the pool's last
/// change of answers (`convergence::PoolConvergence`, or null before any change).
pub(super) async fn convergence(
    State(ctx): State<AdminContext>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let snapshot = ctx.snapshot.load();
    let pool = find_pool(&snapshot.view.pools, &name)?;
    let change = ctx.convergence.pool(&pool.name);
    Ok(Json(json!({
        "pool": pool.name.to_string(),
        "tracking": ctx.convergence.is_on(),
        "now_ms": crate::clock::now_ms(),
        "change": change,
    }))
    .into_response())
}
