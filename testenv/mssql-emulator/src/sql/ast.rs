//! Syntax tree for the T-SQL subset (spec C1.5).

/// A scalar expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// NULL.
    Null,
    /// Integer literal.
    Int(i64),
    /// Unicode string literal (`N'…'`).
    Str(String),
    /// Non-Unicode string literal (`'…'`, already reduced to code page 1252): varchar.
    VarStr(String),
    /// Binary literal `0x…`.
    Bin(Vec<u8>),
    /// `@v`.
    Var(String),
    /// `@@NAME`.
    Global(String),
    /// `[qualifier.]column`.
    Column(Option<String>, String),
    /// Function call; `COUNT(*)` has the single argument `Star`.
    Call(String, Vec<Expr>),
    /// `*` inside COUNT(*).
    Star,
    /// `CAST(e AS type)` / `CONVERT(type, e)`: the type as a lower-case name and optional length.
    Cast(Box<Expr>, TypeName),
    /// Binary operator (`+ - * / = <> < > <= >= AND OR LIKE`).
    Bin2(Box<Expr>, &'static str, Box<Expr>),
    /// `NOT e` / unary minus (`-`).
    Unary(&'static str, Box<Expr>),
    /// `e [NOT] IN (list)`.
    InList(Box<Expr>, Vec<Expr>, bool),
    /// `e [NOT] IN (subquery)`.
    InSelect(Box<Expr>, Box<Select>, bool),
    /// `e IS [NOT] NULL`; the flag is true for IS NOT NULL.
    IsNull(Box<Expr>, bool),
    /// `EXISTS (subquery)`.
    Exists(Box<Select>),
    /// `(subquery)` used as a scalar.
    Subquery(Box<Select>),
    /// `CASE [operand] WHEN … THEN … [ELSE …] END`.
    Case(Option<Box<Expr>>, Vec<(Expr, Expr)>, Option<Box<Expr>>),
}

/// A type as written in DECLARE, CAST and sp_executesql parameter lists.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeName {
    /// Lower-case base name (`nvarchar`, `int`, `sysname`, …).
    pub name: String,
    /// Length argument; `None` when absent, `Some(-1)` for `max`.
    pub len: Option<i64>,
}

/// One item of a SELECT list.
#[derive(Debug, Clone, PartialEq)]
pub enum SelectItem {
    /// `*` or `t.*`.
    Star(Option<String>),
    /// `expr [AS alias]`.
    Expr(Expr, Option<String>),
    /// `@v = expr`.
    Assign(String, Expr),
}

/// A table source in FROM.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRef {
    /// Database part of a 3-part name.
    pub database: Option<String>,
    /// Schema part (`sys`, `INFORMATION_SCHEMA`, `dbo`).
    pub schema: Option<String>,
    /// Object name.
    pub name: String,
    /// Arguments for a table-valued function (`fn_my_permissions(…)`).
    pub args: Option<Vec<Expr>>,
    /// Alias.
    pub alias: Option<String>,
}

/// A JOIN step.
#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    /// True for LEFT [OUTER] JOIN.
    pub left: bool,
    /// The joined source.
    pub table: TableRef,
    /// ON condition (`None` for CROSS JOIN).
    pub on: Option<Expr>,
}

/// A SELECT statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    /// DISTINCT.
    pub distinct: bool,
    /// TOP n.
    pub top: Option<Expr>,
    /// Select list.
    pub items: Vec<SelectItem>,
    /// FROM source.
    pub from: Option<TableRef>,
    /// JOINs after the first source.
    pub joins: Vec<Join>,
    /// WHERE.
    pub filter: Option<Expr>,
    /// GROUP BY expressions.
    pub group_by: Vec<Expr>,
    /// HAVING.
    pub having: Option<Expr>,
    /// ORDER BY (expression, descending); with UNION it orders the combined result.
    pub order: Vec<(Expr, bool)>,
    /// `UNION [ALL] SELECT …` parts (the flag is true for ALL).
    pub unions: Vec<(bool, Select)>,
}

/// A permission securable (`ON …`).
#[derive(Debug, Clone, PartialEq)]
pub enum Securable {
    /// `DATABASE::d`.
    Database(String),
    /// `SCHEMA::s`.
    Schema(String),
    /// `OBJECT::[s.]o` or a bare `[s.]o`.
    Object(Option<String>, String),
    /// `USER::u` / `ROLE::r` / `APPLICATION ROLE::r`.
    Principal(String),
    /// `LOGIN::l` / `SERVER ROLE::r`.
    Login(String),
    /// `SERVER::x`.
    Server,
}

/// GRANT, DENY or REVOKE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermVerb {
    /// GRANT.
    Grant,
    /// DENY.
    Deny,
    /// REVOKE.
    Revoke,
}

/// A DCL statement.
#[derive(Debug, Clone, PartialEq)]
pub struct PermStmt {
    /// The verb.
    pub verb: PermVerb,
    /// Upper-case permission names (`SELECT`, `CREATE TABLE`, `VIEW SERVER STATE`).
    pub perms: Vec<String>,
    /// Securable, if any.
    pub on: Option<Securable>,
    /// Grantees.
    pub principals: Vec<String>,
    /// WITH GRANT OPTION.
    pub with_grant: bool,
    /// CASCADE.
    pub cascade: bool,
    /// REVOKE GRANT OPTION FOR.
    pub grant_option_for: bool,
}

/// `name = value` options of CREATE/ALTER LOGIN/USER.
#[derive(Debug, Clone, PartialEq)]
pub enum OptVal {
    /// A string or identifier value.
    Text(String),
    /// A binary literal.
    Bin(Vec<u8>),
    /// ON / OFF.
    Flag(bool),
    /// Integer.
    Int(i64),
}

/// Password clause of CREATE/ALTER LOGIN.
#[derive(Debug, Clone, PartialEq)]
pub struct PasswordSpec {
    /// The literal: text, or the bytes of a HASHED value.
    pub value: OptVal,
    /// HASHED.
    pub hashed: bool,
    /// MUST_CHANGE.
    pub must_change: bool,
}

/// Source of a CREATE USER.
#[derive(Debug, Clone, PartialEq)]
pub enum UserSource {
    /// No clause: the login of the same name.
    Implicit,
    /// FOR/FROM LOGIN l.
    Login(String),
    /// WITHOUT LOGIN.
    WithoutLogin,
    /// WITH PASSWORD = '…' (contained).
    Password(String),
    /// FROM EXTERNAL PROVIDER.
    External,
}

/// A statement with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    /// 1-based line in the batch.
    pub line: u32,
    /// The statement.
    pub kind: StmtKind,
}

/// Statement kinds.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum StmtKind {
    Select(Box<Select>),
    Use(String),
    SetOption(String, String),
    SetVar(String, Expr),
    Declare(Vec<(String, TypeName, Option<Expr>)>),
    If(Expr, Box<Stmt>, Option<Box<Stmt>>),
    Block(Vec<Stmt>),
    /// `BEGIN TRY … END TRY BEGIN CATCH … END CATCH`.
    TryCatch(Vec<Stmt>, Vec<Stmt>),
    ExecDynamic(Expr),
    /// `EXEC [db.][schema.]proc args`: database qualifier, procedure name, arguments.
    ExecProc(Option<String>, String, Vec<(Option<String>, Expr)>),
    BeginTran,
    Commit,
    Rollback,
    SaveTran,
    Kill(i64),
    Print(Expr),
    Throw(Option<(Expr, Expr, Expr)>),
    Raiserror(Expr, Expr, Expr, Vec<Expr>),
    WaitFor(Expr),
    Reconfigure,
    CreateDatabase {
        name: String,
        containment: Option<String>,
        collate: Option<String>,
    },
    AlterDatabase {
        name: Option<String>,
        action: AlterDbAction,
    },
    DropDatabase {
        if_exists: bool,
        names: Vec<String>,
    },
    CreateLogin {
        name: String,
        password: Option<PasswordSpec>,
        external: bool,
        options: Vec<(String, OptVal)>,
    },
    AlterLogin {
        name: String,
        enable: Option<bool>,
        password: Option<PasswordSpec>,
        options: Vec<(String, OptVal)>,
    },
    DropLogin(String),
    CreateUser {
        name: String,
        source: UserSource,
        options: Vec<(String, OptVal)>,
    },
    AlterUser {
        name: String,
        options: Vec<(String, OptVal)>,
    },
    DropUser {
        if_exists: bool,
        name: String,
    },
    CreateSchema {
        name: String,
        owner: Option<String>,
    },
    DropSchema {
        if_exists: bool,
        name: String,
    },
    AlterAuthorization {
        class: String,
        name: String,
        to: String,
    },
    CreateRole {
        name: String,
        owner: Option<String>,
        server: bool,
    },
    /// `ALTER [SERVER] ROLE r ADD|DROP MEMBER m` (add = Some) or `… WITH NAME = m` (add = None).
    AlterRole {
        name: String,
        server: bool,
        add: Option<bool>,
        member: String,
    },
    DropRole {
        if_exists: bool,
        name: String,
        server: bool,
    },
    Perm(PermStmt),
}

/// ALTER DATABASE actions.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum AlterDbAction {
    Recovery(String),
    Compat(i64),
    UserAccess(String, bool),
    Containment(String),
    Collate(String),
    ModifyName(String),
    SetFlag(String, bool),
}
