//! The near cache, measured against three local `redis-server` nodes:
//!
//! * throughput: 64 tasks over 1,000 hot keys through `get_shared`, 99% `GET`
//!   and 1% `SET` (then 95/5), with `near_cache` and without, rounds
//!   alternated, median of the per-round ratios; then the 99/1 load with its
//!   reads through `get_cached`, the typed fast path;
//! * the invalidation window under that load: from another client's
//!   acknowledged write to the first read through the near cache that sees
//!   it, p50, p99 and max;
//! * memory per entry, from the process's resident size, and that the
//!   entries stay within `near_cache`.
//!
//!     cargo bench --bench near

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fluster::ShardedPool;
use redis::AsyncCommands;
use support::{builder_for, start_servers};

const TASKS: usize = 64;
const KEYS: usize = 1_000;
const OPS: usize = 200_000;
const ROUNDS: usize = 5;

fn key(i: usize) -> String {
    format!("hot:{}", i % KEYS)
}

/// Operations per second: `TASKS` tasks, `OPS` in all, one in `every` a
/// `SET`, the rest `GET`s (through `get_cached` if `typed`).
async fn rate(pool: &ShardedPool, every: usize, typed: bool) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in (t..OPS).step_by(TASKS) {
                    let key = key(i.wrapping_mul(7919));
                    if typed && i % every != 0 {
                        let _: Option<String> = pool.get_cached(&key).await.unwrap();
                        continue;
                    }
                    let mut conn = pool.get_shared(&key).await.unwrap();
                    if i % every == 0 {
                        conn.set::<_, _, ()>(&key, i).await.unwrap();
                    } else {
                        conn.get::<_, Option<String>>(&key).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    OPS as f64 / started.elapsed().as_secs_f64()
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !support::redis_server_installed() {
        eprintln!("{}", support::INSTALL_HINT);
        return;
    }
    let servers = start_servers(3);
    let plain = builder_for(&servers).build().await.unwrap();
    let near = builder_for(&servers).near_cache(100_000).build().await.unwrap();
    for i in 0..KEYS {
        plain.get_shared(key(i)).await.unwrap().set::<_, _, ()>(key(i), i).await.unwrap();
    }
    println!(
        "# Near cache: {TASKS} tasks, {KEYS} hot keys, get_shared, {OPS} operations a round\n"
    );
    println!("| workload | near ÷ plain (median) | min | max | plain, ops/s | near, ops/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    let workloads = [
        ("99% GET / 1% SET", 100, false),
        ("95% GET / 5% SET", 20, false),
        ("99% get_cached / 1% SET", 100, true),
    ];
    for (label, every, typed) in workloads {
        let (plain, near) = (&plain, &near);
        rate(plain, every, false).await;
        rate(near, every, typed).await;
        let (mut ratios, mut plain_rates, mut near_rates) = (vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            let (a, b) = if round % 2 == 0 {
                let b = rate(plain, every, false).await;
                (rate(near, every, typed).await, b)
            } else {
                let a = rate(near, every, typed).await;
                (a, rate(plain, every, false).await)
            };
            ratios.push(a / b);
            plain_rates.push(b);
            near_rates.push(a);
        }
        for v in [&mut ratios, &mut plain_rates, &mut near_rates] {
            v.sort_by(f64::total_cmp);
        }
        let m = ROUNDS / 2;
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} |",
            ratios[m],
            ratios[0],
            ratios[ROUNDS - 1],
            plain_rates[m],
            near_rates[m]
        );
    }

    // The window, under the 99/1 load.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (near, stop) = (near.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                rate(&near, 100, false).await;
            }
        })
    };
    let probe = "window:probe";
    let home =
        servers.iter().find(|s| Some(s.name()) == near.node_for(probe).map(|n| n.to_string()));
    let mut other = home.unwrap().client();
    let mut windows = Vec::new();
    for round in 0..500 {
        let value = round.to_string();
        let _: Option<String> = near.get_shared(probe).await.unwrap().get(probe).await.unwrap();
        let _: () = redis::Commands::set(&mut other, probe, &value).unwrap();
        let written = Instant::now();
        loop {
            let seen: Option<String> =
                near.get_shared(probe).await.unwrap().get(probe).await.unwrap();
            if seen.as_deref() == Some(&*value) {
                break;
            }
        }
        windows.push(written.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    windows.sort();
    println!(
        "\n## Invalidation window under the 99/1 load ({} writes by another client)\n",
        windows.len()
    );
    println!("| p50 | p99 | max |\n|---:|---:|---:|");
    let (p50, p99) = (percentile(&windows, 0.5), percentile(&windows, 0.99));
    println!("| {p50:?} | {p99:?} | {:?} |", windows.last().unwrap());

    // Memory per entry, and the bound: read BOUND distinct keys (the cache
    // fills), then BOUND more (it must evict, not grow).
    const BOUND: usize = 50_000;
    let one = &servers[..1];
    let bounded = builder_for(one).near_cache(BOUND).build().await.unwrap();
    let mut admin = one[0].client();
    for chunk in 0..(2 * BOUND / 10_000) {
        let mut pipe = redis::pipe();
        for i in chunk * 10_000..(chunk + 1) * 10_000 {
            pipe.cmd("SET").arg(format!("mem:{i}")).arg("0123456789abcdef").ignore();
        }
        let _: () = pipe.query(&mut admin).unwrap();
    }
    let read_range = |range: std::ops::Range<usize>| {
        let bounded = bounded.clone();
        async move {
            for i in range {
                let key = format!("mem:{i}");
                let _: Option<String> =
                    bounded.get_shared(&key).await.unwrap().get(&key).await.unwrap();
            }
        }
    };
    let gets = |server: &support::RedisServer| -> u64 {
        let info: String =
            redis::cmd("INFO").arg("commandstats").query(&mut server.client()).unwrap();
        let line = info.lines().find_map(|l| l.strip_prefix("cmdstat_get:calls="));
        line.and_then(|l| l.split(',').next()?.parse().ok()).unwrap_or(0)
    };
    read_range(0..1_000).await; // the connection and its first allocations
    let before = rss_kib();
    read_range(1_000..BOUND + 1_000).await;
    let full = rss_kib();
    read_range(BOUND + 1_000..2 * BOUND).await;
    let after = rss_kib();
    let asked = gets(&one[0]);
    read_range(2 * BOUND - 10_000..2 * BOUND).await; // recent: cached
    let recent = gets(&one[0]) - asked;
    read_range(0..10_000).await; // oldest: evicted
    let oldest = gets(&one[0]) - asked - recent;
    println!(
        "\n## Memory and bound: near_cache({BOUND}), 16-byte values, 2 × {BOUND} distinct keys read\n"
    );
    println!(
        "| per entry | growth past the bound | recent 10,000 re-read: to the server | oldest 10,000: to the server |"
    );
    println!("|---:|---:|---:|---:|");
    println!(
        "| {} bytes | {} KiB | {recent} | {oldest} |",
        (full - before) * 1024 / BOUND as u64,
        after.saturating_sub(full)
    );
}
