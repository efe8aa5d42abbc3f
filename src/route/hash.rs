//! The routing function, pinned: a key's hash, each node's seeds, the
//! draws and scores, and [`Router`], which ranks the nodes for a key.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Deref;
use std::sync::Mutex;

use siphasher::sip::SipHasher13;
use siphasher::sip128::SipHasher13 as SipHasher13_128;

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

/// Step 3 of the routing function: the two seeds of a node, from its name.
pub fn node_seeds(name: &str) -> (u64, u64) {
    let h = SipHasher13_128::new_with_keys(HASH_KEY_0, HASH_KEY_1).hash(name.as_bytes());
    (h.h1, h.h2 | 1)
}

/// Step 4 of the routing function: the 128-bit product of `u` and `v`,
/// high half XOR low half.
#[inline]
pub fn fold(u: u64, v: u64) -> u64 {
    let product = u128::from(u) * u128::from(v);
    (product as u64) ^ ((product >> 64) as u64)
}

/// Step 5 for unequal weights: `-w / ln(u)` with `u` in `(0, 1]`.
///
/// `ln` comes from `libm`, a pure-software port of musl's, so the score is
/// bit-for-bit the same on every platform (the system `ln` may differ in
/// the last bit between C libraries, which could flip a near tie).
#[inline]
fn weighted_score(weight: f64, draw: u64) -> f64 {
    let unit = ((draw >> 11) + 1) as f64 / (1u64 << 53) as f64;
    // ln(1) == 0 gives +inf, which is the right answer for the largest draw.
    -weight / libm::log(unit)
}

/// Where a key stands in the queue home during a node's warm-up (slow
/// start): a number in `[0, 1)` from its [`key_hash`], unrelated to its
/// draws. The key goes home once the warm-up's elapsed fraction passes it,
/// so every process sends the same keys home first and none goes back.
/// `fold(hash ^ k0, k1)` with `k0`, `k1` the bytes `slow-sta`, `rt-order|1`.
pub fn warm_threshold(hash: u64) -> f64 {
    const K0: u64 = u64::from_le_bytes(*b"slow-sta");
    const K1: u64 = u64::from_le_bytes(*b"rt-order") | 1;
    (fold(hash ^ K0, K1) >> 11) as f64 / (1u64 << 53) as f64
}

/// The routing table: node names with their seeds and weights.
///
/// Indexes taken and returned by the router are positions in the list given
/// to [`Router::new`]. Inside, nodes are kept in name order (so a tie goes to
/// the first one met, the smaller name), with their seeds in arrays of their
/// own, so a lookup streams through 16 bytes per node.
#[derive(Debug, Clone)]
pub struct Router {
    /// Seeds `a` and `b` of each node, in name order.
    xor_seeds: Vec<u64>,
    mul_seeds: Vec<u64>,
    /// Weights in name order; empty when every weight is the same, so the
    /// equal-weight path compares raw draws and needs no logarithm.
    weights: Vec<f64>,
    /// For each node in name order, its index in the caller's list.
    index: Vec<usize>,
    /// Names in the caller's order.
    names: Vec<NodeName>,
}

impl Router {
    /// Builds a router over `(name, weight)` pairs.
    ///
    /// Weights must be finite and positive and names unique; the pool's
    /// builder checks both before it gets here, and the router does not
    /// check again.
    pub fn new<'a>(nodes: impl IntoIterator<Item = (&'a str, f64)>) -> Self {
        let (names, weights): (Vec<NodeName>, Vec<f64>) =
            nodes.into_iter().map(|(name, weight)| (NodeName::from(name), weight)).unzip();
        let mut index: Vec<usize> = (0..names.len()).collect();
        index.sort_by(|&x, &y| names[x].cmp(&names[y]));
        let (xor_seeds, mul_seeds) = index.iter().map(|&i| node_seeds(&names[i])).unzip();
        let equal = weights.windows(2).all(|w| w[0] == w[1]);
        Router {
            xor_seeds,
            mul_seeds,
            weights: if equal { Vec::new() } else { index.iter().map(|&i| weights[i]).collect() },
            index,
            names,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the router has no nodes.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Name of the node at `index`.
    pub fn name(&self, index: usize) -> &NodeName {
        &self.names[index]
    }

    /// The draw of the node at name-order position `pos` for a key hash.
    #[inline(always)]
    fn draw(&self, hash: u64, pos: usize) -> u64 {
        fold(hash ^ self.xor_seeds[pos], self.mul_seeds[pos])
    }

    /// The key's highest-ranked node among those for which `eligible`
    /// returns true, given the key's [`key_hash`]. One pass, one multiply
    /// per node.
    #[inline]
    pub(crate) fn pick_hashed(
        &self,
        hash: u64,
        mut eligible: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let pos = if self.weights.is_empty() {
            self.best_by(hash, &mut eligible, |_, draw| draw)
        } else {
            self.best_by(hash, &mut eligible, |pos, draw| weighted_score(self.weights[pos], draw))
        };
        pos.map(|pos| self.index[pos])
    }

    /// The home node of a key hash: its first choice when every node is
    /// healthy.
    #[inline]
    pub fn home_hashed(&self, hash: u64) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        let pos = if self.weights.is_empty() {
            self.equal_best(hash)
        } else {
            self.best_by(hash, &mut |_| true, |pos, draw| weighted_score(self.weights[pos], draw))?
        };
        Some(self.index[pos])
    }

    /// The hot path: the position of the largest draw (the first met on a
    /// tie) over a non-empty router of equal weights, no eligibility test.
    /// Two running maxima, of even and of odd positions, so that each
    /// compare waits on half as many before it.
    #[inline(always)]
    fn equal_best(&self, hash: u64) -> usize {
        let mut pairs = self.xor_seeds.chunks_exact(2).zip(self.mul_seeds.chunks_exact(2));
        let (mut even, mut odd) = ((0, 0), (0, 1));
        if let Some((x, m)) = pairs.next() {
            even.0 = fold(hash ^ x[0], m[0]);
            odd.0 = fold(hash ^ x[1], m[1]);
        }
        for (pos, (x, m)) in (2..).step_by(2).zip(pairs) {
            let (a, b) = (fold(hash ^ x[0], m[0]), fold(hash ^ x[1], m[1]));
            if a > even.0 {
                even = (a, pos);
            }
            if b > odd.0 {
                odd = (b, pos + 1);
            }
        }
        let n = self.xor_seeds.len();
        if n % 2 == 1 {
            let last = (self.draw(hash, n - 1), n - 1);
            if n == 1 || last.0 > even.0 {
                even = last;
            }
        }
        // Odd positions exist from two nodes up; a tie goes to the smaller.
        let odd_wins = n >= 2 && (odd.0 > even.0 || (odd.0 == even.0 && odd.1 < even.1));
        if odd_wins { odd.1 } else { even.1 }
    }

    /// The key's home node: its first choice when every node is healthy.
    #[inline]
    pub fn home(&self, key: &[u8]) -> Option<usize> {
        self.home_hashed(key_hash(key))
    }

    /// Every node, best first: the order in which a key fails over.
    pub fn ranking(&self, key: &[u8]) -> Vec<usize> {
        self.ranking_hashed(key_hash(key))
    }

    /// [`ranking`](Self::ranking) of a key hash.
    pub fn ranking_hashed(&self, hash: u64) -> Vec<usize> {
        let mut scored: Vec<(f64, u64, usize)> = (0..self.len())
            .map(|pos| {
                let draw = self.draw(hash, pos);
                let weighted = self.weights.get(pos).map_or(0.0, |&w| weighted_score(w, draw));
                (weighted, draw, pos)
            })
            .collect();
        // Best first; the sort is stable, so equal scores stay in name order.
        if self.weights.is_empty() {
            scored.sort_by_key(|x| std::cmp::Reverse(x.1));
        } else {
            scored.sort_by(|x, y| y.0.total_cmp(&x.0));
        }
        scored.into_iter().map(|(_, _, pos)| self.index[pos]).collect()
    }

    /// Position (in name order) of the best eligible node; the first met
    /// wins a tie.
    #[inline(always)]
    fn best_by<S: PartialOrd + Copy>(
        &self,
        hash: u64,
        eligible: &mut impl FnMut(usize) -> bool,
        score: impl Fn(usize, u64) -> S,
    ) -> Option<usize> {
        let mut best: Option<(S, usize)> = None;
        for pos in 0..self.xor_seeds.len() {
            if !eligible(self.index[pos]) {
                continue;
            }
            let s = score(pos, self.draw(hash, pos));
            match best {
                Some((top, _)) if top >= s => {}
                _ => best = Some((s, pos)),
            }
        }
        best.map(|(_, pos)| pos)
    }
}

/// A node's name, compared and printed as the string it holds
/// (`name == "cache-a"` works).
///
/// `Copy`: handing one out costs two machine words, no allocation and no
/// reference count, so `node_for` writes no cache line other threads read.
/// Each distinct name is stored once per process, for the life of the
/// process (a few bytes per name a pool has ever had).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(&'static str);

impl From<&str> for NodeName {
    fn from(name: &str) -> Self {
        static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&known) = names.get(name) {
            return NodeName(known);
        }
        let stored: &'static str = Box::leak(name.into());
        names.insert(stored);
        NodeName(stored)
    }
}

impl Deref for NodeName {
    type Target = str;
    fn deref(&self) -> &str {
        self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl PartialEq<str> for NodeName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for NodeName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for NodeName {
    fn eq(&self, other: &String) -> bool {
        self.0 == other.as_str()
    }
}

impl PartialEq<NodeName> for String {
    fn eq(&self, other: &NodeName) -> bool {
        other.0 == self.as_str()
    }
}
