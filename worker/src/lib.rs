//! worker
#![forbid(unsafe_code)]

pub mod exec;
pub mod kinds;
pub mod metrics;
pub mod reconcile;
pub mod sql;
