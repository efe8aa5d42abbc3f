//! Slow start, measured: a cache-aside workload (GET; on a miss, read the
//! "database" and SET) over 3 local `redis-server` nodes. One node is killed
//! and comes back empty; its keys come home to an empty cache. Prints the
//! misses per 100 ms after its return with `warmup` zero and with 5 s: the
//! load a database would see.
//!
//!     cargo bench --bench warmup

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fluster::{NodeEvent, ShardedPool};
use redis::AsyncCommands;
use support::{builder_for, start_servers};

const KEYS: usize = 30_000;
const TASKS: usize = 32;
const SAMPLE: Duration = Duration::from_millis(100);
const WATCH: Duration = Duration::from_secs(8);

/// A small, fast random number stream per task (xorshift64*).
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn key(i: usize) -> String {
    format!("cache:{i}")
}

/// Misses per `SAMPLE` from the node's return on, with `warmup`.
async fn misses_after_return(warmup: Duration) -> Vec<u64> {
    let mut servers = start_servers(3);
    let pool: ShardedPool = builder_for(&servers)
        .warmup(warmup)
        .penalty_min_wait(Duration::from_millis(500))
        .penalty_max_wait(Duration::from_millis(500))
        .penalty_jitter(0.0)
        .build()
        .await
        .unwrap();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1_000) {
        let pairs: Vec<(String, &str)> = chunk.iter().map(|&i| (key(i), "cached")).collect();
        pool.mset(&pairs).await.unwrap();
    }
    let (misses, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    for t in 0..TASKS {
        let (pool, misses, stop) = (pool.clone(), misses.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seed = 0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                let key = key(next(&mut seed) as usize % KEYS);
                let Ok(mut conn) = pool.get(&key).await else { continue };
                match conn.get::<_, Option<String>>(&key).await {
                    Ok(Some(_)) | Err(_) => {}
                    Ok(None) => {
                        misses.fetch_add(1, Ordering::Relaxed); // the database read
                        let _: Result<(), _> = conn.set(&key, "cached").await;
                    }
                }
            }
        });
    }
    let mut events = pool.events();
    tokio::time::sleep(Duration::from_secs(1)).await;
    servers[0].kill();
    // Stand-ins take its keys (and miss them once); let that settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    servers[0].restart();
    loop {
        if let Ok(NodeEvent::Returned { .. }) = events.recv().await {
            break;
        }
    }
    let mut samples = Vec::new();
    let mut last = misses.load(Ordering::Relaxed);
    let start = Instant::now();
    for n in 1..=(WATCH.as_millis() / SAMPLE.as_millis()) as u32 {
        tokio::time::sleep_until((start + SAMPLE * n).into()).await;
        let now = misses.load(Ordering::Relaxed);
        samples.push(now - last);
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    pool.close();
    samples
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !support::redis_server_installed() {
        eprintln!("{}", support::INSTALL_HINT);
        return;
    }
    let off = misses_after_return(Duration::ZERO).await;
    let on = misses_after_return(Duration::from_secs(5)).await;
    println!("# Slow start: misses per 100 ms after an empty node returns\n");
    println!("{KEYS} keys over 3 nodes, {TASKS} tasks of GET (+ SET on a miss).\n");
    println!("| after return | warmup 0 | warmup 5 s |\n|---|---:|---:|");
    for (i, (a, b)) in off.iter().zip(&on).enumerate() {
        if i < 10 || i % 10 == 9 {
            println!("| {} ms | {a} | {b} |", (i + 1) * 100);
        }
    }
    let (peak_off, peak_on) = (*off.iter().max().unwrap(), *on.iter().max().unwrap());
    let (sum_off, sum_on): (u64, u64) = (off.iter().sum(), on.iter().sum());
    println!("| **peak** | **{peak_off}** | **{peak_on}** |");
    println!("| total over {WATCH:?} | {sum_off} | {sum_on} |");
    println!("\npeak ÷ peak: {:.1}×", peak_off as f64 / peak_on.max(1) as f64);
}
