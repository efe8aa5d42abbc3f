//! What a node's store holds and how it is filled: [`NodeManager`], the
//! bound on the managers the pool shards; [`TrackedConn`], a connection
//! with what the pool needs to judge it; and [`Tracked`], the manager that
//! reports every connect to the node's health.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use bb8::ManageConnection;
use futures_util::future::BoxFuture;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisResult, Value};

use crate::backend::near::NearCache;
use crate::command::session::effect;
use crate::command::words::words;
use crate::health::cell::HealthCell;
use crate::health::failure::{ClassifyFailure, Failure, connect_failure};
use crate::node::learn::learn;
use crate::node::session::Session;
use crate::node::warm::Resizing;

/// A bb8 connection manager the pool can shard: any [`ManageConnection`]
/// whose error implements [`ClassifyFailure`] and whose connections are
/// `Sync` (so a node's shared connection is cloned without a lock) and
/// say what they can do ([`ConnectionAbilities`]). Implemented
/// automatically; it only names those bounds.
pub trait NodeManager:
    ManageConnection<Error: ClassifyFailure, Connection: Sync + ConnectionAbilities>
{
}

impl<M> NodeManager for M where
    M: ManageConnection<Error: ClassifyFailure, Connection: Sync + ConnectionAbilities>
{
}

/// What the pool may ask of a node's connections beyond their manager's
/// `is_valid`, each with a default that says "not this one".
///
/// redis-rs's [`MultiplexedConnection`] (the connections of
/// [`RedisManager`](crate::RedisManager) and of bb8-redis's manager) can
/// do all of it. A connection type of your own says what it can with an
/// impl, usually empty, and the pool does without the rest:
///
/// ```
/// struct MyConnection(tokio::net::TcpStream);
///
/// // Not Redis: probes ask the manager's `is_valid` only, and the
/// // heartbeat of a node's shared connection uses a pooled one.
/// impl fluster::ConnectionAbilities for MyConnection {}
/// ```
pub trait ConnectionAbilities {
    /// The connection as one the pool may send its own Redis commands on:
    /// a probe's re-test (`ROLE` after a replica's refusal, a real read)
    /// and the deletes before a node's return (`invalidate_on_return`).
    /// Without it a probe asks only `is_valid`, and a return deletes
    /// nothing (the copies are counted as dropped, left to `stand_in_ttl`).
    fn redis(&mut self) -> Option<&mut (dyn ConnectionLike + Send)> {
        None
    }

    /// The pool's own `pipe` on a connection many callers share, without
    /// taking it from them (a resize's deletes and reads through): `None`
    /// if this is not such a connection.
    fn send_shared(&self, pipe: Pipeline) -> Option<BoxFuture<'static, RedisResult<Vec<Value>>>> {
        let _ = pipe;
        None
    }

    /// A `PING` on a connection many callers share, without taking it
    /// from them: the heartbeat of a node's shared connection. Without it
    /// the heartbeat `PING`s a pooled connection instead.
    fn ping_shared(&self) -> Option<BoxFuture<'static, RedisResult<Value>>> {
        None
    }

    /// Sends one command and returns its reply, as
    /// [`ConnectionLike::req_packed_command`] does, in a future the pool
    /// keeps inside its own. The pool's connections wrap every command in
    /// a future of theirs (to judge the reply), so a connection with an
    /// unboxed send (redis-rs's `send_packed_command`) saves one
    /// allocation per command. The default boxes, through
    /// `req_packed_command`.
    fn send_packed<'a>(
        &'a mut self,
        cmd: &'a Cmd,
    ) -> impl Future<Output = RedisResult<Value>> + Send + 'a
    where
        Self: ConnectionLike + Send,
    {
        self.req_packed_command(cmd)
    }
}

impl ConnectionAbilities for MultiplexedConnection {
    fn redis(&mut self) -> Option<&mut (dyn ConnectionLike + Send)> {
        Some(self)
    }

    fn ping_shared(&self) -> Option<BoxFuture<'static, RedisResult<Value>>> {
        let mut conn = self.clone();
        Some(Box::pin(async move { redis::cmd("PING").query_async(&mut conn).await }))
    }

    fn send_shared(&self, pipe: Pipeline) -> Option<BoxFuture<'static, RedisResult<Vec<Value>>>> {
        let mut conn = self.clone();
        Some(Box::pin(async move { conn.req_packed_commands(&pipe, 0, pipe.len()).await }))
    }

    fn send_packed<'a>(
        &'a mut self,
        cmd: &'a Cmd,
    ) -> impl Future<Output = RedisResult<Value>> + Send + 'a {
        self.send_packed_command(cmd)
    }
}

/// A connection with what the pool needs to judge it.
pub(crate) struct TrackedConn<C> {
    pub(crate) conn: C,
    /// The node's epoch when the connection was made.
    pub(crate) epoch: u64,
    /// Set once the connection saw a failure; the pool then drops it.
    pub(crate) broken: bool,
    /// Set while a command is in flight: if its future is dropped before
    /// the reply comes, the reply would go to the next caller, so the pool
    /// drops the connection. Not a failure of the node.
    pub(crate) in_flight: bool,
    /// What the caller's commands left behind (an open `MULTI`, a `SELECT`
    /// ...): a connection whose session changed is dropped, not handed on.
    pub(crate) session: Session,
    pub(crate) cell: Arc<HealthCell>,
    /// The node's near cache, if it has one: writes sent here fence it.
    pub(crate) near: Option<Arc<NearCache>>,
    /// The node's part in a resize: every command asks it.
    pub(crate) resize: Arc<Resizing>,
}

impl<C> TrackedConn<C> {
    pub(crate) fn new(
        conn: C,
        epoch: u64,
        cell: Arc<HealthCell>,
        (near, resize): (Option<Arc<NearCache>>, Arc<Resizing>),
    ) -> Self {
        TrackedConn {
            conn,
            epoch,
            broken: false,
            in_flight: false,
            session: Session::default(),
            cell,
            near,
            resize,
        }
    }

    /// Follows what `cmds`, about to be sent, do to its session.
    pub(crate) fn follow<'c>(&mut self, cmds: impl Iterator<Item = &'c Cmd>) {
        for cmd in cmds {
            self.session.apply(effect(words(cmd), &self.cell.commands));
        }
    }

    /// Reports an operation's outcome on this connection.
    pub(crate) fn observe(&mut self, failure: Option<Failure<'_>>) {
        self.broken |= self.cell.observe(failure, self.epoch);
    }

    /// Whether the pool must drop it rather than reuse it.
    pub(crate) fn is_spent(&self) -> bool {
        self.broken || self.in_flight || !self.session.is_clean() || self.epoch != self.cell.epoch()
    }
}

impl<C> Deref for TrackedConn<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.conn
    }
}

impl<C> DerefMut for TrackedConn<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}

/// `M` with its outcomes reported to the node's health: every node's pool
/// manages this instead of the user's `M`, so connect failures reach the
/// penalty box although bb8 never returns them to a caller.
pub(crate) struct Tracked<M> {
    pub(crate) inner: Arc<M>,
    pub(crate) cell: Arc<HealthCell>,
    pub(crate) near: Option<Arc<NearCache>>,
    /// How long the server's table is waited for (`response_timeout`).
    pub(crate) within: Duration,
    pub(crate) resize: Arc<Resizing>,
}

impl<M> fmt::Debug for Tracked<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked").field("node", &self.cell.name).finish_non_exhaustive()
    }
}

impl<M: NodeManager> ManageConnection for Tracked<M> {
    type Connection = TrackedConn<M::Connection>;
    type Error = M::Error;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let epoch = self.cell.epoch();
        let mut conn = self.cell.connected(epoch, self.inner.connect().await)?;
        if !learn(&mut conn, &self.cell, epoch, self.within).await {
            // Its `COMMAND` went unanswered: a fresh connection, not asked.
            conn = self.cell.connected(epoch, self.inner.connect().await)?;
        }
        Ok(TrackedConn::new(
            conn,
            epoch,
            self.cell.clone(),
            (self.near.clone(), self.resize.clone()),
        ))
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        let result = self.inner.is_valid(&mut conn.conn).await;
        if let Err(e) = &result {
            conn.observe(Some(connect_failure(e)));
        }
        result
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.is_spent() || self.inner.has_broken(&mut conn.conn)
    }
}
