//! Stand-in writes: the keys a command writes (from Redis's own command
//! table), the cap sent with them, and the journal that remembers them
//! until their home returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use redis::Cmd;

use crate::route::NodeName;

/// The most stand-in writes remembered per home node: the rest are counted
/// as dropped and left to `stand_in_ttl`. About 100 bytes each with a short
/// key, so at most a few megabytes per node.
pub(crate) const JOURNAL_KEYS: usize = 65_536;

/// Where a write command's keys are, as Redis's command table says:
/// positions `first`, `first + step`, ... up to `last` (negative: from the
/// end); `movable` when some may be elsewhere.
#[derive(Debug, Clone, Copy, Default)]
struct Spec {
    first: usize,
    last: isize,
    step: usize,
    movable: bool,
}

/// Every command Redis knows, by lower-case name (`container|sub` for
/// subcommands); `None` for one that writes no key.
fn table() -> &'static HashMap<&'static str, Option<Spec>> {
    static TABLE: OnceLock<HashMap<&'static str, Option<Spec>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let line = |line: &'static str| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let mut number = || words.next()?.parse::<isize>().ok();
            let spec = match (number(), number(), number()) {
                (Some(first), Some(last), Some(step)) => Some(Spec {
                    first: first.unsigned_abs(),
                    last,
                    step: step.unsigned_abs().max(1),
                    movable: line.ends_with("movable"),
                }),
                _ => None,
            };
            Some((name, spec))
        };
        include_str!("commands.txt")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(line)
            .collect()
    })
}

/// What Redis's table says of a command.
fn spec(words: &[&[u8]]) -> Option<Option<Spec>> {
    let lower = |word: &[u8]| String::from_utf8_lossy(word).to_ascii_lowercase();
    let name = lower(words.first()?);
    let table = table();
    match table.get(name.as_str()) {
        Some(spec) => Some(*spec),
        None => table.get(format!("{name}|{}", lower(words.get(1)?)).as_str()).copied(),
    }
}

/// The keys `words` (a command, name first) writes, and whether it may
/// write others too (a command the table does not know, or whose keys
/// move: the caller adds the key the connection was taken for).
pub(crate) fn written<'a>(words: &[&'a [u8]]) -> (Vec<&'a [u8]>, bool) {
    let Some(spec) = spec(words) else { return (Vec::new(), true) };
    let Some(spec) = spec.filter(|s| s.first > 0) else {
        return (Vec::new(), spec.is_some_and(|s| s.movable));
    };
    let last = if spec.last < 0 {
        words.len().saturating_sub(spec.last.unsigned_abs())
    } else {
        spec.last.unsigned_abs()
    };
    let keys = (spec.first..=last.min(words.len().saturating_sub(1))).step_by(spec.step);
    (keys.map(|i| words[i]).collect(), spec.movable)
}

/// The cap of a stand-in's copy of `key`: its TTL becomes at most `ttl`
/// (`LT` never lengthens one, and sets one on a key without).
pub(crate) fn cap(key: &[u8], ttl: Duration) -> Cmd {
    let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut cmd = redis::cmd("PEXPIRE");
    cmd.arg(key).arg(millis).arg("LT");
    cmd
}

/// What [`Journal::remember`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Remembered {
    /// A new write to remember.
    New,
    /// Already remembered.
    Known,
    /// No room: left to the TTL.
    Full,
}

/// The keys this process wrote through stand-ins for one home node, each
/// with the stand-ins it went to: at most [`JOURNAL_KEYS`] of them.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    keys: Mutex<HashMap<Box<[u8]>, Vec<NodeName>>>,
    /// Writes deleted at a return, and writes left to the TTL, so far.
    invalidated: AtomicU64,
    dropped: AtomicU64,
}

/// What the journal held: each key, with the stand-ins it went to.
pub(crate) type Entries = HashMap<Box<[u8]>, Vec<NodeName>>;

impl Journal {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        // Nothing panics while it is held.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers that `key` was written on `stand_in`.
    pub(crate) fn remember(&self, stand_in: NodeName, key: &[u8]) -> Remembered {
        let mut keys = self.lock();
        if let Some(stand_ins) = keys.get_mut(key) {
            if stand_ins.contains(&stand_in) {
                return Remembered::Known;
            }
            stand_ins.push(stand_in);
            return Remembered::New;
        }
        if keys.len() >= JOURNAL_KEYS {
            return Remembered::Full;
        }
        keys.insert(key.into(), vec![stand_in]);
        Remembered::New
    }

    /// Keys remembered now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Counts `n` writes invalidated, or (`dropped`) left to the TTL.
    pub(crate) fn count(&self, n: usize, dropped: bool) {
        let counter = if dropped { &self.dropped } else { &self.invalidated };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Writes invalidated and dropped so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.invalidated.load(Ordering::Relaxed), self.dropped.load(Ordering::Relaxed))
    }

    /// Everything remembered, leaving the journal empty.
    pub(crate) fn take(&self) -> Entries {
        std::mem::take(&mut *self.lock())
    }

    /// Puts back what [`take`](Self::take) gave, as room allows; returns
    /// how many keys found none.
    pub(crate) fn restore(&self, entries: Entries) -> usize {
        let mut lost = 0;
        for (key, stand_ins) in entries {
            for stand_in in stand_ins {
                lost += usize::from(self.remember(stand_in, &key) == Remembered::Full);
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(words: &[&str]) -> (Vec<String>, bool) {
        let words: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        let (keys, more) = written(&words);
        (keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect(), more)
    }

    #[test]
    fn the_table_finds_the_written_keys() {
        assert_eq!(keys(&["SET", "a", "1", "EX", "5"]), (vec!["a".into()], false));
        assert_eq!(keys(&["mset", "a", "1", "b", "2"]), (vec!["a".into(), "b".into()], false));
        assert_eq!(keys(&["DEL", "a", "b", "c"]).0, ["a", "b", "c"]);
        assert_eq!(keys(&["BLPOP", "a", "b", "0"]).0, ["a", "b"]);
        assert_eq!(keys(&["XGROUP", "CREATE", "s", "g", "$"]).0, ["s"]);
        assert_eq!(keys(&["GET", "a"]), (vec![], false));
        assert_eq!(keys(&["PING"]), (vec![], false));
        assert_eq!(keys(&["EVAL", "return 1", "1", "a"]), (vec![], true));
        assert_eq!(keys(&["ZUNIONSTORE", "d", "2", "a", "b"]), (vec!["d".into()], true));
        assert_eq!(keys(&["NOSUCHCOMMAND", "a"]), (vec![], true));
        assert_eq!(keys(&["SET"]), (vec![], false));
    }

    #[test]
    fn the_journal_is_bounded() {
        let journal = Journal::default();
        let (a, b) = (NodeName::from("a"), NodeName::from("b"));
        assert_eq!(journal.remember(a, b"k"), Remembered::New);
        assert_eq!(journal.remember(a, b"k"), Remembered::Known);
        assert_eq!(journal.remember(b, b"k"), Remembered::New);
        for i in 1..JOURNAL_KEYS {
            journal.remember(a, i.to_string().as_bytes());
        }
        assert_eq!(journal.len(), JOURNAL_KEYS);
        assert_eq!(journal.remember(a, b"one too many"), Remembered::Full);
        let taken = journal.take();
        assert_eq!((taken.len(), journal.len()), (JOURNAL_KEYS, 0));
        assert_eq!(journal.restore(taken), 0);
        assert_eq!(journal.len(), JOURNAL_KEYS);
    }
}
