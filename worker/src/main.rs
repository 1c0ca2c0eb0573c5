//! The worker binary: installs the rustls crypto provider, parses arguments, runs.
#![forbid(unsafe_code)]

use clap::Parser;
use worker::config::{Args, EXIT_CONFIG, EXIT_FAILURE, EXIT_LOST_LEASE};

#[tokio::main]
async fn main() {
    // One rustls stack on aws-lc-rs for kube, tiberius and the cloud SDKs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("worker: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    match worker::run::run(config).await {
        Ok(()) => {}
        Err(e @ worker::run::RunError::LostLease) => {
            tracing::error!(error = %e, "stopping: another replica holds the Lease");
            std::process::exit(EXIT_LOST_LEASE);
        }
        Err(e) => {
            tracing::error!(error = %e, "stopping");
            eprintln!("worker: {e}");
            std::process::exit(EXIT_FAILURE);
        }
    }
}
