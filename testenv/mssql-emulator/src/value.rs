//! Values and column types as the engine produces them and the TDS writer encodes them.

use serde::Serialize;
use std::cmp::Ordering;

/// A SQL type the emulator can put in COLMETADATA (spec A8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SqlType {
    /// int.
    Int,
    /// bigint.
    BigInt,
    /// smallint.
    SmallInt,
    /// tinyint.
    TinyInt,
    /// bit.
    Bit,
    /// nvarchar(n) with n in characters (sysname = 128).
    NVarChar(u16),
    /// nvarchar(max).
    NVarCharMax,
    /// char(n).
    Char(u16),
    /// varchar(n).
    VarChar(u16),
    /// varbinary(n).
    VarBinary(u16),
    /// datetime.
    DateTime,
    /// sql_variant.
    Variant,
}

/// A value. Integers of every width share `Int`; the column type decides the wire width.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Value {
    /// NULL.
    Null,
    /// Any integer.
    Int(i64),
    /// bit.
    Bit(bool),
    /// Character data.
    Str(String),
    /// Binary data.
    Bin(Vec<u8>),
    /// datetime as milliseconds since the Unix epoch (UTC).
    DateTime(i64),
    /// sql_variant wrapping a base value.
    Variant(Box<Value>),
}

impl Value {
    /// True for NULL (also a NULL inside a variant).
    pub fn is_null(&self) -> bool {
        match self {
            Value::Null => true,
            Value::Variant(v) => v.is_null(),
            _ => false,
        }
    }

    /// The value with any variant wrapper removed.
    pub fn base(&self) -> &Value {
        match self {
            Value::Variant(v) => v.base(),
            v => v,
        }
    }

    /// String form used by string functions and implicit conversions.
    pub fn as_text(&self) -> Option<String> {
        match self.base() {
            Value::Null => None,
            Value::Int(i) => Some(i.to_string()),
            Value::Bit(b) => Some(if *b { "1".into() } else { "0".into() }),
            Value::Str(s) => Some(s.clone()),
            Value::Bin(b) => Some(format!(
                "0x{}",
                b.iter().map(|x| format!("{x:02X}")).collect::<String>()
            )),
            Value::DateTime(ms) => Some(format_datetime(*ms)),
            Value::Variant(_) => None,
        }
    }

    /// Integer form for comparisons and arithmetic.
    pub fn as_int(&self) -> Option<i64> {
        match self.base() {
            Value::Int(i) => Some(*i),
            Value::Bit(b) => Some(*b as i64),
            Value::Str(s) => s.trim().parse().ok(),
            Value::DateTime(ms) => Some(*ms),
            _ => None,
        }
    }

    /// The natural type for an unnamed expression result (`SELECT 1` → int NOT NULL).
    pub fn natural_type(&self) -> SqlType {
        match self {
            Value::Null | Value::Int(_) => SqlType::Int,
            Value::Bit(_) => SqlType::Bit,
            Value::Str(s) => {
                let n = s.encode_utf16().count();
                if n > 4000 {
                    SqlType::NVarCharMax
                } else {
                    SqlType::NVarChar(n.max(1) as u16)
                }
            }
            Value::Bin(b) => SqlType::VarBinary(b.len().clamp(1, 8000) as u16),
            Value::DateTime(_) => SqlType::DateTime,
            Value::Variant(_) => SqlType::Variant,
        }
    }
}

/// SQL comparison with case-insensitive strings (the default collation); None when either
/// side is NULL (unknown).
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    let (a, b) = (a.base(), b.base());
    if a.is_null() || b.is_null() {
        return None;
    }
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Some(ci_cmp(x, y)),
        (Value::Bin(x), Value::Bin(y)) => Some(x.cmp(y)),
        (Value::Str(_), _) | (_, Value::Str(_)) => match (a.as_int(), b.as_int()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => Some(ci_cmp(&a.as_text()?, &b.as_text()?)),
        },
        _ => Some(a.as_int()?.cmp(&b.as_int()?)),
    }
}

/// Case-insensitive comparison ignoring trailing spaces, like `_CI_AS` collations.
pub fn ci_cmp(a: &str, b: &str) -> Ordering {
    let a = a.trim_end_matches(' ').to_lowercase();
    let b = b.trim_end_matches(' ').to_lowercase();
    a.cmp(&b)
}

/// `datetime` display form (`yyyy-mm-dd hh:mm:ss.fff`).
pub fn format_datetime(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A result column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Column {
    /// Column name (empty for unnamed expressions).
    pub name: String,
    /// Type.
    pub ty: SqlType,
    /// Nullability (COLMETADATA flag 0x0001 and the N-type choice).
    pub nullable: bool,
}

impl Column {
    /// Shorthand constructor.
    pub fn new(name: &str, ty: SqlType, nullable: bool) -> Column {
        Column {
            name: name.to_string(),
            ty,
            nullable,
        }
    }
}

/// Code page 1252 characters at 0x80–0x9F (0 = unassigned there).
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0,
    0x017D, 0, 0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A,
    0x0153, 0, 0x017E, 0x0178,
];

/// The code-page-1252 byte for a character, if it has one.
pub fn cp1252_byte(c: char) -> Option<u8> {
    let u = c as u32;
    if u < 0x80 || (0xA0..=0xFF).contains(&u) {
        return Some(u as u8);
    }
    CP1252_HIGH
        .iter()
        .position(|x| *x as u32 == u && *x != 0)
        .map(|i| 0x80 + i as u8)
}

/// Decodes code-page-1252 bytes (varchar data under SQL_Latin1_General_CP1_CI_AS).
pub fn cp1252_decode(b: &[u8]) -> String {
    b.iter()
        .map(|&x| match x {
            0x80..=0x9F => char::from_u32(CP1252_HIGH[(x - 0x80) as usize] as u32)
                .filter(|c| *c != '\0')
                .unwrap_or('?'),
            _ => x as char,
        })
        .collect()
}

/// A string as varchar under the server collation holds it: characters code page 1252 lacks
/// become '?' (so a non-N literal loses them, as on the server).
pub fn to_varchar(s: &str) -> String {
    s.chars()
        .map(|c| if cp1252_byte(c).is_some() { c } else { '?' })
        .collect()
}
