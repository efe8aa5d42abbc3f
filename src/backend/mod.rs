//! What talks to Redis on a node's behalf: [`RedisManager`](crate::RedisManager)
//! (`manager.rs`), Sentinel-backed shards (`sentinel.rs`), and the near
//! cache its tracking connection keeps true (`near.rs`, its shards in
//! `entries.rs`, and its RESP3 replies given back as RESP2 in `resp2.rs`;
//! what a command asks of it is the command room's to say).

pub(crate) mod entries;
pub(crate) mod manager;
pub(crate) mod near;
pub(crate) mod resp2;
#[cfg(feature = "sentinel")]
pub(crate) mod sentinel;
