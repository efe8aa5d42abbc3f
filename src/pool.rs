//! [`ShardedPool`], the async flavour: the engine with a bb8 pool per node,
//! its checkouts (pooled and shared), and pub/sub.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bb8::PooledConnection;
use tokio::sync::broadcast;

use crate::backend::manager::RedisManager;
use crate::error::{Error, OnNode};
use crate::flavours::{added, endpoint, pool_methods};
use crate::health::event::NodeEvent;
use crate::health::pool_wide::PoolWide;
use crate::node::clock::Clock;
use crate::node::connection::{Connection, SharedConnection};
use crate::node::probe::ProbeCheck;
use crate::node::shared::SharedSocket;
use crate::node::tracked::{NodeManager, Tracked};
use crate::node::{Bb8, CheckoutError, Node, NodeParts, bb8_pool};
use crate::pubsub::{Hub, Subscription};
use crate::route::NodeName;
use crate::runtime::core::{Core, Finished};
use crate::runtime::migrate::Endpoint;
use crate::runtime::prober::prober;
use crate::runtime::status::NodeStatus;
use crate::runtime::step::Take;
use crate::settings::{Settings, check_node};
use crate::stand_in::writes::StandIn;

/// One pool in front of several Redis nodes.
///
/// Each key goes to one node by rendezvous hashing of the node names; each
/// node has its own bb8 pool. A node that fails is put in a penalty box and
/// its keys go to the next node in their ranking until a background probe
/// lets it back in. Cloning is cheap (two `Arc`s: the core, and its
/// pub/sub); keep one in your app state.
///
/// Generic over the connection manager: the default [`RedisManager`] is
/// built from URLs; a `bb8_redis::RedisConnectionManager` or your own
/// manager can be sharded with [`Builder::manager`](crate::Builder::manager).
pub struct ShardedPool<M: NodeManager = RedisManager> {
    pub(crate) core: Arc<Core<M, Bb8<M>>>,
    /// Its pub/sub, made by the first subscription; beside the core, which
    /// it asks where channels go.
    hub: Arc<OnceLock<Arc<Hub>>>,
}

impl<M: NodeManager> Clone for ShardedPool<M> {
    fn clone(&self) -> Self {
        ShardedPool { core: self.core.clone(), hub: self.hub.clone() }
    }
}

impl<M: NodeManager> fmt::Debug for ShardedPool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedPool").field("nodes", &self.core.nodes()).finish_non_exhaustive()
    }
}

/// Checked out of the node's bb8 pool.
pub(crate) struct Pooled;

impl<M: NodeManager> Take<M, Bb8<M>> for Pooled {
    type Raw = PooledConnection<'static, Tracked<M>>;
    type Conn = Connection<M>;
    fn take<'a>(
        node: &'a Node<M, Bb8<M>>,
        clock: &'a Clock,
    ) -> impl Future<Output = Result<Self::Raw, CheckoutError>> + Send + 'a {
        node.checkout(clock)
    }
    fn into_conn(raw: Self::Raw, home: bool, stand_in: Option<Box<StandIn>>) -> Connection<M> {
        Connection::new(raw, home, stand_in)
    }
}

/// A clone of the node's multiplexed connection.
struct Multiplexed;

impl<M: NodeManager> Take<M, Bb8<M>> for Multiplexed
where
    M::Connection: Clone,
{
    type Raw = Arc<SharedSocket<M::Connection>>;
    type Conn = SharedConnection<M>;
    fn take<'a>(
        node: &'a Node<M, Bb8<M>>,
        clock: &'a Clock,
    ) -> impl Future<Output = Result<Self::Raw, CheckoutError>> + Send + 'a {
        node.multiplexed(clock)
    }
    fn into_conn(
        raw: Self::Raw,
        home: bool,
        stand_in: Option<Box<StandIn>>,
    ) -> SharedConnection<M> {
        SharedConnection::new(raw, home, stand_in)
    }
}

/// A node of the async flavour, with its bb8 pool.
fn new_node<M: NodeManager>(
    parts: NodeParts<M>,
    settings: &Settings,
    pool_wide: &Arc<PoolWide>,
    check: Option<ProbeCheck<M::Connection>>,
) -> Node<M, Bb8<M>> {
    Node::new(parts, settings, pool_wide, check, |tracked| bb8_pool(settings, tracked))
}

impl<M: NodeManager> ShardedPool<M> {
    /// The pool over the builder's nodes, with its prober started.
    pub(crate) async fn start(finished: Finished<M>) -> Self {
        let core = Arc::new(Core::start(finished, new_node).await);
        tokio::spawn(prober(Arc::downgrade(&core), core.pool_wide.clone()));
        if let Some(name) = core.settings.fleet.clone() {
            tokio::spawn(crate::fleet::run(Arc::downgrade(&core), name));
        }
        ShardedPool { core, hub: Arc::default() }
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
        self.core.take::<Pooled>(Some(key.as_ref())).await
    }

    /// A connection to any healthy node, taking them in turn: for key-less
    /// commands and queue consumers. Its writes follow the stand-in rules
    /// key by key, as [`fan_out`](Self::fan_out)'s do.
    pub async fn get_any(&self) -> Result<Connection<M>, Error> {
        self.core.take::<Pooled>(None).await
    }

    pool_methods!();

    /// Adds a node served by `manager` while the pool serves; see
    /// [`add_node`](ShardedPool::add_node).
    pub async fn add_manager(&self, name: &str, manager: M, weight: f64) -> Result<(), Error> {
        check_node(name, weight)?;
        self.add(NodeParts::new(name, weight, manager), None).await
    }

    async fn add(&self, parts: NodeParts<M>, at: Option<Endpoint>) -> Result<(), Error> {
        let (settings, pool_wide, check) =
            (&self.core.settings, &self.core.pool_wide, self.core.check.clone());
        let node = new_node(parts, settings, pool_wide, check);
        let name = *node.name();
        self.core.add(node, at).await?;
        crate::runtime::sweep::start(&self.core, name);
        Ok(())
    }
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
        self.core.take::<Multiplexed>(Some(key.as_ref())).await
    }

    /// `GET key`, typed: from the near cache of the key's node when it
    /// holds the reply (no command built, sent or parsed), else through
    /// [`get_shared`](Self::get_shared), which fills it. `V` is what the
    /// command returns: `Option<String>` for a key that may be missing.
    ///
    /// The near cache's fast path for hot reads: a hit costs a routing
    /// lookup and a hash lookup, not the ordinary path's encoding of the
    /// command and parsing of it back (`BENCHMARKS.md` counts both). Its
    /// guarantees are the near cache's: it never returns a value from
    /// before a write through this pool that was acknowledged before it
    /// began. Without a near cache it is `get_shared` and `GET`.
    ///
    /// ```no_run
    /// # async fn run(pool: fluster::ShardedPool) -> Result<(), fluster::Error> {
    /// let name: Option<String> = pool.get_cached("user:42:name").await?;
    /// # Ok(()) }
    /// ```
    #[doc = include_str!("../docs/near_cache.md")]
    pub async fn get_cached<V: redis::FromRedisValue>(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<V, Error>
    where
        M::Connection: redis::aio::ConnectionLike + Send,
    {
        let key = key.as_ref();
        if let Some(value) = self.core.near_hit(key) {
            // Counted against Tokio's budget, as a socket read is.
            tokio::task::coop::consume_budget().await;
            return Ok(V::from_redis_value(value)?);
        }
        let mut conn = self.get_shared(key).await?;
        redis::cmd("GET").arg(key).query_async(&mut conn).await.on(conn.node())
    }
}

impl ShardedPool<RedisManager> {
    /// Adds the node at `url` under `name`, with weight 1, while the pool
    /// serves: it takes its share of keys (about 1/n, all from the other
    /// nodes) as soon as this returns. It is probed first (unless
    /// `probe_at_build(false)`) and starts in the box if it does not
    /// answer. A paced sweep then deletes the copies the moved keys left on
    /// their old homes (after the `resize_warmup` window); `status()` shows
    /// its progress, then its end (`sweep_end`). A name this pool removed
    /// ([`remove_node`](Self::remove_node), [`drain_node`](Self::drain_node))
    /// comes back only if its server holds no key: it kept values older
    /// than the writes made while it was away ([`Error::Config`] naming it:
    /// flush it first). See `docs/resize.md`.
    pub async fn add_node(&self, name: &str, url: &str) -> Result<(), Error> {
        self.add_weighted_node(name, url, 1.0).await
    }

    /// Removes the node `name` after moving its keys to their new homes
    /// with the servers' own `MIGRATE … REPLACE KEYS` (TTLs kept), in
    /// batches of [`DRAIN_BATCH`](crate::DRAIN_BATCH) keys with
    /// [`DRAIN_PAUSE`](crate::DRAIN_PAUSE) between them; `status()` shows
    /// the progress. Its keys are served by their new homes from the start:
    /// a miss there reads through to it, and a write anywhere moves its
    /// copy first (an `INCR` goes on from its value; no copy lands over a
    /// write). [`Error::Drain`] naming both nodes, the node left in the
    /// pool, if it cannot reach another; a batch with no answer fails the
    /// drain and its keys' writes are refused until the node answers
    /// again. See `docs/resize.md`.
    pub async fn drain_node(&self, name: &str) -> Result<(), Error> {
        self.drain_node_paced(name, crate::DRAIN_BATCH, crate::DRAIN_PAUSE).await
    }

    /// [`drain_node`](Self::drain_node) in batches of `batch` keys (at
    /// least 1) with `pause` before each.
    pub async fn drain_node_paced(
        &self,
        name: &str,
        batch: usize,
        pause: Duration,
    ) -> Result<(), Error> {
        self.core.drain(name, endpoint, (batch.max(1), pause)).await
    }

    /// [`add_node`](Self::add_node) with a weight.
    pub async fn add_weighted_node(&self, name: &str, url: &str, weight: f64) -> Result<(), Error> {
        let parts = added(name, url, weight, &self.core.settings)?;
        // A node given by URL: its own address, never a lookup that fails.
        let at = endpoint(&parts.manager).await.ok();
        self.add(parts, at).await
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
        cmd.query_async(&mut conn).await.on(conn.node())
    }

    /// The messages of `channel`, subscribed on the node it routes to (as
    /// [`publish`](Self::publish) and `get` route it), over that node's one
    /// subscriber connection. The subscription follows the channel: to its
    /// stand-in while its node is boxed, home when it returns (by the end
    /// of its warm-up). Messages published while it moves can be lost.
    #[doc = include_str!("../docs/pubsub.md")]
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
        Ok(self.hub.get_or_init(|| {
            let hub = Hub::new(Arc::downgrade(&self.core));
            let (mut events, weak) = (self.core.pool_wide.events.subscribe(), Arc::downgrade(&hub));
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
            let pool_wide = pool.core.pool_wide.clone();
            let prober = tokio::spawn(crate::runtime::prober::prober(core.clone(), pool_wide));
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
