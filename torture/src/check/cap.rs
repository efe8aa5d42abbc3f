//! `stand-in-cap`: the README rows "every copy a stand-in took lives at
//! most `stand_in_ttl`, on every path" and, with gutter nodes, "every
//! write on the gutter lives at most `stand_in_ttl` (or `GUTTER_TTL`)".
//!
//! Judged on the sampler's reads of the nodes. For a sample of key `k` with
//! value `v` on node `N`, the writers are the writes of `(k, v)` served by
//! `N` or by an unknown node (all writes of `(k, v)` if none was); on an
//! `INCR` counter, whose numbers no write traces, the pools' `INCR`s of `k`
//! served by `N`. Skipped when there is no writer, when the nemesis wrote
//! it, or while a `SwapDb` fault holds `N` (its other database is the
//! nemesis's). The cap of `N` is `stand_in_ttl` (or, on a gutter,
//! `stand_in_ttl` else `gutter_ttl`); without one there is nothing to judge.
//! The copy must be capped when `N` is a gutter, or when `N` is not `k`'s
//! home and some writer (not a `fan_out`'s) says it was not home or ran
//! while its process had `k`'s home boxed throughout. Then a `PTTL` of -1
//! is a violation (an uncapped copy), and so is an expiry
//! (`at + pttl`) later than `base + cap + 50 ms`, where `base` is the
//! latest completion among the pools' writes, expires and `INCR`s of `k`
//! served by `N` or an unknown node, completed by the sample, or the
//! sample's time if one was still in flight or indeterminate then. A
//! `PTTL` below -1 (the key gone) is no copy.

use std::collections::HashMap;

use super::excerpt::whole_ms;
use super::index::{History, Rec};
use super::report::{Report, Rule};
use super::timeline::{Intervals, ms};
use crate::history::{FaultKind, HARNESS, Kind, Path, Sample};

/// The rule.
pub(crate) const RULE: Rule = Rule {
    name: "stand-in-cap",
    row: "every copy a stand-in took lives at most stand_in_ttl, on every path; every write on \
          the gutter lives at most stand_in_ttl (or GUTTER_TTL)",
};

/// The pools' writes of one key on one node (or on an unknown node).
#[derive(Default)]
struct Placed {
    /// Completions of the acknowledged ones, sorted.
    done: Vec<u64>,
    /// Every one, `[invoke, end]`.
    spans: Vec<(u64, u64, usize)>,
}

/// [`Placed`], indexed.
struct Writes {
    done: Vec<u64>,
    spans: Intervals,
}

impl Writes {
    /// The latest instant by `at` at which a write could have set the copy.
    fn base(&self, at: u64) -> Option<u64> {
        if self.spans.overlapping(at.saturating_add(1), at).is_some() {
            return Some(at);
        }
        let n = self.done.partition_point(|&t| t <= at);
        n.checked_sub(1).map(|i| self.done[i])
    }
}

/// Judges every sample.
pub(crate) fn run(h: &History<'_>, report: &mut Report) {
    if h.samples.is_empty() {
        return;
    }
    let mut placed: HashMap<(&str, Option<&str>), Placed> = HashMap::new();
    let mut incrs: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, r) in h.recs.iter().enumerate() {
        if r.process == HARNESS || !matches!(r.kind, Kind::Write | Kind::Expire | Kind::Incr) {
            continue;
        }
        if let (Kind::Incr, Some(node)) = (r.kind, r.node) {
            incrs.entry((r.key, node)).or_default().push(i);
        }
        let p = placed.entry((r.key, r.node)).or_default();
        if r.acked() {
            p.done.push(r.complete);
        }
        p.spans.push((r.invoke, r.end(), i));
    }
    let placed: HashMap<(&str, Option<&str>), Writes> = placed
        .into_iter()
        .map(|(at, mut p)| {
            p.done.sort_unstable();
            (at, Writes { done: p.done, spans: Intervals::new(p.spans) })
        })
        .collect();
    for s in &h.samples {
        let (key, node) = (s.key.as_str(), s.node.as_str());
        let writers = if h.counter(key) {
            incrs.get(&(key, node)).cloned().unwrap_or_default()
        } else {
            let all = h.values.get(&(key, s.value.as_str())).map_or(&[][..], Vec::as_slice);
            let here: Vec<usize> =
                all.iter().copied().filter(|&i| h.recs[i].node.is_none_or(|n| n == node)).collect();
            if here.is_empty() { all.to_vec() } else { here }
        };
        if !writers.is_empty() {
            judge(h, &placed, s, &writers, report);
        }
    }
}

/// Judges one sample, given the writes that may have put its value there.
fn judge(
    h: &History<'_>,
    placed: &HashMap<(&str, Option<&str>), Writes>,
    s: &Sample,
    writers: &[usize],
    report: &mut Report,
) {
    let (key, node) = (s.key.as_str(), s.node.as_str());
    let swapped = h.faults.find(s.at, s.at, |f| {
        f.kind == FaultKind::SwapDb && f.node.as_deref().is_none_or(|n| n == node)
    });
    if swapped.is_some() || writers.iter().any(|&i| h.recs[i].process == HARNESS) {
        return;
    }
    let gutter = h.is_gutter(node);
    let Some(cap) = (if gutter { Some(h.gutter_cap()) } else { h.config.stand_in_ttl_ms }) else {
        return;
    };
    let home = h.home(key);
    let stand_in = |r: &Rec<'_>| {
        r.path != Some(Path::FanOut)
            && (r.home == Some(false)
                || !h.members.in_era(key, r.invoke, r.seen_until())
                    && home.is_some_and(|n| {
                        h.views.boxed_throughout(r.process, n, r.invoke, r.seen_until())
                    }))
    };
    let required = gutter || (home != Some(node) && writers.iter().any(|&i| stand_in(&h.recs[i])));
    if !required || s.pttl_ms < -1 {
        return;
    }
    let what = if gutter { "a gutter's" } else { "a stand-in's" };
    let excerpt = || {
        let mut lines = vec![h.sample_line(s)];
        lines.extend(writers.iter().rev().take(2).map(|&i| h.line(i)));
        lines
    };
    if s.pttl_ms == -1 {
        report.flag(&RULE, || {
            let description = format!(
                "{what} copy of {key} on {node} (home {}) has no TTL; its cap is {cap} ms",
                home.unwrap_or("?")
            );
            (description, excerpt())
        });
        return;
    }
    // The server read the TTL after the read was sent: the copy expires
    // no sooner than this.
    let expiry = s.sent.saturating_add(ms(s.pttl_ms as u64));
    let base = [Some(node), None]
        .into_iter()
        .filter_map(|n| placed.get(&(key, n))?.base(s.at))
        .max()
        .unwrap_or(s.at);
    let limit = base.saturating_add(ms(cap + 50));
    if expiry > limit {
        report.flag(&RULE, || {
            let description = format!(
                "{what} copy of {key} on {node} (home {}) expires {} ms after its last write \
                 there could have set it ({} ms), {} ms past its cap of {cap} ms",
                home.unwrap_or("?"),
                whole_ms(expiry - base),
                h.at(base),
                whole_ms(expiry - base.saturating_add(ms(cap))),
            );
            (description, excerpt())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::history::{Entry, RunConfig, View};

    fn capped() -> RunConfig {
        RunConfig { stand_in_ttl_ms: Some(100), ..config() }
    }

    fn copy(pttl: i64) -> Vec<Entry> {
        let other = other_of("k");
        vec![write(1, "k", "p1:1", 0, 1).on(&other).into(), sample(&other, "k", "p1:1", pttl, 10)]
    }

    #[test]
    fn an_over_cap_copy_is_found() {
        let report = check(&capped(), &copy(5_000));
        assert_eq!(report.count(RULE.name), 1, "{report}");
        let v = &report.rule(RULE.name).unwrap().examples[0];
        assert!(v.description.contains("past its cap"), "{}", v.description);
        assert_eq!(check(&capped(), &copy(-1)).count(RULE.name), 1);
        // Refreshed long after its write: only a write there could do that.
        let other = other_of("k");
        let late = vec![
            write(1, "k", "p1:1", 0, 1).on(&other).into(),
            sample(&other, "k", "p1:1", 100, 1_000),
        ];
        assert_eq!(check(&capped(), &late).count(RULE.name), 1);
    }

    #[test]
    fn capped_home_and_fan_out_copies_pass() {
        assert_eq!(check(&capped(), &copy(90)).violations(), 0);
        assert_eq!(check(&config(), &copy(-1)).violations(), 0);
        let (home, other) = (home_of("k"), other_of("k"));
        let entries = vec![
            write(1, "k", "p1:1", 0, 1).on(&home).into(),
            sample(&home, "k", "p1:1", -1, 10),
            write(1, "k", "p1:2", 20, 21).on(&other).path(Path::FanOut).into(),
            write(1, "k", "p1:3", 20, 21).on(&other).into(),
            op(1, Kind::Expire, "k", None, 990, 995).ttl(100).on(&other).into(),
            sample(&other, "k", "p1:2", -1, 30),
            sample(&other, "k", "p1:3", 100, 1_000),
            sample(&other, "k", "p1:3", -2, 1_000),
        ];
        let report = check(&capped(), &entries);
        assert_eq!(report.violations(), 0, "{report}");
    }

    #[test]
    fn a_write_while_home_was_boxed_must_be_capped() {
        let (home, other) = (home_of("k"), other_of("k"));
        let entries = vec![
            view(1, &home, View::Boxed, 0),
            write(1, "k", "p1:1", 1, 2).nowhere().into(),
            sample(&other, "k", "p1:1", -1, 10),
        ];
        assert_eq!(check(&capped(), &entries).count(RULE.name), 1);
    }

    #[test]
    fn gutter_copies_are_capped_on_every_path() {
        let gutter = RunConfig { gutters: vec!["g".into()], ..config() };
        let entries = vec![
            write(1, "k", "p1:1", 0, 1).on("g").path(Path::FanOut).into(),
            sample("g", "k", "p1:1", -1, 10),
            write(1, "j", "p1:2", 0, 1).on("g").into(),
            sample("g", "j", "p1:2", 9_000, 10),
        ];
        let report = check(&gutter, &entries);
        assert_eq!(report.count(RULE.name), 1, "{report}");
    }

    #[test]
    fn a_counter_incremented_on_a_stand_in_is_capped() {
        let other = other_of("n");
        let entries = vec![
            op(1, Kind::Incr, "n", None, 0, 1).on(&other).into(),
            sample(&other, "n", "1", -1, 10),
            sample(&home_of("n"), "n", "7", -1, 10),
        ];
        assert_eq!(check(&capped(), &entries).count(RULE.name), 1);
    }
}
