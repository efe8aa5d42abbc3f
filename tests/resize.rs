//! A node added warm (`resize_warmup`): a moved key's miss on its new home
//! is read from its old home and copied with the TTL it has left; a write
//! deletes the old copy first, and a read-through never brings back a value
//! a write replaced or deleted meanwhile.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use fluster::{ShardedPool, SweepEnd};
use redis::AsyncCommands;
use support::proxy::Proxy;
use support::{RedisServer, eventually, start_servers};

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// Unique to the copy's script (`node/warm.rs`): what the proxy holds.
const COPY_BYTES: &[u8] = b"ARGV[4] == '-1'";

/// A pool over four named servers, warmed for `window`.
async fn pool_of(servers: &[RedisServer], window: Duration) -> ShardedPool {
    // Long enough for a reply the proxy holds.
    let builder =
        ShardedPool::builder().resize_warmup(window).response_timeout(Duration::from_secs(10));
    let builder = servers.iter().zip(NAMES).fold(builder, |b, (s, n)| b.named_node(n, &s.url()));
    builder.build().await.unwrap()
}

/// The server named `name`.
fn server<'s>(servers: &'s [RedisServer], name: &str) -> &'s RedisServer {
    &servers[NAMES.iter().position(|n| *n == name).unwrap()]
}

/// `n` keys written with a 60 s TTL before `e` joins whose home is then
/// `e`, each with its old home.
async fn moved_keys(pool: &ShardedPool, n: usize) -> Vec<(String, String)> {
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

fn raw_get(server: &RedisServer, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(&mut server.client()).unwrap()
}

fn pttl(server: &RedisServer, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(&mut server.client()).unwrap()
}

/// Every read path reads a moved key through from its old home, and the
/// value lands on the new home with the TTL it had left.
#[tokio::test]
async fn a_moved_key_is_read_through_and_copied_with_its_ttl() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let keys = moved_keys(&pool, 4).await;
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).await.unwrap();
    let fills = Arc::new(AtomicUsize::new(0));
    for (i, (key, old)) in keys.iter().enumerate() {
        assert_eq!(pool.home_node_for(key).as_deref(), Some("e"));
        let expected = format!("v1-{}", &key["resize:".len()..]);
        let value: Option<String> = match i {
            0 => pool.get(key).await.unwrap().get(key).await.unwrap(),
            1 => pool.get_shared(key).await.unwrap().get(key).await.unwrap(),
            2 => pool.get_cached(key).await.unwrap(),
            _ => {
                let fills = fills.clone();
                let filled = pool.aside(key, Duration::from_secs(60), || async move {
                    fills.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::io::Error>("filled".to_owned())
                });
                Some(filled.await.unwrap())
            }
        };
        assert_eq!(value.as_deref(), Some(expected.as_str()), "{key} read through from {old}");
        assert_eq!(raw_get(&new, key), Some(expected.into_bytes()), "{key} copied to e");
        let left = pttl(&new, key);
        assert!(left > 50_000 && left <= 60_000, "{key} keeps its TTL: {left} ms");
        assert!(raw_get(server(&servers, old), key).is_some(), "a read leaves the old copy");
    }
    assert_eq!(fills.load(Ordering::SeqCst), 0, "aside found the value: no fill");
}

/// A write of a moved key deletes its old copy before it is sent: after a
/// `DEL`, no read finds the old value anywhere.
#[tokio::test]
async fn a_write_deletes_the_old_copy_first() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let keys = moved_keys(&pool, 2).await;
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).await.unwrap();
    let (deleted, old) = &keys[0];
    let _: i64 = pool.get(deleted).await.unwrap().del(deleted).await.unwrap();
    assert_eq!(raw_get(server(&servers, old), deleted), None, "the old copy is gone");
    let value: Option<String> = pool.get_shared(deleted).await.unwrap().get(deleted).await.unwrap();
    assert_eq!(value, None, "a deleted key stays deleted");
    let (written, old) = &keys[1];
    let _: () = pool.get_shared(written).await.unwrap().set(written, "v2").await.unwrap();
    assert_eq!(raw_get(server(&servers, old), written), None, "the old copy is gone");
    assert_eq!(raw_get(&new, written).as_deref(), Some(&b"v2"[..]));
    // pool.del goes by node, through the same connections.
    let (key, old) = &keys[0];
    let _: () = pool.get(key).await.unwrap().set(key, "again").await.unwrap();
    let _: () =
        redis::cmd("SET").arg(key).arg("old").query(&mut server(&servers, old).client()).unwrap();
    assert_eq!(pool.del(&[key.as_str()]).await.unwrap(), 1);
    assert_eq!(raw_get(server(&servers, old), key), None, "pool.del deletes the old copy too");
}

/// THE RACE: a reader read v1 from the old home, and its copy is held on
/// its way to the new home while a writer deletes (or writes) the key; the
/// copy must not bring v1 back.
#[tokio::test]
async fn a_copy_held_past_a_write_never_brings_the_old_value_back() {
    for write in ["DEL", "SET"] {
        let servers = start_servers(4);
        let pool = pool_of(&servers, Duration::from_secs(30)).await;
        let keys = moved_keys(&pool, 1).await;
        let (key, old) = keys[0].clone();
        let new = RedisServer::start();
        let proxy = Proxy::start(new.port());
        pool.add_node("e", &proxy.url()).await.unwrap();
        proxy.hold(COPY_BYTES, Duration::from_millis(1_000));
        let reader = tokio::spawn({
            let (pool, key) = (pool.clone(), key.clone());
            async move {
                let mut conn = pool.get_shared(&key).await.unwrap();
                let value: Option<String> = conn.get(&key).await.unwrap();
                value
            }
        });
        // The reader has set its marker and read the old home: its copy is
        // held by the proxy.
        let marked = || raw_get(&new, &key).is_some_and(|v| v.starts_with(b"\0fluster:lease:"));
        assert!(eventually(Duration::from_secs(5), marked).await, "the reader's marker");
        let mut conn = pool.get(&key).await.unwrap();
        match write {
            "DEL" => drop(conn.del::<_, i64>(&key).await.unwrap()),
            _ => conn.set::<_, _, ()>(&key, "v2").await.unwrap(),
        }
        // It began before the write and ends after it: v1 (its copy held),
        // or, if it read the old home only after the write's move emptied
        // it, what the new home held then (v1 moved, v2, or nothing); or
        // a miss if a starved machine timed its read-through out. The
        // copy is what is judged below.
        let read = reader.await.unwrap();
        let overlapped = |v: &str| v.starts_with("v1-") || (write == "SET" && v == "v2");
        assert!(read.as_deref().is_none_or(overlapped), "the reader read {read:?}");
        let expected = (write == "SET").then(|| b"v2".to_vec());
        assert_eq!(raw_get(&new, &key), expected, "{write}: the copy was refused");
        assert_eq!(raw_get(server(&servers, &old), &key), None, "{write}: old copy deleted");
        let now: Option<String> = pool.get_shared(&key).await.unwrap().get(&key).await.unwrap();
        assert_eq!(now.map(String::into_bytes), expected, "{write}: a later read");
    }
}

/// A reader dropped after its marker leaves it to expire: meanwhile every
/// read sees a miss, and a later read copies the value.
#[tokio::test]
async fn a_reader_dropped_after_its_marker_leaves_a_miss_that_expires() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let (key, _) = moved_keys(&pool, 1).await.remove(0);
    let new = RedisServer::start();
    let proxy = Proxy::start(new.port());
    pool.add_node("e", &proxy.url()).await.unwrap();
    proxy.hold(COPY_BYTES, Duration::from_millis(3_000));
    let reader = {
        let (pool, key) = (pool.clone(), key.clone());
        tokio::spawn(async move {
            let value: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
            value
        })
    };
    let marked = || raw_get(&new, &key).is_some_and(|v| v.starts_with(b"\0fluster:lease:"));
    assert!(eventually(Duration::from_secs(5), marked).await, "the reader's marker");
    reader.abort();
    let _ = reader.await;
    proxy.hold(b"nothing held now", Duration::ZERO);
    let seen: Option<String> = pool.get_shared(&key).await.unwrap().get(&key).await.unwrap();
    assert!(seen.is_some_and(|v| v.starts_with("v1-")), "read through, uncopied, meanwhile");
    assert!(eventually(Duration::from_secs(5), || !marked()).await, "the marker expires");
    let seen: Option<String> = pool.get_shared(&key).await.unwrap().get(&key).await.unwrap();
    assert!(seen.is_some_and(|v| v.starts_with("v1-")));
    assert!(raw_get(&new, &key).is_some_and(|v| v.starts_with(b"v1-")), "copied at last");
}

/// An old home in the box is not asked: the read is a miss, at once.
#[tokio::test]
async fn a_boxed_old_home_is_not_asked() {
    let mut servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let (key, old) = moved_keys(&pool, 1).await.remove(0);
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).await.unwrap();
    let index = NAMES.iter().position(|n| *n == old).unwrap();
    servers[index].kill();
    // Its death noticed by its own keys' traffic.
    let other = support::key_on(&pool, &old, "poke");
    let boxed = || !support::status_of(&pool, &old).up;
    for _ in 0..100 {
        if boxed() {
            break;
        }
        if let Ok(mut conn) = pool.get(&other).await {
            let _: Result<Option<String>, _> = conn.get(&other).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(boxed(), "the old home is boxed");
    let value: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert_eq!(value, None, "a miss, not an error");
    assert_eq!(raw_get(&new, &key), None, "no marker left behind");
}

/// After the window, or once the new node is removed, nothing is read
/// through.
#[tokio::test]
async fn the_window_ends_and_a_removed_node_closes_it() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_millis(300)).await;
    let keys = moved_keys(&pool, 2).await;
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let value: Option<String> = pool.get(&keys[0].0).await.unwrap().get(&keys[0].0).await.unwrap();
    assert_eq!(value, None, "past the window: a plain miss");
    // Then its sweep deleted the old copies: one put back for what follows.
    assert!(eventually(Duration::from_secs(30), || sweep_over(&pool, "e")).await, "sweep over");
    let (key, old) = &keys[1];
    assert_eq!(raw_get(server(&servers, old), key), None, "swept");
    let mut on_old = server(&servers, old).client();
    let _: () = redis::cmd("SET").arg(key).arg("v1-again").query(&mut on_old).unwrap();
    // A new window, then the node removed: the keys go back to their old
    // homes, which still hold them (the sweep waits for the window's end;
    // the remove stops it).
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let other = RedisServer::start();
    pool.add_node("e", &other.url()).await.unwrap();
    pool.remove_node("e").unwrap();
    let (key, old) = &keys[1];
    assert_eq!(pool.node_for(key).as_deref(), Some(old.as_str()));
    let value: Option<String> = pool.get(key).await.unwrap().get(key).await.unwrap();
    assert!(value.is_some_and(|v| v.starts_with("v1-")));
}

/// A pool over four named servers for a drain.
async fn drain_pool(servers: &[RedisServer]) -> ShardedPool {
    let builder = ShardedPool::builder();
    let builder = servers.iter().zip(NAMES).fold(builder, |b, (s, n)| b.named_node(n, &s.url()));
    builder.build().await.unwrap()
}

/// A drained node's keys move to their new homes with the TTL they had
/// left, and the node leaves the pool.
#[tokio::test]
async fn a_drain_moves_keys_with_their_ttl() {
    let servers = start_servers(4);
    let pool = drain_pool(&servers).await;
    let keys = support::keys_on(&pool, "d", "drain", 30);
    for key in &keys {
        let _: () = pool.get(key).await.unwrap().set_ex(key, "v1", 60).await.unwrap();
    }
    pool.drain_node_paced("d", 7, Duration::from_millis(1)).await.unwrap();
    assert!(!pool.nodes().contains(&"d".to_owned()), "d left");
    for key in &keys {
        let home = pool.node_for(key).unwrap().to_string();
        let on = server(&servers, &home);
        assert_eq!(raw_get(on, key).as_deref(), Some(&b"v1"[..]), "{key} moved to {home}");
        let left = pttl(on, key);
        assert!(left > 50_000 && left <= 60_000, "{key} keeps its TTL: {left} ms");
    }
}

/// During a drain, a key set and one deleted on their new homes keep the
/// new value and stay deleted: no later MIGRATE brings the old copy back.
#[tokio::test]
async fn a_write_during_a_drain_is_never_overwritten_by_a_migrated_copy() {
    let servers = start_servers(4);
    let pool = drain_pool(&servers).await;
    let keys = support::keys_on(&pool, "d", "race", 2);
    for key in &keys {
        let _: () = pool.get(key).await.unwrap().set_ex(key, "v1", 60).await.unwrap();
    }
    let drain = tokio::spawn({
        let pool = pool.clone();
        // Long pauses: the writes come before the first batch.
        async move { pool.drain_node_paced("d", 1, Duration::from_secs(2)).await }
    });
    let switched = || pool.node_for(&keys[0]).as_deref() != Some("d");
    assert!(eventually(Duration::from_secs(5), switched).await, "routing switched");
    let (written, deleted) = (&keys[0], &keys[1]);
    let _: () = pool.get(written).await.unwrap().set(written, "v2").await.unwrap();
    let _: i64 = pool.get(deleted).await.unwrap().del(deleted).await.unwrap();
    let d = support::status_of(&pool, "d");
    assert_eq!(d.drained_keys, Some(0), "the writes came before any batch");
    drain.await.unwrap().unwrap();
    let get = |key: &str| {
        let on = server(&servers, &pool.node_for(key).unwrap()).client();
        let mut on = on;
        redis::cmd("GET").arg(key).query::<Option<String>>(&mut on).unwrap()
    };
    assert_eq!(get(written).as_deref(), Some("v2"), "the new value stays");
    assert_eq!(get(deleted), None, "the deleted key stays deleted");
}

/// A node that cannot reach another (its MIGRATE is refused) is not
/// drained: a clear error naming both, and it stays in the pool, serving.
#[tokio::test]
async fn a_drain_that_cannot_reach_a_node_fails_and_keeps_the_node() {
    let servers = start_servers(3);
    // A port nobody listens on (bound, then let go).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("redis://127.0.0.1:{port}");
    let builder = servers
        .iter()
        .zip(NAMES)
        .fold(ShardedPool::builder(), |b, (s, n)| b.named_node(n, &s.url()));
    let pool = builder.named_node("x", &dead).build().await.unwrap();
    let key = support::key_on(&pool, "a", "stay");
    let err = pool.drain_node("a").await.unwrap_err().to_string();
    assert!(err.contains("`a`") && err.contains("`x`"), "names both nodes: {err}");
    assert!(err.contains("IOERR"), "the server's reason: {err}");
    assert!(pool.nodes().contains(&"a".to_owned()));
    let _: () = pool.get(&key).await.unwrap().set(&key, "here").await.unwrap();
    assert_eq!(pool.node_for(&key).as_deref(), Some("a"), "a still serves its keys");
    assert!(pool.drain_node("nobody").await.unwrap_err().to_string().contains("no node"));
}

/// A boxed node cannot be drained: the error says why and what to do
/// instead, and names no other node (none was at fault).
#[tokio::test]
async fn a_boxed_node_is_not_drained_and_the_error_says_why() {
    let mut servers = start_servers(3);
    let pool = support::builder_for(&servers).build().await.unwrap();
    let down = servers[0].name();
    let key = support::key_on(&pool, &down, "boxed");
    servers[0].kill();
    // The first command on its (now dead) pooled connection boxes it.
    let mut conn = pool.get(&key).await.unwrap();
    let _ = conn.get::<_, Option<String>>(&key).await;
    drop(conn);
    let boxed = || !support::status_of(&pool, &down).up;
    assert!(eventually(Duration::from_secs(10), boxed).await, "{down} boxed");
    let err = pool.drain_node(&down).await.unwrap_err().to_string();
    assert!(err.starts_with(&format!("draining node `{down}`: ")), "{err}");
    assert!(err.contains("penalty box") && err.contains("remove_node"), "{err}");
    assert!(!err.contains("into node") && !err.contains("old home"), "{err}");
}

/// A drain whose future is dropped midway ends with it: the node leaves
/// the pool (its unmoved keys are misses, never older values), and the
/// next drain is not refused as if one still ran.
#[tokio::test]
async fn a_cancelled_drain_ends_and_the_next_one_runs() {
    let servers = start_servers(4);
    let pool = drain_pool(&servers).await;
    let keys = support::keys_on(&pool, "d", "cancel", 40);
    for key in &keys {
        let _: () = pool.get(key).await.unwrap().set_ex(key, "v1", 60).await.unwrap();
    }
    let slow = pool.drain_node_paced("d", 1, Duration::from_millis(50));
    assert!(tokio::time::timeout(Duration::from_millis(300), slow).await.is_err(), "cancelled");
    assert!(!pool.nodes().contains(&"d".to_owned()), "d left the table");
    assert!(pool.status().iter().all(|s| s.name != "d"), "and the pool: {:?}", pool.status());
    for key in &keys {
        let value: Option<String> = pool.get(key).await.unwrap().get(key).await.unwrap();
        assert!(matches!(value.as_deref(), None | Some("v1")), "{key}: {value:?}");
    }
    pool.drain_node_paced("c", 7, Duration::from_millis(1)).await.expect("the next drain runs");
}

/// Two drains at once: one runs, the other is refused and its node stays,
/// serving, with every key it holds.
#[tokio::test]
async fn of_two_drains_at_once_one_is_refused_and_its_node_stays() {
    let servers = start_servers(4);
    let pool = drain_pool(&servers).await;
    let keys = support::keys_on(&pool, "c", "two", 30);
    for key in &keys {
        let _: () = pool.get(key).await.unwrap().set_ex(key, "v1", 60).await.unwrap();
    }
    let pace = Duration::from_millis(20);
    let (c, d) =
        tokio::join!(pool.drain_node_paced("c", 5, pace), pool.drain_node_paced("d", 5, pace));
    assert!(c.is_ok() != d.is_ok(), "one runs, one is refused: {c:?} {d:?}");
    let refused = c.err().or(d.err()).expect("one is refused");
    assert!(refused.to_string().contains("one drain at a time"), "{refused}");
    for key in &keys {
        let value: Option<String> = pool.get(key).await.unwrap().get(key).await.unwrap();
        assert_eq!(value.as_deref(), Some("v1"), "{key}");
    }
}

/// A write that names no key (`FLUSHDB`, a script that declares none) on
/// the new node ends the read-through: what it deleted is never read back
/// from an old home.
#[tokio::test]
async fn a_write_that_names_no_key_ends_the_read_through() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let keys = moved_keys(&pool, 2).await;
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).await.unwrap();
    let (scripted, old) = &keys[0];
    // A script that declares no key deletes a moved key on e.
    let mut conn = pool.get(scripted).await.unwrap();
    let script =
        redis::cmd("EVAL").arg("return redis.call('DEL', ARGV[1])").arg(0).arg(scripted).clone();
    let _: i64 = script.query_async(&mut conn).await.unwrap();
    assert!(raw_get(server(&servers, old), scripted).is_some(), "the old copy is still there");
    let value: Option<String> = pool.get(scripted).await.unwrap().get(scripted).await.unwrap();
    assert_eq!(value, None, "deleted by a script: never read back from {old}");
    // FLUSHDB on e, then a key never read before.
    let (flushed, old) = &keys[1];
    let mut on_e = pool.get(flushed).await.unwrap();
    assert_eq!(on_e.node(), "e");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut on_e).await.unwrap();
    assert!(raw_get(server(&servers, old), flushed).is_some(), "the old copy is still there");
    let value: Option<String> = pool.get_shared(flushed).await.unwrap().get(flushed).await.unwrap();
    assert_eq!(value, None, "flushed: never read back from {old}");
}

/// During a drain, a write that a stand-in takes (the key's new home is
/// boxed) deletes the draining node's copy first: once the new home is
/// back, a miss there never reads the older value through.
#[tokio::test]
async fn a_stand_in_write_during_a_drain_deletes_the_drained_copy() {
    let mut servers = start_servers(4);
    let builder = ShardedPool::builder().penalty_min_wait(Duration::from_millis(50));
    let builder = servers.iter().zip(NAMES).fold(builder, |b, (s, n)| b.named_node(n, &s.url()));
    let pool = builder.build().await.unwrap();
    let key = support::key_on(&pool, "d", "standin");
    let _: () = pool.get(&key).await.unwrap().set_ex(&key, "v1", 60).await.unwrap();
    let drain = tokio::spawn({
        let pool = pool.clone();
        // A long first pause: nothing is copied while the test runs.
        async move { pool.drain_node_paced("d", 1, Duration::from_secs(30)).await }
    });
    let switched = || pool.node_for(&key).is_some_and(|n| n != "d");
    assert!(eventually(Duration::from_secs(5), switched).await, "routing switched");
    let home = pool.node_for(&key).unwrap().to_string();
    let index = NAMES.iter().position(|n| *n == home).unwrap();
    servers[index].kill();
    // Its death noticed by the key's own traffic.
    let boxed = || !support::status_of(&pool, &home).up;
    for _ in 0..100 {
        if boxed() {
            break;
        }
        if let Ok(mut conn) = pool.get(&key).await {
            let _: Result<Option<String>, _> = conn.get(&key).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(boxed(), "{home} is boxed");
    let mut conn = pool.get(&key).await.unwrap();
    assert!(!conn.is_home(), "a stand-in serves {key}");
    let _: () = conn.set(&key, "v2").await.unwrap();
    drop(conn);
    servers[index].restart();
    let back = || support::status_of(&pool, &home).up;
    assert!(eventually(Duration::from_secs(10), back).await, "{home} is back");
    let value: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert_ne!(value.as_deref(), Some("v1"), "v2 was acknowledged: v1 never comes back");
    drain.abort();
    let _ = drain.await;
}

/// A drain into nodes that ask for a password (`requirepass`: `MIGRATE …
/// AUTH`) and for an ACL user's (`AUTH2`), one of them on database 3: the
/// keys move, each to its new home's database. A target that refuses the
/// credentials (rotated since the pool connected) fails the drain naming
/// both nodes, with no password or user name in what the error shows.
#[tokio::test]
async fn a_drain_into_passworded_nodes_authenticates_its_migrate() {
    const PASSWORD: &str = "drain-secret-pass";
    const USER: &str = "drain-user";
    const USER_PASSWORD: &str = "drain-user-pass";
    let plain: Vec<_> =
        (0..3).map(|_| RedisServer::start_with(&["--requirepass", PASSWORD])).collect();
    let acl = RedisServer::start();
    let mut admin = acl.client();
    let rule = ["on", &format!(">{USER_PASSWORD}"), "~*", "&*", "+@all"];
    redis::cmd("ACL").arg("SETUSER").arg(USER).arg(&rule[..]).query::<()>(&mut admin).unwrap();
    redis::cmd("ACL").arg(&["SETUSER", "default", "off"][..]).query::<()>(&mut admin).unwrap();
    let mut urls: Vec<String> =
        plain.iter().map(|s| format!("redis://:{PASSWORD}@127.0.0.1:{}", s.port())).collect();
    urls.push(format!("redis://{USER}:{USER_PASSWORD}@127.0.0.1:{}/3", acl.port()));
    let builder =
        urls.iter().zip(NAMES).fold(ShardedPool::builder(), |b, (u, n)| b.named_node(n, u));
    let pool = builder.build().await.unwrap();
    let keys = support::keys_on(&pool, "c", "auth", 30);
    for key in &keys {
        let _: () = pool.get(key).await.unwrap().set_ex(key, "v1", 60).await.unwrap();
    }
    pool.drain_node_paced("c", 7, Duration::from_millis(1)).await.unwrap();
    let mut homes = std::collections::BTreeSet::new();
    for key in &keys {
        let home = pool.node_for(key).unwrap().to_string();
        let on = redis::Client::open(urls[NAMES.iter().position(|n| *n == home).unwrap()].as_str());
        let value: Option<String> =
            redis::cmd("GET").arg(key).query(&mut on.unwrap().get_connection().unwrap()).unwrap();
        assert_eq!(value.as_deref(), Some("v1"), "{key} moved to {home}");
        homes.insert(home);
    }
    assert!(homes.contains("d") && homes.len() >= 2, "AUTH and AUTH2 both used: {homes:?}");
    // The ACL user's password rotated: the pool's connections stay, but
    // a new MIGRATE into `d` is refused.
    let mut admin = redis::Client::open(urls[3].as_str()).unwrap().get_connection().unwrap();
    let rotate = ["SETUSER", USER, "resetpass", ">rotated-pass"];
    redis::cmd("ACL").arg(&rotate[..]).query::<()>(&mut admin).unwrap();
    let err = pool.drain_node("a").await.unwrap_err();
    let (shown, debug) = (err.to_string(), format!("{err:?}"));
    assert!(shown.contains("`a`") && shown.contains("`d`"), "names both nodes: {shown}");
    for text in [&shown, &debug] {
        for secret in [PASSWORD, USER, USER_PASSWORD, "rotated-pass"] {
            assert!(!text.contains(secret), "the error shows `{secret}`: {text}");
        }
    }
    assert!(pool.nodes().contains(&"a".to_owned()), "a stays");
}

/// A write on a connection taken before `add_node` lands on the key's old
/// home after a reader copied the older value to the new one: the copy is
/// deleted before the write is acknowledged, so no later read sees it.
#[tokio::test]
async fn a_write_on_a_connection_taken_before_add_node_outlives_the_copy() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let (key, old) = moved_keys(&pool, 1).await.remove(0);
    let mut before = pool.get(&key).await.unwrap();
    assert_eq!(before.node(), old);
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).await.unwrap();
    let read: Option<String> = pool.get_shared(&key).await.unwrap().get(&key).await.unwrap();
    assert!(read.is_some_and(|v| v.starts_with("v1-")), "read through");
    assert!(raw_get(&new, &key).is_some_and(|v| v.starts_with(b"v1-")), "copied to e");
    let _: () = before.set(&key, "v2").await.unwrap();
    assert_eq!(raw_get(&new, &key), None, "the copy went before the write was acknowledged");
    drop(before);
    let now: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert_eq!(now.as_deref(), Some("v2"), "read through from {old}");
}

/// A write sent to the old home before `add_node` switches the table, and
/// held on its way there while a reader copies the older value to the new
/// home: once its reply is in, the copy is deleted before the caller sees
/// it (the resize is read after the reply, not only before the send).
#[tokio::test]
async fn a_write_in_flight_across_add_node_outlives_the_copy() {
    let servers = start_servers(4);
    let proxies: Vec<Proxy> = servers.iter().map(|s| Proxy::start(s.port())).collect();
    let builder = ShardedPool::builder()
        .resize_warmup(Duration::from_secs(30))
        .response_timeout(Duration::from_secs(10));
    let builder = proxies.iter().zip(NAMES).fold(builder, |b, (p, n)| b.named_node(n, &p.url()));
    let pool = builder.build().await.unwrap();
    let (key, old) = moved_keys(&pool, 1).await.remove(0);
    proxies[NAMES.iter().position(|n| *n == old).unwrap()]
        .hold(b"v2-in-flight", Duration::from_millis(3_000));
    let mut before = pool.get(&key).await.unwrap();
    let mut write = Box::pin({
        let key = key.clone();
        async move { before.set::<_, _, ()>(&key, "v2-in-flight").await }
    });
    // Polled once: judged and handed to the connection before the switch.
    let polled = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx).is_pending()));
    assert!(polled.await, "the write waits for its reply");
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).await.unwrap();
    let read: Option<String> = pool.get_shared(&key).await.unwrap().get(&key).await.unwrap();
    assert!(read.is_some_and(|v| v.starts_with("v1-")), "read through before the write landed");
    assert!(raw_get(&new, &key).is_some_and(|v| v.starts_with(b"v1-")), "copied to e");
    write.await.unwrap();
    assert_eq!(raw_get(&new, &key), None, "the copy went before the write was acknowledged");
    let now: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert_eq!(now.as_deref(), Some("v2-in-flight"), "read through from {old}");
}

/// During a drain, a write on a connection to the draining node taken
/// before the switch lands after a reader copied the older value to the
/// key's new home: before the write is acknowledged, the draining node
/// moves the written value over that copy, so it is not left on the
/// draining node for a drain (this one past the key already, or another
/// process's) to copy over a later write (the torture run's seed 9809).
#[tokio::test]
async fn a_write_on_the_draining_node_outlives_the_copy() {
    let servers = start_servers(4);
    let pool = drain_pool(&servers).await;
    let key = support::key_on(&pool, "d", "flight");
    let _: () = pool.get(&key).await.unwrap().set_ex(&key, "v1", 60).await.unwrap();
    let mut before = pool.get(&key).await.unwrap();
    let drain = tokio::spawn({
        let pool = pool.clone();
        // A long first pause: nothing is migrated while the test runs.
        async move { pool.drain_node_paced("d", 1, Duration::from_secs(30)).await }
    });
    let switched = || pool.node_for(&key).is_some_and(|n| n != "d");
    assert!(eventually(Duration::from_secs(5), switched).await, "routing switched");
    let home = pool.node_for(&key).unwrap().to_string();
    let read: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert_eq!(read.as_deref(), Some("v1"), "read through from d");
    assert_eq!(raw_get(server(&servers, &home), &key).as_deref(), Some(&b"v1"[..]), "copied");
    let _: () = before.set(&key, "v2").await.unwrap();
    let moved = raw_get(server(&servers, &home), &key);
    assert_eq!(moved.as_deref(), Some(&b"v2"[..]), "the write moved over the copy");
    assert_eq!(raw_get(server(&servers, "d"), &key), None, "nothing left on d");
    let now: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert_eq!(now.as_deref(), Some("v2"));
    // A later write on the new home is not replaced by a copy from d.
    let _: () = pool.get(&key).await.unwrap().set(&key, "v3").await.unwrap();
    let _: () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(server(&servers, &home).port())
        .arg(&key)
        .arg(0)
        .arg(1_000)
        .arg("REPLACE")
        .query(&mut server(&servers, "d").client())
        .unwrap();
    let now: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert_eq!(now.as_deref(), Some("v3"), "another drain's copy from d");
    drain.abort();
    let _ = drain.await;
}

/// A node removed and added back under its name kept what it held (here
/// a read-through's copy, older than a write made while it was away):
/// adding it back is refused, naming it, until its server is empty.
#[tokio::test]
async fn a_node_added_back_under_its_name_must_be_empty() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let (key, old) = moved_keys(&pool, 1).await.remove(0);
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).await.unwrap();
    let _: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert!(raw_get(&new, &key).is_some(), "copied to e");
    pool.remove_node("e").unwrap();
    let _: () = pool.get(&key).await.unwrap().set(&key, "v2").await.unwrap();
    let err = pool.add_node("e", &new.url()).await.unwrap_err();
    assert!(matches!(err, fluster::Error::Config { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("`e`") && text.contains("FLUSHDB"),
        "names the node and the cure: {text}"
    );
    assert!(!pool.nodes().contains(&"e".to_owned()), "e stays out");
    let now: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert_eq!(now.as_deref(), Some("v2"), "served by {old}");
    let _: () = redis::cmd("FLUSHDB").query(&mut new.client()).unwrap();
    pool.add_node("e", &new.url()).await.expect("an empty server is added back");
    let now: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert_eq!(now.as_deref(), Some("v2"), "read through from {old}: never the old copy");
}

/// A drained node keeps its keys (`MIGRATE … COPY`): added back under its
/// name, it is refused until flushed.
#[tokio::test]
async fn a_drained_node_added_back_must_be_empty() {
    let servers = start_servers(4);
    let pool = drain_pool(&servers).await;
    let key = support::key_on(&pool, "d", "back");
    let _: () = pool.get(&key).await.unwrap().set_ex(&key, "v1", 60).await.unwrap();
    pool.drain_node_paced("d", 7, Duration::from_millis(1)).await.unwrap();
    let d = server(&servers, "d");
    // Moved, not copied: nothing of its own is left on it.
    let left: i64 = redis::cmd("DBSIZE").query(&mut d.client()).unwrap();
    assert_eq!(left, 0, "the drain moved its keys off");
    let _: () = redis::cmd("SET").arg("leftover").arg("x").query(&mut d.client()).unwrap();
    let err = pool.add_node("d", &d.url()).await.unwrap_err().to_string();
    assert!(err.contains("`d`") && err.contains("FLUSHDB"), "{err}");
    let _: () = redis::cmd("FLUSHDB").query(&mut d.client()).unwrap();
    pool.add_node("d", &d.url()).await.expect("an empty server is added back");
}

/// A cold `add_node` leaves each moved key's copy on its old home; drained
/// again, the added node's newer values replace those copies (`MIGRATE …
/// REPLACE`): the values written while it served come back, never the
/// ones from before it was added (what the torture run found, seeds 1, 9).
#[tokio::test]
async fn a_drain_after_a_cold_add_replaces_the_old_homes_copy() {
    let servers = start_servers(4);
    let e = RedisServer::start();
    let pool = drain_pool(&servers).await;
    let keys = moved_keys(&pool, 10).await;
    pool.add_node("e", &e.url()).await.unwrap();
    for (key, old) in &keys {
        assert_eq!(pool.node_for(key).as_deref(), Some("e"), "{key} moved");
        let _: () = pool.get(key).await.unwrap().set_ex(key, "v2", 60).await.unwrap();
        assert!(raw_get(server(&servers, old), key).is_some(), "{old} keeps its copy of {key}");
    }
    pool.drain_node_paced("e", 4, Duration::from_millis(1)).await.unwrap();
    for (key, old) in &keys {
        assert_eq!(pool.node_for(key).as_deref(), Some(old.as_str()), "{key} back home");
        let value: Option<String> = pool.get(key).await.unwrap().get(key).await.unwrap();
        assert_eq!(value.as_deref(), Some("v2"), "{key}: v2 was acknowledged on e");
    }
}

/// During a drain, a write of a moved key whose copy on the draining node
/// cannot be deleted first (the node died) is refused with an error naming
/// it, never sent: a batch queued there could copy the older value over it.
#[tokio::test]
async fn a_write_whose_drained_copy_cannot_be_deleted_is_refused() {
    let mut servers = start_servers(4);
    let pool = drain_pool(&servers).await;
    let key = support::keys_on(&pool, "d", "refused", 1).remove(0);
    let _: () = pool.get(&key).await.unwrap().set_ex(&key, "v1", 60).await.unwrap();
    let drain = tokio::spawn({
        let pool = pool.clone();
        async move { pool.drain_node_paced("d", 1, Duration::from_secs(2)).await }
    });
    let switched = || pool.node_for(&key).as_deref() != Some("d");
    assert!(eventually(Duration::from_secs(5), switched).await, "routing switched");
    let home = pool.node_for(&key).unwrap();
    servers[3].kill();
    let written: redis::RedisResult<()> = pool.get(&key).await.unwrap().set(&key, "v2").await;
    let error = written.expect_err("the write is refused").to_string();
    assert!(error.contains("refused during a drain") && error.contains("`d`"), "{error}");
    assert_eq!(raw_get(server(&servers, &home), &key), None, "nothing was sent to {home}");
    assert!(drain.await.unwrap().is_err(), "the drain ends with an error");
}

/// A drain moves only the draining node's own keys: a copy it holds of a
/// key homed elsewhere (a `fan_out`'s, a stand-in's) never lands over
/// that home's value.
#[tokio::test]
async fn a_drain_leaves_copies_of_keys_homed_elsewhere() {
    let servers = start_servers(4);
    let pool = drain_pool(&servers).await;
    let key = support::keys_on(&pool, "a", "elsewhere", 1).remove(0);
    let _: () = pool.get(&key).await.unwrap().set_ex(&key, "home", 60).await.unwrap();
    let _: () =
        redis::cmd("SET").arg(&key).arg("copy").query(&mut server(&servers, "d").client()).unwrap();
    pool.drain_node_paced("d", 4, Duration::from_millis(1)).await.unwrap();
    assert_eq!(raw_get(server(&servers, "a"), &key).as_deref(), Some(&b"home"[..]));
}

/// Every process drains the node it drops, each at its own time: a second
/// pool's drain, after the first's and after writes through the first,
/// brings none of the old values back (the first moved them off).
#[tokio::test]
async fn a_second_pools_drain_brings_no_old_value_back() {
    let servers = start_servers(4);
    let (first, second) = (drain_pool(&servers).await, drain_pool(&servers).await);
    let keys = support::keys_on(&first, "d", "twice", 10);
    for key in &keys {
        let _: () = first.get(key).await.unwrap().set_ex(key, "v1", 60).await.unwrap();
    }
    first.drain_node_paced("d", 4, Duration::from_millis(1)).await.unwrap();
    let (written, deleted) = keys.split_at(5);
    for key in written {
        let _: () = first.get(key).await.unwrap().set_ex(key, "v2", 60).await.unwrap();
    }
    for key in deleted {
        let _: i64 = first.get(key).await.unwrap().del(key).await.unwrap();
    }
    second.drain_node_paced("d", 4, Duration::from_millis(1)).await.unwrap();
    for key in &keys {
        let value: Option<String> = first.get(key).await.unwrap().get(key).await.unwrap();
        let want = if written.contains(key) { Some("v2") } else { None };
        assert_eq!(value.as_deref(), want, "{key}");
    }
}

/// A caller that holds one connection of every node (`fan_out`) and
/// writes moved keys during a warm window never waits for a connection it
/// holds itself: the window's deletes go on the nodes' shared connections
/// (with `max_connections(1)` a pooled checkout there waited for itself).
#[tokio::test]
async fn a_fan_out_during_a_warm_window_does_not_wait_for_itself() {
    let servers = start_servers(4);
    let e = RedisServer::start();
    let builder = ShardedPool::builder()
        .resize_warmup(Duration::from_secs(30))
        .max_connections(1)
        .checkout_timeout(Duration::from_secs(30));
    let builder = servers.iter().zip(NAMES).fold(builder, |b, (s, n)| b.named_node(n, &s.url()));
    let pool = builder.build().await.unwrap();
    let keys = moved_keys(&pool, 4).await;
    pool.add_node("e", &e.url()).await.unwrap();
    let names: Vec<String> = keys.iter().map(|(key, _)| key.clone()).collect();
    let written = pool.fan_out(|mut conn| {
        let names = names.clone();
        async move {
            for key in &names {
                let _: () = conn.set(key, "v2").await?;
            }
            Ok::<_, redis::RedisError>(())
        }
    });
    let replies = tokio::time::timeout(Duration::from_secs(10), written)
        .await
        .expect("the fan_out waited for a connection it held");
    assert_eq!(replies.len(), 5, "{replies:?}");
}

/// `SET key value EX 60` straight on `server` (not through the pool,
/// whose routing a starved machine may have moved to a stand-in).
fn raw_set(server: &RedisServer, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("EX")
        .arg(60)
        .query::<()>(&mut server.client())
        .unwrap();
}

/// The `GET`s `server` has run so far (`INFO commandstats`).
fn gets_on(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut server.client()).unwrap();
    let line = info.lines().find(|l| l.starts_with("cmdstat_get:"));
    let calls = line.and_then(|l| l.split(['=', ',']).nth(1)?.parse().ok());
    calls.unwrap_or(0)
}

/// Issue #38: in a warm window, a read-modify-write of a moved key starts
/// from the value its old home held, as if the key had never moved
/// (`INCR`, `APPEND`, `HSET` on a hash, and an `INCR` in a pipeline): the
/// old home moves the key to the new one (`MIGRATE`) before the write,
/// and holds it no more.
#[tokio::test]
async fn a_read_modify_write_of_a_moved_key_starts_from_the_old_value() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let keys = moved_keys(&pool, 4).await;
    let (counter, text, hash, piped) = (&keys[0].0, &keys[1].0, &keys[2].0, &keys[3].0);
    let on = |i: usize| server(&servers, &keys[i].1);
    raw_set(on(0), counter, "41");
    raw_set(on(1), text, "v1");
    raw_set(on(3), piped, "41");
    redis::cmd("DEL").arg(hash).query::<()>(&mut on(2).client()).unwrap();
    redis::cmd("HSET").arg(hash).arg("f").arg("a").query::<()>(&mut on(2).client()).unwrap();
    redis::cmd("EXPIRE").arg(hash).arg(60).query::<()>(&mut on(2).client()).unwrap();
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).await.unwrap();
    let counted: i64 = pool.get(counter).await.unwrap().incr(counter, 1).await.unwrap();
    assert_eq!(counted, 42, "INCR continues from the old home's 41");
    let appended: usize = pool.get_shared(text).await.unwrap().append(text, "!").await.unwrap();
    let expected = "v1!";
    assert_eq!(appended, expected.len(), "APPEND continues from the old value");
    let _: i64 = pool.get(hash).await.unwrap().hset(hash, "g", "b").await.unwrap();
    let fields: std::collections::BTreeMap<String, String> =
        pool.get(hash).await.unwrap().hgetall(hash).await.unwrap();
    assert_eq!(fields.len(), 2, "HSET adds to the old hash: {fields:?}");
    let (n,): (i64,) = redis::pipe()
        .incr(piped, 1)
        .query_async(&mut pool.get(piped).await.unwrap())
        .await
        .unwrap();
    assert_eq!(n, 42, "a pipeline's INCR continues from 41");
    assert_eq!(raw_get(&new, counter).as_deref(), Some(&b"42"[..]));
    assert_eq!(raw_get(&new, text).as_deref(), Some(expected.as_bytes()));
    let left = pttl(&new, counter);
    assert!(left > 50_000 && left <= 60_000, "the moved key keeps its TTL: {left} ms");
    for (key, old) in &keys {
        let exists: i64 =
            redis::cmd("EXISTS").arg(key).query(&mut server(&servers, old).client()).unwrap();
        assert_eq!(exists, 0, "{key} moved off its old home {old}");
    }
}

/// Issue #38, the marker case: an `INCR` of a moved key while a reader's
/// marker sits on the new home (its copy held on the way) continues from
/// the old value (the move replaces the marker, where it used to fail on
/// it: "value is not an integer"); the reader's copy is refused, so the
/// old value never comes back over the acknowledged write.
#[tokio::test]
async fn an_incr_over_a_readers_marker_continues_and_the_copy_is_refused() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let (key, old) = moved_keys(&pool, 1).await.remove(0);
    raw_set(server(&servers, &old), &key, "41");
    let new = RedisServer::start();
    let proxy = Proxy::start(new.port());
    pool.add_node("e", &proxy.url()).await.unwrap();
    proxy.hold(COPY_BYTES, Duration::from_millis(1_000));
    let reader = tokio::spawn({
        let (pool, key) = (pool.clone(), key.clone());
        async move {
            let value: Option<String> =
                pool.get_shared(&key).await.unwrap().get(&key).await.unwrap();
            value
        }
    });
    let marked = || raw_get(&new, &key).is_some_and(|v| v.starts_with(b"\0fluster:lease:"));
    assert!(eventually(Duration::from_secs(5), marked).await, "the reader's marker");
    let counted: i64 = pool.get(&key).await.unwrap().incr(&key, 1).await.unwrap();
    assert_eq!(counted, 42, "INCR continues from 41 over the marker");
    // The reader overlapped the write: 41 (read before the move) or 42.
    let read = reader.await.unwrap();
    assert!(matches!(read.as_deref(), Some("41" | "42")), "the reader read {read:?}");
    assert_eq!(raw_get(&new, &key).as_deref(), Some(&b"42"[..]), "the copy was refused");
    assert_eq!(raw_get(server(&servers, &old), &key), None, "moved off {old}");
    let now: Option<String> = pool.get_shared(&key).await.unwrap().get(&key).await.unwrap();
    assert_eq!(now.as_deref(), Some("42"), "a later read");
}

/// Issue #38, a reader racing the move: its miss on the new home comes
/// before an `INCR`, its marker after it (held on the way), so the old
/// home holds nothing when the reader reads it. The reader returns what
/// the new home holds then (the write's 42), never a miss for a key that
/// always had a value.
#[tokio::test]
async fn a_reader_whose_old_home_emptied_meanwhile_reads_the_moved_value() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let (key, old) = moved_keys(&pool, 1).await.remove(0);
    raw_set(server(&servers, &old), &key, "41");
    let new = RedisServer::start();
    let proxy = Proxy::start(new.port());
    pool.add_node("e", &proxy.url()).await.unwrap();
    // The marker (`SET key <lease mark>warm:… NX`) is held on its way.
    proxy.hold(b"lease:warm:", Duration::from_millis(1_500));
    let reader = tokio::spawn({
        let (pool, key) = (pool.clone(), key.clone());
        async move {
            let value: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
            value
        }
    });
    let missed = || gets_on(&new) >= 1;
    assert!(eventually(Duration::from_secs(5), missed).await, "the reader's miss on e");
    let counted: i64 = pool.get(&key).await.unwrap().incr(&key, 1).await.unwrap();
    assert_eq!(counted, 42, "INCR continues from 41");
    assert_eq!(raw_get(server(&servers, &old), &key), None, "moved off {old}");
    // Whether its marker landed before the INCR's move (a starved
    // machine) or after it, the reader overlapped the write: 41 or 42.
    let read = reader.await.unwrap();
    assert!(matches!(read.as_deref(), Some("41" | "42")), "the reader read {read:?}");
    assert_eq!(raw_get(&new, &key).as_deref(), Some(&b"42"[..]));
}

/// Issue #38 during a drain: a read-modify-write of a key that lived on
/// the draining node, before its batch runs, starts from the value the
/// draining node held (moved to the new home first), and the draining
/// node holds it no more.
#[tokio::test]
async fn a_read_modify_write_during_a_drain_starts_from_the_drained_value() {
    let servers = start_servers(4);
    // Long enough for a starved machine's MIGRATE (half of it).
    let builder = ShardedPool::builder().response_timeout(Duration::from_secs(10));
    let builder = servers.iter().zip(NAMES).fold(builder, |b, (s, n)| b.named_node(n, &s.url()));
    let pool = builder.build().await.unwrap();
    let keys = support::keys_on(&pool, "d", "rmw", 2);
    let (counter, text) = (&keys[0], &keys[1]);
    raw_set(&servers[3], counter, "41");
    raw_set(&servers[3], text, "v1");
    let drain = tokio::spawn({
        let pool = pool.clone();
        // A long first pause: no batch runs while the test writes.
        async move { pool.drain_node_paced("d", 1, Duration::from_secs(30)).await }
    });
    let switched = || !pool.nodes().contains(&"d".to_owned());
    assert!(eventually(Duration::from_secs(10), switched).await, "d left the table");
    let mut conn = pool.get(counter).await.unwrap();
    assert_ne!(conn.node(), "d");
    let counted: i64 = conn.incr(counter, 1).await.unwrap();
    assert_eq!(counted, 42, "INCR continues from the drained node's 41");
    let appended: usize = pool.get_shared(text).await.unwrap().append(text, "!").await.unwrap();
    assert_eq!(appended, 3, "APPEND continues from v1");
    assert_eq!(support::status_of(&pool, "d").drained_keys, Some(0), "before any batch");
    for key in &keys {
        assert_eq!(raw_get(&servers[3], key), None, "{key} moved off d");
        let home = pool.node_for(key).unwrap();
        let left = pttl(server(&servers, &home), key);
        assert!(left > 50_000 && left <= 60_000, "{key} keeps its TTL on {home}: {left} ms");
    }
    drain.abort();
    let _ = drain.await;
}

/// Unique to the sweep's read of a batch (`runtime/sweep.rs`'s `READ`):
/// what the proxy holds.
const SWEEP_READ_BYTES: &[u8] = b"then return redis.sha1hex(d)";

/// Whether the sweep of the node `name` added is over (or never ran).
fn sweep_over(pool: &ShardedPool, name: &str) -> bool {
    support::status_of(pool, name).sweep_keys_left.is_none()
}

/// `n` keys written with `value` before `e` joins whose home stays where
/// it is, each with that home.
async fn unmoved_keys(pool: &ShardedPool, n: usize, value: &str) -> Vec<(String, String)> {
    let after = fluster::route::Router::new(NAMES.iter().chain(&["e"]).map(|n| (*n, 1.0)));
    let mut keys = Vec::new();
    for i in 0.. {
        let key = format!("stay:{i}");
        if after.home(key.as_bytes()).map(|i| &**after.name(i)) != Some("e") {
            let _: () = pool.get(&key).await.unwrap().set_ex(&key, value, 60).await.unwrap();
            keys.push((key.clone(), pool.home_node_for(&key).unwrap().to_string()));
            if keys.len() == n {
                break;
            }
        }
    }
    keys
}

/// After the sweep of `e`: no old home holds a moved key, and every key
/// that did not move is untouched on its home.
fn swept(servers: &[RedisServer], moved: &[(String, String)], unmoved: &[(String, String)]) {
    for (key, old) in moved {
        assert_eq!(raw_get(server(servers, old), key), None, "{old} still holds {key}");
    }
    for (key, home) in unmoved {
        let kept = raw_get(server(servers, home), key);
        assert_eq!(kept.as_deref(), Some(&b"kept"[..]), "{key} on {home} untouched");
    }
}

/// After a cold `add_node`, the sweep deletes every old home's copy of the
/// keys that moved to the new node, and nothing else: once it is over, a
/// `remove_node` sends the keys back to their old homes, which serve no
/// value from before the add.
#[tokio::test]
async fn the_sweep_deletes_the_old_copies_after_a_cold_add() {
    let servers = start_servers(4);
    let e = RedisServer::start();
    let pool = drain_pool(&servers).await;
    let moved = moved_keys(&pool, 20).await;
    let unmoved = unmoved_keys(&pool, 20, "kept").await;
    pool.add_node("e", &e.url()).await.unwrap();
    assert!(support::status_of(&pool, "e").swept_keys.is_some(), "a sweep from add_node on");
    let written = &moved[..10];
    for (key, _) in written {
        let _: () = pool.get(key).await.unwrap().set_ex(key, "v2", 60).await.unwrap();
    }
    assert!(eventually(Duration::from_secs(30), || sweep_over(&pool, "e")).await, "sweep over");
    swept(&servers, &moved, &unmoved);
    for (key, _) in written {
        assert_eq!(raw_get(&e, key).as_deref(), Some(&b"v2"[..]), "{key} on e untouched");
    }
    pool.remove_node("e").unwrap();
    for (key, old) in written {
        let value: Option<String> = pool.get(key).await.unwrap().get(key).await.unwrap();
        assert_eq!(value, None, "{key} back on {old}: v2 was acknowledged, v1 never served");
    }
}

/// A stand-in's write (the new node boxed, its key written on its old
/// home) that lands after the sweep looked at the key and before it read
/// its value is not deleted: the sweep deletes nothing it read while the
/// node was boxed, or boxed since it looked.
#[tokio::test]
async fn a_stand_in_write_read_by_the_sweep_survives_it() {
    let servers = start_servers(4);
    let proxies: Vec<Proxy> = servers.iter().map(|s| Proxy::start(s.port())).collect();
    let mut e = RedisServer::start();
    // Long enough for the read the proxy holds.
    let builder = ShardedPool::builder()
        .penalty_min_wait(Duration::from_millis(50))
        .response_timeout(Duration::from_secs(10));
    let builder = proxies.iter().zip(NAMES).fold(builder, |b, (p, n)| b.named_node(n, &p.url()));
    let pool = builder.build().await.unwrap();
    let moved = moved_keys(&pool, 20).await;
    let (key, old) = moved[0].clone();
    let proxy = &proxies[NAMES.iter().position(|n| *n == old).unwrap()];
    proxy.hold(SWEEP_READ_BYTES, Duration::from_millis(3_000));
    pool.add_node("e", &e.url()).await.unwrap();
    let held = || proxy.held() > 0;
    assert!(eventually(Duration::from_secs(10), held).await, "the sweep's read of {old} held");
    e.kill();
    // Its death noticed by the key's own traffic.
    let boxed = || !support::status_of(&pool, "e").up;
    for _ in 0..100 {
        if boxed() {
            break;
        }
        if let Ok(mut conn) = pool.get(&key).await {
            let _: Result<Option<String>, _> = conn.get(&key).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(boxed(), "e is boxed");
    let mut conn = pool.get(&key).await.unwrap();
    assert_eq!((conn.is_home(), conn.node()), (false, old.as_str()), "{old} stands in");
    let _: () = conn.set(&key, "v2").await.unwrap();
    drop(conn);
    e.restart();
    proxy.hold(b"nothing held now", Duration::ZERO);
    let back = || support::status_of(&pool, "e").up;
    assert!(eventually(Duration::from_secs(10), back).await, "e is back");
    assert!(eventually(Duration::from_secs(30), || sweep_over(&pool, "e")).await, "sweep over");
    assert_eq!(raw_get(server(&servers, &old), &key).as_deref(), Some(&b"v2"[..]), "v2 kept");
    // The keys it read while e was boxed are left: not a clean end.
    match support::status_of(&pool, "e").sweep_end {
        Some(SweepEnd::Incomplete(reason)) => assert!(reason.contains("keys left"), "{reason}"),
        end => panic!("a sweep that left keys ended {end:?}"),
    }
    let elsewhere: Vec<_> = moved.iter().filter(|(_, o)| *o != old).cloned().collect();
    assert!(!elsewhere.is_empty());
    swept(&servers, &elsewhere, &[]);
}

/// How the sweep of `name` ended, once it did (polled up to 30 s).
async fn sweep_end(pool: &ShardedPool, name: &str) -> Option<SweepEnd> {
    let ended = || support::status_of(pool, name).sweep_end.is_some();
    assert!(eventually(Duration::from_secs(30), ended).await, "the sweep of {name} ended");
    support::status_of(pool, name).sweep_end
}

/// A sweep that scanned every old home and deleted every old copy says
/// so in the added node's status, once those copies are gone; before, and
/// on a node of the builder, the status says nothing of an end.
#[tokio::test]
async fn a_sweeps_clean_end_is_in_the_status_once_the_old_copies_are_gone() {
    let servers = start_servers(4);
    let e = RedisServer::start();
    let pool = drain_pool(&servers).await;
    let moved = moved_keys(&pool, 20).await;
    let unmoved = unmoved_keys(&pool, 20, "kept").await;
    pool.add_node("e", &e.url()).await.unwrap();
    let running = support::status_of(&pool, "e");
    assert!(running.swept_keys.is_some(), "the sweep runs");
    assert_eq!(running.sweep_end, None, "no end while it runs");
    assert_eq!(sweep_end(&pool, "e").await, Some(SweepEnd::Clean));
    let ended = support::status_of(&pool, "e");
    assert_eq!((ended.swept_keys, ended.sweep_keys_left), (None, None), "progress gone");
    swept(&servers, &moved, &unmoved);
    assert_eq!(support::status_of(&pool, "a").sweep_end, None, "a was never added");
}

/// An old home killed while the sweep reads it: the sweep goes on with
/// the other nodes, but its status never says it ended clean (that
/// node's copies stay).
#[tokio::test]
async fn a_sweep_cut_short_by_a_dead_old_home_does_not_end_clean() {
    let mut servers = start_servers(4);
    let proxies: Vec<Proxy> = servers.iter().map(|s| Proxy::start(s.port())).collect();
    let e = RedisServer::start();
    let builder = ShardedPool::builder().response_timeout(Duration::from_secs(10));
    let builder = proxies.iter().zip(NAMES).fold(builder, |b, (p, n)| b.named_node(n, &p.url()));
    let pool = builder.build().await.unwrap();
    let moved = moved_keys(&pool, 20).await;
    let old = moved[0].1.clone();
    let at = NAMES.iter().position(|n| *n == old).unwrap();
    // Its read of `old` waits in the proxy while `old` dies.
    proxies[at].hold(SWEEP_READ_BYTES, Duration::from_millis(1_000));
    pool.add_node("e", &e.url()).await.unwrap();
    let held = || proxies[at].held() > 0;
    assert!(eventually(Duration::from_secs(10), held).await, "the sweep's read of {old} held");
    servers[at].kill();
    match sweep_end(&pool, "e").await {
        Some(SweepEnd::Incomplete(reason)) => {
            assert!(reason.contains("old home failed"), "{reason}")
        }
        end => panic!("a sweep that could not read {old} ended {end:?}"),
    }
    let elsewhere: Vec<_> = moved.iter().filter(|(_, o)| *o != old).cloned().collect();
    assert!(!elsewhere.is_empty());
    swept(&servers, &elsewhere, &[]);
}

/// After a warm window ends, the sweep deletes the old copies the window
/// left (its read-through copies without deleting), and nothing else;
/// `remove_node` then serves no value from before the add.
#[tokio::test]
async fn the_sweep_runs_when_a_warm_window_ends() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_millis(1_500)).await;
    let moved = moved_keys(&pool, 20).await;
    let unmoved = unmoved_keys(&pool, 20, "kept").await;
    let e = RedisServer::start();
    pool.add_node("e", &e.url()).await.unwrap();
    let read = &moved[0].0;
    let value: Option<String> = pool.get(read).await.unwrap().get(read).await.unwrap();
    assert!(value.is_some_and(|v| v.starts_with("v1-")), "read through");
    assert!(raw_get(&e, read).is_some(), "copied to e, its old copy left by the window");
    assert!(eventually(Duration::from_secs(30), || sweep_over(&pool, "e")).await, "sweep over");
    swept(&servers, &moved, &unmoved);
    let written = &moved[..10];
    for (key, _) in written {
        let _: () = pool.get(key).await.unwrap().set_ex(key, "v2", 60).await.unwrap();
    }
    pool.remove_node("e").unwrap();
    for (key, old) in written {
        let value: Option<String> = pool.get(key).await.unwrap().get(key).await.unwrap();
        assert_eq!(value, None, "{key} back on {old}: v2 was acknowledged, v1 never served");
    }
}

/// The calls of `command` `server` has run so far (`INFO commandstats`).
fn calls_on(server: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut server.client()).unwrap();
    let prefix = format!("cmdstat_{command}:");
    let line = info.lines().find(|l| l.starts_with(&prefix));
    let calls = line.and_then(|l| l.split(['=', ',']).nth(1)?.parse().ok());
    calls.unwrap_or(0)
}

/// A write that keeps what its key holds, and what it must leave: the
/// command, and the value it leaves on a key that held nothing.
const KEEPING: [(&[&str], &str); 3] =
    [(&["APPEND", "x"], "x"), (&["SETRANGE", "0", "x"], "x"), (&["SET", "x", "KEEPTTL"], "x")];

/// `words` of [`KEEPING`] on `key`, through the pool.
async fn keeping_write(pool: &ShardedPool, key: &str, words: &[&str]) -> redis::RedisResult<()> {
    let mut cmd = redis::cmd(words[0]);
    cmd.arg(key).arg(&words[1..]);
    let mut conn = pool.get(key).await.unwrap();
    cmd.query_async::<redis::Value>(&mut conn).await.map(drop)
}

/// Issue #38, the adversary's finding: a moved key its old home does not
/// hold, read and written at once. The reader's marker is on the new home
/// when the writer's move finds nothing (`NOKEY`), so a write that keeps
/// what the key holds (`APPEND`, `SETRANGE`, `SET … KEEPTTL`) would edit
/// the marker: its bytes in the value, its 2 s TTL on the key, the
/// acknowledged write gone when it expires. The writer's claim deletes the
/// marker first: the value is the write's alone, with no TTL.
#[tokio::test]
async fn a_write_that_keeps_the_value_never_edits_a_readers_marker() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let keys = moved_keys(&pool, KEEPING.len()).await;
    for (key, old) in &keys {
        let _: () = redis::cmd("DEL").arg(key).query(&mut server(&servers, old).client()).unwrap();
    }
    let new = RedisServer::start();
    let proxy = Proxy::start(new.port());
    pool.add_node("e", &proxy.url()).await.unwrap();
    // Each reader's marker stays while its copy is held on its way.
    proxy.hold(COPY_BYTES, Duration::from_millis(3_000));
    let readers: Vec<_> = keys
        .iter()
        .map(|(key, _)| {
            let (pool, key) = (pool.clone(), key.clone());
            tokio::spawn(async move {
                let value: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
                value
            })
        })
        .collect();
    let marked = |key: &str| raw_get(&new, key).is_some_and(|v| v.starts_with(b"\0fluster:lease:"));
    for (key, _) in &keys {
        assert!(eventually(Duration::from_secs(5), || marked(key)).await, "{key}'s marker");
    }
    for ((key, _), (words, left)) in keys.iter().zip(KEEPING) {
        keeping_write(&pool, key, words).await.unwrap();
        let held = raw_get(&new, key).map(|v| String::from_utf8_lossy(&v).into_owned());
        assert_eq!(held.as_deref(), Some(left), "{words:?} edited the marker");
        assert_eq!(pttl(&new, key), -1, "{words:?} kept the marker's TTL");
    }
    for (reader, (words, left)) in readers.into_iter().zip(KEEPING) {
        // It overlapped the write: a miss, or what the write left.
        let read = reader.await.unwrap();
        assert!(read.as_deref().is_none_or(|v| v == left), "{words:?}: the reader read {read:?}");
    }
    for ((key, _), (words, left)) in keys.iter().zip(KEEPING) {
        let now: Option<String> = pool.get(key).await.unwrap().get(key).await.unwrap();
        assert_eq!(now.as_deref(), Some(left), "{words:?}: a later read");
    }
}

/// The same race one step later: the writer's claim is done and its
/// `APPEND` is on its way (held) when a reader misses and tries its
/// marker. The claim's guard refuses the marker, so the `APPEND` lands on
/// nothing, as it would have without the resize.
#[tokio::test]
async fn no_marker_goes_in_between_a_writers_claim_and_its_write() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let (key, old) = moved_keys(&pool, 1).await.remove(0);
    let _: () = redis::cmd("DEL").arg(&key).query(&mut server(&servers, &old).client()).unwrap();
    let new = RedisServer::start();
    let proxy = Proxy::start(new.port());
    pool.add_node("e", &proxy.url()).await.unwrap();
    proxy.hold(b"APPEND", Duration::from_millis(2_000));
    let writer = tokio::spawn({
        let (pool, key) = (pool.clone(), key.clone());
        async move { keeping_write(&pool, &key, &["APPEND", "x"]).await }
    });
    assert!(eventually(Duration::from_secs(5), || proxy.held() >= 1).await, "the APPEND held");
    // From now on the reader's copy is held instead (the APPEND's delay
    // is already set): a marker that went in stays under the APPEND.
    proxy.hold(COPY_BYTES, Duration::from_millis(4_000));
    let tried = calls_on(&new, "eval") + calls_on(&new, "set");
    let reader = tokio::spawn({
        let (pool, key) = (pool.clone(), key.clone());
        async move {
            let value: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
            value
        }
    });
    let marker_tried = || calls_on(&new, "eval") + calls_on(&new, "set") > tried;
    assert!(eventually(Duration::from_secs(5), marker_tried).await, "the reader's marker");
    assert!(!writer.is_finished(), "the APPEND is still held: the race is set up");
    writer.await.unwrap().unwrap();
    let held = raw_get(&new, &key).map(|v| String::from_utf8_lossy(&v).into_owned());
    assert_eq!(held.as_deref(), Some("x"), "the APPEND landed on a marker");
    assert_eq!(pttl(&new, &key), -1, "the APPEND kept a marker's TTL");
    let read = reader.await.unwrap();
    assert!(read.as_deref().is_none_or(|v| v == "x"), "the reader read {read:?}");
}

/// Issue #38: a write whose move timed out is refused. The old home's
/// `MIGRATE` gave up on a slow new home (its `RESTORE` held on the way),
/// but the `RESTORE` still lands later; had the write gone on, the old
/// value would have replaced it after it was acknowledged. The write gets
/// an error; once the old value has landed, a retry is acknowledged and
/// stays.
#[tokio::test]
async fn a_write_whose_move_timed_out_is_refused_and_a_retry_stays() {
    let servers = start_servers(4);
    // `MIGRATE`'s own bound is half the response timeout: 500 ms.
    let builder = ShardedPool::builder()
        .resize_warmup(Duration::from_secs(30))
        .response_timeout(Duration::from_secs(1));
    let builder = servers.iter().zip(NAMES).fold(builder, |b, (s, n)| b.named_node(n, &s.url()));
    let pool = builder.build().await.unwrap();
    let (key, old) = moved_keys(&pool, 1).await.remove(0);
    let before = raw_get(server(&servers, &old), &key).unwrap();
    let new = RedisServer::start();
    let proxy = Proxy::start(new.port());
    pool.add_node("e", &proxy.url()).await.unwrap();
    proxy.hold(b"RESTORE", Duration::from_millis(1_500));
    let mut conn = pool.get(&key).await.unwrap();
    let refused = conn.set::<_, _, ()>(&key, "v2").await.unwrap_err();
    assert!(refused.to_string().contains("write refused in a resize window"), "{refused}");
    assert!(refused.to_string().contains(&format!("`{old}`")), "names the old home: {refused}");
    let landed = || raw_get(&new, &key).as_deref() == Some(before.as_slice());
    assert!(eventually(Duration::from_secs(5), landed).await, "the late RESTORE landed");
    drop(conn);
    let _: () = pool.get(&key).await.unwrap().set(&key, "v2").await.unwrap();
    assert_eq!(raw_get(&new, &key).as_deref(), Some(&b"v2"[..]), "the retry");
    let now: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert_eq!(now.as_deref(), Some("v2"), "a later read");
}

/// A transaction opened by hand (`MULTI`, then each command, then `EXEC`,
/// on one connection) that writes moved keys gets exactly its own replies:
/// the claim of its keys goes on another connection, never into its
/// `MULTI` (the torture run's seed 9200 saw `EXEC` answer `[0, OK]`).
#[tokio::test]
async fn a_transaction_by_hand_of_moved_keys_gets_only_its_own_replies() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let keys = moved_keys(&pool, 2).await;
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).await.unwrap();
    let (key, old) = &keys[0];
    let mut conn = pool.get(key).await.unwrap();
    let _: () = redis::cmd("MULTI").query_async(&mut conn).await.unwrap();
    let queued: String =
        redis::cmd("APPEND").arg(key).arg("+").query_async(&mut conn).await.unwrap();
    assert_eq!(queued, "QUEUED");
    let exec: Vec<redis::Value> = redis::cmd("EXEC").query_async(&mut conn).await.unwrap();
    let appended = format!("{}+", "v1-").len();
    assert!(
        matches!(exec[..], [redis::Value::Int(n)] if n as usize > appended),
        "EXEC answered {exec:?}"
    );
    assert_eq!(raw_get(server(&servers, old), key), None, "moved off {old}");
    // And through a pipeline marked as a transaction.
    let (key, _) = &keys[1];
    let mut conn = pool.get(key).await.unwrap();
    let replies: Vec<redis::Value> =
        redis::pipe().atomic().set(key, "v2").get(key).query_async(&mut conn).await.unwrap();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(raw_get(&new, key).as_deref(), Some(&b"v2"[..]));
}

/// A transaction opened by hand on a key's old home before `add_node`,
/// its `SET` queued then and its `EXEC` sent after: a reader that read
/// the old value through in between left a copy on the new home, which
/// must go once `EXEC` is in, as a single write in flight across the
/// switch does (the torture run's seed 9200: a read after the `EXEC`
/// returned the value from before it).
#[tokio::test]
async fn a_transaction_by_hand_queued_before_add_node_outlives_the_copy() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let (key, old) = moved_keys(&pool, 1).await.remove(0);
    let mut conn = pool.get(&key).await.unwrap();
    assert_eq!(conn.node(), old.as_str());
    let _: () = redis::cmd("MULTI").query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("SET").arg(&key).arg("v2").query_async(&mut conn).await.unwrap();
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).await.unwrap();
    let read: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert!(read.as_deref().is_some_and(|v| v.starts_with("v1-")), "read through: {read:?}");
    assert!(raw_get(&new, &key).is_some(), "the reader's copy is on e");
    let exec: Vec<redis::Value> = redis::cmd("EXEC").query_async(&mut conn).await.unwrap();
    assert_eq!(exec, vec![redis::Value::Okay]);
    assert_eq!(raw_get(&new, &key), None, "the copy from before the EXEC is gone");
    let now: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert_eq!(now.as_deref(), Some("v2"), "a read after the EXEC");
}

/// A transaction opened by hand (`MULTI` on a connection from `get`) that
/// queues an `APPEND` of a moved key and holds its `EXEC` past the claim's
/// guard (2 s) while readers read the key through: the keys are claimed
/// again when `EXEC` is sent, so no reader's marker is under the queued
/// write when it runs (it used to edit one, which expired: the write lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_by_hand_held_past_the_guard_keeps_its_write() {
    const KEYS: usize = 20;
    let servers = start_servers(4);
    let builder = ShardedPool::builder()
        .resize_warmup(Duration::from_secs(120))
        .max_connections(64)
        .response_timeout(Duration::from_secs(10));
    let builder = servers.iter().zip(NAMES).fold(builder, |b, (s, n)| b.named_node(n, &s.url()));
    let pool = builder.build().await.unwrap();
    // Moved keys that no node holds: each reader's miss marks the key, reads
    // its old home's nothing and gives the marker back.
    let after = fluster::route::Router::new(NAMES.iter().chain(&["e"]).map(|n| (*n, 1.0)));
    let keys: Vec<String> = (0..)
        .map(|i| format!("held:{i}"))
        .filter(|key| after.home(key.as_bytes()).map(|i| &**after.name(i)) == Some("e"))
        .take(KEYS)
        .collect();
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4 * KEYS)
        .map(|i| {
            let (pool, key, stop) = (pool.clone(), keys[i % KEYS].clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let mut conn = pool.get_shared(&key).await.unwrap();
                    let _: redis::RedisResult<Option<Vec<u8>>> = conn.get(&key).await;
                }
            })
        })
        .collect();
    let writers: Vec<_> = keys
        .iter()
        .map(|key| {
            let (pool, key) = (pool.clone(), key.clone());
            tokio::spawn(async move {
                let mut conn = pool.get(&key).await.unwrap();
                assert_eq!(conn.node(), "e", "{key} moved to e");
                let _: () = redis::cmd("MULTI").query_async(&mut conn).await.unwrap();
                let append = redis::cmd("APPEND").arg(&key).arg("x").clone();
                let _: () = append.query_async(&mut conn).await.unwrap();
                // Past the guard of the claim made when the APPEND was queued.
                tokio::time::sleep(Duration::from_millis(2_300)).await;
                let exec: redis::RedisResult<(usize,)> =
                    redis::cmd("EXEC").query_async(&mut conn).await;
                exec
            })
        })
        .collect();
    let mut execs = Vec::new();
    for writer in writers {
        execs.push(writer.await.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.await.unwrap();
    }
    // Each APPEND ran on an empty key (not on a marker: its length would
    // be the marker's and more), and the key holds its value with no TTL
    // (a marker's would have expired it).
    let lost: Vec<String> = keys
        .iter()
        .zip(&execs)
        .filter(|(key, exec)| {
            !matches!(exec, Ok((1,)))
                || raw_get(&new, key).as_deref() != Some(b"x")
                || pttl(&new, key) != -1
        })
        .map(|(key, exec)| {
            let held = raw_get(&new, key).map(|v| String::from_utf8_lossy(&v).into_owned());
            format!("{key}: EXEC {exec:?}, e holds {held:?} for {} ms", pttl(&new, key))
        })
        .collect();
    assert!(lost.is_empty(), "{} of {KEYS} writes lost or edited: {lost:#?}", lost.len());
    for key in &keys {
        let now: Option<String> = pool.get_shared(key).await.unwrap().get(key).await.unwrap();
        assert_eq!(now.as_deref(), Some("x"), "{key}: a later read");
    }
}

/// A transaction opened by hand whose keys cannot be claimed again when
/// its `EXEC` is sent (the claim timed out) is discarded instead: none of
/// its writes runs (a marker could be under them), `EXEC` is an error
/// that says why, and the connection is out of the transaction.
#[tokio::test]
async fn a_transaction_whose_keys_cannot_be_claimed_again_is_discarded() {
    let servers = start_servers(4);
    let builder = ShardedPool::builder()
        .resize_warmup(Duration::from_secs(30))
        .response_timeout(Duration::from_secs(1));
    let builder = servers.iter().zip(NAMES).fold(builder, |b, (s, n)| b.named_node(n, &s.url()));
    let pool = builder.build().await.unwrap();
    let (key, _) = moved_keys(&pool, 1).await.remove(0);
    let new = RedisServer::start();
    let proxy = Proxy::start(new.port());
    pool.add_node("e", &proxy.url()).await.unwrap();
    let mut conn = pool.get(&key).await.unwrap();
    let _: () = redis::cmd("MULTI").query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("APPEND").arg(&key).arg("+").query_async(&mut conn).await.unwrap();
    let moved = raw_get(&new, &key);
    assert!(moved.as_deref().is_some_and(|v| v.starts_with(b"v1-")), "moved to e: {moved:?}");
    // The claim's script (`node/warm.rs`) held past the response timeout.
    proxy.hold(b"for i = 1, #KEYS, 2 do", Duration::from_millis(3_000));
    let exec: redis::RedisResult<redis::Value> = redis::cmd("EXEC").query_async(&mut conn).await;
    let refused = exec.expect_err("EXEC sent with its keys unclaimed");
    assert!(refused.to_string().contains("could not be claimed"), "{refused}");
    assert_eq!(raw_get(&new, &key), moved, "the APPEND did not run");
    let read: Option<String> = conn.get(&key).await.unwrap();
    assert_eq!(read.map(String::into_bytes), moved, "out of the transaction: a read, not QUEUED");
}

/// The adversary's finding: a move that timed out on a stalled old home
/// (SIGSTOP) is still queued there, and runs when it wakes: its `RESTORE
/// … REPLACE` then lands on the new home. A retry of the refused write
/// must not be acknowledged before that move has run or been made
/// harmless (a `DEL` of the key answered by the old home), else the old
/// value replaces it; nor may one after the window ends (the torture
/// run's seed 9452: a write after the window went on, and the queued
/// move's old value replaced it when its old home woke).
async fn retry_after_a_move_in_doubt(window: Duration, retry_after_the_window: bool) {
    let servers = start_servers(4);
    let builder = ShardedPool::builder()
        .resize_warmup(window)
        .response_timeout(Duration::from_millis(500))
        .penalty_max_wait(Duration::from_millis(200));
    let builder = servers.iter().zip(NAMES).fold(builder, |b, (s, n)| b.named_node(n, &s.url()));
    let pool = builder.build().await.unwrap();
    let (key, old) = moved_keys(&pool, 1).await.remove(0);
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).await.unwrap();
    let opened = std::time::Instant::now();
    let set = |value: &'static str| {
        let (pool, key) = (pool.clone(), key.clone());
        async move { pool.get(&key).await?.set::<_, _, ()>(&key, value).await.map_err(Into::into) }
    };
    server(&servers, &old).pause();
    let first: Result<(), fluster::Error> = set("v2").await;
    assert!(first.is_err(), "the move cannot end while {old} is stopped");
    if retry_after_the_window {
        // The window's length is what is tested: its end must not end
        // the wait for the move in doubt.
        tokio::time::sleep(window.saturating_sub(opened.elapsed()) + Duration::from_millis(50))
            .await;
    }
    let retry: Result<(), fluster::Error> = set("v2").await;
    server(&servers, &old).resume();
    assert!(retry.is_err(), "a retry while the first move is in doubt was acknowledged");
    let mut last = retry;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while last.is_err() && std::time::Instant::now() < deadline {
        // A client's retry pause (a refusal returns at once: without one,
        // this loop would hold the test's one thread from the prober).
        tokio::time::sleep(Duration::from_millis(20)).await;
        last = set("v2").await;
    }
    assert!(last.is_ok(), "a retry once {old} answers again: {last:?}");
    // Whatever {old} had queued has run once it answers a read.
    assert!(
        eventually(Duration::from_secs(5), || raw_get(server(&servers, &old), &key).is_none())
            .await
    );
    assert_eq!(raw_get(&new, &key).as_deref(), Some(&b"v2"[..]), "the old value came back");
    let now: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert_eq!(now.as_deref(), Some("v2"));
}

#[tokio::test]
async fn a_retry_after_a_move_in_doubt_waits_for_the_old_home() {
    retry_after_a_move_in_doubt(Duration::from_secs(60), false).await;
}

#[tokio::test]
async fn a_move_in_doubt_outlives_the_window() {
    retry_after_a_move_in_doubt(Duration::from_millis(1_500), true).await;
}

/// A new home out of memory (`maxmemory`, `noeviction`): a write that
/// frees memory (`DEL`) of a moved key still goes through (its move is
/// refused by the server, so nothing of it can land later, and the
/// claim's guard is left out: no reader can mark then either), and a
/// moved key's miss reads its old value through without copying it (the
/// marker refused), never an error.
#[tokio::test]
async fn a_new_home_out_of_memory_still_takes_deletes_and_reads_through() {
    let servers = start_servers(4);
    let pool = pool_of(&servers, Duration::from_secs(30)).await;
    let keys = moved_keys(&pool, 2).await;
    let new = RedisServer::start_with(&["--maxmemory", "1", "--maxmemory-policy", "noeviction"]);
    pool.add_node("e", &new.url()).await.unwrap();
    let (read, _) = &keys[0];
    let value: Option<String> = pool.get(read).await.unwrap().get(read).await.unwrap();
    assert!(value.as_deref().is_some_and(|v| v.starts_with("v1-")), "read through: {value:?}");
    assert_eq!(raw_get(&new, read), None, "nothing copied to a node out of memory");
    // Its move is refused too (`e` cannot take the value): the old home is
    // ruled out, and the `DEL` goes on, from empty.
    let (deleted, _) = &keys[1];
    let _: i64 = pool.get(deleted).await.unwrap().del(deleted).await.unwrap();
    let now: Option<String> = pool.get(deleted).await.unwrap().get(deleted).await.unwrap();
    assert_eq!(now, None, "a deleted key stays deleted");
}

/// A pool whose drain of `d` failed with its one batch in doubt (a proxy
/// held the batch's `MIGRATE` on its way to `d` for 2 s), or was
/// `cancelled` then, `d` answering nothing from then on (a stalled
/// server: the held batch still reaches it); its keys written `v1`, and
/// the `MIGRATE`s `d` ran before.
async fn a_drain_in_doubt(
    servers: &[RedisServer],
    proxy: &Proxy,
    cancelled: bool,
) -> (ShardedPool, Vec<String>, u64) {
    let builder = ShardedPool::builder().response_timeout(Duration::from_millis(500));
    let builder = servers.iter().zip(NAMES).fold(builder, |b, (s, n)| match n {
        "d" => b.named_node(n, &proxy.url()),
        _ => b.named_node(n, &s.url()),
    });
    let pool = builder.build().await.unwrap();
    let keys = support::keys_on(&pool, "d", "doubt", 20);
    for key in &keys {
        let _: () = pool.get(key).await.unwrap().set_ex(key, "v1", 60).await.unwrap();
    }
    let drain = tokio::spawn({
        let pool = pool.clone();
        // One batch, after a pause long enough to hold it.
        async move { pool.drain_node_paced("d", 100, Duration::from_millis(400)).await }
    });
    let switched = || pool.node_for(&keys[0]).is_some_and(|n| n != "d");
    assert!(eventually(Duration::from_secs(5), switched).await, "routing switched");
    let migrates = calls_on(server(servers, "d"), "migrate");
    proxy.hold(b"MIGRATE", Duration::from_millis(2_000));
    if cancelled {
        assert!(eventually(Duration::from_secs(5), || proxy.held() > 0).await, "a batch held");
        drain.abort();
        assert!(drain.await.unwrap_err().is_cancelled());
    } else {
        let failed = drain.await.unwrap().unwrap_err().to_string();
        assert!(failed.contains("in doubt"), "the drain's error says so: {failed}");
    }
    proxy.silence();
    (pool, keys, migrates)
}

/// `v2` written to `key` through `pool`.
async fn set_v2(pool: &ShardedPool, key: &str) -> Result<(), fluster::Error> {
    Ok(pool.get(key).await?.set::<_, _, ()>(key, "v2").await?)
}

/// The adversary's finding: a drain's batch whose `MIGRATE` got no reply
/// (the draining node stalled) fails the drain, but the batch is still
/// queued there and runs later: its `… REPLACE` would land the old values
/// over writes made on the new homes since. Its keys are in doubt until a
/// `DEL` of them on the drained node is answered: their writes are refused
/// till then, with an error saying so, even after the batch has run; once
/// it answers, a retry is acknowledged and stays.
async fn a_drain_batch_in_doubt_never_lands_over_a_later_write(cancelled: bool) {
    let servers = start_servers(4);
    let proxy = Proxy::start(server(&servers, "d").port());
    let (pool, keys, migrates) = a_drain_in_doubt(&servers, &proxy, cancelled).await;
    let set = |key: String| {
        let pool = pool.clone();
        async move { set_v2(&pool, &key).await }
    };
    let mut refused = Vec::new();
    for key in &keys {
        if let Err(e) = set(key.clone()).await {
            assert!(e.to_string().contains("`d`"), "names the drained node: {e}");
            refused.push(key.clone());
        }
    }
    assert!(!refused.is_empty(), "the writes of the batch in doubt were refused");
    let ran = || calls_on(server(&servers, "d"), "migrate") > migrates;
    assert!(eventually(Duration::from_secs(10), ran).await, "the held MIGRATE ran");
    for key in &refused {
        assert!(set(key.clone()).await.is_err(), "{key}: refused until `d` answers");
    }
    proxy.restore();
    for key in &refused {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut last = set(key.clone()).await;
        while last.is_err() && std::time::Instant::now() < deadline {
            // A client's retry pause (a refusal returns at once).
            tokio::time::sleep(Duration::from_millis(20)).await;
            last = set(key.clone()).await;
        }
        assert!(last.is_ok(), "a retry once `d` answers: {last:?}");
    }
    for key in &keys {
        let home = pool.node_for(key).unwrap().to_string();
        let value = raw_get(server(&servers, &home), key);
        assert_eq!(value.as_deref(), Some(&b"v2"[..]), "{key} on {home}: the old value came back");
    }
}

#[tokio::test]
async fn a_drain_batch_that_timed_out_never_lands_over_a_later_write() {
    a_drain_batch_in_doubt_never_lands_over_a_later_write(false).await;
}

/// A drain's future dropped while a batch is out: the same.
#[tokio::test]
async fn a_drain_batch_cut_short_by_a_cancel_never_lands_over_a_later_write() {
    a_drain_batch_in_doubt_never_lands_over_a_later_write(true).await;
}

/// A drained node whose server is gone for good: its keys in doubt would
/// wait forever, and so would a later drain or a node added warm (each
/// refused, saying why); `remove_node` of its name gives them up, and
/// their writes go on.
#[tokio::test]
async fn remove_node_gives_up_a_drained_node_gone_for_good() {
    let servers = start_servers(4);
    let proxy = Proxy::start(server(&servers, "d").port());
    let (pool, keys, _) = a_drain_in_doubt(&servers, &proxy, false).await;
    let mut refused = Vec::new();
    for key in &keys {
        if set_v2(&pool, key).await.is_err() {
            refused.push(key);
        }
    }
    assert!(!refused.is_empty(), "the writes of the batch in doubt were refused");
    let again = pool.drain_node("c").await.unwrap_err().to_string();
    assert!(again.contains("in doubt") && again.contains("remove_node(\"d\")"), "{again}");
    assert!(pool.nodes().contains(&"c".to_owned()), "c stays");
    pool.remove_node("d").unwrap();
    for key in refused {
        set_v2(&pool, key).await.unwrap();
    }
    assert!(pool.remove_node("d").is_err(), "given up once: `d` is no node now");
}
