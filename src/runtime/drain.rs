//! A node removed by draining (`drain_node`): its keys are moved to their
//! new homes by the server's own `MIGRATE … REPLACE KEYS …` before it leaves
//! the pool. `docs/resize.md` ("Draining a node") gives the order and
//! checks every interleaving.
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

use futures_util::future::BoxFuture;
use redis::Value;

use crate::error::Error;
use crate::metrics::{DRAIN_KEYS_LEFT, DRAINED_KEYS_TOTAL};
use crate::node::tracked::NodeManager;
use crate::node::{Node, Store};
use crate::route::{self, NodeName, Router};
use crate::runtime::copies::{Doubts, send};
use crate::runtime::core::{Core, removable};
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
        let gone = Arc::downgrade(self);
        let given_up = move || gone.strong_count() == 0;
        self.in_doubt.doubt(Arc::clone(&self.node), timeout, keys, given_up);
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
        if let [Value::Int(n)] = self.send(size).await.map_err(|e| self.failed(None, e))?[..] {
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
            let reply = self.send(scan).await.map_err(|e| self.failed(None, e))?;
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

impl<M: NodeManager, S: Store<M>> Core<M, S> {
    /// `drain_node`: the steps of this file's header, `endpoint` giving
    /// how each node's server is reached now (asked once, before the
    /// check: a Sentinel-backed shard's current master).
    pub(crate) async fn drain(
        &self,
        name: &str,
        endpoint: impl for<'m> Fn(&'m M) -> BoxFuture<'m, Result<Endpoint, String>>,
        pace: (usize, Duration),
    ) -> Result<(), Error> {
        let table = self.open_table()?;
        let index = removable(&table, name)?;
        if table.nodes[index].is_gutter() {
            // Holds no keys of its own: nothing to move.
            return self.remove(name);
        }
        let mut claim = Claim::take(self, name)?;
        // Its sweep first, to its last batch: a delete of it landing after
        // the switch could take a key this drain moved there.
        if let Some(sweep) = self.stop_sweep(name) {
            sweep.ended().await;
        }
        let keyed = &table.nodes[..table.router.len()];
        let mut targets = Vec::with_capacity(keyed.len());
        for node in keyed.iter().filter(|n| **n.name() != *name) {
            let at = endpoint(node.manager()).await;
            targets.push(Target::new(Arc::clone(node), at, name)?);
        }
        let timeout = self.settings.response_timeout;
        let migrate_ms = migrate::timeout_ms(timeout);
        let homes = targets.iter().map(|t| (t.name, Arc::clone(&t.at))).collect();
        let drain = Arc::new(Drain::new(&table, index, homes, migrate_ms));
        let mover = Mover { drain: &drain, targets, timeout, migrate_ms };
        mover.check().await?;
        // The switch, if nothing changed since the check; else the node
        // stays, serving, and nothing moved.
        self.unlist(name, |current, _| {
            if !std::ptr::eq(current, &**table) {
                let reason = "the pool's nodes changed while the drain checked them: \
                    the node stays; drain it again";
                return Err(Error::config(format!("node name `{name}`"), reason));
            }
            self.drain.store(Some(Arc::clone(&drain)));
            Ok(())
        })?;
        drop(table);
        claim.switched = Some(Arc::clone(&drain));
        tracing::info!(node = name, "draining: its keys are served by their new homes");
        let after = self.open_table().map(|t| t.router.clone());
        let result = match after {
            Ok(after) => mover.run(&after, pace, || self.is_closed()).await,
            Err(e) => Err(e),
        };
        drop(claim);
        if let Err(e) = &result {
            tracing::warn!(node = name, error = %e, "drain stopped: the node left with keys unmoved");
        }
        result
    }
}

impl<M: NodeManager, S: Store<M>> Core<M, S> {
    /// Why a drain, or a node added warm, must wait: the last drain's
    /// moves in doubt (its node's connections' part in it would be
    /// replaced).
    pub(crate) fn drain_in_doubt(&self) -> Option<String> {
        let drain = self.drain.load_full().filter(|d| !d.over())?;
        let done = drain.done.load(Ordering::Acquire);
        done.then(|| {
            format!(
                "the last drain of `{0}` left keys whose move is in doubt (its server did not \
                 answer): wait until `{0}` answers, or give them up with remove_node(\"{0}\") \
                 if its server is gone for good",
                drain.node.name()
            )
        })
    }

    /// `remove_node` of a drained node whose moves are in doubt: they are
    /// given up (its server is gone for good), and their writes go on.
    pub(crate) fn forsake_drain(&self, name: &str) -> bool {
        let drain = self.drain.load_full().filter(|d| d.done.load(Ordering::Acquire));
        let Some(drain) = drain.filter(|d| **d.node.name() == *name) else { return false };
        self.drain.store(None);
        self.repoint();
        tracing::warn!(node = name, "the drained node's moves in doubt were given up");
        drop(drain);
        true
    }
}

/// One drain at a time, held from its first check to its end: let go
/// when the drain returns or its future is dropped, and then, if the node
/// had left the table, the drain is ended and the node retired (its
/// unmoved keys are misses on their new homes, never older values).
struct Claim<'c, M: NodeManager, S: Store<M>> {
    core: &'c Core<M, S>,
    switched: Option<Arc<Drain<M, S>>>,
}

impl<'c, M: NodeManager, S: Store<M>> Claim<'c, M, S> {
    /// The claim, unless a drain runs, or a node added warm is in its
    /// window (its read-through and the drain's would each claim the moved
    /// keys).
    fn take(core: &'c Core<M, S>, name: &str) -> Result<Self, Error> {
        let refused = |reason: &str| Err(Error::config(format!("node name `{name}`"), reason));
        if core.resize.is_open() {
            return refused(
                "a node added warm is in its resize_warmup window: drain after it ends",
            );
        }
        if let Some(reason) = core.drain_in_doubt() {
            return refused(&reason);
        }
        if core.draining.swap(true, Ordering::AcqRel) {
            return refused("another node is being drained: one drain at a time");
        }
        Ok(Claim { core, switched: None })
    }
}

impl<M: NodeManager, S: Store<M>> Drop for Claim<'_, M, S> {
    fn drop(&mut self) {
        if let Some(drain) = self.switched.take() {
            // A batch cut short by a dropped future is in doubt.
            let in_flight =
                std::mem::take(&mut *drain.in_flight.lock().unwrap_or_else(|e| e.into_inner()));
            if !in_flight.is_empty() {
                drain.doubt(self.core.settings.response_timeout, in_flight);
            }
            drain.finish();
            // Kept while a move of it is in doubt: the nodes' connections
            // refuse writes of its keys till then (`drained.rs`).
            if drain.over() {
                self.core.drain.store(None);
            }
            // Its slot held the drain, which holds it.
            drain.node.resizing().stop();
            self.core.repoint();
            self.core.retire_removed(&drain.node);
        }
        self.core.draining.store(false, Ordering::Release);
    }
}
