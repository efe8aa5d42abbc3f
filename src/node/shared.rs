//! A node's shared connection: the multiplexed connection `get_shared`
//! hands out clones of, whether it is still usable, and how the node
//! makes it (one caller connects, through the checkout race).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::node::Node;
use crate::node::clock::Clock;
use crate::node::learn::learn;
use crate::node::store::{CheckoutError, Store, Try};
use crate::node::tracked::NodeManager;

use crate::backend::near::NearCache;
use crate::health::cell::HealthCell;
use crate::health::failure::Failure;
use crate::node::warm::Resizing;

/// The node's multiplexed connection, cloned by `get_shared`.
pub(crate) struct SharedSocket<C> {
    pub(crate) conn: C,
    pub(crate) epoch: u64,
    /// Set by the first caller that sees it fail, or (with a near cache)
    /// when its socket closes; the next `get_shared` then connects afresh.
    broken: Arc<AtomicBool>,
    /// With a near cache: the node's, which this connection's tracking
    /// keeps true.
    pub(crate) near: Option<Arc<NearCache>>,
    pub(crate) cell: Arc<HealthCell>,
    /// The node's part in a resize: every command asks it.
    pub(crate) resize: Arc<Resizing>,
}

impl<C> SharedSocket<C> {
    pub(crate) fn new(
        conn: C,
        epoch: u64,
        broken: Arc<AtomicBool>,
        near: Option<Arc<NearCache>>,
        (cell, resize): (Arc<HealthCell>, Arc<Resizing>),
    ) -> Self {
        SharedSocket { conn, epoch, broken, near, cell, resize }
    }

    /// Whether it failed, or its socket closed.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Whether it is still usable: made since its node was last boxed, and
    /// not seen failing.
    pub(crate) fn is_live(&self) -> bool {
        self.epoch == self.cell.epoch() && !self.is_broken()
    }

    pub(crate) fn observe(&self, failure: Option<Failure<'_>>) {
        if self.cell.observe(failure, self.epoch) {
            self.broken.store(true, Ordering::Release);
        }
    }
}

/// A node's shared connection: the one `get_shared` hands out clones of.
impl<M: NodeManager, S: Store<M>> Node<M, S> {
    /// The node's multiplexed connection if it is usable
    /// ([`SharedSocket::is_live`]).
    pub(super) fn live_mux(&self) -> Option<Arc<SharedSocket<M::Connection>>> {
        self.shared.mux.load_full().filter(|mux| mux.is_live())
    }

    /// The node's multiplexed connection, connecting it first if needed
    /// (one caller connects, the others wait for it), through the checkout
    /// race: a connect to a node that is boxed meanwhile is left at once.
    /// Counted as a checkout.
    pub(crate) async fn multiplexed(
        &self,
        clock: &Clock,
    ) -> Result<Arc<SharedSocket<M::Connection>>, CheckoutError> {
        let mux = match self.live_mux().filter(|_| self.cell.is_up()) {
            Some(mux) => mux,
            // Boxed: the connect's future is large, and the common path
            // should not carry (and move) it.
            None => {
                Box::pin(self.race(clock, true, false, || self.connect_mux(), |tried| tried))
                    .await?
            }
        };
        self.cell.metrics.checkout(clock.waited());
        Ok(mux)
    }

    async fn connect_mux(&self) -> Try<Arc<SharedSocket<M::Connection>>> {
        if let Some(mux) = self.live_mux() {
            return Try::Done(mux);
        }
        let _connecting = self.shared.connecting.lock().await;
        if let Some(mux) = self.live_mux() {
            return Try::Done(mux);
        }
        let (epoch, mut ask) = (self.cell.epoch(), true);
        let (conn, broken) = loop {
            let broken = Arc::new(AtomicBool::new(false));
            let connected = match (&self.shared.tracking, &self.shared.near) {
                (Some(track), Some(near)) => (track.connect)(near.clone(), broken.clone()).await,
                _ => self.manager.connect().await,
            };
            let Ok(mut conn) = self.cell.connected(epoch, connected) else { return Try::Retry };
            // One whose `COMMAND` went unanswered goes: a fresh one, not asked.
            if !ask || learn(&mut conn, &self.cell, epoch, self.beat.0).await {
                break (conn, broken);
            }
            ask = false;
        };
        let near = self.shared.near.clone();
        // What the entries were kept true by is gone: start empty.
        if let Some(near) = &near {
            near.clear();
        }
        let owner = (self.cell.clone(), self.resize.clone());
        let mux = Arc::new(SharedSocket::new(conn, epoch, broken, near, owner));
        self.shared.mux.store(Some(mux.clone()));
        Try::Done(mux)
    }
}
