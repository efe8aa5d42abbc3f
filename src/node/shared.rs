//! A node's shared connection: the multiplexed connection `get_shared`
//! hands out clones of, and whether it is still usable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
