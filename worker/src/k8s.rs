//! The Kubernetes edge, kept thin: WorkItem → [`Item`] and [`Seen`] (pure), outcome →
//! status document (pure), and the few API calls (status SSA, Secret and CA reads).

use crate::{
    config::{CaKind, CaSource},
    exec::credentials::BoxFuture,
    kinds::Operation,
    queue::{ObjectKey, Seen},
    reconcile::{Item, ItemError, Outcome, SecretSource, SecretValue},
    sql::Password,
};
use apis::{
    constants::{ANNOTATION_CONNECTION_ERROR, ANNOTATION_CONNECTION_ERROR_REASON, QUEUE_GROUP, VERSION},
    generated::workitems::{WorkItem, WorkItemOperation},
    identifier::SqlName,
    policies::Policies,
    queue::WORKER_MANAGER,
    request::{Desired, SecretKeyRef},
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

/// What the watch says about a WorkItem, for the scheduler.
pub fn seen(wi: &WorkItem, default_poll: std::time::Duration) -> Seen {
    let database = wi.spec.database.as_deref().filter(|d| !d.is_empty());
    let kind = format!("{:?}", wi.spec.kind);
    Seen {
        key: wi.name_any(),
        object: ObjectKey::new(&kind, database, &wi.spec.external_name),
        generation: wi.metadata.generation.unwrap_or(0),
        observed_generation: wi.status.as_ref().and_then(|s| s.observed_generation),
        poll: wi
            .spec
            .poll_interval
            .as_deref()
            .filter(|p| !p.is_empty())
            .and_then(|p| apis::config::parse_go_duration(p).ok())
            .map(|p| p.max(std::time::Duration::from_secs(1)))
            .or(Some(default_poll)),
    }
}

/// Builds the reconciler's view of a WorkItem, validating everything again (the worker
/// trusts no writer). The error is the message for `status.lastError`.
pub fn item(wi: &WorkItem) -> Result<Item, String> {
    let desired = Desired::from_work_item(&Value::Object(wi.spec.desired.clone().into_iter().collect()))
        .map_err(|e| format!("spec.desired: {e}"))?;
    let kind = format!("{:?}", wi.spec.kind);
    if apis::queue::kind_of(&desired) != kind {
        return Err(format!(
            "spec.kind is {kind} but spec.desired describes a {}",
            apis::queue::kind_of(&desired)
        ));
    }
    let external_name =
        SqlName::new(wi.spec.external_name.clone()).map_err(|e| format!("spec.externalName: {e}"))?;
    let policies = match &wi.spec.management_policies {
        None => Policies::ALL,
        Some(list) => Policies::parse(list).map_err(|e| format!("spec.managementPolicies: {e}"))?,
    };
    Ok(Item {
        key: wi.name_any(),
        operation: match wi.spec.operation {
            WorkItemOperation::Apply => Operation::Apply,
            WorkItemOperation::Delete => Operation::Delete,
        },
        policies,
        external_name,
        desired,
        previous_at_provider: wi
            .status
            .as_ref()
            .and_then(|s| s.at_provider.clone())
            .map(|m| Value::Object(m.into_iter().collect())),
    })
}

/// The status the worker applies: everything it owns, every time (SSA semantics: a field
/// left out is a field given up).
pub struct StatusInput<'a> {
    /// WorkItem generation acted on.
    pub generation: i64,
    /// Managed resource generation acted on.
    pub resource_generation: Option<i64>,
    /// Result (or the invalid-item error).
    pub outcome: &'a Outcome,
    /// Consecutive failures.
    pub attempts: u32,
    /// This pod.
    pub holder: &'a str,
    /// RFC 3339.
    pub now: String,
}

/// The apply document for the status subresource.
pub fn status_document(input: &StatusInput<'_>) -> Value {
    let o = input.outcome;
    let mut status = json!({
        "observedGeneration": input.generation,
        "exists": o.exists,
        "upToDate": o.up_to_date,
        "deleted": o.deleted,
        "drift": o.drift,
        "attempts": input.attempts,
        "lastObservedTime": input.now,
        "holder": input.holder,
    });
    if let Some(g) = input.resource_generation {
        status["resourceGeneration"] = json!(g);
    }
    if let Some(at) = &o.at_provider {
        status["atProvider"] = at.clone();
    }
    if let Some(ItemError {
        reason,
        number,
        message,
    }) = &o.error
    {
        let mut e = json!({"reason": reason, "message": message});
        if let Some(n) = number {
            e["number"] = json!(n);
        }
        status["lastError"] = e;
    } else if let Some(note) = &o.note {
        // Not a failure of this attempt, but something the user must act on.
        let reason = if o.action == Some(crate::kinds::Action::Missing) {
            "NotFound"
        } else {
            "CannotUpdateInPlace"
        };
        status["lastError"] = json!({"reason": reason, "message": note});
    }
    json!({
        "apiVersion": format!("{QUEUE_GROUP}/{VERSION}"),
        "kind": "WorkItem",
        "status": status,
    })
}

/// Applies a status document under the worker's field manager.
/// Whether writing `document` would change nothing but `lastObservedTime`: then the write is
/// skipped, so an idle sweep costs no apiserver write (and wakes no provider reconcile).
pub fn status_unchanged(
    current: Option<&apis::generated::workitems::WorkItemStatus>,
    document: &Value,
) -> bool {
    fn clean(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, v)| !v.is_null() && k.as_str() != "lastObservedTime")
                    .map(|(k, v)| (k.clone(), clean(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
            other => other.clone(),
        }
    }
    let Some(current) = current else { return false };
    let Ok(current) = serde_json::to_value(current) else {
        return false;
    };
    clean(&current) == clean(&document["status"])
}

pub async fn write_status(api: &Api<WorkItem>, name: &str, document: &Value) -> Result<(), kube::Error> {
    api.patch_status(
        name,
        &PatchParams::apply(WORKER_MANAGER).force(),
        &Patch::Apply(document),
    )
    .await
    .map(drop)
}

/// Reads password Secrets by name (the worker's Role grants `get` on exactly those).
pub struct KubeSecrets {
    /// API client.
    pub client: Client,
}

impl SecretSource for KubeSecrets {
    fn get<'a>(&'a self, r: &'a SecretKeyRef) -> BoxFuture<'a, Result<Option<SecretValue>, String>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &r.namespace);
            let secret = api
                .get_opt(&r.name)
                .await
                .map_err(|e| format!("cannot read Secret {}/{}: {e}", r.namespace, r.name))?;
            let Some(secret) = secret else { return Ok(None) };
            let value = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|b| String::from_utf8(b.0.clone()))
                .transpose()
                .map_err(|_| format!("Secret {}/{} key {} is not UTF-8", r.namespace, r.name, r.key))?;
            Ok(value.map(|v| SecretValue {
                password: Password::new(v),
                version: format!(
                    "{}/{}",
                    secret.metadata.uid.unwrap_or_default(),
                    secret.metadata.resource_version.unwrap_or_default()
                ),
            }))
        })
    }
}

/// The merge patch of the Lease's annotations that reports the last SQL ping: the failure's
/// reason and message while it fails, neither once it works. The provider turns them into the
/// config's `WorkerReady` condition (a worker whose CA is wrong says so there).
pub fn connection_report(error: Option<&crate::sql::error::SqlError>) -> Value {
    match crate::run::sql_status(error) {
        Some((reason, message)) => json!({"metadata": {"annotations": {
            ANNOTATION_CONNECTION_ERROR_REASON: reason,
            // Annotation values have no length limit of their own, but the whole set does.
            ANNOTATION_CONNECTION_ERROR: message.chars().take(1000).collect::<String>(),
        }}}),
        None => json!({"metadata": {"annotations": {
            ANNOTATION_CONNECTION_ERROR_REASON: null,
            ANNOTATION_CONNECTION_ERROR: null,
        }}}),
    }
}

/// Applies a [`connection_report`] to the worker's Lease (its Role allows `patch` on it).
pub async fn report_connection(
    client: &Client,
    namespace: &str,
    lease: &str,
    patch: &Value,
) -> kube::Result<()> {
    Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), namespace)
        .patch(lease, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(drop)
}

/// Reads the CA bundle named by `TLS_CA`.
pub async fn read_ca(client: &Client, ca: &CaSource) -> Result<Vec<u8>, String> {
    let missing = || format!("CA {}/{} has no key {}", ca.namespace, ca.name, ca.key);
    match ca.kind {
        CaKind::Secret => {
            let s = Api::<Secret>::namespaced(client.clone(), &ca.namespace)
                .get(&ca.name)
                .await
                .map_err(|e| format!("cannot read CA Secret {}/{}: {e}", ca.namespace, ca.name))?;
            s.data
                .and_then(|d| d.get(&ca.key).map(|b| b.0.clone()))
                .ok_or_else(missing)
        }
        CaKind::ConfigMap => {
            let c = Api::<ConfigMap>::namespaced(client.clone(), &ca.namespace)
                .get(&ca.name)
                .await
                .map_err(|e| format!("cannot read CA ConfigMap {}/{}: {e}", ca.namespace, ca.name))?;
            c.data
                .and_then(|d| d.get(&ca.key).map(|s| s.as_bytes().to_vec()))
                .ok_or_else(missing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Action;

    fn work_item(yaml: Value) -> WorkItem {
        serde_json::from_value(yaml).expect("WorkItem")
    }

    fn login_item() -> Value {
        json!({
            "apiVersion": "queue.sqlserver.kubesql.io/v1alpha1", "kind": "WorkItem",
            "metadata": {"name": "login-app-1", "namespace": "w", "generation": 3},
            "spec": {
                "worker": "w1", "kind": "Login", "externalName": "app", "operation": "Apply",
                "managementPolicies": ["Observe", "Create", "Update"], "pollInterval": "30s",
                "resourceRef": {"apiVersion": "sqlserver.kubesql.io/v1alpha1", "kind": "Login", "namespace": "team", "name": "app", "uid": "u1", "generation": 7},
                "desired": {"kind": "Login", "spec": {
                    "kind": {"type": "Sql", "password": {"namespace": "team", "name": "app-password", "key": "password"}, "checkPolicy": true, "checkExpiration": false},
                    "disabled": false, "serverRoles": [], "terminateSessionsOnDelete": false}}
            },
            "status": {"observedGeneration": 2, "atProvider": {"sid": "0x01"}}
        })
    }

    #[test]
    fn work_items_become_items_and_schedule_entries() {
        let wi = work_item(login_item());
        let item = item(&wi).expect("valid");
        assert_eq!(item.external_name.as_str(), "app");
        assert!(item.policies.update && !item.policies.delete, "orphan on delete");
        assert_eq!(item.previous_at_provider, Some(json!({"sid": "0x01"})));
        let s = seen(&wi, std::time::Duration::from_secs(600));
        assert_eq!(
            (s.generation, s.observed_generation),
            (3, Some(2)),
            "changed: gen ≠ observedGeneration"
        );
        assert_eq!(s.poll, Some(std::time::Duration::from_secs(30)));
    }

    #[test]
    fn invalid_work_items_say_which_field() {
        let cases = [
            ("/spec/externalName", json!("a\u{0}b"), "spec.externalName"),
            ("/spec/kind", json!("Database"), "spec.kind is Database"),
            (
                "/spec/managementPolicies",
                json!(["Delete"]),
                "spec.managementPolicies",
            ),
            (
                "/spec/desired/spec/serverRoles",
                json!(["x\u{0}"]),
                "spec.desired",
            ),
        ];
        for (path, value, want) in cases {
            let mut v = login_item();
            *v.pointer_mut(path).unwrap() = value;
            let e = item(&work_item(v)).expect_err(path);
            assert!(e.contains(want), "{path}: {e}");
        }
    }

    #[test]
    fn status_carries_error_number_and_message() {
        let outcome = Outcome {
            action: Some(Action::Delete),
            exists: true,
            error: Some(ItemError {
                reason: "InUse".into(),
                number: Some(3702),
                message: "in use".into(),
            }),
            ..Outcome::default()
        };
        let doc = status_document(&StatusInput {
            generation: 4,
            resource_generation: Some(9),
            outcome: &outcome,
            attempts: 2,
            holder: "w1-abc",
            now: "2026-11-25T18:00:00Z".into(),
        });
        assert_eq!(doc["apiVersion"], "queue.sqlserver.kubesql.io/v1alpha1");
        assert_eq!(
            doc["status"]["lastError"],
            json!({"reason": "InUse", "number": 3702, "message": "in use"})
        );
        assert_eq!(doc["status"]["observedGeneration"], 4);
        assert_eq!(doc["status"]["resourceGeneration"], 9);
        assert_eq!(doc["status"]["holder"], "w1-abc");
        // The document deserializes into the generated status type: the CRD accepts it.
        let parsed: apis::generated::workitems::WorkItemStatus =
            serde_json::from_value(doc["status"].clone()).expect("status shape");
        assert_eq!(parsed.attempts, Some(2));
    }
}

#[cfg(test)]
mod unchanged_tests {
    use super::*;

    #[test]
    fn only_the_observation_time_changing_is_no_change() {
        let current: apis::generated::workitems::WorkItemStatus = serde_json::from_value(json!({
            "observedGeneration": 2, "exists": true, "upToDate": true, "attempts": 0,
            "lastObservedTime": "2026-01-01T00:00:00Z", "holder": "w-1", "atProvider": {"id": "5"}
        }))
        .unwrap();
        let doc = |time: &str, up: bool| {
            json!({"status": {"observedGeneration": 2, "exists": true, "upToDate": up, "deleted": null,
                "drift": null, "attempts": 0, "lastObservedTime": time, "holder": "w-1", "atProvider": {"id": "5"}}})
        };
        assert!(
            status_unchanged(Some(&current), &doc("2026-01-01T00:05:00Z", true)),
            "a newer sweep time alone"
        );
        assert!(
            !status_unchanged(Some(&current), &doc("2026-01-01T00:05:00Z", false)),
            "drift is a change"
        );
        assert!(!status_unchanged(None, &doc("x", true)), "no status yet");
    }

    #[test]
    fn connection_report_sets_and_clears_the_lease_annotations() {
        use crate::sql::error::SqlError;
        let failing = connection_report(Some(&SqlError::tls("invalid peer certificate: UnknownIssuer")));
        let annotations = &failing["metadata"]["annotations"];
        assert_eq!(
            annotations[ANNOTATION_CONNECTION_ERROR_REASON],
            "CertificateUntrusted"
        );
        assert!(
            annotations[ANNOTATION_CONNECTION_ERROR]
                .as_str()
                .is_some_and(|m| m.contains("not signed by a trusted CA")),
            "the message says what is wrong: {annotations}"
        );
        // A working ping removes both (null in a merge patch deletes the key).
        let ok = connection_report(None);
        assert!(ok["metadata"]["annotations"][ANNOTATION_CONNECTION_ERROR_REASON].is_null());
        assert!(
            ok["metadata"]["annotations"]
                .as_object()
                .is_some_and(|a| a.len() == 2)
        );
    }
}
