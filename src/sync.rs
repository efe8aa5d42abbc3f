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
//! runtime), which stops when the last pool handle is dropped.
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

use redis::{ConnectionLike, RedisError, RedisResult, Value};

use crate::backend::manager::RedisManager;
use crate::command::session::effect;
use crate::command::words::{packed, unpacked};
use crate::error::Error;
use crate::health::event::NodeEvent;
use crate::health::failure::failure;
use crate::node::blocking::{R2d2, r2d2_pool};
use crate::node::clock::Clock;
use crate::node::connection::only_reply;
use crate::node::lease::unmarked;
use crate::node::tracked::Tracked;
use crate::node::{CheckoutError, Node};
use crate::pool::pool_methods;
use crate::route::NodeName;
use crate::runtime::core::Core;
use crate::runtime::prober::prober;
use crate::runtime::status::NodeStatus;
use crate::runtime::step::{Take, at_once};
use crate::settings::Settings;
use crate::stand_in::writes::{Capped, StandIn};

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
        let (started, core) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("fluster-prober".into())
            .spawn(move || {
                runtime.block_on(async {
                    let node = |parts, settings: &Settings, pool_wide: &_, check| {
                        Node::new(parts, settings, pool_wide, check, |tracked| {
                            r2d2_pool(settings, tracked)
                        })
                    };
                    let core = Arc::new(Core::start(finished, node).await);
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
        core.check_start().inspect_err(|_| core.close())?;
        Ok(ShardedPool { core })
    }
}

/// One pool in front of several Redis nodes, for synchronous code: the
/// twin of the async [`ShardedPool`](crate::ShardedPool), with the same
/// routing and penalty box. Cloning is cheap (an `Arc`).
#[derive(Clone)]
pub struct ShardedPool {
    core: Arc<Core<RedisManager, R2d2>>,
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
        at_once(self.core.take::<Blocking>(Some(key.as_ref())))
    }

    /// A connection to any healthy node, taking them in turn; its writes
    /// follow the stand-in rules key by key, as the async
    /// [`get_any`](crate::ShardedPool::get_any)'s do.
    pub fn get_any(&self) -> Result<Connection, Error> {
        at_once(self.core.take::<Blocking>(None))
    }

    pool_methods!();
}

/// Checked out of the node's r2d2 pool, blocking: its future is ready at
/// once, so the single step runs [`at_once`].
struct Blocking;

impl Take<RedisManager, R2d2> for Blocking {
    type Raw = r2d2::PooledConnection<Tracked<RedisManager>>;
    type Conn = Connection;
    fn take<'a>(
        node: &'a Node<RedisManager, R2d2>,
        clock: &'a Clock,
    ) -> impl Future<Output = Result<Self::Raw, CheckoutError>> + Send + 'a {
        std::future::ready(node.checkout_blocking(clock))
    }
    fn into_conn(conn: Self::Raw, home: bool, stand_in: Option<Box<StandIn>>) -> Connection {
        Connection { conn, home, stand_in }
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
    conn: r2d2::PooledConnection<Tracked<RedisManager>>,
    home: bool,
    stand_in: Option<Box<StandIn>>,
}

impl Connection {
    /// The name of the node this connection belongs to.
    pub fn node(&self) -> &str {
        &self.conn.cell.name
    }

    /// Whether this node is the key's home; see
    /// [`Connection::is_home`](crate::Connection::is_home).
    pub fn is_home(&self) -> bool {
        self.home
    }

    /// The underlying connection, for what `ConnectionLike` does not cover
    /// (pub/sub, say). Commands sent through it are not checked: a failure
    /// there does not count against the node, and the connection is closed
    /// when dropped rather than handed on.
    pub fn inner_mut(&mut self) -> &mut redis::Connection {
        self.conn.session.taint();
        &mut self.conn.conn
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("sync::Connection").field("node", &self.node()).finish_non_exhaustive()
    }
}

impl Connection {
    /// What goes on the wire for the packed `cmd` with its stand-in's
    /// records and caps, placed as the async flavour places them
    /// ([`StandIn::wrap`]), if more than `cmd`.
    fn capped(&mut self, cmd: &[u8], span: (usize, usize)) -> Option<Capped> {
        let stand_in = self.stand_in.as_mut()?;
        let pipeline = unpacked(cmd);
        stand_in.wrap((pipeline.cmd_iter(), pipeline.is_transaction()), span)
    }

    /// Follows what the commands packed in `cmd` do to the session.
    fn follow(&mut self, cmd: &[u8]) {
        let conn = &mut self.conn;
        let known = conn.cell.commands.clone();
        packed(cmd, |words| effect(words, &known)).for_each(|e| conn.session.apply(e));
    }

    /// The capped pipeline on the wire; the caller's replies.
    fn send(&mut self, capped: Capped) -> RedisResult<Vec<Value>> {
        let bytes = capped.pipe.get_packed_pipeline();
        let values = self.conn.conn.req_packed_commands(&bytes, capped.offset, capped.count);
        // `capped` came from the connection's stand-in, which is still there.
        let Some(stand_in) = self.stand_in.as_mut() else { return values };
        match values {
            Ok(values) => Ok(stand_in.replies(capped, values)),
            Err(e) => {
                stand_in.lost();
                Err(e)
            }
        }
    }
}

/// A blocking read past its timeout fails as `EAGAIN` ("Resource
/// temporarily unavailable"): said here as the async flavour says it, a
/// `TimedOut` I/O error (`is_timeout()` is true either way).
fn timed_out(e: RedisError) -> RedisError {
    if !e.is_timeout() {
        return e;
    }
    let text = "timed out: no reply within the response timeout";
    std::io::Error::new(std::io::ErrorKind::TimedOut, text).into()
}

impl ConnectionLike for Connection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.follow(cmd);
        let result = match self.capped(cmd, (0, 1)) {
            None => self.conn.conn.req_packed_command(cmd),
            Some(capped) => self.send(capped).and_then(only_reply),
        };
        let result = result.map_err(timed_out);
        self.conn.observe(failure(&result));
        unmarked(result)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.follow(cmd);
        let result = match self.capped(cmd, (offset, count)) {
            None => self.conn.conn.req_packed_commands(cmd, offset, count),
            Some(capped) => self.send(capped),
        };
        let result = result.map_err(timed_out);
        self.conn.observe(failure(&result));
        unmarked(result)
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
