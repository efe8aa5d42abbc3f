//! Cache-aside with leases ([`ShardedPool::aside`]), over the pool's
//! public API: a miss takes a lease in the key itself, only its holder
//! fills, and its value is stored only while the lease is still there.
//!
//! The lease is the key's own value while a fill runs (`SET key <lease> NX
//! PX <lease time>`), so it lives where the key lives (its home, or a
//! stand-in while the home is boxed, capped like any stand-in write), a
//! `DEL` of the key voids it, and it ends by itself if its holder dies.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, ToRedisArgs, Value};

use crate::error::Error;
use crate::metrics::ASIDE_TOTAL;
use crate::node::tracked::NodeManager;
use crate::pool::ShardedPool;

/// What a lease's value starts with: no value a user stores does.
const LEASE: &[u8] = b"\0fluster:lease:";

/// The first and the longest pause of a caller waiting for a fill.
const FIRST_WAIT: Duration = Duration::from_millis(1);
const LONGEST_WAIT: Duration = Duration::from_millis(50);

/// Stores the value if the caller's lease is still the key's value: the
/// compare-and-set of a fill (a `DEL` meanwhile voids it). Sent as `EVAL`
/// (once per fill, so the script's text costs little, and needs no
/// `SCRIPT LOAD` on a node that restarted).
const STORE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end return 0";

/// Deletes the key if the caller's lease is still its value: a fill that
/// failed gives its lease back, so the next caller fills at once.
const GIVE_BACK: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// `script` on `key` with the caller's lease `token` first among its
/// arguments.
fn eval(script: &str, key: &[u8], token: &[u8]) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(1).arg(key).arg(token);
    cmd
}

/// What became of one `aside` call that did not hit, as counted.
#[derive(Clone, Copy)]
enum Outcome {
    /// It held the lease and stored its value.
    Filled,
    /// It held the lease, but a `DEL` (or a take-over) voided it: its value
    /// was returned, not stored.
    Voided,
    /// It held the lease and its fill failed.
    Failed,
    /// It found a lease and got the value its holder stored.
    Waited,
    /// It found a lease that ended without a value, and took over.
    TookOver,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Filled => "filled",
            Outcome::Voided => "voided",
            Outcome::Failed => "failed",
            Outcome::Waited => "waited",
            Outcome::TookOver => "took_over",
        }
    }
}

fn count(node: &str, outcome: Outcome) {
    metrics::counter!(ASIDE_TOTAL, "node" => node.to_owned(), "outcome" => outcome.as_str())
        .increment(1);
}

/// What a read of the key found.
enum Found<V> {
    Value(V),
    Lease,
    Nothing,
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
    /// waits for the value (polling with back-off from 1 to 50 ms; with
    /// a near cache the polls are answered from memory until the value's
    /// invalidation arrives) and returns it without running its `fill`;
    /// if the lease ends without a value (its holder died, or its fill
    /// failed), one of them takes the lease over and fills. Nobody waits
    /// longer than the lease time plus one fill.
    ///
    /// Through failover the lease and the value live on the stand-in, and
    /// are capped by [`stand_in_ttl`](crate::Builder::stand_in_ttl) like
    /// any stand-in write. `V` is read and written as Redis reads and
    /// writes it (`String`, `Vec<u8>`, numbers, ...). Errors: `fill`'s own
    /// as [`Error::Fill`] (nothing stored, the lease given back), the
    /// pool's as from `get_shared`, a command's as [`Error::Redis`].
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
    pub async fn aside<K, V, F, Fut, E>(&self, key: K, ttl: Duration, fill: F) -> Result<V, Error>
    where
        K: AsRef<[u8]>,
        V: FromRedisValue + ToRedisArgs,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let key = key.as_ref();
        let lease = self.core.settings.lease;
        let mut waited: Option<Duration> = None;
        loop {
            let mut conn = self.get_shared(key).await?;
            match found(&mut conn, key).await? {
                Found::Value(value) => {
                    if waited.is_some() {
                        count(conn.node(), Outcome::Waited);
                    }
                    return Ok(value);
                }
                Found::Lease => {
                    // The lease ends by itself (`PX`) if its holder does
                    // not store: the key is then read empty and taken.
                    let pause = waited.get_or_insert(FIRST_WAIT);
                    tokio::time::sleep(*pause).await;
                    *pause = (*pause * 2).min(LONGEST_WAIT);
                }
                Found::Nothing => {
                    let token = token();
                    let taken: Option<String> = redis::cmd("SET")
                        .arg(key)
                        .arg(&token)
                        .arg("NX")
                        .arg("PX")
                        .arg(millis(lease))
                        .query_async(&mut conn)
                        .await?;
                    if taken.is_none() {
                        continue; // another caller took it first: wait for it
                    }
                    if waited.is_some() {
                        count(conn.node(), Outcome::TookOver);
                    }
                    return self.hold(key, ttl, &token, fill).await;
                }
            }
        }
    }

    /// Runs the fill of the lease `token` holds, and stores its value with
    /// `ttl` if the lease is still there.
    async fn hold<V, Fut, E>(
        &self,
        key: &[u8],
        ttl: Duration,
        token: &[u8],
        fill: impl FnOnce() -> Fut,
    ) -> Result<V, Error>
    where
        V: ToRedisArgs,
        Fut: Future<Output = Result<V, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let filled = fill().await;
        // The key's node now, which a failover may have changed.
        let mut conn = self.get_shared(key).await?;
        match filled {
            Ok(value) => {
                let mut store = eval(STORE, key, token);
                store.arg(&value).arg(millis(ttl));
                let stored: i64 = store.query_async(&mut conn).await?;
                count(conn.node(), if stored == 1 { Outcome::Filled } else { Outcome::Voided });
                Ok(value)
            }
            Err(e) => {
                let _: i64 = eval(GIVE_BACK, key, token).query_async(&mut conn).await?;
                count(conn.node(), Outcome::Failed);
                Err(Error::Fill(Arc::new(e)))
            }
        }
    }
}

/// Reads `key` on `conn`: a value, a lease, or nothing.
async fn found<C: ConnectionLike, V: FromRedisValue>(
    conn: &mut C,
    key: &[u8],
) -> Result<Found<V>, Error> {
    let value: Value = redis::cmd("GET").arg(key).query_async(conn).await?;
    Ok(match value {
        Value::Nil => Found::Nothing,
        Value::BulkString(bytes) if bytes.starts_with(LEASE) => Found::Lease,
        value => Found::Value(V::from_redis_value(value)?),
    })
}

/// A lease's value: its mark and a random token.
fn token() -> Vec<u8> {
    let random = crate::random::random();
    let mut token = LEASE.to_vec();
    token.extend_from_slice(format!("{random:016x}").as_bytes());
    token
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
