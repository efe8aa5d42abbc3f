//! `no-stale-read`: the README rows "a fleet with `invalidate_on_return`
//! … no reader in any process reads a value older than the last
//! acknowledged write" and the near-cache rows (another client's write
//! reaches a near cache after the invalidation's trip).
//!
//! Applies when `invalidate_on_return` is on with a fleet, or with one
//! process. For each acknowledged read `r` of `v` on key `k` (not already
//! judged by `read-your-writes`), `W` is the write of `(k, v)` whose effect
//! may land last; an indeterminate `W` is never stale, and an `Ok` fill's
//! value counts as written at the fill's start (its lease was taken
//! before; a write or delete after that voids it: "a voided lease stores
//! nothing"). `r` is stale if an
//! acknowledged write or delete `w` of `k` (any process) was invoked after
//! `W` completed (or the fill started) and completed before `r` was
//! invoked. Two such `w` are
//! judged: the first to complete (`w*`, whose staleness
//! `r.invoke - w*.complete` is recorded) and the last invoked. Each must be
//! allowed, in this order:
//!
//! - [`OUTSIDE_REWRITE`]: a data-rewriting fault overlapped
//!   `[W.complete, r.complete]` on a node involved, or `w` (or `W`) is the
//!   nemesis's own write on a node the read did not go to (a foreign copy).
//! - [`FAN_OUT_COPY`]: `v` was written by a `fan_out` on a node other than
//!   the key's home that `r` may have read.
//! - [`NEAR_CACHE_TRIP`]: near cache on, `r` through `get_shared`,
//!   `get_cached` or `aside`, `w` another process's, and the staleness at
//!   most 250 ms; `heartbeat + response_timeout + 250` ms if a fault touched
//!   `r`'s node or process during `[w.invoke, r.complete]`.
//! - [`VIEWS_DIFFER`]: `w` another process's, and one of the two was
//!   behind the other where it mattered, for the key's home, `r`'s node or
//!   `w`'s node: their views differed at some instant of `w` (± 50 ms), or
//!   the reader had the node boxed while the writer had it up at some
//!   instant of `r` (± 50 ms); staleness at most 2 s. A reader that has let
//!   the home back in and reads it, after a write both made through a
//!   stand-in, has no excuse (the return deleted the home's older copies).
//! - [`RELAY_TRIP`]: `w`'s process was cut off alone from the key's home
//!   and relayed `w`, `r`'s reached the home: at most the relay's bound,
//!   beyond it a violation (`relay.rs` gives the exact terms). Judged
//!   before the views: a relayed write has no 2 s.
//! - [`CUT_OFF_ALONE`]: views differed as above, beyond 2 s, and a
//!   `Partition`, `ClientKill` or `Blackhole` fault on the reader's or the
//!   writer's process, or on one of those nodes, overlapped the window
//!   (reaching back `penalty_max_wait + probe_timeout` before `w.invoke`,
//!   as long as a box it caused may last), where the relay does not
//!   apply (the reader is the one cut off, or another had the home boxed
//!   too): no bound.
//!
//! - [`FAILOVER_LOST`](super::allowance::FAILOVER_LOST): `k`'s home is a
//!   Sentinel shard whose master was killed (`FailOver`) before `r` was
//!   invoked, and at most 1 s after `w` was acknowledged on it.
//! - [`LISTS_DIFFER`] and [`REMOVED_UNMOVED`] (`member.rs`), on a key the
//!   run's added node takes (or, for the first, stands in for: one of
//!   `r`, `w` and `W` went to it, another to a node it ranks before): the reader's and the
//!   writer's node lists differed around `w`, `r` or `W` (± 50 ms) and the
//!   staleness is at most 2 s; or the reader had begun a plain `remove_node` and `w` went to the
//!   removed node while some process had it. Judged after the near cache
//!   and before the relay, which does not apply to a key's new home.
//!
//! - [`SEVERAL_DOWN`]: some process had two nodes or more boxed at once
//!   at some instant of `[W.invoke - 50 ms, r.complete]`, and the staleness
//!   is at most `stand_in_ttl + 500` ms (a stand-in back before the home
//!   serves its older copies until their cap).
//!
//! Anything else is a violation: the same process, both processes agreeing
//! on the views, or one node read and written without a near cache.

use std::collections::HashSet;

use super::allowance::{
    CUT_OFF_ALONE, FAN_OUT_COPY, NEAR_CACHE_TRIP, OUTSIDE_REWRITE, SEVERAL_DOWN, VIEWS_DIFFER,
    fan_out_copy, foreign_write, outside_rewrite, several_down_bound,
};
#[cfg(doc)]
use super::allowance::{LISTS_DIFFER, REMOVED_UNMOVED};
use super::excerpt::whole_ms;
use super::index::{History, Rec};
#[cfg(doc)]
use super::relay::RELAY_TRIP;
use super::report::{Report, Rule};
use super::timeline::{NEVER, VIEW_SLACK, cuts_off, ms};
use crate::history::{HARNESS, Kind, Path};

/// The rule.
pub(crate) const RULE: Rule = Rule {
    name: "no-stale-read",
    row: "a fleet with invalidate_on_return: no reader in any process reads a value older than \
          the last acknowledged write; near cache: another client's write is seen after the \
          invalidation's trip",
};

/// Judges every read not judged by `read-your-writes` (`skip`).
pub(crate) fn run(h: &History<'_>, skip: &HashSet<usize>, report: &mut Report) {
    let c = h.config;
    if !(c.invalidate_on_return && (c.fleet || c.processes == 1)) {
        return;
    }
    for (i, r) in h.recs.iter().enumerate() {
        if !h.judged_read(r) || skip.contains(&i) {
            continue;
        }
        let (Some(v), Some(key)) = (r.value, h.key(r.key)) else { continue };
        let Some(oi) = h.writer(r.key, v) else { continue };
        let old = &h.recs[oi];
        if old.stale_after() == NEVER {
            continue;
        }
        let Some(first) = key.acked.first_after(old.stale_after(), r.invoke) else { continue };
        let last = key
            .acked
            .latest_before(r.invoke)
            .filter(|&j| j != first && h.recs[j].invoke > old.stale_after());
        let verdicts =
            std::iter::once(first).chain(last).map(|wi| (wi, judge(h, r, old, &h.recs[wi])));
        let mut allowed = None;
        let mut refused = None;
        for (wi, verdict) in verdicts {
            match verdict {
                Ok(allowance) => allowed = allowed.or(Some((wi, allowance))),
                Err(why) => refused = refused.or(Some((wi, why))),
            }
        }
        match (refused, allowed) {
            (None, Some((wi, allowance))) => {
                report.allow(allowance, whole_ms(r.invoke - h.recs[wi].complete));
            }
            (Some((wi, why)), _) => report.flag(&RULE, || {
                let w = &h.recs[wi];
                let description = format!(
                    "p{} read {v:?} of {} {} ms after p{}'s {} (invoked after {v:?} was {}) \
                     was acknowledged: a value older than the last acknowledged write; {why}",
                    r.process,
                    r.key,
                    whole_ms(r.invoke - w.complete),
                    w.process,
                    if w.kind == Kind::Delete { "delete" } else { "write" },
                    super::own::written(old),
                );
                let mut lines = vec![h.line(oi), h.line(wi), h.line(i)];
                let (a, b) = (old.stale_after().min(w.invoke), r.complete);
                lines.extend(h.faults.any_in(a, b).map(|f| h.fault_line(f)));
                lines.extend(h.views.change_in(a, b).map(|c| h.change_line(c)));
                (description, lines)
            }),
            (None, None) => {}
        }
    }
}

/// The allowance that explains `r` reading `old` after `w`, or why none
/// does.
fn judge(h: &History<'_>, r: &Rec<'_>, old: &Rec<'_>, w: &Rec<'_>) -> Result<&'static str, String> {
    let c = h.config;
    let late = r.invoke - w.complete;
    let involved = [r.node, old.node, w.node];
    let foreign_old = old.process == HARNESS && old.node.is_some_and(|n| h.home(r.key) != Some(n));
    if outside_rewrite(h, r.key, old.stale_after(), r.complete, &involved).is_some()
        || foreign_write(h, r, w)
        || foreign_old
    {
        return Ok(OUTSIDE_REWRITE);
    }
    if fan_out_copy(h, r) {
        return Ok(FAN_OUT_COPY);
    }
    if r.process == w.process {
        return Err("the reader itself made the newer write".to_string());
    }
    let mut why = Vec::new();
    if super::allowance::failover_lost(h, r, w) {
        return Ok(super::allowance::FAILOVER_LOST);
    }
    match h.members.allow(r, old, w, late) {
        Ok(Some(allowance)) => return Ok(allowance),
        Ok(None) => {}
        Err(beyond) => why.push(beyond),
    }
    let cached = matches!(r.path, Some(Path::GetShared | Path::GetCached | Path::Aside));
    if c.near_cache && cached {
        let node = r.node.or(h.home(r.key));
        let touched = h.faults.find(w.invoke, r.complete, |f| {
            f.process == Some(r.process) || (f.node.is_some() && f.node.as_deref() == node)
        });
        let bound =
            250 + if touched.is_some() { c.heartbeat_ms + c.response_timeout_ms } else { 0 };
        if late <= ms(bound) {
            return Ok(NEAR_CACHE_TRIP);
        }
        why.push(format!("beyond a near cache's trip ({} ms > {bound} ms)", whole_ms(late)));
    }
    if let Some(verdict) = super::relay::judge(h, r, w) {
        return verdict.map_err(|beyond| {
            why.push(beyond);
            why.join("; ")
        });
    }
    let mut nodes: Vec<&str> = [h.home(r.key), r.node, w.node].into_iter().flatten().collect();
    nodes.dedup();
    // Views differ where one process was behind the other when it mattered:
    // while `w` was written (the writer, or the reader, had not yet heard),
    // or while `r` read a stand-in that the writer had already left. A
    // reader that has let the home back in, reading it after a write both
    // made through a stand-in, has no excuse: the return deleted the
    // home's older copies before any key went home.
    let around = |a: u64, b: u64| (a.saturating_sub(VIEW_SLACK), b.saturating_add(VIEW_SLACK));
    let (wa, wb) = around(w.invoke, w.complete);
    let (ra, rb) = around(r.invoke, r.complete);
    if nodes.iter().any(|n| {
        h.views.differ(r.process, w.process, n, wa, wb)
            || h.views.behind(r.process, w.process, n, ra, rb)
    }) {
        if late <= ms(2_000) {
            return Ok(VIEWS_DIFFER);
        }
        let reach = ms(c.penalty_max_wait_ms + c.probe_timeout_ms);
        let cut = h.faults.find(w.invoke.saturating_sub(reach), r.complete, |f| {
            let process = f.process.is_none_or(|p| p == r.process || p == w.process);
            let node = f.node.as_deref().is_none_or(|n| nodes.contains(&n));
            cuts_off(f.kind) && process && node && (f.process.is_some() || f.node.is_some())
        });
        if cut.is_some() {
            return Ok(CUT_OFF_ALONE);
        }
        why.push(format!(
            "p{} and p{} saw the nodes differently, but {} ms > 2000 ms and neither was cut off",
            r.process,
            w.process,
            whole_ms(late)
        ));
    } else {
        why.push(format!("p{} and p{} saw the nodes alike", r.process, w.process));
    }
    if let Some(bound) = several_down_bound(c)
        && h.views.several_boxed(old.invoke.saturating_sub(VIEW_SLACK), r.complete)
    {
        if late <= ms(bound) {
            return Ok(SEVERAL_DOWN);
        }
        why.push(format!("several nodes were down, but {} ms > {bound} ms", whole_ms(late)));
    }
    Err(why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::history::{Entry, FaultKind, RunConfig, View};

    fn fleet() -> RunConfig {
        RunConfig { invalidate_on_return: true, fleet: true, ..config() }
    }

    fn stale(at: u64) -> Vec<Entry> {
        vec![
            write(1, "k", "p1:1", 0, 1).into(),
            write(2, "k", "p2:1", 2, 3).into(),
            read(1, "k", Some("p1:1"), at, at + 1).into(),
        ]
    }

    #[test]
    fn a_stale_read_is_found_only_where_promised() {
        let report = check(&fleet(), &stale(10));
        assert_eq!(report.count(RULE.name), 1, "{report}");
        assert_eq!(report.violations(), 1);
        let desc = &report.rule(RULE.name).unwrap().examples[0].description;
        assert!(desc.contains("alike"), "{desc}");
        assert_eq!(check(&config(), &stale(10)).violations(), 0);
        let no_ior = RunConfig { invalidate_on_return: false, ..fleet() };
        assert_eq!(check(&no_ior, &stale(10)).violations(), 0);
        let alone = RunConfig { invalidate_on_return: true, processes: 1, ..config() };
        assert_eq!(check(&alone, &stale(10)).count(RULE.name), 1);
    }

    #[test]
    fn a_deleted_value_read_again_is_found() {
        let entries = vec![
            write(1, "k", "p1:1", 0, 1).into(),
            delete(2, "k", 2, 3).into(),
            read(1, "k", Some("p1:1"), 10, 11).into(),
        ];
        assert_eq!(check(&fleet(), &entries).count(RULE.name), 1);
        // The deleter's own read is `read-your-writes`'s, counted once.
        let mut own = entries.clone();
        own.push(read(2, "k", Some("p1:1"), 10, 11).into());
        let report = check(&fleet(), &own);
        assert_eq!((report.count(RULE.name), report.violations()), (1, 2), "{report}");
    }

    #[test]
    fn a_fill_stored_over_a_voided_lease_is_found() {
        let entries = vec![
            fill(1, "k", Some("p1:1"), 0, 50),
            delete(2, "k", 10, 11).into(),
            read(1, "k", Some("p1:1"), 100, 101).path(Path::Aside).into(),
        ];
        assert_eq!(check(&fleet(), &entries).count(RULE.name), 1);
    }

    #[test]
    fn a_fan_out_copy_is_allowed() {
        let (home, other) = (home_of("k"), other_of("k"));
        let spread = write(2, "k", "p2:1", 0, 1).path(Path::FanOut);
        let entries = vec![
            spread.clone().on(&home).into(),
            spread.on(&other).into(),
            write(2, "k", "p2:2", 3, 4).on(&home).into(),
            read(1, "k", Some("p2:1"), 6, 7).on(&other).into(),
        ];
        let report = check(&fleet(), &entries);
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[FAN_OUT_COPY].samples, vec![2]);
    }

    #[test]
    fn fresh_and_concurrent_reads_pass() {
        let entries = vec![
            write(1, "k", "p1:1", 0, 1).into(),
            write(2, "k", "p2:1", 2, 10).into(),
            read(1, "k", Some("p1:1"), 5, 6).into(),
            read(1, "k", Some("p2:1"), 11, 12).into(),
            write(2, "j", "p2:2", 0, 1).failed().into(),
            write(1, "j", "p1:2", 2, 3).into(),
            read(1, "j", Some("p2:2"), 10, 11).into(),
        ];
        let report = check(&fleet(), &entries);
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.counts.stale_allowed, 0);
    }

    fn cached(at: u64) -> Vec<Entry> {
        vec![
            write(1, "k", "p1:1", 0, 1).into(),
            write(2, "k", "p2:1", 2, 3).into(),
            read(1, "k", Some("p1:1"), at, at + 1).path(Path::GetShared).into(),
        ]
    }

    #[test]
    fn a_near_cache_trip_is_allowed_within_its_bound() {
        let near = RunConfig { near_cache: true, ..fleet() };
        let report = check(&near, &cached(103));
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[NEAR_CACHE_TRIP].samples, vec![100]);
        assert_eq!(check(&near, &cached(403)).count(RULE.name), 1);
        let mut killed = cached(403);
        killed.push(fault(FaultKind::ClientKill, Some(&home_of("k")), None, 2, 5));
        assert_eq!(check(&near, &killed).count(RULE.name), 0);
        assert_eq!(check(&fleet(), &cached(103)).count(RULE.name), 1);
    }

    fn boxed_writer(at: u64) -> Vec<Entry> {
        let (home, other) = (home_of("k"), other_of("k"));
        vec![
            write(1, "k", "p1:1", 0, 1).on(&home).into(),
            view(2, &home, View::Boxed, 1),
            write(2, "k", "p2:1", 2, 3).on(&other).into(),
            read(1, "k", Some("p1:1"), at, at + 1).on(&home).into(),
            view(2, &home, View::Returned, 9_000),
        ]
    }

    #[test]
    fn views_differing_are_allowed_for_two_seconds() {
        let report = check(&fleet(), &boxed_writer(1_003));
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[VIEWS_DIFFER].samples, vec![1_000]);
        assert_eq!(check(&fleet(), &boxed_writer(3_003)).count(RULE.name), 1);
        // The reader cut off alone keeps its own view (the writer's cut is
        // the relay's, `relay.rs`).
        let mut cut = boxed_writer(3_003);
        cut.push(fault(FaultKind::Partition, Some(&home_of("k")), Some(1), 0, 100));
        let report = check(&fleet(), &cut);
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[CUT_OFF_ALONE].samples, vec![3_000]);
    }

    #[test]
    fn outside_rewrites_and_foreign_copies_are_allowed() {
        let mut swapped = stale(10);
        swapped.push(fault(FaultKind::Replica, Some(&home_of("k")), None, 5, 6));
        let report = check(&fleet(), &swapped);
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[OUTSIDE_REWRITE].samples, vec![7]);
        let (home, other) = (home_of("k"), other_of("k"));
        let foreign = vec![
            write(1, "k", "p1:1", 0, 1).into(),
            write(0, "k", "o:1", 2, 3).path(Path::Outside).on(&other).into(),
            read(1, "k", Some("p1:1"), 10, 11).on(&home).into(),
        ];
        assert_eq!(check(&fleet(), &foreign).violations(), 0);
        // The nemesis writing the node the pools read is an obligation.
        let behind = vec![
            write(1, "k", "p1:1", 0, 1).into(),
            write(0, "k", "o:1", 2, 3).path(Path::Outside).on(&home).into(),
            read(1, "k", Some("p1:1"), 10, 11).on(&home).into(),
        ];
        assert_eq!(check(&fleet(), &behind).count(RULE.name), 1);
    }

    #[test]
    fn a_returned_home_read_after_a_stand_in_write_is_found() {
        // Both boxed the home; p2 wrote through the stand-in; both let the
        // home back in; p1 reads the home's older copy (a return that did
        // not delete it, issue 34's item 5).
        let (home, other) = (home_of("k"), other_of("k"));
        let entries = vec![
            write(1, "k", "p1:1", 0, 1).on(&home).into(),
            view(1, &home, View::Boxed, 200),
            view(2, &home, View::Boxed, 200),
            write(2, "k", "p2:1", 500, 600).on(&other).into(),
            view(2, &home, View::Returned, 1000),
            view(1, &home, View::Returned, 1200),
            read(1, "k", Some("p1:1"), 2000, 2001).on(&home).into(),
        ];
        let report = check(&fleet(), &entries);
        assert_eq!(report.count(RULE.name), 1, "{report}");
        // A writer behind the fleet (it had not heard of the return when it
        // wrote through the stand-in) is the news's trip: allowed.
        let behind = vec![
            write(1, "k", "p1:1", 0, 1).on(&home).into(),
            view(1, &home, View::Boxed, 200),
            view(2, &home, View::Boxed, 200),
            view(1, &home, View::Returned, 400),
            write(2, "k", "p2:1", 500, 600).on(&other).into(),
            view(2, &home, View::Returned, 1000),
            read(1, "k", Some("p1:1"), 2000, 2001).on(&home).into(),
        ];
        let report = check(&fleet(), &behind);
        assert_eq!(report.count(RULE.name), 0, "{report}");
    }

    #[test]
    fn a_stand_in_back_before_its_home_is_allowed_its_copies_cap() {
        // Home and first stand-in boxed at once in p1; p2 read the first
        // stand-in's older copy after p1's newer write on the second: the
        // copy lives at most `stand_in_ttl` (here 2 s).
        let (home, other) = (home_of("k"), other_of("k"));
        let third = config().nodes.into_iter().find(|n| *n != home && *n != other).unwrap();
        let capped = RunConfig { stand_in_ttl_ms: Some(2_000), ..fleet() };
        let entries = |at: u64| {
            let both = |node: &str, v: View, at: u64| [view(1, node, v, at), view(2, node, v, at)];
            let mut entries: Vec<Entry> = both(&home, View::Boxed, 0).into();
            entries.push(write(2, "k", "p2:1", 10, 11).on(&other).into());
            entries.extend(both(&other, View::Boxed, 20));
            entries.push(write(1, "k", "p1:1", 30, 31).on(&third).into());
            entries.extend(both(&other, View::Returned, 40));
            entries.push(read(2, "k", Some("p2:1"), at, at + 1).on(&other).into());
            entries
        };
        let report = check(&capped, &entries(1_031));
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[SEVERAL_DOWN].samples, vec![1_000]);
        assert_eq!(check(&capped, &entries(3_031)).count(RULE.name), 1);
        // Without a cap nothing bounds the copy: not allowed.
        assert_eq!(check(&fleet(), &entries(1_031)).count(RULE.name), 1);
    }
}
