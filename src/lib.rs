//! One pool in front of several Redis nodes that stays up when a node dies.
//!
//! `fluster` spreads keys over Redis nodes by rendezvous hashing and gives
//! each node its own [bb8] pool. A node that fails goes into a *penalty
//! box*: its keys flow to the next node in their ranking at once, without
//! waiting on the dead node, and a background task probes it with a growing
//! back-off and lets it back in when it answers again.
//!
//! # Quick start
//!
//! ```no_run
//! use fluster::ShardedPool;
//! use redis::AsyncCommands;
//!
//! # async fn run() -> Result<(), fluster::Error> {
//! let pool = ShardedPool::builder()
//!     .node("redis://127.0.0.1:7001")
//!     .node("redis://127.0.0.1:7002")
//!     .named_node("cache-c", "redis://:secret@127.0.0.1:7003/1")
//!     .build()
//!     .await?;
//!
//! let mut conn = pool.get("user:42").await?;      // routed, with failover
//! let visits: i64 = conn.incr("user:42", 1).await?;
//! println!("{visits} visits, served by {}", conn.node());
//! # Ok(()) }
//! ```
//!
//! [`ShardedPool`] is `Clone + Send + Sync`; keep one in your app state
//! (axum `State`, actix-web `web::Data`) and call [`ShardedPool::get`] per
//! request. The connection it returns implements
//! [`redis::aio::ConnectionLike`], so every `redis` command works on it, and
//! goes back to its node's pool when dropped. `examples/axum.rs` and
//! `examples/actix.rs` are complete services with `/metrics` and `/status`.
//!
//! # Beyond one key
//!
//! * [`ShardedPool::get_shared`]: a clone of the node's shared multiplexed
//!   connection instead of a checkout, for high-concurrency traffic.
//! * [`ShardedPool::pipeline`]: commands for many keys, sent as one pipeline
//!   per node, replies in order ([`ShardedPipeline`]).
//! * [`ShardedPool::mget`], [`ShardedPool::mset`], [`ShardedPool::del`]:
//!   multi-key commands split by node and merged in order.
//! * [`ShardedPool::fan_out`]: a closure on every healthy node at once
//!   (merging sorted sets, queue consumers; see `examples/fan_out.rs`).
//! * [`ShardedPool::get_n`]: the key's first `n` healthy nodes, for data
//!   written to several.
//! * [`ShardedPool::add_node`] and [`ShardedPool::remove_node`] while
//!   traffic runs: the routing table is swapped whole, readers never lock.
//!
//! # What it is for, and what it is not
//!
//! Nothing is replicated or re-balanced. While a node is boxed its keys live
//! on another node; when it returns they go home, and what was written to
//! the stand-in stays there as a stale duplicate (and the returning node has
//! whatever it kept, often nothing). That is the right trade for caches,
//! rate limiters, idempotent work queues and other data where "still up,
//! maybe a duplicate" beats "down". For data that must survive a node, use
//! Redis replication with Sentinel, or Redis Cluster.
//!
//! # Routing
//!
//! The node for a key is chosen by weighted rendezvous hashing of the
//! node *names* (see [`route`] for the exact, pinned function): reordering
//! the node list or moving a node to a new address keeps its keys, adding a
//! node moves only the keys it takes, and removing one moves only its own.
//! Redis Cluster hash tags work: `{user1}.a` and `{user1}.b` share a node.
//! [`ShardedPool::node_for`] says where a key goes now,
//! [`ShardedPool::home_node_for`] where it goes when all is well. The
//! router itself needs no server:
//!
//! ```
//! use fluster::route::Router;
//!
//! let router = Router::new([("cache-a", 1.0), ("cache-b", 1.0), ("cache-c", 2.0)]);
//! let home = router.home(b"{user1}.cart").unwrap();
//! assert_eq!(router.home(b"{user1}.profile"), Some(home)); // same hash tag
//! let failover_order = router.ranking(b"{user1}.cart");     // if `home` is boxed
//! assert_eq!(failover_order[0], home);
//! ```
//!
//! # Health
//!
//! Refused or reset connections, I/O errors, AUTH failures and the replies
//! `LOADING` and `MASTERDOWN` box a node at once; timeouts box it after
//! [`Builder::timeouts_before_penalty`] in a row (a slow node is not a dead
//! node). A checkout that waited on a busy pool and ordinary error replies
//! (`WRONGTYPE`, `ERR ...`) are not failures. Each stay in the box lasts
//! `penalty_min_wait * penalty_multiplier^k`, capped at `penalty_max_wait`
//! and shortened by a random jitter, where `k` counts the probes that
//! failed. The reaper probes (connect, then PING) when the stay runs out.
//!
//! A `get` never waits on a dead node: its checkout races the node being
//! boxed and moves to the key's next node the moment it is. What a caller
//! can see fail is the command that was in flight on a socket when its node
//! died.
//!
//! ## Choosing the penalty settings
//!
//! * `penalty_min_wait` (default 200 ms) is how soon a node that blinked (a
//!   restart, a failover) is probed and gets its keys back. Shorter means
//!   fewer keys served elsewhere, longer means fewer probes of a node that
//!   is really down.
//! * `penalty_max_wait` (default 30 s) bounds how long keys stay away from a
//!   node that has come back after a long outage.
//! * `penalty_multiplier` (default 1.5) sets how fast the probing slows
//!   down: after `k` failed probes the stay is `min * multiplier^k`.
//! * `timeouts_before_penalty` (default 3) with `response_timeout` (default
//!   500 ms) decides how slow a node may be before it is treated as dead.
//!
//! # Metrics and logs
//!
//! Install a [`metrics`] recorder *before* building the pool; each node
//! registers its handles at build time, so the hot path touches no
//! registry. With Prometheus:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//!
//! let prometheus = PrometheusBuilder::new()
//!     // Real histogram buckets for the checkout latency, not summaries.
//!     .set_buckets_for_metric(
//!         Matcher::Full(fluster::metrics::CHECKOUT_SECONDS.into()),
//!         &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0],
//!     )?
//!     .install_recorder()?;
//! let pool = fluster::ShardedPool::builder()
//!     .node("redis://127.0.0.1:7001")
//!     .build()
//!     .await?;
//! let text = prometheus.render(); // serve this at /metrics
//! # Ok(()) }
//! ```
//!
//! The names are in [`mod@metrics`]; all carry a `node` label.
//! `contrib/grafana-dashboard.json` charts them. Every state change is a
//! [`tracing`] event: `warn` when a node is boxed, `info` when it returns,
//! `debug` for each probe; nothing is logged per command.
//! [`ShardedPool::status`] gives the same picture as data (serializable with
//! the `serde` feature).
//!
//! # Feature flags
//!
//! * `tls`: `rediss://` URLs, through rustls.
//! * `r2d2`: `fluster::sync`, the same pool for synchronous code, over r2d2.
//! * `sentinel`: shards served by Redis Sentinel master groups
//!   (`SentinelShard`), for data that must survive a node.
//! * `serde`: `Config` to build a pool from TOML, JSON or environment
//!   variables, and `Serialize` for [`NodeStatus`].
//!
//! # Other connection managers
//!
//! [`ShardedPool`] is generic over any `bb8::ManageConnection` whose error
//! implements [`ClassifyFailure`], such as `bb8_redis::RedisConnectionManager`;
//! add such nodes with [`Builder::manager`].
//!
//! [bb8]: https://docs.rs/bb8
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

// Floors, bottom up: each module imports only from those above it here.
mod builder;
mod connection;
mod error;
pub mod health;
mod manager;
pub mod metrics;
mod multi;
mod node;
mod pool;
pub mod route;
mod settings;
#[cfg(feature = "r2d2")]
#[cfg_attr(docsrs, doc(cfg(feature = "r2d2")))]
pub mod sync;

pub use crate::builder::{Async, Builder};
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use crate::builder::{Config, NodeConfig};
pub use crate::connection::{Connection, SharedConnection};
pub use crate::error::Error;
pub use crate::health::{ClassifyFailure, FailureKind};
pub use crate::manager::RedisManager;
#[cfg(feature = "sentinel")]
#[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
pub use crate::manager::SentinelShard;
pub use crate::multi::ShardedPipeline;
pub use crate::node::{NodeManager, NodeStatus};
pub use crate::pool::ShardedPool;
pub use crate::route::NodeName;
pub use crate::settings::{
    DEFAULT_CHECKOUT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PROBE_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, Failover,
};
pub use bb8;
pub use redis;
