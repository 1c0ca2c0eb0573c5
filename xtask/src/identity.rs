//! The identity suite (`kuttl-tests/identity`): each cloud credential source end to end, on
//! a running [`Session`] with the provider installed.
//!
//! ```text
//! fake-entra (HTTPS, test CA, JWKS from the apiserver, signs with the emulator's key) ─┐
//! moto_server (STS AssumeRoleWithWebIdentity, Secrets Manager), bounded lifetime ──────┤
//!   ─▶ kuttl-tests/identity (ENTRA_*, AWS_TEST_ENDPOINT, MOTO_PYTHON) ─▶ stop both by PID
//! ```
//! `cargo xtask identity` runs it on an environment of its own; `cargo xtask test` runs it
//! after the e2e suite on the shared one.

use crate::{
    e2e::{self, Session},
    testenv::cluster,
    util::{self, cache_dir, workspace_root},
};
use anyhow::{Context, Result, bail};
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// moto version, installed into the tool cache (`pip install moto[server]`).
const MOTO_VERSION: &str = "5.2.1";
/// The apiserver's `--service-account-issuer` (xtask/src/testenv/cluster.rs).
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Namespace of the suite (kuttl-test.yaml): fixed, because federated credentials name the
/// ServiceAccount's namespace.
const NAMESPACE: &str = "sqlserver-identity";
/// Test directory values (not secrets): tenant, and the Entra app federated with the worker
/// ServiceAccount of ProviderConfig `azure`.
const TENANT_ID: &str = "7e57e57e-0000-4000-8000-000000000001";
const CLIENT_ID: &str = "7e57e57e-0000-4000-8000-0000000000a1";
const OBJECT_ID: &str = "7e57e57e-0000-4000-8000-0000000000b1";
/// The emulator's stub Entra directory: principals the suite creates by name (`Login` and
/// `User` with `type: External`), resolved as Azure SQL resolves them in Entra.
pub const ENTRA_DIRECTORY: &str = "identity-entra-reader=7e57e57e-0000-4000-8000-0000000000c1,identity-entra-group=7e57e57e-0000-4000-8000-0000000000c2:group";
/// Longest either stand-in may live: a crashed xtask leaves nothing behind for long.
const STAND_IN_LIFETIME: Duration = Duration::from_secs(40 * 60);

/// A process started for the suite, stopped by PID.
struct Stoppable {
    child: Child,
    pid_file: PathBuf,
}

impl Stoppable {
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-s", "TERM", "--", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// The moto venv in the tool cache; returns its python (which also has boto3).
fn ensure_moto() -> Result<PathBuf> {
    let venv = cache_dir()?.join("clients").join(format!("moto-{MOTO_VERSION}"));
    let python = venv.join("bin").join("python");
    let works = |p: &Path| {
        Command::new(p)
            .args(["-c", "import moto.server, boto3, flask"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.is_file() && works(&python) {
        return Ok(python);
    }
    util::run(
        "create moto venv",
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
    )?;
    util::run(
        &format!("install moto[server] {MOTO_VERSION}"),
        Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            &format!("moto[server]=={MOTO_VERSION}"),
        ]),
    )?;
    if !works(&python) {
        bail!("moto installed into {} but cannot be imported", venv.display());
    }
    Ok(python)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts moto on loopback, wrapped in `timeout` so it ends by itself.
fn start_moto(dir: &Path, python: &Path) -> Result<(Stoppable, u16)> {
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("logs").join("moto.log"))?;
    let moto_server = python.with_file_name("moto_server");
    let child = Command::new("timeout")
        .arg(STAND_IN_LIFETIME.as_secs().to_string())
        .arg(&moto_server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", moto_server.display()))?;
    let pid_file = dir.join("moto.pid");
    std::fs::write(&pid_file, child.id().to_string())?;
    let moto = Stoppable { child, pid_file };
    let ready = e2e::wait_for("moto", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    if let Err(e) = ready {
        moto.stop();
        return Err(e);
    }
    Ok((moto, port))
}

/// Starts fake-entra; returns it and its URL.
fn start_fake_entra(session: &Session, ca_out: &Path) -> Result<(Stoppable, String)> {
    let bin = cluster::target_dir().join("debug").join("fake-entra");
    let log = std::fs::File::create(session.dir.join("logs").join("fake-entra.log"))?;
    let subject = format!("system:serviceaccount:{NAMESPACE}:sqlserver-worker-pc-azure");
    let mut child = Command::new(&bin)
        .arg("--ca-out")
        .arg(ca_out)
        .args(["--issuer", ISSUER])
        .args(["--app", &format!("{CLIENT_ID}={subject}={OBJECT_ID}")])
        .args(["--max-lifetime", &STAND_IN_LIFETIME.as_secs().to_string()])
        // azure_identity replaces a cached token within 5 minutes of its expiry: with 300 s
        // tokens every new login of the worker needs a fresh one, which the suite checks.
        .args(["--token-lifetime", "300"])
        .env("FAKE_ENTRA_SIGNING_KEY", &session.fedauth_key)
        .env("KUBECONFIG", session.dir.join("kubeconfig"))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid_file = session.dir.join("fake-entra.pid");
    std::fs::write(&pid_file, child.id().to_string())?;
    let stdout = child.stdout.take().context("fake-entra stdout")?;
    let entra = Stoppable { child, pid_file };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) if !line.trim().is_empty() => line,
        _ => {
            entra.stop();
            bail!(
                "fake-entra did not report its URL within 30 s (see {}/logs/fake-entra.log)",
                session.dir.display()
            );
        }
    };
    let url = serde_json::from_str::<serde_json::Value>(line.trim())
        .ok()
        .and_then(|v| v["url"].as_str().map(str::to_owned))
        .with_context(|| format!("fake-entra address line {line:?}"))?;
    Ok((entra, url))
}

/// Starts the stand-ins, runs `kuttl-tests/identity`, stops them (even on failure).
pub fn run_suites(session: &Session) -> Result<()> {
    let python = ensure_moto()?;
    // kuttl deletes a suite namespace that it created when the test that created it ends,
    // under the tests still running in parallel; one that exists already it leaves alone.
    let exists = session
        .kubectl()
        .args(["get", "namespace", NAMESPACE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        util::run(
            &format!("namespace {NAMESPACE}"),
            session.kubectl().args(["create", "namespace", NAMESPACE]),
        )?;
    }
    let ca_file = session.dir.join("entra-ca.crt");
    let (entra, url) = start_fake_entra(session, &ca_file)?;
    let (moto, port) = match start_moto(&session.dir, &python) {
        Ok(started) => started,
        Err(e) => {
            entra.stop();
            return Err(e);
        }
    };
    let result = e2e::run_suite_with(
        session,
        "identity",
        &[
            ("ENTRA_URL", url),
            ("ENTRA_CA_FILE", ca_file.display().to_string()),
            ("ENTRA_TENANT_ID", TENANT_ID.to_owned()),
            ("ENTRA_CLIENT_ID", CLIENT_ID.to_owned()),
            ("ENTRA_OBJECT_ID", OBJECT_ID.to_owned()),
            ("AWS_TEST_ENDPOINT", format!("http://127.0.0.1:{port}")),
            ("MOTO_PYTHON", python.display().to_string()),
            (
                "IDENTITY_BIN",
                workspace_root()
                    .join("kuttl-tests")
                    .join("identity")
                    .join("bin")
                    .display()
                    .to_string(),
            ),
        ],
    );
    moto.stop();
    entra.stop();
    result
}

/// `cargo xtask identity`: a fresh environment with the provider, the identity suite, stop.
pub fn run() -> Result<()> {
    let session = e2e::start(&format!("identity-{}", std::process::id()))?;
    let result = run_suites(&session);
    let dir = session.dir.clone();
    if result.is_err() {
        eprintln!("    logs kept in {}/logs", dir.display());
    }
    let stopped = session.stop();
    result?;
    stopped?;
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("    could not remove {}: {e}", dir.display());
    }
    Ok(())
}
