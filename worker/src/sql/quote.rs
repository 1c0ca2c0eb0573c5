//! THE quoting module: the only place where text from outside becomes T-SQL.
//!
//! - Identifiers: `[` + name with every `]` doubled + `]`, at most 128 UTF-16 code units
//!   (`sysname`), no NUL and no other control character. The length check is ours, not the
//!   server's: `QUOTENAME` silently returns NULL past 128, and error 103 aborts a whole batch.
//! - String literals: `N'` + text with every `'` doubled + `'`, no NUL. Only where T-SQL
//!   forbids parameters (passwords in `CREATE LOGIN`, `OBJECT_ID =`, the text of `EXEC(…)`).
//! - Bare words (collation and language names) are not quoted but restricted to
//!   `[A-Za-z0-9_]`, which cannot form anything but one word token.
//! - Everything else travels as `@Pn` parameters of `sp_executesql` (see [`super::Param`]).
//!
//! The property tests at the bottom tokenize the output with a small T-SQL lexer and prove that
//! any input becomes exactly one token that decodes back to the input.

use apis::identifier::{MAX_SQL_NAME_UTF16, SqlName};

/// Why a value cannot be quoted. Quoting refuses instead of truncating or guessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// `[]` is error 1038; an empty literal is fine, an empty identifier is not.
    #[error("an identifier must not be empty")]
    Empty,
    /// Longer than `sysname` (SQL Server error 103, batch aborted).
    #[error("an identifier is at most 128 UTF-16 code units; this one has {0}")]
    TooLong(usize),
    /// NUL truncates text in C drivers; control characters are never intended in names.
    #[error("NUL and control characters are not allowed in identifiers or literals")]
    ControlCharacter,
    /// A bare word (collation, language) with a character outside `[A-Za-z0-9_]`.
    #[error("{0:?} is not a plain word (letters, digits and underscores only)")]
    NotAWord(String),
}

/// Quotes an identifier: `[name]` with `]` doubled. The one audited function for names.
pub fn quote_ident(name: &str) -> Result<String, QuoteError> {
    if name.is_empty() {
        return Err(QuoteError::Empty);
    }
    let units = name.encode_utf16().count();
    if units > MAX_SQL_NAME_UTF16 {
        return Err(QuoteError::TooLong(units));
    }
    if name.chars().any(char::is_control) {
        return Err(QuoteError::ControlCharacter);
    }
    let mut out = String::with_capacity(name.len() + 2);
    out.push('[');
    for c in name.chars() {
        if c == ']' {
            out.push(']');
        }
        out.push(c);
    }
    out.push(']');
    Ok(out)
}

/// Quotes a validated [`SqlName`]. Same function; the name's own checks make failure
/// impossible in practice, but the check runs again rather than being trusted.
pub fn ident(name: &SqlName) -> Result<String, QuoteError> {
    quote_ident(name.as_str())
}

/// Quotes a Unicode string literal: `N'text'` with `'` doubled. NUL is refused (drivers and
/// the server disagree on where such a string ends); other control characters are legal in
/// a literal and harmless inside the quotes.
pub fn quote_literal(text: &str) -> Result<String, QuoteError> {
    if text.contains('\0') {
        return Err(QuoteError::ControlCharacter);
    }
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("N'");
    for c in text.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    Ok(out)
}

/// A bare word such as a collation or language name: emitted as is after checking that it
/// is only ASCII letters, digits and underscores (T-SQL accepts no quoting for collations).
pub fn bare_word(word: &str) -> Result<&str, QuoteError> {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(word)
    } else {
        Err(QuoteError::NotAWord(word.to_owned()))
    }
}

/// A minimal T-SQL tokenizer, enough to check that quoting output is one token. Used by the
/// property tests; public so integration tests can reuse it on generated statements.
pub mod lexer {
    /// One token.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Token {
        /// `[…]`, decoded (`]]` → `]`).
        Ident(String),
        /// `N'…'` or `'…'`, decoded (`''` → `'`).
        Str(String),
        /// A word: letters, digits, `_`, `@`, `#`, `$`.
        Word(String),
        /// Any other single character outside whitespace.
        Punct(char),
    }

    /// Tokenizes `sql`; `None` when a quoted token is unterminated.
    pub fn tokenize(sql: &str) -> Option<Vec<Token>> {
        let chars: Vec<char> = sql.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c == '[' {
                let (text, next) = delimited(&chars, i + 1, ']')?;
                out.push(Token::Ident(text));
                i = next;
            } else if c == '\'' {
                let (text, next) = delimited(&chars, i + 1, '\'')?;
                out.push(Token::Str(text));
                i = next;
            } else if (c == 'N' || c == 'n') && chars.get(i + 1) == Some(&'\'') {
                let (text, next) = delimited(&chars, i + 2, '\'')?;
                out.push(Token::Str(text));
                i = next;
            } else if is_word(c) {
                let start = i;
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            } else {
                out.push(Token::Punct(c));
                i += 1;
            }
        }
        Some(out)
    }

    fn is_word(c: char) -> bool {
        c.is_alphanumeric() || matches!(c, '_' | '@' | '#' | '$')
    }

    /// Reads up to the closing `close`, where a doubled `close` stands for one.
    fn delimited(chars: &[char], mut i: usize, close: char) -> Option<(String, usize)> {
        let mut text = String::new();
        loop {
            let c = *chars.get(i)?;
            if c == close {
                if chars.get(i + 1) == Some(&close) {
                    text.push(close);
                    i += 2;
                    continue;
                }
                return Some((text, i + 1));
            }
            text.push(c);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{lexer::Token, *};
    use proptest::prelude::*;

    /// Each case: why it exists, input, expected quoted form.
    #[test]
    fn identifier_table() {
        let a129 = "a".repeat(129);
        let astral65 = "😀".repeat(65);
        let cases: Vec<(&str, &str, Result<String, QuoteError>)> = vec![
            ("plain", "app", Ok("[app]".into())),
            ("closing bracket is doubled", "a]b", Ok("[a]]b]".into())),
            ("opening bracket is not special inside", "a[b", Ok("[a[b]".into())),
            (
                "classic break-out attempt stays inside",
                "x]; DROP LOGIN sa;--",
                Ok("[x]]; DROP LOGIN sa;--]".into()),
            ),
            (
                "quote is not special in brackets",
                "o'brien",
                Ok("[o'brien]".into()),
            ),
            ("only brackets", "]]", Ok("[]]]]]".into())),
            ("empty is error 1038 on the server", "", Err(QuoteError::Empty)),
            ("NUL", "a\0", Err(QuoteError::ControlCharacter)),
            ("newline", "a\nb", Err(QuoteError::ControlCharacter)),
            ("129 units is error 103", &a129, Err(QuoteError::TooLong(129))),
            (
                "surrogate pairs count twice, as in nvarchar",
                &astral65,
                Err(QuoteError::TooLong(130)),
            ),
        ];
        for (why, input, want) in cases {
            assert_eq!(quote_ident(input), want, "{why}");
        }
        assert_eq!(
            quote_ident(&"a".repeat(128)).map(|s| s.len()),
            Ok(130),
            "128 is allowed"
        );
    }

    #[test]
    fn literal_table() {
        let cases: Vec<(&str, &str, Result<String, QuoteError>)> = vec![
            ("plain", "Passw0rd!", Ok("N'Passw0rd!'".into())),
            ("quote doubled", "it's", Ok("N'it''s'".into())),
            (
                "break-out attempt",
                "x'; DROP LOGIN sa;--",
                Ok("N'x''; DROP LOGIN sa;--'".into()),
            ),
            ("empty literal is fine", "", Ok("N''".into())),
            (
                "brackets are not special in literals",
                "]'[",
                Ok("N']''['".into()),
            ),
            ("NUL refused", "a\0b", Err(QuoteError::ControlCharacter)),
        ];
        for (why, input, want) in cases {
            assert_eq!(quote_literal(input), want, "{why}");
        }
    }

    #[test]
    fn bare_words() {
        assert_eq!(bare_word("Latin1_General_CI_AS"), Ok("Latin1_General_CI_AS"));
        assert!(
            bare_word("x COLLATE y").is_err(),
            "a space would start a second token"
        );
        assert!(bare_word("").is_err());
        assert!(bare_word("us_english;").is_err());
    }

    /// Names biased towards the characters that matter to quoting.
    fn hostile() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            Just("]".to_owned()),
            Just("[".to_owned()),
            Just("'".to_owned()),
            Just("\"".to_owned()),
            Just(";".to_owned()),
            Just("--".to_owned()),
            Just("/*".to_owned()),
            Just("N'".to_owned()),
            Just(" ".to_owned()),
            Just("😀".to_owned()),
            "\\PC{1,4}",
        ];
        proptest::collection::vec(pieces, 1..30).prop_map(|v| v.concat())
    }

    proptest! {
        /// Any accepted identifier is exactly one identifier token that decodes to the input,
        /// wherever it sits in a statement.
        #[test]
        fn identifiers_never_escape(name in prop_oneof![hostile(), "\\PC{1,140}"]) {
            match quote_ident(&name) {
                Ok(q) => {
                    let sql = format!("DROP LOGIN {q}; SELECT 1");
                    let tokens = lexer::tokenize(&sql).expect("terminated");
                    prop_assert_eq!(tokens.len(), 6, "{}", sql);
                    prop_assert_eq!(&tokens[2], &Token::Ident(name.clone()));
                    prop_assert_eq!(&tokens[3], &Token::Punct(';'));
                }
                Err(_) => {
                    prop_assert!(
                        name.encode_utf16().count() > 128 || name.chars().any(char::is_control)
                    );
                }
            }
        }

        /// Any accepted literal is exactly one string token that decodes to the input.
        #[test]
        fn literals_never_escape(text in prop_oneof![hostile(), "\\PC{0,200}"]) {
            let q = quote_literal(&text).expect("no NUL in these inputs");
            let sql = format!("ALTER LOGIN [x] WITH PASSWORD = {q}; SELECT 1");
            let tokens = lexer::tokenize(&sql).expect("terminated");
            prop_assert_eq!(tokens.len(), 10, "{}", sql);
            prop_assert_eq!(&tokens[6], &Token::Str(text.clone()));
        }

        /// Quoting an identifier inside a literal (the `EXEC(N'CREATE SCHEMA …')` shape) keeps
        /// both layers intact: one string token whose content is one identifier token.
        #[test]
        fn nested_quoting_round_trips(name in hostile()) {
            prop_assume!(quote_ident(&name).is_ok());
            let inner = format!("CREATE SCHEMA {}", quote_ident(&name).unwrap());
            let outer = format!("EXEC({})", quote_literal(&inner).unwrap());
            let tokens = lexer::tokenize(&outer).expect("terminated");
            prop_assert_eq!(&tokens[2], &Token::Str(inner.clone()));
            let inner_tokens = lexer::tokenize(&inner).expect("terminated");
            prop_assert_eq!(inner_tokens.len(), 3);
            prop_assert_eq!(&inner_tokens[2], &Token::Ident(name.clone()));
        }
    }
}
