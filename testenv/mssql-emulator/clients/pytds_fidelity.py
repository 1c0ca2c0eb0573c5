"""Fidelity checks of the SQL Server emulator through python-tds (pytds), an independent,
pure-Python TDS client. Each case names the spec C2 case it covers. A disagreement between
this client and the emulator is an emulator bug until shown otherwise.

Environment: MSSQL_HOST, MSSQL_PORT, MSSQL_USER, MSSQL_PASSWORD (a sysadmin login);
MSSQL_CAFILE (the server certificate, PEM) turns on the TLS cases (pytds needs pyOpenSSL for
them). Object names carry MSSQL_SUFFIX (default: a random one) so the script can also run
against a real server. Exit status 0 only if every case passed.
"""

import os
import sys
import traceback
import uuid

import pytds

HOST = os.environ.get("MSSQL_HOST", "127.0.0.1")
PORT = int(os.environ.get("MSSQL_PORT", "1433"))
USER = os.environ.get("MSSQL_USER", "sa")
PASSWORD = os.environ["MSSQL_PASSWORD"]
SUFFIX = os.environ.get("MSSQL_SUFFIX", "_" + uuid.uuid4().hex[:8])
PW = "Str0ng!Passw0rd"


def n(base):
    return base + SUFFIX


def connect(user=USER, password=PASSWORD, database=None, autocommit=True):
    # No cafile: pytds offers no encryption (ENCRYPTION=2), so the exchange is plaintext.
    return pytds.connect(server=HOST, port=PORT, user=user, password=password,
                         database=database, autocommit=autocommit, login_timeout=15, timeout=30)


def run(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = []
        while True:
            try:
                rows.append(cur.fetchall())
            except pytds.ProgrammingError:
                # No result set for this statement.
                pass
            if not cur.nextset():
                break
        return rows


def scalar(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


def expect_error(conn, sql, number, state=None, level=None, text=None):
    try:
        run(conn, sql)
    except pytds.Error as e:
        got = getattr(e, "msg_no", None) or getattr(e, "number", None)
        assert got == number, f"{sql!r}: expected error {number}, got {got}: {e}"
        if state is not None:
            assert e.state == state, f"{sql!r}: state {e.state}, expected {state}"
        if level is not None:
            assert e.severity == level, f"{sql!r}: level {e.severity}, expected {level}"
        if text is not None:
            assert e.text == text, f"{sql!r}: text {e.text!r}, expected {text!r}"
        return e
    raise AssertionError(f"{sql!r}: expected error {number}, got success")


CASES = []


def case(fn):
    CASES.append(fn)
    return fn


@case
def c01_plaintext_login_and_select_1():
    with connect() as c:
        assert scalar(c, "SELECT 1") == 1
        assert scalar(c, "SELECT @@SPID") >= 51
        assert scalar(c, "SELECT DB_NAME()") == "master"


@case
def c02_c03_tls_full_and_login_only():
    # pytds with cafile asks for encryption (ENCRYPTION=1 → full TLS); with enc_login_only it
    # sends OFF and encrypts only the LOGIN7. Its TLS is OpenSSL, reading handshake flights
    # from PRELOGIN packets up to EOM.
    cafile = os.environ.get("MSSQL_CAFILE")
    if not cafile:
        print("skip pytds c02_c03_tls_full_and_login_only: MSSQL_CAFILE not set")
        return
    for login_only in (False, True):
        with pytds.connect(server=HOST, port=PORT, user=USER, password=PASSWORD, cafile=cafile,
                           validate_host=False, enc_login_only=login_only, autocommit=True,
                           login_timeout=15, timeout=30) as c:
            assert scalar(c, "SELECT 1") == 1, login_only
            assert scalar(c, "SELECT REPLICATE(CAST(N'q' AS nvarchar(max)), 9000)") == "q" * 9000


@case
def c07_wrong_password_is_18456():
    try:
        connect(password="wrong").close()
    except pytds.Error as e:
        assert getattr(e, "msg_no", None) == 18456, e
        return
    raise AssertionError("login with a wrong password succeeded")


@case
def c08_missing_database_is_4060():
    try:
        connect(database="nope" + SUFFIX).close()
    except pytds.Error as e:
        assert getattr(e, "msg_no", None) in (4060, 18456), e
        return
    raise AssertionError("login to a missing database succeeded")


@case
def c12_parameters_travel_as_rpc():
    with connect() as c:
        assert scalar(c, "SELECT %s", ("x",)) == "x"
        assert scalar(c, "SELECT %s + 1", (41,)) == 42
        assert scalar(c, "SELECT %s", (None,)) is None


@case
def c16_autocommit_off_uses_tm_requests():
    # pytds sends TM BEGIN at connect when autocommit is off; CREATE DATABASE then fails with 226.
    with connect(autocommit=False) as c:
        assert scalar(c, "SELECT @@TRANCOUNT") == 1
        expect_error(c, f"CREATE DATABASE [{n('x16')}]", 226)
        c.commit()
        assert scalar(c, "SELECT @@TRANCOUNT") == 1, "commit() begins the next transaction"
        c.rollback()


@case
def c19_use_changes_the_session_database():
    d = n("db19")
    with connect() as c:
        run(c, f"CREATE DATABASE [{d}]")
        run(c, f"USE [{d}]")
        assert scalar(c, "SELECT DB_NAME()") == d
        run(c, "USE master")
        run(c, f"DROP DATABASE [{d}]")


@case
def c20_serverproperty_as_variant():
    with connect() as c:
        v = scalar(c, "SELECT SERVERPROPERTY('ProductVersion')")
        assert str(v).startswith("16.0."), v
        assert scalar(c, "SELECT CAST(SERVERPROPERTY('EngineEdition') AS int)") in (2, 3, 4, 5, 8)


@case
def c21_duplicate_database():
    d = n("d21")
    with connect() as c:
        run(c, f"CREATE DATABASE [{d}]")
        expect_error(c, f"CREATE DATABASE [{d}]", 1801, state=3, level=16)
        run(c, f"DROP DATABASE [{d}]")


@case
def c22_drop_missing_database():
    with connect() as c:
        expect_error(c, f"DROP DATABASE [{n('nope')}]", 3701, level=11)
        run(c, f"DROP DATABASE IF EXISTS [{n('nope')}]")


@case
def c30_c31_logins_and_policy():
    l = n("L30")
    with connect() as c:
        run(c, f"CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'")
        expect_error(c, f"CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'", 15025,
                     text=f"The server principal '{l}' already exists.")
        expect_error(c, f"CREATE LOGIN [{n('L31')}] WITH PASSWORD = 'Ab1!'", 33062)
        expect_error(c, f"CREATE LOGIN [{n('L31')}] WITH PASSWORD = 'abcdefghij'", 33064, state=2)
    with connect(user=l, password=PW) as lc:
        assert scalar(lc, "SELECT SUSER_SNAME()") == l
        expect_error(lc, f"CREATE DATABASE [{n('y38')}]", 262, level=14,
                     text="CREATE DATABASE permission denied in database 'master'.")
    with connect() as c:
        run(c, f"DROP LOGIN [{l}]")


@case
def c33_drop_login_has_no_if_exists():
    with connect() as c:
        expect_error(c, f"DROP LOGIN [{n('nope')}]", 15151)
        expect_error(c, f"DROP LOGIN IF EXISTS [{n('nope')}]", 156,
                     text="Incorrect syntax near the keyword 'IF'.")


@case
def c41_c47_users():
    d, l = n("d41"), n("L41")
    with connect() as c:
        run(c, f"CREATE DATABASE [{d}]; CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'")
        run(c, f"USE [{d}]")
        run(c, f"CREATE USER U FOR LOGIN [{l}]")
        expect_error(c, f"CREATE USER U FOR LOGIN [{l}]", 15023)
        expect_error(c, f"CREATE USER U2 FOR LOGIN [{l}]", 15063)
        expect_error(c, "CREATE USER U3 FOR LOGIN nope_login_x", 15007)
        expect_error(c, "DROP USER dbo", 15150)
        rows = run(c, "SELECT p.type, p.state FROM sys.database_permissions p "
                      "JOIN sys.database_principals u ON u.principal_id = p.grantee_principal_id "
                      "WHERE u.name = 'U'")
        assert [tuple(r) for r in rows[0]] == [("CO  ", "G")], rows
        run(c, "DROP USER U; USE master")
        run(c, f"DROP DATABASE [{d}]; DROP LOGIN [{l}]")


@case
def c50_create_schema_batch_rules():
    d = n("d50")
    with connect() as c:
        run(c, f"CREATE DATABASE [{d}]")
        run(c, f"USE [{d}]")
        expect_error(c, "IF NOT EXISTS (SELECT 1 FROM sys.schemas WHERE name='s2') CREATE SCHEMA s2", 156)
        expect_error(c, "SELECT 1; CREATE SCHEMA s3", 111)
        run(c, "EXEC('CREATE SCHEMA s1')")
        expect_error(c, "EXEC('CREATE SCHEMA s1')", 2714, state=6)
        run(c, "USE master")
        run(c, f"DROP DATABASE [{d}]")


@case
def c53_c58_roles_and_permissions():
    d = n("d53")
    with connect() as c:
        run(c, f"CREATE DATABASE [{d}]")
        run(c, f"USE [{d}]")
        run(c, "CREATE USER U WITHOUT LOGIN; EXEC('CREATE SCHEMA s1')")
        run(c, "ALTER ROLE db_datareader ADD MEMBER U; ALTER ROLE db_datareader ADD MEMBER U")
        assert scalar(c, "SELECT COUNT(*) FROM sys.database_role_members WHERE member_principal_id = USER_ID('U')") == 1
        expect_error(c, "ALTER ROLE db_owner ADD MEMBER dbo", 15405, level=11)
        run(c, "GRANT SELECT ON SCHEMA::s1 TO U")
        run(c, "DENY SELECT ON SCHEMA::s1 TO U")
        rows = run(c, "SELECT state FROM sys.database_permissions WHERE class = 3 AND grantee_principal_id = USER_ID('U')")
        assert [r[0] for r in rows[0]] == ["D"], rows
        run(c, "REVOKE SELECT ON SCHEMA::s1 FROM U")
        assert scalar(c, "SELECT COUNT(*) FROM sys.database_permissions WHERE class = 3") == 0
        run(c, "USE master")
        run(c, f"DROP DATABASE [{d}]")


@case
def c63_quotename():
    with connect() as c:
        rows = run(c, "SELECT QUOTENAME(N'a]b'), QUOTENAME(REPLICATE(N'x',129)), QUOTENAME(N'it''s','''')")
        assert tuple(rows[0][0]) == ("[a]]b]", None, "'it''s'"), rows


@case
def c65_batch_continues_after_statement_error():
    a, b = n("a1"), n("b1")
    with connect() as c:
        try:
            run(c, f"CREATE LOGIN [{a}] WITH PASSWORD = '{PW}'; CREATE LOGIN [{a}] WITH PASSWORD = '{PW}'; "
                   f"CREATE LOGIN [{b}] WITH PASSWORD = '{PW}'")
        except pytds.Error as e:
            assert e.msg_no == 15025, e
        assert scalar(c, f"SELECT COUNT(*) FROM sys.server_principals WHERE name IN ('{a}', '{b}')") == 2
        run(c, f"DROP LOGIN [{a}]; DROP LOGIN [{b}]")


@case
def c66_rollback_undoes_ddl():
    l = n("t1")
    with connect() as c:
        run(c, f"BEGIN TRAN; CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'; ROLLBACK")
        assert scalar(c, f"SELECT COUNT(*) FROM sys.server_principals WHERE name = '{l}'") == 0


def main():
    failed = 0
    for fn in CASES:
        try:
            fn()
            print(f"ok   pytds {fn.__name__}")
        except Exception:
            failed += 1
            print(f"FAIL pytds {fn.__name__}")
            traceback.print_exc(file=sys.stdout)
    print(f"pytds: {len(CASES) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
