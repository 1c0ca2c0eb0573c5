//! SQL text and values: statements as the planner emits them, parameters, secrets, the
//! mapping of SQL Server error numbers to domain errors, and client-side password checks.
//!
//! Nothing here does I/O; [`crate::exec`] runs what this module describes.

pub mod error;
pub mod password;
pub mod quote;

use apis::identifier::SqlName;
use std::fmt;

/// A secret value (a password). Never printed: `Debug` shows `[REDACTED]` and there is no
/// `Display`, so it cannot end up in a log line or a status by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that builds the literal.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

/// A value passed as an `@Pn` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// `nvarchar`.
    Text(String),
    /// `int`.
    Int(i32),
}

/// One T-SQL batch the worker runs, on one connection.
#[derive(Clone, PartialEq, Eq)]
pub struct Statement {
    /// Stable kind for metrics (`CREATE LOGIN`, `ALTER ROLE`, …).
    pub kind: &'static str,
    /// Database to run in; `None` runs in `master` (server-level objects).
    pub database: Option<SqlName>,
    /// The batch text.
    pub sql: String,
    /// `@P1…@Pn` values, if any (DDL takes none).
    pub params: Vec<Param>,
    /// Quoted secret literals inside `sql`, masked whenever the statement is shown.
    redact: Vec<String>,
}

impl Statement {
    /// A statement without secrets.
    pub fn new(kind: &'static str, database: Option<&SqlName>, sql: String) -> Self {
        Self {
            kind,
            database: database.cloned(),
            sql,
            params: Vec::new(),
            redact: Vec::new(),
        }
    }

    /// A statement containing the quoted secret literal `literal` (as produced by
    /// [`quote::quote_literal`]); it is masked in every rendering but the one sent.
    pub fn with_secret(mut self, literal: String) -> Self {
        self.redact.push(literal);
        self
    }

    /// Whether the statement carries a secret.
    pub fn is_sensitive(&self) -> bool {
        !self.redact.is_empty()
    }

    /// The text with every secret literal replaced by `N'***'`: the only form that may be
    /// logged, stored or compared in tests that must not see the secret.
    pub fn redacted(&self) -> String {
        let mut sql = self.sql.clone();
        for secret in &self.redact {
            sql = sql.replace(secret.as_str(), "N'***'");
        }
        sql
    }

    /// Masks the secrets of this statement in `text` (e.g. a server error message that
    /// quotes part of the statement).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.redact {
            out = out.replace(secret.as_str(), "N'***'");
            // The server may quote the bare value (without N'…') in a message.
            let inner = secret
                .strip_prefix("N'")
                .and_then(|s| s.strip_suffix('\''))
                .map(|s| s.replace("''", "'"))
                .unwrap_or_default();
            if !inner.is_empty() {
                out = out.replace(&inner, "***");
            }
        }
        out
    }
}

impl fmt::Debug for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Statement")
            .field("kind", &self.kind)
            .field("database", &self.database.as_ref().map(SqlName::as_str))
            .field("sql", &self.redacted())
            .field("params", &self.params)
            .finish()
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_render() {
        let lit = quote::quote_literal("S3cret'pw").unwrap();
        let st = Statement::new(
            "ALTER LOGIN",
            None,
            format!("ALTER LOGIN [a] WITH PASSWORD = {lit}"),
        )
        .with_secret(lit);
        assert_eq!(st.to_string(), "ALTER LOGIN [a] WITH PASSWORD = N'***'");
        assert!(!format!("{st:?}").contains("S3cret"));
        assert!(!format!("{:?}", Password::new("S3cret")).contains("S3cret"));
        assert_eq!(st.scrub("near 'S3cret'pw'"), "near '***'");
        assert!(
            st.sql.contains("S3cret''pw"),
            "the sent text has the doubled quote"
        );
    }
}

/// A value read from a catalog view, reduced to what the observers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// NULL.
    Null,
    /// Any integer type or bit.
    Int(i64),
    /// Any string type.
    Text(String),
    /// Any binary type (SIDs, hashes).
    Bytes(Vec<u8>),
}

/// One row of a result set, by column name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row(pub Vec<(String, Value)>);

impl Row {
    /// The value of column `name` (NULL when absent).
    pub fn get(&self, name: &str) -> &Value {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .unwrap_or(&Value::Null)
    }

    /// A text column.
    pub fn text(&self, name: &str) -> Option<String> {
        match self.get(name) {
            Value::Text(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }

    /// An integer (or bit) column.
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Value::Int(i) => Some(*i),
            Value::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A bit column; NULL reads as `None`.
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.int(name).map(|i| i != 0)
    }

    /// A binary column.
    pub fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        match self.get(name) {
            Value::Bytes(b) => Some(b.clone()),
            _ => None,
        }
    }
}

/// `0x…` upper-case hex, the way SQL Server prints binary values (SIDs in `atProvider`).
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// `@P1, @P2, …` for `n` parameters starting at `first`, and the parameters themselves, for
/// `WHERE name IN (…)` lists in the batched observe queries.
pub fn in_list<'a>(names: impl IntoIterator<Item = &'a SqlName>, params: &mut Vec<Param>) -> String {
    let mut out = Vec::new();
    for name in names {
        params.push(Param::Text(name.as_str().to_owned()));
        out.push(format!("@P{}", params.len()));
    }
    if out.is_empty() {
        // `IN ()` is a syntax error; NULL matches nothing.
        "NULL".to_owned()
    } else {
        out.join(", ")
    }
}
