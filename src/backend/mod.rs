//! What talks to Redis on a node's behalf: [`RedisManager`](crate::RedisManager)
//! (`manager.rs`), Sentinel-backed shards (`sentinel.rs`), and the near
//! cache its tracking connection keeps true (`near.rs`, with what a
//! command asks of it in `reads.rs`).

pub(crate) mod manager;
pub(crate) mod near;
pub(crate) mod reads;
#[cfg(feature = "sentinel")]
pub(crate) mod sentinel;
