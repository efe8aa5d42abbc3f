//! A node added warm (`resize_warmup`): what a connection to the new node
//! does, during the window after `add_node`, for the keys that moved to it.
//!
//! - A plain `GET key` that misses is read from the key's old home (the
//!   next in its ranking) and the value copied over with the TTL it has
//!   left, through a marker on the new home: `SET key <MARK+token> NX PX`
//!   first ([`marker`], refused while a writer's guard is there), then the
//!   old home's `GET`+`PTTL`, then [`COPY`], a compare-and-set that stores
//!   only if the key still holds the marker. The marker begins with the
//!   lease mark, so every fluster reader sees it as a miss (`lease.rs`).
//! - A write of a moved key has the old home *move* its copy to the new
//!   home before it is sent (`MIGRATE … REPLACE`, [`Elder::forget`]), so
//!   every write, blind or read-modify-write, starts from the old value;
//!   on a stand-in (another node takes the key while the new home is
//!   boxed) the old copy is deleted instead. A reader that reads the old
//!   home after the move finds nothing to copy (and returns what the new
//!   home holds), and one that read it before finds its marker replaced
//!   by the move or the write, so its copy is refused.
//! - Then, on the new home, the writer's keys are *claimed* ([`claim`],
//!   part of [`Elder::forget`]): in one step a reader's marker still there
//!   is deleted (the old home held nothing to move over it) and a guard
//!   is set that refuses new markers for [`MARKER_MS`]. Else a write that
//!   keeps what the key holds (`APPEND`, `SETRANGE`, `SET … KEEPTTL`)
//!   would edit the marker: its bytes in the value, its TTL on the key.
//! - A write queued in a transaction opened by hand runs at `EXEC`, which
//!   may come after the claim's guard expired: the connection keeps the
//!   keys its queued writes claimed (`connection/claims.rs`) and claims
//!   them again before `EXEC` is sent ([`Elder::reclaim`]).
//! - A write of a moved key on its *old* home (a connection taken before
//!   the switch, or a command in flight across it) deletes the new home's
//!   copy *after* its reply, before the caller sees it
//!   ([`Moved::Away`]): a copy read through before the write landed
//!   cannot outlive it.
//! - A write that names no key (`FLUSHDB`, a script that declares none, a
//!   command the table does not know) ends the read-through
//!   ([`Elder::end`]) before it is sent: what it deleted or replaced could
//!   otherwise be read back from an old home.
//!
//! Each node holds its part in the resize ([`Resizing`]), set by the
//! runtime before the table switches: every command a connection to the
//! node sends reads it (one load when no resize is on), whenever the
//! connection was taken. Who the old homes are, and how they are reached,
//! is the runtime's ([`Elder`], implemented in `runtime/warm.rs` and
//! `runtime/drain.rs`); the protocol is here. `docs/resize.md` checks
//! every interleaving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;
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
/// write since (a `SET`, a `DEL`, an `EXPIRE`, another reader's marker, a
/// writer's `MIGRATE` of the old value here) voids the copy. Without a
/// value (no `ARGV[3]`) it gives the marker back, and if the key holds
/// something else it returns that (what the reader returns: a writer may
/// have moved the old value here since the reader found the old home
/// empty).
pub(crate) const COPY: &str = "local held = redis.pcall('GET', KEYS[1]) \
    if held ~= ARGV[1] then if ARGV[3] then return 0 end return held end \
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
    /// It moved to this node: its miss reads through, its writes have the
    /// old home move it here first.
    Here,
    /// It moved to another node, which this one stands in for (boxed):
    /// its writes here forget its old copy too.
    Elsewhere,
    /// It moved away from this node, its old home: a write here (on a
    /// connection taken before the switch, or in flight across it)
    /// deletes the new home's copy once its reply is in.
    Away,
}

/// The runtime's side of a connection while keys move (a node added warm,
/// or drained): which keys moved, and their old homes.
pub(crate) trait Elder: Send + Sync {
    /// Where `key` stands, seen from this connection's node.
    fn moved(&self, key: &[u8]) -> Moved;
    /// `GET key` and `PTTL key` on the key's old home, checked now: `None`
    /// if it is boxed, gone, or one of this window's writes could not
    /// move or delete its copy there (then it is never read again in the
    /// window).
    fn read(&self, key: &[u8]) -> Option<BoxFuture<'static, RedisResult<(Value, i64)>>>;
    /// Takes the other copy of each of `keys` (moved ones) out of the way:
    /// for a key moved here, its old home moves it here (`MIGRATE`; a
    /// runtime that cannot deletes it); moved elsewhere, its old home's
    /// copy is deleted; an old home that is boxed or fails is marked so
    /// that no reader of this resize reads it again; for a key moved
    /// [`Away`](Moved::Away), its new home's copy is deleted. Then the
    /// keys moved here are claimed here ([`claim`]). An
    /// error means the write must not be sent (a drain's copying could
    /// land over it: `runtime/drained.rs`); the caller gets it instead.
    fn forget(&self, keys: Vec<Vec<u8>>) -> BoxFuture<'static, RedisResult<()>>;
    /// Claims `keys`, moved here and claimed by a [`forget`](Self::forget)
    /// already, again ([`claim`]): a write queued in a transaction opened
    /// by hand runs at its `EXEC`, maybe after that claim's guard expired
    /// (`connection/claims.rs`). Harmless once the resize is over: a marker deleted
    /// (its reader's copy refused), new ones refused for [`MARKER_MS`].
    fn reclaim(&self, keys: Vec<Vec<u8>>) -> BoxFuture<'static, RedisResult<()>>;
    /// A write that names no key is about to be sent here: no old home is
    /// read again (nor copied from) in this resize.
    fn end(&self);
    /// Whether this resize is over for this node (its window passed, the
    /// drain ended, its table replaced): the node's slot lets it go.
    fn over(&self) -> bool;
}

/// A node's part in a resize: set by the runtime on every node before the
/// table switches, read by every command a connection to the node sends,
/// whenever it was taken. One load when no resize is on.
#[derive(Default)]
pub(crate) struct Resizing {
    on: AtomicBool,
    elder: ArcSwapOption<Arc<dyn Elder>>,
}

impl Resizing {
    /// The resize this node is part of now, if any.
    #[inline]
    pub(crate) fn elder(&self) -> Option<Arc<dyn Elder>> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        self.current()
    }

    #[cold]
    fn current(&self) -> Option<Arc<dyn Elder>> {
        let held = self.elder.load_full()?;
        if !held.over() {
            return Some(Arc::clone(&held));
        }
        // This resize only: one started meanwhile stays, and so does `on`.
        let was = self.elder.compare_and_swap(&Some(held.clone()), None);
        if was.as_ref().is_some_and(|was| Arc::ptr_eq(was, &held)) {
            self.on.store(false, Ordering::SeqCst);
            if self.elder.load().is_some() {
                self.on.store(true, Ordering::SeqCst);
            }
        }
        None
    }

    /// From now on, every command on this node's connections asks `elder`.
    pub(crate) fn start(&self, elder: Arc<dyn Elder>) {
        self.elder.store(Some(Arc::new(elder)));
        self.on.store(true, Ordering::SeqCst);
    }

    /// No resize for this node.
    pub(crate) fn stop(&self) {
        self.on.store(false, Ordering::SeqCst);
        self.elder.store(None);
    }
}

/// When a command is looked at: before it is sent, or once its reply is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before it is sent: a moved key's `GET` reads through, a write of
    /// keys moved here (or elsewhere) forgets their old copies first.
    Before,
    /// Its reply is in: a write of keys moved away forgets their new
    /// homes' copies.
    After,
}

/// What a command sent to a node in a resize asks of it.
pub(crate) enum Plan<'w> {
    /// A plain `GET` of a moved key: read through on a miss.
    Get(&'w [u8]),
    /// A write of these moved keys: their other copies go (first, or
    /// after the reply: see [`Phase`]).
    Write(Vec<Vec<u8>>),
    /// A write that names no key: the read-through ends.
    Unnamed,
    /// Nothing.
    Plain,
}

/// What `words` (a command, name first) asks of `elder` at `phase`, the
/// keys it writes read from its node's command table, `commands`.
pub(crate) fn plan<'w>(
    words: &[&'w [u8]],
    elder: &dyn Elder,
    commands: &Known,
    phase: Phase,
) -> Plan<'w> {
    if let [name, key] = words
        && name.eq_ignore_ascii_case(b"GET")
    {
        let here = phase == Phase::Before && elder.moved(key) == Moved::Here;
        return if here { Plan::Get(key) } else { Plan::Plain };
    }
    let (keys, reach) = commands.written(words);
    if reach == Reach::All || (reach == Reach::More && keys.is_empty()) {
        return Plan::Unnamed;
    }
    let now = |moved| match phase {
        Phase::Before => matches!(moved, Moved::Here | Moved::Elsewhere),
        Phase::After => moved == Moved::Away,
    };
    let moved = keys.into_iter().filter(|key| now(elder.moved(key)));
    let moved: Vec<Vec<u8>> = moved.map(<[u8]>::to_vec).collect();
    if moved.is_empty() { Plan::Plain } else { Plan::Write(moved) }
}

/// Sets a reader's marker (`KEYS[1]` to `ARGV[1]`, `NX`, for `ARGV[2]`
/// ms) unless a writer's guard (`KEYS[2]`) is there: nil when refused.
/// Refused too when the server refuses the `SET` (out of memory): the
/// reader then copies nothing.
pub(crate) const MARK_UNGUARDED: &str = "if redis.call('EXISTS', KEYS[2]) == 1 then \
    return false end local set = redis.pcall('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) \
    if type(set) == 'table' and set.err then return false end return set";

/// A writer's claim on the new home of each key `KEYS[i]` (odd `i`, its
/// guard `KEYS[i+1]`): a reader's marker there (a string that begins with
/// `ARGV[1]`) is deleted and the guard set for `ARGV[2]` ms, in one step,
/// so no marker is under the write that follows. A guard the server
/// refuses (out of memory) is left out: no reader can mark then either.
pub(crate) const CLAIM: &str = "for i = 1, #KEYS, 2 do \
    local held = redis.pcall('GET', KEYS[i]) \
    if type(held) == 'string' and string.sub(held, 1, #ARGV[1]) == ARGV[1] then \
    redis.call('DEL', KEYS[i]) end \
    redis.pcall('SET', KEYS[i + 1], '1', 'PX', ARGV[2]) end return 0";

/// What a reader's marker begins with: the lease mark and `warm:`.
fn marker_prefix() -> Vec<u8> {
    [MARK, b"warm:"].concat()
}

/// The writers' guard of `key` on its new home: in the lease mark's
/// reserved names, so no fluster reader sees it.
fn guard(key: &[u8]) -> Vec<u8> {
    [MARK, b"warm-guard:", key].concat()
}

/// A reader's marker: the lease mark, `warm:` and a random token.
pub(crate) fn token() -> Vec<u8> {
    let mut token = marker_prefix();
    token.extend_from_slice(format!("{:016x}", crate::random::random()).as_bytes());
    token
}

/// `SET key token NX PX MARKER_MS`, unless a writer's guard is there
/// ([`MARK_UNGUARDED`]).
pub(crate) fn marker(key: &[u8], token: &[u8]) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(MARK_UNGUARDED).arg(2).arg(key).arg(guard(key)).arg(token).arg(MARKER_MS);
    cmd
}

/// [`CLAIM`] of `keys` on their new home, before a write of them: sent
/// by the runtime on the node's shared connection, never on the writer's
/// own (which may be inside a `MULTI` it opened by hand).
pub(crate) fn claim<'k>(keys: impl Iterator<Item = &'k [u8]>) -> redis::Pipeline {
    let keys: Vec<&[u8]> = keys.collect();
    let mut pipe = redis::pipe();
    let cmd = pipe.cmd("EVAL").arg(CLAIM).arg(2 * keys.len());
    for key in keys {
        cmd.arg(key).arg(guard(key));
    }
    cmd.arg(marker_prefix()).arg(MARKER_MS);
    pipe
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

/// A unit test's [`Elder`]: where each key stands is its function's say;
/// it reads, moves and claims nothing.
#[cfg(test)]
pub(crate) struct Stub(pub(crate) fn(&[u8]) -> Moved);

#[cfg(test)]
impl Elder for Stub {
    fn moved(&self, key: &[u8]) -> Moved {
        (self.0)(key)
    }
    fn read(&self, _: &[u8]) -> Option<BoxFuture<'static, RedisResult<(Value, i64)>>> {
        None
    }
    fn forget(&self, _: Vec<Vec<u8>>) -> BoxFuture<'static, RedisResult<()>> {
        Box::pin(async { Ok(()) })
    }
    fn reclaim(&self, _: Vec<Vec<u8>>) -> BoxFuture<'static, RedisResult<()>> {
        Box::pin(async { Ok(()) })
    }
    fn end(&self) {}
    fn over(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key moved here.
    const ALL: Stub = Stub(|_| Moved::Here);
    /// Every key moved away from this node.
    const GONE: Stub = Stub(|_| Moved::Away);

    #[test]
    fn a_plain_get_is_read_through_and_writes_forget_their_keys() {
        assert!(matches!(
            plan(&[b"get", b"k"], &ALL, &Known::default(), Phase::Before),
            Plan::Get(b"k")
        ));
        assert!(matches!(
            plan(&[b"GET", b"k", b"x"], &ALL, &Known::default(), Phase::Before),
            Plan::Plain
        ));
        assert!(matches!(
            plan(&[b"MGET", b"a", b"b"], &ALL, &Known::default(), Phase::Before),
            Plan::Plain
        ));
        match plan(&[b"MSET", b"a", b"1", b"b", b"2"], &ALL, &Known::default(), Phase::Before) {
            Plan::Write(keys) => assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]),
            _ => panic!("MSET writes a and b"),
        }
        assert!(matches!(
            plan(&[b"DEL", b"a"], &ALL, &Known::default(), Phase::Before),
            Plan::Write(_)
        ));
    }

    #[test]
    fn a_write_that_names_no_key_ends_the_read_through() {
        let known = Known::default();
        assert!(matches!(plan(&[b"FLUSHDB"], &ALL, &known, Phase::Before), Plan::Unnamed));
        assert!(matches!(
            plan(&[b"flushall", b"ASYNC"], &ALL, &known, Phase::Before),
            Plan::Unnamed
        ));
        assert!(matches!(
            plan(&[b"EVAL", b"return 1", b"0"], &ALL, &known, Phase::Before),
            Plan::Unnamed
        ));
        assert!(matches!(
            plan(&[b"NOSUCHCOMMAND", b"k"], &ALL, &known, Phase::Before),
            Plan::Unnamed
        ));
        assert!(matches!(
            plan(&[b"EVAL", b"return 1", b"1", b"k"], &ALL, &known, Phase::Before),
            Plan::Write(_)
        ));
        assert!(matches!(plan(&[b"PING"], &ALL, &known, Phase::Before), Plan::Plain));
        assert!(matches!(plan(&[b"MGET", b"a"], &ALL, &known, Phase::Before), Plan::Plain));
    }

    #[test]
    fn a_write_of_a_key_moved_away_forgets_the_new_copy_after_its_reply() {
        let known = Known::default();
        let (before, after) = (Phase::Before, Phase::After);
        assert!(matches!(plan(&[b"SET", b"k", b"v"], &GONE, &known, before), Plan::Plain));
        match plan(&[b"SET", b"k", b"v"], &GONE, &known, after) {
            Plan::Write(keys) => assert_eq!(keys, vec![b"k".to_vec()]),
            _ => panic!("SET writes k"),
        }
        assert!(matches!(plan(&[b"GET", b"k"], &GONE, &known, before), Plan::Plain));
        assert!(matches!(plan(&[b"GET", b"k"], &ALL, &known, after), Plan::Plain));
        assert!(matches!(plan(&[b"SET", b"k", b"v"], &ALL, &known, after), Plan::Plain));
        assert!(matches!(plan(&[b"FLUSHDB"], &GONE, &known, after), Plan::Unnamed));
    }
}
