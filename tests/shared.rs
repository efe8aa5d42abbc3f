//! The shared-connection fast path: same routing and penalty box as `get`,
//! one multiplexed connection per node for every task.

mod support;

use std::time::Duration;

use fluster::ShardedPool;
use redis::AsyncCommands;
use support::{clients, eventually, keys_homed_on, start_servers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_socket_per_node_carries_every_task() {
    let servers = start_servers(3);
    let pool = support::pool_of(&servers, Duration::from_millis(100)).await;
    let before: Vec<usize> = servers.iter().map(clients).collect();
    let tasks: Vec<_> = (0..256)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    let key = format!("shared:{t}:{i}");
                    let mut conn = pool.get_shared(&key).await.unwrap();
                    assert_eq!(Some(conn.node()), pool.node_for(&key).as_deref());
                    let n: i64 = conn.incr(&key, 1).await.unwrap();
                    assert_eq!(n, 1);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let after: Vec<usize> = servers.iter().map(clients).collect();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(*a, b + 1, "one shared connection per node: before {before:?}, after {after:?}");
    }
    let total = support::total_keys(&servers);
    assert_eq!(total, 256 * 20);
}

#[tokio::test]
async fn shared_connections_fail_over_and_come_back() {
    let mut servers = start_servers(2);
    let pool = support::pool_of(&servers, Duration::from_millis(100)).await;
    let victim = servers[0].name();
    let key =
        keys_homed_on(&pool, "shared-failover").into_iter().find(|(n, _)| *n == victim).unwrap().1;
    let mut conn = pool.get_shared(&key).await.unwrap();
    assert_eq!(conn.node(), victim);
    let _: i64 = conn.incr(&key, 1).await.unwrap();

    servers[0].kill();
    // The one command in flight on the dead socket fails and boxes it.
    assert!(conn.incr::<_, _, i64>(&key, 1).await.is_err());
    assert!(!pool.status()[0].up);
    let mut moved = pool.get_shared(&key).await.unwrap();
    assert_ne!(moved.node(), victim);
    let n: i64 = moved.incr(&key, 1).await.unwrap();
    assert_eq!(n, 1);

    servers[0].restart();
    assert!(eventually(Duration::from_secs(5), || pool.status()[0].up).await);
    let mut home = pool.get_shared(&key).await.unwrap();
    assert_eq!(home.node(), victim);
    let n: i64 = home.incr(&key, 1).await.unwrap();
    assert_eq!(n, 1, "a fresh connection to the restarted, empty node");
}

#[test]
fn pool_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let pool: Option<ShardedPool> = None;
    if let Some(pool) = pool {
        send(&pool.get("k"));
        send(&pool.get_shared("k"));
        send(&pool.get_any());
    }
}
