//! Distribution properties of the router over a million keys, and routing
//! through a pool of real nodes.

mod support;

use fluster::route::Router;
use fluster::{RedisManager, ShardedPool};

const KEYS: usize = 1_000_000;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i}")).collect()
}

fn equal(names: &[String]) -> Router {
    Router::new(names.iter().map(|n| (n.as_str(), 1.0)))
}

fn key(i: usize) -> String {
    format!("user:{i}")
}

/// Keys per node index.
fn counts(router: &Router) -> Vec<usize> {
    let mut counts = vec![0; router.len()];
    for i in 0..KEYS {
        counts[router.home(key(i).as_bytes()).unwrap()] += 1;
    }
    counts
}

#[test]
fn a_million_keys_spread_evenly_over_ten_nodes() {
    let counts = counts(&equal(&names(10)));
    let expected = KEYS as f64 / 10.0;
    let chi_square: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
    println!("counts {counts:?}, chi-square {chi_square:.2}");
    // 27.88 is the 0.1% critical value for 9 degrees of freedom.
    assert!(chi_square < 27.88, "chi-square {chi_square:.2} with {counts:?}");
    for &c in &counts {
        let off = (c as f64 - expected).abs() / expected;
        assert!(off <= 0.012, "node with {c} keys is {:.2}% off", off * 100.0);
    }
}

#[test]
fn weights_one_to_four_give_their_shares() {
    let router = Router::new([("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0)]);
    let counts = counts(&router);
    for (i, &c) in counts.iter().enumerate() {
        let share = c as f64 / KEYS as f64 * 100.0;
        let want = (i + 1) as f64 * 10.0;
        println!("weight {} share {share:.3}%", i + 1);
        assert!((share - want).abs() <= 0.5, "weight {} got {share:.3}%", i + 1);
    }
}

#[test]
fn removing_a_node_moves_only_its_keys_evenly() {
    let all = names(10);
    let before = equal(&all);
    let removed = 3;
    let rest: Vec<String> =
        all.iter().enumerate().filter(|&(i, _)| i != removed).map(|(_, n)| n.clone()).collect();
    let after = equal(&rest);
    let mut received = std::collections::HashMap::<String, usize>::new();
    let mut moved = 0;
    for i in 0..KEYS {
        let k = key(i);
        let old: &str = before.name(before.home(k.as_bytes()).unwrap());
        let new: &str = after.name(after.home(k.as_bytes()).unwrap());
        if old == all[removed] {
            moved += 1;
            *received.entry(new.to_owned()).or_default() += 1;
        } else {
            assert_eq!(old, new, "key {k} moved although its node stayed");
        }
    }
    let fair = moved as f64 / 9.0;
    for (name, got) in &received {
        let off = (*got as f64 - fair).abs() / fair;
        assert!(off <= 0.10, "{name} got {got} of {moved} moved keys");
    }
    assert_eq!(received.len(), 9);
}

#[test]
fn adding_an_eleventh_node_moves_one_eleventh_all_to_it() {
    let mut all = names(10);
    let before = equal(&all);
    all.push("node-new".into());
    let after = equal(&all);
    let mut moved = 0;
    for i in 0..KEYS {
        let k = key(i);
        let old = before.name(before.home(k.as_bytes()).unwrap());
        let new = after.name(after.home(k.as_bytes()).unwrap());
        if old != new {
            assert_eq!(new, "node-new", "key {k} moved between old nodes");
            moved += 1;
        }
    }
    let share = moved as f64 / KEYS as f64 * 100.0;
    println!("moved {share:.3}% of keys");
    assert!((share - 100.0 / 11.0).abs() <= 0.5, "moved {share:.3}%");
}

#[test]
fn hash_tags_route_together() {
    let router = equal(&names(10));
    let home = |k: &str| router.name(router.home(k.as_bytes()).unwrap()).to_owned();
    assert_eq!(home("{user1000}.following"), home("user1000"));
    assert_eq!(home("{user1000}.followers"), home("user1000"));
    assert_eq!(home("foo{{bar}}zap"), home("{bar"));
    assert_eq!(home("foo{bar}{zap}"), home("bar"));
    // Whole-key cases: different keys with the same "tag" need not agree.
    let whole =
        (0..50).filter(|i| home(&format!("foo{{}}{{bar}}{i}")) != home("foo{}{bar}")).count();
    assert!(whole > 0, "foo{{}}{{bar}}... must hash whole");
}

/// The pool routes exactly like the router, by name, whatever the order
/// its nodes were listed in, and keys with a shared tag land together on
/// the real node.
#[tokio::test]
async fn pool_routes_like_the_router_in_any_order() {
    let servers = support::start_servers(3);
    let build = |order: &[usize]| {
        let mut b = ShardedPool::builder();
        for &i in order {
            b = b.named_node(&format!("n{i}"), &servers[i].url());
        }
        b.build()
    };
    let forward = build(&[0, 1, 2]).await.unwrap();
    let backward = build(&[2, 0, 1]).await.unwrap();
    let router = Router::new([("n0", 1.0), ("n1", 1.0), ("n2", 1.0)]);
    for i in 0..2000 {
        let k = key(i);
        let want: &str = router.name(router.home(k.as_bytes()).unwrap());
        assert_eq!(forward.node_for(&k).as_deref(), Some(want));
        assert_eq!(backward.node_for(&k).as_deref(), Some(want));
    }

    let mut a = forward.get("{cart:7}.items").await.unwrap();
    let mut b = forward.get("{cart:7}.total").await.unwrap();
    assert_eq!(a.node(), b.node());
    let _: () = redis::cmd("SET").arg("{cart:7}.items").arg(3).query_async(&mut a).await.unwrap();
    let items: i64 = redis::cmd("GET").arg("{cart:7}.items").query_async(&mut b).await.unwrap();
    assert_eq!(items, 3);
}

/// `RedisManager` is the default; the type parameter need not be spelt.
#[test]
fn default_manager_is_redis() {
    fn takes(_: Option<ShardedPool>) {}
    takes(None::<ShardedPool<RedisManager>>);
}
