//! A boxed node's return, in the order it happens: once its probe passes,
//! the copies stand-ins wrote for it are deleted (this process's, and with
//! a fleet every process's, read from the records on the stand-ins), its
//! own older copies of the keys of homes still out too, and only then is
//! it let back in; what stand-ins took meanwhile is deleted after. The
//! prober (`prober.rs`) says when: it starts [`probe`] when a node's wait
//! runs out and [`after_return`] when its warm-up ends.
//!
//! Read top to bottom: [`probe`] (the whole return, and why no process of
//! a fleet routes a key home to a copy not yet deleted), then the keys it
//! gathers ([`is_away`], [`borrowed`], [`recorded`]), the deletes
//! ([`after_return`], [`delete_elsewhere`], [`delete`]).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use redis::{Pipeline, Value};

use crate::health::event::NodeEvent;
use crate::health::failure::{FailureKind, one_line};
use crate::node::tracked::NodeManager;
use crate::node::{Node, Store, send_to_others};
use crate::route::NodeName;
use crate::stand_in::journal::Journal;

type Nodes<M, S> = [Arc<Node<M, S>>];

/// Probes `node`, one of `nodes`; if it passes, deletes the keys
/// remembered for it (by this process, and with a fleet by every process,
/// on the stand-ins), on it (it is still boxed) and on the others, and in
/// the same deletes on it the keys it may hold for the homes still out
/// ([`borrowed`]: once back, it serves their keys again ahead of the
/// stand-ins that took their later writes), then lets it back in. A failure on `node` fails the probe, the keys still
/// remembered; another node that cannot be reached does not hold the
/// return (the writes are counted as dropped, left to the TTL). `landing`
/// bounds the wait for this process's stand-in writes in flight.
///
/// Why no process of a fleet routes a key home to a copy not yet deleted,
/// however many return the node at once: each write's record goes to its
/// stand-in before the write, in the same round trip; a return reads the
/// records and leaves them ([`Journal::read_recorded`]), deletes the keys
/// on the home first, and only then, on each stand-in, deletes them there
/// and removes exactly the members it read, in one transaction
/// ([`Journal::deletes`]). So a record disappears only after the home's
/// copy and its stand-in's copy are gone: a second process returning the
/// node meanwhile either reads the record and deletes too before it lets
/// the node in, or finds it gone because those deletes are done. (A write
/// whose record lands before such a transaction and whose copy lands after
/// it is still in flight: its own process remembers it, below.)
///
/// This process's own writes: those in flight now land first (each is
/// remembered from before its bytes leave until its reply is in, and kept
/// through any take until then), so none reaches its stand-in after the
/// deletes unseen; those that leave during the return are deleted after it
/// ([`after_return`]).
pub(crate) async fn probe<M: NodeManager, S: Store<M>>(
    node: Arc<Node<M, S>>,
    nodes: Vec<Arc<Node<M, S>>>,
    landing: Duration,
) {
    let mut outcome = node.probe().await;
    let (mut local, mut records, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    let mut here = Vec::new();
    if outcome.is_ok() {
        let away: Vec<&Arc<Node<M, S>>> = nodes.iter().filter(|n| is_away(n, &node)).collect();
        let journals = std::iter::once(&node).chain(away.iter().copied()).map(|n| n.journal());
        join_all(journals.map(|journal| journal.landed(journal.mark(), landing))).await;
        local = node.journal().take();
        records = recorded(&node, &nodes).await;
        keys = local.clone();
        keys.extend(records.iter().flat_map(|(_, members)| members.iter().cloned()));
        keys.sort_unstable();
        keys.dedup();
        match borrowed(&node, &away).await {
            Ok(borrowed) => here = borrowed,
            Err(e) => outcome = Err(e),
        }
    }
    if outcome.is_ok() && !(keys.is_empty() && here.is_empty()) {
        here.extend(keys.iter().cloned());
        here.sort_unstable();
        here.dedup();
        match delete(&node, &node.journal().deletes(&here, &[])).await {
            Ok(true) => {}
            // Its connections cannot carry a DEL: nothing can be deleted
            // anywhere, so nothing holds the return.
            Ok(false) => {
                node.journal().settle(0, std::mem::take(&mut keys).len());
                records.clear();
            }
            Err(e) => outcome = Err(e),
        }
    }
    if outcome.is_err() {
        // The records stay on the stand-ins; what this process remembered
        // goes back to its journal.
        node.journal().restore(local);
        return node.health().finish_probe(outcome);
    }
    let count = keys.len();
    if delete_elsewhere(&node, &nodes, keys, &records).await {
        node.health().pool_wide.send(NodeEvent::Invalidated { node: *node.name(), keys: count });
        tracing::info!(node = %node.name(), keys = count, "stand-in copies invalidated");
    }
    node.journal().counted(0);
    node.health().finish_probe(outcome);
    // What stand-ins took meanwhile: writes routed before the return.
    after_return(&node, &nodes, landing).await;
}

/// Whether `other`, another node than `node`, is a home that does not
/// take all its keys now (boxed, or warming up): stand-ins take them, so
/// `node` may hold copies of them from before it was boxed, older than
/// those written since on the stand-ins after it.
fn is_away<M: NodeManager, S: Store<M>>(other: &Node<M, S>, node: &Node<M, S>) -> bool {
    other.name() != node.name() && (!other.is_up() || other.health().warm_until().is_some())
}

/// The keys of the homes `away` whose copies `node`, returning, may hold:
/// those this process remembers for them, and with a fleet those every
/// process recorded for them on `node` itself (read there, left there).
/// Deleted on `node` only, and left remembered: they go everywhere else at
/// their home's own return. Bounded by the journals' room.
async fn borrowed<M: NodeManager, S: Store<M>>(
    node: &Node<M, S>,
    away: &[&Arc<Node<M, S>>],
) -> Result<Vec<Box<[u8]>>, (FailureKind, String)> {
    let mut keys: Vec<Box<[u8]>> = away.iter().flat_map(|home| home.journal().keys()).collect();
    let mut read = redis::pipe();
    for members in away.iter().filter_map(|home| home.journal().members()) {
        read.add_command(members);
    }
    if !read.is_empty()
        && let Some(replies) = node.send_own(&read).await?
    {
        keys.extend(replies.into_iter().flat_map(Journal::keys_of));
    }
    Ok(keys)
}

/// With a fleet: the keys every process recorded for `home` on each other
/// node that answered, read and left there.
async fn recorded<M: NodeManager, S: Store<M>>(
    home: &Node<M, S>,
    nodes: &Nodes<M, S>,
) -> Vec<(NodeName, Vec<Box<[u8]>>)> {
    let Some(read) = home.journal().read_recorded() else { return Vec::new() };
    let replies = send_to_others(nodes, home.name(), &read).await;
    let members = replies.into_iter().map(|(name, replies)| (name, Journal::recorded(replies)));
    members.filter(|(_, members)| !members.is_empty()).collect()
}

/// Deletes on the other nodes what stand-ins took for `home` since its
/// return (writes routed before it, or during its warm-up), once those in
/// flight now have landed (at most `landing`).
pub(crate) async fn after_return<M: NodeManager, S: Store<M>>(
    home: &Node<M, S>,
    nodes: &Nodes<M, S>,
    landing: Duration,
) {
    home.journal().landed(home.journal().mark(), landing).await;
    delete_elsewhere(home, nodes, home.journal().take(), &[]).await;
}

/// Deletes `keys` on every node but `home`, all at once (with rendezvous
/// hashing its keys have stand-ins all over the pool), with each node's
/// `records` of them (removed in the same transaction); counts them, and
/// says whether they all went.
async fn delete_elsewhere<M: NodeManager, S: Store<M>>(
    home: &Node<M, S>,
    nodes: &Nodes<M, S>,
    keys: Vec<Box<[u8]>>,
    records: &[(NodeName, Vec<Box<[u8]>>)],
) -> bool {
    if keys.is_empty() {
        return false;
    }
    let others = nodes.iter().filter(|node| node.name() != home.name());
    let runs = others.map(|node| async {
        let read = records.iter().find(|(name, _)| name == node.name());
        let members = read.map_or(&[][..], |(_, members)| members);
        let outcome = match node.is_up() {
            true => delete(node, &home.journal().deletes(&keys, members)).await,
            false => Err((FailureKind::Connect, "boxed".to_owned())),
        };
        let cannot_delete =
            || (FailureKind::Check, "its connections cannot carry a DEL".to_owned());
        outcome
            .and_then(|deleted| if deleted { Ok(()) } else { Err(cannot_delete()) })
            .map_err(|e| (node.name(), e))
    });
    let Some((stand_in, (kind, error))) = join_all(runs).await.into_iter().find_map(Result::err)
    else {
        home.journal().settle(keys.len(), 0);
        return true;
    };
    tracing::warn!(node = %home.name(), %stand_in, %kind, %error, keys = keys.len(),
        "stand-in copies not invalidated; left to stand_in_ttl");
    home.journal().settle(0, keys.len());
    false
}

/// Sends `deletes` to `node`, on a connection of its own
/// ([`Node::send_own`]); `Ok(false)` if its connections cannot carry the
/// pool's own commands: nothing was deleted.
async fn delete<M: NodeManager, S: Store<M>>(
    node: &Node<M, S>,
    deletes: &Pipeline,
) -> Result<bool, (FailureKind, String)> {
    let Some(replies) = node.send_own(deletes).await? else { return Ok(false) };
    // Any refusal the classifier lets pass (`DEL` renamed, or denied by an
    // ACL), in a reply or inside `EXEC`'s: the copies stay, so the node
    // stays out.
    let nested = |reply: &Value| match reply {
        Value::Array(replies) => replies.clone(),
        reply => vec![reply.clone()],
    };
    let refused = replies.iter().flat_map(nested).find_map(|reply| match reply {
        Value::ServerError(e) => Some(e),
        _ => None,
    });
    refused.map_or(Ok(true), |e| Err((FailureKind::Check, one_line(&e))))
}
