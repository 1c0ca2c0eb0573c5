//! TDS 7.4 wire format: packet framing, PRELOGIN, LOGIN7, RPC parameters and the token writer
//! (spec Part A). Parsers take untrusted bytes and return errors, never panic.

use crate::value::{Column, SqlType, Value};

/// Packet types (spec A2).
pub mod ptype {
    /// SQL batch.
    pub const BATCH: u8 = 0x01;
    /// RPC.
    pub const RPC: u8 = 0x03;
    /// Tabular result (every server response).
    pub const REPLY: u8 = 0x04;
    /// Attention.
    pub const ATTENTION: u8 = 0x06;
    /// Bulk load.
    pub const BULK: u8 = 0x07;
    /// Federated auth token.
    pub const FEDAUTH: u8 = 0x08;
    /// Transaction manager request.
    pub const TM: u8 = 0x0E;
    /// LOGIN7.
    pub const LOGIN7: u8 = 0x10;
    /// SSPI.
    pub const SSPI: u8 = 0x11;
    /// PRELOGIN (and the TLS handshake inside it).
    pub const PRELOGIN: u8 = 0x12;
}

/// Packet status bits (spec A1).
pub mod status {
    /// End of message.
    pub const EOM: u8 = 0x01;
    /// Discard this message.
    pub const IGNORE: u8 = 0x02;
    /// Reset the connection before running the request.
    pub const RESET: u8 = 0x08;
    /// Reset but keep the transaction.
    pub const RESET_SKIPTRAN: u8 = 0x10;
}

/// Size of the packet header.
pub const HEADER_LEN: usize = 8;

/// The collation of `SQL_Latin1_General_CP1_CI_AS` as it appears in TYPE_INFO and ENVCHANGE 7.
pub const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// A malformed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TDS protocol error: {0}")]
pub struct ProtoError(pub String);

fn perr<T>(msg: impl Into<String>) -> Result<T, ProtoError> {
    Err(ProtoError(msg.into()))
}

/// A parsed packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Packet type.
    pub ty: u8,
    /// Status flags.
    pub status: u8,
    /// Total length including the header.
    pub len: usize,
}

/// Parses a packet header. The length must cover at least the header and at most 32767 bytes
/// (we accept larger-than-negotiated packets: spec A2 says be lenient).
pub fn parse_header(b: &[u8]) -> Result<Header, ProtoError> {
    if b.len() < HEADER_LEN {
        return perr("short packet header");
    }
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    if len < HEADER_LEN {
        return perr(format!("packet length {len} below header size"));
    }
    Ok(Header {
        ty: b[0],
        status: b[1],
        len,
    })
}

/// Splits a message into packets of at most `packet_size` bytes; only the last has EOM.
pub fn frame(ty: u8, spid: u16, payload: &[u8], packet_size: usize) -> Vec<u8> {
    let chunk = packet_size.clamp(512, 32767) - HEADER_LEN;
    let mut out = Vec::with_capacity(payload.len() + HEADER_LEN * (payload.len() / chunk + 1));
    let mut chunks: Vec<&[u8]> = payload.chunks(chunk).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        let len = (c.len() + HEADER_LEN) as u16;
        out.push(ty);
        out.push(if i + 1 == n { status::EOM } else { 0 });
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&spid.to_be_bytes());
        out.push((i + 1) as u8);
        out.push(0);
        out.extend_from_slice(c);
    }
    out
}

/// Bounds-checked little-endian reader over untrusted bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    b: &'a [u8],
    /// Current offset.
    pub pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts at offset 0.
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }
    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.b.len().saturating_sub(self.pos)
    }
    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.remaining() < n {
            return perr(format!(
                "need {n} bytes at offset {}, have {}",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// u8.
    pub fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }
    /// u16 LE.
    pub fn u16(&mut self) -> Result<u16, ProtoError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    /// u32 LE.
    pub fn u32(&mut self) -> Result<u32, ProtoError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    /// u64 LE.
    pub fn u64(&mut self) -> Result<u64, ProtoError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    /// UTF-16LE string of `chars` code units.
    pub fn utf16(&mut self, chars: usize) -> Result<String, ProtoError> {
        let s = self.take(
            chars
                .checked_mul(2)
                .ok_or_else(|| ProtoError("length overflow".into()))?,
        )?;
        Ok(utf16_to_string(s))
    }
    /// B_VARCHAR.
    pub fn b_varchar(&mut self) -> Result<String, ProtoError> {
        let n = self.u8()? as usize;
        self.utf16(n)
    }
}

/// Decodes UTF-16LE leniently (lone surrogates become U+FFFD).
pub fn utf16_to_string(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// Encodes a string as UTF-16LE.
pub fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

// ---------------------------------------------------------------------------------------------
// PRELOGIN (spec A3)

/// The client's PRELOGIN options we act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prelogin {
    /// ENCRYPTION byte.
    pub encryption: u8,
    /// FEDAUTHREQUIRED, when sent.
    pub fed_auth_required: Option<u8>,
    /// INSTOPT was present.
    pub has_instance: bool,
}

/// Parses a PRELOGIN payload.
pub fn parse_prelogin(b: &[u8]) -> Result<Prelogin, ProtoError> {
    let mut r = Reader::new(b);
    let mut p = Prelogin {
        encryption: 2,
        ..Default::default()
    };
    for _ in 0..64 {
        let token = r.u8()?;
        if token == 0xFF {
            return Ok(p);
        }
        let off = u16::from_be_bytes([r.u8()?, r.u8()?]) as usize;
        let len = u16::from_be_bytes([r.u8()?, r.u8()?]) as usize;
        let data = b
            .get(off..off.saturating_add(len))
            .ok_or_else(|| ProtoError("PRELOGIN option out of range".into()))?;
        match token {
            0x01 if !data.is_empty() => p.encryption = data[0],
            0x02 => p.has_instance = true,
            0x06 if !data.is_empty() => p.fed_auth_required = Some(data[0]),
            _ => {}
        }
    }
    perr("PRELOGIN option table without terminator")
}

/// Builds the PRELOGIN response: VERSION, ENCRYPTION, INSTOPT, THREADID (empty), MARS,
/// [FEDAUTHREQUIRED] — exactly the options clients accept (spec A3).
pub fn build_prelogin(version: (u8, u8, u16), encryption: u8, fed_auth: Option<u8>) -> Vec<u8> {
    let mut opts: Vec<(u8, Vec<u8>)> = vec![
        (
            0x00,
            vec![
                version.0,
                version.1,
                (version.2 >> 8) as u8,
                version.2 as u8,
                0,
                0,
            ],
        ),
        (0x01, vec![encryption]),
        (0x02, vec![0]),
        (0x03, vec![]),
        (0x04, vec![0]),
    ];
    if let Some(f) = fed_auth {
        opts.push((0x06, vec![f]));
    }
    let table_len = opts.len() * 5 + 1;
    let mut out = Vec::new();
    let mut data = Vec::new();
    for (tok, d) in &opts {
        out.push(*tok);
        out.extend_from_slice(&((table_len + data.len()) as u16).to_be_bytes());
        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
        data.extend_from_slice(d);
    }
    out.push(0xFF);
    out.extend_from_slice(&data);
    out
}

// ---------------------------------------------------------------------------------------------
// LOGIN7 (spec A5)

/// The LOGIN7 fields the emulator uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Login7 {
    /// Client TDS version.
    pub tds_version: u32,
    /// Requested packet size.
    pub packet_size: u32,
    /// OptionFlags1.
    pub flags1: u8,
    /// OptionFlags2.
    pub flags2: u8,
    /// OptionFlags3.
    pub flags3: u8,
    /// Host name.
    pub hostname: String,
    /// User name.
    pub username: String,
    /// Password (de-obfuscated).
    pub password: String,
    /// Application name.
    pub app_name: String,
    /// Server name.
    pub server_name: String,
    /// Client interface name.
    pub client_interface: String,
    /// Language.
    pub language: String,
    /// Requested database.
    pub database: String,
    /// SSPI bytes present.
    pub sspi: bool,
    /// New password (change-password login).
    pub new_password: Option<String>,
    /// FeatureExt entries (id, data).
    pub features: Vec<(u8, Vec<u8>)>,
}

/// De-obfuscates a LOGIN7 password: XOR 0xA5 then swap nibbles, per byte.
pub fn deobfuscate(b: &[u8]) -> String {
    let plain: Vec<u8> = b
        .iter()
        .map(|x| {
            let y = x ^ 0xA5;
            y.rotate_left(4)
        })
        .collect();
    utf16_to_string(&plain)
}

/// Obfuscates a password the way clients do (used by tests).
pub fn obfuscate(p: &str) -> Vec<u8> {
    utf16(p).into_iter().map(|b| b.rotate_left(4) ^ 0xA5).collect()
}

/// Parses a LOGIN7 payload.
pub fn parse_login7(b: &[u8]) -> Result<Login7, ProtoError> {
    if b.len() < 94 {
        return perr("LOGIN7 shorter than its fixed part");
    }
    let mut r = Reader::new(b);
    let _len = r.u32()?;
    let tds_version = r.u32()?;
    let packet_size = r.u32()?;
    r.take(12)?;
    let flags1 = r.u8()?;
    let flags2 = r.u8()?;
    let _type_flags = r.u8()?;
    let flags3 = r.u8()?;
    r.take(8)?;
    let field = |off: usize| -> Result<String, ProtoError> {
        let ib = u16::from_le_bytes([b[off], b[off + 1]]) as usize;
        let cch = u16::from_le_bytes([b[off + 2], b[off + 3]]) as usize;
        let s = b
            .get(ib..ib + cch * 2)
            .ok_or_else(|| ProtoError(format!("LOGIN7 field at {off} out of range")))?;
        Ok(utf16_to_string(s))
    };
    let raw = |off: usize, bytes: usize| -> Result<&[u8], ProtoError> {
        let ib = u16::from_le_bytes([b[off], b[off + 1]]) as usize;
        b.get(ib..ib + bytes)
            .ok_or_else(|| ProtoError(format!("LOGIN7 field at {off} out of range")))
    };
    let pw_len = u16::from_le_bytes([b[46], b[47]]) as usize;
    let mut l = Login7 {
        tds_version,
        packet_size,
        flags1,
        flags2,
        flags3,
        hostname: field(36)?,
        username: field(40)?,
        password: deobfuscate(raw(44, pw_len * 2)?),
        app_name: field(48)?,
        server_name: field(52)?,
        client_interface: field(60)?,
        language: field(64)?,
        database: field(68)?,
        sspi: u16::from_le_bytes([b[80], b[81]]) != 0,
        ..Default::default()
    };
    if flags3 & 0x01 != 0 {
        let n = u16::from_le_bytes([b[88], b[89]]) as usize;
        l.new_password = Some(deobfuscate(raw(86, n * 2)?));
    }
    if flags3 & 0x10 != 0 {
        let ib = u16::from_le_bytes([b[56], b[57]]) as usize;
        let cb = u16::from_le_bytes([b[58], b[59]]) as usize;
        if cb >= 4 {
            let p = b
                .get(ib..ib + 4)
                .ok_or_else(|| ProtoError("FeatureExt pointer out of range".into()))?;
            let off = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize;
            let mut fr = Reader::new(
                b.get(off..)
                    .ok_or_else(|| ProtoError("FeatureExt out of range".into()))?,
            );
            loop {
                let id = fr.u8()?;
                if id == 0xFF {
                    break;
                }
                let len = fr.u32()? as usize;
                l.features.push((id, fr.take(len)?.to_vec()));
            }
        }
    }
    Ok(l)
}

// ---------------------------------------------------------------------------------------------
// ALL_HEADERS, RPC, TM (spec A9)

/// Skips ALL_HEADERS, returning the transaction descriptor if one is present.
pub fn skip_all_headers(r: &mut Reader<'_>) -> Result<u64, ProtoError> {
    let start = r.pos;
    let total = r.u32()? as usize;
    if total < 4 {
        return perr("ALL_HEADERS too short");
    }
    let mut descriptor = 0;
    while r.pos < start + total {
        let hlen = r.u32()? as usize;
        if hlen < 6 {
            return perr("ALL_HEADERS entry too short");
        }
        let ty = r.u16()?;
        let data = r.take(hlen - 6)?;
        if ty == 2 && data.len() >= 8 {
            let mut a = [0u8; 8];
            a.copy_from_slice(&data[..8]);
            descriptor = u64::from_le_bytes(a);
        }
    }
    Ok(descriptor)
}

/// A decoded RPC parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcParam {
    /// Name as sent (may be empty, may lack '@').
    pub name: String,
    /// Status byte (0x01 output).
    pub status: u8,
    /// Declared SQL type, if it maps to one of ours.
    pub ty: Option<SqlType>,
    /// Value.
    pub value: Value,
}

/// A decoded RPC request.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcRequest {
    /// Procedure by id (10 = sp_executesql) or by name.
    pub proc: RpcProc,
    /// Parameters in order.
    pub params: Vec<RpcParam>,
}

/// How the procedure was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcProc {
    /// Well-known id.
    Id(u16),
    /// Name.
    Name(String),
}

/// Parses an RPC message body after ALL_HEADERS. A batch of several RPCs (0x80 separator) is
/// reported as an error: spec C1.3 rejects it in v1.
pub fn parse_rpc(r: &mut Reader<'_>) -> Result<RpcRequest, ProtoError> {
    let n = r.u16()?;
    let proc = if n == 0xFFFF {
        RpcProc::Id(r.u16()?)
    } else {
        RpcProc::Name(r.utf16(n as usize)?)
    };
    let _flags = r.u16()?;
    let mut params = Vec::new();
    while r.remaining() > 0 {
        let first = r.take(1)?[0];
        if first == 0x80 || first == 0xFF || first == 0xFE {
            return perr("batched RPC requests are not supported");
        }
        r.pos -= 1;
        let name = r.b_varchar()?;
        let status = r.u8()?;
        let (ty, value) = read_typed_value(r)?;
        params.push(RpcParam {
            name,
            status,
            ty,
            value,
        });
    }
    Ok(RpcRequest { proc, params })
}

fn read_plp(r: &mut Reader<'_>) -> Result<Option<Vec<u8>>, ProtoError> {
    let total = r.u64()?;
    if total == u64::MAX {
        return Ok(None);
    }
    let mut out = Vec::new();
    loop {
        let n = r.u32()? as usize;
        if n == 0 {
            break;
        }
        out.extend_from_slice(r.take(n)?);
        if out.len() > 64 * 1024 * 1024 {
            return perr("PLP value too large");
        }
    }
    Ok(Some(out))
}

fn le_int(b: &[u8]) -> i64 {
    match b.len() {
        1 => b[0] as i64,
        2 => i16::from_le_bytes([b[0], b[1]]) as i64,
        4 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
        8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            i64::from_le_bytes(a)
        }
        _ => 0,
    }
}

fn float_text(b: &[u8]) -> String {
    match b.len() {
        4 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]).to_string(),
        8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            f64::from_le_bytes(a).to_string()
        }
        _ => String::new(),
    }
}

/// Reads TYPE_INFO followed by a value (RPC parameter form).
pub fn read_typed_value(r: &mut Reader<'_>) -> Result<(Option<SqlType>, Value), ProtoError> {
    let ty = r.u8()?;
    match ty {
        0x1F => Ok((None, Value::Null)),
        0x30 => Ok((Some(SqlType::TinyInt), Value::Int(r.u8()? as i64))),
        0x32 => Ok((Some(SqlType::Bit), Value::Bit(r.u8()? != 0))),
        0x34 => Ok((Some(SqlType::SmallInt), Value::Int(le_int(r.take(2)?)))),
        0x38 => Ok((Some(SqlType::Int), Value::Int(le_int(r.take(4)?)))),
        0x7F => Ok((Some(SqlType::BigInt), Value::Int(le_int(r.take(8)?)))),
        0x3B => Ok((None, Value::Str(float_text(r.take(4)?)))),
        0x3E => Ok((None, Value::Str(float_text(r.take(8)?)))),
        0x3D | 0x3C => Ok((None, Value::Bin(r.take(8)?.to_vec()))),
        0x3A | 0x7A => Ok((None, Value::Bin(r.take(4)?.to_vec()))),
        0x26 | 0x68 | 0x6D | 0x6E | 0x6F | 0x24 => {
            let _max = r.u8()?;
            let n = r.u8()? as usize;
            let b = r.take(n)?;
            if n == 0 {
                return Ok((None, Value::Null));
            }
            Ok(match ty {
                0x26 => (Some(SqlType::BigInt), Value::Int(le_int(b))),
                0x68 => (Some(SqlType::Bit), Value::Bit(b[0] != 0)),
                0x6D => (None, Value::Str(float_text(b))),
                _ => (None, Value::Bin(b.to_vec())),
            })
        }
        0x6A | 0x6C => {
            let _len = r.u8()?;
            let _prec = r.u8()?;
            let scale = r.u8()? as u32;
            let n = r.u8()? as usize;
            if n == 0 {
                return Ok((None, Value::Null));
            }
            let b = r.take(n)?;
            let sign = b[0];
            let mut mag: u128 = 0;
            for (i, byte) in b[1..].iter().enumerate().take(16) {
                mag |= (*byte as u128) << (8 * i);
            }
            let digits = mag.to_string();
            let text = if scale == 0 {
                digits
            } else {
                let s = format!("{:0>width$}", digits, width = scale as usize + 1);
                let (a, f) = s.split_at(s.len() - scale as usize);
                format!("{a}.{f}")
            };
            Ok((
                None,
                Value::Str(if sign == 0 { format!("-{text}") } else { text }),
            ))
        }
        0x28 => {
            let n = r.u8()? as usize;
            let b = r.take(n)?;
            Ok((
                None,
                if n == 0 {
                    Value::Null
                } else {
                    Value::Bin(b.to_vec())
                },
            ))
        }
        0x29..=0x2B => {
            let _scale = r.u8()?;
            let n = r.u8()? as usize;
            let b = r.take(n)?;
            Ok((
                None,
                if n == 0 {
                    Value::Null
                } else {
                    Value::Bin(b.to_vec())
                },
            ))
        }
        0xE7 | 0xEF | 0xA7 | 0xAF => {
            let max = r.u16()?;
            r.take(5)?;
            let unicode = ty == 0xE7 || ty == 0xEF;
            let bytes = if max == 0xFFFF {
                read_plp(r)?
            } else {
                let n = r.u16()?;
                if n == 0xFFFF {
                    None
                } else {
                    Some(r.take(n as usize)?.to_vec())
                }
            };
            let sty = if unicode {
                if max == 0xFFFF {
                    SqlType::NVarCharMax
                } else {
                    SqlType::NVarChar((max / 2).max(1))
                }
            } else {
                SqlType::VarChar(if max == 0xFFFF { 8000 } else { max.max(1) })
            };
            let v = match bytes {
                None => Value::Null,
                Some(b) if unicode => Value::Str(utf16_to_string(&b)),
                // varchar parameters arrive in the collation's code page (1252).
                Some(b) => Value::Str(crate::value::cp1252_decode(&b)),
            };
            Ok((Some(sty), v))
        }
        0xA5 | 0xAD => {
            let max = r.u16()?;
            let bytes = if max == 0xFFFF {
                read_plp(r)?
            } else {
                let n = r.u16()?;
                if n == 0xFFFF {
                    None
                } else {
                    Some(r.take(n as usize)?.to_vec())
                }
            };
            Ok((
                Some(SqlType::VarBinary(max.min(8000))),
                bytes.map(Value::Bin).unwrap_or(Value::Null),
            ))
        }
        other => perr(format!("unsupported parameter type 0x{other:02X}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Token writer (spec A6, A8)

/// Token ids.
pub mod token {
    /// DONE.
    pub const DONE: u8 = 0xFD;
    /// DONEPROC.
    pub const DONEPROC: u8 = 0xFE;
    /// DONEINPROC.
    pub const DONEINPROC: u8 = 0xFF;
}

/// DONE status bits.
pub mod done {
    /// More results follow.
    pub const MORE: u16 = 0x01;
    /// Error.
    pub const ERROR: u16 = 0x02;
    /// Row count valid.
    pub const COUNT: u16 = 0x10;
    /// Attention acknowledgement.
    pub const ATTN: u16 = 0x20;
    /// Severe error.
    pub const SRVERROR: u16 = 0x100;
}

/// Builds a response token stream.
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    /// The bytes so far.
    pub buf: Vec<u8>,
}

fn b_varchar(out: &mut Vec<u8>, s: &str) {
    let u = utf16(s);
    let n = (u.len() / 2).min(255);
    out.push(n as u8);
    out.extend_from_slice(&u[..n * 2]);
}

fn us_varchar(out: &mut Vec<u8>, s: &str) {
    let u = utf16(s);
    let n = (u.len() / 2).min(65535);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&u[..n * 2]);
}

impl Tokens {
    /// Empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_len(&mut self, id: u8, body: Vec<u8>) {
        self.buf.push(id);
        self.buf.extend_from_slice(&(body.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(&body);
    }

    /// ENVCHANGE with B_VARCHAR values (database, language, packet size).
    pub fn env_str(&mut self, ty: u8, new: &str, old: &str) {
        let mut b = vec![ty];
        b_varchar(&mut b, new);
        b_varchar(&mut b, old);
        self.with_len(0xE3, b);
    }

    /// ENVCHANGE with B_VARBYTE values (collation, transactions, reset ack).
    pub fn env_bytes(&mut self, ty: u8, new: &[u8], old: &[u8]) {
        let mut b = vec![ty, new.len() as u8];
        b.extend_from_slice(new);
        b.push(old.len() as u8);
        b.extend_from_slice(old);
        self.with_len(0xE3, b);
    }

    /// ERROR (level > 10) or INFO token.
    pub fn message(&mut self, e: &crate::errors::SqlError, server: &str, line: u32) {
        let mut b = Vec::new();
        b.extend_from_slice(&e.number.to_le_bytes());
        b.push(e.state);
        b.push(if e.is_info() { 0 } else { e.level });
        us_varchar(&mut b, &e.message);
        b_varchar(&mut b, server);
        b_varchar(&mut b, "");
        b.extend_from_slice(&line.to_le_bytes());
        self.with_len(if e.is_info() { 0xAB } else { 0xAA }, b);
    }

    /// LOGINACK.
    pub fn loginack(&mut self, tds_version: u32, prog: &str, version: [u8; 4]) {
        let mut b = vec![0x01];
        b.extend_from_slice(&tds_version.to_be_bytes());
        b_varchar(&mut b, prog);
        b.extend_from_slice(&version);
        self.with_len(0xAD, b);
    }

    /// FEATUREEXTACK.
    pub fn feature_ext_ack(&mut self, acks: &[(u8, Vec<u8>)]) {
        self.buf.push(0xAE);
        for (id, data) in acks {
            self.buf.push(*id);
            self.buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(data);
        }
        self.buf.push(0xFF);
    }

    /// DONE / DONEPROC / DONEINPROC.
    pub fn done(&mut self, id: u8, status: u16, curcmd: u16, count: u64) {
        self.buf.push(id);
        self.buf.extend_from_slice(&status.to_le_bytes());
        self.buf.extend_from_slice(&curcmd.to_le_bytes());
        self.buf.extend_from_slice(&count.to_le_bytes());
    }

    /// RETURNSTATUS.
    pub fn return_status(&mut self, v: i32) {
        self.buf.push(0x79);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// COLMETADATA.
    pub fn colmetadata(&mut self, cols: &[Column]) {
        self.buf.push(0x81);
        self.buf.extend_from_slice(&(cols.len() as u16).to_le_bytes());
        for c in cols {
            self.buf.extend_from_slice(&0u32.to_le_bytes());
            self.buf.extend_from_slice(&(c.nullable as u16).to_le_bytes());
            type_info(&mut self.buf, c);
            b_varchar(&mut self.buf, &c.name);
        }
    }

    /// ROW.
    pub fn row(&mut self, cols: &[Column], vals: &[Value]) {
        self.buf.push(0xD1);
        for (c, v) in cols.iter().zip(vals) {
            encode_value(&mut self.buf, c, v);
        }
    }
}

fn type_info(out: &mut Vec<u8>, c: &Column) {
    let n = c.nullable;
    match c.ty {
        SqlType::Int => out.extend_from_slice(if n { &[0x26, 4] } else { &[0x38] }),
        SqlType::BigInt => out.extend_from_slice(if n { &[0x26, 8] } else { &[0x7F] }),
        SqlType::SmallInt => out.extend_from_slice(if n { &[0x26, 2] } else { &[0x34] }),
        SqlType::TinyInt => out.extend_from_slice(if n { &[0x26, 1] } else { &[0x30] }),
        SqlType::Bit => out.extend_from_slice(if n { &[0x68, 1] } else { &[0x32] }),
        SqlType::DateTime => out.extend_from_slice(if n { &[0x6F, 8] } else { &[0x3D] }),
        SqlType::NVarChar(len) => {
            out.push(0xE7);
            out.extend_from_slice(&(len.min(4000) * 2).to_le_bytes());
            out.extend_from_slice(&COLLATION);
        }
        SqlType::NVarCharMax => {
            out.push(0xE7);
            out.extend_from_slice(&0xFFFFu16.to_le_bytes());
            out.extend_from_slice(&COLLATION);
        }
        SqlType::Char(len) | SqlType::VarChar(len) => {
            out.push(if matches!(c.ty, SqlType::Char(_)) {
                0xAF
            } else {
                0xA7
            });
            out.extend_from_slice(&len.min(8000).to_le_bytes());
            out.extend_from_slice(&COLLATION);
        }
        SqlType::VarBinary(len) => {
            out.push(0xA5);
            out.extend_from_slice(&len.min(8000).to_le_bytes());
        }
        SqlType::Variant => {
            out.push(0x62);
            out.extend_from_slice(&8016u32.to_le_bytes());
        }
    }
}

/// Single-byte text for char/varchar columns in code page 1252; characters it lacks become
/// '?', as the server's conversion does.
fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|ch| crate::value::cp1252_byte(ch).unwrap_or(b'?'))
        .collect()
}

fn datetime_bytes(ms: i64) -> [u8; 8] {
    // 1900-01-01 is 25567 days before the Unix epoch.
    let days = ms.div_euclid(86_400_000) + 25_567;
    let ticks = ms.rem_euclid(86_400_000) * 300 / 1000;
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&(days as i32).to_le_bytes());
    b[4..].copy_from_slice(&(ticks as u32).to_le_bytes());
    b
}

fn int_width(ty: SqlType) -> usize {
    match ty {
        SqlType::BigInt => 8,
        SqlType::SmallInt => 2,
        SqlType::TinyInt => 1,
        _ => 4,
    }
}

fn encode_value(out: &mut Vec<u8>, c: &Column, v: &Value) {
    let null = v.is_null();
    match c.ty {
        SqlType::Int | SqlType::BigInt | SqlType::SmallInt | SqlType::TinyInt => {
            let w = int_width(c.ty);
            if c.nullable {
                if null {
                    out.push(0);
                    return;
                }
                out.push(w as u8);
            }
            let i = v.as_int().unwrap_or(0);
            out.extend_from_slice(&i.to_le_bytes()[..w]);
        }
        SqlType::Bit => {
            if c.nullable {
                if null {
                    out.push(0);
                    return;
                }
                out.push(1);
            }
            out.push((v.as_int().unwrap_or(0) != 0) as u8);
        }
        SqlType::DateTime => {
            if c.nullable {
                if null {
                    out.push(0);
                    return;
                }
                out.push(8);
            }
            let ms = match v.base() {
                Value::DateTime(ms) => *ms,
                _ => 0,
            };
            out.extend_from_slice(&datetime_bytes(ms));
        }
        SqlType::NVarChar(_) => match v.as_text() {
            None => out.extend_from_slice(&0xFFFFu16.to_le_bytes()),
            Some(s) => {
                let mut u = utf16(&s);
                u.truncate(8000);
                out.extend_from_slice(&(u.len() as u16).to_le_bytes());
                out.extend_from_slice(&u);
            }
        },
        SqlType::NVarCharMax => match v.as_text() {
            None => out.extend_from_slice(&u64::MAX.to_le_bytes()),
            Some(s) => {
                let u = utf16(&s);
                out.extend_from_slice(&(u.len() as u64).to_le_bytes());
                for chunk in u.chunks(8000) {
                    out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
                    out.extend_from_slice(chunk);
                }
                out.extend_from_slice(&0u32.to_le_bytes());
            }
        },
        SqlType::Char(n) | SqlType::VarChar(n) => match v.as_text() {
            None => out.extend_from_slice(&0xFFFFu16.to_le_bytes()),
            Some(s) => {
                let mut b = latin1(&s);
                if let SqlType::Char(n) = c.ty {
                    b.resize(n as usize, b' ');
                }
                b.truncate(n as usize);
                out.extend_from_slice(&(b.len() as u16).to_le_bytes());
                out.extend_from_slice(&b);
            }
        },
        SqlType::VarBinary(_) => match v.base() {
            Value::Bin(b) => {
                out.extend_from_slice(&(b.len().min(8000) as u16).to_le_bytes());
                out.extend_from_slice(&b[..b.len().min(8000)]);
            }
            _ => out.extend_from_slice(&0xFFFFu16.to_le_bytes()),
        },
        SqlType::Variant => {
            let mut body = Vec::new();
            match v.base() {
                Value::Null => {}
                Value::Int(i) => {
                    body.extend_from_slice(&[0x38, 0]);
                    body.extend_from_slice(&(*i as i32).to_le_bytes());
                }
                Value::Bit(b) => body.extend_from_slice(&[0x32, 0, *b as u8]),
                Value::Bin(b) => {
                    body.extend_from_slice(&[0xA5, 2]);
                    body.extend_from_slice(&(b.len() as u16).to_le_bytes());
                    body.extend_from_slice(b);
                }
                Value::DateTime(ms) => {
                    body.extend_from_slice(&[0x3D, 0]);
                    body.extend_from_slice(&datetime_bytes(*ms));
                }
                other => {
                    let s = other.as_text().unwrap_or_default();
                    let u = utf16(&s);
                    body.extend_from_slice(&[0xE7, 7]);
                    body.extend_from_slice(&COLLATION);
                    body.extend_from_slice(&(u.len().max(2) as u16).to_le_bytes());
                    body.extend_from_slice(&u);
                }
            }
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prelogin_reply_has_the_shape_clients_accept() {
        // VERSION, ENCRYPTION, INSTOPT, THREADID (len 0), MARS — tiberius rejects anything else.
        let b = build_prelogin((16, 0, 4135), 2, None);
        assert_eq!(&b[0..5], &[0x00, 0x00, 0x1A, 0x00, 0x06]);
        assert_eq!(b[25], 0xFF);
        assert_eq!(&b[26..32], &[0x10, 0x00, 0x10, 0x27, 0x00, 0x00]);
        assert_eq!(&b[15..20], &[0x03, 0x00, 0x22, 0x00, 0x00]);
    }

    #[test]
    fn password_obfuscation_round_trips() {
        assert_eq!(deobfuscate(&obfuscate("Str0ng!Passw0rd")), "Str0ng!Passw0rd");
    }

    #[test]
    fn frames_split_at_the_packet_size_with_eom_only_last() {
        let f = frame(ptype::REPLY, 51, &vec![7u8; 10000], 4096);
        assert_eq!(f.len(), 10000 + 3 * 8);
        assert_eq!(f[1], 0);
        assert_eq!(f[4096 + 1], 0);
        assert_eq!(f[8192 + 1], status::EOM);
        assert_eq!(&f[4..6], &51u16.to_be_bytes());
    }
}
