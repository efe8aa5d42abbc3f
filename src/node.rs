//! One node at run time: its bb8 pool, its live health, its checkout race
//! and its probe.
//!
//! The health decisions themselves live in [`crate::health`]; this module
//! puts them behind a lock, mirrors "up" into an atomic for the hot path and
//! wakes whoever must react to a change.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bb8::{PooledConnection, RunError};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::builder::Settings;
use crate::error::Error;
use crate::health::{FailureKind, Health, PenaltyPolicy, State, Transition};
use crate::manager::{ClassifyFailure, NodeManager, Tracked, TrackedConn};
use crate::metrics::NodeMetrics;
use crate::pool::NodeStatus;
use crate::shared::SharedSlot;

/// A number in `[0, 1)` for back-off jitter. std's `RandomState` is seeded
/// per process from the OS, which is all the randomness jitter needs.
fn jitter_sample() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let bits = RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// What the nodes of one pool share.
#[derive(Debug)]
pub(crate) struct PoolShared {
    /// Wakes the pool's background task: a node was boxed, a probe ended,
    /// or the pool was closed or dropped.
    pub(crate) wake: Notify,
    /// Nodes currently boxed.
    pub(crate) down: AtomicUsize,
    /// The cascade guard: at most this many nodes may be boxed at once
    /// (recomputed when nodes are added or removed).
    pub(crate) max_down: AtomicUsize,
}

impl PoolShared {
    /// Takes one of the `max_down` places in the box, if one is free.
    fn reserve_box(&self) -> bool {
        self.down
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |down| {
                (down < self.max_down.load(Ordering::Acquire)).then_some(down + 1)
            })
            .is_ok()
    }
}

/// A node's health as shared by its pool, its connections and the reaper.
pub(crate) struct NodeHealth {
    pub(crate) name: Arc<str>,
    /// Mirror of `state.is_up()`, read lock-free by routing.
    up: AtomicBool,
    /// Bumped each time the node is boxed. A connection remembers the epoch
    /// it was made in; once the node has been boxed, older connections are
    /// dropped and their failures ignored, so a node that comes back is not
    /// boxed again by sockets left over from before it died.
    epoch: AtomicU64,
    /// Set while a timeout streak is open, so that the common success path
    /// is one relaxed load and no lock.
    streak: AtomicBool,
    /// A probe of this node is in flight.
    probing: AtomicBool,
    /// The node has left its pool (removed, or the pool closed): nothing
    /// may box it or let it back in, so the pool's count of boxed nodes
    /// stays right.
    retired: AtomicBool,
    state: Mutex<Health>,
    policy: PenaltyPolicy,
    /// Wakes checkouts waiting on this node when it fails: boxed, or a
    /// connect that failed without boxing it.
    failed: Notify,
    /// Failures that should have boxed the node but did not, because the
    /// cascade guard's cap was reached; and the kind of the latest.
    vetoes: AtomicU64,
    last_veto: Mutex<Option<FailureKind>>,
    /// The error that boxed the node or that its latest probe saw, while
    /// it is boxed: for `status`, so operators see why.
    last_error: Mutex<Option<String>>,
    shared: Arc<PoolShared>,
    pub(crate) metrics: NodeMetrics,
}

impl fmt::Debug for NodeHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeHealth")
            .field("name", &self.name)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl NodeHealth {
    pub(crate) fn new(name: &str, policy: PenaltyPolicy, shared: Arc<PoolShared>) -> Self {
        let metrics = NodeMetrics::new(name);
        metrics.up.set(1.0);
        NodeHealth {
            name: name.into(),
            up: AtomicBool::new(true),
            epoch: AtomicU64::new(0),
            streak: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            state: Mutex::new(Health::up()),
            policy,
            failed: Notify::new(),
            vetoes: AtomicU64::new(0),
            last_veto: Mutex::new(None),
            last_error: Mutex::new(None),
            shared,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Health> {
        // Health updates never panic midway, so a poisoned lock still holds
        // a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A copy of the health state machine, for status reports.
    pub(crate) fn snapshot(&self) -> Health {
        self.lock().clone()
    }

    /// The node's health as reported by `status`, with its pool's figures.
    pub(crate) fn status(
        &self,
        weight: f64,
        connections: u32,
        idle_connections: u32,
        now: Instant,
    ) -> NodeStatus {
        let health = self.snapshot();
        let (boxed_for, failed_probes, penalty_wait) = match health.state() {
            State::Boxed {
                cause,
                failed_probes,
                stay,
                ..
            } => (Some(cause), failed_probes, Some(stay)),
            State::Up { .. } => (None, 0, None),
        };
        NodeStatus {
            name: self.name.to_string(),
            up: health.is_up(),
            weight,
            consecutive_timeouts: health.consecutive_timeouts(),
            boxed_for,
            failed_probes,
            penalty_wait,
            penalty_remaining: health.remaining(now),
            last_error: self.last_error(),
            connections,
            idle_connections,
        }
    }

    /// A future that completes when the node reports a failure after this
    /// call. Create it *before* checking [`is_up`](Self::is_up) so that no
    /// boxing can slip between the check and the wait.
    pub(crate) fn failure_signal(&self) -> Notified<'_> {
        self.failed.notified()
    }

    /// Something succeeded on a connection of `epoch`.
    #[inline]
    pub(crate) fn report_success(&self) {
        if self.streak.load(Ordering::Relaxed) {
            self.lock().on_success();
            self.streak.store(false, Ordering::Relaxed);
        }
    }

    /// A failure was seen on a connection made in `epoch`.
    pub(crate) fn report_failure(&self, kind: FailureKind, epoch: u64, detail: &dyn fmt::Display) {
        if epoch != self.epoch() {
            return; // about an earlier life of the node
        }
        self.metrics.failure(kind.as_str());
        let mut health = self.lock();
        if epoch != self.epoch() || self.is_retired() {
            return;
        }
        if health.would_box(kind, &self.policy) && !self.shared.reserve_box() {
            drop(health);
            self.veto(kind, detail);
            return;
        }
        match health.on_failure(kind, &self.policy, Instant::now(), jitter_sample()) {
            Transition::Boxed => {
                let wait = health.remaining(Instant::now()).unwrap_or_default();
                self.set_last_error(Some(detail.to_string()));
                self.enter_box(health);
                tracing::warn!(node = %self.name, failure = %kind, error = %detail, ?wait, "node boxed");
            }
            _ => {
                if kind.is_timeout() {
                    self.streak.store(true, Ordering::Relaxed);
                }
                drop(health);
                tracing::debug!(node = %self.name, failure = %kind, error = %detail, "node failure below threshold");
                // A checkout waiting on a connect that just failed would
                // otherwise wait out the whole checkout timeout.
                self.failed.notify_waiters();
            }
        }
    }

    /// The cascade guard kept the node in rotation despite a failure that
    /// would have boxed it: checkouts waiting on it give the caller an error.
    fn veto(&self, kind: FailureKind, detail: &dyn fmt::Display) {
        *self.last_veto.lock().unwrap_or_else(|e| e.into_inner()) = Some(kind);
        self.vetoes.fetch_add(1, Ordering::AcqRel);
        tracing::warn!(
            node = %self.name, failure = %kind, error = %detail,
            "node failed but stays in rotation: the cap on boxed nodes is reached"
        );
        self.failed.notify_waiters();
    }

    fn set_last_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// See [`NodeStatus::last_error`].
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many failures the cascade guard has kept from boxing the node.
    #[inline]
    pub(crate) fn vetoes(&self) -> u64 {
        self.vetoes.load(Ordering::Acquire)
    }

    /// Whether a connection made in `epoch` may be handed out (else it
    /// dates from before the node was last boxed: drop it, take another),
    /// counting the checkout that began at `started` if so.
    pub(crate) fn accept_checkout(&self, epoch: u64, started: Instant) -> bool {
        if epoch != self.epoch() {
            return false;
        }
        self.metrics.checkouts.increment(1);
        self.metrics.checkout_seconds.record(started.elapsed());
        true
    }

    /// Whether a checkout that began when [`vetoes`](Self::vetoes) was
    /// `vetoes` may go on: not if the node was boxed since (move to the next
    /// node), nor if a failure was vetoed since (the caller gets it).
    pub(crate) fn usable_since(&self, vetoes: u64) -> Result<(), CheckoutError> {
        if !self.is_up() {
            return Err(CheckoutError::Boxed);
        }
        if self.vetoes() != vetoes {
            return Err(CheckoutError::Failed(self.last_veto()));
        }
        Ok(())
    }

    /// The kind of the latest vetoed failure.
    pub(crate) fn last_veto(&self) -> FailureKind {
        self.last_veto
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(FailureKind::Connect)
    }

    /// Reports the outcome of one operation on a connection made in
    /// `epoch`; returns true if the connection saw a failure and must not
    /// be reused. An error reply that is no node failure (`WRONGTYPE`,
    /// `ERR ...`) proves the node answered, like a success.
    pub(crate) fn observe<T, E: ClassifyFailure>(&self, result: &Result<T, E>, epoch: u64) -> bool {
        match result
            .as_ref()
            .err()
            .and_then(|e| e.failure_kind().map(|k| (k, e)))
        {
            Some((kind, error)) => {
                self.report_failure(kind, epoch, error);
                true
            }
            None => {
                self.report_success();
                false
            }
        }
    }

    /// Puts a node that is down at start straight into the box (if the
    /// cascade guard allows).
    pub(crate) fn start_boxed(&self, kind: FailureKind, detail: &dyn fmt::Display) {
        let mut health = self.lock();
        if !health.is_up() || self.is_retired() {
            return;
        }
        if !self.shared.reserve_box() {
            drop(health);
            self.veto(kind, detail);
            return;
        }
        let strict = PenaltyPolicy {
            timeout_threshold: 1,
            ..self.policy
        };
        health.on_failure(kind, &strict, Instant::now(), jitter_sample());
        self.set_last_error(Some(detail.to_string()));
        self.metrics.failure(kind.as_str());
        self.enter_box(health);
        tracing::warn!(node = %self.name, failure = %kind, error = %detail, "node down at start; boxed");
    }

    /// Bookkeeping after `health` moved to boxed; releases the lock before
    /// waking anyone.
    fn enter_box(&self, health: MutexGuard<'_, Health>) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.up.store(false, Ordering::Release);
        self.streak.store(false, Ordering::Relaxed);
        drop(health);
        self.metrics.up.set(0.0);
        self.metrics.penalties.increment(1);
        self.failed.notify_waiters();
        self.shared.wake.notify_one();
    }

    /// When the next probe is due, if the node is boxed and no probe is in
    /// flight.
    pub(crate) fn probe_at(&self) -> Option<Instant> {
        if self.probing.load(Ordering::Acquire) {
            return None;
        }
        self.lock().probe_at()
    }

    /// Claims the right to probe; false if a probe is already in flight.
    pub(crate) fn start_probe(&self) -> bool {
        !self.probing.swap(true, Ordering::AcqRel)
    }

    /// Records a probe's outcome and releases the claim.
    pub(crate) fn finish_probe(&self, outcome: Result<(), (FailureKind, String)>) {
        let mut health = self.lock();
        if self.is_retired() {
            drop(health);
            self.probing.store(false, Ordering::Release);
            return;
        }
        match outcome {
            Ok(()) => {
                if health.on_probe_succeeded() == Transition::Returned {
                    self.up.store(true, Ordering::Release);
                    drop(health);
                    self.set_last_error(None);
                    self.shared.down.fetch_sub(1, Ordering::AcqRel);
                    self.metrics.up.set(1.0);
                    tracing::info!(node = %self.name, "node back in rotation");
                } else {
                    drop(health);
                }
                self.metrics.probe(true);
                tracing::debug!(node = %self.name, "probe succeeded");
            }
            Err((kind, detail)) => {
                health.on_probe_failed(kind, &self.policy, Instant::now(), jitter_sample());
                let wait = health.remaining(Instant::now()).unwrap_or_default();
                drop(health);
                self.set_last_error(Some(detail.clone()));
                self.metrics.probe(false);
                tracing::debug!(node = %self.name, failure = %kind, error = %detail, ?wait, "probe failed");
            }
        }
        self.probing.store(false, Ordering::Release);
        self.shared.wake.notify_one();
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// The node leaves the pool: a boxed node's place in the box is free
    /// again, and connections made so far are dropped instead of reused
    /// when they come back.
    pub(crate) fn retire(&self) {
        // Under the lock, so no report or probe result slips in between.
        let health = self.lock();
        if !self.retired.swap(true, Ordering::AcqRel) && !health.is_up() {
            self.shared.down.fetch_sub(1, Ordering::AcqRel);
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// Why a checkout from one node did not give a connection.
#[derive(Debug)]
pub(crate) enum CheckoutError {
    /// The node is in the box, or was boxed while we waited: try the next.
    Boxed,
    /// The node's pool stayed busy for the whole checkout timeout.
    TimedOut(Duration),
    /// A connect failed and the cascade guard kept the node in rotation:
    /// the failure goes to the caller.
    Failed(FailureKind),
}

impl CheckoutError {
    /// What the caller of `get` sees when a checkout from `node` ends so.
    pub(crate) fn into_error(self, node: &str) -> Error {
        let node = node.to_owned();
        match self {
            CheckoutError::Boxed => Error::NodeDown { node },
            CheckoutError::TimedOut(waited) => Error::Timeout { node, waited },
            CheckoutError::Failed(failure) => Error::NodeFailed { node, failure },
        }
    }
}

/// One node of a pool.
pub(crate) struct Node<M: NodeManager> {
    pub(crate) health: Arc<NodeHealth>,
    pub(crate) weight: f64,
    pub(crate) pool: bb8::Pool<Tracked<M>>,
    pub(crate) manager: Arc<M>,
    pub(crate) probe_timeout: Duration,
    /// The connection `get_shared` clones.
    pub(crate) shared: SharedSlot<M::Connection>,
}

impl<M: NodeManager> Node<M> {
    /// A node with its bb8 pool; nothing is connected yet.
    pub(crate) fn new(
        name: &str,
        weight: f64,
        manager: Arc<M>,
        settings: &Settings,
        shared: Arc<PoolShared>,
    ) -> Self {
        let health = Arc::new(NodeHealth::new(name, settings.policy, shared));
        let pool = bb8::Pool::builder()
            .max_size(settings.max_connections)
            .min_idle(settings.min_idle)
            .test_on_check_out(settings.test_on_checkout)
            .connection_timeout(settings.checkout_timeout)
            // Each failed connect must reach the penalty box, not be
            // retried quietly until the checkout times out.
            .retry_connection(false)
            .build_unchecked(Tracked {
                inner: manager.clone(),
                health: health.clone(),
            });
        Node {
            health,
            weight,
            pool,
            manager,
            probe_timeout: settings.probe_timeout,
            shared: SharedSlot::default(),
        }
    }

    /// Forgets the node: it leaves rotation for good, and its connections
    /// are dropped instead of reused as they come back.
    pub(crate) fn retire(&self) {
        self.health.retire();
    }
}

impl<M: NodeManager> fmt::Debug for Node<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.health.name)
            .field("weight", &self.weight)
            .field("up", &self.health.is_up())
            .finish_non_exhaustive()
    }
}

impl<M> Node<M>
where
    M: NodeManager,
{
    /// Checks a connection out by `deadline`, giving up the moment the node
    /// is boxed instead of waiting out bb8's timeout on a dead node.
    ///
    /// A connect that fails without boxing the node (a timeout below the
    /// threshold) makes the checkout ask bb8 again, which starts a new
    /// connect, until the deadline. `started` is when the caller's `get`
    /// began, for the latency metric and the error.
    pub(crate) async fn checkout(
        &self,
        started: Instant,
        deadline: Instant,
    ) -> Result<PooledConnection<'static, Tracked<M>>, CheckoutError> {
        let vetoes = self.health.vetoes();
        // bb8's own timeout (the checkout timeout) bounds an attempt that
        // starts as the `get` does; only a later one needs a timer of ours.
        // That keeps a timer registration off the common waiting path.
        let mut own_timer = started.elapsed() > Duration::from_millis(1);
        loop {
            let failed = self.health.failure_signal();
            self.health.usable_since(vetoes)?;
            let result = tokio::select! {
                biased;
                result = self.pool.get_owned() => result,
                () = failed => {
                    own_timer = true;
                    continue;
                }
                // In an async block, the timer is not even built unless used.
                () = async { tokio::time::sleep_until(deadline.into()).await }, if own_timer => {
                    return Err(CheckoutError::TimedOut(started.elapsed()));
                }
            };
            match result {
                Ok(mut conn) => {
                    if self.health.accept_checkout(conn.epoch, started) {
                        return Ok(conn);
                    }
                    conn.broken = true;
                    own_timer = true;
                }
                Err(RunError::TimedOut) => return Err(CheckoutError::TimedOut(started.elapsed())),
                // bb8 0.9 reports connect errors to its error sink, not here;
                // the manager wrapper has already told the node's health.
                Err(RunError::User(_)) => own_timer = true,
            }
        }
    }

    /// The node's health and pool as reported by `ShardedPool::status`.
    pub(crate) fn status(&self, now: Instant) -> NodeStatus {
        let pool = self.pool.state();
        self.health
            .status(self.weight, pool.connections, pool.idle_connections, now)
    }

    /// Connects and validates a fresh connection under the probe timeout;
    /// on success the connection joins the pool, warm.
    pub(crate) async fn probe(&self) -> Result<(), (FailureKind, String)> {
        let epoch = self.health.epoch();
        let attempt = async {
            let mut conn = self.manager.connect().await?;
            self.manager.is_valid(&mut conn).await?;
            Ok::<_, M::Error>(conn)
        };
        match tokio::time::timeout(self.probe_timeout, attempt).await {
            Ok(Ok(conn)) => {
                let conn = TrackedConn::new(conn, epoch, self.health.clone());
                // A full pool just means the connection is not needed.
                let _ = self.pool.add(conn);
                Ok(())
            }
            Ok(Err(e)) => Err((
                e.failure_kind().unwrap_or(FailureKind::Connect),
                e.to_string(),
            )),
            Err(_) => Err((
                FailureKind::Timeout,
                format!(
                    "no answer within the probe timeout of {:?}",
                    self.probe_timeout
                ),
            )),
        }
    }
}
