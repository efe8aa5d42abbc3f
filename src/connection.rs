//! The connection handed out by [`ShardedPool::get`](crate::ShardedPool::get).

use std::fmt;
use std::ops::{Deref, DerefMut};

use bb8::PooledConnection;
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::health::FailureKind;
use crate::manager::{NodeManager, Tracked};
use crate::redis_manager::RedisManager;

/// A connection checked out of one node's pool; it goes back when dropped.
///
/// It derefs to the manager's connection (for [`RedisManager`] a
/// [`redis::aio::MultiplexedConnection`]). For Redis connections it also
/// implements [`redis::aio::ConnectionLike`] itself, so `query_async` and
/// [`redis::AsyncCommands`] work on it directly, and every reply is checked:
/// an I/O error or timeout marks the connection broken (the pool drops it
/// instead of reusing it) and counts against its node's health. Commands
/// sent through the deref'd inner connection bypass that check.
pub struct Connection<M: NodeManager = RedisManager> {
    conn: PooledConnection<'static, Tracked<M>>,
}

impl<M: NodeManager> Connection<M> {
    pub(crate) fn new(conn: PooledConnection<'static, Tracked<M>>) -> Self {
        Connection { conn }
    }

    /// The name of the node this connection belongs to.
    pub fn node(&self) -> &str {
        &self.conn.health.name
    }

    /// Reports a failure seen on this connection: the connection is dropped
    /// instead of returned to the pool, and the failure counts against the
    /// node (a [`FailureKind::Timeout`] boxes it only after several in a
    /// row). Redis connections report by themselves; this is for
    /// connections of other managers, whose replies the pool cannot see.
    pub fn report_failure(&mut self, kind: FailureKind) {
        self.conn.fail(kind, &"reported by the caller");
    }
}

impl<M: NodeManager> Deref for Connection<M> {
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        &self.conn.conn
    }
}

impl<M: NodeManager> DerefMut for Connection<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self.conn.conn
    }
}

impl<M: NodeManager> fmt::Debug for Connection<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("node", &self.conn.health.name)
            .finish_non_exhaustive()
    }
}

impl<M> ConnectionLike for Connection<M>
where
    M: NodeManager,
    M::Connection: ConnectionLike + Send,
{
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let tracked = &mut *self.conn;
            let result = tracked.req_packed_command(cmd).await;
            tracked.observe(&result);
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
            let tracked = &mut *self.conn;
            let result = tracked.req_packed_commands(pipeline, offset, count).await;
            tracked.observe(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}
