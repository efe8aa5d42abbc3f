//! When a call's checkouts began: the clock is read only once one must
//! wait, so an async checkout served at once (an idle connection, a live
//! shared one) costs no clock read and is counted as a wait of zero. (The
//! blocking flavour reads it at once: a blocking attempt cannot tell
//! beforehand whether it will wait.)

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The start and the deadline of one call's checkouts, shared by the
/// nodes it tries in turn and by the checkouts it runs at once.
#[derive(Debug)]
pub(crate) struct Clock {
    timeout: Duration,
    started: OnceLock<Instant>,
}

impl Clock {
    /// A call that must have its connection within `timeout` of its first
    /// wait.
    pub(crate) fn new(timeout: Duration) -> Self {
        Clock { timeout, started: OnceLock::new() }
    }

    /// When the call began to wait: now, the first time it is asked.
    pub(crate) fn started(&self) -> Instant {
        *self.started.get_or_init(Instant::now)
    }

    /// When its checkouts must be done.
    pub(crate) fn deadline(&self) -> Instant {
        self.started() + self.timeout
    }

    /// How long it has waited: zero if it never had to.
    pub(crate) fn waited(&self) -> Duration {
        self.started.get().map_or(Duration::ZERO, Instant::elapsed)
    }
}
