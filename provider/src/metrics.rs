//! Prometheus metrics of the provider: reconcile latency and errors by kind, workers by state.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::{collections::BTreeMap, sync::Mutex, time::Duration};

/// Labels: the kind reconciled.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Database, Login, User, Schema, ProviderConfig, ClusterProviderConfig.
    pub kind: String,
}

/// Labels: kind and error label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Kind reconciled.
    pub kind: String,
    /// Stable error label ([`crate::Error::label`]).
    pub error: String,
}

/// Labels: a worker state (the reason of a config's WorkerReady condition).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// LeaseHeld, LeaseNotHeld, LeaseExpired, DeploymentUnavailable, …
    pub state: String,
}

/// The provider's metrics.
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    latency: Family<KindLabels, Histogram>,
    workers: Family<StateLabels, Gauge>,
    /// Last known state per config, so the gauges count each worker once.
    worker_states: Mutex<BTreeMap<String, String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sqlserver_provider");
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let latency = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        registry.register("reconciles", "Reconciles by kind", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles by kind and error",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile latency by kind",
            latency.clone(),
        );
        let workers = Family::<StateLabels, Gauge>::default();
        registry.register(
            "workers",
            "Workers by state (reason of WorkerReady)",
            workers.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            latency,
            workers,
            worker_states: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Records one reconcile.
    pub fn reconciled(&self, kind: &str, took: Duration, error: Option<&crate::Error>) {
        let labels = KindLabels {
            kind: kind.to_owned(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(took.as_secs_f64());
        if let Some(error) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    kind: kind.to_owned(),
                    error: error.label().to_owned(),
                })
                .inc();
        }
    }

    /// Records the state of one config's worker (`None` once the config is gone).
    pub fn worker_state(&self, config: &str, state: Option<&str>) {
        let mut states = self.worker_states.lock().unwrap_or_else(|e| e.into_inner());
        match state {
            Some(state) => states.insert(config.to_owned(), state.to_owned()),
            None => states.remove(config),
        };
        self.workers.clear();
        for state in states.values() {
            self.workers
                .get_or_create(&StateLabels { state: state.clone() })
                .inc();
        }
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_counted_once_per_config() {
        let m = Metrics::default();
        m.worker_state("pc/a", Some("LeaseHeld"));
        m.worker_state("pc/b", Some("LeaseHeld"));
        m.worker_state("pc/a", Some("LeaseExpired"));
        m.worker_state("pc/c", Some("DeploymentUnavailable"));
        m.worker_state("pc/c", None);
        let text = m.encode();
        assert!(
            text.contains("sqlserver_provider_workers{state=\"LeaseHeld\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sqlserver_provider_workers{state=\"LeaseExpired\"} 1"),
            "{text}"
        );
        assert!(!text.contains("DeploymentUnavailable"), "{text}");
    }
}
