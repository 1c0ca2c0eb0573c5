//! Volumes without mount namespaces: each volume is materialised under
//! `<pod dir>/volumes/<name>/`, and each container gets a mount root
//! `<pod dir>/mounts/<container>/` in which every `mountPath` is a symlink to its volume (or
//! `subPath` within it). The process learns the root from `TESTENV_MOUNT_ROOT`: a program that
//! reads `/var/run/secrets/tokens/token` in a real pod reads
//! `$TESTENV_MOUNT_ROOT/var/run/secrets/tokens/token` here.
//!
//! ServiceAccount tokens come from TokenRequest (audience, expiry, bound to the pod) and are
//! rewritten at 80 % of their lifetime, as the kubelet does.

use crate::{Ctx, env};
use anyhow::{Context, Result, bail};
use k8s_openapi::{
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, ServiceAccount, Volume},
    },
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// A token file the pod worker keeps fresh.
pub struct TokenFile {
    path: PathBuf,
    audiences: Vec<String>,
    expiry: i64,
    refresh_at: Instant,
}

/// Materialised volumes of one pod.
pub struct PodVolumes {
    /// Tokens to refresh.
    pub tokens: Vec<TokenFile>,
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, data)?;
    // Readers (a token-file client) must never see a half-written token.
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn items(dir: &Path, data: Vec<(String, Vec<u8>)>, items: Option<&Vec<KeyToPath>>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    match items {
        Some(items) => {
            for it in items {
                if let Some((_, v)) = data.iter().find(|(k, _)| *k == it.key) {
                    write_atomic(&dir.join(&it.path), v)?;
                } else {
                    bail!("key {:?} not found", it.key);
                }
            }
        }
        None => {
            for (k, v) in data {
                write_atomic(&dir.join(k), &v)?;
            }
        }
    }
    Ok(())
}

async fn secret_data(ctx: &Ctx, ns: &str, name: &str, optional: bool) -> Result<Vec<(String, Vec<u8>)>> {
    match Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await?
    {
        Some(s) => {
            let mut out: Vec<(String, Vec<u8>)> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            out.extend(
                s.string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes())),
            );
            Ok(out)
        }
        None if optional => Ok(Vec::new()),
        None => bail!("secret {name:?} not found"),
    }
}

async fn configmap_data(ctx: &Ctx, ns: &str, name: &str, optional: bool) -> Result<Vec<(String, Vec<u8>)>> {
    match Api::<ConfigMap>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await?
    {
        Some(cm) => {
            let mut out: Vec<(String, Vec<u8>)> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            out.extend(
                cm.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            Ok(out)
        }
        None if optional => Ok(Vec::new()),
        None => bail!("configmap {name:?} not found"),
    }
}

impl TokenFile {
    /// Mints a token for the pod's ServiceAccount and writes it.
    async fn refresh(&mut self, ctx: &Ctx, pod: &Pod) -> Result<()> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let sa_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: self.audiences.clone(),
                expiration_seconds: Some(self.expiry),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..Default::default()
        };
        let sas: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ns);
        let out: TokenRequest = sas
            .create_subresource("token", &sa_name, &PostParams::default(), &req)
            .await
            .with_context(|| format!("TokenRequest for serviceaccount {ns}/{sa_name}"))?;
        let status = out.status.context("TokenRequest returned no status")?;
        write_atomic(&self.path, status.token.as_bytes())?;
        let lifetime = status.expiration_timestamp.0.duration_since(Timestamp::now());
        let secs = lifetime.as_secs().max(10) as u64;
        self.refresh_at = Instant::now() + Duration::from_secs(secs * 4 / 5);
        Ok(())
    }
}

impl PodVolumes {
    /// Materialises every volume of `pod` under `pod_dir` and writes the pod's kubeconfig when
    /// `kubeconfig` is set.
    pub async fn create(
        ctx: &Ctx,
        pod: &Pod,
        ip: &str,
        pod_dir: &Path,
        kubeconfig: Option<&Path>,
    ) -> Result<Self> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut tokens = Vec::new();
        let spec = pod.spec.as_ref().context("pod has no spec")?;
        let vroot = pod_dir.join("volumes");
        for v in spec.volumes.iter().flatten() {
            let dir = vroot.join(&v.name);
            std::fs::create_dir_all(&dir)?;
            materialise(ctx, pod, ip, &ns, v, &dir, &mut tokens)
                .await
                .with_context(|| format!("volume {}", v.name))?;
        }
        if let Some(kc) = kubeconfig {
            // The pod's own identity for `KUBECONFIG`: default audience, bound to the pod.
            let token = pod_dir.join("kubeconfig-token");
            let mut t = TokenFile {
                path: token.clone(),
                audiences: Vec::new(),
                expiry: 3600,
                refresh_at: Instant::now(),
            };
            t.refresh(ctx, pod).await?;
            tokens.push(t);
            let ca = pod_dir.join("ca.crt");
            std::fs::copy(&ctx.ca_file, &ca).with_context(|| format!("copying {}", ctx.ca_file.display()))?;
            let text = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: pod\n  user:\n    tokenFile: {token}\ncontexts:\n- name: pod\n  context:\n    cluster: testenv\n    user: pod\n    namespace: {ns}\ncurrent-context: pod\n",
                server = ctx.server,
                ca = ca.display(),
                token = token.display(),
            );
            write_atomic(kc, text.as_bytes())?;
        }
        Ok(Self { tokens })
    }

    /// Rewrites the tokens that reached 80 % of their lifetime.
    pub async fn refresh_due(&mut self, ctx: &Ctx, pod: &Pod) {
        for t in &mut self.tokens {
            if Instant::now() >= t.refresh_at
                && let Err(e) = t.refresh(ctx, pod).await
            {
                tracing::warn!(error = %format!("{e:#}"), path = %t.path.display(), "token refresh failed");
                t.refresh_at = Instant::now() + Duration::from_secs(10);
            }
        }
    }
}

async fn materialise(
    ctx: &Ctx,
    pod: &Pod,
    ip: &str,
    ns: &str,
    v: &Volume,
    dir: &Path,
    tokens: &mut Vec<TokenFile>,
) -> Result<()> {
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = secret_data(ctx, ns, &name, s.optional == Some(true)).await?;
        return items(dir, data, s.items.as_ref());
    }
    if let Some(c) = &v.config_map {
        let data = configmap_data(ctx, ns, &c.name, c.optional == Some(true)).await?;
        return items(dir, data, c.items.as_ref());
    }
    if v.empty_dir.is_some() {
        return Ok(());
    }
    if let Some(h) = &v.host_path {
        // Real semantics: the host's path. Replace the empty dir with a link to it.
        std::fs::remove_dir(dir)?;
        std::os::unix::fs::symlink(&h.path, dir)?;
        return Ok(());
    }
    if let Some(d) = &v.downward_api {
        for it in d.items.iter().flatten() {
            if let Some(f) = &it.field_ref {
                write_atomic(&dir.join(&it.path), env::field(pod, f, ip)?.as_bytes())?;
            }
        }
        return Ok(());
    }
    if let Some(p) = &v.projected {
        for src in p.sources.iter().flatten() {
            if let Some(t) = &src.service_account_token {
                let mut tf = TokenFile {
                    path: dir.join(&t.path),
                    audiences: t.audience.clone().into_iter().collect(),
                    expiry: t.expiration_seconds.unwrap_or(3600),
                    refresh_at: Instant::now(),
                };
                tf.refresh(ctx, pod).await?;
                tokens.push(tf);
            }
            if let Some(s) = &src.secret {
                let data = secret_data(ctx, ns, &s.name, s.optional == Some(true)).await?;
                items(dir, data, s.items.as_ref())?;
            }
            if let Some(c) = &src.config_map {
                let data = configmap_data(ctx, ns, &c.name, c.optional == Some(true)).await?;
                items(dir, data, c.items.as_ref())?;
            }
            if let Some(d) = &src.downward_api {
                for it in d.items.iter().flatten() {
                    if let Some(f) = &it.field_ref {
                        write_atomic(&dir.join(&it.path), env::field(pod, f, ip)?.as_bytes())?;
                    }
                }
            }
        }
        return Ok(());
    }
    tracing::warn!(volume = %v.name, "unsupported volume type: left as an empty directory");
    Ok(())
}

/// Creates `<pod dir>/mounts/<container>/<mountPath>` symlinks for the container's mounts and
/// returns that root.
pub fn mount_root(pod_dir: &Path, c: &Container) -> Result<PathBuf> {
    let root = pod_dir.join("mounts").join(&c.name);
    std::fs::create_dir_all(&root)?;
    for m in c.volume_mounts.iter().flatten() {
        let rel = m.mount_path.trim_start_matches('/');
        if rel.is_empty() {
            bail!("volume mount at / is not supported");
        }
        let link = root.join(rel);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut target = pod_dir.join("volumes").join(&m.name);
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            target = target.join(sub);
        }
        if std::fs::symlink_metadata(&link).is_ok() {
            std::fs::remove_file(&link).ok();
        }
        std::os::unix::fs::symlink(&target, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(root)
}
