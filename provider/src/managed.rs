//! The managed-resource controller, one instance per kind (Database, Login, User, Schema).
//!
//! One reconcile, in Crossplane's order (reference/crossplane.md §2.2), with SQL replaced by
//! the worker's queue:
//!
//! ```text
//! paused? ─▶ validate (apis::request) ─▶ config + usage ─▶ deleting? ─▶ finalizer
//!   ─▶ resolve references ─▶ password Secret + the worker's access to it
//!   ─▶ apply WorkItem (SSA) ─▶ project WorkItem status ─▶ conditions, events, connection Secret
//! ```
//!
//! The provider never talks to SQL Server; a WorkItem status change (written by the worker)
//! wakes this controller through a watch, so nothing here polls.

use crate::{
    Ctx, Error,
    connection::{Details, secret_data},
    passwords,
    status::{self, Projection},
    workers::{self, ConfigIdentity},
};
use apis::{
    config::ServerConfig,
    constants::{
        ANNOTATION_EXTERNAL_NAME, ANNOTATION_PAUSED, ANNOTATION_POLL_INTERVAL,
        ANNOTATION_RECONCILE_REQUESTED_AT, FINALIZER_MANAGED, GROUP, LABEL_PROVIDER_CONFIG,
        LABEL_PROVIDER_CONFIG_KIND, LABEL_WORKER, VERSION, event, reason,
    },
    generated::{
        clusterproviderconfigs::ClusterProviderConfig,
        databases::Database,
        logins::Login,
        providerconfigs::ProviderConfig,
        providerconfigusages::{
            ProviderConfigUsageProviderConfigRef, ProviderConfigUsageProviderConfigRefKind,
            ProviderConfigUsageResourceRef,
        },
        schemas::Schema,
        users::User,
        workitems::{WorkItem, WorkItemKind, WorkItemOperation, WorkItemResourceRef, WorkItemSpec},
    },
    identifier::SqlName,
    policies::Policies,
    queue::{PROVIDER_MANAGER, kind_of, work_item_name},
    request::{
        ConfigKind, ConfigRef, Desired, InvalidRequest, LoginKind, Managed, SecretKeyRef, Target, UserKind,
    },
    usage::ProviderConfigUsage,
};
use k8s_openapi::{
    ByteString, NamespaceResourceScope,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::{Event as KubeEvent, EventType},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use std::{collections::BTreeMap, fmt::Debug, sync::Arc, time::Duration};

/// Label on WorkItems: UID of the managed resource, to find items left behind by a rename.
pub const LABEL_RESOURCE_UID: &str = "sqlserver.kubesql.io/resource-uid";

/// A managed resource before reference resolution.
#[derive(Debug, Clone)]
pub enum Unresolved {
    /// Database.
    Database(Managed<apis::request::DatabaseRequest>),
    /// Login.
    Login(Managed<apis::request::LoginRequest>),
    /// User.
    User(Managed<apis::request::UserRequest<Target>>),
    /// Schema.
    Schema(Managed<apis::request::SchemaRequest<Target>>),
}

impl Unresolved {
    fn policies(&self) -> Policies {
        match self {
            Self::Database(m) => m.policies,
            Self::Login(m) => m.policies,
            Self::User(m) => m.policies,
            Self::Schema(m) => m.policies,
        }
    }
    fn config(&self) -> &ConfigRef {
        match self {
            Self::Database(m) => &m.config,
            Self::Login(m) => &m.config,
            Self::User(m) => &m.config,
            Self::Schema(m) => &m.config,
        }
    }
    fn external_name(&self) -> &SqlName {
        match self {
            Self::Database(m) => &m.external_name,
            Self::Login(m) => &m.external_name,
            Self::User(m) => &m.external_name,
            Self::Schema(m) => &m.external_name,
        }
    }
    fn connection_secret(&self) -> Option<&str> {
        match self {
            Self::Login(m) => m.connection_secret.as_deref(),
            Self::User(m) => m.connection_secret.as_deref(),
            Self::Database(_) | Self::Schema(_) => None,
        }
    }
}

/// What the four kinds share, so one reconciler serves them all.
pub trait ManagedKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Kind name.
    const KIND: &'static str;
    /// Validates into a request (apis::request).
    fn validate(&self) -> Result<Unresolved, InvalidRequest>;
    /// Current status, as JSON (conditions, atProvider, …).
    fn status_json(&self) -> serde_json::Value;
    /// `atProvider` as the apiserver will store it: only the fields the CRD knows, no nulls.
    /// Comparing anything else with the stored status would never match and rewrite the
    /// status on every reconcile.
    fn normalize_at_provider(value: serde_json::Value) -> serde_json::Value;
}

macro_rules! managed_kind {
    ($ty:ty, $kind:literal, $variant:ident, $at:ty) => {
        impl ManagedKind for $ty {
            const KIND: &'static str = $kind;
            fn validate(&self) -> Result<Unresolved, InvalidRequest> {
                Managed::try_from(self).map(Unresolved::$variant)
            }
            fn status_json(&self) -> serde_json::Value {
                serde_json::to_value(&self.status).unwrap_or_default()
            }
            fn normalize_at_provider(value: serde_json::Value) -> serde_json::Value {
                serde_json::from_value::<$at>(value)
                    .ok()
                    .and_then(|typed| serde_json::to_value(typed).ok())
                    .unwrap_or_default()
            }
        }
    };
}
managed_kind!(
    Database,
    "Database",
    Database,
    apis::generated::databases::DatabaseStatusAtProvider
);
managed_kind!(
    Login,
    "Login",
    Login,
    apis::generated::logins::LoginStatusAtProvider
);
managed_kind!(User, "User", User, apis::generated::users::UserStatusAtProvider);
managed_kind!(
    Schema,
    "Schema",
    Schema,
    apis::generated::schemas::SchemaStatusAtProvider
);

fn conditions_of(status: &serde_json::Value) -> Vec<Condition> {
    status
        .get("conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

/// Entry point for `Controller::run`.
pub async fn reconcile<K: ManagedKind>(obj: Arc<K>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&*obj, &ctx).await;
    ctx.metrics
        .reconciled(K::KIND, started.elapsed(), result.as_ref().err());
    result
}

/// Requeue policy: invalid input waits for a change (no requeue storm); anything else backs
/// off (controller-level exponential backoff handles repeats).
pub fn error_policy<K: ManagedKind>(_obj: Arc<K>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    match error {
        Error::Invalid(_) => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(10)),
    }
}

struct Resolved {
    desired: Desired,
    /// Resolved database / login names to show in atProvider.
    shown: BTreeMap<&'static str, String>,
    /// Password Secret to publish in the connection Secret, with the user name.
    credentials: Option<(String, SecretKeyRef)>,
}

async fn reconcile_inner<K: ManagedKind>(obj: &K, ctx: &Ctx) -> Result<Action, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let status = obj.status_json();
    let old_conditions = conditions_of(&status);
    let deleting = obj.meta().deletion_timestamp.is_some();
    let annotations = obj.annotations();

    // Paused: by annotation, or by an empty policy list. A paused resource cannot finish
    // deletion either (Crossplane keeps the finalizer).
    let paused_by_annotation = annotations.get(ANNOTATION_PAUSED).is_some_and(|v| v == "true");
    let request = match obj.validate() {
        Ok(request) => request,
        Err(invalid) => {
            let synced = status::Cond {
                status: "False",
                reason: reason::RECONCILE_ERROR,
                message: invalid.to_string(),
            };
            let ready = ready_or_unknown(&old_conditions);
            write_status(&api, obj, &old_conditions, &ready, &synced, None).await?;
            if !same_reason(&old_conditions, &synced) {
                publish(
                    ctx,
                    obj,
                    EventType::Warning,
                    event::CANNOT_UPDATE_MANAGED,
                    &invalid.to_string(),
                )
                .await;
            }
            return Err(Error::Invalid(invalid.to_string()));
        }
    };
    if paused_by_annotation || request.policies().paused() {
        let synced = status::Cond {
            status: "False",
            reason: reason::RECONCILE_PAUSED,
            message: String::new(),
        };
        let ready = ready_or_unknown(&old_conditions);
        if !same_reason(&old_conditions, &synced) {
            publish(
                ctx,
                obj,
                EventType::Normal,
                event::PAUSED,
                "reconciliation is paused",
            )
            .await;
        }
        write_status(&api, obj, &old_conditions, &ready, &synced, None).await?;
        return Ok(Action::await_change());
    }
    let policies = request.policies();

    // The config: where the worker is and how the object is reached.
    let (identity, server) = match load_config(ctx, &namespace, request.config()).await {
        Ok(found) => found,
        Err(message) => {
            if deleting && !policies.delete {
                // Orphaning needs no worker.
                remove_finalizer(&api, obj).await?;
                return Ok(Action::await_change());
            }
            let message = format!("connect failed: {message}");
            report_failure(ctx, &api, obj, &old_conditions, message, event::CANNOT_CONNECT).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let worker = workers::worker_name(&identity);
    let worker_namespace = workers::worker_namespace(&identity, &server, &ctx.provider_namespace);
    let items: Api<WorkItem> = Api::namespaced(ctx.client.clone(), &worker_namespace);

    if deleting {
        return delete(ctx, obj, &api, &items, &policies, &worker, &old_conditions).await;
    }
    ensure_usage(ctx, obj, request.config()).await?;
    ensure_initialized(&api, obj).await?;

    // References.
    let resolved = match resolve(ctx, obj, &namespace, &request, &status).await {
        Ok(resolved) => resolved,
        Err(message) => {
            report_failure(
                ctx,
                &api,
                obj,
                &old_conditions,
                message,
                event::CANNOT_RESOLVE_REFERENCES,
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(15)));
        }
    };

    // Password Secrets: generated when missing, never overwritten; the worker may read
    // exactly this Secret.
    let service_account = server
        .worker
        .service_account_name
        .clone()
        .unwrap_or_else(|| worker.clone());
    for secret in resolved.desired.secrets() {
        ensure_password(ctx, obj, secret).await?;
        let (role, binding) = workers::secret_access(
            &worker,
            &worker_namespace,
            &service_account,
            &secret.namespace,
            &secret.name,
            owner_reference(obj),
        );
        // Applied once: later reconciles read and compare instead of writing again.
        let pp = PatchParams::apply(PROVIDER_MANAGER).force();
        let roles =
            Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(ctx.client.clone(), &secret.namespace);
        let role_name = role.metadata.name.clone().unwrap_or_default();
        if roles
            .get_opt(&role_name)
            .await?
            .is_none_or(|r| r.rules != role.rules)
        {
            roles.patch(&role_name, &pp, &Patch::Apply(&role)).await?;
        }
        let bindings =
            Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(ctx.client.clone(), &secret.namespace);
        let binding_name = binding.metadata.name.clone().unwrap_or_default();
        if bindings
            .get_opt(&binding_name)
            .await?
            .is_none_or(|b| b.subjects != binding.subjects || b.role_ref != binding.role_ref)
        {
            bindings
                .patch(&binding_name, &pp, &Patch::Apply(&binding))
                .await?;
        }
    }

    // The WorkItem. Its name is the SQL object's identity on this server: a second managed
    // resource claiming the same object finds it taken.
    let database = resolved.desired.database().map(|d| d.as_str().to_owned());
    let item_name = work_item_name(
        &worker,
        K::KIND,
        database.as_deref(),
        request.external_name().as_str(),
    );
    let existing = items.get_opt(&item_name).await?;
    let uid = obj.uid().unwrap_or_default();
    if let Some(other) = existing.as_ref().filter(|i| i.spec.resource_ref.uid != uid) {
        let message = format!(
            "{} {:?} is already managed by {}/{} on this server",
            K::KIND,
            request.external_name().as_str(),
            other.spec.resource_ref.namespace,
            other.spec.resource_ref.name
        );
        report_failure(ctx, &api, obj, &old_conditions, message, event::CANNOT_CREATE).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    forget_renamed_items(&items, &uid, &item_name).await?;
    let item = work_item(
        obj,
        &worker,
        &worker_namespace,
        &item_name,
        &request,
        &resolved,
        WorkItemOperation::Apply,
    );
    let item = if existing.as_ref().is_some_and(|e| e.spec == item.spec) {
        existing.expect("checked")
    } else {
        items
            .patch(
                &item_name,
                &PatchParams::apply(PROVIDER_MANAGER).force(),
                &Patch::Apply(&item),
            )
            .await?
    };

    // Status, from what the worker reported.
    let projection = status::project(Some(&item), &policies, false, &worker);
    let at_provider = at_provider(&item, &resolved).map(K::normalize_at_provider);
    let changed = write_status(
        &api,
        obj,
        &old_conditions,
        &projection.ready,
        &projection.synced,
        at_provider,
    )
    .await?;
    if changed {
        report_transition(ctx, obj, &old_conditions, &projection).await;
    }

    if projection.exists
        && let (Some(secret_name), Some((username, password_ref))) =
            (request.connection_secret(), resolved.credentials.as_ref())
    {
        publish_connection(
            ctx,
            obj,
            secret_name,
            username,
            password_ref,
            &server,
            database.as_deref(),
        )
        .await?;
    }
    if let Some(token) = annotations.get(ANNOTATION_RECONCILE_REQUESTED_AT)
        && status.get("lastHandledReconcileAt").and_then(|v| v.as_str()) != Some(token.as_str())
    {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastHandledReconcileAt": token}})),
        )
        .await?;
        publish(
            ctx,
            obj,
            EventType::Normal,
            event::RECONCILE_REQUEST_HANDLED,
            &format!("handled request {token}"),
        )
        .await;
    }
    // Nothing to poll: the worker sweeps for drift and a WorkItem change wakes us. A long
    // resync covers missed watch events.
    Ok(Action::requeue(Duration::from_secs(3600)))
}

/// Reports a failed reconcile the Crossplane way: `Synced=False/ReconcileError` with the
/// message, `Ready` as it was, and a Warning event (the recorder folds repeats into a series).
async fn report_failure<K: ManagedKind>(
    ctx: &Ctx,
    api: &Api<K>,
    obj: &K,
    old: &[Condition],
    message: String,
    event_reason: &str,
) -> Result<(), Error> {
    let synced = status::Cond {
        status: "False",
        reason: reason::RECONCILE_ERROR,
        message,
    };
    write_status(api, obj, old, &ready_or_unknown(old), &synced, None).await?;
    publish(ctx, obj, EventType::Warning, event_reason, &synced.message).await;
    Ok(())
}

fn ready_or_unknown(old: &[Condition]) -> status::Cond {
    match old.iter().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "True" => status::Cond {
            status: "True",
            reason: reason::AVAILABLE,
            message: String::new(),
        },
        _ => status::Cond {
            status: "False",
            reason: reason::CREATING,
            message: String::new(),
        },
    }
}

fn same_reason(old: &[Condition], synced: &status::Cond) -> bool {
    old.iter()
        .any(|c| c.type_ == "Synced" && c.reason == synced.reason && c.message == synced.message)
}

/// Writes `[Ready, Synced]` (+ atProvider, observedGeneration) only when something changed,
/// so a steady state costs no apiserver writes. Returns whether it wrote.
async fn write_status<K: ManagedKind>(
    api: &Api<K>,
    obj: &K,
    old: &[Condition],
    ready: &status::Cond,
    synced: &status::Cond,
    at_provider: Option<serde_json::Value>,
) -> Result<bool, Error> {
    let generation = obj.meta().generation;
    let conditions = status::conditions(old, ready, synced, generation, Timestamp::now());
    let current = obj.status_json();
    let same_at_provider = at_provider
        .as_ref()
        .is_none_or(|a| current.get("atProvider") == Some(a));
    let same_generation = current.get("observedGeneration").and_then(|g| g.as_i64()) == generation;
    if status::same_conditions(old, &conditions) && same_at_provider && same_generation {
        return Ok(false);
    }
    let mut patch = json!({"status": {"conditions": conditions, "observedGeneration": generation}});
    if let Some(at_provider) = at_provider {
        patch["status"]["atProvider"] = at_provider;
    }
    api.patch_status(&obj.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(true)
}

async fn report_transition<K: ManagedKind>(ctx: &Ctx, obj: &K, old: &[Condition], p: &Projection) {
    let was_ready = old.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    if p.synced.status == "False" {
        let reason = if p.exists {
            event::CANNOT_UPDATE
        } else {
            event::CANNOT_CREATE
        };
        publish(ctx, obj, EventType::Warning, reason, &p.synced.message).await;
    } else if p.ready.status == "True" && !was_ready {
        publish(
            ctx,
            obj,
            EventType::Normal,
            event::CREATED,
            "the SQL object exists and matches the spec",
        )
        .await;
    }
}

/// Publishes an event; failures are logged, never fatal (events are best effort).
async fn publish<K: ManagedKind>(ctx: &Ctx, obj: &K, type_: EventType, reason: &str, note: &str) {
    let reference = obj.object_ref(&());
    let note: String = note.chars().take(1000).collect();
    let ev = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
        tracing::warn!(error = %e, kind = K::KIND, name = %obj.name_any(), "cannot publish event");
    }
}

fn owner_reference<K: ManagedKind>(obj: &K) -> OwnerReference {
    OwnerReference {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: K::KIND.to_owned(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Loads and validates the config a resource points at.
pub async fn load_config(
    ctx: &Ctx,
    namespace: &str,
    config: &ConfigRef,
) -> Result<(ConfigIdentity, ServerConfig), String> {
    match config.kind {
        ConfigKind::ProviderConfig => {
            let api: Api<ProviderConfig> = Api::namespaced(ctx.client.clone(), namespace);
            let pc = api
                .get_opt(&config.name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("ProviderConfig {namespace}/{} not found", config.name))?;
            let server = ServerConfig::try_from(&pc).map_err(|e| e.to_string())?;
            Ok((
                ConfigIdentity {
                    kind: ConfigKind::ProviderConfig,
                    name: config.name.clone(),
                    namespace: Some(namespace.to_owned()),
                    uid: pc.uid().unwrap_or_default(),
                },
                server,
            ))
        }
        ConfigKind::ClusterProviderConfig => {
            let api: Api<ClusterProviderConfig> = Api::all(ctx.client.clone());
            let pc = api
                .get_opt(&config.name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("ClusterProviderConfig {} not found", config.name))?;
            let server = ServerConfig::try_from(&pc).map_err(|e| e.to_string())?;
            Ok((
                ConfigIdentity {
                    kind: ConfigKind::ClusterProviderConfig,
                    name: config.name.clone(),
                    namespace: None,
                    uid: pc.uid().unwrap_or_default(),
                },
                server,
            ))
        }
    }
}

/// ProviderConfigUsage named after the resource's UID, controlled by it (Crossplane's
/// tracker, reference/crossplane.md §1.6).
async fn ensure_usage<K: ManagedKind>(ctx: &Ctx, obj: &K, config: &ConfigRef) -> Result<(), Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let uid = obj.uid().unwrap_or_default();
    let kind = match config.kind {
        ConfigKind::ProviderConfig => "ProviderConfig",
        ConfigKind::ClusterProviderConfig => "ClusterProviderConfig",
    };
    let usage = ProviderConfigUsage::new(
        ObjectMeta {
            name: Some(uid.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(BTreeMap::from([
                (LABEL_PROVIDER_CONFIG.to_owned(), config.name.clone()),
                (LABEL_PROVIDER_CONFIG_KIND.to_owned(), kind.to_owned()),
            ])),
            owner_references: Some(vec![owner_reference(obj)]),
            ..Default::default()
        },
        ProviderConfigUsageProviderConfigRef {
            kind: match config.kind {
                ConfigKind::ProviderConfig => ProviderConfigUsageProviderConfigRefKind::ProviderConfig,
                ConfigKind::ClusterProviderConfig => {
                    ProviderConfigUsageProviderConfigRefKind::ClusterProviderConfig
                }
            },
            name: config.name.clone(),
        },
        ProviderConfigUsageResourceRef {
            api_version: format!("{GROUP}/{VERSION}"),
            kind: K::KIND.to_owned(),
            name: obj.name_any(),
            uid: Some(uid.clone()),
        },
    );
    let api: Api<ProviderConfigUsage> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(existing) = api.get_opt(&uid).await?
        && existing.provider_config_ref == usage.provider_config_ref
    {
        return Ok(());
    }
    api.patch(
        &uid,
        &PatchParams::apply(PROVIDER_MANAGER).force(),
        &Patch::Apply(&usage),
    )
    .await?;
    Ok(())
}

/// Crossplane's initialization in one write: the finalizer, and the external-name annotation
/// defaulted from `metadata.name` and persisted (so the SQL name never changes by accident).
async fn ensure_initialized<K: ManagedKind>(api: &Api<K>, obj: &K) -> Result<(), Error> {
    let has_finalizer = obj.finalizers().iter().any(|f| f == FINALIZER_MANAGED);
    let has_name = obj
        .annotations()
        .get(ANNOTATION_EXTERNAL_NAME)
        .is_some_and(|v| !v.is_empty());
    if has_finalizer && has_name {
        return Ok(());
    }
    let mut finalizers = obj.finalizers().to_vec();
    if !has_finalizer {
        finalizers.push(FINALIZER_MANAGED.to_owned());
    }
    let mut patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
    if !has_name {
        patch["metadata"]["annotations"] = json!({ANNOTATION_EXTERNAL_NAME: obj.name_any()});
    }
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

async fn remove_finalizer<K: ManagedKind>(api: &Api<K>, obj: &K) -> Result<(), Error> {
    if !obj.finalizers().iter().any(|f| f == FINALIZER_MANAGED) {
        return Ok(());
    }
    let finalizers: Vec<&String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER_MANAGED)
        .collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
    match api
        .patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn delete<K: ManagedKind>(
    ctx: &Ctx,
    obj: &K,
    api: &Api<K>,
    items: &Api<WorkItem>,
    policies: &Policies,
    worker: &str,
    old_conditions: &[Condition],
) -> Result<Action, Error> {
    let uid = obj.uid().unwrap_or_default();
    let mine = items
        .list(&ListParams::default().labels(&format!("{LABEL_RESOURCE_UID}={uid}")))
        .await?
        .items;
    if !policies.delete {
        // Orphan: the SQL object stays; the worker stops managing it.
        for item in &mine {
            let _ = items.delete(&item.name_any(), &DeleteParams::default()).await;
        }
        remove_finalizer(api, obj).await?;
        return Ok(Action::await_change());
    }
    let Some(item) = mine.into_iter().next() else {
        // Never handed to a worker: nothing exists in SQL on our account.
        remove_finalizer(api, obj).await?;
        return Ok(Action::await_change());
    };
    let item = if item.spec.operation == WorkItemOperation::Delete {
        item
    } else {
        let patch = json!({
            "apiVersion": format!("{}/{}", apis::constants::QUEUE_GROUP, VERSION),
            "kind": "WorkItem",
            "spec": {"operation": "Delete", "resourceRef": {"generation": obj.meta().generation}},
        });
        // Merge, not apply: only the operation changes; the desired state stays as the worker
        // last saw it (references are not resolved during deletion).
        items
            .patch(&item.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await?
    };
    let projection = status::project(Some(&item), policies, true, worker);
    if projection.deleted {
        items
            .delete(&item.name_any(), &DeleteParams::default())
            .await
            .ok();
        publish(
            ctx,
            obj,
            EventType::Normal,
            event::DELETED,
            "the SQL object was dropped",
        )
        .await;
        remove_finalizer(api, obj).await?;
        return Ok(Action::await_change());
    }
    if write_status(
        api,
        obj,
        old_conditions,
        &projection.ready,
        &projection.synced,
        None,
    )
    .await?
        && projection.synced.status == "False"
    {
        publish(
            ctx,
            obj,
            EventType::Warning,
            event::CANNOT_DELETE,
            &projection.synced.message,
        )
        .await;
    }
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// WorkItems of this resource under another name (its external name changed): the old SQL
/// object is left alone, as Crossplane does, and the worker stops managing it.
async fn forget_renamed_items(items: &Api<WorkItem>, uid: &str, current: &str) -> Result<(), Error> {
    for item in items
        .list(&ListParams::default().labels(&format!("{LABEL_RESOURCE_UID}={uid}")))
        .await?
        .items
    {
        if item.name_any() != current {
            items.delete(&item.name_any(), &DeleteParams::default()).await?;
        }
    }
    Ok(())
}

fn work_item<K: ManagedKind>(
    obj: &K,
    worker: &str,
    worker_namespace: &str,
    item_name: &str,
    request: &Unresolved,
    resolved: &Resolved,
    operation: WorkItemOperation,
) -> WorkItem {
    let desired = match serde_json::to_value(&resolved.desired) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    let annotations = obj.annotations();
    let spec = WorkItemSpec {
        worker: worker.to_owned(),
        resource_ref: WorkItemResourceRef {
            api_version: format!("{GROUP}/{VERSION}"),
            kind: K::KIND.to_owned(),
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
            uid: obj.uid().unwrap_or_default(),
            generation: obj.meta().generation,
        },
        kind: match kind_of(&resolved.desired) {
            "Database" => WorkItemKind::Database,
            "Login" => WorkItemKind::Login,
            "User" => WorkItemKind::User,
            _ => WorkItemKind::Schema,
        },
        database: resolved.desired.database().map(|d| d.as_str().to_owned()),
        external_name: request.external_name().as_str().to_owned(),
        operation,
        management_policies: Some(request.policies().to_list()),
        poll_interval: annotations.get(ANNOTATION_POLL_INTERVAL).cloned(),
        reconcile_requested_at: annotations.get(ANNOTATION_RECONCILE_REQUESTED_AT).cloned(),
        desired,
    };
    let mut item = WorkItem::new(item_name, spec);
    item.metadata.namespace = Some(worker_namespace.to_owned());
    item.metadata.labels = Some(BTreeMap::from([
        (LABEL_WORKER.to_owned(), worker.to_owned()),
        (LABEL_RESOURCE_UID.to_owned(), obj.uid().unwrap_or_default()),
    ]));
    item
}

fn at_provider(item: &WorkItem, resolved: &Resolved) -> Option<serde_json::Value> {
    let mut map: serde_json::Map<String, serde_json::Value> =
        item.status.as_ref()?.at_provider.clone()?.into_iter().collect();
    for (key, value) in &resolved.shown {
        map.insert((*key).to_owned(), json!(value));
    }
    Some(serde_json::Value::Object(map))
}

/// Resolves references, honouring `resolve: IfNotPresent` by reusing the names recorded in
/// `status.atProvider` (which also keeps the immutable database and login from moving).
async fn resolve<K: ManagedKind>(
    ctx: &Ctx,
    obj: &K,
    namespace: &str,
    request: &Unresolved,
    status: &serde_json::Value,
) -> Result<Resolved, String> {
    let pinned = |key: &str| {
        status
            .get("atProvider")
            .and_then(|a| a.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let controller = obj
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone());
    let mut shown = BTreeMap::new();
    match request {
        Unresolved::Database(m) => Ok(Resolved {
            desired: Desired::Database(m.for_provider.clone()),
            shown,
            credentials: None,
        }),
        Unresolved::Login(m) => {
            let credentials = match &m.for_provider.kind {
                LoginKind::Sql { password, .. } => {
                    Some((m.external_name.as_str().to_owned(), password.clone()))
                }
                LoginKind::External { .. } => None,
            };
            Ok(Resolved {
                desired: Desired::Login(m.for_provider.clone()),
                shown,
                credentials,
            })
        }
        Unresolved::User(m) => {
            let pinned_db = pinned("database");
            let pinned_login = pinned("login");
            let mut login_password: Option<SecretKeyRef> = None;
            let mut login_name: Option<String> = None;
            let request = m.for_provider.clone();
            let mut lookups = Vec::new();
            lookups.push((TargetKind::Database, request.database.clone(), pinned_db));
            if let UserKind::ForLogin { login } = &request.kind {
                lookups.push((TargetKind::Login, login.clone(), pinned_login));
            }
            // UserRequest::resolve asks for the database first, then the login: answer in
            // that order (two targets may be equal values of different kinds).
            let mut names = Vec::new();
            for (kind, target, pin) in lookups {
                let found = resolve_one(
                    ctx,
                    namespace,
                    &target,
                    kind,
                    controller.as_deref(),
                    pin.as_deref(),
                )
                .await?;
                if let (TargetKind::Login, Some(password)) = (kind, found.password.clone()) {
                    login_password = Some(password);
                }
                names.push(found.name);
            }
            let mut answers = names.into_iter();
            let resolved =
                request.resolve(|_| answers.next().ok_or_else(|| "unresolved reference".to_string()))?;
            shown.insert("database", resolved.database.as_str().to_owned());
            if let UserKind::ForLogin { login } = &resolved.kind {
                shown.insert("login", login.as_str().to_owned());
                login_name = Some(login.as_str().to_owned());
            }
            let credentials = match &resolved.kind {
                UserKind::Contained { password } => {
                    Some((m.external_name.as_str().to_owned(), password.clone()))
                }
                UserKind::ForLogin { .. } => login_password.map(|p| (login_name.unwrap_or_default(), p)),
                _ => None,
            };
            Ok(Resolved {
                desired: Desired::User(resolved),
                shown,
                credentials,
            })
        }
        Unresolved::Schema(m) => {
            let request = m.for_provider.clone();
            let db = resolve_one(
                ctx,
                namespace,
                &request.database,
                TargetKind::Database,
                controller.as_deref(),
                pinned("database").as_deref(),
            )
            .await?;
            let owner = match &request.owner {
                Some(target) => Some(
                    resolve_one(
                        ctx,
                        namespace,
                        target,
                        TargetKind::User,
                        controller.as_deref(),
                        None,
                    )
                    .await?
                    .name,
                ),
                None => None,
            };
            // SchemaRequest::resolve asks for the database first, then the owner.
            let mut answers = std::iter::once(db.name.clone()).chain(owner);
            let resolved =
                request.resolve(|_| answers.next().ok_or_else(|| "unresolved reference".to_string()))?;
            shown.insert("database", resolved.database.as_str().to_owned());
            Ok(Resolved {
                desired: Desired::Schema(resolved),
                shown,
                credentials: None,
            })
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TargetKind {
    Database,
    Login,
    User,
}

struct Found {
    name: SqlName,
    password: Option<SecretKeyRef>,
}

fn external_name_of(meta: &ObjectMeta) -> String {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_EXTERNAL_NAME))
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| meta.name.clone().unwrap_or_default())
}

/// Resolves one reference to the referenced resource's external name.
async fn resolve_one(
    ctx: &Ctx,
    namespace: &str,
    target: &Target,
    kind: TargetKind,
    controller: Option<&str>,
    pinned: Option<&str>,
) -> Result<Found, String> {
    let label = match kind {
        TargetKind::Database => "Database",
        TargetKind::Login => "Login",
        TargetKind::User => "User",
    };
    let (ns, policy) = match target {
        Target::Name(name) => {
            return Ok(Found {
                name: name.clone(),
                password: None,
            });
        }
        Target::Ref(r) => (
            r.namespace.clone().unwrap_or_else(|| namespace.to_owned()),
            r.policy,
        ),
        Target::Selector(s) => (
            s.namespace.clone().unwrap_or_else(|| namespace.to_owned()),
            s.policy,
        ),
    };
    if let Some(pinned) = pinned.filter(|_| !policy.resolve_always)
        && let Ok(name) = SqlName::new(pinned)
        && kind != TargetKind::Login
    {
        return Ok(Found { name, password: None });
    }
    // Each kind's objects as (metadata, login password ref if any).
    let objects: Vec<(ObjectMeta, Option<SecretKeyRef>)> = {
        let lp = match target {
            Target::Selector(s) => {
                let selector: Vec<String> = s.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                ListParams::default().labels(&selector.join(","))
            }
            _ => ListParams::default(),
        };
        let wanted = match target {
            Target::Ref(r) => Some(r.name.clone()),
            _ => None,
        };
        let client = ctx.client.clone();
        let list = match kind {
            TargetKind::Database => Api::<Database>::namespaced(client, &ns).list(&lp).await.map(|l| {
                l.items
                    .into_iter()
                    .map(|d| (d.metadata, None))
                    .collect::<Vec<_>>()
            }),
            TargetKind::Login => Api::<Login>::namespaced(client, &ns).list(&lp).await.map(|l| {
                l.items
                    .into_iter()
                    .map(|login| {
                        let password =
                            Managed::try_from(&login)
                                .ok()
                                .and_then(|m| match m.for_provider.kind {
                                    LoginKind::Sql { password, .. } => Some(password),
                                    LoginKind::External { .. } => None,
                                });
                        (login.metadata, password)
                    })
                    .collect()
            }),
            TargetKind::User => Api::<User>::namespaced(client, &ns)
                .list(&lp)
                .await
                .map(|l| l.items.into_iter().map(|u| (u.metadata, None)).collect()),
        }
        .map_err(|e| format!("cannot list {label}s in {ns}: {e}"))?;
        list.into_iter()
            .filter(|(m, _)| wanted.as_ref().is_none_or(|w| m.name.as_ref() == Some(w)))
            .collect()
    };
    let chosen = match target {
        Target::Ref(r) => objects.into_iter().next().ok_or_else(|| {
            format!(
                "cannot resolve references: cannot get referenced resource: {label} {ns}/{} not found",
                r.name
            )
        })?,
        Target::Selector(s) => {
            let mut candidates: Vec<_> = objects
                .into_iter()
                .filter(|(m, _)| {
                    !s.match_controller_ref
                        || controller.is_some_and(|c| {
                            m.owner_references
                                .iter()
                                .flatten()
                                .any(|o| o.controller == Some(true) && o.uid == c)
                        })
                })
                .collect();
            candidates.sort_by(|a, b| a.0.name.cmp(&b.0.name));
            candidates.into_iter().next().ok_or_else(|| {
                format!("cannot resolve references: no resources matched selector for {label} in {ns}")
            })?
        }
        Target::Name(_) => unreachable!("handled above"),
    };
    let external = external_name_of(&chosen.0);
    let name = SqlName::new(&external)
        .map_err(|e| format!("referenced {label} has an invalid external name: {e}"))?;
    if let Some(pinned) = pinned
        && kind != TargetKind::User
        && pinned != name.as_str()
    {
        return Err(format!(
            "{} is immutable: it resolved to {pinned:?} before and now resolves to {:?}; delete and recreate to move the object",
            label.to_ascii_lowercase(),
            name.as_str()
        ));
    }
    Ok(Found {
        name,
        password: chosen.1,
    })
}

/// Makes sure the password Secret has a value under its key: created (or the key added) with
/// a generated password when missing, never overwritten.
async fn ensure_password<K: ManagedKind>(ctx: &Ctx, obj: &K, secret: &SecretKeyRef) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &secret.namespace);
    match api.get_opt(&secret.name).await? {
        Some(existing)
            if existing
                .data
                .as_ref()
                .is_some_and(|d| d.contains_key(&secret.key)) =>
        {
            Ok(())
        }
        Some(existing) => {
            let password = passwords::generate().map_err(|e| Error::Other(e.to_string()))?;
            let patch = json!({
                "metadata": {"resourceVersion": existing.metadata.resource_version},
                "stringData": {secret.key.clone(): password},
            });
            api.patch(&secret.name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            Ok(())
        }
        None => {
            let password = passwords::generate().map_err(|e| Error::Other(e.to_string()))?;
            let generated_name = format!("{}-password", obj.name_any());
            let owned = secret.name == generated_name;
            let new = Secret {
                metadata: ObjectMeta {
                    name: Some(secret.name.clone()),
                    namespace: Some(secret.namespace.clone()),
                    // A Secret the provider named itself goes away with the resource; one the
                    // user named is theirs to keep.
                    owner_references: owned.then(|| vec![owner_reference(obj)]),
                    labels: Some(BTreeMap::from([(
                        workers::LABEL_MANAGED_BY.to_owned(),
                        workers::MANAGED_BY.to_owned(),
                    )])),
                    ..Default::default()
                },
                string_data: Some(BTreeMap::from([(secret.key.clone(), password)])),
                type_: Some("Opaque".into()),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &new).await {
                Ok(_) => Ok(()),
                // Someone created it meanwhile: theirs wins, never overwritten.
                Err(kube::Error::Api(s)) if s.is_conflict() => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Writes the connection Secret (type `connection.crossplane.io/v1alpha1`, controlled by the
/// resource) when its content changed.
async fn publish_connection<K: ManagedKind>(
    ctx: &Ctx,
    obj: &K,
    secret_name: &str,
    username: &str,
    password_ref: &SecretKeyRef,
    server: &ServerConfig,
    database: Option<&str>,
) -> Result<(), Error> {
    let source: Api<Secret> = Api::namespaced(ctx.client.clone(), &password_ref.namespace);
    let Some(password) = source
        .get_opt(&password_ref.name)
        .await?
        .and_then(|s| s.data)
        .and_then(|d| d.get(&password_ref.key).cloned())
        .and_then(|b| String::from_utf8(b.0).ok())
    else {
        return Ok(());
    };
    let data = secret_data(&Details {
        username,
        password: &password,
        endpoint: &server.endpoint.host,
        port: server.endpoint.port,
        database,
    });
    let data: BTreeMap<String, ByteString> = data
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect();
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(existing) = api.get_opt(secret_name).await?
        && existing.data.as_ref() == Some(&data)
    {
        return Ok(());
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_owned()),
            namespace: Some(namespace.clone()),
            owner_references: Some(vec![owner_reference(obj)]),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("connection.crossplane.io/v1alpha1".into()),
        ..Default::default()
    };
    if let Err(e) = api
        .patch(
            secret_name,
            &PatchParams::apply(PROVIDER_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
    {
        publish(
            ctx,
            obj,
            EventType::Warning,
            event::CANNOT_PUBLISH,
            &e.to_string(),
        )
        .await;
        return Err(e.into());
    }
    Ok(())
}
