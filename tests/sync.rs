//! The synchronous flavour (feature `r2d2`) passes the async flavour's
//! scenarios against real nodes: spread, a failure and the return, all
//! nodes down, redaction, bad input, and the same routing.

mod support;

use std::time::{Duration, Instant};

use fluster::sync::ShardedPool;
use fluster::{Error, FailureKind};
use redis::Commands;
use support::{RedisServer, eventually_blocking, key_on, start_servers};

#[test]
fn keys_spread_and_route_like_the_async_flavour() {
    let servers = start_servers(3);
    let pool = support::sync_pool_of(&servers, Duration::from_millis(100));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let async_pool = runtime.block_on(support::builder_for(&servers).build()).unwrap();
    for i in 0..2000 {
        let key = format!("both:{i}");
        assert_eq!(pool.node_for(&key), async_pool.node_for(&key), "{key}");
    }
    for server in &servers {
        let key = key_on(&pool, &server.name(), "spread");
        let mut conn = pool.get(&key).unwrap();
        assert_eq!(conn.node(), server.name());
        let n: i64 = conn.incr(&key, 1).unwrap();
        assert_eq!(n, 1);
        let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut server.client()).unwrap();
        assert!(exists);
    }
}

#[test]
fn a_killed_node_fails_over_and_comes_back() {
    let mut servers = start_servers(3);
    let pool = support::sync_pool_of(&servers, Duration::from_millis(100));
    let victim = servers[0].name();
    let key = key_on(&pool, &victim, "sync-failover");
    let mut conn = pool.get(&key).unwrap();
    let _: i64 = conn.incr(&key, 1).unwrap();
    drop(conn);

    servers[0].kill();
    let mut failed = 0;
    let moved_to = loop {
        let mut conn = pool.get(&key).unwrap();
        match conn.incr::<_, _, i64>(&key, 1) {
            Ok(n) => {
                assert_eq!(n, 1, "the stand-in starts the key afresh");
                break conn.node().to_owned();
            }
            Err(_) => {
                failed += 1;
                assert!(failed <= 1, "more than the one command in flight failed");
            }
        }
    };
    assert_ne!(moved_to, victim);
    let status = pool.status();
    assert!(!status[0].up);
    assert!(matches!(
        status[0].boxed_for,
        Some(FailureKind::Dropped | FailureKind::Refused | FailureKind::Io)
    ));

    servers[0].restart();
    assert!(
        eventually_blocking(Duration::from_secs(5), || pool.status()[0].up),
        "never let back in"
    );
    let mut conn = pool.get(&key).unwrap();
    assert_eq!(conn.node(), victim);
    let n: i64 = conn.incr(&key, 1).unwrap();
    assert_eq!(n, 1, "the restarted node is empty");
}

#[test]
fn all_nodes_down_then_one_returns() {
    let mut servers = start_servers(2);
    let pool = support::sync_pool_of(&servers, Duration::from_millis(100));
    for s in &mut servers {
        s.kill();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let err = loop {
        match pool.get("anything") {
            Err(e) => break e,
            Ok(mut conn) => {
                assert!(Instant::now() < deadline, "nodes never boxed");
                let _ = redis::cmd("PING").query::<()>(&mut conn);
            }
        }
    };
    assert!(matches!(err, Error::NoHealthyNodes), "{err}");
    assert!(matches!(pool.get_any(), Err(Error::NoHealthyNodes)));
    assert_eq!(pool.node_for("anything"), None);

    servers[1].restart();
    assert!(eventually_blocking(Duration::from_secs(5), || pool.status()[1].up));
    let mut conn = pool.get("anything").unwrap();
    let _: () = redis::cmd("PING").query(&mut conn).unwrap();
}

#[test]
fn a_dead_node_never_blocks_get() {
    let servers = start_servers(1);
    let mut dead = RedisServer::start();
    let dead_url = dead.url();
    dead.kill();
    let pool = ShardedPool::builder()
        .node(&servers[0].url())
        .node(&dead_url)
        .probe_at_build(false)
        .build()
        .unwrap();
    // Nothing knows the node is dead until a connect fails; still, no get
    // waits for the checkout timeout.
    for i in 0..50 {
        let started = Instant::now();
        let conn = pool.get(format!("k{i}")).unwrap();
        assert!(started.elapsed() < Duration::from_millis(250), "{:?}", started.elapsed());
        assert_eq!(conn.node(), servers[0].name());
    }
}

#[test]
fn bad_input_and_redaction() {
    let err = ShardedPool::builder().build().unwrap_err().to_string();
    assert!(err.contains("no nodes"), "{err}");
    let err = ShardedPool::builder()
        .node("redis://alice:s3cret@127.0.0.1:70000")
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("***@127.0.0.1:70000") && !err.contains("s3cret") && !err.contains("alice"),
        "{err}"
    );
    let err = ShardedPool::builder()
        .node("redis://127.0.0.1:1")
        .penalty_multiplier(0.1)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("penalty_multiplier"), "{err}");

    let pool = ShardedPool::builder().node("redis://alice:s3cret@127.0.0.1:1/2").build().unwrap();
    let shown = format!("{pool:?} {:?}", pool.status());
    assert!(!shown.contains("s3cret") && !shown.contains("alice"), "{shown}");
    assert_eq!(pool.status()[0].name, "127.0.0.1:1");
    assert!(matches!(pool.get("k"), Err(Error::NoHealthyNodes)));
}

/// Blocking connections see error replies and session changes through the
/// same classifier and session rules as the async ones.
#[test]
fn the_sync_flavour_boxes_on_error_replies_and_drops_changed_sessions() {
    let healthy = RedisServer::start();
    let loading = support::fake::FakeServer::start("+OK\r\n");
    let pool = ShardedPool::builder()
        .node(&healthy.url())
        .node(&loading.url())
        .penalty_min_wait(Duration::from_secs(30))
        .penalty_max_wait(Duration::from_secs(30))
        .build()
        .unwrap();
    loading.set_reply("-LOADING Redis is loading\r\n");
    let key = key_on(&pool, &loading.name(), "sync-loading");
    let mut conn = pool.get(&key).unwrap();
    assert!(conn.set::<_, _, ()>(&key, 1).is_err());
    drop(conn);
    let status = pool.status().into_iter().find(|s| s.name == loading.name()).unwrap();
    assert_eq!(status.boxed_for, Some(FailureKind::Loading), "{status:?}");
    assert_eq!(pool.get(&key).unwrap().node(), healthy.name());

    // SELECT left behind on a blocking connection never reaches the next caller.
    let one = ShardedPool::builder().node(&healthy.url()).max_connections(1).build().unwrap();
    let mut conn = one.get("k").unwrap();
    let _: () = redis::cmd("SELECT").arg(7).query(&mut conn).unwrap();
    drop(conn);
    let mut conn = one.get("k").unwrap();
    let _: () = conn.set("where", "db0").unwrap();
    let in_db0: Option<String> = healthy.client().get("where").unwrap();
    assert_eq!(in_db0.as_deref(), Some("db0"));
}

/// A paused node (SIGSTOP): its commands time out, and after
/// `timeouts_before_penalty` of them in a row it is boxed; its keys move,
/// and it returns once it answers again.
#[test]
fn a_paused_node_is_boxed_after_its_timeouts_and_returns() {
    let servers = start_servers(2);
    let pool = servers
        .iter()
        .fold(ShardedPool::builder(), |b, s| b.node(&s.url()))
        .response_timeout(Duration::from_millis(100))
        .connect_timeout(Duration::from_millis(100))
        .probe_timeout(Duration::from_millis(100))
        .timeouts_before_penalty(3)
        .penalty_min_wait(Duration::from_millis(100))
        .penalty_max_wait(Duration::from_millis(200))
        .build()
        .unwrap();
    let paused = servers[0].name();
    let key = key_on(&pool, &paused, "sync-paused");
    servers[0].pause();
    let mut timeouts = 0;
    let served_by = loop {
        let mut conn = pool.get(&key).unwrap();
        match conn.incr::<_, _, i64>(&key, 1) {
            Ok(_) => break conn.node().to_owned(),
            Err(e) => {
                assert!(e.is_timeout(), "{e}");
                // Said as the async flavour says it, not as EAGAIN.
                assert!(e.to_string().contains("timed out"), "{e}");
                timeouts += 1;
                assert!(timeouts <= 3, "still routed to the paused node after 3 timeouts");
            }
        }
    };
    // The timeouts may come from commands or from connects made meanwhile:
    // three in all box the node, whichever they are.
    assert!(timeouts <= 3);
    assert_ne!(served_by, paused);
    let status = support::status_of(&pool, &paused);
    assert_eq!(status.boxed_for, Some(FailureKind::Timeout), "{status:?}");

    servers[0].resume();
    assert!(eventually_blocking(Duration::from_secs(5), || support::status_of(&pool, &paused).up));
    assert_eq!(pool.get(&key).unwrap().node(), paused);
}

/// A wrong password fails the build, naming the node, as in the async
/// flavour (the same check), and nothing shows it. The pool was never
/// handed out: the log tells of no pool closed, and no connection stays.
#[test]
fn a_wrong_password_fails_the_build_without_showing_it() {
    let (captured, _guard) = support::logs::capture();
    let closed = || captured.text().matches("pool closed").count();
    let guarded = RedisServer::start_with(&["--requirepass", "right-pass"]);
    let healthy = RedisServer::start();
    ShardedPool::builder().node(&healthy.url()).build().unwrap().close();
    assert_eq!(closed(), 1, "a pool its user closes says so:\n{}", captured.text());
    let built = ShardedPool::builder()
        .node(&healthy.url())
        .node(&format!("redis://:wrong-pass@127.0.0.1:{}", guarded.port()))
        .build();
    let e = built.expect_err("a node that refuses the credentials fails the build");
    assert_eq!(
        e.to_string(),
        format!(
            "node `{}` refused the credentials: Password authentication failed - \
             AuthenticationFailed (check the user name and password in its URL)",
            guarded.name()
        )
    );
    assert!(matches!(e, fluster::Error::Credentials { failure: FailureKind::Auth, .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("wrong-pass"), "{e:?}");
    let gone = eventually_blocking(Duration::from_secs(5), || support::clients(&healthy) == 0);
    assert!(gone, "the failed build keeps {} connections", support::clients(&healthy));
    let logs = captured.text();
    assert_eq!(closed(), 1, "a failed build logs a pool closed:\n{logs}");
    assert!(!logs.contains("wrong-pass"), "{logs}");
}

/// A checkout waiting on a busy node leaves for the next node as soon as
/// that node is boxed, long before its checkout timeout.
#[test]
fn a_waiting_checkout_leaves_when_its_node_is_boxed() {
    let mut servers = start_servers(2);
    let pool = servers
        .iter()
        .fold(ShardedPool::builder(), |b, s| b.node(&s.url()))
        .max_connections(1)
        .checkout_timeout(Duration::from_secs(10))
        .penalty_min_wait(Duration::from_secs(30))
        .penalty_max_wait(Duration::from_secs(30))
        .build()
        .unwrap();
    let busy = servers[0].name();
    let key = key_on(&pool, &busy, "sync-wait");
    let mut held = pool.get(&key).unwrap();
    let waiter = {
        let (pool, key) = (pool.clone(), key.clone());
        std::thread::spawn(move || {
            let conn = pool.get(&key).unwrap();
            (conn.node().to_owned(), Instant::now())
        })
    };
    // The waiter is blocked on the one connection; the node now dies, and
    // the held connection's next command boxes it.
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "the waiter did not wait");
    servers[0].kill();
    assert!(redis::cmd("PING").query::<()>(&mut held).is_err());
    let boxed = Instant::now();
    assert!(!support::status_of(&pool, &busy).up);
    let (node, left) = waiter.join().unwrap();
    assert_ne!(node, busy);
    let lag = left.saturating_duration_since(boxed);
    assert!(lag < Duration::from_secs(2), "left {lag:?} after the boxing");
}

/// Both flavours judge a probe the same way: a node whose PING fails with
/// an error reply that says nothing of its health is still not let in.
#[test]
fn both_flavours_judge_an_unclassified_probe_failure_alike() {
    let healthy = RedisServer::start();
    let odd = RedisServer::start_with(&["--rename-command", "PING", ""]);
    let sync = ShardedPool::builder().node(&healthy.url()).node(&odd.url()).build().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let builder = fluster::ShardedPool::builder().node(&healthy.url()).node(&odd.url());
    let pool = runtime.block_on(builder.build()).unwrap();
    let (a, b) = (support::status_of(&pool, &odd.name()), support::status_of(&sync, &odd.name()));
    assert_eq!(a.boxed_for, Some(FailureKind::Connect), "{a:?}");
    assert_eq!((b.up, b.boxed_for), (a.up, a.boxed_for), "{b:?}");
}

/// `build` works from inside a Tokio runtime: its probes run on the prober
/// thread's own runtime, never on the caller's.
#[tokio::test]
async fn the_sync_flavour_builds_inside_a_runtime() {
    let servers = start_servers(1);
    let pool = support::sync_pool_of(&servers, Duration::from_millis(100));
    assert!(pool.status()[0].up);
    let mut conn = pool.get("inside").unwrap();
    let _: () = redis::cmd("PING").query(&mut conn).unwrap();
}

/// The sync flavour is a member of a fleet too: told by an async pool that
/// a node it boxed is back, it probes at once instead of waiting out its
/// stay.
#[test]
fn a_sync_pool_hears_the_fleet() {
    let mut servers = start_servers(2);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    fn quick<F>(
        urls: &[String],
        b: fluster::Builder<fluster::RedisManager, F>,
    ) -> fluster::Builder<fluster::RedisManager, F> {
        urls.iter()
            .fold(b, |b, url| b.node(url))
            .fleet("sync-fleet")
            .heartbeat(Duration::from_millis(50))
            .timeouts_before_penalty(1)
            .probe_timeout(Duration::from_millis(300))
    }
    let sync = quick(&urls, ShardedPool::builder())
        .penalty_min_wait(Duration::from_secs(30))
        .penalty_max_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let teller = runtime.block_on(async {
        quick(&urls, fluster::ShardedPool::builder())
            .penalty_min_wait(Duration::from_millis(100))
            .penalty_max_wait(Duration::from_millis(200))
            .build()
            .await
            .unwrap()
    });
    let home = servers[0].name();
    let up = |status: Vec<fluster::NodeStatus>| status.into_iter().any(|s| s.name == home && s.up);
    servers[0].kill();
    assert!(eventually_blocking(Duration::from_secs(5), || !up(sync.status())));
    servers[0].restart();
    assert!(eventually_blocking(Duration::from_secs(5), || up(teller.status())));
    let started = Instant::now();
    assert!(
        eventually_blocking(Duration::from_secs(5), || up(sync.status())),
        "the sync pool waited out its 30 s stay"
    );
    println!("the sync pool let the node back in {:?} after the news", started.elapsed());
}

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// A sync pool over four servers named `a` to `d`.
fn named_pool(servers: &[RedisServer], builder: fluster::sync::Builder) -> ShardedPool {
    let builder = servers.iter().zip(NAMES).fold(builder, |b, (s, n)| b.named_node(n, &s.url()));
    builder.build().unwrap()
}

/// The server named `name`.
fn named<'s>(servers: &'s [RedisServer], name: &str) -> &'s RedisServer {
    &servers[NAMES.iter().position(|n| *n == name).unwrap()]
}

/// `GET` and `PTTL` of `key` straight from `server`.
fn raw(server: &RedisServer, key: &str) -> (Option<String>, i64) {
    let mut client = server.client();
    let value = redis::cmd("GET").arg(key).query(&mut client).unwrap();
    (value, redis::cmd("PTTL").arg(key).query(&mut client).unwrap())
}

/// `n` keys, each written through `pool` with a 60 s TTL, whose home
/// becomes `e` once it joins the four named nodes; each with its old home.
fn moved_keys(pool: &ShardedPool, n: usize) -> Vec<(String, String)> {
    let after = fluster::route::Router::new(NAMES.iter().chain(&["e"]).map(|n| (*n, 1.0)));
    let keys = (0..).map(|i| format!("sync-resize:{i}"));
    let moved = keys.filter(|k| after.home(k.as_bytes()).map(|i| &**after.name(i)) == Some("e"));
    moved
        .take(n)
        .map(|key| {
            let _: () = pool.get(&key).unwrap().set_ex(&key, "v1", 60).unwrap();
            let old = pool.home_node_for(&key).unwrap().to_string();
            (key, old)
        })
        .collect()
}

/// `add_node` on a sync pool: the moved keys go to the new node at once
/// (their writes land there), and `remove_node` sends them back.
#[test]
fn add_node_routes_moved_keys_to_the_new_node() {
    let servers = start_servers(4);
    let pool = named_pool(&servers, ShardedPool::builder());
    let keys = moved_keys(&pool, 3);
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).unwrap();
    assert_eq!(pool.nodes(), ["a", "b", "c", "d", "e"]);
    for (key, old) in &keys {
        let mut conn = pool.get(key).unwrap();
        assert_eq!(conn.node(), "e", "{key} moved from {old}");
        let _: () = conn.set(key, "v2").unwrap();
        assert_eq!(raw(&new, key).0.as_deref(), Some("v2"), "{key} written on e");
    }
    let taken = pool.add_node("e", &new.url()).unwrap_err();
    assert!(matches!(taken, Error::Config { .. }), "{taken}");
    pool.remove_node("e").unwrap();
    let (key, old) = &keys[0];
    assert_eq!(pool.get(key).unwrap().node(), old, "back to its old home");
}

/// `drain_node` on a sync pool moves the node's keys to their new homes
/// with the TTL they had left, and the node leaves the pool.
#[test]
fn drain_node_moves_keys_with_their_ttl_and_removes_the_node() {
    let servers = start_servers(4);
    let pool = named_pool(&servers, ShardedPool::builder());
    let keys = support::keys_on(&pool, "d", "sync-drain", 30);
    for key in &keys {
        let _: () = pool.get(key).unwrap().set_ex(key, "v1", 60).unwrap();
    }
    pool.drain_node_paced("d", 7, Duration::from_millis(1)).unwrap();
    assert!(!pool.nodes().contains(&"d".to_owned()), "d left");
    for key in &keys {
        let home = pool.node_for(key).unwrap().to_string();
        let (value, left) = raw(named(&servers, &home), key);
        assert_eq!(value.as_deref(), Some("v1"), "{key} moved to {home}");
        assert!(left > 50_000 && left <= 60_000, "{key} keeps its TTL: {left} ms");
    }
    let gone = pool.drain_node("d").unwrap_err();
    assert!(matches!(gone, Error::Config { .. }), "{gone}");
}

/// During a sync drain, blocking connections obey its rules: a key not
/// moved yet reads through from the draining node, a key set and one
/// deleted on their new homes keep the new value and stay deleted (no
/// later MIGRATE brings the old copy back), and a write on a connection
/// to the draining node taken before the switch moves its value over the
/// new home's copy.
#[test]
fn blocking_writes_during_a_drain_are_not_lost() {
    let servers = start_servers(4);
    let pool = named_pool(&servers, ShardedPool::builder());
    let keys = support::keys_on(&pool, "d", "sync-race", 4);
    for key in &keys {
        let _: () = pool.get(key).unwrap().set_ex(key, "v1", 60).unwrap();
    }
    let (written, deleted, read, before) = (&keys[0], &keys[1], &keys[2], &keys[3]);
    let mut on_d = pool.get(before).unwrap();
    let drain = std::thread::spawn({
        let pool = pool.clone();
        // Long pauses: the writes come before the first batch.
        move || pool.drain_node_paced("d", 10, Duration::from_secs(3))
    });
    let switched = || pool.node_for(written).as_deref() != Some("d");
    assert!(eventually_blocking(Duration::from_secs(5), switched), "routing switched");
    let home = |key: &str| named(&servers, &pool.node_for(key).unwrap());
    let value: Option<String> = pool.get(read).unwrap().get(read).unwrap();
    assert_eq!(value.as_deref(), Some("v1"), "read through from d");
    assert_eq!(raw(home(read), read).0.as_deref(), Some("v1"), "and copied");
    let _: () = pool.get(written).unwrap().set(written, "v2").unwrap();
    let _: i64 = pool.get(deleted).unwrap().del(deleted).unwrap();
    let copied: Option<String> = pool.get(before).unwrap().get(before).unwrap();
    assert_eq!(copied.as_deref(), Some("v1"), "read through from d");
    let _: () = on_d.set(before, "v2").unwrap();
    let moved = raw(home(before), before).0;
    assert_eq!(moved.as_deref(), Some("v2"), "the write on d moved over the copy");
    drop(on_d);
    assert_eq!(support::status_of(&pool, "d").drained_keys, Some(0), "before any batch");
    drain.join().unwrap().unwrap();
    assert_eq!(raw(home(written), written).0.as_deref(), Some("v2"), "the new value stays");
    assert_eq!(raw(home(deleted), deleted).0, None, "the deleted key stays deleted");
    assert_eq!(raw(home(before), before).0.as_deref(), Some("v2"), "d's write moved");
}

/// A sync pool with `resize_warmup`: a moved key's miss on the new node
/// reads the old value through from its old home and copies it with the
/// TTL it has left; a write of a moved key deletes its old copy first.
#[test]
fn a_warm_add_reads_moved_keys_through_on_a_sync_pool() {
    let servers = start_servers(4);
    let builder = ShardedPool::builder().resize_warmup(Duration::from_secs(30));
    let pool = named_pool(&servers, builder);
    let keys = moved_keys(&pool, 2);
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).unwrap();
    let (key, old) = &keys[0];
    let mut conn = pool.get(key).unwrap();
    assert_eq!(conn.node(), "e");
    let value: Option<String> = conn.get(key).unwrap();
    assert_eq!(value.as_deref(), Some("v1"), "{key} read through from {old}");
    let (copied, left) = raw(&new, key);
    assert_eq!(copied.as_deref(), Some("v1"), "copied to e");
    assert!(left > 50_000 && left <= 60_000, "{key} keeps its TTL: {left} ms");
    let (key, old) = &keys[1];
    let _: i64 = pool.get(key).unwrap().del(key).unwrap();
    assert_eq!(raw(named(&servers, old), key).0, None, "the old copy went first");
    let value: Option<String> = pool.get(key).unwrap().get(key).unwrap();
    assert_eq!(value, None, "a deleted key stays deleted");
}

/// A transaction opened by hand on a sync pool, in a warm window, whose
/// queued `APPEND` of a moved key (held by no node) outlived its claim's
/// guard and has a reader's marker under it by `EXEC` (both set here by
/// hand, as 2 s and a reader would): the key is claimed again before
/// `EXEC` goes, so the `APPEND` runs on no marker and its value stays.
#[test]
fn a_transaction_by_hand_on_a_sync_pool_claims_its_keys_again_at_exec() {
    let servers = start_servers(4);
    let builder = ShardedPool::builder().resize_warmup(Duration::from_secs(30));
    let pool = named_pool(&servers, builder);
    let (key, old) = moved_keys(&pool, 1).remove(0);
    let _: () = redis::cmd("DEL").arg(&key).query(&mut named(&servers, &old).client()).unwrap();
    let new = RedisServer::start();
    pool.add_node("e", &new.url()).unwrap();
    let mut conn = pool.get(&key).unwrap();
    assert_eq!(conn.node(), "e");
    let _: () = redis::cmd("MULTI").query(&mut conn).unwrap();
    let _: () = redis::cmd("APPEND").arg(&key).arg("x").query(&mut conn).unwrap();
    let mut on_new = new.client();
    let guard = format!("\0fluster:lease:warm-guard:{key}");
    let _: i64 = redis::cmd("DEL").arg(&guard).query(&mut on_new).unwrap();
    let marker = "\0fluster:lease:warm:0123456789abcdef";
    let set = redis::cmd("SET").arg(&key).arg(marker).arg("NX").arg("PX").arg(2_000).clone();
    let _: () = set.query(&mut on_new).unwrap();
    let (appended,): (usize,) = redis::cmd("EXEC").query(&mut conn).unwrap();
    assert_eq!(appended, 1, "the APPEND ran on no marker");
    assert_eq!(raw(&new, &key), (Some("x".to_owned()), -1), "the write stays, with no TTL");
}
