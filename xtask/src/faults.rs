//! `cargo xtask faults`: fault-injection scenarios on a fresh local environment.
//!
//! ```text
//! e2e::start (cluster + emulator + provider + ClusterProviderConfig default)
//!   ─▶ worker-kill         SIGKILL of the worker process while its queue is half done
//!   ─▶ lease-takeover      two worker replicas; the Lease holder frozen then killed, the standby takes over
//!   ─▶ sql-outage          the emulator stopped for 30 s (connections refused), then back
//!   ─▶ sql-drops           the emulator closes connections mid-request (before or after running it)
//!   ─▶ apiserver-restart   kube-apiserver stopped and started again
//!   ─▶ provider-restart    SIGKILL of the provider during a mass deletion
//!   ─▶ hostile-names       200 hostile external names applied concurrently
//!   ─▶ summary ─▶ stop everything by PID (always; logs kept on failure)
//! ```
//!
//! Every scenario works in its own namespace, starts with no emulator faults, and checks what
//! SQL Server ended up with against the emulator's catalog dump (`GET /catalog`) and statement
//! counters (`GET /counters`): each object created or dropped exactly once, nothing else
//! touched. Every wait is bounded; no assertion is on a duration except the Lease takeover,
//! whose bound (lease duration + renew grace + scheduling slack) is the property under test.

use crate::{
    bench::http,
    e2e::{self, PROVIDER_NAMESPACE, Session},
    testenv::cluster,
};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Every scenario, in the order they run (names are what `--only` takes).
const SCENARIOS: &[&str] = &[
    "worker-kill",
    "lease-takeover",
    "sql-outage",
    "sql-drops",
    "apiserver-restart",
    "provider-restart",
    "hostile-names",
];

/// The worker's Lease duration and renew grace (worker/src/run.rs): a standby takes over
/// within their sum after the holder stops renewing.
const LEASE_SECONDS: u64 = 15;
const LEASE_GRACE_SECONDS: u64 = 5;
/// Slack on top of that for a loaded 2-core machine (process start, watch delivery).
const TAKEOVER_SLACK_SECONDS: u64 = 15;
/// How long SQL Server is unreachable in `sql-outage`.
const OUTAGE: Duration = Duration::from_secs(30);
/// Bound of every wait for resources to converge.
const CONVERGE: Duration = Duration::from_secs(300);

/// Flags of `cargo xtask faults`.
#[derive(clap::Args, Debug, Default)]
pub struct FaultsArgs {
    /// Run only these scenarios (comma-separated): worker-kill, lease-takeover, sql-outage,
    /// sql-drops, apiserver-restart, provider-restart, hostile-names.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// The `faults` step of `cargo xtask test`: every scenario.
pub fn step() -> Result<()> {
    run(&FaultsArgs::default())
}

/// `cargo xtask faults`: start an environment, run the scenarios, stop it (even on failure).
pub fn run(args: &FaultsArgs) -> Result<()> {
    if let Some(unknown) = args.only.iter().find(|s| !SCENARIOS.contains(&s.trim())) {
        bail!("unknown scenario {unknown:?}; known: {}", SCENARIOS.join(","));
    }
    let chosen: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| o.trim() == *s))
        .collect();
    let started = Instant::now();
    let mut session = e2e::start(&format!("faults-{}", std::process::id()))?;
    eprintln!(
        "    environment, emulator and provider up in {:.0?}",
        started.elapsed()
    );
    let dir = session.dir.clone();
    let mut results: Vec<(&str, Duration, Result<String>)> = Vec::new();
    for name in chosen {
        eprintln!("==> faults scenario {name}");
        let t0 = Instant::now();
        let mut f = Faults { s: &mut session };
        // A panic in a scenario is its failure, never a reason to leave processes running.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f.prepare().and_then(|()| match name {
                "worker-kill" => f.worker_kill(),
                "lease-takeover" => f.lease_takeover(),
                "sql-outage" => f.sql_outage(),
                "sql-drops" => f.sql_drops(),
                "apiserver-restart" => f.apiserver_restart(),
                "provider-restart" => f.provider_restart(),
                _ => f.hostile_names(),
            })
        }))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the scenario panicked")));
        match &outcome {
            Ok(summary) => eprintln!("    {name}: ok in {:.0?}: {summary}", t0.elapsed()),
            Err(e) => eprintln!("    {name}: FAILED after {:.0?}: {e:#}", t0.elapsed()),
        }
        results.push((name, t0.elapsed(), outcome));
    }
    eprintln!("\n==> faults summary ({:.0?} in all)", started.elapsed());
    let mut failed = Vec::new();
    for (name, took, outcome) in &results {
        match outcome {
            Ok(summary) => eprintln!("  {name:<18} ok      {took:>6.0?}  {summary}"),
            Err(e) => {
                eprintln!("  {name:<18} FAILED  {took:>6.0?}  {e:#}");
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        eprintln!("    logs kept in {}/logs", dir.display());
    }
    let stopped = session.stop();
    if !failed.is_empty() {
        bail!("fault scenario(s) failed: {}", failed.join(", "));
    }
    stopped?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}

/// One managed resource as listed: kind, name, and its Ready and Synced conditions.
#[derive(Debug)]
struct Mr {
    kind: String,
    name: String,
    ready: Cond,
    synced: Cond,
}

/// A condition's status, reason and message (empty when absent).
#[derive(Debug, Default, Clone)]
struct Cond {
    status: String,
    reason: String,
    message: String,
}

impl Cond {
    fn of(obj: &Value, kind: &str) -> Cond {
        obj["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
            .map(|c| Cond {
                status: c["status"].as_str().unwrap_or_default().into(),
                reason: c["reason"].as_str().unwrap_or_default().into(),
                message: c["message"].as_str().unwrap_or_default().into(),
            })
            .unwrap_or_default()
    }
}

/// What to create: a Database or a SQL Login, with its external (SQL) name.
#[derive(Clone)]
enum Object {
    Database,
    Login,
}

/// A managed resource to apply.
#[derive(Clone)]
struct Spec {
    object: Object,
    name: String,
    external: String,
    config: String,
}

impl Spec {
    fn database(name: impl Into<String>, external: impl Into<String>) -> Spec {
        Spec {
            object: Object::Database,
            name: name.into(),
            external: external.into(),
            config: "default".into(),
        }
    }

    fn login(name: impl Into<String>, external: impl Into<String>) -> Spec {
        Spec {
            object: Object::Login,
            ..Spec::database(name, external)
        }
    }

    /// The manifest, as JSON (one YAML document): hostile names need no YAML escaping.
    fn manifest(&self, namespace: &str) -> String {
        let (kind, for_provider) = match self.object {
            Object::Database => ("Database", json!({"recoveryModel": "Simple"})),
            Object::Login => (
                "Login",
                json!({"type": "Sql", "checkPolicy": true,
                       "passwordSecretRef": {"name": format!("{}-password", self.name), "key": "password"}}),
            ),
        };
        json!({
            "apiVersion": "sqlserver.kubesql.io/v1alpha1",
            "kind": kind,
            "metadata": {
                "name": self.name,
                "namespace": namespace,
                "annotations": {"crossplane.io/external-name": self.external},
            },
            "spec": {
                "forProvider": for_provider,
                "providerConfigRef": {"kind": "ClusterProviderConfig", "name": self.config},
            },
        })
        .to_string()
    }
}

/// Names of the databases in a catalog dump.
fn database_names(catalog: &Value) -> BTreeSet<String> {
    names(&catalog["databases"])
}

/// Names of the server principals (logins, roles) in a catalog dump.
fn principal_names(catalog: &Value) -> BTreeSet<String> {
    names(&catalog["server_principals"])
}

fn names(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["name"].as_str().map(str::to_owned))
        .collect()
}

/// Statements of one kind (`"CREATE DATABASE"`, `"DROP LOGIN"`, …) the emulator executed.
fn statements(counters: &Value, kind: &str) -> u64 {
    counters["statements"][kind].as_u64().unwrap_or(0)
}

/// How many more statements of `kind` ran in `after` than in `before` (0 if the emulator
/// restarted in between and its counters started over).
fn grew(after: &Value, before: &Value, kind: &str) -> u64 {
    statements(after, kind).saturating_sub(statements(before, kind))
}

/// The externals of `specs` of one kind.
fn externals(specs: &[Spec], object: fn(&Object) -> bool) -> BTreeSet<String> {
    specs
        .iter()
        .filter(|s| object(&s.object))
        .map(|s| s.external.clone())
        .collect()
}

fn is_database(o: &Object) -> bool {
    matches!(o, Object::Database)
}

fn is_login(o: &Object) -> bool {
    matches!(o, Object::Login)
}

/// `a` minus `b`, for messages.
fn minus(a: &BTreeSet<String>, b: &BTreeSet<String>) -> Vec<String> {
    a.difference(b).cloned().collect()
}

/// 200 external names meant to break quoting, literals, batches and encodings, each made
/// unique by an index (SQL Server compares names case-insensitively, so the index, not the
/// case, keeps them apart), every one within sysname's 128 UTF-16 units and free of what
/// validation rightly refuses (control characters, leading/trailing whitespace).
fn hostile_names(count: usize) -> Vec<String> {
    let bases = [
        "x]; DROP LOGIN sa;--",
        "o'brien",
        "[bracketed]",
        "]",
        "]]",
        "a]b]]c",
        "N'x'); --",
        "'; SHUTDOWN WITH NOWAIT; --",
        "/* comment */",
        "--",
        "\"double\"",
        "%_like[^]",
        "Zürich データ 😀",
        "select",
        "@P1",
        "0x41",
        "a;b",
        "x'); DROP DATABASE master; --",
        "GO\nGO",
        "$(var)",
    ];
    (0..count)
        .map(|i| {
            let base = bases[i % bases.len()].replace('\n', " ");
            match i % 10 {
                // The longest names: brackets doubled by quoting take 128 units to ~190.
                9 => {
                    let tail = format!("#{i:03}");
                    let mut n = "]a".repeat(64);
                    n.truncate(128 - tail.len());
                    n + &tail
                }
                _ => format!("{base} #{i:03}"),
            }
        })
        .collect()
}

/// The running scenarios' handle on the session.
struct Faults<'a> {
    s: &'a mut Session,
}

impl Faults<'_> {
    fn dir(&self) -> &Path {
        &self.s.dir
    }

    /// Every scenario starts with the emulator up and no faults set.
    fn prepare(&mut self) -> Result<()> {
        if http(self.s.admin_port, "GET", "/faults", None).is_err() {
            self.s.start_emulator()?;
        }
        self.faults(json!({"delay_ms": 0, "drop_next": 0, "refuse_logins_secs": 0}))
    }

    /// kubectl with `args`; its stdout, or an error with its stderr.
    fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = self
            .s
            .kubectl()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("starting kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn kubectl_json(&self, args: &[&str]) -> Result<Value> {
        let out = self.kubectl(args)?;
        serde_json::from_str(&out).with_context(|| format!("kubectl {}: not JSON", args.join(" ")))
    }

    /// Applies documents (YAML or JSON) at once ([`e2e::apply_concurrently`]), within 120 s.
    fn apply(&self, file: &str, docs: &[String]) -> Result<()> {
        let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
        let prefix = format!("faults-{file}");
        e2e::apply_concurrently(self.s, self.dir(), &prefix, &docs, Duration::from_secs(120))
    }

    /// A namespace and the managed resources in it.
    fn create(&self, namespace: &str, specs: &[Spec]) -> Result<()> {
        self.apply(
            &format!("{namespace}-ns"),
            &[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}).to_string()],
        )?;
        let docs: Vec<String> = specs.iter().map(|s| s.manifest(namespace)).collect();
        self.apply(namespace, &docs)
    }

    /// Emulator admin API.
    fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let body = body.map(Value::to_string);
        let text = http(self.s.admin_port, method, path, body.as_deref())?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("emulator {path}: not JSON"))
    }

    fn faults(&self, body: Value) -> Result<()> {
        self.admin("POST", "/faults", Some(&body)).map(drop)
    }

    fn counters(&self) -> Result<Value> {
        self.admin("GET", "/counters", None)
    }

    fn catalog(&self) -> Result<Value> {
        self.admin("GET", "/catalog", None)
    }

    /// The Databases and Logins of `namespace`.
    fn mrs(&self, namespace: &str) -> Result<Vec<Mr>> {
        let list = self.kubectl_json(&[
            "get",
            "databases.sqlserver.kubesql.io,logins.sqlserver.kubesql.io",
            "-n",
            namespace,
            "-o",
            "json",
        ])?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| Mr {
                kind: o["kind"].as_str().unwrap_or_default().into(),
                name: o["metadata"]["name"].as_str().unwrap_or_default().into(),
                ready: Cond::of(o, "Ready"),
                synced: Cond::of(o, "Synced"),
            })
            .collect())
    }

    /// Waits until `namespace` holds exactly `count` managed resources, every one Ready and
    /// Synced. On timeout the error shows a few that are not.
    fn wait_ready(&self, namespace: &str, count: usize, timeout: Duration) -> Result<()> {
        let mut last = Vec::new();
        let outcome = e2e::wait_for(
            &format!("{count} resources in {namespace} Ready and Synced"),
            timeout,
            || match self.mrs(namespace) {
                Ok(mrs) => {
                    let total = mrs.len();
                    last = mrs
                        .into_iter()
                        .filter(|m| m.ready.status != "True" || m.synced.status != "True")
                        .collect();
                    last.is_empty() && total == count
                }
                Err(_) => false,
            },
        );
        outcome.with_context(|| {
            let shown: Vec<String> = last
                .iter()
                .take(5)
                .map(|m| format!("{}/{}: Ready {:?} Synced {:?}", m.kind, m.name, m.ready, m.synced))
                .collect();
            format!("{} not ready, e.g. {}", last.len(), shown.join("; "))
        })
    }

    /// Deletes every Database and Login of `namespace` (not waiting).
    fn delete_all(&self, namespace: &str) -> Result<()> {
        self.kubectl(&[
            "delete",
            "databases.sqlserver.kubesql.io,logins.sqlserver.kubesql.io",
            "--all",
            "-n",
            namespace,
            "--wait=false",
        ])
        .map(drop)
    }

    /// Waits until no managed resource is left in `namespace` (every finalizer done).
    fn wait_gone(&self, namespace: &str, timeout: Duration) -> Result<()> {
        e2e::wait_for(&format!("every resource in {namespace} deleted"), timeout, || {
            self.mrs(namespace).is_ok_and(|m| m.is_empty())
        })
    }

    /// Deletes the resources of `namespace` and checks that exactly the given SQL objects
    /// were dropped, each once.
    fn delete_and_check(&self, namespace: &str, specs: &[Spec]) -> Result<()> {
        let before = self.counters()?;
        let catalog = self.catalog()?;
        self.delete_all(namespace)?;
        self.wait_gone(namespace, CONVERGE)?;
        let after = self.counters()?;
        let now = self.catalog()?;
        let dbs = externals(specs, is_database);
        let logins = externals(specs, is_login);
        let expected_dbs: BTreeSet<String> = database_names(&catalog).difference(&dbs).cloned().collect();
        let expected_logins: BTreeSet<String> =
            principal_names(&catalog).difference(&logins).cloned().collect();
        ensure!(
            database_names(&now) == expected_dbs,
            "after deleting {namespace}: databases left {:?}, unexpectedly gone {:?}",
            minus(&database_names(&now), &expected_dbs),
            minus(&expected_dbs, &database_names(&now))
        );
        ensure!(
            principal_names(&now) == expected_logins,
            "after deleting {namespace}: logins left {:?}, unexpectedly gone {:?}",
            minus(&principal_names(&now), &expected_logins),
            minus(&expected_logins, &principal_names(&now))
        );
        let dropped_dbs = grew(&after, &before, "DROP DATABASE");
        let dropped_logins = grew(&after, &before, "DROP LOGIN");
        ensure!(
            dropped_dbs == dbs.len() as u64 && dropped_logins == logins.len() as u64,
            "deleting {namespace}: DROP DATABASE ran {dropped_dbs} times for {} databases, DROP LOGIN {dropped_logins} for {} logins",
            dbs.len(),
            logins.len()
        );
        self.kubectl(&["delete", "namespace", namespace, "--wait=false"])
            .map(drop)
    }

    /// The pods of a Deployment-like name prefix in `namespace`: (name, PID of its only
    /// container from `process://<pid>`, restart count).
    fn pods(&self, namespace: &str, prefix: &str) -> Result<Vec<(String, Option<u32>, i64)>> {
        let list = self.kubectl_json(&["get", "pods", "-n", namespace, "-o", "json"])?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| {
                let name = p["metadata"]["name"].as_str()?;
                let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
                // Deployment pods are <deployment>-<rs hash>-<suffix>: exactly two dashes left.
                if rest.matches('-').count() != 1 {
                    return None;
                }
                let status = &p["status"]["containerStatuses"][0];
                let pid = status["containerID"]
                    .as_str()
                    .and_then(|c| c.strip_prefix("process://"))
                    .and_then(|p| p.parse().ok());
                Some((name.to_owned(), pid, status["restartCount"].as_i64().unwrap_or(0)))
            })
            .collect())
    }

    /// SIGKILL of a pod's process (see [`Faults::signal_pod_process`]).
    fn kill_pod_process(&self, pid: u32, binary: &str) -> Result<()> {
        self.signal_pod_process(pid, binary, "KILL")
    }

    /// Sends `signal` to a pod's process, after checking that the PID runs `binary` (a
    /// recycled PID belonging to something else is never signalled).
    fn signal_pod_process(&self, pid: u32, binary: &str, signal: &str) -> Result<()> {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv0 =
            String::from_utf8_lossy(cmdline.split(|b| *b == 0).next().unwrap_or_default()).into_owned();
        ensure!(
            argv0.ends_with(&format!("/{binary}")),
            "pid {pid} runs {argv0:?}, not {binary}: not signalled"
        );
        let status = Command::new("kill")
            .args(["-s", signal, "--", &pid.to_string()])
            .status()?;
        ensure!(status.success(), "kill -s {signal} {pid} failed");
        eprintln!("    SIG{signal} to {binary} (pid {pid})");
        Ok(())
    }

    /// `GET /readyz` of a worker's pod on its pod IP (a loopback address in this environment).
    fn worker_readyz(&self, worker: &str) -> Result<String> {
        use std::io::{Read, Write};
        let (pod, _, _) = self
            .pods(PROVIDER_NAMESPACE, worker)?
            .into_iter()
            .next()
            .with_context(|| format!("no pod of {worker}"))?;
        let ip: std::net::Ipv4Addr = self
            .kubectl(&[
                "-n",
                PROVIDER_NAMESPACE,
                "get",
                "pod",
                &pod,
                "-o",
                "jsonpath={.status.podIP}",
            ])?
            .trim()
            .parse()
            .with_context(|| format!("pod IP of {pod}"))?;
        ensure!(
            ip.is_loopback(),
            "pod IP {ip} of {pod} is not a loopback address: not dialled"
        );
        let mut stream = std::net::TcpStream::connect_timeout(&(ip, 8080).into(), Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET /readyz HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }

    /// Polls the emulator's counters until `check` holds (bounded).
    fn wait_counters(&self, what: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Result<Value> {
        let mut seen = Value::Null;
        e2e::wait_for(what, timeout, || {
            seen = self.counters().unwrap_or(Value::Null);
            check(&seen)
        })?;
        Ok(seen)
    }

    /// `worker-kill`: SIGKILL of the worker process while half its queue is done. The kubelet
    /// restarts it; the queue drains; every database is created exactly once.
    fn worker_kill(&mut self) -> Result<String> {
        const NS: &str = "faults-worker-kill";
        const N: u64 = 60;
        let specs: Vec<Spec> = (0..N)
            .map(|i| Spec::database(format!("wk-{i:03}"), format!("faults_wk_{i:03}")))
            .collect();
        let worker = "sqlserver-worker-cpc-default";
        let (pod, pid, restarts) = self
            .pods(PROVIDER_NAMESPACE, worker)?
            .into_iter()
            .next()
            .context("no worker pod of config default")?;
        let pid = pid.context("worker pod without a process id")?;
        let before = self.counters()?;
        let created = |c: &Value| grew(c, &before, "CREATE DATABASE");
        // Slow statements so that the kill lands with the queue half done.
        self.faults(json!({"delay_ms": 40}))?;
        self.create(NS, &specs)?;
        let at_kill = created(&self.wait_counters("10 databases created", CONVERGE, |c| created(c) >= 10)?);
        self.kill_pod_process(pid, "worker")?;
        ensure!(
            at_kill < N,
            "all {N} databases were created before the kill: the scenario did not kill mid-queue"
        );
        self.faults(json!({"delay_ms": 0}))?;
        self.wait_ready(NS, N as usize, CONVERGE)?;
        let after = self.counters()?;
        let catalog = self.catalog()?;
        let missing = minus(&externals(&specs, is_database), &database_names(&catalog));
        ensure!(missing.is_empty(), "databases missing in SQL: {missing:?}");
        ensure!(
            created(&after) == N,
            "CREATE DATABASE ran {} times for {N} databases",
            created(&after)
        );
        let now = self.pods(PROVIDER_NAMESPACE, worker)?;
        ensure!(
            now.iter().any(|(p, _, r)| *p == pod && *r > restarts),
            "the worker pod {pod} was not restarted by the kubelet: {now:?}"
        );
        self.delete_and_check(NS, &specs)?;
        Ok(format!(
            "killed after {at_kill}/{N} creates; {N} databases created once each, dropped once each"
        ))
    }

    /// A ClusterProviderConfig on the emulator with its own admin Secret.
    fn config(&self, name: &str, replicas: u32) -> Result<()> {
        let secret = format!("sqlserver-admin-{name}");
        let docs = [
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": secret, "namespace": PROVIDER_NAMESPACE},
                   "stringData": {"username": "sa", "password": self.s.sa_password}})
            .to_string(),
            json!({"apiVersion": "sqlserver.kubesql.io/v1alpha1", "kind": "ClusterProviderConfig",
                   "metadata": {"name": name},
                   "spec": {"endpoint": {"host": "127.0.0.1", "port": self.s.sql_port},
                            "credentials": {"source": "Secret",
                                            "secretRef": {"name": secret, "namespace": PROVIDER_NAMESPACE}},
                            "tls": {"mode": "Required", "trustServerCertificate": true},
                            "worker": {"pollInterval": "5s", "replicas": replicas}}})
            .to_string(),
        ];
        self.apply(&format!("config-{name}"), &docs)
    }

    /// The Lease holder of a worker, with the Lease's acquire time.
    fn lease(&self, worker: &str) -> Result<(String, String)> {
        let lease = self.kubectl_json(&["get", "lease", worker, "-n", PROVIDER_NAMESPACE, "-o", "json"])?;
        Ok((
            lease["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or_default()
                .into(),
            lease["spec"]["acquireTime"].as_str().unwrap_or_default().into(),
        ))
    }

    /// `lease-takeover`: a config with two worker replicas; the Lease holder stops dead
    /// (SIGSTOP) while the queue is half done. The standby must hold the Lease within the
    /// lease duration (+ grace, + slack); the frozen holder is then killed (SIGKILL) and
    /// restarted by the kubelet; the queue drains and every database is created exactly once.
    fn lease_takeover(&mut self) -> Result<String> {
        const NS: &str = "faults-lease";
        const CONFIG: &str = "faults-ha";
        const N: u64 = 40;
        let worker = format!("sqlserver-worker-cpc-{CONFIG}");
        self.config(CONFIG, 2)?;
        e2e::wait_for(
            "two worker replicas ready, one holding the Lease",
            CONVERGE,
            || {
                let ready = e2e::jsonpath(
                    self.s,
                    &[
                        "-n",
                        PROVIDER_NAMESPACE,
                        "get",
                        "deployment",
                        &worker,
                        "-o",
                        "jsonpath={.status.readyReplicas}",
                    ],
                );
                ready == "2" && self.lease(&worker).is_ok_and(|(h, _)| !h.is_empty())
            },
        )?;
        let (holder, _) = self.lease(&worker)?;
        let pods = self.pods(PROVIDER_NAMESPACE, &worker)?;
        let (_, holder_pid, _) = pods
            .iter()
            .find(|(p, _, _)| *p == holder)
            .with_context(|| format!("Lease holder {holder} is not one of the pods {pods:?}"))?;
        let holder_pid = holder_pid.context("holder pod without a process id")?;
        let specs: Vec<Spec> = (0..N)
            .map(|i| Spec {
                config: CONFIG.into(),
                ..Spec::database(format!("lt-{i:03}"), format!("faults_lt_{i:03}"))
            })
            .collect();
        let before = self.counters()?;
        let created = |c: &Value| grew(c, &before, "CREATE DATABASE");
        self.faults(json!({"delay_ms": 40}))?;
        self.create(NS, &specs)?;
        let at_kill = created(&self.wait_counters("5 databases created", CONVERGE, |c| created(c) >= 5)?);
        // The holder stops dead (SIGSTOP): no renewals, no exit, no restart, no replacement
        // pod — only the standby can take over, as when a node hangs or is cut off.
        self.signal_pod_process(holder_pid, "worker", "STOP")?;
        let frozen = Instant::now();
        ensure!(
            at_kill < N,
            "all {N} databases were created before the holder stopped"
        );
        let standby = pods
            .iter()
            .map(|(p, _, _)| p.clone())
            .find(|p| *p != holder)
            .context("no standby pod")?;
        let bound = Duration::from_secs(LEASE_SECONDS + LEASE_GRACE_SECONDS + TAKEOVER_SLACK_SECONDS);
        let waited = e2e::wait_for(&format!("standby {standby} holds the Lease"), bound, || {
            self.lease(&worker).is_ok_and(|(h, _)| h == standby)
        });
        let takeover = frozen.elapsed();
        // Then the frozen holder is killed; the kubelet restarts it, and with the Lease
        // taken it comes back as the standby.
        self.signal_pod_process(holder_pid, "worker", "KILL")?;
        waited?;
        self.faults(json!({"delay_ms": 0}))?;
        self.wait_ready(NS, N as usize, CONVERGE)?;
        let after = self.counters()?;
        let missing = minus(&externals(&specs, is_database), &database_names(&self.catalog()?));
        ensure!(missing.is_empty(), "databases missing in SQL: {missing:?}");
        ensure!(
            created(&after) == N,
            "CREATE DATABASE ran {} times for {N} databases",
            created(&after)
        );
        self.delete_and_check(NS, &specs)?;
        self.kubectl(&[
            "delete",
            "clusterproviderconfig",
            CONFIG,
            "--wait=true",
            "--timeout=120s",
        ])?;
        Ok(format!(
            "holder stopped after {at_kill}/{N} creates; standby {standby} held the Lease {:.1}s later (bound {}s); holder killed; queue drained, each created once",
            takeover.as_secs_f64(),
            bound.as_secs()
        ))
    }

    /// `sql-outage`: SQL Server unreachable (the emulator stopped, connections refused) for
    /// 30 s. Resources changed during the outage say that the server cannot be reached, and
    /// so does the config once its worker's readiness fails; after it is back, everything
    /// converges, and each new database is created exactly once.
    fn sql_outage(&mut self) -> Result<String> {
        const NS: &str = "faults-outage";
        let first: Vec<Spec> = (0..20)
            .map(|i| Spec::database(format!("out-{i:03}"), format!("faults_out_{i:03}")))
            .collect();
        let during: Vec<Spec> = (0..10)
            .map(|i| Spec::database(format!("out-new-{i:03}"), format!("faults_out_new_{i:03}")))
            .collect();
        self.create(NS, &first)?;
        self.wait_ready(NS, first.len(), CONVERGE)?;
        self.s.stop_emulator()?;
        let down = Instant::now();
        eprintln!("    emulator stopped: SQL Server unreachable");
        let result = (|| -> Result<(Cond, Cond, f64)> {
            self.create(NS, &during)?;
            let mut seen = Cond::default();
            e2e::wait_for("resources created during the outage report it", OUTAGE, || {
                let Ok(mrs) = self.mrs(NS) else { return false };
                let new: Vec<&Mr> = mrs.iter().filter(|m| m.name.starts_with("out-new-")).collect();
                if let Some(m) = new.first() {
                    seen = m.synced.clone();
                }
                new.len() == during.len()
                    && new.iter().all(|m| {
                        m.synced.status == "False"
                            && m.synced.reason == "ReconcileError"
                            && m.synced.message.contains("cannot connect to SQL Server")
                    })
            })
            .with_context(|| format!("last Synced seen: {seen:?}"))?;
            // The config: the Lease holder's connection report (after its next SELECT 1, every
            // 10 s) makes WorkerReady False with reason CannotConnect, before and after its
            // readiness makes the Deployment unavailable. The outage lasts until that is seen
            // (never beyond twice its planned length).
            let mut config = Cond::default();
            e2e::wait_for(
                "config default reports its worker unavailable",
                OUTAGE * 2,
                || {
                    let Ok(c) = self.kubectl_json(&["get", "clusterproviderconfig", "default", "-o", "json"])
                    else {
                        return false;
                    };
                    config = Cond::of(&c, "WorkerReady");
                    config.status == "False"
                        && config.reason == "CannotConnect"
                        && config.message.contains("cannot connect to SQL Server")
                },
            )
            .with_context(|| format!("last WorkerReady seen: {config:?}"))?;
            // What the kubelet's readiness probe gets from the worker (on its loopback pod IP).
            let readyz = self.worker_readyz("sqlserver-worker-cpc-default")?;
            ensure!(
                readyz.starts_with("HTTP/1.1 503")
                    && readyz.contains("SQL Server unreachable")
                    && readyz.contains("cannot connect to SQL Server at"),
                "the worker's /readyz during the outage: {readyz:?}"
            );
            let left = OUTAGE.saturating_sub(down.elapsed());
            std::thread::sleep(left);
            Ok((seen, config, down.elapsed().as_secs_f64()))
        })();
        // The emulator comes back whatever happened (counters start from zero).
        self.s.start_emulator()?;
        let (synced, config, outage) = result?;
        eprintln!("    emulator back after {outage:.0}s");
        self.wait_ready(NS, first.len() + during.len(), CONVERGE)?;
        e2e::wait_for("config default WorkerReady again", CONVERGE, || {
            e2e::jsonpath(
                self.s,
                &[
                    "get",
                    "clusterproviderconfig",
                    "default",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"WorkerReady\")].status}",
                ],
            ) == "True"
        })?;
        let all: Vec<Spec> = first.iter().chain(&during).cloned().collect();
        let missing = minus(&externals(&all, is_database), &database_names(&self.catalog()?));
        ensure!(missing.is_empty(), "databases missing in SQL: {missing:?}");
        let created = statements(&self.counters()?, "CREATE DATABASE");
        ensure!(
            created == during.len() as u64,
            "after the outage CREATE DATABASE ran {created} times for {} new databases",
            during.len()
        );
        self.delete_and_check(NS, &all)?;
        Ok(format!(
            "down {outage:.0}s; new resources said Synced=False {:?}; config WorkerReady=False {}: {:?}; worker /readyz 503 names the unreachable server; all converged, each created once",
            synced.message, config.reason, config.message
        ))
    }

    /// `sql-drops`: the emulator closes connections mid-request while the worker creates
    /// databases: some requests are never run (`drop_next`), and some `CREATE DATABASE`s run
    /// but their answer is lost (`drop_after`), so the worker cannot know they succeeded.
    /// Every fault is consumed, everything converges, and each database is created exactly
    /// once: a lost answer is followed by a fresh observation, never a second CREATE.
    fn sql_drops(&mut self) -> Result<String> {
        const NS: &str = "faults-drops";
        const N: u64 = 40;
        const DROPS: u64 = 12;
        const LOST: u64 = 5;
        let specs: Vec<Spec> = (0..N)
            .map(|i| Spec::database(format!("dr-{i:03}"), format!("faults_dr_{i:03}")))
            .collect();
        let before = self.counters()?;
        self.faults(json!({
            "drop_next": DROPS,
            "drop_after": {"pattern": "CREATE DATABASE", "count": LOST},
            "delay_ms": 10,
        }))?;
        self.create(NS, &specs)?;
        self.wait_ready(NS, N as usize, CONVERGE)?;
        let faults = self.admin("GET", "/faults", None)?;
        ensure!(
            faults["drop_next"].as_u64() == Some(0) && faults["drop_after"].is_null(),
            "not every fault was consumed: {faults}"
        );
        self.faults(json!({"delay_ms": 0}))?;
        let after = self.counters()?;
        let missing = minus(&externals(&specs, is_database), &database_names(&self.catalog()?));
        ensure!(missing.is_empty(), "databases missing in SQL: {missing:?}");
        let created = grew(&after, &before, "CREATE DATABASE");
        ensure!(
            created == N,
            "CREATE DATABASE ran {created} times for {N} databases"
        );
        let reconnects = after["connections_opened"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(before["connections_opened"].as_u64().unwrap_or(0));
        self.delete_and_check(NS, &specs)?;
        Ok(format!(
            "{DROPS} requests dropped unanswered and {LOST} CREATEs run with their answer lost; {reconnects} connections opened; {N} created once each"
        ))
    }

    /// `apiserver-restart`: kube-apiserver stopped for 10 s and started again. The provider
    /// and worker re-establish their watches: a creation, an update and a deletion made
    /// after the restart all reach SQL Server.
    fn apiserver_restart(&mut self) -> Result<String> {
        const NS: &str = "faults-apiserver";
        let first: Vec<Spec> = (0..20)
            .map(|i| Spec::database(format!("api-{i:03}"), format!("faults_api_{i:03}")))
            .collect();
        let later: Vec<Spec> = (0..10)
            .map(|i| Spec::database(format!("api-new-{i:03}"), format!("faults_api_new_{i:03}")))
            .collect();
        self.create(NS, &first)?;
        self.wait_ready(NS, first.len(), CONVERGE)?;
        cluster::restart_component(self.dir(), "kube-apiserver", Duration::from_secs(10))?;
        let before = self.counters()?;
        // Created, updated (recovery model) and deleted after the restart.
        self.create(NS, &later)?;
        let updated = &first[..5];
        for s in updated {
            self.kubectl(&[
                "patch",
                "database.sqlserver.kubesql.io",
                &s.name,
                "-n",
                NS,
                "--type=merge",
                "-p",
                r#"{"spec":{"forProvider":{"recoveryModel":"Full"}}}"#,
            ])?;
        }
        let deleted = &first[15..];
        for s in deleted {
            self.kubectl(&[
                "delete",
                "database.sqlserver.kubesql.io",
                &s.name,
                "-n",
                NS,
                "--wait=false",
            ])?;
        }
        let remaining: Vec<Spec> = first[..15].iter().chain(&later).cloned().collect();
        self.wait_ready(NS, remaining.len(), CONVERGE)?;
        let catalog = self.catalog()?;
        let names = database_names(&catalog);
        let missing = minus(&externals(&remaining, is_database), &names);
        ensure!(missing.is_empty(), "databases missing in SQL: {missing:?}");
        let left: Vec<&String> = deleted
            .iter()
            .map(|s| &s.external)
            .filter(|n| names.contains(*n))
            .collect();
        ensure!(
            left.is_empty(),
            "deleted after the restart but still in SQL: {left:?}"
        );
        e2e::wait_for("updated recovery models in SQL", CONVERGE, || {
            self.catalog().is_ok_and(|c| {
                c["databases"].as_array().into_iter().flatten().all(|d| {
                    let name = d["name"].as_str().unwrap_or_default();
                    !updated.iter().any(|s| s.external == name) || d["recovery"].as_u64() == Some(1)
                })
            })
        })?;
        let after = self.counters()?;
        let created = grew(&after, &before, "CREATE DATABASE");
        let dropped = grew(&after, &before, "DROP DATABASE");
        ensure!(
            created == later.len() as u64 && dropped == deleted.len() as u64,
            "after the restart CREATE DATABASE ran {created} times for {} and DROP DATABASE {dropped} for {}",
            later.len(),
            deleted.len()
        );
        self.delete_and_check(NS, &remaining)?;
        Ok(format!(
            "after the restart: {} created, {} updated, {} dropped, each once",
            later.len(),
            updated.len(),
            deleted.len()
        ))
    }

    /// `provider-restart`: 100 databases and 30 logins deleted at once; the provider process
    /// is SIGKILLed while the worker drops them. Every finalizer completes, every object is
    /// dropped exactly once, and nothing else in the catalog changes.
    fn provider_restart(&mut self) -> Result<String> {
        const NS: &str = "faults-mass-delete";
        const DBS: usize = 100;
        const LOGINS: usize = 30;
        let specs: Vec<Spec> = (0..DBS)
            .map(|i| Spec::database(format!("md-{i:03}"), format!("faults_md_{i:03}")))
            .chain((0..LOGINS).map(|i| Spec::login(format!("ml-{i:03}"), format!("faults_ml_{i:03}"))))
            .collect();
        self.create(NS, &specs)?;
        self.wait_ready(NS, specs.len(), CONVERGE)?;
        let catalog = self.catalog()?;
        let before = self.counters()?;
        let dropped = |c: &Value| grew(c, &before, "DROP DATABASE") + grew(c, &before, "DROP LOGIN");
        let (pod, pid, restarts) = self
            .pods(PROVIDER_NAMESPACE, "provider-sqlserver")?
            .into_iter()
            .next()
            .context("no provider pod")?;
        let pid = pid.context("provider pod without a process id")?;
        self.faults(json!({"delay_ms": 40}))?;
        self.delete_all(NS)?;
        let at_kill = dropped(&self.wait_counters("10 objects dropped", CONVERGE, |c| dropped(c) >= 10)?);
        self.kill_pod_process(pid, "provider-sqlserver")?;
        let total = (DBS + LOGINS) as u64;
        ensure!(at_kill < total, "every object was dropped before the kill");
        self.faults(json!({"delay_ms": 0}))?;
        self.wait_gone(NS, CONVERGE)?;
        let items = self.kubectl_json(&["get", "workitems", "-A", "-o", "json"])?;
        let left: Vec<&str> = items["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["spec"]["resourceRef"]["namespace"] == NS)
            .filter_map(|i| i["metadata"]["name"].as_str())
            .collect();
        ensure!(left.is_empty(), "WorkItems left behind: {left:?}");
        let after = self.counters()?;
        let now = self.catalog()?;
        let expected_dbs: BTreeSet<String> = database_names(&catalog)
            .difference(&externals(&specs, is_database))
            .cloned()
            .collect();
        let expected_logins: BTreeSet<String> = principal_names(&catalog)
            .difference(&externals(&specs, is_login))
            .cloned()
            .collect();
        ensure!(
            database_names(&now) == expected_dbs,
            "databases leaked {:?} or wrongly dropped {:?}",
            minus(&database_names(&now), &expected_dbs),
            minus(&expected_dbs, &database_names(&now))
        );
        ensure!(
            principal_names(&now) == expected_logins,
            "logins leaked {:?} or wrongly dropped {:?}",
            minus(&principal_names(&now), &expected_logins),
            minus(&expected_logins, &principal_names(&now))
        );
        let dbs = grew(&after, &before, "DROP DATABASE");
        let logins = grew(&after, &before, "DROP LOGIN");
        ensure!(
            dbs == DBS as u64 && logins == LOGINS as u64,
            "DROP DATABASE ran {dbs} times for {DBS} databases, DROP LOGIN {logins} for {LOGINS} logins"
        );
        let now_pods = self.pods(PROVIDER_NAMESPACE, "provider-sqlserver")?;
        ensure!(
            now_pods.iter().any(|(p, _, r)| *p == pod && *r > restarts),
            "the provider pod {pod} was not restarted: {now_pods:?}"
        );
        self.kubectl(&["delete", "namespace", NS, "--wait=false"])?;
        Ok(format!(
            "provider killed after {at_kill}/{total} drops; every finalizer done, {DBS} DROP DATABASE and {LOGINS} DROP LOGIN, nothing else changed"
        ))
    }

    /// `hostile-names`: 150 databases and 50 logins with hostile external names, applied
    /// concurrently. SQL ends up with exactly those names and nothing else changed; deleting
    /// them restores the catalog.
    fn hostile_names(&mut self) -> Result<String> {
        const NS: &str = "faults-hostile";
        let names = hostile_names(200);
        let specs: Vec<Spec> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                if i % 4 == 3 {
                    Spec::login(format!("hl-{i:03}"), n.clone())
                } else {
                    Spec::database(format!("hd-{i:03}"), n.clone())
                }
            })
            .collect();
        let catalog = self.catalog()?;
        self.create(NS, &specs)?;
        self.wait_ready(NS, specs.len(), CONVERGE)?;
        let now = self.catalog()?;
        let dbs = externals(&specs, is_database);
        let logins = externals(&specs, is_login);
        let new_dbs: BTreeSet<String> = minus(&database_names(&now), &database_names(&catalog))
            .into_iter()
            .collect();
        let new_logins: BTreeSet<String> = minus(&principal_names(&now), &principal_names(&catalog))
            .into_iter()
            .collect();
        ensure!(
            new_dbs == dbs,
            "new databases differ: unexpected {:?}, missing {:?}",
            minus(&new_dbs, &dbs),
            minus(&dbs, &new_dbs)
        );
        ensure!(
            new_logins == logins,
            "new logins differ: unexpected {:?}, missing {:?}",
            minus(&new_logins, &logins),
            minus(&logins, &new_logins)
        );
        // Nothing that existed before changed: every earlier database and principal is the same.
        for (list, key) in [("databases", "name"), ("server_principals", "name")] {
            for old in catalog[list].as_array().into_iter().flatten() {
                let same = now[list]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|n| n[key] == old[key]);
                ensure!(
                    same == Some(old),
                    "{list} entry {} changed: {old} → {same:?}",
                    old[key]
                );
            }
        }
        self.delete_and_check(NS, &specs)?;
        Ok(format!(
            "{} databases and {} logins with hostile names: exactly those in SQL, nothing else changed, each dropped once",
            dbs.len(),
            logins.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_distinct_valid_and_hostile() {
        let names = hostile_names(200);
        let folded: BTreeSet<String> = names.iter().map(|n| n.to_lowercase()).collect();
        assert_eq!(folded.len(), 200, "distinct even case-insensitively");
        for n in &names {
            assert!(n.encode_utf16().count() <= 128, "within sysname: {n}");
            assert_eq!(n.trim(), n, "no leading or trailing whitespace: {n:?}");
            assert!(!n.chars().any(char::is_control), "no control characters: {n:?}");
        }
        for needle in ["]", "'", ";--", "データ", "\""] {
            assert!(
                names.iter().any(|n| n.contains(needle)),
                "some name holds {needle}"
            );
        }
    }
}
