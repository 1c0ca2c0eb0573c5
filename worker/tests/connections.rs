//! Connection behaviour of the pool. One `Routing` redirect is followed (the Azure SQL gateway "Redirect" policy, failover
//! groups); a second one is an error. The emulator has no routing, so a tiny loopback
//! "gateway" answers PRELOGIN and LOGIN7 with a LOGINACK plus ENVCHANGE 20 pointing at the
//! emulator (or at itself), built with the emulator's TDS helpers.

use mssql_emulator::tds::{self, Tokens, ptype};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use worker::{
    exec::{ServerConfig, SqlPool, TlsMode, TlsSettings, credentials::SecretCredentials},
    metrics::Metrics,
    sql::{Password, error::ErrorKind},
};

/// Reads one message (packets up to EOM).
async fn read_message(s: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    loop {
        let mut header = [0u8; 8];
        s.read_exact(&mut header).await?;
        let len = u16::from_be_bytes([header[2], header[3]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(8)];
        s.read_exact(&mut body).await?;
        if header[1] & tds::status::EOM != 0 {
            return Ok(());
        }
    }
}

fn routing_envchange(host: &str, port: u16) -> Vec<u8> {
    let host16: Vec<u8> = host.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut value = vec![0u8]; // protocol: TCP
    value.extend_from_slice(&port.to_le_bytes());
    value.extend_from_slice(&(host.encode_utf16().count() as u16).to_le_bytes());
    value.extend_from_slice(&host16);
    let mut body = vec![20u8]; // ENVCHANGE type: routing
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(&value);
    body.extend_from_slice(&0u16.to_le_bytes()); // old value: empty
    let mut token = vec![0xE3];
    token.extend_from_slice(&(body.len() as u16).to_le_bytes());
    token.extend_from_slice(&body);
    token
}

/// Serves redirects to `target` (None: to itself) until dropped; counts connections.
async fn gateway(
    target: Option<std::net::SocketAddr>,
) -> (std::net::SocketAddr, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let target = target.unwrap_or(addr);
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if read_message(&mut s).await.is_err() {
                    return;
                }
                // Encryption NOT_SUP: no TLS with this client.
                let prelogin = tds::frame(ptype::REPLY, 0, &tds::build_prelogin((16, 0, 0), 2, None), 4096);
                if s.write_all(&prelogin).await.is_err() || read_message(&mut s).await.is_err() {
                    return;
                }
                let mut t = Tokens::new();
                t.loginack(0x7400_0004, "gateway", [16, 0, 0, 0]);
                t.buf
                    .extend_from_slice(&routing_envchange(&target.ip().to_string(), target.port()));
                t.done(tds::token::DONE, 0, 0, 0);
                let _ = s.write_all(&tds::frame(ptype::REPLY, 0, &t.buf, 4096)).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, count, task)
}

fn pool(addr: std::net::SocketAddr) -> SqlPool {
    pool_with(
        addr,
        Duration::from_secs(10),
        Arc::new(SecretCredentials::new(
            "sa",
            Password::new(mssql_emulator::DEFAULT_SA_PASSWORD),
        )),
    )
}

fn pool_with(
    addr: std::net::SocketAddr,
    statement_timeout: Duration,
    credentials: Arc<dyn worker::exec::credentials::CredentialSource>,
) -> SqlPool {
    SqlPool::new(
        ServerConfig {
            host: addr.ip().to_string(),
            port: addr.port(),
            instance: None,
            tls: TlsSettings {
                mode: TlsMode::Disabled,
                ca_pem: None,
                hostname: None,
                trust_server_certificate: false,
            },
            connect_timeout: Duration::from_secs(10),
            statement_timeout,
        },
        credentials,
        Arc::new(Metrics::new()),
    )
}

#[tokio::test]
async fn one_redirect_is_followed_and_a_second_is_refused() {
    let emu = mssql_emulator::Emulator::start(mssql_emulator::Config {
        tls: mssql_emulator::TlsMode::None,
        ..Default::default()
    })
    .await
    .expect("emulator");
    let (gw, hits, task) = gateway(Some(emu.addr())).await;
    let p = pool(gw);
    p.ping().await.expect("redirected to the emulator");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the gateway saw one login");
    assert_eq!(p.connections_opened(), 1);
    assert_eq!(emu.counters().logins, 1, "then the emulator");
    p.ping().await.expect("cached connection");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the redirect is not repeated for a cached connection"
    );

    let (loop_gw, loop_hits, loop_task) = gateway(None).await;
    let e = pool(loop_gw).ping().await.expect_err("a second redirect");
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(e.message.contains("redirected more than once"), "{e}");
    // Two connections per attempt (the first and the one hop); the read is retried once.
    assert_eq!(loop_hits.load(Ordering::SeqCst), 4);
    task.abort();
    loop_task.abort();
    emu.shutdown().await;
}

/// Counts refreshes; yields the emulator's sa login.
struct Counting {
    inner: SecretCredentials,
    refreshes: AtomicU64,
}

impl worker::exec::credentials::CredentialSource for Counting {
    fn credential(
        &self,
    ) -> worker::exec::credentials::BoxFuture<
        '_,
        Result<worker::exec::credentials::Credential, worker::exec::credentials::CredentialError>,
    > {
        self.inner.credential()
    }
    fn refresh(
        &self,
    ) -> worker::exec::credentials::BoxFuture<'_, Result<(), worker::exec::credentials::CredentialError>>
    {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        self.inner.refresh()
    }
    fn label(&self) -> &'static str {
        "Counting"
    }
}

/// A statement that does not answer within the statement timeout fails as Transient, the
/// stream is discarded, and the next statement gets a new connection. A refused login asks
/// the credential source to refresh.
#[tokio::test]
async fn statements_are_bounded_and_login_failures_refresh_credentials() {
    let emu = mssql_emulator::Emulator::start(mssql_emulator::Config {
        tls: mssql_emulator::TlsMode::None,
        ..Default::default()
    })
    .await
    .expect("emulator");
    let creds = Arc::new(Counting {
        inner: SecretCredentials::new("sa", Password::new(mssql_emulator::DEFAULT_SA_PASSWORD)),
        refreshes: AtomicU64::new(0),
    });
    let p = pool_with(emu.addr(), Duration::from_secs(1), creds.clone());
    p.ping().await.expect("first");
    emu.set_faults(mssql_emulator::FaultRequest {
        delay_ms: Some(5_000),
        ..Default::default()
    });
    let e = p
        .execute(&worker::sql::Statement::new("test", None, "SELECT 1".into()))
        .await
        .expect_err("too slow");
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    emu.set_faults(mssql_emulator::FaultRequest {
        delay_ms: Some(0),
        ..Default::default()
    });
    p.ping().await.expect("after the timeout");
    assert_eq!(p.connections_opened(), 2, "the timed-out stream was not reused");

    emu.set_faults(mssql_emulator::FaultRequest {
        refuse_logins_secs: Some(600),
        ..Default::default()
    });
    let fresh = pool_with(emu.addr(), Duration::from_secs(5), creds.clone());
    let e = fresh.ping().await.expect_err("refused");
    assert_eq!((e.kind, e.number), (ErrorKind::AuthFailed, Some(18456)));
    assert!(creds.refreshes.load(Ordering::SeqCst) >= 1, "asked to refresh");
    emu.shutdown().await;
}

/// Hands out an Entra token that has expired until asked to refresh, then a valid one: what
/// a token cache returns when the server's clock disagrees with the token's lifetime.
struct ExpiringToken {
    oid: &'static str,
    key: &'static [u8],
    refreshed: AtomicU64,
}

impl worker::exec::credentials::CredentialSource for ExpiringToken {
    fn credential(
        &self,
    ) -> worker::exec::credentials::BoxFuture<
        '_,
        Result<worker::exec::credentials::Credential, worker::exec::credentials::CredentialError>,
    > {
        let exp: i64 = if self.refreshed.load(Ordering::SeqCst) == 0 {
            1_000_000_000
        } else {
            4_000_000_000
        };
        let token =
            mssql_emulator::fedauth::sign_hs256(&serde_json::json!({"oid": self.oid, "exp": exp}), self.key);
        Box::pin(async move { Ok(worker::exec::credentials::Credential::Token(Password::new(token))) })
    }
    fn refresh(
        &self,
    ) -> worker::exec::credentials::BoxFuture<'_, Result<(), worker::exec::credentials::CredentialError>>
    {
        self.refreshed.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
    fn label(&self) -> &'static str {
        "ExpiringToken"
    }
}

/// The server refuses an expired Entra token (18456); the pool asks the source for a fresh
/// one and logs in again at once, so the caller never sees the failure. A fixed password is
/// not retried (its source cannot yield anything new).
#[tokio::test]
async fn an_expired_token_is_replaced_and_the_login_retried_at_once() {
    const KEY: &[u8] = b"entra-test-key";
    let emu = mssql_emulator::Emulator::start(mssql_emulator::Config {
        tls: mssql_emulator::TlsMode::None,
        fedauth_hs256_key: Some(KEY.to_vec()),
        ..Default::default()
    })
    .await
    .expect("emulator");
    let oid = "6a1b3a7e-1f0c-4c55-9d1e-2f3a4b5c6d7e";
    let admin = pool(emu.addr());
    for sql in [
        format!("CREATE LOGIN [worker-app] FROM EXTERNAL PROVIDER WITH OBJECT_ID = '{oid}'"),
        "ALTER SERVER ROLE sysadmin ADD MEMBER [worker-app]".to_owned(),
    ] {
        admin
            .execute(&worker::sql::Statement::new("setup", None, sql))
            .await
            .expect("setup");
    }
    let source = Arc::new(ExpiringToken {
        oid,
        key: KEY,
        refreshed: AtomicU64::new(0),
    });
    let p = pool_with(emu.addr(), Duration::from_secs(5), source.clone());
    let failures_before = emu.counters().login_failures;
    p.ping().await.expect("the retry with a fresh token logs in");
    assert_eq!(source.refreshed.load(Ordering::SeqCst), 1, "one refresh");
    assert_eq!(
        emu.counters().login_failures - failures_before,
        1,
        "the expired token was refused once"
    );
    assert_eq!(p.connections_opened(), 1);

    // A fixed SQL password that is wrong: refused once, not retried.
    let wrong = pool_with(
        emu.addr(),
        Duration::from_secs(5),
        Arc::new(SecretCredentials::new("sa", Password::new("not-the-password"))),
    );
    let before = emu.counters().login_failures;
    let e = wrong.ping().await.expect_err("wrong password");
    assert_eq!(e.number, Some(18456));
    // ping() is a read, retried once on a broken connection: two attempts, no extra retry.
    assert_eq!(
        emu.counters().login_failures - before,
        2,
        "no retry for a fixed password"
    );
    emu.shutdown().await;
}

/// While SQL Server is down (nothing listens), the error says which server cannot be reached:
/// that text is what a resource's Synced condition shows during an outage.
#[tokio::test]
async fn an_unreachable_server_is_named_in_the_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = pool(addr).ping().await.expect_err("nothing listens there");
    assert_eq!(err.kind, ErrorKind::Transient, "{err:?}");
    assert!(
        err.message
            .contains(&format!("cannot connect to SQL Server at {addr}")),
        "{err:?}"
    );
}
