//! Entries as compact one-line text for the report's excerpts, times in ms
//! from the run's first entry.

use super::index::{History, Rec, Source};
use super::timeline::{Change, MS, NEVER};
use crate::history::{Fault, Fill, Kind, Outcome, Sample};

impl History<'_> {
    /// `t` in ms from the run's start (`?` for [`NEVER`]).
    pub(crate) fn at(&self, t: u64) -> String {
        if t == NEVER {
            return "?".to_string();
        }
        let rel = t as i128 - self.t0 as i128;
        format!("{:.1}", rel as f64 / MS as f64)
    }

    /// A span `[a..b] ms`.
    fn span(&self, a: u64, b: u64) -> String {
        format!("[{}..{} ms]", self.at(a), self.at(b))
    }

    /// One line for the rec at `i`.
    pub(crate) fn line(&self, i: usize) -> String {
        let r = &self.recs[i];
        match r.source {
            Source::Fill(f) => self.fill_line(self.fills[f]),
            Source::Invoke => format!(
                "p{} #{} invoked {:?} {}{} at {} ms, never completed",
                r.process,
                r.id,
                r.kind,
                r.key,
                r.value.map(|v| format!(" := {v:?}")).unwrap_or_default(),
                self.at(r.invoke)
            ),
            Source::Op => self.op_line(r),
        }
    }

    fn op_line(&self, r: &Rec<'_>) -> String {
        let what = match (r.kind, r.value) {
            (Kind::Read, Some(v)) => format!("read {} -> {v:?}", r.key),
            (Kind::Read, None) => format!("read {} -> miss", r.key),
            (Kind::Write, v) => format!("write {} := {:?}", r.key, v.unwrap_or_default()),
            (Kind::Delete, _) => format!("delete {}", r.key),
            (Kind::Expire, _) => format!("expire {}", r.key),
            (Kind::Incr, _) => format!("incr {}", r.key),
            (Kind::Publish, v) => format!("publish {} {:?}", r.key, v.unwrap_or_default()),
            (Kind::Receive, v) => format!("receive {} {:?}", r.key, v.unwrap_or_default()),
        };
        let mut line = format!(
            "p{} #{} {:?} {what}",
            r.process,
            r.id,
            r.path.unwrap_or(crate::history::Path::Get)
        );
        if let Some(ttl) = r.ttl_ms {
            line += &format!(" ttl {ttl} ms");
        }
        if let Some(node) = r.node {
            let role = match r.home {
                Some(true) => " (home)",
                Some(false) => " (stand-in)",
                None => "",
            };
            line += &format!(" @{node}{role}");
        }
        let outcome = match r.outcome {
            Some(Outcome::Ok) => "ok".to_string(),
            Some(Outcome::Failed(e)) => format!("failed: {}", first_chars(e, 60)),
            Some(Outcome::Hung(ms)) => format!("hung {ms} ms"),
            None => "unknown".to_string(),
        };
        format!("{line} {} {outcome}", self.span(r.invoke, r.complete))
    }

    /// One line for a fill.
    pub(crate) fn fill_line(&self, f: &Fill) -> String {
        format!(
            "p{} fill {} -> {:?} ttl {} ms {} {:?}",
            f.process,
            f.key,
            f.value.as_deref().unwrap_or_default(),
            f.ttl_ms,
            self.span(f.start, f.end),
            f.result
        )
    }

    /// One line for a fault.
    pub(crate) fn fault_line(&self, f: &Fault) -> String {
        let mut line = format!("fault {:?}", f.kind);
        if let Some(node) = &f.node {
            line += &format!(" node {node}");
        }
        if let Some(p) = f.process {
            line += &format!(" process p{p}");
        }
        format!("{line} {}", self.span(f.start, f.end))
    }

    /// One line for a membership call.
    pub(crate) fn member_line(&self, m: &crate::history::Member) -> String {
        format!(
            "p{} {:?} {} {} -> {:?}",
            m.process,
            m.change,
            m.node,
            self.span(m.start, m.end),
            m.outcome
        )
    }

    /// One line for a view change.
    pub(crate) fn change_line(&self, c: &Change<'_>) -> String {
        format!("p{} view {} {:?} at {} ms", c.process, c.node, c.view, self.at(c.at))
    }

    /// One line for a sample.
    pub(crate) fn sample_line(&self, s: &Sample) -> String {
        format!(
            "sample @{} {} = {:?} pttl {} ms at {} ms",
            s.node,
            s.key,
            s.value,
            s.pttl_ms,
            self.at(s.at)
        )
    }
}

/// At most `n` characters of `s`.
fn first_chars(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// Nanoseconds as whole ms (rounded down).
pub(crate) fn whole_ms(ns: u64) -> u64 {
    ns / MS
}
