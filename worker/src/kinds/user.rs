//! User: `sys.database_principals` + `sys.database_role_members`, in the user's database (its
//! own connection: Azure SQL Database has no `USE`).

use super::{Change, Operation, Plan, PlanError, decide, find, set_diff};
use crate::sql::{
    Param, Password, Row, Statement, hex, in_list,
    quote::{ident, quote_ident, quote_literal},
};
use apis::{
    identifier::SqlName,
    policies::Policies,
    request::{UserKind, UserRequest},
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// A user as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedUser {
    /// Name as stored.
    pub name: String,
    /// `DB_ID()` of the database it lives in.
    pub database_id: i64,
    /// `principal_id`.
    pub principal_id: i64,
    /// `type` (S, E, X, U, G).
    pub kind: String,
    /// `authentication_type`: 0 none, 1 instance (login), 2 database (contained), 4 external.
    pub authentication_type: i64,
    /// `sid`.
    pub sid: Option<Vec<u8>>,
    /// `SUSER_SNAME(sid)`: the login it maps to, if any.
    pub login: Option<String>,
    /// `default_schema_name`.
    pub default_schema: Option<String>,
    /// Database roles it is a member of.
    pub roles: BTreeSet<String>,
    /// `create_date`, ISO 8601.
    pub create_date: Option<String>,
}

impl ObservedUser {
    /// The API's user type for what the catalog shows.
    pub fn user_type(&self) -> &'static str {
        match (self.authentication_type, self.kind.as_str()) {
            (2, _) => "Contained",
            (4, _) | (_, "E" | "X") => "External",
            (0, _) => "WithoutLogin",
            _ => "ForLogin",
        }
    }
}

/// The batched observe batch for `names`, run in their database: principals, then role
/// memberships. One round trip.
pub fn observe_query(names: &[&SqlName]) -> (String, Vec<Param>) {
    let mut params = Vec::new();
    let list = in_list(names.iter().copied(), &mut params);
    let sql = format!(
        "SELECT DB_ID() AS database_id, p.name, p.principal_id, p.type, p.authentication_type, p.sid, \
         SUSER_SNAME(p.sid) AS login, p.default_schema_name, p.create_date \
         FROM sys.database_principals AS p WHERE p.type IN ('S', 'U', 'G', 'E', 'X') AND p.name IN ({list}); \
         SELECT m.name AS member, r.name AS role FROM sys.database_role_members AS rm \
         JOIN sys.database_principals AS r ON r.principal_id = rm.role_principal_id \
         JOIN sys.database_principals AS m ON m.principal_id = rm.member_principal_id \
         WHERE m.name IN ({list})"
    );
    (sql, params)
}

/// Parses the result sets of [`observe_query`], by name.
pub fn parse(sets: &[Vec<Row>]) -> BTreeMap<String, ObservedUser> {
    let empty = Vec::new();
    let mut out: BTreeMap<String, ObservedUser> = sets
        .first()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|r| {
            let name = r.text("name")?;
            Some((
                name.clone(),
                ObservedUser {
                    name,
                    database_id: r.int("database_id").unwrap_or_default(),
                    principal_id: r.int("principal_id").unwrap_or_default(),
                    kind: r.text("type").unwrap_or_default().trim().to_owned(),
                    authentication_type: r.int("authentication_type").unwrap_or(1),
                    sid: r.bytes("sid"),
                    login: r.text("login"),
                    default_schema: r.text("default_schema_name"),
                    roles: BTreeSet::new(),
                    create_date: r.text("create_date"),
                },
            ))
        })
        .collect();
    for r in sets.get(1).unwrap_or(&empty) {
        if let (Some(m), Some(role)) = (r.text("member"), r.text("role"))
            && let Some(o) = out.get_mut(&m)
        {
            o.roles.insert(role);
        }
    }
    out
}

/// Looks `name` up in parsed observations (collation-tolerant).
pub fn lookup<'a>(observed: &'a BTreeMap<String, ObservedUser>, name: &SqlName) -> Option<&'a ObservedUser> {
    find(observed, name.as_str())
}

/// Plans one user. `password` is the Secret's value (contained users); `rotate` says the
/// Secret changed since the password was last set (the caller tracks the Secret's version,
/// because SQL Server exposes no hash for contained users).
pub fn plan(
    name: &SqlName,
    desired: &UserRequest<SqlName>,
    observed: Option<&ObservedUser>,
    password: Option<&Password>,
    rotate: bool,
    policies: Policies,
    operation: Operation,
) -> Result<Plan, PlanError> {
    let n = ident(name)?;
    let db = Some(&desired.database);
    let st = |kind, sql: String| Statement::new(kind, db, sql);
    let alter = |what: String| st("ALTER USER", format!("ALTER USER {n} WITH {what}"));
    let password_lit = || -> Result<String, PlanError> {
        let secret = match &desired.kind {
            UserKind::Contained { password } => {
                format!("{}/{}[{}]", password.namespace, password.name, password.key)
            }
            _ => String::new(),
        };
        let pw = password.ok_or(PlanError::MissingSecret(secret))?;
        Ok(quote_literal(pw.expose())?)
    };
    let role_stmt = |role: &str, verb: &str| -> Result<Statement, PlanError> {
        Ok(st(
            "ALTER ROLE",
            format!("ALTER ROLE {} {verb} MEMBER {n}", quote_ident(role)?),
        ))
    };
    let roles: Vec<&str> = desired.roles.iter().map(SqlName::as_str).collect();
    let want_type = match desired.kind {
        UserKind::ForLogin { .. } => "ForLogin",
        UserKind::WithoutLogin => "WithoutLogin",
        UserKind::Contained { .. } => "Contained",
        UserKind::External { .. } => "External",
    };
    decide(
        policies,
        operation,
        observed.is_some(),
        || {
            let o = observed.cloned().unwrap_or_default();
            let mut changes = Vec::new();
            if o.user_type() != want_type {
                changes.push(Change::unfixable("type"));
            } else if let UserKind::ForLogin { login } = &desired.kind
                && !o
                    .login
                    .as_deref()
                    .is_some_and(|l| l.eq_ignore_ascii_case(login.as_str()))
            {
                // Re-points the SID: also the fix for users orphaned by a re-created login.
                changes.push(Change::fix(
                    "login",
                    vec![alter(format!("LOGIN = {}", ident(login)?))],
                ));
            } else if matches!(desired.kind, UserKind::Contained { .. }) && rotate {
                let lit = password_lit()?;
                changes.push(Change::fix(
                    "password",
                    vec![alter(format!("PASSWORD = {lit}")).with_secret(lit)],
                ));
            }
            if let Some(s) = &desired.default_schema
                && !o
                    .default_schema
                    .as_deref()
                    .is_some_and(|x| x.eq_ignore_ascii_case(s.as_str()))
            {
                changes.push(Change::fix(
                    "defaultSchema",
                    vec![alter(format!("DEFAULT_SCHEMA = {}", ident(s)?))],
                ));
            }
            let (add, drop) = set_diff(roles.iter().copied(), &o.roles);
            if !add.is_empty() || !drop.is_empty() {
                let mut fix = Vec::new();
                for r in &add {
                    fix.push(role_stmt(r, "ADD")?);
                }
                for r in &drop {
                    fix.push(role_stmt(r, "DROP")?);
                }
                changes.push(Change::fix("roles", fix));
            }
            Ok(changes)
        },
        || {
            let schema = desired.default_schema.as_ref().map(ident).transpose()?;
            let with_schema = schema
                .as_ref()
                .map(|s| format!(" WITH DEFAULT_SCHEMA = {s}"))
                .unwrap_or_default();
            let mut out = match &desired.kind {
                UserKind::ForLogin { login } => vec![st(
                    "CREATE USER",
                    format!("CREATE USER {n} FOR LOGIN {}{with_schema}", ident(login)?),
                )],
                UserKind::WithoutLogin => vec![st(
                    "CREATE USER",
                    format!("CREATE USER {n} WITHOUT LOGIN{with_schema}"),
                )],
                UserKind::Contained { .. } => {
                    let lit = password_lit()?;
                    let opts = schema
                        .as_ref()
                        .map(|s| format!(", DEFAULT_SCHEMA = {s}"))
                        .unwrap_or_default();
                    vec![
                        st(
                            "CREATE USER",
                            format!("CREATE USER {n} WITH PASSWORD = {lit}{opts}"),
                        )
                        .with_secret(lit),
                    ]
                }
                UserKind::External { object_id } => {
                    let mut sql = format!("CREATE USER {n} FROM EXTERNAL PROVIDER");
                    if let Some(id) = object_id {
                        sql.push_str(&format!(" WITH OBJECT_ID = {}", quote_literal(id)?));
                    }
                    let mut v = vec![st("CREATE USER", sql)];
                    if let Some(s) = &schema {
                        v.push(alter(format!("DEFAULT_SCHEMA = {s}")));
                    }
                    v
                }
            };
            for r in &roles {
                out.push(role_stmt(r, "ADD")?);
            }
            Ok(out)
        },
        || Ok(vec![st("DROP USER", format!("DROP USER {n}"))]),
    )
}

/// `status.atProvider` of a User.
pub fn at_provider(database: &SqlName, o: &ObservedUser) -> Value {
    json!({
        "id": format!("{}/{}", o.database_id, o.principal_id),
        "database": database.as_str(),
        "databaseId": o.database_id,
        "principalId": o.principal_id,
        "sid": o.sid.as_deref().map(hex),
        "type": o.user_type(),
        "login": o.login,
        "defaultSchema": o.default_schema,
        "roles": o.roles,
        "createDate": o.create_date,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{Action, policies, render};

    fn user(v: Value) -> UserRequest<SqlName> {
        serde_json::from_value(v).expect("request")
    }

    fn observed(auth: i64, login: Option<&str>) -> ObservedUser {
        ObservedUser {
            name: "u".into(),
            database_id: 5,
            principal_id: 7,
            kind: "S".into(),
            authentication_type: auth,
            sid: Some(vec![1]),
            login: login.map(str::to_owned),
            default_schema: Some("dbo".into()),
            roles: BTreeSet::new(),
            create_date: None,
        }
    }

    #[test]
    // A case table reads best as one tuple per row.
    #[allow(clippy::type_complexity)]
    fn golden_plans() {
        let all = policies(&["*"]);
        let for_login =
            user(json!({"database": "app", "kind": {"type": "ForLogin", "login": "l]x"}, "roles": []}));
        let full = user(json!({
            "database": "app", "kind": {"type": "ForLogin", "login": "l]x"},
            "defaultSchema": "sales", "roles": ["db_datareader", "app'role"]
        }));
        let without = user(
            json!({"database": "app", "kind": {"type": "WithoutLogin"}, "defaultSchema": "s", "roles": []}),
        );
        let contained = user(json!({
            "database": "app", "kind": {"type": "Contained", "password": {"namespace": "ns", "name": "u-pw", "key": "password"}},
            "defaultSchema": "s", "roles": []
        }));
        let external = user(json!({
            "database": "app", "kind": {"type": "External", "objectId": null}, "defaultSchema": "s", "roles": []
        }));
        let mapped = observed(1, Some("l]x"));
        let orphaned = observed(1, None);
        let mut extra_role = observed(1, Some("l]x"));
        extra_role.roles = ["db_owner".to_owned()].into();
        let mut contained_obs = observed(2, None);
        contained_obs.default_schema = Some("s".into());
        let cases: Vec<(
            &str,
            &UserRequest<SqlName>,
            Option<&ObservedUser>,
            bool,
            Policies,
            Operation,
            Action,
            Vec<&str>,
        )> = vec![
            (
                "create for a login",
                &for_login,
                None,
                false,
                all,
                Operation::Apply,
                Action::Create,
                vec!["CREATE USER [u] FOR LOGIN [l]]x]"],
            ),
            (
                "create with schema and roles",
                &full,
                None,
                false,
                all,
                Operation::Apply,
                Action::Create,
                vec![
                    "CREATE USER [u] FOR LOGIN [l]]x] WITH DEFAULT_SCHEMA = [sales]",
                    "ALTER ROLE [app'role] ADD MEMBER [u]",
                    "ALTER ROLE [db_datareader] ADD MEMBER [u]",
                ],
            ),
            (
                "create without login",
                &without,
                None,
                false,
                all,
                Operation::Apply,
                Action::Create,
                vec!["CREATE USER [u] WITHOUT LOGIN WITH DEFAULT_SCHEMA = [s]"],
            ),
            (
                "create contained: password masked, schema in the same WITH",
                &contained,
                None,
                false,
                all,
                Operation::Apply,
                Action::Create,
                vec!["CREATE USER [u] WITH PASSWORD = N'***', DEFAULT_SCHEMA = [s]"],
            ),
            (
                "create external: schema set afterwards",
                &external,
                None,
                false,
                all,
                Operation::Apply,
                Action::Create,
                vec![
                    "CREATE USER [u] FROM EXTERNAL PROVIDER",
                    "ALTER USER [u] WITH DEFAULT_SCHEMA = [s]",
                ],
            ),
            (
                "mapped as declared: up to date",
                &for_login,
                Some(&mapped),
                false,
                all,
                Operation::Apply,
                Action::UpToDate,
                vec![],
            ),
            (
                "orphaned by a re-created login: re-map instead of re-create",
                &for_login,
                Some(&orphaned),
                false,
                all,
                Operation::Apply,
                Action::Update,
                vec!["ALTER USER [u] WITH LOGIN = [l]]x]"],
            ),
            (
                "roles are an exact set; schema drift fixed too",
                &full,
                Some(&extra_role),
                false,
                all,
                Operation::Apply,
                Action::Update,
                vec![
                    "ALTER USER [u] WITH DEFAULT_SCHEMA = [sales]",
                    "ALTER ROLE [app'role] ADD MEMBER [u]",
                    "ALTER ROLE [db_datareader] ADD MEMBER [u]",
                    "ALTER ROLE [db_owner] DROP MEMBER [u]",
                ],
            ),
            (
                "contained, Secret unchanged: up to date",
                &contained,
                Some(&contained_obs),
                false,
                all,
                Operation::Apply,
                Action::UpToDate,
                vec![],
            ),
            (
                "contained, Secret changed: password reset",
                &contained,
                Some(&contained_obs),
                true,
                all,
                Operation::Apply,
                Action::Update,
                vec!["ALTER USER [u] WITH PASSWORD = N'***'"],
            ),
            (
                "a WITHOUT LOGIN user where a mapped one is declared: type cannot change",
                &without,
                Some(&mapped),
                false,
                all,
                Operation::Apply,
                Action::Update,
                vec!["ALTER USER [u] WITH DEFAULT_SCHEMA = [s]"],
            ),
            (
                "drift without Update: reported",
                &full,
                Some(&extra_role),
                false,
                policies(&["Observe", "Create", "Delete"]),
                Operation::Apply,
                Action::DriftReported,
                vec![],
            ),
            (
                "delete drops",
                &for_login,
                Some(&mapped),
                false,
                all,
                Operation::Delete,
                Action::Delete,
                vec!["DROP USER [u]"],
            ),
            (
                "delete of a gone user is done",
                &for_login,
                None,
                false,
                all,
                Operation::Delete,
                Action::AlreadyGone,
                vec![],
            ),
            (
                "no Delete policy orphans",
                &for_login,
                Some(&mapped),
                false,
                policies(&["Observe", "Create", "Update"]),
                Operation::Delete,
                Action::Orphan,
                vec![],
            ),
            (
                "observe-only import of a missing user",
                &for_login,
                None,
                false,
                policies(&["Observe"]),
                Operation::Apply,
                Action::Missing,
                vec![],
            ),
        ];
        let name = SqlName::new("u").unwrap();
        let pw = Password::new("C0ntained!pw");
        for (why, desired, observed, rotate, policies, op, action, sql) in cases {
            let plan = plan(&name, desired, observed, Some(&pw), rotate, policies, op).expect(why);
            assert_eq!(
                render(&plan),
                (action, sql.iter().map(|s| s.to_string()).collect()),
                "{why}"
            );
            assert!(
                plan.statements
                    .iter()
                    .all(|s| s.database.as_ref().map(SqlName::as_str) == Some("app")),
                "{why}: runs in its database"
            );
        }
    }
}
