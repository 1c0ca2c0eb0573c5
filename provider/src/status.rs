//! From a WorkItem's status to a managed resource's conditions: pure, so every transition is
//! a table row in the tests.
//!
//! Crossplane's contract (reference/crossplane.md §1.3, §2.2, §2.5): `Ready` says whether the
//! SQL object exists and is usable, `Synced` whether the last reconcile succeeded; always both,
//! always `Ready` first (kuttl matches arrays by position, so a fixed order matters).

use apis::{
    constants::{condition, reason},
    generated::workitems::WorkItem,
    policies::Policies,
};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// One condition before timestamps: status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// Crossplane reason.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl Cond {
    fn new(status: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }
}

/// What the managed resource should say, and whether deletion is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// The `Ready` condition.
    pub ready: Cond,
    /// The `Synced` condition.
    pub synced: Cond,
    /// The worker confirmed the SQL object is gone (or orphaned): remove the finalizer.
    pub deleted: bool,
    /// The SQL object exists (for events and `atProvider`).
    pub exists: bool,
}

fn error_text(item: &WorkItem) -> Option<String> {
    let error = item.status.as_ref()?.last_error.as_ref()?;
    let mut text = error.reason.clone().unwrap_or_else(|| "Error".into());
    if let Some(number) = error.number {
        text.push_str(&format!(" (SQL Server error {number})"));
    }
    if let Some(message) = error.message.as_deref().filter(|m| !m.is_empty()) {
        text.push_str(": ");
        text.push_str(message);
    }
    Some(text)
}

/// Projects the WorkItem (if there is one yet) onto the managed resource.
pub fn project(item: Option<&WorkItem>, policies: &Policies, deleting: bool, worker: &str) -> Projection {
    let ok = || Cond::new("True", reason::RECONCILE_SUCCESS, "");
    let Some(item) = item else {
        let ready = if deleting {
            Cond::new("False", reason::DELETING, "")
        } else {
            Cond::new(
                "False",
                reason::CREATING,
                format!("handed to worker {worker}; waiting for it to pick the object up"),
            )
        };
        return Projection {
            ready,
            synced: ok(),
            deleted: false,
            exists: false,
        };
    };
    let status = item.status.clone().unwrap_or_default();
    let current =
        status.observed_generation.is_some() && status.observed_generation == item.metadata.generation;
    let exists = status.exists.unwrap_or(false);
    let error = error_text(item).filter(|_| current);

    if deleting {
        if current && status.deleted == Some(true) {
            return Projection {
                ready: Cond::new("False", reason::DELETING, ""),
                synced: ok(),
                deleted: true,
                exists: false,
            };
        }
        let synced = match error {
            Some(e) => Cond::new("False", reason::RECONCILE_ERROR, format!("delete failed: {e}")),
            None => ok(),
        };
        return Projection {
            ready: Cond::new(
                "False",
                reason::DELETING,
                format!("waiting for worker {worker} to delete the SQL object"),
            ),
            synced,
            deleted: false,
            exists,
        };
    }

    if !current {
        // The worker has not acted on this generation yet: keep saying what we last knew.
        let ready = if exists {
            Cond::new("True", reason::AVAILABLE, "")
        } else {
            Cond::new(
                "False",
                reason::CREATING,
                format!("handed to worker {worker}; waiting for it to apply the change"),
            )
        };
        return Projection {
            ready,
            synced: ok(),
            deleted: false,
            exists,
        };
    }

    if let Some(error) = error {
        let verb = if exists {
            "update"
        } else if policies.create {
            "create"
        } else {
            "observe"
        };
        let ready = if exists {
            Cond::new("True", reason::AVAILABLE, "")
        } else {
            Cond::new("False", reason::CREATING, "")
        };
        return Projection {
            ready,
            synced: Cond::new(
                "False",
                reason::RECONCILE_ERROR,
                format!("{verb} failed: {error}"),
            ),
            deleted: false,
            exists,
        };
    }

    if !exists {
        if !policies.create {
            return Projection {
                ready: Cond::new("False", reason::UNAVAILABLE, ""),
                synced: Cond::new(
                    "False",
                    reason::RECONCILE_ERROR,
                    "observe failed: external resource does not exist",
                ),
                deleted: false,
                exists,
            };
        }
        return Projection {
            ready: Cond::new("False", reason::CREATING, ""),
            synced: ok(),
            deleted: false,
            exists,
        };
    }

    let drift = status.drift.unwrap_or_default();
    let synced = if status.up_to_date == Some(false) && !policies.update {
        Cond::new(
            "True",
            reason::RECONCILE_SUCCESS,
            format!(
                "drift not corrected because managementPolicies lack Update: {}",
                drift.join(", ")
            ),
        )
    } else {
        ok()
    };
    Projection {
        ready: Cond::new("True", reason::AVAILABLE, ""),
        synced,
        deleted: false,
        exists,
    }
}

/// Builds `[Ready, Synced]`, keeping `lastTransitionTime` from `old` when the status did not
/// change, and stamping `observedGeneration`. Other condition types in `old` are kept after
/// these two, in their order.
pub fn conditions(
    old: &[Condition],
    ready: &Cond,
    synced: &Cond,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let make = |kind: &str, c: &Cond| {
        let previous = old.iter().find(|o| o.type_ == kind);
        let since = match previous {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => Time(now),
        };
        Condition {
            type_: kind.to_owned(),
            status: c.status.to_owned(),
            reason: c.reason.to_owned(),
            message: c.message.clone(),
            last_transition_time: since,
            observed_generation: generation,
        }
    };
    let mut out = vec![make(condition::READY, ready), make(condition::SYNCED, synced)];
    out.extend(
        old.iter()
            .filter(|o| o.type_ != condition::READY && o.type_ != condition::SYNCED)
            .cloned(),
    );
    out
}

/// Whether two condition lists say the same thing (ignoring timestamps), so unchanged status
/// is never written: zero apiserver writes per sweep when nothing drifted.
pub fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use apis::generated::workitems::{WorkItemStatus, WorkItemStatusLastError};

    fn item(generation: i64, status: Option<WorkItemStatus>) -> WorkItem {
        let mut item: WorkItem = serde_json::from_value(serde_json::json!({
            "apiVersion": "queue.sqlserver.kubesql.io/v1alpha1", "kind": "WorkItem",
            "metadata": {"name": "x", "namespace": "w", "generation": generation},
            "spec": {"worker": "w", "kind": "Database", "externalName": "app", "operation": "Apply", "desired": {},
                     "resourceRef": {"apiVersion": "v", "kind": "Database", "namespace": "n", "name": "app", "uid": "u"}}
        }))
        .unwrap();
        item.status = status;
        item
    }

    fn st(observed: i64, exists: bool, up_to_date: bool) -> WorkItemStatus {
        WorkItemStatus {
            observed_generation: Some(observed),
            exists: Some(exists),
            up_to_date: Some(up_to_date),
            ..Default::default()
        }
    }

    fn error(observed: i64, exists: bool) -> WorkItemStatus {
        WorkItemStatus {
            last_error: Some(WorkItemStatusLastError {
                reason: Some("PermissionDenied".into()),
                number: Some(262),
                message: Some("CREATE DATABASE permission denied in database 'master'.".into()),
            }),
            ..st(observed, exists, false)
        }
    }

    #[test]
    fn projection_table() {
        let all = Policies::ALL;
        let observe_only = Policies::parse(&["Observe"]).unwrap();
        let no_update = Policies::parse(&["Observe", "Create", "Delete"]).unwrap();
        // (why, item, policies, deleting, ready, ready reason, synced, synced reason, deleted)
        type Row = (
            &'static str,
            Option<WorkItem>,
            Policies,
            bool,
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            bool,
        );
        let rows: Vec<Row> = vec![
            (
                "no WorkItem yet: creating",
                None,
                all,
                false,
                "False",
                "Creating",
                "True",
                "ReconcileSuccess",
                false,
            ),
            (
                "worker has not seen it",
                Some(item(1, None)),
                all,
                false,
                "False",
                "Creating",
                "True",
                "ReconcileSuccess",
                false,
            ),
            (
                "created and in sync",
                Some(item(1, Some(st(1, true, true)))),
                all,
                false,
                "True",
                "Available",
                "True",
                "ReconcileSuccess",
                false,
            ),
            (
                "a new generation keeps Ready while the worker catches up",
                Some(item(2, Some(st(1, true, true)))),
                all,
                false,
                "True",
                "Available",
                "True",
                "ReconcileSuccess",
                false,
            ),
            (
                "create failed with a SQL error",
                Some(item(1, Some(error(1, false)))),
                all,
                false,
                "False",
                "Creating",
                "False",
                "ReconcileError",
                false,
            ),
            (
                "update failed: still Ready, not Synced",
                Some(item(1, Some(error(1, true)))),
                all,
                false,
                "True",
                "Available",
                "False",
                "ReconcileError",
                false,
            ),
            (
                "an old error is not shown against a new generation",
                Some(item(2, Some(error(1, true)))),
                all,
                false,
                "True",
                "Available",
                "True",
                "ReconcileSuccess",
                false,
            ),
            (
                "observe-only import of a missing object",
                Some(item(1, Some(st(1, false, false)))),
                observe_only,
                false,
                "False",
                "Unavailable",
                "False",
                "ReconcileError",
                false,
            ),
            (
                "observe-only import of an existing object",
                Some(item(1, Some(st(1, true, false)))),
                observe_only,
                false,
                "True",
                "Available",
                "True",
                "ReconcileSuccess",
                false,
            ),
            (
                "drift without Update is reported, not an error",
                Some(item(1, Some(st(1, true, false)))),
                no_update,
                false,
                "True",
                "Available",
                "True",
                "ReconcileSuccess",
                false,
            ),
            (
                "deleting, worker not done",
                Some(item(2, Some(st(1, true, true)))),
                all,
                true,
                "False",
                "Deleting",
                "True",
                "ReconcileSuccess",
                false,
            ),
            (
                "deleting, worker confirmed",
                Some(item(
                    2,
                    Some(WorkItemStatus {
                        deleted: Some(true),
                        ..st(2, false, false)
                    }),
                )),
                all,
                true,
                "False",
                "Deleting",
                "True",
                "ReconcileSuccess",
                true,
            ),
            (
                "a confirmation for an older generation does not count",
                Some(item(
                    3,
                    Some(WorkItemStatus {
                        deleted: Some(true),
                        ..st(2, false, false)
                    }),
                )),
                all,
                true,
                "False",
                "Deleting",
                "True",
                "ReconcileSuccess",
                false,
            ),
            (
                "delete failed (in use)",
                Some(item(2, Some(error(2, true)))),
                all,
                true,
                "False",
                "Deleting",
                "False",
                "ReconcileError",
                false,
            ),
        ];
        for (why, item, policies, deleting, ready, ready_reason, synced, synced_reason, deleted) in rows {
            let p = project(item.as_ref(), &policies, deleting, "w");
            assert_eq!(
                (p.ready.status, p.ready.reason),
                (ready, ready_reason),
                "{why}: Ready {p:?}"
            );
            assert_eq!(
                (p.synced.status, p.synced.reason),
                (synced, synced_reason),
                "{why}: Synced {p:?}"
            );
            assert_eq!(p.deleted, deleted, "{why}");
        }
    }

    #[test]
    fn error_messages_carry_the_sql_error() {
        let p = project(Some(&item(1, Some(error(1, false)))), &Policies::ALL, false, "w");
        assert_eq!(
            p.synced.message,
            "create failed: PermissionDenied (SQL Server error 262): CREATE DATABASE permission denied in database 'master'."
        );
        let drift = WorkItemStatus {
            drift: Some(vec!["recoveryModel".into()]),
            ..st(1, true, false)
        };
        let p = project(
            Some(&item(1, Some(drift))),
            &Policies::parse(&["Observe", "Create"]).unwrap(),
            false,
            "w",
        );
        assert!(p.synced.message.contains("recoveryModel"), "{p:?}");
    }

    #[test]
    fn conditions_keep_order_and_transition_times() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let ready = Cond::new("False", "Creating", "");
        let synced = Cond::new("True", "ReconcileSuccess", "");
        let first = conditions(&[], &ready, &synced, Some(1), t0);
        assert_eq!(
            first.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            ["Ready", "Synced"]
        );
        let ready2 = Cond::new("True", "Available", "");
        let second = conditions(&first, &ready2, &synced, Some(1), t1);
        assert_eq!(second[0].last_transition_time.0, t1, "Ready changed");
        assert_eq!(second[1].last_transition_time.0, t0, "Synced did not");
        assert!(same_conditions(
            &second,
            &conditions(&second, &ready2, &synced, Some(1), t1)
        ));
        assert!(!same_conditions(&first, &second));
    }
}
