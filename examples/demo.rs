//! The fluster demo: three local `redis-server` nodes, steady traffic from
//! many tasks, one node killed with `kill -9` and brought back, a live
//! table of where the keys went, and the pool's events as they happen. The
//! returning node takes its keys back over a 3 s warm-up, and the copies
//! its stand-ins took are deleted before they could go stale. Ends by
//! itself in about 16 seconds.
//!
//!     cargo run --example demo

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fluster::{NodeEvent, NodeStatus, ShardedPool};
use redis::AsyncCommands;
use support::RedisServer;

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const VICTIM: usize = 1;
const TASKS: usize = 16;
const KEYS: u64 = 3_000;
const KILL_AT: u64 = 4;
const RESTART_AT: u64 = 10;
const END_AT: u64 = 16;

/// What the traffic tasks count, per node index.
#[derive(Default)]
struct Tally {
    served: [AtomicU64; 3],
    failovers: AtomicU64,
    command_errors: AtomicU64,
    get_errors: AtomicU64,
    worst_get_us: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if !support::redis_server_installed() {
        eprintln!("{}", support::INSTALL_HINT);
        std::process::exit(1);
    }
    println!("fluster demo: three redis-server nodes, {TASKS} tasks doing INCR on {KEYS} keys.");
    println!(
        "node-b is killed with kill -9 at {KILL_AT}s and restarted at {RESTART_AT}s; the demo ends at {END_AT}s.\n"
    );

    let mut servers: Vec<RedisServer> = NODES.iter().map(|_| RedisServer::start()).collect();
    let mut builder = ShardedPool::builder();
    for (name, server) in NODES.iter().zip(&servers) {
        println!("  {name} = redis-server on {}", server.name());
        builder = builder.named_node(name, &server.url());
    }
    let pool = builder
        .penalty_min_wait(Duration::from_millis(500))
        .penalty_max_wait(Duration::from_secs(2))
        .penalty_multiplier(2.0)
        .warmup(Duration::from_secs(3))
        // A stand-in's copy lives at most 30 s, and is deleted when its
        // home returns: no stale duplicate survives the return.
        .stand_in_ttl(Duration::from_secs(30))
        .invalidate_on_return(true)
        .build()
        .await?;
    tokio::spawn(print_events(pool.clone()));

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let traffic: Vec<_> = (0..TASKS)
        .map(|task| tokio::spawn(traffic(pool.clone(), tally.clone(), stop.clone(), task as u64)))
        .collect();

    println!(
        "\n{:>4}  {:<22}{:<22}{:<22}{:>10}",
        "time", NODES[0], NODES[1], NODES[2], "failovers"
    );
    let started = Instant::now();
    let mut last = [0u64; 3];
    let mut last_failovers = 0;
    for second in 1..=END_AT {
        tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
        let status = pool.status();
        let mut row = format!("{second:>3}s  ");
        for (i, node) in status.iter().enumerate() {
            let served = tally.served[i].load(Ordering::Relaxed);
            row.push_str(&format!("{:<22}", cell(node, served - last[i])));
            last[i] = served;
        }
        let failovers = tally.failovers.load(Ordering::Relaxed);
        row.push_str(&format!("{:>10}", failovers - last_failovers));
        last_failovers = failovers;
        println!("{row}");
        // Said before it is done: the events it causes print at once.
        if second == KILL_AT {
            println!("  -- kill -9 {} --", NODES[VICTIM]);
            servers[VICTIM].kill();
        }
        if second == RESTART_AT {
            println!("  -- {} restarted on the same port (empty) --", NODES[VICTIM]);
            servers[VICTIM].restart();
        }
    }

    stop.store(true, Ordering::Relaxed);
    for task in traffic {
        task.await?;
    }
    summary(&pool, &tally, &servers).await?;
    Ok(())
}

/// Prints each node event as it happens.
async fn print_events(pool: ShardedPool) {
    let mut events = pool.events();
    while let Ok(event) = events.recv().await {
        let line = match event {
            NodeEvent::Boxed { node, kind, wait, level, .. } => format!(
                "{node} boxed ({kind}); first probe in {:.2}s, back-off level {level}",
                wait.as_secs_f64()
            ),
            NodeEvent::ProbeFailed { node, kind, wait, .. } => {
                format!("{node}: probe failed ({kind}); next in {:.2}s", wait.as_secs_f64())
            }
            NodeEvent::Returned { node, .. } => {
                format!("{node} answered a probe: back, its keys come home over 3 s")
            }
            NodeEvent::Invalidated { node, keys, .. } => {
                format!("{node}: {keys} copies its stand-ins took deleted before its return")
            }
            NodeEvent::Warm { node, .. } => format!("{node} warmed up: all its keys are home"),
            other => format!("{other:?}"),
        };
        println!("        event: {line}");
    }
}

/// One node's column: state, operations in the last second, time left in
/// the penalty box.
fn cell(node: &NodeStatus, ops: u64) -> String {
    match (node.penalty_remaining, node.warmup) {
        (Some(left), _) => format!("DOWN {ops:>6}/s {:.1}s", left.as_secs_f64()),
        (None, Some(warm)) => format!("warm {ops:>6}/s {:>3.0}%", warm * 100.0),
        (None, None) => format!("up   {ops:>6}/s"),
    }
}

async fn traffic(pool: ShardedPool, tally: Arc<Tally>, stop: Arc<AtomicBool>, task: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    let mut i = task;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        // A cheap spread of keys; every task walks all of them.
        i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let key = format!("demo:{}", (i >> 33) % KEYS);
        let started = Instant::now();
        let mut conn = match pool.get(&key).await {
            Ok(conn) => conn,
            Err(_) => {
                tally.get_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let waited = started.elapsed().as_micros() as u64;
        tally.worst_get_us.fetch_max(waited, Ordering::Relaxed);
        let node = NODES.iter().position(|n| *n == conn.node()).unwrap();
        if !conn.is_home() {
            tally.failovers.fetch_add(1, Ordering::Relaxed);
        }
        match conn.incr::<_, _, i64>(&key, 1).await {
            Ok(_) => {
                tally.served[node].fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                tally.command_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn summary(
    pool: &ShardedPool,
    tally: &Tally,
    servers: &[RedisServer],
) -> Result<(), Box<dyn std::error::Error>> {
    println!("\nsummary");
    for (i, name) in NODES.iter().enumerate() {
        println!("  {name}: {:>7} commands served", tally.served[i].load(Ordering::Relaxed));
    }
    println!(
        "  commands served by a stand-in (conn.is_home() false: boxed or warming home node): {}",
        tally.failovers.load(Ordering::Relaxed)
    );
    println!(
        "  failed get: {}; failed commands: {} (only those in flight on node-b's sockets when it died)",
        tally.get_errors.load(Ordering::Relaxed),
        tally.command_errors.load(Ordering::Relaxed)
    );
    println!(
        "  slowest get: {:.1} ms (a dead node never makes get wait)",
        tally.worst_get_us.load(Ordering::Relaxed) as f64 / 1000.0
    );

    // Where did node-b's keys go, and what did they leave behind?
    let victim_keys: Vec<String> = (0..KEYS)
        .map(|i| format!("demo:{i}"))
        .filter(|k| pool.home_node_for(k).as_deref() == Some(NODES[VICTIM]))
        .collect();
    let mut stand_ins = [0usize; 3];
    for (i, server) in servers.iter().enumerate() {
        if i == VICTIM {
            continue;
        }
        let mut direct = server.client();
        for key in &victim_keys {
            if redis::cmd("EXISTS").arg(key).query::<bool>(&mut direct)? {
                stand_ins[i] += 1;
            }
        }
    }
    let now_home =
        victim_keys.iter().filter(|k| pool.node_for(k).as_deref() == Some(NODES[VICTIM])).count();
    let victim = pool.status().into_iter().find(|s| s.name == NODES[VICTIM]).unwrap();
    println!(
        "  {} of {KEYS} keys belong to node-b; while it was down stand-ins served them; their \
         copies were deleted at its return and at the end of its warm-up ({} deletions).",
        victim_keys.len(),
        victim.stand_in_invalidated,
    );
    println!(
        "  Copies left on node-a: {}, node-c: {} (without invalidate_on_return they would \
         stay as stale duplicates). {now_home} keys route home to node-b again.",
        stand_ins[0], stand_ins[2]
    );
    let up = pool.status().iter().filter(|s| s.up).count();
    println!("  nodes up at the end: {up} of {}", NODES.len());
    Ok(())
}
