//! One operation on one key as the rules see it ([`Rec`]), and writes in
//! order of completion ([`Order`]).
//!
//! A write's *end* ([`Rec::end`]) is its completion if acknowledged, and
//! [`NEVER`] otherwise: a failed, hung or unknown write may take effect at
//! any time after its invocation.

use super::timeline::NEVER;
use crate::history::{Kind, Outcome, Path, ProcessId};

/// Where a [`Rec`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// An [`Entry::Op`](crate::history::Entry::Op).
    Op,
    /// An [`Entry::Invoke`](crate::history::Entry::Invoke) with no
    /// completion: a write whose process died.
    Invoke,
    /// The store of an `Ok` [`Fill`](crate::history::Fill) (its index in
    /// [`History::fills`](super::index::History::fills)).
    Fill(usize),
}

/// One operation on one key, as the rules see it.
#[derive(Clone, Debug)]
pub(crate) struct Rec<'a> {
    /// Where it comes from.
    pub source: Source,
    /// The operation's id (0 for a fill).
    pub id: u64,
    /// Who ran it.
    pub process: ProcessId,
    /// The path (`None`: unknown, the process died).
    pub path: Option<Path>,
    /// What it did (a fill's store, an unknown invocation: `Write`).
    pub kind: Kind,
    /// The key.
    pub key: &'a str,
    /// The value written or read.
    pub value: Option<&'a str>,
    /// The TTL it set (ms).
    pub ttl_ms: Option<u64>,
    /// The node that served it.
    pub node: Option<&'a str>,
    /// Whether that node was the key's home.
    pub home: Option<bool>,
    /// When it was invoked.
    pub invoke: u64,
    /// When it completed as recorded ([`NEVER`]: no completion).
    pub complete: u64,
    /// How it ended (`None`: unknown).
    pub outcome: Option<&'a Outcome>,
}

impl Rec<'_> {
    /// Acknowledged: it happened, within `[invoke, complete]`.
    pub(crate) fn acked(&self) -> bool {
        self.source == Source::Op && self.outcome == Some(&Outcome::Ok)
    }

    /// The latest instant its effect can land.
    pub(crate) fn end(&self) -> u64 {
        if self.acked() { self.complete } else { NEVER }
    }

    /// The instant after which a newer acknowledged write or delete makes
    /// this value stale: an acknowledged write's completion; a fill's
    /// start (its lease was taken before it began, and a write or delete
    /// after that voids the lease or removes the store: README, "a voided
    /// lease stores nothing"); [`NEVER`] for an indeterminate write.
    pub(crate) fn stale_after(&self) -> u64 {
        match self.source {
            Source::Fill(_) => self.invoke,
            _ => self.end(),
        }
    }

    /// The recorded span's end: `complete`, or `invoke` when unknown.
    pub(crate) fn seen_until(&self) -> u64 {
        if self.complete == NEVER { self.invoke } else { self.complete }
    }

    /// Whether it changes the key's value (a write, a delete, a store).
    pub(crate) fn writes(&self) -> bool {
        matches!(self.kind, Kind::Write | Kind::Delete)
    }
}

/// Writes in order of completion, asked for the latest or the first after
/// a time: the acknowledged writes and deletes of one key (or of one
/// process on one key).
#[derive(Debug, Default)]
pub(crate) struct Order {
    /// `(complete, rec)` by completion.
    done: Vec<(u64, usize)>,
    /// For each prefix: the largest invocation and its rec.
    latest: Vec<(u64, usize)>,
}

impl Order {
    pub(crate) fn new(recs: &[Rec<'_>], mut members: Vec<usize>) -> Self {
        members.sort_unstable_by_key(|&i| (recs[i].complete, recs[i].invoke));
        let done: Vec<(u64, usize)> = members.iter().map(|&i| (recs[i].complete, i)).collect();
        let mut latest = Vec::with_capacity(done.len());
        let mut best = (0, usize::MAX);
        for &(_, i) in &done {
            if best.1 == usize::MAX || recs[i].invoke > best.0 {
                best = (recs[i].invoke, i);
            }
            latest.push(best);
        }
        Order { done, latest }
    }

    /// Among the writes completed before `t`, the one invoked last.
    pub(crate) fn latest_before(&self, t: u64) -> Option<usize> {
        let n = self.done.partition_point(|&(complete, _)| complete < t);
        Some(self.latest.get(n.checked_sub(1)?)?.1)
    }

    /// Among the writes invoked after `after`, the first to complete, if it
    /// completed before `before`.
    pub(crate) fn first_after(&self, after: u64, before: u64) -> Option<usize> {
        let n = self.latest.partition_point(|&(invoke, _)| invoke <= after);
        let &(complete, i) = self.done.get(n)?;
        (complete < before).then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(invoke: u64, complete: u64) -> Rec<'static> {
        Rec {
            source: Source::Op,
            id: 0,
            process: 1,
            path: Some(Path::Get),
            kind: Kind::Write,
            key: "k",
            value: None,
            ttl_ms: None,
            node: None,
            home: None,
            invoke,
            complete,
            outcome: Some(&Outcome::Ok),
        }
    }

    #[test]
    fn order_finds_the_latest_and_the_first_after() {
        // Invoked at 0, 5, 2; completed at 10, 6, 20.
        let recs = [rec(0, 10), rec(5, 6), rec(2, 20)];
        let order = Order::new(&recs, vec![0, 1, 2]);
        assert_eq!(order.latest_before(6), None);
        assert_eq!(order.latest_before(7), Some(1));
        assert_eq!(order.latest_before(11), Some(1));
        assert_eq!(order.latest_before(21), Some(1));
        assert_eq!(order.first_after(1, 100), Some(1));
        assert_eq!(order.first_after(1, 6), None);
        assert_eq!(order.first_after(0, 100), Some(1));
        assert_eq!(order.first_after(5, 100), None);
        assert_eq!(Order::default().latest_before(100), None);
        let unknown = Rec { source: Source::Invoke, complete: NEVER, ..rec(3, 0) };
        assert_eq!((unknown.end(), unknown.seen_until()), (NEVER, 3));
    }
}
