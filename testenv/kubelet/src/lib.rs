//! Placeholder; built by its issue.
#![forbid(unsafe_code)]
