//! provider-sqlserver: the manager. See the crate docs of `provider`.
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One crypto provider for the whole process (rust-deps.md §1.10).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = provider::Args::parse();
    match provider::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("provider-sqlserver: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
