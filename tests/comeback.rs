//! When a node comes back: a boxed node holds no sockets, a node that flaps
//! is let back in less and less often, keys go home gradually over a
//! warm-up, and every change is an event.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fluster::{NodeEvent, ShardedPool};
use redis::AsyncCommands;
use support::{RedisServer, eventually, start_servers, status_of};

fn keys_homed_on(pool: &ShardedPool, name: &str, n: usize) -> Vec<String> {
    support::keys_on(pool, name, "comeback", n)
}

/// One INCR of `key`, whatever comes of it: how a dead node is noticed.
async fn poke(pool: &ShardedPool, key: &str) {
    if let Ok(mut conn) = pool.get(key).await {
        let _: Result<i64, _> = conn.incr(key, 1).await;
    }
}

/// Pokes `key` until its node `name` is boxed (a dead node is noticed by
/// the traffic it gets); panics with its status after 3 s.
async fn until_boxed(pool: &ShardedPool, key: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while status_of(pool, name).up {
        assert!(Instant::now() < deadline, "never boxed: {:?}", status_of(pool, name));
        poke(pool, key).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `tasks` tasks sending GET + INCR over `keys` until `stop` is set.
fn traffic(pool: &ShardedPool, keys: Vec<String>, tasks: usize, stop: &Arc<AtomicBool>) {
    let keys = Arc::new(keys);
    for t in 0..tasks {
        let (pool, keys, stop) = (pool.clone(), keys.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                let key = &keys[i % keys.len()];
                i += tasks;
                if let Ok(mut conn) = pool.get(key).await {
                    let _: Result<i64, _> = conn.incr(key, 1).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
    }
}

/// Clients connected to `server`, asked on a connection of our own; `None`
/// while the server refuses it (no client slot free).
fn clients_if_room(server: &RedisServer) -> Option<usize> {
    let mut conn = redis::Client::open(server.url()).ok()?.get_connection().ok()?;
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).ok()?;
    Some(list.lines().count() - 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boxed_node_releases_its_sockets_and_returns_from_maxclients() {
    let healthy = RedisServer::start();
    let small = RedisServer::start_with(&["--maxclients", "4"]);
    let pool = ShardedPool::builder()
        .node(&healthy.url())
        .node(&small.url())
        // Long enough to look at the boxed node before its first probe.
        .penalty_min_wait(Duration::from_secs(3))
        .penalty_max_wait(Duration::from_secs(3))
        .penalty_jitter(0.0)
        .penalty_memory(Duration::ZERO)
        .build()
        .await
        .unwrap();
    let mut keys = keys_homed_on(&pool, &small.name(), 64);
    keys.extend(keys_homed_on(&pool, &healthy.name(), 64));
    let stop = Arc::new(AtomicBool::new(false));
    traffic(&pool, keys, 32, &stop);
    // 32 tasks want more sockets than the server has slots: it refuses one
    // and is boxed.
    assert!(eventually(Duration::from_secs(10), || !status_of(&pool, &small.name()).up).await);
    // While boxed, the pool holds none of its sockets.
    let released = eventually(Duration::from_secs(2), || clients_if_room(&small) == Some(0));
    assert!(released.await, "pool sockets left on a boxed node: {:?}", clients_if_room(&small));
    assert!(!status_of(&pool, &small.name()).up, "it came back before it was looked at");
    stop.store(true, Ordering::Relaxed);
    // So its next probe finds a client slot and lets it back in.
    assert!(
        eventually(Duration::from_secs(10), || status_of(&pool, &small.name()).up).await,
        "{:?}",
        status_of(&pool, &small.name())
    );
}

/// Kills and restarts `server` every 300 ms for `run` while traffic runs;
/// returns the stays of every boxing of it, in order.
async fn flap(server: &mut RedisServer, memory: Duration, run: Duration) -> Vec<(u32, Duration)> {
    let steady = RedisServer::start();
    let pool = ShardedPool::builder()
        .node(&server.url())
        .named_node("steady", &steady.url())
        .penalty_memory(memory)
        .penalty_jitter(0.0)
        .build()
        .await
        .unwrap();
    let mut events = pool.events();
    let stop = Arc::new(AtomicBool::new(false));
    traffic(&pool, keys_homed_on(&pool, &server.name(), 32), 8, &stop);
    let end = Instant::now() + run;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.kill();
        server.restart();
    }
    stop.store(true, Ordering::Relaxed);
    let mut stays = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let NodeEvent::Boxed { node, level, wait, .. } = event {
            assert_eq!(node, server.name());
            stays.push((level, wait));
        }
    }
    stays
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_flaps_is_boxed_less_and_less_often() {
    let mut server = RedisServer::start();
    let run = Duration::from_secs(6);
    let damped = flap(&mut server, Duration::from_secs(60), run).await;
    let undamped = flap(&mut server, Duration::ZERO, run).await;
    println!(
        "boxings in {run:?}: {} with penalty_memory 60 s, {} with 0",
        damped.len(),
        undamped.len()
    );
    println!("damped stays (level, wait): {damped:?}");
    assert!(damped.len() * 2 < undamped.len(), "{} vs {}", damped.len(), undamped.len());
    // Each stay starts above the last (higher still if a probe failed in
    // between), and lasts longer.
    assert!(damped.windows(2).all(|w| w[1].0 > w[0].0 && w[1].1 > w[0].1), "{damped:?}");
    assert!(undamped.iter().all(|&(level, _)| level == 0), "{undamped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_quiet_memory_window_a_failure_starts_at_the_minimum_again() {
    let mut server = RedisServer::start();
    let (min_wait, memory) = (Duration::from_millis(200), Duration::from_secs(1));
    let pool = ShardedPool::builder()
        .node(&server.url())
        .penalty_min_wait(min_wait)
        .penalty_memory(memory)
        .penalty_jitter(0.0)
        .build()
        .await
        .unwrap();
    let key = keys_homed_on(&pool, &server.name(), 1).remove(0);
    let name = server.name();
    let mut last = None;
    for _ in 0..3 {
        // While up, the status tells the level a stay starting now has:
        // above the last stay's end (a probe that failed during a restart
        // raises it further), and that is where the next stay starts.
        let announced = status_of(&pool, &name).penalty_level;
        server.kill();
        until_boxed(&pool, &key, &name).await;
        let level = status_of(&pool, &name).penalty_level;
        assert_eq!(level, announced, "the stay starts where the pool said it would");
        if let Some(last) = last {
            assert!(level > last, "a boxing within the memory starts higher: {level} after {last}");
        }
        last = Some(level);
        server.restart();
        assert!(eventually(Duration::from_secs(5), || status_of(&pool, &name).up).await);
    }
    // Up and quiet: the level falls by one each full memory, to zero.
    assert!(status_of(&pool, &name).penalty_level > 0);
    assert!(
        eventually(Duration::from_secs(10), || status_of(&pool, &name).penalty_level == 0).await
    );
    server.kill();
    until_boxed(&pool, &key, &name).await;
    let status = status_of(&pool, &name);
    assert_eq!((status.penalty_level, status.penalty_wait), (0, Some(min_wait)));
}

/// The share of `keys` that `pool` routes to `home` now.
fn home_share(pool: &ShardedPool, keys: &[String], home: &str) -> (f64, HashSet<usize>) {
    let home_now: HashSet<usize> =
        (0..keys.len()).filter(|&i| pool.node_for(&keys[i]).as_deref() == Some(home)).collect();
    (home_now.len() as f64 / keys.len() as f64, home_now)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_go_home_gradually_over_the_warmup_and_never_back() {
    let mut servers = start_servers(3);
    let warmup = Duration::from_secs(3);
    let build = || {
        support::builder_for(&servers)
            .warmup(warmup)
            .penalty_min_wait(Duration::from_millis(100))
            .penalty_max_wait(Duration::from_millis(100))
            .penalty_jitter(0.0)
            .build()
    };
    let (a, b) = (build().await.unwrap(), build().await.unwrap());
    let home = servers[0].name();
    let keys = keys_homed_on(&a, &home, 10_000);
    let (mut events_a, mut events_b) = (a.events(), b.events());
    servers[0].kill();
    for pool in [&a, &b] {
        until_boxed(pool, &keys[0], &home).await;
    }
    assert_eq!(home_share(&a, &keys, &home).0, 0.0);
    servers[0].restart();
    for events in [&mut events_a, &mut events_b] {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap() {
                Ok(NodeEvent::Returned { node, .. }) if node == home => break,
                _ => continue,
            }
        }
    }
    let returned = Instant::now();
    // The one order keys go home in, for every process: the pinned
    // `route::warm_threshold` of each key's hash.
    let order: Vec<f64> = keys
        .iter()
        .map(|k| fluster::route::warm_threshold(fluster::route::key_hash(k.as_bytes())))
        .collect();
    // A pool's home set is a prefix of that order, give or take how far
    // its warm-up moved while the set was read.
    let in_order = |set: &HashSet<usize>, drift: f64| {
        let last_in = set.iter().map(|&i| order[i]).fold(0.0, f64::max);
        let first_out = (0..keys.len()).filter(|i| !set.contains(i)).map(|i| order[i]);
        last_in <= first_out.fold(1.0, f64::min) + drift
    };
    let mut gone_home: HashSet<usize> = HashSet::new();
    let mut next_report = Duration::ZERO;
    loop {
        let elapsed = returned.elapsed();
        let (share, now_home) = home_share(&a, &keys, &home);
        let scanned = returned.elapsed();
        let (_, b_home) = home_share(&b, &keys, &home);
        let drift = |took: Duration| took.as_secs_f64() / warmup.as_secs_f64() + 0.001;
        assert!(in_order(&now_home, drift(scanned - elapsed)), "pool a out of order");
        assert!(in_order(&b_home, drift(returned.elapsed() - scanned)), "pool b out of order");
        // A key that went home stays home.
        assert!(gone_home.is_subset(&now_home), "a key went home and back at {elapsed:?}");
        gone_home = now_home;
        let expected = (elapsed.as_secs_f64() / warmup.as_secs_f64()).min(1.0);
        if elapsed >= next_report {
            println!(
                "{:.1} s after the return: {:.1}% of its keys home",
                elapsed.as_secs_f64(),
                share * 100.0
            );
            next_report += Duration::from_secs(1);
        }
        // Sampled after `elapsed` was read, so the share can only be ahead.
        let ahead = drift(scanned - elapsed);
        assert!(
            share >= expected - 0.05 && share <= expected + 0.05 + ahead,
            "{share} at {elapsed:?}"
        );
        if elapsed > warmup + Duration::from_millis(200) {
            assert_eq!(share, 1.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let warm = eventually(Duration::from_secs(2), || status_of(&a, &home).warmup.is_none());
    assert!(warm.await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_boxed_then_returned_with_the_node_and_the_failure() {
    let mut servers = start_servers(2);
    let pool = support::builder_for(&servers)
        .penalty_min_wait(Duration::from_millis(50))
        .penalty_max_wait(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let mut events = pool.events();
    let name = servers[0].name();
    let key = keys_homed_on(&pool, &name, 1).remove(0);
    servers[0].kill();
    until_boxed(&pool, &key, &name).await;
    servers[0].restart();
    let mut seen = Vec::new();
    while !matches!(seen.last(), Some(NodeEvent::Returned { .. })) {
        seen.push(
            tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap(),
        );
    }
    match &seen[0] {
        NodeEvent::Boxed { node, kind, .. } => {
            assert_eq!(*node, name);
            assert!(
                matches!(kind, fluster::FailureKind::Dropped | fluster::FailureKind::Io),
                "{kind}"
            );
        }
        other => panic!("first event {other:?}"),
    }
    assert!(seen[1..seen.len() - 1].iter().all(|e| matches!(e, NodeEvent::ProbeFailed { .. })));
    assert!(matches!(seen.last(), Some(NodeEvent::Returned { node, .. }) if *node == name));

    pool.remove_node(&name).unwrap();
    pool.add_node(&name, &servers[0].url()).await.unwrap();
    let removed = events.recv().await.unwrap();
    let added = events.recv().await.unwrap();
    assert!(matches!(removed, NodeEvent::Removed { node, .. } if node == name));
    assert!(matches!(added, NodeEvent::Added { node, .. } if node == name));
}

/// A receiver that never reads costs the pool nothing: it loses the oldest
/// events, and says how many when it reads at last.
#[tokio::test]
async fn a_receiver_that_never_reads_never_holds_the_pool_back() {
    let server = RedisServer::start();
    let pool =
        ShardedPool::builder().node(&server.url()).probe_at_build(false).build().await.unwrap();
    let mut idle = pool.events();
    for i in 0..1_500 {
        let name = format!("extra-{i}");
        pool.add_node(&name, &server.url()).await.unwrap();
        pool.remove_node(&name).unwrap();
    }
    let mut conn = pool.get("still-serving").await.unwrap();
    let n: i64 = conn.incr("still-serving", 1).await.unwrap();
    assert_eq!(n, 1);
    match idle.recv().await {
        Err(tokio::sync::broadcast::error::RecvError::Lagged(lost)) => {
            assert!(lost >= 3_000 - 1_024)
        }
        other => panic!("expected the receiver to have lagged, got {other:?}"),
    }
}

#[tokio::test]
async fn connections_say_whether_they_serve_the_keys_home() {
    let mut servers = start_servers(2);
    let pool = support::builder_for(&servers)
        .penalty_min_wait(Duration::from_secs(30))
        .penalty_max_wait(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let key = keys_homed_on(&pool, &servers[0].name(), 1).remove(0);
    assert!(pool.get(&key).await.unwrap().is_home());
    assert!(pool.get_shared(&key).await.unwrap().is_home());
    servers[0].kill();
    until_boxed(&pool, &key, &servers[0].name()).await;
    let stand_in = pool.get(&key).await.unwrap();
    assert_eq!(stand_in.node(), servers[1].name());
    assert!(!stand_in.is_home());
    assert!(!pool.get_shared(&key).await.unwrap().is_home());
}
