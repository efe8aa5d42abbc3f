//! [`ShardedPool`]: routing plus failover over the nodes' pools.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::builder::{Builder, NodeSpec, Settings};
use crate::connection::Connection;
use crate::error::Error;
use crate::health::{FailureKind, State};
use crate::manager::{NodeManager, Tracked};
use crate::node::{CheckoutError, Node, NodeHealth};
use crate::reaper;
use crate::redis_manager::RedisManager;
use crate::route::{self, Router};

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
    inner: Arc<Inner<M>>,
}

pub(crate) struct Inner<M: NodeManager> {
    router: Router,
    pub(crate) nodes: Vec<Arc<Node<M>>>,
    /// How many nodes are boxed; failover bookkeeping runs only when > 0.
    down: Arc<AtomicUsize>,
    next_any: AtomicUsize,
    /// Wakes the background task: a node was boxed, a probe ended, or the
    /// pool was dropped.
    pub(crate) wake: Arc<Notify>,
    settings: Settings,
}

impl<M: NodeManager> Drop for Inner<M> {
    fn drop(&mut self) {
        // The background task holds only a `Weak`; wake it so it sees the
        // pool is gone now rather than at its next timer.
        self.wake.notify_one();
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
            .field("nodes", &self.inner.nodes)
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
        let mut s = serializer.serialize_struct("NodeStatus", 10)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("up", &self.up)?;
        s.serialize_field("weight", &self.weight)?;
        s.serialize_field("consecutive_timeouts", &self.consecutive_timeouts)?;
        s.serialize_field("boxed_for", &self.boxed_for.map(FailureKind::as_str))?;
        s.serialize_field("failed_probes", &self.failed_probes)?;
        s.serialize_field("penalty_wait_ms", &millis(self.penalty_wait))?;
        s.serialize_field("penalty_remaining_ms", &millis(self.penalty_remaining))?;
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
    pub(crate) async fn start(specs: Vec<NodeSpec<M>>, settings: Settings) -> Self {
        crate::metrics::describe();
        let wake = Arc::new(Notify::new());
        let down = Arc::new(AtomicUsize::new(0));
        let mut names = Vec::with_capacity(specs.len());
        let mut nodes = Vec::with_capacity(specs.len());
        for spec in specs {
            let (name, weight, manager) = spec.into_manager(&settings);
            let health = Arc::new(NodeHealth::new(
                &name,
                settings.policy,
                wake.clone(),
                down.clone(),
            ));
            let pool = bb8::Pool::builder()
                .max_size(settings.max_connections)
                .min_idle(settings.min_idle)
                .test_on_check_out(settings.test_on_checkout)
                .connection_timeout(settings.checkout_timeout)
                // Each failed connect must reach the penalty box, not be
                // retried quietly until the checkout times out.
                .retry_connection(false)
                .build_unchecked(Tracked {
                    inner: manager.clone(),
                    health: health.clone(),
                });
            names.push((name, weight));
            nodes.push(Arc::new(Node {
                health,
                weight,
                pool,
                manager,
                probe_timeout: settings.probe_timeout,
                checkout_timeout: settings.checkout_timeout,
            }));
        }
        let router = Router::new(names.iter().map(|(n, w)| (n.as_str(), *w)));
        let pool = ShardedPool {
            inner: Arc::new(Inner {
                router,
                nodes,
                down,
                next_any: AtomicUsize::new(0),
                wake,
                settings,
            }),
        };
        pool.probe_all_at_start().await;
        reaper::spawn(&pool.inner);
        pool
    }

    /// Probes every node in parallel; those that fail start in the box.
    async fn probe_all_at_start(&self) {
        let mut probes = JoinSet::new();
        for node in &self.inner.nodes {
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

    /// A connection to the node that owns `key`, or to the next healthy node
    /// in the key's ranking if that one is in the penalty box.
    ///
    /// Never waits on a dead node: a checkout that is waiting when its node
    /// is boxed moves on to the next node at once. Errors:
    /// [`Error::NoHealthyNodes`] when every node is boxed, and
    /// [`Error::Timeout`] when the chosen node's pool stayed busy for the
    /// whole checkout timeout.
    ///
    /// Keys may be `&str`, `String`, `&[u8]` or anything `AsRef<[u8]>`;
    /// Redis Cluster hash tags are honoured (`{user1}.a` and `{user1}.b` go
    /// to the same node).
    pub async fn get<K: AsRef<[u8]>>(&self, key: K) -> Result<Connection<M>, Error> {
        let hash = route::key_hash(key.as_ref());
        let inner = &*self.inner;
        // Nodes that were boxed while this call tried them; allocated only
        // on failover.
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let picked = inner.router.pick_hashed(hash, |i| {
                inner.nodes[i].health.is_up() && !tried.contains(&i)
            });
            let Some(index) = picked else {
                return Err(Error::NoHealthyNodes);
            };
            match inner.checkout(index).await {
                Ok(conn) => {
                    if inner.down.load(Ordering::Relaxed) > 0 || !tried.is_empty() {
                        inner.count_failover(hash, index);
                    }
                    return Ok(conn);
                }
                Err(CheckoutError::Boxed) => tried.push(index),
                Err(CheckoutError::TimedOut(waited)) => {
                    return Err(Error::Timeout {
                        node: inner.router.name(index).to_owned(),
                        waited,
                    });
                }
            }
        }
    }

    /// A connection to any healthy node, taking them in turn: for key-less
    /// commands and queue consumers.
    pub async fn get_any(&self) -> Result<Connection<M>, Error> {
        let inner = &*self.inner;
        let n = inner.nodes.len();
        let start = inner.next_any.fetch_add(1, Ordering::Relaxed);
        for offset in 0..n {
            let index = start.wrapping_add(offset) % n;
            if !inner.nodes[index].health.is_up() {
                continue;
            }
            match inner.checkout(index).await {
                Ok(conn) => return Ok(conn),
                Err(CheckoutError::Boxed) => continue,
                Err(CheckoutError::TimedOut(waited)) => {
                    return Err(Error::Timeout {
                        node: inner.router.name(index).to_owned(),
                        waited,
                    });
                }
            }
        }
        Err(Error::NoHealthyNodes)
    }

    /// The name of the node `get(key)` would use now, or `None` if every
    /// node is boxed. Does not touch the network.
    pub fn node_for<K: AsRef<[u8]>>(&self, key: K) -> Option<&str> {
        let inner = &*self.inner;
        inner
            .router
            .pick(key.as_ref(), |i| inner.nodes[i].health.is_up())
            .map(|i| inner.router.name(i))
    }

    /// The key's home node: where it goes when every node is healthy.
    pub fn home_node_for<K: AsRef<[u8]>>(&self, key: K) -> &str {
        let index = self.inner.router.home(key.as_ref()).unwrap_or(0);
        self.inner.router.name(index)
    }

    /// Every node's health and pool, in the order the nodes were added.
    pub fn status(&self) -> Vec<NodeStatus> {
        let now = Instant::now();
        self.inner
            .nodes
            .iter()
            .map(|node| {
                let health = node.health.snapshot();
                let state = node.pool.state();
                let (boxed_for, failed_probes, penalty_wait) = match health.state() {
                    State::Boxed {
                        cause,
                        failed_probes,
                        stay,
                        ..
                    } => (Some(cause), failed_probes, Some(stay)),
                    State::Up { .. } => (None, 0, None),
                };
                NodeStatus {
                    name: node.health.name.to_string(),
                    up: health.is_up(),
                    weight: node.weight,
                    consecutive_timeouts: health.consecutive_timeouts(),
                    boxed_for,
                    failed_probes,
                    penalty_wait,
                    penalty_remaining: health.remaining(now),
                    connections: state.connections,
                    idle_connections: state.idle_connections,
                }
            })
            .collect()
    }

    /// The names of all nodes, in the order they were added.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.inner.nodes.iter().map(|n| &*n.health.name)
    }

    /// The longest wait for a connection from a busy node.
    pub fn checkout_timeout(&self) -> Duration {
        self.inner.settings.checkout_timeout
    }

    #[cfg(test)]
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner<M>> {
        Arc::downgrade(&self.inner)
    }
}

impl<M> Inner<M>
where
    M: NodeManager,
{
    async fn checkout(&self, index: usize) -> Result<Connection<M>, CheckoutError> {
        self.nodes[index].checkout().await.map(Connection::new)
    }

    /// Counts a failover if `served` is not the key's home node.
    fn count_failover(&self, hash: u64, served: usize) {
        if let Some(home) = self.router.pick_hashed(hash, |_| true)
            && home != served
        {
            self.nodes[home].health.metrics.failovers.increment(1);
        }
    }
}
