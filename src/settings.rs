//! A pool's settings as plain data, their defaults and their checks.

use std::time::Duration;

use crate::error::Error;
use crate::health::PenaltyPolicy;

/// Default number of connections per node.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
/// Default longest wait for a connection from a busy node.
pub const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default time a probe (connect and PING) of a boxed node may take.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default time to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default time to wait for a reply to a command.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

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

/// Everything a pool keeps from its builder.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) policy: PenaltyPolicy,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) checkout_timeout: Duration,
    pub(crate) probe_timeout: Duration,
    pub(crate) max_connections: u32,
    pub(crate) min_idle: Option<u32>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) test_on_checkout: bool,
    pub(crate) failover: Failover,
    pub(crate) max_boxed_fraction: f64,
    pub(crate) probe_at_build: bool,
    /// `build` fails with fewer healthy nodes than this.
    pub(crate) require_healthy: usize,
    /// PEM root certificates trusted for `rediss://` nodes instead of the
    /// platform's.
    #[cfg(feature = "tls")]
    pub(crate) tls_root_certificates: Option<Vec<u8>>,
    /// A client certificate and key for servers that ask for one.
    #[cfg(feature = "tls")]
    pub(crate) tls_client: Option<ClientIdentity>,
}

/// A TLS client certificate and its private key, in PEM; `Debug` shows
/// neither.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Vec<u8>,
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity { .. }")
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
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
            test_on_checkout: false,
            failover: Failover::Reroute,
            max_boxed_fraction: 1.0,
            probe_at_build: true,
            require_healthy: 0,
            #[cfg(feature = "tls")]
            tls_root_certificates: None,
            #[cfg(feature = "tls")]
            tls_client: None,
        }
    }
}

impl Settings {
    /// The cascade guard's cap for a pool of `nodes`: at most
    /// `max_boxed_fraction` of them, rounded down, but always at least one.
    pub(crate) fn max_boxed(&self, nodes: usize) -> usize {
        ((self.max_boxed_fraction * nodes as f64).floor() as usize).clamp(1, nodes.max(1))
    }

    /// Checks every value; the error names the first bad one.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let p = &self.policy;
        for (setting, value) in [
            ("penalty_min_wait", p.min_wait),
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
            ("checkout_timeout", self.checkout_timeout),
            ("probe_timeout", self.probe_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::config(setting, "must be greater than zero"));
            }
        }
        let bad = |setting: &str, reason: String| Err(Error::config(setting, reason));
        if p.min_wait > p.max_wait {
            let (min, max) = (p.min_wait, p.max_wait);
            return bad(
                "penalty_max_wait",
                format!("must be at least penalty_min_wait ({min:?}), got {max:?}"),
            );
        }
        if !(p.multiplier.is_finite() && p.multiplier >= 1.0) {
            let m = p.multiplier;
            return bad("penalty_multiplier", format!("must be finite and at least 1, got {m}"));
        }
        if !(0.0..=1.0).contains(&p.jitter) {
            let j = p.jitter;
            return bad("penalty_jitter", format!("must be between 0 and 1, got {j}"));
        }
        let fraction = self.max_boxed_fraction;
        if !(fraction > 0.0 && fraction <= 1.0) {
            return bad(
                "max_boxed_fraction",
                format!("must be greater than 0 and at most 1, got {fraction}"),
            );
        }
        if p.timeout_threshold == 0 {
            return bad("timeouts_before_penalty", "must be at least 1, got 0".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1, got 0".into());
        }
        if let Some(min_idle) = self.min_idle.filter(|&m| m > self.max_connections) {
            let max = self.max_connections;
            return bad(
                "min_idle",
                format!("must not exceed max_connections ({max}), got {min_idle}"),
            );
        }
        Ok(())
    }
}

/// Checks one node's name and weight.
pub(crate) fn check_node(name: &str, weight: f64) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::config("node name", "a node name must not be empty"));
    }
    // A name is shown in metrics, logs and errors: never a URL's secret.
    if name.split_once("://").is_some_and(|(_, rest)| rest.contains('@')) {
        return Err(Error::config(
            "node name",
            "looks like a URL with credentials; names appear in metrics and logs, \
             so name the node (`named_node(\"cache-a\", url)`)",
        ));
    }
    if !(weight.is_finite() && weight > 0.0) {
        return Err(Error::config(
            format!("weight of node `{name}`"),
            format!("must be finite and greater than 0, got {weight}"),
        ));
    }
    Ok(())
}
