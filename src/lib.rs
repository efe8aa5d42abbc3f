//! One pool in front of several Redis nodes that stays up when a node dies.
//!
//! `fluster` spreads keys over Redis nodes by rendezvous hashing and gives
//! each node its own [bb8] pool. A node that fails goes into a *penalty
//! box*: its keys flow to the next node in their ranking at once, without
//! waiting on the dead node, and a background prober lets it back in when it
//! answers again.
//!
//! ```no_run
//! use fluster::ShardedPool;
//! use fluster::redis::AsyncCommands;
//!
//! # async fn run() -> Result<(), fluster::Error> {
//! let pool = ShardedPool::builder()
//!     .node("redis://127.0.0.1:7001")
//!     .named_node("cache-b", "redis://:secret@127.0.0.1:7002/1")
//!     .build()
//!     .await?;
//! let mut conn = pool.get("user:42").await?; // routed, with failover
//! let visits: i64 = conn.incr("user:42", 1).await?;
//! println!("{visits} visits, served by {}", conn.node());
//! # Ok(()) }
//! ```
//!
//! [`ShardedPool`] is `Clone + Send + Sync`: keep one in your app state and
//! call [`get`](ShardedPool::get) per request. A connection goes back to its
//! node's pool clean, or not at all (an open `MULTI`, a `SELECT`, a
//! cancelled command). Beyond one key:
//! [`get_shared`](ShardedPool::get_shared) (the node's multiplexed
//! connection), [`pipeline`](ShardedPool::pipeline),
//! [`transaction`](ShardedPool::transaction),
//! [`mget`](ShardedPool::mget)/[`mset`](ShardedPool::mset)/[`del`](ShardedPool::del),
//! [`fan_out`](ShardedPool::fan_out), [`get_n`](ShardedPool::get_n),
//! [`publish`](ShardedPool::publish)/[`subscribe`](ShardedPool::subscribe)
//! (pub/sub routed by channel), and
//! [`add_node`](ShardedPool::add_node)/[`remove_node`](ShardedPool::remove_node)
//! while traffic runs.
//!
//! When a node comes back, fluster damps a node that flaps
//! ([`Builder::penalty_memory`]), can hand its keys back gradually
//! ([`Builder::warmup`]), tells a connection served by a stand-in
//! ([`Connection::is_home`]) and sends every change to
//! [`events`](ShardedPool::events) receivers.
//!
//! As a cache: [`aside`](ShardedPool::aside) fills a missing key once
//! however many callers miss it (a lease), [`get_cached`](ShardedPool::get_cached)
//! answers hot reads from the near cache ([`Builder::near_cache`]),
//! [`Builder::gutter_node`] keeps a dead node's keys off the survivors,
//! and [`Builder::fleet`] lets the processes of a service tell each other
//! about nodes and clean up each other's stand-in copies.
//!
//! Nothing is replicated or re-balanced: while a node is boxed its keys live
//! on a stand-in, and what was written there stays behind when it returns.
//! That is the right trade for caches, rate limiters and idempotent queues;
//! data that must survive a node wants Sentinel shards or Redis Cluster.
//!
//! # The public items
//!
//! - [`ShardedPool`] (built by [`Builder`], or from `Config` with feature
//!   `serde`), the [`Connection`] and [`SharedConnection`] it hands out,
//!   [`ShardedPipeline`], [`Subscription`];
//! - what it reports: [`NodeStatus`] (with [`PoolStats`]), [`NodeEvent`]
//!   (with [`News`] from the fleet),
//!   [`FailureKind`], [`NodeName`], [`Error`], and the metric names in
//!   [`mod@metrics`];
//! - what configures it: [`Settings`] (every setting and its default),
//!   [`Failover`], `NodeConfig` and `TlsIdentity` (features `serde`,
//!   `tls`), `SentinelShard` (feature `sentinel`), the `DEFAULT_*`
//!   timeouts and [`GUTTER_TTL`];
//! - what shards other managers: [`RedisManager`] (the default),
//!   [`NodeManager`], [`ClassifyFailure`], [`ConnectionAbilities`];
//! - [`route`], the pinned routing function on its own; `sync` (feature
//!   `r2d2`), the same pool for synchronous code; and the `bb8` and `redis`
//!   crates it is built on.
//!
//! # How it is built
//!
//! Folders are the layers, read bottom up (`CONTRIBUTING.md`'s Layout lists each
//! file's job). At the bottom, pure parts that need no server: [`route`]
//! (the pinned routing function, and the per-call policy that follows a
//! key's ranking), what a command is (its words parsed once, the command
//! table naming the keys a write touches, a node's own read from its
//! server over the vendored one), the stand-in writes' journal, and a
//! node's health (every penalty-box decision, time passed in):
//!
//! ```
//! use fluster::route::Router;
//!
//! let router = Router::new([("cache-a", 1.0), ("cache-b", 1.0), ("cache-c", 2.0)]);
//! let home = router.home(b"{user1}.cart").unwrap();
//! assert_eq!(router.home(b"{user1}.profile"), Some(home)); // same hash tag
//! assert_eq!(router.ranking(b"{user1}.cart")[0], home); // then its failover order
//! ```
//!
//! Above them: the settings, what talks to Redis (the manager, the near
//! cache), a node at run time (its health cell, its store of connections,
//! the one checkout race, the probe and the heartbeat), then the runtime
//! both flavours drive, each with a short loop around the same step. Every
//! checkout (`get`, `get_any`, `get_shared`, pipelines, the sync flavour)
//! races its node being boxed; every outcome, an error or an error reply
//! such as `LOADING` inside an `Ok`, reaches the node through one
//! classifier; every setting is a field of [`Settings`].
//!
//! # Metrics and logs
//!
//! Install a [`metrics`] recorder before building the pool; every series a
//! node can have exists from the moment it joins. Names are in
//! [`mod@metrics`]; all carry a `node` label, which never holds credentials.
//! Every state change is a [`tracing`] event (`warn` boxed, `info` returned).
//!
//! # Feature flags
//!
//! * `tls`: `rediss://` URLs, through rustls.
//! * `r2d2`: `fluster::sync`, the same pool for synchronous code.
//! * `sentinel`: shards served by Redis Sentinel master groups.
//! * `serde`: `Config` (TOML, JSON, environment) and `Serialize` for
//!   [`NodeStatus`].
//!
//! Any `bb8::ManageConnection` whose error implements [`ClassifyFailure`]
//! can be sharded too ([`Builder::manager`]).
//!
//! [bb8]: https://docs.rs/bb8
//!
#![doc = include_str!("../docs/guide.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

// Folders are the layers, read bottom up in CONTRIBUTING.md's Layout: each
// module imports only from those below it (no import loops).
mod aside;
mod backend;
mod build;
mod command;
mod error;
mod flavours;
mod fleet;
mod health;
pub mod metrics;
mod multi;
mod node;
mod pool;
mod pubsub;
mod random;
pub mod route;
mod runtime;
mod settings;
mod stand_in;
#[cfg(feature = "r2d2")]
#[cfg_attr(docsrs, doc(cfg(feature = "r2d2")))]
pub mod sync;

pub use crate::backend::manager::RedisManager;
pub use crate::build::builder::{AsyncPool, Builder};
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use crate::build::config::Config;
pub use crate::error::Error;
pub use crate::health::event::{News, NodeEvent};
pub use crate::health::failure::{ClassifyFailure, FailureKind};
pub use crate::health::record::PoolStats;
pub use crate::multi::ShardedPipeline;
pub use crate::node::connection::{Connection, SharedConnection};
pub use crate::node::tracked::{ConnectionAbilities, NodeManager};
pub use crate::pool::ShardedPool;
pub use crate::pubsub::Subscription;
pub use crate::route::hash::NodeName;
pub use crate::runtime::drain::{DRAIN_BATCH, DRAIN_PAUSE};
pub use crate::runtime::status::NodeStatus;
pub use crate::runtime::sweep::SweepEnd;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use crate::settings::NodeConfig;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use crate::settings::TlsIdentity;
#[cfg(feature = "sentinel")]
#[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
pub use crate::settings::sentinel::SentinelShard;
pub use crate::settings::{
    DEFAULT_CHECKOUT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PROBE_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, Failover, GUTTER_TTL, Settings,
};
pub use bb8;
pub use redis;

/// Every Rust block of the README, compiled as a doc test, so a block a
/// user copies builds.
#[cfg(all(doctest, feature = "serde", feature = "tls", feature = "sentinel", feature = "r2d2"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
