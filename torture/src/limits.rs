//! Settings at their limits (issue 40): in some runs, some settings are
//! drawn at the edge of the range `build()` accepts (`src/settings`:
//! durations from 1 ms, or 1 ns where zero is refused, to 365 days; pools
//! of 1 connection; a near cache of 1 entry; `stand_in_ttl` at its 1 ms
//! floor; the heartbeat at its 10 ms floor), from a stream of their own
//! (the rest of the plan draws as before).
//!
//! The values the checker's rules depend on go into the run's
//! [`RunConfig`], so every bound is the one those settings promise (a
//! copy's cap of 1 ms, a lease of 1 ms whose take-overs are immediate, a
//! liveness bound of a year); the others (`Limits`) only go to the
//! builder, where they must neither panic nor make the pool lie.
//!
//! Left out, with why: a lease or `probe_timeout` of a year (a killed
//! holder's lease, or a probe of a stopped node, would then rightly hold
//! callers past the harness's hang bound); a `penalty_max_wait` or a
//! `warmup` of a year (a node boxed or warming for the rest of the run: the
//! history records no warm-up, so the rules could not tell its routing);
//! `max_boxed_fraction` (not drawn at all: `tests/failover.rs`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use fluster_torture::history::RunConfig;

/// The longest duration `build()` accepts (ms): 365 days.
pub const YEAR_MS: u64 = 365 * 24 * 60 * 60 * 1_000;

/// The settings drawn at a limit that only the builder needs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// `max_connections` (per node): 1.
    pub max_connections: Option<u32>,
    /// `max_lifetime` and `idle_timeout` at their floor (1 ms): every
    /// connection recycled at once.
    pub recycle_ms: Option<u64>,
    /// `penalty_min_wait` = `penalty_max_wait` (ms) at their floor.
    pub penalty_ms: Option<u64>,
    /// `timeouts_before_penalty`: 1.
    pub timeouts_before_penalty: Option<u32>,
}

/// Draws, in a third of the runs, each setting at a limit with even odds,
/// into `config` (what the checker needs), `near_cache` (entries, when on)
/// and the returned [`Limits`]. `what` names each, for the run's line.
pub fn draw(config: &mut RunConfig, near_cache: &mut usize) -> (Limits, Vec<&'static str>) {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x6c69_6d69);
    let mut limits = Limits::default();
    let mut what = Vec::new();
    if !rng.random_bool(0.33) {
        return (limits, what);
    }
    let mut coin = |name: &'static str| {
        let drawn = rng.random_bool(0.5);
        if drawn {
            what.push(name);
        }
        drawn
    };
    if coin("max_connections 1") {
        limits.max_connections = Some(1);
    }
    if *near_cache > 0 && coin("near_cache 1") {
        *near_cache = 1;
    }
    if config.stand_in_ttl_ms.is_some() && coin("stand_in_ttl 1 ms") {
        config.stand_in_ttl_ms = Some(1);
    }
    if config.heartbeat_ms > 0 && coin("heartbeat 10 ms") {
        config.heartbeat_ms = 10;
    }
    if coin("lease 1 ms") {
        config.lease_ms = 1;
        config.longest_fill_ms = 2;
    }
    if coin("max_lifetime and idle_timeout 1 ms") {
        limits.recycle_ms = Some(1);
    }
    if coin("penalty waits 1 ms") {
        limits.penalty_ms = Some(1);
        config.penalty_max_wait_ms = 1;
    }
    if coin("timeouts_before_penalty 1") {
        limits.timeouts_before_penalty = Some(1);
    }
    // The timeouts: at most one end each, the smallest a tenth as often
    // (a pool whose every command times out checks little else).
    if coin("checkout_timeout a year") {
        config.checkout_timeout_ms = YEAR_MS;
    }
    if coin("response_timeout a year") {
        config.response_timeout_ms = YEAR_MS;
    } else if rng.random_bool(0.1) {
        what.push("response_timeout and connect_timeout 1 ms");
        config.response_timeout_ms = 1;
        config.connect_timeout_ms = 1;
    }
    (limits, what)
}

/// The builder's settings of `limits`, on top of the plan's.
pub fn configure<F>(
    mut builder: fluster::Builder<fluster::RedisManager, F>,
    limits: &Limits,
) -> fluster::Builder<fluster::RedisManager, F> {
    let ms = std::time::Duration::from_millis;
    if let Some(n) = limits.max_connections {
        builder = builder.max_connections(n);
    }
    if let Some(t) = limits.recycle_ms {
        builder = builder.max_lifetime(ms(t)).idle_timeout(ms(t));
    }
    if let Some(t) = limits.penalty_ms {
        builder = builder.penalty_min_wait(ms(t)).penalty_max_wait(ms(t));
    }
    if let Some(n) = limits.timeouts_before_penalty {
        builder = builder.timeouts_before_penalty(n);
    }
    builder
}

#[cfg(test)]
mod tests {
    use crate::plan::Plan;

    #[test]
    fn limits_are_drawn_in_some_runs_and_accepted_by_build() {
        let (mut drawn, mut at_limits) = (0, 0);
        for seed in 1..=200 {
            let plan = Plan::draw(seed, 5.0, 4, 4);
            drawn += usize::from(!plan.at_limits.is_empty());
            at_limits += usize::from(plan.limits != super::Limits::default());
            let c = &plan.config;
            assert!(c.heartbeat_ms == 0 || c.heartbeat_ms >= 10, "seed {seed}");
            assert!(c.stand_in_ttl_ms.is_none_or(|t| t >= 1), "seed {seed}");
            assert!(plan.near_cache == 0 || c.heartbeat_ms > 0, "seed {seed}");
        }
        assert!((40..=100).contains(&drawn), "{drawn} of 200");
        assert!(at_limits > 20, "{at_limits} of 200");
    }
}
