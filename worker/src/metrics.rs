//! Prometheus metrics (prometheus-client, OpenMetrics text on `/metrics`). Labels are kinds,
//! outcomes, statement kinds and error numbers only: never a name, never a value.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use std::sync::atomic::AtomicU64;

/// `kind` + `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ItemLabels {
    /// Database, Login, User, Schema.
    pub kind: String,
    /// Plan action (Create, UpToDate, …) or an error label.
    pub outcome: String,
}

/// `statement`: the statement kind (`CREATE LOGIN`, `observe Login`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatementLabels {
    /// Statement kind.
    pub statement: String,
}

/// `number`: SQL Server error number, or `none` for client-side failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Error number.
    pub number: String,
    /// Domain label.
    pub reason: String,
}

/// `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Object kind.
    pub kind: String,
}

fn latency_histogram() -> Histogram {
    // 5 ms … ~20 s: DDL such as CREATE DATABASE is slow on real servers.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// Every metric the worker exports.
pub struct Metrics {
    /// Items processed, by kind and outcome.
    pub items: Family<ItemLabels, Counter>,
    /// SQL round-trip latency in seconds, by statement kind.
    pub sql_latency: Family<StatementLabels, Histogram, fn() -> Histogram>,
    /// SQL errors, by number.
    pub sql_errors: Family<ErrorLabels, Counter>,
    /// WorkItems waiting to be processed.
    pub queue_depth: Gauge,
    /// Age of the oldest pending WorkItem, seconds.
    pub oldest_pending_seconds: Gauge<f64, AtomicU64>,
    /// Drift corrections applied, by kind.
    pub drift_corrections: Family<KindLabels, Counter>,
    /// Open SQL connections.
    pub open_connections: Gauge,
    /// 1 while this replica holds the Lease.
    pub leader: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `sqlserver_worker` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sqlserver_worker");
        let items = Family::<ItemLabels, Counter>::default();
        let sql_latency = Family::<StatementLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let sql_errors = Family::<ErrorLabels, Counter>::default();
        let queue_depth = Gauge::default();
        let oldest_pending_seconds = Gauge::<f64, AtomicU64>::default();
        let drift_corrections = Family::<KindLabels, Counter>::default();
        let open_connections = Gauge::default();
        let leader = Gauge::default();
        registry.register(
            "items_processed",
            "WorkItems processed, by kind and outcome",
            items.clone(),
        );
        registry.register(
            "sql_latency_seconds",
            "SQL round-trip latency by statement kind",
            sql_latency.clone(),
        );
        registry.register("sql_errors", "SQL errors by error number", sql_errors.clone());
        registry.register(
            "queue_depth",
            "WorkItems waiting to be processed",
            queue_depth.clone(),
        );
        registry.register(
            "oldest_pending_age_seconds",
            "Age of the oldest pending WorkItem",
            oldest_pending_seconds.clone(),
        );
        registry.register(
            "drift_corrections",
            "Drift corrections applied, by kind",
            drift_corrections.clone(),
        );
        registry.register(
            "open_connections",
            "Open SQL connections",
            open_connections.clone(),
        );
        registry.register("leader", "1 while this replica holds the Lease", leader.clone());
        Self {
            items,
            sql_latency,
            sql_errors,
            queue_depth,
            oldest_pending_seconds,
            drift_corrections,
            open_connections,
            leader,
            registry,
        }
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one processed item.
    pub fn item(&self, kind: &str, outcome: &str) {
        self.items
            .get_or_create(&ItemLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records one SQL error.
    pub fn sql_error(&self, number: Option<u32>, reason: &str) {
        self.sql_errors
            .get_or_create(&ErrorLabels {
                number: number.map(|n| n.to_string()).unwrap_or_else(|| "none".into()),
                reason: reason.to_owned(),
            })
            .inc();
    }
}
