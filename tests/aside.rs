//! Cache-aside with leases (`ShardedPool::aside`) against real servers:
//! one fill for many concurrent readers (in separate processes: this test
//! binary starts copies of itself, the ignored test `process`), a delete
//! that voids a slow fill, a filler that dies holding the lease, and the
//! stand-in holding lease and value through failover.

mod support;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fluster::{Error, ShardedPool};
use redis::Value;
use support::process::{self, Process};
use support::{RedisServer, builder_for, eventually, key_on, start_servers, status_of};
use tokio::sync::Notify;

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
/// lease and the value, each capped by `stand_in_ttl` like any stand-in
/// write (the lease's 60 s too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stand_in_holds_the_lease_and_a_capped_value() {
    let mut servers = start_servers(2);
    let pool = builder_for(&servers)
        .stand_in_ttl(Duration::from_secs(5))
        .lease(Duration::from_secs(60))
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
    let other = key_on(&pool, &servers[0].name(), "leased");
    let held = hold(&pool, &other).await;
    let pttl: i64 = redis::cmd("PTTL").arg(&other).query(&mut servers[1].client()).unwrap();
    assert!(pttl > 0 && pttl <= 5_000, "the stand-in's lease is capped: {pttl}");
    held.release.notify_one();
    assert_eq!(held.call.await.unwrap().unwrap(), "filled");
}

/// With a near cache: still one fill, and every caller gets the value
/// (none takes a cached miss for the end of the lease).
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

/// A fill of `key` held open until its `release` is notified.
struct Held {
    call: tokio::task::JoinHandle<Result<String, Error>>,
    release: Arc<Notify>,
}

/// Starts an `aside` of `key` whose fill holds the lease until released;
/// returns once the fill runs.
async fn hold(pool: &ShardedPool, key: &str) -> Held {
    let (release, started) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
    let (pool, key, open, runs) = (pool.clone(), key.to_owned(), release.clone(), started.clone());
    let call = tokio::spawn(async move {
        let fill = || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            open.notified().await;
            Ok::<_, io::Error>("filled".to_owned())
        };
        pool.aside(&key, TTL, fill).await
    });
    let running = || started.load(Ordering::SeqCst) == 1;
    assert!(eventually(Duration::from_secs(5), running).await, "the fill never started");
    Held { call, release }
}

const TTL: Duration = Duration::from_secs(3600);

/// The next caller of `key` takes the lease and fills within a second.
async fn fills_at_once(pool: &ShardedPool, key: &str) {
    let fill = || async { Ok::<_, io::Error>("next".to_owned()) };
    let next = tokio::time::timeout(Duration::from_secs(1), pool.aside(key, TTL, fill)).await;
    assert_eq!(next.expect("the lease was not given back").unwrap(), "next");
}

/// What a client outside fluster reads at `key`.
fn raw(server: &RedisServer, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(&mut server.client()).unwrap()
}

/// Every read of `key` through `pool` sees a miss: each value read, on
/// its own, in an array and inside `EXEC`'s.
async fn every_read_misses(pool: &ShardedPool, key: &str) {
    let get = redis::cmd("GET").arg(key).clone();
    let v: Option<String> = get.query_async(&mut pool.get(key).await.unwrap()).await.unwrap();
    assert_eq!(v, None, "get + GET");
    let v: Option<String> =
        get.query_async(&mut pool.get_shared(key).await.unwrap()).await.unwrap();
    assert_eq!(v, None, "get_shared + GET");
    for round in ["a miss", "a hit"] {
        let v: Option<String> = pool.get_cached(key).await.unwrap();
        assert_eq!(v, None, "get_cached, {round}");
    }
    let v: Result<Option<i64>, Error> = pool.get_cached(key).await;
    assert!(matches!(v, Ok(None)), "get_cached::<Option<i64>>: {v:?}");
    let v: Vec<Option<String>> = pool.mget(&[key]).await.unwrap();
    assert_eq!(v, [None], "mget");
    let v = pool.pipeline().add(key, get.clone()).query_async().await.unwrap();
    assert!(matches!(v[..], [Ok(Value::Nil)]), "pipeline: {v:?}");
    let mut conn = pool.get(key).await.unwrap();
    let v: (Option<String>,) =
        redis::pipe().atomic().add_command(get).query_async(&mut conn).await.unwrap();
    assert_eq!(v, (None,), "MULTI, GET, EXEC");
}

/// While a fill runs, every read through fluster sees a miss, with or
/// without a near cache and in the sync flavour, never the lease; a client
/// outside fluster sees the lease as it is. The lease's promises hold: one
/// fill, and its value readable by all once stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_fill_runs_every_read_through_fluster_misses() {
    let servers = start_servers(1);
    let near = builder_for(&servers).near_cache(1_000).build().await.unwrap();
    let plain = builder_for(&servers).build().await.unwrap();
    let held = hold(&near, "user:7").await;
    let lease = raw(&servers[0], "user:7").unwrap();
    assert!(lease.starts_with(b"\0fluster:lease:"), "outside fluster: {lease:?}");
    // Not a value read: the key as it is.
    let mut conn = plain.get("user:7").await.unwrap();
    let (exists, len): (bool, usize) =
        redis::pipe().exists("user:7").strlen("user:7").query_async(&mut conn).await.unwrap();
    assert!(exists && len == lease.len(), "EXISTS {exists}, STRLEN {len}");
    every_read_misses(&near, "user:7").await;
    every_read_misses(&plain, "user:7").await;
    #[cfg(feature = "r2d2")]
    {
        let url = servers[0].url();
        let sync = tokio::task::spawn_blocking(move || {
            let pool = fluster::sync::ShardedPool::builder().node(&url).build().unwrap();
            let mut conn = pool.get("user:7").unwrap();
            let one: Option<String> = redis::cmd("GET").arg("user:7").query(&mut conn).unwrap();
            let piped: (Option<String>,) = redis::pipe().get("user:7").query(&mut conn).unwrap();
            (one, piped)
        });
        assert_eq!(sync.await.unwrap(), (None, (None,)), "the sync flavour");
    }
    held.release.notify_one();
    assert_eq!(held.call.await.unwrap().unwrap(), "filled");
    for pool in [&near, &plain] {
        let v: Option<String> = pool.get_cached("user:7").await.unwrap();
        assert_eq!(v.as_deref(), Some("filled"));
    }
}

/// A `V` that is not one Redis argument could not be read back as it was
/// (`[7, 1500]` was stored as "7", its TTL 1,500 ms): it is refused with
/// an error naming the problem, nothing is stored, and the lease is given
/// back. One argument is stored as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_is_not_one_redis_argument_is_refused() {
    let servers = start_servers(1);
    let pool = builder_for(&servers).lease(Duration::from_secs(5)).build().await.unwrap();
    let two = pool.aside("v:1", TTL, || async { Ok::<_, io::Error>(vec![7_i64, 1500]) }).await;
    refused(&servers[0], &pool, "v:1", two.map(drop), "writes 2 Redis arguments").await;
    let strings = || async { Ok::<_, io::Error>(vec!["a".to_owned(), "b".to_owned()]) };
    let strings = pool.aside("v:2", TTL, strings).await;
    refused(&servers[0], &pool, "v:2", strings.map(drop), "writes 2 Redis arguments").await;
    let none = pool.aside("v:3", TTL, || async { Ok::<Option<String>, io::Error>(None) }).await;
    refused(&servers[0], &pool, "v:3", none.map(drop), "writes 0 Redis arguments").await;
    for _ in 0..2 {
        let one: Vec<i64> =
            pool.aside("v:4", TTL, || async { Ok::<_, io::Error>(vec![7]) }).await.unwrap();
        assert_eq!(one, [7]);
    }
}

/// `outcome` is an error that says `says`; nothing is stored at `key`,
/// and its lease was given back.
async fn refused(
    server: &RedisServer,
    pool: &ShardedPool,
    key: &str,
    outcome: Result<(), Error>,
    says: &str,
) {
    let e = outcome.expect_err("the value was taken");
    assert!(e.to_string().contains(says), "{e}");
    assert_eq!(raw(server, key), None, "nothing is stored");
    fills_at_once(pool, key).await;
}

/// A value that begins with the lease's mark would read as a lease, and
/// its callers wait forever: `aside` refuses it, and gives the lease back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_begins_with_the_lease_mark_is_refused() {
    let servers = start_servers(1);
    let pool = builder_for(&servers).lease(Duration::from_secs(5)).build().await.unwrap();
    let marked = || async { Ok::<_, io::Error>(b"\0fluster:lease:mine".to_vec()) };
    let outcome = pool.aside("m:1", TTL, marked).await;
    refused(&servers[0], &pool, "m:1", outcome.map(drop), "begins with the lease mark").await;
}

/// A key a client outside fluster set to a lease-looking value, with no
/// TTL or one longer than a lease, holds no lease: `aside` fills over it
/// within a lease plus one fill, rather than waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_that_is_no_lease_is_filled_over() {
    let servers = start_servers(1);
    let pool = pools(&servers, 1).await.remove(0);
    for (key, px) in [("m:2", None), ("m:3", Some(60_000))] {
        let mut set = redis::cmd("SET");
        set.arg(key).arg(b"\0fluster:lease:from a client");
        if let Some(px) = px {
            set.arg("PX").arg(px);
        }
        let _: () = set.query(&mut servers[0].client()).unwrap();
        let fill = || async { Ok::<_, io::Error>("filled".to_owned()) };
        let filled = tokio::time::timeout(LEASE * 2, pool.aside(key, TTL, fill)).await;
        assert_eq!(filled.expect("waited on a mark that is no lease").unwrap(), "filled");
        assert_eq!(raw(&servers[0], key).as_deref(), Some(&b"filled"[..]));
    }
}

/// A caller that stops waiting (its future dropped while the fill runs)
/// or a fill that panics gives the lease back at once: the next caller's
/// fill starts within a second, not after the lease's 5 s. The panic
/// still reaches the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_panicking_fill_gives_its_lease_back() {
    let servers = start_servers(1);
    let pool = builder_for(&servers).lease(Duration::from_secs(5)).build().await.unwrap();
    let held = hold(&pool, "c:1").await;
    held.call.abort();
    assert!(held.call.await.unwrap_err().is_cancelled());
    fills_at_once(&pool, "c:1").await;

    fn boom() -> Result<String, io::Error> {
        panic!("the fill panicked")
    }
    let panicking = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.aside("c:2", TTL, || async { boom() }).await })
    };
    assert!(panicking.await.unwrap_err().is_panic(), "the panic reached the caller");
    fills_at_once(&pool, "c:2").await;
}

/// A fill may return the errors apps have (a boxed error, an
/// `anyhow::Error`): its caller gets it as `Error::Fill`, with its source,
/// and the lease is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_returns_the_errors_apps_have() {
    let servers = start_servers(1);
    let pool = builder_for(&servers).lease(Duration::from_secs(5)).build().await.unwrap();
    type Boxed = Box<dyn std::error::Error + Send + Sync>;
    let boxed = || async { Err::<String, Boxed>(Box::new(io::Error::other("database down"))) };
    match pool.aside("e:1", TTL, boxed).await {
        Err(Error::Fill(e)) => {
            assert_eq!(e.to_string(), "database down");
            assert!(e.downcast_ref::<io::Error>().is_some(), "the error itself is kept");
        }
        other => panic!("expected the fill's error, got {other:?}"),
    }
    fills_at_once(&pool, "e:1").await;
    let anyhow = || async { Err::<String, _>(anyhow::anyhow!("database down").context("user 42")) };
    let e = pool.aside("e:2", TTL, anyhow).await.unwrap_err();
    assert!(matches!(e, Error::Fill(_)), "{e:?}");
    let source = std::error::Error::source(&e).expect("the fill's error is the source");
    assert_eq!(source.to_string(), "user 42");
    assert_eq!(source.source().map(|s| s.to_string()).as_deref(), Some("database down"));
    fills_at_once(&pool, "e:2").await;
}

/// A command `aside` sends that fails names its node, and keeps `redis`'s
/// own error: here the node stops answering (`SIGSTOP`) while the fill
/// runs, so the store times out in flight. The error says which node, and
/// `is_timeout()` still answers true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_command_names_its_node_and_keeps_its_kind() {
    let servers = start_servers(1);
    let pool = builder_for(&servers)
        .response_timeout(Duration::from_millis(200))
        .heartbeat(Duration::ZERO)
        .build()
        .await
        .unwrap();
    let fill = || async {
        servers[0].pause();
        Ok::<_, io::Error>("stored in flight".to_owned())
    };
    let result = pool.aside("n:1", TTL, fill).await;
    servers[0].resume();
    let e = result.unwrap_err();
    let name = servers[0].name();
    assert_eq!(e.to_string(), format!("node `{name}`: timed out"), "{e:?}");
    assert_eq!(e.node(), Some(name.as_str()));
    match &e {
        Error::Command { node, source } => {
            assert_eq!(*node, name);
            assert!(source.is_timeout(), "{source:?}");
        }
        other => panic!("expected a command's error, got {other:?}"),
    }
    assert!(e.redis_error().is_some_and(|r| r.is_timeout()), "{e:?}");
    let source = std::error::Error::source(&e).expect("the redis error is the source");
    assert!(source.downcast_ref::<redis::RedisError>().is_some_and(|r| r.is_timeout()));
}

// Early refresh (`aside_early`).

/// What a client outside fluster reads in `key`'s companion (its last
/// fill's time, and the refresh lease while one is held).
fn companion(server: &RedisServer, key: &str) -> Option<String> {
    let name = [&b"\0fluster:delta:"[..], key.as_bytes()].concat();
    redis::cmd("GET").arg(name).query(&mut server.client()).unwrap()
}

/// A key of another type where `aside_early` keeps a key's companion (a
/// user's data under that name) is no fill time: a read is a plain hit,
/// never a `WRONGTYPE` error, with or without a near cache, and a fill
/// leaves the user's data as it was.
#[tokio::test]
async fn a_companion_of_another_type_is_a_plain_hit_and_kept() {
    let servers = start_servers(1);
    for near in [0, 1_000] {
        let pool = builder_for(&servers).early_refresh(1e9).near_cache(near).build().await.unwrap();
        let key = format!("typed:{near}");
        let name = [&b"\0fluster:delta:"[..], key.as_bytes()].concat();
        let mut client = servers[0].client();
        let _: i64 = redis::cmd("HSET").arg(&name).arg("f").arg("user").query(&mut client).unwrap();
        let filled = || async { Ok::<_, io::Error>("filled".to_owned()) };
        let v: String = pool.aside_early(&key, TTL, filled).await.unwrap();
        assert_eq!(v, "filled", "near cache {near}: the miss");
        let again = || async { Ok::<_, io::Error>("again".to_owned()) };
        let v: String = pool.aside_early(&key, TTL, again).await.unwrap();
        assert_eq!(v, "filled", "near cache {near}: the hit");
        let kind: String = redis::cmd("TYPE").arg(&name).query(&mut client).unwrap();
        let field: Option<String> =
            redis::cmd("HGET").arg(&name).arg("f").query(&mut client).unwrap();
        assert_eq!((kind.as_str(), field.as_deref()), ("hash", Some("user")), "near cache {near}");
    }
}

/// Fills started, with when, and a value that tells them apart.
#[derive(Clone, Default)]
struct Fills(Arc<std::sync::Mutex<Vec<Instant>>>);

impl Fills {
    /// A fill that takes `took`, counted, whose value is `v-<n>`.
    fn fill(self, took: Duration) -> impl Future<Output = io::Result<String>> + Send + 'static {
        let fills = self.0.clone();
        async move {
            let n = {
                let mut fills = fills.lock().unwrap();
                fills.push(Instant::now());
                fills.len()
            };
            tokio::time::sleep(took).await;
            Ok(format!("v-{n}"))
        }
    }

    fn starts(&self) -> Vec<Instant> {
        self.0.lock().unwrap().clone()
    }
}

/// `tasks` tasks of each pool call `aside_early` on `key` in a loop for
/// `run`, each fill taking `fill`: the calls that took at least `fill`
/// (a caller that waited for a fill), and the calls made.
async fn hot_key(
    pools: &[ShardedPool],
    key: &str,
    ttl: Duration,
    fill: Duration,
    run: Duration,
    fills: &Fills,
) -> (usize, usize) {
    let end = Instant::now() + run;
    let mut tasks = Vec::new();
    for pool in pools {
        for _ in 0..50 {
            let (pool, key, fills) = (pool.clone(), key.to_owned(), fills.clone());
            tasks.push(tokio::spawn(async move {
                let (mut waited, mut calls) = (0, 0);
                while Instant::now() < end {
                    let started = Instant::now();
                    let fills = fills.clone();
                    let v: String =
                        pool.aside_early(&key, ttl, move || fills.fill(fill)).await.unwrap();
                    assert!(v.starts_with("v-"), "{v}");
                    waited += usize::from(started.elapsed() >= fill);
                    calls += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (waited, calls)
            }));
        }
    }
    let mut total = (0, 0);
    for task in tasks {
        let (waited, calls) = task.await.unwrap();
        total = (total.0 + waited, total.1 + calls);
    }
    total
}

/// The misses `aside` counted on `node` since last asked (its
/// `fluster_aside_total` outcomes other than a background refresh's): the
/// library's own word for "a caller waited for a fill", which no loaded
/// machine's slow scheduling can fake. The recorder is this binary's; only
/// this test reads (and so drains) it.
fn misses(node: &str) -> u64 {
    static SNAPSHOTTER: std::sync::OnceLock<metrics_util::debugging::Snapshotter> =
        std::sync::OnceLock::new();
    let snapshotter = SNAPSHOTTER.get_or_init(|| {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the first recorder of this test binary");
        snapshotter
    });
    let mut misses = 0;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let label = |name: &str| key.labels().find(|l| l.key() == name).map(|l| l.value());
        let miss = matches!(label("outcome"), Some("filled" | "waited" | "took_over" | "voided"));
        if key.name() == fluster::metrics::ASIDE_TOTAL && label("node") == Some(node) && miss {
            let metrics_util::debugging::DebugValue::Counter(n) = value else { continue };
            misses += n;
        }
    }
    misses
}

/// Under steady load on a hot key (100 callers, a 3 s TTL, a 100 ms fill,
/// 6 s), with and without a near cache: the key is refilled before it
/// expires, so no caller misses (none waits for a fill), and there is at most one fill
/// per expiry window (no two fills start within half a TTL: under a load
/// of `r` reads a second XFetch refills about `δ·ln(r·δ)` early, here
/// under a second). With `early_refresh(0.0)` the same load waits at each
/// expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refresh_refills_a_hot_key_before_it_expires() {
    let servers = start_servers(1);
    let node = servers[0].name();
    misses(&node); // the recorder in place before the pools register their counters
    let (ttl, fill, run) =
        (Duration::from_secs(3), Duration::from_millis(100), Duration::from_secs(6));
    for near in [0, 1_000] {
        let mut pools = Vec::new();
        for _ in 0..2 {
            pools.push(builder_for(&servers).near_cache(near).build().await.unwrap());
        }
        let (key, fills) = (format!("early:{near}"), Fills::default());
        // The first fill, a miss, measures δ.
        let first = fills.clone();
        let _: String = pools[0].aside_early(&key, ttl, move || first.fill(fill)).await.unwrap();
        assert_eq!(misses(&node), 1, "near cache {near}: the first call fills");
        let (slow, calls) = hot_key(&pools, &key, ttl, fill, run, &fills).await;
        let starts = fills.starts();
        let missed = misses(&node);
        assert_eq!(missed, 0, "near cache {near}: {missed} of {calls} calls missed ({slow} slow)");
        assert!(starts.len() >= 3, "near cache {near}: refilled {} times in 6 s", starts.len());
        for pair in starts.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= ttl / 2, "near cache {near}: two fills {gap:?} apart: {starts:?}");
        }
    }
    // The control: without early refresh, callers wait at each expiry.
    let off: Vec<ShardedPool> =
        vec![builder_for(&servers).early_refresh(0.0).build().await.unwrap()];
    let fills = Fills::default();
    let ttl = Duration::from_secs(1);
    let (waited, _) =
        hot_key(&off, "early:off", ttl, fill, Duration::from_millis(2_500), &fills).await;
    assert!(waited >= 50, "without early refresh, callers wait at expiries: {waited}");
}

/// A pool whose every hit of a key with a known fill time refills (β so
/// large that the draw always says so), its lease 1 s.
async fn eager(servers: &[RedisServer]) -> ShardedPool {
    builder_for(servers).early_refresh(1e9).lease(LEASE).build().await.unwrap()
}

/// Fills `key` with "first" (a miss, which records its time), then starts
/// a refill whose fill waits for `release` and then returns `outcome`;
/// returns once that fill runs. The caller got "first" at once.
async fn refill_held(
    pool: &ShardedPool,
    key: &str,
    outcome: fn() -> io::Result<String>,
) -> (Arc<Notify>, Arc<AtomicUsize>) {
    let first = || async { Ok::<_, io::Error>("first".to_owned()) };
    let _: String = pool.aside_early(key, TTL, first).await.unwrap();
    let (release, runs) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
    let (open, ran) = (release.clone(), runs.clone());
    let fill = move || async move {
        ran.fetch_add(1, Ordering::SeqCst);
        open.notified().await;
        outcome()
    };
    let started = Instant::now();
    let v: String = pool.aside_early(key, TTL, fill).await.unwrap();
    assert_eq!(v, "first", "the caller that refills gets the current value");
    assert!(started.elapsed() < Duration::from_millis(200), "it did not wait");
    assert!(eventually(Duration::from_secs(2), || runs.load(Ordering::SeqCst) == 1).await);
    (release, runs)
}

/// Whether `key`'s refresh lease is held (its companion holds a token).
fn leased(server: &RedisServer, key: &str) -> bool {
    companion(server, key).is_some_and(|c| c.contains(' '))
}

/// A write by another client (a `SET`, a `DEL`) while a refill runs
/// stands: the refill stores nothing. While it runs, readers get the
/// current value, never a miss or the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_a_refill_is_not_overwritten() {
    let servers = start_servers(1);
    let pool = eager(&servers).await;
    let refilled = || Ok("refilled".to_owned());
    for (key, write) in [("w:set", Some("written")), ("w:del", None)] {
        let (release, _) = refill_held(&pool, key, refilled).await;
        assert!(leased(&servers[0], key), "the refill holds the refresh lease");
        let v: Option<String> = pool.get_cached(key).await.unwrap();
        assert_eq!(v.as_deref(), Some("first"), "readers see the current value");
        let mut client = servers[0].client();
        match write {
            Some(w) => redis::cmd("SET").arg(key).arg(w).query::<()>(&mut client).unwrap(),
            None => redis::cmd("DEL").arg(key).query::<()>(&mut client).unwrap(),
        }
        release.notify_one();
        let done = || !leased(&servers[0], key);
        assert!(eventually(Duration::from_secs(2), done).await, "the lease was not given back");
        let raw = raw(&servers[0], key).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(raw.as_deref(), write, "the write stands");
    }
    // Without a write, the refill stores.
    let (release, _) = refill_held(&pool, "w:none", refilled).await;
    release.notify_one();
    let stored = || raw(&servers[0], "w:none").as_deref() == Some(&b"refilled"[..]);
    assert!(eventually(Duration::from_secs(2), stored).await, "the refill stored nothing");
}

/// A refill whose fill fails or panics leaves the key's value readable
/// and gives the refresh lease back: the next hit tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refill_that_fails_or_panics_keeps_the_value() {
    let servers = start_servers(1);
    let pool = eager(&servers).await;
    fn fails() -> io::Result<String> {
        Err(io::Error::other("database down"))
    }
    fn panics() -> io::Result<String> {
        panic!("the refill panicked")
    }
    for (key, outcome) in [("f:err", fails as fn() -> _), ("f:panic", panics)] {
        let (release, runs) = refill_held(&pool, key, outcome).await;
        release.notify_one();
        let done = || !leased(&servers[0], key);
        assert!(eventually(Duration::from_secs(2), done).await, "the lease was not given back");
        assert_eq!(raw(&servers[0], key).as_deref(), Some(&b"first"[..]), "the value stays");
        let (again, tried) = (runs.clone(), Arc::new(AtomicUsize::new(0)));
        let counted = tried.clone();
        let fill = move || async move {
            again.fetch_add(1, Ordering::SeqCst);
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<_, io::Error>("second".to_owned())
        };
        let v: String = pool.aside_early(key, TTL, fill).await.unwrap();
        assert_eq!(v, "first");
        let stored = || raw(&servers[0], key).as_deref() == Some(&b"second"[..]);
        assert!(eventually(Duration::from_secs(2), stored).await, "the next hit did not refill");
        assert_eq!(tried.load(Ordering::SeqCst), 1);
    }
}

/// The refill is the pool's: a caller dropped at once does not stop it,
/// and a fill that never ends is dropped when the lease ends, the lease
/// given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refill_outlives_its_caller_but_not_its_lease() {
    let servers = start_servers(1);
    let pool = eager(&servers).await;
    let first = || async { Ok::<_, io::Error>("first".to_owned()) };
    let _: String = pool.aside_early("c:early", TTL, first).await.unwrap();
    let (runs, ran) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let counted = runs.clone();
    let slow = move || async move {
        counted.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok::<_, io::Error>("refilled".to_owned())
    };
    // The caller goes on to something that never ends, and is dropped
    // while its refill runs.
    let (pool2, returned) = (pool.clone(), ran.clone());
    let call = tokio::spawn(async move {
        let v: String = pool2.aside_early("c:early", TTL, slow).await.unwrap();
        returned.fetch_add(usize::from(v == "first"), Ordering::SeqCst);
        std::future::pending::<()>().await
    });
    assert!(eventually(Duration::from_secs(2), || runs.load(Ordering::SeqCst) == 1).await);
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the caller got the current value");
    assert_eq!(raw(&servers[0], "c:early").as_deref(), Some(&b"first"[..]), "not yet refilled");
    let stored = || raw(&servers[0], "c:early").as_deref() == Some(&b"refilled"[..]);
    assert!(eventually(Duration::from_secs(2), stored).await, "the refill stopped with its caller");

    struct Dropped(Arc<AtomicUsize>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let guard = Dropped(dropped.clone());
    let forever = move || async move {
        let _guard = guard;
        std::future::pending::<io::Result<String>>().await
    };
    let v: String = pool.aside_early("c:early", TTL, forever).await.unwrap();
    assert_eq!(v, "refilled");
    let started = Instant::now();
    assert!(eventually(Duration::from_secs(3), || dropped.load(Ordering::SeqCst) == 1).await);
    assert!(started.elapsed() >= LEASE - Duration::from_millis(100), "dropped before its lease");
    assert!(eventually(Duration::from_secs(1), || !leased(&servers[0], "c:early")).await);
    assert_eq!(raw(&servers[0], "c:early").as_deref(), Some(&b"refilled"[..]));
}
