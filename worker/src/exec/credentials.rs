//! The `CredentialSource` seam: how the worker authenticates to SQL Server. `Secret`
//! (`SQL_USER` / `SQL_PASSWORD` from the pod's environment) is implemented here; Entra
//! (a token from azure_identity) and AWS Secrets Manager (re-read on 18456) plug in behind
//! the same trait.

use crate::sql::Password;
use std::{future::Future, pin::Pin};

/// A boxed future, so the trait stays object-safe (`Arc<dyn CredentialSource>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a credential source yields.
#[derive(Clone, Debug)]
pub enum Credential {
    /// SQL authentication.
    SqlLogin {
        /// Login name.
        user: String,
        /// Its password.
        password: Password,
    },
    /// An access token (Entra / FEDAUTH).
    Token(Password),
}

/// Why no credential could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credential source {source_name}: {message}")]
pub struct CredentialError {
    /// The source's label.
    pub source_name: &'static str,
    /// What went wrong (never a secret).
    pub message: String,
}

/// A source of SQL credentials that can be asked to refresh (after a login failure, or
/// before a token expires).
pub trait CredentialSource: Send + Sync {
    /// The current credential.
    fn credential(&self) -> BoxFuture<'_, Result<Credential, CredentialError>>;
    /// Drops anything cached, so the next [`CredentialSource::credential`] fetches anew.
    fn refresh(&self) -> BoxFuture<'_, Result<(), CredentialError>>;
    /// Stable label (`Secret`, `AzureWorkloadIdentity`, …) for logs and metrics.
    fn label(&self) -> &'static str;
    /// Whether [`CredentialSource::refresh`] can yield something new (a fixed password
    /// cannot, so a refused login is not retried with it).
    fn refreshable(&self) -> bool {
        true
    }
}

/// `AUTH_METHOD=Secret`: a fixed login and password, injected by the Deployment from a
/// Secret (`secretKeyRef`). A rotated Secret reaches the worker through a pod restart, which
/// the provider triggers; `refresh` has nothing to re-read.
pub struct SecretCredentials {
    user: String,
    password: Password,
}

impl SecretCredentials {
    /// From the login name and password.
    pub fn new(user: impl Into<String>, password: Password) -> Self {
        Self {
            user: user.into(),
            password,
        }
    }
}

impl CredentialSource for SecretCredentials {
    fn credential(&self) -> BoxFuture<'_, Result<Credential, CredentialError>> {
        let c = Credential::SqlLogin {
            user: self.user.clone(),
            password: self.password.clone(),
        };
        Box::pin(async move { Ok(c) })
    }

    fn refresh(&self) -> BoxFuture<'_, Result<(), CredentialError>> {
        Box::pin(async { Ok(()) })
    }

    fn label(&self) -> &'static str {
        "Secret"
    }

    fn refreshable(&self) -> bool {
        false
    }
}

/// Scope of an Entra access token for Azure SQL (Database, Managed Instance, and SQL Server
/// with Entra authentication).
pub const SQL_SCOPE: &str = "https://database.windows.net/.default";

/// Longest a token or secret fetch may take; a hung endpoint becomes an error the worker
/// reports instead of a stuck connect.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Which Entra identity the worker uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntraIdentity {
    /// Workload identity federation: `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE` and `AZURE_AUTHORITY_HOST` from the pod's environment
    /// (injected by the provider, or by the Azure Workload Identity webhook).
    Workload,
    /// The managed identity of the node / App Service: system-assigned, or the user-assigned
    /// identity with this client id.
    Managed {
        /// Client id of a user-assigned identity.
        client_id: Option<String>,
    },
    /// Whatever the pod has: workload identity when `AZURE_FEDERATED_TOKEN_FILE` is set
    /// (a webhook injected it), the managed identity otherwise.
    Injected,
}

impl EntraIdentity {
    /// Whether this identity logs in through workload identity federation (else through the
    /// managed identity), given whether the pod has `AZURE_FEDERATED_TOKEN_FILE`.
    pub fn uses_workload_identity(&self, federated_token_file: bool) -> bool {
        match self {
            EntraIdentity::Workload => true,
            EntraIdentity::Managed { .. } => false,
            EntraIdentity::Injected => federated_token_file,
        }
    }
}

type TokenCredentialRef = std::sync::Arc<dyn azure_core::credentials::TokenCredential>;

/// An Entra access token for SQL Server from azure_identity. The credential caches the token
/// and fetches a new one within 5 minutes of its expiry, so every new connection logs in
/// with a valid token; [`CredentialSource::refresh`] (after 18456, e.g. a token the server
/// considers expired) drops the credential and its cache, so the next login uses a token
/// fetched anew.
pub struct EntraCredentials {
    identity: EntraIdentity,
    /// Extra PEM roots for the authority host (the config's `authorityCaConfigMapRef`).
    authority_ca: Option<Vec<u8>>,
    credential: tokio::sync::Mutex<Option<TokenCredentialRef>>,
}

impl EntraCredentials {
    /// A source for `identity`; nothing is read or fetched until the first login.
    pub fn new(identity: EntraIdentity, authority_ca: Option<Vec<u8>>) -> Self {
        Self {
            identity,
            authority_ca,
            credential: tokio::sync::Mutex::new(None),
        }
    }

    fn client_options(&self) -> Result<azure_core::http::ClientOptions, CredentialError> {
        let mut options = azure_core::http::ClientOptions::default();
        if let Some(pem) = &self.authority_ca {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| self.error(format!("authority CA bundle: {e}")))?;
            if certs.is_empty() {
                return Err(self.error("authority CA bundle holds no certificate".into()));
            }
            let client = reqwest::Client::builder()
                .tls_certs_merge(certs)
                .build()
                .map_err(|e| self.error(format!("HTTP client with the authority CA: {e}")))?;
            options.transport = Some(azure_core::http::Transport::new(std::sync::Arc::new(client)));
        }
        Ok(options)
    }

    fn error(&self, message: String) -> CredentialError {
        CredentialError {
            source_name: self.label(),
            message,
        }
    }

    fn build(&self) -> Result<TokenCredentialRef, CredentialError> {
        let workload = self
            .identity
            .uses_workload_identity(std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some());
        let client_options = self.client_options()?;
        if workload {
            let options = azure_identity::WorkloadIdentityCredentialOptions {
                credential_options: azure_identity::ClientAssertionCredentialOptions { client_options },
                ..Default::default()
            };
            let c = azure_identity::WorkloadIdentityCredential::new(Some(options))
                .map_err(|e| self.error(format!("workload identity: {e}")))?;
            Ok(c)
        } else {
            let client_id = match &self.identity {
                EntraIdentity::Managed { client_id } => client_id.clone(),
                _ => std::env::var("AZURE_CLIENT_ID").ok().filter(|s| !s.is_empty()),
            };
            let options = azure_identity::ManagedIdentityCredentialOptions {
                client_options,
                user_assigned_id: client_id.map(azure_identity::UserAssignedId::ClientId),
            };
            let c = azure_identity::ManagedIdentityCredential::new(Some(options))
                .map_err(|e| self.error(format!("managed identity: {e}")))?;
            Ok(c)
        }
    }
}

impl CredentialSource for EntraCredentials {
    fn credential(&self) -> BoxFuture<'_, Result<Credential, CredentialError>> {
        Box::pin(async move {
            let credential = {
                let mut slot = self.credential.lock().await;
                match slot.as_ref() {
                    Some(c) => c.clone(),
                    None => {
                        let c = self.build()?;
                        *slot = Some(c.clone());
                        c
                    }
                }
            };
            let token = tokio::time::timeout(FETCH_TIMEOUT, credential.get_token(&[SQL_SCOPE], None))
                .await
                .map_err(|_| self.error(format!("no token within {FETCH_TIMEOUT:?}")))?
                .map_err(|e| self.error(one_line(&e.to_string())))?;
            Ok(Credential::Token(Password::new(token.token.secret())))
        })
    }

    fn refresh(&self) -> BoxFuture<'_, Result<(), CredentialError>> {
        Box::pin(async move {
            *self.credential.lock().await = None;
            Ok(())
        })
    }

    fn label(&self) -> &'static str {
        match self.identity {
            EntraIdentity::Workload => "AzureWorkloadIdentity",
            EntraIdentity::Managed { .. } => "AzureManagedIdentity",
            EntraIdentity::Injected => "InjectedIdentity",
        }
    }
}

/// azure_identity's messages span lines (with a troubleshooting link); conditions want one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Where the SQL login lives in AWS Secrets Manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSecretRef {
    /// Secret name or ARN.
    pub secret_id: String,
    /// JSON key of the login name (`username` in RDS-managed master secrets).
    pub username_key: String,
    /// JSON key of the password (`password` in RDS-managed master secrets).
    pub password_key: String,
}

/// Parses a secret string (JSON, as RDS-managed master secrets store it) into a login.
pub fn parse_aws_secret(r: &AwsSecretRef, text: &str) -> Result<(String, Password), String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| "the secret string is not a JSON object".to_owned())?;
    let field = |key: &str| -> Result<String, String> {
        match value.get(key) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(format!("key {key:?} of the secret is not a non-empty string")),
            None => Err(format!("the secret has no key {key:?}")),
        }
    };
    Ok((field(&r.username_key)?, Password::new(field(&r.password_key)?)))
}

/// A SQL login read from AWS Secrets Manager with the pod's AWS identity (the standard
/// credential chain: IRSA web identity, EKS Pod Identity, …; `AWS_REGION`, and
/// `AWS_ENDPOINT_URL` when the config sets an endpoint). The login is cached until SQL
/// Server refuses it (18456): [`CredentialSource::refresh`] drops it and the next login
/// reads the secret again, which is how a rotation (RDS rotates its master secrets) is
/// picked up without a restart.
pub struct AwsSecretCredentials {
    secret: AwsSecretRef,
    client: tokio::sync::OnceCell<aws_sdk_secretsmanager::Client>,
    cached: tokio::sync::Mutex<Option<(String, Password)>>,
}

impl AwsSecretCredentials {
    /// A source for `secret`; nothing is read until the first login.
    pub fn new(secret: AwsSecretRef) -> Self {
        Self {
            secret,
            client: tokio::sync::OnceCell::new(),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    fn error(&self, message: String) -> CredentialError {
        CredentialError {
            source_name: self.label(),
            message,
        }
    }

    async fn read(&self) -> Result<(String, Password), CredentialError> {
        let client = self
            .client
            .get_or_init(|| async {
                let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .load()
                    .await;
                aws_sdk_secretsmanager::Client::new(&sdk)
            })
            .await;
        let call = client.get_secret_value().secret_id(&self.secret.secret_id).send();
        let out = tokio::time::timeout(FETCH_TIMEOUT, call)
            .await
            .map_err(|_| self.error(format!("GetSecretValue gave no answer within {FETCH_TIMEOUT:?}")))?
            .map_err(|e| {
                self.error(format!(
                    "GetSecretValue {}: {}",
                    self.secret.secret_id,
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                ))
            })?;
        let text = out
            .secret_string()
            .ok_or_else(|| self.error(format!("secret {} has no SecretString", self.secret.secret_id)))?;
        parse_aws_secret(&self.secret, text)
            .map_err(|m| self.error(format!("secret {}: {m}", self.secret.secret_id)))
    }
}

impl CredentialSource for AwsSecretCredentials {
    fn credential(&self) -> BoxFuture<'_, Result<Credential, CredentialError>> {
        Box::pin(async move {
            let mut cached = self.cached.lock().await;
            if cached.is_none() {
                *cached = Some(self.read().await?);
            }
            let (user, password) = cached.clone().ok_or_else(|| self.error("no login".into()))?;
            Ok(Credential::SqlLogin { user, password })
        })
    }

    fn refresh(&self) -> BoxFuture<'_, Result<(), CredentialError>> {
        Box::pin(async move {
            *self.cached.lock().await = None;
            Ok(())
        })
    }

    fn label(&self) -> &'static str {
        "AwsSecretsManager"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_secret_strings() {
        let rds = AwsSecretRef {
            secret_id: "rds!db-1".into(),
            username_key: "username".into(),
            password_key: "password".into(),
        };
        let custom = AwsSecretRef {
            username_key: "user".into(),
            password_key: "pw".into(),
            ..rds.clone()
        };
        // (why, ref, secret string, Ok(user) or Err(substring))
        let cases: Vec<(&str, &AwsSecretRef, &str, Result<&str, &str>)> = vec![
            (
                "RDS-managed master secret shape",
                &rds,
                r#"{"username":"admin","password":"p@ss"}"#,
                Ok("admin"),
            ),
            (
                "configured keys",
                &custom,
                r#"{"user":"app","pw":"x","engine":"sqlserver"}"#,
                Ok("app"),
            ),
            ("plain text is refused", &rds, "hunter2", Err("not a JSON object")),
            (
                "missing key named",
                &custom,
                r#"{"username":"a","password":"b"}"#,
                Err("no key \"user\""),
            ),
            (
                "empty password",
                &rds,
                r#"{"username":"a","password":""}"#,
                Err("not a non-empty string"),
            ),
            (
                "numbers are not logins",
                &rds,
                r#"{"username":1,"password":"b"}"#,
                Err("\"username\""),
            ),
        ];
        for (why, r, text, want) in cases {
            match (parse_aws_secret(r, text), want) {
                (Ok((user, _)), Ok(u)) => assert_eq!(user, u, "{why}"),
                (Err(e), Err(part)) => {
                    assert!(e.contains(part), "{why}: {e}");
                    assert!(
                        !e.contains("hunter2") && !e.contains("p@ss"),
                        "{why}: no secret in {e}"
                    );
                }
                (got, _) => panic!("{why}: {:?}", got.map(|(u, _)| u)),
            }
        }
    }

    #[tokio::test]
    async fn missing_workload_identity_is_an_error_not_a_panic() {
        // No AZURE_* in the test environment: the source reports what is missing.
        if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some()
            || std::env::var_os("AZURE_TENANT_ID").is_some()
        {
            return;
        }
        let source = EntraCredentials::new(EntraIdentity::Workload, None);
        let e = source.credential().await.expect_err("no identity");
        assert_eq!(e.source_name, "AzureWorkloadIdentity");
        assert!(e.message.contains("workload identity"), "{e}");
    }

    #[test]
    fn which_entra_flow_each_identity_uses() {
        // (why, identity, AZURE_FEDERATED_TOKEN_FILE set, workload identity?)
        let cases = [
            (
                "configured workload identity",
                EntraIdentity::Workload,
                true,
                true,
            ),
            (
                "workload identity without a token file still tries it (and reports what is missing)",
                EntraIdentity::Workload,
                false,
                true,
            ),
            (
                "managed identity ignores a token file",
                EntraIdentity::Managed { client_id: None },
                true,
                false,
            ),
            ("injected by the webhook", EntraIdentity::Injected, true, true),
            (
                "nothing injected: the managed identity",
                EntraIdentity::Injected,
                false,
                false,
            ),
        ];
        for (why, identity, file, want) in cases {
            assert_eq!(identity.uses_workload_identity(file), want, "{why}");
        }
    }

    #[test]
    fn a_bad_authority_ca_is_reported() {
        let source = EntraCredentials::new(EntraIdentity::Workload, Some(b"not a certificate".to_vec()));
        let e = source.client_options().expect_err("no certificate in the bundle");
        assert!(e.message.contains("authority CA"), "{e}");
    }
}
