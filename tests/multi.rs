//! Multi-node operations and live membership against real nodes: sharded
//! pipelines, MGET/MSET/DEL split by node, fan-out, replica sets, and nodes
//! added and removed under traffic.

// The example reads its nodes as `Config` does (feature `serde`).
#[cfg(feature = "serde")]
#[path = "../examples/fan_out.rs"]
#[allow(dead_code)]
mod fan_out_example;
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluster::{Error, ShardedPool};
use redis::{AsyncCommands, Value};
use support::{RedisServer, eventually, start_servers};

/// A `MONITOR` session on a server: every command it runs, with the client
/// address that sent it.
struct Monitor {
    lines: Arc<Mutex<Vec<(String, String)>>>,
    stream: TcpStream,
}

impl Monitor {
    fn start(server: &RedisServer) -> Self {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        stream.write_all(b"MONITOR\r\n").unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut ok = String::new();
        reader.read_line(&mut ok).unwrap();
        assert_eq!(ok.trim(), "+OK");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            // +1700000000.123456 [0 127.0.0.1:54321] "SET" "key" "value"
            for line in reader.lines().map_while(Result::ok) {
                let Some(open) = line.find('[') else { continue };
                let Some(close) = line[open..].find(']') else {
                    continue;
                };
                let client =
                    line[open + 1..open + close].split_whitespace().nth(1).unwrap_or("").to_owned();
                let command = line[open + close + 1..].trim().to_owned();
                sink.lock().unwrap().push((client, command));
            }
        });
        Monitor { lines, stream }
    }

    /// Commands seen whose text contains `marker`, with their clients.
    fn seen(&self, marker: &str) -> Vec<(String, String)> {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|(_, c)| c.contains(marker)).cloned().collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[tokio::test]
async fn a_pipeline_of_a_thousand_commands_goes_out_as_one_pipeline_per_node() {
    let servers = start_servers(4);
    let pool = support::pool_of(&servers, Duration::from_secs(10)).await;
    let monitors: Vec<Monitor> = servers.iter().map(Monitor::start).collect();
    // One key holds a string, so an LPUSH on it fails in place.
    let mut conn = pool.get("pipe:wrongtype").await.unwrap();
    let _: () = conn.set("pipe:wrongtype", "text").await.unwrap();
    drop(conn);

    let mut pipe = pool.pipeline();
    let mut expected_by_node: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..1000 {
        let key = format!("pipe:{i}");
        pipe.add(&key, redis::cmd("INCRBY").arg(&key).arg(i).clone());
        expected_by_node.entry(pool.node_for(&key).unwrap().to_string()).or_default().push(key);
    }
    pipe.add("pipe:wrongtype", redis::cmd("LPUSH").arg("pipe:wrongtype").arg("x").clone());
    assert_eq!(pipe.len(), 1001);
    let replies = pipe.query_async().await.unwrap();

    assert_eq!(replies.len(), 1001);
    for (i, reply) in replies[..1000].iter().enumerate() {
        assert_eq!(reply.as_ref().unwrap(), &Value::Int(i as i64), "reply {i} out of order");
    }
    let err = replies[1000].as_ref().unwrap_err().to_string();
    assert!(err.contains("WRONGTYPE"), "{err}");

    // What each node saw: its own group, in the order added, all from one
    // client connection.
    for (server, monitor) in servers.iter().zip(&monitors) {
        let expected = &expected_by_node[&server.name()];
        assert!(
            eventually(Duration::from_secs(5), || monitor.seen("\"pipe:").len() >= expected.len())
                .await,
            "{} saw {} of {} commands",
            server.name(),
            monitor.seen("\"pipe:").len(),
            expected.len()
        );
        let seen: Vec<(String, String)> = monitor.seen("\"INCRBY\"").into_iter().collect();
        let clients: std::collections::HashSet<&String> = seen.iter().map(|(c, _)| c).collect();
        assert_eq!(
            clients.len(),
            1,
            "{} got its group on {} connections",
            server.name(),
            clients.len()
        );
        let keys: Vec<String> =
            seen.iter().map(|(_, c)| c.split('"').nth(3).unwrap().to_owned()).collect();
        assert_eq!(&keys, expected, "{} got its group out of order", server.name());
        println!("{}: {} commands on one connection ({:?})", server.name(), keys.len(), clients);
    }
}

#[tokio::test]
async fn mget_equals_single_gets_and_mset_del_round_trip() {
    let servers = start_servers(3);
    let pool = support::pool_of(&servers, Duration::from_secs(10)).await;
    let keys: Vec<String> = (0..1000).map(|i| format!("multi:{i}")).collect();
    let pairs: Vec<(String, i64)> = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(i, k)| (k.clone(), i as i64))
        .collect();
    pool.mset(&pairs).await.unwrap();

    let values: Vec<Option<i64>> = pool.mget(&keys).await.unwrap();
    assert_eq!(values.len(), keys.len());
    for (key, value) in keys.iter().zip(&values) {
        let mut conn = pool.get(key).await.unwrap();
        let single: Option<i64> = conn.get(key).await.unwrap();
        assert_eq!(&single, value, "{key}");
    }
    assert_eq!(values.iter().filter(|v| v.is_none()).count(), 334);

    let removed = pool.del(&keys).await.unwrap();
    assert_eq!(removed, pairs.len() as u64);
    let after: Vec<Option<i64>> = pool.mget(&keys).await.unwrap();
    assert!(after.iter().all(Option::is_none));
}

#[cfg(feature = "serde")]
#[tokio::test]
async fn fan_out_merge_equals_one_node_holding_everything() {
    let servers = start_servers(3);
    let single = RedisServer::start();
    let pool = support::pool_of(&servers, Duration::from_secs(10)).await;
    let mut reference = single.client();
    // Members written to whichever node each writer's key lands on, some
    // members several times with different scores.
    for i in 0..300 {
        let member = format!("player-{}", i % 120);
        let score = (i * 7919) % 1000;
        // Every writer keeps a member's highest score on its node (GT).
        let mut conn = pool.get(format!("writer:{i}")).await.unwrap();
        let _: () = redis::cmd("ZADD")
            .arg("board")
            .arg("GT")
            .arg(score)
            .arg(&member)
            .query_async(&mut conn)
            .await
            .unwrap();
        // The reference keeps the highest score, as the merge must.
        let _: () = redis::cmd("ZADD")
            .arg("board")
            .arg("GT")
            .arg(score)
            .arg(&member)
            .query(&mut reference)
            .unwrap();
    }
    let merged = fan_out_example::zrevrange_merged(&pool, "board", 25).await.unwrap();
    let mut expected: Vec<(String, i64)> = redis::cmd("ZREVRANGE")
        .arg("board")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut reference)
        .unwrap();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    expected.truncate(25);
    assert_eq!(merged, expected);

    let per_node = pool
        .fan_out(|mut conn| async move { conn.zcard::<_, usize>("board").await.unwrap() })
        .await;
    assert_eq!(per_node.len(), 3);
    assert!(per_node.iter().all(|(_, r)| r.is_ok()));
}

#[cfg(feature = "serde")]
#[tokio::test]
async fn queue_consumer_follows_nodes_as_they_leave_and_return() {
    let mut servers = start_servers(3);
    let pool = ShardedPool::builder()
        .node(&servers[0].url())
        .node(&servers[1].url())
        .node(&servers[2].url())
        .penalty_min_wait(Duration::from_millis(50))
        .penalty_max_wait(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let wait = Duration::from_millis(50);
    servers[2].kill();
    // The round that meets the dead node boxes it; the next skip it.
    let _ = fan_out_example::pop_round(&pool, "q", wait).await;
    assert!(!pool.status()[2].up);
    for s in &servers[..2] {
        let _: () = redis::cmd("LPUSH")
            .arg("q")
            .arg(format!("job-{}", s.port()))
            .query(&mut s.client())
            .unwrap();
    }
    let jobs = fan_out_example::pop_round(&pool, "q", wait).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");

    servers[2].restart();
    assert!(eventually(Duration::from_secs(5), || pool.status()[2].up).await);
    let _: () = redis::cmd("LPUSH").arg("q").arg("back").query(&mut servers[2].client()).unwrap();
    let jobs = fan_out_example::pop_round(&pool, "q", wait).await;
    assert_eq!(jobs, vec!["back".to_owned()]);
}

#[tokio::test]
async fn get_n_replaces_only_the_member_that_died() {
    let mut servers = start_servers(4);
    let pool = support::pool_of(&servers, Duration::from_secs(10)).await;
    let key = "replicated:item";
    let pair: Vec<String> =
        pool.get_n(key, 2).await.unwrap().iter().map(|c| c.node().to_owned()).collect();
    assert_eq!(pair.len(), 2);
    assert_eq!(pair[0], pool.home_node_for(key).unwrap());
    let victim = pair[1].clone();
    let server = servers.iter_mut().find(|s| s.name() == victim).unwrap();
    server.kill();
    for mut conn in pool.get_n(key, 2).await.unwrap() {
        let _ = redis::cmd("PING").query_async::<()>(&mut conn).await;
    }
    assert!(pool.status().iter().any(|s| s.name == victim && !s.up));
    let after: Vec<String> =
        pool.get_n(key, 2).await.unwrap().iter().map(|c| c.node().to_owned()).collect();
    assert_eq!(after[0], pair[0], "the surviving member stays");
    assert_ne!(after[1], victim);
    let third = pool.get_n(key, 4).await.unwrap();
    assert_eq!(third.len(), 3, "three healthy nodes left");
    assert_eq!(after[1], third[1].node(), "the replacement is the next in the ranking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_and_removing_a_node_under_traffic() {
    let servers = start_servers(5);
    // Timeouts far above any stall of a loaded machine: an error here can
    // only come from the membership change itself.
    let pool = support::builder_for(&servers[..4])
        .penalty_min_wait(Duration::from_secs(10))
        .penalty_max_wait(Duration::from_secs(20))
        .response_timeout(Duration::from_secs(5))
        .checkout_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let keys: Vec<String> = (0..100_000).map(|i| format!("member:{i}")).collect();
    let before: Vec<String> = keys.iter().map(|k| pool.node_for(k).unwrap().to_string()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    let traffic: Vec<_> = (0..16)
        .map(|t| {
            let (pool, stop, errors, ops) =
                (pool.clone(), stop.clone(), errors.clone(), ops.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("traffic:{t}:{}", i % 100);
                    let ok = match pool.get(&key).await {
                        Ok(mut conn) => conn.incr::<_, _, i64>(&key, 1).await.is_ok(),
                        Err(_) => false,
                    };
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let wait_for_ops = |n: u64| {
        let ops = ops.clone();
        async move {
            let target = ops.load(Ordering::Relaxed) + n;
            assert!(
                eventually(Duration::from_secs(10), || ops.load(Ordering::Relaxed) >= target).await
            );
        }
    };
    wait_for_ops(500).await;

    pool.add_node("fifth", &servers[4].url()).await.unwrap();
    wait_for_ops(500).await;
    let added: Vec<String> = keys.iter().map(|k| pool.node_for(k).unwrap().to_string()).collect();
    let moved = before.iter().zip(&added).filter(|(b, a)| b != a).count();
    for (b, a) in before.iter().zip(&added) {
        assert!(b == a || a == "fifth", "a key moved from {b} to {a}");
    }
    let share = moved as f64 / keys.len() as f64 * 100.0;
    println!("adding a fifth node moved {share:.2}% of keys");
    assert!((share - 20.0).abs() <= 1.0, "moved {share:.2}%");
    assert!(matches!(pool.add_node("fifth", &servers[4].url()).await, Err(Error::Config { .. })));

    pool.remove_node("fifth").unwrap();
    wait_for_ops(500).await;
    let removed: Vec<String> = keys.iter().map(|k| pool.node_for(k).unwrap().to_string()).collect();
    assert_eq!(removed, before, "removing it moved exactly its keys back");
    assert!(pool.remove_node("fifth").is_err());

    stop.store(true, Ordering::Relaxed);
    for task in traffic {
        task.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "traffic saw errors");
    // The removed node's connections close once nothing uses them.
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || {
            let list: String =
                redis::cmd("CLIENT").arg("LIST").query(&mut servers[4].client()).unwrap();
            list.lines().count() == 1
        })
        .await,
        "connections to the removed node stayed open ({:?})",
        started.elapsed()
    );
}

/// A node that died unnoticed fails its own group's commands in place,
/// each error naming it; the other groups' replies are unaffected, and
/// once it is boxed its keys are routed to the next node.
#[tokio::test]
async fn a_dead_node_fails_only_its_group_then_its_keys_move() {
    let mut servers = start_servers(3);
    let pool = support::pool_of(&servers, Duration::from_secs(10)).await;
    let victim = servers[0].name();
    let keys: Vec<String> = (0..300).map(|i| format!("dead:{i}")).collect();
    fn build<'p>(pool: &'p ShardedPool, keys: &[String]) -> fluster::ShardedPipeline<'p> {
        let mut pipe = pool.pipeline();
        for key in keys {
            pipe.add(key, redis::cmd("INCR").arg(key).clone());
        }
        pipe
    }
    let homes: Vec<String> =
        keys.iter().map(|k| pool.home_node_for(k).unwrap().to_string()).collect();
    servers[0].kill();

    let replies = build(&pool, &keys).query_async().await.unwrap();
    for (reply, home) in replies.iter().zip(&homes) {
        if *home == victim {
            // Its error names the node and is redis's own: a dropped
            // connection, not "broken pipe" alone.
            let e = reply.as_ref().expect_err("a command for the dead node succeeded");
            assert!(e.to_string().starts_with(&format!("node `{victim}`: ")), "{e}");
            assert_eq!(e.node(), Some(victim.as_str()));
            assert!(e.redis_error().is_some_and(|r| r.is_connection_dropped()), "{e:?}");
        } else {
            assert_eq!(reply.as_ref().unwrap(), &Value::Int(1));
        }
    }
    assert!(!pool.status()[0].up, "the failed group boxed its node");

    let replies = build(&pool, &keys).query_async().await.unwrap();
    for (reply, home) in replies.iter().zip(&homes) {
        let expected = if *home == victim { 1 } else { 2 };
        assert_eq!(reply.as_ref().unwrap(), &Value::Int(expected));
    }
}

/// Removing a boxed node frees its place under the cascade guard's cap, so
/// the next node that fails can be boxed.
#[tokio::test]
async fn removing_a_boxed_node_frees_its_place_in_the_box() {
    let mut servers = start_servers(3);
    let pool = support::builder_for(&servers)
        .max_boxed_fraction(0.34) // one node of three at a time
        .penalty_min_wait(Duration::from_secs(30))
        .penalty_max_wait(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let names: Vec<String> = servers.iter().map(RedisServer::name).collect();
    let box_node = |index: usize| {
        let pool = pool.clone();
        let name = names[index].clone();
        async move {
            let key = support::key_on(&pool, &name, "cap");
            let deadline = Instant::now() + Duration::from_secs(5);
            while pool.status().iter().any(|s| s.name == name && s.up) {
                assert!(Instant::now() < deadline, "{name} was never boxed");
                if let Ok(mut conn) = pool.get(&key).await {
                    let _ = redis::cmd("PING").query_async::<()>(&mut conn).await;
                }
            }
        }
    };
    servers[0].kill();
    box_node(0).await;
    pool.remove_node(&names[0]).unwrap();
    servers[1].kill();
    box_node(1).await;
    let status = pool.status();
    assert_eq!(status.len(), 2);
    assert!(!status[0].up && status[1].up, "{status:?}");
}

/// A transaction's watched keys must go where its key goes whatever the
/// nodes' health. Two keys that share a home by chance part when it is
/// boxed (each goes to the next node in its own ranking), so the
/// transaction would watch one where the other's writes do not land:
/// refused, naming the key and a hash tag. Keys with one tag, or (without
/// a warm-up) with the same ranking, are accepted; under `FailFast` the
/// same home is enough.
#[tokio::test]
async fn watched_keys_must_be_routed_like_the_transactions_key() {
    let mut servers = start_servers(4);
    let pool = support::builder_for(&servers)
        .penalty_min_wait(Duration::from_secs(30))
        .penalty_max_wait(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let key = "tx:account";
    let names = pool.nodes();
    let router = fluster::route::Router::new(names.iter().map(|n| (n.as_str(), 1.0)));
    let ranking = |k: &str| router.ranking(k.as_bytes());
    let candidates: Vec<String> = (0..10_000).map(|i| format!("tx:other:{i}")).collect();
    let same_home = |k: &&String| pool.home_node_for(k.as_str()) == pool.home_node_for(key);
    // Its first stand-in is not the key's.
    let parted = candidates.iter().filter(same_home).find(|k| ranking(k)[1] != ranking(key)[1]);
    let parted = parted.unwrap();
    let alike = candidates.iter().filter(same_home).find(|k| ranking(k) == ranking(key)).unwrap();
    let tx = |watched: &str| {
        let watched = [watched.to_owned()];
        let pool = pool.clone();
        async move {
            let watched: Vec<&str> = watched.iter().map(String::as_str).collect();
            pool.transaction(key, &watched, async |_, _| Ok(Some(()))).await
        }
    };
    match tx(parted).await {
        Err(Error::Config { setting, reason }) => {
            assert_eq!(setting, format!("watched key `{parted}`"));
            assert!(reason.contains("hash tag") && reason.contains(key), "{reason}");
        }
        other => panic!("{parted} was accepted: {other:?}"),
    }
    tx(alike).await.unwrap();
    tx(key).await.unwrap();
    let tagged = pool.transaction("{acct}.a", &["{acct}.b"], async |_, _| Ok(Some(())));
    tagged.await.unwrap();

    // Why: with their home boxed, the refused pair parts; the other not.
    let home = pool.home_node_for(key).unwrap().to_string();
    let server = servers.iter_mut().find(|s| s.name() == home).unwrap();
    server.kill();
    if let Ok(mut conn) = pool.get(key).await {
        let _ = conn.set::<_, _, ()>(key, 1).await;
    }
    let boxed = || !support::status_of(&pool, &home).up;
    assert!(eventually(Duration::from_secs(3), boxed).await);
    assert_ne!(pool.node_for(key), pool.node_for(parted.as_str()));
    assert_eq!(pool.node_for(key), pool.node_for(alike.as_str()));

    // With a warm-up a returning node takes keys back by their hash: the
    // same ranking is not enough. Under `FailFast` the same home is.
    server.restart();
    let warm = support::builder_for(&servers).warmup(Duration::from_secs(10));
    let warm = warm.build().await.unwrap();
    let refused = warm.transaction(key, &[alike.as_str()], async |_, _| Ok(Some(()))).await;
    assert!(matches!(refused, Err(Error::Config { .. })), "{refused:?}");
    let fail_fast = support::builder_for(&servers).failover(fluster::Failover::FailFast);
    let fail_fast = fail_fast.build().await.unwrap();
    let watched = [parted.as_str()];
    fail_fast.transaction(key, &watched, async |_, _| Ok(Some(()))).await.unwrap();
}

/// A checkout waiting on a node when it is removed leaves it at once for
/// the key's next node. A removed node is never boxed, so the checkout
/// used to wait for that node's connection until its checkout timeout: a
/// torture run whose timeouts were a year hung there (seed 5218: a `get`
/// on a drained node whose connects stalled behind its `MIGRATE`s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_waiting_on_a_removed_node_leaves_it() {
    let servers = start_servers(3);
    let builder =
        ShardedPool::builder().max_connections(1).checkout_timeout(Duration::from_secs(60));
    let pool = ["a", "b", "c"]
        .iter()
        .zip(&servers)
        .fold(builder, |b, (name, s)| b.named_node(name, &s.url()))
        .build()
        .await
        .unwrap();
    let key = support::key_on(&pool, "a", "removed");
    // `a`'s only connection, held: the next checkout of `a` waits.
    let held = pool.get(&key).await.unwrap();
    let mut waiting = Box::pin({
        let (pool, key) = (pool.clone(), key.clone());
        async move { pool.get(&key).await.map(|conn| conn.node().to_string()) }
    });
    let polled =
        std::future::poll_fn(|cx| std::task::Poll::Ready(waiting.as_mut().poll(cx).is_pending()));
    assert!(polled.await, "the checkout waits for `a`'s connection");
    pool.remove_node("a").unwrap();
    let served = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the checkout still waited on the removed node")
        .unwrap();
    assert_ne!(served, "a");
    assert_eq!(Some(served.as_str()), pool.node_for(&key).as_deref());
    drop(held);
}
