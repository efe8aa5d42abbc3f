//! Settings as a file or the environment writes them (feature `serde`):
//! a node ([`NodeConfig`]), a duration (`"250ms"`, `"never"`), a failover
//! policy; each error shows the text and how to write it.

use std::time::Duration;

use super::Failover;
use super::url::redact_url;

/// `"reroute"` or `"fail_fast"`, as the variants are spelt in Rust too
/// (`"Reroute"`, `"FailFast"`); anything else is an error naming both.
impl<'de> serde::Deserialize<'de> for Failover {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "reroute" | "Reroute" => Ok(Failover::Reroute),
            "fail_fast" | "FailFast" => Ok(Failover::FailFast),
            _ => Err(serde::de::Error::custom(format!(
                "unknown failover `{text}`: expected \"reroute\" or \"fail_fast\""
            ))),
        }
    }
}

/// One node of a [`Config`](crate::Config): a URL alone, a URL with a name
/// and weight (or a gutter node's: `{ url = "...", gutter = true }`), or a
/// Sentinel shard.
#[derive(Clone, PartialEq, serde::Deserialize)]
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
        /// Whether it is a gutter node (default false; see
        /// [`Builder::gutter_node`](crate::Builder::gutter_node)).
        #[serde(default)]
        gutter: bool,
    },
    /// A shard served by a Sentinel master group (feature `sentinel`):
    /// `{ name = "orders-a", sentinel = { master = "orders-a",
    /// sentinels = ["redis://127.0.0.1:26379"], password = "..." } }`.
    #[cfg(feature = "sentinel")]
    Sentinel {
        /// The node's name.
        name: String,
        /// The master group and its sentinels.
        sentinel: crate::settings::sentinel::SentinelShard,
        /// The node's weight (default 1).
        weight: Option<f64>,
    },
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeConfig::Url(url) => f.debug_tuple("Url").field(&redact_url(url)).finish(),
            NodeConfig::Full { url, name, weight, gutter } => f
                .debug_struct("Full")
                .field("url", &redact_url(url))
                .field("name", name)
                .field("weight", weight)
                .field("gutter", gutter)
                .finish(),
            #[cfg(feature = "sentinel")]
            NodeConfig::Sentinel { name, sentinel, weight } => f
                .debug_struct("Sentinel")
                .field("name", name)
                .field("sentinel", sentinel)
                .field("weight", weight)
                .finish(),
        }
    }
}

/// How a duration is written, for errors.
const DURATION_SHAPE: &str =
    "write a duration with its unit, like \"250ms\", \"30s\" or \"1m 30s\"";

/// A duration as a file or a variable writes it, or (`never` true) the
/// word `"never"` for none; an error shows the text and how to write it.
fn written_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
    never: bool,
) -> Result<Option<Duration>, D::Error> {
    use serde::Deserialize;
    use serde::de::Error as _;
    /// A bare number arrives as one when the environment is parsed.
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Number(f64),
    }
    let or_never = if never { ", or \"never\" for none" } else { "" };
    match Option::<Written>::deserialize(d)? {
        None if never => Ok(None),
        None => Err(D::Error::custom(format!("a duration is needed: {DURATION_SHAPE}"))),
        Some(Written::Number(n)) => {
            Err(D::Error::custom(format!("`{n}` has no unit: {DURATION_SHAPE}{or_never}")))
        }
        Some(Written::Text(text)) if never && text.trim().eq_ignore_ascii_case("never") => Ok(None),
        Some(Written::Text(text)) => {
            humantime::parse_duration(text.trim()).map(Some).map_err(|_| {
                D::Error::custom(format!("`{text}` is not a duration: {DURATION_SHAPE}{or_never}"))
            })
        }
    }
}

pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    written_duration(d, false).map(Option::unwrap_or_default)
}

pub(crate) fn never_or_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    written_duration(d, true)
}
