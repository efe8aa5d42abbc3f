//! The sync flavour's workload: threads with `fluster::sync::ShardedPool`,
//! over `get` and `MULTI`..`EXEC` sent one command at a time.

use std::time::Duration;

use fluster::redis::{self, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use fluster_torture::history::{Kind, Outcome, Path, now};

use super::{Act, Call, Job, outcome};
use crate::keys::{ASIDE_KEYS, COUNTERS, KEYS};
use crate::recorder::Recorder;

/// Runs the job's workload on `tasks` threads; the pool's events are read,
/// and its membership changes made, on `runtime`.
pub fn run(job: &Job, rec: &Recorder, runtime: &tokio::runtime::Handle) {
    let pool = match super::configure(fluster::sync::ShardedPool::builder(), job).build() {
        Ok(pool) => pool,
        Err(e) => panic!("build: {e}"),
    };
    runtime.spawn(super::record_views(pool.events(), rec.clone()));
    super::resize(&pool, job, rec, runtime);
    std::thread::sleep(Duration::from_nanos(job.start.saturating_sub(now())));
    std::thread::scope(|scope| {
        for task in 0..job.plan.tasks {
            let (pool, rec) = (&pool, rec.clone());
            let seed = job.plan.config.seed ^ (u64::from(job.process) << 32) ^ task as u64;
            scope.spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                while now() < job.end {
                    one(pool, &rec, &mut rng);
                    std::thread::sleep(Duration::from_micros(rng.random_range(1_000..3_000)));
                }
            });
        }
    });
}

fn one(pool: &fluster::sync::ShardedPool, rec: &Recorder, rng: &mut ChaCha8Rng) {
    let key = KEYS[rng.random_range(0..KEYS.len())];
    let readable =
        if rng.random_bool(0.3) { ASIDE_KEYS[rng.random_range(0..ASIDE_KEYS.len())] } else { key };
    match rng.random_range(0..20) {
        0..8 => {
            let call = Call::begin(rec, Path::SyncGet);
            command(pool, &call, readable, redis::cmd("GET").arg(readable).clone(), Kind::Read);
        }
        8..14 => {
            let call = Call::begin(rec, Path::SyncGet);
            let value = call.value();
            let cmd = redis::cmd("SET").arg(key).arg(&value).clone();
            command(pool, &call, key, cmd, Kind::Write);
        }
        14..15 => {
            let call = Call::begin(rec, Path::SyncGet);
            command(pool, &call, readable, redis::cmd("DEL").arg(readable).clone(), Kind::Delete);
        }
        15..16 => {
            let counter = COUNTERS[rng.random_range(0..COUNTERS.len())];
            let call = Call::begin(rec, Path::SyncGet);
            command(pool, &call, counter, redis::cmd("INCR").arg(counter).clone(), Kind::Incr);
        }
        _ => multi_by_hand(pool, rec, key),
    }
}

/// One command through `get`, recorded with its node.
fn command(pool: &fluster::sync::ShardedPool, call: &Call, key: &str, cmd: redis::Cmd, kind: Kind) {
    let written = (kind == Kind::Write).then(|| call.value());
    if kind != Kind::Read {
        call.intend(&Act::new(kind, key, written.clone()));
    }
    let mut conn = match pool.get(key) {
        Ok(conn) => conn,
        Err(e) => {
            return call.done(
                Act::new(kind, key, written),
                None,
                None,
                &Outcome::Failed(e.to_string()),
            );
        }
    };
    let (node, home) = (conn.node().to_owned(), conn.is_home());
    let done: Result<Value, _> = cmd.query(&mut conn);
    let value = match (&done, kind) {
        (Ok(v), Kind::Read) => super::text(v),
        _ => written,
    };
    call.done(Act::new(kind, key, value), Some(&node), Some(home), &outcome(&done));
}

fn multi_by_hand(pool: &fluster::sync::ShardedPool, rec: &Recorder, key: &str) {
    let call = Call::begin(rec, Path::SyncMultiByHand);
    let value = call.value();
    call.invoke(key, &value);
    let act = Act::new(Kind::Write, key, Some(value.clone()));
    let mut conn = match pool.get(key) {
        Ok(conn) => conn,
        Err(e) => return call.done(act, None, None, &Outcome::Failed(e.to_string())),
    };
    let (node, home) = (conn.node().to_owned(), conn.is_home());
    let done = (|| {
        redis::cmd("MULTI").query::<()>(&mut conn)?;
        redis::cmd("SET").arg(key).arg(&value).query::<()>(&mut conn)?;
        let reply = redis::cmd("EXEC").query::<Value>(&mut conn)?;
        super::check_exec(rec, Path::SyncMultiByHand, &reply);
        Ok::<_, redis::RedisError>(reply)
    })();
    call.done(act, Some(&node), Some(home), &outcome(&done));
}
