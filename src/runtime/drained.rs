//! A drain's side of a connection (`drain.rs` moves the keys): the
//! draining node as the old home of the keys that moved away from it, the
//! [`Elder`] each node's slot holds while a drain is on (`node/warm.rs`).
//!
//! On a node that took keys from it (their new home, or a stand-in for
//! it): a plain `GET` that misses reads through to the draining node, and
//! before a write the draining node moves its copy to the new home
//! (`MIGRATE`), or deletes it for a stand-in's write. On the draining node
//! itself (connections taken before the switch, commands in flight across
//! it): once a write's reply is in, the draining node moves the written
//! keys to their new homes (or, failing that, their new homes' copies are
//! deleted).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::{RedisResult, Value};

use crate::node::Store;
use crate::node::tracked::NodeManager;
use crate::node::warm::{Elder, Moved};
use crate::route;
use crate::runtime::copies::{Forgotten, claimed, delete, forgets, forgotten, get_pttl, send};
use crate::runtime::drain::Drain;
use crate::runtime::migrate::{self, Address};
use crate::runtime::table::Table;

/// What each command on `table.nodes[index]`'s connections asks while
/// `drain` is on (`table`, without the draining node, about to be
/// installed): the keys that moved to it from the draining node, and those
/// it takes as a stand-in for their boxed new home (the gutter too). With
/// `index` `None`, the draining node's own connections: every key there
/// moved away.
pub(crate) fn elder<M: NodeManager, S: Store<M>>(
    drain: Option<Arc<Drain<M, S>>>,
    table: &Arc<Table<M, S>>,
    here: Option<usize>,
    timeout: Duration,
) -> Option<Arc<dyn Elder>> {
    let drain = drain?;
    let table = Arc::downgrade(table);
    Some(Arc::new(FromDrained { drain, table, here, timeout }))
}

/// The draining node as the old home of the keys that moved away from it,
/// seen from a connection to `table.nodes[here]` (`None`: to the draining
/// node). Held by each node's slot: the table only weakly.
struct FromDrained<M: NodeManager, S> {
    drain: Arc<Drain<M, S>>,
    table: Weak<Table<M, S>>,
    here: Option<usize>,
    timeout: Duration,
}

impl<M: NodeManager, S: Store<M>> FromDrained<M, S> {
    fn on(&self) -> bool {
        !self.drain.done.load(Ordering::Acquire)
    }

    /// Why a write of keys whose move off the drained node is in doubt
    /// is not sent.
    fn doubted(&self) -> redis::RedisError {
        let detail = format!(
            "a drain's move of its key off `{}` got no answer and may still run; the write was \
             not sent (that move could land over it): retry once `{0}` answers, or, if its \
             server is gone for good, remove_node(\"{0}\") gives the move up",
            self.drain.node.name()
        );
        migrate::refused("write refused after a drain", detail)
    }
}

impl<M: NodeManager, S: Store<M>> Elder for FromDrained<M, S> {
    fn moved(&self, key: &[u8]) -> Moved {
        let hash = route::key_hash(key);
        let Some(table) = self.table.upgrade() else { return Moved::No };
        // Past the drain's end, a key whose move is in doubt still moved:
        // its writes wait for the drained node.
        let on = || self.on() || (self.here.is_some() && self.drain.in_doubt.holds(key));
        if !self.drain.drained(hash) || !on() {
            Moved::No
        } else if self.here.is_none() {
            Moved::Away
        } else if table.router.home_hashed(hash) == self.here {
            Moved::Here
        } else {
            Moved::Elsewhere
        }
    }

    fn read(&self, key: &[u8]) -> Option<BoxFuture<'static, RedisResult<(Value, i64)>>> {
        let drain = &self.drain;
        let readable = self.on() && drain.node.is_up() && !drain.ruled_out.load(Ordering::Acquire);
        readable.then(|| get_pttl(Arc::clone(&drain.node), self.timeout, key))
    }

    /// The draining node's copies first (W1): a key whose new home is
    /// here is moved here (`MIGRATE … REPLACE`, so the write starts from
    /// its value, and replaces a reader's marker: that reader's copy is
    /// refused); one this node stands in for is deleted there (a
    /// stand-in's copy is capped and dropped when its home returns, as
    /// every key of a boxed node starts from empty on its stand-in).
    /// Once the drain is ruled out (a write named no key) nothing is moved
    /// any more: deleted. The drain's `MIGRATE`s replace what a new home
    /// holds, so a write whose W1 failed is not sent: a batch queued on
    /// the draining node before it could land over the write. A W1 that
    /// succeeded shows that every batch the node took before it is done
    /// (one `MIGRATE` blocks its server until the target has the keys),
    /// and later ones find no copy.
    fn forget(&self, keys: Vec<Vec<u8>>) -> BoxFuture<'static, RedisResult<()>> {
        let Some(here) = self.here else { return self.forget_new(keys) };
        if self.drain.in_doubt.any(&keys) {
            return Box::pin(std::future::ready(Err(self.doubted())));
        }
        let drain = Arc::clone(&self.drain);
        let refused = move |drain: &Drain<M, S>| {
            drain.rule_out();
            let detail = format!(
                "the copy on `{}`, the node being drained, could not be moved or deleted \
                 first; the write was not sent (the drain could copy the older value over it)",
                drain.node.name()
            );
            Err(migrate::refused("write refused during a drain", detail))
        };
        if !drain.node.is_up() {
            return Box::pin(std::future::ready(refused(&drain)));
        }
        let Some(table) = self.table.upgrade() else { return Box::pin(async { Ok(()) }) };
        let Some(node) = table.nodes.get(here).map(Arc::clone) else {
            return Box::pin(async { Ok(()) });
        };
        let to = drain.homes.iter().find(|(home, _)| home == node.name()).map(|(_, at)| at);
        let to = to.filter(|_| !drain.ruled_out.load(Ordering::Acquire));
        // The keys whose new home is here (the others this node stands in
        // for): moved, then claimed here.
        let homed = |key: &[u8]| table.router.home(key) == Some(here);
        let mine: Vec<Vec<u8>> = keys.iter().filter(|key| homed(key)).cloned().collect();
        let keys = keys.iter().map(|key| (0, key.as_slice(), to.is_some() && homed(key)));
        let to = to.map(|at| (&**at, drain.migrate_ms));
        let Some((_, pipe, moves)) = forgets(keys, to).pop() else {
            return Box::pin(async { Ok(()) });
        };
        let len = pipe.len();
        let sent = send(Arc::clone(&drain.node), self.timeout, pipe);
        let timeout = self.timeout;
        // In doubt unless it ends (a timeout, or this future dropped while
        // it was out).
        let moving = (moves > 0).then(|| drain.moving(timeout, mine.clone()));
        Box::pin(async move {
            let outcome = forgotten(sent.await, len, moves);
            if let Some(moving) = moving.filter(|_| outcome != Forgotten::InDoubt) {
                moving.ended();
            }
            match outcome {
                Forgotten::Done => claimed(node, timeout, &mine).await,
                _ => refused(&drain),
            }
        })
    }

    fn reclaim(&self, keys: Vec<Vec<u8>>) -> BoxFuture<'static, RedisResult<()>> {
        let table = self.table.upgrade();
        let node = table.and_then(|table| table.nodes.get(self.here?).map(Arc::clone));
        let Some(node) = node else { return Box::pin(async { Ok(()) }) };
        let timeout = self.timeout;
        Box::pin(async move { claimed(node, timeout, &keys).await })
    }

    fn end(&self) {
        self.drain.rule_out();
    }

    fn over(&self) -> bool {
        self.drain.over() || self.table.strong_count() == 0
    }
}

impl<M: NodeManager, S: Store<M>> FromDrained<M, S> {
    /// `keys`, written on the draining node, moved from it to their new
    /// homes (`MIGRATE … REPLACE`): the write's value replaces a copy read
    /// through before it, and is not left on the draining node for a
    /// drain (this one past it already, or another process's) to copy
    /// over a later write. Where the move fails, the new home's copy is
    /// deleted instead. A boxed new home's copy stays, as any node's that
    /// returns after its keys were written elsewhere.
    fn forget_new(&self, keys: Vec<Vec<u8>>) -> BoxFuture<'static, RedisResult<()>> {
        let Some(table) = self.table.upgrade() else { return Box::pin(async { Ok(()) }) };
        type Moves = Vec<(usize, Option<Arc<Address>>, Vec<Vec<u8>>)>;
        let mut by_home: Moves = Vec::new();
        for key in keys {
            let Some(home) = table.router.home(&key).filter(|&h| table.nodes[h].is_up()) else {
                continue;
            };
            match by_home.iter_mut().find(|(h, ..)| *h == home) {
                Some((_, _, keys)) => keys.push(key),
                None => {
                    let name = table.name(home);
                    let at = self.drain.homes.iter().find(|(n, _)| n == name);
                    by_home.push((home, at.map(|(_, at)| Arc::clone(at)), vec![key]));
                }
            }
        }
        let (timeout, migrate_ms) = (self.timeout, self.drain.migrate_ms);
        let sent: Vec<_> = by_home
            .into_iter()
            .map(|(home, at, keys)| {
                let (drained, home) =
                    (Arc::clone(&self.drain.node), Arc::clone(&table.nodes[home]));
                let drain = Arc::clone(&self.drain);
                async move {
                    if let Some(at) = at.filter(|_| drained.is_up()) {
                        let mut pipe = redis::pipe();
                        at.migrate(&mut pipe, migrate_ms, &keys);
                        let moving = drain.moving(timeout, keys.clone());
                        match forgotten(send(drained, timeout, pipe).await, 1, 1) {
                            Forgotten::Done => return moving.ended(),
                            Forgotten::InDoubt => drop(moving),
                            Forgotten::Failed => moving.ended(),
                        }
                    }
                    let mut pipe = redis::pipe();
                    delete(&mut pipe, &keys);
                    let _ = send(home, timeout, pipe).await;
                }
            })
            .collect();
        Box::pin(async move {
            futures_util::future::join_all(sent).await;
            Ok(())
        })
    }
}
