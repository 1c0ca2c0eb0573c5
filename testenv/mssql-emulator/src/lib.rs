//! A SQL Server emulator for tests: a TDS 7.4 server with SQL Server 2022's catalog semantics
//! for logins, databases, users, schemas, roles and permissions (see `docs/emulator.md` and the
//! spec `reference/tds-emulator.md`).
//!
//! Start it in-process from a test:
//!
//! ```no_run
//! # async fn demo() -> Result<(), mssql_emulator::StartError> {
//! let emu = mssql_emulator::Emulator::start(mssql_emulator::Config::default()).await?;
//! let ado = emu.ado_string("sa", mssql_emulator::DEFAULT_SA_PASSWORD);
//! // … connect with tiberius using `ado` …
//! let counters = emu.counters();
//! emu.shutdown().await;
//! # let _ = (ado, counters);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod catalog;
pub mod conn;
pub mod engine;
pub mod errors;
pub mod fedauth;
pub mod server;
pub mod sql;
pub mod tds;
pub mod value;

pub use engine::Identity;
pub use server::{Counters, DropAfterRule, FailRule, FaultRequest, FaultState};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The `sa` password of [`Config::default`]; it passes the password policy.
pub const DEFAULT_SA_PASSWORD: &str = "Emul4tor!Passw0rd";

/// Encryption the server offers in PRELOGIN (spec A4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TlsMode {
    /// No certificate: NOT_SUP to everyone.
    None,
    /// TLS offered, not required (login-only for clients that ask for OFF).
    Off,
    /// TLS required for everything.
    Required,
}

impl std::str::FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(TlsMode::None),
            "off" => Ok(TlsMode::Off),
            "required" => Ok(TlsMode::Required),
            other => Err(format!("unknown TLS mode '{other}' (none, off, required)")),
        }
    }
}

/// Emulator configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// TDS listen address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Admin HTTP listen address; port 0 picks a free one.
    pub admin_listen: SocketAddr,
    /// Password of `sa`.
    pub sa_password: String,
    /// Encryption mode.
    pub tls: TlsMode,
    /// PEM certificate chain and private key; a self-signed one (SAN localhost, 127.0.0.1)
    /// is generated when absent.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Version, edition and server name.
    pub identity: Identity,
    /// HS256 key that Entra security tokens (FEDAUTH) must be signed with; `None` accepts
    /// tokens without checking their signature.
    pub fedauth_hs256_key: Option<Vec<u8>>,
    /// Seed for SIDs, password salts and NEWID(); `None` uses OS randomness. With a seed and a
    /// fixed clock, the same statements give the same catalog dump.
    pub seed: Option<u64>,
    /// Fixed create/modify time (ms since the Unix epoch) instead of the system clock.
    pub clock_ms: Option<i64>,
    /// Stub Entra directory for `FROM EXTERNAL PROVIDER` without `WITH OBJECT_ID`.
    pub entra_directory: Vec<catalog::EntraPrincipal>,
    /// Catalog snapshot file: loaded at start when it exists, written by
    /// [`Emulator::shutdown`].
    pub state_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            sa_password: DEFAULT_SA_PASSWORD.into(),
            tls: TlsMode::Off,
            cert: None,
            identity: Identity::default(),
            fedauth_hs256_key: None,
            seed: None,
            clock_ms: None,
            entra_directory: Vec::new(),
            state_file: None,
        }
    }
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// Certificate or TLS setup failed.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The state file could not be read.
    #[error("state file {0}: {1}")]
    State(PathBuf, String),
    /// Only loopback addresses are allowed.
    #[error("refusing to listen on non-loopback address {0}")]
    NotLoopback(SocketAddr),
}

/// A running emulator. Dropping it without [`Emulator::shutdown`] stops the listeners too.
pub struct Emulator {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    shared: Arc<server::Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    state_file: Option<PathBuf>,
}

impl Emulator {
    /// Binds both listeners and starts serving on the current tokio runtime.
    pub async fn start(config: Config) -> Result<Emulator, StartError> {
        for a in [config.listen, config.admin_listen] {
            if !a.ip().is_loopback() {
                return Err(StartError::NotLoopback(a));
            }
        }
        let tls = match config.tls {
            TlsMode::None => None,
            _ => Some(server::tls_config(
                config.cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            )?),
        };
        let shared = Arc::new(server::Shared::new(&config, tls));
        if let Some(path) = config.state_file.as_ref().filter(|p| p.exists()) {
            let text =
                std::fs::read_to_string(path).map_err(|e| StartError::State(path.clone(), e.to_string()))?;
            let loaded: catalog::Catalog =
                serde_json::from_str(&text).map_err(|e| StartError::State(path.clone(), e.to_string()))?;
            let mut cat = shared.catalog();
            let keep = (cat.rng, cat.clock, std::mem::take(&mut cat.directory));
            *cat = catalog::Catalog {
                rng: keep.0,
                clock: keep.1,
                directory: keep.2,
                ..loaded
            };
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| StartError::Bind(config.listen, e))?;
        let admin = tokio::net::TcpListener::bind(config.admin_listen)
            .await
            .map_err(|e| StartError::Bind(config.admin_listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Bind(config.listen, e))?;
        let admin_addr = admin
            .local_addr()
            .map_err(|e| StartError::Bind(config.admin_listen, e))?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        let sh = shared.clone();
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = rx.changed() => break,
                    acc = listener.accept() => match acc {
                        Ok((sock, _)) => {
                            conns.spawn(conn::serve(sh.clone(), sock));
                        }
                        Err(e) => tracing::warn!("accept: {e}"),
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            conns.abort_all();
        }));
        tasks.push(tokio::spawn(admin::serve(shared.clone(), admin, stop_rx)));
        tracing::info!(%addr, %admin_addr, "mssql-emulator listening");
        Ok(Emulator {
            addr,
            admin_addr,
            shared,
            stop,
            tasks,
            state_file: config.state_file.clone(),
        })
    }

    /// The TDS address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server certificate as PEM (None with `TlsMode::None`), for clients that verify it
    /// (`tiberius::Config::trust_cert_ca`, pytds `cafile`).
    pub fn cert_pem(&self) -> Option<String> {
        self.shared.cert_pem.clone()
    }

    /// The admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// An ADO connection string for tiberius (`Config::from_ado_string`), trusting the
    /// emulator's self-signed certificate.
    pub fn ado_string(&self, user: &str, password: &str) -> String {
        format!(
            "server=tcp:{},{};user id={};password={};TrustServerCertificate=true",
            self.addr.ip(),
            self.addr.port(),
            user,
            password.replace(';', ";;")
        )
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        self.shared.counters()
    }

    /// The catalog as JSON (the same document as `GET /catalog`).
    pub fn catalog_json(&self) -> serde_json::Value {
        self.shared.catalog_json()
    }

    /// Injects faults (the same as `POST /faults`).
    pub fn set_faults(&self, req: FaultRequest) {
        self.shared.set_faults(req);
    }

    /// Fresh catalog, zero counters, no faults; open sessions are closed.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops listening, closes every connection, and writes the state file if one is
    /// configured (a failure to write it is logged).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Err(e) = self.save_state() {
            tracing::warn!("cannot write the state file: {e}");
        }
    }

    /// Writes the catalog to the configured state file now (no-op without one).
    pub fn save_state(&self) -> std::io::Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let json = serde_json::to_string_pretty(&*self.shared.catalog()).map_err(std::io::Error::other)?;
        // Write then rename, so a crash never leaves half a file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
