//! The process edge: invalid configuration exits with a clear message and code 78 (no
//! panic), and the health server answers /healthz, /readyz and /metrics.

use std::{
    process::{Command, Stdio},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use worker::{health::Health, metrics::Metrics};

/// Waits for a child with a bound; kills it when the bound is hit.
fn wait_bounded(mut child: std::process::Child) -> std::process::Output {
    for _ in 0..300 {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("the worker did not exit within 30 s");
}

#[test]
fn invalid_configuration_exits_78_with_every_problem_listed() {
    let child = Command::new(env!("CARGO_BIN_EXE_worker"))
        .env_clear()
        .env("TLS_MODE", "Sometimes")
        .env("SQL_PASSWORD", "Do-Not-Print-Me")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker");
    let out = wait_bounded(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    for want in [
        "WORKER_NAME is required",
        "SQL_HOST is required",
        "TLS_MODE=\"Sometimes\"",
    ] {
        assert!(stderr.contains(want), "{want} in: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Do-Not-Print-Me"));
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    out
}

#[tokio::test]
async fn health_endpoints() {
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::new());
    metrics.item("Login", "Create");
    metrics.sql_error(Some(3702), "InUse");
    metrics
        .sql_latency
        .get_or_create(&worker::metrics::StatementLabels {
            statement: "DROP LOGIN".into(),
        })
        .observe(0.01);
    metrics
        .drift_corrections
        .get_or_create(&worker::metrics::KindLabels { kind: "User".into() })
        .inc();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(worker::health::serve(
        listener,
        health.clone(),
        metrics,
        async move {
            let _ = stopped.changed().await;
        },
    ));
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(
        get(addr, "/readyz").await.starts_with("HTTP/1.1 503"),
        "not synced yet"
    );
    health.synced.store(true, Ordering::Relaxed);
    assert!(
        get(addr, "/readyz").await.starts_with("HTTP/1.1 200"),
        "a synced standby is ready"
    );
    health.leader.store(true, Ordering::Relaxed);
    assert!(
        get(addr, "/readyz").await.starts_with("HTTP/1.1 503"),
        "a leader needs SQL"
    );
    health.sql_ok.store(true, Ordering::Relaxed);
    assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    let m = get(addr, "/metrics").await;
    assert!(m.contains("application/openmetrics-text"), "{m}");
    for family in [
        "sqlserver_worker_items_processed_total{kind=\"Login\",outcome=\"Create\"} 1",
        "sqlserver_worker_sql_latency_seconds_count{statement=\"DROP LOGIN\"} 1",
        "sqlserver_worker_sql_errors_total{number=\"3702\",reason=\"InUse\"} 1",
        "sqlserver_worker_queue_depth",
        "sqlserver_worker_oldest_pending_age_seconds",
        "sqlserver_worker_drift_corrections_total{kind=\"User\"} 1",
        "sqlserver_worker_open_connections",
        "sqlserver_worker_leader",
    ] {
        assert!(m.contains(family), "{family} in:\n{m}");
    }
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops")
        .expect("join")
        .expect("serve");
}
