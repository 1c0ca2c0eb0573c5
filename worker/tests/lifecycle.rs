//! Every kind × lifecycle step against the emulator (or `MSSQL_TEST_URL`, see common/mod.rs):
//! create, no-op re-reconcile, drift corrected, drift only reported, observe-only import,
//! orphan, delete, delete again, and the in-use cases.

mod common;

use common::Harness;
use serde_json::json;
use worker::kinds::{Action, Operation::*};

const ALL: &[&str] = &["*"];

/// Database: create with options, idempotent, drift fixed, drift reported, orphan, delete,
/// in use with and without terminateSessionsOnDelete.
#[tokio::test]
async fn database_lifecycle() {
    let h = Harness::start().await;
    let name = h.n("app_db");
    let desired = json!({"kind": "Database", "spec": {
        "recoveryModel": "Simple", "compatibilityLevel": 150, "owner": "sa", "terminateSessionsOnDelete": false
    }});
    let mut item = h.item(&name, desired.clone(), ALL, Apply);

    let out = h.run(&mut item).await;
    assert_eq!(out.error, None);
    assert_eq!(out.action, Some(Action::Create));
    assert!(out.exists && out.up_to_date, "{out:?}");
    let at = out.at_provider.clone().unwrap();
    assert_eq!(at["recoveryModel"], "Simple");
    assert_eq!(at["compatibilityLevel"], 150);
    assert!(at["databaseId"].as_i64().unwrap() > 4, "stable id reported: {at}");

    let again = h.run(&mut item).await;
    assert_eq!(
        (again.action, again.executed.len()),
        (Some(Action::UpToDate), 0),
        "create when it exists = done"
    );

    h.admin(None, &format!("ALTER DATABASE [{name}] SET RECOVERY FULL"))
        .await;
    let fixed = h.run(&mut item).await;
    assert_eq!(fixed.action, Some(Action::Update));
    assert_eq!(fixed.drift, Vec::<String>::new(), "nothing left after the fix");
    assert!(fixed.up_to_date);
    assert_eq!(fixed.at_provider.unwrap()["recoveryModel"], "Simple");

    h.admin(None, &format!("ALTER DATABASE [{name}] SET RECOVERY FULL"))
        .await;
    let mut no_update = h.item(&name, desired.clone(), &["Observe", "Create", "Delete"], Apply);
    let reported = h.run(&mut no_update).await;
    assert_eq!(reported.action, Some(Action::DriftReported));
    assert_eq!(reported.drift, vec!["recoveryModel"]);
    assert!(!reported.up_to_date && reported.exists);

    let mut orphan = h.item(&name, desired.clone(), &["Observe", "Create", "Update"], Delete);
    let o = h.run(&mut orphan).await;
    assert_eq!(o.action, Some(Action::Orphan));
    assert!(o.deleted && o.exists, "orphaned: still there, released");

    // In use: an open session in the database makes DROP fail with 3702, reported as InUse.
    let session = h
        .session(&h.admin_user, &h.admin_password, Some(&name))
        .await
        .expect("session");
    let mut del = h.item(&name, desired.clone(), ALL, Delete);
    let in_use = h.run(&mut del).await;
    let err = in_use.error.clone().expect("in use");
    assert_eq!(
        (err.reason.as_str(), err.number),
        ("InUse", Some(3702)),
        "{err:?}"
    );
    assert!(
        err.message.contains("terminateSessionsOnDelete"),
        "says how to fix it: {}",
        err.message
    );
    assert!(in_use.exists && !in_use.deleted);

    let mut terminate = h.item(
        &name,
        json!({"kind": "Database", "spec": {"terminateSessionsOnDelete": true}}),
        ALL,
        Delete,
    );
    let gone = h.run(&mut terminate).await;
    assert_eq!(gone.error, None);
    assert_eq!(gone.executed, vec!["ALTER DATABASE", "DROP DATABASE"]);
    assert!(gone.deleted && !gone.exists);
    drop(session);

    let again = h.run(&mut terminate).await;
    assert_eq!(again.action, Some(Action::AlreadyGone), "delete when gone = done");
    assert!(again.deleted);

    let mut import = h.item(&name, desired, &["Observe"], Apply);
    let missing = h.run(&mut import).await;
    assert_eq!(missing.action, Some(Action::Missing));
    assert!(!missing.exists && missing.executed.is_empty());
    h.stop().await;
}

/// Login: create, log in with the Secret's password, rotate when the Secret changes (without
/// storing it), roles and flags drift, in use, terminate.
#[tokio::test]
async fn login_lifecycle() {
    let h = Harness::start().await;
    let name = h.n("app_login");
    h.secrets.set("ns", "app-pw", "password", "First!Passw0rd");
    let spec = |disabled: bool, roles: serde_json::Value, terminate: bool| {
        json!({"kind": "Login", "spec": {
            "kind": {"type": "Sql", "password": {"namespace": "ns", "name": "app-pw", "key": "password"},
                     "checkPolicy": true, "checkExpiration": false},
            "defaultDatabase": "master", "disabled": disabled, "serverRoles": roles,
            "terminateSessionsOnDelete": terminate
        }})
    };
    let mut item = h.item(&name, spec(false, json!(["dbcreator"]), false), ALL, Apply);
    let out = h.run(&mut item).await;
    assert_eq!(out.error, None);
    assert!(out.up_to_date, "{out:?}");
    let at = out.at_provider.clone().unwrap();
    assert_eq!(at["serverRoles"], json!(["dbcreator"]));
    assert!(at["sid"].as_str().unwrap().starts_with("0x"));
    h.session(&name, "First!Passw0rd", None)
        .await
        .expect("logs in with the Secret's password");

    assert_eq!(
        h.run(&mut item).await.action,
        Some(Action::UpToDate),
        "same password: no rotation"
    );

    h.secrets.set("ns", "app-pw", "password", "Second!Passw0rd");
    let rotated = h.run(&mut item).await;
    assert_eq!(rotated.action, Some(Action::Update));
    assert_eq!(rotated.executed, vec!["ALTER LOGIN"]);
    assert!(rotated.up_to_date);
    h.session(&name, "Second!Passw0rd", None)
        .await
        .expect("new password works");
    assert!(
        h.session(&name, "First!Passw0rd", None).await.is_err(),
        "old password refused"
    );

    // Drift: someone adds a role and disables the login.
    h.admin(None, &format!("ALTER SERVER ROLE [sysadmin] ADD MEMBER [{name}]"))
        .await;
    h.admin(None, &format!("ALTER LOGIN [{name}] DISABLE")).await;
    let fixed = h.run(&mut item).await;
    assert_eq!(fixed.action, Some(Action::Update));
    assert!(fixed.up_to_date, "{fixed:?}");
    assert_eq!(fixed.at_provider.unwrap()["serverRoles"], json!(["dbcreator"]));

    // Declared disabled + no role.
    let mut item2 = h.item(&name, spec(true, json!([]), false), ALL, Apply);
    let changed = h.run(&mut item2).await;
    assert!(changed.up_to_date, "{changed:?}");
    let at = changed.at_provider.unwrap();
    assert_eq!(
        (at["disabled"].clone(), at["serverRoles"].clone()),
        (json!(true), json!([]))
    );
    let mut item3 = h.item(&name, spec(false, json!([]), false), ALL, Apply);
    assert!(h.run(&mut item3).await.up_to_date);

    // In use.
    let session = h.session(&name, "Second!Passw0rd", None).await.expect("session");
    let mut del = h.item(&name, spec(false, json!([]), false), ALL, Delete);
    let in_use = h.run(&mut del).await;
    let err = in_use.error.expect("in use");
    assert_eq!(
        (err.reason.as_str(), err.number),
        ("InUse", Some(15434)),
        "{}",
        err.message
    );
    let mut kill = h.item(&name, spec(false, json!([]), true), ALL, Delete);
    let gone = h.run(&mut kill).await;
    assert_eq!(gone.error, None);
    assert_eq!(gone.executed, vec!["KILL", "DROP LOGIN"]);
    assert!(gone.deleted);
    drop(session);
    assert_eq!(h.run(&mut kill).await.action, Some(Action::AlreadyGone));
    h.stop().await;
}

/// Login without a Secret value yet: a clear MissingSecret, no statement.
#[tokio::test]
async fn login_waits_for_its_secret() {
    let h = Harness::start().await;
    let name = h.n("no_secret");
    let mut item = h.item(
        &name,
        json!({"kind": "Login", "spec": {
            "kind": {"type": "Sql", "password": {"namespace": "ns", "name": "missing", "key": "password"},
                     "checkPolicy": true, "checkExpiration": false},
            "disabled": false, "serverRoles": [], "terminateSessionsOnDelete": false}}),
        ALL,
        Apply,
    );
    let out = h.run(&mut item).await;
    assert_eq!(out.error.map(|e| e.reason), Some("MissingSecret".to_owned()));
    assert!(out.executed.is_empty());
    h.stop().await;
}

/// Password policy violations come back as Invalid with the server's number and message.
#[tokio::test]
async fn server_refusals_carry_number_and_message() {
    let h = Harness::start().await;
    let name = h.n("weak");
    h.secrets.set("ns", "weak", "password", "short");
    let mut item = h.item(
        &name,
        json!({"kind": "Login", "spec": {
            "kind": {"type": "Sql", "password": {"namespace": "ns", "name": "weak", "key": "password"},
                     "checkPolicy": true, "checkExpiration": false},
            "disabled": false, "serverRoles": [], "terminateSessionsOnDelete": false}}),
        ALL,
        Apply,
    );
    let out = h.run(&mut item).await;
    let err = out.error.expect("policy error");
    assert_eq!(
        (err.reason.as_str(), err.number),
        ("Invalid", Some(33062)),
        "{}",
        err.message
    );
    assert!(!err.message.contains("short"), "never echoes the password");
    h.stop().await;
}

async fn make_db(h: &Harness, name: &str, partial: bool) {
    let mut db = h.item(
        name,
        json!({"kind": "Database", "spec": {
            "containment": if partial { "Partial" } else { "None" }, "terminateSessionsOnDelete": true}}),
        ALL,
        Apply,
    );
    let out = h.run(&mut db).await;
    assert_eq!(out.error, None, "database {name}");
}

/// User: for a login (roles, default schema, drift, orphaned re-map), without login,
/// contained (password reset when the Secret changes), delete.
#[tokio::test]
async fn user_lifecycle() {
    let h = Harness::start().await;
    let db = h.n("users_db");
    let login = h.n("user_login");
    let user = h.n("app_user");
    make_db(&h, &db, false).await;
    h.admin(
        None,
        &format!("CREATE LOGIN [{login}] WITH PASSWORD = N'Login!Passw0rd'"),
    )
    .await;
    let spec = json!({"kind": "User", "spec": {
        "database": db, "kind": {"type": "ForLogin", "login": login},
        "defaultSchema": "dbo", "roles": ["db_datareader", "db_datawriter"]}});
    let mut item = h.item(&user, spec.clone(), ALL, Apply);
    let out = h.run(&mut item).await;
    assert_eq!(out.error, None);
    assert!(out.up_to_date, "{out:?}");
    let at = out.at_provider.unwrap();
    assert_eq!(at["login"], json!(login));
    assert_eq!(at["type"], "ForLogin");
    assert_eq!(at["roles"], json!(["db_datareader", "db_datawriter"]));
    assert_eq!(h.run(&mut item).await.action, Some(Action::UpToDate));

    h.admin(
        Some(&db),
        &format!("ALTER ROLE [db_datawriter] DROP MEMBER [{user}]"),
    )
    .await;
    h.admin(Some(&db), &format!("ALTER ROLE [db_owner] ADD MEMBER [{user}]"))
        .await;
    let fixed = h.run(&mut item).await;
    assert_eq!(fixed.action, Some(Action::Update));
    assert!(fixed.up_to_date, "{fixed:?}");

    let mut no_update = h.item(&user, spec.clone(), &["Observe", "Create", "Delete"], Apply);
    h.admin(
        Some(&db),
        &format!("ALTER USER [{user}] WITH DEFAULT_SCHEMA = [guest]"),
    )
    .await;
    let reported = h.run(&mut no_update).await;
    assert_eq!(reported.drift, vec!["defaultSchema"]);
    assert!(reported.executed.is_empty());

    let mut del = h.item(&user, spec.clone(), ALL, Delete);
    assert!(h.run(&mut del).await.deleted);
    assert_eq!(h.run(&mut del).await.action, Some(Action::AlreadyGone));

    let lonely = h.n("no_login_user");
    let mut wl = h.item(
        &lonely,
        json!({"kind": "User", "spec": {"database": db, "kind": {"type": "WithoutLogin"}, "roles": []}}),
        ALL,
        Apply,
    );
    let out = h.run(&mut wl).await;
    assert_eq!(out.error, None);
    assert_eq!(out.at_provider.unwrap()["type"], "WithoutLogin");

    // A user in a database that does not exist: Apply waits, Delete is done.
    let mut ghost = h.item(
        "ghost",
        json!({"kind": "User", "spec": {"database": h.n("no_such_db"), "kind": {"type": "WithoutLogin"}, "roles": []}}),
        ALL,
        Apply,
    );
    let waiting = h.run(&mut ghost).await;
    assert_eq!(waiting.error.map(|e| e.reason), Some("NotFound".to_owned()));
    ghost.operation = Delete;
    assert!(h.run(&mut ghost).await.deleted);
    h.stop().await;
}

/// Contained user: created with the Secret's password, reset when the Secret changes.
#[tokio::test]
async fn contained_user_password_follows_the_secret() {
    let h = Harness::start().await;
    let db = h.n("contained_db");
    h.admin(None, "EXEC sp_configure 'contained database authentication', 1")
        .await;
    h.admin(None, "RECONFIGURE").await;
    make_db(&h, &db, true).await;
    let user = h.n("cuser");
    h.secrets.set("ns", "cuser-pw", "password", "Contained!Pw1");
    let mut item = h.item(
        &user,
        json!({"kind": "User", "spec": {"database": db,
            "kind": {"type": "Contained", "password": {"namespace": "ns", "name": "cuser-pw", "key": "password"}},
            "roles": []}}),
        ALL,
        Apply,
    );
    let out = h.run(&mut item).await;
    assert_eq!(out.error, None);
    assert!(out.up_to_date, "{out:?}");
    assert_eq!(out.at_provider.as_ref().unwrap()["type"], "Contained", "{out:?}");
    assert_eq!(
        h.run(&mut item).await.action,
        Some(Action::UpToDate),
        "same Secret version"
    );
    assert_contained_password(&h, &db, &user, "Contained!Pw1").await;
    h.secrets.set("ns", "cuser-pw", "password", "Contained!Pw2");
    let rotated = h.run(&mut item).await;
    assert_eq!(rotated.executed, vec!["ALTER USER"]);
    assert!(rotated.up_to_date);
    // The emulator accepts ALTER USER … WITH PASSWORD but keeps the old hash (its alter_user
    // ignores PASSWORD), so the new password is only proven against a real server.
    if h.emu.is_none() {
        assert_contained_password(&h, &db, &user, "Contained!Pw2").await;
    }
    h.stop().await;
}

/// A real server proves the password by logging in. The emulator does not accept contained
/// users at login (it answers 18456), so there the stored hash is checked instead, through
/// its catalog dump.
async fn assert_contained_password(h: &Harness, db: &str, user: &str, password: &str) {
    let Some(emu) = &h.emu else {
        h.session(user, password, Some(db))
            .await
            .expect("contained login");
        return;
    };
    let catalog = emu.catalog_json();
    let text = catalog.to_string();
    let hash = find_hash(&catalog, user)
        .unwrap_or_else(|| panic!("no hash for {user} in {}", &text[..text.len().min(300)]));
    assert_eq!(
        worker::sql::password::compare(password, Some(&hash)),
        worker::sql::password::PasswordState::Matches,
        "{hash:?}"
    );
}

fn find_hash(v: &serde_json::Value, user: &str) -> Option<Vec<u8>> {
    match v {
        serde_json::Value::Object(m) => {
            if m.get("name").and_then(|n| n.as_str()) == Some(user)
                && let Some(h) = m.get("password_hash").filter(|h| !h.is_null())
            {
                return match h {
                    serde_json::Value::Array(a) => {
                        Some(a.iter().filter_map(|b| b.as_u64().map(|b| b as u8)).collect())
                    }
                    serde_json::Value::String(s) => {
                        let s = s.trim_start_matches("0x");
                        (0..s.len())
                            .step_by(2)
                            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
                            .collect()
                    }
                    _ => None,
                };
            }
            m.values().find_map(|x| find_hash(x, user))
        }
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_hash(x, user)),
        _ => None,
    }
}

/// Dropping a database the worker itself has a cached connection to (from observing its
/// users) works without terminateSessionsOnDelete: the worker lets go of its own session.
#[tokio::test]
async fn dropping_a_database_releases_our_own_connection() {
    let h = Harness::start().await;
    let db = h.n("busy_db");
    let mut db_item = h.item(
        &db,
        json!({"kind": "Database", "spec": {"terminateSessionsOnDelete": false}}),
        ALL,
        Apply,
    );
    assert_eq!(h.run(&mut db_item).await.error, None);
    let mut user = h.item(
        "u1",
        json!({"kind": "User", "spec": {"database": db, "kind": {"type": "WithoutLogin"}, "roles": []}}),
        ALL,
        Apply,
    );
    assert_eq!(
        h.run(&mut user).await.error,
        None,
        "the pool now holds a connection in {db}"
    );
    db_item.operation = Delete;
    let out = h.run(&mut db_item).await;
    assert_eq!(out.error, None);
    assert!(out.deleted);
    h.stop().await;
}

/// A DROP that fails after SINGLE_USER puts the database back to MULTI_USER.
#[tokio::test]
async fn failed_terminating_drop_restores_multi_user() {
    let h = Harness::start().await;
    let Some(emu) = &h.emu else {
        h.stop().await;
        return;
    };
    let mut item = h.item(
        "stuck_db",
        json!({"kind": "Database", "spec": {"terminateSessionsOnDelete": true}}),
        ALL,
        Apply,
    );
    assert_eq!(h.run(&mut item).await.error, None);
    emu.set_faults(mssql_emulator::FaultRequest {
        fail_next: Some(mssql_emulator::FailRule {
            pattern: "DROP DATABASE".into(),
            error: 3702,
            message: None,
        }),
        ..Default::default()
    });
    item.operation = Delete;
    let out = h.run(&mut item).await;
    assert_eq!(out.error.map(|e| e.number), Some(Some(3702)));
    let catalog = emu.catalog_json();
    let db = catalog["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "stuck_db")
        .cloned()
        .unwrap();
    assert_eq!(db["user_access"], 0, "MULTI_USER again: {db}");
    let gone = h.run(&mut item).await;
    assert!(gone.deleted, "the retry drops it");
    h.stop().await;
}

/// Schema: created through EXEC (first statement of its batch), owner drift, delete.
#[tokio::test]
async fn schema_lifecycle() {
    let h = Harness::start().await;
    let db = h.n("schema_db");
    make_db(&h, &db, false).await;
    h.admin(Some(&db), "CREATE USER [owner_a] WITHOUT LOGIN").await;
    h.admin(Some(&db), "CREATE USER [owner_b] WITHOUT LOGIN").await;
    let schema = h.n("sales");
    let spec = |owner: &str| json!({"kind": "Schema", "spec": {"database": db, "owner": owner}});
    let mut item = h.item(&schema, spec("owner_a"), ALL, Apply);
    let out = h.run(&mut item).await;
    assert_eq!(out.error, None);
    assert!(out.up_to_date, "{out:?}");
    assert_eq!(out.executed, vec!["CREATE SCHEMA"]);
    assert_eq!(out.at_provider.as_ref().unwrap()["owner"], "owner_a");
    assert_eq!(h.run(&mut item).await.action, Some(Action::UpToDate));

    let mut moved = h.item(&schema, spec("owner_b"), ALL, Apply);
    let changed = h.run(&mut moved).await;
    assert_eq!(changed.executed, vec!["ALTER AUTHORIZATION"]);
    assert_eq!(changed.at_provider.unwrap()["owner"], "owner_b");

    // The owner cannot be dropped while it owns the schema: InUse.
    let mut drop_owner = h.item(
        "owner_b",
        json!({"kind": "User", "spec": {"database": db, "kind": {"type": "WithoutLogin"}, "roles": []}}),
        ALL,
        Delete,
    );
    let blocked = h.run(&mut drop_owner).await;
    assert_eq!(
        blocked.error.map(|e| (e.reason, e.number)),
        Some(("InUse".to_owned(), Some(15138)))
    );

    let mut del = h.item(&schema, spec("owner_b"), ALL, Delete);
    assert!(h.run(&mut del).await.deleted);
    assert_eq!(h.run(&mut del).await.action, Some(Action::AlreadyGone));
    h.stop().await;
}
