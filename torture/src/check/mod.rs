//! The checker: the history of one run judged rule by rule against the
//! README's Guarantees.
//!
//! [`check`] indexes the history once (`index.rs`: invocations joined with
//! their completions, per-key orders of writes, the value → write map;
//! `rec.rs`: one operation on one key as the rules see it; `timeline.rs`:
//! views and faults), then runs each rule, one file each with its own doc
//! comment giving its exact semantics, and its tests (`testkit.rs` writes
//! their histories by hand):
//!
//! | rule | file |
//! |---|---|
//! | `no-phantom` | `phantom.rs` |
//! | `read-your-writes` | `own.rs` |
//! | `no-stale-read` | `stale.rs` (the relay's bound: `relay.rs`) |
//! | `stand-in-cap` | `cap.rs` |
//! | `aside-one-fill` | `aside.rs` |
//! | `aside-wait`, `liveness` | `liveness.rs` |
//! | `no-panic`, `bounded-memory` | `process.rs` |
//! | `exact-replies` | `replies.rs` |
//! | `removed-node` | `member.rs` |
//!
//! The stale reads the README allows are counted, with how late they were,
//! under the [`allowance`]s. Everything is O(n log n) in the history's
//! length.

pub mod allowance;
mod aside;
mod cap;
mod excerpt;
mod index;
mod liveness;
mod member;
mod own;
mod phantom;
mod process;
mod rec;
mod relay;
mod replies;
mod report;
mod stale;
#[cfg(test)]
mod testkit;
mod timeline;

use std::collections::HashSet;

use self::index::{History, Source};
pub use self::process::MEMORY_GROWTH;
use self::report::Rule;
pub use self::report::{
    Counts, EXAMPLES_PER_RULE, Percentiles, Report, RuleReport, Staleness, Violation,
};
use crate::history::{Entry, Kind, RunConfig};

/// Every rule, in the report's order.
const RULES: [&Rule; 11] = [
    &phantom::RULE,
    &own::RULE,
    &stale::RULE,
    &cap::RULE,
    &aside::RULE,
    &liveness::WAIT,
    &liveness::RULE,
    &process::PANIC,
    &process::MEMORY,
    &replies::RULE,
    &member::RULE,
];

/// The rules' stable names, in the report's order.
pub fn rule_names() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.name)
}

/// Judges `entries` (every process's, in any order) against the rules.
pub fn check(config: &RunConfig, entries: &[Entry]) -> Report {
    let h = History::new(config, entries);
    let mut report = Report::for_run(config.seed, &RULES);
    count(&h, entries, &mut report);
    phantom::run(&h, &mut report);
    let judged = own::run(&h, &mut report);
    stale::run(&h, &judged, &mut report);
    cap::run(&h, &mut report);
    aside::run(&h, &mut report);
    liveness::run(&h, &mut report);
    process::run(&h, &mut report);
    replies::run(&h, entries, &mut report);
    member::run(&h, &mut report);
    report
}

/// Fills the report's counts.
fn count(h: &History<'_>, entries: &[Entry], report: &mut Report) {
    let c = &mut report.counts;
    let mut ops = HashSet::new();
    for entry in entries {
        match entry {
            Entry::Op(op) => {
                if ops.insert((op.process, op.id, op.path)) {
                    *c.ops_by_path.entry(op.path).or_default() += 1;
                }
                match op.kind {
                    Kind::Read => c.reads += 1,
                    Kind::Write | Kind::Delete => c.writes += 1,
                    _ => {}
                }
            }
            Entry::Fault(f) => *c.faults_by_kind.entry(f.kind).or_default() += 1,
            _ => {}
        }
    }
    c.unknown_outcome = h.recs.iter().filter(|r| r.source == Source::Invoke).count() as u64;
    c.fills = h.fills.len() as u64;
    c.samples = h.samples.len() as u64;
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use crate::history::{FaultKind, Path};

    #[test]
    fn an_empty_history_passes_and_lists_every_rule() {
        let report = check(&config(), &[]);
        assert_eq!(report.violations(), 0);
        let names: Vec<&str> = report.rules.iter().map(|r| r.rule).collect();
        assert_eq!(names, rule_names().collect::<Vec<_>>());
        assert_eq!(names.len(), 11);
        assert!(report.to_string().contains("no-phantom"));
    }

    #[test]
    fn counts_operations_faults_and_unknown_outcomes() {
        let mget = read(1, "k", None, 0, 1).path(Path::Mget);
        let mut second = mget.clone();
        second.key = "j".into();
        let entries = vec![
            mget.into(),
            second.into(),
            write(1, "k", "p1:1", 2, 3).into(),
            invoke(2, 5, "k", "p2:1", 4),
            fault(FaultKind::Kill, Some("a"), None, 0, 10),
            fill(1, "k", Some("p1:2"), 5, 6),
            sample("a", "k", "p1:1", -1, 7),
        ];
        let c = check(&config(), &entries).counts;
        assert_eq!(c.ops_by_path[&Path::Mget], 1);
        assert_eq!(c.ops_by_path[&Path::Get], 1);
        assert_eq!((c.reads, c.writes, c.unknown_outcome, c.fills, c.samples), (2, 1, 1, 1, 1));
        assert_eq!(c.faults_by_kind[&FaultKind::Kill], 1);
    }

    #[test]
    fn a_large_history_is_checked_quickly() {
        let mut entries = Vec::new();
        for i in 0..50_000u64 {
            let key = format!("k{}", i % 500);
            let value = format!("p1:{i}");
            entries.push(write(1, &key, &value, 2 * i, 2 * i + 1).into());
            entries.push(read(2, &key, Some(&value), 2 * i + 1, 2 * i + 2).into());
        }
        let started = std::time::Instant::now();
        let report = check(&config(), &entries);
        assert_eq!(report.violations(), 0, "{report}");
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    }
}
