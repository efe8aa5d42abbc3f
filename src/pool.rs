//! [`ShardedPool`]: routing plus failover over the nodes' pools, membership,
//! and the prober task.
//!
//! The engine, [`Core`], knows nothing of how a node keeps its connections:
//! both flavours run on it, so a key is routed, failed over and probed by
//! the same code whichever flavour serves it.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::future::{BoxFuture, join_all};
use tokio::sync::broadcast;

use crate::connection::{Connection, SharedConnection};
use crate::error::Error;
use crate::health::BoxGuard;
use crate::manager::{RedisManager, parse_url};
use crate::node::{
    Bb8, CheckoutError, Fleet, Node, NodeEvent, NodeManager, NodeStatus, Store, bb8_pool,
};
use crate::pubsub::{Hub, Placement, Subscription};
use crate::route::{self, Cursor, Miss, NodeName, Router};
use crate::settings::{Failover, Settings, check_node};

/// How often the prober samples the connection gauges.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// The nodes of a pool and the router over their names, in the same order.
pub(crate) struct Table<M: NodeManager, S> {
    pub(crate) router: Router,
    pub(crate) nodes: Vec<Arc<Node<M, S>>>,
}

impl<M: NodeManager, S: Store<M>> Table<M, S> {
    fn new(nodes: Vec<Arc<Node<M, S>>>) -> Self {
        let router = Router::new(nodes.iter().map(|n| (&**n.name(), n.weight)));
        Table { router, nodes }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| **n.name() == *name)
    }

    fn node(&self, name: &str) -> Option<&Arc<Node<M, S>>> {
        self.position(name).map(|index| &self.nodes[index])
    }

    #[inline]
    pub(crate) fn is_up(&self, index: usize) -> bool {
        self.nodes[index].cell.is_up()
    }

    /// Which nodes may serve the key of `hash`: those up and, under
    /// [`Failover::Reroute`], past the key's turn in a warm-up. What every
    /// [`Cursor`] of the pool is given.
    #[inline]
    pub(crate) fn routable(&self, hash: u64, failover: Failover) -> impl Fn(usize) -> bool + '_ {
        let warm = failover == Failover::Reroute;
        move |index| self.nodes[index].cell.routable(hash, warm)
    }

    /// What the caller is told when a key's cursor found no node.
    pub(crate) fn miss(&self, miss: Miss) -> Error {
        match miss {
            Miss::Empty => Error::Closed,
            Miss::Home(home) => Error::NodeDown { node: self.router.name(home).to_string() },
            Miss::None => Error::NoHealthyNodes,
        }
    }

    /// Counts a failover if `served` is not the key's home node.
    pub(crate) fn served(&self, cursor: &Cursor, served: usize) {
        if let Some(home) = cursor.home().filter(|&home| home != served) {
            self.nodes[home].cell.metrics.failovers.increment(1);
        }
    }
}

/// How a caller takes a connection from one node.
pub(crate) trait Take<M: NodeManager, S> {
    type Conn;
    /// A connection from `node`; `home` says whether it is the key's home.
    fn take(
        node: &Node<M, S>,
        started: Instant,
        deadline: Instant,
        home: bool,
    ) -> impl Future<Output = Result<Self::Conn, CheckoutError>> + Send;
}

/// The engine of a pool, whichever the flavour.
pub(crate) struct Core<M: NodeManager, S> {
    /// Swapped whole (to empty on `close`), so routing reads it without a
    /// lock.
    pub(crate) table: ArcSwap<Table<M, S>>,
    pub(crate) fleet: Arc<Fleet>,
    closed: AtomicBool,
    next_any: AtomicUsize,
    /// Serialises membership changes and `close`; readers never take it.
    membership: Mutex<()>,
    pub(crate) settings: Settings,
    /// The pool's pub/sub, made by the first subscription.
    hub: std::sync::OnceLock<Arc<Hub>>,
}

impl<M: NodeManager, S> Drop for Core<M, S> {
    fn drop(&mut self) {
        // The prober holds only a `Weak`: wake it so it sees the pool is
        // gone now rather than at its next timer.
        self.fleet.wake.notify_one();
    }
}

impl<M: NodeManager, S: Store<M>> Core<M, S> {
    /// A fleet for a pool of `nodes` nodes.
    pub(crate) fn fleet(settings: &Settings, nodes: usize) -> Arc<Fleet> {
        crate::metrics::describe();
        Arc::new(Fleet::new(BoxGuard::new(settings.max_boxed(nodes))))
    }

    /// The engine over `nodes`, probing them first if the settings say so
    /// (those that fail start in the box).
    pub(crate) async fn start(
        nodes: Vec<Arc<Node<M, S>>>,
        fleet: Arc<Fleet>,
        settings: Settings,
    ) -> Self {
        if settings.probe_at_build {
            probe_new(&nodes).await;
        }
        Core {
            table: ArcSwap::from_pointee(Table::new(nodes)),
            fleet,
            closed: AtomicBool::new(false),
            next_any: AtomicUsize::new(0),
            membership: Mutex::new(()),
            settings,
            hub: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether as many nodes are up as the settings require.
    pub(crate) fn enough_healthy(&self) -> Result<(), Error> {
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

    fn check_open(&self) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn lock_membership(&self) -> MutexGuard<'_, ()> {
        self.membership.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When a checkout that starts now began, and when it must be done.
    pub(crate) fn deadline(&self) -> (Instant, Instant) {
        let now = Instant::now();
        (now, now + self.settings.checkout_timeout)
    }

    /// The table, if the pool is open; held across a checkout's awaits.
    pub(crate) fn open_table(&self) -> Result<Arc<Table<M, S>>, Error> {
        self.check_open()?;
        Ok(self.table.load_full())
    }

    /// The one routing loop: the key's node by its [`Cursor`], and on to the
    /// next as each is found boxed while this call tries it.
    pub(crate) async fn route<T: Take<M, S>>(&self, key: &[u8]) -> Result<T::Conn, Error> {
        let table = self.open_table()?;
        let (started, deadline) = self.deadline();
        let (hash, failover) = (route::key_hash(key), self.settings.failover);
        let mut cursor = Cursor::new(hash, failover);
        loop {
            let index = cursor
                .next(&table.router, table.routable(hash, failover))
                .map_err(|miss| table.miss(miss))?;
            let home = cursor.home() == Some(index);
            match T::take(&table.nodes[index], started, deadline, home).await {
                Ok(conn) => {
                    table.served(&cursor, index);
                    return Ok(conn);
                }
                Err(CheckoutError::Boxed) => cursor.skip(index),
                Err(e) => return Err(e.into_error(table.router.name(index))),
            }
        }
    }

    /// Any healthy node, taking them in turn.
    pub(crate) async fn route_any<T: Take<M, S>>(&self) -> Result<T::Conn, Error> {
        let table = self.open_table()?;
        let (started, deadline) = self.deadline();
        let n = table.nodes.len();
        let start = self.next_any.fetch_add(1, Ordering::Relaxed);
        for index in (0..n).map(|offset| start.wrapping_add(offset) % n) {
            if !table.is_up(index) {
                continue;
            }
            match T::take(&table.nodes[index], started, deadline, true).await {
                Err(CheckoutError::Boxed) => continue,
                result => return result.map_err(|e| e.into_error(table.router.name(index))),
            }
        }
        Err(Error::NoHealthyNodes)
    }

    /// The node a key's `get` would use now.
    pub(crate) fn node_for(&self, key: &[u8]) -> Option<NodeName> {
        let table = self.table.load();
        let (hash, failover) = (route::key_hash(key), self.settings.failover);
        let index =
            Cursor::new(hash, failover).next(&table.router, table.routable(hash, failover)).ok()?;
        Some(table.router.node_name(index).clone())
    }

    /// The key's home node.
    pub(crate) fn home_node_for(&self, key: &[u8]) -> Option<NodeName> {
        let table = self.table.load();
        let home = table.router.home(key)?;
        Some(table.router.node_name(home).clone())
    }

    pub(crate) fn status(&self) -> Vec<NodeStatus> {
        let now = Instant::now();
        let table = self.table.load();
        table.nodes.iter().map(|node| node.status(now)).collect()
    }

    pub(crate) fn nodes(&self) -> Vec<String> {
        let table = self.table.load();
        table.nodes.iter().map(|n| n.name().to_string()).collect()
    }

    pub(crate) fn close(&self) {
        let _writer = self.lock_membership();
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let table = self.table.swap(Arc::new(Table::new(Vec::new())));
        for node in &table.nodes {
            node.cell.retire();
        }
        self.fleet.wake.notify_one();
        tracing::info!(nodes = table.nodes.len(), "pool closed");
        // Dropping `table` drops each node's pool, and with it the idle
        // connections, once in-flight checkouts are done with it.
    }

    /// Adds `node` unless its name is taken; probes it first if the
    /// settings say so.
    async fn add(&self, node: Node<M, S>) -> Result<(), Error> {
        let name = node.name().clone();
        let taken = || {
            Error::config(
                format!("node name `{name}`"),
                "a node of that name is already in the pool",
            )
        };
        if self.open_table()?.position(&name).is_some() {
            return Err(taken());
        }
        let node = Arc::new(node);
        if self.settings.probe_at_build {
            probe_new(std::slice::from_ref(&node)).await;
        }
        let _writer = self.lock_membership();
        let current = self.open_table().inspect_err(|_| node.cell.retire())?;
        if current.position(&name).is_some() {
            node.cell.retire();
            return Err(taken());
        }
        node.cell.start_warmup();
        let mut nodes = current.nodes.clone();
        nodes.push(node);
        self.install(nodes);
        self.fleet.send(NodeEvent::Added { node: name.clone() });
        tracing::info!(node = %name, "node added");
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), Error> {
        let _writer = self.lock_membership();
        let current = self.open_table()?;
        let reason = match current.position(name) {
            None => "no node of that name is in the pool",
            Some(_) if current.nodes.len() == 1 => {
                "the last node of a pool cannot be removed (close the pool instead)"
            }
            Some(index) => {
                let mut nodes = current.nodes.clone();
                let removed = nodes.remove(index);
                self.install(nodes);
                removed.cell.retire();
                self.fleet.send(NodeEvent::Removed { node: removed.name().clone() });
                tracing::info!(node = name, "node removed");
                return Ok(());
            }
        };
        Err(Error::config(format!("node name `{name}`"), reason))
    }

    /// Publishes a new node list; the caller holds the membership lock.
    fn install(&self, nodes: Vec<Arc<Node<M, S>>>) {
        self.fleet.guard.set_cap(self.settings.max_boxed(nodes.len()));
        self.table.store(Arc::new(Table::new(nodes)));
        self.fleet.wake.notify_one();
    }
}

/// Probes new nodes together; those that fail start in the box (one
/// timeout is enough there).
async fn probe_new<M: NodeManager, S: Store<M>>(nodes: &[Arc<Node<M, S>>]) {
    join_all(nodes.iter().map(|node| async move {
        let epoch = node.cell.epoch();
        if let Err((kind, detail)) = node.probe().await {
            node.cell.report((kind, &detail), epoch, true);
        }
    }))
    .await;
}

/// The prober: probes boxed nodes when their wait runs out and samples the
/// connection gauges. It holds only a `Weak` between rounds, so it stops
/// once the pool is closed or its last handle dropped (which wakes it).
pub(crate) async fn prober<M, S>(core: Weak<Core<M, S>>, fleet: Arc<Fleet>)
where
    M: NodeManager,
    S: Store<M>,
{
    let mut next_gauges = Instant::now();
    loop {
        let deadline = {
            let Some(core) = core.upgrade().filter(|c| !c.is_closed()) else {
                tracing::debug!("pool dropped or closed; the prober stops");
                return;
            };
            let table = core.table.load();
            let now = Instant::now();
            if now >= next_gauges {
                for node in &table.nodes {
                    node.cell.metrics.sample(&node.store.stats());
                }
                next_gauges = now + GAUGE_INTERVAL;
            }
            let mut deadline = next_gauges;
            for node in &table.nodes {
                if !node.cell.is_up() {
                    node.release();
                }
                match node.cell.warm_until() {
                    Some(until) if until <= now => node.cell.end_warmup(),
                    Some(until) => deadline = deadline.min(until),
                    None => {}
                }
                match node.cell.probe_at() {
                    Some(at) if at > now => deadline = deadline.min(at),
                    Some(_) if node.cell.start_probe() => {
                        // The task holds the node, not the pool, and ends
                        // within the probe timeout.
                        let node = node.clone();
                        tokio::spawn(async move { node.cell.finish_probe(node.probe().await) });
                    }
                    _ => {}
                }
            }
            deadline
            // `core` is dropped here: never hold it across the wait.
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {}
            () = fleet.wake.notified() => {}
        }
    }
}

/// One pool in front of several Redis nodes.
///
/// Each key goes to one node by rendezvous hashing of the node names; each
/// node has its own bb8 pool. A node that fails is put in a penalty box and
/// its keys go to the next node in their ranking until a background probe
/// lets it back in. Cloning is cheap (an `Arc`); keep one in your app state.
///
/// Generic over the connection manager: the default [`RedisManager`] is
/// built from URLs; a `bb8_redis::RedisConnectionManager` or your own
/// manager can be sharded with [`Builder::manager`](crate::Builder::manager).
pub struct ShardedPool<M: NodeManager = RedisManager> {
    pub(crate) core: Arc<Core<M, Bb8<M>>>,
}

impl<M: NodeManager> Clone for ShardedPool<M> {
    fn clone(&self) -> Self {
        ShardedPool { core: self.core.clone() }
    }
}

impl<M: NodeManager> fmt::Debug for ShardedPool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedPool")
            .field("nodes", &self.core.table.load().nodes)
            .finish_non_exhaustive()
    }
}

/// Checked out of the node's bb8 pool.
struct Pooled;

impl<M: NodeManager> Take<M, Bb8<M>> for Pooled {
    type Conn = Connection<M>;
    async fn take(
        node: &Node<M, Bb8<M>>,
        started: Instant,
        deadline: Instant,
        home: bool,
    ) -> Result<Connection<M>, CheckoutError> {
        node.checkout(started, deadline).await.map(|conn| Connection::new(conn, home))
    }
}

/// A clone of the node's multiplexed connection.
struct Multiplexed;

impl<M: NodeManager> Take<M, Bb8<M>> for Multiplexed
where
    M::Connection: Clone,
{
    type Conn = SharedConnection<M>;
    async fn take(
        node: &Node<M, Bb8<M>>,
        started: Instant,
        deadline: Instant,
        home: bool,
    ) -> Result<SharedConnection<M>, CheckoutError> {
        node.multiplexed(started, deadline).await.map(|mux| SharedConnection::new(mux, home))
    }
}

impl<M: NodeManager> ShardedPool<M> {
    /// The pool over `nodes`, with its prober started.
    pub(crate) async fn start(specs: Vec<(String, f64, M)>, settings: Settings) -> Self {
        let fleet = Core::<M, Bb8<M>>::fleet(&settings, specs.len());
        let nodes = specs
            .into_iter()
            .map(|(name, weight, manager)| {
                Arc::new(new_node(&name, weight, manager, &settings, &fleet))
            })
            .collect();
        let core = Arc::new(Core::start(nodes, fleet.clone(), settings).await);
        tokio::spawn(prober(Arc::downgrade(&core), fleet));
        ShardedPool { core }
    }

    /// A connection to the node that owns `key`, or to the next healthy node
    /// in the key's ranking if that one is in the penalty box.
    ///
    /// Never waits on a dead node: a checkout that is waiting when its node
    /// is boxed moves on to the next node at once. Errors:
    /// [`Error::NoHealthyNodes`] when every node is boxed;
    /// [`Error::Timeout`] when the chosen node's pool stayed busy for the
    /// whole checkout timeout; [`Error::NodeDown`] under
    /// [`Failover::FailFast`](crate::Failover::FailFast) when the key's node
    /// is boxed; [`Error::NodeFailed`] when a node failed but the cascade
    /// guard kept it in rotation; [`Error::Closed`] after
    /// [`close`](Self::close).
    ///
    /// Keys may be `&str`, `String`, `&[u8]` or anything `AsRef<[u8]>`;
    /// Redis Cluster hash tags are honoured (`{user1}.a` and `{user1}.b` go
    /// to the same node).
    pub async fn get<K: AsRef<[u8]>>(&self, key: K) -> Result<Connection<M>, Error> {
        self.core.route::<Pooled>(key.as_ref()).await
    }

    /// A connection to any healthy node, taking them in turn: for key-less
    /// commands and queue consumers.
    pub async fn get_any(&self) -> Result<Connection<M>, Error> {
        self.core.route_any::<Pooled>().await
    }

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
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.core.fleet.events.subscribe()
    }

    /// The names of all nodes, in the order they were added.
    pub fn nodes(&self) -> Vec<String> {
        self.core.nodes()
    }

    /// Closes the pool for every handle: later calls return
    /// [`Error::Closed`], the prober stops, idle connections are closed now
    /// and checked-out ones when they are dropped. Dropping the last handle
    /// does the same.
    pub fn close(&self) {
        self.core.close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// The longest wait for a connection from a busy node.
    pub fn checkout_timeout(&self) -> Duration {
        self.core.settings.checkout_timeout
    }

    /// Adds a node served by `manager` while the pool serves; see
    /// [`add_node`](ShardedPool::add_node).
    pub async fn add_manager(&self, name: &str, manager: M, weight: f64) -> Result<(), Error> {
        check_node(name, weight)?;
        let settings = &self.core.settings;
        let node = new_node(name, weight, manager, settings, &self.core.fleet);
        self.core.add(node).await
    }

    /// Removes the node named `name` while the pool serves: its keys go to
    /// their next node at once, checkouts already under way finish, and its
    /// connections close as they come back. Errors if there is no such node,
    /// or if it is the last one.
    pub fn remove_node(&self, name: &str) -> Result<(), Error> {
        self.core.remove(name)
    }
}

/// A node of the async flavour, with its bb8 pool.
fn new_node<M: NodeManager>(
    name: &str,
    weight: f64,
    manager: M,
    settings: &Settings,
    fleet: &Arc<Fleet>,
) -> Node<M, Bb8<M>> {
    Node::new(name, weight, Arc::new(manager), settings, fleet.clone(), |tracked| {
        bb8_pool(settings, tracked)
    })
}

impl<M: NodeManager> ShardedPool<M>
where
    M::Connection: Clone,
{
    /// The fast path: a clone of the multiplexed connection of the node
    /// that owns `key`, routed exactly like [`get`](Self::get), with the
    /// same failover and the same errors, but no checkout: many tasks
    /// pipeline their commands on one socket per node. See
    /// [`SharedConnection`] for which commands it suits.
    pub async fn get_shared<K: AsRef<[u8]>>(&self, key: K) -> Result<SharedConnection<M>, Error> {
        self.core.route::<Multiplexed>(key.as_ref()).await
    }
}

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
        let manager = RedisManager::from_settings(parse_url(url)?, &self.core.settings)?;
        self.add_manager(name, manager, weight).await
    }

    /// `PUBLISH` on the node `channel` routes to, exactly as `get` routes a
    /// key (hash tags included), so it meets the channel's subscribers;
    /// returns how many received it there.
    pub async fn publish<C, V>(&self, channel: C, message: V) -> Result<i64, Error>
    where
        C: AsRef<[u8]>,
        V: redis::ToRedisArgs + Send + Sync,
    {
        let mut conn = self.get(channel.as_ref()).await?;
        let cmd = redis::cmd("PUBLISH").arg(channel.as_ref()).arg(message).clone();
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// The messages of `channel`, subscribed on the node it routes to (as
    /// [`publish`](Self::publish) and `get` route it), over that node's one
    /// subscriber connection. The subscription follows the channel: to its
    /// stand-in while its node is boxed, home when it returns (by the end
    /// of its warm-up). Messages published while it moves can be lost.
    pub async fn subscribe<C: AsRef<[u8]>>(&self, channel: C) -> Result<Subscription, Error> {
        Ok(self.hub()?.subscribe(channel.as_ref(), false).await)
    }

    /// The messages of every channel matching `pattern`, subscribed on the
    /// node the pattern's own name routes to: give the pattern and its
    /// channels one hash tag (`{news}.*` and `{news}.sport`), or it only
    /// sees the channels that happen to live on that node.
    pub async fn psubscribe<P: AsRef<[u8]>>(&self, pattern: P) -> Result<Subscription, Error> {
        Ok(self.hub()?.subscribe(pattern.as_ref(), true).await)
    }

    /// The pool's pub/sub hub, started with a task that moves its
    /// subscriptions on every change of the nodes.
    fn hub(&self) -> Result<&Arc<Hub>, Error> {
        self.core.open_table()?;
        Ok(self.core.hub.get_or_init(|| {
            let pool: Weak<dyn Placement> = Arc::downgrade(&self.core) as Weak<_>;
            let hub = Hub::new(pool);
            let (mut events, weak) = (self.core.fleet.events.subscribe(), Arc::downgrade(&hub));
            tokio::spawn(async move {
                loop {
                    let Some(hub) = weak.upgrade() else { return };
                    tokio::select! {
                        event = events.recv() => {
                            if let Err(broadcast::error::RecvError::Closed) = event {
                                return;
                            }
                        }
                        () = hub.relink.notified() => {}
                    }
                    hub.rebalance().await;
                }
            });
            hub
        }))
    }
}

impl Placement for Core<RedisManager, Bb8<RedisManager>> {
    fn place(&self, name: &[u8]) -> Option<NodeName> {
        self.node_for(name)
    }

    fn connect<'a>(&'a self, node: &'a NodeName) -> BoxFuture<'a, Option<redis::aio::PubSub>> {
        Box::pin(async move {
            let table = self.table.load_full();
            let node = table.node(node)?;
            let epoch = node.cell.epoch();
            node.cell.connected(epoch, node.manager.pubsub().await).ok()
        })
    }

    fn count(&self, node: &NodeName, topics: usize) {
        if let Some(node) = self.table.load().node(node) {
            node.cell.metrics.subscriptions.set(topics as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ShardedPool;
    use std::time::Duration;

    /// A pool whose only node is unreachable keeps its prober busy; dropping
    /// the pool must still end the prober, and `close` too.
    #[tokio::test]
    async fn the_prober_stops_on_drop_and_on_close() {
        for close in [false, true] {
            // Port 1 on loopback: nothing listens there, connects are refused.
            let pool = ShardedPool::builder()
                .node("redis://127.0.0.1:1")
                .penalty_min_wait(Duration::from_millis(5))
                .penalty_max_wait(Duration::from_millis(20))
                .build()
                .await
                .unwrap();
            assert!(!pool.status()[0].up);
            let core = std::sync::Arc::downgrade(&pool.core);
            let fleet = pool.core.fleet.clone();
            let prober = tokio::spawn(super::prober(core.clone(), fleet));
            let clone = pool.clone();
            if close {
                pool.close();
            } else {
                drop(pool);
                tokio::task::yield_now().await;
                assert!(!prober.is_finished(), "a clone still holds the pool");
                drop(clone);
            }
            tokio::time::timeout(Duration::from_secs(2), prober)
                .await
                .expect("the prober did not stop")
                .unwrap();
        }
    }
}
