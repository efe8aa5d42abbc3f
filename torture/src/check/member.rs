//! Membership changes at run time: each pool's `add_node`, `remove_node`
//! and `drain_node` of the run's added node (`RunConfig::extra`), the keys
//! it takes ([`Members::moved`]), and the rule `removed-node`.
//!
//! `removed-node` (README: "`add_node`/`remove_node` while traffic runs";
//! `remove_node`'s rustdoc: "its keys go to their next node at once,
//! checkouts already under way finish, and its connections close as they
//! come back"; `drain_node`'s: "the node left in the pool" only when it
//! fails): once `remove_node` or `drain_node` has returned `Ok` in process
//! `p`, no acknowledged read that `p` invokes afterwards returns a value
//! *served by the removed node* that is older than an acknowledged write.
//! Served by it: the read's connection was to it (`conn.node()`), or, after
//! a `remove_node`, the read names no node and every write of its value
//! went to the removed node alone (a near cache's entry of it; after a
//! drain the value may have been moved, so such a read is left to
//! `no-stale-read`). Older: an acknowledged write or delete of the key, by
//! any process, invoked after the value's write completed and completed
//! before the read was invoked (the `no-stale-read` order).
//!
//! The allowances this file decides for `no-stale-read` and
//! `read-your-writes` are [`LISTS_DIFFER`], [`REMOVED_UNMOVED`] and [`DRAIN_NOT_YET_MOVED`]
//! (`allowance.rs` documents each); a drain gets only the last (while it
//! runs), and a warm add (`resize_warmup`) within or after its window
//! none: their promise is the README's
//! "no copy brings back a value older than an acknowledged `SET` or `DEL`"
//! (`docs/resize.md`).
//!
//! The last two excuse an old home's copy that the add's sweep deletes:
//! neither applies to a read invoked more than [`VIEW_SLACK`] after some
//! process saw its sweep end clean ([`Change::Swept`], `Ok`), of a value
//! that was on its old home before that process's `add_node` began (that
//! sweep deleted it, or found it changed: README, "once an added node's
//! sweep has ended, its keys' copies from before the add are gone from
//! their old homes"). Without such a record they apply as before.
//!
//! A call that failed counts as what its process's list showed after it
//! ([`Member::listed`]): a `drain_node` that failed at its check changed
//! nothing (its process keeps the node, and its list differs from a peer's
//! whose drain removed it, for good), one that failed after its switch
//! took the node out by its end; with nothing recorded (a hang, an older
//! history) it may have changed the list at any instant from its start on.

use std::collections::HashMap;

use fluster::route::Router;

use super::allowance::{DRAIN_NOT_YET_MOVED, LISTS_DIFFER, REMOVED_UNMOVED};
use super::excerpt::whole_ms;
use super::index::{History, Rec};
use super::report::{Report, Rule};
use super::timeline::{Intervals, NEVER, VIEW_SLACK, ms};
use crate::history::{Change, Member, Outcome, ProcessId, RunConfig};

/// The rule.
pub(crate) const RULE: Rule = Rule {
    name: "removed-node",
    row: "add_node/remove_node while traffic runs: once remove_node (or drain_node) has \
          returned, the removed node serves no read of that process a value older than an \
          acknowledged write",
};

/// How long two processes' node lists may differ and a read still see the
/// other's older value (ms): the README's "two processes may briefly route
/// a key differently", bounded as [`VIEWS_DIFFER`](super::allowance::VIEWS_DIFFER) is.
pub(crate) const LISTS_DIFFER_MS: u64 = 2_000;

/// One process's calls.
#[derive(Debug, Default, Clone, Copy)]
struct Calls<'a> {
    add: Option<&'a Member>,
    out: Option<&'a Member>,
    /// The end of its add's sweep, as its status showed it.
    swept: Option<&'a Member>,
}

/// The pools' membership changes, indexed.
#[derive(Debug, Default)]
pub(crate) struct Members<'a> {
    /// The added node.
    pub extra: Option<&'a str>,
    /// Each process's calls.
    calls: HashMap<ProcessId, Calls<'a>>,
    /// Every call, `[start, end]` (an `Add`'s end stretched over its warm
    /// window; a failed or hung one's to [`NEVER`]).
    spans: Intervals,
    /// The router over the nodes and the added one.
    router: Option<Router>,
    /// The processes of the run.
    processes: u32,
}

/// The last instant a call may still change routing: its end, for one
/// that returned `Ok` or failed with the change made (the worker saw the
/// node's place in the list changed: a drain that failed after its
/// switch); [`NEVER`] for one that failed or hung with nothing seen
/// (`listed` not recorded: it may have changed the list, or may yet).
fn settled(m: &Member) -> u64 {
    let made = match m.change {
        Change::Add { .. } => m.listed == Some(true),
        Change::Remove | Change::Drain => m.listed == Some(false),
        Change::Swept => false,
    };
    if m.outcome == Outcome::Ok || made { m.end } else { NEVER }
}

/// Whether a call failed and left the list as it was (the worker saw the
/// node where it was before: a `drain_node` that failed at its check kept
/// it, `src/runtime/drain.rs`): not a change of the process's list at all.
fn unchanged(m: &Member) -> bool {
    let kept = match m.change {
        Change::Add { .. } => m.listed == Some(false),
        Change::Remove | Change::Drain => m.listed == Some(true),
        Change::Swept => false,
    };
    m.outcome != Outcome::Ok && kept
}

impl<'a> Members<'a> {
    /// Indexes the calls (any order).
    pub(crate) fn new(config: &'a RunConfig, list: Vec<&'a Member>) -> Self {
        let extra = config.extra.as_deref();
        let router = extra.map(|e| {
            Router::new(config.nodes.iter().map(String::as_str).chain([e]).map(|n| (n, 1.0)))
        });
        let mut calls: HashMap<ProcessId, Calls<'a>> = HashMap::new();
        let mut spans = Vec::new();
        for (i, m) in list.iter().enumerate() {
            let c = calls.entry(m.process).or_default();
            if unchanged(m) {
                // The process's list is as before: a node never added,
                // or still in (its lists differ from a peer's that made
                // the change, from that call on).
                continue;
            }
            let warm = ms(config.resize_warmup_ms);
            match m.change {
                Change::Add { warm: w } => {
                    c.add = Some(m);
                    let window = if w { warm } else { 0 };
                    spans.push((m.start, settled(m).saturating_add(window), i));
                }
                Change::Remove | Change::Drain => {
                    c.out = Some(m);
                    spans.push((m.start, settled(m), i));
                }
                // Not a call: no routing changed.
                Change::Swept => c.swept = Some(m),
            }
        }
        Members { extra, calls, spans: Intervals::new(spans), router, processes: config.processes }
    }

    /// Whether the added node takes `key` (is its home once added).
    pub(crate) fn moved(&self, key: &str) -> bool {
        let Some(router) = &self.router else { return false };
        let nodes = router.len();
        router.home(key.as_bytes()) == Some(nodes - 1)
    }

    /// Whether two of the operations served by `served` (`None`: a node
    /// not known, a near cache's) may have been routed apart by the added
    /// node being in one process's list and not in another's: one went to
    /// the added node and another to a node it ranks before in `key`'s
    /// ranking. A process with the node sends the key there when the
    /// nodes ranked before it are boxed (a stand-in for the boxed home),
    /// one without it sends the key on down the ranking (seed 11118: `n3`
    /// asleep, `n4` its keys' stand-in in the processes whose drain failed
    /// at its check, `n0` in the one whose drain removed it). An operation
    /// on a node ranked before the added node went where either list sends
    /// it.
    fn routed_apart(&self, key: &str, served: [Option<&str>; 3]) -> bool {
        let (Some(router), Some(extra)) = (&self.router, self.extra) else { return false };
        let ranking = router.ranking(key.as_bytes());
        let rank = |node: &str| ranking.iter().position(|&i| **router.name(i) == *node);
        let Some(own) = rank(extra) else { return false };
        let (mut on, mut past, mut unknown) = (false, false, false);
        for node in served {
            match node.map(rank) {
                None => unknown = true,
                Some(Some(r)) if r == own => on = true,
                Some(Some(r)) if r > own => past = true,
                // Ranked before it, or a gutter node (no ranking).
                Some(_) => {}
            }
        }
        (on && (past || unknown)) || (past && unknown)
    }

    /// Whether `key` is one the added node takes and some process's call
    /// (or a warm window) overlaps `[a, b]`: its routing may have changed.
    pub(crate) fn changed(&self, key: &str, a: u64, b: u64) -> bool {
        self.moved(key) && self.spans.overlapping(a, b).is_some()
    }

    /// Whether `key` is one the added node takes and `[a, b]` overlaps the
    /// time some process may have had the node in its list (from the first
    /// `add_node` call to the last call that took it out).
    pub(crate) fn in_era(&self, key: &str, a: u64, b: u64) -> bool {
        let Some(first) = self.calls.values().filter_map(|c| c.add).map(|m| m.start).min() else {
            return false;
        };
        self.moved(key) && first <= b && self.last_out() >= a
    }

    /// Whether `p` and `q` may have had different node lists at some
    /// instant of `[a, b]`: between the first of their two calls of one
    /// step (add, or take out) and the later's settling; a process that
    /// never made the step (killed before it, or its call failed and left
    /// its list as it was: a drain that failed at its check) differs from
    /// its peer's call on.
    pub(crate) fn lists_differ(&self, p: ProcessId, q: ProcessId, a: u64, b: u64) -> bool {
        if p == q {
            return false;
        }
        let (cp, cq) = (self.calls.get(&p).copied(), self.calls.get(&q).copied());
        let (cp, cq) = (cp.unwrap_or_default(), cq.unwrap_or_default());
        [(cp.add, cq.add), (cp.out, cq.out)].into_iter().any(|(x, y)| {
            let start = x.map_or(NEVER, |m| m.start).min(y.map_or(NEVER, |m| m.start));
            let end = x.map_or(NEVER, settled).max(y.map_or(NEVER, settled));
            start != NEVER && start <= b && end >= a
        })
    }

    /// `p`'s call that took the node out, if any.
    fn out(&self, p: ProcessId) -> Option<&'a Member> {
        self.calls.get(&p).and_then(|c| c.out)
    }

    /// The last instant any process may still have had the node in its
    /// list ([`NEVER`] if one never took it out).
    fn last_out(&self) -> u64 {
        (1..=self.processes).map(|p| self.out(p).map_or(NEVER, settled)).max().unwrap_or(NEVER)
    }

    /// Whether some process saw its sweep of the node end clean more than
    /// [`VIEW_SLACK`] before `r` was invoked, and `old`'s value had landed
    /// before that process's `add_node` began: the sweep found it on its
    /// old home and deleted it, or found it changed.
    fn swept_before(&self, r: &Rec<'_>, old: &Rec<'_>) -> bool {
        self.calls.values().any(|c| match (c.add, c.swept) {
            (Some(add), Some(swept)) => {
                swept.outcome == Outcome::Ok
                    && old.end() < add.start
                    && swept.end.saturating_add(VIEW_SLACK) < r.invoke
            }
            _ => false,
        })
    }

    /// The allowance, if one applies, for `r` reading `old`'s value after
    /// the newer `w` (both of another process than `r`'s, or `w` `r`'s own
    /// and `old` another's), with the staleness `late`; `Err` says why the
    /// lists' skew does not (beyond its bound), `Ok(None)` that nothing
    /// here applies.
    pub(crate) fn allow(
        &self,
        r: &Rec<'_>,
        old: &Rec<'_>,
        w: &Rec<'_>,
        late: u64,
    ) -> Result<Option<&'static str>, String> {
        let Some(extra) = self.extra else { return Ok(None) };
        let moved = self.moved(r.key);
        if !moved && !self.routed_apart(r.key, [r.node, old.node, w.node]) {
            return Ok(None);
        }
        // A plain `remove_node` moves nothing: the key's next node serves
        // what it kept from before the add, unless a sweep deleted it.
        let swept = self.swept_before(r, old);
        if moved
            && let Some(out) = self.out(r.process)
            && out.change == Change::Remove
            && r.invoke >= out.start
            && r.node != Some(extra)
            && w.node.is_none_or(|n| n == extra)
            && w.invoke < self.last_out()
            && !swept
        {
            return Ok(Some(REMOVED_UNMOVED));
        }
        // During the reader's own drain, before the key's batch moved: its
        // new home's copy from before the add, unless a sweep deleted it.
        let first_add = self.calls.values().filter_map(|c| c.add).map(|m| m.start).min();
        if moved
            && let Some(out) = self.out(r.process)
            && out.change == Change::Drain
            && r.invoke >= out.start
            && r.complete <= out.end
            && r.node != Some(extra)
            && first_add.is_some_and(|add| old.complete < add)
            && !swept
        {
            return Ok(Some(DRAIN_NOT_YET_MOVED));
        }
        let around = |a: u64, b: u64| (a.saturating_sub(VIEW_SLACK), b.saturating_add(VIEW_SLACK));
        let (wa, wb) = around(w.invoke, w.complete);
        let (ra, rb) = around(r.invoke, r.complete);
        let (oa, ob) = around(old.invoke, old.seen_until());
        let other = if w.process != r.process { w.process } else { old.process };
        let differ = self.lists_differ(r.process, other, wa, wb)
            || self.lists_differ(r.process, other, ra, rb)
            || self.lists_differ(r.process, other, oa, ob);
        match differ {
            false => Ok(None),
            true if late <= ms(LISTS_DIFFER_MS) => Ok(Some(LISTS_DIFFER)),
            true => Err(format!(
                "p{} and p{other} had different node lists, but {} ms > {LISTS_DIFFER_MS} ms",
                r.process,
                whole_ms(late)
            )),
        }
    }
}

/// Judges every read after its process took the node out.
pub(crate) fn run(h: &History<'_>, report: &mut Report) {
    let Some(extra) = h.members.extra else { return };
    for (i, r) in h.recs.iter().enumerate() {
        if !h.judged_read(r) {
            continue;
        }
        let Some(out) = h.members.out(r.process) else { continue };
        if out.outcome != Outcome::Ok || r.invoke <= out.end {
            continue;
        }
        let (Some(v), Some(key)) = (r.value, h.key(r.key)) else { continue };
        let writers = h.values.get(&(r.key, v)).map_or(&[][..], Vec::as_slice);
        let only_there = !writers.is_empty()
            && writers.iter().all(|&j| h.recs[j].node == Some(extra) && h.recs[j].acked());
        let served = r.node == Some(extra)
            || (r.node.is_none() && out.change == Change::Remove && only_there);
        if !served {
            continue;
        }
        let Some(oi) = h.writer(r.key, v) else { continue };
        let old = &h.recs[oi];
        if old.stale_after() == NEVER {
            continue;
        }
        let Some(wi) = key.acked.first_after(old.stale_after(), r.invoke) else { continue };
        report.flag(&RULE, || {
            let w = &h.recs[wi];
            let description = format!(
                "p{} read {v:?} of {} from {extra}, {} ms after its {:?} of {extra} returned, \
                 and {} ms after p{}'s newer write was acknowledged: the removed node served a \
                 value older than an acknowledged write",
                r.process,
                r.key,
                whole_ms(r.invoke - out.end),
                out.change,
                whole_ms(r.invoke.saturating_sub(w.complete)),
                w.process,
            );
            let lines = vec![h.line(oi), h.line(wi), h.member_line(out), h.line(i)];
            (description, lines)
        });
    }
}

#[cfg(test)]
#[path = "member_tests.rs"]
mod tests;
