//! The prober, the pool's background task: it probes boxed nodes when
//! their wait runs out and lets them back in, the copies their stand-ins
//! wrote deleted first (and their own, which are older, and those they took
//! for homes still out); it ends warm-ups and samples the gauges.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use redis::{Pipeline, Value};

use crate::health::commons::Commons;
use crate::health::event::NodeEvent;
use crate::health::failure::{FailureKind, one_line};
use crate::node::tracked::NodeManager;
use crate::node::{Node, Store, send_to_others};
use crate::route::NodeName;
use crate::runtime::core::Core;
use crate::stand_in::journal::Journal;

type Nodes<M, S> = [Arc<Node<M, S>>];

/// How often the prober samples the gauges.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// The prober: probes boxed nodes when their wait runs out, ends warm-ups,
/// each second samples the gauges, and each `heartbeat` checks the up
/// nodes that did not answer meanwhile. It holds only a `Weak` between
/// rounds, so it stops once the pool is closed or its last handle dropped
/// (which wakes it).
pub(crate) async fn prober<M, S>(core: Weak<Core<M, S>>, commons: Arc<Commons>)
where
    M: NodeManager,
    S: Store<M>,
{
    let mut next_gauges = Instant::now();
    let mut next_beat = None;
    loop {
        let deadline = {
            let Some(core) = core.upgrade().filter(|c| !c.is_closed()) else {
                tracing::debug!("pool dropped or closed; the prober stops");
                return;
            };
            let Ok(table) = core.open_table() else { return };
            let now = Instant::now();
            if now >= next_gauges {
                for node in &table.nodes {
                    node.health().metrics.sample(&node.stats());
                    if let Some((since, ..)) = node.near_figures(true) {
                        node.health().metrics.near(since.to_array());
                    }
                }
                next_gauges = now + GAUGE_INTERVAL;
            }
            // Off, the heartbeat's interval still says when `last_ok` is
            // noted again. The first comes one interval after the start,
            // when every node has just been probed or is boxed.
            let beat = core.settings.heartbeat;
            let period = if beat.is_zero() { GAUGE_INTERVAL } else { beat };
            let next = next_beat.get_or_insert(now + period);
            if now >= *next {
                for node in &table.nodes {
                    if node.needs_heartbeat() && !beat.is_zero() {
                        let node = node.clone();
                        tokio::spawn(async move { node.heartbeat().await });
                    }
                }
                *next = now + period;
            }
            let mut deadline = next_gauges.min(*next);
            // A stand-in write in flight has its reply, or its timeout,
            // within about `response_timeout`: how long a return waits.
            let landing = core.settings.response_timeout.saturating_mul(2);
            for node in &table.nodes {
                if !node.is_up() {
                    node.release();
                }
                match node.health().warm_until() {
                    Some(until) if until <= now => {
                        node.health().end_warmup();
                        // Stand-ins served some of its keys until now.
                        if node.journal().len() > 0 {
                            let (node, nodes) = (node.clone(), table.nodes.clone());
                            tokio::spawn(async move { after_return(&node, &nodes, landing).await });
                        }
                    }
                    Some(until) => deadline = deadline.min(until),
                    None => {}
                }
                match node.health().probe_at() {
                    Some(at) if at > now => deadline = deadline.min(at),
                    Some(_) if node.health().start_probe() => {
                        // The task holds the nodes, not the pool, and ends
                        // within a few probe timeouts.
                        tokio::spawn(probe(node.clone(), table.nodes.clone(), landing));
                    }
                    _ => {}
                }
            }
            deadline
            // `core` is dropped here: never hold it across the wait.
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {}
            () = commons.wake.notified() => {}
        }
    }
}

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
async fn probe<M: NodeManager, S: Store<M>>(
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
    if elsewhere(&node, &nodes, keys, &records).await {
        node.health().commons.send(NodeEvent::Invalidated { node: *node.name(), keys: count });
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
async fn after_return<M: NodeManager, S: Store<M>>(
    home: &Node<M, S>,
    nodes: &Nodes<M, S>,
    landing: Duration,
) {
    home.journal().landed(home.journal().mark(), landing).await;
    elsewhere(home, nodes, home.journal().take(), &[]).await;
}

/// Deletes `keys` on every node but `home`, all at once (with rendezvous
/// hashing its keys have stand-ins all over the pool), with each node's
/// `records` of them (removed in the same transaction); counts them, and
/// says whether they all went.
async fn elsewhere<M: NodeManager, S: Store<M>>(
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
        let mute = || (FailureKind::Check, "its connections cannot carry a DEL".to_owned());
        outcome
            .and_then(|deleted| if deleted { Ok(()) } else { Err(mute()) })
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
