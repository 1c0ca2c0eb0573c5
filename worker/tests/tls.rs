//! TLS towards SQL Server with a test CA: the emulator serves a certificate for
//! `sql.test.local` and 127.0.0.1 signed by a CA made here. `Required` (TLS inside PRELOGIN)
//! and `Strict` (TDS 8.0, TLS first) connect when the worker trusts that CA; a different CA
//! or a host name the certificate lacks is refused with a reason that names the problem.

use mssql_emulator::{Config, Emulator, TlsMode as ServerTls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use std::{sync::Arc, time::Duration};
use worker::{
    exec::{ServerConfig, SqlPool, TlsMode, TlsSettings, credentials::SecretCredentials},
    metrics::Metrics,
    sql::{Password, error::ErrorKind},
};

/// A CA: its PEM and what signs with it.
fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let pem = p.self_signed(&key).expect("CA certificate").pem();
    (pem, Issuer::new(p, key))
}

fn pool(port: u16, mode: TlsMode, ca_pem: Option<&str>, hostname: Option<&str>, trust: bool) -> SqlPool {
    SqlPool::new(
        ServerConfig {
            host: "127.0.0.1".into(),
            port,
            instance: None,
            tls: TlsSettings {
                mode,
                ca_pem: ca_pem.map(|p| p.as_bytes().to_vec()),
                hostname: hostname.map(str::to_owned),
                trust_server_certificate: trust,
            },
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(10),
        },
        Arc::new(SecretCredentials::new(
            "sa",
            Password::new(mssql_emulator::DEFAULT_SA_PASSWORD),
        )),
        Arc::new(Metrics::new()),
    )
}

#[tokio::test]
async fn certificate_checks_with_a_test_ca() {
    let (ca_pem, issuer) = ca("worker test CA");
    let (wrong_ca_pem, _) = ca("some other CA");
    let server_key = KeyPair::generate().expect("server key");
    let mut p = CertificateParams::new(vec!["sql.test.local".to_string()]).expect("server params");
    p.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    p.distinguished_name.push(DnType::CommonName, "sql.test.local");
    let server_cert = p.signed_by(&server_key, &issuer).expect("server certificate");
    let dir = std::env::temp_dir().join(format!("worker-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("server.crt"), server_cert.pem()).expect("write cert");
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("write key");

    let emu = Emulator::start(Config {
        tls: ServerTls::Required,
        cert: Some((dir.join("server.crt"), dir.join("server.key"))),
        ..Config::default()
    })
    .await
    .expect("emulator");
    let port = emu.addr().port();

    // (why, mode, CA, host name in certificate, trust, expected failure)
    type Case<'a> = (
        &'a str,
        TlsMode,
        Option<&'a str>,
        Option<&'a str>,
        bool,
        Option<ErrorKind>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "Required with the CA, checked against the IP SAN",
            TlsMode::Required,
            Some(&ca_pem),
            None,
            false,
            None,
        ),
        (
            "Strict (TDS 8.0) with the CA and the certificate's DNS name",
            TlsMode::Strict,
            Some(&ca_pem),
            Some("sql.test.local"),
            false,
            None,
        ),
        (
            "Required with another CA",
            TlsMode::Required,
            Some(&wrong_ca_pem),
            None,
            false,
            Some(ErrorKind::CertificateUntrusted),
        ),
        (
            "Strict with another CA",
            TlsMode::Strict,
            Some(&wrong_ca_pem),
            Some("sql.test.local"),
            false,
            Some(ErrorKind::CertificateUntrusted),
        ),
        (
            "the right CA but a name the certificate lacks",
            TlsMode::Required,
            Some(&ca_pem),
            Some("wrong.test.local"),
            false,
            Some(ErrorKind::CertificateNameMismatch),
        ),
        (
            "trustServerCertificate skips the checks",
            TlsMode::Required,
            None,
            None,
            true,
            None,
        ),
    ];
    for (why, mode, ca, hostname, trust, expected) in cases {
        let result = pool(port, mode, ca, hostname, trust).ping().await;
        match (expected, result) {
            (None, Ok(())) => {}
            (None, Err(e)) => panic!("{why}: expected a connection, got {e}"),
            (Some(kind), Ok(())) => panic!("{why}: expected {kind}, but it connected"),
            (Some(kind), Err(e)) => {
                assert_eq!(e.kind, kind, "{why}: {e}");
                assert!(
                    e.message.contains("tls."),
                    "{why}: the message names the setting to fix: {e}"
                );
            }
        }
    }
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
