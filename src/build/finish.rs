//! A [`Builder`] finished: every setting checked and each node's manager
//! made (what both flavours' `build` start from), and the async flavour's
//! `build`.

use super::builder::{AsyncPool, Builder};
use crate::error::Error;
use crate::node::NodeParts;
use crate::node::tracked::NodeManager;
use crate::pool::ShardedPool;
use crate::runtime::core::Finished;
use crate::settings::check_nodes;

impl<M: NodeManager, F> Builder<M, F> {
    /// Checks every setting and makes each node's manager: what both
    /// flavours' `build` start from.
    pub(crate) fn finish(self) -> Result<Finished<M>, Error> {
        if let Some((index, name, e)) = self.error {
            return Err(e.at_node(index + 1, self.nodes.len() + self.failed, name.as_deref()));
        }
        if self.nodes.iter().all(|n| n.gutter) {
            let reason = match self.nodes.is_empty() {
                #[cfg(feature = "serde")]
                true => crate::settings::file::no_nodes(),
                #[cfg(not(feature = "serde"))]
                true => String::from("no nodes were added: add one with `node(url)`"),
                false => "only gutter nodes were added: they hold no keys of their own".into(),
            };
            return Err(Error::config("nodes", reason));
        }
        check_nodes(self.nodes.iter().map(|n| (n.name.as_str(), n.weight, n.target.as_ref())))?;
        self.settings.check()?;
        if self.settings.require_healthy > self.nodes.len() {
            let (want, have) = (self.settings.require_healthy, self.nodes.len());
            return Err(Error::config(
                "require_healthy",
                format!("asks for {want} healthy nodes of a pool of {have}"),
            ));
        }
        let settings = self.settings;
        let nodes: Vec<NodeParts<M>> = self
            .nodes
            .into_iter()
            .map(|parts| Ok(NodeParts { gutter: parts.gutter, ..(parts.make)(&settings)? }))
            .collect::<Result<_, Error>>()?;
        if let Some(node) =
            nodes.iter().find(|n| n.listen.is_none()).filter(|_| settings.fleet.is_some())
        {
            return Err(Error::config(
                "fleet",
                format!(
                    "needs nodes that speak Redis pub/sub; node `{}` has a manager of its own",
                    node.name
                ),
            ));
        }
        Ok((nodes, settings, self.check))
    }
}

impl<M: NodeManager> Builder<M, AsyncPool> {
    /// Checks every setting, connects to every node (in parallel, each
    /// bounded by the probe timeout) and starts the prober. With
    /// [`require_healthy`](Self::require_healthy), fails with
    /// [`Error::NotEnoughHealthy`] naming each node that is down, and why.
    ///
    /// A node that refuses the credentials (a wrong password or user
    /// name, a TLS handshake that fails on a certificate) fails the build
    /// with [`Error::Credentials`] naming it and the reason, whatever
    /// `require_healthy` says: a wrong setting is not an outage. So does a
    /// node whose server has fewer databases than its URL's number
    /// (`SELECT` answers `ERR DB index is out of range`), with
    /// [`Error::Config`] naming it.
    /// Nodes that cannot be reached start in the penalty box, and a `warn`
    /// event names each with its failure, then one more tells how many of
    /// the nodes are healthy; the pool is built all the same, so a service
    /// can start while some of its nodes are down.
    /// [`ShardedPool::status`] shows which are up.
    ///
    /// Must be called within a Tokio runtime.
    pub async fn build(self) -> Result<ShardedPool<M>, Error> {
        let pool = ShardedPool::start(self.finish()?).await;
        // A pool that fails its start is dropped, not closed: no handle
        // was ever given out, dropping the only one ends it all the same,
        // and the log says nothing of closing a pool nobody had.
        pool.core.check_start()?;
        Ok(pool)
    }
}
