//! The command table: which keys a command writes, how far its writes
//! reach beyond them, and whether it blocks its connection. Redis 7.0's,
//! vendored (`commands.txt`), is every node's until the node's own is read
//! ([`Known`]: `COMMAND`, at a node's first connect and after each return);
//! a server's commands the vendored table lacks are read by their key
//! specs (`specs.rs`). The stand-in caps, the journal, the near cache's
//! fences and the session rules all ask a node's [`Known`]. Pure.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::specs::Served;

/// Every command Redis 7.0 knows, by lower-case name (`container|sub` for
/// subcommands), with the rest of its line: a write's key positions.
fn vendored() -> &'static HashMap<&'static str, &'static str> {
    static TABLE: OnceLock<HashMap<&str, &str>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let lines = include_str!("commands.txt").lines().filter(|l| !l.starts_with('#'));
        lines.map(|line| line.split_once(' ').unwrap_or((line, ""))).collect()
    })
}

/// A node's command table: the vendored one, and the commands its server
/// knows beyond it (none until they are read, or if the server refuses
/// `COMMAND`).
#[derive(Debug, Default)]
pub(crate) struct Table {
    extra: HashMap<Box<str>, Served>,
}

impl Table {
    /// The vendored table with those of `served` (the server's commands,
    /// by lower-case name) it lacks. A command both know is read as the
    /// vendored table reads it, which the tests hold to the server's.
    pub(crate) fn with(served: impl IntoIterator<Item = (String, Served)>) -> Self {
        let vendored = vendored();
        let extra = served.into_iter().filter(|(name, _)| !vendored.contains_key(&**name));
        Table { extra: extra.map(|(name, served)| (name.into(), served)).collect() }
    }
}

/// A node's [`Table`], swapped whole when its server's is read. Shared by
/// everything that judges the node's commands.
#[derive(Debug, Default)]
pub(crate) struct Known {
    table: ArcSwap<Table>,
    /// Whether the table knows a blocking command the session rules do
    /// not: only then does [`blocks`](Self::blocks) look it up.
    blocking: AtomicBool,
    /// The node's epoch (plus one) whose table is read or being read: the
    /// server's is read once per epoch (the node's first connect, and the
    /// first after each return: a server that restarted may be another).
    read_in: AtomicU64,
}

impl Known {
    /// Whether the caller is to read the server's table, as the first in
    /// the node's `epoch` to ask.
    pub(crate) fn claim(&self, epoch: u64) -> bool {
        let mine = epoch.wrapping_add(1);
        self.read_in.swap(mine, Ordering::AcqRel) != mine
    }

    /// The read claimed for `epoch` failed on the way (the server did not
    /// answer it): the next connect of the epoch tries again.
    pub(crate) fn unclaim(&self, epoch: u64) {
        let mine = epoch.wrapping_add(1);
        let _ = self.read_in.compare_exchange(mine, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    /// From now on, `table`.
    pub(crate) fn learn(&self, table: Table) {
        let blocking = table.extra.values().any(|served| served.blocking);
        self.table.store(table.into());
        self.blocking.store(blocking, Ordering::Release);
    }

    /// Whether the server flags the command `name` blocking, for a command
    /// the vendored table does not know.
    pub(crate) fn blocks(&self, name: &[u8]) -> bool {
        if !self.blocking.load(Ordering::Acquire) {
            return false;
        }
        let mut buffer = [0u8; 48];
        let table = self.table.load();
        let name = lower(&mut buffer, &[name], false);
        name.and_then(|name| table.extra.get(name)).is_some_and(|served| served.blocking)
    }

    /// The keys `words` (a command, name first) writes, and how far its
    /// writes reach beyond them: see [`written`].
    pub(crate) fn written<'a>(&self, words: &[&'a [u8]]) -> (Vec<&'a [u8]>, Reach) {
        written(&self.table.load(), words)
    }
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
/// none may write any. A command whose keys move is read as Redis's own
/// key specs read it (`SORT ... STORE destination`, `GEORADIUS ... STORE`,
/// the pops of `LMPOP numkeys key...`, `XREADGROUP ... STREAMS key...`).
/// A command the vendored table lacks is read by `table`'s key specs.
pub(crate) fn written<'a>(table: &Table, words: &[&'a [u8]]) -> (Vec<&'a [u8]>, Reach) {
    let (vendored, mut buffer) = (vendored(), [0u8; 48]);
    let mut spec = None;
    for sub in [false, true] {
        let Some(name) = lower(&mut buffer, words, sub) else { continue };
        if let Some(line) = vendored.get(name) {
            spec = Some(*line);
            break;
        }
        if let Some(served) = table.extra.get(name) {
            return served.written(words);
        }
    }
    let Some(spec) = spec else { return (Vec::new(), Reach::More) };
    let movable = spec.ends_with("movable");
    if movable && let Some(written) = moved(words) {
        return written;
    }
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

/// The keys a write whose keys move writes, read from its words, for the
/// commands this reading knows (`None` for the others); [`Reach::More`]
/// when its words do not say (a script that declares no key, a command
/// cut short).
fn moved<'a>(words: &[&'a [u8]]) -> Option<(Vec<&'a [u8]>, Reach)> {
    let is = |word: &[u8], name: &str| word.eq_ignore_ascii_case(name.as_bytes());
    let name = words[0];
    // `numkeys` at `at`, then that many keys.
    let counted = |at: usize| {
        let n: usize = std::str::from_utf8(words.get(at)?).ok()?.parse().ok()?;
        // A forged `numkeys` past the words names no key (never a panic).
        Some(words.get(at + 1..(at + 1).checked_add(n)?)?.to_vec()).filter(|keys| !keys.is_empty())
    };
    // Options from `from`: each of `skips` passes its arguments, each of
    // `stores` names a key it writes, `rest` makes every word after it one.
    let options = |from: usize, skips: &[(&str, usize)], stores: &[&str], rest: Option<&str>| {
        let (mut keys, mut i) = (Vec::new(), from);
        while let Some(word) = words.get(i) {
            if rest.is_some_and(|rest| is(word, rest)) {
                keys.extend_from_slice(&words[i + 1..]);
                break;
            } else if stores.iter().any(|s| is(word, s)) {
                keys.extend(words.get(i + 1));
                i += 2;
            } else {
                i += 1 + skips.iter().find(|(s, _)| is(word, s)).map_or(0, |(_, n)| *n);
            }
        }
        Some(keys)
    };
    let keys = if ["eval", "evalsha", "fcall"].iter().any(|s| is(name, s)) {
        counted(2)
    } else if is(name, "sort") {
        options(2, &[("by", 1), ("limit", 2), ("get", 1)], &["store"], None)
    } else if is(name, "georadius") || is(name, "georadiusbymember") {
        let from = if is(name, "georadius") { 6 } else { 5 };
        options(from, &[("count", 1)], &["store", "storedist"], None)
    } else if ["zunionstore", "zinterstore", "zdiffstore"].iter().any(|s| is(name, s)) {
        words.get(1).map(|key| vec![*key])
    } else if is(name, "lmpop") || is(name, "zmpop") {
        counted(1)
    } else if is(name, "blmpop") || is(name, "bzmpop") {
        counted(2)
    } else if is(name, "xreadgroup") {
        let skips = [("group", 2), ("count", 1), ("block", 1)];
        let rest = options(1, &skips, &[], Some("streams")).unwrap_or_default();
        Some(rest[..rest.len() / 2].to_vec()).filter(|keys| !keys.is_empty())
    } else if is(name, "migrate") {
        // It deletes here what it moves: the key, or those after `KEYS`.
        let key = words.get(3).filter(|key| !key.is_empty()).copied();
        let listed = options(6, &[("auth", 1), ("auth2", 2)], &[], Some("keys"));
        listed.map(|keys| key.into_iter().chain(keys).collect())
    } else {
        return None;
    };
    Some(keys.map_or((Vec::new(), Reach::More), |keys| (keys, Reach::Listed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(words: &[&str]) -> (Vec<String>, Reach) {
        let words: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        let (keys, reach) = written(&Table::default(), &words);
        (keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect(), reach)
    }

    #[test]
    fn a_forged_numkeys_names_no_key_and_never_panics() {
        for numkeys in ["18446744073709551615", "9223372036854775807", "3"] {
            let (keys, reach) = of(&["EVAL", "return 1", numkeys, "k"]);
            assert!(keys.is_empty(), "{numkeys}: {keys:?}");
            assert_eq!(reach, Reach::More, "{numkeys}");
        }
    }

    #[test]
    fn the_table_places_the_written_keys() {
        assert_eq!(of(&["SET", "a", "1", "EX", "5"]), (vec!["a".into()], Reach::Listed));
        assert_eq!(of(&["mset", "a", "1", "b", "2"]).0, ["a", "b"]);
        assert_eq!(of(&["DEL", "a", "b", "c"]).0, ["a", "b", "c"]);
        assert_eq!(of(&["BLPOP", "a", "b", "0"]).0, ["a", "b"], "last key before the timeout");
        assert_eq!(of(&["XGROUP", "CREATE", "s", "g", "$"]).0, ["s"], "a subcommand's key");
        assert_eq!(of(&["GET", "a"]), (vec![], Reach::Listed), "a read writes nothing");
        assert_eq!(of(&["SET"]), (vec![], Reach::Listed), "a cut command places nothing");
        // Scripts and functions write the keys they declare.
        let script = of(&["EVAL", "return 1", "2", "a", "b", "arg"]);
        assert_eq!(script, (vec!["a".into(), "b".into()], Reach::Listed));
        assert_eq!(of(&["fcall", "f", "1", "a"]), (vec!["a".into()], Reach::Listed));
        assert_eq!(of(&["EVALSHA", "abc", "3", "a"]), (vec![], Reach::More), "keys cut short");
        assert_eq!(of(&["EVAL", "return 1", "0"]), (vec![], Reach::More), "no key declared");
        // Keys that move are read as the server's key specs read them.
        let listed = |keys: &[&str]| (keys.iter().map(|k| k.to_string()).collect(), Reach::Listed);
        assert_eq!(of(&["ZUNIONSTORE", "d", "2", "a", "b"]), listed(&["d"]));
        assert_eq!(of(&["SORT", "src", "STORE", "dst"]), listed(&["dst"]));
        assert_eq!(of(&["sort", "src", "LIMIT", "0", "5", "GET", "store", "ALPHA"]), listed(&[]));
        assert_eq!(of(&["SORT", "s", "BY", "STORE", "GET", "#", "store", "d"]), listed(&["d"]));
        assert_eq!(of(&["GEORADIUS", "g", "0", "0", "5", "km", "STOREDIST", "d"]), listed(&["d"]));
        let by_member = ["GEORADIUSBYMEMBER", "g", "m", "5", "km", "COUNT", "3", "STORE", "d"];
        assert_eq!(of(&by_member), listed(&["d"]));
        assert_eq!(of(&["LMPOP", "2", "a", "b", "LEFT"]), listed(&["a", "b"]));
        assert_eq!(of(&["BZMPOP", "0", "1", "z", "MIN"]), listed(&["z"]));
        let group = ["XREADGROUP", "GROUP", "streams", "c", "STREAMS", "s1", "s2", ">", ">"];
        assert_eq!(of(&group), listed(&["s1", "s2"]));
        let migrate = ["MIGRATE", "h", "1", "", "0", "9", "AUTH", "keys", "KEYS", "a", "b"];
        assert_eq!(of(&migrate), listed(&["a", "b"]));
        // A command the table does not know: the connection's key is added.
        assert_eq!(of(&["NOSUCHCOMMAND", "a"]), (vec![], Reach::More));
        // Writes of every key.
        assert_eq!(of(&["FLUSHALL"]), (vec![], Reach::All));
        assert_eq!(of(&["swapdb", "0", "1"]), (vec![], Reach::All));
        assert_eq!(of(&["FUNCTION", "FLUSH"]), (vec![], Reach::All));
    }
}
