//! A returning node's keys, as stand-ins wrote them while it was boxed:
//! deleted, there and on the node itself, before its keys go home.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::ConnectionLike;

use crate::cell::NodeEvent;
use crate::check::{Probe, failed, redis_of, speaks_redis};
use crate::node::{Node, NodeManager, Store, judge};
use crate::route::NodeName;
use crate::stale::Entries;

/// Keys per `DEL`.
const BATCH: usize = 1_000;

/// Before `home` returns: deletes every key remembered for it, on `home`
/// (through a connection of its own: it is still boxed), whose copies are
/// older than the stand-ins', then on the stand-ins that took them. A
/// failure on `home` fails its probe, the keys still remembered; a
/// stand-in that cannot be reached does not hold the return (its writes
/// are counted as dropped, left to the TTL).
pub(crate) async fn before_return<M, S>(home: &Node<M, S>, nodes: &[Arc<Node<M, S>>]) -> Probe
where
    M: NodeManager,
    S: Store<M>,
{
    let entries = home.cell.journal.take();
    if entries.is_empty() {
        return Ok(());
    }
    if !speaks_redis::<M::Connection>() {
        // Another manager's writes cannot be deleted by the pool.
        home.cell.settle(0, entries.values().map(Vec::len).sum());
        return Ok(());
    }
    let keys: Vec<&[u8]> = entries.keys().map(|key| &**key).collect();
    if let Err(e) = delete(home, &keys).await {
        let lost = home.cell.journal.restore(entries);
        home.cell.settle(0, lost);
        return Err(e);
    }
    let count = keys.len();
    on_stand_ins(home, nodes, entries).await;
    home.cell.fleet.send(NodeEvent::Invalidated { node: *home.name(), keys: count });
    tracing::info!(node = %home.name(), keys = count, "stand-in copies invalidated");
    Ok(())
}

/// After `home` returned: what stand-ins took between [`before_return`]
/// and the return (writes routed before it), deleted on them alone: the
/// copies on `home` are current now.
pub(crate) async fn after_return<M, S>(home: &Node<M, S>, nodes: &[Arc<Node<M, S>>])
where
    M: NodeManager,
    S: Store<M>,
{
    let entries = home.cell.journal.take();
    if !entries.is_empty() {
        on_stand_ins(home, nodes, entries).await;
    }
}

/// Deletes `entries` on the stand-ins they name, all at once; counts them
/// against `home` as invalidated or dropped.
async fn on_stand_ins<M, S>(home: &Node<M, S>, nodes: &[Arc<Node<M, S>>], entries: Entries)
where
    M: NodeManager,
    S: Store<M>,
{
    let mut by_stand_in = HashMap::<NodeName, Vec<&[u8]>>::new();
    for (key, stand_ins) in &entries {
        for stand_in in stand_ins {
            by_stand_in.entry(*stand_in).or_default().push(key);
        }
    }
    let runs = by_stand_in.iter().map(|(name, keys)| async move {
        let node = nodes.iter().find(|node| node.name() == name);
        let deleted = match node {
            Some(node) => delete(node, keys).await,
            None => Err((crate::FailureKind::Connect, "left the pool".into())),
        };
        if let Err((kind, error)) = &deleted {
            tracing::warn!(node = %home.name(), stand_in = %name, %kind, %error, keys = keys.len(),
                "stand-in copies not invalidated; left to stand_in_ttl");
        }
        (keys.len(), deleted.is_ok())
    });
    for (keys, deleted) in join_all(runs).await {
        if deleted { home.cell.settle(keys, 0) } else { home.cell.settle(0, keys) }
    }
}

/// Deletes `keys` on `node`, through a connection of its own, within its
/// probe timeout.
async fn delete<M: NodeManager, S>(node: &Node<M, S>, keys: &[&[u8]]) -> Probe {
    let attempt = async {
        let mut conn = node.manager.connect().await.map_err(|e| failed(&e))?;
        // Always one: callers check `speaks_redis` first.
        let Some(conn) = redis_of(&mut conn) else { return Ok(()) };
        let mut pipe = redis::pipe();
        for batch in keys.chunks(BATCH) {
            pipe.cmd("DEL").arg(batch);
        }
        conn.req_packed_commands(&pipe, 0, pipe.len()).await.map_err(|e| failed(&e))?;
        Ok(())
    };
    let timeout: Duration = node.probe_timeout;
    judge(tokio::time::timeout(timeout, attempt).await.ok(), timeout)
}
