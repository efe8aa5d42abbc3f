//! What both flavours' pools do alike (the async `ShardedPool` and the
//! sync one): the methods that are one step into their engine's `Core`,
//! and the parts of a node added while a pool serves.

use futures_util::future::BoxFuture;

use crate::backend::manager::RedisManager;
use crate::error::Error;
use crate::node::NodeParts;
use crate::runtime::migrate::Endpoint;
use crate::settings::url::parse_url;
use crate::settings::{Settings, check_node};

/// The parts of the node at `url` added under `name` while a pool (of
/// either flavour) serves.
pub(crate) fn added(
    name: &str,
    url: &str,
    weight: f64,
    settings: &Settings,
) -> Result<NodeParts<RedisManager>, Error> {
    check_node(name, weight)?;
    let manager = RedisManager::from_settings(parse_url(url)?, settings)?;
    let tracking = manager.tracking();
    Ok(NodeParts { tracking, ..NodeParts::new(name, weight, manager) })
}

/// How another node's server reaches `manager`'s now (a drain's
/// `MIGRATE`s, and those of a node added warm's old homes), in either
/// flavour: a Sentinel-backed shard's current master, asked of its
/// sentinels, or why none was found.
pub(crate) fn endpoint(manager: &RedisManager) -> BoxFuture<'_, Result<Endpoint, String>> {
    Box::pin(async move { manager.serving().await.map(|info| Endpoint::of(&info)) })
}

/// What both flavours' pools do alike, each method one step into their
/// engine's `Core`: expanded inside each `ShardedPool`'s `impl`.
macro_rules! pool_methods {
    () => {
        /// The name of the node `get(key)` would use now, or `None` if every
        /// node is boxed (or the pool is closed). Does not touch the network
        /// and allocates nothing.
        pub fn node_for<K: AsRef<[u8]>>(&self, key: K) -> Option<NodeName> {
            self.core.node_for(key.as_ref())
        }

        /// The key's home node: where it goes when every node is healthy
        /// (`None` only once the pool is closed).
        pub fn home_node_for<K: AsRef<[u8]>>(&self, key: K) -> Option<NodeName> {
            self.core.home_node_for(key.as_ref())
        }

        /// Every node's health and pool, in the order the nodes were added
        /// (empty once the pool is closed).
        pub fn status(&self) -> Vec<NodeStatus> {
            self.core.status()
        }

        /// A receiver of every node's state changes from now on: boxed, probe
        /// failed, returned, warmed up, added, removed. Sending never waits on
        /// a receiver; one that falls more than 1,024 events behind loses the
        /// oldest (`RecvError::Lagged`), never slows the pool.
        pub fn events(&self) -> tokio::sync::broadcast::Receiver<NodeEvent> {
            self.core.pool_wide.events.subscribe()
        }

        /// The names of all nodes, in the order they were added.
        pub fn nodes(&self) -> Vec<String> {
            self.core.nodes()
        }

        /// Closes the pool for every handle: later calls return
        /// [`Error::Closed`], the prober stops, idle connections are closed
        /// now and checked-out ones when they are dropped. Dropping the last
        /// handle does the same.
        pub fn close(&self) {
            self.core.close();
        }

        /// Whether [`close`](Self::close) was called.
        pub fn is_closed(&self) -> bool {
            self.core.is_closed()
        }

        /// Removes the node named `name` while the pool serves: its keys go to
        /// their next node at once, checkouts already under way finish, and its
        /// connections close as they come back. Errors if there is no such node,
        /// or if it is the last one, or the last that holds keys (gutter nodes
        /// hold none of their own). The pool remembers the name: adding it back
        /// ([`add_node`](ShardedPool::add_node)) needs an empty server. The
        /// name of a node drained with moves in doubt gives them up.
        pub fn remove_node(&self, name: &str) -> Result<(), Error> {
            self.core.remove(name)
        }

        /// The longest wait for a connection from a busy node.
        pub fn checkout_timeout(&self) -> std::time::Duration {
            self.core.settings.checkout_timeout
        }
    };
}
pub(crate) use pool_methods;
