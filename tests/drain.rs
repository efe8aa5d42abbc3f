//! A node drained (`drain_node`): its keys move in batches (`MIGRATE`) to
//! their new homes with the TTL they had left, and it leaves the pool;
//! a write during a drain (on the new home, on a stand-in, on the
//! draining node itself) is never overwritten by a migrated copy; a
//! batch in doubt refuses its keys' writes until the drained node answers,
//! and `remove_node` gives them up; drains into passworded targets, drains
//! that cannot reach a node, cancelled drains, two at once, a drain after
//! an add.

mod support;

use std::time::Duration;

use fluster::ShardedPool;
use redis::AsyncCommands;
use support::proxy::Proxy;
use support::resize::{
    NAMES, boxed_by_traffic, calls_on, drain_pool, moved_keys, pttl, raw_get, raw_set, server,
};
use support::{RedisServer, eventually, start_servers};

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
    assert!(matches!(refused, fluster::Error::Drain { target: None, .. }), "{refused:?}");
    for key in &keys {
        let value: Option<String> = pool.get(key).await.unwrap().get(key).await.unwrap();
        assert_eq!(value.as_deref(), Some("v1"), "{key}");
    }
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
    assert!(boxed_by_traffic(&pool, &home, &key).await, "{home} is boxed");
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
    // Settled: the drain is let go, and with it the drained node's idle
    // connections (through the proxy, which closes each one's server side).
    let let_go = || support::clients(server(&servers, "d")) == 0;
    assert!(eventually(Duration::from_secs(5), let_go).await, "the drained node's pool let go");
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
/// wait forever, and so would a later drain or a node added (each
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
    // A node added (cold here) would take keys in doubt, and the late move
    // land on their old home, served again once it is removed.
    let extra = RedisServer::start();
    let added = pool.add_node("f", &extra.url()).await.unwrap_err().to_string();
    assert!(added.contains("in doubt"), "{added}");
    assert!(!pool.nodes().contains(&"f".to_owned()), "f not added");
    pool.remove_node("d").unwrap();
    pool.add_node("f", &extra.url()).await.unwrap();
    for key in refused {
        set_v2(&pool, key).await.unwrap();
    }
    assert!(pool.remove_node("d").is_err(), "given up once: `d` is no node now");
    let let_go = || support::clients(server(&servers, "d")) == 0;
    assert!(eventually(Duration::from_secs(5), let_go).await, "the drained node's pool let go");
}

/// A write dropped while its move off the draining node is out: its key
/// stays in doubt past the drain's end (`support::resize`).
#[tokio::test]
async fn a_write_dropped_while_its_drain_move_is_out_keeps_its_key_in_doubt() {
    support::resize::a_write_dropped_while_its_move_is_out(true).await;
}
