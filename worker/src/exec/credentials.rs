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
}
