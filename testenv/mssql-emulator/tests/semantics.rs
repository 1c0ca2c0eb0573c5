//! Spec C2 semantic cases 21–67 through tiberius 0.13 (the provider's driver). Each test starts
//! from a fresh emulator (or a real server with `MSSQL_TEST_URL`, names suffixed per run).
//! Cases that check DONE statuses on the wire use the raw client on the emulator.

mod common;

use common::raw::{Raw, Tok, dones, tokens};
use common::*;
use mssql_emulator::{Config, Emulator, TlsMode};

const PW: &str = "Str0ng!Passw0rd";

async fn raw_sa() -> (Emulator, Raw) {
    let emu = Emulator::start(Config {
        tls: TlsMode::None,
        ..Config::default()
    })
    .await
    .expect("start");
    let mut r = Raw::connect(emu.addr()).await;
    r.handshake(2, "sa", mssql_emulator::DEFAULT_SA_PASSWORD, "")
        .await;
    (emu, r)
}

fn errors(t: &[Tok]) -> Vec<(u32, u8, u8)> {
    t.iter()
        .filter_map(|x| {
            if let Tok::Error(n, s, c, _) = x {
                Some((*n, *s, *c))
            } else {
                None
            }
        })
        .collect()
}

// ---------------------------------------------------------------- databases

/// C2.21: a duplicate CREATE DATABASE is 1801 state 3; the DONE statuses are 0x0001, 0x0002.
#[tokio::test]
async fn c21_duplicate_database() {
    let (_emu, mut r) = raw_sa().await;
    let t = tokens(&r.batch("CREATE DATABASE d1; CREATE DATABASE d1", 0).await.payload);
    assert_eq!(errors(&t), vec![(1801, 3, 16)]);
    assert_eq!(dones(&t), vec![(0xFD, 0x0001), (0xFD, 0x0002)]);
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d1");
    ok(&mut c, &format!("CREATE DATABASE [{d}]")).await;
    err(&mut c, &format!("CREATE DATABASE [{d}]"), 1801).await;
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT name FROM sys.databases WHERE name = '{d}'")
        )
        .await,
        1
    );
}

/// C2.22: DROP DATABASE of a missing database is 3701 at level 11; IF EXISTS is silent.
#[tokio::test]
async fn c22_drop_missing_database() {
    let t = target().await;
    let mut c = t.sa().await;
    let e = err(&mut c, "DROP DATABASE nope_c22", 3701).await;
    assert_eq!(e.class(), 11);
    assert_eq!(
        e.message(),
        "Cannot drop the database 'nope_c22', because it does not exist or you do not have permission."
    );
    ok(&mut c, "DROP DATABASE IF EXISTS nope_c22").await;
}

/// C2.23: a database in use by another session is 3702 state 4; ROLLBACK IMMEDIATE closes that
/// session and the DROP then succeeds.
#[tokio::test]
async fn c23_drop_database_in_use() {
    let t = target().await;
    let mut a = t.sa().await;
    let d = t.n("d23");
    ok(&mut a, &format!("CREATE DATABASE [{d}]")).await;
    let mut b = t.sa().await;
    ok(&mut b, &format!("USE [{d}]")).await;
    let e = err(&mut a, &format!("DROP DATABASE [{d}]"), 3702).await;
    assert_eq!(e.state(), 4);
    ok(
        &mut a,
        &format!("ALTER DATABASE [{d}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE"),
    )
    .await;
    ok(&mut a, &format!("DROP DATABASE [{d}]")).await;
    assert!(run(&mut b, "SELECT 1").await.is_err(), "session B was closed");
}

/// C2.24: ALTER DATABASE on a missing database → 5011 (level 14) then 5069.
#[tokio::test]
async fn c24_alter_missing_database() {
    let (_emu, mut r) = raw_sa().await;
    let t = tokens(
        &r.batch("ALTER DATABASE nope SET RECOVERY SIMPLE", 0)
            .await
            .payload,
    );
    assert_eq!(
        errors(&t).iter().map(|e| (e.0, e.2)).collect::<Vec<_>>(),
        vec![(5011, 14), (5069, 16)]
    );
    let t = target().await;
    let mut c = t.sa().await;
    err(&mut c, "ALTER DATABASE nope_c24 SET RECOVERY SIMPLE", 5011).await;
}

/// C2.25: DROP DATABASE inside a transaction is 574 and @@TRANCOUNT stays 1.
#[tokio::test]
async fn c25_drop_database_in_transaction() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d25");
    ok(&mut c, &format!("CREATE DATABASE [{d}]")).await;
    err(&mut c, &format!("BEGIN TRAN; DROP DATABASE [{d}]"), 574).await;
    assert_eq!(int(&mut c, "SELECT @@TRANCOUNT").await, Some(1));
    ok(&mut c, "ROLLBACK").await;
}

/// C2.26: user names follow the database collation (CS: Ux and ux coexist); login names follow
/// the server's CI collation (15025).
#[tokio::test]
async fn c26_collation_of_names() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d26");
    ok(
        &mut c,
        &format!("CREATE DATABASE [{d}] COLLATE Latin1_General_CS_AS"),
    )
    .await;
    ok(
        &mut c,
        &format!("USE [{d}]; CREATE USER [Ux] WITHOUT LOGIN; CREATE USER [ux] WITHOUT LOGIN; USE master"),
    )
    .await;
    let (a, b) = (t.n("Lx"), t.n("lx"));
    ok(&mut c, &format!("CREATE LOGIN [{a}] WITH PASSWORD = '{PW}'")).await;
    err(
        &mut c,
        &format!("CREATE LOGIN [{b}] WITH PASSWORD = '{PW}'"),
        15025,
    )
    .await;
}

/// C2.27: compatibility level changes show in sys.databases; a new database has the defaults
/// and owner_sid = the creator's SID.
#[tokio::test]
async fn c27_database_defaults() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d27");
    ok(&mut c, &format!("CREATE DATABASE [{d}]")).await;
    let rows = ok(&mut c, &format!(
        "SELECT compatibility_level, recovery_model_desc, state_desc, user_access_desc, containment_desc, CASE WHEN owner_sid = SUSER_SID() THEN 1 ELSE 0 END FROM sys.databases WHERE name = '{d}'"
    )).await;
    let r = &rows[0][0];
    assert_eq!(cell_int(r, 0), Some(160));
    assert_eq!(r.get::<&str, _>(1), Some("FULL"));
    assert_eq!(r.get::<&str, _>(2), Some("ONLINE"));
    assert_eq!(r.get::<&str, _>(3), Some("MULTI_USER"));
    assert_eq!(r.get::<&str, _>(4), Some("NONE"));
    assert_eq!(cell_int(r, 5), Some(1));
    ok(
        &mut c,
        &format!("ALTER DATABASE [{d}] SET COMPATIBILITY_LEVEL = 150"),
    )
    .await;
    assert_eq!(
        int(
            &mut c,
            &format!("SELECT compatibility_level FROM sys.databases WHERE name = '{d}'")
        )
        .await,
        Some(150)
    );
}

/// C2.28: CONTAINMENT = PARTIAL needs `contained database authentication` (12824 before).
#[tokio::test]
async fn c28_contained_database_needs_configuration() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d28");
    if t.is_emulator() {
        err(
            &mut c,
            &format!("CREATE DATABASE [{d}] CONTAINMENT = PARTIAL"),
            12824,
        )
        .await;
    }
    ok(
        &mut c,
        "EXEC sp_configure 'contained database authentication', 1; RECONFIGURE;",
    )
    .await;
    ok(&mut c, &format!("CREATE DATABASE [{d}] CONTAINMENT = PARTIAL")).await;
    assert_eq!(
        text(
            &mut c,
            &format!("SELECT containment_desc FROM sys.databases WHERE name = '{d}'")
        )
        .await
        .as_deref(),
        Some("PARTIAL")
    );
}

/// C2.29: USE of a missing database is 911 state 1 and DB_NAME() does not change.
#[tokio::test]
async fn c29_use_missing_database() {
    let t = target().await;
    let mut c = t.sa().await;
    let e = err(&mut c, "USE nope_c29", 911).await;
    assert_eq!(e.state(), 1);
    assert_eq!(text(&mut c, "SELECT DB_NAME()").await.as_deref(), Some("master"));
}

// ---------------------------------------------------------------- logins

/// C2.30: duplicate logins and names of server roles are 15025.
#[tokio::test]
async fn c30_duplicate_login() {
    let t = target().await;
    let mut c = t.sa().await;
    let l = t.n("L30");
    ok(&mut c, &format!("CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'")).await;
    let e = err(
        &mut c,
        &format!("CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'"),
        15025,
    )
    .await;
    assert_eq!(e.message(), format!("The server principal '{l}' already exists."));
    err(
        &mut c,
        &format!("CREATE LOGIN [sysadmin] WITH PASSWORD = '{PW}'"),
        15025,
    )
    .await;
}

/// C2.31: the Linux password policy: too short 33062, not complex 33064 state 2; CHECK_POLICY
/// OFF accepts anything and shows is_policy_checked 0.
#[tokio::test]
async fn c31_password_policy() {
    let t = target().await;
    let mut c = t.sa().await;
    let l = t.n("L31");
    err(
        &mut c,
        &format!("CREATE LOGIN [{l}] WITH PASSWORD = 'Ab1!'"),
        33062,
    )
    .await;
    let e = err(
        &mut c,
        &format!("CREATE LOGIN [{l}] WITH PASSWORD = 'abcdefghij'"),
        33064,
    )
    .await;
    assert_eq!(e.state(), 2);
    ok(
        &mut c,
        &format!("CREATE LOGIN [{l}] WITH PASSWORD = 'x', CHECK_POLICY = OFF"),
    )
    .await;
    assert_eq!(
        int(
            &mut c,
            &format!("SELECT is_policy_checked FROM sys.sql_logins WHERE name = '{l}'")
        )
        .await,
        Some(0)
    );
}

/// C2.32: option conflicts 15122 and 15099.
#[tokio::test]
async fn c32_login_option_conflicts() {
    let t = target().await;
    let mut c = t.sa().await;
    let l = t.n("L32");
    err(
        &mut c,
        &format!("CREATE LOGIN [{l}] WITH PASSWORD = '{PW}', CHECK_POLICY = OFF, CHECK_EXPIRATION = ON"),
        15122,
    )
    .await;
    err(
        &mut c,
        &format!("CREATE LOGIN [{l}] WITH PASSWORD = '{PW}' MUST_CHANGE"),
        15099,
    )
    .await;
}

/// C2.33: ALTER/DROP of a missing login are 15151 with their verbs; DROP LOGIN has no IF EXISTS.
#[tokio::test]
async fn c33_missing_login() {
    let t = target().await;
    let mut c = t.sa().await;
    let e = err(&mut c, "ALTER LOGIN nope_c33 DISABLE", 15151).await;
    assert_eq!(
        e.message(),
        "Cannot alter the login 'nope_c33', because it does not exist or you do not have permission."
    );
    let e = err(&mut c, "DROP LOGIN nope_c33", 15151).await;
    assert_eq!(
        e.message(),
        "Cannot drop the login 'nope_c33', because it does not exist or you do not have permission."
    );
    let e = err(&mut c, "DROP LOGIN IF EXISTS nope_c33", 156).await;
    assert_eq!(e.message(), "Incorrect syntax near the keyword 'IF'.");
}

/// C2.34: a logged-in login cannot be dropped (15434); after it disconnects it can.
#[tokio::test]
async fn c34_drop_logged_in_login() {
    let t = target().await;
    let mut c = t.sa().await;
    let l = t.n("L34");
    ok(&mut c, &format!("CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'")).await;
    let b = t.login(&l, PW, None).await.expect("login");
    err(&mut c, &format!("DROP LOGIN [{l}]"), 15434).await;
    b.close().await.expect("close");
    // The server notices the disconnect asynchronously; poll with a bound instead of sleeping blind.
    let mut dropped = false;
    for _ in 0..600 {
        if run(&mut c, &format!("DROP LOGIN [{l}]")).await.is_ok() {
            dropped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(dropped, "DROP LOGIN succeeds after the session ends");
}

/// C2.35: ALTER LOGIN … WITH PASSWORD: the old password fails, the new one works.
#[tokio::test]
async fn c35_change_password() {
    let t = target().await;
    let mut c = t.sa().await;
    let l = t.n("L35");
    ok(&mut c, &format!("CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'")).await;
    ok(
        &mut c,
        &format!("ALTER LOGIN [{l}] WITH PASSWORD = 'N3w!Passw0rd'"),
    )
    .await;
    assert_eq!(
        t.login(&l, PW, None).await.err().and_then(|e| e.code()),
        Some(18456)
    );
    t.login(&l, "N3w!Passw0rd", None)
        .await
        .expect("new password works");
}

/// C2.36: HASHED passwords are stored as given and checked at login.
#[tokio::test]
async fn c36_hashed_password() {
    let t = target().await;
    let mut c = t.sa().await;
    let l = t.n("H36");
    let hash = mssql_emulator::catalog::hash_password("Hash3d!Pass", [0xA1, 0xB2, 0xC3, 0xD4]);
    let lit = mssql_emulator::catalog::to_hex(&hash);
    ok(
        &mut c,
        &format!("CREATE LOGIN [{l}] WITH PASSWORD = {lit} HASHED, CHECK_POLICY = OFF"),
    )
    .await;
    t.login(&l, "Hash3d!Pass", None)
        .await
        .expect("hashed password works");
    let rows = ok(
        &mut c,
        &format!("SELECT password_hash FROM sys.sql_logins WHERE name = '{l}'"),
    )
    .await;
    assert_eq!(rows[0][0].get::<&[u8], _>(0), Some(&hash[..]));
}

/// C2.37: two logins with the same SID → 15433.
#[tokio::test]
async fn c37_duplicate_sid() {
    let t = target().await;
    let mut c = t.sa().await;
    let (a, b) = (t.n("S37a"), t.n("S37b"));
    let sid = "0x0102030405060708090A0B0C0D0E0F37";
    ok(
        &mut c,
        &format!("CREATE LOGIN [{a}] WITH PASSWORD = '{PW}', SID = {sid}"),
    )
    .await;
    err(
        &mut c,
        &format!("CREATE LOGIN [{b}] WITH PASSWORD = '{PW}', SID = {sid}"),
        15433,
    )
    .await;
}

/// C2.38: a plain login gets 15247 for CREATE LOGIN and 262 (level 14) for CREATE DATABASE;
/// in dbcreator it may create a database, owns it, and is dbo there.
#[tokio::test]
async fn c38_permissions_of_a_plain_login() {
    let t = target().await;
    let mut sa = t.sa().await;
    let (l, y) = (t.n("L38"), t.n("y38"));
    ok(&mut sa, &format!("CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'")).await;
    let mut lc = t.login(&l, PW, None).await.expect("login");
    err(
        &mut lc,
        &format!("CREATE LOGIN [{}] WITH PASSWORD = '{PW}'", t.n("x38")),
        15247,
    )
    .await;
    let e = err(&mut lc, &format!("CREATE DATABASE [{y}]"), 262).await;
    assert_eq!(e.class(), 14);
    assert_eq!(
        e.message(),
        "CREATE DATABASE permission denied in database 'master'."
    );
    ok(&mut sa, &format!("ALTER SERVER ROLE dbcreator ADD MEMBER [{l}]")).await;
    ok(&mut lc, &format!("CREATE DATABASE [{y}]")).await;
    assert_eq!(int(&mut sa, &format!("SELECT CASE WHEN owner_sid = SUSER_SID('{l}') THEN 1 ELSE 0 END FROM sys.databases WHERE name = '{y}'")).await, Some(1));
    ok(&mut lc, &format!("USE [{y}]")).await;
    assert_eq!(text(&mut lc, "SELECT USER_NAME()").await.as_deref(), Some("dbo"));
}

/// C2.39: a login that owns a database cannot be dropped (15174).
#[tokio::test]
async fn c39_drop_database_owner() {
    let t = target().await;
    let mut sa = t.sa().await;
    let (l, y) = (t.n("L39"), t.n("y39"));
    ok(
        &mut sa,
        &format!("CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'; ALTER SERVER ROLE dbcreator ADD MEMBER [{l}]"),
    )
    .await;
    let mut lc = t.login(&l, PW, None).await.expect("login");
    ok(&mut lc, &format!("CREATE DATABASE [{y}]")).await;
    lc.close().await.expect("close");
    let mut last = None;
    for _ in 0..600 {
        match run(&mut sa, &format!("DROP LOGIN [{l}]")).await {
            Err(tiberius::error::Error::Server(e)) if e.code() == 15434 => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            other => {
                last = Some(other.err().and_then(|e| e.code()));
                break;
            }
        }
    }
    assert_eq!(last, Some(Some(15174)));
}

/// C2.40: dropping a login leaves its users as orphans with the old SID.
#[tokio::test]
async fn c40_orphaned_user() {
    let t = target().await;
    let mut sa = t.sa().await;
    let (d, l, u) = (t.n("d40"), t.n("L40"), t.n("U40"));
    ok(
        &mut sa,
        &format!("CREATE DATABASE [{d}]; CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'"),
    )
    .await;
    let sid_before = ok(&mut sa, &format!("SELECT SUSER_SID('{l}')")).await[0][0]
        .get::<&[u8], _>(0)
        .map(<[u8]>::to_vec);
    ok(
        &mut sa,
        &format!("USE [{d}]; CREATE USER [{u}] FOR LOGIN [{l}]; USE master; DROP LOGIN [{l}]"),
    )
    .await;
    let rows = ok(
        &mut sa,
        &format!("SELECT sid FROM [{d}].sys.database_principals WHERE name = '{u}'"),
    )
    .await;
    assert_eq!(rows[0][0].get::<&[u8], _>(0).map(<[u8]>::to_vec), sid_before);
}

// ---------------------------------------------------------------- users

async fn db_with_login(t: &Target, c: &mut Conn, d: &str, l: &str) {
    ok(
        c,
        &format!("CREATE DATABASE [{d}]; CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'"),
    )
    .await;
    ok(c, &format!("USE [{d}]")).await;
    let _ = t;
}

/// C2.41–C2.43: duplicate users (15023), a login mapped twice (15063), missing logins (15007),
/// and CREATE USER without a clause mapping to the login of the same name.
#[tokio::test]
async fn c41_c43_create_user_errors() {
    let t = target().await;
    let mut c = t.sa().await;
    let (d, l, u) = (t.n("d41"), t.n("L41"), t.n("U41"));
    db_with_login(&t, &mut c, &d, &l).await;
    ok(&mut c, &format!("CREATE USER [{u}] FOR LOGIN [{l}]")).await;
    err(&mut c, &format!("CREATE USER [{u}] FOR LOGIN [{l}]"), 15023).await;
    err(
        &mut c,
        &format!("CREATE USER [{}] FOR LOGIN [{l}]", t.n("U2")),
        15063,
    )
    .await;
    let e = err(&mut c, "CREATE USER [U3] FOR LOGIN [nope_c43]", 15007).await;
    assert_eq!(
        e.message(),
        "'nope_c43' is not a valid login or you do not have permission."
    );
    let l4 = t.n("L4");
    ok(
        &mut c,
        &format!("CREATE LOGIN [{l4}] WITH PASSWORD = '{PW}'; CREATE USER [{l4}]"),
    )
    .await;
    assert_eq!(int(&mut c, &format!("SELECT CASE WHEN sid = SUSER_SID('{l4}') THEN 1 ELSE 0 END FROM sys.database_principals WHERE name = '{l4}'")).await, Some(1));
    err(&mut c, "CREATE USER [nobody_c43]", 15007).await;
}

/// C2.44: WITHOUT LOGIN users are type S, authentication_type 0, with a SID; WITH PASSWORD in a
/// non-contained database is 33233.
#[tokio::test]
async fn c44_user_without_login() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d44");
    ok(
        &mut c,
        &format!("CREATE DATABASE [{d}]; USE [{d}]; CREATE USER U5 WITHOUT LOGIN"),
    )
    .await;
    let rows = ok(
        &mut c,
        "SELECT type, authentication_type, sid FROM sys.database_principals WHERE name = 'U5'",
    )
    .await;
    let r = &rows[0][0];
    assert_eq!(r.get::<&str, _>(0), Some("S"));
    assert_eq!(cell_int(r, 1), Some(0));
    assert!(r.get::<&[u8], _>(2).is_some());
    err(&mut c, &format!("CREATE USER U6 WITH PASSWORD = '{PW}'"), 33233).await;
}

/// C2.45: DEFAULT_SCHEMA is stored as written without checking it.
#[tokio::test]
async fn c45_default_schema_not_checked() {
    let t = target().await;
    let mut c = t.sa().await;
    let (d, l) = (t.n("d45"), t.n("L7"));
    db_with_login(&t, &mut c, &d, &l).await;
    ok(
        &mut c,
        &format!("CREATE USER U7 FOR LOGIN [{l}] WITH DEFAULT_SCHEMA = nosuch"),
    )
    .await;
    assert_eq!(
        text(
            &mut c,
            "SELECT default_schema_name FROM sys.database_principals WHERE name = 'U7'"
        )
        .await
        .as_deref(),
        Some("nosuch")
    );
}

/// C2.46: a new user gets a CONNECT grant row.
#[tokio::test]
async fn c46_new_user_has_connect() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d46");
    ok(
        &mut c,
        &format!("CREATE DATABASE [{d}]; USE [{d}]; CREATE USER U WITHOUT LOGIN"),
    )
    .await;
    let rows = ok(&mut c, "SELECT p.class, p.type, p.state FROM sys.database_permissions p JOIN sys.database_principals u ON u.principal_id = p.grantee_principal_id WHERE u.name = 'U'").await;
    assert_eq!(rows[0].len(), 1);
    let r = &rows[0][0];
    assert_eq!(cell_int(r, 0), Some(0));
    assert_eq!(r.get::<&str, _>(1), Some("CO  "));
    assert_eq!(r.get::<&str, _>(2), Some("G"));
}

/// C2.47: DROP USER errors: missing 15151, IF EXISTS silent, dbo 15150.
#[tokio::test]
async fn c47_drop_user() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d47");
    ok(&mut c, &format!("CREATE DATABASE [{d}]; USE [{d}]")).await;
    let e = err(&mut c, "DROP USER nope", 15151).await;
    assert_eq!(
        e.message(),
        "Cannot drop the user 'nope', because it does not exist or you do not have permission."
    );
    ok(&mut c, "DROP USER IF EXISTS nope").await;
    err(&mut c, "DROP USER dbo", 15150).await;
}

/// C2.48: the database owner's login already is dbo → 15063.
#[tokio::test]
async fn c48_user_for_owner_login() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d48");
    ok(&mut c, &format!("CREATE DATABASE [{d}]; USE [{d}]")).await;
    if t.is_emulator() {
        err(&mut c, "CREATE USER sa_user FOR LOGIN sa", 15063).await;
    }
}

// ---------------------------------------------------------------- schemas

/// C2.49: a duplicate schema via EXEC is 2714 state 6.
#[tokio::test]
async fn c49_duplicate_schema() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d49");
    ok(&mut c, &format!("CREATE DATABASE [{d}]; USE [{d}]")).await;
    ok(&mut c, "EXEC('CREATE SCHEMA s1')").await;
    let e = err(&mut c, "EXEC('CREATE SCHEMA s1')", 2714).await;
    assert_eq!(e.state(), 6);
}

/// C2.50: CREATE SCHEMA inside IF is 156 and nothing runs; after another statement it is 111
/// and no row comes back.
#[tokio::test]
async fn c50_create_schema_batch_rules() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d50");
    ok(&mut c, &format!("CREATE DATABASE [{d}]; USE [{d}]")).await;
    err(
        &mut c,
        "IF NOT EXISTS (SELECT 1 FROM sys.schemas WHERE name='s2') CREATE SCHEMA s2",
        156,
    )
    .await;
    assert_eq!(
        count(&mut c, "SELECT name FROM sys.schemas WHERE name = 's2'").await,
        0
    );
    let res = run(&mut c, "SELECT 1; CREATE SCHEMA s3").await;
    assert_eq!(res.err().and_then(|e| e.code()), Some(111));
    assert_eq!(
        count(&mut c, "SELECT name FROM sys.schemas WHERE name = 's3'").await,
        0
    );
}

/// C2.51: a user owning a schema cannot be dropped (15138) until ownership moves.
#[tokio::test]
async fn c51_schema_owner_blocks_drop_user() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d51");
    ok(
        &mut c,
        &format!("CREATE DATABASE [{d}]; USE [{d}]; CREATE USER U WITHOUT LOGIN"),
    )
    .await;
    ok(&mut c, "EXEC('CREATE SCHEMA s4 AUTHORIZATION U')").await;
    err(&mut c, "DROP USER U", 15138).await;
    ok(&mut c, "ALTER AUTHORIZATION ON SCHEMA::s4 TO dbo").await;
    ok(&mut c, "DROP USER U").await;
}

/// C2.52: DROP SCHEMA errors and the fixed schemas.
#[tokio::test]
async fn c52_schema_errors() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d52");
    ok(
        &mut c,
        &format!("CREATE DATABASE [{d}]; USE [{d}]; CREATE USER U WITHOUT LOGIN"),
    )
    .await;
    let e = err(&mut c, "DROP SCHEMA nope", 15151).await;
    assert_eq!(
        e.message(),
        "Cannot drop the schema 'nope', because it does not exist or you do not have permission."
    );
    err(&mut c, "DROP SCHEMA dbo", 15150).await;
    err(&mut c, "ALTER AUTHORIZATION ON SCHEMA::sys TO U", 15150).await;
}

// ---------------------------------------------------------------- roles

/// C2.53: ADD/DROP MEMBER are idempotent.
#[tokio::test]
async fn c53_role_membership_idempotent() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d53");
    ok(
        &mut c,
        &format!("CREATE DATABASE [{d}]; USE [{d}]; CREATE USER U WITHOUT LOGIN"),
    )
    .await;
    ok(
        &mut c,
        "ALTER ROLE db_datareader ADD MEMBER U; ALTER ROLE db_datareader ADD MEMBER U",
    )
    .await;
    let q = "SELECT COUNT(*) FROM sys.database_role_members m JOIN sys.database_principals u ON u.principal_id = m.member_principal_id WHERE u.name = 'U'";
    assert_eq!(int(&mut c, q).await, Some(1));
    ok(
        &mut c,
        "ALTER ROLE db_datareader DROP MEMBER U; ALTER ROLE db_datareader DROP MEMBER U",
    )
    .await;
    assert_eq!(int(&mut c, q).await, Some(0));
}

/// C2.54–C2.56: role errors.
#[tokio::test]
async fn c54_c56_role_errors() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d54");
    ok(
        &mut c,
        &format!("CREATE DATABASE [{d}]; USE [{d}]; CREATE USER U WITHOUT LOGIN"),
    )
    .await;
    let e = err(&mut c, "ALTER ROLE nosuch ADD MEMBER U", 15151).await;
    assert_eq!(
        e.message(),
        "Cannot alter the role 'nosuch', because it does not exist or you do not have permission."
    );
    let e = err(&mut c, "ALTER ROLE db_datareader ADD MEMBER nope", 15151).await;
    assert_eq!(
        e.message(),
        "Cannot add the principal 'nope', because it does not exist or you do not have permission."
    );
    let e = err(&mut c, "ALTER ROLE db_owner ADD MEMBER dbo", 15405).await;
    assert_eq!(e.class(), 11);
    ok(&mut c, "CREATE ROLE r").await;
    err(&mut c, "ALTER ROLE r ADD MEMBER r", 15413).await;
    err(&mut c, "ALTER ROLE [public] ADD MEMBER U", 15081).await;
    ok(&mut c, "ALTER ROLE r ADD MEMBER U").await;
    err(&mut c, "DROP ROLE r", 15144).await;
}

/// C2.57: server roles: membership rows, IS_SRVROLEMEMBER through sysadmin, errors.
#[tokio::test]
async fn c57_server_roles() {
    let t = target().await;
    let mut c = t.sa().await;
    let (l, s) = (t.n("L57"), t.n("S57"));
    ok(
        &mut c,
        &format!("CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'; ALTER SERVER ROLE sysadmin ADD MEMBER [{l}]"),
    )
    .await;
    assert_eq!(int(&mut c, &format!("SELECT COUNT(*) FROM sys.server_role_members WHERE role_principal_id = 3 AND member_principal_id = SUSER_ID('{l}')")).await, Some(1));
    assert_eq!(
        int(&mut c, &format!("SELECT IS_SRVROLEMEMBER('dbcreator', '{l}')")).await,
        Some(1)
    );
    let e = err(
        &mut c,
        &format!("ALTER SERVER ROLE nosuch ADD MEMBER [{l}]"),
        15151,
    )
    .await;
    assert_eq!(
        e.message(),
        "Cannot alter the server role 'nosuch', because it does not exist or you do not have permission."
    );
    ok(
        &mut c,
        &format!(
            "CREATE LOGIN [{s}] WITH PASSWORD = '{PW}'; ALTER SERVER ROLE securityadmin ADD MEMBER [{s}]"
        ),
    )
    .await;
    let mut sc = t.login(&s, PW, None).await.expect("login");
    let e = err(
        &mut sc,
        &format!("ALTER SERVER ROLE sysadmin ADD MEMBER [{s}]"),
        15151,
    )
    .await;
    assert_eq!(
        e.message(),
        "Cannot alter the server role 'sysadmin', because it does not exist or you do not have permission."
    );
}

// ---------------------------------------------------------------- permissions

/// C2.58: GRANT, DENY and REVOKE on a schema share one row.
#[tokio::test]
async fn c58_grant_deny_revoke() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d58");
    ok(
        &mut c,
        &format!("CREATE DATABASE [{d}]; USE [{d}]; CREATE USER U WITHOUT LOGIN"),
    )
    .await;
    ok(&mut c, "EXEC('CREATE SCHEMA s1')").await;
    let q = "SELECT p.class, p.major_id - SCHEMA_ID('s1'), p.type, p.state FROM sys.database_permissions p WHERE p.grantee_principal_id = USER_ID('U') AND p.class = 3";
    ok(&mut c, "GRANT SELECT ON SCHEMA::s1 TO U").await;
    let rows = ok(&mut c, q).await;
    assert_eq!(rows[0].len(), 1);
    assert_eq!(cell_int(&rows[0][0], 0), Some(3));
    assert_eq!(cell_int(&rows[0][0], 1), Some(0));
    assert_eq!(rows[0][0].get::<&str, _>(2), Some("SL  "));
    assert_eq!(rows[0][0].get::<&str, _>(3), Some("G"));
    ok(&mut c, "DENY SELECT ON SCHEMA::s1 TO U").await;
    let rows = ok(&mut c, q).await;
    assert_eq!(rows[0].len(), 1);
    assert_eq!(rows[0][0].get::<&str, _>(3), Some("D"));
    ok(&mut c, "REVOKE SELECT ON SCHEMA::s1 FROM U").await;
    assert_eq!(count(&mut c, q).await, 0);
}

/// C2.59: WITH GRANT OPTION, re-granting, and REVOKE needing CASCADE (4611).
#[tokio::test]
async fn c59_grant_option_and_cascade() {
    let t = target().await;
    let mut c = t.sa().await;
    let (d, l) = (t.n("d59"), t.n("L59"));
    db_with_login(&t, &mut c, &d, &l).await;
    ok(&mut c, &format!("CREATE USER U FOR LOGIN [{l}]; CREATE USER U5 WITHOUT LOGIN; GRANT CREATE TABLE TO U WITH GRANT OPTION")).await;
    assert_eq!(text(&mut c, "SELECT state FROM sys.database_permissions WHERE grantee_principal_id = USER_ID('U') AND type = 'CRTB'").await.as_deref(), Some("W"));
    let mut u = t.login(&l, PW, Some(&d)).await.expect("login as U");
    ok(&mut u, "GRANT CREATE TABLE TO U5").await;
    err(&mut c, "REVOKE CREATE TABLE FROM U", 4611).await;
    ok(&mut c, "REVOKE CREATE TABLE FROM U CASCADE").await;
    assert_eq!(
        count(
            &mut c,
            "SELECT 1 FROM sys.database_permissions WHERE type = 'CRTB'"
        )
        .await,
        0
    );
}

/// C2.60: unknown securables and grantees are 15151 "Cannot find"; dbo is 4624.
#[tokio::test]
async fn c60_permission_errors() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("d60");
    ok(
        &mut c,
        &format!("CREATE DATABASE [{d}]; USE [{d}]; CREATE USER U WITHOUT LOGIN"),
    )
    .await;
    let e = err(&mut c, "GRANT SELECT ON SCHEMA::nosuch TO U", 15151).await;
    assert_eq!(
        e.message(),
        "Cannot find the schema 'nosuch', because it does not exist or you do not have permission."
    );
    let e = err(&mut c, "GRANT SELECT TO nope", 15151).await;
    assert_eq!(
        e.message(),
        "Cannot find the user 'nope', because it does not exist or you do not have permission."
    );
    err(&mut c, "GRANT CONTROL TO dbo", 4624).await;
}

/// C2.61: server permissions only from master (4621); in master a VWSS row appears.
#[tokio::test]
async fn c61_server_scope_grant() {
    let t = target().await;
    let mut c = t.sa().await;
    let (d, l) = (t.n("d61"), t.n("L61"));
    ok(
        &mut c,
        &format!("CREATE DATABASE [{d}]; CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'"),
    )
    .await;
    err(
        &mut c,
        &format!("USE [{d}]; GRANT VIEW SERVER STATE TO [{l}]"),
        4621,
    )
    .await;
    ok(&mut c, &format!("USE master; GRANT VIEW SERVER STATE TO [{l}]")).await;
    assert_eq!(count(&mut c, &format!("SELECT 1 FROM sys.server_permissions WHERE grantee_principal_id = SUSER_ID('{l}') AND type = 'VWSS'")).await, 1);
}

/// C2.62: fn_my_permissions and HAS_PERMS_BY_NAME for a db_datareader user.
#[tokio::test]
async fn c62_effective_permissions() {
    let t = target().await;
    let mut c = t.sa().await;
    let (d, l) = (t.n("d62"), t.n("L62"));
    db_with_login(&t, &mut c, &d, &l).await;
    ok(
        &mut c,
        &format!("CREATE USER U FOR LOGIN [{l}]; ALTER ROLE db_datareader ADD MEMBER U"),
    )
    .await;
    let mut u = t.login(&l, PW, Some(&d)).await.expect("login");
    let rows = ok(
        &mut u,
        "SELECT permission_name FROM fn_my_permissions(NULL, 'DATABASE')",
    )
    .await;
    let perms: Vec<&str> = rows[0].iter().filter_map(|r| r.get::<&str, _>(0)).collect();
    assert!(
        perms.contains(&"CONNECT") && perms.contains(&"SELECT"),
        "{perms:?}"
    );
    assert!(!perms.contains(&"ALTER"), "{perms:?}");
    assert_eq!(
        int(&mut u, "SELECT HAS_PERMS_BY_NAME(DB_NAME(), 'DATABASE', 'ALTER')").await,
        Some(0)
    );
}

// ---------------------------------------------------------------- identifiers, batches, transactions

/// C2.63: QUOTENAME.
#[tokio::test]
async fn c63_quotename() {
    let t = target().await;
    let mut c = t.sa().await;
    let rows = ok(
        &mut c,
        "SELECT QUOTENAME(N'a]b'), QUOTENAME(REPLICATE(N'x',129)), QUOTENAME(N'it''s','''')",
    )
    .await;
    let r = &rows[0][0];
    assert_eq!(r.get::<&str, _>(0), Some("[a]]b]"));
    assert_eq!(r.get::<&str, _>(1), None);
    assert_eq!(r.get::<&str, _>(2), Some("'it''s'"));
}

/// C2.64: EXEC of NULL SQL does nothing; a 129-character literal name is 103 and aborts.
#[tokio::test]
async fn c64_long_names() {
    let t = target().await;
    let mut c = t.sa().await;
    let before = int(&mut c, "SELECT COUNT(*) FROM sys.server_principals").await;
    ok(
        &mut c,
        "EXEC(N'CREATE LOGIN ' + QUOTENAME(REPLICATE(N'x',129)) + N' WITH PASSWORD=''x''')",
    )
    .await;
    assert_eq!(
        int(&mut c, "SELECT COUNT(*) FROM sys.server_principals").await,
        before
    );
    let name = "x".repeat(129);
    err(
        &mut c,
        &format!("CREATE LOGIN [{name}] WITH PASSWORD = 'x'; SELECT 1"),
        103,
    )
    .await;
}

/// C2.65: an error in the middle of a batch ends only that statement; DONE statuses 1, 3, 0.
#[tokio::test]
async fn c65_statement_errors_continue_the_batch() {
    let (_emu, mut r) = raw_sa().await;
    let sql = format!(
        "CREATE LOGIN a1 WITH PASSWORD = '{PW}'; CREATE LOGIN a1 WITH PASSWORD = '{PW}'; CREATE LOGIN b1 WITH PASSWORD = '{PW}'"
    );
    let tk = tokens(&r.batch(&sql, 0).await.payload);
    assert_eq!(errors(&tk).iter().map(|e| e.0).collect::<Vec<_>>(), vec![15025]);
    assert_eq!(dones(&tk), vec![(0xFD, 0x0001), (0xFD, 0x0003), (0xFD, 0x0000)]);
    let t = target().await;
    let mut c = t.sa().await;
    let (a, b) = (t.n("a1"), t.n("b1"));
    let _ = run(&mut c, &format!("CREATE LOGIN [{a}] WITH PASSWORD = '{PW}'; CREATE LOGIN [{a}] WITH PASSWORD = '{PW}'; CREATE LOGIN [{b}] WITH PASSWORD = '{PW}'")).await;
    assert_eq!(
        int(
            &mut c,
            &format!("SELECT COUNT(*) FROM sys.server_principals WHERE name IN ('{a}', '{b}')")
        )
        .await,
        Some(2)
    );
}

/// C2.66: ROLLBACK undoes login and schema DDL; ENVCHANGE 8 and 10 pair up.
#[tokio::test]
async fn c66_rollback_undoes_ddl() {
    let (_emu, mut r) = raw_sa().await;
    r.batch("CREATE DATABASE d1", 0).await;
    let sql = format!(
        "USE d1; BEGIN TRAN; CREATE LOGIN t1 WITH PASSWORD = '{PW}'; EXEC('CREATE SCHEMA ts'); ROLLBACK"
    );
    let tk = tokens(&r.batch(&sql, 0).await.payload);
    let envs: Vec<u8> = tk
        .iter()
        .filter_map(|x| if let Tok::Env(ty, ..) = x { Some(*ty) } else { None })
        .collect();
    assert_eq!(envs, vec![1, 8, 10]);
    let (Some(Tok::Env(8, begin, _)), Some(Tok::Env(10, _, end))) = (
        tk.iter().find(|x| matches!(x, Tok::Env(8, ..))),
        tk.iter().find(|x| matches!(x, Tok::Env(10, ..))),
    ) else {
        panic!("{tk:?}")
    };
    assert_eq!(begin, end, "the rollback names the transaction that began");
    let t = target().await;
    let mut c = t.sa().await;
    let (d, l) = (t.n("d66"), t.n("t1"));
    ok(&mut c, &format!("CREATE DATABASE [{d}]")).await;
    ok(&mut c, &format!("USE [{d}]; BEGIN TRAN; CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'; EXEC('CREATE SCHEMA ts'); ROLLBACK")).await;
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT 1 FROM sys.server_principals WHERE name = '{l}'")
        )
        .await,
        0
    );
    assert_eq!(
        count(&mut c, "SELECT 1 FROM sys.schemas WHERE name = 'ts'").await,
        0
    );
}

/// C2.67: XACT_ABORT rolls back and ends the batch at the first error.
#[tokio::test]
async fn c67_xact_abort() {
    let t = target().await;
    let mut c = t.sa().await;
    let l = t.n("t2");
    let res = run(&mut c, &format!("SET XACT_ABORT ON; BEGIN TRAN; CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'; CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'; SELECT 1")).await;
    assert_eq!(res.err().and_then(|e| e.code()), Some(15025));
    assert_eq!(int(&mut c, "SELECT @@TRANCOUNT").await, Some(0));
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT 1 FROM sys.server_principals WHERE name = '{l}'")
        )
        .await,
        0
    );
}

/// ROLLBACK undoes only the rolling-back session's changes (B0.3): another session's DDL,
/// committed while the transaction was open, survives. The interleaving after A's own DDL runs
/// on the emulator only: on a real server B would block on A's locks.
#[tokio::test]
async fn rollback_keeps_other_sessions_changes() {
    let t = target().await;
    let mut a = t.sa().await;
    let mut b = t.sa().await;
    let (la, lb, lc) = (t.n("rb_a"), t.n("rb_b"), t.n("rb_c"));
    ok(&mut a, "BEGIN TRAN").await;
    ok(&mut b, &format!("CREATE LOGIN [{lb}] WITH PASSWORD = '{PW}'")).await;
    ok(&mut a, &format!("CREATE LOGIN [{la}] WITH PASSWORD = '{PW}'")).await;
    if t.is_emulator() {
        ok(&mut b, &format!("CREATE LOGIN [{lc}] WITH PASSWORD = '{PW}'")).await;
    }
    ok(&mut a, "ROLLBACK").await;
    let names = format!("'{la}', '{lb}', '{lc}'");
    let rows = ok(
        &mut a,
        &format!("SELECT name FROM sys.server_principals WHERE name IN ({names}) ORDER BY name"),
    )
    .await;
    let got: Vec<&str> = rows[0].iter().filter_map(|r| r.get::<&str, _>(0)).collect();
    let want: Vec<&str> = if t.is_emulator() {
        vec![&lb, &lc]
    } else {
        vec![&lb]
    };
    assert_eq!(got, want);
}

/// REPLICATE cuts its result at 8000 bytes unless the input is a max type: a provider that
/// builds long dynamic SQL must CAST first, and tests must not rely on the opposite.
#[tokio::test]
async fn replicate_truncates_non_max_input() {
    let t = target().await;
    let mut c = t.sa().await;
    assert_eq!(int(&mut c, "SELECT LEN(REPLICATE(N'x', 5000))").await, Some(4000));
    assert_eq!(
        int(&mut c, "SELECT LEN(REPLICATE(CAST(N'x' AS nvarchar(max)), 5000))").await,
        Some(5000)
    );
}

/// SINGLE_USER admits one session (924 for the next), as providers rely on before DROP.
#[tokio::test]
async fn single_user_admits_one_session() {
    let t = target().await;
    let mut a = t.sa().await;
    let mut b = t.sa().await;
    let d = t.n("d924");
    ok(
        &mut a,
        &format!("CREATE DATABASE [{d}]; ALTER DATABASE [{d}] SET SINGLE_USER; USE [{d}]"),
    )
    .await;
    let e = err(&mut b, &format!("USE [{d}]"), 924).await;
    assert_eq!(
        e.message(),
        format!("Database '{d}' is already open and can only have one user at a time.")
    );
    ok(
        &mut a,
        &format!("USE master; ALTER DATABASE [{d}] SET MULTI_USER"),
    )
    .await;
    ok(&mut b, &format!("USE [{d}]")).await;
}

/// KILL ends another session (whose next request fails), refuses the caller's own SPID (6104)
/// and needs ALTER ANY CONNECTION (6102).
#[tokio::test]
async fn kill_sessions() {
    let t = target().await;
    let mut a = t.sa().await;
    let mut b = t.sa().await;
    let spid_b = int(&mut b, "SELECT @@SPID").await.expect("spid");
    let spid_a = int(&mut a, "SELECT @@SPID").await.expect("spid");
    err(&mut a, &format!("KILL {spid_a}"), 6104).await;
    ok(&mut a, &format!("KILL {spid_b}")).await;
    assert!(
        run(&mut b, "SELECT 1").await.is_err(),
        "the killed session is closed"
    );
    let l = t.n("Lkill");
    ok(&mut a, &format!("CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'")).await;
    let mut lc = t.login(&l, PW, None).await.expect("login");
    err(&mut lc, &format!("KILL {spid_a}"), 6102).await;
}

/// Contained users (B3, `WITH PASSWORD` in a PARTIAL database) log in with that database in
/// LOGIN7; without it, or with a wrong password, the login fails (there is no server login).
#[tokio::test]
async fn contained_user_login() {
    let t = target().await;
    let mut c = t.sa().await;
    let (d, u) = (t.n("dcont"), t.n("cu"));
    ok(
        &mut c,
        "EXEC sp_configure 'contained database authentication', 1; RECONFIGURE;",
    )
    .await;
    ok(&mut c, &format!("CREATE DATABASE [{d}] CONTAINMENT = PARTIAL")).await;
    ok(
        &mut c,
        &format!("USE [{d}]; CREATE USER [{u}] WITH PASSWORD = '{PW}'"),
    )
    .await;
    assert_eq!(
        int(
            &mut c,
            &format!("SELECT authentication_type FROM sys.database_principals WHERE name = '{u}'")
        )
        .await,
        Some(2)
    );
    let mut cu = t.login(&u, PW, Some(&d)).await.expect("contained user logs in");
    assert_eq!(text(&mut cu, "SELECT USER_NAME()").await, Some(u.clone()));
    assert_eq!(text(&mut cu, "SELECT DB_NAME()").await, Some(d.clone()));
    assert_eq!(
        t.login(&u, "Wr0ng!Passw0rd", Some(&d))
            .await
            .err()
            .and_then(|e| e.code()),
        Some(18456)
    );
    assert_eq!(
        t.login(&u, PW, None).await.err().and_then(|e| e.code()),
        Some(18456)
    );
    // ALTER USER … WITH PASSWORD changes a contained user's password (policy applies).
    err(
        &mut c,
        &format!("ALTER USER [{u}] WITH PASSWORD = N'short'"),
        33062,
    )
    .await;
    ok(
        &mut c,
        &format!("ALTER USER [{u}] WITH PASSWORD = N'N3w!Passw0rd'"),
    )
    .await;
    assert_eq!(
        t.login(&u, PW, Some(&d)).await.err().and_then(|e| e.code()),
        Some(18456)
    );
    t.login(&u, "N3w!Passw0rd", Some(&d))
        .await
        .expect("the new password works");
}

/// Catalog queries as providers write them: correlated subqueries work, and an unqualified
/// column that two joined views share is 209 (a query that only the emulator accepted would
/// break on a real server).
#[tokio::test]
async fn correlated_subqueries_and_ambiguous_columns() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("dcorr");
    ok(&mut c, &format!("CREATE DATABASE [{d}]; USE [{d}]; CREATE USER U WITHOUT LOGIN; CREATE USER V WITHOUT LOGIN; ALTER ROLE db_datareader ADD MEMBER U")).await;
    let rows = ok(
        &mut c,
        "SELECT p.name FROM sys.database_principals p WHERE p.type = 'S' AND EXISTS (SELECT 1 FROM sys.database_role_members m WHERE m.member_principal_id = p.principal_id) ORDER BY p.name",
    )
    .await;
    let names: Vec<&str> = rows[0].iter().filter_map(|r| r.get::<&str, _>(0)).collect();
    assert_eq!(names, vec!["dbo", "U"]);
    let n = int(
        &mut c,
        "SELECT (SELECT COUNT(*) FROM sys.database_role_members m WHERE m.member_principal_id = p.principal_id) FROM sys.database_principals p WHERE p.name = 'U'",
    )
    .await;
    assert_eq!(n, Some(1));
    let e = err(
        &mut c,
        "SELECT name FROM sys.database_principals p JOIN sys.schemas s ON s.principal_id = p.principal_id",
        209,
    )
    .await;
    assert_eq!(e.message(), "Ambiguous column name 'name'.");
}

/// Role renames (B5), the table name not qualifying an aliased source (4104), and MUST_CHANGE
/// on ALTER LOGIN without CHECK_EXPIRATION (15099).
#[tokio::test]
async fn role_rename_alias_scope_and_must_change() {
    let t = target().await;
    let mut c = t.sa().await;
    let (d, l) = (t.n("dren"), t.n("Lmc"));
    ok(
        &mut c,
        &format!("CREATE DATABASE [{d}]; USE [{d}]; CREATE ROLE r1; CREATE ROLE r2"),
    )
    .await;
    ok(&mut c, "ALTER ROLE r1 WITH NAME = r3").await;
    assert_eq!(
        count(
            &mut c,
            "SELECT 1 FROM sys.database_principals WHERE name IN ('r1', 'r3')"
        )
        .await,
        1
    );
    err(&mut c, "ALTER ROLE r3 WITH NAME = r2", 15023).await;
    err(&mut c, "ALTER ROLE nosuch WITH NAME = r9", 15151).await;
    let e = err(
        &mut c,
        "SELECT database_principals.name FROM sys.database_principals p",
        4104,
    )
    .await;
    assert_eq!(
        e.message(),
        "The multi-part identifier \"database_principals.name\" could not be bound."
    );
    ok(
        &mut c,
        &format!("USE master; CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'"),
    )
    .await;
    err(
        &mut c,
        &format!("ALTER LOGIN [{l}] WITH PASSWORD = 'N3w!Passw0rd' MUST_CHANGE"),
        15099,
    )
    .await;
}

/// sysname is nvarchar(128): lengths count UTF-16 code units, so a character outside the BMP
/// counts twice (64 emoji fit, 65 do not).
#[tokio::test]
async fn identifier_lengths_count_utf16_units() {
    let t = target().await;
    let mut c = t.sa().await;
    let fits = "😀".repeat(64);
    let too_long = "😀".repeat(65);
    assert_eq!(int(&mut c, &format!("SELECT LEN(N'{fits}')")).await, Some(128));
    assert!(
        text(&mut c, &format!("SELECT QUOTENAME(N'{fits}')"))
            .await
            .is_some()
    );
    assert_eq!(
        text(&mut c, &format!("SELECT QUOTENAME(N'{too_long}')")).await,
        None
    );
    err(&mut c, &format!("CREATE ROLE [{too_long}]"), 103).await;
}

/// A literal without N is varchar in code page 1252: other characters become '?'. A provider
/// that writes a password as '…' instead of N'…' sets a different password than it thinks;
/// the emulator must show that, not hide it.
#[tokio::test]
async fn non_unicode_literals_lose_characters() {
    let t = target().await;
    let mut c = t.sa().await;
    assert_eq!(
        text(&mut c, "SELECT CAST('Zürich データ' AS nvarchar(20))")
            .await
            .as_deref(),
        Some("Zürich ???")
    );
    assert_eq!(
        text(&mut c, "SELECT N'Zürich データ'").await.as_deref(),
        Some("Zürich データ")
    );
    let l = t.n("Lcp");
    ok(
        &mut c,
        &format!("CREATE LOGIN [{l}] WITH PASSWORD = 'Pässwörd!データ1'"),
    )
    .await;
    assert_eq!(
        t.login(&l, "Pässwörd!データ1", None)
            .await
            .err()
            .and_then(|e| e.code()),
        Some(18456)
    );
    t.login(&l, "Pässwörd!???1", None)
        .await
        .expect("the password the server actually stored");
}

/// `FROM EXTERNAL PROVIDER` resolves names in the configured stub directory (users and apps
/// type E, groups type X); an unknown name is 33134. Needs the emulator's directory.
#[tokio::test]
async fn external_principals_resolve_through_the_stub_directory() {
    use mssql_emulator::catalog::EntraPrincipal;
    let directory = vec![
        EntraPrincipal {
            name: "alice@contoso.com".into(),
            object_id: "11111111-2222-3333-4444-555555555555".into(),
            group: false,
        },
        EntraPrincipal {
            name: "dba-group".into(),
            object_id: "66666666-7777-8888-9999-000000000000".into(),
            group: true,
        },
    ];
    let emu = Emulator::start(Config {
        entra_directory: directory,
        ..Config::default()
    })
    .await
    .expect("start");
    let base = tiberius::Config::from_ado_string(&emu.ado_string("sa", mssql_emulator::DEFAULT_SA_PASSWORD))
        .expect("ado");
    let mut c = connect(base).await.expect("connect");
    ok(&mut c, "CREATE LOGIN [alice@contoso.com] FROM EXTERNAL PROVIDER; CREATE LOGIN [dba-group] FROM EXTERNAL PROVIDER").await;
    let rows = ok(&mut c, "SELECT type FROM sys.server_principals WHERE name IN ('alice@contoso.com', 'dba-group') ORDER BY name").await;
    let types: Vec<&str> = rows[0].iter().filter_map(|r| r.get::<&str, _>(0)).collect();
    assert_eq!(types, vec!["E", "X"]);
    let e = err(
        &mut c,
        "CREATE LOGIN [nobody@contoso.com] FROM EXTERNAL PROVIDER",
        33134,
    )
    .await;
    assert_eq!(e.state(), 72);
    ok(
        &mut c,
        "CREATE DATABASE dx; USE dx; CREATE USER [dba-group] FROM EXTERNAL PROVIDER",
    )
    .await;
    assert_eq!(
        text(
            &mut c,
            "SELECT type_desc FROM sys.database_principals WHERE name = 'dba-group'"
        )
        .await
        .as_deref(),
        Some("EXTERNAL_GROUP")
    );
}

/// GROUP BY with HAVING and ORDER BY over catalog views; an ungrouped column is 8120.
#[tokio::test]
async fn group_by_over_catalog_views() {
    let t = target().await;
    let mut c = t.sa().await;
    let d = t.n("dgrp");
    ok(&mut c, &format!("CREATE DATABASE [{d}]; USE [{d}]; CREATE USER U WITHOUT LOGIN; CREATE USER V WITHOUT LOGIN; ALTER ROLE db_datareader ADD MEMBER U; ALTER ROLE db_datareader ADD MEMBER V")).await;
    let rows = ok(
        &mut c,
        "SELECT r.name, COUNT(*) AS n FROM sys.database_role_members m JOIN sys.database_principals r ON r.principal_id = m.role_principal_id GROUP BY r.name HAVING COUNT(*) >= 1 ORDER BY n DESC, r.name",
    )
    .await;
    let got: Vec<(String, Option<i64>)> = rows[0]
        .iter()
        .map(|r| {
            (
                r.get::<&str, _>(0).unwrap_or_default().to_string(),
                cell_int(r, 1),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("db_datareader".to_string(), Some(2)),
            ("db_owner".to_string(), Some(1))
        ]
    );
    err(
        &mut c,
        "SELECT name, COUNT(*) FROM sys.schemas GROUP BY principal_id",
        8120,
    )
    .await;
}

/// ALTER DATABASE … COLLATE needs the database to itself: with another session in it the
/// server answers 5030 then 5072.
#[tokio::test]
async fn collate_needs_exclusive_access() {
    let t = target().await;
    let mut a = t.sa().await;
    let mut b = t.sa().await;
    let d = t.n("dcoll");
    ok(&mut a, &format!("CREATE DATABASE [{d}]")).await;
    ok(&mut b, &format!("USE [{d}]")).await;
    err(
        &mut a,
        &format!("ALTER DATABASE [{d}] COLLATE Latin1_General_CS_AS"),
        5030,
    )
    .await;
    ok(&mut b, "USE master").await;
    ok(
        &mut a,
        &format!("ALTER DATABASE [{d}] COLLATE Latin1_General_CS_AS"),
    )
    .await;
    assert_eq!(
        text(
            &mut a,
            &format!("SELECT collation_name FROM sys.databases WHERE name = '{d}'")
        )
        .await
        .as_deref(),
        Some("Latin1_General_CS_AS")
    );
}

/// TRY…CATCH (spec C1.5, v1.1): errors inside TRY go to CATCH with ERROR_*() describing them,
/// `THROW;` re-raises, errors inside EXEC(…) are caught too, and compile errors are not.
#[tokio::test]
async fn try_catch() {
    let t = target().await;
    let mut c = t.sa().await;
    let l = t.n("Ltry");
    let rows = ok(
        &mut c,
        &format!("BEGIN TRY CREATE LOGIN [{l}] WITH PASSWORD = 'Ab1!' END TRY BEGIN CATCH SELECT ERROR_NUMBER(), ERROR_SEVERITY(), ERROR_STATE() END CATCH"),
    )
    .await;
    let r = &rows[0][0];
    assert_eq!(
        (cell_int(r, 0), cell_int(r, 1), cell_int(r, 2)),
        (Some(33062), Some(16), Some(2))
    );
    let rows = ok(
        &mut c,
        "BEGIN TRY DROP DATABASE nope_try; SELECT 1 AS x END TRY BEGIN CATCH SELECT 2 AS y END CATCH",
    )
    .await;
    assert_eq!(rows.len(), 1, "the statement after the error did not run");
    assert_eq!(cell_int(&rows[0][0], 0), Some(2));
    let e = err(
        &mut c,
        "BEGIN TRY DROP DATABASE nope_try END TRY BEGIN CATCH THROW; END CATCH",
        3701,
    )
    .await;
    assert_eq!(e.class(), 11);
    assert_eq!(
        int(
            &mut c,
            "BEGIN TRY EXEC('CREATE SCHEMA dbo') END TRY BEGIN CATCH SELECT ERROR_NUMBER() END CATCH"
        )
        .await,
        Some(2714)
    );
    err(
        &mut c,
        "BEGIN TRY SELECT FROM WHERE END TRY BEGIN CATCH SELECT 1 END CATCH",
        156,
    )
    .await;
    assert_eq!(
        int(
            &mut c,
            "SELECT CASE WHEN ERROR_NUMBER() IS NULL THEN 1 ELSE 0 END"
        )
        .await,
        Some(1),
        "NULL outside CATCH"
    );
}

/// UNION [ALL] over catalog views, ordered as a whole; unequal column counts are 205.
#[tokio::test]
async fn union_queries() {
    let t = target().await;
    let mut c = t.sa().await;
    let rows = ok(
        &mut c,
        "SELECT name FROM sys.server_principals WHERE name = 'sa' UNION ALL SELECT name FROM sys.databases WHERE name = 'master' UNION SELECT N'sa' ORDER BY name",
    )
    .await;
    let names: Vec<&str> = rows[0].iter().filter_map(|r| r.get::<&str, _>(0)).collect();
    assert_eq!(names, vec!["master", "sa"]);
    err(&mut c, "SELECT 1, 2 UNION SELECT 1", 205).await;
}
