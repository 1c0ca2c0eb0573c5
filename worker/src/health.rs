//! `/healthz` (the process serves), `/readyz` (WorkItem cache synced; when holding the
//! Lease, SQL reachable too) and `/metrics`, on `$POD_IP:$HEALTH_PORT` (axum 0.8).

use crate::metrics::Metrics;
use axum::{Router, http::StatusCode, http::header, response::IntoResponse, routing::get};
use std::sync::{
    Arc, Mutex,
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
    /// Why the last SQL ping failed (shown by `/readyz`, so that a failing readiness probe
    /// says that SQL Server is unreachable and why).
    pub sql_error: Mutex<Option<String>>,
}

impl Health {
    /// Ready: synced, and a leader that can reach SQL (a standby is ready once synced).
    pub fn ready(&self) -> bool {
        self.not_ready_because().is_none()
    }

    /// Why this replica is not ready, if it is not.
    pub fn not_ready_because(&self) -> Option<String> {
        if !self.synced.load(Ordering::Relaxed) {
            return Some("the WorkItem cache has not synced yet".into());
        }
        if self.leader.load(Ordering::Relaxed) && !self.sql_ok.load(Ordering::Relaxed) {
            let error = self.sql_error.lock().ok().and_then(|e| e.clone());
            return Some(match error {
                Some(e) => format!("SQL Server unreachable: {e}"),
                None => "SQL Server not reached yet".into(),
            });
        }
        None
    }

    /// Records the outcome of a SQL ping; logs when reachability changes.
    pub fn record_ping(&self, outcome: Result<(), String>) {
        let ok = outcome.is_ok();
        let was_ok = self.sql_ok.swap(ok, Ordering::Relaxed);
        match &outcome {
            Err(e) if was_ok => tracing::warn!(error = %e, "SQL Server unreachable: not ready"),
            Ok(()) if !was_ok => tracing::info!("SQL Server reachable: ready"),
            _ => {}
        }
        if let Ok(mut slot) = self.sql_error.lock() {
            *slot = outcome.err();
        }
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
                    match health.not_ready_because() {
                        None => (StatusCode::OK, "ready".to_owned()),
                        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// (why, synced, leader, ping outcome, part of the expected reason)
    type Case = (
        &'static str,
        bool,
        bool,
        Option<Result<(), String>>,
        Option<&'static str>,
    );

    #[test]
    fn readiness_says_why() {
        let cases: [Case; 5] = [
            ("a standby is ready once synced", true, false, None, None),
            (
                "not before the cache is synced",
                false,
                true,
                Some(Ok(())),
                Some("WorkItem cache"),
            ),
            ("a holder that reached SQL", true, true, Some(Ok(())), None),
            (
                "a holder that has not pinged yet",
                true,
                true,
                None,
                Some("not reached yet"),
            ),
            (
                "a holder that cannot reach SQL names the error",
                true,
                true,
                Some(Err(
                    "cannot connect to SQL Server at 127.0.0.1:1433: Connection refused".into(),
                )),
                Some("SQL Server unreachable: cannot connect to SQL Server at 127.0.0.1:1433"),
            ),
        ];
        for (why, synced, leader, ping, expected) in cases {
            let h = Health::default();
            h.synced.store(synced, Ordering::Relaxed);
            h.leader.store(leader, Ordering::Relaxed);
            if let Some(outcome) = ping {
                h.record_ping(outcome);
            }
            let reason = h.not_ready_because();
            match expected {
                None => assert_eq!(reason, None, "{why}"),
                Some(part) => assert!(
                    reason.as_deref().is_some_and(|r| r.contains(part)),
                    "{why}: {reason:?}"
                ),
            }
            assert_eq!(h.ready(), expected.is_none(), "{why}");
        }
        // Recovery clears the error.
        let h = Health::default();
        h.synced.store(true, Ordering::Relaxed);
        h.leader.store(true, Ordering::Relaxed);
        h.record_ping(Err("down".into()));
        h.record_ping(Ok(()));
        assert!(h.ready());
        assert_eq!(*h.sql_error.lock().unwrap(), None);
    }
}
