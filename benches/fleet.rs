//! The return of a node at fleet scale: 200 pools in one process stand in
//! for 200 processes, each over the same two local `redis-server` nodes,
//! each with 4 tasks of GET on keys homed on the first. That node is
//! killed, stays down for 3 s and comes back. Prints, without and with a
//! warm-up, and as one fleet (`Builder::fleet`), the probes per second it
//! receives while boxed, the connections it accepts per second and holds at
//! peak after its return, and the time until every pool routes its keys
//! home.
//!
//!     cargo bench --bench fleet
//!
//! `FLUSTER_FLEET_POOLS` changes the number of pools.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fluster::{NodeEvent, ShardedPool};
use redis::AsyncCommands;
use support::{RedisServer, builder_for, keys_on, start_servers};

const TASKS: usize = 4;
const DOWN: Duration = Duration::from_secs(3);
const SAMPLE: Duration = Duration::from_millis(100);

/// What the returning node saw.
struct Figures {
    probes_per_second: f64,
    accepted_peak_per_second: u64,
    accepted_total: u64,
    clients_peak: u64,
    all_home: Duration,
}

/// One field of `INFO` on `server`.
fn info(server: &RedisServer, field: &str) -> u64 {
    let text: String = redis::cmd("INFO").query(&mut server.client()).unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix(&format!("{field}:")));
    line.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

async fn run(pools: usize, warmup: Duration, news: bool) -> Figures {
    let mut servers = start_servers(2);
    let mut fleet = Vec::with_capacity(pools);
    for _ in 0..pools {
        let builder = builder_for(&servers);
        let builder = if news { builder.fleet("bench") } else { builder };
        let pool: ShardedPool = builder
            .warmup(warmup)
            .penalty_min_wait(Duration::from_millis(200))
            .penalty_max_wait(Duration::from_secs(2))
            .probe_at_build(false)
            .build()
            .await
            .unwrap();
        fleet.push(pool);
    }
    let home = servers[0].name();
    let keys = Arc::new(keys_on(&fleet[0], &home, "fleet", 1_000));
    let stop = Arc::new(AtomicBool::new(false));
    for (p, pool) in fleet.iter().enumerate() {
        for t in 0..TASKS {
            let (pool, keys, stop) = (pool.clone(), keys.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = p * TASKS + t;
                while !stop.load(Ordering::Relaxed) {
                    i = i.wrapping_mul(31).wrapping_add(7) % keys.len();
                    match pool.get(&keys[i]).await {
                        Ok(mut conn) => drop(conn.get::<_, Option<String>>(&keys[i]).await),
                        Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
            });
        }
    }
    let probes = Arc::new(AtomicU64::new(0));
    for pool in &fleet {
        let (mut events, probes) = (pool.events(), probes.clone());
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if let NodeEvent::ProbeFailed { .. } | NodeEvent::Returned { .. } = event {
                    probes.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    servers[0].kill();
    let down = Instant::now();
    tokio::time::sleep(DOWN).await;
    let probed = probes.load(Ordering::Relaxed);
    let probes_per_second = probed as f64 / down.elapsed().as_secs_f64();
    servers[0].restart();
    let back = Instant::now();
    let (mut accepted_peak, mut clients_peak, mut last) = (0, 0, 0);
    let all_home = loop {
        tokio::time::sleep(SAMPLE).await;
        let accepted = info(&servers[0], "total_connections_received");
        accepted_peak = accepted_peak.max(accepted - last);
        last = accepted;
        clients_peak = clients_peak.max(info(&servers[0], "connected_clients"));
        let home_now =
            |pool: &ShardedPool| keys.iter().all(|k| pool.node_for(k).as_deref() == Some(&*home));
        if fleet.iter().all(home_now) || back.elapsed() > Duration::from_secs(30) {
            break back.elapsed();
        }
    };
    // Connections still opening as the last pool comes home.
    for _ in 0..5 {
        tokio::time::sleep(SAMPLE).await;
        let accepted = info(&servers[0], "total_connections_received");
        accepted_peak = accepted_peak.max(accepted - last);
        last = accepted;
        clients_peak = clients_peak.max(info(&servers[0], "connected_clients"));
    }
    stop.store(true, Ordering::Relaxed);
    fleet.iter().for_each(ShardedPool::close);
    Figures {
        probes_per_second,
        accepted_peak_per_second: accepted_peak * (1_000 / SAMPLE.as_millis() as u64),
        accepted_total: last,
        clients_peak,
        all_home,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !support::redis_server_installed() {
        eprintln!("{}", support::INSTALL_HINT);
        return;
    }
    let pools = std::env::var("FLUSTER_FLEET_POOLS").ok().and_then(|n| n.parse().ok());
    let pools: usize = pools.unwrap_or(200);
    let off = run(pools, Duration::ZERO, false).await;
    let on = run(pools, Duration::from_secs(5), false).await;
    let told = run(pools, Duration::ZERO, true).await;
    let both = run(pools, Duration::from_secs(5), true).await;
    println!("# A node's return to {pools} pools ({TASKS} tasks of GET each)\n");
    println!("Down for {DOWN:?}; penalty_min_wait 200 ms, penalty_max_wait 2 s.\n");
    println!("| | warmup 0 | warmup 5 s | a fleet, warmup 0 | a fleet, warmup 5 s |");
    println!("|---|---:|---:|---:|---:|");
    let runs = [&off, &on, &told, &both];
    let row = |name: &str, figure: &dyn Fn(&Figures) -> String| {
        let [a, b, c, d] = runs.map(figure);
        println!("| {name} | {a} | {b} | {c} | {d} |");
    };
    row("probes per second while boxed", &|f| format!("{:.0}", f.probes_per_second));
    row("connections accepted, peak per second", &|f| f.accepted_peak_per_second.to_string());
    row("connections accepted in all", &|f| f.accepted_total.to_string());
    row("connected clients at peak", &|f| f.clients_peak.to_string());
    row("until every pool routes home", &|f| format!("{:?}", f.all_home));
}
