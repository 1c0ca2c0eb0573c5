//! Starting, checking and stopping the components, each a process recorded by PID.

use super::{certs, tools};
use crate::util::{self, workspace_root};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Name of the process node.
pub const NODE: &str = "proc-node";
/// Image the smoke suite's Deployments use; mapped to `target/debug/testprog`.
pub const TESTPROG_IMAGE: &str = "testprog:dev";
/// Service CIDR: on paper only (ClusterIPs are allocated from it, nothing dials them).
const SERVICE_CIDR: &str = "10.0.0.0/24";

/// One started process.
#[derive(Serialize, Deserialize, Clone)]
struct Component {
    name: String,
    pid: u32,
    binary: PathBuf,
    /// Arguments it was started with, so `up` can restart it alone.
    #[serde(default)]
    args: Vec<String>,
}

/// What `up` recorded in `<dir>/state.json`.
#[derive(Serialize, Deserialize, Default)]
struct State {
    etcd_port: u16,
    api_port: u16,
    k8s_version: String,
    components: Vec<Component>,
}

/// A running environment.
pub struct Env {
    /// The tool binaries it runs on.
    pub tools: tools::Tools,
}

/// Cargo's target directory (`$CARGO_TARGET_DIR`, else `<repo>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => std::path::absolute(PathBuf::from(d)).unwrap_or_default(),
        None => workspace_root().join("target"),
    }
}

fn read_state(dir: &Path) -> Option<State> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).ok()?).ok()
}

fn write_state(dir: &Path, s: &State) -> Result<()> {
    std::fs::write(dir.join("state.json"), serde_json::to_string_pretty(s)?)?;
    Ok(())
}

/// True when `pid` is a live (not zombie) process running `binary`: a recycled PID that now
/// belongs to someone else must never be signalled.
fn alive(pid: u32, binary: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X') | None) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if cmdline.is_empty() {
        // Right after spawn the child can still be inside execve (a 100 MB binary): no cmdline
        // yet, but the kernel already shows the new command name (15 bytes at most).
        let comm = stat
            .split_once(" (")
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map(|(c, _)| c);
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().chars().take(15).collect::<String>());
        return comm.is_some() && comm.map(str::to_string) == name;
    }
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    Path::new(std::str::from_utf8(argv0).unwrap_or_default()) == binary
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, "--", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, wait up to `grace`, SIGKILL; then wait for it to be gone.
fn stop(c: &Component, grace: Duration) -> bool {
    if !alive(c.pid, &c.binary) {
        return false;
    }
    signal(c.pid, "TERM");
    let deadline = Instant::now() + grace;
    while alive(c.pid, &c.binary) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(c.pid, &c.binary) {
        eprintln!(
            "    {} (pid {}) ignored SIGTERM for {grace:?}: SIGKILL",
            c.name, c.pid
        );
        signal(c.pid, "KILL");
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(c.pid, &c.binary) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    true
}

/// A pod IP block (pods get 127.<block>.x.y) that no other running process kubelet on this
/// machine uses: side-by-side environments (a developer's, CI's smoke run, an e2e suite) would
/// otherwise hand out the same addresses and their pods' ports would collide.
fn free_ip_block(seed: u16) -> u8 {
    let mut taken = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        for arg in cmdline.split(|b| *b == 0) {
            if let Some(n) = std::str::from_utf8(arg)
                .ok()
                .and_then(|a| a.strip_prefix("--pod-ip-block="))
                && let Ok(n) = n.parse::<u8>()
            {
                taken.insert(n);
            }
        }
    }
    // Start at a seeded place so two `up`s racing each other are unlikely to pick the same one.
    (0..254u16)
        .map(|i| ((seed.wrapping_add(i)) % 254 + 1) as u8)
        .find(|b| !taken.contains(b))
        .unwrap_or(1)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn(dir: &Path, name: &str, binary: &Path, args: &[String]) -> Result<Component> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = File::create(logs.join(format!("{name}.log")))?;
    let child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Own process group: a Ctrl-C in the terminal that ran `up` must not reach them.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name} ({})", binary.display()))?;
    eprintln!(
        "    {name}: pid {} (log {}/{name}.log)",
        child.id(),
        logs.display()
    );
    Ok(Component {
        name: name.into(),
        pid: child.id(),
        binary: binary.to_path_buf(),
        args: args.to_vec(),
    })
}

fn log_tail(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join("logs").join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

/// Polls `ready` every 250 ms until it is true, `timeout` passes, or a started component dies.
fn wait(
    dir: &Path,
    what: &str,
    timeout: Duration,
    started: &[Component],
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let t0 = Instant::now();
    loop {
        if ready() {
            eprintln!("    {what}: ready in {:.1?}", t0.elapsed());
            return Ok(());
        }
        if let Some(dead) = started.iter().find(|c| !alive(c.pid, &c.binary)) {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", dead.pid)).unwrap_or_default();
            let cmd = std::fs::read(format!("/proc/{}/cmdline", dead.pid)).unwrap_or_default();
            bail!(
                "{} (pid {}) exited while waiting for {what} [stat {stat:?} cmdline {:?}]; its log ends:\n{}",
                dead.name,
                dead.pid,
                String::from_utf8_lossy(&cmd),
                log_tail(dir, &dead.name)
            );
        }
        if t0.elapsed() > timeout {
            let last = started.last().map(|c| log_tail(dir, &c.name)).unwrap_or_default();
            bail!("{what}: not ready within {timeout:?}; last component's log ends:\n{last}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn kubectl(tools: &tools::Tools, dir: &Path) -> Command {
    let mut cmd = Command::new(tools.k8s("kubectl"));
    cmd.env("KUBECONFIG", dir.join("kubeconfig")).stdin(Stdio::null());
    cmd
}

fn quiet_ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn kubeconfig(pki: &Path, port: u16, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate: {crt}\n    client-key: {key}\ncontexts:\n- name: testenv\n  context:\n    cluster: testenv\n    user: {user}\ncurrent-context: testenv\n",
        ca = pki.join("ca.crt").display(),
        crt = pki.join(format!("{user}.crt")).display(),
        key = pki.join(format!("{user}.key")).display(),
    )
}

fn healthy(dir: &Path, tools: &tools::Tools) -> bool {
    let Some(state) = read_state(dir) else {
        return false;
    };
    !state.components.is_empty()
        && state.components.iter().all(|c| alive(c.pid, &c.binary))
        && quiet_ok(kubectl(tools, dir).args(["get", "--raw", "/readyz"]))
}

/// When `pid` started: field 22 of `/proc/<pid>/stat` (clock ticks after boot; USER_HZ is 100
/// on every Linux we run on) plus the boot time from `/proc/stat`.
fn process_start(pid: u32) -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name; starttime is the 20th of them (field 22 overall).
    let ticks: u64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(btime) + Duration::from_millis(ticks * 10))
}

/// True when process `pid` started no later than `file` was written (the kubelet writes a pid
/// file right after the spawn): a PID recycled by an unrelated, later process fails this.
fn started_before(pid: u32, file: &Path) -> bool {
    let written = std::fs::metadata(file).and_then(|m| m.modified()).ok();
    match (process_start(pid), written) {
        // Start times have a 10 ms resolution; allow one tick.
        (Some(start), Some(written)) => start <= written + Duration::from_millis(10),
        _ => false,
    }
}

/// When the kubelet binary was rebuilt after the running kubelet started, restarts the kubelet
/// alone (its pods' processes restart with it), so `up` after a code change runs the new code.
fn restart_stale_kubelet(dir: &Path) -> Result<()> {
    let Some(mut state) = read_state(dir) else {
        return Ok(());
    };
    let Some(i) = state.components.iter().position(|c| c.name == "kubelet") else {
        return Ok(());
    };
    let c = state.components[i].clone();
    let built = std::fs::metadata(&c.binary).and_then(|m| m.modified()).ok();
    let started = process_start(c.pid);
    let (Some(built), Some(started)) = (built, started) else {
        return Ok(());
    };
    if built <= started || c.args.is_empty() {
        return Ok(());
    }
    eprintln!(
        "==> the kubelet binary changed since pid {} started: restarting the kubelet",
        c.pid
    );
    stop(&c, Duration::from_secs(30));
    state.components[i] = spawn(dir, "kubelet", &c.binary, &c.args)?;
    write_state(dir, &state)
}

/// Brings the environment up in `dir`; does nothing but check when it is already up.
pub fn up(dir: &Path) -> Result<Env> {
    let tools = tools::ensure()?;
    util::build_bins()?;
    let debug = target_dir().join("debug");
    let kubelet_bin = debug.join("kubelet");
    if healthy(dir, &tools) {
        restart_stale_kubelet(dir)?;
        eprintln!(
            "==> testenv already up in {} (kubeconfig {})",
            dir.display(),
            dir.join("kubeconfig").display()
        );
        return Ok(Env { tools });
    }
    // Something is half up (or nothing is): start from scratch.
    if read_state(dir).is_some() {
        down(dir)?;
    }
    eprintln!("==> testenv up in {}", dir.display());
    for sub in ["etcd", "kubelet", "pki"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    let pki = dir.join("pki");
    certs::generate(&pki)?;
    let (etcd_port, peer_port, api_port, kubelet_port) =
        (free_port()?, free_port()?, free_port()?, free_port()?);
    std::fs::write(dir.join("kubeconfig"), kubeconfig(&pki, api_port, "admin"))?;
    std::fs::write(
        dir.join("kubelet.kubeconfig"),
        kubeconfig(&pki, api_port, "kubelet"),
    )?;
    std::fs::create_dir_all(dir.join("images.d"))?;
    std::fs::write(
        dir.join("images.yaml"),
        format!(
            "# Written by `cargo xtask testenv up`; add images in images.d/*.yaml.\nimages:\n  {TESTPROG_IMAGE}: {}\n",
            debug.join("testprog").display()
        ),
    )?;

    let mut state = State {
        etcd_port,
        api_port,
        k8s_version: tools.k8s_version.clone(),
        components: Vec::new(),
    };
    let p = |p: PathBuf| p.display().to_string();
    let result = (|| -> Result<()> {
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        state.components.push(spawn(
            dir,
            "etcd",
            &tools.etcd,
            &[
                "--name=testenv".into(),
                format!("--data-dir={}", p(dir.join("etcd"))),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=testenv={peer_url}"),
                // Test data: durability is not worth the fsync latency.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        )?);
        write_state(dir, &state)?;
        wait(dir, "etcd", Duration::from_secs(30), &state.components, || {
            http_get(etcd_port, "/health").is_some_and(|r| r.contains("\"health\":\"true\""))
        })?;

        state.components.push(spawn(
            dir,
            "kube-apiserver",
            &tools.k8s("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                "--advertise-address=127.0.0.1".into(),
                // The lease reconciler rejects a loopback advertise address.
                "--endpoint-reconciler-type=none".into(),
                format!("--cert-dir={}", p(pki.join("apiserver-generated"))),
                format!("--tls-cert-file={}", p(pki.join("apiserver.crt"))),
                format!("--tls-private-key-file={}", p(pki.join("apiserver.key"))),
                format!("--client-ca-file={}", p(pki.join("ca.crt"))),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p(pki.join("sa.pub"))),
                format!("--service-account-signing-key-file={}", p(pki.join("sa.key"))),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--authorization-mode=Node,RBAC".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                // `kubectl logs` goes through the apiserver to the kubelet API on 127.0.0.1; the
                // node's Hostname does not resolve, and its serving cert is ours to verify.
                "--kubelet-preferred-address-types=InternalIP".into(),
                format!("--kubelet-certificate-authority={}", p(pki.join("ca.crt"))),
                format!("--kubelet-client-certificate={}", p(pki.join("admin.crt"))),
                format!("--kubelet-client-key={}", p(pki.join("admin.key"))),
            ],
        )?);
        write_state(dir, &state)?;
        wait(
            dir,
            "kube-apiserver",
            Duration::from_secs(120),
            &state.components,
            || quiet_ok(kubectl(&tools, dir).args(["get", "--raw", "/readyz"])),
        )?;

        let admin = p(dir.join("kubeconfig"));
        state.components.push(spawn(
            dir,
            "kube-controller-manager",
            &tools.k8s("kube-controller-manager"),
            &[
                format!("--kubeconfig={admin}"),
                "--controllers=*".into(),
                format!("--service-account-private-key-file={}", p(pki.join("sa.key"))),
                format!("--root-ca-file={}", p(pki.join("ca.crt"))),
                format!("--cluster-signing-cert-file={}", p(pki.join("ca.crt"))),
                format!("--cluster-signing-key-file={}", p(pki.join("ca.key"))),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
            ],
        )?);
        state.components.push(spawn(
            dir,
            "kube-scheduler",
            &tools.k8s("kube-scheduler"),
            &[
                format!("--kubeconfig={admin}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
            ],
        )?);
        write_state(dir, &state)?;
        // The serviceaccount controller creates `default` in every namespace; kuttl waits for it.
        wait(
            dir,
            "kube-controller-manager",
            Duration::from_secs(90),
            &state.components,
            || {
                quiet_ok(kubectl(&tools, dir).args(["-n", "default", "get", "serviceaccount", "default"]))
                    && quiet_ok(kubectl(&tools, dir).args([
                        "-n",
                        "default",
                        "get",
                        "configmap",
                        "kube-root-ca.crt",
                    ]))
            },
        )?;

        state.components.push(spawn(
            dir,
            "kubelet",
            &kubelet_bin,
            &[
                format!("--kubeconfig={}", p(dir.join("kubelet.kubeconfig"))),
                format!("--node-name={NODE}"),
                format!("--dir={}", p(dir.join("kubelet"))),
                format!("--log-dir={}", p(dir.join("logs").join("pods"))),
                format!("--images={}", p(dir.join("images.yaml"))),
                format!("--ca-file={}", p(pki.join("ca.crt"))),
                format!("--kubelet-version={}", tools.k8s_version),
                format!("--serve-port={kubelet_port}"),
                format!("--pod-ip-block={}", free_ip_block(api_port)),
                format!("--tls-cert-file={}", p(pki.join("kubelet-serving.crt"))),
                format!("--tls-key-file={}", p(pki.join("kubelet-serving.key"))),
            ],
        )?);
        write_state(dir, &state)?;
        wait(
            dir,
            "node Ready",
            Duration::from_secs(90),
            &state.components,
            || {
                kubectl(&tools, dir)
                    .args([
                        "get",
                        "node",
                        NODE,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                    ])
                    .output()
                    .is_ok_and(|o| o.stdout == b"True")
            },
        )?;
        let out = kubectl(&tools, dir).args(["version", "-o", "json"]).output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("kubectl version -o json")?;
        let server = v["serverVersion"]["gitVersion"].as_str().unwrap_or_default();
        if server != tools.k8s_version {
            bail!(
                "kubectl version reports server {server:?}, expected the pin {}",
                tools.k8s_version
            );
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("    testenv up failed: stopping what it started");
        let _ = down(dir);
        return Err(e);
    }
    eprintln!(
        "==> testenv up: kube-apiserver {} at https://127.0.0.1:{api_port}, node {NODE} Ready\n    export KUBECONFIG={}",
        tools.k8s_version,
        dir.join("kubeconfig").display()
    );
    Ok(Env { tools })
}

/// Stops, by PID, every process `up` recorded (kubelet first, etcd last), then any pod
/// process the kubelet left behind. Removes only `state.json`.
pub fn down(dir: &Path) -> Result<()> {
    let Some(state) = read_state(dir) else {
        eprintln!("==> testenv down: nothing recorded in {}", dir.display());
        return Ok(());
    };
    eprintln!("==> testenv down ({})", dir.display());
    for c in state.components.iter().rev() {
        // The kubelet stops its pods' processes first (each with a grace period).
        let grace = if c.name == "kubelet" {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(15)
        };
        let t0 = Instant::now();
        if stop(c, grace) {
            eprintln!("    stopped {} (pid {}) in {:.1?}", c.name, c.pid, t0.elapsed());
        }
    }
    // Pod processes whose kubelet died without stopping them: <dir>/kubelet/pods/*/<c>.pid.
    if let Ok(pods) = std::fs::read_dir(dir.join("kubelet").join("pods")) {
        for pod in pods.flatten() {
            for f in std::fs::read_dir(pod.path()).into_iter().flatten().flatten() {
                if f.path().extension().is_some_and(|e| e == "pid")
                    && let Some(pid) = std::fs::read_to_string(f.path())
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok())
                    && Path::new(&format!("/proc/{pid}")).exists()
                    && started_before(pid, &f.path())
                {
                    // The kubelet starts each container as its own process group leader.
                    let _ = Command::new("kill")
                        .args(["-s", "KILL", "--", &format!("-{pid}")])
                        .stderr(Stdio::null())
                        .status();
                    eprintln!("    killed left-over pod process group {pid}");
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
    }
    std::fs::remove_file(dir.join("state.json"))?;
    Ok(())
}

/// Prints each component, its PID and whether it is alive, and the node's readiness.
pub fn status(dir: &Path) -> Result<()> {
    let Some(state) = read_state(dir) else {
        println!("testenv in {}: not up", dir.display());
        return Ok(());
    };
    println!(
        "testenv in {} (kubernetes {}, apiserver port {})",
        dir.display(),
        state.k8s_version,
        state.api_port
    );
    let mut dead = Vec::new();
    for c in &state.components {
        let ok = alive(c.pid, &c.binary);
        println!(
            "  {:<24} pid {:<8} {:<8} log {}/logs/{}.log",
            c.name,
            c.pid,
            if ok { "running" } else { "DEAD" },
            dir.display(),
            c.name
        );
        if !ok {
            dead.push(c.name.clone());
        }
    }
    if let Some(kubectl_bin) = state
        .components
        .iter()
        .find(|c| c.name == "kube-apiserver")
        .and_then(|c| c.binary.parent())
    {
        let out = Command::new(kubectl_bin.join("kubectl"))
            .env("KUBECONFIG", dir.join("kubeconfig"))
            .args(["get", "node", NODE, "--no-headers"])
            .output();
        if let Ok(o) = out {
            println!(
                "  node: {}",
                String::from_utf8_lossy(if o.status.success() { &o.stdout } else { &o.stderr }).trim()
            );
        }
    }
    if !dead.is_empty() {
        bail!(
            "dead: {} (see their logs; `cargo xtask testenv down && cargo xtask testenv up` restarts)",
            dead.join(", ")
        );
    }
    Ok(())
}

/// Restarts one recorded component (e.g. `kube-apiserver`) with the arguments `up` gave it:
/// SIGTERM, `down_for` with it gone, start again (its earlier log is kept as
/// `<name>.log.<n>`), wait until the apiserver answers `/readyz` again. For fault tests.
pub fn restart_component(dir: &Path, name: &str, down_for: Duration) -> Result<()> {
    let mut state = read_state(dir).context("no testenv state recorded")?;
    let i = state
        .components
        .iter()
        .position(|c| c.name == name)
        .with_context(|| format!("no component {name} recorded"))?;
    let c = state.components[i].clone();
    if c.args.is_empty() {
        bail!("{name} was recorded without its arguments: cannot restart it");
    }
    stop(&c, Duration::from_secs(15));
    std::thread::sleep(down_for);
    let logs = dir.join("logs");
    let n = (1..)
        .find(|n| !logs.join(format!("{name}.log.{n}")).exists())
        .unwrap_or(1);
    let _ = std::fs::rename(
        logs.join(format!("{name}.log")),
        logs.join(format!("{name}.log.{n}")),
    );
    state.components[i] = spawn(dir, name, &c.binary, &c.args)?;
    write_state(dir, &state)?;
    let tools = tools::ensure()?;
    let started = [state.components[i].clone()];
    wait(
        dir,
        "kube-apiserver /readyz",
        Duration::from_secs(120),
        &started,
        || quiet_ok(kubectl(&tools, dir).args(["get", "--raw", "/readyz"])),
    )
}
