//! Schema: `sys.schemas`, in its database. `CREATE SCHEMA` must be the first statement of its
//! batch (error 111), so it is wrapped in `EXEC(N'…')`: the identifier is quoted first, then
//! the whole statement is quoted as a literal.

use super::{Change, Operation, Plan, PlanError, decide, find};
use crate::sql::{
    Param, Row, Statement, in_list,
    quote::{ident, quote_literal},
};
use apis::{identifier::SqlName, policies::Policies, request::SchemaRequest};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A schema as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedSchema {
    /// Name as stored.
    pub name: String,
    /// `DB_ID()` of its database.
    pub database_id: i64,
    /// `schema_id`.
    pub schema_id: i64,
    /// `USER_NAME(principal_id)`: the owner.
    pub owner: Option<String>,
}

/// The batched observe query for `names`, run in their database.
pub fn observe_query(names: &[&SqlName]) -> (String, Vec<Param>) {
    let mut params = Vec::new();
    let list = in_list(names.iter().copied(), &mut params);
    let sql = format!(
        "SELECT DB_ID() AS database_id, s.name, s.schema_id, USER_NAME(s.principal_id) AS owner \
         FROM sys.schemas AS s WHERE s.name IN ({list})"
    );
    (sql, params)
}

/// Parses the result of [`observe_query`], by name.
pub fn parse(rows: &[Row]) -> BTreeMap<String, ObservedSchema> {
    rows.iter()
        .filter_map(|r| {
            let name = r.text("name")?;
            Some((
                name.clone(),
                ObservedSchema {
                    name,
                    database_id: r.int("database_id").unwrap_or_default(),
                    schema_id: r.int("schema_id").unwrap_or_default(),
                    owner: r.text("owner"),
                },
            ))
        })
        .collect()
}

/// Looks `name` up in parsed observations (collation-tolerant).
pub fn lookup<'a>(
    observed: &'a BTreeMap<String, ObservedSchema>,
    name: &SqlName,
) -> Option<&'a ObservedSchema> {
    find(observed, name.as_str())
}

/// Plans one schema. An unset owner is left to the server (`dbo` when we create it).
pub fn plan(
    name: &SqlName,
    desired: &SchemaRequest<SqlName>,
    observed: Option<&ObservedSchema>,
    policies: Policies,
    operation: Operation,
) -> Result<Plan, PlanError> {
    let n = ident(name)?;
    let db = Some(&desired.database);
    let st = |kind, sql: String| Statement::new(kind, db, sql);
    decide(
        policies,
        operation,
        observed.is_some(),
        || {
            let mut changes = Vec::new();
            if let Some(owner) = &desired.owner
                && !observed
                    .and_then(|o| o.owner.as_deref())
                    .is_some_and(|x| x.eq_ignore_ascii_case(owner.as_str()))
            {
                changes.push(Change::fix(
                    "owner",
                    vec![st(
                        "ALTER AUTHORIZATION",
                        format!("ALTER AUTHORIZATION ON SCHEMA::{n} TO {}", ident(owner)?),
                    )],
                ));
            }
            Ok(changes)
        },
        || {
            let mut inner = format!("CREATE SCHEMA {n}");
            if let Some(owner) = &desired.owner {
                inner.push_str(&format!(" AUTHORIZATION {}", ident(owner)?));
            }
            Ok(vec![st(
                "CREATE SCHEMA",
                format!("EXEC({})", quote_literal(&inner)?),
            )])
        },
        || Ok(vec![st("DROP SCHEMA", format!("DROP SCHEMA {n}"))]),
    )
}

/// `status.atProvider` of a Schema.
pub fn at_provider(database: &SqlName, o: &ObservedSchema) -> Value {
    json!({
        "id": format!("{}/{}", o.database_id, o.schema_id),
        "database": database.as_str(),
        "databaseId": o.database_id,
        "schemaId": o.schema_id,
        "owner": o.owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{Action, policies, render};

    #[test]
    // A case table reads best as one tuple per row.
    #[allow(clippy::type_complexity)]
    fn golden_plans() {
        let all = policies(&["*"]);
        let db = SqlName::new("app").unwrap();
        let owned = SchemaRequest {
            database: db.clone(),
            owner: Some(SqlName::new("o'wner]").unwrap()),
        };
        let unowned = SchemaRequest {
            database: db.clone(),
            owner: None,
        };
        let obs = ObservedSchema {
            name: "s".into(),
            database_id: 5,
            schema_id: 6,
            owner: Some("dbo".into()),
        };
        let cases: Vec<(
            &str,
            &SchemaRequest<SqlName>,
            Option<&ObservedSchema>,
            Policies,
            Operation,
            Action,
            Vec<&str>,
        )> = vec![
            (
                "create wraps in EXEC (first statement of its batch); both quoting layers applied",
                &owned,
                None,
                all,
                Operation::Apply,
                Action::Create,
                vec!["EXEC(N'CREATE SCHEMA [s] AUTHORIZATION [o''wner]]]')"],
            ),
            (
                "create without owner",
                &unowned,
                None,
                all,
                Operation::Apply,
                Action::Create,
                vec!["EXEC(N'CREATE SCHEMA [s]')"],
            ),
            (
                "unset owner is never drift",
                &unowned,
                Some(&obs),
                all,
                Operation::Apply,
                Action::UpToDate,
                vec![],
            ),
            (
                "owner drift is corrected",
                &owned,
                Some(&obs),
                all,
                Operation::Apply,
                Action::Update,
                vec!["ALTER AUTHORIZATION ON SCHEMA::[s] TO [o'wner]]]"],
            ),
            (
                "owner drift without Update is reported",
                &owned,
                Some(&obs),
                policies(&["Observe"]),
                Operation::Apply,
                Action::DriftReported,
                vec![],
            ),
            (
                "delete drops",
                &owned,
                Some(&obs),
                all,
                Operation::Delete,
                Action::Delete,
                vec!["DROP SCHEMA [s]"],
            ),
            (
                "delete of a gone schema is done",
                &owned,
                None,
                all,
                Operation::Delete,
                Action::AlreadyGone,
                vec![],
            ),
            (
                "no Delete policy orphans",
                &owned,
                Some(&obs),
                policies(&["Observe", "Create", "Update"]),
                Operation::Delete,
                Action::Orphan,
                vec![],
            ),
            (
                "observe-only import of a missing schema",
                &owned,
                None,
                policies(&["Observe"]),
                Operation::Apply,
                Action::Missing,
                vec![],
            ),
        ];
        let name = SqlName::new("s").unwrap();
        for (why, desired, observed, policies, op, action, sql) in cases {
            let plan = plan(&name, desired, observed, policies, op).expect(why);
            assert_eq!(
                render(&plan),
                (action, sql.iter().map(|s| s.to_string()).collect()),
                "{why}"
            );
        }
    }
}
