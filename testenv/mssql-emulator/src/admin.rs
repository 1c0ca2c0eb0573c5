//! Admin HTTP interface on loopback (documented in `docs/emulator.md`):
//!
//! | method and path | what |
//! |---|---|
//! | `GET /healthz` | `ok` |
//! | `GET /counters` | [`crate::Counters`] as JSON |
//! | `GET /catalog` | the catalog as JSON |
//! | `GET /sessions` | live sessions |
//! | `GET /faults` | [`crate::FaultState`] |
//! | `POST /faults` | body [`crate::FaultRequest`]; absent fields are unchanged |
//! | `POST /reset` | fresh catalog, zero counters, no faults, sessions closed |
//! | `GET /errors` | the message table |
//! | `GET /cert` | the server certificate (PEM), 404 with `--tls none` |

use crate::server::{FaultRequest, Shared};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

fn json(v: &impl serde::Serialize) -> Response {
    match serde_json::to_string_pretty(v) {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The admin router.
pub fn router(shared: Arc<Shared>) -> Router {
    let s1 = shared.clone();
    let s2 = shared.clone();
    let s3 = shared.clone();
    let s4 = shared.clone();
    let s5 = shared.clone();
    let s6 = shared.clone();
    let s7 = shared.clone();
    Router::new()
        .route(
            "/cert",
            get(move || async move {
                match &s7.cert_pem {
                    Some(p) => {
                        ([(header::CONTENT_TYPE, "application/x-pem-file")], p.clone()).into_response()
                    }
                    None => (StatusCode::NOT_FOUND, "TLS is off (--tls none)").into_response(),
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/counters", get(move || async move { json(&s1.counters()) }))
        .route("/catalog", get(move || async move { json(&s2.catalog_json()) }))
        .route("/sessions", get(move || async move { json(&s3.sessions_json()) }))
        .route("/errors", get(|| async { json(&crate::errors::MESSAGES) }))
        .route(
            "/faults",
            get(move || async move { json(&s4.faults()) }).post(move |body: String| async move {
                match serde_json::from_str::<FaultRequest>(&body) {
                    Ok(req) => {
                        s5.set_faults(req);
                        json(&s5.faults())
                    }
                    Err(e) => (StatusCode::BAD_REQUEST, format!("bad fault request: {e}")).into_response(),
                }
            }),
        )
        .route(
            "/reset",
            axum::routing::post(move || async move {
                s6.reset();
                StatusCode::NO_CONTENT
            }),
        )
}

/// Serves the admin interface until `stop` changes.
pub async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = router(shared);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
    if let Err(e) = r {
        tracing::warn!("admin interface: {e}");
    }
}
