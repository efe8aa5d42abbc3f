//! Cache-aside with leases ([`ShardedPool::aside`]), over the pool's
//! public API: a miss takes a lease in the key itself, only its holder
//! fills, and its value is stored only while the lease is still there.
//!
//! The lease is the key's own value while a fill runs (a string that
//! begins with fluster's lease [`MARK`], `PX <lease time>`), so it lives
//! where the key lives (its home, or a stand-in while the home is boxed,
//! capped like any stand-in write), a `DEL` of the key voids it, and it
//! ends by itself if its holder dies. A holder that gives up (its fill
//! failed or panicked, or its caller dropped the call) gives it back at
//! once. fluster's readers never see it (`node/lease.rs`): `aside` tells a
//! lease from a value with one script (`wire.rs`'s `TAKE`).
//! `guard.rs` holds a lease and fills; `outcome.rs` counts what became of
//! each call.
//!
//! [`aside_early`](ShardedPool::aside_early) (`early.rs`) adds early
//! refresh over the same lease: a hit close to its expiry refills in the
//! background, the key keeping its value meanwhile.

use std::future::Future;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{FromRedisValue, ToRedisArgs, Value};

use crate::error::{Error, OnNode};
use crate::node::connection::SharedConnection;
use crate::node::lease::MARK;
use crate::node::tracked::NodeManager;
use crate::pool::ShardedPool;
use guard::LeaseGuard;
use outcome::{Outcome, count};
use wire::{Found, TAKE, eval, found, millis, token};

mod early;
mod guard;
mod outcome;
mod wire;

/// The first and the longest pause of a caller waiting for a fill.
const FIRST_WAIT: Duration = Duration::from_millis(1);
const LONGEST_WAIT: Duration = Duration::from_millis(50);

impl<M: NodeManager> ShardedPool<M>
where
    M::Connection: Clone + ConnectionLike + Send,
{
    /// Cache-aside with leases: the value of `key`, read through
    /// [`get_shared`](Self::get_shared) (from the near cache when it is
    /// on); on a miss, `fill`'s value, stored with `ttl` by one caller.
    ///
    /// A miss takes a lease on the key (in the key itself, for
    /// [`lease`](crate::Builder::lease), 3 s by default). Only the holder
    /// runs its `fill`, and stores the value only if its lease is still
    /// there: a `DEL` of the key while the fill runs voids the lease, and
    /// the value is returned to its caller but not stored, so a slow fill
    /// never stores a value older than the delete. Every other caller
    /// waits for the value (polling with back-off from 1 to 50 ms) and
    /// returns it without running its `fill`; if the lease ends without a
    /// value (its holder died), one of them takes the lease over and
    /// fills. A holder that gives up gives its lease back at once: its
    /// fill returned an error or panicked (the panic goes on to its
    /// caller), or its caller dropped the call (the lease is given back by
    /// a task spawned on the runtime). Nobody waits longer than the lease
    /// time plus one fill, whatever the key holds: a lease-looking value
    /// with no TTL, or a longer one than a lease, is no lease, and is
    /// filled over.
    ///
    /// While a fill runs, every other read of the key through fluster
    /// (`get`, `get_shared`, `get_cached`, `mget`, pipelines, the sync
    /// flavour) sees a miss, never the lease; a client outside fluster
    /// sees the lease's raw value, which begins with `"\0fluster:lease:"`.
    ///
    /// Through failover the lease and the value live on the stand-in, and
    /// are capped by [`stand_in_ttl`](crate::Builder::stand_in_ttl) like
    /// any stand-in write.
    ///
    /// `V` is stored as one Redis argument and read back as Redis reads
    /// it: `String`, `Vec<u8>`, numbers. A value that writes more or fewer
    /// than one argument (a `Vec` of several items, `None`), or that
    /// begins with the lease's mark, cannot be stored as it is: it is
    /// refused with an [`Error::Redis`] of kind `Client` naming the
    /// problem, nothing stored, the lease given back. To cache a struct,
    /// encode it as one string (below) or give it your own
    /// [`ToRedisArgs`] and [`FromRedisValue`].
    ///
    /// Errors: `fill`'s own, any error that converts into
    /// `Box<dyn Error + Send + Sync>` (`std::io::Error`, a boxed error,
    /// `anyhow::Error`, ...), as [`Error::Fill`] with that error as its
    /// source (nothing stored, the lease given back); the pool's as from
    /// `get_shared`; a failed command of its own as [`Error::Command`],
    /// which names the node (``node `cache-b`: timed out``) and keeps
    /// `redis`'s error as it is ([`Error::redis_error`]: `is_timeout()`,
    /// `is_connection_dropped()`, `kind()`).
    ///
    /// ```no_run
    /// # async fn load_user(id: u64) -> Result<String, std::io::Error> { Ok(String::new()) }
    /// # async fn run(pool: fluster::ShardedPool) -> Result<(), fluster::Error> {
    /// use std::time::Duration;
    /// let name: String = pool
    ///     .aside("user:42", Duration::from_secs(300), || async { load_user(42).await })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// A struct, as one argument of your own encoding (or as JSON: encode
    /// it with `serde_json::to_string` in the fill, and cache the `String`;
    /// the README shows it):
    ///
    /// ```no_run
    /// # async fn run(pool: fluster::ShardedPool) -> Result<(), fluster::Error> {
    /// use fluster::redis::{self, FromRedisValue, RedisWrite, ToRedisArgs, Value};
    /// # use std::time::Duration;
    ///
    /// struct User { id: u64, name: String }
    ///
    /// impl ToRedisArgs for User {
    ///     fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
    ///         out.write_arg_fmt(format_args!("{}:{}", self.id, self.name)); // one argument
    ///     }
    /// }
    ///
    /// impl FromRedisValue for User {
    ///     fn from_redis_value(v: Value) -> Result<Self, redis::ParsingError> {
    ///         let text: String = redis::from_redis_value(v)?;
    ///         let (id, name) = text.split_once(':').ok_or("not a user")?;
    ///         let id = id.parse().map_err(|_| "not a user id")?;
    ///         Ok(User { id, name: name.to_owned() })
    ///     }
    /// }
    ///
    /// let user: User = pool
    ///     .aside("user:42", Duration::from_secs(300), || async {
    ///         Ok::<_, std::io::Error>(User { id: 42, name: "Ada".to_owned() })
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[doc = include_str!("../../docs/aside.md")]
    pub async fn aside<K, V, F, Fut, E>(&self, key: K, ttl: Duration, fill: F) -> Result<V, Error>
    where
        K: AsRef<[u8]>,
        V: FromRedisValue + ToRedisArgs,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let key = key.as_ref();
        // A hit: a plain `GET`, from the near cache when it holds it. A
        // lease reads as a miss.
        let mut conn = self.get_shared(key).await?;
        let value: Value =
            redis::cmd("GET").arg(key).query_async(&mut conn).await.on(conn.node())?;
        if value != Value::Nil {
            return Ok(V::from_redis_value(value)?);
        }
        self.on_miss(key, conn, ttl, fill, None).await
    }

    /// A miss of `key` (read on `conn`): the lease is taken, or waited
    /// for. With `delta`, `aside_early`'s companion key of `key`, a fill's
    /// time is stored there beside its value.
    async fn on_miss<V, F, Fut, E>(
        &self,
        key: &[u8],
        mut conn: SharedConnection<M>,
        ttl: Duration,
        fill: F,
        delta: Option<&[u8]>,
    ) -> Result<V, Error>
    where
        V: FromRedisValue + ToRedisArgs,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let lease = millis(self.core.settings.lease);
        let mut held = LeaseGuard { pool: self, key, delta, token: token(), settled: true };
        let mut waited: Option<Duration> = None;
        loop {
            let mut take = eval(TAKE, key, &held.token);
            take.arg(MARK).arg(lease);
            // Unsettled while it is in flight: dropped then, the call may
            // hold the lease without knowing.
            held.settled = false;
            let reply: Vec<Value> = take.query_async(&mut conn).await.on(conn.node())?;
            match found(reply)? {
                Found::Taken => {
                    if waited.is_some() {
                        count(conn.node(), Outcome::TookOver);
                    }
                    return held.fill(ttl, fill).await;
                }
                Found::Value(value) => {
                    held.settled = true;
                    if waited.is_some() {
                        count(conn.node(), Outcome::Waited);
                    }
                    return Ok(V::from_redis_value(value)?);
                }
                Found::Lease => {
                    held.settled = true;
                    // The lease ends by itself (`PX`) if its holder does
                    // not store: the key is then read empty and taken.
                    let pause = waited.get_or_insert(FIRST_WAIT);
                    tokio::time::sleep(*pause).await;
                    *pause = (*pause * 2).min(LONGEST_WAIT);
                }
            }
            // The key's node now, which a failover may have changed.
            conn = self.get_shared(key).await?;
        }
    }
}
