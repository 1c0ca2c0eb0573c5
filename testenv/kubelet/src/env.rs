//! A container's environment: `envFrom`, `env` (values and `valueFrom`) and what the kubelet
//! adds (service host/port, the pod's kubeconfig, where mounts are).

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVarSource, ObjectFieldSelector, Pod, Secret};
use kube::{Api, Client};
use std::collections::BTreeMap;

/// Variables every process gets, before the container's own.
pub struct Base {
    /// Pod IP (loopback).
    pub pod_ip: String,
    /// Apiserver port.
    pub api_port: u16,
    /// Per-pod kubeconfig, if the pod mounts a ServiceAccount token.
    pub kubeconfig: Option<String>,
    /// Root under which this container's volume mount paths are materialised.
    pub mount_root: String,
    /// Per-pod directory (HOME of the process).
    pub pod_dir: String,
}

/// Builds the full, ordered environment of `c` in `pod`.
pub async fn build(client: &Client, pod: &Pod, c: &Container, base: &Base) -> Result<Vec<(String, String)>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        vars.retain(|(n, _)| *n != k);
        vars.push((k, v));
    };
    let port = base.api_port.to_string();
    set(
        &mut vars,
        "PATH".into(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
    );
    set(&mut vars, "HOME".into(), base.pod_dir.clone());
    set(
        &mut vars,
        "HOSTNAME".into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    // Nothing may dial the service CIDR: the `kubernetes` Service is the apiserver on loopback.
    set(&mut vars, "KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into());
    set(&mut vars, "KUBERNETES_SERVICE_PORT".into(), port.clone());
    set(&mut vars, "KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone());
    set(
        &mut vars,
        "KUBERNETES_PORT".into(),
        format!("tcp://127.0.0.1:{port}"),
    );
    set(&mut vars, "TESTENV_MOUNT_ROOT".into(), base.mount_root.clone());
    set(&mut vars, "TESTENV_POD_DIR".into(), base.pod_dir.clone());
    if let Some(k) = &base.kubeconfig {
        set(&mut vars, "KUBECONFIG".into(), k.clone());
    }

    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match get_configmap(client, &ns, &r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => bail!("configmap {:?} not found", r.name),
            }
        }
        if let Some(r) = &from.secret_ref {
            match get_secret(client, &ns, &r.name).await? {
                Some(s) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        set(
                            &mut vars,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => bail!("secret {:?} not found", r.name),
            }
        }
    }

    let mount_paths: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => Some(in_mount_root(&expand(v, &vars), &mount_paths, &base.mount_root)),
            (None, Some(src)) => value_from(client, pod, c, src, base).await?,
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            set(&mut vars, e.name.clone(), v);
        }
    }
    Ok(vars)
}

async fn get_configmap(client: &Client, ns: &str, name: &str) -> Result<Option<ConfigMap>> {
    Ok(Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?)
}

async fn get_secret(client: &Client, ns: &str, name: &str) -> Result<Option<Secret>> {
    Ok(Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?)
}

async fn value_from(
    client: &Client,
    pod: &Pod,
    c: &Container,
    src: &EnvVarSource,
    base: &Base,
) -> Result<Option<String>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    if let Some(f) = &src.field_ref {
        return field(pod, f, &base.pod_ip).map(Some);
    }
    if let Some(r) = &src.secret_key_ref {
        let optional = r.optional == Some(true);
        let v = get_secret(client, &ns, &r.name)
            .await?
            .and_then(|s| s.data?.remove(&r.key));
        return match v {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v.0).into_owned())),
            None if optional => Ok(None),
            None => bail!("secret {:?} key {:?} not found", r.name, r.key),
        };
    }
    if let Some(r) = &src.config_map_key_ref {
        let optional = r.optional == Some(true);
        let v = get_configmap(client, &ns, &r.name)
            .await?
            .and_then(|s| s.data?.remove(&r.key));
        return match v {
            Some(v) => Ok(Some(v)),
            None if optional => Ok(None),
            None => bail!("configmap {:?} key {:?} not found", r.name, r.key),
        };
    }
    if let Some(r) = &src.resource_field_ref {
        // No cgroups here: report the declared limit (or request), else a node-sized default.
        let res = c.resources.as_ref();
        let (kind, name) = r
            .resource
            .split_once('.')
            .unwrap_or(("limits", r.resource.as_str()));
        let declared = res.and_then(|res| {
            if kind == "limits" {
                res.limits.as_ref()
            } else {
                res.requests.as_ref()
            }
        });
        let v = declared.and_then(|m| m.get(name)).map(|q| q.0.clone());
        return Ok(Some(v.unwrap_or_else(|| {
            if name == "cpu" {
                "64".into()
            } else {
                "274877906944".into()
            }
        })));
    }
    Ok(Some(String::new()))
}

/// Value of a downward-API field path.
pub fn field(pod: &Pod, f: &ObjectFieldSelector, pod_ip: &str) -> Result<String> {
    let m = &pod.metadata;
    let path = f.field_path.as_str();
    let bracket = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_string)
    };
    let v = match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".to_string(),
        "metadata.labels" | "metadata.annotations" => {
            let map = if path == "metadata.labels" {
                &m.labels
            } else {
                &m.annotations
            };
            map.iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ => {
            if let Some(k) = bracket("metadata.labels") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(k) = bracket("metadata.annotations") {
                m.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(anyhow!("unsupported fieldRef {path}"));
            }
        }
    };
    Ok(v)
}

/// Kubernetes `$(VAR)` expansion: references to defined variables are replaced, `$$` is a
/// literal `$`, and references to undefined variables stay as written.
pub fn expand(s: &str, vars: &[(String, String)]) -> String {
    let lookup: BTreeMap<&str, &str> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        if let Some(t) = tail.strip_prefix('$') {
            out.push('$');
            rest = t;
        } else if let Some(t) = tail.strip_prefix('(')
            && let Some(end) = t.find(')')
        {
            let name = &t[..end];
            match lookup.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// Expands a command or args list.
pub fn expand_all(list: &[String], vars: &[(String, String)]) -> Vec<String> {
    list.iter().map(|s| expand(s, vars)).collect()
}

/// A process has no mount namespace here, so an absolute path inside one of the container's
/// `volumeMounts` (say `AZURE_FEDERATED_TOKEN_FILE=/var/run/secrets/azure/tokens/token`, as a
/// webhook or the provider sets it) is mapped to the same path under the mount root, where
/// the kubelet materialised that mount. This is the kubelet's stand-in for the container
/// file system: programs read the path they were given, with no code of their own for it.
pub fn in_mount_root(value: &str, mount_paths: &[&str], mount_root: &str) -> String {
    if mount_root.is_empty() {
        return value.to_owned();
    }
    let inside = mount_paths.iter().any(|m| {
        let m = m.trim_end_matches('/');
        !m.is_empty() && (value == m || value.strip_prefix(m).is_some_and(|rest| rest.starts_with('/')))
    });
    if inside {
        format!("{}{value}", mount_root.trim_end_matches('/'))
    } else {
        value.to_owned()
    }
}

/// Context for error messages naming the container.
pub fn in_container<T>(r: Result<T>, c: &Container) -> Result<T> {
    r.with_context(|| format!("container {}", c.name))
}

#[cfg(test)]
mod tests {
    use super::{expand, field, in_mount_root};

    #[test]
    fn paths_inside_mounts_are_mapped_to_the_mount_root() {
        let mounts = ["/var/run/secrets/azure/tokens", "/etc/ca/"];
        // (why, value, expected)
        let cases = [
            (
                "a file in a mount",
                "/var/run/secrets/azure/tokens/azure-identity-token",
                "/pods/p/mounts/c/var/run/secrets/azure/tokens/azure-identity-token",
            ),
            ("the mount itself", "/etc/ca", "/pods/p/mounts/c/etc/ca"),
            (
                "a sibling with the same prefix is not inside",
                "/etc/cafe",
                "/etc/cafe",
            ),
            ("not a path", "https://login.example/", "https://login.example/"),
            ("a path outside every mount", "/usr/bin/env", "/usr/bin/env"),
        ];
        for (why, value, want) in cases {
            assert_eq!(in_mount_root(value, &mounts, "/pods/p/mounts/c/"), want, "{why}");
        }
    }
    use k8s_openapi::api::core::v1::{ObjectFieldSelector, Pod, PodSpec};
    use kube::api::ObjectMeta;

    fn sel(path: &str) -> ObjectFieldSelector {
        ObjectFieldSelector {
            field_path: path.into(),
            api_version: None,
        }
    }

    #[test]
    fn downward_api_fields() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_string(), "tp".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("proc-node".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = |p: &str| field(&pod, &sel(p), "127.1.1.1").unwrap();
        assert_eq!(f("metadata.name"), "p");
        assert_eq!(f("metadata.namespace"), "ns");
        assert_eq!(f("status.podIP"), "127.1.1.1");
        assert_eq!(f("spec.nodeName"), "proc-node");
        assert_eq!(f("metadata.labels['app']"), "tp");
        assert!(field(&pod, &sel("spec.nope"), "").is_err());
    }

    #[test]
    fn expansion() {
        let vars = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
    }
}
