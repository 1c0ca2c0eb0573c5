//! `cargo xtask test`: every check and test the project has, in one command.
//!
//! Steps run in a fixed order, cheapest first, so a formatting slip fails in seconds rather
//! than after a cold build. Each step prints a banner and its duration; the run ends with a
//! summary table and a non-zero exit code if any step failed.

use crate::util::{self, cargo};
use anyhow::{Result, bail};
use std::time::Duration;

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip a step by name (repeatable): fmt, gen, clippy, deny, unit, emulator-clients,
    /// crossplane, kuttl, faults.
    #[arg(long = "skip", value_name = "STEP")]
    skip: Vec<String>,
}

type Step = (&'static str, fn() -> Result<()>);

/// The steps, in order. Names are what `--skip` takes.
const STEPS: &[Step] = &[
    ("fmt", fmt),
    ("gen", || crate::codegen::run(true)),
    ("clippy", clippy),
    ("deny", deny),
    ("unit", unit),
    ("emulator-clients", crate::emulator::fidelity_clients),
    ("crossplane", crate::crossplane::step),
    ("kuttl", crate::e2e::all_suites),
    ("faults", crate::faults::step),
];

/// Runs the steps; keeps going after a failure so one run shows every problem.
pub fn run(args: &TestArgs) -> Result<()> {
    for name in &args.skip {
        if !STEPS.iter().any(|(step, _)| step == name) {
            bail!("--skip {name}: no such step (steps: {})", step_names());
        }
    }
    util::report_free_disk();
    let mut results: Vec<(&str, Option<Duration>, Option<String>)> = Vec::new();
    for (name, step) in STEPS {
        if args.skip.iter().any(|s| s == name) {
            results.push((name, None, None));
            continue;
        }
        eprintln!("\n######## cargo xtask test: {name}");
        let started = std::time::Instant::now();
        let outcome = step().err().map(|e| format!("{e:#}"));
        results.push((name, Some(started.elapsed()), outcome));
    }
    eprintln!("\n######## summary");
    let (mut passed, mut failed) = (0, 0);
    for (name, took, error) in &results {
        match (took, error) {
            (None, _) => eprintln!("  {name:<18} skipped"),
            (Some(took), None) => {
                passed += 1;
                eprintln!("  {name:<18} ok      {:>7.1?}", took);
            }
            (Some(took), Some(error)) => {
                failed += 1;
                eprintln!("  {name:<18} FAILED  {:>7.1?}  {error}", took);
            }
        }
    }
    // The plain closing line CI reads: steps, not individual tests (cargo prints those).
    println!("steps: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} step(s) failed");
    }
    Ok(())
}

fn step_names() -> String {
    STEPS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

fn fmt() -> Result<()> {
    util::run("rustfmt --check", cargo().args(["fmt", "--all", "--", "--check"])).map(drop)
}

fn clippy() -> Result<()> {
    util::run(
        "clippy -D warnings",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    )
    .map(drop)
}

/// cargo-deny version; bump deliberately (it is built from source into the tool cache).
const CARGO_DENY: &str = "0.20.2";

/// Licenses, bans (duplicate TLS stacks, ring, openssl) and sources. The advisories check needs
/// the RustSec database from GitHub, which our machines cannot reach; it runs only when
/// `DENY_ADVISORIES=1` says a network is there.
fn deny() -> Result<()> {
    let bin = util::ensure_cargo_tool("cargo-deny", CARGO_DENY, "cargo-deny")?;
    let mut cmd = std::process::Command::new(bin);
    cmd.current_dir(util::workspace_root())
        .args(["--log-level", "error", "check"]);
    if std::env::var_os("DENY_ADVISORIES").is_none_or(|v| v != "1") {
        cmd.args(["bans", "licenses", "sources"]);
    }
    util::run("cargo deny check", &mut cmd).map(drop)
}

fn unit() -> Result<()> {
    util::run(
        "cargo test --workspace",
        cargo().args(["test", "--workspace", "--locked"]),
    )
    .map(drop)
}
