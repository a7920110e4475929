//! The admin HTTP API (axum, JSON). Endpoints:
//!
//! - `GET /healthz`: liveness. `GET /readyz`: 200 once zones are loaded and every probe has a
//!   first result, 503 with the reason while the state store cannot take a change (disk full). `GET /metrics`: Prometheus text. These three need no token.
//! - `GET /v1/zones`, `GET /v1/pools`, `GET /v1/pools/{pool}`: what is served, config and live
//!   state side by side (read scope).
//! - `PUT /v1/pools/{pool}/groups/{group}/weight`, `PUT /v1/pools/{pool}/endpoints/{address}/weight`,
//!   `PUT /v1/pools/{pool}/endpoints/{address}/override`, `POST /v1/pools/{pool}/groups/{group}/endpoints`,
//!   `DELETE /v1/pools/{pool}/endpoints/{address}`, `POST /v1/reload` (write scope).
//! - `POST /v1/pools/{pool}/rollouts` (an inline plan, or none for `[pool.rollout]`),
//!   `GET /v1/pools/{pool}/rollout`, `POST /v1/pools/{pool}/rollout/{promote|finalize|pause|resume|abort|undo}`
//!   (`promote` takes `{"full": true}` to jump to 100%): canary rollouts (see `rollout`).
//! - `GET /v1/pools/{pool}/preview?weights=blue:50,green:50&down=ADDR,..&family=ipv4`: the exact
//!   probability of each endpoint and answer set under those weights and that health, and for
//!   sticky pools the share of client subnets that would move. Changes nothing. Computed on a
//!   blocking thread, never on the runtime; at most `MAX_PREVIEWS` at once (beyond: 429 with
//!   `Retry-After`); 422 when the enumeration would exceed its bound (checked before any work).
//! - `GET /v1/routes`, `GET /v1/routes/{name}`: routed names: each rule (criteria, the pool it
//!   selects, queries matched) and each pool (how it answers now, its fallback, up endpoints),
//!   and the databases rules read. `GET /v1/routes/{name}/preview?client=ADDR&ecs=PREFIX` (plus
//!   the pool preview's `weights`, `down`, `family`): the rule a client matches, its pool, the
//!   ECS scope of the answer, and that pool's preview. A pool inside a route is
//!   `label@name` wherever a pool is named (`/v1/pools/eu@www.example.com./...`).
//! - `GET /v1/pools/{pool}/convergence`: since the pool's last change of answers, the share of
//!   its query volume (from the window before the change) whose resolvers have queried again,
//!   the largest still silent, and when 99% was reached (see `convergence`; read scope).
//!   `change` is null until the pool's answers change; `tracking` false with
//!   `[dns] track_convergence = false`.
//! - `GET /v1/zones/{zone}/records` (static data as served), `GET|DELETE /v1/zones/{zone}/updates`
//!   (the UPDATE layer; discard it), `GET /v1/zones/{zone}/dnssec` (keys, DS, signatures, the
//!   latest key rollover), `POST /v1/zones/{zone}/dnssec/rollover` (`{"key": TAG}` optional:
//!   start a zone-signing key's pre-publish rollover; write scope).
//! - `GET /v1/audit?pool=&limit=`: the audit log, newest first; `?since=G`: the change feed,
//!   every record after generation G, oldest first (read scope). A page reads only the records
//!   it returns; pages are built one at a time (`MAX_AUDIT_READS`, others queue).
//! - `GET /v1/changes/{generation}`: INSYNC once every nameserver sharing the state serves that
//!   generation, else PENDING with the lagging or gone nodes; `GET /v1/nodes`: each node and the
//!   generation it serves (read scope); `DELETE /v1/nodes/{node}`: forget a decommissioned node
//!   (write scope). With the local sled store there is one node, this one.
//!
//! Writes are validated here for shape (400), then sent to the state writer as a
//! `StateEvent::Change`; the reply comes after the change is stored (flushed) and published.
//! Refusals map to 404 (unknown pool/group/endpoint), 409 (conflict, zero total weight),
//! 412 (`If-Match` generation mismatch), 503 (the store is unreachable or failed: nothing
//! changed), 507 (no space left on the state store: nothing changed). Bodies over 64 KiB get
//! 413, a body that takes over 10 s 408, a request that takes over 60 s 503; a `reason` over
//! `MAX_REASON` bytes gets 400; connection caps and the header, handshake and write deadlines
//! are in `serve`. The API never touches DNS sockets and reaches the store only through
//! `store::StoreView` (audit log, node status); forgetting a node goes through the writer too.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwap;
use axum::extract::rejection::{ExtensionRejection, JsonRejection};
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};

use crate::config::{MAX_WEIGHT, Scope, Token};
use crate::convergence::Convergence;
use crate::health::LastResults;
use crate::metrics::Metrics;
use crate::model::{Override, PoolId};
use crate::snapshot::Snapshot;
use crate::state::change::{Change, ChangeError, ChangeRequest};
use crate::state::{StateEvent, StoreHealth};
use crate::store::StoreView;

mod read;
mod serve;

use read::{audit, metrics, pool, pools, readyz, with_generation, zones};
use serve::Peer;
pub(crate) use serve::{MAX_CONNECTIONS, Placement, run, spawn, tls_acceptor};

/// In-flight admin requests allowed at once; the admin API runs on its own tasks, never on
/// the UDP workers, and this bound keeps a flood of admin requests from eating the runtime.
const MAX_CONCURRENT: usize = 64;
/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// How long a request body may take to arrive once the head is in (then 408).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a request may take from its head to its response (then 503). Longer than the
/// slowest legitimate request (a write that waits for a reload on a large zone set).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Previews computed at once (each may take a core for a while); more get 429.
pub(crate) const MAX_PREVIEWS: usize = 2;
/// Audit pages read, encoded and sent at once; more wait their turn (a largest page takes
/// ~50 ms to build). With `AUDIT_MAX` records of ~1 KB each a page is ~15 MB of records while
/// it is built and ~8 MB of JSON while it is sent, so this bounds the memory audit reads take
/// (64 concurrent largest pages: bench/RESULTS.md).
const MAX_AUDIT_READS: usize = 1;
/// Default and largest `limit` for the audit log.
const AUDIT_DEFAULT: usize = 100;
const AUDIT_MAX: usize = 10_000;

/// What the admin handlers use.
#[derive(Clone, Debug)]
pub(crate) struct AdminContext {
    pub metrics: Arc<Metrics>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Set by the state writer once every probe has reported at least once.
    pub probes_ready: Arc<AtomicBool>,
    /// Whether the state store takes changes (`/readyz` is 503 while it does not).
    pub store_health: StoreHealth,
    pub events: mpsc::Sender<StateEvent>,
    pub audit: StoreView,
    pub probes: LastResults,
    /// Empty: no token auth (the API then listens on loopback only; config enforces it).
    pub tokens: Arc<Vec<Token>>,
    /// Per-pool cache convergence since each pool's last change.
    pub convergence: Convergence,
    /// Permits for previews in flight (`MAX_PREVIEWS`).
    pub previews: Arc<tokio::sync::Semaphore>,
    /// Permits for audit pages being read (`MAX_AUDIT_READS`).
    pub audit_reads: Arc<tokio::sync::Semaphore>,
}

impl AdminContext {
    /// Fresh permits for the expensive reads (previews, audit pages).
    pub(crate) fn read_limits() -> (Arc<tokio::sync::Semaphore>, Arc<tokio::sync::Semaphore>) {
        (
            Arc::new(tokio::sync::Semaphore::new(MAX_PREVIEWS)),
            Arc::new(tokio::sync::Semaphore::new(MAX_AUDIT_READS)),
        )
    }
}

/// Who is calling, attached by the auth middleware.
#[derive(Clone, Debug)]
struct Caller {
    name: String,
    scope: Scope,
    source: String,
}

/// An error response: status plus `{"error": message}`.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        let status = match e {
            ChangeError::NotFound(_) => StatusCode::NOT_FOUND,
            ChangeError::Invalid(_) => StatusCode::BAD_REQUEST,
            ChangeError::Conflict(_) => StatusCode::CONFLICT,
            ChangeError::Stale { .. } => StatusCode::PRECONDITION_FAILED,
            ChangeError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
            ChangeError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ChangeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

pub(crate) fn router(ctx: AdminContext) -> Router {
    let v1 = Router::new()
        .route("/v1/zones", get(zones))
        .route("/v1/zones/{zone}/records", get(read::zone_records))
        .route(
            "/v1/zones/{zone}/updates",
            get(read::zone_updates).delete(discard_updates),
        )
        .route("/v1/zones/{zone}/dnssec", get(read::zone_dnssec))
        .route("/v1/zones/{zone}/dnssec/rollover", post(dnssec_rollover))
        .route("/v1/pools", get(pools))
        .route("/v1/pools/{pool}", get(pool))
        .route("/v1/pools/{pool}/groups/{group}/weight", put(group_weight))
        .route(
            "/v1/pools/{pool}/endpoints/{address}/weight",
            put(endpoint_weight),
        )
        .route(
            "/v1/pools/{pool}/endpoints/{address}/override",
            put(endpoint_override),
        )
        .route(
            "/v1/pools/{pool}/groups/{group}/endpoints",
            post(add_endpoint),
        )
        .route(
            "/v1/pools/{pool}/endpoints/{address}",
            delete(remove_endpoint),
        )
        .route("/v1/pools/{pool}/rollouts", post(rollout_start))
        .route("/v1/pools/{pool}/rollout", get(read::rollout))
        .route("/v1/pools/{pool}/preview", get(read::preview))
        .route("/v1/pools/{pool}/convergence", get(read::convergence))
        .route("/v1/pools/{pool}/rollout/{action}", post(rollout_command))
        .route("/v1/routes", get(read::routes))
        .route("/v1/routes/{name}", get(read::route))
        .route("/v1/routes/{name}/preview", get(read::route_preview))
        .route("/v1/reload", post(reload))
        .route("/v1/audit", get(audit))
        .route("/v1/changes/{generation}", get(read::change_status))
        .route("/v1/nodes", get(read::nodes))
        .route("/v1/nodes/{node}", delete(forget_node))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), authenticate));
    // The concurrency limit sits inside the deadlines, so a request whose body trickles in
    // waits outside it; `/healthz` stays outside it, so liveness never queues behind work.
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(v1)
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_CONCURRENT))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(middleware::from_fn(deadlines))
        .layer(middleware::from_fn_with_state(ctx.clone(), count))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ctx)
}

/// `DELETE /v1/nodes/{node}`: a nameserver that is gone for good (decommissioned) stops
/// holding changes PENDING. 404 when no such member is known.
async fn forget_node(
    State(ctx): State<AdminContext>,
    Path(node): Path<String>,
) -> Result<Response, ApiError> {
    let node_id = node.clone();
    let found = ask_writer(&ctx, |reply| StateEvent::Forget { node_id, reply })
        .await?
        .map_err(read::store_error)?;
    if !found {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no nameserver `{node}` is known"),
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The admin API while weir waits for its shared state store at start-up (nothing safe to
/// serve yet): `/healthz` says the process is alive, everything else, `/readyz` included, is
/// 503 with the reason.
pub(crate) fn waiting_router(why: Arc<str>) -> Router {
    let unavailable = move || {
        let why = why.clone();
        async move {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("waiting for the shared state store: {why}\n"),
            )
        }
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(unavailable)
}

/// Reads the whole body within `BODY_TIMEOUT` (408 past it; 413 past `MAX_BODY`), then
/// runs the request within `REQUEST_TIMEOUT` (503 past it). A write that times out may still
/// be applied by the writer: the message says where to look.
async fn deadlines(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await
    {
        Ok(Ok(bytes)) => bytes,
        // Over the limit (or the client went away, when nobody reads the answer).
        Ok(Err(_)) => {
            return ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request bodies are limited to {MAX_BODY} bytes"),
            )
            .into_response();
        }
        Err(_) => {
            return ApiError(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
            .into_response();
        }
    };
    let write = parts.method != axum::http::Method::GET;
    let request = Request::from_parts(parts, axum::body::Body::from(bytes));
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no answer within {} s{}",
                REQUEST_TIMEOUT.as_secs(),
                if write {
                    "; the change may still be applied: see GET /v1/audit"
                } else {
                    ""
                }
            ),
        )
        .into_response(),
    }
}

/// Counts every request by route pattern (never the raw path: bounded labels) and status.
async fn count(State(ctx): State<AdminContext>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    ctx.metrics
        .admin_request(&route, response.status().as_u16());
    response
}

/// Bearer-token auth for /v1: 401 without a valid token, 403 for a read token on a write.
/// Secrets are compared in constant time.
async fn authenticate(
    State(ctx): State<AdminContext>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    mut request: Request,
    next: Next,
) -> Response {
    let source = peer.ip().to_string();
    let caller = if ctx.tokens.is_empty() {
        Caller {
            name: "local".into(),
            scope: Scope::Write,
            source,
        }
    } else {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .unwrap_or("");
        // Check every token so the time taken does not say which one nearly matched.
        let found = ctx.tokens.iter().fold(None, |found, t| {
            let equal: bool = t.secret.as_bytes().ct_eq(presented.as_bytes()).into();
            if equal { Some(t) } else { found }
        });
        match found {
            Some(t) => Caller {
                name: t.name.clone(),
                scope: t.scope,
                source,
            },
            None => {
                let mut response = ApiError(
                    StatusCode::UNAUTHORIZED,
                    "missing or invalid bearer token".into(),
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return response;
            }
        }
    };
    if request.method() != axum::http::Method::GET && caller.scope != Scope::Write {
        return ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "token `{}` has read scope; this request needs write",
                caller.name
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The token of `Bearer <token>` credentials. The scheme is case-insensitive (RFC 7235 2.1:
/// "It uses a case-insensitive token as a means to identify the authentication scheme").
fn bearer(credentials: &str) -> Option<&str> {
    let (scheme, token) = credentials.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// What every write handler takes besides its path and body: the context, who is calling
/// (attached by `authenticate`) and the raw `If-Match`. `reason` and `If-Match` are checked
/// only when the change is sent, after the handler has checked its body and path: a request
/// with several problems is refused for the first of body, path, reason, If-Match.
struct Write {
    ctx: AdminContext,
    caller: Caller,
    if_match: Option<HeaderValue>,
}

impl FromRequestParts<AdminContext> for Write {
    type Rejection = ExtensionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &AdminContext,
    ) -> Result<Self, Self::Rejection> {
        let axum::Extension(caller) = axum::Extension::from_request_parts(parts, ctx).await?;
        Ok(Write {
            ctx: ctx.clone(),
            caller,
            if_match: parts.headers.get(header::IF_MATCH).cloned(),
        })
    }
}

impl Write {
    /// Sends a change to the writer and answers with the new generation once it is stored.
    async fn change(self, change: Change, meta: Meta) -> Result<Response, ApiError> {
        check_reason(&meta.reason)?;
        let request = ChangeRequest {
            change,
            actor: self.caller.name,
            source: self.caller.source,
            reason: meta.reason,
            if_match: if_match(self.if_match.as_ref())?,
            force: meta.force,
        };
        let generation =
            ask_writer(&self.ctx, |reply| StateEvent::Change { request, reply }).await??;
        Ok(generation_response(generation))
    }

    /// Sends a rollout command and answers with the new generation once it is stored.
    async fn rollout(
        self,
        pool: PoolId,
        command: crate::rollout::Command,
        reason: String,
    ) -> Result<Response, ApiError> {
        check_reason(&reason)?;
        let generation = ask_writer(&self.ctx, |reply| StateEvent::Rollout {
            pool,
            command,
            actor: self.caller.name,
            source: self.caller.source,
            reason,
            reply: Some(reply),
        })
        .await??;
        Ok(generation_response(generation))
    }
}

/// A write's fields: its JSON body, or for DELETE (which has no body) its query string.
/// Fields that do not parse get 400, a body over the limit 413.
struct Fields<T>(T);

impl<T: DeserializeOwned> FromRequest<AdminContext> for Fields<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, ctx: &AdminContext) -> Result<Self, ApiError> {
        if request.method() == axum::http::Method::DELETE {
            let Query(fields) =
                Query::try_from_uri(request.uri()).map_err(|e| bad_request(e.body_text()))?;
            return Ok(Fields(fields));
        }
        match Json::from_request(request, ctx).await {
            Ok(Json(fields)) => Ok(Fields(fields)),
            Err(e @ JsonRejection::BytesRejection(_)) => {
                Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, e.body_text()))
            }
            Err(e) => Err(bad_request(e.body_text())),
        }
    }
}

/// Fields every mutation accepts: in the JSON body, or as query parameters for DELETE.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    force: bool,
}

/// Reads `If-Match: <generation>` (quoted or not).
fn if_match(value: Option<&HeaderValue>) -> Result<Option<u64>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim().trim_matches('"');
    text.parse().map(Some).map_err(|_| {
        bad_request(format!(
            "If-Match must be a generation number, not `{text}`"
        ))
    })
}

fn weight(w: u64) -> Result<u32, ApiError> {
    if w > MAX_WEIGHT as u64 {
        return Err(bad_request(format!(
            "weight {w} is out of range 0..={MAX_WEIGHT}"
        )));
    }
    Ok(w as u32)
}

fn pool_name(name: &str) -> Result<PoolId, ApiError> {
    PoolId::parse(name).map_err(|e| bad_request(format!("pool name `{name}`: {e}")))
}

fn address(text: &str) -> Result<IpAddr, ApiError> {
    text.parse()
        .map_err(|_| bad_request(format!("`{text}` is not an IP address")))
}

/// The longest `reason` a change may carry, in bytes. Audit records stay small: sled stores
/// a node over ~128 KiB as a file of its own, the path that wedged the writer on a full disk
/// (issue 12), and a reason is a sentence, not a document.
pub(crate) const MAX_REASON: usize = 1024;

fn check_reason(reason: &str) -> Result<(), ApiError> {
    if reason.len() > MAX_REASON {
        return Err(bad_request(format!(
            "`reason` is {} bytes; at most {MAX_REASON} are accepted",
            reason.len()
        )));
    }
    Ok(())
}

/// Sends the event `make` builds to the state writer and returns its reply, which comes once
/// the change is stored and published (or refused).
async fn ask_writer<T>(
    ctx: &AdminContext,
    make: impl FnOnce(oneshot::Sender<T>) -> StateEvent,
) -> Result<T, ApiError> {
    fn unavailable<E>(_: E) -> ApiError {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the state writer is not running".into(),
        )
    }
    let (reply, answer) = oneshot::channel();
    ctx.events.send(make(reply)).await.map_err(unavailable)?;
    answer.await.map_err(unavailable)
}

/// `{"generation": N}` with the generation as the ETag: a write's answer.
fn generation_response(generation: u64) -> Response {
    with_generation(generation, json!({ "generation": generation }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: u64,
    #[serde(flatten)]
    meta: Meta,
}

async fn group_weight(
    write: Write,
    Path((pool, group)): Path<(String, String)>,
    Fields(b): Fields<WeightBody>,
) -> Result<Response, ApiError> {
    let change = Change::GroupWeight {
        pool: pool_name(&pool)?,
        group,
        weight: weight(b.weight)?,
    };
    write.change(change, b.meta).await
}

/// `{"weight": N}` sets the weight; `{"reset": true}` goes back to the configured one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointWeightBody {
    weight: Option<u64>,
    #[serde(default)]
    reset: bool,
    #[serde(flatten)]
    meta: Meta,
}

async fn endpoint_weight(
    write: Write,
    Path((pool, addr)): Path<(String, String)>,
    Fields(b): Fields<EndpointWeightBody>,
) -> Result<Response, ApiError> {
    let weight = match (b.weight, b.reset) {
        (Some(w), false) => Some(weight(w)?),
        (None, true) => None,
        _ => {
            return Err(bad_request(
                "send either {\"weight\": N} or {\"reset\": true}",
            ));
        }
    };
    let change = Change::EndpointWeight {
        pool: pool_name(&pool)?,
        address: address(&addr)?,
        weight,
    };
    write.change(change, b.meta).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    health: Override,
    #[serde(flatten)]
    meta: Meta,
}

async fn endpoint_override(
    write: Write,
    Path((pool, addr)): Path<(String, String)>,
    Fields(b): Fields<OverrideBody>,
) -> Result<Response, ApiError> {
    let change = Change::Override {
        pool: pool_name(&pool)?,
        address: address(&addr)?,
        health: b.health,
    };
    write.change(change, b.meta).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    address: String,
    #[serde(default = "one")]
    weight: u64,
    #[serde(flatten)]
    meta: Meta,
}

fn one() -> u64 {
    1
}

async fn add_endpoint(
    write: Write,
    Path((pool, group)): Path<(String, String)>,
    Fields(b): Fields<AddBody>,
) -> Result<Response, ApiError> {
    let change = Change::AddEndpoint {
        pool: pool_name(&pool)?,
        group,
        address: address(&b.address)?,
        weight: weight(b.weight)?,
    };
    write.change(change, b.meta).await
}

/// DELETE takes its reason and force as query parameters.
async fn remove_endpoint(
    write: Write,
    Path((pool, addr)): Path<(String, String)>,
    Fields(meta): Fields<Meta>,
) -> Result<Response, ApiError> {
    let change = Change::RemoveEndpoint {
        pool: pool_name(&pool)?,
        address: address(&addr)?,
    };
    write.change(change, meta).await
}

/// `DELETE /v1/zones/{zone}/updates`: drops the zone's UPDATE layer (audited; the serial moves
/// on, so secondaries fetch the file's data again). Reason as a query parameter.
async fn discard_updates(
    write: Write,
    Path(zone): Path<String>,
    Fields(meta): Fields<Meta>,
) -> Result<Response, ApiError> {
    let zone = crate::model::Name::parse(&zone)
        .map_err(|e| bad_request(format!("zone name `{zone}`: {e}")))?;
    write.change(Change::DiscardUpdates { zone }, meta).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloverBody {
    /// The key tag to roll to; absent: the zone's one standby zone-signing key.
    key: Option<u16>,
    #[serde(flatten)]
    meta: Meta,
}

/// `POST /v1/zones/{zone}/dnssec/rollover`: starts a zone-signing key's pre-publish rollover
/// (`{"key": TAG}` optional, `reason`); audited, stored, every phase timed at the start.
async fn dnssec_rollover(
    write: Write,
    Path(zone): Path<String>,
    Fields(b): Fields<RolloverBody>,
) -> Result<Response, ApiError> {
    let zone = crate::model::Name::parse(&zone)
        .map_err(|e| bad_request(format!("zone name `{zone}`: {e}")))?;
    write
        .change(Change::DnssecRollover { zone, key: b.key }, b.meta)
        .await
}

/// `POST /v1/pools/{pool}/rollouts`: an inline plan (`kind`, `from`, `to`, `steps`, `slack`,
/// `ttl_ramp`, `rollout_ttl`, `metric_gate`), or a body with nothing but an optional `reason`
/// for the pool's `[pool.rollout]`. A partial plan is refused, never silently replaced.
async fn rollout_start(
    write: Write,
    Path(pool): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let name = pool_name(&pool)?;
    let mut fields = if raw.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice::<Value>(&raw) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(bad_request("the body must be a JSON object")),
            Err(e) => return Err(bad_request(format!("bad rollout body: {e}"))),
        }
    };
    let reason = match fields.remove("reason") {
        None => String::new(),
        Some(Value::String(r)) => r,
        Some(_) => return Err(bad_request("`reason` must be a string")),
    };
    let plan = if fields.is_empty() {
        configured_plan(&write.ctx, &name)?
    } else {
        inline_plan(fields)?
    };
    let command = crate::rollout::Command::Start(Box::new(plan));
    write.rollout(name, command, reason).await
}

/// The pool's `[pool.rollout]`: 404 for an unknown pool, 400 for one without a plan.
fn configured_plan(
    ctx: &AdminContext,
    name: &PoolId,
) -> Result<crate::model::RolloutPlan, ApiError> {
    let snapshot = ctx.snapshot.load();
    let configured = snapshot
        .view
        .config_pools
        .iter()
        .find(|p| p.name == *name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no pool `{name}`")))?;
    configured
        .rollout
        .clone()
        .ok_or_else(|| bad_request(format!("pool `{name}` has no [pool.rollout]; send a plan")))
}

/// A plan sent in the request, checked as `[pool.rollout]` is (every problem in one 400).
fn inline_plan(
    fields: serde_json::Map<String, Value>,
) -> Result<crate::model::RolloutPlan, ApiError> {
    let raw: crate::config::RawPlan = serde_json::from_value(Value::Object(fields))
        .map_err(|e| bad_request(format!("bad rollout plan: {e}")))?;
    if raw.preview_name.is_some() {
        return Err(bad_request(
            "preview_name can only be set in [pool.rollout]",
        ));
    }
    crate::config::plan(&raw).map_err(|problems| {
        let list: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
        bad_request(list.join("; "))
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    #[serde(default)]
    full: bool,
    #[serde(default)]
    reason: String,
}

async fn rollout_command(
    write: Write,
    Path((pool, action)): Path<(String, String)>,
    raw: axum::body::Bytes,
) -> Result<Response, ApiError> {
    use crate::rollout::Command;
    let name = pool_name(&pool)?;
    let body: CommandBody = if raw.iter().all(u8::is_ascii_whitespace) {
        CommandBody::default()
    } else {
        serde_json::from_slice(&raw).map_err(|e| bad_request(format!("bad body: {e}")))?
    };
    let command = match action.as_str() {
        // Blue-green's last step: promoting at the rollback window finalizes.
        "promote" | "finalize" => Command::Promote { full: body.full },
        "pause" => Command::Pause { reason: None },
        "resume" => Command::Resume,
        "abort" => Command::Abort {
            reason: body.reason.clone(),
            cause: crate::model::AbortCause::Operator,
        },
        "undo" => Command::Undo,
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "no rollout action `{other}` (promote, finalize, pause, resume, abort, undo)"
                ),
            ));
        }
    };
    write.rollout(name, command, body.reason).await
}

async fn reload(State(ctx): State<AdminContext>) -> Result<Response, ApiError> {
    match ask_writer(&ctx, |reply| StateEvent::Reload { reply: Some(reply) }).await? {
        Ok(done) => Ok(with_generation(
            done.generation,
            json!({ "generation": done.generation, "restart_required": done.restart_required }),
        )),
        Err(problems) => {
            let list: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "error": "reload failed; the previous config keeps serving", "problems": list })),
            )
                .into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_deadline_gets_503() {
        let app = Router::new()
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(REQUEST_TIMEOUT * 2).await;
                    "late"
                }),
            )
            .layer(middleware::from_fn(deadlines));
        let started = tokio::time::Instant::now();
        let response = app
            .oneshot(
                Request::post("/slow")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(started.elapsed(), REQUEST_TIMEOUT);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("may still be applied"), "{text}");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for (credentials, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc", Some("abc")),
            ("Basic abc", None),
            ("Bearerabc", None),
            ("abc", None),
        ] {
            assert_eq!(bearer(credentials), token, "{credentials}");
        }
    }
}
