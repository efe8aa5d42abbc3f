//! Weighted rendezvous (highest-random-weight) hashing over node names.
//!
//! Plain data and functions: no I/O, no clock, no async. The same code routes
//! the async pool and any later synchronous flavour.
//!
//! # The function, exactly
//!
//! This is a stable contract: changing any step below moves keys between
//! nodes, so it is a breaking change and the test vectors in this module pin it.
//!
//! 1. **Routing bytes.** If the key contains `{`, and a `}` follows that first
//!    `{` with at least one byte between them, the routing bytes are the bytes
//!    between that `{` and the first `}` after it (Redis Cluster hash tags).
//!    Otherwise they are the whole key.
//! 2. **Key hash.** `h = SipHash-1-3(k0, k1, routing bytes)` with the fixed
//!    keys `k0 = u64::from_le_bytes(*b"fluster-")` and
//!    `k1 = u64::from_le_bytes(*b"rendezvs")`.
//! 3. **Node seed.** `s = SipHash-1-3(k0, k1, node name as UTF-8)`, computed
//!    once when the pool is built. The *name* is hashed, never the address or
//!    the position in the list.
//! 4. **Draw.** `x = mix(h ^ s)`, where `mix` is the SplitMix64 finaliser:
//!    `z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27;
//!    z *= 0x94d049bb133111eb; z ^= z >> 31` (wrapping arithmetic).
//! 5. **Score.** With equal weights the score is `x` itself, compared as an
//!    unsigned integer. With unequal weights it is `-w / ln(u)` where
//!    `u = ((x >> 11) + 1) / 2^53`, a uniform draw in `(0, 1]`; this gives each
//!    node exactly its weight's share of keys.
//! 6. **Ranking.** Nodes are ranked by descending score; equal scores (which
//!    need a 64-bit collision) are ordered by node name, so the result never
//!    depends on the order the nodes were listed in.
//!
//! A lookup thus costs one SipHash of the key plus one multiply-xorshift mix
//! per node.

use siphasher::sip::SipHasher13;

/// First SipHash key of the routing function: the bytes `fluster-`.
pub const HASH_KEY_0: u64 = u64::from_le_bytes(*b"fluster-");
/// Second SipHash key of the routing function: the bytes `rendezvs`.
pub const HASH_KEY_1: u64 = u64::from_le_bytes(*b"rendezvs");

fn siphash(bytes: &[u8]) -> u64 {
    SipHasher13::new_with_keys(HASH_KEY_0, HASH_KEY_1).hash(bytes)
}

/// The bytes of `key` that decide its node: the Redis Cluster hash tag when
/// there is a non-empty one, else the whole key.
///
/// ```
/// use fluster::route::routing_bytes;
/// assert_eq!(routing_bytes(b"{user1000}.following"), b"user1000");
/// assert_eq!(routing_bytes(b"foo{}{bar}"), b"foo{}{bar}");
/// assert_eq!(routing_bytes(b"foo{{bar}}zap"), b"{bar");
/// ```
pub fn routing_bytes(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let after = &key[open + 1..];
    match after.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => &after[..close],
        _ => key,
    }
}

/// Step 2 of the routing function: the hash of a key's routing bytes.
pub fn key_hash(key: &[u8]) -> u64 {
    siphash(routing_bytes(key))
}

/// Step 3 of the routing function: the seed of a node, from its name.
pub fn node_seed(name: &str) -> u64 {
    siphash(name.as_bytes())
}

/// Step 4 of the routing function: the SplitMix64 finaliser.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Step 5 for unequal weights: `-w / ln(u)` with `u` in `(0, 1]`.
#[inline]
fn weighted_score(weight: f64, draw: u64) -> f64 {
    let unit = ((draw >> 11) + 1) as f64 / (1u64 << 53) as f64;
    // ln(1) == 0 gives +inf, which is the right answer for the largest draw.
    -weight / unit.ln()
}

/// One node as the router sees it.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    seed: u64,
    weight: f64,
}

/// The routing table: node names with their seeds and weights.
///
/// Indexes returned by the router are positions in the list given to
/// [`Router::new`].
#[derive(Debug, Clone)]
pub struct Router {
    entries: Vec<Entry>,
    equal_weights: bool,
}

impl Router {
    /// Builds a router over `(name, weight)` pairs.
    ///
    /// Weights must be finite and positive and names unique; the pool's
    /// builder checks both before it gets here, and the router does not
    /// check again.
    pub fn new<'a>(nodes: impl IntoIterator<Item = (&'a str, f64)>) -> Self {
        let entries: Vec<Entry> = nodes
            .into_iter()
            .map(|(name, weight)| Entry {
                name: name.to_owned(),
                seed: node_seed(name),
                weight,
            })
            .collect();
        let equal_weights = entries.windows(2).all(|w| w[0].weight == w[1].weight);
        Router {
            entries,
            equal_weights,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the router has no nodes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Name of the node at `index`.
    pub fn name(&self, index: usize) -> &str {
        &self.entries[index].name
    }

    /// The key's highest-ranked node among those for which `eligible`
    /// returns true, given the key's [`key_hash`]. One pass, one mix per node.
    #[inline]
    pub fn pick_hashed(&self, hash: u64, mut eligible: impl FnMut(usize) -> bool) -> Option<usize> {
        if self.equal_weights {
            self.best_by(hash, &mut eligible, |_, draw| draw)
        } else {
            self.best_by(hash, &mut eligible, |e, draw| {
                weighted_score(e.weight, draw)
            })
        }
    }

    /// The key's highest-ranked node among those for which `eligible`
    /// returns true.
    pub fn pick(&self, key: &[u8], eligible: impl FnMut(usize) -> bool) -> Option<usize> {
        self.pick_hashed(key_hash(key), eligible)
    }

    /// The key's home node: its first choice when every node is healthy.
    pub fn home(&self, key: &[u8]) -> Option<usize> {
        self.pick(key, |_| true)
    }

    /// Every node, best first: the order in which a key fails over.
    pub fn ranking(&self, key: &[u8]) -> Vec<usize> {
        let hash = key_hash(key);
        let mut order: Vec<usize> = (0..self.entries.len()).collect();
        if self.equal_weights {
            order.sort_by(|&a, &b| self.compare(hash, b, a, |_, draw| draw));
        } else {
            order.sort_by(|&a, &b| {
                self.compare(hash, b, a, |e, draw| weighted_score(e.weight, draw))
            });
        }
        order
    }

    #[inline]
    fn draw(&self, hash: u64, index: usize) -> u64 {
        mix(hash ^ self.entries[index].seed)
    }

    fn compare<S: PartialOrd>(
        &self,
        hash: u64,
        a: usize,
        b: usize,
        score: impl Fn(&Entry, u64) -> S,
    ) -> std::cmp::Ordering {
        let (ea, eb) = (&self.entries[a], &self.entries[b]);
        let sa = score(ea, self.draw(hash, a));
        let sb = score(eb, self.draw(hash, b));
        sa.partial_cmp(&sb)
            .unwrap_or(std::cmp::Ordering::Equal)
            // Ties: the smaller name ranks higher, independent of list order.
            .then_with(|| eb.name.cmp(&ea.name))
    }

    #[inline]
    fn best_by<S: PartialOrd + Copy>(
        &self,
        hash: u64,
        eligible: &mut impl FnMut(usize) -> bool,
        score: impl Fn(&Entry, u64) -> S,
    ) -> Option<usize> {
        let mut best: Option<(usize, S)> = None;
        for (index, entry) in self.entries.iter().enumerate() {
            if !eligible(index) {
                continue;
            }
            let s = score(entry, mix(hash ^ entry.seed));
            best = match best {
                Some((b, bs)) if bs > s || (bs == s && self.entries[b].name <= entry.name) => {
                    Some((b, bs))
                }
                _ => Some((index, s)),
            };
        }
        best.map(|(index, _)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(node_seed("cache-a"), 0x0101_32c1_7028_ac2b);
        assert_eq!(mix(0), 0);
        assert_eq!(mix(1), 0x5692_161d_100b_05e5);

        let equal = Router::new([("cache-a", 1.0), ("cache-b", 1.0), ("cache-c", 1.0)]);
        let weighted = Router::new([("cache-a", 1.0), ("cache-b", 2.0), ("cache-c", 3.0)]);
        let table: Vec<(String, &str, &str)> = (0..12)
            .map(|i| {
                let key = format!("key:{i}");
                let e = equal.name(equal.home(key.as_bytes()).unwrap());
                let w = weighted.name(weighted.home(key.as_bytes()).unwrap());
                (key, e, w)
            })
            .collect();
        let expected: Vec<(String, &str, &str)> = [
            ("key:0", "cache-c", "cache-c"),
            ("key:1", "cache-c", "cache-c"),
            ("key:2", "cache-b", "cache-b"),
            ("key:3", "cache-c", "cache-c"),
            ("key:4", "cache-b", "cache-c"),
            ("key:5", "cache-c", "cache-c"),
            ("key:6", "cache-a", "cache-a"),
            ("key:7", "cache-a", "cache-a"),
            ("key:8", "cache-b", "cache-c"),
            ("key:9", "cache-a", "cache-c"),
            ("key:10", "cache-b", "cache-b"),
            ("key:11", "cache-c", "cache-c"),
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
            // Excluding the first k nodes of the ranking picks the next one.
            for k in 1..10 {
                let excluded = &ranking[..k];
                let next = r.pick(key.as_bytes(), |n| !excluded.contains(&n));
                assert_eq!(next, Some(ranking[k]));
            }
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
}
