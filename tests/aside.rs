//! Cache-aside with leases (`ShardedPool::aside`) against real servers:
//! one fill for many concurrent readers (in separate processes: this test
//! binary starts copies of itself, the ignored test `process`), a delete
//! that voids a slow fill, a filler that dies holding the lease, and the
//! stand-in holding lease and value through failover.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fluster::{Error, ShardedPool};
use support::process::{self, Process};
use support::{RedisServer, builder_for, eventually, key_on, start_servers, status_of};

const LEASE: Duration = Duration::from_secs(1);

fn env(name: &str) -> String {
    std::env::var(format!("FLUSTER_ASIDE_{name}")).unwrap_or_default()
}

/// One process of a test, started by it: `TASKS` tasks call `aside` on
/// `KEY`, each fill taking `FILL_MS`; it logs each fill it runs and each
/// value it gets. Does nothing when run otherwise.
#[test]
#[ignore = "a process of the aside tests, which start it themselves"]
fn process() {
    let Some(line) = process::log() else { return };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
    runtime.unwrap().block_on(async {
        let urls = env("NODES");
        let pool = urls.split(',').fold(ShardedPool::builder(), |b, url| b.node(url));
        let pool = pool.lease(LEASE).build().await.unwrap();
        let (key, tasks) = (env("KEY"), env("TASKS").parse().unwrap());
        let fill_ms = env("FILL_MS").parse().unwrap();
        let tasks: Vec<_> = (0..tasks)
            .map(|_| {
                let (pool, key, line) = (pool.clone(), key.clone(), line.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let fill = || async {
                        line("fill".into());
                        tokio::time::sleep(Duration::from_millis(fill_ms)).await;
                        Ok::<_, std::io::Error>(format!("v-{}", std::process::id()))
                    };
                    let value: String =
                        pool.aside(&key, Duration::from_secs(60), fill).await.unwrap();
                    line(format!("got {value} {}", started.elapsed().as_millis()));
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// A process of `tasks` tasks calling `aside` on `key`, fills taking
/// `fill_ms`.
fn start(servers: &[RedisServer], key: &str, tasks: usize, fill_ms: u64) -> Process {
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    Process::start(
        "process",
        &[
            ("FLUSTER_ASIDE_NODES", urls.join(",")),
            ("FLUSTER_ASIDE_KEY", key.to_owned()),
            ("FLUSTER_ASIDE_TASKS", tasks.to_string()),
            ("FLUSTER_ASIDE_FILL_MS", fill_ms.to_string()),
        ],
    )
}

/// What some callers of `aside` saw: fills run, values got.
#[derive(Debug, Default)]
struct Calls {
    fills: usize,
    values: Vec<String>,
}

/// `pools` pools of `tasks` tasks each call `aside` on `key` at once,
/// each fill taking `fill`.
async fn together(pools: &[ShardedPool], tasks: usize, key: &str, fill: Duration) -> Calls {
    let fills = Arc::new(AtomicUsize::new(0));
    let mut calls = Vec::new();
    for pool in pools {
        for _ in 0..tasks {
            let (pool, key, fills) = (pool.clone(), key.to_owned(), fills.clone());
            calls.push(tokio::spawn(async move {
                let filler = || async {
                    fills.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(fill).await;
                    Ok::<_, std::io::Error>("filled".to_owned())
                };
                pool.aside::<_, String, _, _, _>(&key, Duration::from_millis(300), filler).await
            }));
        }
    }
    let mut values = Vec::new();
    for call in calls {
        values.push(call.await.unwrap().unwrap());
    }
    Calls { fills: fills.load(Ordering::Relaxed), values }
}

async fn pools(servers: &[RedisServer], n: usize) -> Vec<ShardedPool> {
    let mut pools = Vec::new();
    for _ in 0..n {
        let pool = builder_for(servers)
            .lease(LEASE)
            .penalty_min_wait(Duration::from_millis(100))
            .penalty_max_wait(Duration::from_millis(200))
            .build()
            .await
            .unwrap();
        pools.push(pool);
    }
    pools
}

/// 4 processes of 50 tasks read one missing key: one fill, and every
/// caller gets its value. Then, in this process (4 pools of 50 tasks),
/// the same after the key expires and after its node restarts empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_readers_of_a_missing_key_make_one_fill() {
    let mut servers = start_servers(2);
    let routing = builder_for(&servers).build().await.unwrap();
    let key = key_on(&routing, &servers[0].name(), "hot");
    let processes: Vec<Process> = (0..4).map(|_| start(&servers, &key, 50, 200)).collect();
    let mut logs = Vec::new();
    for mut p in processes {
        assert!(eventually(Duration::from_secs(20), || p.ended()).await, "a process did not end");
        assert!(p.child.wait().unwrap().success(), "a process failed");
        logs.extend(p.lines());
    }
    let fills = logs.iter().filter(|l| *l == "fill").count();
    let got: Vec<&str> =
        logs.iter().filter_map(|l| l.split(' ').nth(1).filter(|_| l.starts_with("got"))).collect();
    assert_eq!(fills, 1, "fills across 4 processes");
    assert_eq!(got.len(), 200);
    assert!(got.iter().all(|v| *v == got[0]), "every caller got the one value");

    let pools = pools(&servers, 4).await;
    let mut conn = servers[0].client();
    let _: () = redis::cmd("PEXPIRE").arg(&key).arg(50).query(&mut conn).unwrap();
    let gone = || !redis::cmd("EXISTS").arg(&key).query::<bool>(&mut servers[0].client()).unwrap();
    assert!(eventually(Duration::from_secs(2), gone).await);
    let calls = together(&pools, 50, &key, Duration::from_millis(200)).await;
    assert_eq!(calls.fills, 1, "after the key expired: {calls:?}");
    assert!(calls.values.iter().all(|v| v == "filled"));

    servers[0].kill();
    servers[0].restart();
    // Each pool finds the restart (its heartbeat's `PING` on a dead
    // socket boxes the node) and lets the node back in.
    let home = servers[0].name();
    let back = || {
        pools.iter().all(|p| {
            let status = status_of(p, &home);
            status.up && status.penalties >= 1
        })
    };
    assert!(eventually(Duration::from_secs(5), back).await, "the pools did not take the node back");
    let calls = together(&pools, 50, &key, Duration::from_millis(200)).await;
    assert_eq!(calls.fills, 1, "after the node restarted empty: {calls:?}");
    assert_eq!(calls.values.len(), 200);
}

/// A `DEL` of the key while a slow fill runs voids its lease: the fill's
/// value is returned to its caller, not stored; the next read fills again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_during_a_fill_voids_its_store() {
    let servers = start_servers(1);
    let pool = pools(&servers, 1).await.remove(0);
    let fills = Arc::new(AtomicUsize::new(0));
    let slow = {
        let (pool, fills) = (pool.clone(), fills.clone());
        tokio::spawn(async move {
            let fill = || async {
                fills.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, std::io::Error>("before the delete".to_owned())
            };
            pool.aside::<_, String, _, _, _>("user:1", Duration::from_secs(60), fill).await
        })
    };
    assert!(eventually(Duration::from_secs(2), || fills.load(Ordering::Relaxed) == 1).await);
    let _: () = redis::cmd("DEL").arg("user:1").query(&mut servers[0].client()).unwrap();
    assert_eq!(slow.await.unwrap().unwrap(), "before the delete", "its caller gets the value");
    let stored: Option<String> =
        redis::cmd("GET").arg("user:1").query(&mut servers[0].client()).unwrap();
    assert_eq!(stored, None, "a voided fill stored nothing");
    let again = || async { Ok::<_, std::io::Error>("after".to_owned()) };
    let value: String = pool.aside("user:1", Duration::from_secs(60), again).await.unwrap();
    assert_eq!(value, "after", "the next read filled again");
    let stored: Option<String> =
        redis::cmd("GET").arg("user:1").query(&mut servers[0].client()).unwrap();
    assert_eq!(stored.as_deref(), Some("after"));

    // A fill that fails gives its lease back: the next caller fills at
    // once, and the caller gets the error as `Error::Fill`.
    let failing = || async { Err::<String, _>(std::io::Error::other("database down")) };
    match pool.aside("user:2", Duration::from_secs(60), failing).await {
        Err(Error::Fill(e)) => assert_eq!(e.to_string(), "database down"),
        other => panic!("expected the fill's error, got {other:?}"),
    }
    let started = Instant::now();
    let value: String = pool.aside("user:2", Duration::from_secs(60), again).await.unwrap();
    assert_eq!(value, "after");
    assert!(started.elapsed() < LEASE / 2, "the lease was not given back");
}

/// A process killed while it holds the lease: the others wait no longer
/// than the lease, one takes it over and fills, and everyone gets its
/// value: nobody waits longer than the lease time plus one fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filler_that_dies_holds_the_key_no_longer_than_its_lease() {
    let servers = start_servers(1);
    let mut filler = start(&servers, "report", 1, 60_000);
    let holding = || filler.lines().iter().any(|l| l == "fill");
    assert!(eventually(Duration::from_secs(20), holding).await, "the filler never filled");
    filler.kill();
    let pools = pools(&servers, 1).await;
    let fill = Duration::from_millis(100);
    let started = Instant::now();
    let calls = together(&pools, 50, "report", fill).await;
    let waited = started.elapsed();
    assert_eq!(calls.fills, 1, "one caller took the lease over: {calls:?}");
    assert!(calls.values.iter().all(|v| v == "filled"));
    assert!(waited <= LEASE + fill + Duration::from_millis(500), "waited {waited:?}");
}

/// Through failover: with the key's home boxed, the stand-in holds the
/// lease and the value, capped by `stand_in_ttl` like any stand-in write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stand_in_holds_the_lease_and_a_capped_value() {
    let mut servers = start_servers(2);
    let pool = builder_for(&servers)
        .stand_in_ttl(Duration::from_secs(5))
        .penalty_min_wait(Duration::from_secs(30))
        .penalty_max_wait(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let key = key_on(&pool, &servers[0].name(), "away");
    servers[0].kill();
    let value = loop {
        let fill = || async { Ok::<_, std::io::Error>("from the database".to_owned()) };
        match pool.aside::<_, String, _, _, _>(&key, Duration::from_secs(300), fill).await {
            Ok(value) => break value,
            Err(_) => continue, // the command in flight on the dead node
        }
    };
    assert_eq!(value, "from the database");
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut servers[1].client()).unwrap();
    assert!(pttl > 0 && pttl <= 5_000, "the stand-in's copy is capped: {pttl}");
}

/// With a near cache the waiters' polls are answered from memory until
/// the value's invalidation arrives: still one fill, and every caller gets
/// the value (none keeps reading the lease from its cached entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_near_cache_waiters_see_the_value() {
    let servers = start_servers(2);
    let mut pools = Vec::new();
    for _ in 0..2 {
        pools.push(builder_for(&servers).near_cache(1_000).lease(LEASE).build().await.unwrap());
    }
    let calls = together(&pools, 50, "near:hot", Duration::from_millis(100)).await;
    assert_eq!(calls.fills, 1, "{calls:?}");
    assert!(calls.values.iter().all(|v| v == "filled"));
    // A hit is answered from memory.
    let fill = || async { Ok::<_, std::io::Error>("again".to_owned()) };
    let value: String = pools[0].aside("near:hot", Duration::from_secs(60), fill).await.unwrap();
    assert_eq!(value, "filled");
}
