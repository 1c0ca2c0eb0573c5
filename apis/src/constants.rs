//! Names shared by the provider, the worker and the tests: API groups, labels, annotations,
//! finalizers, condition types and reasons, event reasons. Crossplane's spellings are used
//! verbatim wherever Crossplane defines one (reference/crossplane.md §1.3–§1.5, §2.6).

/// API group of the managed resources and configs.
pub const GROUP: &str = "sqlserver.kubesql.io";
/// API group of the internal WorkItem queue.
pub const QUEUE_GROUP: &str = "queue.sqlserver.kubesql.io";
/// Version of both groups.
pub const VERSION: &str = "v1alpha1";

/// Annotation holding the SQL object's name; defaults to `metadata.name`.
pub const ANNOTATION_EXTERNAL_NAME: &str = "crossplane.io/external-name";
/// Annotation that pauses reconciliation when its value is exactly `"true"`.
pub const ANNOTATION_PAUSED: &str = "crossplane.io/paused";
/// Annotation overriding the poll interval of one managed resource (Go duration).
pub const ANNOTATION_POLL_INTERVAL: &str = "crossplane.io/poll-interval";
/// Annotation whose new value requests an immediate reconcile.
pub const ANNOTATION_RECONCILE_REQUESTED_AT: &str = "crossplane.io/reconcile-requested-at";

/// Finalizer on managed resources.
pub const FINALIZER_MANAGED: &str = "finalizer.managedresource.crossplane.io";
/// Finalizer on (Cluster)ProviderConfigs while they are in use.
pub const FINALIZER_IN_USE: &str = "in-use.crossplane.io";

/// Label on ProviderConfigUsages: name of the config in use.
pub const LABEL_PROVIDER_CONFIG: &str = "crossplane.io/provider-config";
/// Label on ProviderConfigUsages: kind of the config in use.
pub const LABEL_PROVIDER_CONFIG_KIND: &str = "crossplane.io/provider-config-kind";
/// Label on WorkItems: the worker that owns them (its watch selects on it).
pub const LABEL_WORKER: &str = "queue.sqlserver.kubesql.io/worker";
/// Annotation on a worker's Lease, set by the holder while it cannot reach SQL Server: the
/// `ErrorKind` label of the failure (e.g. `CertificateUntrusted`). Removed once a ping works.
pub const ANNOTATION_CONNECTION_ERROR_REASON: &str = "sqlserver.kubesql.io/connection-error-reason";
/// Annotation on a worker's Lease next to the reason: the failure's message (never a secret).
pub const ANNOTATION_CONNECTION_ERROR: &str = "sqlserver.kubesql.io/connection-error";

/// Condition types.
pub mod condition {
    /// The SQL object exists and is usable.
    pub const READY: &str = "Ready";
    /// The last reconcile succeeded.
    pub const SYNCED: &str = "Synced";
    /// On configs: the worker Deployment is up and holds its Lease.
    pub const WORKER_READY: &str = "WorkerReady";
    /// On configs: deletion is blocked while usages exist.
    pub const TERMINATING: &str = "Terminating";
    /// On configs: a setting weakens security (e.g. trustServerCertificate).
    pub const INSECURE: &str = "Insecure";
}

/// Condition reasons (Crossplane's spellings).
pub mod reason {
    /// Ready=True.
    pub const AVAILABLE: &str = "Available";
    /// Ready=False while creating.
    pub const CREATING: &str = "Creating";
    /// Ready=False while deleting.
    pub const DELETING: &str = "Deleting";
    /// Ready=False when the object exists but is unusable.
    pub const UNAVAILABLE: &str = "Unavailable";
    /// Synced=True.
    pub const RECONCILE_SUCCESS: &str = "ReconcileSuccess";
    /// Synced=False on any failure.
    pub const RECONCILE_ERROR: &str = "ReconcileError";
    /// Synced=False while paused.
    pub const RECONCILE_PAUSED: &str = "ReconcilePaused";
    /// Terminating=True on a config that still has users.
    pub const IN_USE: &str = "InUse";
}

/// Event reasons (Crossplane's spellings).
pub mod event {
    /// Warning: the config or worker could not be used.
    pub const CANNOT_CONNECT: &str = "CannotConnectToProvider";
    /// Warning: references did not resolve.
    pub const CANNOT_RESOLVE_REFERENCES: &str = "CannotResolveResourceReferences";
    /// Warning: observing the SQL object failed.
    pub const CANNOT_OBSERVE: &str = "CannotObserveExternalResource";
    /// Warning: creating the SQL object failed.
    pub const CANNOT_CREATE: &str = "CannotCreateExternalResource";
    /// Warning: updating the SQL object failed.
    pub const CANNOT_UPDATE: &str = "CannotUpdateExternalResource";
    /// Warning: deleting the SQL object failed.
    pub const CANNOT_DELETE: &str = "CannotDeleteExternalResource";
    /// Warning: the connection Secret could not be written.
    pub const CANNOT_PUBLISH: &str = "CannotPublishConnectionDetails";
    /// Warning: the managed resource itself could not be updated.
    pub const CANNOT_UPDATE_MANAGED: &str = "CannotUpdateManagedResource";
    /// Warning: the management policy set is not supported.
    pub const INVALID_MANAGEMENT_POLICY: &str = "CannotUseInvalidManagementPolicy";
    /// Normal: created.
    pub const CREATED: &str = "CreatedExternalResource";
    /// Normal: updated.
    pub const UPDATED: &str = "UpdatedExternalResource";
    /// Normal: deleted.
    pub const DELETED: &str = "DeletedExternalResource";
    /// Normal: paused.
    pub const PAUSED: &str = "ReconciliationPaused";
    /// Normal: a reconcile request token was handled.
    pub const RECONCILE_REQUEST_HANDLED: &str = "ReconcileRequestHandled";
    /// Warning on configs: usage accounting (deletion blocked).
    pub const USAGE_ACCOUNTING: &str = "UsageAccounting";
}
