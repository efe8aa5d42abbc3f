//! Early refresh (`aside_early`) against `aside` on one hot key: 200
//! callers (4 pools of 50 tasks, standing for 4 processes) read a key
//! whose value lives 1 s, over one local `redis-server`, each fill asking a
//! "database" that takes 20 ms, for 10 s (`FLUSTER_EARLY_SECONDS`), each
//! caller pausing 1 ms between calls. Counts the calls that ran the fill
//! themselves (it ran in the caller's task), the calls that took at least
//! the fill's 20 ms (a caller that waited for a fill, or a scheduling
//! stall: 200 tasks on 2 cores shared with the server), the fills, and the
//! fills that started within half a TTL of the one before (more than one
//! per expiry window). Both forms run in one program, one after the other,
//! on the same server.
//!
//!     cargo bench --bench early
//!     FLUSTER_EARLY_SECONDS=30 cargo bench --bench early

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluster::ShardedPool;
use support::{builder_for, start_servers};

const POOLS: usize = 4;
const TASKS: usize = 50;
const TTL: Duration = Duration::from_secs(1);
const DATABASE: Duration = Duration::from_millis(20);

/// What one run saw.
#[derive(Default)]
struct Seen {
    calls: u64,
    waited: u64,
    inline: u64,
    slowest: Duration,
    fills: Vec<Instant>,
}

/// A fill, counted; `caller` is the id of the caller's task, and
/// `inline` is set if it runs there.
async fn fill(
    fills: Arc<Mutex<Vec<Instant>>>,
    caller: Option<tokio::task::Id>,
    inline: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<String> {
    fills.lock().unwrap().push(Instant::now());
    if tokio::task::try_id() == caller {
        inline.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    tokio::time::sleep(DATABASE).await;
    Ok("value".to_owned())
}

/// `POOLS` × `TASKS` callers read `key` for `run`, with `aside_early` or
/// `aside`; the key is filled once before they start.
async fn run(pools: &[ShardedPool], key: &str, early: bool, run: Duration) -> Seen {
    let fills = Arc::new(Mutex::new(Vec::new()));
    let first = fills.clone();
    let flag = Arc::default();
    let _: String = pools[0].aside_early(key, TTL, move || fill(first, None, flag)).await.unwrap();
    fills.lock().unwrap().clear();
    let end = Instant::now() + run;
    let mut tasks = Vec::new();
    for pool in pools {
        for _ in 0..TASKS {
            let (pool, key, fills) = (pool.clone(), key.to_owned(), fills.clone());
            tasks.push(tokio::spawn(async move {
                let mut seen = Seen::default();
                while Instant::now() < end {
                    let started = Instant::now();
                    let (fills, caller) = (fills.clone(), tokio::task::try_id());
                    let inline = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let flag = inline.clone();
                    let filler = move || fill(fills, caller, flag);
                    let got: Result<String, _> = match early {
                        true => pool.aside_early(&key, TTL, filler).await,
                        false => pool.aside(&key, TTL, filler).await,
                    };
                    got.unwrap();
                    let took = started.elapsed();
                    seen.calls += 1;
                    seen.waited += u64::from(took >= DATABASE);
                    seen.inline += u64::from(inline.load(std::sync::atomic::Ordering::Relaxed));
                    seen.slowest = seen.slowest.max(took);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                seen
            }));
        }
    }
    let mut total = Seen::default();
    for task in tasks {
        let seen = task.await.unwrap();
        total.calls += seen.calls;
        total.waited += seen.waited;
        total.inline += seen.inline;
        total.slowest = total.slowest.max(seen.slowest);
    }
    total.fills = fills.lock().unwrap().clone();
    total
}

fn main() {
    let seconds: u64 =
        std::env::var("FLUSTER_EARLY_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let servers = start_servers(1);
        let mut pools = Vec::new();
        for _ in 0..POOLS {
            pools.push(builder_for(&servers).build().await.unwrap());
        }
        let length = Duration::from_secs(seconds);
        println!("{} callers, TTL {TTL:?}, fill {DATABASE:?}, {seconds} s each\n", POOLS * TASKS);
        println!(
            "| form | calls | ran the fill | took ≥ the fill | slowest call | fills | \
             fills within TTL/2 of the last |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (name, early) in [("aside", false), ("aside_early", true)] {
            let seen = run(&pools, &format!("hot:{name}"), early, length).await;
            let crowded = seen.fills.windows(2).filter(|pair| pair[1] - pair[0] < TTL / 2).count();
            println!(
                "| {name} | {} | {} | {} | {:.1} ms | {} | {crowded} |",
                seen.calls,
                seen.inline,
                seen.waited,
                seen.slowest.as_secs_f64() * 1e3,
                seen.fills.len()
            );
        }
    });
}
