//! Process kubelet for the local test environment.
//!
//! Registers a Node, renews its Lease, and runs the containers of every Pod bound to that Node
//! as local processes: the image is resolved to an executable through an image map, the
//! environment, ServiceAccount tokens and volumes are materialised under a per-pod directory,
//! probes run locally, restarts follow `restartPolicy`, and deletion is graceful. There are no
//! containers, namespaces or cgroups: this is for tests on machines without a container runtime.
#![forbid(unsafe_code)]

mod env;
mod events;
mod images;
mod node;
mod pod;
mod probe;
mod serve;
mod volumes;

use anyhow::{Context, Result};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, watcher},
};
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::watch;

/// Command line of the process kubelet.
#[derive(Parser, Debug)]
#[command(
    name = "kubelet",
    about = "Process kubelet: runs bound Pods as local processes"
)]
struct Args {
    /// Kubeconfig of the kubelet's own identity.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Name of the Node to register.
    #[arg(long, default_value = "proc-node")]
    node_name: String,
    /// State directory: per-pod directories (tokens, kubeconfigs, volumes) live below it.
    #[arg(long)]
    dir: PathBuf,
    /// Directory for container logs (`<namespace>_<pod>_<container>.log`).
    #[arg(long)]
    log_dir: PathBuf,
    /// Image map file (YAML). Files in `<its directory>/images.d/*.yaml` are read too, on every
    /// container start, so images can be registered while the kubelet runs.
    #[arg(long)]
    images: PathBuf,
    /// CA bundle that verifies the apiserver; copied into every pod's kubeconfig.
    #[arg(long)]
    ca_file: PathBuf,
    /// Version reported in the Node's nodeInfo.
    #[arg(long, default_value = "v0.0.0-process")]
    kubelet_version: String,
    /// Port (on 127.0.0.1) of the kubelet API that serves `kubectl logs`; 0 = do not serve.
    #[arg(long, default_value_t = 0)]
    serve_port: u16,
    /// Serving certificate (PEM) of the kubelet API.
    #[arg(long, default_value = "")]
    tls_cert_file: PathBuf,
    /// Serving key (PEM) of the kubelet API.
    #[arg(long, default_value = "")]
    tls_key_file: PathBuf,
    /// Pods get addresses 127.<this>.x.y. Environments running side by side on one machine
    /// must use different blocks, or their pods' ports collide.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    pod_ip_block: u8,
    /// First restart back-off after the initial immediate restart; doubles up to 5 minutes.
    #[arg(long, default_value_t = 10)]
    backoff_seconds: u64,
}

/// State shared by the node loop and every pod worker.
pub struct Ctx {
    /// Client with the kubelet's identity.
    pub client: Client,
    /// Node name.
    pub node_name: String,
    /// State directory.
    pub dir: PathBuf,
    /// Container log directory.
    pub log_dir: PathBuf,
    /// Image map file.
    pub images: PathBuf,
    /// CA bundle for pod kubeconfigs.
    pub ca_file: PathBuf,
    /// Apiserver URL as pods should use it.
    pub server: String,
    /// Apiserver port (KUBERNETES_SERVICE_PORT).
    pub api_port: u16,
    /// Kubelet version string for nodeInfo.
    pub kubelet_version: String,
    /// Restart back-off base.
    pub backoff: Duration,
    /// Port of the kubelet API (0: not served), advertised in the Node's daemonEndpoints.
    pub serve_port: u16,
    /// Second octet of every pod IP of this node.
    ip_block: u8,
    ips: Mutex<(BTreeSet<Ipv4Addr>, u32)>,
}

impl Ctx {
    /// Allocates a loopback address 127.<block>.x.y not used by another pod. Linux routes all
    /// of 127/8 to `lo`, so each pod can bind its own address and two pods can use one port.
    pub fn alloc_ip(&self) -> Ipv4Addr {
        let mut pool = self.ips.lock().unwrap_or_else(|e| e.into_inner());
        let (used, cursor) = &mut *pool;
        // Round robin over 127.<block>.1.1 … 127.<block>.254.254, so an address just released
        // (its process may still hold a socket in TIME_WAIT) is the last to be reused.
        for _ in 0..POOL {
            let n = *cursor % POOL;
            *cursor = cursor.wrapping_add(1);
            let ip = Ipv4Addr::new(127, self.ip_block, (n / 254 + 1) as u8, (n % 254 + 1) as u8);
            if used.insert(ip) {
                return ip;
            }
        }
        // 64 516 pods on one test node is not a case worth more than a shared address.
        Ipv4Addr::new(127, self.ip_block, 255, 1)
    }

    /// Returns an address to the pool.
    pub fn release_ip(&self, ip: Ipv4Addr) {
        self.ips.lock().unwrap_or_else(|e| e.into_inner()).0.remove(&ip);
    }
}

/// Addresses in one pod IP block.
const POOL: u32 = 254 * 254;

struct Worker {
    tx: watch::Sender<Option<Pod>>,
    task: tokio::task::JoinHandle<()>,
}

#[tokio::main]
async fn main() -> Result<()> {
    // An empty RUST_LOG (cargo leaves one behind) would silence everything: treat it as unset.
    // Directives match target prefixes, so `kube=…` would also catch this crate (`kubelet`).
    let filter = std::env::var("RUST_LOG").ok().filter(|f| !f.trim().is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            filter
                .as_deref()
                .unwrap_or("info,kube_client=warn,kube_runtime=warn"),
        ))
        .with_ansi(false)
        .init();
    // Only aws-lc-rs is compiled in; installing it explicitly avoids a runtime ambiguity panic.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();

    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
    let api_port = config.cluster_url.port_u16().unwrap_or(443);
    let client = Client::try_from(config)?;
    for d in [&args.dir, &args.log_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        node_name: args.node_name.clone(),
        dir: std::path::absolute(&args.dir)?,
        log_dir: std::path::absolute(&args.log_dir)?,
        images: std::path::absolute(&args.images)?,
        ca_file: std::path::absolute(&args.ca_file)?,
        server,
        api_port,
        kubelet_version: args.kubelet_version.clone(),
        backoff: Duration::from_secs(args.backoff_seconds),
        serve_port: args.serve_port,
        ip_block: args.pod_ip_block,
        ips: Mutex::new((BTreeSet::new(), 0)),
    });

    let server = if args.serve_port != 0 {
        let (cert, key, logs) = (
            args.tls_cert_file.clone(),
            args.tls_key_file.clone(),
            ctx.log_dir.clone(),
        );
        Some(tokio::spawn(async move {
            if let Err(e) = serve::serve(args.serve_port, cert, key, logs).await {
                tracing::error!(error = %format!("{e:#}"), "kubelet API server stopped");
            }
        }))
    } else {
        None
    };
    node::register(&ctx).await.context("registering the node")?;
    tracing::info!(node = %ctx.node_name, "node registered");
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let heartbeat = tokio::spawn(node::heartbeat(ctx.clone(), shutdown_rx.clone()));

    let pods: Api<Pod> = Api::all(client);
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut events = watcher(pods, wc).default_backoff().boxed();
    let mut workers: HashMap<String, Worker> = HashMap::new();
    // UIDs whose worker finished (pod deleted): later events for them must not restart it.
    let mut finished: HashSet<String> = HashSet::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut reap = tokio::time::interval(Duration::from_secs(2));

    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = reap.tick() => {
                workers.retain(|uid, w| {
                    if w.task.is_finished() {
                        finished.insert(uid.clone());
                        false
                    } else {
                        true
                    }
                });
            }
            ev = events.try_next() => {
                let ev = match ev {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "pod watch error");
                        continue;
                    }
                };
                match ev {
                    watcher::Event::Init => listed.clear(),
                    watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                        let Some(uid) = pod.metadata.uid.clone() else { continue };
                        listed.insert(uid.clone());
                        if let Some(w) = workers.get(&uid) {
                            let _ = w.tx.send(Some(pod));
                        } else if !finished.contains(&uid) {
                            let (tx, rx) = watch::channel(Some(pod));
                            let task = tokio::spawn(pod::run(ctx.clone(), rx, shutdown_rx.clone()));
                            workers.insert(uid, Worker { tx, task });
                        }
                    }
                    watcher::Event::Delete(pod) => {
                        if let Some(w) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                            let _ = w.tx.send(None);
                        }
                    }
                    watcher::Event::InitDone => {
                        // Pods that vanished while the watch was down: stop them.
                        for (uid, w) in &workers {
                            if !listed.contains(uid) {
                                let _ = w.tx.send(None);
                            }
                        }
                    }
                }
            }
        }
    }

    tracing::info!("stopping: terminating every pod process");
    let _ = shutdown_tx.send(true);
    for (_, w) in workers {
        // Each worker bounds its own stop (grace capped); this outer bound is a safety net.
        let _ = tokio::time::timeout(Duration::from_secs(20), w.task).await;
    }
    heartbeat.abort();
    if let Some(s) = server {
        s.abort();
    }
    Ok(())
}
