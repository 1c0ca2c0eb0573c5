"""Fidelity checks of the SQL Server emulator through FreeTDS `tsql` (C, Debian freetds-bin),
an independent TDS client with its own PRELOGIN, TLS (GnuTLS, one encrypted LOGIN7 packet in
login-only mode) and token parser. Each case names the spec C2 case it covers.

Environment: MSSQL_HOST, MSSQL_PORT, MSSQL_USER, MSSQL_PASSWORD (a sysadmin login), TSQL (path
of tsql; default: found on PATH). Object names carry MSSQL_SUFFIX. Uses only the standard
library. Exit status 0 only if every case passed.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
import uuid

HOST = os.environ.get("MSSQL_HOST", "127.0.0.1")
PORT = os.environ.get("MSSQL_PORT", "1433")
USER = os.environ.get("MSSQL_USER", "sa")
PASSWORD = os.environ["MSSQL_PASSWORD"]
SUFFIX = os.environ.get("MSSQL_SUFFIX", "_" + uuid.uuid4().hex[:8])
TSQL = os.environ.get("TSQL") or shutil.which("tsql") or "tsql"
PW = "Str0ng!Passw0rd"

MSG = re.compile(r"Msg (\d+) \(severity (\d+), state (\d+)\) from \S+(?: Line \d+)?:\s*\n\s*\"(.*)\"")


def n(base):
    return base + SUFFIX


def tsql(batches, user=USER, password=PASSWORD, encryption="request"):
    """Runs each batch (ended by `go`) in one tsql session; returns (stdout, stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "freetds.conf")
        with open(conf, "w") as f:
            f.write(f"[global]\n\ttds version = 7.4\n\tencryption = {encryption}\n")
        env = dict(os.environ, FREETDSCONF=conf, TDSVER="7.4")
        script = "".join(b + "\ngo\n" for b in batches) + "exit\n"
        p = subprocess.run([TSQL, "-H", HOST, "-p", str(PORT), "-U", user, "-P", password, "-o", "q"],
                           input=script, capture_output=True, text=True, env=env, timeout=60)
        return p.stdout, p.stderr


def messages(stderr):
    return [(int(a), int(b), int(c), d) for a, b, c, d in MSG.findall(stderr)]


def rows(stdout):
    return [line.split("\t") for line in stdout.splitlines() if line.strip()]


CASES = []


def case(fn):
    CASES.append(fn)
    return fn


@case
def c02_c03_login_in_each_encryption_mode():
    # off: plaintext; request: login-only TLS (one encrypted LOGIN7 packet); require: full TLS.
    for enc in ("off", "request", "require"):
        out, err = tsql(["SELECT 1 AS one, DB_NAME() AS db"], encryption=enc)
        assert rows(out) == [["one", "db"], ["1", "master"]], (enc, out, err)


@case
def c07_wrong_password():
    out, err = tsql(["SELECT 1"], password="wrong")
    assert "Login failed for user" in err or any(m[0] == 18456 for m in messages(err)), (out, err)
    assert "1" not in rows(out)[1:2], out


@case
def c22_drop_missing_database_level_11():
    _, err = tsql([f"DROP DATABASE [{n('nope')}]"])
    assert messages(err) == [(3701, 11, 1, f"Cannot drop the database '{n('nope')}', because it does not exist or you do not have permission.")], err


@case
def c29_use_and_db_name():
    d = n("d29")
    out, err = tsql([f"CREATE DATABASE [{d}]", f"USE [{d}]", "SELECT DB_NAME() AS db", "USE master", f"DROP DATABASE [{d}]", "USE nope_db_x"])
    assert ["db"] in rows(out) and [d] in rows(out), (out, err)
    assert [m[:3] for m in messages(err)] == [(911, 16, 1)], err


@case
def c30_duplicate_login_text():
    l = n("L30")
    _, err = tsql([f"CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'", f"CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'", f"DROP LOGIN [{l}]"])
    assert messages(err) == [(15025, 16, 1, f"The server principal '{l}' already exists.")], err


@case
def c31_password_policy():
    _, err = tsql([f"CREATE LOGIN [{n('p')}] WITH PASSWORD = 'Ab1!'", f"CREATE LOGIN [{n('p')}] WITH PASSWORD = 'abcdefghij'"])
    assert [m[:3] for m in messages(err)] == [(33062, 16, 2), (33064, 16, 2)], err


@case
def c33_drop_login_if_exists_is_a_syntax_error():
    _, err = tsql(["DROP LOGIN IF EXISTS x"])
    assert messages(err) == [(156, 15, 1, "Incorrect syntax near the keyword 'IF'.")], err


@case
def c38_plain_login_permissions():
    l = n("L38")
    tsql([f"CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'"])
    out, err = tsql(["SELECT SUSER_SNAME() AS who", f"CREATE DATABASE [{n('y')}]"], user=l, password=PW)
    assert [l] in rows(out), out
    assert messages(err) == [(262, 14, 1, "CREATE DATABASE permission denied in database 'master'.")], err
    tsql([f"DROP LOGIN [{l}]"])


@case
def c50_schema_batch_rules():
    d = n("d50")
    out, err = tsql([f"CREATE DATABASE [{d}]", f"USE [{d}]",
                     "IF NOT EXISTS (SELECT 1 FROM sys.schemas WHERE name='s2') CREATE SCHEMA s2",
                     "SELECT 1 AS x; CREATE SCHEMA s3",
                     "EXEC('CREATE SCHEMA s1')", "EXEC('CREATE SCHEMA s1')",
                     "USE master", f"DROP DATABASE [{d}]"])
    assert [m[:3] for m in messages(err)] == [(156, 15, 1), (111, 15, 1), (2714, 16, 6)], err
    assert ["x"] not in rows(out), "nothing of a batch with a compile error runs"


@case
def c54_role_errors():
    d = n("d54")
    _, err = tsql([f"CREATE DATABASE [{d}]", f"USE [{d}]", "CREATE USER U WITHOUT LOGIN",
                   "ALTER ROLE nosuch ADD MEMBER U", "ALTER ROLE db_owner ADD MEMBER dbo",
                   "ALTER ROLE [public] ADD MEMBER U", "USE master", f"DROP DATABASE [{d}]"])
    assert [m[:3] for m in messages(err)] == [(15151, 16, 1), (15405, 11, 1), (15081, 16, 1)], err


@case
def error_lines_count_from_the_batch_start():
    # B0.1: the line of a runtime error is its statement's; a compile error's is where it is.
    _, err = tsql(["SELECT 1 AS a\nSELECT 2 AS b\nDROP DATABASE [" + n("nope") + "]",
                   "SELECT 1 AS a\n\nSELECT FROM WHERE"])
    lines = re.findall(r"Msg (\d+) \(severity \d+, state \d+\) from \S+ Line (\d+)", err)
    assert lines == [("3701", "3"), ("156", "3")], err


@case
def c63_quotename():
    out, _ = tsql(["SELECT QUOTENAME(N'a]b') AS a, QUOTENAME(N'it''s','''') AS b"])
    assert rows(out) == [["a", "b"], ["[a]]b]", "'it''s'"]], out


@case
def c13_large_result():
    out, err = tsql(["SELECT REPLICATE(CAST(N'y' AS nvarchar(max)), 6000) AS big"])
    r = rows(out)
    assert r[0] == ["big"] and r[1] == ["y" * 6000], (len(out), err)


@case
def c66_rollback():
    l = n("t1")
    out, err = tsql([f"BEGIN TRAN; CREATE LOGIN [{l}] WITH PASSWORD = '{PW}'; ROLLBACK",
                     f"SELECT COUNT(*) AS c FROM sys.server_principals WHERE name = '{l}'"])
    assert rows(out)[-1] == ["0"], (out, err)


def main():
    failed = 0
    for fn in CASES:
        try:
            fn()
            print(f"ok   tsql {fn.__name__}")
        except Exception:
            failed += 1
            print(f"FAIL tsql {fn.__name__}")
            traceback.print_exc(file=sys.stdout)
    print(f"tsql: {len(CASES) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
