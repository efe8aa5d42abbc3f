//! The gutter (`Builder::gutter_node`) against real servers: a node that
//! carries a hot key dies, and its keys go to the gutter, not to the
//! survivors, whose load stays as it was; without a gutter one survivor
//! takes the hot key. Every write on the gutter is capped; with the gutter
//! boxed too keys go to the survivors; after the return they go home.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fluster::{GUTTER_TTL, ShardedPool};
use redis::AsyncCommands;
use support::{RedisServer, builder_for, eventually, key_on, keys_on, start_servers, status_of};

/// How long each load is measured.
const WINDOW: Duration = Duration::from_secs(2);

/// Commands a server has processed.
fn commands(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(&mut server.client()).unwrap();
    let line = info.lines().find_map(|l| l.strip_prefix("total_commands_processed:"));
    line.unwrap().trim().parse().unwrap()
}

/// A steady load: tasks that each do one command a millisecond, a fifth of
/// them on `hot`, the rest spread over `keys`; every fifth a `SET`.
struct Load {
    ops: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Load {
    fn start(pool: &ShardedPool, hot: &str, keys: Vec<String>) -> Self {
        let (ops, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let keys = Arc::new(keys);
        for task in 0..16u64 {
            let (pool, hot, keys) = (pool.clone(), hot.to_owned(), keys.clone());
            let (ops, stop) = (ops.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = task;
                while !stop.load(Ordering::Relaxed) {
                    i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let key = if (i >> 33) % 5 == 0 {
                        &hot
                    } else {
                        &keys[(i >> 40) as usize % keys.len()]
                    };
                    if let Ok(mut conn) = pool.get(key).await {
                        let done = if (i >> 20) % 5 == 0 {
                            conn.set::<_, _, ()>(key, "v").await.is_ok()
                        } else {
                            conn.get::<_, Option<String>>(key).await.is_ok()
                        };
                        ops.fetch_add(u64::from(done), Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
        }
        Load { ops, stop }
    }

    /// Each server's commands per second over a window, and the load's.
    async fn rates(&self, servers: &[RedisServer], alive: &[bool]) -> (Vec<f64>, f64) {
        let count = |s: &RedisServer, alive: bool| if alive { commands(s) } else { 0 };
        let before: Vec<u64> = servers.iter().zip(alive).map(|(s, &a)| count(s, a)).collect();
        let ops = self.ops.load(Ordering::Relaxed);
        tokio::time::sleep(WINDOW).await;
        let after: Vec<u64> = servers.iter().zip(alive).map(|(s, &a)| count(s, a)).collect();
        let ops = (self.ops.load(Ordering::Relaxed) - ops) as f64 / WINDOW.as_secs_f64();
        let rates = before.iter().zip(&after).map(|(b, a)| (a - b) as f64 / WINDOW.as_secs_f64());
        (rates.collect(), ops)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The survivors' loads after the kill over before, each over the load's
/// own change (a loaded machine slows the load itself, not the share).
async fn survivors_after_a_kill(gutter: bool) -> (Vec<f64>, f64, Vec<RedisServer>, ShardedPool) {
    let mut servers = start_servers(5);
    let builder = builder_for(&servers[..4])
        .penalty_min_wait(Duration::from_millis(300))
        .penalty_max_wait(Duration::from_millis(600));
    let builder = if gutter { builder.gutter_node(&servers[4].url()) } else { builder };
    let pool = builder.build().await.unwrap();
    let victim = servers[0].name();
    let hot = key_on(&pool, &victim, "hot");
    let keys: Vec<String> =
        (0..4).flat_map(|n| keys_on(&pool, &servers[n].name(), "k", 50)).collect();
    let load = Load::start(&pool, &hot, keys);
    tokio::time::sleep(Duration::from_millis(500)).await; // the load settles
    let (before, ops_before) = load.rates(&servers, &[true; 5]).await;
    servers[0].kill();
    assert!(eventually(Duration::from_secs(3), || !status_of(&pool, &victim).up).await);
    let (after, ops_after) = load.rates(&servers, &[false, true, true, true, true]).await;
    let change = ops_after / ops_before;
    let survivors = (1..4).map(|n| after[n] / before[n] / change).collect();
    let gutter_share = after[4] / before[0] / change;
    drop(load);
    (survivors, gutter_share, servers, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_keys_go_to_the_gutter_and_the_survivors_keep_their_load() {
    let (survivors, gutter_share, mut servers, pool) = survivors_after_a_kill(true).await;
    println!(
        "with a gutter: survivors {survivors:.3?}, the gutter took {gutter_share:.3} of the dead node's load"
    );
    for (n, change) in survivors.iter().enumerate() {
        assert!((0.9..=1.1).contains(change), "survivor {n} went from 1 to {change:.3}");
    }
    assert!(gutter_share > 0.8, "the gutter took {gutter_share:.3} of the dead node's load");
    assert!(status_of(&pool, &servers[4].name()).gutter);

    // Every key written on the gutter lives at most the cap.
    let mut gutter = servers[4].client();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut gutter).unwrap();
    assert!(!keys.is_empty(), "nothing was written on the gutter");
    for key in &keys {
        let pttl: i64 = redis::cmd("PTTL").arg(key).query(&mut gutter).unwrap();
        assert!(pttl > 0 && pttl as u128 <= GUTTER_TTL.as_millis(), "{key}: PTTL {pttl}");
    }

    // The gutter boxed too: the dead node's keys go to the survivors, as
    // without a gutter.
    let hot = key_on(&pool, &servers[0].name(), "hot");
    assert_eq!(pool.node_for(&hot).as_deref(), Some(&*servers[4].name()));
    servers[4].kill();
    // The heartbeat finds it, idle as it is now.
    let boxed = || !status_of(&pool, &servers[4].name()).up;
    assert!(eventually(Duration::from_secs(3), boxed).await);
    let next = pool.node_for(&hot).unwrap();
    assert!(next != *servers[0].name() && next != *servers[4].name(), "{next}");

    // Back: the keys go home, and to the gutter no more.
    servers[0].restart();
    servers[4].restart();
    let home = servers[0].name();
    assert!(
        eventually(Duration::from_secs(5), || pool.node_for(&hot).as_deref() == Some(&*home)).await
    );
    let conn = pool.get(&hot).await.unwrap();
    assert!(conn.is_home());
}

/// The same without a gutter: the survivor next in the hot key's ranking
/// takes it, and its load grows by far more than a tenth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_gutter_one_survivor_takes_the_hot_key() {
    let (survivors, _, _servers, _pool) = survivors_after_a_kill(false).await;
    println!("without a gutter: survivors {survivors:.3?}");
    let most = survivors.iter().copied().fold(0.0, f64::max);
    assert!(most > 1.5, "no survivor took the hot key: {survivors:.3?}");
}

/// A pool of gutter nodes alone has nowhere to keep a key: refused.
#[tokio::test]
async fn a_pool_of_gutter_nodes_alone_is_refused() {
    let built = ShardedPool::builder().gutter_node("redis://127.0.0.1:1").build().await;
    match built {
        Err(fluster::Error::Config { setting, reason }) => {
            assert_eq!(setting, "nodes");
            assert!(reason.contains("only gutter nodes"), "{reason}");
        }
        other => panic!("expected a configuration error, got {:?}", other.map(|_| ())),
    }
}

/// Every write on a gutter node is capped, on every path, whatever it is:
/// `fan_out`'s (even of a key whose home is up: the gutter holds nothing
/// of its own), and a `SORT ... STORE` whose destination is not the key
/// the connection was taken for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_on_the_gutter_is_capped_on_every_path() {
    let mut servers = start_servers(3);
    let pool = builder_for(&servers[..2])
        .gutter_node(&servers[2].url())
        .penalty_min_wait(Duration::from_millis(300))
        .penalty_max_wait(Duration::from_millis(600))
        .build()
        .await
        .unwrap();
    let gutter = RedisServer::client(&servers[2]);
    let gutter = std::sync::Mutex::new(gutter);
    let gutter_name = servers[2].name();
    let pttl = |key: &str| -> i64 {
        redis::cmd("PTTL").arg(key).query(&mut *gutter.lock().unwrap()).unwrap()
    };
    let capped = |key: &str| (1..=GUTTER_TTL.as_millis() as i64).contains(&pttl(key));

    // fan_out, every node up: the gutter's copy is capped, the others not.
    let key = key_on(&pool, &servers[0].name(), "fanned");
    let results = pool
        .fan_out(|mut conn| {
            let key = key.clone();
            async move {
                let set = redis::cmd("SET").arg(&key).arg("v").arg("EX").arg(3600).clone();
                (conn.node().to_owned(), conn.is_home(), set.query_async::<()>(&mut conn).await)
            }
        })
        .await;
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(results.iter().all(|(_, r)| r.as_ref().is_ok_and(|(_, _, set)| set.is_ok())));
    assert!(capped(&key), "fan_out on the gutter: PTTL {}", pttl(&key));
    let home_ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut servers[0].client()).unwrap();
    assert!(home_ttl > GUTTER_TTL.as_millis() as i64, "the home's own copy: {home_ttl}");
    for (node, home, _) in results.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        assert_eq!(*home, *node != gutter_name, "{node}: only the gutter is home to nothing");
    }

    // A key's home dies: its SORT ... STORE on the gutter caps the
    // destination, which the connection was not taken for.
    let victim = servers[0].name();
    let [src, dst]: [String; 2] = keys_on(&pool, &victim, "sorted", 2).try_into().unwrap();
    servers[0].kill();
    // The heartbeat finds it.
    assert!(eventually(Duration::from_secs(3), || !status_of(&pool, &victim).up).await);
    let mut conn = pool.get(&src).await.unwrap();
    assert_eq!(conn.node(), gutter_name);
    let _: () = conn.rpush(&src, &[3, 1, 2]).await.unwrap();
    let stored: i64 =
        redis::cmd("SORT").arg(&src).arg("STORE").arg(&dst).query_async(&mut conn).await.unwrap();
    assert_eq!(stored, 3);
    assert!(capped(&src), "the sorted list: PTTL {}", pttl(&src));
    assert!(capped(&dst), "SORT's destination: PTTL {}", pttl(&dst));
}

/// Removing the last node that holds keys would leave the gutter alone,
/// with nowhere to keep a key (`get` would fail with `Closed` on a pool
/// that is not closed): refused, naming why, and the pool serves on. The
/// gutter node itself may go.
#[tokio::test]
async fn the_last_node_holding_keys_cannot_be_removed_while_a_gutter_is_left() {
    let servers = start_servers(3);
    let pool = ShardedPool::builder()
        .named_node("a", &servers[0].url())
        .named_node("b", &servers[1].url())
        .named_gutter_node("g", &servers[2].url())
        .build()
        .await
        .unwrap();
    pool.remove_node("a").unwrap();
    match pool.remove_node("b") {
        Err(fluster::Error::Config { setting, reason }) => {
            assert_eq!(setting, "node name `b`");
            assert!(reason.contains("last node that holds keys"), "{reason}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    assert_eq!(pool.nodes(), ["b", "g"]);
    assert_eq!(pool.home_node_for("k").as_deref(), Some("b"));
    let mut conn = pool.get("k").await.unwrap();
    let _: () = conn.set("k", 1).await.unwrap();
    assert_eq!(pool.get_any().await.unwrap().node(), "b");
    pool.remove_node("g").unwrap();
    assert_eq!(pool.nodes(), ["b"]);
}
