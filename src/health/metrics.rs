//! Metric names and recording, through the [`metrics`] facade.
//!
//! The application installs a recorder (for example
//! `metrics-exporter-prometheus`) **before** building the pool: each node
//! registers its handles once at build time, so the hot path only touches
//! the handles, never the registry. Every metric has a `node` label holding
//! the node's name, which never contains credentials.

use metrics::{Counter, Gauge, Histogram, Unit};

use std::time::Instant;

use crate::health::failure::FailureKind;

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
/// Counter of connections checked out of the node: pooled (`get`) and
/// shared (`get_shared`) alike.
pub const CHECKOUTS_TOTAL: &str = "fluster_checkouts_total";
/// Histogram of the time a checkout from the node's pool took, in seconds.
pub const CHECKOUT_SECONDS: &str = "fluster_checkout_seconds";
/// Bucket bounds, in seconds, that chart [`CHECKOUT_SECONDS`] well: from
/// 50 µs (an idle connection) to 1 s (the default checkout timeout). Give
/// them to your exporter; Prometheus's own default would make it a summary.
pub const CHECKOUT_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];
/// Counter of keys whose node was boxed and that were served elsewhere;
/// the `node` label is the key's home node.
pub const FAILOVERS_TOTAL: &str = "fluster_failovers_total";
/// Gauge of the connections the node's pool holds, sampled by the pool's
/// background task.
pub const CONNECTIONS: &str = "fluster_connections";
/// Gauge of the idle connections in the node's pool, sampled by the pool's
/// background task.
pub const IDLE_CONNECTIONS: &str = "fluster_idle_connections";

/// Counter of checkouts that had to wait for a connection (bb8's count,
/// sampled by the prober).
pub const CHECKOUTS_WAITED_TOTAL: &str = "fluster_checkouts_waited_total";
/// Counter of checkouts that waited out the checkout timeout.
pub const CHECKOUTS_TIMED_OUT_TOTAL: &str = "fluster_checkouts_timed_out_total";
/// Counter of connections the node's pool closed, with a `reason` label:
/// `broken` (failed, or their node was boxed), `idle`, `lifetime`.
pub const CONNECTIONS_CLOSED_TOTAL: &str = "fluster_connections_closed_total";

/// Counter of writes for the node's keys that stand-ins took while it was
/// boxed (`stand_in_ttl`, `invalidate_on_return`), with a `result` label:
/// `remembered` for its return, `invalidated` (deleted when it returned),
/// `dropped` (no room in the journal, or a stand-in that could not be
/// reached: left to `stand_in_ttl`).
pub const STAND_IN_WRITES_TOTAL: &str = "fluster_stand_in_writes_total";

/// Counters of each node's near cache (`near_cache`), sampled each second
/// from its shared connection: reads answered from memory, reads that went
/// to the server, and entries dropped (invalidated by the server, or
/// evicted).
pub const NEAR_CACHE_HITS_TOTAL: &str = "fluster_near_cache_hits_total";
/// See [`NEAR_CACHE_HITS_TOTAL`].
pub const NEAR_CACHE_MISSES_TOTAL: &str = "fluster_near_cache_misses_total";
/// See [`NEAR_CACHE_HITS_TOTAL`].
pub const NEAR_CACHE_INVALIDATIONS_TOTAL: &str = "fluster_near_cache_invalidations_total";

/// Gauge of the channels and patterns subscribed on the node by the pool's
/// pub/sub (one subscriber connection per node carries them all).
pub const SUBSCRIPTIONS: &str = "fluster_subscriptions";

/// Describes every metric to the installed recorder (help text and unit).
/// The pool's builder calls this; calling it again is harmless.
pub fn describe() {
    use metrics::{describe_counter as counter, describe_gauge as gauge};
    gauge!(NODE_UP, "1 while the node is in rotation, 0 while it is in the penalty box");
    gauge!(CONNECTIONS, Unit::Count, "Connections held by the node's pool");
    gauge!(IDLE_CONNECTIONS, Unit::Count, "Idle connections in the node's pool");
    gauge!(SUBSCRIPTIONS, Unit::Count, "Channels and patterns subscribed on the node");
    metrics::describe_histogram!(CHECKOUT_SECONDS, Unit::Seconds, "Time to check a connection out");
    for (name, help) in [
        (PENALTIES_TOTAL, "Times the node entered the penalty box"),
        (FAILURES_TOTAL, "Failures seen on the node, by kind"),
        (PROBES_TOTAL, "Probes of the boxed node, by result"),
        (CHECKOUTS_TOTAL, "Connections checked out of the node, pooled or shared"),
        (FAILOVERS_TOTAL, "Keys served by another node because this one was boxed"),
        (CHECKOUTS_WAITED_TOTAL, "Checkouts that waited for a connection of the node's pool"),
        (CHECKOUTS_TIMED_OUT_TOTAL, "Checkouts that waited out the checkout timeout"),
        (CONNECTIONS_CLOSED_TOTAL, "Connections the node's pool closed, by reason"),
        (STAND_IN_WRITES_TOTAL, "Writes for the node's keys taken by stand-ins, by result"),
        (NEAR_CACHE_HITS_TOTAL, "Reads the node's near cache answered from memory"),
        (NEAR_CACHE_MISSES_TOTAL, "Reads through the node's near cache that went to the server"),
        (NEAR_CACHE_INVALIDATIONS_TOTAL, "Entries the node's near cache dropped"),
    ] {
        counter!(name, Unit::Count, help);
    }
}

/// What a node's pool holds and has done since it was built (bb8's
/// statistics; the synchronous flavour's r2d2 pools count only
/// connections).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PoolStats {
    /// Connections held.
    pub connections: u32,
    /// Of those, idle.
    pub idle_connections: u32,
    /// Checkouts that had to wait for a connection.
    pub checkouts_waited: u64,
    /// Checkouts that waited out the checkout timeout.
    pub checkouts_timed_out: u64,
    /// Connections closed because they failed, or their node was boxed.
    pub closed_broken: u64,
    /// Connections closed after `idle_timeout` unused.
    pub closed_idle: u64,
    /// Connections closed at `max_lifetime`.
    pub closed_lifetime: u64,
}

/// One node's metric handles, registered once, when the node joins its
/// pool: every series it can have (each failure kind, each probe result)
/// exists at zero from then on, so a rate over the first failure is seen.
#[derive(Debug, Clone)]
pub(crate) struct NodeMetrics {
    up: Gauge,
    penalties: Counter,
    checkouts: Counter,
    checkout_seconds: Histogram,
    failovers: Counter,
    connections: Gauge,
    idle_connections: Gauge,
    subscriptions: Gauge,
    waited: Counter,
    timed_out: Counter,
    /// Closed: broken, idle, lifetime.
    closed: [Counter; 3],
    failures: [Counter; FailureKind::ALL.len()],
    probes_ok: Counter,
    probes_failed: Counter,
    /// Stand-in writes: remembered, invalidated, dropped.
    stand_ins: [Counter; 3],
    /// Near cache: hits, misses, invalidations.
    near: [Counter; 3],
}

impl NodeMetrics {
    pub(crate) fn new(node: &str) -> Self {
        let label = || [("node", node.to_owned())];
        let failures = FailureKind::ALL.map(|kind| {
            metrics::counter!(FAILURES_TOTAL, "node" => node.to_owned(), "kind" => kind.as_str())
        });
        let probe = |result: &'static str| metrics::counter!(PROBES_TOTAL, "node" => node.to_owned(), "result" => result);
        let metrics = NodeMetrics {
            up: metrics::gauge!(NODE_UP, &label()),
            penalties: metrics::counter!(PENALTIES_TOTAL, &label()),
            checkouts: metrics::counter!(CHECKOUTS_TOTAL, &label()),
            checkout_seconds: metrics::histogram!(CHECKOUT_SECONDS, &label()),
            failovers: metrics::counter!(FAILOVERS_TOTAL, &label()),
            connections: metrics::gauge!(CONNECTIONS, &label()),
            idle_connections: metrics::gauge!(IDLE_CONNECTIONS, &label()),
            subscriptions: metrics::gauge!(SUBSCRIPTIONS, &label()),
            waited: metrics::counter!(CHECKOUTS_WAITED_TOTAL, &label()),
            timed_out: metrics::counter!(CHECKOUTS_TIMED_OUT_TOTAL, &label()),
            closed: ["broken", "idle", "lifetime"].map(|reason| {
                metrics::counter!(CONNECTIONS_CLOSED_TOTAL, "node" => node.to_owned(), "reason" => reason)
            }),
            failures,
            probes_ok: probe("ok"),
            probes_failed: probe("failed"),
            stand_ins: ["remembered", "invalidated", "dropped"].map(|result| {
                metrics::counter!(STAND_IN_WRITES_TOTAL, "node" => node.to_owned(), "result" => result)
            }),
            near: [NEAR_CACHE_HITS_TOTAL, NEAR_CACHE_MISSES_TOTAL, NEAR_CACHE_INVALIDATIONS_TOTAL]
                .map(|name| metrics::counter!(name, &label())),
        };
        // Counters come into being at zero with their first touch.
        let probes = [&metrics.probes_ok, &metrics.probes_failed];
        let near = &metrics.near;
        for counter in metrics.failures.iter().chain(probes).chain(&metrics.stand_ins).chain(near) {
            counter.increment(0);
        }
        metrics.penalties.increment(0);
        metrics.failovers.increment(0);
        metrics.up.set(1.0);
        metrics
    }

    /// The node entered the box.
    pub(crate) fn boxed(&self) {
        self.up.set(0.0);
        self.penalties.increment(1);
    }

    /// A probe let the node back in.
    pub(crate) fn returned(&self) {
        self.up.set(1.0);
        self.probes_ok.increment(1);
    }

    /// A probe of the boxed node failed.
    pub(crate) fn probe_failed(&self) {
        self.probes_failed.increment(1);
    }

    /// A checkout that began at `started` got its connection, pooled or
    /// shared.
    pub(crate) fn checkout(&self, started: Instant) {
        self.checkouts.increment(1);
        self.checkout_seconds.record(started.elapsed());
    }

    /// A key of this node was served by another.
    pub(crate) fn failover(&self) {
        self.failovers.increment(1);
    }

    /// Channels and patterns subscribed on the node now.
    pub(crate) fn subscriptions(&self, topics: usize) {
        self.subscriptions.set(topics as f64);
    }

    /// The counters of stand-in writes for this node's keys: remembered,
    /// invalidated, dropped.
    pub(crate) fn stand_in_counters(&self) -> [Counter; 3] {
        self.stand_ins.clone()
    }

    /// The near cache's hits, misses and invalidations since last sampled.
    pub(crate) fn near(&self, counts: [u64; 3]) {
        self.near.iter().zip(counts).for_each(|(counter, n)| counter.increment(n));
    }

    pub(crate) fn failure(&self, kind: FailureKind) {
        let index = FailureKind::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        self.failures[index].increment(1);
    }

    /// Copies the pool's own figures (the prober calls this each second).
    pub(crate) fn sample(&self, pool: &PoolStats) {
        self.connections.set(f64::from(pool.connections));
        self.idle_connections.set(f64::from(pool.idle_connections));
        self.waited.absolute(pool.checkouts_waited);
        self.timed_out.absolute(pool.checkouts_timed_out);
        let closed = [pool.closed_broken, pool.closed_idle, pool.closed_lifetime];
        for (counter, value) in self.closed.iter().zip(closed) {
            counter.absolute(value);
        }
    }
}
