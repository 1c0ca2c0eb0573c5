//! Spec C2 protocol cases 1–20. Cases that inspect bytes on the wire use the raw client in
//! `common/raw.rs` and always run on the emulator (they pin the wire format the spec derived
//! from real servers and client sources); the others go through tiberius 0.13 and honour
//! `MSSQL_TEST_URL`.

mod common;

use common::raw::{self, Raw, Tok, dones, s16, tokens};
use common::*;
use mssql_emulator::{Config, Emulator, TlsMode};
use tiberius::EncryptionLevel;

async fn emulator(tls: TlsMode) -> Emulator {
    Emulator::start(Config {
        tls,
        ..Config::default()
    })
    .await
    .expect("start")
}

const SA: &str = mssql_emulator::DEFAULT_SA_PASSWORD;

/// C2.1: mode none → ENCRYPTION=2, MARS=0, THREADID len 0, INSTOPT 0, reply type 0x04; a
/// tiberius DANGER_PLAINTEXT login works.
#[tokio::test]
async fn c01_prelogin_reply_shape_and_plaintext_login() {
    let emu = emulator(TlsMode::None).await;
    let mut r = Raw::connect(emu.addr()).await;
    r.send(0x12, 0, &raw::prelogin(2)).await;
    let m = r.recv().await.expect("reply");
    assert_eq!(m.packets[0].0, 0x04, "PRELOGIN reply is a tabular-result message");
    let p = &m.payload;
    // Walk the option table: token → data.
    let mut opts = std::collections::BTreeMap::new();
    let mut i = 0;
    while p[i] != 0xFF {
        let off = u16::from_be_bytes([p[i + 1], p[i + 2]]) as usize;
        let len = u16::from_be_bytes([p[i + 3], p[i + 4]]) as usize;
        opts.insert(p[i], p[off..off + len].to_vec());
        i += 5;
    }
    assert_eq!(opts.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert_eq!(opts[&1], vec![2]);
    assert_eq!(opts[&2], vec![0]);
    assert!(opts[&3].is_empty());
    assert_eq!(opts[&4], vec![0]);
    assert_eq!(opts[&0], vec![0x10, 0x00, 0x10, 0x27, 0, 0], "16.0.4135");

    let t = target_for(&emu);
    let mut c = connect(t.with_encryption(EncryptionLevel::NotSupported))
        .await
        .expect("plaintext login");
    assert_eq!(int(&mut c, "SELECT 1").await, Some(1));
}

fn target_for(emu: &Emulator) -> Target {
    let base = tiberius::Config::from_ado_string(&emu.ado_string("sa", SA)).expect("ado");
    Target::external(base)
}

/// C2.2 and C2.3: the ENCRYPTION reply for OFF and REQ clients in mode off, and both tiberius
/// settings log in and query.
#[tokio::test]
async fn c02_c03_encryption_replies_and_tls_logins() {
    let emu = emulator(TlsMode::Off).await;
    // (client byte, expected reply): OFF → OFF (login-only TLS), REQ → ON (full TLS),
    // NOT_SUP → NOT_SUP.
    for (client, want) in [(0u8, 0u8), (3, 1), (1, 1), (2, 2)] {
        let mut r = Raw::connect(emu.addr()).await;
        r.send(0x12, 0, &raw::prelogin(client)).await;
        let m = r.recv().await.expect("reply");
        let p = &m.payload;
        let off = u16::from_be_bytes([p[6], p[7]]) as usize;
        assert_eq!(p[off], want, "client {client}");
    }
    let t = target_for(&emu);
    for level in [
        EncryptionLevel::Off,
        EncryptionLevel::Required,
        EncryptionLevel::On,
    ] {
        let mut c = connect(t.with_encryption(level))
            .await
            .unwrap_or_else(|e| panic!("{level:?}: {e}"));
        assert_eq!(int(&mut c, "SELECT 1").await, Some(1), "{level:?}");
        assert_eq!(text(&mut c, "SELECT DB_NAME()").await.as_deref(), Some("master"));
    }
}

/// C2.4: tiberius Encrypt=false against a server without TLS fails in its handshake: the
/// client still starts TLS on NOT_SUP. Pinning the quirk keeps us from "fixing" it server-side.
#[tokio::test]
async fn c04_tiberius_encrypt_false_against_no_tls_fails() {
    let emu = emulator(TlsMode::None).await;
    let t = target_for(&emu);
    let r = connect(t.with_encryption(EncryptionLevel::Off)).await;
    assert!(r.is_err(), "tiberius Off against mode none must fail");
}

/// C2.5 (tiberius half): a 512-byte packet size with a long application name makes LOGIN7 span
/// several packets, all inside TLS in login-only mode; the login still succeeds.
#[tokio::test]
async fn c05_multi_packet_login7_in_login_only_tls() {
    let emu = emulator(TlsMode::Off).await;
    let t = target_for(&emu);
    let mut cfg = t.with_encryption(EncryptionLevel::Off);
    cfg.packet_size(512);
    cfg.application_name("a".repeat(400));
    let mut c = connect(cfg).await.expect("multi-packet login");
    assert_eq!(int(&mut c, "SELECT 1").await, Some(1));
}

/// C2.6: login response token order.
#[tokio::test]
async fn c06_login_token_order() {
    let emu = emulator(TlsMode::None).await;
    let mut r = Raw::connect(emu.addr()).await;
    let (_, login) = r.handshake(2, "sa", SA, "").await;
    let t = tokens(&login.payload);
    let shape: Vec<String> = t
        .iter()
        .map(|x| match x {
            Tok::Env(ty, new, old) => match ty {
                7 => format!("ENV7 old={}", old.len()),
                4 => format!("ENV4 {}", s16(new)),
                _ => format!("ENV{ty}"),
            },
            Tok::Info(n, st, _) => format!("INFO {n}/{st}"),
            Tok::LoginAck(v) => format!("LOGINACK {v:08X}"),
            Tok::Done(_, st, _, _) => format!("DONE {st:04X}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            "ENV1",
            "INFO 5701/2",
            "ENV7 old=0",
            "ENV2",
            "INFO 5703/1",
            "LOGINACK 74000004",
            "ENV4 4096",
            "DONE 0000"
        ]
    );
    assert!(login.packets.iter().all(|p| p.0 == 0x04));
}

/// C2.7: wrong password → 18456 class 14 state 1, DONE 0x0002, connection closed.
#[tokio::test]
async fn c07_wrong_password() {
    let emu = emulator(TlsMode::None).await;
    let mut r = Raw::connect(emu.addr()).await;
    let (_, login) = r.handshake(2, "sa", "wrong", "").await;
    let t = tokens(&login.payload);
    assert_eq!(
        t[0],
        Tok::Error(18456, 1, 14, "Login failed for user 'sa'.".into())
    );
    assert_eq!(dones(&t), vec![(0xFD, 0x0002)]);
    assert!(r.closed().await, "the server closes the connection");

    let t = target().await;
    let e = t
        .login("sa", "wrong", None)
        .await
        .err()
        .unwrap_or_else(|| panic!("login fails"));
    assert_eq!(e.code(), Some(18456));
}

/// C2.8: a missing database in LOGIN7 → 4060 then 18456.
#[tokio::test]
async fn c08_missing_login_database() {
    let emu = emulator(TlsMode::None).await;
    let mut r = Raw::connect(emu.addr()).await;
    let (_, login) = r.handshake(2, "sa", SA, "nope").await;
    let errs: Vec<u32> = tokens(&login.payload)
        .iter()
        .filter_map(|x| if let Tok::Error(n, ..) = x { Some(*n) } else { None })
        .collect();
    assert_eq!(errs, vec![4060, 18456]);

    let t = target().await;
    let e = t
        .login("sa", SA, Some("nope"))
        .await
        .err()
        .unwrap_or_else(|| panic!("fails"));
    assert_eq!(e.code(), Some(4060), "tiberius reports the first error");
}

/// C2.9: a disabled login gets 18470; after ENABLE it connects.
#[tokio::test]
async fn c09_disabled_login() {
    let t = target().await;
    let mut sa = t.sa().await;
    let l = t.n("L9");
    ok(
        &mut sa,
        &format!("CREATE LOGIN [{l}] WITH PASSWORD = 'Str0ng!Passw0rd'; ALTER LOGIN [{l}] DISABLE"),
    )
    .await;
    let e = t
        .login(&l, "Str0ng!Passw0rd", None)
        .await
        .err()
        .unwrap_or_else(|| panic!("disabled"));
    assert_eq!(e.code(), Some(18470));
    ok(&mut sa, &format!("ALTER LOGIN [{l}] ENABLE")).await;
    t.login(&l, "Str0ng!Passw0rd", None)
        .await
        .expect("enabled login connects");
}

/// C2.10: the default database was dropped → 4064 (+ 18456).
#[tokio::test]
async fn c10_default_database_dropped() {
    let t = target().await;
    let mut sa = t.sa().await;
    let (d, l) = (t.n("d10"), t.n("L10"));
    ok(&mut sa, &format!("CREATE DATABASE [{d}]")).await;
    ok(
        &mut sa,
        &format!("CREATE LOGIN [{l}] WITH PASSWORD = 'Str0ng!Passw0rd', DEFAULT_DATABASE = [{d}]"),
    )
    .await;
    ok(
        &mut sa,
        &format!("USE [{d}]; CREATE USER [{l}] FOR LOGIN [{l}]; USE master"),
    )
    .await;
    t.login(&l, "Str0ng!Passw0rd", None)
        .await
        .expect("default database works");
    ok(&mut sa, &format!("DROP DATABASE [{d}]")).await;
    let e = t
        .login(&l, "Str0ng!Passw0rd", None)
        .await
        .err()
        .unwrap_or_else(|| panic!("fails"));
    assert_eq!(e.code(), Some(4064));
}

/// C2.11: `SELECT 1` → one int NOT NULL column (0x38) with an empty name, a ROW, DONE(0x10, 0xC1, 1).
#[tokio::test]
async fn c11_select_1_on_the_wire() {
    let emu = emulator(TlsMode::None).await;
    let mut r = Raw::connect(emu.addr()).await;
    r.handshake(2, "sa", SA, "").await;
    let m = r.batch("SELECT 1", 0).await;
    let t = tokens(&m.payload);
    assert_eq!(t[0], Tok::Cols(vec![(0x38, String::new())]));
    assert_eq!(t[1], Tok::Row(vec![Some(vec![1, 0, 0, 0])]));
    assert_eq!(t[2], Tok::Done(0xFD, 0x10, 0xC1, 1));
    assert_eq!(t.len(), 3, "nothing after the final DONE");
}

/// C2.12: tiberius `query` with a string and a NULL int goes through sp_executesql.
#[tokio::test]
async fn c12_parameterised_query() {
    let t = target().await;
    let mut c = t.sa().await;
    let rows = rows_of(
        c.query("SELECT @P1 AS a, @P2 AS b", &[&"x", &Option::<i32>::None])
            .await
            .expect("query"),
    )
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<&str, _>("a"), Some("x"));
    assert_eq!(rows[0].get::<i32, _>("b"), None);
    let n: i32 = rows_of(c.query("SELECT @P1 + 1", &[&41i32]).await.expect("q")).await[0]
        .get(0)
        .expect("int");
    assert_eq!(n, 42);
}

/// C2.13: a 12 KB batch arrives in 4096-byte packets and its 12 KB result goes back in several
/// packets, status 0 on all but the last.
#[tokio::test]
async fn c13_large_batch_and_result_are_split() {
    let emu = emulator(TlsMode::None).await;
    let mut r = Raw::connect(emu.addr()).await;
    r.handshake(2, "sa", SA, "").await;
    let big = "y".repeat(6000);
    let m = r.batch(&format!("SELECT N'{big}'"), 0).await;
    assert!(m.packets.len() >= 3, "{:?}", m.packets);
    let (last, rest) = m.packets.split_last().expect("packets");
    assert!(rest.iter().all(|p| p.1 == 0 && p.2 == 4096));
    assert_eq!(last.1, 1);
    let t = tokens(&m.payload);
    let Tok::Row(cells) = &t[1] else { panic!("{t:?}") };
    assert_eq!(s16(cells[0].as_ref().expect("value")), big);
}

/// C2.14 (raw half): an attention during `WAITFOR DELAY` is answered with DONE 0x20, and the
/// connection keeps working.
#[tokio::test]
async fn c14_attention_cancels_waitfor() {
    let emu = emulator(TlsMode::None).await;
    let mut r = Raw::connect(emu.addr()).await;
    r.handshake(2, "sa", SA, "").await;
    r.send(0x01, 0, &raw::batch("WAITFOR DELAY '00:00:30'")).await;
    r.send(0x06, 0, &[]).await;
    let m = tokio::time::timeout(std::time::Duration::from_secs(20), r.recv())
        .await
        .expect("answered before the delay ends")
        .expect("msg");
    let t = tokens(&m.payload);
    assert_eq!(dones(&t).last(), Some(&(0xFD, 0x20)));
    let m = r.batch("SELECT 1", 0).await;
    assert_eq!(dones(&tokens(&m.payload)), vec![(0xFD, 0x10)]);
}

/// C2.15: reset-connection (status 0x09) after `USE` → ENVCHANGE 18 first, and DB_NAME() is
/// the login database again.
#[tokio::test]
async fn c15_reset_connection() {
    let emu = emulator(TlsMode::None).await;
    let mut r = Raw::connect(emu.addr()).await;
    r.handshake(2, "sa", SA, "").await;
    r.batch("CREATE DATABASE db1", 0).await;
    r.batch("USE db1", 0).await;
    let m = r.batch("SELECT DB_NAME()", 0x09).await;
    let t = tokens(&m.payload);
    assert_eq!(t[0], Tok::Env(18, vec![], vec![]));
    let Tok::Row(cells) = &t[2] else { panic!("{t:?}") };
    assert_eq!(s16(cells[0].as_ref().expect("name")), "master");
}

/// C2.19: USE inside sp_executesql (tiberius `execute`) lasts only for that call; a batch USE
/// changes the session and sends ENVCHANGE 1 + INFO 5701 state 1.
#[tokio::test]
async fn c19_use_scope() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("db19");
    ok(&mut c, &format!("CREATE DATABASE [{d}]")).await;
    c.execute(format!("USE [{d}]"), &[]).await.expect("execute USE");
    assert_eq!(text(&mut c, "SELECT DB_NAME()").await.as_deref(), Some("master"));
    ok(&mut c, &format!("USE [{d}]")).await;
    assert_eq!(text(&mut c, "SELECT DB_NAME()").await, Some(d.clone()));

    let emu = emulator(TlsMode::None).await;
    let mut r = Raw::connect(emu.addr()).await;
    r.handshake(2, "sa", SA, "").await;
    r.batch("CREATE DATABASE db1", 0).await;
    let tk = tokens(&r.batch("USE db1", 0).await.payload);
    assert!(
        matches!(&tk[0], Tok::Env(1, new, old) if s16(new) == "db1" && s16(old) == "master"),
        "{tk:?}"
    );
    assert_eq!(tk[1], Tok::Info(5701, 1, 0));
}

/// C2.20: SERVERPROPERTY is sql_variant (0x62); CAST to nvarchar(128) gives "16.0.x.y".
#[tokio::test]
async fn c20_serverproperty() {
    let t = target().await;
    let mut c = t.sa().await;
    let v = text(
        &mut c,
        "SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128))",
    )
    .await
    .expect("version");
    assert!(v.starts_with("16.0."), "{v}");
    assert_eq!(v.split('.').count(), 4);

    let emu = emulator(TlsMode::None).await;
    let mut r = Raw::connect(emu.addr()).await;
    r.handshake(2, "sa", SA, "").await;
    let tk = tokens(
        &r.batch(
            "SELECT SERVERPROPERTY('ProductVersion'), SERVERPROPERTY('EngineEdition')",
            0,
        )
        .await
        .payload,
    );
    let Tok::Cols(cols) = &tk[0] else { panic!("{tk:?}") };
    assert!(cols.iter().all(|c| c.0 == 0x62));
}

/// C2.16 (tiberius half): a transaction-manager BEGIN/COMMIT pair, and CREATE DATABASE inside
/// it is 226.
#[tokio::test]
async fn c16_tm_transactions() {
    let t = target().await;
    let mut c = t.sa().await;
    c.begin_transaction().await.expect("TM begin");
    assert_eq!(int(&mut c, "SELECT @@TRANCOUNT").await, Some(1));
    err(&mut c, &format!("CREATE DATABASE [{}]", t.n("x16")), 226).await;
    c.commit_transaction().await.expect("TM commit");
    assert_eq!(int(&mut c, "SELECT @@TRANCOUNT").await, Some(0));
}

/// C2.17: tiberius `AADToken` with a JWT whose `oid` is the SID of the external login
/// `[app1]`: PRELOGIN echoes FEDAUTHREQUIRED, the login is acked with FEATUREEXTACK FEDAUTH,
/// and SUSER_SNAME() is 'app1'. Bad signatures and unknown principals get 18456. Entra tokens
/// cannot be minted for a real server here, so this case runs on the emulator only.
#[tokio::test]
async fn c17_entra_security_token() {
    let key = b"test-signing-key".to_vec();
    let emu = Emulator::start(Config {
        fedauth_hs256_key: Some(key.clone()),
        ..Config::default()
    })
    .await
    .expect("start");
    let t = target_for(&emu);
    let mut sa = t.sa().await;
    let oid = "6a1b3a7e-1f0c-4c55-9d1e-2f3a4b5c6d7e";
    ok(
        &mut sa,
        &format!("CREATE LOGIN [app1] FROM EXTERNAL PROVIDER WITH OBJECT_ID = '{oid}'"),
    )
    .await;
    assert_eq!(
        text(
            &mut sa,
            "SELECT type_desc FROM sys.server_principals WHERE name = 'app1'"
        )
        .await
        .as_deref(),
        Some("EXTERNAL_LOGIN")
    );
    let token = |claims: serde_json::Value, k: &[u8]| mssql_emulator::fedauth::sign_hs256(&claims, k);
    let with_token = |tok: String| {
        let mut cfg = t.base.clone();
        cfg.authentication(tiberius::AuthMethod::aad_token(tok));
        cfg
    };
    let mut c = connect(with_token(token(
        serde_json::json!({"oid": oid, "exp": 4_000_000_000i64}),
        &key,
    )))
    .await
    .expect("token login");
    assert_eq!(
        text(&mut c, "SELECT SUSER_SNAME()").await.as_deref(),
        Some("app1")
    );
    // (claims, signing key, why it must fail)
    let bad = [
        (
            serde_json::json!({"oid": oid}),
            b"wrong-key".to_vec(),
            "signature does not verify",
        ),
        (
            serde_json::json!({"oid": "00000000-0000-0000-0000-000000000001"}),
            key.clone(),
            "no external login with that SID",
        ),
        (serde_json::json!({"oid": oid, "exp": 1}), key.clone(), "expired"),
    ];
    for (claims, k, why) in bad {
        let e = connect(with_token(token(claims, &k)))
            .await
            .err()
            .unwrap_or_else(|| panic!("{why}: login succeeded"));
        assert_eq!(e.code(), Some(18456), "{why}");
    }
}

/// TDS 8.0 strict (spec A4.7, C1.1): tiberius `Strict` starts with a TLS handshake (ALPN
/// `tds/8.0`) and sends PRELOGIN and LOGIN7 inside it; the login and queries work.
#[tokio::test]
async fn tds8_strict_encryption() {
    let t = target().await;
    let mut c = connect(t.with_encryption(EncryptionLevel::Strict))
        .await
        .expect("strict login");
    assert_eq!(int(&mut c, "SELECT 1").await, Some(1));
    let big = text(&mut c, "SELECT REPLICATE(CAST(N'z' AS nvarchar(max)), 9000)")
        .await
        .expect("value");
    assert_eq!(big.len(), 9000, "a multi-packet response inside TDS 8.0 TLS");
}

/// An RPC the subset does not cover (here a parameter of type xml, 0xF1) gets error 50000 and
/// DONEPROC(ERROR); the connection stays usable.
#[tokio::test]
async fn unsupported_rpc_is_an_error_not_a_dropped_connection() {
    let emu = emulator(TlsMode::None).await;
    let mut r = Raw::connect(emu.addr()).await;
    r.handshake(2, "sa", SA, "").await;
    let mut rpc = raw::batch("");
    rpc.extend_from_slice(&[0xFF, 0xFF, 10, 0, 0, 0]);
    rpc.extend_from_slice(&[0, 0, 0xF1, 0]);
    r.send(0x03, 0, &rpc).await;
    let m = r.recv().await.expect("reply");
    let t = tokens(&m.payload);
    assert!(matches!(&t[0], Tok::Error(50000, ..)), "{t:?}");
    assert_eq!(dones(&t).last(), Some(&(0xFE, 0x0002)));
    let m = r.batch("SELECT 1", 0).await;
    assert_eq!(dones(&tokens(&m.payload)), vec![(0xFD, 0x10)]);
}

/// The generated certificate verifies for real (SANs localhost and 127.0.0.1) when a client
/// trusts it as a CA instead of skipping validation; `Emulator::cert_pem` and `GET /cert` serve it.
#[tokio::test]
async fn generated_certificate_verifies_with_trust_cert_ca() {
    let emu = emulator(TlsMode::Required).await;
    let pem = emu.cert_pem().expect("TLS is on");
    let mut b = [0u8; 8];
    mssql_emulator::catalog::random_bytes(&mut b);
    let path = std::env::temp_dir().join(format!(
        "emu-ca-{}.pem",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ));
    std::fs::write(&path, &pem).expect("write CA file");
    for host in ["localhost", "127.0.0.1"] {
        let mut cfg = tiberius::Config::new();
        cfg.host(host);
        cfg.port(emu.addr().port());
        cfg.authentication(tiberius::AuthMethod::sql_server("sa", SA));
        cfg.encryption(EncryptionLevel::Required);
        cfg.trust_cert_ca(path.to_string_lossy());
        let mut c = connect(cfg).await.unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(int(&mut c, "SELECT 1").await, Some(1));
    }
    std::fs::remove_file(&path).expect("remove CA file");
}

/// Literal types on the wire: 'x' is varchar (0xA7), N'x' nvarchar (0xE7), 1 int NOT NULL (0x38).
#[tokio::test]
async fn literal_column_types() {
    let emu = emulator(TlsMode::None).await;
    let mut r = Raw::connect(emu.addr()).await;
    r.handshake(2, "sa", SA, "").await;
    let t = tokens(&r.batch("SELECT 'ab', N'ab', 1", 0).await.payload);
    assert_eq!(
        t[0],
        Tok::Cols(vec![
            (0xA7, String::new()),
            (0xE7, String::new()),
            (0x38, String::new())
        ])
    );
    assert_eq!(
        t[1],
        Tok::Row(vec![
            Some(b"ab".to_vec()),
            Some(vec![b'a', 0, b'b', 0]),
            Some(vec![1, 0, 0, 0])
        ])
    );
}

/// @@ROWCOUNT and @@ERROR describe the previous statement, as scripts that test them expect.
#[tokio::test]
async fn rowcount_and_error_globals() {
    let emu = emulator(TlsMode::None).await;
    let mut r = Raw::connect(emu.addr()).await;
    r.handshake(2, "sa", SA, "").await;
    let t = tokens(
        &r.batch("SELECT name FROM sys.databases; SELECT @@ROWCOUNT", 0)
            .await
            .payload,
    );
    let rows: Vec<&Tok> = t.iter().filter(|x| matches!(x, Tok::Row(_))).collect();
    assert_eq!(
        rows.last(),
        Some(&&Tok::Row(vec![Some(4i32.to_le_bytes().to_vec())])),
        "four system databases"
    );
    let t = tokens(
        &r.batch("DROP DATABASE nope; SELECT @@ERROR; SELECT @@ERROR", 0)
            .await
            .payload,
    );
    let rows: Vec<&Tok> = t.iter().filter(|x| matches!(x, Tok::Row(_))).collect();
    assert_eq!(
        rows,
        vec![
            &Tok::Row(vec![Some(3701i32.to_le_bytes().to_vec())]),
            &Tok::Row(vec![Some(0i32.to_le_bytes().to_vec())])
        ]
    );
}
