//! Chaos under load: 4 nodes, 64 tasks doing INCR and SET/GET for about
//! 20 seconds while a fault schedule runs (kill -9 and restart, SIGSTOP and
//! SIGCONT, two nodes down at once, all nodes down, one node flapping every
//! 300 ms). Then every node must be back and every key home.
//!
//! Bounded in time; prints its figures (`cargo test --test chaos -- --nocapture`).

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluster::{ClassifyFailure, Error, FailureKind, ShardedPool};
use redis::AsyncCommands;
use support::{RedisServer, eventually, start_servers};

const NODES: usize = 4;
const TASKS: usize = 64;
const KEYS_PER_TASK: usize = 50;
const MAX_CONNECTIONS: u32 = 16;
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(250);
const CHECKOUT_TIMEOUT: Duration = Duration::from_millis(500);
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
const MAX_WAIT: Duration = Duration::from_secs(1);
/// What a scheduled event may add to a latency bound on a shared 2-core
/// machine (the test's own threads compete with five busy processes).
const SLACK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(usize),
    Restart(usize),
    Stop(usize),
    Resume(usize),
}

/// One phase of the schedule: when it starts, what it does, and how many
/// nodes it strikes (for the bound on failed commands).
struct Phase {
    at: Duration,
    name: &'static str,
    faults: Vec<Fault>,
    struck: usize,
}

fn schedule() -> Vec<Phase> {
    use Fault::*;
    let ms = Duration::from_millis;
    let mut phases = vec![
        Phase { at: ms(0), name: "calm", faults: vec![], struck: 0 },
        Phase { at: ms(1_000), name: "kill -9 node 0", faults: vec![Kill(0)], struck: 1 },
        Phase { at: ms(3_000), name: "restart node 0", faults: vec![Restart(0)], struck: 0 },
        Phase { at: ms(5_000), name: "SIGSTOP node 1", faults: vec![Stop(1)], struck: 1 },
        Phase { at: ms(7_000), name: "SIGCONT node 1", faults: vec![Resume(1)], struck: 0 },
        Phase {
            at: ms(9_000),
            name: "kill nodes 2 and 3",
            faults: vec![Kill(2), Kill(3)],
            struck: 2,
        },
        Phase {
            at: ms(11_000),
            name: "restart nodes 2 and 3",
            faults: vec![Restart(2), Restart(3)],
            struck: 0,
        },
        Phase {
            at: ms(13_000),
            name: "kill all nodes",
            faults: (0..NODES).map(Kill).collect(),
            struck: NODES,
        },
        Phase {
            at: ms(14_500),
            name: "restart all nodes",
            faults: (0..NODES).map(Restart).collect(),
            struck: 0,
        },
    ];
    // Node 0 flaps: down and up every 300 ms, ten times.
    for i in 0..10u64 {
        let down = i % 2 == 0;
        phases.push(Phase {
            at: ms(16_500 + 300 * i),
            name: if down { "flap: kill node 0" } else { "flap: restart node 0" },
            faults: vec![if down { Kill(0) } else { Restart(0) }],
            struck: usize::from(down),
        });
    }
    phases.push(Phase { at: ms(19_500), name: "end of schedule", faults: vec![], struck: 0 });
    phases
}

#[derive(Default)]
struct Figures {
    ops: AtomicU64,
    worst_get_us: AtomicU64,
    worst_command_us: AtomicU64,
    get_no_healthy: AtomicU64,
    get_timeout: AtomicU64,
}

/// Failed commands per phase, and any error of a kind not documented.
struct Errors {
    per_phase: Vec<AtomicU64>,
    undocumented: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_under_load() {
    let servers = Arc::new(Mutex::new(start_servers(NODES)));
    let mut builder = ShardedPool::builder();
    for s in servers.lock().unwrap().iter() {
        builder = builder.node(&s.url());
    }
    let pool = builder
        .response_timeout(RESPONSE_TIMEOUT)
        .connect_timeout(RESPONSE_TIMEOUT)
        .checkout_timeout(CHECKOUT_TIMEOUT)
        .probe_timeout(PROBE_TIMEOUT)
        .penalty_min_wait(Duration::from_millis(100))
        .penalty_max_wait(MAX_WAIT)
        .penalty_multiplier(2.0)
        .max_connections(MAX_CONNECTIONS)
        .build()
        .await
        .unwrap();

    let phases = schedule();
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let figures = Arc::new(Figures::default());
    let errors = Arc::new(Errors {
        per_phase: phases.iter().map(|_| AtomicU64::new(0)).collect(),
        undocumented: Mutex::new(Vec::new()),
    });

    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (pool, phase, stop, figures, errors) =
                (pool.clone(), phase.clone(), stop.clone(), figures.clone(), errors.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(4));
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    i += 1;
                    let key = format!("chaos:{t}:{}", i % KEYS_PER_TASK);
                    let started = Instant::now();
                    let got = pool.get(&key).await;
                    figures
                        .worst_get_us
                        .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    let mut conn = match got {
                        Ok(conn) => conn,
                        Err(Error::NoHealthyNodes) => {
                            figures.get_no_healthy.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(Error::Timeout { .. }) => {
                            figures.get_timeout.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(other) => {
                            errors.undocumented.lock().unwrap().push(format!("get: {other}"));
                            continue;
                        }
                    };
                    let started = Instant::now();
                    let result: redis::RedisResult<()> = if i.is_multiple_of(2) {
                        conn.incr::<_, _, i64>(&key, 1).await.map(drop)
                    } else {
                        let value = format!("v{i}");
                        match conn.set::<_, _, ()>(&key, &value).await {
                            Ok(()) => conn.get::<_, String>(&key).await.map(drop),
                            Err(e) => Err(e),
                        }
                    };
                    figures
                        .worst_command_us
                        .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    figures.ops.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = result {
                        errors.per_phase[phase.load(Ordering::Relaxed)]
                            .fetch_add(1, Ordering::Relaxed);
                        let documented = matches!(
                            e.failure_kind(),
                            Some(
                                FailureKind::Dropped
                                    | FailureKind::Refused
                                    | FailureKind::Io
                                    | FailureKind::Timeout
                            )
                        );
                        if !documented {
                            errors.undocumented.lock().unwrap().push(format!("command: {e}"));
                        }
                    }
                }
            })
        })
        .collect();

    // Run the schedule.
    let started = Instant::now();
    for (index, p) in phases.iter().enumerate() {
        tokio::time::sleep_until((started + p.at).into()).await;
        // Failures from here on belong to this phase's faults.
        phase.store(index, Ordering::Relaxed);
        let faults = p.faults.clone();
        let servers = servers.clone();
        tokio::task::spawn_blocking(move || {
            let mut servers = servers.lock().unwrap();
            for fault in faults {
                match fault {
                    Fault::Kill(n) => servers[n].kill(),
                    Fault::Restart(n) => servers[n].restart(),
                    Fault::Stop(n) => servers[n].pause(),
                    Fault::Resume(n) => servers[n].resume(),
                }
            }
        })
        .await
        .unwrap();
    }

    // Recovery: every node back within the longest stay plus one probe.
    let recovery_started = Instant::now();
    let all_up =
        eventually(MAX_WAIT + PROBE_TIMEOUT + SLACK, || pool.status().iter().all(|s| s.up)).await;
    let recovery = recovery_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    let get_ms = figures.worst_get_us.load(Ordering::Relaxed) as f64 / 1000.0;
    let command_ms = figures.worst_command_us.load(Ordering::Relaxed) as f64 / 1000.0;
    println!(
        "chaos: {} operations by {TASKS} tasks over {NODES} nodes",
        figures.ops.load(Ordering::Relaxed)
    );
    println!(
        "  slowest get {get_ms:.1} ms (bound {:?}), slowest command {command_ms:.1} ms (bound {:?})",
        CHECKOUT_TIMEOUT + SLACK,
        RESPONSE_TIMEOUT + SLACK
    );
    println!(
        "  get errors: NoHealthyNodes {}, Timeout {}",
        figures.get_no_healthy.load(Ordering::Relaxed),
        figures.get_timeout.load(Ordering::Relaxed)
    );
    for (p, count) in phases.iter().zip(&errors.per_phase) {
        println!(
            "  {:>6} ms  {:<24} failed commands {}",
            p.at.as_millis(),
            p.name,
            count.load(Ordering::Relaxed)
        );
    }
    println!(
        "  all nodes up {recovery:?} after the schedule ended (bound {:?})",
        MAX_WAIT + PROBE_TIMEOUT + SLACK
    );

    let undocumented = errors.undocumented.lock().unwrap();
    assert!(undocumented.is_empty(), "undocumented errors: {undocumented:?}");
    assert!(get_ms <= (CHECKOUT_TIMEOUT + SLACK).as_secs_f64() * 1000.0, "a get took {get_ms} ms");
    assert!(
        command_ms <= (RESPONSE_TIMEOUT + SLACK).as_secs_f64() * 1000.0,
        "a command took {command_ms} ms"
    );
    // A fault can only fail the commands in flight on the nodes it struck:
    // at most one per connection of those nodes.
    for (p, count) in phases.iter().zip(&errors.per_phase) {
        let count = count.load(Ordering::Relaxed);
        let bound = (p.struck as u64) * u64::from(MAX_CONNECTIONS);
        assert!(count <= bound, "{}: {count} failed commands, bound {bound}", p.name);
    }
    assert!(all_up, "nodes still boxed: {:?}", pool.status());
    for t in 0..TASKS {
        for k in 0..KEYS_PER_TASK {
            let key = format!("chaos:{t}:{k}");
            assert_eq!(pool.node_for(&key), pool.home_node_for(&key), "{key} is not home");
        }
    }
    drop(servers.lock().unwrap().drain(..).collect::<Vec<RedisServer>>());
}
