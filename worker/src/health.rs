//! `/healthz` (the process serves), `/readyz` (WorkItem cache synced; when holding the
//! Lease, SQL reachable too) and `/metrics`, on `$POD_IP:$HEALTH_PORT` (axum 0.8).

use crate::metrics::Metrics;
use axum::{Router, http::StatusCode, http::header, response::IntoResponse, routing::get};
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

/// Readiness inputs, updated by the run loop.
#[derive(Debug, Default)]
pub struct Health {
    /// The WorkItem watch has listed everything once.
    pub synced: AtomicBool,
    /// This replica holds the Lease.
    pub leader: AtomicBool,
    /// The last SQL ping succeeded.
    pub sql_ok: AtomicBool,
}

impl Health {
    /// Ready: synced, and a leader that can reach SQL (a standby is ready once synced).
    pub fn ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
            && (!self.leader.load(Ordering::Relaxed) || self.sql_ok.load(Ordering::Relaxed))
    }
}

/// The router.
pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let health = health.clone();
                async move {
                    if health.ready() {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                        .into_response()
                }
            }),
        )
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health, metrics))
        .with_graceful_shutdown(shutdown)
        .await
}
