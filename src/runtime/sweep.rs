//! A node added (`add_node`): the *sweep* deletes, in the background, the
//! copies its keys left on their old homes. `docs/resize.md` ("The sweep")
//! says what it guarantees and where it stops.
//!
//! A key whose home became the added node `e` keeps its old copy on its
//! old home (the next in its ranking): a cold add never deletes it, a warm
//! window's read-through copies without deleting. The copy is stale as
//! soon as the key is written on `e`, and comes back when `e` leaves
//! (`remove_node`), or during its drain until the key's batch replaces it.
//!
//! 1. Wait until `e` serves its keys: no `resize_warmup` window open, `e`
//!    up and past its `warmup`.
//! 2. For each other node that holds keys (those of the table at the
//!    start, while they stay in it): `SCAN` [`DRAIN_BATCH`] keys, with
//!    [`DRAIN_PAUSE`] before each batch (the drain's pacing); keep the
//!    keys whose home is `e`.
//! 3. Read: the digest of each kept key's `DUMP` ([`READ`]), `e` serving
//!    the key (routed to it now) checked before.
//! 4. Check again: a key `e` does not serve now, or `e` was boxed since
//!    the first check, is left: its value may be a stand-in's write.
//! 5. Delete: [`DELETE`] deletes a key only if its `DUMP` still has the
//!    digest read in 3, so a write that lands between 3 and 5 survives.
//!
//! Every command goes on the node's shared connection
//! (`runtime/copies.rs`'s `send`, as the drain's). `remove_node("e")` stops
//! the sweep first; `drain_node("e")` stops it and waits for its last
//! batch; another `add_node` runs its own sweep beside it.
//!
//! It ends [`SweepEnd::Clean`] only if every other node was scanned and
//! every kept key's copy deleted or found changed (5); a key left in 2 or
//! 4, a command that failed, a stop: [`SweepEnd::Incomplete`]. `e`'s
//! status shows how it ended while `e` stays in the pool.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use redis::Value;
use tokio::sync::Notify;

use crate::metrics::{SWEEP_KEYS_LEFT, SWEPT_KEYS_TOTAL};
use crate::node::tracked::NodeManager;
use crate::node::{Node, Store};
use crate::route::NodeName;
use crate::runtime::copies::send;
use crate::runtime::core::Core;
use crate::runtime::drain::{DRAIN_BATCH, DRAIN_PAUSE};

/// How the sweep of a node added (`add_node`) ended: see
/// [`NodeStatus::sweep_end`](crate::NodeStatus::sweep_end) and
/// `docs/resize.md` ("The sweep").
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum SweepEnd {
    /// Every other node of the pool was scanned, and every copy found
    /// there of a key that moved to the node was deleted, or found changed
    /// since the sweep read it: none written before the sweep read it is
    /// left.
    Clean,
    /// It stopped before that (a command on an old home failed, the node
    /// was removed or drained, the pool closed), or it left keys it read
    /// while the node was boxed or did not serve them: why. The copies it
    /// did not delete stay on their old homes.
    Incomplete(String),
}

/// The digest of `KEYS[1]`'s `DUMP` (its value and type, not its TTL), or
/// nil if it does not exist: what [`DELETE`] compares, binary-safe, 40
/// bytes on the wire whatever the value's size.
pub(crate) const READ: &str = "local d = redis.call('DUMP', KEYS[1]) \
    if d then return redis.sha1hex(d) end return false";

/// Deletes `KEYS[1]` only if its `DUMP`'s digest is still `ARGV[1]`.
pub(crate) const DELETE: &str = "local d = redis.call('DUMP', KEYS[1]) \
    if d and redis.sha1hex(d) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// How often a sweep waiting for its node to serve looks again.
const WAIT: Duration = Duration::from_millis(50);

/// The sweep of the keys that moved to the node added as `node`.
pub(crate) struct Sweep {
    pub(crate) node: NodeName,
    /// Old copies deleted so far.
    pub(crate) swept: AtomicU64,
    /// Keys the other nodes held when it began that it has not scanned.
    pub(crate) left: AtomicU64,
    /// Moved keys it found and left, neither deleted nor found changed
    /// (read while the node was boxed or did not serve them).
    unchecked: AtomicU64,
    stopped: AtomicBool,
    /// How it ended, once it did (its last batch came back).
    end: OnceLock<SweepEnd>,
    ended: Notify,
}

impl Sweep {
    fn new(node: NodeName) -> Self {
        Sweep {
            node,
            swept: AtomicU64::new(0),
            left: AtomicU64::new(0),
            unchecked: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            end: OnceLock::new(),
            ended: Notify::new(),
        }
    }

    /// Once its last batch has come back (at once if it is not running).
    pub(crate) async fn ended(&self) {
        loop {
            let notified = self.ended.notified();
            if self.end().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// How it ended; `None` while it runs.
    pub(crate) fn end(&self) -> Option<&SweepEnd> {
        self.end.get()
    }

    fn finish(&self, end: SweepEnd) {
        let _ = self.end.set(end);
        self.ended.notify_waiters();
    }
}

impl<M: NodeManager, S: Store<M>> Core<M, S> {
    /// Stops the sweep of `name`'s keys, if one runs: it sends nothing more
    /// (a batch already sent still lands), and its end says why, once
    /// (`sweep ended early`). Its end stays in the node's status while the
    /// node is in the pool.
    pub(crate) fn stop_sweep(&self, name: &str) -> Option<Arc<Sweep>> {
        let sweep = self.sweep_of(name)?;
        sweep.stopped.store(true, Ordering::Release);
        Some(sweep)
    }

    /// The last sweep of `name`'s keys, running or ended, while the node
    /// is in the pool.
    pub(crate) fn sweep_of(&self, name: &str) -> Option<Arc<Sweep>> {
        let sweeps = self.sweeps.lock().unwrap_or_else(|e| e.into_inner());
        sweeps.iter().find(|s| *s.node == *name).cloned()
    }

    /// Forgets the sweep of `name`'s keys: the node left the pool.
    pub(crate) fn forget_sweep(&self, name: &str) {
        let mut sweeps = self.sweeps.lock().unwrap_or_else(|e| e.into_inner());
        sweeps.retain(|s| *s.node != *name);
    }
}

/// Starts the sweep of the keys that moved to `name`, just added.
pub(crate) fn start<M: NodeManager, S: Store<M>>(core: &Arc<Core<M, S>>, name: NodeName) {
    let sweep = Arc::new(Sweep::new(name));
    let mut sweeps = core.sweeps.lock().unwrap_or_else(|e| e.into_inner());
    sweeps.retain(|s| *s.node != *name);
    sweeps.push(Arc::clone(&sweep));
    drop(sweeps);
    tracing::info!(node = %name, "sweep planned: the old homes' copies of the keys that moved \
        to the node are deleted once it serves them");
    tokio::spawn(run(Arc::downgrade(core), sweep, (DRAIN_BATCH, DRAIN_PAUSE)));
}

/// Why a sweep ended early.
type Stop = &'static str;

async fn run<M: NodeManager, S: Store<M>>(
    core: Weak<Core<M, S>>,
    sweep: Arc<Sweep>,
    pace: (usize, Duration),
) {
    let node = sweep.node.to_string();
    let result = all(&core, &sweep, pace).await;
    metrics::gauge!(SWEEP_KEYS_LEFT, "node" => node.clone()).set(0.0);
    let swept = sweep.swept.load(Ordering::Relaxed);
    let unchecked = sweep.unchecked.load(Ordering::Relaxed);
    let end = match result {
        Err(reason) => SweepEnd::Incomplete(reason.to_owned()),
        Ok(()) if unchecked > 0 => SweepEnd::Incomplete(format!(
            "{unchecked} moved keys left: read while the node was boxed or did not serve them"
        )),
        Ok(()) => SweepEnd::Clean,
    };
    match &end {
        SweepEnd::Clean => tracing::info!(
            node,
            swept,
            "sweep done: no old home holds a key that moved \
            to the node from before it was added"
        ),
        SweepEnd::Incomplete(reason) => tracing::warn!(
            node,
            swept,
            reason,
            "sweep ended early: old copies of \
            the keys that moved to the node may stay on their old homes"
        ),
    }
    sweep.finish(end);
}

/// Steps 1 to 5 of this file's header over every other node.
async fn all<M: NodeManager, S: Store<M>>(
    core: &Weak<Core<M, S>>,
    sweep: &Sweep,
    (batch, pause): (usize, Duration),
) -> Result<(), Stop> {
    serving(core, sweep).await?;
    let (others, timeout) = {
        let core = core.upgrade().ok_or("the pool was dropped")?;
        let table = core.current();
        let keyed = &table.nodes[..table.router.len()];
        let others: Vec<_> = keyed.iter().filter(|n| *n.name() != sweep.node).cloned().collect();
        (others, core.settings.response_timeout)
    };
    // Asked by name at each batch: a node held past its removal would
    // keep its connections.
    let others: Vec<NodeName> = others.iter().map(|n| *n.name()).collect();
    let node = sweep.node.to_string();
    let (swept, left) = (
        metrics::counter!(SWEPT_KEYS_TOTAL, "node" => node.clone()),
        metrics::gauge!(SWEEP_KEYS_LEFT, "node" => node.clone()),
    );
    let mut total = 0;
    for other in &others {
        let Some(other) = named(core, other) else { continue };
        let mut size = redis::pipe();
        size.cmd("DBSIZE");
        if let Ok([Value::Int(n)]) = send(other, timeout, size).await.as_deref() {
            total += (*n).max(0) as u64;
        }
    }
    sweep.left.store(total, Ordering::Relaxed);
    left.set(total as f64);
    tracing::info!(node, nodes = others.len(), keys = total, "sweep started");
    let mut failed = None;
    for other in others {
        let mut cursor = 0u64;
        loop {
            serving(core, sweep).await?;
            tokio::time::sleep(pause).await;
            let (next, scanned, deleted) =
                match one(core, sweep, &other, (cursor, batch), timeout).await? {
                    Batch::Left => break,
                    Batch::Failed(reason) => {
                        // This node's copies not reached yet stay; the
                        // next node's are deleted all the same.
                        tracing::warn!(node, old_home = %other, reason, "sweep: \
                            a command on an old home failed: its other copies stay");
                        failed = Some("a command on an old home failed");
                        break;
                    }
                    Batch::Again => continue,
                    Batch::Done { next, scanned, deleted } => (next, scanned, deleted),
                };
            sweep.swept.fetch_add(deleted, Ordering::Relaxed);
            swept.increment(deleted);
            let now = sweep.left.load(Ordering::Relaxed).saturating_sub(scanned);
            sweep.left.store(now, Ordering::Relaxed);
            left.set(now as f64);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The node of that name in the pool now.
fn named<M: NodeManager, S: Store<M>>(
    core: &Weak<Core<M, S>>,
    name: &str,
) -> Option<Arc<Node<M, S>>> {
    core.upgrade()?.current().node(name).cloned()
}

/// Waits until the node serves its keys: no warm window open, up, warmed.
async fn serving<M: NodeManager, S: Store<M>>(
    core: &Weak<Core<M, S>>,
    sweep: &Sweep,
) -> Result<(), Stop> {
    loop {
        {
            let core = core.upgrade().ok_or("the pool was dropped")?;
            if sweep.stopped.load(Ordering::Acquire) {
                return Err("stopped: remove_node or drain_node of the node");
            }
            if core.is_closed() {
                return Err("the pool was closed");
            }
            let table = core.current();
            let node = table.node(&sweep.node).ok_or("the node left the pool")?;
            let cell = node.health();
            let warming = cell.health().warmed(Instant::now(), &cell.policy).is_some();
            if !core.resize.is_open() && node.is_up() && !warming {
                return Ok(());
            }
        }
        tokio::time::sleep(WAIT).await;
    }
}

/// The keys of `keys` the node serves now (routed to it), and its epoch,
/// or `None` if it is not up.
fn served<M: NodeManager, S: Store<M>>(
    core: &Core<M, S>,
    sweep: &Sweep,
    keys: &[Vec<u8>],
) -> Option<(Vec<bool>, u64)> {
    let table = core.current();
    let index = table.position(&sweep.node)?;
    let node = &table.nodes[index];
    let epoch = node.health().epoch();
    if !node.is_up() || core.is_closed() || sweep.stopped.load(Ordering::Acquire) {
        return None;
    }
    let routed = keys.iter().map(|key| core.route(&table, Some(key)).next().ok() == Some(index));
    Some((routed.collect(), epoch))
}

/// What one batch did.
enum Batch {
    /// The node it scanned left the pool.
    Left,
    /// A command on the node it scanned failed (boxed, timed out).
    Failed(String),
    /// The added node did not serve its keys when the batch was read:
    /// nothing read, to do again once it does.
    Again,
    /// The batch's next cursor, the keys it scanned and the old copies it
    /// deleted.
    Done { next: u64, scanned: u64, deleted: u64 },
}

/// One batch on `other` from `cursor`.
async fn one<M: NodeManager, S: Store<M>>(
    core: &Weak<Core<M, S>>,
    sweep: &Sweep,
    other: &NodeName,
    (cursor, batch): (u64, usize),
    timeout: Duration,
) -> Result<Batch, Stop> {
    let gone = "the pool was dropped";
    let Some(other) = named(core, other) else { return Ok(Batch::Left) };
    let mut scan = redis::pipe();
    scan.cmd("SCAN").arg(cursor).arg("COUNT").arg(batch);
    let reply = match send(Arc::clone(&other), timeout, scan).await {
        Ok(reply) => reply,
        Err(e) => return Ok(Batch::Failed(e.to_string())),
    };
    let Some(Ok((next, keys))) = reply.into_iter().next().map(redis::from_redis_value) else {
        return Ok(Batch::Failed("SCAN answered something else than a cursor and keys".into()));
    };
    let keys: Vec<Vec<u8>> = keys;
    let scanned = keys.len() as u64;
    // 2, 3: the keys whose home is the node, and that it serves now.
    let (keys, epoch) = {
        let core = core.upgrade().ok_or(gone)?;
        let table = core.current();
        if table.position(other.name()).is_none() {
            return Ok(Batch::Left);
        }
        let home = table.position(&sweep.node).ok_or("the node left the pool")?;
        let keys: Vec<_> =
            keys.into_iter().filter(|k| table.router.home(k) == Some(home)).collect();
        let Some((routed, epoch)) = served(&core, sweep, &keys) else {
            return Ok(Batch::Again);
        };
        let found = keys.len();
        let keys = keys.into_iter().zip(routed).filter_map(|(k, routed)| routed.then_some(k));
        let keys = keys.collect::<Vec<_>>();
        sweep.unchecked.fetch_add((found - keys.len()) as u64, Ordering::Relaxed);
        (keys, epoch)
    };
    if keys.is_empty() {
        return Ok(Batch::Done { next, scanned, deleted: 0 });
    }
    let mut read = redis::pipe();
    for key in &keys {
        read.cmd("EVAL").arg(READ).arg(1).arg(key);
    }
    let digests = match send(Arc::clone(&other), timeout, read).await {
        Ok(digests) => digests,
        Err(e) => return Ok(Batch::Failed(e.to_string())),
    };
    // 4: still served, and never boxed since the first look.
    let keep = {
        let core = core.upgrade().ok_or(gone)?;
        match served(&core, sweep, &keys) {
            Some((routed, now)) if now == epoch => routed,
            _ => vec![false; keys.len()],
        }
    };
    let mut delete = redis::pipe();
    // A reply missing from the pipeline's leaves its key.
    let (mut asked, mut left) = (0, keys.len().saturating_sub(digests.len()) as u64);
    for ((key, digest), keep) in keys.iter().zip(&digests).zip(keep) {
        match (keep, digest) {
            (true, Value::BulkString(digest)) => {
                delete.cmd("EVAL").arg(DELETE).arg(1).arg(key).arg(digest.as_slice());
                asked += 1;
            }
            // Gone since the scan (`false`: nil, or RESP3's false).
            (_, Value::Nil | Value::Boolean(false)) => {}
            _ => left += 1,
        }
    }
    sweep.unchecked.fetch_add(left, Ordering::Relaxed);
    if asked == 0 {
        return Ok(Batch::Done { next, scanned, deleted: 0 });
    }
    let replies = match send(Arc::clone(&other), timeout, delete).await {
        Ok(replies) => replies,
        Err(e) => return Ok(Batch::Failed(e.to_string())),
    };
    let deleted = replies.iter().filter(|r| matches!(r, Value::Int(1))).count() as u64;
    // 0: changed since it was read, or gone; anything else (an error
    // reply) left it.
    let failed = replies.iter().filter(|r| !matches!(r, Value::Int(0 | 1))).count() as u64;
    sweep.unchecked.fetch_add(failed, Ordering::Relaxed);
    Ok(Batch::Done { next, scanned, deleted })
}
