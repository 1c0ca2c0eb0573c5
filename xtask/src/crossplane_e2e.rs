//! The end-to-end part of `cargo xtask crossplane`: an `AppDatabase` XR reconciled by
//! Crossplane core against the local environment, with the provider and the SQL Server
//! emulator, then deleted in the order its Usages demand (kuttl suite `kuttl-tests/crossplane`).
//!
//! Crossplane normally runs functions as Deployments pulled from a registry and reaches them
//! through a headless Service's DNS name. None of that exists here, so this module plays the
//! parts Crossplane leaves to the outside when started with `--package-runtime=External`:
//!
//! - an OCI registry on 127.0.0.1 (go-containerregistry's, which its clients talk to over plain
//!   HTTP on loopback) serves function-patch-and-transform's package, built from its module
//!   with `crossplane xpkg build` (no runtime image);
//! - the function runs as a local process with a TLS certificate for 127.0.0.1, and its
//!   FunctionRevision gets `status.endpoint: 127.0.0.1:<port>` and the TLS Secret name that
//!   core's package manager waits for;
//! - core runs as a local process with a client certificate from the same CA (core always
//!   speaks mutual TLS to functions) and its webhook server on 127.0.0.1, registered in a
//!   ValidatingWebhookConfiguration by `url:` instead of a Service, so Usages block deletions.
//!
//! Every process is started here and stopped by its PID, even on failure; the environment is
//! stopped and its directory removed after a pass (kept, with logs, after a failure).

use crate::crossplane::{capture, free_port};
use crate::e2e::{self, Session};
use crate::util::workspace_root;
use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The built tools this part runs.
pub struct Tools {
    /// The Crossplane CLI (xpkg build and push).
    pub cli: PathBuf,
    /// Crossplane core.
    pub core: PathBuf,
    /// function-patch-and-transform.
    pub function: PathBuf,
    /// Its package directory (crossplane.yaml + input CRD).
    pub function_package: PathBuf,
    /// Its pinned version, the package's tag in the local registry.
    pub function_version: String,
    /// go-containerregistry's registry.
    pub registry: PathBuf,
    /// Crossplane's CRDs.
    pub core_crds: PathBuf,
}

/// Longest any one wait here may take.
const WAIT: Duration = Duration::from_secs(120);
/// The Function's name, as the Compositions reference it.
const FUNCTION: &str = "function-patch-and-transform";

/// Starts an environment with the provider, sets Crossplane up, runs the suite, stops all.
pub fn run(tools: &Tools, work: &Path) -> Result<()> {
    let started = Instant::now();
    let session = e2e::start(&format!("crossplane-{}", std::process::id()))?;
    eprintln!(
        "    environment, emulator and provider up in {:.0?}",
        started.elapsed()
    );
    let mut processes = Processes(Vec::new());
    let result = (|| -> Result<()> {
        set_up(tools, work, &session, &mut processes)?;
        e2e::run_suite(&session, "crossplane")
    })();
    processes.stop();
    let dir = session.dir.clone();
    if result.is_err() {
        eprintln!("    logs kept in {}/logs", dir.display());
    }
    let stopped = session.stop();
    result?;
    stopped?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    eprintln!("    crossplane e2e: ok in {:.0?}", started.elapsed());
    Ok(())
}

/// Processes started here, stopped by PID.
struct Processes(Vec<(String, Child)>);

impl Processes {
    fn stop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.0.clear();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start(processes: &mut Processes, name: &str, cmd: &mut Command, log: &Path) -> Result<()> {
    let out = File::create(log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    eprintln!("    started {name} (pid {}, log {})", child.id(), log.display());
    processes.0.push((name.to_string(), child));
    Ok(())
}

/// Waits until 127.0.0.1:`port` accepts connections, while the last started process lives.
fn wait_listening(processes: &mut Processes, port: u16) -> Result<()> {
    let began = Instant::now();
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    loop {
        if let Some((name, child)) = processes.0.last_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("{name} exited ({status})");
        }
        if TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if began.elapsed() > WAIT {
            bail!("nothing listens on 127.0.0.1:{port} after {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a kubectl command of the session and fails with its output.
fn kubectl(
    session: &Session,
    work: &Path,
    what: &str,
    args: &[&str],
    stdin: Option<&Path>,
) -> Result<String> {
    let mut cmd = session.kubectl();
    cmd.args(args);
    let out = capture(what, &mut cmd, stdin, work)?;
    if !out.status.success() {
        bail!("{what}: kubectl {} failed: {}", args.join(" "), out.stderr.trim());
    }
    Ok(out.stdout)
}

/// A CA and one certificate for 127.0.0.1 usable by servers and clients (the function serves
/// with it and verifies core; core presents it to the function and serves its webhook with it).
fn certificates(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "crossplane e2e CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(vec!["localhost".to_string()])?;
    p.subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    p.distinguished_name.push(DnType::CommonName, "crossplane e2e");
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = p.signed_by(&key, &issuer)?;
    std::fs::write(dir.join("ca.crt"), ca_cert.pem())?;
    std::fs::write(dir.join("tls.crt"), cert.pem())?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
    Ok(())
}

fn set_up(tools: &Tools, work: &Path, session: &Session, processes: &mut Processes) -> Result<()> {
    let root = workspace_root();
    let logs = session.dir.join("logs");
    let certs = session.dir.join("crossplane-certs");
    certificates(&certs)?;

    eprintln!("==> Crossplane's CRDs");
    let crds = tools.core_crds.display().to_string();
    kubectl(
        session,
        work,
        "crossplane crds",
        &["apply", "--server-side", "-f", &crds],
        None,
    )?;
    kubectl(
        session,
        work,
        "crossplane crds established",
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=120s",
            "-f",
            &crds,
        ],
        None,
    )?;

    eprintln!("==> registry and function package");
    let registry_port = free_port()?;
    start(
        processes,
        "registry",
        Command::new(&tools.registry).args(["-port", &registry_port.to_string()]),
        &logs.join("crossplane-registry.log"),
    )?;
    wait_listening(processes, registry_port)?;
    let xpkg = session.dir.join("function.xpkg");
    let no_examples = session.dir.join("no-examples");
    std::fs::create_dir_all(&no_examples)?;
    let mut build = Command::new(&tools.cli);
    build
        .arg("xpkg")
        .arg("build")
        .arg("--package-root")
        .arg(&tools.function_package)
        .arg("--examples-root")
        .arg(&no_examples)
        .arg("--package-file")
        .arg(&xpkg);
    let out = capture("function xpkg build", &mut build, None, work)?;
    if !out.status.success() {
        bail!("xpkg build of the function: {}", out.stderr.trim());
    }
    let reference = format!("127.0.0.1:{registry_port}/{FUNCTION}:{}", tools.function_version);
    let mut push = Command::new(&tools.cli);
    push.args(["xpkg", "push", "-f"]).arg(&xpkg).arg(&reference);
    let out = capture("function xpkg push", &mut push, None, work)?;
    if !out.status.success() {
        bail!("xpkg push of the function: {}", out.stderr.trim());
    }

    eprintln!("==> function and Crossplane core");
    let function_port = free_port()?;
    start(
        processes,
        FUNCTION,
        Command::new(&tools.function)
            .arg("--tls-certs-dir")
            .arg(&certs)
            .args(["--address", &format!("127.0.0.1:{function_port}")]),
        &logs.join("crossplane-function.log"),
    )?;
    wait_listening(processes, function_port)?;
    let (webhook, metrics, health) = (free_port()?, free_port()?, free_port()?);
    // Core's package cache must exist (it fails to install packages otherwise).
    let (pkg_cache, xfn_cache) = (
        session.dir.join("crossplane-cache"),
        session.dir.join("crossplane-xfn"),
    );
    std::fs::create_dir_all(&pkg_cache)?;
    std::fs::create_dir_all(&xfn_cache)?;
    start(
        processes,
        "crossplane core",
        Command::new(&tools.core)
            .args([
                "core",
                "start",
                "--debug",
                "--package-runtime=External",
                "--enable-webhooks=true",
            ])
            .arg(format!("--webhook-port={webhook}"))
            .arg(format!("--metrics-port={metrics}"))
            .arg(format!("--health-probe-port={health}"))
            .arg(format!("--cache-dir={}", pkg_cache.display()))
            .arg(format!("--xfn-cache-dir={}", xfn_cache.display()))
            .env("KUBECONFIG", session.dir.join("kubeconfig"))
            .env("POD_NAMESPACE", "crossplane-system")
            .env("TLS_CLIENT_CERTS_DIR", &certs)
            .env("TLS_SERVER_CERTS_DIR", &certs),
        &logs.join("crossplane-core.log"),
    )?;
    wait_listening(processes, webhook)?;

    // Usages are enforced by core's webhook; register it by URL on loopback.
    let ca = std::fs::read(certs.join("ca.crt"))?;
    let webhook_config = session.dir.join("crossplane-webhook.yaml");
    std::fs::write(
        &webhook_config,
        format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: crossplane-no-usages
webhooks:
  - name: nousages.protection.crossplane.io
    admissionReviewVersions: [v1]
    clientConfig:
      url: https://127.0.0.1:{webhook}/validate-no-usages
      caBundle: {}
    failurePolicy: Fail
    sideEffects: None
    objectSelector:
      matchLabels:
        crossplane.io/in-use: "true"
    rules:
      - apiGroups: ["*"]
        apiVersions: ["*"]
        operations: [DELETE]
        resources: ["*"]
"#,
            base64(&ca)
        ),
    )?;
    let path = webhook_config.display().to_string();
    kubectl(session, work, "usage webhook", &["apply", "-f", &path], None)?;

    eprintln!("==> Function {FUNCTION} from {reference}");
    let function_yaml = session.dir.join("crossplane-function.yaml");
    std::fs::write(
        &function_yaml,
        format!(
            "apiVersion: pkg.crossplane.io/v1\nkind: Function\nmetadata:\n  name: {FUNCTION}\nspec:\n  package: {reference}\n"
        ),
    )?;
    let path = function_yaml.display().to_string();
    kubectl(session, work, "function", &["apply", "-f", &path], None)?;
    // As the external runtime: the TLS Secret core's package manager waits for, and the
    // endpoint its function runner dials.
    let revision = wait_for_output(WAIT, || {
        kubectl(
            session,
            work,
            "function revision",
            &[
                "get",
                "functionrevisions",
                "-o",
                "jsonpath={.items[0].metadata.name}",
            ],
            None,
        )
        .ok()
        .filter(|s| !s.trim().is_empty())
    })
    .context("no FunctionRevision")?;
    let (crt, key, ca) = (
        format!("--from-file=tls.crt={}", certs.join("tls.crt").display()),
        format!("--from-file=tls.key={}", certs.join("tls.key").display()),
        format!("--from-file=ca.crt={}", certs.join("ca.crt").display()),
    );
    kubectl(
        session,
        work,
        "function tls secret",
        &[
            "-n",
            "crossplane-system",
            "create",
            "secret",
            "generic",
            "function-tls",
            &crt,
            &key,
            &ca,
        ],
        None,
    )?;
    let patch = format!(
        r#"{{"status":{{"tlsServerSecretName":"function-tls","endpoint":"127.0.0.1:{function_port}"}}}}"#
    );
    kubectl(
        session,
        work,
        "function revision status",
        &[
            "patch",
            "functionrevision",
            revision.trim(),
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
        None,
    )?;
    kubectl(
        session,
        work,
        "function revision healthy",
        &[
            "wait",
            "functionrevision",
            revision.trim(),
            "--for=condition=RevisionHealthy",
            "--timeout=120s",
        ],
        None,
    )?;

    eprintln!("==> XRD and Composition from examples/composition");
    let xrd = root
        .join("examples/composition/definition.yaml")
        .display()
        .to_string();
    let composition = root
        .join("examples/composition/composition-patch-and-transform.yaml")
        .display()
        .to_string();
    kubectl(session, work, "xrd", &["apply", "-f", &xrd], None)?;
    kubectl(
        session,
        work,
        "xrd established",
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=120s",
            "-f",
            &xrd,
        ],
        None,
    )?;
    kubectl(session, work, "composition", &["apply", "-f", &composition], None)?;
    Ok(())
}

fn wait_for_output(limit: Duration, mut f: impl FnMut() -> Option<String>) -> Option<String> {
    let began = Instant::now();
    while began.elapsed() < limit {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

/// Standard base64 (for the webhook's caBundle).
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_cases() {
        // (why, input, encoded): every padding length, as RFC 4648 §10 lists them.
        let cases = [
            ("empty", "", ""),
            ("two pad characters", "f", "Zg=="),
            ("one pad character", "fo", "Zm8="),
            ("no padding", "foo", "Zm9v"),
            ("longer input", "foobar", "Zm9vYmFy"),
        ];
        for (why, input, encoded) in cases {
            assert_eq!(base64(input.as_bytes()), encoded, "{why}");
        }
    }
}
