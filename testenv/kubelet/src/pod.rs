//! One worker task per Pod: prepares volumes and tokens, starts each container as a local
//! process (in its own process group, so a shell's children are signalled too), runs probes,
//! applies `restartPolicy` with back-off, writes Pod status, and on deletion stops the processes
//! gracefully and removes the Pod with a UID precondition.

use crate::{Ctx, env, events, images, probe, volumes};
use anyhow::{Context, Result};
use k8s_openapi::{
    api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, HostIP, Pod, PodCondition, PodIP,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};
use serde_json::json;
use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{process::Child, sync::watch};

/// Longest restart back-off, as the kubelet's.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long has its back-off reset.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// Grace for pod processes when the kubelet itself stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

struct Ctr {
    spec: Container,
    init: bool,
    child: Option<Child>,
    pid: Option<u32>,
    binary: String,
    started_at: Option<Timestamp>,
    restart_count: i32,
    last_terminated: Option<ContainerStateTerminated>,
    /// Set when the container has exited and will not be restarted.
    terminated: Option<ContainerStateTerminated>,
    waiting: Option<(String, String)>,
    next_start: Instant,
    crashes: u32,
    ready: bool,
    ready_ok: i32,
    ready_fail: i32,
    live_fail: i32,
    /// The startup probe passed (or there is none): readiness and liveness probes may run.
    startup_done: bool,
    startup_fail: i32,
    next_startup_probe: Instant,
    next_ready_probe: Instant,
    next_live_probe: Instant,
    /// After a failed liveness probe: when to escalate SIGTERM to SIGKILL.
    kill_at: Option<Instant>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

impl Ctr {
    fn new(spec: Container, init: bool, restart_count: i32) -> Self {
        Self {
            spec,
            init,
            child: None,
            pid: None,
            binary: String::new(),
            started_at: None,
            restart_count,
            last_terminated: None,
            terminated: None,
            waiting: Some(("ContainerCreating".into(), String::new())),
            next_start: Instant::now(),
            crashes: 0,
            ready: false,
            ready_ok: 0,
            ready_fail: 0,
            live_fail: 0,
            startup_done: false,
            startup_fail: 0,
            next_startup_probe: Instant::now(),
            next_ready_probe: Instant::now(),
            next_live_probe: Instant::now(),
            kill_at: None,
            env: Vec::new(),
            cwd: PathBuf::new(),
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }
}

struct Worker {
    ctx: Arc<Ctx>,
    ns: String,
    name: String,
    uid: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    volumes: Option<volumes::PodVolumes>,
    prep_error: Option<String>,
    next_prep: Instant,
    init: Vec<Ctr>,
    main: Vec<Ctr>,
    init_done: usize,
    init_failed: bool,
    start_time: Time,
    cond_times: HashMap<String, (String, Time)>,
    last_status: Option<serde_json::Value>,
}

/// Signals a process group (`kill -s SIG -- -PGID`); the group may already be gone.
async fn signal_group(pid: u32, sig: &str) {
    let _ = tokio::process::Command::new("kill")
        .args(["-s", sig, "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

fn restart_count_from(pod: &Pod, name: &str, init: bool) -> i32 {
    let st = pod.status.as_ref();
    let list = if init {
        st.and_then(|s| s.init_container_statuses.as_ref())
    } else {
        st.and_then(|s| s.container_statuses.as_ref())
    };
    list.into_iter()
        .flatten()
        .find(|c| c.name == name)
        .map(|c| c.restart_count)
        .unwrap_or(0)
}

/// Runs the pod until it is deleted (then removes it) or the kubelet stops.
pub async fn run(ctx: Arc<Ctx>, mut rx: watch::Receiver<Option<Pod>>, mut shutdown: watch::Receiver<bool>) {
    let Some(mut pod) = rx.borrow().clone() else {
        return;
    };
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ip = ctx.alloc_ip();
    let spec = pod.spec.clone().unwrap_or_default();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| Ctr::new(c.clone(), true, restart_count_from(&pod, &c.name, true)))
        .collect();
    let main = spec
        .containers
        .iter()
        .map(|c| Ctr::new(c.clone(), false, restart_count_from(&pod, &c.name, false)))
        .collect();
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or(Time(Timestamp::now()));
    let mut w = Worker {
        dir: ctx.dir.join("pods").join(format!("{ns}_{name}_{uid}")),
        ctx: ctx.clone(),
        ns,
        name,
        uid,
        ip,
        volumes: None,
        prep_error: None,
        next_prep: Instant::now(),
        init,
        main,
        init_done: 0,
        init_failed: false,
        start_time,
        cond_times: HashMap::new(),
        last_status: None,
    };
    tracing::info!(pod = %format!("{}/{}", w.ns, w.name), ip = %ip, "pod assigned");
    let terminal = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30);
            w.stop_all(Duration::from_secs(grace.max(0) as u64)).await;
            w.delete().await;
            break;
        }
        if !terminal {
            w.step(&pod).await;
        }
        tokio::select! {
            _ = tick.tick() => {}
            changed = rx.changed() => {
                let latest = rx.borrow().clone();
                match (changed, latest) {
                    (Ok(()), Some(p)) => pod = p,
                    _ => {
                        // Gone from the API (force deletion): nothing to report to.
                        w.stop_all(Duration::from_secs(2)).await;
                        break;
                    }
                }
            }
            _ = shutdown.changed() => {
                w.stop_all(SHUTDOWN_GRACE).await;
                ctx.release_ip(ip);
                return;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&w.dir);
    ctx.release_ip(ip);
    tracing::info!(pod = %format!("{}/{}", w.ns, w.name), "pod finished");
}

impl Worker {
    async fn step(&mut self, pod: &Pod) {
        if self.volumes.is_none() && Instant::now() >= self.next_prep {
            let want_kc = pod.spec.as_ref().and_then(|s| s.automount_service_account_token) != Some(false);
            let kc = want_kc.then(|| self.dir.join("kubeconfig"));
            match volumes::PodVolumes::create(&self.ctx, pod, &self.ip.to_string(), &self.dir, kc.as_deref())
                .await
            {
                Ok(v) => {
                    self.volumes = Some(v);
                    self.prep_error = None;
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    tracing::warn!(pod = %self.name, error = %msg, "cannot prepare pod");
                    self.prep_error = Some(msg);
                    self.next_prep = Instant::now() + Duration::from_secs(2);
                }
            }
        }
        if let Some(v) = self.volumes.as_mut() {
            v.refresh_due(&self.ctx, pod).await;
            let policy = pod
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.clone())
                .unwrap_or_else(|| "Always".into());
            if self.init_done < self.init.len() {
                let i = self.init_done;
                // Init containers run to completion: "Always" behaves as "OnFailure" for them.
                let p = if policy == "Never" { "Never" } else { "OnFailure" };
                self.step_ctr(pod, false, i, p).await;
                if let Some(t) = &self.init[i].terminated {
                    if t.exit_code == 0 {
                        self.init_done += 1;
                    } else {
                        self.init_failed = true;
                    }
                }
            } else {
                for i in 0..self.main.len() {
                    self.step_ctr(pod, true, i, &policy).await;
                }
                for i in 0..self.main.len() {
                    self.probe(i, pod).await;
                }
            }
        }
        self.write_status(pod).await;
    }

    fn ctr(&mut self, main: bool, i: usize) -> &mut Ctr {
        if main {
            &mut self.main[i]
        } else {
            &mut self.init[i]
        }
    }

    async fn step_ctr(&mut self, pod: &Pod, main: bool, i: usize, policy: &str) {
        let backoff = self.ctx.backoff;
        let dir = self.dir.clone();
        let ctx = self.ctx.clone();
        let c = self.ctr(main, i);
        if let Some(child) = c.child.as_mut() {
            let exited = match child.try_wait() {
                Ok(Some(status)) => Some(status),
                Ok(None) => None,
                Err(_) => Some(std::process::ExitStatus::default()),
            };
            if let Some(status) = exited {
                use std::os::unix::process::ExitStatusExt;
                let code = status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                let term = ContainerStateTerminated {
                    exit_code: code,
                    signal: status.signal(),
                    reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                    started_at: c.started_at.map(Time),
                    finished_at: Some(Time(Timestamp::now())),
                    container_id: c.pid.map(|p| format!("process://{p}")),
                    message: None,
                };
                tracing::info!(container = %c.spec.name, code, "container exited");
                let _ = std::fs::remove_file(dir.join(format!("{}.pid", c.spec.name)));
                c.child = None;
                c.ready = false;
                c.kill_at = None;
                let restart = match policy {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => true,
                };
                if restart {
                    let ran = c
                        .started_at
                        .map(|s| Timestamp::now().duration_since(s).as_secs())
                        .unwrap_or(0);
                    if ran as u64 >= BACKOFF_RESET.as_secs() {
                        c.crashes = 0;
                    }
                    // First restart is immediate, then base, 2×base, … up to 5 minutes.
                    let delay = if c.crashes == 0 {
                        Duration::ZERO
                    } else {
                        (backoff * 2u32.saturating_pow(c.crashes - 1)).min(MAX_BACKOFF)
                    };
                    c.crashes += 1;
                    c.restart_count += 1;
                    c.last_terminated = Some(term);
                    c.next_start = Instant::now() + delay;
                    c.waiting = (!delay.is_zero()).then(|| {
                        let msg = format!(
                            "back-off {}s restarting failed container={}",
                            delay.as_secs(),
                            c.spec.name
                        );
                        events::record(&ctx, pod, &c.spec.name, true, "BackOff", msg.clone());
                        ("CrashLoopBackOff".to_string(), msg)
                    });
                } else {
                    c.terminated = Some(term);
                }
            } else if let (Some(at), Some(pid)) = (c.kill_at, c.pid)
                && Instant::now() >= at
            {
                signal_group(pid, "KILL").await;
                c.kill_at = None;
            }
            return;
        }
        if c.terminated.is_none() && Instant::now() >= c.next_start {
            self.start(pod, main, i).await;
        }
    }

    async fn start(&mut self, pod: &Pod, main: bool, i: usize) {
        let ctx = self.ctx.clone();
        let dir = self.dir.clone();
        let base = env::Base {
            pod_ip: self.ip.to_string(),
            api_port: ctx.api_port,
            kubeconfig: self
                .dir
                .join("kubeconfig")
                .is_file()
                .then(|| self.dir.join("kubeconfig").display().to_string()),
            mount_root: String::new(),
            pod_dir: dir.display().to_string(),
        };
        let cname = self.ctr(main, i).spec.name.clone();
        let log_name = format!("{}_{}_{}.log", self.ns, self.name, cname);
        let c = self.ctr(main, i);
        match launch(&ctx, pod, c, base, &dir, &log_name).await {
            Ok(()) => {
                let msg = format!("Started container {} (pid {})", c.spec.name, c.pid.unwrap_or(0));
                events::record(&ctx, pod, &c.spec.name, false, "Started", msg);
            }
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::warn!(container = %c.spec.name, error = %msg, "cannot start container");
                let reason = if msg.contains("image map") || msg.contains("does not exist") {
                    "ErrImagePull"
                } else {
                    "CreateContainerConfigError"
                };
                // Retries come every 2 s: record the failure once per distinct message.
                if c.waiting.as_ref().map(|(_, m)| m) != Some(&msg) {
                    events::record(&ctx, pod, &c.spec.name, true, "Failed", format!("Error: {msg}"));
                }
                c.waiting = Some((reason.into(), msg));
                c.next_start = Instant::now() + Duration::from_secs(2);
            }
        }
    }

    async fn probe(&mut self, i: usize, pod: &Pod) {
        let ip = self.ip.to_string();
        // A failed liveness probe stops the container like a deletion would: with the pod's grace.
        let grace = Duration::from_secs(
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64,
        );
        let ctx = self.ctx.clone();
        let c = &mut self.main[i];
        if !c.running() {
            return;
        }
        let now = Instant::now();
        if !c.startup_done {
            let Some(p) = c.spec.startup_probe.clone() else {
                c.startup_done = true;
                return;
            };
            if now < c.next_startup_probe {
                return;
            }
            let ok = probe::run(&p, &c.spec, &ip, &c.env, &c.cwd).await;
            c.next_startup_probe =
                Instant::now() + Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
            if ok {
                // Readiness and liveness start now, as the kubelet's do after startup succeeds.
                c.startup_done = true;
                c.next_ready_probe = Instant::now();
                c.next_live_probe = Instant::now();
            } else {
                c.startup_fail += 1;
                if c.startup_fail >= p.failure_threshold.unwrap_or(3)
                    && c.kill_at.is_none()
                    && let Some(pid) = c.pid
                {
                    tracing::info!(container = %c.spec.name, "startup probe failed: restarting");
                    let msg = format!(
                        "Container {} failed startup probe, will be restarted",
                        c.spec.name
                    );
                    events::record(
                        &ctx,
                        pod,
                        &c.spec.name,
                        true,
                        "Unhealthy",
                        "Startup probe failed".into(),
                    );
                    events::record(&ctx, pod, &c.spec.name, false, "Killing", msg);
                    signal_group(pid, "TERM").await;
                    c.kill_at = Some(Instant::now() + grace);
                }
            }
            return;
        }
        match c.spec.readiness_probe.clone() {
            None => c.ready = true,
            Some(p) if now >= c.next_ready_probe => {
                let ok = probe::run(&p, &c.spec, &ip, &c.env, &c.cwd).await;
                c.next_ready_probe =
                    Instant::now() + Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
                if ok {
                    c.ready_ok += 1;
                    c.ready_fail = 0;
                    if c.ready_ok >= p.success_threshold.unwrap_or(1) {
                        c.ready = true;
                    }
                } else {
                    c.ready_fail += 1;
                    c.ready_ok = 0;
                    if c.ready_fail >= p.failure_threshold.unwrap_or(3) {
                        c.ready = false;
                    }
                }
            }
            Some(_) => {}
        }
        if let Some(p) = c.spec.liveness_probe.clone()
            && now >= c.next_live_probe
            && c.kill_at.is_none()
        {
            let ok = probe::run(&p, &c.spec, &ip, &c.env, &c.cwd).await;
            c.next_live_probe =
                Instant::now() + Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
            if ok {
                c.live_fail = 0;
            } else {
                c.live_fail += 1;
                if c.live_fail >= p.failure_threshold.unwrap_or(3)
                    && let Some(pid) = c.pid
                {
                    tracing::info!(container = %c.spec.name, "liveness probe failed: restarting");
                    let msg = format!(
                        "Container {} failed liveness probe, will be restarted",
                        c.spec.name
                    );
                    events::record(
                        &ctx,
                        pod,
                        &c.spec.name,
                        true,
                        "Unhealthy",
                        "Liveness probe failed".into(),
                    );
                    events::record(&ctx, pod, &c.spec.name, false, "Killing", msg);
                    signal_group(pid, "TERM").await;
                    c.kill_at = Some(Instant::now() + grace);
                }
            }
        }
    }

    /// SIGTERM to every running process group, SIGKILL to what is left after `grace`.
    async fn stop_all(&mut self, grace: Duration) {
        let pids: Vec<u32> = self
            .init
            .iter()
            .chain(&self.main)
            .filter(|c| c.running())
            .filter_map(|c| c.pid)
            .collect();
        for pid in &pids {
            signal_group(*pid, "TERM").await;
        }
        let deadline = Instant::now() + grace;
        loop {
            let mut alive = false;
            for c in self.init.iter_mut().chain(self.main.iter_mut()) {
                if let Some(ch) = c.child.as_mut() {
                    if matches!(ch.try_wait(), Ok(None)) {
                        alive = true;
                    } else {
                        c.child = None;
                    }
                }
            }
            if !alive || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for c in self.init.iter_mut().chain(self.main.iter_mut()) {
            if let Some(mut ch) = c.child.take() {
                if let Some(pid) = c.pid {
                    signal_group(pid, "KILL").await;
                }
                let _ = ch.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), ch.wait()).await;
            }
            let _ = std::fs::remove_file(self.dir.join(format!("{}.pid", c.spec.name)));
        }
    }

    async fn delete(&self) {
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        // This worker ends after the delete and is not started again for this UID, so a
        // transient failure must be retried here or the pod stays Terminating.
        for attempt in 1..=10 {
            match pods.delete(&self.name, &dp).await {
                Ok(_) => return,
                // Already gone, or a new pod took the name (the UID precondition protects it).
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
                Err(e) => {
                    tracing::warn!(pod = %self.name, attempt, error = %e, "delete failed");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    fn condition(&mut self, t: &str, ok: bool, reason: Option<&str>) -> PodCondition {
        let status = if ok { "True" } else { "False" }.to_string();
        let entry = self
            .cond_times
            .entry(t.to_string())
            .or_insert_with(|| (status.clone(), Time(Timestamp::now())));
        if entry.0 != status {
            *entry = (status.clone(), Time(Timestamp::now()));
        }
        PodCondition {
            type_: t.into(),
            status,
            last_transition_time: Some(entry.1.clone()),
            reason: reason.map(str::to_string),
            ..Default::default()
        }
    }

    async fn write_status(&mut self, pod: &Pod) {
        let all_done = !self.main.is_empty() && self.main.iter().all(|c| c.terminated.is_some());
        let phase = if self.init_failed
            || (all_done
                && self
                    .main
                    .iter()
                    .any(|c| c.terminated.as_ref().is_some_and(|t| t.exit_code != 0)))
        {
            "Failed"
        } else if all_done {
            "Succeeded"
        } else if self.init_done == self.init.len() && self.main.iter().all(|c| c.started_at.is_some()) {
            "Running"
        } else {
            "Pending"
        };
        let ready = phase == "Running" && self.main.iter().all(|c| c.ready && c.running());
        let completed = matches!(phase, "Succeeded" | "Failed").then_some("PodCompleted");
        let not_ready = if ready {
            None
        } else {
            completed.or(Some("ContainersNotReady"))
        };
        let scheduled = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled").cloned());
        let mut conditions = vec![
            self.condition("PodReadyToStartContainers", self.volumes.is_some(), None),
            self.condition("Initialized", self.init_done == self.init.len(), None),
            self.condition("Ready", ready, not_ready),
            self.condition("ContainersReady", ready, not_ready),
        ];
        conditions.push(scheduled.unwrap_or_else(|| self.condition("PodScheduled", true, None)));
        let statuses = |list: &[Ctr], prep: &Option<String>| -> Vec<ContainerStatus> {
            list.iter().map(|c| container_status(c, prep)).collect()
        };
        let ip = self.ip.to_string();
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "hostIPs": [HostIP { ip: "127.0.0.1".into() }],
            "podIP": ip,
            "podIPs": [PodIP { ip: ip.clone() }],
            "startTime": self.start_time,
            "containerStatuses": statuses(&self.main, &self.prep_error),
        });
        if !self.init.is_empty() {
            status["initContainerStatuses"] = json!(statuses(&self.init, &self.prep_error));
        }
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        match pods
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
        {
            Ok(_) => self.last_status = Some(status),
            Err(e) => tracing::warn!(pod = %self.name, error = %e, "status update failed"),
        }
    }
}

fn container_status(c: &Ctr, prep: &Option<String>) -> ContainerStatus {
    let state = if c.running() {
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: c.started_at.map(Time),
            }),
            ..Default::default()
        }
    } else if let Some(t) = &c.terminated {
        ContainerState {
            terminated: Some(t.clone()),
            ..Default::default()
        }
    } else {
        let (reason, message) = match (prep, &c.waiting) {
            (Some(p), _) => ("CreateContainerConfigError".to_string(), p.clone()),
            (None, Some((r, m))) => (r.clone(), m.clone()),
            (None, None) => ("ContainerCreating".to_string(), String::new()),
        };
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason),
                message: (!message.is_empty()).then_some(message),
            }),
            ..Default::default()
        }
    };
    ContainerStatus {
        name: c.spec.name.clone(),
        image: c.spec.image.clone().unwrap_or_default(),
        image_id: if c.binary.is_empty() {
            String::new()
        } else {
            format!("process://{}", c.binary)
        },
        container_id: c.pid.map(|p| format!("process://{p}")),
        ready: c.ready && c.running(),
        started: Some(c.running() && c.startup_done),
        restart_count: c.restart_count,
        state: Some(state),
        last_state: c.last_terminated.clone().map(|t| ContainerState {
            terminated: Some(t),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Resolves the program, builds env and mounts, and spawns the container's process.
async fn launch(
    ctx: &Ctx,
    pod: &Pod,
    c: &mut Ctr,
    mut base: env::Base,
    dir: &Path,
    log_name: &str,
) -> Result<()> {
    let image = c.spec.image.clone().unwrap_or_default();
    let binary = images::resolve(&ctx.images, &image)?;
    let root = volumes::mount_root(dir, &c.spec)?;
    base.mount_root = root.display().to_string();
    let mut vars = env::in_container(env::build(&ctx.client, pod, &c.spec, &base).await, &c.spec)?;
    // The image's own binaries are on PATH inside a container; here that is the directory of
    // the mapped executable (so `command: [testprog, …]` and exec probes find it).
    if let Some(bin_dir) = binary.parent()
        && let Some((_, path)) = vars.iter_mut().find(|(k, _)| k == "PATH")
    {
        *path = format!("{}:{path}", bin_dir.display());
    }
    let command = env::expand_all(c.spec.command.as_deref().unwrap_or_default(), &vars);
    let args = env::expand_all(c.spec.args.as_deref().unwrap_or_default(), &vars);
    // `command` replaces the image's entrypoint. A path that only exists inside an image (say
    // `/manager`) cannot exist here, so it stands for the mapped binary.
    let (program, argv): (PathBuf, Vec<String>) = match command.split_first() {
        Some((first, rest)) => {
            let p = Path::new(first);
            let prog = if p.is_absolute() && !p.exists() {
                binary.clone()
            } else {
                PathBuf::from(first)
            };
            (prog, rest.iter().cloned().chain(args).collect())
        }
        None => (binary.clone(), args),
    };
    let cwd = match c.spec.working_dir.as_deref() {
        Some(w) if !w.is_empty() => root.join(w.trim_start_matches('/')),
        _ => dir.to_path_buf(),
    };
    std::fs::create_dir_all(&cwd)?;
    let log_path = ctx.log_dir.join(log_name);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    {
        use std::io::Write;
        writeln!(
            log,
            "{}{} starting {} {:?} (restart {})",
            crate::serve::START_MARKER,
            Timestamp::now(),
            program.display(),
            argv,
            c.restart_count
        )?;
    }
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&argv)
        .env_clear()
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Own process group: signals reach a shell's children; terminal signals do not.
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let pid = child.id().context("spawned process has no pid")?;
    // Recorded so `testenv down` can reap a process whose kubelet died without stopping it.
    std::fs::write(dir.join(format!("{}.pid", c.spec.name)), pid.to_string())?;
    tracing::info!(container = %c.spec.name, init = c.init, pid, program = %program.display(), "container started");
    c.child = Some(child);
    c.pid = Some(pid);
    c.binary = binary.display().to_string();
    c.started_at = Some(Timestamp::now());
    c.waiting = None;
    c.ready = false;
    c.ready_ok = 0;
    c.ready_fail = 0;
    c.live_fail = 0;
    c.startup_done = false;
    c.startup_fail = 0;
    let delay = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        Duration::from_secs(
            p.as_ref()
                .and_then(|p| p.initial_delay_seconds)
                .unwrap_or(0)
                .max(0) as u64,
        )
    };
    c.next_ready_probe = Instant::now() + delay(&c.spec.readiness_probe);
    c.next_live_probe = Instant::now() + delay(&c.spec.liveness_probe);
    c.next_startup_probe = Instant::now() + delay(&c.spec.startup_probe);
    c.env = vars;
    c.cwd = cwd;
    Ok(())
}
