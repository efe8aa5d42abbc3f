//! The penalty box: every decision about one node's health, as plain data.
//!
//! No clock, no runtime, no I/O: the time and the random part of the
//! back-off come in as a [`Moment`], and the pool-wide cap on boxed nodes
//! as a [`BoxGuard`], so the whole machine is tested alone and shared by
//! both flavours of pool. The caller only locks a [`Health`], asks it, and
//! applies the [`Verdict`] (flips its routing flag, counts, logs, wakes).
//!
//! ```text
//!            refused, reset, I/O, AUTH, LOADING, ...      probe fails: wait grows
//!        ┌────────────────────────────────────────┐      ┌──────┐
//!        │                                        ▼      ▼      │
//!   ┌─────────┐  `timeout_threshold` timeouts  ┌──────────────────┴┐
//!   │   Up    │ ─────────────────────────────▶ │      Boxed        │
//!   └─────────┘ ◀───────────────────────────── └───────────────────┘
//!        ▲            probe succeeds                (probed when
//!        └ success resets the timeout count          the wait runs out)
//! ```
//!
//! Each boxing starts a new *epoch*. A connection remembers the epoch it was
//! made in; failures reported from an older epoch are [`Verdict::Stale`], so
//! a node that comes back is not boxed again by sockets from its past life.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::failure::FailureKind;

/// How long a failed node stays in the box, and when timeouts box it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PenaltyPolicy {
    /// The first stay in the box.
    pub min_wait: Duration,
    /// The cap of the back-off.
    pub max_wait: Duration,
    /// Growth of the wait per failed probe (at least 1).
    pub multiplier: f64,
    /// Fraction in `[0, 1]` by which a wait may be shortened at random, so
    /// that many processes do not probe a recovering node at the same moment.
    pub jitter: f64,
    /// Timeouts in a row that box a node (at least 1).
    pub timeout_threshold: u32,
    /// Flap damping (see [`Health::level`]); zero turns it off.
    pub memory: Duration,
    /// Slow start's window (see [`warmed`]); zero: keys go home at once.
    pub warmup: Duration,
}

impl PenaltyPolicy {
    /// The wait at back-off level `level`: `min_wait * multiplier^level`,
    /// capped at `max_wait`, then shortened by `jitter * random` where
    /// `random` is in `[0, 1)`. A stay's level is its failed probes plus
    /// the level flap damping carried over.
    ///
    /// So the first stay lies in `[(1 - jitter) * min_wait, min_wait]` and no
    /// stay is ever longer than `max_wait`.
    pub fn wait(&self, level: u32, random: f64) -> Duration {
        let min = self.min_wait.as_secs_f64();
        let max = self.max_wait.as_secs_f64();
        // powi saturates to +inf for large exponents; min() then caps it.
        let exponent = i32::try_from(level).unwrap_or(i32::MAX);
        let base = (min * self.multiplier.powi(exponent)).min(max);
        let shortened = base * (1.0 - self.jitter * random.clamp(0.0, 1.0));
        Duration::from_secs_f64(shortened.max(0.0))
    }
}

/// The warm-up rule: the fraction of a node's keys that go home after
/// `elapsed` of a `window`. A key goes home once this passes its
/// `route::warm_threshold`.
#[inline]
pub fn warmed(elapsed: Duration, window: Duration) -> f64 {
    elapsed.as_nanos() as f64 / window.as_nanos() as f64
}

/// The time of a decision and a random draw in `[0, 1)` for its jitter.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    /// Now.
    pub now: Instant,
    /// A uniform draw in `[0, 1)`.
    pub random: f64,
}

/// The cascade guard: how many of a pool's nodes may be boxed at once.
///
/// One per pool, shared by its nodes. A node takes a place when it is boxed
/// and gives it back when it returns or leaves the pool; past the cap a
/// failure is [`Verdict::Vetoed`] and the node stays in rotation.
#[derive(Debug)]
pub struct BoxGuard {
    boxed: AtomicUsize,
    cap: AtomicUsize,
}

impl BoxGuard {
    /// A guard allowing `cap` boxed nodes.
    pub fn new(cap: usize) -> Self {
        BoxGuard { boxed: AtomicUsize::new(0), cap: AtomicUsize::new(cap) }
    }

    /// Changes the cap (nodes were added or removed).
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Release);
    }

    /// Takes a place in the box, if one is free.
    fn reserve(&self) -> bool {
        self.boxed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cap.load(Ordering::Acquire)).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        self.boxed.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a node stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    /// In rotation.
    Up {
        /// Timeouts in a row since the last success.
        consecutive_timeouts: u32,
    },
    /// In the penalty box: skipped by routing until a probe succeeds.
    Boxed {
        /// The failure that put it there (or that the last probe saw).
        cause: FailureKind,
        /// Failed probes since it was boxed.
        failed_probes: u32,
        /// Back-off level of the current stay: failed probes plus the level
        /// carried over from recent stays (flap damping).
        level: u32,
        /// Length of the current stay, from boxing or the last failed probe.
        stay: Duration,
        /// When the node may be probed.
        probe_at: Instant,
    },
}

/// What a reported failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// About an earlier epoch of the node, or a node that left its pool:
    /// ignored.
    Stale,
    /// Counted (a timeout below the threshold, or a node already boxed);
    /// routing sees no change.
    Counted,
    /// The node just entered the box; a new epoch began.
    Boxed {
        /// How long before it is probed.
        wait: Duration,
        /// The back-off level of the stay.
        level: u32,
    },
    /// It would have boxed the node, but the cascade guard's cap is
    /// reached: the node stays in rotation and the caller gets the failure.
    Vetoed,
}

/// What a probe's outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probed {
    /// The node left the box.
    Returned,
    /// The node stays boxed, for a longer wait.
    Failed {
        /// How long before the next probe.
        wait: Duration,
    },
    /// Nothing: the node was not boxed, or left its pool.
    Ignored,
}

/// One node's health.
#[derive(Debug, Clone)]
pub struct Health {
    state: State,
    epoch: u64,
    retired: bool,
    probing: bool,
    penalties: u64,
    /// When the node last left the box, and the level its stay ended at:
    /// the flap memory.
    returned: Option<(Instant, u32)>,
    /// When the current warm-up began, while one runs.
    warming: Option<Instant>,
    last_error: Option<String>,
    /// Failures the cascade guard kept from boxing the node, and the kind
    /// of the latest.
    vetoes: u64,
    last_veto: Option<FailureKind>,
}

impl Health {
    /// A healthy node in epoch 0.
    pub fn up() -> Self {
        Health {
            state: State::Up { consecutive_timeouts: 0 },
            epoch: 0,
            retired: false,
            probing: false,
            penalties: 0,
            returned: None,
            warming: None,
            last_error: None,
            vetoes: 0,
            last_veto: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether routing may use the node.
    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up { .. })
    }

    /// Whether the node left its pool.
    pub fn is_retired(&self) -> bool {
        self.retired
    }

    /// The current epoch: how many times the node was boxed or retired.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Times the node entered the box.
    pub fn penalties(&self) -> u64 {
        self.penalties
    }

    /// The back-off level: of the current stay while boxed; while up, the
    /// level a stay starting `now` would have. That is the level the last
    /// stay ended at, plus one, less one for each full `policy.memory` the
    /// node has stayed up since (0 without memory).
    pub fn level(&self, now: Instant, policy: &PenaltyPolicy) -> u32 {
        match (self.state, self.returned) {
            (State::Boxed { level, .. }, _) => level,
            (State::Up { .. }, Some((at, ended))) if !policy.memory.is_zero() => {
                let up_for = now.saturating_duration_since(at).as_nanos();
                let decays = u32::try_from(up_for / policy.memory.as_nanos()).unwrap_or(u32::MAX);
                ended.saturating_add(1).saturating_sub(decays)
            }
            (State::Up { .. }, _) => 0,
        }
    }

    /// While boxed, the error that boxed the node or that its latest probe
    /// saw.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// How many failures the cascade guard vetoed, and the kind of the
    /// latest: a checkout that sees the count move gives its caller the
    /// failure.
    pub fn vetoes(&self) -> (u64, Option<FailureKind>) {
        (self.vetoes, self.last_veto)
    }

    /// Timeouts in a row while up; 0 when boxed.
    pub fn consecutive_timeouts(&self) -> u32 {
        match self.state {
            State::Up { consecutive_timeouts } => consecutive_timeouts,
            State::Boxed { .. } => 0,
        }
    }

    /// Time left until the next probe, if boxed.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.probe_at().map(|at| at.saturating_duration_since(now))
    }

    /// When the next probe is due, if boxed and no probe is in flight.
    pub fn probe_at(&self) -> Option<Instant> {
        match self.state {
            State::Boxed { probe_at, .. } if !self.probing && !self.retired => Some(probe_at),
            _ => None,
        }
    }

    /// A failure of `kind` was seen on a connection made in `epoch`.
    ///
    /// Boxes the node at once, or for a timeout once `timeout_threshold` have
    /// come in a row (`at_once` boxes on any failure: a node that does not
    /// answer at start). Boxing takes a place from `guard` or is vetoed.
    pub fn on_failure(
        &mut self,
        kind: FailureKind,
        epoch: u64,
        at_once: bool,
        guard: &BoxGuard,
        policy: &PenaltyPolicy,
        at: Moment,
    ) -> Verdict {
        if self.retired || epoch != self.epoch {
            return Verdict::Stale;
        }
        let State::Up { consecutive_timeouts } = self.state else {
            return Verdict::Counted;
        };
        let streak = consecutive_timeouts.saturating_add(1);
        if kind.is_timeout() && !at_once && streak < policy.timeout_threshold {
            self.state = State::Up { consecutive_timeouts: streak };
            return Verdict::Counted;
        }
        if !guard.reserve() {
            self.vetoes += 1;
            self.last_veto = Some(kind);
            return Verdict::Vetoed;
        }
        let level = self.level(at.now, policy);
        let stay = policy.wait(level, at.random);
        self.state =
            State::Boxed { cause: kind, failed_probes: 0, level, stay, probe_at: at.now + stay };
        self.epoch += 1;
        self.penalties += 1;
        self.warming = None;
        Verdict::Boxed { wait: stay, level }
    }

    /// Keeps `error` for status while the node is boxed.
    pub fn set_last_error(&mut self, error: String) {
        if !self.is_up() {
            self.last_error = Some(error);
        }
    }

    /// Starts a warm-up at `now` (a node returned or joined), if the policy
    /// has one.
    pub fn start_warmup(&mut self, now: Instant, policy: &PenaltyPolicy) {
        self.warming = (!policy.warmup.is_zero()).then_some(now);
    }

    /// When the current warm-up began, while one runs.
    pub fn warming(&self) -> Option<Instant> {
        self.warming
    }

    /// How far the warm-up is at `now`, in `[0, 1)`, while one runs.
    pub fn warmed(&self, now: Instant, policy: &PenaltyPolicy) -> Option<f64> {
        let fraction = warmed(now.saturating_duration_since(self.warming?), policy.warmup);
        (fraction < 1.0).then_some(fraction)
    }

    /// Ends a warm-up whose window has passed; true if one ended.
    pub fn end_warmup(&mut self, now: Instant, policy: &PenaltyPolicy) -> bool {
        let ended = self.warming.is_some() && self.warmed(now, policy).is_none();
        if ended {
            self.warming = None;
        }
        ended
    }

    /// A command or connect succeeded: the timeout streak is over.
    pub fn on_success(&mut self) {
        if let State::Up { .. } = self.state {
            self.state = State::Up { consecutive_timeouts: 0 };
        }
    }

    /// Claims the probe of a boxed node whose wait has run out; false if it
    /// is not due, or a probe is already in flight.
    pub fn start_probe(&mut self, now: Instant) -> bool {
        let due = self.probe_at().is_some_and(|at| at <= now);
        self.probing |= due;
        due
    }

    /// Brings the next probe forward to `at` (news from another process
    /// of the fleet said the node is back); true if it moved. Nothing else
    /// changes: the probe still decides.
    pub fn hasten(&mut self, at: Instant) -> bool {
        match &mut self.state {
            State::Boxed { probe_at, .. } if !self.probing && !self.retired && at < *probe_at => {
                *probe_at = at;
                true
            }
            _ => false,
        }
    }

    /// Records the outcome of the probe claimed by
    /// [`start_probe`](Self::start_probe): the node returns, or its wait
    /// grows by the multiplier up to the maximum.
    pub fn finish_probe(
        &mut self,
        outcome: Result<(), (FailureKind, String)>,
        guard: &BoxGuard,
        policy: &PenaltyPolicy,
        at: Moment,
    ) -> Probed {
        self.probing = false;
        let State::Boxed { failed_probes, level, .. } = self.state else {
            return Probed::Ignored;
        };
        if self.retired {
            return Probed::Ignored;
        }
        match outcome {
            Ok(()) => {
                self.state = State::Up { consecutive_timeouts: 0 };
                self.returned = Some((at.now, level));
                self.start_warmup(at.now, policy);
                self.last_error = None;
                guard.release();
                Probed::Returned
            }
            Err((kind, error)) => {
                let (failed_probes, level) =
                    (failed_probes.saturating_add(1), level.saturating_add(1));
                let stay = policy.wait(level, at.random);
                let probe_at = at.now + stay;
                self.state = State::Boxed { cause: kind, failed_probes, level, stay, probe_at };
                self.last_error = Some(error);
                Probed::Failed { wait: stay }
            }
        }
    }

    /// The node leaves its pool: its place in the box is given back, and a
    /// new epoch makes its connections go as they come back.
    pub fn retire(&mut self, guard: &BoxGuard) {
        if !self.retired && !self.is_up() {
            guard.release();
        }
        self.retired = true;
        self.epoch += 1;
    }
}

#[cfg(test)]
mod tests;
