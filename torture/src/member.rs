//! Membership changes (issue 40): in some runs the world starts one more
//! node, every pool process adds it at run time (`add_node`, warm with
//! `resize_warmup` in half of them: `docs/resize.md`) and later takes it out
//! again, by `remove_node` or by `drain_node` (its keys moved off with
//! `MIGRATE` first), while the workload and the nemesis run on.
//!
//! Drawn from a stream of its own (the rest of the plan draws as before),
//! in runs of more than one second, whatever the processes' flavours: a
//! sync process (`fluster::sync::ShardedPool`) makes the same calls at the
//! same instants as an async one (`worker/member.rs`). The nemesis's
//! faults never hit the added node (their node index stops before it), and
//! its outside writes leave alone the keys the added node takes (they go
//! to the key's home of the first node list).
//!
//! Each process calls at the planned instants and records each call
//! ([`Entry::Member`](fluster_torture::history::Entry::Member)): the
//! processes change their lists a few milliseconds apart, which is the
//! skew the checker's [`LISTS_DIFFER`] allowance bounds.
//!
//! [`LISTS_DIFFER`]: fluster_torture::check::allowance::LISTS_DIFFER

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use fluster::route::Router;
use fluster_torture::history::{Change, RunConfig};

/// The warm window of a warm add (ms).
pub const WARM_MS: u64 = 1_000;

/// One run's membership changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Membership {
    /// The node added (also `RunConfig::extra`).
    pub node: String,
    /// When every process adds it (ms from the workload's start).
    pub add_ms: u64,
    /// How it is taken out: [`Change::Remove`] or [`Change::Drain`].
    pub out: Change,
    /// When (ms from the workload's start).
    pub out_ms: u64,
}

/// Draws the run's membership changes into `config` (the added node, the
/// warm window), in about a third of the runs: `None` otherwise.
pub fn draw(config: &mut RunConfig, end_ms: u64) -> Option<Membership> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x6d65_6d62);
    if !rng.random_bool(0.35) {
        return None;
    }
    let warm = rng.random_bool(0.5);
    let add_ms = rng.random_range(400..(end_ms / 3).max(401));
    // A drain is refused while a warm window is open: it comes after.
    let after = if warm { WARM_MS + 300 } else { 800 };
    let out_ms = add_ms + after + rng.random_range(0..1_200);
    if out_ms + 400 > end_ms {
        return None;
    }
    let out = if rng.random_bool(0.5) { Change::Remove } else { Change::Drain };
    let node = format!("n{}", config.nodes.len());
    config.extra = Some(node.clone());
    config.resize_warmup_ms = if warm { WARM_MS } else { 0 };
    Some(Membership { node, add_ms, out, out_ms })
}

/// Whether `key` is one the added node takes (its home once added).
pub fn moved(config: &RunConfig, key: &str) -> bool {
    let Some(extra) = &config.extra else { return false };
    let all: Vec<&str> = config.nodes.iter().map(String::as_str).chain([extra.as_str()]).collect();
    let router = Router::new(all.iter().map(|n| (*n, 1.0)));
    router.home(key.as_bytes()) == Some(config.nodes.len())
}

#[cfg(test)]
mod tests {
    use crate::plan::Plan;
    use fluster_torture::history::Change;

    #[test]
    fn changes_are_drawn_in_runs_with_room_sync_processes_kept() {
        let (mut drawn, mut drains, mut warm, mut with_sync) = (0, 0, 0, 0);
        let mut seeds = Vec::new();
        for seed in 1..=200 {
            let plan = Plan::draw(seed, 5.0, 4, 4);
            let Some(m) = &plan.membership else { continue };
            drawn += 1;
            seeds.push(seed);
            let c = &plan.config;
            // The draw keeps the processes' flavours as the plan drew them.
            let unchanged = Plan::draw(seed, 1.0, 4, 4);
            assert!(unchanged.membership.is_none(), "seed {seed}: too short for a change");
            assert_eq!(c.sync_processes, unchanged.config.sync_processes, "seed {seed}");
            with_sync += usize::from(!c.sync_processes.is_empty());
            assert_eq!(c.extra.as_deref(), Some("n4"));
            assert!(m.out_ms + 400 <= 5_000 && m.add_ms < m.out_ms, "seed {seed}");
            if c.resize_warmup_ms > 0 {
                warm += 1;
                assert!(m.out_ms >= m.add_ms + super::WARM_MS + 300, "seed {seed}");
            }
            drains += usize::from(m.out == Change::Drain);
            let keys = crate::keys::KEYS;
            for o in &plan.outside {
                assert!(!super::moved(c, keys[o.key]) && !super::moved(c, keys[o.other]));
            }
        }
        println!("seeds with a membership change: {seeds:?}");
        assert!((40..=100).contains(&drawn), "{drawn} of 200");
        assert!(drains > 10 && warm > 10, "{drains} drains, {warm} warm");
        assert!(with_sync > 10, "{with_sync} of {drawn} with a sync process");
    }
}
