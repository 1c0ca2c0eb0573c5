//! Wiring: configuration → Kubernetes client, Lease, WorkItem watch, SQL pool, health
//! server → the scheduling loop. Only the Lease holder touches SQL; a standby keeps its
//! cache warm and waits. Losing the Lease ends the process ([`RunError::LostLease`]).
//!
//! ```text
//!   watch WorkItems (label worker=<name>) ──▶ Scheduler (pure) ──▶ tasks (≤ MAX_CONCURRENT_OPERATIONS)
//!   Lease (kube-lease-manager) ──▶ leader? ──┘                      │ reconcile_all (batched)
//!                                                                   ▼
//!                              status SSA (WORKER_MANAGER) ◀── completions
//! ```

use crate::sql::error::{ErrorKind, SqlError};
use crate::{
    config::{Auth, LogFormat, WorkerConfig},
    exec::{
        SqlPool,
        credentials::{AwsSecretCredentials, CredentialSource, EntraCredentials, SecretCredentials},
    },
    health::{self, Health},
    k8s,
    metrics::Metrics,
    queue::{Backoff, Scheduler},
    reconcile::{ItemError, LeaderGate, Outcome, Reconciler},
};
use apis::{constants::LABEL_WORKER, generated::workitems::WorkItem, queue::WORKER_MANAGER};
use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, reflector, watcher},
};
use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};
use tokio::sync::{Semaphore, mpsc};

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another replica holds the Lease now.
    #[error("lost the Lease")]
    LostLease,
    /// Start-up failed.
    #[error("{0}")]
    Startup(String),
    /// The WorkItem watch ended.
    #[error("the WorkItem watch ended")]
    WatchEnded,
}

/// Installs the tracing subscriber (JSON or plain, `RUST_LOG` filter, info by default).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Plain => builder.try_init(),
    };
}

struct Done {
    key: String,
    generation: i64,
    resource_generation: Option<i64>,
    outcome: Outcome,
}

/// `lastError.reason` of a WorkItem the worker cannot use as written.
const INVALID_REQUEST: &str = "InvalidRequest";

/// Lease timings: a standby takes over within 15 s of a holder that stopped renewing.
const LEASE_SECONDS: u64 = 15;
const LEASE_GRACE_SECONDS: u64 = 5;

/// Runs the worker until it loses the Lease or fails.
pub async fn run(mut config: WorkerConfig) -> Result<(), RunError> {
    init_logging(config.log_format);
    let client = Client::try_default()
        .await
        .map_err(|e| RunError::Startup(format!("Kubernetes client: {e}")))?;
    if let Some(ca) = &config.ca {
        config.server.tls.ca_pem = Some(k8s::read_ca(&client, ca).await.map_err(RunError::Startup)?);
    }
    let credentials: Arc<dyn CredentialSource> = match &config.auth {
        Auth::Secret { user, password } => Arc::new(SecretCredentials::new(user.clone(), password.clone())),
        Auth::Entra {
            identity,
            authority_ca,
        } => {
            let pem = match authority_ca {
                Some(ca) => Some(k8s::read_ca(&client, ca).await.map_err(RunError::Startup)?),
                None => None,
            };
            Arc::new(EntraCredentials::new(identity.clone(), pem))
        }
        Auth::AwsSecretsManager(secret) => Arc::new(AwsSecretCredentials::new(secret.clone())),
    };
    tracing::info!(source = credentials.label(), "credential source");
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| RunError::Startup(format!("cannot listen on {}: {e}", config.bind)))?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(health::serve(
        listener,
        health.clone(),
        metrics.clone(),
        async move {
            let _ = stop_rx.changed().await;
        },
    ));
    tracing::info!(bind = %config.bind, worker = %config.worker_name, "worker starting");

    let lease = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &config.worker_name)
        .with_namespace(&config.namespace)
        .with_identity(&config.pod_name)
        .with_duration(LEASE_SECONDS)
        .with_grace(LEASE_GRACE_SECONDS)
        .with_field_manager(WORKER_MANAGER)
        .build()
        .await
        .map_err(|e| RunError::Startup(format!("Lease {}: {e}", config.worker_name)))?;
    let (mut leader_rx, lease_task) = lease.watch().await;

    let pool = Arc::new(SqlPool::new(config.server.clone(), credentials, metrics.clone()));
    let gate: Arc<dyn LeaderGate> = Arc::new(leader_rx.clone());
    let reconciler = Arc::new(Reconciler {
        pool: pool.clone(),
        secrets: Arc::new(k8s::KubeSecrets {
            client: client.clone(),
        }),
        leader: gate,
        metrics: metrics.clone(),
    });

    let api: Api<WorkItem> = Api::namespaced(client.clone(), &config.namespace);
    let (store, writer) = reflector::store();
    let selector = format!("{LABEL_WORKER}={}", config.worker_name);
    let mut events = Box::pin(
        watcher(api.clone(), watcher::Config::default().labels(&selector))
            // A short ceiling: back within seconds of an apiserver restart (apis::backoff).
            .backoff(apis::backoff::WatchBackoff::default())
            .reflect(writer),
    );

    let mut scheduler = Scheduler::new(
        config.poll_interval,
        // Crossplane's per-item backoff, 1 s doubling to 60 s: a User created before its
        // Database retries within a minute of the Database appearing, not five.
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        },
    );
    let permits = Arc::new(Semaphore::new(config.max_concurrent_operations));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_ping = Instant::now() - Duration::from_secs(60);
    let mut was_leader = false;
    // The connection report last written to the Lease (none yet).
    let reported: Arc<tokio::sync::Mutex<Option<serde_json::Value>>> = Arc::default();

    let result = loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { break Err(RunError::WatchEnded) };
                match ev {
                    Ok(watcher::Event::Apply(wi) | watcher::Event::InitApply(wi)) => {
                        scheduler.upsert(k8s::seen(&wi, config.poll_interval), Instant::now());
                    }
                    Ok(watcher::Event::Delete(wi)) => scheduler.remove(&wi.name_any()),
                    Ok(watcher::Event::Init) => {}
                    Ok(watcher::Event::InitDone) => {
                        // A re-list may have dropped items deleted while disconnected.
                        let live: std::collections::HashSet<String> =
                            store.state().iter().map(|w| w.name_any()).collect();
                        scheduler.retain(|k| live.contains(k));
                        health.synced.store(true, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(error = %e, "WorkItem watch error (retrying)"),
                }
            }
            changed = leader_rx.changed() => {
                if changed.is_err() {
                    break Err(RunError::LostLease);
                }
                let leading = *leader_rx.borrow();
                health.leader.store(leading, Ordering::Relaxed);
                metrics.leader.set(i64::from(leading));
                if was_leader && !leading {
                    break Err(RunError::LostLease);
                }
                if leading {
                    tracing::info!(identity = %config.pod_name, "holding the Lease: processing WorkItems");
                }
                was_leader = leading;
            }
            Some(done) = done_rx.recv() => {
                let now = Instant::now();
                let lost = done.outcome.lost_lease();
                // An invalid WorkItem stays invalid until its spec changes: no retry loop.
                let success = done.outcome.error.as_ref().is_none_or(|e| e.reason == INVALID_REQUEST);
                let attempts = scheduler.complete(&done.key, done.generation, success, now);
                if lost {
                    break Err(RunError::LostLease);
                }
                let doc = k8s::status_document(&k8s::StatusInput {
                    generation: done.generation,
                    resource_generation: done.resource_generation,
                    outcome: &done.outcome,
                    attempts,
                    holder: &config.pod_name,
                    now: k8s_openapi::jiff::Timestamp::now().to_string(),
                });
                let current = store.state().into_iter().find(|w| w.name_any() == done.key).and_then(|w| w.status.clone());
                if k8s::status_unchanged(current.as_ref(), &doc) {
                    continue;
                }
                let api = api.clone();
                tokio::spawn(async move {
                    let write = tokio::time::timeout(Duration::from_secs(10), k8s::write_status(&api, &done.key, &doc)).await;
                    match write {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(item = %done.key, error = %e, "cannot write status"),
                        Err(_) => tracing::warn!(item = %done.key, "status write timed out"),
                    }
                });
            }
            _ = tick.tick() => {
                let now = Instant::now();
                metrics.queue_depth.set(scheduler.depth(now) as i64);
                metrics.oldest_pending_seconds.set(scheduler.oldest_pending(now).map(|d| d.as_secs_f64()).unwrap_or(0.0));
                if !*leader_rx.borrow() || !health.synced.load(Ordering::Relaxed) {
                    continue;
                }
                if now.duration_since(last_ping) >= Duration::from_secs(10) {
                    last_ping = now;
                    let (pool, health) = (pool.clone(), health.clone());
                    let (client, reported) = (client.clone(), reported.clone());
                    let (namespace, lease_name) = (config.namespace.clone(), config.worker_name.clone());
                    tokio::spawn(async move {
                        let result = pool.ping().await;
                        // Readiness, and the log line when reachability changes.
                        health.record_ping(result.as_ref().map(drop).map_err(|e| e.to_string()));
                        // Report on the Lease only what changed; the first ping always, to
                        // clear what a previous holder left.
                        let report = k8s::connection_report(result.as_ref().err());
                        let mut last = reported.lock().await;
                        if last.as_ref() != Some(&report) {
                            let write = tokio::time::timeout(
                                Duration::from_secs(10),
                                k8s::report_connection(&client, &namespace, &lease_name, &report),
                            )
                            .await;
                            match write {
                                Ok(Ok(())) => *last = Some(report),
                                Ok(Err(e)) => tracing::warn!(error = %e, "cannot report the SQL connection state on the Lease"),
                                Err(_) => tracing::warn!("reporting the SQL connection state on the Lease timed out"),
                            }
                        }
                    });
                }
                dispatch(&mut scheduler, &store, &reconciler, &permits, &done_tx, now);
            }
        }
    };
    let _ = stop_tx.send(true);
    let _ = server.await;
    // Dropping the receiver makes the lease task release the Lease and end.
    drop(leader_rx);
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    result
}

/// Why the Lease holder cannot reach SQL Server, as the reason and message the provider shows
/// in the config's `WorkerReady` condition; `None` when it can. Reasons:
/// `CredentialsUnavailable` (no token or secret could be had: the identity is missing or
/// wrong), `LoginFailed` (SQL Server refused the login, 18456), `CannotConnect` (network,
/// timeouts), and the TLS kinds (`CertificateUntrusted`, `CertificateNameMismatch`,
/// `TlsFailed`) and any other `ErrorKind` label as they are.
pub fn sql_status(error: Option<&SqlError>) -> Option<(&'static str, String)> {
    let e = error?;
    let reason = match (e.kind, e.number) {
        (ErrorKind::AuthFailed, None) => "CredentialsUnavailable",
        (ErrorKind::AuthFailed, Some(_)) => "LoginFailed",
        (ErrorKind::Transient, _) => "CannotConnect",
        (kind, _) => kind.label(),
    };
    // Entra appends per-request ids and a timestamp ("Trace ID: … Correlation ID: …
    // Timestamp: …"): without them the report changes only when the cause does.
    let stable = e.message.split(" Trace ID:").next().unwrap_or_default();
    let mut message: String = stable.chars().take(900).collect();
    if let Some(n) = e.number {
        message = format!("SQL error {n}: {message}");
    }
    Some((reason, message))
}

/// Hands ready work to tasks while permits last: changed items one by one (in order), then
/// one batch of everything due for a drift check.
fn dispatch(
    scheduler: &mut Scheduler,
    store: &reflector::Store<WorkItem>,
    reconciler: &Arc<Reconciler>,
    permits: &Arc<Semaphore>,
    done: &mpsc::UnboundedSender<Done>,
    now: Instant,
) {
    let lookup = |key: &str| store.state().into_iter().find(|w| w.name_any() == key);
    while let Ok(permit) = permits.clone().try_acquire_owned() {
        let Some(key) = scheduler.next_changed(now) else {
            drop(permit);
            break;
        };
        let Some(wi) = lookup(&key) else {
            scheduler.remove(&key);
            continue;
        };
        spawn_batch(vec![wi], reconciler.clone(), done.clone(), permit);
    }
    if let Ok(permit) = permits.clone().try_acquire_owned() {
        let due = scheduler.due_for_sweep(now);
        let items: Vec<Arc<WorkItem>> = due.iter().filter_map(|k| lookup(k)).collect();
        if items.len() != due.len() {
            for k in &due {
                if lookup(k).is_none() {
                    scheduler.remove(k);
                }
            }
        }
        if items.is_empty() {
            drop(permit);
        } else {
            // Each sweep also lets go of connections to databases nothing lives in any more.
            let needed: std::collections::HashSet<String> = store
                .state()
                .iter()
                .filter_map(|w| w.spec.database.clone())
                .collect();
            let pool = reconciler.pool.clone();
            tokio::spawn(async move { pool.retain(&needed).await });
            spawn_batch(items, reconciler.clone(), done.clone(), permit);
        }
    }
}

fn spawn_batch(
    work_items: Vec<Arc<WorkItem>>,
    reconciler: Arc<Reconciler>,
    done: mpsc::UnboundedSender<Done>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    tokio::spawn(async move {
        let _permit = permit;
        let mut valid = Vec::new();
        let mut meta = Vec::new();
        for wi in &work_items {
            let generation = wi.metadata.generation.unwrap_or(0);
            let resource_generation = wi.spec.resource_ref.generation;
            match k8s::item(wi) {
                Ok(item) => {
                    valid.push(item);
                    meta.push((wi.name_any(), generation, resource_generation));
                }
                Err(message) => {
                    tracing::warn!(item = %wi.name_any(), %message, "invalid WorkItem");
                    let _ = done.send(Done {
                        key: wi.name_any(),
                        generation,
                        resource_generation,
                        // Invalid until the spec changes: reported, not retried.
                        outcome: Outcome {
                            error: Some(ItemError {
                                reason: INVALID_REQUEST.into(),
                                number: None,
                                message,
                            }),
                            ..Outcome::default()
                        },
                    });
                }
            }
        }
        let outcomes = reconciler.reconcile_all(&valid).await;
        for ((key, generation, resource_generation), outcome) in meta.into_iter().zip(outcomes) {
            let _ = done.send(Done {
                key,
                generation,
                resource_generation,
                outcome,
            });
        }
    });
}

#[cfg(test)]
mod sql_status_tests {
    use super::*;

    #[test]
    fn reasons_say_what_the_operator_must_fix() {
        // (why, error, expected prefix)
        let cases = [
            (
                "no token or secret: the identity is missing or wrong",
                Some(SqlError::new(
                    ErrorKind::AuthFailed,
                    "credential source AzureWorkloadIdentity: AADSTS70021",
                )),
                Some((
                    "CredentialsUnavailable",
                    "credential source AzureWorkloadIdentity",
                )),
            ),
            (
                "the server refused the login",
                Some(SqlError {
                    kind: ErrorKind::AuthFailed,
                    number: Some(18456),
                    message: "Login failed for user 'x'.".into(),
                }),
                Some(("LoginFailed", "SQL error 18456: Login failed")),
            ),
            (
                "network or timeout",
                Some(SqlError::new(ErrorKind::Transient, "could not connect")),
                Some(("CannotConnect", "could not connect")),
            ),
            (
                "a certificate problem keeps its own reason: it names the tls setting to fix",
                Some(SqlError::tls("invalid peer certificate: UnknownIssuer")),
                Some(("CertificateUntrusted", "not signed by a trusted CA")),
            ),
            (
                "Entra's per-request ids are dropped, so a repeated error is the same status",
                Some(SqlError::new(
                    ErrorKind::AuthFailed,
                    "AADSTS700213: No matching federated identity record. Trace ID: 1 Correlation ID: 2 Timestamp: 3",
                )),
                Some((
                    "CredentialsUnavailable",
                    "AADSTS700213: No matching federated identity record.",
                )),
            ),
            ("healthy: the annotation is removed", None, None),
        ];
        for (why, error, want) in cases {
            let got = sql_status(error.as_ref());
            match want {
                Some((reason, words)) => assert!(
                    got.as_ref()
                        .is_some_and(|(r, m)| *r == reason && m.contains(words) && !m.contains("Trace ID")),
                    "{why}: {got:?}"
                ),
                None => assert_eq!(got, None, "{why}"),
            }
        }
    }
}
