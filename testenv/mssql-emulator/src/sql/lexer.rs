//! T-SQL lexer: turns batch text into tokens with their line numbers. Identifiers keep their
//! original spelling; keywords are recognised case-insensitively by the parser, so a reserved
//! word used as a bare name can be reported as error 156 with the keyword as written.

use crate::errors::SqlError;

/// One lexical token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A regular identifier or keyword, as written.
    Word(String),
    /// A `[...]` or `"..."` identifier, unescaped.
    Quoted(String),
    /// `@name` (local variable) including the `@`.
    Var(String),
    /// `@@name` including the `@@`.
    Global(String),
    /// `'...'` or `N'...'`, unescaped; the flag is true for N'...'.
    Str(String, bool),
    /// An integer literal.
    Int(i64),
    /// A decimal literal kept as text (rare in DDL).
    Num(String),
    /// `0x...` binary literal.
    Bin(Vec<u8>),
    /// Operators and punctuation: `( ) , ; . = < > <= >= <> != + - * / %` and `::`.
    Sym(&'static str),
}

/// A token and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The token.
    pub tok: Tok,
    /// 1-based line in the batch.
    pub line: u32,
}

/// T-SQL reserved keywords (a subset of the full list, enough for the error 156 vs 102 choice
/// on every statement the emulator parses).
pub const RESERVED: &[&str] = &[
    "ADD",
    "ALL",
    "ALTER",
    "AND",
    "ANY",
    "AS",
    "ASC",
    "AUTHORIZATION",
    "BACKUP",
    "BEGIN",
    "BETWEEN",
    "BREAK",
    "BY",
    "CASCADE",
    "CASE",
    "CHECK",
    "CLOSE",
    "COLLATE",
    "COLUMN",
    "COMMIT",
    "CONSTRAINT",
    "CONTINUE",
    "CONVERT",
    "CREATE",
    "CROSS",
    "CURRENT",
    "CURRENT_USER",
    "CURSOR",
    "DATABASE",
    "DECLARE",
    "DEFAULT",
    "DELETE",
    "DENY",
    "DESC",
    "DISTINCT",
    "DROP",
    "ELSE",
    "END",
    "ESCAPE",
    "EXCEPT",
    "EXEC",
    "EXECUTE",
    "EXISTS",
    "EXTERNAL",
    "FETCH",
    "FOR",
    "FOREIGN",
    "FROM",
    "FULL",
    "FUNCTION",
    "GOTO",
    "GRANT",
    "GROUP",
    "HAVING",
    "IDENTITY",
    "IF",
    "IN",
    "INDEX",
    "INNER",
    "INSERT",
    "INTERSECT",
    "INTO",
    "IS",
    "JOIN",
    "KEY",
    "KILL",
    "LEFT",
    "LIKE",
    "MERGE",
    "NOT",
    "NULL",
    "OF",
    "OFF",
    "ON",
    "OPEN",
    "OPTION",
    "OR",
    "ORDER",
    "OUTER",
    "OVER",
    "PERCENT",
    "PRIMARY",
    "PRINT",
    "PROC",
    "PROCEDURE",
    "PUBLIC",
    "RAISERROR",
    "RECONFIGURE",
    "REFERENCES",
    "RETURN",
    "REVOKE",
    "RIGHT",
    "ROLLBACK",
    "SAVE",
    "SCHEMA",
    "SELECT",
    "SESSION_USER",
    "SET",
    "SYSTEM_USER",
    "TABLE",
    "THEN",
    "TO",
    "TOP",
    "TRAN",
    "TRANSACTION",
    "TRIGGER",
    "UNION",
    "UNIQUE",
    "UPDATE",
    "USE",
    "USER",
    "VALUES",
    "VIEW",
    "WAITFOR",
    "WHEN",
    "WHERE",
    "WHILE",
    "WITH",
];

/// True if `w` is a reserved keyword.
pub fn is_reserved(w: &str) -> bool {
    RESERVED.iter().any(|k| k.eq_ignore_ascii_case(w))
}

/// Splits `src` into tokens. Unterminated strings and quoted identifiers are syntax errors,
/// error 105 as on the server.
pub fn lex(src: &str) -> Result<Vec<Token>, SqlError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1u32;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        // Comments.
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            // Block comments nest in T-SQL.
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
            continue;
        }
        let start_line = line;
        let push = |out: &mut Vec<Token>, tok: Tok| {
            out.push(Token {
                tok,
                line: start_line,
            })
        };
        // N'...' strings.
        if (c == 'N' || c == 'n') && chars.get(i + 1) == Some(&'\'') {
            let (s, ni, nl) = read_delimited(&chars, i + 1, '\'', line)?;
            i = ni;
            line = nl;
            push(&mut out, Tok::Str(s, true));
            continue;
        }
        if c == '\'' {
            let (s, ni, nl) = read_delimited(&chars, i, '\'', line)?;
            i = ni;
            line = nl;
            // A literal without N is varchar: characters code page 1252 lacks become '?'.
            push(&mut out, Tok::Str(crate::value::to_varchar(&s), false));
            continue;
        }
        if c == '[' {
            let (s, ni, nl) = read_delimited(&chars, i, ']', line)?;
            i = ni;
            line = nl;
            push(&mut out, Tok::Quoted(s));
            continue;
        }
        if c == '"' {
            let (s, ni, nl) = read_delimited(&chars, i, '"', line)?;
            i = ni;
            line = nl;
            push(&mut out, Tok::Quoted(s));
            continue;
        }
        if c == '0' && matches!(chars.get(i + 1), Some('x') | Some('X')) {
            let mut j = i + 2;
            let mut hex = String::new();
            while j < chars.len() && chars[j].is_ascii_hexdigit() {
                hex.push(chars[j]);
                j += 1;
            }
            if hex.len() % 2 == 1 {
                hex.insert(0, '0');
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|k| u8::from_str_radix(&hex[k..k + 2], 16).unwrap_or(0))
                .collect();
            i = j;
            push(&mut out, Tok::Bin(bytes));
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let mut j = i;
            let mut dot = false;
            while j < chars.len() && (chars[j].is_ascii_digit() || (chars[j] == '.' && !dot)) {
                if chars[j] == '.' {
                    dot = true;
                }
                j += 1;
            }
            let text: String = chars[i..j].iter().collect();
            i = j;
            match (dot, text.parse::<i64>()) {
                (false, Ok(v)) => push(&mut out, Tok::Int(v)),
                _ => push(&mut out, Tok::Num(text)),
            }
            continue;
        }
        if c == '@' || c == '#' || c == '_' || c.is_alphabetic() {
            let global = c == '@' && chars.get(i + 1) == Some(&'@');
            let mut j = if global { i + 2 } else { i + 1 };
            while j < chars.len() && (chars[j].is_alphanumeric() || matches!(chars[j], '_' | '@' | '#' | '$'))
            {
                j += 1;
            }
            let text: String = chars[i..j].iter().collect();
            i = j;
            let tok = if global {
                Tok::Global(text)
            } else if c == '@' {
                Tok::Var(text)
            } else {
                Tok::Word(text)
            };
            push(&mut out, tok);
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let sym2 = ["<=", ">=", "<>", "!=", "::", "!<", "!>"]
            .iter()
            .find(|s| **s == two);
        if let Some(s) = sym2 {
            i += 2;
            push(&mut out, Tok::Sym(s));
            continue;
        }
        let sym = match c {
            '(' => "(",
            ')' => ")",
            ',' => ",",
            ';' => ";",
            '.' => ".",
            '=' => "=",
            '<' => "<",
            '>' => ">",
            '+' => "+",
            '-' => "-",
            '*' => "*",
            '/' => "/",
            '%' => "%",
            '~' => "~",
            '&' => "&",
            '|' => "|",
            _ => return Err(SqlError::syntax(&c.to_string())),
        };
        i += 1;
        push(&mut out, Tok::Sym(sym));
    }
    Ok(out)
}

/// Reads a delimited token starting at the opening delimiter `chars[i]`; a doubled closing
/// delimiter stands for itself. Returns the content, the index after it and the new line.
fn read_delimited(
    chars: &[char],
    i: usize,
    close: char,
    mut line: u32,
) -> Result<(String, usize, u32), SqlError> {
    let mut s = String::new();
    let mut j = i + 1;
    loop {
        match chars.get(j) {
            None => {
                let shown: String = chars[i..].iter().take(40).collect();
                return Err(SqlError::new(105, &[&shown]));
            }
            Some(&ch) if ch == close => {
                if chars.get(j + 1) == Some(&close) {
                    s.push(close);
                    j += 2;
                } else {
                    return Ok((s, j + 1, line));
                }
            }
            Some(&ch) => {
                if ch == '\n' {
                    line += 1;
                }
                s.push(ch);
                j += 1;
            }
        }
    }
}
