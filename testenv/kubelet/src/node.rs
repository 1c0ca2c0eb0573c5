//! Node registration, status heartbeats and Lease renewal.

use crate::Ctx;
use anyhow::Result;
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{
            DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{MicroTime, Time},
    },
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use std::{collections::BTreeMap, sync::Arc, time::Duration};
use tokio::sync::watch;

const LEASE_SECONDS: i32 = 40;
/// The kubelet's default lease renew interval (a quarter of the duration).
const RENEW: Duration = Duration::from_secs(10);
/// Conditions' heartbeat; the Lease carries liveness, so this can be slow.
const STATUS_EVERY: Duration = Duration::from_secs(60);

fn status(ctx: &Ctx, transition: Timestamp) -> NodeStatus {
    let now = Time(Timestamp::now());
    let cond = |t: &str, s: &str, reason: &str, msg: &str| NodeCondition {
        type_: t.into(),
        status: s.into(),
        reason: Some(reason.into()),
        message: Some(msg.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(Time(transition)),
    };
    // Generous capacity: pods here are processes, and a scheduler that says "Insufficient cpu"
    // would only test our numbers.
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", "64"),
        ("memory", "256Gi"),
        ("pods", "250"),
        ("ephemeral-storage", "1Ti"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
    .collect();
    NodeStatus {
        conditions: Some(vec![
            cond(
                "Ready",
                "True",
                "KubeletReady",
                "process kubelet is posting ready status",
            ),
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "no memory pressure",
            ),
            cond(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "no disk pressure",
            ),
            cond(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "no PID pressure",
            ),
            cond(
                "NetworkUnavailable",
                "False",
                "LoopbackNetwork",
                "pods use loopback addresses",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: "127.0.0.1".into(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: ctx.node_name.clone(),
            },
        ]),
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
            operating_system: std::env::consts::OS.into(),
            os_image: "process kubelet".into(),
            kernel_version: "n/a".into(),
            container_runtime_version: format!("process://{}", env!("CARGO_PKG_VERSION")),
            kubelet_version: ctx.kubelet_version.clone(),
            kube_proxy_version: String::new(),
            machine_id: ctx.node_name.clone(),
            system_uuid: ctx.node_name.clone(),
            boot_id: format!("{}", std::process::id()),
            ..Default::default()
        }),
        daemon_endpoints: (ctx.serve_port != 0).then(|| NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(ctx.serve_port),
            }),
        }),
        ..Default::default()
    }
}

/// Creates the Node if it does not exist, then writes its status (Ready).
pub async fn register(ctx: &Ctx) -> Result<()> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    if nodes.get_opt(&ctx.node_name).await?.is_none() {
        let labels: BTreeMap<String, String> = [
            ("kubernetes.io/hostname", ctx.node_name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
            ("testenv.kubesql.io/process-kubelet", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let node = Node {
            metadata: ObjectMeta {
                name: Some(ctx.node_name.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            // A concurrent registration (a restarted kubelet) is fine.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    write_status(ctx, Timestamp::now()).await?;
    renew_lease(ctx).await
}

async fn write_status(ctx: &Ctx, transition: Timestamp) -> Result<()> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let patch = json!({ "status": status(ctx, transition) });
    nodes
        .patch_status(&ctx.node_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn renew_lease(ctx: &Ctx) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let spec = json!({
        "holderIdentity": ctx.node_name,
        "leaseDurationSeconds": LEASE_SECONDS,
        "renewTime": MicroTime(Timestamp::now()),
    });
    match leases
        .patch(
            &ctx.node_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": spec })),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": { "name": ctx.node_name, "namespace": "kube-node-lease" },
                "spec": spec,
            }))?;
            leases.create(&PostParams::default(), &lease).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Renews the Lease every 10 s and refreshes the conditions every minute until shutdown.
pub async fn heartbeat(ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    let started = Timestamp::now();
    let mut lease = tokio::time::interval(RENEW);
    let mut status = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = lease.tick() => {
                if let Err(e) = renew_lease(&ctx).await {
                    tracing::warn!(error = %e, "lease renewal failed");
                }
            }
            _ = status.tick() => {
                if let Err(e) = write_status(&ctx, started).await {
                    tracing::warn!(error = %e, "node status update failed");
                }
            }
        }
    }
}
