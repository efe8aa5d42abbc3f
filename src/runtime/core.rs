//! The engine both flavours run on: the current table of nodes and
//! membership; the table and its routes are in `table.rs`, the routing
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
use crate::health::commons::Commons;
use crate::health::event::NodeEvent;
use crate::health::penalty::{BoxGuard, State};
use crate::node::clock::Clock;
use crate::node::probe::ProbeCheck;
use crate::node::tracked::NodeManager;
use crate::node::warm::Elder;
use crate::node::{Bb8, Node, Spec, Store};
use crate::route::{self, NodeName};
use crate::runtime::drain::{self, Drain};
use crate::runtime::status::NodeStatus;
use crate::runtime::table::{Held, Table};
use crate::runtime::warm::{self, Window};
use crate::settings::Settings;

/// What a pool starts from: each node's name, weight and manager, the
/// checked settings and the probe check.
pub(crate) type Finished<M> =
    (Vec<Spec<M>>, Settings, Option<ProbeCheck<<M as bb8::ManageConnection>::Connection>>);

/// The engine of a pool, whichever the flavour.
pub(crate) struct Core<M: NodeManager, S> {
    /// Swapped whole (to empty on `close`), so routing reads it without a
    /// lock.
    table: ArcSwap<Table<M, S>>,
    pub(crate) commons: Arc<Commons>,
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
}

impl<M: NodeManager, S> Drop for Core<M, S> {
    fn drop(&mut self) {
        // The prober holds only a `Weak`: wake it so it sees the pool is
        // gone now rather than at its next timer.
        self.commons.wake.notify_one();
    }
}

impl<M: NodeManager, S: Store<M>> Core<M, S> {
    /// The engine over nodes made by `node` from each spec, probing them
    /// first if the settings say so (those that fail start in the box).
    pub(crate) async fn start(
        (specs, settings, check): Finished<M>,
        node: impl Fn(
            Spec<M>,
            &Settings,
            &Arc<Commons>,
            Option<ProbeCheck<M::Connection>>,
        ) -> Node<M, S>,
    ) -> Self {
        let commons = Commons::new(BoxGuard::new(settings.max_boxed(specs.len())));
        let new = |spec| Arc::new(node(spec, &settings, &commons, check.clone()));
        let nodes: Vec<_> = specs.into_iter().map(new).collect();
        if settings.probe_at_build {
            probe_new(&nodes).await;
        }
        Core {
            table: ArcSwap::from_pointee(Table::new(nodes, &commons)),
            commons,
            closed: AtomicBool::new(false),
            next_any: AtomicUsize::new(0),
            membership: Mutex::new(()),
            settings,
            check,
            resize: Window::default(),
            drain: ArcSwapOption::empty(),
            draining: AtomicBool::new(false),
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
        let required = self.settings.require_healthy;
        if healthy >= required {
            return Ok(());
        }
        let down = status
            .into_iter()
            .filter(|s| !s.up)
            .map(|s| (s.name, s.last_error.unwrap_or_else(|| "not probed".into())))
            .collect();
        Err(Error::NotEnoughHealthy { healthy, required, down })
    }

    fn lock_membership(&self) -> MutexGuard<'_, ()> {
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
        let mut all: Vec<_> =
            self.table.load().nodes.iter().map(|node| NodeStatus::of(node, now)).collect();
        if let Some(drain) = self.drain.load_full() {
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
        let table = self.table.swap(Arc::new(Table::new(Vec::new(), &self.commons)));
        for node in &table.nodes {
            node.health().retire();
        }
        self.commons.wake.notify_one();
        tracing::info!(nodes = table.nodes.len(), "pool closed");
        // Dropping `table` drops each node's pool, and with it the idle
        // connections, once in-flight checkouts are done with it.
    }

    /// Adds `node` unless its name is taken; probes it first if the
    /// settings say so.
    pub(crate) async fn add(&self, node: Node<M, S>) -> Result<(), Error> {
        let name = *node.name();
        let taken = || {
            Error::config(
                format!("node name `{name}`"),
                "a node of that name is already in the pool",
            )
        };
        if self.open_table()?.node(&name).is_some() {
            return Err(taken());
        }
        if self.draining.load(Ordering::Acquire) {
            // Its warm window and the drain would each claim the moved keys.
            let reason = "a node is being drained: add this one when the drain ends";
            return Err(Error::config(format!("node name `{name}`"), reason));
        }
        let node = Arc::new(node);
        if self.settings.probe_at_build {
            probe_new(std::slice::from_ref(&node)).await;
            refused(&node).inspect_err(|_| node.health().retire())?;
        }
        let _writer = self.lock_membership();
        let current = self.open_table().inspect_err(|_| node.health().retire())?;
        if current.node(&name).is_some() {
            node.health().retire();
            return Err(taken());
        }
        node.health().start_warmup();
        let mut nodes = current.nodes.clone();
        nodes.push(node);
        self.install(nodes);
        self.resize.open(name, self.settings.resize_warmup);
        self.commons.send(NodeEvent::Added { node: name });
        tracing::info!(node = %name, "node added");
        Ok(())
    }

    pub(crate) fn remove(&self, name: &str) -> Result<(), Error> {
        let removed = self.unlist(name, |_, _| Ok(()))?;
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
        removed.health().retire();
        self.resize.close(name);
        removed.health().metrics.removed();
        self.commons.send(NodeEvent::Removed { node: *name });
        tracing::info!(node = %name, "node removed");
    }

    /// Publishes a new node list; the caller holds the membership lock.
    fn install(&self, nodes: Vec<Arc<Node<M, S>>>) {
        self.commons.guard.set_cap(self.settings.max_boxed(nodes.len()));
        self.table.store(Arc::new(Table::new(nodes, &self.commons)));
        self.commons.wake.notify_one();
    }
}

impl<M: NodeManager> Core<M, Bb8<M>> {
    /// What a connection from the node named `node` needs if it was added
    /// warm and its window is open (`runtime/warm.rs`): one load otherwise.
    pub(crate) fn elder(&self, table: &Held<M, Bb8<M>>, index: usize) -> Option<Arc<dyn Elder>> {
        let timeout = self.settings.checkout_timeout;
        warm::elder(&self.resize, table, index, timeout)
            .or_else(|| drain::elder(self.drain.load_full(), table, index, timeout))
    }

    /// [`elder`](Self::elder) of the node named `node` in the current table.
    pub(crate) fn elder_named(&self, node: &str) -> Option<Arc<dyn Elder>> {
        // Two plain loads on every `get`: no window, no drain, nothing to do.
        if !self.resize.maybe_open() && !self.draining.load(Ordering::Acquire) {
            return None;
        }
        let table = self.open_table().ok()?;
        let index = table.position(node)?;
        self.elder(&table, index)
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

/// Probes new nodes together; those that fail start in the box (one
/// timeout is enough there).
/// [`Error::Credentials`] if `node` is boxed for refusing the pool's
/// credentials.
fn refused<M: NodeManager, S: Store<M>>(node: &Node<M, S>) -> Result<(), Error> {
    let health = node.health().health();
    match health.state() {
        State::Boxed { cause, .. } if cause.is_refusal() => Err(Error::Credentials {
            node: node.name().to_string(),
            failure: cause,
            reason: health.last_error().unwrap_or("no reason given").to_owned(),
        }),
        _ => Ok(()),
    }
}

async fn probe_new<M: NodeManager, S: Store<M>>(nodes: &[Arc<Node<M, S>>]) {
    join_all(nodes.iter().map(|node| async move {
        let epoch = node.health().epoch();
        if let Err((kind, detail)) = node.probe().await {
            node.health().report((kind, &detail), epoch, true);
        }
    }))
    .await;
}
