//! The engine both flavours run on: the current table of nodes and
//! membership (a node added in `added.rs`, drained in `draining.rs`); the
//! table and its routes are in `table.rs`, the routing
//! policy's steps over them (single and batch) in `step.rs`, the prober
//! that drives the core in the background in `prober.rs` (a node's return
//! in `comeback.rs`).
//!
//! [`Core`] knows nothing of how a node keeps its connections (its store)
//! nor of how a caller waits: every path, in either flavour, takes the
//! steps of `step.rs`, so a key is routed, failed over, counted and probed
//! by the same code whichever flavour serves it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use futures_util::future::join_all;

use crate::error::Error;
use crate::health::event::NodeEvent;
use crate::health::failure::Seen;
use crate::health::penalty::{BoxGuard, State};
use crate::health::pool_wide::PoolWide;
use crate::node::clock::Clock;
use crate::node::probe::ProbeCheck;
use crate::node::tracked::NodeManager;
use crate::node::{Node, NodeParts, Store};
use crate::route::{self, NodeName};
use crate::runtime::drain::Drain;
use crate::runtime::drained;
use crate::runtime::status::NodeStatus;
use crate::runtime::sweep::Sweep;
use crate::runtime::table::{Held, Table};
use crate::runtime::warm::{self, Window};
use crate::settings::Settings;

/// What a pool starts from: each node's name, weight and manager, the
/// checked settings and the probe check.
pub(crate) type Finished<M> =
    (Vec<NodeParts<M>>, Settings, Option<ProbeCheck<<M as bb8::ManageConnection>::Connection>>);

/// The engine of a pool, whichever the flavour.
pub(crate) struct Core<M: NodeManager, S> {
    /// Swapped whole (to empty on `close`), so routing reads it without a
    /// lock.
    table: ArcSwap<Table<M, S>>,
    pub(crate) pool_wide: Arc<PoolWide>,
    closed: AtomicBool,
    next_any: AtomicUsize,
    /// Serialises membership changes and `close`; readers never take it.
    membership: Mutex<()>,
    pub(crate) settings: Settings,
    /// The user's probe check, for every node.
    pub(crate) check: Option<ProbeCheck<M::Connection>>,
    /// The window after the last node added warm (`resize_warmup`).
    pub(crate) resize: Window,
    /// The drain in progress (`drain.rs`), if any.
    pub(crate) drain: ArcSwapOption<Drain<M, S>>,
    /// Whether a drain runs, from its first check to its end (or its
    /// future's drop): one at a time, and no node added meanwhile.
    pub(crate) draining: AtomicBool,
    /// The names of the nodes removed from the pool: one added back must
    /// be empty (it kept what it held, older than the writes made while
    /// it was away).
    removed: Mutex<Vec<NodeName>>,
    /// Each added node's last sweep (`sweep.rs`), while the node is in.
    pub(crate) sweeps: Mutex<Vec<Arc<Sweep>>>,
}

impl<M: NodeManager, S> Drop for Core<M, S> {
    fn drop(&mut self) {
        // The prober holds only a `Weak`: wake it so it sees the pool is
        // gone now rather than at its next timer.
        self.pool_wide.wake.notify_one();
    }
}

impl<M: NodeManager, S: Store<M>> Core<M, S> {
    /// The engine over nodes made by `node` from their parts, probing them
    /// first if the settings say so (those that fail start in the box).
    pub(crate) async fn start(
        (parts, settings, check): Finished<M>,
        node: impl Fn(
            NodeParts<M>,
            &Settings,
            &Arc<PoolWide>,
            Option<ProbeCheck<M::Connection>>,
        ) -> Node<M, S>,
    ) -> Self {
        let pool_wide = PoolWide::new(BoxGuard::new(settings.max_boxed(parts.len())));
        let new = |parts| Arc::new(node(parts, &settings, &pool_wide, check.clone()));
        let nodes: Vec<_> = parts.into_iter().map(new).collect();
        if settings.probe_at_build {
            probe_new(&nodes).await;
        }
        Core {
            table: ArcSwap::from_pointee(Table::new(nodes, &pool_wide)),
            pool_wide,
            closed: AtomicBool::new(false),
            next_any: AtomicUsize::new(0),
            membership: Mutex::new(()),
            settings,
            check,
            resize: Window::default(),
            drain: ArcSwapOption::empty(),
            draining: AtomicBool::new(false),
            removed: Mutex::default(),
            sweeps: Mutex::default(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// What `build` (both flavours) says of the nodes it just probed: no
    /// node refused the pool's credentials (a wrong setting fails the
    /// build, whatever `require_healthy` says), and as many nodes are up
    /// as the settings require.
    pub(crate) fn check_start(&self) -> Result<(), Error> {
        self.table.load().nodes.iter().try_for_each(|node| refused(node))?;
        let status = self.status();
        let healthy = status.iter().filter(|s| s.up).count();
        let (required, total) = (self.settings.require_healthy, status.len());
        if healthy >= required {
            if healthy < total {
                let more = "until they answer; set `require_healthy` (FLUSTER__REQUIRE_HEALTHY) \
                    to make build fail instead";
                let keys = match healthy {
                    0 => "every get fails with NoHealthyNodes",
                    _ => "their keys go to the healthy ones",
                };
                tracing::warn!(
                    healthy,
                    nodes = total,
                    require_healthy = required,
                    "pool built with {healthy} of {total} nodes healthy: {keys} {more}"
                );
            }
            return Ok(());
        }
        let down = status
            .into_iter()
            .filter(|s| !s.up)
            .map(|s| (s.name, s.last_error.unwrap_or_else(|| "not probed".into())))
            .collect();
        Err(Error::NotEnoughHealthy { healthy, required, down })
    }

    pub(crate) fn lock_membership(&self) -> MutexGuard<'_, ()> {
        self.membership.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The clock of a call that starts now.
    pub(crate) fn clock(&self) -> Clock {
        Clock::new(self.settings.checkout_timeout)
    }

    /// The table as it is now, open or not (empty once closed).
    #[inline]
    pub(crate) fn current(&self) -> Held<M, S> {
        self.table.load()
    }

    /// The table, if the pool is open.
    pub(crate) fn open_table(&self) -> Result<Held<M, S>, Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(self.table.load())
    }

    /// Where a call without a key starts its turn over the nodes: each
    /// such call one further.
    pub(crate) fn next_any(&self) -> usize {
        self.next_any.fetch_add(1, Ordering::Relaxed)
    }

    /// `GET key` from the near cache of the key's home
    /// ([`Table::near_hit`]).
    pub(crate) fn near_hit(&self, key: &[u8]) -> Option<redis::Value> {
        self.table.load().near_hit(key)
    }

    /// The key's home node.
    pub(crate) fn home_node_for(&self, key: &[u8]) -> Option<NodeName> {
        let table = self.table.load();
        let home = table.router.home(key)?;
        Some(*table.router.name(home))
    }

    /// Whether keys `a` and `b` go to one node whatever the nodes' health
    /// ([`Table::routes_alike`]).
    pub(crate) fn routes_alike(&self, a: &[u8], b: &[u8]) -> bool {
        let (a, b) = (route::key_hash(a), route::key_hash(b));
        let warm = !self.settings.warmup.is_zero();
        self.table.load().routes_alike(a, b, self.settings.failover, warm)
    }

    pub(crate) fn status(&self) -> Vec<NodeStatus> {
        let now = Instant::now();
        let of = |node: &Arc<Node<M, S>>| match self.sweep_of(node.name()) {
            Some(sweep) => NodeStatus::of(node, now).sweeping(&sweep),
            None => NodeStatus::of(node, now),
        };
        let mut all: Vec<_> = self.table.load().nodes.iter().map(of).collect();
        if let Some(drain) = self.drain.load_full().filter(|d| !d.done.load(Ordering::Acquire)) {
            all.push(NodeStatus::of(&drain.node, now).draining(&drain));
        }
        all
    }

    pub(crate) fn nodes(&self) -> Vec<String> {
        self.table.load().nodes.iter().map(|n| n.name().to_string()).collect()
    }

    pub(crate) fn close(&self) {
        let _writer = self.lock_membership();
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let table = self.table.swap(Arc::new(Table::new(Vec::new(), &self.pool_wide)));
        for node in &table.nodes {
            node.health().retire();
        }
        self.pool_wide.wake.notify_one();
        tracing::info!(nodes = table.nodes.len(), "pool closed");
        // Dropping `table` drops each node's pool, and with it the idle
        // connections, once in-flight checkouts are done with it.
    }

    pub(crate) fn remove(&self, name: &str) -> Result<(), Error> {
        if self.forsake_drain(name) {
            return Ok(());
        }
        // Its sweep first: once it left, a key on its old home is no
        // longer an old copy.
        let removed = self.unlist(name, |_, _| {
            self.stop_sweep(name);
            Ok(())
        })?;
        self.retire_removed(&removed);
        Ok(())
    }

    /// Takes the node `name` out of the table, if it may leave and `first`
    /// agrees: `first` runs under the membership lock with the table it is
    /// about to leave and its index there, and its error leaves the table
    /// as it is. The node still serves connections taken before.
    pub(crate) fn unlist(
        &self,
        name: &str,
        first: impl FnOnce(&Table<M, S>, usize) -> Result<(), Error>,
    ) -> Result<Arc<Node<M, S>>, Error> {
        let _writer = self.lock_membership();
        let current = self.open_table()?;
        let index = removable(&current, name)?;
        first(&current, index)?;
        let mut nodes = current.nodes.clone();
        let removed = nodes.remove(index);
        self.install(nodes);
        Ok(removed)
    }

    /// What a removed node's leaving does: retired, its window closed,
    /// counted and told.
    pub(crate) fn retire_removed(&self, removed: &Node<M, S>) {
        let name = removed.name();
        let mut names = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        if !names.contains(name) {
            names.push(*name);
        }
        drop(names);
        removed.health().retire();
        self.forget_sweep(name);
        self.resize.close(name);
        removed.health().metrics.removed();
        self.pool_wide.send(NodeEvent::Removed { node: *name });
        tracing::info!(node = %name, "node removed");
    }

    /// Whether a node of this name was removed from the pool.
    pub(crate) fn was_removed(&self, name: &str) -> bool {
        self.removed.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|n| **n == *name)
    }

    /// Publishes a new node list, its nodes pointed at the resize on
    /// first; the caller holds the membership lock.
    pub(crate) fn install(&self, nodes: Vec<Arc<Node<M, S>>>) {
        self.pool_wide.guard.set_cap(self.settings.max_boxed(nodes.len()));
        let table = Arc::new(Table::new(nodes, &self.pool_wide));
        self.point(&table);
        self.table.store(table);
        self.pool_wide.wake.notify_one();
    }

    /// Points the current table's nodes at the resize on (none, once one
    /// ended).
    pub(crate) fn repoint(&self) {
        let _writer = self.lock_membership();
        self.point(&self.table.load());
    }

    /// Points each node of `table`, about to be installed, at the resize
    /// on (a window after a node added warm, `runtime/warm.rs`, or a
    /// drain, `runtime/drain.rs`), or at none: every command on its
    /// connections asks its slot, whenever they were taken, so a write
    /// on an old home answered after the switch sees the resize. The
    /// draining node, out of `table`, is pointed too.
    fn point(&self, table: &Arc<Table<M, S>>) {
        let timeout = self.settings.checkout_timeout;
        let drain = self.drain.load_full().filter(|d| !d.over());
        for (index, node) in table.nodes.iter().enumerate() {
            let elder = warm::elder(&self.resize, table, index, timeout)
                .or_else(|| drained::elder(drain.clone(), table, Some(index), timeout));
            match elder {
                Some(elder) => node.resizing().start(elder),
                None => node.resizing().stop(),
            }
        }
        if let Some(drain) = drain.filter(|d| table.position(d.node.name()).is_none()) {
            let node = Arc::clone(&drain.node);
            if let Some(elder) = drained::elder(Some(drain), table, None, timeout) {
                node.resizing().start(elder);
            }
        }
    }
}

/// The index of the node `name` in `table` if it may leave the pool.
pub(crate) fn removable<M: NodeManager, S: Store<M>>(
    table: &Table<M, S>,
    name: &str,
) -> Result<usize, Error> {
    let reason = match table.position(name) {
        None => "no node of that name is in the pool",
        Some(_) if table.nodes.len() == 1 => {
            "the last node of a pool cannot be removed (close the pool instead)"
        }
        // Gutter nodes hold no keys of their own: alone, they would
        // leave every key without a home.
        Some(index) if !table.nodes[index].is_gutter() && table.router.len() == 1 => {
            "the last node that holds keys cannot be removed while gutter nodes are \
             left: they hold no keys of their own (remove them first, or close the pool)"
        }
        Some(index) => return Ok(index),
    };
    Err(Error::config(format!("node name `{name}`"), reason))
}

/// [`Error::refusal`] if `node` is boxed for refusing what the pool was
/// told to use: its credentials, or its URL's database.
pub(crate) fn refused<M: NodeManager, S: Store<M>>(node: &Node<M, S>) -> Result<(), Error> {
    let health = node.health().health();
    match health.state() {
        State::Boxed { cause, .. } if cause.is_refusal() => {
            Err(Error::refusal(node.name(), cause, health.last_error()))
        }
        _ => Ok(()),
    }
}

/// Probes new nodes together; those that fail start in the box (one
/// timeout is enough there).
pub(crate) async fn probe_new<M: NodeManager, S: Store<M>>(nodes: &[Arc<Node<M, S>>]) {
    join_all(nodes.iter().map(|node| async move {
        let epoch = node.health().epoch();
        if let Err((kind, detail)) = node.probe().await {
            node.health().report((kind, &detail), epoch, Seen::AtStart);
        }
    }))
    .await;
}
