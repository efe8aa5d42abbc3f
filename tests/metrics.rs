//! What the pool records through the `metrics` facade, read back with
//! `metrics-util`'s debugging recorder: the process's own, installed by the
//! first test, or one set on the thread of a test whose runtime (current
//! thread) runs every task of its pool.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use fluster::metrics::{
    ASIDE_TOTAL, CHECKOUT_SECONDS, CHECKOUTS_TOTAL, CONNECTIONS, CONNECTIONS_CLOSED_TOTAL,
    FAILOVERS_TOTAL, FAILURES_TOTAL, FLEET_NEWS_TOTAL, IDLE_CONNECTIONS,
    NEAR_CACHE_EVICTIONS_TOTAL, NEAR_CACHE_HITS_TOTAL, NEAR_CACHE_INVALIDATIONS_TOTAL,
    NEAR_CACHE_MISSES_TOTAL, NODE_UP, PENALTIES_TOTAL, PROBES_TOTAL, STAND_IN_WRITES_TOTAL,
    SUBSCRIPTIONS,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use redis::AsyncCommands;
use support::{RedisServer, eventually, keys_homed_on};

/// Readings of the debugging recorder. Its snapshots drain what they read
/// (counters and gauges are swapped to 0), so counters are summed over
/// snapshots here and a gauge is only read right after the pool set it.
struct Readings {
    snapshotter: Snapshotter,
    counters: HashMap<String, u64>,
    /// The latest snapshot, by `name{label=value,...}`.
    latest: HashMap<String, DebugValue>,
    /// Every metric name seen so far.
    seen: std::collections::HashSet<String>,
}

fn key_text(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

impl Readings {
    /// Takes a snapshot, checking on the way that every metric is
    /// described and that no label holds `secret`.
    fn take(&mut self, secret: &str) {
        self.latest.clear();
        for (key, unit, description, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            assert!(description.is_some(), "{} has no description", key.name());
            if key.name().ends_with("_seconds") {
                assert_eq!(unit, Some(metrics::Unit::Seconds));
            }
            let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
            for (_, v) in &labels {
                assert!(!v.contains(secret), "label of {} holds the secret", key.name());
            }
            assert!(
                fluster::metrics::ALL.contains(&key.name()),
                "{} is not in metrics::ALL",
                key.name()
            );
            self.seen.insert(key.name().to_owned());
            let text = key_text(key.name(), &labels);
            if let DebugValue::Counter(n) = value {
                *self.counters.entry(text.clone()).or_default() += n;
            }
            self.latest.insert(text, value);
        }
    }

    fn gauge(&self, name: &str, node: &str) -> f64 {
        match self.latest.get(&key_text(name, &[("node", node)])) {
            Some(DebugValue::Gauge(v)) => v.into_inner(),
            other => panic!("{name} for {node}: {other:?}"),
        }
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.counters.get(&key_text(name, labels)).copied().unwrap_or(0)
    }
}

#[tokio::test]
async fn node_metrics_follow_a_kill_and_a_restart() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("first recorder in this process");

    let mut victim = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let other = RedisServer::start();
    let pool = fluster::ShardedPool::builder()
        .node(&format!("redis://:s3cret@127.0.0.1:{}", victim.port()))
        .node(&other.url())
        .penalty_min_wait(Duration::from_millis(100))
        .penalty_max_wait(Duration::from_millis(200))
        .invalidate_on_return(true)
        .near_cache(100)
        .fleet("metrics")
        .build()
        .await
        .unwrap();
    let name = victim.name();
    let key = keys_homed_on(&pool, "metrics").into_iter().find(|(n, _)| *n == name).unwrap().1;
    let mut r = Readings {
        snapshotter,
        counters: HashMap::new(),
        latest: HashMap::new(),
        seen: Default::default(),
    };
    let secret = "s3cret";

    let mut conn = pool.get(&key).await.unwrap();
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    drop(conn);
    r.take(secret);
    assert_eq!(r.gauge(NODE_UP, &name), 1.0);
    assert!(r.counter(CHECKOUTS_TOTAL, &[("node", &name)]) >= 1);
    let near = [
        NEAR_CACHE_HITS_TOTAL,
        NEAR_CACHE_MISSES_TOTAL,
        NEAR_CACHE_INVALIDATIONS_TOTAL,
        NEAR_CACHE_EVICTIONS_TOTAL,
    ];
    for metric in near {
        assert!(r.latest.contains_key(&key_text(metric, &[("node", &name)])), "{metric} at zero");
    }
    let stand_ins = ["remembered", "invalidated", "dropped"];
    for result in stand_ins {
        let key = key_text(STAND_IN_WRITES_TOTAL, &[("node", &name), ("result", result)]);
        assert!(r.latest.contains_key(&key), "{key} is not born at zero");
    }
    assert!(matches!(
        r.latest.get(&key_text(CHECKOUT_SECONDS, &[("node", &name)])),
        Some(DebugValue::Histogram(h)) if !h.is_empty()
    ));
    // Shared checkouts are checkouts too (the first connects the shared
    // connection; the five after it find it live).
    drop(pool.get_shared(&key).await.unwrap());
    r.take(secret);
    let pooled = r.counter(CHECKOUTS_TOTAL, &[("node", &name)]);
    for _ in 0..5 {
        let mut shared = pool.get_shared(&key).await.unwrap();
        let _: () = redis::cmd("PING").query_async(&mut shared).await.unwrap();
    }
    r.take(secret);
    assert_eq!(r.counter(CHECKOUTS_TOTAL, &[("node", &name)]), pooled + 5);
    // Each of them was served at once, so each counts as a wait of 0 (no
    // clock is read for it).
    let waits = |r: &Readings, node: &str| match r
        .latest
        .get(&key_text(CHECKOUT_SECONDS, &[("node", node)]))
    {
        Some(DebugValue::Histogram(h)) => h.iter().map(|v| v.into_inner()).collect::<Vec<f64>>(),
        other => panic!("{CHECKOUT_SECONDS} for {node}: {other:?}"),
    };
    assert_eq!(waits(&r, &name), [0.0; 5]);
    // A checkout that waits for the only connection counts its wait.
    let waiter = fluster::ShardedPool::builder()
        .named_node("waiter", &other.url())
        .max_connections(1)
        .build()
        .await
        .unwrap();
    let held = waiter.get("k").await.unwrap();
    let second = tokio::spawn({
        let waiter = waiter.clone();
        async move { drop(waiter.get("k").await.unwrap()) }
    });
    // One turn of this (current-thread) runtime: the second `get` starts
    // and waits; it has waited at least as long as this holds on after.
    tokio::task::yield_now().await;
    let hold = Duration::from_millis(100);
    tokio::time::sleep(hold).await;
    drop(held);
    second.await.unwrap();
    r.take(secret);
    let waited = waits(&r, "waiter");
    let counted = waited.iter().any(|&w| w >= hold.as_secs_f64());
    assert!(counted, "no wait of {hold:?} counted: {waited:?}");
    waiter.close();
    // The near cache's figures, sampled each second.
    for _ in 0..3 {
        let _: Option<i64> = pool.get_shared(&key).await.unwrap().get(&key).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while r.counter(NEAR_CACHE_HITS_TOTAL, &[("node", &name)]) < 2 {
        assert!(std::time::Instant::now() < deadline, "no near cache hits counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.take(secret);
    }
    assert_eq!(r.counter(NEAR_CACHE_MISSES_TOTAL, &[("node", &name)]), 1);
    // Reads of 150 keys through a near cache of 100 entries evict 50 (or
    // more: a shard fills before the others), and change none.
    for key in support::keys_on(&pool, &name, "evicted", 150) {
        let _: Option<i64> = pool.get_shared(&key).await.unwrap().get(&key).await.unwrap();
    }
    let node = [("node", name.as_str())];
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while r.counter(NEAR_CACHE_EVICTIONS_TOTAL, &node) < 50 {
        let evicted = r.counter(NEAR_CACHE_EVICTIONS_TOTAL, &node);
        assert!(std::time::Instant::now() < deadline, "{evicted} evictions counted of 50");
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.take(secret);
    }
    let entries = pool.status().into_iter().find(|s| s.name == name).unwrap().near_cache_entries;
    let evicted = r.counter(NEAR_CACHE_EVICTIONS_TOTAL, &node);
    assert_eq!(entries.unwrap() + evicted, 151, "every entry is held or counted as evicted");
    assert_eq!(r.counter(NEAR_CACHE_INVALIDATIONS_TOTAL, &node), 0, "nothing changed");

    // A cache-aside miss is counted by what became of it.
    let fill = || async { Ok::<_, std::io::Error>(7_i64) };
    let filled: i64 = pool.aside("metrics:aside", Duration::from_secs(60), fill).await.unwrap();
    assert_eq!(filled, 7);
    let served = pool.node_for("metrics:aside").unwrap().to_string();
    r.take(secret);
    assert_eq!(r.counter(ASIDE_TOTAL, &[("node", &served), ("outcome", "filled")]), 1);

    // Killed while the pool is idle: the heartbeat finds it, so the gauge
    // tells the truth without a single request.
    victim.kill();
    assert!(eventually(Duration::from_secs(3), || !pool.status()[0].up).await);
    r.take(secret);
    assert_eq!(r.gauge(NODE_UP, &name), 0.0);
    assert_eq!(r.counter(PENALTIES_TOTAL, &[("node", &name)]), 1);
    let failures: u64 = ["dropped", "refused", "io"]
        .iter()
        .map(|kind| r.counter(FAILURES_TOTAL, &[("node", &name), ("kind", kind)]))
        .sum();
    assert!(failures >= 1);
    // It told the fleet, on the other node, once.
    let told = [("node", name.as_str()), ("news", "boxed"), ("way", "sent")];
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while r.counter(FLEET_NEWS_TOTAL, &told) == 0 {
        assert!(std::time::Instant::now() < deadline, "the boxing was not told");
        tokio::time::sleep(Duration::from_millis(20)).await;
        r.take(secret);
    }
    assert_eq!(r.counter(FLEET_NEWS_TOTAL, &told), 1);

    for _ in 0..10 {
        let conn = pool.get(&key).await.unwrap();
        assert_eq!(conn.node(), other.name());
    }
    r.take(secret);
    assert_eq!(r.counter(FAILOVERS_TOTAL, &[("node", &name)]), 10);
    assert_eq!(r.counter(FAILOVERS_TOTAL, &[("node", &other.name())]), 0);
    // Every path counts its failovers through the one routing policy: a
    // shared checkout, each key of a multi-key command, each command of a
    // pipeline.
    let _ = pool.get_shared(&key).await.unwrap();
    let _: Vec<Option<i64>> = pool.mget(&[&key, &key]).await.unwrap();
    let mut pipe = pool.pipeline();
    pipe.add(&key, redis::cmd("PING").clone());
    assert!(pipe.query_async().await.unwrap()[0].is_ok());
    r.take(secret);
    assert_eq!(r.counter(FAILOVERS_TOTAL, &[("node", &name)]), 14);
    // A write a stand-in takes is remembered for the return.
    let mut conn = pool.get(&key).await.unwrap();
    let _: () = redis::cmd("SET").arg(&key).arg(1).query_async(&mut conn).await.unwrap();
    drop(conn);
    let stand_in = |r: &Readings, result| {
        r.counter(STAND_IN_WRITES_TOTAL, &[("node", &name), ("result", result)])
    };
    r.take(secret);
    assert_eq!(stand_in(&r, "remembered"), 1);

    victim.restart();
    assert!(eventually(Duration::from_secs(5), || pool.status()[0].up).await);
    r.take(secret);
    assert_eq!(r.gauge(NODE_UP, &name), 1.0);
    assert_eq!(r.counter(PENALTIES_TOTAL, &[("node", &name)]), 1);
    assert!(r.counter(PROBES_TOTAL, &[("node", &name), ("result", "ok")]) >= 1);
    assert_eq!(pool.get(&key).await.unwrap().node(), name);
    assert!(
        eventually(Duration::from_secs(2), || pool.status()[0].stand_in_invalidated == 1).await
    );
    r.take(secret);
    assert_eq!((stand_in(&r, "invalidated"), stand_in(&r, "dropped")), (1, 0));
    // Every metric the crate lists was recorded, and nothing else was.
    for name in fluster::metrics::ALL {
        assert!(r.seen.contains(*name), "{name} is listed but never recorded");
    }
}

/// A removed node's series stay (the facade cannot delete one), with its
/// gauges at 0 for good: `fluster_node_up`, `fluster_connections`,
/// `fluster_idle_connections` and `fluster_subscriptions` read as a node
/// that is not there. The node that stays keeps its own.
#[tokio::test]
async fn a_removed_nodes_gauges_read_zero() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let servers = support::start_servers(2);
    let pool = fluster::ShardedPool::builder()
        .named_node("stays", &servers[0].url())
        .named_node("goes", &servers[1].url())
        .build()
        .await
        .unwrap();
    // Each node holds the connection its probe at build made, and the
    // prober's first round (which this yield lets run) copied that count.
    tokio::task::yield_now().await;
    let goes = support::status_of(&pool, "goes");
    assert!(goes.up && goes.pool.connections >= 1, "{goes:?}");
    let channel =
        (0..).map(|i| format!("news:{i}")).find(|c| pool.home_node_for(c) == Some("goes".into()));
    let _subscription = pool.subscribe(channel.unwrap()).await.unwrap();
    pool.remove_node("goes").unwrap();
    let mut r = Readings {
        snapshotter,
        counters: HashMap::new(),
        latest: HashMap::new(),
        seen: Default::default(),
    };
    r.take("no secret here");
    for gauge in [NODE_UP, CONNECTIONS, IDLE_CONNECTIONS, SUBSCRIPTIONS] {
        assert_eq!(r.gauge(gauge, "goes"), 0.0, "{gauge} of the removed node");
    }
    assert_eq!(r.gauge(NODE_UP, "stays"), 1.0);
}

/// Every metric of `metrics::ALL` exists for each node right after
/// `build`, before any event: each label value known up front at zero
/// (`fluster_aside_total` and `fluster_fleet_news_total` appeared only at
/// their first event).
#[tokio::test]
async fn every_metric_exists_at_zero_right_after_build() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let server = RedisServer::start();
    let pool =
        fluster::ShardedPool::builder().named_node("only", &server.url()).build().await.unwrap();
    let mut series: HashMap<String, Vec<String>> = HashMap::new();
    for (key, _, _, _) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
        assert!(labels.contains(&("node", "only")), "{} has no node label", key.name());
        series.entry(key.name().to_owned()).or_default().push(key_text(key.name(), &labels));
    }
    for name in fluster::metrics::ALL {
        assert!(series.contains_key(*name), "{name} does not exist right after build");
    }
    let labelled: [(&str, &str, &[&str]); 6] = [
        (ASIDE_TOTAL, "outcome", &["filled", "voided", "failed", "waited", "took_over"]),
        (PROBES_TOTAL, "result", &["ok", "failed"]),
        (STAND_IN_WRITES_TOTAL, "result", &["remembered", "invalidated", "dropped"]),
        (CONNECTIONS_CLOSED_TOTAL, "reason", &["broken", "idle", "lifetime"]),
        (FLEET_NEWS_TOTAL, "news", &["boxed", "returned"]),
        (FAILURES_TOTAL, "kind", &["refused", "io", "dropped"]),
    ];
    for (name, label, values) in labelled {
        for value in values {
            let found = series[name].iter().any(|s| s.contains(&format!("{label}={value}")));
            assert!(found, "{name}{{{label}={value}}} does not exist right after build");
        }
    }
    for way in ["sent", "heard"] {
        assert!(series[FLEET_NEWS_TOTAL].iter().any(|s| s.contains(&format!("way={way}"))));
    }
    pool.close();
}
