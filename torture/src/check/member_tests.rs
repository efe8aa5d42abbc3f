//! The checker tests of `member.rs`: membership changes and the
//! allowances they decide.

use super::super::testkit::*;
use super::*;
use crate::history::{Entry, Path, View};

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

/// A key whose ranking under [`grown`] puts `n4` at `rank` (0: its home),
/// and that ranking's node names.
fn ranked(rank: usize) -> (String, Vec<String>) {
    let c = grown();
    let names: Vec<&str> = c.nodes.iter().map(String::as_str).chain(["n4"]).collect();
    let router = Router::new(names.iter().map(|n| (*n, 1.0)));
    (0..1_000)
        .map(|i| format!("k{i}"))
        .map(|k| {
            let ranking = router.ranking(k.as_bytes());
            (k, ranking.iter().map(|&i| names[i].to_owned()).collect::<Vec<_>>())
        })
        .find(|(_, ranking)| ranking[rank] == "n4")
        .unwrap()
}

/// Seed 11118's shape: both processes add n4 and drain it at 1 s; p1's
/// drain removes it, p2's ends as `drain` says (`listed`: n4 in p2's list
/// after it). The first `boxed` nodes of `k`'s ranking are boxed in both
/// from 0.9 s on (alike); p2 writes `p2:1` on `on.0`, p1 `p1:1` on `on.1`,
/// then p2 reads `p2:1` from `on.0`.
fn drained_apart(
    rank: usize,
    drain: (Outcome, Option<bool>),
    boxed: usize,
    on: (&str, &str),
) -> Vec<Entry> {
    let (k, ranking) = ranked(rank);
    let mut entries = vec![
        member(1, "n4", Change::Add { warm: false }, 0, 1),
        member(2, "n4", Change::Add { warm: false }, 0, 1),
        out_at(1, Change::Drain, 1_000),
    ];
    let mut failed = member(2, "n4", Change::Drain, 1_000, 1_050);
    if let Entry::Member(m) = &mut failed {
        (m.outcome, m.listed) = drain;
    }
    entries.push(failed);
    for p in [1, 2] {
        entries.extend(ranking[..boxed].iter().map(|n| view(p, n, View::Boxed, 900)));
    }
    entries.extend([
        write(2, &k, "p2:1", 1_500, 1_501).on(on.0).into(),
        write(1, &k, "p1:1", 1_510, 1_511).on(on.1).into(),
        read(2, &k, Some("p2:1"), 1_520, 1_521).on(on.0).into(),
    ]);
    entries
}

#[test]
fn a_drain_that_failed_at_its_check_keeps_the_node_where_it_stands_in() {
    let timed_out = || Outcome::Failed("draining node `n4` into node `c`: timed out".into());
    // n4 ranks second for k, whose home is boxed: p2's drain failed at its
    // check, so n4 stays in its list as k's stand-in (seed 11118), while
    // p1 sends k on to the third.
    let (_, ranking) = ranked(1);
    let apart = ("n4", ranking[2].as_str());
    let kept = check(&grown(), &drained_apart(1, (timed_out(), Some(true)), 1, apart));
    assert_eq!(kept.violations(), 0, "{kept}");
    assert_eq!(kept.staleness[LISTS_DIFFER].samples, vec![9], "{kept}");
    // Failed with nothing seen (a hang, an older history): it may have
    // removed the node at any instant, as before.
    let unknown = check(&grown(), &drained_apart(1, (timed_out(), None), 1, apart));
    assert_eq!(unknown.violations(), 0, "{unknown}");
    // n4 ranks after the node k goes to in both lists: their difference
    // routes nothing differently.
    let (_, ranking) = ranked(2);
    let before = (ranking[1].as_str(), ranking[1].as_str());
    let report = check(&grown(), &drained_apart(2, (timed_out(), Some(true)), 1, before));
    assert_eq!(report.count("no-stale-read"), 1, "{report}");
}

#[test]
fn a_drain_that_failed_after_its_switch_took_the_node_out_by_its_end() {
    let (k, _) = keys();
    let old_home = home_of(&k);
    // Both drain n4 at 1 s, p2's failing at 1.05 s (`listed` as given);
    // from 1.5 s on both write k on its old home, and p1 reads its own
    // older value there.
    let history = |listed: Option<bool>| {
        let mut failed = member(2, "n4", Change::Drain, 1_000, 1_050);
        if let Entry::Member(m) = &mut failed {
            (m.outcome, m.listed) = (Outcome::Failed("MIGRATE failed".into()), listed);
        }
        vec![
            member(1, "n4", Change::Add { warm: false }, 0, 1),
            member(2, "n4", Change::Add { warm: false }, 0, 1),
            out_at(1, Change::Drain, 1_000),
            failed,
            write(1, &k, "p1:1", 1_500, 1_501).on(&old_home).into(),
            write(2, &k, "p2:1", 1_510, 1_511).on(&old_home).into(),
            read(1, &k, Some("p1:1"), 1_520, 1_521).on(&old_home).into(),
        ]
    };
    // n4 had left p2's list by the drain's end: the lists were alike.
    let report = check(&grown(), &history(Some(false)));
    assert_eq!(report.count("no-stale-read"), 1, "{report}");
    // Nothing seen: p2's list may have changed at any instant.
    let report = check(&grown(), &history(None));
    assert_eq!(report.violations(), 0, "{report}");
    assert_eq!(report.staleness[LISTS_DIFFER].samples, vec![9], "{report}");
}
