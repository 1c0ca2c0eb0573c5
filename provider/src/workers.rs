//! What a (Cluster)ProviderConfig turns into: the worker's ServiceAccount, Roles, RoleBindings
//! and Deployment. Pure: built from the validated [`ServerConfig`], applied by
//! [`crate::configs`].
//!
//! Least privilege (DESIGN.md): the worker's Role in its namespace grants its WorkItems (read,
//! status), its own Lease, events, and `get` on exactly the Secrets and ConfigMaps it needs by
//! name. Password Secrets of managed resources in other namespaces get their own per-Secret
//! Roles, maintained by the managed-resource controllers ([`secret_access`]).

use apis::{
    config::{CaSource, Credentials, ObjectRef, ServerConfig, TlsMode},
    constants::{GROUP, QUEUE_GROUP, VERSION},
    queue::env,
    request::ConfigKind,
};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy},
        core::v1::{
            Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
            PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
            SeccompProfile, SecretKeySelector, SecurityContext, ServiceAccount,
            ServiceAccountTokenProjection, Toleration, Volume, VolumeMount, VolumeProjection,
        },
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use sha2::{Digest, Sha256};
use std::{collections::BTreeMap, time::Duration};

/// Port of the worker's `/healthz`, `/readyz` and `/metrics`.
pub const WORKER_HEALTH_PORT: i32 = 8080;
/// Label naming the component.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label naming the worker instance.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// Label naming who manages the object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_NAME`] on worker objects.
pub const WORKER_COMPONENT: &str = "sqlserver-worker";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "provider-sqlserver";
/// Label on worker objects: kind of the config they serve.
pub const LABEL_CONFIG_KIND: &str = "sqlserver.kubesql.io/config-kind";
/// Label on worker objects: name of the config they serve (hashed if too long).
pub const LABEL_CONFIG_NAME: &str = "sqlserver.kubesql.io/config-name";

/// Projected token volume for Azure Workload Identity: the webhook's name, so a webhook that
/// also mutates the pod sees it present and leaves it alone.
pub const AZURE_TOKEN_VOLUME: &str = "azure-identity-token";
/// Where the Azure federated token is mounted (the webhook's path).
pub const AZURE_TOKEN_DIR: &str = "/var/run/secrets/azure/tokens";
/// `AZURE_FEDERATED_TOKEN_FILE`.
pub const AZURE_TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";
/// Audience of the Azure federated token.
pub const AZURE_TOKEN_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The public cloud's authority host (what the webhook injects by default).
pub const AZURE_PUBLIC_AUTHORITY: &str = "https://login.microsoftonline.com/";
/// Projected token volume for IRSA: the EKS webhook's name.
pub const AWS_TOKEN_VOLUME: &str = "aws-iam-token";
/// Where the IRSA token is mounted (the EKS webhook's path).
pub const AWS_TOKEN_DIR: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
/// `AWS_WEB_IDENTITY_TOKEN_FILE`.
pub const AWS_TOKEN_FILE: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token";
/// Audience of the IRSA token.
pub const AWS_TOKEN_AUDIENCE: &str = "sts.amazonaws.com";

/// The projected ServiceAccount token a credential source needs, as (volume, mount):
/// the provider injects what the cloud's webhook would, so no webhook is required.
fn identity_token(credentials: &Credentials) -> Option<(Volume, VolumeMount)> {
    let (name, dir, file, audience, seconds) = match credentials {
        Credentials::AzureWorkloadIdentity { .. } => (
            AZURE_TOKEN_VOLUME,
            AZURE_TOKEN_DIR,
            "azure-identity-token",
            AZURE_TOKEN_AUDIENCE,
            3600,
        ),
        Credentials::AwsSecretsManager {
            role_arn: Some(_), ..
        } => (
            AWS_TOKEN_VOLUME,
            AWS_TOKEN_DIR,
            "token",
            AWS_TOKEN_AUDIENCE,
            86400,
        ),
        _ => return None,
    };
    let volume = Volume {
        name: name.into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o420),
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(audience.into()),
                    expiration_seconds: Some(seconds),
                    path: file.into(),
                }),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: name.into(),
        mount_path: dir.into(),
        read_only: Some(true),
        ..Default::default()
    };
    Some((volume, mount))
}

/// Which config a worker serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigIdentity {
    /// ProviderConfig or ClusterProviderConfig.
    pub kind: ConfigKind,
    /// Name of the config.
    pub name: String,
    /// Namespace (ProviderConfig only).
    pub namespace: Option<String>,
    /// UID, for owner references.
    pub uid: String,
}

impl ConfigIdentity {
    /// The owner reference every worker object carries, so deleting the config removes them.
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: format!("{GROUP}/{VERSION}"),
            kind: match self.kind {
                ConfigKind::ProviderConfig => "ProviderConfig",
                ConfigKind::ClusterProviderConfig => "ClusterProviderConfig",
            }
            .to_owned(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// Shortens `text` to at most `max` characters, replacing the tail with a hash when it is
/// cut, so distinct long inputs stay distinct (label values and names have length limits).
pub fn fit(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let digest = Sha256::digest(text.as_bytes());
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let keep = max - hash.len() - 1;
    let mut cut = text[..keep].trim_end_matches(['-', '.']).to_owned();
    cut.push('-');
    cut.push_str(&hash);
    cut
}

/// Name of the worker serving a config: Deployment, ServiceAccount, Role, Lease and the
/// WorkItem label value all use it. Kinds get distinct prefixes so a ProviderConfig and a
/// ClusterProviderConfig of the same name never share a worker.
pub fn worker_name(config: &ConfigIdentity) -> String {
    let prefix = match config.kind {
        ConfigKind::ProviderConfig => "sqlserver-worker-pc",
        ConfigKind::ClusterProviderConfig => "sqlserver-worker-cpc",
    };
    // 63: the name is also a label value.
    fit(&format!("{prefix}-{}", config.name), 63)
}

/// Namespace the worker runs in: a ProviderConfig's own; for a ClusterProviderConfig with a
/// Secret source, the Secret's namespace (so `secretKeyRef` can reach it); otherwise the
/// provider's namespace.
pub fn worker_namespace(config: &ConfigIdentity, server: &ServerConfig, provider_namespace: &str) -> String {
    match (&config.namespace, &server.credentials) {
        (Some(ns), _) => ns.clone(),
        (None, Credentials::Secret { secret, .. }) => secret.namespace.clone(),
        (None, _) => provider_namespace.to_owned(),
    }
}

/// Everything the provider applies for one config.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerObjects {
    /// Worker name.
    pub name: String,
    /// Worker namespace.
    pub namespace: String,
    /// The ServiceAccount to create, unless the config names an existing one.
    pub service_account: Option<ServiceAccount>,
    /// Role + RoleBinding per namespace holding something the worker must read or write;
    /// the first is the worker's own namespace (queue, Lease, events).
    pub access: Vec<(Role, RoleBinding)>,
    /// The worker Deployment.
    pub deployment: Deployment,
}

/// Labels common to every worker object.
pub fn worker_labels(config: &ConfigIdentity, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), WORKER_COMPONENT.to_owned()),
        (LABEL_INSTANCE.to_owned(), name.to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (
            LABEL_CONFIG_KIND.to_owned(),
            match config.kind {
                ConfigKind::ProviderConfig => "ProviderConfig",
                ConfigKind::ClusterProviderConfig => "ClusterProviderConfig",
            }
            .to_owned(),
        ),
        (LABEL_CONFIG_NAME.to_owned(), fit(&config.name, 63)),
    ])
}

fn meta(
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels.clone()),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[String]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        resource_names: (!names.is_empty()).then(|| names.to_vec()),
        ..Default::default()
    }
}

/// Secrets and ConfigMaps (by namespace) the worker must read for its config.
fn config_reads(server: &ServerConfig) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let mut reads: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    let mut add = |object: &ObjectRef, secret: bool| {
        let entry = reads.entry(object.namespace.clone()).or_default();
        let list = if secret { &mut entry.0 } else { &mut entry.1 };
        if !list.contains(&object.name) {
            list.push(object.name.clone());
        }
    };
    match &server.credentials {
        Credentials::Secret { secret, .. } => add(secret, true),
        Credentials::AzureWorkloadIdentity {
            authority_ca: Some(CaSource::ConfigMap { object, .. }),
            ..
        } => add(object, false),
        Credentials::AzureWorkloadIdentity {
            authority_ca: Some(CaSource::Secret { object, .. }),
            ..
        } => add(object, true),
        _ => {}
    }
    match &server.tls.ca {
        Some(CaSource::Secret { object, .. }) => add(object, true),
        Some(CaSource::ConfigMap { object, .. }) => add(object, false),
        None => {}
    }
    reads
}

/// Builds every object of a config's worker.
pub fn build(
    config: &ConfigIdentity,
    server: &ServerConfig,
    provider_namespace: &str,
    default_image: &str,
    log_format: &str,
    default_poll: Duration,
) -> WorkerObjects {
    let name = worker_name(config);
    let namespace = worker_namespace(config, server, provider_namespace);
    let labels = worker_labels(config, &name);
    let owner = config.owner_reference();
    let service_account_name = server
        .worker
        .service_account_name
        .clone()
        .unwrap_or_else(|| name.clone());

    let service_account = server.worker.service_account_name.is_none().then(|| {
        let mut annotations = server.worker.service_account_annotations.clone();
        match &server.credentials {
            Credentials::AzureWorkloadIdentity {
                client_id, tenant_id, ..
            } => {
                annotations.insert("azure.workload.identity/client-id".into(), client_id.clone());
                annotations.insert("azure.workload.identity/tenant-id".into(), tenant_id.clone());
            }
            Credentials::AwsSecretsManager {
                role_arn: Some(arn), ..
            } => {
                annotations.insert("eks.amazonaws.com/role-arn".into(), arn.clone());
            }
            _ => {}
        }
        let mut meta = meta(&name, &namespace, &labels, &owner);
        meta.annotations = (!annotations.is_empty()).then_some(annotations);
        ServiceAccount {
            metadata: meta,
            ..Default::default()
        }
    });

    // The worker's own namespace always comes first: it holds the queue and the Lease.
    let mut reads = config_reads(server);
    let own_reads = reads.remove(&namespace).unwrap_or_default();
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: service_account_name.clone(),
        namespace: Some(namespace.clone()),
        ..Default::default()
    };
    let binding = |role_name: &str, ns: &str| RoleBinding {
        metadata: meta(role_name, ns, &labels, &owner),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: role_name.into(),
        },
        subjects: Some(vec![subject.clone()]),
    };
    let mut own_rules = vec![
        rule(&[QUEUE_GROUP], &["workitems"], &["get", "list", "watch"], &[]),
        // Status is only ever server-side applied (a patch): no get or update on it.
        rule(&[QUEUE_GROUP], &["workitems/status"], &["patch"], &[]),
        // `create` cannot be limited by name; everything else on Leases is this worker's only.
        // kube-lease-manager and the connection report only read and patch it.
        rule(&["coordination.k8s.io"], &["leases"], &["create"], &[]),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["get", "patch"],
            std::slice::from_ref(&name),
        ),
        rule(&["", "events.k8s.io"], &["events"], &["create", "patch"], &[]),
    ];
    if !own_reads.0.is_empty() {
        own_rules.push(rule(&[""], &["secrets"], &["get"], &own_reads.0));
    }
    if !own_reads.1.is_empty() {
        own_rules.push(rule(&[""], &["configmaps"], &["get"], &own_reads.1));
    }
    let mut access = vec![(
        Role {
            metadata: meta(&name, &namespace, &labels, &owner),
            rules: Some(own_rules),
        },
        binding(&name, &namespace),
    )];
    for (ns, (secrets, configmaps)) in reads {
        let mut rules = Vec::new();
        if !secrets.is_empty() {
            rules.push(rule(&[""], &["secrets"], &["get"], &secrets));
        }
        if !configmaps.is_empty() {
            rules.push(rule(&[""], &["configmaps"], &["get"], &configmaps));
        }
        access.push((
            Role {
                metadata: meta(&name, &ns, &labels, &owner),
                rules: Some(rules),
            },
            binding(&name, &ns),
        ));
    }

    let env = worker_env(server, &name, log_format, default_poll);
    let deployment = deployment(
        server,
        &name,
        &namespace,
        &labels,
        &owner,
        &service_account_name,
        default_image,
        env,
    );
    WorkerObjects {
        name,
        namespace,
        service_account,
        access,
        deployment,
    }
}

fn plain(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secret_key(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The worker's environment, per apis::queue::env. Secret values only ever travel as
/// `secretKeyRef`s: the provider never reads the worker's credentials.
pub fn worker_env(
    server: &ServerConfig,
    name: &str,
    log_format: &str,
    default_poll: Duration,
) -> Vec<EnvVar> {
    let mut vars = vec![
        plain(env::WORKER_NAME, name),
        field(env::POD_NAMESPACE, "metadata.namespace"),
        field(env::POD_NAME, "metadata.name"),
        field(env::POD_IP, "status.podIP"),
        plain(env::SQL_HOST, &server.endpoint.host),
        plain(env::SQL_PORT, server.endpoint.port.to_string()),
    ];
    if let Some(instance) = &server.endpoint.instance {
        vars.push(plain(env::SQL_INSTANCE, instance));
    }
    vars.push(plain(
        env::TLS_MODE,
        match server.tls.mode {
            TlsMode::Strict => "Strict",
            TlsMode::Required => "Required",
            TlsMode::Optional => "Optional",
            TlsMode::Disabled => "Disabled",
        },
    ));
    match &server.tls.ca {
        Some(CaSource::Secret { object, key }) => vars.push(plain(
            env::TLS_CA,
            format!("secret/{}/{}/{key}", object.namespace, object.name),
        )),
        Some(CaSource::ConfigMap { object, key }) => vars.push(plain(
            env::TLS_CA,
            format!("configmap/{}/{}/{key}", object.namespace, object.name),
        )),
        None => {}
    }
    if let Some(host) = &server.tls.host_name_in_certificate {
        vars.push(plain(env::TLS_HOSTNAME, host));
    }
    vars.push(plain(
        env::TLS_TRUST_SERVER_CERTIFICATE,
        server.tls.trust_server_certificate.to_string(),
    ));
    vars.push(plain(env::AUTH_METHOD, server.credentials.source()));
    match &server.credentials {
        Credentials::Secret {
            secret,
            username_key,
            password_key,
        } => {
            vars.push(secret_key(env::SQL_USER, &secret.name, username_key));
            vars.push(secret_key(env::SQL_PASSWORD, &secret.name, password_key));
        }
        Credentials::AwsSecretsManager {
            secret_id,
            region,
            role_arn,
            username_key,
            password_key,
            endpoint_url,
        } => {
            vars.push(plain(env::AWS_SECRET_ID, secret_id));
            vars.push(plain(env::AWS_SECRET_USERNAME_KEY, username_key));
            vars.push(plain(env::AWS_SECRET_PASSWORD_KEY, password_key));
            vars.push(plain("AWS_REGION", region));
            vars.push(plain("AWS_DEFAULT_REGION", region));
            if let Some(arn) = role_arn {
                // What the EKS pod identity webhook injects for IRSA (same names and path,
                // so a webhook finds them present and adds nothing).
                vars.push(plain("AWS_ROLE_ARN", arn));
                vars.push(plain("AWS_WEB_IDENTITY_TOKEN_FILE", AWS_TOKEN_FILE));
                vars.push(plain("AWS_STS_REGIONAL_ENDPOINTS", "regional"));
            }
            if let Some(url) = endpoint_url {
                vars.push(plain("AWS_ENDPOINT_URL", url));
            }
        }
        Credentials::AzureWorkloadIdentity {
            client_id,
            tenant_id,
            authority_host,
            authority_ca,
        } => {
            // What the Azure Workload Identity webhook injects (same names, same token path).
            vars.push(plain("AZURE_CLIENT_ID", client_id));
            vars.push(plain("AZURE_TENANT_ID", tenant_id));
            vars.push(plain("AZURE_FEDERATED_TOKEN_FILE", AZURE_TOKEN_FILE));
            vars.push(plain(
                "AZURE_AUTHORITY_HOST",
                authority_host.as_deref().unwrap_or(AZURE_PUBLIC_AUTHORITY),
            ));
            match authority_ca {
                Some(CaSource::ConfigMap { object, key }) => vars.push(plain(
                    env::AZURE_AUTHORITY_CA,
                    format!("configmap/{}/{}/{key}", object.namespace, object.name),
                )),
                Some(CaSource::Secret { object, key }) => vars.push(plain(
                    env::AZURE_AUTHORITY_CA,
                    format!("secret/{}/{}/{key}", object.namespace, object.name),
                )),
                None => {}
            }
        }
        Credentials::AzureManagedIdentity {
            client_id: Some(client_id),
        } => {
            vars.push(plain("AZURE_CLIENT_ID", client_id));
        }
        Credentials::AzureManagedIdentity { client_id: None } | Credentials::InjectedIdentity => {}
    }
    let poll = server.worker.poll_interval.unwrap_or(default_poll);
    vars.push(plain(
        env::POLL_INTERVAL,
        format!("{}ms", poll.as_millis().max(1000)),
    ));
    vars.push(plain(
        env::MAX_CONCURRENT_OPERATIONS,
        server.worker.max_concurrent_operations.to_string(),
    ));
    vars.push(plain(env::HEALTH_PORT, WORKER_HEALTH_PORT.to_string()));
    vars.push(plain(env::LOG_FORMAT, log_format));
    vars
}

fn quantities(map: &BTreeMap<String, String>, defaults: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    if map.is_empty() {
        return defaults
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect();
    }
    map.iter()
        .map(|(k, v)| (k.clone(), Quantity(v.clone())))
        .collect()
}

fn probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(WORKER_HEALTH_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn deployment(
    server: &ServerConfig,
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    owner: &OwnerReference,
    service_account: &str,
    default_image: &str,
    env: Vec<EnvVar>,
) -> Deployment {
    let selector = BTreeMap::from([
        (LABEL_NAME.to_owned(), WORKER_COMPONENT.to_owned()),
        (LABEL_INSTANCE.to_owned(), name.to_owned()),
    ]);
    let mut pod_labels = server.worker.pod_labels.clone();
    pod_labels.extend(labels.clone());
    if matches!(server.credentials, Credentials::AzureWorkloadIdentity { .. }) {
        pod_labels.insert("azure.workload.identity/use".into(), "true".into());
    }
    let token = identity_token(&server.credentials);
    let container = Container {
        name: "worker".into(),
        volume_mounts: token.as_ref().map(|(_, m)| vec![m.clone()]),
        image: Some(
            server
                .worker
                .image
                .clone()
                .unwrap_or_else(|| default_image.to_owned()),
        ),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("health".into()),
            container_port: WORKER_HEALTH_PORT,
            ..Default::default()
        }]),
        liveness_probe: Some(probe("/healthz", 10)),
        readiness_probe: Some(probe("/readyz", 5)),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(
                &server.worker.requests,
                &[("cpu", "10m"), ("memory", "32Mi")],
            )),
            limits: Some(quantities(&server.worker.limits, &[("memory", "128Mi")])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let tolerations = server
        .worker
        .tolerations
        .iter()
        .filter_map(|t| serde_json::from_value::<Toleration>(t.clone()).ok())
        .collect::<Vec<_>>();
    Deployment {
        metadata: meta(name, namespace, labels, owner),
        spec: Some(DeploymentSpec {
            replicas: Some(server.worker.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            // One Lease holder at a time anyway; Recreate avoids two generations of workers
            // with different settings competing for it during a config change.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(service_account.to_owned()),
                    automount_service_account_token: Some(true),
                    containers: vec![container],
                    node_selector: (!server.worker.node_selector.is_empty())
                        .then(|| server.worker.node_selector.clone()),
                    tolerations: (!tolerations.is_empty()).then_some(tolerations),
                    volumes: token.map(|(v, _)| vec![v]),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Role + RoleBinding letting one worker `get` exactly one password Secret in a managed
/// resource's namespace. One pair per Secret, owned by the managed resource, so nothing ever
/// edits a shared list of names and deleting the resource revokes the access.
pub fn secret_access(
    worker: &str,
    worker_namespace: &str,
    service_account: &str,
    secret_namespace: &str,
    secret: &str,
    owner: OwnerReference,
) -> (Role, RoleBinding) {
    let name = fit(&format!("{worker}-secret-{secret}"), 253);
    let labels = BTreeMap::from([
        (LABEL_NAME.to_owned(), WORKER_COMPONENT.to_owned()),
        (LABEL_INSTANCE.to_owned(), worker.to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ]);
    let m = meta(
        &name,
        secret_namespace,
        &labels,
        &OwnerReference {
            controller: Some(true),
            ..owner
        },
    );
    (
        Role {
            metadata: m.clone(),
            rules: Some(vec![rule(&[""], &["secrets"], &["get"], &[secret.to_owned()])]),
        },
        RoleBinding {
            metadata: m,
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name,
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: service_account.into(),
                namespace: Some(worker_namespace.into()),
                ..Default::default()
            }]),
        },
    )
}

/// Annotation on each worker object: a hash of what the provider last applied, so that the
/// 30-second resync reads and compares instead of writing an unchanged object again.
pub const ANNOTATION_APPLIED_HASH: &str = "sqlserver.kubesql.io/applied-hash";

/// Hash of an object as the provider applies it (its serialized form, without the hash
/// annotation itself; fields the apiserver fills in are not part of it).
pub fn applied_hash<T: serde::Serialize>(object: &T) -> String {
    let json = serde_json::to_vec(object).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Puts [`applied_hash`] of the object on its metadata; returns the hash.
pub fn stamp<T: serde::Serialize + k8s_openapi::Metadata<Ty = ObjectMeta>>(object: &mut T) -> String {
    object
        .metadata_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .remove(ANNOTATION_APPLIED_HASH);
    let hash = applied_hash(object);
    object
        .metadata_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOTATION_APPLIED_HASH.into(), hash.clone());
    hash
}

/// Whether a stamped object must be applied: it does not exist, or what was last applied
/// (its hash annotation) is not what the provider wants now.
pub fn needs_apply(live: Option<&ObjectMeta>, hash: &str) -> bool {
    live.is_none_or(|m| {
        m.annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_APPLIED_HASH))
            .is_none_or(|h| h != hash)
    })
}

/// [`needs_apply`] for the Deployment, which is also re-applied when its replica count was
/// changed behind the provider's back (`kubectl scale`): the config owns it.
pub fn deployment_needs_apply(live: Option<&Deployment>, desired: &Deployment, hash: &str) -> bool {
    needs_apply(live.map(|d| &d.metadata), hash)
        || live.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas)
            != desired.spec.as_ref().and_then(|s| s.replicas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use apis::generated::{clusterproviderconfigs::ClusterProviderConfig, providerconfigs::ProviderConfig};

    const TEN_MINUTES: Duration = Duration::from_secs(600);

    fn pc(spec: &str) -> (ConfigIdentity, ServerConfig) {
        let pc: ProviderConfig = serde_saphyr::from_str(&format!(
            "apiVersion: sqlserver.kubesql.io/v1alpha1\nkind: ProviderConfig\nmetadata: {{name: sql1, namespace: team-a, uid: u-1}}\nspec:\n{spec}"
        ))
        .unwrap();
        let id = ConfigIdentity {
            kind: ConfigKind::ProviderConfig,
            name: "sql1".into(),
            namespace: Some("team-a".into()),
            uid: "u-1".into(),
        };
        (id, ServerConfig::try_from(&pc).unwrap())
    }

    fn env_of(objects: &WorkerObjects) -> BTreeMap<String, EnvVar> {
        let pod = objects
            .deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        pod.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    /// The resync must not write unchanged worker objects (the benchmark counted one
    /// Deployment, ServiceAccount, Role and RoleBinding apply per config every 30 s).
    #[test]
    fn unchanged_worker_objects_are_not_applied_again() {
        let spec = "  endpoint: {host: sql.internal, port: 1444}\n  credentials: {source: Secret, secretRef: {name: sa-login}}\n";
        let (id, server) = pc(spec);
        let mut desired =
            build(&id, &server, "provider-system", "worker:dev", "json", TEN_MINUTES).deployment;
        let hash = stamp(&mut desired);
        assert_eq!(
            stamp(&mut desired.clone()),
            hash,
            "stamping twice gives the same hash"
        );
        // What the apiserver returns: our fields, the stamp, plus defaults and status.
        let mut live = desired.clone();
        live.metadata.resource_version = Some("42".into());
        live.metadata.generation = Some(3);
        live.status = Some(Default::default());

        let (_, other_server) = pc(&format!("{spec}  worker: {{image: worker:v2}}\n"));
        let mut changed = build(
            &id,
            &other_server,
            "provider-system",
            "worker:dev",
            "json",
            TEN_MINUTES,
        )
        .deployment;
        let changed_hash = stamp(&mut changed);
        let mut scaled = live.clone();
        scaled.spec.as_mut().unwrap().replicas = Some(5);
        let mut unstamped = live.clone();
        unstamped.metadata.annotations = None;

        let cases: [(&str, Option<&Deployment>, &Deployment, &str, bool); 5] = [
            (
                "nothing changed: read, compare, no write",
                Some(&live),
                &desired,
                &hash,
                false,
            ),
            ("not there yet: create it", None, &desired, &hash, true),
            (
                "the config changed (image): apply",
                Some(&live),
                &changed,
                &changed_hash,
                true,
            ),
            (
                "scaled behind our back: the config owns replicas",
                Some(&scaled),
                &desired,
                &hash,
                true,
            ),
            (
                "applied by an older provider without the stamp",
                Some(&unstamped),
                &desired,
                &hash,
                true,
            ),
        ];
        for (why, live, desired, hash, expected) in cases {
            assert_eq!(deployment_needs_apply(live, desired, hash), expected, "{why}");
        }
        assert_ne!(hash, changed_hash, "the hash covers the pod template");
    }

    #[test]
    fn secret_source_worker_reads_exactly_its_secret() {
        let (id, server) = pc(
            "  endpoint: {host: sql.internal, port: 1444}\n  credentials: {source: Secret, secretRef: {name: sa-login}}\n",
        );
        let objects = build(&id, &server, "provider-system", "worker:dev", "json", TEN_MINUTES);
        assert_eq!(objects.name, "sqlserver-worker-pc-sql1");
        assert_eq!(
            objects.namespace, "team-a",
            "a ProviderConfig's worker runs in its namespace"
        );
        assert_eq!(objects.access.len(), 1, "nothing outside its own namespace");
        let rules = objects.access[0].0.rules.clone().unwrap();
        let secrets: Vec<_> = rules
            .iter()
            .filter(|r| r.resources.as_ref().unwrap()[0] == "secrets")
            .collect();
        assert_eq!(secrets.len(), 1);
        assert_eq!(
            secrets[0].resource_names.as_deref(),
            Some(&["sa-login".to_string()][..])
        );
        assert_eq!(secrets[0].verbs, vec!["get"]);
        assert!(
            rules
                .iter()
                .all(|r| r.resources.as_ref().unwrap()[0] != "secrets" || r.resource_names.is_some()),
            "never an unnamed secrets rule"
        );
        let env = env_of(&objects);
        // The password travels as a reference; the provider never sees its value.
        let pw = env[env::SQL_PASSWORD]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((pw.name.as_str(), pw.key.as_str()), ("sa-login", "password"));
        assert!(env[env::SQL_PASSWORD].value.is_none());
        assert_eq!(env[env::SQL_PORT].value.as_deref(), Some("1444"));
        assert_eq!(
            env[env::POD_IP]
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "status.podIP"
        );
        assert_eq!(env[env::TLS_MODE].value.as_deref(), Some("Required"));
        assert_eq!(
            env[env::POLL_INTERVAL].value.as_deref(),
            Some("600000ms"),
            "the provider's default"
        );
        let owner = &objects.deployment.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ProviderConfig", "u-1", Some(true))
        );
        let sa = objects.service_account.as_ref().unwrap();
        assert_eq!(sa.metadata.name.as_deref(), Some("sqlserver-worker-pc-sql1"));
    }

    /// The worker's own Role, rule by rule: exactly the calls the worker makes (worker/README.md),
    /// so a widened grant fails here.
    #[test]
    fn worker_role_is_exactly_what_the_worker_calls() {
        let (id, server) = pc(
            "  endpoint: {host: h}\n  credentials: {source: Secret, secretRef: {name: sa-login}}\n  tls: {mode: Strict, caConfigMapRef: {name: ca, key: ca.crt}}\n",
        );
        let objects = build(&id, &server, "p", "worker:dev", "json", TEN_MINUTES);
        let rules: Vec<(String, String, Vec<String>, Vec<String>)> = objects.access[0]
            .0
            .rules
            .clone()
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.api_groups.unwrap_or_default().join(","),
                    r.resources.unwrap_or_default().join(","),
                    r.verbs,
                    r.resource_names.unwrap_or_default(),
                )
            })
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let name = "sqlserver-worker-pc-sql1";
        assert_eq!(
            rules,
            vec![
                (
                    QUEUE_GROUP.into(),
                    "workitems".into(),
                    s(&["get", "list", "watch"]),
                    vec![]
                ),
                (
                    QUEUE_GROUP.into(),
                    "workitems/status".into(),
                    s(&["patch"]),
                    vec![]
                ),
                (
                    "coordination.k8s.io".into(),
                    "leases".into(),
                    s(&["create"]),
                    vec![]
                ),
                (
                    "coordination.k8s.io".into(),
                    "leases".into(),
                    s(&["get", "patch"]),
                    s(&[name])
                ),
                (
                    ",events.k8s.io".into(),
                    "events".into(),
                    s(&["create", "patch"]),
                    vec![]
                ),
                ("".into(), "secrets".into(), s(&["get"]), s(&["sa-login"])),
                ("".into(), "configmaps".into(), s(&["get"]), s(&["ca"])),
            ]
        );
    }

    #[test]
    fn pod_is_hardened() {
        let (id, server) = pc("  endpoint: {host: h}\n  credentials: {source: InjectedIdentity}\n");
        let d = build(&id, &server, "p", "worker:dev", "json", TEN_MINUTES).deployment;
        let pod = d.spec.unwrap().template.spec.unwrap();
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".into()]));
        assert!(pod.containers[0].readiness_probe.is_some() && pod.containers[0].liveness_probe.is_some());
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("worker:dev"),
            "image from the provider's flag"
        );
    }

    #[test]
    fn cluster_config_worker_runs_next_to_its_secret() {
        let cpc: ClusterProviderConfig = serde_saphyr::from_str(
            "apiVersion: sqlserver.kubesql.io/v1alpha1\nkind: ClusterProviderConfig\nmetadata: {name: default, uid: u-2}\nspec:\n  endpoint: {host: h}\n  credentials: {source: Secret, secretRef: {name: s, namespace: infra}}\n  tls: {caConfigMapRef: {name: ca, key: ca.crt, namespace: certs}}\n",
        )
        .unwrap();
        let id = ConfigIdentity {
            kind: ConfigKind::ClusterProviderConfig,
            name: "default".into(),
            namespace: None,
            uid: "u-2".into(),
        };
        let server = ServerConfig::try_from(&cpc).unwrap();
        let objects = build(&id, &server, "provider-system", "w", "plain", TEN_MINUTES);
        assert_eq!(objects.name, "sqlserver-worker-cpc-default");
        assert_eq!(
            objects.namespace, "infra",
            "secretKeyRef only reaches its own namespace"
        );
        assert_eq!(objects.access.len(), 2, "own namespace plus the CA's");
        let (ca_role, ca_binding) = &objects.access[1];
        assert_eq!(ca_role.metadata.namespace.as_deref(), Some("certs"));
        let rules = ca_role.rules.as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["configmaps".to_string()][..])
        );
        assert_eq!(
            ca_binding.subjects.as_ref().unwrap()[0].namespace.as_deref(),
            Some("infra")
        );
        assert_eq!(
            env_of(&objects)[env::TLS_CA].value.as_deref(),
            Some("configmap/certs/ca/ca.crt")
        );
    }

    #[test]
    fn identity_annotations_per_source() {
        let (id, server) = pc(
            "  endpoint: {host: h}\n  credentials: {source: AzureWorkloadIdentity, azure: {clientId: 11111111-2222-3333-4444-555555555555, tenantId: 11111111-2222-3333-4444-666666666666}}\n",
        );
        let objects = build(&id, &server, "p", "w", "json", TEN_MINUTES);
        let annotations = objects.service_account.unwrap().metadata.annotations.unwrap();
        assert_eq!(
            annotations["azure.workload.identity/client-id"],
            "11111111-2222-3333-4444-555555555555"
        );
        let labels = objects
            .deployment
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap();
        assert_eq!(labels["azure.workload.identity/use"], "true");

        let (id, server) = pc(
            "  endpoint: {host: h}\n  credentials: {source: AwsSecretsManager, awsSecretsManager: {secretId: x, region: eu-west-1, roleArn: \"arn:aws:iam::123456789012:role/sql\"}}\n",
        );
        let objects = build(&id, &server, "p", "w", "json", TEN_MINUTES);
        assert_eq!(
            objects.service_account.unwrap().metadata.annotations.unwrap()["eks.amazonaws.com/role-arn"],
            "arn:aws:iam::123456789012:role/sql"
        );
        let (id, server) = pc(
            "  endpoint: {host: h}\n  credentials: {source: InjectedIdentity}\n  worker: {serviceAccountName: existing}\n",
        );
        let objects = build(&id, &server, "p", "w", "json", TEN_MINUTES);
        assert!(
            objects.service_account.is_none(),
            "an existing ServiceAccount is used as is"
        );
        assert_eq!(objects.access[0].1.subjects.as_ref().unwrap()[0].name, "existing");
    }

    #[test]
    fn identity_tokens_and_environment_are_injected_without_a_webhook() {
        let pod_of =
            |objects: &WorkerObjects| objects.deployment.spec.clone().unwrap().template.spec.unwrap();
        /// (why, spec, volume name, mount dir, audience, env that must be set)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            Vec<(&'a str, &'a str)>,
        );
        let cases: Vec<Case> = vec![
            (
                "workload identity: the webhook's volume, path, audience and variables",
                "  endpoint: {host: h}\n  credentials: {source: AzureWorkloadIdentity, azure: {clientId: 11111111-2222-3333-4444-555555555555, tenantId: 11111111-2222-3333-4444-666666666666, authorityHost: \"https://127.0.0.1:9443/\", authorityCaConfigMapRef: {name: entra-ca, key: ca.crt}}}\n",
                AZURE_TOKEN_VOLUME,
                AZURE_TOKEN_DIR,
                "api://AzureADTokenExchange",
                vec![
                    ("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555"),
                    ("AZURE_TENANT_ID", "11111111-2222-3333-4444-666666666666"),
                    ("AZURE_FEDERATED_TOKEN_FILE", AZURE_TOKEN_FILE),
                    ("AZURE_AUTHORITY_HOST", "https://127.0.0.1:9443/"),
                    (env::AZURE_AUTHORITY_CA, "configmap/team-a/entra-ca/ca.crt"),
                ],
            ),
            (
                "IRSA: the EKS webhook's volume, path, audience and variables",
                "  endpoint: {host: h}\n  credentials: {source: AwsSecretsManager, awsSecretsManager: {secretId: x, region: eu-west-1, roleArn: \"arn:aws:iam::123456789012:role/sql\", endpointUrl: \"http://127.0.0.1:5000\"}}\n",
                AWS_TOKEN_VOLUME,
                AWS_TOKEN_DIR,
                "sts.amazonaws.com",
                vec![
                    ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/sql"),
                    ("AWS_WEB_IDENTITY_TOKEN_FILE", AWS_TOKEN_FILE),
                    ("AWS_REGION", "eu-west-1"),
                    ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
                    (env::AWS_SECRET_ID, "x"),
                ],
            ),
        ];
        for (why, spec, volume, dir, audience, want) in cases {
            let (id, server) = pc(spec);
            let objects = build(&id, &server, "p", "w", "json", TEN_MINUTES);
            let pod = pod_of(&objects);
            let volumes = pod.volumes.clone().unwrap_or_default();
            assert_eq!(volumes.len(), 1, "{why}");
            assert_eq!(volumes[0].name, volume, "{why}");
            let projection = volumes[0].projected.clone().unwrap().sources.unwrap()[0]
                .service_account_token
                .clone()
                .unwrap();
            assert_eq!(projection.audience.as_deref(), Some(audience), "{why}");
            let mounts = pod.containers[0].volume_mounts.clone().unwrap();
            assert_eq!(
                (mounts[0].name.as_str(), mounts[0].mount_path.as_str()),
                (volume, dir),
                "{why}"
            );
            let env = env_of(&objects);
            for (name, value) in want {
                assert_eq!(env[name].value.as_deref(), Some(value), "{why}: {name}");
            }
        }
        // The authority CA is readable by exactly this worker.
        let (id, server) = pc(
            "  endpoint: {host: h}\n  credentials: {source: AzureWorkloadIdentity, azure: {clientId: 11111111-2222-3333-4444-555555555555, tenantId: 11111111-2222-3333-4444-666666666666, authorityCaConfigMapRef: {name: entra-ca, key: ca.crt}}}\n",
        );
        let objects = build(&id, &server, "p", "w", "json", TEN_MINUTES);
        let rules = objects.access[0].0.rules.clone().unwrap();
        assert!(rules.iter().any(
            |r| r.resources.as_deref() == Some(&["configmaps".to_string()][..])
                && r.resource_names.as_deref() == Some(&["entra-ca".to_string()][..])
        ));
        assert_eq!(
            env_of(&objects)["AZURE_AUTHORITY_HOST"].value.as_deref(),
            Some(AZURE_PUBLIC_AUTHORITY),
            "the public cloud by default, as the webhook"
        );
        // Managed identity: the user-assigned client id, and nothing to project.
        let (id, server) = pc(
            "  endpoint: {host: h}\n  credentials: {source: AzureManagedIdentity, azure: {clientId: 11111111-2222-3333-4444-777777777777}}\n",
        );
        let objects = build(&id, &server, "p", "w", "json", TEN_MINUTES);
        let env = env_of(&objects);
        assert_eq!(
            env["AZURE_CLIENT_ID"].value.as_deref(),
            Some("11111111-2222-3333-4444-777777777777")
        );
        assert!(
            !env.contains_key("AZURE_FEDERATED_TOKEN_FILE"),
            "no federation for a managed identity"
        );
        assert!(pod_of(&objects).volumes.is_none());
        // Sources with nothing to project get no volume.
        for spec in [
            "  endpoint: {host: h}\n  credentials: {source: InjectedIdentity}\n",
            "  endpoint: {host: h}\n  credentials: {source: AwsSecretsManager, awsSecretsManager: {secretId: x, region: eu-west-1}}\n",
        ] {
            let (id, server) = pc(spec);
            let objects = build(&id, &server, "p", "w", "json", TEN_MINUTES);
            assert!(pod_of(&objects).volumes.is_none(), "{spec}");
            assert!(
                !env_of(&objects).contains_key("AWS_WEB_IDENTITY_TOKEN_FILE"),
                "Pod Identity: the chain finds it"
            );
        }
    }

    #[test]
    fn long_names_fit() {
        let long = "x".repeat(300);
        let a = fit(&long, 63);
        assert_eq!(a.len(), 63);
        assert_ne!(a, fit(&format!("{long}y"), 63), "distinct inputs stay distinct");
        assert_eq!(fit("short", 63), "short");
    }
}
