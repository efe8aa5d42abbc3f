//! [`Settings`]: every setting of a pool as plain data (the one list: the
//! builder writes it, `Config` reads it from a file), with its defaults and
//! its checks.

use std::collections::HashSet;
use std::time::Duration;

use crate::error::Error;
use crate::health::penalty::PenaltyPolicy;
pub use crate::route::policy::Failover;

#[cfg(feature = "serde")]
pub(crate) mod file;
#[cfg(feature = "sentinel")]
pub(crate) mod sentinel;
pub(crate) mod url;

#[cfg(feature = "serde")]
pub use file::NodeConfig;
#[cfg(feature = "serde")]
use file::{duration, never_or_duration};

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
/// The cap of every write on a gutter node
/// ([`gutter_node`](crate::Builder::gutter_node)) when `stand_in_ttl` is
/// unset: short, for the gutter holds a boxed node's keys only while it is
/// away.
pub const GUTTER_TTL: Duration = Duration::from_secs(10);
/// Default interval of the heartbeat of an idle node.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// The longest any duration setting may be: a year. Every time and
/// deadline a pool computes from one stays far from overflow, and every
/// TTL it sends within what Redis takes.
pub(crate) const LONGEST: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The most connections a node's pool may hold (Redis's own default
/// `maxclients`); the sync flavour's r2d2 pool allocates a slot for each.
pub(crate) const MAX_CONNECTIONS: u32 = 10_000;
/// The most entries a node's near cache may hold; its table is allocated
/// for them when the pool is built.
pub(crate) const MAX_NEAR_CACHE: usize = 1_000_000;

/// Every setting of a pool, each named as the [`Builder`](crate::Builder)
/// method that sets it, where its meaning and default are told.
///
/// The builder writes into one of these, and `Config`
/// deserializes one (feature `serde`: durations the human way, `"250ms"`,
/// `"1m 30s"`; every field optional; unknown fields rejected), so a setting
/// of the builder is a setting of the file format by construction.
/// Values are checked by `build`.
#[doc = include_str!("../../docs/settings.md")]
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct Settings {
    /// [`Builder::penalty_min_wait`](crate::Builder::penalty_min_wait).
    #[cfg_attr(feature = "serde", serde(deserialize_with = "duration"))]
    pub penalty_min_wait: Duration,
    /// [`Builder::penalty_max_wait`](crate::Builder::penalty_max_wait).
    #[cfg_attr(feature = "serde", serde(deserialize_with = "duration"))]
    pub penalty_max_wait: Duration,
    /// [`Builder::penalty_multiplier`](crate::Builder::penalty_multiplier).
    pub penalty_multiplier: f64,
    /// [`Builder::penalty_jitter`](crate::Builder::penalty_jitter).
    pub penalty_jitter: f64,
    /// [`Builder::penalty_memory`](crate::Builder::penalty_memory).
    #[cfg_attr(feature = "serde", serde(deserialize_with = "duration"))]
    pub penalty_memory: Duration,
    /// [`Builder::warmup`](crate::Builder::warmup).
    #[cfg_attr(feature = "serde", serde(deserialize_with = "duration"))]
    pub warmup: Duration,
    /// [`Builder::resize_warmup`](crate::Builder::resize_warmup).
    #[cfg_attr(feature = "serde", serde(deserialize_with = "duration"))]
    pub resize_warmup: Duration,
    /// [`Builder::timeouts_before_penalty`](crate::Builder::timeouts_before_penalty).
    pub timeouts_before_penalty: u32,
    /// [`Builder::connect_timeout`](crate::Builder::connect_timeout).
    #[cfg_attr(feature = "serde", serde(deserialize_with = "duration"))]
    pub connect_timeout: Duration,
    /// [`Builder::response_timeout`](crate::Builder::response_timeout).
    #[cfg_attr(feature = "serde", serde(deserialize_with = "duration"))]
    pub response_timeout: Duration,
    /// [`Builder::checkout_timeout`](crate::Builder::checkout_timeout).
    #[cfg_attr(feature = "serde", serde(deserialize_with = "duration"))]
    pub checkout_timeout: Duration,
    /// [`Builder::probe_timeout`](crate::Builder::probe_timeout).
    #[cfg_attr(feature = "serde", serde(deserialize_with = "duration"))]
    pub probe_timeout: Duration,
    /// [`Builder::max_connections`](crate::Builder::max_connections).
    pub max_connections: u32,
    /// [`Builder::min_idle`](crate::Builder::min_idle).
    pub min_idle: Option<u32>,
    /// [`Builder::idle_timeout`](crate::Builder::idle_timeout); `"never"`
    /// in a file for `None`.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "never_or_duration"))]
    pub idle_timeout: Option<Duration>,
    /// [`Builder::max_lifetime`](crate::Builder::max_lifetime); `"never"`
    /// in a file for `None`.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "never_or_duration"))]
    pub max_lifetime: Option<Duration>,
    /// [`Builder::test_on_checkout`](crate::Builder::test_on_checkout).
    pub test_on_checkout: bool,
    /// [`Builder::failover`](crate::Builder::failover): `"reroute"` or
    /// `"fail_fast"` (`"Reroute"` and `"FailFast"` are read too).
    pub failover: Failover,
    /// [`Builder::max_boxed_fraction`](crate::Builder::max_boxed_fraction).
    pub max_boxed_fraction: f64,
    /// [`Builder::require_healthy`](crate::Builder::require_healthy).
    pub require_healthy: usize,
    /// [`Builder::probe_at_build`](crate::Builder::probe_at_build).
    pub probe_at_build: bool,
    /// [`Builder::stand_in_ttl`](crate::Builder::stand_in_ttl); `"never"`
    /// in a file for `None` (the default).
    #[cfg_attr(feature = "serde", serde(deserialize_with = "never_or_duration"))]
    pub stand_in_ttl: Option<Duration>,
    /// [`Builder::invalidate_on_return`](crate::Builder::invalidate_on_return).
    pub invalidate_on_return: bool,
    /// [`Builder::fleet`](crate::Builder::fleet).
    pub fleet: Option<String>,
    /// [`Builder::lease`](crate::Builder::lease).
    #[cfg_attr(feature = "serde", serde(deserialize_with = "duration"))]
    pub lease: Duration,
    /// [`Builder::early_refresh`](crate::Builder::early_refresh).
    pub early_refresh: f64,
    /// [`Builder::near_cache`](crate::Builder::near_cache).
    pub near_cache: usize,
    /// [`Builder::heartbeat`](crate::Builder::heartbeat); `"0s"` for off.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "duration"))]
    pub heartbeat: Duration,
    /// `tls_root_certificates`: PEM text (feature `tls`).
    #[cfg(feature = "tls")]
    pub tls_root_certificates: Option<String>,
    /// `tls_client_certificate`: a certificate and key in PEM (feature `tls`).
    #[cfg(feature = "tls")]
    pub tls_client_certificate: Option<TlsIdentity>,
    /// A [`Config`](crate::Config)'s nodes on their way through
    /// deserialization; always empty elsewhere.
    #[cfg(feature = "serde")]
    pub(crate) nodes: Vec<NodeConfig>,
}

/// A TLS client certificate and its private key, in PEM; `Debug` shows
/// neither.
#[cfg(feature = "tls")]
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct TlsIdentity {
    /// The certificate chain.
    pub cert: String,
    /// The private key.
    pub key: String,
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity { .. }")
    }
}

/// Every default of a pool, each written here once: the builder's and
/// `Config`'s, and what their docs tell.
impl Default for Settings {
    fn default() -> Self {
        Settings {
            penalty_min_wait: Duration::from_millis(200),
            penalty_max_wait: Duration::from_secs(30),
            penalty_multiplier: 1.5,
            penalty_jitter: 0.2,
            penalty_memory: Duration::from_secs(60),
            warmup: Duration::ZERO,
            resize_warmup: Duration::ZERO,
            timeouts_before_penalty: 3,
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
            require_healthy: 0,
            probe_at_build: true,
            stand_in_ttl: None,
            invalidate_on_return: false,
            fleet: None,
            lease: Duration::from_secs(3),
            early_refresh: 1.0,
            near_cache: 0,
            heartbeat: DEFAULT_HEARTBEAT,
            #[cfg(feature = "tls")]
            tls_root_certificates: None,
            #[cfg(feature = "tls")]
            tls_client_certificate: None,
            #[cfg(feature = "serde")]
            nodes: Vec::new(),
        }
    }
}

impl Settings {
    /// The penalty box's part.
    pub(crate) fn policy(&self) -> PenaltyPolicy {
        PenaltyPolicy {
            min_wait: self.penalty_min_wait,
            max_wait: self.penalty_max_wait,
            multiplier: self.penalty_multiplier,
            jitter: self.penalty_jitter,
            timeout_threshold: self.timeouts_before_penalty,
            memory: self.penalty_memory,
            warmup: self.warmup,
        }
    }

    /// Whether stand-in writes are capped or remembered: connections to a
    /// stand-in then look at what they write.
    pub(crate) fn watches_stand_ins(&self) -> bool {
        self.stand_in_ttl.is_some() || self.invalidate_on_return
    }

    /// The cascade guard's cap for a pool of `nodes`: at most
    /// `max_boxed_fraction` of them, rounded down, but always at least one.
    pub(crate) fn max_boxed(&self, nodes: usize) -> usize {
        ((self.max_boxed_fraction * nodes as f64).floor() as usize).clamp(1, nodes.max(1))
    }

    /// Checks every value; the error names the first bad one. Each
    /// setting has a range in which the pool works; the limits are told
    /// in the builder's docs and the README.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let bad = |setting: &str, reason: String| Err(Error::config(setting, reason));
        // Each duration: the least it may be (zero: zero is allowed, and
        // means off), and whether it is optional, `None` being its never.
        const POSITIVE: Duration = Duration::from_nanos(1);
        const MILLI: Duration = Duration::from_millis(1);
        let (zero, required, optional) = (Duration::ZERO, false, true);
        let durations = [
            ("penalty_min_wait", Some(self.penalty_min_wait), POSITIVE, required),
            ("penalty_max_wait", Some(self.penalty_max_wait), POSITIVE, required),
            ("penalty_memory", Some(self.penalty_memory), zero, required),
            ("warmup", Some(self.warmup), zero, required),
            ("resize_warmup", Some(self.resize_warmup), zero, required),
            ("connect_timeout", Some(self.connect_timeout), POSITIVE, required),
            ("response_timeout", Some(self.response_timeout), POSITIVE, required),
            ("checkout_timeout", Some(self.checkout_timeout), POSITIVE, required),
            ("probe_timeout", Some(self.probe_timeout), POSITIVE, required),
            ("idle_timeout", self.idle_timeout, POSITIVE, optional),
            ("max_lifetime", self.max_lifetime, POSITIVE, optional),
            ("stand_in_ttl", self.stand_in_ttl, MILLI, optional),
            ("lease", Some(self.lease), POSITIVE, required),
            ("heartbeat", Some(self.heartbeat), zero, required),
        ];
        for (setting, value, least, optional) in durations {
            let Some(value) = value else { continue };
            let or_never = match optional {
                true => "; for never, leave it unset (`None`, or \"never\" in a file)",
                false => "",
            };
            if value < least {
                let least = if least == POSITIVE { "greater than zero" } else { "at least 1 ms" };
                return bad(setting, format!("must be {least}, got {value:?}{or_never}"));
            }
            if value > LONGEST {
                let most = "must be at most 365 days (a year)";
                return bad(setting, format!("{most}, got {value:?}{or_never}"));
            }
        }
        let (min, max) = (self.penalty_min_wait, self.penalty_max_wait);
        if min > max {
            return bad(
                "penalty_max_wait",
                format!("must be at least penalty_min_wait ({min:?}), got {max:?}"),
            );
        }
        let m = self.penalty_multiplier;
        if !(m.is_finite() && m >= 1.0) {
            return bad("penalty_multiplier", format!("must be finite and at least 1, got {m}"));
        }
        let j = self.penalty_jitter;
        if !(0.0..=1.0).contains(&j) {
            return bad("penalty_jitter", format!("must be between 0 and 1, got {j}"));
        }
        let fraction = self.max_boxed_fraction;
        if !(fraction > 0.0 && fraction <= 1.0) {
            return bad(
                "max_boxed_fraction",
                format!("must be greater than 0 and at most 1, got {fraction}"),
            );
        }
        let beta = self.early_refresh;
        if !(beta.is_finite() && beta >= 0.0) {
            return bad("early_refresh", format!("must be finite and at least 0, got {beta}"));
        }
        if self.timeouts_before_penalty == 0 {
            return bad("timeouts_before_penalty", "must be at least 1, got 0".into());
        }
        let connections = self.max_connections;
        if !(1..=MAX_CONNECTIONS).contains(&connections) {
            return bad(
                "max_connections",
                format!("must be from 1 to {MAX_CONNECTIONS} (per node), got {connections}"),
            );
        }
        let beat = self.heartbeat;
        if !beat.is_zero() && beat < Duration::from_millis(10) {
            return bad("heartbeat", format!("must be zero (off) or at least 10 ms, got {beat:?}"));
        }
        if self.near_cache > MAX_NEAR_CACHE {
            let entries = self.near_cache;
            return bad(
                "near_cache",
                format!("must be at most {MAX_NEAR_CACHE} entries (per node), got {entries}"),
            );
        }
        if self.near_cache > 0 && beat.is_zero() {
            return bad(
                "heartbeat",
                "must be greater than zero with a near cache: its entries are trusted only \
                 while its connection is heard from"
                    .into(),
            );
        }
        if let Some(fleet) = &self.fleet {
            check_fleet(fleet)?;
        }
        #[cfg(feature = "tls")]
        self.check_pem()?;
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

#[cfg(feature = "tls")]
impl Settings {
    /// PEM that holds nothing usable would only show as a failed handshake
    /// at the first connect: refuse it here. Key errors say nothing of the
    /// key's text.
    fn check_pem(&self) -> Result<(), Error> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certificates =
            |setting: &str, pem: &str| match CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(certs) if !certs.is_empty() => Ok(()),
                Ok(_) => Err(Error::config(
                    setting,
                    "holds no PEM certificate (`-----BEGIN CERTIFICATE-----` ...)",
                )),
                Err(e) => Err(Error::config(setting, format!("is not valid PEM: {e}"))),
            };
        if let Some(pem) = &self.tls_root_certificates {
            certificates("tls_root_certificates", pem)?;
        }
        if let Some(identity) = &self.tls_client_certificate {
            certificates("tls_client_certificate", &identity.cert)?;
            PrivateKeyDer::from_pem_slice(identity.key.as_bytes()).map_err(|_| {
                Error::config("tls_client_certificate", "the key is not a PEM private key")
            })?;
        }
        Ok(())
    }
}

/// Checks a pool's nodes, each a name, a weight and, for a node given by
/// URL, its server and database: each name and weight, no name twice, no
/// server and database twice.
pub(crate) fn check_nodes<'a>(
    nodes: impl Iterator<Item = (&'a str, f64, Option<&'a (String, i64)>)>,
) -> Result<(), Error> {
    let mut names = HashSet::new();
    let mut targets: Vec<(&(String, i64), &str)> = Vec::new();
    for (name, weight, target) in nodes {
        if let Some(target) = target {
            if let Some((_, first)) = targets.iter().find(|(t, _)| *t == target) {
                let (addr, db) = target;
                return Err(Error::config(
                    format!("node `{name}`"),
                    format!("is the same server and database ({addr}/{db}) as node `{first}`"),
                ));
            }
            targets.push((target, name));
        }
        check_node(name, weight)?;
        if !names.insert(name) {
            return Err(Error::config(
                format!("node name `{name}`"),
                "the name is used by more than one node",
            ));
        }
    }
    Ok(())
}

/// Checks a fleet's name: it names a channel and keys on every node, so it
/// is short, printable and has no spaces.
fn check_fleet(name: &str) -> Result<(), Error> {
    let problem = if name.is_empty() {
        "must not be empty"
    } else if name.len() > 128 {
        "must be at most 128 bytes long"
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "must not contain spaces or control characters"
    } else {
        return Ok(());
    };
    Err(Error::config("fleet", format!("{problem}, got {name:?}")))
}

/// Checks one node's name and weight.
pub(crate) fn check_node(name: &str, weight: f64) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::config("node name", "a node name must not be empty"));
    }
    // A name is shown in metrics, logs and errors: never a URL's secret.
    if name.contains("://") && url::redact_url(name) != name {
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
