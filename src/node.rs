//! One node at run time: its pool, a thin health cell, the one checkout
//! race, the one connect-and-report, its multiplexed connection and its
//! probe.
//!
//! Every health decision is [`Health`]'s; a [`HealthCell`] only locks it,
//! asks, and applies the verdict: it mirrors the routing flag and epoch into
//! one atomic word for the hot path, counts, logs and wakes.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bb8::{ManageConnection, PooledConnection, RunError};
use futures_util::FutureExt;
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, broadcast};

use crate::error::Error;
use crate::health::{
    BoxGuard, ClassifyFailure, FailureKind, Health, Moment, PenaltyPolicy, Probed, State, Verdict,
};
use crate::metrics::{NodeMetrics, PoolStats};
use crate::route::{NodeName, warm_threshold};
use crate::session::Session;
use crate::settings::Settings;

/// A bb8 connection manager the pool can shard: any [`ManageConnection`]
/// whose error implements [`ClassifyFailure`]. Implemented automatically;
/// it only names that pair of bounds.
pub trait NodeManager: ManageConnection<Error: ClassifyFailure> {}

impl<M: ManageConnection<Error: ClassifyFailure>> NodeManager for M {}

/// A failure as reported: its kind and what to log.
pub(crate) type Failure<'a> = (FailureKind, &'a dyn fmt::Display);

/// A number in `[0, 1)` for back-off jitter. std's `RandomState` is seeded
/// per process from the OS, which is all the randomness jitter needs.
fn moment() -> Moment {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let bits = RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
    Moment { now: Instant::now(), random: (bits >> 11) as f64 / (1u64 << 53) as f64 }
}

/// What the nodes of one pool have in common.
#[derive(Debug)]
pub(crate) struct Fleet {
    /// Wakes the pool's prober: a node was boxed, a probe ended, the table
    /// changed, or the pool was closed or dropped.
    pub(crate) wake: Notify,
    /// The cascade guard.
    pub(crate) guard: BoxGuard,
    /// Every state change, for [`events`](crate::ShardedPool::events)
    /// receivers. Sending never waits; a lagging receiver loses the oldest.
    pub(crate) events: broadcast::Sender<NodeEvent>,
}

impl Fleet {
    pub(crate) fn new(guard: BoxGuard) -> Self {
        Fleet { wake: Notify::new(), guard, events: broadcast::channel(1024).0 }
    }

    pub(crate) fn send(&self, event: NodeEvent) {
        // No receiver is no error.
        let _ = self.events.send(event);
    }
}

/// A change in a node's state, from [`events`](crate::ShardedPool::events).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The node entered the penalty box.
    #[non_exhaustive]
    Boxed {
        /// The node.
        node: NodeName,
        /// The failure that boxed it.
        kind: FailureKind,
        /// How long before it is probed.
        wait: Duration,
        /// The back-off level of this stay (above 0 for a node that flaps).
        level: u32,
    },
    /// A probe of the boxed node failed; it stays boxed for `wait` more.
    #[non_exhaustive]
    ProbeFailed {
        /// The node.
        node: NodeName,
        /// What the probe saw.
        kind: FailureKind,
        /// How long before the next probe.
        wait: Duration,
    },
    /// The node answered a probe and is back in rotation (its keys come
    /// home over the warm-up, if there is one).
    #[non_exhaustive]
    Returned {
        /// The node.
        node: NodeName,
    },
    /// The node's warm-up is over: all its keys go to it again.
    #[non_exhaustive]
    Warm {
        /// The node.
        node: NodeName,
    },
    /// The node joined the pool.
    #[non_exhaustive]
    Added {
        /// The node.
        node: NodeName,
    },
    /// The node left the pool.
    #[non_exhaustive]
    Removed {
        /// The node.
        node: NodeName,
    },
}

/// Bits of [`HealthCell`]'s word: `epoch << 3 | WARM | STREAK | BOXED`.
const BOXED: u64 = 1;
const STREAK: u64 = 2;
const WARM: u64 = 4;
const EPOCH_SHIFT: u32 = 3;

/// Nanoseconds since the first call: how warm-up starts are kept in atomics.
fn nanos(at: Instant) -> u64 {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

/// A node's health as shared by its pool, its connections and the prober.
pub(crate) struct HealthCell {
    pub(crate) name: NodeName,
    /// The mirror of [`Health`] that the hot path reads without a lock:
    /// boxed or not, a timeout streak open or not, warming or not, and the
    /// epoch.
    word: AtomicU64,
    /// While warming: when the warm-up began (see [`nanos`]).
    warm_from: AtomicU64,
    /// Failures the cascade guard kept from boxing the node: a checkout
    /// that sees this move gives its caller the failure.
    vetoes: AtomicU64,
    health: Mutex<Health>,
    policy: PenaltyPolicy,
    /// Wakes checkouts waiting on this node when it fails.
    failed: Notify,
    fleet: Arc<Fleet>,
    pub(crate) metrics: NodeMetrics,
}

impl fmt::Debug for HealthCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthCell")
            .field("name", &self.name)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl HealthCell {
    fn new(name: &str, policy: PenaltyPolicy, fleet: Arc<Fleet>) -> Self {
        HealthCell {
            name: name.into(),
            word: AtomicU64::new(0),
            warm_from: AtomicU64::new(0),
            vetoes: AtomicU64::new(0),
            health: Mutex::new(Health::up()),
            policy,
            failed: Notify::new(),
            fleet,
            metrics: NodeMetrics::new(name),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Health> {
        // Health's methods never panic midway, so a poisoned lock still
        // holds a consistent state.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mirrors `health` into the word; called under its lock.
    fn publish(&self, health: &Health) {
        let streak = if health.consecutive_timeouts() > 0 { STREAK } else { 0 };
        let boxed = if health.is_up() { 0 } else { BOXED };
        let warm = match health.warming() {
            Some(from) => {
                self.warm_from.store(nanos(from), Ordering::Release);
                WARM
            }
            None => 0,
        };
        let word = health.epoch() << EPOCH_SHIFT | warm | streak | boxed;
        self.word.store(word, Ordering::Release);
    }

    #[inline]
    pub(crate) fn is_up(&self) -> bool {
        self.word.load(Ordering::Acquire) & BOXED == 0
    }

    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.word.load(Ordering::Acquire) >> EPOCH_SHIFT
    }

    /// Whether routing may send the key of `hash` here: the node is up and,
    /// if it is warming up and `warm` asks for slow start, the key's turn
    /// to come home has come. Outside warm-ups, one load of the word.
    #[inline]
    pub(crate) fn routable(&self, hash: u64, warm: bool) -> bool {
        let word = self.word.load(Ordering::Acquire);
        if word & (BOXED | WARM) != WARM {
            return word & BOXED == 0;
        }
        let elapsed = nanos(Instant::now()).saturating_sub(self.warm_from.load(Ordering::Acquire));
        let fraction = elapsed as f64 / self.policy.warmup.as_nanos() as f64;
        !warm || warm_threshold(hash) < fraction
    }

    /// When the running warm-up ends.
    pub(crate) fn warm_until(&self) -> Option<Instant> {
        (self.word.load(Ordering::Acquire) & WARM != 0)
            .then(|| self.lock().warming().map(|from| from + self.policy.warmup))
            .flatten()
    }

    /// Starts a warm-up (the node joined a running pool).
    pub(crate) fn start_warmup(&self) {
        let mut health = self.lock();
        health.start_warmup(Instant::now(), &self.policy);
        self.publish(&health);
    }

    /// Ends the warm-up if its window has passed.
    pub(crate) fn end_warmup(&self) {
        let mut health = self.lock();
        let ended = health.end_warmup(Instant::now(), &self.policy);
        self.publish(&health);
        drop(health);
        if ended {
            self.fleet.send(NodeEvent::Warm { node: self.name.clone() });
            tracing::info!(node = %self.name, "node warmed up: all its keys are home");
        }
    }

    /// A future that completes when the node reports a failure after this
    /// call. Create it *before* looking at the node, so that no failure can
    /// slip between the look and the wait.
    fn failure_signal(&self) -> Notified<'_> {
        self.failed.notified()
    }

    /// Something succeeded: a timeout streak, if one is open, is over. The
    /// common case is one relaxed load and no lock.
    #[inline]
    pub(crate) fn report_success(&self) {
        if self.word.load(Ordering::Relaxed) & STREAK != 0 {
            let mut health = self.lock();
            health.on_success();
            self.publish(&health);
        }
    }

    /// A failure was seen on a connection made in `epoch` (`at_once`: at
    /// start, where one timeout is enough). Asks [`Health`] and applies its
    /// verdict.
    pub(crate) fn report(&self, failure: Failure<'_>, epoch: u64, at_once: bool) -> Verdict {
        let (kind, detail) = failure;
        if epoch != self.epoch() {
            return Verdict::Stale; // about an earlier life of the node
        }
        self.metrics.failure(kind);
        let at = moment();
        let mut health = self.lock();
        let verdict = health.on_failure(kind, epoch, at_once, &self.fleet.guard, &self.policy, at);
        match verdict {
            Verdict::Boxed => health.set_last_error(detail.to_string()),
            Verdict::Vetoed => drop(self.vetoes.fetch_add(1, Ordering::AcqRel)),
            _ => {}
        }
        self.publish(&health);
        let wait = health.remaining(at.now);
        let level = health.level(at.now, &self.policy);
        drop(health);
        let node = &self.name;
        match verdict {
            Verdict::Stale => return verdict,
            Verdict::Boxed => {
                self.metrics.up.set(0.0);
                self.metrics.penalties.increment(1);
                let wait = wait.unwrap_or_default();
                self.fleet.send(NodeEvent::Boxed { node: node.clone(), kind, wait, level });
                self.fleet.wake.notify_one();
                if at_once {
                    tracing::warn!(%node, failure = %kind, error = %detail, ?wait, level, "node down at start; boxed");
                } else {
                    tracing::warn!(%node, failure = %kind, error = %detail, ?wait, level, "node boxed");
                }
            }
            Verdict::Vetoed => tracing::warn!(
                %node, failure = %kind, error = %detail,
                "node failed but stays in rotation: the cap on boxed nodes is reached"
            ),
            Verdict::Counted => {
                tracing::debug!(%node, failure = %kind, error = %detail, "node failure counted");
            }
        }
        // A checkout waiting on a connect that just failed would otherwise
        // wait out the whole checkout timeout.
        self.failed.notify_waiters();
        verdict
    }

    /// Reports an operation's outcome on a connection of `epoch`: its
    /// failure, if it showed one, else a success. Returns whether the
    /// connection must not be reused.
    pub(crate) fn observe(&self, failure: Option<Failure<'_>>, epoch: u64) -> bool {
        match failure {
            Some(failure) => {
                self.report(failure, epoch, false);
                true
            }
            None => {
                self.report_success();
                false
            }
        }
    }

    /// The one connect-and-report: reports a connect's outcome, made when
    /// the node was in `epoch`, and hands it on.
    pub(crate) fn connected<C, E: ClassifyFailure>(
        &self,
        epoch: u64,
        result: Result<C, E>,
    ) -> Result<C, E> {
        match &result {
            Ok(_) => self.report_success(),
            Err(e) => drop(self.report(connect_failure(e), epoch, false)),
        }
        result
    }

    /// Whether a connection made in `epoch` may be handed out (else it
    /// dates from before the node was last boxed: drop it, take another),
    /// counting the checkout that began at `started` if so.
    pub(crate) fn accept(&self, epoch: u64, started: Instant) -> bool {
        if epoch != self.epoch() {
            return false;
        }
        self.metrics.checkouts.increment(1);
        self.metrics.checkout_seconds.record(started.elapsed());
        true
    }

    pub(crate) fn vetoes(&self) -> u64 {
        self.vetoes.load(Ordering::Acquire)
    }

    /// Whether a checkout that began when [`vetoes`](Self::vetoes) was
    /// `vetoes` may go on: not if the node is boxed (move to the next
    /// node), nor if a failure was vetoed since (the caller gets it).
    pub(crate) fn usable_since(&self, vetoes: u64) -> Result<(), CheckoutError> {
        if !self.is_up() {
            return Err(CheckoutError::Boxed);
        }
        if self.vetoes() != vetoes {
            let kind = self.lock().last_veto().unwrap_or(FailureKind::Connect);
            return Err(CheckoutError::Failed(kind));
        }
        Ok(())
    }

    /// When the next probe is due, if boxed and none is in flight.
    pub(crate) fn probe_at(&self) -> Option<Instant> {
        self.lock().probe_at()
    }

    /// Claims the probe if it is due.
    pub(crate) fn start_probe(&self) -> bool {
        self.lock().start_probe(Instant::now())
    }

    /// Records a claimed probe's outcome.
    pub(crate) fn finish_probe(&self, outcome: Result<(), (FailureKind, String)>) {
        let seen = outcome.as_ref().err().cloned();
        let at = moment();
        let mut health = self.lock();
        let probed = health.finish_probe(outcome, &self.fleet.guard, &self.policy, at);
        self.publish(&health);
        let wait = health.remaining(at.now);
        drop(health);
        let node = &self.name;
        match (probed, seen) {
            (Probed::Returned, _) => {
                self.metrics.up.set(1.0);
                self.metrics.probe(true);
                self.fleet.send(NodeEvent::Returned { node: node.clone() });
                tracing::info!(%node, "node back in rotation");
            }
            (Probed::Failed, Some((kind, error))) => {
                self.metrics.probe(false);
                let wait = wait.unwrap_or_default();
                self.fleet.send(NodeEvent::ProbeFailed { node: node.clone(), kind, wait });
                tracing::debug!(%node, failure = %kind, %error, ?wait, "probe failed");
            }
            _ => {}
        }
        self.fleet.wake.notify_one();
    }

    /// The node leaves its pool for good.
    pub(crate) fn retire(&self) {
        let mut health = self.lock();
        health.retire(&self.fleet.guard);
        self.publish(&health);
    }
}

/// What a failed connect reports: every connect error is a failure.
fn connect_failure<E: ClassifyFailure>(e: &E) -> Failure<'_> {
    (e.failure_kind().unwrap_or(FailureKind::Connect), e)
}

/// A connection with what the pool needs to judge it.
pub(crate) struct TrackedConn<C> {
    pub(crate) conn: C,
    /// The node's epoch when the connection was made.
    pub(crate) epoch: u64,
    /// Set once the connection saw a failure; the pool then drops it.
    pub(crate) broken: bool,
    /// Set while a command is in flight: if its future is dropped before
    /// the reply comes, the reply would go to the next caller, so the pool
    /// drops the connection. Not a failure of the node.
    pub(crate) in_flight: bool,
    /// What the caller's commands left behind (an open `MULTI`, a `SELECT`
    /// ...): a connection whose session changed is dropped, not handed on.
    pub(crate) session: Session,
    pub(crate) cell: Arc<HealthCell>,
}

impl<C> TrackedConn<C> {
    pub(crate) fn new(conn: C, epoch: u64, cell: Arc<HealthCell>) -> Self {
        TrackedConn {
            conn,
            epoch,
            broken: false,
            in_flight: false,
            session: Session::default(),
            cell,
        }
    }

    /// Reports an operation's outcome on this connection.
    pub(crate) fn observe(&mut self, failure: Option<Failure<'_>>) {
        self.broken |= self.cell.observe(failure, self.epoch);
    }

    /// Whether the pool must drop it rather than reuse it.
    pub(crate) fn is_spent(&self) -> bool {
        self.broken || self.in_flight || !self.session.is_clean() || self.epoch != self.cell.epoch()
    }
}

impl<C> Deref for TrackedConn<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.conn
    }
}

impl<C> DerefMut for TrackedConn<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}

/// `M` with its outcomes reported to the node's health: every node's bb8
/// pool manages this instead of the user's `M`, so connect failures reach
/// the penalty box although bb8 never returns them to a caller.
pub(crate) struct Tracked<M> {
    pub(crate) inner: Arc<M>,
    pub(crate) cell: Arc<HealthCell>,
}

impl<M> fmt::Debug for Tracked<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked").field("node", &self.cell.name).finish_non_exhaustive()
    }
}

impl<M: NodeManager> ManageConnection for Tracked<M> {
    type Connection = TrackedConn<M::Connection>;
    type Error = M::Error;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let epoch = self.cell.epoch();
        let conn = self.cell.connected(epoch, self.inner.connect().await)?;
        Ok(TrackedConn::new(conn, epoch, self.cell.clone()))
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        let result = self.inner.is_valid(&mut conn.conn).await;
        if let Err(e) = &result {
            conn.observe(Some(connect_failure(e)));
        }
        result
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.is_spent() || self.inner.has_broken(&mut conn.conn)
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
    /// What the caller sees when a checkout from `node` ends so.
    pub(crate) fn into_error(self, node: &str) -> Error {
        let node = node.to_owned();
        match self {
            CheckoutError::Boxed => Error::NodeDown { node },
            CheckoutError::TimedOut(waited) => Error::Timeout { node, waited },
            CheckoutError::Failed(failure) => Error::NodeFailed { node, failure },
        }
    }
}

/// One attempt of a checkout race.
pub(crate) enum Try<T> {
    /// Here it is.
    Done(T),
    /// Nothing yet (a connect failed below the threshold, a connection was
    /// stale): look at the node again and retry.
    Again,
    /// The attempt's own timeout ran out.
    TimedOut,
}

/// Where a node's connections live: a bb8 pool, or the synchronous
/// flavour's r2d2 pool.
pub(crate) trait Store<M: NodeManager>: Send + Sync + 'static {
    /// What the store holds and has done.
    fn stats(&self) -> PoolStats;
    /// Takes a connection a successful probe made, if it has room.
    fn adopt(&self, conn: TrackedConn<M::Connection>);
    /// Closes the idle connections now (the node was boxed: their sockets
    /// must not hold the server's client slots while it is probed).
    fn release(&self);
}

/// A node's bb8 pool.
pub(crate) type Bb8<M> = bb8::Pool<Tracked<M>>;

impl<M: NodeManager> Store<M> for Bb8<M> {
    fn stats(&self) -> PoolStats {
        let state = self.state();
        let s = state.statistics;
        PoolStats {
            connections: state.connections,
            idle_connections: state.idle_connections,
            checkouts_waited: s.get_waited,
            checkouts_timed_out: s.get_timed_out,
            closed_broken: s.connections_closed_broken + s.connections_closed_invalid,
            closed_idle: s.connections_closed_idle_timeout,
            closed_lifetime: s.connections_closed_max_lifetime,
        }
    }

    fn adopt(&self, conn: TrackedConn<M::Connection>) {
        // A full pool just means the connection is not needed.
        let _ = self.add(conn);
    }

    fn release(&self) {
        // bb8 has no way to drop its idle connections, but hands them out
        // without waiting: take each and mark it broken, and bb8 drops it.
        while self.state().idle_connections > 0 {
            match self.get().now_or_never() {
                Some(Ok(mut conn)) => conn.broken = true,
                _ => break,
            }
        }
    }
}

/// The node's multiplexed connection, cloned by `get_shared`.
pub(crate) struct Muxed<C> {
    /// Behind a lock only so the pool stays `Sync` for connections that are
    /// `Send` but not `Sync`; held just long enough to clone.
    conn: Mutex<C>,
    pub(crate) epoch: u64,
    /// Set by the first caller that sees it fail; the next `get_shared`
    /// then connects afresh.
    broken: AtomicBool,
    pub(crate) cell: Arc<HealthCell>,
}

impl<C: Clone> Muxed<C> {
    pub(crate) fn clone_conn(&self) -> C {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl<C> Muxed<C> {
    pub(crate) fn observe(&self, failure: Option<Failure<'_>>) {
        if self.cell.observe(failure, self.epoch) {
            self.broken.store(true, Ordering::Release);
        }
    }
}

/// One node of a pool.
pub(crate) struct Node<M: NodeManager, S> {
    pub(crate) cell: Arc<HealthCell>,
    pub(crate) weight: f64,
    pub(crate) store: S,
    pub(crate) manager: Arc<M>,
    probe_timeout: Duration,
    mux: ArcSwapOption<Muxed<M::Connection>>,
    /// Lets one caller connect the multiplexed connection while the others
    /// wait for its result.
    connecting: tokio::sync::Mutex<()>,
}

impl<M: NodeManager, S> fmt::Debug for Node<M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.cell.name)
            .field("weight", &self.weight)
            .field("up", &self.cell.is_up())
            .finish_non_exhaustive()
    }
}

/// The bb8 pool of a node of the async flavour.
pub(crate) fn bb8_pool<M: NodeManager>(settings: &Settings, manager: Tracked<M>) -> Bb8<M> {
    bb8::Pool::builder()
        .max_size(settings.max_connections)
        .min_idle(settings.min_idle)
        .idle_timeout(settings.idle_timeout)
        .max_lifetime(settings.max_lifetime)
        .test_on_check_out(settings.test_on_checkout)
        .connection_timeout(settings.checkout_timeout)
        // Each failed connect must reach the penalty box, not be retried
        // quietly until the checkout times out.
        .retry_connection(false)
        .build_unchecked(manager)
}

impl<M: NodeManager, S: Store<M>> Node<M, S> {
    /// A node whose connections live in what `store` makes of its tracked
    /// manager; nothing is connected yet.
    pub(crate) fn new(
        name: &str,
        weight: f64,
        manager: Arc<M>,
        settings: &Settings,
        fleet: Arc<Fleet>,
        store: impl FnOnce(Tracked<M>) -> S,
    ) -> Self {
        let cell = Arc::new(HealthCell::new(name, settings.policy, fleet));
        let tracked = Tracked { inner: manager.clone(), cell: cell.clone() };
        Node {
            cell,
            weight,
            store: store(tracked),
            manager,
            probe_timeout: settings.probe_timeout,
            mux: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn name(&self) -> &NodeName {
        &self.cell.name
    }

    /// The one checkout race: runs `attempt` until it gives a value, giving
    /// up the moment the node is boxed (move on), a failure is vetoed (the
    /// caller gets it) or `deadline` passes. With `timer` false the first
    /// attempt is trusted to time out by itself, which keeps a timer
    /// registration off the common path.
    pub(crate) async fn race<T, F>(
        &self,
        started: Instant,
        deadline: Instant,
        mut timer: bool,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, CheckoutError>
    where
        F: Future<Output = Try<T>>,
    {
        let vetoes = self.cell.vetoes();
        loop {
            let failed = self.cell.failure_signal();
            self.cell.usable_since(vetoes)?;
            let outcome = tokio::select! {
                biased;
                outcome = attempt() => outcome,
                () = failed => Try::Again,
                // In an async block, the timer is not even built unless used.
                () = async { tokio::time::sleep_until(deadline.into()).await }, if timer => {
                    Try::TimedOut
                }
            };
            match outcome {
                Try::Done(value) => return Ok(value),
                Try::TimedOut => return Err(CheckoutError::TimedOut(started.elapsed())),
                Try::Again => timer = true,
            }
        }
    }

    /// Closes what the node holds while it is boxed: idle pooled
    /// connections and the multiplexed connection (checked-out ones close
    /// when they come back, their epoch being past).
    pub(crate) fn release(&self) {
        self.store.release();
        self.mux.store(None);
    }

    /// The node's status, with its store's figures.
    pub(crate) fn status(&self, now: Instant) -> NodeStatus {
        let pool = self.store.stats();
        let health = self.cell.lock().clone();
        let policy = &self.cell.policy;
        let (boxed_for, failed_probes, penalty_wait) = match health.state() {
            State::Boxed { cause, failed_probes, stay, .. } => {
                (Some(cause), failed_probes, Some(stay))
            }
            State::Up { .. } => (None, 0, None),
        };
        NodeStatus {
            name: self.cell.name.to_string(),
            up: health.is_up(),
            weight: self.weight,
            consecutive_timeouts: health.consecutive_timeouts(),
            boxed_for,
            failed_probes,
            penalty_wait,
            penalty_remaining: health.remaining(now),
            penalties: health.penalties(),
            penalty_level: health.level(now, policy),
            warmup: health.warmed(now, policy),
            last_error: health.last_error().map(str::to_owned),
            connections: pool.connections,
            idle_connections: pool.idle_connections,
            pool,
        }
    }

    /// Connects and validates a fresh connection under the probe timeout;
    /// on success the store may keep it, warm.
    pub(crate) async fn probe(&self) -> Result<(), (FailureKind, String)> {
        let epoch = self.cell.epoch();
        let attempt = async {
            let mut conn = self.manager.connect().await?;
            self.manager.is_valid(&mut conn).await?;
            Ok::<_, M::Error>(conn)
        };
        match tokio::time::timeout(self.probe_timeout, attempt).await {
            Ok(Ok(conn)) => {
                self.store.adopt(TrackedConn::new(conn, epoch, self.cell.clone()));
                Ok(())
            }
            Ok(Err(e)) => Err((connect_failure(&e).0, e.to_string())),
            Err(_) => Err((
                FailureKind::Timeout,
                format!("no answer within the probe timeout of {:?}", self.probe_timeout),
            )),
        }
    }

    /// The node's multiplexed connection if it is usable: made since the
    /// node was last boxed, and not seen failing.
    fn live_mux(&self) -> Option<Arc<Muxed<M::Connection>>> {
        let mux = self.mux.load_full()?;
        let live = mux.epoch == self.cell.epoch() && !mux.broken.load(Ordering::Acquire);
        live.then_some(mux)
    }

    /// The node's multiplexed connection, connecting it first if needed
    /// (one caller connects, the others wait for it), through the checkout
    /// race: a connect to a node that is boxed meanwhile is left at once.
    pub(crate) async fn multiplexed(
        &self,
        started: Instant,
        deadline: Instant,
    ) -> Result<Arc<Muxed<M::Connection>>, CheckoutError> {
        if let Some(mux) = self.live_mux().filter(|_| self.cell.is_up()) {
            return Ok(mux);
        }
        self.race(started, deadline, true, || async {
            if let Some(mux) = self.live_mux() {
                return Try::Done(mux);
            }
            let _connecting = self.connecting.lock().await;
            if let Some(mux) = self.live_mux() {
                return Try::Done(mux);
            }
            let epoch = self.cell.epoch();
            match self.cell.connected(epoch, self.manager.connect().await) {
                Ok(conn) => {
                    let mux = Arc::new(Muxed {
                        conn: Mutex::new(conn),
                        epoch,
                        broken: AtomicBool::new(false),
                        cell: self.cell.clone(),
                    });
                    self.mux.store(Some(mux.clone()));
                    Try::Done(mux)
                }
                Err(_) => Try::Again,
            }
        })
        .await
    }
}

impl<M: NodeManager> Node<M, Bb8<M>> {
    /// A connection from the node's bb8 pool by `deadline`, through the
    /// checkout race. `started` is when the caller's `get` began, for the
    /// latency metric and the error.
    pub(crate) async fn checkout(
        &self,
        started: Instant,
        deadline: Instant,
    ) -> Result<PooledConnection<'static, Tracked<M>>, CheckoutError> {
        // bb8's own timeout (the checkout timeout) bounds an attempt that
        // starts as the `get` does; only a later one needs a timer of ours.
        let timer = started.elapsed() > Duration::from_millis(1);
        self.race(started, deadline, timer, || async {
            match self.store.get_owned().await {
                Ok(conn) if self.cell.accept(conn.epoch, started) => Try::Done(conn),
                Ok(mut stale) => {
                    stale.broken = true;
                    Try::Again
                }
                Err(RunError::TimedOut) => Try::TimedOut,
                // bb8 0.9 reports connect errors to its error sink, not
                // here; `Tracked` has already told the node's health.
                Err(RunError::User(_)) => Try::Again,
            }
        })
        .await
    }
}

/// One node's health and pool, as reported by `status()`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node's name (never contains credentials).
    pub name: String,
    /// Whether the node is in rotation (false while in the penalty box).
    pub up: bool,
    /// The node's routing weight.
    pub weight: f64,
    /// Timeouts in a row while up; 0 when boxed.
    pub consecutive_timeouts: u32,
    /// The failure that boxed the node (or that the last probe saw), while
    /// it is boxed.
    pub boxed_for: Option<FailureKind>,
    /// Probes that failed since the node was boxed.
    pub failed_probes: u32,
    /// Length of the current stay in the box: `penalty_min_wait *
    /// penalty_multiplier^failed_probes`, capped and jittered.
    pub penalty_wait: Option<Duration>,
    /// Time left before the next probe, while boxed.
    pub penalty_remaining: Option<Duration>,
    /// Times the node entered the box since the pool was built.
    pub penalties: u64,
    /// Back-off level: of the current stay while boxed; while up, the level
    /// a stay starting now would have (above 0 for a node that flapped
    /// within `penalty_memory`).
    pub penalty_level: u32,
    /// While the node warms up after its return: how far, in `[0, 1)`.
    pub warmup: Option<f64>,
    /// While boxed: the error that boxed the node, or that its latest probe
    /// saw (e.g. a refused connection, a certificate the client does not
    /// trust, a rejected password). Never contains credentials.
    pub last_error: Option<String>,
    /// Connections the node's pool holds.
    pub connections: u32,
    /// Idle connections in the node's pool.
    pub idle_connections: u32,
    /// The node's pool's own figures.
    pub pool: PoolStats,
}

/// JSON-friendly: durations as milliseconds (`penalty_wait_ms`,
/// `penalty_remaining_ms`), the failure kind as its label.
#[cfg(feature = "serde")]
impl serde::Serialize for NodeStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let millis = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        let mut s = serializer.serialize_struct("NodeStatus", 15)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("up", &self.up)?;
        s.serialize_field("weight", &self.weight)?;
        s.serialize_field("consecutive_timeouts", &self.consecutive_timeouts)?;
        s.serialize_field("boxed_for", &self.boxed_for.map(FailureKind::as_str))?;
        s.serialize_field("failed_probes", &self.failed_probes)?;
        s.serialize_field("penalty_wait_ms", &millis(self.penalty_wait))?;
        s.serialize_field("penalty_remaining_ms", &millis(self.penalty_remaining))?;
        s.serialize_field("penalties", &self.penalties)?;
        s.serialize_field("penalty_level", &self.penalty_level)?;
        s.serialize_field("warmup", &self.warmup)?;
        s.serialize_field("last_error", &self.last_error)?;
        s.serialize_field("connections", &self.connections)?;
        s.serialize_field("idle_connections", &self.idle_connections)?;
        s.serialize_field("pool", &self.pool)?;
        s.end()
    }
}
