//! The near cache: reads through `get_shared` answered from process memory,
//! invalidated by the server when anyone writes, and never outliving their
//! connection or their node's box.

mod support;

use std::time::{Duration, Instant};

use fluster::ShardedPool;
use redis::AsyncCommands;
use support::proxy::Proxy;
use support::{RedisServer, eventually, key_on, status_of};

/// `GET`s the server has answered so far.
fn gets(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut server.client()).unwrap();
    let line = info.lines().find_map(|l| l.strip_prefix("cmdstat_get:calls="));
    line.and_then(|l| l.split(',').next()?.parse().ok()).unwrap_or(0)
}

async fn read(pool: &ShardedPool, key: &str) -> Option<String> {
    pool.get_shared(key).await.unwrap().get(key).await.unwrap()
}

/// The pool's connections to `server`, by `CLIENT LIST` line.
fn clients(server: &RedisServer) -> Vec<String> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut server.client()).unwrap();
    list.lines().filter(|l| !l.contains("cmd=client")).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_reads_reach_the_server_once_per_key() {
    let server = RedisServer::start();
    let pool = ShardedPool::builder().node(&server.url()).near_cache(1_000).build().await.unwrap();
    let keys: Vec<String> = (0..20).map(|i| format!("near:{i}")).collect();
    for key in &keys {
        let _: () = redis::Commands::set(&mut server.client(), key, "v").unwrap();
    }
    let before = gets(&server);
    for _ in 0..50 {
        for key in &keys {
            assert_eq!(read(&pool, key).await.as_deref(), Some("v"));
        }
    }
    let asked = gets(&server) - before;
    assert_eq!(asked, keys.len() as u64, "1,000 reads of 20 keys");
    let status = &pool.status()[0];
    assert_eq!(status.near_cache_entries, Some(20), "{status:?}");
    assert_eq!(status.near_cache_hit_ratio, Some(980.0 / 1000.0), "{status:?}");
    let tracking = clients(&server).iter().filter(|c| c.contains("resp=3")).count();
    assert_eq!(tracking, 1, "one RESP3 connection: {:?}", clients(&server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_near_cache_nothing_changes() {
    let server = RedisServer::start();
    let pool = ShardedPool::builder().node(&server.url()).build().await.unwrap();
    let before = gets(&server);
    for _ in 0..10 {
        assert_eq!(read(&pool, "plain").await, None);
    }
    assert_eq!(gets(&server) - before, 10);
    assert_eq!(pool.status()[0].near_cache_hit_ratio, None);
    let resp2 = clients(&server).iter().all(|c| c.contains("resp=2") && !c.contains("flags=t"));
    assert!(resp2, "{:?}", clients(&server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_write_is_seen_within_a_short_bound() {
    let server = RedisServer::start();
    let pool = ShardedPool::builder().node(&server.url()).near_cache(1_000).build().await.unwrap();
    let mut other = server.client();
    let mut worst = Duration::ZERO;
    for round in 0..50 {
        let value = format!("v{round}");
        assert_ne!(read(&pool, "shared").await.as_deref(), Some(&*value));
        let _: () = redis::Commands::set(&mut other, "shared", &value).unwrap();
        let written = Instant::now();
        while read(&pool, "shared").await.as_deref() != Some(&*value) {
            assert!(written.elapsed() < Duration::from_secs(1), "round {round}: never seen");
            tokio::task::yield_now().await;
        }
        worst = worst.max(written.elapsed());
    }
    println!("slowest invalidation: {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_takes_its_entries_with_it() {
    let server = RedisServer::start();
    let pool = ShardedPool::builder().node(&server.url()).near_cache(1_000).build().await.unwrap();
    let mut other = server.client();
    let _: () = redis::Commands::set(&mut other, "killed", "old").unwrap();
    assert_eq!(read(&pool, "killed").await.as_deref(), Some("old"));
    let mut held = pool.get_shared("killed").await.unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut other)
        .unwrap();
    // No invalidation reaches the killed connection: once the pool sees
    // its socket closed (at once, but not in the same instant), its entries
    // are gone and this write is read.
    let _: () = redis::Commands::set(&mut other, "killed", "new").unwrap();
    let killed = Instant::now();
    loop {
        let Ok(mut conn) = pool.get_shared("killed").await else { continue };
        if let Ok(Some(value)) = conn.get::<_, Option<String>>("killed").await
            && value == "new"
        {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(1), "still served from a dead connection");
        tokio::task::yield_now().await;
    }
    println!("entries of the killed connection served for {:?}", killed.elapsed());
    for _ in 0..100 {
        assert_eq!(read(&pool, "killed").await.as_deref(), Some("new"));
    }
    // A clone taken before the kill refuses rather than answer from it.
    assert!(held.get::<_, Option<String>>("killed").await.is_err());
}

/// A near-cached pool over a healthy server and one behind a proxy, so
/// that node can be cut off while it keeps serving others and is written
/// meanwhile; with a key homed behind the proxy, cached as `"cached"`.
struct Cut {
    healthy: RedisServer,
    server: RedisServer,
    proxy: Proxy,
    name: String,
    pool: ShardedPool,
    key: String,
}

async fn behind_proxy(
    prefix: &str,
    configure: impl FnOnce(fluster::Builder) -> fluster::Builder,
) -> Cut {
    let (healthy, server) = (RedisServer::start(), RedisServer::start());
    let proxy = Proxy::start(server.port());
    let name = proxy.url().trim_start_matches("redis://").to_owned();
    let builder = ShardedPool::builder().node(&healthy.url()).node(&proxy.url());
    let builder = builder.near_cache(1_000).response_timeout(Duration::from_millis(100));
    let pool = configure(builder).build().await.unwrap();
    let key = key_on(&pool, &name, prefix);
    let _: () = redis::Commands::set(&mut server.client(), &key, "cached").unwrap();
    assert_eq!(read(&pool, &key).await.as_deref(), Some("cached"));
    Cut { healthy, server, proxy, name, pool, key }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boxed_nodes_entries_are_never_served_and_it_returns_empty() {
    let Cut { healthy, server, proxy, name, pool, key } = behind_proxy("boxed", |b| {
        b.timeouts_before_penalty(1)
            .penalty_min_wait(Duration::from_millis(100))
            .penalty_max_wait(Duration::from_millis(200))
    })
    .await;
    let mut held = pool.get_shared(&key).await.unwrap();
    proxy.silence();
    // A write the node's connection cannot hear of.
    let _: () = redis::Commands::set(&mut server.client(), &key, "newer").unwrap();
    let _: Result<(), _> = pool.get(&key).await.unwrap().set(format!("{key}:x"), 1).await;
    assert!(eventually(Duration::from_secs(2), || !status_of(&pool, &name).up).await);
    // Boxed: the key is read on the stand-in, never from the entry, not
    // even through a clone taken before.
    assert!(held.get::<_, Option<String>>(&key).await.is_err());
    for _ in 0..20 {
        let mut conn = pool.get_shared(&key).await.unwrap();
        assert_eq!(conn.node(), healthy.name());
        assert_eq!(conn.get::<_, Option<String>>(&key).await.unwrap(), None);
    }
    proxy.restore();
    assert!(eventually(Duration::from_secs(3), || status_of(&pool, &name).up).await);
    assert_eq!(read(&pool, &key).await.as_deref(), Some("newer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_on_return_clears_every_processs_near_cache() {
    let mut servers = support::start_servers(2);
    let build = || {
        support::builder_for(&servers)
            .near_cache(1_000)
            .invalidate_on_return(true)
            .penalty_min_wait(Duration::from_millis(100))
            .penalty_max_wait(Duration::from_millis(200))
            .build()
    };
    // Two pools stand in for two processes.
    let (writer, reader) = (build().await.unwrap(), build().await.unwrap());
    let home = servers[0].name();
    let key = key_on(&writer, &home, "everywhere");
    servers[0].kill();
    for pool in [&writer, &reader] {
        while status_of(pool, &home).up {
            let _: Result<(), _> = pool.get(&key).await.unwrap().set(&key, "probe").await;
        }
    }
    let _: () = writer.get_shared(&key).await.unwrap().set(&key, "stand-in's").await.unwrap();
    // The reader caches the stand-in's copy.
    assert_eq!(read(&reader, &key).await.as_deref(), Some("stand-in's"));
    assert_eq!(read(&reader, &key).await.as_deref(), Some("stand-in's"));
    let cached = status_of(&reader, &servers[1].name()).near_cache_hit_ratio;
    assert!(cached.is_some_and(|ratio| ratio > 0.0), "the second read was a hit: {cached:?}");
    servers[0].restart();
    assert!(
        eventually(Duration::from_secs(5), || status_of(&writer, &home).stand_in_invalidated == 1)
            .await
    );
    // The home fails again before the reader saw it back: the reader reads
    // the stand-in, whose copy the writer deleted, and must not answer
    // from its entry.
    servers[0].kill();
    let mut conn = reader.get_shared(&key).await.unwrap();
    assert_eq!(conn.node(), servers[1].name(), "the reader still has the home boxed");
    assert_eq!(conn.get::<_, Option<String>>(&key).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_keeps_the_socket_open_retires_the_entries() {
    let Cut { server, proxy, pool, key, .. } =
        behind_proxy("partition", |b| b.connect_timeout(Duration::from_millis(100))).await;
    // Nothing passes, the socket stays open, and another client writes.
    proxy.silence();
    let _: () = redis::Commands::set(&mut server.client(), &key, "newer").unwrap();
    let cut = Instant::now();
    // Only reads, all of them hits: nothing but the pool's heartbeat can
    // see the partition.
    loop {
        let stale = match pool.get_shared(&key).await {
            Ok(mut conn) => conn.get::<_, Option<String>>(&key).await.ok().flatten(),
            Err(_) => None,
        };
        if stale.as_deref() != Some("cached") {
            break;
        }
        assert!(cut.elapsed() < Duration::from_secs(5), "entries served 5 s into a partition");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("entries served {:?} into the partition", cut.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_read_of_a_key_is_kept_apart_and_mget_reads_its_own_writes() {
    let server = RedisServer::start();
    let pool = ShardedPool::builder().node(&server.url()).near_cache(1_000).build().await.unwrap();
    let mut conn = pool.get_shared("h").await.unwrap();
    let _: () = conn.hset_multiple("h", &[("f1", "a"), ("f2", "b")]).await.unwrap();
    for _ in 0..3 {
        assert_eq!(conn.hget::<_, _, String>("h", "f1").await.unwrap(), "a");
        assert_eq!(conn.hget::<_, _, String>("h", "f2").await.unwrap(), "b");
    }
    let before = gets(&server);
    for round in 0..50 {
        let keys = [format!("m:{}", round % 3), format!("m:{}", round % 3 + 3)];
        let _: Vec<Option<i64>> = conn.mget(&keys).await.unwrap();
        pool.mset(&[(&keys[0], round), (&keys[1], round + 1)]).await.unwrap();
        let read: Vec<Option<i64>> = conn.mget(&keys).await.unwrap();
        assert_eq!(read, [Some(round), Some(round + 1)], "round {round}");
    }
    assert_eq!(gets(&server), before, "MGET is asked of the server as MGET, not GET");
    // A reply the server refuses is not kept.
    let _: () = conn.set("str", "x").await.unwrap();
    for _ in 0..2 {
        assert!(conn.hget::<_, _, Option<String>>("str", "f").await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_lives_no_longer_than_its_key() {
    let server = RedisServer::start();
    let pool = ShardedPool::builder().node(&server.url()).near_cache(1_000).build().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("brief")
        .arg("v")
        .arg("PX")
        .arg(300)
        .query(&mut server.client())
        .unwrap();
    assert_eq!(read(&pool, "brief").await.as_deref(), Some("v"));
    let before = gets(&server);
    assert_eq!(read(&pool, "brief").await.as_deref(), Some("v"));
    assert_eq!(gets(&server), before, "the second read was a hit");
    // Past its expiry the entry is not served, whether or not the server's
    // invalidation has come yet.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(read(&pool, "brief").await, None);
}

/// A hit waits on nothing, yet a task looping over hits lets the others
/// run: hits count against Tokio's cooperative budget.
#[tokio::test(flavor = "current_thread")]
async fn a_loop_of_hits_lets_other_tasks_run() {
    let server = RedisServer::start();
    let pool = ShardedPool::builder().node(&server.url()).near_cache(1_000).build().await.unwrap();
    assert_eq!(read(&pool, "hot").await, None);
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let other = {
        let ran = ran.clone();
        tokio::spawn(async move {
            loop {
                ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut conn = pool.get_shared("hot").await.unwrap();
    for _ in 0..10_000 {
        assert_eq!(conn.get::<_, Option<String>>("hot").await.unwrap(), None);
    }
    other.abort();
    let ran = ran.load(std::sync::atomic::Ordering::Relaxed);
    assert!(ran >= 10, "the other task ran {ran} times during 10,000 hits");
}
