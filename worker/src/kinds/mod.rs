//! Per kind: what the catalog says (`Observed*`, parsed from batched catalog reads), what to
//! do about it (`plan`, pure), and the `atProvider` the provider shows.
//!
//! ```text
//!   batched observe (one read per kind per database) ──▶ Observed* ─┐
//!   WorkItem.spec.desired ──▶ apis::request::Desired ───────────────┼─▶ plan() ─▶ Plan{statements, drift}
//!   management policies + operation ────────────────────────────────┘
//! ```
//!
//! Crossplane semantics, the same for every kind (see [`decide`]):
//! - Observe only: never a statement; a missing object is reported, not created.
//! - No `Delete` policy: deleting the resource orphans the object.
//! - No `Update` policy: drift is reported (`drift`) and left alone.
//! - `LateInitialize`: fields the spec leaves unset are never compared; the observed value
//!   is in `atProvider`, where the provider copies it into the spec when the policy allows.
//! - Idempotency: create when it exists = compare instead; delete when it is gone = done.

pub mod database;
pub mod login;
pub mod schema;
pub mod user;

use crate::sql::{Statement, quote::QuoteError};
use apis::policies::Policies;

/// What the WorkItem asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Make the object match (within the policies).
    Apply,
    /// Remove it (or orphan it without the Delete policy).
    Delete,
}

/// What the plan decided, independent of the statements it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Empty management policies: nothing at all.
    Paused,
    /// Exists and matches.
    UpToDate,
    /// Missing: create it.
    Create,
    /// Exists with drift: correct it.
    Update,
    /// Exists with drift the policies (or SQL Server) do not let us correct: report only.
    DriftReported,
    /// Missing, and the policies do not allow creating it (Observe-only import).
    Missing,
    /// Exists: drop it.
    Delete,
    /// Delete asked, already gone: done.
    AlreadyGone,
    /// Delete asked without the Delete policy: leave the object, report it as released.
    Orphan,
}

impl Action {
    /// Stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Paused => "Paused",
            Self::UpToDate => "UpToDate",
            Self::Create => "Create",
            Self::Update => "Update",
            Self::DriftReported => "DriftReported",
            Self::Missing => "Missing",
            Self::Delete => "Delete",
            Self::AlreadyGone => "AlreadyGone",
            Self::Orphan => "Orphan",
        }
    }
}

/// The output of a plan: the statements to run, in order, and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The decision.
    pub action: Action,
    /// Statements to run, in order (each its own batch).
    pub statements: Vec<Statement>,
    /// Fields that differ from the spec (empty when up to date).
    pub drift: Vec<String>,
    /// Something the user should know (e.g. a field SQL Server cannot change in place).
    pub note: Option<String>,
    /// Best-effort statements that undo a partial plan when a later statement fails (e.g.
    /// back to MULTI_USER when DROP DATABASE fails after SINGLE_USER).
    pub undo: Vec<Statement>,
}

/// Why a plan cannot be made. Not an SQL error: the request itself is unusable as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A name or literal failed the quoting rules.
    #[error("cannot quote: {0}")]
    Quote(#[from] QuoteError),
    /// A password is needed (create or rotate) but the Secret has no value yet.
    #[error("the password Secret {0} has no value yet")]
    MissingSecret(String),
}

impl PlanError {
    /// Stable label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Quote(_) => "InvalidName",
            Self::MissingSecret(_) => "MissingSecret",
        }
    }
}

/// One difference between spec and catalog, with the statements that would correct it
/// (`None`: SQL Server cannot change it in place).
#[derive(Debug)]
pub(crate) struct Change {
    pub field: &'static str,
    pub fix: Option<Vec<Statement>>,
}

impl Change {
    pub(crate) fn fix(field: &'static str, statements: Vec<Statement>) -> Self {
        Self {
            field,
            fix: Some(statements),
        }
    }

    pub(crate) fn unfixable(field: &'static str) -> Self {
        Self { field, fix: None }
    }
}

/// Crossplane's decision table, shared by every kind. `changes` is only consulted when the
/// object exists; `create` and `delete` are only called when their statements are needed.
pub(crate) fn decide(
    policies: Policies,
    operation: Operation,
    exists: bool,
    changes: impl FnOnce() -> Result<Vec<Change>, PlanError>,
    create: impl FnOnce() -> Result<Vec<Statement>, PlanError>,
    delete: impl FnOnce() -> Result<Vec<Statement>, PlanError>,
) -> Result<Plan, PlanError> {
    let plan = |action, statements, drift: Vec<String>, note: Option<String>| Plan {
        action,
        statements,
        drift,
        note,
        undo: Vec::new(),
    };
    if policies.paused() {
        return Ok(plan(Action::Paused, vec![], vec![], None));
    }
    match operation {
        Operation::Delete if !policies.delete => Ok(plan(Action::Orphan, vec![], vec![], None)),
        Operation::Delete if !exists => Ok(plan(Action::AlreadyGone, vec![], vec![], None)),
        Operation::Delete => Ok(plan(Action::Delete, delete()?, vec![], None)),
        Operation::Apply if !exists && policies.create => Ok(plan(Action::Create, create()?, vec![], None)),
        Operation::Apply if !exists => Ok(plan(
            Action::Missing,
            vec![],
            vec![],
            Some("the object does not exist and the management policies do not allow creating it".into()),
        )),
        Operation::Apply => {
            let changes = changes()?;
            if changes.is_empty() {
                return Ok(plan(Action::UpToDate, vec![], vec![], None));
            }
            let drift: Vec<String> = changes.iter().map(|c| c.field.to_owned()).collect();
            let unfixable: Vec<&str> = changes
                .iter()
                .filter(|c| c.fix.is_none())
                .map(|c| c.field)
                .collect();
            let note = (!unfixable.is_empty()).then(|| {
                format!(
                    "SQL Server cannot change {} in place; delete and re-create the object to apply it",
                    unfixable.join(", ")
                )
            });
            if !policies.update {
                return Ok(plan(Action::DriftReported, vec![], drift, note));
            }
            let statements: Vec<Statement> = changes.into_iter().filter_map(|c| c.fix).flatten().collect();
            if statements.is_empty() {
                return Ok(plan(Action::DriftReported, vec![], drift, note));
            }
            Ok(plan(Action::Update, statements, drift, note))
        }
    }
}

/// Finds `name` among observed objects: exactly, else the one case-insensitive match
/// (server and database collations are usually case-insensitive, so `App` and `app` are one
/// object there). Two case-insensitive matches mean a case-sensitive collation: no match.
pub(crate) fn find<'a, T>(objects: &'a std::collections::BTreeMap<String, T>, name: &str) -> Option<&'a T> {
    if let Some(o) = objects.get(name) {
        return Some(o);
    }
    let mut matches = objects
        .iter()
        .filter(|(k, _)| k.to_lowercase() == name.to_lowercase());
    match (matches.next(), matches.next()) {
        (Some((_, o)), None) => Some(o),
        _ => None,
    }
}

/// Set difference helpers for role membership: (to add, to drop).
pub(crate) fn set_diff<'a>(
    desired: impl IntoIterator<Item = &'a str>,
    observed: &std::collections::BTreeSet<String>,
) -> (Vec<String>, Vec<String>) {
    let desired: std::collections::BTreeSet<String> = desired.into_iter().map(str::to_owned).collect();
    let lower = |s: &String| s.to_lowercase();
    let obs_lower: std::collections::BTreeSet<String> = observed.iter().map(lower).collect();
    let des_lower: std::collections::BTreeSet<String> = desired.iter().map(lower).collect();
    let add = desired
        .iter()
        .filter(|d| !obs_lower.contains(&d.to_lowercase()))
        .cloned()
        .collect();
    let drop = observed
        .iter()
        .filter(|o| !des_lower.contains(&o.to_lowercase()))
        .cloned()
        .collect();
    (add, drop)
}

/// Test helper: a plan as (action, redacted SQL lines).
#[cfg(test)]
pub(crate) fn render(plan: &Plan) -> (Action, Vec<String>) {
    (
        plan.action,
        plan.statements.iter().map(Statement::redacted).collect(),
    )
}

/// Test helper: a policy list.
#[cfg(test)]
pub(crate) fn policies(list: &[&str]) -> Policies {
    Policies::parse(list).expect("valid policies")
}
