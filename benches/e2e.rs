//! End-to-end load, side by side in one run, against three local
//! `redis-server` nodes this program starts itself:
//!
//! * (a)  `ShardedPool::get` (fluster, defaults: no PING on checkout)
//! * (a') `ShardedPool::get_shared` (fluster's shared-connection fast path)
//! * (b)  what users write today: `Vec<bb8::Pool<bb8_redis::RedisConnectionManager>>`
//!   with `hash % n`, bb8 defaults (PING on every checkout)
//! * (b') the same with bb8's checkout PING off
//! * (c)  one `redis::aio::MultiplexedConnection` per node shared by all tasks
//! * (d)  `redis-benchmark` on the same nodes with the same concurrency (the
//!   ceiling: C clients, no pool, no routing)
//!
//! for 64 and 256 concurrent tasks, `INCR` and `GET`/`SET` 80/20; then the
//! failover timing under load, and the build time and memory of a pool of
//! 1,000 nodes.
//!
//!     cargo bench --bench e2e                 # FLUSTER_E2E_OPS=200000 for longer runs
//!     FLUSTER_E2E_TARGETS=1 cargo bench --bench e2e   # the head-to-head ratios alone
//!     FLUSTER_E2E_ONLY="(a) " cargo bench --bench e2e # one client alone, for perf stat
//!
//! Benchmarks are not tests: CI only builds this (`cargo bench --no-run`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bb8_redis::RedisConnectionManager;
use fluster::ShardedPool;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use support::RedisServer;

const KEYSPACE: u64 = 10_000;
/// Runs per client and configuration; the median is reported.
const ROUNDS: usize = 3;
/// Connections per node for every pool, fluster's and bb8's alike.
const POOL_SIZE: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Workload {
    Incr,
    GetSet,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Incr => "INCR",
            Workload::GetSet => "GET/SET 80/20",
        }
    }
}

/// A client under test: one operation on `key`.
#[derive(Clone)]
enum Client {
    Fluster(ShardedPool),
    FlusterShared(ShardedPool),
    /// fluster over bb8-redis managers: the same connections as (b'), no
    /// response timeout, so only the pool's own work differs.
    FlusterBb8(ShardedPool<RedisConnectionManager>),
    Bb8(Arc<Vec<bb8::Pool<RedisConnectionManager>>>),
    Multiplexed(Arc<Vec<MultiplexedConnection>>),
}

fn bucket(key: &str, n: usize) -> usize {
    (BuildHasherDefault::<DefaultHasher>::default().hash_one(key) % n as u64) as usize
}

async fn run_op<C: redis::aio::ConnectionLike + Send + Sync>(
    conn: &mut C,
    workload: Workload,
    key: &str,
    i: u64,
) -> redis::RedisResult<()> {
    match workload {
        Workload::Incr => conn.incr::<_, _, i64>(key, 1).await.map(drop),
        Workload::GetSet if i.is_multiple_of(5) => conn.set::<_, _, ()>(key, i).await,
        Workload::GetSet => conn.get::<_, Option<i64>>(key).await.map(drop),
    }
}

impl Client {
    async fn op(&self, workload: Workload, key: &str, i: u64) -> Result<(), String> {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        match self {
            Client::Fluster(pool) => {
                let mut conn = pool.get(key).await.map_err(|x| e(&x))?;
                run_op(&mut conn, workload, key, i).await.map_err(|x| e(&x))
            }
            Client::FlusterShared(pool) => {
                let mut conn = pool.get_shared(key).await.map_err(|x| e(&x))?;
                run_op(&mut conn, workload, key, i).await.map_err(|x| e(&x))
            }
            Client::FlusterBb8(pool) => {
                let mut conn = pool.get(key).await.map_err(|x| e(&x))?;
                run_op(&mut conn, workload, key, i).await.map_err(|x| e(&x))
            }
            Client::Bb8(pools) => {
                let pool = &pools[bucket(key, pools.len())];
                let mut conn = pool.get().await.map_err(|x| e(&x))?;
                run_op(&mut *conn, workload, key, i).await.map_err(|x| e(&x))
            }
            Client::Multiplexed(conns) => {
                let mut conn = conns[bucket(key, conns.len())].clone();
                run_op(&mut conn, workload, key, i).await.map_err(|x| e(&x))
            }
        }
    }
}

/// Throughput and latency of one run, and the client's CPU time per
/// operation (the servers run in processes of their own, so this is the
/// client library's cost, which the machine's noise moves far less than
/// throughput).
#[derive(Clone, Copy, Debug)]
struct Figures {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_op: f64,
}

/// CPU time this process has used, every thread, in microseconds.
fn cpu_us() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
}

async fn drive(client: Client, tasks: usize, ops: u64, workload: Workload) -> Figures {
    let per_task = ops / tasks as u64;
    let (started, cpu) = (Instant::now(), cpu_us());
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task as usize);
                let mut x = t as u64 + 1;
                for i in 0..per_task {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let key = format!("key:{}", (x >> 33) % KEYSPACE);
                    let op_started = Instant::now();
                    client.op(workload, &key, i).await.expect("operation failed");
                    latencies.push(op_started.elapsed().as_micros() as u32);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(ops as usize);
    for handle in handles {
        latencies.extend(handle.await.unwrap());
    }
    let (elapsed, cpu) = (started.elapsed().as_secs_f64(), cpu_us() - cpu);
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64;
    let n = latencies.len() as f64;
    Figures {
        ops_per_sec: n / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        cpu_us_per_op: cpu / n,
    }
}

/// redis-benchmark against every node at once, `tasks` clients in all:
/// throughputs add up, latency is the worst node's.
fn redis_benchmark(servers: &[RedisServer], tasks: usize, ops: u64, test: &str) -> Figures {
    let children: Vec<_> = servers
        .iter()
        .map(|s| {
            Command::new("redis-benchmark")
                .args(["-h", "127.0.0.1", "-p", &s.port().to_string()])
                .args(["-c", &(tasks / servers.len()).max(1).to_string()])
                .args(["-n", &(ops / servers.len() as u64).to_string()])
                .args(["-r", &KEYSPACE.to_string(), "-t", test, "--csv"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("run redis-benchmark")
        })
        .collect();
    let mut figures = Figures { ops_per_sec: 0.0, p50_us: 0.0, p99_us: 0.0, cpu_us_per_op: 0.0 };
    for child in children {
        let out = child.wait_with_output().expect("redis-benchmark output");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().nth(1).expect("redis-benchmark CSV output");
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
        let fields: Vec<f64> =
            line.split(',').skip(1).map(|f| f.trim_matches('"').parse().unwrap_or(0.0)).collect();
        figures.ops_per_sec += fields[0];
        figures.p50_us = figures.p50_us.max(fields[3] * 1000.0);
        figures.p99_us = figures.p99_us.max(fields[5] * 1000.0);
    }
    figures
}

fn combine_80_20(get: Figures, set: Figures) -> Figures {
    Figures {
        ops_per_sec: 1.0 / (0.8 / get.ops_per_sec + 0.2 / set.ops_per_sec),
        p50_us: get.p50_us.max(set.p50_us),
        p99_us: get.p99_us.max(set.p99_us),
        cpu_us_per_op: 0.8 * get.cpu_us_per_op + 0.2 * set.cpu_us_per_op,
    }
}

async fn clients(servers: &[RedisServer]) -> Vec<(&'static str, Client)> {
    let mut builder = ShardedPool::builder().max_connections(POOL_SIZE);
    for s in servers {
        builder = builder.node(&s.url());
    }
    let fluster = builder.build().await.unwrap();
    let bb8 = |ping: bool| async move {
        let mut pools = Vec::new();
        for s in servers {
            let manager = RedisConnectionManager::new(s.url()).unwrap();
            pools.push(
                bb8::Pool::builder()
                    .max_size(POOL_SIZE)
                    .test_on_check_out(ping)
                    .build(manager)
                    .await
                    .unwrap(),
            );
        }
        Client::Bb8(Arc::new(pools))
    };
    let mut same = fluster::Builder::new().max_connections(POOL_SIZE);
    for s in servers {
        same = same.manager(&s.name(), RedisConnectionManager::new(s.url()).unwrap());
    }
    let same = Client::FlusterBb8(same.build().await.unwrap());
    let mut multiplexed = Vec::new();
    for s in servers {
        let client = redis::Client::open(s.url()).unwrap();
        multiplexed.push(client.get_multiplexed_async_connection().await.unwrap());
    }
    vec![
        ("(a) fluster get", Client::Fluster(fluster.clone())),
        ("(a') fluster get_shared", Client::FlusterShared(fluster)),
        ("(b) Vec<bb8::Pool>, PING on checkout", bb8(true).await),
        ("(b') Vec<bb8::Pool>, no PING", bb8(false).await),
        ("(c) MultiplexedConnection per node", Client::Multiplexed(Arc::new(multiplexed))),
        ("(a'') fluster get over bb8-redis managers", same),
    ]
}

async fn throughput(servers: &[RedisServer], ops: u64) {
    println!(
        "## Throughput: {ops} operations per run, median of {ROUNDS} interleaved runs, 3 nodes, pools of {POOL_SIZE} per node\n"
    );
    let clients = clients(servers).await;
    // FLUSTER_E2E_QUICK=1: one configuration only, for iterating on the code.
    let quick = std::env::var("FLUSTER_E2E_QUICK").is_ok();
    let task_counts: &[usize] = if quick { &[64] } else { &[64, 256] };
    let workloads: &[Workload] =
        if quick { &[Workload::Incr] } else { &[Workload::Incr, Workload::GetSet] };
    for &tasks in task_counts {
        for &workload in workloads {
            println!("### {tasks} tasks, {}\n", workload.name());
            println!("| client | ops/s | p50 µs | p99 µs | vs (b) | vs (b') | vs (c) | vs (d) |");
            println!("|---|---:|---:|---:|---:|---:|---:|---:|");
            // Warm up every client's connections first.
            for (_, client) in &clients {
                drive(client.clone(), tasks, (tasks * 4) as u64, workload).await;
            }
            // Interleaved rounds, so that a noisy moment on the shared
            // machine hits every client alike; each client's median round.
            let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); clients.len()];
            for _ in 0..ROUNDS {
                for (runs, (_, client)) in runs.iter_mut().zip(&clients) {
                    runs.push(drive(client.clone(), tasks, ops, workload).await);
                }
            }
            let mut rows = Vec::new();
            for (mut runs, (name, _)) in runs.into_iter().zip(&clients) {
                runs.sort_by(|x, y| x.ops_per_sec.total_cmp(&y.ops_per_sec));
                rows.push((*name, runs[runs.len() / 2]));
            }
            let ceiling = match workload {
                Workload::Incr => redis_benchmark(servers, tasks, ops, "incr"),
                Workload::GetSet => combine_80_20(
                    redis_benchmark(servers, tasks, ops, "get"),
                    redis_benchmark(servers, tasks, ops, "set"),
                ),
            };
            rows.push(("(d) redis-benchmark", ceiling));
            let base = |prefix: &str| {
                rows.iter().find(|(n, _)| n.starts_with(prefix)).unwrap().1.ops_per_sec
            };
            let (b, b2, c, d) = (base("(b)"), base("(b')"), base("(c)"), base("(d)"));
            for (name, f) in &rows {
                println!(
                    "| {name} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    f.ops_per_sec,
                    f.p50_us,
                    f.p99_us,
                    f.ops_per_sec / b,
                    f.ops_per_sec / b2,
                    f.ops_per_sec / c,
                    f.ops_per_sec / d
                );
            }
            println!();
        }
    }
}

/// The issue's targets, head to head: fluster against its baseline in
/// alternating rounds (the order flips each round), and the median of the
/// per-round ratios, which cancels the machine's drift between rounds.
async fn head_to_head(servers: &[RedisServer], ops: u64) {
    const PAIRS: usize = 9;
    println!(
        "## Head to head: median of {PAIRS} per-round ratios, INCR, {ops} operations a round\n"
    );
    println!(
        "| pair | tasks | throughput: median | min | max | client CPU per op: median | min | max |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let clients = clients(servers).await;
    let pick =
        |prefix: &str| clients.iter().find(|(n, _)| n.starts_with(prefix)).unwrap().1.clone();
    let pairs = [
        ("(a) get ÷ (b') bb8 without PING", "(a) ", "(b')"),
        ("(a'') get, bb8-redis managers ÷ (b')", "(a'')", "(b')"),
        ("(a') get_shared ÷ (c) raw multiplexed", "(a')", "(c)"),
    ];
    for tasks in [64, 256] {
        for (label, ours, theirs) in pairs {
            let (ours, theirs) = (pick(ours), pick(theirs));
            drive(ours.clone(), tasks, (tasks * 4) as u64, Workload::Incr).await;
            drive(theirs.clone(), tasks, (tasks * 4) as u64, Workload::Incr).await;
            let (mut ratios, mut cpu) = (Vec::new(), Vec::new());
            for round in 0..PAIRS {
                let (a, b) = if round % 2 == 0 {
                    let a = drive(ours.clone(), tasks, ops, Workload::Incr).await;
                    (a, drive(theirs.clone(), tasks, ops, Workload::Incr).await)
                } else {
                    let b = drive(theirs.clone(), tasks, ops, Workload::Incr).await;
                    (drive(ours.clone(), tasks, ops, Workload::Incr).await, b)
                };
                ratios.push(a.ops_per_sec / b.ops_per_sec);
                cpu.push(a.cpu_us_per_op / b.cpu_us_per_op);
            }
            let spread = |mut r: Vec<f64>| {
                r.sort_by(f64::total_cmp);
                format!("{:.3} | {:.3} | {:.3}", r[PAIRS / 2], r[0], r[PAIRS - 1])
            };
            println!("| {label} | {tasks} | {} | {} |", spread(ratios), spread(cpu));
        }
    }
    println!();
}

/// Under steady load, kill -9 a node, then restart it.
async fn failover_timing(servers: &mut [RedisServer]) {
    println!("## Failover timing: 64 tasks of get + INCR, kill -9 one of 3 nodes, restart it\n");
    let mut builder = ShardedPool::builder()
        .penalty_min_wait(Duration::from_millis(200))
        .penalty_max_wait(Duration::from_secs(2))
        .penalty_multiplier(2.0);
    for s in servers.iter() {
        builder = builder.node(&s.url());
    }
    let pool = builder.build().await.unwrap();
    let victim = servers[0].name();
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    // Each op: (start µs, end µs since origin, served by victim, ok).
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let (pool, stop, victim) = (pool.clone(), stop.clone(), victim.clone());
            tokio::spawn(async move {
                let mut log = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("fo:{t}:{}", i % 200);
                    let start = origin.elapsed();
                    let Ok(mut conn) = pool.get(&key).await else {
                        continue;
                    };
                    let on_victim = conn.node() == victim;
                    let ok = conn.incr::<_, _, i64>(&key, 1).await.is_ok();
                    log.push((start, origin.elapsed(), on_victim, ok));
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                log
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = origin.elapsed();
    servers[0].kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    servers[0].restart();
    let restarted = origin.elapsed();
    let remaining = pool.status()[0].penalty_remaining.unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut log = Vec::new();
    for task in tasks {
        log.extend(task.await.unwrap());
    }
    let last_routed = log
        .iter()
        .filter(|(start, _, on_victim, _)| *on_victim && *start >= killed && *start < restarted)
        .map(|(start, ..)| *start)
        .max();
    let failed = log.iter().filter(|(.., ok)| !ok).count();
    let first_back = log
        .iter()
        .filter(|(start, _, on_victim, ok)| *on_victim && *ok && *start >= restarted)
        .map(|(_, end, ..)| *end)
        .min();
    let due = restarted + remaining;
    println!("| measure | value |\n|---|---|");
    match last_routed {
        Some(t) => println!(
            "| kill → last command routed to the dead node | {:.2} ms |",
            (t - killed).as_secs_f64() * 1e3
        ),
        None => println!("| kill → last command routed to the dead node | none after the kill |"),
    }
    println!("| commands failed (in flight on its sockets) | {failed} |");
    println!("| penalty left when restarted | {:.0} ms |", remaining.as_secs_f64() * 1e3);
    match first_back {
        Some(t) => println!(
            "| wait ran out → first command served by the node | {:.2} ms |",
            (t.as_secs_f64() - due.as_secs_f64()) * 1e3
        ),
        None => println!("| wait ran out → first command served by the node | never |"),
    }
    println!();
}

/// A pool of 1,000 nodes built without connecting: time and memory.
async fn scale() {
    println!("## Scale: a pool of 1,000 nodes, connecting lazily\n");
    fn rss_kib() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        pages * 4
    }
    let before = rss_kib();
    let started = Instant::now();
    let mut builder = ShardedPool::builder().probe_at_build(false);
    for i in 0..1000u32 {
        // Loopback addresses; nothing is contacted while the pool is idle.
        builder = builder
            .named_node(&format!("node-{i:04}"), &format!("redis://127.0.0.1:{}", 20_000 + i));
    }
    let pool = builder.build().await.unwrap();
    let took = started.elapsed();
    let after = rss_kib();
    println!("| measure | value |\n|---|---|");
    println!("| build time | {:.1} ms |", took.as_secs_f64() * 1e3);
    println!(
        "| memory per node (RSS growth / 1,000) | {:.1} KiB |",
        (after.saturating_sub(before)) as f64 / 1000.0
    );
    let started = Instant::now();
    let mut hits = 0usize;
    for i in 0..100_000 {
        hits += usize::from(pool.node_for(format!("k{i}")).is_some());
    }
    println!(
        "| node_for at 1,000 nodes | {:.0} ns per key (with key formatting) |",
        started.elapsed().as_nanos() as f64 / hits as f64
    );
    println!();
}

fn main() {
    if !support::redis_server_installed() {
        eprintln!("{}", support::INSTALL_HINT);
        std::process::exit(1);
    }
    // `cargo bench` passes `--bench`; there is nothing to filter here.
    let ops: u64 =
        std::env::var("FLUSTER_E2E_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut servers = support::start_servers(3);
        println!("# fluster end-to-end benchmark\n");
        // FLUSTER_E2E_ONLY="(b')": that client alone, 64 tasks of INCR, so
        // that `perf stat` sees one client's process.
        if let Ok(only) = std::env::var("FLUSTER_E2E_ONLY") {
            let clients = clients(&servers).await;
            let (name, client) = clients.iter().find(|(n, _)| n.starts_with(&only)).unwrap();
            let f = drive(client.clone(), 64, ops, Workload::Incr).await;
            println!("{name}: {:.0} ops/s, {:.2} µs CPU per op", f.ops_per_sec, f.cpu_us_per_op);
            return;
        }
        // FLUSTER_E2E_TARGETS=1: the head-to-head ratios alone.
        if std::env::var("FLUSTER_E2E_TARGETS").is_ok() {
            head_to_head(&servers, ops / 2).await;
            return;
        }
        throughput(&servers, ops).await;
        head_to_head(&servers, ops / 2).await;
        if std::env::var("FLUSTER_E2E_QUICK").is_err() {
            failover_timing(&mut servers).await;
            scale().await;
        }
    });
}
