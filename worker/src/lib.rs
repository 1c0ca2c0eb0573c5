//! worker
#![forbid(unsafe_code)]

pub mod kinds;
pub mod sql;
