//! A server's commands as its `COMMAND` reply describes them: the flags
//! (`write`, `blocking`) and the key specs, whose flags (`RW`, `OW`, `RM`,
//! `insert`, `update`, `delete`) say which keys a command writes and whose
//! `begin_search` and `find_keys` say where they are in its words. Read
//! here for the commands the vendored table lacks (`table.rs`). Pure: the
//! reply comes in.

use redis::Value;

use super::table::Reach;

/// One command of a server's table.
#[derive(Debug, Default)]
pub(crate) struct Served {
    /// Flagged `write`.
    write: bool,
    /// Flagged `blocking`.
    pub(crate) blocking: bool,
    /// Its key specs that write.
    writes: Vec<KeySpec>,
    /// Its key specs that only read.
    reads: Vec<KeySpec>,
}

/// Where one key spec's keys are.
#[derive(Debug)]
struct KeySpec {
    begin: Begin,
    find: Find,
    /// Flagged `incomplete`: the command may have keys it does not find.
    incomplete: bool,
}

/// Where a spec's keys begin (`begin_search`).
#[derive(Debug)]
enum Begin {
    /// At this word.
    Index(usize),
    /// After this word, searched for from `from` (from the end if negative).
    Keyword(Box<[u8]>, isize),
    /// A way this reading does not know.
    Unknown,
}

/// How a spec's keys follow their beginning (`find_keys`).
#[derive(Debug)]
enum Find {
    /// Every `step` words up to `last` (from the end if negative; with a
    /// `limit`, a share of what is left).
    Range { last: isize, step: usize, limit: usize },
    /// A count of keys at `count` (from the beginning), the keys from
    /// `first`, every `step` words.
    Keynum { count: usize, first: usize, step: usize },
    /// A way this reading does not know.
    Unknown,
}

impl Served {
    /// The keys `words` (a command, name first) writes, and how far its
    /// writes reach beyond them, as its key specs say. A write whose specs
    /// say none writes, writes the keys its specs find; a write without
    /// key specs, every key.
    pub(crate) fn written<'a>(&self, words: &[&'a [u8]]) -> (Vec<&'a [u8]>, Reach) {
        let specs = match (&self.writes[..], self.write) {
            ([], false) => return (Vec::new(), Reach::Listed),
            ([], true) if self.reads.is_empty() => return (Vec::new(), Reach::All),
            ([], true) => &self.reads[..],
            (writes, _) => writes,
        };
        let (mut keys, mut reach) = (Vec::new(), Reach::Listed);
        for spec in specs {
            if spec.incomplete || !spec.keys(words, &mut keys) {
                reach = Reach::More;
            }
        }
        (keys, reach)
    }
}

impl KeySpec {
    /// Adds the keys it finds in `words` to `keys`, as the server finds
    /// them; false if this reading cannot tell where they are.
    fn keys<'a>(&self, words: &[&'a [u8]], keys: &mut Vec<&'a [u8]>) -> bool {
        let len = words.len() as isize;
        let start = match &self.begin {
            Begin::Index(at) => *at as isize,
            Begin::Keyword(keyword, from) => {
                let is = |i: &isize| words[*i as usize].eq_ignore_ascii_case(keyword);
                let found = if *from > 0 {
                    (*from..len).find(is)
                } else {
                    (1..=(len + from).min(len - 1)).rev().find(is)
                };
                // Not there: the spec has no keys in these words.
                let Some(at) = found else { return true };
                at + 1
            }
            Begin::Unknown => return false,
        };
        let (first, last, step) = match self.find {
            Find::Range { last, step, limit } => {
                let last = match (last, limit) {
                    (0.., _) => start + last,
                    (_, 0) => len + last,
                    _ => start + ((len - start) / limit as isize + last),
                };
                (start, last, step)
            }
            Find::Keynum { count, first, step } => {
                let count = words.get((start as usize).saturating_add(count));
                let count = count.and_then(|c| std::str::from_utf8(c).ok()?.parse::<isize>().ok());
                // Cut short or not a number: the server refuses it.
                let Some(count) = count else { return true };
                let first = start + first as isize;
                (first, first + (count - 1) * step as isize, step)
            }
            Find::Unknown => return false,
        };
        let last = last.min(len - 1);
        if first >= 1 {
            keys.extend((first..=last).step_by(step.max(1)).map(|i| words[i as usize]));
        }
        true
    }
}

/// The server's commands in its `COMMAND` reply, by lower-case name
/// (`container|sub` for subcommands).
pub(crate) fn served(reply: &Value) -> Vec<(String, Served)> {
    let mut out = Vec::new();
    items(reply).iter().for_each(|entry| command(entry, &mut out));
    out
}

/// One entry of the reply, and its subcommands.
fn command(entry: &Value, out: &mut Vec<(String, Served)>) {
    let fields = items(entry);
    if let Some(subs) = fields.get(9) {
        items(subs).iter().for_each(|sub| command(sub, out));
    }
    let Some(name) = fields.first().and_then(text) else { return };
    let flags: Vec<String> =
        fields.get(2).map(items).unwrap_or_default().iter().filter_map(text).collect();
    let has = |flag: &str| flags.iter().any(|f| f.eq_ignore_ascii_case(flag));
    let mut served = Served { write: has("write"), blocking: has("blocking"), ..Served::default() };
    for spec in fields.get(8).map(items).unwrap_or_default() {
        let (spec, writes) = key_spec(spec);
        if writes { served.writes.push(spec) } else { served.reads.push(spec) }
    }
    out.push((name.to_ascii_lowercase(), served));
}

/// One key spec, and whether it writes.
fn key_spec(spec: &Value) -> (KeySpec, bool) {
    let fields = pairs(spec);
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let flags: Vec<String> =
        field("flags").map(items).unwrap_or_default().iter().filter_map(text).collect();
    let has = |flag: &str| flags.iter().any(|f| f.eq_ignore_ascii_case(flag));
    let writes = ["RW", "OW", "RM", "insert", "update", "delete"].iter().any(|f| has(f));
    let number = |spec: &[(String, &Value)], name: &str| {
        spec.iter().find(|(n, _)| n == name).and_then(|(_, v)| text(v)?.parse::<isize>().ok())
    };
    let begin = match typed(field("begin_search")) {
        Some((kind, spec)) if kind == "index" => match number(&spec, "index") {
            Some(at @ 0..) => Begin::Index(at as usize),
            _ => Begin::Unknown,
        },
        Some((kind, spec)) if kind == "keyword" => {
            let keyword = spec.iter().find(|(n, _)| n == "keyword").and_then(|(_, v)| text(v));
            match (keyword, number(&spec, "startfrom")) {
                (Some(keyword), Some(from)) => Begin::Keyword(keyword.into_bytes().into(), from),
                _ => Begin::Unknown,
            }
        }
        _ => Begin::Unknown,
    };
    let find = match typed(field("find_keys")) {
        Some((kind, spec)) if kind == "range" => {
            let (last, step, limit) =
                (number(&spec, "lastkey"), number(&spec, "keystep"), number(&spec, "limit"));
            match (last, step, limit) {
                (Some(last), Some(step @ 1..), Some(limit @ 0..)) => {
                    Find::Range { last, step: step as usize, limit: limit as usize }
                }
                _ => Find::Unknown,
            }
        }
        Some((kind, spec)) if kind == "keynum" => {
            let numbers =
                (number(&spec, "keynumidx"), number(&spec, "firstkey"), number(&spec, "keystep"));
            match numbers {
                (Some(count @ 0..), Some(first @ 0..), Some(step @ 1..)) => Find::Keynum {
                    count: count as usize,
                    first: first as usize,
                    step: step as usize,
                },
                _ => Find::Unknown,
            }
        }
        _ => Find::Unknown,
    };
    (KeySpec { begin, find, incomplete: has("incomplete") }, writes)
}

/// A `begin_search` or `find_keys`: its type, and its spec's fields.
fn typed(value: Option<&Value>) -> Option<(String, Vec<(String, &Value)>)> {
    let fields = pairs(value?);
    let kind = fields.iter().find(|(n, _)| n == "type").and_then(|(_, v)| text(v))?;
    let spec = fields.iter().find(|(n, _)| n == "spec").map(|(_, v)| pairs(v))?;
    Some((kind, spec))
}

/// The items of an array (or set) reply; none for another.
fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

/// The fields of a map, as RESP3 sends it or RESP2 flattens it.
fn pairs(value: &Value) -> Vec<(String, &Value)> {
    match value {
        Value::Map(pairs) => pairs.iter().filter_map(|(k, v)| Some((text(k)?, v))).collect(),
        value => items(value).chunks(2).filter_map(|p| Some((text(&p[0])?, p.get(1)?))).collect(),
    }
}

/// A word of the reply.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}
