//! A node at run time: its health cell, where its connections live (its
//! store: bb8's in `store.rs`, the synchronous flavour's r2d2 beside it in
//! `blocking.rs`), the probe and the heartbeat; its shared connection is
//! made and kept in `shared.rs`. Beside it:
//! the one checkout race (`race.rs`), a call's clock (`clock.rs`), the
//! session a connection's commands left behind (`session.rs`), its command
//! table read from its server (`learn.rs`), what a probe asks (`probe.rs`), the connections handed to callers (`connection/`,
//! `tracked.rs`, `shared.rs`), and what their readers see of an `aside`
//! lease (`lease.rs`).

#[cfg(feature = "r2d2")]
pub(crate) mod blocking;
pub(crate) mod clock;
pub(crate) mod connection;
pub(crate) mod learn;
pub(crate) mod lease;
pub(crate) mod probe;
mod race;
pub(crate) mod session;
pub(crate) mod shared;
pub(crate) mod store;
pub(crate) mod tracked;
pub(crate) mod warm;

pub(crate) use probe::{judge, timed_out};
pub(crate) use store::{Bb8, CheckoutError, Store, Try, bb8_pool};

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::backend::entries::Counts;
use crate::backend::manager::{Listen, RedisManager};
use crate::backend::near::{NearCache, Tracking};
use crate::health::cell::HealthCell;
use crate::health::failure::{FailureKind, Seen, failure, one_line};
use crate::health::pool_wide::PoolWide;
use crate::health::record::PoolStats;
use crate::node::learn::learn;
use crate::node::probe::{Probe, ProbeCheck, failed, retest};
use crate::node::shared::SharedSocket;
use crate::node::tracked::{ConnectionAbilities, NodeManager, Tracked, TrackedConn};
use crate::node::warm::Resizing;
use crate::route::NodeName;
use crate::settings::Settings;
use crate::stand_in::journal::Journal;

/// What a node is made from: its name, weight and manager, how its
/// tracking connection is made if it has a near cache, and how a pub/sub
/// connection is, if it can make one (a Redis node).
pub(crate) struct NodeParts<M: NodeManager> {
    pub(crate) name: String,
    pub(crate) weight: f64,
    pub(crate) manager: M,
    pub(crate) tracking: Option<Tracking<M>>,
    pub(crate) listen: Option<Listen>,
    /// Whether it is a gutter node: it holds no keys of its own.
    pub(crate) gutter: bool,
}

impl<M: NodeManager> NodeParts<M> {
    /// A node of `manager`, without a near cache or pub/sub.
    pub(crate) fn new(name: &str, weight: f64, manager: M) -> Self {
        NodeParts {
            name: name.to_owned(),
            weight,
            manager,
            tracking: None,
            listen: None,
            gutter: false,
        }
    }
}

/// One node of a pool: its state is its own, behind methods that say
/// what their callers want; its health cell and journal have their own.
pub(crate) struct Node<M: NodeManager, S> {
    cell: Arc<HealthCell>,
    weight: f64,
    /// Whether it is a gutter node: it holds no keys of its own, and takes
    /// a boxed node's while it is away.
    gutter: bool,
    store: S,
    manager: Arc<M>,
    probe_timeout: Duration,
    /// The longest a connect in flight takes: how long a checkout woken by
    /// a failure waits before it asks its pool again (`race.rs`).
    connect_timeout: Duration,
    /// The user's own probe check, if any.
    check: Option<ProbeCheck<M::Connection>>,
    /// Set while a heartbeat is under way: one at a time.
    beating: AtomicBool,
    /// The heartbeat's timeout (`response_timeout`) and most `PING`s in a
    /// row (`timeouts_before_penalty`).
    beat: (Duration, u32),
    /// Its shared connection, and its near cache if it has one.
    shared: Shared<M>,
    /// The writes for its keys that stand-ins took.
    journal: Arc<Journal>,
    /// How a pub/sub connection to it is made, if it can be.
    listen: Option<Listen>,
    /// Its part in a resize (`warm.rs`).
    resize: Arc<Resizing>,
}

/// A node's shared connection and what rides on it: the multiplexed
/// connection, made by one caller at a time, and with a near cache, the
/// cache and how its tracking connection is made.
struct Shared<M: NodeManager> {
    mux: ArcSwapOption<SharedSocket<M::Connection>>,
    /// Lets one caller connect the multiplexed connection while the others
    /// wait for its result.
    connecting: tokio::sync::Mutex<()>,
    near: Option<Arc<NearCache>>,
    tracking: Option<Tracking<M>>,
}

impl<M: NodeManager, S> fmt::Debug for Node<M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.cell.name)
            .field("weight", &self.weight)
            .field("up", &self.cell.is_up())
            .finish_non_exhaustive()
    }
}

impl<M: NodeManager, S: Store<M>> Node<M, S> {
    /// A node whose connections live in what `store` makes of its tracked
    /// manager; nothing is connected yet.
    pub(crate) fn new(
        NodeParts { name, weight, manager, tracking, listen, gutter }: NodeParts<M>,
        settings: &Settings,
        pool_wide: &Arc<PoolWide>,
        check: Option<ProbeCheck<M::Connection>>,
        store: impl FnOnce(Tracked<M>) -> S,
    ) -> Self {
        let cell = Arc::new(HealthCell::new(&name, settings.policy(), pool_wide.clone()));
        let near =
            tracking.as_ref().map(|t| Arc::new(NearCache::new(t.entries, cell.commands.clone())));
        let manager = Arc::new(manager);
        let (inner, within) = (manager.clone(), settings.response_timeout);
        let resize = Arc::new(Resizing::default());
        let tracked = Tracked {
            inner,
            cell: cell.clone(),
            near: near.clone(),
            within,
            resize: resize.clone(),
        };
        let fleet = settings.fleet.as_deref().filter(|_| settings.invalidate_on_return);
        let relay = (pool_wide.teller, cell.metrics.relay_counters());
        let journal = Arc::new(Journal::new(cell.metrics.stand_in_counters(), fleet, &name, relay));
        let shared = Shared {
            mux: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            near,
            tracking,
        };
        Node {
            cell,
            weight,
            gutter,
            store: store(tracked),
            manager,
            probe_timeout: settings.probe_timeout,
            connect_timeout: settings.connect_timeout,
            check,
            beating: AtomicBool::new(false),
            beat: (settings.response_timeout, settings.timeouts_before_penalty),
            shared,
            journal,
            listen,
            resize,
        }
    }

    pub(crate) fn name(&self) -> &NodeName {
        &self.cell.name
    }

    /// Its health: the cell that holds it and applies the verdicts.
    #[inline]
    pub(crate) fn health(&self) -> &Arc<HealthCell> {
        &self.cell
    }

    /// Whether it is in rotation (not boxed).
    #[inline]
    pub(crate) fn is_up(&self) -> bool {
        self.cell.is_up()
    }

    /// Its routing weight.
    pub(crate) fn weight(&self) -> f64 {
        self.weight
    }

    /// Whether it is a gutter node: it holds no keys of its own, and takes
    /// a boxed node's while it is away.
    #[inline]
    pub(crate) fn is_gutter(&self) -> bool {
        self.gutter
    }

    /// Its connection manager (a drain asks it the node's address).
    pub(crate) fn manager(&self) -> &M {
        &self.manager
    }

    /// The writes for its keys that stand-ins took.
    pub(crate) fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Its part in a resize: the runtime sets it, its connections ask it.
    pub(crate) fn resizing(&self) -> &Resizing {
        &self.resize
    }

    /// How a pub/sub connection to it is made, if it can be.
    pub(crate) fn listen(&self) -> Option<&Listen> {
        self.listen.as_ref()
    }

    /// How long a probe of it, or a connection of the pool's own, may take.
    pub(crate) fn probe_timeout(&self) -> Duration {
        self.probe_timeout
    }

    /// What its store holds and has done.
    pub(crate) fn stats(&self) -> PoolStats {
        self.store.stats()
    }

    /// Its near cache's figures, if it has one ([`NearCache::figures`]):
    /// `sample` as there.
    pub(crate) fn near_figures(&self, sample: bool) -> Option<(Counts, u64, u64)> {
        self.shared.near.as_ref().map(|near| near.figures(sample))
    }

    /// Closes what the node holds while it is boxed: idle pooled
    /// connections and the multiplexed connection (checked-out ones close
    /// when they come back, their epoch being past).
    pub(crate) fn release(&self) {
        self.store.release();
        self.shared.mux.store(None);
        if let Some(near) = &self.shared.near {
            near.clear();
        }
    }

    /// Whether the node needs a heartbeat now: it is up, and it did not
    /// answer since the last call, or it has a near cache's tracking
    /// connection, whose entries are trusted only while it answers and
    /// which is asked each interval what the server did unannounced
    /// ([`NearCache::watch`]).
    pub(crate) fn needs_heartbeat(&self) -> bool {
        let quiet = !self.cell.take_seen();
        let tracking = self.live_mux().is_some_and(|mux| mux.near.is_some());
        self.cell.is_up() && (quiet || tracking)
    }

    /// The heartbeat: one check of the node, on its shared connection if it
    /// has a live one (with a near cache, the tracking connection's
    /// `INFO`, which the cache reads), else on a pooled one; judged and
    /// reported like any command. One at a time per node.
    ///
    /// A check that misses `response_timeout` is followed at once by a
    /// `PING` (on a fresh connection), not an interval later, until the
    /// node answers or `timeouts_before_penalty` misses in a row box it: a
    /// hung idle node is boxed within one interval plus
    /// `timeouts_before_penalty` × `response_timeout`.
    pub(crate) async fn heartbeat(&self) {
        if self.beating.swap(true, Ordering::AcqRel) {
            return;
        }
        self.beat_once().await;
        for _ in 1..self.beat.1 {
            if !self.cell.is_up() || self.cell.health().consecutive_timeouts() == 0 {
                break;
            }
            self.beat_again().await;
        }
        // Its own answer is no traffic: the next interval asks again if
        // nothing else answers (`last_ok` has noted it).
        self.cell.take_seen();
        self.beating.store(false, Ordering::Release);
    }

    /// One `PING` of the heartbeat, within `response_timeout`.
    async fn beat_once(&self) {
        let timeout = self.beat.0;
        let shared = self.live_mux();
        let check = shared.as_ref().and_then(|mux| {
            let check = match (&mux.near, &self.shared.tracking) {
                (Some(near), Some(tracking)) => Some((tracking.watch)(&mux.conn, near.clone())),
                _ => mux.conn.ping_shared(),
            };
            Some((mux, check?))
        });
        match check {
            Some((mux, check)) => match tokio::time::timeout(timeout, check).await {
                Ok(answer) => mux.observe(failure(&answer)),
                Err(_) => {
                    let (kind, error) = timed_out(timeout);
                    mux.observe(Some((kind, &error)));
                }
            },
            None => self.store.heartbeat(&self.manager, timeout).await,
        }
    }

    /// A heartbeat's `PING` after one that missed: on a fresh connection
    /// (the missed one's is broken, and a pooled connect could wait out
    /// the checkout unreported), within `response_timeout`, its outcome
    /// reported like any command's.
    async fn beat_again(&self) {
        let (epoch, timeout) = (self.cell.epoch(), self.beat.0);
        let outcome = tokio::time::timeout(timeout, self.connect_valid()).await.ok();
        match judge(outcome, timeout) {
            Ok(_) => self.cell.report_success(),
            Err((kind, error)) => drop(self.cell.report((kind, &error), epoch, Seen::Running)),
        }
    }

    /// Probes the node, whichever the flavour: a fresh connection, the
    /// manager's `is_valid`, then the re-test of what boxed it, within the
    /// probe timeout; the store may keep the connection.
    pub(crate) async fn probe(&self) -> Probe {
        let epoch = self.cell.epoch();
        let attempt = async {
            let mut conn = self.connect_valid().await?;
            retest(&mut conn, self.cell.wants_master(), self.check.as_ref()).await?;
            Ok(conn)
        };
        let outcome = tokio::time::timeout(self.probe_timeout, attempt).await.ok();
        let mut conn = judge(outcome, self.probe_timeout)?;
        self.cell.answered();
        // A connection whose `COMMAND` went unanswered is dropped, not kept.
        if !learn(&mut conn, &self.cell, epoch, self.beat.0).await {
            return Ok(());
        }
        let (near, resize) = (self.shared.near.clone(), self.resize.clone());
        self.store.adopt(TrackedConn::new(conn, epoch, self.cell.clone(), (near, resize)));
        Ok(())
    }

    /// Checks the up node at once, on a fresh connection (the manager's
    /// `is_valid`, for Redis a `PING`) within the probe timeout: another
    /// process of the fleet said it boxed the node. A failure boxes it at
    /// once, for this process's own evidence now agrees with the news.
    pub(crate) async fn check(&self) {
        let epoch = self.cell.epoch();
        let outcome = tokio::time::timeout(self.probe_timeout, self.connect_valid()).await.ok();
        match judge(outcome, self.probe_timeout) {
            Ok(_) => self.cell.answered(),
            Err((kind, error)) => drop(self.cell.report((kind, &error), epoch, Seen::Checked)),
        }
    }

    async fn connect_valid(&self) -> Result<M::Connection, (FailureKind, String)> {
        let mut conn = self.manager.connect().await.map_err(|e| failed(&e))?;
        self.manager.is_valid(&mut conn).await.map_err(|e| failed(&e))?;
        Ok(conn)
    }

    /// Sends the pool's own `pipe` (a return's deletes, the fleet's news)
    /// on a connection of its own, within the probe timeout, judged by the
    /// one classifier: the replies, or `Ok(None)` if the node's
    /// connections cannot carry the pool's own commands
    /// ([`ConnectionAbilities::redis`]): nothing was sent.
    pub(crate) async fn send_own(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<Option<Vec<redis::Value>>, (FailureKind, String)> {
        let attempt = async {
            let mut conn = self.manager.connect().await.map_err(|e| failed(&e))?;
            let Some(conn) = conn.redis() else { return Ok(None) };
            let replies = conn.req_packed_commands(pipe, 0, pipe.len()).await;
            if let Some((kind, e)) = failure(&replies) {
                return Err((kind, one_line(e)));
            }
            replies.map(Some).map_err(|e| failed(&e))
        };
        judge(tokio::time::timeout(self.probe_timeout, attempt).await.ok(), self.probe_timeout)
    }

    /// `GET key` answered from the node's near cache, if it holds the
    /// reply and its tracking connection is live (made since the node was
    /// last boxed, not seen failing): the typed fast path's hit. Anything
    /// else (a miss, a write in flight, no near cache) is `None`, and goes
    /// the ordinary way.
    pub(crate) fn near_hit(&self, key: &[u8]) -> Option<redis::Value> {
        let near = self.shared.near.as_ref()?;
        // A guard, not a clone: no reference count every reader writes.
        self.shared.mux.load().as_ref()?.is_live().then(|| near.hit(key))?
    }
}

impl<S: Store<RedisManager>> Node<RedisManager, S> {
    /// A pub/sub connection to the node, its outcome reported to its
    /// health.
    pub(crate) async fn pubsub(&self) -> Option<redis::aio::PubSub> {
        let epoch = self.cell.epoch();
        self.cell.connected(epoch, self.manager.pubsub().await).ok()
    }
}

/// Sends the pool's own `pipe` to every node of `nodes` but the one named
/// `name` that is up, all at once, each on a connection of its own
/// ([`Node::send_own`]): the replies of those that answered, with their
/// names. How the pool
/// tells or asks the other nodes about one node (its records on them, the
/// fleet's news); one that fails here is judged by its own traffic.
pub(crate) async fn send_to_others<M: NodeManager, S: Store<M>>(
    nodes: &[Arc<Node<M, S>>],
    name: &NodeName,
    pipe: &redis::Pipeline,
) -> Vec<(NodeName, Vec<redis::Value>)> {
    let others = nodes.iter().filter(|node| node.name() != name && node.is_up());
    let sent = others.map(|node| async { (*node.name(), node.send_own(pipe).await) });
    let sent = futures_util::future::join_all(sent).await;
    sent.into_iter().filter_map(|(name, replies)| Some((name, replies.ok()??))).collect()
}
