//! [`Builder`]: nodes and settings, checked in one place.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::health::PenaltyPolicy;
use crate::manager::NodeManager;
use crate::pool::ShardedPool;
use redis::ConnectionInfo;

use crate::redis_manager::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, RedisManager, parse_url,
};

/// Default number of connections per node.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
/// Default longest wait for a connection from a busy node.
pub const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default time a probe (connect and PING) of a boxed node may take.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Makes a node's manager once every setting is known.
type MakeManager<M> = Box<dyn FnOnce(&Settings) -> Result<M, Error> + Send>;

pub(crate) struct NodeSpec<M> {
    pub(crate) name: String,
    pub(crate) weight: f64,
    pub(crate) make: MakeManager<M>,
    /// The URL's connection settings, for a node given by URL: what the
    /// synchronous flavour connects with.
    #[cfg_attr(not(feature = "r2d2"), allow(dead_code))]
    pub(crate) url_info: Option<ConnectionInfo>,
}

/// What `get(key)` does when the key's node is in the penalty box.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Failover {
    /// Serve the key from the next healthy node in its ranking (the
    /// default): always up, at the price of duplicates while the node is
    /// away.
    #[default]
    Reroute,
    /// Return [`Error::NodeDown`] naming the node: for data that must not
    /// be duplicated or split.
    FailFast,
}

/// Checks one node's name and weight.
pub(crate) fn check_node(name: &str, weight: f64) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::config("node name", "a node name must not be empty"));
    }
    if !(weight.is_finite() && weight > 0.0) {
        return Err(Error::config(
            format!("weight of node `{name}`"),
            format!("must be finite and greater than 0, got {weight}"),
        ));
    }
    Ok(())
}

/// Settings the pool keeps after it is built.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) policy: PenaltyPolicy,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) checkout_timeout: Duration,
    pub(crate) probe_timeout: Duration,
    pub(crate) max_connections: u32,
    pub(crate) min_idle: Option<u32>,
    pub(crate) test_on_checkout: bool,
    pub(crate) failover: Failover,
    pub(crate) max_boxed_fraction: f64,
    pub(crate) probe_at_build: bool,
    /// PEM root certificates trusted for `rediss://` nodes instead of the
    /// platform's.
    #[cfg(feature = "tls")]
    pub(crate) tls_root_certificates: Option<Vec<u8>>,
}

impl Settings {
    /// The cascade guard's cap for a pool of `nodes`: at most
    /// `max_boxed_fraction` of them, rounded down, but always at least one.
    pub(crate) fn max_boxed(&self, nodes: usize) -> usize {
        ((self.max_boxed_fraction * nodes as f64).floor() as usize).clamp(1, nodes.max(1))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policy: PenaltyPolicy::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            checkout_timeout: DEFAULT_CHECKOUT_TIMEOUT,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            min_idle: None,
            test_on_checkout: false,
            failover: Failover::Reroute,
            max_boxed_fraction: 1.0,
            probe_at_build: true,
            #[cfg(feature = "tls")]
            tls_root_certificates: None,
        }
    }
}

/// Builds a [`ShardedPool`]: nodes, then settings, then [`build`](Self::build).
///
/// Setters never fail or panic; every value is checked by `build`, which
/// returns [`Error::Config`] naming the first bad one.
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
pub struct Builder<M: NodeManager = RedisManager> {
    nodes: Vec<NodeSpec<M>>,
    /// The first problem found while adding nodes, reported by `build`.
    error: Option<Error>,
    settings: Settings,
}

impl<M: NodeManager> fmt::Debug for Builder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        f.debug_struct("Builder")
            .field("nodes", &names)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<M: NodeManager> Default for Builder<M> {
    fn default() -> Self {
        Builder {
            nodes: Vec::new(),
            error: None,
            settings: Settings::default(),
        }
    }
}

impl Builder<RedisManager> {
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
                let name = name.map_or_else(|| info.addr().to_string(), str::to_owned);
                let url_info = Some(info.clone());
                self.nodes.push(NodeSpec {
                    name,
                    weight,
                    make: Box::new(move |settings| RedisManager::from_settings(info, settings)),
                    url_info,
                });
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
    pub fn sentinel_node(mut self, name: &str, shard: crate::sentinel::SentinelShard) -> Self {
        self.nodes.push(NodeSpec {
            name: name.to_owned(),
            weight: 1.0,
            make: Box::new(move |settings| RedisManager::sentinel(&shard, settings)),
            url_info: None,
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

    /// Time to wait for a reply to a command (default 500 ms). Raise it for
    /// blocking commands such as `BRPOP`. A response timeout counts as a
    /// timeout failure and marks the connection broken.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.settings.response_timeout = timeout;
        self
    }
}

impl<M: NodeManager> Builder<M> {
    /// A builder with no nodes and default settings.
    pub fn new() -> Self {
        Self::default()
    }

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
            url_info: None,
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

    /// Whether `build` connects to every node before it returns (default
    /// true). With `false` the pool builds at once, connecting lazily; a
    /// node that is down is then boxed by the first connect that fails.
    /// For very large pools, and for services that must start fast.
    pub fn probe_at_build(mut self, probe: bool) -> Self {
        self.settings.probe_at_build = probe;
        self
    }

    /// Checks every setting, connects to every node (in parallel, each
    /// bounded by the probe timeout) and starts the background task.
    ///
    /// Nodes that cannot be reached start in the penalty box, and a `warn`
    /// event names each with its failure; the pool is built all the same, so
    /// a service can start while some of its nodes are down.
    /// [`ShardedPool::status`] shows which are up.
    ///
    /// Must be called within a Tokio runtime.
    pub async fn build(self) -> Result<ShardedPool<M>, Error> {
        let (specs, settings) = self.validate()?;
        let nodes = specs
            .into_iter()
            .map(|spec| {
                let manager = (spec.make)(&settings)?;
                Ok((spec.name, spec.weight, Arc::new(manager)))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(ShardedPool::start(nodes, settings).await)
    }

    pub(crate) fn validate(self) -> Result<(Vec<NodeSpec<M>>, Settings), Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.nodes.is_empty() {
            return Err(Error::config("nodes", "no nodes were added"));
        }
        let mut names = HashSet::new();
        for node in &self.nodes {
            check_node(&node.name, node.weight)?;
            if !names.insert(node.name.as_str()) {
                return Err(Error::config(
                    format!("node name `{}`", node.name),
                    "the name is used by more than one node",
                ));
            }
        }
        let s = &self.settings;
        let p = &s.policy;
        for (setting, value) in [
            ("penalty_min_wait", p.min_wait),
            ("connect_timeout", s.connect_timeout),
            ("response_timeout", s.response_timeout),
            ("checkout_timeout", s.checkout_timeout),
            ("probe_timeout", s.probe_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::config(setting, "must be greater than zero"));
            }
        }
        if p.min_wait > p.max_wait {
            return Err(Error::config(
                "penalty_max_wait",
                format!(
                    "must be at least penalty_min_wait ({:?}), got {:?}",
                    p.min_wait, p.max_wait
                ),
            ));
        }
        if !(p.multiplier.is_finite() && p.multiplier >= 1.0) {
            return Err(Error::config(
                "penalty_multiplier",
                format!("must be finite and at least 1, got {}", p.multiplier),
            ));
        }
        if !(0.0..=1.0).contains(&p.jitter) {
            return Err(Error::config(
                "penalty_jitter",
                format!("must be between 0 and 1, got {}", p.jitter),
            ));
        }
        if !(s.max_boxed_fraction > 0.0 && s.max_boxed_fraction <= 1.0) {
            return Err(Error::config(
                "max_boxed_fraction",
                format!(
                    "must be greater than 0 and at most 1, got {}",
                    s.max_boxed_fraction
                ),
            ));
        }
        if p.timeout_threshold == 0 {
            return Err(Error::config(
                "timeouts_before_penalty",
                "must be at least 1, got 0",
            ));
        }
        if s.max_connections == 0 {
            return Err(Error::config(
                "max_connections",
                "must be at least 1, got 0",
            ));
        }
        if let Some(min_idle) = s.min_idle.filter(|&m| m > s.max_connections) {
            return Err(Error::config(
                "min_idle",
                format!(
                    "must not exceed max_connections ({}), got {min_idle}",
                    s.max_connections
                ),
            ));
        }
        Ok((self.nodes, self.settings))
    }
}
