//! The cost of `stand_in_ttl` (with `invalidate_on_return`): `SET`s of keys
//! whose home is boxed, through a stand-in, by 64 tasks, with the settings
//! and without, over the same three local `redis-server` nodes (one killed);
//! and `SET`s of keys at home, where the settings must cost nothing. Then
//! the cost of a fleet's record of each such write on the stand-in (one
//! more command in the same round trip): with `fleet` against without.
//! Median of 9 per-round ratios, rounds alternated.
//!
//!     cargo bench --bench stand_in

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluster::ShardedPool;
use redis::AsyncCommands;
use support::{builder_for, keys_on, start_servers};

const TASKS: usize = 64;
const OPS: usize = 100_000;
const ROUNDS: usize = 9;

/// Writes per second: `TASKS` tasks `SET` `keys` in turn, `OPS` in all.
async fn rate(pool: &ShardedPool, keys: &Arc<Vec<String>>, shared: bool) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (pool, keys) = (pool.clone(), keys.clone());
            tokio::spawn(async move {
                for i in (t..OPS).step_by(TASKS) {
                    let key = &keys[i % keys.len()];
                    let done: Result<(), _> = if shared {
                        pool.get_shared(key).await.unwrap().set(key, i).await
                    } else {
                        pool.get(key).await.unwrap().set(key, i).await
                    };
                    done.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    OPS as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !support::redis_server_installed() {
        eprintln!("{}", support::INSTALL_HINT);
        return;
    }
    let mut servers = start_servers(3);
    let build = |on: bool, fleet: bool| {
        let builder = builder_for(&servers).penalty_min_wait(Duration::from_secs(600));
        let builder = builder.penalty_max_wait(Duration::from_secs(600));
        let builder = if on {
            builder.stand_in_ttl(Duration::from_secs(30)).invalidate_on_return(true)
        } else {
            builder
        };
        if fleet { builder.fleet("bench") } else { builder }.build()
    };
    let plain = build(false, false).await.unwrap();
    let capped = build(true, false).await.unwrap();
    let fleet = build(true, true).await.unwrap();
    let away = Arc::new(keys_on(&plain, &servers[0].name(), "away", 1_000));
    let home = Arc::new(keys_on(&plain, &servers[1].name(), "home", 1_000));
    servers[0].kill();
    for pool in [&plain, &capped, &fleet] {
        while pool.status()[0].up {
            let _: Result<(), _> = pool.get(&away[0]).await.unwrap().set(&away[0], 0).await;
        }
    }
    println!("# The cost of stand_in_ttl: {TASKS} tasks, {OPS} SETs a round\n");
    println!("| writes | path | capped ÷ plain (median) | min | max | plain, writes/s |");
    println!("|---|---|---:|---:|---:|---:|");
    for (what, keys) in [("through a stand-in", &away), ("at home", &home)] {
        for shared in [false, true] {
            let path = if shared { "get_shared" } else { "get" };
            let (median, min, max, rate) = compare(&capped, &plain, keys, shared).await;
            println!("| {what} | {path} | {median:.3} | {min:.3} | {max:.3} | {rate:.0} |");
        }
    }
    println!("\n# The cost of a fleet's record on the stand-in\n");
    println!("| writes | path | fleet ÷ capped (median) | min | max | capped, writes/s |");
    println!("|---|---|---:|---:|---:|---:|");
    for shared in [false, true] {
        let path = if shared { "get_shared" } else { "get" };
        let (median, min, max, rate) = compare(&fleet, &capped, &away, shared).await;
        println!("| through a stand-in | {path} | {median:.3} | {min:.3} | {max:.3} | {rate:.0} |");
    }
}

/// `a`'s rate over `b`'s, in alternated rounds after one of each to warm
/// up: the median ratio, the least, the most, and `b`'s median rate.
async fn compare(
    a: &ShardedPool,
    b: &ShardedPool,
    keys: &Arc<Vec<String>>,
    shared: bool,
) -> (f64, f64, f64, f64) {
    rate(b, keys, shared).await;
    rate(a, keys, shared).await;
    let (mut ratios, mut rates) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (x, y) = if round % 2 == 0 {
            let y = rate(b, keys, shared).await;
            (rate(a, keys, shared).await, y)
        } else {
            let x = rate(a, keys, shared).await;
            (x, rate(b, keys, shared).await)
        };
        ratios.push(x / y);
        rates.push(y);
    }
    ratios.sort_by(f64::total_cmp);
    rates.sort_by(f64::total_cmp);
    (ratios[ROUNDS / 2], ratios[0], ratios[ROUNDS - 1], rates[ROUNDS / 2])
}
