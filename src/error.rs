//! The crate's error type.

use std::time::Duration;

use crate::health::kind::FailureKind;

/// What can go wrong when building a pool or checking a connection out.
///
/// Messages name nodes by their name and URLs with credentials masked; no
/// error ever contains a password or user name.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Every node is in the penalty box (or was boxed while this checkout
    /// tried it). Traffic resumes as soon as the prober lets one back in.
    #[error(
        "no healthy nodes: every node is in the penalty box \
         (ShardedPool::status shows each node's last error)"
    )]
    NoHealthyNodes,

    /// `build` found fewer healthy nodes than
    /// [`Builder::require_healthy`](crate::Builder::require_healthy) asks for.
    #[error("{healthy} of {required} required nodes are healthy; down: {}", describe(.down))]
    NotEnoughHealthy {
        /// Nodes that answered.
        healthy: usize,
        /// Nodes required.
        required: usize,
        /// Each node that did not answer, with its error (never credentials).
        down: Vec<(String, String)>,
    },

    /// The node's pool stayed busy for the whole checkout timeout. The node
    /// is not boxed for this: a busy node is not a failed one.
    #[error("timed out after {waited:?} waiting for a connection from node `{node}`")]
    Timeout {
        /// The node whose pool was busy.
        node: String,
        /// How long the checkout waited.
        waited: Duration,
    },

    /// The key's node is in the penalty box and the pool's failover policy
    /// is [`Failover::FailFast`](crate::Failover::FailFast).
    #[error("node `{node}` is in the penalty box (failover policy: fail fast)")]
    NodeDown {
        /// The key's node.
        node: String,
    },

    /// The node failed while this checkout waited on it, and was kept in
    /// rotation because the cap on boxed nodes
    /// ([`Builder::max_boxed_fraction`](crate::Builder::max_boxed_fraction))
    /// is reached.
    #[error(
        "node `{node}` failed ({failure}) and stays in rotation: too many nodes are boxed already"
    )]
    NodeFailed {
        /// The node that failed.
        node: String,
        /// How it failed.
        failure: FailureKind,
    },

    /// The pool was closed with [`ShardedPool::close`](crate::ShardedPool::close).
    #[error("the pool is closed")]
    Closed,

    /// A builder setting or node URL is invalid.
    #[error("invalid {setting}: {reason}")]
    Config {
        /// The setting or node at fault, e.g. `penalty_multiplier`.
        setting: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The fill of [`aside`](crate::ShardedPool::aside) returned this
    /// error of yours (any error that converts into
    /// `Box<dyn Error + Send + Sync>`, `anyhow::Error` included), kept as
    /// this error's [`source`](std::error::Error::source); nothing was
    /// stored, and the lease was given back.
    #[error("the fill failed: {0}")]
    Fill(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),

    /// A Redis command failed; lets `?` carry `redis` errors in functions
    /// that return this type.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// So that `?` on [`redis::from_redis_value`] works in functions that
/// return this type.
impl From<redis::ParsingError> for Error {
    fn from(e: redis::ParsingError) -> Self {
        Error::Redis(e.into())
    }
}

fn describe(down: &[(String, String)]) -> String {
    let each: Vec<String> =
        down.iter().map(|(node, error)| format!("`{node}` ({error})")).collect();
    each.join(", ")
}

impl Error {
    pub(crate) fn config(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config { setting: setting.into(), reason: reason.into() }
    }
}
