//! The return race (issue 34, item 5): a fleet's home comes back while a
//! stand-in's copies are known only from the fleet's records.
//!
//! Drawn in runs where the promise holds (a fleet with
//! `invalidate_on_return`, three processes or more): one `Pause` of the
//! schedule becomes a race. The home is stopped (`SIGSTOP`) long enough for
//! every process to box it, while every process writes its keys through
//! the stand-ins; just before it wakes, the writer of some of those copies
//! is killed (its own journal dies with it: only the records on the
//! stand-ins remember its copies), and the home wakes holding writes
//! (`CLIENT PAUSE WRITE`) for a while, so that the first process to return
//! it is held in its deletes on the home while the others probe, find (or,
//! before the fix, no longer find) the records, and let the home in. A
//! process that lets the home in before its older copies are gone reads
//! them: `no-stale-read` finds it (a read of the home after both the
//! writer and the reader had boxed it, the writer's stand-in write
//! acknowledged before).
//!
//! Recorded as the faults it is made of: a `Pause` of the node from its
//! stop to the hold's end, and a `KillProcess`.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use fluster::redis;
use fluster_torture::history::{Entry, Fault, FaultKind, RunConfig, now};

use crate::nemesis::{Stage, send};
use crate::plan::Planned;
use crate::world::signal;

/// Turns one fault of `faults` into a race, in most runs where the
/// promise holds, from a stream of its own (the rest of the plan draws as
/// before): a `Pause` of a node that holds keys, at least 1.2 s long, with
/// a second of workload after it. At most one process is killed in a run
/// besides: another planned `KillProcess` becomes a node's `Kill`.
pub fn draw(faults: &mut [Planned], config: &RunConfig, end_ms: u64) {
    if !(config.fleet && config.invalidate_on_return && config.processes >= 3) {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x7261_6365);
    if !rng.random_bool(0.7) {
        return;
    }
    // The victim writes the race's keys (`worker/race.rs`): an async
    // process, and another reads them.
    let writers: Vec<u32> =
        (1..=config.processes).filter(|p| !config.sync_processes.contains(p)).collect();
    let room: Vec<usize> =
        (0..faults.len()).filter(|&i| faults[i].at_ms + LONGEST + 1_000 <= end_ms).collect();
    if room.is_empty() || writers.len() < 2 {
        return;
    }
    let race = &mut faults[room[rng.random_range(0..room.len())]];
    race.kind = FaultKind::Pause;
    race.race = true;
    race.stutter = false;
    race.node = rng.random_range(0..config.nodes.len()); // never a gutter
    race.process = writers[rng.random_range(0..writers.len())];
    race.length_ms = rng.random_range(SHORTEST..=LONGEST);
    for f in faults.iter_mut().filter(|f| f.kind == FaultKind::KillProcess) {
        f.kind = FaultKind::Kill;
    }
}

/// A race's shortest and longest stop (ms): every process boxes the home
/// well within the shortest (two timeouts of `response_timeout`, or a
/// heartbeat's).
const SHORTEST: u64 = 1_200;
/// See [`SHORTEST`].
const LONGEST: u64 = 2_000;

impl Stage<'_> {
    /// Runs the race `fault` (a `Pause` with `race` set).
    pub async fn race(&mut self, fault: &Planned) {
        let start = now();
        let index = fault.node;
        let port = self.nodes[index].port;
        let length = Duration::from_millis(fault.length_ms);
        let lead = Duration::from_millis(60);
        self.nodes[index].pause(true);
        tokio::time::sleep(length - lead).await;
        // The writer dies with its stand-in writes in flight.
        let victim = fault.process;
        if let Some(mut child) = self.workers[victim as usize - 1].take() {
            let at = now();
            signal(child.id() as i32, libc::SIGKILL);
            let _ = child.wait();
            let kill = Fault {
                kind: FaultKind::KillProcess,
                node: None,
                process: Some(victim),
                start: at,
                end: at,
            };
            self.rec.record(&Entry::Fault(kill));
        }
        tokio::time::sleep(lead).await;
        self.nodes[index].pause(false);
        // Awake, it answers reads (the probes) at once and holds writes
        // (the first return's deletes) a while.
        let hold = 500 + fault.length_ms % 1_000;
        let _ = send(port, redis::cmd("CLIENT").arg("PAUSE").arg(hold).arg("WRITE")).await;
        tokio::time::sleep(Duration::from_millis(hold)).await;
        self.rec.record(&Entry::Fault(Fault {
            kind: FaultKind::Pause,
            node: Some(self.nodes[index].name.clone()),
            process: None,
            start,
            end: now(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::Plan;
    use fluster_torture::history::FaultKind;

    #[test]
    fn races_are_drawn_only_where_the_promise_holds() {
        let mut raced = Vec::new();
        for seed in 1..=200 {
            let plan = Plan::draw(seed, 5.0, 4, 4);
            let races: Vec<_> = plan.faults.iter().filter(|f| f.race).collect();
            if races.is_empty() {
                continue;
            }
            let c = &plan.config;
            assert!(c.fleet && c.invalidate_on_return, "seed {seed}");
            assert_eq!(races.len(), 1, "seed {seed}");
            assert!(races[0].kind == FaultKind::Pause && races[0].node < c.nodes.len());
            assert!(plan.faults.iter().all(|f| f.kind != FaultKind::KillProcess), "seed {seed}");
            raced.push(seed);
        }
        println!("seeds with a race: {raced:?}");
        assert!(raced.len() >= 20, "{} of 200 seeds", raced.len());
    }
}
