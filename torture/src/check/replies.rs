//! `exact-replies`: a caller sees exactly the replies of the commands it
//! sent, whatever fluster sends beside them (a stand-in's caps).
//!
//! Every [`Entry::Reply`] is a violation: the workload records one where it
//! knows a reply's shape and the reply differs (an `EXEC` of one queued
//! `SET`, sent one command at a time, answers `[OK]`, on a home or a
//! stand-in, in both flavours).

use super::index::History;
use super::report::{Report, Rule};
use crate::history::Entry;

/// The rule.
pub(crate) const RULE: Rule = Rule {
    name: "exact-replies",
    row: "every row: a caller sees exactly the replies of the commands it sent, on every path and both flavours",
};

/// Judges the replies the workload checked.
pub(crate) fn run(h: &History<'_>, entries: &[Entry], report: &mut Report) {
    for entry in entries {
        if let Entry::Reply { process, path, expected, got, at } = entry {
            report.flag(&RULE, || {
                let description = format!("p{process} {path:?} got {got} where {expected} was due");
                (description.clone(), vec![format!("{description} at {} ms", h.at(*at))])
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::super::testkit::*;
    use crate::history::{Entry, Path};

    #[test]
    fn a_reply_other_than_the_commands_is_found() {
        let entry = Entry::Reply {
            process: 1,
            path: Path::MultiByHand,
            expected: "[OK]".into(),
            got: "[OK, 1]".into(),
            at: 10,
        };
        assert_eq!(check(&config(), &[entry]).count("exact-replies"), 1);
        assert_eq!(check(&config(), &[]).count("exact-replies"), 0);
    }
}
