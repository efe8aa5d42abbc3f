//! A pool process's part in the run's membership changes
//! (`crate::member`): `add_node` at the planned instant, then
//! `remove_node` or `drain_node`, each call recorded (with whether the
//! node was in the pool's list when it returned: a failed drain may have
//! removed it or not), and between the two
//! the end of the add's sweep as `status()` shows it ([`Change::Swept`]).
//! One routine for both flavours: each pool's calls behind [`Resizable`]
//! (the sync flavour's run on Tokio's blocking threads, so the calls keep
//! their planned instants on the process's runtime, as the async ones do).

use std::future::Future;
use std::time::Duration;

use fluster::{Error, NodeStatus, ShardedPool, SweepEnd};
use fluster_torture::history::{Change, Entry, Member, Outcome, now};

use super::{outcome, wait_until};
use crate::member::Membership;
use crate::recorder::Recorder;

/// What the membership changes ask of a pool, either flavour.
pub trait Resizable: Clone + Send + Sync + 'static {
    /// `add_node(node, url)`.
    fn add(&self, node: &str, url: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// `remove_node(node)`.
    fn remove(&self, node: &str) -> Result<(), Error>;
    /// `drain_node(node)`.
    fn drain(&self, node: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// `status()`.
    fn status(&self) -> Vec<NodeStatus>;
    /// `nodes()`.
    fn nodes(&self) -> Vec<String>;
}

impl Resizable for ShardedPool {
    fn add(&self, node: &str, url: &str) -> impl Future<Output = Result<(), Error>> + Send {
        self.add_node(node, url)
    }

    fn remove(&self, node: &str) -> Result<(), Error> {
        self.remove_node(node)
    }

    fn drain(&self, node: &str) -> impl Future<Output = Result<(), Error>> + Send {
        self.drain_node(node)
    }

    fn status(&self) -> Vec<NodeStatus> {
        ShardedPool::status(self)
    }

    fn nodes(&self) -> Vec<String> {
        ShardedPool::nodes(self)
    }
}

impl Resizable for fluster::sync::ShardedPool {
    fn add(&self, node: &str, url: &str) -> impl Future<Output = Result<(), Error>> + Send {
        let (pool, node, url) = (self.clone(), node.to_owned(), url.to_owned());
        blocking(move || pool.add_node(&node, &url))
    }

    fn remove(&self, node: &str) -> Result<(), Error> {
        self.remove_node(node)
    }

    fn drain(&self, node: &str) -> impl Future<Output = Result<(), Error>> + Send {
        let (pool, node) = (self.clone(), node.to_owned());
        blocking(move || pool.drain_node(&node))
    }

    fn status(&self) -> Vec<NodeStatus> {
        fluster::sync::ShardedPool::status(self)
    }

    fn nodes(&self) -> Vec<String> {
        fluster::sync::ShardedPool::nodes(self)
    }
}

/// A blocking call on Tokio's blocking threads, awaited (its panic,
/// already recorded by the hook, carried on).
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(call).await {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs the changes of `m` (times from `start`), adding the node at `url`
/// (`warm`: the pool was built with `resize_warmup`).
pub async fn run<P: Resizable>(
    pool: P,
    m: Membership,
    (url, warm): (String, bool),
    start: u64,
    rec: Recorder,
) {
    let at = |ms: u64| start + ms * 1_000_000;
    wait_until(at(m.add_ms)).await;
    let began = now();
    let added = outcome(&pool.add(&m.node, &url).await);
    let listed = in_list(&pool, &m.node, &added);
    record(&rec, (&m.node, Change::Add { warm }, listed), began, &added);
    if added == Outcome::Ok {
        watch_sweep(&pool, &m.node, (began, at(m.out_ms)), &rec).await;
    }
    wait_until(at(m.out_ms)).await;
    let began = now();
    let done = match m.out {
        Change::Drain => {
            // Bounded like any operation: a drain that hangs is a hang.
            match tokio::time::timeout(super::HANG, pool.drain(&m.node)).await {
                Ok(done) => outcome(&done),
                Err(_) => super::ops::HUNG,
            }
        }
        _ => outcome(&pool.remove(&m.node)),
    };
    let listed = in_list(&pool, &m.node, &done);
    record(&rec, (&m.node, m.out, listed), began, &done);
}

/// Whether `node` is in the pool's list now, after a call that ended with
/// `done`: the truth the checker needs of a call that failed (a drain
/// that failed at its check kept the node, one that failed after its
/// switch removed it: `src/runtime/drain.rs`). `None` for a call that
/// hung: a sync pool's blocking call may still go on.
fn in_list<P: Resizable>(pool: &P, node: &str, done: &Outcome) -> Option<bool> {
    match done {
        Outcome::Hung(_) => None,
        _ => Some(pool.nodes().iter().any(|n| n == node)),
    }
}

/// How often the pool's status is read for the sweep's end.
const LOOK: Duration = Duration::from_millis(20);

/// Reads the status of `node` until its sweep ends, and records how
/// ([`Change::Swept`]), or until `until` (the node goes out: an end after
/// that is not recorded). `added`: when the `add_node` that started the
/// sweep began.
async fn watch_sweep<P: Resizable>(
    pool: &P,
    node: &str,
    (added, until): (u64, u64),
    rec: &Recorder,
) {
    // The last instant it was seen running (or not yet begun).
    let mut running = added;
    loop {
        let looked = now();
        if looked >= until {
            return;
        }
        let status = pool.status().into_iter().find(|s| s.name == node);
        let Some(status) = status else { return };
        let ended = match status.sweep_end {
            None => {
                running = looked;
                // Never past `until`: the call that takes the node out
                // keeps its planned instant.
                let left = Duration::from_nanos(until.saturating_sub(now()));
                tokio::time::sleep(LOOK.min(left)).await;
                continue;
            }
            Some(SweepEnd::Clean) => Outcome::Ok,
            Some(SweepEnd::Incomplete(reason)) => Outcome::Failed(reason),
            Some(other) => Outcome::Failed(format!("{other:?}")),
        };
        record(rec, (node, Change::Swept, None), running, &ended);
        return;
    }
}

/// Records `change` of `node` (and whether the node was `listed` after it).
fn record(
    rec: &Recorder,
    (node, change, listed): (&str, Change, Option<bool>),
    start: u64,
    outcome: &Outcome,
) {
    rec.record(&Entry::Member(Member {
        process: rec.process,
        node: node.to_owned(),
        change,
        start,
        end: now(),
        outcome: outcome.clone(),
        listed,
    }));
}
