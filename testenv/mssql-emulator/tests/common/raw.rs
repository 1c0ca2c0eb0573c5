//! A minimal raw TDS client (plaintext only) for checking wire-level facts that a driver hides:
//! PRELOGIN bytes, token order, DONE statuses, packet splitting, attention, reset-connection.

use mssql_emulator::tds::{obfuscate, utf16};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A token as seen on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// ENVCHANGE type, new, old (raw bytes; strings are UTF-16LE without the length byte).
    Env(u8, Vec<u8>, Vec<u8>),
    /// INFO number, state, class.
    Info(u32, u8, u8),
    /// ERROR number, state, class, text.
    Error(u32, u8, u8, String),
    /// LOGINACK TDS version (as sent, big-endian).
    LoginAck(u32),
    /// DONE/DONEPROC/DONEINPROC: token id, status, curcmd, count.
    Done(u8, u16, u16, u64),
    /// COLMETADATA: (type byte, name) per column.
    Cols(Vec<(u8, String)>),
    /// ROW: raw cell bytes (None = NULL).
    Row(Vec<Option<Vec<u8>>>),
    /// RETURNSTATUS.
    Ret(i32),
    /// FEATUREEXTACK.
    FeatureAck,
}

/// Raw connection.
pub struct Raw {
    /// Socket.
    pub sock: TcpStream,
    /// Packet size for sending.
    pub packet_size: usize,
}

/// One received message: per-packet (type, status, length) and the joined payload.
pub struct Msg {
    /// Packets.
    pub packets: Vec<(u8, u8, usize)>,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Raw {
    /// Connects.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let sock = TcpStream::connect(addr).await.expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        Raw {
            sock,
            packet_size: 4096,
        }
    }

    /// Sends a message with `status` on the first packet (EOM added to the last).
    pub async fn send(&mut self, ty: u8, first_status: u8, payload: &[u8]) {
        let chunk = self.packet_size - 8;
        let chunks: Vec<&[u8]> = if payload.is_empty() {
            vec![&[][..]]
        } else {
            payload.chunks(chunk).collect()
        };
        let n = chunks.len();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let mut st = if i == 0 { first_status } else { 0 };
            if i + 1 == n {
                st |= 1;
            }
            out.push(ty);
            out.push(st);
            out.extend_from_slice(&((c.len() + 8) as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0, (i + 1) as u8, 0]);
            out.extend_from_slice(c);
        }
        self.sock.write_all(&out).await.expect("send");
    }

    /// Receives one message; None at EOF.
    pub async fn recv(&mut self) -> Option<Msg> {
        let mut packets = Vec::new();
        let mut payload = Vec::new();
        loop {
            let mut h = [0u8; 8];
            if self.sock.read_exact(&mut h).await.is_err() {
                return None;
            }
            let len = u16::from_be_bytes([h[2], h[3]]) as usize;
            let mut body = vec![0u8; len - 8];
            self.sock.read_exact(&mut body).await.ok()?;
            packets.push((h[0], h[1], len));
            payload.extend_from_slice(&body);
            if h[1] & 1 != 0 {
                return Some(Msg { packets, payload });
            }
        }
    }

    /// True when the server has closed the connection.
    pub async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.sock.read(&mut b).await, Ok(0) | Err(_))
    }

    /// PRELOGIN with `enc` and login as `user`; returns the PRELOGIN reply and login reply.
    pub async fn handshake(&mut self, enc: u8, user: &str, pw: &str, db: &str) -> (Msg, Msg) {
        self.send(0x12, 0, &prelogin(enc)).await;
        let pre = self.recv().await.expect("prelogin reply");
        self.send(0x10, 0, &login7(user, pw, db, 4096, "raw-test")).await;
        let login = self.recv().await.expect("login reply");
        (pre, login)
    }

    /// Sends a SQL batch and returns its response.
    pub async fn batch(&mut self, sql: &str, status: u8) -> Msg {
        self.send(0x01, status, &batch(sql)).await;
        self.recv().await.expect("batch reply")
    }
}

/// Client PRELOGIN: VERSION, ENCRYPTION, INSTOPT, THREADID, MARS.
pub fn prelogin(enc: u8) -> Vec<u8> {
    let opts: Vec<(u8, Vec<u8>)> = vec![
        (0, vec![0x10, 0, 0, 0, 0, 0]),
        (1, vec![enc]),
        (2, b"MSSQLServer\0".to_vec()),
        (3, vec![0, 0, 0, 1]),
        (4, vec![0]),
    ];
    let table = opts.len() * 5 + 1;
    let mut head = Vec::new();
    let mut data = Vec::new();
    for (t, d) in &opts {
        head.push(*t);
        head.extend_from_slice(&((table + data.len()) as u16).to_be_bytes());
        head.extend_from_slice(&(d.len() as u16).to_be_bytes());
        data.extend_from_slice(d);
    }
    head.push(0xFF);
    head.extend_from_slice(&data);
    head
}

/// LOGIN7 for TDS 7.4 with fUseDB set.
pub fn login7(user: &str, pw: &str, db: &str, packet_size: u32, app: &str) -> Vec<u8> {
    let fields: Vec<Vec<u8>> = vec![
        utf16("rawhost"),
        utf16(user),
        obfuscate(pw),
        utf16(app),
        utf16("localhost"),
        vec![],
        utf16("raw"),
        vec![],
        utf16(db),
    ];
    let mut fixed = vec![0u8; 94];
    fixed[4..8].copy_from_slice(&0x7400_0004u32.to_le_bytes());
    fixed[8..12].copy_from_slice(&packet_size.to_le_bytes());
    fixed[24] = 0xE0;
    fixed[25] = 0x03;
    let mut data = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        let off = 36 + i * 4;
        let ib = (94 + data.len()) as u16;
        let cch = (f.len() / 2) as u16;
        fixed[off..off + 2].copy_from_slice(&ib.to_le_bytes());
        fixed[off + 2..off + 4].copy_from_slice(&cch.to_le_bytes());
        data.extend_from_slice(f);
    }
    let end = (94 + data.len()) as u16;
    for off in [78usize, 82, 86] {
        fixed[off..off + 2].copy_from_slice(&end.to_le_bytes());
    }
    fixed.extend_from_slice(&data);
    let len = fixed.len() as u32;
    fixed[0..4].copy_from_slice(&len.to_le_bytes());
    fixed
}

/// SQL batch payload with the 22-byte ALL_HEADERS block.
pub fn batch(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&22u32.to_le_bytes());
    b.extend_from_slice(&18u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&utf16(sql));
    b
}

fn u16le(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}
fn u32le(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Parses the token stream the emulator writes.
pub fn tokens(p: &[u8]) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut cols: Vec<(u8, u16)> = Vec::new();
    while i < p.len() {
        let id = p[i];
        i += 1;
        match id {
            0xE3 => {
                let len = u16le(p, i) as usize;
                let b = &p[i + 2..i + 2 + len];
                let ty = b[0];
                let (new, old) = if matches!(ty, 1 | 2 | 4) {
                    let n = b[1] as usize * 2;
                    let new = b[2..2 + n].to_vec();
                    let m = b[2 + n] as usize * 2;
                    (new, b[3 + n..3 + n + m].to_vec())
                } else {
                    let n = b[1] as usize;
                    let new = b[2..2 + n].to_vec();
                    let m = b[2 + n] as usize;
                    (new, b[3 + n..3 + n + m].to_vec())
                };
                out.push(Tok::Env(ty, new, old));
                i += 2 + len;
            }
            0xAA | 0xAB => {
                let len = u16le(p, i) as usize;
                let b = &p[i + 2..i + 2 + len];
                let n = u32le(b, 0);
                let ml = u16le(b, 6) as usize;
                let text = mssql_emulator::tds::utf16_to_string(&b[8..8 + ml * 2]);
                out.push(if id == 0xAA {
                    Tok::Error(n, b[4], b[5], text)
                } else {
                    Tok::Info(n, b[4], b[5])
                });
                i += 2 + len;
            }
            0xAD => {
                let len = u16le(p, i) as usize;
                let b = &p[i + 2..i + 2 + len];
                out.push(Tok::LoginAck(u32::from_be_bytes([b[1], b[2], b[3], b[4]])));
                i += 2 + len;
            }
            0xAE => {
                while p[i] != 0xFF {
                    let l = u32le(p, i + 1) as usize;
                    i += 5 + l;
                }
                i += 1;
                out.push(Tok::FeatureAck);
            }
            0xFD..=0xFF => {
                let st = u16le(p, i);
                let cmd = u16le(p, i + 2);
                let mut c = [0u8; 8];
                c.copy_from_slice(&p[i + 4..i + 12]);
                out.push(Tok::Done(id, st, cmd, u64::from_le_bytes(c)));
                i += 12;
            }
            0x79 => {
                out.push(Tok::Ret(u32le(p, i) as i32));
                i += 4;
            }
            0x81 => {
                let n = u16le(p, i) as usize;
                i += 2;
                cols.clear();
                let mut meta = Vec::new();
                for _ in 0..n {
                    i += 6;
                    let ty = p[i];
                    i += 1;
                    let mut max = 0u16;
                    match ty {
                        0x26 | 0x68 | 0x6F => {
                            max = p[i] as u16;
                            i += 1;
                        }
                        0xE7 | 0xA7 | 0xAF => {
                            max = u16le(p, i);
                            i += 7;
                        }
                        0xA5 => {
                            max = u16le(p, i);
                            i += 2;
                        }
                        0x62 => i += 4,
                        _ => {}
                    }
                    let nl = p[i] as usize * 2;
                    let name = mssql_emulator::tds::utf16_to_string(&p[i + 1..i + 1 + nl]);
                    i += 1 + nl;
                    cols.push((ty, max));
                    meta.push((ty, name));
                }
                out.push(Tok::Cols(meta));
            }
            0xD1 => {
                let mut cells = Vec::new();
                for (ty, max) in &cols {
                    let fixed = match ty {
                        0x38 => Some(4),
                        0x7F | 0x3D => Some(8),
                        0x34 => Some(2),
                        0x30 | 0x32 => Some(1),
                        _ => None,
                    };
                    if let Some(n) = fixed {
                        cells.push(Some(p[i..i + n].to_vec()));
                        i += n;
                        continue;
                    }
                    match ty {
                        0x26 | 0x68 | 0x6F => {
                            let n = p[i] as usize;
                            cells.push((n > 0).then(|| p[i + 1..i + 1 + n].to_vec()));
                            i += 1 + n;
                        }
                        0x62 => {
                            let n = u32le(p, i) as usize;
                            cells.push((n > 0).then(|| p[i + 4..i + 4 + n].to_vec()));
                            i += 4 + n;
                        }
                        _ if *max == 0xFFFF => {
                            let mut c = [0u8; 8];
                            c.copy_from_slice(&p[i..i + 8]);
                            let total = u64::from_le_bytes(c);
                            i += 8;
                            if total == u64::MAX {
                                cells.push(None);
                                continue;
                            }
                            let mut v = Vec::new();
                            loop {
                                let n = u32le(p, i) as usize;
                                i += 4;
                                if n == 0 {
                                    break;
                                }
                                v.extend_from_slice(&p[i..i + n]);
                                i += n;
                            }
                            cells.push(Some(v));
                        }
                        _ => {
                            let n = u16le(p, i) as usize;
                            i += 2;
                            if n == 0xFFFF {
                                cells.push(None);
                            } else {
                                cells.push(Some(p[i..i + n].to_vec()));
                                i += n;
                            }
                        }
                    }
                }
                out.push(Tok::Row(cells));
            }
            other => panic!("unexpected token 0x{other:02X} at {}", i - 1),
        }
    }
    out
}

/// DONE-family tokens only: (id, status).
pub fn dones(t: &[Tok]) -> Vec<(u8, u16)> {
    t.iter()
        .filter_map(|x| {
            if let Tok::Done(id, st, _, _) = x {
                Some((*id, *st))
            } else {
                None
            }
        })
        .collect()
}

/// UTF-16LE bytes to a string.
pub fn s16(b: &[u8]) -> String {
    mssql_emulator::tds::utf16_to_string(b)
}
