//! The prober, the pool's background task, and its schedule: it starts a
//! boxed node's probe when its wait runs out (the return itself, the
//! copies its stand-ins wrote deleted before it is let in, is
//! `comeback.rs`), ends warm-ups, samples the gauges, lets go of a drain
//! whose moves in doubt settled, and sends the heartbeats.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::health::pool_wide::PoolWide;
use crate::node::Store;
use crate::node::tracked::NodeManager;
use crate::runtime::comeback::{after_return, probe};
use crate::runtime::core::Core;

/// How often the prober samples the gauges.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// The prober: probes boxed nodes when their wait runs out, ends warm-ups,
/// each second samples the gauges (and lets go of a settled drain), and
/// each `heartbeat` checks the up nodes that did not answer meanwhile. It
/// holds only a `Weak` between rounds, so it stops once the pool is closed
/// or its last handle dropped (which wakes it).
pub(crate) async fn prober<M, S>(core: Weak<Core<M, S>>, pool_wide: Arc<PoolWide>)
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
                core.let_go_settled_drain();
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
            () = pool_wide.wake.notified() => {}
        }
    }
}
