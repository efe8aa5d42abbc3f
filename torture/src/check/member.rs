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

/// The last instant a call may still change routing: its end, or
/// [`NEVER`] for one that failed (a drain may fail after its switch).
fn settled(m: &Member) -> u64 {
    if m.outcome == Outcome::Ok { m.end } else { NEVER }
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
    /// never made the step (killed before it) differs from its peer's
    /// call on.
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
        if !self.moved(r.key) {
            return Ok(None);
        }
        // A plain `remove_node` moves nothing: the key's next node serves
        // what it kept from before the add, unless a sweep deleted it.
        let swept = self.swept_before(r, old);
        if let Some(out) = self.out(r.process)
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
        if let Some(out) = self.out(r.process)
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
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::history::{Entry, Path};

    fn out_at(p: ProcessId, change: Change, at: u64) -> Entry {
        member(p, "n4", change, at, at + 1)
    }

    /// p1 writes `k` on n4, p2 writes it again; both processes take n4
    /// out at 1 s; p1 reads the first value from `node` at 1.1 s.
    fn after_removal(change: Change, node: &str) -> Vec<Entry> {
        let (k, _) = keys();
        vec![
            member(1, "n4", Change::Add { warm: false }, 0, 1),
            member(2, "n4", Change::Add { warm: false }, 0, 1),
            write(1, &k, "p1:1", 200, 201).on("n4").into(),
            write(2, &k, "p2:1", 204, 205).on("n4").into(),
            out_at(1, change, 1_000),
            out_at(2, change, 1_000),
            read(1, &k, Some("p1:1"), 1_100, 1_101).on(node).into(),
        ]
    }

    #[test]
    fn a_removed_node_serving_an_older_value_is_found() {
        for change in [Change::Remove, Change::Drain] {
            let report = check(&grown(), &after_removal(change, "n4"));
            assert_eq!(report.count(RULE.name), 1, "{change:?}: {report}");
            let ex = &report.rule(RULE.name).unwrap().examples[0];
            assert!(ex.description.contains("removed node"), "{}", ex.description);
        }
        // Through the near cache (no node), the value only n4 ever held.
        let mut cached = after_removal(Change::Remove, "n4");
        let Some(Entry::Op(last)) = cached.pop() else { unreachable!() };
        cached.push(last.path(Path::GetCached).nowhere().into());
        assert_eq!(check(&grown(), &cached).count(RULE.name), 1);
    }

    #[test]
    fn reads_before_the_removal_returned_or_of_the_latest_value_pass() {
        let (k, _) = keys();
        let mut entries = after_removal(Change::Remove, "n4");
        entries.pop();
        entries.extend([
            // Invoked before p1's remove_node returned: a checkout under way.
            read(1, &k, Some("p1:1"), 1_000, 1_002).on("n4").into(),
            // The latest value, from n4 after the removal: not older.
            read(1, &k, Some("p2:1"), 1_100, 1_101).on("n4").into(),
        ]);
        let report = check(&grown(), &entries);
        assert_eq!(report.count(RULE.name), 0, "{report}");
        // A failed drain leaves the node in: its reads are not judged here.
        let mut failed = after_removal(Change::Drain, "n4");
        for e in &mut failed {
            if let Entry::Member(m) = e
                && m.change == Change::Drain
            {
                m.outcome = Outcome::Failed("drain".into());
            }
        }
        assert_eq!(check(&grown(), &failed).count(RULE.name), 0);
    }

    #[test]
    fn a_plain_removal_lets_the_next_node_serve_what_it_kept_but_a_drain_does_not() {
        let (k, _) = keys();
        let old_home = home_of(&k);
        let remove = after_removal(Change::Remove, &old_home);
        let report = check(&grown(), &remove);
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[REMOVED_UNMOVED].samples, vec![895]);
        // After a drain the old home's older copy is a stale read.
        let report = check(&grown(), &after_removal(Change::Drain, &old_home));
        assert_eq!(report.count("no-stale-read"), 1, "{report}");
        // A write made after every process removed n4 has no excuse.
        let mut late = remove.clone();
        late.insert(6, write(2, &k, "p2:2", 1_060, 1_061).on(&old_home).into());
        assert_eq!(check(&grown(), &late).count("no-stale-read"), 1);
    }

    #[test]
    fn lists_that_differ_are_allowed_for_two_seconds_on_moved_keys_only() {
        let (moved, stays) = keys();
        let skewed = |k: &str, late: u64| {
            vec![
                write(2, k, "p2:1", 0, 1).on(&home_of(k)).into(),
                // p1 added n4 at 5 ms, p2 only at 3 s.
                member(1, "n4", Change::Add { warm: false }, 5, 6),
                member(2, "n4", Change::Add { warm: false }, 3_000, 3_001),
                write(1, k, "p1:1", 10, 11).on("n4").into(),
                read(2, k, Some("p2:1"), 11 + late, 12 + late).on(&home_of(k)).into(),
            ]
        };
        let report = check(&grown(), &skewed(&moved, 100));
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[LISTS_DIFFER].samples, vec![100]);
        let report = check(&grown(), &skewed(&moved, 2_500));
        assert_eq!(report.count("no-stale-read"), 1, "{report}");
        assert_eq!(check(&grown(), &skewed(&stays, 100)).count("no-stale-read"), 1);
    }

    #[test]
    fn a_moved_keys_miss_around_a_change_is_explained() {
        let (moved, stays) = keys();
        let miss = |k: &str, with_add: bool| {
            let mut e = vec![
                write(1, k, "p1:1", 0, 1).into(),
                read(1, k, None, 100, 101).path(Path::GetCached).nowhere().into(),
            ];
            if with_add {
                e.push(member(1, "n4", Change::Add { warm: false }, 50, 51));
            }
            e
        };
        assert_eq!(check(&grown(), &miss(&moved, true)).count("read-your-writes"), 0);
        assert_eq!(check(&grown(), &miss(&moved, false)).count("read-your-writes"), 1);
        assert_eq!(check(&grown(), &miss(&stays, true)).count("read-your-writes"), 1);
    }

    #[test]
    fn a_fan_out_copy_left_on_the_old_home_while_n4_was_in_is_a_fan_out_copy() {
        let (k, _) = keys();
        let old_home = home_of(&k);
        let spread = write(2, &k, "p2:1", 200, 201).path(Path::FanOut);
        let mut entries = after_removal(Change::Drain, &old_home);
        entries.truncate(6);
        entries.extend([
            spread.clone().on(&old_home).into(),
            spread.on("n4").into(),
            write(2, &k, "p2:2", 300, 301).on("n4").into(),
            read(1, &k, Some("p2:1"), 1_100, 1_101).on(&old_home).into(),
        ]);
        let report = check(&grown(), &entries);
        assert_eq!(report.violations(), 0, "{report}");
        assert!(report.staleness.contains_key(crate::check::allowance::FAN_OUT_COPY));
    }

    #[test]
    fn during_its_drain_the_old_homes_pre_add_copy_is_allowed_until_the_drain_ends() {
        let (k, _) = keys();
        let old_home = home_of(&k);
        let drained = |read_at: u64| {
            vec![
                write(1, &k, "p1:0", 0, 1).on(&old_home).into(),
                member(1, "n4", Change::Add { warm: false }, 100, 101),
                member(2, "n4", Change::Add { warm: false }, 100, 101),
                write(1, &k, "p1:1", 200, 201).on("n4").into(),
                member(1, "n4", Change::Drain, 1_000, 1_500),
                member(2, "n4", Change::Drain, 1_000, 1_500),
                read(1, &k, Some("p1:0"), read_at, read_at + 1).on(&old_home).into(),
            ]
        };
        let report = check(&grown(), &drained(1_200));
        assert_eq!(report.violations(), 0, "{report}");
        assert!(report.staleness.contains_key(DRAIN_NOT_YET_MOVED), "{report}");
        // After the drain every moved key was replaced: no excuse left.
        assert_eq!(check(&grown(), &drained(1_600)).violations(), 1);
    }

    /// p1's sweep of n4 seen ended (`Swept`, `outcome`) at `swept_at`.
    fn swept(swept_at: u64, outcome: Outcome) -> Entry {
        let mut e = member(1, "n4", Change::Swept, swept_at - 20, swept_at);
        if let Entry::Member(m) = &mut e {
            m.outcome = outcome;
        }
        e
    }

    /// p1 writes `k` on its old home (`p1:0`, at `old_at`), both add n4
    /// at 100 ms, p1 writes `k` on n4, both take n4 out (`change`) at
    /// 1 s to 1.5 s, and p1 reads `p1:0` from the old home at `read_at`.
    fn pre_add_copy(change: Change, old_at: u64, read_at: u64) -> Vec<Entry> {
        let (k, _) = keys();
        let old_home = home_of(&k);
        vec![
            write(1, &k, "p1:0", old_at, old_at + 1).on(&old_home).into(),
            member(1, "n4", Change::Add { warm: false }, 100, 101),
            member(2, "n4", Change::Add { warm: false }, 100, 101),
            write(1, &k, "p1:1", 300, 301).on("n4").into(),
            member(1, "n4", change, 1_000, 1_500),
            member(2, "n4", change, 1_000, 1_500),
            read(1, &k, Some("p1:0"), read_at, read_at + 1).on(&old_home).into(),
        ]
    }

    #[test]
    fn once_a_sweep_ended_clean_no_old_homes_pre_add_copy_is_excused() {
        for (change, allowance, read_at) in
            [(Change::Remove, REMOVED_UNMOVED, 1_600), (Change::Drain, DRAIN_NOT_YET_MOVED, 1_200)]
        {
            let mut entries = pre_add_copy(change, 0, read_at);
            // Today's excuse, without a sweep's end.
            let report = check(&grown(), &entries);
            assert_eq!(report.violations(), 0, "{change:?}: {report}");
            assert!(report.staleness.contains_key(allowance), "{change:?}: {report}");
            // p1's sweep ended clean at 600 ms: p1:0 was deleted then.
            entries.insert(3, swept(600, Outcome::Ok));
            let report = check(&grown(), &entries);
            assert_eq!(report.count("read-your-writes"), 1, "{change:?}: {report}");
            assert_eq!(report.violations(), 1, "{change:?}: {report}");
        }
    }

    #[test]
    fn before_a_sweeps_clean_end_or_after_an_incomplete_one_the_copy_is_still_excused() {
        for (change, allowance, read_at) in
            [(Change::Remove, REMOVED_UNMOVED, 1_600), (Change::Drain, DRAIN_NOT_YET_MOVED, 1_200)]
        {
            let cases = [
                // Read before the clean end (less the slack): not yet deleted.
                (0, swept(read_at + 30, Outcome::Ok)),
                // Within the slack after it (a look's lag, the clocks).
                (0, swept(read_at - 30, Outcome::Ok)),
                // Seen ended, but not clean: copies may stay.
                (0, swept(600, Outcome::Failed("a command on an old home failed".into()))),
            ];
            for (old_at, end) in cases {
                let mut entries = pre_add_copy(change, old_at, read_at);
                entries.insert(3, end.clone());
                let report = check(&grown(), &entries);
                assert_eq!(report.violations(), 0, "{change:?} {end:?}: {report}");
                assert!(report.staleness.contains_key(allowance), "{change:?}: {report}");
            }
        }
        // A value written on the old home after the add began may have
        // come after the sweep passed: still a plain removal's.
        let mut entries = pre_add_copy(Change::Remove, 150, 1_600);
        entries.insert(3, swept(600, Outcome::Ok));
        let report = check(&grown(), &entries);
        assert_eq!(report.violations(), 0, "{report}");
        assert!(report.staleness.contains_key(REMOVED_UNMOVED), "{report}");
    }
}
