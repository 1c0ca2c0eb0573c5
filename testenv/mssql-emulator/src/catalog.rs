//! The in-memory server catalog (spec Part B): server principals, role memberships,
//! permissions, databases and their principals, schemas and permissions. Ids and seeds follow
//! B4, B5 and B7. The whole catalog is `Clone` so a transaction can snapshot it at BEGIN and
//! restore it on ROLLBACK (B0.3), and `Serialize` for the admin JSON dump.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

/// A server principal: login or server role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerPrincipal {
    /// principal_id.
    pub id: i32,
    /// name.
    pub name: String,
    /// sid.
    pub sid: Vec<u8>,
    /// type: S, E, X, R, C.
    pub kind: char,
    /// is_disabled.
    pub disabled: bool,
    /// create_date (ms since epoch).
    pub created: i64,
    /// modify_date.
    pub modified: i64,
    /// default_database_name (logins).
    pub default_db: Option<String>,
    /// default_language_name (logins).
    pub default_lang: Option<String>,
    /// is_fixed_role.
    pub fixed_role: bool,
    /// owning_principal_id (roles).
    pub owner: Option<i32>,
    /// SQL-login details.
    pub sql: Option<SqlLogin>,
}

/// sys.sql_logins extras.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlLogin {
    /// `0x0200 ‖ salt ‖ SHA-512(UTF-16LE(pw) ‖ salt)`.
    #[serde(serialize_with = "hex_bytes", deserialize_with = "from_hex")]
    pub hash: Vec<u8>,
    /// is_policy_checked.
    pub policy: bool,
    /// is_expiration_checked.
    pub expiration: bool,
    /// MUST_CHANGE pending.
    pub must_change: bool,
}

fn hex_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_hex(b))
}

fn from_hex<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    let h = s.trim_start_matches("0x");
    (0..h.len() / 2)
        .map(|i| {
            u8::from_str_radix(h.get(i * 2..i * 2 + 2).unwrap_or("zz"), 16).map_err(serde::de::Error::custom)
        })
        .collect()
}

/// `0x…` upper-case hex.
pub fn to_hex(b: &[u8]) -> String {
    let mut s = String::from("0x");
    for x in b {
        s.push_str(&format!("{x:02X}"));
    }
    s
}

/// A permission row (sys.server_permissions / sys.database_permissions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Perm {
    /// class.
    pub class: u8,
    /// major_id.
    pub major: i32,
    /// minor_id.
    pub minor: i32,
    /// grantee_principal_id.
    pub grantee: i32,
    /// grantor_principal_id.
    pub grantor: i32,
    /// Type code without padding (`CO`, `SL`, `CRTB`).
    pub code: String,
    /// G, W or D.
    pub state: char,
}

/// A database principal: user or role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbPrincipal {
    /// principal_id.
    pub id: i32,
    /// name.
    pub name: String,
    /// type: S, E, X, R, A.
    pub kind: char,
    /// default_schema_name.
    pub default_schema: Option<String>,
    /// sid.
    pub sid: Option<Vec<u8>>,
    /// authentication_type (0 NONE, 1 INSTANCE, 2 DATABASE, 4 EXTERNAL).
    pub auth_type: i32,
    /// owning_principal_id (roles).
    pub owner: Option<i32>,
    /// is_fixed_role.
    pub fixed_role: bool,
    /// create_date.
    pub created: i64,
    /// Contained-user password hash.
    pub password_hash: Option<Vec<u8>>,
}

/// A schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// schema_id.
    pub id: i32,
    /// name.
    pub name: String,
    /// principal_id of the owner.
    pub owner: i32,
}

/// A database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Database {
    /// database_id.
    pub id: i32,
    /// name.
    pub name: String,
    /// owner_sid.
    pub owner_sid: Vec<u8>,
    /// create_date.
    pub created: i64,
    /// compatibility_level.
    pub compat: i64,
    /// collation_name.
    pub collation: String,
    /// user_access: 0 MULTI, 1 SINGLE, 2 RESTRICTED.
    pub user_access: u8,
    /// recovery_model: 1 FULL, 2 BULK_LOGGED, 3 SIMPLE.
    pub recovery: u8,
    /// containment: 0 NONE, 1 PARTIAL.
    pub containment: u8,
    /// is_trustworthy_on.
    pub trustworthy: bool,
    /// is_read_committed_snapshot_on.
    pub rcsi: bool,
    /// snapshot_isolation_state.
    pub snapshot: bool,
    /// is_db_chaining_on.
    pub chaining: bool,
    /// Principals.
    pub principals: Vec<DbPrincipal>,
    /// Schemas.
    pub schemas: Vec<Schema>,
    /// (role, member).
    pub role_members: Vec<(i32, i32)>,
    /// Permissions.
    pub perms: Vec<Perm>,
}

impl Database {
    /// True if names in this database compare case-sensitively (a `_CS_` collation).
    pub fn case_sensitive(&self) -> bool {
        self.collation.to_ascii_uppercase().contains("_CS")
    }
    /// Name equality under this database's collation (trailing spaces ignored).
    pub fn name_eq(&self, a: &str, b: &str) -> bool {
        let (a, b) = (a.trim_end_matches(' '), b.trim_end_matches(' '));
        if self.case_sensitive() {
            a == b
        } else {
            a.to_lowercase() == b.to_lowercase()
        }
    }
    /// Finds a principal by name.
    pub fn principal(&self, name: &str) -> Option<&DbPrincipal> {
        self.principals.iter().find(|p| self.name_eq(&p.name, name))
    }
    /// Finds a principal by id.
    pub fn principal_by_id(&self, id: i32) -> Option<&DbPrincipal> {
        self.principals.iter().find(|p| p.id == id)
    }
    /// Finds a schema by name.
    pub fn schema(&self, name: &str) -> Option<&Schema> {
        self.schemas.iter().find(|s| self.name_eq(&s.name, name))
    }
    /// The user mapped to `sid`, if any.
    pub fn user_for_sid(&self, sid: &[u8]) -> Option<&DbPrincipal> {
        self.principals
            .iter()
            .find(|p| p.kind != 'R' && p.sid.as_deref() == Some(sid))
    }
    /// Lowest free principal id ≥ 5 below the fixed-role block.
    pub fn next_principal_id(&self) -> i32 {
        (5..16384)
            .find(|i| !self.principals.iter().any(|p| p.id == *i))
            .unwrap_or(16400)
    }
    /// Lowest free schema id ≥ 5.
    pub fn next_schema_id(&self) -> i32 {
        (5..16384)
            .find(|i| !self.schemas.iter().any(|s| s.id == *i))
            .unwrap_or(16400)
    }
    /// Transitive role membership of principal `member` (its own id included).
    pub fn roles_of(&self, member: i32) -> Vec<i32> {
        let mut out = vec![member, 0];
        let mut i = 0;
        while i < out.len() {
            let cur = out[i];
            for (r, m) in &self.role_members {
                if *m == cur && !out.contains(r) {
                    out.push(*r);
                }
            }
            i += 1;
        }
        out
    }
}

/// Fixed database roles (B5).
pub const FIXED_DB_ROLES: &[(&str, i32)] = &[
    ("db_owner", 16384),
    ("db_accessadmin", 16385),
    ("db_securityadmin", 16386),
    ("db_ddladmin", 16387),
    ("db_backupoperator", 16389),
    ("db_datareader", 16390),
    ("db_datawriter", 16391),
    ("db_denydatareader", 16392),
    ("db_denydatawriter", 16393),
];

/// Fixed server roles (B5); the `##MS_…##` order is [U].
pub const FIXED_SERVER_ROLES: &[(&str, i32)] = &[
    ("sysadmin", 3),
    ("securityadmin", 4),
    ("serveradmin", 5),
    ("setupadmin", 6),
    ("processadmin", 7),
    ("diskadmin", 8),
    ("dbcreator", 9),
    ("bulkadmin", 10),
    ("##MS_DatabaseConnector##", 11),
    ("##MS_LoginManager##", 12),
    ("##MS_DatabaseManager##", 13),
    ("##MS_ServerStateManager##", 14),
    ("##MS_ServerStateReader##", 15),
    ("##MS_DefinitionReader##", 16),
    ("##MS_PerformanceDefinitionReader##", 17),
    ("##MS_SecurityDefinitionReader##", 18),
    ("##MS_ServerPerformanceStateReader##", 19),
    ("##MS_ServerSecurityStateReader##", 20),
];

/// Permission type codes and names (B6). `server` marks server-scope permissions.
pub const PERMISSIONS: &[(&str, &str, bool)] = &[
    ("CO", "CONNECT", false),
    ("AL", "ALTER", false),
    ("CL", "CONTROL", false),
    ("SL", "SELECT", false),
    ("IN", "INSERT", false),
    ("UP", "UPDATE", false),
    ("DL", "DELETE", false),
    ("EX", "EXECUTE", false),
    ("RF", "REFERENCES", false),
    ("VW", "VIEW DEFINITION", false),
    ("TO", "TAKE OWNERSHIP", false),
    ("IM", "IMPERSONATE", false),
    ("CRTB", "CREATE TABLE", false),
    ("CRVW", "CREATE VIEW", false),
    ("CRPR", "CREATE PROCEDURE", false),
    ("CRFN", "CREATE FUNCTION", false),
    ("CRSM", "CREATE SCHEMA", false),
    ("CRRL", "CREATE ROLE", false),
    ("ALUS", "ALTER ANY USER", false),
    ("ALRL", "ALTER ANY ROLE", false),
    ("ALSM", "ALTER ANY SCHEMA", false),
    ("SPLN", "SHOWPLAN", false),
    ("VWDS", "VIEW DATABASE STATE", false),
    ("AUTH", "AUTHENTICATE", false),
    ("VWCK", "VIEW ANY COLUMN ENCRYPTION KEY DEFINITION", false),
    ("VWCM", "VIEW ANY COLUMN MASTER KEY DEFINITION", false),
    ("CRDB", "CREATE DATABASE", false),
    ("COSQ", "CONNECT SQL", true),
    ("VWSS", "VIEW SERVER STATE", true),
    ("ALLG", "ALTER ANY LOGIN", true),
    ("CADB", "CREATE ANY DATABASE", true),
    ("ALDB", "ALTER ANY DATABASE", true),
    ("CL", "CONTROL SERVER", true),
    ("VWDB", "VIEW ANY DATABASE", true),
    ("VWDF", "VIEW ANY DEFINITION", true),
    ("AUTH", "AUTHENTICATE SERVER", true),
    ("IM", "IMPERSONATE ANY LOGIN", true),
];

/// Looks up a permission by name: (code, is_server).
pub fn permission_code(name: &str) -> Option<(&'static str, bool)> {
    PERMISSIONS
        .iter()
        .find(|p| p.1.eq_ignore_ascii_case(name))
        .map(|p| (p.0, p.2))
}

/// The permission name for a code in a scope.
pub fn permission_name(code: &str, server: bool) -> &'static str {
    PERMISSIONS
        .iter()
        .find(|p| p.0 == code && p.2 == server)
        .or_else(|| PERMISSIONS.iter().find(|p| p.0 == code))
        .map(|p| p.1)
        .unwrap_or("UNKNOWN")
}

/// Server-wide state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Logins and server roles.
    pub server_principals: Vec<ServerPrincipal>,
    /// (role, member).
    pub server_role_members: Vec<(i32, i32)>,
    /// Server permissions.
    pub server_perms: Vec<Perm>,
    /// Databases.
    pub databases: Vec<Database>,
    /// `contained database authentication`: (configured value, value in use).
    pub contained_auth: (i64, i64),
    /// SIDs handed out so far.
    pub sid_counter: u64,
    /// PRNG state when the emulator runs deterministically (`Config::seed`); OS randomness
    /// otherwise.
    #[serde(skip)]
    pub rng: Option<u64>,
    /// Fixed clock (`Config::clock_ms`) for create/modify dates; the system clock otherwise.
    #[serde(skip)]
    pub clock: Option<i64>,
    /// The stub Entra directory `FROM EXTERNAL PROVIDER` resolves names in.
    #[serde(skip)]
    pub directory: Vec<EntraPrincipal>,
}

/// An entry of the stub Entra directory (`Config::entra_directory`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntraPrincipal {
    /// Display name as used in `CREATE LOGIN [name] FROM EXTERNAL PROVIDER`.
    pub name: String,
    /// Object id (a GUID); becomes the SID.
    pub object_id: String,
    /// True for a group (type X), false for a user or application (type E).
    pub group: bool,
}

/// Salted SHA-512 hash in SQL Server's 2012+ format.
pub fn hash_password(password: &str, salt: [u8; 4]) -> Vec<u8> {
    let mut h = Sha512::new();
    h.update(crate::tds::utf16(password));
    h.update(salt);
    let mut out = vec![0x02, 0x00];
    out.extend_from_slice(&salt);
    out.extend_from_slice(&h.finalize());
    out
}

/// Checks a password against a stored hash (0x0200 format only).
pub fn verify_password(password: &str, hash: &[u8]) -> bool {
    if hash.len() != 70 || hash[0] != 0x02 || hash[1] != 0x00 {
        return false;
    }
    let mut salt = [0u8; 4];
    salt.copy_from_slice(&hash[2..6]);
    hash_password(password, salt) == hash
}

/// Fills `buf` with random bytes from the rustls crypto provider (no extra dependency).
pub fn random_bytes(buf: &mut [u8]) {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    if provider.secure_random.fill(buf).is_err() {
        // The OS RNG failing is not something a test emulator can recover from meaningfully;
        // fall back to a time-derived value so ids stay distinct.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8;
        }
    }
}

/// splitmix64 when seeded, OS randomness otherwise.
fn fill_from(rng: &mut Option<u64>, buf: &mut [u8]) {
    match rng {
        Some(state) => {
            for chunk in buf.chunks_mut(8) {
                *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = *state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
            }
        }
        None => random_bytes(buf),
    }
}

/// Current time in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Catalog {
    /// A fresh catalog seeded per B7, with `sa`'s password.
    pub fn new(sa_password: &str) -> Catalog {
        Catalog::with_determinism(sa_password, None, None)
    }

    /// Like [`Catalog::new`], with an optional PRNG seed (SIDs, salts, NEWID) and fixed clock,
    /// so two runs produce the same catalog dump.
    pub fn with_determinism(sa_password: &str, seed: Option<u64>, clock: Option<i64>) -> Catalog {
        let now = clock.unwrap_or_else(now_ms);
        let mut rng = seed;
        let mut sp = vec![];
        let mut salt = [0u8; 4];
        fill_from(&mut rng, &mut salt);
        sp.push(ServerPrincipal {
            id: 1,
            name: "sa".into(),
            sid: vec![1],
            kind: 'S',
            disabled: false,
            created: now,
            modified: now,
            default_db: Some("master".into()),
            default_lang: Some("us_english".into()),
            fixed_role: false,
            owner: None,
            sql: Some(SqlLogin {
                hash: hash_password(sa_password, salt),
                policy: true,
                expiration: false,
                must_change: false,
            }),
        });
        sp.push(role_principal("public", 2, false, now));
        for (name, id) in FIXED_SERVER_ROLES {
            sp.push(role_principal(name, *id, true, now));
        }
        let mut c = Catalog {
            server_principals: sp,
            server_role_members: vec![(3, 1)],
            server_perms: vec![
                Perm {
                    class: 100,
                    major: 0,
                    minor: 0,
                    grantee: 1,
                    grantor: 1,
                    code: "COSQ".into(),
                    state: 'G',
                },
                Perm {
                    class: 100,
                    major: 0,
                    minor: 0,
                    grantee: 2,
                    grantor: 1,
                    code: "VWDB".into(),
                    state: 'G',
                },
            ],
            databases: vec![],
            contained_auth: (0, 0),
            sid_counter: 0,
            rng,
            clock,
            directory: Vec::new(),
        };
        for (id, name, recovery) in [
            (1, "master", 3),
            (2, "tempdb", 3),
            (3, "model", 1),
            (4, "msdb", 3),
        ] {
            let mut db = new_database(id, name, vec![1], "SQL_Latin1_General_CP1_CI_AS", now);
            db.recovery = recovery;
            if name == "master" || name == "tempdb" {
                // guest has CONNECT in master and tempdb [U].
                db.perms.push(Perm {
                    class: 0,
                    major: 0,
                    minor: 0,
                    grantee: 2,
                    grantor: 1,
                    code: "CO".into(),
                    state: 'G',
                });
            }
            c.databases.push(db);
        }
        c
    }

    /// Server-collation name equality (case-insensitive, trailing spaces ignored).
    pub fn name_eq(a: &str, b: &str) -> bool {
        a.trim_end_matches(' ').to_lowercase() == b.trim_end_matches(' ').to_lowercase()
    }
    /// Finds a server principal by name.
    pub fn login(&self, name: &str) -> Option<&ServerPrincipal> {
        self.server_principals
            .iter()
            .find(|p| Catalog::name_eq(&p.name, name))
    }
    /// Finds a server principal by id.
    pub fn login_by_id(&self, id: i32) -> Option<&ServerPrincipal> {
        self.server_principals.iter().find(|p| p.id == id)
    }
    /// Finds a server principal by SID.
    pub fn login_by_sid(&self, sid: &[u8]) -> Option<&ServerPrincipal> {
        self.server_principals.iter().find(|p| p.sid == sid)
    }
    /// Finds a database by name.
    pub fn db(&self, name: &str) -> Option<&Database> {
        self.databases.iter().find(|d| Catalog::name_eq(&d.name, name))
    }
    /// Finds a database by id.
    pub fn db_by_id(&self, id: i32) -> Option<&Database> {
        self.databases.iter().find(|d| d.id == id)
    }
    /// Mutable database by id.
    pub fn db_mut(&mut self, id: i32) -> Option<&mut Database> {
        self.databases.iter_mut().find(|d| d.id == id)
    }
    /// Next login principal id (user logins start at 256, B2).
    pub fn next_login_id(&self) -> i32 {
        self.server_principals
            .iter()
            .map(|p| p.id)
            .max()
            .unwrap_or(0)
            .max(255)
            + 1
    }
    /// Lowest free database id ≥ 5 [U reuse].
    pub fn next_db_id(&self) -> i32 {
        (5..i32::MAX)
            .find(|i| !self.databases.iter().any(|d| d.id == *i))
            .unwrap_or(5)
    }
    /// Transitive server-role membership of `member` (its own id and public included).
    pub fn server_roles_of(&self, member: i32) -> Vec<i32> {
        let mut out = vec![member, 2];
        let mut i = 0;
        while i < out.len() {
            let cur = out[i];
            for (r, m) in &self.server_role_members {
                if *m == cur && !out.contains(r) {
                    out.push(*r);
                }
            }
            i += 1;
        }
        out
    }
    /// True if the login is in sysadmin.
    pub fn is_sysadmin(&self, login: i32) -> bool {
        self.server_roles_of(login).contains(&3)
    }
    /// A fresh 16-byte SID.
    pub fn new_sid(&mut self) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        self.fill(&mut b);
        self.sid_counter += 1;
        b
    }

    /// Random bytes: seeded when the emulator is deterministic.
    pub fn fill(&mut self, buf: &mut [u8]) {
        fill_from(&mut self.rng, buf);
    }

    /// The catalog's clock.
    pub fn now(&self) -> i64 {
        self.clock.unwrap_or_else(now_ms)
    }
}

fn role_principal(name: &str, id: i32, fixed: bool, now: i64) -> ServerPrincipal {
    ServerPrincipal {
        id,
        name: name.into(),
        sid: if id == 2 { vec![2] } else { vec![id as u8] },
        kind: 'R',
        disabled: false,
        created: now,
        modified: now,
        default_db: None,
        default_lang: None,
        fixed_role: fixed,
        owner: Some(1),
        sql: None,
    }
}

/// A new database seeded per B7: dbo (owner's sid), guest, INFORMATION_SCHEMA, sys, public and
/// the fixed roles, their schemas, (db_owner, dbo), and public's VWCK/VWCM grants [U].
pub fn new_database(id: i32, name: &str, owner_sid: Vec<u8>, collation: &str, now: i64) -> Database {
    let user = |id: i32, name: &str, sid: Option<Vec<u8>>, schema: Option<&str>, auth: i32| DbPrincipal {
        id,
        name: name.into(),
        kind: 'S',
        default_schema: schema.map(Into::into),
        sid,
        auth_type: auth,
        owner: None,
        fixed_role: false,
        created: now,
        password_hash: None,
    };
    let mut principals = vec![
        user(1, "dbo", Some(owner_sid.clone()), Some("dbo"), 1),
        user(2, "guest", Some(vec![0]), Some("guest"), 0),
        user(3, "INFORMATION_SCHEMA", None, None, 0),
        user(4, "sys", None, None, 0),
    ];
    let role = |id: i32, name: &str, fixed: bool| DbPrincipal {
        id,
        name: name.into(),
        kind: 'R',
        default_schema: None,
        sid: Some(if id == 0 {
            vec![1, 5, 0, 0, 0, 0, 0, 9, 4, 0, 0, 0]
        } else {
            vec![]
        }),
        auth_type: 0,
        owner: Some(1),
        fixed_role: fixed,
        created: now,
        password_hash: None,
    };
    principals.push(role(0, "public", false));
    let mut schemas = vec![
        Schema {
            id: 1,
            name: "dbo".into(),
            owner: 1,
        },
        Schema {
            id: 2,
            name: "guest".into(),
            owner: 2,
        },
        Schema {
            id: 3,
            name: "INFORMATION_SCHEMA".into(),
            owner: 3,
        },
        Schema {
            id: 4,
            name: "sys".into(),
            owner: 4,
        },
    ];
    for (n, rid) in FIXED_DB_ROLES {
        principals.push(role(*rid, n, true));
        schemas.push(Schema {
            id: *rid,
            name: (*n).into(),
            owner: *rid,
        });
    }
    let perms = vec![
        Perm {
            class: 0,
            major: 0,
            minor: 0,
            grantee: 1,
            grantor: 1,
            code: "CO".into(),
            state: 'G',
        },
        Perm {
            class: 0,
            major: 0,
            minor: 0,
            grantee: 0,
            grantor: 1,
            code: "VWCK".into(),
            state: 'G',
        },
        Perm {
            class: 0,
            major: 0,
            minor: 0,
            grantee: 0,
            grantor: 1,
            code: "VWCM".into(),
            state: 'G',
        },
    ];
    Database {
        id,
        name: name.into(),
        owner_sid,
        created: now,
        compat: 160,
        collation: collation.into(),
        user_access: 0,
        recovery: 1,
        containment: 0,
        trustworthy: false,
        rcsi: false,
        snapshot: false,
        chaining: false,
        principals,
        schemas,
        role_members: vec![(16384, 1)],
        perms,
    }
}

/// Undoes one change: `before` and `after` are the catalog around a statement of a transaction
/// being rolled back; `cur` may also hold changes other sessions made since. Entities the
/// statement added are removed, entities it removed come back, entities it changed get their
/// old value — everything else in `cur` is left alone.
pub fn undo(cur: &mut Catalog, before: &Catalog, after: &Catalog) {
    undo_vec(
        &mut cur.server_principals,
        &before.server_principals,
        &after.server_principals,
        |p| p.id,
    );
    undo_vec(
        &mut cur.server_role_members,
        &before.server_role_members,
        &after.server_role_members,
        |x| *x,
    );
    undo_vec(
        &mut cur.server_perms,
        &before.server_perms,
        &after.server_perms,
        perm_key,
    );
    if before.contained_auth != after.contained_auth {
        cur.contained_auth = before.contained_auth;
    }
    for a in &after.databases {
        match before.databases.iter().find(|b| b.id == a.id) {
            None => cur.databases.retain(|d| d.id != a.id),
            Some(b) => {
                if let Some(c) = cur.databases.iter_mut().find(|d| d.id == a.id) {
                    undo_database(c, b, a);
                }
            }
        }
    }
    for b in &before.databases {
        if !after.databases.iter().any(|a| a.id == b.id) && !cur.databases.iter().any(|c| c.id == b.id) {
            cur.databases.push(b.clone());
            cur.databases.sort_by_key(|d| d.id);
        }
    }
}

fn perm_key(p: &Perm) -> (u8, i32, i32, i32, String) {
    (p.class, p.major, p.minor, p.grantee, p.code.clone())
}

fn undo_database(cur: &mut Database, before: &Database, after: &Database) {
    macro_rules! field {
        ($($f:ident),*) => {$(
            if before.$f != after.$f {
                cur.$f = before.$f.clone();
            }
        )*};
    }
    field!(
        name,
        owner_sid,
        compat,
        collation,
        user_access,
        recovery,
        containment,
        trustworthy,
        rcsi,
        snapshot,
        chaining
    );
    undo_vec(&mut cur.principals, &before.principals, &after.principals, |p| {
        p.id
    });
    undo_vec(&mut cur.schemas, &before.schemas, &after.schemas, |s| s.id);
    undo_vec(
        &mut cur.role_members,
        &before.role_members,
        &after.role_members,
        |x| *x,
    );
    undo_vec(&mut cur.perms, &before.perms, &after.perms, perm_key);
}

fn undo_vec<T: Clone + PartialEq, K: PartialEq>(
    cur: &mut Vec<T>,
    before: &[T],
    after: &[T],
    key: impl Fn(&T) -> K,
) {
    for a in after {
        let k = key(a);
        match before.iter().find(|b| key(b) == k) {
            None => cur.retain(|c| key(c) != k),
            Some(b) if b != a => {
                if let Some(c) = cur.iter_mut().find(|c| key(c) == k) {
                    *c = b.clone();
                }
            }
            Some(_) => {}
        }
    }
    for b in before {
        let k = key(b);
        if !after.iter().any(|a| key(a) == k) && !cur.iter().any(|c| key(c) == k) {
            cur.push(b.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_is_sql_server_2012_format() {
        let h = hash_password("Str0ng!Passw0rd", [1, 2, 3, 4]);
        assert_eq!(h.len(), 70);
        assert_eq!(&h[..6], &[2, 0, 1, 2, 3, 4]);
        assert!(verify_password("Str0ng!Passw0rd", &h));
        assert!(
            !verify_password("str0ng!Passw0rd", &h),
            "passwords are case-sensitive"
        );
    }

    #[test]
    fn seeded_catalog_has_the_b7_ids() {
        let c = Catalog::new("x");
        assert_eq!(c.login("sysadmin").map(|p| p.id), Some(3));
        assert_eq!(c.db("msdb").map(|d| d.id), Some(4));
        let m = c.db("master").expect("master");
        assert_eq!(m.principal("db_datareader").map(|p| p.id), Some(16390));
        assert_eq!(m.schema("db_owner").map(|s| s.id), Some(16384));
        assert_eq!(c.next_db_id(), 5);
        assert!(c.is_sysadmin(1));
    }
}
