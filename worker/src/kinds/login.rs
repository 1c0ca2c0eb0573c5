//! Login: `sys.server_principals` + `sys.sql_logins` + `sys.server_role_members`, from `master`.
//! Password rotation compares the Secret with `password_hash` in the worker
//! ([`crate::sql::password`]), so nothing derived from the password is ever stored.

use super::{Change, Operation, Plan, PlanError, decide, find, set_diff};
use crate::sql::{
    Param, Password, Row, Statement, hex, in_list,
    password::{PasswordState, compare},
    quote::{ident, quote_ident, quote_literal},
};
use apis::{
    identifier::SqlName,
    policies::Policies,
    request::{LoginKind, LoginRequest},
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// A login as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedLogin {
    /// Name as stored.
    pub name: String,
    /// `principal_id`.
    pub principal_id: i64,
    /// `sid`.
    pub sid: Vec<u8>,
    /// `type`: S (SQL), E (external), X (external group), or another type we do not manage.
    pub kind: String,
    /// `is_disabled`.
    pub disabled: bool,
    /// `default_database_name`.
    pub default_database: Option<String>,
    /// `default_language_name`.
    pub default_language: Option<String>,
    /// `is_policy_checked` (SQL logins).
    pub check_policy: Option<bool>,
    /// `is_expiration_checked` (SQL logins).
    pub check_expiration: Option<bool>,
    /// `password_hash` (SQL logins; NULL without CONTROL SERVER). Compared, never stored.
    pub password_hash: Option<Vec<u8>>,
    /// Server roles it is a member of.
    pub server_roles: BTreeSet<String>,
    /// Its open sessions (read only when a delete must end them).
    pub sessions: Vec<i64>,
    /// `create_date`, ISO 8601.
    pub create_date: Option<String>,
}

/// The batched observe batch for `names` (run in `master`): principals, then role
/// memberships, then (when `with_sessions`) their sessions. One round trip.
pub fn observe_query(names: &[&SqlName], with_sessions: bool) -> (String, Vec<Param>) {
    let mut params = Vec::new();
    let list = in_list(names.iter().copied(), &mut params);
    let mut sql = format!(
        "SELECT p.name, p.principal_id, p.sid, p.type, p.is_disabled, p.default_database_name, \
         p.default_language_name, p.create_date, l.is_policy_checked, l.is_expiration_checked, l.password_hash \
         FROM sys.server_principals AS p LEFT JOIN sys.sql_logins AS l ON l.principal_id = p.principal_id \
         WHERE p.type IN ('S', 'E', 'X') AND p.name IN ({list}); \
         SELECT m.name AS member, r.name AS role FROM sys.server_role_members AS rm \
         JOIN sys.server_principals AS r ON r.principal_id = rm.role_principal_id \
         JOIN sys.server_principals AS m ON m.principal_id = rm.member_principal_id \
         WHERE m.name IN ({list})"
    );
    if with_sessions {
        sql.push_str(&format!(
            "; SELECT s.login_name, s.session_id FROM sys.dm_exec_sessions AS s \
             WHERE s.login_name IN ({list}) AND s.session_id <> @@SPID"
        ));
    }
    (sql, params)
}

/// Parses the result sets of [`observe_query`], by name.
pub fn parse(sets: &[Vec<Row>]) -> BTreeMap<String, ObservedLogin> {
    let empty = Vec::new();
    let mut out: BTreeMap<String, ObservedLogin> = sets
        .first()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|r| {
            let name = r.text("name")?;
            Some((
                name.clone(),
                ObservedLogin {
                    name,
                    principal_id: r.int("principal_id").unwrap_or_default(),
                    sid: r.bytes("sid").unwrap_or_default(),
                    kind: r.text("type").unwrap_or_default().trim().to_owned(),
                    disabled: r.bool("is_disabled").unwrap_or(false),
                    default_database: r.text("default_database_name"),
                    default_language: r.text("default_language_name"),
                    check_policy: r.bool("is_policy_checked"),
                    check_expiration: r.bool("is_expiration_checked"),
                    password_hash: r.bytes("password_hash"),
                    server_roles: BTreeSet::new(),
                    sessions: Vec::new(),
                    create_date: r.text("create_date"),
                },
            ))
        })
        .collect();
    for r in sets.get(1).unwrap_or(&empty) {
        if let (Some(m), Some(role)) = (r.text("member"), r.text("role"))
            && let Some(o) = out.get_mut(&m)
        {
            o.server_roles.insert(role);
        }
    }
    for r in sets.get(2).unwrap_or(&empty) {
        if let (Some(l), Some(id)) = (r.text("login_name"), r.int("session_id"))
            && let Some(o) = out.get_mut(&l)
        {
            o.sessions.push(id);
        }
    }
    out
}

/// Looks `name` up in parsed observations (collation-tolerant).
pub fn lookup<'a>(
    observed: &'a BTreeMap<String, ObservedLogin>,
    name: &SqlName,
) -> Option<&'a ObservedLogin> {
    find(observed, name.as_str())
}

fn on_off(b: bool) -> &'static str {
    if b { "ON" } else { "OFF" }
}

/// Plans one login. `password` is the Secret's current value (SQL logins), when readable.
pub fn plan(
    name: &SqlName,
    desired: &LoginRequest,
    observed: Option<&ObservedLogin>,
    password: Option<&Password>,
    policies: Policies,
    operation: Operation,
) -> Result<Plan, PlanError> {
    let n = ident(name)?;
    let st = |kind, sql: String| Statement::new(kind, None, sql);
    let alter = |what: String| st("ALTER LOGIN", format!("ALTER LOGIN {n} {what}"));
    let secret_name = match &desired.kind {
        LoginKind::Sql { password, .. } => {
            format!("{}/{}[{}]", password.namespace, password.name, password.key)
        }
        LoginKind::External { .. } => String::new(),
    };
    let password_stmt = |prefix: String| -> Result<Statement, PlanError> {
        let pw = password.ok_or_else(|| PlanError::MissingSecret(secret_name.clone()))?;
        let lit = quote_literal(pw.expose())?;
        Ok(st(
            if prefix.starts_with("CREATE") {
                "CREATE LOGIN"
            } else {
                "ALTER LOGIN"
            },
            format!("{prefix}{lit}"),
        )
        .with_secret(lit))
    };
    let role_stmt = |role: &str, verb: &str| -> Result<Statement, PlanError> {
        Ok(st(
            "ALTER SERVER ROLE",
            format!("ALTER SERVER ROLE {} {verb} MEMBER {n}", quote_ident(role)?),
        ))
    };
    let roles: Vec<&str> = desired.server_roles.iter().map(SqlName::as_str).collect();
    decide(
        policies,
        operation,
        observed.is_some(),
        || {
            let o = observed.cloned().unwrap_or_default();
            let mut changes = Vec::new();
            let want_kind = match desired.kind {
                LoginKind::Sql { .. } => "S",
                LoginKind::External { .. } => "E",
            };
            let kind_matches = o.kind == want_kind || (want_kind == "E" && o.kind == "X");
            if !kind_matches {
                changes.push(Change::unfixable("type"));
            }
            if let LoginKind::Sql {
                check_policy,
                check_expiration,
                ..
            } = desired.kind
                && kind_matches
            {
                if let Some(pw) = password
                    && compare(pw.expose(), o.password_hash.as_deref()) == PasswordState::Differs
                {
                    changes.push(Change::fix(
                        "password",
                        vec![password_stmt(format!("ALTER LOGIN {n} WITH PASSWORD = "))?],
                    ));
                }
                // CHECK_EXPIRATION = ON needs CHECK_POLICY = ON at every step (error 15122):
                // expiration off first, then policy, then expiration on.
                let mut fix = Vec::new();
                let exp_differs = o.check_expiration != Some(check_expiration);
                let pol_differs = o.check_policy != Some(check_policy);
                if exp_differs && !check_expiration {
                    fix.push(alter("WITH CHECK_EXPIRATION = OFF".into()));
                }
                if pol_differs {
                    fix.push(alter(format!("WITH CHECK_POLICY = {}", on_off(check_policy))));
                }
                if exp_differs && check_expiration {
                    fix.push(alter("WITH CHECK_EXPIRATION = ON".into()));
                }
                if pol_differs {
                    changes.push(Change::fix("checkPolicy", Vec::new()));
                }
                if exp_differs {
                    changes.push(Change::fix("checkExpiration", Vec::new()));
                }
                if let Some(last) = changes.last_mut()
                    && !fix.is_empty()
                {
                    last.fix = Some(fix);
                }
            }
            if let Some(d) = &desired.default_database
                && !o
                    .default_database
                    .as_deref()
                    .is_some_and(|x| x.eq_ignore_ascii_case(d.as_str()))
            {
                changes.push(Change::fix(
                    "defaultDatabase",
                    vec![alter(format!("WITH DEFAULT_DATABASE = {}", ident(d)?))],
                ));
            }
            if let Some(l) = &desired.default_language
                && !o
                    .default_language
                    .as_deref()
                    .is_some_and(|x| x.eq_ignore_ascii_case(l))
            {
                changes.push(Change::fix(
                    "defaultLanguage",
                    vec![alter(format!("WITH DEFAULT_LANGUAGE = {}", quote_ident(l)?))],
                ));
            }
            if o.disabled != desired.disabled {
                let what = if desired.disabled { "DISABLE" } else { "ENABLE" };
                changes.push(Change::fix("disabled", vec![alter(what.into())]));
            }
            let (add, drop) = set_diff(roles.iter().copied(), &o.server_roles);
            if !add.is_empty() || !drop.is_empty() {
                let mut fix = Vec::new();
                for r in &add {
                    fix.push(role_stmt(r, "ADD")?);
                }
                for r in &drop {
                    fix.push(role_stmt(r, "DROP")?);
                }
                changes.push(Change::fix("serverRoles", fix));
            }
            Ok(changes)
        },
        || {
            let mut out = Vec::new();
            match &desired.kind {
                LoginKind::Sql {
                    check_policy,
                    check_expiration,
                    ..
                } => {
                    let mut opts = String::new();
                    if let Some(d) = &desired.default_database {
                        opts.push_str(&format!(", DEFAULT_DATABASE = {}", ident(d)?));
                    }
                    if let Some(l) = &desired.default_language {
                        opts.push_str(&format!(", DEFAULT_LANGUAGE = {}", quote_ident(l)?));
                    }
                    opts.push_str(&format!(
                        ", CHECK_EXPIRATION = {}, CHECK_POLICY = {}",
                        on_off(*check_expiration),
                        on_off(*check_policy)
                    ));
                    let mut create = password_stmt(format!("CREATE LOGIN {n} WITH PASSWORD = "))?;
                    create.sql.push_str(&opts);
                    out.push(create);
                }
                LoginKind::External { object_id } => {
                    let mut sql = format!("CREATE LOGIN {n} FROM EXTERNAL PROVIDER");
                    if let Some(id) = object_id {
                        sql.push_str(&format!(" WITH OBJECT_ID = {}", quote_literal(id)?));
                    }
                    out.push(st("CREATE LOGIN", sql));
                    // FROM EXTERNAL PROVIDER takes no other options: set them afterwards.
                    if let Some(d) = &desired.default_database {
                        out.push(alter(format!("WITH DEFAULT_DATABASE = {}", ident(d)?)));
                    }
                    if let Some(l) = &desired.default_language {
                        out.push(alter(format!("WITH DEFAULT_LANGUAGE = {}", quote_ident(l)?)));
                    }
                }
            }
            if desired.disabled {
                out.push(alter("DISABLE".into()));
            }
            for r in &roles {
                out.push(role_stmt(r, "ADD")?);
            }
            Ok(out)
        },
        || {
            let mut out = Vec::new();
            if desired.terminate_sessions_on_delete {
                // Session ids are integers read from the catalog: nothing to quote. Sessions
                // opened after the read make DROP fail with 15434 (InUse) and the item retries.
                for id in observed.map(|o| o.sessions.as_slice()).unwrap_or_default() {
                    out.push(st("KILL", format!("KILL {id}")));
                }
            }
            out.push(st("DROP LOGIN", format!("DROP LOGIN {n}")));
            Ok(out)
        },
    )
}

/// `status.atProvider` of a Login.
pub fn at_provider(o: &ObservedLogin) -> Value {
    json!({
        "id": hex(&o.sid),
        "principalId": o.principal_id,
        "sid": hex(&o.sid),
        "type": match o.kind.as_str() { "S" => "Sql", "E" => "External", "X" => "ExternalGroup", other => other },
        "disabled": o.disabled,
        "defaultDatabase": o.default_database,
        "defaultLanguage": o.default_language,
        "checkPolicy": o.check_policy,
        "checkExpiration": o.check_expiration,
        "serverRoles": o.server_roles,
        "createDate": o.create_date,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{Action, policies, render};

    fn login(v: Value) -> LoginRequest {
        serde_json::from_value(v).expect("request")
    }

    fn sql_login(extra: Value) -> LoginRequest {
        let mut base = json!({
            "kind": {"type": "Sql", "password": {"namespace": "ns", "name": "app-pw", "key": "password"},
                     "checkPolicy": true, "checkExpiration": false},
            "disabled": false, "serverRoles": [], "terminateSessionsOnDelete": false
        });
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        login(base)
    }

    fn hash_of(pw: &str) -> Vec<u8> {
        use sha2::{Digest, Sha512};
        let salt = [9u8, 8, 7, 6];
        let mut h = Sha512::new();
        for u in pw.encode_utf16() {
            h.update(u.to_le_bytes());
        }
        h.update(salt);
        let mut out = vec![2, 0];
        out.extend_from_slice(&salt);
        out.extend_from_slice(&h.finalize());
        out
    }

    fn observed(pw: &str) -> ObservedLogin {
        ObservedLogin {
            name: "app".into(),
            principal_id: 260,
            sid: vec![1, 2],
            kind: "S".into(),
            disabled: false,
            default_database: Some("master".into()),
            default_language: Some("us_english".into()),
            check_policy: Some(true),
            check_expiration: Some(false),
            password_hash: Some(hash_of(pw)),
            server_roles: BTreeSet::new(),
            sessions: vec![],
            create_date: None,
        }
    }

    #[test]
    // A case table reads best as one tuple per row.
    #[allow(clippy::type_complexity)]
    fn golden_plans() {
        let pw = Password::new("Str0ng!Pass'word");
        let all = policies(&["*"]);
        let plain = sql_login(json!({}));
        let full = sql_login(json!({
            "kind": {"type": "Sql", "password": {"namespace": "ns", "name": "app-pw", "key": "password"},
                     "checkPolicy": true, "checkExpiration": true},
            "defaultDatabase": "app]db", "defaultLanguage": "British", "disabled": true,
            "serverRoles": ["dbcreator", "##MS_DatabaseConnector##"], "terminateSessionsOnDelete": true
        }));
        let external = login(json!({
            "kind": {"type": "External", "objectId": "00000000-0000-0000-0000-000000000001"},
            "defaultDatabase": "app", "disabled": false, "serverRoles": [], "terminateSessionsOnDelete": false
        }));
        let same = observed("Str0ng!Pass'word");
        let rotated = observed("Old!Passw0rd");
        let mut drifted = observed("Str0ng!Pass'word");
        drifted.server_roles = ["sysadmin".to_owned()].into();
        let mut with_sessions = observed("x");
        with_sessions.sessions = vec![53, 61];
        let mut ext_obs = observed("x");
        ext_obs.kind = "E".into();
        ext_obs.default_database = Some("app".into());
        ext_obs.password_hash = None;
        let mut policy_off = observed("Str0ng!Pass'word");
        policy_off.check_policy = Some(false);
        let cases: Vec<(
            &str,
            &LoginRequest,
            Option<&ObservedLogin>,
            Policies,
            Operation,
            Action,
            Vec<&str>,
        )> = vec![
            (
                "create SQL login: password literal masked, policy flags explicit",
                &plain,
                None,
                all,
                Operation::Apply,
                Action::Create,
                vec!["CREATE LOGIN [app] WITH PASSWORD = N'***', CHECK_EXPIRATION = OFF, CHECK_POLICY = ON"],
            ),
            (
                "create with every field: options, then DISABLE, then each role",
                &full,
                None,
                all,
                Operation::Apply,
                Action::Create,
                vec![
                    "CREATE LOGIN [app] WITH PASSWORD = N'***', DEFAULT_DATABASE = [app]]db], DEFAULT_LANGUAGE = [British], CHECK_EXPIRATION = ON, CHECK_POLICY = ON",
                    "ALTER LOGIN [app] DISABLE",
                    "ALTER SERVER ROLE [##MS_DatabaseConnector##] ADD MEMBER [app]",
                    "ALTER SERVER ROLE [dbcreator] ADD MEMBER [app]",
                ],
            ),
            (
                "create external login: options that FROM EXTERNAL PROVIDER cannot take come after",
                &external,
                None,
                all,
                Operation::Apply,
                Action::Create,
                vec![
                    "CREATE LOGIN [app] FROM EXTERNAL PROVIDER WITH OBJECT_ID = N'00000000-0000-0000-0000-000000000001'",
                    "ALTER LOGIN [app] WITH DEFAULT_DATABASE = [app]",
                ],
            ),
            (
                "same password and settings: up to date",
                &plain,
                Some(&same),
                all,
                Operation::Apply,
                Action::UpToDate,
                vec![],
            ),
            (
                "external login as observed: up to date (no password to compare)",
                &external,
                Some(&ext_obs),
                all,
                Operation::Apply,
                Action::UpToDate,
                vec![],
            ),
            (
                "Secret changed: rotate, detected by hash comparison",
                &plain,
                Some(&rotated),
                all,
                Operation::Apply,
                Action::Update,
                vec!["ALTER LOGIN [app] WITH PASSWORD = N'***'"],
            ),
            (
                "rotation without Update is reported only",
                &plain,
                Some(&rotated),
                policies(&["Observe", "Create", "Delete"]),
                Operation::Apply,
                Action::DriftReported,
                vec![],
            ),
            (
                "server roles are an exact set: add declared, drop undeclared",
                &plain,
                Some(&drifted),
                all,
                Operation::Apply,
                Action::Update,
                vec!["ALTER SERVER ROLE [sysadmin] DROP MEMBER [app]"],
            ),
            (
                "every field drifted: policy before expiration, since expiration needs policy",
                &full,
                Some(&policy_off),
                all,
                Operation::Apply,
                Action::Update,
                vec![
                    "ALTER LOGIN [app] WITH CHECK_POLICY = ON",
                    "ALTER LOGIN [app] WITH CHECK_EXPIRATION = ON",
                    "ALTER LOGIN [app] WITH DEFAULT_DATABASE = [app]]db]",
                    "ALTER LOGIN [app] WITH DEFAULT_LANGUAGE = [British]",
                    "ALTER LOGIN [app] DISABLE",
                    "ALTER SERVER ROLE [##MS_DatabaseConnector##] ADD MEMBER [app]",
                    "ALTER SERVER ROLE [dbcreator] ADD MEMBER [app]",
                ],
            ),
            (
                "SQL login where an external one is declared: the type cannot change in place (noted), the rest is fixed",
                &external,
                Some(&same),
                all,
                Operation::Apply,
                Action::Update,
                vec!["ALTER LOGIN [app] WITH DEFAULT_DATABASE = [app]"],
            ),
            (
                "delete drops",
                &plain,
                Some(&same),
                all,
                Operation::Delete,
                Action::Delete,
                vec!["DROP LOGIN [app]"],
            ),
            (
                "delete with terminateSessionsOnDelete kills the observed sessions first",
                &full,
                Some(&with_sessions),
                all,
                Operation::Delete,
                Action::Delete,
                vec!["KILL 53", "KILL 61", "DROP LOGIN [app]"],
            ),
            (
                "delete without terminate leaves sessions alone (DROP reports InUse)",
                &plain,
                Some(&with_sessions),
                all,
                Operation::Delete,
                Action::Delete,
                vec!["DROP LOGIN [app]"],
            ),
            (
                "delete of a gone login is done",
                &plain,
                None,
                all,
                Operation::Delete,
                Action::AlreadyGone,
                vec![],
            ),
            (
                "no Delete policy orphans",
                &plain,
                Some(&same),
                policies(&["Observe", "Create", "Update"]),
                Operation::Delete,
                Action::Orphan,
                vec![],
            ),
            (
                "observe-only import of a missing login",
                &plain,
                None,
                policies(&["Observe"]),
                Operation::Apply,
                Action::Missing,
                vec![],
            ),
        ];
        let name = SqlName::new("app").unwrap();
        for (why, desired, observed, policies, op, action, sql) in cases {
            let plan = plan(&name, desired, observed, Some(&pw), policies, op).expect(why);
            assert_eq!(
                render(&plan),
                (action, sql.iter().map(|s| s.to_string()).collect()),
                "{why}"
            );
        }
    }

    #[test]
    fn type_change_is_noted() {
        let name = SqlName::new("app").unwrap();
        let external = login(json!({
            "kind": {"type": "External"}, "disabled": false, "serverRoles": [], "terminateSessionsOnDelete": false
        }));
        let p = plan(
            &name,
            &external,
            Some(&observed("x")),
            None,
            policies(&["*"]),
            Operation::Apply,
        )
        .unwrap();
        assert_eq!(p.action, Action::DriftReported);
        assert_eq!(p.drift, vec!["type"]);
        assert!(p.note.unwrap().contains("cannot change type in place"));
    }

    #[test]
    fn create_without_secret_value_is_a_plan_error() {
        let name = SqlName::new("app").unwrap();
        let e = plan(
            &name,
            &sql_login(json!({})),
            None,
            None,
            policies(&["*"]),
            Operation::Apply,
        )
        .unwrap_err();
        assert_eq!(e.label(), "MissingSecret");
        assert!(e.to_string().contains("ns/app-pw[password]"));
    }

    #[test]
    fn unknown_hash_never_rotates() {
        let name = SqlName::new("app").unwrap();
        let mut o = observed("whatever");
        o.password_hash = None;
        let p = plan(
            &name,
            &sql_login(json!({})),
            Some(&o),
            Some(&Password::new("x")),
            policies(&["*"]),
            Operation::Apply,
        )
        .unwrap();
        assert_eq!(p.action, Action::UpToDate);
    }
}
