//! Shared test harness. Every SQL test runs against a fresh in-process emulator, or against a
//! real SQL Server when `MSSQL_TEST_URL` is set (an ADO string with a sysadmin login, e.g.
//! `server=tcp:127.0.0.1,1433;user id=sa;password=…;TrustServerCertificate=true`). Against a
//! real server every object name gets a random suffix (see [`Target::n`]) so runs don't collide.
#![allow(dead_code)]

pub mod raw;

use futures::TryStreamExt;
use mssql_emulator::{Config, Emulator, TlsMode};
use tiberius::{AuthMethod, Client, EncryptionLevel, Row};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

/// A tiberius client over tokio.
pub type Conn = Client<Compat<TcpStream>>;

/// Where the test runs.
pub struct Target {
    /// The emulator, when the test owns one.
    pub emu: Option<Emulator>,
    /// sysadmin config.
    pub base: tiberius::Config,
    suffix: String,
}

/// Starts an emulator in `tls` mode, or uses `MSSQL_TEST_URL`.
pub async fn target_with(tls: TlsMode) -> Target {
    if let Ok(url) = std::env::var("MSSQL_TEST_URL") {
        let base =
            tiberius::Config::from_ado_string(&url).expect("MSSQL_TEST_URL is an ADO connection string");
        let mut b = [0u8; 4];
        mssql_emulator::catalog::random_bytes(&mut b);
        let suffix = format!("_{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>());
        return Target {
            emu: None,
            base,
            suffix,
        };
    }
    let emu = Emulator::start(Config {
        tls,
        ..Config::default()
    })
    .await
    .expect("emulator starts");
    let base = tiberius::Config::from_ado_string(&emu.ado_string("sa", mssql_emulator::DEFAULT_SA_PASSWORD))
        .expect("ado string");
    Target {
        emu: Some(emu),
        base,
        suffix: String::new(),
    }
}

/// Default target: TLS offered (mode off), as the provider's tests use it.
pub async fn target() -> Target {
    target_with(TlsMode::Off).await
}

impl Target {
    /// A target for an emulator the test started itself.
    pub fn external(base: tiberius::Config) -> Target {
        Target {
            emu: None,
            base,
            suffix: String::new(),
        }
    }

    /// A name unique to this run (unchanged on the emulator, whose catalog is fresh).
    pub fn n(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }

    /// True when running against the emulator.
    pub fn is_emulator(&self) -> bool {
        self.emu.is_some()
    }

    /// Connects as sa.
    pub async fn sa(&self) -> Conn {
        connect(self.base.clone()).await.expect("sa connects")
    }

    /// Connects as `user`/`password`, optionally to `db`.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        db: Option<&str>,
    ) -> Result<Conn, tiberius::error::Error> {
        let mut cfg = self.base.clone();
        cfg.authentication(AuthMethod::sql_server(user, password));
        if let Some(d) = db {
            cfg.database(d);
        }
        connect(cfg).await
    }

    /// A config with another encryption level.
    pub fn with_encryption(&self, level: EncryptionLevel) -> tiberius::Config {
        let mut cfg = self.base.clone();
        cfg.encryption(level);
        cfg
    }
}

/// Opens a tiberius connection.
pub async fn connect(cfg: tiberius::Config) -> Result<Conn, tiberius::error::Error> {
    let tcp = TcpStream::connect(cfg.get_addr()).await?;
    tcp.set_nodelay(true)?;
    Client::connect(cfg, tcp.compat_write()).await
}

/// Runs a batch and returns all result sets.
pub async fn run(c: &mut Conn, sql: &str) -> Result<Vec<Vec<Row>>, tiberius::error::Error> {
    c.simple_query(sql).await?.into_results().await
}

/// Runs a batch that must succeed.
pub async fn ok(c: &mut Conn, sql: &str) -> Vec<Vec<Row>> {
    match run(c, sql).await {
        Ok(r) => r,
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// Runs a batch that must fail with `number` (and the level and state, when given).
pub async fn err(c: &mut Conn, sql: &str, number: u32) -> tiberius::error::TokenError {
    match run(c, sql).await {
        Ok(_) => panic!("{sql}: expected error {number}, got success"),
        Err(tiberius::error::Error::Server(t)) => {
            assert_eq!(t.code(), number, "{sql}: {}", t.message());
            t
        }
        Err(e) => panic!("{sql}: expected server error {number}, got {e}"),
    }
}

/// First column of the first row as an integer (any integer width).
pub async fn int(c: &mut Conn, sql: &str) -> Option<i64> {
    let rows = ok(c, sql).await;
    let row = rows
        .first()
        .and_then(|r| r.first())
        .unwrap_or_else(|| panic!("{sql}: no row"));
    cell_int(row, 0)
}

/// First column of the first row as a string.
pub async fn text(c: &mut Conn, sql: &str) -> Option<String> {
    let rows = ok(c, sql).await;
    let row = rows
        .first()
        .and_then(|r| r.first())
        .unwrap_or_else(|| panic!("{sql}: no row"));
    row.try_get::<&str, _>(0).ok().flatten().map(str::to_string)
}

/// Number of rows of the first result set.
pub async fn count(c: &mut Conn, sql: &str) -> usize {
    ok(c, sql).await.first().map(|r| r.len()).unwrap_or(0)
}

/// An integer cell of any width.
pub fn cell_int(row: &Row, i: usize) -> Option<i64> {
    if let Ok(v) = row.try_get::<i32, _>(i) {
        return v.map(i64::from);
    }
    if let Ok(v) = row.try_get::<i64, _>(i) {
        return v;
    }
    if let Ok(v) = row.try_get::<i16, _>(i) {
        return v.map(i64::from);
    }
    if let Ok(v) = row.try_get::<u8, _>(i) {
        return v.map(i64::from);
    }
    if let Ok(v) = row.try_get::<bool, _>(i) {
        return v.map(i64::from);
    }
    panic!("column {i} is not an integer: {row:?}")
}

/// Collects a query stream's rows (used with `query` and parameters).
pub async fn rows_of(stream: tiberius::QueryStream<'_>) -> Vec<Row> {
    stream.into_first_result().await.expect("rows")
}

/// Drains a stream, ignoring rows (used to check that it errors).
pub async fn drain(stream: tiberius::QueryStream<'_>) -> Result<(), tiberius::error::Error> {
    let mut s = stream;
    while s.try_next().await?.is_some() {}
    Ok(())
}
