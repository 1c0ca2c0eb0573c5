//! The provider's API, shared by the provider and the worker.
//!
//! ```text
//! package/crds/*.yaml ──kopium (cargo xtask gen)──▶ generated::*   (raw shapes, never used downstream)
//!                                                        │ TryFrom (+ garde)
//!                                                        ▼
//!                                              request::*Request  (validated, typed)
//!                                                        │ provider resolves references
//!                                                        ▼
//!                                  request::Desired in WorkItem.spec.desired ──▶ worker
//! ```
//!
//! The CRD YAML is the source of truth; kopium drops defaults, patterns and CEL rules, so
//! validation lives twice on purpose: in the CRDs (the apiserver rejects bad input at apply
//! time) and in [`request`] (nothing downstream ever touches a raw generated struct).
#![forbid(unsafe_code)]

pub mod constants;
pub mod identifier;
pub mod policies;
