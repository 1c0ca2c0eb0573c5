//! Load and hostile-input checks: 50 concurrent connections issuing DDL, bounded property
//! tests feeding arbitrary bytes to the packet, PRELOGIN, LOGIN7 and RPC parsers and arbitrary
//! text to the T-SQL parser and engine, and the admin interface (counters, faults, dump, reset).

mod common;

use common::*;
use mssql_emulator::engine::{Exec, Session};
use mssql_emulator::sql::parser::parse_batch;
use mssql_emulator::tds::{self, Reader};
use mssql_emulator::{Config, Emulator, FaultRequest, TlsMode};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PW: &str = "Str0ng!Passw0rd";

/// Fifty clients at once, each creating a login, a database, a user and a grant. Any protocol
/// error (or a lost statement) fails the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_connections_issue_ddl() {
    let t = std::sync::Arc::new(target().await);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = t.sa().await;
            let (l, d) = (t.n(&format!("conc_l{i}")), t.n(&format!("conc_d{i}")));
            ok(&mut c, &format!("CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'")).await;
            ok(&mut c, &format!("CREATE DATABASE [{d}]")).await;
            ok(&mut c, &format!("USE [{d}]; CREATE USER [{l}] FOR LOGIN [{l}]; ALTER ROLE db_datareader ADD MEMBER [{l}]; GRANT CREATE TABLE TO [{l}]")).await;
            let n = int(&mut c, &format!("SELECT COUNT(*) FROM sys.database_permissions WHERE grantee_principal_id = USER_ID('{l}')")).await;
            assert_eq!(n, Some(2), "CONNECT and CREATE TABLE");
            let mut as_login = t.login(&l, PW, Some(&d)).await.expect("login as the new login");
            assert_eq!(text(&mut as_login, "SELECT DB_NAME()").await, Some(d));
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    if let Some(emu) = &t.emu {
        let c = emu.counters();
        assert_eq!(c.logins, 100, "50 sa + 50 new logins");
        assert_eq!(c.statements.get("CREATE LOGIN"), Some(&50));
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let json = emu.catalog_json();
        assert_eq!(json["databases"].as_array().map(Vec::len), Some(54));
    }
}

fn engine_run(sql: &str) {
    let mut cat = mssql_emulator::catalog::Catalog::new("x");
    let sessions = std::sync::Mutex::new(Default::default());
    let ident = mssql_emulator::Identity::default();
    let next = std::sync::atomic::AtomicU64::new(1);
    let mut sess = Session::new(51, 1, "sa", 1);
    let mut ex = Exec::new(&mut cat, &mut sess, &sessions, &ident, &next);
    ex.run_batch(sql);
}

/// Words that steer random text into the parser's deeper paths.
fn sqlish() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "CREATE",
        "ALTER",
        "DROP",
        "LOGIN",
        "USER",
        "ROLE",
        "SCHEMA",
        "DATABASE",
        "SERVER",
        "GRANT",
        "DENY",
        "REVOKE",
        "ON",
        "TO",
        "FROM",
        "WITH",
        "PASSWORD",
        "=",
        "'p'",
        "N'x'",
        "0x00",
        "[a]",
        "b",
        "@v",
        "@@SPID",
        "(",
        ")",
        ",",
        ";",
        ".",
        "::",
        "IF",
        "NOT",
        "EXISTS",
        "SELECT",
        "*",
        "WHERE",
        "AND",
        "OR",
        "IN",
        "LIKE",
        "IS",
        "NULL",
        "BEGIN",
        "END",
        "TRAN",
        "COMMIT",
        "ROLLBACK",
        "EXEC",
        "DECLARE",
        "SET",
        "nvarchar(10)",
        "1",
        "-",
        "+",
        "CASE",
        "WHEN",
        "THEN",
        "ELSE",
        "sys.databases",
        "JOIN",
        "ORDER",
        "BY",
        "TOP",
        "ADD",
        "MEMBER",
        "AUTHORIZATION",
        "QUOTENAME",
        "CAST",
        "AS",
        "int",
        "USE",
        "master",
        "TRY",
        "CATCH",
        "THROW",
        "GROUP",
        "HAVING",
        "COUNT(*)",
        "ERROR_NUMBER()",
        "@@ROWCOUNT",
        "WAITFOR",
        "DELAY",
    ]);
    prop::collection::vec(words, 0..40).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn packet_header_and_prelogin_parsers_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = tds::parse_header(&b);
        let _ = tds::parse_prelogin(&b);
    }

    #[test]
    fn login7_parser_never_panics(b in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = tds::parse_login7(&b);
    }

    #[test]
    fn login7_parser_survives_corrupted_valid_logins(idx in any::<prop::sample::Index>(), byte in any::<u8>(), cut in 0usize..400) {
        // Start from a valid LOGIN7 so offsets and lengths are plausible, then break one byte.
        let mut b = common::raw::login7("user", "pw", "db", 4096, "app");
        let i = idx.index(b.len());
        b[i] = byte;
        b.truncate(b.len().saturating_sub(cut % 8));
        let _ = tds::parse_login7(&b);
    }

    #[test]
    fn rpc_and_all_headers_parsers_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut r = Reader::new(&b);
        if tds::skip_all_headers(&mut r).is_ok() {
            let _ = tds::parse_rpc(&mut r);
        }
        let mut r = Reader::new(&b);
        let _ = tds::parse_rpc(&mut r);
    }

    #[test]
    fn tsql_parser_never_panics_on_arbitrary_text(s in "\\PC{0,200}") {
        let _ = parse_batch(&s);
    }

    #[test]
    fn tsql_parser_and_engine_never_panic_on_sql_like_text(s in sqlish()) {
        let _ = parse_batch(&s);
        engine_run(&s);
    }
}

/// Garbage on the socket ends that connection only; the server keeps serving.
#[tokio::test]
async fn garbage_connections_do_not_hurt_the_server() {
    let emu = Emulator::start(Config {
        tls: TlsMode::Off,
        ..Config::default()
    })
    .await
    .expect("start");
    let inputs: Vec<Vec<u8>> = vec![
        vec![0xFF; 64],
        vec![0x12, 0x01, 0x00, 0x04],
        vec![0x12, 0x01, 0x00, 0x20, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF],
        vec![0x10, 0x01, 0x00, 0x10, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5],
    ];
    for bytes in inputs {
        let mut s = tokio::net::TcpStream::connect(emu.addr()).await.expect("connect");
        let _ = s.write_all(&bytes).await;
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut sink)).await;
    }
    let base = tiberius::Config::from_ado_string(&emu.ado_string("sa", mssql_emulator::DEFAULT_SA_PASSWORD))
        .expect("ado");
    let mut c = connect(base).await.expect("still serving");
    assert_eq!(int(&mut c, "SELECT 1").await, Some(1));
}

async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("admin connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out.split(' ').nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The admin interface: counters, each fault, the catalog dump and reset.
#[tokio::test]
async fn admin_interface_counters_faults_dump_reset() {
    let emu = Emulator::start(Config::default()).await.expect("start");
    let base = tiberius::Config::from_ado_string(&emu.ado_string("sa", mssql_emulator::DEFAULT_SA_PASSWORD))
        .expect("ado");
    let mut c = connect(base.clone()).await.expect("connect");
    ok(&mut c, &format!("CREATE LOGIN adm WITH PASSWORD = '{PW}'")).await;
    let _ = run(&mut c, "DROP LOGIN nope").await;
    let (st, body) = http(emu.admin_addr(), "GET", "/counters", "").await;
    assert_eq!(st, 200);
    let counters: mssql_emulator::Counters = serde_json::from_str(&body).expect("counters JSON");
    assert_eq!(counters.logins, 1);
    assert_eq!(counters.batches, 2);
    assert_eq!(counters.statements.get("CREATE LOGIN"), Some(&1));
    assert_eq!(counters.errors.get(&15151), Some(&1));

    // fail_next: the matching statement fails once with the table's error.
    let (st, _) = http(
        emu.admin_addr(),
        "POST",
        "/faults",
        r#"{"fail_next": {"pattern": "create database", "error": 1801}}"#,
    )
    .await;
    assert_eq!(st, 200);
    ok(&mut c, "SELECT 1").await;
    let e = err(&mut c, "CREATE DATABASE f1", 1801).await;
    assert_eq!(e.state(), 3);
    ok(&mut c, "CREATE DATABASE f1").await;

    // drop_next: the connection is closed instead of answering.
    emu.set_faults(FaultRequest {
        drop_next: Some(1),
        ..Default::default()
    });
    assert!(run(&mut c, "SELECT 1").await.is_err());
    let mut c = connect(base.clone()).await.expect("reconnect");
    ok(&mut c, "SELECT 1").await;

    // drop_after: the matching statement runs, then the connection closes without an
    // answer; requests that do not match are answered.
    let (st, _) = http(
        emu.admin_addr(),
        "POST",
        "/faults",
        r#"{"drop_after": {"pattern": "create database", "count": 1}}"#,
    )
    .await;
    assert_eq!(st, 200);
    ok(&mut c, "SELECT 1").await;
    assert!(run(&mut c, "CREATE DATABASE lost_answer").await.is_err());
    assert!(
        emu.catalog_json()["databases"]
            .as_array()
            .expect("databases")
            .iter()
            .any(|d| d["name"] == "lost_answer"),
        "the statement ran although its answer was lost"
    );
    let (_, body) = http(emu.admin_addr(), "GET", "/faults", "").await;
    let state: mssql_emulator::FaultState = serde_json::from_str(&body).expect("faults JSON");
    assert_eq!(state.drop_after, None, "the rule is used up");
    let mut c = connect(base.clone()).await.expect("reconnect");
    ok(&mut c, "CREATE DATABASE answered").await;

    // refuse_logins: 18456 until it expires (here: cleared again explicitly).
    let (st, _) = http(
        emu.admin_addr(),
        "POST",
        "/faults",
        r#"{"refuse_logins_secs": 60}"#,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        connect(base.clone()).await.err().and_then(|e| e.code()),
        Some(18456)
    );
    emu.set_faults(FaultRequest {
        refuse_logins_secs: Some(0),
        ..Default::default()
    });
    connect(base.clone()).await.expect("logins accepted again");

    // delay: applies to each statement; zero turns it off. Only checks that it still answers.
    emu.set_faults(FaultRequest {
        delay_ms: Some(20),
        ..Default::default()
    });
    assert_eq!(int(&mut c, "SELECT 2").await, Some(2));
    emu.set_faults(FaultRequest {
        delay_ms: Some(0),
        ..Default::default()
    });

    // An unparsable fault request is a 400.
    assert_eq!(http(emu.admin_addr(), "POST", "/faults", "{nope").await.0, 400);

    // Catalog dump, then reset.
    let (_, dump) = http(emu.admin_addr(), "GET", "/catalog", "").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("catalog JSON");
    assert!(
        dump["server_principals"]
            .as_array()
            .expect("principals")
            .iter()
            .any(|p| p["name"] == "adm")
    );
    assert!(
        dump["databases"]
            .as_array()
            .expect("dbs")
            .iter()
            .any(|d| d["name"] == "f1")
    );
    let (st, _) = http(emu.admin_addr(), "POST", "/reset", "").await;
    assert_eq!(st, 204);
    assert!(
        !emu.catalog_json()["server_principals"]
            .as_array()
            .expect("principals")
            .iter()
            .any(|p| p["name"] == "adm")
    );
    assert_eq!(emu.counters().logins, 0);
    emu.shutdown().await;
}

/// With a seed and a fixed clock, the same statements give the same catalog dump (SIDs,
/// salts and dates included), so other crates can compare dumps across runs.
#[tokio::test]
async fn seeded_emulators_produce_identical_catalogs() {
    let mut dumps = Vec::new();
    for _ in 0..2 {
        let cfg = Config {
            seed: Some(42),
            clock_ms: Some(1_700_000_000_000),
            ..Config::default()
        };
        let emu = Emulator::start(cfg).await.expect("start");
        let base =
            tiberius::Config::from_ado_string(&emu.ado_string("sa", mssql_emulator::DEFAULT_SA_PASSWORD))
                .expect("ado");
        let mut c = connect(base).await.expect("connect");
        ok(&mut c, &format!("CREATE LOGIN det WITH PASSWORD = '{PW}'; CREATE DATABASE detdb; USE detdb; CREATE USER u WITHOUT LOGIN")).await;
        dumps.push(emu.catalog_json());
        emu.shutdown().await;
    }
    assert_eq!(dumps[0], dumps[1]);
    let unseeded = Emulator::start(Config::default()).await.expect("start");
    assert_ne!(
        unseeded.catalog_json()["server_principals"][0]["sql"]["hash"],
        dumps[0]["server_principals"][0]["sql"]["hash"],
        "salts differ without a seed"
    );
}

/// The optional state file: written on shutdown, loaded on the next start (logins keep their
/// password hashes, databases their principals).
#[tokio::test]
async fn state_file_survives_a_restart() {
    let mut b = [0u8; 8];
    mssql_emulator::catalog::random_bytes(&mut b);
    let path = std::env::temp_dir().join(format!(
        "mssql-emulator-state-{}.json",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ));
    let cfg = || Config {
        state_file: Some(path.clone()),
        ..Config::default()
    };
    let emu = Emulator::start(cfg()).await.expect("start");
    let base = tiberius::Config::from_ado_string(&emu.ado_string("sa", mssql_emulator::DEFAULT_SA_PASSWORD))
        .expect("ado");
    let mut c = connect(base).await.expect("connect");
    ok(&mut c, &format!("CREATE LOGIN keep WITH PASSWORD = '{PW}'; CREATE DATABASE keepdb; USE keepdb; CREATE USER keep FOR LOGIN keep")).await;
    drop(c);
    emu.shutdown().await;
    let emu = Emulator::start(cfg()).await.expect("restart");
    let base = tiberius::Config::from_ado_string(&emu.ado_string("keep", PW)).expect("ado");
    let mut k = connect(base)
        .await
        .expect("the saved login works after the restart");
    ok(&mut k, "USE keepdb").await;
    assert_eq!(text(&mut k, "SELECT USER_NAME()").await.as_deref(), Some("keep"));
    emu.shutdown().await;
    std::fs::remove_file(&path).expect("remove state file");
}
