//! Statement shapes the provider's worker issues through tiberius (parameters via
//! sp_executesql, dynamic SQL built server-side with QUOTENAME, DDL run in another database
//! through `[db].sys.sp_executesql`). Honours `MSSQL_TEST_URL` like every SQL test.

mod common;

use common::*;

const PW: &str = "Str0ng!Passw0rd";

/// Identifiers travel as parameters and are quoted server-side; the password is a literal
/// built with QUOTENAME(…, '''') (fine for passwords up to 128 characters).
#[tokio::test]
async fn dynamic_create_login_with_parameters() {
    let t = target().await;
    let mut c = t.sa().await;
    let l = t.n("dyn]login");
    let sql = "DECLARE @s nvarchar(max) = N'CREATE LOGIN ' + QUOTENAME(@P1) + N' WITH PASSWORD = ' + QUOTENAME(@P2, '''') + N', CHECK_POLICY = ON'; EXEC sp_executesql @s";
    c.execute(sql, &[&l.as_str(), &PW])
        .await
        .expect("dynamic CREATE LOGIN");
    let rows = rows_of(
        c.query(
            "SELECT principal_id FROM sys.server_principals WHERE name = @P1",
            &[&l.as_str()],
        )
        .await
        .expect("q"),
    )
    .await;
    assert_eq!(rows.len(), 1, "the ']' in the name was escaped by QUOTENAME");
    t.login(&l, PW, None).await.expect("the new login works");
    let e = c.execute(sql, &[&l.as_str(), &PW]).await.expect_err("duplicate");
    assert_eq!(e.code(), Some(15025));
}

/// `EXEC [db].sys.sp_executesql` runs in that database without changing the session's.
#[tokio::test]
async fn sp_executesql_in_another_database() {
    let t = target().await;
    let mut c = t.sa().await;
    let (d, u) = (t.n("dpat"), t.n("upat"));
    ok(&mut c, &format!("CREATE DATABASE [{d}]")).await;
    let sql = format!(
        "DECLARE @s nvarchar(max) = N'CREATE USER ' + QUOTENAME(@P1) + N' WITHOUT LOGIN'; EXEC [{d}].sys.sp_executesql @s"
    );
    c.execute(sql.as_str(), &[&u.as_str()])
        .await
        .expect("create user in another database");
    assert_eq!(text(&mut c, "SELECT DB_NAME()").await.as_deref(), Some("master"));
    let q = format!("SELECT name FROM [{d}].sys.database_principals WHERE name = @P1");
    assert_eq!(
        rows_of(c.query(q.as_str(), &[&u.as_str()]).await.expect("q"))
            .await
            .len(),
        1
    );
    let q = "SELECT COUNT(*) FROM sys.database_principals WHERE name = @P1";
    let n: i32 = rows_of(c.query(q, &[&u.as_str()]).await.expect("q")).await[0]
        .get(0)
        .expect("count");
    assert_eq!(n, 0, "not created in master");
}

/// sp_executesql with @stmt/@params named; NULL-class HAS_PERMS_BY_NAME is server scope;
/// DATABASEPROPERTYEX answers the status check providers make before DDL.
#[tokio::test]
async fn named_executesql_and_property_functions() {
    let t = target().await;
    let mut c = t.sa().await;
    assert_eq!(
        int(
            &mut c,
            "EXEC sp_executesql @stmt = N'SELECT @x + 1', @params = N'@x int', @x = 5"
        )
        .await,
        Some(6)
    );
    assert_eq!(
        int(
            &mut c,
            "SELECT HAS_PERMS_BY_NAME(NULL, NULL, 'VIEW SERVER STATE')"
        )
        .await,
        Some(1)
    );
    assert_eq!(
        text(
            &mut c,
            "SELECT CAST(DATABASEPROPERTYEX('master', 'Status') AS nvarchar(60))"
        )
        .await
        .as_deref(),
        Some("ONLINE")
    );
    let e = run(&mut c, "EXEC sp_executesql N'SELECT @x', N'@x int'")
        .await
        .expect_err("missing parameter");
    assert_eq!(e.code(), Some(8178));
}
