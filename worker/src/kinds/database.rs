//! Database: `sys.databases`, created and changed from `master`.

use super::{Change, Operation, Plan, PlanError, decide, find};
use crate::sql::{
    Param, Row, Statement, in_list,
    quote::{bare_word, ident},
};
use apis::{
    identifier::SqlName,
    policies::Policies,
    request::{Containment, DatabaseRequest, RecoveryModel},
};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A database as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedDatabase {
    /// Name as stored.
    pub name: String,
    /// `database_id`.
    pub database_id: i64,
    /// Owning login (`SUSER_SNAME(owner_sid)`).
    pub owner: Option<String>,
    /// `collation_name`.
    pub collation: Option<String>,
    /// `recovery_model_desc`: FULL, BULK_LOGGED, SIMPLE.
    pub recovery_model: Option<String>,
    /// `compatibility_level`.
    pub compatibility_level: Option<i64>,
    /// `containment_desc`: NONE, PARTIAL.
    pub containment: Option<String>,
    /// `state_desc`.
    pub state: Option<String>,
    /// `create_date`, ISO 8601.
    pub create_date: Option<String>,
}

/// The batched observe query for `names` (run in `master`).
pub fn observe_query(names: &[&SqlName]) -> (String, Vec<Param>) {
    let mut params = Vec::new();
    let list = in_list(names.iter().copied(), &mut params);
    let sql = format!(
        "SELECT d.name, d.database_id, SUSER_SNAME(d.owner_sid) AS owner, d.collation_name, \
         d.recovery_model_desc, d.compatibility_level, d.containment_desc, d.state_desc, d.create_date \
         FROM sys.databases AS d WHERE d.name IN ({list})"
    );
    (sql, params)
}

/// Parses the result of [`observe_query`], by name.
pub fn parse(rows: &[Row]) -> BTreeMap<String, ObservedDatabase> {
    rows.iter()
        .filter_map(|r| {
            let name = r.text("name")?;
            Some((
                name.clone(),
                ObservedDatabase {
                    name,
                    database_id: r.int("database_id").unwrap_or_default(),
                    owner: r.text("owner"),
                    collation: r.text("collation_name"),
                    recovery_model: r.text("recovery_model_desc"),
                    compatibility_level: r.int("compatibility_level"),
                    containment: r.text("containment_desc"),
                    state: r.text("state_desc"),
                    create_date: r.text("create_date"),
                },
            ))
        })
        .collect()
}

/// Looks `name` up in parsed observations (collation-tolerant).
pub fn lookup<'a>(
    observed: &'a BTreeMap<String, ObservedDatabase>,
    name: &SqlName,
) -> Option<&'a ObservedDatabase> {
    find(observed, name.as_str())
}

fn recovery_sql(r: RecoveryModel) -> &'static str {
    match r {
        RecoveryModel::Full => "FULL",
        RecoveryModel::BulkLogged => "BULK_LOGGED",
        RecoveryModel::Simple => "SIMPLE",
    }
}

fn recovery_api(desc: &str) -> &'static str {
    match desc {
        "FULL" => "Full",
        "BULK_LOGGED" => "BulkLogged",
        "SIMPLE" => "Simple",
        _ => "Unknown",
    }
}

fn containment_sql(c: Containment) -> &'static str {
    match c {
        Containment::None => "NONE",
        Containment::Partial => "PARTIAL",
    }
}

/// Plans one database. Runs in `master`, so statements carry no database.
pub fn plan(
    name: &SqlName,
    desired: &DatabaseRequest,
    observed: Option<&ObservedDatabase>,
    policies: Policies,
    operation: Operation,
) -> Result<Plan, PlanError> {
    let n = ident(name)?;
    let st = |kind, sql: String| Statement::new(kind, None, sql);
    let set_recovery = |r| {
        st(
            "ALTER DATABASE",
            format!("ALTER DATABASE {n} SET RECOVERY {}", recovery_sql(r)),
        )
    };
    let set_compat = |l: i64| {
        st(
            "ALTER DATABASE",
            format!("ALTER DATABASE {n} SET COMPATIBILITY_LEVEL = {l}"),
        )
    };
    let set_owner = |o: &SqlName| -> Result<Statement, PlanError> {
        Ok(st(
            "ALTER AUTHORIZATION",
            format!("ALTER AUTHORIZATION ON DATABASE::{n} TO {}", ident(o)?),
        ))
    };
    let mut plan = decide(
        policies,
        operation,
        observed.is_some(),
        || {
            let o = observed.cloned().unwrap_or_default();
            let mut changes = Vec::new();
            if let Some(c) = &desired.collation
                && !o.collation.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(c))
            {
                // Needs exclusive access on a real server (5030 otherwise, reported as InUse).
                changes.push(Change::fix(
                    "collation",
                    vec![st(
                        "ALTER DATABASE",
                        format!("ALTER DATABASE {n} COLLATE {}", bare_word(c)?),
                    )],
                ));
            }
            if let Some(r) = desired.recovery_model
                && o.recovery_model.as_deref() != Some(recovery_sql(r))
            {
                changes.push(Change::fix("recoveryModel", vec![set_recovery(r)]));
            }
            if let Some(l) = desired.compatibility_level
                && o.compatibility_level != Some(l)
            {
                changes.push(Change::fix("compatibilityLevel", vec![set_compat(l)]));
            }
            if let Some(c) = desired.containment
                && o.containment.as_deref() != Some(containment_sql(c))
            {
                changes.push(Change::fix(
                    "containment",
                    vec![st(
                        "ALTER DATABASE",
                        format!("ALTER DATABASE {n} SET CONTAINMENT = {}", containment_sql(c)),
                    )],
                ));
            }
            if let Some(owner) = &desired.owner
                && !o
                    .owner
                    .as_deref()
                    .is_some_and(|x| x.eq_ignore_ascii_case(owner.as_str()))
            {
                changes.push(Change::fix("owner", vec![set_owner(owner)?]));
            }
            Ok(changes)
        },
        || {
            let mut create = format!("CREATE DATABASE {n}");
            if let Some(c) = desired.containment {
                create.push_str(&format!(" CONTAINMENT = {}", containment_sql(c)));
            }
            if let Some(c) = &desired.collation {
                create.push_str(&format!(" COLLATE {}", bare_word(c)?));
            }
            let mut out = vec![st("CREATE DATABASE", create)];
            out.extend(desired.recovery_model.map(set_recovery));
            out.extend(desired.compatibility_level.map(set_compat));
            if let Some(owner) = &desired.owner {
                out.push(set_owner(owner)?);
            }
            Ok(out)
        },
        || {
            let mut out = Vec::new();
            if desired.terminate_sessions_on_delete {
                // Ends every other session in the database (they would make DROP fail with 3702).
                out.push(st(
                    "ALTER DATABASE",
                    format!("ALTER DATABASE {n} SET SINGLE_USER WITH ROLLBACK IMMEDIATE"),
                ));
            }
            out.push(st("DROP DATABASE", format!("DROP DATABASE {n}")));
            Ok(out)
        },
    )?;
    if plan.statements.len() > 1 && plan.statements[0].sql.contains("SINGLE_USER") {
        // A database left in SINGLE_USER after a failed DROP would lock everyone else out.
        plan.undo = vec![st("ALTER DATABASE", format!("ALTER DATABASE {n} SET MULTI_USER"))];
    }
    Ok(plan)
}

/// `status.atProvider` of a Database.
pub fn at_provider(o: &ObservedDatabase) -> Value {
    json!({
        "id": o.database_id.to_string(),
        "databaseId": o.database_id,
        "owner": o.owner,
        "collation": o.collation,
        "recoveryModel": o.recovery_model.as_deref().map(recovery_api),
        "compatibilityLevel": o.compatibility_level,
        "containment": o.containment.as_deref().map(|c| if c == "PARTIAL" { "Partial" } else { "None" }),
        "state": o.state,
        "createDate": o.create_date,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{Action, policies, render};

    fn db(yaml: serde_json::Value) -> DatabaseRequest {
        serde_json::from_value(yaml).expect("request")
    }

    fn observed() -> ObservedDatabase {
        ObservedDatabase {
            name: "app".into(),
            database_id: 5,
            owner: Some("sa".into()),
            collation: Some("SQL_Latin1_General_CP1_CI_AS".into()),
            recovery_model: Some("FULL".into()),
            compatibility_level: Some(160),
            containment: Some("NONE".into()),
            state: Some("ONLINE".into()),
            create_date: None,
        }
    }

    /// Each case: why it exists, spec, observed, policies, operation, expected action and SQL.
    #[test]
    // A case table reads best as one tuple per row.
    #[allow(clippy::type_complexity)]
    fn golden_plans() {
        let full = db(json!({
            "collation": "Latin1_General_CI_AS", "recoveryModel": "Simple", "compatibilityLevel": 150,
            "containment": "Partial", "owner": "app]owner", "terminateSessionsOnDelete": false
        }));
        let minimal = db(json!({"terminateSessionsOnDelete": false}));
        let terminate = db(json!({"terminateSessionsOnDelete": true}));
        let all = policies(&["*"]);
        let obs = observed();
        let cases: Vec<(
            &str,
            &DatabaseRequest,
            Option<&ObservedDatabase>,
            Policies,
            Operation,
            Action,
            Vec<&str>,
        )> = vec![
            (
                "create with every field: options in CREATE where T-SQL has them, ALTERs after",
                &full,
                None,
                all,
                Operation::Apply,
                Action::Create,
                vec![
                    "CREATE DATABASE [app] CONTAINMENT = PARTIAL COLLATE Latin1_General_CI_AS",
                    "ALTER DATABASE [app] SET RECOVERY SIMPLE",
                    "ALTER DATABASE [app] SET COMPATIBILITY_LEVEL = 150",
                    "ALTER AUTHORIZATION ON DATABASE::[app] TO [app]]owner]",
                ],
            ),
            (
                "create with nothing set leaves everything to the server",
                &minimal,
                None,
                all,
                Operation::Apply,
                Action::Create,
                vec!["CREATE DATABASE [app]"],
            ),
            (
                "unset fields are never drift (late-initialized instead)",
                &minimal,
                Some(&obs),
                all,
                Operation::Apply,
                Action::UpToDate,
                vec![],
            ),
            (
                "every field drifted: one correction each, in field order",
                &full,
                Some(&obs),
                all,
                Operation::Apply,
                Action::Update,
                vec![
                    "ALTER DATABASE [app] COLLATE Latin1_General_CI_AS",
                    "ALTER DATABASE [app] SET RECOVERY SIMPLE",
                    "ALTER DATABASE [app] SET COMPATIBILITY_LEVEL = 150",
                    "ALTER DATABASE [app] SET CONTAINMENT = PARTIAL",
                    "ALTER AUTHORIZATION ON DATABASE::[app] TO [app]]owner]",
                ],
            ),
            (
                "drift without Update is reported, not fixed",
                &full,
                Some(&obs),
                policies(&["Observe", "Create", "Delete"]),
                Operation::Apply,
                Action::DriftReported,
                vec![],
            ),
            (
                "observe-only import of a missing database creates nothing",
                &full,
                None,
                policies(&["Observe"]),
                Operation::Apply,
                Action::Missing,
                vec![],
            ),
            (
                "observe-only import of an existing database changes nothing",
                &full,
                Some(&obs),
                policies(&["Observe"]),
                Operation::Apply,
                Action::DriftReported,
                vec![],
            ),
            (
                "delete drops",
                &minimal,
                Some(&obs),
                all,
                Operation::Delete,
                Action::Delete,
                vec!["DROP DATABASE [app]"],
            ),
            (
                "delete with terminateSessionsOnDelete ends sessions first",
                &terminate,
                Some(&obs),
                all,
                Operation::Delete,
                Action::Delete,
                vec![
                    "ALTER DATABASE [app] SET SINGLE_USER WITH ROLLBACK IMMEDIATE",
                    "DROP DATABASE [app]",
                ],
            ),
            (
                "delete of a gone database is done",
                &minimal,
                None,
                all,
                Operation::Delete,
                Action::AlreadyGone,
                vec![],
            ),
            (
                "no Delete policy orphans",
                &minimal,
                Some(&obs),
                policies(&["Observe", "Create", "Update", "LateInitialize"]),
                Operation::Delete,
                Action::Orphan,
                vec![],
            ),
            (
                "paused does nothing at all",
                &full,
                None,
                policies(&[]),
                Operation::Apply,
                Action::Paused,
                vec![],
            ),
        ];
        let name = SqlName::new("app").unwrap();
        for (why, desired, observed, policies, op, action, sql) in cases {
            let plan = plan(&name, desired, observed, policies, op).expect(why);
            assert_eq!(
                render(&plan),
                (action, sql.iter().map(|s| s.to_string()).collect()),
                "{why}"
            );
        }
    }

    #[test]
    fn terminating_delete_can_be_undone() {
        let name = SqlName::new("app").unwrap();
        let terminate = db(json!({"terminateSessionsOnDelete": true}));
        let p = plan(
            &name,
            &terminate,
            Some(&observed()),
            policies(&["*"]),
            Operation::Delete,
        )
        .unwrap();
        let undo: Vec<String> = p.undo.iter().map(Statement::redacted).collect();
        assert_eq!(undo, vec!["ALTER DATABASE [app] SET MULTI_USER"]);
        let plain = db(json!({"terminateSessionsOnDelete": false}));
        let p = plan(
            &name,
            &plain,
            Some(&observed()),
            policies(&["*"]),
            Operation::Delete,
        )
        .unwrap();
        assert!(p.undo.is_empty(), "nothing to undo for a plain DROP");
    }

    #[test]
    fn matching_values_are_not_drift() {
        let same = db(json!({
            "collation": "sql_latin1_general_cp1_ci_as", "recoveryModel": "Full", "compatibilityLevel": 160,
            "containment": "None", "owner": "SA", "terminateSessionsOnDelete": false
        }));
        let name = SqlName::new("app").unwrap();
        let p = plan(
            &name,
            &same,
            Some(&observed()),
            policies(&["*"]),
            Operation::Apply,
        )
        .unwrap();
        assert_eq!(
            p.action,
            Action::UpToDate,
            "collation and owner compare case-insensitively"
        );
    }

    #[test]
    fn observe_query_is_parameterized() {
        let a = SqlName::new("a'; DROP DATABASE x;--").unwrap();
        let b = SqlName::new("b").unwrap();
        let (sql, params) = observe_query(&[&a, &b]);
        assert!(sql.ends_with("WHERE d.name IN (@P1, @P2)"), "{sql}");
        assert_eq!(params.len(), 2);
        assert!(!sql.contains("DROP"), "names travel as parameters");
    }
}
