//! Connection details for applications: the keys Crossplane defines (`username`, `password`,
//! `endpoint`, `port`) plus ready-made connection strings for the common drivers. Pure.
//!
//! Every value is escaped for its format, because passwords and names may contain `;`, `}`,
//! `'`, `&` or `@`: an unescaped `;` in an ADO.NET string would start a new keyword, an
//! unescaped `@` in a URL would move the host. Each format has its own escape function and its
//! own table test.

use std::collections::BTreeMap;

/// What goes into a connection Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details<'a> {
    /// Login or contained-user name.
    pub username: &'a str,
    /// Its password.
    pub password: &'a str,
    /// Server host.
    pub endpoint: &'a str,
    /// Server port.
    pub port: u16,
    /// Database to connect to (the user's database; `None` for a login).
    pub database: Option<&'a str>,
}

/// ADO.NET / ODBC value: wrap in `{…}` and double `}` (ODBC), or quote with `"` and double it
/// (ADO.NET). Always quoting is valid for both and never ambiguous.
fn ado_value(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}

fn odbc_value(value: &str) -> String {
    format!("{{{}}}", value.replace('}', "}}"))
}

/// JDBC (mssql-jdbc) value: braces, `}` doubled.
fn jdbc_value(value: &str) -> String {
    odbc_value(value)
}

/// URL component: percent-encode everything outside the unreserved set (RFC 3986).
fn url_component(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The Secret's data.
pub fn secret_data(d: &Details<'_>) -> BTreeMap<String, String> {
    let server = format!("{},{}", d.endpoint, d.port);
    let mut ado = format!(
        "Server={};User ID={};Password={};Encrypt=True",
        ado_value(&format!("tcp:{server}")),
        ado_value(d.username),
        ado_value(d.password)
    );
    let mut odbc = format!(
        "Driver={{ODBC Driver 18 for SQL Server}};Server={};Uid={};Pwd={};Encrypt=yes",
        odbc_value(&format!("tcp:{server}")),
        odbc_value(d.username),
        odbc_value(d.password)
    );
    let mut jdbc = format!(
        "jdbc:sqlserver://{}:{};user={};password={};encrypt=true",
        d.endpoint,
        d.port,
        jdbc_value(d.username),
        jdbc_value(d.password)
    );
    let mut go = format!(
        "sqlserver://{}:{}@{}:{}?encrypt=true",
        url_component(d.username),
        url_component(d.password),
        d.endpoint,
        d.port
    );
    if let Some(db) = d.database {
        ado.push_str(&format!(";Database={}", ado_value(db)));
        odbc.push_str(&format!(";Database={}", odbc_value(db)));
        jdbc.push_str(&format!(";databaseName={}", jdbc_value(db)));
        go.push_str(&format!("&database={}", url_component(db)));
    }
    let mut data = BTreeMap::from([
        ("username".to_owned(), d.username.to_owned()),
        ("password".to_owned(), d.password.to_owned()),
        ("endpoint".to_owned(), d.endpoint.to_owned()),
        ("port".to_owned(), d.port.to_string()),
        ("adonet".to_owned(), ado),
        ("odbc".to_owned(), odbc),
        ("jdbc".to_owned(), jdbc),
        ("gomssqldb".to_owned(), go),
    ]);
    if let Some(db) = d.database {
        data.insert("database".to_owned(), db.to_owned());
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details<'a>(user: &'a str, password: &'a str, db: Option<&'a str>) -> Details<'a> {
        Details {
            username: user,
            password,
            endpoint: "sql.example.internal",
            port: 1433,
            database: db,
        }
    }

    #[test]
    fn plain_values() {
        let data = secret_data(&details("app", "Pa55word", Some("appdb")));
        assert_eq!(
            data["adonet"],
            r#"Server="tcp:sql.example.internal,1433";User ID="app";Password="Pa55word";Encrypt=True;Database="appdb""#
        );
        assert_eq!(
            data["odbc"],
            "Driver={ODBC Driver 18 for SQL Server};Server={tcp:sql.example.internal,1433};Uid={app};Pwd={Pa55word};Encrypt=yes;Database={appdb}"
        );
        assert_eq!(
            data["jdbc"],
            "jdbc:sqlserver://sql.example.internal:1433;user={app};password={Pa55word};encrypt=true;databaseName={appdb}"
        );
        assert_eq!(
            data["gomssqldb"],
            "sqlserver://app:Pa55word@sql.example.internal:1433?encrypt=true&database=appdb"
        );
        assert_eq!(data["port"], "1433");
        assert_eq!(data["database"], "appdb");
    }

    /// Each case: a value that would break a naive format, and what it must become.
    #[test]
    fn hostile_values_stay_inside_their_field() {
        let cases = [
            ("a ; would start a new ADO.NET/ODBC keyword", "a;Database=master"),
            ("a quote would end an ADO.NET value", "a\"b"),
            ("a } would end an ODBC/JDBC value", "a}b;x={"),
            ("an @ would move the host in a URL", "p@ss:word/?#&"),
            ("non-ASCII", "pässwörd€"),
        ];
        for (why, password) in cases {
            let data = secret_data(&details("app", password, None));
            assert_eq!(data["password"], password, "{why}: raw key is raw");
            // ADO.NET: the only place the password appears is inside one quoted value.
            let ado = &data["adonet"];
            let quoted = format!("Password=\"{}\"", password.replace('"', "\"\""));
            assert!(ado.contains(&quoted), "{why}: {ado}");
            // ODBC/JDBC: inside braces with } doubled.
            let braced = format!("{{{}}}", password.replace('}', "}}"));
            assert!(data["odbc"].contains(&format!("Pwd={braced}")), "{why}");
            assert!(data["jdbc"].contains(&format!("password={braced}")), "{why}");
            // URL: the userinfo has no raw reserved characters.
            let go = &data["gomssqldb"];
            let userinfo = &go["sqlserver://".len()..go.rfind('@').unwrap()];
            assert!(!userinfo.contains(['@', '/', '?', '#', ';']), "{why}: {go}");
            assert!(
                go.ends_with("@sql.example.internal:1433?encrypt=true"),
                "{why}: host unchanged: {go}"
            );
        }
    }
}
