//! A node added warm (`resize_warmup`): the window after `add_node`, and
//! the old homes of the keys that moved ([`OldHomes`], the runtime's side
//! of [`Elder`]; the protocol is `node/warm.rs`'s).
//!
//! The old home of a key that moved to the new node is the next node in
//! its ranking: rendezvous hashing keeps the order of the other nodes when
//! one is added, so the best node but the new one is where the key lived
//! before. No table of moved keys is kept.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures_util::future::{BoxFuture, join_all};
use redis::{RedisResult, Value};

use crate::node::Store;
use crate::node::tracked::NodeManager;
use crate::node::warm::{Elder, Moved};
use crate::route::{self, NodeName};
use crate::runtime::copies::{Doubts, Forgotten, claimed, forgets, forgotten, get_pttl, send};
use crate::runtime::migrate::{self, Address, Endpoint};
use crate::runtime::table::Table;

/// The open window of the last node added warm.
pub(crate) struct Resize {
    /// The node added.
    new: NodeName,
    until: Instant,
    /// Old homes a write of this window could not move or delete a copy
    /// on (boxed, or the `MIGRATE` or `DEL` failed): never read (nor moved
    /// from) again in it, so their copies cannot come back.
    ruled_out: Mutex<Vec<NodeName>>,
    /// Keys whose move from their old home is in doubt: their writes are
    /// refused, in the window and after it, until it has answered.
    in_doubt: Arc<Doubts>,
    /// A write that named no key (`FLUSHDB`, a script that declares none)
    /// was sent in this window: no old home is read again in it.
    ended: AtomicBool,
    /// The node added was removed: the window is over.
    closed: AtomicBool,
    /// Where the node added listens, for its old homes' `MIGRATE`s (a
    /// write of a moved key on it has the old home move the key there
    /// first): none for a node added with its own manager, or at a socket
    /// path (its writes delete the old copy instead).
    at: Option<Address>,
    /// The bound of a `MIGRATE`'s server-to-server step, in ms.
    migrate_ms: u64,
}

impl Resize {
    fn ruled_out(&self, name: &NodeName) -> bool {
        self.ended.load(Ordering::Acquire)
            || self.ruled_out.lock().unwrap_or_else(|e| e.into_inner()).contains(name)
    }

    fn end(&self) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            tracing::warn!(node = %self.new, "a write that names no key was sent in the resize \
                window: moved keys are no longer read through from their old homes");
        }
    }

    fn rule_out(&self, name: NodeName) {
        let mut out = self.ruled_out.lock().unwrap_or_else(|e| e.into_inner());
        if !out.contains(&name) {
            tracing::warn!(node = %name, "a moved key's old copy could not be moved or \
                deleted: its old home is not read again in this resize window");
            out.push(name);
        }
    }
}

/// The window after the last `add_node` of a pool with `resize_warmup`:
/// none, or one (a later `add_node` opens its own in its place).
#[derive(Default)]
pub(crate) struct Window {
    /// Whether one may be open: the common path's one load.
    on: AtomicBool,
    current: ArcSwapOption<Resize>,
}

impl Window {
    /// Opens the window of `new`, reached at `at`, for `length` (nothing
    /// if zero).
    pub(crate) fn open(
        &self,
        new: NodeName,
        length: Duration,
        at: Option<Endpoint>,
        migrate_ms: u64,
    ) {
        if length.is_zero() {
            return;
        }
        let at = at.and_then(|at| {
            Address::parse(at)
                .inspect_err(|reason| {
                    tracing::warn!(node = %new, reason, "its old homes cannot MIGRATE to it: \
                        a write of a moved key in its window deletes the old copy instead");
                })
                .ok()
        });
        let until = Instant::now() + length;
        self.current.store(Some(Arc::new(Resize {
            new,
            until,
            ruled_out: Mutex::default(),
            in_doubt: Arc::default(),
            ended: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            at,
            migrate_ms,
        })));
        self.on.store(true, Ordering::Release);
        tracing::info!(node = %new, ?length, "resize window open: moved keys read through");
    }

    /// Closes the window if it is `name`'s (the node was removed).
    pub(crate) fn close(&self, name: &str) {
        if let Some(resize) = self.current.load().as_ref().filter(|r| *r.new == *name) {
            resize.closed.store(true, Ordering::Release);
            self.current.store(None);
        }
    }

    /// Whether a window is open now.
    pub(crate) fn is_open(&self) -> bool {
        self.current.load().as_ref().is_some_and(|r| Instant::now() < r.until)
    }

    /// The open window.
    fn of(&self) -> Option<Arc<Resize>> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        let current = self.current.load_full()?;
        if Instant::now() >= current.until {
            // This window only: one opened meanwhile by another `add_node`
            // stays, and so does its `on`.
            let was = self.current.compare_and_swap(&Some(current.clone()), None);
            if was.as_ref().is_some_and(|was| Arc::ptr_eq(was, &current)) {
                self.on.store(false, Ordering::Release);
                if self.current.load().is_some() {
                    self.on.store(true, Ordering::Release);
                }
            }
            return None;
        }
        Some(current)
    }
}

/// The old homes of the keys that moved to `table.nodes[new]`, in its
/// window, seen from a connection to `table.nodes[here]` (the new node
/// itself, a node that stands in for it, or an old home). Held by each
/// node's slot: the table only weakly (it holds the nodes).
pub(crate) struct OldHomes<M: NodeManager, S> {
    table: Weak<Table<M, S>>,
    new: usize,
    here: usize,
    resize: Arc<Resize>,
    checkout_timeout: Duration,
}

/// What each command on `table.nodes[here]`'s connections asks while a
/// window is open (`table` about to be installed): the new node's
/// connections read moved keys through, every node's writes of moved keys
/// forget their old copies, and an old home's writes forget the new copy.
pub(crate) fn elder<M: NodeManager, S: Store<M>>(
    window: &Window,
    table: &Arc<Table<M, S>>,
    here: usize,
    checkout_timeout: Duration,
) -> Option<Arc<dyn Elder>> {
    let resize = window.of()?;
    let new = table.position(&resize.new).filter(|&new| new < table.router.len())?;
    let table = Arc::downgrade(table);
    Some(Arc::new(OldHomes { table, new, here, resize, checkout_timeout }))
}

impl<M: NodeManager, S: Store<M>> OldHomes<M, S> {
    /// The key's old home: the best node in its ranking but the new one.
    fn old_home(&self, table: &Table<M, S>, hash: u64) -> Option<usize> {
        table.router.pick_hashed(hash, |i| i != self.new)
    }

    /// The old home's node, if a read may ask it now.
    fn readable(&self, table: &Table<M, S>, old: usize) -> bool {
        let node = &table.nodes[old];
        node.is_up() && !self.resize.ruled_out(node.name())
    }
}

/// A window's write refused: its keys' old copies on `old` could not be
/// moved to `new` first, or an earlier move of them is not known to have
/// ended.
fn not_moved(old: NodeName, new: NodeName) -> redis::RedisError {
    migrate::refused(
        "write refused in a resize window",
        format!(
            "the copy on `{old}`, the key's old home, could not be moved to `{new}` first, or an \
             earlier move of it is not known to have ended; the write was not sent (that move \
             could still land over it)"
        ),
    )
}

impl<M: NodeManager, S: Store<M>> Elder for OldHomes<M, S> {
    fn moved(&self, key: &[u8]) -> Moved {
        let Some(table) = self.table.upgrade() else { return Moved::No };
        let hash = route::key_hash(key);
        let home = table.router.home_hashed(hash);
        // Past the window, a key whose move is in doubt still moved: its
        // writes wait for its old home.
        let on = Instant::now() < self.resize.until || self.resize.in_doubt.holds(key);
        match on && home == Some(self.new) {
            false => Moved::No,
            true if self.here == self.new => Moved::Here,
            true if self.old_home(&table, hash) == Some(self.here) => Moved::Away,
            true => Moved::Elsewhere,
        }
    }

    fn read(&self, key: &[u8]) -> Option<BoxFuture<'static, RedisResult<(Value, i64)>>> {
        let table = self.table.upgrade()?;
        let old = self.old_home(&table, route::key_hash(key));
        let old = old.filter(|&old| self.readable(&table, old))?;
        Some(get_pttl(Arc::clone(&table.nodes[old]), self.checkout_timeout, key))
    }

    /// On the new node, each key's old home *moves* it here first
    /// (`MIGRATE … REPLACE`): the write starts from the old value, blind
    /// or not, and a reader's marker here is replaced (its copy refused).
    /// A move that failed refuses the write (its `RESTORE` may land late).
    /// On a stand-in, and from an old home ruled out (its value may be
    /// older than a write made since: moving it could bring that back),
    /// the old copy is deleted. On an old home, the new node's copy is
    /// deleted (after the reply).
    fn forget(&self, keys: Vec<Vec<u8>>) -> BoxFuture<'static, RedisResult<()>> {
        let Some(table) = self.table.upgrade() else { return Box::pin(async { Ok(()) }) };
        let to = self.resize.at.as_ref().filter(|_| self.here == self.new);
        let new = self.resize.new;
        let mut doubted = None;
        let others: Vec<(usize, &[u8], bool)> = keys
            .iter()
            .filter_map(|key| {
                // A key moved away from here: its new home's copy. Else its
                // old home's.
                let old = self.old_home(&table, route::key_hash(key))?;
                let other = if old == self.here { self.new } else { old };
                if table.nodes[other].is_up() {
                    let moves = other != self.new && self.readable(&table, other);
                    return Some((other, key.as_slice(), moves));
                }
                // A boxed new home's copy stays, as any node's that returns
                // after its keys were written elsewhere; a boxed old home is
                // not read again, and a key whose move from it is in doubt
                // waits for it.
                if other != self.new {
                    self.resize.rule_out(*table.name(other));
                    if self.resize.in_doubt.holds(key) {
                        doubted = Some(*table.name(other));
                    }
                }
                None
            })
            .collect();
        if let Some(old) = doubted {
            return Box::pin(std::future::ready(Err(not_moved(old, new))));
        }
        let sent: Vec<_> =
            forgets(others.iter().copied(), to.map(|to| (to, self.resize.migrate_ms)))
                .into_iter()
                .map(|(other, pipe, moves)| {
                    let there = others.iter().filter(|(n, ..)| *n == other);
                    let there: Vec<Vec<u8>> = there.map(|(_, key, _)| key.to_vec()).collect();
                    let node = Arc::clone(&table.nodes[other]);
                    let (len, timeout) = (pipe.len(), self.checkout_timeout);
                    let sent = send(Arc::clone(&node), timeout, pipe);
                    let (resize, name, old) =
                        (self.resize.clone(), *table.name(other), other != self.new);
                    // A `MIGRATE` in doubt (timed out, or this future dropped
                    // while it was out) may still run on a stalled old home,
                    // or land its `RESTORE … REPLACE` late on a slow new one:
                    // after the write, it would undo it. So may one of an
                    // earlier write, until a `DEL` of its keys there is
                    // answered.
                    let moving = (old && moves > 0).then(|| {
                        let closed = Arc::clone(&self.resize);
                        let given_up = move || closed.closed.load(Ordering::Acquire);
                        self.resize.in_doubt.moving(node, timeout, there.clone(), given_up)
                    });
                    async move {
                        let outcome = forgotten(sent.await, len, moves);
                        match moving {
                            Some(moving) if outcome != Forgotten::InDoubt => moving.ended(),
                            // Dropped untold: its keys are in doubt.
                            Some(moving) => {
                                drop(moving);
                                resize.rule_out(name);
                                return Err(name);
                            }
                            None => {}
                        }
                        if !old {
                            return Ok(());
                        }
                        if outcome == Forgotten::Done {
                            resize.in_doubt.settle(&there);
                            return Ok(());
                        }
                        resize.rule_out(name);
                        if resize.in_doubt.any(&there) { Err(name) } else { Ok(()) }
                    }
                })
                .collect();
        // The window copies nothing on its own: an old home that could not
        // delete its copy is never read again, and the write goes on (from
        // empty: the old value stays there, unread). One that could not
        // move it refuses the write.
        // Keys written here, the new node: claimed here once moved.
        let here = (self.here == self.new).then(|| Arc::clone(&table.nodes[self.new]));
        let timeout = self.checkout_timeout;
        Box::pin(async move {
            let refused = join_all(sent).await.into_iter().find_map(Result::err);
            if let Some(old) = refused {
                return Err(not_moved(old, new));
            }
            let Some(here) = here else { return Ok(()) };
            claimed(here, timeout, &keys).await
        })
    }

    fn reclaim(&self, keys: Vec<Vec<u8>>) -> BoxFuture<'static, RedisResult<()>> {
        let table = self.table.upgrade().filter(|_| self.here == self.new);
        let Some(table) = table else { return Box::pin(async { Ok(()) }) };
        let (here, timeout) = (Arc::clone(&table.nodes[self.new]), self.checkout_timeout);
        Box::pin(async move { claimed(here, timeout, &keys).await })
    }

    fn end(&self) {
        self.resize.end();
    }

    fn over(&self) -> bool {
        (Instant::now() >= self.resize.until && self.resize.in_doubt.is_empty())
            || self.resize.closed.load(Ordering::Acquire)
            || self.table.strong_count() == 0
    }
}
