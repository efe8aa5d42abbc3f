//! A node's health cell: the locked [`Health`], mirrored into one atomic
//! word for the hot path, and what applying a verdict means (flip the word,
//! count, log, wake, send a [`NodeEvent`]).
//!
//! Every decision is [`Health`]'s: the cell only locks it, asks, and
//! applies the answer, which carries what applying needs (wait, level).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::command::table::Known;
use crate::health::event::NodeEvent;
use crate::health::failure::{
    ClassifyFailure, Failure, FailureKind, Seen, boxed, connect_failure, one_line, refusal,
};
use crate::health::penalty::{Health, Moment, PenaltyPolicy, Probed, State, Verdict, warmed};
use crate::health::pool_wide::PoolWide;
use crate::health::record::NodeMetrics;
use crate::route::{NodeName, warm_threshold};

/// The time, with a number in `[0, 1)` for back-off jitter.
fn moment() -> Moment {
    Moment { now: Instant::now(), random: crate::random::fraction() }
}

/// Bits of [`HealthCell`]'s word: `epoch << 4 | RETIRED | WARM | STREAK |
/// BOXED`.
const BOXED: u64 = 1;
const STREAK: u64 = 2;
const WARM: u64 = 4;
const RETIRED: u64 = 8;
const EPOCH_SHIFT: u32 = 4;

/// Whether a word counts among the pool's unsettled nodes.
fn unsettled(word: u64) -> bool {
    word & (BOXED | WARM) != 0 && word & RETIRED == 0
}

/// Nanoseconds since the first call: how warm-up starts are kept in atomics.
fn nanos(at: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
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
    /// Whether the node answered since the prober last asked: written once
    /// per heartbeat interval at most, so the hot path only reads it.
    seen: AtomicBool,
    /// When it first answered after the prober last asked (see [`nanos`];
    /// 0: never).
    last_ok: AtomicU64,
    /// While warming: when the warm-up began (see [`nanos`]).
    warm_from: AtomicU64,
    /// The mirror of [`Health::vetoes`]' count.
    vetoes: AtomicU64,
    health: Mutex<Health>,
    pub(crate) policy: PenaltyPolicy,
    /// Wakes checkouts waiting on this node when it fails.
    failed: Notify,
    pub(crate) pool_wide: Arc<PoolWide>,
    pub(crate) metrics: NodeMetrics,
    /// The node's command table: the vendored one until its server's is
    /// read (`node/learn.rs`).
    pub(crate) commands: Arc<Known>,
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
    pub(crate) fn new(name: &str, policy: PenaltyPolicy, pool_wide: Arc<PoolWide>) -> Self {
        HealthCell {
            name: name.into(),
            word: AtomicU64::new(0),
            seen: AtomicBool::new(false),
            last_ok: AtomicU64::new(0),
            warm_from: AtomicU64::new(0),
            vetoes: AtomicU64::new(0),
            health: Mutex::new(Health::up()),
            policy,
            failed: Notify::new(),
            pool_wide,
            metrics: NodeMetrics::new(name),
            commands: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Health> {
        // Health's methods never panic midway, so a poisoned lock still
        // holds a consistent state.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the health, for status.
    pub(crate) fn health(&self) -> Health {
        self.lock().clone()
    }

    /// Mirrors `health` into the atomics; called under its lock.
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
        self.vetoes.store(health.vetoes().0, Ordering::Release);
        let retired = if health.is_retired() { RETIRED } else { 0 };
        let word = health.epoch() << EPOCH_SHIFT | retired | warm | streak | boxed;
        // Counted before the word shows it, uncounted after: the count never
        // says settled while a word says otherwise.
        let (was, is) = (unsettled(self.word.load(Ordering::Acquire)), unsettled(word));
        if is && !was {
            self.pool_wide.unsettled.fetch_add(1, Ordering::AcqRel);
        }
        self.word.store(word, Ordering::Release);
        if was && !is {
            self.pool_wide.unsettled.fetch_sub(1, Ordering::AcqRel);
        }
    }

    #[inline]
    pub(crate) fn is_up(&self) -> bool {
        self.word.load(Ordering::Acquire) & BOXED == 0
    }

    /// Whether the node is up, not warming up and in its pool: it takes
    /// every key of its own, its return's deletes of its stand-ins'
    /// copies are done.
    #[inline]
    pub(crate) fn is_back(&self) -> bool {
        self.word.load(Ordering::Acquire) & (BOXED | WARM | RETIRED) == 0
    }

    /// Whether the node has left its pool (`remove_node`, `drain_node`).
    #[inline]
    pub(crate) fn is_retired(&self) -> bool {
        self.word.load(Ordering::Acquire) & RETIRED != 0
    }

    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.word.load(Ordering::Acquire) >> EPOCH_SHIFT
    }

    /// Whether routing may send the key of `hash` here: the node is up and,
    /// if it is warming up and `warm` asks for slow start, the key's turn
    /// to come home has come ([`warmed`]). Outside warm-ups, one load.
    #[inline]
    pub(crate) fn routable(&self, hash: u64, warm: bool) -> bool {
        let word = self.word.load(Ordering::Acquire);
        if word & (BOXED | WARM) != WARM {
            return word & BOXED == 0;
        }
        let from = self.warm_from.load(Ordering::Acquire);
        let elapsed = Duration::from_nanos(nanos(Instant::now()).saturating_sub(from));
        !warm || warm_threshold(hash) < warmed(elapsed, self.policy.warmup)
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
            self.pool_wide.send(NodeEvent::Warm { node: self.name });
            tracing::info!(node = %self.name, "node warmed up: all its keys are home");
        }
    }

    /// A future that completes when the node reports a failure after this
    /// call. Create it *before* looking at the node, so that no failure can
    /// slip between the look and the wait.
    pub(crate) fn failure_signal(&self) -> Notified<'_> {
        self.failed.notified()
    }

    /// The count of vetoed failures: a checkout notes it when it starts.
    pub(crate) fn vetoes(&self) -> u64 {
        self.vetoes.load(Ordering::Acquire)
    }

    /// The kind of the failure vetoed since the count was `vetoes`, if
    /// one was: the caller of a checkout then gets it.
    pub(crate) fn vetoed_since(&self, vetoes: u64) -> Option<FailureKind> {
        (self.vetoes() != vetoes).then(|| self.lock().vetoes().1.unwrap_or(FailureKind::Connect))
    }

    /// Something succeeded: the node answered, and a timeout streak, if
    /// one is open, is over. The common case is two relaxed loads, no
    /// store and no lock.
    #[inline]
    pub(crate) fn report_success(&self) {
        if !self.seen.load(Ordering::Relaxed) {
            self.answered();
        }
        if self.word.load(Ordering::Relaxed) & STREAK != 0 {
            let mut health = self.lock();
            health.on_success();
            self.publish(&health);
        }
    }

    /// The node answered: noted once per heartbeat interval.
    #[cold]
    pub(crate) fn answered(&self) {
        self.seen.store(true, Ordering::Relaxed);
        self.last_ok.store(nanos(Instant::now()).max(1), Ordering::Relaxed);
    }

    /// Whether the node answered since the last call (the prober asks once
    /// per heartbeat interval).
    pub(crate) fn take_seen(&self) -> bool {
        self.seen.swap(false, Ordering::Relaxed)
    }

    /// How long ago the node last answered, to within one heartbeat
    /// interval; `None` if it never has.
    pub(crate) fn last_ok(&self, now: Instant) -> Option<Duration> {
        let at = self.last_ok.load(Ordering::Relaxed);
        (at > 0).then(|| Duration::from_nanos(nanos(now).saturating_sub(at)))
    }

    /// A failure was seen on a connection made in `epoch`, where `seen`
    /// says (one timeout is enough but in a running pool's traffic). Asks
    /// [`Health`] and applies its verdict.
    pub(crate) fn report(&self, failure: Failure<'_>, epoch: u64, seen: Seen) -> Verdict {
        let (kind, detail) = failure;
        let (at, at_once) = (moment(), seen != Seen::Running);
        let mut health = self.lock();
        let verdict =
            health.on_failure(kind, epoch, at_once, &self.pool_wide.guard, &self.policy, at);
        if let Verdict::Boxed { .. } = verdict {
            health.set_last_error(one_line(detail));
        }
        self.publish(&health);
        drop(health);
        let node = &self.name;
        match verdict {
            Verdict::Stale => return verdict, // about an earlier life of the node
            Verdict::Boxed { wait, level } => {
                self.metrics.boxed();
                self.pool_wide.send(NodeEvent::Boxed { node: *node, kind, wait, level });
                self.pool_wide.wake.notify_one();
                boxed(node, (kind, &one_line(detail)), seen, (wait, level));
            }
            Verdict::Vetoed => tracing::warn!(
                %node, failure = %kind, error = %detail,
                "node failed but stays in rotation: the cap on boxed nodes is reached"
            ),
            Verdict::Counted => {
                tracing::debug!(%node, failure = %kind, error = %detail, "node failure counted");
            }
        }
        self.metrics.failure(kind);
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
                self.report(failure, epoch, Seen::Running);
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
            Err(e) => drop(self.report(connect_failure(e), epoch, Seen::Running)),
        }
        result
    }

    /// Whether a connection made in `epoch` may be handed out (else it
    /// dates from before the node was last boxed: drop it, take another),
    /// counting the checkout, which waited `waited`, if so.
    pub(crate) fn accept(&self, epoch: u64, waited: Duration) -> bool {
        let fresh = epoch == self.epoch();
        if fresh {
            self.metrics.checkout(waited);
        }
        fresh
    }

    /// When the next probe is due, if boxed and none is in flight.
    pub(crate) fn probe_at(&self) -> Option<Instant> {
        self.lock().probe_at()
    }

    /// Claims the probe if it is due.
    pub(crate) fn start_probe(&self) -> bool {
        self.lock().start_probe(Instant::now())
    }

    /// Brings a boxed node's next probe forward to `at`, waking the
    /// prober; true if it moved (the node is boxed, no probe is under way,
    /// and the probe was due later).
    pub(crate) fn hasten_probe(&self, at: Instant) -> bool {
        let moved = self.lock().hasten(at);
        if moved {
            self.pool_wide.wake.notify_one();
        }
        moved
    }

    /// Records a claimed probe's outcome.
    pub(crate) fn finish_probe(&self, outcome: Result<(), (FailureKind, String)>) {
        let seen = outcome.as_ref().err().cloned();
        let mut health = self.lock();
        // A refusal is told once per stay: when it boxes the node, or at
        // the first probe that meets it.
        let told = matches!(health.state(), State::Boxed { cause, .. } if cause.is_refusal());
        let probed = health.finish_probe(outcome, &self.pool_wide.guard, &self.policy, moment());
        self.publish(&health);
        drop(health);
        let node = &self.name;
        match (probed, seen) {
            (Probed::Returned, _) => {
                self.metrics.returned();
                self.pool_wide.send(NodeEvent::Returned { node: *node });
                tracing::info!(%node, "node back in rotation");
            }
            (Probed::Failed { wait }, Some((kind, error))) => {
                self.metrics.probe_failed();
                self.pool_wide.send(NodeEvent::ProbeFailed { node: *node, kind, wait });
                if kind.is_refusal() && !told {
                    let why = refusal(kind, false);
                    tracing::error!(%node, failure = %kind, %error, ?wait, "probe failed: {why}");
                } else {
                    tracing::debug!(%node, failure = %kind, %error, ?wait, "probe failed");
                }
            }
            _ => {}
        }
        self.pool_wide.wake.notify_one();
    }

    /// Whether a probe must find a master to let the node back in: it is
    /// boxed for a replica's refusal (a probe that finds a replica says so
    /// again).
    pub(crate) fn wants_master(&self) -> bool {
        matches!(self.lock().state(), State::Boxed { cause, .. } if cause.wants_master())
    }

    /// The node leaves its pool for good.
    pub(crate) fn retire(&self) {
        let mut health = self.lock();
        health.retire(&self.pool_wide.guard);
        self.publish(&health);
        drop(health);
        // Checkouts waiting on it look again, and leave it.
        self.failed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::penalty::BoxGuard;

    /// The pool's count of unsettled nodes follows boxing, warm-ups and
    /// removal exactly: routing trusts it to skip every node's word.
    #[test]
    fn the_unsettled_count_follows_each_node() {
        let pool_wide = PoolWide::new(BoxGuard::new(2));
        let policy = PenaltyPolicy {
            min_wait: Duration::from_millis(200),
            max_wait: Duration::from_secs(30),
            multiplier: 1.5,
            jitter: 0.2,
            timeout_threshold: 3,
            memory: Duration::from_secs(60),
            warmup: Duration::from_secs(60),
        };
        let cells = ["a", "b"].map(|name| HealthCell::new(name, policy, pool_wide.clone()));
        let count = || pool_wide.unsettled.load(Ordering::Acquire);
        let refused = || (FailureKind::Refused, &"refused" as &dyn fmt::Display);
        assert_eq!(count(), 0);
        cells[0].report(refused(), 0, Seen::AtStart);
        cells[1].report(refused(), 0, Seen::AtStart);
        cells[0].report(refused(), 1, Seen::AtStart); // already boxed: counted once
        assert_eq!(count(), 2);
        cells[0].finish_probe(Ok(())); // back, warming up: still unsettled
        assert_eq!(count(), 2);
        cells[1].retire(); // boxed and gone: no longer counted
        assert_eq!(count(), 1);
        cells[0].retire();
        assert_eq!(count(), 0);
    }
}
