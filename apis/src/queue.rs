//! The contract between the provider and its workers: how WorkItems are named and labelled,
//! who writes which part, and the environment a worker process is started with.
//!
//! ```text
//! provider ──SSA spec (field manager PROVIDER_MANAGER)──▶ WorkItem ◀──SSA status (WORKER_MANAGER)── worker
//!            labels: LABEL_WORKER=<worker>                          watch: labelSelector LABEL_WORKER=<worker>
//! ```

use crate::request::Desired;
use sha2::{Digest, Sha256};

/// Field manager of everything the provider writes.
pub const PROVIDER_MANAGER: &str = "sqlserver-provider";
/// Field manager of everything a worker writes.
pub const WORKER_MANAGER: &str = "sqlserver-worker";

/// Deterministic WorkItem name for one SQL object on one worker's server: two managed
/// resources that claim the same object collide on this name, visibly, instead of fighting
/// over the object. Readable prefix (kind and a sanitized name) plus a hash of the exact
/// identity, so the name is a valid DNS subdomain whatever the SQL name contains.
pub fn work_item_name(worker: &str, kind: &str, database: Option<&str>, external_name: &str) -> String {
    let mut hash = Sha256::new();
    for part in [worker, kind, database.unwrap_or(""), external_name] {
        hash.update(part.as_bytes());
        // NUL cannot occur in any part (SQL names reject it), so this separator is unambiguous.
        hash.update([0u8]);
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let readable: String = external_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let readable = readable.trim_matches('-');
    let readable = if readable.is_empty() { "x" } else { readable };
    format!("{}-{readable}-{hex}", kind.to_ascii_lowercase())
}

/// The kind label of a [`Desired`] state, as the WorkItem's `spec.kind` spells it.
pub fn kind_of(desired: &Desired) -> &'static str {
    match desired {
        Desired::Database(_) => "Database",
        Desired::Login(_) => "Login",
        Desired::User(_) => "User",
        Desired::Schema(_) => "Schema",
    }
}

/// Environment variables of a worker process, set by the provider on the worker Deployment.
/// Everything is also a flag of the worker; the environment is how the Deployment passes it.
pub mod env {
    /// Name of the worker (= its Deployment, Lease and WorkItem label value).
    pub const WORKER_NAME: &str = "WORKER_NAME";
    /// Namespace of the worker, its Lease and its WorkItems (downward API).
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// Pod name, the Lease identity (downward API).
    pub const POD_NAME: &str = "POD_NAME";
    /// Pod IP; health and metrics bind it when set (downward API `status.podIP`).
    pub const POD_IP: &str = "POD_IP";
    /// SQL Server host.
    pub const SQL_HOST: &str = "SQL_HOST";
    /// SQL Server port.
    pub const SQL_PORT: &str = "SQL_PORT";
    /// Named instance (SQL Browser), optional.
    pub const SQL_INSTANCE: &str = "SQL_INSTANCE";
    /// `Strict | Required | Optional | Disabled`.
    pub const TLS_MODE: &str = "TLS_MODE";
    /// CA bundle as `secret/<namespace>/<name>/<key>` or `configmap/<namespace>/<name>/<key>`,
    /// read by the worker through the API (it may `get` exactly that object).
    pub const TLS_CA: &str = "TLS_CA";
    /// Host name expected in the server certificate.
    pub const TLS_HOSTNAME: &str = "TLS_HOSTNAME";
    /// `true` to skip certificate validation (explicit opt-in).
    pub const TLS_TRUST_SERVER_CERTIFICATE: &str = "TLS_TRUST_SERVER_CERTIFICATE";
    /// Credential source: `Secret | AzureWorkloadIdentity | AzureManagedIdentity |
    /// AwsSecretsManager | InjectedIdentity`.
    pub const AUTH_METHOD: &str = "AUTH_METHOD";
    /// SQL login name (AUTH_METHOD=Secret), from a `secretKeyRef`.
    pub const SQL_USER: &str = "SQL_USER";
    /// SQL login password (AUTH_METHOD=Secret), from a `secretKeyRef`.
    pub const SQL_PASSWORD: &str = "SQL_PASSWORD";
    /// AWS Secrets Manager secret id (AUTH_METHOD=AwsSecretsManager).
    pub const AWS_SECRET_ID: &str = "AWS_SECRET_ID";
    /// JSON key of the login name in that secret.
    pub const AWS_SECRET_USERNAME_KEY: &str = "AWS_SECRET_USERNAME_KEY";
    /// JSON key of the password in that secret.
    pub const AWS_SECRET_PASSWORD_KEY: &str = "AWS_SECRET_PASSWORD_KEY";
    /// Extra CA bundle for the Entra authority host, as `configmap/<namespace>/<name>/<key>`
    /// (AUTH_METHOD=AzureWorkloadIdentity), read through the API like [`TLS_CA`].
    pub const AZURE_AUTHORITY_CA: &str = "AZURE_AUTHORITY_CA";
    /// Default drift-sweep interval (Go duration).
    pub const POLL_INTERVAL: &str = "POLL_INTERVAL";
    /// Most concurrent SQL operations.
    pub const MAX_CONCURRENT_OPERATIONS: &str = "MAX_CONCURRENT_OPERATIONS";
    /// Port of `/healthz`, `/readyz` and `/metrics` (bound on POD_IP, else 127.0.0.1).
    pub const HEALTH_PORT: &str = "HEALTH_PORT";
    /// `json` or `plain`.
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_distinct_and_valid() {
        let cases = [
            ("plain", "w1", "Database", None, "app"),
            (
                "hostile characters become dashes",
                "w1",
                "Login",
                None,
                "x]; DROP LOGIN sa;--",
            ),
            (
                "unicode only still yields a readable stub",
                "w1",
                "User",
                Some("db"),
                "データ",
            ),
            (
                "long names are cut, the hash keeps them apart",
                "w1",
                "Schema",
                Some("db"),
                &"s".repeat(128),
            ),
        ];
        for (why, worker, kind, db, name) in cases {
            let a = work_item_name(worker, kind, db, name);
            assert_eq!(a, work_item_name(worker, kind, db, name), "{why}: deterministic");
            assert!(a.len() <= 253, "{why}: {a}");
            assert!(
                a.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{why}: DNS-safe: {a}"
            );
            assert!(a.starts_with(&kind.to_ascii_lowercase()), "{why}");
        }
        // The same SQL name in another database, kind or worker is another object.
        let base = work_item_name("w1", "User", Some("a"), "u");
        assert_ne!(base, work_item_name("w1", "User", Some("b"), "u"));
        assert_ne!(base, work_item_name("w2", "User", Some("a"), "u"));
        assert_ne!(base, work_item_name("w1", "Schema", Some("a"), "u"));
        // Case matters to the hash even where the readable part folds it.
        assert_ne!(
            work_item_name("w", "Login", None, "App"),
            work_item_name("w", "Login", None, "app")
        );
        // Field boundaries are not ambiguous.
        assert_ne!(
            work_item_name("w", "User", Some("ab"), "c"),
            work_item_name("w", "User", Some("a"), "bc")
        );
    }
}
