//! Nodes added and removed while traffic runs.
//!
//! The routing table is swapped whole: readers keep routing on the table
//! they loaded, lock-free, and in-flight checkouts finish on it; a removed
//! node's bb8 pool closes once the last of them lets go.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::builder::check_node;
use crate::error::Error;
use crate::manager::NodeManager;
use crate::node::Node;
use crate::pool::{ShardedPool, Table, probe_new_nodes};
use crate::redis_manager::{RedisManager, parse_url};

impl ShardedPool<RedisManager> {
    /// Adds the node at `url` under `name`, with weight 1, while the pool
    /// serves: it takes its share of keys (about 1/n of them, all from the
    /// other nodes) as soon as this returns. Like at build time, the node is
    /// probed first (unless `probe_at_build(false)`) and starts in the box
    /// if it does not answer.
    pub async fn add_node(&self, name: &str, url: &str) -> Result<(), Error> {
        self.add_weighted_node(name, url, 1.0).await
    }

    /// [`add_node`](Self::add_node) with a weight.
    pub async fn add_weighted_node(&self, name: &str, url: &str, weight: f64) -> Result<(), Error> {
        let info = parse_url(url)?;
        let manager = RedisManager::from_settings(info, &self.inner.settings)?;
        self.add_manager(name, manager, weight).await
    }
}

impl<M: NodeManager> ShardedPool<M> {
    /// Adds a node served by `manager` while the pool serves; see
    /// [`add_node`](ShardedPool::add_node).
    pub async fn add_manager(&self, name: &str, manager: M, weight: f64) -> Result<(), Error> {
        check_node(name, weight)?;
        self.inner.check_open()?;
        let taken = || {
            Error::config(
                format!("node name `{name}`"),
                "a node of that name is already in the pool",
            )
        };
        if self.inner.table.load().position(name).is_some() {
            return Err(taken());
        }
        let node = Arc::new(Node::new(
            name,
            weight,
            Arc::new(manager),
            &self.inner.settings,
            self.inner.shared.clone(),
        ));
        if self.inner.settings.probe_at_build {
            probe_new_nodes(std::slice::from_ref(&node)).await;
        }
        let _writer = self.inner.lock_membership();
        self.inner.check_open()?;
        let current = self.inner.table.load_full();
        if current.position(name).is_some() {
            node.retire();
            return Err(taken());
        }
        let mut nodes = current.nodes.clone();
        nodes.push(node);
        self.install(nodes);
        tracing::info!(node = name, "node added");
        Ok(())
    }

    /// Removes the node named `name` while the pool serves: its keys go to
    /// their next node at once, checkouts already under way finish, and its
    /// connections close as they come back. Errors if there is no such node,
    /// or if it is the last one.
    pub fn remove_node(&self, name: &str) -> Result<(), Error> {
        let _writer = self.inner.lock_membership();
        let current = self.inner.table.load_full();
        let Some(index) = current.position(name) else {
            return Err(Error::config(
                format!("node name `{name}`"),
                "no node of that name is in the pool",
            ));
        };
        if current.nodes.len() == 1 {
            return Err(Error::config(
                format!("node name `{name}`"),
                "the last node of a pool cannot be removed (close the pool instead)",
            ));
        }
        let mut nodes = current.nodes.clone();
        let removed = nodes.remove(index);
        self.install(nodes);
        removed.retire();
        tracing::info!(node = name, "node removed");
        Ok(())
    }

    /// Publishes a new node list; the caller holds the membership lock.
    fn install(&self, nodes: Vec<Arc<Node<M>>>) {
        let max_down = self.inner.settings.max_boxed(nodes.len());
        self.inner
            .shared
            .max_down
            .store(max_down, Ordering::Release);
        self.inner.table.store(Arc::new(Table::new(nodes)));
        // The background task picks up the new table on its next round.
        self.inner.shared.wake.notify_one();
    }
}
