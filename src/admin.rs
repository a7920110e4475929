//! The admin HTTP server (axum). Endpoints:
//!
//! - `GET /healthz`: liveness, always 200 while the process serves.
//! - `GET /readyz`: 200 once zones are loaded and every health probe has a first result, else 503.
//! - `GET /metrics`: Prometheus text exposition of every weir metric.
//!
//! It reads the published snapshot and metrics; it never touches DNS sockets or the store.
//! Concurrency is bounded so admin load cannot starve anything else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// In-flight admin requests allowed at once.
const MAX_CONCURRENT: usize = 64;

/// What the admin handlers read.
#[derive(Clone, Debug)]
pub struct AdminContext {
    pub metrics: Arc<Metrics>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Set by the state writer once every probe has reported at least once.
    pub probes_ready: Arc<AtomicBool>,
}

pub fn router(ctx: AdminContext) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_CONCURRENT))
        .with_state(ctx)
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
            snapshot.generation,
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

/// Serves `router` on `listener` until `shutdown`.
pub async fn run(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
