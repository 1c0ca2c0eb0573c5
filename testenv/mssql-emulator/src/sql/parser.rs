//! Recursive-descent parser for the T-SQL subset. Syntax errors follow SQL Server: 156 when the
//! offending token is a reserved keyword, 102 otherwise, both naming the token as written; an
//! identifier over 128 characters is 103. Any of them aborts the whole batch (severity 15).

use super::ast::*;
use super::lexer::{Tok, Token, is_reserved, lex};
use crate::errors::SqlError;

/// Maximum nesting of expressions and blocks, so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 64;

/// Parses a batch into statements. Compile checks that span statements (111) happen here too.
pub fn parse_batch(src: &str) -> Result<Vec<Stmt>, SqlError> {
    parse_batch_at(src).map_err(|(e, _)| e)
}

/// Like [`parse_batch`], with the 1-based line of the error (for the ERROR token's line).
pub fn parse_batch_at(src: &str) -> Result<Vec<Stmt>, (SqlError, u32)> {
    let toks = lex(src).map_err(|e| (e, 1))?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let mut out = Vec::new();
    while !p.eof() {
        if p.eat_sym(";") {
            continue;
        }
        let line = p.line();
        let stmt = p.statement().map_err(|e| (e, p.line()))?;
        if let StmtKind::CreateSchema { .. } = stmt.kind
            && !out.is_empty()
        {
            return Err((SqlError::new(111, &["CREATE SCHEMA"]), line));
        }
        out.push(stmt);
    }
    Ok(out)
}

/// Parses one scalar expression (used for sp_executesql parameter defaults and tests).
pub fn parse_expr(src: &str) -> Result<Expr, SqlError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.expr()?;
    if !p.eof() {
        return Err(p.err_here());
    }
    Ok(e)
}

/// Parses an sp_executesql `@params` declaration list: `@P1 nvarchar(4000),@P2 int`.
pub fn parse_param_decls(src: &str) -> Result<Vec<(String, TypeName, bool)>, SqlError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let mut out = Vec::new();
    while !p.eof() {
        let name = match p.next_tok() {
            Some(Tok::Var(v)) => v,
            _ => return Err(p.err_prev()),
        };
        p.eat_kw("AS");
        let ty = p.type_name()?;
        let output = p.eat_kw("OUTPUT") || p.eat_kw("OUT");
        out.push((name, ty, output));
        if !p.eat_sym(",") {
            break;
        }
    }
    if !p.eof() {
        return Err(p.err_here());
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
}

fn tok_text(t: &Tok) -> String {
    match t {
        Tok::Word(w) => w.clone(),
        Tok::Quoted(q) => q.clone(),
        Tok::Var(v) | Tok::Global(v) => v.clone(),
        Tok::Str(s, _) => s.clone(),
        Tok::Int(i) => i.to_string(),
        Tok::Num(n) => n.clone(),
        Tok::Bin(b) => format!("0x{}", b.iter().map(|x| format!("{x:02X}")).collect::<String>()),
        Tok::Sym(s) => (*s).to_string(),
    }
}

/// Words that start a statement; they also end a SET option's value list.
const STMT_START: &[&str] = &[
    "SELECT",
    "USE",
    "SET",
    "DECLARE",
    "IF",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVE",
    "EXEC",
    "EXECUTE",
    "KILL",
    "PRINT",
    "THROW",
    "RAISERROR",
    "WAITFOR",
    "RECONFIGURE",
    "CREATE",
    "ALTER",
    "DROP",
    "GRANT",
    "DENY",
    "REVOKE",
    "ELSE",
    "END",
];

impl Parser {
    fn eof(&self) -> bool {
        self.pos >= self.toks.len()
    }
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }
    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|t| &t.tok)
    }
    fn line(&self) -> u32 {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map(|t| t.line)
            .unwrap_or(1)
    }
    fn next_tok(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.tok.clone());
        if t.is_some() {
            self.pos += 1;
        }
        t
    }
    /// Syntax error for the token at the cursor (or the last one at end of input).
    fn err_here(&self) -> SqlError {
        match self.toks.get(self.pos) {
            Some(t) => err_for(&t.tok),
            None => self.err_prev(),
        }
    }
    fn err_prev(&self) -> SqlError {
        match self.toks.get(self.pos.saturating_sub(1)) {
            Some(t) => err_for(&t.tok),
            None => SqlError::syntax(""),
        }
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }
    fn is_kw_at(&self, n: usize, kw: &str) -> bool {
        matches!(self.peek_at(n), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_kw(&mut self, kw: &str) -> Result<(), SqlError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.err_here())
        }
    }
    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(x)) if *x == s)
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        if self.is_sym(s) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_sym(&mut self, s: &str) -> Result<(), SqlError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(self.err_here())
        }
    }
    fn at_stmt_end(&self) -> bool {
        match self.peek() {
            None => true,
            Some(Tok::Sym(";")) => true,
            Some(Tok::Word(w)) => STMT_START.iter().any(|k| k.eq_ignore_ascii_case(w)),
            _ => false,
        }
    }
    fn enter(&mut self) -> Result<(), SqlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            // SQL Server reports 191 ("Some part of your SQL statement is nested too deeply");
            // the emulator has no row for it, so it uses its own marker.
            return Err(SqlError::unsupported("statement nested too deeply"));
        }
        Ok(())
    }
    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// An identifier: a non-reserved word or a quoted name, checked for length.
    fn ident(&mut self) -> Result<String, SqlError> {
        match self.peek().cloned() {
            Some(Tok::Word(w)) if !is_reserved(&w) => {
                self.pos += 1;
                check_len(&w)?;
                Ok(w)
            }
            Some(Tok::Quoted(q)) => {
                self.pos += 1;
                if q.is_empty() {
                    return Err(SqlError::new(1038, &[]));
                }
                check_len(&q)?;
                Ok(q)
            }
            _ => Err(self.err_here()),
        }
    }
    /// Like `ident`, but also accepts reserved words (for option values such as ON/PUBLIC).
    fn ident_or_kw(&mut self) -> Result<String, SqlError> {
        match self.peek().cloned() {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                Ok(w)
            }
            _ => self.ident(),
        }
    }

    fn statement(&mut self) -> Result<Stmt, SqlError> {
        self.enter()?;
        let line = self.line();
        let r = self.statement_inner().map(|kind| Stmt { line, kind });
        self.leave();
        r
    }

    fn statement_inner(&mut self) -> Result<StmtKind, SqlError> {
        let word = match self.peek() {
            Some(Tok::Word(w)) => w.to_ascii_uppercase(),
            Some(Tok::Sym("(")) => {
                // `(SELECT …)` as a statement: accept the parenthesised SELECT.
                self.pos += 1;
                let s = self.select()?;
                self.expect_sym(")")?;
                return Ok(StmtKind::Select(Box::new(s)));
            }
            _ => return Err(self.err_here()),
        };
        match word.as_str() {
            "SELECT" => Ok(StmtKind::Select(Box::new(self.select()?))),
            "USE" => {
                self.pos += 1;
                Ok(StmtKind::Use(self.ident()?))
            }
            "SET" => self.set_stmt(),
            "DECLARE" => self.declare(),
            "IF" => {
                self.pos += 1;
                let cond = self.expr()?;
                let then = self.body_stmt()?;
                let els = if self.eat_kw("ELSE") {
                    Some(Box::new(self.body_stmt()?))
                } else {
                    None
                };
                Ok(StmtKind::If(cond, Box::new(then), els))
            }
            "BEGIN" => {
                self.pos += 1;
                if self.eat_kw("TRAN") || self.eat_kw("TRANSACTION") {
                    self.opt_tran_name();
                    return Ok(StmtKind::BeginTran);
                }
                if self.eat_kw("TRY") {
                    let body = self.statements_until_end("TRY")?;
                    self.expect_kw("BEGIN")?;
                    self.expect_kw("CATCH")?;
                    let catch = self.statements_until_end("CATCH")?;
                    return Ok(StmtKind::TryCatch(body, catch));
                }
                let mut body = Vec::new();
                loop {
                    if self.eat_sym(";") {
                        continue;
                    }
                    if self.eat_kw("END") {
                        break;
                    }
                    if self.eof() {
                        return Err(self.err_prev());
                    }
                    body.push(self.statement()?);
                }
                Ok(StmtKind::Block(body))
            }
            "COMMIT" => {
                self.pos += 1;
                let _ = self.eat_kw("TRAN") || self.eat_kw("TRANSACTION") || self.eat_kw("WORK");
                self.opt_tran_name();
                Ok(StmtKind::Commit)
            }
            "ROLLBACK" => {
                self.pos += 1;
                let _ = self.eat_kw("TRAN") || self.eat_kw("TRANSACTION") || self.eat_kw("WORK");
                self.opt_tran_name();
                Ok(StmtKind::Rollback)
            }
            "SAVE" => {
                self.pos += 1;
                let _ = self.eat_kw("TRAN") || self.eat_kw("TRANSACTION");
                self.opt_tran_name();
                Ok(StmtKind::SaveTran)
            }
            "EXEC" | "EXECUTE" => self.exec(),
            "KILL" => {
                self.pos += 1;
                match self.next_tok() {
                    Some(Tok::Int(n)) => Ok(StmtKind::Kill(n)),
                    _ => Err(self.err_prev()),
                }
            }
            "PRINT" => {
                self.pos += 1;
                Ok(StmtKind::Print(self.expr()?))
            }
            "THROW" => {
                self.pos += 1;
                if self.at_stmt_end() {
                    return Ok(StmtKind::Throw(None));
                }
                let a = self.expr()?;
                self.expect_sym(",")?;
                let b = self.expr()?;
                self.expect_sym(",")?;
                let c = self.expr()?;
                Ok(StmtKind::Throw(Some((a, b, c))))
            }
            "RAISERROR" => {
                self.pos += 1;
                self.expect_sym("(")?;
                let a = self.expr()?;
                self.expect_sym(",")?;
                let b = self.expr()?;
                self.expect_sym(",")?;
                let c = self.expr()?;
                let mut rest = Vec::new();
                while self.eat_sym(",") {
                    rest.push(self.expr()?);
                }
                self.expect_sym(")")?;
                if self.eat_kw("WITH") {
                    self.ident_or_kw()?;
                    while self.eat_sym(",") {
                        self.ident_or_kw()?;
                    }
                }
                Ok(StmtKind::Raiserror(a, b, c, rest))
            }
            "WAITFOR" => {
                self.pos += 1;
                self.expect_kw("DELAY")?;
                Ok(StmtKind::WaitFor(self.expr()?))
            }
            "RECONFIGURE" => {
                self.pos += 1;
                if self.eat_kw("WITH") {
                    self.expect_kw("OVERRIDE")?;
                }
                Ok(StmtKind::Reconfigure)
            }
            "CREATE" => self.create(),
            "ALTER" => self.alter(),
            "DROP" => self.drop(),
            "GRANT" | "DENY" | "REVOKE" => self.perm(),
            _ => Err(self.err_here()),
        }
    }

    /// Statements up to `END <kw>` (TRY or CATCH), which is consumed.
    fn statements_until_end(&mut self, kw: &str) -> Result<Vec<Stmt>, SqlError> {
        let mut body = Vec::new();
        loop {
            if self.eat_sym(";") {
                continue;
            }
            if self.is_kw("END") && self.is_kw_at(1, kw) {
                self.pos += 2;
                return Ok(body);
            }
            if self.eof() {
                return Err(self.err_prev());
            }
            body.push(self.statement()?);
        }
    }

    /// The statement after IF/ELSE. CREATE SCHEMA cannot appear there: the server reports
    /// 156 at SCHEMA, which is why providers wrap it in EXEC.
    fn body_stmt(&mut self) -> Result<Stmt, SqlError> {
        if self.is_kw("CREATE") && self.is_kw_at(1, "SCHEMA") {
            self.pos += 1;
            return Err(self.err_here());
        }
        self.statement()
    }

    fn opt_tran_name(&mut self) {
        if let Some(Tok::Word(w)) = self.peek()
            && !is_reserved(w)
            && !STMT_START.iter().any(|k| k.eq_ignore_ascii_case(w))
        {
            self.pos += 1;
        } else if matches!(self.peek(), Some(Tok::Var(_)) | Some(Tok::Quoted(_))) {
            self.pos += 1;
        }
    }

    fn set_stmt(&mut self) -> Result<StmtKind, SqlError> {
        self.pos += 1;
        if let Some(Tok::Var(v)) = self.peek().cloned() {
            self.pos += 1;
            // Compound assignment (`+=`) is not in the subset; plain `=` only.
            self.expect_sym("=")?;
            return Ok(StmtKind::SetVar(v, self.expr()?));
        }
        let mut names = vec![self.ident_or_kw()?.to_ascii_uppercase()];
        if names[0] == "TRANSACTION" {
            let mut words = Vec::new();
            while !self.eof() && !self.is_sym(";") && !self.at_stmt_end() {
                words.push(tok_text(&self.next_tok().unwrap_or(Tok::Sym(";"))));
            }
            return Ok(StmtKind::SetOption(
                "TRANSACTION ISOLATION LEVEL".into(),
                words.join(" "),
            ));
        }
        while self.eat_sym(",") {
            names.push(self.ident_or_kw()?.to_ascii_uppercase());
        }
        let value = match self.next_tok() {
            Some(Tok::Word(w)) => w.to_ascii_uppercase(),
            Some(Tok::Int(i)) => i.to_string(),
            Some(Tok::Sym("-")) => match self.next_tok() {
                Some(Tok::Int(i)) => (-i).to_string(),
                _ => return Err(self.err_prev()),
            },
            Some(Tok::Str(s, _)) | Some(Tok::Quoted(s)) => s,
            Some(Tok::Bin(b)) => tok_text(&Tok::Bin(b)),
            Some(Tok::Var(v)) => v,
            _ => return Err(self.err_prev()),
        };
        // Several options share one value: `SET ANSI_NULLS, QUOTED_IDENTIFIER ON`.
        Ok(StmtKind::SetOption(names.join(","), value))
    }

    fn declare(&mut self) -> Result<StmtKind, SqlError> {
        self.pos += 1;
        let mut vars = Vec::new();
        loop {
            let name = match self.next_tok() {
                Some(Tok::Var(v)) => v,
                _ => return Err(self.err_prev()),
            };
            self.eat_kw("AS");
            let ty = self.type_name()?;
            let init = if self.eat_sym("=") {
                Some(self.expr()?)
            } else {
                None
            };
            vars.push((name, ty, init));
            if !self.eat_sym(",") {
                break;
            }
        }
        Ok(StmtKind::Declare(vars))
    }

    fn type_name(&mut self) -> Result<TypeName, SqlError> {
        let name = match self.next_tok() {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => w.to_ascii_lowercase(),
            _ => return Err(self.err_prev()),
        };
        let mut len = None;
        if self.eat_sym("(") {
            len = match self.next_tok() {
                Some(Tok::Int(i)) => Some(i),
                Some(Tok::Word(w)) if w.eq_ignore_ascii_case("max") => Some(-1),
                _ => return Err(self.err_prev()),
            };
            if self.eat_sym(",") {
                match self.next_tok() {
                    Some(Tok::Int(_)) => {}
                    _ => return Err(self.err_prev()),
                }
            }
            self.expect_sym(")")?;
        }
        Ok(TypeName { name, len })
    }

    fn exec(&mut self) -> Result<StmtKind, SqlError> {
        self.pos += 1;
        if self.eat_sym("(") {
            let e = self.expr()?;
            self.expect_sym(")")?;
            if self.eat_kw("AS") {
                return Err(SqlError::unsupported("EXEC AS"));
            }
            return Ok(StmtKind::ExecDynamic(e));
        }
        let mut parts = vec![self.ident_or_kw()?];
        while self.eat_sym(".") {
            parts.push(self.ident_or_kw()?);
        }
        // `db.schema.proc` runs the procedure in database `db` (providers use
        // `EXEC [db].sys.sp_executesql …` to run DDL in another database).
        let name = parts.pop().unwrap_or_default();
        let db = if parts.len() == 2 {
            parts.first().cloned()
        } else {
            None
        };
        let mut args = Vec::new();
        if !self.at_stmt_end() {
            loop {
                let named = if let (Some(Tok::Var(v)), Some(Tok::Sym("="))) =
                    (self.peek().cloned(), self.peek_at(1))
                {
                    self.pos += 2;
                    Some(v)
                } else {
                    None
                };
                let e = if self.is_kw("DEFAULT") {
                    self.pos += 1;
                    Expr::Null
                } else {
                    self.expr()?
                };
                self.eat_kw("OUTPUT");
                args.push((named, e));
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        Ok(StmtKind::ExecProc(db, name, args))
    }

    fn create(&mut self) -> Result<StmtKind, SqlError> {
        self.pos += 1;
        let what = match self.peek() {
            Some(Tok::Word(w)) => w.to_ascii_uppercase(),
            _ => return Err(self.err_here()),
        };
        self.pos += 1;
        match what.as_str() {
            "DATABASE" => {
                let name = self.ident()?;
                let mut containment = None;
                let mut collate = None;
                loop {
                    if self.eat_kw("CONTAINMENT") {
                        self.expect_sym("=")?;
                        containment = Some(self.ident_or_kw()?.to_ascii_uppercase());
                    } else if self.eat_kw("COLLATE") {
                        collate = Some(self.ident()?);
                    } else if self.is_kw("ON") || self.is_kw("WITH") || self.is_kw("LOG") {
                        return Err(SqlError::unsupported("CREATE DATABASE file and WITH options"));
                    } else {
                        break;
                    }
                }
                Ok(StmtKind::CreateDatabase {
                    name,
                    containment,
                    collate,
                })
            }
            "LOGIN" => {
                let name = self.ident()?;
                if self.eat_kw("FROM") {
                    if self.eat_kw("EXTERNAL") {
                        self.expect_kw("PROVIDER")?;
                        let options = if self.eat_kw("WITH") {
                            self.options()?
                        } else {
                            Vec::new()
                        };
                        return Ok(StmtKind::CreateLogin {
                            name,
                            password: None,
                            external: true,
                            options,
                        });
                    }
                    return Err(SqlError::unsupported(
                        "CREATE LOGIN FROM WINDOWS/CERTIFICATE/ASYMMETRIC KEY",
                    ));
                }
                self.expect_kw("WITH")?;
                self.expect_kw("PASSWORD")?;
                self.expect_sym("=")?;
                let password = Some(self.password_spec()?);
                let mut options = Vec::new();
                if self.eat_sym(",") {
                    options = self.options()?;
                }
                Ok(StmtKind::CreateLogin {
                    name,
                    password,
                    external: false,
                    options,
                })
            }
            "USER" => {
                let name = self.ident()?;
                let mut source = UserSource::Implicit;
                let mut options = Vec::new();
                if self.eat_kw("FOR") || self.eat_kw("FROM") {
                    if self.eat_kw("LOGIN") {
                        source = UserSource::Login(self.ident()?);
                    } else if self.eat_kw("EXTERNAL") {
                        self.expect_kw("PROVIDER")?;
                        source = UserSource::External;
                    } else {
                        return Err(SqlError::unsupported(
                            "CREATE USER FOR CERTIFICATE/ASYMMETRIC KEY",
                        ));
                    }
                } else if self.eat_kw("WITHOUT") {
                    self.expect_kw("LOGIN")?;
                    source = UserSource::WithoutLogin;
                }
                if self.eat_kw("WITH") {
                    if self.is_kw("PASSWORD") {
                        self.pos += 1;
                        self.expect_sym("=")?;
                        match self.next_tok() {
                            Some(Tok::Str(s, _)) => source = UserSource::Password(s),
                            _ => return Err(self.err_prev()),
                        }
                        if self.eat_sym(",") {
                            options = self.options()?;
                        }
                    } else {
                        options = self.options()?;
                    }
                }
                Ok(StmtKind::CreateUser {
                    name,
                    source,
                    options,
                })
            }
            "SCHEMA" => {
                let name = self.ident()?;
                let owner = if self.eat_kw("AUTHORIZATION") {
                    Some(self.ident()?)
                } else {
                    None
                };
                if !self.at_stmt_end() {
                    return Err(SqlError::unsupported("CREATE SCHEMA with schema elements"));
                }
                Ok(StmtKind::CreateSchema { name, owner })
            }
            "ROLE" => {
                let name = self.ident()?;
                let owner = if self.eat_kw("AUTHORIZATION") {
                    Some(self.ident()?)
                } else {
                    None
                };
                Ok(StmtKind::CreateRole {
                    name,
                    owner,
                    server: false,
                })
            }
            "SERVER" => {
                self.expect_kw("ROLE")?;
                let name = self.ident()?;
                let owner = if self.eat_kw("AUTHORIZATION") {
                    Some(self.ident()?)
                } else {
                    None
                };
                Ok(StmtKind::CreateRole {
                    name,
                    owner,
                    server: true,
                })
            }
            "TABLE" | "VIEW" | "PROCEDURE" | "PROC" | "FUNCTION" | "TRIGGER" | "INDEX" | "TYPE"
            | "CERTIFICATE" | "CREDENTIAL" | "ASYMMETRIC" | "SYMMETRIC" | "MASTER" | "APPLICATION" => {
                Err(SqlError::unsupported(&format!("CREATE {what}")))
            }
            _ => {
                self.pos -= 1;
                Err(self.err_here())
            }
        }
    }

    fn password_spec(&mut self) -> Result<PasswordSpec, SqlError> {
        let value = match self.next_tok() {
            Some(Tok::Str(s, _)) => OptVal::Text(s),
            Some(Tok::Bin(b)) => OptVal::Bin(b),
            _ => return Err(self.err_prev()),
        };
        let mut spec = PasswordSpec {
            value,
            hashed: false,
            must_change: false,
        };
        loop {
            if self.eat_kw("HASHED") {
                spec.hashed = true;
            } else if self.eat_kw("MUST_CHANGE") {
                spec.must_change = true;
            } else {
                break;
            }
        }
        Ok(spec)
    }

    /// `NAME = value [, NAME = value]…` (values: strings, identifiers, binaries, ON/OFF, ints).
    fn options(&mut self) -> Result<Vec<(String, OptVal)>, SqlError> {
        let mut out = Vec::new();
        loop {
            let name = self.ident_or_kw()?.to_ascii_uppercase();
            if name == "NO" {
                let n2 = self.ident_or_kw()?.to_ascii_uppercase();
                out.push((format!("NO {n2}"), OptVal::Flag(true)));
            } else if name == "UNLOCK" || name == "MUST_CHANGE" {
                out.push((name, OptVal::Flag(true)));
            } else {
                self.expect_sym("=")?;
                let v = match self.next_tok() {
                    Some(Tok::Str(s, _)) | Some(Tok::Quoted(s)) => OptVal::Text(s),
                    Some(Tok::Bin(b)) => OptVal::Bin(b),
                    Some(Tok::Int(i)) => OptVal::Int(i),
                    Some(Tok::Word(w)) if w.eq_ignore_ascii_case("ON") => OptVal::Flag(true),
                    Some(Tok::Word(w)) if w.eq_ignore_ascii_case("OFF") => OptVal::Flag(false),
                    Some(Tok::Word(w)) => {
                        check_len(&w)?;
                        OptVal::Text(w)
                    }
                    _ => return Err(self.err_prev()),
                };
                if name == "PASSWORD" || name == "OLD_PASSWORD" {
                    // HASHED / MUST_CHANGE after a password inside an option list.
                    while self.eat_kw("HASHED") || self.eat_kw("MUST_CHANGE") {}
                }
                out.push((name, v));
            }
            if !self.eat_sym(",") {
                break;
            }
        }
        Ok(out)
    }

    fn alter(&mut self) -> Result<StmtKind, SqlError> {
        self.pos += 1;
        let what = match self.peek() {
            Some(Tok::Word(w)) => w.to_ascii_uppercase(),
            _ => return Err(self.err_here()),
        };
        self.pos += 1;
        match what.as_str() {
            "DATABASE" => {
                let name = if self.eat_kw("CURRENT") {
                    None
                } else {
                    Some(self.ident()?)
                };
                let action = if self.eat_kw("SET") {
                    let opt = self.ident_or_kw()?.to_ascii_uppercase();
                    match opt.as_str() {
                        "RECOVERY" => AlterDbAction::Recovery(self.ident_or_kw()?.to_ascii_uppercase()),
                        "COMPATIBILITY_LEVEL" => {
                            self.expect_sym("=")?;
                            match self.next_tok() {
                                Some(Tok::Int(i)) => AlterDbAction::Compat(i),
                                _ => return Err(self.err_prev()),
                            }
                        }
                        "SINGLE_USER" | "MULTI_USER" | "RESTRICTED_USER" => {
                            let mut immediate = false;
                            if self.eat_kw("WITH") {
                                if self.eat_kw("ROLLBACK") {
                                    if self.eat_kw("IMMEDIATE") {
                                        immediate = true;
                                    } else {
                                        self.expect_kw("AFTER")?;
                                        self.next_tok();
                                        self.eat_kw("SECONDS");
                                        immediate = true;
                                    }
                                } else {
                                    self.expect_kw("NO_WAIT")?;
                                }
                            }
                            AlterDbAction::UserAccess(opt, immediate)
                        }
                        "CONTAINMENT" => {
                            self.expect_sym("=")?;
                            AlterDbAction::Containment(self.ident_or_kw()?.to_ascii_uppercase())
                        }
                        "TRUSTWORTHY"
                        | "READ_COMMITTED_SNAPSHOT"
                        | "ALLOW_SNAPSHOT_ISOLATION"
                        | "DB_CHAINING" => {
                            let v = self.ident_or_kw()?.to_ascii_uppercase();
                            let on = match v.as_str() {
                                "ON" => true,
                                "OFF" => false,
                                _ => return Err(self.err_prev()),
                            };
                            if self.eat_kw("WITH") {
                                self.ident_or_kw()?;
                                self.ident_or_kw()?;
                            }
                            AlterDbAction::SetFlag(opt, on)
                        }
                        _ => return Err(SqlError::unsupported(&format!("ALTER DATABASE SET {opt}"))),
                    }
                } else if self.eat_kw("COLLATE") {
                    AlterDbAction::Collate(self.ident()?)
                } else if self.eat_kw("MODIFY") {
                    self.expect_kw("NAME")?;
                    self.expect_sym("=")?;
                    AlterDbAction::ModifyName(self.ident()?)
                } else {
                    return Err(self.err_here());
                };
                Ok(StmtKind::AlterDatabase { name, action })
            }
            "LOGIN" => {
                let name = self.ident()?;
                if self.eat_kw("ENABLE") {
                    return Ok(StmtKind::AlterLogin {
                        name,
                        enable: Some(true),
                        password: None,
                        options: vec![],
                    });
                }
                if self.eat_kw("DISABLE") {
                    return Ok(StmtKind::AlterLogin {
                        name,
                        enable: Some(false),
                        password: None,
                        options: vec![],
                    });
                }
                self.expect_kw("WITH")?;
                let mut password = None;
                let mut options = Vec::new();
                if self.is_kw("PASSWORD") {
                    self.pos += 1;
                    self.expect_sym("=")?;
                    password = Some(self.password_spec()?);
                    // OLD_PASSWORD, UNLOCK and MUST_CHANGE may follow without a comma.
                    loop {
                        if self.eat_kw("OLD_PASSWORD") {
                            self.expect_sym("=")?;
                            match self.next_tok() {
                                Some(Tok::Str(s, _)) => {
                                    options.push(("OLD_PASSWORD".into(), OptVal::Text(s)))
                                }
                                _ => return Err(self.err_prev()),
                            }
                        } else if self.eat_kw("UNLOCK") {
                            options.push(("UNLOCK".into(), OptVal::Flag(true)));
                        } else if self.eat_kw("MUST_CHANGE") {
                            if let Some(p) = password.as_mut() {
                                p.must_change = true;
                            }
                        } else {
                            break;
                        }
                    }
                    if self.eat_sym(",") {
                        options.extend(self.options()?);
                    }
                } else {
                    options = self.options()?;
                }
                Ok(StmtKind::AlterLogin {
                    name,
                    enable: None,
                    password,
                    options,
                })
            }
            "USER" => {
                let name = self.ident()?;
                self.expect_kw("WITH")?;
                Ok(StmtKind::AlterUser {
                    name,
                    options: self.options()?,
                })
            }
            "ROLE" | "SERVER" => {
                let server = what == "SERVER";
                if server {
                    self.expect_kw("ROLE")?;
                }
                let name = self.ident()?;
                if self.eat_kw("WITH") {
                    self.expect_kw("NAME")?;
                    self.expect_sym("=")?;
                    let member = self.ident()?;
                    return Ok(StmtKind::AlterRole {
                        name,
                        server,
                        add: None,
                        member,
                    });
                }
                let add = if self.eat_kw("ADD") {
                    true
                } else if self.eat_kw("DROP") {
                    false
                } else {
                    return Err(self.err_here());
                };
                self.expect_kw("MEMBER")?;
                let member = self.ident()?;
                Ok(StmtKind::AlterRole {
                    name,
                    server,
                    add: Some(add),
                    member,
                })
            }
            "AUTHORIZATION" => {
                self.expect_kw("ON")?;
                let mut class = "OBJECT".to_string();
                if matches!(self.peek_at(1), Some(Tok::Sym("::"))) {
                    class = self.ident_or_kw()?.to_ascii_uppercase();
                    self.expect_sym("::")?;
                }
                let mut name = self.ident()?;
                while self.eat_sym(".") {
                    name = self.ident()?;
                }
                self.expect_kw("TO")?;
                let to = if self.eat_kw("SCHEMA") {
                    self.expect_kw("OWNER")?;
                    "SCHEMA OWNER".to_string()
                } else {
                    self.ident()?
                };
                Ok(StmtKind::AlterAuthorization { class, name, to })
            }
            _ => {
                self.pos -= 1;
                Err(self.err_here())
            }
        }
    }

    fn drop(&mut self) -> Result<StmtKind, SqlError> {
        self.pos += 1;
        let what = match self.peek() {
            Some(Tok::Word(w)) => w.to_ascii_uppercase(),
            _ => return Err(self.err_here()),
        };
        self.pos += 1;
        let server = if what == "SERVER" {
            self.expect_kw("ROLE")?;
            true
        } else {
            false
        };
        // DROP LOGIN has no IF EXISTS: `IF` then hits ident() and gives 156 'IF', as the server does.
        let if_exists = what != "LOGIN" && self.is_kw("IF") && self.is_kw_at(1, "EXISTS") && {
            self.pos += 2;
            true
        };
        match what.as_str() {
            "DATABASE" => {
                let mut names = vec![self.ident()?];
                while self.eat_sym(",") {
                    names.push(self.ident()?);
                }
                Ok(StmtKind::DropDatabase { if_exists, names })
            }
            "LOGIN" => Ok(StmtKind::DropLogin(self.ident()?)),
            "USER" => Ok(StmtKind::DropUser {
                if_exists,
                name: self.ident()?,
            }),
            "SCHEMA" => Ok(StmtKind::DropSchema {
                if_exists,
                name: self.ident()?,
            }),
            "ROLE" | "SERVER" => Ok(StmtKind::DropRole {
                if_exists,
                name: self.ident()?,
                server,
            }),
            "TABLE" | "VIEW" | "PROCEDURE" | "PROC" | "FUNCTION" | "TRIGGER" | "INDEX" | "TYPE" => {
                Err(SqlError::unsupported(&format!("DROP {what}")))
            }
            _ => {
                self.pos -= 1;
                Err(self.err_here())
            }
        }
    }

    fn perm(&mut self) -> Result<StmtKind, SqlError> {
        let verb = match self.next_tok() {
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("GRANT") => PermVerb::Grant,
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("DENY") => PermVerb::Deny,
            _ => PermVerb::Revoke,
        };
        let mut grant_option_for = false;
        if verb == PermVerb::Revoke && self.is_kw("GRANT") && self.is_kw_at(1, "OPTION") {
            self.pos += 2;
            self.expect_kw("FOR")?;
            grant_option_for = true;
        }
        let mut perms = Vec::new();
        loop {
            let mut words = Vec::new();
            while let Some(Tok::Word(w)) = self.peek() {
                if w.eq_ignore_ascii_case("ON")
                    || w.eq_ignore_ascii_case("TO")
                    || w.eq_ignore_ascii_case("FROM")
                {
                    break;
                }
                words.push(w.to_ascii_uppercase());
                self.pos += 1;
            }
            if words.is_empty() {
                return Err(self.err_here());
            }
            perms.push(words.join(" "));
            if !self.eat_sym(",") {
                break;
            }
        }
        let on = if self.eat_kw("ON") {
            Some(self.securable()?)
        } else {
            None
        };
        if !(self.eat_kw("TO") || (verb == PermVerb::Revoke && self.eat_kw("FROM"))) {
            return Err(self.err_here());
        }
        let mut principals = vec![self.ident_or_public()?];
        while self.eat_sym(",") {
            principals.push(self.ident_or_public()?);
        }
        let mut with_grant = false;
        let mut cascade = false;
        loop {
            if self.is_kw("WITH") && self.is_kw_at(1, "GRANT") {
                self.pos += 2;
                self.expect_kw("OPTION")?;
                with_grant = true;
            } else if self.eat_kw("CASCADE") {
                cascade = true;
            } else if self.eat_kw("AS") {
                self.ident()?;
            } else {
                break;
            }
        }
        Ok(StmtKind::Perm(PermStmt {
            verb,
            perms,
            on,
            principals,
            with_grant,
            cascade,
            grant_option_for,
        }))
    }

    fn ident_or_public(&mut self) -> Result<String, SqlError> {
        if self.eat_kw("PUBLIC") {
            Ok("public".into())
        } else {
            self.ident()
        }
    }

    fn securable(&mut self) -> Result<Securable, SqlError> {
        let mut class = None;
        if matches!(self.peek_at(1), Some(Tok::Sym("::"))) {
            class = Some(self.ident_or_kw()?.to_ascii_uppercase());
            self.pos += 1;
        } else if matches!(self.peek_at(2), Some(Tok::Sym("::"))) {
            let a = self.ident_or_kw()?.to_ascii_uppercase();
            let b = self.ident_or_kw()?.to_ascii_uppercase();
            class = Some(format!("{a} {b}"));
            self.pos += 1;
        }
        let first = self.ident()?;
        let second = if self.eat_sym(".") {
            Some(self.ident()?)
        } else {
            None
        };
        Ok(match class.as_deref() {
            None | Some("OBJECT") => match second {
                Some(o) => Securable::Object(Some(first), o),
                None => Securable::Object(None, first),
            },
            Some("DATABASE") => Securable::Database(first),
            Some("SCHEMA") => Securable::Schema(first),
            Some("USER") | Some("ROLE") | Some("APPLICATION ROLE") => Securable::Principal(first),
            Some("LOGIN") | Some("SERVER ROLE") => Securable::Login(first),
            Some("SERVER") => Securable::Server,
            Some(other) => return Err(SqlError::unsupported(&format!("securable class {other}"))),
        })
    }

    fn select(&mut self) -> Result<Select, SqlError> {
        self.enter()?;
        let r = self.select_inner();
        self.leave();
        r
    }

    fn select_inner(&mut self) -> Result<Select, SqlError> {
        self.expect_kw("SELECT")?;
        let distinct = self.eat_kw("DISTINCT");
        self.eat_kw("ALL");
        let top = if self.eat_kw("TOP") {
            if self.eat_sym("(") {
                let e = self.expr()?;
                self.expect_sym(")")?;
                Some(e)
            } else {
                match self.next_tok() {
                    Some(Tok::Int(i)) => Some(Expr::Int(i)),
                    _ => return Err(self.err_prev()),
                }
            }
        } else {
            None
        };
        let mut items = Vec::new();
        loop {
            items.push(self.select_item()?);
            if !self.eat_sym(",") {
                break;
            }
        }
        let mut from = None;
        let mut joins = Vec::new();
        if self.eat_kw("FROM") {
            from = Some(self.table_ref()?);
            loop {
                if self.eat_sym(",") {
                    joins.push(Join {
                        left: false,
                        table: self.table_ref()?,
                        on: None,
                    });
                    continue;
                }
                let left = if self.eat_kw("LEFT") {
                    self.eat_kw("OUTER");
                    true
                } else {
                    self.eat_kw("INNER");
                    false
                };
                if self.eat_kw("CROSS") {
                    self.expect_kw("JOIN")?;
                    joins.push(Join {
                        left: false,
                        table: self.table_ref()?,
                        on: None,
                    });
                    continue;
                }
                if !self.eat_kw("JOIN") {
                    if left {
                        return Err(self.err_here());
                    }
                    break;
                }
                let table = self.table_ref()?;
                self.expect_kw("ON")?;
                let on = Some(self.expr()?);
                joins.push(Join { left, table, on });
            }
        }
        let filter = if self.eat_kw("WHERE") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut group_by = Vec::new();
        if self.eat_kw("GROUP") {
            self.expect_kw("BY")?;
            loop {
                group_by.push(self.expr()?);
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        let having = if self.eat_kw("HAVING") {
            Some(self.expr()?)
        } else {
            None
        };
        // UNION parts come before the ORDER BY, which then orders the whole result.
        let mut unions = Vec::new();
        while self.eat_kw("UNION") {
            let all = self.eat_kw("ALL");
            if !self.is_kw("SELECT") {
                return Err(self.err_here());
            }
            let mut part = self.select()?;
            if !part.order.is_empty() || !part.unions.is_empty() {
                // The nested call already consumed a trailing ORDER BY / UNION: hoist them.
                unions.push((
                    all,
                    Select {
                        order: Vec::new(),
                        unions: Vec::new(),
                        ..part.clone()
                    },
                ));
                unions.append(&mut part.unions);
                if !part.order.is_empty() {
                    let order = std::mem::take(&mut part.order);
                    return Ok(Select {
                        distinct,
                        top,
                        items,
                        from,
                        joins,
                        filter,
                        group_by,
                        having,
                        order,
                        unions,
                    });
                }
                continue;
            }
            unions.push((all, part));
        }
        let mut order = Vec::new();
        if self.eat_kw("ORDER") {
            self.expect_kw("BY")?;
            loop {
                let e = self.expr()?;
                let desc = if self.eat_kw("DESC") {
                    true
                } else {
                    self.eat_kw("ASC");
                    false
                };
                order.push((e, desc));
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        Ok(Select {
            distinct,
            top,
            items,
            from,
            joins,
            filter,
            group_by,
            having,
            order,
            unions,
        })
    }

    fn select_item(&mut self) -> Result<SelectItem, SqlError> {
        if self.eat_sym("*") {
            return Ok(SelectItem::Star(None));
        }
        if let (Some(Tok::Word(q) | Tok::Quoted(q)), Some(Tok::Sym(".")), Some(Tok::Sym("*"))) =
            (self.peek().cloned(), self.peek_at(1), self.peek_at(2))
        {
            self.pos += 3;
            return Ok(SelectItem::Star(Some(q)));
        }
        if let (Some(Tok::Var(v)), Some(Tok::Sym("="))) = (self.peek().cloned(), self.peek_at(1)) {
            self.pos += 2;
            return Ok(SelectItem::Assign(v, self.expr()?));
        }
        let e = self.expr()?;
        let alias = if self.eat_kw("AS") {
            Some(self.alias()?)
        } else {
            match self.peek() {
                Some(Tok::Word(w)) if !is_reserved(w) => Some(self.alias()?),
                Some(Tok::Quoted(_)) | Some(Tok::Str(..)) => Some(self.alias()?),
                _ => None,
            }
        };
        Ok(SelectItem::Expr(e, alias))
    }

    fn alias(&mut self) -> Result<String, SqlError> {
        match self.next_tok() {
            Some(Tok::Str(s, _)) => Ok(s),
            Some(Tok::Quoted(q)) => {
                check_len(&q)?;
                Ok(q)
            }
            Some(Tok::Word(w)) if !is_reserved(&w) => {
                check_len(&w)?;
                Ok(w)
            }
            _ => Err(self.err_prev()),
        }
    }

    fn table_ref(&mut self) -> Result<TableRef, SqlError> {
        let mut parts = vec![self.ident()?];
        while self.eat_sym(".") {
            if self.is_sym(".") {
                // `db..name` means the default schema.
                parts.push(String::new());
                continue;
            }
            parts.push(self.ident()?);
        }
        if parts.len() > 3 {
            return Err(SqlError::unsupported("four-part names"));
        }
        let name = parts.pop().unwrap_or_default();
        let schema = parts.pop().filter(|s| !s.is_empty());
        let database = parts.pop();
        let args = if self.eat_sym("(") {
            let mut a = Vec::new();
            if !self.is_sym(")") {
                loop {
                    a.push(self.expr()?);
                    if !self.eat_sym(",") {
                        break;
                    }
                }
            }
            self.expect_sym(")")?;
            Some(a)
        } else {
            None
        };
        let alias = if self.eat_kw("AS") {
            Some(self.alias()?)
        } else {
            match self.peek() {
                Some(Tok::Word(w)) if !is_reserved(w) => Some(self.alias()?),
                Some(Tok::Quoted(_)) => Some(self.alias()?),
                _ => None,
            }
        };
        Ok(TableRef {
            database,
            schema,
            name,
            args,
            alias,
        })
    }

    fn expr(&mut self) -> Result<Expr, SqlError> {
        self.enter()?;
        let r = self.or_expr();
        self.leave();
        r
    }

    fn or_expr(&mut self) -> Result<Expr, SqlError> {
        let mut l = self.and_expr()?;
        while self.eat_kw("OR") {
            let r = self.and_expr()?;
            l = Expr::Bin2(Box::new(l), "OR", Box::new(r));
        }
        Ok(l)
    }

    fn and_expr(&mut self) -> Result<Expr, SqlError> {
        let mut l = self.not_expr()?;
        while self.eat_kw("AND") {
            let r = self.not_expr()?;
            l = Expr::Bin2(Box::new(l), "AND", Box::new(r));
        }
        Ok(l)
    }

    fn not_expr(&mut self) -> Result<Expr, SqlError> {
        if self.eat_kw("NOT") {
            self.enter()?;
            let e = self.not_expr();
            self.leave();
            return Ok(Expr::Unary("NOT", Box::new(e?)));
        }
        self.cmp_expr()
    }

    fn cmp_expr(&mut self) -> Result<Expr, SqlError> {
        let l = self.add_expr()?;
        for op in ["=", "<>", "!=", "<=", ">=", "<", ">"] {
            if self.eat_sym(op) {
                let r = self.add_expr()?;
                let op: &'static str = if op == "!=" { "<>" } else { op };
                return Ok(Expr::Bin2(Box::new(l), op, Box::new(r)));
            }
        }
        let negated = self.is_kw("NOT") && (self.is_kw_at(1, "IN") || self.is_kw_at(1, "LIKE"));
        if negated {
            self.pos += 1;
        }
        if self.eat_kw("IN") {
            self.expect_sym("(")?;
            if self.is_kw("SELECT") {
                let s = self.select()?;
                self.expect_sym(")")?;
                return Ok(Expr::InSelect(Box::new(l), Box::new(s), negated));
            }
            let mut list = vec![self.expr()?];
            while self.eat_sym(",") {
                list.push(self.expr()?);
            }
            self.expect_sym(")")?;
            return Ok(Expr::InList(Box::new(l), list, negated));
        }
        if self.eat_kw("LIKE") {
            let r = self.add_expr()?;
            let e = Expr::Bin2(Box::new(l), "LIKE", Box::new(r));
            return Ok(if negated {
                Expr::Unary("NOT", Box::new(e))
            } else {
                e
            });
        }
        if self.eat_kw("IS") {
            let not = self.eat_kw("NOT");
            self.expect_kw("NULL")?;
            return Ok(Expr::IsNull(Box::new(l), not));
        }
        Ok(l)
    }

    fn add_expr(&mut self) -> Result<Expr, SqlError> {
        let mut l = self.mul_expr()?;
        loop {
            let op = if self.eat_sym("+") {
                "+"
            } else if self.eat_sym("-") {
                "-"
            } else {
                break;
            };
            let r = self.mul_expr()?;
            l = Expr::Bin2(Box::new(l), op, Box::new(r));
        }
        Ok(l)
    }

    fn mul_expr(&mut self) -> Result<Expr, SqlError> {
        let mut l = self.unary()?;
        loop {
            let op = if self.eat_sym("*") {
                "*"
            } else if self.eat_sym("/") {
                "/"
            } else if self.eat_sym("%") {
                "%"
            } else {
                break;
            };
            let r = self.unary()?;
            l = Expr::Bin2(Box::new(l), op, Box::new(r));
        }
        Ok(l)
    }

    fn unary(&mut self) -> Result<Expr, SqlError> {
        if self.eat_sym("-") {
            self.enter()?;
            let e = self.unary();
            self.leave();
            return Ok(match e? {
                Expr::Int(i) => Expr::Int(-i),
                e => Expr::Unary("-", Box::new(e)),
            });
        }
        if self.eat_sym("+") {
            return self.unary();
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, SqlError> {
        let t = match self.peek().cloned() {
            Some(t) => t,
            None => return Err(self.err_prev()),
        };
        match t {
            Tok::Int(i) => {
                self.pos += 1;
                Ok(Expr::Int(i))
            }
            Tok::Num(n) => {
                self.pos += 1;
                Ok(Expr::Str(n))
            }
            Tok::Str(s, true) => {
                self.pos += 1;
                Ok(Expr::Str(s))
            }
            Tok::Str(s, false) => {
                self.pos += 1;
                Ok(Expr::VarStr(s))
            }
            Tok::Bin(b) => {
                self.pos += 1;
                Ok(Expr::Bin(b))
            }
            Tok::Var(v) => {
                self.pos += 1;
                Ok(Expr::Var(v))
            }
            Tok::Global(g) => {
                self.pos += 1;
                Ok(Expr::Global(g.to_ascii_uppercase()))
            }
            Tok::Sym("(") => {
                self.pos += 1;
                if self.is_kw("SELECT") {
                    let s = self.select()?;
                    self.expect_sym(")")?;
                    return Ok(Expr::Subquery(Box::new(s)));
                }
                let e = self.expr()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Quoted(_) => self.column_ref(),
            Tok::Word(w) => {
                let up = w.to_ascii_uppercase();
                let call = matches!(self.peek_at(1), Some(Tok::Sym("(")));
                match up.as_str() {
                    "NULL" => {
                        self.pos += 1;
                        Ok(Expr::Null)
                    }
                    "EXISTS" => {
                        self.pos += 1;
                        self.expect_sym("(")?;
                        let s = self.select()?;
                        self.expect_sym(")")?;
                        Ok(Expr::Exists(Box::new(s)))
                    }
                    "CASE" => self.case_expr(),
                    "CAST" | "TRY_CAST" if call => {
                        self.pos += 2;
                        let e = self.expr()?;
                        self.expect_kw("AS")?;
                        let ty = self.type_name()?;
                        self.expect_sym(")")?;
                        Ok(Expr::Cast(Box::new(e), ty))
                    }
                    "CONVERT" | "TRY_CONVERT" if call => {
                        self.pos += 2;
                        let ty = self.type_name()?;
                        self.expect_sym(",")?;
                        let e = self.expr()?;
                        if self.eat_sym(",") {
                            self.expr()?;
                        }
                        self.expect_sym(")")?;
                        Ok(Expr::Cast(Box::new(e), ty))
                    }
                    "CURRENT_USER" | "SYSTEM_USER" | "SESSION_USER" | "USER" if !call => {
                        self.pos += 1;
                        Ok(Expr::Call(up, vec![]))
                    }
                    _ if call
                        && (!is_reserved(&w) || matches!(up.as_str(), "LEFT" | "RIGHT" | "COALESCE")) =>
                    {
                        self.pos += 2;
                        let mut args = Vec::new();
                        if !self.is_sym(")") {
                            loop {
                                if self.eat_sym("*") {
                                    args.push(Expr::Star);
                                } else {
                                    args.push(self.expr()?);
                                }
                                if !self.eat_sym(",") {
                                    break;
                                }
                            }
                        }
                        self.expect_sym(")")?;
                        Ok(Expr::Call(up, args))
                    }
                    _ if is_reserved(&w) => Err(self.err_here()),
                    _ => self.column_ref(),
                }
            }
            _ => Err(self.err_here()),
        }
    }

    fn column_ref(&mut self) -> Result<Expr, SqlError> {
        let mut parts = vec![self.ident()?];
        while self.is_sym(".") && !matches!(self.peek_at(1), Some(Tok::Sym("*"))) {
            self.pos += 1;
            parts.push(self.ident()?);
        }
        let name = parts.pop().unwrap_or_default();
        Ok(Expr::Column(parts.pop(), name))
    }

    fn case_expr(&mut self) -> Result<Expr, SqlError> {
        self.pos += 1;
        let operand = if self.is_kw("WHEN") {
            None
        } else {
            Some(Box::new(self.expr()?))
        };
        let mut arms = Vec::new();
        while self.eat_kw("WHEN") {
            let w = self.expr()?;
            self.expect_kw("THEN")?;
            let t = self.expr()?;
            arms.push((w, t));
        }
        if arms.is_empty() {
            return Err(self.err_here());
        }
        let els = if self.eat_kw("ELSE") {
            Some(Box::new(self.expr()?))
        } else {
            None
        };
        self.expect_kw("END")?;
        Ok(Expr::Case(operand, arms, els))
    }
}

fn err_for(t: &Tok) -> SqlError {
    match t {
        Tok::Word(w) if is_reserved(w) => SqlError::new(156, &[w]),
        other => SqlError::syntax(&tok_text(other)),
    }
}

/// Identifiers are limited to 128 UTF-16 code units (103, which aborts the batch): sysname is
/// nvarchar(128), so a character outside the BMP counts twice.
fn check_len(name: &str) -> Result<(), SqlError> {
    if name.encode_utf16().count() > 128 {
        let start: String = name.chars().take(128).collect();
        return Err(SqlError::new(103, &[&start, "128"]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_the_offending_token() {
        // Each case pins an error a client of the provider can meet.
        let cases: &[(&str, u32, &str)] = &[
            // DROP LOGIN has no IF EXISTS form (spec C2.33).
            (
                "DROP LOGIN IF EXISTS L",
                156,
                "Incorrect syntax near the keyword 'IF'.",
            ),
            // CREATE SCHEMA inside IF (spec C2.50).
            (
                "IF NOT EXISTS (SELECT 1 FROM sys.schemas WHERE name='s2') CREATE SCHEMA s2",
                156,
                "Incorrect syntax near the keyword 'SCHEMA'.",
            ),
            // CREATE SCHEMA after another statement (spec C2.50).
            (
                "SELECT 1; CREATE SCHEMA s3",
                111,
                "'CREATE SCHEMA' must be the first statement in a query batch.",
            ),
            // A non-keyword in the wrong place is 102.
            (
                "CREATE LOGIN x WITH PASWORD = 'a'",
                102,
                "Incorrect syntax near 'PASWORD'.",
            ),
        ];
        for (sql, n, msg) in cases {
            let e = parse_batch(sql).expect_err(sql);
            assert_eq!((e.number, e.message.as_str()), (*n, *msg), "{sql}");
        }
    }

    #[test]
    fn long_identifiers_are_103() {
        let sql = format!("CREATE LOGIN [{}] WITH PASSWORD='x'", "x".repeat(129));
        assert_eq!(parse_batch(&sql).expect_err("too long").number, 103);
        let ok = format!("CREATE LOGIN [{}] WITH PASSWORD='x'", "x".repeat(128));
        assert!(parse_batch(&ok).is_ok());
    }

    #[test]
    fn parses_the_provider_shapes() {
        let sqls = [
            "SELECT name, principal_id FROM sys.server_principals WHERE type IN ('S','E') ORDER BY name",
            "SELECT p.name FROM d1.sys.database_role_members m JOIN d1.sys.database_principals p ON p.principal_id = m.member_principal_id",
            "DECLARE @s nvarchar(max) = N'CREATE LOGIN ' + QUOTENAME(@P1) + N' WITH PASSWORD = ''x'''; EXEC sp_executesql @s",
            "GRANT SELECT, INSERT ON SCHEMA::s1 TO [U] WITH GRANT OPTION",
            "REVOKE GRANT OPTION FOR CREATE TABLE FROM U CASCADE",
            "ALTER DATABASE d1 SET SINGLE_USER WITH ROLLBACK IMMEDIATE",
            "SET ANSI_NULLS, QUOTED_IDENTIFIER ON; SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "IF EXISTS (SELECT 1 FROM sys.databases WHERE name = N'd') BEGIN DROP DATABASE d END ELSE PRINT 'no'",
        ];
        for s in sqls {
            parse_batch(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }
}
