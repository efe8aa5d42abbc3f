//! The lease an `aside` call holds: its fill, and its give-back when the
//! fill fails or the call is dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::ToRedisArgs;
use redis::aio::ConnectionLike;

use super::outcome::{Outcome, count};
use super::wire::{GIVE_BACK, STORE, eval, eval_on, millis, storable};
use crate::error::{Error, OnNode};
use crate::node::tracked::NodeManager;
use crate::pool::ShardedPool;

/// A lease this call holds, or may hold (its [`TAKE`] in flight): given
/// back when dropped unless settled (its value stored, the lease given
/// back already, or not taken), so that a caller that stops waiting, or a
/// fill that panics, frees the key at once rather than after the lease
/// time. The give-back deletes only this call's lease: a key that holds
/// anything else is left as it is.
pub(super) struct LeaseGuard<'a, M>
where
    M: NodeManager,
    M::Connection: Clone + ConnectionLike + Send,
{
    pub(super) pool: &'a ShardedPool<M>,
    pub(super) key: &'a [u8],
    /// `aside_early`'s companion key, where the fill's time is stored.
    pub(super) delta: Option<&'a [u8]>,
    pub(super) token: Vec<u8>,
    pub(super) settled: bool,
}

impl<M> LeaseGuard<'_, M>
where
    M: NodeManager,
    M::Connection: Clone + ConnectionLike + Send,
{
    /// Runs the fill, and stores its value with `ttl` if the lease is
    /// still there.
    pub(super) async fn fill<V, Fut, E>(
        mut self,
        ttl: Duration,
        fill: impl FnOnce() -> Fut,
    ) -> Result<V, Error>
    where
        V: ToRedisArgs,
        Fut: Future<Output = Result<V, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let value = match fill().await {
            Ok(value) => value,
            Err(e) => {
                self.give_back().await;
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                return Err(Error::Fill(Arc::from(e)));
            }
        };
        let took = millis(started.elapsed());
        let arg = match storable(&value) {
            Ok(arg) => arg,
            Err(refused) => {
                self.give_back().await;
                return Err(refused);
            }
        };
        // The key's node now, which a failover may have changed.
        let mut conn = self.pool.get_shared(self.key).await?;
        let keys: &[&[u8]] = match self.delta {
            Some(delta) => &[self.key, delta],
            None => &[self.key],
        };
        let mut store = eval_on(STORE, keys, &self.token);
        store.arg(arg).arg(millis(ttl)).arg(took);
        let stored: i64 = store.query_async(&mut conn).await.on(conn.node())?;
        self.settled = true;
        count(conn.node(), if stored == 1 { Outcome::Filled } else { Outcome::Voided });
        Ok(value)
    }

    /// The fill failed: gives the lease back now, on the key's node now
    /// (which a failover may have changed). If that fails, the drop tries
    /// again; the caller gets the fill's failure either way.
    async fn give_back(&mut self) {
        let Ok(mut conn) = self.pool.get_shared(self.key).await else { return };
        count(conn.node(), Outcome::Failed);
        let given: Result<i64, _> =
            eval(GIVE_BACK, self.key, &self.token).query_async(&mut conn).await;
        self.settled = given.is_ok();
    }
}

impl<M> Drop for LeaseGuard<'_, M>
where
    M: NodeManager,
    M::Connection: Clone + ConnectionLike + Send,
{
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Best effort, on the runtime the call ran on: without one, or if
        // the node cannot be reached, the lease ends by itself.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (pool, key, token) =
            (self.pool.clone(), self.key.to_vec(), std::mem::take(&mut self.token));
        let panicked = std::thread::panicking();
        runtime.spawn(async move {
            let Ok(mut conn) = pool.get_shared(&key).await else { return };
            let given: Result<i64, _> = eval(GIVE_BACK, &key, &token).query_async(&mut conn).await;
            if given.is_ok() && panicked {
                count(conn.node(), Outcome::Failed);
            }
        });
    }
}
