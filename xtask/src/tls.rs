//! The TLS suite (`kuttl-tests/tls`): a second emulator that serves a certificate signed by a
//! test CA, for `sql.test.local` and 127.0.0.1, and requires TLS. The suite's configs trust that
//! CA (from a Secret or a ConfigMap), another CA, a wrong host name, or nothing
//! (`trustServerCertificate`).
//!
//! ```text
//! <env dir>/tls/ ca.crt, server.crt, server.key, wrong-ca.crt   (made anew each run, rcgen)
//! mssql-emulator --tls required --cert server.crt --key server.key   (stopped by PID)
//! kuttl-tests/tls with SQL_TLS_PORT, SQL_TLS_ADMIN, SQL_TLS_DIR
//! ```

use crate::{
    e2e::{self, Session},
    testenv::cluster,
};
use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::{
    io::{BufRead, BufReader},
    net::IpAddr,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The DNS name in the server certificate (configs check it with `hostNameInCertificate`).
pub const SERVER_NAME: &str = "sql.test.local";

fn ca(name: &str) -> Result<(String, Issuer<'static, KeyPair>)> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = p.self_signed(&key)?.pem();
    Ok((pem, Issuer::new(p, key)))
}

/// Writes `ca.crt`, `server.crt`/`server.key` (signed by that CA, for [`SERVER_NAME`] and
/// 127.0.0.1) and `wrong-ca.crt` (a CA that signed nothing) to `dir`.
pub fn generate(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let (ca_pem, issuer) = ca("provider-sqlserver TLS suite CA")?;
    let (wrong_pem, _) = ca("provider-sqlserver TLS suite wrong CA")?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
    p.subject_alt_names
        .push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    p.distinguished_name.push(DnType::CommonName, SERVER_NAME);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = p.signed_by(&key, &issuer)?;
    for (name, data) in [
        ("ca.crt", ca_pem),
        ("server.crt", cert.pem()),
        ("server.key", key.serialize_pem()),
        ("wrong-ca.crt", wrong_pem),
    ] {
        std::fs::write(dir.join(name), data).with_context(|| format!("writing {}/{name}", dir.display()))?;
    }
    Ok(())
}

/// The TLS emulator; stopped (by its PID) when dropped.
struct TlsEmulator {
    child: Child,
    port: u16,
    admin_port: u16,
}

impl Drop for TlsEmulator {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start_emulator(session: &Session, tls_dir: &Path) -> Result<TlsEmulator> {
    let bin = cluster::target_dir().join("debug").join("mssql-emulator");
    let log = std::fs::File::create(session.dir.join("logs").join("emulator-tls.log"))?;
    let mut child = Command::new(&bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--tls",
            "required",
        ])
        .arg("--cert")
        .arg(tls_dir.join("server.crt"))
        .arg("--key")
        .arg(tls_dir.join("server.key"))
        .args(["--sa-password", &session.sa_password])
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("emulator stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let mut emulator = TlsEmulator {
        child,
        port: 0,
        admin_port: 0,
    };
    let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
        bail!("the TLS emulator did not report its addresses within 30 s");
    };
    let addresses: serde_json::Value = serde_json::from_str(line.trim()).context("emulator address line")?;
    let port = |key: &str| -> Result<u16> {
        addresses[key]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("no {key} address in {line:?}"))
    };
    emulator.port = port("tds")?;
    emulator.admin_port = port("admin")?;
    Ok(emulator)
}

/// Runs `kuttl-tests/tls` against a fresh TLS emulator (the provider must be installed).
pub fn run_suite(session: &Session) -> Result<()> {
    let started = Instant::now();
    let tls_dir = session.dir.join("tls");
    generate(&tls_dir)?;
    let emulator = start_emulator(session, &tls_dir)?;
    eprintln!(
        "    TLS emulator on 127.0.0.1:{} (certificate for {SERVER_NAME}, test CA)",
        emulator.port
    );
    let result = e2e::run_suite_with(
        session,
        "tls",
        &[
            ("SQL_TLS_PORT", emulator.port.to_string()),
            (
                "SQL_TLS_ADMIN",
                format!("http://127.0.0.1:{}", emulator.admin_port),
            ),
            ("SQL_TLS_DIR", tls_dir.display().to_string()),
        ],
    );
    drop(emulator);
    eprintln!("    TLS suite in {:.0?}", started.elapsed());
    result
}
