//! Connections are handed back clean: what one caller leaves on a pooled
//! connection (an open MULTI or WATCH, a SELECT, a SUBSCRIBE, a client name,
//! a response timeout, a command cancelled mid-flight) never reaches the
//! next; the shared path refuses, unsent, what it cannot carry; and
//! optimistic transactions retry until they apply.

mod support;

use std::time::{Duration, Instant};

use fluster::ShardedPool;
use redis::{AsyncCommands, Value};
use support::RedisServer;

/// A pool of one node, one connection, its URL selecting db 2.
async fn one_connection(server: &RedisServer) -> ShardedPool {
    ShardedPool::builder()
        .node(&format!("{}/2", server.url()))
        .max_connections(1)
        .build()
        .await
        .unwrap()
}

/// What a caller may leave behind on its connection.
#[derive(Debug, Clone, Copy)]
enum Leak {
    Multi,
    Watch,
    Select,
    Subscribe,
    ClientName,
    ResponseTimeout,
}

async fn leave(pool: &ShardedPool, leak: Leak) {
    let mut conn = pool.get("leak").await.unwrap();
    let _: Value = match leak {
        Leak::Multi => redis::cmd("MULTI").query_async(&mut conn).await.unwrap(),
        Leak::Watch => redis::cmd("WATCH").arg("watched").query_async(&mut conn).await.unwrap(),
        Leak::Select => redis::cmd("SELECT").arg(5).query_async(&mut conn).await.unwrap(),
        Leak::Subscribe => {
            redis::cmd("SUBSCRIBE").arg("news").query_async(&mut conn).await.unwrap()
        }
        Leak::ClientName => {
            redis::cmd("CLIENT").arg("SETNAME").arg("leaked").query_async(&mut conn).await.unwrap()
        }
        Leak::ResponseTimeout => {
            conn.set_response_timeout(Duration::from_micros(1));
            Value::Nil
        }
    };
    // The caller returns early: no EXEC, no UNWATCH, no SELECT 2.
}

#[tokio::test]
async fn what_a_caller_leaves_on_its_connection_never_reaches_the_next() {
    let server = RedisServer::start();
    let mut admin = server.client();
    for leak in [
        Leak::Multi,
        Leak::Watch,
        Leak::Select,
        Leak::Subscribe,
        Leak::ClientName,
        Leak::ResponseTimeout,
    ] {
        let pool = one_connection(&server).await;
        leave(&pool, leak).await;
        // Someone else touches the watched key: a WATCH left behind would
        // abort the next caller's transaction.
        let _: () = redis::cmd("SELECT").arg(2).query(&mut admin).unwrap();
        let _: () = redis::Commands::set(&mut admin, "watched", "changed").unwrap();
        let counter = format!("counter:{leak:?}");
        for i in 1..=100 {
            let mut conn = pool.get(&counter).await.unwrap();
            let n: i64 = conn.incr(&counter, 1).await.unwrap_or_else(|e| panic!("{leak:?}: {e}"));
            assert_eq!(n, i, "{leak:?}");
            let name: Option<String> =
                redis::cmd("CLIENT").arg("GETNAME").query_async(&mut conn).await.unwrap();
            assert_eq!(name, None, "{leak:?}: the client name carried over");
        }
        let in_db2: i64 = redis::Commands::get(&mut admin, &counter).unwrap();
        assert_eq!(in_db2, 100, "{leak:?}: the writes belong in the URL's db");
        let mut conn = pool.get("atomic").await.unwrap();
        let applied: Option<(i64,)> =
            redis::pipe().atomic().incr("atomic", 1).query_async(&mut conn).await.unwrap();
        assert!(applied.is_some(), "{leak:?}: the next atomic pipeline was aborted");
        assert_eq!(pool.status()[0].penalties, 0, "{leak:?}: no failure of the node");
        let _: () = redis::cmd("FLUSHALL").query(&mut admin).unwrap();
    }
}

#[tokio::test]
async fn a_command_cancelled_by_its_caller_leaves_nothing_pending() {
    let server = RedisServer::start();
    let pool = ShardedPool::builder()
        .node(&server.url())
        .max_connections(1)
        .response_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let mut conn = pool.get("queue").await.unwrap();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        conn.blpop::<_, Option<(String, String)>>("queue", 2.0),
    )
    .await;
    assert!(cancelled.is_err(), "the caller's own timeout fired");
    drop(conn);
    let started = Instant::now();
    let mut conn = pool.get("other").await.unwrap();
    let _: Option<String> = conn.get("other").await.unwrap();
    let took = started.elapsed();
    // With the BLPOP still pending on the connection, this GET would have
    // waited for it (up to 2 s).
    assert!(took < Duration::from_secs(1), "the next command waited {took:?}");
    let status = &pool.status()[0];
    assert!(status.up && status.consecutive_timeouts == 0, "{status:?}");
}

/// `calls` of `command` the server has run (INFO commandstats).
fn calls(server: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut server.client()).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn the_shared_path_refuses_what_it_cannot_carry_without_sending_it() {
    let server = RedisServer::start();
    let pool = ShardedPool::builder().node(&server.url()).build().await.unwrap();
    let refused: [(&str, redis::Cmd); 9] = [
        ("select", redis::cmd("SELECT").arg(3).clone()),
        ("multi", redis::cmd("MULTI")),
        ("exec", redis::cmd("EXEC")),
        ("watch", redis::cmd("WATCH").arg("k").clone()),
        ("subscribe", redis::cmd("SUBSCRIBE").arg("news").clone()),
        ("blpop", redis::cmd("BLPOP").arg("q").arg(1).clone()),
        ("wait", redis::cmd("WAIT").arg(0).arg(0).clone()),
        ("monitor", redis::cmd("MONITOR")),
        ("client|reply", redis::cmd("CLIENT").arg("REPLY").arg("OFF").clone()),
    ];
    let before: Vec<u64> = refused.iter().map(|(name, _)| calls(&server, name)).collect();
    let mut shared = pool.get_shared("k").await.unwrap();
    for (name, cmd) in &refused {
        let error = cmd.query_async::<Value>(&mut shared).await.unwrap_err().to_string();
        let word = name.split('|').next().unwrap().to_uppercase();
        assert!(error.contains(&word) && error.contains("ShardedPool::get"), "{error}");
    }
    let piped = redis::pipe().get("k").cmd("SELECT").arg(4).query_async::<Value>(&mut shared).await;
    assert!(piped.is_err(), "a pipeline carrying SELECT is refused whole");
    let after: Vec<u64> = refused.iter().map(|(name, _)| calls(&server, name)).collect();
    assert_eq!(before, after, "a refused command reached the server");
    assert_eq!(pool.status()[0].penalties, 0);

    // Atomic pipelines are sent whole, so they stay correct side by side.
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.get_shared("{pair}.a").await.unwrap();
                let (a, b): (i64, i64) = redis::pipe()
                    .atomic()
                    .incr("{pair}.a", 1)
                    .incr("{pair}.b", 1)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                assert_eq!(a, b, "another task's commands landed inside the transaction");
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let (a, b): (i64, i64) =
        redis::pipe().get("{pair}.a").get("{pair}.b").query(&mut server.client()).unwrap();
    assert_eq!((a, b), (100, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_transactions_retry_until_every_increment_applies() {
    let servers = support::start_servers(3);
    let pool = support::builder_for(&servers).build().await.unwrap();
    let (tasks, each) = (20, 25);
    let runs: Vec<_> = (0..tasks)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..each {
                    pool.transaction("{tx}.n", &["{tx}.n"], async |conn, pipe| {
                        let n: Option<i64> = conn.get("{tx}.n").await?;
                        pipe.set("{tx}.n", n.unwrap_or(0) + 1).ignore();
                        Ok(pipe.query_async::<Option<()>>(conn).await?)
                    })
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for run in runs {
        run.await.unwrap();
    }
    let mut conn = pool.get("{tx}.n").await.unwrap();
    let n: i64 = conn.get("{tx}.n").await.unwrap();
    assert_eq!(n, tasks * each);
    // Node names carry random ports: find a key that really lives elsewhere.
    let home = pool.home_node_for("{tx}.n").unwrap();
    let other = pool.nodes().into_iter().find(|n| *n != *home).unwrap();
    let elsewhere = support::key_on(&pool, &other, "elsewhere");
    let watched = [elsewhere.as_str()];
    let stray = pool.transaction("{tx}.n", &watched, async |_, _| Ok(Some(())));
    assert!(stray.await.is_err(), "watched keys on another node are refused");
}
