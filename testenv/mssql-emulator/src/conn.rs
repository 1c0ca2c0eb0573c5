//! One client connection: PRELOGIN, the TLS handshake inside PRELOGIN packets, LOGIN7 (with
//! login-only encryption), then the request loop (batch, RPC, transaction manager, attention,
//! reset-connection). Spec Part A.

use crate::engine::{Exec, Out, Session, SessionInfo};
use crate::errors::SqlError;
use crate::server::Shared;
use crate::tds::{self, Header, ProtoError, Reader, Tokens, done, ptype, status, token};
use crate::value::Value;
use rustls::ServerConnection;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connection-level failure: I/O, protocol or TLS. Each ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Malformed request.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// TLS failure.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
}

type CResult<T> = Result<T, ConnError>;

/// Packet size for TLS handshake flights (see [`Wire::handshake`]).
const HANDSHAKE_PACKET: usize = 512;

fn looks_like_tls(b: &[u8]) -> bool {
    b.len() >= 2 && (0x14..=0x17).contains(&b[0]) && b[1] == 0x03
}

fn take_packet(buf: &mut Vec<u8>) -> CResult<Option<(Header, Vec<u8>)>> {
    if buf.len() < tds::HEADER_LEN {
        return Ok(None);
    }
    let h = tds::parse_header(buf)?;
    if buf.len() < h.len {
        return Ok(None);
    }
    let payload = buf[tds::HEADER_LEN..h.len].to_vec();
    buf.drain(..h.len);
    Ok(Some((h, payload)))
}

/// Socket plus the optional TLS layer.
struct Wire {
    sock: TcpStream,
    raw: Vec<u8>,
    plain: Vec<u8>,
    tls: Option<Box<ServerConnection>>,
    /// Login-only encryption: raw TDS packets may follow TLS ones until the login ends.
    login_only: bool,
    /// After login-only TLS ended, a stray TLS alert record may still arrive.
    skip_alerts: bool,
    packet_size: usize,
    spid: u16,
}

impl Wire {
    async fn fill(&mut self) -> CResult<bool> {
        let mut tmp = vec![0u8; 16384];
        let n = self.sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(false);
        }
        self.raw.extend_from_slice(&tmp[..n]);
        Ok(true)
    }

    /// Feeds one complete TLS record from `raw` to rustls; true if one was consumed.
    fn feed_record(&mut self) -> CResult<bool> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(false);
        };
        if self.raw.len() < 5 || !looks_like_tls(&self.raw) {
            return Ok(false);
        }
        let len = u16::from_be_bytes([self.raw[3], self.raw[4]]) as usize + 5;
        if self.raw.len() < len {
            return Ok(false);
        }
        let rec: Vec<u8> = self.raw.drain(..len).collect();
        let mut rd = &rec[..];
        while !rd.is_empty() {
            tls.read_tls(&mut rd)?;
            tls.process_new_packets()?;
        }
        let mut buf = [0u8; 16384];
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.plain.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Reads one packet; None at EOF.
    async fn read_packet(&mut self) -> CResult<Option<(Header, Vec<u8>)>> {
        loop {
            if let Some(p) = take_packet(&mut self.plain)? {
                return Ok(Some(p));
            }
            if self.skip_alerts && self.raw.len() >= 5 && self.raw[0] == 0x15 && self.raw[1] == 0x03 {
                let len = u16::from_be_bytes([self.raw[3], self.raw[4]]) as usize + 5;
                if self.raw.len() >= len {
                    self.raw.drain(..len);
                    continue;
                }
            }
            let raw_allowed = self.tls.is_none() || (self.login_only && !looks_like_tls(&self.raw));
            if raw_allowed && let Some(p) = take_packet(&mut self.raw)? {
                return Ok(Some(p));
            }
            if self.feed_record()? {
                continue;
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Reads one message (packets up to EOM). Returns (type, status of first packet, payload).
    async fn read_message(&mut self) -> CResult<Option<(u8, u8, Vec<u8>)>> {
        let mut payload = Vec::new();
        let mut first: Option<(u8, u8)> = None;
        loop {
            let Some((h, p)) = self.read_packet().await? else {
                return Ok(None);
            };
            if first.is_none() {
                first = Some((h.ty, h.status));
            }
            payload.extend_from_slice(&p);
            if payload.len() > 64 * 1024 * 1024 {
                return Err(ProtoError("message too large".into()).into());
            }
            if h.status & status::EOM != 0 {
                if h.status & status::IGNORE != 0 {
                    payload.clear();
                    first = None;
                    continue;
                }
                let (ty, st) = first.unwrap_or((h.ty, h.status));
                return Ok(Some((ty, st, payload)));
            }
        }
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> CResult<()> {
        self.sock.write_all(bytes).await?;
        Ok(())
    }

    /// Sends a message, split by the negotiated packet size, through TLS when it is on.
    async fn send(&mut self, ty: u8, payload: &[u8]) -> CResult<()> {
        let framed = tds::frame(ty, self.spid, payload, self.packet_size);
        match self.tls.as_mut() {
            Some(tls) if !self.login_only => {
                tls.writer().write_all(&framed)?;
                let mut out = Vec::new();
                while tls.wants_write() {
                    tls.write_tls(&mut out)?;
                }
                self.write_raw(&out).await
            }
            _ => self.write_raw(&framed).await,
        }
    }

    /// The TLS handshake carried in PRELOGIN (0x12) packets (spec A4). Each flight is one
    /// message split into packets of [`HANDSHAKE_PACKET`] bytes: go-mssqldb rejects any packet
    /// larger than the packet size it was configured with, even before login, and 512 is the
    /// smallest a client may configure.
    async fn handshake(&mut self, cfg: Arc<rustls::ServerConfig>) -> CResult<()> {
        let mut tls = ServerConnection::new(cfg)?;
        while tls.is_handshaking() {
            let mut payload = Vec::new();
            loop {
                let Some((h, p)) = take_packet(&mut self.raw)? else {
                    if !self.fill().await? {
                        return Err(ProtoError("EOF during TLS handshake".into()).into());
                    }
                    continue;
                };
                payload.extend_from_slice(&p);
                if h.status & status::EOM != 0 {
                    break;
                }
            }
            let mut rd = &payload[..];
            while !rd.is_empty() {
                tls.read_tls(&mut rd)?;
                if let Err(e) = tls.process_new_packets() {
                    // Send the alert so the client sees why, then fail.
                    let mut out = Vec::new();
                    while tls.wants_write() {
                        tls.write_tls(&mut out)?;
                    }
                    let framed = tds::frame(ptype::PRELOGIN, self.spid, &out, HANDSHAKE_PACKET);
                    let _ = self.write_raw(&framed).await;
                    return Err(e.into());
                }
            }
            let mut out = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut out)?;
            }
            if !out.is_empty() {
                let framed = tds::frame(ptype::PRELOGIN, self.spid, &out, HANDSHAKE_PACKET);
                self.write_raw(&framed).await?;
            }
        }
        self.tls = Some(Box::new(tls));
        Ok(())
    }
}

impl Wire {
    /// A plain TLS handshake on the socket (TDS 8.0 strict), before any TDS packet.
    async fn strict_handshake(&mut self, cfg: Arc<rustls::ServerConfig>) -> CResult<()> {
        self.tls = Some(Box::new(ServerConnection::new(cfg)?));
        loop {
            let handshaking = self.tls.as_ref().is_some_and(|t| t.is_handshaking());
            let mut out = Vec::new();
            if let Some(tls) = self.tls.as_mut() {
                while tls.wants_write() {
                    tls.write_tls(&mut out)?;
                }
            }
            if !out.is_empty() {
                self.write_raw(&out).await?;
            }
            if !handshaking {
                return Ok(());
            }
            if !self.feed_record()? && !self.fill().await? {
                return Err(ProtoError("EOF during TDS 8.0 TLS handshake".into()).into());
            }
        }
    }
}

/// Serves one connection to the end.
pub async fn serve(shared: Arc<Shared>, sock: TcpStream) {
    let _ = sock.set_nodelay(true);
    shared.count(|c| c.connections_opened += 1);
    let spid = shared.alloc_spid();
    let mut wire = Wire {
        sock,
        raw: Vec::new(),
        plain: Vec::new(),
        tls: None,
        login_only: false,
        skip_alerts: false,
        packet_size: 4096,
        spid,
    };
    let result = run(&shared, &mut wire).await;
    if let Err(e) = &result {
        tracing::debug!(spid, "connection ended: {e}");
    }
    shared.end_session(spid);
}

async fn run(shared: &Arc<Shared>, wire: &mut Wire) -> CResult<()> {
    if !wire.fill().await? {
        return Ok(());
    }
    // TDS 8.0 strict: the connection starts with a TLS ClientHello (0x16), and PRELOGIN,
    // LOGIN7 and everything after travel inside that TLS session.
    let strict = wire.raw[0] == 0x16;
    if strict {
        let Some(cfg) = shared.strict_tls_config.clone() else {
            return Err(
                ProtoError("TDS 8.0 strict connection but no certificate (--tls none)".into()).into(),
            );
        };
        wire.strict_handshake(cfg).await?;
    }
    let Some((ty, _, payload)) = wire.read_message().await? else {
        return Ok(());
    };
    if ty != ptype::PRELOGIN {
        return Err(ProtoError(format!("expected PRELOGIN, got packet type 0x{ty:02X}")).into());
    }
    let pre = tds::parse_prelogin(&payload)?;
    let reply = encryption_reply(shared.tls_mode(), pre.encryption & 0x7F);
    let id = &shared.identity;
    let resp = tds::build_prelogin((id.major, id.minor, id.build), reply, pre.fed_auth_required);
    wire.send(ptype::REPLY, &resp).await?;
    if reply != 2 && !strict {
        let Some(cfg) = shared.tls_config.clone() else {
            return Err(ProtoError("TLS negotiated without a certificate".into()).into());
        };
        wire.login_only = reply == 0;
        wire.handshake(cfg).await?;
    }
    // LOGIN7.
    let Some((ty, _, payload)) = wire.read_message().await? else {
        return Ok(());
    };
    if wire.login_only {
        // Login-only encryption ends with the LOGIN7; the response is plaintext.
        wire.tls = None;
        wire.login_only = false;
        wire.skip_alerts = true;
    }
    if ty != ptype::LOGIN7 {
        return Err(ProtoError(format!("expected LOGIN7, got packet type 0x{ty:02X}")).into());
    }
    let login = tds::parse_login7(&payload)?;
    let mut sess = match login_session(shared, wire, &login).await? {
        Some(s) => s,
        None => return Ok(()),
    };
    request_loop(shared, wire, &mut sess).await
}

/// The ENCRYPTION byte of our PRELOGIN reply (MS-TDS 2.2.6.5; spec A4 table).
pub fn encryption_reply(mode: crate::TlsMode, client: u8) -> u8 {
    use crate::TlsMode::*;
    match (mode, client) {
        (None, _) => 2,
        (Off, 0) => 0,
        (Off, 2) => 2,
        (Off, _) => 1,
        (Required, 0) | (Required, 2) => 3,
        (Required, _) => 1,
    }
}

async fn login_failed(wire: &mut Wire, shared: &Shared, errs: Vec<SqlError>) -> CResult<Option<Session>> {
    let mut t = Tokens::new();
    for e in &errs {
        t.message(e, &shared.identity.server_name, 1);
        shared.count_error(e.number);
    }
    t.done(token::DONE, done::ERROR, 0, 0);
    shared.count(|c| c.login_failures += 1);
    wire.send(ptype::REPLY, &t.buf).await?;
    let _ = wire.sock.shutdown().await;
    Ok(None)
}

async fn login_session(
    shared: &Arc<Shared>,
    wire: &mut Wire,
    login: &tds::Login7,
) -> CResult<Option<Session>> {
    let user = login.username.clone();
    let fail18456 = || SqlError::new(18456, &[&user]);
    if login.sspi || shared.logins_refused() {
        return login_failed(wire, shared, vec![fail18456()]).await;
    }
    let fedauth = match login.features.iter().find(|f| f.0 == 0x02) {
        None => None,
        Some((_, data)) => {
            let token = match crate::fedauth::parse_feature(data) {
                Ok(crate::fedauth::FedAuthRequest::SecurityToken { token, .. }) => Some(token),
                Ok(crate::fedauth::FedAuthRequest::Adal { .. }) => adal_token(wire).await?,
                Err(e) => {
                    tracing::debug!("{e}");
                    None
                }
            };
            let now = crate::catalog::now_ms() / 1000;
            match token.map(|t| crate::fedauth::principal_sid(&t, shared.fedauth_key.as_deref(), now)) {
                Some(Ok(sid)) => Some(sid),
                other => {
                    if let Some(Err(e)) = other {
                        tracing::debug!("{e}");
                    }
                    return login_failed(
                        wire,
                        shared,
                        vec![SqlError::new(18456, &["<token-identified principal>"])],
                    )
                    .await;
                }
            }
        }
    };
    // A contained database authenticates its own users first (B3: CREATE USER … WITH PASSWORD).
    if fedauth.is_none() && !login.database.is_empty() {
        let contained = {
            let cat = shared.catalog();
            cat.db(&login.database)
                .filter(|d| d.containment == 1)
                .and_then(|d| {
                    d.principal(&user).and_then(|u| {
                        u.password_hash
                            .as_ref()
                            .map(|h| (d.id, d.name.clone(), u.id, u.name.clone(), h.clone()))
                    })
                })
        };
        if let Some((db_id, db_name, uid, uname, hash)) = contained {
            if !crate::catalog::verify_password(&login.password, &hash) {
                return login_failed(wire, shared, vec![fail18456()]).await;
            }
            let mut sess = finish_login(shared, wire, login, None, 0, &uname, db_id, &db_name).await?;
            sess.contained = Some((db_id, uid));
            return Ok(Some(sess));
        }
    }
    let decision = {
        let mut cat = shared.catalog();
        let found = match &fedauth {
            Some(sid) => cat
                .login_by_sid(sid)
                .filter(|p| p.kind == 'E' || p.kind == 'X')
                .cloned(),
            None => cat.login(&user).filter(|p| p.kind == 'S').cloned(),
        };
        let ok = fedauth.is_some()
            || found.as_ref().is_some_and(|p| {
                p.sql
                    .as_ref()
                    .is_some_and(|s| crate::catalog::verify_password(&login.password, &s.hash))
            });
        match found {
            None => Err(vec![if fedauth.is_some() {
                SqlError::new(18456, &["<token-identified principal>"])
            } else {
                fail18456()
            }]),
            Some(p) => {
                let ok = ok && (fedauth.is_some() || p.sql.is_some());
                let user = p.name.clone();
                if !ok {
                    Err(vec![fail18456()])
                } else if p.disabled {
                    Err(vec![SqlError::new(18470, &[&user])])
                } else if p.sql.as_ref().is_some_and(|s| s.must_change) && login.new_password.is_none() {
                    Err(vec![SqlError::new(18488, &[&user])])
                } else {
                    if let Some(np) = &login.new_password {
                        let mut salt = [0u8; 4];
                        crate::catalog::random_bytes(&mut salt);
                        if let Some(lp) = cat.server_principals.iter_mut().find(|x| x.id == p.id)
                            && let Some(sql) = lp.sql.as_mut()
                        {
                            sql.hash = crate::catalog::hash_password(np, salt);
                            sql.must_change = false;
                        }
                    }
                    let (dbname, requested) = if login.database.is_empty() {
                        (p.default_db.clone().unwrap_or_else(|| "master".into()), false)
                    } else {
                        (login.database.clone(), true)
                    };
                    let sysadmin = cat.is_sysadmin(p.id);
                    let db = cat.db(&dbname).filter(|d| {
                        sysadmin
                            || d.owner_sid == p.sid
                            || d.user_for_sid(&p.sid).is_some()
                            || d.perms
                                .iter()
                                .any(|x| x.class == 0 && x.grantee == 2 && x.code == "CO" && x.state != 'D')
                    });
                    match db {
                        Some(d) => Ok((p.id, p.name.clone(), d.id, d.name.clone())),
                        None if requested => Err(vec![
                            SqlError::new(4060, &[&dbname]),
                            SqlError::new(18456, &[&user]),
                        ]),
                        None => Err(vec![SqlError::new(4064, &[]), SqlError::new(18456, &[&user])]),
                    }
                }
            }
        }
    };
    let (login_id, login_name, db_id, db_name) = match decision {
        Ok(x) => x,
        Err(errs) => return login_failed(wire, shared, errs).await,
    };
    let sess = finish_login(
        shared,
        wire,
        login,
        fedauth,
        login_id,
        &login_name,
        db_id,
        &db_name,
    )
    .await?;
    Ok(Some(sess))
}

/// Sends the login response (spec A6) and registers the session.
#[allow(clippy::too_many_arguments)]
async fn finish_login(
    shared: &Arc<Shared>,
    wire: &mut Wire,
    login: &tds::Login7,
    fedauth: Option<Vec<u8>>,
    login_id: i32,
    login_name: &str,
    db_id: i32,
    db_name: &str,
) -> CResult<Session> {
    // Packet size: the client's request (0 = server default), capped at 16383 under TLS.
    let mut size = if login.packet_size == 0 {
        4096
    } else {
        login.packet_size.clamp(512, 32767) as usize
    };
    if shared.tls_mode() != crate::TlsMode::None && wire.tls.is_some() {
        size = size.min(16383);
    }
    let mut t = Tokens::new();
    t.env_str(1, db_name, "master");
    t.message(
        &SqlError::new(5701, &[db_name]).with_state(2),
        &shared.identity.server_name,
        1,
    );
    t.env_bytes(7, &tds::COLLATION, &[]);
    t.env_str(2, "us_english", "");
    t.message(
        &SqlError::new(5703, &["us_english"]),
        &shared.identity.server_name,
        1,
    );
    let version = if login.tds_version >= 0x7400_0004 || login.tds_version < 0x7000_0000 {
        0x7400_0004
    } else {
        login.tds_version
    };
    let id = &shared.identity;
    t.loginack(
        version,
        "Microsoft SQL Server\0\0",
        [id.major, id.minor, (id.build >> 8) as u8, id.build as u8],
    );
    if fedauth.is_some() {
        // Ack only what the client asked for: FEDAUTH with no data (no nonce was sent).
        t.feature_ext_ack(&[(0x02, vec![])]);
    }
    t.env_str(4, &size.to_string(), &size.to_string());
    t.done(token::DONE, 0, 0, 0);
    wire.send(ptype::REPLY, &t.buf).await?;
    wire.packet_size = size;
    let mut sess = Session::new(wire.spid, login_id, login_name, db_id);
    // Every client in scope sets fUseDB (0x20); pytds and FreeTDS track the database from the
    // ENVCHANGE, so it is always sent.
    sess.use_db_env = true;
    shared.register_session(
        wire.spid,
        SessionInfo {
            login_id,
            login_name: login_name.to_string(),
            db_id,
            login_time: crate::catalog::now_ms(),
            host: login.hostname.clone(),
            program: login.app_name.clone(),
            kill: Arc::new(tokio::sync::Notify::new()),
        },
    );
    shared.count(|c| c.logins += 1);
    Ok(sess)
}

/// The ADAL workflow (spec A7): a message holding only FEDAUTHINFO (STS URL and SPN), then the
/// client's federated-auth-token packet (0x08): `DataLen u32, TokenLen u32, UTF-16LE token`.
async fn adal_token(wire: &mut Wire) -> CResult<Option<String>> {
    let sts = tds::utf16("https://login.microsoftonline.com/common/");
    let spn = tds::utf16("https://database.windows.net/");
    // Offsets count from the CountOfInfoIDs field: 4 + 2 entries of 9 bytes.
    let header = 4 + 2 * 9;
    let mut body = Vec::new();
    body.extend_from_slice(&2u32.to_le_bytes());
    for (id, data, off) in [(0x02u8, &spn, header), (0x01u8, &sts, header + spn.len())] {
        body.push(id);
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&(off as u32).to_le_bytes());
    }
    body.extend_from_slice(&spn);
    body.extend_from_slice(&sts);
    let mut msg = vec![0xEE];
    msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    msg.extend_from_slice(&body);
    wire.send(ptype::REPLY, &msg).await?;
    let Some((ty, _, payload)) = wire.read_message().await? else {
        return Ok(None);
    };
    if ty != ptype::FEDAUTH {
        return Ok(None);
    }
    let mut r = Reader::new(&payload);
    let _data_len = r.u32()?;
    let n = r.u32()? as usize;
    Ok(Some(tds::utf16_to_string(r.take(n)?)))
}

async fn request_loop(shared: &Arc<Shared>, wire: &mut Wire, sess: &mut Session) -> CResult<()> {
    let kill = shared.kill_signal(wire.spid);
    loop {
        let msg = tokio::select! {
            // A pending KILL wins over a request that arrived at the same time.
            biased;
            _ = kill.notified() => {
                // KILL or ROLLBACK IMMEDIATE: roll back and close, as the server does.
                rollback_on_close(shared, sess);
                return Ok(());
            }
            m = wire.read_message() => m?,
        };
        let Some((ty, st, payload)) = msg else {
            rollback_on_close(shared, sess);
            return Ok(());
        };
        match ty {
            ptype::ATTENTION => {
                shared.count(|c| c.attentions += 1);
                let mut t = Tokens::new();
                t.done(token::DONE, done::ATTN, 0, 0);
                wire.send(ptype::REPLY, &t.buf).await?;
                continue;
            }
            ptype::BATCH | ptype::RPC | ptype::TM => {}
            other => {
                let mut t = Tokens::new();
                t.message(
                    &SqlError::unsupported(&format!("packet type 0x{other:02X}")),
                    &shared.identity.server_name,
                    1,
                );
                t.done(token::DONE, done::ERROR, 0, 0);
                wire.send(ptype::REPLY, &t.buf).await?;
                continue;
            }
        }
        if shared.take_drop_fault() {
            rollback_on_close(shared, sess);
            return Ok(());
        }
        let mut prefix = Tokens::new();
        if st & status::RESET != 0 {
            reset_session(shared, sess, st & status::RESET_SKIPTRAN != 0);
            prefix.env_bytes(18, &[], &[]);
        }
        let mut r = Reader::new(&payload);
        tds::skip_all_headers(&mut r)?;
        let (out, rpc) = match ty {
            ptype::BATCH => {
                shared.count(|c| c.batches += 1);
                let text = tds::utf16_to_string(&payload[r.pos..]);
                tracing::debug!(spid = sess.spid, sql = %text.chars().take(500).collect::<String>(), "batch");
                (run_sql(shared, sess, |x| x.run_batch(&text), Some(&text)), false)
            }
            ptype::RPC => {
                shared.count(|c| c.rpcs += 1);
                match tds::parse_rpc(&mut r) {
                    Ok(req) => {
                        tracing::debug!(spid = sess.spid, proc = ?req.proc, params = req.params.len(), "rpc");
                        (run_rpc(shared, sess, req), true)
                    }
                    // Batched RPCs and parameter types outside the subset: an error, not a
                    // dropped connection (spec A9 says reject them in v1).
                    Err(e) => {
                        let err = SqlError::unsupported(&e.0);
                        shared.count_error(err.number);
                        let out = vec![
                            Out::Msg(err, 1),
                            Out::Done {
                                status: done::ERROR,
                                curcmd: 0,
                                count: 0,
                                inproc: true,
                            },
                        ];
                        (out, true)
                    }
                }
            }
            _ => {
                shared.count(|c| c.tm_requests += 1);
                (run_tm(shared, sess, &mut r)?, false)
            }
        };
        for o in &out {
            if let Out::Msg(e, line) = o {
                tracing::debug!(
                    spid = sess.spid,
                    number = e.number,
                    level = e.level,
                    state = e.state,
                    line,
                    "{}",
                    e.message
                );
            }
        }
        if std::mem::take(&mut sess.lose_answer) {
            // Ran (and, outside a transaction, committed); the answer never leaves.
            rollback_on_close(shared, sess);
            return Ok(());
        }
        send_response(shared, wire, prefix, out, rpc).await?;
    }
}

fn rollback_on_close(shared: &Shared, sess: &mut Session) {
    if sess.trancount > 0 {
        let mut cat = shared.catalog();
        let mut ex = Exec::new(
            &mut cat,
            sess,
            &shared.sessions,
            &shared.identity,
            &shared.next_descriptor,
        );
        ex.rollback();
    }
}

fn reset_session(shared: &Shared, sess: &mut Session, skip_tran: bool) {
    if !skip_tran {
        rollback_on_close(shared, sess);
    }
    sess.db_id = sess.login_db_id;
    sess.nocount = false;
    sess.xact_abort = false;
    sess.options.clear();
    shared.set_session_db(sess.spid, sess.db_id);
}

fn run_sql(
    shared: &Shared,
    sess: &mut Session,
    f: impl FnOnce(&mut Exec<'_>),
    text: Option<&str>,
) -> Vec<Out> {
    if let Some(t) = text
        && let Some(err) = shared.take_fail_fault(t)
    {
        shared.count_error(err.number);
        return vec![
            Out::Msg(err, 1),
            Out::Done {
                status: done::ERROR,
                curcmd: 0,
                count: 0,
                inproc: false,
            },
        ];
    }
    let delay = shared.delay_ms();
    let mut cat = shared.catalog();
    let mut ex = Exec::new(
        &mut cat,
        sess,
        &shared.sessions,
        &shared.identity,
        &shared.next_descriptor,
    );
    ex.delay_ms = delay;
    f(&mut ex);
    let out = std::mem::take(&mut ex.out);
    let kinds = std::mem::take(&mut ex.kinds);
    drop(ex);
    drop(cat);
    if let Some(t) = text
        && shared.take_drop_after_fault(t)
    {
        sess.lose_answer = true;
    }
    shared.count(|c| {
        for k in kinds {
            *c.statements.entry(k.to_string()).or_default() += 1;
        }
        for o in &out {
            if let Out::Msg(e, _) = o
                && !e.is_info()
            {
                *c.errors.entry(e.number).or_default() += 1;
            }
        }
    });
    out
}

fn run_rpc(shared: &Shared, sess: &mut Session, req: tds::RpcRequest) -> Vec<Out> {
    let is_executesql = match &req.proc {
        tds::RpcProc::Id(10) => true,
        tds::RpcProc::Name(n) => {
            n.eq_ignore_ascii_case("sp_executesql") || n.eq_ignore_ascii_case("sys.sp_executesql")
        }
        _ => false,
    };
    let text_of = |v: &Value| v.as_text().unwrap_or_default();
    if is_executesql {
        let stmt = req.params.first().map(|p| text_of(&p.value)).unwrap_or_default();
        let decls = req.params.get(1).map(|p| text_of(&p.value)).unwrap_or_default();
        let args: Vec<(Option<String>, Value)> = req
            .params
            .iter()
            .skip(2)
            .map(|p| {
                let name = if p.name.is_empty() {
                    None
                } else if p.name.starts_with('@') {
                    Some(p.name.clone())
                } else {
                    Some(format!("@{}", p.name))
                };
                (name, p.value.clone())
            })
            .collect();
        return run_sql(
            shared,
            sess,
            |x| {
                x.run_rpc_executesql(&stmt, &decls, args);
            },
            Some(&stmt),
        );
    }
    match req.proc {
        tds::RpcProc::Name(name) => {
            let args: Vec<(Option<String>, Value)> = req
                .params
                .into_iter()
                .map(|p| (if p.name.is_empty() { None } else { Some(p.name) }, p.value))
                .collect();
            run_sql(shared, sess, |x| x.run_rpc_proc(&name, args), None)
        }
        tds::RpcProc::Id(id) => {
            let err = SqlError::unsupported(&format!("RPC procedure id {id} (sp_prepare, cursors)"));
            vec![
                Out::Msg(err, 1),
                Out::Done {
                    status: done::ERROR,
                    curcmd: 0,
                    count: 0,
                    inproc: true,
                },
            ]
        }
    }
}

fn run_tm(shared: &Shared, sess: &mut Session, r: &mut Reader<'_>) -> CResult<Vec<Out>> {
    let kind = r.u16()?;
    let mut cat = shared.catalog();
    let mut ex = Exec::new(
        &mut cat,
        sess,
        &shared.sessions,
        &shared.identity,
        &shared.next_descriptor,
    );
    let result = match kind {
        5 => {
            ex.begin_tran();
            Ok(())
        }
        7 | 8 => {
            let _name = r.b_varchar().unwrap_or_default();
            let flags = r.u8().unwrap_or(0);
            let res = if kind == 7 {
                ex.commit().map_err(|_| SqlError::new(3902, &[]))
            } else if ex.sess.trancount == 0 {
                Err(SqlError::new(3903, &[]))
            } else {
                ex.rollback();
                Ok(())
            };
            if res.is_ok() && flags & 0x01 != 0 {
                ex.begin_tran();
            }
            res
        }
        9 => Ok(()),
        other => Err(SqlError::unsupported(&format!(
            "transaction manager request {other}"
        ))),
    };
    let mut out = std::mem::take(&mut ex.out);
    match result {
        Ok(()) => out.push(Out::Done {
            status: 0,
            curcmd: 0,
            count: 0,
            inproc: false,
        }),
        Err(e) => {
            out.push(Out::Msg(e, 1));
            out.push(Out::Done {
                status: done::ERROR,
                curcmd: 0,
                count: 0,
                inproc: false,
            });
        }
    }
    Ok(out)
}

/// Turns engine output into tokens and sends it; honours delays and attention during them.
async fn send_response(
    shared: &Shared,
    wire: &mut Wire,
    prefix: Tokens,
    mut out: Vec<Out>,
    rpc: bool,
) -> CResult<()> {
    let server = shared.identity.server_name.clone();
    // Never leave tokens after the final DONE (tiberius stops reading there).
    if !rpc
        && !matches!(
            out.iter().rev().find(|o| !matches!(o, Out::Delay(_))),
            Some(Out::Done { inproc: false, .. })
        )
    {
        out.push(Out::Done {
            status: 0,
            curcmd: 0,
            count: 0,
            inproc: false,
        });
    }
    let last_done = out.iter().rposition(|o| matches!(o, Out::Done { .. }));
    let mut t = prefix;
    let mut any_error = false;
    for (i, o) in out.iter().enumerate() {
        match o {
            Out::Rows(cols, rows) => {
                t.colmetadata(cols);
                for r in rows {
                    t.row(cols, r);
                }
            }
            Out::Done {
                status,
                curcmd,
                count,
                inproc,
            } => {
                any_error |= status & done::ERROR != 0;
                let more = rpc || Some(i) != last_done;
                let st = status | if more { done::MORE } else { 0 };
                let id = if rpc || *inproc {
                    token::DONEINPROC
                } else {
                    token::DONE
                };
                let id = if !rpc && *inproc && Some(i) == last_done {
                    token::DONE
                } else {
                    id
                };
                t.done(id, st, *curcmd, *count);
            }
            Out::Msg(e, line) => t.message(e, &server, *line),
            Out::EnvDb(new, old) => t.env_str(1, new, old),
            Out::EnvBegin(d) => t.env_bytes(8, &d.to_le_bytes(), &[]),
            Out::EnvCommit(d) => t.env_bytes(9, &[], &d.to_le_bytes()),
            Out::EnvRollback(d) => t.env_bytes(10, &[], &d.to_le_bytes()),
            Out::Delay(ms) => {
                // Wait, but answer an attention at once: DONE_ATTN ends the response.
                let sleep = tokio::time::sleep(Duration::from_millis(*ms));
                tokio::pin!(sleep);
                loop {
                    // The attention may already be buffered (sent right behind the request).
                    if wire.tls.is_some() {
                        while wire.feed_record()? {}
                    }
                    let buf = if wire.tls.is_some() {
                        &mut wire.plain
                    } else {
                        &mut wire.raw
                    };
                    if buf.first() == Some(&ptype::ATTENTION) && take_packet(buf)?.is_some() {
                        shared.count(|c| c.attentions += 1);
                        t.done(token::DONE, done::ATTN, 0, 0);
                        return wire.send(ptype::REPLY, &t.buf).await;
                    }
                    tokio::select! {
                        _ = &mut sleep => break,
                        more = wire.fill() => {
                            if !more? {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
    }
    if rpc {
        t.return_status(0);
        t.done(token::DONEPROC, if any_error { done::ERROR } else { 0 }, 0xE0, 0);
    }
    wire.send(ptype::REPLY, &t.buf).await
}
