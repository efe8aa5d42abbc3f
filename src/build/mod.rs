//! How a pool is made: the [`Builder`](crate::Builder) of both flavours
//! (`builder.rs`; its Redis nodes in `redis.rs`; its checks and the async
//! `build` in `finish.rs`) and, with feature `serde`,
//! [`Config`](crate::Config) (`config.rs`), which reads the same settings
//! from files.

pub(crate) mod builder;
#[cfg(feature = "serde")]
pub(crate) mod config;
mod finish;
mod redis;
