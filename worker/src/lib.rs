//! The worker: the only component that talks to SQL Server. One Deployment per
//! ProviderConfig, with its own ServiceAccount and SQL identity; N replicas, one Lease
//! holder. The holder consumes the WorkItems labelled for it and reconciles their SQL
//! objects.
//!
//! ```text
//!  config (clap + env) ─▶ run ─▶ Lease (kube-lease-manager) ─▶ leader?
//!                          │
//!   WorkItem watch ─▶ queue::Scheduler (pure: order, backoff, one task per SQL object)
//!                          │ changed items one by one; due items in one sweep batch
//!                          ▼
//!   reconcile: observe (one catalog read per kind per database)
//!              ─▶ kinds::*::plan (pure; golden-tested SQL through sql::quote)
//!              ─▶ exec::SqlPool (tiberius; one cached connection per database)
//!                          │
//!                          ▼
//!   k8s::status_document ─▶ WorkItem status (server-side apply, WORKER_MANAGER)
//! ```
//!
//! Sans-IO where it matters: `kinds`, `queue`, `sql` and the document builders in `k8s`
//! do no I/O and are unit-tested; `exec`, `reconcile` and `run` are the I/O shell,
//! integration-tested against the in-process SQL Server emulator.
#![forbid(unsafe_code)]

pub mod config;
pub mod exec;
pub mod health;
pub mod k8s;
pub mod kinds;
pub mod metrics;
pub mod queue;
pub mod reconcile;
pub mod run;
pub mod sql;
