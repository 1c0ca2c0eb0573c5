//! Validated ProviderConfig / ClusterProviderConfig: one [`ServerConfig`] for both kinds.
//!
//! The two generated kinds differ only in where their Secrets and ConfigMaps live: a
//! namespaced ProviderConfig reads them from its own namespace, always (confused-deputy
//! protection, reference/crossplane.md §3.3); a ClusterProviderConfig names the namespace.
//! After conversion that difference is gone: every reference carries its namespace.

use crate::generated;
use garde::Validate;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, time::Duration};

/// Why a config is unusable; the message is meant for its `Ready=False` condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {name}: {}", problems.join("; "))]
pub struct InvalidConfig {
    /// `ProviderConfig` or `ClusterProviderConfig`.
    pub kind: &'static str,
    /// `namespace/name` or `name`.
    pub name: String,
    /// Each problem as `field: message`.
    pub problems: Vec<String>,
}

/// A Secret or ConfigMap, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Namespace.
    #[garde(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name.
    #[garde(length(min = 1, max = 253))]
    pub name: String,
}

/// Network endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Host name or address.
    #[garde(length(min = 1, max = 253), custom(no_whitespace))]
    pub host: String,
    /// TCP port.
    #[garde(range(min = 1))]
    pub port: u16,
    /// Named instance (SQL Browser), if any.
    #[garde(length(min = 1, max = 16))]
    pub instance: Option<String>,
}

fn no_whitespace(value: &str, _: &()) -> garde::Result {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(garde::Error::new(
            "must not contain whitespace or control characters",
        ))
    } else {
        Ok(())
    }
}

/// How the worker authenticates to SQL Server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(tag = "source", rename_all_fields = "camelCase")]
pub enum Credentials {
    /// A SQL login from a Kubernetes Secret.
    Secret {
        /// The Secret.
        #[garde(dive)]
        secret: ObjectRef,
        /// Key of the login name.
        #[garde(length(min = 1))]
        username_key: String,
        /// Key of the password.
        #[garde(length(min = 1))]
        password_key: String,
    },
    /// An Entra ID token through Azure Workload Identity.
    AzureWorkloadIdentity {
        /// Application (client) id.
        #[garde(length(equal = 36))]
        client_id: String,
        /// Tenant id.
        #[garde(length(equal = 36))]
        tenant_id: String,
        /// Authority host override (https only).
        #[garde(prefix("https://"))]
        authority_host: Option<String>,
        /// Extra CA bundle (a ConfigMap key) trusted for the authority host.
        #[garde(dive)]
        authority_ca: Option<CaSource>,
    },
    /// An Entra ID token from a managed identity.
    AzureManagedIdentity {
        /// User-assigned identity's client id; `None` = system-assigned.
        #[garde(length(equal = 36))]
        client_id: Option<String>,
    },
    /// A SQL login read from AWS Secrets Manager.
    AwsSecretsManager {
        /// Secret name or ARN.
        #[garde(length(min = 1, max = 2048))]
        secret_id: String,
        /// AWS region.
        #[garde(length(min = 1))]
        region: String,
        /// IRSA role; `None` = the default credential chain (e.g. Pod Identity).
        #[garde(prefix("arn:"))]
        role_arn: Option<String>,
        /// JSON key of the login name.
        #[garde(length(min = 1))]
        username_key: String,
        /// JSON key of the password.
        #[garde(length(min = 1))]
        password_key: String,
        /// Endpoint override for every AWS service (`AWS_ENDPOINT_URL`).
        #[garde(custom(http_url))]
        endpoint_url: Option<String>,
    },
    /// An Entra ID token from whatever identity the pod already has.
    InjectedIdentity,
}

impl Credentials {
    /// The stable name of the source, as in the API (`spec.credentials.source`).
    pub fn source(&self) -> &'static str {
        match self {
            Self::Secret { .. } => "Secret",
            Self::AzureWorkloadIdentity { .. } => "AzureWorkloadIdentity",
            Self::AzureManagedIdentity { .. } => "AzureManagedIdentity",
            Self::AwsSecretsManager { .. } => "AwsSecretsManager",
            Self::InjectedIdentity => "InjectedIdentity",
        }
    }
}

/// TDS encryption mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsMode {
    /// TDS 8.0: TLS before anything else.
    Strict,
    /// Encrypt everything (default).
    Required,
    /// Encrypt when the server wants to.
    Optional,
    /// No encryption.
    Disabled,
}

/// Where a CA bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(rename_all_fields = "camelCase")]
pub enum CaSource {
    /// A key of a Secret.
    Secret {
        /// The Secret.
        #[garde(dive)]
        object: ObjectRef,
        /// The key.
        #[garde(length(min = 1))]
        key: String,
    },
    /// A key of a ConfigMap.
    ConfigMap {
        /// The ConfigMap.
        #[garde(dive)]
        object: ObjectRef,
        /// The key.
        #[garde(length(min = 1))]
        key: String,
    },
}

/// Transport security.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(allow_unvalidated)]
pub struct Tls {
    /// Encryption mode.
    pub mode: TlsMode,
    /// CA bundle to trust instead of the system roots.
    #[garde(dive)]
    pub ca: Option<CaSource>,
    /// Expected host name in the certificate.
    #[garde(length(min = 1, max = 253))]
    pub host_name_in_certificate: Option<String>,
    /// Skip certificate validation (explicit opt-in; raises a warning condition).
    pub trust_server_certificate: bool,
}

/// How the worker Deployment runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(allow_unvalidated)]
pub struct WorkerSettings {
    /// Replicas (one works, the rest stand by).
    #[garde(range(min = 1, max = 5))]
    pub replicas: i32,
    /// Image override.
    #[garde(length(min = 1, max = 1024))]
    pub image: Option<String>,
    /// Existing ServiceAccount to use.
    #[garde(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
    /// Extra ServiceAccount annotations.
    pub service_account_annotations: BTreeMap<String, String>,
    /// Extra pod labels.
    pub pod_labels: BTreeMap<String, String>,
    /// Resource limits (quantities as written).
    pub limits: BTreeMap<String, String>,
    /// Resource requests (quantities as written).
    pub requests: BTreeMap<String, String>,
    /// Node selector.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations, in the Pod API's shape.
    pub tolerations: Vec<serde_json::Value>,
    /// Drift sweep interval; `None` = the provider's default (`--poll-interval`).
    #[garde(custom(at_least_a_second))]
    pub poll_interval: Option<Duration>,
    /// Concurrent SQL operations.
    #[garde(range(min = 1, max = 64))]
    pub max_concurrent_operations: u32,
}

fn at_least_a_second(value: &Option<Duration>, _: &()) -> garde::Result {
    if value.is_none_or(|v| v >= Duration::from_secs(1)) {
        Ok(())
    } else {
        Err(garde::Error::new("must be at least 1s"))
    }
}

/// A validated (Cluster)ProviderConfig.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfig {
    /// Where the server is.
    #[garde(dive)]
    pub endpoint: Endpoint,
    /// How the worker authenticates.
    #[garde(dive)]
    pub credentials: Credentials,
    /// Transport security.
    #[garde(dive, custom(tls_rules))]
    pub tls: Tls,
    /// How the worker runs.
    #[garde(dive)]
    pub worker: WorkerSettings,
}

/// tiberius panics when `trust_cert` is combined with a CA, so this check is not cosmetic.
fn tls_rules(tls: &Tls, _: &()) -> garde::Result {
    let has_cert_settings = tls.ca.is_some() || tls.host_name_in_certificate.is_some();
    if tls.trust_server_certificate && has_cert_settings {
        return Err(garde::Error::new(
            "trustServerCertificate skips certificate validation, so a CA or hostNameInCertificate would be ignored: choose one",
        ));
    }
    if tls.mode == TlsMode::Disabled && (tls.trust_server_certificate || has_cert_settings) {
        return Err(garde::Error::new(
            "mode Disabled uses no TLS, so certificate settings are not allowed",
        ));
    }
    Ok(())
}

/// Parses a Go duration (`1h30m`, `10m`, `1.5s`, `250ms`) as Crossplane's poll-interval
/// annotation and our CRDs spell it. Units: h, m, s, ms, us, ns.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 10m, 1h30m or 30s");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 365.0 * 24.0 * 3600.0 {
        return Err(format!("{text:?} is longer than a year"));
    }
    Ok(Duration::from_secs_f64(total))
}

fn http_url(value: &Option<String>, _: &()) -> garde::Result {
    match value {
        Some(v) if !(v.starts_with("https://") || v.starts_with("http://")) => {
            Err(garde::Error::new("must be an http:// or https:// URL"))
        }
        Some(v) if v.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Err(garde::Error::new("must not contain whitespace"))
        }
        _ => Ok(()),
    }
}

/// The shape both generated config kinds share, with the cluster kind's namespace fields
/// optional. Filled by a serde round-trip from either generated spec.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    endpoint: WireEndpoint,
    credentials: WireCredentials,
    tls: Option<WireTls>,
    worker: Option<WireWorker>,
}

#[derive(Deserialize)]
struct WireEndpoint {
    host: String,
    port: Option<i64>,
    instance: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCredentials {
    source: String,
    secret_ref: Option<WireSecretRef>,
    azure: Option<WireAzure>,
    aws_secrets_manager: Option<WireAws>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSecretRef {
    name: String,
    namespace: Option<String>,
    username_key: Option<String>,
    password_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAzure {
    client_id: Option<String>,
    tenant_id: Option<String>,
    authority_host: Option<String>,
    authority_ca_config_map_ref: Option<WireKeyRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAws {
    secret_id: String,
    region: String,
    role_arn: Option<String>,
    username_key: Option<String>,
    password_key: Option<String>,
    endpoint_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireTls {
    mode: Option<TlsMode>,
    ca_secret_ref: Option<WireKeyRef>,
    ca_config_map_ref: Option<WireKeyRef>,
    host_name_in_certificate: Option<String>,
    trust_server_certificate: Option<bool>,
}

#[derive(Deserialize)]
struct WireKeyRef {
    name: String,
    key: String,
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireWorker {
    replicas: Option<i32>,
    image: Option<String>,
    service_account_name: Option<String>,
    service_account_annotations: Option<BTreeMap<String, String>>,
    pod_labels: Option<BTreeMap<String, String>>,
    resources: Option<WireResources>,
    node_selector: Option<BTreeMap<String, String>>,
    tolerations: Option<Vec<serde_json::Value>>,
    poll_interval: Option<String>,
    max_concurrent_operations: Option<i64>,
}

#[derive(Deserialize)]
struct WireResources {
    limits: Option<BTreeMap<String, serde_json::Value>>,
    requests: Option<BTreeMap<String, serde_json::Value>>,
}

fn quantities(map: Option<BTreeMap<String, serde_json::Value>>) -> BTreeMap<String, String> {
    map.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
        .collect()
}

/// Converts either config kind. `own_namespace` is `Some` for a namespaced ProviderConfig:
/// every Secret and ConfigMap is then read from there, whatever the object says.
fn convert(
    kind: &'static str,
    display_name: String,
    own_namespace: Option<&str>,
    spec: serde_json::Value,
) -> Result<ServerConfig, InvalidConfig> {
    let mut problems = Vec::new();
    let fail = |problems: Vec<String>| InvalidConfig {
        kind,
        name: display_name.clone(),
        problems,
    };
    let wire: Wire = serde_json::from_value(spec).map_err(|e| fail(vec![format!("spec: {e}")]))?;
    let namespace_of = |problems: &mut Vec<String>, field: &str, given: Option<String>| -> String {
        match (own_namespace, given) {
            (Some(own), _) => own.to_owned(),
            (None, Some(ns)) if !ns.is_empty() => ns,
            (None, _) => {
                problems.push(format!("{field}.namespace: required for a ClusterProviderConfig"));
                String::new()
            }
        }
    };
    let c = wire.credentials;
    let credentials = match c.source.as_str() {
        "Secret" => match c.secret_ref {
            Some(s) => Some(Credentials::Secret {
                secret: ObjectRef {
                    namespace: namespace_of(&mut problems, "spec.credentials.secretRef", s.namespace),
                    name: s.name,
                },
                username_key: s.username_key.unwrap_or_else(|| "username".into()),
                password_key: s.password_key.unwrap_or_else(|| "password".into()),
            }),
            None => None,
        },
        "AzureWorkloadIdentity" => match c.azure {
            Some(WireAzure {
                client_id: Some(client_id),
                tenant_id: Some(tenant_id),
                authority_host,
                authority_ca_config_map_ref,
            }) => Some(Credentials::AzureWorkloadIdentity {
                client_id,
                tenant_id,
                authority_host,
                authority_ca: authority_ca_config_map_ref.map(|r| CaSource::ConfigMap {
                    object: ObjectRef {
                        namespace: namespace_of(
                            &mut problems,
                            "spec.credentials.azure.authorityCaConfigMapRef",
                            r.namespace,
                        ),
                        name: r.name,
                    },
                    key: r.key,
                }),
            }),
            _ => None,
        },
        "AzureManagedIdentity" => Some(Credentials::AzureManagedIdentity {
            client_id: c.azure.and_then(|a| a.client_id),
        }),
        "AwsSecretsManager" => c.aws_secrets_manager.map(|a| Credentials::AwsSecretsManager {
            secret_id: a.secret_id,
            region: a.region,
            role_arn: a.role_arn,
            username_key: a.username_key.unwrap_or_else(|| "username".into()),
            password_key: a.password_key.unwrap_or_else(|| "password".into()),
            endpoint_url: a.endpoint_url,
        }),
        "InjectedIdentity" => Some(Credentials::InjectedIdentity),
        other => {
            problems.push(format!("spec.credentials.source: unknown source {other:?}"));
            None
        }
    };
    if credentials.is_none() && problems.is_empty() {
        problems.push(format!(
            "spec.credentials: source {} needs {}",
            c.source,
            match c.source.as_str() {
                "Secret" => "secretRef",
                "AzureWorkloadIdentity" => "azure.clientId and azure.tenantId",
                _ => "awsSecretsManager",
            }
        ));
    }
    let tls = wire.tls.unwrap_or(WireTls {
        mode: None,
        ca_secret_ref: None,
        ca_config_map_ref: None,
        host_name_in_certificate: None,
        trust_server_certificate: None,
    });
    let ca = match (tls.ca_secret_ref, tls.ca_config_map_ref) {
        (Some(_), Some(_)) => {
            problems.push("spec.tls: set only one of caSecretRef and caConfigMapRef".into());
            None
        }
        (Some(r), None) => Some(CaSource::Secret {
            object: ObjectRef {
                namespace: namespace_of(&mut problems, "spec.tls.caSecretRef", r.namespace),
                name: r.name,
            },
            key: r.key,
        }),
        (None, Some(r)) => Some(CaSource::ConfigMap {
            object: ObjectRef {
                namespace: namespace_of(&mut problems, "spec.tls.caConfigMapRef", r.namespace),
                name: r.name,
            },
            key: r.key,
        }),
        (None, None) => None,
    };
    let worker = wire.worker.unwrap_or(WireWorker {
        replicas: None,
        image: None,
        service_account_name: None,
        service_account_annotations: None,
        pod_labels: None,
        resources: None,
        node_selector: None,
        tolerations: None,
        poll_interval: None,
        max_concurrent_operations: None,
    });
    let poll_interval = match worker.poll_interval.as_deref().map(parse_go_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            problems.push(format!("spec.worker.pollInterval: {e}"));
            None
        }
    };
    let port = wire.endpoint.port.unwrap_or(1433);
    let port = u16::try_from(port).unwrap_or_else(|_| {
        problems.push(format!("spec.endpoint.port: {port} is not a TCP port"));
        0
    });
    let (limits, requests) = worker
        .resources
        .map(|r| (r.limits, r.requests))
        .unwrap_or_default();
    let config = credentials.map(|credentials| ServerConfig {
        endpoint: Endpoint {
            host: wire.endpoint.host,
            port,
            instance: wire.endpoint.instance,
        },
        credentials,
        tls: Tls {
            mode: tls.mode.unwrap_or(TlsMode::Required),
            ca,
            host_name_in_certificate: tls.host_name_in_certificate,
            trust_server_certificate: tls.trust_server_certificate.unwrap_or(false),
        },
        worker: WorkerSettings {
            replicas: worker.replicas.unwrap_or(1),
            image: worker.image,
            service_account_name: worker.service_account_name,
            service_account_annotations: worker.service_account_annotations.unwrap_or_default(),
            pod_labels: worker.pod_labels.unwrap_or_default(),
            limits: quantities(limits),
            requests: quantities(requests),
            node_selector: worker.node_selector.unwrap_or_default(),
            tolerations: worker.tolerations.unwrap_or_default(),
            poll_interval,
            max_concurrent_operations: u32::try_from(worker.max_concurrent_operations.unwrap_or(4))
                .unwrap_or(0),
        },
    });
    if let Some(config) = &config
        && let Err(report) = config.validate()
    {
        for (path, error) in report.iter() {
            problems.push(format!("spec.{path}: {error}"));
        }
    }
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(fail(problems)),
    }
}

impl TryFrom<&generated::providerconfigs::ProviderConfig> for ServerConfig {
    type Error = InvalidConfig;
    fn try_from(pc: &generated::providerconfigs::ProviderConfig) -> Result<Self, Self::Error> {
        let namespace = pc.metadata.namespace.clone().unwrap_or_default();
        let name = format!("{namespace}/{}", pc.metadata.name.as_deref().unwrap_or_default());
        let spec = serde_json::to_value(&pc.spec).map_err(|e| InvalidConfig {
            kind: "ProviderConfig",
            name: name.clone(),
            problems: vec![e.to_string()],
        })?;
        convert("ProviderConfig", name, Some(&namespace), spec)
    }
}

impl TryFrom<&generated::clusterproviderconfigs::ClusterProviderConfig> for ServerConfig {
    type Error = InvalidConfig;
    fn try_from(pc: &generated::clusterproviderconfigs::ClusterProviderConfig) -> Result<Self, Self::Error> {
        let name = pc.metadata.name.clone().unwrap_or_default();
        let spec = serde_json::to_value(&pc.spec).map_err(|e| InvalidConfig {
            kind: "ClusterProviderConfig",
            name: name.clone(),
            problems: vec![e.to_string()],
        })?;
        convert("ClusterProviderConfig", name, None, spec)
    }
}
