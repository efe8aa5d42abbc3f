//! The pool's background task: probes boxed nodes when their wait runs out
//! and samples the nodes' pool gauges.
//!
//! It holds only a `Weak` reference to the pool between rounds, so it stops
//! once the last `ShardedPool` handle is dropped (the pool wakes it on drop).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::manager::NodeManager;
use crate::node::{Node, PoolShared};
use crate::pool::{Inner, Table};

/// How often the connection gauges are sampled.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) fn spawn<M>(pool: &Arc<Inner<M>>) -> tokio::task::JoinHandle<()>
where
    M: NodeManager,
{
    let weak = Arc::downgrade(pool);
    let shared = pool.shared.clone();
    tokio::spawn(run(weak, shared))
}

async fn run<M>(pool: Weak<Inner<M>>, shared: Arc<PoolShared>)
where
    M: NodeManager,
{
    let mut next_gauges = Instant::now();
    loop {
        let deadline = {
            let Some(pool) = pool.upgrade().filter(|p| !p.is_closed()) else {
                tracing::debug!("pool dropped or closed; background task stops");
                return;
            };
            let table = pool.table.load();
            let now = Instant::now();
            if now >= next_gauges {
                sample_gauges(&table);
                next_gauges = now + GAUGE_INTERVAL;
            }
            let mut deadline = next_gauges;
            for node in &table.nodes {
                match node.health.probe_at() {
                    Some(at) if at > now => deadline = deadline.min(at),
                    Some(_) => spawn_probe(node.clone()),
                    None => {}
                }
            }
            deadline
            // `pool` is dropped here: never hold it across the wait.
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {}
            () = shared.wake.notified() => {}
        }
    }
}

/// Probes `node` in a task of its own, unless a probe is already in flight.
/// The task holds the node, not the pool, and ends within the probe timeout.
fn spawn_probe<M: NodeManager>(node: Arc<Node<M>>) {
    if node.health.start_probe() {
        tokio::spawn(async move {
            let outcome = node.probe().await;
            node.health.finish_probe(outcome);
        });
    }
}

fn sample_gauges<M: NodeManager>(table: &Table<M>) {
    for node in &table.nodes {
        let state = node.pool.state();
        let metrics = &node.health.metrics;
        metrics.connections.set(f64::from(state.connections));
        metrics
            .idle_connections
            .set(f64::from(state.idle_connections));
    }
}

#[cfg(test)]
mod tests {
    use crate::ShardedPool;
    use std::time::Duration;

    /// A pool whose only node is unreachable keeps its background task busy
    /// probing; dropping the pool must still end the task.
    #[tokio::test]
    async fn dropping_the_last_handle_stops_the_task() {
        // Port 1 on loopback: nothing listens there, connects are refused.
        let pool = ShardedPool::builder()
            .node("redis://127.0.0.1:1")
            .penalty_min_wait(Duration::from_millis(5))
            .penalty_max_wait(Duration::from_millis(20))
            .build()
            .await
            .unwrap();
        assert!(!pool.status()[0].up);
        let weak = pool.downgrade();
        let handle = super::spawn(&weak.upgrade().unwrap());
        let clone = pool.clone();
        drop(pool);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!handle.is_finished(), "a clone still holds the pool");
        drop(clone);
        tokio::time::timeout(Duration::from_secs(2), handle)
            .await
            .expect("background task did not stop after the pool was dropped")
            .unwrap();
        assert!(weak.upgrade().is_none());
    }

    /// `close` stops the task too, while handles remain.
    #[tokio::test]
    async fn closing_stops_the_task() {
        let pool = ShardedPool::builder()
            .node("redis://127.0.0.1:1")
            .penalty_min_wait(Duration::from_millis(5))
            .penalty_max_wait(Duration::from_millis(20))
            .build()
            .await
            .unwrap();
        let handle = super::spawn(&pool.downgrade().upgrade().unwrap());
        pool.close();
        tokio::time::timeout(Duration::from_secs(2), handle)
            .await
            .expect("background task did not stop after close")
            .unwrap();
        assert!(pool.is_closed());
    }
}
