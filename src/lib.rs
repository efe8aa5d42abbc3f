//! One pool in front of several Redis nodes that stays up when a node dies.
//!
//! `fluster` spreads keys over Redis nodes by rendezvous hashing and gives
//! each node its own [bb8] pool. A node that fails goes into a *penalty
//! box*: its keys flow to the next node in their ranking at once, without
//! waiting on the dead node, and a background task probes it with a growing
//! back-off and lets it back in when it answers again.
//!
//! ```no_run
//! use fluster::ShardedPool;
//! use redis::AsyncCommands;
//!
//! # async fn run() -> Result<(), fluster::Error> {
//! let pool = ShardedPool::builder()
//!     .node("redis://127.0.0.1:7001")
//!     .node("redis://127.0.0.1:7002")
//!     .node("redis://127.0.0.1:7003")
//!     .build()
//!     .await?;
//!
//! let mut conn = pool.get("user:42").await?;      // routed, with failover
//! let visits: i64 = conn.incr("user:42", 1).await?;
//! println!("{visits} visits, served by {}", conn.node());
//! # Ok(()) }
//! ```
//!
//! # What it is for, and what it is not
//!
//! Nothing is replicated or re-balanced. While a node is boxed its keys live
//! on another node; when it returns they go home, and what was written to
//! the stand-in stays there as a stale duplicate. That is the right trade for
//! caches, rate limiters, idempotent work queues and other data where "still
//! up, maybe a duplicate" beats "down". For data that must survive a node,
//! use Redis replication with Sentinel, or Redis Cluster.
//!
//! # Routing
//!
//! The node for a key is chosen by weighted rendezvous hashing of the
//! node *names* (see [`route`] for the exact, pinned function): reordering
//! the node list or moving a node to a new address keeps its keys, adding a
//! node moves only the keys it takes, and removing one moves only its own.
//! Redis Cluster hash tags work: `{user1}.a` and `{user1}.b` share a node.
//!
//! # Health
//!
//! Refused or reset connections, I/O errors, AUTH failures and the replies
//! `LOADING` and `MASTERDOWN` box a node at once; timeouts box it after
//! [`Builder::timeouts_before_penalty`] in a row. A checkout that waited on
//! a busy pool and ordinary error replies are not failures. Each stay in the
//! box lasts `penalty_min_wait * penalty_multiplier^k` (capped at
//! `penalty_max_wait`, shortened by a random jitter), where `k` counts the
//! probes that failed.
//!
//! # Metrics
//!
//! Install a [`metrics`] recorder (for Prometheus,
//! `metrics-exporter-prometheus`) before building the pool; the names are
//! in [`mod@metrics`]. Every state change is also a [`tracing`] event.
//!
//! [bb8]: https://docs.rs/bb8
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod builder;
#[cfg(feature = "serde")]
mod config;
mod connection;
mod error;
pub mod health;
mod manager;
pub mod metrics;
mod node;
mod pool;
mod reaper;
mod redis_manager;
pub mod route;

pub use crate::builder::{
    Builder, DEFAULT_CHECKOUT_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_PROBE_TIMEOUT,
};
#[cfg(feature = "serde")]
pub use crate::config::{Config, NodeConfig};
pub use crate::connection::Connection;
pub use crate::error::Error;
pub use crate::health::FailureKind;
pub use crate::manager::ClassifyFailure;
pub use crate::pool::{NodeStatus, ShardedPool};
pub use crate::redis_manager::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, RedisManager};
pub use bb8;
pub use redis;
