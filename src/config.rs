//! [`Config`]: a pool described as data, for TOML files, JSON or environment
//! variables (feature `serde`).

use std::time::Duration;

use serde::Deserialize;

use crate::builder::{Builder, Failover};
use crate::error::Error;
use crate::pool::ShardedPool;

/// A pool's nodes and settings as data: deserialize it with serde (for
/// example through the `config` crate, from TOML or environment
/// variables), then call [`build`](Self::build).
///
/// Field names are the [`Builder`] method names; durations are written the
/// human way (`"250ms"`, `"30s"`, `"1m 30s"`); omitted settings keep the
/// builder's defaults; unknown fields are rejected, naming the field.
///
/// ```toml
/// nodes = [
///     "redis://127.0.0.1:7001",
///     { name = "cache-b", url = "redis://127.0.0.1:7002/2", weight = 2.0 },
/// ]
/// penalty_min_wait = "200ms"
/// penalty_max_wait = "30s"
/// penalty_multiplier = 1.5
/// response_timeout = "250ms"
/// ```
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config: fluster::Config = serde_json::from_str(
///     r#"{ "nodes": ["redis://127.0.0.1:7001"], "penalty_max_wait": "10s" }"#,
/// )?;
/// let pool = config.build().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The nodes: each a URL, or a table with `url` and optional `name`
    /// and `weight`.
    pub nodes: Vec<NodeConfig>,
    /// See [`Builder::penalty_min_wait`].
    #[serde(default, with = "humantime_serde")]
    pub penalty_min_wait: Option<Duration>,
    /// See [`Builder::penalty_max_wait`].
    #[serde(default, with = "humantime_serde")]
    pub penalty_max_wait: Option<Duration>,
    /// See [`Builder::penalty_multiplier`].
    pub penalty_multiplier: Option<f64>,
    /// See [`Builder::penalty_jitter`].
    pub penalty_jitter: Option<f64>,
    /// See [`Builder::timeouts_before_penalty`].
    pub timeouts_before_penalty: Option<u32>,
    /// See [`Builder::connect_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// See [`Builder::response_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub response_timeout: Option<Duration>,
    /// See [`Builder::checkout_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub checkout_timeout: Option<Duration>,
    /// See [`Builder::probe_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub probe_timeout: Option<Duration>,
    /// See [`Builder::max_connections`].
    pub max_connections: Option<u32>,
    /// See [`Builder::min_idle`].
    pub min_idle: Option<u32>,
    /// See [`Builder::test_on_checkout`].
    pub test_on_checkout: Option<bool>,
    /// See [`Builder::failover`]: `"reroute"` or `"fail_fast"`.
    pub failover: Option<Failover>,
    /// See [`Builder::max_boxed_fraction`].
    pub max_boxed_fraction: Option<f64>,
    /// See [`Builder::probe_at_build`].
    pub probe_at_build: Option<bool>,
}

/// One node of a [`Config`]: a URL alone, or a URL with a name and weight.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum NodeConfig {
    /// A URL; the node is named after its address, with weight 1.
    Url(String),
    /// A URL with an optional name and weight.
    Full {
        /// The node's URL.
        url: String,
        /// The node's name (default: its `host:port`).
        name: Option<String>,
        /// The node's weight (default 1).
        weight: Option<f64>,
    },
}

impl Config {
    /// The builder this configuration describes, for settings that are not
    /// data (or to override some).
    pub fn into_builder(self) -> Builder {
        let mut b = ShardedPool::builder();
        for node in self.nodes {
            b = match node {
                NodeConfig::Url(url) => b.node(&url),
                NodeConfig::Full { url, name, weight } => {
                    b.redis_node(name.as_deref(), &url, weight.unwrap_or(1.0))
                }
            };
        }
        macro_rules! apply {
            ($($field:ident),*) => {
                $(if let Some(value) = self.$field {
                    b = b.$field(value);
                })*
            };
        }
        apply!(
            penalty_min_wait,
            penalty_max_wait,
            penalty_multiplier,
            penalty_jitter,
            timeouts_before_penalty,
            connect_timeout,
            response_timeout,
            checkout_timeout,
            probe_timeout,
            max_connections,
            test_on_checkout,
            failover,
            max_boxed_fraction,
            probe_at_build
        );
        if self.min_idle.is_some() {
            b = b.min_idle(self.min_idle);
        }
        b
    }

    /// Builds the pool: [`Builder::build`] on [`into_builder`](Self::into_builder).
    /// Invalid values are rejected with [`Error::Config`] naming the field.
    pub async fn build(self) -> Result<ShardedPool, Error> {
        self.into_builder().build().await
    }
}
