//! The builder's Redis nodes: by URL (named after their address, or
//! named, or weighted), Sentinel shards, the TLS roots and client
//! certificate they trust and show, and the timeouts of their connections.

use std::time::Duration;

use super::builder::{Builder, NodeSpec, setters};
use crate::backend::manager::RedisManager;
use crate::node::NodeParts;
use crate::settings::url::{address, parse_url, target};
use crate::settings::{Settings, check_node};

impl<F> Builder<RedisManager, F> {
    /// Adds the node at `url`, named after its address (`host:port`, e.g.
    /// `"127.0.0.1:7001"`), with weight 1.
    ///
    /// Prefer [`named_node`](Self::named_node) in production: keys follow the
    /// *name*, so a named node can move to a new address and keep its keys.
    #[must_use]
    pub fn node(self, url: &str) -> Self {
        self.redis_node(None, url, 1.0)
    }

    /// Adds the node at `url` under `name`, with weight 1.
    #[must_use]
    pub fn named_node(self, name: &str, url: &str) -> Self {
        self.redis_node(Some(name), url, 1.0)
    }

    /// Adds the node at `url` under `name`, taking `weight` parts of the keys
    /// (a node of weight 2 gets twice the keys of a node of weight 1).
    #[must_use]
    pub fn weighted_node(self, name: &str, url: &str, weight: f64) -> Self {
        self.redis_node(Some(name), url, weight)
    }

    /// Adds a gutter node at `url`, named after its address: it holds no
    /// keys of its own. While a node is boxed its keys go to the gutter
    /// nodes (ranked among themselves by the same routing function)
    /// instead of the survivors, so a dead node's hot keys never push a
    /// survivor over; every write there is capped by
    /// [`stand_in_ttl`](Self::stand_in_ttl), or
    /// [`GUTTER_TTL`](crate::GUTTER_TTL) (10 s) if that is unset. With
    /// every gutter node boxed too, keys go to the survivors as without a
    /// gutter. Gutter nodes are probed and shown in `status()` (`gutter:
    /// true`) like the others; `get_any` never picks them.
    #[doc = include_str!("../../docs/gutter.md")]
    #[must_use]
    pub fn gutter_node(self, url: &str) -> Self {
        self.redis_node(None, url, 1.0).into_gutter()
    }

    /// [`gutter_node`](Self::gutter_node) under `name`.
    #[must_use]
    pub fn named_gutter_node(self, name: &str, url: &str) -> Self {
        self.redis_node(Some(name), url, 1.0).into_gutter()
    }

    /// The node added last is a gutter node.
    fn into_gutter(mut self) -> Self {
        if let Some(node) = self.nodes.last_mut() {
            node.gutter = true;
        }
        self
    }

    pub(crate) fn redis_node(mut self, name: Option<&str>, url: &str, weight: f64) -> Self {
        match parse_url(url) {
            Ok(info) => {
                let name = name.map_or_else(|| address(&info), str::to_owned);
                let target = Some(target(&info));
                let node = name.clone();
                let make = Box::new(move |settings: &Settings| {
                    let manager = RedisManager::from_settings(info, settings)?;
                    let (tracking, listen) = (manager.tracking(), Some(manager.listen()));
                    Ok(NodeParts { tracking, listen, ..NodeParts::new(&node, weight, manager) })
                });
                self.nodes.push(NodeSpec { name, weight, make, target, gutter: false });
            }
            Err(e) => {
                let index = self.nodes.len() + self.failed;
                // A name is shown only if `build` would take it (not a URL's secret).
                let name = name.filter(|name| check_node(name, 1.0).is_ok()).map(str::to_owned);
                self.error.get_or_insert((index, name, e));
                self.failed += 1;
            }
        }
        self
    }

    /// Adds a shard served by a Redis Sentinel master group, under `name`,
    /// with weight 1: its connections go to the group's current master, and
    /// a Sentinel failover never moves its keys. Feature `sentinel`.
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    #[must_use]
    pub fn sentinel_node(
        self,
        name: &str,
        shard: crate::settings::sentinel::SentinelShard,
    ) -> Self {
        self.weighted_sentinel_node(name, shard, 1.0)
    }

    /// [`sentinel_node`](Self::sentinel_node) with a weight.
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    #[must_use]
    pub fn weighted_sentinel_node(
        mut self,
        name: &str,
        shard: crate::settings::sentinel::SentinelShard,
        weight: f64,
    ) -> Self {
        let node = name.to_owned();
        self.nodes.push(NodeSpec {
            name: name.to_owned(),
            weight,
            make: Box::new(move |settings| {
                let manager = RedisManager::sentinel(&shard, settings)?;
                Ok(NodeParts {
                    listen: Some(manager.listen()),
                    ..NodeParts::new(&node, weight, manager)
                })
            }),
            target: None,
            gutter: false,
        });
        self
    }

    /// Trusts these PEM root certificates (one or more, concatenated) for
    /// `rediss://` nodes instead of the platform's: for servers whose
    /// certificates come from a private CA. Feature `tls`.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    #[must_use]
    pub fn tls_root_certificates(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.settings.tls_root_certificates = Some(String::from_utf8_lossy(pem.as_ref()).into());
        self
    }

    /// Presents this client certificate and private key (PEM) to
    /// `rediss://` servers that ask for one (`tls-auth-clients yes`):
    /// mutual TLS. Neither appears in `Debug`. Feature `tls`.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    #[must_use]
    pub fn tls_client_certificate(mut self, cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Self {
        let pem = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let identity =
            crate::settings::TlsIdentity { cert: pem(cert.as_ref()), key: pem(key.as_ref()) };
        self.settings.tls_client_certificate = Some(identity);
        self
    }

    setters! {
        /// Time to establish a connection to a node (default 1 s). A connect
        /// timeout counts as a timeout failure.
        connect_timeout: Duration;
        /// Time to wait for a reply to a command (default 500 ms). Raise it
        /// for blocking commands such as `BRPOP`. A response timeout counts
        /// as a timeout failure and marks the connection broken.
        response_timeout: Duration;
    }
}
