//! `cargo xtask`: the project's task runner.
//!
//! Every set-up step a fresh machine needs lives here, so that the README's two commands —
//! `cargo xtask demo` and `cargo xtask test` — are all a newcomer (or CI) has to run. Tools the
//! tasks need (kopium, cargo-deny, the Go-built control plane, client libraries) are installed
//! into a cache outside the repository, keyed by version (see [`util::cache_dir`]).
#![forbid(unsafe_code)]

mod bench;
mod cel;
mod codegen;
mod crossplane;
mod crossplane_e2e;
mod demo;
mod e2e;
mod emulator;
mod faults;
mod identity;
mod scan;
mod test;
mod testenv;
mod tls;
mod util;

use clap::{Parser, Subcommand};

/// Command line of `cargo xtask`.
#[derive(Parser)]
#[command(name = "cargo xtask", about = "provider-sqlserver task runner")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Regenerate apis/src/generated/ from package/crds/ and the internal CRDs with a pinned kopium.
    Gen {
        /// Fail instead of writing when the generated code differs from what is committed.
        #[arg(long)]
        check: bool,
    },
    /// Run every test: fmt, clippy, cargo deny, gen --check, unit and integration tests, and the
    /// end-to-end suites that exist.
    Test(test::TestArgs),
    /// Manage the local test environment (control plane built from Go modules + process kubelet).
    Testenv {
        #[command(subcommand)]
        action: testenv::Action,
    },
    /// Run the kuttl end-to-end suite on a fresh local environment (started and stopped).
    E2e {
        /// Suites to run instead of `e2e` (repeatable, in order): a kuttl-tests/ directory,
        /// `tls` (with its own emulator) or `scan` (the secret scan).
        #[arg(long = "suite", value_name = "SUITE")]
        suites: Vec<String>,
    },
    /// Run the kuttl identity suite (Entra workload identity with a fake Entra endpoint, AWS
    /// Secrets Manager with moto) on a fresh local environment (started and stopped).
    Identity,
    /// Run the kuttl CEL suite against a running environment (`cargo xtask testenv up`).
    Cel,
    /// Bring up the local environment with the emulator and the provider, apply examples/, and
    /// leave it running.
    Demo {
        /// Stop a running demo instead.
        #[arg(long)]
        down: bool,
    },
    /// Run the benchmark scenarios and write target/bench/result.json.
    Bench(bench::BenchArgs),
    /// Crossplane checks: render examples/composition with the function running locally, diff
    /// against the goldens, validate against the CRDs, build the package; then an XR end to
    /// end under Crossplane core on a local environment.
    Crossplane {
        /// Rewrite the golden files instead of comparing (same as UPDATE_GOLDEN=1).
        #[arg(long)]
        bless: bool,
        /// Skip the end-to-end part (Crossplane core on a local environment).
        #[arg(long)]
        offline: bool,
    },
    /// Run the fault-injection scenarios on a fresh local environment (started and stopped).
    Faults(faults::FaultsArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Gen { check } => codegen::run(check),
        Command::Test(args) => test::run(&args),
        Command::Testenv { action } => testenv::run(action),
        Command::E2e { suites } => e2e::run(&suites),
        Command::Identity => identity::run(),
        Command::Cel => cel::cel(),
        Command::Demo { down } => demo::run(down),
        Command::Bench(args) => bench::run(&args),
        Command::Crossplane { bless, offline } => crossplane::run(bless, offline),
        Command::Faults(args) => faults::run(&args),
    }
}
