//! The shared-connection fast path: one multiplexed connection per node,
//! cloned for each caller instead of checked out.
//!
//! bb8 hands a connection to one task at a time, but a Redis multiplexed
//! connection carries many tasks' commands at once, pipelining them on one
//! socket. [`ShardedPool::get_shared`](crate::ShardedPool::get_shared) routes
//! a key exactly like `get` (same ranking, same penalty box) and hands out a
//! clone of its node's shared connection: no checkout, no waiting for a free
//! connection.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::health::FailureKind;
use crate::manager::{ClassifyFailure, NodeManager};
use crate::node::{CheckoutError, Node, NodeHealth};
use crate::redis_manager::RedisManager;

/// One node's shared connection and the node epoch it was made in.
pub(crate) struct Shared<C> {
    /// Behind a lock only so that the pool stays `Sync` for connections that
    /// are `Send` but not `Sync`; held just long enough to clone.
    conn: Mutex<C>,
    epoch: u64,
    /// Set by the first caller that sees it fail; the next `get_shared`
    /// then connects afresh.
    broken: AtomicBool,
}

/// Where a node keeps its shared connection.
pub(crate) struct SharedSlot<C> {
    current: ArcSwapOption<Shared<C>>,
    /// Lets one caller connect while the others wait for its result.
    connecting: tokio::sync::Mutex<()>,
}

impl<C> Default for SharedSlot<C> {
    fn default() -> Self {
        SharedSlot {
            current: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
        }
    }
}

impl<M: NodeManager> Node<M>
where
    M::Connection: Clone,
{
    /// The node's shared connection if it is usable: made since the node
    /// was last boxed, and not seen failing.
    fn live_shared(&self) -> Option<Arc<Shared<M::Connection>>> {
        let shared = self.shared.current.load_full()?;
        let live = shared.epoch == self.health.epoch() && !shared.broken.load(Ordering::Acquire);
        live.then_some(shared)
    }

    /// A clone of the node's shared connection, connecting it first if
    /// needed (one caller connects; the others wait for it). Gives up the
    /// moment the node is boxed, and at `deadline`.
    pub(crate) async fn shared(
        &self,
        started: Instant,
        deadline: Instant,
    ) -> Result<SharedConnection<M>, CheckoutError> {
        let vetoes = self.health.vetoes();
        loop {
            let failed = self.health.failure_signal();
            self.health.usable_since(vetoes)?;
            if let Some(shared) = self.live_shared() {
                return Ok(SharedConnection::new(shared, self.health.clone()));
            }
            let _connecting = tokio::select! {
                biased;
                guard = self.shared.connecting.lock() => guard,
                () = failed => continue,
                () = tokio::time::sleep_until(deadline.into()) => {
                    return Err(CheckoutError::TimedOut(started.elapsed()));
                }
            };
            if let Some(shared) = self.live_shared() {
                return Ok(SharedConnection::new(shared, self.health.clone()));
            }
            let epoch = self.health.epoch();
            let connected = tokio::select! {
                result = self.manager.connect() => result,
                () = tokio::time::sleep_until(deadline.into()) => {
                    return Err(CheckoutError::TimedOut(started.elapsed()));
                }
            };
            match connected {
                Ok(conn) => {
                    self.health.report_success();
                    let shared = Arc::new(Shared {
                        conn: Mutex::new(conn),
                        epoch,
                        broken: AtomicBool::new(false),
                    });
                    self.shared.current.store(Some(shared.clone()));
                    return Ok(SharedConnection::new(shared, self.health.clone()));
                }
                // The loop then sees the node boxed, the failure vetoed, or
                // (a timeout below the threshold) tries again.
                Err(e) => {
                    let kind = e.failure_kind().unwrap_or(FailureKind::Connect);
                    self.health.report_failure(kind, epoch, &e);
                }
            }
        }
    }
}

/// A clone of one node's shared multiplexed connection, from
/// [`ShardedPool::get_shared`](crate::ShardedPool::get_shared).
///
/// Cheap to get and to drop (nothing goes back to a pool); many tasks' clones
/// pipeline their commands on the same socket. Like
/// [`Connection`](crate::Connection) it implements
/// [`redis::aio::ConnectionLike`] and reports every failure: the shared
/// connection is then replaced on the next `get_shared`, and the failure
/// counts against the node. Not for commands that change the connection's
/// state (`SELECT`, `SUBSCRIBE`, `MULTI`/`WATCH`, blocking pops): those need a
/// connection of their own, from [`get`](crate::ShardedPool::get).
pub struct SharedConnection<M: NodeManager = RedisManager> {
    conn: M::Connection,
    shared: Arc<Shared<M::Connection>>,
    health: Arc<NodeHealth>,
}

impl<M: NodeManager> SharedConnection<M>
where
    M::Connection: Clone,
{
    fn new(shared: Arc<Shared<M::Connection>>, health: Arc<NodeHealth>) -> Self {
        let conn = shared
            .conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        SharedConnection {
            conn,
            shared,
            health,
        }
    }
}

impl<M: NodeManager> SharedConnection<M> {
    /// The name of the node this connection belongs to.
    pub fn node(&self) -> &str {
        &self.health.name
    }

    fn observe<T, E: ClassifyFailure>(&self, result: &Result<T, E>) {
        if self.health.observe(result, self.shared.epoch) {
            self.shared.broken.store(true, Ordering::Release);
        }
    }
}

impl<M: NodeManager> Deref for SharedConnection<M> {
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        &self.conn
    }
}

impl<M: NodeManager> DerefMut for SharedConnection<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self.conn
    }
}

impl<M: NodeManager> fmt::Debug for SharedConnection<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedConnection")
            .field("node", &self.health.name)
            .finish_non_exhaustive()
    }
}

impl<M> ConnectionLike for SharedConnection<M>
where
    M: NodeManager,
    M::Connection: ConnectionLike + Send,
{
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.req_packed_command(cmd).await;
            self.observe(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.observe(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}
