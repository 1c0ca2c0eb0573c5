//! The secret scan: no password or token in any status, event, WorkItem or log line.
//!
//! ```text
//! install ─▶ Recorder::start: `kubectl get <type> -A --watch -o json` per type, restarted if it ends
//!              Secrets ──▶ needles, in memory (never written anywhere)
//!              WorkItems, every sqlserver.kubesql.io kind, events (core and events.k8s.io),
//!              Leases, Pods ──▶ <env dir>/logs/objects/<type>.json (every version seen)
//! suites ─▶ run: stop the recorders, add the Secrets still there and the emulator's sa password,
//!              scan logs/**  (components, pods, emulators, recorded objects)
//!              for every needle (plain and as Secret data) and for JWTs / bearer tokens
//!         ─▶ fail listing where (file:line, object), never the value
//! ```
//!
//! Objects are recorded while the suites run because kuttl deletes each test's namespace, and
//! with it that test's resources, WorkItems and events. The needles come from the cluster, not
//! from a list, so a suite that adds Secrets (an identity suite's tokens) is covered as is.
//!
//! What is not a secret: ServiceAccount token Secrets (their tokens legitimately sit in pod
//! files; a token in a log is still caught as a JWT), values under keys that name public data
//! ([`PUBLIC_KEYS`], keys ending in `id`), certificates, and values shorter than
//! [`MIN_SECRET_LEN`] (`sa`, a port).

use crate::e2e::Session;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::{
    collections::BTreeMap,
    io::{BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Keys of Secret data that hold public values.
pub const PUBLIC_KEYS: &[&str] = &[
    "username",
    "user",
    "endpoint",
    "host",
    "port",
    "database",
    "server",
    "ca.crt",
    "tls.crt",
    "ca.pem",
    "namespace",
];

/// Shorter values are not scanned for: they would match by accident (`sa`, `1433`).
pub const MIN_SECRET_LEN: usize = 8;

/// One value that must appear nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needle {
    /// Where it comes from (`Secret ns/name key password`), for the report.
    pub origin: String,
    /// The forms to look for: the value, and the base64 text it has in the Secret's `data`.
    pub forms: Vec<String>,
}

/// One place where a needle or a token was found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// File and line, or object.
    pub place: String,
    /// What was found: the needle's origin, or "a JWT" / "a bearer token" (never the value).
    pub what: String,
}

/// Standard base64 (with or without padding); `None` if it is not.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn is_public_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    PUBLIC_KEYS.contains(&lower.as_str()) || lower.ends_with("id")
}

/// The needles of one Secret object (as the API returns it).
pub fn needles_of_secret(secret: &Value) -> Vec<Needle> {
    if secret["type"] == "kubernetes.io/service-account-token" {
        return Vec::new();
    }
    let namespace = secret["metadata"]["namespace"].as_str().unwrap_or("");
    let name = secret["metadata"]["name"].as_str().unwrap_or("");
    let Some(data) = secret["data"].as_object() else {
        return Vec::new();
    };
    data.iter()
        .filter(|(key, _)| !is_public_key(key))
        .filter_map(|(key, encoded)| {
            let encoded = encoded.as_str()?;
            let value = String::from_utf8(base64_decode(encoded)?).ok()?;
            let value = value.trim().to_owned();
            if value.len() < MIN_SECRET_LEN
                || (value.starts_with("-----BEGIN CERTIFICATE") && !value.contains("PRIVATE KEY"))
            {
                return None;
            }
            Some(Needle {
                origin: format!("Secret {namespace}/{name} key {key}"),
                forms: vec![value, encoded.to_owned()],
            })
        })
        .collect()
}

/// Needles of every Secret in a list, or in a stream of Secret objects, without duplicates.
pub fn add_needles(needles: &mut Vec<Needle>, secrets: impl IntoIterator<Item = Value>) {
    for secret in secrets {
        for needle in needles_of_secret(&secret) {
            if !needles.iter().any(|n| n.forms[0] == needle.forms[0]) {
                needles.push(needle);
            }
        }
    }
}

fn token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// Whether `text` holds something shaped like a JWT (`eyJ….eyJ….`: a JSON header and
/// payload, base64url) or a bearer token (`Bearer ` and 16 or more token characters).
pub fn token_in(text: &str) -> Option<&'static str> {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("eyJ") {
        let start = i + at;
        let mut j = start;
        while j < b.len() && token_char(b[j]) {
            j += 1;
        }
        if j > start + 3 && b.get(j) == Some(&b'.') && text[j + 1..].starts_with("eyJ") {
            let mut k = j + 1;
            while k < b.len() && token_char(b[k]) {
                k += 1;
            }
            if k > j + 4 && b.get(k) == Some(&b'.') {
                return Some("a JWT");
            }
        }
        i = start + 3;
    }
    let lower = text.to_ascii_lowercase();
    let mut i = 0;
    while let Some(at) = lower[i..].find("bearer ") {
        let start = i + at + "bearer ".len();
        let run = b[start..]
            .iter()
            .take_while(|c| token_char(**c) || matches!(c, b'.' | b'~' | b'+' | b'/' | b'='))
            .count();
        if run >= 16 {
            return Some("a bearer token");
        }
        i = start;
    }
    None
}

/// Scans one piece of text (a log line, an object) for every needle and for tokens.
pub fn scan_text(place: &str, text: &str, needles: &[Needle]) -> Vec<Finding> {
    let mut found: Vec<Finding> = needles
        .iter()
        .filter(|n| n.forms.iter().any(|f| text.contains(f.as_str())))
        .map(|n| Finding {
            place: place.to_owned(),
            what: n.origin.clone(),
        })
        .collect();
    if let Some(what) = token_in(text) {
        found.push(Finding {
            place: place.to_owned(),
            what: what.to_owned(),
        });
    }
    found
}

/// Scans a recorded watch stream (concatenated JSON objects); places name each object.
pub fn scan_objects(file: &str, text: &str, needles: &[Needle]) -> Vec<Finding> {
    let mut found = Vec::new();
    for (n, object) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        let Ok(object) = object else {
            // A watch cut mid-object: scan the rest as text.
            found.extend(scan_text(&format!("{file} (unparsed tail)"), text, needles));
            break;
        };
        let meta = &object["metadata"];
        let place = format!(
            "{file}: {} {}/{} (resourceVersion {}, #{n})",
            object["kind"].as_str().unwrap_or("?"),
            meta["namespace"].as_str().unwrap_or(""),
            meta["name"].as_str().unwrap_or("?"),
            meta["resourceVersion"].as_str().unwrap_or("?"),
        );
        found.extend(scan_text(&place, &object.to_string(), needles));
    }
    found
}

/// Scans a log file line by line.
pub fn scan_log(file: &str, text: &str, needles: &[Needle]) -> Vec<Finding> {
    text.lines()
        .enumerate()
        .flat_map(|(n, line)| scan_text(&format!("{file}:{}", n + 1), line, needles))
        .collect()
}

/// The report: findings grouped by what was found, places listed (at most 20 per needle).
pub fn report(findings: &[Finding]) -> String {
    let mut by_what: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for f in findings {
        by_what.entry(&f.what).or_default().push(&f.place);
    }
    let mut out = String::new();
    for (what, places) in by_what {
        out.push_str(&format!("{what} found in {} place(s):\n", places.len()));
        for p in places.iter().take(20) {
            out.push_str(&format!("    {p}\n"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The I/O shell.

/// Watches that record objects while the suites run.
pub struct Recorder {
    stop: Arc<AtomicBool>,
    pids: Arc<Mutex<BTreeMap<String, u32>>>,
    threads: Vec<JoinHandle<()>>,
    needles: Arc<Mutex<Vec<Needle>>>,
}

fn objects_dir(session: &Session) -> PathBuf {
    session.dir.join("logs").join("objects")
}

/// The types recorded to files: every kind of our API groups, events, Leases and Pods.
fn recorded_types(session: &Session) -> Result<Vec<String>> {
    let mut types = Vec::new();
    for group in ["sqlserver.kubesql.io", "queue.sqlserver.kubesql.io"] {
        let out = session
            .kubectl()
            .args([
                "api-resources",
                "--api-group",
                group,
                "--namespaced=true",
                "-o",
                "name",
            ])
            .output()?;
        let cluster = session
            .kubectl()
            .args([
                "api-resources",
                "--api-group",
                group,
                "--namespaced=false",
                "-o",
                "name",
            ])
            .output()?;
        for o in [out, cluster] {
            if !o.status.success() {
                bail!("kubectl api-resources --api-group {group} failed");
            }
            types.extend(String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned));
        }
    }
    types.extend(
        [
            "events",
            "events.events.k8s.io",
            "leases.coordination.k8s.io",
            "pods",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    Ok(types)
}

impl Recorder {
    /// Starts one watch per type (the provider's CRDs must be installed).
    pub fn start(session: &Session) -> Result<Self> {
        let dir = objects_dir(session);
        std::fs::create_dir_all(&dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let pids = Arc::new(Mutex::new(BTreeMap::new()));
        let needles = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        let mut types = recorded_types(session)?;
        types.push("secrets".into());
        for kind in types {
            let mut cmd = session.kubectl();
            cmd.args(["get", &kind, "-A", "--watch", "-o", "json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let (stop, pids, needles) = (stop.clone(), pids.clone(), needles.clone());
            let file = dir.join(format!("{kind}.json"));
            threads.push(std::thread::spawn(move || {
                record(cmd, &kind, &file, &stop, &pids, &needles);
            }));
        }
        Ok(Self {
            stop,
            pids,
            threads,
            needles,
        })
    }

    /// Stops every watch (by PID) and returns the needles seen in Secrets.
    fn finish(mut self) -> Vec<Needle> {
        self.stop_all();
        self.needles.lock().map(|n| n.clone()).unwrap_or_default()
    }

    fn stop_all(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let pids: Vec<u32> = self
            .pids
            .lock()
            .map(|p| p.values().copied().collect())
            .unwrap_or_default();
        for pid in pids {
            kill(pid);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Recorder {
    /// A suite failed before the scan: the watches still stop.
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-s", "TERM", "--", &pid.to_string()])
        .status();
}

/// One watch, restarted when it ends (the apiserver closes watches after a while) until told
/// to stop. Secrets become needles in memory; everything else is appended to `file`.
fn record(
    mut cmd: Command,
    kind: &str,
    file: &Path,
    stop: &AtomicBool,
    pids: &Mutex<BTreeMap<String, u32>>,
    needles: &Mutex<Vec<Needle>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut child) = cmd.spawn() else { return };
        if let Ok(mut p) = pids.lock() {
            p.insert(kind.to_owned(), child.id());
        }
        // Told to stop between the check above and the PID being recorded.
        if stop.load(Ordering::SeqCst) {
            kill(child.id());
        }
        if let Some(stdout) = child.stdout.take() {
            if kind == "secrets" {
                let stream =
                    serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>();
                for secret in stream.map_while(Result::ok) {
                    if let Ok(mut n) = needles.lock() {
                        add_needles(&mut n, [secret]);
                    }
                }
            } else if let Ok(mut out) = std::fs::OpenOptions::new().create(true).append(true).open(file) {
                let _ = std::io::copy(&mut BufReader::new(stdout), &mut out);
                let _ = out.flush();
            }
        }
        let _ = child.wait();
        if !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Stops the recorder, collects the needles (recorded Secrets, the Secrets still there, the
/// emulator's sa password) and scans every file under `<env dir>/logs`.
pub fn run(session: &Session, recorder: Option<Recorder>) -> Result<()> {
    let started = Instant::now();
    let mut needles = recorder.map(Recorder::finish).unwrap_or_default();
    let out = session
        .kubectl()
        .args(["get", "secrets", "-A", "-o", "json"])
        .output()
        .context("kubectl get secrets")?;
    if !out.status.success() {
        bail!("kubectl get secrets -A failed");
    }
    let list: Value = serde_json::from_slice(&out.stdout).context("Secret list")?;
    add_needles(
        &mut needles,
        list["items"].as_array().cloned().unwrap_or_default(),
    );
    needles.push(Needle {
        origin: "the emulator's sa password".into(),
        forms: vec![session.sa_password.clone()],
    });
    // Whatever still exists, as it is now (the recorder may not have run: `--suite scan`).
    let snapshot_dir = objects_dir(session).join("final");
    std::fs::create_dir_all(&snapshot_dir)?;
    for kind in recorded_types(session)? {
        let out = session
            .kubectl()
            .args(["get", &kind, "-A", "-o", "json"])
            .stderr(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let list: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let items: Vec<String> = list["items"]
            .as_array()
            .map(|a| a.iter().map(Value::to_string).collect())
            .unwrap_or_default();
        std::fs::write(snapshot_dir.join(format!("{kind}.json")), items.join("\n"))?;
    }

    let logs = session.dir.join("logs");
    let mut files = Vec::new();
    files_under(&logs, &mut files);
    files.sort();
    let mut findings = Vec::new();
    let (mut lines, mut objects) = (0usize, 0usize);
    for path in &files {
        let Ok(bytes) = std::fs::read(path) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        let name = path
            .strip_prefix(&session.dir)
            .unwrap_or(path)
            .display()
            .to_string();
        if path.starts_with(objects_dir(session)) {
            objects += serde_json::Deserializer::from_str(&text)
                .into_iter::<Value>()
                .count();
            findings.extend(scan_objects(&name, &text, &needles));
        } else {
            lines += text.lines().count();
            findings.extend(scan_log(&name, &text, &needles));
        }
    }
    eprintln!(
        "    secret scan: {} secret values and tokens, {} files, {lines} log lines, {objects} recorded objects, in {:.1?}",
        needles.len(),
        files.len(),
        started.elapsed()
    );
    if !findings.is_empty() {
        bail!(
            "secret scan: found secrets (values not shown):\n{}",
            report(&findings)
        );
    }
    if needles.len() < 2 {
        bail!("secret scan: found no Secret values to look for; the scan would prove nothing");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in s.as_bytes().chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
        out
    }

    fn secret(ns: &str, name: &str, kind: &str, data: &[(&str, &str)]) -> Value {
        let data: serde_json::Map<String, Value> =
            data.iter().map(|(k, v)| (k.to_string(), json!(b64(v)))).collect();
        json!({"kind": "Secret", "type": kind, "metadata": {"namespace": ns, "name": name}, "data": data})
    }

    #[test]
    fn base64_round_trip() {
        for s in ["", "a", "ab", "abc", "E2e!18bc9f3a0Aa9", "pässwörd"] {
            assert_eq!(base64_decode(&b64(s)).as_deref(), Some(s.as_bytes()), "{s}");
        }
        assert_eq!(base64_decode("not base64!"), None);
    }

    #[test]
    fn which_secret_values_are_needles() {
        let needles = {
            let mut n = Vec::new();
            add_needles(
                &mut n,
                [
                    secret(
                        "crossplane-system",
                        "sqlserver-admin",
                        "Opaque",
                        &[("username", "sa-admin-login"), ("password", "E2e!18bc9f3a0Aa9")],
                    ),
                    // A token Secret of a ServiceAccount: its token is in pod files by design.
                    secret(
                        "ns",
                        "sa-token",
                        "kubernetes.io/service-account-token",
                        &[("token", "eyJhbGciOi.x.y")],
                    ),
                    // Public and short values.
                    secret(
                        "ns",
                        "conn",
                        "connection.crossplane.io/v1alpha1",
                        &[
                            ("port", "1433"),
                            ("endpoint", "127.0.0.1"),
                            ("password", "Conn!Secret-77"),
                            ("code", "short"),
                        ],
                    ),
                    secret(
                        "ns",
                        "ca",
                        "Opaque",
                        &[(
                            "bundle",
                            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
                        )],
                    ),
                    secret(
                        "ns",
                        "ident",
                        "Opaque",
                        &[
                            ("clientId", "00000000-1111-2222"),
                            ("clientSecret", "entra-client-secret-1"),
                        ],
                    ),
                    // The same value twice is one needle.
                    secret("other", "copy", "Opaque", &[("password", "E2e!18bc9f3a0Aa9")]),
                ],
            );
            n
        };
        let origins: Vec<&str> = needles.iter().map(|n| n.origin.as_str()).collect();
        assert_eq!(
            origins,
            [
                "Secret crossplane-system/sqlserver-admin key password",
                "Secret ns/conn key password",
                "Secret ns/ident key clientSecret",
            ]
        );
        assert_eq!(needles[0].forms, ["E2e!18bc9f3a0Aa9", &b64("E2e!18bc9f3a0Aa9")]);
    }

    #[test]
    fn tokens_are_recognised() {
        // (why, text, found)
        let cases = [
            (
                "a JWT in a log line",
                "token=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln rest",
                Some("a JWT"),
            ),
            (
                "a JWT without signature is still one",
                "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
                Some("a JWT"),
            ),
            (
                "a bearer header",
                "Authorization: Bearer 0123456789abcdefXYZ",
                Some("a bearer token"),
            ),
            (
                "lower case bearer",
                "bearer abcdefghijklmnop.qrs",
                Some("a bearer token"),
            ),
            (
                "the word bearer without a token",
                "using bearer token authentication",
                None,
            ),
            ("a header without a payload", "eyJhbGciOiJSUzI1NiJ9 alone", None),
            (
                "base64 of JSON that is not a token",
                "eyJraW5kIjoiRGF0YWJhc2UifQ==",
                None,
            ),
            ("a plain line", "worker starting bind=127.0.0.1:8080", None),
        ];
        for (why, text, want) in cases {
            assert_eq!(token_in(text), want, "{why}");
        }
    }

    #[test]
    fn a_planted_secret_is_found_and_the_report_hides_it() {
        let needles = vec![Needle {
            origin: "Secret ns/pw key password".into(),
            forms: vec!["Planted!Secret-42".into(), b64("Planted!Secret-42")],
        }];
        let log = "line one\n{\"msg\":\"created login\",\"password\":\"Planted!Secret-42\"}\nclean\n";
        let found = scan_log("logs/pods/w.log", log, &needles);
        assert_eq!(
            found,
            [Finding {
                place: "logs/pods/w.log:2".into(),
                what: "Secret ns/pw key password".into()
            }]
        );
        // In a recorded object, in its base64 form (a Secret body dumped into a status).
        let objects = format!(
            "{}\n{}",
            json!({"kind": "WorkItem", "metadata": {"namespace": "w", "name": "clean", "resourceVersion": "1"}}),
            json!({"kind": "WorkItem", "metadata": {"namespace": "w", "name": "leaky", "resourceVersion": "7"},
                   "status": {"lastError": {"message": format!("data: {}", b64("Planted!Secret-42"))}}})
        );
        let found = scan_objects("logs/objects/workitems.json", &objects, &needles);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .place
                .contains("WorkItem w/leaky (resourceVersion 7, #1)"),
            "{found:?}"
        );
        // A token in an event.
        let event = json!({"kind": "Event", "metadata": {"namespace": "n", "name": "e"},
                           "note": "got eyJhbGciOiJIUzI1NiJ9.eyJvaWQiOiIxIn0.sig"});
        let found = scan_objects("logs/objects/events.json", &event.to_string(), &needles);
        assert_eq!(found[0].what, "a JWT");
        let text = report(&found);
        assert!(!text.contains("Planted"), "the report never shows the value");
        assert!(text.contains("a JWT found in 1 place(s)"), "{text}");
        // Nothing found in clean text: the scanner is not trivially failing either.
        assert!(scan_log("x", "all clean here\n", &needles).is_empty());
    }
}
