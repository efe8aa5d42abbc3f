//! A boxed node's way back: its probe, then, before its keys go home, the
//! copies stand-ins wrote of them deleted, and its own (they are older).

use std::sync::Arc;

use futures_util::future::join_all;
use redis::aio::ConnectionLike;

use crate::cell::NodeEvent;
use crate::check::{Probe, failed, redis_of, speaks_redis};
use crate::failure::FailureKind;
use crate::node::{Node, NodeManager, Store, judge};

type Nodes<M, S> = [Arc<Node<M, S>>];

/// Probes `node`, one of `nodes`; if it passes, deletes the keys
/// remembered for it, on it (it is still boxed) and on the others, then
/// lets it back in. A failure on `node` fails the probe, the keys still
/// remembered; another node that cannot be reached does not hold the
/// return (the writes are counted as dropped, left to the TTL).
pub(crate) async fn probe<M: NodeManager, S: Store<M>>(
    node: Arc<Node<M, S>>,
    nodes: Vec<Arc<Node<M, S>>>,
) {
    let mut outcome = node.probe().await;
    let keys = if outcome.is_ok() { node.cell.journal.take() } else { Vec::new() };
    if outcome.is_ok() && !keys.is_empty() && speaks_redis::<M::Connection>() {
        outcome = delete(&node, &keys).await;
    }
    if outcome.is_err() {
        let lost = node.cell.journal.restore(keys);
        node.cell.settle(0, lost);
        return node.cell.finish_probe(outcome);
    }
    let count = keys.len();
    if elsewhere(&node, &nodes, keys).await {
        node.cell.fleet.send(NodeEvent::Invalidated { node: *node.name(), keys: count });
        tracing::info!(node = %node.name(), keys = count, "stand-in copies invalidated");
    }
    node.cell.finish_probe(outcome);
    // What stand-ins took meanwhile: writes routed before the return.
    after_return(&node, &nodes).await;
}

/// Deletes on the other nodes what stand-ins took for `home` since its
/// return: writes routed before it, or during its warm-up.
pub(crate) async fn after_return<M: NodeManager, S: Store<M>>(
    home: &Node<M, S>,
    nodes: &Nodes<M, S>,
) {
    elsewhere(home, nodes, home.cell.journal.take()).await;
}

/// Deletes `keys` on every node but `home`, all at once (with rendezvous
/// hashing its keys have stand-ins all over the pool); counts them, and
/// says whether they all went.
async fn elsewhere<M: NodeManager, S: Store<M>>(
    home: &Node<M, S>,
    nodes: &Nodes<M, S>,
    keys: Vec<Box<[u8]>>,
) -> bool {
    if keys.is_empty() {
        return false;
    }
    if !speaks_redis::<M::Connection>() {
        // The pool cannot delete what another manager's connections wrote.
        home.cell.settle(0, keys.len());
        return false;
    }
    let others = nodes.iter().filter(|node| node.name() != home.name());
    let runs = others.map(|node| async {
        let boxed = Err((FailureKind::Connect, "boxed".to_owned()));
        let outcome = if node.cell.is_up() { delete(node, &keys).await } else { boxed };
        outcome.map_err(|e| (node.name(), e))
    });
    let Some((stand_in, (kind, error))) = join_all(runs).await.into_iter().find_map(Result::err)
    else {
        home.cell.settle(keys.len(), 0);
        return true;
    };
    tracing::warn!(node = %home.name(), %stand_in, %kind, %error, keys = keys.len(),
        "stand-in copies not invalidated; left to stand_in_ttl");
    home.cell.settle(0, keys.len());
    false
}

/// Deletes `keys` on `node`, on a connection of its own, within its probe
/// timeout.
async fn delete<M: NodeManager, S: Store<M>>(node: &Node<M, S>, keys: &[Box<[u8]>]) -> Probe {
    let attempt = async {
        let mut conn = node.manager.connect().await.map_err(|e| failed(&e))?;
        let mut pipe = redis::pipe();
        for batch in keys.chunks(1_000) {
            pipe.cmd("DEL").arg(batch);
        }
        if let Some(conn) = redis_of(&mut conn) {
            conn.req_packed_commands(&pipe, 0, pipe.len()).await.map_err(|e| failed(&e))?;
        }
        Ok(())
    };
    judge(tokio::time::timeout(node.probe_timeout, attempt).await.ok(), node.probe_timeout)
}
