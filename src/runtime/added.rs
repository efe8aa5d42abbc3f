//! `add_node`: a node joins the table, unless its name is taken, a drain
//! runs (or a drain's moves are in doubt), or, added back
//! under a name the pool removed, its server is not empty; its warm
//! window (`warm.rs`) opens before the switch.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::Error;
use crate::health::event::NodeEvent;
use crate::node::tracked::NodeManager;
use crate::node::{Node, Store};
use crate::runtime::core::{Core, probe_new, refused};
use crate::runtime::migrate::{self, Endpoint};

impl<M: NodeManager, S: Store<M>> Core<M, S> {
    /// Adds `node` unless its name is taken; probes it first if the
    /// settings say so. Its server is reached at `at` by the old homes of
    /// the keys that move to it (`MIGRATE`, in its warm window), if given.
    pub(crate) async fn add(&self, node: Node<M, S>, at: Option<Endpoint>) -> Result<(), Error> {
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
        let drained = || {
            // Its warm window and the drain would each claim the moved keys.
            let reason = "a node is being drained: add this one when the drain ends";
            Err(Error::config(format!("node name `{name}`"), reason))
        };
        if self.draining.load(Ordering::Acquire) {
            return drained();
        }
        // A node added takes keys in doubt from their homes, and a late
        // move lands on the old one: served again after a `remove_node`.
        if let Some(reason) = self.drain_in_doubt() {
            return Err(Error::config(format!("node name `{name}`"), reason));
        }
        let node = Arc::new(node);
        if self.settings.probe_at_build {
            probe_new(std::slice::from_ref(&node)).await;
            refused(&node).inspect_err(|_| node.health().retire())?;
        }
        if self.was_removed(&name) {
            empty(&node).await.inspect_err(|_| node.health().retire())?;
        }
        let _writer = self.lock_membership();
        let current = self.open_table().inspect_err(|_| node.health().retire())?;
        if current.node(&name).is_some() {
            node.health().retire();
            return Err(taken());
        }
        // Again under the lock: a drain may have begun during the probe (a
        // drain that begins after this sees the window open, or the table
        // changed at its switch, and is refused).
        if self.draining.load(Ordering::Acquire) {
            node.health().retire();
            return drained();
        }
        node.health().start_warmup();
        let mut nodes = current.nodes.clone();
        nodes.push(node);
        // Open before the switch: the install points every node at it.
        let migrate_ms = migrate::timeout_ms(self.settings.response_timeout);
        self.resize.open(name, self.settings.resize_warmup, at, migrate_ms);
        self.install(nodes);
        self.pool_wide.send(NodeEvent::Added { node: name });
        tracing::info!(node = %name, "node added");
        Ok(())
    }
}

/// [`Error::Config`] unless `node`'s server holds no key (in its URL's
/// database): a node added back under a name the pool removed kept what
/// it held, older than the writes made while it was away (and the copies
/// a warm window's read-through put there).
async fn empty<M: NodeManager, S: Store<M>>(node: &Node<M, S>) -> Result<(), Error> {
    let name = node.name();
    let mut size = redis::pipe();
    size.cmd("DBSIZE");
    let reason = match node.send_own(&size).await {
        Ok(Some(replies)) => match replies.first() {
            Some(redis::Value::Int(0)) => return Ok(()),
            Some(redis::Value::Int(n)) => format!(
                "a node of that name was removed from this pool, and its server holds {n} keys: \
                 values older than the writes made while it was away. Flush it (FLUSHDB) \
                 before adding it back"
            ),
            other => format!("DBSIZE answered {other:?}"),
        },
        Ok(None) => "a node of that name was removed from this pool; its connections cannot \
            say whether it is empty (it must be: it kept values older than the writes made \
            while it was away)"
            .to_owned(),
        Err((_, e)) => format!(
            "a node of that name was removed from this pool, and whether its server is \
             empty (it must be) could not be asked: {e}"
        ),
    };
    Err(Error::config(format!("node name `{name}`"), reason))
}
