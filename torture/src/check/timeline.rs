//! Time-indexed sets the rules ask about: intervals that may overlap a
//! window, each process's view of each node, and the faults.
//!
//! Times are nanoseconds on the run's clock; [`NEVER`] is +infinity.

use std::collections::HashMap;

use crate::history::{Fault, FaultKind, ProcessId, View};

/// +infinity: the end of an operation whose effect may land at any time.
pub(crate) const NEVER: u64 = u64::MAX;

/// One millisecond in the history's unit.
pub(crate) const MS: u64 = 1_000_000;

/// How late a pool's view is recorded after its routing changed (the event
/// reaches the recorder's task a little after): every rule that asks what
/// a process saw widens its window by this much.
pub(crate) const VIEW_SLACK: u64 = 50 * MS;

/// Milliseconds (a setting) in the history's unit.
pub(crate) fn ms(ms: u64) -> u64 {
    ms.saturating_mul(MS)
}

/// Intervals `[start, end]` tagged with what they stand for, asked whether
/// any of them overlaps a window: O(log n) a question.
#[derive(Debug, Default)]
pub(crate) struct Intervals {
    /// `(start, end, tag)` by start.
    items: Vec<(u64, u64, usize)>,
    /// For each prefix of `items`: its largest end, and where it is.
    reach: Vec<(u64, usize)>,
}

impl Intervals {
    /// Indexes `items` (`(start, end, tag)`, any order). An item whose
    /// start is after its end still answers by the same test.
    pub(crate) fn new(mut items: Vec<(u64, u64, usize)>) -> Self {
        items.sort_unstable_by_key(|&(start, _, _)| start);
        let mut reach = Vec::with_capacity(items.len());
        let mut best = (0, 0);
        for (i, &(_, end, _)) in items.iter().enumerate() {
            if i == 0 || end > best.0 {
                best = (end, i);
            }
            reach.push(best);
        }
        Intervals { items, reach }
    }

    /// The tag of an item with `start <= b` and `end >= a` (the one
    /// reaching furthest), if any.
    pub(crate) fn overlapping(&self, a: u64, b: u64) -> Option<usize> {
        let n = self.items.partition_point(|&(start, _, _)| start <= b);
        let &(end, i) = self.reach.get(n.checked_sub(1)?)?;
        (end >= a).then_some(self.items[i].2)
    }
}

/// One change of a pool's view of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Change<'a> {
    /// The pool's process.
    pub process: ProcessId,
    /// The node.
    pub node: &'a str,
    /// What it became.
    pub view: View,
    /// When.
    pub at: u64,
}

/// `[boxed, returned)` spans in time order, by node and process.
type Boxes<'a> = HashMap<&'a str, HashMap<ProcessId, Vec<(u64, u64)>>>;

/// Every process's view of every node over time; every node starts up, and
/// a process that reported nothing (the harness included) saw every node up.
#[derive(Debug, Default)]
pub(crate) struct Views<'a> {
    /// `[boxed, returned)` spans by node and process, in time order.
    boxed: Boxes<'a>,
    /// Every change, by time.
    changes: Vec<Change<'a>>,
    /// Spans in which some process had two nodes or more boxed at once.
    several: Intervals,
}

/// The spans in which some process had two nodes or more boxed at once.
fn several(boxed: &Boxes<'_>) -> Vec<(u64, u64, usize)> {
    let mut by_process: HashMap<ProcessId, Vec<(u64, i32)>> = HashMap::new();
    for by in boxed.values() {
        for (&process, spans) in by {
            let edges = by_process.entry(process).or_default();
            edges.extend(spans.iter().flat_map(|&(start, end)| [(start, 1), (end, -1)]));
        }
    }
    let mut out = Vec::new();
    for mut edges in by_process.into_values() {
        // Ends before starts at one instant: a node returned as another left.
        edges.sort_unstable();
        let (mut count, mut since) = (0, 0);
        for (at, step) in edges {
            if count < 2 && count + step >= 2 {
                since = at;
            }
            if count >= 2 && count + step < 2 {
                out.push((since, at, out.len()));
            }
            count += step;
        }
        if count >= 2 {
            out.push((since, NEVER, out.len()));
        }
    }
    out
}

impl<'a> Views<'a> {
    /// Indexes the changes (any order).
    pub(crate) fn new(mut changes: Vec<Change<'a>>) -> Self {
        changes.sort_by_key(|c| c.at);
        let mut open: HashMap<(ProcessId, &'a str), u64> = HashMap::new();
        let mut boxed: Boxes<'a> = HashMap::new();
        for c in &changes {
            let who = (c.process, c.node);
            match c.view {
                View::Boxed => {
                    open.entry(who).or_insert(c.at);
                }
                View::Returned => {
                    if let Some(start) = open.remove(&who) {
                        boxed
                            .entry(c.node)
                            .or_default()
                            .entry(c.process)
                            .or_default()
                            .push((start, c.at));
                    }
                }
            }
        }
        for ((process, node), start) in open {
            boxed.entry(node).or_default().entry(process).or_default().push((start, NEVER));
        }
        for spans in boxed.values_mut().flat_map(HashMap::values_mut) {
            spans.sort_unstable();
        }
        let several = Intervals::new(several(&boxed));
        Views { boxed, changes, several }
    }

    /// Whether some process had two nodes or more boxed at once at some
    /// instant of `[a, b]`.
    pub(crate) fn several_boxed(&self, a: u64, b: u64) -> bool {
        self.several.overlapping(a, b).is_some()
    }

    fn spans(&self, process: ProcessId, node: &str) -> &[(u64, u64)] {
        self.boxed.get(node).and_then(|by| by.get(&process)).map_or(&[], Vec::as_slice)
    }

    /// Whether `process` had `node` boxed at `t`.
    pub(crate) fn boxed_at(&self, process: ProcessId, node: &str, t: u64) -> bool {
        let spans = self.spans(process, node);
        let n = spans.partition_point(|&(start, _)| start <= t);
        n > 0 && spans[n - 1].1 > t
    }

    /// Whether `process` had `node` boxed at some instant of `[a, b]`.
    pub(crate) fn boxed_during(&self, process: ProcessId, node: &str, a: u64, b: u64) -> bool {
        let spans = self.spans(process, node);
        let n = spans.partition_point(|&(start, _)| start <= b);
        n > 0 && spans[n - 1].1 > a
    }

    /// Whether `process` had `node` boxed for the whole of `[a, b]`.
    pub(crate) fn boxed_throughout(&self, process: ProcessId, node: &str, a: u64, b: u64) -> bool {
        let spans = self.spans(process, node);
        let n = spans.partition_point(|&(start, _)| start <= a);
        n > 0 && spans[n - 1].1 > b
    }

    /// Whether `p` and `q` saw `node` differently (one boxed, the other
    /// not) at some instant of `[a, b]`.
    pub(crate) fn differ(&self, p: ProcessId, q: ProcessId, node: &str, a: u64, b: u64) -> bool {
        self.some_instant(p, q, node, (a, b), |p_boxed, q_boxed| p_boxed != q_boxed)
    }

    /// Whether `p` had `node` boxed while `q` had it up, at some instant of
    /// `[a, b]`: `p` was behind a return `q` had made, or ahead of a box.
    pub(crate) fn behind(&self, p: ProcessId, q: ProcessId, node: &str, a: u64, b: u64) -> bool {
        self.some_instant(p, q, node, (a, b), |p_boxed, q_boxed| p_boxed && !q_boxed)
    }

    /// Whether `seen(p boxed, q boxed)` holds at some instant of `[a, b]`:
    /// asked at `a` and at every change of either view within the window.
    fn some_instant(
        &self,
        p: ProcessId,
        q: ProcessId,
        node: &str,
        (a, b): (u64, u64),
        seen: impl Fn(bool, bool) -> bool,
    ) -> bool {
        if p == q {
            return false;
        }
        let mut instants = vec![a];
        for spans in [self.spans(p, node), self.spans(q, node)] {
            for &(start, end) in spans {
                instants.extend([start, end].into_iter().filter(|t| (a..=b).contains(t)));
            }
        }
        instants.iter().any(|&t| seen(self.boxed_at(p, node, t), self.boxed_at(q, node, t)))
    }

    /// A change of any process's view of any node within `[a, b]`.
    pub(crate) fn change_in(&self, a: u64, b: u64) -> Option<&Change<'a>> {
        let i = self.changes.partition_point(|c| c.at < a);
        self.changes.get(i).filter(|c| c.at <= b)
    }
}

/// The faults, by start.
#[derive(Debug, Default)]
pub(crate) struct Faults<'a> {
    list: Vec<&'a Fault>,
    any: Intervals,
}

impl<'a> Faults<'a> {
    /// Indexes the faults (any order).
    pub(crate) fn new(mut list: Vec<&'a Fault>) -> Self {
        list.sort_by_key(|f| f.start);
        let any =
            Intervals::new(list.iter().enumerate().map(|(i, f)| (f.start, f.end, i)).collect());
        Faults { list, any }
    }

    /// A fault of any kind overlapping `[a, b]`.
    pub(crate) fn any_in(&self, a: u64, b: u64) -> Option<&'a Fault> {
        self.any.overlapping(a, b).map(|i| self.list[i])
    }

    /// A fault overlapping `[a, b]` for which `pred` holds.
    pub(crate) fn find(
        &self,
        a: u64,
        b: u64,
        mut pred: impl FnMut(&Fault) -> bool,
    ) -> Option<&'a Fault> {
        let n = self.list.partition_point(|f| f.start <= b);
        self.list[..n].iter().copied().find(|f| f.end >= a && pred(f))
    }

    /// How long `process` was stopped (`PauseProcess`) within `[a, b]`.
    pub(crate) fn stopped(&self, process: ProcessId, a: u64, b: u64) -> u64 {
        let n = self.list.partition_point(|f| f.start <= b);
        self.list[..n]
            .iter()
            .filter(|f| f.kind == FaultKind::PauseProcess && f.process == Some(process))
            .map(|f| f.end.min(b).saturating_sub(f.start.max(a)))
            .sum()
    }
}

/// Fault kinds that can make a node's values vanish, or older or foreign
/// values appear, behind every pool's back.
pub(crate) fn rewrites_data(kind: FaultKind) -> bool {
    matches!(kind, FaultKind::SwapDb | FaultKind::Replica | FaultKind::FlushAll)
}

/// Fault kinds that cut processes off from a node while its sockets stay
/// open, so that a process keeps a view of its own.
pub(crate) fn cuts_off(kind: FaultKind) -> bool {
    matches!(kind, FaultKind::Partition | FaultKind::ClientKill | FaultKind::Blackhole)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_answer_overlap() {
        let set = Intervals::new(vec![(10, 20, 0), (30, 35, 1), (5, 8, 2), (50, 40, 3)]);
        assert_eq!(set.overlapping(21, 29), None);
        assert_eq!(set.overlapping(0, 4), None);
        assert_eq!(set.overlapping(0, 5), Some(2));
        assert_eq!(set.overlapping(19, 31), Some(1));
        assert_eq!(set.overlapping(36, 49), None);
        assert_eq!(set.overlapping(36, 50), Some(3));
        assert!(Intervals::default().overlapping(0, NEVER).is_none());
    }

    fn change(process: ProcessId, node: &'static str, view: View, at: u64) -> Change<'static> {
        Change { process, node, view, at }
    }

    #[test]
    fn views_follow_boxes_and_returns() {
        let views = Views::new(vec![
            change(1, "a", View::Returned, 50),
            change(1, "a", View::Boxed, 10),
            change(1, "a", View::Boxed, 12),
            change(2, "a", View::Boxed, 15),
            change(2, "a", View::Returned, 40),
        ]);
        assert!(!views.boxed_at(1, "a", 9));
        assert!(views.boxed_at(1, "a", 10));
        assert!(views.boxed_at(1, "a", 49));
        assert!(!views.boxed_at(1, "a", 50));
        assert!(!views.boxed_at(3, "a", 20));
        assert!(views.boxed_during(1, "a", 0, 10));
        assert!(!views.boxed_during(1, "a", 50, 60));
        assert!(views.boxed_throughout(1, "a", 10, 49));
        assert!(!views.boxed_throughout(1, "a", 10, 50));
        assert!(views.differ(1, 2, "a", 0, 12));
        assert!(!views.differ(1, 2, "a", 20, 39));
        assert!(views.differ(1, 2, "a", 20, 45));
        assert!(!views.differ(1, 2, "a", 60, 70));
        assert!(views.differ(1, 0, "a", 20, 21));
        assert_eq!(views.change_in(41, 49), None);
        assert_eq!(views.change_in(41, 50).map(|c| c.at), Some(50));
    }

    #[test]
    fn faults_are_found_by_window_and_kind() {
        let f = |kind, start, end| Fault { kind, node: None, process: None, start, end };
        let list = [f(FaultKind::Kill, 10, 20), f(FaultKind::SwapDb, 30, 40)];
        let faults = Faults::new(list.iter().collect());
        assert_eq!(faults.any_in(21, 29), None);
        assert_eq!(faults.any_in(15, 15).map(|f| f.kind), Some(FaultKind::Kill));
        assert!(faults.find(0, 100, |f| rewrites_data(f.kind)).is_some());
        assert!(faults.find(0, 29, |f| rewrites_data(f.kind)).is_none());
    }
}
