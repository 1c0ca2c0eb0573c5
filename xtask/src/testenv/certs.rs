//! Certificates and keys for the local control plane, made with rcgen: one CA (serves and
//! verifies clients), the apiserver's serving certificate for loopback, client certificates for
//! the admin (`system:masters`) and the kubelet, and the ServiceAccount signing key.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::{net::IpAddr, path::Path};

fn write(dir: &Path, name: &str, data: &str) -> Result<()> {
    std::fs::write(dir.join(name), data).with_context(|| format!("writing {}/{name}", dir.display()))
}

fn client(dir: &Path, name: &str, cn: &str, org: &str, issuer: &Issuer<'_, KeyPair>) -> Result<()> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name.push(DnType::OrganizationName, org);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = p.signed_by(&key, issuer)?;
    write(dir, &format!("{name}.crt"), &cert.pem())?;
    write(dir, &format!("{name}.key"), &key.serialize_pem())
}

/// Writes ca, apiserver, admin and kubelet `.crt`/`.key`, and `sa.key`/`sa.pub` to `dir`
/// (a fresh set each call).
pub fn generate(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "provider-sqlserver testenv CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    write(dir, "ca.crt", &ca_cert.pem())?;
    write(dir, "ca.key", &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ])?;
    p.subject_alt_names
        .push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    p.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = p.signed_by(&key, &issuer)?;
    write(dir, "apiserver.crt", &cert.pem())?;
    write(dir, "apiserver.key", &key.serialize_pem())?;

    // The kubelet API (kubectl logs): the apiserver dials the node's InternalIP, 127.0.0.1.
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(vec!["localhost".to_string()])?;
    p.subject_alt_names
        .push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    p.distinguished_name
        .push(DnType::CommonName, "testenv-kubelet-serving");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = p.signed_by(&key, &issuer)?;
    write(dir, "kubelet-serving.crt", &cert.pem())?;
    write(dir, "kubelet-serving.key", &key.serialize_pem())?;

    client(dir, "admin", "testenv-admin", "system:masters", &issuer)?;
    // The kubelet acts for the whole node (it reads any pod's Secrets and mints any pod's
    // tokens), so it gets admin rights rather than a node identity the Node authorizer would
    // have to map back to pods.
    client(dir, "kubelet", "testenv-kubelet", "system:masters", &issuer)?;

    // ES256 ServiceAccount signing key; the apiserver verifies with the public half.
    let sa = KeyPair::generate()?;
    write(dir, "sa.key", &sa.serialize_pem())?;
    write(dir, "sa.pub", &sa.public_key_pem())
}
