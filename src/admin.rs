//! The admin HTTP API (axum, JSON). Endpoints:
//!
//! - `GET /healthz`: liveness. `GET /readyz`: 200 once zones are loaded and every probe has a
//!   first result. `GET /metrics`: Prometheus text. These three need no token.
//! - `GET /v1/zones`, `GET /v1/pools`, `GET /v1/pools/{pool}`: what is served, config and live
//!   state side by side (read scope).
//! - `PUT /v1/pools/{pool}/groups/{group}/weight`, `PUT /v1/pools/{pool}/endpoints/{address}/weight`,
//!   `PUT /v1/pools/{pool}/endpoints/{address}/override`, `POST /v1/pools/{pool}/groups/{group}/endpoints`,
//!   `DELETE /v1/pools/{pool}/endpoints/{address}`, `POST /v1/reload` (write scope).
//! - `GET /v1/audit?pool=&limit=`: the audit log, newest first (read scope).
//!
//! Writes are validated here for shape (400), then sent to the state writer as a
//! `StateEvent::Change`; the reply comes after the change is stored (flushed) and published.
//! Refusals map to 404 (unknown pool/group/endpoint), 409 (conflict, zero total weight),
//! 412 (`If-Match` generation mismatch). Bodies over 64 KiB get 413. The API never touches DNS
//! sockets and reads the audit log only through `state::AuditLog`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{MAX_WEIGHT, Scope, Token};
use crate::health::LastResults;
use crate::metrics::Metrics;
use crate::model::{Name, Override, Pool};
use crate::snapshot::Snapshot;
use crate::state::change::{Change, ChangeError, ChangeRequest};
use crate::state::{AuditLog, StateEvent};

/// In-flight admin requests allowed at once; the admin API runs on its own tasks, never on
/// the UDP workers, and this bound keeps a flood of admin requests from eating the runtime.
const MAX_CONCURRENT: usize = 64;
/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Default and largest `limit` for the audit log.
const AUDIT_DEFAULT: usize = 100;
const AUDIT_MAX: usize = 10_000;

/// What the admin handlers use.
#[derive(Clone, Debug)]
pub struct AdminContext {
    pub metrics: Arc<Metrics>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Set by the state writer once every probe has reported at least once.
    pub probes_ready: Arc<AtomicBool>,
    pub events: mpsc::Sender<StateEvent>,
    pub audit: AuditLog,
    pub probes: LastResults,
    /// Empty: no token auth (the API then listens on loopback only; config enforces it).
    pub tokens: Arc<Vec<Token>>,
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
            ChangeError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

pub fn router(ctx: AdminContext) -> Router {
    let v1 = Router::new()
        .route("/v1/zones", get(zones))
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
        .route("/v1/reload", post(reload))
        .route("/v1/audit", get(audit))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), authenticate));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(v1)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_CONCURRENT))
        .with_state(ctx)
}

/// The client's address, for the audit log (works for plain and TLS listeners).
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Loads a PEM certificate chain and private key into a TLS acceptor.
pub fn tls_acceptor(files: &crate::config::TlsFiles) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: {e}", files.key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("{}: {e}", files.key.display()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// TLS handshakes allowed at once, and how long one may take.
const MAX_HANDSHAKES: usize = 64;
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A listener that hands axum finished TLS connections. Handshakes run in their own bounded
/// tasks, so a slow or silent client never holds up the others.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(
        tcp: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (tx, acceptor) = (tx.clone(), acceptor.clone());
                if tx.is_closed() {
                    return;
                }
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task is gone: nothing more will arrive.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown`.
pub async fn run(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let stop = async move { shutdown.cancelled().await };
    match tls {
        None => {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<Peer>(),
            )
            .with_graceful_shutdown(stop)
            .await
        }
        Some(acceptor) => {
            axum::serve(
                TlsListener::new(listener, acceptor)?,
                router.into_make_service_with_connect_info::<Peer>(),
            )
            .with_graceful_shutdown(stop)
            .await
        }
    }
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
            .and_then(|v| v.strip_prefix("Bearer "))
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

async fn readyz(State(ctx): State<AdminContext>) -> impl IntoResponse {
    let snapshot = ctx.snapshot.load();
    if !ctx.probes_ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first health probe results\n".to_string(),
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

async fn metrics(State(ctx): State<AdminContext>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.metrics.render(),
    )
}

/// A JSON body with the generation as ETag, so a client can send it back as If-Match.
fn with_generation(generation: u64, body: Value) -> Response {
    let mut response = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{generation}\"")) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

async fn zones(State(ctx): State<AdminContext>) -> Response {
    let snapshot = ctx.snapshot.load();
    let view = &snapshot.view;
    let zones: Vec<String> = view.zones.iter().map(ToString::to_string).collect();
    with_generation(
        view.generation,
        json!({ "generation": view.generation, "zones": zones }),
    )
}

async fn pools(State(ctx): State<AdminContext>) -> Response {
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
    let parsed = Name::parse(name).map_err(|e| bad_request(format!("pool name `{name}`: {e}")))?;
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

async fn pool(
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
                        let health = view.health.get(k).copied().unwrap_or(k.check.initial);
                        json!({
                            "target": k.target.to_string(),
                            "kind": format!("{:?}", k.check.kind).to_lowercase(),
                            "health": health,
                            "last": last.get(k),
                        })
                    });
                    let probed_up = e.probe.as_ref().is_none_or(|k| {
                        view.health.get(k).copied().unwrap_or(k.check.initial)
                            == crate::model::Health::Up
                    });
                    let up = match e.force {
                        Override::Up => true,
                        Override::Down => false,
                        Override::Auto => probed_up,
                    };
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
    let removed: Vec<&String> = view
        .overlay
        .removed
        .get(&served.name.to_string())
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

/// Fields every mutation accepts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    force: bool,
}

/// Reads `If-Match: <generation>` (quoted or not).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim().trim_matches('"');
    text.parse().map(Some).map_err(|_| {
        bad_request(format!(
            "If-Match must be a generation number, not `{text}`"
        ))
    })
}

fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload.map(|Json(t)| t).map_err(|e| match e {
        JsonRejection::BytesRejection(_) => ApiError(StatusCode::PAYLOAD_TOO_LARGE, e.body_text()),
        _ => bad_request(e.body_text()),
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

fn pool_name(name: &str) -> Result<Name, ApiError> {
    Name::parse(name).map_err(|e| bad_request(format!("pool name `{name}`: {e}")))
}

fn address(text: &str) -> Result<IpAddr, ApiError> {
    text.parse()
        .map_err(|_| bad_request(format!("`{text}` is not an IP address")))
}

/// Sends a change to the writer and answers with the new generation once it is stored.
async fn submit(
    ctx: &AdminContext,
    caller: Caller,
    headers: &HeaderMap,
    change: Change,
    meta: Meta,
) -> Result<Response, ApiError> {
    let (reply, answer) = oneshot::channel();
    let request = ChangeRequest {
        change,
        actor: caller.name,
        source: caller.source,
        reason: meta.reason,
        if_match: if_match(headers)?,
        force: meta.force,
    };
    let unavailable = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the state writer is not running".into(),
        )
    };
    ctx.events
        .send(StateEvent::Change { request, reply })
        .await
        .map_err(|_| unavailable())?;
    let generation = answer.await.map_err(|_| unavailable())??;
    Ok(with_generation(
        generation,
        json!({ "generation": generation }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: u64,
    #[serde(flatten)]
    meta: Meta,
}

async fn group_weight(
    State(ctx): State<AdminContext>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((pool, group)): Path<(String, String)>,
    headers: HeaderMap,
    payload: Result<Json<WeightBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(payload)?;
    let change = Change::GroupWeight {
        pool: pool_name(&pool)?,
        group,
        weight: weight(b.weight)?,
    };
    submit(&ctx, caller, &headers, change, b.meta).await
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
    State(ctx): State<AdminContext>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((pool, addr)): Path<(String, String)>,
    headers: HeaderMap,
    payload: Result<Json<EndpointWeightBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(payload)?;
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
    submit(&ctx, caller, &headers, change, b.meta).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    health: Override,
    #[serde(flatten)]
    meta: Meta,
}

async fn endpoint_override(
    State(ctx): State<AdminContext>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((pool, addr)): Path<(String, String)>,
    headers: HeaderMap,
    payload: Result<Json<OverrideBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(payload)?;
    let change = Change::Override {
        pool: pool_name(&pool)?,
        address: address(&addr)?,
        health: b.health,
    };
    submit(&ctx, caller, &headers, change, b.meta).await
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
    State(ctx): State<AdminContext>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((pool, group)): Path<(String, String)>,
    headers: HeaderMap,
    payload: Result<Json<AddBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(payload)?;
    let change = Change::AddEndpoint {
        pool: pool_name(&pool)?,
        group,
        address: address(&b.address)?,
        weight: weight(b.weight)?,
    };
    submit(&ctx, caller, &headers, change, b.meta).await
}

/// DELETE takes its reason and force as query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    force: bool,
}

async fn remove_endpoint(
    State(ctx): State<AdminContext>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((pool, addr)): Path<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| bad_request(e.body_text()))?;
    let change = Change::RemoveEndpoint {
        pool: pool_name(&pool)?,
        address: address(&addr)?,
    };
    let meta = Meta {
        reason: q.reason,
        force: q.force,
    };
    submit(&ctx, caller, &headers, change, meta).await
}

async fn reload(State(ctx): State<AdminContext>) -> Result<Response, ApiError> {
    let (reply, answer) = oneshot::channel();
    let unavailable = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the state writer is not running".into(),
        )
    };
    ctx.events
        .send(StateEvent::Reload { reply: Some(reply) })
        .await
        .map_err(|_| unavailable())?;
    match answer.await.map_err(|_| unavailable())? {
        Ok(generation) => Ok(with_generation(
            generation,
            json!({ "generation": generation }),
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    pool: Option<String>,
    limit: Option<usize>,
}

async fn audit(
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
    let records = tokio::task::spawn_blocking(move || log.read(pool.as_deref(), limit))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({ "records": records })).into_response())
}
