//! `read-your-writes`: the README row "with `near_cache`: this process
//! writes a key, then reads it" and DESIGN's "Read your own writes": a read
//! that starts after a write through the same pool was acknowledged never
//! returns the value from before that write.
//!
//! For each acknowledged read `r` by process `p` of key `k`, `w` is, among
//! `p`'s acknowledged writes and deletes of `k` completed before `r` was
//! invoked, the one invoked last. A `fan_out`'s write binds only a read of
//! a node whose part it acknowledged (one that failed or was skipped was
//! said to the caller: that node keeps what it held; seed 17087).
//!
//! - `r` returned `v`: let `W` be the write of `(k, v)` whose effect may
//!   land last. `r` is stale if `W` was acknowledged before `w` was invoked.
//!   (An `Ok` fill's value counts from the fill's start: its lease was
//!   taken before, and a write or delete after that voids it.) Allowed,
//!   with the staleness `r.invoke - w.complete`, when `r` and `w` were
//!   *apart* (served by known, different nodes, every node of a `fan_out`
//!   counted; or, a node unknown, `p` had the key's home boxed at some
//!   instant of `[w.invoke, r.complete]`) and `invalidate_on_return` is off
//!   ([`STALE_DUPLICATES`]); apart, `W` another process's, no fleet,
//!   several processes ([`PER_PROCESS`]); `v` written by a `fan_out` on a
//!   node other than the key's home that `r` may have read
//!   ([`FAN_OUT_COPY`]); apart, `W` another process's, written while that
//!   process and `p` saw the key's home differently (± 50 ms): a stand-in's
//!   copy made by a process cut off alone, which lives until the home's
//!   return ([`VIEWS_DIFFER`]); apart, some process with two nodes or more
//!   boxed at once since `W`, the staleness at most `stand_in_ttl + 500`
//!   ms ([`SEVERAL_DOWN`]); a data-rewriting fault overlapped
//!   `[W.complete, r.complete]` on a node involved, or `W` is the
//!   nemesis's own write on a node other than the key's home
//!   ([`OUTSIDE_REWRITE`]).
//! - `r` missed after `w` wrote: a violation unless something could have
//!   erased the value in `[w.invoke, r.complete]` (see [`erased`]).

use std::collections::HashSet;

use super::allowance::{
    FAN_OUT_COPY, OUTSIDE_REWRITE, PER_PROCESS, SEVERAL_DOWN, STALE_DUPLICATES, VIEWS_DIFFER,
    apart, fan_out_copy, outside_rewrite, several_down_bound,
};
use super::excerpt::whole_ms;
use super::index::{History, Rec, Source};
use super::report::{Report, Rule};
use super::timeline::{MS, VIEW_SLACK, ms};
use crate::history::{FaultKind, HARNESS, Kind, Path};

/// The rule.
pub(crate) const RULE: Rule = Rule {
    name: "read-your-writes",
    row: "with near_cache: this process writes a key, then reads it: a read that starts after \
          the write was acknowledged never returns the value from before it",
};

/// Judges every read after the reader's own write; returns the reads it
/// found stale (allowed or not), so that `no-stale-read` does not count
/// them again.
pub(crate) fn run(h: &History<'_>, report: &mut Report) -> HashSet<usize> {
    let mut stale = HashSet::new();
    for (i, r) in h.recs.iter().enumerate() {
        if !h.judged_read(r) {
            continue;
        }
        let Some(order) = h.own.get(&(r.process, r.key)) else { continue };
        let Some(wi) = order.latest_before(r.invoke) else { continue };
        let w = &h.recs[wi];
        if !reached(h, r, w) {
            continue;
        }
        match r.value {
            Some(v) => {
                let Some(oi) = h.writer(r.key, v) else { continue };
                let old = &h.recs[oi];
                if old.stale_after() >= w.invoke {
                    continue;
                }
                stale.insert(i);
                let late = whole_ms(r.invoke - w.complete);
                match allowance(h, r, w, old) {
                    Some(allowance) => report.allow(allowance, late),
                    None => report.flag(&RULE, || {
                        let description = format!(
                            "p{p} read {v:?} of {k} {late} ms after its own {what} was \
                             acknowledged, but {v:?} was {written} before that {what} was \
                             invoked: the value from before its own write; no allowance applies \
                             (read {rn}, own write {wn}, invalidate_on_return {ior}, fleet {fleet})",
                            p = r.process,
                            k = r.key,
                            what = if w.kind == Kind::Delete { "delete" } else { "write" },
                            written = written(old),
                            rn = node(r),
                            wn = node(w),
                            ior = h.config.invalidate_on_return,
                            fleet = h.config.fleet,
                        );
                        let mut lines = vec![h.line(oi), h.line(wi), h.line(i)];
                        let (a, b) = (old.stale_after(), r.complete);
                        lines.extend(h.faults.any_in(a, b).map(|f| h.fault_line(f)));
                        lines.extend(h.views.change_in(a, b).map(|c| h.change_line(c)));
                        (description, lines)
                    }),
                }
            }
            None if w.kind == Kind::Delete || erased(h, r, w) => {}
            None => report.flag(&RULE, || {
                let description = format!(
                    "p{} missed {} {} ms after its own write of {:?} was acknowledged, with no \
                     delete, TTL, stand-in cap, view change, fault, indeterminate write or fill \
                     of the key in between, and both served by {}",
                    r.process,
                    r.key,
                    whole_ms(r.invoke - w.complete),
                    w.value.unwrap_or_default(),
                    node(r),
                );
                (description, vec![h.line(wi), h.line(i)])
            }),
        }
    }
    stale
}

/// Whether `w` may have written the node `r` read: a `fan_out`'s write
/// is the caller's on each node whose part it acknowledged, and only
/// there (a part that failed, or a node it skipped, was said to the
/// caller: that node keeps what it held).
fn reached(h: &History<'_>, r: &Rec<'_>, w: &Rec<'_>) -> bool {
    let (Some(Path::FanOut), Some(v), Some(rn)) = (w.path, w.value, r.node) else { return true };
    let parts = h.values[&(w.key, v)].iter().map(|&i| &h.recs[i]);
    let mut acked = parts.filter(|s| (s.process, s.id) == (w.process, w.id) && s.acked());
    acked.any(|s| s.node.is_none_or(|n| n == rn))
}

/// The allowance that explains `r` reading `old` after its own `w`.
fn allowance(h: &History<'_>, r: &Rec<'_>, w: &Rec<'_>, old: &Rec<'_>) -> Option<&'static str> {
    let c = h.config;
    let apart = apart(h, r, w);
    if apart && !c.invalidate_on_return {
        return Some(STALE_DUPLICATES);
    }
    if apart && old.process != r.process && !c.fleet && c.processes > 1 {
        return Some(PER_PROCESS);
    }
    if fan_out_copy(h, r) {
        return Some(FAN_OUT_COPY);
    }
    // Another process wrote the older value through a stand-in while it
    // alone had the key's home boxed (its view differed from the
    // reader's): that copy lives on the stand-in until the home's return,
    // and the reader meets it once it fails over there too.
    let home = h.home(r.key);
    if apart
        && old.process != r.process
        && home.is_some_and(|n| {
            h.views.differ(
                r.process,
                old.process,
                n,
                old.invoke.saturating_sub(VIEW_SLACK),
                old.complete.saturating_add(VIEW_SLACK),
            )
        })
    {
        return Some(VIEWS_DIFFER);
    }
    if let Some(bound) = several_down_bound(c)
        && apart
        && r.invoke.saturating_sub(w.complete) <= ms(bound)
        && h.views.several_boxed(old.invoke.saturating_sub(VIEW_SLACK), r.complete)
    {
        return Some(SEVERAL_DOWN);
    }
    if super::allowance::failover_lost(h, r, w) {
        return Some(super::allowance::FAILOVER_LOST);
    }
    let late = r.invoke.saturating_sub(w.complete);
    if let Ok(Some(allowance)) = h.members.allow(r, old, w, late) {
        return Some(allowance);
    }
    let window = (old.stale_after(), r.complete);
    let rewritten = outside_rewrite(h, r.key, window.0, window.1, &[r.node, w.node, old.node]);
    let foreign = old.process == HARNESS && old.node.is_some_and(|n| h.home(r.key) != Some(n));
    (rewritten.is_some() || foreign).then_some(OUTSIDE_REWRITE)
}

/// How long before a pool records a node's return its return's deletes
/// may run (`invalidate_on_return`: the copies go before the keys go home).
pub(crate) const RETURN_WORK: u64 = 1_000 * MS;

/// Whether something could have erased `w`'s value before `r` missed: in
/// `[w.invoke, r.complete]`, a delete of the key (anyone, any outcome); a
/// write or expire of it whose TTL ran out (`w`'s own included, 5 ms of
/// slack); a stand-in's or gutter's write of it whose cap ran out (`w`
/// included, 5 ms of slack); a stand-in's or gutter's write of it that a
/// fleet may relay as a delete on the home, up to the relay's trip after
/// it (seed 9480: the delete of an older write erased a newer one); any view change of any process (up to [`RETURN_WORK`] after `r`); a fault that
/// touches a node's data or reachability (any but `KillProcess`,
/// `ForgedNews` and `PauseProcess`); an indeterminate write, delete or
/// expire of the key (failed, hung, or invoked by a process that died
/// before its completion: it may have happened at any time after its
/// invocation, and a write may have carried a TTL, or been a delete, at
/// the server), or the nemesis's (a `RENAME` keeps the source's TTL); a
/// fill of the key (its lease reads as a miss); on a key the added node
/// takes, an `add_node`, `remove_node` or `drain_node` call of any process,
/// or a warm window (a cold add and a plain remove move no data; the warm
/// window and the drain read through only on `get`, `get_shared`,
/// `get_cached` and `aside`, and a read-through's marker reads as a miss
/// elsewhere: `docs/resize.md`). Also when `r` and `w` were
/// served by known, different nodes. Keys are never evicted. A process's
/// death alone explains nothing: every operation that can change a key is
/// invoked in the history before it is sent.
pub(crate) fn erased(h: &History<'_>, r: &Rec<'_>, w: &Rec<'_>) -> bool {
    let (a, b) = (w.invoke, r.complete);
    let late = b.saturating_add(5 * MS);
    let Some(key) = h.key(r.key) else { return false };
    key.deletes.overlapping(a, b).is_some()
        || key.expiring.overlapping(a, late).is_some()
        || key.capped.overlapping(a, late).is_some()
        || key.relayed.overlapping(a, b).is_some()
        // A return deletes stand-ins' copies before its view is recorded.
        || h.views.change_in(a, b.saturating_add(RETURN_WORK)).is_some()
        || h.faults
            .find(a, b, |f| {
                !matches!(f.kind, FaultKind::KillProcess | FaultKind::ForgedNews | FaultKind::PauseProcess)
            })
            .is_some()
        || matches!((r.node, w.node), (Some(x), Some(y)) if x != y)
        || key.uncertain.overlapping(a, b).is_some()
        || key.fills.overlapping(a, b).is_some()
        || h.members.changed(r.key, a, b)
}

/// How `old` came to hold its value, for a description.
pub(crate) fn written(old: &Rec<'_>) -> &'static str {
    match old.source {
        Source::Fill(_) => "filled (by a fill that began)",
        _ => "acknowledged",
    }
}

/// "node X" or "an unknown node".
fn node(r: &Rec<'_>) -> String {
    r.node.map_or("an unknown node".to_string(), |n| format!("node {n}"))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::history::{Entry, Path, RunConfig, View};

    fn stale_own_read(k: &str) -> Vec<Entry> {
        vec![
            write(1, k, "p1:1", 0, 1).into(),
            write(1, k, "p1:2", 2, 3).into(),
            read(1, k, Some("p1:1"), 4, 5).into(),
        ]
    }

    #[test]
    fn a_stale_own_read_is_found() {
        let report = check(&config(), &stale_own_read("k"));
        assert_eq!(report.count(RULE.name), 1, "{report}");
        assert_eq!(report.rule(RULE.name).unwrap().examples[0].excerpt.len(), 3);
    }

    #[test]
    fn the_latest_or_a_concurrent_value_passes() {
        let entries = vec![
            write(1, "k", "p1:1", 0, 10).into(),
            write(1, "k", "p1:2", 5, 6).into(),
            read(1, "k", Some("p1:1"), 11, 12).into(),
            read(1, "k", Some("p1:2"), 11, 12).into(),
            write(2, "k", "p2:1", 20, 21).into(),
            read(1, "k", Some("p2:1"), 22, 23).into(),
            delete(1, "k", 30, 31).into(),
            read(1, "k", None, 32, 33).into(),
            // An indeterminate old value is never too old.
            write(2, "j", "p2:9", 0, 1).failed().into(),
            write(1, "j", "p1:9", 2, 3).into(),
            read(1, "j", Some("p2:9"), 4, 5).into(),
        ];
        let report = check(&config(), &entries);
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.counts.stale_allowed, 0);
    }

    #[test]
    fn stale_duplicates_are_allowed_without_invalidate_on_return() {
        let (home, other) = (home_of("k"), other_of("k"));
        let entries = vec![
            write(1, "k", "p1:1", 0, 1).on(&home).into(),
            write(1, "k", "p1:2", 2, 3).on(&other).into(),
            read(1, "k", Some("p1:1"), 4, 5).on(&home).into(),
        ];
        let report = check(&config(), &entries);
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[STALE_DUPLICATES].samples, vec![1]);
        let ior = RunConfig { invalidate_on_return: true, ..config() };
        assert_eq!(check(&ior, &entries).count(RULE.name), 1);
    }

    #[test]
    fn a_stand_in_write_of_a_key_the_added_node_takes_is_apart_from_its_home() {
        use crate::history::{Change, View};
        // Seed 5244: p2 had n4 (just added, the key's home) boxed, wrote on
        // a stand-in, let n4 back in and read p1's older value from it.
        let (moved, _) = keys();
        let stand_in = home_of(&moved);
        let entries = |ior: bool| {
            let c = RunConfig { invalidate_on_return: ior, ..grown() };
            let e = vec![
                member(1, "n4", Change::Add { warm: false }, 0, 1),
                member(2, "n4", Change::Add { warm: false }, 0, 1),
                view(2, "n4", View::Boxed, 2),
                write(1, &moved, "p1:1", 100, 101).on("n4").into(),
                write(2, &moved, "p2:1", 103, 104).on(&stand_in).into(),
                view(2, "n4", View::Returned, 108),
                read(2, &moved, Some("p1:1"), 110, 111).nowhere().into(),
            ];
            (c, e)
        };
        let (c, e) = entries(false);
        let report = check(&c, &e);
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[STALE_DUPLICATES].samples, vec![6]);
        let (c, e) = entries(true);
        assert_eq!(check(&c, &e).count(RULE.name), 1);
    }

    #[test]
    fn another_process_copy_is_allowed_without_a_fleet() {
        let (home, other) = (home_of("k"), other_of("k"));
        let entries = vec![
            write(2, "k", "p2:1", 0, 1).on(&other).into(),
            write(1, "k", "p1:2", 2, 3).on(&home).into(),
            read(1, "k", Some("p2:1"), 4, 5).on(&other).into(),
        ];
        let ior = RunConfig { invalidate_on_return: true, ..config() };
        let report = check(&ior, &entries);
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[PER_PROCESS].samples, vec![1]);
        let fleet = RunConfig { fleet: true, ..ior };
        assert_eq!(check(&fleet, &entries).count(RULE.name), 1);
    }

    #[test]
    fn an_outside_rewrite_is_allowed() {
        let mut entries = stale_own_read("k");
        entries.push(fault(FaultKind::SwapDb, Some(&home_of("k")), None, 2, 3));
        let report = check(&config(), &entries);
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[OUTSIDE_REWRITE].samples, vec![1]);
        let mut elsewhere = stale_own_read("k");
        elsewhere.push(fault(FaultKind::SwapDb, Some(&other_of("k")), None, 2, 3));
        assert_eq!(check(&config(), &elsewhere).count(RULE.name), 1);
    }

    #[test]
    fn an_unknown_node_is_apart_only_while_home_was_boxed() {
        let (home, other) = (home_of("k"), other_of("k"));
        let routed = |boxed: bool| {
            let mut entries: Vec<Entry> = vec![
                write(1, "k", "p1:1", 0, 1).on(&other).into(),
                write(1, "k", "p1:2", 3, 4).on(&home).into(),
                read(1, "k", Some("p1:1"), 6, 7).path(Path::GetCached).nowhere().into(),
            ];
            if boxed {
                entries.push(view(1, &home, View::Boxed, 5));
            }
            entries
        };
        let report = check(&config(), &routed(true));
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[STALE_DUPLICATES].samples, vec![2]);
        assert_eq!(check(&config(), &routed(false)).count(RULE.name), 1);
    }

    /// The torture run's seed 17087: a `fan_out` whose part on the key's
    /// home failed (the home boxed meanwhile) wrote the other nodes; the
    /// home, read after its return, holds the reader's write before it.
    #[test]
    fn a_fan_out_binds_no_read_of_a_node_whose_part_failed() {
        let (home, other) = (home_of("k"), other_of("k"));
        let spread = write(1, "k", "p1:2", 3, 4).path(Path::FanOut).ttl(3_600_000);
        let entries = |failed: bool| -> Vec<Entry> {
            let on_home = spread.clone().on(&home);
            vec![
                write(1, "k", "p1:1", 0, 1).on(&home).into(),
                if failed { on_home.failed() } else { on_home }.into(),
                spread.clone().on(&other).into(),
                read(1, "k", Some("p1:1"), 6, 7).on(&home).into(),
            ]
        };
        let ior = RunConfig { invalidate_on_return: true, ..config() };
        let report = check(&ior, &entries(true));
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(check(&ior, &entries(false)).count(RULE.name), 1, "its part acknowledged");
    }

    #[test]
    fn a_fan_out_copy_is_allowed() {
        let (home, other) = (home_of("k"), other_of("k"));
        let spread = write(1, "k", "p1:1", 0, 1).path(Path::FanOut).ttl(3_600_000);
        let entries = vec![
            spread.clone().on(&home).into(),
            spread.on(&other).into(),
            write(1, "k", "p1:2", 3, 4).on(&home).into(),
            read(1, "k", Some("p1:1"), 6, 7).on(&other).into(),
        ];
        let ior = RunConfig { invalidate_on_return: true, ..config() };
        let report = check(&ior, &entries);
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[FAN_OUT_COPY].samples, vec![2]);
    }

    #[test]
    fn a_fill_stored_over_a_voided_lease_is_found() {
        let voided = vec![
            fill(2, "k", Some("p2:1"), 0, 50),
            delete(1, "k", 10, 11).into(),
            read(1, "k", Some("p2:1"), 100, 101).path(Path::Aside).nowhere().into(),
        ];
        assert_eq!(check(&config(), &voided).count(RULE.name), 1);
        let after = vec![
            delete(1, "k", 0, 1).into(),
            fill(2, "k", Some("p2:1"), 5, 50),
            read(1, "k", Some("p2:1"), 100, 101).path(Path::Aside).nowhere().into(),
        ];
        assert_eq!(check(&config(), &after).violations(), 0);
    }

    fn lost(k: &str) -> Vec<Entry> {
        vec![write(1, k, "p1:1", 0, 1).into(), read(1, k, None, 100, 101).into()]
    }

    #[test]
    fn a_lost_own_write_is_found() {
        let report = check(&config(), &lost("k"));
        assert_eq!(report.count(RULE.name), 1, "{report}");
        // A TTL that has not run out yet does not explain it.
        let entries =
            vec![write(1, "k", "p1:1", 0, 1).ttl(500).into(), read(1, "k", None, 100, 101).into()];
        assert_eq!(check(&config(), &entries).count(RULE.name), 1);
    }

    #[test]
    fn each_eraser_explains_a_miss() {
        let (home, other) = (home_of("k"), other_of("k"));
        let capped = RunConfig { stand_in_ttl_ms: Some(50), ..config() };
        let cases: Vec<(RunConfig, Vec<Entry>)> = vec![
            (config(), vec![delete(2, "k", 50, 51).failed().into()]),
            (config(), vec![op(2, Kind::Expire, "k", None, 10, 11).ttl(20).into()]),
            (config(), vec![view(2, &other, View::Returned, 50)]),
            (config(), vec![fault(FaultKind::Pause, Some(&other), None, 40, 60)]),
            (config(), vec![write(2, "k", "p2:1", 10, 11).hung().into()]),
            (config(), vec![invoke(2, 77, "k", "p2:2", 99)]),
            (config(), vec![fill(2, "k", None, 20, 30)]),
        ];
        for (c, extra) in cases {
            let mut entries = lost("k");
            entries.extend(extra.clone());
            assert_eq!(check(&c, &entries).count(RULE.name), 0, "{extra:?}");
        }
        let own_ttl =
            vec![write(1, "k", "p1:1", 0, 1).ttl(96).into(), read(1, "k", None, 90, 91).into()];
        assert_eq!(check(&config(), &own_ttl).count(RULE.name), 0);
        let on_stand_in = vec![
            write(1, "k", "p1:1", 0, 1).on(&other).into(),
            read(1, "k", None, 100, 101).on(&other).into(),
        ];
        assert_eq!(check(&capped, &on_stand_in).count(RULE.name), 0);
        assert_eq!(check(&config(), &on_stand_in).count(RULE.name), 1);
        let apart = vec![
            write(1, "k", "p1:1", 0, 1).on(&other).into(),
            read(1, "k", None, 100, 101).on(&home).into(),
        ];
        assert_eq!(check(&config(), &apart).count(RULE.name), 0);
    }

    #[test]
    fn a_relayed_stand_in_write_explains_a_miss_with_a_fleet() {
        // Seed 9480: p2, cut off alone from k's home, wrote k on a stand-in
        // just before p1's write; the others' delete of k on the home (the
        // relay) landed after p1's write and p1 missed.
        let (home, other) = (home_of("k"), other_of("k"));
        let entries = vec![
            write(2, "k", "p2:1", 0, 2).on(&other).into(),
            write(1, "k", "p1:1", 3, 4).on(&home).into(),
            read(1, "k", None, 10, 11).on(&home).into(),
        ];
        let fleet = RunConfig { fleet: true, invalidate_on_return: true, ..config() };
        assert_eq!(check(&fleet, &entries).count(RULE.name), 0);
        let no_relay = RunConfig { fleet: true, ..config() };
        assert_eq!(check(&no_relay, &entries).count(RULE.name), 1, "no relay without ior");
        // Past the relay's trip, it explains nothing.
        let late = vec![
            write(2, "k", "p2:1", 0, 2).on(&other).into(),
            write(1, "k", "p1:1", 300, 301).on(&home).into(),
            read(1, "k", None, 310, 311).on(&home).into(),
        ];
        assert_eq!(check(&fleet, &late).count(RULE.name), 1);
    }

    #[test]
    fn an_in_flight_delete_of_a_killed_process_explains_a_miss() {
        // p2 invoked a delete of k and was killed before its completion:
        // the delete may have happened, like any write in flight.
        let mut entries = lost("k");
        entries.push(invoked(2, 77, Kind::Delete, "k", None, 50));
        entries.push(fault(FaultKind::KillProcess, None, Some(2), 60, 60));
        let report = check(&config(), &entries);
        assert_eq!(report.count(RULE.name), 0, "{report}");
        assert_eq!(report.counts.unknown_outcome, 1);
        // Invoked after the miss completed, it explains nothing.
        let mut late = lost("k");
        late.push(invoked(2, 77, Kind::Delete, "k", None, 102));
        assert_eq!(check(&config(), &late).count(RULE.name), 1);
        // So does an expire in flight (as a failed one does).
        let expire = |ttl_ms| {
            let mut entries = lost("k");
            entries.push(Entry::Invoke {
                process: 2,
                id: 78,
                kind: Kind::Expire,
                key: "k".into(),
                value: None,
                ttl_ms: Some(ttl_ms),
                at: t(10),
            });
            entries
        };
        assert_eq!(check(&config(), &expire(20)).count(RULE.name), 0);
    }

    #[test]
    fn a_killed_process_alone_explains_no_miss() {
        // Every delete is invoked before it is sent: a kill near the miss,
        // with no delete of the key in flight, no longer excuses it.
        for at in [50, 100, 600] {
            let mut entries = lost("k");
            entries.push(fault(FaultKind::KillProcess, None, Some(2), at, at));
            assert_eq!(check(&config(), &entries).count(RULE.name), 1, "kill at {at} ms");
        }
    }
}
