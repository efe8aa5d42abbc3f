//! The synchronous flavour (feature `r2d2`): the same pool for services
//! that do not run on an async runtime, with one [r2d2] pool per node.
//!
//! It is the async flavour's engine with another store: the same
//! [`Builder`](crate::Builder) and settings (every setter, TLS roots and
//! Sentinel shards included), the same routing policy,
//! penalty box, connect-and-report, prober, metrics and status, so a key
//! goes to the same node in both. Its own parts are small: its store
//! of blocking connections (`node/blocking.rs`: the r2d2 pool, its
//! heartbeat, and a blocking checkout, the twin of the checkout race: a
//! dead node is left within 5 ms of being boxed), which the async
//! flavour's single step drives, run at once on the caller's thread; what
//! goes on the wire for a stand-in's writes, placed by the async flavour's
//! code; and the thread the prober runs on (the same probes as the async flavour, on that thread's own
//! runtime), which stops when the last pool handle is dropped. What the
//! engine does asynchronously for a blocking caller (a node added or
//! drained, a resize's reads and deletes of other nodes' copies) runs on
//! that runtime while the caller waits, never on a runtime of the
//! caller's. While keys move (a node added with `resize_warmup`, or
//! drained), a connection (`sync/connection.rs`) sends each command
//! through the async flavour's own body (`node/connection/send.rs`), the
//! same protocol, its futures ready at once.
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
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::backend::manager::RedisManager;
use crate::error::Error;
use crate::flavours::{added, endpoint, pool_methods};
use crate::health::event::NodeEvent;
use crate::health::pool_wide::PoolWide;
use crate::node::blocking::{R2d2, r2d2_pool};
use crate::node::probe::ProbeCheck;
use crate::node::{Node, NodeParts};
use crate::route::NodeName;
use crate::runtime::core::Core;
use crate::runtime::prober::prober;
use crate::runtime::status::NodeStatus;
use crate::runtime::step::at_once;
use crate::settings::Settings;

mod connection;

use connection::Blocking;
pub use connection::Connection;

/// What a [`Builder`] of this module builds (its second type parameter):
/// the synchronous [`ShardedPool`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockingPool;

/// Builds a synchronous [`ShardedPool`]: the async pool's
/// [`Builder`](crate::Builder), every setter included, with a blocking
/// `build`.
pub type Builder = crate::Builder<RedisManager, BlockingPool>;

impl crate::Builder<RedisManager, BlockingPool> {
    /// Checks every setting, connects to every node (in parallel, each
    /// bounded by the probe timeout) and starts the prober thread. Nodes
    /// that cannot be reached start in the penalty box; the async
    /// flavour's checks apply ([`Error::Credentials`] for a node that
    /// refuses the credentials, [`Error::NotEnoughHealthy`]).
    ///
    /// It blocks, and may be called from anywhere, a Tokio runtime's
    /// thread included: the probes run on the prober thread's own runtime.
    pub fn build(self) -> Result<ShardedPool, Error> {
        let finished = self.finish()?;
        let thread_error = |e: std::io::Error| Error::config("prober thread", e.to_string());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(thread_error)?;
        let handle = runtime.handle().clone();
        let (started, core) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("fluster-prober".into())
            .spawn(move || {
                runtime.block_on(async {
                    let core = Arc::new(Core::start(finished, new_node).await);
                    let (weak, pool_wide) = (Arc::downgrade(&core), core.pool_wide.clone());
                    if let Some(name) = core.settings.fleet.clone() {
                        tokio::spawn(crate::fleet::run(weak.clone(), name));
                    }
                    let _ = started.send(core);
                    prober(weak, pool_wide).await;
                })
            })
            .map_err(thread_error)?;
        let core = core.recv().map_err(|_| Error::config("prober thread", "it stopped"))?;
        // Dropped, not closed, if it fails: as the async flavour's `build`.
        core.check_start()?;
        Ok(ShardedPool { core, runtime: handle })
    }
}

/// A node of the synchronous flavour, with its r2d2 pool.
fn new_node(
    parts: NodeParts<RedisManager>,
    settings: &Settings,
    pool_wide: &Arc<PoolWide>,
    check: Option<ProbeCheck<redis::aio::MultiplexedConnection>>,
) -> Node<RedisManager, R2d2> {
    Node::new(parts, settings, pool_wide, check, |tracked| r2d2_pool(settings, tracked))
}

/// Runs `work` on the prober thread's runtime and blocks until it is done:
/// how a blocking caller has the engine's async work done (a membership
/// change, a drain, a resize's reads and deletes), on no runtime of the
/// caller's, so it may be called from anywhere. `None` if that runtime
/// stopped first (the pool was closed, or dropped).
fn run<T: Send + 'static>(
    runtime: &Handle,
    work: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (done, result) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = done.send(work.await);
    });
    result.recv().ok()
}

/// One pool in front of several Redis nodes, for synchronous code: the
/// twin of the async [`ShardedPool`](crate::ShardedPool), with the same
/// routing and penalty box. Cloning is cheap (two `Arc`s: the engine,
/// and the prober thread's runtime).
#[derive(Clone)]
pub struct ShardedPool {
    core: Arc<Core<RedisManager, R2d2>>,
    /// The prober thread's runtime: where the engine's async work runs.
    runtime: Handle,
}

impl fmt::Debug for ShardedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("sync::ShardedPool")
            .field("nodes", &self.core.nodes())
            .finish_non_exhaustive()
    }
}

impl ShardedPool {
    /// A builder for a synchronous pool.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A connection to the node that owns `key`, or to the next healthy
    /// node in the key's ranking if that one is in the penalty box; the
    /// same errors as the async [`get`](crate::ShardedPool::get). Blocks
    /// at most the checkout timeout, and leaves a node within a few
    /// milliseconds of its being boxed.
    pub fn get<K: AsRef<[u8]>>(&self, key: K) -> Result<Connection, Error> {
        let taken = at_once(self.core.take::<Blocking>(Some(key.as_ref())))?;
        Ok(Connection::new(taken, &self.runtime))
    }

    /// A connection to any healthy node, taking them in turn; its writes
    /// follow the stand-in rules key by key, as the async
    /// [`get_any`](crate::ShardedPool::get_any)'s do.
    pub fn get_any(&self) -> Result<Connection, Error> {
        let taken = at_once(self.core.take::<Blocking>(None))?;
        Ok(Connection::new(taken, &self.runtime))
    }

    pool_methods!();

    /// Adds the node at `url` under `name`, with weight 1, while the pool
    /// serves, as the async [`add_node`](crate::ShardedPool::add_node)
    /// does: it takes its share of keys (about 1/n of them, all from the
    /// other nodes) as soon as this returns; it is probed first (unless
    /// `probe_at_build(false)`) and starts in the box if it does not
    /// answer; a name this pool removed before is added back only if its
    /// server holds no key ([`Error::Config`] naming the node otherwise).
    /// With `resize_warmup`, its window opens: a moved key's plain `GET`
    /// that misses on it is read through from its old home, and writes
    /// of moved keys delete the other copy, on every connection of this
    /// pool (`docs/resize.md`).
    ///
    /// Blocks while the node is probed (at most the probe timeout), and
    /// may be called from anywhere, a Tokio runtime's thread included:
    /// the work runs on the prober thread's own runtime.
    pub fn add_node(&self, name: &str, url: &str) -> Result<(), Error> {
        self.add_weighted_node(name, url, 1.0)
    }

    /// [`add_node`](Self::add_node) with a weight.
    pub fn add_weighted_node(&self, name: &str, url: &str, weight: f64) -> Result<(), Error> {
        let parts = added(name, url, weight, &self.core.settings)?;
        let core = Arc::clone(&self.core);
        self.run(async move {
            // A node given by URL: its own address, never a lookup that fails.
            let at = endpoint(&parts.manager).await.ok();
            let (settings, pool_wide, check) =
                (&core.settings, &core.pool_wide, core.check.clone());
            let node = new_node(parts, settings, pool_wide, check);
            let name = *node.name();
            core.add(node, at).await?;
            crate::runtime::sweep::start(&core, name);
            Ok(())
        })
    }

    /// Removes the node `name` after moving its keys to their new homes
    /// with the servers' own `MIGRATE … REPLACE KEYS` (TTLs kept), in
    /// batches of [`DRAIN_BATCH`](crate::DRAIN_BATCH) keys with
    /// [`DRAIN_PAUSE`](crate::DRAIN_PAUSE) between them: the async
    /// [`drain_node`](crate::ShardedPool::drain_node), with the same
    /// rules. Its keys are served by their new homes from the start (a
    /// miss there reads through to it; a write there deletes its copy
    /// first, and is never overwritten by a copy; a write on a connection
    /// to it taken before deletes the new home's copy after its reply);
    /// `status()` shows the progress. Fails with [`Error::Drain`] naming
    /// both nodes, the node left in the pool, if it cannot reach another
    /// node. See `docs/resize.md`.
    ///
    /// Blocks until the drain ends, and may be called from anywhere: the
    /// drain runs on the prober thread's own runtime (other threads keep
    /// using the pool meanwhile).
    pub fn drain_node(&self, name: &str) -> Result<(), Error> {
        self.drain_node_paced(name, crate::DRAIN_BATCH, crate::DRAIN_PAUSE)
    }

    /// [`drain_node`](Self::drain_node) in batches of `batch` keys (at
    /// least 1) with `pause` before each.
    pub fn drain_node_paced(&self, name: &str, batch: usize, pause: Duration) -> Result<(), Error> {
        let (core, name) = (Arc::clone(&self.core), name.to_owned());
        self.run(async move { core.drain(&name, endpoint, (batch.max(1), pause)).await })
    }

    /// `work` run on the prober thread's runtime, waited for;
    /// [`Error::Closed`] if that runtime stopped first.
    fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        self.core.open_table()?;
        run(&self.runtime, work).unwrap_or(Err(Error::Closed))
    }
}
