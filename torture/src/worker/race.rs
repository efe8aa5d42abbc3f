//! The workload's part in a return race (`crate::race`): keys of the
//! race's home that, from a second before the race until a while after
//! the home's return, only the victim writes (through the stand-ins, the
//! home being boxed) and every other process reads (from the home, once
//! they let it back in). Before the window every process writes them, so
//! the home holds older values of its own; after it, the copies the
//! victim left are known only from the fleet's records.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use fluster::route::Router;
use fluster_torture::history::{ProcessId, now};

use super::Job;

/// The keys a race may use (those whose home is the race's node).
const RACE_KEYS: [&str; 24] = [
    "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
    "r15", "r16", "r17", "r18", "r19", "r20", "r21", "r22", "r23",
];

/// How long before the race every process writes its keys (ns).
const BEFORE: u64 = 1_000_000_000;

/// How long after the race's end the others read them (ns).
const AFTER: u64 = 2_000_000_000;

/// One race, as a process of the workload sees it.
pub struct Window {
    start: u64,
    end: u64,
    victim: ProcessId,
    keys: Vec<&'static str>,
}

/// What a process does in an operation, while a window is open.
pub enum Turn {
    /// Write this key (everyone before the race, the victim during it).
    Write(&'static str),
    /// Read this key (the others, during the race and after).
    Read(&'static str),
}

/// The job's races.
pub fn windows(job: &Job) -> Vec<Window> {
    let c = &job.plan.config;
    let router = Router::new(c.nodes.iter().map(|n| (n.as_str(), 1.0)));
    job.plan
        .faults
        .iter()
        .filter(|f| f.race)
        .map(|f| Window {
            start: job.start + f.at_ms * 1_000_000,
            end: job.start + (f.at_ms + f.length_ms) * 1_000_000,
            victim: f.process,
            keys: RACE_KEYS
                .into_iter()
                .filter(|k| router.home(k.as_bytes()) == Some(f.node))
                .collect(),
        })
        .collect()
}

/// This operation's turn in an open window, if one is open and the draw
/// says so (half the operations).
pub fn turn(windows: &[Window], me: ProcessId, rng: &mut ChaCha8Rng) -> Option<Turn> {
    let t = now();
    let w = windows.iter().find(|w| w.start.saturating_sub(BEFORE) <= t && t <= w.end + AFTER)?;
    if w.keys.is_empty() || !rng.random_bool(0.5) {
        return None;
    }
    let key = w.keys[rng.random_range(0..w.keys.len())];
    Some(match (t < w.start, me == w.victim) {
        (true, _) | (false, true) => Turn::Write(key),
        (false, false) => Turn::Read(key),
    })
}
