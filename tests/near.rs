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

/// Server calls of a command so far.
fn calls(server: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut server.client()).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    let line = info.lines().find_map(|l| l.strip_prefix(prefix.as_str()));
    line.and_then(|l| l.split(',').next()?.parse().ok()).unwrap_or(0)
}

/// `near_cache(n)`: at most `n` entries per node, for every `n`, and all
/// of them used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_cache_holds_at_most_its_bound() {
    let server = RedisServer::start();
    for bound in [1usize, 3, 10, 17, 100] {
        let pool =
            ShardedPool::builder().node(&server.url()).near_cache(bound).build().await.unwrap();
        for i in 0..20 * bound {
            assert_eq!(read(&pool, &format!("bound:{bound}:{i}")).await, None);
        }
        let held = pool.status()[0].near_cache_entries;
        assert_eq!(held, Some(bound as u64), "near_cache({bound})");
    }
}

/// The bound counts replies, not keys: one key read many ways keeps no
/// more than it, and a key's replies are found without a scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_read_many_ways_keeps_no_more_than_the_bound() {
    let server = RedisServer::start();
    let pool = ShardedPool::builder().node(&server.url()).near_cache(100).build().await.unwrap();
    let fields: Vec<String> = (0..3_000).map(|i| format!("f{i}")).collect();
    let pairs: Vec<(&str, usize)> = fields.iter().map(|f| (f.as_str(), 1)).collect();
    let _: () = redis::Commands::hset_multiple(&mut server.client(), "wide", &pairs).unwrap();
    let mut conn = pool.get_shared("wide").await.unwrap();
    for pass in 0..2 {
        let before = calls(&server, "hget");
        for field in &fields {
            assert_eq!(conn.hget::<_, _, Option<usize>>("wide", field).await.unwrap(), Some(1));
        }
        let asked = calls(&server, "hget") - before;
        assert!(asked >= 2_900, "pass {pass}: {asked} of 3,000 HGETs reached the server");
        let held = pool.status()[0].near_cache_entries;
        assert!(held.is_some_and(|n| n <= 100), "pass {pass}: {held:?} entries");
    }
    // A key with 5,000 replies kept: a hit on it costs about what a hit on
    // a key read one way costs (a scan of them was 13 times as much).
    let pool =
        ShardedPool::builder().node(&server.url()).near_cache(100_000).build().await.unwrap();
    let _: () = redis::Commands::set(&mut server.client(), "many", "x".repeat(100)).unwrap();
    let _: () = redis::Commands::set(&mut server.client(), "once", "x".repeat(100)).unwrap();
    let mut conn = pool.get_shared("many").await.unwrap();
    for start in 0..5_000 {
        let _: String = conn.getrange("many", start, start + 10).await.unwrap();
    }
    for key in ["many", "once"] {
        let _: Option<String> = pool.get_cached(key).await.unwrap();
    }
    assert!(pool.status()[0].near_cache_entries.is_some_and(|n| n >= 5_001));
    let before = calls(&server, "get");
    let (mut many, mut once) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        for (key, best) in [("many", &mut many), ("once", &mut once)] {
            let started = Instant::now();
            for _ in 0..20_000 {
                let _: Option<String> = pool.get_cached(key).await.unwrap();
            }
            *best = (*best).min(started.elapsed());
        }
    }
    assert_eq!(calls(&server, "get"), before, "every read was a hit");
    println!("20,000 hits: {many:?} on a key with 5,001 replies, {once:?} on a key with one");
    assert!(many < once * 4, "{many:?} against {once:?}");
}

/// Turning the near cache on changes no reply: the tracking connection
/// speaks RESP3, whose maps, sets, doubles, booleans, verbatim strings and
/// big numbers (and `[member, score]` pairs) are given back as RESP2, on
/// every path, from the server and from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_the_near_cache_on_changes_no_reply() {
    use std::collections::{HashMap, HashSet};
    let server = RedisServer::start();
    let plain = ShardedPool::builder().node(&server.url()).build().await.unwrap();
    let near = ShardedPool::builder().node(&server.url()).near_cache(1_000).build().await.unwrap();
    let _: () = redis::pipe()
        .hset_multiple("h", &[("a", "1"), ("b", "2")])
        .hset("h1", "f", "v")
        .zadd_multiple("z", &[(0.1, "a"), (1.5, "b"), (3.0, "c"), (2e30, "d"), (-1e-7, "e")])
        .zadd("z1", "m", 0.3)
        .sadd("s", &["x", "y", "z"])
        .set("f", "1.5")
        .cmd("XADD")
        .arg("x")
        .arg("1-1")
        .arg("k")
        .arg("v")
        .cmd("GEOADD")
        .arg("g")
        .arg(13.361389)
        .arg(38.115556)
        .arg("m")
        .query(&mut server.client())
        .unwrap();
    let words = |line: &str| {
        let mut cmd = redis::Cmd::new();
        for word in line.split(' ') {
            cmd.arg(word.replace('~', " "));
        }
        cmd
    };
    let lines = [
        "HGETALL h",
        "ZRANGE z 0 -1 WITHSCORES",
        "ZRANGE z 0 -1",
        "ZRANGEBYSCORE z -inf +inf WITHSCORES",
        "ZREVRANGE z 0 -1 WITHSCORES",
        "ZREVRANGEBYSCORE z +inf -inf WITHSCORES",
        "ZUNION 1 z WITHSCORES",
        "ZINTER 1 z WITHSCORES",
        "ZDIFF 1 z WITHSCORES",
        "ZSCORE z a",
        "ZSCORE z nope",
        "ZMSCORE z a e nope",
        "ZINCRBY z 0 b",
        "ZADD z INCR 0 d",
        "ZRANDMEMBER z1 1 WITHSCORES",
        "ZRANDMEMBER z1 -2 WITHSCORES",
        "HRANDFIELD h1 1 WITHVALUES",
        "SMEMBERS s",
        "SUNION s",
        "INCRBYFLOAT f 0",
        "EXISTS h",
        "CONFIG GET maxmemory*",
        "XINFO STREAM x",
        "COMMAND DOCS GET",
        "GEOPOS g m nope",
        "GEOSEARCH g FROMMEMBER m BYRADIUS 10 km WITHCOORD WITHDIST",
        "GEODIST g m m",
        "EVAL return~true 0",
        "EVAL return~{double=0.1} 0",
        "EVAL return~{big_number='123456789012345678901234567890'} 0",
        "EVAL return~{verbatim_string={format='txt',string='hi'}} 0",
        "EVAL redis.setresp(3);return~redis.call('HGETALL','h') 0",
        "EVAL return~{set={a=true}} 0",
        "GET f",
        "GET nope",
    ];
    let cmds: Vec<redis::Cmd> = lines.iter().map(|line| words(line)).collect();
    for cmd in &cmds {
        let expected: redis::Value =
            cmd.query_async(&mut plain.get_shared("k").await.unwrap()).await.unwrap();
        // Twice: from the server, then (for the reads it keeps) from memory.
        for _ in 0..2 {
            let got: redis::Value =
                cmd.query_async(&mut near.get_shared("k").await.unwrap()).await.unwrap();
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(&cmd.get_packed_command()));
        }
    }
    let ratio = near.status()[0].near_cache_hit_ratio;
    assert!(ratio.is_some_and(|r| r > 0.25), "second reads answered from memory: {ratio:?}");
    // The same commands in a pipeline, and in a transaction.
    for atomic in [false, true] {
        let mut pipe = redis::pipe();
        for cmd in &cmds {
            pipe.add_command(cmd.clone());
        }
        if atomic {
            pipe.atomic();
        }
        let expected: Vec<redis::Value> =
            pipe.query_async(&mut plain.get_shared("k").await.unwrap()).await.unwrap();
        let got: Vec<redis::Value> =
            pipe.query_async(&mut near.get_shared("k").await.unwrap()).await.unwrap();
        assert_eq!(got, expected, "atomic: {atomic}");
    }
    // Popped on copies, the same each time.
    for line in ["ZPOPMIN zp", "ZPOPMIN zp 2", "ZPOPMAX zp 2"] {
        let mut replies = Vec::new();
        for pool in [&plain, &near] {
            let _: () = redis::Commands::zadd_multiple(
                &mut server.client(),
                "zp",
                &[(0.1, "a"), (2.5, "b")],
            )
            .unwrap();
            let mut conn = pool.get_shared("zp").await.unwrap();
            replies.push(words(line).query_async::<redis::Value>(&mut conn).await.unwrap());
        }
        assert_eq!(replies[0], replies[1], "{line}");
    }
    // Read into the types users read them into, on each path.
    let mut conn = near.get_shared("k").await.unwrap();
    let all: Vec<String> = conn.hgetall("h").await.unwrap();
    assert_eq!(all, ["a", "1", "b", "2"]);
    let map: HashMap<String, String> = conn.hgetall("h").await.unwrap();
    assert_eq!(map.len(), 2);
    let scored: Vec<(String, f64)> = conn.zrange_withscores("z", 0, 1).await.unwrap();
    assert_eq!(scored, [("e".to_owned(), -1e-7), ("a".to_owned(), 0.1)]);
    let flat: Vec<String> = conn.zrange_withscores("z", 0, 0).await.unwrap();
    // The double as the server writes it in RESP2: `%.17g` before Redis 7.2,
    // the shortest text that reads back the same since (and on Valkey).
    let resp2: Vec<String> =
        redis::Commands::zrange_withscores(&mut server.client(), "z", 0, 0).unwrap();
    assert_eq!(flat, resp2);
    assert!(["-9.9999999999999995e-08", "-1e-7"].contains(&&*flat[1]), "{flat:?}");
    assert_eq!(conn.zscore::<_, _, f64>("z", "b").await.unwrap(), 1.5);
    assert_eq!(conn.zincr::<_, _, _, f64>("z", "b", 0).await.unwrap(), 1.5);
    let config: HashMap<String, String> =
        redis::cmd("CONFIG").arg("GET").arg("maxmemory").query_async(&mut conn).await.unwrap();
    assert_eq!(config.get("maxmemory").map(String::as_str), Some("0"));
    let members: HashSet<String> = conn.smembers("s").await.unwrap();
    assert_eq!(members.len(), 3);
    assert_eq!(conn.incr::<_, _, f64>("f", 0.0).await.unwrap(), 1.5);
    assert!(conn.exists::<_, bool>("h").await.unwrap());
    assert_eq!(near.get_cached::<f64>("f").await.unwrap(), 1.5);
}
