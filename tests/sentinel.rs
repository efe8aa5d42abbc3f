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

/// A pool of a plain node and a Sentinel shard whose master asks for a
/// password, the shard's database 2; `keys` written with a TTL on the
/// plain node. The master, its sentinel, the plain node, the pool.
async fn plain_and_sentinel_shard(
    name: &str,
    password: &str,
    keys: usize,
) -> (RedisServer, RedisServer, RedisServer, ShardedPool, Vec<String>) {
    let master = RedisServer::start_with(&["--requirepass", password]);
    let sentinel = RedisServer::start_sentinel(&[(name, master.port())]);
    let _: () = redis::cmd("SENTINEL")
        .arg("SET")
        .arg(name)
        .arg("auth-pass")
        .arg(password)
        .query(&mut sentinel.client())
        .unwrap();
    let plain = RedisServer::start();
    let shard = SentinelShard::new(name, [sentinel.url()]).password(password).db(2);
    let pool = ShardedPool::builder()
        .named_node("plain", &plain.url())
        .sentinel_node(name, shard)
        .penalty_min_wait(Duration::from_millis(50))
        .penalty_max_wait(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let up = eventually(Duration::from_secs(10), || pool.status().iter().all(|s| s.up)).await;
    assert!(up, "{:?}", pool.status());
    let keys = support::keys_on(&pool, "plain", "sentinel-drain", keys);
    for key in &keys {
        let _: () = pool.get(key).await.unwrap().set_ex(key, "v1", 600).await.unwrap();
    }
    (master, sentinel, plain, pool, keys)
}

/// `drain_node` of a plain node whose keys' new home is a Sentinel shard:
/// the draining node `MIGRATE`s them to the master the sentinel names
/// now, with the shard's password and into its database (TTLs kept).
/// Before, the drain was refused: the shard's address is its master
/// group's name, "not host:port".
#[tokio::test]
async fn a_plain_node_drains_into_a_sentinel_shards_master() {
    const PASSWORD: &str = "sentinel-drain-pass";
    let name = "drain-shard";
    let (master, _sentinel, plain, pool, keys) = plain_and_sentinel_shard(name, PASSWORD, 40).await;
    pool.drain_node_paced("plain", 7, Duration::from_millis(1)).await.unwrap();
    assert_eq!(pool.nodes(), [name.to_owned()]);
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/2", master.port());
    let mut on_master = redis::Client::open(url).unwrap().get_connection().unwrap();
    for key in &keys {
        let value: Option<String> = redis::cmd("GET").arg(key).query(&mut on_master).unwrap();
        assert_eq!(value.as_deref(), Some("v1"), "{key} in the master's database 2");
        let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut on_master).unwrap();
        assert!((1..=600).contains(&ttl), "{key}'s TTL kept: {ttl}");
        let read: Option<String> = pool.get(key).await.unwrap().get(key).await.unwrap();
        assert_eq!(read.as_deref(), Some("v1"), "{key} read through the pool");
    }
    let left: i64 = redis::cmd("DBSIZE").query(&mut plain.client()).unwrap();
    assert_eq!(left, 0, "moved, not copied");
}

/// A drain into a Sentinel shard whose sentinels cannot be asked fails
/// before anything moves, naming the shard and why, never its password:
/// the draining node stays, serving its keys.
#[tokio::test]
async fn a_drain_into_a_sentinel_shard_without_its_sentinels_fails_before_moving() {
    const PASSWORD: &str = "sentinel-lookup-pass";
    let name = "lost-shard";
    let (_master, mut sentinel, plain, pool, keys) =
        plain_and_sentinel_shard(name, PASSWORD, 10).await;
    sentinel.kill();
    let err = pool.drain_node("plain").await.unwrap_err();
    let (shown, debug) = (err.to_string(), format!("{err:?}"));
    match &err {
        Error::Drain { node, target, reason } => {
            assert_eq!((node.as_str(), target.as_deref()), ("plain", Some(name)), "{shown}");
            assert!(reason.contains("sentinels") && reason.contains(name), "says why: {shown}");
        }
        other => panic!("expected Error::Drain, got {other}"),
    }
    for text in [&shown, &debug] {
        assert!(!text.contains(PASSWORD), "the error shows the password: {text}");
    }
    assert!(pool.nodes().contains(&"plain".to_owned()), "plain stays");
    let held: i64 = redis::cmd("DBSIZE").query(&mut plain.client()).unwrap();
    assert_eq!(held, keys.len() as i64, "nothing moved");
    for key in &keys {
        let read: Option<String> = pool.get(key).await.unwrap().get(key).await.unwrap();
        assert_eq!(read.as_deref(), Some("v1"), "{key} still served by plain");
    }
}

/// A failover in the middle of a drain into a Sentinel shard (Redis's own
/// `FAILOVER`: the replica caught up, then promoted): the master the
/// drain looked up at its start is a replica now: its `RESTORE`s wait on
/// the failover's pause of writes, then are refused. The drain fails
/// naming the shard, as for any target it cannot reach, and no key is in
/// two places: each is on the new master or still on the draining node's
/// server (a refused batch stays there), but for a batch whose `MIGRATE`
/// timed out (`IOERR`: in doubt, so deleted on the drained node once it
/// answers): on neither, a miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_during_a_drain_into_a_sentinel_shard_fails_it_cleanly() {
    const PASSWORD: &str = "sentinel-failover-pass";
    let name = "moving-shard";
    let (master, _sentinel, plain, pool, keys) =
        plain_and_sentinel_shard(name, PASSWORD, 150).await;
    let port = master.port().to_string();
    let replica = RedisServer::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &port,
        "--masterauth",
        PASSWORD,
        "--requirepass",
        PASSWORD,
    ]);
    let authed = |server: &RedisServer, db: u8| {
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/{db}", server.port());
        redis::Client::open(url).unwrap().get_connection().unwrap()
    };
    let (mut on_master, mut on_replica) = (authed(&master, 2), authed(&replica, 2));
    // Once demoted, the old master follows the new one, which asks for the password.
    let set = ["SET", "masterauth", PASSWORD];
    redis::cmd("CONFIG").arg(&set[..]).query::<()>(&mut on_master).unwrap();
    let info = |conn: &mut redis::Connection| -> String {
        redis::cmd("INFO").arg("replication").query(conn).unwrap_or_default()
    };
    let synced = Instant::now() + Duration::from_secs(10);
    while !info(&mut on_master).contains("connected_slaves:1") {
        assert!(Instant::now() < synced, "the replica never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let draining = pool.clone();
    let drain = tokio::spawn(async move {
        draining.drain_node_paced("plain", 1, Duration::from_millis(20)).await
    });
    let started = eventually(Duration::from_secs(10), || {
        support::status_of(&pool, "plain").drained_keys.is_some_and(|n| n >= 5)
    })
    .await;
    assert!(started, "the drain never moved 5 keys");
    redis::cmd("FAILOVER").query::<()>(&mut on_master).unwrap();

    let err = tokio::time::timeout(Duration::from_secs(20), drain).await.unwrap().unwrap();
    // The keys of the batch in doubt, if its `MIGRATE` timed out (a
    // batch is a `SCAN` step's: `COUNT` is a hint).
    let in_doubt = match err {
        Err(Error::Drain { node, target, reason }) => {
            assert_eq!((node.as_str(), target.as_deref()), ("plain", Some(name)), "{reason}");
            assert!(reason.contains("MIGRATE failed"), "{reason}");
            println!("the drain stopped: {reason}");
            let count = reason.split("the move of ").nth(1).and_then(|r| r.split(' ').next());
            count.map_or(0, |n| n.parse::<usize>().unwrap())
        }
        other => panic!("expected the drain to fail into the shard, got {other:?}"),
    };
    let promoted = Instant::now() + Duration::from_secs(10);
    while !info(&mut on_replica).contains("role:master") {
        assert!(Instant::now() < promoted, "the replica was never promoted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut on_plain = plain.client();
    let (mut moved, mut stayed, mut doubted) = (0, 0, 0);
    for key in &keys {
        let get = |conn: &mut redis::Connection| -> Option<String> {
            redis::cmd("GET").arg(key).query(conn).unwrap()
        };
        match (get(&mut on_replica), get(&mut on_plain)) {
            (Some(v), None) => (assert_eq!(v, "v1"), moved += 1).1,
            (None, Some(v)) => (assert_eq!(v, "v1"), stayed += 1).1,
            (None, None) => doubted += 1,
            other => panic!("{key} is on the new master and the drained node: {other:?}"),
        }
    }
    assert!(
        doubted <= in_doubt,
        "only keys of the batch in doubt ({in_doubt}) on neither: {doubted}"
    );
    assert!(moved >= 5 && stayed >= 1, "moved {moved}, stayed {stayed}");
}
