//! No password appears in any log line: every line written while logins and contained
//! users are created, rotated, refused by the password policy and dropped — at TRACE, for
//! every crate but the emulator (worker, tiberius, kube, …) — is captured and searched, and so are the
//! outcomes (the material of statuses) and the metrics.

mod common;

use common::Harness;
use serde_json::json;
use std::{
    io::Write,
    sync::{Arc, Mutex},
};
use worker::kinds::Operation::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const SECRETS: &[&str] = &["Log!Secret1", "Log!Secret2", "Wq7!z", "Contained!Secret3"];

#[tokio::test]
async fn no_password_in_any_log_line() {
    let capture = Capture::default();
    // Everything at TRACE except the emulator itself: it stands in for SQL Server, whose own
    // logs are not the worker's (and it logs every batch's text at DEBUG, passwords included).
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace,mssql_emulator=off"))
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    // The test runtime is single-threaded: the emulator's tasks log into this subscriber too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::start().await;
    let mut outcomes = Vec::new();
    let login = |secret: &str| {
        json!({"kind": "Login", "spec": {
            "kind": {"type": "Sql", "password": {"namespace": "ns", "name": secret, "key": "password"},
                     "checkPolicy": true, "checkExpiration": false},
            "disabled": false, "serverRoles": [], "terminateSessionsOnDelete": true}})
    };
    h.secrets.set("ns", "pw", "password", SECRETS[0]);
    let mut item = h.item("logged", login("pw"), &["*"], Apply);
    outcomes.push(h.run(&mut item).await);
    h.secrets.set("ns", "pw", "password", SECRETS[1]);
    outcomes.push(h.run(&mut item).await);
    h.secrets.set("ns", "weak", "password", SECRETS[2]);
    let mut weak = h.item("weak_login", login("weak"), &["*"], Apply);
    let refused = h.run(&mut weak).await;
    assert!(
        refused.error.is_some(),
        "the policy refusal is part of what is checked"
    );
    outcomes.push(refused);

    h.admin(None, "EXEC sp_configure 'contained database authentication', 1")
        .await;
    h.admin(None, "RECONFIGURE").await;
    let mut db = h.item(
        "logdb",
        json!({"kind": "Database", "spec": {"containment": "Partial", "terminateSessionsOnDelete": true}}),
        &["*"],
        Apply,
    );
    outcomes.push(h.run(&mut db).await);
    h.secrets.set("ns", "cpw", "password", SECRETS[3]);
    let mut contained = h.item(
        "cuser",
        json!({"kind": "User", "spec": {"database": "logdb",
            "kind": {"type": "Contained", "password": {"namespace": "ns", "name": "cpw", "key": "password"}}, "roles": []}}),
        &["*"],
        Apply,
    );
    outcomes.push(h.run(&mut contained).await);
    item.operation = Delete;
    outcomes.push(h.run(&mut item).await);
    let metrics = h.metrics.encode();
    // The worker's own login password too.
    let admin_password = h.admin_password.clone();
    h.stop().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("executing"),
        "the capture saw the worker's statement logs:\n{logs}"
    );
    assert!(logs.contains("N'***'"), "statements are logged redacted");
    let rendered = format!("{outcomes:?}");
    for secret in SECRETS.iter().copied().chain([admin_password.as_str()]) {
        for (line_no, line) in logs.lines().enumerate() {
            assert!(
                !line.contains(secret),
                "log line {line_no} leaks a password: {line}"
            );
        }
        assert!(!rendered.contains(secret), "an outcome leaks a password");
        assert!(!metrics.contains(secret), "a metric leaks a password");
    }
}
