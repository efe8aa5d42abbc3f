//! Metric names, through the [`metrics`](https://docs.rs/metrics) facade:
//! what to chart and alert on (the recording is the pool's own).
//!
//! The application installs a recorder (for example
//! `metrics-exporter-prometheus`) **before** building the pool: each node
//! registers its handles once at build time, so the hot path only touches
//! the handles, never the registry. Every metric has a `node` label holding
//! the node's name, which never contains credentials.
//!
//! The facade cannot delete a series: a node removed from its pool
//! (`remove_node`) keeps its series, its gauges ([`NODE_UP`],
//! [`CONNECTIONS`], [`IDLE_CONNECTIONS`], [`SUBSCRIPTIONS`]) at 0 from then
//! on and its counters at their totals. A closed pool's series keep their
//! last values (a pool built to replace it may use the same names).

use metrics::Unit;

/// Gauge, 1 while the node is in rotation and 0 while it is in the box,
/// or once it was removed (`remove_node`).
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
/// Histogram of the time a checkout from the node waited, in seconds. In
/// the async flavour a checkout served at once (an idle pooled connection,
/// a live shared one) counts 0, without a clock read.
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
/// to the server, entries (replies) dropped because their key changed (the
/// server's invalidation, a write through the pool, their age) or their
/// connection went, and entries evicted to stay within the bound.
pub const NEAR_CACHE_HITS_TOTAL: &str = "fluster_near_cache_hits_total";
/// See [`NEAR_CACHE_HITS_TOTAL`].
pub const NEAR_CACHE_MISSES_TOTAL: &str = "fluster_near_cache_misses_total";
/// See [`NEAR_CACHE_HITS_TOTAL`].
pub const NEAR_CACHE_INVALIDATIONS_TOTAL: &str = "fluster_near_cache_invalidations_total";
/// See [`NEAR_CACHE_HITS_TOTAL`]: a steady rate says the bound is too
/// small for the reads.
pub const NEAR_CACHE_EVICTIONS_TOTAL: &str = "fluster_near_cache_evictions_total";

/// Gauge of the channels and patterns subscribed on the node by the pool's
/// pub/sub (one subscriber connection per node carries them all).
pub const SUBSCRIPTIONS: &str = "fluster_subscriptions";

/// Counter of the news a process of a fleet ([`fleet`](crate::Builder::fleet))
/// told and heard about the node, with labels `news` (`boxed`,
/// `returned`) and `way` (`sent`: published on the other nodes; `heard`:
/// told by another process and new to this one, which then checks).
pub const FLEET_NEWS_TOTAL: &str = "fluster_fleet_news_total";

/// Counter of keys whose delete on the node was relayed through the fleet
/// ([`fleet`](crate::Builder::fleet) with `invalidate_on_return`: a
/// process that alone has the node boxed writes its keys to stand-ins and
/// asks the others to delete them on the node), with a `result` label:
/// `sent` (this process asked), `deleted` (this process deleted them on
/// the node for another), `repeated` (another process had already done
/// it), `dropped` (not asked or not done: a key too long, no room, or the
/// node failed; the return and `stand_in_ttl` still bound them).
pub const RELAYED_DELETES_TOTAL: &str = "fluster_relayed_deletes_total";

/// Counter of [`aside`](crate::ShardedPool::aside) calls that missed, by
/// `outcome`: `filled` (it held the lease and stored the value), `voided`
/// (it held the lease, but a delete voided it: the value was returned, not
/// stored), `failed` (its fill returned an error or a value that cannot be
/// stored, or panicked: the lease was given back), `waited` (it found a lease and got
/// its holder's value), `took_over` (it found a lease that ended without a
/// value, and filled); and [`aside_early`](crate::ShardedPool::aside_early)'s
/// background refills: `refreshed` (stored), `refresh_voided` (the key was
/// written meanwhile: nothing stored), `refresh_failed` (the fill failed,
/// panicked or outlived the lease: the key kept its value). The `node`
/// label is the node that served the key. Hits are not counted: they cost
/// a plain read.
pub const ASIDE_TOTAL: &str = "fluster_aside_total";

/// Counter: keys a drain (`drain_node`) moved off the node to their new
/// homes (copied, or kept there because written since).
pub const DRAINED_KEYS_TOTAL: &str = "fluster_drained_keys_total";

/// Gauge: keys a drain has yet to move off the node (0 when done).
pub const DRAIN_KEYS_LEFT: &str = "fluster_drain_keys_left";

/// Counter: copies of the keys that moved to a node added (`add_node`)
/// that its sweep deleted on their old homes; the `node` label is the
/// node added.
pub const SWEPT_KEYS_TOTAL: &str = "fluster_swept_keys_total";

/// Gauge: keys the other nodes held when the sweep of a node added began
/// that it has not scanned yet (0 when done).
pub const SWEEP_KEYS_LEFT: &str = "fluster_sweep_keys_left";

/// Every metric the pool records, by name: what a dashboard should chart.
pub const ALL: &[&str] = &[
    NODE_UP,
    PENALTIES_TOTAL,
    FAILURES_TOTAL,
    PROBES_TOTAL,
    CHECKOUTS_TOTAL,
    CHECKOUT_SECONDS,
    FAILOVERS_TOTAL,
    CONNECTIONS,
    IDLE_CONNECTIONS,
    CHECKOUTS_WAITED_TOTAL,
    CHECKOUTS_TIMED_OUT_TOTAL,
    CONNECTIONS_CLOSED_TOTAL,
    STAND_IN_WRITES_TOTAL,
    NEAR_CACHE_HITS_TOTAL,
    NEAR_CACHE_MISSES_TOTAL,
    NEAR_CACHE_INVALIDATIONS_TOTAL,
    NEAR_CACHE_EVICTIONS_TOTAL,
    SUBSCRIPTIONS,
    FLEET_NEWS_TOTAL,
    RELAYED_DELETES_TOTAL,
    ASIDE_TOTAL,
    DRAINED_KEYS_TOTAL,
    DRAIN_KEYS_LEFT,
    SWEPT_KEYS_TOTAL,
    SWEEP_KEYS_LEFT,
];

/// Describes every metric to the installed recorder (help text and unit).
/// The pool's builder calls this; calling it again is harmless.
pub fn describe() {
    use metrics::{describe_counter as counter, describe_gauge as gauge};
    gauge!(NODE_UP, "1 while the node is in rotation, 0 while it is in the penalty box or removed");
    gauge!(CONNECTIONS, Unit::Count, "Connections held by the node's pool");
    gauge!(IDLE_CONNECTIONS, Unit::Count, "Idle connections in the node's pool");
    gauge!(DRAIN_KEYS_LEFT, Unit::Count, "Keys a drain has yet to move off the node");
    gauge!(SWEEP_KEYS_LEFT, Unit::Count, "Keys the sweep of an added node has yet to scan");
    gauge!(SUBSCRIPTIONS, Unit::Count, "Channels and patterns subscribed on the node");
    metrics::describe_histogram!(CHECKOUT_SECONDS, Unit::Seconds, "Time to check a connection out");
    for (name, help) in [
        (PENALTIES_TOTAL, "Times the node entered the penalty box"),
        (FAILURES_TOTAL, "Failures seen on the node, by kind"),
        (PROBES_TOTAL, "Probes of the boxed node, by result"),
        (CHECKOUTS_TOTAL, "Connections checked out of the node, pooled or shared"),
        (FAILOVERS_TOTAL, "Keys served by another node because this one was boxed"),
        (DRAINED_KEYS_TOTAL, "Keys a drain moved off the node to their new homes"),
        (SWEPT_KEYS_TOTAL, "Old homes' copies of the node's keys its sweep deleted"),
        (CHECKOUTS_WAITED_TOTAL, "Checkouts that waited for a connection of the node's pool"),
        (CHECKOUTS_TIMED_OUT_TOTAL, "Checkouts that waited out the checkout timeout"),
        (CONNECTIONS_CLOSED_TOTAL, "Connections the node's pool closed, by reason"),
        (STAND_IN_WRITES_TOTAL, "Writes for the node's keys taken by stand-ins, by result"),
        (NEAR_CACHE_HITS_TOTAL, "Reads the node's near cache answered from memory"),
        (NEAR_CACHE_MISSES_TOTAL, "Reads through the node's near cache that went to the server"),
        (
            NEAR_CACHE_INVALIDATIONS_TOTAL,
            "Entries the node's near cache dropped: changed, or connection gone",
        ),
        (
            NEAR_CACHE_EVICTIONS_TOTAL,
            "Entries the node's near cache evicted to stay within its bound",
        ),
        (FLEET_NEWS_TOTAL, "News of the node told to and heard from the fleet, by news and way"),
        (RELAYED_DELETES_TOTAL, "Deletes of the node's keys relayed through the fleet, by result"),
        (ASIDE_TOTAL, "Cache-aside calls that missed, by outcome (filled, waited, ...)"),
    ] {
        counter!(name, Unit::Count, help);
    }
}
