//! `liveness` and `aside-wait`: the README rows "a node hangs: no command
//! waits longer than `response_timeout`, no `get` longer than
//! `checkout_timeout`" and "`aside`: nobody waits longer than `lease` plus
//! one fill".
//!
//! Every completed operation of a pool (the nemesis's own and received
//! messages aside), once per operation however many keys it had, must not
//! be `Hung` and must last (`complete - invoke`, less the time its process
//! was stopped by a `PauseProcess` fault) at most its path's bound, all in
//! ms:
//!
//! - one command (`Get`, `GetShared`, `GetCached`, `Script`, `SyncGet`,
//!   `Del`, `Mget`, `Mset`, `Pipeline`, `FanOut`, `PubSub`):
//!   `checkout + response + connect + 500`;
//! - several in a row (`MultiByHand`, `SyncMultiByHand`, `Transaction`):
//!   `checkout + 6 × response + connect + 500`;
//! - `Aside` (rule `aside-wait`, whatever its outcome):
//!   `lease + longest_fill + 2 × (checkout + response) + 500`.

use std::collections::HashSet;

use super::excerpt::whole_ms;
use super::index::{History, Source};
use super::report::{Report, Rule};
use super::timeline::ms;
use crate::history::{HARNESS, Kind, Outcome, Path, RunConfig};

/// The rule for every path but `aside`.
pub(crate) const RULE: Rule = Rule {
    name: "liveness",
    row: "a node hangs: no command waits longer than response_timeout, no get longer than \
          checkout_timeout",
};

/// The rule for `aside`.
pub(crate) const WAIT: Rule =
    Rule { name: "aside-wait", row: "aside: nobody waits longer than lease plus one fill" };

/// The longest an operation through `path` may take (ms), and its rule.
fn bound(c: &RunConfig, path: Path) -> (u64, &'static Rule) {
    let one = c.checkout_timeout_ms + c.response_timeout_ms + c.connect_timeout_ms + 500;
    match path {
        Path::Aside => (
            c.lease_ms
                + c.longest_fill_ms
                + 2 * (c.checkout_timeout_ms + c.response_timeout_ms)
                + 500,
            &WAIT,
        ),
        Path::MultiByHand | Path::SyncMultiByHand | Path::Transaction => {
            (one + 5 * c.response_timeout_ms, &RULE)
        }
        _ => (one, &RULE),
    }
}

/// Judges every operation's duration.
pub(crate) fn run(h: &History<'_>, report: &mut Report) {
    let mut flagged: HashSet<(u32, u64)> = HashSet::new();
    for (i, r) in h.recs.iter().enumerate() {
        let Some(path) = r.path else { continue };
        if r.source != Source::Op
            || r.process == HARNESS
            || path == Path::Outside
            || r.kind == Kind::Receive
        {
            continue;
        }
        let (limit, rule) = bound(h.config, path);
        // Time its process spent stopped by the nemesis is not the pool's.
        let stopped = h.faults.stopped(r.process, r.invoke, r.complete);
        let took = r.complete.saturating_sub(r.invoke).saturating_sub(stopped);
        let hung = matches!(r.outcome, Some(Outcome::Hung(_)));
        if (hung || took > ms(limit)) && flagged.insert((r.process, r.id)) {
            report.flag(rule, || {
                let how = if hung { "hung" } else { "took" };
                let description = format!(
                    "p{} #{} through {path:?} {how} {} ms; the bound is {limit} ms",
                    r.process,
                    r.id,
                    whole_ms(took),
                );
                (description, vec![h.line(i)])
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    #[test]
    fn a_hang_and_a_slow_get_are_found_once_per_operation() {
        let slow = write(1, "k", "p1:1", 0, 3_001);
        let mut twin = slow.clone();
        twin.key = "j".into();
        let entries = vec![
            read(1, "k", None, 0, 10).hung().into(),
            slow.into(),
            twin.into(),
            read(1, "k", None, 0, 3_000).into(),
            read(1, "k", None, 0, 5_500).path(Path::Transaction).into(),
            read(1, "k", None, 0, 5_501).path(Path::MultiByHand).into(),
        ];
        let report = check(&config(), &entries);
        assert_eq!(report.count(RULE.name), 3, "{report}");
    }

    #[test]
    fn aside_waits_are_bounded_by_lease_and_fill() {
        let entries = vec![
            read(1, "k", None, 0, 4_600).path(Path::Aside).into(),
            read(1, "k", None, 0, 4_601).path(Path::Aside).failed().into(),
            read(1, "k", None, 0, 10).path(Path::Aside).hung().into(),
            read(0, "k", None, 0, 60_000).path(Path::Outside).into(),
            crate::history::Op { kind: Kind::Receive, ..read(2, "ch", None, 0, 60_000) }.into(),
        ];
        let report = check(&config(), &entries);
        assert_eq!(report.count(WAIT.name), 2, "{report}");
        assert_eq!(report.count(RULE.name), 0, "{report}");
    }
}
