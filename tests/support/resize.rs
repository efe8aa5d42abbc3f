//! What the tests of a resize share (`warm.rs`, `drain.rs`, `sweep.rs`):
//! four named servers and pools over them, keys that move to an added
//! node `e`, and reads straight on a server, past the pool.

use std::time::Duration;

use fluster::ShardedPool;
use redis::AsyncCommands;

use super::proxy::Proxy;
use super::{RedisServer, eventually, start_servers};

/// The names of the four nodes a test starts with (`e` is the one added).
pub const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// A pool over four named servers, warmed for `window`.
pub async fn pool_of(servers: &[RedisServer], window: Duration) -> ShardedPool {
    // Long enough for a reply the proxy holds.
    let builder =
        ShardedPool::builder().resize_warmup(window).response_timeout(Duration::from_secs(10));
    let builder = servers.iter().zip(NAMES).fold(builder, |b, (s, n)| b.named_node(n, &s.url()));
    builder.build().await.unwrap()
}

/// The server named `name`.
pub fn server<'s>(servers: &'s [RedisServer], name: &str) -> &'s RedisServer {
    &servers[NAMES.iter().position(|n| *n == name).unwrap()]
}

/// `n` keys written with a 60 s TTL before `e` joins whose home is then
/// `e`, each with its old home.
pub async fn moved_keys(pool: &ShardedPool, n: usize) -> Vec<(String, String)> {
    let after = fluster::route::Router::new(NAMES.iter().chain(&["e"]).map(|n| (*n, 1.0)));
    let mut keys = Vec::new();
    for i in 0.. {
        let key = format!("resize:{i}");
        if after.home(key.as_bytes()).map(|i| &**after.name(i)) == Some("e") {
            let old = pool.home_node_for(&key).unwrap().to_string();
            let mut conn = pool.get(&key).await.unwrap();
            let _: () = conn.set_ex(&key, format!("v1-{i}"), 60).await.unwrap();
            keys.push((key, old));
            if keys.len() == n {
                break;
            }
        }
    }
    keys
}

/// A warm add, set up: four servers, a pool over them warmed for
/// `window`, `n` keys that move to `e` ([`moved_keys`]), then `e` added
/// on a server of its own. A server is killed when dropped: bind every
/// field for the whole test (`new: _new`, never `..` or `_`).
pub struct Warm {
    /// The four servers, named as [`NAMES`].
    pub servers: Vec<RedisServer>,
    /// The pool, `e` added.
    pub pool: ShardedPool,
    /// The keys, each with its old home.
    pub keys: Vec<(String, String)>,
    /// `e`'s server.
    pub new: RedisServer,
}

/// [`Warm`]: `n` moved keys, `e` added warm for `window`.
pub async fn warm_added(window: Duration, n: usize) -> Warm {
    let servers = start_servers(4);
    let pool = pool_of(&servers, window).await;
    let keys = moved_keys(&pool, n).await;
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).await.unwrap();
    Warm { servers, pool, keys, new }
}

/// Whether the node `name` is boxed once it died: `key`, one of its keys,
/// read up to 100 times, 10 ms apart, until the pool has noticed.
pub async fn boxed_by_traffic(pool: &ShardedPool, name: &str, key: &str) -> bool {
    let boxed = || !super::status_of(pool, name).up;
    for _ in 0..100 {
        if boxed() {
            break;
        }
        if let Ok(mut conn) = pool.get(key).await {
            let _: Result<Option<String>, _> = conn.get(key).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    boxed()
}

/// What `key` holds on `server`, read straight there.
pub fn raw_get(server: &RedisServer, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(&mut server.client()).unwrap()
}

/// `key`'s TTL on `server` in milliseconds, read straight there.
pub fn pttl(server: &RedisServer, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(&mut server.client()).unwrap()
}

/// A pool over four named servers for a drain.
pub async fn drain_pool(servers: &[RedisServer]) -> ShardedPool {
    let builder = ShardedPool::builder();
    let builder = servers.iter().zip(NAMES).fold(builder, |b, (s, n)| b.named_node(n, &s.url()));
    builder.build().await.unwrap()
}

/// `SET key value EX 60` straight on `server` (not through the pool,
/// whose routing a starved machine may have moved to a stand-in).
pub fn raw_set(server: &RedisServer, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("EX")
        .arg(60)
        .query::<()>(&mut server.client())
        .unwrap();
}

/// Whether the sweep of the node `name` added is over (or never ran).
pub fn sweep_over(pool: &ShardedPool, name: &str) -> bool {
    super::status_of(pool, name).sweep_keys_left.is_none()
}

/// The calls of `command` `server` has run so far (`INFO commandstats`).
pub fn calls_on(server: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut server.client()).unwrap();
    let prefix = format!("cmdstat_{command}:");
    let line = info.lines().find(|l| l.starts_with(&prefix));
    let calls = line.and_then(|l| l.split(['=', ',']).nth(1)?.parse().ok());
    calls.unwrap_or(0)
}

/// The adversary's finding (`drain.rs` and `warm.rs` each run it): a
/// write whose future is dropped while its
/// move is out (the old home stalled: a proxy holds its `MIGRATE`) left no
/// doubt behind: a later write of the key was acknowledged, and the
/// queued move landed the old value over it. Its key is in doubt now,
/// past the drain's end (`drain`) or the window's: a later write is
/// refused until the old home answers.
pub async fn a_write_dropped_while_its_move_is_out(drain: bool) {
    let servers = start_servers(4);
    let proxies: Vec<Proxy> = servers.iter().map(|s| Proxy::start(s.port())).collect();
    let builder = ShardedPool::builder()
        .resize_warmup(Duration::from_millis(if drain { 0 } else { 1_500 }))
        .response_timeout(Duration::from_secs(1));
    let builder = proxies.iter().zip(NAMES).fold(builder, |b, (p, n)| b.named_node(n, &p.url()));
    let pool = builder.build().await.unwrap();
    let (key, old) = match drain {
        true => (super::key_on(&pool, "d", "dropped"), "d".to_owned()),
        false => moved_keys(&pool, 1).await.remove(0),
    };
    let _: () = pool.get(&key).await.unwrap().set_ex(&key, "v1", 60).await.unwrap();
    let new = RedisServer::start();
    let opened = std::time::Instant::now();
    let draining = match drain {
        true => {
            let draining = pool.clone();
            // A long first pause: no batch runs while the test writes.
            let drain = tokio::spawn(async move {
                draining.drain_node_paced("d", 100, Duration::from_secs(30)).await
            });
            let switched = || pool.node_for(&key).is_some_and(|n| n != "d");
            assert!(eventually(Duration::from_secs(5), switched).await, "routing switched");
            Some(drain)
        }
        false => {
            pool.add_node("e", &new.url()).await.unwrap();
            None
        }
    };
    let proxy = &proxies[NAMES.iter().position(|n| *n == old).unwrap()];
    let migrates = calls_on(server(&servers, &old), "migrate");
    proxy.hold(b"MIGRATE", Duration::from_millis(2_000));
    let set = |value: &'static str| {
        let (pool, key) = (pool.clone(), key.clone());
        async move {
            pool.get(&key).await?.set::<_, _, ()>(&key, value).await.map_err(fluster::Error::from)
        }
    };
    let dropped = tokio::time::timeout(Duration::from_millis(200), set("v2")).await;
    assert!(dropped.is_err(), "the write was dropped while its move was out");
    // From now on the old home answers nothing (a stalled server): the
    // held move still reaches it.
    proxy.silence();
    if let Some(drain) = draining {
        drain.abort();
        let _ = drain.await;
    } else {
        tokio::time::sleep(Duration::from_millis(1_550).saturating_sub(opened.elapsed())).await;
    }
    let refused = set("v3").await;
    assert!(refused.is_err(), "a later write while the dropped one's move is in doubt");
    let ran = || calls_on(server(&servers, &old), "migrate") > migrates;
    assert!(eventually(Duration::from_secs(10), ran).await, "the held MIGRATE ran");
    proxy.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut last = set("v3").await;
    while last.is_err() && std::time::Instant::now() < deadline {
        // A client's retry pause (a refusal returns at once).
        tokio::time::sleep(Duration::from_millis(20)).await;
        last = set("v3").await;
    }
    assert!(last.is_ok(), "a retry once {old} answers: {last:?}");
    let home = pool.node_for(&key).unwrap().to_string();
    let on = if home == "e" { &new } else { server(&servers, &home) };
    assert_eq!(raw_get(on, &key).as_deref(), Some(&b"v3"[..]), "the old value came back");
}
