//! Properties of the hash-tag parser and the router, over generated input.

use std::collections::BTreeSet;

use fluster::route::{Router, routing_bytes};
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;

/// Keys rich in braces, where hash-tag bugs live.
fn key() -> impl Strategy<Value = Vec<u8>> {
    vec(prop_oneof![Just(b'{'), Just(b'}'), any::<u8>(), b'a'..=b'c'], 0..24)
}

fn node_names() -> impl Strategy<Value = BTreeSet<String>> {
    btree_set("[a-z0-9:.-]{1,12}", 1..12)
}

fn router(names: &BTreeSet<String>) -> Router {
    Router::new(names.iter().map(|n| (n.as_str(), 1.0)))
}

proptest! {
    #[test]
    fn hash_tag_follows_the_redis_cluster_rule(key in key()) {
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
        key in key(),
    ) {
        let r = router(&names);
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
        keys in vec(key(), 1..64),
    ) {
        prop_assume!(names.len() > 1);
        let gone = removed.get(&names.iter().collect::<Vec<_>>()).to_string();
        let before = router(&names);
        let mut rest = names.clone();
        rest.remove(&gone);
        let after = router(&rest);
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
        key in key(),
    ) {
        let names: Vec<String> = (0..weights.len()).map(|i| format!("n{i}")).collect();
        let r = Router::new(names.iter().map(String::as_str).zip(weights.iter().copied()));
        prop_assert_eq!(r.ranking(&key).len(), names.len());
        prop_assert_eq!(r.home(&key), Some(r.ranking(&key)[0]));
    }
}
