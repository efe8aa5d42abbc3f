//! `no-phantom`: no read through any fluster path returns a value a client
//! did not write.
//!
//! Every read of a value (any outcome, any path but the nemesis's own
//! clients) must find a write of the same `(key, value)`: by anyone, in any
//! outcome, an invocation whose process died, or an `Ok` fill's value. A
//! lease marker (`"\0fluster:lease:…"`), garbage, or another key's value is
//! a violation. On an `INCR` counter a read must return a number (or a
//! value some client wrote there). A message received on a channel must
//! match a publish (any outcome) of the same value on the same channel.

use std::collections::HashSet;

use super::index::{History, Source};
use super::report::{Report, Rule};
use crate::history::{HARNESS, Kind, Path};

/// The rule.
pub(crate) const RULE: Rule = Rule {
    name: "no-phantom",
    row: "no read through any fluster path returns a value a client did not write (a lease, \
          garbage, another key's value)",
};

/// Judges every read and every received message.
pub(crate) fn run(h: &History<'_>, report: &mut Report) {
    let published: HashSet<(&str, &str)> = h
        .recs
        .iter()
        .filter(|r| r.kind == Kind::Publish)
        .filter_map(|r| Some((r.key, r.value?)))
        .collect();
    for (i, r) in h.recs.iter().enumerate() {
        if r.source != Source::Op || r.process == HARNESS || r.path == Some(Path::Outside) {
            continue;
        }
        let Some(value) = r.value else { continue };
        let known = |pair: (&str, &str)| h.invoked.contains(&pair) || h.values.contains_key(&pair);
        let (ok, what) = match r.kind {
            Kind::Read if h.counter(r.key) => {
                (value.trim().parse::<i64>().is_ok() || known((r.key, value)), "counter")
            }
            Kind::Read => (known((r.key, value)), "key"),
            Kind::Receive => (
                published.contains(&(r.key, value)) || h.invoked.contains(&(r.key, value)),
                "channel",
            ),
            _ => continue,
        };
        if !ok {
            report.flag(&RULE, || {
                let description = format!(
                    "p{} read {value:?} from {what} {} through {:?}, a value no client wrote there{}",
                    r.process,
                    r.key,
                    r.path.unwrap_or(Path::Get),
                    if value.starts_with('\0') { " (a lease marker?)" } else { "" },
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
    fn values_someone_wrote_pass() {
        let c = config();
        let entries = vec![
            write(1, "k", "p1:1", 0, 1).into(),
            write(2, "k", "p2:1", 2, 3).failed().into(),
            invoke(3, 99, "k", "p3:1", 4),
            fill(2, "j", Some("p2:2"), 5, 6),
            read(1, "k", Some("p1:1"), 10, 11).into(),
            read(1, "k", Some("p2:1"), 10, 11).into(),
            read(2, "k", Some("p3:1"), 10, 11).into(),
            read(2, "j", Some("p2:2"), 10, 11).path(Path::Aside).into(),
            read(2, "k", None, 10, 11).into(),
            op(1, Kind::Incr, "n", None, 0, 1).into(),
            read(2, "n", Some("42"), 2, 3).into(),
            op(1, Kind::Publish, "ch", Some("p1:9"), 0, 1).failed().into(),
            op(2, Kind::Receive, "ch", Some("p1:9"), 1, 2).into(),
            // The nemesis reads whatever a node holds, leases included.
            read(0, "k", Some("\0fluster:lease:abc"), 3, 4).path(Path::Outside).into(),
        ];
        let report = check(&c, &entries);
        assert_eq!(report.count(RULE.name), 0, "{report}");
    }

    #[test]
    fn a_lease_marker_is_found() {
        let entries = vec![
            write(1, "k", "p1:1", 0, 1).into(),
            read(2, "k", Some("\0fluster:lease:abc"), 10, 11).path(Path::GetShared).into(),
        ];
        let report = check(&config(), &entries);
        assert_eq!(report.count(RULE.name), 1, "{report}");
        let v = &report.rule(RULE.name).unwrap().examples[0];
        assert!(v.description.contains("lease"), "{}", v.description);
        assert_eq!(v.seed, config().seed);
        assert_eq!(v.excerpt.len(), 1);
    }

    #[test]
    fn another_keys_value_garbage_and_forged_messages_are_found() {
        let entries = vec![
            write(1, "k", "p1:1", 0, 1).into(),
            read(2, "j", Some("p1:1"), 10, 11).into(),
            op(1, Kind::Incr, "n", None, 0, 1).into(),
            read(2, "n", Some("garbage"), 2, 3).into(),
            op(1, Kind::Publish, "ch", Some("p1:9"), 0, 1).into(),
            op(2, Kind::Receive, "ch", Some("p1:8"), 1, 2).into(),
        ];
        let report = check(&config(), &entries);
        assert_eq!(report.count(RULE.name), 3, "{report}");
    }
}
