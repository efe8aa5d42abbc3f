//! A node removed by draining (`drain_node`): its keys are moved to their
//! new homes by the server's own `MIGRATE … REPLACE KEYS …` before it leaves
//! the pool. `docs/resize.md` ("Draining a node") gives the order and
//! checks every interleaving. Here: a drain's state ([`Drain`]) and its
//! moving steps ([`Mover`]); `draining.rs` runs the steps in order.
//!
//! 1. Check: the draining node `MIGRATE`s a probe key to every other node
//!    (server to server), so a node it cannot reach fails the drain before
//!    anything changes: the node stays in the table, serving. Each node is
//!    reached where its connections go when the drain starts (a
//!    Sentinel-backed shard: the master its sentinels name then).
//! 2. Switch: the table without the node is installed; its keys' new homes
//!    (the next in their ranking) serve them. A connection to a new home
//!    asks the drain (`drained.rs`, the warm window's
//!    [`Elder`](crate::node::warm::Elder)): a plain `GET` that misses there
//!    reads through to the draining node, and before a write the draining
//!    node moves its copy there (a stand-in's write deletes it); a write on the draining node's own connections
//!    deletes the new home's copy after its reply.
//! 3. Move: `SCAN` on the draining node, `MIGRATE … REPLACE` each
//!    batch to its new homes, paced. A key still here was written nowhere
//!    since the switch (each write moves or deletes it here first, and is refused
//!    if it cannot), so a new home's copy of it is older: replaced.
//! 4. Remove: the node leaves as with `remove_node`.
//!
//! A batch whose `MIGRATE` got no answer (the draining node stalled, or
//! gave up on its target) may still run, and land its older values over
//! the writes made since: the drain fails, and the batch's keys stay in
//! doubt ([`Doubts`]) past its end: their writes are refused until the
//! drained node answers a `DEL` of them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;

use crate::error::Error;
use crate::metrics::{DRAIN_KEYS_LEFT, DRAINED_KEYS_TOTAL};
use crate::node::tracked::NodeManager;
use crate::node::{Node, Store};
use crate::route::{self, NodeName, Router};
use crate::runtime::copies::{Doubts, Moving, send};
use crate::runtime::migrate::{self, Address, Endpoint, Outcome};
use crate::runtime::table::Table;

/// Keys per `SCAN` (and so at most per `MIGRATE`): `MIGRATE` blocks the
/// draining server while it dumps, sends and waits for a batch, so a batch
/// is kept to what loopback or a LAN moves in about a millisecond (a
/// hundred small keys), well inside a 10 ms latency bound.
pub const DRAIN_BATCH: usize = 100;

/// The pause between batches: the draining server serves its other
/// clients' commands meanwhile (the first pause, before any batch, lets
/// commands sent before the switch finish first).
pub const DRAIN_PAUSE: Duration = Duration::from_millis(5);

/// A drain in progress.
pub(crate) struct Drain<M: NodeManager, S> {
    pub(crate) node: Arc<Node<M, S>>,
    /// The router before the switch (with the node) and its index there.
    before: Router,
    index: usize,
    /// Keys handed to `MIGRATE` that are on their new homes now (copied,
    /// or kept because written there since).
    pub(crate) moved: AtomicU64,
    /// Keys the draining node holds that no batch has reached yet.
    pub(crate) left: AtomicU64,
    /// A write could not delete the draining node's copy: it is not read
    /// again, and the drain copies nothing more (a copy could bring back a
    /// value deleted since).
    pub(crate) ruled_out: AtomicBool,
    /// The node has left: connections that still carry the drain stop
    /// reading through (no write deletes its copies any more).
    pub(crate) done: AtomicBool,
    /// Where each node the keys go to listens: a write of a moved key on
    /// its new home has the draining node move it there first
    /// (`drained.rs`).
    pub(crate) homes: Vec<(NodeName, Arc<Address>)>,
    /// The bound of a `MIGRATE`'s server-to-server step, in ms.
    pub(crate) migrate_ms: u64,
    /// Keys whose move off the draining node is in doubt: held past the
    /// drain's end, its connections' part in it with them.
    pub(crate) in_doubt: Arc<Doubts>,
    /// The keys of the batch whose `MIGRATE` is out: in doubt if the
    /// drain's future is dropped before its reply.
    in_flight: Mutex<Vec<Vec<u8>>>,
}

impl<M: NodeManager, S> Drain<M, S> {
    /// The drain of `before.nodes[index]` into `homes`.
    pub(crate) fn new(
        before: &Table<M, S>,
        index: usize,
        homes: Vec<(NodeName, Arc<Address>)>,
        migrate_ms: u64,
    ) -> Self {
        Drain {
            node: Arc::clone(&before.nodes[index]),
            before: before.router.clone(),
            index,
            moved: AtomicU64::new(0),
            left: AtomicU64::new(0),
            ruled_out: AtomicBool::new(false),
            done: AtomicBool::new(false),
            homes,
            migrate_ms,
            in_doubt: Arc::default(),
            in_flight: Mutex::default(),
        }
    }

    /// Whether the key of `hash` lived on the draining node.
    pub(crate) fn drained(&self, hash: u64) -> bool {
        self.before.home_hashed(hash) == Some(self.index)
    }

    pub(crate) fn finish(&self) {
        self.done.store(true, Ordering::Release);
    }

    /// Whether it ended, with no move of it left in doubt.
    pub(crate) fn over(&self) -> bool {
        self.done.load(Ordering::Acquire) && self.in_doubt.is_empty()
    }

    pub(crate) fn rule_out(&self) {
        if !self.ruled_out.swap(true, Ordering::AcqRel) {
            tracing::warn!(node = %self.before.name(self.index), "a moved key's copy on the draining node \
                could not be deleted, or a write named no key: it is not read again, and the \
                drain stops copying");
        }
    }
}

impl<M: NodeManager, S: Store<M>> Drain<M, S> {
    /// `keys`, whose move off the draining node is in doubt, held until
    /// it answers a `DEL` of them, or the drain is gone.
    pub(crate) fn doubt(self: &Arc<Self>, timeout: Duration, keys: Vec<Vec<u8>>) {
        self.in_doubt.doubt(Arc::clone(&self.node), timeout, keys, self.given_up());
    }

    /// A move of `keys` off the draining node, about to be sent (a
    /// write's): in doubt unless told it [`ended`](Moving::ended).
    pub(crate) fn moving(self: &Arc<Self>, timeout: Duration, keys: Vec<Vec<u8>>) -> Moving<M, S> {
        self.in_doubt.moving(Arc::clone(&self.node), timeout, keys, self.given_up())
    }

    /// Whether the drain is gone: its keys in doubt are no one's.
    fn given_up(self: &Arc<Self>) -> impl Fn() -> bool + Send + 'static {
        let gone = Arc::downgrade(self);
        move || gone.strong_count() == 0
    }

    /// The batch out now, if any, in doubt: its drain's future was
    /// dropped before its reply.
    pub(crate) fn cut_short(self: &Arc<Self>, timeout: Duration) {
        let in_flight =
            std::mem::take(&mut *self.in_flight.lock().unwrap_or_else(|e| e.into_inner()));
        if !in_flight.is_empty() {
            self.doubt(timeout, in_flight);
        }
    }
}

/// A node the drain moves keys to: where its server listens, as
/// `MIGRATE` wants it. No `Debug`: its address holds the credentials.
pub(crate) struct Target<M: NodeManager, S> {
    pub(crate) node: Arc<Node<M, S>>,
    pub(crate) name: NodeName,
    pub(crate) at: Arc<Address>,
}

impl<M: NodeManager, S: Store<M>> Target<M, S> {
    /// `node`, reached at `endpoint` (its address `host:port`), or the
    /// drain's error saying why it cannot be (a Sentinel-backed shard
    /// whose master was not found, a socket path).
    pub(crate) fn new(
        node: Arc<Node<M, S>>,
        endpoint: Result<Endpoint, String>,
        drained: &str,
    ) -> Result<Self, Error> {
        let name = *node.name();
        let at = endpoint.and_then(Address::parse).map_err(|reason| Error::Drain {
            node: drained.to_owned(),
            target: Some(name.to_string()),
            reason,
        })?;
        Ok(Target { node, name, at: Arc::new(at) })
    }
}

/// Keys bound for one target.
type Group<'t, M, S> = (&'t Target<M, S>, Vec<Vec<u8>>);

/// How a drain goes on: the draining node, its targets, the timeout of
/// each command and of a `MIGRATE`'s server-to-server step.
pub(crate) struct Mover<'a, M: NodeManager, S> {
    pub(crate) drain: &'a Arc<Drain<M, S>>,
    pub(crate) targets: Vec<Target<M, S>>,
    pub(crate) timeout: Duration,
    pub(crate) migrate_ms: u64,
}

impl<M: NodeManager, S: Store<M>> Mover<'_, M, S> {
    fn name(&self) -> &NodeName {
        self.drain.node.name()
    }

    async fn send(&self, pipe: redis::Pipeline) -> Result<Vec<Value>, String> {
        send(Arc::clone(&self.drain.node), self.timeout, pipe).await.map_err(|e| e.to_string())
    }

    /// The drain's error when `command` on the draining node failed after
    /// the switch: the node has left, its keys not moved yet misses.
    fn left(&self, command: &str, error: String) -> Error {
        let reason = format!(
            "its {command} failed ({error}): it left the pool, and its keys not moved yet are \
             misses on their new homes"
        );
        self.failed(None, reason)
    }

    fn failed(&self, target: Option<&NodeName>, reason: String) -> Error {
        let (node, target) = (self.name().to_string(), target.map(|t| t.to_string()));
        Error::Drain { node, target, reason }
    }

    /// `MIGRATE … REPLACE KEYS` of `keys` to `target`: moved, not copied
    /// (a second pool draining the same node later finds nothing to copy
    /// over the writes made since). `REPLACE`: a
    /// key still on the draining node was written nowhere since the switch
    /// (every write of a moved key moves or deletes it here first, and is not sent
    /// if it cannot: `runtime/drained.rs`), so what the new home holds
    /// under that name is older (kept from before the node was added).
    async fn migrate(&self, target: &Target<M, S>, keys: &[Vec<u8>]) -> Outcome {
        let mut pipe = redis::pipe();
        target.at.migrate(&mut pipe, self.migrate_ms, keys);
        match self.send(pipe).await {
            Ok(reply) => migrate::outcome(reply.first()),
            Err(e) => Outcome::InDoubt(e),
        }
    }

    /// A batch's move to `target`, or the drain's error: a batch in
    /// doubt keeps its keys in doubt past the drain's end.
    async fn batch(&self, target: &Target<M, S>, keys: Vec<Vec<u8>>) -> Result<(), Error> {
        *self.drain.in_flight.lock().unwrap_or_else(|e| e.into_inner()) = keys.clone();
        let outcome = self.migrate(target, &keys).await;
        self.drain.in_flight.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let reason = match outcome {
            Outcome::Done => return Ok(()),
            Outcome::Failed(reason) => reason,
            Outcome::InDoubt(reason) => {
                let count = keys.len();
                self.drain.doubt(self.timeout, keys);
                let keys = if count == 1 { "key" } else { "keys" };
                format!(
                    "{reason}; the move of {count} {keys} is in doubt (it may still run): their \
                     writes are refused until `{}` answers",
                    self.name()
                )
            }
        };
        Err(self.failed(Some(&target.name), reason))
    }

    /// Step 1: a probe key `MIGRATE`d to each target (then deleted on both
    /// sides), so that a node the draining node cannot reach fails the
    /// drain before the switch.
    pub(crate) async fn check(&self) -> Result<(), Error> {
        if !self.drain.node.is_up() {
            let reason = "it is in the penalty box (not answering), so its keys cannot be moved \
                off it; `remove_node` takes it out without moving them";
            return Err(self.failed(None, reason.into()));
        }
        let key = format!("fluster:drain:probe:{:016x}", crate::random::random()).into_bytes();
        let mut result = Ok(());
        for target in &self.targets {
            // Set again for each: a `MIGRATE` moves it off, and one of a
            // key that is not there never reaches its target.
            let mut set = redis::pipe();
            set.cmd("SET").arg(&key).arg("probe").arg("PX").arg(60_000);
            self.send(set).await.map_err(|e| self.failed(None, e))?;
            // A probe in doubt is harmless: its key is no one's.
            result = match self.migrate(target, std::slice::from_ref(&key)).await {
                Outcome::Done => Ok(()),
                Outcome::Failed(reason) | Outcome::InDoubt(reason) => {
                    Err(self.failed(Some(&target.name), reason))
                }
            };
            let mut del = redis::pipe();
            del.cmd("DEL").arg(&key);
            let _ = send(Arc::clone(&target.node), self.timeout, del).await;
            if result.is_err() {
                break;
            }
        }
        let mut del = redis::pipe();
        del.cmd("DEL").arg(&key);
        let _ = self.send(del).await;
        result
    }

    /// Step 3: every key of the draining node `MIGRATE`d to its new home
    /// (`after`'s home), `batch` keys at a time, `pause` before each batch.
    pub(crate) async fn run(
        &self,
        after: &Router,
        (batch, pause): (usize, Duration),
        closed: impl Fn() -> bool,
    ) -> Result<(), Error> {
        let node = self.name().to_string();
        let moved = metrics::counter!(DRAINED_KEYS_TOTAL, "node" => node.clone());
        let left = metrics::gauge!(DRAIN_KEYS_LEFT, "node" => node);
        let mut size = redis::pipe();
        size.cmd("DBSIZE");
        if let [Value::Int(n)] = self.send(size).await.map_err(|e| self.left("DBSIZE", e))?[..] {
            self.drain.left.store(n.max(0) as u64, Ordering::Relaxed);
            left.set(n as f64);
        }
        let mut cursor = 0u64;
        loop {
            tokio::time::sleep(pause).await;
            if closed() {
                return Err(Error::Closed);
            }
            if self.drain.ruled_out.load(Ordering::Acquire) {
                let reason = "a write could not delete a moved key's copy on the draining node, \
                    or named no key (FLUSHDB, a script that declares none): copying more could \
                    bring back a value deleted since";
                return Err(self.failed(None, reason.into()));
            }
            let mut scan = redis::pipe();
            scan.cmd("SCAN").arg(cursor).arg("COUNT").arg(batch);
            let reply = self.send(scan).await.map_err(|e| self.left("SCAN", e))?;
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply[0].clone())
                .map_err(|e| self.failed(None, format!("SCAN answered: {e}")))?;
            for (target, keys) in self.by_home(after, keys.iter()) {
                let count = keys.len() as u64;
                self.batch(target, keys).await?;
                self.drain.moved.fetch_add(count, Ordering::Relaxed);
                moved.increment(count);
            }
            let before = self.drain.left.load(Ordering::Relaxed);
            let now = before.saturating_sub(keys.len() as u64);
            self.drain.left.store(now, Ordering::Relaxed);
            left.set(now as f64);
            cursor = next;
            if cursor == 0 {
                self.drain.left.store(0, Ordering::Relaxed);
                left.set(0.0);
                return Ok(());
            }
        }
    }

    /// `keys` grouped by their new home's target; only the draining node's
    /// own keys (its home before the switch). Others it holds are copies
    /// of keys whose home is elsewhere (a `fan_out`'s, a stand-in's): a
    /// `REPLACE` of theirs would land over their home's newer value.
    fn by_home<'k>(
        &self,
        after: &Router,
        keys: impl Iterator<Item = &'k Vec<u8>>,
    ) -> Vec<Group<'_, M, S>> {
        let mut groups: Vec<Group<'_, M, S>> = Vec::new();
        for key in keys.filter(|key| self.drain.drained(route::key_hash(key))) {
            let Some(home) = after.home(key) else { continue };
            let Some(target) = self.targets.iter().find(|t| t.name == *after.name(home)) else {
                continue;
            };
            match groups.iter_mut().find(|(t, _)| std::ptr::eq(*t, target)) {
                Some((_, group)) => group.push(key.clone()),
                None => groups.push((target, vec![key.clone()])),
            }
        }
        groups
    }
}
