//! Local test environment: a real control plane built from Go modules and a process kubelet.
//!
//! `cargo xtask testenv up` builds what is missing (Go tools into the cache, the kubelet and
//! the test program with cargo), makes certificates, starts etcd → kube-apiserver →
//! kube-controller-manager + kube-scheduler → the process kubelet on loopback, waits for each,
//! and writes `<dir>/kubeconfig`. `down` stops exactly the PIDs `up` recorded; `status` shows
//! each component and fails if one is dead. Layout of `<dir>` (default `.testenv/`):
//!
//! ```text
//! kubeconfig            admin (system:masters) kubeconfig
//! images.yaml           image → executable map of the kubelet (written by `up`)
//! images.d/*.yaml       more image maps (suites drop theirs here; read on each container start)
//! state.json            ports and the PIDs `up` started
//! logs/<component>.log  etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet
//! logs/pods/<ns>_<pod>_<container>.log   container stdout+stderr
//! pki/  etcd/  kubelet/ certificates, etcd data, per-pod directories
//! ```

mod certs;
pub(crate) mod cluster;
pub(crate) mod tools;

use crate::util::workspace_root;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Where the environment lives: `--dir`, else `$TESTENV_DIR`, else `<repo>/.testenv`.
#[derive(clap::Args, Clone)]
pub struct DirArg {
    /// Directory of the environment (state, logs, kubeconfig).
    #[arg(long, env = "TESTENV_DIR")]
    dir: Option<PathBuf>,
}

impl DirArg {
    fn resolve(&self) -> Result<PathBuf> {
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| workspace_root().join(".testenv"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(std::path::absolute(dir)?)
    }
}

/// `cargo xtask testenv …`
#[derive(Subcommand)]
pub enum Action {
    /// Build (once) and start etcd, apiserver, controller-manager, scheduler and the kubelet.
    Up(DirArg),
    /// Stop exactly the processes `up` started.
    Down(DirArg),
    /// Show each component and flag a dead one (exit code 1 if any is dead).
    Status(DirArg),
    /// Build the Go tools (once) and print where they are.
    Tools,
    /// Up, run the kuttl smoke suite (kuttl-tests/testenv), down (what `cargo xtask test` runs).
    Smoke,
}

/// Entry point of `cargo xtask testenv`.
pub fn run(action: Action) -> Result<()> {
    match action {
        Action::Up(d) => cluster::up(&d.resolve()?).map(drop),
        Action::Down(d) => cluster::down(&d.resolve()?),
        Action::Status(d) => cluster::status(&d.resolve()?),
        Action::Smoke => smoke(),
        Action::Tools => {
            let t = tools::ensure()?;
            println!("kubernetes {}: {}", t.k8s_version, t.k8s_bin.display());
            println!("etcd: {}", t.etcd.display());
            println!("kubectl-kuttl: {}", t.kuttl.display());
            Ok(())
        }
    }
}

/// Longest the smoke suite may run before it is stopped.
const SUITE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Brings the environment up (in `.testenv/smoke-<pid>`: a developer's own `.testenv`, and a
/// second run sharing the work tree, stay untouched), runs the kuttl smoke suite and tears it
/// down, even on failure. The directory is removed after a pass and kept (logs) after a failure.
pub fn smoke() -> Result<()> {
    let dir = workspace_root()
        .join(".testenv")
        .join(format!("smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let result = cluster::up(&dir).and_then(|env| {
        eprintln!("    environment up in {:.0?}", started.elapsed());
        run_suite(&env, &dir)
    });
    let down = cluster::down(&dir);
    if result.is_err() {
        eprintln!("    logs kept in {}/logs", dir.display());
    }
    result?;
    down?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}

fn run_suite(env: &cluster::Env, dir: &std::path::Path) -> Result<()> {
    let suite = workspace_root().join("kuttl-tests").join("testenv");
    let path = format!(
        "{}:{}:{}:{}",
        env.tools.k8s_bin.display(),
        env.tools
            .kuttl
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        cluster::target_dir().join("debug").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(&env.tools.kuttl);
    cmd.current_dir(&suite)
        .args(["test", "--config", "kuttl-test.yaml", "--artifacts-dir"])
        .arg(dir.join("kuttl"))
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("TESTENV_DIR", dir)
        .env("PATH", path)
        .stdin(Stdio::null());
    std::fs::create_dir_all(dir.join("kuttl"))?;
    eprintln!("==> kuttl smoke suite ({})", suite.display());
    let began = Instant::now();
    let mut child = cmd.spawn().context("starting kubectl-kuttl")?;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!(
                    "kuttl smoke suite failed ({status}) after {:.0?}",
                    began.elapsed()
                );
            }
            eprintln!("    kuttl smoke suite: ok in {:.1?}", began.elapsed());
            return Ok(());
        }
        if began.elapsed() > SUITE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("kuttl smoke suite did not finish within {SUITE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
