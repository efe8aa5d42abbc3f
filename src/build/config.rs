//! [`Config`] (feature `serde`): a pool's nodes and [`Settings`] as data,
//! read from TOML, JSON or the environment, and built like the builder.

use serde::{Deserialize, Deserializer};

use crate::build::builder::Builder;
use crate::error::Error;
use crate::pool::ShardedPool;
use crate::settings::file::closest;
use crate::settings::{NodeConfig, Settings};

/// A pool's nodes and [`Settings`] as data: deserialize it with serde
/// (for example through the `config` crate, from TOML or environment
/// variables), then call [`build`](Self::build).
///
/// Beside `nodes`, every field is a [`Settings`] field, named as the
/// [`Builder`] method that sets it: whatever the builder can set, a file
/// can. Durations are written the human way (`"250ms"`, `"30s"`,
/// `"1m 30s"`); omitted settings keep their defaults; unknown fields are
/// rejected, naming the field.
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
/// idle_timeout = "5m"
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
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// The nodes: each a URL, or a table with `url` and optional `name`
    /// and `weight` (or, with feature `sentinel`, a `sentinel` shard).
    pub nodes: Vec<NodeConfig>,
    /// Every other field.
    pub settings: Settings,
}

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // One derived struct reads it all, so an error names its field.
        let mut settings = Settings::deserialize(deserializer).map_err(unknown_setting)?;
        // An empty `FLUSTER__NODES` reads as one empty URL: it is no nodes,
        // and `build` says that variable is empty.
        let blank =
            |node: &NodeConfig| matches!(node, NodeConfig::Url(url) if url.trim().is_empty());
        if settings.nodes.iter().all(blank) {
            settings.nodes.clear();
        }
        // Read as the README reads them, `FLUSTER_NODES` is never read:
        // said once here, whatever else came (with no nodes, `build`'s
        // error says it too).
        for told in crate::settings::file::one_underscore() {
            tracing::warn!("{told}: it is ignored");
        }
        Ok(Config { nodes: std::mem::take(&mut settings.nodes), settings })
    }
}

/// serde's word for a field no setting has, with where it may have come
/// from: a key of a file, or a variable of the environment as the README
/// reads it (`FLUSTER__` and the name upper case, `__` between levels);
/// the closest setting's name when one is near (serde's message lists
/// them all), or the feature a setting needs.
fn unknown_setting<E: serde::de::Error>(e: E) -> E {
    let text = e.to_string();
    let Some((field, known)) =
        text.strip_prefix("unknown field `").and_then(|rest| rest.split_once('`'))
    else {
        return e;
    };
    // ", expected one of `a`, `b`, ...": the names between backquotes; a
    // nested table's field (a TLS identity's, a Sentinel shard's) keeps
    // serde's own words, which list that table's.
    let known: Vec<&str> = known.split('`').skip(1).step_by(2).collect();
    if !known.contains(&"nodes") {
        return e;
    }
    if !cfg!(feature = "tls") && TLS_SETTINGS.contains(&field) {
        return E::custom(format!(
            "setting `{field}` needs fluster's `tls` feature (`features = [\"serde\", \"tls\"]`)"
        ));
    }
    let variable = |name: &str| format!("FLUSTER__{}", name.to_ascii_uppercase());
    let hint = match closest(field, known) {
        Some(name) => format!("did you mean `{name}` (`{}`)? Every", variable(name)),
        None => "every".to_owned(),
    };
    E::custom(format!(
        "unknown setting `{field}` (from a file, that key; from the environment, the variable \
         `{}`): {hint} setting is a field of `fluster::Settings`",
        variable(field)
    ))
}

/// The settings of feature `tls`, named when it is off.
const TLS_SETTINGS: &[&str] = &["tls_root_certificates", "tls_client_certificate"];

impl Config {
    /// The builder this configuration describes, for settings that are not
    /// data (or to override some).
    pub fn into_builder(self) -> Builder {
        let mut b = ShardedPool::builder().settings(self.settings);
        for node in self.nodes {
            b = match node {
                NodeConfig::Url(url) => b.node(&url),
                NodeConfig::Full { url, name, weight, gutter: false } => {
                    b.redis_node(name.as_deref(), &url, weight.unwrap_or(1.0))
                }
                NodeConfig::Full { url, name: Some(name), gutter: true, .. } => {
                    b.named_gutter_node(&name, &url)
                }
                NodeConfig::Full { url, name: None, gutter: true, .. } => b.gutter_node(&url),
                #[cfg(feature = "sentinel")]
                NodeConfig::Sentinel { name, sentinel, weight } => {
                    b.weighted_sentinel_node(&name, sentinel, weight.unwrap_or(1.0))
                }
            };
        }
        b
    }

    /// Builds the pool: [`Builder::build`] on [`into_builder`](Self::into_builder).
    /// Invalid values are rejected with [`Error::Config`] naming the field.
    pub async fn build(self) -> Result<ShardedPool, Error> {
        self.into_builder().build().await
    }
}
