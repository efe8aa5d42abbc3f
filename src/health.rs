//! The penalty box: one node's health as a plain state machine.
//!
//! No clock, no runtime, no I/O: every method takes the current time, and the
//! random part of the back-off comes in as a number, so the whole machine is
//! tested alone and shared by every flavour of pool.
//!
//! ```text
//!            refused, reset, I/O, AUTH, LOADING, ...      probe fails: wait grows
//!        ┌────────────────────────────────────────┐      ┌──────┐
//!        │                                        ▼      ▼      │
//!   ┌─────────┐  `timeout_threshold` timeouts  ┌──────────────────┴┐
//!   │   Up    │ ─────────────────────────────▶ │      Boxed        │
//!   └─────────┘ ◀───────────────────────────── └───────────────────┘
//!        ▲            probe succeeds                (reaper probes when
//!        └ success resets the timeout count          the wait runs out)
//! ```

use std::fmt;
use std::time::{Duration, Instant};

/// Why a node was judged to have failed.
///
/// Only these count against a node's health. A checkout that waited on a
/// busy pool and ordinary error replies (`WRONGTYPE`, `ERR ...`) do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The node refused the TCP connection: nothing listens there.
    Refused,
    /// An open connection was reset or closed by the node.
    Dropped,
    /// Any other I/O error.
    Io,
    /// The TLS handshake failed: an untrusted or invalid certificate, or
    /// a server that does not speak TLS.
    Tls,
    /// A connect or response timeout. A slow node is not a dead node: these
    /// box the node only after several in a row.
    Timeout,
    /// The node rejected the credentials (AUTH or ACL).
    Auth,
    /// The node answered `LOADING`: it is still loading its data set.
    Loading,
    /// The node answered `MASTERDOWN`: its master link is down.
    MasterDown,
    /// The node answered `READONLY`: it is a replica now (a failed-over
    /// master that came back, or a node reconfigured under the pool).
    ReadOnly,
    /// A connection could not be made, for a reason the connection manager
    /// did not classify further.
    Connect,
}

impl FailureKind {
    /// The label value used in metrics and logs, e.g. `"refused"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Dropped => "dropped",
            FailureKind::Io => "io",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Auth => "auth",
            FailureKind::Loading => "loading",
            FailureKind::MasterDown => "masterdown",
            FailureKind::ReadOnly => "readonly",
            FailureKind::Connect => "connect",
        }
    }

    /// Whether this failure boxes the node only after several in a row.
    pub fn is_timeout(self) -> bool {
        self == FailureKind::Timeout
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
}

impl Default for PenaltyPolicy {
    fn default() -> Self {
        PenaltyPolicy {
            min_wait: Duration::from_millis(200),
            max_wait: Duration::from_secs(30),
            multiplier: 1.5,
            jitter: 0.2,
            timeout_threshold: 3,
        }
    }
}

impl PenaltyPolicy {
    /// The wait after `failed_probes` failed probes: `min_wait *
    /// multiplier^failed_probes`, capped at `max_wait`, then shortened by
    /// `jitter * random` where `random` is in `[0, 1)`.
    ///
    /// So the first stay lies in `[(1 - jitter) * min_wait, min_wait]` and no
    /// stay is ever longer than `max_wait`.
    pub fn wait(&self, failed_probes: u32, random: f64) -> Duration {
        let min = self.min_wait.as_secs_f64();
        let max = self.max_wait.as_secs_f64();
        // powi saturates to +inf for large exponents; min() then caps it.
        let exponent = i32::try_from(failed_probes).unwrap_or(i32::MAX);
        let base = (min * self.multiplier.powi(exponent)).min(max);
        let shortened = base * (1.0 - self.jitter * random.clamp(0.0, 1.0));
        Duration::from_secs_f64(shortened.max(0.0))
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
        /// The failure that put it there.
        cause: FailureKind,
        /// Failed probes since it was boxed.
        failed_probes: u32,
        /// Length of the current stay, from boxing or the last failed probe.
        stay: Duration,
        /// When the reaper may probe it.
        probe_at: Instant,
    },
}

/// What a call changed, so the caller can log, count and notify once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing that routing sees changed.
    None,
    /// The node just entered the box.
    Boxed,
    /// The node just left the box.
    Returned,
}

/// One node's health.
#[derive(Debug, Clone)]
pub struct Health {
    state: State,
}

impl Default for Health {
    fn default() -> Self {
        Health::up()
    }
}

impl Health {
    /// A healthy node.
    pub fn up() -> Self {
        Health {
            state: State::Up {
                consecutive_timeouts: 0,
            },
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

    /// Timeouts in a row while up; 0 when boxed.
    pub fn consecutive_timeouts(&self) -> u32 {
        match self.state {
            State::Up {
                consecutive_timeouts,
            } => consecutive_timeouts,
            State::Boxed { .. } => 0,
        }
    }

    /// Time left until the next probe, if boxed.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Boxed { probe_at, .. } => Some(probe_at.saturating_duration_since(now)),
            State::Up { .. } => None,
        }
    }

    /// Whether [`on_failure`](Self::on_failure) with `kind` would box the
    /// node, so a caller can veto it first (the pool's cascade guard).
    pub fn would_box(&self, kind: FailureKind, policy: &PenaltyPolicy) -> bool {
        match self.state {
            State::Up {
                consecutive_timeouts,
            } => {
                !kind.is_timeout()
                    || consecutive_timeouts.saturating_add(1) >= policy.timeout_threshold
            }
            State::Boxed { .. } => false,
        }
    }

    /// A failure was seen. Boxes the node at once, or for a timeout once
    /// `timeout_threshold` have come in a row. Failures while boxed change
    /// nothing: only probes move a boxed node.
    pub fn on_failure(
        &mut self,
        kind: FailureKind,
        policy: &PenaltyPolicy,
        now: Instant,
        random: f64,
    ) -> Transition {
        let State::Up {
            consecutive_timeouts,
        } = self.state
        else {
            return Transition::None;
        };
        if !self.would_box(kind, policy) {
            self.state = State::Up {
                consecutive_timeouts: consecutive_timeouts.saturating_add(1),
            };
            return Transition::None;
        }
        let stay = policy.wait(0, random);
        self.state = State::Boxed {
            cause: kind,
            failed_probes: 0,
            stay,
            probe_at: now + stay,
        };
        Transition::Boxed
    }

    /// A command or connect succeeded: the timeout streak is over.
    pub fn on_success(&mut self) {
        if let State::Up { .. } = self.state {
            self.state = State::Up {
                consecutive_timeouts: 0,
            };
        }
    }

    /// Whether the reaper should probe the node now.
    pub fn probe_due(&self, now: Instant) -> bool {
        matches!(self.state, State::Boxed { probe_at, .. } if probe_at <= now)
    }

    /// When the next probe is due, if boxed.
    pub fn probe_at(&self) -> Option<Instant> {
        match self.state {
            State::Boxed { probe_at, .. } => Some(probe_at),
            State::Up { .. } => None,
        }
    }

    /// A probe failed: the wait grows by the multiplier, up to the maximum.
    pub fn on_probe_failed(
        &mut self,
        kind: FailureKind,
        policy: &PenaltyPolicy,
        now: Instant,
        random: f64,
    ) {
        if let State::Boxed { failed_probes, .. } = self.state {
            let failed_probes = failed_probes.saturating_add(1);
            let stay = policy.wait(failed_probes, random);
            self.state = State::Boxed {
                cause: kind,
                failed_probes,
                stay,
                probe_at: now + stay,
            };
        }
    }

    /// A probe succeeded: the node is back in rotation.
    pub fn on_probe_succeeded(&mut self) -> Transition {
        match self.state {
            State::Boxed { .. } => {
                *self = Health::up();
                Transition::Returned
            }
            State::Up { .. } => Transition::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PenaltyPolicy {
        PenaltyPolicy {
            min_wait: Duration::from_millis(100),
            max_wait: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.0,
            timeout_threshold: 3,
        }
    }

    #[test]
    fn refused_boxes_at_once() {
        let now = Instant::now();
        let mut h = Health::up();
        assert_eq!(
            h.on_failure(FailureKind::Refused, &policy(), now, 0.0),
            Transition::Boxed
        );
        assert!(!h.is_up());
        assert_eq!(h.remaining(now), Some(Duration::from_millis(100)));
        assert!(!h.probe_due(now + Duration::from_millis(99)));
        assert!(h.probe_due(now + Duration::from_millis(100)));
    }

    #[test]
    fn timeouts_box_only_after_the_threshold_in_a_row() {
        let now = Instant::now();
        let p = policy();
        let mut h = Health::up();
        assert_eq!(
            h.on_failure(FailureKind::Timeout, &p, now, 0.0),
            Transition::None
        );
        assert_eq!(
            h.on_failure(FailureKind::Timeout, &p, now, 0.0),
            Transition::None
        );
        assert_eq!(h.consecutive_timeouts(), 2);
        h.on_success();
        assert_eq!(h.consecutive_timeouts(), 0);
        assert_eq!(
            h.on_failure(FailureKind::Timeout, &p, now, 0.0),
            Transition::None
        );
        assert_eq!(
            h.on_failure(FailureKind::Timeout, &p, now, 0.0),
            Transition::None
        );
        assert_eq!(
            h.on_failure(FailureKind::Timeout, &p, now, 0.0),
            Transition::Boxed
        );
        assert!(!h.is_up());
    }

    #[test]
    fn would_box_predicts_on_failure() {
        let now = Instant::now();
        let p = policy();
        let mut h = Health::up();
        for kind in [
            FailureKind::Timeout,
            FailureKind::Timeout,
            FailureKind::Timeout,
        ] {
            let predicted = h.would_box(kind, &p);
            let boxed = h.on_failure(kind, &p, now, 0.0) == Transition::Boxed;
            assert_eq!(predicted, boxed);
        }
        assert!(!h.would_box(FailureKind::Refused, &p), "already boxed");
        assert!(Health::up().would_box(FailureKind::Refused, &p));
    }

    #[test]
    fn threshold_of_one_boxes_on_the_first_timeout() {
        let p = PenaltyPolicy {
            timeout_threshold: 1,
            ..policy()
        };
        let mut h = Health::up();
        assert_eq!(
            h.on_failure(FailureKind::Timeout, &p, Instant::now(), 0.0),
            Transition::Boxed
        );
    }

    #[test]
    fn failed_probes_grow_the_wait_up_to_the_cap() {
        let now = Instant::now();
        let p = policy();
        let mut h = Health::up();
        h.on_failure(FailureKind::Dropped, &p, now, 0.0);
        let mut waits = vec![h.remaining(now).unwrap()];
        for _ in 0..6 {
            h.on_probe_failed(FailureKind::Refused, &p, now, 0.0);
            waits.push(h.remaining(now).unwrap());
        }
        let ms: Vec<u128> = waits.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(h.on_probe_succeeded(), Transition::Returned);
        assert!(h.is_up());
        // A second trip starts again from the minimum.
        h.on_failure(FailureKind::Refused, &p, now, 0.0);
        assert_eq!(h.remaining(now), Some(Duration::from_millis(100)));
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let p = PenaltyPolicy {
            jitter: 0.25,
            ..policy()
        };
        assert_eq!(p.wait(0, 0.0), Duration::from_millis(100));
        assert_eq!(p.wait(0, 1.0), Duration::from_millis(75));
        assert_eq!(p.wait(10, 0.5), Duration::from_secs_f64(0.875));
        for r in [0.0, 0.1, 0.5, 0.99] {
            let w = p.wait(50, r);
            assert!(w <= p.max_wait && w >= p.max_wait.mul_f64(0.75), "{w:?}");
        }
    }

    #[test]
    fn huge_probe_counts_do_not_overflow() {
        let p = policy();
        assert_eq!(p.wait(u32::MAX, 0.0), p.max_wait);
        let unit = PenaltyPolicy {
            multiplier: 1.0,
            ..p
        };
        assert_eq!(unit.wait(u32::MAX, 0.0), unit.min_wait);
    }

    #[test]
    fn failures_while_boxed_do_not_move_the_probe() {
        let now = Instant::now();
        let p = policy();
        let mut h = Health::up();
        h.on_failure(FailureKind::Refused, &p, now, 0.0);
        let before = h.state();
        let later = now + Duration::from_millis(50);
        assert_eq!(
            h.on_failure(FailureKind::Refused, &p, later, 0.0),
            Transition::None
        );
        assert_eq!(h.state(), before);
    }

    #[test]
    fn probes_do_nothing_to_a_node_that_is_up() {
        let now = Instant::now();
        let mut h = Health::up();
        h.on_probe_failed(FailureKind::Refused, &policy(), now, 0.0);
        assert!(h.is_up());
        assert_eq!(h.on_probe_succeeded(), Transition::None);
        assert!(!h.probe_due(now));
    }

    #[test]
    fn labels_are_stable() {
        assert_eq!(FailureKind::Refused.to_string(), "refused");
        assert_eq!(FailureKind::MasterDown.as_str(), "masterdown");
    }
}
