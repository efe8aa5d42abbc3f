//! The synchronous flavour (feature `r2d2`): the same pool for services
//! that do not run on an async runtime, with one [r2d2] pool per node.
//!
//! Routing, the penalty box, back-off, probing, metrics and status are the
//! async flavour's own code, so a key goes to the same node in both. What
//! differs is only how a connection is checked out (blocking, in short
//! slices, so a dead node is left within a few milliseconds of being boxed)
//! and that probing runs on a background thread, which stops when the last
//! pool handle is dropped.
//!
//! ```no_run
//! # fn run() -> Result<(), fluster::Error> {
//! use redis::Commands;
//!
//! let pool = fluster::sync::ShardedPool::builder()
//!     .node("redis://127.0.0.1:7001")
//!     .node("redis://127.0.0.1:7002")
//!     .build()?;
//! let mut conn = pool.get("user:42")?;
//! let visits: i64 = conn.incr("user:42", 1)?;
//! # Ok(()) }
//! ```
//!
//! [r2d2]: https://docs.rs/r2d2

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::{Client, ConnectionInfo, ConnectionLike, RedisError, RedisResult, Value};
use tokio::sync::Notify;

use crate::builder::{Failover, Settings};
use crate::error::Error;
use crate::health::FailureKind;
use crate::manager::ClassifyFailure;
use crate::node::{CheckoutError, NodeHealth, PoolShared};
use crate::pool::NodeStatus;
use crate::redis_manager::RedisManager;
use crate::route::{self, Router};

/// How long one blocking wait for a connection lasts before the node's
/// health is looked at again: the most a checkout can lag behind its node
/// being boxed.
const SLICE: Duration = Duration::from_millis(5);

/// Builds a synchronous [`ShardedPool`]: the same nodes and settings as the
/// async [`Builder`](crate::Builder), with a blocking `build`.
#[derive(Debug, Default)]
pub struct Builder {
    inner: crate::Builder<RedisManager>,
}

/// Forwards a setter to the async builder, with its documentation.
macro_rules! forward {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            $(#[$doc])*
            pub fn $name(self, $($arg: $ty),*) -> Self {
                Builder { inner: self.inner.$name($($arg),*) }
            }
        )*
    };
}

impl Builder {
    forward! {
        /// See [`crate::Builder::node`].
        node(url: &str);
        /// See [`crate::Builder::named_node`].
        named_node(name: &str, url: &str);
        /// See [`crate::Builder::weighted_node`].
        weighted_node(name: &str, url: &str, weight: f64);
        /// See [`crate::Builder::penalty_min_wait`].
        penalty_min_wait(wait: Duration);
        /// See [`crate::Builder::penalty_max_wait`].
        penalty_max_wait(wait: Duration);
        /// See [`crate::Builder::penalty_multiplier`].
        penalty_multiplier(multiplier: f64);
        /// See [`crate::Builder::penalty_jitter`].
        penalty_jitter(jitter: f64);
        /// See [`crate::Builder::timeouts_before_penalty`].
        timeouts_before_penalty(timeouts: u32);
        /// See [`crate::Builder::connect_timeout`].
        connect_timeout(timeout: Duration);
        /// See [`crate::Builder::response_timeout`].
        response_timeout(timeout: Duration);
        /// See [`crate::Builder::checkout_timeout`].
        checkout_timeout(timeout: Duration);
        /// See [`crate::Builder::probe_timeout`].
        probe_timeout(timeout: Duration);
        /// See [`crate::Builder::max_connections`].
        max_connections(max: u32);
        /// See [`crate::Builder::failover`].
        failover(failover: Failover);
        /// See [`crate::Builder::max_boxed_fraction`].
        max_boxed_fraction(fraction: f64);
        /// See [`crate::Builder::probe_at_build`].
        probe_at_build(probe: bool);
    }

    /// Checks every setting, connects to every node (in parallel, each
    /// bounded by the probe timeout) and starts the probing thread. Nodes
    /// that cannot be reached start in the penalty box.
    pub fn build(self) -> Result<ShardedPool, Error> {
        let (specs, settings) = self.inner.validate()?;
        crate::metrics::describe();
        let shared = Arc::new(PoolShared {
            wake: Notify::new(),
            down: AtomicUsize::new(0),
            max_down: AtomicUsize::new(settings.max_boxed(specs.len())),
        });
        let nodes = specs
            .into_iter()
            .map(|spec| {
                let info = spec.url_info.ok_or_else(|| {
                    Error::config(
                        format!("node `{}`", spec.name),
                        "the sync flavour takes nodes given by URL only",
                    )
                })?;
                Node::new(&spec.name, spec.weight, info, &settings, shared.clone()).map(Arc::new)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if settings.probe_at_build {
            std::thread::scope(|scope| {
                for node in &nodes {
                    scope.spawn(|| {
                        if let Err((kind, detail)) = node.probe() {
                            node.health.start_boxed(kind, &detail);
                        }
                    });
                }
            });
        }
        let inner = Arc::new(Inner {
            router: Router::new(nodes.iter().map(|n| (&*n.health.name, n.weight))),
            nodes,
            shared,
            next_any: AtomicUsize::new(0),
            settings,
        });
        spawn_prober(&inner)?;
        Ok(ShardedPool { inner })
    }
}

/// One pool in front of several Redis nodes, for synchronous code: the
/// twin of the async [`ShardedPool`](crate::ShardedPool), with the same
/// routing and penalty box. Cloning is cheap (an `Arc`).
#[derive(Clone)]
pub struct ShardedPool {
    inner: Arc<Inner>,
}

struct Inner {
    router: Router,
    nodes: Vec<Arc<Node>>,
    shared: Arc<PoolShared>,
    next_any: AtomicUsize,
    settings: Settings,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The probing thread holds only a `Weak`: wake it to see it is gone.
        self.shared.wake.notify_one();
    }
}

impl fmt::Debug for ShardedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.inner.nodes.iter().map(|n| &*n.health.name).collect();
        f.debug_struct("sync::ShardedPool")
            .field("nodes", &names)
            .finish_non_exhaustive()
    }
}

impl ShardedPool {
    /// A builder for a synchronous pool of Redis nodes given by URL.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A connection to the node that owns `key`, or to the next healthy
    /// node in the key's ranking if that one is in the penalty box; the
    /// same errors as the async [`get`](crate::ShardedPool::get). Blocks
    /// at most the checkout timeout, and leaves a node within a few
    /// milliseconds of its being boxed.
    pub fn get<K: AsRef<[u8]>>(&self, key: K) -> Result<Connection, Error> {
        let inner = &*self.inner;
        let hash = route::key_hash(key.as_ref());
        let (started, deadline) = inner.deadline();
        if inner.settings.failover == Failover::FailFast {
            let home = inner
                .router
                .home_hashed(hash)
                .ok_or(Error::NoHealthyNodes)?;
            return inner.checkout(home, started, deadline);
        }
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let picked = inner.router.pick_hashed(hash, |i| {
                inner.nodes[i].health.is_up() && !tried.contains(&i)
            });
            let Some(index) = picked else {
                return Err(Error::NoHealthyNodes);
            };
            match inner.nodes[index].checkout(started, deadline) {
                Ok(conn) => {
                    let failover_possible =
                        inner.shared.down.load(Ordering::Relaxed) > 0 || !tried.is_empty();
                    if failover_possible
                        && let Some(home) = inner.router.home_hashed(hash)
                        && home != index
                    {
                        inner.nodes[home].health.metrics.failovers.increment(1);
                    }
                    return Ok(Connection { conn });
                }
                Err(CheckoutError::Boxed) => tried.push(index),
                Err(e) => return Err(e.into_error(inner.router.name(index))),
            }
        }
    }

    /// A connection to any healthy node, taking them in turn.
    pub fn get_any(&self) -> Result<Connection, Error> {
        let inner = &*self.inner;
        let (started, deadline) = inner.deadline();
        let n = inner.nodes.len();
        let start = inner.next_any.fetch_add(1, Ordering::Relaxed);
        for offset in 0..n {
            let index = start.wrapping_add(offset) % n;
            if !inner.nodes[index].health.is_up() {
                continue;
            }
            match inner.checkout(index, started, deadline) {
                Err(Error::NodeDown { .. }) => continue,
                result => return result,
            }
        }
        Err(Error::NoHealthyNodes)
    }

    /// The name of the node `get(key)` would use now, or `None` if every
    /// node is boxed. Does not touch the network.
    pub fn node_for<K: AsRef<[u8]>>(&self, key: K) -> Option<String> {
        let inner = &*self.inner;
        let up = |i: usize| inner.nodes[i].health.is_up();
        let pick = match inner.settings.failover {
            Failover::Reroute => inner.router.pick(key.as_ref(), up),
            Failover::FailFast => inner.router.home(key.as_ref()).filter(|&i| up(i)),
        };
        pick.map(|i| inner.router.name(i).to_owned())
    }

    /// The key's home node: where it goes when every node is healthy.
    pub fn home_node_for<K: AsRef<[u8]>>(&self, key: K) -> Option<String> {
        let inner = &*self.inner;
        inner
            .router
            .home(key.as_ref())
            .map(|i| inner.router.name(i).to_owned())
    }

    /// Every node's health and pool, in the order the nodes were added.
    pub fn status(&self) -> Vec<NodeStatus> {
        let now = Instant::now();
        self.inner
            .nodes
            .iter()
            .map(|node| {
                let state = node.pool.state();
                node.health
                    .status(node.weight, state.connections, state.idle_connections, now)
            })
            .collect()
    }
}

impl Inner {
    fn deadline(&self) -> (Instant, Instant) {
        let now = Instant::now();
        (now, now + self.settings.checkout_timeout)
    }

    fn checkout(
        &self,
        index: usize,
        started: Instant,
        deadline: Instant,
    ) -> Result<Connection, Error> {
        self.nodes[index]
            .checkout(started, deadline)
            .map(|conn| Connection { conn })
            .map_err(|e| e.into_error(self.router.name(index)))
    }
}

/// One node: its r2d2 pool and its health (the async flavour's).
struct Node {
    health: Arc<NodeHealth>,
    weight: f64,
    pool: r2d2::Pool<Manager>,
    manager: Manager,
    probe_timeout: Duration,
}

impl Node {
    fn new(
        name: &str,
        weight: f64,
        info: ConnectionInfo,
        settings: &Settings,
        shared: Arc<PoolShared>,
    ) -> Result<Self, Error> {
        let health = Arc::new(NodeHealth::new(name, settings.policy, shared));
        let client = Client::open(info)
            .map_err(|e| Error::config(format!("node `{name}`"), e.to_string()))?;
        let manager = Manager {
            client,
            connect_timeout: settings.connect_timeout,
            response_timeout: settings.response_timeout,
            health: health.clone(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(settings.max_connections)
            // Connect lazily: r2d2 would otherwise keep reconnecting to a
            // dead node in the background.
            .min_idle(Some(0))
            .test_on_check_out(settings.test_on_checkout)
            .connection_timeout(settings.checkout_timeout)
            // Failures are reported to the node's health, not logged.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager.clone());
        Ok(Node {
            health,
            weight,
            pool,
            manager,
            probe_timeout: settings.probe_timeout,
        })
    }

    /// Blocks for a connection until `deadline`, in short slices, leaving
    /// as soon as the node is boxed.
    fn checkout(
        &self,
        started: Instant,
        deadline: Instant,
    ) -> Result<r2d2::PooledConnection<Manager>, CheckoutError> {
        let vetoes = self.health.vetoes();
        loop {
            self.health.usable_since(vetoes)?;
            let now = Instant::now();
            if now >= deadline {
                return Err(CheckoutError::TimedOut(started.elapsed()));
            }
            let Ok(mut conn) = self.pool.get_timeout(SLICE.min(deadline - now)) else {
                continue;
            };
            if self.health.accept_checkout(conn.epoch, started) {
                return Ok(conn);
            }
            conn.broken = true;
        }
    }

    /// Connects and PINGs, bounded by the probe timeout.
    fn probe(&self) -> Result<(), (FailureKind, String)> {
        let attempt = || -> RedisResult<()> {
            let mut conn = self
                .manager
                .client
                .get_connection_with_timeout(self.probe_timeout)?;
            conn.set_read_timeout(Some(self.probe_timeout))?;
            conn.set_write_timeout(Some(self.probe_timeout))?;
            redis::cmd("PING").query::<()>(&mut conn)
        };
        attempt().map_err(|e| {
            (
                e.failure_kind().unwrap_or(FailureKind::Connect),
                e.to_string(),
            )
        })
    }
}

/// The r2d2 manager of one node: connects with the pool's timeouts and
/// reports to the node's health.
#[derive(Clone)]
struct Manager {
    client: Client,
    connect_timeout: Duration,
    response_timeout: Duration,
    health: Arc<NodeHealth>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("node", &self.health.name)
            .finish_non_exhaustive()
    }
}

/// A connection of the r2d2 pool, with what the pool needs to judge it.
struct Conn {
    conn: redis::Connection,
    epoch: u64,
    broken: bool,
    health: Arc<NodeHealth>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    fn connect(&self) -> RedisResult<Conn> {
        let epoch = self.health.epoch();
        let connected = self
            .client
            .get_connection_with_timeout(self.connect_timeout)
            .and_then(|conn| {
                conn.set_read_timeout(Some(self.response_timeout))?;
                conn.set_write_timeout(Some(self.response_timeout))?;
                Ok(conn)
            });
        match connected {
            Ok(conn) => {
                self.health.report_success();
                Ok(Conn {
                    conn,
                    epoch,
                    broken: false,
                    health: self.health.clone(),
                })
            }
            Err(e) => {
                let kind = e.failure_kind().unwrap_or(FailureKind::Connect);
                self.health.report_failure(kind, epoch, &e);
                Err(e)
            }
        }
    }

    fn is_valid(&self, conn: &mut Conn) -> RedisResult<()> {
        let result = redis::cmd("PING").query::<()>(&mut conn.conn);
        if let Err(e) = &result {
            conn.broken = true;
            let kind = e.failure_kind().unwrap_or(FailureKind::Connect);
            self.health.report_failure(kind, conn.epoch, e);
        }
        result
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || conn.epoch != self.health.epoch() || !conn.conn.is_open()
    }
}

/// A connection checked out of one node's pool; it goes back when dropped.
///
/// Implements [`redis::ConnectionLike`], so [`redis::Commands`] work on it,
/// with every reply checked like the async
/// [`Connection`](crate::Connection)'s. (It does not deref to the inner
/// [`redis::Connection`]: `redis` would then route commands around the
/// checks; [`inner_mut`](Self::inner_mut) gives it for the rare need.)
pub struct Connection {
    conn: r2d2::PooledConnection<Manager>,
}

impl Connection {
    /// The name of the node this connection belongs to.
    pub fn node(&self) -> &str {
        &self.conn.health.name
    }

    /// The underlying connection, for what `ConnectionLike` does not cover
    /// (pub/sub, say). Commands sent through it are not checked: a failure
    /// there does not count against the node.
    pub fn inner_mut(&mut self) -> &mut redis::Connection {
        &mut self.conn.conn
    }

    fn observe<T>(&mut self, result: &RedisResult<T>) {
        let conn = &mut *self.conn;
        if conn.health.observe(result, conn.epoch) {
            conn.broken = true;
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("sync::Connection")
            .field("node", &self.node())
            .finish_non_exhaustive()
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        let result = self.conn.conn.req_packed_command(cmd);
        self.observe(&result);
        result
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let result = self.conn.conn.req_packed_commands(cmd, offset, count);
        self.observe(&result);
        result
    }

    fn get_db(&self) -> i64 {
        self.conn.conn.get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.conn.conn.check_connection()
    }

    fn is_open(&self) -> bool {
        self.conn.conn.is_open()
    }
}

/// Starts the thread that probes boxed nodes. It runs a small
/// current-thread Tokio runtime only to wait on the pool's wake-ups and
/// timers (the same ones the async pool uses); probes themselves block.
fn spawn_prober(inner: &Arc<Inner>) -> Result<(), Error> {
    let weak = Arc::downgrade(inner);
    let shared = inner.shared.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Error::config("probing thread", e.to_string()))?;
    std::thread::Builder::new()
        .name("fluster-prober".into())
        .spawn(move || runtime.block_on(probe_loop(weak, shared)))
        .map_err(|e| Error::config("probing thread", e.to_string()))?;
    Ok(())
}

async fn probe_loop(pool: Weak<Inner>, shared: Arc<PoolShared>) {
    loop {
        let deadline = {
            let Some(pool) = pool.upgrade() else {
                tracing::debug!("sync pool dropped; probing thread stops");
                return;
            };
            let now = Instant::now();
            let mut deadline = now + Duration::from_secs(1);
            for node in &pool.nodes {
                let state = node.pool.state();
                node.health
                    .metrics
                    .connections
                    .set(f64::from(state.connections));
                node.health
                    .metrics
                    .idle_connections
                    .set(f64::from(state.idle_connections));
                match node.health.probe_at() {
                    Some(at) if at > now => deadline = deadline.min(at),
                    Some(_) if node.health.start_probe() => node.health.finish_probe(node.probe()),
                    _ => {}
                }
            }
            deadline
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {}
            () = shared.wake.notified() => {}
        }
    }
}
