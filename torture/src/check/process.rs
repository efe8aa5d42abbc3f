//! `no-panic` and `bounded-memory`: what every row assumes of the pools'
//! processes.
//!
//! Every [`Entry::Panic`](crate::history::Entry::Panic) is a violation (a
//! panic nobody asked for). A process whose resident memory grew by more
//! than [`MEMORY_GROWTH`] over its first sample is one (once per process).

use std::collections::HashMap;

use super::index::History;
use super::report::{Report, Rule};
use crate::history::ProcessId;

/// The rule on panics.
pub(crate) const PANIC: Rule =
    Rule { name: "no-panic", row: "every row: callers get a value or an error, never a panic" };

/// The rule on memory.
pub(crate) const MEMORY: Rule = Rule {
    name: "bounded-memory",
    row: "every row: what a pool remembers (journal, near cache, boxes) is bounded",
};

/// Largest growth of a process's resident memory over its first sample.
pub const MEMORY_GROWTH: u64 = 256 << 20;

/// A process's first memory sample and its largest: `(at, rss)` each.
#[derive(Clone, Copy)]
struct Growth {
    first: (u64, u64),
    max: (u64, u64),
}

/// Judges panics and memory.
pub(crate) fn run(h: &History<'_>, report: &mut Report) {
    for &(process, message, at) in &h.panics {
        report.flag(&PANIC, || {
            let line = format!("p{process} panicked at {} ms: {message}", h.at(at));
            (format!("p{process} panicked: {message}"), vec![line])
        });
    }
    let mut seen: HashMap<ProcessId, Growth> = HashMap::new();
    for &(process, rss, at) in &h.memory {
        let g = seen.entry(process).or_insert(Growth { first: (at, rss), max: (at, rss) });
        if at < g.first.0 {
            g.first = (at, rss);
        }
        if rss > g.max.1 {
            g.max = (at, rss);
        }
    }
    let mut grown: Vec<(ProcessId, Growth)> = seen
        .into_iter()
        .filter(|(_, g)| g.max.1.saturating_sub(g.first.1) > MEMORY_GROWTH)
        .collect();
    grown.sort_unstable_by_key(|&(p, _)| p);
    for (process, Growth { first: (first_at, first), max: (max_at, max) }) in grown {
        report.flag(&MEMORY, || {
            let mib = |b: u64| b >> 20;
            let description = format!(
                "p{process}'s resident memory grew from {} MiB to {} MiB (more than {} MiB)",
                mib(first),
                mib(max),
                mib(MEMORY_GROWTH)
            );
            let lines = vec![
                format!("p{process} rss {} MiB at {} ms", mib(first), h.at(first_at)),
                format!("p{process} rss {} MiB at {} ms", mib(max), h.at(max_at)),
            ];
            (description, lines)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::history::Entry;

    fn memory(process: ProcessId, mib: u64, at: u64) -> Entry {
        Entry::Memory { process, rss: mib << 20, at: t(at) }
    }

    #[test]
    fn a_panic_is_found() {
        let entries =
            vec![Entry::Panic { process: 2, message: "index out of bounds".into(), at: t(5) }];
        let report = check(&config(), &entries);
        assert_eq!(report.count(PANIC.name), 1, "{report}");
        assert!(report.rule(PANIC.name).unwrap().examples[0].description.contains("bounds"));
    }

    #[test]
    fn memory_growth_is_bounded_per_process() {
        let entries = vec![
            memory(1, 300, 10),
            memory(1, 100, 0),
            memory(1, 356, 20),
            memory(2, 100, 0),
            memory(2, 357, 20),
            memory(2, 90, 30),
        ];
        let report = check(&config(), &entries);
        assert_eq!(report.count(MEMORY.name), 1, "{report}");
        let v = &report.rule(MEMORY.name).unwrap().examples[0];
        assert!(v.description.starts_with("p2"), "{}", v.description);
    }
}
