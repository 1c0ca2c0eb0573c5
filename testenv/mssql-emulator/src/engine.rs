//! Statement execution against the catalog (spec Part B). One request runs under the catalog
//! lock from start to end; its results come back as a list of [`Out`] items that the
//! connection turns into tokens.

use crate::catalog::*;
use crate::errors::SqlError;
use crate::sql::ast::*;
use crate::sql::parser::{parse_batch_at, parse_param_decls};
use crate::value::{Column, SqlType, Value, ci_cmp, compare};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One item of a response, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// A result set.
    Rows(Vec<Column>, Vec<Vec<Value>>),
    /// End of a statement. `inproc` marks statements inside EXEC/sp_executesql.
    Done {
        /// DONE_ERROR / DONE_COUNT bits (MORE is added by the writer).
        status: u16,
        /// Current command.
        curcmd: u16,
        /// Row count.
        count: u64,
        /// DONEINPROC rather than DONE.
        inproc: bool,
    },
    /// ERROR or INFO with its line.
    Msg(SqlError, u32),
    /// ENVCHANGE 1.
    EnvDb(String, String),
    /// ENVCHANGE 8.
    EnvBegin(u64),
    /// ENVCHANGE 9.
    EnvCommit(u64),
    /// ENVCHANGE 10.
    EnvRollback(u64),
    /// Sleep (WAITFOR DELAY or an injected delay) before sending what follows.
    Delay(u64),
}

/// Live-session registry entry (feeds sys.dm_exec_sessions, 3702, 15434, KILL).
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Login principal id.
    pub login_id: i32,
    /// Login name.
    pub login_name: String,
    /// Current database id.
    pub db_id: i32,
    /// Login time.
    pub login_time: i64,
    /// Host name from LOGIN7.
    pub host: String,
    /// Program name from LOGIN7.
    pub program: String,
    /// Signalled to close the connection (KILL, ROLLBACK IMMEDIATE).
    pub kill: Arc<tokio::sync::Notify>,
}

/// Registry of live sessions by SPID.
pub type Sessions = BTreeMap<u16, SessionInfo>;

/// Server identity used by SERVERPROPERTY, @@VERSION, PRELOGIN and LOGINACK (one source).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// `@@SERVERNAME`.
    pub server_name: String,
    /// Product version major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Build.
    pub build: u16,
    /// Revision (fourth part of ProductVersion).
    pub revision: u16,
    /// ProductLevel.
    pub level: String,
    /// ProductUpdateLevel.
    pub update_level: String,
    /// Edition.
    pub edition: String,
    /// EngineEdition (3 Developer/Enterprise, 5 Azure SQL Database).
    pub engine_edition: i64,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            server_name: "mssql-emulator".into(),
            major: 16,
            minor: 0,
            build: 4135,
            revision: 4,
            level: "RTM".into(),
            update_level: "CU14".into(),
            edition: "Developer Edition (64-bit)".into(),
            engine_edition: 3,
        }
    }
}

impl Identity {
    /// `16.0.4135.4`.
    pub fn product_version(&self) -> String {
        format!("{}.{}.{}.{}", self.major, self.minor, self.build, self.revision)
    }
    /// `@@VERSION`.
    pub fn version_string(&self) -> String {
        format!(
            "Microsoft SQL Server 2022 ({}-{}) (KB5038325) - {} (X64) \n\tJul  4 2024 13:00:00 \n\tCopyright (C) 2022 Microsoft Corporation\n\t{} on Linux (Ubuntu 22.04.4 LTS) <X64>",
            self.level,
            self.update_level,
            self.product_version(),
            self.edition
        )
    }
}

/// Per-connection state.
#[derive(Debug, Clone)]
pub struct Session {
    /// SPID.
    pub spid: u16,
    /// Login principal id.
    pub login_id: i32,
    /// Login name.
    pub login_name: String,
    /// Current database.
    pub db_id: i32,
    /// Database the LOGIN7 resolved to (restored by reset-connection).
    pub login_db_id: i32,
    /// @@TRANCOUNT.
    pub trancount: i64,
    /// Catalog before and after each change this transaction made, so ROLLBACK undoes exactly
    /// those changes and never other sessions' work (see [`crate::catalog::undo`]).
    pub journal: Vec<(Catalog, Catalog)>,
    /// Transaction descriptor handed out in ENVCHANGE 8.
    pub descriptor: u64,
    /// SET NOCOUNT.
    pub nocount: bool,
    /// SET XACT_ABORT.
    pub xact_abort: bool,
    /// Other SET options, recorded as given.
    pub options: BTreeMap<String, String>,
    /// Whether the client asked for ENVCHANGE on USE (LOGIN7 fUseDB).
    pub use_db_env: bool,
    /// For a contained-database user's session: (database id, user principal id). Such a
    /// session has no login (login_id 0).
    pub contained: Option<(i32, i32)>,
    /// The request just run matched the `drop_after` fault: close instead of answering.
    pub lose_answer: bool,
}

impl Session {
    /// A new session.
    pub fn new(spid: u16, login_id: i32, login_name: &str, db_id: i32) -> Session {
        Session {
            spid,
            login_id,
            login_name: login_name.into(),
            db_id,
            login_db_id: db_id,
            trancount: 0,
            journal: Vec::new(),
            descriptor: 0,
            nocount: false,
            xact_abort: false,
            options: BTreeMap::new(),
            use_db_env: true,
            contained: None,
            lose_answer: false,
        }
    }
}

/// Why a statement or batch stopped.
#[derive(Debug)]
pub enum Fail {
    /// Statement errors (one or more messages); the batch continues.
    Err(Vec<SqlError>),
    /// The batch ends (the messages were already emitted).
    Abort,
    /// An error inside BEGIN TRY: not sent; control goes to the CATCH block (with the line).
    Caught(SqlError, u32),
}

impl From<SqlError> for Fail {
    fn from(e: SqlError) -> Self {
        Fail::Err(vec![e])
    }
}

type R<T = ()> = Result<T, Fail>;

fn e(n: u32, args: &[&str]) -> Fail {
    Fail::Err(vec![SqlError::new(n, args)])
}

/// Everything one request needs while it runs.
pub struct Exec<'a> {
    /// The catalog (locked).
    pub cat: &'a mut Catalog,
    /// The session.
    pub sess: &'a mut Session,
    /// Live sessions.
    pub sessions: &'a std::sync::Mutex<Sessions>,
    /// Server identity.
    pub ident: &'a Identity,
    /// Response items.
    pub out: Vec<Out>,
    /// Statement kinds executed (for counters).
    pub kinds: Vec<&'static str>,
    /// Injected per-statement delay in ms.
    pub delay_ms: u64,
    vars: Vec<HashMap<String, (SqlType, Value)>>,
    depth: usize,
    /// @@ROWCOUNT: rows of the last statement.
    pub(crate) last_rowcount: i64,
    /// @@ERROR: number of the last statement's error, 0 after a success.
    pub(crate) last_error: i64,
    /// Nesting of BEGIN TRY blocks being executed.
    try_depth: usize,
    /// Errors being handled by CATCH blocks (innermost last), for ERROR_NUMBER() and `THROW;`.
    pub(crate) caught: Vec<(SqlError, u32)>,
    next_descriptor: &'a std::sync::atomic::AtomicU64,
}

/// Input variables for a scope: name (with '@', any case) → (type, value).
pub type Vars = HashMap<String, (SqlType, Value)>;

struct Src {
    names: Vec<String>,
    cols: Vec<Column>,
    rows: Vec<Vec<Value>>,
}

/// One FROM source as seen by expression evaluation: its names, columns and current row.
type Frame<'r> = (&'r [String], &'r [Column], Option<&'r [Value]>);

#[derive(Clone, Default)]
struct Env<'r> {
    /// Sources of the query being evaluated.
    frames: Vec<Frame<'r>>,
    /// Sources of the enclosing queries (correlated subqueries), innermost first.
    outer: Vec<Frame<'r>>,
}

fn sysname() -> SqlType {
    SqlType::NVarChar(128)
}

impl<'a> Exec<'a> {
    /// Prepares to run a request.
    pub fn new(
        cat: &'a mut Catalog,
        sess: &'a mut Session,
        sessions: &'a std::sync::Mutex<Sessions>,
        ident: &'a Identity,
        next_descriptor: &'a std::sync::atomic::AtomicU64,
    ) -> Self {
        Exec {
            cat,
            sess,
            sessions,
            ident,
            out: Vec::new(),
            kinds: Vec::new(),
            delay_ms: 0,
            vars: vec![HashMap::new()],
            depth: 0,
            last_rowcount: 0,
            last_error: 0,
            try_depth: 0,
            caught: Vec::new(),
            next_descriptor,
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        match self.sessions.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Runs a SQL batch. Compile errors abort the batch before anything runs.
    pub fn run_batch(&mut self, sql: &str) {
        let _ = self.run_text(sql, None, false);
    }

    /// Runs an RPC to sp_executesql; Ok(false) when a statement failed, Err when the batch
    /// aborted.
    pub fn run_rpc_executesql(
        &mut self,
        stmt: &str,
        decls: &str,
        args: Vec<(Option<String>, Value)>,
    ) -> bool {
        let saved = self.sess.db_id;
        let r = self.run_executesql(stmt, decls, args);
        self.scope_exit(saved);
        matches!(r, Ok(true))
    }

    /// Runs sp_executesql: statement text, parameter declarations and values by name.
    fn run_executesql(&mut self, stmt: &str, decls: &str, args: Vec<(Option<String>, Value)>) -> R<bool> {
        let mut vars = HashMap::new();
        let decls = match parse_param_decls(decls) {
            Ok(d) => d,
            Err(err) => {
                self.emit_error(err, 1, true);
                return Ok(false);
            }
        };
        let mut positional = args.iter().filter(|a| a.0.is_none()).map(|a| a.1.clone());
        for (name, ty, _) in &decls {
            let by_name = args
                .iter()
                .find(|a| a.0.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)));
            let v = match by_name {
                Some(a) => Some(a.1.clone()),
                None => positional.next(),
            };
            match v {
                Some(v) => {
                    vars.insert(name.to_lowercase(), (type_of(ty), v));
                }
                None => {
                    let err = SqlError::new(
                        8178,
                        &[
                            &format!("({decls_text}){stmt}", decls_text = decl_text(&decls)),
                            name,
                        ],
                    );
                    self.emit_error(err, 1, true);
                    return Ok(false);
                }
            }
        }
        let saved_db = self.sess.db_id;
        let r = self.run_text(stmt, Some(vars), true);
        self.scope_exit(saved_db);
        r
    }

    /// Runs an RPC to a named procedure (`sp_configure`, `sp_addrolemember`, …).
    pub fn run_rpc_proc(&mut self, name: &str, args: Vec<(Option<String>, Value)>) {
        let exprs = args
            .into_iter()
            .map(|(n, v)| {
                let x = match v.base() {
                    Value::Null => Expr::Null,
                    Value::Int(i) => Expr::Int(*i),
                    Value::Bit(b) => Expr::Int(*b as i64),
                    Value::Bin(b) => Expr::Bin(b.clone()),
                    other => Expr::Str(other.as_text().unwrap_or_default()),
                };
                (n, x)
            })
            .collect();
        let st = Stmt {
            line: 1,
            kind: StmtKind::ExecProc(None, name.to_string(), exprs),
        };
        let _ = self.stmt(&st, true);
    }

    /// Leaving an EXEC/sp_executesql scope restores the database (B0.6).
    fn scope_exit(&mut self, saved_db: i32) {
        if self.sess.db_id != saved_db {
            self.sess.db_id = saved_db;
            let spid = self.sess.spid;
            if let Some(s) = self.sessions().get_mut(&spid) {
                s.db_id = saved_db;
            }
        }
    }

    /// Parses and runs `sql` in a new variable scope when nested. Ok(false) when a statement
    /// failed; Err(Abort) when the batch must end (XACT_ABORT, THROW).
    fn run_text(&mut self, sql: &str, vars: Option<Vars>, inproc: bool) -> R<bool> {
        let stmts = match parse_batch_at(sql) {
            Ok(s) => s,
            Err((err, line)) => {
                self.emit_error(err, line, inproc);
                return Ok(false);
            }
        };
        let pushed = vars.is_some();
        if let Some(v) = vars {
            self.vars.push(v);
        }
        let mut result = Ok(true);
        for st in &stmts {
            match self.stmt(st, inproc) {
                Ok(good) => {
                    if !good {
                        result = Ok(false);
                    }
                }
                Err(f) => {
                    result = Err(f);
                    break;
                }
            }
        }
        if pushed && self.vars.len() > 1 {
            self.vars.pop();
        }
        result
    }

    fn emit_error(&mut self, err: SqlError, line: u32, inproc: bool) {
        self.out.push(Out::Msg(err, line));
        self.out.push(Out::Done {
            status: crate::tds::done::ERROR,
            curcmd: 0,
            count: 0,
            inproc,
        });
    }

    /// Runs one statement, emitting its errors. Ok(false) = it failed but the batch goes on.
    fn stmt(&mut self, st: &Stmt, inproc: bool) -> R<bool> {
        if self.delay_ms > 0 && !matches!(st.kind, StmtKind::Block(_) | StmtKind::If(..)) {
            self.out.push(Out::Delay(self.delay_ms));
        }
        self.kinds.push(kind_name(&st.kind));
        let changes_catalog = match &st.kind {
            StmtKind::ExecProc(_, name, _) => !name.eq_ignore_ascii_case("sp_executesql"),
            StmtKind::Reconfigure
            | StmtKind::CreateDatabase { .. }
            | StmtKind::AlterDatabase { .. }
            | StmtKind::DropDatabase { .. }
            | StmtKind::CreateLogin { .. }
            | StmtKind::AlterLogin { .. }
            | StmtKind::DropLogin(_)
            | StmtKind::CreateUser { .. }
            | StmtKind::AlterUser { .. }
            | StmtKind::DropUser { .. }
            | StmtKind::CreateSchema { .. }
            | StmtKind::DropSchema { .. }
            | StmtKind::AlterAuthorization { .. }
            | StmtKind::CreateRole { .. }
            | StmtKind::AlterRole { .. }
            | StmtKind::DropRole { .. }
            | StmtKind::Perm(_) => true,
            _ => false,
        };
        let before = (changes_catalog && self.sess.trancount > 0).then(|| self.cat.clone());
        let result = self.stmt_inner(st, inproc);
        if let Some(b) = before
            && self.sess.trancount > 0
        {
            let after = self.cat.clone();
            self.sess.journal.push((b, after));
        }
        // @@ROWCOUNT and @@ERROR follow leaf statements (SELECT sets its own row count).
        let leaf = !matches!(
            st.kind,
            StmtKind::Block(_) | StmtKind::If(..) | StmtKind::Declare(_) | StmtKind::TryCatch(..)
        );
        if leaf {
            if !matches!(st.kind, StmtKind::Select(_)) || result.is_err() {
                self.last_rowcount = 0;
            }
            self.last_error = match &result {
                Err(Fail::Err(errs)) => errs.first().map(|x| x.number as i64).unwrap_or(0),
                Err(Fail::Caught(x, _)) => x.number as i64,
                _ => 0,
            };
        }
        match result {
            Ok(()) => Ok(true),
            Err(Fail::Abort) => Err(Fail::Abort),
            Err(Fail::Caught(x, line)) => Err(Fail::Caught(x, line)),
            // Inside TRY an error (severity 11–19) goes to CATCH instead of the client; the
            // last message of a multi-message error is the one CATCH sees [U].
            Err(Fail::Err(errs)) if self.try_depth > 0 && errs.iter().all(|x| x.level < 20) => {
                let last = errs
                    .last()
                    .cloned()
                    .unwrap_or_else(|| SqlError::unsupported("empty error"));
                Err(Fail::Caught(last, st.line))
            }
            Err(Fail::Err(errs)) => {
                let abort = errs.iter().any(|x| x.level >= 20) || matches!(st.kind, StmtKind::Throw(_));
                for err in errs {
                    self.out.push(Out::Msg(err, st.line));
                }
                self.out.push(Out::Done {
                    status: crate::tds::done::ERROR,
                    curcmd: 0,
                    count: 0,
                    inproc,
                });
                if self.sess.xact_abort || abort {
                    if self.sess.trancount > 0 {
                        self.rollback();
                    }
                    return Err(Fail::Abort);
                }
                Ok(false)
            }
        }
    }

    fn done(&mut self, inproc: bool) {
        self.out.push(Out::Done {
            status: 0,
            curcmd: 0,
            count: 0,
            inproc,
        });
    }

    fn stmt_inner(&mut self, st: &Stmt, inproc: bool) -> R {
        match &st.kind {
            StmtKind::Select(s) => self.select_stmt(s, inproc),
            StmtKind::Use(name) => self.use_db(name, inproc),
            StmtKind::SetOption(names, value) => {
                for n in names.split(',') {
                    let on = value == "ON";
                    match n {
                        "NOCOUNT" => self.sess.nocount = on,
                        "XACT_ABORT" => self.sess.xact_abort = on,
                        "LANGUAGE"
                            if !value.eq_ignore_ascii_case("us_english")
                                && !value.eq_ignore_ascii_case("english") =>
                        {
                            return Err(Fail::from(SqlError::unsupported(&format!(
                                "SET LANGUAGE {value}"
                            ))));
                        }
                        _ => {}
                    }
                    self.sess.options.insert(n.to_string(), value.clone());
                }
                self.done(inproc);
                Ok(())
            }
            StmtKind::SetVar(v, ex) => {
                let val = self.eval(ex, &Env::default())?;
                self.set_var(v, val)?;
                Ok(())
            }
            StmtKind::Declare(vars) => {
                for (name, ty, init) in vars {
                    let t = type_of(ty);
                    let v = match init {
                        Some(x) => cast_value(self.eval(x, &Env::default())?, t),
                        None => Value::Null,
                    };
                    if let Some(scope) = self.vars.last_mut() {
                        scope.insert(name.to_lowercase(), (t, v));
                    }
                }
                Ok(())
            }
            StmtKind::If(cond, then, els) => {
                let c = self.truth(cond, &Env::default())?;
                if c == Some(true) {
                    self.stmt(then, inproc)?;
                } else if let Some(x) = els {
                    self.stmt(x, inproc)?;
                }
                Ok(())
            }
            StmtKind::Block(list) => {
                for s in list {
                    self.stmt(s, inproc)?;
                }
                Ok(())
            }
            StmtKind::ExecDynamic(x) => {
                let v = self.eval(x, &Env::default())?;
                // EXEC of NULL runs nothing, silently (B0.2: QUOTENAME over 128 chars).
                if let Some(sql) = v.as_text() {
                    self.nested(|me| {
                        let saved = me.sess.db_id;
                        let r = me.run_text(&sql, Some(HashMap::new()), true);
                        me.scope_exit(saved);
                        r
                    })?;
                }
                if !inproc {
                    self.done(false);
                }
                Ok(())
            }
            StmtKind::ExecProc(db, name, args) => match db {
                None => self.exec_proc(name, args, inproc),
                Some(d) => {
                    // The procedure runs in database `d`, like a USE scoped to the call.
                    let target = self.cat.db(d).ok_or_else(|| e(911, &[d]))?;
                    if self.user_in(target).is_none() {
                        return Err(e(916, &[&self.sess.login_name.clone(), &target.name.clone()]));
                    }
                    let (saved, id) = (self.sess.db_id, target.id);
                    self.sess.db_id = id;
                    let r = self.exec_proc(name, args, inproc);
                    self.sess.db_id = saved;
                    r
                }
            },
            StmtKind::BeginTran => {
                self.begin_tran();
                self.done(inproc);
                Ok(())
            }
            StmtKind::Commit => {
                self.commit()?;
                self.done(inproc);
                Ok(())
            }
            StmtKind::Rollback => {
                if self.sess.trancount == 0 {
                    return Err(e(3903, &[]));
                }
                self.rollback();
                self.done(inproc);
                Ok(())
            }
            StmtKind::SaveTran => {
                self.done(inproc);
                Ok(())
            }
            StmtKind::Kill(spid) => self.kill(*spid, inproc),
            StmtKind::Print(x) => {
                let v = self.eval(x, &Env::default())?;
                let msg = SqlError {
                    number: 0,
                    level: 0,
                    state: 1,
                    message: v.as_text().unwrap_or_default(),
                };
                self.out.push(Out::Msg(msg, st.line));
                Ok(())
            }
            StmtKind::TryCatch(body, catch) => {
                self.try_depth += 1;
                let mut caught = None;
                for x in body {
                    match self.stmt(x, inproc) {
                        Ok(_) => {}
                        Err(Fail::Caught(err, line)) => {
                            caught = Some((err, line));
                            break;
                        }
                        Err(other) => {
                            self.try_depth -= 1;
                            return Err(other);
                        }
                    }
                }
                self.try_depth -= 1;
                if let Some(c) = caught {
                    self.caught.push(c);
                    let mut r = Ok(());
                    for x in catch {
                        if let Err(f) = self.stmt(x, inproc) {
                            r = Err(f);
                            break;
                        }
                    }
                    self.caught.pop();
                    r?;
                }
                Ok(())
            }
            StmtKind::Throw(args) => match args {
                // `THROW;` re-raises the error the enclosing CATCH block is handling.
                None => match self.caught.last() {
                    Some((err, _)) => Err(Fail::Err(vec![err.clone()])),
                    None => Err(Fail::from(SqlError::new(10704, &[]))),
                },
                Some((n, m, s)) => {
                    let env = Env::default();
                    let number = self.eval(n, &env)?.as_int().unwrap_or(50000) as u32;
                    let message = self.eval(m, &env)?.as_text().unwrap_or_default();
                    let state = self.eval(s, &env)?.as_int().unwrap_or(1) as u8;
                    Err(Fail::Err(vec![SqlError {
                        number,
                        level: 16,
                        state,
                        message,
                    }]))
                }
            },
            StmtKind::Raiserror(m, sev, state, _) => {
                let env = Env::default();
                let message = self.eval(m, &env)?.as_text().unwrap_or_default();
                let level = self.eval(sev, &env)?.as_int().unwrap_or(16).clamp(0, 25) as u8;
                let state = self.eval(state, &env)?.as_int().unwrap_or(1).clamp(0, 255) as u8;
                let err = SqlError {
                    number: 50000,
                    level,
                    state,
                    message,
                };
                if err.is_info() {
                    self.out.push(Out::Msg(err, st.line));
                    return Ok(());
                }
                Err(Fail::Err(vec![err]))
            }
            StmtKind::WaitFor(x) => {
                let v = self.eval(x, &Env::default())?.as_text().unwrap_or_default();
                let ms = parse_delay(&v).ok_or_else(|| Fail::from(SqlError::syntax(&v)))?;
                self.out.push(Out::Delay(ms));
                self.done(inproc);
                Ok(())
            }
            StmtKind::Reconfigure => {
                self.require_server("ALTER SETTINGS")?;
                self.cat.contained_auth.1 = self.cat.contained_auth.0;
                self.done(inproc);
                Ok(())
            }
            other => {
                self.ddl(other)?;
                self.done(inproc);
                Ok(())
            }
        }
    }

    fn nested(&mut self, f: impl FnOnce(&mut Self) -> R<bool>) -> R {
        self.depth += 1;
        if self.depth > 32 {
            self.depth -= 1;
            return Err(Fail::from(SqlError::unsupported("nesting deeper than 32 levels")));
        }
        let r = f(self);
        self.depth -= 1;
        // An abort inside (XACT_ABORT, THROW) ends the outer batch too.
        r.map(|_| ())
    }

    fn set_var(&mut self, name: &str, val: Value) -> R {
        let key = name.to_lowercase();
        for scope in self.vars.iter_mut().rev() {
            if let Some(slot) = scope.get_mut(&key) {
                slot.1 = cast_value(val, slot.0);
                return Ok(());
            }
        }
        Err(e(137, &[name]))
    }

    fn get_var(&self, name: &str) -> R<(SqlType, Value)> {
        let key = name.to_lowercase();
        // Variables do not cross EXEC scopes: only the innermost scope is visible.
        match self.vars.last().and_then(|s| s.get(&key)) {
            Some(v) => Ok(v.clone()),
            None => Err(e(137, &[name])),
        }
    }

    // ---- transactions (B0.3) ----

    /// BEGIN TRAN (SQL or TM request).
    pub fn begin_tran(&mut self) {
        self.sess.trancount += 1;
        if self.sess.trancount == 1 {
            self.sess.journal.clear();
            self.sess.descriptor = self
                .next_descriptor
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.out.push(Out::EnvBegin(self.sess.descriptor));
        }
    }

    /// COMMIT (SQL or TM request).
    pub fn commit(&mut self) -> R {
        if self.sess.trancount == 0 {
            return Err(e(3902, &[]));
        }
        self.sess.trancount -= 1;
        if self.sess.trancount == 0 {
            self.sess.journal.clear();
            self.out.push(Out::EnvCommit(self.sess.descriptor));
            self.sess.descriptor = 0;
        }
        Ok(())
    }

    /// ROLLBACK: restores the catalog as of this transaction's first change.
    pub fn rollback(&mut self) {
        if self.sess.trancount == 0 {
            return;
        }
        for (before, after) in std::mem::take(&mut self.sess.journal).iter().rev() {
            undo(self.cat, before, after);
        }
        self.sess.trancount = 0;
        self.out.push(Out::EnvRollback(self.sess.descriptor));
        self.sess.descriptor = 0;
    }

    // ---- identity and permission helpers ----

    fn login(&self) -> Option<&ServerPrincipal> {
        self.cat.login_by_id(self.sess.login_id)
    }
    fn login_sid(&self) -> Vec<u8> {
        self.login().map(|l| l.sid.clone()).unwrap_or_default()
    }
    fn sysadmin(&self) -> bool {
        self.cat.is_sysadmin(self.sess.login_id)
    }
    fn cur_db(&self) -> R<&Database> {
        self.cat.db_by_id(self.sess.db_id).ok_or_else(|| e(911, &["?"]))
    }
    fn cur_db_mut(&mut self) -> R<&mut Database> {
        let id = self.sess.db_id;
        self.cat.db_mut(id).ok_or_else(|| e(911, &["?"]))
    }

    /// The database user the current login acts as in `db` (B0.6): dbo for sysadmin and the
    /// owner, the mapped user, guest with CONNECT, or none.
    fn user_in(&self, db: &Database) -> Option<i32> {
        if let Some((cdb, uid)) = self.sess.contained
            && cdb == db.id
        {
            return Some(uid);
        }
        let sid = self.login_sid();
        if self.sysadmin() || db.owner_sid == sid {
            return Some(1);
        }
        if let Some(u) = db.user_for_sid(&sid) {
            return Some(u.id);
        }
        let guest_ok = db
            .perms
            .iter()
            .any(|p| p.class == 0 && p.grantee == 2 && p.code == "CO" && p.state != 'D');
        guest_ok.then_some(2)
    }

    fn server_perm(&self, code: &str) -> bool {
        if self.sysadmin() {
            return true;
        }
        let roles = self.cat.server_roles_of(self.sess.login_id);
        let implied = |role: i32| -> bool {
            match role {
                4 => matches!(code, "ALLG" | "VWDF"),
                9 => matches!(code, "CADB" | "CRDB"),
                5 => matches!(code, "ALTER SETTINGS" | "VWSS"),
                7 => matches!(code, "ALTER ANY CONNECTION" | "VWSS"),
                12 => code == "ALLG",
                13 => matches!(code, "CADB" | "CRDB" | "ALDB"),
                15 => code == "VWSS",
                _ => false,
            }
        };
        if roles.iter().any(|r| implied(*r)) {
            return true;
        }
        let denied = self
            .cat
            .server_perms
            .iter()
            .any(|p| p.class == 100 && roles.contains(&p.grantee) && p.code == code && p.state == 'D');
        !denied
            && self.cat.server_perms.iter().any(|p| {
                p.class == 100
                    && roles.contains(&p.grantee)
                    && (p.code == code || p.code == "CL")
                    && p.state != 'D'
            })
    }

    fn require_server(&self, code: &str) -> R {
        if self.server_perm(code) {
            Ok(())
        } else {
            Err(e(15247, &[]))
        }
    }

    /// Database permission check with fixed-role implications (B6).
    fn db_perm(&self, db: &Database, code: &str) -> bool {
        let Some(uid) = self.user_in(db) else { return false };
        if uid == 1 {
            return true;
        }
        let roles = db.roles_of(uid);
        if roles.contains(&16384) {
            return true;
        }
        let implied = |r: i32| -> bool {
            match r {
                16385 => matches!(code, "ALUS" | "CO"),
                16386 => matches!(code, "ALRL" | "CRSM" | "VW" | "ALAR"),
                16387 => matches!(code, "CRTB" | "CRVW" | "CRPR" | "CRFN" | "CRSM" | "ALSM" | "RF"),
                16390 => code == "SL",
                16391 => matches!(code, "IN" | "UP" | "DL"),
                _ => false,
            }
        };
        if roles.iter().any(|r| implied(*r)) {
            return true;
        }
        let mine = |p: &&Perm| p.class == 0 && roles.contains(&p.grantee);
        if db
            .perms
            .iter()
            .filter(mine)
            .any(|p| p.code == code && p.state == 'D')
        {
            return false;
        }
        db.perms
            .iter()
            .filter(mine)
            .any(|p| (p.code == code || p.code == "CL") && p.state != 'D')
    }

    // ---- USE ----

    fn use_db(&mut self, name: &str, inproc: bool) -> R {
        let db = self.cat.db(name).ok_or_else(|| e(911, &[name]))?;
        if self.user_in(db).is_none() {
            return Err(e(916, &[&self.sess.login_name.clone(), &db.name.clone()]));
        }
        let (id, new) = (db.id, db.name.clone());
        let me = self.sess.spid;
        if db.user_access == 1
            && id != self.sess.db_id
            && self
                .sessions()
                .iter()
                .any(|(spid, s)| *spid != me && s.db_id == id)
        {
            return Err(e(924, &[&new]));
        }
        let old = self.cur_db().map(|d| d.name.clone()).unwrap_or_default();
        self.sess.db_id = id;
        let spid = self.sess.spid;
        if let Some(s) = self.sessions().get_mut(&spid) {
            s.db_id = id;
        }
        if self.sess.use_db_env {
            self.out.push(Out::EnvDb(new.clone(), old));
        }
        self.out.push(Out::Msg(SqlError::new(5701, &[&new]), 1));
        self.done(inproc);
        Ok(())
    }

    // ---- KILL ----

    fn kill(&mut self, spid: i64, inproc: bool) -> R {
        if !self.server_perm("ALTER ANY CONNECTION") {
            return Err(e(6102, &[]));
        }
        if spid == self.sess.spid as i64 {
            return Err(e(6104, &[]));
        }
        let target = u16::try_from(spid)
            .ok()
            .and_then(|s| self.sessions().get(&s).map(|i| i.kill.clone()));
        match target {
            Some(k) => {
                k.notify_one();
                self.done(inproc);
                Ok(())
            }
            None => Err(e(6106, &[&spid.to_string()])),
        }
    }

    // ---- procedures ----

    fn exec_proc(&mut self, name: &str, args: &[(Option<String>, Expr)], inproc: bool) -> R {
        let env = Env::default();
        let mut vals = Vec::new();
        for (n, x) in args {
            vals.push((n.clone(), self.eval(x, &env)?));
        }
        let lname = name.to_ascii_lowercase();
        let text = |i: usize| vals.get(i).and_then(|v| v.1.as_text()).unwrap_or_default();
        match lname.as_str() {
            "sp_executesql" => {
                // @stmt and @params may be passed by name; the rest are the parameters.
                let named = |n: &str| {
                    vals.iter()
                        .position(|v| v.0.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(n)))
                };
                let (si, pi) = (named("@stmt").unwrap_or(0), named("@params").unwrap_or(1));
                let stmt = text(si);
                let decls = text(pi);
                let rest: Vec<(Option<String>, Value)> = vals
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != si && *i != pi)
                    .map(|(_, v)| v.clone())
                    .collect();
                self.nested(|me| me.run_executesql(&stmt, &decls, rest))?;
                if !inproc {
                    self.done(false);
                }
                Ok(())
            }
            "sp_configure" => {
                self.require_server("ALTER SETTINGS")?;
                let opt = text(0);
                if !opt.eq_ignore_ascii_case("contained database authentication") {
                    return Err(Fail::from(SqlError::unsupported(&format!(
                        "sp_configure '{opt}'"
                    ))));
                }
                let Some(v) = vals.get(1).and_then(|v| v.1.as_int()) else {
                    let cols = vec![
                        Column::new("name", SqlType::NVarChar(35), false),
                        Column::new("minimum", SqlType::Int, false),
                        Column::new("maximum", SqlType::Int, false),
                        Column::new("config_value", SqlType::Int, false),
                        Column::new("run_value", SqlType::Int, false),
                    ];
                    let (c, r) = self.cat.contained_auth;
                    let row = vec![
                        Value::Str("contained database authentication".into()),
                        Value::Int(0),
                        Value::Int(1),
                        Value::Int(c),
                        Value::Int(r),
                    ];
                    self.out.push(Out::Rows(cols, vec![row]));
                    self.out.push(Out::Done {
                        status: crate::tds::done::COUNT,
                        curcmd: 0xC1,
                        count: 1,
                        inproc: true,
                    });
                    return Ok(());
                };
                let old = self.cat.contained_auth.0;
                self.cat.contained_auth.0 = v;
                let msg = SqlError::new(
                    15457,
                    &[
                        "contained database authentication",
                        &old.to_string(),
                        &v.to_string(),
                    ],
                );
                self.out.push(Out::Msg(msg, 1));
                self.done(inproc);
                Ok(())
            }
            "sp_addrolemember" | "sp_droprolemember" => {
                let (role, member) = (text(0), text(1));
                let db = self.cur_db()?;
                if db.principal(&member).is_none() && db.principal(&role).is_some_and(|r| r.kind == 'R') {
                    return Err(e(15410, &[&member]));
                }
                self.alter_role(&role, lname == "sp_addrolemember", &member)?;
                self.done(inproc);
                Ok(())
            }
            "sp_addsrvrolemember" | "sp_dropsrvrolemember" => {
                let (login, role) = (text(0), text(1));
                self.alter_server_role(&role, lname == "sp_addsrvrolemember", &login)?;
                self.done(inproc);
                Ok(())
            }
            _ => Err(e(2812, &[name])),
        }
    }

    // ---- DDL/DCL ----

    fn ddl(&mut self, k: &StmtKind) -> R {
        match k {
            StmtKind::CreateDatabase {
                name,
                containment,
                collate,
            } => self.create_database(name, containment.as_deref(), collate.as_deref()),
            StmtKind::AlterDatabase { name, action } => self.alter_database(name.as_deref(), action),
            StmtKind::DropDatabase { if_exists, names } => {
                for n in names {
                    self.drop_database(n, *if_exists)?;
                }
                Ok(())
            }
            StmtKind::CreateLogin {
                name,
                password,
                external,
                options,
            } => self.create_login(name, password.as_ref(), *external, options),
            StmtKind::AlterLogin {
                name,
                enable,
                password,
                options,
            } => self.alter_login(name, *enable, password.as_ref(), options),
            StmtKind::DropLogin(name) => self.drop_login(name),
            StmtKind::CreateUser {
                name,
                source,
                options,
            } => self.create_user(name, source, options),
            StmtKind::AlterUser { name, options } => self.alter_user(name, options),
            StmtKind::DropUser { if_exists, name } => self.drop_user(name, *if_exists),
            StmtKind::CreateSchema { name, owner } => self.create_schema(name, owner.as_deref()),
            StmtKind::DropSchema { if_exists, name } => self.drop_schema(name, *if_exists),
            StmtKind::AlterAuthorization { class, name, to } => self.alter_authorization(class, name, to),
            StmtKind::CreateRole { name, owner, server } => self.create_role(name, owner.as_deref(), *server),
            StmtKind::AlterRole {
                name,
                server,
                add,
                member,
            } => match add {
                None => self.rename_role(name, *server, member),
                Some(add) if *server => self.alter_server_role(name, *add, member),
                Some(add) => self.alter_role(name, *add, member),
            },
            StmtKind::DropRole {
                if_exists,
                name,
                server,
            } => self.drop_role(name, *if_exists, *server),
            StmtKind::Perm(p) => self.perm(p),
            _ => Err(Fail::from(SqlError::unsupported("statement"))),
        }
    }

    fn create_database(&mut self, name: &str, containment: Option<&str>, collate: Option<&str>) -> R {
        if self.sess.trancount > 0 {
            return Err(e(226, &["CREATE DATABASE"]));
        }
        let master_ok = self.cat.db_by_id(1).is_some_and(|m| {
            let roles = self.user_in(m).map(|u| m.roles_of(u)).unwrap_or_default();
            m.perms
                .iter()
                .any(|p| p.class == 0 && roles.contains(&p.grantee) && p.code == "CRDB" && p.state != 'D')
        });
        if !(self.server_perm("CADB") || self.server_perm("ALDB") || master_ok) {
            return Err(e(262, &["CREATE DATABASE", "master"]));
        }
        if self.cat.db(name).is_some() {
            return Err(e(1801, &[name]));
        }
        let collation = match collate {
            Some(c) if valid_collation(c) => c.to_string(),
            Some(c) => return Err(e(448, &[c])),
            None => "SQL_Latin1_General_CP1_CI_AS".to_string(),
        };
        let partial = match containment.map(|c| c.to_ascii_uppercase()) {
            None => false,
            Some(c) if c == "NONE" => false,
            Some(c) if c == "PARTIAL" => true,
            Some(c) => return Err(Fail::from(SqlError::syntax(&c))),
        };
        if partial && self.cat.contained_auth.1 == 0 {
            return Err(e(12824, &["create"]));
        }
        let id = self.cat.next_db_id();
        let mut db = new_database(id, name, self.login_sid(), &collation, self.cat.now());
        db.containment = partial as u8;
        self.cat.databases.push(db);
        Ok(())
    }

    fn alter_database(&mut self, name: Option<&str>, action: &AlterDbAction) -> R {
        if self.sess.trancount > 0 {
            return Err(e(226, &["ALTER DATABASE"]));
        }
        let db = match name {
            None => self.cur_db()?,
            Some(n) => match self.cat.db(n) {
                Some(d) => d,
                None => {
                    return Err(Fail::Err(vec![
                        SqlError::new(5011, &[n]),
                        SqlError::new(5069, &[]),
                    ]));
                }
            },
        };
        let allowed = self.sysadmin()
            || db.owner_sid == self.login_sid()
            || self.server_perm("ALDB")
            || self.db_perm(db, "AL");
        let dbname = db.name.clone();
        if !allowed {
            return Err(Fail::Err(vec![
                SqlError::new(5011, &[&dbname]),
                SqlError::new(5069, &[]),
            ]));
        }
        let id = db.id;
        match action {
            AlterDbAction::Recovery(m) => {
                let v = match m.as_str() {
                    "FULL" => 1,
                    "BULK_LOGGED" => 2,
                    "SIMPLE" => 3,
                    other => return Err(Fail::from(SqlError::syntax(other))),
                };
                self.db_mut_or(id)?.recovery = v;
            }
            AlterDbAction::Compat(level) => {
                if !(100..=160).contains(level) || level % 10 != 0 {
                    return Err(e(15048, &[]));
                }
                self.db_mut_or(id)?.compat = *level;
            }
            AlterDbAction::UserAccess(mode, immediate) => {
                let v = match mode.as_str() {
                    "MULTI_USER" => 0,
                    "SINGLE_USER" => 1,
                    _ => 2,
                };
                self.db_mut_or(id)?.user_access = v;
                if *immediate && v != 0 {
                    // ROLLBACK IMMEDIATE ends the other sessions in the database.
                    let me = self.sess.spid;
                    for (spid, s) in self.sessions().iter_mut() {
                        if *spid != me && s.db_id == id {
                            s.kill.notify_one();
                            s.db_id = -1;
                        }
                    }
                }
            }
            AlterDbAction::Containment(c) => {
                let partial = c == "PARTIAL";
                if partial && self.cat.contained_auth.1 == 0 {
                    return Err(Fail::Err(vec![
                        SqlError::new(12824, &["alter"]),
                        SqlError::new(5069, &[]),
                    ]));
                }
                self.db_mut_or(id)?.containment = partial as u8;
            }
            AlterDbAction::Collate(c) => {
                if !valid_collation(c) {
                    return Err(Fail::Err(vec![
                        SqlError::new(448, &[c]),
                        SqlError::new(5069, &[]),
                    ]));
                }
                // Changing the collation needs the database to itself (other sessions → 5030).
                let me = self.sess.spid;
                if self
                    .sessions()
                    .iter()
                    .any(|(spid, x)| *spid != me && x.db_id == id)
                {
                    return Err(Fail::Err(vec![
                        SqlError::new(5030, &[]),
                        SqlError::new(5072, &[&dbname, c]),
                    ]));
                }
                self.db_mut_or(id)?.collation = c.clone();
            }
            AlterDbAction::ModifyName(n) => {
                if self.cat.db(n).is_some_and(|d| d.id != id) {
                    return Err(e(1801, &[n]));
                }
                self.db_mut_or(id)?.name = n.clone();
                self.out.push(Out::Msg(SqlError::new(5022, &[n]), 1));
            }
            AlterDbAction::SetFlag(f, on) => {
                let db = self.db_mut_or(id)?;
                match f.as_str() {
                    "TRUSTWORTHY" => db.trustworthy = *on,
                    "READ_COMMITTED_SNAPSHOT" => db.rcsi = *on,
                    "ALLOW_SNAPSHOT_ISOLATION" => db.snapshot = *on,
                    _ => db.chaining = *on,
                }
            }
        }
        Ok(())
    }

    fn db_mut_or(&mut self, id: i32) -> R<&mut Database> {
        self.cat.db_mut(id).ok_or_else(|| e(5069, &[]))
    }

    fn drop_database(&mut self, name: &str, if_exists: bool) -> R {
        if self.sess.trancount > 0 {
            return Err(e(574, &["DROP DATABASE"]));
        }
        let Some(db) = self.cat.db(name) else {
            if if_exists {
                return Ok(());
            }
            return Err(e(3701, &["drop", "database", name]));
        };
        let allowed = self.sysadmin()
            || db.owner_sid == self.login_sid()
            || self.server_perm("ALDB")
            || self.db_perm(db, "CL");
        if !allowed {
            return Err(e(3701, &["drop", "database", name]));
        }
        if db.id <= 4 {
            return Err(e(3708, &["drop", "database", &db.name.clone(), "database"]));
        }
        let (id, dbname) = (db.id, db.name.clone());
        if self.sessions().values().any(|s| s.db_id == id) {
            return Err(e(3702, &[&dbname]));
        }
        self.cat.databases.retain(|d| d.id != id);
        Ok(())
    }

    fn create_login(
        &mut self,
        name: &str,
        password: Option<&PasswordSpec>,
        external: bool,
        options: &[(String, OptVal)],
    ) -> R {
        self.require_server("ALLG")?;
        if !external && name.contains('\\') {
            return Err(e(15006, &[name]));
        }
        if self.cat.login(name).is_some() {
            return Err(e(15025, &[name]));
        }
        let opt = |k: &str| options.iter().find(|o| o.0 == k).map(|o| &o.1);
        let now = self.cat.now();
        let id = self.cat.next_login_id();
        if external {
            let (sid, kind) = self.resolve_external(name, opt("OBJECT_ID"))?;
            if self.cat.login_by_sid(&sid).is_some() {
                return Err(e(15433, &[]));
            }
            self.cat.server_principals.push(ServerPrincipal {
                id,
                name: name.into(),
                sid,
                kind,
                disabled: false,
                created: now,
                modified: now,
                default_db: Some("master".into()),
                default_lang: Some("us_english".into()),
                fixed_role: false,
                owner: None,
                sql: None,
            });
        } else {
            let Some(pw) = password else {
                return Err(Fail::from(SqlError::syntax(name)));
            };
            let flag = |k: &str, d: bool| match opt(k) {
                Some(OptVal::Flag(b)) => *b,
                _ => d,
            };
            let policy = flag("CHECK_POLICY", true);
            let expiration = flag("CHECK_EXPIRATION", false);
            if !policy && expiration {
                return Err(e(15122, &[]));
            }
            if pw.must_change && !policy {
                return Err(e(15128, &[]));
            }
            if pw.must_change && !expiration {
                return Err(e(15099, &[]));
            }
            let sid = match opt("SID") {
                Some(OptVal::Bin(b)) if b.len() == 16 => b.clone(),
                Some(_) => return Err(e(15419, &[])),
                None => self.cat.new_sid(),
            };
            if self.cat.login_by_sid(&sid).is_some() {
                return Err(e(15433, &[]));
            }
            let hash = self.password_hash(name, pw, policy)?;
            let text_opt = |k: &str, d: &str| match opt(k) {
                Some(OptVal::Text(t)) => t.clone(),
                _ => d.to_string(),
            };
            self.cat.server_principals.push(ServerPrincipal {
                id,
                name: name.into(),
                sid,
                kind: 'S',
                disabled: false,
                created: now,
                modified: now,
                default_db: Some(text_opt("DEFAULT_DATABASE", "master")),
                default_lang: Some(text_opt("DEFAULT_LANGUAGE", "us_english")),
                fixed_role: false,
                owner: None,
                sql: Some(SqlLogin {
                    hash,
                    policy,
                    expiration,
                    must_change: pw.must_change,
                }),
            });
        }
        self.cat.server_perms.push(Perm {
            class: 100,
            major: 0,
            minor: 0,
            grantee: id,
            grantor: 1,
            code: "COSQ".into(),
            state: 'G',
        });
        Ok(())
    }

    /// Policy check and hashing of a CREATE/ALTER LOGIN password (B2).
    fn password_hash(&mut self, name: &str, pw: &PasswordSpec, policy: bool) -> R<Vec<u8>> {
        match (&pw.value, pw.hashed) {
            (OptVal::Bin(b), true) => {
                if b.len() == 70 && b[0] == 2 && b[1] == 0 {
                    Ok(b.clone())
                } else {
                    Err(e(15021, &[]))
                }
            }
            (OptVal::Text(t), false) => {
                if policy {
                    check_policy(name, t)?;
                }
                let mut salt = [0u8; 4];
                self.cat.fill(&mut salt);
                Ok(hash_password(t, salt))
            }
            _ => Err(e(15021, &[])),
        }
    }

    fn alter_login(
        &mut self,
        name: &str,
        enable: Option<bool>,
        password: Option<&PasswordSpec>,
        options: &[(String, OptVal)],
    ) -> R {
        let Some(target) = self.cat.login(name).filter(|p| p.kind != 'R') else {
            return Err(e(15151, &["alter", "login", name]));
        };
        let tid = target.id;
        let self_pw_change =
            tid == self.sess.login_id && enable.is_none() && options.iter().all(|o| o.0 == "OLD_PASSWORD");
        if !(self.server_perm("ALLG") || self_pw_change) {
            return Err(e(15151, &["alter", "login", name]));
        }
        if self_pw_change && !self.server_perm("ALLG") {
            let old = options.iter().find(|o| o.0 == "OLD_PASSWORD").and_then(|o| {
                if let OptVal::Text(t) = &o.1 {
                    Some(t.clone())
                } else {
                    None
                }
            });
            let ok = old.is_some_and(|o| target.sql.as_ref().is_some_and(|s| verify_password(&o, &s.hash)));
            if !ok {
                return Err(e(15151, &["alter", "login", name]));
            }
        }
        let policy = target.sql.as_ref().map(|s| s.policy).unwrap_or(false);
        let expiration = target.sql.as_ref().is_some_and(|s| s.expiration)
            || options
                .iter()
                .any(|o| o.0 == "CHECK_EXPIRATION" && o.1 == OptVal::Flag(true));
        if password.is_some_and(|p| p.must_change) && !expiration {
            return Err(e(15099, &[]));
        }
        let new_hash = match password {
            Some(pw) => Some(self.password_hash(name, pw, policy)?),
            None => None,
        };
        for (k, v) in options {
            if k == "NAME"
                && let OptVal::Text(n) = v
                && self.cat.login(n).is_some_and(|p| p.id != tid)
            {
                return Err(e(15025, &[n]));
            }
        }
        let now = self.cat.now();
        let Some(p) = self.cat.server_principals.iter_mut().find(|p| p.id == tid) else {
            return Ok(());
        };
        p.modified = now;
        if let Some(en) = enable {
            p.disabled = !en;
        }
        if let (Some(h), Some(sql)) = (new_hash, p.sql.as_mut()) {
            sql.hash = h;
            sql.must_change = password.is_some_and(|pw| pw.must_change);
        }
        for (k, v) in options {
            match (k.as_str(), v) {
                ("DEFAULT_DATABASE", OptVal::Text(t)) => p.default_db = Some(t.clone()),
                ("DEFAULT_LANGUAGE", OptVal::Text(t)) => p.default_lang = Some(t.clone()),
                ("NAME", OptVal::Text(t)) => p.name = t.clone(),
                ("CHECK_POLICY", OptVal::Flag(b)) => {
                    if let Some(s) = p.sql.as_mut() {
                        s.policy = *b;
                    }
                }
                ("CHECK_EXPIRATION", OptVal::Flag(b)) => {
                    if let Some(s) = p.sql.as_mut() {
                        s.expiration = *b;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The SID and type (E or X) of an Entra principal: from `WITH OBJECT_ID`, else from the
    /// stub directory; unknown names are 33134 as a real server answers.
    fn resolve_external(&self, name: &str, object_id: Option<&OptVal>) -> R<(Vec<u8>, char)> {
        if let Some(OptVal::Text(g)) = object_id {
            let sid = parse_guid(g).ok_or_else(|| Fail::from(SqlError::syntax(g)))?;
            let group = self
                .cat
                .directory
                .iter()
                .any(|p| p.group && parse_guid(&p.object_id).as_ref() == Some(&sid));
            return Ok((sid, if group { 'X' } else { 'E' }));
        }
        match self
            .cat
            .directory
            .iter()
            .find(|p| Catalog::name_eq(&p.name, name))
        {
            Some(p) => {
                let sid =
                    parse_guid(&p.object_id).ok_or_else(|| Fail::from(SqlError::syntax(&p.object_id)))?;
                Ok((sid, if p.group { 'X' } else { 'E' }))
            }
            None => Err(e(33134, &[name, "Principal not found in the directory."])),
        }
    }

    fn drop_login(&mut self, name: &str) -> R {
        let Some(target) = self.cat.login(name).filter(|p| p.kind != 'R') else {
            return Err(e(15151, &["drop", "login", name]));
        };
        if !self.server_perm("ALLG") {
            return Err(e(15151, &["drop", "login", name]));
        }
        let (tid, sid, tname) = (target.id, target.sid.clone(), target.name.clone());
        if self.sessions().values().any(|s| s.login_id == tid) {
            return Err(e(15434, &[&tname]));
        }
        if self.cat.databases.iter().any(|d| d.owner_sid == sid) {
            return Err(e(15174, &[&tname]));
        }
        self.cat.server_principals.retain(|p| p.id != tid);
        self.cat
            .server_role_members
            .retain(|(r, m)| *r != tid && *m != tid);
        self.cat.server_perms.retain(|p| p.grantee != tid);
        Ok(())
    }

    fn create_user(&mut self, name: &str, source: &UserSource, options: &[(String, OptVal)]) -> R {
        let db = self.cur_db()?;
        if !self.db_perm(db, "ALUS") {
            return Err(e(15247, &[]));
        }
        if db.principal(name).is_some() {
            return Err(e(15023, &[name]));
        }
        let (mut kind, auth, mut sid, mut pw_hash) = ('S', 1, None, None);
        match source {
            UserSource::Implicit | UserSource::Login(_) => {
                let lname = if let UserSource::Login(l) = source {
                    l.as_str()
                } else {
                    name
                };
                let Some(login) = self.cat.login(lname).filter(|p| p.kind != 'R') else {
                    return Err(e(15007, &[lname]));
                };
                if db.owner_sid == login.sid || db.user_for_sid(&login.sid).is_some() {
                    return Err(e(15063, &[]));
                }
                if login.kind == 'E' || login.kind == 'X' {
                    kind = login.kind;
                }
                sid = Some(login.sid.clone());
            }
            UserSource::WithoutLogin => {}
            UserSource::Password(p) => {
                if db.containment != 1 {
                    return Err(e(33233, &[]));
                }
                check_policy(name, p)?;
                pw_hash = Some(p.clone());
            }
            UserSource::External => {
                let (x, k) =
                    self.resolve_external(name, options.iter().find(|o| o.0 == "OBJECT_ID").map(|o| &o.1))?;
                sid = Some(x);
                kind = k;
            }
        }
        let auth = match source {
            UserSource::WithoutLogin => 0,
            UserSource::Password(_) => 2,
            UserSource::External => 4,
            _ if kind == 'E' || kind == 'X' => 4,
            _ => auth,
        };
        let id = db.next_principal_id();
        let sid = match sid {
            Some(s) => s,
            None => {
                // Users without a login get a 28-byte S-1-9-3 style SID.
                let mut s = vec![1, 5, 0, 0, 0, 0, 0, 9, 3, 0, 0, 0];
                s.extend(self.cat.new_sid());
                s
            }
        };
        if pw_hash.is_some() {
            kind = 'S';
        }
        let default_schema = match options.iter().find(|o| o.0 == "DEFAULT_SCHEMA").map(|o| &o.1) {
            Some(OptVal::Text(s)) => Some(s.clone()),
            _ => Some("dbo".to_string()),
        };
        // The contained user's password is hashed only now: the salt needs the catalog's RNG.
        let pw_hash = pw_hash.take().map(|p| {
            let mut salt = [0u8; 4];
            self.cat.fill(&mut salt);
            hash_password(&p, salt)
        });
        let now = self.cat.now();
        let db = self.cur_db_mut()?;
        db.principals.push(DbPrincipal {
            id,
            name: name.into(),
            kind,
            default_schema,
            sid: Some(sid),
            auth_type: auth,
            owner: None,
            fixed_role: false,
            created: now,
            password_hash: pw_hash,
        });
        db.perms.push(Perm {
            class: 0,
            major: 0,
            minor: 0,
            grantee: id,
            grantor: 1,
            code: "CO".into(),
            state: 'G',
        });
        Ok(())
    }

    fn alter_user(&mut self, name: &str, options: &[(String, OptVal)]) -> R {
        let db = self.cur_db()?;
        let Some(u) = db.principal(name).filter(|p| p.kind != 'R') else {
            return Err(e(15151, &["alter", "user", name]));
        };
        if !self.db_perm(db, "ALUS") {
            return Err(e(15151, &["alter", "user", name]));
        }
        let uid = u.id;
        let mut new_sid = None;
        for (k, v) in options {
            match (k.as_str(), v) {
                ("NAME", OptVal::Text(n)) if db.principal(n).is_some_and(|p| p.id != uid) => {
                    return Err(Fail::from(SqlError::new(15023, &[n]).with_state(10)));
                }
                ("LOGIN", OptVal::Text(l)) => match self.cat.login(l).filter(|p| p.kind != 'R') {
                    Some(login) => {
                        if db.user_for_sid(&login.sid).is_some_and(|p| p.id != uid) {
                            return Err(e(15063, &[]));
                        }
                        new_sid = Some(login.sid.clone());
                    }
                    None => return Err(e(15007, &[l])),
                },
                ("PASSWORD", OptVal::Text(p)) => {
                    if u.password_hash.is_none() {
                        return Err(Fail::from(SqlError::unsupported(
                            "ALTER USER … WITH PASSWORD for a user without a password",
                        )));
                    }
                    check_policy(name, p)?;
                }
                _ => {}
            }
        }
        // A contained user's new password is hashed with the catalog's RNG (before the borrow).
        let new_hash = match options.iter().find(|o| o.0 == "PASSWORD").map(|o| &o.1) {
            Some(OptVal::Text(p)) => {
                let mut salt = [0u8; 4];
                self.cat.fill(&mut salt);
                Some(hash_password(p, salt))
            }
            _ => None,
        };
        let db = self.cur_db_mut()?;
        let Some(u) = db.principals.iter_mut().find(|p| p.id == uid) else {
            return Ok(());
        };
        if new_hash.is_some() {
            u.password_hash = new_hash;
        }
        for (k, v) in options {
            match (k.as_str(), v) {
                ("NAME", OptVal::Text(n)) => u.name = n.clone(),
                ("DEFAULT_SCHEMA", OptVal::Text(s)) => u.default_schema = Some(s.clone()),
                _ => {}
            }
        }
        if let Some(s) = new_sid {
            u.sid = Some(s);
            u.auth_type = 1;
        }
        Ok(())
    }

    fn drop_user(&mut self, name: &str, if_exists: bool) -> R {
        let db = self.cur_db()?;
        let Some(u) = db.principal(name).filter(|p| p.kind != 'R') else {
            if if_exists {
                return Ok(());
            }
            return Err(e(15151, &["drop", "user", name]));
        };
        if u.id <= 4 {
            return Err(e(15150, &["drop", "user", &u.name.clone()]));
        }
        if !self.db_perm(db, "ALUS") {
            return Err(e(15151, &["drop", "user", name]));
        }
        let uid = u.id;
        if db.schemas.iter().any(|s| s.owner == uid) {
            return Err(e(15138, &["schema"]));
        }
        if db
            .principals
            .iter()
            .any(|p| p.kind == 'R' && p.owner == Some(uid))
        {
            return Err(e(15421, &[]));
        }
        if db.perms.iter().any(|p| p.grantor == uid && p.grantee != uid) {
            return Err(e(15284, &[]));
        }
        let db = self.cur_db_mut()?;
        db.principals.retain(|p| p.id != uid);
        db.role_members.retain(|(_, m)| *m != uid);
        db.perms.retain(|p| p.grantee != uid);
        Ok(())
    }

    fn create_schema(&mut self, name: &str, owner: Option<&str>) -> R {
        let db = self.cur_db()?;
        if !self.db_perm(db, "CRSM") {
            return Err(e(262, &["CREATE SCHEMA", &db.name.clone()]));
        }
        if db.schema(name).is_some() {
            return Err(e(2714, &[name]));
        }
        let owner_id = match owner {
            Some(o) => match db.principal(o) {
                Some(p) => p.id,
                None => {
                    return Err(Fail::Err(vec![
                        SqlError::new(15151, &["find", "user", o]),
                        SqlError::new(2759, &[]),
                    ]));
                }
            },
            None => self.user_in(db).unwrap_or(1),
        };
        let id = db.next_schema_id();
        self.cur_db_mut()?.schemas.push(Schema {
            id,
            name: name.into(),
            owner: owner_id,
        });
        Ok(())
    }

    fn drop_schema(&mut self, name: &str, if_exists: bool) -> R {
        let db = self.cur_db()?;
        let Some(s) = db.schema(name) else {
            if if_exists {
                return Ok(());
            }
            return Err(e(15151, &["drop", "schema", name]));
        };
        if s.id <= 4 {
            return Err(e(15150, &["drop", "schema", &s.name.clone()]));
        }
        let owner_ok = self.user_in(db) == Some(s.owner);
        if !(owner_ok || self.db_perm(db, "ALSM") || self.db_perm(db, "CL")) {
            return Err(e(15151, &["drop", "schema", name]));
        }
        let sid = s.id;
        let db = self.cur_db_mut()?;
        db.schemas.retain(|x| x.id != sid);
        db.perms.retain(|p| !(p.class == 3 && p.major == sid));
        Ok(())
    }

    fn alter_authorization(&mut self, class: &str, name: &str, to: &str) -> R {
        match class {
            "SCHEMA" => {
                let db = self.cur_db()?;
                let Some(s) = db.schema(name) else {
                    return Err(e(15151, &["find", "schema", name]));
                };
                if s.id <= 4 {
                    return Err(e(15150, &["alter", "schema", &s.name.clone()]));
                }
                if to == "SCHEMA OWNER" {
                    return Err(Fail::from(SqlError::syntax("SCHEMA")));
                }
                let Some(p) = db.principal(to) else {
                    return Err(e(15151, &["find", "principal", to]));
                };
                if !(self.db_perm(db, "CL") || self.db_perm(db, "ALSM")) {
                    return Err(e(15151, &["find", "schema", name]));
                }
                let (sid, pid) = (s.id, p.id);
                let db = self.cur_db_mut()?;
                if let Some(s) = db.schemas.iter_mut().find(|x| x.id == sid)
                    && s.owner != pid
                {
                    s.owner = pid;
                    // A real owner change drops every permission granted on the schema [P].
                    db.perms.retain(|p| !(p.class == 3 && p.major == sid));
                }
                Ok(())
            }
            "DATABASE" => {
                let Some(db) = self.cat.db(name) else {
                    return Err(e(15151, &["find", "database", name]));
                };
                if matches!(db.id, 1..=3) {
                    return Err(e(15109, &[]));
                }
                let Some(login) = self.cat.login(to).filter(|p| p.kind != 'R') else {
                    return Err(e(15151, &["find", "login", to]));
                };
                if !(self.sysadmin() || db.owner_sid == self.login_sid()) {
                    return Err(e(15151, &["find", "database", name]));
                }
                if db.user_for_sid(&login.sid).is_some_and(|u| u.id != 1) {
                    return Err(e(15110, &[]));
                }
                let (id, sid) = (db.id, login.sid.clone());
                if let Some(db) = self.cat.db_mut(id) {
                    db.owner_sid = sid.clone();
                    if let Some(dbo) = db.principals.iter_mut().find(|p| p.id == 1) {
                        dbo.sid = Some(sid);
                    }
                }
                Ok(())
            }
            other => Err(Fail::from(SqlError::unsupported(&format!(
                "ALTER AUTHORIZATION ON {other}"
            )))),
        }
    }

    fn create_role(&mut self, name: &str, owner: Option<&str>, server: bool) -> R {
        if server {
            self.require_server("ALLG")?;
            if self.cat.login(name).is_some() {
                return Err(e(15025, &[name]));
            }
            let owner_id = match owner {
                Some(o) => self
                    .cat
                    .login(o)
                    .map(|p| p.id)
                    .ok_or_else(|| e(15151, &["find", "login", o]))?,
                None => self.sess.login_id,
            };
            let id = self.cat.next_login_id();
            let sid = self.cat.new_sid();
            let now = self.cat.now();
            self.cat.server_principals.push(ServerPrincipal {
                id,
                name: name.into(),
                sid,
                kind: 'R',
                disabled: false,
                created: now,
                modified: now,
                default_db: None,
                default_lang: None,
                fixed_role: false,
                owner: Some(owner_id),
                sql: None,
            });
            return Ok(());
        }
        let db = self.cur_db()?;
        if !(self.db_perm(db, "CRRL") || self.db_perm(db, "ALRL")) {
            return Err(e(15247, &[]));
        }
        if db.principal(name).is_some() {
            return Err(e(15023, &[name]));
        }
        let owner_id = match owner {
            Some(o) => db
                .principal(o)
                .map(|p| p.id)
                .ok_or_else(|| e(15151, &["find", "user", o]))?,
            None => 1,
        };
        let id = db.next_principal_id();
        let mut sid = vec![1, 5, 0, 0, 0, 0, 0, 9, 4, 0, 0, 0];
        sid.extend(self.cat.new_sid());
        let now = self.cat.now();
        self.cur_db_mut()?.principals.push(DbPrincipal {
            id,
            name: name.into(),
            kind: 'R',
            default_schema: None,
            sid: Some(sid),
            auth_type: 0,
            owner: Some(owner_id),
            fixed_role: false,
            created: now,
            password_hash: None,
        });
        Ok(())
    }

    fn alter_role(&mut self, role: &str, add: bool, member: &str) -> R {
        let db = self.cur_db()?;
        let Some(r) = db.principal(role).filter(|p| p.kind == 'R') else {
            return Err(e(15151, &["alter", "role", role]));
        };
        if r.id == 0 {
            return Err(e(15081, &[]));
        }
        let uid = self.user_in(db);
        let allowed = if r.fixed_role {
            uid.is_some_and(|u| u == 1 || db.roles_of(u).contains(&16384))
        } else {
            self.db_perm(db, "ALRL") || uid.is_some_and(|u| r.owner == Some(u))
        };
        if !allowed {
            return Err(e(15151, &["alter", "role", role]));
        }
        let Some(m) = db.principal(member) else {
            return Err(e(15151, &[if add { "add" } else { "drop" }, "principal", member]));
        };
        if m.id == 1 {
            return Err(e(15405, &["dbo"]));
        }
        if m.id == r.id {
            return Err(e(15413, &[]));
        }
        let (rid, mid) = (r.id, m.id);
        let db = self.cur_db_mut()?;
        let exists = db.role_members.contains(&(rid, mid));
        if add && !exists {
            db.role_members.push((rid, mid));
        } else if !add {
            db.role_members.retain(|x| *x != (rid, mid));
        }
        Ok(())
    }

    /// `ALTER [SERVER] ROLE r WITH NAME = n`. Fixed roles cannot be renamed (15150 [U]).
    fn rename_role(&mut self, role: &str, server: bool, new: &str) -> R {
        if server {
            let Some(r) = self.cat.login(role).filter(|p| p.kind == 'R') else {
                return Err(e(15151, &["alter", "server role", role]));
            };
            if r.fixed_role || r.id == 2 {
                return Err(e(15150, &["alter", "server role", &r.name.clone()]));
            }
            if !(self.server_perm("ALLG") || r.owner == Some(self.sess.login_id)) {
                return Err(e(15151, &["alter", "server role", role]));
            }
            let rid = r.id;
            if self.cat.login(new).is_some_and(|p| p.id != rid) {
                return Err(e(15025, &[new]));
            }
            if let Some(p) = self.cat.server_principals.iter_mut().find(|p| p.id == rid) {
                p.name = new.to_string();
            }
            return Ok(());
        }
        let db = self.cur_db()?;
        let Some(r) = db.principal(role).filter(|p| p.kind == 'R') else {
            return Err(e(15151, &["alter", "role", role]));
        };
        if r.fixed_role || r.id == 0 {
            return Err(e(15150, &["alter", "role", &r.name.clone()]));
        }
        let uid = self.user_in(db);
        if !(self.db_perm(db, "ALRL") || uid.is_some_and(|u| r.owner == Some(u))) {
            return Err(e(15151, &["alter", "role", role]));
        }
        let rid = r.id;
        if db.principal(new).is_some_and(|p| p.id != rid) {
            return Err(Fail::from(SqlError::new(15023, &[new]).with_state(10)));
        }
        if let Some(p) = self.cur_db_mut()?.principals.iter_mut().find(|p| p.id == rid) {
            p.name = new.to_string();
        }
        Ok(())
    }

    fn alter_server_role(&mut self, role: &str, add: bool, member: &str) -> R {
        let Some(r) = self.cat.login(role).filter(|p| p.kind == 'R') else {
            return Err(e(15151, &["alter", "server role", role]));
        };
        if r.id == 2 {
            return Err(e(15081, &[]));
        }
        let mine = self.cat.server_roles_of(self.sess.login_id);
        let allowed = self.sysadmin()
            || (r.id != 3 && r.fixed_role && mine.contains(&r.id))
            || (!r.fixed_role && (self.server_perm("ALLG") || r.owner == Some(self.sess.login_id)));
        if !allowed {
            return Err(e(15151, &["alter", "server role", role]));
        }
        let Some(m) = self.cat.login(member) else {
            return Err(e(
                15151,
                &[if add { "add" } else { "drop" }, "server principal", member],
            ));
        };
        if m.id == r.id {
            return Err(e(15413, &[]));
        }
        let pair = (r.id, m.id);
        let exists = self.cat.server_role_members.contains(&pair);
        if add && !exists {
            self.cat.server_role_members.push(pair);
        } else if !add {
            self.cat.server_role_members.retain(|x| *x != pair);
        }
        Ok(())
    }

    fn drop_role(&mut self, name: &str, if_exists: bool, server: bool) -> R {
        if server {
            let Some(r) = self.cat.login(name).filter(|p| p.kind == 'R') else {
                if if_exists {
                    return Ok(());
                }
                return Err(e(15151, &["drop", "server role", name]));
            };
            if r.fixed_role || r.id == 2 {
                return Err(e(15150, &["drop", "server role", &r.name.clone()]));
            }
            if !self.server_perm("ALLG") {
                return Err(e(15151, &["drop", "server role", name]));
            }
            let rid = r.id;
            if self.cat.server_role_members.iter().any(|(x, _)| *x == rid) {
                return Err(e(15144, &[]));
            }
            self.cat.server_principals.retain(|p| p.id != rid);
            self.cat.server_perms.retain(|p| p.grantee != rid);
            return Ok(());
        }
        let db = self.cur_db()?;
        let Some(r) = db.principal(name).filter(|p| p.kind == 'R') else {
            if if_exists {
                return Ok(());
            }
            return Err(e(15151, &["drop", "role", name]));
        };
        if r.fixed_role || r.id == 0 {
            return Err(e(15150, &["drop", "role", &r.name.clone()]));
        }
        if !self.db_perm(db, "ALRL") {
            return Err(e(15151, &["drop", "role", name]));
        }
        let rid = r.id;
        if db.role_members.iter().any(|(x, _)| *x == rid) {
            return Err(e(15144, &[]));
        }
        if db.schemas.iter().any(|s| s.owner == rid) {
            return Err(e(15138, &["schema"]));
        }
        let db = self.cur_db_mut()?;
        db.principals.retain(|p| p.id != rid);
        db.role_members.retain(|(_, m)| *m != rid);
        db.perms.retain(|p| p.grantee != rid);
        Ok(())
    }

    fn perm(&mut self, p: &PermStmt) -> R {
        let mut codes = Vec::new();
        let mut server_scope = matches!(p.on, Some(Securable::Login(_)) | Some(Securable::Server));
        for name in &p.perms {
            let name = if name == "ALL" || name == "ALL PRIVILEGES" {
                "CONTROL"
            } else {
                name.as_str()
            };
            let (code, server) = permission_code(name).ok_or_else(|| Fail::from(SqlError::syntax(name)))?;
            if p.on.is_none() && server {
                server_scope = true;
            }
            codes.push(code.to_string());
        }
        if server_scope {
            return self.server_perm_stmt(p, &codes);
        }
        let db = self.cur_db()?;
        let (class, major, owner) = match &p.on {
            None | Some(Securable::Database(_)) => (0u8, 0i32, Some(1)),
            Some(Securable::Schema(s)) => match db.schema(s) {
                Some(x) => (3, x.id, Some(x.owner)),
                None => return Err(e(15151, &["find", "schema", s])),
            },
            Some(Securable::Object(_, o)) => return Err(e(15151, &["find", "object", o])),
            Some(Securable::Principal(u)) => match db.principal(u) {
                Some(x) => (4, x.id, x.owner.or(Some(x.id))),
                None => return Err(e(15151, &["find", "user", u])),
            },
            Some(Securable::Login(_)) | Some(Securable::Server) => (0, 0, None),
        };
        let me = self.user_in(db).unwrap_or(-1);
        let mut grantees = Vec::new();
        for g in &p.principals {
            let Some(x) = db.principal(g) else {
                return Err(e(15151, &["find", "user", g]));
            };
            if matches!(x.id, 1 | 3 | 4) || x.id == me || (class != 0 && owner == Some(x.id)) {
                return Err(e(4624, &[]));
            }
            if x.fixed_role {
                return Err(e(4617, &[]));
            }
            grantees.push(x.id);
        }
        let admin = self.db_perm(db, "CL") || db.roles_of(me.max(0)).contains(&16386);
        let grantor = if me == 1 || self.sysadmin() { 1 } else { me };
        if !admin {
            let mine = db.roles_of(me);
            for c in &codes {
                let has_w = db.perms.iter().any(|x| {
                    x.class == class
                        && x.major == major
                        && mine.contains(&x.grantee)
                        && &x.code == c
                        && x.state == 'W'
                });
                if !has_w {
                    return Err(e(4613, &[]));
                }
            }
        }
        let db = self.cur_db_mut()?;
        apply_perms(&mut db.perms, p, class, major, &grantees, &codes, grantor)
    }

    fn server_perm_stmt(&mut self, p: &PermStmt, codes: &[String]) -> R {
        if self.sess.db_id != 1 {
            return Err(e(4621, &[]));
        }
        let (class, major) = match &p.on {
            Some(Securable::Login(l)) => match self.cat.login(l) {
                Some(x) => (101u8, x.id),
                None => return Err(e(15151, &["find", "login", l])),
            },
            _ => (100, 0),
        };
        let mut grantees = Vec::new();
        for g in &p.principals {
            let Some(x) = self.cat.login(g) else {
                return Err(e(15151, &["find", "login", g]));
            };
            if x.id == 1 || x.id == self.sess.login_id {
                return Err(e(4624, &[]));
            }
            if x.fixed_role {
                return Err(e(4617, &[]));
            }
            grantees.push(x.id);
        }
        if !self.server_perm("CL") {
            let mine = self.cat.server_roles_of(self.sess.login_id);
            for c in codes {
                let has_w = self.cat.server_perms.iter().any(|x| {
                    x.class == class
                        && x.major == major
                        && mine.contains(&x.grantee)
                        && &x.code == c
                        && x.state == 'W'
                });
                if !has_w {
                    return Err(e(4613, &[]));
                }
            }
        }
        let grantor = self.sess.login_id;
        apply_perms(
            &mut self.cat.server_perms,
            p,
            class,
            major,
            &grantees,
            codes,
            grantor,
        )
    }
}

/// GRANT/DENY/REVOKE on one permission table (B6): one row per (class, major, grantee, code);
/// GRANT and DENY overwrite each other; REVOKE deletes; W re-granted to others needs CASCADE.
fn apply_perms(
    rows: &mut Vec<Perm>,
    p: &PermStmt,
    class: u8,
    major: i32,
    grantees: &[i32],
    codes: &[String],
    grantor: i32,
) -> R {
    for &g in grantees {
        for c in codes {
            let same = |x: &Perm| {
                x.class == class && x.major == major && x.minor == 0 && x.grantee == g && &x.code == c
            };
            let regranted = rows.iter().any(|x| {
                x.class == class && x.major == major && x.grantor == g && x.grantee != g && &x.code == c
            });
            let cur = rows.iter().find(|x| same(x)).map(|x| x.state);
            let touches_w = cur == Some('W');
            if (p.verb != PermVerb::Grant) && touches_w && regranted && !p.cascade {
                return Err(e(4611, &[]));
            }
            if p.verb != PermVerb::Grant && touches_w && p.cascade {
                rows.retain(|x| {
                    !(x.class == class
                        && x.major == major
                        && x.grantor == g
                        && x.grantee != g
                        && &x.code == c)
                });
            }
            match p.verb {
                PermVerb::Grant | PermVerb::Deny => {
                    let state = match p.verb {
                        PermVerb::Deny => 'D',
                        _ if p.with_grant => 'W',
                        _ => 'G',
                    };
                    if let Some(x) = rows.iter_mut().find(|x| same(x)) {
                        x.state = state;
                        x.grantor = grantor;
                    } else {
                        rows.push(Perm {
                            class,
                            major,
                            minor: 0,
                            grantee: g,
                            grantor,
                            code: c.clone(),
                            state,
                        });
                    }
                }
                PermVerb::Revoke => {
                    if p.grant_option_for {
                        if let Some(x) = rows.iter_mut().find(|x| same(x))
                            && x.state == 'W'
                        {
                            x.state = 'G';
                        }
                    } else {
                        rows.retain(|x| !same(x));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Linux password policy (B2): length ≥ 8, three of four classes, not containing the name.
fn check_policy(name: &str, pw: &str) -> R {
    if pw.chars().count() < 8 {
        return Err(e(33062, &[]));
    }
    let classes = [
        pw.chars().any(|c| c.is_uppercase()),
        pw.chars().any(|c| c.is_lowercase()),
        pw.chars().any(|c| c.is_ascii_digit()),
        pw.chars().any(|c| !c.is_alphanumeric()),
    ];
    let contains_name = !name.is_empty() && pw.to_lowercase().contains(&name.to_lowercase());
    if classes.iter().filter(|b| **b).count() < 3 || contains_name || pw.chars().count() > 128 {
        return Err(e(33064, &[]));
    }
    Ok(())
}

fn valid_collation(c: &str) -> bool {
    let u = c.to_ascii_uppercase();
    (u.starts_with("SQL_") || u.starts_with("LATIN1_GENERAL") || u.contains("_100_") || u.contains("_140_"))
        && (u.contains("_CI") || u.contains("_CS") || u.ends_with("_BIN") || u.ends_with("_BIN2"))
}

/// GUID text → SQL Server's mixed-endian 16 bytes.
pub fn parse_guid(s: &str) -> Option<Vec<u8>> {
    let hex: String = s
        .chars()
        .filter(|c| *c != '-' && *c != '{' && *c != '}')
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let mut out = vec![b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]];
    out.extend_from_slice(&b[8..]);
    Some(out)
}

fn parse_delay(s: &str) -> Option<u64> {
    let mut parts = s.split(':');
    let h: u64 = parts.next()?.trim().parse().ok()?;
    let m: u64 = parts.next().unwrap_or("0").trim().parse().ok()?;
    let sec: f64 = parts.next().unwrap_or("0").trim().parse().ok()?;
    Some(h * 3_600_000 + m * 60_000 + (sec * 1000.0) as u64)
}

fn decl_text(decls: &[(String, TypeName, bool)]) -> String {
    decls
        .iter()
        .map(|(n, t, _)| match t.len {
            Some(-1) => format!("{n} {}(max)", t.name),
            Some(l) => format!("{n} {}({l})", t.name),
            None => format!("{n} {}", t.name),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn kind_name(k: &StmtKind) -> &'static str {
    match k {
        StmtKind::Select(_) => "SELECT",
        StmtKind::Use(_) => "USE",
        StmtKind::SetOption(..) | StmtKind::SetVar(..) => "SET",
        StmtKind::Declare(_) => "DECLARE",
        StmtKind::If(..) => "IF",
        StmtKind::Block(_) => "BLOCK",
        StmtKind::TryCatch(..) => "TRY",
        StmtKind::ExecDynamic(_) | StmtKind::ExecProc(..) => "EXEC",
        StmtKind::BeginTran | StmtKind::Commit | StmtKind::Rollback | StmtKind::SaveTran => "TRANSACTION",
        StmtKind::Kill(_) => "KILL",
        StmtKind::Print(_) | StmtKind::Throw(_) | StmtKind::Raiserror(..) => "MESSAGE",
        StmtKind::WaitFor(_) => "WAITFOR",
        StmtKind::Reconfigure => "RECONFIGURE",
        StmtKind::CreateDatabase { .. } => "CREATE DATABASE",
        StmtKind::AlterDatabase { .. } => "ALTER DATABASE",
        StmtKind::DropDatabase { .. } => "DROP DATABASE",
        StmtKind::CreateLogin { .. } => "CREATE LOGIN",
        StmtKind::AlterLogin { .. } => "ALTER LOGIN",
        StmtKind::DropLogin(_) => "DROP LOGIN",
        StmtKind::CreateUser { .. } => "CREATE USER",
        StmtKind::AlterUser { .. } => "ALTER USER",
        StmtKind::DropUser { .. } => "DROP USER",
        StmtKind::CreateSchema { .. } => "CREATE SCHEMA",
        StmtKind::DropSchema { .. } => "DROP SCHEMA",
        StmtKind::AlterAuthorization { .. } => "ALTER AUTHORIZATION",
        StmtKind::CreateRole { .. } => "CREATE ROLE",
        StmtKind::AlterRole { .. } => "ALTER ROLE",
        StmtKind::DropRole { .. } => "DROP ROLE",
        StmtKind::Perm(p) => match p.verb {
            PermVerb::Grant => "GRANT",
            PermVerb::Deny => "DENY",
            PermVerb::Revoke => "REVOKE",
        },
    }
}

/// Maps a declared type to a column type.
pub fn type_of(t: &TypeName) -> SqlType {
    let len = t.len.unwrap_or(1);
    match t.name.as_str() {
        "int" => SqlType::Int,
        "bigint" => SqlType::BigInt,
        "smallint" => SqlType::SmallInt,
        "tinyint" => SqlType::TinyInt,
        "bit" => SqlType::Bit,
        "sysname" => SqlType::NVarChar(128),
        "nvarchar" | "nchar" if len == -1 => SqlType::NVarCharMax,
        "nvarchar" | "nchar" => SqlType::NVarChar(len.clamp(1, 4000) as u16),
        "varchar" if len == -1 => SqlType::VarChar(8000),
        "varchar" => SqlType::VarChar(len.clamp(1, 8000) as u16),
        "char" => SqlType::Char(len.clamp(1, 8000) as u16),
        "varbinary" | "binary" if len == -1 => SqlType::VarBinary(8000),
        "varbinary" | "binary" => SqlType::VarBinary(len.clamp(1, 8000) as u16),
        "datetime" | "datetime2" | "smalldatetime" | "date" => SqlType::DateTime,
        "sql_variant" => SqlType::Variant,
        _ => SqlType::NVarChar(4000),
    }
}

/// Converts a value to a type (CAST semantics for the types the emulator has).
pub fn cast_value(v: Value, t: SqlType) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    match t {
        SqlType::Int | SqlType::BigInt | SqlType::SmallInt | SqlType::TinyInt => {
            v.as_int().map(Value::Int).unwrap_or(Value::Null)
        }
        SqlType::Bit => v.as_int().map(|i| Value::Bit(i != 0)).unwrap_or(Value::Null),
        SqlType::NVarChar(n) | SqlType::VarChar(n) | SqlType::Char(n) => {
            let s = v.as_text().unwrap_or_default();
            Value::Str(s.chars().take(n as usize).collect())
        }
        SqlType::NVarCharMax => Value::Str(v.as_text().unwrap_or_default()),
        SqlType::VarBinary(_) => match v.base() {
            Value::Bin(b) => Value::Bin(b.clone()),
            other => Value::Bin(crate::tds::utf16(&other.as_text().unwrap_or_default())),
        },
        SqlType::DateTime => v.base().clone(),
        SqlType::Variant => Value::Variant(Box::new(v)),
    }
}

mod query;
