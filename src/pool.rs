//! [`ShardedPool`]: routing plus failover over the nodes' pools.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::builder::{Builder, Failover, Settings};
use crate::connection::Connection;
use crate::error::Error;
use crate::health::FailureKind;
use crate::manager::NodeManager;
use crate::node::{CheckoutError, Node, PoolShared};
use crate::reaper;
use crate::redis_manager::RedisManager;
use crate::route::{self, Router};
use crate::shared::SharedConnection;

/// One pool in front of several Redis nodes.
///
/// Each key goes to one node by rendezvous hashing of the node names; each
/// node has its own bb8 pool. A node that fails is put in a penalty box and
/// its keys go to the next node in their ranking until a background probe
/// lets it back in. Cloning is cheap (an `Arc`); keep one in your app state.
///
/// Generic over the connection manager: the default [`RedisManager`] is
/// built from URLs; a `bb8_redis::RedisConnectionManager` or your own
/// manager can be sharded with [`Builder::manager`].
pub struct ShardedPool<M: NodeManager = RedisManager> {
    pub(crate) inner: Arc<Inner<M>>,
}

pub(crate) struct Inner<M: NodeManager> {
    /// The nodes and their router. Swapped whole (to empty on `close`), so
    /// routing reads it without a lock.
    pub(crate) table: ArcSwap<Table<M>>,
    pub(crate) shared: Arc<PoolShared>,
    closed: AtomicBool,
    next_any: AtomicUsize,
    /// Serialises `add_node` and `remove_node`; readers never take it.
    pub(crate) membership: std::sync::Mutex<()>,
    pub(crate) settings: Settings,
}

/// The nodes of a pool and the router over their names, in the same order.
pub(crate) struct Table<M: NodeManager> {
    pub(crate) router: Router,
    pub(crate) nodes: Vec<Arc<Node<M>>>,
}

impl<M: NodeManager> Table<M> {
    pub(crate) fn new(nodes: Vec<Arc<Node<M>>>) -> Self {
        let router = Router::new(nodes.iter().map(|n| (&*n.health.name, n.weight)));
        Table { router, nodes }
    }

    pub(crate) fn empty() -> Self {
        Table {
            router: Router::new(std::iter::empty()),
            nodes: Vec::new(),
        }
    }

    /// Index of the node called `name`.
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| &*n.health.name == name)
    }

    #[inline]
    pub(crate) fn is_up(&self, index: usize) -> bool {
        self.nodes[index].health.is_up()
    }
}

impl<M: NodeManager> Drop for Inner<M> {
    fn drop(&mut self) {
        // The background task holds only a `Weak`; wake it so it sees the
        // pool is gone now rather than at its next timer.
        self.shared.wake.notify_one();
    }
}

impl<M: NodeManager> Clone for ShardedPool<M> {
    fn clone(&self) -> Self {
        ShardedPool {
            inner: self.inner.clone(),
        }
    }
}

impl<M: NodeManager> fmt::Debug for ShardedPool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedPool")
            .field("nodes", &self.inner.table.load().nodes)
            .finish_non_exhaustive()
    }
}

/// One node's health and pool, as reported by [`ShardedPool::status`].
#[derive(Debug, Clone, PartialEq)]
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
    pub boxed_for: Option<FailureKind>,
    /// Probes that failed since the node was boxed.
    pub failed_probes: u32,
    /// Length of the current stay in the box: `penalty_min_wait *
    /// penalty_multiplier^failed_probes`, capped and jittered.
    pub penalty_wait: Option<Duration>,
    /// Time left before the next probe, while boxed.
    pub penalty_remaining: Option<Duration>,
    /// While boxed: the error that boxed the node, or that its latest probe
    /// saw (e.g. a refused connection, a certificate the client does not
    /// trust, a rejected password). Never contains credentials.
    pub last_error: Option<String>,
    /// Connections the node's pool holds.
    pub connections: u32,
    /// Idle connections in the node's pool.
    pub idle_connections: u32,
}

/// JSON-friendly: durations as milliseconds (`penalty_wait_ms`,
/// `penalty_remaining_ms`), the failure kind as its label.
#[cfg(feature = "serde")]
impl serde::Serialize for NodeStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let millis = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        let mut s = serializer.serialize_struct("NodeStatus", 11)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("up", &self.up)?;
        s.serialize_field("weight", &self.weight)?;
        s.serialize_field("consecutive_timeouts", &self.consecutive_timeouts)?;
        s.serialize_field("boxed_for", &self.boxed_for.map(FailureKind::as_str))?;
        s.serialize_field("failed_probes", &self.failed_probes)?;
        s.serialize_field("penalty_wait_ms", &millis(self.penalty_wait))?;
        s.serialize_field("penalty_remaining_ms", &millis(self.penalty_remaining))?;
        s.serialize_field("last_error", &self.last_error)?;
        s.serialize_field("connections", &self.connections)?;
        s.serialize_field("idle_connections", &self.idle_connections)?;
        s.end()
    }
}

impl ShardedPool<RedisManager> {
    /// A builder for a pool of Redis nodes given by URL.
    ///
    /// For other connection managers use [`Builder::new`] with
    /// [`Builder::manager`].
    pub fn builder() -> Builder<RedisManager> {
        Builder::new()
    }
}

impl<M> ShardedPool<M>
where
    M: NodeManager,
{
    pub(crate) async fn start(specs: Vec<(String, f64, Arc<M>)>, settings: Settings) -> Self {
        crate::metrics::describe();
        let shared = Arc::new(PoolShared {
            wake: Notify::new(),
            down: AtomicUsize::new(0),
            max_down: AtomicUsize::new(settings.max_boxed(specs.len())),
        });
        let nodes: Vec<Arc<Node<M>>> = specs
            .into_iter()
            .map(|(name, weight, manager)| {
                Arc::new(Node::new(&name, weight, manager, &settings, shared.clone()))
            })
            .collect();
        let pool = ShardedPool {
            inner: Arc::new(Inner {
                table: ArcSwap::from_pointee(Table::new(nodes.clone())),
                shared,
                closed: AtomicBool::new(false),
                next_any: AtomicUsize::new(0),
                membership: std::sync::Mutex::new(()),
                settings,
            }),
        };
        if pool.inner.settings.probe_at_build {
            probe_new_nodes(&nodes).await;
        }
        reaper::spawn(&pool.inner);
        pool
    }

    /// A connection to the node that owns `key`, or to the next healthy node
    /// in the key's ranking if that one is in the penalty box.
    ///
    /// Never waits on a dead node: a checkout that is waiting when its node
    /// is boxed moves on to the next node at once. Errors:
    /// [`Error::NoHealthyNodes`] when every node is boxed;
    /// [`Error::Timeout`] when the chosen node's pool stayed busy for the
    /// whole checkout timeout; [`Error::NodeDown`] under
    /// [`Failover::FailFast`] when the key's node is boxed;
    /// [`Error::NodeFailed`] when a node failed but the cascade guard kept
    /// it in rotation; [`Error::Closed`] after [`close`](Self::close).
    ///
    /// Keys may be `&str`, `String`, `&[u8]` or anything `AsRef<[u8]>`;
    /// Redis Cluster hash tags are honoured (`{user1}.a` and `{user1}.b` go
    /// to the same node).
    pub async fn get<K: AsRef<[u8]>>(&self, key: K) -> Result<Connection<M>, Error> {
        self.inner.route_key::<Pooled>(key.as_ref()).await
    }

    /// A connection to any healthy node, taking them in turn: for key-less
    /// commands and queue consumers.
    pub async fn get_any(&self) -> Result<Connection<M>, Error> {
        self.inner.route_any::<Pooled>().await
    }

    /// The name of the node `get(key)` would use now, or `None` if every
    /// node is boxed (or the pool is closed). Does not touch the network.
    pub fn node_for<K: AsRef<[u8]>>(&self, key: K) -> Option<String> {
        let table = self.inner.table.load();
        let pick = match self.inner.settings.failover {
            Failover::Reroute => table.router.pick(key.as_ref(), |i| table.is_up(i)),
            Failover::FailFast => table.router.home(key.as_ref()).filter(|&i| table.is_up(i)),
        };
        pick.map(|i| table.router.name(i).to_owned())
    }

    /// The key's home node: where it goes when every node is healthy
    /// (`None` only once the pool is closed).
    pub fn home_node_for<K: AsRef<[u8]>>(&self, key: K) -> Option<String> {
        let table = self.inner.table.load();
        let home = table.router.home(key.as_ref());
        home.map(|i| table.router.name(i).to_owned())
    }

    /// Every node's health and pool, in the order the nodes were added
    /// (empty once the pool is closed).
    pub fn status(&self) -> Vec<NodeStatus> {
        let now = Instant::now();
        self.inner
            .table
            .load()
            .nodes
            .iter()
            .map(|node| node.status(now))
            .collect()
    }

    /// The names of all nodes, in the order they were added.
    pub fn nodes(&self) -> Vec<String> {
        let table = self.inner.table.load();
        table
            .nodes
            .iter()
            .map(|n| n.health.name.to_string())
            .collect()
    }

    /// Closes the pool for every handle: later calls to `get` and `get_any`
    /// return [`Error::Closed`], the background task stops, idle
    /// connections are closed now and checked-out ones when they are
    /// dropped. Dropping the last handle does the same.
    pub fn close(&self) {
        let _writer = self.inner.lock_membership();
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let table = self.inner.table.swap(Arc::new(Table::empty()));
        for node in &table.nodes {
            node.retire();
        }
        self.inner.shared.wake.notify_one();
        tracing::info!(nodes = table.nodes.len(), "pool closed");
        // Dropping `table` drops each node's bb8 pool, and with it the idle
        // connections, once in-flight checkouts are done with it.
    }

    /// The longest wait for a connection from a busy node.
    pub fn checkout_timeout(&self) -> Duration {
        self.inner.settings.checkout_timeout
    }

    #[cfg(test)]
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner<M>> {
        Arc::downgrade(&self.inner)
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

impl<M> ShardedPool<M>
where
    M: NodeManager,
    M::Connection: Clone,
{
    /// The fast path: a clone of the shared multiplexed connection of the
    /// node that owns `key`, routed exactly like [`get`](Self::get), with
    /// the same failover and the same errors, but no checkout: many tasks
    /// pipeline their commands on one socket per node. See
    /// [`SharedConnection`] for which commands it suits.
    pub async fn get_shared<K: AsRef<[u8]>>(&self, key: K) -> Result<SharedConnection<M>, Error> {
        self.inner.route_key::<Cloned>(key.as_ref()).await
    }
}

/// How a caller takes a connection from one node.
trait Take<M: NodeManager> {
    type Conn;
    fn take(
        node: &Node<M>,
        started: Instant,
        deadline: Instant,
    ) -> impl Future<Output = Result<Self::Conn, CheckoutError>> + Send;
}

/// Checked out of the node's bb8 pool.
struct Pooled;

impl<M: NodeManager> Take<M> for Pooled {
    type Conn = Connection<M>;
    async fn take(
        node: &Node<M>,
        started: Instant,
        deadline: Instant,
    ) -> Result<Connection<M>, CheckoutError> {
        node.checkout(started, deadline).await.map(Connection::new)
    }
}

/// A clone of the node's shared connection.
struct Cloned;

impl<M: NodeManager> Take<M> for Cloned
where
    M::Connection: Clone,
{
    type Conn = SharedConnection<M>;
    fn take(
        node: &Node<M>,
        started: Instant,
        deadline: Instant,
    ) -> impl Future<Output = Result<SharedConnection<M>, CheckoutError>> + Send {
        node.shared(started, deadline)
    }
}

impl<M> Inner<M>
where
    M: NodeManager,
{
    /// The key's node, or the next healthy one in its ranking.
    async fn route_key<T: Take<M>>(&self, key: &[u8]) -> Result<T::Conn, Error> {
        self.check_open()?;
        let (started, deadline) = self.deadline();
        let hash = route::key_hash(key);
        let table = self.table.load_full(); // held across the checkout's awaits
        if self.settings.failover == Failover::FailFast {
            let home = table.router.home_hashed(hash).ok_or(Error::Closed)?;
            return T::take(&table.nodes[home], started, deadline)
                .await
                .map_err(|e| e.into_error(table.router.name(home)));
        }
        // Nodes that were boxed while this call tried them; allocated only
        // on failover.
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let picked = table
                .router
                .pick_hashed(hash, |i| table.is_up(i) && !tried.contains(&i));
            let Some(index) = picked else {
                return Err(Error::NoHealthyNodes);
            };
            match T::take(&table.nodes[index], started, deadline).await {
                Err(CheckoutError::Boxed) => tried.push(index),
                Ok(conn) => {
                    if self.shared.down.load(Ordering::Relaxed) > 0 || !tried.is_empty() {
                        count_failover(&table, hash, index);
                    }
                    return Ok(conn);
                }
                Err(other) => return Err(other.into_error(table.router.name(index))),
            }
        }
    }

    /// Any healthy node, in turn.
    async fn route_any<T: Take<M>>(&self) -> Result<T::Conn, Error> {
        self.check_open()?;
        let (started, deadline) = self.deadline();
        let table = self.table.load_full();
        let n = table.nodes.len();
        let start = self.next_any.fetch_add(1, Ordering::Relaxed);
        for offset in 0..n {
            let index = start.wrapping_add(offset) % n;
            if !table.is_up(index) {
                continue;
            }
            match T::take(&table.nodes[index], started, deadline).await {
                Err(CheckoutError::Boxed) => continue,
                result => return result.map_err(|e| e.into_error(table.router.name(index))),
            }
        }
        Err(Error::NoHealthyNodes)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn lock_membership(&self) -> std::sync::MutexGuard<'_, ()> {
        self.membership.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// When a `get` that starts now began, and when it must have its
    /// connection.
    pub(crate) fn deadline(&self) -> (Instant, Instant) {
        let now = Instant::now();
        (now, now + self.settings.checkout_timeout)
    }
}

/// Probes new nodes in parallel; those that fail start in the box.
pub(crate) async fn probe_new_nodes<M: NodeManager>(nodes: &[Arc<Node<M>>]) {
    let mut probes = JoinSet::new();
    for node in nodes {
        let node = node.clone();
        probes.spawn(async move { (node.probe().await, node) });
    }
    while let Some(joined) = probes.join_next().await {
        // A probe task only panics if the user's manager panics; that
        // node then stays up and its first checkout will tell.
        if let Ok((Err((kind, detail)), node)) = joined {
            node.health.start_boxed(kind, &detail);
        }
    }
}

/// Counts a failover if `served` is not the key's home node.
fn count_failover<M: NodeManager>(table: &Table<M>, hash: u64, served: usize) {
    if let Some(home) = table.router.home_hashed(hash)
        && home != served
    {
        table.nodes[home].health.metrics.failovers.increment(1);
    }
}
