//! `cargo xtask demo`: the provider on the embedded local environment, left running.
//!
//! Brings up the control plane, the SQL Server emulator and the provider (as `cargo xtask
//! e2e` does), applies the examples that need no cloud identity, waits until every managed
//! resource is Ready with progress output, prints a status table (Kubernetes side and SQL
//! side) and how to explore and tear down. `cargo xtask demo --down` stops it.

use crate::{
    e2e::{self, Session},
    testenv::cluster,
    util::workspace_root,
};
use anyhow::{Context, Result, bail};
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Examples the demo applies: everything that works without Entra ID or AWS.
const EXAMPLES: &[&str] = &[
    "examples/app-database",
    "examples/database/database.yaml",
    "examples/login/login-sql.yaml",
    "examples/user/user-without-login.yaml",
    "examples/user/user-contained.yaml",
];
/// Examples left out, and why (printed, so nobody wonders).
const SKIPPED: &[(&str, &str)] = &[
    (
        "examples/login/login-external.yaml, examples/user/user-external.yaml",
        "need a worker authenticated with Entra ID",
    ),
    (
        "examples/config/",
        "point at real servers and clouds; the demo's ClusterProviderConfig points at the emulator",
    ),
];

fn demo_dir() -> PathBuf {
    workspace_root().join(".testenv").join("demo")
}

/// `cargo xtask demo [--down]`.
pub fn run(down: bool) -> Result<()> {
    if down {
        let dir = demo_dir();
        e2e::stop_recorded_emulator(&dir);
        cluster::down(&dir)?;
        eprintln!(
            "demo stopped; its files stay in {} (delete the directory to remove them)",
            dir.display()
        );
        return Ok(());
    }
    let started = Instant::now();
    let session = e2e::start("demo")?;
    match show(&session) {
        Ok(()) => {
            eprintln!(
                "\nDemo up in {:.0?}. The environment and the emulator keep running until `cargo xtask demo --down`.",
                started.elapsed()
            );
            // The Session's emulator handle is dropped here without stopping the process.
            std::mem::forget(session);
            Ok(())
        }
        Err(e) => {
            eprintln!("demo failed: {e:#}\nlogs: {}/logs", session.dir.display());
            Err(e)
        }
    }
}

fn managed_states(session: &Session) -> Vec<(String, bool)> {
    let out = e2e::jsonpath(
        session,
        &[
            "get",
            "databases.sqlserver.kubesql.io,logins.sqlserver.kubesql.io,users.sqlserver.kubesql.io,schemas.sqlserver.kubesql.io",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ],
    );
    out.lines()
        .filter_map(|l| l.split_once(' ').or(Some((l, ""))))
        .map(|(name, ready)| (name.to_owned(), ready.trim() == "True"))
        .collect()
}

fn show(session: &Session) -> Result<()> {
    // Contained users need the server-level switch an administrator sets once; set it on the
    // emulator the way one would on SQL Server.
    let mut enable = Command::new(workspace_root().join("kuttl-tests/e2e/bin/sqlcheck"));
    e2e::suite_env(session, &mut enable)?;
    let status = enable
        .args([
            "exec",
            "EXEC sp_configure 'contained database authentication', 1; RECONFIGURE",
        ])
        .status()?;
    if !status.success() {
        bail!("enabling contained database authentication on the emulator failed");
    }
    for example in EXAMPLES {
        let status = session
            .kubectl()
            .args(["apply", "-f", example])
            .status()
            .context("kubectl apply")?;
        if !status.success() {
            bail!("kubectl apply -f {example} failed");
        }
    }
    for (what, why) in SKIPPED {
        eprintln!("    not applied: {what} ({why})");
    }
    let timeout = Duration::from_secs(300);
    let started = Instant::now();
    loop {
        let states = managed_states(session);
        let ready = states.iter().filter(|(_, r)| *r).count();
        eprintln!(
            "    {ready}/{} managed resources Ready ({:.0?})",
            states.len(),
            started.elapsed()
        );
        if !states.is_empty() && ready == states.len() {
            break;
        }
        if started.elapsed() > timeout {
            for (name, r) in states.iter().filter(|(_, r)| !*r) {
                eprintln!("    not Ready: {name} ({r})");
            }
            bail!(
                "not every example became Ready within {timeout:?}; see `kubectl describe` and {}/logs",
                session.dir.display()
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }

    println!("\n== Kubernetes");
    let _ = session
        .kubectl()
        .args(["get", "clusterproviderconfigs,managed", "-A"])
        .status();
    println!("\n== SQL Server (emulator, 127.0.0.1:{})", session.sql_port);
    for (label, query) in [
        (
            "databases",
            "SELECT name FROM sys.databases WHERE database_id > 4 ORDER BY name",
        ),
        (
            "logins",
            "SELECT name FROM sys.server_principals WHERE type = 'S' AND name <> 'sa' AND name NOT LIKE '##%' ORDER BY name",
        ),
        (
            "users",
            "SELECT name FROM shop.sys.database_principals WHERE type = 'S' AND principal_id > 4 ORDER BY name",
        ),
        (
            "schemas",
            "SELECT name FROM shop.sys.schemas WHERE schema_id > 4 AND schema_id < 16384 ORDER BY name",
        ),
    ] {
        let mut cmd = Command::new(workspace_root().join("kuttl-tests/e2e/bin/sqlcheck"));
        e2e::suite_env(session, &mut cmd)?;
        let out = cmd.args(["rows", query]).stderr(Stdio::inherit()).output()?;
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        println!("  {label:<10} {}", names.join(", "));
    }
    let kubeconfig = session.dir.join("kubeconfig");
    println!(
        "\n== Explore\n  export KUBECONFIG={kc}\n  kubectl get managed -A\n  kubectl describe database shop\n  kubectl -n {ns} logs deploy/provider-sqlserver\n  kubectl -n {ns} get deploy,pods,workitems\n  SQL: 127.0.0.1:{port}, login sa, password in Secret {ns}/sqlserver-admin\n  (FreeTDS: tsql -H 127.0.0.1 -p {port} -U sa)\n  logs of every process: {logs}\n\n== Tear down\n  cargo xtask demo --down",
        kc = kubeconfig.display(),
        ns = e2e::PROVIDER_NAMESPACE,
        port = session.sql_port,
        logs = session.dir.join("logs").display(),
    );
    Ok(())
}
