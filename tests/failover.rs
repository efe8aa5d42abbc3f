//! The penalty box against real `redis-server` nodes: kill, restart, probes,
//! back-off, all nodes down, and fail-fast failover under traffic.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fluster::{Error, FailureKind, ShardedPool};
use redis::AsyncCommands;
use support::{RedisServer, eventually, keys_homed_on, start_servers};

/// A pool whose stays are exact: `min_wait_ms`, doubling up to four times that.
async fn exact_pool(servers: &[RedisServer], min_wait_ms: u64) -> ShardedPool {
    support::builder_for(servers)
        .penalty_min_wait(Duration::from_millis(min_wait_ms))
        .penalty_max_wait(Duration::from_millis(min_wait_ms * 4))
        .penalty_multiplier(2.0)
        .penalty_jitter(0.0)
        .build()
        .await
        .unwrap()
}

fn server_named<'a>(servers: &'a mut [RedisServer], name: &str) -> &'a mut RedisServer {
    servers.iter_mut().find(|s| s.name() == name).unwrap()
}

fn is_up(pool: &ShardedPool, name: &str) -> bool {
    pool.status().iter().any(|s| s.name == name && s.up)
}

async fn incr(pool: &ShardedPool, key: &str) -> redis::RedisResult<(String, i64)> {
    let mut conn = pool.get(key).await.expect("get must not fail here");
    let n: i64 = conn.incr(key, 1).await?;
    Ok((conn.node().to_owned(), n))
}

#[tokio::test]
async fn three_keys_land_on_three_nodes_and_on_no_other() {
    let servers = start_servers(3);
    let pool = exact_pool(&servers, 200).await;
    let keys = keys_homed_on(&pool, "spread");
    for (name, key) in &keys {
        let (served_by, n) = incr(&pool, key).await.unwrap();
        assert_eq!(&served_by, name);
        assert_eq!(n, 1);
    }
    // Each key exists on its own server only.
    for server in &servers {
        let mut direct = server.client();
        for (name, key) in &keys {
            let exists: bool = redis::cmd("EXISTS").arg(key).query(&mut direct).unwrap();
            assert_eq!(exists, *name == server.name(), "{key} on {}", server.name());
        }
    }
}

/// The Python fluster's scenario: kill a node, its key moves (at most one
/// failed command), the others stay; restart it, and after the penalty the
/// key goes home, leaving the duplicate this design accepts.
#[tokio::test]
async fn killed_node_fails_over_and_comes_back() {
    let mut servers = start_servers(3);
    let pool = exact_pool(&servers, 300).await;
    let keys = keys_homed_on(&pool, "failover");
    for (_, key) in &keys {
        incr(&pool, key).await.unwrap();
    }
    let (victim, victim_key) = keys[0].clone();
    server_named(&mut servers, &victim).kill();

    // At most one command fails: the one that finds the dead socket.
    let mut failed = 0;
    let (moved_to, n) = loop {
        match incr(&pool, &victim_key).await {
            Ok(served) => break served,
            Err(e) => {
                failed += 1;
                assert!(failed <= 1, "second failed command: {e}");
            }
        }
    };
    assert_ne!(moved_to, victim);
    assert_eq!(n, 1, "the stand-in node starts the key afresh");
    assert!(!is_up(&pool, &victim));
    let status = pool.status();
    let boxed = status.iter().find(|s| s.name == victim).unwrap();
    assert!(matches!(
        boxed.boxed_for,
        Some(FailureKind::Dropped | FailureKind::Refused | FailureKind::Io)
    ));
    assert_eq!(pool.node_for(&victim_key).as_deref(), Some(moved_to.as_str()));
    for (name, key) in &keys[1..] {
        let (served_by, n) = incr(&pool, key).await.unwrap();
        assert_eq!(&served_by, name, "{key} must stay on its node");
        assert_eq!(n, 2);
    }

    server_named(&mut servers, &victim).restart();
    assert!(
        eventually(Duration::from_secs(5), || is_up(&pool, &victim)).await,
        "restarted node was not let back in"
    );
    let (home, n) = incr(&pool, &victim_key).await.unwrap();
    assert_eq!(home, victim);
    assert_eq!(n, 1, "the restarted node is empty");
    // The duplicate written meanwhile is still on the stand-in.
    let mut stand_in = server_named(&mut servers, &moved_to).client();
    let dup: i64 = redis::cmd("GET").arg(&victim_key).query(&mut stand_in).unwrap();
    assert_eq!(dup, 1);
}

/// A boxed node whose probes keep failing stays longer each time, by the
/// multiplier, up to the maximum.
#[tokio::test]
async fn failed_probes_grow_the_wait_to_the_cap() {
    let mut servers = start_servers(2);
    let pool = exact_pool(&servers, 100).await; // 100, 200, 400, 400 ms
    let victim = servers[0].name();
    servers[0].kill();
    // The first command on its (now dead) pooled connection boxes it.
    let key = keys_homed_on(&pool, "probe").into_iter().find(|(n, _)| *n == victim).unwrap().1;
    let mut conn = pool.get(&key).await.unwrap();
    let _ = conn.incr::<_, _, i64>(&key, 1).await;
    drop(conn);
    assert!(!is_up(&pool, &victim));

    let status = |pool: &ShardedPool| pool.status().into_iter().find(|s| s.name == victim).unwrap();
    let mut seen = Vec::new();
    for probes in 0..=4 {
        assert!(
            eventually(Duration::from_secs(3), || status(&pool).failed_probes >= probes).await,
            "probe {probes} never happened"
        );
        let s = status(&pool);
        assert!(!s.up);
        assert_eq!(s.failed_probes, probes, "a probe was skipped");
        seen.push(s.penalty_wait.unwrap().as_millis());
    }
    assert_eq!(seen, vec![100, 200, 400, 400, 400]);
}

#[tokio::test]
async fn all_nodes_down_gives_no_healthy_nodes_until_one_returns() {
    let mut servers = start_servers(2);
    let pool = exact_pool(&servers, 100).await;
    for s in &mut servers {
        s.kill();
    }
    // Each node is boxed by the first command or connect that meets it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let err = loop {
        match pool.get("anything").await {
            Err(e) => break e,
            Ok(mut conn) => {
                assert!(Instant::now() < deadline, "nodes never boxed");
                let _ = redis::cmd("PING").query_async::<()>(&mut conn).await;
            }
        }
    };
    assert!(matches!(err, Error::NoHealthyNodes), "{err}");
    assert!(matches!(pool.get_any().await, Err(Error::NoHealthyNodes)));
    assert_eq!(pool.node_for("anything"), None);
    assert!(pool.status().iter().all(|s| !s.up));

    servers[1].restart();
    assert!(eventually(Duration::from_secs(5), || is_up(&pool, &servers[1].name())).await);
    for i in 0..20 {
        let (node, _) = incr(&pool, &format!("resume:{i}")).await.unwrap();
        assert_eq!(node, servers[1].name());
    }
}

/// One of three nodes killed under concurrent traffic: no `get` errs and
/// none waits more than 250 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_under_traffic_never_blocks_get() {
    let mut servers = start_servers(3);
    let pool = exact_pool(&servers, 10_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let worst_get_us = Arc::new(AtomicU64::new(0));
    let gets = Arc::new(AtomicU64::new(0));
    let command_errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..32 {
        let (pool, stop, worst, gets, errors) = (
            pool.clone(),
            stop.clone(),
            worst_get_us.clone(),
            gets.clone(),
            command_errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("traffic:{t}:{}", i % 500);
                i += 1;
                let started = Instant::now();
                let mut conn = pool.get(&key).await.map_err(|e| format!("get failed: {e}"))?;
                worst.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                gets.fetch_add(1, Ordering::Relaxed);
                if conn.incr::<_, _, i64>(&key, 1).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<(), String>(())
        }));
    }
    let before_kill = gets.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(5), || gets.load(Ordering::Relaxed) > before_kill + 2000)
            .await
    );
    let victim = servers[1].name();
    servers[1].kill();
    let at_kill = gets.load(Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(5), || !is_up(&pool, &victim)).await);
    assert!(
        eventually(Duration::from_secs(5), || gets.load(Ordering::Relaxed) > at_kill + 5000).await
    );
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let worst = Duration::from_micros(worst_get_us.load(Ordering::Relaxed));
    let errors = command_errors.load(Ordering::Relaxed);
    println!(
        "gets {}, worst get {worst:?}, failed commands {errors}",
        gets.load(Ordering::Relaxed)
    );
    assert!(worst < Duration::from_millis(250), "a get waited {worst:?}");
    // Only commands in flight on the victim's connections can fail.
    assert!(errors <= 32, "{errors} commands failed");
}

#[tokio::test]
async fn build_succeeds_with_a_node_down_and_says_which() {
    let servers = start_servers(1);
    let mut dead = RedisServer::start();
    let dead_name = dead.name();
    dead.kill();
    let pool = ShardedPool::builder()
        .node(&servers[0].url())
        .named_node("dead", &format!("redis://{dead_name}"))
        .build()
        .await
        .unwrap();
    let status = pool.status();
    assert!(status[0].up);
    assert!(!status[1].up);
    assert_eq!(status[1].name, "dead");
    assert_eq!(status[1].boxed_for, Some(FailureKind::Refused));
    // Keys of the dead node go to the live one from the first call.
    for i in 0..50 {
        let conn = pool.get(format!("k{i}")).await.unwrap();
        assert_eq!(conn.node(), servers[0].name());
    }
}

#[tokio::test]
async fn get_any_takes_healthy_nodes_in_turn() {
    let mut servers = start_servers(3);
    let pool = exact_pool(&servers, 10_000).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(pool.get_any().await.unwrap().node().to_owned());
    }
    for s in &servers {
        assert_eq!(seen.iter().filter(|n| **n == s.name()).count(), 2, "{seen:?}");
    }
    let victim = servers[2].name();
    servers[2].kill();
    // Commands on the victim's connections box it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_up(&pool, &victim) {
        assert!(Instant::now() < deadline, "killed node never boxed");
        if let Ok(mut conn) = pool.get_any().await {
            let _ = redis::cmd("PING").query_async::<()>(&mut conn).await;
        }
    }
    for _ in 0..10 {
        assert_ne!(pool.get_any().await.unwrap().node(), victim);
    }
}

/// A node that accepts connections but never answers (SIGSTOP) is boxed
/// after the configured number of timeouts in a row (command or connect
/// timeouts alike), no command waits longer than the response timeout and no
/// checkout longer than those timeouts; after SIGCONT it is let back in.
#[tokio::test]
async fn hung_node_is_boxed_after_the_timeout_threshold() {
    let servers = start_servers(2);
    let timeout = Duration::from_millis(200);
    let pool = ShardedPool::builder()
        .node(&servers[0].url())
        .node(&servers[1].url())
        .response_timeout(timeout)
        .connect_timeout(timeout)
        .probe_timeout(timeout)
        .timeouts_before_penalty(3)
        .penalty_min_wait(Duration::from_millis(100))
        .penalty_max_wait(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let victim = servers[0].name();
    let key = keys_homed_on(&pool, "hung").into_iter().find(|(n, _)| *n == victim).unwrap().1;
    servers[0].pause();

    // The pooled connection from start-up meets the first timeout.
    let mut conn = pool.get(&key).await.unwrap();
    assert_eq!(conn.node(), victim);
    let started = Instant::now();
    let err = conn.incr::<_, _, i64>(&key, 1).await.unwrap_err();
    let took = started.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(took < timeout + Duration::from_millis(100), "command took {took:?}");
    drop(conn);
    let status = pool.status();
    assert!(status[0].up, "one timeout must not box a node");
    assert_eq!(status[0].consecutive_timeouts, 1);

    // The next checkout must connect: two more timeouts box the node and
    // the checkout moves on, well before the checkout timeout.
    let started = Instant::now();
    let conn = pool.get(&key).await.unwrap();
    let took = started.elapsed();
    assert_ne!(conn.node(), victim);
    assert!(took < 2 * timeout + Duration::from_millis(100), "checkout took {took:?}");
    drop(conn);
    let status = pool.status();
    assert!(!status[0].up);
    assert_eq!(status[0].boxed_for, Some(FailureKind::Timeout));

    servers[0].resume();
    assert!(eventually(Duration::from_secs(5), || is_up(&pool, &victim)).await);
    let (home, _) = incr(&pool, &key).await.unwrap();
    assert_eq!(home, victim);
}

/// A pool built while nodes are down says so once, at `warn`: how many of
/// its nodes are healthy, what that means for keys, and the setting that
/// makes `build` fail instead. A pool built whole says nothing of it.
#[tokio::test]
async fn a_pool_built_with_nodes_down_warns_once_with_the_count() {
    let (captured, _guard) = support::logs::capture();
    let servers = start_servers(1);
    let summaries = || -> Vec<String> {
        let logs = captured.text();
        logs.lines().filter(|l| l.contains("pool built with")).map(str::to_owned).collect()
    };
    let down = |builder: fluster::Builder| {
        builder
            .named_node("down-a", "redis://127.0.0.1:1")
            .named_node("down-b", "redis://127.0.0.1:2")
    };
    let pool = down(ShardedPool::builder()).build().await.unwrap();
    assert!(pool.status().iter().all(|s| !s.up), "{:?}", pool.status());
    let told = summaries();
    assert_eq!(told.len(), 1, "{}", captured.text());
    for words in ["WARN", "pool built with 0 of 2 nodes healthy", "NoHealthyNodes"] {
        assert!(told[0].contains(words), "`{words}` missing: {}", told[0]);
    }
    assert!(told[0].contains("set `require_healthy`") && told[0].contains("fail instead"));
    pool.close();

    let pool = down(support::builder_for(&servers)).build().await.unwrap();
    assert_eq!(pool.status().iter().filter(|s| s.up).count(), 1);
    let told = summaries();
    assert_eq!(told.len(), 2, "{}", captured.text());
    assert!(told[1].contains("pool built with 1 of 3 nodes healthy"), "{}", told[1]);
    pool.close();

    let pool = support::builder_for(&servers).build().await.unwrap();
    assert!(pool.status().iter().all(|s| s.up));
    assert_eq!(summaries().len(), 2, "a pool built whole warns of nothing");
}
