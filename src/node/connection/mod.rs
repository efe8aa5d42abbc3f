//! The connections handed to callers: [`Connection`] from a node's pool,
//! [`SharedConnection`] a clone of its multiplexed connection. Both report
//! every outcome, error *or* error reply, to their node through one
//! [`ConnectionLike`](redis::aio::ConnectionLike) body, which also hides `aside`'s leases from their
//! readers (`lease.rs`). Here the two types; what they are to the send
//! body (`observed.rs`); the body itself (`send.rs`); the keys a
//! transaction opened by hand claimed, claimed again at its `EXEC`
//! (`claims.rs`).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bb8::PooledConnection;

use redis::{ErrorKind, RedisError, RedisResult, Value};

use crate::backend::manager::RedisManager;
use crate::backend::near::{HeldFence, NearCache};
use crate::health::failure::FailureKind;
use crate::node::shared::SharedSocket;
use crate::node::tracked::{NodeManager, Tracked};
use crate::stand_in::writes::StandIn;

pub(crate) use claims::Claims;

mod claims;
mod observed;
mod send;

#[cfg(feature = "r2d2")]
pub(crate) use observed::Observed;
#[cfg(feature = "r2d2")]
pub(crate) use observed::pooled_parts;
#[cfg(feature = "r2d2")]
pub(crate) use send::{many, one};

/// A connection checked out of one node's pool; it goes back when dropped.
///
/// It derefs to the manager's connection (for [`RedisManager`] a
/// [`redis::aio::MultiplexedConnection`]). For Redis connections it also
/// implements [`redis::aio::ConnectionLike`] itself, so `query_async` and
/// [`redis::AsyncCommands`] work on it directly, and every reply is checked:
/// an I/O error, a timeout or a node's error reply (`LOADING`, `READONLY`,
/// `NOAUTH`, `MASTERDOWN`) marks the connection broken (the pool drops it
/// instead of reusing it) and counts against its node's health. So does a
/// command whose future was dropped before its reply came. A string reply
/// that is an [`aside`](crate::ShardedPool::aside) lease reads as nil (a
/// miss), alone or inside an array. Commands sent through the deref'd
/// inner connection bypass those checks.
pub struct Connection<M: NodeManager = RedisManager> {
    conn: PooledConnection<'static, Tracked<M>>,
    home: bool,
    stand_in: Option<Box<StandIn>>,
    /// The near-cache fences of the writes queued in its open transaction,
    /// lifted after `EXEC`'s or `DISCARD`'s reply, or when it goes back.
    queued: Vec<HeldFence>,
    /// The keys its open transaction writes that moved away from its node
    /// (`node/warm.rs`): their new homes' copies go once it ends.
    away: Vec<Vec<u8>>,
    /// The keys moved here that its open transaction's writes claimed
    /// (`connection/claims.rs`): claimed again when its `EXEC` is sent.
    claims: Claims,
}

impl<M: NodeManager> Connection<M> {
    pub(crate) fn new(
        conn: PooledConnection<'static, Tracked<M>>,
        home: bool,
        stand_in: Option<Box<StandIn>>,
    ) -> Self {
        let (queued, away, claims) = (Vec::new(), Vec::new(), Claims::default());
        Connection { conn, home, stand_in, queued, away, claims }
    }

    /// The name of the node this connection belongs to.
    pub fn node(&self) -> &str {
        &self.conn.cell.name
    }

    /// Whether this node is the key's home. False when a stand-in serves
    /// the key (its home is boxed, or still warming up): what is written
    /// here will be stale once the key goes home, so give it a short TTL.
    pub fn is_home(&self) -> bool {
        self.home
    }

    /// Reports a failure seen on this connection: the connection is dropped
    /// instead of returned to the pool, and the failure counts against the
    /// node (a [`FailureKind::Timeout`] boxes it only after several in a
    /// row). Redis connections report by themselves; this is for
    /// connections of other managers, whose replies the pool cannot see.
    pub fn report_failure(&mut self, kind: FailureKind) {
        self.conn.observe(Some((kind, &"reported by the caller")));
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
        f.debug_struct("Connection").field("node", &self.conn.cell.name).finish_non_exhaustive()
    }
}

/// A clone of one node's multiplexed connection, from
/// [`ShardedPool::get_shared`](crate::ShardedPool::get_shared).
///
/// Cheap to get and to drop (nothing goes back to a pool); many tasks' clones
/// pipeline their commands on the same socket. Like [`Connection`] it
/// implements [`redis::aio::ConnectionLike`] and reports every failure: the
/// multiplexed connection is then replaced on the next `get_shared`, and the
/// failure counts against the node. Not for commands that change the
/// connection's state (`SELECT`, `SUBSCRIBE`, `MULTI`/`WATCH`, blocking
/// pops): those need a connection of their own, from
/// [`get`](crate::ShardedPool::get).
pub struct SharedConnection<M: NodeManager = RedisManager> {
    conn: M::Connection,
    mux: Arc<SharedSocket<M::Connection>>,
    home: bool,
    stand_in: Option<Box<StandIn>>,
}

impl<M: NodeManager> SharedConnection<M>
where
    M::Connection: Clone,
{
    pub(crate) fn new(
        mux: Arc<SharedSocket<M::Connection>>,
        home: bool,
        stand_in: Option<Box<StandIn>>,
    ) -> Self {
        SharedConnection { conn: mux.conn.clone(), mux, home, stand_in }
    }
}

impl<M: NodeManager> SharedConnection<M> {
    /// The name of the node this connection belongs to.
    pub fn node(&self) -> &str {
        &self.mux.cell.name
    }

    /// Whether this node is the key's home; see [`Connection::is_home`].
    pub fn is_home(&self) -> bool {
        self.home
    }

    /// Its node's near cache, if it has one.
    pub(crate) fn near_cache(&self) -> Option<&NearCache> {
        self.mux.near.as_deref()
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
            .field("node", &self.mux.cell.name)
            .finish_non_exhaustive()
    }
}

/// A reply's error, if it is one: what `req_packed_command` returns.
pub(crate) fn own_reply(value: Value) -> RedisResult<Value> {
    match value {
        Value::ServerError(e) => Err(e.into()),
        value => Ok(value),
    }
}

/// The one reply of a command sent with its stand-in's own
/// ([`StandIn::replies`] hands back the caller's alone), as
/// `req_packed_command` returns it.
pub(crate) fn only_reply(values: Vec<Value>) -> RedisResult<Value> {
    let missing = || RedisError::from((ErrorKind::Client, "no reply to the command"));
    values.into_iter().next().ok_or_else(missing).and_then(own_reply)
}
