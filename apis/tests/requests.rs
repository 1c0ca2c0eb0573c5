//! Managed resources and configs, written as users write them (inline YAML), converted to the
//! validated request types. Each case says why it exists.

use apis::{
    config::{CaSource, Credentials, ServerConfig, TlsMode, parse_go_duration},
    generated::{
        clusterproviderconfigs::ClusterProviderConfig, databases::Database, logins::Login,
        providerconfigs::ProviderConfig, schemas::Schema, users::User,
    },
    identifier::SqlName,
    policies::Policies,
    request::{
        ConfigKind, Desired, LoginKind, Managed, RecoveryModel, SchemaRequest, SecretKeyRef, Target,
        UserKind, UserRequest,
    },
};

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("fixture does not parse: {e}\n{text}"))
}

fn name(s: &str) -> SqlName {
    SqlName::new(s).unwrap()
}

/// A Database with the given external name and forProvider body.
fn database(external_name: &str, for_provider: &str) -> Database {
    yaml(&format!(
        r#"
apiVersion: sqlserver.kubesql.io/v1alpha1
kind: Database
metadata:
  name: app
  namespace: team-a
  annotations:
    crossplane.io/external-name: {external_name}
spec:
  forProvider: {for_provider}
"#,
        external_name = serde_json::to_string(external_name).unwrap()
    ))
}

#[test]
fn database_defaults_match_the_crd() {
    let db: Database = yaml(
        r#"
apiVersion: sqlserver.kubesql.io/v1alpha1
kind: Database
metadata: {name: app, namespace: team-a}
spec:
  forProvider: {}
"#,
    );
    let req = Managed::try_from(&db).unwrap();
    // Objects built in Rust never saw the apiserver's defaulting: the conversion applies it.
    assert_eq!(
        req.external_name,
        name("app"),
        "external name defaults to metadata.name"
    );
    assert_eq!(req.policies, Policies::ALL, "managementPolicies defaults to [*]");
    assert_eq!(req.config.kind, ConfigKind::ClusterProviderConfig);
    assert_eq!(req.config.name, "default");
    assert!(!req.for_provider.terminate_sessions_on_delete);
    assert_eq!(
        req.for_provider.recovery_model, None,
        "unset options are left to the server"
    );
}

#[test]
fn database_fields_are_carried_over() {
    let db = database(
        "app",
        "{collation: Latin1_General_100_CI_AS_SC_UTF8, recoveryModel: Simple, compatibilityLevel: 160, containment: Partial, owner: app_owner, terminateSessionsOnDelete: true}",
    );
    let req = Managed::try_from(&db).unwrap().for_provider;
    assert_eq!(req.collation.as_deref(), Some("Latin1_General_100_CI_AS_SC_UTF8"));
    assert_eq!(req.recovery_model, Some(RecoveryModel::Simple));
    assert_eq!(req.compatibility_level, Some(160));
    assert_eq!(req.owner, Some(name("app_owner")));
    assert!(req.terminate_sessions_on_delete);
}

/// The external name is where hostile input arrives unchecked by CEL (annotations have no
/// schema), so this table is the one that matters.
#[test]
fn hostile_external_names() {
    let n128 = "x".repeat(128);
    let n129 = "x".repeat(129);
    let cases: Vec<(&str, &str, bool)> = vec![
        (
            "a closing bracket is a legal name; quoting doubles it",
            "a]b",
            true,
        ),
        ("a lone bracket", "]", true),
        ("an opening bracket", "[", true),
        ("a single quote, which matters inside N'…' literals", "it's", true),
        ("a comment after a terminator", ";--", true),
        (
            "a full injection attempt is still only a name",
            "x]; DROP DATABASE master; --",
            true,
        ),
        ("Unicode", "Ünïcødé_数据库", true),
        ("128 characters is sysname's limit", &n128, true),
        ("129 characters is error 103", &n129, false),
        ("whitespace only", "   ", false),
        ("NUL", "a\u{0}b", false),
        ("a tab", "a\tb", false),
        ("trailing space aliases another name", "app ", false),
    ];
    for (why, external, ok) in cases {
        let result = Managed::try_from(&database(external, "{}"));
        assert_eq!(result.is_ok(), ok, "{why}: {external:?} → {result:?}");
        if let Ok(req) = result {
            assert_eq!(
                req.external_name.as_str(),
                external,
                "{why}: the name is kept exactly"
            );
        } else {
            let err = result.unwrap_err().to_string();
            assert!(
                err.contains("crossplane.io/external-name"),
                "{why}: the error names the field: {err}"
            );
        }
    }
    // An empty annotation means "not set" (Crossplane initializes it from metadata.name).
    assert_eq!(
        Managed::try_from(&database("", "{}")).unwrap().external_name,
        name("app")
    );
}

#[test]
fn database_rejects_what_the_server_would() {
    let cases = [
        (
            "compatibility level the server does not know (15048)",
            "{compatibilityLevel: 90}",
            "compatibility_level",
        ),
        (
            "collation with characters no collation has",
            "{collation: \"Latin1; DROP\"}",
            "collation",
        ),
        ("owner with a control character", "{owner: \"a\\u0001\"}", "owner"),
    ];
    for (why, for_provider, field) in cases {
        let err = Managed::try_from(&database("app", for_provider)).unwrap_err();
        assert!(err.to_string().contains(field), "{why}: {err}");
    }
}

#[test]
fn management_policies() {
    let mut db = database("app", "{}");
    db.spec.management_policies = Some(vec!["Observe".into()]);
    let req = Managed::try_from(&db).unwrap();
    assert!(
        req.policies.observe && !req.policies.create,
        "Observe-only import"
    );
    db.spec.management_policies = Some(vec!["Observe".into(), "Delete".into()]);
    let err = Managed::try_from(&db).unwrap_err().to_string();
    assert!(
        err.contains("spec.managementPolicies"),
        "unsupported combination is reported: {err}"
    );
}

fn login(for_provider: &str) -> Login {
    yaml(&format!(
        r#"
apiVersion: sqlserver.kubesql.io/v1alpha1
kind: Login
metadata: {{name: app-login, namespace: team-a}}
spec:
  forProvider: {for_provider}
  writeConnectionSecretToRef: {{name: app-login-conn}}
"#
    ))
}

#[test]
fn sql_login_without_secret_ref_uses_the_generated_secret() {
    let req = Managed::try_from(&login("{}")).unwrap();
    let LoginKind::Sql {
        password,
        check_policy,
        check_expiration,
    } = &req.for_provider.kind
    else {
        panic!("type defaults to Sql");
    };
    assert_eq!(
        password,
        &SecretKeyRef {
            namespace: "team-a".into(),
            name: "app-login-password".into(),
            key: "password".into()
        }
    );
    assert!(
        *check_policy && !*check_expiration,
        "CRD defaults: policy on, expiration off"
    );
    assert_eq!(req.connection_secret.as_deref(), Some("app-login-conn"));
}

#[test]
fn login_cases() {
    // (why, forProvider, ok)
    let cases = [
        (
            "explicit secret and key",
            "{passwordSecretRef: {name: s, key: pw}}",
            true,
        ),
        (
            "server roles as a set",
            "{serverRoles: [dbcreator, securityadmin]}",
            true,
        ),
        (
            "a role listed twice is a mistake worth reporting",
            "{serverRoles: [dbcreator, dbcreator]}",
            false,
        ),
        (
            "expiration without policy is error 15122 on the server",
            "{checkPolicy: false, checkExpiration: true}",
            false,
        ),
        (
            "external login with an object id",
            "{type: External, externalObjectId: 6f1c1d2e-1111-2222-3333-444455556666}",
            true,
        ),
        (
            "a password makes no sense for an Entra login",
            "{type: External, passwordSecretRef: {name: s}}",
            false,
        ),
        (
            "object ids are GUIDs",
            "{type: External, externalObjectId: not-a-guid}",
            false,
        ),
        (
            "object id only for External",
            "{externalObjectId: 6f1c1d2e-1111-2222-3333-444455556666}",
            false,
        ),
        (
            "default database is an identifier",
            "{defaultDatabase: \"app]db\"}",
            true,
        ),
        (
            "language names are plain",
            "{defaultLanguage: \"us_english'; --\"}",
            false,
        ),
    ];
    for (why, for_provider, ok) in cases {
        let result = Managed::try_from(&login(for_provider));
        assert_eq!(result.is_ok(), ok, "{why}: {result:?}");
    }
}

fn user(for_provider: &str) -> User {
    yaml(&format!(
        r#"
apiVersion: sqlserver.kubesql.io/v1alpha1
kind: User
metadata: {{name: app-user, namespace: team-a}}
spec:
  forProvider: {for_provider}
"#
    ))
}

#[test]
fn user_cases() {
    let cases = [
        (
            "mapped to a login by value",
            "{database: app, login: app-login}",
            true,
        ),
        (
            "database by reference, login by selector",
            "{databaseRef: {name: app}, loginSelector: {matchControllerRef: true}}",
            true,
        ),
        ("database is required", "{login: app-login}", false),
        (
            "value and reference at once is ambiguous",
            "{database: app, databaseRef: {name: app}, login: l}",
            false,
        ),
        ("ForLogin needs a login", "{database: app}", false),
        (
            "contained user, password generated",
            "{database: app, type: Contained}",
            true,
        ),
        (
            "a login on a contained user contradicts it",
            "{database: app, type: Contained, login: l}",
            false,
        ),
        (
            "password only for contained users (error 33233)",
            "{database: app, login: l, passwordSecretRef: {name: s}}",
            false,
        ),
        (
            "without login",
            "{database: app, type: WithoutLogin, defaultSchema: sales}",
            true,
        ),
        (
            "external with object id",
            "{database: app, type: External, externalObjectId: 6f1c1d2e-1111-2222-3333-444455556666}",
            true,
        ),
        (
            "a selector that selects everything is refused",
            "{database: app, loginSelector: {}}",
            false,
        ),
        (
            "roles with hostile names are still names",
            "{database: app, login: l, roles: [\"db_datareader\", \"r]; --\"]}",
            true,
        ),
        (
            "an empty role name",
            "{database: app, login: l, roles: [\"\"]}",
            false,
        ),
    ];
    for (why, for_provider, ok) in cases {
        let result = Managed::try_from(&user(for_provider));
        assert_eq!(result.is_ok(), ok, "{why}: {result:?}");
    }
}

#[test]
fn user_targets_and_resolution() {
    let req = Managed::try_from(&user(
        "{databaseRef: {name: app-db, policy: {resolve: Always}}, loginSelector: {matchLabels: {app: x}}, type: ForLogin, roles: [db_owner]}",
    ))
    .unwrap()
    .for_provider;
    let Target::Ref(db_ref) = &req.database else {
        panic!("databaseRef becomes a Ref target")
    };
    assert_eq!(db_ref.name, "app-db");
    assert!(db_ref.policy.resolve_always && !db_ref.policy.optional);
    let UserKind::ForLogin {
        login: Target::Selector(sel),
    } = &req.kind
    else {
        panic!("loginSelector")
    };
    assert_eq!(sel.match_labels.get("app").map(String::as_str), Some("x"));

    let resolved = req
        .resolve(|target| match target {
            Target::Ref(r) if r.name == "app-db" => Ok(name("app]db")),
            Target::Selector(_) => Ok(name("app-login")),
            other => Err(format!("unexpected {other:?}")),
        })
        .unwrap();
    assert_eq!(resolved.database, name("app]db"));
    assert_eq!(
        resolved.kind,
        UserKind::ForLogin {
            login: name("app-login")
        }
    );

    // The resolved form goes through the WorkItem as JSON and comes back validated.
    let desired = Desired::User(resolved.clone());
    let json = serde_json::to_value(&desired).unwrap();
    assert_eq!(json["kind"], "User");
    assert_eq!(Desired::from_work_item(&json).unwrap(), desired);
    assert_eq!(desired.database(), Some(&name("app]db")));
}

#[test]
fn worker_rejects_a_tampered_work_item() {
    // The worker trusts no writer: a name that escaped validation upstream is refused again.
    let mut json = serde_json::to_value(Desired::User(UserRequest {
        database: name("app"),
        kind: UserKind::WithoutLogin,
        default_schema: None,
        roles: Default::default(),
    }))
    .unwrap();
    assert!(
        Desired::from_work_item(&json).is_ok(),
        "the untouched item is fine"
    );
    json["spec"]["database"] = serde_json::json!("a\u{0}b");
    assert!(Desired::from_work_item(&json).is_err());
    json["spec"]["database"] = serde_json::json!("x".repeat(129));
    assert!(Desired::from_work_item(&json).is_err());
    let login = serde_json::json!({"kind": "Login", "spec": {"defaultDatabase": null, "defaultLanguage": null,
        "disabled": false, "serverRoles": [], "terminateSessionsOnDelete": false,
        "kind": {"type": "Sql", "password": {"namespace": "n", "name": "s", "key": "k"}, "checkPolicy": true, "checkExpiration": true}}});
    assert!(Desired::from_work_item(&login).is_ok(), "a valid login item");
    let mut bad = login.clone();
    bad["spec"]["kind"]["checkPolicy"] = serde_json::json!(false);
    assert!(
        Desired::from_work_item(&bad).is_err(),
        "garde rules run on the worker side too"
    );
}

#[test]
fn secrets_a_worker_needs() {
    let login = Managed::try_from(&login("{passwordSecretRef: {name: s}}"))
        .unwrap()
        .for_provider;
    let desired = Desired::Login(login);
    assert_eq!(desired.secrets().len(), 1);
    assert_eq!(desired.secrets()[0].name, "s");
}

#[test]
fn schema_cases() {
    let schema = |fp: &str| -> Schema {
        yaml(&format!(
            "apiVersion: sqlserver.kubesql.io/v1alpha1\nkind: Schema\nmetadata: {{name: sales, namespace: team-a}}\nspec:\n  forProvider: {fp}\n"
        ))
    };
    assert!(
        Managed::try_from(&schema("{database: app}")).is_ok(),
        "owner defaults to dbo"
    );
    assert!(
        Managed::try_from(&schema(
            "{databaseSelector: {matchControllerRef: true}, ownerRef: {name: app-user}}"
        ))
        .is_ok()
    );
    assert!(
        Managed::try_from(&schema("{owner: x}")).is_err(),
        "database required"
    );
    assert!(
        Managed::try_from(&schema("{database: a, owner: x, ownerRef: {name: y}}")).is_err(),
        "owner twice"
    );
    let req: SchemaRequest<Target> = Managed::try_from(&schema("{database: app, owner: app_user}"))
        .unwrap()
        .for_provider;
    let resolved = req.resolve(|t| match t {
        Target::Name(n) => Ok::<_, ()>(n.clone()),
        _ => Err(()),
    });
    assert_eq!(resolved.unwrap().owner, Some(name("app_user")));
}

#[test]
fn provider_config_reads_secrets_from_its_own_namespace_only() {
    let pc: ProviderConfig = yaml(
        r#"
apiVersion: sqlserver.kubesql.io/v1alpha1
kind: ProviderConfig
metadata: {name: sql1, namespace: team-a}
spec:
  endpoint: {host: sql.example.internal}
  credentials:
    source: Secret
    secretRef: {name: sa-login}
  tls: {mode: Strict, caConfigMapRef: {name: ca, key: ca.crt}}
"#,
    );
    let config = ServerConfig::try_from(&pc).unwrap();
    assert_eq!(config.endpoint.port, 1433, "port default");
    let Credentials::Secret {
        secret,
        username_key,
        password_key,
    } = &config.credentials
    else {
        panic!()
    };
    assert_eq!(secret.namespace, "team-a");
    assert_eq!(
        (username_key.as_str(), password_key.as_str()),
        ("username", "password")
    );
    assert_eq!(config.tls.mode, TlsMode::Strict);
    let Some(CaSource::ConfigMap { object, key }) = &config.tls.ca else {
        panic!()
    };
    assert_eq!((object.namespace.as_str(), key.as_str()), ("team-a", "ca.crt"));
    assert_eq!(
        config.worker.poll_interval, None,
        "unset: the provider's --poll-interval applies"
    );
    assert_eq!(config.worker.max_concurrent_operations, 4);
    assert_eq!(config.worker.replicas, 1);
}

#[test]
fn cluster_provider_config_cases() {
    // A fixture the generated type cannot even parse (a required field missing) counts as
    // rejected, as the apiserver would reject it.
    let cpc = |body: &str| -> Option<ClusterProviderConfig> {
        serde_saphyr::from_str(&format!(
            "apiVersion: sqlserver.kubesql.io/v1alpha1\nkind: ClusterProviderConfig\nmetadata: {{name: default}}\nspec:\n{body}"
        ))
        .ok()
    };
    let cases = [
        (
            "Secret source with its namespace",
            "  endpoint: {host: h}\n  credentials: {source: Secret, secretRef: {name: s, namespace: infra}}\n",
            true,
        ),
        (
            "a cluster config must say where its Secret is",
            "  endpoint: {host: h}\n  credentials: {source: Secret, secretRef: {name: s}}\n",
            false,
        ),
        (
            "Secret source without secretRef",
            "  endpoint: {host: h}\n  credentials: {source: Secret}\n",
            false,
        ),
        (
            "workload identity with client and tenant",
            "  endpoint: {host: x.database.windows.net}\n  credentials: {source: AzureWorkloadIdentity, azure: {clientId: 6f1c1d2e-1111-2222-3333-444455556666, tenantId: 6f1c1d2e-1111-2222-3333-444455556667}}\n",
            true,
        ),
        (
            "workload identity needs a tenant",
            "  endpoint: {host: h}\n  credentials: {source: AzureWorkloadIdentity, azure: {clientId: 6f1c1d2e-1111-2222-3333-444455556666}}\n",
            false,
        ),
        (
            "managed identity, system-assigned",
            "  endpoint: {host: h}\n  credentials: {source: AzureManagedIdentity}\n",
            true,
        ),
        (
            "AWS Secrets Manager (RDS-managed master secret)",
            "  endpoint: {host: db.rds.amazonaws.com}\n  credentials: {source: AwsSecretsManager, awsSecretsManager: {secretId: \"rds!db-1\", region: eu-west-1}}\n",
            true,
        ),
        (
            "injected identity needs nothing else",
            "  endpoint: {host: h}\n  credentials: {source: InjectedIdentity}\n",
            true,
        ),
        (
            "trusting any certificate and pinning a CA at once (tiberius would panic)",
            "  endpoint: {host: h}\n  credentials: {source: InjectedIdentity}\n  tls: {trustServerCertificate: true, caSecretRef: {name: ca, key: ca.crt, namespace: infra}}\n",
            false,
        ),
        (
            "certificate settings with TLS disabled",
            "  endpoint: {host: h}\n  credentials: {source: InjectedIdentity}\n  tls: {mode: Disabled, hostNameInCertificate: sql}\n",
            false,
        ),
        (
            "trustServerCertificate alone is an explicit opt-in",
            "  endpoint: {host: h}\n  credentials: {source: InjectedIdentity}\n  tls: {trustServerCertificate: true}\n",
            true,
        ),
        (
            "an explicit poll interval",
            "  endpoint: {host: h}\n  credentials: {source: InjectedIdentity}\n  worker: {pollInterval: 30s}\n",
            true,
        ),
        (
            "a poll interval that is not a duration",
            "  endpoint: {host: h}\n  credentials: {source: InjectedIdentity}\n  worker: {pollInterval: soon}\n",
            false,
        ),
        (
            "a host with a space",
            "  endpoint: {host: \"a b\"}\n  credentials: {source: InjectedIdentity}\n",
            false,
        ),
    ];
    for (why, body, ok) in cases {
        let result = cpc(body).map(|c| ServerConfig::try_from(&c));
        assert_eq!(matches!(result, Some(Ok(_))), ok, "{why}: {result:?}");
    }
}

#[test]
fn go_durations() {
    let cases = [
        ("minutes", "10m", Some(600.0)),
        ("combined", "1h30m", Some(5400.0)),
        ("fractions", "1.5s", Some(1.5)),
        ("milliseconds", "250ms", Some(0.25)),
        ("no unit is ambiguous", "10", None),
        ("unknown unit", "10d", None),
        ("empty", "", None),
        ("unit without number", "m", None),
    ];
    for (why, text, want) in cases {
        let got = parse_go_duration(text).ok().map(|d| d.as_secs_f64());
        assert_eq!(got, want, "{why}: {text:?}");
    }
}
