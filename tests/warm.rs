//! A node added warm (`resize_warmup`): a moved key's miss on its new home
//! is read from its old home and copied with the TTL it has left; a write
//! moves the key off its old home first, claiming it against readers'
//! markers, and a read-through never brings back a value a write replaced
//! or deleted meanwhile. Also: writes in flight across `add_node`, moves
//! in doubt in a window, transactions opened by hand, a new home out of
//! memory, `fan_out` in a window, a node added back must be empty.
//! (A drain after an add is in `drain.rs`; the sweep after it, `sweep.rs`.)

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use fluster::ShardedPool;
use redis::AsyncCommands;
use support::proxy::Proxy;
use support::resize::{
    NAMES, Warm, boxed_by_traffic, calls_on, moved_keys, pool_of, pttl, raw_get, raw_set, server,
    sweep_over, warm_added,
};
use support::{RedisServer, eventually, start_servers};

/// Unique to the copy's script (`node/warm.rs`): what the proxy holds.
const COPY_BYTES: &[u8] = b"ARGV[4] == '-1'";

/// Every read path reads a moved key through from its old home, and the
/// value lands on the new home with the TTL it had left.
#[tokio::test]
async fn a_moved_key_is_read_through_and_copied_with_its_ttl() {
    let Warm { servers, pool, keys, new } = warm_added(Duration::from_secs(30), 4).await;
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
    let Warm { servers, pool, keys, new } = warm_added(Duration::from_secs(30), 2).await;
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
    let Warm { mut servers, pool, mut keys, new } = warm_added(Duration::from_secs(30), 1).await;
    let (key, old) = keys.remove(0);
    let index = NAMES.iter().position(|n| *n == old).unwrap();
    servers[index].kill();
    // Its death noticed by its own keys' traffic.
    let other = support::key_on(&pool, &old, "poke");
    assert!(boxed_by_traffic(&pool, &old, &other).await, "the old home is boxed");
    let value: Option<String> = pool.get(&key).await.unwrap().get(&key).await.unwrap();
    assert_eq!(value, None, "a miss, not an error");
    assert_eq!(raw_get(&new, &key), None, "no marker left behind");
}

/// After the window, or once the new node is removed, nothing is read
/// through.
#[tokio::test]
async fn the_window_ends_and_a_removed_node_closes_it() {
    let Warm { servers, pool, keys, new: _new } = warm_added(Duration::from_millis(300), 2).await;
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

/// A write that names no key (`FLUSHDB`, a script that declares none) on
/// the new node ends the read-through: what it deleted is never read back
/// from an old home.
#[tokio::test]
async fn a_write_that_names_no_key_ends_the_read_through() {
    let Warm { servers, pool, keys, new: _new } = warm_added(Duration::from_secs(30), 2).await;
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

/// A node removed and added back under its name kept what it held (here
/// a read-through's copy, older than a write made while it was away):
/// adding it back is refused, naming it, until its server is empty.
#[tokio::test]
async fn a_node_added_back_under_its_name_must_be_empty() {
    let Warm { servers: _servers, pool, mut keys, new } =
        warm_added(Duration::from_secs(30), 1).await;
    let (key, old) = keys.remove(0);
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
    let missed = || calls_on(&new, "get") >= 1;
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
    let Warm { servers, pool, keys, new } = warm_added(Duration::from_secs(30), 2).await;
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

/// A write dropped while its old home's move is out: its key stays in
/// doubt past the window's end (`support::resize`).
#[tokio::test]
async fn a_write_dropped_while_its_window_move_is_out_keeps_its_key_in_doubt() {
    support::resize::a_write_dropped_while_its_move_is_out(false).await;
}
