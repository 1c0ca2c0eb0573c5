//! observe (batched, I/O) → plan (pure) → execute (I/O) for a group of WorkItems that share a
//! kind and a database. The drift sweep hands the whole group over at once, so each kind
//! costs one catalog read per database however many items there are; a changed item is a
//! group of one.
//!
//! Before every mutation the Lease is checked again ([`LeaderGate`]); losing it ends the
//! group at once with [`ErrorKind::LostLease`], and the caller stops the process.

use crate::{
    exec::{SqlPool, credentials::BoxFuture},
    kinds::{self, Action, Operation, Plan, PlanError},
    metrics::{KindLabels, Metrics},
    sql::{
        Password, Row,
        error::{ErrorKind, SqlError},
    },
};
use apis::{
    identifier::SqlName,
    policies::Policies,
    request::{Desired, LoginKind, SecretKeyRef, UserKind},
};
use serde_json::Value;
use std::{collections::BTreeMap, sync::Arc};

/// The value of a Secret key, and the version of the Secret it came from.
#[derive(Clone, Debug)]
pub struct SecretValue {
    /// The value.
    pub password: Password,
    /// `uid/resourceVersion` of the Secret: changes whenever its content does.
    pub version: String,
}

/// Reads password Secrets (the Kubernetes implementation gets exactly the named Secret).
pub trait SecretSource: Send + Sync {
    /// The value at `reference`; `Ok(None)` when the Secret or key does not exist (yet).
    fn get<'a>(&'a self, reference: &'a SecretKeyRef) -> BoxFuture<'a, Result<Option<SecretValue>, String>>;
}

/// Whether this replica may touch SQL right now.
pub trait LeaderGate: Send + Sync {
    /// True while the Lease is held.
    fn is_leader(&self) -> bool;
}

/// A gate that is always open (tests, and the single-replica mode without a Lease).
pub struct AlwaysLeader;

impl LeaderGate for AlwaysLeader {
    fn is_leader(&self) -> bool {
        true
    }
}

impl LeaderGate for tokio::sync::watch::Receiver<bool> {
    fn is_leader(&self) -> bool {
        *self.borrow()
    }
}

/// One WorkItem, as the reconciler needs it (built from the WorkItem by the queue layer).
#[derive(Clone, Debug)]
pub struct Item {
    /// WorkItem name (for logs).
    pub key: String,
    /// Apply or delete.
    pub operation: Operation,
    /// Management policies.
    pub policies: Policies,
    /// The SQL object's name.
    pub external_name: SqlName,
    /// Validated desired state.
    pub desired: Desired,
    /// `status.atProvider` written last time (carries the contained-user Secret version).
    pub previous_at_provider: Option<Value>,
}

impl Item {
    /// Kind label.
    pub fn kind(&self) -> &'static str {
        apis::queue::kind_of(&self.desired)
    }

    /// Group key: kind and database.
    pub fn group(&self) -> (&'static str, Option<SqlName>) {
        (self.kind(), self.desired.database().cloned())
    }
}

/// A failure, as written to `status.lastError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemError {
    /// Stable label.
    pub reason: String,
    /// SQL Server error number.
    pub number: Option<u32>,
    /// Message (never a secret).
    pub message: String,
}

impl From<SqlError> for ItemError {
    fn from(e: SqlError) -> Self {
        let hint = match (e.kind, e.number) {
            (ErrorKind::InUse, Some(3702)) => {
                " (the database has open sessions; set terminateSessionsOnDelete to end them)"
            }
            (ErrorKind::InUse, Some(15434)) => {
                " (the login has open sessions; set terminateSessionsOnDelete to end them)"
            }
            _ => "",
        };
        Self {
            reason: e.kind.label().to_owned(),
            number: e.number,
            message: format!("{}{hint}", e.message),
        }
    }
}

impl From<PlanError> for ItemError {
    fn from(e: PlanError) -> Self {
        Self {
            reason: e.label().to_owned(),
            number: None,
            message: e.to_string(),
        }
    }
}

/// What reconciling one item found and did: the material of its status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// The plan's decision (None when observing failed).
    pub action: Option<Action>,
    /// Whether the object exists now.
    pub exists: bool,
    /// Whether it matches the spec now.
    pub up_to_date: bool,
    /// Delete: gone or orphaned.
    pub deleted: bool,
    /// Fields that still differ.
    pub drift: Vec<String>,
    /// Observed state.
    pub at_provider: Option<Value>,
    /// Failure of this attempt.
    pub error: Option<ItemError>,
    /// Advice for the user.
    pub note: Option<String>,
    /// Statements run (their kinds), for tests and logs.
    pub executed: Vec<&'static str>,
}

impl Outcome {
    fn failed(e: impl Into<ItemError>) -> Self {
        Self {
            error: Some(e.into()),
            ..Self::default()
        }
    }

    /// Whether this outcome means the process lost its Lease.
    pub fn lost_lease(&self) -> bool {
        self.error
            .as_ref()
            .is_some_and(|e| e.reason == ErrorKind::LostLease.label())
    }
}

/// Everything observed for one group, by name.
enum Observed {
    Database(BTreeMap<String, kinds::database::ObservedDatabase>),
    Login(BTreeMap<String, kinds::login::ObservedLogin>),
    User(BTreeMap<String, kinds::user::ObservedUser>),
    Schema(BTreeMap<String, kinds::schema::ObservedSchema>),
}

/// The reconciler: SQL pool, Secret reader, Lease gate, metrics.
pub struct Reconciler {
    /// Connections.
    pub pool: Arc<SqlPool>,
    /// Password Secrets.
    pub secrets: Arc<dyn SecretSource>,
    /// Lease.
    pub leader: Arc<dyn LeaderGate>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

const PASSWORD_VERSION: &str = "passwordSecretVersion";

impl Reconciler {
    /// Reconciles any set of items: grouped by (kind, database), one observe per group.
    /// Outcomes come back in the order of `items`.
    pub async fn reconcile_all(&self, items: &[Item]) -> Vec<Outcome> {
        let mut groups: BTreeMap<(&'static str, Option<SqlName>), Vec<usize>> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            groups.entry(item.group()).or_default().push(i);
        }
        let mut out = vec![Outcome::default(); items.len()];
        for idx in groups.values() {
            let group: Vec<&Item> = idx.iter().map(|i| &items[*i]).collect();
            let results = self.reconcile_group(&group).await;
            let lost = results.iter().any(Outcome::lost_lease);
            for (i, r) in idx.iter().zip(results) {
                out[*i] = r;
            }
            if lost {
                for o in out.iter_mut().filter(|o| o.action.is_none() && o.error.is_none()) {
                    *o = Outcome::failed(SqlError::new(ErrorKind::LostLease, "lost the Lease"));
                }
                break;
            }
        }
        out
    }

    async fn observe(
        &self,
        kind: &str,
        database: Option<&SqlName>,
        items: &[&Item],
    ) -> Result<Observed, SqlError> {
        let names: Vec<&SqlName> = items.iter().map(|i| &i.external_name).collect();
        let label = match kind {
            "Database" => "observe Database",
            "Login" => "observe Login",
            "User" => "observe User",
            _ => "observe Schema",
        };
        let run = |(sql, params): (String, Vec<crate::sql::Param>)| async move {
            self.pool.query(database, label, &sql, &params).await
        };
        let first = |sets: Vec<Vec<Row>>| sets.into_iter().next().unwrap_or_default();
        Ok(match kind {
            "Database" => Observed::Database(kinds::database::parse(&first(
                run(kinds::database::observe_query(&names)).await?,
            ))),
            "Login" => {
                let sessions = items.iter().any(|i| {
                    i.operation == Operation::Delete
                        && matches!(&i.desired, Desired::Login(l) if l.terminate_sessions_on_delete)
                });
                Observed::Login(kinds::login::parse(
                    &run(kinds::login::observe_query(&names, sessions)).await?,
                ))
            }
            "User" => Observed::User(kinds::user::parse(
                &run(kinds::user::observe_query(&names)).await?,
            )),
            _ => Observed::Schema(kinds::schema::parse(&first(
                run(kinds::schema::observe_query(&names)).await?,
            ))),
        })
    }

    async fn secret(&self, desired: &Desired) -> Result<Option<SecretValue>, ItemError> {
        let reference = match desired {
            Desired::Login(l) => match &l.kind {
                LoginKind::Sql { password, .. } => Some(password),
                LoginKind::External { .. } => None,
            },
            Desired::User(u) => match &u.kind {
                UserKind::Contained { password } => Some(password),
                _ => None,
            },
            _ => None,
        };
        let Some(reference) = reference else {
            return Ok(None);
        };
        self.secrets.get(reference).await.map_err(|message| ItemError {
            reason: "SecretUnreadable".into(),
            number: None,
            message,
        })
    }

    /// Plans one item against what was observed. Pure apart from the inputs.
    fn plan(item: &Item, observed: &Observed, secret: Option<&SecretValue>) -> Result<Plan, PlanError> {
        let n = &item.external_name;
        let (p, op) = (item.policies, item.operation);
        let pw = secret.map(|s| &s.password);
        match (&item.desired, observed) {
            (Desired::Database(d), Observed::Database(o)) => {
                kinds::database::plan(n, d, kinds::database::lookup(o, n), p, op)
            }
            (Desired::Login(d), Observed::Login(o)) => {
                kinds::login::plan(n, d, kinds::login::lookup(o, n), pw, p, op)
            }
            (Desired::User(d), Observed::User(o)) => {
                let previous = item
                    .previous_at_provider
                    .as_ref()
                    .and_then(|a| a.get(PASSWORD_VERSION))
                    .and_then(Value::as_str);
                let rotate = secret.is_some_and(|s| previous != Some(s.version.as_str()));
                kinds::user::plan(n, d, kinds::user::lookup(o, n), pw, rotate, p, op)
            }
            (Desired::Schema(d), Observed::Schema(o)) => {
                kinds::schema::plan(n, d, kinds::schema::lookup(o, n), p, op)
            }
            // Groups are formed by kind, so this cannot happen; plan nothing rather than panic.
            _ => Ok(Plan {
                action: Action::Paused,
                statements: vec![],
                drift: vec![],
                note: None,
                undo: vec![],
            }),
        }
    }

    fn at_provider(item: &Item, observed: &Observed) -> Option<Value> {
        let n = &item.external_name;
        match (&item.desired, observed) {
            (Desired::Database(_), Observed::Database(o)) => {
                kinds::database::lookup(o, n).map(kinds::database::at_provider)
            }
            (Desired::Login(_), Observed::Login(o)) => {
                kinds::login::lookup(o, n).map(kinds::login::at_provider)
            }
            (Desired::User(d), Observed::User(o)) => {
                kinds::user::lookup(o, n).map(|u| kinds::user::at_provider(&d.database, u))
            }
            (Desired::Schema(d), Observed::Schema(o)) => {
                kinds::schema::lookup(o, n).map(|s| kinds::schema::at_provider(&d.database, s))
            }
            _ => None,
        }
    }

    async fn reconcile_group(&self, items: &[&Item]) -> Vec<Outcome> {
        let Some(first) = items.first() else {
            return Vec::new();
        };
        let (kind, database) = first.group();
        let observed = match self.observe(kind, database.as_ref(), items).await {
            Ok(o) => o,
            // The database of a user or schema is gone: so are they.
            Err(e) if e.kind == ErrorKind::NotFound && database.is_some() => {
                return items
                    .iter()
                    .map(|i| match i.operation {
                        Operation::Delete => Outcome {
                            action: Some(Action::AlreadyGone),
                            deleted: true,
                            ..Outcome::default()
                        },
                        Operation::Apply => Outcome::failed(SqlError {
                            message: format!(
                                "database {} is not available yet: {}",
                                database.as_ref().map(SqlName::as_str).unwrap_or_default(),
                                e.message
                            ),
                            ..e.clone()
                        }),
                    })
                    .collect();
            }
            Err(e) => return items.iter().map(|_| Outcome::failed(e.clone())).collect(),
        };
        let mut outcomes = Vec::with_capacity(items.len());
        let mut mutated = Vec::new();
        let mut secrets = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let secret = match self.secret(&item.desired).await {
                Ok(s) => s,
                Err(e) => {
                    secrets.push(None);
                    outcomes.push(Outcome::failed(e));
                    continue;
                }
            };
            let outcome = self.apply_plan(item, &observed, secret.as_ref()).await;
            if outcome.lost_lease() {
                outcomes.push(outcome);
                break;
            }
            if !outcome.executed.is_empty() {
                mutated.push(i);
            }
            secrets.push(secret);
            outcomes.push(outcome);
        }
        // One more batched read for everything that changed, to report what is there now.
        if !mutated.is_empty() {
            let changed: Vec<&Item> = mutated.iter().map(|i| items[*i]).collect();
            match self.observe(kind, database.as_ref(), &changed).await {
                Ok(after) => {
                    for i in &mutated {
                        let (item, outcome) = (items[*i], &mut outcomes[*i]);
                        self.finish(
                            item,
                            outcome,
                            &after,
                            secrets.get(*i).and_then(Option::as_ref),
                            true,
                        );
                    }
                }
                Err(e) => {
                    for i in &mutated {
                        outcomes[*i].error.get_or_insert_with(|| e.clone().into());
                    }
                }
            }
        }
        for (i, outcome) in outcomes.iter_mut().enumerate() {
            if !mutated.contains(&i)
                && outcome.action.is_some()
                && let Some(item) = items.get(i)
            {
                self.finish(
                    item,
                    outcome,
                    &observed,
                    secrets.get(i).and_then(Option::as_ref),
                    false,
                );
            }
            self.metrics.item(
                kind,
                outcome
                    .error
                    .as_ref()
                    .map(|e| e.reason.as_str())
                    .or(outcome.action.map(Action::label))
                    .unwrap_or("Unknown"),
            );
        }
        outcomes
    }

    /// Runs the plan's statements, in order, each after a Lease check.
    async fn apply_plan(&self, item: &Item, observed: &Observed, secret: Option<&SecretValue>) -> Outcome {
        let plan = match Self::plan(item, observed, secret) {
            Ok(p) => p,
            Err(e) => return Outcome::failed(e),
        };
        let mut outcome = Outcome {
            action: Some(plan.action),
            drift: plan.drift.clone(),
            note: plan.note.clone(),
            ..Outcome::default()
        };
        if matches!(item.desired, Desired::Database(_)) && !plan.statements.is_empty() {
            self.pool.release(&item.external_name).await;
        }
        for statement in &plan.statements {
            if !self.leader.is_leader() {
                outcome.error =
                    Some(SqlError::new(ErrorKind::LostLease, "lost the Lease before a mutation").into());
                return outcome;
            }
            tracing::info!(item = %item.key, kind = item.kind(), statement = %statement, "executing");
            match self.pool.execute(statement).await {
                Ok(()) => outcome.executed.push(statement.kind),
                // Created by someone else between observe and create: it exists, compare next time.
                Err(e) if e.kind == ErrorKind::AlreadyExists && plan.action == Action::Create => {
                    outcome.executed.push(statement.kind);
                    break;
                }
                // Dropped by someone else meanwhile: what we wanted.
                Err(e) if e.kind == ErrorKind::NotFound && plan.action == Action::Delete => {
                    outcome.executed.push(statement.kind);
                }
                Err(e) => {
                    tracing::warn!(item = %item.key, kind = item.kind(), error = %e, "statement failed");
                    if !outcome.executed.is_empty() {
                        for undo in &plan.undo {
                            tracing::info!(item = %item.key, statement = %undo, "undoing a partial plan");
                            if let Err(u) = self.pool.execute(undo).await {
                                tracing::warn!(item = %item.key, error = %u, "undo failed");
                            }
                        }
                    }
                    outcome.error = Some(e.into());
                    // Still report what exists (observe once more below).
                    outcome.executed.push("failed");
                    break;
                }
            }
        }
        if plan.action == Action::Update && outcome.error.is_none() {
            self.metrics
                .drift_corrections
                .get_or_create(&KindLabels {
                    kind: item.kind().to_owned(),
                })
                .inc_by(plan.drift.len() as u64);
        }
        outcome
    }

    /// Fills exists / upToDate / drift / atProvider from an observation. After mutations the
    /// item is re-planned against the fresh observation: whatever still differs is drift.
    fn finish(
        &self,
        item: &Item,
        outcome: &mut Outcome,
        observed: &Observed,
        secret: Option<&SecretValue>,
        after: bool,
    ) {
        let mut at = Self::at_provider(item, observed);
        outcome.exists = at.is_some();
        let action = outcome.action.unwrap_or(Action::Paused);
        outcome.deleted = matches!(action, Action::AlreadyGone | Action::Orphan)
            || (action == Action::Delete && !outcome.exists && outcome.error.is_none());
        if after && item.operation == Operation::Apply {
            // Secrets were just applied: the item is up to date with this version.
            let mut replanned = item.clone();
            if let (Some(s), Some(a)) = (secret, at.as_mut()) {
                if outcome.error.is_none() {
                    a[PASSWORD_VERSION] = Value::String(s.version.clone());
                }
                replanned.previous_at_provider = Some(a.clone());
            }
            match Self::plan(&replanned, observed, secret) {
                Ok(p) => {
                    outcome.up_to_date = p.action == Action::UpToDate && outcome.error.is_none();
                    outcome.drift = p.drift;
                }
                Err(e) => outcome.error = outcome.error.clone().or(Some(e.into())),
            }
        } else {
            if let (Some(a), Some(prev)) = (
                at.as_mut(),
                item.previous_at_provider
                    .as_ref()
                    .and_then(|p| p.get(PASSWORD_VERSION)),
            ) {
                a[PASSWORD_VERSION] = prev.clone();
            }
            outcome.up_to_date =
                item.operation == Operation::Apply && action == Action::UpToDate && outcome.error.is_none();
        }
        outcome.at_provider = at;
    }
}
