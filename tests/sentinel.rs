//! Sentinel-backed shards (feature `sentinel`): two shards, each a master
//! with one replica, watched by three sentinels. Kill -9 one shard's
//! master: after Sentinel's failover the keys written before it are still
//! there, writes succeed again, and no key moved to the other shard.

mod support;

use std::time::{Duration, Instant};

use fluster::{Error, Failover, SentinelShard, ShardedPool};
use redis::AsyncCommands;
use support::{RedisServer, eventually};

/// `INFO replication` of a server, as text.
fn replication(server: &RedisServer) -> String {
    redis::cmd("INFO").arg("replication").query(&mut server.client()).unwrap_or_default()
}

fn sentinel_knows(sentinel: &RedisServer, what: &str, master: &str, count: usize) -> bool {
    let known: Vec<redis::Value> = redis::cmd("SENTINEL")
        .arg(what)
        .arg(master)
        .query(&mut sentinel.client())
        .unwrap_or_default();
    known.len() >= count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_follows_its_master_through_a_sentinel_failover() {
    // Two shards: a master and its replica each.
    let mut masters = [RedisServer::start(), RedisServer::start()];
    let replicas: Vec<RedisServer> = masters
        .iter()
        .map(|m| RedisServer::start_with(&["--replicaof", "127.0.0.1", &m.port().to_string()]))
        .collect();
    for master in &masters {
        assert!(
            eventually(Duration::from_secs(10), || replication(master)
                .contains("connected_slaves:1"))
            .await,
            "replica never connected"
        );
    }
    let names = ["shard-a", "shard-b"];
    let watched = [(names[0], masters[0].port()), (names[1], masters[1].port())];
    let sentinels: Vec<RedisServer> =
        (0..3).map(|_| RedisServer::start_sentinel(&watched)).collect();
    // A failover needs the sentinels to know the replicas and each other.
    for name in names {
        let ready = eventually(Duration::from_secs(30), || {
            sentinels.iter().all(|s| {
                sentinel_knows(s, "REPLICAS", name, 1) && sentinel_knows(s, "SENTINELS", name, 2)
            })
        })
        .await;
        assert!(ready, "sentinels never learned the topology of {name}");
    }

    let urls: Vec<String> = sentinels.iter().map(RedisServer::url).collect();
    let pool = ShardedPool::builder()
        .sentinel_node(names[0], SentinelShard::new(names[0], &urls))
        .sentinel_node(names[1], SentinelShard::new(names[1], &urls))
        .failover(Failover::FailFast)
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500))
        .penalty_min_wait(Duration::from_millis(100))
        .penalty_max_wait(Duration::from_millis(400))
        .build()
        .await
        .unwrap();
    assert!(pool.status().iter().all(|s| s.up), "{:?}", pool.status());

    let keys: Vec<String> = (0..200).map(|i| format!("order:{i}")).collect();
    let homes: Vec<String> = keys.iter().map(|k| pool.node_for(k).unwrap().to_string()).collect();
    assert!(homes.iter().any(|h| h == names[0]) && homes.iter().any(|h| h == names[1]));
    for key in &keys {
        let mut conn = pool.get(key).await.unwrap();
        let _: () = conn.set(key, format!("value of {key}")).await.unwrap();
    }
    // Make sure the replicas have everything before the master dies.
    for name in names {
        let key = keys.iter().zip(&homes).find(|(_, h)| *h == name).unwrap().0;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // WAIT blocks for at most 300 ms, under the 500 ms response timeout.
            let mut conn = pool.get(key).await.unwrap();
            let acked: i64 =
                redis::cmd("WAIT").arg(1).arg(300).query_async(&mut conn).await.unwrap();
            if acked == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "{name}'s replica did not acknowledge the writes");
        }
    }

    let victim_key = keys.iter().zip(&homes).find(|(_, h)| *h == names[0]).unwrap().0.clone();
    let killed = Instant::now();
    masters[0].kill();
    // Writes to the shard fail (fail fast: never written elsewhere) until
    // Sentinel has promoted the replica and a probe has found it.
    let mut failed_writes = 0;
    loop {
        assert!(killed.elapsed() < Duration::from_secs(30), "no write succeeded within 30 s");
        let written = match pool.get(&victim_key).await {
            Ok(mut conn) => conn.set::<_, _, ()>(&victim_key, "after failover").await.is_ok(),
            Err(Error::NodeDown { node }) => {
                assert_eq!(node, names[0]);
                false
            }
            Err(other) => panic!("unexpected error {other}"),
        };
        if written {
            break;
        }
        failed_writes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "first successful write {:?} after kill -9 of the master ({failed_writes} attempts failed meanwhile)",
        killed.elapsed()
    );
    assert!(replication(&replicas[0]).contains("role:master"), "the replica was promoted");

    // Nothing moved, nothing was lost.
    for (key, home) in keys.iter().zip(&homes) {
        assert_eq!(pool.node_for(key).as_deref(), Some(home.as_str()), "{key} moved");
        let mut conn = pool.get(key).await.unwrap();
        let value: String = conn.get(key).await.unwrap();
        let expected = if *key == victim_key {
            "after failover".to_owned()
        } else {
            format!("value of {key}")
        };
        assert_eq!(value, expected);
    }
    // And the other shard's master never saw a key of the failed shard.
    let mut other = masters[1].client();
    for (key, home) in keys.iter().zip(&homes) {
        if home == names[0] {
            let exists: bool = redis::cmd("EXISTS").arg(key).query(&mut other).unwrap();
            assert!(!exists, "{key} was written to the other shard");
        }
    }
}

#[tokio::test]
async fn sentinel_shards_are_checked_and_named_without_secrets() {
    let build = |shard: SentinelShard| async move {
        match ShardedPool::builder().sentinel_node("s", shard).build().await {
            Err(Error::Config { setting, reason }) => format!("{setting}: {reason}"),
            Err(other) => panic!("expected a configuration error, got {other}"),
            Ok(_) => panic!("expected a configuration error"),
        }
    };
    let none: [&str; 0] = [];
    assert!(build(SentinelShard::new("m", none)).await.contains("no sentinel URLs"));
    assert!(build(SentinelShard::new("", ["redis://127.0.0.1:1"])).await.contains("master name"));
    let err = build(SentinelShard::new("m", ["redis://:hunter2@127.0.0.1:0"])).await;
    assert!(err.contains("***@127.0.0.1:0") && !err.contains("hunter2"), "{err}");
    let shard = SentinelShard::new("m", ["redis://:hunter2@127.0.0.1:1"]).password("s3cret");
    let shown = format!("{shard:?}");
    assert!(!shown.contains("hunter2") && !shown.contains("s3cret"), "{shown}");

    // No sentinel answers: the shard starts in the box, named by its name.
    let pool = ShardedPool::builder()
        .sentinel_node("orders", SentinelShard::new("orders", ["redis://127.0.0.1:1"]))
        .build()
        .await
        .unwrap();
    let status = &pool.status()[0];
    assert_eq!(status.name, "orders");
    assert!(!status.up);
}

/// The synchronous flavour takes Sentinel shards from the same builder: its
/// blocking connections go to the master the sentinel names.
#[cfg(feature = "r2d2")]
#[test]
fn the_sync_flavour_serves_a_sentinel_shard() {
    let master = RedisServer::start();
    let sentinel = RedisServer::start_sentinel(&[("sync-shard", master.port())]);
    let pool = fluster::sync::ShardedPool::builder()
        .sentinel_node("sync-shard", SentinelShard::new("sync-shard", [sentinel.url()]))
        .build()
        .unwrap();
    assert!(pool.status()[0].up, "{:?}", pool.status());
    let mut conn = pool.get("sync:visits").unwrap();
    assert_eq!(conn.node(), "sync-shard");
    let n: i64 = redis::Commands::incr(&mut conn, "sync:visits", 5).unwrap();
    assert_eq!(n, 5);
    let on_master: i64 = redis::Commands::get(&mut master.client(), "sync:visits").unwrap();
    assert_eq!(on_master, 5, "the write reached the master the sentinel named");
}

/// The synchronous flavour leaves a Sentinel shard whose master hangs
/// (SIGSTOP: its sockets accept, nothing answers) as the async one does:
/// its connects through the sentinel are bounded by the pool's timeouts,
/// hold no lock a later connect waits on, and count against the node, so
/// the shard is boxed meanwhile and writes again soon after Sentinel names
/// the replica.
#[cfg(feature = "r2d2")]
#[test]
fn the_sync_flavour_leaves_a_hung_master_after_the_sentinel_failover() {
    let master = RedisServer::start();
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port().to_string()]);
    let name = "hung-shard";
    let sentinel = RedisServer::start_sentinel(&[(name, master.port())]);
    // One sentinel: it must be a quorum of one to fail over.
    let _: () = redis::cmd("SENTINEL")
        .arg("SET")
        .arg(name)
        .arg("quorum")
        .arg(1)
        .query(&mut sentinel.client())
        .unwrap();
    let ready = support::eventually_blocking(Duration::from_secs(30), || {
        replication(&master).contains("connected_slaves:1")
            && sentinel_knows(&sentinel, "REPLICAS", name, 1)
    });
    assert!(ready, "the sentinel never learned the replica");

    let pool = fluster::sync::ShardedPool::builder()
        .sentinel_node(name, SentinelShard::new(name, [sentinel.url()]))
        .failover(Failover::FailFast)
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500))
        .checkout_timeout(Duration::from_secs(1))
        .penalty_min_wait(Duration::from_millis(100))
        .penalty_max_wait(Duration::from_millis(400))
        .build()
        .unwrap();
    let key = "hung:writes";
    let write = |value: u64| match pool.get(key) {
        Ok(mut conn) => redis::Commands::set::<_, _, ()>(&mut conn, key, value).is_ok(),
        Err(_) => false,
    };
    assert!(write(0), "the shard takes writes before the hang");

    let master_port = master.port().to_string();
    let sentinel_url = sentinel.url();
    master.pause();
    let paused = Instant::now();
    // When Sentinel names another server master, watched on its own thread.
    let named = std::thread::spawn(move || {
        let mut conn = redis::Client::open(sentinel_url).unwrap().get_connection().unwrap();
        loop {
            let address: Vec<String> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(name)
                .query(&mut conn)
                .unwrap_or_default();
            if address.get(1).is_some_and(|port| *port != master_port) {
                return Instant::now();
            }
            assert!(paused.elapsed() < Duration::from_secs(30), "Sentinel never failed over");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let mut seen_boxed = false;
    let mut value = 0;
    let written = loop {
        value += 1;
        // A write can only succeed on the promoted replica: the master
        // answers nothing.
        if write(value) {
            break Instant::now();
        }
        seen_boxed |= !support::status_of(&pool, name).up;
        assert!(
            paused.elapsed() < Duration::from_secs(30),
            "the sync pool wrote nothing within 30 s of the master's hang (status {:?})",
            pool.status()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let named = named.join().unwrap();
    println!(
        "Sentinel named the replica {:?} after the hang; the sync pool wrote again {:?} after that",
        named - paused,
        written.saturating_duration_since(named)
    );
    assert!(
        written < named + Duration::from_secs(3),
        "the sync pool wrote again only {:?} after Sentinel named the replica",
        written - named
    );
    assert!(seen_boxed, "status() never showed the hung master's shard boxed");
    let on_replica: u64 = redis::Commands::get(&mut replica.client(), key).unwrap();
    assert_eq!(on_replica, value, "the write reached the promoted replica");
}
