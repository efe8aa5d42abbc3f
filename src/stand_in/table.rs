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
