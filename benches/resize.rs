//! Issue #38's resize goals, measured: a read-mostly `aside` workload
//! (10,000 keys with a 60 s TTL, a "database" that takes 20 ms per fill,
//! 32 tasks reading keys at random, 1 call in 100 a write-through `SET`
//! of the key with the same TTL) over local `redis-server` nodes, each
//! case run twice in one program, on fresh servers: without the feature
//! and with it.
//!
//! - add: a fifth node joins four, by `add_node` (without) or by
//!   `add_node` on a pool with `resize_warmup(30 s)` (with);
//! - drain: one of five leaves, by `remove_node` (without) or by
//!   `drain_node` (with).
//!
//! For each: the database fills in the `AFTER` (10 s) after the change, as
//! a fraction of the keys that moved (goal ≤ 1%); the hit ratio (calls
//! that ran no fill ÷ calls) after the change ÷ before it (goal ≥ 99%),
//! before being the `BEFORE` (5 s) just before it; and for the drain, the
//! slowest and 99.9th percentile call that ran no fill while the drain
//! ran (goal ≤ 10 ms), with the same figures of the `BEFORE` window beside
//! them (the machine's own noise).
//!
//!     cargo bench --bench resize
//!     FLUSTER_RESIZE_QUICK=1 cargo bench --bench resize   # 2,000 keys, 1 s + 3 s windows

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluster::ShardedPool;
use redis::AsyncCommands;
use support::{RedisServer, start_servers};

const TTL: Duration = Duration::from_secs(60);
const DATABASE: Duration = Duration::from_millis(20);
const TASKS: usize = 32;
const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
/// Each task's pause between calls.
const THINK: Duration = Duration::from_millis(1);
/// The hit ratio is also taken per `BUCKET`: the worst after the change.
const BUCKET: Duration = Duration::from_millis(100);
/// Commands the servers ran for longer than this are logged (`SLOWLOG`)
/// while the change runs.
const SLOW_MICROS: u64 = 1_000;

/// The sizes of a run: keys, the window before the change, after it.
#[derive(Clone, Copy)]
struct Size {
    keys: usize,
    before: Duration,
    after: Duration,
}

/// A small, fast random number stream per task (xorshift64*).
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn key(i: usize) -> String {
    format!("item:{i}")
}

/// What the workload saw in one window.
#[derive(Default)]
struct Window {
    calls: u64,
    fills: u64,
    /// Calls that ran no fill, in µs.
    hit_micros: Vec<u32>,
    /// The slowest of them of a key that moves (or moved) with the change.
    slowest_moved: u32,
}

impl Window {
    fn hit_ratio(&self) -> f64 {
        (self.calls - self.fills) as f64 / self.calls.max(1) as f64
    }

    /// The slowest and the 99.9th percentile call that ran no fill, in ms.
    fn latency(&mut self) -> (f64, f64) {
        self.hit_micros.sort_unstable();
        let n = self.hit_micros.len();
        if n == 0 {
            return (0.0, 0.0);
        }
        let p999 = self.hit_micros[(n * 999 / 1000).min(n - 1)];
        (self.hit_micros[n - 1] as f64 / 1e3, p999 as f64 / 1e3)
    }
}

/// The workload's shared record: which window calls count in (0: none),
/// and each window's figures.
struct Record {
    window: AtomicU64,
    /// When the workload began: calls are also counted per `BUCKET` since.
    base: Instant,
    /// Calls, fills and the slowest hit (µs) of each `BUCKET`.
    buckets: Mutex<Vec<(u64, u64, u32)>>,
    /// Before the change, while it runs, after it.
    windows: [Mutex<Window>; 3],
    stop: AtomicBool,
}

/// The workload: `TASKS` tasks calling `aside` on random keys until told
/// to stop, each call counted in the window open when it began.
fn workload(
    pool: &ShardedPool,
    size: Size,
    record: &Arc<Record>,
    moves: &Arc<Vec<bool>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..TASKS)
        .map(|t| {
            let (pool, record, moves) = (pool.clone(), record.clone(), moves.clone());
            tokio::spawn(async move {
                let mut seed = 0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1);
                let mut mine: [Window; 3] = Default::default();
                let mut buckets: Vec<(u64, u64, u32)> = Vec::new();
                while !record.stop.load(Ordering::Relaxed) {
                    let roll = next(&mut seed);
                    let index = roll as usize % size.keys;
                    let key = key(index);
                    let window = record.window.load(Ordering::Relaxed) as usize;
                    let started = Instant::now();
                    if roll % 100 == 99 {
                        // A write-through: the application updates the key.
                        if let Ok(mut conn) = pool.get(&key).await {
                            let _: Result<(), _> =
                                conn.pset_ex(&key, "updated", TTL.as_millis() as u64).await;
                        }
                        continue;
                    }
                    let filled = Arc::new(AtomicBool::new(false));
                    let flag = filled.clone();
                    let got: Result<String, _> = pool
                        .aside(&key, TTL, || async move {
                            flag.store(true, Ordering::Relaxed);
                            tokio::time::sleep(DATABASE).await;
                            Ok::<_, std::io::Error>("from the database".to_owned())
                        })
                        .await;
                    let took = started.elapsed();
                    tokio::time::sleep(THINK).await;
                    if got.is_err() || window == 0 {
                        continue;
                    }
                    let filled = filled.load(Ordering::Relaxed);
                    let bucket = (started - record.base).as_millis() / BUCKET.as_millis();
                    let bucket = bucket as usize;
                    if buckets.len() <= bucket {
                        buckets.resize(bucket + 1, (0, 0, 0));
                    }
                    let micros = took.as_micros().min(u32::MAX as u128) as u32;
                    buckets[bucket].0 += 1;
                    buckets[bucket].1 += u64::from(filled);
                    if !filled {
                        buckets[bucket].2 = buckets[bucket].2.max(micros);
                    }
                    let seen = &mut mine[window - 1];
                    seen.calls += 1;
                    if filled {
                        seen.fills += 1;
                    } else {
                        seen.hit_micros.push(micros);
                        if moves[index] {
                            seen.slowest_moved = seen.slowest_moved.max(micros);
                        }
                    }
                }
                let mut shared = record.buckets.lock().unwrap();
                if shared.len() < buckets.len() {
                    shared.resize(buckets.len(), (0, 0, 0));
                }
                for (shared, mine) in shared.iter_mut().zip(buckets) {
                    *shared = (shared.0 + mine.0, shared.1 + mine.1, shared.2.max(mine.2));
                }
                drop(shared);
                for (shared, mine) in record.windows.iter().zip(mine) {
                    let mut shared = shared.lock().unwrap();
                    shared.calls += mine.calls;
                    shared.fills += mine.fills;
                    shared.hit_micros.extend(mine.hit_micros);
                    shared.slowest_moved = shared.slowest_moved.max(mine.slowest_moved);
                }
            })
        })
        .collect()
}

/// Every key stored on its home with the TTL, as a past fill left it
/// (100 at a time; a write that times out on a starved machine is sent
/// again).
async fn prefill(pool: &ShardedPool, size: Size) {
    let keys: Vec<usize> = (0..size.keys).collect();
    for chunk in keys.chunks(100) {
        let writes = chunk.iter().map(|&i| async move {
            for _ in 0..10 {
                let Ok(mut conn) = pool.get_shared(key(i)).await else { continue };
                let ttl = TTL.as_millis() as u64;
                if conn.pset_ex::<_, _, ()>(key(i), "from the database", ttl).await.is_ok() {
                    return;
                }
            }
            panic!("{} could not be stored", key(i));
        });
        futures_util::future::join_all(writes).await;
    }
}

/// What one case measured.
struct Case {
    moved: usize,
    before: Window,
    after: Window,
    /// How long the change took (the drain's `drain_node` call).
    change: Duration,
    /// The calls that began while the change ran (the drain).
    during: Window,
    /// The worst hit ratio of a `BUCKET` after the change.
    worst_after: f64,
    /// The commands the servers ran for longer than `SLOW_MICROS` while
    /// the change ran: µs and name, slowest last.
    slow: Vec<(u64, String)>,
    /// The median slowest hit of stretches before the change as long as
    /// it, in µs.
    control: u32,
}

/// One case: `servers[..4]` or all five in the pool, the workload, then
/// `change` (which returns how long it ran), measured.
async fn case<F, Fut>(
    servers: &[RedisServer],
    start: usize,
    warm: bool,
    size: Size,
    change: F,
) -> Case
where
    F: FnOnce(ShardedPool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut builder = ShardedPool::builder();
    if warm {
        builder = builder.resize_warmup(Duration::from_secs(30));
    }
    let builder =
        servers[..start].iter().zip(NAMES).fold(builder, |b, (s, n)| b.named_node(n, &s.url()));
    let pool = builder.build().await.unwrap();
    prefill(&pool, size).await;
    let homes: Vec<_> = (0..size.keys).map(|i| pool.home_node_for(key(i)).unwrap()).collect();
    let record = Arc::new(Record {
        window: AtomicU64::new(0),
        base: Instant::now(),
        buckets: Mutex::default(),
        windows: Default::default(),
        stop: AtomicBool::new(false),
    });
    // The keys that move: to `e` when it joins, off `e` when it leaves.
    let joined = fluster::route::Router::new(NAMES.iter().map(|n| (*n, 1.0)));
    let moves: Vec<bool> = (0..size.keys)
        .map(|i| match start {
            5 => &*homes[i] == "e",
            _ => joined.home(key(i).as_bytes()).map(|h| &**joined.name(h)) == Some("e"),
        })
        .collect();
    let tasks = workload(&pool, size, &record, &Arc::new(moves));
    // Settle (connections open), then the window before.
    tokio::time::sleep(Duration::from_millis(500)).await;
    record.window.store(1, Ordering::Relaxed);
    tokio::time::sleep(size.before).await;
    for server in servers {
        let mut client = server.client();
        let set = [
            "SET",
            "slowlog-log-slower-than",
            &SLOW_MICROS.to_string(),
            "slowlog-max-len",
            "10000",
        ];
        redis::cmd("CONFIG").arg(&set[..]).query::<()>(&mut client).unwrap();
        redis::cmd("SLOWLOG").arg("RESET").query::<()>(&mut client).unwrap();
    }
    record.window.store(2, Ordering::Relaxed);
    let started = Instant::now();
    change(pool.clone()).await;
    let change_took = started.elapsed();
    record.window.store(3, Ordering::Relaxed);
    let mut slow = Vec::new();
    for server in servers {
        let log: Vec<(i64, i64, i64, Vec<String>)> = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(10_000)
            .query::<Vec<redis::Value>>(&mut server.client())
            .unwrap()
            .into_iter()
            .filter_map(|entry| {
                let redis::Value::Array(fields) = entry else { return None };
                let mut fields = fields.into_iter();
                let id = redis::from_redis_value(fields.next()?).ok()?;
                let at = redis::from_redis_value(fields.next()?).ok()?;
                let micros = redis::from_redis_value(fields.next()?).ok()?;
                let words = redis::from_redis_value(fields.next()?).ok()?;
                Some((id, at, micros, words))
            })
            .collect();
        slow.extend(
            log.into_iter().map(|(_, _, micros, words)| (micros as u64, words[0].to_uppercase())),
        );
    }
    let changed_bucket = ((started - record.base).as_millis() / BUCKET.as_millis()) as usize;
    let after_end =
        ((started + size.after - record.base).as_millis() / BUCKET.as_millis()) as usize;
    tokio::time::sleep_until((started + size.after).into()).await;
    record.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let moved = (0..size.keys).filter(|&i| pool.home_node_for(key(i)).unwrap() != homes[i]).count();
    let record = Arc::try_unwrap(record).ok().unwrap();
    let record_buckets = record.buckets.into_inner().unwrap();
    let windows = record.windows;
    let [before, during, rest] = windows.map(|w| w.into_inner().unwrap());
    pool.close();
    let mut after = Window {
        calls: during.calls + rest.calls,
        fills: during.fills + rest.fills,
        hit_micros: rest.hit_micros,
        slowest_moved: during.slowest_moved.max(rest.slowest_moved),
    };
    after.hit_micros.extend(&during.hit_micros);
    let buckets = record_buckets;
    let ratio = |(calls, fills, _): (u64, u64, u32)| (calls - fills) as f64 / calls.max(1) as f64;
    // The control for the drain's slowest hit: the slowest hit of each
    // stretch of as many buckets as the change spanned, before it: their
    // median, what a stretch that long shows without a change.
    let span = change_took.as_millis().div_ceil(BUCKET.as_millis()).max(1) as usize;
    let first = (500 / BUCKET.as_millis()) as usize + 1;
    let mut stretches: Vec<u32> = buckets
        .get(first..changed_bucket)
        .unwrap_or_default()
        .chunks_exact(span)
        .map(|stretch| stretch.iter().map(|b| b.2).max().unwrap_or(0))
        .collect();
    stretches.sort_unstable();
    let control = stretches.get(stretches.len() / 2).copied().unwrap_or(0);
    let worst_after = buckets
        .get(changed_bucket..after_end.min(buckets.len()))
        .unwrap_or_default()
        .iter()
        .filter(|b| b.0 > 0)
        .map(|&b| ratio(b))
        .fold(1.0, f64::min);
    slow.sort_unstable();
    Case { moved, before, after, change: change_took, during, worst_after, slow, control }
}

fn main() {
    if !support::redis_server_installed() {
        eprintln!("{}", support::INSTALL_HINT);
        return;
    }
    let quick = std::env::var_os("FLUSTER_RESIZE_QUICK").is_some_and(|v| v != "0");
    let size = match quick {
        false => {
            Size { keys: 10_000, before: Duration::from_secs(5), after: Duration::from_secs(10) }
        }
        true => Size { keys: 2_000, before: Duration::from_secs(1), after: Duration::from_secs(3) },
    };
    // `FLUSTER_RESIZE_DRAIN=batch,pause_ms`: the drain paced so.
    let pace = std::env::var("FLUSTER_RESIZE_DRAIN").ok().and_then(|v| {
        let (batch, pause) = v.split_once(',')?;
        Some((batch.trim().parse().ok()?, Duration::from_millis(pause.trim().parse().ok()?)))
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut cases = Vec::new();
    runtime.block_on(async {
        for (name, warm) in [("add_node", false), ("add_node, resize_warmup 30 s", true)] {
            let servers = start_servers(5);
            let url = servers[4].url();
            let case = case(&servers, 4, warm, size, |pool| async move {
                pool.add_node("e", &url).await.unwrap();
            })
            .await;
            cases.push((name, case));
        }
        for (name, drain) in [("remove_node", false), ("drain_node", true)] {
            let servers = start_servers(5);
            let case = case(&servers, 5, false, size, |pool| async move {
                match drain {
                    true => match pace {
                        Some((batch, pause)) => {
                            pool.drain_node_paced("e", batch, pause).await.unwrap()
                        }
                        None => pool.drain_node("e").await.unwrap(),
                    },
                    false => pool.remove_node("e").unwrap(),
                }
            })
            .await;
            cases.push((name, case));
        }
    });
    println!(
        "{} keys, TTL {TTL:?}, database {DATABASE:?} a fill, {TASKS} tasks, 1% writes; \
         {:?} before the change, {:?} after\n",
        size.keys, size.before, size.after
    );
    println!(
        "| case | keys moved | fills in the {:?} after | ÷ moved | hit ratio before | after | \
         after ÷ before | worst {BUCKET:?} after |",
        size.after
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, case) in &cases {
        let (before, after) = (case.before.hit_ratio(), case.after.hit_ratio());
        println!(
            "| {name} | {} | {} | {:.2}% | {:.4} | {:.4} | {:.2}% | {:.4} |",
            case.moved,
            case.after.fills,
            case.after.fills as f64 * 100.0 / case.moved.max(1) as f64,
            before,
            after,
            after * 100.0 / before,
            case.worst_after,
        );
    }
    println!(
        "\n| case | change took | calls while it ran | slowest hit then | 99.9th | \
         slowest hit of a moved key then | median slowest hit of as long a stretch before | \
         slowest hit before | 99.9th | \
         server commands > {} ms then | slowest (server) |",
        SLOW_MICROS as f64 / 1e3
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (name, mut case) in cases {
        let (during, during_p) = case.during.latency();
        let (before, before_p) = case.before.latency();
        println!(
            "| {name} | {:.0} ms | {} | {during:.1} ms | {during_p:.1} ms | {:.1} ms | {:.1} ms | \
             {before:.1} ms | {before_p:.1} ms | {} | {} |",
            case.change.as_secs_f64() * 1e3,
            case.during.calls,
            case.during.slowest_moved as f64 / 1e3,
            case.control as f64 / 1e3,
            case.slow.len(),
            case.slow
                .last()
                .map_or("-".to_owned(), |(us, name)| format!("{name} {:.1} ms", *us as f64 / 1e3)),
        );
    }
}
