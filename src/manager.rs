//! The bb8 `ManageConnection` wrapper that reports to a node's health.
//!
//! Every node's bb8 pool manages `Tracked<M>` instead of the user's `M`, so
//! connect failures reach the penalty box even though bb8 itself never
//! returns them to a caller, and connections that saw a failure, or that
//! date from before the node was last boxed, are dropped instead of reused.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bb8::ManageConnection;

use crate::health::FailureKind;
use crate::node::NodeHealth;

/// Tells which errors of a connection manager are node failures.
///
/// Implemented for [`redis::RedisError`], so [`RedisManager`](crate::RedisManager),
/// `bb8_redis::RedisConnectionManager` and any manager whose error is a
/// `RedisError` can be sharded. Implement it for your own manager's error
/// type to shard other connections.
///
/// Return `None` for errors that say nothing about the node's health, such
/// as ordinary error replies. Every error while *connecting* counts as a
/// failure; `None` there is recorded as [`FailureKind::Connect`].
pub trait ClassifyFailure: fmt::Display {
    /// The kind of node failure this error shows, if any.
    fn failure_kind(&self) -> Option<FailureKind>;
}

/// For managers whose connections are plain sockets.
impl ClassifyFailure for std::io::Error {
    fn failure_kind(&self) -> Option<FailureKind> {
        use std::io::ErrorKind as K;
        Some(match self.kind() {
            K::ConnectionRefused => FailureKind::Refused,
            K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::NotConnected => FailureKind::Dropped,
            K::TimedOut | K::WouldBlock => FailureKind::Timeout,
            _ => FailureKind::Io,
        })
    }
}

/// `M` with its failures reported to the node's health.
pub(crate) struct Tracked<M> {
    pub(crate) inner: Arc<M>,
    pub(crate) health: Arc<NodeHealth>,
}

impl<M> fmt::Debug for Tracked<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked")
            .field("node", &self.health.name)
            .finish_non_exhaustive()
    }
}

/// A connection of `Tracked<M>`: the user's connection plus what the pool
/// needs to judge it.
pub(crate) struct TrackedConn<C> {
    pub(crate) conn: C,
    /// The node's epoch when the connection was made.
    pub(crate) epoch: u64,
    /// Set once the connection saw a failure; bb8 then drops it.
    pub(crate) broken: bool,
    pub(crate) health: Arc<NodeHealth>,
}

impl<C> TrackedConn<C> {
    pub(crate) fn new(conn: C, epoch: u64, health: Arc<NodeHealth>) -> Self {
        TrackedConn {
            conn,
            epoch,
            broken: false,
            health,
        }
    }

    /// Reports the outcome of one operation on this connection.
    pub(crate) fn observe<T, E: ClassifyFailure>(&mut self, result: &Result<T, E>) {
        if self.health.observe(result, self.epoch) {
            self.broken = true;
        }
    }

    /// Marks the connection broken and reports `kind` to the node.
    pub(crate) fn fail(&mut self, kind: FailureKind, detail: &dyn fmt::Display) {
        self.broken = true;
        self.health.report_failure(kind, self.epoch, detail);
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

impl<M: NodeManager> ManageConnection for Tracked<M> {
    type Connection = TrackedConn<M::Connection>;
    type Error = M::Error;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let epoch = self.health.epoch();
        match self.inner.connect().await {
            Ok(conn) => {
                self.health.report_success();
                Ok(TrackedConn::new(conn, epoch, self.health.clone()))
            }
            Err(e) => {
                let kind = e.failure_kind().unwrap_or(FailureKind::Connect);
                self.health.report_failure(kind, epoch, &e);
                Err(e)
            }
        }
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        let result = self.inner.is_valid(&mut conn.conn).await;
        if let Err(e) = &result {
            let kind = e.failure_kind().unwrap_or(FailureKind::Connect);
            conn.fail(kind, e);
        }
        result
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.broken || conn.epoch != self.health.epoch() || self.inner.has_broken(&mut conn.conn)
    }
}

/// A bb8 connection manager the pool can shard: any [`ManageConnection`]
/// whose error implements [`ClassifyFailure`]. Implemented automatically;
/// it only names that pair of bounds.
pub trait NodeManager: ManageConnection<Error: ClassifyFailure> {}

impl<M: ManageConnection<Error: ClassifyFailure>> NodeManager for M {}
