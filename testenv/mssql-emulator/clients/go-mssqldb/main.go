// Fidelity checks of the SQL Server emulator through go-mssqldb, Microsoft's Go driver: an
// independent TDS implementation with its own login-only TLS (it drops TLS after the first
// LOGIN7 packet), attention handling, connection pooling with reset-connection, and RPC
// parameters. Each case names the spec C2 case it covers.
//
// Environment: MSSQL_HOST, MSSQL_PORT, MSSQL_USER, MSSQL_PASSWORD (a sysadmin login); object
// names carry MSSQL_SUFFIX. Exit status 0 only if every case passed.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	mssql "github.com/microsoft/go-mssqldb"
	"github.com/microsoft/go-mssqldb/msdsn"
)

const pw = "Str0ng!Passw0rd"

var suffix string

func n(base string) string { return base + suffix }

func dsn(user, password string, extra url.Values) string {
	q := url.Values{}
	q.Set("encrypt", "false") // login-only TLS: the emulator runs with --tls off
	q.Set("TrustServerCertificate", "true")
	q.Set("dial timeout", "15")
	for k, v := range extra {
		q[k] = v
	}
	u := &url.URL{Scheme: "sqlserver", User: url.UserPassword(user, password),
		Host: os.Getenv("MSSQL_HOST") + ":" + os.Getenv("MSSQL_PORT"), RawQuery: q.Encode()}
	return u.String()
}

func open(user, password string, extra url.Values) *sql.DB {
	db, err := sql.Open("sqlserver", dsn(user, password, extra))
	if err != nil {
		panic(err)
	}
	return db
}

func sa() *sql.DB { return open(os.Getenv("MSSQL_USER"), os.Getenv("MSSQL_PASSWORD"), nil) }

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 60*time.Second)
}

func exec(db *sql.DB, q string, args ...any) error {
	c, cancel := ctx()
	defer cancel()
	_, err := db.ExecContext(c, q, args...)
	return err
}

func must(db *sql.DB, q string, args ...any) {
	if err := exec(db, q, args...); err != nil {
		panic(fmt.Sprintf("%s: %v", q, err))
	}
}

func scalar[T any](db *sql.DB, q string, args ...any) T {
	c, cancel := ctx()
	defer cancel()
	var v T
	if err := db.QueryRowContext(c, q, args...).Scan(&v); err != nil {
		panic(fmt.Sprintf("%s: %v", q, err))
	}
	return v
}

// expectErr checks the server error number (and class and state when >= 0).
func expectErr(err error, number int32, class, state int) {
	var e mssql.Error
	if !errors.As(err, &e) {
		panic(fmt.Sprintf("expected server error %d, got %v", number, err))
	}
	if e.Number != number || (class >= 0 && int(e.Class) != class) || (state >= 0 && int(e.State) != state) {
		panic(fmt.Sprintf("expected %d/%d/%d, got %d/%d/%d: %s", number, class, state, e.Number, e.Class, e.State, e.Message))
	}
}

type testCase struct {
	name string
	fn   func()
}

// unsignedToken builds a JWT whose signature the emulator does not check (it runs without a
// signing key in this harness).
func unsignedToken(oid string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(`{"oid":"`+oid+`","exp":4000000000}`)) + ".x"
}

// entraCase checks a token login through connector `mk`; emulator only (a real server would
// need a real Entra token).
func entraCase(name, oid string, mk func(cfg msdsn.Config, token string) (*mssql.Connector, error)) func() {
	return func() {
		if os.Getenv("MSSQL_EMULATOR") != "1" {
			fmt.Printf("skip go-mssqldb %s: needs the emulator\n", name)
			return
		}
		login := n(name[:3] + "app")
		db := sa()
		defer db.Close()
		must(db, fmt.Sprintf("CREATE LOGIN [%s] FROM EXTERNAL PROVIDER WITH OBJECT_ID = '%s'", login, oid))
		cfg, err := msdsn.Parse(dsn("", "", nil))
		if err != nil {
			panic(err)
		}
		conn, err := mk(cfg, unsignedToken(oid))
		if err != nil {
			panic(err)
		}
		tdb := sql.OpenDB(conn)
		defer tdb.Close()
		if v := scalar[string](tdb, "SELECT SUSER_SNAME()"); v != login {
			panic(v)
		}
		bad, err := mk(cfg, unsignedToken("00000000-0000-0000-0000-000000000001"))
		if err != nil {
			panic(err)
		}
		bdb := sql.OpenDB(bad)
		defer bdb.Close()
		c, cancel := ctx()
		defer cancel()
		if err := bdb.PingContext(c); err == nil || !strings.Contains(err.Error(), "Login failed") {
			panic(fmt.Sprintf("unknown principal: expected a login failure, got %v", err))
		}
	}
}

var cases = []testCase{
	{"c17_security_token_connector", entraCase("c17_security_token_connector", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", func(cfg msdsn.Config, token string) (*mssql.Connector, error) {
		return mssql.NewSecurityTokenConnector(cfg, func(context.Context) (string, error) { return token, nil })
	})},
	{"c18_adal_workflow_fedauthinfo", entraCase("c18_adal_workflow_fedauthinfo", "3f2504e0-4f89-11d3-9a0c-0305e82c3318", func(cfg msdsn.Config, token string) (*mssql.Connector, error) {
		return mssql.NewActiveDirectoryTokenConnector(cfg, mssql.FedAuthADALWorkflowPassword, func(_ context.Context, spn, sts string) (string, error) {
			if spn == "" || sts == "" {
				return "", fmt.Errorf("FEDAUTHINFO without SPN or STS URL: %q %q", spn, sts)
			}
			return token, nil
		})
	})},
	{"c02_login_only_tls_login_and_select", func() {
		db := sa()
		defer db.Close()
		if v := scalar[int](db, "select 1;"); v != 1 {
			panic(v)
		}
		if v := scalar[string](db, "SELECT DB_NAME()"); v != "master" {
			panic(v)
		}
	}},
	{"c05_login7_over_two_packets_first_in_tls", func() {
		// packet size 512 with long host and app names: the LOGIN7 spans packets; go-mssqldb
		// encrypts only the first and sends the rest raw.
		extra := url.Values{}
		extra.Set("packet size", "512")
		extra.Set("app name", strings.Repeat("a", 300))
		extra.Set("workstation id", strings.Repeat("h", 120))
		db := open(os.Getenv("MSSQL_USER"), os.Getenv("MSSQL_PASSWORD"), extra)
		defer db.Close()
		if v := scalar[int](db, "SELECT 1"); v != 1 {
			panic(v)
		}
	}},
	{"c07_wrong_password", func() {
		db := open(os.Getenv("MSSQL_USER"), "wrong", nil)
		defer db.Close()
		c, cancel := ctx()
		defer cancel()
		err := db.PingContext(c)
		if err == nil || !strings.Contains(err.Error(), "Login failed") {
			panic(fmt.Sprintf("expected a login failure, got %v", err))
		}
	}},
	{"c12_rpc_parameters", func() {
		db := sa()
		defer db.Close()
		if v := scalar[string](db, "SELECT @p1", "x"); v != "x" {
			panic(v)
		}
		if v := scalar[int64](db, "SELECT @p1 + 1", 41); v != 42 {
			panic(v)
		}
		if v := scalar[string](db, "SELECT @name", sql.Named("name", "named")); v != "named" {
			panic(v)
		}
	}},
	{"c14_cancel_during_waitfor", func() {
		db := sa()
		defer db.Close()
		db.SetMaxOpenConns(1)
		c, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := db.ExecContext(c, "WAITFOR DELAY '00:00:05'")
		if err == nil {
			panic("WAITFOR was not cancelled")
		}
		if time.Since(start) > 4*time.Second {
			panic(fmt.Sprintf("cancel took %v", time.Since(start)))
		}
		// The same (only) connection works afterwards.
		if v := scalar[int](db, "SELECT 7"); v != 7 {
			panic(v)
		}
	}},
	{"c15_pooled_connection_is_reset", func() {
		d := n("db15")
		db := sa()
		defer db.Close()
		db.SetMaxOpenConns(1)
		must(db, fmt.Sprintf("CREATE DATABASE [%s]", d))
		must(db, fmt.Sprintf("USE [%s]", d))
		// The next use of the pooled connection carries RESETCONNECTION: back to master.
		if v := scalar[string](db, "SELECT DB_NAME()"); v != "master" {
			panic(v)
		}
		must(db, fmt.Sprintf("DROP DATABASE [%s]", d))
	}},
	{"c16_begin_tx_uses_tm_requests", func() {
		db := sa()
		defer db.Close()
		c, cancel := ctx()
		defer cancel()
		tx, err := db.BeginTx(c, nil)
		if err != nil {
			panic(err)
		}
		var tc int
		if err := tx.QueryRowContext(c, "SELECT @@TRANCOUNT").Scan(&tc); err != nil || tc != 1 {
			panic(fmt.Sprint(tc, err))
		}
		_, err = tx.ExecContext(c, fmt.Sprintf("CREATE DATABASE [%s]", n("x16")))
		expectErr(err, 226, 16, -1)
		if err := tx.Rollback(); err != nil {
			panic(err)
		}
	}},
	{"c21_c22_databases", func() {
		d := n("d21")
		db := sa()
		defer db.Close()
		must(db, fmt.Sprintf("CREATE DATABASE [%s]", d))
		expectErr(exec(db, fmt.Sprintf("CREATE DATABASE [%s]", d)), 1801, 16, 3)
		must(db, fmt.Sprintf("DROP DATABASE [%s]", d))
		expectErr(exec(db, fmt.Sprintf("DROP DATABASE [%s]", d)), 3701, 11, -1)
	}},
	{"c30_c33_logins", func() {
		l := n("L30")
		db := sa()
		defer db.Close()
		must(db, fmt.Sprintf("CREATE LOGIN [%s] WITH PASSWORD = '%s'", l, pw))
		expectErr(exec(db, fmt.Sprintf("CREATE LOGIN [%s] WITH PASSWORD = '%s'", l, pw)), 15025, 16, 1)
		expectErr(exec(db, fmt.Sprintf("CREATE LOGIN [%s] WITH PASSWORD = 'abcdefghij'", n("p"))), 33064, 16, 2)
		expectErr(exec(db, "DROP LOGIN IF EXISTS x"), 156, 15, 1)
		ldb := open(l, pw, nil)
		expectErr(exec(ldb, fmt.Sprintf("CREATE DATABASE [%s]", n("y"))), 262, 14, 1)
		ldb.Close()
	}},
	{"c50_schema_batch_rules", func() {
		d := n("d50")
		db := sa()
		defer db.Close()
		db.SetMaxOpenConns(1)
		must(db, fmt.Sprintf("CREATE DATABASE [%s]", d))
		c, cancel := ctx()
		defer cancel()
		conn, err := db.Conn(c)
		if err != nil {
			panic(err)
		}
		if _, err := conn.ExecContext(c, fmt.Sprintf("USE [%s]", d)); err != nil {
			panic(err)
		}
		_, err = conn.ExecContext(c, "IF NOT EXISTS (SELECT 1 FROM sys.schemas WHERE name='s2') CREATE SCHEMA s2")
		expectErr(err, 156, 15, 1)
		if _, err := conn.ExecContext(c, "EXEC('CREATE SCHEMA s1')"); err != nil {
			panic(err)
		}
		_, err = conn.ExecContext(c, "EXEC('CREATE SCHEMA s1')")
		expectErr(err, 2714, 16, 6)
		conn.Close()
	}},
	{"c63_quotename", func() {
		db := sa()
		defer db.Close()
		c, cancel := ctx()
		defer cancel()
		var a, c3 string
		var b sql.NullString
		if err := db.QueryRowContext(c, "SELECT QUOTENAME(N'a]b'), QUOTENAME(REPLICATE(N'x',129)), QUOTENAME(N'it''s','''')").Scan(&a, &b, &c3); err != nil {
			panic(err)
		}
		if a != "[a]]b]" || b.Valid || c3 != "'it''s'" {
			panic(fmt.Sprint(a, b, c3))
		}
	}},
	{"c20_serverproperty_variant", func() {
		db := sa()
		defer db.Close()
		v := scalar[string](db, "SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128))")
		if !strings.HasPrefix(v, "16.0.") {
			panic(v)
		}
	}},
}

func main() {
	if s := os.Getenv("MSSQL_SUFFIX"); s != "" {
		suffix = s
	} else {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		suffix = "_" + hex.EncodeToString(b)
	}
	failed := 0
	for _, tc := range cases {
		func() {
			defer func() {
				if r := recover(); r != nil {
					failed++
					fmt.Printf("FAIL go-mssqldb %s: %v\n", tc.name, r)
				}
			}()
			tc.fn()
			fmt.Printf("ok   go-mssqldb %s\n", tc.name)
		}()
	}
	fmt.Printf("go-mssqldb: %d passed, %d failed\n", len(cases)-failed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}
