//! A node's shared connection: the multiplexed connection `get_shared`
//! hands out clones of, whether it is still usable, and the figures of its
//! near cache.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::MultiplexedConnection;

use crate::cell::HealthCell;
use crate::failure::{Failure, failure};

/// The node's multiplexed connection, cloned by `get_shared`.
pub(crate) struct Muxed<C> {
    pub(crate) conn: C,
    pub(crate) epoch: u64,
    /// Set by the first caller that sees it fail, or (with a near cache)
    /// when its socket closes; the next `get_shared` then connects afresh.
    broken: Arc<AtomicBool>,
    /// The entries its near cache holds at most (0: none), and its
    /// figures when last sampled.
    pub(crate) near: usize,
    sampled: Mutex<[u64; 3]>,
    pub(crate) cell: Arc<HealthCell>,
}

impl<C> Muxed<C> {
    pub(crate) fn new(
        conn: C,
        epoch: u64,
        broken: Arc<AtomicBool>,
        near: usize,
        cell: Arc<HealthCell>,
    ) -> Self {
        Muxed { conn, epoch, broken, near, sampled: Mutex::default(), cell }
    }

    /// Whether it failed, or its socket closed.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    pub(crate) fn observe(&self, failure: Option<Failure<'_>>) {
        if self.cell.observe(failure, self.epoch) {
            self.broken.store(true, Ordering::Release);
        }
    }
}

impl<C: Any> Muxed<C> {
    /// With a near cache, reads answered from memory cannot show a
    /// partition (the socket open, nothing passing, no invalidation
    /// arriving): a `PING`, sent each second, does, and its timeout
    /// retires the connection with its entries.
    pub(crate) async fn heartbeat(&self) {
        let conn = (&self.conn as &dyn Any).downcast_ref::<MultiplexedConnection>();
        if let Some(mut conn) = conn.filter(|_| self.near > 0).cloned() {
            let pong = redis::cmd("PING").query_async::<redis::Value>(&mut conn).await;
            self.observe(failure(&pong));
        }
    }

    /// The hits, misses and invalidations of its near cache, if it has one,
    /// and its bound: since it connected, or (`sample`) since the last
    /// sample, for the metrics.
    pub(crate) fn near(&self, sample: bool) -> Option<([u64; 3], u64)> {
        let conn = (&self.conn as &dyn Any).downcast_ref::<MultiplexedConnection>();
        let stats = conn.filter(|_| self.near > 0)?.get_cache_statistics()?;
        let now = [stats.hit, stats.miss, stats.invalidate].map(|n| n as u64);
        let bound = self.near as u64;
        if !sample {
            return Some((now, bound));
        }
        let mut sampled = self.sampled.lock().unwrap_or_else(|e| e.into_inner());
        let since = std::array::from_fn(|i| now[i].saturating_sub(sampled[i]));
        *sampled = now;
        Some((since, bound))
    }
}
