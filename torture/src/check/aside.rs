//! `aside-one-fill`: the README row "`aside`: many callers miss one key at
//! once … one fill runs (the lease holder's) and the others wait for its
//! value".
//!
//! A key's fills are taken in order of start. For two consecutive fills
//! `f1`, `f2` where `f1` returned a value: `f2` should not have run while
//! `f1` held the lease or while `f1`'s value should still have been there,
//! i.e. before `f1.end + ttl` (`ttl` is `f1`'s, or the stand-in's cap if
//! lower while `f1`'s process had the key's home boxed when `f1` ended).
//! Not a violation when `f2` began at least `lease - 20 ms` after `f1`'s
//! call (a take-over of a lease `f1` outlived; the lease capped as a stand-in's
//! writes are when `f1`'s process had the key's home boxed as it began),
//! nor when `f2` began within 50 ms (a round trip) of the end of `f1`'s
//! value's TTL, nor when something in
//! `[f1.start, f2.start]` explains a miss: a write, delete or expire of the
//! key by anyone, a fault of any kind (a process kill included), a change
//! of any process's view of any node, a fill of the key whose process was
//! killed while it ran, or the two fills' processes seeing the key's home
//! differently (each leases on the node it routes to), or, for a key the
//! run's added node takes, a membership call in between or the two
//! processes' node lists differing (`member.rs`).
//!
//! An `aside_early` refill (its call returned the value it refreshes) is
//! never judged as `f2`: it runs before the value expires, by design. A
//! fill whose value no read returned is not judged as `f1`: an
//! `aside_early` refill (its call returned the value it refreshes) whose
//! store was voided (the key expired or was written first) leaves nothing
//! to miss, and a refill is the one fill of its expiry by design.

use std::collections::{HashMap, HashSet};

use super::excerpt::whole_ms;
use super::index::{History, Source};
use super::own::RETURN_WORK;

/// How long before its fill began a lease may have been taken (the take's
/// round trip, on a loaded machine).
const TAKEN_BEFORE: u64 = 50 * super::timeline::MS;
use super::report::{Report, Rule};
use super::timeline::{MS, NEVER, ms};
use crate::history::{Fill, FillEnd, Kind, Path, ProcessId};

/// The rule.
pub(crate) const RULE: Rule = Rule {
    name: "aside-one-fill",
    row: "aside: many callers miss one key at once: one fill runs (the lease holder's) and the \
          others wait for its value",
};

/// Judges every key's fills.
pub(crate) fn run(h: &History<'_>, report: &mut Report) {
    let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, f) in h.fills.iter().enumerate() {
        by_key.entry(&f.key).or_default().push(i);
    }
    // The values some read returned: a fill's own call returns its value;
    // an `aside_early` refill's call returned the value it refreshes.
    let seen: HashSet<(&str, &str)> = h
        .recs
        .iter()
        .filter(|r| h.judged_read(r))
        .filter_map(|r| Some((r.key, r.value?)))
        .collect();
    // What each `aside` call returned, by (process, id): a fill's value is
    // `p{process}:{id}` of the call that ran it.
    let returned: HashMap<(ProcessId, u64), Option<&str>> = h
        .recs
        .iter()
        .filter(|r| r.path == Some(Path::Aside) && r.source == Source::Op)
        .map(|r| ((r.process, r.id), r.value))
        .collect();
    // An `aside_early` refill: its call returned the value it refreshed.
    let refill = |f: &Fill| {
        let value = f.value.as_deref()?;
        let (p, id) = value.strip_prefix('p')?.split_once(':')?;
        let call = returned.get(&(p.parse().ok()?, id.parse().ok()?))?;
        Some(*call != Some(value))
    };
    let mut calls: Calls<'_> = HashMap::new();
    for r in h.recs.iter().filter(|r| r.path == Some(Path::Aside) && r.kind == Kind::Read) {
        if let Some(v) = r.value {
            let at = calls.entry((r.process, r.key, v)).or_insert(r.invoke);
            *at = (*at).min(r.invoke);
        }
    }
    for fills in by_key.values() {
        for pair in fills.windows(2) {
            let (f1, f2) = (h.fills[pair[0]], h.fills[pair[1]]);
            // A refill nobody read may have been voided (the key expired
            // or was written before it stored): no value to miss.
            if f1.value.as_deref().is_none_or(|v| !seen.contains(&(f1.key.as_str(), v))) {
                continue;
            }
            // A refill runs before the value expires, by design (one at a
            // time, under its refresh lease).
            if refill(f2) == Some(true) {
                continue;
            }
            if let Some(why) = double(h, &calls, f1, f2) {
                report.flag(&RULE, || {
                    let description = format!(
                        "p{} and p{} both filled {}: the second began {} ms after the first, {why}, \
                         within the lease ({} ms) and with no write, fault or view change that \
                         explains a miss",
                        f1.process,
                        f2.process,
                        f1.key,
                        whole_ms(f2.start - f1.start),
                        h.config.lease_ms,
                    );
                    (description, vec![h.fill_line(f1), h.fill_line(f2)])
                });
            }
        }
    }
}

/// When each `aside` call began, by what it returned: `(process, key,
/// value)`.
type Calls<'a> = HashMap<(ProcessId, &'a str, &'a str), u64>;

/// Why `f2` should not have run after `f1`, if it should not have.
fn double(h: &History<'_>, calls: &Calls<'_>, f1: &Fill, f2: &Fill) -> Option<String> {
    let c = h.config;
    if f1.result != FillEnd::Ok {
        return None;
    }
    let home = h.home(&f1.key);
    let cap = if c.gutters.is_empty() {
        c.stand_in_ttl_ms
    } else {
        Some(c.stand_in_ttl_ms.map_or(h.gutter_cap(), |s| s.min(h.gutter_cap())))
    };
    // A lease taken on a stand-in is capped as its writes are.
    let leased_boxed = home.is_some_and(|n| h.views.boxed_at(f1.process, n, f1.start));
    let lease = match cap {
        Some(cap) if leased_boxed => c.lease_ms.min(cap),
        _ => c.lease_ms,
    };
    // The lease was taken at the earliest when `f1`'s call began (the
    // call that returned the fill's value), a round trip or more before
    // the fill did.
    let called = f1.value.as_deref().and_then(|v| calls.get(&(f1.process, f1.key.as_str(), v)));
    let leased = called.map_or(f1.start, |&at| at.min(f1.start));
    if f2.start.saturating_sub(leased) >= ms(lease).saturating_sub(20 * MS) {
        return None;
    }
    let stored = if f1.end == NEVER { f1.start } else { f1.end };
    let boxed = home.is_some_and(|n| h.views.boxed_at(f1.process, n, stored));
    let ttl = match cap {
        Some(cap) if boxed => f1.ttl_ms.min(cap),
        _ => f1.ttl_ms,
    };
    // The value was stored a round trip before its fill's end was seen.
    if f2.start.saturating_add(TAKEN_BEFORE) >= f1.end.saturating_add(ms(ttl)) {
        return None;
    }
    // The lease was taken a round trip before its fill began: a delete
    // landing in between voids it too.
    let (a, b) = (f1.start.saturating_sub(TAKEN_BEFORE), f2.start);
    let key = h.key(&f1.key);
    let explained = key.is_some_and(|k| {
        k.touched.overlapping(a, b).is_some() || k.killed_fills.overlapping(a, b).is_some()
    }) || h.faults.any_in(a, b).is_some()
        // A return deletes the copies it knows of (leases too) around its
        // view: before it, and, for writes still in flight, after.
        || h.views.change_in(a.saturating_sub(RETURN_WORK), b.saturating_add(RETURN_WORK)).is_some()
        || home.is_some_and(|n| h.views.differ(f1.process, f2.process, n, a, b))
        // A key the added node takes changed home in between (a cold add
        // leaves its new home empty; a removal sends it back to one that
        // may have lost it), or the two processes' node lists differed.
        || h.members.changed(&f1.key, a, b)
        || (h.members.moved(&f1.key) && h.members.lists_differ(f1.process, f2.process, a, b));
    if explained {
        return None;
    }
    Some(if f2.start < f1.end {
        "while the first still ran".to_string()
    } else {
        format!("while the first's value (TTL {ttl} ms) should still have been there")
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::history::{Entry, FaultKind, Kind, Path, RunConfig, View};

    fn two(second: u64) -> Vec<Entry> {
        vec![
            fill(1, "k", Some("p1:1"), 10, 60),
            seen(1, "k", "p1:1", 60),
            fill(2, "k", Some("p2:1"), second, second + 50),
        ]
    }

    /// The call of a fill returning its value at `at` (ms).
    fn seen(p: u32, key: &str, value: &str, at: u64) -> Entry {
        read(p, key, Some(value), at, at + 1).path(Path::Aside).nowhere().into()
    }

    #[test]
    fn a_lease_counts_from_the_call_not_the_fill() {
        // Seed 7177: the first call's lease was taken 90 ms before its
        // fill began (a loaded machine's round trip); the second took it
        // over once it ended, 435 ms after that fill began.
        let call = |at: u64| -> Entry {
            read(1, "k", Some("p1:1"), at, 1_601).path(Path::Aside).nowhere().into()
        };
        let mut entries = vec![
            call(910),
            fill(1, "k", Some("p1:1"), 1_000, 1_600),
            fill(2, "k", Some("p2:1"), 1_435, 1_440),
        ];
        let half = RunConfig { lease_ms: 500, ..config() };
        assert_eq!(check(&half, &entries).count(RULE.name), 0);
        // Called as its fill began: the second fill is inside the lease.
        entries[0] = call(1_000);
        assert_eq!(check(&half, &entries).count(RULE.name), 1);
    }

    #[test]
    fn a_refill_before_the_value_expires_is_by_design() {
        // CI's seed 19: p3's call #1419 returned p3:1359 (a hit) and ran
        // its refill p3:1419 in the background, 35 ms after p3:1359 was
        // stored (its draw used a slow fill's time).
        let mut entries = two(100);
        entries[2] = fill(2, "k", Some("p2:7"), 100, 150);
        let hit = |value: &str| -> Entry {
            let r = read(2, "k", Some(value), 99, 100).path(Path::Aside).nowhere();
            Entry::Op(crate::history::Op { id: 7, ..r })
        };
        entries.push(hit("p1:1"));
        assert_eq!(check(&config(), &entries).count(RULE.name), 0);
        // The call returned the fill's own value: a miss, a double fill.
        let last = entries.len() - 1;
        entries[last] = hit("p2:7");
        assert_eq!(check(&config(), &entries).count(RULE.name), 1);
    }

    #[test]
    fn a_refill_nobody_read_may_have_been_voided() {
        // Seed 7200: an `aside_early` refill (its call returned the value
        // it refreshed) whose store was voided, the key expiring first;
        // the next call misses and fills.
        let mut entries = two(100);
        entries.remove(1);
        assert_eq!(check(&config(), &entries).count(RULE.name), 0);
    }

    #[test]
    fn a_double_fill_is_found() {
        let report = check(&config(), &two(100));
        assert_eq!(report.count(RULE.name), 1, "{report}");
        let overlapping = check(&config(), &two(20));
        assert_eq!(overlapping.count(RULE.name), 1);
        let v = &overlapping.rule(RULE.name).unwrap().examples[0];
        assert!(v.description.contains("still ran"), "{}", v.description);
    }

    #[test]
    fn take_overs_and_explained_misses_pass() {
        // After the lease: a take-over.
        assert_eq!(check(&config(), &two(990)).violations(), 0);
        // After the first's value expired.
        assert_eq!(check(&config(), &two(10_060)).count(RULE.name), 0);
        // The first failed.
        let failed = vec![fill(1, "k", None, 0, 50), fill(2, "k", Some("p2:1"), 60, 70)];
        assert_eq!(check(&config(), &failed).violations(), 0);
        let home = home_of("k");
        let explainers: Vec<Entry> = vec![
            delete(3, "k", 60, 61).into(),
            write(3, "k", "p3:1", 60, 61).into(),
            op(3, Kind::Expire, "k", None, 60, 61).ttl(1).into(),
            fault(FaultKind::KillProcess, None, Some(1), 30, 30),
            view(3, "c", View::Returned, 70),
            Entry::Fill(Fill { end: NEVER, ..fill_of(3, 20) }),
        ];
        for extra in explainers {
            let mut entries = two(100);
            entries.push(extra.clone());
            assert_eq!(check(&config(), &entries).count(RULE.name), 0, "{extra:?}");
        }
        // The two processes routed the key differently.
        let mut apart = two(100);
        apart.push(view(2, &home, View::Boxed, 0));
        assert_eq!(check(&config(), &apart).count(RULE.name), 0);
        // A stand-in's cap shortened the first's value (boxed before it began).
        let capped = RunConfig { stand_in_ttl_ms: Some(20), ..config() };
        // (Boxed long before: a view change within a second of the fills
        // explains a second fill by itself, as a return's deletes may.)
        let later = |e: Entry| match e {
            Entry::Fill(f) => Entry::Fill(Fill {
                start: f.start + t(3_000) - t(0),
                end: f.end + t(3_000) - t(0),
                ..f
            }),
            Entry::Op(o) => Entry::Op(crate::history::Op {
                invoke: o.invoke + t(3_000) - t(0),
                complete: o.complete + t(3_000) - t(0),
                ..o
            }),
            e => e,
        };
        let mut boxed: Vec<Entry> = two(100).into_iter().map(later).collect();
        boxed.extend([view(1, &home, View::Boxed, 0), view(2, &home, View::Boxed, 0)]);
        assert_eq!(check(&capped, &boxed).count(RULE.name), 0);
        assert_eq!(check(&config(), &boxed).count(RULE.name), 1);
    }

    #[test]
    fn a_lease_on_a_stand_in_is_capped_as_its_writes_are() {
        // Seed 7148: `stand_in_ttl` 1 ms, the home boxed: the lease lives
        // 1 ms, and a second caller takes over while the first fills.
        let capped = RunConfig { stand_in_ttl_ms: Some(1), ..config() };
        let home = home_of("k");
        let mut entries = vec![view(1, &home, View::Boxed, 0), view(2, &home, View::Boxed, 0)];
        let later = |e: Entry| match e {
            Entry::Fill(f) => Entry::Fill(Fill {
                start: f.start + t(3_000) - t(0),
                end: f.end + t(3_000) - t(0),
                ..f
            }),
            e => e,
        };
        entries.extend(
            [fill(1, "k", Some("p1:1"), 10, 60), fill(2, "k", Some("p2:1"), 12, 70)].map(later),
        );
        entries.push(seen(1, "k", "p1:1", 3_060));
        assert_eq!(check(&capped, &entries).count(RULE.name), 0);
        // Home up: the lease is whole, the second fill a violation.
        let up: Vec<Entry> = entries.into_iter().skip(2).collect();
        assert_eq!(check(&capped, &up).count(RULE.name), 1);
    }

    #[test]
    fn a_membership_change_explains_a_second_fill_of_a_moved_key_only() {
        use crate::history::Change;
        let (moved, stays) = keys();
        let around = |k: &str, add: (u64, u64), q_add: (u64, u64)| {
            vec![
                fill(1, k, Some("p1:1"), 1_000, 1_050),
                seen(1, k, "p1:1", 1_050),
                member(1, "n4", Change::Add { warm: false }, add.0, add.1),
                member(2, "n4", Change::Add { warm: false }, q_add.0, q_add.1),
                fill(2, k, Some("p2:1"), 1_300, 1_350),
            ]
        };
        // A cold add between the fills: the key's new home is empty.
        let report = check(&grown(), &around(&moved, (1_100, 1_101), (1_100, 1_101)));
        assert_eq!(report.count(RULE.name), 0, "{report}");
        // Both added before the first fill, but p2 only after the second
        // began: the two processes leased on different nodes.
        let report = check(&grown(), &around(&moved, (0, 1), (5_000, 5_001)));
        assert_eq!(report.count(RULE.name), 0, "{report}");
        // Both added before: the second fill has no excuse.
        let report = check(&grown(), &around(&moved, (0, 1), (0, 1)));
        assert_eq!(report.count(RULE.name), 1, "{report}");
        // A key that does not move is not excused by the add.
        let report = check(&grown(), &around(&stays, (1_100, 1_101), (1_100, 1_101)));
        assert_eq!(report.count(RULE.name), 1, "{report}");
    }

    #[test]
    fn a_fill_recorded_at_its_start_and_end_is_one_fill() {
        let mut entries = two(100);
        let Entry::Fill(first) = &entries[0] else { unreachable!() };
        entries.push(Entry::Fill(Fill { end: NEVER, value: None, ..first.clone() }));
        let report = check(&config(), &entries);
        assert_eq!(report.counts.fills, 2);
        assert_eq!(report.count(RULE.name), 1, "{report}");
    }

    fn fill_of(p: u32, start: u64) -> Fill {
        match fill(p, "k", Some("p3:9"), start, start + 1) {
            Entry::Fill(f) => Fill { result: FillEnd::Cancelled, value: None, ..f },
            _ => unreachable!(),
        }
    }
}
