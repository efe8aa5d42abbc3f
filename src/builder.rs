//! [`Builder`]: nodes and settings for either flavour of pool, checked in
//! one place; and [`Config`], the same as data (feature `serde`).

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use crate::error::Error;
use crate::manager::{RedisManager, address, parse_url, target};
use crate::node::NodeManager;
use crate::pool::ShardedPool;
use crate::settings::{Failover, Settings, check_node};

/// Makes a node's manager once every setting is known.
type MakeManager<M> = Box<dyn FnOnce(&Settings) -> Result<M, Error> + Send>;

/// Each node's name, weight and manager, with the checked settings.
pub(crate) type Finished<M> = (Vec<(String, f64, M)>, Settings);

struct NodeSpec<M> {
    name: String,
    weight: f64,
    make: MakeManager<M>,
    /// For a node given by URL: its server and database.
    target: Option<(String, i64)>,
}

/// The flavour a [`Builder`] builds by default: the async [`ShardedPool`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Async;

/// Builds a pool: nodes, then settings, then `build`.
///
/// One builder serves both flavours: `ShardedPool::builder()` makes the
/// async pool (`build().await`), and, with the `r2d2` feature,
/// `fluster::sync::ShardedPool::builder()` the synchronous one (a blocking
/// `build()`), with every setter shared. Setters never fail or panic; every
/// value is checked by `build`, which returns [`Error::Config`] naming the
/// first bad one.
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
pub struct Builder<M: NodeManager = RedisManager, F = Async> {
    nodes: Vec<NodeSpec<M>>,
    /// The first problem found while adding nodes, reported by `build`.
    error: Option<Error>,
    settings: Settings,
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
            error: None,
            settings: Settings::default(),
            flavour: PhantomData,
        }
    }
}

impl<M: NodeManager> Builder<M> {
    /// A builder for the async pool, with no nodes and default settings.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ShardedPool<RedisManager> {
    /// A builder for a pool of Redis nodes given by URL.
    ///
    /// For other connection managers use [`Builder::new`] with
    /// [`Builder::manager`].
    pub fn builder() -> Builder<RedisManager> {
        Builder::new()
    }
}

impl<F> Builder<RedisManager, F> {
    /// Adds the node at `url`, named after its address (`host:port`, e.g.
    /// `"127.0.0.1:7001"`), with weight 1.
    ///
    /// Prefer [`named_node`](Self::named_node) in production: keys follow the
    /// *name*, so a named node can move to a new address and keep its keys.
    pub fn node(self, url: &str) -> Self {
        self.redis_node(None, url, 1.0)
    }

    /// Adds the node at `url` under `name`, with weight 1.
    pub fn named_node(self, name: &str, url: &str) -> Self {
        self.redis_node(Some(name), url, 1.0)
    }

    /// Adds the node at `url` under `name`, taking `weight` parts of the keys
    /// (a node of weight 2 gets twice the keys of a node of weight 1).
    pub fn weighted_node(self, name: &str, url: &str, weight: f64) -> Self {
        self.redis_node(Some(name), url, weight)
    }

    pub(crate) fn redis_node(mut self, name: Option<&str>, url: &str, weight: f64) -> Self {
        match parse_url(url) {
            Ok(info) => {
                let name = name.map_or_else(|| address(&info), str::to_owned);
                let target = Some(target(&info));
                let make = Box::new(move |settings: &Settings| {
                    RedisManager::from_settings(info, settings)
                });
                self.nodes.push(NodeSpec { name, weight, make, target });
            }
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Adds a shard served by a Redis Sentinel master group, under `name`,
    /// with weight 1: its connections go to the group's current master, and
    /// a Sentinel failover never moves its keys. Feature `sentinel`.
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    pub fn sentinel_node(mut self, name: &str, shard: crate::manager::SentinelShard) -> Self {
        self.nodes.push(NodeSpec {
            name: name.to_owned(),
            weight: 1.0,
            make: Box::new(move |settings| RedisManager::sentinel(&shard, settings)),
            target: None,
        });
        self
    }

    /// Time to establish a connection to a node (default 1 s). A connect
    /// timeout counts as a timeout failure.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Trusts these PEM root certificates (one or more, concatenated) for
    /// `rediss://` nodes instead of the platform's: for servers whose
    /// certificates come from a private CA. Feature `tls`.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.settings.tls_root_certificates = Some(pem.into());
        self
    }

    /// Presents this client certificate and private key (PEM) to
    /// `rediss://` servers that ask for one (`tls-auth-clients yes`):
    /// mutual TLS. Neither appears in `Debug`. Feature `tls`.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_client_certificate(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        let identity = crate::settings::ClientIdentity { cert: cert.into(), key: key.into() };
        self.settings.tls_client = Some(identity);
        self
    }

    /// Time to wait for a reply to a command (default 500 ms). Raise it for
    /// blocking commands such as `BRPOP`. A response timeout counts as a
    /// timeout failure and marks the connection broken.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.settings.response_timeout = timeout;
        self
    }
}

impl<M: NodeManager, F> Builder<M, F> {
    /// Adds a node served by your own connection manager, such as a
    /// `bb8_redis::RedisConnectionManager`, with weight 1. The manager owns
    /// its connect and response timeouts.
    pub fn manager(self, name: &str, manager: M) -> Self {
        self.weighted_manager(name, manager, 1.0)
    }

    /// Adds a node served by your own connection manager, with a weight.
    pub fn weighted_manager(mut self, name: &str, manager: M, weight: f64) -> Self {
        self.nodes.push(NodeSpec {
            name: name.to_owned(),
            weight,
            make: Box::new(move |_| Ok(manager)),
            target: None,
        });
        self
    }

    /// First stay of a failed node in the penalty box (default 200 ms).
    pub fn penalty_min_wait(mut self, wait: Duration) -> Self {
        self.settings.policy.min_wait = wait;
        self
    }

    /// Longest stay in the box, however many probes fail (default 30 s).
    pub fn penalty_max_wait(mut self, wait: Duration) -> Self {
        self.settings.policy.max_wait = wait;
        self
    }

    /// Growth of the stay per failed probe, at least 1 (default 1.5).
    pub fn penalty_multiplier(mut self, multiplier: f64) -> Self {
        self.settings.policy.multiplier = multiplier;
        self
    }

    /// Fraction in `[0, 1]` by which each stay is shortened at random, so
    /// that many processes do not probe a recovering node together
    /// (default 0.2; 0 makes stays exact).
    pub fn penalty_jitter(mut self, jitter: f64) -> Self {
        self.settings.policy.jitter = jitter;
        self
    }

    /// Flap damping (default 60 s; zero turns it off): a node boxed again
    /// within this time of its return starts its stay one back-off level
    /// above where its last stay ended, so a node that flaps is let back in
    /// less and less often; each full `memory` it stays up lowers the level
    /// by one again.
    pub fn penalty_memory(mut self, memory: Duration) -> Self {
        self.settings.policy.memory = memory;
        self
    }

    /// Slow start (default zero: off): over this window after a node
    /// returns from the box or joins the pool, the share of its keys routed
    /// to it grows from none to all, so a node that comes back empty does
    /// not send every miss of its keys to the database at once. Which keys
    /// go home first depends only on the key, so every process agrees and
    /// no key goes back and forth. Under `Failover::FailFast` keys go home
    /// at once.
    pub fn warmup(mut self, window: Duration) -> Self {
        self.settings.policy.warmup = window;
        self
    }

    /// Timeouts in a row that box a node, at least 1 (default 3). Refused
    /// and reset connections and other failures box it at once.
    pub fn timeouts_before_penalty(mut self, timeouts: u32) -> Self {
        self.settings.policy.timeout_threshold = timeouts;
        self
    }

    /// Longest a `get` may take, failover included (default 1 s); past it
    /// `get` returns [`Error::Timeout`]. Reached when a node's pool stays
    /// busy, or its connects keep timing out below the penalty threshold.
    /// A dead node never makes `get` wait: it is skipped as soon as it is
    /// boxed.
    pub fn checkout_timeout(mut self, timeout: Duration) -> Self {
        self.settings.checkout_timeout = timeout;
        self
    }

    /// Time a probe of a boxed node (connect and PING) may take
    /// (default 1 s). Also bounds the probes `build` makes.
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.settings.probe_timeout = timeout;
        self
    }

    /// Connections per node, at least 1 (default 16).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.settings.max_connections = max;
        self
    }

    /// Idle connections each node's pool keeps open (default none).
    pub fn min_idle(mut self, min_idle: Option<u32>) -> Self {
        self.settings.min_idle = min_idle;
        self
    }

    /// Closes connections unused this long (default 10 min, as bb8's;
    /// `None`: never).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.idle_timeout = timeout;
        self
    }

    /// Closes connections this old (default 30 min, as bb8's; `None`:
    /// never), so a pool does not hold sockets a load balancer or a server
    /// timeout will cut.
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.settings.max_lifetime = lifetime;
        self
    }

    /// Whether to PING every connection as it is checked out (default
    /// false). The pool's own failure tracking makes this unnecessary, and it
    /// costs a round trip per `get`.
    pub fn test_on_checkout(mut self, test: bool) -> Self {
        self.settings.test_on_checkout = test;
        self
    }

    /// What `get(key)` does while the key's node is boxed (default
    /// [`Failover::Reroute`]).
    pub fn failover(mut self, failover: Failover) -> Self {
        self.settings.failover = failover;
        self
    }

    /// The cascade guard: the largest fraction of the nodes that may be in
    /// the box at once, in `(0, 1]` (default 1: no cap). Past it, further
    /// failing nodes stay in rotation and their errors reach the callers
    /// ([`Error::NodeFailed`], or the command's own error), so one bad
    /// network moment cannot pile every key onto the last node. The cap is
    /// rounded down but never below one node: 0.5 of 3 nodes allows 1.
    pub fn max_boxed_fraction(mut self, fraction: f64) -> Self {
        self.settings.max_boxed_fraction = fraction;
        self
    }

    /// `build` fails with [`Error::NotEnoughHealthy`] unless at least this
    /// many nodes answer its probes (default 0: a pool builds with every
    /// node down, and serves as they come up). For services that should not
    /// start against a wrong address or password.
    pub fn require_healthy(mut self, nodes: usize) -> Self {
        self.settings.require_healthy = nodes;
        self
    }

    /// Whether `build` connects to every node before it returns (default
    /// true). With `false` the pool builds at once, connecting lazily; a
    /// node that is down is then boxed by the first connect that fails.
    /// For very large pools, and for services that must start fast.
    pub fn probe_at_build(mut self, probe: bool) -> Self {
        self.settings.probe_at_build = probe;
        self
    }

    /// Checks every setting and makes each node's manager: what both
    /// flavours' `build` start from.
    pub(crate) fn finish(self) -> Result<Finished<M>, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.nodes.is_empty() {
            return Err(Error::config("nodes", "no nodes were added"));
        }
        let mut names = HashSet::new();
        let mut targets: Vec<(&(String, i64), &str)> = Vec::new();
        for node in &self.nodes {
            if let Some(target) = &node.target {
                if let Some((_, first)) = targets.iter().find(|(t, _)| *t == target) {
                    let (addr, db) = target;
                    return Err(Error::config(
                        format!("node `{}`", node.name),
                        format!("is the same server and database ({addr}/{db}) as node `{first}`"),
                    ));
                }
                targets.push((target, &node.name));
            }
            check_node(&node.name, node.weight)?;
            if !names.insert(node.name.as_str()) {
                return Err(Error::config(
                    format!("node name `{}`", node.name),
                    "the name is used by more than one node",
                ));
            }
        }
        self.settings.check()?;
        if self.settings.require_healthy > self.nodes.len() {
            let (want, have) = (self.settings.require_healthy, self.nodes.len());
            return Err(Error::config(
                "require_healthy",
                format!("asks for {want} healthy nodes of a pool of {have}"),
            ));
        }
        let settings = self.settings;
        let nodes = self
            .nodes
            .into_iter()
            .map(|spec| Ok((spec.name, spec.weight, (spec.make)(&settings)?)))
            .collect::<Result<_, Error>>()?;
        Ok((nodes, settings))
    }
}

impl<M: NodeManager> Builder<M, Async> {
    /// Checks every setting, connects to every node (in parallel, each
    /// bounded by the probe timeout) and starts the prober. With
    /// [`require_healthy`](Self::require_healthy), fails with
    /// [`Error::NotEnoughHealthy`] naming each node that is down, and why.
    ///
    /// Nodes that cannot be reached start in the penalty box, and a `warn`
    /// event names each with its failure; the pool is built all the same, so
    /// a service can start while some of its nodes are down.
    /// [`ShardedPool::status`] shows which are up.
    ///
    /// Must be called within a Tokio runtime.
    pub async fn build(self) -> Result<ShardedPool<M>, Error> {
        let (nodes, settings) = self.finish()?;
        let pool = ShardedPool::start(nodes, settings).await;
        pool.core.enough_healthy().inspect_err(|_| pool.close())?;
        Ok(pool)
    }
}

#[cfg(feature = "serde")]
pub use config::{Config, NodeConfig};

#[cfg(feature = "serde")]
mod config {
    use std::time::Duration;

    use serde::Deserialize;

    use super::Builder;
    use crate::error::Error;
    use crate::pool::ShardedPool;
    use crate::settings::Failover;

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
        /// See [`Builder::penalty_memory`].
        #[serde(default, with = "humantime_serde")]
        pub penalty_memory: Option<Duration>,
        /// See [`Builder::warmup`].
        #[serde(default, with = "humantime_serde")]
        pub warmup: Option<Duration>,
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
        /// See [`Builder::require_healthy`].
        pub require_healthy: Option<usize>,
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
                penalty_memory,
                warmup,
                connect_timeout,
                response_timeout,
                checkout_timeout,
                probe_timeout,
                max_connections,
                test_on_checkout,
                failover,
                max_boxed_fraction,
                probe_at_build,
                require_healthy
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
}
