//! Where a node's connections live (its store: a bb8 pool here, or the
//! synchronous flavour's r2d2 pool in `blocking.rs`), and what a checkout
//! from it can end in.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::{Pipeline, RedisResult, Value};

use crate::error::Error;
use crate::health::failure::{FailureKind, failure};
use crate::health::record::PoolStats;
use crate::node::Node;
use crate::node::clock::Clock;
use crate::node::lease::unmark;
use crate::node::probe::{failed, timed_out};
use crate::node::tracked::{ConnectionAbilities, NodeManager, Tracked, TrackedConn};
use crate::settings::Settings;

/// Why a checkout from one node did not give a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CheckoutError {
    /// The node is in the box, or was boxed while we waited: try the next.
    Boxed,
    /// The node's pool stayed busy for the whole checkout timeout.
    TimedOut(Duration),
    /// A connect failed and the cascade guard kept the node in rotation:
    /// the failure goes to the caller.
    Failed(FailureKind),
}

impl CheckoutError {
    /// What the caller sees when a checkout from `node` ends so.
    pub(crate) fn into_error(self, node: &str) -> Error {
        let node = node.to_owned();
        match self {
            CheckoutError::Boxed => Error::NodeDown { node },
            CheckoutError::TimedOut(waited) => Error::Timeout { node, waited },
            CheckoutError::Failed(failure) => Error::NodeFailed { node, failure },
        }
    }
}

/// One attempt of a checkout race.
pub(crate) enum Try<T> {
    /// Here it is.
    Done(T),
    /// Nothing yet (a connect failed below the threshold, a connection was
    /// stale, a blocking wait's slice ended): look at the node again and
    /// retry.
    Retry,
    /// The attempt's own timeout ran out.
    TimedOut,
}

/// Where a node's connections live: a bb8 pool, or the synchronous
/// flavour's r2d2 pool.
pub(crate) trait Store<M: NodeManager>: Send + Sync + Sized + 'static {
    /// What the store holds and has done.
    fn stats(&self) -> PoolStats;
    /// Closes the idle connections now (the node was boxed: their sockets
    /// must not hold the server's client slots while it is probed).
    fn release(&self);
    /// Keeps a probe's connection, warm, if it can hold one of its kind.
    fn adopt(&self, conn: TrackedConn<M::Connection>);
    /// The heartbeat on one of its connections: `manager`'s check (for
    /// Redis a `PING`) within `timeout`, its outcome reported to the
    /// connection's node. A connect that fails reports itself.
    fn heartbeat(&self, manager: &Arc<M>, timeout: Duration) -> impl Future<Output = ()> + Send;
    /// The pool's own `pipe` (a resize's reads and deletes) on one of the
    /// store's connections, taken through `node`'s checkout race by
    /// `clock`'s deadline: for a node whose shared connection cannot carry
    /// it ([`ConnectionAbilities::send_shared`]). Judged by the one
    /// classifier; the replies as fluster's readers see them.
    fn send_pooled(
        node: Arc<Node<M, Self>>,
        clock: Clock,
        pipe: Pipeline,
    ) -> BoxFuture<'static, RedisResult<Vec<Value>>>;
}

/// What a resize's own command sees of a checkout that gave no connection.
pub(crate) fn gone(e: CheckoutError, node: &str) -> redis::RedisError {
    let e = e.into_error(node);
    redis::RedisError::from((redis::ErrorKind::Io, "no connection", e.to_string()))
}

/// A node's bb8 pool.
pub(crate) type Bb8<M> = bb8::Pool<Tracked<M>>;

impl<M: NodeManager> Store<M> for Bb8<M> {
    fn stats(&self) -> PoolStats {
        let state = self.state();
        let s = state.statistics;
        PoolStats {
            connections: state.connections,
            idle_connections: state.idle_connections,
            checkouts_waited: s.get_waited,
            checkouts_timed_out: s.get_timed_out,
            closed_broken: s.connections_closed_broken + s.connections_closed_invalid,
            closed_idle: s.connections_closed_idle_timeout,
            closed_lifetime: s.connections_closed_max_lifetime,
        }
    }

    fn release(&self) {
        // bb8 has no way to drop its idle connections, but hands them out
        // without waiting: take each and mark it broken, and bb8 drops it.
        while self.state().idle_connections > 0 {
            match self.get().now_or_never() {
                Some(Ok(mut conn)) => conn.broken = true,
                _ => break,
            }
        }
    }

    fn adopt(&self, conn: TrackedConn<M::Connection>) {
        // A full pool just means the connection is not needed.
        let _ = self.add(conn);
    }

    async fn heartbeat(&self, manager: &Arc<M>, timeout: Duration) {
        // A pool too busy to lend a connection has traffic to tell the
        // truth: nothing to do.
        let Ok(Ok(mut conn)) = tokio::time::timeout(timeout, self.get()).await else { return };
        if conn.epoch != conn.cell.epoch() {
            conn.broken = true;
            return;
        }
        let checked = tokio::time::timeout(timeout, manager.is_valid(&mut conn.conn)).await;
        let outcome =
            checked.map_err(|_| timed_out(timeout)).and_then(|r| r.map_err(|e| failed(&e)));
        conn.observe(
            outcome.as_ref().err().map(|(kind, error)| (*kind, error as &dyn fmt::Display)),
        );
    }

    fn send_pooled(
        node: Arc<Node<M, Self>>,
        clock: Clock,
        pipe: Pipeline,
    ) -> BoxFuture<'static, RedisResult<Vec<Value>>> {
        Box::pin(async move {
            let mut conn = node.checkout(&clock).await.map_err(|e| gone(e, node.name()))?;
            let tracked: &mut TrackedConn<M::Connection> = &mut conn;
            let Some(wire) = tracked.conn.redis() else {
                return Err((redis::ErrorKind::Client, "not a Redis connection").into());
            };
            // Dropped before its reply, the connection is not reused.
            tracked.in_flight = true;
            let mut replies = wire.req_packed_commands(&pipe, 0, pipe.len()).await;
            tracked.in_flight = false;
            tracked.observe(failure(&replies));
            if let Ok(values) = &mut replies {
                values.iter_mut().for_each(unmark);
            }
            replies
        })
    }
}

/// The bb8 pool of a node of the async flavour.
pub(crate) fn bb8_pool<M: NodeManager>(settings: &Settings, manager: Tracked<M>) -> Bb8<M> {
    bb8::Pool::builder()
        .max_size(settings.max_connections)
        .min_idle(settings.min_idle)
        .idle_timeout(settings.idle_timeout)
        .max_lifetime(settings.max_lifetime)
        .test_on_check_out(settings.test_on_checkout)
        .connection_timeout(settings.checkout_timeout)
        // Each failed connect must reach the penalty box, not be retried
        // quietly until the checkout times out.
        .retry_connection(false)
        .build_unchecked(manager)
}
