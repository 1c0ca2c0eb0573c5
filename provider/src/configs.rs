//! The (Cluster)ProviderConfig controller: one identity-bound worker per config.
//!
//! ```text
//! config ─▶ validate (apis::config) ─▶ SA (+ identity annotations), Roles, RoleBindings, Deployment (SSA)
//!        ─▶ Deployment + Lease + WorkItems ─▶ Ready, WorkerReady, users, queue depth, oldest pending age
//! ```
//! Deleting a config is blocked (finalizer `in-use.crossplane.io`) while ProviderConfigUsages
//! name it; once free, owner references take the worker away with it.

use crate::{
    Ctx, Error,
    status::Cond,
    workers::{self, ConfigIdentity, LABEL_INSTANCE},
};
use apis::{
    config::ServerConfig,
    constants::{
        ANNOTATION_CONNECTION_ERROR, ANNOTATION_CONNECTION_ERROR_REASON, FINALIZER_IN_USE,
        LABEL_PROVIDER_CONFIG, LABEL_PROVIDER_CONFIG_KIND, LABEL_WORKER, condition, event, reason,
    },
    generated::{
        clusterproviderconfigs::ClusterProviderConfig, providerconfigs::ProviderConfig, workitems::WorkItem,
    },
    queue::PROVIDER_MANAGER,
    request::ConfigKind,
    usage::ProviderConfigUsage,
};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{Pod, ServiceAccount},
        rbac::v1::{Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::Condition,
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event as KubeEvent, EventType},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use std::{fmt::Debug, sync::Arc, time::Duration};

/// How long a Lease may go unrenewed before the worker counts as stuck (kube-lease-manager's
/// default duration is 30 s; twice that tolerates one missed renewal and clock skew).
const LEASE_STALE_AFTER: Duration = Duration::from_secs(60);
/// How often a config's worker health is re-read.
const RESYNC: Duration = Duration::from_secs(30);
/// Re-read interval while the worker is not ready: what the worker reports on its Lease (a
/// certificate problem, say) reaches `WorkerReady` this soon, as Lease changes are not watched.
const RESYNC_NOT_READY: Duration = Duration::from_secs(10);

/// What both config kinds provide to the reconciler.
pub trait ConfigKindExt:
    Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Which kind.
    const KIND: ConfigKind;
    /// Validated config.
    fn server(&self) -> Result<ServerConfig, String>;
    /// Current status as JSON.
    fn status_json(&self) -> serde_json::Value;
    /// The API to write this object through.
    fn api(&self, client: kube::Client) -> Api<Self>;
}

impl ConfigKindExt for ProviderConfig {
    const KIND: ConfigKind = ConfigKind::ProviderConfig;
    fn server(&self) -> Result<ServerConfig, String> {
        ServerConfig::try_from(self).map_err(|e| e.to_string())
    }
    fn status_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.status).unwrap_or_default()
    }
    fn api(&self, client: kube::Client) -> Api<Self> {
        Api::namespaced(client, self.metadata.namespace.as_deref().unwrap_or_default())
    }
}

impl ConfigKindExt for ClusterProviderConfig {
    const KIND: ConfigKind = ConfigKind::ClusterProviderConfig;
    fn server(&self) -> Result<ServerConfig, String> {
        ServerConfig::try_from(self).map_err(|e| e.to_string())
    }
    fn status_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.status).unwrap_or_default()
    }
    fn api(&self, client: kube::Client) -> Api<Self> {
        Api::all(client)
    }
}

fn kind_name(kind: ConfigKind) -> &'static str {
    match kind {
        ConfigKind::ProviderConfig => "ProviderConfig",
        ConfigKind::ClusterProviderConfig => "ClusterProviderConfig",
    }
}

/// Entry point for `Controller::run`.
pub async fn reconcile<K: ConfigKindExt>(obj: Arc<K>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&*obj, &ctx).await;
    ctx.metrics
        .reconciled(kind_name(K::KIND), started.elapsed(), result.as_ref().err());
    result
}

/// Invalid configs wait for a change; other failures retry.
pub fn error_policy<K: ConfigKindExt>(_obj: Arc<K>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    match error {
        Error::Invalid(_) => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(10)),
    }
}

async fn usages(ctx: &Ctx, identity: &ConfigIdentity) -> Result<usize, Error> {
    let selector = format!(
        "{LABEL_PROVIDER_CONFIG}={},{LABEL_PROVIDER_CONFIG_KIND}={}",
        workers::fit(&identity.name, 63),
        kind_name(identity.kind)
    );
    let api: Api<ProviderConfigUsage> = match &identity.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .len())
}

async fn reconcile_inner<K: ConfigKindExt>(obj: &K, ctx: &Ctx) -> Result<Action, Error> {
    let api = obj.api(ctx.client.clone());
    let name = obj.name_any();
    let identity = ConfigIdentity {
        kind: K::KIND,
        name: name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone().unwrap_or_default(),
    };
    let old: Vec<Condition> = obj
        .status_json()
        .get("conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let users = usages(ctx, &identity).await?;

    if obj.meta().deletion_timestamp.is_some() {
        if users > 0 {
            let message = "Blocking deletion while usages still exist".to_owned();
            let terminating = Cond {
                status: "True",
                reason: reason::IN_USE,
                message: message.clone(),
            };
            write_status(
                &api,
                obj,
                &old,
                &[(condition::TERMINATING, terminating)],
                users,
                None,
            )
            .await?;
            publish(
                ctx,
                obj,
                EventType::Warning,
                event::USAGE_ACCOUNTING,
                &format!("{message}: {users} managed resources"),
            )
            .await;
            return Ok(Action::requeue(RESYNC));
        }
        ctx.metrics.worker_state(
            &format!("{}/{}", kind_name(K::KIND), workers::worker_name(&identity)),
            None,
        );
        let finalizers: Vec<&String> = obj
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER_IN_USE)
            .collect();
        let patch =
            json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.meta().resource_version}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        return Ok(Action::await_change());
    }
    if !obj.finalizers().iter().any(|f| f == FINALIZER_IN_USE) {
        let mut finalizers = obj.finalizers().to_vec();
        finalizers.push(FINALIZER_IN_USE.to_owned());
        let patch =
            json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.meta().resource_version}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }

    let server = match obj.server() {
        Ok(server) => server,
        Err(message) => {
            let ready = Cond {
                status: "False",
                reason: reason::RECONCILE_ERROR,
                message: message.clone(),
            };
            write_status(&api, obj, &old, &[(condition::READY, ready)], users, None).await?;
            publish(ctx, obj, EventType::Warning, event::CANNOT_CONNECT, &message).await;
            return Err(Error::Invalid(message));
        }
    };

    let objects = workers::build(
        &identity,
        &server,
        &ctx.provider_namespace,
        &ctx.worker_image,
        &ctx.log_format,
        ctx.default_poll,
    );
    // Each object is applied only when it is missing or differs from what was last applied
    // (a hash annotation): the 30-second resync then costs reads, not writes.
    let pp = PatchParams::apply(PROVIDER_MANAGER).force();
    if let Some(sa) = &objects.service_account {
        let mut sa = sa.clone();
        let hash = workers::stamp(&mut sa);
        let api = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &objects.namespace);
        if workers::needs_apply(
            api.get_opt(&objects.name).await?.as_ref().map(|o| &o.metadata),
            &hash,
        ) {
            api.patch(&objects.name, &pp, &Patch::Apply(&sa)).await?;
        }
    }
    for (role, binding) in &objects.access {
        let ns = role.metadata.namespace.clone().unwrap_or_default();
        let (mut role, mut binding) = (role.clone(), binding.clone());
        let hash = workers::stamp(&mut role);
        let api = Api::<Role>::namespaced(ctx.client.clone(), &ns);
        if workers::needs_apply(
            api.get_opt(&objects.name).await?.as_ref().map(|o| &o.metadata),
            &hash,
        ) {
            api.patch(&objects.name, &pp, &Patch::Apply(&role)).await?;
        }
        let hash = workers::stamp(&mut binding);
        let api = Api::<RoleBinding>::namespaced(ctx.client.clone(), &ns);
        if workers::needs_apply(
            api.get_opt(&objects.name).await?.as_ref().map(|o| &o.metadata),
            &hash,
        ) {
            api.patch(&objects.name, &pp, &Patch::Apply(&binding)).await?;
        }
    }
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &objects.namespace);
    let mut desired = objects.deployment.clone();
    let hash = workers::stamp(&mut desired);
    let deployment = match deployments.get_opt(&objects.name).await? {
        Some(live) if !workers::deployment_needs_apply(Some(&live), &desired, &hash) => live,
        _ => {
            deployments
                .patch(&objects.name, &pp, &Patch::Apply(&desired))
                .await?
        }
    };

    // Worker health: Deployment availability and Lease freshness.
    let available = deployment
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    let ready_replicas = deployment
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let lease = Api::<Lease>::namespaced(ctx.client.clone(), &objects.namespace)
        .get_opt(&objects.name)
        .await?;
    let holder = lease
        .as_ref()
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.holder_identity.clone());
    let renewed = lease
        .as_ref()
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let stale = renewed
        .is_some_and(|t| Timestamp::now().duration_since(t).as_secs() > LEASE_STALE_AFTER.as_secs() as i64);
    let connection = lease.as_ref().and_then(|l| {
        let annotations = l.metadata.annotations.as_ref()?;
        let reason = annotations.get(ANNOTATION_CONNECTION_ERROR_REASON)?;
        let message = annotations
            .get(ANNOTATION_CONNECTION_ERROR)
            .cloned()
            .unwrap_or_default();
        Some((reason.clone(), message))
    });
    let worker_ready = worker_ready(&WorkerHealth {
        namespace: &objects.namespace,
        name: &objects.name,
        available,
        stale,
        holder: holder.as_deref(),
        connection: connection.as_ref().map(|(r, m)| (r.as_str(), m.as_str())),
    });
    if worker_ready.reason == "LeaseExpired" {
        // Pods look alive but nobody renews the Lease: the worker is stuck. Restart it.
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &objects.namespace);
        let selector = format!("{LABEL_INSTANCE}={}", objects.name);
        for pod in pods.list(&ListParams::default().labels(&selector)).await?.items {
            pods.delete(&pod.name_any(), &DeleteParams::default()).await.ok();
        }
        publish(
            ctx,
            obj,
            EventType::Warning,
            "LeaseExpired",
            "worker Lease not renewed; restarting its pods",
        )
        .await;
    }

    // Queue depth: items the worker has not acted on at their current generation.
    let items: Api<WorkItem> = Api::namespaced(ctx.client.clone(), &objects.namespace);
    let listed = items
        .list(&ListParams::default().labels(&format!("{LABEL_WORKER}={}", objects.name)))
        .await?
        .items;
    let pending: Vec<&WorkItem> = listed
        .iter()
        .filter(|i| i.status.as_ref().and_then(|s| s.observed_generation) != i.metadata.generation)
        .collect();
    let oldest = pending
        .iter()
        .filter_map(|i| i.metadata.creation_timestamp.as_ref())
        .map(|t| Timestamp::now().duration_since(t.0).as_secs().max(0))
        .max()
        .unwrap_or(0);

    ctx.metrics.worker_state(
        &format!("{}/{}", kind_name(K::KIND), objects.name),
        Some(worker_ready.reason),
    );
    let ready = Cond {
        status: "True",
        reason: reason::AVAILABLE,
        message: String::new(),
    };
    let resync = if worker_ready.status == "True" {
        RESYNC
    } else {
        RESYNC_NOT_READY
    };
    let mut conditions = vec![(condition::READY, ready), (condition::WORKER_READY, worker_ready)];
    if server.tls.trust_server_certificate {
        conditions.push((
            condition::INSECURE,
            Cond {
                status: "True",
                reason: "TrustServerCertificate",
                message: "the worker does not validate the server certificate (tls.trustServerCertificate: true); use a CA for production".into(),
            },
        ));
    }
    let worker_status = json!({
        "namespace": objects.namespace,
        "deployment": objects.name,
        "serviceAccount": server.worker.service_account_name.clone().unwrap_or_else(|| objects.name.clone()),
        "leaseHolder": holder,
        "readyReplicas": ready_replicas,
        "queueDepth": pending.len(),
        "oldestPendingAgeSeconds": oldest,
    });
    write_status(&api, obj, &old, &conditions, users, Some(worker_status)).await?;
    Ok(Action::requeue(resync))
}

/// What the provider knows about a config's worker.
#[derive(Clone, Copy)]
pub struct WorkerHealth<'a> {
    /// Namespace of the worker.
    pub namespace: &'a str,
    /// Name of the worker (Deployment, Lease).
    pub name: &'a str,
    /// Available replicas of its Deployment.
    pub available: i32,
    /// The Lease has a holder who stopped renewing it.
    pub stale: bool,
    /// The Lease holder.
    pub holder: Option<&'a str>,
    /// What the Lease holder last reported about its SQL connection (annotations on the
    /// Lease): the worker's error reason and message; none while it connects. Ignored on a
    /// stale Lease.
    pub connection: Option<(&'a str, &'a str)>,
}

/// Reasons a worker reports for a failed connection, as `WorkerReady` reasons (worker
/// `run::sql_status`: credential and login failures, unreachable, and its `ErrorKind` labels);
/// anything else is `SqlConnectionFailed`, so a condition reason is always one of ours.
const CONNECTION_REASONS: &[&str] = &[
    "CertificateUntrusted",
    "CertificateNameMismatch",
    "TlsFailed",
    "CredentialsUnavailable",
    "LoginFailed",
    "CannotConnect",
    "PermissionDenied",
    "NotFound",
    "Invalid",
];

/// The `WorkerReady` condition. A worker that cannot reach SQL Server is never ready, and its
/// own reason (a certificate the CA does not sign, a host name the certificate lacks, a
/// refused login) is the condition's reason, so a wrong `tls` block reads as such.
pub fn worker_ready(h: &WorkerHealth<'_>) -> Cond {
    // A report on a Lease nobody renews is stale: its writer is gone.
    let connection = h.connection.filter(|_| !h.stale).map(|(reason, message)| Cond {
        status: "False",
        reason: CONNECTION_REASONS
            .iter()
            .find(|r| **r == reason)
            .copied()
            .unwrap_or("SqlConnectionFailed"),
        message: format!(
            "worker {}/{} cannot connect to SQL Server: {message}",
            h.namespace, h.name
        ),
    });
    if h.available == 0 {
        return connection.unwrap_or_else(|| Cond {
            status: "False",
            reason: "DeploymentUnavailable",
            message: format!(
                "worker {}/{} has no available pod (a worker is ready once it can reach SQL Server; see its logs)",
                h.namespace, h.name
            ),
        });
    }
    if h.stale && h.holder.is_some() {
        return Cond {
            status: "False",
            reason: "LeaseExpired",
            message: "the worker stopped renewing its Lease; its pods were restarted".into(),
        };
    }
    let Some(holder) = h.holder else {
        return Cond {
            status: "False",
            reason: "LeaseNotHeld",
            message: "no worker pod holds the Lease yet".into(),
        };
    };
    connection.unwrap_or_else(|| Cond {
        status: "True",
        reason: "LeaseHeld",
        message: format!("worker pod {holder} holds the Lease"),
    })
}

async fn write_status<K: ConfigKindExt>(
    api: &Api<K>,
    obj: &K,
    old: &[Condition],
    conditions: &[(&str, Cond)],
    users: usize,
    worker: Option<serde_json::Value>,
) -> Result<(), Error> {
    let now = Timestamp::now();
    let generation = obj.meta().generation;
    let list: Vec<Condition> = conditions
        .iter()
        .map(|(kind, c)| {
            let since = match old.iter().find(|o| o.type_ == *kind) {
                Some(o) if o.status == c.status => o.last_transition_time.clone(),
                _ => k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
            };
            Condition {
                type_: (*kind).to_owned(),
                status: c.status.to_owned(),
                reason: c.reason.to_owned(),
                message: c.message.clone(),
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect();
    let current = obj.status_json();
    let mut status = json!({"conditions": list, "users": users, "observedGeneration": generation});
    if let Some(worker) = worker {
        status["worker"] = worker;
    }
    let unchanged = crate::status::same_conditions(
        &current
            .get("conditions")
            .and_then(|c| serde_json::from_value::<Vec<Condition>>(c.clone()).ok())
            .unwrap_or_default(),
        &list,
    ) && current.get("users") == status.get("users")
        && current.get("worker") == status.get("worker")
        && current.get("observedGeneration") == status.get("observedGeneration");
    if unchanged {
        return Ok(());
    }
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

async fn publish<K: ConfigKindExt>(ctx: &Ctx, obj: &K, type_: EventType, reason: &str, note: &str) {
    let ev = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ready_table() {
        let base = WorkerHealth {
            namespace: "ns",
            name: "w",
            available: 1,
            stale: false,
            holder: Some("w-pod"),
            connection: None,
        };
        let untrusted = Some((
            "CertificateUntrusted",
            "the server's TLS certificate is not signed by a trusted CA (UnknownIssuer)",
        ));
        // (why, health, status, reason, words in the message)
        let rows: Vec<(&str, WorkerHealth<'_>, &str, &str, &str)> = vec![
            (
                "holder renews and reaches SQL",
                WorkerHealth { ..base },
                "True",
                "LeaseHeld",
                "w-pod",
            ),
            (
                "wrong CA: the pod is unready and the Lease says why",
                WorkerHealth {
                    available: 0,
                    connection: untrusted,
                    ..base
                },
                "False",
                "CertificateUntrusted",
                "not signed by a trusted CA",
            ),
            (
                "the failure is reported even before readiness catches up",
                WorkerHealth {
                    connection: Some(("CertificateNameMismatch", "does not match the host name")),
                    ..base
                },
                "False",
                "CertificateNameMismatch",
                "cannot connect to SQL Server: does not match",
            ),
            (
                "missing or wrong cloud identity: the reason says so, not DeploymentUnavailable",
                WorkerHealth {
                    available: 0,
                    connection: Some((
                        "CredentialsUnavailable",
                        "AADSTS700213: No matching federated identity record.",
                    )),
                    ..base
                },
                "False",
                "CredentialsUnavailable",
                "AADSTS700213",
            ),
            (
                "SQL Server refused the login (e.g. a rotated password not yet re-read)",
                WorkerHealth {
                    connection: Some(("LoginFailed", "SQL error 18456: Login failed for user 'sa'.")),
                    ..base
                },
                "False",
                "LoginFailed",
                "18456",
            ),
            (
                "an unknown reason from a newer worker is still a failure",
                WorkerHealth {
                    available: 0,
                    connection: Some(("SomethingNew", "boom")),
                    ..base
                },
                "False",
                "SqlConnectionFailed",
                "boom",
            ),
            (
                "a report left on a Lease nobody renews is not repeated",
                WorkerHealth {
                    available: 0,
                    stale: true,
                    connection: untrusted,
                    ..base
                },
                "False",
                "DeploymentUnavailable",
                "no available pod",
            ),
            (
                "unavailable without a report",
                WorkerHealth {
                    available: 0,
                    holder: None,
                    ..base
                },
                "False",
                "DeploymentUnavailable",
                "no available pod",
            ),
            (
                "stuck holder beats a connection report",
                WorkerHealth {
                    stale: true,
                    connection: untrusted,
                    ..base
                },
                "False",
                "LeaseExpired",
                "stopped renewing",
            ),
            (
                "no holder yet",
                WorkerHealth { holder: None, ..base },
                "False",
                "LeaseNotHeld",
                "no worker pod",
            ),
        ];
        for (why, health, status, reason, words) in rows {
            let c = worker_ready(&health);
            assert_eq!((c.status, c.reason), (status, reason), "{why}: {c:?}");
            assert!(c.message.contains(words), "{why}: {:?}", c.message);
        }
    }
}
