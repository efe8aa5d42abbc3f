//! The async workload: one operation a call, drawn over every path a user
//! has, each recorded with its keys, values, node and outcome.

use std::future::Future;
use std::time::Duration;

use fluster::redis::{self, Value};
use fluster::{Error, ShardedPool};
use futures_util::StreamExt;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use fluster_torture::history::{Kind, Outcome, Path, now};

use super::{Act, Call, HANG, outcome, text};
use crate::keys::{ASIDE_KEYS, CHANNELS, COUNTERS, KEYS, TAGGED};
use crate::plan::Plan;
use crate::recorder::Recorder;

/// What every operation of a task needs.
pub struct Ctx {
    /// The process's pool.
    pub pool: ShardedPool,
    /// Its history.
    pub rec: Recorder,
    /// The run.
    pub plan: Plan,
    /// Its return races.
    pub races: Vec<super::race::Window>,
}

fn pick<'a>(rng: &mut ChaCha8Rng, keys: &[&'a str]) -> &'a str {
    keys[rng.random_range(0..keys.len())]
}

/// Any key a plain read may look at: the plain keys and `aside`'s.
fn readable(rng: &mut ChaCha8Rng) -> &'static str {
    if rng.random_bool(0.3) { pick(rng, &ASIDE_KEYS) } else { pick(rng, &KEYS) }
}

fn ttl(rng: &mut ChaCha8Rng) -> Option<u64> {
    rng.random_bool(0.3).then(|| rng.random_range(300..5_000))
}

/// Runs one operation drawn from `rng`, giving up on it (a hang, recorded
/// by the operation's own path as `Hung`) after [`HANG`].
pub async fn one(ctx: &Ctx, rng: &mut ChaCha8Rng) {
    use super::race::{Turn, turn};
    match turn(&ctx.races, ctx.rec.process, rng) {
        Some(Turn::Write(key)) => return get_write(ctx, key, None).await,
        Some(Turn::Read(key)) => return get_read(ctx, key).await,
        None => {}
    }
    let draw = rng.random_range(0..80);
    let key = readable(rng);
    let write_key = pick(rng, &KEYS);
    match draw {
        0..10 => get_read(ctx, key).await,
        10..18 => get_write(ctx, write_key, ttl(rng)).await,
        18..20 => get_del(ctx, key).await,
        20..21 => get_expire(ctx, write_key, rng.random_range(300..5_000)).await,
        21..23 => incr(ctx, pick(rng, &COUNTERS)).await,
        23..31 => shared_read(ctx, key).await,
        31..35 => shared_write(ctx, write_key).await,
        35..45 => cached_read(ctx, key).await,
        45..48 => pipeline(ctx, [write_key, key, pick(rng, &KEYS)]).await,
        48..50 => transaction(ctx, TAGGED[rng.random_range(0..TAGGED.len())]).await,
        50..53 => multi_by_hand(ctx, write_key).await,
        53..56 => mget(ctx, [key, readable(rng), readable(rng)]).await,
        56..59 => mset(ctx, [write_key, pick(rng, &KEYS), pick(rng, &KEYS)]).await,
        59..60 => del(ctx, [key, readable(rng)]).await,
        60..61 => fan_out(ctx, write_key).await,
        61..63 => script(ctx, write_key).await,
        63..64 => publish(ctx, pick(rng, &CHANNELS)).await,
        _ => super::fills::aside(ctx, pick(rng, &ASIDE_KEYS), rng).await,
    }
    // A little air between operations: the machine has two cores.
    tokio::time::sleep(Duration::from_micros(rng.random_range(200..1_500))).await;
}

/// `f` under the hang bound: `None` when it hung.
async fn bounded<T>(f: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(HANG, f).await.ok()
}

pub(super) const HUNG: Outcome = Outcome::Hung(HANG.as_millis() as u64);

async fn get_read(ctx: &Ctx, key: &str) {
    let call = Call::begin(&ctx.rec, Path::Get);
    let run = async {
        let mut conn = ctx.pool.get(key).await.map_err(|e| (e.to_string(), None))?;
        let where_ = (conn.node().to_owned(), conn.is_home());
        let read: Result<Option<String>, _> =
            redis::cmd("GET").arg(key).query_async(&mut conn).await;
        read.map(|v| (v, where_.clone())).map_err(|e| (e.to_string(), Some(where_)))
    };
    match bounded(run).await {
        Some(Ok((value, (node, home)))) => {
            call.done(Act::new(Kind::Read, key, value), Some(&node), Some(home), &Outcome::Ok)
        }
        Some(Err((e, at))) => {
            let (node, home) = at.map_or((None, None), |(n, h)| (Some(n), Some(h)));
            call.done(Act::new(Kind::Read, key, None), node.as_deref(), home, &Outcome::Failed(e))
        }
        None => call.done(Act::new(Kind::Read, key, None), None, None, &HUNG),
    }
}

/// One command through `get`, recorded as `act` with its node (and, if it
/// can change the key, invoked first).
async fn get_command(ctx: &Ctx, call: &Call, key: &str, cmd: redis::Cmd, act: Act) {
    if act.kind != Kind::Read {
        call.intend(&act);
    }
    let run = async {
        let mut conn = ctx.pool.get(key).await?;
        let where_ = (conn.node().to_owned(), conn.is_home());
        let done: Result<Value, _> = cmd.query_async(&mut conn).await;
        Ok::<_, Error>((done, where_))
    };
    match bounded(run).await {
        Some(Ok((done, (node, home)))) => call.done(act, Some(&node), Some(home), &outcome(&done)),
        Some(Err(e)) => call.done(act, None, None, &Outcome::Failed(e.to_string())),
        None => call.done(act, None, None, &HUNG),
    }
}

async fn get_write(ctx: &Ctx, key: &str, ttl_ms: Option<u64>) {
    let call = Call::begin(&ctx.rec, Path::Get);
    let value = call.value();
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(&value);
    if let Some(ms) = ttl_ms {
        cmd.arg("PX").arg(ms);
    }
    get_command(ctx, &call, key, cmd, Act::new(Kind::Write, key, Some(value)).ttl(ttl_ms)).await;
}

async fn get_del(ctx: &Ctx, key: &str) {
    let call = Call::begin(&ctx.rec, Path::Get);
    let cmd = redis::cmd("DEL").arg(key).clone();
    get_command(ctx, &call, key, cmd, Act::new(Kind::Delete, key, None)).await;
}

async fn get_expire(ctx: &Ctx, key: &str, ms: u64) {
    let call = Call::begin(&ctx.rec, Path::Get);
    let cmd = redis::cmd("PEXPIRE").arg(key).arg(ms).clone();
    get_command(ctx, &call, key, cmd, Act::new(Kind::Expire, key, None).ttl(Some(ms))).await;
}

async fn incr(ctx: &Ctx, key: &str) {
    let call = Call::begin(&ctx.rec, Path::Get);
    let cmd = redis::cmd("INCR").arg(key).clone();
    get_command(ctx, &call, key, cmd, Act::new(Kind::Incr, key, None)).await;
}

async fn shared_read(ctx: &Ctx, key: &str) {
    let call = Call::begin(&ctx.rec, Path::GetShared);
    let run = async {
        let mut conn = ctx.pool.get_shared(key).await?;
        let where_ = (conn.node().to_owned(), conn.is_home());
        let read: Result<Option<String>, _> =
            redis::cmd("GET").arg(key).query_async(&mut conn).await;
        Ok::<_, Error>((read, where_))
    };
    let (act, node, home, done) = match bounded(run).await {
        Some(Ok((Ok(v), (node, home)))) => {
            (Act::new(Kind::Read, key, v), Some(node), Some(home), Outcome::Ok)
        }
        Some(Ok((Err(e), (node, home)))) => (
            Act::new(Kind::Read, key, None),
            Some(node),
            Some(home),
            Outcome::Failed(e.to_string()),
        ),
        Some(Err(e)) => {
            (Act::new(Kind::Read, key, None), None, None, Outcome::Failed(e.to_string()))
        }
        None => (Act::new(Kind::Read, key, None), None, None, HUNG),
    };
    call.done(act, node.as_deref(), home, &done);
}

async fn shared_write(ctx: &Ctx, key: &str) {
    let call = Call::begin(&ctx.rec, Path::GetShared);
    let value = call.value();
    call.invoke(key, &value);
    let run = async {
        let mut conn = ctx.pool.get_shared(key).await?;
        let where_ = (conn.node().to_owned(), conn.is_home());
        let done: Result<(), _> =
            redis::cmd("SET").arg(key).arg(&value).query_async(&mut conn).await;
        Ok::<_, Error>((done, where_))
    };
    let act = Act::new(Kind::Write, key, Some(value.clone()));
    match bounded(run).await {
        Some(Ok((done, (node, home)))) => call.done(act, Some(&node), Some(home), &outcome(&done)),
        Some(Err(e)) => call.done(act, None, None, &Outcome::Failed(e.to_string())),
        None => call.done(act, None, None, &HUNG),
    }
}

async fn cached_read(ctx: &Ctx, key: &str) {
    let call = Call::begin(&ctx.rec, Path::GetCached);
    record_cached(ctx, &call, key).await;
}

async fn record_cached(ctx: &Ctx, call: &Call, key: &str) {
    match bounded(ctx.pool.get_cached::<Option<String>>(key)).await {
        Some(Ok(v)) => call.done(Act::new(Kind::Read, key, v), None, None, &Outcome::Ok),
        Some(Err(e)) => {
            call.done(Act::new(Kind::Read, key, None), None, None, &Outcome::Failed(e.to_string()))
        }
        None => call.done(Act::new(Kind::Read, key, None), None, None, &HUNG),
    }
}

/// `SET` the first key, `GET` the second, `SET` the third, in one
/// `pool.pipeline()`.
async fn pipeline(ctx: &Ctx, [a, b, c]: [&str; 3]) {
    let call = Call::begin(&ctx.rec, Path::Pipeline);
    let value = call.value();
    call.invoke(a, &value);
    call.invoke(c, &value);
    let mut pipe = ctx.pool.pipeline();
    pipe.add(a, redis::cmd("SET").arg(a).arg(&value).clone());
    pipe.add(b, redis::cmd("GET").arg(b).clone());
    pipe.add(c, redis::cmd("SET").arg(c).arg(&value).clone());
    let acts = [(a, Kind::Write), (b, Kind::Read), (c, Kind::Write)];
    match bounded(pipe.query_async()).await {
        Some(Ok(replies)) => {
            for ((key, kind), reply) in acts.into_iter().zip(replies) {
                let (v, done) = match (&reply, kind) {
                    (Ok(v), Kind::Read) => (text(v), Outcome::Ok),
                    (Ok(_), _) => (Some(value.clone()), Outcome::Ok),
                    (Err(e), Kind::Read) => (None, Outcome::Failed(e.to_string())),
                    (Err(e), _) => (Some(value.clone()), Outcome::Failed(e.to_string())),
                };
                call.done(Act::new(kind, key, v), None, None, &done);
            }
        }
        result => {
            let done = result.map_or(HUNG, |r| outcome(&r));
            for (key, kind) in acts {
                let v = (kind == Kind::Write).then(|| value.clone());
                call.done(Act::new(kind, key, v), None, None, &done);
            }
        }
    }
}

/// Both keys of a hash-tagged pair set in one `pool.transaction`.
async fn transaction(ctx: &Ctx, (a, b): (&str, &str)) {
    let call = Call::begin(&ctx.rec, Path::Transaction);
    let value = call.value();
    call.invoke(a, &value);
    call.invoke(b, &value);
    let watched = [b];
    let run = ctx.pool.transaction(a, &watched, async |conn, pipe| {
        let _: Option<String> = redis::cmd("GET").arg(b).query_async(conn).await?;
        pipe.cmd("SET").arg(a).arg(&value).ignore().cmd("SET").arg(b).arg(&value).ignore();
        let done: Option<()> = pipe.query_async(conn).await?;
        Ok(done)
    });
    let done = bounded(run).await.map_or(HUNG, |r| outcome(&r));
    for key in [a, b] {
        call.done(Act::new(Kind::Write, key, Some(value.clone())), None, None, &done);
    }
}

/// `MULTI`, `SET`, `EXEC` sent one at a time on one `get` connection, with a
/// near-cache read of the key between `SET`'s `QUEUED` and `EXEC`, and
/// another after `EXEC`.
async fn multi_by_hand(ctx: &Ctx, key: &str) {
    let call = Call::begin(&ctx.rec, Path::MultiByHand);
    let value = call.value();
    call.invoke(key, &value);
    let run = async {
        let mut conn = ctx.pool.get(key).await?;
        let where_ = (conn.node().to_owned(), conn.is_home());
        let sent = async {
            redis::cmd("MULTI").query_async::<()>(&mut conn).await?;
            redis::cmd("SET").arg(key).arg(&value).query_async::<()>(&mut conn).await?;
            cached_read(ctx, key).await;
            let reply = redis::cmd("EXEC").query_async::<Value>(&mut conn).await?;
            super::check_exec(&ctx.rec, Path::MultiByHand, &reply);
            Ok::<_, redis::RedisError>(reply)
        };
        Ok::<_, Error>((sent.await, where_))
    };
    let act = Act::new(Kind::Write, key, Some(value.clone()));
    match bounded(run).await {
        Some(Ok((done, (node, home)))) => {
            let acknowledged = done.is_ok();
            call.done(act, Some(&node), Some(home), &outcome(&done));
            if acknowledged {
                cached_read(ctx, key).await;
            }
        }
        Some(Err(e)) => call.done(act, None, None, &Outcome::Failed(e.to_string())),
        None => call.done(act, None, None, &HUNG),
    }
}

async fn mget(ctx: &Ctx, keys: [&str; 3]) {
    let call = Call::begin(&ctx.rec, Path::Mget);
    match bounded(ctx.pool.mget::<_, String>(&keys)).await {
        Some(Ok(values)) => {
            for (key, v) in keys.into_iter().zip(values) {
                call.done(Act::new(Kind::Read, key, v), None, None, &Outcome::Ok);
            }
        }
        result => {
            let done = result.map_or(HUNG, |r| outcome(&r));
            for key in keys {
                call.done(Act::new(Kind::Read, key, None), None, None, &done);
            }
        }
    }
}

async fn mset(ctx: &Ctx, keys: [&str; 3]) {
    let call = Call::begin(&ctx.rec, Path::Mset);
    let value = call.value();
    keys.iter().for_each(|key| call.invoke(key, &value));
    let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (*k, value.as_str())).collect();
    let done = bounded(ctx.pool.mset(&pairs)).await.map_or(HUNG, |r| outcome(&r));
    for key in keys {
        call.done(Act::new(Kind::Write, key, Some(value.clone())), None, None, &done);
    }
}

async fn del(ctx: &Ctx, keys: [&str; 2]) {
    let call = Call::begin(&ctx.rec, Path::Del);
    keys.iter().for_each(|key| call.intend(&Act::new(Kind::Delete, key, None)));
    let done = bounded(ctx.pool.del(&keys)).await.map_or(HUNG, |r| outcome(&r));
    for key in keys {
        call.done(Act::new(Kind::Delete, key, None), None, None, &done);
    }
}

/// `SET key value EX 3600` on every healthy node at once.
async fn fan_out(ctx: &Ctx, key: &str) {
    let call = Call::begin(&ctx.rec, Path::FanOut);
    let value = call.value();
    call.invoke(key, &value);
    let run = ctx.pool.fan_out(|mut conn| {
        let value = value.clone();
        async move {
            let done: Result<(), _> = redis::cmd("SET")
                .arg(key)
                .arg(&value)
                .arg("EX")
                .arg(3600)
                .query_async(&mut conn)
                .await;
            done
        }
    });
    let act = || Act::new(Kind::Write, key, Some(value.clone())).ttl(Some(3_600_000));
    match bounded(run).await {
        Some(results) => {
            // Each node's write is acknowledged when `fan_out` returns.
            for (node, result) in results {
                let done = match result {
                    Ok(done) => outcome(&done),
                    Err(e) => Outcome::Failed(e.to_string()),
                };
                call.done(act(), Some(&node), None, &done);
            }
        }
        None => call.done(act(), None, None, &HUNG),
    }
}

/// A Lua script that writes its `KEYS[1]`, through `get`.
async fn script(ctx: &Ctx, key: &str) {
    let call = Call::begin(&ctx.rec, Path::Script);
    let value = call.value();
    let mut cmd = redis::cmd("EVAL");
    cmd.arg("redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])")
        .arg(1)
        .arg(key)
        .arg(&value);
    get_command(ctx, &call, key, cmd, Act::new(Kind::Write, key, Some(value.clone()))).await;
}

async fn publish(ctx: &Ctx, channel: &str) {
    let call = Call::begin(&ctx.rec, Path::PubSub);
    let value = call.value();
    call.intend(&Act::new(Kind::Publish, channel, Some(value.clone())));
    let done = bounded(ctx.pool.publish(channel, &value)).await.map_or(HUNG, |r| outcome(&r));
    call.done(Act::new(Kind::Publish, channel, Some(value)), None, None, &done);
}

/// Records every message heard on `channel` until `end`.
pub async fn listen(pool: ShardedPool, channel: &'static str, rec: Recorder, end: u64) {
    let Ok(mut sub) = pool.subscribe(channel).await else { return };
    let until = tokio::time::sleep(Duration::from_nanos(end.saturating_sub(now())));
    tokio::pin!(until);
    loop {
        let msg = tokio::select! {
            msg = sub.next() => msg,
            () = &mut until => return,
        };
        let Some(msg) = msg else { return };
        let call = Call::begin(&rec, Path::PubSub);
        let value = msg.get_payload::<String>().ok();
        call.done(Act::new(Kind::Receive, channel, value), None, None, &Outcome::Ok);
    }
}
