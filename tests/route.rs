//! The pinned routing function alone: test vectors and rankings. (The
//! per-call policy that follows a ranking is tested in `src/route/policy.rs`.)

use fluster::NodeName;
use fluster::route::*;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i}")).collect()
}

fn router(names: &[String]) -> Router {
    Router::new(names.iter().map(|n| (n.as_str(), 1.0)))
}

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
