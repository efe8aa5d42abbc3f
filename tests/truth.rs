//! The truth in one process: with the near cache on, a read that starts
//! after a write through the same pool was acknowledged never returns the
//! value from before it, whichever path carried the write; and an idle
//! pool sees a node die.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fluster::ShardedPool;
use redis::AsyncCommands;
use support::{RedisServer, eventually, status_of};

/// The paths a write can take through the pool.
#[derive(Debug, Clone, Copy)]
enum Path {
    Shared,
    Pooled,
    Mset,
    Pipeline,
    Transaction,
    /// `MULTI`, the write (`QUEUED`), a read by another caller meanwhile,
    /// then `EXEC`: each sent alone on a pooled connection.
    Multi,
}

async fn write(pool: &ShardedPool, path: Path, key: &str, value: u64) {
    match path {
        Path::Shared => pool.get_shared(key).await.unwrap().set(key, value).await.unwrap(),
        Path::Pooled => pool.get(key).await.unwrap().set(key, value).await.unwrap(),
        Path::Mset => pool.mset(&[(key, value)]).await.unwrap(),
        Path::Pipeline => {
            let mut pipe = pool.pipeline();
            pipe.add(key, redis::cmd("SET").arg(key).arg(value).clone());
            for reply in pipe.query_async().await.unwrap() {
                reply.unwrap();
            }
        }
        Path::Transaction => {
            pool.transaction(key, &[], async |conn, pipe| {
                pipe.set(key, value).ignore();
                Ok(pipe.query_async::<Option<()>>(conn).await?)
            })
            .await
            .unwrap();
        }
        Path::Multi => {
            let mut conn = pool.get(key).await.unwrap();
            redis::cmd("MULTI").query_async::<()>(&mut conn).await.unwrap();
            redis::cmd("SET").arg(key).arg(value).query_async::<()>(&mut conn).await.unwrap();
            // Queued, not run: a read now gets the value from before, and
            // must not keep it past EXEC.
            let _: Option<u64> = pool.get_cached(key).await.unwrap();
            redis::cmd("EXEC").query_async::<()>(&mut conn).await.unwrap();
        }
    }
}

async fn read(pool: &ShardedPool, key: &str) -> Option<u64> {
    pool.get_shared(key).await.unwrap().get(key).await.unwrap()
}

/// `read`, or with `typed` through `get_cached`, the typed fast path.
async fn read_either(pool: &ShardedPool, key: &str, typed: bool) -> Option<u64> {
    match typed {
        true => pool.get_cached(key).await.unwrap(),
        false => read(pool, key).await,
    }
}

/// `rounds` times over 20 keys: read the key (so it is cached), write a
/// new value through `path`, read again; returns how many second reads
/// were stale. With `busy`, four other tasks read the same keys (their
/// fills in flight across the writes) and write other keys meanwhile; with
/// `typed`, the rounds read through `get_cached`.
async fn stale_reads(pool: &ShardedPool, path: Path, rounds: u64, busy: bool, typed: bool) -> u64 {
    let keys: Arc<Vec<String>> = Arc::new((0..20).map(|i| format!("own:{path:?}:{i}")).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let others: Vec<_> = (0..if busy { 4 } else { 0 })
        .map(|task| {
            let (pool, keys, stop) = (pool.clone(), keys.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = &keys[(n as usize + task) % keys.len()];
                    let _ = read(&pool, key).await;
                    if n.is_multiple_of(4) {
                        let other = format!("other:{task}:{}", n % 16);
                        let _: () = pool.get(&other).await.unwrap().set(&other, n).await.unwrap();
                    }
                    n += 1;
                }
            })
        })
        .collect();
    let mut stale = 0;
    for round in 1..=rounds {
        let key = &keys[round as usize % keys.len()];
        let _ = read_either(pool, key, typed).await;
        write(pool, path, key, round).await;
        if read_either(pool, key, typed).await != Some(round) {
            stale += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in others {
        task.await.unwrap();
    }
    stale
}

async fn near_pool(servers: &[RedisServer]) -> ShardedPool {
    support::builder_for(servers).near_cache(1_000).build().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_reads_its_own_writes_through_the_near_cache() {
    let servers = support::start_servers(2);
    let pool = near_pool(&servers).await;
    for busy in [false, true] {
        let stale = stale_reads(&pool, Path::Shared, 5_000, busy, false).await;
        assert_eq!(stale, 0, "get_shared writes, busy: {busy}");
    }
    let hits = pool.status().iter().filter_map(|s| s.near_cache_hit_ratio).sum::<f64>();
    assert!(hits > 0.0, "the first read of each round was a hit: {:?}", pool.status());
}

/// The typed fast path reads this process's writes too, from memory: the
/// same rounds, read with `get_cached`, and its hits counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_fast_path_reads_its_own_writes() {
    let servers = support::start_servers(2);
    let pool = near_pool(&servers).await;
    for path in [Path::Shared, Path::Pooled, Path::Pipeline, Path::Multi] {
        for busy in [false, true] {
            let stale = stale_reads(&pool, path, 1_000, busy, true).await;
            assert_eq!(stale, 0, "{path:?}, busy: {busy}, read with get_cached");
        }
    }
    let hits = pool.status().iter().filter_map(|s| s.near_cache_hit_ratio).sum::<f64>();
    assert!(hits > 0.0, "get_cached hit: {:?}", pool.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_path_is_read_back_through_the_near_cache() {
    let servers = support::start_servers(2);
    let pool = near_pool(&servers).await;
    for path in [Path::Pooled, Path::Mset, Path::Pipeline, Path::Transaction, Path::Multi] {
        for busy in [false, true] {
            let stale = stale_reads(&pool, path, 1_000, busy, false).await;
            assert_eq!(stale, 0, "{path:?}, busy: {busy}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_the_command_table_cannot_place_empty_the_near_cache() {
    let server = RedisServer::start();
    let pool = near_pool(std::slice::from_ref(&server)).await;
    for round in 1..=200u64 {
        let key = format!("blind:{}", round % 5);
        let _ = read(&pool, &key).await;
        // A script that declares no key, and FLUSHDB: the table names no key.
        let script = redis::cmd("EVAL")
            .arg("return redis.call('SET', ARGV[1], ARGV[2])")
            .arg(0)
            .arg(&key)
            .arg(round)
            .clone();
        let _: () = script.query_async(&mut pool.get(&key).await.unwrap()).await.unwrap();
        assert_eq!(read(&pool, &key).await, Some(round), "after EVAL, round {round}");
        let _: () =
            redis::cmd("FLUSHDB").query_async(&mut pool.get_any().await.unwrap()).await.unwrap();
        assert_eq!(read(&pool, &key).await, None, "after FLUSHDB, round {round}");
    }
}

/// `GET`s the server has answered so far.
fn gets(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut server.client()).unwrap();
    let line = info.lines().find_map(|l| l.strip_prefix("cmdstat_get:calls="));
    line.and_then(|l| l.split(',').next()?.parse().ok()).unwrap_or(0)
}

/// What another client does that changes a cached key without a write of
/// it: Redis announces flushes to tracking clients (in every mode), but not
/// `SWAPDB`, which the heartbeat sees. Either way a read started one
/// heartbeat interval (and a round trip) after it returns the new truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_another_client_swaps_or_flushes_is_read_within_a_heartbeat() {
    let server = RedisServer::start();
    let beat = Duration::from_millis(250);
    let pool = support::builder_for(std::slice::from_ref(&server))
        .near_cache(1_000)
        .heartbeat(beat)
        .build()
        .await
        .unwrap();
    let (mut db0, mut db1) = (server.client(), server.client());
    redis::cmd("SELECT").arg(1).query::<()>(&mut db1).unwrap();
    let events: [(&str, &[&str]); 6] = [
        ("SWAPDB", &["SWAPDB", "0", "1"]),
        ("SWAPDB", &["SWAPDB", "1", "0"]),
        ("FLUSHDB", &["FLUSHDB"]),
        ("FLUSHDB ASYNC", &["FLUSHDB", "ASYNC"]),
        ("FLUSHALL", &["FLUSHALL", "SYNC"]),
        ("FLUSHALL ASYNC", &["FLUSHALL", "ASYNC"]),
    ];
    for (round, (event, words)) in events.into_iter().enumerate() {
        let round = round as u64;
        let _: () = redis::Commands::set(&mut db0, "swapped", round).unwrap();
        let _: () = redis::Commands::set(&mut db1, "swapped", round + 100).unwrap();
        // Another client's write: seen once its invalidation came. Then
        // cached: a second read is answered from memory.
        let written = Instant::now();
        while pool.get_cached::<Option<u64>>("swapped").await.unwrap() != Some(round) {
            assert!(written.elapsed() < Duration::from_secs(1), "{event}: the write never seen");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let before = gets(&server);
        assert_eq!(read(&pool, "swapped").await, Some(round));
        assert_eq!(gets(&server), before, "{event}: the second read was a hit");
        let mut cmd = redis::cmd(words[0]);
        for word in &words[1..] {
            cmd.arg(*word);
        }
        cmd.query::<()>(&mut db0).unwrap();
        let truth: Option<u64> = redis::Commands::get(&mut db0, "swapped").unwrap();
        assert_ne!(truth, Some(round), "{event} changed what db 0 holds");
        let done = Instant::now();
        loop {
            let cached: Option<u64> = pool.get_cached("swapped").await.unwrap();
            if cached == truth && read(&pool, "swapped").await == truth {
                break;
            }
            let bound = beat * 2 + Duration::from_millis(750);
            assert!(
                done.elapsed() < bound,
                "{event}: {cached:?} read {bound:?} after, not {truth:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!("{event}: the new truth read {:?} after", done.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pool_sees_a_dead_node() {
    let mut servers = support::start_servers(3);
    let pool = support::pool_of(&servers, Duration::from_secs(30)).await;
    let victim = servers[1].name();
    let key = support::key_on(&pool, &victim, "idle");
    // One command, then nothing: the pool is idle from here on.
    let _: () = pool.get(&key).await.unwrap().set(&key, 1).await.unwrap();
    assert!(status_of(&pool, &victim).last_ok.is_some_and(|age| age < Duration::from_secs(1)));
    servers[1].kill();
    let killed = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || !status_of(&pool, &victim).up).await,
        "an idle pool still shows a killed node up after 3 s"
    );
    println!("boxed {:?} after the kill, with no traffic", killed.elapsed());
    // The first get of one of its keys goes to a stand-in at once.
    let started = Instant::now();
    let conn = pool.get(&key).await.unwrap();
    assert_ne!(conn.node(), victim);
    assert!(started.elapsed() < Duration::from_millis(100), "waited {:?}", started.elapsed());
    // The survivors answer their heartbeats: `last_ok` stays fresh.
    for survivor in [&servers[0], &servers[2]] {
        let status = status_of(&pool, &survivor.name());
        assert!(status.up);
        assert!(status.last_ok.is_some_and(|age| age < Duration::from_secs(3)), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_in_flight_across_another_clients_write_keeps_nothing_stale() {
    let server = RedisServer::start();
    let pool = near_pool(std::slice::from_ref(&server)).await;
    let keys: Arc<Vec<String>> = Arc::new((0..4).map(|i| format!("flight:{i}")).collect());
    let stop = Arc::new(AtomicBool::new(false));
    // Readers keep filling the keys while another client rewrites them, so
    // fills are in flight across the invalidations.
    let readers: Vec<_> = (0..4)
        .map(|task| {
            let (pool, keys, stop) = (pool.clone(), keys.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = task;
                while !stop.load(Ordering::Relaxed) {
                    let _ = read(&pool, &keys[n % keys.len()]).await;
                    n += 1;
                }
            })
        })
        .collect();
    let client = redis::Client::open(server.url()).unwrap();
    let mut other = client.get_multiplexed_async_connection().await.unwrap();
    let last = 2_000u64;
    for version in 1..=last {
        let key = &keys[version as usize % keys.len()];
        let _: () = other.set(key, version).await.unwrap();
    }
    let finals: Vec<u64> = (0..keys.len() as u64).map(|i| last - (last - i) % 4).collect();
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    // Once the last invalidations have come (well within a second), every
    // read is of the last write: no entry filled before it survived it.
    for (key, expected) in keys.iter().zip(&finals) {
        let direct: u64 = other.get(key).await.unwrap();
        assert_eq!(direct, *expected);
        let deadline = Instant::now() + Duration::from_secs(1);
        while read(&pool, key).await != Some(*expected) {
            assert!(Instant::now() < deadline, "{key} still served stale after a second");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for _ in 0..50 {
        for (key, expected) in keys.iter().zip(&finals) {
            assert_eq!(read(&pool, key).await, Some(*expected), "{key} served stale");
        }
    }
}

/// `PING`s the server has answered so far.
fn pings(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut server.client()).unwrap();
    let line = info.lines().find_map(|l| l.strip_prefix("cmdstat_ping:calls="));
    line.and_then(|l| l.split(',').next()?.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_hung_node_is_boxed_within_one_interval_plus_its_timeouts() {
    let servers = support::start_servers(2);
    let (beat, response, timeouts) = (Duration::from_secs(1), Duration::from_millis(200), 3);
    let pool = support::builder_for(&servers)
        .heartbeat(beat)
        .response_timeout(response)
        .timeouts_before_penalty(timeouts)
        .penalty_min_wait(Duration::from_secs(30))
        .penalty_max_wait(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let victim = servers[1].name();
    // Idle: the heartbeat PINGs it (no traffic during an interval).
    let before = pings(&servers[1]);
    assert!(a_ping_reaches(&servers[1], before).await, "no heartbeat reached the node");
    servers[1].pause();
    let paused = Instant::now();
    // The promise (README, Guarantees): one interval plus
    // `timeouts_before_penalty` × `response_timeout`; 1 s of slack for a
    // loaded machine (before, the misses came an interval apart: 3.7 s).
    let bound = beat + response * timeouts;
    let boxed = eventually(bound + Duration::from_secs(1), || !status_of(&pool, &victim).up).await;
    let took = paused.elapsed();
    servers[1].resume();
    assert!(boxed, "an idle hung node still up {took:?} after SIGSTOP (promised {bound:?})");
    println!("an idle hung node boxed {took:?} after SIGSTOP (bound {bound:?})");
    let status = status_of(&pool, &victim);
    assert_eq!(status.boxed_for, Some(fluster::FailureKind::Timeout), "{status:?}");
}

/// Whether a PING reaches `server` beyond the `before` it had, within 5 s.
async fn a_ping_reaches(server: &RedisServer, before: u64) -> bool {
    eventually(Duration::from_secs(5), || pings(server) > before).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_pings_an_idle_node_once_an_interval_and_a_busy_one_never() {
    let server = RedisServer::start();
    let beat = Duration::from_millis(100);
    let pool = ShardedPool::builder().node(&server.url()).heartbeat(beat).build().await.unwrap();
    // Busy: a command at least every few milliseconds, for ten intervals.
    let before = pings(&server);
    let busy = Instant::now();
    while busy.elapsed() < beat * 10 {
        let _: () = pool.get("busy").await.unwrap().set("busy", 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pings(&server) - before, 0, "a busy node was sent heartbeats");
    // Idle for ten intervals: about one each.
    let before = pings(&server);
    let idle = Instant::now();
    tokio::time::sleep(beat * 10).await;
    let (sent, elapsed) = (pings(&server) - before, idle.elapsed());
    println!("heartbeat {beat:?}: busy 0 PINGs in 10 intervals; idle {sent} in {elapsed:?}");
    let most = (elapsed.as_millis() / beat.as_millis()) as u64 + 1;
    assert!((most / 2..=most).contains(&sent), "{sent} heartbeats in {elapsed:?}");
    assert!(pool.status()[0].last_ok.is_some_and(|age| age < beat * 3), "{:?}", pool.status());
}

#[cfg(feature = "r2d2")]
#[test]
fn an_idle_sync_pool_sees_a_dead_node() {
    let mut servers = support::start_servers(2);
    let pool = support::sync_pool_of(&servers, Duration::from_secs(30));
    let victim = servers[1].name();
    let key = support::key_on(&pool, &victim, "idle");
    let _: () = redis::Commands::set(&mut pool.get(&key).unwrap(), &key, 1).unwrap();
    servers[1].kill();
    assert!(
        support::eventually_blocking(Duration::from_secs(3), || !status_of(&pool, &victim).up),
        "an idle sync pool still shows a killed node up after 3 s"
    );
    assert_ne!(pool.get(&key).unwrap().node(), victim);
}
