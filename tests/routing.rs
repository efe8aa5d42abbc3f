//! Routing: the pinned function alone (test vectors, rankings, hash
//! tags), its properties over generated input, the spread of a million
//! keys, and a pool of real nodes routing as the router does. (The per-call
//! policy that follows a ranking is tested in `src/route/policy.rs`.)

mod support;

use std::collections::BTreeSet;

use fluster::NodeName;
use fluster::route::*;
use fluster::{RedisManager, ShardedPool};
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;

const KEYS: usize = 1_000_000;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i}")).collect()
}

fn router(names: &[String]) -> Router {
    Router::new(names.iter().map(|n| (n.as_str(), 1.0)))
}

// The pinned function: test vectors and rankings.

#[test]
fn hash_tags_follow_redis_cluster_rules() {
    assert_eq!(routing_bytes(b"{user1000}.following"), b"user1000");
    assert_eq!(routing_bytes(b"{user1000}.followers"), b"user1000");
    assert_eq!(routing_bytes(b"foo{}{bar}"), b"foo{}{bar}");
    assert_eq!(routing_bytes(b"foo{{bar}}zap"), b"{bar");
    assert_eq!(routing_bytes(b"foo{bar}{zap}"), b"bar");
    assert_eq!(routing_bytes(b"foo{bar"), b"foo{bar");
    assert_eq!(routing_bytes(b"foo}bar{"), b"foo}bar{");
    assert_eq!(routing_bytes(b""), b"");
    assert_eq!(routing_bytes(b"{}"), b"{}");
    assert_eq!(routing_bytes(b"{a}"), b"a");
    assert_eq!(key_hash(b"{user1}.a"), key_hash(b"{user1}.b"));
    assert_eq!(key_hash(b"{user1}.a"), key_hash(b"user1"));
}

/// Pins the function across processes, platforms and releases. If this
/// test fails, keys would move between nodes: that is a breaking change.
#[test]
fn test_vectors_pin_the_function() {
    assert_eq!(HASH_KEY_0, 0x2d72_6574_7375_6c66);
    assert_eq!(HASH_KEY_1, 0x7376_7a65_646e_6572);
    assert_eq!(key_hash(b""), 0x8699_77a1_d534_fa9b);
    assert_eq!(key_hash(b"user:42"), 0x8f15_04c7_a856_0bdb);
    assert_eq!(key_hash(b"{user:42}.profile"), key_hash(b"user:42"));
    assert_eq!(node_seeds("cache-a"), (3_730_373_133_418_810_362, 4_252_384_609_249_405_555));
    assert_eq!(fold(1, 3), 3);
    assert_eq!(fold(u64::MAX, u64::MAX), u64::MAX);

    let five = Router::new([("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 1.0), ("e", 1.0)]);
    assert_eq!(five.ranking(b"user:1"), vec![3, 4, 2, 1, 0]);
    assert_eq!(five.ranking(b"user:2"), vec![2, 0, 1, 4, 3]);
    assert_eq!(five.ranking(b"session:abc"), vec![3, 0, 2, 1, 4]);

    let equal = Router::new([("cache-a", 1.0), ("cache-b", 1.0), ("cache-c", 1.0)]);
    let weighted = Router::new([("cache-a", 1.0), ("cache-b", 2.0), ("cache-c", 3.0)]);
    let table: Vec<(String, &str, &str)> = (0..12)
        .map(|i| {
            let key = format!("key:{i}");
            let e: &str = equal.name(equal.home(key.as_bytes()).unwrap());
            let w: &str = weighted.name(weighted.home(key.as_bytes()).unwrap());
            (key, e, w)
        })
        .collect();
    let expected: Vec<(String, &str, &str)> = [
        ("key:0", "cache-c", "cache-c"),
        ("key:1", "cache-c", "cache-c"),
        ("key:2", "cache-a", "cache-b"),
        ("key:3", "cache-c", "cache-c"),
        ("key:4", "cache-c", "cache-c"),
        ("key:5", "cache-c", "cache-c"),
        ("key:6", "cache-c", "cache-c"),
        ("key:7", "cache-b", "cache-b"),
        ("key:8", "cache-c", "cache-c"),
        ("key:9", "cache-c", "cache-c"),
        ("key:10", "cache-a", "cache-a"),
        ("key:11", "cache-b", "cache-b"),
    ]
    .into_iter()
    .map(|(k, e, w)| (k.to_owned(), e, w))
    .collect();
    assert_eq!(table, expected);
}

#[test]
fn ranking_is_a_permutation_led_by_the_home_node() {
    let r = router(&names(10));
    for i in 0..1000 {
        let key = format!("k{i}");
        let ranking = r.ranking(key.as_bytes());
        let mut sorted = ranking.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(Some(ranking[0]), r.home(key.as_bytes()));
    }
}

#[test]
fn list_order_does_not_matter() {
    let forward = names(7);
    let mut backward = forward.clone();
    backward.reverse();
    let (a, b) = (router(&forward), router(&backward));
    for i in 0..5000 {
        let key = format!("key-{i}");
        assert_eq!(
            a.name(a.home(key.as_bytes()).unwrap()),
            b.name(b.home(key.as_bytes()).unwrap())
        );
    }
}

#[test]
fn weighted_ranking_is_a_permutation() {
    let r = Router::new([("a", 1.0), ("b", 2.5), ("c", 0.1), ("d", 7.0)]);
    for i in 0..1000 {
        let key = format!("k{i}");
        let ranking = r.ranking(key.as_bytes());
        let mut sorted = ranking.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3]);
        assert_eq!(Some(ranking[0]), r.home(key.as_bytes()));
    }
}

#[test]
fn empty_router_picks_nothing() {
    let r = Router::new(std::iter::empty());
    assert!(r.is_empty());
    assert_eq!(r.home(b"k"), None);
    assert!(r.ranking(b"k").is_empty());
}

#[test]
fn names_compare_as_strings() {
    let name = NodeName::from("cache-a");
    assert_eq!(name, "cache-a");
    assert_eq!(name, "cache-a".to_owned());
    assert_eq!(format!("{name} {name:?}"), "cache-a \"cache-a\"");
    assert_eq!(Some(name).as_deref(), Some("cache-a"));
}

/// The home is the ranking's head at every size, odd and even: the hot
/// path's two running maxima and their merge agree with the full sort.
#[test]
fn the_home_heads_the_ranking_at_every_size() {
    for n in 1..=17 {
        let r = router(&names(n));
        for i in 0..500 {
            let key = format!("k{i}");
            assert_eq!(r.home(key.as_bytes()), Some(r.ranking(key.as_bytes())[0]), "{n} nodes");
        }
    }
}

// Properties over generated input.

/// Keys rich in braces, where hash-tag bugs live.
fn braced() -> impl Strategy<Value = Vec<u8>> {
    vec(prop_oneof![Just(b'{'), Just(b'}'), any::<u8>(), b'a'..=b'c'], 0..24)
}

fn node_names() -> impl Strategy<Value = BTreeSet<String>> {
    btree_set("[a-z0-9:.-]{1,12}", 1..12)
}

fn router_of(names: &BTreeSet<String>) -> Router {
    Router::new(names.iter().map(|n| (n.as_str(), 1.0)))
}

proptest! {
    #[test]
    fn hash_tag_follows_the_redis_cluster_rule(key in braced()) {
        let tag = routing_bytes(&key);
        match key.iter().position(|&b| b == b'{') {
            None => prop_assert_eq!(tag, &key[..]),
            Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
                Some(len) if len > 0 => prop_assert_eq!(tag, &key[open + 1..open + 1 + len]),
                _ => prop_assert_eq!(tag, &key[..]),
            },
        }
    }

    #[test]
    fn ranking_is_a_permutation_led_by_the_home(
        names in node_names(),
        key in braced(),
    ) {
        let r = router_of(&names);
        let ranking = r.ranking(&key);
        let mut sorted = ranking.clone();
        sorted.sort_unstable();
        prop_assert_eq!(sorted, (0..names.len()).collect::<Vec<_>>());
        prop_assert_eq!(r.home(&key), Some(ranking[0]));
    }

    #[test]
    fn removing_a_node_moves_only_its_own_keys(
        names in node_names(),
        removed in any::<prop::sample::Index>(),
        keys in vec(braced(), 1..64),
    ) {
        prop_assume!(names.len() > 1);
        let gone = removed.get(&names.iter().collect::<Vec<_>>()).to_string();
        let before = router_of(&names);
        let mut rest = names.clone();
        rest.remove(&gone);
        let after = router_of(&rest);
        for key in &keys {
            let old: &str = before.name(before.home(key).unwrap());
            let new: &str = after.name(after.home(key).unwrap());
            if old != gone {
                prop_assert_eq!(old, new);
            } else {
                // Its keys go to their second choice.
                let second = before.ranking(key)[1];
                prop_assert_eq!(before.name(second), new);
            }
        }
    }

    #[test]
    fn weighted_routing_never_panics_and_ranks_every_node(
        weights in vec(0.001f64..1000.0, 1..10),
        key in braced(),
    ) {
        let names: Vec<String> = (0..weights.len()).map(|i| format!("n{i}")).collect();
        let r = Router::new(names.iter().map(String::as_str).zip(weights.iter().copied()));
        prop_assert_eq!(r.ranking(&key).len(), names.len());
        prop_assert_eq!(r.home(&key), Some(r.ranking(&key)[0]));
    }
}

// The spread over a million keys, and a pool of real nodes.

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
    let counts = counts(&router(&names(10)));
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
    let before = router(&all);
    let removed = 3;
    let rest: Vec<String> =
        all.iter().enumerate().filter(|&(i, _)| i != removed).map(|(_, n)| n.clone()).collect();
    let after = router(&rest);
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
    let before = router(&all);
    all.push("node-new".into());
    let after = router(&all);
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
    let router = router(&names(10));
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
