//! What the checker hands back: violations by rule, staleness by allowance,
//! and counts; merged over seeds, printed as a table.

use std::collections::BTreeMap;
use std::fmt;

use crate::history::{FaultKind, Path};

/// How many violations of each rule keep their description and excerpt.
pub const EXAMPLES_PER_RULE: usize = 3;

/// A rule: its stable name and the README Guarantees row it checks.
#[derive(Debug)]
pub(crate) struct Rule {
    /// The stable name (`no-phantom`, ...).
    pub name: &'static str,
    /// The Guarantees row, in a line.
    pub row: &'static str,
}

/// One violation kept in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The seed of the run it was found in.
    pub seed: u64,
    /// What went wrong, in a paragraph.
    pub description: String,
    /// The entries involved, one line each, times in ms from the run's
    /// first entry.
    pub excerpt: Vec<String>,
}

/// A rule's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleReport {
    /// The rule's stable name.
    pub rule: &'static str,
    /// The README Guarantees row it checks.
    pub row: &'static str,
    /// How many violations.
    pub count: u64,
    /// The first few ([`EXAMPLES_PER_RULE`]) in full.
    pub examples: Vec<Violation>,
}

/// How late the allowed stale reads of one allowance were, in ms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Staleness {
    /// One sample per allowed stale read (ms).
    pub samples: Vec<u64>,
}

/// Percentiles of a [`Staleness`] (nearest rank), in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Staleness {
    /// The percentiles of the samples; `None` when there are none.
    pub fn percentiles(&self) -> Option<Percentiles> {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let at = |q: f64| nearest_rank(&sorted, q);
        Some(Percentiles {
            count: sorted.len(),
            p50: at(0.50)?,
            p90: at(0.90)?,
            p99: at(0.99)?,
            max: *sorted.last()?,
        })
    }

    /// The `q`-th quantile (`0.0..=1.0`, nearest rank); `None` when empty.
    pub fn percentile(&self, q: f64) -> Option<u64> {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        nearest_rank(&sorted, q)
    }
}

/// The nearest-rank quantile of sorted samples.
fn nearest_rank(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// What the history contained.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Operations by path (a multi-key operation counts once).
    pub ops_by_path: BTreeMap<Path, u64>,
    /// Faults by kind.
    pub faults_by_kind: BTreeMap<FaultKind, u64>,
    /// Reads, one per key read (an `mget` of three keys counts three).
    pub reads: u64,
    /// Writes and deletes, one per key.
    pub writes: u64,
    /// Writes invoked by a process that died before their completion.
    pub unknown_outcome: u64,
    /// Fills run by `aside`.
    pub fills: u64,
    /// Keys sampled straight from the nodes.
    pub samples: u64,
    /// Stale reads that an allowance explained.
    pub stale_allowed: u64,
}

/// What the checker found in one run, or in many merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The seeds of the runs merged into this report.
    pub seeds: Vec<u64>,
    /// Violations by rule, every rule listed (zero included).
    pub rules: Vec<RuleReport>,
    /// Staleness of the allowed stale reads, by allowance.
    pub staleness: BTreeMap<&'static str, Staleness>,
    /// What the history contained.
    pub counts: Counts,
}

impl Report {
    /// An empty report of one run, listing `rules` at zero.
    pub(crate) fn for_run(seed: u64, rules: &[&'static Rule]) -> Self {
        let rules = rules
            .iter()
            .map(|r| RuleReport { rule: r.name, row: r.row, count: 0, examples: Vec::new() })
            .collect();
        Report { seeds: vec![seed], rules, ..Report::default() }
    }

    /// The total number of violations, every rule together.
    pub fn violations(&self) -> usize {
        self.rules.iter().map(|r| r.count as usize).sum()
    }

    /// The verdict of the rule named `name`, if listed.
    pub fn rule(&self, name: &str) -> Option<&RuleReport> {
        self.rules.iter().find(|r| r.rule == name)
    }

    /// The number of violations of the rule named `name` (0 if unlisted).
    pub fn count(&self, name: &str) -> u64 {
        self.rule(name).map_or(0, |r| r.count)
    }

    /// Adds `other` (another seed's report) to this one: counts add up,
    /// samples join, and each rule keeps its first few examples.
    pub fn merge(&mut self, other: Report) {
        self.seeds.extend(other.seeds);
        for theirs in other.rules {
            let mine = match self.rules.iter_mut().position(|r| r.rule == theirs.rule) {
                Some(i) => &mut self.rules[i],
                None => {
                    self.rules.push(RuleReport {
                        examples: Vec::new(),
                        count: 0,
                        ..theirs.clone()
                    });
                    self.rules.last_mut().expect("just pushed")
                }
            };
            mine.count += theirs.count;
            let room = EXAMPLES_PER_RULE.saturating_sub(mine.examples.len());
            mine.examples.extend(theirs.examples.into_iter().take(room));
        }
        for (allowance, s) in other.staleness {
            self.staleness.entry(allowance).or_default().samples.extend(s.samples);
        }
        let (c, o) = (&mut self.counts, other.counts);
        for (path, n) in o.ops_by_path {
            *c.ops_by_path.entry(path).or_default() += n;
        }
        for (kind, n) in o.faults_by_kind {
            *c.faults_by_kind.entry(kind).or_default() += n;
        }
        c.reads += o.reads;
        c.writes += o.writes;
        c.unknown_outcome += o.unknown_outcome;
        c.fills += o.fills;
        c.samples += o.samples;
        c.stale_allowed += o.stale_allowed;
    }

    /// Records a violation of `rule`; `describe` (the description and the
    /// excerpt) runs only for the first few.
    pub(crate) fn flag(&mut self, rule: &Rule, describe: impl FnOnce() -> (String, Vec<String>)) {
        let seed = self.seeds.first().copied().unwrap_or_default();
        let Some(entry) = self.rules.iter_mut().find(|r| r.rule == rule.name) else {
            panic!("rule {} is not listed in the report", rule.name);
        };
        entry.count += 1;
        if entry.examples.len() < EXAMPLES_PER_RULE {
            let (description, excerpt) = describe();
            entry.examples.push(Violation { seed, description, excerpt });
        }
    }

    /// Records a stale read that `allowance` explained, `ms` late.
    pub(crate) fn allow(&mut self, allowance: &'static str, ms: u64) {
        self.staleness.entry(allowance).or_default().samples.push(ms);
        self.counts.stale_allowed += 1;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        writeln!(f, "runs: {} (seeds {})", self.seeds.len(), list(self.seeds.iter()))?;
        let paths = c.ops_by_path.iter().map(|(p, n)| format!("{p:?} {n}"));
        writeln!(f, "operations by path: {}", list(paths))?;
        let faults = c.faults_by_kind.iter().map(|(k, n)| format!("{k:?} {n}"));
        writeln!(f, "faults by kind: {}", list(faults))?;
        writeln!(
            f,
            "reads {}, writes {}, unknown outcomes {}, fills {}, samples {}, stale reads allowed {}",
            c.reads, c.writes, c.unknown_outcome, c.fills, c.samples, c.stale_allowed
        )?;
        writeln!(f)?;
        writeln!(f, "{:<16} {:>10}  guarantee (README)", "rule", "violations")?;
        for r in &self.rules {
            writeln!(f, "{:<16} {:>10}  {}", r.rule, r.count, r.row)?;
        }
        if !self.staleness.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "{:<46} {:>8} {:>7} {:>7} {:>7} {:>7}",
                "allowance (staleness, ms)", "reads", "p50", "p90", "p99", "max"
            )?;
            for (allowance, s) in &self.staleness {
                if let Some(p) = s.percentiles() {
                    writeln!(
                        f,
                        "{:<46} {:>8} {:>7} {:>7} {:>7} {:>7}",
                        allowance, p.count, p.p50, p.p90, p.p99, p.max
                    )?;
                }
            }
        }
        for r in self.rules.iter().filter(|r| !r.examples.is_empty()) {
            writeln!(f)?;
            writeln!(f, "{}: {} violation(s); the first {}:", r.rule, r.count, r.examples.len())?;
            for v in &r.examples {
                writeln!(f, "  [seed {}] {}", v.seed, v.description)?;
                for line in &v.excerpt {
                    writeln!(f, "      {line}")?;
                }
            }
        }
        Ok(())
    }
}

/// Items joined by commas, or "none".
fn list<T: fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let joined: Vec<String> = items.map(|i| i.to_string()).collect();
    if joined.is_empty() { "none".to_string() } else { joined.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Rule = Rule { name: "rule-a", row: "row a" };
    const B: Rule = Rule { name: "rule-b", row: "row b" };

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Staleness { samples: (1..=100).rev().collect() };
        let p = s.percentiles().unwrap();
        assert_eq!((p.count, p.p50, p.p90, p.p99, p.max), (100, 50, 90, 99, 100));
        assert_eq!(s.percentile(0.0), Some(1));
        assert_eq!(Staleness::default().percentiles(), None);
        let one = Staleness { samples: vec![7] };
        assert_eq!(one.percentiles().unwrap().p50, 7);
    }

    #[test]
    fn merge_adds_counts_and_keeps_seeded_examples() {
        let mut first = Report::for_run(1, &[&A, &B]);
        for i in 0..2 {
            first.flag(&A, || (format!("first {i}"), vec![]));
        }
        first.allow("x", 5);
        first.counts.ops_by_path.insert(Path::Get, 3);
        let mut second = Report::for_run(2, &[&A, &B]);
        for i in 0..4 {
            second.flag(&A, || (format!("second {i}"), vec![]));
        }
        second.flag(&B, || ("b".into(), vec!["line".into()]));
        second.allow("x", 9);
        second.counts.ops_by_path.insert(Path::Get, 4);
        assert_eq!(second.rule("rule-a").unwrap().examples.len(), EXAMPLES_PER_RULE);

        first.merge(second);
        assert_eq!(first.violations(), 7);
        assert_eq!(first.count("rule-a"), 6);
        let a = first.rule("rule-a").unwrap();
        let seeds: Vec<u64> = a.examples.iter().map(|v| v.seed).collect();
        assert_eq!(seeds, vec![1, 1, 2]);
        assert_eq!(first.rule("rule-b").unwrap().examples[0].seed, 2);
        assert_eq!(first.staleness["x"].samples, vec![5, 9]);
        assert_eq!(first.counts.ops_by_path[&Path::Get], 7);
        assert_eq!(first.counts.stale_allowed, 2);
        assert_eq!(first.seeds, vec![1, 2]);

        let mut empty = Report::default();
        empty.merge(first.clone());
        assert_eq!(empty.violations(), 7);
        let text = empty.to_string();
        assert!(text.contains("rule-a"), "{text}");
        assert!(text.contains("[seed 2] b"), "{text}");
    }
}
