//! The relay's bound, judged inside `no-stale-read` (README, "In a
//! fleet": a partial partition, bounded by a relay). With a fleet and
//! `invalidate_on_return`, a process cut off alone from a key's home
//! relays each write it makes to a stand-in as a delete on the home,
//! before the write is acknowledged; the processes that reach the home
//! delete it there. So a reader on the other side reads the home's older
//! value at most for the relay's trip.
//!
//! It applies to a stale read `r` after `w` when:
//! - a `Partition` of `w`'s process from the key's home overlapped
//!   `[w.invoke - reach, w.complete]` (`reach`: `penalty_max_wait +
//!   probe_timeout`, as long as a box it caused may last), and `w` went to
//!   another node (a stand-in's write);
//! - `w`'s process was alone with the home boxed: no other process had it
//!   boxed at any instant of `[w.invoke - reach, r.complete]` (those that
//!   agree make it relay nothing: no bound, [`CUT_OFF_ALONE`]);
//! - `r` is another process's, which had the home up throughout `r` (± 50
//!   ms) and read the home (or a node not recorded).
//!
//! Then `r` may be at most [`RELAY_BOUND_MS`] late (plus the near cache's
//! 250 ms for a read through it: the home's invalidation follows the
//! delete): [`RELAY_TRIP`]; later is a violation. Otherwise this rule has
//! nothing to say, and the other allowances judge.
//!
//! [`CUT_OFF_ALONE`]: super::allowance::CUT_OFF_ALONE

use super::index::{History, Rec};
use super::timeline::{VIEW_SLACK, ms};
use crate::history::{FaultKind, Path};

/// The relay's trip: from a cut-off writer's acknowledgement to the
/// delete on the home by the others.
pub const RELAY_TRIP: &str = "relay trip (cut off alone)";

/// The bound of [`RELAY_TRIP`] (ms).
pub(crate) const RELAY_BOUND_MS: u64 = 250;

/// The relay's verdict on `r` reading a value older than `w`, if the relay
/// applies (see the module's doc).
pub(crate) fn judge(
    h: &History<'_>,
    r: &Rec<'_>,
    w: &Rec<'_>,
) -> Option<Result<&'static str, String>> {
    let c = h.config;
    if !(c.fleet && c.invalidate_on_return) || r.process == w.process {
        return None;
    }
    let home = h.home(r.key)?;
    // A key the added node took has it for home while it is in.
    if h.members.in_era(r.key, w.invoke, r.complete) {
        return None;
    }
    if w.node.is_none_or(|n| n == home) || r.node.is_some_and(|n| n != home) {
        return None;
    }
    let reach = ms(c.penalty_max_wait_ms + c.probe_timeout_ms);
    let from = w.invoke.saturating_sub(reach);
    let cut = h.faults.find(from, w.complete, |f| {
        f.kind == FaultKind::Partition
            && f.process == Some(w.process)
            && f.node.as_deref() == Some(home)
    })?;
    let others_boxed = (1..=c.processes)
        .filter(|&p| p != w.process)
        .any(|p| h.views.boxed_during(p, home, from, r.complete));
    let reader_up = !h.views.boxed_during(
        r.process,
        home,
        r.invoke.saturating_sub(VIEW_SLACK),
        r.complete.saturating_add(VIEW_SLACK),
    );
    if others_boxed || !reader_up {
        return None;
    }
    let cached = matches!(r.path, Some(Path::GetShared | Path::GetCached | Path::Aside));
    let bound = RELAY_BOUND_MS + if c.near_cache && cached { 250 } else { 0 };
    let late = r.invoke.saturating_sub(w.complete);
    if late <= ms(bound) {
        return Some(Ok(RELAY_TRIP));
    }
    Some(Err(format!(
        "p{} was cut off alone from {home} ({:?} from it) and relayed its write, but p{} \
         read the home's older value {} ms after it was acknowledged (> {bound} ms)",
        w.process,
        cut.kind,
        r.process,
        late / ms(1),
    )))
}

#[cfg(test)]
mod tests {
    use super::super::allowance::{CUT_OFF_ALONE, VIEWS_DIFFER};
    use super::super::testkit::*;
    use super::*;
    use crate::history::{Entry, RunConfig, View};

    const RULE: &str = "no-stale-read";

    fn fleet() -> RunConfig {
        RunConfig { invalidate_on_return: true, fleet: true, processes: 3, ..config() }
    }

    /// p2, cut off alone from `k`'s home, writes `k` on a stand-in; p1
    /// reads the home's older value `late` ms after the acknowledgement.
    fn relayed(late: u64) -> Vec<Entry> {
        let (home, other) = (home_of("k"), other_of("k"));
        vec![
            write(1, "k", "p1:1", 0, 1).on(&home).into(),
            fault(FaultKind::Partition, Some(&home), Some(2), 1, 9_000),
            view(2, &home, View::Boxed, 1),
            write(2, "k", "p2:1", 2, 3).on(&other).into(),
            read(1, "k", Some("p1:1"), 3 + late, 4 + late).on(&home).into(),
            view(2, &home, View::Returned, 9_000),
        ]
    }

    #[test]
    fn a_cut_off_writers_relay_is_judged_by_its_bound() {
        let report = check(&fleet(), &relayed(100));
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[RELAY_TRIP].samples, vec![100]);
        assert_eq!(check(&fleet(), &relayed(300)).count(RULE), 1);
        let report = check(&fleet(), &relayed(1_000));
        assert_eq!(report.count(RULE), 1, "views differing do not excuse a relayed write");
        assert!(!report.staleness.contains_key(VIEWS_DIFFER));
    }

    #[test]
    fn the_relay_says_nothing_where_it_does_not_apply() {
        let home = home_of("k");
        // Another process had the home boxed too: nothing is relayed.
        let mut agreed = relayed(3_000);
        agreed.extend([view(3, &home, View::Boxed, 2), view(3, &home, View::Returned, 9_000)]);
        let report = check(&fleet(), &agreed);
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[CUT_OFF_ALONE].samples, vec![3_000]);
        // No partition: a writer that boxed the home on its own evidence
        // is judged as before (views differ, 2 s).
        let mut unexplained = relayed(1_000);
        unexplained.retain(|e| !matches!(e, Entry::Fault(_)));
        let report = check(&fleet(), &unexplained);
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[VIEWS_DIFFER].samples, vec![1_000]);
        // Without invalidate_on_return there is no relay (nor this rule).
        let plain = RunConfig { invalidate_on_return: false, ..fleet() };
        assert_eq!(check(&plain, &relayed(3_000)).violations(), 0);
    }
}
