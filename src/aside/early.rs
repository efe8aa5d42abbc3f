//! Early refresh ([`ShardedPool::aside_early`]): XFetch (Vattani,
//! Chierichetti and Lowenstein, VLDB 2015) over `aside`'s lease.
//!
//! Beside each key it fills, `aside_early` keeps a *companion* key
//! ([`companion`]: the key's name after [`DELTA`]) holding δ, the last
//! fill's time in ms, with the value's TTL: a few bytes per key, gone with
//! the value, and known to every process (a δ kept in process memory
//! would need a bound of its own, and be known only where that process
//! filled). A hit reads the value, its `PTTL` and δ in one round trip (or
//! from the near cache, which keeps each value's expiry), and refills when
//! `now − δ·β·ln(rand) ≥ expiry`.
//!
//! The refill runs in a task of its own, so every caller gets the current
//! value at once. One caller per expiry takes the refresh lease, in the
//! companion key (`"<δ> <token>"`, `PX <lease>`: it ends by itself), so
//! the key keeps its value and its readers never see a lease; the refill
//! stores only if the key still holds what it held when the lease was
//! taken (its SHA-1 and its `PEXPIRETIME`), so a write meanwhile (a `SET`,
//! a `DEL`, a fill through `aside`) is never overwritten.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use redis::aio::ConnectionLike;
use redis::{FromRedisValue, ToRedisArgs, Value};

use super::outcome::{Outcome, count};
use super::wire::{eval_on, millis, storable};
use crate::error::{Error, OnNode};
use crate::node::connection::SharedConnection;
use crate::node::lease::MARK;
use crate::node::tracked::NodeManager;
use crate::pool::ShardedPool;

/// What a companion key's name begins with.
const DELTA: &[u8] = b"\0fluster:delta:";

/// The companion key of `key`: where its last fill's time is kept.
fn companion(key: &[u8]) -> Vec<u8> {
    [DELTA, key].concat()
}

/// Takes the refresh lease of `KEYS[1]` (token `ARGV[1]`, for `ARGV[2]`
/// ms) if its companion `KEYS[2]` holds a δ and no lease, and the key a
/// value (not `aside`'s lease, `ARGV[3]`): returns what the key holds
/// (its SHA-1 and `PEXPIRETIME`), or `0`.
const TAKE: &str = "local c = redis.call('GET', KEYS[2]) \
    if not c or string.find(c, ' ', 1, true) then return 0 end \
    local v = redis.call('GET', KEYS[1]) \
    if not v or string.sub(v, 1, #ARGV[3]) == ARGV[3] then return 0 end \
    redis.call('SET', KEYS[2], c .. ' ' .. ARGV[1], 'PX', ARGV[2]) \
    return redis.sha1hex(v) .. ':' .. redis.call('PEXPIRETIME', KEYS[1])";

/// Gives the refresh lease `ARGV[1]` back: the companion holds δ again,
/// with the key's TTL.
macro_rules! give_back {
    () => {
        "local c = redis.call('GET', KEYS[2]) \
        if c then \
            local d, t = string.match(c, '^(%d+) (.+)$') \
            if t == ARGV[1] then \
                local left = redis.call('PTTL', KEYS[1]) \
                if left > 0 then redis.call('SET', KEYS[2], d, 'PX', left) \
                else redis.call('DEL', KEYS[2]) end \
            end \
        end return 0"
    };
}

/// Stores the refill's value `ARGV[3]` and its time `ARGV[5]` with TTL
/// `ARGV[4]` if the key still holds what [`TAKE`] saw (`ARGV[2]`), and
/// returns 1; otherwise gives the lease back and returns 0.
const STORE: &str = concat!(
    "local v = redis.call('GET', KEYS[1]) \
    if v and redis.sha1hex(v) .. ':' .. redis.call('PEXPIRETIME', KEYS[1]) == ARGV[2] then \
        redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) \
        redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[4]) return 1 end ",
    give_back!()
);

/// See [`give_back!`].
const GIVE_BACK: &str = give_back!();

/// What a hit read: the value, when it expires, the last fill's time,
/// and whether a refresh lease is held.
struct Seen {
    value: Value,
    expires: Option<Instant>,
    delta: Option<Duration>,
    leased: bool,
}

impl Seen {
    /// XFetch's draw: whether this hit refills, with `beta`.
    fn due(&self, beta: f64, now: Instant) -> bool {
        let (Some(expires), Some(delta)) = (self.expires, self.delta) else { return false };
        if self.leased || beta <= 0.0 {
            return false;
        }
        // −ln(u), u in (0, 1]: exponential with mean 1.
        let gap = -(1.0 - crate::random::fraction()).ln();
        let early = Duration::try_from_secs_f64(delta.as_secs_f64() * beta * gap).ok();
        early.and_then(|early| now.checked_add(early)).is_none_or(|at| at >= expires)
    }
}

/// Reads `key`'s value and expiry and its companion `delta`'s value: from
/// the near cache when it holds them (one `MGET`, which it keeps with
/// each key's `PTTL`), else in one round trip. A companion that is not a
/// string (a user's key of that name) reads as none: no fill time, a
/// plain hit.
async fn read<M>(conn: &mut SharedConnection<M>, key: &[u8], delta: &[u8]) -> Result<Seen, Error>
where
    M: NodeManager,
    M::Connection: ConnectionLike + Send,
{
    let (value, expires, companion) = if conn.near_cache().is_some() {
        let mut mget = redis::cmd("MGET");
        mget.arg(key).arg(delta);
        let (value, companion): (Value, Value) = mget.query_async(conn).await.on(conn.node())?;
        let expires = conn.near_cache().and_then(|near| near.dies(key)).flatten();
        (value, expires, companion)
    } else {
        // The companion by `MGET`, which reads a key of another type (a
        // user's) as nil where `GET` fails with `WRONGTYPE`.
        let mut pipe = redis::pipe();
        pipe.get(key).pttl(key).cmd("MGET").arg(delta);
        let (value, left, (companion,)): (Value, i64, (Value,)) =
            pipe.query_async(conn).await.on(conn.node())?;
        let left = u64::try_from(left).ok().filter(|ms| *ms > 0);
        (value, left.map(|ms| Instant::now() + Duration::from_millis(ms)), companion)
    };
    let companion = match companion {
        Value::BulkString(bytes) => bytes,
        _ => Vec::new(),
    };
    let text = std::str::from_utf8(&companion).unwrap_or("");
    let (ms, leased) = match text.split_once(' ') {
        Some((ms, _)) => (ms, true),
        None => (text, false),
    };
    let delta = ms.parse().ok().map(Duration::from_millis);
    Ok(Seen { value, expires, delta, leased })
}

impl<M: NodeManager> ShardedPool<M>
where
    M::Connection: Clone + ConnectionLike + Send,
{
    /// [`aside`](Self::aside) with early refresh: a hit close to its
    /// key's expiry makes one caller refill the key in the background,
    /// while every caller, that one too, gets the current value at once,
    /// so a hot key is refilled before it expires and its readers never
    /// wait for a fill.
    ///
    /// Whether a hit refills is XFetch's draw (Vattani, Chierichetti and
    /// Lowenstein, VLDB 2015): `now − δ·β·ln(rand()) ≥ expiry`, δ the
    /// key's last fill time, β [`early_refresh`](crate::Builder::early_refresh)
    /// (default 1; 0: never early). The expiry is the key's `PTTL`, read
    /// with the value in one round trip, or kept with it by the near
    /// cache; δ is measured at each fill and kept beside the value, in a
    /// companion key named `"\0fluster:delta:"` followed by the key's
    /// name, with the value's TTL (a few bytes; `SCAN` shows it). A key
    /// with no TTL, or no δ (filled by `aside` or another client), is
    /// refilled only when it is missing, as by `aside`.
    ///
    /// The refill holds a refresh lease (in the companion key, for
    /// [`lease`](crate::Builder::lease)): one per key at a time across
    /// processes, while readers keep reading the value. It stores its
    /// value only if the key still holds what it held when the lease was
    /// taken: a write meanwhile (a `SET` or `DEL` by any client, a fill of
    /// a miss) stands. A fill that fails, panics or outlives the lease is
    /// dropped: the key keeps its value, the lease is given back, and a
    /// later hit draws again. The refill is the pool's, not the caller's:
    /// a caller dropped meanwhile does not stop it, and it lasts no longer
    /// than the lease. Hence `fill` and its future are `Send + 'static`
    /// here (use `aside` for a fill that borrows).
    ///
    /// A miss is `aside`'s: the lease, one fill, the others waiting.
    /// Errors and values as `aside`; a background refill's outcome goes
    /// to the metrics (`fluster_aside_total{outcome="refreshed"}`, ...).
    ///
    /// ```no_run
    /// # async fn load_user(id: u64) -> Result<String, std::io::Error> { Ok(String::new()) }
    /// # async fn run(pool: fluster::ShardedPool) -> Result<(), fluster::Error> {
    /// use std::time::Duration;
    /// let name: String = pool
    ///     .aside_early("user:42", Duration::from_secs(60), || async { load_user(42).await })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn aside_early<K, V, F, Fut, E>(
        &self,
        key: K,
        ttl: Duration,
        fill: F,
    ) -> Result<V, Error>
    where
        K: AsRef<[u8]>,
        V: FromRedisValue + ToRedisArgs + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let key = key.as_ref();
        let delta = companion(key);
        let mut conn = self.get_shared(key).await?;
        let seen = read(&mut conn, key, &delta).await?;
        if seen.value == Value::Nil {
            return self.on_miss(key, conn, ttl, fill, Some(&delta)).await;
        }
        let beta = self.core.settings.early_refresh;
        if seen.due(beta, Instant::now())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let refill = Refill { pool: self.clone(), key: key.to_vec(), delta, token: token() };
            runtime.spawn(refill.run(ttl, fill));
        }
        Ok(V::from_redis_value(seen.value)?)
    }
}

/// A background refill of `key`, by the holder of `token` if it takes the
/// refresh lease.
struct Refill<M: NodeManager> {
    pool: ShardedPool<M>,
    key: Vec<u8>,
    delta: Vec<u8>,
    token: Vec<u8>,
}

impl<M: NodeManager> Refill<M>
where
    M::Connection: Clone + ConnectionLike + Send,
{
    /// Takes the refresh lease, runs `fill` (for the lease time at most),
    /// and stores its value if the key was not written meanwhile; gives
    /// the lease back otherwise.
    async fn run<V, F, Fut, E>(self, ttl: Duration, fill: F)
    where
        V: ToRedisArgs,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let lease = self.pool.core.settings.lease;
        let Ok(mut conn) = self.pool.get_shared(&self.key).await else { return };
        let mut take = eval_on(TAKE, &[&self.key, &self.delta], &self.token);
        take.arg(millis(lease)).arg(MARK);
        let Ok(Value::BulkString(seen)) = take.query_async(&mut conn).await else { return };
        let started = Instant::now();
        // Failed, panicked (the panic hook has told it), or too slow: None.
        let value = AssertUnwindSafe(tokio::time::timeout(lease, fill()))
            .catch_unwind()
            .map(|filled| storable(&filled.ok()?.ok()?.ok()?).ok())
            .await;
        let took = millis(started.elapsed());
        // The key's node now, which a failover may have changed.
        let Ok(mut conn) = self.pool.get_shared(&self.key).await else { return };
        let keys: [&[u8]; 2] = [&self.key, &self.delta];
        let (script, outcome) = match &value {
            Some(_) => (STORE, Outcome::Refreshed),
            None => (GIVE_BACK, Outcome::RefreshFailed),
        };
        let mut cmd = eval_on(script, &keys, &self.token);
        if let Some(value) = value {
            cmd.arg(seen).arg(value).arg(millis(ttl)).arg(took);
        }
        let stored: Result<i64, _> = cmd.query_async(&mut conn).await;
        let outcome = match (stored, outcome) {
            (Ok(0), Outcome::Refreshed) => Outcome::RefreshVoided,
            (_, outcome) => outcome,
        };
        count(conn.node(), outcome);
    }
}

/// A refresh lease's token: random, without a space.
fn token() -> Vec<u8> {
    format!("{:016x}", crate::random::random()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(expires_in: Option<u64>, delta: Option<u64>, leased: bool, now: Instant) -> Seen {
        Seen {
            value: Value::Okay,
            expires: expires_in.map(|ms| now + Duration::from_millis(ms)),
            delta: delta.map(Duration::from_millis),
            leased,
        }
    }

    #[test]
    fn the_draw_is_xfetch() {
        let now = Instant::now();
        let draws = |s: &Seen, beta: f64| (0..10_000).filter(|_| s.due(beta, now)).count();
        // P(due) = exp(−left / (δ·β)).
        let near = seen(Some(10), Some(100), false, now);
        let p = draws(&near, 1.0) as f64 / 10_000.0;
        assert!((p - (-0.1f64).exp()).abs() < 0.03, "{p}");
        let far = seen(Some(1_000), Some(100), false, now);
        let p = draws(&far, 1.0) as f64 / 10_000.0;
        assert!(p < 0.01, "{p}");
        let p2 = draws(&far, 2.0) as f64 / 10_000.0;
        assert!((p2 - (-5.0f64).exp()).abs() < 0.01 && p2 > p, "{p2}");
        for never in [
            seen(Some(0), Some(100), true, now),
            seen(None, Some(100), false, now),
            seen(Some(0), None, false, now),
        ] {
            assert_eq!(draws(&never, 1.0), 0);
        }
        assert_eq!(draws(&near, 0.0), 0, "β 0 is off");
        assert_eq!(draws(&seen(Some(0), Some(1), false, now), 1.0), 10_000, "expired");
    }
}
