//! Instructions per operation, counted by valgrind's callgrind: fluster's
//! paths beside the hand-rolled code they replace, in one program, against
//! three local `redis-server` nodes it starts itself.
//!
//! | fluster | hand-rolled |
//! |---|---|
//! | `get` + `GET` | a `Vec<bb8::Pool>` without PING, `hash % n` |
//! | `get_shared` + `GET` | one raw `MultiplexedConnection` per node |
//! | a near-cache hit (`get_shared` + `GET`) | a bare `lru::LruCache` lookup and clone |
//! | a near-cache hit through `get_cached` (the typed fast path) | the same |
//! | `node_for` (10 nodes) | one SipHash-1-3 of the key |
//!
//! Each case runs in a process of its own (this program again), one task on
//! a current-thread runtime, twice: `SHORT` and `LONG` operations after the
//! same warm-up; the difference of the two counts over the difference of
//! operations is the cost of one operation, start-up and warm-up cancelled.
//! Only the client is counted (the servers are other processes), and the
//! count does not move with the machine's load, unlike throughput.
//!
//!     cargo bench --bench instructions
//!
//! Needs `valgrind` (`apt-get install valgrind`); without it, says so.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hasher};
use std::num::NonZeroUsize;
use std::process::Command;
use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use fluster::ShardedPool;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

const SHORT: u64 = 2_000;
const LONG: u64 = 12_000;
const WARMUP: u64 = 2_000;
const KEYS: usize = 1_000;

/// Each case, and the floor it is held against.
const CASES: &[(&str, &str)] = &[
    ("get", "bb8"),
    ("get_shared", "multiplexed"),
    ("near_hit", "lru"),
    ("get_cached", "lru"),
    ("node_for", "siphash"),
];

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("key:{i}")).collect()
}

fn bucket(key: &str, n: usize) -> usize {
    (BuildHasherDefault::<DefaultHasher>::default().hash_one(key) % n as u64) as usize
}

/// Runs `case` for `ops` operations after the warm-up: the child's work.
async fn run(case: &str, urls: &[String], ops: u64) {
    let keys = keys();
    let key = |i: u64| &keys[i as usize % KEYS];
    let fluster = |near: bool| {
        let builder = urls.iter().fold(ShardedPool::builder(), |b, url| b.node(url));
        let builder =
            if near { builder.near_cache(KEYS) } else { builder.heartbeat(Duration::ZERO) };
        builder.build()
    };
    match case {
        "get" => {
            let pool = fluster(false).await.unwrap();
            for i in 0..WARMUP + ops {
                let mut conn = pool.get(key(i)).await.unwrap();
                let _: Option<String> = conn.get(key(i)).await.unwrap();
            }
        }
        "bb8" => {
            let mut pools = Vec::new();
            for url in urls {
                let manager = RedisConnectionManager::new(url.as_str()).unwrap();
                let pool = bb8::Pool::builder().test_on_check_out(false).build(manager);
                pools.push(pool.await.unwrap());
            }
            for i in 0..WARMUP + ops {
                let mut conn = pools[bucket(key(i), pools.len())].get().await.unwrap();
                let _: Option<String> = conn.get(key(i)).await.unwrap();
            }
        }
        "get_shared" | "near_hit" => {
            let pool = fluster(case == "near_hit").await.unwrap();
            for i in 0..WARMUP + ops {
                let mut conn = pool.get_shared(key(i)).await.unwrap();
                let _: Option<String> = conn.get(key(i)).await.unwrap();
            }
        }
        "get_cached" => {
            let pool = fluster(true).await.unwrap();
            for i in 0..WARMUP + ops {
                let _: Option<String> = pool.get_cached(key(i)).await.unwrap();
            }
        }
        "multiplexed" => {
            let mut conns = Vec::new();
            for url in urls {
                let client = redis::Client::open(url.as_str()).unwrap();
                conns.push(client.get_multiplexed_async_connection().await.unwrap());
            }
            let conns: Vec<MultiplexedConnection> = conns;
            for i in 0..WARMUP + ops {
                let mut conn = conns[bucket(key(i), conns.len())].clone();
                let _: Option<String> = conn.get(key(i)).await.unwrap();
            }
        }
        "lru" => {
            let mut cache = lru::LruCache::new(NonZeroUsize::new(KEYS).unwrap());
            for k in &keys {
                cache.put(k.as_bytes().to_vec(), redis::Value::BulkString(b"value".to_vec()));
            }
            let mut found = 0;
            for i in 0..WARMUP + ops {
                let value: Option<redis::Value> = cache.get(key(i).as_bytes()).cloned();
                found += usize::from(value.is_some());
            }
            assert_eq!(found as u64, WARMUP + ops);
        }
        "node_for" => {
            let names: Vec<String> =
                (0..10).map(|n| format!("redis://127.0.0.1:{}", 10_000 + n)).collect();
            let builder = names.iter().fold(ShardedPool::builder(), |b, url| b.node(url));
            let pool =
                builder.probe_at_build(false).heartbeat(Duration::ZERO).build().await.unwrap();
            let mut homes = 0;
            for i in 0..WARMUP + ops {
                homes += usize::from(pool.node_for(key(i)).is_some());
            }
            assert_eq!(homes as u64, WARMUP + ops);
        }
        "siphash" => {
            let mut sum = 0u64;
            for i in 0..WARMUP + ops {
                let mut h = siphasher::sip::SipHasher13::new_with_keys(1, 2);
                h.write(key(i).as_bytes());
                sum = sum.wrapping_add(h.finish());
            }
            std::hint::black_box(sum);
        }
        other => panic!("no case {other}"),
    }
}

/// The instructions callgrind counted for `case` with `ops` operations.
fn count(case: &str, urls: &[String], ops: u64) -> u64 {
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(std::env::current_exe().unwrap())
        .env("FLUSTER_IR_CASE", case)
        .env("FLUSTER_IR_URLS", urls.join(","))
        .env("FLUSTER_IR_OPS", ops.to_string())
        .output()
        .expect("run valgrind");
    let text = String::from_utf8_lossy(&out.stderr);
    let collected = text.lines().find_map(|l| l.split_once("Collected : ").map(|(_, n)| n.trim()));
    match collected.and_then(|n| n.parse().ok()) {
        Some(n) if out.status.success() => n,
        _ => panic!("{case}: valgrind said\n{text}"),
    }
}

fn main() {
    if let Ok(case) = std::env::var("FLUSTER_IR_CASE") {
        let urls: Vec<String> =
            std::env::var("FLUSTER_IR_URLS").unwrap().split(',').map(str::to_owned).collect();
        let ops = std::env::var("FLUSTER_IR_OPS").unwrap().parse().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        return runtime.block_on(run(&case, &urls, ops));
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("valgrind is not installed: `sudo apt-get install valgrind`");
        return;
    }
    if !support::redis_server_installed() {
        eprintln!("{}", support::INSTALL_HINT);
        return;
    }
    let servers = support::start_servers(3);
    let urls: Vec<String> = servers.iter().map(support::RedisServer::url).collect();
    let per_op = |case: &str| {
        let (short, long) = (count(case, &urls, SHORT), count(case, &urls, LONG));
        long.saturating_sub(short) as f64 / (LONG - SHORT) as f64
    };
    println!("# Instructions per operation (callgrind; {LONG} − {SHORT} operations)\n");
    println!("| fluster | instructions | hand-rolled | instructions | ratio |");
    println!("|---|---:|---|---:|---:|");
    for (ours, floor) in CASES {
        let (a, b) = (per_op(ours), per_op(floor));
        println!("| {ours} | {a:.0} | {floor} | {b:.0} | {:.2} |", a / b);
    }
}
