//! Redis's command table (`commands.txt`): which keys a command writes,
//! and how far its writes reach beyond them. Pure; the stand-in caps, the
//! journal and the near cache's fences all ask it.

use std::collections::HashMap;
use std::sync::OnceLock;

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
/// none may write any. A command whose keys move is read as Redis's own
/// key specs read it (`SORT ... STORE destination`, `GEORADIUS ... STORE`,
/// the pops of `LMPOP numkeys key...`, `XREADGROUP ... STREAMS key...`).
pub(crate) fn written<'a>(words: &[&'a [u8]]) -> (Vec<&'a [u8]>, Reach) {
    let (table, mut buffer) = (table(), [0u8; 48]);
    let spec = match lower(&mut buffer, words, false).and_then(|name| table.get(name)) {
        Some(spec) => spec,
        None => match lower(&mut buffer, words, true).and_then(|name| table.get(name)) {
            Some(spec) => spec,
            None => return (Vec::new(), Reach::More),
        },
    };
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
        Some(words.get(at + 1..at + 1 + n)?.to_vec()).filter(|keys| !keys.is_empty())
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
