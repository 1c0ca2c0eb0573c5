//! `cargo xtask crossplane`: the Crossplane side of the project.
//!
//! 1. Builds the Crossplane CLI, Crossplane core (the CLI renders by running core's
//!    `crossplane internal render`), function-patch-and-transform and go-containerregistry's
//!    registry from their Go modules, pinned in
//!    `testenv/tools/{crossplane,crossplane-core,function-patch-and-transform}/go.mod` and
//!    cached like the control plane (see `testenv::tools`).
//! 2. Validates the composition example's inputs (XRD, XR, Compositions, Functions) and the
//!    package install manifests with `crossplane resource validate` against Crossplane's own
//!    CRDs from the pinned core module.
//! 3. Renders each case of [`CASES`] with `crossplane composition render`, the function running
//!    as a local process (Development runtime, `--insecure`, a free 127.0.0.1 port), compares
//!    the output with its golden file in `testenv/crossplane/golden/`, and validates the
//!    rendered objects against our CRDs, the XRD and Crossplane's CRDs.
//! 4. Builds the provider package with `crossplane xpkg build` (no embedded runtime image: none
//!    can be built here) and checks what it holds.
//! 5. Unless `--offline`: an XR end to end under Crossplane core (`crate::crossplane_e2e`).
//!
//! Goldens are rewritten instead of compared with `--bless` or `UPDATE_GOLDEN=1`.
//!
//! Steps 1–4 need no network beyond the Go module proxy for the first build:
//! `resource validate` only downloads when handed package references (Provider, Function or
//! Configuration objects) as *extensions*, or Crossplane's own package unless
//! `--crossplane-image=` is empty; we hand it CRD files only.

use crate::testenv::tools::{build, output, pin, tools_dir};
use crate::util::{cache_dir, workspace_root};
use anyhow::{Context, Result, bail};
use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

const CLI_MODULE: &str = "github.com/crossplane/cli/v2";
const CORE_MODULE: &str = "github.com/crossplane/crossplane/v2";
const PAT_MODULE: &str = "github.com/crossplane-contrib/function-patch-and-transform";
/// go-containerregistry: its `cmd/registry` serves the function package to core in the e2e
/// suite (already in the CLI's module graph, so no new pin).
const REGISTRY_MODULE: &str = "github.com/google/go-containerregistry";
/// Where both the CLI and core read their version (`crossplane version`), stamped like a release.
const VERSION_VAR: &str = "github.com/crossplane/crossplane-runtime/v2/pkg/version.version";

/// Longest one render or validate may take (each takes a second or two).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a started function may take to listen.
const FUNCTION_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The example this step checks.
const EXAMPLE_DIR: &str = "examples/composition";
/// Fixtures and goldens of the render cases.
const TEST_DIR: &str = "testenv/crossplane";

/// One `crossplane composition render` run with its golden output.
struct Case {
    /// Golden file name (without `.yaml`) under `testenv/crossplane/golden/`.
    name: &'static str,
    /// Why the case exists.
    why: &'static str,
    /// The XR, relative to the repository root.
    xr: &'static str,
    /// The Composition.
    composition: &'static str,
    /// Observed composed resources, if the case has any.
    observed: Option<&'static str>,
    /// Required resources: where render's engine finds the composed resources' connection
    /// Secrets.
    required: Option<&'static str>,
}

const PAT_COMPOSITION: &str = "examples/composition/composition-patch-and-transform.yaml";

/// The render cases. function-go-templating is not among them: the Go module proxy serves no
/// version of it, so it cannot be built here (see docs/crossplane.md).
const CASES: &[Case] = &[
    Case {
        name: "patch-and-transform-create",
        why: "a new XR: the first pass composes Database, Login, User, Schema and the Usages, \
              wired by matchControllerRef selectors; nothing is ready, no Secret yet",
        xr: "examples/composition/xr.yaml",
        composition: PAT_COMPOSITION,
        observed: None,
        required: None,
    },
    Case {
        name: "patch-and-transform-ready",
        why: "every composed resource observed Ready and the User's connection Secret published: \
              the XR is Ready, shows the atProvider ids, and the app's Secret holds the details",
        xr: "examples/composition/xr.yaml",
        composition: PAT_COMPOSITION,
        observed: Some("testenv/crossplane/observed-ready.yaml"),
        required: Some("testenv/crossplane/user-connection-secret.yaml"),
    },
    Case {
        name: "patch-and-transform-defaults",
        why: "an XR giving only what is required, in another namespace: the XRD's defaults \
              (server: ClusterProviderConfig default; no roles) fill the rest",
        xr: "testenv/crossplane/xr-minimal.yaml",
        composition: PAT_COMPOSITION,
        observed: None,
        required: None,
    },
];

/// Kinds in rendered output that `resource validate` has no schema for, and why that is fine.
/// (Core kinds such as the composed Secret are validated: the CLI knows their schemas.)
const RENDERED_WITHOUT_SCHEMA: &[(&str, &str)] = &[(
    "render.crossplane.io/v1beta1, Kind=Result",
    "`--include-function-results` output, not an object anyone applies",
)];

/// `cargo xtask crossplane [--bless] [--offline]`.
pub fn run(bless: bool, offline: bool) -> Result<()> {
    let bless = bless || std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let root = workspace_root();
    let bins = ensure_tools()?;
    let work = crate::testenv::cluster::target_dir().join("crossplane");
    std::fs::create_dir_all(&work)?;

    let started = Instant::now();
    validate_inputs(&bins, &root, &work)?;

    let port = free_port()?;
    let function = Function::start(&bins.pat, port, &work)?;
    let mut failures = Vec::new();
    for case in CASES {
        if let Err(e) = render_case(&bins, &root, &work, case, port, bless) {
            failures.push(format!("{}: {e:#}", case.name));
        }
    }
    function.stop();
    if !failures.is_empty() {
        bail!("render cases failed:\n  {}", failures.join("\n  "));
    }

    xpkg_build(&bins, &root, &work)?;
    eprintln!("    crossplane offline checks: ok in {:.1?}", started.elapsed());
    if !offline {
        crate::crossplane_e2e::run(&bins_for_e2e(&bins), &work)?;
    }
    eprintln!("    crossplane: ok in {:.1?}", started.elapsed());
    Ok(())
}

/// What the end-to-end part needs of the built tools.
fn bins_for_e2e(b: &Binaries) -> crate::crossplane_e2e::Tools {
    crate::crossplane_e2e::Tools {
        cli: b.cli.clone(),
        core: b.core.clone(),
        function: b.pat.clone(),
        function_package: b.pat_package.clone(),
        function_version: b.pat_version.clone(),
        registry: b.registry.clone(),
        core_crds: b.core_crds.clone(),
    }
}

/// The step of `cargo xtask test` (goldens are compared unless `UPDATE_GOLDEN=1`).
pub fn step() -> Result<()> {
    run(false, false)
}

/// Built binaries and the pinned core module's CRDs.
struct Binaries {
    cli: PathBuf,
    core: PathBuf,
    pat: PathBuf,
    /// Crossplane's CRDs (`cluster/crds` of the pinned core module).
    core_crds: PathBuf,
    /// The CRD of function-patch-and-transform's input (`package/input` of its module), so
    /// `resource validate` checks the Composition's pipeline input too.
    pat_input: PathBuf,
    /// function-patch-and-transform's package directory (crossplane.yaml + input CRD), built
    /// into the function package the e2e suite installs.
    pat_package: PathBuf,
    /// function-patch-and-transform's pinned version.
    pat_version: String,
    /// An OCI registry (go-containerregistry's `cmd/registry`, from the CLI's module graph)
    /// that serves that package on 127.0.0.1 during the e2e suite.
    registry: PathBuf,
}

/// Where the module cache holds `module` as required by the tools module `tools`.
fn module_dir(tools: &str, module: &str) -> Result<PathBuf> {
    let json = output(crate::testenv::tools::go(&tools_dir(tools))?.args(["list", "-m", "-json", module]))?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    let dir = v["Dir"].as_str().with_context(|| {
        format!(
            "go list -m {module}: no Dir (not downloaded? run `go mod download` in testenv/tools/{tools})"
        )
    })?;
    Ok(PathBuf::from(dir))
}

fn module_pin(tools: &str, module: &str) -> Result<String> {
    let path = tools_dir(tools).join("go.mod");
    pin(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
        module,
    )
}

/// Builds what is missing or stale (a stamp per tools module, like the control plane).
fn ensure_tools() -> Result<Binaries> {
    let bin = cache_dir()?.join("bin");

    let cli_version = module_pin("crossplane", CLI_MODULE)?;
    let cli_dir = bin.join(format!("crossplane-cli-{cli_version}"));
    let ld = format!("-s -w -X {VERSION_VAR}={cli_version}");
    build(
        "crossplane",
        &cli_dir,
        &ld,
        &[&format!("{CLI_MODULE}/cmd/crossplane")],
        &["crossplane"],
    )?;

    let core_version = module_pin("crossplane-core", CORE_MODULE)?;
    let core_dir = bin.join(format!("crossplane-core-{core_version}"));
    let ld = format!("-s -w -X {VERSION_VAR}={core_version}");
    build(
        "crossplane-core",
        &core_dir,
        &ld,
        &[&format!("{CORE_MODULE}/cmd/crossplane")],
        &["crossplane"],
    )?;

    let pat_version = module_pin("function-patch-and-transform", PAT_MODULE)?;
    let pat_dir = bin.join(format!("function-patch-and-transform-{pat_version}"));
    build(
        "function-patch-and-transform",
        &pat_dir,
        "-s -w",
        &[PAT_MODULE],
        &["function-patch-and-transform"],
    )?;

    // Crossplane's CRDs (Composition, XRD, Function, Usage, …) from the module cache: the same
    // release that renders, so validation and rendering never disagree on a schema.
    let core_crds = module_dir("crossplane-core", CORE_MODULE)?
        .join("cluster")
        .join("crds");
    let pat_package = module_dir("function-patch-and-transform", PAT_MODULE)?.join("package");
    let pat_input = pat_package.join("input");

    // An indirect requirement of the CLI's tools module; its `require` line is the pin.
    let registry_version = module_pin("crossplane", REGISTRY_MODULE)?;
    let registry_dir = bin.join(format!("ggcr-registry-{registry_version}"));
    build(
        "crossplane",
        &registry_dir,
        "-s -w",
        &[&format!("{REGISTRY_MODULE}/cmd/registry")],
        &["registry"],
    )?;
    for dir in [&core_crds, &pat_input] {
        if !dir.is_dir() {
            bail!("{} is missing", dir.display());
        }
    }

    Ok(Binaries {
        cli: cli_dir.join("crossplane"),
        core: core_dir.join("crossplane"),
        pat: pat_dir.join("function-patch-and-transform"),
        core_crds,
        pat_input,
        pat_package,
        pat_version,
        registry: registry_dir.join("registry"),
    })
}

/// Output of one bounded command.
pub(crate) struct Captured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with stdout and stderr in files under `work` (no pipe to fill up), stdin from
/// `stdin` or nothing, and stops it after [`COMMAND_TIMEOUT`].
pub(crate) fn capture(what: &str, cmd: &mut Command, stdin: Option<&Path>, work: &Path) -> Result<Captured> {
    let slug: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let out_path = work.join(format!("{slug}.stdout"));
    let err_path = work.join(format!("{slug}.stderr"));
    cmd.stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?);
    match stdin {
        Some(p) => cmd.stdin(File::open(p).with_context(|| format!("opening {}", p.display()))?),
        None => cmd.stdin(Stdio::null()),
    };
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if began.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what}: stopped after {COMMAND_TIMEOUT:?} without finishing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Captured {
        status,
        stdout: std::fs::read_to_string(&out_path)?,
        stderr: std::fs::read_to_string(&err_path)?,
    })
}

/// The comma-separated extension list `resource validate` takes: Crossplane's CRDs, the
/// patch-and-transform input CRD, ours, and the example's XRD.
fn extensions(bins: &Binaries, root: &Path) -> String {
    [
        bins.core_crds.clone(),
        bins.pat_input.clone(),
        root.join("package").join("crds"),
        root.join(EXAMPLE_DIR).join("definition.yaml"),
    ]
    .iter()
    .map(|p| p.display().to_string())
    .collect::<Vec<_>>()
    .join(",")
}

/// `crossplane resource validate -o json` of `resources` (comma-separated files or directories).
fn validate(
    bins: &Binaries,
    root: &Path,
    work: &Path,
    what: &str,
    resources: &str,
    allowed_missing: &[(&str, &str)],
) -> Result<()> {
    let cache = work.join("validate-cache");
    let mut cmd = Command::new(&bins.cli);
    cmd.current_dir(root)
        // No `--crossplane-image`: its default makes validate download Crossplane's package
        // for the built-in schemas; we hand it the same CRDs from the module instead.
        .args([
            "resource",
            "validate",
            "--crossplane-image=",
            "--output",
            "json",
            "--cache-dir",
        ])
        .arg(&cache)
        .arg(extensions(bins, root))
        .arg(resources);
    let out = capture(&format!("validate {what}"), &mut cmd, None, work)?;
    let report = check_validation(&out.stdout, allowed_missing)
        .with_context(|| format!("crossplane resource validate ({what}): {}", out.stderr.trim()))?;
    if !out.status.success() {
        bail!(
            "crossplane resource validate ({what}) failed ({}):\n{}\n{}",
            out.status,
            out.stdout.trim(),
            out.stderr.trim()
        );
    }
    eprintln!("    validate {what}: {report}");
    Ok(())
}

/// Kinds among the example's own files without a schema here, and why.
const INPUTS_WITHOUT_SCHEMA: &[(&str, &str)] = &[(
    "gotemplating.fn.crossplane.io/v1beta1, Kind=GoTemplate",
    "function-go-templating cannot be built here: the Go module proxy serves no version of it",
)];

/// Checks `resource validate -o json` output: every resource valid, or missing a schema only
/// where `allowed` says so; at least one resource validated. Returns a one-line summary.
fn check_validation(json: &str, allowed: &[(&str, &str)]) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_str(json).with_context(|| format!("not JSON: {}", json.trim()))?;
    let resources = v["resources"]
        .as_array()
        .context("no `resources` in the report")?;
    let (mut valid, mut skipped, mut problems) = (0, 0, Vec::new());
    for r in resources {
        let gvk = format!(
            "{}, Kind={}",
            r["apiVersion"].as_str().unwrap_or_default(),
            r["kind"].as_str().unwrap_or_default()
        );
        let what = format!("{gvk} {}", r["name"].as_str().unwrap_or_default());
        match r["status"].as_str().unwrap_or_default() {
            "valid" => valid += 1,
            "missingSchema" if allowed.iter().any(|(k, _)| *k == gvk) => skipped += 1,
            "missingSchema" => problems.push(format!("{what}: no schema for it")),
            status => problems.push(format!("{what}: {status}: {}", r["errors"])),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    if valid == 0 {
        bail!("nothing was validated");
    }
    Ok(format!("{valid} valid, {skipped} without a schema by design"))
}

/// Validates the example's own manifests (XRD, XR, Compositions with the patch-and-transform
/// input, Functions) and the Crossplane install manifests of deploy/crossplane against
/// Crossplane's CRDs and the XRD. (deploy/crossplane/rbac.yaml is core RBAC: a unit test checks
/// it.)
fn validate_inputs(bins: &Binaries, root: &Path, work: &Path) -> Result<()> {
    validate(
        bins,
        root,
        work,
        "examples/composition and deploy/crossplane",
        "examples/composition,deploy/crossplane/provider.yaml,deploy/crossplane/deploymentruntimeconfig.yaml",
        INPUTS_WITHOUT_SCHEMA,
    )
}

/// Renders one case, compares it with its golden file (or rewrites it), validates it.
fn render_case(bins: &Binaries, root: &Path, work: &Path, case: &Case, port: u16, bless: bool) -> Result<()> {
    eprintln!("==> render {} ({})", case.name, case.why);
    let mut cmd = Command::new(&bins.cli);
    cmd.current_dir(root)
        .args(["composition", "render", case.xr, case.composition])
        .arg(Path::new(EXAMPLE_DIR).join("functions.yaml"))
        .arg("--crossplane-binary")
        .arg(&bins.core)
        .args(["--xrd", &format!("{EXAMPLE_DIR}/definition.yaml")])
        .args([
            "--include-full-xr",
            "--include-function-results",
            "--timeout",
            "1m",
        ])
        .args(["-a", "render.crossplane.io/runtime=Development"])
        .args([
            "-a",
            &format!("render.crossplane.io/runtime-development-target=127.0.0.1:{port}"),
        ]);
    if let Some(observed) = case.observed {
        cmd.args(["--observed-resources", observed]);
    }
    if let Some(required) = case.required {
        cmd.args(["--required-resources", required]);
    }
    let out = capture(&format!("render {}", case.name), &mut cmd, None, work)?;
    if !out.status.success() {
        bail!(
            "crossplane composition render failed ({}): {}",
            out.status,
            out.stderr.trim()
        );
    }
    let rendered = normalize(&out.stdout);
    let golden = root
        .join(TEST_DIR)
        .join("golden")
        .join(format!("{}.yaml", case.name));
    let header = comment(&format!(
        "Golden output of `cargo xtask crossplane`, case {}: {}. Regenerate with `cargo xtask \
         crossplane --bless` and review the diff.",
        case.name, case.why
    ));
    let expected_text = format!("{header}{rendered}");
    if bless {
        std::fs::create_dir_all(golden.parent().expect("golden has a parent"))?;
        std::fs::write(&golden, &expected_text)?;
        eprintln!("    wrote {}", golden.display());
    } else {
        let committed = std::fs::read_to_string(&golden).with_context(|| {
            format!(
                "reading {} (create it with `cargo xtask crossplane --bless`)",
                golden.display()
            )
        })?;
        if let Some(diff) = line_diff(&committed, &expected_text) {
            bail!(
                "rendered output differs from {} (`cargo xtask crossplane --bless` to accept):\n{diff}",
                golden.display()
            );
        }
        eprintln!("    render {}: matches its golden file", case.name);
    }
    let rendered_path = work.join(format!("{}.rendered.yaml", case.name));
    std::fs::write(&rendered_path, &rendered)?;
    validate(
        bins,
        root,
        work,
        &format!("render {}", case.name),
        &rendered_path.display().to_string(),
        RENDERED_WITHOUT_SCHEMA,
    )
}

/// `text` as YAML comment lines of at most 95 characters.
fn comment(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 95 && line != "#" {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// Makes render output stable across runs: timestamps the render engine stamps with "now",
/// and the order of its `Result` documents (readiness results come out in map order). The
/// composed objects keep their order (render sorts them).
fn normalize(rendered: &str) -> String {
    const KEY: &str = "lastTransitionTime:";
    const RESULT: &str = "kind: Result";
    let stamped: Vec<String> = rendered
        .lines()
        .map(|line| {
            // `  lastTransitionTime: …` or `  - lastTransitionTime: …` (first key of a list item).
            let body = line.trim_start().trim_start_matches("- ");
            if body.starts_with(KEY) {
                format!(
                    "{}{KEY} \"2000-01-01T00:00:00Z\"",
                    &line[..line.len() - body.len()]
                )
            } else {
                line.to_string()
            }
        })
        .collect();
    // Split into documents at `---` lines.
    let mut docs: Vec<Vec<String>> = Vec::new();
    for line in stamped {
        if line == "---" || docs.is_empty() {
            docs.push(Vec::new());
        }
        if line != "---" {
            docs.last_mut().expect("pushed above").push(line);
        }
    }
    let docs: Vec<String> = docs
        .into_iter()
        .map(|d| d.join("\n"))
        .filter(|d| !d.trim().is_empty())
        .collect();
    let (mut results, objects): (Vec<String>, Vec<String>) =
        docs.into_iter().partition(|d| d.lines().any(|l| l == RESULT));
    results.sort();
    objects
        .into_iter()
        .chain(results)
        .map(|d| format!("---\n{d}\n"))
        .collect()
}

/// A readable line diff (first difference with context), or `None` when equal.
fn line_diff(expected: &str, actual: &str) -> Option<String> {
    if expected == actual {
        return None;
    }
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let first = e
        .iter()
        .zip(&a)
        .position(|(x, y)| x != y)
        .unwrap_or(e.len().min(a.len()));
    let from = first.saturating_sub(3);
    let mut out = format!("first difference at line {}:\n", first + 1);
    for (i, line) in e.iter().enumerate().skip(from).take(first - from + 8) {
        let mark = if i >= first { "-" } else { " " };
        out.push_str(&format!("{mark} {line}\n"));
    }
    for line in a.iter().skip(first).take(8) {
        out.push_str(&format!("+ {line}\n"));
    }
    out.push_str(&format!("(golden {} lines, rendered {} lines)", e.len(), a.len()));
    Some(out)
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub(crate) fn free_port() -> Result<u16> {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// A function running as a local process, stopped by PID.
struct Function {
    child: Child,
}

impl Function {
    fn start(bin: &Path, port: u16, work: &Path) -> Result<Self> {
        let log = work.join("function-patch-and-transform.log");
        eprintln!(
            "==> starting function-patch-and-transform on 127.0.0.1:{port} (log: {})",
            log.display()
        );
        let mut child = Command::new(bin)
            .args(["--insecure", "--address", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(File::create(&log)?)
            .stderr(File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let began = Instant::now();
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "function-patch-and-transform exited ({status}); see {}",
                    log.display()
                );
            }
            if TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok() {
                return Ok(Self { child });
            }
            if began.elapsed() > FUNCTION_START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!("function-patch-and-transform did not listen within {FUNCTION_START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        // Also on early returns: never leave the function running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `crossplane xpkg build` of `package/` with `examples/`, then a look inside.
fn xpkg_build(bins: &Binaries, root: &Path, work: &Path) -> Result<()> {
    let xpkg = work.join("provider-sqlserver.xpkg");
    let _ = std::fs::remove_file(&xpkg);
    let mut cmd = Command::new(&bins.cli);
    cmd.current_dir(root)
        .args([
            "xpkg",
            "build",
            "--package-root",
            "package",
            "--examples-root",
            "examples",
        ])
        .arg("--package-file")
        .arg(&xpkg);
    let out = capture("xpkg build", &mut cmd, None, work)?;
    if !out.status.success() {
        bail!(
            "crossplane xpkg build failed ({}): {}",
            out.status,
            out.stderr.trim()
        );
    }
    let size = std::fs::metadata(&xpkg)
        .with_context(|| format!("xpkg build wrote no {}", xpkg.display()))?
        .len();

    // The package is an image tarball: manifest.json, a config whose labels name the base
    // layer (package.yaml) and the examples layer, and the layers as .tar.gz.
    let unpacked = work.join("xpkg");
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::create_dir_all(&unpacked)?;
    untar(&xpkg, &unpacked, false)?;
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(unpacked.join("manifest.json"))?)?;
    let config = manifest[0]["Config"]
        .as_str()
        .context("manifest.json: no Config")?;
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(unpacked.join(config))?)?;
    let labels = config["config"]["Labels"]
        .as_object()
        .context("image config: no labels")?;
    let mut contents = Vec::new();
    for layer in manifest[0]["Layers"]
        .as_array()
        .context("manifest.json: no Layers")?
    {
        let file = layer.as_str().context("layer name")?;
        let digest = file.trim_end_matches(".tar.gz");
        let role = labels
            .get(&format!("io.crossplane.xpkg:sha256:{digest}"))
            .and_then(|v| v.as_str())
            .unwrap_or("unlabelled");
        let dir = unpacked.join(role);
        std::fs::create_dir_all(&dir)?;
        untar(&unpacked.join(file), &dir, true)?;
        contents.push(role.to_string());
    }
    let crds = std::fs::read_dir(root.join("package").join("crds"))?.count();
    let package = std::fs::read_to_string(unpacked.join("base").join("package.yaml"))
        .context("the package has no base layer with package.yaml")?;
    let examples = std::fs::read_to_string(unpacked.join("upbound").join(".up").join("examples.yaml"))
        .context("the package has no examples layer")?;
    check_package(&package, crds)?;
    for kind in [
        "Database",
        "Login",
        "User",
        "Schema",
        "CompositeResourceDefinition",
        "Composition",
    ] {
        if !examples.lines().any(|l| l == format!("kind: {kind}")) {
            bail!("the package's examples hold no {kind}");
        }
    }
    eprintln!(
        "    xpkg build: {} ({size} bytes; layers {}; crossplane.yaml + {crds} CRDs; examples included)",
        xpkg.display(),
        contents.join(", ")
    );
    Ok(())
}

fn untar(archive: &Path, into: &Path, gzip: bool) -> Result<()> {
    let mut cmd = Command::new("tar");
    cmd.arg(if gzip { "-xzf" } else { "-xf" })
        .arg(archive)
        .arg("-C")
        .arg(into);
    let out = capture("untar", &mut cmd, None, into)?;
    if !out.status.success() {
        bail!("tar {}: {}", archive.display(), out.stderr.trim());
    }
    Ok(())
}

/// package.yaml must hold exactly the Provider metadata and every CRD of package/crds — and
/// nothing else, which is what Crossplane allows in a provider package.
fn check_package(package: &str, crds: usize) -> Result<()> {
    let kinds: Vec<&str> = package.lines().filter_map(|l| l.strip_prefix("kind: ")).collect();
    let providers = kinds.iter().filter(|k| **k == "Provider").count();
    let defs = kinds.iter().filter(|k| **k == "CustomResourceDefinition").count();
    if providers != 1 || defs != crds || kinds.len() != crds + 1 {
        bail!("package.yaml holds {kinds:?}; expected one Provider and {crds} CRDs");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_cases() {
        // (why, render output, normalized)
        let cases = [
            (
                "the engine stamps conditions with the current time; nothing else may change, so \
                 nothing else is touched",
                "---\nstatus:\n  conditions:\n  - lastTransitionTime: \"2026-11-25T20:00:00Z\"\n    type: Ready\n  name: lastTransitionTime\n",
                "---\nstatus:\n  conditions:\n  - lastTransitionTime: \"2000-01-01T00:00:00Z\"\n    type: Ready\n  name: lastTransitionTime\n",
            ),
            (
                "Result documents come out in map order: sorted, after the objects, whose own order \
                 (render's) is kept",
                "---\nkind: B\n---\nkind: Result\nmessage: z\n---\nkind: A\n---\nkind: Result\nmessage: a\n",
                "---\nkind: B\n---\nkind: A\n---\nkind: Result\nmessage: a\n---\nkind: Result\nmessage: z\n",
            ),
        ];
        for (why, input, expected) in cases {
            assert_eq!(normalize(input), expected, "{why}");
        }
    }

    #[test]
    fn validation_report_cases() {
        // (why, report, accepted)
        let row = |kind: &str, status: &str| {
            format!(
                r#"{{"apiVersion":"sqlserver.kubesql.io/v1alpha1","kind":"{kind}","name":"a","status":"{status}"}}"#
            )
        };
        let report = |rows: &[String]| format!(r#"{{"summary":{{}},"resources":[{}]}}"#, rows.join(","));
        let result = r#"{"apiVersion":"render.crossplane.io/v1beta1","kind":"Result","name":"","status":"missingSchema"}"#.to_string();
        let secret = r#"{"apiVersion":"v1","kind":"Secret","name":"s","status":"missingSchema"}"#.to_string();
        let cases = [
            ("all valid passes", report(&[row("Database", "valid")]), true),
            (
                "an invalid resource fails",
                report(&[row("Database", "valid"), row("User", "invalid")]),
                false,
            ),
            (
                "a managed kind without a schema fails: our CRDs were not loaded",
                report(&[row("Database", "missingSchema")]),
                false,
            ),
            (
                "a render Result has no schema, by design",
                report(&[row("Database", "valid"), result.clone()]),
                true,
            ),
            (
                "a Secret without a schema fails: the CLI knows core kinds, so something is off",
                report(&[row("Database", "valid"), secret]),
                false,
            ),
            (
                "defaulting failures fail",
                report(&[row("Login", "defaultingFailed")]),
                false,
            ),
            ("an empty report fails: nothing was checked", report(&[]), false),
            (
                "only allowed-missing resources fail: nothing was checked",
                report(&[result]),
                false,
            ),
            (
                "output that is not JSON fails",
                "Total 1 resources".to_string(),
                false,
            ),
        ];
        for (why, json, accepted) in cases {
            assert_eq!(
                check_validation(&json, RENDERED_WITHOUT_SCHEMA).is_ok(),
                accepted,
                "{why}"
            );
        }
    }

    #[test]
    fn package_contents_cases() {
        // (why, package.yaml, accepted)
        let cases = [
            (
                "metadata and both CRDs",
                "kind: Provider\n---\nkind: CustomResourceDefinition\n---\nkind: CustomResourceDefinition\n",
                true,
            ),
            (
                "a CRD missing",
                "kind: Provider\n---\nkind: CustomResourceDefinition\n",
                false,
            ),
            (
                "no metadata",
                "kind: CustomResourceDefinition\n---\nkind: CustomResourceDefinition\n",
                false,
            ),
            (
                "an object Crossplane refuses in a provider package",
                "kind: Provider\n---\nkind: CustomResourceDefinition\n---\nkind: CustomResourceDefinition\n---\nkind: Deployment\n",
                false,
            ),
        ];
        for (why, package, accepted) in cases {
            assert_eq!(check_package(package, 2).is_ok(), accepted, "{why}");
        }
    }

    #[test]
    fn line_diff_cases() {
        // (why, expected, actual, differs)
        let cases = [
            ("identical text is no diff", "a\nb\n", "a\nb\n", false),
            ("a changed line is found", "a\nb\n", "a\nc\n", true),
            ("a missing trailing line is found", "a\nb\n", "a\n", true),
            ("an extra line is found", "a\n", "a\nb\n", true),
        ];
        for (why, expected, actual, differs) in cases {
            assert_eq!(line_diff(expected, actual).is_some(), differs, "{why}");
        }
    }

    /// (API group, resource, verb) triples a set of RBAC rules allows (`*` verbs expanded).
    type Grants = std::collections::BTreeSet<(String, String, String)>;

    const ALL_VERBS: &[&str] = &[
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
    ];

    fn yaml_docs(path: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(workspace_root().join(path)).unwrap();
        serde_saphyr::from_multiple(&text).unwrap()
    }

    fn strings(v: &serde_json::Value) -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    fn allow(grants: &mut Grants, groups: &[String], resources: &[String], verbs: &[String]) {
        for g in groups {
            for r in resources {
                for v in verbs {
                    if v == "*" {
                        for v in ALL_VERBS {
                            grants.insert((g.clone(), r.clone(), v.to_string()));
                        }
                    } else {
                        grants.insert((g.clone(), r.clone(), v.clone()));
                    }
                }
            }
        }
    }

    fn cluster_role_grants(path: &str) -> Grants {
        let mut grants = Grants::new();
        let role = yaml_docs(path)
            .into_iter()
            .find(|d| d["kind"] == "ClusterRole")
            .unwrap_or_else(|| panic!("{path} has no ClusterRole"));
        for rule in role["rules"].as_array().unwrap() {
            allow(
                &mut grants,
                &strings(&rule["apiGroups"]),
                &strings(&rule["resources"]),
                &strings(&rule["verbs"]),
            );
        }
        grants
    }

    /// What Crossplane's RBAC manager grants a provider package (core's
    /// internal/controller/rbac/provider/roles, system role): system verbs on every CRD of the
    /// package and its status, `update` on finalizers, everything on Secrets, ConfigMaps,
    /// Events and Leases (core and coordination groups).
    fn crossplane_grants() -> Grants {
        let system: Vec<String> = ["get", "list", "watch", "update", "patch", "create"]
            .map(String::from)
            .to_vec();
        let mut grants = Grants::new();
        let mut dir: Vec<_> = std::fs::read_dir(workspace_root().join("package/crds"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        dir.sort();
        for path in dir {
            let crd: serde_json::Value =
                serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let group = crd["spec"]["group"].as_str().unwrap().to_string();
            let plural = crd["spec"]["names"]["plural"].as_str().unwrap().to_string();
            allow(
                &mut grants,
                std::slice::from_ref(&group),
                &[plural.clone(), format!("{plural}/status")],
                &system,
            );
            allow(
                &mut grants,
                &[group],
                &[format!("{plural}/finalizers")],
                &["update".to_string()],
            );
        }
        allow(
            &mut grants,
            &["".to_string(), "coordination.k8s.io".to_string()],
            &["secrets", "configmaps", "events", "leases"].map(String::from),
            &["*".to_string()],
        );
        grants
    }

    #[test]
    fn crossplane_grant_plus_extra_rbac_is_exactly_what_the_provider_needs() {
        // Why: installed as a package, the provider gets only Crossplane's grant; the ready
        // manifest deploy/crossplane/rbac.yaml must add everything else the plain install's
        // ClusterRole holds (or the provider fails at its first worker), and nothing more
        // (least privilege), and nothing Crossplane already grants (so it stays readable).
        let needed = cluster_role_grants("deploy/install/clusterrole.yaml");
        let granted = crossplane_grants();
        let extra = cluster_role_grants("deploy/crossplane/rbac.yaml");
        let missing: Vec<_> = needed
            .iter()
            .filter(|t| !granted.contains(*t) && !extra.contains(*t))
            .collect();
        assert!(
            missing.is_empty(),
            "deploy/crossplane/rbac.yaml lacks {missing:?}"
        );
        let beyond: Vec<_> = extra.iter().filter(|t| !needed.contains(*t)).collect();
        assert!(
            beyond.is_empty(),
            "deploy/crossplane/rbac.yaml grants more than the provider needs: {beyond:?}"
        );
        let redundant: Vec<_> = extra.iter().filter(|t| granted.contains(*t)).collect();
        assert!(
            redundant.is_empty(),
            "deploy/crossplane/rbac.yaml repeats Crossplane's grant: {redundant:?}"
        );
        // The binding names the ServiceAccount the DeploymentRuntimeConfig gives the provider.
        let binding = yaml_docs("deploy/crossplane/rbac.yaml")
            .into_iter()
            .find(|d| d["kind"] == "ClusterRoleBinding")
            .unwrap();
        let drc = &yaml_docs("deploy/crossplane/deploymentruntimeconfig.yaml")[0];
        assert_eq!(
            binding["subjects"][0]["name"],
            drc["spec"]["serviceAccountTemplate"]["metadata"]["name"]
        );
    }
}
