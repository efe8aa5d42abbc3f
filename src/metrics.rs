//! Metric names and recording, through the [`metrics`] facade.
//!
//! The application installs a recorder (for example
//! `metrics-exporter-prometheus`) **before** building the pool: each node
//! registers its handles once at build time, so the hot path only touches
//! the handles, never the registry. Every metric has a `node` label holding
//! the node's name, which never contains credentials.

use metrics::{Counter, Gauge, Histogram, Unit};

/// Gauge, 1 while the node is in rotation and 0 while it is in the box.
pub const NODE_UP: &str = "fluster_node_up";
/// Counter: times the node entered the penalty box.
pub const PENALTIES_TOTAL: &str = "fluster_penalties_total";
/// Counter of failures seen on the node, with a `kind` label
/// (see [`FailureKind::as_str`](crate::FailureKind::as_str)).
pub const FAILURES_TOTAL: &str = "fluster_failures_total";
/// Counter of probes of a boxed node, with a `result` label
/// (`"ok"` or `"failed"`).
pub const PROBES_TOTAL: &str = "fluster_probes_total";
/// Counter of connections checked out of the node's pool.
pub const CHECKOUTS_TOTAL: &str = "fluster_checkouts_total";
/// Histogram of the time a checkout from the node's pool took, in seconds.
pub const CHECKOUT_SECONDS: &str = "fluster_checkout_seconds";
/// Counter of keys whose node was boxed and that were served elsewhere;
/// the `node` label is the key's home node.
pub const FAILOVERS_TOTAL: &str = "fluster_failovers_total";
/// Gauge of the connections the node's pool holds, sampled by the pool's
/// background task.
pub const CONNECTIONS: &str = "fluster_connections";
/// Gauge of the idle connections in the node's pool, sampled by the pool's
/// background task.
pub const IDLE_CONNECTIONS: &str = "fluster_idle_connections";

/// Describes every metric to the installed recorder (help text and unit).
/// The pool's builder calls this; calling it again is harmless.
pub fn describe() {
    metrics::describe_gauge!(
        NODE_UP,
        "1 while the node is in rotation, 0 while it is in the penalty box"
    );
    metrics::describe_counter!(
        PENALTIES_TOTAL,
        Unit::Count,
        "Times the node entered the penalty box"
    );
    metrics::describe_counter!(
        FAILURES_TOTAL,
        Unit::Count,
        "Failures seen on the node, by kind"
    );
    metrics::describe_counter!(
        PROBES_TOTAL,
        Unit::Count,
        "Probes of the boxed node, by result"
    );
    metrics::describe_counter!(
        CHECKOUTS_TOTAL,
        Unit::Count,
        "Connections checked out of the node's pool"
    );
    metrics::describe_histogram!(
        CHECKOUT_SECONDS,
        Unit::Seconds,
        "Time to check a connection out of the node's pool"
    );
    metrics::describe_counter!(
        FAILOVERS_TOTAL,
        Unit::Count,
        "Keys served by another node because this one was boxed"
    );
    metrics::describe_gauge!(
        CONNECTIONS,
        Unit::Count,
        "Connections held by the node's pool"
    );
    metrics::describe_gauge!(
        IDLE_CONNECTIONS,
        Unit::Count,
        "Idle connections in the node's pool"
    );
}

/// One node's metric handles, registered once.
#[derive(Debug, Clone)]
pub(crate) struct NodeMetrics {
    node: String,
    pub(crate) up: Gauge,
    pub(crate) penalties: Counter,
    pub(crate) checkouts: Counter,
    pub(crate) checkout_seconds: Histogram,
    pub(crate) failovers: Counter,
    pub(crate) connections: Gauge,
    pub(crate) idle_connections: Gauge,
}

impl NodeMetrics {
    pub(crate) fn new(node: &str) -> Self {
        let label = || [("node", node.to_owned())];
        NodeMetrics {
            node: node.to_owned(),
            up: metrics::gauge!(NODE_UP, &label()),
            penalties: metrics::counter!(PENALTIES_TOTAL, &label()),
            checkouts: metrics::counter!(CHECKOUTS_TOTAL, &label()),
            checkout_seconds: metrics::histogram!(CHECKOUT_SECONDS, &label()),
            failovers: metrics::counter!(FAILOVERS_TOTAL, &label()),
            connections: metrics::gauge!(CONNECTIONS, &label()),
            idle_connections: metrics::gauge!(IDLE_CONNECTIONS, &label()),
        }
    }

    /// Failures are rare, so their label set is looked up when they happen.
    pub(crate) fn failure(&self, kind: &'static str) {
        metrics::counter!(FAILURES_TOTAL, "node" => self.node.clone(), "kind" => kind).increment(1);
    }

    pub(crate) fn probe(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        metrics::counter!(PROBES_TOTAL, "node" => self.node.clone(), "result" => result)
            .increment(1);
    }
}
