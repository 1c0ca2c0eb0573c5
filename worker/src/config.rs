//! Configuration: every setting is a flag with an environment fallback, named exactly as
//! `apis::queue::env` (the provider sets the environment on the worker Deployment). Parsing
//! is clap's; [`Args::validate`] turns the strings into a [`WorkerConfig`] or a list of
//! every problem at once, so a misconfigured pod says everything that is wrong in one line
//! and exits with [`EXIT_CONFIG`] instead of panicking.

use crate::exec::{ServerConfig, TlsMode, TlsSettings};
use crate::sql::Password;
use apis::queue::env;
use std::{net::IpAddr, time::Duration};

/// Exit code for invalid configuration (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: i32 = 78;
/// Exit code after losing the Lease: the pod restarts as a standby.
pub const EXIT_LOST_LEASE: i32 = 3;
/// Exit code for any other fatal error.
pub const EXIT_FAILURE: i32 = 1;

/// Command line and environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "worker",
    about = "Reconciles SQL Server objects from the WorkItems of one worker"
)]
pub struct Args {
    /// Worker name: its Lease and the value of its WorkItems' worker label.
    #[arg(long, env = env::WORKER_NAME)]
    pub worker_name: Option<String>,
    /// Namespace of the worker, its Lease and its WorkItems.
    #[arg(long, env = env::POD_NAMESPACE)]
    pub namespace: Option<String>,
    /// Pod name: the Lease identity.
    #[arg(long, env = env::POD_NAME)]
    pub pod_name: Option<String>,
    /// Address for /healthz, /readyz and /metrics (127.0.0.1 when unset).
    #[arg(long, env = env::POD_IP)]
    pub pod_ip: Option<String>,
    /// SQL Server host.
    #[arg(long, env = env::SQL_HOST)]
    pub sql_host: Option<String>,
    /// SQL Server port.
    #[arg(long, env = env::SQL_PORT, default_value = "1433")]
    pub sql_port: String,
    /// Named instance (resolved through SQL Browser).
    #[arg(long, env = env::SQL_INSTANCE)]
    pub sql_instance: Option<String>,
    /// `Strict | Required | Optional | Disabled`.
    #[arg(long, env = env::TLS_MODE, default_value = "Required")]
    pub tls_mode: String,
    /// CA bundle: `secret/<ns>/<name>/<key>` or `configmap/<ns>/<name>/<key>`.
    #[arg(long, env = env::TLS_CA)]
    pub tls_ca: Option<String>,
    /// Host name expected in the server certificate.
    #[arg(long, env = env::TLS_HOSTNAME)]
    pub tls_hostname: Option<String>,
    /// Skip certificate validation (explicit opt-in).
    #[arg(long, env = env::TLS_TRUST_SERVER_CERTIFICATE, default_value = "false")]
    pub tls_trust_server_certificate: String,
    /// `Secret | AzureWorkloadIdentity | AzureManagedIdentity | AwsSecretsManager | InjectedIdentity`.
    #[arg(long, env = env::AUTH_METHOD, default_value = "Secret")]
    pub auth_method: String,
    /// SQL login (AUTH_METHOD=Secret).
    #[arg(long, env = env::SQL_USER)]
    pub sql_user: Option<String>,
    /// SQL password (AUTH_METHOD=Secret). Prefer the environment: flags show in `ps`.
    #[arg(long, env = env::SQL_PASSWORD, hide_env_values = true, value_parser = password_arg)]
    pub sql_password: Option<Password>,
    /// Extra CA for the Entra authority host: `configmap/<ns>/<name>/<key>`.
    #[arg(long, env = env::AZURE_AUTHORITY_CA)]
    pub azure_authority_ca: Option<String>,
    /// Client id of a user-assigned managed identity (AUTH_METHOD=AzureManagedIdentity).
    #[arg(long, env = "AZURE_CLIENT_ID")]
    pub azure_client_id: Option<String>,
    /// Secrets Manager secret holding the login (AUTH_METHOD=AwsSecretsManager).
    #[arg(long, env = env::AWS_SECRET_ID)]
    pub aws_secret_id: Option<String>,
    /// JSON key of the login name in that secret.
    #[arg(long, env = env::AWS_SECRET_USERNAME_KEY, default_value = "username")]
    pub aws_secret_username_key: String,
    /// JSON key of the password in that secret.
    #[arg(long, env = env::AWS_SECRET_PASSWORD_KEY, default_value = "password")]
    pub aws_secret_password_key: String,
    /// Default drift-sweep interval (Go duration).
    #[arg(long, env = env::POLL_INTERVAL, default_value = "10m")]
    pub poll_interval: String,
    /// Most concurrent SQL operations.
    #[arg(long, env = env::MAX_CONCURRENT_OPERATIONS, default_value = "4")]
    pub max_concurrent_operations: String,
    /// Port of /healthz, /readyz and /metrics.
    #[arg(long, env = env::HEALTH_PORT, default_value = "8080")]
    pub health_port: String,
    /// `json` or `plain`.
    #[arg(long, env = env::LOG_FORMAT, default_value = "json")]
    pub log_format: String,
}

/// Wraps the password at parse time, so not even `Args`' Debug can show it.
fn password_arg(value: &str) -> Result<Password, String> {
    Ok(Password::new(value))
}

/// Where the CA bundle lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSource {
    /// `secret` or `configmap`.
    pub kind: CaKind,
    /// Namespace.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// Key.
    pub key: String,
}

/// Kind of object holding the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKind {
    /// A Secret.
    Secret,
    /// A ConfigMap.
    ConfigMap,
}

/// How the worker authenticates to SQL Server.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `SQL_USER` / `SQL_PASSWORD`.
    Secret {
        /// Login.
        user: String,
        /// Password.
        password: Password,
    },
    /// An Entra token (workload identity, managed identity, or whatever the pod has). The
    /// identity's own settings are the standard `AZURE_*` variables, read when the worker
    /// first logs in, so a missing or wrong identity is reported, not a crash loop.
    Entra {
        /// Which identity.
        identity: crate::exec::credentials::EntraIdentity,
        /// Extra CA bundle for the authority host, read through the API at start.
        authority_ca: Option<CaSource>,
    },
    /// A SQL login read from AWS Secrets Manager.
    AwsSecretsManager(crate::exec::credentials::AwsSecretRef),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Plain,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Worker name.
    pub worker_name: String,
    /// Namespace.
    pub namespace: String,
    /// Lease identity.
    pub pod_name: String,
    /// Health/metrics bind address.
    pub bind: std::net::SocketAddr,
    /// The server (TLS CA still to be read when `ca` is set).
    pub server: ServerConfig,
    /// CA bundle location.
    pub ca: Option<CaSource>,
    /// Credentials.
    pub auth: Auth,
    /// Default drift-sweep interval.
    pub poll_interval: Duration,
    /// Concurrency bound.
    pub max_concurrent_operations: usize,
    /// Log format.
    pub log_format: LogFormat,
}

/// Every problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

fn bool_of(name: &str, value: &str, problems: &mut Vec<String>) -> bool {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => true,
        "false" | "0" | "no" | "" => false,
        _ => {
            problems.push(format!("{name}={value:?} is not true or false"));
            false
        }
    }
}

fn required(name: &str, value: &Option<String>, problems: &mut Vec<String>) -> String {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => {
            problems.push(format!("{name} is required"));
            String::new()
        }
    }
}

fn parse_ca(text: &str) -> Result<CaSource, String> {
    let parts: Vec<&str> = text.split('/').collect();
    let kind = match parts.first().copied() {
        Some("secret") => CaKind::Secret,
        Some("configmap") => CaKind::ConfigMap,
        _ => {
            return Err(format!(
                "{}={text:?} must be secret/<namespace>/<name>/<key> or configmap/…",
                env::TLS_CA
            ));
        }
    };
    match parts.as_slice() {
        [_, ns, name, key] if !ns.is_empty() && !name.is_empty() && !key.is_empty() => Ok(CaSource {
            kind,
            namespace: (*ns).to_owned(),
            name: (*name).to_owned(),
            key: (*key).to_owned(),
        }),
        _ => Err(format!(
            "{}={text:?} must be secret/<namespace>/<name>/<key> or configmap/…",
            env::TLS_CA
        )),
    }
}

impl Args {
    /// Checks everything and reports every problem at once.
    pub fn validate(&self) -> Result<WorkerConfig, ConfigError> {
        let mut p = Vec::new();
        let worker_name = required(env::WORKER_NAME, &self.worker_name, &mut p);
        let namespace = required(env::POD_NAMESPACE, &self.namespace, &mut p);
        let pod_name = required(env::POD_NAME, &self.pod_name, &mut p);
        let host = required(env::SQL_HOST, &self.sql_host, &mut p);
        let port = self.sql_port.trim().parse::<u16>().unwrap_or_else(|_| {
            p.push(format!(
                "{}={:?} is not a port number",
                env::SQL_PORT,
                self.sql_port
            ));
            0
        });
        let mode = match self.tls_mode.as_str() {
            "Strict" => TlsMode::Strict,
            "Required" => TlsMode::Required,
            "Optional" => TlsMode::Optional,
            "Disabled" => TlsMode::Disabled,
            other => {
                p.push(format!(
                    "{}={other:?} must be Strict, Required, Optional or Disabled",
                    env::TLS_MODE
                ));
                TlsMode::Required
            }
        };
        let trust = bool_of(
            env::TLS_TRUST_SERVER_CERTIFICATE,
            &self.tls_trust_server_certificate,
            &mut p,
        );
        let ca = self
            .tls_ca
            .as_deref()
            .filter(|s| !s.is_empty())
            .and_then(|s| parse_ca(s).map_err(|e| p.push(e)).ok());
        if trust && ca.is_some() {
            // tiberius panics on trust_cert() with a CA; and asking for both is a mistake.
            p.push(format!(
                "{} and {} are mutually exclusive",
                env::TLS_TRUST_SERVER_CERTIFICATE,
                env::TLS_CA
            ));
        }
        if mode == TlsMode::Strict && trust {
            p.push(format!(
                "{}=Strict always validates the certificate; drop {}",
                env::TLS_MODE,
                env::TLS_TRUST_SERVER_CERTIFICATE
            ));
        }
        let auth = match self.auth_method.as_str() {
            "Secret" => {
                let user = required(env::SQL_USER, &self.sql_user, &mut p);
                // Not trimmed: spaces may be part of a password.
                let password = match &self.sql_password {
                    Some(pw) if !pw.expose().is_empty() => pw.clone(),
                    _ => {
                        p.push(format!(
                            "{} is required with {}=Secret",
                            env::SQL_PASSWORD,
                            env::AUTH_METHOD
                        ));
                        Password::new("")
                    }
                };
                Auth::Secret { user, password }
            }
            "AzureWorkloadIdentity" | "AzureManagedIdentity" | "InjectedIdentity" => {
                use crate::exec::credentials::EntraIdentity;
                let identity = match self.auth_method.as_str() {
                    "AzureWorkloadIdentity" => EntraIdentity::Workload,
                    "AzureManagedIdentity" => EntraIdentity::Managed {
                        client_id: self.azure_client_id.clone().filter(|s| !s.trim().is_empty()),
                    },
                    _ => EntraIdentity::Injected,
                };
                let authority_ca = match self.azure_authority_ca.as_deref().filter(|s| !s.is_empty()) {
                    None => None,
                    Some(text) => match parse_ca(text) {
                        Ok(ca) if ca.kind == CaKind::ConfigMap => Some(ca),
                        Ok(_) => {
                            p.push(format!(
                                "{}={text:?} must be configmap/<namespace>/<name>/<key>",
                                env::AZURE_AUTHORITY_CA
                            ));
                            None
                        }
                        Err(e) => {
                            p.push(e.replace(env::TLS_CA, env::AZURE_AUTHORITY_CA));
                            None
                        }
                    },
                };
                Auth::Entra {
                    identity,
                    authority_ca,
                }
            }
            "AwsSecretsManager" => Auth::AwsSecretsManager(crate::exec::credentials::AwsSecretRef {
                secret_id: required(env::AWS_SECRET_ID, &self.aws_secret_id, &mut p),
                username_key: self.aws_secret_username_key.clone(),
                password_key: self.aws_secret_password_key.clone(),
            }),
            other => {
                p.push(format!(
                    "{}={other:?} must be Secret, AzureWorkloadIdentity, AzureManagedIdentity, AwsSecretsManager or InjectedIdentity",
                    env::AUTH_METHOD
                ));
                Auth::Entra {
                    identity: crate::exec::credentials::EntraIdentity::Injected,
                    authority_ca: None,
                }
            }
        };
        let poll_interval = apis::config::parse_go_duration(&self.poll_interval).unwrap_or_else(|e| {
            p.push(format!("{}: {e}", env::POLL_INTERVAL));
            Duration::from_secs(600)
        });
        if poll_interval < Duration::from_secs(1) {
            p.push(format!("{} must be at least 1s", env::POLL_INTERVAL));
        }
        let max_concurrent_operations = match self.max_concurrent_operations.trim().parse::<usize>() {
            Ok(n) if (1..=64).contains(&n) => n,
            _ => {
                p.push(format!(
                    "{}={:?} must be a number from 1 to 64",
                    env::MAX_CONCURRENT_OPERATIONS,
                    self.max_concurrent_operations
                ));
                1
            }
        };
        let health_port = self.health_port.trim().parse::<u16>().unwrap_or_else(|_| {
            p.push(format!(
                "{}={:?} is not a port number",
                env::HEALTH_PORT,
                self.health_port
            ));
            0
        });
        let ip: IpAddr = match self.pod_ip.as_deref().filter(|s| !s.is_empty()) {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(s) => s.parse().unwrap_or_else(|_| {
                p.push(format!("{}={s:?} is not an IP address", env::POD_IP));
                IpAddr::from([127, 0, 0, 1])
            }),
        };
        let log_format = match self.log_format.as_str() {
            "json" => LogFormat::Json,
            "plain" => LogFormat::Plain,
            other => {
                p.push(format!("{}={other:?} must be json or plain", env::LOG_FORMAT));
                LogFormat::Json
            }
        };
        if !p.is_empty() {
            return Err(ConfigError(p));
        }
        Ok(WorkerConfig {
            worker_name,
            namespace,
            pod_name,
            bind: std::net::SocketAddr::new(ip, health_port),
            server: ServerConfig {
                host,
                port,
                instance: self.sql_instance.clone().filter(|s| !s.is_empty()),
                tls: TlsSettings {
                    mode,
                    ca_pem: None,
                    hostname: self.tls_hostname.clone().filter(|s| !s.is_empty()),
                    trust_server_certificate: trust,
                },
                connect_timeout: Duration::from_secs(15),
                statement_timeout: Duration::from_secs(120),
            },
            ca,
            auth,
            poll_interval,
            max_concurrent_operations,
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<WorkerConfig, ConfigError> {
        let mut argv = vec!["worker"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).expect("clap").validate()
    }

    const BASE: &[&str] = &[
        "--worker-name",
        "w1",
        "--namespace",
        "ns",
        "--pod-name",
        "w1-abc",
        "--sql-host",
        "db.example",
        "--sql-user",
        "admin",
        "--sql-password",
        "pw",
    ];

    #[test]
    fn valid_minimal_config_uses_the_documented_defaults() {
        let c = parse(BASE).expect("valid");
        assert_eq!(c.server.port, 1433);
        assert_eq!(c.server.tls.mode, TlsMode::Required, "TLS on by default");
        assert!(!c.server.tls.trust_server_certificate);
        assert_eq!(c.poll_interval, Duration::from_secs(600));
        assert_eq!(
            c.bind.to_string(),
            "127.0.0.1:8080",
            "binds loopback without POD_IP"
        );
        assert_eq!(c.max_concurrent_operations, 4);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let cases: Vec<(&str, Vec<&str>, &str)> = vec![
            ("nothing set", vec![], "WORKER_NAME is required"),
            ("bad TLS mode", vec!["--tls-mode", "Maybe"], "TLS_MODE=\"Maybe\""),
            (
                "trust with a CA",
                vec![
                    "--tls-trust-server-certificate",
                    "true",
                    "--tls-ca",
                    "secret/ns/ca/ca.crt",
                ],
                "mutually exclusive",
            ),
            ("malformed CA ref", vec!["--tls-ca", "secret/ca"], "TLS_CA"),
            ("bad duration", vec!["--poll-interval", "often"], "POLL_INTERVAL"),
            (
                "zero concurrency",
                vec!["--max-concurrent-operations", "0"],
                "MAX_CONCURRENT_OPERATIONS",
            ),
            ("bad pod ip", vec!["--pod-ip", "pod"], "POD_IP"),
            (
                "unknown auth method",
                vec!["--auth-method", "Kerberos"],
                "AUTH_METHOD",
            ),
            ("bad port", vec!["--sql-port", "70000"], "SQL_PORT"),
        ];
        for (why, extra, want) in cases {
            let mut args: Vec<&str> = if why == "nothing set" {
                vec![]
            } else {
                BASE.to_vec()
            };
            args.extend(extra);
            let e = parse(&args).expect_err(why);
            assert!(e.to_string().contains(want), "{why}: {e}");
        }
        let e = parse(&[]).unwrap_err();
        assert!(e.0.len() >= 5, "all missing settings listed: {e}");
    }

    #[test]
    fn credential_sources_from_the_environment_the_provider_sets() {
        use crate::exec::credentials::EntraIdentity;
        let base: Vec<&str> = BASE[..8].to_vec();
        let with = |extra: &[&str]| {
            let mut a = base.clone();
            a.extend_from_slice(extra);
            parse(&a)
        };
        // Workload identity needs nothing at start: AZURE_* are read at the first login,
        // so a missing identity is reported on the config instead of exiting.
        match with(&["--auth-method", "AzureWorkloadIdentity"])
            .expect("valid")
            .auth
        {
            Auth::Entra {
                identity: EntraIdentity::Workload,
                authority_ca: None,
            } => {}
            other => panic!("{other:?}"),
        }
        match with(&[
            "--auth-method",
            "AzureWorkloadIdentity",
            "--azure-authority-ca",
            "configmap/ns/entra-ca/ca.crt",
        ])
        .expect("valid")
        .auth
        {
            Auth::Entra {
                authority_ca: Some(ca),
                ..
            } => assert_eq!((ca.name.as_str(), ca.key.as_str()), ("entra-ca", "ca.crt")),
            other => panic!("{other:?}"),
        }
        let e = with(&[
            "--auth-method",
            "AzureWorkloadIdentity",
            "--azure-authority-ca",
            "secret/ns/x/y",
        ])
        .expect_err("only a ConfigMap holds a public CA");
        assert!(e.to_string().contains("AZURE_AUTHORITY_CA"), "{e}");
        match with(&[
            "--auth-method",
            "AzureManagedIdentity",
            "--azure-client-id",
            "abc",
        ])
        .expect("valid")
        .auth
        {
            Auth::Entra {
                identity: EntraIdentity::Managed { client_id },
                ..
            } => assert_eq!(client_id.as_deref(), Some("abc"), "user-assigned"),
            other => panic!("{other:?}"),
        }
        match with(&["--auth-method", "InjectedIdentity"]).expect("valid").auth {
            Auth::Entra {
                identity: EntraIdentity::Injected,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        let e = with(&["--auth-method", "AwsSecretsManager"]).expect_err("secret id required");
        assert!(e.to_string().contains("AWS_SECRET_ID is required"), "{e}");
        match with(&[
            "--auth-method",
            "AwsSecretsManager",
            "--aws-secret-id",
            "rds!db-1",
        ])
        .expect("valid")
        .auth
        {
            Auth::AwsSecretsManager(r) => {
                assert_eq!(
                    (
                        r.secret_id.as_str(),
                        r.username_key.as_str(),
                        r.password_key.as_str()
                    ),
                    ("rds!db-1", "username", "password"),
                    "RDS-managed secret keys by default"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn password_never_in_debug_or_errors() {
        let c = parse(BASE).unwrap();
        assert!(!format!("{c:?}").contains("\"pw\""), "{c:?}");
        let args = Args::try_parse_from([&["worker"][..], BASE].concat()).unwrap();
        assert!(!format!("{args:?}").contains("\"pw\""), "{args:?}");
        let mut args = BASE.to_vec();
        args.extend(["--tls-mode", "nope"]);
        assert!(!parse(&args).unwrap_err().to_string().contains("pw\""));
    }
}
