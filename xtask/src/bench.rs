//! `cargo xtask bench`: throughput and cost of the provider on the local environment.
//!
//! ```text
//! start_env + install (ClusterProviderConfig default) ─▶ W-1 more ClusterProviderConfigs
//!   (one admin Secret and one worker each, all on the same emulator)
//!   ─▶ scale   N managed resources (Database, Login, User WithoutLogin, Schema) at once
//!   ─▶ steady  idle for three poll intervals
//!   ─▶ drift   K databases changed out of band; time until the sweeps put them back
//!   ─▶ latency every statement delayed 20 ms; M resources on a config with
//!              maxConcurrentOperations 4, then M on one with 1
//!   ─▶ table on stdout, target/bench/result.json ─▶ stop (always)
//! ```
//!
//! A benchmark, never a timed test: nothing here fails on a number, only on a bounded wait
//! that runs out. Figures come from the apiserver's `/metrics` (`apiserver_request_total`),
//! the emulator's `GET /counters`, and `/proc/<pid>/{status,stat}` of the provider and worker
//! processes of this environment (recognised by their binary and by the apiserver port the
//! process kubelet gave them, so other environments on the machine are not counted).

use crate::{
    e2e::{self, PROVIDER_NAMESPACE, Session},
    testenv::cluster,
    util::workspace_root,
};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap},
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// What [`Bench::wait_ready`] saw.
struct Waited {
    /// Seconds until every resource was Ready (or the timeout).
    took: f64,
    /// The last listing.
    listing: Listing,
    /// Every resource was Ready.
    complete: bool,
    /// Seconds until every WorkItem was up to date, when seen.
    workers_done: Option<f64>,
}

/// Managed resources by kind/name: (created, Ready status, Ready since).
type Listing = HashMap<String, (String, String, String)>;

/// Namespace of the managed resources the benchmark creates.
const NAMESPACE: &str = "bench";
/// Every scenario, in the order they run.
const SCENARIOS: [&str; 4] = ["scale", "steady", "drift", "latency"];

/// Flags of `cargo xtask bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Number of ClusterProviderConfigs (one worker each), `default` included.
    #[arg(long, default_value_t = 10)]
    configs: usize,
    /// Managed resources of the scale scenario, spread over the four kinds and the configs.
    #[arg(long, default_value_t = 1000)]
    resources: usize,
    /// Scenarios to run (comma-separated): scale, steady, drift, latency. steady and drift
    /// need scale's resources and run it anyway.
    #[arg(long, value_delimiter = ',', default_value = "scale,steady,drift,latency")]
    scenarios: Vec<String>,
    /// Bound of every wait for resources to become Ready or corrected, in seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// Databases changed out of band in the drift scenario.
    #[arg(long, default_value_t = 50)]
    drift: usize,
    /// Resources per config in the latency scenario.
    #[arg(long, default_value_t = 100)]
    latency_resources: usize,
    /// Statement delay of the latency scenario, in milliseconds.
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    /// Worker poll interval of every config, in seconds.
    #[arg(long, default_value_t = 5)]
    poll_interval_secs: u64,
}

/// `cargo xtask bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let mut scenarios: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| args.scenarios.iter().any(|a| a.trim() == *s))
        .collect();
    if let Some(unknown) = args.scenarios.iter().find(|a| !SCENARIOS.contains(&a.trim())) {
        bail!("unknown scenario {unknown:?}; known: {}", SCENARIOS.join(","));
    }
    if args.configs == 0 || args.resources == 0 {
        bail!("--configs and --resources must be at least 1");
    }
    if scenarios.iter().any(|s| *s == "steady" || *s == "drift") && !scenarios.contains(&"scale") {
        eprintln!("    steady and drift need the resources of scale: running scale too");
        scenarios.insert(0, "scale");
    }
    let started = Instant::now();
    let mut report = Report::new(args);
    let session = e2e::start_env(&format!("bench-{}", std::process::id()))?;
    let dir = session.dir.clone();
    let result = (|| -> Result<()> {
        e2e::install(&session)?;
        let bench = Bench::new(&session, args)?;
        bench.create_configs()?;
        for scenario in &scenarios {
            eprintln!("==> bench scenario {scenario}");
            let value = match *scenario {
                "scale" => bench.scale()?,
                "steady" => bench.steady()?,
                "drift" => bench.drift()?,
                _ => bench.latency()?,
            };
            report.scenarios.insert((*scenario).to_owned(), value);
            // Each finished scenario is on disk at once: a later failure keeps it.
            report.write()?;
        }
        bench.sampler.stop();
        Ok(())
    })();
    if let Err(e) = &result {
        report.error = Some(format!("{e:#}"));
        eprintln!("    logs kept in {}/logs", dir.display());
    }
    report.total_secs = started.elapsed().as_secs_f64();
    let written = report.write();
    report.print();
    let stopped = session.stop();
    result?;
    stopped?;
    let path = written?;
    eprintln!("    result: {}", path.display());
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}

/// What `result.json` holds.
struct Report {
    parameters: Value,
    scenarios: BTreeMap<String, Value>,
    error: Option<String>,
    total_secs: f64,
}

impl Report {
    fn new(args: &BenchArgs) -> Report {
        Report {
            parameters: json!({
                "configs": args.configs,
                "resources": args.resources,
                "scenarios": args.scenarios,
                "timeout": fig(args.timeout_secs as f64, "s"),
                "drift_objects": args.drift,
                "latency_resources_per_config": args.latency_resources,
                "latency_delay": fig(args.delay_ms as f64, "ms"),
                "poll_interval": fig(args.poll_interval_secs as f64, "s"),
            }),
            scenarios: BTreeMap::new(),
            error: None,
            total_secs: 0.0,
        }
    }

    fn write(&self) -> Result<PathBuf> {
        let out = cluster::target_dir().join("bench");
        std::fs::create_dir_all(&out)?;
        let path = out.join("result.json");
        let doc = json!({
            "machine": machine(),
            "parameters": self.parameters,
            "scenarios": self.scenarios,
            "error": self.error,
            "total": fig(self.total_secs, "s"),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
        Ok(path)
    }

    /// One line per figure: scenario, figure, value, unit.
    fn print(&self) {
        println!("{:<8} {:<58} {:>14} unit", "scenario", "figure", "value");
        for (scenario, value) in &self.scenarios {
            let mut rows = Vec::new();
            flatten("", value, &mut rows);
            // Break-downs stay in the JSON; the table keeps the headline figures.
            rows.retain(|(name, _, _)| {
                !name.contains("by_verb_and_resource")
                    && !name.contains("per_process")
                    && !name.contains(".statements.")
                    && !name.contains("errors_by_number")
            });
            for (name, v, unit) in rows {
                println!("{scenario:<8} {name:<58} {v:>14} {unit}");
            }
        }
        if let Some(e) = &self.error {
            println!("error: {e}");
        }
    }
}

/// Figures of a scenario object, as (path, value, unit) rows; `{value, unit}` objects are
/// figures, other objects are descended into.
fn flatten(prefix: &str, v: &Value, rows: &mut Vec<(String, String, String)>) {
    if let Some(obj) = v.as_object() {
        if let (Some(value), Some(unit)) = (obj.get("value"), obj.get("unit")) {
            let shown = match value.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
                Some(f) => format!("{f:.3}"),
                None => value.to_string(),
            };
            rows.push((prefix.to_owned(), shown, unit.as_str().unwrap_or("").to_owned()));
            return;
        }
        for (k, inner) in obj {
            let name = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            flatten(&name, inner, rows);
        }
    }
}

/// A figure with its unit.
fn fig(value: f64, unit: &str) -> Value {
    let rounded = (value * 1000.0).round() / 1000.0;
    json!({"value": rounded, "unit": unit})
}

/// nproc, CPU model and memory of this machine.
fn machine() -> Value {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = kib_field(&meminfo, "MemTotal:");
    json!({
        "nproc": nproc,
        "cpu_model": model,
        "memory": fig(mem_kib.unwrap_or(0) as f64 / 1024.0, "MiB"),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

/// `Field:   1234 kB` → 1234.
fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The benchmark's view of a session.
struct Bench<'a> {
    session: &'a Session,
    args: &'a BenchArgs,
    /// Names of the ClusterProviderConfigs of the scale scenario, `default` first.
    configs: Vec<String>,
    sampler: Sampler,
    sqlcheck: PathBuf,
    python: PathBuf,
}

impl<'a> Bench<'a> {
    fn new(session: &'a Session, args: &'a BenchArgs) -> Result<Bench<'a>> {
        let port = apiserver_port(&session.dir)?;
        let configs = std::iter::once("default".to_owned())
            .chain((1..args.configs).map(|i| format!("bench-{i:02}")))
            .collect();
        Ok(Bench {
            session,
            args,
            configs,
            sampler: Sampler::start(port),
            sqlcheck: workspace_root()
                .join("kuttl-tests")
                .join("e2e")
                .join("bin")
                .join("sqlcheck"),
            python: crate::emulator::ensure_pytds()?,
        })
    }

    fn dir(&self) -> &Path {
        &self.session.dir
    }

    /// A ClusterProviderConfig on the emulator with its own admin Secret (in the worker's
    /// namespace, which is the Secret's).
    fn config_yaml(&self, name: &str, max_concurrent: Option<u32>) -> String {
        let secret = format!("sqlserver-admin-{name}");
        let concurrency = max_concurrent
            .map(|n| format!(", maxConcurrentOperations: {n}"))
            .unwrap_or_default();
        format!(
            r#"apiVersion: v1
kind: Secret
metadata: {{name: {secret}, namespace: {PROVIDER_NAMESPACE}}}
stringData: {{username: sa, password: "{password}"}}
---
apiVersion: sqlserver.kubesql.io/v1alpha1
kind: ClusterProviderConfig
metadata: {{name: {name}}}
spec:
  endpoint: {{host: 127.0.0.1, port: {port}}}
  credentials:
    source: Secret
    secretRef: {{name: {secret}, namespace: {PROVIDER_NAMESPACE}}}
  tls: {{mode: Required, trustServerCertificate: true}}
  worker: {{pollInterval: {poll}s{concurrency}}}
"#,
            password = self.session.sa_password,
            port = self.session.sql_port,
            poll = self.args.poll_interval_secs,
        )
    }

    /// Applies `yaml` (written to `<dir>/<file>`) with server-side apply.
    fn apply(&self, step: &str, file: &str, yaml: &str) -> Result<()> {
        let path = self.dir().join(file);
        std::fs::write(&path, yaml)?;
        let out = self
            .session
            .kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .output()
            .with_context(|| format!("{step}: starting kubectl"))?;
        if !out.status.success() {
            bail!(
                "{step}: kubectl apply failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Applies the documents of `yaml` at once ([`e2e::apply_concurrently`]), bounded by
    /// --timeout-secs.
    fn apply_parallel(&self, prefix: &str, yaml: &str) -> Result<()> {
        let docs: Vec<&str> = yaml.split("---\n").filter(|d| !d.trim().is_empty()).collect();
        let timeout = Duration::from_secs(self.args.timeout_secs);
        e2e::apply_concurrently(self.session, self.dir(), prefix, &docs, timeout)
    }

    /// Waits until every named config's worker is Ready.
    fn wait_workers(&self, names: &[String]) -> Result<()> {
        e2e::wait_for(
            &format!("{} workers Ready", names.len()),
            Duration::from_secs(300),
            || {
                let out = e2e::jsonpath(
                    self.session,
                    &[
                        "get",
                        "clusterproviderconfigs",
                        "-o",
                        r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="WorkerReady")].status}{"\n"}{end}"#,
                    ],
                );
                let ready: Vec<&str> = out.lines().filter_map(|l| l.strip_suffix("=True")).collect();
                names.iter().all(|n| ready.contains(&n.as_str()))
            },
        )
    }

    /// The W-1 configs beyond `default`, and the namespace of the managed resources.
    fn create_configs(&self) -> Result<()> {
        let mut yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n");
        for name in self.configs.iter().skip(1) {
            yaml.push_str("---\n");
            yaml.push_str(&self.config_yaml(name, None));
        }
        self.apply("bench configs", "bench-configs.yaml", &yaml)?;
        // `default` (made by e2e::install) gets the same poll interval as the others, so
        // that every worker sweeps at the rate the steady scenario divides by.
        let out = self
            .session
            .kubectl()
            .args([
                "patch",
                "clusterproviderconfig",
                "default",
                "--type=merge",
                "-p",
                &json!({"spec": {"worker": {"pollInterval": format!("{}s", self.args.poll_interval_secs)}}})
                    .to_string(),
            ])
            .stdout(Stdio::null())
            .output()
            .context("kubectl patch clusterproviderconfig default")?;
        if !out.status.success() {
            bail!(
                "setting the poll interval of config default: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // The worker Deployment rolls: wait until it carries the new interval, so that the
        // readiness wait below is about the new pods, not the old ones.
        let want = format!("{}ms", (self.args.poll_interval_secs * 1000).max(1000));
        e2e::wait_for(
            "worker of config default has the new poll interval",
            Duration::from_secs(60),
            || {
                e2e::jsonpath(
                    self.session,
                    &[
                        "-n",
                        e2e::PROVIDER_NAMESPACE,
                        "get",
                        "deployment",
                        "sqlserver-worker-cpc-default",
                        "-o",
                        r#"jsonpath={.spec.template.spec.containers[0].env[?(@.name=="POLL_INTERVAL")].value}"#,
                    ],
                ) == want
            },
        )?;
        self.wait_workers(&self.configs)
    }

    /// Counters of the emulator (`GET /counters`).
    fn counters(&self) -> Result<Value> {
        let body = http(self.session.admin_port, "GET", "/counters", None)?;
        serde_json::from_str(&body).context("emulator /counters")
    }

    /// Sets emulator faults (`POST /faults`).
    fn faults(&self, body: &Value) -> Result<()> {
        http(
            self.session.admin_port,
            "POST",
            "/faults",
            Some(&body.to_string()),
        )
        .map(|_| ())
    }

    /// Write requests the apiserver served so far, by `verb resource`.
    fn apiserver_writes(&self) -> Result<BTreeMap<String, f64>> {
        let out = self
            .session
            .kubectl()
            .args(["get", "--raw", "/metrics"])
            .stderr(Stdio::null())
            .output()
            .context("kubectl get --raw /metrics")?;
        if !out.status.success() {
            bail!("kubectl get --raw /metrics failed");
        }
        Ok(parse_writes(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Runs a batch on the emulator as sa (out of band) with kuttl-tests' sqlcheck.
    fn sql(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.python)
            .arg(&self.sqlcheck)
            .args(args)
            .env("SQL_TEST_HOST", "127.0.0.1")
            .env("SQL_TEST_PORT", self.session.sql_port.to_string())
            .env("SQL_TEST_USER", "sa")
            .env("SQL_TEST_PASSWORD", &self.session.sa_password)
            .output()
            .context("starting sqlcheck")?;
        if !out.status.success() {
            bail!(
                "sqlcheck {:?} failed: {}",
                args.first(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The managed resources of `NAMESPACE` with prefix `prefix`, as
    /// kind/name → (created, Ready status, Ready since).
    fn resources(&self, prefix: &str) -> Listing {
        // Raw lists parsed here: kubectl's own decoding of a thousand objects per second would
        // take a good part of a core away from what is measured.
        let mut listing = Listing::new();
        for plural in ["databases", "logins", "users", "schemas"] {
            let raw = e2e::jsonpath(
                self.session,
                &[
                    "get",
                    "--raw",
                    &format!("/apis/sqlserver.kubesql.io/v1alpha1/namespaces/{NAMESPACE}/{plural}"),
                ],
            );
            let Ok(list) = serde_json::from_str::<Value>(&raw) else {
                continue;
            };
            for item in list["items"].as_array().into_iter().flatten() {
                let name = item["metadata"]["name"].as_str().unwrap_or("");
                if !name.starts_with(prefix) {
                    continue;
                }
                let ready = item["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
                let field =
                    |v: Option<&Value>, key: &str| v.and_then(|v| v[key].as_str()).unwrap_or("").to_owned();
                listing.insert(
                    format!("{plural}/{name}"),
                    (
                        field(Some(&item["metadata"]), "creationTimestamp"),
                        field(ready, "status"),
                        field(ready, "lastTransitionTime"),
                    ),
                );
            }
        }
        listing
    }

    /// Polls once a second until the `expected` resources named `prefix…` are Ready (bounded by
    /// --timeout-secs); returns the wall time from `since`, the last listing, and whether all
    /// were Ready (a timeout is a measurement too: the run goes on and says so).
    fn wait_ready(&self, prefix: &str, expected: usize, since: Instant) -> Waited {
        let timeout = Duration::from_secs(self.args.timeout_secs);
        let mut next_report = Duration::from_secs(10);
        let mut workers_done = None;
        loop {
            if workers_done.is_none() && self.work_items_done(prefix) >= expected {
                let took = since.elapsed().as_secs_f64();
                eprintln!("    the workers finished {expected} WorkItems {prefix}* in {took:.1} s");
                workers_done = Some(took);
            }
            let listing = self.resources(prefix);
            let ready = listing.values().filter(|(_, r, _)| r == "True").count();
            if listing.len() >= expected && ready == listing.len() {
                let took = since.elapsed().as_secs_f64();
                eprintln!("    {expected} resources {prefix}* Ready in {took:.1} s");
                return Waited {
                    took,
                    listing,
                    complete: true,
                    workers_done,
                };
            }
            if since.elapsed() > timeout {
                eprintln!(
                    "    {prefix}*: only {ready} of {expected} resources Ready after {timeout:?} ({} exist); going on",
                    listing.len()
                );
                return Waited {
                    took: since.elapsed().as_secs_f64(),
                    listing,
                    complete: false,
                    workers_done,
                };
            }
            if since.elapsed() > next_report {
                eprintln!("    {ready}/{expected} {prefix}* Ready ({:.0?})", since.elapsed());
                next_report += Duration::from_secs(10);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// WorkItems of resources named `prefix…` that their worker reports existing and up to date
    /// for their current generation.
    fn work_items_done(&self, prefix: &str) -> usize {
        let raw = e2e::jsonpath(
            self.session,
            &[
                "get",
                "--raw",
                &format!(
                    "/apis/queue.sqlserver.kubesql.io/v1alpha1/namespaces/{PROVIDER_NAMESPACE}/workitems"
                ),
            ],
        );
        let Ok(list) = serde_json::from_str::<Value>(&raw) else {
            return 0;
        };
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| {
                i["spec"]["resourceRef"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
                    && i["status"]["upToDate"] == true
                    && i["status"]["exists"] == true
                    && i["status"]["observedGeneration"] == i["metadata"]["generation"]
            })
            .count()
    }

    /// The YAML of `n` managed resources named `prefix-<kind>-<i>` on `configs` (round-robin by
    /// group of `kinds`: a Database, a Login, a User without login in that database, a Schema in
    /// it; with `kinds` 2, only the first two, which depend on nothing). SQL names are
    /// `<prefix>_<kind>_<i>`, unique on the server.
    fn resources_yaml(prefix: &str, n: usize, configs: &[String], kinds: usize) -> String {
        let mut yaml = String::new();
        for k in 0..n {
            let unit = k / kinds;
            let config = &configs[unit % configs.len()];
            let sql = prefix.replace('-', "_");
            let db = format!("{sql}_db_{unit:05}");
            let (kind, short, for_provider) = match k % kinds {
                0 => ("Database", "db", "{recoveryModel: Full}".to_owned()),
                1 => ("Login", "login", "{}".to_owned()),
                2 => ("User", "user", format!("{{database: {db}, type: WithoutLogin}}")),
                _ => ("Schema", "schema", format!("{{database: {db}}}")),
            };
            yaml.push_str(&format!(
                "---\napiVersion: sqlserver.kubesql.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: {prefix}-{short}-{unit:05}\n  namespace: {NAMESPACE}\n  annotations: {{crossplane.io/external-name: {sql}_{short}_{unit:05}}}\nspec:\n  forProvider: {for_provider}\n  providerConfigRef: {{kind: ClusterProviderConfig, name: {config}}}\n"
            ));
        }
        yaml
    }

    /// Creates `n` resources named `prefix…` on `configs` at once and measures until all are
    /// Ready.
    fn create_and_measure(&self, prefix: &str, n: usize, configs: &[String], kinds: usize) -> Result<Value> {
        let yaml = Self::resources_yaml(prefix, n, configs, kinds);
        let writes0 = self.apiserver_writes()?;
        let counters0 = self.counters()?;
        let cpu0 = self.sampler.snapshot_and_reset_peaks();
        let started = Instant::now();
        self.apply_parallel(prefix, &yaml)?;
        let applied = started.elapsed().as_secs_f64();
        eprintln!("    applied {n} resources in {applied:.1} s");
        let Waited {
            took,
            mut listing,
            complete,
            workers_done,
        } = self.wait_ready(prefix, n, started);
        let ready_count = listing.values().filter(|(_, r, _)| r == "True").count();
        // Latencies and throughput over what became Ready.
        listing.retain(|_, (_, r, _)| r == "True");
        let writes1 = self.apiserver_writes()?;
        let counters1 = self.counters()?;
        let procs = self.sampler.report_since(&cpu0);

        let mut latencies: Vec<f64> = listing
            .values()
            .filter_map(|(created, _, since)| Some((rfc3339(since)? - rfc3339(created)?) as f64))
            .collect();
        latencies.sort_by(f64::total_cmp);
        let first_created = listing.values().filter_map(|(c, _, _)| rfc3339(c)).min();
        let last_ready = listing.values().filter_map(|(_, _, s)| rfc3339(s)).max();
        let writes = diff_writes(&writes0, &writes1);
        let total_writes: f64 = writes.values().sum();
        // The benchmark's own applies are the user's writes, not the provider's.
        let provider_writes = total_writes - n as f64;
        let leases: f64 = writes
            .iter()
            .filter(|(k, _)| k.ends_with(" coordination.k8s.io/leases"))
            .map(|(_, v)| v)
            .sum();
        let d = |key: &str| counter(&counters1, key) - counter(&counters0, key);
        let per = |v: f64| v / n as f64;
        Ok(json!({
            "resources": fig(n as f64, "resources"),
            "configs": fig(configs.len() as f64, "configs"),
            "apply_duration": fig(applied, "s"),
            "all_ready": fig(if complete { 1.0 } else { 0.0 }, "bool (0: timed out)"),
            "ready_at_end": fig(ready_count as f64, "resources"),
            "all_ready_wall": fig(took, if complete { "s" } else { "s (timed out)" }),
            "all_ready_by_timestamps": fig(match (first_created, last_ready) {
                (Some(a), Some(b)) => (b - a) as f64,
                _ => f64::NAN,
            }, "s"),
            "throughput": fig(ready_count as f64 / took, "resources/s"),
            "workers_done_wall": fig(workers_done.unwrap_or(f64::NAN), "s (every WorkItem up to date)"),
            "worker_throughput": fig(workers_done.map_or(f64::NAN, |w| n as f64 / w), "resources/s"),
            "create_to_ready_latency": {
                "p50": fig(percentile(&latencies, 0.50), "s (1 s resolution)"),
                "p95": fig(percentile(&latencies, 0.95), "s (1 s resolution)"),
                "p99": fig(percentile(&latencies, 0.99), "s (1 s resolution)"),
                "max": fig(latencies.last().copied().unwrap_or(f64::NAN), "s (1 s resolution)"),
            },
            "apiserver_writes": {
                "total": fig(total_writes, "requests"),
                "per_resource_excluding_bench_applies": fig(per(provider_writes), "requests/resource"),
                "per_resource_excluding_bench_applies_and_leases": fig(per(provider_writes - leases), "requests/resource"),
                "by_verb_and_resource": writes.iter().map(|(k, v)| (k.clone(), fig(*v, "requests"))).collect::<serde_json::Map<_, _>>(),
            },
            "sql": {
                "connections_opened": fig(d("connections_opened"), "connections"),
                "connections_per_resource": fig(per(d("connections_opened")), "connections/resource"),
                "batches": fig(d("batches"), "batches"),
                "rpcs": fig(d("rpcs"), "rpcs"),
                "round_trips_per_resource": fig(per(d("batches") + d("rpcs")), "round trips/resource"),
                "errors": fig(sum_map(&counters1["errors"]) - sum_map(&counters0["errors"]), "errors"),
                "errors_by_number": map_delta(&counters0["errors"], &counters1["errors"], "errors"),
                "statements": statement_delta(&counters0, &counters1),
            },
            "processes": procs,
        }))
    }

    /// `scale`: N resources over W configs, created at once.
    fn scale(&self) -> Result<Value> {
        self.create_and_measure("scale", self.args.resources, &self.configs, 4)
    }

    /// `steady`: nothing changes for three poll intervals.
    fn steady(&self) -> Result<Value> {
        let poll = Duration::from_secs(self.args.poll_interval_secs);
        // Let the sweeps that started during scale finish.
        std::thread::sleep(poll);
        let writes0 = self.apiserver_writes()?;
        let counters0 = self.counters()?;
        let cpu0 = self.sampler.snapshot_and_reset_peaks();
        let started = Instant::now();
        std::thread::sleep(poll * 3);
        let elapsed = started.elapsed().as_secs_f64();
        let writes1 = self.apiserver_writes()?;
        let counters1 = self.counters()?;
        let procs = self.sampler.report_since(&cpu0);
        let sweeps = elapsed / poll.as_secs_f64();
        let workers = self.configs.len() as f64;
        let units = self.args.resources.div_ceil(4) as f64;
        let databases_per_worker = units / workers;
        let d = |key: &str| counter(&counters1, key) - counter(&counters0, key);
        let trips = d("batches") + d("rpcs");
        let writes = diff_writes(&writes0, &writes1);
        let total: f64 = writes.values().sum();
        let leases: f64 = writes
            .iter()
            .filter(|(k, _)| k.ends_with(" coordination.k8s.io/leases"))
            .map(|(_, v)| v)
            .sum();
        Ok(json!({
            "duration": fig(elapsed, "s"),
            "sweeps_per_worker": fig(sweeps, "sweeps"),
            "sql": {
                "connections_opened": fig(d("connections_opened"), "connections"),
                "round_trips": fig(trips, "round trips"),
                "round_trips_per_worker_per_sweep": fig(trips / sweeps / workers, "round trips/worker/sweep"),
                "round_trips_per_database_per_worker_per_sweep": fig(trips / sweeps / workers / databases_per_worker.max(1.0), "round trips/database/worker/sweep"),
                "statements": statement_delta(&counters0, &counters1),
            },
            "apiserver_writes": {
                "per_sweep": fig(total / sweeps, "requests/sweep"),
                "per_sweep_excluding_leases": fig((total - leases) / sweeps, "requests/sweep"),
                "by_verb_and_resource": writes.iter().map(|(k, v)| (k.clone(), fig(*v, "requests"))).collect::<serde_json::Map<_, _>>(),
            },
            "processes": procs,
        }))
    }

    /// `drift`: K databases set to SIMPLE recovery out of band; time until the sweeps put
    /// them back to FULL.
    fn drift(&self) -> Result<Value> {
        let units = self.args.resources.div_ceil(4);
        let k = self.args.drift.min(units);
        let names: Vec<String> = (0..k).map(|u| format!("scale_db_{u:05}")).collect();
        let batch: String = names
            .iter()
            .map(|n| format!("ALTER DATABASE [{n}] SET RECOVERY SIMPLE; "))
            .collect();
        let count_sql = format!(
            "SELECT COUNT(*) FROM sys.databases WHERE recovery_model_desc <> N'FULL' AND name IN ({})",
            names
                .iter()
                .map(|n| format!("N'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let writes0 = self.apiserver_writes()?;
        let counters0 = self.counters()?;
        let cpu0 = self.sampler.snapshot_and_reset_peaks();
        self.sql(&["exec", &batch])?;
        let started = Instant::now();
        let drifted: usize = self.sql(&["value", &count_sql])?.trim().parse().unwrap_or(0);
        eprintln!("    {drifted} of {k} databases drifted");
        let timeout = Duration::from_secs(self.args.timeout_secs);
        let mut next_report = Duration::from_secs(10);
        let took = loop {
            let left: usize = self
                .sql(&["value", &count_sql])?
                .trim()
                .parse()
                .context("count of drifted databases")?;
            if left == 0 {
                break started.elapsed().as_secs_f64();
            }
            if started.elapsed() > timeout {
                bail!("drift: {left} of {k} databases not corrected after {timeout:?}");
            }
            if started.elapsed() > next_report {
                eprintln!("    {left}/{k} still drifted ({:.0?})", started.elapsed());
                next_report += Duration::from_secs(10);
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        eprintln!("    {k} drifted databases corrected in {took:.1} s");
        let writes1 = self.apiserver_writes()?;
        let counters1 = self.counters()?;
        let writes = diff_writes(&writes0, &writes1);
        Ok(json!({
            "objects_changed": fig(k as f64, "databases"),
            "drifted_seen": fig(drifted as f64, "databases"),
            "all_corrected": fig(took, "s"),
            "poll_interval": fig(self.args.poll_interval_secs as f64, "s"),
            "alter_database_statements": fig(
                counter(&counters1["statements"], "ALTER DATABASE") - counter(&counters0["statements"], "ALTER DATABASE"),
                "statements (incl. the K out-of-band ones)"),
            "apiserver_writes": fig(writes.values().sum(), "requests"),
            "processes": self.sampler.report_since(&cpu0),
        }))
    }

    /// `latency`: every statement delayed; M resources on a config with
    /// maxConcurrentOperations 4, then M on one with 1.
    fn latency(&self) -> Result<Value> {
        let m = self.args.latency_resources;
        let names = ["bench-lat-c4".to_owned(), "bench-lat-c1".to_owned()];
        let yaml = format!(
            "{}---\n{}",
            self.config_yaml(&names[0], Some(4)),
            self.config_yaml(&names[1], Some(1))
        );
        self.apply("latency configs", "bench-latency-configs.yaml", &yaml)?;
        self.wait_workers(&names)?;
        self.faults(&json!({"delay_ms": self.args.delay_ms}))?;
        let measured = (|| -> Result<Value> {
            // Databases and Logins only: a User or Schema created before its database waits
            // in the worker's retry backoff, which would measure the backoff, not concurrency.
            let c4 = self.create_and_measure("lat-c4", m, &names[..1], 2)?;
            let c1 = self.create_and_measure("lat-c1", m, &names[1..], 2)?;
            let rate = |v: &Value| v["throughput"]["value"].as_f64().unwrap_or(f64::NAN);
            let wrate = |v: &Value| v["worker_throughput"]["value"].as_f64().unwrap_or(f64::NAN);
            Ok(json!({
                "delay_per_statement": fig(self.args.delay_ms as f64, "ms"),
                "resources_per_config": fig(m as f64, "resources (Databases and Logins)"),
                "throughput_max_concurrent_4": fig(rate(&c4), "resources/s"),
                "throughput_max_concurrent_1": fig(rate(&c1), "resources/s"),
                "speedup_4_over_1": fig(rate(&c4) / rate(&c1), "x"),
                "worker_throughput_max_concurrent_4": fig(wrate(&c4), "resources/s (WorkItems up to date)"),
                "worker_throughput_max_concurrent_1": fig(wrate(&c1), "resources/s (WorkItems up to date)"),
                "worker_speedup_4_over_1": fig(wrate(&c4) / wrate(&c1), "x"),
                "max_concurrent_4": c4,
                "max_concurrent_1": c1,
            }))
        })();
        let reset = self.faults(&json!({"delay_ms": 0}));
        let value = measured?;
        reset?;
        Ok(value)
    }
}

/// Value of a numeric counter (0 when absent).
fn counter(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn sum_map(v: &Value) -> f64 {
    v.as_object()
        .map(|m| m.values().filter_map(Value::as_f64).sum())
        .unwrap_or(0.0)
}

/// Statement counts by kind that changed between two counter documents.
fn statement_delta(a: &Value, b: &Value) -> Value {
    map_delta(&a["statements"], &b["statements"], "statements")
}

/// Entries of a counter map (`{"key": n}`) that changed from `a` to `b`.
fn map_delta(a: &Value, b: &Value, unit: &str) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(kinds) = b.as_object() {
        for (kind, v) in kinds {
            let d = v.as_f64().unwrap_or(0.0) - counter(a, kind);
            if d != 0.0 {
                out.insert(kind.clone(), fig(d, unit));
            }
        }
    }
    Value::Object(out)
}

/// `p`-quantile (nearest rank) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Seconds since the epoch of `2026-11-25T19:05:03Z` (the apiserver's second-precision form).
fn rfc3339(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':').map(|p| p.parse::<f64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + (hh as i64) * 3600 + (mm as i64) * 60 + ss as i64)
}

/// Write requests in Prometheus text: `apiserver_request_total` summed by `VERB group/resource`
/// (verbs POST, PUT, PATCH, APPLY, DELETE, DELETECOLLECTION).
fn parse_writes(metrics: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| -> &str {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(name)?.strip_prefix("=\"")?.strip_suffix('"'))
                .unwrap_or("")
        };
        let verb = label("verb");
        if !matches!(
            verb,
            "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
        ) {
            continue;
        }
        let (group, resource, sub) = (label("group"), label("resource"), label("subresource"));
        let mut key = format!(
            "{verb} {}{resource}",
            if group.is_empty() {
                String::new()
            } else {
                format!("{group}/")
            }
        );
        if !sub.is_empty() {
            key.push('/');
            key.push_str(sub);
        }
        *out.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// `b - a` per key, non-zero entries only.
fn diff_writes(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// One HTTP/1.0 request to the emulator's admin interface on loopback; the body of a 2xx.
pub(crate) fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to the emulator admin port {port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, content) = response
        .split_once("\r\n\r\n")
        .context("emulator admin: no header end")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if !status.starts_with('2') {
        bail!(
            "emulator admin {method} {path}: {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(content.to_owned())
}

/// Port of this environment's apiserver, from its kubeconfig.
fn apiserver_port(dir: &Path) -> Result<u16> {
    let kubeconfig = std::fs::read_to_string(dir.join("kubeconfig"))?;
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .context("no apiserver port in the kubeconfig")
}

/// One sampled process.
#[derive(Clone, Debug, Default)]
struct Proc {
    /// `provider` or `worker <WORKER_NAME>`.
    label: String,
    /// utime + stime, in clock ticks.
    ticks: u64,
    /// Highest VmRSS sampled since the last reset, in KiB.
    peak_rss_kib: u64,
    /// VmHWM (the kernel's own peak), in KiB.
    hwm_kib: u64,
}

/// Samples the provider and worker processes of this environment once a second, on a thread.
struct Sampler {
    procs: Arc<Mutex<HashMap<u32, Proc>>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    ticks_per_sec: f64,
}

impl Sampler {
    fn start(apiserver_port: u16) -> Sampler {
        let procs: Arc<Mutex<HashMap<u32, Proc>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let debug = cluster::target_dir().join("debug");
        let bins = [
            (debug.join("provider-sqlserver"), "provider"),
            (debug.join("worker"), "worker"),
        ];
        let thread = {
            let procs = procs.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sample(&procs, &bins, apiserver_port);
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        };
        // CLK_TCK, without libc: getconf, else the Linux default.
        let ticks_per_sec = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0);
        Sampler {
            procs,
            stop,
            thread: Mutex::new(Some(thread)),
            ticks_per_sec,
        }
    }

    /// CPU ticks per process now; peaks start over.
    fn snapshot_and_reset_peaks(&self) -> HashMap<u32, u64> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs
            .iter_mut()
            .map(|(pid, p)| {
                p.peak_rss_kib = 0;
                (*pid, p.ticks)
            })
            .collect()
    }

    /// CPU seconds since `since` and peak RSS per process, and the provider/worker totals.
    fn report_since(&self, since: &HashMap<u32, u64>) -> Value {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_label: BTreeMap<String, (f64, u64, u64)> = BTreeMap::new();
        for (pid, p) in procs.iter() {
            let cpu =
                p.ticks.saturating_sub(since.get(pid).copied().unwrap_or(0)) as f64 / self.ticks_per_sec;
            let e = by_label.entry(p.label.clone()).or_default();
            e.0 += cpu;
            e.1 = e.1.max(p.peak_rss_kib);
            e.2 = e.2.max(p.hwm_kib);
        }
        let mib = |kib: u64| kib as f64 / 1024.0;
        let workers: Vec<_> = by_label.iter().filter(|(l, _)| l.starts_with("worker")).collect();
        let worker_cpu: f64 = workers.iter().map(|(_, v)| v.0).sum();
        let worker_peak = workers.iter().map(|(_, v)| v.1).max().unwrap_or(0);
        let worker_hwm = workers.iter().map(|(_, v)| v.2).max().unwrap_or(0);
        let provider = by_label.get("provider").copied().unwrap_or_default();
        json!({
            "provider_cpu": fig(provider.0, "CPU s"),
            "provider_peak_rss": fig(mib(provider.1), "MiB (VmRSS sampled at 1 s)"),
            "provider_vmhwm": fig(mib(provider.2), "MiB (VmHWM, since start)"),
            "workers": fig(workers.len() as f64, "processes"),
            "workers_cpu_total": fig(worker_cpu, "CPU s"),
            "worker_max_peak_rss": fig(mib(worker_peak), "MiB (VmRSS sampled at 1 s)"),
            "worker_max_vmhwm": fig(mib(worker_hwm), "MiB (VmHWM, since start)"),
            "per_process": by_label.iter().map(|(l, v)| (l.clone(), json!({
                "cpu": fig(v.0, "CPU s"),
                "peak_rss": fig(mib(v.1), "MiB"),
                "vmhwm": fig(mib(v.2), "MiB"),
            }))).collect::<serde_json::Map<_, _>>(),
        })
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One pass over /proc: every process running one of `bins` with this environment's
/// apiserver port in its environment.
fn sample(procs: &Mutex<HashMap<u32, Proc>>, bins: &[(PathBuf, &str)], port: u16) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let port_var = format!("KUBERNETES_SERVICE_PORT={port}");
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let base = entry.path();
        let known = procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pid)
            .map(|p| p.label.clone());
        let label = match known {
            Some(label) => label,
            None => {
                let Ok(exe) = std::fs::read_link(base.join("exe")) else {
                    continue;
                };
                let Some((_, kind)) = bins.iter().find(|(b, _)| *b == exe) else {
                    continue;
                };
                let Ok(environ) = std::fs::read(base.join("environ")) else {
                    continue;
                };
                let environ = String::from_utf8_lossy(&environ);
                let vars: Vec<&str> = environ.split('\0').collect();
                if !vars.contains(&port_var.as_str()) {
                    continue;
                }
                if *kind == "worker" {
                    let name = vars
                        .iter()
                        .find_map(|v| v.strip_prefix("WORKER_NAME="))
                        .unwrap_or("?");
                    format!("worker {name}")
                } else {
                    (*kind).to_owned()
                }
            }
        };
        let (Ok(status), Ok(stat)) = (
            std::fs::read_to_string(base.join("status")),
            std::fs::read_to_string(base.join("stat")),
        ) else {
            continue;
        };
        // Fields after the command name (which may hold spaces): state is field 3, utime 14,
        // stime 15.
        let ticks = stat
            .rsplit_once(") ")
            .map(|(_, rest)| {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                get(11) + get(12)
            })
            .unwrap_or(0);
        let rss = kib_field(&status, "VmRSS:").unwrap_or(0);
        let hwm = kib_field(&status, "VmHWM:").unwrap_or(0);
        let mut procs = procs.lock().unwrap_or_else(|e| e.into_inner());
        let p = procs.entry(pid).or_insert_with(|| Proc {
            label,
            ..Proc::default()
        });
        p.ticks = p.ticks.max(ticks);
        p.peak_rss_kib = p.peak_rss_kib.max(rss);
        p.hwm_kib = p.hwm_kib.max(hwm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_epoch_seconds() {
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339("2000-03-01T00:00:01Z"), Some(951_868_801));
        assert_eq!(rfc3339("garbage"), None);
    }

    #[test]
    fn write_requests_are_summed_by_verb_and_resource() {
        let text = r#"apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="POST",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="GET",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="sqlserver.kubesql.io",resource="databases",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 2"#;
        let w = parse_writes(text);
        assert_eq!(w.get("POST secrets"), Some(&3.0));
        assert_eq!(w.get("PATCH sqlserver.kubesql.io/databases/status"), Some(&2.0));
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn resources_spread_over_kinds_and_configs() {
        let configs = vec!["a".to_owned(), "b".to_owned()];
        let yaml = Bench::resources_yaml("scale", 8, &configs, 4);
        assert_eq!(yaml.matches("kind: Database").count(), 2);
        assert_eq!(yaml.matches("kind: User").count(), 2);
        assert!(yaml.contains("{database: scale_db_00001, type: WithoutLogin}"));
        assert!(yaml.contains("name: b}"));
    }
}
