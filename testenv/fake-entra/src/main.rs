//! `fake-entra`: a test double of the Entra ID token endpoint for workload identity
//! federation, on loopback, over HTTPS with its own test CA.
//!
//! ```text
//! worker (azure_identity WorkloadIdentityCredential, AZURE_AUTHORITY_HOST=https://127.0.0.1:<port>/)
//!   POST /<tenant>/oauth2/v2.0/token  client_id, client_assertion = projected ServiceAccount token
//!     ─▶ verify the assertion: RS256 or ES256 against the apiserver's JWKS (/openid/v1/jwks, fetched over
//!        loopback with the environment's kubeconfig), issuer, audience api://AzureADTokenExchange,
//!        expiry, and `sub` = the federated subject configured for that client id
//!     ─▶ an access token for https://database.windows.net/ (HS256 with the key the SQL Server
//!        emulator verifies), oid = the app's object id ─▶ the emulator maps it to the external login
//! ```
//!
//! Errors are answered as Entra answers them (`error`, `error_description` with the AADSTS
//! code, `error_codes`), so the worker's message names the real cause. Every run makes a new
//! CA and key; the CA is written to `--ca-out` for the test to put in a ConfigMap.

#![forbid(unsafe_code)]

use anyhow::{Context, Result, bail};
use clap::Parser;
use mssql_emulator::fedauth::{base64url, sign_hs256};
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::RwLock,
};

/// Audience of federated ServiceAccount tokens for Entra.
const FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Test double of the Entra ID token endpoint (workload identity federation).
#[derive(Parser, Debug)]
struct Args {
    /// Listen address (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write the PEM CA that signed this run's server certificate.
    #[arg(long)]
    ca_out: PathBuf,
    /// HS256 key of the access tokens (the SQL Server emulator's --fedauth-hs256-key).
    #[arg(long, env = "FAKE_ENTRA_SIGNING_KEY", hide_env_values = true)]
    signing_key: String,
    /// Issuer of the apiserver's ServiceAccount tokens (its --service-account-issuer).
    #[arg(long)]
    issuer: String,
    /// A federated credential: `<client id>=<subject>=<object id>`, e.g.
    /// `1111…=system:serviceaccount:ns:sa=2222…` (repeatable).
    #[arg(long = "app", value_parser = app_arg)]
    apps: Vec<App>,
    /// Lifetime of the access tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_lifetime: u64,
    /// Stop by itself after this many seconds (a forgotten process does not linger).
    #[arg(long, default_value_t = 3600)]
    max_lifetime: u64,
}

/// An Entra application with one federated identity credential.
#[derive(Debug, Clone)]
struct App {
    client_id: String,
    subject: String,
    object_id: String,
}

fn app_arg(text: &str) -> Result<App, String> {
    let mut parts = text.splitn(3, '=');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(c), Some(s), Some(o)) if !c.is_empty() && !s.is_empty() && !o.is_empty() => Ok(App {
            client_id: c.to_lowercase(),
            subject: s.to_owned(),
            object_id: o.to_lowercase(),
        }),
        _ => Err(format!("{text:?} is not <client id>=<subject>=<object id>")),
    }
}

/// An OAuth error as Entra returns it.
#[derive(Debug)]
struct OAuthError {
    status: u16,
    error: &'static str,
    code: u32,
    description: String,
}

fn oauth(status: u16, error: &'static str, code: u32, description: impl Into<String>) -> OAuthError {
    OAuthError {
        status,
        error,
        code,
        description: format!("AADSTS{code}: {}", description.into()),
    }
}

/// A public key from the JWKS: RSA (RS256, what most clusters use) or P-256 (ES256, what
/// the local environment's rcgen-made key is).
#[derive(Debug, Clone)]
enum Jwk {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256 { point: Vec<u8> },
}

impl Jwk {
    fn parse(k: &serde_json::Value) -> Option<(String, Jwk)> {
        let kid = k["kid"].as_str()?.to_owned();
        let b = |f: &str| k[f].as_str().and_then(|v| base64url(v).ok());
        match (k["kty"].as_str()?, k["crv"].as_str()) {
            ("RSA", _) => Some((
                kid,
                Jwk::Rsa {
                    n: b("n")?,
                    e: b("e")?,
                },
            )),
            ("EC", Some("P-256")) => {
                let mut point = vec![4u8];
                point.extend(b("x")?);
                point.extend(b("y")?);
                Some((kid, Jwk::P256 { point }))
            }
            _ => None,
        }
    }

    /// Verifies a JWS signature for `alg` over `message`.
    fn verify(&self, alg: &str, message: &[u8], signature: &[u8]) -> bool {
        use aws_lc_rs::signature::{self, UnparsedPublicKey};
        match (self, alg) {
            (Jwk::Rsa { n, e }, "RS256") => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            (Jwk::P256 { point }, "ES256") => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            _ => false,
        }
    }
}

struct State {
    args: Args,
    /// Federated credentials: those of `--app`, plus any added at run time.
    apps: RwLock<Vec<App>>,
    client: kube::Client,
    /// kid → the apiserver's ServiceAccount signing keys.
    keys: RwLock<HashMap<String, Jwk>>,
    issued: AtomicU64,
    /// Tokens issued per federated subject (a worker's ServiceAccount).
    by_subject: RwLock<HashMap<String, u64>>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl State {
    /// Re-reads the apiserver's JWKS (on start and on an unknown `kid`: keys can rotate).
    async fn fetch_keys(&self) -> Result<()> {
        let request = http::Request::get("/openid/v1/jwks").body(Vec::new())?;
        let text = self
            .client
            .request_text(request)
            .await
            .context("GET /openid/v1/jwks")?;
        let jwks: serde_json::Value = serde_json::from_str(&text).context("JWKS is not JSON")?;
        let mut keys = HashMap::new();
        for k in jwks["keys"].as_array().into_iter().flatten() {
            if let Some((kid, key)) = Jwk::parse(k) {
                keys.insert(kid, key);
            }
        }
        if keys.is_empty() {
            bail!("the apiserver's JWKS holds no RSA or P-256 key: {text}");
        }
        *self.keys.write().await = keys;
        Ok(())
    }

    /// Checks a federated ServiceAccount token and returns its `sub`.
    async fn verify_assertion(&self, token: &str) -> Result<String, OAuthError> {
        let invalid = |m: &str| oauth(401, "invalid_client", 50027, format!("Invalid JWT token: {m}"));
        let parts: Vec<&str> = token.split('.').collect();
        let [head, body, sig] = parts.as_slice() else {
            return Err(invalid("not a JWS compact token"));
        };
        let decode = |s: &str| -> Result<serde_json::Value, OAuthError> {
            let bytes = base64url(s).map_err(|_| invalid("bad base64url"))?;
            serde_json::from_slice(&bytes).map_err(|_| invalid("not JSON"))
        };
        let header = decode(head)?;
        let claims = decode(body)?;
        let alg = header["alg"].as_str().unwrap_or_default().to_owned();
        if alg != "RS256" && alg != "ES256" {
            return Err(invalid("algorithm is neither RS256 nor ES256"));
        }
        let kid = header["kid"].as_str().unwrap_or_default().to_owned();
        let mut key = self.keys.read().await.get(&kid).cloned();
        if key.is_none() {
            if let Err(e) = self.fetch_keys().await {
                tracing::warn!(error = %format!("{e:#}"), "cannot refresh the JWKS");
            }
            key = self.keys.read().await.get(&kid).cloned();
        }
        let Some(key) = key else {
            return Err(invalid("unknown signing key"));
        };
        let signature = base64url(sig).map_err(|_| invalid("bad signature encoding"))?;
        if !key.verify(&alg, format!("{head}.{body}").as_bytes(), &signature) {
            return Err(invalid("signature does not verify with the issuer's keys"));
        }
        if claims["iss"].as_str() != Some(self.args.issuer.as_str()) {
            return Err(oauth(
                400,
                "invalid_request",
                700211,
                format!(
                    "No matching federated identity record found for presented assertion issuer '{}'.",
                    claims["iss"].as_str().unwrap_or_default()
                ),
            ));
        }
        let audiences: Vec<&str> = match &claims["aud"] {
            serde_json::Value::String(s) => vec![s.as_str()],
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        if !audiences.contains(&FEDERATION_AUDIENCE) {
            return Err(oauth(
                400,
                "invalid_request",
                700212,
                format!(
                    "No matching federated identity record found for presented assertion audience '{}'.",
                    audiences.join(",")
                ),
            ));
        }
        let t = now();
        if claims["exp"].as_i64().is_none_or(|exp| exp < t)
            || claims["nbf"].as_i64().is_some_and(|nbf| nbf > t + 60)
        {
            return Err(oauth(
                400,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.",
            ));
        }
        claims["sub"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| invalid("no sub claim"))
    }

    async fn token(
        &self,
        tenant: &str,
        form: &HashMap<String, String>,
    ) -> Result<serde_json::Value, OAuthError> {
        let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        if field("grant_type") != "client_credentials" {
            return Err(oauth(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            ));
        }
        if field("client_assertion_type") != ASSERTION_TYPE {
            return Err(oauth(
                400,
                "invalid_request",
                900144,
                "The request body must contain client_assertion_type.",
            ));
        }
        let scope = field("scope");
        let Some(resource) = scope.strip_suffix(".default") else {
            return Err(oauth(
                400,
                "invalid_scope",
                70011,
                format!("The provided value for scope {scope} is not valid."),
            ));
        };
        let client_id = field("client_id").to_lowercase();
        let apps = self.apps.read().await.clone();
        if !apps.iter().any(|a| a.client_id == client_id) {
            return Err(oauth(
                400,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
                ),
            ));
        }
        let subject = self.verify_assertion(field("client_assertion")).await?;
        // An app may have several federated credentials (one per ServiceAccount).
        let Some(app) = apps
            .iter()
            .find(|a| a.client_id == client_id && a.subject == subject)
        else {
            return Err(oauth(
                400,
                "invalid_request",
                700213,
                format!(
                    "No matching federated identity record found for presented assertion subject '{subject}'."
                ),
            ));
        };
        let t = now();
        let lifetime = self.args.token_lifetime as i64;
        let claims = serde_json::json!({
            "aud": resource,
            "iss": format!("https://sts.windows.net/{tenant}/"),
            "iat": t, "nbf": t, "exp": t + lifetime,
            "tid": tenant,
            "oid": app.object_id,
            "sub": app.object_id,
            "appid": app.client_id,
            "idtyp": "app",
        });
        let access_token = sign_hs256(&claims, self.args.signing_key.as_bytes());
        let n = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
        *self.by_subject.write().await.entry(subject.clone()).or_default() += 1;
        tracing::info!(client_id = %app.client_id, %subject, issued = n, "issued an access token");
        Ok(serde_json::json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        }))
    }
}

/// Decodes `application/x-www-form-urlencoded`.
fn form(body: &str) -> HashMap<String, String> {
    let decode = |s: &str| -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Reads one HTTP/1.1 request (head and a Content-Length body, at most 64 KiB).
async fn read_request<S: AsyncReadExt + Unpin>(stream: &mut S) -> Result<(String, String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 65536 {
            bail!("request head too large");
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (
        first.next().unwrap_or_default().to_owned(),
        first.next().unwrap_or_default().to_owned(),
    );
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    if length > 65536 {
        bail!("request body too large");
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed in the body");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok((method, path, String::from_utf8_lossy(&body).into_owned()))
}

async fn handle(state: &State, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", [tenant, "oauth2", "v2.0", "token"]) => match state.token(tenant, &form(body)).await {
            Ok(v) => (200, v),
            Err(e) => {
                tracing::warn!(code = e.code, description = %e.description, "refused a token request");
                (
                    e.status,
                    serde_json::json!({
                        "error": e.error,
                        "error_description": e.description,
                        "error_codes": [e.code],
                    }),
                )
            }
        },
        // What `az identity federated-credential create` does: trust one more subject for an
        // app, at run time (a test fixes a wrong identity this way, without restarts).
        ("POST", ["federated-credentials"]) => {
            let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let field = |k: &str| v[k].as_str().map(str::to_owned).unwrap_or_default();
            match app_arg(&format!(
                "{}={}={}",
                field("clientId"),
                field("subject"),
                field("objectId")
            )) {
                Ok(app) => {
                    tracing::info!(client_id = %app.client_id, subject = %app.subject, "federated credential added");
                    state.apps.write().await.push(app);
                    (201, serde_json::json!({}))
                }
                Err(e) => (400, serde_json::json!({"error": e})),
            }
        }
        // For tests: how many tokens were issued (a refresh shows up here).
        ("GET", ["stats"]) => (
            200,
            serde_json::json!({
                "issued": state.issued.load(Ordering::Relaxed),
                "bySubject": *state.by_subject.read().await,
            }),
        ),
        _ => (404, serde_json::json!({"error": "not_found"})),
    }
}

async fn serve(state: Arc<State>, listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (state, acceptor) = (state.clone(), acceptor.clone());
        tokio::spawn(async move {
            let exchange = async {
                let mut tls = acceptor.accept(tcp).await?;
                let (method, path, body) = read_request(&mut tls).await?;
                let (status, json) = handle(&state, &method, &path, &body).await;
                let text = json.to_string();
                let reason = if status < 300 { "OK" } else { "Error" };
                let response = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                tls.write_all(response.as_bytes()).await?;
                tls.shutdown().await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(30), exchange).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %format!("{e:#}"), "connection failed"),
                Err(_) => tracing::debug!("connection timed out"),
            }
        });
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost, new every run.
fn certificates() -> Result<(String, rustls::ServerConfig)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fake-entra test CA");
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    leaf.distinguished_name.push(DnType::CommonName, "fake-entra");
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der())
        .map_err(|e| anyhow::anyhow!("server key: {e}"))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf_cert.der().clone(), ca_cert.der().clone()], key)?;
    Ok((ca_cert.pem(), config))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        bail!("--listen must be a loopback address");
    }
    let (ca_pem, tls) = certificates()?;
    std::fs::write(&args.ca_out, &ca_pem).with_context(|| format!("writing {}", args.ca_out.display()))?;
    let client = kube::Client::try_default().await.context("Kubernetes client")?;
    let max_lifetime = Duration::from_secs(args.max_lifetime);
    let state = Arc::new(State {
        apps: RwLock::new(args.apps.clone()),
        args,
        client,
        keys: RwLock::new(HashMap::new()),
        issued: AtomicU64::new(0),
        by_subject: RwLock::new(HashMap::new()),
    });
    state.fetch_keys().await?;
    let listener = TcpListener::bind(state.args.listen).await?;
    let addr = listener.local_addr()?;
    // One machine-readable line for whoever started us.
    println!("{}", serde_json::json!({"url": format!("https://{addr}/")}));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    tokio::select! {
        _ = serve(state, listener, acceptor) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = tokio::time::sleep(max_lifetime) => tracing::info!("maximum lifetime reached; stopping"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        let f = form("a=1&scope=https%3A%2F%2Fdatabase.windows.net%2F.default&b=x+y&c=%zz");
        assert_eq!(
            f["scope"], "https://database.windows.net/.default",
            "percent-decoded"
        );
        assert_eq!(f["b"], "x y", "plus is a space");
        assert_eq!(f["c"], "%zz", "a bad escape is kept");
    }

    #[test]
    fn app_arguments() {
        let a = app_arg("AAAA=system:serviceaccount:ns:sa=BBBB").expect("valid");
        assert_eq!(
            (a.client_id.as_str(), a.subject.as_str(), a.object_id.as_str()),
            ("aaaa", "system:serviceaccount:ns:sa", "bbbb"),
            "ids compare case-insensitively, as GUIDs"
        );
        assert!(app_arg("only=two").is_err());
    }

    #[test]
    fn es256_signatures_from_the_jwks_key_verify() {
        use aws_lc_rs::{
            rand::SystemRandom,
            signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
        };
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("key");
        let point = pair.public_key().as_ref().to_vec();
        let enc = mssql_emulator::fedauth::base64url_encode;
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "k1",
            "x": enc(&point[1..33]), "y": enc(&point[33..])});
        let (kid, key) = Jwk::parse(&jwk).expect("a P-256 JWK");
        assert_eq!(kid, "k1");
        let sig = pair.sign(&rng, b"head.body").expect("sign");
        // (why, alg, message, expected)
        let cases = [
            ("the signed message", "ES256", &b"head.body"[..], true),
            ("another message", "ES256", &b"head.bodx"[..], false),
            (
                "an algorithm the key is not for",
                "RS256",
                &b"head.body"[..],
                false,
            ),
        ];
        for (why, alg, message, want) in cases {
            assert_eq!(key.verify(alg, message, sig.as_ref()), want, "{why}");
        }
        assert!(Jwk::parse(&serde_json::json!({"kty": "oct", "kid": "x", "k": "AA"})).is_none());
    }

    #[test]
    fn access_tokens_are_what_the_emulator_accepts() {
        // The claims fake-entra signs are the ones the emulator maps to an external login.
        let oid = "6a1b3a7e-1f0c-4c55-9d1e-2f3a4b5c6d7e";
        let token = sign_hs256(&serde_json::json!({"oid": oid, "exp": now() + 60}), b"k");
        let sid = mssql_emulator::fedauth::principal_sid(&token, Some(b"k"), now()).expect("accepted");
        assert_eq!(sid.len(), 16);
    }
}
