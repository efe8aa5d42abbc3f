//! What the nodes of one pool have in common ([`PoolWide`]): the prober's
//! wake-up, the cascade guard, the events sender and the count of nodes
//! that are not settled, the pool's id in a fleet. Pool-wide; each node's cell holds a share.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use tokio::sync::{Notify, broadcast};

use crate::health::event::NodeEvent;
use crate::health::penalty::BoxGuard;

/// What the nodes of one pool have in common.
#[derive(Debug)]
pub(crate) struct PoolWide {
    /// Wakes the pool's prober: a node was boxed, a probe ended, the table
    /// changed, or the pool was closed or dropped.
    pub(crate) wake: Notify,
    /// The cascade guard.
    pub(crate) guard: BoxGuard,
    /// Every state change, for [`events`](crate::ShardedPool::events)
    /// receivers. Sending never waits; a lagging receiver loses the oldest.
    pub(crate) events: broadcast::Sender<NodeEvent>,
    /// Nodes boxed or warming up. While none is, routing sends every key
    /// home without reading any node's word: one load of a line that is
    /// written only when a node changes state.
    pub(crate) unsettled: AtomicUsize,
    /// The pool's random id in the fleet's messages.
    pub(crate) teller: u64,
}

impl PoolWide {
    pub(crate) fn new(guard: BoxGuard) -> Arc<Self> {
        crate::metrics::describe();
        let events = broadcast::channel(1024).0;
        let (wake, unsettled, teller) =
            (Notify::new(), AtomicUsize::new(0), crate::random::random());
        Arc::new(PoolWide { wake, guard, events, unsettled, teller })
    }

    pub(crate) fn send(&self, event: NodeEvent) {
        // No receiver is no error.
        let _ = self.events.send(event);
    }
}
