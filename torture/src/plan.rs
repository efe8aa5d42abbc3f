//! Everything a run does, drawn from its seed: the pools' settings, which
//! processes use the sync flavour, and the nemesis's schedule of faults.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use fluster_torture::history::{FaultKind, ProcessId, RunConfig};

/// One fault of the schedule, in milliseconds from the workload's start.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Planned {
    /// What.
    pub kind: FaultKind,
    /// The node it hits (an index into the nodes, gutters last).
    pub node: usize,
    /// The pool process it hits (`1..=processes`).
    pub process: ProcessId,
    /// When it begins.
    pub at_ms: u64,
    /// How long it lasts.
    pub length_ms: u64,
    /// For a `Pause`: the pool processes stutter (stopped for moments)
    /// around its end, and the node holds writes (`CLIENT PAUSE WRITE`)
    /// for 400 ms after it, so that each step of its return may be
    /// stretched in the process that takes it.
    pub stutter: bool,
    /// For a `Pause`: the return race instead (`race.rs`).
    #[serde(default)]
    pub race: bool,
}

/// An outside client's write behind the pools' backs, in milliseconds
/// from the workload's start.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Outside {
    /// When.
    pub at_ms: u64,
    /// 0: `SET`, 1: `DEL`, 2: `RENAME` to another key.
    pub what: u8,
    /// The key (an index into the keyspace) and, for a rename, the other.
    pub key: usize,
    /// See `key`.
    pub other: usize,
}

/// A run, drawn from its seed.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Plan {
    /// What the checker needs to know.
    pub config: RunConfig,
    /// `failover(FailFast)` in place of the default.
    pub fail_fast: bool,
    /// `near_cache` entries (0: off).
    pub near_cache: usize,
    /// A `probe_with` check that panics on every third call (fluster counts
    /// the panic as the check's failure and probes again on schedule).
    #[serde(default)]
    pub probe_panics: bool,
    /// Settings at their limits only the builder needs (`limits.rs`).
    #[serde(default)]
    pub limits: crate::limits::Limits,
    /// Every setting drawn at a limit, named.
    #[serde(default)]
    pub at_limits: Vec<String>,
    /// Tasks (or threads) per process.
    pub tasks: usize,
    /// The workload's length.
    pub seconds: f64,
    /// The faults, in order.
    pub faults: Vec<Planned>,
    /// The outside writes, in order.
    pub outside: Vec<Outside>,
    /// A node added and taken out at run time (`member.rs`), if drawn.
    #[serde(default)]
    pub membership: Option<crate::member::Membership>,
}

/// The node names: `n0`.., then the gutter `g0`.
pub fn names(nodes: usize, gutter: bool) -> (Vec<String>, Vec<String>) {
    let keys = (0..nodes).map(|i| format!("n{i}")).collect();
    let gutters = if gutter { vec!["g0".to_owned()] } else { Vec::new() };
    (keys, gutters)
}

impl Plan {
    /// The run of `seed`, `seconds` long, over `nodes` nodes and
    /// `processes` pool processes.
    pub fn draw(seed: u64, seconds: f64, nodes: usize, processes: u32) -> Plan {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let gutter = rng.random_bool(0.25);
        let (node_names, gutters) = names(nodes, gutter);
        let sync_processes =
            (1..=processes).filter(|_| rng.random_bool(0.25)).collect::<Vec<ProcessId>>();
        let near_cache = rng.random_bool(0.5);
        let fleet = processes > 1 && rng.random_bool(0.6);
        let capped = rng.random_bool(0.7);
        // Off only without a near cache, whose entries need it (build refuses).
        let heartbeat_ms = match near_cache {
            true => [200, 1000][rng.random_range(0..2)],
            false => [0, 200, 1000][rng.random_range(0..3)],
        };
        let lease_ms = [500, 1000][rng.random_range(0..2)];
        let mut config = RunConfig {
            seed,
            nodes: node_names,
            gutters,
            processes,
            sync_processes,
            near_cache,
            fleet,
            stand_in_ttl_ms: capped.then_some(2_000),
            invalidate_on_return: capped && rng.random_bool(0.85),
            gutter_ttl_ms: 10_000,
            lease_ms,
            longest_fill_ms: lease_ms * 3 / 2,
            checkout_timeout_ms: 500,
            response_timeout_ms: 250,
            connect_timeout_ms: 250,
            heartbeat_ms,
            penalty_max_wait_ms: 1_000,
            probe_timeout_ms: 250,
            extra: None,
            resize_warmup_ms: 0,
            sentinel: None,
        };
        let all_nodes = nodes + usize::from(gutter);
        let mut kinds = vec![
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::Slow,
            FaultKind::Blackhole,
            FaultKind::ClientKill,
            FaultKind::Replica,
            FaultKind::Sleep,
            FaultKind::Flap,
            FaultKind::FlushAll,
            FaultKind::SwapDb,
        ];
        if processes > 1 {
            kinds.extend([FaultKind::Partition, FaultKind::KillProcess, FaultKind::PauseProcess]);
        }
        if fleet {
            kinds.push(FaultKind::ForgedNews);
        }
        if fleet && config.invalidate_on_return {
            // The fleet's return is the promise most worth trying: a node
            // back with its older values, every process writing around it.
            kinds.extend([FaultKind::Pause, FaultKind::Blackhole, FaultKind::Sleep]);
            // An asymmetric partition, writers on both sides (every process
            // writes every key): the relay's bound is judged on it.
            kinds.extend([FaultKind::Partition, FaultKind::Partition]);
        }
        let end_ms = (seconds * 1000.0) as u64;
        let mut faults = Vec::new();
        let mut at_ms = rng.random_range(200..600);
        let mut killed_process = false;
        while at_ms + 300 < end_ms {
            let mut kind = kinds[rng.random_range(0..kinds.len())];
            if kind == FaultKind::KillProcess && killed_process {
                kind = FaultKind::Kill;
            }
            killed_process |= kind == FaultKind::KillProcess;
            let length_ms = rng.random_range(300..1500).min(end_ms - at_ms);
            let stutter = kind == FaultKind::Pause && rng.random_bool(0.6);
            faults.push(Planned {
                kind,
                node: rng.random_range(0..all_nodes),
                process: rng.random_range(1..=processes),
                at_ms,
                length_ms,
                stutter,
                race: false,
            });
            at_ms += length_ms + rng.random_range(200..900);
        }
        let membership = crate::member::draw(&mut config, end_ms);
        crate::race::draw(&mut faults, &config, end_ms);
        crate::sentinel::draw(&mut config, &mut faults, end_ms);
        let mut outside: Vec<Outside> = (0..rng.random_range(0..8))
            .map(|_| Outside {
                at_ms: rng.random_range(0..end_ms),
                what: rng.random_range(0..3),
                key: rng.random_range(0..crate::keys::KEYS.len()),
                other: rng.random_range(0..crate::keys::KEYS.len()),
            })
            .collect();
        // The outside client writes the home of the first node list.
        let keys = crate::keys::KEYS;
        let moved = |i: usize| crate::member::moved(&config, keys[i]);
        outside.retain(|o| !moved(o.key) && !moved(o.other));
        let fail_fast = rng.random_bool(0.15);
        let probe_panics = rng.random_bool(0.3);
        let mut near_cache = if near_cache { 1_000 } else { 0 };
        let (limits, at_limits) = crate::limits::draw(&mut config, &mut near_cache);
        Plan {
            config,
            fail_fast,
            near_cache,
            limits,
            at_limits: at_limits.into_iter().map(str::to_owned).collect(),
            probe_panics,
            tasks: 6,
            seconds,
            faults,
            outside,
            membership,
        }
    }
}
