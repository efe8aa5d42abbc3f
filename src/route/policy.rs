//! The routing policy for one call: which node serves a key now, and
//! which next if that one is found boxed ([`Cursor`]), under the pool's
//! [`Failover`]. Pure: which nodes are usable is asked of the caller.

use super::hash::Router;

/// What `get(key)` does when the key's node is in the penalty box.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failover {
    /// Serve the key from the next healthy node in its ranking (the
    /// default): always up, at the price of duplicates while the node is
    /// away.
    #[default]
    Reroute,
    /// Return [`Error::NodeDown`](crate::Error::NodeDown) naming the node:
    /// for data that must not be duplicated or split.
    FailFast,
}

/// Why a [`Cursor`] found no node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The router has no nodes.
    Empty,
    /// Under [`Failover::FailFast`]: the key's home node (this index) is
    /// not usable.
    Home(usize),
    /// No usable node is left in the key's ranking.
    None,
}

/// The routing policy for one key: which node serves it now, and which
/// next if that one is found boxed.
///
/// Its home node while that is usable; then, under [`Failover::Reroute`],
/// the best usable gutter node (a pool's nodes that hold no keys of their
/// own, ranked among themselves), or without one the best usable node in
/// its ranking, not yet [`skip`](Self::skip)ped; under
/// [`Failover::FailFast`], nothing. While the home node is usable only its
/// own flag is read, never the other nodes'.
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    hash: u64,
    failover: Failover,
    home: Option<usize>,
    /// Nodes found boxed while this key tried them; allocated only then.
    skipped: Vec<usize>,
    /// Whether a boxed home's key goes to the gutter: not for the members
    /// of a key's replicas (`get_n`), which follow its ranking alone.
    gutter: bool,
}

impl Cursor {
    /// A cursor for a key's [`key_hash`](super::key_hash).
    pub(crate) fn new(hash: u64, failover: Failover) -> Self {
        Cursor { hash, failover, home: None, skipped: Vec::new(), gutter: true }
    }

    /// The cursor that follows the key's ranking alone, never the gutter.
    pub(crate) fn ranking_only(self) -> Self {
        Cursor { gutter: false, ..self }
    }

    /// The key hash it routes.
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    /// Its failover policy.
    pub(crate) fn failover(&self) -> Failover {
        self.failover
    }

    /// The key's home node, once [`next`](Self::next) has run.
    pub(crate) fn home(&self) -> Option<usize> {
        self.home
    }

    /// The node to try now, among those for which `usable` is true: an
    /// index of `router`'s nodes, or `router.len()` plus an index of
    /// `gutter`'s.
    #[inline]
    pub(crate) fn next(
        &mut self,
        router: &Router,
        gutter: &Router,
        usable: impl Fn(usize) -> bool,
    ) -> Result<usize, Miss> {
        let home = match self.home {
            Some(home) => home,
            None => *self.home.insert(router.home_hashed(self.hash).ok_or(Miss::Empty)?),
        };
        let fresh = |i: usize| !self.skipped.contains(&i);
        if fresh(home) && usable(home) {
            return Ok(home);
        }
        match self.failover {
            Failover::FailFast => Err(Miss::Home(home)),
            Failover::Reroute => {
                let keyed = router.len();
                let usable_gutter = |i: usize| fresh(keyed + i) && usable(keyed + i);
                let guttered =
                    if self.gutter { gutter.pick_hashed(self.hash, usable_gutter) } else { None };
                match guttered {
                    Some(index) => Ok(keyed + index),
                    // Every gutter node is boxed too (or there is none):
                    // the key's ranking, as without a gutter.
                    None => {
                        router.pick_hashed(self.hash, |i| fresh(i) && usable(i)).ok_or(Miss::None)
                    }
                }
            }
        }
    }

    /// Records that `index` was found boxed: [`next`](Self::next) passes it
    /// over from now on.
    pub(crate) fn skip(&mut self, index: usize) {
        self.skipped.push(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::key_hash;

    fn none() -> Router {
        Router::new([])
    }

    /// Skipping the first `k` nodes of a key's ranking, the cursor offers
    /// the next one: failover follows the ranking, node by node.
    #[test]
    fn the_cursor_follows_the_ranking() {
        let names: Vec<String> = (0..10).map(|i| format!("node-{i}")).collect();
        let router = Router::new(names.iter().map(|n| (n.as_str(), 1.0)));
        for i in 0..1000 {
            let key = format!("k{i}");
            let ranking = router.ranking(key.as_bytes());
            let mut cursor = Cursor::new(key_hash(key.as_bytes()), Failover::Reroute);
            for (k, &expected) in ranking.iter().enumerate() {
                let excluded = &ranking[..k];
                assert_eq!(cursor.next(&router, &none(), |n| !excluded.contains(&n)), Ok(expected));
            }
            let mut cursor = Cursor::new(key_hash(key.as_bytes()), Failover::Reroute);
            for &node in &ranking {
                assert_eq!(cursor.next(&router, &none(), |_| true), Ok(node));
                cursor.skip(node);
            }
            assert_eq!(cursor.next(&router, &none(), |_| true), Err(Miss::None));
        }
    }

    /// Under `FailFast` the home or nothing.
    #[test]
    fn fail_fast_offers_the_home_or_nothing() {
        let router = Router::new([("a", 1.0), ("b", 1.0)]);
        let hash = key_hash(b"k");
        let home = router.home_hashed(hash).unwrap();
        let mut cursor = Cursor::new(hash, Failover::FailFast);
        assert_eq!(cursor.next(&router, &none(), |_| true), Ok(home));
        assert_eq!(cursor.next(&router, &none(), |n| n != home), Err(Miss::Home(home)));
        let empty = none();
        assert_eq!(
            Cursor::new(hash, Failover::Reroute).next(&empty, &none(), |_| true),
            Err(Miss::Empty)
        );
    }

    /// A boxed home's keys go to the gutter, ranked among its nodes; with
    /// every gutter node boxed too, to the key's ranking.
    #[test]
    fn a_boxed_homes_keys_go_to_the_gutter_then_the_ranking() {
        let router = Router::new([("a", 1.0), ("b", 1.0), ("c", 1.0)]);
        let gutter = Router::new([("g1", 1.0), ("g2", 1.0)]);
        let (mut seen_g1, mut seen_g2) = (false, false);
        for i in 0..200 {
            let key = format!("k{i}");
            let hash = key_hash(key.as_bytes());
            let home = router.home_hashed(hash).unwrap();
            let mut cursor = Cursor::new(hash, Failover::Reroute);
            let first = 3 + gutter.home_hashed(hash).unwrap();
            assert_eq!(cursor.next(&router, &gutter, |n| n != home), Ok(first));
            seen_g1 |= first == 3;
            seen_g2 |= first == 4;
            cursor.skip(first);
            let other = if first == 3 { 4 } else { 3 };
            assert_eq!(cursor.next(&router, &gutter, |n| n != home), Ok(other));
            cursor.skip(other);
            let next = router.ranking(key.as_bytes())[1];
            assert_eq!(cursor.next(&router, &gutter, |n| n != home), Ok(next), "the survivors");
        }
        assert!(seen_g1 && seen_g2, "keys spread over the gutter");
        let hash = key_hash(b"k");
        let ranking = router.ranking(b"k");
        let mut members = Cursor::new(hash, Failover::Reroute).ranking_only();
        assert_eq!(members.next(&router, &gutter, |_| true), Ok(ranking[0]));
        members.skip(ranking[0]);
        assert_eq!(members.next(&router, &gutter, |_| true), Ok(ranking[1]), "no gutter");
    }
}
