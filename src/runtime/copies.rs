//! The other copies of moved keys, as a resize reaches them (the warm
//! window's old homes, `warm.rs`; a drain's, `drained.rs` and `drain.rs`;
//! the sweep's): the one way its own commands go to another node
//! ([`send`]), an old home's value read ([`get_pttl`]), a write's other
//! copies moved or deleted first ([`forgets`], judged by [`forgotten`]),
//! its keys claimed on their new home ([`claimed`]), and the keys whose
//! move is in doubt until their old home answers ([`Doubts`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::{RedisResult, Value};

use crate::health::failure::failure;
use crate::node::clock::Clock;
use crate::node::lease::unmark;
use crate::node::store::gone;
use crate::node::tracked::{ConnectionAbilities, NodeManager};
use crate::node::warm::claim;
use crate::node::{Node, Store};
use crate::runtime::migrate::{self, Address, Outcome};

/// The other copies of a write's keys, grouped by the node (an index)
/// they are on, one pipeline each: a key marked to move goes from there
/// `to` a node's address (one `MIGRATE … REPLACE`, first in the pipeline),
/// the others are deleted. With each pipeline, how many of its replies are
/// a `MIGRATE`'s (0 or 1): what [`forgotten`] judges.
pub(crate) fn forgets<'k>(
    keys: impl Iterator<Item = (usize, &'k [u8], bool)>,
    to: Option<(&Address, u64)>,
) -> Vec<(usize, redis::Pipeline, usize)> {
    // Each node's keys to move from it, and to delete there.
    type Copies<'k> = (usize, Vec<&'k [u8]>, Vec<&'k [u8]>);
    let mut by_node: Vec<Copies> = Vec::new();
    for (node, key, moves) in keys {
        let at = match by_node.iter().position(|(n, ..)| *n == node) {
            Some(at) => at,
            None => {
                by_node.push((node, Vec::new(), Vec::new()));
                by_node.len() - 1
            }
        };
        let (_, moved, deleted) = &mut by_node[at];
        match to.is_some() && moves {
            true => moved.push(key),
            false => deleted.push(key),
        }
    }
    let pipes = by_node.into_iter().map(|(node, moved, deleted)| {
        let mut pipe = redis::pipe();
        if let (Some((to, timeout_ms)), false) = (to, moved.is_empty()) {
            to.migrate(&mut pipe, timeout_ms, &moved);
        }
        delete(&mut pipe, &deleted);
        (node, pipe, usize::from(!moved.is_empty()))
    });
    pipes.collect()
}

/// Adds a `DEL` of each of `keys` to `pipe`: one reply each, what
/// [`forgotten`] reads.
pub(crate) fn delete<K: AsRef<[u8]>>(pipe: &mut redis::Pipeline, keys: &[K]) {
    for key in keys {
        pipe.cmd("DEL").arg(key.as_ref());
    }
}

/// What a pipeline of [`forgets`] did: its `MIGRATE`'s
/// [`Outcome`](migrate::Outcome), the worst of it and its `DEL`s'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forgotten {
    /// Its `MIGRATE` moved its keys or found none, and each `DEL` answered.
    Done,
    /// It failed, and the server said so: nothing of it is left to run.
    Failed,
    /// No reply, or its `MIGRATE` is in doubt: what it sent may still run
    /// or land late.
    InDoubt,
}

/// What a pipeline of [`forgets`], `len` commands long, did, its
/// `MIGRATE` the first `moves` replies.
pub(crate) fn forgotten(sent: RedisResult<Vec<Value>>, len: usize, moves: usize) -> Forgotten {
    let Ok(replies) = sent else { return Forgotten::InDoubt };
    if replies.len() != len {
        return Forgotten::InDoubt;
    }
    let mut outcome = Forgotten::Done;
    for (i, reply) in replies.iter().enumerate() {
        let step = match (i < moves, reply) {
            (true, reply) => match migrate::outcome(Some(reply)) {
                Outcome::Done => Forgotten::Done,
                Outcome::Failed(_) => Forgotten::Failed,
                Outcome::InDoubt(_) => Forgotten::InDoubt,
            },
            (false, Value::Int(_)) => Forgotten::Done,
            (false, _) => Forgotten::Failed,
        };
        if step != Forgotten::Done && outcome != Forgotten::InDoubt {
            outcome = step;
        }
    }
    outcome
}

/// Keys whose move off a node is in doubt ([`Outcome::InDoubt`]): that
/// `MIGRATE … REPLACE` may still run and land its older values over the
/// writes made on their new homes since. Their writes are refused until a
/// `DEL` of them on that node is answered: it ran either before the move
/// (which then finds nothing) or after it. A resize window's
/// (`warm.rs`), and a drain's, past its end (`drain.rs`).
#[derive(Default)]
pub(crate) struct Doubts(Mutex<HashSet<Vec<u8>>>);

impl Doubts {
    fn keys(&self) -> MutexGuard<'_, HashSet<Vec<u8>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key`'s move is in doubt.
    pub(crate) fn holds(&self, key: &[u8]) -> bool {
        self.keys().contains(key)
    }

    /// Whether the move of any of `keys` is in doubt.
    pub(crate) fn any(&self, keys: &[Vec<u8>]) -> bool {
        let held = self.keys();
        !held.is_empty() && keys.iter().any(|key| held.contains(key))
    }

    /// Whether no move is in doubt.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys().is_empty()
    }

    /// `keys` settled: no move of them queued on their node can land
    /// later (it ran, or finds nothing).
    pub(crate) fn settle(&self, keys: &[Vec<u8>]) {
        let mut held = self.keys();
        for key in keys {
            held.remove(key);
        }
    }

    /// A move of `keys` off `node`, about to be sent: in doubt unless told
    /// it [`ended`](Moving::ended).
    pub(crate) fn moving<M: NodeManager, S: Store<M>>(
        self: &Arc<Self>,
        node: Arc<Node<M, S>>,
        timeout: Duration,
        keys: Vec<Vec<u8>>,
        given_up: impl Fn() -> bool + Send + 'static,
    ) -> Moving<M, S> {
        let (doubts, given_up) = (Arc::clone(self), Some(Box::new(given_up) as Box<_>));
        Moving { doubts, node, timeout, keys, given_up }
    }

    /// `keys`, whose move off `node` is in doubt, held until a `DEL` of
    /// them there is answered: asked in the background with a growing
    /// pause, on a connection of its own (the node may have left the
    /// pool, or be boxed), until then or until `given_up` (the resize is
    /// gone).
    pub(crate) fn doubt<M: NodeManager, S: Store<M>>(
        self: &Arc<Self>,
        node: Arc<Node<M, S>>,
        timeout: Duration,
        keys: Vec<Vec<u8>>,
        given_up: impl Fn() -> bool + Send + 'static,
    ) {
        self.keys().extend(keys.iter().cloned());
        let doubts = Arc::clone(self);
        // A drain's future dropped off any runtime: its keys stay in doubt
        // (`remove_node` of the drained node gives them up).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let mut pause = Duration::from_millis(10);
            while !given_up() && doubts.any(&keys) {
                tokio::time::sleep(pause).await;
                let mut pipe = redis::pipe();
                delete(&mut pipe, &keys);
                let sent = match node.send_own(&pipe).await {
                    Ok(Some(replies)) => Some(Ok(replies)),
                    Ok(None) => Some(send(Arc::clone(&node), timeout, pipe).await),
                    Err(_) => None,
                };
                if sent.is_some_and(|sent| forgotten(sent, keys.len(), 0) == Forgotten::Done) {
                    doubts.settle(&keys);
                    tracing::debug!(node = %node.name(), keys = keys.len(), "moves in doubt settled");
                }
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        });
    }
}

/// A move of keys off a node on its way (a write's `MIGRATE` first):
/// dropped before it [`ended`](Self::ended) (its outcome in doubt, or the
/// write's future dropped while it was out, the `MIGRATE` maybe still
/// queued there), its keys are in doubt ([`Doubts::doubt`]).
pub(crate) struct Moving<M: NodeManager, S: Store<M>> {
    doubts: Arc<Doubts>,
    node: Arc<Node<M, S>>,
    timeout: Duration,
    keys: Vec<Vec<u8>>,
    given_up: Option<Box<dyn Fn() -> bool + Send>>,
}

impl<M: NodeManager, S: Store<M>> Moving<M, S> {
    /// It ended, moved or refused by a server: nothing of it is left to
    /// run.
    pub(crate) fn ended(mut self) {
        self.given_up = None;
    }
}

impl<M: NodeManager, S: Store<M>> Drop for Moving<M, S> {
    fn drop(&mut self) {
        if let Some(given_up) = self.given_up.take() {
            let keys = std::mem::take(&mut self.keys);
            self.doubts.doubt(Arc::clone(&self.node), self.timeout, keys, given_up);
        }
    }
}

/// The claim of `keys`, moved to `node`, once their old copies are out
/// of the way and before the write is sent (`node/warm.rs`'s [`claim`]):
/// on the node's shared connection, never the writer's own (which may be
/// inside a `MULTI` it opened by hand); the write goes after its reply.
pub(crate) async fn claimed<M: NodeManager, S: Store<M>>(
    node: Arc<Node<M, S>>,
    timeout: Duration,
    keys: &[Vec<u8>],
) -> RedisResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let name = *node.name();
    let sent = send(node, timeout, claim(keys.iter().map(Vec::as_slice))).await;
    let why = match sent.as_deref() {
        Ok([Value::Int(0)]) => return Ok(()),
        Ok(other) => format!("it answered {other:?}"),
        Err(e) => e.to_string(),
    };
    Err(migrate::refused(
        "write refused while keys move",
        format!(
            "its keys could not be claimed on `{name}`, their new home, before the write ({why}); \
             the write was not sent"
        ),
    ))
}

/// `GET key` and `PTTL key` on `node`: an old home's value and the
/// milliseconds it has left.
pub(crate) fn get_pttl<M: NodeManager, S: Store<M>>(
    node: Arc<Node<M, S>>,
    timeout: Duration,
    key: &[u8],
) -> BoxFuture<'static, RedisResult<(Value, i64)>> {
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
    let sent = send(node, timeout, pipe);
    Box::pin(async move {
        match <[Value; 2]>::try_from(sent.await?) {
            Ok([value, Value::Int(ttl)]) => Ok((value, ttl)),
            _ => Err((redis::ErrorKind::UnexpectedReturnType, "old home's GET and PTTL").into()),
        }
    })
}

/// `pipe` on `node`, judged by the one classifier; the replies as
/// fluster's readers see them (a lease reads as nil). What the warm
/// window's and the drain's old homes are asked through: on the node's
/// shared connection where it has one, never a pooled one its own caller
/// may hold (a `fan_out` holds one of every node's: with
/// `max_connections(1)` a checkout here waited for itself); else on one
/// of its store's ([`Store::send_pooled`]).
pub(crate) fn send<M: NodeManager, S: Store<M>>(
    node: Arc<Node<M, S>>,
    timeout: Duration,
    pipe: redis::Pipeline,
) -> BoxFuture<'static, RedisResult<Vec<Value>>> {
    Box::pin(async move {
        let clock = Clock::new(timeout);
        let mux = node.multiplexed(&clock).await.map_err(|e| gone(e, node.name()))?;
        let Some(sent) = mux.conn.send_shared(pipe.clone()) else {
            return S::send_pooled(node, clock, pipe).await;
        };
        let mut replies = sent.await;
        mux.observe(failure(&replies));
        if let Ok(values) = &mut replies {
            values.iter_mut().for_each(unmark);
        }
        replies
    })
}
