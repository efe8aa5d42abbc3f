//! Stand-in writes: the keys a command writes (from Redis's own command
//! table), the cap sent with them, and the journal that remembers them
//! until their home returns.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use redis::{Cmd, Pipeline, Value};

/// The most keys remembered per home node: writes past them are counted as
/// dropped and left to `stand_in_ttl`. About 100 bytes each with a short
/// key: a few megabytes per node at most.
pub(crate) const JOURNAL_KEYS: usize = 65_536;

/// Every command Redis knows, by lower-case name (`container|sub` for
/// subcommands), with the rest of its line: a write's key positions.
fn table() -> &'static HashMap<&'static str, &'static str> {
    static TABLE: OnceLock<HashMap<&str, &str>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let lines = include_str!("commands.txt").lines().filter(|l| !l.starts_with('#'));
        lines.map(|line| line.split_once(' ').unwrap_or((line, ""))).collect()
    })
}

/// How far a command's writes reach beyond the keys [`written`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Those keys and no other.
    Listed,
    /// Perhaps others: a command the table does not know, or whose keys
    /// move (the caller may add the key the connection was taken for).
    More,
    /// Every key: `FLUSHALL`, `FLUSHDB`, `SWAPDB`, `FUNCTION RESTORE`...
    All,
}

/// The command's name (or `container|sub`) lower case, in `buffer`: no
/// command name is longer than it.
fn lower<'b>(buffer: &'b mut [u8; 48], words: &[&[u8]], sub: bool) -> Option<&'b str> {
    let name = words.first()?;
    let second = if sub { Some(*words.get(1)?) } else { None };
    let len = name.len() + second.map_or(0, |s| s.len() + 1);
    let out = buffer.get_mut(..len)?;
    out[..name.len()].copy_from_slice(name);
    if let Some(second) = second {
        out[name.len()] = b'|';
        out[name.len() + 1..].copy_from_slice(second);
    }
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// The keys `words` (a command, name first) writes, and how far its writes
/// reach beyond them. Scripts and functions write the keys they declare
/// (`EVAL script numkeys key...`), as Redis asks of them; one that declares
/// none may write any.
pub(crate) fn written<'a>(words: &[&'a [u8]]) -> (Vec<&'a [u8]>, Reach) {
    let (table, mut buffer) = (table(), [0u8; 48]);
    let spec = match lower(&mut buffer, words, false).and_then(|name| table.get(name)) {
        Some(spec) => spec,
        None => match lower(&mut buffer, words, true).and_then(|name| table.get(name)) {
            Some(spec) => spec,
            None => return (Vec::new(), Reach::More),
        },
    };
    let name = words[0];
    if [&b"eval"[..], b"evalsha", b"fcall"].iter().any(|s| s.eq_ignore_ascii_case(name)) {
        let declared = words.get(2).and_then(|n| std::str::from_utf8(n).ok()?.parse().ok());
        return match declared.filter(|&n| n > 0).and_then(|n: usize| words.get(3..3 + n)) {
            Some(keys) => (keys.to_vec(), Reach::Listed),
            None => (Vec::new(), Reach::More),
        };
    }
    let movable = spec.ends_with("movable");
    let mut numbers = spec.split(' ').filter_map(|n| n.parse::<isize>().ok());
    let (first, last, step) = match (numbers.next(), numbers.next(), numbers.next()) {
        (Some(first @ 1..), Some(last), Some(step)) => (first, last, step),
        // A write of no key in particular: of them all.
        (Some(0), _, _) if !movable => return (Vec::new(), Reach::All),
        (Some(0), _, _) => return (Vec::new(), Reach::More),
        _ => return (Vec::new(), Reach::Listed),
    };
    let reach = if movable { Reach::More } else { Reach::Listed };
    // Positions up to `last`, counted from the end when negative.
    let len = words.len() as isize;
    let last = if last < 0 { len + last } else { last.min(len - 1) };
    let keys = (first..=last).step_by(step.unsigned_abs().max(1));
    (keys.map(|i| words[i.unsigned_abs()]).collect(), reach)
}

/// The cap of a stand-in's copy of `key`: its TTL becomes at most `ttl`
/// (`LT` never lengthens one, and sets one on a key without).
pub(crate) fn cap(key: &[u8], ttl: Duration) -> Cmd {
    let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut cmd = redis::cmd("PEXPIRE");
    cmd.arg(key).arg(millis).arg("LT");
    cmd
}

/// What goes on the wire for a pipeline whose stand-in writes need
/// `caps`, in both flavours: the caps after its commands, inside its
/// `MULTI`/`EXEC` if it is a transaction, so they apply with its writes
/// (and not if it aborts); and how its own replies are taken back.
pub(crate) struct Capped {
    /// The pipeline to send, and where the caller's replies are in its
    /// replies (as `req_packed_commands` takes them).
    pub(crate) pipe: Pipeline,
    pub(crate) offset: usize,
    pub(crate) count: usize,
    caps: usize,
}

impl Capped {
    /// `pipeline`, whose caller wants `count` replies from `offset`, with
    /// `caps`.
    pub(crate) fn new(
        pipeline: &Pipeline,
        (offset, count): (usize, usize),
        caps: Vec<Cmd>,
    ) -> Self {
        let (mut pipe, extra) = (pipeline.clone(), caps.len());
        for cap in caps {
            pipe.add_command(cap);
        }
        // An atomic pipeline packs `EXEC` after its commands, caps
        // included; the replies to them all come inside `EXEC`'s.
        let (offset, count) =
            if pipe.is_transaction() { (offset + extra, count) } else { (offset, count + extra) };
        Capped { pipe, offset, count, caps: extra }
    }

    /// The caller's replies out of what the server sent back.
    pub(crate) fn replies(&self, mut values: Vec<Value>) -> Vec<Value> {
        if !self.pipe.is_transaction() {
            values.truncate(values.len().saturating_sub(self.caps));
        } else if let Some(Value::Array(replies)) = values.last_mut() {
            replies.truncate(replies.len().saturating_sub(self.caps));
        }
        values
    }
}

/// The pipeline packed in `bytes` (as a blocking connection gets it),
/// atomic if it is wrapped in `MULTI` and `EXEC`: what the synchronous
/// flavour hands to [`Capped`].
pub(crate) fn unpacked(commands: Vec<Vec<&[u8]>>) -> Pipeline {
    let word = |c: Option<&Vec<&[u8]>>, name: &[u8]| {
        c.and_then(|c| c.first()).is_some_and(|w| w.eq_ignore_ascii_case(name))
    };
    let atomic =
        commands.len() >= 2 && word(commands.first(), b"MULTI") && word(commands.last(), b"EXEC");
    let inner = if atomic { &commands[1..commands.len() - 1] } else { &commands[..] };
    let mut pipe = redis::pipe();
    if atomic {
        pipe.atomic();
    }
    for words in inner {
        let mut cmd = Cmd::new();
        for word in words {
            cmd.arg(*word);
        }
        pipe.add_command(cmd);
    }
    pipe
}

/// The keys this process wrote through stand-ins for one home node: at
/// most [`JOURNAL_KEYS`] of them.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    keys: Mutex<HashSet<Box<[u8]>>>,
    /// Writes deleted at a return, and writes left to the TTL, so far.
    invalidated: AtomicU64,
    dropped: AtomicU64,
}

impl Journal {
    fn lock(&self) -> MutexGuard<'_, HashSet<Box<[u8]>>> {
        // Nothing panics while it is held.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers `key`: whether it is new, or `None` if there is no room.
    pub(crate) fn remember(&self, key: &[u8]) -> Option<bool> {
        let mut keys = self.lock();
        if keys.contains(key) {
            return Some(false);
        }
        (keys.len() < JOURNAL_KEYS).then(|| keys.insert(key.into()))
    }

    /// Keys remembered now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Everything remembered, leaving the journal empty.
    pub(crate) fn take(&self) -> Vec<Box<[u8]>> {
        self.lock().drain().collect()
    }

    /// Puts back what [`take`](Self::take) gave, as room allows; returns
    /// how many found none.
    pub(crate) fn restore(&self, keys: Vec<Box<[u8]>>) -> usize {
        keys.iter().filter(|key| self.remember(key).is_none()).count()
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
}
