//! The synchronous flavour's store (feature `r2d2`): a node's r2d2 pool of
//! blocking connections, beside the async flavour's bb8 pool
//! (`store.rs`), with the same tracking of each connection's health.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::{Cmd, ConnectionLike, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::backend::manager::RedisManager;
use crate::health::failure::failure;
use crate::health::record::PoolStats;
use crate::node::clock::Clock;
use crate::node::learn::learn_blocking;
use crate::node::lease::unmark;
use crate::node::store::gone;
use crate::node::tracked::{ConnectionAbilities, Tracked, TrackedConn};
use crate::node::{CheckoutError, Node, Store, Try};
use crate::settings::Settings;

/// A node's r2d2 pool.
pub(crate) type R2d2 = r2d2::Pool<Tracked<RedisManager>>;

impl r2d2::ManageConnection for Tracked<RedisManager> {
    type Connection = TrackedConn<redis::Connection>;
    type Error = RedisError;

    fn connect(&self) -> RedisResult<Self::Connection> {
        let epoch = self.cell.epoch();
        let mut conn = self.cell.connected(epoch, self.inner.connect_blocking())?;
        if !learn_blocking(&mut conn, &self.cell, epoch) {
            // Its `COMMAND` went unanswered: its reply may come yet, and the
            // next command would read it. A fresh connection, not asked.
            conn = self.cell.connected(epoch, self.inner.connect_blocking())?;
        }
        Ok(TrackedConn::new(conn, epoch, self.cell.clone(), (None, self.resize.clone())))
    }

    fn is_valid(&self, conn: &mut Self::Connection) -> RedisResult<()> {
        ping(conn)
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.is_spent() || !conn.conn.is_open()
    }
}

/// A `PING` on `conn`, its outcome reported.
fn ping(conn: &mut TrackedConn<redis::Connection>) -> RedisResult<()> {
    let result = redis::cmd("PING").query::<Value>(&mut conn.conn);
    conn.observe(failure(&result));
    result.map(drop)
}

impl Store<RedisManager> for R2d2 {
    fn stats(&self) -> PoolStats {
        let state = self.state();
        PoolStats {
            connections: state.connections,
            idle_connections: state.idle_connections,
            ..PoolStats::default()
        }
    }

    fn release(&self) {
        // `try_get` hands out an idle connection or nothing, never waits.
        while let Some(mut conn) = self.try_get() {
            conn.broken = true;
        }
    }

    /// r2d2 holds blocking connections: the probe's async one closes.
    fn adopt(&self, _: TrackedConn<redis::aio::MultiplexedConnection>) {}

    /// A blocking `PING` (bounded by the connection's timeouts), on the
    /// prober's blocking threads.
    async fn heartbeat(&self, _: &Arc<RedisManager>, timeout: Duration) {
        let pool = self.clone();
        let beat = tokio::task::spawn_blocking(move || {
            if let Some(mut conn) = pool.get_timeout(timeout).ok().filter(|c| !c.is_spent()) {
                let _ = ping(&mut conn);
            }
        });
        let _ = beat.await;
    }

    /// Unused by Redis nodes (their shared connection carries the pool's
    /// own commands): a blocking checkout on the runtime's blocking threads.
    fn send_pooled(
        node: Arc<Node<RedisManager, Self>>,
        clock: Clock,
        pipe: Pipeline,
    ) -> BoxFuture<'static, RedisResult<Vec<Value>>> {
        Box::pin(async move {
            let sent = tokio::task::spawn_blocking(move || {
                let mut conn = node.checkout_blocking(&clock).map_err(|e| gone(e, node.name()))?;
                let bytes = pipe.get_packed_pipeline();
                let mut replies = conn.conn.req_packed_commands(&bytes, 0, pipe.len());
                conn.observe(failure(&replies));
                if let Ok(values) = &mut replies {
                    values.iter_mut().for_each(unmark);
                }
                replies
            });
            let stopped = |e: tokio::task::JoinError| {
                RedisError::from((
                    redis::ErrorKind::Client,
                    "blocking command stopped",
                    e.to_string(),
                ))
            };
            sent.await.map_err(stopped)?
        })
    }
}

/// A blocking read past its timeout fails as `EAGAIN` ("Resource
/// temporarily unavailable"): said here as the async flavour says it, a
/// `TimedOut` I/O error (`is_timeout()` is true either way).
pub(crate) fn timed_out(e: RedisError) -> RedisError {
    if !e.is_timeout() {
        return e;
    }
    let text = "timed out: no reply within the response timeout";
    std::io::Error::new(std::io::ErrorKind::TimedOut, text).into()
}

/// A blocking connection as the wire of the one send body
/// (`node/connection/send.rs`), which the synchronous flavour's
/// connection runs while its node is part of a resize: each future is
/// ready at once (the command is sent and its reply read, blocking, when
/// the future is made).
impl redis::aio::ConnectionLike for TrackedConn<redis::Connection> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let reply = self.conn.req_packed_command(&cmd.get_packed_command()).map_err(timed_out);
        Box::pin(std::future::ready(reply))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let bytes = pipeline.get_packed_pipeline();
        let replies = self.conn.req_packed_commands(&bytes, offset, count).map_err(timed_out);
        Box::pin(std::future::ready(replies))
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// The send body asks nothing more of it.
impl ConnectionAbilities for TrackedConn<redis::Connection> {}

/// The r2d2 pool of a node of the synchronous flavour.
pub(crate) fn r2d2_pool(settings: &Settings, manager: Tracked<RedisManager>) -> R2d2 {
    r2d2::Pool::builder()
        .max_size(settings.max_connections)
        // Connect lazily unless told otherwise: r2d2 keeps reconnecting to
        // a dead node in the background to hold `min_idle`.
        .min_idle(settings.min_idle.or(Some(0)))
        .idle_timeout(settings.idle_timeout)
        .max_lifetime(settings.max_lifetime)
        .test_on_check_out(settings.test_on_checkout)
        .connection_timeout(settings.checkout_timeout)
        // Failures are reported to the node's health, not logged.
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(manager)
}

/// How long one blocking wait for a connection lasts before the node's
/// health is looked at again: the most a checkout can lag behind its node
/// being boxed.
const SLICE: Duration = Duration::from_millis(5);

impl Node<RedisManager, R2d2> {
    /// A connection from the node's r2d2 pool by the clock's deadline,
    /// through the blocking twin of the checkout race: a dead node is left
    /// within [`SLICE`] of being boxed.
    pub(crate) fn checkout_blocking(
        &self,
        clock: &Clock,
    ) -> Result<r2d2::PooledConnection<Tracked<RedisManager>>, CheckoutError> {
        self.race_blocking(clock, SLICE, |slice| match self.store.get_timeout(slice) {
            Ok(conn) => self.fresh(conn, clock),
            Err(_) => Try::Retry,
        })
    }
}
