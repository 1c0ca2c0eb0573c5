//! Execution over TDS (tiberius 0.13): one cached connection per database of the one server
//! this worker serves (Azure SQL Database has no `USE`, so a database is a connection),
//! reconnect on I/O and auth errors, one `Routing` redirect, bounded connect and statement
//! timeouts. Everything returns [`SqlError`], already categorized.

pub mod credentials;

use crate::{
    metrics::{Metrics, StatementLabels},
    sql::{
        Param, Row, Statement, Value,
        error::{ErrorKind, SqlError},
    },
};
use apis::identifier::SqlName;
use credentials::{Credential, CredentialSource};
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tiberius::{AuthMethod, Client, ColumnData, EncryptionLevel, ToSql};
use tokio::{net::TcpStream, sync::Mutex};
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

type Conn = Client<Compat<TcpStream>>;
/// One database's connection, behind the lock that serializes its statements.
type Slot = Arc<Mutex<Option<Conn>>>;

/// TLS towards SQL Server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TDS 8.0: TLS before PRELOGIN, always verified.
    Strict,
    /// TLS for everything, fail without it.
    Required,
    /// TLS for everything when the server offers it.
    Optional,
    /// No TLS (the login packet still is, when the server insists).
    Disabled,
}

/// TLS settings.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Mode.
    pub mode: TlsMode,
    /// CA bundle (PEM) to trust, instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Host name expected in the certificate, when it differs from the host.
    pub hostname: Option<String>,
    /// Skip certificate validation (explicit opt-in).
    pub trust_server_certificate: bool,
}

/// The server this worker serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Named instance (resolved through SQL Browser).
    pub instance: Option<String>,
    /// TLS.
    pub tls: TlsSettings,
    /// Bound on TCP connect + TLS + login.
    pub connect_timeout: Duration,
    /// Bound on each server round trip.
    pub statement_timeout: Duration,
}

/// One cached connection per database, behind its own lock: statements on one database run
/// one at a time, different databases in parallel.
pub struct SqlPool {
    server: ServerConfig,
    credentials: Arc<dyn CredentialSource>,
    slots: std::sync::Mutex<HashMap<Option<String>, Slot>>,
    metrics: Arc<Metrics>,
    connects: AtomicU64,
}

impl SqlPool {
    /// A pool with no connection yet.
    pub fn new(server: ServerConfig, credentials: Arc<dyn CredentialSource>, metrics: Arc<Metrics>) -> Self {
        Self {
            server,
            credentials,
            slots: std::sync::Mutex::new(HashMap::new()),
            metrics,
            connects: AtomicU64::new(0),
        }
    }

    /// How many connections were opened so far (tests assert reuse with it).
    pub fn connections_opened(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    fn slot(&self, database: Option<&SqlName>) -> Slot {
        let key = database.map(|d| d.as_str().to_owned());
        let mut slots = match self.slots.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        slots.entry(key).or_default().clone()
    }

    /// Closes the cached connection to `database`, if any. Our own session in a database
    /// counts as "in use" for `DROP DATABASE` (3702) and blocks `ALTER DATABASE … COLLATE`,
    /// so the reconciler lets go of it before changing the database itself.
    pub async fn release(&self, database: &SqlName) {
        let slot = self.slot(Some(database));
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.take() {
            self.metrics.open_connections.dec();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.close()).await;
        }
    }

    /// Closes cached connections to databases none of the worker's objects live in any more.
    /// An idle session of ours would make `DROP DATABASE` fail with 3702 for whoever drops a
    /// database we stopped managing (an orphaned or imported one).
    pub async fn retain(&self, databases: &std::collections::HashSet<String>) {
        let unused: Vec<(String, Slot)> = {
            let slots = match self.slots.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            slots
                .iter()
                .filter_map(|(key, slot)| match key {
                    Some(db) if !databases.contains(db) => Some((db.clone(), slot.clone())),
                    _ => None,
                })
                .collect()
        };
        for (database, slot) in unused {
            // A slot in use right now belongs to work on that database: leave it.
            let Ok(mut guard) = slot.try_lock() else { continue };
            if let Some(conn) = guard.take() {
                self.metrics.open_connections.dec();
                tracing::debug!(%database, "closing the connection to a database with no objects left");
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.close()).await;
            }
        }
    }

    /// Runs a read (observe) batch with parameters; returns every result set. Retried once
    /// on a fresh connection when the cached one turns out broken or the login is refused.
    pub async fn query(
        &self,
        database: Option<&SqlName>,
        label: &'static str,
        sql: &str,
        params: &[Param],
    ) -> Result<Vec<Vec<Row>>, SqlError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.run(database, label, sql, params, &|s| s.to_owned()).await {
                Err(e) if attempt == 1 && e.breaks_connection() => continue,
                other => return other,
            }
        }
    }

    /// Runs one mutation. Not retried: the next reconcile re-observes and re-plans, which is
    /// the only safe retry for DDL whose outcome is unknown.
    pub async fn execute(&self, statement: &Statement) -> Result<(), SqlError> {
        let scrub = |s: &str| statement.scrub(s);
        self.run(
            statement.database.as_ref(),
            statement.kind,
            &statement.sql,
            &statement.params,
            &scrub,
        )
        .await
        .map(drop)
    }

    /// `SELECT 1` on the `master` connection (readiness).
    pub async fn ping(&self) -> Result<(), SqlError> {
        self.query(None, "ping", "SELECT 1 AS one", &[]).await.map(drop)
    }

    async fn run(
        &self,
        database: Option<&SqlName>,
        label: &'static str,
        sql: &str,
        params: &[Param],
        scrub: &(dyn Fn(&str) -> String + Sync),
    ) -> Result<Vec<Vec<Row>>, SqlError> {
        let slot = self.slot(database);
        let mut guard = slot.lock().await;
        if guard.is_none() {
            *guard = Some(self.connect(database).await?);
            self.metrics.open_connections.inc();
        }
        let Some(conn) = guard.as_mut() else {
            return Err(SqlError::new(ErrorKind::Other, "no connection"));
        };
        let started = Instant::now();
        let result = run_on(conn, sql, params, self.server.statement_timeout).await;
        self.metrics
            .sql_latency
            .get_or_create(&StatementLabels {
                statement: label.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(rows) => Ok(rows),
            Err(e) => {
                let e = match e {
                    RunError::Tiberius(t) => SqlError::from_tiberius(&t, scrub),
                    RunError::Timeout => SqlError::new(
                        ErrorKind::Transient,
                        format!("no answer within {:?}", self.server.statement_timeout),
                    ),
                };
                self.metrics.sql_error(e.number, e.kind.label());
                if e.breaks_connection() {
                    // A timed-out or broken stream is in an unknown state: never reuse it.
                    *guard = None;
                    self.metrics.open_connections.dec();
                    if e.kind == ErrorKind::AuthFailed {
                        let _ = self.credentials.refresh().await;
                    }
                }
                Err(e)
            }
        }
    }

    fn tiberius_config(&self, database: Option<&SqlName>, credential: Credential) -> tiberius::Config {
        let s = &self.server;
        let mut c = tiberius::Config::new();
        c.host(&s.host);
        c.port(s.port);
        if let Some(i) = &s.instance {
            c.instance_name(i);
        }
        c.database(database.map(SqlName::as_str).unwrap_or("master"));
        c.application_name("sqlserver-worker");
        c.encryption(match s.tls.mode {
            TlsMode::Strict => EncryptionLevel::Strict,
            TlsMode::Required => EncryptionLevel::Required,
            TlsMode::Optional => EncryptionLevel::On,
            TlsMode::Disabled => EncryptionLevel::NotSupported,
        });
        // trust_cert() and a CA are exclusive (tiberius panics on both); config validation
        // rejects the combination, and trust wins here as a second line.
        if s.tls.trust_server_certificate {
            c.trust_cert();
        } else if let Some(ca) = &s.tls.ca_pem {
            c.trust_cert_ca_bundle(ca.clone());
        }
        if let Some(h) = &s.tls.hostname {
            c.hostname_in_certificate(h);
        }
        c.handshake_timeout(Some(s.connect_timeout));
        c.command_timeout(Some(s.statement_timeout));
        c.authentication(match credential {
            Credential::SqlLogin { user, password } => AuthMethod::sql_server(user, password.expose()),
            Credential::Token(t) => AuthMethod::aad_token(t.expose()),
        });
        c
    }

    async fn connect(&self, database: Option<&SqlName>) -> Result<Conn, SqlError> {
        match self.connect_once(database).await {
            // A refused login with a source that can fetch anew (a rotated secret, a token the
            // server considers expired): one more try with fresh credentials, right away.
            Err(e)
                if e.kind == ErrorKind::AuthFailed
                    && e.number.is_some()
                    && self.credentials.refreshable() =>
            {
                tracing::info!(
                    source = self.credentials.label(),
                    "login refused; retrying once with freshly fetched credentials"
                );
                self.connect_once(database).await
            }
            other => other,
        }
    }

    async fn connect_once(&self, database: Option<&SqlName>) -> Result<Conn, SqlError> {
        let credential = self
            .credentials
            .credential()
            .await
            .map_err(|e| SqlError::new(ErrorKind::AuthFailed, e.to_string()))?;
        let mut config = self.tiberius_config(database, credential);
        let mut redirected = false;
        loop {
            let started = Instant::now();
            let attempt = tokio::time::timeout(self.server.connect_timeout, async {
                let tcp = if self.server.instance.is_some() {
                    use tiberius::SqlBrowser;
                    TcpStream::connect_named(&config).await?
                } else {
                    // Say which server could not be reached: this text ends up in the
                    // resource's Synced condition while SQL Server is down.
                    TcpStream::connect(config.get_addr())
                        .await
                        .map_err(|e| tiberius::error::Error::Io {
                            kind: e.kind(),
                            message: format!("cannot connect to SQL Server at {}: {e}", config.get_addr()),
                        })?
                };
                tcp.set_nodelay(true).ok();
                Client::connect(config.clone(), tcp.compat_write()).await
            })
            .await;
            self.metrics
                .sql_latency
                .get_or_create(&StatementLabels {
                    statement: "connect".into(),
                })
                .observe(started.elapsed().as_secs_f64());
            match attempt {
                Ok(Ok(client)) => {
                    self.connects.fetch_add(1, Ordering::Relaxed);
                    return Ok(client);
                }
                // Azure SQL gateway "Redirect" policy and failover groups: one hop, same auth.
                Ok(Err(tiberius::error::Error::Routing { host, port })) if !redirected => {
                    tracing::info!(%host, port, "SQL Server redirected the connection");
                    redirected = true;
                    config.host(host);
                    config.port(port);
                }
                Ok(Err(e)) => {
                    let e = SqlError::from_tiberius(&e, &|s| s.to_owned());
                    self.metrics.sql_error(e.number, e.kind.label());
                    if e.kind == ErrorKind::AuthFailed {
                        let _ = self.credentials.refresh().await;
                    }
                    return Err(e);
                }
                Err(_) => {
                    self.metrics.sql_error(None, ErrorKind::Transient.label());
                    return Err(SqlError::new(
                        ErrorKind::Transient,
                        format!(
                            "could not connect to {}:{} within {:?}",
                            self.server.host, self.server.port, self.server.connect_timeout
                        ),
                    ));
                }
            }
        }
    }
}

enum RunError {
    Tiberius(tiberius::error::Error),
    Timeout,
}

async fn run_on(
    conn: &mut Conn,
    sql: &str,
    params: &[Param],
    timeout: Duration,
) -> Result<Vec<Vec<Row>>, RunError> {
    let fut = async {
        let stream = if params.is_empty() {
            conn.simple_query(sql).await?
        } else {
            let values: Vec<&dyn ToSql> = params
                .iter()
                .map(|p| match p {
                    Param::Text(s) => s as &dyn ToSql,
                    Param::Int(i) => i as &dyn ToSql,
                })
                .collect();
            conn.query(sql, &values).await?
        };
        stream.into_results().await
    };
    // tiberius bounds each round trip itself; this bounds the whole exchange as well.
    match tokio::time::timeout(timeout + Duration::from_secs(1), fut).await {
        Ok(Ok(sets)) => Ok(sets
            .into_iter()
            .map(|set| set.into_iter().map(row).collect())
            .collect()),
        Ok(Err(e)) => Err(RunError::Tiberius(e)),
        Err(_) => Err(RunError::Timeout),
    }
}

fn row(r: tiberius::Row) -> Row {
    let names: Vec<String> = r.columns().iter().map(|c| c.name().to_owned()).collect();
    Row(names.into_iter().zip(r.into_iter().map(value)).collect())
}

fn value(d: ColumnData<'static>) -> Value {
    match d {
        ColumnData::U8(Some(v)) => Value::Int(v.into()),
        ColumnData::I16(Some(v)) => Value::Int(v.into()),
        ColumnData::I32(Some(v)) => Value::Int(v.into()),
        ColumnData::I64(Some(v)) => Value::Int(v),
        ColumnData::Bit(Some(v)) => Value::Int(v.into()),
        ColumnData::String(Some(s)) => Value::Text(s.into_owned()),
        ColumnData::Binary(Some(b)) => Value::Bytes(b.into_owned()),
        ColumnData::Guid(Some(g)) => Value::Text(g.to_string()),
        ColumnData::DateTime(Some(dt)) => Value::Text(iso_datetime(dt.days().into(), dt.seconds_fragments())),
        _ => Value::Null,
    }
}

/// `datetime` (days since 1900-01-01, 1/300 s ticks) as ISO 8601 UTC-less local server time.
pub fn iso_datetime(days: i64, fragments: u32) -> String {
    // Civil-from-days (Howard Hinnant's algorithm), shifted from 1970 to 1900.
    let z = days - 25567 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let millis = u64::from(fragments) * 10 / 3;
    let secs = millis / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        millis % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn datetime_rendering() {
        assert_eq!(super::iso_datetime(0, 0), "1900-01-01T00:00:00.000");
        // 2026-11-25 is 46_349 days after 1900-01-01; 12:00:00.5 = 43_200.5 s * 300.
        assert_eq!(super::iso_datetime(46_349, 12_960_150), "2026-11-25T12:00:00.500");
    }
}
