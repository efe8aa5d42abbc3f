//! [`Builder`]: nodes and [`Settings`] for either flavour of pool, checked
//! in one place.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use crate::backend::manager::RedisManager;
use crate::error::Error;
use crate::node::NodeParts;
use crate::node::probe::ProbeCheck;
use crate::node::tracked::NodeManager;
use crate::pool::ShardedPool;
use crate::settings::{Failover, Settings};

/// Makes a node once every setting is known.
pub(super) type MakeNode<M> = Box<dyn FnOnce(&Settings) -> Result<NodeParts<M>, Error> + Send>;

pub(super) struct NodeSpec<M: NodeManager> {
    pub(super) name: String,
    pub(super) weight: f64,
    pub(super) make: MakeNode<M>,
    /// For a node given by URL: its server and database.
    pub(super) target: Option<(String, i64)>,
    /// Whether it is a gutter node.
    pub(super) gutter: bool,
}

/// What a [`Builder`] builds by default (its second type parameter): the
/// async [`ShardedPool`]. The synchronous pool's is
/// `fluster::sync::BlockingPool` (feature `r2d2`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncPool;

/// Builds a pool: nodes, then settings, then `build`.
///
/// One builder serves both flavours: `ShardedPool::builder()` makes the
/// async pool (`build().await`), and, with the `r2d2` feature,
/// `fluster::sync::ShardedPool::builder()` the synchronous one (a blocking
/// `build()`), with every setter shared. Each setter writes one field of
/// [`Settings`], of the same name, and the default each setter's doc
/// tells is `Settings::default()`'s, where every default is written once.
/// Setters never fail or panic; every value is checked by `build`, which
/// returns [`Error::Config`] naming the first bad one. Each setting has a
/// range in which the pool works, told in its doc; every duration is at
/// most 365 days (an optional one is `None` for never).
///
/// ```no_run
/// # async fn run() -> Result<(), fluster::Error> {
/// use std::time::Duration;
/// let pool = fluster::ShardedPool::builder()
///     .node("redis://127.0.0.1:7001")
///     .named_node("cache-b", "redis://127.0.0.1:7002/2")
///     .weighted_node("cache-c", "redis://127.0.0.1:7003", 2.0)
///     .penalty_min_wait(Duration::from_millis(200))
///     .penalty_max_wait(Duration::from_secs(30))
///     .penalty_multiplier(1.5)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub struct Builder<M: NodeManager = RedisManager, F = AsyncPool> {
    pub(super) nodes: Vec<NodeSpec<M>>,
    pub(super) check: Option<ProbeCheck<M::Connection>>,
    /// The first problem found while adding nodes, reported by `build`,
    /// with the node's place in the list and the name it was given.
    pub(super) error: Option<(usize, Option<String>, Error)>,
    /// How many nodes could not be added (their URL is wrong).
    pub(super) failed: usize,
    pub(super) settings: Settings,
    flavour: PhantomData<F>,
}

impl<M: NodeManager, F> fmt::Debug for Builder<M, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        f.debug_struct("Builder")
            .field("nodes", &names)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<M: NodeManager, F> Default for Builder<M, F> {
    fn default() -> Self {
        Builder {
            nodes: Vec::new(),
            check: None,
            error: None,
            failed: 0,
            settings: Settings::default(),
            flavour: PhantomData,
        }
    }
}

impl<M: NodeManager> Builder<M> {
    /// A builder for the async pool, with no nodes and default settings.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl ShardedPool<RedisManager> {
    /// A builder for a pool of Redis nodes given by URL.
    ///
    /// For other connection managers use [`Builder::new`] with
    /// [`Builder::manager`].
    #[must_use]
    pub fn builder() -> Builder<RedisManager> {
        Builder::new()
    }
}

/// Setters that write the [`Settings`] field of their name.
macro_rules! setters {
    (optional $($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {$(
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: impl Into<Option<$ty>>) -> Self {
            self.settings.$name = value.into();
            self
        }
    )*};
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {$(
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: $ty) -> Self {
            self.settings.$name = value;
            self
        }
    )*};
}
pub(super) use setters;

impl<M: NodeManager, F> Builder<M, F> {
    /// Adds a node served by your own connection manager, such as a
    /// `bb8_redis::RedisConnectionManager`, with weight 1. The manager owns
    /// its connect and response timeouts.
    #[doc = include_str!("../../docs/managers.md")]
    #[must_use]
    pub fn manager(self, name: &str, manager: M) -> Self {
        self.weighted_manager(name, manager, 1.0)
    }

    /// Adds a node served by your own connection manager, with a weight.
    #[must_use]
    pub fn weighted_manager(mut self, name: &str, manager: M, weight: f64) -> Self {
        let node = name.to_owned();
        self.nodes.push(NodeSpec {
            name: name.to_owned(),
            weight,
            make: Box::new(move |_| Ok(NodeParts::new(&node, weight, manager))),
            target: None,
            gutter: false,
        });
        self
    }

    /// Every setting at once (from a `Config`, say), replacing those set
    /// so far.
    #[must_use]
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Adds a check of your own to every probe of a boxed node (after the
    /// connect, the manager's `is_valid` and the pool's own re-test of
    /// what boxed it): given the probe's connection, any error keeps the
    /// node boxed, counted as [`FailureKind::Check`](crate::FailureKind::Check),
    /// with its text in `status().last_error`. A check that panics fails
    /// its probe the same way (the panic's message in `last_error`), and
    /// the node is probed again on schedule. Within `probe_timeout`; the
    /// sync flavour gives it an async connection of its own.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), fluster::Error> {
    /// let pool = fluster::ShardedPool::builder()
    ///     .node("redis://127.0.0.1:7001")
    ///     // Back in only once it holds its data again.
    ///     .probe_with(|conn| {
    ///         Box::pin(async move {
    ///             let keys: u64 = redis::cmd("DBSIZE").query_async(conn).await?;
    ///             if keys == 0 {
    ///                 return Err(std::io::Error::other("empty: still restoring").into());
    ///             }
    ///             Ok(())
    ///         })
    ///     })
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn probe_with<C>(mut self, check: C) -> Self
    where
        C: for<'c> Fn(&'c mut M::Connection) -> redis::RedisFuture<'c, ()> + Send + Sync + 'static,
    {
        self.check = Some(std::sync::Arc::new(check));
        self
    }

    setters! {
        /// First stay of a failed node in the penalty box (default 200 ms).
        penalty_min_wait: Duration;
        /// Longest stay in the box, however many probes fail (default 30 s).
        penalty_max_wait: Duration;
        /// Growth of the stay per failed probe, at least 1 (default 1.5).
        penalty_multiplier: f64;
        /// Fraction in `[0, 1]` by which each stay is shortened at random, so
        /// that many processes do not probe a recovering node together
        /// (default 0.2; 0 makes stays exact).
        penalty_jitter: f64;
        /// Flap damping (default 60 s; zero turns it off): a node boxed again
        /// within this time of its return starts its stay one back-off level
        /// above where its last stay ended, so a node that flaps is let back
        /// in less and less often; each full `memory` it stays up lowers the
        /// level by one again.
        penalty_memory: Duration;
        /// Slow start (default zero: off): over this window after a node
        /// returns from the box or joins the pool, the share of its keys
        /// routed to it grows from none to all, so a node that comes back
        /// empty does not send every miss of its keys to the database at
        /// once. Which keys go home first depends only on the key, so every
        /// process agrees and no key goes back and forth. Under
        /// `Failover::FailFast` keys go home at once.
        warmup: Duration;
        /// A node added warm (default zero: off): for this window after
        /// [`add_node`](crate::ShardedPool::add_node), a plain `GET` of a
        /// key that moved to the new node and misses there is read from
        /// the key's old home (the next node in its ranking) and the value
        /// copied over with the TTL it has left; before a write of a moved
        /// key is sent, the old home moves its copy to the new node
        /// (`MIGRATE`, so an `INCR` or `APPEND` goes on from the old
        /// value; a node added with its own manager, whose address the
        /// pool does not know, has the copy deleted instead), and one on the
        /// old home (a connection taken before `add_node`, or a write in
        /// flight across it) deletes the new home's copy after its reply.
        /// Set it to about
        /// your cached values' longest TTL: after that the old copies have
        /// expired anyway. Off by default because, for the few
        /// milliseconds of a copy, the key holds a marker that commands
        /// other than fluster's reads see as a string (an `INCR` of a key
        /// its old home no longer holds then fails). Warmed: a plain `GET`
        /// through `get`, `get_shared`, `get_cached` and `aside`, and the
        /// sync flavour's `get`; not `MGET`, nor reads in pipelines.
        resize_warmup: Duration;
        /// Timeouts in a row that box a node, at least 1 (default 3). Refused
        /// and reset connections and other failures box it at once.
        timeouts_before_penalty: u32;
        /// Longest a `get` may take, failover included (default 1 s); past it
        /// `get` returns [`Error::Timeout`]. Reached when a node's pool stays
        /// busy, or its connects keep timing out below the penalty
        /// threshold. A dead node never makes `get` wait: it is skipped as
        /// soon as it is boxed.
        checkout_timeout: Duration;
        /// Time a probe of a boxed node (connect and PING) may take
        /// (default 1 s). Also bounds the probes `build` makes.
        probe_timeout: Duration;
        /// Connections per node, from 1 to 10,000 (default 16).
        max_connections: u32;
        /// Whether to PING every connection as it is checked out (default
        /// false). The pool's own failure tracking makes this unnecessary,
        /// and it costs a round trip per `get`.
        test_on_checkout: bool;
        /// What `get(key)` does while the key's node is boxed (default
        /// [`Failover::Reroute`]).
        failover: Failover;
        /// The cascade guard: the largest fraction of the nodes that may be
        /// in the box at once, in `(0, 1]` (default 1: no cap). Past it,
        /// further failing nodes stay in rotation and their errors reach the
        /// callers ([`Error::NodeFailed`], or the command's own error), so
        /// one bad network moment cannot pile every key onto the last node.
        /// The cap is rounded down but never below one node: 0.5 of 3 nodes
        /// allows 1.
        max_boxed_fraction: f64;
        /// `build` fails with [`Error::NotEnoughHealthy`] unless at least
        /// this many nodes answer its probes (default 0: a pool builds with
        /// every node down, and serves as they come up). For services that
        /// should not start against a wrong address (a wrong password or
        /// certificate fails the build anyway: [`Error::Credentials`]; so
        /// does a database the server lacks: [`Error::Config`]).
        require_healthy: usize;
        /// Whether `build` connects to every node before it returns (default
        /// true). With `false` the pool builds at once, connecting lazily; a
        /// node that is down is then boxed by the first connect that fails.
        /// For very large pools, and for services that must start fast.
        probe_at_build: bool;
        /// Deletes, when a node returns from the box and before any of its
        /// keys are routed to it again, every copy this process wrote
        /// through a stand-in for one of its keys: on the stand-ins and on
        /// the node itself, whose own copies are older (default false).
        /// A key is remembered before its write leaves, and the return
        /// waits for writes still in flight (at most twice
        /// `response_timeout`) before it deletes. A connection taken for a
        /// key while its home was boxed and used after the return deletes
        /// what it writes there right after each reply.
        /// Remembers up to 65,536 keys per node; writes past that, and
        /// copies on a stand-in that cannot be reached at the return, are
        /// counted (`fluster_stand_in_writes_total{result="dropped"}`) and
        /// left to [`stand_in_ttl`](Self::stand_in_ttl). For caches; queues
        /// want the default, which keeps items pushed on a stand-in.
        invalidate_on_return: bool;
        /// Entries of each node's near cache, at most 1,000,000 (default 0:
        /// off; the table for them is allocated at `build`): its shared
        /// connection speaks RESP3 with client tracking, and reads through
        /// [`get_shared`](crate::ShardedPool::get_shared) (`GET`, `MGET`,
        /// `HGET`, `HMGET`, `HGETALL`, `SMEMBERS`, `EXISTS`, `TYPE`,
        /// `STRLEN`, `LRANGE`, `ZRANGE` and the other read-only commands
        /// on one key) are answered from process memory when cached. An
        /// entry is one reply to one read of a key (`HGET k a` and `HGET k
        /// b` are two): each node holds at most this many, least recently
        /// used out first (`fluster_near_cache_evictions_total`). No reply
        /// a caller sees changes: the RESP3 replies are given back in their
        /// RESP2 form.
        ///
        /// A read that starts after a write through this pool was
        /// acknowledged never returns the value from before it, whichever
        /// path carried the write (`get`, `get_shared`, a pipeline,
        /// `mset`, a transaction, `MULTI` ... `EXEC` one command at a
        /// time). Another client's write is seen once the server's
        /// invalidation arrives (under a millisecond on a quiet network);
        /// its `SWAPDB`, which the server announces to no tracking client,
        /// at the next [`heartbeat`](Self::heartbeat). A boxed node's
        /// entries are never served, and a dropped connection takes its
        /// entries with it (the heartbeat finds one cut off with its socket
        /// open). Nodes given by URL (not Sentinel shards), async flavour
        /// (the sync one has no shared connection).
        near_cache: usize;
        /// How long a fill of [`aside`](crate::ShardedPool::aside) may hold
        /// its key's lease (default 3 s): callers that find the lease wait
        /// for the value up to this long, then take the lease over, so a
        /// filler that died holds the key no longer. Set it above your
        /// slowest fill: a fill that outlives its lease still returns its
        /// value, but another caller fills too, and only the later store
        /// stands. Give every process that shares keys the same lease: a
        /// lease found with more time left than this one is taken for a
        /// value some client wrote, not a lease, and filled over.
        lease: Duration;
        /// XFetch's β for [`aside_early`](crate::ShardedPool::aside_early)
        /// (default 1; 0: off, and `aside_early` refreshes only on a miss,
        /// like `aside`): a hit refills in the background when
        /// `now − δ·β·ln(rand) ≥ expiry`, δ the key's last fill time. Above
        /// 1 refreshes earlier (fewer keys reach their expiry, more
        /// refills); below 1, later. Finite, at least 0.
        early_refresh: f64;
        /// Interval of the heartbeat (default 1 s; zero: off): an up node
        /// that carried no successful command during the last interval gets
        /// one `PING` within `response_timeout`, judged like any command; a
        /// `PING` that misses it is sent again at once (on a fresh
        /// connection) until the node answers or `timeouts_before_penalty`
        /// misses in a row box it. So a node that dies while the pool is
        /// idle is boxed within about one interval (refused), or one
        /// interval plus `timeouts_before_penalty` × `response_timeout`
        /// (hung: 2.5 s by default), and `status()` and `fluster_node_up` tell
        /// the truth at night too. Under traffic it sends nothing. With a
        /// near cache it also asks the tracking connection, each interval
        /// whatever the traffic, for `INFO commandstats` (a `SWAPDB` by
        /// anyone empties the cache), and must not be off.
        heartbeat: Duration;
    }

    setters! { optional
        /// Idle connections each node's pool keeps open, at most
        /// `max_connections` (default none).
        min_idle: u32;
        /// Closes connections unused this long, greater than zero (default
        /// 10 min, as bb8's; `None`: never).
        idle_timeout: Duration;
        /// Closes connections this old, greater than zero (default 30 min,
        /// as bb8's; `None`: never), so a pool does not hold sockets a load balancer or a
        /// server timeout will cut.
        max_lifetime: Duration;
        /// Caps the TTL of every key a stand-in writes for a boxed node
        /// (default `None`: off): each write command Redis's command table
        /// flags, sent where the key's home is not the serving node, is
        /// followed in the same round trip by `PEXPIRE key ttl LT` (inside
        /// a transaction's `MULTI`/`EXEC` if it is in one), so the copy
        /// lives at most `ttl` once its home is back. On every path: `get`,
        /// `get_shared`, `pipeline`, `mset`, `del`, `transaction`,
        /// [`fan_out`](crate::ShardedPool::fan_out) (for a key whose home
        /// is boxed), the sync flavour. A command whose keys neither
        /// Redis's table nor its words place (`EVAL` declaring no keys, a
        /// module's) caps the key the connection was taken for. Needs Redis
        /// 7.0 or later (`LT`).
        stand_in_ttl: Duration;
    }

    /// Joins the fleet `name` (default: none): processes with the same
    /// fleet name over the same nodes tell each other, through the nodes
    /// themselves (Redis pub/sub, channel `name` on every node), when they
    /// box a node or let one back in. News is a hint, never a verdict: a
    /// process that hears a node returned probes it at once (spread by a
    /// few milliseconds of jitter); one that hears it was boxed checks it
    /// at once; each decides on its own evidence.
    ///
    /// With [`invalidate_on_return`](Self::invalidate_on_return), each
    /// stand-in write also records its key on the stand-in, in the same
    /// round trip (a set `fluster:fleet:{name}:journal:{home}`, its TTL
    /// following [`stand_in_ttl`](Self::stand_in_ttl)), so the first
    /// process to let the home back in deletes every process's stand-in
    /// copies, a dead process's too; a record is removed only with its
    /// copies, so another process returning the home meanwhile finds it
    /// and deletes too.
    ///
    /// Costs one subscriber connection per node per process; messages
    /// travel only when a node changes state. Nodes given by URL or
    /// Sentinel (a pool of another manager refuses it), both flavours.
    #[doc = include_str!("../../docs/fleet.md")]
    #[must_use]
    pub fn fleet(mut self, name: &str) -> Self {
        self.settings.fleet = Some(name.to_owned());
        self
    }
}
