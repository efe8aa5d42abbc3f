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
//! lease from a value with one script ([`TAKE`]).
//!
//! [`aside_early`](ShardedPool::aside_early) (`early.rs`) adds early
//! refresh over the same lease: a hit close to its expiry refills in the
//! background, the key keeping its value meanwhile.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, ToRedisArgs, Value};

use crate::error::{Error, OnNode};
use crate::health::record::ASIDE_OUTCOMES;
use crate::metrics::ASIDE_TOTAL;
use crate::node::connection::SharedConnection;
use crate::node::lease::{MARK, marked};
use crate::node::tracked::NodeManager;
use crate::pool::ShardedPool;

mod early;

/// The first and the longest pause of a caller waiting for a fill.
const FIRST_WAIT: Duration = Duration::from_millis(1);
const LONGEST_WAIT: Duration = Duration::from_millis(50);

/// What a miss finds, in one round trip: `{1, value}` if the key holds a
/// value; `{2}` if it holds a lease (a string beginning with the mark,
/// `ARGV[2]`, that ends within a lease time, `ARGV[3]` ms); otherwise the
/// caller's lease `ARGV[1]` is set and `{0}` returned. A mark with no TTL,
/// or a longer one, is no lease (a client wrote it): it is filled over,
/// so nobody waits on it longer than a lease.
const TAKE: &str = "local v = redis.call('GET', KEYS[1]) \
    if v then \
        if string.sub(v, 1, #ARGV[2]) ~= ARGV[2] then return {1, v} end \
        local left = redis.call('PTTL', KEYS[1]) \
        if left > 0 and left <= tonumber(ARGV[3]) then return {2} end \
    end \
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3]) return {0}";

/// Stores the value if the caller's lease is still the key's value: the
/// compare-and-set of a fill (a `DEL` meanwhile voids it). Sent as `EVAL`
/// (once per fill, so the script's text costs little, and needs no
/// `SCRIPT LOAD` on a node that restarted). For `aside_early`, the fill's
/// time (`ARGV[4]`, ms) goes to its companion key (`KEYS[2]`) with the
/// same TTL, unless that key holds another type (a user's data, kept).
const STORE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) \
    if KEYS[2] then local t = redis.call('TYPE', KEYS[2]).ok \
        if t == 'none' or t == 'string' then \
            redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[3]) end end \
    return 1 end return 0";

/// Deletes the key if the caller's lease is still its value: a fill that
/// failed gives its lease back, so the next caller fills at once.
const GIVE_BACK: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// `script` on `key` with the caller's lease `token` first among its
/// arguments.
fn eval(script: &str, key: &[u8], token: &[u8]) -> Cmd {
    eval_on(script, &[key], token)
}

/// `script` on `keys` with the caller's `token` first among its arguments.
fn eval_on(script: &str, keys: &[&[u8]], token: &[u8]) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys).arg(token);
    cmd
}

/// What became of one `aside` call that did not hit, as counted: in the
/// order of [`ASIDE_OUTCOMES`].
#[derive(Clone, Copy)]
enum Outcome {
    /// It held the lease and stored its value.
    Filled,
    /// It held the lease, but a `DEL` (or a take-over) voided it: its value
    /// was returned, not stored.
    Voided,
    /// It held the lease and its fill failed (returned an error or a value
    /// that cannot be stored, or panicked).
    Failed,
    /// It found a lease and got the value its holder stored.
    Waited,
    /// It found a lease that ended without a value, and took over.
    TookOver,
    /// `aside_early`: a background refill stored its value.
    Refreshed,
    /// `aside_early`: a background refill found the key written meanwhile
    /// (or gone), and stored nothing.
    RefreshVoided,
    /// `aside_early`: a background refill's fill failed, panicked, or
    /// outlived the lease: the key kept its value.
    RefreshFailed,
}

impl Outcome {
    /// Its `outcome` label, from the list the node's metrics register at
    /// zero.
    fn as_str(self) -> &'static str {
        ASIDE_OUTCOMES[self as usize]
    }
}

fn count(node: &str, outcome: Outcome) {
    metrics::counter!(ASIDE_TOTAL, "node" => node.to_owned(), "outcome" => outcome.as_str())
        .increment(1);
}

/// What [`TAKE`] found.
enum Found {
    Value(Value),
    Lease,
    Taken,
}

/// [`TAKE`]'s reply.
fn found(reply: Vec<Value>) -> Result<Found, Error> {
    match <[Value; 2]>::try_from(reply) {
        Ok([Value::Int(1), value]) => Ok(Found::Value(value)),
        Ok(other) => Err(odd(&other)),
        Err(reply) => match reply.as_slice() {
            [Value::Int(0)] => Ok(Found::Taken),
            [Value::Int(2)] => Ok(Found::Lease),
            other => Err(odd(other)),
        },
    }
}

fn odd(reply: &[Value]) -> Error {
    let detail = format!("{reply:?}");
    Error::Redis(RedisError::from((ErrorKind::UnexpectedReturnType, "aside's read", detail)))
}

/// The error of a fill whose value `V` `aside` cannot store as it is.
fn unstorable<V>(why: &str) -> Error {
    let detail = format!("a `{}` {why}", std::any::type_name::<V>());
    Error::Redis(RedisError::from((ErrorKind::Client, "aside cannot store this value", detail)))
}

/// `value` as the one Redis argument `aside` stores, or the error that
/// refuses it.
fn storable<V: ToRedisArgs>(value: &V) -> Result<Vec<u8>, Error> {
    let mut args = value.to_redis_args();
    match args.as_slice() {
        [arg] if marked(arg) => Err(unstorable::<V>(
            "begins with the lease mark (\"\\0fluster:lease:\"), which fluster reserves: \
             its readers would take it for a lease",
        )),
        [_] => Ok(args.remove(0)),
        args => Err(unstorable::<V>(&format!(
            "writes {} Redis arguments, and a cached value must be exactly one (a string, \
             bytes or a number): encode it as one, e.g. with serde_json::to_string",
            args.len()
        ))),
    }
}

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

/// A lease this call holds, or may hold (its [`TAKE`] in flight): given
/// back when dropped unless settled (its value stored, the lease given
/// back already, or not taken), so that a caller that stops waiting, or a
/// fill that panics, frees the key at once rather than after the lease
/// time. The give-back deletes only this call's lease: a key that holds
/// anything else is left as it is.
struct LeaseGuard<'a, M>
where
    M: NodeManager,
    M::Connection: Clone + ConnectionLike + Send,
{
    pool: &'a ShardedPool<M>,
    key: &'a [u8],
    /// `aside_early`'s companion key, where the fill's time is stored.
    delta: Option<&'a [u8]>,
    token: Vec<u8>,
    settled: bool,
}

impl<M> LeaseGuard<'_, M>
where
    M: NodeManager,
    M::Connection: Clone + ConnectionLike + Send,
{
    /// Runs the fill, and stores its value with `ttl` if the lease is
    /// still there.
    async fn fill<V, Fut, E>(
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

/// A lease's value: its mark and a random token.
fn token() -> Vec<u8> {
    let random = crate::random::random();
    let mut token = MARK.to_vec();
    token.extend_from_slice(format!("{random:016x}").as_bytes());
    token
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
