//! Failover policies, the cascade guard, clean shutdown and many concurrent
//! checkouts, against real `redis-server` nodes.

mod support;

use std::time::{Duration, Instant};

use fluster::{Error, Failover, FailureKind, ShardedPool};
use redis::AsyncCommands;
use support::{RedisServer, clients, eventually, start_servers};

fn builder_for(servers: &[RedisServer]) -> fluster::Builder {
    support::builder_for(servers)
        .penalty_min_wait(Duration::from_secs(30))
        .penalty_max_wait(Duration::from_secs(30))
}

fn key_of(pool: &ShardedPool, node: &str) -> String {
    support::key_on(pool, node, "rel")
}

/// Sends PINGs on the key's connections until its node is boxed.
async fn box_node(pool: &ShardedPool, key: &str, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.status().iter().any(|s| s.name == node && s.up) {
        assert!(Instant::now() < deadline, "{node} was never boxed");
        if let Ok(mut conn) = pool.get(key).await {
            let _ = redis::cmd("PING").query_async::<()>(&mut conn).await;
        }
    }
}

#[tokio::test]
async fn fail_fast_names_the_boxed_node_instead_of_rerouting() {
    let mut servers = start_servers(2);
    let pool = builder_for(&servers).failover(Failover::FailFast).build().await.unwrap();
    let victim = servers[0].name();
    let victim_key = key_of(&pool, &victim);
    let other_key = key_of(&pool, &servers[1].name());
    servers[0].kill();
    box_node(&pool, &victim_key, &victim).await;

    match pool.get(&victim_key).await {
        Err(Error::NodeDown { node }) => assert_eq!(node, victim),
        other => panic!("expected NodeDown, got {other:?}"),
    }
    let err = pool.get(&victim_key).await.unwrap_err().to_string();
    assert!(err.contains(&victim) && err.contains("penalty box"), "{err}");
    assert_eq!(pool.node_for(&victim_key), None);
    // Keys of healthy nodes are not affected, and nothing was written twice.
    let mut conn = pool.get(&other_key).await.unwrap();
    let _: i64 = conn.incr(&other_key, 1).await.unwrap();
    let exists: bool =
        redis::cmd("EXISTS").arg(&victim_key).query(&mut servers[1].client()).unwrap();
    assert!(!exists, "fail-fast must not write the key elsewhere");
}

/// With a cap of half the nodes, a third failing node stays in rotation:
/// its callers get errors, and its keys do not pile onto the survivors.
#[tokio::test]
async fn cascade_guard_caps_the_boxed_nodes() {
    let mut servers = start_servers(4);
    let pool = builder_for(&servers).max_boxed_fraction(0.5).build().await.unwrap();
    let names: Vec<String> = servers.iter().map(RedisServer::name).collect();
    let keys: Vec<String> = names.iter().map(|n| key_of(&pool, n)).collect();
    for server in &mut servers[..3] {
        server.kill();
    }
    box_node(&pool, &keys[0], &names[0]).await;
    box_node(&pool, &keys[1], &names[1]).await;

    // The third dead node is kept in rotation: every call for its key
    // fails, naming it, and none is served by the last live node.
    let mut saw_node_failed = false;
    for _ in 0..20 {
        match pool.get(&keys[2]).await {
            Ok(mut conn) => {
                assert_eq!(conn.node(), names[2]);
                assert!(redis::cmd("PING").query_async::<()>(&mut conn).await.is_err());
            }
            Err(Error::NodeFailed { node, failure }) => {
                assert_eq!(node, names[2]);
                assert_eq!(failure, FailureKind::Refused);
                saw_node_failed = true;
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert!(saw_node_failed, "the refused connects must reach the caller");
    let status = pool.status();
    assert_eq!(status.iter().filter(|s| !s.up).count(), 2, "{status:?}");
    assert!(status[2].up);
    // The boxed nodes' keys still fail over to live rotation.
    assert_eq!(pool.node_for(&keys[3]).as_deref(), Some(names[3].as_str()));
}

#[tokio::test]
async fn close_releases_every_connection_for_every_handle() {
    let servers = start_servers(3);
    let pool = builder_for(&servers).min_idle(Some(2)).build().await.unwrap();
    let clone = pool.clone();
    for i in 0..100 {
        let key = format!("close:{i}");
        let mut conn = pool.get(&key).await.unwrap();
        let _: i64 = conn.incr(&key, 1).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(5), || servers.iter().all(|s| clients(s) >= 2)).await,
        "min_idle connections never opened"
    );
    let mut held = pool.get("held").await.unwrap();

    clone.close();
    assert!(pool.is_closed());
    assert!(matches!(pool.get("x").await, Err(Error::Closed)));
    assert!(matches!(pool.get_any().await, Err(Error::Closed)));
    // A connection checked out before close still works until dropped.
    let _: () = redis::cmd("PING").query_async(&mut held).await.unwrap();
    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || servers.iter().all(|s| clients(s) == 0)).await,
        "connections left after close: {:?}",
        servers.iter().map(clients).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn dropping_the_last_handle_releases_every_connection() {
    let servers = start_servers(2);
    let pool = builder_for(&servers).build().await.unwrap();
    for i in 0..50 {
        let key = format!("drop:{i}");
        let mut conn = pool.get(&key).await.unwrap();
        let _: i64 = conn.incr(&key, 1).await.unwrap();
    }
    assert!(servers.iter().all(|s| clients(s) >= 1));
    drop(pool);
    assert!(
        eventually(Duration::from_secs(5), || servers.iter().all(|s| clients(s) == 0)).await,
        "connections left after drop: {:?}",
        servers.iter().map(clients).collect::<Vec<_>>()
    );
}

/// 10,000 concurrent `get`s against pools of 8 connections per node all
/// complete, and every write lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_gets_all_complete() {
    const TASKS: usize = 10_000;
    let servers = start_servers(3);
    let pool = builder_for(&servers)
        .max_connections(8)
        .checkout_timeout(Duration::from_secs(20))
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let key = format!("many:{i}");
                let mut conn = pool.get(&key).await?;
                let n: i64 = conn.incr(&key, 1).await?;
                Ok::<i64, Error>(n)
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 1);
    }
    println!("{TASKS} gets and INCRs in {:?}", started.elapsed());
    let total = support::total_keys(&servers);
    assert_eq!(total, TASKS);
    assert!(pool.status().iter().all(|s| s.connections <= 8));
}

/// bb8's own figures reach `status()`: checkouts that timed out on a busy
/// node, and connections closed broken.
#[tokio::test]
async fn pool_statistics_show_waits_timeouts_and_broken_connections() {
    let mut server = support::RedisServer::start();
    let pool = ShardedPool::builder()
        .node(&server.url())
        .max_connections(1)
        .checkout_timeout(std::time::Duration::from_millis(100))
        .idle_timeout(Some(std::time::Duration::from_secs(60)))
        .max_lifetime(None)
        .build()
        .await
        .unwrap();
    let held = pool.get("k").await.unwrap();
    assert!(matches!(pool.get("k").await, Err(Error::Timeout { .. })));
    let stats = pool.status()[0].pool;
    assert!(stats.checkouts_timed_out >= 1, "{stats:?}");
    drop(held);
    server.kill();
    let mut conn = pool.get("k").await.unwrap();
    let _: Result<i64, _> = conn.incr("k", 1).await;
    drop(conn);
    let stats = pool.status()[0].pool;
    assert!(stats.closed_broken >= 1, "{stats:?}");
    assert_eq!(stats.connections, 0, "{stats:?}");
}
