//! Validated request types: the only shape of the API the provider and the worker use.
//!
//! Each managed-resource kind converts from its kopium-generated custom resource with
//! `TryFrom<&Kind>`, which applies the CRD defaults (kopium drops them, and objects built in
//! Rust never went through the apiserver), turns loose `Option`s and strings into exact types,
//! and runs the garde rules. References stay symbolic ([`Target`]) until the provider resolves
//! them; the resolved form (`…Request<SqlName>`) is what travels to the worker inside a
//! WorkItem as [`Desired`], and the worker validates it again when it reads it.
//!
//! After this module nothing reaches into a raw generated struct.

use crate::{
    constants::ANNOTATION_EXTERNAL_NAME,
    generated,
    identifier::SqlName,
    policies::{Policies, PolicyError},
};
use garde::Validate;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::{BTreeMap, BTreeSet};

/// Why a managed resource or config cannot be turned into a request. The message names the
/// field the way a user wrote it (`spec.forProvider.login`), so it can go straight into a
/// `Synced=False` condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {name}: {}", problems.join("; "))]
pub struct InvalidRequest {
    /// Kind of the offending object.
    pub kind: &'static str,
    /// `namespace/name` (or `name` for cluster-scoped objects).
    pub name: String,
    /// Each problem as `field: message`.
    pub problems: Vec<String>,
}

/// Collects problems while converting, then becomes an [`InvalidRequest`] if there were any.
struct Problems(Vec<String>);

impl Problems {
    fn new() -> Self {
        Self(Vec::new())
    }

    fn push(&mut self, field: &str, message: impl std::fmt::Display) {
        self.0.push(format!("{field}: {message}"));
    }

    /// Checks an identifier field; returns it when valid.
    fn name(&mut self, field: &str, value: &str) -> Option<SqlName> {
        match SqlName::new(value) {
            Ok(name) => Some(name),
            Err(e) => {
                self.push(field, e);
                None
            }
        }
    }

    fn garde(&mut self, prefix: &str, result: Result<(), garde::Report>) {
        if let Err(report) = result {
            for (path, error) in report.iter() {
                let path = path.to_string();
                let field = if path.is_empty() {
                    prefix.to_owned()
                } else {
                    format!("{prefix}.{path}")
                };
                self.push(&field, error);
            }
        }
    }

    fn finish<T>(self, kind: &'static str, name: String, value: Option<T>) -> Result<T, InvalidRequest> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(InvalidRequest {
                kind,
                name,
                problems: self.0,
            }),
        }
    }
}

/// Converts between two types of the same JSON shape. kopium generates one Rust type per
/// schema path (`UserForProviderDatabaseRef`, `SchemaForProviderOwnerRef`, …) for what is one
/// concept; their shapes are identical by construction of the CRDs, so a serde round-trip maps
/// them onto our single type without a dozen hand-written field copies.
fn reshape<T: Serialize, U: DeserializeOwned>(value: &T) -> Result<U, String> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|e| e.to_string())
}

/// Whether and how often a reference is resolved (Crossplane `policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RefPolicy {
    /// `resolve: Always`: resolve on every reconcile instead of once.
    #[serde(default)]
    pub resolve_always: bool,
    /// `resolution: Optional`: go on without the value when resolution fails.
    #[serde(default)]
    pub optional: bool,
}

impl<'de> Deserialize<'de> for RefPolicyWire {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            resolve: Option<String>,
            resolution: Option<String>,
        }
        let w = Wire::deserialize(d)?;
        Ok(Self(RefPolicy {
            resolve_always: w.resolve.as_deref() == Some("Always"),
            optional: w.resolution.as_deref() == Some("Optional"),
        }))
    }
}

/// The API spelling of [`RefPolicy`] (`{resolve, resolution}`).
struct RefPolicyWire(RefPolicy);

/// A reference to another managed resource by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    /// Name of the referenced object.
    pub name: String,
    /// Its namespace; `None` = the referencing object's namespace.
    pub namespace: Option<String>,
    /// Resolution policy.
    pub policy: RefPolicy,
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            name: String,
            namespace: Option<String>,
            policy: Option<RefPolicyWire>,
        }
        let w = Wire::deserialize(d)?;
        Ok(Self {
            name: w.name,
            namespace: w.namespace,
            policy: w.policy.map(|p| p.0).unwrap_or_default(),
        })
    }
}

/// A label selector for another managed resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Labels the selected object must carry.
    pub match_labels: BTreeMap<String, String>,
    /// Only objects with the same controller (siblings composed by the same XR).
    pub match_controller_ref: bool,
    /// Namespace to select in; `None` = the selecting object's namespace.
    pub namespace: Option<String>,
    /// Resolution policy.
    pub policy: RefPolicy,
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            match_labels: Option<BTreeMap<String, String>>,
            match_controller_ref: Option<bool>,
            namespace: Option<String>,
            policy: Option<RefPolicyWire>,
        }
        let w = Wire::deserialize(d)?;
        Ok(Self {
            match_labels: w.match_labels.unwrap_or_default(),
            match_controller_ref: w.match_controller_ref.unwrap_or(false),
            namespace: w.namespace,
            policy: w.policy.map(|p| p.0).unwrap_or_default(),
        })
    }
}

/// Where a name comes from before the provider resolves it: the value itself, a reference, or
/// a selector (exactly one, as the CRD's CEL rules also demand).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Target {
    /// The name, given directly.
    Name(SqlName),
    /// `…Ref`.
    Ref(Reference),
    /// `…Selector`.
    Selector(Selector),
}

/// Builds a [`Target`] from the value / `…Ref` / `…Selector` trio of one field.
fn target<R: Serialize, S: Serialize>(
    p: &mut Problems,
    field: &str,
    value: Option<&String>,
    reference: Option<&R>,
    selector: Option<&S>,
) -> Option<Target> {
    let given = [value.is_some(), reference.is_some(), selector.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if given > 1 {
        p.push(
            field,
            format!("set only one of {field}, {field}Ref and {field}Selector"),
        );
        return None;
    }
    if let Some(value) = value {
        return p.name(field, value).map(Target::Name);
    }
    if let Some(reference) = reference {
        return match reshape::<_, Reference>(reference) {
            Ok(r) if r.name.is_empty() => {
                p.push(&format!("{field}Ref.name"), "must not be empty");
                None
            }
            Ok(r) => Some(Target::Ref(r)),
            Err(e) => {
                p.push(&format!("{field}Ref"), e);
                None
            }
        };
    }
    if let Some(selector) = selector {
        return match reshape::<_, Selector>(selector) {
            Ok(s) if s.match_labels.is_empty() && !s.match_controller_ref => {
                p.push(
                    &format!("{field}Selector"),
                    "selects everything: set matchLabels or matchControllerRef",
                );
                None
            }
            Ok(s) => Some(Target::Selector(s)),
            Err(e) => {
                p.push(&format!("{field}Selector"), e);
                None
            }
        };
    }
    None
}

/// The database of a User or Schema: like [`target`], and one of the three must be set.
fn required_database<R: Serialize, S: Serialize>(
    p: &mut Problems,
    value: Option<&String>,
    reference: Option<&R>,
    selector: Option<&S>,
) -> Option<Target> {
    let field = "spec.forProvider.database";
    if value.is_none() && reference.is_none() && selector.is_none() {
        p.push(field, "required: set database, databaseRef or databaseSelector");
        return None;
    }
    target(p, field, value, reference, selector)
}

/// A key in a Secret, with its namespace made explicit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Namespace of the Secret.
    #[garde(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[garde(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[garde(length(min = 1, max = 253))]
    pub key: String,
}

/// Which config a managed resource uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigRef {
    /// `ProviderConfig` (in the resource's namespace) or `ClusterProviderConfig`.
    pub kind: ConfigKind,
    /// Name of the config.
    pub name: String,
}

/// The two config kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConfigKind {
    /// Namespaced: serves resources in its namespace only.
    ProviderConfig,
    /// Cluster-scoped: serves every namespace.
    ClusterProviderConfig,
}

/// What every managed-resource request carries besides its kind-specific part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Managed<T> {
    /// Namespace of the managed resource.
    pub namespace: String,
    /// Name of the managed resource.
    pub name: String,
    /// The SQL object's name: `crossplane.io/external-name`, defaulting to `metadata.name`.
    pub external_name: SqlName,
    /// Parsed management policies.
    pub policies: Policies,
    /// The config serving this resource.
    pub config: ConfigRef,
    /// Name of the connection Secret to write, if any.
    pub connection_secret: Option<String>,
    /// The kind-specific request.
    pub for_provider: T,
}

/// The parts common to all four managed kinds, read the same way for each.
fn common<T>(
    p: &mut Problems,
    meta: &kube::api::ObjectMeta,
    policies: Option<&Vec<String>>,
    config: Option<(ConfigKind, &str)>,
    connection_secret: Option<&str>,
    for_provider: Option<T>,
) -> Option<Managed<T>> {
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_default();
    if name.is_empty() {
        p.push("metadata.name", "must not be empty");
    }
    if namespace.is_empty() {
        p.push("metadata.namespace", "managed resources are namespaced");
    }
    let external = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_EXTERNAL_NAME))
        .filter(|v| !v.is_empty())
        .unwrap_or(&name);
    let external_name = p.name(
        &format!("metadata.annotations[{ANNOTATION_EXTERNAL_NAME}]"),
        external,
    );
    let policies = match policies {
        None => Some(Policies::ALL),
        Some(list) => match Policies::parse(list) {
            Ok(policies) => Some(policies),
            Err(e @ (PolicyError::Unknown(_) | PolicyError::Unsupported(_))) => {
                p.push("spec.managementPolicies", e);
                None
            }
        },
    };
    let (kind, config_name) = config.unwrap_or((ConfigKind::ClusterProviderConfig, "default"));
    if config_name.is_empty() {
        p.push("spec.providerConfigRef.name", "must not be empty");
    }
    Some(Managed {
        namespace,
        name,
        external_name: external_name?,
        policies: policies?,
        config: ConfigRef {
            kind,
            name: config_name.to_owned(),
        },
        connection_secret: connection_secret.map(str::to_owned),
        for_provider: for_provider?,
    })
}

fn object_name(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// `{kind, name}` of any generated providerConfigRef type.
fn config_ref<R: Serialize>(r: Option<&R>) -> Option<(ConfigKind, String)> {
    let r = r?;
    let value: ConfigRef = reshape(r).ok()?;
    Some((value.kind, value.name))
}

/// The password Secret of a SQL login or contained user: the given ref (key default
/// `password`) or `<name>-password`, always in the resource's namespace.
fn password_ref(namespace: &str, name: &str, given: Option<(&str, Option<&str>)>) -> SecretKeyRef {
    let (secret, key) = given.unwrap_or((name, None));
    let secret = if given.is_some() {
        secret.to_owned()
    } else {
        format!("{secret}-password")
    };
    SecretKeyRef {
        namespace: namespace.to_owned(),
        name: secret,
        key: key.unwrap_or("password").to_owned(),
    }
}

// ------------------------------------------------------------------------------------------
// Database

/// Recovery model (`RECOVERY FULL | BULK_LOGGED | SIMPLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecoveryModel {
    /// FULL.
    Full,
    /// BULK_LOGGED.
    BulkLogged,
    /// SIMPLE.
    Simple,
}

/// Database containment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Containment {
    /// CONTAINMENT = NONE.
    None,
    /// CONTAINMENT = PARTIAL.
    Partial,
}

/// Compatibility levels SQL Server accepts (error 15048 otherwise).
pub const COMPATIBILITY_LEVELS: &[i64] = &[100, 110, 120, 130, 140, 150, 160, 170];

/// A validated Database. `None` fields are left to the server (and late-initialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRequest {
    /// Collation name.
    #[garde(length(min = 1, max = 128), custom(collation_chars))]
    pub collation: Option<String>,
    /// Recovery model.
    #[garde(skip)]
    pub recovery_model: Option<RecoveryModel>,
    /// Compatibility level.
    #[garde(custom(valid_compatibility_level))]
    pub compatibility_level: Option<i64>,
    /// Containment.
    #[garde(skip)]
    pub containment: Option<Containment>,
    /// Owning login.
    #[garde(dive)]
    pub owner: Option<SqlName>,
    /// End other sessions before dropping.
    #[garde(skip)]
    pub terminate_sessions_on_delete: bool,
}

fn collation_chars(value: &Option<String>, _: &()) -> garde::Result {
    let Some(value) = value else { return Ok(()) };
    if value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(garde::Error::new(
            "a collation name has only letters, digits and underscores",
        ))
    }
}

fn valid_compatibility_level(value: &Option<i64>, _: &()) -> garde::Result {
    let Some(value) = value else { return Ok(()) };
    if COMPATIBILITY_LEVELS.contains(value) {
        Ok(())
    } else {
        Err(garde::Error::new(format!(
            "must be one of {COMPATIBILITY_LEVELS:?}"
        )))
    }
}

impl TryFrom<&generated::databases::Database> for Managed<DatabaseRequest> {
    type Error = InvalidRequest;
    fn try_from(db: &generated::databases::Database) -> Result<Self, Self::Error> {
        use generated::databases::{
            DatabaseForProviderContainment as C, DatabaseForProviderRecoveryModel as R,
        };
        let mut p = Problems::new();
        let fp = &db.spec.for_provider;
        let request = DatabaseRequest {
            collation: fp.collation.clone(),
            recovery_model: fp.recovery_model.as_ref().map(|r| match r {
                R::Full => RecoveryModel::Full,
                R::BulkLogged => RecoveryModel::BulkLogged,
                R::Simple => RecoveryModel::Simple,
            }),
            compatibility_level: fp.compatibility_level,
            containment: fp.containment.as_ref().map(|c| match c {
                C::None => Containment::None,
                C::Partial => Containment::Partial,
            }),
            owner: fp
                .owner
                .as_deref()
                .and_then(|o| p.name("spec.forProvider.owner", o)),
            terminate_sessions_on_delete: fp.terminate_sessions_on_delete.unwrap_or(false),
        };
        p.garde("spec.forProvider", request.validate());
        let config = config_ref(db.spec.provider_config_ref.as_ref());
        let managed = common(
            &mut p,
            &db.metadata,
            db.spec.management_policies.as_ref(),
            config.as_ref().map(|(k, n)| (*k, n.as_str())),
            None,
            Some(request),
        );
        p.finish("Database", object_name(&db.metadata), managed)
    }
}

// ------------------------------------------------------------------------------------------
// Login

/// How a login authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum LoginKind {
    /// SQL Server authentication.
    Sql {
        /// Where the password is (generated there by the provider when missing).
        #[garde(dive)]
        password: SecretKeyRef,
        /// CHECK_POLICY.
        #[garde(skip)]
        check_policy: bool,
        /// CHECK_EXPIRATION (needs check_policy).
        #[garde(skip)]
        check_expiration: bool,
    },
    /// A Microsoft Entra principal (`FROM EXTERNAL PROVIDER`).
    External {
        /// `WITH OBJECT_ID`, for ambiguous display names.
        #[garde(custom(guid))]
        object_id: Option<String>,
    },
}

/// Rules across the fields of one [`LoginKind`] variant.
fn login_kind_rules(kind: &LoginKind, _: &()) -> garde::Result {
    match kind {
        LoginKind::Sql {
            check_policy: false,
            check_expiration: true,
            ..
        } => Err(garde::Error::new(
            "checkExpiration needs checkPolicy (SQL Server error 15122)",
        )),
        _ => Ok(()),
    }
}

fn guid(value: &Option<String>, _: &()) -> garde::Result {
    let Some(value) = value else { return Ok(()) };
    let groups: Vec<&str> = value.split('-').collect();
    let lengths = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip(lengths)
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(garde::Error::new(
            "must be a GUID like 00000000-0000-0000-0000-000000000000",
        ))
    }
}

/// A validated Login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    /// SQL or external, with the options of each.
    #[garde(dive, custom(login_kind_rules))]
    pub kind: LoginKind,
    /// DEFAULT_DATABASE (server default master when unset).
    #[garde(dive)]
    pub default_database: Option<SqlName>,
    /// DEFAULT_LANGUAGE.
    #[garde(length(min = 1, max = 128), custom(language_chars))]
    pub default_language: Option<String>,
    /// DISABLE.
    #[garde(skip)]
    pub disabled: bool,
    /// Server roles, exactly.
    #[garde(dive)]
    pub server_roles: BTreeSet<SqlName>,
    /// KILL the login's sessions before dropping it.
    #[garde(skip)]
    pub terminate_sessions_on_delete: bool,
}

fn language_chars(value: &Option<String>, _: &()) -> garde::Result {
    let Some(value) = value else { return Ok(()) };
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ')
    {
        Ok(())
    } else {
        Err(garde::Error::new(
            "a language name has only letters, digits, spaces and underscores",
        ))
    }
}

/// Turns an optional list of names into a set, reporting each bad one.
fn name_set(p: &mut Problems, field: &str, list: Option<&Vec<String>>) -> BTreeSet<SqlName> {
    let mut set = BTreeSet::new();
    for (i, item) in list.into_iter().flatten().enumerate() {
        if let Some(name) = p.name(&format!("{field}[{i}]"), item)
            && !set.insert(name)
        {
            p.push(&format!("{field}[{i}]"), format!("{item:?} is listed twice"));
        }
    }
    set
}

impl TryFrom<&generated::logins::Login> for Managed<LoginRequest> {
    type Error = InvalidRequest;
    fn try_from(login: &generated::logins::Login) -> Result<Self, Self::Error> {
        use generated::logins::LoginForProviderType as T;
        let mut p = Problems::new();
        let fp = &login.spec.for_provider;
        let namespace = login.metadata.namespace.as_deref().unwrap_or_default();
        let name = login.metadata.name.as_deref().unwrap_or_default();
        let check_policy = fp.check_policy.unwrap_or(true);
        let check_expiration = fp.check_expiration.unwrap_or(false);
        let kind = match fp.r#type.as_ref().unwrap_or(&T::Sql) {
            T::Sql => {
                if fp.external_object_id.is_some() {
                    p.push(
                        "spec.forProvider.externalObjectId",
                        "only for logins of type External",
                    );
                }
                let given = fp
                    .password_secret_ref
                    .as_ref()
                    .map(|r| (r.name.as_str(), r.key.as_deref()));
                Some(LoginKind::Sql {
                    password: password_ref(namespace, name, given),
                    check_policy,
                    check_expiration,
                })
            }
            T::External => {
                if fp.password_secret_ref.is_some() {
                    p.push(
                        "spec.forProvider.passwordSecretRef",
                        "only for logins of type Sql",
                    );
                }
                if !check_policy || check_expiration {
                    p.push(
                        "spec.forProvider",
                        "checkPolicy and checkExpiration apply to logins of type Sql only",
                    );
                }
                Some(LoginKind::External {
                    object_id: fp.external_object_id.clone(),
                })
            }
        };
        let request = kind.map(|kind| LoginRequest {
            kind,
            default_database: fp
                .default_database
                .as_deref()
                .and_then(|d| p.name("spec.forProvider.defaultDatabase", d)),
            default_language: fp.default_language.clone(),
            disabled: fp.disabled.unwrap_or(false),
            server_roles: name_set(&mut p, "spec.forProvider.serverRoles", fp.server_roles.as_ref()),
            terminate_sessions_on_delete: fp.terminate_sessions_on_delete.unwrap_or(false),
        });
        if let Some(request) = &request {
            p.garde("spec.forProvider", request.validate());
        }
        let config = config_ref(login.spec.provider_config_ref.as_ref());
        let managed = common(
            &mut p,
            &login.metadata,
            login.spec.management_policies.as_ref(),
            config.as_ref().map(|(k, n)| (*k, n.as_str())),
            login
                .spec
                .write_connection_secret_to_ref
                .as_ref()
                .map(|r| r.name.as_str()),
            request,
        );
        p.finish("Login", object_name(&login.metadata), managed)
    }
}

// ------------------------------------------------------------------------------------------
// User

/// How a user authenticates; `T` is [`Target`] before resolution and [`SqlName`] after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum UserKind<T> {
    /// Mapped to a server login.
    ForLogin {
        /// The login.
        login: T,
    },
    /// Cannot log in.
    WithoutLogin,
    /// Own password, in a contained database.
    Contained {
        /// Where the password is (generated there by the provider when missing).
        password: SecretKeyRef,
    },
    /// A Microsoft Entra principal.
    External {
        /// `WITH OBJECT_ID`.
        object_id: Option<String>,
    },
}

/// A validated User; `T` is [`Target`] before resolution and [`SqlName`] after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRequest<T> {
    /// Database the user lives in.
    pub database: T,
    /// Kind of user.
    pub kind: UserKind<T>,
    /// DEFAULT_SCHEMA.
    pub default_schema: Option<SqlName>,
    /// Database roles, exactly.
    pub roles: BTreeSet<SqlName>,
}

impl TryFrom<&generated::users::User> for Managed<UserRequest<Target>> {
    type Error = InvalidRequest;
    fn try_from(user: &generated::users::User) -> Result<Self, Self::Error> {
        use generated::users::UserForProviderType as T;
        let mut p = Problems::new();
        let fp = &user.spec.for_provider;
        let namespace = user.metadata.namespace.as_deref().unwrap_or_default();
        let name = user.metadata.name.as_deref().unwrap_or_default();
        let database = required_database(
            &mut p,
            fp.database.as_ref(),
            fp.database_ref.as_ref(),
            fp.database_selector.as_ref(),
        );
        let login = target(
            &mut p,
            "spec.forProvider.login",
            fp.login.as_ref(),
            fp.login_ref.as_ref(),
            fp.login_selector.as_ref(),
        );
        let has_login = fp.login.is_some() || fp.login_ref.is_some() || fp.login_selector.is_some();
        let user_type = fp.r#type.clone().unwrap_or(T::ForLogin);
        if fp.password_secret_ref.is_some() && user_type != T::Contained {
            p.push(
                "spec.forProvider.passwordSecretRef",
                "only for users of type Contained",
            );
        }
        if fp.external_object_id.is_some() && user_type != T::External {
            p.push(
                "spec.forProvider.externalObjectId",
                "only for users of type External",
            );
        }
        if has_login && user_type != T::ForLogin {
            p.push("spec.forProvider.login", "only for users of type ForLogin");
        }
        let kind = match user_type {
            T::ForLogin => {
                if !has_login {
                    p.push(
                        "spec.forProvider.login",
                        "users of type ForLogin need login, loginRef or loginSelector",
                    );
                }
                login.map(|login| UserKind::ForLogin { login })
            }
            T::WithoutLogin => Some(UserKind::WithoutLogin),
            T::Contained => {
                let given = fp
                    .password_secret_ref
                    .as_ref()
                    .map(|r| (r.name.as_str(), r.key.as_deref()));
                Some(UserKind::Contained {
                    password: password_ref(namespace, name, given),
                })
            }
            T::External => {
                p.garde(
                    "spec.forProvider.externalObjectId",
                    guid(&fp.external_object_id, &()).map_err(report),
                );
                Some(UserKind::External {
                    object_id: fp.external_object_id.clone(),
                })
            }
        };
        let default_schema = fp
            .default_schema
            .as_deref()
            .and_then(|s| p.name("spec.forProvider.defaultSchema", s));
        let roles = name_set(&mut p, "spec.forProvider.roles", fp.roles.as_ref());
        let request = match (database, kind) {
            (Some(database), Some(kind)) => Some(UserRequest {
                database,
                kind,
                default_schema,
                roles,
            }),
            _ => None,
        };
        let config = config_ref(user.spec.provider_config_ref.as_ref());
        let managed = common(
            &mut p,
            &user.metadata,
            user.spec.management_policies.as_ref(),
            config.as_ref().map(|(k, n)| (*k, n.as_str())),
            user.spec
                .write_connection_secret_to_ref
                .as_ref()
                .map(|r| r.name.as_str()),
            request,
        );
        p.finish("User", object_name(&user.metadata), managed)
    }
}

fn report(error: garde::Error) -> garde::Report {
    let mut report = garde::Report::new();
    report.append(garde::Path::empty(), error);
    report
}

// ------------------------------------------------------------------------------------------
// Schema

/// A validated Schema; `T` is [`Target`] before resolution and [`SqlName`] after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRequest<T> {
    /// Database the schema lives in.
    pub database: T,
    /// Owning principal (`None` = dbo).
    pub owner: Option<T>,
}

impl TryFrom<&generated::schemas::Schema> for Managed<SchemaRequest<Target>> {
    type Error = InvalidRequest;
    fn try_from(schema: &generated::schemas::Schema) -> Result<Self, Self::Error> {
        let mut p = Problems::new();
        let fp = &schema.spec.for_provider;
        let database = required_database(
            &mut p,
            fp.database.as_ref(),
            fp.database_ref.as_ref(),
            fp.database_selector.as_ref(),
        );
        let owner = target(
            &mut p,
            "spec.forProvider.owner",
            fp.owner.as_ref(),
            fp.owner_ref.as_ref(),
            fp.owner_selector.as_ref(),
        );
        let request = database.map(|database| SchemaRequest { database, owner });
        let config = config_ref(schema.spec.provider_config_ref.as_ref());
        let managed = common(
            &mut p,
            &schema.metadata,
            schema.spec.management_policies.as_ref(),
            config.as_ref().map(|(k, n)| (*k, n.as_str())),
            None,
            request,
        );
        p.finish("Schema", object_name(&schema.metadata), managed)
    }
}

// ------------------------------------------------------------------------------------------
// Resolution and the worker's view

impl UserRequest<Target> {
    /// Replaces every [`Target`] with the name `resolve` finds for it (the provider's
    /// reference resolution); the first failure wins.
    pub fn resolve<E>(
        self,
        mut resolve: impl FnMut(&Target) -> Result<SqlName, E>,
    ) -> Result<UserRequest<SqlName>, E> {
        let database = resolve(&self.database)?;
        let kind = match self.kind {
            UserKind::ForLogin { login } => UserKind::ForLogin {
                login: resolve(&login)?,
            },
            UserKind::WithoutLogin => UserKind::WithoutLogin,
            UserKind::Contained { password } => UserKind::Contained { password },
            UserKind::External { object_id } => UserKind::External { object_id },
        };
        Ok(UserRequest {
            database,
            kind,
            default_schema: self.default_schema,
            roles: self.roles,
        })
    }
}

impl SchemaRequest<Target> {
    /// See [`UserRequest::resolve`].
    pub fn resolve<E>(
        self,
        mut resolve: impl FnMut(&Target) -> Result<SqlName, E>,
    ) -> Result<SchemaRequest<SqlName>, E> {
        Ok(SchemaRequest {
            database: resolve(&self.database)?,
            owner: self.owner.as_ref().map(&mut resolve).transpose()?,
        })
    }
}

/// The fully resolved desired state of one SQL object, as the provider writes it into
/// `WorkItem.spec.desired` and the worker reads it back. Holds references to Secrets, never
/// their values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "spec")]
pub enum Desired {
    /// A database named by the WorkItem's external name.
    Database(DatabaseRequest),
    /// A login.
    Login(LoginRequest),
    /// A user.
    User(UserRequest<SqlName>),
    /// A schema.
    Schema(SchemaRequest<SqlName>),
}

impl Desired {
    /// Reads `WorkItem.spec.desired` and validates it again: the worker trusts no writer.
    pub fn from_work_item(value: &serde_json::Value) -> Result<Self, String> {
        let desired: Self = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        let checked = match &desired {
            Self::Database(d) => d.validate(),
            Self::Login(l) => l.validate(),
            // Names were re-checked by SqlName's deserializer; nothing else to check.
            Self::User(_) | Self::Schema(_) => Ok(()),
        };
        checked.map_err(|report| report.to_string())?;
        Ok(desired)
    }

    /// The database the object lives in (users and schemas), for connection routing and
    /// batching the drift sweep per database.
    pub fn database(&self) -> Option<&SqlName> {
        match self {
            Self::User(u) => Some(&u.database),
            Self::Schema(s) => Some(&s.database),
            Self::Database(_) | Self::Login(_) => None,
        }
    }

    /// The Secrets the worker must be able to read for this object.
    pub fn secrets(&self) -> Vec<&SecretKeyRef> {
        match self {
            Self::Login(LoginRequest {
                kind: LoginKind::Sql { password, .. },
                ..
            })
            | Self::User(UserRequest {
                kind: UserKind::Contained { password },
                ..
            }) => vec![password],
            _ => Vec::new(),
        }
    }
}
