//! A node added warm (`resize_warmup`): what a connection to the new node
//! does, during the window after `add_node`, for the keys that moved to it.
//!
//! - A plain `GET key` that misses is read from the key's old home (the
//!   next in its ranking) and the value copied over with the TTL it has
//!   left, through a marker on the new home: `SET key <MARK+token> NX PX`
//!   first ([`marker`]), then the old home's `GET`+`PTTL`, then [`COPY`],
//!   a compare-and-set that stores only if the key still holds the marker.
//!   The marker begins with the lease mark, so every fluster reader sees
//!   it as a miss (`lease.rs`).
//! - A write of a moved key deletes the old home's copy *before* it is
//!   sent ([`Elder::forget`]), on the new home and on any other node that
//!   takes it (a stand-in): a reader that reads the old home after the
//!   write can find nothing to copy, and one that read it before finds its
//!   marker overwritten (or deleted) by the write, so its copy is refused.
//! - A write that names no key (`FLUSHDB`, a script that declares none, a
//!   command the table does not know) ends the read-through
//!   ([`Elder::end`]) before it is sent: what it deleted or replaced could
//!   otherwise be read back from an old home.
//!
//! Who the old homes are, and how they are reached, is the runtime's
//! ([`Elder`], implemented in `runtime/warm.rs`); the protocol is here.
//! `docs/resize.md` checks every interleaving.

use futures_util::future::BoxFuture;
use redis::{Cmd, RedisResult, Value};

use crate::command::table::{Known, Reach};
use crate::node::lease::MARK;

/// How long a reader's marker lives: a copy not made within it is given
/// up (a reader dropped after its marker leaves it to expire, read as a
/// miss meanwhile).
pub(crate) const MARKER_MS: u64 = 2_000;

/// Stores the old home's value (`ARGV[3]`, with `ARGV[4]` ms left, or no
/// expiry if `ARGV[4]` is `-1`) only if the key still holds the reader's
/// marker `ARGV[1]` with no longer life than a marker's (`ARGV[2]` ms): a
/// write since (a `SET`, a `DEL`, an `EXPIRE`, another reader's marker)
/// voids the copy. Without a value (no `ARGV[3]`) it gives the marker
/// back.
pub(crate) const COPY: &str = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end \
    local left = redis.call('PTTL', KEYS[1]) \
    if left < 0 or left > tonumber(ARGV[2]) then return 0 end \
    if not ARGV[3] then redis.call('DEL', KEYS[1]) return 0 end \
    if ARGV[4] == '-1' then redis.call('SET', KEYS[1], ARGV[3]) \
    else redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) end return 1";

/// Where a key stands in a resize, seen from a connection's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Moved {
    /// It did not move (or the window is over).
    No,
    /// It moved to this node: its miss reads through, its writes forget.
    Here,
    /// It moved to another node, which this one stands in for (boxed):
    /// its writes here forget its old copy too.
    Elsewhere,
}

/// The runtime's side of a connection while keys move (a node added warm,
/// or drained): which keys moved, and their old homes.
pub(crate) trait Elder: Send + Sync {
    /// Where `key` stands, seen from this connection's node.
    fn moved(&self, key: &[u8]) -> Moved;
    /// `GET key` and `PTTL key` on the key's old home, checked now: `None`
    /// if it is boxed, gone, or one of this window's writes could not
    /// delete its copy there (then it is never read again in the window).
    fn read(&self, key: &[u8]) -> Option<BoxFuture<'static, RedisResult<(Value, i64)>>>;
    /// Deletes `keys` (moved ones) on their old homes; an old home that is
    /// boxed or fails is marked so that no reader of this window reads it
    /// again. Never fails: the write goes on.
    fn forget(&self, keys: Vec<Vec<u8>>) -> BoxFuture<'static, ()>;
    /// A write that names no key is about to be sent here: no old home is
    /// read again (nor copied from) in this resize.
    fn end(&self);
}

/// What a command sent to a warm node asks of the window.
pub(crate) enum Plan<'w> {
    /// A plain `GET` of a moved key: read through on a miss.
    Get(&'w [u8]),
    /// A write of these moved keys: their old copies go first.
    Write(Vec<Vec<u8>>),
    /// A write that names no key: the read-through ends first.
    Unnamed,
    /// Nothing.
    Plain,
}

/// What `words` (a command, name first) asks of `elder`, the keys it
/// writes read from its node's command table, `commands`.
pub(crate) fn plan<'w>(words: &[&'w [u8]], elder: &dyn Elder, commands: &Known) -> Plan<'w> {
    if let [name, key] = words
        && name.eq_ignore_ascii_case(b"GET")
    {
        return if elder.moved(key) == Moved::Here { Plan::Get(key) } else { Plan::Plain };
    }
    let (keys, reach) = commands.written(words);
    if reach == Reach::All || (reach == Reach::More && keys.is_empty()) {
        return Plan::Unnamed;
    }
    let moved = keys.into_iter().filter(|key| elder.moved(key) != Moved::No);
    let moved: Vec<Vec<u8>> = moved.map(<[u8]>::to_vec).collect();
    if moved.is_empty() { Plan::Plain } else { Plan::Write(moved) }
}

/// A reader's marker: the lease mark, `warm:` and a random token.
pub(crate) fn token() -> Vec<u8> {
    let mut token = MARK.to_vec();
    token.extend_from_slice(format!("warm:{:016x}", crate::random::random()).as_bytes());
    token
}

/// `SET key token NX PX MARKER_MS`.
pub(crate) fn marker(key: &[u8], token: &[u8]) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(token).arg("NX").arg("PX").arg(MARKER_MS);
    cmd
}

/// [`COPY`] of `value` (a string, with `ttl` ms left or `-1`), or
/// (`None`) the marker given back.
pub(crate) fn copy(key: &[u8], token: &[u8], value: Option<(&[u8], i64)>) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(COPY).arg(1).arg(key).arg(token).arg(MARKER_MS);
    if let Some((bytes, ttl)) = value {
        cmd.arg(bytes).arg(ttl);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    struct All;
    impl Elder for All {
        fn moved(&self, _: &[u8]) -> Moved {
            Moved::Here
        }
        fn read(&self, _: &[u8]) -> Option<BoxFuture<'static, RedisResult<(Value, i64)>>> {
            None
        }
        fn forget(&self, _: Vec<Vec<u8>>) -> BoxFuture<'static, ()> {
            Box::pin(async {})
        }
        fn end(&self) {}
    }

    #[test]
    fn a_plain_get_is_read_through_and_writes_forget_their_keys() {
        assert!(matches!(plan(&[b"get", b"k"], &All, &Known::default()), Plan::Get(b"k")));
        assert!(matches!(plan(&[b"GET", b"k", b"x"], &All, &Known::default()), Plan::Plain));
        assert!(matches!(plan(&[b"MGET", b"a", b"b"], &All, &Known::default()), Plan::Plain));
        match plan(&[b"MSET", b"a", b"1", b"b", b"2"], &All, &Known::default()) {
            Plan::Write(keys) => assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]),
            _ => panic!("MSET writes a and b"),
        }
        assert!(matches!(plan(&[b"DEL", b"a"], &All, &Known::default()), Plan::Write(_)));
    }

    #[test]
    fn a_write_that_names_no_key_ends_the_read_through() {
        let known = Known::default();
        assert!(matches!(plan(&[b"FLUSHDB"], &All, &known), Plan::Unnamed));
        assert!(matches!(plan(&[b"flushall", b"ASYNC"], &All, &known), Plan::Unnamed));
        assert!(matches!(plan(&[b"EVAL", b"return 1", b"0"], &All, &known), Plan::Unnamed));
        assert!(matches!(plan(&[b"NOSUCHCOMMAND", b"k"], &All, &known), Plan::Unnamed));
        assert!(matches!(plan(&[b"EVAL", b"return 1", b"1", b"k"], &All, &known), Plan::Write(_)));
        assert!(matches!(plan(&[b"PING"], &All, &known), Plan::Plain));
        assert!(matches!(plan(&[b"MGET", b"a"], &All, &known), Plan::Plain));
    }
}
