//! Shared helpers: locating the workspace and the tool cache, running commands with visible
//! progress, and installing pinned cargo tools.

use anyhow::{Context, Result, bail};
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

/// Root of the workspace (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cache for built tools, outside the repository so a clean clone never sees binaries:
/// `$PROVIDER_SQLSERVER_CACHE`, else `$XDG_CACHE_HOME/provider-sqlserver`, else
/// `~/.cache/provider-sqlserver`. Every entry below it is keyed by version.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PROVIDER_SQLSERVER_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("provider-sqlserver"));
    }
    let home = std::env::var_os("HOME").context("neither PROVIDER_SQLSERVER_CACHE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("provider-sqlserver"))
}

/// Prints a step banner, runs the command with inherited output, and fails with the command
/// line when it exits non-zero. Returns how long it took, for the summary.
pub fn run(step: &str, cmd: &mut Command) -> Result<std::time::Duration> {
    eprintln!("==> {step}");
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("{step}: cannot start {cmd:?}"))?;
    let took = started.elapsed();
    if !status.success() {
        bail!("{step}: {cmd:?} failed ({status}) after {:.0?}", took);
    }
    eprintln!("    {step}: ok in {:.1?}", took);
    Ok(took)
}

/// A `cargo` command using the same toolchain that runs xtask.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// A cold `cargo xtask test` needs about this much free disk (target/ plus the environment's
/// etcd and logs); measured on a fresh clone with the dev profile of the root Cargo.toml.
const DISK_NEEDED_GIB: u64 = 8;

/// Prints the free space where target/ lives and warns when a cold run may not fit: a full
/// disk otherwise shows up minutes later as a linker "Bus error" in the middle of a build.
pub fn report_free_disk() {
    let output = Command::new("df").args(["-Pk"]).arg(workspace_root()).output();
    let free_kib = output.ok().and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.lines()
            .nth(1)?
            .split_whitespace()
            .nth(3)?
            .parse::<u64>()
            .ok()
    });
    match free_kib {
        Some(kib) => {
            let gib = kib / (1024 * 1024);
            eprintln!("==> free disk where the workspace lives: {gib} GiB");
            if gib < DISK_NEEDED_GIB {
                eprintln!(
                    "warning: a cold run needs about {DISK_NEEDED_GIB} GiB; builds may fail with \
                     \"No space left on device\" (try `cargo clean` or removing old .testenv/ dirs)"
                );
            }
        }
        None => eprintln!("==> free disk: unknown (df failed)"),
    }
}

/// Builds every binary of the workspace in one cargo invocation. Every step that needs binaries
/// calls this, so features unify once and dependencies are compiled once, not once per `-p`
/// subset (each subset is a separate set of artifacts in target/, and disk is finite).
pub fn build_bins() -> Result<std::time::Duration> {
    run(
        "cargo build --workspace --exclude xtask --bins",
        cargo().args(["build", "--workspace", "--exclude", "xtask", "--bins", "--locked"]),
    )
}

/// Installs `krate` at exactly `version` into `<cache>/tools/<krate>-<version>` (once) and
/// returns the path of its binary `bin`.
pub fn ensure_cargo_tool(krate: &str, version: &str, bin: &str) -> Result<PathBuf> {
    let root = cache_dir()?.join("tools").join(format!("{krate}-{version}"));
    let path = root.join("bin").join(bin);
    if path.is_file() {
        return Ok(path);
    }
    eprintln!(
        "    {krate} {version} is not cached yet: building it into {} (a few minutes, once)",
        root.display()
    );
    run(
        &format!("install {krate} {version}"),
        cargo()
            .args(["install", "--locked", "--quiet", "--version", version, "--root"])
            .arg(&root)
            .arg(krate),
    )?;
    if !path.is_file() {
        bail!(
            "cargo install {krate} {version} finished but {} is missing",
            path.display()
        );
    }
    Ok(path)
}

/// For commands whose issue has not been built: says so plainly and succeeds, so scripts that
/// call them keep working while the project grows. (Unused while every command is built.)
#[allow(dead_code)]
pub fn not_built_yet(command: &str, by: &str) -> Result<()> {
    eprintln!("{command}: not built yet (it arrives with {by}).");
    Ok(())
}
