//! Probes that re-test what boxed a node: a replica is let back in only as
//! a master, a loading server only once loading is over, a server that
//! answers PING but hangs real commands only once it answers a read; and a
//! check of the user's own (`probe_with`) can keep a node out.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fluster::{FailureKind, NodeEvent, ShardedPool};
use redis::AsyncCommands;
use support::fake::FakeServer;
use support::{RedisServer, eventually, key_on, status_of};

/// Short stays, exact and without flap memory: a node let back in at every
/// probe would be boxed again and again.
fn builder(healthy: &RedisServer, url: &str) -> fluster::Builder {
    ShardedPool::builder()
        .node(&healthy.url())
        .node(url)
        .penalty_min_wait(Duration::from_millis(50))
        .penalty_max_wait(Duration::from_millis(50))
        .penalty_jitter(0.0)
        .penalty_memory(Duration::ZERO)
        .response_timeout(Duration::from_millis(100))
        .timeouts_before_penalty(1)
}

/// One SET of `key`, whatever comes of it.
async fn poke(pool: &ShardedPool, key: &str) {
    if let Ok(mut conn) = pool.get(key).await {
        let _: Result<(), _> = conn.set(key, 1).await;
    }
}

/// Pokes `key` until `name` is boxed, then, with traffic going on, sees
/// the node stay boxed through `probes` failed probes, boxed once; returns
/// the boxed status.
async fn stays_boxed(
    pool: &ShardedPool,
    key: &str,
    name: &str,
    probes: u32,
) -> fluster::NodeStatus {
    let boxed = eventually(Duration::from_secs(3), || !status_of(pool, name).up).await;
    assert!(boxed, "never boxed: {:?}", status_of(pool, name));
    loop {
        poke(pool, key).await;
        let status = status_of(pool, name);
        assert!(!status.up, "let back in: {status:?}");
        if status.failed_probes >= probes {
            assert_eq!(status.penalties, 1, "boxed again and again: {status:?}");
            return status;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Once the node can serve again, it is back at its next probe.
async fn returns(pool: &ShardedPool, name: &str) {
    assert!(
        eventually(Duration::from_secs(3), || status_of(pool, name).up).await,
        "not back: {:?}",
        status_of(pool, name)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stays_boxed_until_it_is_a_master_again() {
    let (healthy, node) = (RedisServer::start(), RedisServer::start());
    // Its master is down, so it never loads a data set: every write gets
    // READONLY, and PING still answers.
    let mut gone = RedisServer::start();
    gone.kill();
    let pool = builder(&healthy, &node.url()).build().await.unwrap();
    let key = key_on(&pool, &node.name(), "replica");
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(gone.port())
        .query(&mut node.client())
        .unwrap();
    poke(&pool, &key).await;
    let status = stays_boxed(&pool, &key, &node.name(), 5).await;
    assert_eq!(status.boxed_for, Some(FailureKind::ReadOnly), "{status:?}");
    assert!(status.last_error.as_deref().unwrap_or("").contains("ROLE"), "{status:?}");
    let _: () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query(&mut node.client()).unwrap();
    returns(&pool, &node.name()).await;
    let mut conn = pool.get(&key).await.unwrap();
    assert_eq!(conn.node(), node.name());
    let _: () = conn.set(&key, 2).await.unwrap();
}

/// A fake node that answers PING all along (as one behind a proxy or a
/// module does) but replies `broken` to everything else: it is boxed for
/// `kind` and stays boxed until it answers again, then returns.
async fn boxed_until_it_answers(prefix: &str, broken: &'static str, kind: FailureKind) {
    let healthy = RedisServer::start();
    let node = FakeServer::start("+OK\r\n");
    let pool = builder(&healthy, &node.url()).build().await.unwrap();
    let key = key_on(&pool, &node.name(), prefix);
    node.set_reply(broken);
    poke(&pool, &key).await;
    let status = stays_boxed(&pool, &key, &node.name(), 5).await;
    assert_eq!(status.boxed_for, Some(kind), "{status:?}");
    node.set_reply("+OK\r\n");
    returns(&pool, &node.name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loading_node_stays_boxed_until_loading_is_over() {
    let loading = "-LOADING Redis is loading the dataset in memory\r\n";
    boxed_until_it_answers("loading", loading, FailureKind::Loading).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_answers_ping_but_hangs_reads_stays_boxed() {
    // Only PING is answered: every other command waits forever.
    boxed_until_it_answers("hung", "", FailureKind::Timeout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_with_keeps_a_node_out_and_lets_it_back_in() {
    let (healthy, mut node) = (RedisServer::start(), RedisServer::start());
    let ready = Arc::new(AtomicBool::new(true));
    let gate = ready.clone();
    let pool = builder(&healthy, &node.url())
        .probe_with(move |conn| {
            let ready = gate.load(Ordering::Acquire);
            Box::pin(async move {
                let _: () = redis::cmd("PING").query_async(conn).await?;
                match ready {
                    true => Ok(()),
                    false => Err(std::io::Error::other("the warm-up script has not run").into()),
                }
            })
        })
        .build()
        .await
        .unwrap();
    let key = key_on(&pool, &node.name(), "gate");
    let mut events = pool.events();
    ready.store(false, Ordering::Release);
    node.kill();
    poke(&pool, &key).await;
    node.restart();
    // Up again, but the check says no.
    let status = stays_boxed(&pool, &key, &node.name(), 5).await;
    assert_eq!(status.boxed_for, Some(FailureKind::Check), "{status:?}");
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains("warm-up script"), "{error}");
    ready.store(true, Ordering::Release);
    returns(&pool, &node.name()).await;
    let mut kinds = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let NodeEvent::ProbeFailed { kind, .. } = event {
            kinds.push(kind);
        }
    }
    assert!(kinds.contains(&FailureKind::Check), "{kinds:?}");
}

#[cfg(feature = "r2d2")]
#[test]
fn the_sync_flavour_re_tests_a_replica_and_runs_probe_with() {
    use redis::Commands;
    let (healthy, node) = (RedisServer::start(), RedisServer::start());
    let mut gone = RedisServer::start();
    gone.kill();
    let ready = Arc::new(AtomicBool::new(true));
    let gate = ready.clone();
    let pool = fluster::sync::ShardedPool::builder()
        .node(&healthy.url())
        .node(&node.url())
        .penalty_min_wait(Duration::from_millis(50))
        .penalty_max_wait(Duration::from_millis(50))
        .penalty_jitter(0.0)
        .penalty_memory(Duration::ZERO)
        .probe_with(move |_conn| {
            let ready = gate.load(Ordering::Acquire);
            Box::pin(async move {
                match ready {
                    true => Ok(()),
                    false => Err(std::io::Error::other("not ready").into()),
                }
            })
        })
        .build()
        .unwrap();
    let key = key_on(&pool, &node.name(), "sync-replica");
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(gone.port())
        .query(&mut node.client())
        .unwrap();
    let _: Result<(), _> = pool.get(&key).unwrap().set(&key, 1);
    let status_now = || status_of(&pool, &node.name());
    assert!(
        support::eventually_blocking(Duration::from_secs(3), || status_now().failed_probes >= 5)
    );
    let status = status_now();
    assert!(!status.up && status.penalties == 1, "{status:?}");
    assert_eq!(status.boxed_for, Some(FailureKind::ReadOnly), "{status:?}");
    // A master now, but the check says no.
    ready.store(false, Ordering::Release);
    let _: () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query(&mut node.client()).unwrap();
    assert!(support::eventually_blocking(Duration::from_secs(3), || {
        status_now().boxed_for == Some(FailureKind::Check)
    }));
    assert!(!status_now().up);
    ready.store(true, Ordering::Release);
    assert!(support::eventually_blocking(Duration::from_secs(3), || status_now().up));
}

/// A `probe_with` check that panics while `panicking` is set (in its future,
/// or `early`: before making it), counting its calls.
fn panicky<C: Send + 'static>(
    panicking: &Arc<AtomicBool>,
    calls: &Arc<AtomicUsize>,
    early: bool,
) -> impl for<'c> Fn(&'c mut C) -> redis::RedisFuture<'c, ()> + Send + Sync + 'static {
    let (gate, count) = (panicking.clone(), calls.clone());
    move |_conn| {
        count.fetch_add(1, Ordering::SeqCst);
        let panic = gate.load(Ordering::Acquire);
        if panic && early {
            panic!("the warm-up check blew up early");
        }
        Box::pin(async move {
            if panic {
                panic!("the warm-up check blew up");
            }
            Ok(())
        })
    }
}

/// While its check panics, the node is boxed for `Check` with the panic's
/// words, and probed again and again; then it returns.
fn panics_fail_probes(
    status: impl Fn() -> fluster::NodeStatus,
    calls: &AtomicUsize,
) -> impl FnMut() -> bool {
    move || {
        let status = status();
        !status.up
            && status.boxed_for == Some(FailureKind::Check)
            && status.last_error.as_deref().unwrap_or("").contains("the warm-up check blew up")
            && calls.load(Ordering::SeqCst) >= 5
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_check_that_panics_fails_its_probe_and_probing_goes_on() {
    let (healthy, mut node) = (RedisServer::start(), RedisServer::start());
    let (panicking, calls) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let pool = builder(&healthy, &node.url())
        .probe_with(panicky(&panicking, &calls, false))
        .build()
        .await
        .unwrap();
    let key = key_on(&pool, &node.name(), "panic");
    panicking.store(true, Ordering::Release);
    node.kill();
    poke(&pool, &key).await;
    node.restart();
    let status = || status_of(&pool, &node.name());
    let failing = eventually(Duration::from_secs(5), panics_fail_probes(status, &calls)).await;
    assert!(failing, "{:?} after {} calls of the check", status(), calls.load(Ordering::SeqCst));
    panicking.store(false, Ordering::Release);
    returns(&pool, &node.name()).await;
}

#[cfg(feature = "r2d2")]
#[test]
fn the_sync_flavour_survives_a_probe_check_that_panics() {
    let (healthy, mut node) = (RedisServer::start(), RedisServer::start());
    let (panicking, calls) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let pool = fluster::sync::ShardedPool::builder()
        .node(&healthy.url())
        .node(&node.url())
        .penalty_min_wait(Duration::from_millis(50))
        .penalty_max_wait(Duration::from_millis(50))
        .penalty_jitter(0.0)
        .penalty_memory(Duration::ZERO)
        .probe_with(panicky(&panicking, &calls, true))
        .build()
        .unwrap();
    let key = key_on(&pool, &node.name(), "sync-panic");
    panicking.store(true, Ordering::Release);
    node.kill();
    if let Ok(mut conn) = pool.get(&key) {
        let _: Result<(), _> = redis::Commands::set(&mut conn, &key, 1);
    }
    node.restart();
    let status = || status_of(&pool, &node.name());
    let failing =
        support::eventually_blocking(Duration::from_secs(5), panics_fail_probes(status, &calls));
    assert!(failing, "{:?} after {} calls of the check", status(), calls.load(Ordering::SeqCst));
    panicking.store(false, Ordering::Release);
    assert!(support::eventually_blocking(Duration::from_secs(3), || status().up));
}
