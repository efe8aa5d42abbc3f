//! [`NodeStatus`]: one node's health and pool, as `status()` reports it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::health::failure::FailureKind;
use crate::health::penalty::State;
use crate::health::record::PoolStats;
use crate::node::tracked::NodeManager;
use crate::node::{Node, Store};
use crate::runtime::drain::Drain;
use crate::runtime::sweep::{Sweep, SweepEnd};

/// One node's health and pool, as reported by `status()`. As JSON
/// (feature `serde`), durations are milliseconds (`penalty_wait_ms`,
/// `penalty_remaining_ms`) and the failure kind its label.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node's name (never contains credentials).
    pub name: String,
    /// Whether the node is in rotation (false while in the penalty box).
    pub up: bool,
    /// The node's routing weight.
    pub weight: f64,
    /// Timeouts in a row while up; 0 when boxed.
    pub consecutive_timeouts: u32,
    /// The failure that boxed the node (or that the last probe saw), while
    /// it is boxed.
    #[cfg_attr(feature = "serde", serde(serialize_with = "label"))]
    pub boxed_for: Option<FailureKind>,
    /// Probes that failed since the node was boxed.
    pub failed_probes: u32,
    /// Length of the current stay in the box: `penalty_min_wait *
    /// penalty_multiplier^failed_probes`, capped and jittered.
    #[cfg_attr(feature = "serde", serde(rename = "penalty_wait_ms", serialize_with = "millis"))]
    pub penalty_wait: Option<Duration>,
    /// Time left before the next probe, while boxed.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "penalty_remaining_ms", serialize_with = "millis")
    )]
    pub penalty_remaining: Option<Duration>,
    /// Times the node entered the box since the pool was built.
    pub penalties: u64,
    /// Back-off level: of the current stay while boxed; while up, the level
    /// a stay starting now would have (above 0 for a node that flapped
    /// within `penalty_memory`).
    pub penalty_level: u32,
    /// While the node warms up after its return: how far, in `[0, 1)`.
    pub warmup: Option<f64>,
    /// While boxed: the error that boxed the node, or that its latest probe
    /// saw (e.g. a refused connection, a certificate the client does not
    /// trust, a rejected password). Never contains credentials.
    pub last_error: Option<String>,
    /// Connections the node's pool holds.
    pub connections: u32,
    /// Idle connections in the node's pool.
    pub idle_connections: u32,
    /// The node's pool's own figures.
    pub pool: PoolStats,
    /// Keys of this node that stand-ins wrote and the pool remembers, to
    /// delete at its return (`invalidate_on_return`).
    pub stand_in_keys: usize,
    /// Stand-in writes for this node's keys deleted at its returns so far.
    pub stand_in_invalidated: u64,
    /// Stand-in writes for this node's keys left to `stand_in_ttl` so far:
    /// no room to remember them, or a stand-in that could not be reached.
    pub stand_in_dropped: u64,
    /// With a [`fleet`](crate::Builder::fleet) and `invalidate_on_return`:
    /// the keys of this node that every process of the fleet recorded on
    /// the stand-ins, to delete at its return; counted each second while
    /// it is boxed, 0 once it returned. `None` without a fleet.
    pub stand_in_recorded: Option<u64>,
    /// Whether it is a gutter node
    /// ([`gutter_node`](crate::Builder::gutter_node)): it holds no keys of
    /// its own, and takes a boxed node's.
    pub gutter: bool,
    /// With a near cache: the replies it holds (one per distinct read of
    /// a key: `GET k` and `HGET k f` are two), at most
    /// [`near_cache`](crate::Builder::near_cache).
    pub near_cache_entries: Option<u64>,
    /// With a near cache: the share of reads it answered from memory since
    /// the pool was built (`None` before the first read).
    pub near_cache_hit_ratio: Option<f64>,
    /// How long ago the node last answered a command, a probe or a
    /// heartbeat, to within one heartbeat interval (`None`: never). While
    /// the node is up, the heartbeat keeps it under about one interval.
    #[cfg_attr(feature = "serde", serde(rename = "last_ok_ms", serialize_with = "millis"))]
    pub last_ok: Option<Duration>,
    /// While the node is drained (`drain_node`): the keys moved off it so
    /// far (out of the table, it is still listed until the drain ends).
    pub drained_keys: Option<u64>,
    /// While the node is drained: the keys it holds that no batch reached.
    pub drain_keys_left: Option<u64>,
    /// While the sweep of a node added (`add_node`) runs, from `add_node`
    /// until it ends: the copies of its keys it deleted on their old homes
    /// so far. `None` once it ended (or was stopped). See
    /// `docs/resize.md`.
    pub swept_keys: Option<u64>,
    /// While the sweep of a node added runs: the keys the other nodes held
    /// when it began that it has not scanned yet (0 while it waits for the
    /// node to serve its keys: its `resize_warmup` window, its `warmup`).
    pub sweep_keys_left: Option<u64>,
    /// Once the sweep of a node added has ended, while the node stays in
    /// the pool: [`SweepEnd::Clean`] if no old home holds a copy of its
    /// keys written before the sweep read it, else why not. `None` while it
    /// runs (`swept_keys` is `Some`) and for a node not added at run time.
    pub sweep_end: Option<SweepEnd>,
}

impl NodeStatus {
    /// `node`'s status at `now`, with its store's figures.
    pub(crate) fn of<M: NodeManager, S: Store<M>>(node: &Node<M, S>, now: Instant) -> Self {
        let pool = node.stats();
        let health = node.health().health();
        let policy = &node.health().policy;
        let (boxed_for, failed_probes, penalty_wait) = match health.state() {
            State::Boxed { cause, failed_probes, stay, .. } => {
                (Some(cause), failed_probes, Some(stay))
            }
            State::Up { .. } => (None, 0, None),
        };
        let (stand_in_invalidated, stand_in_dropped) = node.journal().counts();
        let near = node.near_figures(false);
        let ratio =
            near.map(|(n, ..)| (n.hits, n.misses)).filter(|(hits, misses)| hits + misses > 0);
        NodeStatus {
            name: node.name().to_string(),
            up: health.is_up(),
            weight: node.weight(),
            consecutive_timeouts: health.consecutive_timeouts(),
            boxed_for,
            failed_probes,
            penalty_wait,
            penalty_remaining: health.remaining(now),
            penalties: health.penalties(),
            penalty_level: health.level(now, policy),
            warmup: health.warmed(now, policy),
            last_error: health.last_error().map(str::to_owned),
            connections: pool.connections,
            idle_connections: pool.idle_connections,
            pool,
            stand_in_keys: node.journal().len(),
            stand_in_invalidated,
            stand_in_dropped,
            stand_in_recorded: node.journal().recorded_len(),
            gutter: node.is_gutter(),
            near_cache_entries: near.map(|(_, held, _)| held),
            near_cache_hit_ratio: ratio.map(|(hits, misses)| hits as f64 / (hits + misses) as f64),
            last_ok: node.health().last_ok(now),
            drained_keys: None,
            drain_keys_left: None,
            swept_keys: None,
            sweep_keys_left: None,
            sweep_end: None,
        }
    }

    /// This status with `drain`'s progress.
    pub(crate) fn draining<M: NodeManager, S>(mut self, drain: &Drain<M, S>) -> Self {
        self.drained_keys = Some(drain.moved.load(Ordering::Relaxed));
        self.drain_keys_left = Some(drain.left.load(Ordering::Relaxed));
        self
    }
}

impl NodeStatus {
    /// This status with `sweep`'s progress, or how it ended.
    pub(crate) fn sweeping(mut self, sweep: &Sweep) -> Self {
        match sweep.end() {
            Some(end) => self.sweep_end = Some(end.clone()),
            None => {
                self.swept_keys = Some(sweep.swept.load(Ordering::Relaxed));
                self.sweep_keys_left = Some(sweep.left.load(Ordering::Relaxed));
            }
        }
        self
    }
}

/// Milliseconds, for JSON.
#[cfg(feature = "serde")]
fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&d.map(|d| d.as_secs_f64() * 1000.0), s)
}

/// The failure kind's label, for JSON.
#[cfg(feature = "serde")]
fn label<S: serde::Serializer>(kind: &Option<FailureKind>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&kind.map(FailureKind::as_str), s)
}
