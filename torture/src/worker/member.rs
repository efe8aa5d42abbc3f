//! A pool process's part in the run's membership changes
//! (`crate::member`): `add_node` at the planned instant, then
//! `remove_node` or `drain_node`, each call recorded.

use fluster::ShardedPool;
use fluster_torture::history::{Change, Entry, Member, now};

use super::{outcome, wait_until};
use crate::member::Membership;
use crate::recorder::Recorder;

/// Runs the changes of `m` (times from `start`), adding the node at `url`
/// (`warm`: the pool was built with `resize_warmup`).
pub async fn run(
    pool: ShardedPool,
    m: Membership,
    (url, warm): (String, bool),
    start: u64,
    rec: Recorder,
) {
    let at = |ms: u64| start + ms * 1_000_000;
    wait_until(at(m.add_ms)).await;
    let began = now();
    let added = pool.add_node(&m.node, &url).await;
    record(&rec, &m.node, Change::Add { warm }, began, &outcome(&added));
    wait_until(at(m.out_ms)).await;
    let began = now();
    let done = match m.out {
        Change::Drain => {
            // Bounded like any operation: a drain that hangs is a hang.
            match tokio::time::timeout(super::HANG, pool.drain_node(&m.node)).await {
                Ok(done) => outcome(&done),
                Err(_) => super::ops::HUNG,
            }
        }
        _ => outcome(&pool.remove_node(&m.node)),
    };
    record(&rec, &m.node, m.out, began, &done);
}

fn record(
    rec: &Recorder,
    node: &str,
    change: Change,
    start: u64,
    outcome: &fluster_torture::history::Outcome,
) {
    rec.record(&Entry::Member(Member {
        process: rec.process,
        node: node.to_owned(),
        change,
        start,
        end: now(),
        outcome: outcome.clone(),
    }));
}
