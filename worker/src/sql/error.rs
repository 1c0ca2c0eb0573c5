//! The one boundary where SQL Server error numbers become domain errors. Everything above
//! this module branches on [`ErrorKind`], never on a number; the number and the server's
//! message are kept for the WorkItem status.

use std::fmt;

/// Domain error categories, with a stable label each (metrics, `status.lastError.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The object already exists (a create that raced or an unseen object): treat as done.
    AlreadyExists,
    /// The object, or the database it lives in, does not exist (or is invisible to us).
    NotFound,
    /// The object is in use (sessions, owned objects): report and back off.
    InUse,
    /// Our login lacks a permission.
    PermissionDenied,
    /// The worker could not log in (18456 and friends): refresh credentials.
    AuthFailed,
    /// Worth retrying as is: I/O, timeouts, deadlocks, Azure throttling and failover.
    Transient,
    /// The server refused the request itself (password policy, bad option combination,
    /// unknown collation): retrying without a spec change will not help.
    Invalid,
    /// The Lease was lost before a mutation: the process must stop.
    LostLease,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The stable label.
    pub fn label(self) -> &'static str {
        match self {
            Self::AlreadyExists => "AlreadyExists",
            Self::NotFound => "NotFound",
            Self::InUse => "InUse",
            Self::PermissionDenied => "PermissionDenied",
            Self::AuthFailed => "AuthFailed",
            Self::Transient => "Transient",
            Self::Invalid => "Invalid",
            Self::LostLease => "LostLease",
            Self::Other => "Other",
        }
    }

    /// The category of a server error number (B8 of the emulator spec, checked against
    /// SQL Server's documented messages).
    pub fn of_number(number: u32) -> Self {
        match number {
            // login / user,role / database / object (schema) already exists
            15025 | 15023 | 1801 | 2714 => Self::AlreadyExists,
            // does not exist or no permission; database missing; cannot open database;
            // not a valid login; not a role member target
            15151 | 3701 | 911 | 4060 | 15007 | 15410 => Self::NotFound,
            // database in use; login logged in; owns a schema / objects / grants / roles;
            // schema still referenced; owns a database; role has members; exclusive access
            3702 | 15434 | 15138 | 15183 | 15284 | 15421 | 3729 | 15174 | 15144 | 5030 | 5061 => Self::InUse,
            262 | 15247 | 916 | 5011 | 229 | 230 | 300 | 15150 | 3708 => Self::PermissionDenied,
            18456 | 18470 | 18488 | 4064 => Self::AuthFailed,
            // deadlock victim, lock timeout, Azure SQL transient set, firewall (long backoff)
            1205 | 1222 | 40197 | 40501 | 40613 | 49918 | 49919 | 49920 | 4221 | 40615 => Self::Transient,
            15099 | 15122 | 15128 | 33062 | 33064 | 15048 | 448 | 12824 | 33233 | 15006 | 15419 | 15433
            | 15063 | 15021 | 33134 | 15405 | 15413 | 15081 | 15110 | 102 | 103 | 111 | 156 | 1038 => {
                Self::Invalid
            }
            _ => Self::Other,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// An error from talking to SQL Server, already categorized. The message never contains a
/// secret: statements carrying one scrub the server's text before it gets here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}{}: {message}", number.map(|n| format!(" (SQL error {n})")).unwrap_or_default())]
pub struct SqlError {
    /// Category.
    pub kind: ErrorKind,
    /// Server error number, when the server sent one.
    pub number: Option<u32>,
    /// Human-readable message.
    pub message: String,
}

impl SqlError {
    /// An error without a server number.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            number: None,
            message: message.into(),
        }
    }

    /// A server error.
    pub fn server(number: u32, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::of_number(number),
            number: Some(number),
            message: message.into(),
        }
    }

    /// Categorizes a tiberius error. `scrub` masks secrets of the statement that failed.
    pub fn from_tiberius(e: &tiberius::error::Error, scrub: &dyn Fn(&str) -> String) -> Self {
        use tiberius::error::Error as E;
        match e {
            E::Server(t) => Self::server(t.code(), scrub(t.message())),
            E::Io { message, .. } => Self::new(ErrorKind::Transient, format!("I/O: {}", scrub(message))),
            E::Tls(m) => Self::new(ErrorKind::Transient, format!("TLS: {m}")),
            E::Routing { host, port } => Self::new(
                ErrorKind::Transient,
                format!("server redirected more than once (last to {host}:{port})"),
            ),
            other => Self::new(ErrorKind::Other, scrub(&other.to_string())),
        }
    }

    /// Whether the cached connection should be dropped after this error.
    pub fn breaks_connection(&self) -> bool {
        // A transient error without a server number is I/O, TLS or a timeout: the stream
        // is in an unknown state. An auth failure means the credentials must be refreshed.
        (self.kind == ErrorKind::Transient && self.number.is_none()) || self.kind == ErrorKind::AuthFailed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_map_to_the_documented_categories() {
        let cases = [
            ("login exists: create is done", 15025, ErrorKind::AlreadyExists),
            ("user exists", 15023, ErrorKind::AlreadyExists),
            ("database exists", 1801, ErrorKind::AlreadyExists),
            ("schema exists", 2714, ErrorKind::AlreadyExists),
            ("drop of a missing login/user/schema", 15151, ErrorKind::NotFound),
            ("drop of a missing database", 3701, ErrorKind::NotFound),
            ("database of a user gone", 4060, ErrorKind::NotFound),
            ("database in use", 3702, ErrorKind::InUse),
            ("login has sessions", 15434, ErrorKind::InUse),
            ("user owns a schema", 15138, ErrorKind::InUse),
            ("schema still has objects", 3729, ErrorKind::InUse),
            ("no CREATE DATABASE permission", 262, ErrorKind::PermissionDenied),
            ("login failed", 18456, ErrorKind::AuthFailed),
            ("deadlock", 1205, ErrorKind::Transient),
            ("password policy", 33064, ErrorKind::Invalid),
            ("unmapped", 50000, ErrorKind::Other),
        ];
        for (why, n, want) in cases {
            assert_eq!(ErrorKind::of_number(n), want, "{why}");
        }
        let labels: std::collections::BTreeSet<_> = [
            ErrorKind::AlreadyExists,
            ErrorKind::NotFound,
            ErrorKind::InUse,
            ErrorKind::PermissionDenied,
            ErrorKind::AuthFailed,
            ErrorKind::Transient,
            ErrorKind::Invalid,
            ErrorKind::LostLease,
            ErrorKind::Other,
        ]
        .iter()
        .map(|k| k.label())
        .collect();
        assert_eq!(labels.len(), 9, "labels are distinct");
        assert_eq!(
            SqlError::server(3702, "in use").to_string(),
            "InUse (SQL error 3702): in use"
        );
    }
}
