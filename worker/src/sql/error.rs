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
    /// The server's TLS certificate is not signed by a CA the worker trusts (or is expired,
    /// not yet valid, or otherwise invalid): `tls.caSecretRef`/`caConfigMapRef` is wrong.
    CertificateUntrusted,
    /// The server's TLS certificate does not hold the host name the worker checks:
    /// `tls.hostNameInCertificate` (or the endpoint host) is wrong.
    CertificateNameMismatch,
    /// Any other TLS failure (handshake, protocol, a CA bundle that does not parse).
    TlsFailed,
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
            Self::CertificateUntrusted => "CertificateUntrusted",
            Self::CertificateNameMismatch => "CertificateNameMismatch",
            Self::TlsFailed => "TlsFailed",
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
            E::Tls(m) => Self::tls(m),
            E::Routing { host, port } => Self::new(
                ErrorKind::Transient,
                format!("server redirected more than once (last to {host}:{port})"),
            ),
            other => Self::new(ErrorKind::Other, scrub(&other.to_string())),
        }
    }

    /// Categorizes a TLS failure from its text (tiberius hands rustls's certificate error over
    /// as a string): which certificate problem it is, in words that name the setting to fix,
    /// without tiberius's advice about its own API (`trust_cert()` and friends).
    pub fn tls(raw: &str) -> Self {
        // tiberius: "the server's certificate was rejected during the TLS handshake: <rustls
        // CertificateError>.<hint> To connect anyway you can: …"
        const REJECTED: &str = "rejected during the TLS handshake: ";
        let certificate = raw.find(REJECTED).map(|at| {
            let rest = &raw[at + REJECTED.len()..];
            let end = [". To connect anyway", ". The SQL Server presented"]
                .iter()
                .filter_map(|m| rest.find(m))
                .min()
                .unwrap_or(rest.len());
            rest[..end].trim_end_matches('.').to_owned()
        });
        let Some(detail) = certificate else {
            // rustls errors outside certificate validation, as tiberius renders them.
            if raw.contains("InvalidCertificate") || raw.contains("invalid peer certificate") {
                return Self::tls_certificate(raw.to_owned());
            }
            return Self::new(
                ErrorKind::TlsFailed,
                format!("TLS handshake with SQL Server failed: {raw}"),
            );
        };
        Self::tls_certificate(detail)
    }

    fn tls_certificate(detail: String) -> Self {
        if detail.contains("not valid for name") || detail.contains("NotValidForName") {
            Self::new(
                ErrorKind::CertificateNameMismatch,
                format!(
                    "the server's TLS certificate does not match the host name ({detail}); set \
                     tls.hostNameInCertificate to a name the certificate holds"
                ),
            )
        } else {
            let what = if detail.contains("UnknownIssuer") {
                "is not signed by a trusted CA"
            } else if detail.contains("expired") || detail.contains("Expired") {
                "has expired"
            } else if detail.contains("not valid yet") || detail.contains("NotValidYet") {
                "is not valid yet"
            } else {
                "was rejected"
            };
            Self::new(
                ErrorKind::CertificateUntrusted,
                format!(
                    "the server's TLS certificate {what} ({detail}); set tls.caSecretRef or \
                     tls.caConfigMapRef to the CA that issued it"
                ),
            )
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
            ErrorKind::CertificateUntrusted,
            ErrorKind::CertificateNameMismatch,
            ErrorKind::TlsFailed,
            ErrorKind::Invalid,
            ErrorKind::LostLease,
            ErrorKind::Other,
        ]
        .iter()
        .map(|k| k.label())
        .collect();
        assert_eq!(labels.len(), 12, "labels are distinct");
        assert_eq!(
            SqlError::server(3702, "in use").to_string(),
            "InUse (SQL error 3702): in use"
        );
    }

    /// What tiberius 0.13 on rustls 0.23 says for each certificate problem (texts as rendered
    /// by `map_handshake_error` and rustls's `CertificateError` Display), and what we make of it.
    #[test]
    fn tls_failures_name_the_certificate_problem() {
        const ADVICE: &str = " To connect anyway you can: (1) trust a specific CA certificate with \
            `Config::trust_cert_ca(path)` … (3) skip certificate validation entirely with `Config::trust_cert()`";
        let rejected = |detail: &str| {
            format!("the server's certificate was rejected during the TLS handshake: {detail}.{ADVICE}")
        };
        // (why, tiberius text, kind, words the message must hold)
        let cases: Vec<(&str, String, ErrorKind, &[&str])> = vec![
            (
                "wrong CA: rustls renders UnknownIssuer with Debug",
                rejected("UnknownIssuer"),
                ErrorKind::CertificateUntrusted,
                &["not signed by a trusted CA", "UnknownIssuer", "tls.caSecretRef"],
            ),
            (
                "wrong host name: rustls 0.23 names what the certificate is valid for",
                rejected(
                    "certificate not valid for name \"wrong.test.local\"; certificate is only valid for \
                     DnsName(\"sql.test.local\") or IpAddress(127.0.0.1)",
                ),
                ErrorKind::CertificateNameMismatch,
                &[
                    "does not match the host name",
                    "wrong.test.local",
                    "sql.test.local",
                    "tls.hostNameInCertificate",
                ],
            ),
            (
                "older rustls: the name error without context",
                rejected("NotValidForName"),
                ErrorKind::CertificateNameMismatch,
                &["NotValidForName"],
            ),
            (
                "expired server certificate",
                rejected(
                    "certificate expired: verification time 2000 (UNIX), but certificate is not valid after 1000 (1000 seconds ago)",
                ),
                ErrorKind::CertificateUntrusted,
                &["has expired", "tls.caSecretRef"],
            ),
            (
                "tiberius's old-certificate hint is cut with its advice",
                format!(
                    "the server's certificate was rejected during the TLS handshake: Other(UnsupportedCertVersion). \
                     The SQL Server presented a certificate rustls considers too old.{ADVICE}"
                ),
                ErrorKind::CertificateUntrusted,
                &["was rejected", "UnsupportedCertVersion"],
            ),
            (
                "a handshake failure that is not about the certificate",
                "received fatal alert: HandshakeFailure".to_owned(),
                ErrorKind::TlsFailed,
                &["TLS handshake with SQL Server failed", "HandshakeFailure"],
            ),
            (
                "the certificate error without tiberius's wrapper",
                "invalid peer certificate: UnknownIssuer".to_owned(),
                ErrorKind::CertificateUntrusted,
                &["not signed by a trusted CA"],
            ),
        ];
        for (why, raw, kind, words) in cases {
            let e = SqlError::tls(&raw);
            assert_eq!(e.kind, kind, "{why}: {e}");
            for w in words {
                assert!(e.message.contains(w), "{why}: {w:?} missing from {:?}", e.message);
            }
            assert!(
                !e.message.contains("trust_cert"),
                "{why}: tiberius's API advice is dropped: {}",
                e.message
            );
            let via_tiberius =
                SqlError::from_tiberius(&tiberius::error::Error::Tls(raw.clone()), &|s| s.to_owned());
            assert_eq!(via_tiberius, e, "{why}: from_tiberius routes TLS errors here");
        }
    }
}
