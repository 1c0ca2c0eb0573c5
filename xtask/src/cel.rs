//! The CEL suite (`kuttl-tests/cel`): proves against a real apiserver that every CEL rule of
//! the CRDs refuses bad input at `kubectl apply` with its message, that valid objects and
//! every manifest in `examples/` are accepted, and that the install manifests and the Helm
//! chart in `deploy/` are accepted. It needs only a control plane (no provider).
//!
//! [`cel`] assumes a running local environment (`cargo xtask testenv up`): it reads
//! `<dir>/kubeconfig` and `<dir>/state.json` (`dir` = `$TESTENV_DIR`, else `<repo>/.testenv`),
//! and runs the cached `kubectl` of the Kubernetes version that environment runs and the
//! cached `kubectl-kuttl` pinned by `testenv/tools/kuttl/go.mod` — both built by `testenv up`.
//! Helm (for rendering the chart) is built into the tool cache on first use, like the other
//! Go tools.

use crate::util::{cache_dir, workspace_root};
use anyhow::{Context, Result, bail};
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Longest the suite may run before it is stopped (it takes well under a minute).
const SUITE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Longest a first-time Helm build may take.
const HELM_BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Helm release used to render the chart (a Go module, built with the installed toolchain).
const HELM_VERSION: &str = "v3.22.0";

/// Runs the CEL suite against the environment that `cargo xtask testenv up` started.
pub fn cel() -> Result<()> {
    let root = workspace_root();
    let dir = match std::env::var_os("TESTENV_DIR") {
        Some(d) => std::path::absolute(PathBuf::from(d))?,
        None => root.join(".testenv"),
    };
    let kubeconfig = dir.join("kubeconfig");
    if !kubeconfig.is_file() {
        bail!(
            "no test environment in {} (missing kubeconfig): run `cargo xtask testenv up` first",
            dir.display()
        );
    }
    let kubectl_dir = kubectl_dir(&dir)?;
    let kuttl = kuttl_binary(&root)?;
    let helm = helm_binary()?;
    let path = std::env::join_paths(
        [
            kubectl_dir,
            helm.parent().map(Path::to_path_buf).unwrap_or_default(),
        ]
        .into_iter()
        .chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )),
    )?;
    let suite = root.join("kuttl-tests").join("cel");
    let artifacts = dir.join("kuttl-cel");
    std::fs::create_dir_all(&artifacts)?;
    let mut cmd = Command::new(&kuttl);
    cmd.current_dir(&suite)
        .args(["test", "--config", "kuttl-test.yaml", "--artifacts-dir"])
        .arg(&artifacts)
        .env("KUBECONFIG", &kubeconfig)
        .env("PATH", path)
        .stdin(Stdio::null());
    eprintln!("==> kuttl CEL suite ({})", suite.display());
    let began = Instant::now();
    let status = wait_bounded(cmd.spawn().context("starting kubectl-kuttl")?, SUITE_TIMEOUT)
        .context("kuttl CEL suite")?;
    if !status.success() {
        bail!("kuttl CEL suite failed ({status}) after {:.0?}", began.elapsed());
    }
    eprintln!("    kuttl CEL suite: ok in {:.1?}", began.elapsed());
    Ok(())
}

/// The cached Kubernetes binaries of the version the running environment uses (recorded by
/// `testenv up` in `state.json`), so kubectl always matches the apiserver.
fn kubectl_dir(env_dir: &Path) -> Result<PathBuf> {
    let state = std::fs::read_to_string(env_dir.join("state.json"))
        .with_context(|| format!("reading {}/state.json: is the environment up?", env_dir.display()))?;
    let state: serde_json::Value = serde_json::from_str(&state)?;
    let version = state["k8s_version"]
        .as_str()
        .context("state.json has no k8s_version")?;
    let bin = cache_dir()?.join("bin").join(format!("k8s-{version}"));
    if !bin.join("kubectl").is_file() {
        bail!(
            "{} is missing: run `cargo xtask testenv tools`",
            bin.join("kubectl").display()
        );
    }
    Ok(bin)
}

/// The cached kubectl-kuttl of the version `testenv/tools/kuttl/go.mod` pins.
fn kuttl_binary(root: &Path) -> Result<PathBuf> {
    let gomod = std::fs::read_to_string(root.join("testenv/tools/kuttl/go.mod"))
        .context("reading testenv/tools/kuttl/go.mod")?;
    let version = gomod
        .lines()
        .map(|l| l.trim().trim_start_matches("require").trim())
        .find_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some("github.com/kudobuilder/kuttl"))
                .then(|| parts.next().map(str::to_owned))
                .flatten()
        })
        .context("testenv/tools/kuttl/go.mod pins no github.com/kudobuilder/kuttl")?;
    let kuttl = cache_dir()?
        .join("bin")
        .join(format!("kuttl-{version}"))
        .join("kubectl-kuttl");
    if !kuttl.is_file() {
        bail!("{} is missing: run `cargo xtask testenv tools`", kuttl.display());
    }
    Ok(kuttl)
}

/// Helm, built once into `<cache>/bin/helm-<version>/` with the installed Go toolchain and
/// the project's module cache.
pub(crate) fn helm_binary() -> Result<PathBuf> {
    let cache = cache_dir()?;
    let dir = cache.join("bin").join(format!("helm-{HELM_VERSION}"));
    let helm = dir.join("helm");
    if helm.is_file() {
        return Ok(helm);
    }
    eprintln!(
        "    helm {HELM_VERSION} is not cached yet: building it into {} (a few minutes, once)",
        dir.display()
    );
    std::fs::create_dir_all(&dir)?;
    let mut cmd = Command::new("nice");
    cmd.args(["-n", "10", "go", "install", "-trimpath", "-ldflags=-s -w"])
        .arg(format!("helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"))
        .current_dir(&dir)
        .env("GOBIN", &dir)
        .env("GOMODCACHE", cache.join("gomod"))
        .env("GOCACHE", cache.join("gocache"))
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-buildvcs=false")
        .stdin(Stdio::null());
    let status =
        wait_bounded(cmd.spawn().context("starting go")?, HELM_BUILD_TIMEOUT).context("building helm")?;
    if !status.success() || !helm.is_file() {
        bail!("building helm {HELM_VERSION} failed ({status})");
    }
    Ok(helm)
}

/// Waits for `child`, killing it once `limit` has passed.
fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let began = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if began.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
