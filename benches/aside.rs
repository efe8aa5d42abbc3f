//! Cache-aside at its hardest moments: 200 readers (4 pools of 50 tasks,
//! standing for 4 processes) read one hot key whose value lives 1 s, over
//! two local `redis-server` nodes, each miss asking a "database" that takes
//! 20 ms. Counts the database's fills per second with `aside` and with the
//! cache-aside written by hand (`GET`; on a miss, fill and `SET ... PX`),
//! first while the key expires each second, then at its node's return
//! (killed and restarted empty). Then the cost of `aside` on a hit against
//! a plain `GET` through the same `get_shared` path (64 tasks; median of 9
//! alternated per-round ratios).
//!
//!     cargo bench --bench aside

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fluster::ShardedPool;
use redis::AsyncCommands;
use support::{RedisServer, builder_for, key_on, start_servers};

const POOLS: usize = 4;
const TASKS: usize = 50;
const TTL: Duration = Duration::from_secs(1);
const DATABASE: Duration = Duration::from_millis(20);
const RUN: Duration = Duration::from_secs(5);

/// One read of `key`, with `aside` or by hand; counts each fill in `fills`.
async fn read(pool: &ShardedPool, key: &str, aside: bool, fills: &AtomicU64) -> Option<String> {
    let fill = || async {
        fills.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(DATABASE).await;
        Ok::<_, std::io::Error>("value".to_owned())
    };
    if aside {
        return pool.aside(key, TTL, fill).await.ok();
    }
    let mut conn = pool.get_shared(key).await.ok()?;
    if let Ok(Some(value)) = conn.get::<_, Option<String>>(key).await {
        return Some(value);
    }
    let value = fill().await.ok()?;
    let _: Result<(), _> = conn.pset_ex(key, &value, TTL.as_millis() as u64).await;
    Some(value)
}

/// Fills per second while `POOLS` × `TASKS` readers read `key` for `RUN`,
/// and at most in any one second; `during` runs beside them (the node's
/// kill and restart).
async fn fills(
    pools: &[ShardedPool],
    key: &str,
    aside: bool,
    during: impl std::future::Future,
) -> (f64, u64) {
    let (fills, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let mut tasks = Vec::new();
    for pool in pools {
        for _ in 0..TASKS {
            let (pool, key, fills, stop) =
                (pool.clone(), key.to_owned(), fills.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if read(&pool, &key, aside, &fills).await.is_none() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }));
        }
    }
    let started = Instant::now();
    let sampler = {
        let fills = fills.clone();
        tokio::spawn(async move {
            let (mut peak, mut last) = (0, 0);
            while started.elapsed() < RUN {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = fills.load(Ordering::Relaxed);
                peak = peak.max(now - last);
                last = now;
            }
            peak
        })
    };
    during.await;
    let peak = sampler.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    (fills.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(), peak)
}

/// Reads per second of `TASKS` tasks reading `key` (a hit) for 100,000
/// reads, with `aside` or a plain `GET`.
async fn hits(pool: &ShardedPool, key: &str, aside: bool) -> f64 {
    const READS: usize = 100_000;
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let (pool, key) = (pool.clone(), key.to_owned());
            tokio::spawn(async move {
                let unused = AtomicU64::new(0);
                for _ in (t..READS).step_by(64) {
                    if aside {
                        read(&pool, &key, true, &unused).await.unwrap();
                    } else {
                        let mut conn = pool.get_shared(&key).await.unwrap();
                        let _: Option<String> = conn.get(&key).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    READS as f64 / started.elapsed().as_secs_f64()
}

async fn restart(server: &mut RedisServer) {
    tokio::time::sleep(RUN / 3).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !support::redis_server_installed() {
        eprintln!("{}", support::INSTALL_HINT);
        return;
    }
    let mut servers = start_servers(2);
    let mut pools = Vec::new();
    for _ in 0..POOLS {
        let builder = builder_for(&servers).penalty_min_wait(Duration::from_millis(100));
        pools.push(builder.penalty_max_wait(Duration::from_millis(400)).build().await.unwrap());
    }
    let key = key_on(&pools[0], &servers[0].name(), "hot");
    println!(
        "# Database fills: {POOLS} pools × {TASKS} readers of one key, {TTL:?} TTL, a {DATABASE:?} database\n"
    );
    println!("| moment | by hand, fills/s | peak/s | aside, fills/s | peak/s | by hand ÷ aside |");
    println!("|---|---:|---:|---:|---:|---:|");
    let _: () = redis::cmd("FLUSHALL").query(&mut servers[0].client()).unwrap();
    let (hand, hand_peak) = fills(&pools, &key, false, tokio::time::sleep(RUN)).await;
    let (aside, aside_peak) = fills(&pools, &key, true, tokio::time::sleep(RUN)).await;
    println!(
        "| expiry each second | {hand:.1} | {hand_peak} | {aside:.1} | {aside_peak} | {:.0} |",
        hand / aside
    );
    let (hand, hand_peak) = fills(&pools, &key, false, restart(&mut servers[0])).await;
    let (aside, aside_peak) = fills(&pools, &key, true, restart(&mut servers[0])).await;
    println!(
        "| expiry, and the node killed and restarted empty | {hand:.1} | {hand_peak} | {aside:.1} | {aside_peak} | {:.0} |",
        hand / aside
    );

    let pool = &pools[0];
    let _: () = pool.get_shared(&key).await.unwrap().set(&key, "value").await.unwrap();
    println!("\n# A hit: aside against GET through get_shared, 64 tasks\n");
    let (mut ratios, mut plain) = (Vec::new(), Vec::new());
    hits(pool, &key, false).await;
    hits(pool, &key, true).await;
    for round in 0..9 {
        let (a, b) = if round % 2 == 0 {
            let b = hits(pool, &key, false).await;
            (hits(pool, &key, true).await, b)
        } else {
            let a = hits(pool, &key, true).await;
            (a, hits(pool, &key, false).await)
        };
        ratios.push(a / b);
        plain.push(b);
    }
    ratios.sort_by(f64::total_cmp);
    plain.sort_by(f64::total_cmp);
    println!("| aside ÷ GET (median) | min | max | GET, reads/s |\n|---:|---:|---:|---:|");
    println!("| {:.3} | {:.3} | {:.3} | {:.0} |", ratios[4], ratios[0], ratios[8], plain[4]);
}
