//! Shared harness of the worker's integration tests: a fresh in-process SQL Server emulator
//! per test, or a real SQL Server when `MSSQL_TEST_URL` is set to an ADO connection string
//! with a sysadmin login:
//!
//! ```text
//! MSSQL_TEST_URL='server=tcp:127.0.0.1,1433;user id=sa;password=…;TrustServerCertificate=true'
//! ```
//!
//! Against a real server every object name gets a random suffix ([`Harness::n`]) so runs do
//! not collide, and the checks that need the emulator's catalog dump or counters are skipped.
#![allow(dead_code)]

use apis::{
    identifier::SqlName,
    policies::Policies,
    request::{Desired, SecretKeyRef},
};
use mssql_emulator::{Config, Emulator};
use serde_json::Value;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use worker::{
    exec::{ServerConfig, SqlPool, TlsMode, TlsSettings, credentials::SecretCredentials},
    kinds::Operation,
    metrics::Metrics,
    reconcile::{AlwaysLeader, Item, LeaderGate, Outcome, Reconciler, SecretSource, SecretValue},
    sql::Password,
};

/// In-memory Secrets: `(namespace, name, key)` → value, with a version bumped on every set.
/// (namespace, name, key).
type SecretKey = (String, String, String);

#[derive(Default)]
pub struct MemSecrets {
    values: Mutex<HashMap<SecretKey, (String, u64)>>,
}

impl MemSecrets {
    pub fn set(&self, ns: &str, name: &str, key: &str, value: &str) {
        let mut v = self.values.lock().unwrap();
        let version = v
            .get(&(ns.into(), name.into(), key.into()))
            .map(|x| x.1 + 1)
            .unwrap_or(1);
        v.insert((ns.into(), name.into(), key.into()), (value.into(), version));
    }
}

impl SecretSource for MemSecrets {
    fn get<'a>(
        &'a self,
        r: &'a SecretKeyRef,
    ) -> worker::exec::credentials::BoxFuture<'a, Result<Option<SecretValue>, String>> {
        let found = self
            .values
            .lock()
            .unwrap()
            .get(&(r.namespace.clone(), r.name.clone(), r.key.clone()))
            .cloned();
        Box::pin(async move {
            Ok(found.map(|(v, n)| SecretValue {
                password: Password::new(v),
                version: format!("uid/{n}"),
            }))
        })
    }
}

/// A switchable Lease for tests.
pub struct FlagLeader(pub std::sync::atomic::AtomicBool);

impl LeaderGate for FlagLeader {
    fn is_leader(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

pub struct Harness {
    pub emu: Option<Emulator>,
    pub server: ServerConfig,
    pub admin_user: String,
    pub admin_password: String,
    pub pool: Arc<SqlPool>,
    pub secrets: Arc<MemSecrets>,
    pub metrics: Arc<Metrics>,
    pub reconciler: Reconciler,
    suffix: String,
}

/// Parses the ADO subset the tests document: server=tcp:host,port; user id; password.
fn parse_ado(url: &str) -> (String, u16, String, String) {
    let mut host = "127.0.0.1".to_owned();
    let mut port = 1433;
    let (mut user, mut password) = (String::new(), String::new());
    for part in url.split(';') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "server" | "data source" => {
                let v = v.trim().trim_start_matches("tcp:");
                let (h, p) = v.split_once(',').unwrap_or((v, "1433"));
                host = h.to_owned();
                port = p.parse().expect("port in MSSQL_TEST_URL");
            }
            "user id" | "uid" | "user" => user = v.to_owned(),
            "password" | "pwd" => password = v.to_owned(),
            _ => {}
        }
    }
    (host, port, user, password)
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(Arc::new(AlwaysLeader)).await
    }

    pub async fn start_with(leader: Arc<dyn LeaderGate>) -> Self {
        let (emu, host, port, user, password, suffix) = match std::env::var("MSSQL_TEST_URL") {
            Ok(url) => {
                let (h, p, u, pw) = parse_ado(&url);
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or_default();
                (None, h, p, u, pw, format!("_{nanos:08x}"))
            }
            Err(_) => {
                let emu = Emulator::start(Config::default()).await.expect("emulator starts");
                let addr = emu.addr();
                (
                    Some(emu),
                    addr.ip().to_string(),
                    addr.port(),
                    "sa".to_owned(),
                    mssql_emulator::DEFAULT_SA_PASSWORD.to_owned(),
                    String::new(),
                )
            }
        };
        let server = ServerConfig {
            host,
            port,
            instance: None,
            tls: TlsSettings {
                mode: TlsMode::Optional,
                ca_pem: None,
                hostname: None,
                trust_server_certificate: true,
            },
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
        };
        let metrics = Arc::new(Metrics::new());
        let pool = Arc::new(SqlPool::new(
            server.clone(),
            Arc::new(SecretCredentials::new(
                user.clone(),
                Password::new(password.clone()),
            )),
            metrics.clone(),
        ));
        let secrets = Arc::new(MemSecrets::default());
        let reconciler = Reconciler {
            pool: pool.clone(),
            secrets: secrets.clone(),
            leader,
            metrics: metrics.clone(),
        };
        Self {
            emu,
            server,
            admin_user: user,
            admin_password: password,
            pool,
            secrets,
            metrics,
            reconciler,
            suffix,
        }
    }

    /// A name unique to this run (unchanged on the emulator).
    pub fn n(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }

    /// An item from the `Desired` JSON (`{"kind": …, "spec": …}`).
    pub fn item(&self, name: &str, desired: Value, policies: &[&str], op: Operation) -> Item {
        Item {
            key: format!("wi-{name}"),
            operation: op,
            policies: Policies::parse(policies).expect("policies"),
            external_name: SqlName::new(name).expect("name"),
            desired: Desired::from_work_item(&desired).expect("desired"),
            previous_at_provider: None,
        }
    }

    /// Reconciles one item and carries its atProvider forward, as the status would.
    pub async fn run(&self, item: &mut Item) -> Outcome {
        let out = self
            .reconciler
            .reconcile_all(std::slice::from_ref(item))
            .await
            .remove(0);
        if out.at_provider.is_some() {
            item.previous_at_provider = out.at_provider.clone();
        }
        out
    }

    /// Runs admin SQL directly (to create drift or sessions), failing the test on error.
    pub async fn admin(&self, database: Option<&str>, sql: &str) {
        let db = database.map(|d| SqlName::new(d).unwrap());
        self.pool
            .query(db.as_ref(), "test", sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Opens a separate session as `user` (a tiberius client), for in-use scenarios.
    pub async fn session(
        &self,
        user: &str,
        password: &str,
        database: Option<&str>,
    ) -> Result<tiberius::Client<tokio_util::compat::Compat<tokio::net::TcpStream>>, tiberius::error::Error>
    {
        use tokio_util::compat::TokioAsyncWriteCompatExt;
        let mut c = tiberius::Config::new();
        c.host(&self.server.host);
        c.port(self.server.port);
        c.trust_cert();
        c.database(database.unwrap_or("master"));
        c.authentication(tiberius::AuthMethod::sql_server(user, password));
        let tcp = tokio::net::TcpStream::connect(c.get_addr()).await?;
        tiberius::Client::connect(c, tcp.compat_write()).await
    }

    /// Statement counters of the emulator (None against a real server).
    pub fn counters(&self) -> Option<mssql_emulator::Counters> {
        self.emu.as_ref().map(Emulator::counters)
    }

    pub async fn stop(self) {
        drop(self.reconciler);
        if let Some(emu) = self.emu {
            emu.shutdown().await;
        }
    }
}
