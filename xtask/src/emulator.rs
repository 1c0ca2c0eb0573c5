//! Emulator tasks: fidelity tests through independent clients (python-tds, FreeTDS `tsql`,
//! go-mssqldb).
//!
//! Each client gets a fresh emulator process (the `mssql-emulator` binary on a free loopback
//! port) and runs its script from `testenv/mssql-emulator/clients/`. With `MSSQL_TEST_URL`
//! set (an ADO string with a sysadmin login), the scripts run against that server instead.
//! The clients are installed by this step on a fresh machine: python-tds into a venv under the
//! tool cache keyed by version, FreeTDS from Debian's `freetds-bin` with apt-get, go-mssqldb
//! through the Go module proxy (pinned by `clients/go-mssqldb/go.sum`) built into the cache.

use crate::util::{cache_dir, run, workspace_root};
use anyhow::{Context, Result, bail};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// python-tds release the fidelity script is written against.
const PYTDS_VERSION: &str = "1.17.1";
/// pyOpenSSL release for pytds's TLS cases.
const PYOPENSSL_VERSION: &str = "26.4.0";
/// go-mssqldb release pinned in `clients/go-mssqldb/go.mod`.
const GO_MSSQLDB_VERSION: &str = "1.11.2";
/// Password of `sa` in the emulator processes this step starts.
const SA_PASSWORD: &str = "Emul4tor!Passw0rd";

/// Runs the emulator's fidelity checks through clients other than tiberius.
pub fn fidelity_clients() -> Result<()> {
    let root = workspace_root();
    let clients = root.join("testenv/mssql-emulator/clients");
    let python = ensure_pytds()?;
    let tsql = ensure_tsql()?;
    let gomssql = build_go_client(&clients.join("go-mssqldb"))?;
    let external = std::env::var("MSSQL_TEST_URL").ok();
    let emulator = if external.is_none() {
        crate::util::build_bins()?;
        Some(target_dir().join("debug").join("mssql-emulator"))
    } else {
        None
    };
    let suites: [(&str, PathBuf, Option<PathBuf>); 3] = [
        ("python-tds", python, Some(clients.join("pytds_fidelity.py"))),
        (
            "FreeTDS tsql",
            PathBuf::from("python3"),
            Some(clients.join("freetds_fidelity.py")),
        ),
        ("go-mssqldb", gomssql, None),
    ];
    let mut failed = Vec::new();
    for (name, program, script) in suites {
        let mut cmd = Command::new(&program);
        cmd.args(script.as_ref()).env("TSQL", &tsql);
        let outcome = match (&external, &emulator) {
            (Some(url), _) => {
                let t = AdoTarget::parse(url)?;
                cmd.env("MSSQL_HOST", &t.host)
                    .env("MSSQL_PORT", t.port.to_string())
                    .env("MSSQL_USER", &t.user)
                    .env("MSSQL_PASSWORD", &t.password);
                run(
                    &format!("emulator-clients: {name} against MSSQL_TEST_URL"),
                    &mut cmd,
                )
            }
            (None, Some(bin)) => {
                let emu = EmulatorProcess::start(bin)?;
                // Cases that need emulator-only setup (Entra tokens) run only with this set.
                cmd.env("MSSQL_EMULATOR", "1")
                    .env("MSSQL_HOST", "127.0.0.1")
                    .env("MSSQL_PORT", emu.port.to_string())
                    .env("MSSQL_USER", "sa")
                    .env("MSSQL_PASSWORD", SA_PASSWORD);
                // The certificate, for clients that verify it (pytds's TLS cases).
                let cafile = cache_dir()?
                    .join("clients")
                    .join(format!("emulator-cert-{}.pem", emu.port));
                let r = emu.save_cert(&cafile).and_then(|()| {
                    cmd.env("MSSQL_CAFILE", &cafile);
                    run(&format!("emulator-clients: {name}"), &mut cmd)
                });
                let _ = std::fs::remove_file(&cafile);
                emu.stop();
                r
            }
            (None, None) => bail!("no emulator binary and no MSSQL_TEST_URL"),
        };
        if let Err(e) = outcome {
            eprintln!("    {e:#}");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("emulator fidelity failed through: {}", failed.join(", "));
    }
    Ok(())
}

/// The shared target directory (`CARGO_TARGET_DIR`, else `<workspace>/target`).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("target"),
    }
}

/// A venv with python-tds and pyOpenSSL (its TLS), under the tool cache, keyed by versions.
pub(crate) fn ensure_pytds() -> Result<PathBuf> {
    let venv = cache_dir()?.join("clients").join(format!(
        "python-tds-{PYTDS_VERSION}-pyopenssl-{PYOPENSSL_VERSION}"
    ));
    let python = venv.join("bin").join("python");
    let works = |p: &Path| {
        Command::new(p)
            .args(["-c", "import pytds, OpenSSL"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.is_file() && works(&python) {
        return Ok(python);
    }
    run(
        "create python-tds venv",
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
    )?;
    run(
        &format!("install python-tds {PYTDS_VERSION} and pyOpenSSL {PYOPENSSL_VERSION}"),
        Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            &format!("python-tds=={PYTDS_VERSION}"),
            &format!("pyOpenSSL=={PYOPENSSL_VERSION}"),
        ]),
    )?;
    if !works(&python) {
        bail!(
            "python-tds installed into {} but `import pytds, OpenSSL` fails",
            venv.display()
        );
    }
    Ok(python)
}

/// Builds the go-mssqldb fidelity program into the tool cache (`go build` is incremental).
fn build_go_client(dir: &Path) -> Result<PathBuf> {
    let out = cache_dir()?
        .join("clients")
        .join(format!("go-mssqldb-{GO_MSSQLDB_VERSION}"))
        .join("gomssqldb-fidelity");
    run(
        &format!("build go-mssqldb {GO_MSSQLDB_VERSION} fidelity client"),
        Command::new("go")
            .current_dir(dir)
            .args(["build", "-mod=readonly", "-o"])
            .arg(&out)
            .arg("."),
    )?;
    Ok(out)
}

/// FreeTDS `tsql`: from PATH, else installed from Debian's freetds-bin.
fn ensure_tsql() -> Result<PathBuf> {
    let found = |dir: &str| {
        let p = Path::new(dir).join("tsql");
        p.is_file().then_some(p)
    };
    let on_path = || {
        std::env::var("PATH")
            .ok()
            .and_then(|p| p.split(':').find_map(found))
    };
    if let Some(p) = on_path() {
        return Ok(p);
    }
    if Command::new("apt-get")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        bail!("FreeTDS tsql is not installed and apt-get is not available: install the freetds-bin package");
    }
    run("apt-get update", Command::new("apt-get").args(["update", "-qq"]))?;
    run(
        "install freetds-bin",
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "freetds-bin"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    on_path().context("freetds-bin installed but tsql is not on PATH")
}

/// An emulator child process on a free loopback port.
struct EmulatorProcess {
    child: Child,
    port: u16,
    admin: String,
}

impl EmulatorProcess {
    fn start(bin: &Path) -> Result<EmulatorProcess> {
        let mut child = Command::new(bin)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--sa-password",
                SA_PASSWORD,
                "--tls",
                "off",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        // The binary prints one JSON line with its addresses; read it on a thread so the wait
        // has a timeout.
        let stdout = child.stdout.take().context("emulator stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the emulator did not report its address within 60 s");
            }
        };
        let parsed: serde_json::Value =
            serde_json::from_str(line.trim()).with_context(|| format!("emulator banner: {line:?}"))?;
        let port = parsed["tds"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .context("emulator banner without a TDS port")?;
        let admin = parsed["admin"]
            .as_str()
            .context("emulator banner without an admin address")?
            .to_string();
        Ok(EmulatorProcess { child, port, admin })
    }

    /// Fetches the server certificate (PEM) from the admin interface into `path`.
    fn save_cert(&self, path: &Path) -> Result<()> {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect(&self.admin).with_context(|| format!("admin {}", self.admin))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(b"GET /cert HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
        if !body.contains("BEGIN CERTIFICATE") {
            bail!("GET /cert did not return a certificate: {resp:?}");
        }
        std::fs::write(path, body)?;
        Ok(())
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The parts of an ADO connection string the client scripts need.
#[derive(Debug, PartialEq, Eq)]
struct AdoTarget {
    host: String,
    port: u16,
    user: String,
    password: String,
}

impl AdoTarget {
    fn parse(url: &str) -> Result<AdoTarget> {
        let mut t = AdoTarget {
            host: String::new(),
            port: 1433,
            user: String::new(),
            password: String::new(),
        };
        for part in url.split(';') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "server" | "data source" | "address" => {
                    let v = v.trim().trim_start_matches("tcp:");
                    let (h, p) = v.split_once(',').unwrap_or((v, "1433"));
                    t.host = h.trim().to_string();
                    t.port = p.trim().parse().with_context(|| format!("port in {v:?}"))?;
                }
                "user id" | "uid" | "user" => t.user = v.trim().to_string(),
                "password" | "pwd" => t.password = v.to_string(),
                _ => {}
            }
        }
        if t.host.is_empty() || t.user.is_empty() {
            bail!("MSSQL_TEST_URL needs server= and user id= (an ADO connection string)");
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ado_strings_parse_like_tiberius_reads_them() {
        let t = AdoTarget::parse(
            "server=tcp:127.0.0.1,14330;user id=sa;password=P@ss;TrustServerCertificate=true",
        )
        .expect("parses");
        assert_eq!(
            t,
            AdoTarget {
                host: "127.0.0.1".into(),
                port: 14330,
                user: "sa".into(),
                password: "P@ss".into()
            }
        );
        assert!(AdoTarget::parse("password=x").is_err(), "no server");
    }
}
