//! `drain_node` in order (`drain.rs` has the steps and the drain's
//! state): one drain at a time ([`Claim`]), the check, the switch, the
//! move, the node's leaving; and a drain's moves in doubt past its end,
//! which hold back the next drain or add until its node answers, or
//! `remove_node` of it gives them up.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::error::Error;
use crate::node::Store;
use crate::node::tracked::NodeManager;
use crate::runtime::core::{Core, removable};
use crate::runtime::drain::{Drain, Mover, Target};
use crate::runtime::migrate::{self, Endpoint};

impl<M: NodeManager, S: Store<M>> Core<M, S> {
    /// `drain_node`: the steps of this file's header, `endpoint` giving
    /// how each node's server is reached now (asked once, before the
    /// check: a Sentinel-backed shard's current master).
    pub(crate) async fn drain(
        &self,
        name: &str,
        endpoint: impl for<'m> Fn(&'m M) -> BoxFuture<'m, Result<Endpoint, String>>,
        pace: (usize, Duration),
    ) -> Result<(), Error> {
        let table = self.open_table()?;
        let index = removable(&table, name)?;
        if table.nodes[index].is_gutter() {
            // Holds no keys of its own: nothing to move.
            return self.remove(name);
        }
        let mut claim = Claim::take(self, name)?;
        // Its sweep first, to its last batch: a delete of it landing after
        // the switch could take a key this drain moved there.
        if let Some(sweep) = self.stop_sweep(name) {
            sweep.ended().await;
        }
        let keyed = &table.nodes[..table.router.len()];
        let mut targets = Vec::with_capacity(keyed.len());
        for node in keyed.iter().filter(|n| **n.name() != *name) {
            let at = endpoint(node.manager()).await;
            targets.push(Target::new(Arc::clone(node), at, name)?);
        }
        let timeout = self.settings.response_timeout;
        let migrate_ms = migrate::timeout_ms(timeout);
        let homes = targets.iter().map(|t| (t.name, Arc::clone(&t.at))).collect();
        let drain = Arc::new(Drain::new(&table, index, homes, migrate_ms));
        let mover = Mover { drain: &drain, targets, timeout, migrate_ms };
        mover.check().await?;
        // The switch, if nothing changed since the check; else the node
        // stays, serving, and nothing moved.
        self.unlist(name, |current, _| {
            if !std::ptr::eq(current, &**table) {
                let reason = "the pool's nodes changed while the drain checked them: \
                    the node stays; drain it again";
                return Err(Error::Drain {
                    node: name.to_owned(),
                    target: None,
                    reason: reason.into(),
                });
            }
            self.drain.store(Some(Arc::clone(&drain)));
            Ok(())
        })?;
        drop(table);
        claim.switched = Some(Arc::clone(&drain));
        tracing::info!(node = name, "draining: its keys are served by their new homes");
        let after = self.open_table().map(|t| t.router.clone());
        let result = match after {
            Ok(after) => mover.run(&after, pace, || self.is_closed()).await,
            Err(e) => Err(e),
        };
        drop(claim);
        if let Err(e) = &result {
            tracing::warn!(node = name, error = %e, "drain stopped: the node left with keys unmoved");
        }
        result
    }
}

impl<M: NodeManager, S: Store<M>> Core<M, S> {
    /// Why a drain, or a node added, must wait: the last drain's moves in
    /// doubt (the nodes' part in it would be replaced, and a key taken by
    /// the node added could be served from where a late move lands).
    pub(crate) fn drain_in_doubt(&self) -> Option<String> {
        let drain = self.drain.load_full().filter(|d| !d.over())?;
        let done = drain.done.load(Ordering::Acquire);
        done.then(|| {
            format!(
                "the last drain of `{0}` left keys whose move is in doubt (its server did not \
                 answer): wait until `{0}` answers, or give them up with remove_node(\"{0}\") \
                 if its server is gone for good",
                drain.node.name()
            )
        })
    }

    /// `remove_node` of a drained node whose moves are in doubt: they are
    /// given up (its server is gone for good), and their writes go on.
    pub(crate) fn forsake_drain(&self, name: &str) -> bool {
        let drain = self.drain.load_full().filter(|d| d.done.load(Ordering::Acquire) && !d.over());
        let Some(drain) = drain.filter(|d| **d.node.name() == *name) else { return false };
        self.let_go(&drain);
        tracing::warn!(node = name, "the drained node's moves in doubt were given up");
        true
    }

    /// A drain that ended with moves in doubt, all settled since, let go
    /// (the prober asks each round): its node's slot and this core held
    /// it, and with it the drained node's idle connections.
    pub(crate) fn let_go_settled_drain(&self) {
        if let Some(drain) = self.drain.load_full().filter(|d| d.over()) {
            self.let_go(&drain);
        }
    }

    /// `drain`, ended, let go unless a later drain took its place.
    fn let_go(&self, drain: &Arc<Drain<M, S>>) {
        let current = self.drain.compare_and_swap(drain, None);
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, drain)) {
            // Its slot held the drain, which holds it.
            drain.node.resizing().stop();
            self.repoint();
        }
    }
}

/// One drain at a time, held from its first check to its end: let go
/// when the drain returns or its future is dropped, and then, if the node
/// had left the table, the drain is ended and the node retired (its
/// unmoved keys are misses on their new homes, never older values).
struct Claim<'c, M: NodeManager, S: Store<M>> {
    core: &'c Core<M, S>,
    switched: Option<Arc<Drain<M, S>>>,
}

impl<'c, M: NodeManager, S: Store<M>> Claim<'c, M, S> {
    /// The claim, unless a drain runs, or a node added warm is in its
    /// window (its read-through and the drain's would each claim the moved
    /// keys).
    fn take(core: &'c Core<M, S>, name: &str) -> Result<Self, Error> {
        let refused = |reason: &str| {
            Err(Error::Drain { node: name.to_owned(), target: None, reason: reason.into() })
        };
        if core.resize.is_open() {
            return refused(
                "a node added warm is in its resize_warmup window: drain after it ends",
            );
        }
        if let Some(reason) = core.drain_in_doubt() {
            return refused(&reason);
        }
        if core.draining.swap(true, Ordering::AcqRel) {
            return refused("another node is being drained: one drain at a time");
        }
        Ok(Claim { core, switched: None })
    }
}

impl<M: NodeManager, S: Store<M>> Drop for Claim<'_, M, S> {
    fn drop(&mut self) {
        if let Some(drain) = self.switched.take() {
            // A batch cut short by a dropped future is in doubt.
            drain.cut_short(self.core.settings.response_timeout);
            drain.finish();
            // Kept while a move of it is in doubt: the nodes' connections
            // refuse writes of its keys till then (`drained.rs`).
            if drain.over() {
                self.core.drain.store(None);
            }
            // Its slot held the drain, which holds it.
            drain.node.resizing().stop();
            self.core.repoint();
            self.core.retire_removed(&drain.node);
        }
        self.core.draining.store(false, Ordering::Release);
    }
}
