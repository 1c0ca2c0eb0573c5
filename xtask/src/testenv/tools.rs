//! The Go-built tools: kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from
//! `k8s.io/kubernetes`, etcd from `go.etcd.io/etcd/server/v3`, and kubectl-kuttl. Each comes
//! from its own tools module under `testenv/tools/` (separate modules, so their dependency
//! graphs never unify), is built with `CGO_ENABLED=0 -trimpath`, and lands in
//! `<cache>/bin/<tool>-<version>/`. A build is redone only when its tools module (the pin, or a
//! dependency `go mod tidy` moved) changes: the stamp file holds a hash of go.mod and go.sum.
//!
//! The pins are the `require` lines of the tools modules. The k8s module's staging `replace`
//! block is generated from the pinned release's own go.mod (every `k8s.io/<m> v0.0.0`
//! requirement → `k8s.io/<m> v0.<minor>.<patch>`), never edited by hand.

use crate::util::{cache_dir, workspace_root};
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// Where each tool binary lives once built.
pub struct Tools {
    /// Directory with kube-apiserver, kube-controller-manager, kube-scheduler and kubectl.
    pub k8s_bin: PathBuf,
    /// The etcd binary.
    pub etcd: PathBuf,
    /// The kubectl-kuttl binary.
    pub kuttl: PathBuf,
    /// Pinned Kubernetes version (what `kubectl version` must report for the server).
    pub k8s_version: String,
}

impl Tools {
    /// Path of a Kubernetes binary.
    pub fn k8s(&self, name: &str) -> PathBuf {
        self.k8s_bin.join(name)
    }
}

const K8S_MODULE: &str = "k8s.io/kubernetes";
const ETCD_MODULE: &str = "go.etcd.io/etcd/server/v3";
const KUTTL_MODULE: &str = "github.com/kudobuilder/kuttl";

pub(crate) fn tools_dir(name: &str) -> PathBuf {
    workspace_root().join("testenv").join("tools").join(name)
}

/// The version a tools module pins for `module` (its `require` line).
pub(crate) fn pin(gomod: &str, module: &str) -> Result<String> {
    gomod
        .lines()
        .map(|l| l.trim().trim_start_matches("require").trim())
        .find_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some(module))
                .then(|| parts.next().map(str::to_string))
                .flatten()
        })
        .with_context(|| format!("no `require {module} <version>` line"))
}

/// `go` with the project's caches, no cgo, and the installed toolchain only: a module's
/// toolchain line must never make `go` fetch another toolchain behind our back.
pub(crate) fn go(dir: &Path) -> Result<Command> {
    let cache = cache_dir()?;
    let mut cmd = Command::new("go");
    cmd.current_dir(dir)
        .env("GOMODCACHE", cache.join("gomod"))
        .env("GOCACHE", cache.join("gocache"))
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-buildvcs=false");
    Ok(cmd)
}

/// `nice go …`: these builds are long and the machines are shared.
fn nice_go(dir: &Path) -> Result<Command> {
    let plain = go(dir)?;
    let mut cmd = Command::new("nice");
    cmd.args(["-n", "10", "go"]).current_dir(dir);
    for (k, v) in plain.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    Ok(cmd)
}

/// Bound for one tools module's build: the cold k8s build takes about 11 minutes on two shared
/// cores; four times that means something is stuck, not slow.
const BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// Bound for `go mod tidy` (module downloads included).
const TIDY_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Like `util::run` (banner, inherited output, duration), but stops the command after `limit`.
fn run_bounded(step: &str, cmd: &mut Command, limit: Duration) -> Result<()> {
    eprintln!("==> {step}");
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{step}: cannot start {cmd:?} (is Go installed?)"))?;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!(
                    "{step}: {cmd:?} failed ({status}) after {:.0?}",
                    started.elapsed()
                );
            }
            eprintln!("    {step}: ok in {:.1?}", started.elapsed());
            return Ok(());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{step}: stopped after {limit:?} without finishing");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?} (is Go installed?)"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `go mod download -json module@version`, returning (path of its go.mod, release time).
fn download(dir: &Path, module: &str, version: &str) -> Result<(PathBuf, String)> {
    let json = output(go(dir)?.args(["mod", "download", "-json", &format!("{module}@{version}")]))?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    let gomod = v["GoMod"].as_str().context("go mod download: no GoMod")?;
    let info = v["Info"].as_str().context("go mod download: no Info")?;
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(info)?)?;
    let time = info["Time"]
        .as_str()
        .unwrap_or("1970-01-01T00:00:00Z")
        .to_string();
    Ok((PathBuf::from(gomod), time))
}

/// The staging replace block for `k8s.io/kubernetes` at `version`, from that release's go.mod.
fn staging_replaces(release_gomod: &str, version: &str) -> Result<String> {
    let minor_patch = version
        .strip_prefix("v1.")
        .with_context(|| format!("unexpected k8s version {version}"))?;
    let mut block = String::from("replace (\n");
    let mut n = 0;
    for line in release_gomod.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(m), Some("v0.0.0"), None) = (parts.next(), parts.next(), parts.next())
            && m.starts_with("k8s.io/")
        {
            block.push_str(&format!("\t{m} => {m} v0.{minor_patch}\n"));
            n += 1;
        }
    }
    if n == 0 {
        bail!("k8s.io/kubernetes {version}: its go.mod has no v0.0.0 staging requirements");
    }
    block.push(')');
    Ok(block)
}

/// Regenerates the replace block of testenv/tools/k8s/go.mod from the pin; runs `go mod tidy`
/// when it changed. Returns (pin, release time).
fn sync_k8s_module() -> Result<(String, String)> {
    let dir = tools_dir("k8s");
    let path = dir.join("go.mod");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let version = pin(&text, K8S_MODULE)?;
    let (release_gomod, time) = download(&dir, K8S_MODULE, &version)?;
    let block = staging_replaces(&std::fs::read_to_string(release_gomod)?, &version)?;
    let start = text
        .find("replace (")
        .context("testenv/tools/k8s/go.mod: no `replace (` block")?;
    let end = start + text[start..].find("\n)").context("unterminated replace block")? + 2;
    if text[start..end] != block {
        eprintln!("    regenerating the staging replace block for {K8S_MODULE} {version}");
        let new = format!("{}{}{}", &text[..start], block, &text[end..]);
        std::fs::write(&path, new)?;
        run_bounded(
            "go mod tidy (tools/k8s)",
            go(&dir)?.args(["mod", "tidy"]),
            TIDY_TIMEOUT,
        )?;
    }
    Ok((version, time))
}

fn module_hash(dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for f in ["go.mod", "go.sum"] {
        h.update(std::fs::read(dir.join(f)).with_context(|| format!("reading {}/{f}", dir.display()))?);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Builds `packages` of the tools module `name` into `out` unless the stamp says it is current.
pub(crate) fn build(name: &str, out: &Path, ldflags: &str, packages: &[&str], expect: &[&str]) -> Result<()> {
    let dir = tools_dir(name);
    let hash = module_hash(&dir)?;
    let stamp = out.join(".built");
    let current = std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == hash);
    if current && expect.iter().all(|b| out.join(b).is_file()) {
        return Ok(());
    }
    std::fs::create_dir_all(out)?;
    eprintln!(
        "    {name}: building {} into {} (cold: minutes; `go build -v` lists packages as they compile)",
        expect.join(", "),
        out.display()
    );
    let started = Instant::now();
    let mut cmd = nice_go(&dir)?;
    cmd.args([
        "build",
        "-v",
        "-mod=readonly",
        "-trimpath",
        "-ldflags",
        ldflags,
        "-o",
    ]);
    // With several packages `-o` must name a directory (trailing slash); with one, the file.
    if packages.len() == 1 {
        cmd.arg(out.join(expect[0]));
    } else {
        cmd.arg(format!("{}/", out.display()));
    }
    cmd.args(packages);
    run_bounded(&format!("go build ({name})"), &mut cmd, BUILD_TIMEOUT)?;
    for b in expect {
        if !out.join(b).is_file() {
            bail!(
                "go build ({name}) finished but {} is missing",
                out.join(b).display()
            );
        }
    }
    std::fs::write(&stamp, &hash)?;
    eprintln!("    {name}: built in {:.0?}", started.elapsed());
    Ok(())
}

/// Builds what is missing or stale and returns the paths. Cheap when everything is cached
/// (one `go mod download -json` that the module cache answers).
pub fn ensure() -> Result<Tools> {
    let bin = cache_dir()?.join("bin");
    let (k8s_version, release_time) = sync_k8s_module()?;
    let (major, minor) = {
        let mut it = k8s_version.trim_start_matches('v').split('.');
        (
            it.next().unwrap_or("1").to_string(),
            it.next().unwrap_or("0").to_string(),
        )
    };
    // hack/lib/version.sh stamps both packages; clients read one, servers the other.
    let mut ld = String::from("-s -w");
    for pkg in ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"] {
        for (k, v) in [
            ("gitVersion", k8s_version.as_str()),
            ("gitMajor", major.as_str()),
            ("gitMinor", minor.as_str()),
            ("gitTreeState", "clean"),
            ("buildDate", release_time.as_str()),
        ] {
            ld.push_str(&format!(" -X {pkg}.{k}={v}"));
        }
    }
    let k8s_bin = bin.join(format!("k8s-{k8s_version}"));
    let k8s_cmds = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
    ];
    let pkgs: Vec<String> = k8s_cmds.iter().map(|c| format!("{K8S_MODULE}/cmd/{c}")).collect();
    let pkgs: Vec<&str> = pkgs.iter().map(String::as_str).collect();
    build("k8s", &k8s_bin, &ld, &pkgs, &k8s_cmds)?;

    let etcd_version = pin(
        &std::fs::read_to_string(tools_dir("etcd").join("go.mod"))?,
        ETCD_MODULE,
    )?;
    let etcd_dir = bin.join(format!("etcd-{etcd_version}"));
    build("etcd", &etcd_dir, "-s -w", &[ETCD_MODULE], &["etcd"])?;

    let kuttl_version = pin(
        &std::fs::read_to_string(tools_dir("kuttl").join("go.mod"))?,
        KUTTL_MODULE,
    )?;
    let kuttl_dir = bin.join(format!("kuttl-{kuttl_version}"));
    build(
        "kuttl",
        &kuttl_dir,
        "-s -w",
        &[&format!("{KUTTL_MODULE}/cmd/kubectl-kuttl")],
        &["kubectl-kuttl"],
    )?;

    Ok(Tools {
        k8s_bin,
        etcd: etcd_dir.join("etcd"),
        kuttl: kuttl_dir.join("kubectl-kuttl"),
        k8s_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_block_from_release_gomod() {
        let gomod = "module k8s.io/kubernetes\n\nrequire (\n\tgithub.com/x/y v1.2.3\n\tk8s.io/api v0.0.0\n\tk8s.io/utils v0.0.0-2025\n\tk8s.io/client-go v0.0.0\n)\n";
        let block = staging_replaces(gomod, "v1.36.3").unwrap();
        assert_eq!(
            block,
            "replace (\n\tk8s.io/api => k8s.io/api v0.36.3\n\tk8s.io/client-go => k8s.io/client-go v0.36.3\n)"
        );
    }

    #[test]
    fn pins() {
        let gomod = "module m\n\nrequire k8s.io/kubernetes v1.36.3\n\nrequire (\n\tgo.etcd.io/etcd/server/v3 v3.6.16\n)\n";
        assert_eq!(pin(gomod, K8S_MODULE).unwrap(), "v1.36.3");
        assert_eq!(pin(gomod, ETCD_MODULE).unwrap(), "v3.6.16");
    }
}
