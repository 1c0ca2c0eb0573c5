//! A hostile-name corpus: databases, logins, users and schemas created with exactly these
//! names, and nothing else in the catalog changes (compared through the emulator's catalog
//! dump). Against a real server the objects are created, checked and dropped; the dump
//! comparison needs the emulator.

mod common;

use common::Harness;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use worker::kinds::{Action, Operation::*};

const ALL: &[&str] = &["*"];

fn corpus() -> Vec<String> {
    let mut names: Vec<String> = [
        "x]; DROP LOGIN sa;--",
        "o'brien",
        "[bracketed]",
        "]",
        "]]",
        "a]b]]c",
        "N'x'); --",
        "'; SHUTDOWN WITH NOWAIT; --",
        "/* comment */",
        "--",
        "\"double\"",
        "%_like[^]",
        "Zürich データ 😀",
        "select",
        "@P1",
        "0x41",
        "a;b",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // 128 UTF-16 units, half of them closing brackets: the longest name, quoted to 194 chars.
    names.push("]a".repeat(64));
    names
}

/// Entries of an array of named objects, without those named in `new`.
fn without(list: &Value, new: &BTreeSet<String>) -> Vec<Value> {
    list.as_array()
        .expect("array")
        .iter()
        .filter(|o| !o["name"].as_str().is_some_and(|n| new.contains(n)))
        .cloned()
        .collect()
}

fn names_in(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .expect("array")
        .iter()
        .filter_map(|o| o["name"].as_str().map(str::to_owned))
        .collect()
}

fn ids_of(list: &Value, names: &BTreeSet<String>) -> BTreeSet<i64> {
    list.as_array()
        .expect("array")
        .iter()
        .filter(|o| o["name"].as_str().is_some_and(|n| names.contains(n)))
        .filter_map(|o| o["id"].as_i64())
        .collect()
}

/// `after` is `before` plus extra entries, each satisfying `ok`.
fn only_appended(before: &Value, after: &Value, ok: impl Fn(&Value) -> bool, what: &str) {
    let b = before.as_array().expect("array");
    let a = after.as_array().expect("array");
    assert_eq!(&a[..b.len()], &b[..], "{what}: existing entries unchanged");
    for extra in &a[b.len()..] {
        assert!(ok(extra), "{what}: unexpected new entry {extra}");
    }
}

#[tokio::test]
async fn hostile_names_create_exactly_those_objects() {
    let h = Harness::start().await;
    let home = h.n("corpus_home");
    let mut home_item = h.item(
        &home,
        json!({"kind": "Database", "spec": {"terminateSessionsOnDelete": true}}),
        ALL,
        Apply,
    );
    assert_eq!(h.run(&mut home_item).await.error, None);
    let names: Vec<String> = corpus()
        .into_iter()
        .map(|n| {
            if h.emu.is_some() {
                n
            } else {
                h.n(&n).chars().take(120).collect()
            }
        })
        .collect();
    let before = h.emu.as_ref().map(|e| e.catalog_json());

    let mut items = Vec::new();
    for (i, name) in names.iter().enumerate() {
        h.secrets
            .set("ns", &format!("pw{i}"), "password", "Corpus!Passw0rd'\"]");
        items.push(h.item(
            name,
            json!({"kind": "Database", "spec": {"terminateSessionsOnDelete": true}}),
            ALL,
            Apply,
        ));
        items.push(h.item(
            name,
            json!({"kind": "Login", "spec": {
                "kind": {"type": "Sql", "password": {"namespace": "ns", "name": format!("pw{i}"), "key": "password"},
                         "checkPolicy": false, "checkExpiration": false},
                "disabled": false, "serverRoles": [], "terminateSessionsOnDelete": true}}),
            ALL,
            Apply,
        ));
    }
    let out = h.reconciler.reconcile_all(&items).await;
    for (item, o) in items.iter().zip(&out) {
        assert_eq!(o.error, None, "{} {:?}", item.kind(), item.external_name);
        assert!(
            o.up_to_date && o.exists,
            "{} {:?}: {o:?}",
            item.kind(),
            item.external_name
        );
    }
    let mut inner = Vec::new();
    for name in &names {
        inner.push(h.item(
            name,
            json!({"kind": "User", "spec": {"database": home, "kind": {"type": "ForLogin", "login": name},
                   "defaultSchema": name, "roles": ["db_datareader"]}}),
            ALL,
            Apply,
        ));
    }
    let users = h.reconciler.reconcile_all(&inner).await;
    assert!(
        users.iter().all(|o| o.error.is_none() && o.up_to_date),
        "{users:?}"
    );
    let schemas: Vec<_> = names
        .iter()
        .map(|name| {
            h.item(
                name,
                json!({"kind": "Schema", "spec": {"database": home, "owner": name}}),
                ALL,
                Apply,
            )
        })
        .collect();
    let out = h.reconciler.reconcile_all(&schemas).await;
    for (item, o) in schemas.iter().zip(&out) {
        assert_eq!(o.error, None, "schema {:?}", item.external_name);
        assert_eq!(
            o.at_provider.as_ref().unwrap()["owner"],
            json!(item.external_name.as_str()),
            "owned by its user"
        );
    }
    // A second pass finds everything as declared: names round-tripped exactly.
    let all: Vec<_> = items.iter().chain(&inner).chain(&schemas).cloned().collect();
    let again = h.reconciler.reconcile_all(&all).await;
    assert!(
        again.iter().all(|o| o.action == Some(Action::UpToDate)),
        "{again:?}"
    );

    if let (Some(emu), Some(before)) = (&h.emu, before) {
        let after = emu.catalog_json();
        let new: BTreeSet<String> = names.iter().cloned().collect();
        // Server level: exactly the new logins; nothing else touched.
        let added_logins: BTreeSet<String> = names_in(&after["server_principals"])
            .difference(&names_in(&before["server_principals"]))
            .cloned()
            .collect();
        assert_eq!(added_logins, new, "logins with exactly these names");
        assert_eq!(
            without(&after["server_principals"], &new),
            without(&before["server_principals"], &new)
        );
        let login_ids = ids_of(&after["server_principals"], &new);
        only_appended(
            &before["server_perms"],
            &after["server_perms"],
            |p| p["grantee"].as_i64().is_some_and(|g| login_ids.contains(&g)),
            "server_perms",
        );
        assert_eq!(after["server_role_members"], before["server_role_members"]);
        assert_eq!(after["contained_auth"], before["contained_auth"]);
        // Databases: exactly the new ones; the others unchanged except the home database.
        let added_dbs: BTreeSet<String> = names_in(&after["databases"])
            .difference(&names_in(&before["databases"]))
            .cloned()
            .collect();
        assert_eq!(added_dbs, new, "databases with exactly these names");
        let mut keep = new.clone();
        keep.insert(home.clone());
        assert_eq!(
            without(&after["databases"], &keep),
            without(&before["databases"], &keep)
        );
        let find = |doc: &Value| {
            doc["databases"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["name"] == json!(home))
                .cloned()
                .unwrap()
        };
        let (hb, ha) = (find(&before), find(&after));
        let added_users: BTreeSet<String> = names_in(&ha["principals"])
            .difference(&names_in(&hb["principals"]))
            .cloned()
            .collect();
        assert_eq!(added_users, new, "users with exactly these names");
        assert_eq!(without(&ha["principals"], &new), without(&hb["principals"], &new));
        let added_schemas: BTreeSet<String> = names_in(&ha["schemas"])
            .difference(&names_in(&hb["schemas"]))
            .cloned()
            .collect();
        assert_eq!(added_schemas, new, "schemas with exactly these names");
        assert_eq!(without(&ha["schemas"], &new), without(&hb["schemas"], &new));
        let user_ids = ids_of(&ha["principals"], &new);
        only_appended(
            &hb["perms"],
            &ha["perms"],
            |p| p["grantee"].as_i64().is_some_and(|g| user_ids.contains(&g)),
            "database perms",
        );
        only_appended(
            &hb["role_members"],
            &ha["role_members"],
            |m| m[0] == json!(16390) && m[1].as_i64().is_some_and(|u| user_ids.contains(&u)),
            "role members",
        );
    }

    // Clean up (and exercise delete with the same names), schemas before their owners.
    let deletes: Vec<_> = schemas
        .iter()
        .chain(&inner)
        .chain(&items)
        .map(|i| worker::reconcile::Item {
            operation: Delete,
            ..i.clone()
        })
        .collect();
    for kind in ["Schema", "User", "Login", "Database"] {
        let batch: Vec<_> = deletes.iter().filter(|i| i.kind() == kind).cloned().collect();
        let out = h.reconciler.reconcile_all(&batch).await;
        assert!(
            out.iter().all(|o| o.error.is_none() && o.deleted),
            "{kind}: {out:?}"
        );
    }
    h.stop().await;
}
