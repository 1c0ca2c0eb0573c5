//! The drift sweep's cost does not grow with the number of items: one catalog read per kind
//! per database (counted by the emulator), over connections opened once per database.
//! Also: reconnect after a dropped connection, credential refresh after 18456, and no
//! mutation without the Lease.

mod common;

use common::{FlagLeader, Harness};
use serde_json::json;
use std::sync::{Arc, atomic::AtomicBool};
use worker::{
    kinds::{Action, Operation::*},
    reconcile::Item,
};

const ALL: &[&str] = &["*"];

fn statements(c: &mssql_emulator::Counters) -> u64 {
    c.statements.values().sum()
}

fn requests(c: &mssql_emulator::Counters) -> u64 {
    c.batches + c.rpcs
}

async fn world(h: &Harness, n: usize) -> Vec<Item> {
    let mut items = Vec::new();
    for db in ["sweep_a", "sweep_b"] {
        items.push(h.item(
            db,
            json!({"kind": "Database", "spec": {"recoveryModel": "Full", "terminateSessionsOnDelete": false}}),
            ALL,
            Apply,
        ));
    }
    // Databases first: users and schemas live in them.
    let created = h.reconciler.reconcile_all(&items).await;
    assert!(created.iter().all(|o| o.error.is_none()), "{created:?}");
    for i in 0..n {
        h.secrets
            .set("ns", &format!("l{i}"), "password", "Sweep!Passw0rd");
        items.push(h.item(
            &format!("login_{i}"),
            json!({"kind": "Login", "spec": {
                "kind": {"type": "Sql", "password": {"namespace": "ns", "name": format!("l{i}"), "key": "password"},
                         "checkPolicy": true, "checkExpiration": false},
                "disabled": false, "serverRoles": [], "terminateSessionsOnDelete": false}}),
            ALL,
            Apply,
        ));
        for db in ["sweep_a", "sweep_b"] {
            items.push(h.item(
                &format!("user_{i}"),
                json!({"kind": "User", "spec": {"database": db, "kind": {"type": "ForLogin", "login": format!("login_{i}")},
                       "roles": ["db_datareader"]}}),
                ALL,
                Apply,
            ));
            items.push(h.item(
                &format!("schema_{i}"),
                json!({"kind": "Schema", "spec": {"database": db, "owner": format!("user_{i}")}}),
                ALL,
                Apply,
            ));
        }
    }
    // Logins before users before schemas: groups run in (kind, database) order, which is
    // not dependency order, so create in three passes.
    for kind in ["Login", "User", "Schema"] {
        let batch: Vec<Item> = items.iter().filter(|i| i.kind() == kind).cloned().collect();
        let out = h.reconciler.reconcile_all(&batch).await;
        assert!(
            out.iter().all(|o| o.error.is_none() && o.up_to_date),
            "{kind}: {out:?}"
        );
    }
    items
}

/// Sweeping 2 databases × (n logins, n users, n schemas) costs the same with n = 2 and
/// n = 6: Database 1 read, Login 1 batch, User 1 batch per database, Schema 1 read per
/// database — 6 round trips — and no new connection.
#[tokio::test]
async fn drift_sweep_reads_each_kind_once_per_database() {
    let h = Harness::start().await;
    if h.emu.is_none() {
        // Statement counters exist only on the emulator.
        h.stop().await;
        return;
    }
    let mut cost = Vec::new();
    for n in [2, 6] {
        let items = world(&h, n).await;
        let connections = h.pool.connections_opened();
        let before = h.counters().unwrap();
        let out = h.reconciler.reconcile_all(&items).await;
        let after = h.counters().unwrap();
        assert!(
            out.iter()
                .all(|o| o.action == Some(Action::UpToDate) && o.up_to_date),
            "{out:?}"
        );
        assert_eq!(
            h.pool.connections_opened(),
            connections,
            "no new connection for a sweep"
        );
        assert_eq!(connections, 3, "one per database: master, sweep_a, sweep_b");
        cost.push((
            items.len(),
            requests(&after) - requests(&before),
            statements(&after) - statements(&before),
        ));
    }
    let (small, large) = (cost[0], cost[1]);
    assert!(large.0 > small.0 * 2, "{cost:?}");
    assert_eq!(
        small.1, 6,
        "round trips: Database 1 + Login 1 + User 2 + Schema 2 ({cost:?})"
    );
    assert_eq!(
        small.1, large.1,
        "round trips do not grow with the item count ({cost:?})"
    );
    assert_eq!(
        small.2, large.2,
        "statements do not grow with the item count ({cost:?})"
    );

    // Drift in many objects is still observed with the same reads, then fixed.
    let items = world(&h, 6).await;
    for i in 0..6 {
        h.admin(
            Some("sweep_a"),
            &format!("ALTER ROLE [db_datareader] DROP MEMBER [user_{i}]"),
        )
        .await;
    }
    let out = h.reconciler.reconcile_all(&items).await;
    let fixed = out.iter().filter(|o| o.action == Some(Action::Update)).count();
    assert_eq!(fixed, 6);
    assert!(out.iter().all(|o| o.up_to_date));
    let text = h.metrics.encode();
    assert!(
        text.contains("sqlserver_worker_drift_corrections_total{kind=\"User\"} 6"),
        "{text}"
    );
    assert!(text.contains("sqlserver_worker_open_connections 3"), "{text}");
    h.stop().await;
}

/// A dropped connection is replaced: a read is retried once on a new connection; a
/// mutation is not retried (its outcome is unknown) but the next reconcile succeeds.
#[tokio::test]
async fn reconnects_after_a_dropped_connection() {
    let h = Harness::start().await;
    let Some(emu) = &h.emu else {
        h.stop().await;
        return;
    };
    let mut item = h.item(
        "reconnect_db",
        json!({"kind": "Database", "spec": {"terminateSessionsOnDelete": false}}),
        ALL,
        Apply,
    );
    assert_eq!(h.run(&mut item).await.error, None);
    let opened = h.pool.connections_opened();
    emu.set_faults(mssql_emulator::FaultRequest {
        drop_next: Some(1),
        ..Default::default()
    });
    let out = h.run(&mut item).await;
    assert_eq!(
        out.error, None,
        "the observe read was retried on a new connection"
    );
    assert_eq!(h.pool.connections_opened(), opened + 1);

    let mut login = h.item(
        "reconnect_login",
        json!({"kind": "Login", "spec": {"kind": {"type": "External", "objectId": "00000000-0000-0000-0000-0000000000aa"},
               "disabled": false, "serverRoles": [], "terminateSessionsOnDelete": false}}),
        ALL,
        Apply,
    );
    emu.set_faults(mssql_emulator::FaultRequest {
        fail_next: Some(mssql_emulator::FailRule {
            pattern: "CREATE LOGIN".into(),
            error: 1205,
            message: None,
        }),
        ..Default::default()
    });
    let failed = h.run(&mut login).await;
    let err = failed.error.expect("deadlock victim");
    assert_eq!((err.reason.as_str(), err.number), ("Transient", Some(1205)));
    let retried = h.run(&mut login).await;
    assert_eq!(retried.error, None);
    assert!(retried.exists);
    h.stop().await;
}

/// 18456 asks the credential source to refresh and reports AuthFailed with the number.
#[tokio::test]
async fn login_failure_is_auth_failed() {
    let h = Harness::start().await;
    let Some(emu) = &h.emu else {
        h.stop().await;
        return;
    };
    emu.set_faults(mssql_emulator::FaultRequest {
        refuse_logins_secs: Some(600),
        ..Default::default()
    });
    let mut item = h.item(
        "auth_db",
        json!({"kind": "Database", "spec": {"terminateSessionsOnDelete": false}}),
        ALL,
        Apply,
    );
    let out = h.run(&mut item).await;
    let err = out.error.expect("refused");
    assert_eq!(
        (err.reason.as_str(), err.number),
        ("AuthFailed", Some(18456)),
        "{}",
        err.message
    );
    assert!(h.metrics.encode().contains("number=\"18456\""));
    h.stop().await;
}

/// Without the Lease nothing is mutated: the plan stops before its first statement.
#[tokio::test]
async fn no_mutation_without_the_lease() {
    let leader = Arc::new(FlagLeader(AtomicBool::new(false)));
    let h = Harness::start_with(leader.clone()).await;
    let name = h.n("leaderless_db");
    let mut item = h.item(
        &name,
        json!({"kind": "Database", "spec": {"terminateSessionsOnDelete": false}}),
        ALL,
        Apply,
    );
    let out = h.run(&mut item).await;
    assert!(out.lost_lease(), "{out:?}");
    assert!(out.executed.is_empty());
    leader.0.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut observe_only = h.item(
        &name,
        json!({"kind": "Database", "spec": {"terminateSessionsOnDelete": false}}),
        &["Observe"],
        Apply,
    );
    assert_eq!(
        h.run(&mut observe_only).await.action,
        Some(Action::Missing),
        "nothing was created"
    );
    h.stop().await;
}
