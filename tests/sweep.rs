//! The sweep after an add (`add_node`, cold or warm): once the warm
//! window (if any) ends, a background task deletes every old home's copy
//! of the keys that moved to the added node, and nothing else; it never
//! deletes a value it read while that node was boxed; how it ended is in
//! the node's status (`sweep_end`).

mod support;

use std::time::Duration;

use fluster::{ShardedPool, SweepEnd};
use redis::AsyncCommands;
use support::proxy::Proxy;
use support::resize::{
    NAMES, boxed_by_traffic, drain_pool, moved_keys, pool_of, raw_get, server, sweep_over,
};
use support::{RedisServer, eventually, start_servers};

/// Unique to the sweep's read of a batch (`runtime/sweep.rs`'s `READ`):
/// what the proxy holds.
const SWEEP_READ_BYTES: &[u8] = b"then return redis.sha1hex(d)";

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
    assert!(boxed_by_traffic(&pool, "e", &key).await, "e is boxed");
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
