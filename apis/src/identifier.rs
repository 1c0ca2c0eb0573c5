//! SQL Server identifiers (`sysname`) as the provider accepts them.
//!
//! The CRDs' CEL rules reject most bad names at `kubectl apply`; this module is the second,
//! authoritative check, because names also come from places CEL cannot see (the
//! `crossplane.io/external-name` annotation, resolved references) and because the apiserver
//! counts Unicode code points while SQL Server counts UTF-16 code units.
//!
//! What is accepted is deliberately broad: any character SQL Server allows inside a bracketed
//! identifier, including `]`, `'`, `[`, `;` and `--`. Making such names harmless is the job of
//! the one quoting function in the worker, not of this check.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest `sysname`, in UTF-16 code units (`nvarchar(128)`).
pub const MAX_SQL_NAME_UTF16: usize = 128;

/// Why a string is not a usable SQL Server identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty names do not exist in SQL Server (`[]` is error 1038).
    #[error("must not be empty")]
    Empty,
    /// Longer than `sysname` (SQL Server error 103).
    #[error("is {0} UTF-16 code units long; SQL Server allows at most 128")]
    TooLong(usize),
    /// NUL truncates names in some drivers; other control characters are never intended.
    #[error("must not contain NUL or other control characters")]
    ControlCharacter,
    /// SQL Server ignores trailing spaces when comparing names, so `a` and `a ` would be one
    /// object; leading or only whitespace is never intended either.
    #[error("must not start or end with whitespace")]
    SurroundingWhitespace,
}

/// Checks `name` against the rules above.
pub fn check_sql_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    if name.trim() != name {
        return Err(NameError::SurroundingWhitespace);
    }
    let units = name.encode_utf16().count();
    if units > MAX_SQL_NAME_UTF16 {
        return Err(NameError::TooLong(units));
    }
    Ok(())
}

/// A checked SQL Server identifier. Construct with [`SqlName::new`]; deserializing checks too,
/// so a worker reading a WorkItem re-validates what the provider wrote.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SqlName(String);

impl SqlName {
    /// Checks and wraps `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        check_sql_name(&name)?;
        Ok(Self(name))
    }

    /// The name as written (unquoted).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SqlName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<SqlName> for String {
    fn from(value: SqlName) -> Self {
        value.0
    }
}

impl fmt::Display for SqlName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl garde::Validate for SqlName {
    type Context = ();
    fn validate_into(&self, _: &(), parent: &mut dyn FnMut() -> garde::Path, report: &mut garde::Report) {
        if let Err(e) = check_sql_name(&self.0) {
            report.append(parent(), garde::Error::new(e.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each case: (why it exists, input, expected outcome).
    #[test]
    fn names_table() {
        let n128 = "a".repeat(128);
        let n129 = "a".repeat(129);
        // 64 astral characters are 64 code points (the apiserver's count) but 128 UTF-16 units.
        let astral64 = "😀".repeat(64);
        let astral65 = "😀".repeat(65);
        let cases: Vec<(&str, &str, Result<(), NameError>)> = vec![
            ("plain name", "app", Ok(())),
            (
                "closing bracket must be accepted and later doubled by quoting",
                "a]b",
                Ok(()),
            ),
            ("lone closing bracket", "]", Ok(())),
            ("opening bracket", "[", Ok(())),
            ("single quote: matters for N'…' literals", "o'brien", Ok(())),
            ("statement terminator and comment", "x;--", Ok(())),
            (
                "classic injection payload stays a name",
                "x]; DROP LOGIN sa;--",
                Ok(()),
            ),
            ("Unicode letters", "Zürich_データ", Ok(())),
            ("exactly 128 characters is the limit", &n128, Ok(())),
            (
                "129 characters is error 103 on the server",
                &n129,
                Err(NameError::TooLong(129)),
            ),
            ("128 UTF-16 units made of surrogate pairs", &astral64, Ok(())),
            (
                "65 astral chars pass the apiserver's count but not SQL Server's",
                &astral65,
                Err(NameError::TooLong(130)),
            ),
            ("empty is error 1038", "", Err(NameError::Empty)),
            (
                "whitespace only is never intended",
                "   ",
                Err(NameError::SurroundingWhitespace),
            ),
            (
                "trailing space aliases the trimmed name",
                "app ",
                Err(NameError::SurroundingWhitespace),
            ),
            ("leading space", " app", Err(NameError::SurroundingWhitespace)),
            (
                "NUL truncates in C drivers",
                "a\0b",
                Err(NameError::ControlCharacter),
            ),
            ("newline", "a\nb", Err(NameError::ControlCharacter)),
            ("DEL", "a\u{7f}", Err(NameError::ControlCharacter)),
            ("inner space is fine", "my app", Ok(())),
        ];
        for (why, input, want) in cases {
            assert_eq!(check_sql_name(input), want, "{why}: {input:?}");
            assert_eq!(SqlName::new(input).map(drop), want, "{why}: {input:?} (SqlName)");
        }
    }

    #[test]
    fn deserializing_rechecks() {
        let ok: SqlName = serde_json::from_str("\"a]b\"").unwrap();
        assert_eq!(ok.as_str(), "a]b");
        assert!(serde_json::from_str::<SqlName>("\"a\\u0000b\"").is_err());
    }

    proptest::proptest! {
        /// Whatever the input, the check never panics and what it accepts fits sysname.
        #[test]
        fn accepted_names_fit_sysname(s in "\\PC{0,140}") {
            if check_sql_name(&s).is_ok() {
                proptest::prop_assert!(s.encode_utf16().count() <= 128);
                proptest::prop_assert!(!s.contains('\0'));
            }
        }
    }
}
