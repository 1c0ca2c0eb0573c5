//! The provider (manager) of provider-sqlserver. It never talks to SQL Server and never reads
//! a worker's SQL credentials.
//!
//! ```text
//! (Cluster)ProviderConfig ──configs──▶ ServiceAccount, Roles, worker Deployment (one per config)
//! Database|Login|User|Schema ──managed──▶ WorkItem (in the worker's namespace) ──▶ worker
//!                            ◀──────────── WorkItem status (written by the worker)
//! ```
//!
//! Start-up: install the WorkItem CRD (server-side apply), take the provider Lease (two
//! replicas are safe), start each controller once its CRD exists, serve `/healthz`,
//! `/readyz` and `/metrics`, and shut down gracefully on SIGTERM.
#![forbid(unsafe_code)]

pub mod configs;
pub mod connection;
pub mod managed;
pub mod metrics;
pub mod passwords;
pub mod status;
pub mod workers;

use apis::{
    generated::{
        clusterproviderconfigs::ClusterProviderConfig, databases::Database, logins::Login,
        providerconfigs::ProviderConfig, schemas::Schema, users::User, workitems::WorkItem,
    },
    queue::PROVIDER_MANAGER,
};
use futures::StreamExt;
use k8s_openapi::{
    api::apps::v1::Deployment,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::Config as ControllerConfig,
        events::{Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// Command line; every flag has an environment fallback.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "provider-sqlserver",
    version,
    about = "Manages SQL Server objects through identity-bound workers"
)]
pub struct Args {
    /// Namespace the provider runs in (workers of ClusterProviderConfigs run here too).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// This replica's identity for leader election.
    #[arg(long, env = "POD_NAME", default_value = "provider-sqlserver")]
    pub identity: String,
    /// Image of worker pods unless a config names one.
    #[arg(long, env = "WORKER_IMAGE", default_value = "provider-sqlserver-worker:dev")]
    pub worker_image: String,
    /// Default drift-sweep interval handed to workers (configs override it).
    #[arg(long, env = "POLL_INTERVAL", default_value = "10m")]
    pub poll_interval: String,
    /// Most reconciles in flight per controller.
    #[arg(long, env = "MAX_RECONCILE_RATE", default_value_t = 10)]
    pub max_reconcile_rate: u16,
    /// Log format of the provider and its workers: json or plain.
    #[arg(long, env = "LOG_FORMAT", default_value = "json", value_parser = ["json", "plain"])]
    pub log_format: String,
    /// Address of /healthz, /readyz and /metrics. Default: port 8080 on $POD_IP when set (a
    /// pod's own address; in the local environment every pod has its own loopback IP), else
    /// on 127.0.0.1.
    #[arg(long, env = "HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
    /// Take the provider Lease before reconciling (needed when running more than one replica).
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
}

/// Everything a reconcile needs.
pub struct Ctx {
    /// Kubernetes client.
    pub client: Client,
    /// The provider's namespace.
    pub provider_namespace: String,
    /// Default worker image.
    pub worker_image: String,
    /// Log format handed to workers.
    pub log_format: String,
    /// One event recorder (it folds repeats into series).
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Drift-sweep interval of workers whose config does not set one.
    pub default_poll: Duration,
}

/// Reconcile errors, with a stable label per variant for metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object is invalid; waiting for a change.
    #[error("{0}")]
    Invalid(String),
    /// An API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "Invalid",
            Self::Kube(_) => "KubernetesApi",
            Self::Other(_) => "Other",
        }
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// Installs or upgrades the internal WorkItem CRD. The Crossplane package cannot carry it
/// (Crossplane would treat it as a managed resource), so the provider does.
async fn install_work_item_crd(client: &Client) -> anyhow::Result<()> {
    let crd: CustomResourceDefinition = serde_saphyr::from_str(apis::WORK_ITEM_CRD_YAML)?;
    let name = crd.name_any();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply(PROVIDER_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await?;
    Ok(())
}

/// Waits until the CRD of `K` is established: controllers start only for kinds that exist
/// (Crossplane's safe-start may activate them later).
async fn wait_for_crd<K: Resource<DynamicType = ()>>(client: &Client) {
    let name = format!("{}.{}", K::plural(&()), K::group(&()));
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut logged = false;
    loop {
        if let Ok(Some(crd)) = api.get_opt(&name).await
            && crd
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"))
        {
            return;
        }
        if !logged {
            tracing::info!(crd = %name, "waiting for CRD before starting its controller");
            logged = true;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

async fn shutdown_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutting down");
}

fn run_managed<K>(ctx: Arc<Ctx>, concurrency: u16) -> tokio::task::JoinHandle<()>
where
    K: managed::ManagedKind,
{
    tokio::spawn(async move {
        wait_for_crd::<K>(&ctx.client).await;
        let items: Api<WorkItem> = Api::all(ctx.client.clone());
        Controller::new(
            Api::<K>::all(ctx.client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .with_config(ControllerConfig::default().concurrency(concurrency))
        // Back within seconds of an apiserver restart (apis::backoff).
        .trigger_backoff(apis::backoff::WatchBackoff::default())
        // The worker's status change is what moves a resource forward: map it back.
        .watches(
            items,
            watcher::Config::default().any_semantic(),
            |item: WorkItem| {
                (item.spec.resource_ref.kind == K::KIND).then(|| {
                    ObjectRef::new(&item.spec.resource_ref.name).within(&item.spec.resource_ref.namespace)
                })
            },
        )
        .graceful_shutdown_on(shutdown_signal())
        .run(managed::reconcile::<K>, managed::error_policy::<K>, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(kind = K::KIND, %error, "reconcile failed");
            }
        })
        .await;
    })
}

fn run_config<K>(ctx: Arc<Ctx>, concurrency: u16) -> tokio::task::JoinHandle<()>
where
    K: configs::ConfigKindExt,
{
    tokio::spawn(async move {
        wait_for_crd::<K>(&ctx.client).await;
        Controller::new(
            Api::<K>::all(ctx.client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .with_config(ControllerConfig::default().concurrency(concurrency))
        // Back within seconds of an apiserver restart (apis::backoff).
        .trigger_backoff(apis::backoff::WatchBackoff::default())
        .owns(
            Api::<Deployment>::all(ctx.client.clone()),
            watcher::Config::default().labels(&format!(
                "{}={}",
                workers::LABEL_NAME,
                workers::WORKER_COMPONENT
            )),
        )
        .graceful_shutdown_on(shutdown_signal())
        .run(configs::reconcile::<K>, configs::error_policy::<K>, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "config reconcile failed");
            }
        })
        .await;
    })
}

async fn serve_health(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    metrics: Arc<metrics::Metrics>,
) -> anyhow::Result<()> {
    use axum::{Router, http::StatusCode, routing::get};
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Runs the provider until SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    init_tracing(&args.log_format);
    let default_poll = apis::config::parse_go_duration(&args.poll_interval)
        .map_err(|e| anyhow::anyhow!("--poll-interval: {e}"))?;
    let client = Client::try_default().await?;
    let metrics = Arc::new(metrics::Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let health_addr = match args.health_addr {
        Some(addr) => addr,
        None => {
            let ip = std::env::var("POD_IP")
                .ok()
                .and_then(|ip| ip.parse().ok())
                .unwrap_or([127, 0, 0, 1].into());
            SocketAddr::new(ip, 8080)
        }
    };
    let health = tokio::spawn(serve_health(health_addr, ready.clone(), metrics.clone()));

    install_work_item_crd(&client).await?;
    tracing::info!("WorkItem CRD installed");

    if args.leader_election {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "provider-sqlserver")
            .with_namespace(&args.namespace)
            .with_identity(&args.identity)
            .with_field_manager(PROVIDER_MANAGER)
            .build()
            .await?;
        let (mut leading, _task) = manager.watch().await;
        tracing::info!(identity = %args.identity, "waiting for the provider Lease");
        while !*leading.borrow_and_update() {
            leading.changed().await?;
        }
        tracing::info!("holding the provider Lease");
        tokio::spawn(async move {
            // Losing the Lease means another replica works now: stop at once.
            while leading.changed().await.is_ok() {
                if !*leading.borrow() {
                    tracing::error!("lost the provider Lease; exiting");
                    std::process::exit(1);
                }
            }
        });
    }

    let ctx = Arc::new(Ctx {
        client: client.clone(),
        provider_namespace: args.namespace.clone(),
        worker_image: args.worker_image.clone(),
        log_format: args.log_format.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "provider-sqlserver".into(),
                instance: Some(args.identity.clone()),
            },
        ),
        metrics,
        default_poll,
    });
    let rate = args.max_reconcile_rate;
    let controllers = vec![
        run_config::<ProviderConfig>(ctx.clone(), rate),
        run_config::<ClusterProviderConfig>(ctx.clone(), rate),
        run_managed::<Database>(ctx.clone(), rate),
        run_managed::<Login>(ctx.clone(), rate),
        run_managed::<User>(ctx.clone(), rate),
        run_managed::<Schema>(ctx.clone(), rate),
    ];
    ready.store(true, Ordering::Relaxed);
    tokio::select! {
        _ = futures::future::join_all(controllers) => {},
        result = health => {
            result??;
        }
    }
    Ok(())
}
