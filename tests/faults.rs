//! Faults that arrive on connections already open: error replies that say
//! the node cannot serve (`LOADING`, `READONLY`, `NOAUTH`) box it from
//! ordinary traffic on every path (pooled, shared, one reply inside a
//! pipeline); ordinary error replies (`WRONGTYPE`, `OOM`) never do; and a
//! partition that keeps sockets open is left by `get_shared` as by `get`.

mod support;

use std::time::{Duration, Instant};

use fluster::{FailureKind, ShardedPool};
use redis::{Cmd, Value};
use support::fake::FakeServer;
use support::proxy::Proxy;
use support::{RedisServer, eventually, status_of};

/// The three ways a command reaches a node.
#[derive(Debug, Clone, Copy)]
enum Path {
    Pooled,
    Shared,
    Pipeline,
}

const PATHS: [Path; 3] = [Path::Pooled, Path::Shared, Path::Pipeline];

/// Sends `cmd` for `key` on `path`; returns the node that served it and
/// whether its reply (or every reply, for a pipeline) was an error.
async fn send(pool: &ShardedPool, path: Path, key: &str, cmd: Cmd) -> (String, bool) {
    match path {
        Path::Pooled => {
            let mut conn = pool.get(key).await.unwrap();
            let failed = cmd.query_async::<Value>(&mut conn).await.is_err();
            (conn.node().to_owned(), failed)
        }
        Path::Shared => {
            let mut conn = pool.get_shared(key).await.unwrap();
            let failed = cmd.query_async::<Value>(&mut conn).await.is_err();
            (conn.node().to_owned(), failed)
        }
        Path::Pipeline => {
            let node = pool.node_for(key).unwrap().to_string();
            let mut pipe = pool.pipeline();
            pipe.add(key, redis::cmd("PING")).add(key, cmd);
            let replies = pipe.query_async().await.unwrap();
            (node, replies[1].is_err())
        }
    }
}

fn set(key: &str) -> Cmd {
    redis::cmd("SET").arg(key).arg("value").clone()
}

/// A pool of `healthy` and the node at `url`, whose stays in the box are
/// long enough to look at; and a key homed on that node.
async fn pool_with(healthy: &RedisServer, url: &str, name: &str) -> (ShardedPool, String) {
    let pool = ShardedPool::builder()
        .node(&healthy.url())
        .node(url)
        .penalty_min_wait(Duration::from_secs(30))
        .penalty_max_wait(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    assert!(pool.status().iter().all(|s| s.up), "{:?}", pool.status());
    let key = support::key_on(&pool, name, "fault");
    (pool, key)
}

/// The node is boxed for `kind`, and its key now goes to the other node.
fn assert_boxed(pool: &ShardedPool, name: &str, key: &str, kind: FailureKind, path: Path) {
    let status = status_of(pool, name);
    assert!(!status.up, "{path:?}: not boxed: {status:?}");
    assert_eq!(status.boxed_for, Some(kind), "{path:?}: {status:?}");
    assert_ne!(pool.node_for(key).as_deref(), Some(name), "{path:?}");
}

#[tokio::test]
async fn loading_and_masterdown_replies_box_the_node_on_every_path() {
    let healthy = RedisServer::start();
    let replies = [
        ("-LOADING Redis is loading the dataset in memory\r\n", FailureKind::Loading),
        ("-MASTERDOWN Link with MASTER is down\r\n", FailureKind::MasterDown),
    ];
    for ((reply, kind), path) in replies.into_iter().flat_map(|r| PATHS.map(|p| (r, p))) {
        // Serves at build; then the reply, on connections already open.
        let loading = FakeServer::start("+OK\r\n");
        let (pool, key) = pool_with(&healthy, &loading.url(), &loading.name()).await;
        loading.set_reply(reply);
        let (served, failed) = send(&pool, path, &key, set(&key)).await;
        assert_eq!(served, loading.name());
        assert!(failed, "{path:?}: the caller sees the {kind} reply");
        assert_boxed(&pool, &loading.name(), &key, kind, path);
        let (served, failed) = send(&pool, path, &key, set(&key)).await;
        assert_eq!((served, failed), (healthy.name(), false), "{path:?}: served elsewhere");
    }
}

#[tokio::test]
async fn a_master_demoted_to_replica_is_boxed_by_its_readonly_replies() {
    let healthy = RedisServer::start();
    // The new master is down, so the replica never loads a data set (which
    // would answer LOADING instead): every write gets READONLY.
    let mut gone = RedisServer::start();
    gone.kill();
    for path in PATHS {
        let demoted = RedisServer::start();
        let (pool, key) = pool_with(&healthy, &demoted.url(), &demoted.name()).await;
        assert_eq!(send(&pool, path, &key, set(&key)).await, (demoted.name(), false));
        let _: () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(gone.port())
            .query(&mut demoted.client())
            .unwrap();
        let (served, failed) = send(&pool, path, &key, set(&key)).await;
        assert_eq!((served, failed), (demoted.name(), true), "{path:?}");
        assert_boxed(&pool, &demoted.name(), &key, FailureKind::ReadOnly, path);
    }
}

#[tokio::test]
async fn a_server_restarted_with_a_password_is_boxed_by_noauth_on_open_sockets() {
    let healthy = RedisServer::start();
    for path in PATHS {
        let mut server = RedisServer::start();
        // Behind a TCP proxy the pool's sockets outlive the server: the next
        // command meets the restarted server on an old, unauthenticated one.
        let proxy = Proxy::start(server.port());
        let name = proxy.url().trim_start_matches("redis://").to_owned();
        let (pool, key) = pool_with(&healthy, &proxy.url(), &name).await;
        assert_eq!(send(&pool, path, &key, set(&key)).await, (name.clone(), false));
        server.restart_with(&["--requirepass", "secret"]);
        let (served, failed) = send(&pool, path, &key, set(&key)).await;
        assert_eq!((served, failed), (name.clone(), true), "{path:?}");
        assert_boxed(&pool, &name, &key, FailureKind::Auth, path);
    }
}

#[tokio::test]
async fn ordinary_error_replies_never_box_a_node() {
    let (healthy, server) = (RedisServer::start(), RedisServer::start());
    let (pool, key) = pool_with(&healthy, &server.url(), &server.name()).await;
    let mut admin = server.client();
    for path in PATHS {
        assert_eq!(send(&pool, path, &key, set(&key)).await, (server.name(), false));
        let lpush = redis::cmd("LPUSH").arg(&key).arg("x").clone();
        assert_eq!(send(&pool, path, &key, lpush).await, (server.name(), true), "WRONGTYPE");
        let _: () =
            redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1).query(&mut admin).unwrap();
        let oom = send(&pool, path, &key, set(&key)).await;
        let _: () =
            redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query(&mut admin).unwrap();
        assert_eq!(oom, (server.name(), true), "{path:?}: OOM");
        let status = status_of(&pool, &server.name());
        assert!(status.up && status.penalties == 0, "{path:?}: {status:?}");
        assert_eq!(pool.node_for(&key).as_deref(), Some(server.name().as_str()));
    }
}

/// With a node partitioned (its sockets open, nothing answering), a
/// `get_shared` whose connect hangs on it moves to the next node as soon as
/// ordinary traffic boxes it, not after the whole connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_shared_leaves_a_partitioned_node_once_it_is_boxed() {
    let (healthy, server) = (RedisServer::start(), RedisServer::start());
    let proxy = Proxy::start(server.port());
    let name = proxy.url().trim_start_matches("redis://").to_owned();
    let response_timeout = Duration::from_millis(200);
    let pool = ShardedPool::builder()
        .node(&healthy.url())
        .node(&proxy.url())
        .connect_timeout(Duration::from_secs(5))
        .response_timeout(response_timeout)
        .checkout_timeout(Duration::from_secs(5))
        .min_idle(Some(4))
        .penalty_min_wait(Duration::from_secs(30))
        .penalty_max_wait(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    // Traffic has connections open when the partition starts.
    let warm = eventually(Duration::from_secs(5), || status_of(&pool, &name).idle_connections >= 4);
    assert!(warm.await, "{:?}", pool.status());
    let key = support::key_on(&pool, &name, "partition");
    // A multiplexed connection exists, then the partition starts and its
    // first command times out: the next `get_shared` must connect anew.
    assert_eq!(send(&pool, Path::Shared, &key, set(&key)).await, (name.clone(), false));
    proxy.silence();
    assert_eq!(send(&pool, Path::Shared, &key, set(&key)).await, (name.clone(), true));

    let shared = tokio::spawn({
        let (pool, key) = (pool.clone(), key.clone());
        async move {
            let conn = pool.get_shared(&key).await.unwrap();
            (conn.node().to_owned(), Instant::now())
        }
    });
    // Ordinary traffic on open pooled connections times out, and boxes the
    // node (the shared timeout above was the first of three).
    let traffic = (0..3).map(|_| send(&pool, Path::Pooled, &key, set(&key)));
    futures_util::future::join_all(traffic).await;
    assert!(eventually(Duration::from_secs(2), || !status_of(&pool, &name).up).await);
    let boxed_at = Instant::now();
    let (served, returned_at) = tokio::time::timeout(Duration::from_secs(3), shared)
        .await
        .expect("get_shared waited out the connect timeout")
        .unwrap();
    assert_eq!(served, healthy.name());
    let lag = returned_at.saturating_duration_since(boxed_at);
    println!("get_shared moved on {lag:?} after the node was boxed");
    assert!(lag < response_timeout, "get_shared lagged {lag:?} behind the boxing");
}

/// A server that answers with bytes that are not RESP is a failed node:
/// the pool boxes it, and no caller is handed that connection again.
#[tokio::test]
async fn garbage_bytes_box_the_node() {
    let healthy = RedisServer::start();
    for path in PATHS {
        let garbage = FakeServer::start("+OK\r\n");
        let (pool, key) = pool_with(&healthy, &garbage.url(), &garbage.name()).await;
        garbage.set_reply("this is not RESP\r\n");
        let (served, failed) = send(&pool, path, &key, set(&key)).await;
        assert_eq!((served, failed), (garbage.name(), true), "{path:?}");
        let status = status_of(&pool, &garbage.name());
        assert!(!status.up, "{path:?}: {status:?}");
        let error = status.last_error.unwrap();
        assert!(!error.contains(['\n', '\r']), "{path:?}: the error spans lines: {error:?}");
        let (served, failed) = send(&pool, path, &key, set(&key)).await;
        assert_eq!((served, failed), (healthy.name(), false), "{path:?}: served elsewhere");
    }
}

/// `CLIENT KILL` of the pool's connections: the command in flight on a
/// killed socket fails, the node is boxed like one that reset it, and it is
/// back at its next probe, its keys home.
#[tokio::test]
async fn client_kill_costs_one_command_and_one_short_stay() {
    let (healthy, server) = (RedisServer::start(), RedisServer::start());
    let pool = ShardedPool::builder()
        .node(&healthy.url())
        .node(&server.url())
        .penalty_min_wait(Duration::from_millis(50))
        .penalty_max_wait(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let key = support::key_on(&pool, &server.name(), "kill");
    assert_eq!(send(&pool, Path::Pooled, &key, set(&key)).await, (server.name(), false));
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut server.client())
        .unwrap();
    assert!(killed >= 1);
    let (_, failed) = send(&pool, Path::Pooled, &key, set(&key)).await;
    assert!(failed, "the command on the killed socket fails");
    let back = eventually(Duration::from_secs(2), || status_of(&pool, &server.name()).up);
    assert!(back.await);
    assert_eq!(send(&pool, Path::Pooled, &key, set(&key)).await, (server.name(), false));
}
