//! `cargo xtask e2e`: the provider end to end, as a user would run it.
//!
//! ```text
//! cargo build (provider, worker, emulator) ─▶ testenv up ─▶ emulator (host process, loopback)
//!   ─▶ images.d/provider.yaml (image → binary) ─▶ kubectl apply deploy/install (CRDs, RBAC, provider)
//!   ─▶ admin Secret + ClusterProviderConfig "default" ─▶ provider and worker Ready
//!   ─▶ kuttl-tests/e2e ─▶ down (always)
//! ```
//! [`Session`] is shared with `cargo xtask demo`, which stops before the suite and leaves the
//! environment running.

use crate::{
    testenv::cluster,
    util::{self, workspace_root},
};
use anyhow::{Context, Result, bail};
use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Image of the provider in deploy/install; mapped to target/debug/provider-sqlserver.
pub const PROVIDER_IMAGE: &str = "provider-sqlserver:dev";
/// Image of workers; mapped to target/debug/worker.
pub const WORKER_IMAGE: &str = "provider-sqlserver-worker:dev";
/// Namespace the install manifests use.
pub const PROVIDER_NAMESPACE: &str = "crossplane-system";
/// Longest the e2e suite may run.
const SUITE_TIMEOUT: Duration = Duration::from_secs(25 * 60);

/// A running environment with the emulator and the provider installed.
pub struct Session {
    /// Environment directory (`.testenv/<name>`).
    pub dir: PathBuf,
    /// Tools and binaries of the environment.
    pub env: cluster::Env,
    /// The emulator process.
    emulator: Child,
    /// Emulator TDS port.
    pub sql_port: u16,
    /// Emulator admin port.
    pub admin_port: u16,
    /// sa password of this run (generated; never committed).
    pub sa_password: String,
    /// HS256 key the emulator checks Entra access tokens with (generated per run; the fake
    /// Entra endpoint signs with it).
    pub fedauth_key: String,
}

impl Session {
    /// A kubectl command on this environment.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.env.tools.k8s("kubectl"));
        cmd.env("KUBECONFIG", self.dir.join("kubeconfig"))
            .current_dir(workspace_root());
        cmd
    }

    /// Stops the emulator (SIGINT, so it saves its catalog) and waits until it is gone:
    /// SQL Server is unreachable (connections refused) until [`Session::start_emulator`].
    pub fn stop_emulator(&mut self) -> Result<()> {
        if self.emulator.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = Command::new("kill")
            .args(["-s", "INT", "--", &self.emulator.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.emulator.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.emulator.kill()?;
                self.emulator.wait()?;
                bail!("the emulator did not stop within 20 s of SIGINT (its catalog is lost)");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Starts the emulator again after [`Session::stop_emulator`]: same ports, same password,
    /// the catalog it saved. Its counters start at zero.
    pub fn start_emulator(&mut self) -> Result<()> {
        let (child, tds, admin) = start_emulator(
            &self.dir,
            &self.sa_password,
            &self.fedauth_key,
            Some((self.sql_port, self.admin_port)),
        )?;
        self.emulator = child;
        if (tds, admin) != (self.sql_port, self.admin_port) {
            bail!(
                "the emulator came back on {tds}/{admin}, not {}/{}",
                self.sql_port,
                self.admin_port
            );
        }
        Ok(())
    }

    /// Stops the emulator and the environment.
    pub fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--", &self.emulator.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.emulator.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.emulator.try_wait()?.is_none() {
            self.emulator.kill()?;
            self.emulator.wait()?;
        }
        let _ = std::fs::remove_file(self.dir.join("emulator.pid"));
        cluster::down(&self.dir)
    }
}

/// A password the emulator's policy accepts, different every run.
fn run_password() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("E2e!{:x}{}Aa9", nanos, std::process::id())
}

/// Where the emulator writes its catalog when stopped with SIGINT (read back on a restart).
fn emulator_state(dir: &Path) -> PathBuf {
    dir.join("emulator-state.json")
}

/// Starts the emulator on loopback; reads its ports from its first line. `ports` `None`: a
/// fresh catalog on ephemeral ports; `Some((tds, admin))`: the same ports again, with the
/// catalog it saved when it was stopped ([`Session::stop_emulator`]). `fedauth_key` verifies
/// the Entra tokens of the identity suite's fake token endpoint.
fn start_emulator(
    dir: &Path,
    password: &str,
    fedauth_key: &str,
    ports: Option<(u16, u16)>,
) -> Result<(Child, u16, u16)> {
    let bin = cluster::target_dir().join("debug").join("mssql-emulator");
    let state = emulator_state(dir);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(ports.is_some())
        .write(true)
        .truncate(ports.is_none())
        .open(dir.join("logs").join("emulator.log"))?;
    stop_recorded_emulator(dir);
    if ports.is_none() {
        // A catalog left by an earlier run in this directory is not this run's.
        let _ = std::fs::remove_file(&state);
    }
    let (tds, admin) = ports.unwrap_or((0, 0));
    let mut child = Command::new(&bin)
        .args([
            "--listen",
            &format!("127.0.0.1:{tds}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--sa-password",
            password,
            "--state",
        ])
        .arg(&state)
        .env("MSSQL_EMULATOR_FEDAUTH_KEY", fedauth_key)
        .env("MSSQL_EMULATOR_ENTRA_DIRECTORY", crate::identity::ENTRA_DIRECTORY)
        .stdout(Stdio::piped())
        .stderr(log)
        // Its own process group: `cargo xtask demo` leaves it running after the terminal's
        // Ctrl-C; it is stopped by the PID recorded below.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    std::fs::write(dir.join("emulator.pid"), child.id().to_string())?;
    let stdout = child.stdout.take().context("emulator stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            bail!(
                "the emulator did not report its addresses within 30 s (see {}/logs/emulator.log)",
                dir.display()
            );
        }
    };
    let addresses: serde_json::Value = serde_json::from_str(line.trim()).context("emulator address line")?;
    let port = |key: &str| -> Result<u16> {
        addresses[key]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("no {key} address in {line:?}"))
    };
    Ok((child, port("tds")?, port("admin")?))
}

/// Stops the emulator a previous run in `dir` recorded, if that PID still runs the emulator
/// (a recycled PID that belongs to another program is never signalled).
pub fn stop_recorded_emulator(dir: &Path) {
    let Some(pid) = std::fs::read_to_string(dir.join("emulator.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return;
    };
    let is_emulator = || {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            String::from_utf8_lossy(&c)
                .split('\0')
                .next()
                .is_some_and(|a| a.ends_with("mssql-emulator"))
        })
    };
    if is_emulator() {
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_emulator() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if is_emulator() {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &pid.to_string()])
                .status();
        }
    }
    let _ = std::fs::remove_file(dir.join("emulator.pid"));
}

/// Polls `check` until it holds or `timeout` passes, printing progress every 10 s.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let started = Instant::now();
    let mut next_report = Duration::from_secs(10);
    while !check() {
        if started.elapsed() > timeout {
            bail!("{what}: not ready after {timeout:?}");
        }
        if started.elapsed() > next_report {
            eprintln!("    still waiting for {what} ({:.0?})", started.elapsed());
            next_report += Duration::from_secs(10);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("    {what}: ready in {:.1?}", started.elapsed());
    Ok(())
}

/// Output of a kubectl command (empty on failure).
pub fn jsonpath(session: &Session, args: &[&str]) -> String {
    session
        .kubectl()
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Builds what runs as pods, brings the environment up and starts the emulator.
pub fn start_env(name: &str) -> Result<Session> {
    util::build_bins()?;
    let dir = workspace_root().join(".testenv").join(name);
    std::fs::create_dir_all(&dir)?;
    let env = cluster::up(&dir)?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let password = run_password();
    let fedauth_key = format!("fedauth-{}", run_password());
    let (emulator, sql_port, admin_port) = match start_emulator(&dir, &password, &fedauth_key, None) {
        Ok(started) => started,
        Err(e) => {
            cluster::down(&dir)?;
            return Err(e);
        }
    };
    Ok(Session {
        dir,
        env,
        emulator,
        sql_port,
        admin_port,
        sa_password: password,
        fedauth_key,
    })
}

/// [`start_env`], then the provider and the default ClusterProviderConfig, ready.
pub fn start(name: &str) -> Result<Session> {
    let session = start_env(name)?;
    match install(&session) {
        Ok(()) => Ok(session),
        Err(e) => {
            eprintln!("    logs kept in {}/logs", session.dir.display());
            let _ = session.stop();
            Err(e)
        }
    }
}

/// Installs the provider from deploy/install and points ClusterProviderConfig `default` at
/// the emulator; waits until the provider and its worker are ready.
pub fn install(session: &Session) -> Result<()> {
    let debug = cluster::target_dir().join("debug");
    std::fs::create_dir_all(session.dir.join("images.d"))?;
    std::fs::write(
        session.dir.join("images.d").join("provider.yaml"),
        format!(
            "images:\n  {PROVIDER_IMAGE}: {}\n  {WORKER_IMAGE}: {}\n",
            debug.join("provider-sqlserver").display(),
            debug.join("worker").display()
        ),
    )?;
    util::run(
        "install CRDs and the provider (deploy/install)",
        session
            .kubectl()
            .args(["apply", "--server-side", "-k", "deploy/install"]),
    )?;
    util::run(
        "admin Secret for the emulator",
        session.kubectl().args([
            "-n",
            PROVIDER_NAMESPACE,
            "create",
            "secret",
            "generic",
            "sqlserver-admin",
            "--from-literal=username=sa",
            &format!("--from-literal=password={}", session.sa_password),
        ]),
    )?;
    let config = format!(
        r#"apiVersion: sqlserver.kubesql.io/v1alpha1
kind: ClusterProviderConfig
metadata:
  name: default
spec:
  endpoint: {{host: 127.0.0.1, port: {}}}
  credentials:
    source: Secret
    secretRef: {{name: sqlserver-admin, namespace: {PROVIDER_NAMESPACE}}}
  # The emulator's certificate is self-signed for this run; the config says so explicitly
  # (and gets an Insecure warning condition for it).
  tls: {{mode: Required, trustServerCertificate: true}}
  worker: {{pollInterval: 5s}}
"#,
        session.sql_port
    );
    let file = session.dir.join("cluster-provider-config.yaml");
    std::fs::write(&file, config)?;
    wait_for("provider Deployment available", Duration::from_secs(180), || {
        jsonpath(
            session,
            &[
                "-n",
                PROVIDER_NAMESPACE,
                "get",
                "deployment",
                "provider-sqlserver",
                "-o",
                "jsonpath={.status.availableReplicas}",
            ],
        ) == "1"
    })?;
    // The provider installs the WorkItem CRD and gates controllers on CRDs: apply the config
    // once the ProviderConfig kinds are served.
    util::run(
        "ClusterProviderConfig default",
        session.kubectl().arg("apply").arg("-f").arg(&file),
    )?;
    wait_for(
        "worker of ClusterProviderConfig default",
        Duration::from_secs(180),
        || {
            jsonpath(
                session,
                &[
                    "get",
                    "clusterproviderconfig",
                    "default",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"WorkerReady\")].status}",
                ],
            ) == "True"
        },
    )
}

/// PATH and SQL_TEST_* for suites that look at the server (kuttl-tests/e2e/bin/sqlcheck).
pub fn suite_env(session: &Session, cmd: &mut Command) -> Result<()> {
    let python = crate::emulator::ensure_pytds()?;
    let venv_bin = python.parent().context("python-tds venv")?.to_path_buf();
    let path = [
        session.env.tools.k8s_bin.clone(),
        session
            .env
            .tools
            .kuttl
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        workspace_root().join("kuttl-tests").join("e2e").join("bin"),
        venv_bin,
        // testprog, for the testenv smoke suite.
        cluster::target_dir().join("debug"),
        // helm, for the CEL suite's check that the chart renders and applies.
        crate::cel::helm_binary()?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    ]
    .iter()
    .map(|p| p.display().to_string())
    .chain(std::env::var("PATH").ok())
    .collect::<Vec<_>>()
    .join(":");
    cmd.env("PATH", path)
        .env("KUBECONFIG", session.dir.join("kubeconfig"))
        // kuttl replaces KUBECONFIG with its own copy: the environment's directory (pod
        // directories with each pod's kubeconfig, logs) is named here.
        .env("TESTENV_DIR", &session.dir)
        .env("SQL_TEST_HOST", "127.0.0.1")
        .env("SQL_TEST_PORT", session.sql_port.to_string())
        .env("SQL_TEST_USER", "sa")
        .env("SQL_TEST_PASSWORD", &session.sa_password)
        .env(
            "SQL_TEST_ADMIN",
            format!("http://127.0.0.1:{}", session.admin_port),
        );
    Ok(())
}

/// Runs the kuttl suite in `kuttl-tests/<suite>` against a session.
pub fn run_suite(session: &Session, suite: &str) -> Result<()> {
    run_suite_with(session, suite, &[])
}

/// [`run_suite`] with more environment variables for the suite's scripts.
pub fn run_suite_with(session: &Session, suite: &str, extra_env: &[(&str, String)]) -> Result<()> {
    let dir = workspace_root().join("kuttl-tests").join(suite);
    let mut cmd = Command::new(&session.env.tools.kuttl);
    cmd.args(["test", "--config", "kuttl-test.yaml"])
        .current_dir(&dir);
    suite_env(session, &mut cmd)?;
    cmd.envs(extra_env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.spawn().context("starting kubectl-kuttl")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!(
                    "kuttl suite {suite} failed ({status}); logs in {}/logs",
                    session.dir.display()
                );
            }
            return Ok(());
        }
        if started.elapsed() > SUITE_TIMEOUT {
            child.kill()?;
            child.wait()?;
            bail!("kuttl suite {suite} did not finish within {SUITE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every kuttl suite on one environment (what `cargo xtask test` runs): the environment's own
/// smoke suite and the CEL suite first (they need no provider), then the provider is
/// installed and the e2e suite runs. Stops everything, even on failure; logs are kept after
/// a failure.
pub fn all_suites() -> Result<()> {
    let started = Instant::now();
    let session = start_env(&format!("test-{}", std::process::id()))?;
    eprintln!("    environment and emulator up in {:.0?}", started.elapsed());
    let mut recorder = None;
    let suites = (|| -> Result<()> {
        run_suite(&session, "testenv")?;
        run_suite(&session, "cel")?;
        install(&session)?;
        // Records every status, event and WorkItem from here on, for the secret scan.
        recorder = Some(crate::scan::Recorder::start(&session)?);
        run_suite(&session, "e2e")?;
        provider_suites(&session)?;
        crate::identity::run_suites(&session)
    })();
    // Last, whatever the suites did: no secret in any status, event, WorkItem or log line
    // (once the provider ran: before that there is nothing of ours to scan).
    let scanned = match recorder {
        Some(recorder) => crate::scan::run(&session, Some(recorder)),
        None => Ok(()),
    };
    let result = suites.and(scanned);
    let dir = session.dir.clone();
    if result.is_err() {
        eprintln!("    logs kept in {}/logs", dir.display());
    }
    let stopped = session.stop();
    result?;
    stopped?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}

/// The suites after e2e that need the provider: TLS with a test CA (its own emulator) and
/// RBAC isolation between workers.
pub fn provider_suites(session: &Session) -> Result<()> {
    crate::tls::run_suite(session)?;
    run_suite(session, "isolation")
}

/// `cargo xtask e2e [--suite …]`: start, run the suites (default `e2e`; also `tls`,
/// `isolation`, and `scan`, the secret scan), stop (even on failure).
pub fn run(suites: &[String]) -> Result<()> {
    let session = start(&format!("e2e-{}", std::process::id()))?;
    let result = (|| -> Result<()> {
        if suites.is_empty() {
            return run_suite(&session, "e2e");
        }
        let mut recorder = suites
            .iter()
            .any(|s| s == "scan")
            .then(|| crate::scan::Recorder::start(&session))
            .transpose()?;
        for suite in suites {
            match suite.as_str() {
                "tls" => crate::tls::run_suite(&session)?,
                "scan" => crate::scan::run(&session, recorder.take())?,
                other => run_suite(&session, other)?,
            }
        }
        Ok(())
    })();
    let dir = session.dir.clone();
    let stopped = session.stop();
    result?;
    stopped?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}

/// How many `kubectl apply` processes [`apply_concurrently`] runs at once.
pub const APPLY_PARALLELISM: usize = 4;

/// Applies `docs` (YAML or JSON documents) with [`APPLY_PARALLELISM`] concurrent `kubectl
/// apply --server-side` processes, round-robin, so that they arrive together rather than paced
/// by one client's round trips. Chunks and their logs go to `<dir>/<prefix>-<n>.{yaml,log}`;
/// processes still running at `timeout` are killed and count as failed.
pub fn apply_concurrently(
    session: &Session,
    dir: &Path,
    prefix: &str,
    docs: &[&str],
    timeout: Duration,
) -> Result<()> {
    let mut children = Vec::new();
    for part in 0..APPLY_PARALLELISM.min(docs.len()) {
        let chunk: String = docs
            .iter()
            .skip(part)
            .step_by(APPLY_PARALLELISM)
            .map(|d| format!("---\n{d}\n"))
            .collect();
        let path = dir.join(format!("{prefix}-{part}.yaml"));
        let log = dir.join(format!("{prefix}-{part}.log"));
        std::fs::write(&path, chunk)?;
        let child = session
            .kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting kubectl apply")?;
        children.push((child, log));
    }
    let deadline = Instant::now() + timeout;
    let mut failed = Vec::new();
    for (mut child, log) in children {
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if !status.is_some_and(|s| s.success()) {
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            failed.push(format!("{}: {}", log.display(), err.trim()));
        }
    }
    if !failed.is_empty() {
        bail!("kubectl apply of {prefix}* failed: {}", failed.join("; "));
    }
    Ok(())
}
