//! Weighted rendezvous (highest-random-weight) hashing over node names.
//!
//! Plain data and functions: no I/O, no clock, no async. The same code routes
//! both flavours of pool: `hash.rs` holds the function and [`Router`];
//! `policy.rs` the per-call choice of which node serves a key now, under
//! the pool's [`Failover`](crate::Failover).
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
//! 3. **Node seeds.** `(a, b) = SipHash-1-3-128(k0, k1, node name as UTF-8)`
//!    (the `h1` and `h2` halves), with the lowest bit of `b` then set, so
//!    `b` is odd. Computed once when the pool is built. The *name* is
//!    hashed, never the address or the position in the list.
//! 4. **Draw.** `x = fold(h ^ a, b)`, where `fold(u, v)` multiplies the two
//!    64-bit numbers into a 128-bit product and XORs its high and low
//!    halves. Each node multiplies by its own odd `b`, so the draws of one
//!    key on different nodes are unrelated.
//! 5. **Score.** With equal weights the score is `x` itself, compared as an
//!    unsigned integer. With unequal weights it is `-w / ln(u)` where
//!    `u = ((x >> 11) + 1) / 2^53`, a uniform draw in `(0, 1]`; this gives each
//!    node exactly its weight's share of keys. `ln` is `libm`'s, the same
//!    bits on every platform.
//! 6. **Ranking.** Nodes are ranked by descending score; equal scores (which
//!    need a 64-bit collision) are ordered by node name, so the result never
//!    depends on the order the nodes were listed in.
//!
//! A lookup thus costs one SipHash of the key plus, per node, one XOR and
//! one 64×64→128-bit multiply.

pub(crate) mod hash;
pub(crate) mod policy;

pub(crate) use hash::NodeName;
pub use hash::{
    HASH_KEY_0, HASH_KEY_1, Router, fold, key_hash, node_seeds, routing_bytes, warm_threshold,
};
