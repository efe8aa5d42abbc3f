//! A node's metric handles ([`NodeMetrics`], registered once, so the hot
//! path only touches handles, never the registry) and its pool's own
//! figures ([`PoolStats`]). The names are in [`crate::metrics`].

use std::sync::Mutex;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use crate::health::event::News;
use crate::health::failure::FailureKind;
use crate::metrics::*;

/// The `outcome` labels of [`ASIDE_TOTAL`], in the order of `aside`'s own
/// outcomes (it names them from here).
pub(crate) const ASIDE_OUTCOMES: [&str; 8] = [
    "filled",
    "voided",
    "failed",
    "waited",
    "took_over",
    "refreshed",
    "refresh_voided",
    "refresh_failed",
];

/// The `way` labels of [`FLEET_NEWS_TOTAL`]: news told, news heard.
#[derive(Clone, Copy)]
pub(crate) enum Way {
    Sent,
    Heard,
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
///
/// The `metrics` facade cannot delete a series: when the node is removed
/// its gauges are set to zero for good ([`removed`](Self::removed)), and
/// its counters keep their totals.
/// A node's `fluster_stand_in_writes_total` counters, by `result`.
#[derive(Debug, Clone)]
pub(crate) struct StandInCounters {
    /// Stand-in writes of its keys remembered for the return.
    pub(crate) remembered: Counter,
    /// Their copies deleted at the return.
    pub(crate) invalidated: Counter,
    /// Not remembered: the journal was full.
    pub(crate) dropped: Counter,
}

/// A node's `fluster_relayed_deletes_total` counters, by `result`.
#[derive(Debug, Clone)]
pub(crate) struct RelayCounters {
    /// Keys whose delete was sent to the fleet.
    pub(crate) sent: Counter,
    /// Relayed keys a pool deleted.
    pub(crate) deleted: Counter,
    /// Relayed keys heard again (already deleted).
    pub(crate) repeated: Counter,
    /// Keys that did not fit in a message.
    pub(crate) dropped: Counter,
}

#[cfg(test)]
impl StandInCounters {
    /// Counters that count nowhere.
    pub(crate) fn noop() -> Self {
        let [remembered, invalidated, dropped] = std::array::from_fn(|_| Counter::noop());
        StandInCounters { remembered, invalidated, dropped }
    }
}

#[cfg(test)]
impl RelayCounters {
    /// Counters that count nowhere.
    pub(crate) fn noop() -> Self {
        let [sent, deleted, repeated, dropped] = std::array::from_fn(|_| Counter::noop());
        RelayCounters { sent, deleted, repeated, dropped }
    }
}

#[derive(Debug)]
pub(crate) struct NodeMetrics {
    /// Whether the node was removed: every gauge is written under this
    /// lock, so none is set again after [`removed`](Self::removed) zeroed
    /// it (a sample or a state change racing the removal).
    removed: Mutex<bool>,
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
    /// Relayed deletes (a fleet's): sent, deleted, repeated, dropped.
    relayed: [Counter; 4],
    /// Near cache: hits, misses, invalidations, evictions.
    near: [Counter; 4],
    /// Fleet news: `[news][way]` (boxed, returned; sent, heard).
    fleet: [[Counter; 2]; 2],
}

impl NodeMetrics {
    pub(crate) fn new(node: &str) -> Self {
        let label = || [("node", node.to_owned())];
        let failures = FailureKind::ALL.map(|kind| {
            metrics::counter!(FAILURES_TOTAL, "node" => node.to_owned(), "kind" => kind.as_str())
        });
        let probe = |result: &'static str| metrics::counter!(PROBES_TOTAL, "node" => node.to_owned(), "result" => result);
        let metrics = NodeMetrics {
            removed: Mutex::new(false),
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
            relayed: ["sent", "deleted", "repeated", "dropped"].map(|result| {
                metrics::counter!(RELAYED_DELETES_TOTAL, "node" => node.to_owned(), "result" => result)
            }),
            near: [
                NEAR_CACHE_HITS_TOTAL,
                NEAR_CACHE_MISSES_TOTAL,
                NEAR_CACHE_INVALIDATIONS_TOTAL,
                NEAR_CACHE_EVICTIONS_TOTAL,
            ]
            .map(|name| metrics::counter!(name, &label())),
            fleet: [News::Boxed, News::Returned].map(|news| {
                ["sent", "heard"].map(|way| {
                    let news = news.as_str();
                    metrics::counter!(FLEET_NEWS_TOTAL, "node" => node.to_owned(), "news" => news, "way" => way)
                })
            }),
        };
        // `aside`'s counters are counted through the registry, by the
        // node that served the key (a connection's own); each is
        // registered here, so it exists at zero too.
        let aside = ASIDE_OUTCOMES.map(|outcome| {
            metrics::counter!(ASIDE_TOTAL, "node" => node.to_owned(), "outcome" => outcome)
        });
        // Counters come into being at zero with their first touch.
        let probes = [&metrics.probes_ok, &metrics.probes_failed];
        let (near, relayed) = (&metrics.near, &metrics.relayed);
        let fleet = metrics.fleet.as_flattened();
        let counters = metrics.failures.iter().chain(probes).chain(&metrics.stand_ins);
        for counter in counters.chain(relayed).chain(near).chain(fleet).chain(&aside) {
            counter.increment(0);
        }
        for counter in [&metrics.waited, &metrics.timed_out].into_iter().chain(&metrics.closed) {
            counter.absolute(0);
        }
        metrics.checkouts.increment(0);
        // A drain's progress too is counted through the registry, when one
        // runs (`runtime/drain.rs`).
        metrics::counter!(DRAINED_KEYS_TOTAL, "node" => node.to_owned()).increment(0);
        metrics::gauge!(DRAIN_KEYS_LEFT, "node" => node.to_owned()).set(0.0);
        // And a sweep's (`runtime/sweep.rs`).
        metrics::counter!(SWEPT_KEYS_TOTAL, "node" => node.to_owned()).increment(0);
        metrics::gauge!(SWEEP_KEYS_LEFT, "node" => node.to_owned()).set(0.0);
        for gauge in [&metrics.connections, &metrics.idle_connections, &metrics.subscriptions] {
            gauge.set(0.0);
        }
        metrics.penalties.increment(0);
        metrics.failovers.increment(0);
        metrics.up.set(1.0);
        metrics
    }

    /// Sets gauges unless the node was removed.
    fn set(&self, gauges: impl FnOnce()) {
        let removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        if !*removed {
            gauges();
        }
    }

    /// The node left its pool: its gauges read 0 from now on (up, its
    /// connections, its subscriptions), as a gone node has none.
    pub(crate) fn removed(&self) {
        let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        *removed = true;
        for gauge in [&self.up, &self.connections, &self.idle_connections, &self.subscriptions] {
            gauge.set(0.0);
        }
    }

    /// The node entered the box.
    pub(crate) fn boxed(&self) {
        self.set(|| self.up.set(0.0));
        self.penalties.increment(1);
    }

    /// A probe let the node back in.
    pub(crate) fn returned(&self) {
        self.set(|| self.up.set(1.0));
        self.probes_ok.increment(1);
    }

    /// A probe of the boxed node failed.
    pub(crate) fn probe_failed(&self) {
        self.probes_failed.increment(1);
    }

    /// A checkout got its connection, pooled or shared, after waiting
    /// `waited`.
    pub(crate) fn checkout(&self, waited: Duration) {
        self.checkouts.increment(1);
        self.checkout_seconds.record(waited);
    }

    /// A key of this node was served by another.
    pub(crate) fn failover(&self) {
        self.failovers.increment(1);
    }

    /// Channels and patterns subscribed on the node now.
    pub(crate) fn subscriptions(&self, topics: usize) {
        self.set(|| self.subscriptions.set(topics as f64));
    }

    /// The counters of stand-in writes for this node's keys.
    pub(crate) fn stand_in_counters(&self) -> StandInCounters {
        let [remembered, invalidated, dropped] = self.stand_ins.clone();
        StandInCounters { remembered, invalidated, dropped }
    }

    /// The counters of the deletes relayed for this node's keys.
    pub(crate) fn relay_counters(&self) -> RelayCounters {
        let [sent, deleted, repeated, dropped] = self.relayed.clone();
        RelayCounters { sent, deleted, repeated, dropped }
    }

    /// The near cache's hits, misses, invalidations and evictions since
    /// last sampled.
    pub(crate) fn near(&self, counts: [u64; 4]) {
        self.near.iter().zip(counts).for_each(|(counter, n)| counter.increment(n));
    }

    /// A piece of fleet news about the node, told or heard.
    pub(crate) fn fleet_news(&self, news: News, way: Way) {
        let news = match news {
            News::Boxed => 0,
            News::Returned => 1,
        };
        self.fleet[news][way as usize].increment(1);
    }

    pub(crate) fn failure(&self, kind: FailureKind) {
        let index = FailureKind::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        self.failures[index].increment(1);
    }

    /// Copies the pool's own figures (the prober calls this each second).
    pub(crate) fn sample(&self, pool: &PoolStats) {
        self.set(|| {
            self.connections.set(f64::from(pool.connections));
            self.idle_connections.set(f64::from(pool.idle_connections));
        });
        self.waited.absolute(pool.checkouts_waited);
        self.timed_out.absolute(pool.checkouts_timed_out);
        let closed = [pool.closed_broken, pool.closed_idle, pool.closed_lifetime];
        for (counter, value) in self.closed.iter().zip(closed) {
            counter.absolute(value);
        }
    }
}
