//! Shared server state, the listener, TLS setup, counters and fault injection.

use crate::catalog::Catalog;
use crate::engine::{Identity, SessionInfo, Sessions};
use crate::errors::SqlError;
use crate::{Config, TlsMode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Counters exposed by the admin interface and [`crate::Emulator::counters`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// TCP connections accepted.
    pub connections_opened: u64,
    /// Successful logins.
    pub logins: u64,
    /// Failed logins.
    pub login_failures: u64,
    /// SQL batch requests.
    pub batches: u64,
    /// RPC requests.
    pub rpcs: u64,
    /// Transaction-manager requests.
    pub tm_requests: u64,
    /// Attention requests.
    pub attentions: u64,
    /// Statements executed, by kind (`CREATE LOGIN`, `SELECT`, `GRANT`, …).
    pub statements: BTreeMap<String, u64>,
    /// Errors sent, by number (login failures included).
    pub errors: BTreeMap<u32, u64>,
}

/// A fault-injection request (`POST /faults`). Absent fields leave the current setting alone.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FaultRequest {
    /// Delay every statement by this many milliseconds (0 turns it off).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Close the connection instead of answering the next N requests.
    #[serde(default)]
    pub drop_next: Option<u64>,
    /// Fail the next request whose SQL contains `pattern` (case-insensitive) with `error`.
    #[serde(default)]
    pub fail_next: Option<FailRule>,
    /// Refuse every login with 18456 for this many seconds from now.
    #[serde(default)]
    pub refuse_logins_secs: Option<u64>,
    /// Run the next `count` requests whose SQL contains `pattern`, then close the connection
    /// instead of sending their answers: the client cannot tell whether they ran (they did).
    #[serde(default)]
    pub drop_after: Option<DropAfterRule>,
}

/// "Executed, answer lost" rule of [`FaultRequest::drop_after`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DropAfterRule {
    /// Substring to look for in the request's SQL text (case-insensitive).
    pub pattern: String,
    /// How many matching requests lose their answer (0 clears the rule).
    pub count: u64,
}

/// One-shot failure rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailRule {
    /// Substring to look for in the request's SQL text.
    pub pattern: String,
    /// Error number; its level, state and text come from the message table when known.
    pub error: u32,
    /// Text to use for numbers the table lacks.
    #[serde(default)]
    pub message: Option<String>,
}

/// Current fault settings (`GET /faults`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FaultState {
    /// Per-statement delay.
    pub delay_ms: u64,
    /// Requests left to drop.
    pub drop_next: u64,
    /// Pending one-shot failure.
    pub fail_next: Option<FailRule>,
    /// Milliseconds left during which logins are refused.
    pub refuse_logins_ms_left: u64,
    /// Pending "executed, answer lost" rule (its count is what is left).
    pub drop_after: Option<DropAfterRule>,
    #[serde(skip)]
    refuse_until: Option<Instant>,
}

/// State shared by every connection.
pub struct Shared {
    pub(crate) cat: Mutex<Catalog>,
    /// Live sessions.
    pub sessions: Mutex<Sessions>,
    /// Server identity.
    pub identity: Identity,
    pub(crate) tls_config: Option<Arc<rustls::ServerConfig>>,
    pub(crate) strict_tls_config: Option<Arc<rustls::ServerConfig>>,
    /// PEM of the server certificate, when TLS is on.
    pub cert_pem: Option<String>,
    tls_mode: TlsMode,
    counters: Mutex<Counters>,
    faults: Mutex<FaultState>,
    /// Transaction descriptors.
    pub next_descriptor: AtomicU64,
    sa_password: String,
    seed: Option<u64>,
    clock_ms: Option<i64>,
    directory: Vec<crate::catalog::EntraPrincipal>,
    pub(crate) fedauth_key: Option<Vec<u8>>,
    spids: Mutex<std::collections::BTreeSet<u16>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock must not take every later connection down with it.
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Shared {
    pub(crate) fn new(cfg: &Config, tls: Option<TlsSetup>) -> Shared {
        let (tls_config, strict_tls_config, cert_pem) = match tls {
            Some(t) => (Some(t.inband), Some(t.strict), Some(t.cert_pem)),
            None => (None, None, None),
        };
        Shared {
            cat: Mutex::new(Catalog {
                directory: cfg.entra_directory.clone(),
                ..Catalog::with_determinism(&cfg.sa_password, cfg.seed, cfg.clock_ms)
            }),
            sessions: Mutex::new(BTreeMap::new()),
            identity: cfg.identity.clone(),
            tls_config,
            strict_tls_config,
            cert_pem,
            tls_mode: cfg.tls,
            counters: Mutex::new(Counters::default()),
            faults: Mutex::new(FaultState::default()),
            next_descriptor: AtomicU64::new(1),
            sa_password: cfg.sa_password.clone(),
            seed: cfg.seed,
            clock_ms: cfg.clock_ms,
            directory: cfg.entra_directory.clone(),
            fedauth_key: cfg.fedauth_hs256_key.clone(),
            spids: Mutex::new(Default::default()),
        }
    }

    /// The locked catalog.
    pub fn catalog(&self) -> MutexGuard<'_, Catalog> {
        lock(&self.cat)
    }

    /// TLS mode.
    pub fn tls_mode(&self) -> TlsMode {
        self.tls_mode
    }

    /// Updates counters.
    pub fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut lock(&self.counters));
    }

    /// Counts one error.
    pub fn count_error(&self, n: u32) {
        *lock(&self.counters).errors.entry(n).or_default() += 1;
    }

    /// Snapshot of the counters.
    pub fn counters(&self) -> Counters {
        lock(&self.counters).clone()
    }

    /// Lowest free SPID ≥ 51.
    pub fn alloc_spid(&self) -> u16 {
        let mut used = lock(&self.spids);
        let spid = (51..u16::MAX).find(|s| !used.contains(s)).unwrap_or(u16::MAX);
        used.insert(spid);
        spid
    }

    pub(crate) fn register_session(&self, spid: u16, info: SessionInfo) {
        lock(&self.sessions).insert(spid, info);
    }

    pub(crate) fn end_session(&self, spid: u16) {
        lock(&self.sessions).remove(&spid);
        lock(&self.spids).remove(&spid);
    }

    pub(crate) fn set_session_db(&self, spid: u16, db: i32) {
        if let Some(s) = lock(&self.sessions).get_mut(&spid) {
            s.db_id = db;
        }
    }

    pub(crate) fn kill_signal(&self, spid: u16) -> Arc<tokio::sync::Notify> {
        lock(&self.sessions)
            .get(&spid)
            .map(|s| s.kill.clone())
            .unwrap_or_default()
    }

    /// Applies a fault request.
    pub fn set_faults(&self, req: FaultRequest) {
        let mut f = lock(&self.faults);
        if let Some(d) = req.delay_ms {
            f.delay_ms = d;
        }
        if let Some(n) = req.drop_next {
            f.drop_next = n;
        }
        if let Some(r) = req.fail_next {
            f.fail_next = Some(r);
        }
        if let Some(s) = req.refuse_logins_secs {
            f.refuse_until = (s > 0).then(|| Instant::now() + std::time::Duration::from_secs(s));
        }
        if let Some(rule) = req.drop_after {
            f.drop_after = (rule.count > 0).then_some(rule);
        }
    }

    /// Current fault settings.
    pub fn faults(&self) -> FaultState {
        let mut f = lock(&self.faults).clone();
        f.refuse_logins_ms_left = f
            .refuse_until
            .map(|u| u.saturating_duration_since(Instant::now()).as_millis() as u64)
            .unwrap_or(0);
        f
    }

    pub(crate) fn delay_ms(&self) -> u64 {
        lock(&self.faults).delay_ms
    }

    /// Whether the answer to this (already executed) SQL must be lost; counts the rule down.
    pub(crate) fn take_drop_after_fault(&self, sql: &str) -> bool {
        let mut f = lock(&self.faults);
        let Some(rule) = f.drop_after.as_mut() else {
            return false;
        };
        if !sql.to_lowercase().contains(&rule.pattern.to_lowercase()) {
            return false;
        }
        rule.count -= 1;
        if rule.count == 0 {
            f.drop_after = None;
        }
        true
    }

    pub(crate) fn take_drop_fault(&self) -> bool {
        let mut f = lock(&self.faults);
        if f.drop_next > 0 {
            f.drop_next -= 1;
            return true;
        }
        false
    }

    pub(crate) fn take_fail_fault(&self, sql: &str) -> Option<SqlError> {
        let mut f = lock(&self.faults);
        let hit = f
            .fail_next
            .as_ref()
            .is_some_and(|r| sql.to_lowercase().contains(&r.pattern.to_lowercase()));
        if !hit {
            return None;
        }
        let r = f.fail_next.take()?;
        let mut err = SqlError::new(r.error, &[]);
        if crate::errors::message(r.error).is_none() {
            err = SqlError {
                number: r.error,
                level: 16,
                state: 1,
                message: r.message.unwrap_or_else(|| format!("Injected error {}", r.error)),
            };
        } else if let Some(m) = r.message {
            err.message = m;
        }
        Some(err)
    }

    pub(crate) fn logins_refused(&self) -> bool {
        lock(&self.faults)
            .refuse_until
            .is_some_and(|u| Instant::now() < u)
    }

    /// Back to a fresh catalog, zero counters, no faults; every session is closed.
    pub fn reset(&self) {
        for s in lock(&self.sessions).values() {
            s.kill.notify_one();
        }
        *self.catalog() = Catalog {
            directory: self.directory.clone(),
            ..Catalog::with_determinism(&self.sa_password, self.seed, self.clock_ms)
        };
        *lock(&self.counters) = Counters::default();
        *lock(&self.faults) = FaultState::default();
    }

    /// The catalog as JSON.
    pub fn catalog_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.catalog()).unwrap_or(serde_json::Value::Null)
    }

    /// Live sessions as JSON rows.
    pub fn sessions_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = lock(&self.sessions)
            .iter()
            .map(|(spid, s)| serde_json::json!({"spid": spid, "login": s.login_name, "database_id": s.db_id, "host": s.host, "program": s.program}))
            .collect();
        serde_json::Value::Array(rows)
    }
}

/// The server's TLS material.
pub struct TlsSetup {
    /// TLS 1.2 config for the handshake inside PRELOGIN.
    pub inband: Arc<rustls::ServerConfig>,
    /// TLS 1.2/1.3 config for TDS 8.0 strict.
    pub strict: Arc<rustls::ServerConfig>,
    /// The certificate chain as PEM (served at `GET /cert` so clients can trust it).
    pub cert_pem: String,
}

/// Builds the rustls server configs: TLS 1.2 only for the handshake inside PRELOGIN (spec
/// A4.6), and TLS 1.2/1.3 with ALPN `tds/8.0` and no session tickets for TDS 8.0 strict.
pub fn tls_config(cert: Option<(&std::path::Path, &std::path::Path)>) -> Result<TlsSetup, crate::StartError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let tls_err = |e: &dyn std::fmt::Display| crate::StartError::Tls(e.to_string());
    let pem: String;
    let (certs, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) = match cert {
        Some((c, k)) => {
            pem = std::fs::read_to_string(c)
                .map_err(|e| crate::StartError::Tls(format!("{}: {e}", c.display())))?;
            let certs = CertificateDer::pem_file_iter(c)
                .map_err(|e| crate::StartError::Tls(format!("{}: {e}", c.display())))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| crate::StartError::Tls(format!("{}: {e}", c.display())))?;
            let key = PrivateKeyDer::from_pem_file(k)
                .map_err(|e| crate::StartError::Tls(format!("{}: {e}", k.display())))?;
            (certs, key)
        }
        None => {
            let ck =
                rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                    .map_err(|e| tls_err(&e))?;
            let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).map_err(|e| tls_err(&e))?;
            pem = ck.cert.pem();
            (vec![ck.cert.der().clone()], key)
        }
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let inband = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(|e| tls_err(&e))?
        .with_no_client_auth()
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| tls_err(&e))?;
    let mut strict = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| tls_err(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(&e))?;
    strict.alpn_protocols = vec![b"tds/8.0".to_vec()];
    strict.send_tls13_tickets = 0;
    Ok(TlsSetup {
        inband: Arc::new(inband),
        strict: Arc::new(strict),
        cert_pem: pem,
    })
}
